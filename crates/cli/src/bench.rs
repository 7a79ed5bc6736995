//! `courier bench`: the RPC benchmark of crate courier-bench, run as a separate program so
//! this command does not depend on it (courier-bench pulls in iceoryx2, which needs libclang
//! to build; the demo must build on a fresh machine).
//!
//! It runs `courier-bench rpc --progress <args>` from the directory of this executable if it
//! was built there, else `cargo run --release -p courier-bench -- rpc --progress <args>` in the
//! workspace this binary was built from. Output streams through unchanged.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Options of `courier bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print the command that would run, and do not run it.
    #[arg(long)]
    dry_run: bool,
    /// Passed to `courier-bench rpc --progress` unchanged (see `courier-bench rpc --help`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<OsString>,
}

/// The workspace this binary was built from.
fn workspace() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The command that runs the benchmark, a description of it, and whether it is the sibling
/// executable (rather than cargo).
fn command(args: &[OsString]) -> Result<(Command, String, bool), String> {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("courier-bench")))
        .filter(|p| p.is_file());
    let is_sibling = sibling.is_some();
    let (mut cmd, shown) = if let Some(bench) = sibling {
        let shown = format!("{} rpc --progress", bench.display());
        (Command::new(bench), shown)
    } else {
        let root = workspace();
        if !root.join("crates/bench/Cargo.toml").is_file() {
            return Err(format!(
                "courier-bench is neither next to this executable nor buildable: no workspace \
                 at {} (build it with `cargo build --release -p courier-bench`)",
                root.display()
            ));
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&root)
            .args(["run", "--release", "-p", "courier-bench", "--"]);
        let shown = format!(
            "cargo run --release -p courier-bench -- rpc --progress (in {})",
            root.display()
        );
        (cmd, shown)
    };
    cmd.args(["rpc", "--progress"]).args(args);
    let extra: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
    let shown = if extra.is_empty() {
        shown
    } else {
        format!("{shown} {}", extra.join(" "))
    };
    Ok((cmd, shown, is_sibling))
}

/// Runs the benchmark; its exit status.
pub(crate) fn run(args: &Args) -> ExitCode {
    let (mut cmd, shown, is_sibling) = match command(&args.args) {
        Ok(c) => c,
        Err(why) => {
            eprintln!("courier bench: {why}");
            return ExitCode::FAILURE;
        }
    };
    if args.dry_run {
        println!("{shown}");
        return ExitCode::SUCCESS;
    }
    eprintln!("courier bench: running {shown}");
    match cmd.status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("courier bench: the benchmark failed ({status})");
            if is_sibling && status.code() == Some(2) {
                eprintln!(
                    "courier bench: (a usage error: if that courier-bench is older than this \
                     command, rebuild it with `cargo build --release -p courier-bench`)"
                );
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("courier bench: could not run {shown}: {e}");
            ExitCode::FAILURE
        }
    }
}
