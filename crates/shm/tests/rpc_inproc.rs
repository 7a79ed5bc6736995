//! The RPC layer with server and client in one process (two mappings of each segment): the
//! quick checks of every verb. The cross-process behaviour is tested in `rpc.rs`.
//!
//! Also, from the hardening review: 300 `areq` futures on one thread against 4 slots and a
//! server answering in batches all finish (the executor is never blocked waiting for a slot),
//! also when the slots are held by abandoned (one-way, canceled) calls; a timed-out `lend`
//! leaves the caller a private copy; registering buffers with a server that does not read
//! them times out instead of hanging; an unread subscription holds at most `push_depth`
//! values (the server sees `Full`); the `try_*` and `*_timeout` forms of every blocking verb,
//! and `Duration::MAX` timeouts (no limit, no overflow panic): `Server::wait_timeout` released
//! by a call, and every client `*_timeout` form.
#![cfg(target_os = "linux")]

use courier_shm::{
    CancelOutcome, Client, ConnectConfig, Error, Incoming, PushError, SendError, Server,
    ServerConfig, ShmBuf,
};
use std::sync::mpsc;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

type Srv = Server<u64, u64, u32>;
type Cli = Client<u64, u64, u32>;

fn setup(name: &str) -> (Srv, Cli) {
    setup_with(name, ServerConfig::new())
}

fn setup_with(name: &str, cfg: ServerConfig) -> (Srv, Cli) {
    courier_testkit::runtime_dir("courier-rpc-inproc");
    let s = Srv::bind(name, cfg).unwrap();
    let c = Cli::connect(name, T).unwrap();
    (s, c)
}

#[test]
fn req_reply_fail_send_scalar() {
    let (s, c) = setup("inproc-basic");
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || loop {
        match s.wait_timeout(T).unwrap() {
            Incoming::Call(0, ctx) => {
                ctx.reply(0).unwrap();
                return;
            }
            Incoming::Call(13, ctx) => ctx.fail(7).unwrap(),
            Incoming::Call(n, ctx) if ctx.is_one_way() => tx.send(n).unwrap(),
            Incoming::Call(n, ctx) => ctx.reply(n + 1).unwrap(),
            Incoming::Scalar(call) if call.is_blocking() => {
                let a = call.args();
                let op = u64::from(call.op());
                call.reply([a[0] + a[1], op]).unwrap();
            }
            Incoming::Scalar(call) => tx.send(call.args()[3]).unwrap(),
            Incoming::Subscribe(..) => unreachable!(),
        }
    });
    for i in 1..1000u64 {
        if i != 13 {
            assert_eq!(c.req(i), Ok(i + 1));
        }
    }
    assert_eq!(c.req(13), Err(Error::App(7)));
    c.send(99).unwrap();
    assert_eq!(rx.recv_timeout(T).unwrap(), 99);
    c.scalar(1, [0, 0, 0, u64::MAX]).unwrap();
    assert_eq!(rx.recv_timeout(T).unwrap(), u64::MAX);
    assert_eq!(
        c.blocking_scalar(5, [u64::MAX - 1, 1, 0, 0]),
        Ok([u64::MAX, 5])
    );
    let w = c.req_async(41).unwrap();
    assert_eq!(w.wait(), Ok(42));
    assert_eq!(futures::executor::block_on(c.areq(10)), Ok(11));
    c.req(0).unwrap();
    worker.join().unwrap();
}

#[test]
fn lend_and_lend_mut_in_place() {
    let (s, c) = setup("inproc-lend");
    let worker = std::thread::spawn(move || {
        for _ in 0..2 {
            let Incoming::Call(op, mut ctx) = s.wait_timeout(T).unwrap() else {
                panic!()
            };
            if op == 1 {
                let sum: u64 = ctx
                    .lent()
                    .unwrap()
                    .to_vec()
                    .iter()
                    .map(|&b| u64::from(b))
                    .sum();
                assert!(ctx.lent_mut().is_none());
                ctx.reply(sum).unwrap();
            } else {
                let mut buf = ctx.lent_mut().unwrap();
                buf.fill(0xAB);
                let n = buf.len() as u64;
                ctx.reply(n).unwrap();
            }
        }
    });
    let mut buf = ShmBuf::new(1 << 20).unwrap();
    buf.view_mut().write_at(0, &[1, 2, 3, 4]).unwrap();
    assert_eq!(c.lend(1, &buf), Ok(10));
    assert_eq!(c.lend_mut(2, &mut buf), Ok(1 << 20));
    assert!(buf.view().to_vec().iter().all(|&b| b == 0xAB));
    worker.join().unwrap();
}

