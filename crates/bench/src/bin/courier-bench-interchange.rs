//! The `interchange` benchmark on its own: `courier::interchange` beside the `interchange`
//! crate 0.3 (see `src/interchange.rs`).
//!
//! ```text
//! cargo run --release -p courier-bench --bin courier-bench-interchange [-- --quick]
//! ```

#[path = "../interchange.rs"]
mod interchange;

use clap::Parser;
use std::process::ExitCode;

/// courier::interchange beside interchange 0.3: instructions per cycle (callgrind), a
/// two-thread ping-pong, and channel sizes.
#[derive(Debug, Parser)]
#[command(name = "courier-bench-interchange", version, about)]
struct Cli {
    /// The benchmark's options.
    #[command(flatten)]
    args: interchange::Args,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match interchange::run(&cli.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("courier-bench-interchange: {e}");
            ExitCode::FAILURE
        }
    }
}
