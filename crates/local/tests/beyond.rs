//! What courier::local adds to ump, each as a test:
//! - one-way `send`: no reply, no `ReplyContext` owed, order kept;
//! - a timeout form of every blocking call (`req_timeout`, `wait_timeout` on both sides,
//!   `send_timeout`), and what the server sees when a caller times out;
//! - cancellation the server can see: `WaitReply::cancel` withdraws a queued request and hands
//!   it back; a taken one turns `is_canceled()` and its `reply` reports it; dropping a
//!   `WaitReply` or an `areq` future cancels the same way; `WaitReply::detach` keeps the call
//!   running without its caller (what dropping does in ump);
//! - bounded queues: `req`/`areq`/`send` wait for room, `try_req`/`try_send` hand the request
//!   back, a withdrawal frees room;
//! - several server workers on one channel, concurrently;
//! - `WeakClient::upgrade` as documented;
//! - an idle server thread sleeps (no CPU) after its short spin;
//! - exactly-once delivery when timeouts race replies.

use courier_local::{bounded, channel, CancelOutcome, Error, SendError};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::thread;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `fut` once with a waker that does nothing.
fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    let waker = futures::task::noop_waker();
    fut.poll(&mut Context::from_waker(&waker))
}

#[test]
fn one_way_send_owes_nothing_and_keeps_order() {
    let (server, client) = channel::<u32, u32, ()>();
    for i in 0..100 {
        client.send(i).unwrap();
    }
    for i in 0..100 {
        let (n, ctx) = server.wait().unwrap();
        assert_eq!(n, i);
        assert!(ctx.is_one_way());
        assert!(!ctx.is_canceled());
        if i % 2 == 0 {
            // Replying to a one-way message reaches nobody, and says so.
            assert_eq!(ctx.reply(0), Err(Error::OriginDisappeared));
        }
    }
    assert!(server.try_pop().unwrap().is_none());
}

#[test]
fn one_way_and_requests_interleave_in_order() {
    let (server, client) = channel::<u32, u32, ()>();
    client.send(1).unwrap();
    let p = client.req_async(2).unwrap();
    client.send(3).unwrap();
    let got: Vec<(u32, bool)> = (0..3)
        .map(|_| {
            let (n, ctx) = server.wait().unwrap();
            let one_way = ctx.is_one_way();
            if !one_way {
                ctx.reply(n * 10).unwrap();
            }
            (n, one_way)
        })
        .collect();
    assert_eq!(got, vec![(1, true), (2, false), (3, true)]);
    assert_eq!(p.wait(), Ok(20));
}

#[test]
fn req_timeout_withdraws_untaken_request() {
    let (server, client) = channel::<u32, u32, ()>();
    assert_eq!(
        client.req_timeout(5, Duration::from_millis(20)),
        Err(Error::Timeout)
    );
    // The server never sees the withdrawn request.
    assert!(server.try_pop().unwrap().is_none());
}