#[test]
fn deferred_noreply_cancel_and_push() {
    let (s, c) = setup("inproc-defer");
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        // A call kept while another is served, answered later from another thread.
        let Incoming::Call(1, kept) = s.wait_timeout(T).unwrap() else {
            panic!()
        };
        let Incoming::Call(2, ctx) = s.wait_timeout(T).unwrap() else {
            panic!()
        };
        ctx.reply(20).unwrap();
        std::thread::spawn(move || kept.reply(10).unwrap())
            .join()
            .unwrap();
        // Dropped unanswered.
        let Incoming::Call(3, ctx) = s.wait_timeout(T).unwrap() else {
            panic!()
        };
        drop(ctx);
        let Incoming::Scalar(call) = s.wait_timeout(T).unwrap() else {
            panic!()
        };
        drop(call);
        // Cancel seen by the server.
        let Incoming::Call(4, ctx) = s.wait_timeout(T).unwrap() else {
            panic!()
        };
        tx.send(()).unwrap();
        let deadline = std::time::Instant::now() + T;
        while !ctx.is_canceled() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::yield_now();
        }
        assert_eq!(ctx.reply(0), Err(Error::OriginDisappeared));
        // Push.
        let Incoming::Subscribe(5, n) = s.wait_timeout(T).unwrap() else {
            panic!()
        };
        for i in 0..10u64 {
            n.push(i).unwrap();
        }
        drop(n);
    });
    let w1 = c.req_async(1).unwrap();
    assert_eq!(c.req(2), Ok(20));
    assert_eq!(w1.wait_timeout(T), Ok(10));
    assert_eq!(c.req(3), Err(Error::NoReply));
    assert_eq!(c.blocking_scalar(0, [0; 4]), Err(Error::NoReply));
    let w = c.req_async(4).unwrap();
    rx.recv_timeout(T).unwrap();
    assert_eq!(w.cancel(), CancelOutcome::Signaled);
    let sub = c.subscribe(5).unwrap();
    for i in 0..10u64 {
        assert_eq!(sub.recv_timeout::<u64>(T), Ok(i));
    }
    assert_eq!(sub.recv_timeout::<u64>(T), Err(Error::NoReply));
    worker.join().unwrap();
}

#[test]
fn timeout_withdraws_and_server_drop_fails_queued() {
    let (s, c) = setup("inproc-timeout");
    assert_eq!(
        c.req_timeout(1, Duration::from_millis(50)),
        Err(Error::Timeout)
    );
    // The withdrawn call is skipped; the next one is served.
    let c2 = c.clone();
    let t = std::thread::spawn(move || c2.req(2));
    let Incoming::Call(2, ctx) = s.wait_timeout(T).unwrap() else {
        panic!()
    };
    ctx.reply(3).unwrap();
    assert_eq!(t.join().unwrap(), Ok(3));
    let w = c.req_async(9).unwrap();
    drop(s);
    assert_eq!(w.wait_timeout(T), Err(Error::ServerDisappeared));
    assert_eq!(c.req_timeout(1, T), Err(Error::ServerDisappeared));
}

#[test]
fn mismatched_types_and_oversized_messages_are_errors() {
    let (s, c) = setup("inproc-mismatch");
    // The worker sees only the honest call.
    let worker = std::thread::spawn(move || {
        let Incoming::Call(n, ctx) = s.wait_timeout(T).unwrap() else {
            panic!()
        };
        ctx.reply(n).unwrap();
    });
    // A client that disagrees on the request type: refused by its signature, never served.
    let wrong: Client<u32, u64, u32> = Client::connect("inproc-mismatch", T).unwrap();
    assert_eq!(wrong.req_timeout(5, T), Err(Error::Protocol));
    // A request larger than a slot (4 KiB by default) is not sent.
    let big: Client<[u8; 8192], u64, u32> = Client::connect("inproc-mismatch", T).unwrap();
    assert_eq!(big.req_timeout([0; 8192], T), Err(Error::TooLarge));
    assert_eq!(c.req(8), Ok(8));
    worker.join().unwrap();
}

#[cfg(feature = "serde")]
#[test]
fn postcard_values_travel() {
    use courier_shm::Postcard;
    courier_testkit::runtime_dir("courier-rpc-inproc");
    let s: Server<Postcard<Vec<String>>, Postcard<String>, ()> =
        Server::bind("inproc-postcard", ServerConfig::new()).unwrap();
    let c: Client<Postcard<Vec<String>>, Postcard<String>, ()> =
        Client::connect("inproc-postcard", T).unwrap();
    let worker = std::thread::spawn(move || {
        let Incoming::Call(Postcard(words), ctx) = s.wait_timeout(T).unwrap() else {
            panic!()
        };
        ctx.reply(Postcard(words.join(" "))).unwrap();
    });
    let words = vec!["hello".to_owned(), "from".into(), "postcard".into()];
    assert_eq!(
        c.req(Postcard(words)),
        Ok(Postcard("hello from postcard".to_owned()))
    );
    worker.join().unwrap();
}

