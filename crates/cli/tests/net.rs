//! `courier expose` end to end, in three processes: a courier::shm server (`courier
//! demo-server`), the bridge (`courier expose`, listening on a loopback TCP endpoint) and this
//! test, a zenoh client session connected to it with explicit endpoints. Every verb crosses
//! the bridge; a call's deadline reaches the server in the other process (it sees the call
//! canceled); a bridge killed in the middle of a call fails that call within its deadline.
//!
//! Steps synchronise on the processes' output lines and on counters read back through the
//! bridge, with deadlines.

mod support;

use courier::flat::String as FlatString;
use courier::net::zenoh::{self, Wait};
use courier::net::{peer_config, Client};
use courier::{Error, SendError};
use courier_testkit::{wait_until, Process};
use std::process::Command;
use std::time::{Duration, Instant};
use support::RuntimeDir;

const DEADLINE: Duration = Duration::from_secs(20);

// The demo server's protocol (crates/cli/src/shm_demo/proto.rs): `[op, argument]`.
const ECHO: u64 = 1;
const FAIL: u64 = 2;
const HOLD: u64 = 3;
const LOG: u64 = 4;
const STATUS: u64 = 5;
const LEND_SUM: u64 = 6;
const LEND_STAMP: u64 = 7;
const SUBSCRIBE: u64 = 10;
const STATUS_CANCELS_SEEN: u64 = 2;
const STATUS_LOGS: u64 = 3;
const SC_ADD: u32 = 1;
const SC_GET: u32 = 2;

type Demo = Client<[u64; 2], u64, FlatString<32>>;

/// A free loopback endpoint.
fn endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp/127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// `courier <args>` with the runtime directory, and the first line it prints.
fn start(args: &[&str], dir: &RuntimeDir) -> (Process, String) {
    let p = Process::spawn(
        Command::new(env!("CARGO_BIN_EXE_courier"))
            .args(args)
            .env("COURIER_RUNTIME_DIR", dir.0.path()),
    );
    let line = p
        .line_within(DEADLINE)
        .unwrap_or_else(|| panic!("courier {args:?} said nothing"));
    (p, line)
}

#[test]
fn every_verb_crosses_the_bridge_between_three_processes() {
    let dir = RuntimeDir::new("net");
    let name = courier_testkit::unique("net-demo");
    let (server, ready) = start(&["demo-server", &name], &dir);
    assert!(ready.starts_with("ready "), "{ready}");
    let ep = endpoint();
    let (mut bridge, said) = start(
        &["expose", &name, "--listen", &ep, "--namespace", "cli-test"],
        &dir,
    );
    assert_eq!(said, format!("exposed {name} at courier/cli-test/{name}"));

    let session = zenoh::open(peer_config(&[], &[ep]).unwrap())
        .wait()
        .unwrap();
    let c: Demo = Client::connect(&session, &format!("cli-test/{name}"), DEADLINE).unwrap();
    assert_eq!(c.server_pid(), server.id());
    // Calls and an application error.
    assert_eq!(c.req([ECHO, 41]), Ok(42));
    assert_eq!(pollster::block_on(c.areq([ECHO, 1])), Ok(2));
    assert_eq!(c.req_async([ECHO, 2]).unwrap().wait(), Ok(3));
    match c.req([FAIL, 0]) {
        Err(Error::App(why)) => assert_eq!(why.as_str(), "odd numbers refused"),
        other => panic!("expected App, got {other:?}"),
    }
    // One-way, confirmed by the server's counter.
    c.send([LOG, 0]).unwrap();
    wait_until("the log line counted", DEADLINE, || {
        c.req([STATUS, STATUS_LOGS]) == Ok(1)
    });
    // Lends: the bytes travel, a mutable lend's come back.
    let data = vec![3u8; 1000];
    assert_eq!(c.lend([LEND_SUM, 0], &data), Ok(3000));
    let mut buf = vec![0u8; 64 << 10];
    assert_eq!(c.lend_mut([LEND_STAMP, 7], &mut buf), Ok(64 << 10));
    assert_eq!(buf[..8], 7u64.to_le_bytes());
    assert_eq!(buf[buf.len() - 8..], 7u64.to_le_bytes());
    // Scalars.
    c.scalar(SC_ADD, [5, 0, 0, 0]).unwrap();
    wait_until("the scalar counted", DEADLINE, || {
        c.blocking_scalar(SC_GET, [0; 4]) == Ok([5, 1])
    });
    // A subscription: three pushes.
    let sub = c.subscribe([SUBSCRIBE, 3]).unwrap();
    for _ in 0..3 {
        sub.recv_timeout::<u64>(DEADLINE).unwrap();
    }
    drop(sub);
    // The deadline reaches the server in its process: it sees the held call canceled.
    assert_eq!(
        c.req_timeout([HOLD, 0], Duration::from_millis(300)),
        Err(Error::Timeout)
    );
    wait_until("the server saw the cancel", DEADLINE, || {
        c.req([STATUS, STATUS_CANCELS_SEEN]) == Ok(1)
    });

    // The bridge dies in the middle of a call: the call fails within its deadline.
    let pending = c.req_async([HOLD, 0]).unwrap();
    bridge.kill();
    let start = Instant::now();
    let r = pending.wait_timeout(Duration::from_secs(3));
    assert!(
        matches!(r, Err(Error::Timeout | Error::ServerDisappeared)),
        "{r:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    // And new calls fail fast or at their deadline, never hang.
    let start = Instant::now();
    let r = c.req_timeout([ECHO, 1], Duration::from_secs(2));
    assert!(
        matches!(r, Err(Error::Timeout | Error::ServerDisappeared)),
        "{r:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(4));
    assert!(matches!(
        c.send_timeout([LOG, 0], Duration::from_secs(2)),
        Err(SendError::Timeout(_) | SendError::ServerDisappeared(_))
    ));
}
