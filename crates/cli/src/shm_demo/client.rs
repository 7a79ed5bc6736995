//! `courier demo-client <name> <mode>`: the demo's client processes. Every step prints one
//! line, `ok: <step>: <what happened, with its latency>` or `FAILED: <step>: <why>`, and the
//! process exits with failure if any step failed. Every wait is bounded.

use super::proto::*;
use crate::rpc as shm;
use shm::{CancelOutcome, Error, ShmBuf};
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

/// Round trips timed per step (after a warm-up of a tenth as many).
const ITERS: usize = 500;
/// The longest any single call of the demo may take.
const CALL_LIMIT: Duration = Duration::from_secs(5);

/// What a step returns: a line of details, or why it failed.
type Step = Result<String, String>;

/// Prints a step's line; true if it passed.
pub(crate) fn report(name: &str, outcome: Step) -> bool {
    let ok = outcome.is_ok();
    match outcome {
        Ok(details) => println!("ok: {name:<22} {details}"),
        Err(why) => println!("FAILED: {name}: {why}"),
    }
    let _ = std::io::stdout().flush();
    ok
}

/// The median of `samples`.
fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// Runs `f` `ITERS / 10` times untimed, then `iters` times timed; the median.
fn timed<T>(
    iters: usize,
    mut f: impl FnMut(u64) -> Result<T, String>,
) -> Result<(Duration, T), String> {
    for i in 0..iters / 10 {
        f(i as u64)?;
    }
    let mut samples = Vec::with_capacity(iters);
    let mut last = None;
    for i in 0..iters {
        let start = Instant::now();
        let out = f(i as u64)?;
        samples.push(start.elapsed());
        last = Some(out);
    }
    let last = last.ok_or("no iterations")?;
    Ok((median(&mut samples), last))
}

/// Turns an error into the step's failure text.
fn e<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |err| format!("{what}: {err:?}")
}

/// Polls the server's [`STATUS`] counter `which` until it reaches `want`; how long it took.
fn await_status(client: &DemoClient, which: u64, want: u64) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let got = client
            .req_timeout([STATUS, which], CALL_LIMIT)
            .map_err(e("status"))?;
        if got >= want {
            return Ok(start.elapsed());
        }
        if start.elapsed() > CALL_LIMIT {
            return Err(format!("server counter {which} is {got}, expected {want}"));
        }
        thread::sleep(Duration::from_micros(100));
    }
}

/// Connects to `name`, waiting up to `limit` for it to appear.
fn connect(name: &str, limit: Duration) -> Result<DemoClient, String> {
    DemoClient::connect(name, limit).map_err(|err| format!("connecting to {name:?}: {err}"))
}

/// One pattern of the walk.
type Pattern<'a> = &'a dyn Fn(&DemoClient) -> Step;