/// A hostile client (a raw connection that writes whatever it likes into its segment:
/// control words, ring entries, slot records and states) never makes the server panic, hang
/// or stop serving an honest client.
#[test]
fn hostile_client_writes_never_hurt_the_server() {
    use courier_shm::{ConnectConfig, Connection};
    let (s, c) = setup("inproc-hostile");
    let evil = Connection::connect_timeout("inproc-hostile", &ConnectConfig::new(), T).unwrap();
    let payload = evil.segment().payload();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..2000 {
        // Mostly the control lines, the ring and the slot records; sometimes anywhere.
        let span = if round % 4 == 0 {
            payload.len()
        } else {
            16 * 1024
        };
        let off = (next() as usize % (span / 8)) * 8;
        let v = match next() % 4 {
            0 => next() % 8,               // small: slot indices, states, kinds
            1 => (next() % 8) | (1 << 52), // plausible ring entries (first lap's stamp)
            2 => u64::MAX - next() % 3,    // huge
            _ => next(),
        };
        evil.segment().write_at(off, &v.to_le_bytes()).unwrap();
        let start = std::time::Instant::now();
        match s.wait_timeout(Duration::from_micros(200)) {
            Ok(Incoming::Call(_, ctx)) => drop(ctx.reply(1)),
            Ok(Incoming::Scalar(call)) => drop(call.reply([1, 2])),
            Ok(Incoming::Subscribe(_, n)) => drop(n.push(1u64)),
            Err(_) => {}
        }
        assert!(start.elapsed() < Duration::from_secs(2));
    }
    let worker = std::thread::spawn(move || loop {
        // (The hostile connection may still produce junk calls: ignored.)
        if let Incoming::Call(77, ctx) = s.wait_timeout(T).unwrap() {
            ctx.reply(78).unwrap();
            return;
        }
    });
    assert_eq!(c.req_timeout(77, T), Ok(78));
    worker.join().unwrap();
    drop(evil);
}

/// A listener that is not an RPC server (its segment has no RPC header, it sends no
/// doorbell): connecting fails with an error, never a hang or a panic.
#[test]
fn a_non_rpc_listener_is_refused() {
    use courier_shm::{Listener, ListenerConfig, ShmError};
    let _ = setup("inproc-not-rpc-warmup");
    let l = Listener::bind(
        "inproc-not-rpc",
        ListenerConfig::new().segment_size(1 << 16),
    )
    .unwrap();
    let t = std::thread::spawn(move || {
        // The client has the segment once this returns; dropping it changes nothing.
        drop(l.accept_timeout(T).unwrap());
    });
    let r = Cli::connect("inproc-not-rpc", T);
    assert!(matches!(r, Err(ShmError::Corrupt(_))), "{r:?}");
    t.join().unwrap();
}

/// Runs `f` on its own thread and returns its result, or fails after `T`.
fn within<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    courier_testkit::within(what, T, f)
}

/// A worker that takes `batch` calls before it answers them (`n + 1` each), `total` in all.
fn batch_worker(s: Srv, batch: usize, total: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut served = 0;
        while served < total {
            let mut held = Vec::new();
            while held.len() < batch.min(total - served) {
                match s.wait_timeout(T).unwrap() {
                    Incoming::Call(n, ctx) => held.push((n, ctx)),
                    _ => unreachable!(),
                }
            }
            served += held.len();
            for (n, ctx) in held {
                let _ = ctx.reply(n + 1);
            }
        }
    })
}

#[test]
fn areq_on_one_thread_waits_for_slots_without_blocking_it() {
    let (s, c) = setup_with("inproc-areq-slots", ServerConfig::new().slots(4));
    let worker = batch_worker(s, 4, 300);
    let got = within("300 areqs on one thread, 4 slots", move || {
        futures::executor::block_on(futures::future::join_all((0..300u64).map(|i| c.areq(i))))
    });
    assert_eq!(got, (0..300u64).map(|i| Ok(i + 1)).collect::<Vec<_>>());
    worker.join().unwrap();
}

#[test]
fn areq_waits_for_slots_held_by_abandoned_calls() {
    let (s, c) = setup_with("inproc-areq-zombies", ServerConfig::new().slots(2));
    // Both slots: a one-way call and a canceled one, neither completed by the server yet.
    c.send(100).unwrap();
    assert_eq!(
        c.req_timeout(200, Duration::from_millis(50)),
        Err(Error::Timeout)
    );
    let c2 = c.clone();
    let pending = std::thread::spawn(move || {
        futures::executor::block_on(futures::future::join_all((0..8u64).map(|i| c2.areq(i))))
    });
    // The server takes the abandoned ones (the canceled one is handed back unseen), then
    // answers the rest.
    let mut answered = 0;
    while answered < 8 {
        match s.wait_timeout(T).unwrap() {
            Incoming::Call(n, ctx) if ctx.is_one_way() => assert_eq!(n, 100),
            Incoming::Call(n, ctx) => {
                assert!(n < 8, "the withdrawn call came through");
                ctx.reply(n + 1).unwrap();
                answered += 1;
            }
            _ => unreachable!(),
        }
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(pending.join().unwrap()));
    let got = rx
        .recv_timeout(T)
        .expect("areqs behind abandoned slots: not done");
    assert_eq!(got, (0..8u64).map(|i| Ok(i + 1)).collect::<Vec<_>>());
}

