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
use courier::{Error, SendError};
use courier_net::zenoh::{self, Wait};
use courier_net::{peer_config, Client};
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
    // A second service: one bridge process serves both.
    let other = format!("{name}-2");
    let (other_server, _) = start(&["demo-server", &other], &dir);
    let ep = endpoint();
    let (mut bridge, said) = start(
        &[
            "expose",
            &name,
            &other,
            "--listen",
            &ep,
            "--namespace",
            "cli-test",
        ],
        &dir,
    );
    assert_eq!(said, format!("exposed {name} at courier/cli-test/{name}"));
    assert_eq!(
        bridge.line(DEADLINE),
        format!("exposed {other} at courier/cli-test/{other}")
    );

    let session = zenoh::open(peer_config(&[], &[ep]).unwrap())
        .wait()
        .unwrap();
    let c: Demo = Client::connect(&session, &format!("cli-test/{name}"), DEADLINE).unwrap();
    assert_eq!(c.server_pid(), server.id());
    let c2: Demo = Client::connect(&session, &format!("cli-test/{other}"), DEADLINE).unwrap();
    assert_eq!(c2.server_pid(), other_server.id());
    assert_eq!(c2.req([ECHO, 9]), Ok(10));
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

/// The environment variable that makes this test binary a client process of the load and
/// partition tests (`peer_client`): `<endpoint> <key> <index> <calls>`.
const PEER: &str = "COURIER_NET_TEST_PEER";
/// The marker of a peer's messages on its stdout (among libtest's lines).
const SAY: &str = "@@peer@@ ";

/// This test binary as a client process on `endpoint`, run through `wrap` (e.g. `ip netns
/// exec ns`), or directly.
fn peer(wrap: &[&str], spec: &str) -> Process {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.args(["--exact", "peer_client", "--nocapture", "--test-threads=1"])
        .env(PEER, spec);
    Process::spawn_marked(&mut cmd, SAY)
}

/// Not a test of its own: the client process of the tests below (it returns at once when
/// not started as one). It connects, then answers its parent's commands on stdin:
/// `calls` makes its calls (each echo checked against its own request) and `LOG`s, `probe
/// <ms>` makes one call with that deadline and says how it ended and how long it took.
#[test]
fn peer_client() {
    let Ok(spec) = std::env::var(PEER) else {
        return;
    };
    let parts: Vec<&str> = spec.split(' ').collect();
    let [endpoint, key, index, calls] = parts[..] else {
        panic!("bad {PEER}: {spec:?}");
    };
    let (index, calls): (u64, u64) = (index.parse().unwrap(), calls.parse().unwrap());
    let session = zenoh::open(peer_config(&[], &[endpoint.to_owned()]).unwrap())
        .wait()
        .unwrap();
    let c: Demo = Client::connect(&session, key, DEADLINE).unwrap();
    println!("{SAY}connected");
    for line in std::io::stdin().lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            ["calls"] => {
                for i in 0..calls {
                    let n = (index << 32) | i;
                    assert_eq!(
                        c.req([ECHO, n]),
                        Ok(n + 1),
                        "client {index}: another's reply"
                    );
                    c.send([LOG, 0]).unwrap();
                }
                println!("{SAY}done {calls}");
            }
            ["probe", ms] => {
                let t = Duration::from_millis(ms.parse().unwrap());
                let start = Instant::now();
                let r = c.req_timeout([ECHO, 7], t);
                let took = start.elapsed().as_millis();
                let what = match r {
                    Ok(8) => "ok".to_string(),
                    Err(e) => format!("{e:?}"),
                    Ok(other) => format!("wrong {other}"),
                };
                println!("{SAY}{what} {took}");
            }
            _ => panic!("unknown command {line:?}"),
        }
    }
}

#[test]
fn several_client_processes_each_get_their_own_replies_exactly_once() {
    const CLIENTS: u64 = 3;
    const CALLS: u64 = 300;
    let dir = RuntimeDir::new("net-load");
    let name = courier_testkit::unique("net-load");
    let (_server, _) = start(&["demo-server", &name], &dir);
    let ep = endpoint();
    let (_bridge, said) = start(
        &[
            "expose",
            &name,
            "--listen",
            &ep,
            "--namespace",
            "load",
            "--workers",
            "4",
        ],
        &dir,
    );
    assert!(said.starts_with("exposed "), "{said}");
    let key = format!("load/{name}");
    let mut clients: Vec<Process> = (0..CLIENTS)
        .map(|k| peer(&[], &format!("{ep} {key} {k} {CALLS}")))
        .collect();
    for c in &clients {
        assert_eq!(c.line(DEADLINE), "connected");
    }
    // All at once.
    for c in &mut clients {
        c.tell("calls");
    }
    for c in &clients {
        assert_eq!(c.line(DEADLINE), format!("done {CALLS}"));
    }
    // Every one-way LOG arrived exactly once: the server counted them.
    let session = zenoh::open(peer_config(&[], &[ep]).unwrap())
        .wait()
        .unwrap();
    let c: Demo = Client::connect(&session, &key, DEADLINE).unwrap();
    wait_until("every LOG counted", DEADLINE, || {
        c.req([STATUS, STATUS_LOGS]) == Ok(CLIENTS * CALLS)
    });
    // And no more arrive.
    assert_eq!(c.req([STATUS, STATUS_LOGS]), Ok(CLIENTS * CALLS));
}

