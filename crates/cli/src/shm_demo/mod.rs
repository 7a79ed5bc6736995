//! The courier::shm part of `courier demo`: a server process and client processes, all this
//! same binary re-executed with hidden subcommands (`demo-server`, `demo-client`).
//!
//! The demo process starts the server on a name unique to this run, then runs clients that
//! walk every pattern (each prints one `ok:` line with its measured latency), two clients at
//! once, and a fault: the server is SIGKILLed while a call is pending, the client sees
//! `ServerDisappeared`, a new server takes the name and the client is served again. Children
//! are killed and reaped if anything goes wrong, die with the demo (`PR_SET_PDEATHSIG`), and
//! every wait is bounded.

mod child;
pub(crate) mod client;
pub(crate) mod proto;
pub(crate) mod server;

use crate::rpc as shm;
use child::Proc;
use client::report;
use proto::*;
use std::time::{Duration, Instant};

pub(crate) use proto::die_with_parent;

/// How long a server may take to say `ready`.
const START_LIMIT: Duration = Duration::from_secs(10);
/// How long the walk through every pattern may take.
const WALK_LIMIT: Duration = Duration::from_secs(40);
/// How long the other client processes may take.
const CLIENT_LIMIT: Duration = Duration::from_secs(20);
/// Calls of each concurrent client.
const LOAD_CALLS: usize = 2000;

/// Tallies the step lines (`ok: ...` / `FAILED: ...`) that pass through.
#[derive(Default)]
pub(crate) struct Tally {
    /// Steps that passed.
    pub(crate) passed: usize,
    /// Steps that failed.
    pub(crate) failed: usize,
}

impl Tally {
    /// Counts and prints a step's outcome.
    pub(crate) fn step(&mut self, name: &str, outcome: Result<String, String>) {
        if report(name, outcome) {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }

    /// Prints a child's line, counting it if it is a step line.
    fn relay(&mut self, line: &str) {
        if line.starts_with("ok: ") {
            self.passed += 1;
        } else if line.starts_with("FAILED: ") {
            self.failed += 1;
        }
        println!("{line}");
    }
}

/// Starts a server process on `name` and waits for it to be ready.
pub(crate) fn start_server(name: &str) -> Result<(Proc, u32), String> {
    let server = Proc::spawn("server process", &["demo-server", name])?;
    let pid = server.expect("ready ", START_LIMIT, |l| println!("server: {l}"))?;
    let pid = pid
        .trim()
        .parse()
        .map_err(|_| format!("server said ready {pid:?}"))?;
    Ok((server, pid))
}

/// Starts the `#[courier::service]` section's server process on `name` and waits for it to
/// be ready.
pub(crate) fn start_service_server(name: &str) -> Result<Proc, String> {
    let server = Proc::spawn("service server process", &["demo-service-server", name])?;
    server.expect("ready ", START_LIMIT, |l| println!("server: {l}"))?;
    Ok(server)
}

/// Runs the shm section; adds its steps to `tally`.
pub(crate) fn run(tally: &mut Tally) {
    let started = Instant::now();
    let name = format!(
        "courier-demo-{}-{}",
        std::process::id(),
        mono_ns() % 1_000_000_000
    );
    println!("== courier::shm: processes over shared memory (service {name:?})");
    let (mut server, pid) = match start_server(&name) {
        Ok(s) => s,
        Err(why) => return tally.step("server process", Err(why)),
    };
    tally.step(
        "server process",
        Ok(format!("`courier demo-server` pid {pid} bound {name:?}")),
    );

    // 1. Every pattern from one client process.
    let walk = Proc::spawn("client process", &["demo-client", &name, "walk"])
        .and_then(|c| c.finish(WALK_LIMIT, |l| tally.relay(l)));
    match walk {
        Ok(status) if status.success() => {}
        Ok(status) => tally.step("client process", Err(format!("exited with {status}"))),
        Err(why) => tally.step("client process", Err(why)),
    }

    // 2. Two client processes at once.
    tally.step("two client processes", two_clients(&name));

    // 3. SIGKILL the server while a call is pending; a new server; the client reconnects.
    let fault = fault(&name, &mut server, tally);
    if let Err(why) = fault {
        tally.step("server killed", Err(why));
    }

    // The server (the replacement, if the fault step got that far) shuts down when asked.
    let shutdown = (|| {
        let c = DemoClient::connect(&name, START_LIMIT).map_err(|e| format!("connect: {e}"))?;
        c.req_timeout([SHUTDOWN, 0], START_LIMIT)
            .map_err(|e| format!("shutdown request: {e:?}"))?;
        drop(c);
        let status = server.finish(START_LIMIT, |l| println!("server: {l}"))?;
        if !status.success() {
            return Err(format!("server exited with {status}"));
        }
        let listed = shm::services()
            .map_err(|e| format!("services(): {e}"))?
            .into_iter()
            .any(|s| s.name == name);
        if listed {
            return Err(format!(
                "{name:?} is still listed by services() after its server exited"
            ));
        }
        Ok(format!(
            "SHUTDOWN -> the server exited 0 and {name:?} left `courier ls`; shm section took {:.1?}",
            started.elapsed()
        ))
    })();
    tally.step("shutdown", shutdown);
}

/// Two `demo-client load` processes at once; one line with both medians.
fn two_clients(name: &str) -> Result<String, String> {
    let calls = LOAD_CALLS.to_string();
    let a = Proc::spawn(
        "first client",
        &["demo-client", name, "load", "--calls", &calls],
    )?;
    let b = Proc::spawn(
        "second client",
        &["demo-client", name, "load", "--calls", &calls],
    )?;
    let mut lines = Vec::new();
    for (label, p) in [("first", a), ("second", b)] {
        let mut mine = Vec::new();
        let status = p.finish(CLIENT_LIMIT, |l| mine.push(l.to_string()))?;
        let line = mine
            .iter()
            .find_map(|l| l.strip_prefix("ok: client"))
            .map(str::trim)
            .ok_or_else(|| format!("{label} client: {}", mine.join(" / ")))?;
        if !status.success() {
            return Err(format!("{label} client exited with {status}"));
        }
        lines.push(line.to_string());
    }
    Ok(format!(
        "both connected, then {LOAD_CALLS} calls each at once: {}",
        lines.join("; ")
    ))
}

/// The fault step: prints `server killed` (and relays the client's `reconnect` line); on
/// return `server` is the replacement.
fn fault(name: &str, server: &mut Proc, tally: &mut Tally) -> Result<(), String> {
    let mut client = Proc::spawn("fault client", &["demo-client", name, "fault"])?;
    client.expect("pending", CLIENT_LIMIT, |l| tally.relay(l))?;
    let old = server.pid();
    let killed = Instant::now();
    server.kill()?;
    client.expect("disappeared", CLIENT_LIMIT, |l| tally.relay(l))?;
    // Includes reaping the server and the client's line reaching us through its pipe.
    let noticed = killed.elapsed();
    let (fresh, pid) = start_server(name)?;
    *server = fresh;
    client.tell("go")?;
    tally.step(
        "server killed",
        Ok(format!(
            "SIGKILL to server pid {old} with a call pending: the client had \
             Err(ServerDisappeared) within {noticed:.1?}; new server pid {pid} on the same name"
        )),
    );
    let status = client.finish(CLIENT_LIMIT, |l| tally.relay(l))?;
    if !status.success() {
        return Err(format!("fault client exited with {status}"));
    }
    Ok(())
}