#[test]
fn try_and_timeout_forms_never_wait_past_their_limit() {
    let (s, c) = setup_with("inproc-try-forms", ServerConfig::new().slots(2));
    // Both slots held by calls the server keeps.
    let c2 = c.clone();
    let held = std::thread::spawn(move || c2.req(1));
    let c3 = c.clone();
    let held2 = std::thread::spawn(move || c3.req(3));
    let mut ctxs = Vec::new();
    while ctxs.len() < 2 {
        match s.wait_timeout(T).unwrap() {
            Incoming::Call(n, ctx) => ctxs.push((n, ctx)),
            _ => unreachable!(),
        }
    }
    match c.try_send(7) {
        Err(SendError::Full(7)) => {}
        other => panic!("try_send with no free slot: {other:?}"),
    }
    assert!(matches!(c.try_req(8), Err(SendError::Full(8))));
    assert_eq!(c.try_scalar(1, [0; 4]), Err(Error::Timeout));
    let short = Duration::from_millis(30);
    assert_eq!(c.send_timeout(9, short), Err(SendError::Timeout(9)));
    assert_eq!(c.scalar_timeout(1, [0; 4], short), Err(Error::Timeout));
    assert_eq!(c.req_timeout(10, short), Err(Error::Timeout));
    assert_eq!(
        c.blocking_scalar_timeout(1, [0; 4], short),
        Err(Error::Timeout)
    );
    assert!(matches!(
        c.subscribe_timeout(11, short),
        Err(Error::Timeout)
    ));
    // Answer: everything flows again, and `Duration::MAX` means no limit.
    for (n, ctx) in ctxs {
        ctx.reply(n + 1).unwrap();
    }
    let worker = std::thread::spawn(move || {
        let mut subs = Vec::new();
        for _ in 0..4 {
            match s.wait_timeout(T).unwrap() {
                Incoming::Call(n, ctx) if ctx.is_one_way() => assert_eq!(n, 12),
                Incoming::Call(n, ctx) => ctx.reply(n + 1).unwrap(),
                Incoming::Subscribe(_, notifier) => subs.push(notifier),
                Incoming::Scalar(call) => call.reply([5, 6]).unwrap(),
            }
        }
        (s, subs)
    });
    let c4 = c.clone();
    let r = within("Duration::MAX timeouts", move || {
        drop(Cli::connect("inproc-try-forms", Duration::MAX).unwrap());
        let a = c4.req_timeout(13, Duration::MAX);
        let b = c4.blocking_scalar_timeout(2, [0; 4], Duration::MAX);
        c4.send_timeout(12, Duration::MAX).unwrap();
        let sub = c4.subscribe_timeout(14, Duration::MAX).map(drop);
        (a, b, sub)
    });
    assert_eq!(r, (Ok(14), Ok([5, 6]), Ok(())));
    let _ = worker.join().unwrap();
    let _ = (held.join().unwrap(), held2.join().unwrap());
}

#[test]
fn registering_buffers_with_a_server_that_reads_none_times_out() {
    // No worker ever waits, so the server reads no registration and the socket fills.
    let (_s, c) = setup("inproc-register-full");
    let r = within(
        "lends of fresh buffers to a server that reads nothing",
        move || {
            let mut outcomes = std::collections::BTreeMap::new();
            for i in 0..3000u64 {
                let mut buf = ShmBuf::new(4096).unwrap();
                let r = c.lend_timeout(i, &mut buf, Duration::ZERO);
                *outcomes.entry(format!("{r:?}")).or_insert(0) += 1;
            }
            // Once the socket is full, a lend with time to spare gives up at its deadline.
            let mut buf = ShmBuf::new(4096).unwrap();
            let start = std::time::Instant::now();
            let r = c.lend_timeout(1, &mut buf, Duration::from_millis(200));
            (outcomes, r, start.elapsed())
        },
    );
    let (outcomes, last, took) = r;
    assert_eq!(outcomes.keys().collect::<Vec<_>>(), ["Err(Timeout)"]);
    assert_eq!(last, Err(Error::Timeout));
    assert!(
        took >= Duration::from_millis(200),
        "gave up early: {took:?}"
    );
}

#[test]
fn an_unread_subscription_holds_at_most_push_depth_values() {
    const DEPTH: usize = 4;
    let (s, c) = setup_with("inproc-push-bound", ServerConfig::new().push_depth(DEPTH));
    let worker = std::thread::spawn(move || {
        let mut n = Vec::new();
        for _ in 0..2 {
            match s.wait_timeout(T).unwrap() {
                Incoming::Subscribe(k, notifier) => n.push((k, notifier)),
                _ => unreachable!(),
            }
        }
        n.sort_by_key(|(k, _)| *k);
        n
    });
    let quiet = c.subscribe(1).unwrap();
    let busy = c.subscribe(2).unwrap();
    let notifiers = worker.join().unwrap();
    let (quiet_n, busy_n) = (&notifiers[0].1, &notifiers[1].1);
    // The server pushes 10 x depth values to the subscription nobody reads, while the
    // other subscription's reader keeps draining the shared ring.
    let mut accepted = Vec::new();
    let mut full = 0;
    for i in 0..(10 * DEPTH) as u64 {
        match quiet_n.push(i) {
            Ok(()) => accepted.push(i),
            Err(PushError::Full) => full += 1,
            Err(e) => panic!("push {i}: {e:?}"),
        }
        assert_eq!(busy.try_recv::<u64>(), Ok(None));
    }
    // At most depth values wait in the client's queue and depth in the shared ring.
    assert!(
        accepted.len() <= 2 * DEPTH,
        "{} pushes accepted",
        accepted.len()
    );
    assert_eq!(full, 10 * DEPTH - accepted.len());
    // The other subscription waits behind the full queue (the promised backpressure) and
    // gets its value once the quiet one is read.
    assert_eq!(busy_n.push(99u64), Err(PushError::Full));
    let got: Vec<u64> = (0..accepted.len())
        .map(|_| quiet.recv_timeout(T).unwrap())
        .collect();
    assert_eq!(got, accepted, "the accepted values, in order");
    assert_eq!(quiet.try_recv::<u64>(), Ok(None));
    busy_n.push(100u64).unwrap();
    assert_eq!(busy.recv_timeout::<u64>(T), Ok(100));
}

