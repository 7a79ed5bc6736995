//! `courier demo`: a live tour of courier::local, then of courier::shm across processes
//! (see [`crate::shm_demo`]).
//!
//! Each pattern is one small function that builds its own channel, runs a server thread and a
//! client, prints what happens, and checks it. A pattern ends with `ok: <name>` or
//! `FAILED: <name>: <why>`; the command exits with failure if any pattern failed. Threads
//! synchronise with channels, never with sleeps: when a step needs "the server has taken the
//! request", the server says so.

use courier::local::{
    bounded, channel, names, CancelOutcome, Client, Error, ReplyContext, SendError, Server,
};
use std::error::Error as StdError;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Options of `courier demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Round trips in the courier::local latency measurement (at least 1).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    calls: u64,
}

/// What a pattern returns: `Err` says why it did not behave.
type Outcome = Result<(), Box<dyn StdError>>;

/// Fails the pattern with `msg` unless `cond` holds.
fn ensure(cond: bool, msg: impl Into<String>) -> Outcome {
    if cond {
        Ok(())
    } else {
        Err(msg.into().into())
    }
}

/// Prints one step of a pattern, indented under its heading.
macro_rules! say {
    ($($arg:tt)*) => { println!("    {}", format_args!($($arg)*)) };
}

/// Runs every pattern, in-process then across processes; true when all behaved.
pub(crate) fn run(args: &Args) -> bool {
    let started = Instant::now();
    let mut tally = crate::shm_demo::Tally::default();
    local(args, &mut tally);
    crate::shm_demo::run(&mut tally);
    crate::service_demo::run(&mut tally);
    crate::net_demo::run(&mut tally);
    let total = tally.passed + tally.failed;
    if tally.failed == 0 {
        println!("\ndemo: all {total} steps OK in {:.1?}", started.elapsed());
    } else {
        println!("\ndemo: {} of {total} steps FAILED", tally.failed);
    }
    tally.failed == 0
}

/// The courier::local section: every pattern between threads and tasks of this process.
fn local(args: &Args, tally: &mut crate::shm_demo::Tally) {
    println!("== courier::local: request/response between threads and async tasks\n");
    let calls = args.calls;
    let latency = move || latency(calls);
    let patterns: [(&str, &dyn Fn() -> Outcome); 11] = [
        ("blocking req", &blocking),
        ("async areq", &async_req),
        ("deferred reply", &deferred),
        ("one-way send", &one_way),
        ("cancel", &cancel),
        ("timeout", &timeout),
        ("bounded queue backpressure", &backpressure),
        ("name registry", &registry),
        ("worker pool", &worker_pool),
        ("weak client", &weak_client),
        ("round-trip latency", &latency),
    ];
    for (name, pattern) in patterns {
        println!("-- {name}");
        match pattern() {
            Ok(()) => {
                tally.passed += 1;
                println!("ok: {name}\n");
            }
            Err(why) => {
                tally.failed += 1;
                println!("FAILED: {name}: {why}\n");
            }
        }
    }
}

/// The calculator that several patterns talk to.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Replies with the sum.
    Add(i64, i64),
    /// Replies with the quotient, or fails with an application error on division by zero.
    Div(i64, i64),
}

/// The calculator's reply to `op`, or its application error.
fn compute(op: Op) -> Result<i64, String> {
    match op {
        Op::Add(a, b) => Ok(a + b),
        Op::Div(_, 0) => Err("division by zero".to_string()),
        Op::Div(a, b) => Ok(a / b),
    }
}

/// Answers one request through its reply context.
fn answer(op: Op, rctx: ReplyContext<i64, String>) {
    let sent = match compute(op) {
        Ok(v) => rctx.reply(v),
        Err(e) => rctx.fail(e),
    };
    if let Err(e) = sent {
        say!("server: could not answer {op:?}: {e}");
    }
}

/// Serves the calculator until the last client goes, then says how many it answered.
fn spawn_calculator(server: Server<Op, i64, String>) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut answered = 0;
        loop {
            match server.wait() {
                Ok((op, rctx)) => {
                    answer(op, rctx);
                    answered += 1;
                }
                Err(Error::ClientsDisappeared) => break,
                Err(e) => {
                    say!("server: wait failed: {e}");
                    break;
                }
            }
        }
        answered
    })
}

/// Drops the client, then joins the calculator and reports its count.
fn stop_calculator(client: Client<Op, i64, String>, server: thread::JoinHandle<usize>) -> Outcome {
    drop(client);
    let answered = server.join().map_err(|_| "server thread panicked")?;
    say!("last client dropped: server saw ClientsDisappeared after answering {answered}");
    Ok(())
}

/// Blocking `req` from a client thread to a server thread, including an application error.
fn blocking() -> Outcome {
    let (server, client) = channel::<Op, i64, String>();
    let handle = spawn_calculator(server);
    let sum = client.req(Op::Add(2, 3))?;
    say!("client: req(Add(2, 3)) -> {sum}");
    ensure(sum == 5, "2 + 3 != 5")?;
    match client.req(Op::Div(1, 0)) {
        Err(Error::App(e)) => {
            say!("client: req(Div(1, 0)) -> Err(App({e:?})) (server called fail)")
        }
        other => return Err(format!("Div(1, 0) gave {other:?}").into()),
    }
    stop_calculator(client, handle)
}

/// `areq` from an async client (run by pollster) against a server thread.
fn async_req() -> Outcome {
    let (server, client) = channel::<Op, i64, String>();
    let handle = spawn_calculator(server);
    let (a, b) = pollster::block_on(async {
        let a = client.areq(Op::Add(40, 2)).await;
        let b = client.areq(Op::Div(84, 2)).await;
        (a, b)
    });
    let (a, b) = (a?, b?);
    say!("async client: areq(Add(40, 2)).await -> {a}; areq(Div(84, 2)).await -> {b}");
    ensure(a == 42 && b == 42, "wrong async answers")?;

    stop_calculator(client, handle)?;

    // And an async server, for symmetry: a blocking client thread, the server awaiting.
    let (server, client) = channel::<Op, i64, String>();
    let client_thread = thread::spawn(move || client.req(Op::Add(1, 1)));
    let served = pollster::block_on(async {
        let (op, rctx) = server.async_wait().await?;
        answer(op, rctx);
        Ok::<_, Error<String>>(op)
    })?;
    let reply = client_thread
        .join()
        .map_err(|_| "client thread panicked")??;
    say!("async server: async_wait().await took {served:?}; the blocking client got {reply}");
    ensure(reply == 2, "1 + 1 != 2")
}

/// Joins a calculator whose clients are already gone.
fn stop_calculator_silently(handle: thread::JoinHandle<usize>) -> Outcome {
    handle.join().map_err(|_| "server thread panicked")?;
    Ok(())
}

/// The server hands a request's ReplyContext to a worker thread, answers the next request
/// itself, and the worker replies to the first one later.
fn deferred() -> Outcome {
    let (server, client) = channel::<Op, i64, String>();
    let (to_worker, work) = mpsc::channel::<(Op, ReplyContext<i64, String>)>();
    let (go, may_reply) = mpsc::channel::<()>();
    let worker = thread::spawn(move || {
        for (op, rctx) in work {
            // Reply only once the server thread has moved on and answered another request.
            let _ = may_reply.recv();
            say!("worker: replying to the deferred {op:?}");
            answer(op, rctx);
        }
    });
    let server_thread = thread::spawn(move || -> Result<(), Error<String>> {
        let (slow, rctx) = server.wait()?;
        say!("server: took {slow:?}; handing its ReplyContext to a worker thread");
        let _ = to_worker.send((slow, rctx));
        let (fast, rctx) = server.wait()?;
        say!("server: took {fast:?}; answering it at once");
        answer(fast, rctx);
        let _ = go.send(());
        Ok(())
    });
    let first = client.req_async(Op::Add(100, 1))?;
    let second = client.req_async(Op::Add(200, 2))?;
    let second = second.wait()?;
    say!("client: second request answered first: {second}");
    let first = first.wait()?;
    say!("client: then the deferred one: {first}");
    ensure(first == 101 && second == 202, "wrong deferred answers")?;
    server_thread
        .join()
        .map_err(|_| "server thread panicked")??;
    worker.join().map_err(|_| "worker thread panicked")?;
    Ok(())
}

/// One-way `send`: no reply is owed; a later `req` shows the server got them all.
fn one_way() -> Outcome {
    /// A log line (one-way), or a question: how many lines so far?
    #[derive(Debug)]
    enum Msg {
        Log(&'static str),
        Count,
    }
    let (server, client) = channel::<Msg, usize, String>();
    let handle = thread::spawn(move || {
        let mut lines = 0;
        while let Ok((msg, rctx)) = server.wait() {
            match msg {
                Msg::Log(text) => {
                    lines += 1;
                    say!("server: log {text:?} (one-way: {})", rctx.is_one_way());
                }
                Msg::Count => {
                    let _ = rctx.reply(lines);
                }
            }
        }
    });
    for text in ["starting", "working", "done"] {
        client
            .send(Msg::Log(text))
            .map_err(|e| format!("send failed: {e}"))?;
    }
    say!("client: sent 3 one-way messages without waiting");
    let count = client.req(Msg::Count)?;
    say!("client: req(Count) -> {count}");
    ensure(count == 3, format!("server counted {count} lines, not 3"))?;
    drop(client);
    handle.join().map_err(|_| "server thread panicked")?;
    Ok(())
}

/// `WaitReply::cancel`: a queued request is withdrawn and handed back; a taken one is
/// signalled, and the server sees `is_canceled()`.
fn cancel() -> Outcome {
    let (server, client) = channel::<Op, i64, String>();

    // 1. Nobody has taken the request yet: cancel withdraws it.
    let waiting = client.req_async(Op::Add(1, 2))?;
    match waiting.cancel() {
        CancelOutcome::Withdrawn(op) => {
            say!("client: canceled a queued request and got it back: {op:?}")
        }
        other => return Err(format!("expected Withdrawn, got {other:?}").into()),
    }
    ensure(
        matches!(server.try_pop(), Ok(None)),
        "the withdrawn request is still in the queue",
    )?;
    say!("server: try_pop() finds the queue empty");

    // 2. The server has taken it: cancel is signalled and the server sees it.
    let (taken_tx, taken) = mpsc::channel::<()>();
    let (canceled_tx, canceled) = mpsc::channel::<()>();
    let server_thread = thread::spawn(move || -> Result<(bool, String), Error<String>> {
        let (op, rctx) = server.wait()?;
        say!("server: took {op:?}");
        let _ = taken_tx.send(());
        let _ = canceled.recv();
        let seen = rctx.is_canceled();
        let reply = match rctx.reply(3) {
            Ok(()) => "Ok".to_string(),
            Err(e) => format!("Err({e})"),
        };
        Ok((seen, reply))
    });
    let waiting = client.req_async(Op::Add(1, 2))?;
    taken.recv().map_err(|_| "server thread ended early")?;
    let outcome = waiting.cancel();
    say!("client: canceled a taken request: {outcome:?}");
    ensure(
        matches!(outcome, CancelOutcome::Signaled),
        "expected Signaled",
    )?;
    let _ = canceled_tx.send(());
    let (seen, reply) = server_thread
        .join()
        .map_err(|_| "server thread panicked")??;
    say!("server: is_canceled() = {seen}; reply(3) -> {reply}");
    ensure(seen, "the server did not see the cancellation")?;
    Ok(())
}

/// `req_timeout` against a server that holds the request.
fn timeout() -> Outcome {
    let (server, client) = channel::<Op, i64, String>();
    let (release_tx, release) = mpsc::channel::<()>();
    let server_thread = thread::spawn(move || -> Option<bool> {
        // Hold the request until the client has timed out, then look at it.
        let (op, rctx) = server.wait().ok()?;
        say!("server: took {op:?} and holds it");
        let _ = release.recv();
        let canceled = rctx.is_canceled();
        drop(rctx);
        Some(canceled)
    });
    let limit = Duration::from_millis(200);
    let started = Instant::now();
    let result = client.req_timeout(Op::Add(5, 5), limit);
    let waited = started.elapsed();
    say!("client: req_timeout(Add(5, 5), {limit:?}) -> {result:?} after {waited:.0?}");
    ensure(
        matches!(result, Err(Error::Timeout)),
        "expected Err(Timeout)",
    )?;
    let _ = release_tx.send(());
    drop(client);
    match server_thread.join().map_err(|_| "server thread panicked")? {
        Some(canceled) => {
            say!("server: after the timeout, is_canceled() = {canceled}");
            ensure(canceled, "a timed-out request was not marked canceled")
        }
        None => {
            say!("server: the request was withdrawn before it was taken");
            Ok(())
        }
    }
}

/// `try_req` on a full `bounded(2)` channel hands the request back.
fn backpressure() -> Outcome {
    let (server, client) = bounded::<Op, i64, String>(2);
    let first = client
        .try_req(Op::Add(1, 0))
        .map_err(|e| format!("first try_req: {e}"))?;
    let second = client
        .try_req(Op::Add(2, 0))
        .map_err(|e| format!("second try_req: {e}"))?;
    say!("client: queued 2 requests on a bounded(2) channel nobody serves yet");
    match client.try_req(Op::Add(3, 0)) {
        Err(SendError::Full(op)) => {
            say!("client: third try_req -> Full, request handed back: {op:?}")
        }
        Err(e) => return Err(format!("third try_req: expected Full, got {e}").into()),
        Ok(_) => return Err("third try_req was accepted by a full queue".into()),
    }
    let handle = spawn_calculator(server);
    let (a, b) = (first.wait()?, second.wait()?);
    say!("server started: the queued requests are answered: {a}, {b}");
    let third = client
        .try_req(Op::Add(3, 0))
        .map_err(|e| format!("retry: {e}"))?
        .wait()?;
    say!("client: retried the third, now there is room: {third}");
    ensure((a, b, third) == (1, 2, 3), "wrong answers")?;
    stop_calculator(client, handle)
}

/// Register a client under a name; connect by name (right and wrong types, unknown name).
fn registry() -> Outcome {
    let name = "demo.calculator";
    let (server, client) = channel::<Op, i64, String>();
    let handle = spawn_calculator(server);
    let registration = names::register(name, &client)?;
    say!("registered the calculator as {name:?}");

    let found = names::connect::<Op, i64, String>(name)?;
    let seven = found.req(Op::Add(3, 4))?;
    say!("connect::<Op, i64, String>({name:?}) -> a client; req(Add(3, 4)) -> {seven}");
    ensure(seven == 7, "3 + 4 != 7")?;

    match names::connect::<String, String, ()>(name) {
        Err(e @ names::NameError::TypeMismatch { .. }) => {
            say!("connect::<String, String, ()>({name:?}) -> Err: {e}")
        }
        Err(e) => return Err(format!("wrong-type connect: expected TypeMismatch, got {e}").into()),
        Ok(_) => return Err("wrong-type connect succeeded".into()),
    }
    match names::connect::<Op, i64, String>("demo.nobody") {
        Err(e @ names::NameError::NotFound(_)) => {
            say!("connect(\"demo.nobody\") -> Err: {e}")
        }
        Err(e) => return Err(format!("unknown name: expected NotFound, got {e}").into()),
        Ok(_) => return Err("connecting to an unknown name succeeded".into()),
    }

    // A name that appears later: connect_timeout waits for it.
    let (later_server, later_client) = channel::<Op, i64, String>();
    let later_handle = spawn_calculator(later_server);
    let registrar = thread::spawn(move || {
        let registration = names::register("demo.later", &later_client);
        (registration, later_client)
    });
    let late = names::connect_timeout::<Op, i64, String>("demo.later", Duration::from_secs(10))?;
    say!("connect_timeout(\"demo.later\", 10s) -> connected once another thread registered it");
    let (late_registration, later_client) = registrar.join().map_err(|_| "registrar panicked")?;
    let late_registration = late_registration?;
    ensure(late.req(Op::Div(9, 3))? == 3, "9 / 3 != 3")?;
    drop((late, late_registration));
    stop_calculator_silently_after(later_client, later_handle)?;

    drop(registration);
    ensure(
        names::connect::<Op, i64, String>(name).is_err(),
        "the name is still registered after its Registration was dropped",
    )?;
    say!("dropped the Registration: {name:?} is gone");
    drop(found);
    stop_calculator(client, handle)
}

/// Drops the last client of a calculator and joins it without a report.
fn stop_calculator_silently_after(
    client: Client<Op, i64, String>,
    handle: thread::JoinHandle<usize>,
) -> Outcome {
    drop(client);
    stop_calculator_silently(handle)
}

/// Two server threads share one channel (a cloned `Server`); four client threads call it.
fn worker_pool() -> Outcome {
    const WORKERS: usize = 2;
    const CLIENTS: u64 = 4;
    const CALLS: u64 = 250;
    let (server, client) = channel::<u64, u64, ()>();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let server = server.clone();
            thread::spawn(move || {
                let mut answered = 0u64;
                while let Ok((x, rctx)) = server.wait() {
                    if rctx.reply(x * 2).is_ok() {
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect();
    drop(server);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let client = client.clone();
            thread::spawn(move || (0..CALLS).all(|x| client.req(x).is_ok_and(|y| y == x * 2)))
        })
        .collect();
    drop(client);
    for c in clients {
        ensure(
            c.join().map_err(|_| "client thread panicked")?,
            "a wrong reply",
        )?;
    }
    let mut total = 0;
    for (id, w) in workers.into_iter().enumerate() {
        let answered = w.join().map_err(|_| "worker thread panicked")?;
        say!("worker {id} answered {answered} requests");
        total += answered;
    }
    say!("{CLIENTS} client threads × {CALLS} calls = {total} answers from {WORKERS} workers");
    ensure(total == CLIENTS * CALLS, "some calls were not answered")
}

/// A `WeakClient` upgrades while a strong client lives, and does not keep the channel alive.
fn weak_client() -> Outcome {
    let (server, client) = channel::<u64, u64, ()>();
    let handle = thread::spawn(move || {
        while let Ok((x, rctx)) = server.wait() {
            let _ = rctx.reply(x + 1);
        }
    });
    let weak = client.weak();
    let upgraded = weak
        .upgrade()
        .ok_or("upgrade failed while a client lives")?;
    say!("weak.upgrade() -> a client; req(1) -> {}", upgraded.req(1)?);
    drop(upgraded);
    drop(client);
    handle.join().map_err(|_| "server thread panicked")?;
    say!("last strong client dropped: the server ended although a WeakClient remains");
    ensure(
        weak.upgrade().is_none(),
        "upgrade succeeded after the last strong client was dropped",
    )?;
    say!("weak.upgrade() -> None");
    Ok(())
}

/// `calls` blocking round trips, timed one by one: median and p99.
fn latency(calls: u64) -> Outcome {
    let (server, client) = channel::<u64, u64, ()>();
    let handle = thread::spawn(move || {
        while let Ok((x, rctx)) = server.wait() {
            let _ = rctx.reply(x + 1);
        }
    });
    for x in 0..1_000u64 {
        client.req(x)?;
    }
    let mut samples = Vec::with_capacity(usize::try_from(calls)?);
    let started = Instant::now();
    let mut last = started;
    for x in 0..calls {
        let reply = client.req(x)?;
        let now = Instant::now();
        ensure(reply == x + 1, "wrong reply")?;
        samples.push(now - last);
        last = now;
    }
    let total = started.elapsed();
    drop(client);
    handle.join().map_err(|_| "server thread panicked")?;
    samples.sort_unstable();
    let at =
        |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    say!(
        "{calls} req round trips (u64, thread to thread, after 1000 warm-up): median {:.2?}, p99 {:.2?}, {:.0} calls/s",
        at(0.5),
        at(0.99),
        calls as f64 / total.as_secs_f64()
    );
    Ok(())
}
