//! End-to-end test of `courier demo`: runs the built binary (killed if it takes more than
//! 90 s) and checks
//! - it exits with status 0;
//! - every courier::local pattern reports `ok: <pattern>`, every courier::shm step (server
//!   process, each pattern of the client walk, two clients, the SIGKILL fault and the
//!   reconnect, the shutdown) reports a line starting `ok: <step> `, and none reports `FAILED`;
//! - every `#[courier::service]` step, against a thread and against a server process,
//!   reports `ok: <where>: <step> `;
//! - the closing line says all steps are OK;
//! - the latency lines give a median;
//! - every server process of the demo removes its name (socket, lock and stats files) from
//!   the runtime directory: the demo runs with one of its own, empty at the end;
//! - an unknown subcommand and `demo --calls 0` are refused with a failure status.

mod support;

use std::time::Duration;
use support::{courier, RuntimeDir};

const DEADLINE: Duration = Duration::from_secs(90);

const LOCAL: [&str; 11] = [
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
];

const SHM: [&str; 18] = [
    "server process",
    "blocking req",
    "areq",
    "req_async + cancel",
    "one-way send",
    "fail -> App error",
    "lend 4 KiB",
    "lend_mut 4 KiB",
    "lend_mut 1 MiB",
    "lend_mut 16 MiB",
    "scalar",
    "blocking_scalar",
    "deferred response",
    "push notifications",
    "two client processes",
    "server killed",
    "reconnect",
    "shutdown",
];

/// The `#[courier::service]` section's steps: each runs against a thread and a process.
const SERVICE_BOTH: [&str; 6] = [
    "call and app error",
    "lend and lend_mut",
    "deferred reply",
    "scalar message",
    "async call",
    "latency",
];
const SERVICE_ONCE: [&str; 3] = [
    "thread: serve returns",
    "process: connect",
    "process: shutdown",
];
/// The courier::net section's steps (the shm server process through a zenoh bridge).
const NET: [&str; 7] = [
    "net: connect",
    "net: call and app error",
    "net: lend and lend_mut",
    "net: subscription",
    "net: deadline",
    "net: latency",
    "net: shutdown",
];

#[test]
fn demo_runs_every_pattern() {
    let rt = RuntimeDir::new("demo");
    let out = courier(
        &["demo", "--calls", "2000"],
        &[("COURIER_RUNTIME_DIR", rt.0.path())],
        DEADLINE,
    );
    let text = &out.stdout;
    let (local, rest) = text
        .split_once("== courier::shm")
        .unwrap_or_else(|| panic!("no courier::shm section:\n{text}\n{}", out.stderr));
    let (shm, rest) = rest
        .split_once("== #[courier::service]")
        .unwrap_or_else(|| panic!("no #[courier::service] section:\n{text}\n{}", out.stderr));
    let (service, net) = rest
        .split_once("== courier::net")
        .unwrap_or_else(|| panic!("no courier::net section:\n{text}\n{}", out.stderr));
    for step in NET {
        assert!(
            net.lines().any(|l| l.starts_with(&format!("ok: {step} "))),
            "net step {step:?} not reported ok:\n{text}\n{}",
            out.stderr
        );
    }
    let service_steps: Vec<String> = SERVICE_BOTH
        .iter()
        .flat_map(|s| [format!("thread: {s}"), format!("process: {s}")])
        .chain(SERVICE_ONCE.iter().map(|s| s.to_string()))
        .collect();
    for step in &service_steps {
        assert!(
            service
                .lines()
                .any(|l| l.starts_with(&format!("ok: {step} "))),
            "service step {step:?} not reported ok:\n{text}\n{}",
            out.stderr
        );
    }
    for pattern in LOCAL {
        assert!(
            local.lines().any(|l| l == format!("ok: {pattern}")),
            "local pattern {pattern:?} not reported ok:\n{text}"
        );
    }
    for step in SHM {
        assert!(
            shm.lines().any(|l| l.starts_with(&format!("ok: {step} "))),
            "shm step {step:?} not reported ok:\n{text}\n{}",
            out.stderr
        );
    }
    assert!(
        !text.contains("FAILED"),
        "a step failed:\n{text}\n{}",
        out.stderr
    );
    let total = LOCAL.len() + SHM.len() + service_steps.len() + NET.len();
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("demo: all {total} steps OK"))),
        "no closing line for {total} steps:\n{text}"
    );
    let latency = text
        .lines()
        .find(|l| l.contains("req round trips"))
        .unwrap_or_else(|| panic!("no local latency line:\n{text}"));
    assert!(
        latency.contains("median") && latency.contains("p99"),
        "latency line without median/p99: {latency}"
    );
    for step in ["blocking req", "areq", "lend_mut 16 MiB", "blocking_scalar"] {
        let line = shm
            .lines()
            .find(|l| l.starts_with(&format!("ok: {step} ")))
            .unwrap_or_default();
        assert!(line.contains("median"), "no median in {line:?}");
    }
    assert!(
        shm.contains("ServerDisappeared"),
        "the fault step does not mention ServerDisappeared:\n{shm}"
    );
    assert!(
        out.status.success(),
        "exit status {}; output:\n{text}",
        out.status
    );
    let left: Vec<_> = std::fs::read_dir(rt.0.path())
        .expect("the runtime directory is still there")
        .map(|e| e.map(|e| e.file_name()))
        .collect();
    assert!(
        left.is_empty(),
        "the demo's servers left names in the runtime directory: {left:?}"
    );
}

#[test]
fn unknown_subcommand_fails() {
    let out = courier(&["no-such-command"], &[], DEADLINE);
    assert!(!out.status.success());
}

#[test]
fn zero_calls_is_refused() {
    let out = courier(&["demo", "--calls", "0"], &[], DEADLINE);
    assert!(!out.status.success());
}