#[test]
fn a_timed_out_lend_leaves_the_caller_a_private_copy() {
    let (s, c) = setup("inproc-lend-detach");
    let (written, wait_written) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let Incoming::Call(_, ctx) = s.wait_timeout(T).unwrap() else {
            unreachable!()
        };
        // Held past the caller's deadline, until it has written its buffer again; then the
        // server reads what it was lent.
        wait_written.recv_timeout(T).unwrap();
        let seen = ctx.lent().unwrap().to_vec();
        let _ = ctx.reply(0);
        seen
    });
    let mut buf = ShmBuf::new(8192).unwrap();
    buf.view_mut().fill(1);
    let r = c.lend_timeout(5, &mut buf, Duration::from_secs(1));
    assert_eq!(r, Err(Error::Timeout));
    assert!(!buf.is_poisoned());
    // The caller's bytes are as they were, and what it writes now is its own.
    assert_eq!(buf.view().to_vec(), vec![1u8; 8192]);
    buf.view_mut().fill(2);
    written.send(()).unwrap();
    let seen = worker.join().unwrap();
    assert_eq!(
        seen,
        vec![1u8; 8192],
        "the server saw the caller's later writes"
    );
}

/// `Server::wait_timeout(Duration::MAX)` means no limit: a worker waiting so is released by
/// the next call (it used to panic adding the timeout to the clock).
#[test]
fn server_wait_timeout_of_duration_max_is_released_by_a_call() {
    let (s, c) = setup("inproc-wait-max");
    let (started, wait_started) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        started.send(()).unwrap();
        match s.wait_timeout(Duration::MAX) {
            Ok(Incoming::Call(n, ctx)) => ctx.reply(n + 1).map_err(|e| format!("{e:?}")),
            Ok(other) => Err(format!("not a call: {other:?}")),
            Err(e) => Err(format!("{e:?}")),
        }
    });
    wait_started
        .recv_timeout(T)
        .expect("the worker did not start before the deadline");
    assert_eq!(c.req_timeout(7, T), Ok(8));
    let r = within("the worker's end", move || worker.join());
    assert_eq!(r.expect("the worker panicked"), Ok(()));
}

/// Every client `*_timeout` form not covered above takes `Duration::MAX` as no limit:
/// `lend_timeout`, `lend_mut_timeout`, `scalar_timeout`, `WaitReply::wait_timeout`,
/// `Subscription::recv_timeout`.
#[test]
fn client_timeout_forms_of_duration_max_mean_no_limit() {
    let (s, c) = setup("inproc-client-max");
    let worker = std::thread::spawn(move || {
        let mut subs = Vec::new();
        for _ in 0..5 {
            match s.wait_timeout(T).unwrap() {
                Incoming::Call(1, ctx) => {
                    let n = ctx.lent().unwrap().len() as u64;
                    ctx.reply(n).unwrap();
                }
                Incoming::Call(2, mut ctx) => {
                    ctx.lent_mut().unwrap().fill(9);
                    ctx.reply(2).unwrap();
                }
                Incoming::Call(n, ctx) => ctx.reply(n + 1).unwrap(),
                Incoming::Scalar(call) => assert_eq!(call.args()[0], 4),
                Incoming::Subscribe(n, notifier) => {
                    notifier.push(n + 100).unwrap();
                    subs.push(notifier);
                }
            }
        }
        subs
    });
    let r = within("Duration::MAX timeouts of the client", move || {
        let mut buf = ShmBuf::new(4096).unwrap();
        let lend = c.lend_timeout(1, &mut buf, Duration::MAX);
        let lend_mut = c.lend_mut_timeout(2, &mut buf, Duration::MAX);
        let filled = buf.view().to_vec().iter().all(|&b| b == 9);
        let pending = c.req_async(3).unwrap();
        let waited = pending.wait_timeout(Duration::MAX);
        c.scalar_timeout(0, [4, 0, 0, 0], Duration::MAX).unwrap();
        let sub = c.subscribe(5).unwrap();
        let pushed = sub.recv_timeout::<u64>(Duration::MAX);
        (lend, lend_mut, filled, waited, pushed)
    });
    assert_eq!(r, (Ok(4096), Ok(2), true, Ok(4), Ok(105)));
    drop(worker.join().unwrap());
}

