//! Runs the built `courier` binary with a deadline (through courier-testkit), for the
//! end-to-end tests.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub use courier_testkit::Output;

/// `courier <args>`, with `env` added to its environment, killed (and the test failed) if it
/// takes longer than `deadline`.
pub fn courier(args: &[&str], env: &[(&str, &Path)], deadline: Duration) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_courier"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    courier_testkit::run(&mut cmd, deadline)
}

/// A private courier runtime directory (mode 0700), removed when dropped.
pub struct RuntimeDir(pub courier_testkit::TempDir);

impl RuntimeDir {
    /// A fresh one, named after `tag` and this process.
    pub fn new(tag: &str) -> RuntimeDir {
        RuntimeDir(courier_testkit::TempDir::new("courier-cli", tag, 0o700))
    }
}
