//! The `courier::net` part of `courier demo`: the demo's courier::shm server process, exposed
//! by a bridge on one zenoh session and called from another, the two joined over loopback TCP
//! (two "hosts" without a network). Each step prints one `ok:` line with what it measured;
//! the latency step measures a raw zenoh query/reply in the same run, for the ratio.

use crate::shm_demo::proto::{
    AppErr, Rp, Rq, ECHO, FAIL, HOLD, LEND_STAMP, LEND_SUM, SHUTDOWN, STATUS, STATUS_CANCELS_SEEN,
    SUBSCRIBE,
};
use crate::shm_demo::Tally;
use courier::Error;
use courier_net::zenoh::{self, Wait};
use courier_net::{expose_with, peer_config, Client, ExposeConfig};
use std::time::{Duration, Instant};

/// How long any step may take.
const LIMIT: Duration = Duration::from_secs(10);
/// Timed calls in the latency step.
const CALLS: usize = 2000;

type NetClient = Client<Rq, Rp, AppErr>;

/// The median and p99 of `n` timed runs of `f`.
fn timed(
    n: usize,
    mut f: impl FnMut() -> Result<(), String>,
) -> Result<(Duration, Duration), String> {
    for _ in 0..n / 10 {
        f()?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed());
    }
    samples.sort_unstable();
    Ok((samples[n / 2], samples[n * 99 / 100]))
}

/// A raw zenoh query/reply round trip on the same two sessions: the floor the bridge adds to.
fn raw_zenoh(a: &zenoh::Session, b: &zenoh::Session) -> Result<(Duration, Duration), String> {
    let key = format!("courier-demo/raw/{}", std::process::id());
    let queryable = a
        .declare_queryable(&key)
        .callback(|q| {
            let payload = q
                .payload()
                .map(|p| p.to_bytes().into_owned())
                .unwrap_or_default();
            let _ = q.reply(q.key_expr().clone(), payload).wait();
        })
        .wait()
        .map_err(|e| e.to_string())?;
    let ask = || -> Result<(), String> {
        let replies = b
            .get(&key)
            .payload(vec![0u8; 16])
            .timeout(LIMIT)
            .wait()
            .map_err(|e| e.to_string())?;
        replies.recv().map(drop).map_err(|e| e.to_string())
    };
    // The queryable's declaration reaches the other session shortly after: until then a
    // query finds nobody.
    let end = Instant::now() + LIMIT;
    while ask().is_err() {
        if Instant::now() > end {
            return Err("the raw queryable never became reachable".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = timed(CALLS, ask);
    drop(queryable);
    r
}

/// Runs the section; adds its steps to `tally`.
pub(crate) fn run(tally: &mut Tally) {
    println!("\n== courier::net: the shm server process, called through a zenoh bridge\n");
    let name = format!("courier-demo-net-{}", std::process::id());
    let (server, pid) = match crate::shm_demo::start_server(&name) {
        Ok(s) => s,
        Err(why) => return tally.step("net: server process", Err(why)),
    };
    let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => return tally.step("net: sessions", Err(format!("no loopback port: {e}"))),
    };
    let ep = format!("tcp/127.0.0.1:{port}");
    let sessions = peer_config(std::slice::from_ref(&ep), &[])
        .and_then(|c| {
            zenoh::open(c)
                .wait()
                .map_err(|e| courier_net::NetError::Zenoh(e.to_string()))
        })
        .and_then(|a| {
            let b = peer_config(&[], std::slice::from_ref(&ep))?;
            let b = zenoh::open(b)
                .wait()
                .map_err(|e| courier_net::NetError::Zenoh(e.to_string()))?;
            Ok((a, b))
        });
    let (a, b) = match sessions {
        Ok(s) => s,
        Err(e) => return tally.step("net: sessions", Err(e.to_string())),
    };
    let exposed = match expose_with(&a, &name, &ExposeConfig::new().namespace("host-a")) {
        Ok(e) => e,
        Err(e) => return tally.step("net: expose", Err(e.to_string())),
    };
    let c: NetClient = match Client::connect(&b, &format!("host-a/{name}"), LIMIT) {
        Ok(c) => c.with_timeout(LIMIT),
        Err(e) => return tally.step("net: connect", Err(e.to_string())),
    };
    tally.step(
        "net: connect",
        if c.server_pid() == pid {
            Ok(format!("{} answers, server pid {pid}", exposed.key()))
        } else {
            Err(format!(
                "the bridge says pid {}, the server is {pid}",
                c.server_pid()
            ))
        },
    );
    tally.step(
        "net: call and app error",
        match (c.req([ECHO, 41]), c.req([FAIL, 0])) {
            (Ok(42), Err(Error::App(_))) => Ok("echo 41 -> 42; FAIL -> Error::App".into()),
            other => Err(format!("{other:?}")),
        },
    );
    tally.step(
        "net: lend and lend_mut",
        (|| {
            let data = vec![1u8; 64 << 10];
            let sum = c.lend([LEND_SUM, 0], &data).map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 64 << 10];
            let n = c
                .lend_mut([LEND_STAMP, 9], &mut buf)
                .map_err(|e| e.to_string())?;
            if sum == 64 << 10 && n == 64 << 10 && buf[..8] == 9u64.to_le_bytes() {
                Ok("64 KiB to the server; 64 KiB stamped and back".into())
            } else {
                Err(format!("sum {sum}, stamped {n}"))
            }
        })(),
    );
    tally.step(
        "net: subscription",
        (|| {
            let sub = c.subscribe([SUBSCRIBE, 3]).map_err(|e| e.to_string())?;
            for _ in 0..3 {
                sub.recv_timeout::<u64>(LIMIT).map_err(|e| e.to_string())?;
            }
            Ok("3 pushes forwarded by the bridge".into())
        })(),
    );
    tally.step(
        "net: deadline",
        (|| {
            let r = c.req_timeout([HOLD, 0], Duration::from_millis(200));
            if r != Err(Error::Timeout) {
                return Err(format!("held call: {r:?}"));
            }
            // The bridge gave up at the same deadline: the server saw the call canceled.
            let end = Instant::now() + LIMIT;
            while c.req([STATUS, STATUS_CANCELS_SEEN]) != Ok(1) {
                if Instant::now() > end {
                    return Err("the server never saw the cancel".into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok("timed out after 200 ms; the server in its process saw the cancel".into())
        })(),
    );
    tally.step(
        "net: latency",
        (|| {
            let (med, p99) = timed(CALLS, || {
                c.req([ECHO, 1]).map(drop).map_err(|e| e.to_string())
            })?;
            let (raw_med, raw_p99) = raw_zenoh(&a, &b)?;
            Ok(format!(
                "{CALLS} calls through the bridge: median {med:.2?}, p99 {p99:.2?}; raw zenoh \
                 query/reply median {raw_med:.2?}, p99 {raw_p99:.2?} ({:.2}x)",
                med.as_secs_f64() / raw_med.as_secs_f64()
            ))
        })(),
    );
    let down = c
        .req([SHUTDOWN, 0])
        .map_err(|e| format!("shutdown: {e}"))
        .and_then(|_| {
            let status = server.finish(LIMIT, |l| println!("server: {l}"))?;
            if status.success() {
                Ok("asked through the bridge; the server process exited 0".to_string())
            } else {
                Err(format!("the server process exited with {status}"))
            }
        });
    tally.step("net: shutdown", down);
}