/// `Server::async_wait` serves calls from a task, without a blocking worker: each call comes
/// only after the previous reply, and the server never spins (`spin(0)`), so the task is idle
/// (its future pending, the reactor asleep) before every one of them, and the reactor must
/// wake it. Two tasks joined on one thread share the calls.
#[test]
fn async_wait_serves_calls_from_tasks_on_one_thread() {
    let (s, c) = setup_with(
        "inproc-async-wait",
        ServerConfig::new().spin(Duration::ZERO),
    );
    const N: u64 = 200;
    let served = std::sync::atomic::AtomicU64::new(0);
    let (done, finished) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let task = || async {
            while served.load(std::sync::atomic::Ordering::SeqCst) < N {
                match s.async_wait().await {
                    Ok(Incoming::Call(n, ctx)) => {
                        served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // The client checks every reply.
                        let _ = ctx.reply(n + 1);
                    }
                    Ok(_) => panic!("not a call"),
                    Err(e) => panic!("async_wait: {e}"),
                }
            }
        };
        // The second task ends once the first has counted the last call and the server
        // gets one more (the stop call below).
        pollster::block_on(futures::future::join(task(), task()));
        let _ = done.send(());
    });
    for n in 0..N {
        assert_eq!(c.req_timeout(n, T), Ok(n + 1));
    }
    // The other task still waits: one more call ends it.
    assert_eq!(c.req_timeout(41, T), Ok(42));
    finished.recv_timeout(T).expect("the tasks did not finish");
    worker.join().unwrap();
}

/// A serving task that finds a call at every poll still lets the other tasks of its thread
/// run: after a run of calls taken at once, `async_wait` wakes its task and returns `Pending`
/// once, and the next poll takes the call. (Without the yield a task serving a steady stream
/// held a single-threaded executor for as long as the stream lasted.)
#[test]
fn async_wait_yields_to_the_executor_in_a_stream_of_calls() {
    use courier_testkit::WakeCount;
    use std::future::Future;
    use std::task::{Context, Poll};

    // As many one-way calls as the connection has slots, all queued before the server looks:
    // every poll finds one.
    const N: u64 = 300;
    let (s, c) = setup_with("inproc-async-coop", ServerConfig::new().slots(N as usize));
    for n in 0..N {
        c.try_send(n).unwrap();
    }
    // The first one taken by a blocking wait, which waits for the server's accept thread to
    // list the connection (before that a poll finds nothing, and sleeps for real).
    let Incoming::Call(first, _) = s.wait_timeout(T).unwrap() else {
        panic!("not a call");
    };
    let (woken, waker) = WakeCount::new();
    let mut cx = Context::from_waker(&waker);
    let (mut got, mut yields) = (vec![first], 0);
    while (got.len() as u64) < N {
        let mut wait = s.async_wait();
        loop {
            match std::pin::Pin::new(&mut wait).poll(&mut cx) {
                Poll::Ready(Ok(Incoming::Call(n, ctx))) => {
                    assert!(ctx.is_one_way());
                    got.push(n);
                    break;
                }
                Poll::Ready(other) => panic!("not a call: {:?}", other.err()),
                Poll::Pending => {
                    yields += 1;
                    assert_eq!(woken.count(), yields, "a yield that did not wake its task");
                    assert!(
                        yields as u64 <= N / 2,
                        "yields with no call taken between them"
                    );
                }
            }
        }
    }
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    assert!(yields >= 1, "{N} calls taken without a yield");
}

/// A `Client<Raw, Raw, Raw>` calls a typed service without its types: requests travel with
/// the signature they carry and are checked by the server as a typed client's are; replies,
/// errors and pushes come back with their own signatures and bytes; lends, scalars and
/// timeouts work as for any client.
#[test]
fn a_raw_client_forwards_bytes_with_their_signatures() {
    use courier_shm::{Raw, Wire};
    let (s, typed) = setup("inproc-raw");
    drop(typed);
    let raw: Client<Raw, Raw, Raw> = Client::connect("inproc-raw", T).unwrap();
    let worker = std::thread::spawn(move || loop {
        match s.wait_timeout(T).unwrap() {
            Incoming::Call(0, ctx) => return ctx.reply(0).unwrap(),
            Incoming::Call(13, ctx) => ctx.fail(7).unwrap(),
            Incoming::Call(n, mut ctx) => {
                if let Some(mut view) = ctx.lent_mut() {
                    view.fill(n as u8);
                }
                let lent = ctx.lent().map_or(0, |v| v.len() as u64);
                ctx.reply(n + lent).unwrap();
            }
            Incoming::Scalar(call) => {
                let a = call.args();
                call.reply([a[0] * 2, 0]).unwrap();
            }
            Incoming::Subscribe(n, notifier) => {
                notifier.push(n).unwrap();
                notifier.push(n + 1).unwrap();
            }
        }
    });
    let u64_raw = |n: u64| Raw::new(u64::SIGNATURE, n.to_le_bytes().to_vec());
    // A call: the reply keeps its type's signature.
    assert_eq!(raw.req(u64_raw(41)), Ok(u64_raw(41)));
    // An application error: the error type's signature and bytes.
    assert_eq!(
        raw.req(u64_raw(13)),
        Err(Error::App(Raw::new(
            u32::SIGNATURE,
            7u32.to_le_bytes().to_vec()
        )))
    );
    // A request of another type is refused by the server, as a typed one would be.
    let wrong = Raw::new(u32::SIGNATURE, 5u32.to_le_bytes().to_vec());
    assert_eq!(raw.req(wrong.clone()), Err(Error::Protocol));
    // So are bytes that are not a value of the type.
    assert_eq!(
        raw.req(Raw::new(u64::SIGNATURE, vec![1, 2, 3])),
        Err(Error::Protocol)
    );
    // A lend and a mutable lend.
    let mut buf = ShmBuf::new(100).unwrap();
    assert_eq!(raw.lend(u64_raw(1), &buf), Ok(u64_raw(101)));
    assert_eq!(raw.lend_mut(u64_raw(9), &mut buf), Ok(u64_raw(109)));
    assert!(buf.view().to_vec().iter().all(|&b| b == 9));
    // Scalars, one-way and timeouts.
    assert_eq!(raw.blocking_scalar(1, [21, 0, 0, 0]), Ok([42, 0]));
    raw.send_timeout(u64_raw(5), T).unwrap();
    assert_eq!(raw.req_timeout(u64_raw(6), T), Ok(u64_raw(6)));
    // A subscription's pushes, with their signature.
    let sub = raw.subscribe(u64_raw(70)).unwrap();
    assert_eq!(sub.recv_timeout::<Raw>(T), Ok(u64_raw(70)));
    assert_eq!(sub.recv_timeout::<Raw>(T), Ok(u64_raw(71)));
    assert_eq!(raw.req(u64_raw(0)), Ok(u64_raw(0)));
    worker.join().unwrap();
}

