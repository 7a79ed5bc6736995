//! `courier-bench`: benchmarks of courier beside its peers, measured in one run.
//!
//! Each subcommand lives in its own module and file; `main` only parses the command line and
//! dispatches. To add a subcommand, add a module with an `Args` type (clap derive) and a
//! `run(&Args)` function, then one variant to [`Command`].
//!
//! ```text
//! cargo run --release -p courier-bench -- local            # full run, about a minute at most
//! cargo run --release -p courier-bench -- local --quick    # a few seconds, tiny counts
//! cargo run --release -p courier-bench -- interchange      # needs valgrind for instructions
//! cargo run --release -p courier-bench -- shm              # two processes per row, about a minute
//! cargo run --release -p courier-bench -- rpc              # request/response, under a minute
//! cargo run --release -p courier-bench -- net              # across a zenoh bridge, loopback
//! ```
//!
//! `local`, `shm` and `rpc` measure every row in five rounds on the idle machine, then five
//! with a competing process spinning on one core (`--load idle|busy|both`, `--rounds N`; see
//! [`runner`]).

mod interchange;
mod local;
#[cfg(target_os = "linux")]
mod net;
#[cfg(target_os = "linux")]
mod pair_floor;
#[cfg(target_os = "linux")]
mod proc;
mod report;
#[cfg(target_os = "linux")]
mod rpc;
mod runner;
#[cfg(target_os = "linux")]
mod shm;
mod stats;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Benchmarks of courier beside its peers (ump, crossbeam-channel, flume, std, tokio).
#[derive(Debug, Parser)]
#[command(name = "courier-bench", version, about)]
struct Cli {
    /// Which benchmark to run.
    #[command(subcommand)]
    command: Command,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
enum Command {
    /// courier::local (threads and async tasks in one process) beside ump, crossbeam-channel,
    /// flume, std::sync::mpsc and tokio.
    Local(local::Args),
    /// courier::interchange beside interchange 0.3: instructions per cycle (callgrind), a
    /// two-thread ping-pong, and channel sizes.
    Interchange(interchange::Args),
    /// courier::shm's ShmChannel beside crossbar, iceoryx2, a Unix socket and a pipe pair:
    /// round trips of 8 B to 16 MiB between two processes (Linux only).
    #[cfg(target_os = "linux")]
    Shm(shm::Args),
    /// courier::shm's request/response (req, lend_mut) beside iceoryx2 request-response,
    /// ipc-channel and a Unix socket: small and large (4 KiB to 16 MiB) calls between two
    /// processes (Linux only).
    #[cfg(target_os = "linux")]
    Rpc(rpc::Args),
    /// courier::net (calls through a zenoh bridge to a courier::shm service) beside raw
    /// zenoh query/reply, tarpc and plain TCP: small and 1 MiB calls between two processes
    /// over loopback (Linux only).
    #[cfg(target_os = "linux")]
    Net(net::Args),
    /// Internal: the competing process of the busy load (spins until killed).
    #[command(hide = true)]
    Burn,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Local(args) => local::run(args),
        Command::Interchange(args) => interchange::run(args),
        #[cfg(target_os = "linux")]
        Command::Shm(args) => shm::run(args),
        #[cfg(target_os = "linux")]
        Command::Rpc(args) => rpc::run(args),
        #[cfg(target_os = "linux")]
        Command::Net(args) => net::run(args),
        Command::Burn => runner::burn(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("courier-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
