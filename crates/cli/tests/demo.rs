//! End-to-end test of `courier demo`: runs the built binary (killed if it takes more than
//! 60 s) and checks
//! - it exits with status 0;
//! - every pattern reports `ok: <pattern>` and none reports `FAILED`;
//! - the closing line says all patterns are OK;
//! - the live latency line gives a median and a p99;
//! - an unknown subcommand and `demo --calls 0` are refused with a failure status.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);

/// Runs the `courier` binary with `args`; returns its exit status and stdout.
fn run_with_deadline(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning courier");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let result = stdout.read_to_string(&mut text).map(|_| text);
        let _ = tx.send(result);
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(text) => {
            let status = child.wait().expect("waiting for courier");
            (status, text.expect("reading stdout"))
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("courier {args:?} took more than {DEADLINE:?}; killed");
        }
    }
}

#[test]
fn demo_runs_every_pattern() {
    let (status, out) = run_with_deadline(&["demo", "--calls", "2000"]);
    for pattern in [
        "blocking req",
        "async areq",
        "deferred reply",
        "one-way send",
        "cancel",
        "timeout",
        "bounded queue backpressure",
        "name registry",
        "worker pool",
        "weak client",
        "round-trip latency",
    ] {
        assert!(
            out.lines().any(|l| l == format!("ok: {pattern}")),
            "pattern {pattern:?} not reported ok:\n{out}"
        );
    }
    assert!(!out.contains("FAILED"), "a pattern failed:\n{out}");
    assert!(
        out.lines().any(|l| l == "demo: all 11 patterns OK"),
        "no closing line:\n{out}"
    );
    let latency = out
        .lines()
        .find(|l| l.contains("req round trips"))
        .unwrap_or_else(|| panic!("no latency line:\n{out}"));
    assert!(
        latency.contains("median") && latency.contains("p99"),
        "latency line without median/p99: {latency}"
    );
    assert!(status.success(), "exit status {status}; output:\n{out}");
}

#[test]
fn unknown_subcommand_fails() {
    let (status, _) = run_with_deadline(&["no-such-command"]);
    assert!(!status.success());
}

#[test]
fn zero_calls_is_refused() {
    let (status, _) = run_with_deadline(&["demo", "--calls", "0"]);
    assert!(!status.success());
}