/// `walk`: every pattern, one after another, from one client process; the exit status.
pub(crate) fn walk(name: &str) -> bool {
    let client = match connect(name, CALL_LIMIT) {
        Ok(c) => c,
        Err(why) => return report("connect", Err(why)),
    };
    let steps: [(&str, Pattern<'_>); 13] = [
        ("blocking req", &blocking_req),
        ("areq", &areq),
        ("req_async + cancel", &cancel),
        ("one-way send", &one_way),
        ("fail -> App error", &fail),
        ("lend 4 KiB", &|c| lend(c, 4 << 10)),
        ("lend_mut 4 KiB", &|c| lend_mut(c, 4 << 10, ITERS)),
        ("lend_mut 1 MiB", &|c| lend_mut(c, 1 << 20, ITERS)),
        ("lend_mut 16 MiB", &|c| lend_mut(c, 16 << 20, ITERS / 2)),
        ("scalar", &scalar),
        ("blocking_scalar", &blocking_scalar),
        ("deferred response", &deferred),
        ("push notifications", &push),
    ];
    let mut ok = true;
    for (step, f) in steps {
        ok &= report(step, f(&client));
    }
    ok
}

/// One checked `req([ECHO, i])`: the server answers `i + 1`.
fn echo(c: &DemoClient, i: u64) -> Result<u64, String> {
    let r = c.req_timeout([ECHO, i], CALL_LIMIT).map_err(e("req"))?;
    if r != i + 1 {
        return Err(format!("req([ECHO, {i}]) -> {r}"));
    }
    Ok(r)
}

fn blocking_req(c: &DemoClient) -> Step {
    let (lat, last) = timed(ITERS, |i| echo(c, i))?;
    Ok(format!(
        "req([ECHO, {}]) -> {last}; median {lat:.1?} over {ITERS} calls (server pid {})",
        ITERS - 1,
        c.server_pid()
    ))
}

fn areq(c: &DemoClient) -> Step {
    futures::executor::block_on(async {
        let mut samples = Vec::with_capacity(ITERS);
        for i in 0..(ITERS + ITERS / 10) as u64 {
            let start = Instant::now();
            let r = c.areq([ECHO, i]).await.map_err(e("areq"))?;
            if r != i + 1 {
                return Err(format!("areq([ECHO, {i}]) -> {r}"));
            }
            if i >= (ITERS / 10) as u64 {
                samples.push(start.elapsed());
            }
        }
        Ok(format!(
            "areq(..).await under futures::executor::block_on; median {:.1?} over {ITERS} calls",
            median(&mut samples)
        ))
    })
}

fn cancel(c: &DemoClient) -> Step {
    let before = c
        .req_timeout([STATUS, STATUS_HELD], CALL_LIMIT)
        .map_err(e("status"))?;
    let seen_before = c
        .req_timeout([STATUS, STATUS_CANCELS_SEEN], CALL_LIMIT)
        .map_err(e("status"))?;
    let pending = c.req_async([HOLD, 0]).map_err(e("req_async"))?;
    await_status(c, STATUS_HELD, before + 1)?;
    let start = Instant::now();
    let outcome = pending.cancel();
    let cancel_took = start.elapsed();
    if !matches!(outcome, CancelOutcome::Signaled) {
        return Err(format!(
            "cancel of a taken request gave {outcome:?}, not Signaled"
        ));
    }
    let seen = await_status(c, STATUS_CANCELS_SEEN, seen_before + 1)?;
    Ok(format!(
        "server took the request; cancel() -> Signaled in {cancel_took:.1?}; \
         server saw is_canceled() within {seen:.1?}"
    ))
}

fn one_way(c: &DemoClient) -> Step {
    let before = c
        .req_timeout([STATUS, STATUS_LOGS], CALL_LIMIT)
        .map_err(e("status"))?;
    let (lat, ()) = timed(ITERS, |i| c.send([LOG, i]).map_err(e("send")))?;
    let total = (ITERS + ITERS / 10) as u64;
    let took = await_status(c, STATUS_LOGS, before + total)?;
    Ok(format!(
        "send([LOG, i]) x {total}: median {lat:.1?} per send; the server counted all {total} \
         (last one {took:.1?} after the sends)"
    ))
}

fn fail(c: &DemoClient) -> Step {
    let (lat, why) = timed(ITERS, |i| match c.req_timeout([FAIL, i], CALL_LIMIT) {
        Err(Error::App(why)) => Ok(why),
        other => Err(format!("req([FAIL, {i}]) -> {other:?}, not Err(App)")),
    })?;
    Ok(format!(
        "req([FAIL, n]) -> Err(App({:?})); median {lat:.1?}",
        why.as_str()
    ))
}

/// Human size.
fn size(len: usize) -> String {
    match len {
        n if n >= 1 << 20 => format!("{} MiB", n >> 20),
        n => format!("{} KiB", n >> 10),
    }
}

fn lend(c: &DemoClient, len: usize) -> Step {
    let mut buf = ShmBuf::new(len).map_err(e("ShmBuf::new"))?;
    let pattern: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    buf.view_mut().copy_from_slice(&pattern);
    let want: u64 = pattern.iter().map(|&b| u64::from(b)).sum();
    let (lat, sum) = timed(ITERS, |_| {
        c.lend_timeout([LEND_SUM, 0], &mut buf, CALL_LIMIT)
            .map_err(e("lend"))
    })?;
    if sum != want {
        return Err(format!("server summed {sum}, expected {want}"));
    }
    Ok(format!(
        "lend([LEND_SUM], &{} ShmBuf): the server read it in place, sum {sum}; median {lat:.1?}",
        size(len)
    ))
}

fn lend_mut(c: &DemoClient, len: usize, iters: usize) -> Step {
    let mut buf = ShmBuf::new(len).map_err(e("ShmBuf::new"))?;
    let (lat, stamp) = timed(iters, |i| {
        let stamp = 0xC0FF_EE00_0000_0000 | i;
        let n = c
            .lend_mut_timeout([LEND_STAMP, stamp], &mut buf, CALL_LIMIT)
            .map_err(e("lend_mut"))?;
        let first = buf.view().read::<u64>(0).unwrap_or_default();
        let last = buf.view().read::<u64>(len - 8).unwrap_or_default();
        if n != len as u64 || first != stamp || last != stamp {
            return Err(format!(
                "after lend_mut: len {n}, head {first:#x}, tail {last:#x}; expected {stamp:#x}"
            ));
        }
        Ok(stamp)
    })?;
    Ok(format!(
        "lend_mut(&mut {} ShmBuf): the server stamped head and tail in place ({stamp:#x}), \
         seen on return; median {lat:.1?} over {iters}",
        size(len)
    ))
}

fn scalar(c: &DemoClient) -> Step {
    let [sum0, count0] = c
        .blocking_scalar_timeout(SC_GET, [0; 4], CALL_LIMIT)
        .map_err(e("blocking_scalar"))?;
    let (lat, ()) = timed(ITERS, |i| {
        c.scalar(SC_ADD, [i, 0, 0, 0]).map_err(e("scalar"))
    })?;
    let n = (ITERS + ITERS / 10) as u64;
    let want = (0..(ITERS / 10) as u64).sum::<u64>() + (0..ITERS as u64).sum::<u64>();
    // One-way scalars are served in order before the blocking one that follows them.
    let start = Instant::now();
    loop {
        let [sum, count] = c
            .blocking_scalar_timeout(SC_GET, [0; 4], CALL_LIMIT)
            .map_err(e("blocking_scalar"))?;
        if count - count0 == n && sum - sum0 == want {
            break;
        }
        if start.elapsed() > CALL_LIMIT {
            return Err(format!(
                "server has {} scalars summing to {}",
                count - count0,
                sum - sum0
            ));
        }
        thread::sleep(Duration::from_micros(100));
    }
    Ok(format!(
        "scalar(SC_ADD, [i, 0, 0, 0]) x {n} one-way: median {lat:.1?} per message; the server summed them all"
    ))
}

fn blocking_scalar(c: &DemoClient) -> Step {
    let (lat, last) = timed(ITERS, |i| {
        let r = c
            .blocking_scalar_timeout(SC_ECHO, [i, 0, 0, 0], CALL_LIMIT)
            .map_err(e("blocking_scalar"))?;
        if r[0] != i + 1 {
            return Err(format!("blocking_scalar(SC_ECHO, [{i}, ..]) -> {r:?}"));
        }
        Ok(r)
    })?;
    Ok(format!(
        "blocking_scalar(SC_ECHO, [{}, 0, 0, 0]) -> {last:?}; median {lat:.1?} over {ITERS} calls",
        ITERS - 1
    ))
}

fn deferred(c: &DemoClient) -> Step {
    let start = Instant::now();
    let later = c.req_async([DEFER, 21]).map_err(e("req_async"))?;
    let echo = c.req_timeout([ECHO, 1], CALL_LIMIT).map_err(e("req"))?;
    if later.is_ready() {
        return Err("the deferred call was answered before its release".into());
    }
    c.req_timeout([RELEASE, 0], CALL_LIMIT)
        .map_err(e("release"))?;
    let answer = later.wait_timeout(CALL_LIMIT).map_err(e("deferred wait"))?;
    let took = start.elapsed();
    if (echo, answer) != (2, 42) {
        return Err(format!("echo {echo}, deferred {answer}; expected 2 and 42"));
    }
    Ok(format!(
        "[DEFER, 21] handed to a server worker thread; meanwhile ECHO -> {echo} was served; \
         after RELEASE the worker replied {answer} ({took:.1?} in all)"
    ))
}

fn push(c: &DemoClient) -> Step {
    const PUSHES: u64 = 200;
    let unsub_before = c
        .req_timeout([STATUS, STATUS_UNSUBSCRIBED], CALL_LIMIT)
        .map_err(e("status"))?;
    let sub = c.subscribe([SUBSCRIBE, PUSHES]).map_err(e("subscribe"))?;
    let mut samples = Vec::with_capacity(PUSHES as usize);
    for i in 0..PUSHES {
        let sent: u64 = sub
            .recv_timeout(CALL_LIMIT)
            .map_err(|err| format!("push {i} of {PUSHES}: {err:?}"))?;
        samples.push(Duration::from_nanos(mono_ns().saturating_sub(sent)));
    }
    drop(sub);
    let seen = await_status(c, STATUS_UNSUBSCRIBED, unsub_before + 1)?;
    Ok(format!(
        "subscribe -> {PUSHES} pushes received, median push-to-recv {:.1?}; dropped the \
         Subscription: the server saw the unsubscribe within {seen:.1?}",
        median(&mut samples)
    ))
}

/// `load <calls>`: one of several concurrent clients; one line with its median.
pub(crate) fn load(name: &str, calls: usize) -> bool {
    let step = (|| {
        let c = connect(name, CALL_LIMIT)?;
        // Start together: wait until the server counts both clients connected.
        let start = Instant::now();
        let together = loop {
            let clients = shm::services()
                .map_err(e("services"))?
                .into_iter()
                .find(|s| s.name == name)
                .map_or(0, |s| s.stats.clients);
            if clients >= 2 {
                break true;
            }
            if start.elapsed() > CALL_LIMIT {
                break false;
            }
            thread::sleep(Duration::from_micros(200));
        };
        if !together {
            return Err("the other client never connected".to_string());
        }
        let (lat, _) = timed(calls, |i| echo(&c, i))?;
        Ok(format!(
            "pid {}: {calls} calls, median {lat:.1?}",
            std::process::id()
        ))
    })();
    report("client", step)
}

/// `fault`: makes a call, says `pending` once the server holds it, expects
/// `ServerDisappeared` when the demo kills the server (says `disappeared`), and once the demo
/// says `go` (a new server has the name) reconnects to it and is served.
pub(crate) fn fault(name: &str) -> bool {
    let step = (|| {
        let c = connect(name, CALL_LIMIT)?;
        let old_pid = c.server_pid();
        let before = c
            .req_timeout([STATUS, STATUS_HELD], CALL_LIMIT)
            .map_err(e("status"))?;
        let pending = c.req_async([HOLD, 0]).map_err(e("req_async"))?;
        await_status(&c, STATUS_HELD, before + 1)?;
        println!("pending");
        let _ = std::io::stdout().flush();
        let waited = Instant::now();
        match pending.wait_timeout(CALL_LIMIT) {
            Err(Error::ServerDisappeared) => {}
            other => {
                return Err(format!(
                    "pending call ended with {other:?}, not ServerDisappeared"
                ))
            }
        }
        println!("disappeared {}", waited.elapsed().as_nanos());
        let _ = std::io::stdout().flush();
        // The demo says when the next server is up (and the killed one is reaped).
        let mut go = String::new();
        std::io::stdin()
            .read_line(&mut go)
            .map_err(e("reading stdin"))?;
        if go.trim() != "go" {
            return Err(format!("expected go on stdin, got {go:?}"));
        }
        let start = Instant::now();
        let fresh = connect(name, CALL_LIMIT)?;
        let r = fresh
            .req_timeout([ECHO, 41], CALL_LIMIT)
            .map_err(e("req after reconnect"))?;
        if r != 42 {
            return Err(format!("req([ECHO, 41]) after reconnect -> {r}"));
        }
        Ok(format!(
            "pending call -> Err(ServerDisappeared); reconnected in {:.1?} to server pid {} \
             (was {old_pid}) and req([ECHO, 41]) -> {r}",
            start.elapsed(),
            fresh.server_pid()
        ))
    })();
    report("reconnect", step)
}