#[test]
fn req_timeout_signals_taken_request() {
    let (server, client) = channel::<u32, u32, ()>();
    let (taken_tx, taken_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let srv = thread::spawn(move || {
        let (n, ctx) = server.wait().unwrap();
        assert!(!ctx.is_canceled());
        taken_tx.send(n).unwrap();
        // Hold the request until the client has timed out.
        done_rx.recv_timeout(DEADLINE).unwrap();
        assert!(ctx.is_canceled());
        ctx.reply(1)
    });
    let client_thread = thread::spawn(move || client.req_timeout(9, Duration::from_millis(50)));
    assert_eq!(taken_rx.recv_timeout(DEADLINE).unwrap(), 9);
    assert_eq!(client_thread.join().unwrap(), Err(Error::Timeout));
    done_tx.send(()).unwrap();
    assert_eq!(srv.join().unwrap(), Err(Error::OriginDisappeared));
}

#[test]
fn req_timeout_returns_reply_in_time() {
    let (server, client) = channel::<u32, u32, ()>();
    let srv = thread::spawn(move || {
        let (n, ctx) = server.wait().unwrap();
        ctx.reply(n + 1).unwrap();
    });
    assert_eq!(client.req_timeout(1, DEADLINE), Ok(2));
    srv.join().unwrap();
}

/// A reply to a caller that left goes into the call's slot and back out to the server, which
/// drops it: exactly once, whether the caller canceled or detached.
#[test]
fn a_reply_to_a_caller_that_left_is_dropped_once() {
    let (server, client) = channel::<u32, Arc<()>, ()>();
    let token = Arc::new(());

    let pending = client.req_async(1).unwrap();
    let (_, ctx) = server.wait_timeout(DEADLINE).unwrap();
    assert!(matches!(pending.cancel(), CancelOutcome::Signaled));
    assert_eq!(ctx.reply(Arc::clone(&token)), Err(Error::OriginDisappeared));
    assert_eq!(Arc::strong_count(&token), 1);

    let pending = client.req_async(2).unwrap();
    let (_, ctx) = server.wait_timeout(DEADLINE).unwrap();
    assert!(pending.detach().is_none());
    // Detached, not canceled: the server is not told, but nobody is there to take the reply.
    assert!(!ctx.is_canceled());
    assert_eq!(ctx.reply(Arc::clone(&token)), Err(Error::OriginDisappeared));
    assert_eq!(Arc::strong_count(&token), 1);
}

#[test]
fn wait_timeouts_on_both_sides() {
    let (server, client) = channel::<u32, u32, ()>();
    assert!(matches!(
        server.wait_timeout(Duration::from_millis(10)),
        Err(Error::Timeout)
    ));
    let pending = client.req_async(3).unwrap();
    let (n, ctx) = server.wait_timeout(DEADLINE).unwrap();
    assert_eq!(n, 3);
    // The reply never comes before the deadline: the wait gives up and the server is told.
    assert_eq!(
        pending.wait_timeout(Duration::from_millis(10)),
        Err(Error::Timeout)
    );
    assert!(ctx.is_canceled());
    assert_eq!(ctx.reply(4), Err(Error::OriginDisappeared));

    let pending = client.req_async(5).unwrap();
    let (n, ctx) = server.wait().unwrap();
    ctx.reply(n * 2).unwrap();
    assert_eq!(pending.wait_timeout(DEADLINE), Ok(10));
}

#[test]
fn send_timeout_on_full_queue_hands_message_back() {
    let (_server, client) = bounded::<String, (), ()>(1);
    client.send("first".into()).unwrap();
    match client.send_timeout("second".into(), Duration::from_millis(10)) {
        Err(SendError::Timeout(m)) => assert_eq!(m, "second"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let pending = client.try_req("third".into());
    assert!(matches!(pending, Err(SendError::Full(ref m)) if m == "third"));
    assert_eq!(
        client.req_timeout("fourth".into(), Duration::from_millis(10)),
        Err(Error::Timeout)
    );
}

#[test]
fn cancel_withdraws_queued_request_and_hands_it_back() {
    let (server, client) = channel::<String, (), ()>();
    let a = client.req_async("a".into()).unwrap();
    let b = client.req_async("b".into()).unwrap();
    let c = client.req_async("c".into()).unwrap();
    assert_eq!(b.cancel(), CancelOutcome::Withdrawn("b".to_string()));
    // The server sees a and c only.
    let (ra, ctx_a) = server.wait().unwrap();
    let (rc, ctx_c) = server.wait().unwrap();
    assert_eq!((ra.as_str(), rc.as_str()), ("a", "c"));
    assert!(server.try_pop().unwrap().is_none());
    ctx_a.reply(()).unwrap();
    ctx_c.reply(()).unwrap();
    assert_eq!(a.wait(), Ok(()));
    assert_eq!(c.wait(), Ok(()));
}

#[test]
fn cancel_after_take_is_seen_by_server() {
    let (server, client) = channel::<u32, u32, ()>();
    let pending = client.req_async(1).unwrap();
    let (_, ctx) = server.wait().unwrap();
    assert!(!ctx.is_canceled());
    assert_eq!(pending.cancel(), CancelOutcome::Signaled);
    assert!(ctx.is_canceled());
    assert_eq!(ctx.reply(2), Err(Error::OriginDisappeared));
}

#[test]
fn cancel_after_reply_returns_the_reply() {
    let (server, client) = channel::<u32, u32, ()>();
    let pending = client.req_async(1).unwrap();
    let (_, ctx) = server.wait().unwrap();
    ctx.reply(2).unwrap();
    assert_eq!(pending.cancel(), CancelOutcome::Completed(Ok(2)));
}

#[test]
fn dropping_wait_reply_cancels() {
    let (server, client) = channel::<u32, u32, ()>();
    drop(client.req_async(1).unwrap());
    assert!(server.try_pop().unwrap().is_none());
    let pending = client.req_async(2).unwrap();
    let (_, ctx) = server.wait().unwrap();
    drop(pending);
    assert!(ctx.is_canceled());
    assert_eq!(ctx.fail(()), Err(Error::OriginDisappeared));
}

/// The one deliberate difference from ump, and the way to get ump's behaviour: a detached
/// call (queued, or already taken) is served as usual and is not canceled; it keeps its
/// room in a bounded queue until the server answers; an answer that came first is returned.
#[test]
fn a_detached_call_goes_on_without_its_caller() {
    let (server, client) = bounded::<u32, u32, ()>(1);
    // Queued, then detached: the server still receives it, not canceled.
    assert!(client.req_async(1).unwrap().detach().is_none());
    // Its room is still held: the queue of one is full.
    assert!(matches!(client.try_req(9), Err(SendError::Full(9))));
    let (n, ctx) = server.wait().unwrap();
    assert_eq!(n, 1);
    assert!(!ctx.is_canceled());
    // Nobody reads the answer, and the server is told so.
    assert_eq!(ctx.reply(2), Err(Error::OriginDisappeared));
    // The room came back with the answer.
    let taken = client.req_async(3).unwrap();
    let (n, ctx) = server.wait().unwrap();
    assert_eq!(n, 3);
    // Taken, then detached: still not canceled.
    assert!(taken.detach().is_none());
    assert!(!ctx.is_canceled());
    drop(ctx); // a dropped context owes nothing to a detached caller
               // Answered first: detach hands the answer back.
    let answered = client.req_async(5).unwrap();
    let (n, ctx) = server.wait().unwrap();
    ctx.reply(n + 1).unwrap();
    assert_eq!(answered.detach(), Some(Ok(6)));
    assert!(server.try_pop().unwrap().is_none());
}

#[test]
fn dropping_areq_future_withdraws_queued_request() {
    let (server, client) = channel::<u32, u32, ()>();
    {
        let mut fut = pin!(client.areq(1));
        assert!(poll_once(fut.as_mut()).is_pending());
        // The request is queued now; dropping the future takes it back.
    }
    assert!(server.try_pop().unwrap().is_none());
}

#[test]
fn dropping_areq_future_signals_taken_request() {
    let (server, client) = channel::<u32, u32, ()>();
    let ctx = {
        let mut fut = pin!(client.areq(1));
        assert!(poll_once(fut.as_mut()).is_pending());
        let (n, ctx) = server.wait().unwrap();
        assert_eq!(n, 1);
        assert!(!ctx.is_canceled());
        ctx
    };
    assert!(ctx.is_canceled());
    assert_eq!(ctx.reply(1), Err(Error::OriginDisappeared));
}

#[test]
fn tokio_timeout_on_areq_cancels() {
    let (server, client) = channel::<u32, u32, ()>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let r = rt
        .block_on(async { tokio::time::timeout(Duration::from_millis(10), client.areq(1)).await });
    assert!(r.is_err());
    assert!(server.try_pop().unwrap().is_none());
}

#[test]
fn bounded_req_waits_for_room() {
    let (server, client) = bounded::<u32, u32, ()>(1);
    let first = client.req_async(1).unwrap();
    // Full: a non-blocking attempt fails and hands the request back.
    assert!(matches!(client.try_req(99), Err(SendError::Full(99))));
    let c2 = client.clone();
    let (started_tx, started_rx) = mpsc::channel();
    let blocked = thread::spawn(move || {
        started_tx.send(()).unwrap();
        c2.req(2) // waits for room, then for the reply
    });
    started_rx.recv_timeout(DEADLINE).unwrap();
    let (n, ctx) = server.wait().unwrap();
    assert_eq!(n, 1);
    ctx.reply(10).unwrap();
    let (n, ctx) = server.wait_timeout(DEADLINE).unwrap();
    assert_eq!(n, 2);
    ctx.reply(20).unwrap();
    assert_eq!(first.wait(), Ok(10));
    assert_eq!(blocked.join().unwrap(), Ok(20));
}

#[test]
fn bounded_send_blocks_until_room() {
    let (server, client) = bounded::<u32, (), ()>(2);
    client.send(1).unwrap();
    client.send(2).unwrap();
    assert!(matches!(client.try_send(3), Err(SendError::Full(3))));
    let sender = thread::spawn(move || {
        for i in 3..=20 {
            client.send(i).unwrap();
        }
    });
    for i in 1..=20 {
        let (n, _) = server.wait_timeout(DEADLINE).unwrap();
        assert_eq!(n, i);
    }
    sender.join().unwrap();
}

#[test]
fn bounded_withdrawal_frees_room() {
    let (server, client) = bounded::<u32, u32, ()>(1);
    let pending = client.req_async(1).unwrap();
    assert!(client.try_send(2).is_err());
    assert_eq!(pending.cancel(), CancelOutcome::Withdrawn(1));
    client.try_send(3).unwrap();
    let (n, ctx) = server.wait().unwrap();
    assert_eq!(n, 3);
    assert!(ctx.is_one_way());
}

#[test]
fn bounded_areq_waits_for_room() {
    let (server, client) = bounded::<u32, u32, ()>(1);
    let first = client.req_async(1).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let c2 = client.clone();
    let task = rt.spawn(async move { c2.areq(2).await });
    let (n, ctx) = server.wait().unwrap();
    assert_eq!(n, 1);
    ctx.reply(10).unwrap();
    let (n, ctx) = server.wait_timeout(DEADLINE).unwrap();
    assert_eq!(n, 2);
    ctx.reply(20).unwrap();
    assert_eq!(first.wait(), Ok(10));
    assert_eq!(rt.block_on(task).unwrap(), Ok(20));
}

#[test]
fn bounded_server_drop_wakes_blocked_sender() {
    let (server, client) = bounded::<u32, (), ()>(1);
    client.send(1).unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let t = thread::spawn(move || {
        started_tx.send(()).unwrap();
        client.send(2)
    });
    started_rx.recv_timeout(DEADLINE).unwrap();
    drop(server);
    assert!(matches!(
        t.join().unwrap(),
        Err(SendError::ServerDisappeared(2))
    ));
}

#[test]
fn several_workers_serve_concurrently() {
    const WORKERS: usize = 4;
    let (server, client) = channel::<usize, usize, ()>();
    let (got_tx, got_rx) = mpsc::channel();
    let (go_txs, go_rxs): (Vec<_>, Vec<_>) = (0..WORKERS).map(|_| mpsc::channel::<()>()).unzip();
    let workers: Vec<_> = go_rxs
        .into_iter()
        .enumerate()
        .map(|(w, go)| {
            let server = server.clone();
            let got_tx = got_tx.clone();
            thread::spawn(move || {
                // Phase 1: each worker holds one request until all workers hold one.
                let (n, ctx) = server.wait().unwrap();
                got_tx.send(w).unwrap();
                go.recv_timeout(DEADLINE).unwrap();
                ctx.reply(n).unwrap();
                // Phase 2: serve until the clients are gone.
                let mut served = 1;
                while let Ok((n, ctx)) = server.wait() {
                    ctx.reply(n).unwrap();
                    served += 1;
                }
                served
            })
        })
        .collect();
    drop(server);
    let pendings: Vec<_> = (0..WORKERS).map(|i| client.req_async(i).unwrap()).collect();
    let mut holders: Vec<usize> = (0..WORKERS)
        .map(|_| got_rx.recv_timeout(DEADLINE).unwrap())
        .collect();
    holders.sort();
    assert_eq!(holders, (0..WORKERS).collect::<Vec<_>>());
    for go in go_txs {
        go.send(()).unwrap();
    }
    for (i, p) in pendings.into_iter().enumerate() {
        assert_eq!(p.wait(), Ok(i));
    }
    for i in 0..1000 {
        assert_eq!(client.req(i), Ok(i));
    }
    drop(client);
    let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(total, WORKERS + 1000);
}

#[test]
fn dropping_one_of_several_servers_keeps_queue() {
    let (server, client) = channel::<u32, u32, ()>();
    let second = server.clone();
    let pending = client.req_async(1).unwrap();
    drop(server);
    assert!(!pending.is_ready());
    let (n, ctx) = second.wait().unwrap();
    ctx.reply(n).unwrap();
    assert_eq!(pending.wait(), Ok(1));
}

#[test]
fn weak_client_upgrade_follows_its_docs() {
    let (server, client) = channel::<u32, u32, ()>();
    let weak = client.weak();
    // While a strong client exists, upgrade succeeds and the upgraded client counts.
    let upgraded = weak.upgrade().expect("a strong client exists");
    drop(client);
    assert!(
        server.try_pop().unwrap().is_none(),
        "upgraded client keeps the channel open"
    );
    drop(upgraded);
    // No strong client: the server is told, and the weak handle cannot revive the channel
    // even though the server is alive.
    assert!(matches!(server.try_pop(), Err(Error::ClientsDisappeared)));
    assert!(weak.upgrade().is_none());
    assert!(weak.clone().upgrade().is_none());
}

#[test]
fn weak_client_does_not_count_as_client() {
    let (server, client) = channel::<u32, u32, ()>();
    let _weak = client.weak();
    drop(client);
    assert!(matches!(server.wait(), Err(Error::ClientsDisappeared)));
}

/// An idle server thread ends its spin and sleeps: its CPU time stops growing.
#[cfg(target_os = "linux")]
#[test]
fn idle_server_thread_sleeps() {
    fn cpu_ticks_and_state(task: &str) -> (u64, char) {
        let stat = std::fs::read_to_string(format!("/proc/{task}/stat")).unwrap();
        // Fields after the command name in parentheses: state, ppid, ..., utime (14), stime (15).
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let state = fields[0].chars().next().unwrap();
        let utime: u64 = fields[11].parse().unwrap();
        let stime: u64 = fields[12].parse().unwrap();
        (utime + stime, state)
    }
    let (server, client) = channel::<u32, u32, ()>();
    let (task_tx, task_rx) = mpsc::channel();
    let t = thread::spawn(move || {
        let me = std::fs::read_link("/proc/thread-self").unwrap();
        task_tx.send(me.to_string_lossy().into_owned()).unwrap();
        server.wait().map(|_| ())
    });
    let task = task_rx.recv_timeout(DEADLINE).unwrap();
    // Wait (with a deadline) until the server thread is asleep in the kernel.
    let start = std::time::Instant::now();
    while cpu_ticks_and_state(&task).1 != 'S' {
        assert!(
            start.elapsed() < DEADLINE,
            "server thread never went to sleep"
        );
        thread::yield_now();
    }
    let (before, _) = cpu_ticks_and_state(&task);
    thread::sleep(Duration::from_millis(300));
    let (after, state) = cpu_ticks_and_state(&task);
    // A spinning thread would use ~30 ticks (10 ms each) in 300 ms; a sleeping one none.
    assert!(
        after - before <= 1,
        "idle server used {} ticks",
        after - before
    );
    assert_eq!(state, 'S');
    drop(client);
    assert_eq!(t.join().unwrap(), Err(Error::ClientsDisappeared));
}

/// Timeouts racing replies: every reply the server delivered (`reply` returned `Ok`) reached
/// its caller exactly once, and every other call timed out.
#[test]
fn timeouts_racing_replies_are_exactly_once() {
    let (server, client) = channel::<(usize, u64), (usize, u64), ()>();
    let delivered = Arc::new(AtomicUsize::new(0));
    let d = delivered.clone();
    let srv = thread::spawn(move || {
        let mut k = 0u64;
        while let Ok(((who, n), ctx)) = server.wait() {
            k += 1;
            if k % 3 == 0 {
                // Make some calls slow enough to time out.
                thread::sleep(Duration::from_micros(300));
            }
            if ctx.reply((who, n)).is_ok() {
                d.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let received = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|who| {
            let c = client.clone();
            let received = received.clone();
            thread::spawn(move || {
                for n in 0..400u64 {
                    match c.req_timeout((who, n), Duration::from_micros(200)) {
                        Ok(r) => {
                            assert_eq!(r, (who, n));
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => assert_eq!(e, Error::Timeout),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(client);
    srv.join().unwrap();
    assert_eq!(
        delivered.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed)
    );
}
