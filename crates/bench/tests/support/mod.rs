//! Shared by the end-to-end tests of the `courier-bench` binary.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The longest a benchmark run in a test may take before it is killed.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// Runs the benchmark binary with `args`; returns its exit status and stdout.
pub(crate) fn run_with_deadline(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_courier-bench"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning courier-bench");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let result = stdout.read_to_string(&mut text).map(|_| text);
        let _ = tx.send(result);
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(text) => {
            let status = child.wait().expect("waiting for courier-bench");
            (status, text.expect("reading stdout"))
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("courier-bench {args:?} took more than {DEADLINE:?}; killed");
        }
    }
}