/// With no spin on either side every call sleeps on both (the parked regime): each wake-up
/// must still come, for blocking and async callers alike. A lost wake-up hangs, and the
/// deadline fails the test.
#[test]
fn calls_with_no_spin_on_either_side_are_all_answered() {
    let (s, _c) = setup_with("inproc-nospin", ServerConfig::new().spin(Duration::ZERO));
    let c = Cli::connect_with(
        "inproc-nospin",
        &ConnectConfig::new().spin(Duration::ZERO),
        T,
    )
    .unwrap();
    let server = std::thread::spawn(move || {
        while let Ok(Incoming::Call(n, ctx)) = s.wait_timeout(T) {
            let last = n == u64::MAX - 1;
            let _ = ctx.reply(n + 1);
            if last {
                return;
            }
        }
    });
    within("3,000 calls without spinning", move || {
        for i in 0..2_000u64 {
            assert_eq!(c.req(i), Ok(i + 1));
        }
        pollster::block_on(async {
            for i in 0..1_000u64 {
                assert_eq!(c.areq(i).await, Ok(i + 1));
            }
        });
        assert_eq!(c.req(u64::MAX - 1), Ok(u64::MAX));
    });
    server.join().unwrap();
}

/// A server slower than the caller's spin budget: the caller's budget shrinks to nothing
/// and the calls go on sleeping; when the server becomes fast again, calls are still all
/// answered (the probes bring the spin back; its effect is measured by `courier-bench rpc`).
#[test]
fn a_slow_server_then_a_fast_one_answers_every_call() {
    let (s, c) = setup("inproc-slowfast");
    let server = std::thread::spawn(move || {
        let mut served = 0u64;
        while let Ok(Incoming::Call(n, ctx)) = s.wait_timeout(T) {
            if served < 200 {
                std::thread::sleep(Duration::from_micros(100));
            }
            served += 1;
            let _ = ctx.reply(n + 1);
            if n == u64::MAX - 1 {
                return;
            }
        }
    });
    within("200 slow calls, then 5,000 fast ones", move || {
        for i in 0..5_200u64 {
            assert_eq!(c.req(i), Ok(i + 1));
        }
        assert_eq!(c.req(u64::MAX - 1), Ok(u64::MAX));
    });
    server.join().unwrap();
}

/// Busy-polling for an hour on both sides: calls are answered, and the time limits of
/// `Server::wait_timeout` and `Client::req_timeout` end the spins long before that.
#[test]
fn busy_polling_sides_keep_their_time_limits() {
    let hour = Duration::from_secs(3600);
    let name = "inproc-busy-poll";
    let (s, _c) = setup_with(name, ServerConfig::new().busy_poll(hour));
    let config = ConnectConfig::new().busy_poll(hour);
    let c = Cli::connect_with(name, &config, T).unwrap();
    let short = Duration::from_millis(30);
    let s = within("a busy-polling server's wait_timeout", move || {
        assert!(matches!(s.wait_timeout(short), Err(Error::Timeout)));
        s
    });
    // Nobody serves: the caller's spin ends at its deadline (the call is withdrawn).
    let c2 = c.clone();
    let r = within("a busy-polling caller's req_timeout", move || {
        c2.req_timeout(1, short)
    });
    assert_eq!(r, Err(Error::Timeout));
    let worker = std::thread::spawn(move || {
        for _ in 0..100 {
            match s.wait_timeout(T).unwrap() {
                Incoming::Call(n, ctx) => ctx.reply(n + 1).unwrap(),
                _ => unreachable!(),
            }
        }
    });
    let sum = within("busy-polled calls", move || {
        (0..100).map(|n| c.req_timeout(n, T).unwrap()).sum::<u64>()
    });
    assert_eq!(sum, (1..=100).sum::<u64>());
    worker.join().unwrap();
}