/// Runs `cmd` (an `ip` command), failing the test if it fails.
fn ip(args: &[&str]) {
    let out = courier_testkit::run(Command::new("ip").args(args), DEADLINE);
    assert!(out.status.success(), "ip {args:?}: {}", out.stderr);
}

/// Two network namespaces joined by a veth pair, removed when dropped.
struct Hosts {
    a: String,
    b: String,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Whether namespaces can be made here: root, and `ip netns` works.
fn can_make_namespaces() -> Option<&'static str> {
    if courier_testkit::euid() != 0 {
        return Some("not root");
    }
    let probe = format!("courier-probe-{}", std::process::id());
    let made = Command::new("ip")
        .args(["netns", "add", &probe])
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        return Some("`ip netns add` failed (no iproute2, or no permission to make namespaces)");
    }
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    None
}

/// Two "hosts" on one machine: the server and its bridge in network namespace A, a client
/// process in namespace B, joined by a veth pair. The link is cut in the middle of calls:
/// they fail within their deadlines; once it is back, calls succeed again.
#[test]
fn a_cut_link_fails_calls_within_their_deadlines_and_they_recover() {
    if let Some(why) = can_make_namespaces() {
        eprintln!("SKIPPED a_cut_link_fails_calls_within_their_deadlines_and_they_recover: {why}");
        return;
    }
    let id = std::process::id();
    let hosts = Hosts {
        a: format!("courier-a-{id}"),
        b: format!("courier-b-{id}"),
    };
    let (va, vb) = (
        format!("cva{}", id % 100_000),
        format!("cvb{}", id % 100_000),
    );
    ip(&["netns", "add", &hosts.a]);
    ip(&["netns", "add", &hosts.b]);
    ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
    ip(&["link", "set", &va, "netns", &hosts.a]);
    ip(&["link", "set", &vb, "netns", &hosts.b]);
    for (ns, dev, addr) in [
        (&hosts.a, &va, "10.77.0.1/24"),
        (&hosts.b, &vb, "10.77.0.2/24"),
    ] {
        ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
        ip(&["-n", ns, "link", "set", dev, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    let dir = RuntimeDir::new("net-ns");
    let name = courier_testkit::unique("net-ns");
    let exe = env!("CARGO_BIN_EXE_courier");
    let in_a = |args: &[&str]| {
        let p = Process::spawn(
            Command::new("ip")
                .args(["netns", "exec", &hosts.a, exe])
                .args(args)
                .env("COURIER_RUNTIME_DIR", dir.0.path()),
        );
        let line = p
            .line_within(DEADLINE)
            .expect("a process in A said nothing");
        (p, line)
    };
    let (_server, ready) = in_a(&["demo-server", &name]);
    assert!(ready.starts_with("ready "), "{ready}");
    let ep = "tcp/10.77.0.1:7447";
    let (_bridge, said) = in_a(&["expose", &name, "--listen", ep, "--namespace", "host-a"]);
    assert!(said.starts_with("exposed "), "{said}");
    let mut client = peer(
        &["ip", "netns", "exec", &hosts.b],
        &format!("{ep} host-a/{name} 0 10"),
    );
    assert_eq!(client.line(DEADLINE), "connected");
    client.tell("calls");
    assert_eq!(client.line(DEADLINE), "done 10");
    // Cut the link: a call fails within its deadline (1 s, plus the client's grace).
    ip(&["-n", &hosts.a, "link", "set", &va, "down"]);
    client.tell("probe 1000");
    let got = client.line(DEADLINE);
    let (what, took) = got.split_once(' ').unwrap();
    assert!(what == "Timeout" || what == "ServerDisappeared", "{got}");
    assert!(took.parse::<u64>().unwrap() < 2000, "{got}");
    // The link is back: calls succeed again (the sessions reconnect).
    ip(&["-n", &hosts.a, "link", "set", &va, "up"]);
    let end = Instant::now() + DEADLINE;
    loop {
        client.tell("probe 1000");
        let got = client.line(DEADLINE);
        if got.starts_with("ok ") {
            break;
        }
        assert!(Instant::now() < end, "calls never succeeded again: {got}");
    }
    drop(client);
    drop(hosts);
}
