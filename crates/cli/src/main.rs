//! The `courier` command.
//!
//! Each subcommand lives in its own module and file; `main` only parses the command line and
//! dispatches.
//!
//! ```text
//! cargo run --release -p courier-cli -- demo     # every pattern, in-process and across processes
//! courier ls                                     # the live courier::shm services of this user
//! courier bench [ARGS]                           # the RPC benchmark (courier-bench rpc)
//! ```

mod bench;
mod demo;
mod expose;
mod ls;
mod net_demo;
mod service_demo;
mod shm_demo;

/// The courier::shm RPC API the demo and `ls` use.
use courier::shm as rpc;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// courier: request/response messaging between threads, tasks and processes.
#[derive(Debug, Parser)]
#[command(name = "courier", version, about)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// A live tour: every request/response pattern of courier::local (threads and tasks), then
    /// of courier::shm (a server process and client processes), with measured latencies.
    Demo(demo::Args),
    /// List the live courier::shm services of this user.
    Ls,
    /// Run the RPC benchmark (`courier-bench rpc --progress`), with a progress bar; extra
    /// arguments are passed to it.
    ///
    /// Runs the `courier-bench` program next to this executable if there is one, else
    /// `cargo run --release -p courier-bench -- rpc --progress` in the workspace this command
    /// was built from (courier-bench needs libclang to build).
    Bench(bench::Args),
    /// Expose a courier::shm service of this host on the network: a zenoh bridge that serves
    /// it at `courier/<namespace>/<name>` until the process is stopped. Clients on other
    /// hosts call it with `courier::net::Client`.
    Expose(expose::Args),
    /// The demo's server process (started by `courier demo`).
    #[command(hide = true)]
    DemoServer {
        /// The service name to bind.
        name: String,
        /// The demo's pid: this process dies with it.
        #[arg(long)]
        parent: Option<u32>,
    },
    /// The demo's `#[courier::service]` server process (started by `courier demo`).
    #[command(hide = true)]
    DemoServiceServer {
        /// The service name to bind.
        name: String,
        /// The demo's pid: this process dies with it.
        #[arg(long)]
        parent: Option<u32>,
    },
    /// The demo's client processes (started by `courier demo`).
    #[command(hide = true)]
    DemoClient {
        /// The service name to connect to.
        name: String,
        /// What to do.
        mode: ClientMode,
        /// Calls made in `load` mode.
        #[arg(long, default_value_t = 2000)]
        calls: usize,
        /// The demo's pid: this process dies with it.
        #[arg(long)]
        parent: Option<u32>,
    },
}

/// What a demo client process does.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ClientMode {
    /// Every pattern, one after another.
    Walk,
    /// Many echo calls, as one of several clients at once.
    Load,
    /// A pending call while the server is killed, then a reconnect.
    Fault,
}

/// Ties this demo child to the demo's life; false if the demo is already gone.
fn adopt(parent: Option<u32>) -> bool {
    parent.is_none_or(shm_demo::die_with_parent)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ok = match &cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Ls => ls::run(),
        Command::Expose(args) => expose::run(args),
        Command::Bench(args) => return bench::run(args),
        Command::DemoServer { name, parent } => adopt(*parent) && shm_demo::server::run(name),
        Command::DemoServiceServer { name, parent } => adopt(*parent) && service_demo::serve(name),
        Command::DemoClient {
            name,
            mode,
            calls,
            parent,
        } => {
            adopt(*parent)
                && match mode {
                    ClientMode::Walk => shm_demo::client::walk(name),
                    ClientMode::Load => shm_demo::client::load(name, *calls),
                    ClientMode::Fault => shm_demo::client::fault(name),
                }
        }
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