/// The bytes of a test message of `n` bytes (each length has its own).
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + n) as u8).collect()
}

/// Messages of every length around the one up to which they travel in the slot record
/// (32 bytes) arrive whole, in both directions and whatever the verb: of a type whose length
/// is known before it is written (`Raw`, written in place) as calls, errors, one-way sends,
/// calls answered with a reply of another size, and lends (a lend's request never travels in
/// the record).
#[test]
fn raw_messages_around_the_record_limit_arrive_whole() {
    use courier_shm::Raw;
    courier_testkit::runtime_dir("courier-rpc-inproc");
    let s: Server<Raw, Raw, Raw> = Server::bind("inproc-inline-raw", ServerConfig::new()).unwrap();
    let c: Client<Raw, Raw, Raw> = Client::connect("inproc-inline-raw", T).unwrap();
    let (tx, rx) = mpsc::channel();
    // The reply is the request's bytes reversed, with its signature plus one; signature 7
    // is failed the same way; a lend's reply is its request followed by the lent bytes;
    // signature 9 is answered with 40 - n bytes, so that a small request gets a large reply
    // and a large one a small reply.
    let worker = std::thread::spawn(move || loop {
        match s.wait_timeout(T).unwrap() {
            Incoming::Call(rq, ctx) if rq.signature == 0 => return ctx.reply(rq).unwrap(),
            Incoming::Call(rq, ctx) if rq.signature == 9 => {
                let n = rq.bytes.len();
                ctx.reply(Raw::new(10, pattern(40 - n))).unwrap();
            }
            Incoming::Call(rq, ctx) if ctx.is_one_way() => tx.send(rq).unwrap(),
            Incoming::Call(mut rq, ctx) => {
                if let Some(lent) = ctx.lent() {
                    rq.bytes.extend(lent.to_vec());
                }
                rq.bytes.reverse();
                let answer = Raw::new(rq.signature + 1, rq.bytes);
                if rq.signature == 7 {
                    ctx.fail(answer).unwrap();
                } else {
                    ctx.reply(answer).unwrap();
                }
            }
            _ => unreachable!(),
        }
    });
    for n in 0..=40 {
        let back = |mut b: Vec<u8>| {
            b.reverse();
            b
        };
        let rq = Raw::new(100, pattern(n));
        assert_eq!(
            c.req(rq.clone()),
            Ok(Raw::new(101, back(pattern(n)))),
            "{n}"
        );
        let err = c.req(Raw::new(7, pattern(n)));
        assert_eq!(err, Err(Error::App(Raw::new(8, back(pattern(n))))), "{n}");
        let crossed = c.req(Raw::new(9, pattern(n)));
        assert_eq!(crossed, Ok(Raw::new(10, pattern(40 - n))), "{n}");
        c.send(rq.clone()).unwrap();
        assert_eq!(rx.recv_timeout(T).unwrap(), rq, "{n}");
        let mut buf = ShmBuf::new(5).unwrap();
        buf.view_mut().fill(0xAB);
        let mut whole = pattern(n);
        whole.extend([0xAB; 5]);
        assert_eq!(c.lend(rq, &buf), Ok(Raw::new(101, back(whole))), "{n}");
    }
    c.req(Raw::new(0, vec![])).unwrap();
    worker.join().unwrap();
}

/// As above, for a type whose length is known only once it is written (`Postcard`: written
/// where large messages go, then copied into the record if it turned out small).
#[cfg(feature = "serde")]
#[test]
fn postcard_messages_around_the_record_limit_arrive_whole() {
    use courier_shm::Postcard;
    type Bytes = Postcard<Vec<u8>>;
    courier_testkit::runtime_dir("courier-rpc-inproc");
    let s: Server<Bytes, Bytes, Bytes> =
        Server::bind("inproc-inline-postcard", ServerConfig::new()).unwrap();
    let c: Client<Bytes, Bytes, Bytes> = Client::connect("inproc-inline-postcard", T).unwrap();
    let worker = std::thread::spawn(move || loop {
        match s.wait_timeout(T).unwrap() {
            Incoming::Call(Postcard(b), ctx) if b.is_empty() => {
                return ctx.reply(Postcard(b)).unwrap()
            }
            // Odd lengths are failed, even ones answered, with the bytes reversed.
            Incoming::Call(Postcard(mut b), ctx) => {
                b.reverse();
                if b.len() % 2 == 1 {
                    ctx.fail(Postcard(b)).unwrap();
                } else {
                    ctx.reply(Postcard(b)).unwrap();
                }
            }
            _ => unreachable!(),
        }
    });
    // Postcard writes a length byte first: 1..=40 bytes make 2..=41.
    for n in 1..=40 {
        let mut back = pattern(n);
        back.reverse();
        let got = c.req(Postcard(pattern(n)));
        if n % 2 == 1 {
            assert_eq!(got, Err(Error::App(Postcard(back))), "{n}");
        } else {
            assert_eq!(got, Ok(Postcard(back)), "{n}");
        }
    }
    c.req(Postcard(vec![])).unwrap();
    worker.join().unwrap();
}
