//! The `courier` command.
//!
//! Each subcommand lives in its own module and file; `main` only parses the command line and
//! dispatches.
//!
//! ```text
//! cargo run --release -p courier-cli -- demo
//! ```

mod demo;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// courier: request/response messaging between threads, tasks and (later) processes.
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
    /// A tour of courier::local: every request/response pattern, run live, then the round-trip
    /// latency measured.
    Demo(demo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ok = match &cli.command {
        Command::Demo(args) => demo::run(args),
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
