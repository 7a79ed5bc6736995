//! End-to-end tests of `courier ls`, each in a private runtime directory
//! (`COURIER_RUNTIME_DIR`), with deadlines:
//! - with nothing bound it prints `no live services`;
//! - with a demo server process bound it shows the service's name and the server's pid, under
//!   a header; once the server is killed the name is gone.

mod support;

use courier_testkit::{ChildGuard, Process};
use std::process::Command;
use std::time::Duration;
use support::{courier, RuntimeDir};

const DEADLINE: Duration = Duration::from_secs(30);

/// Starts `courier <subcommand> <name>` in `dir` and waits for its first line (`ready ..`);
/// the process is killed when the handle drops.
fn start_server(subcommand: &str, name: &str, dir: &RuntimeDir) -> (ChildGuard, String) {
    let server = Process::spawn(
        Command::new(env!("CARGO_BIN_EXE_courier"))
            .args([subcommand, name])
            .env("COURIER_RUNTIME_DIR", dir.0.path()),
    );
    let ready = server
        .line_within(DEADLINE)
        .unwrap_or_else(|| panic!("{subcommand} did not say ready"));
    (server.into_child(), ready)
}

#[test]
fn empty() {
    let dir = RuntimeDir::new("ls-empty");
    let out = courier(&["ls"], &[("COURIER_RUNTIME_DIR", &dir.0)], DEADLINE);
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.stdout, "no live services\n");
}

#[test]
fn shows_a_live_server() {
    let dir = RuntimeDir::new("ls-live");
    let name = format!("ls-test-{}", std::process::id());
    let (server, ready) = start_server("demo-server", &name, &dir);
    let pid = ready
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("demo-server said {ready:?}"));
    assert_eq!(pid, server.0.id().to_string());

    let out = courier(&["ls"], &[("COURIER_RUNTIME_DIR", &dir.0)], DEADLINE);
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let mut lines = out.stdout.lines();
    let header = lines.next().unwrap_or_default();
    for column in [
        "NAME",
        "PID",
        "CLIENTS",
        "QUEUED",
        "IN SERVICE",
        "LENDS",
        "SERVED",
    ] {
        assert!(header.contains(column), "no {column} in {header:?}");
    }
    let row = lines
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .unwrap_or_else(|| panic!("{name} not listed:\n{}", out.stdout));
    assert_eq!(
        row.split_whitespace().nth(1),
        Some(pid),
        "wrong pid in {row:?}"
    );

    drop(server);
    let out = courier(&["ls"], &[("COURIER_RUNTIME_DIR", &dir.0)], DEADLINE);
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(
        !out.stdout.contains(&name),
        "{name} still listed after its server was killed:\n{}",
        out.stdout
    );
}

#[test]
fn shows_the_interface_of_a_typed_service() {
    let dir = RuntimeDir::new("ls-service");
    let name = format!("ls-service-{}", std::process::id());
    let (_server, ready) = start_server("demo-service-server", &name, &dir);
    assert!(ready.starts_with("ready "), "{ready:?}");

    let out = courier(&["ls"], &[("COURIER_RUNTIME_DIR", &dir.0)], DEADLINE);
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no interface line for {name}:\n{}", out.stdout));
    assert!(line.contains("Store (interface 0x"), "{line}");
    for method in [
        "get (call)",
        "put (send)",
        "checksum (lend)",
        "scramble (lend_mut)",
        "later (deferred)",
        "count (scalar)",
    ] {
        assert!(line.contains(method), "{method} missing from {line}");
    }
}
