//! courier::net end to end in one process: a courier::shm server (a thread), a bridge on one
//! zenoh session and a client on another, the two sessions joined over loopback TCP with
//! explicit endpoints (no scouting). Every verb and every error through the bridge; the
//! deadline travelling with the request (the service sees the call canceled when the
//! caller's deadline passes); malformed frames answered `Protocol` while others are served.
//!
//! Cross-thread steps synchronise through channels with deadlines.
#![cfg(target_os = "linux")]

use courier_net::frame::{Answer, Status};
use courier_net::{
    expose_with, peer_config, CancelOutcome, Client, Error, ExposeConfig, NetError, SendError,
};
use courier_shm::{Incoming, Server, ServerConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use zenoh::{Session, Wait};

const DEADLINE: Duration = Duration::from_secs(20);

/// What the test service reports to the test.
#[derive(Debug, PartialEq)]
enum Seen {
    Sent(u64),
    Scalar(u32, u64),
    Canceled(u64),
}

/// One runtime directory for the test binary.
fn runtime_dir() {
    courier_testkit::runtime_dir("courier-net");
}

/// A free loopback TCP endpoint.
fn endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp/127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// Two sessions: the bridge's (listening) and the client's (connecting to it).
fn sessions() -> (Session, Session) {
    let ep = endpoint();
    let a = zenoh::open(peer_config(std::slice::from_ref(&ep), &[]).unwrap())
        .wait()
        .unwrap();
    let b = zenoh::open(peer_config(&[], &[ep]).unwrap())
        .wait()
        .unwrap();
    (a, b)
}

/// The test service: `n` → `n + 1` (a lend: the sum of its bytes, plus `n`; a mutable lend:
/// filled with `n`), 13 fails with 7, 999 is dropped, 500 is held until the caller cancels,
/// one-way calls and scalars are reported, a subscription gets `n`, `n + 1`, `n + 2`.
fn serve(name: &str) -> (Service, mpsc::Receiver<Seen>) {
    runtime_dir();
    let server: Server<u64, u64, u32> = Server::bind(name, ServerConfig::new()).unwrap();
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        while !stopped.load(Ordering::SeqCst) {
            let m = match server.wait_timeout(Duration::from_millis(20)) {
                Ok(m) => m,
                Err(_) => continue,
            };
            match m {
                Incoming::Call(13, ctx) => drop(ctx.fail(7)),
                Incoming::Call(999, ctx) => drop(ctx),
                Incoming::Call(500, ctx) => {
                    let end = Instant::now() + DEADLINE;
                    while !ctx.is_canceled() && Instant::now() < end {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    let _ = tx.send(Seen::Canceled(500));
                }
                Incoming::Call(n, ctx) if ctx.is_one_way() => drop(tx.send(Seen::Sent(n))),
                Incoming::Call(n, mut ctx) => {
                    if let Some(mut v) = ctx.lent_mut() {
                        v.fill(n as u8);
                    }
                    let lent = ctx.lent().map(|v| v.to_vec());
                    let answer = match lent {
                        Some(bytes) => n + bytes.iter().map(|&b| u64::from(b)).sum::<u64>(),
                        None => n + 1,
                    };
                    let _ = ctx.reply(answer);
                }
                Incoming::Scalar(call) => {
                    let (a, op) = (call.args(), call.op());
                    if call.is_blocking() {
                        let _ = call.reply([a[0] * 2, u64::from(op)]);
                    } else {
                        let _ = tx.send(Seen::Scalar(op, a[0]));
                    }
                }
                Incoming::Subscribe(n, notifier) => {
                    for k in n..n + 3 {
                        notifier.push(k).unwrap();
                    }
                }
            }
        }
    });
    (
        Service {
            stop,
            thread: Some(thread),
        },
        rx,
    )
}

/// The running test service; dropping it closes the service (its last handle goes).
struct Service {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn every_verb_passes_through_the_bridge() {
    let (server, seen) = serve("net-verbs");
    let (a, b) = sessions();
    let config = ExposeConfig::new().namespace("host-a");
    let exposed = expose_with(&a, "net-verbs", &config).unwrap();
    assert_eq!(exposed.key(), "courier/host-a/net-verbs");
    let c: Client<u64, u64, u32> = Client::connect(&b, "net-verbs", DEADLINE).unwrap();
    assert_eq!(c.key(), "courier/host-a/net-verbs");
    assert_eq!(c.server_pid(), std::process::id());
    // Calls, errors.
    assert_eq!(c.req(41), Ok(42));
    assert_eq!(c.req_timeout(1, DEADLINE), Ok(2));
    assert_eq!(c.req(13), Err(Error::App(7)));
    assert_eq!(c.req(999), Err(Error::NoReply));
    assert_eq!(pollster::block_on(c.areq(5)), Ok(6));
    let pending = c.req_async(7).unwrap();
    assert_eq!(pending.wait_timeout(DEADLINE), Ok(8));
    let mut pending = c.req_async(9).unwrap();
    let end = Instant::now() + DEADLINE;
    while !pending.is_ready() {
        assert!(Instant::now() < end, "no answer");
        std::thread::yield_now();
    }
    assert_eq!(pending.cancel(), CancelOutcome::Completed(Ok(10)));
    assert_eq!(
        pollster::block_on(c.req_async(11).unwrap().wait_async()),
        Ok(12)
    );
    // One-way.
    c.send(3).unwrap();
    assert_eq!(seen.recv_timeout(DEADLINE), Ok(Seen::Sent(3)));
    c.scalar(4, [40, 0, 0, 0]).unwrap();
    assert_eq!(seen.recv_timeout(DEADLINE), Ok(Seen::Scalar(4, 40)));
    assert_eq!(c.blocking_scalar(6, [21, 0, 0, 0]), Ok([42, 6]));
    // Lends: the bytes travel; a mutable lend's come back.
    let data: Vec<u8> = (0..=255).collect();
    assert_eq!(c.lend(1, &data), Ok(1 + (0..=255u64).sum::<u64>()));
    let mut big = vec![0u8; 1 << 20];
    assert_eq!(c.lend_mut(9, &mut big), Ok(9 + 9 * (1 << 20)));
    assert!(big.iter().all(|&b| b == 9));
    // A subscription: the pushes in order, then the end.
    let sub = c.subscribe(100).unwrap();
    let got: Vec<u64> = (0..3)
        .map(|_| sub.recv_timeout::<u64>(DEADLINE).unwrap())
        .collect();
    assert_eq!(got, [100, 101, 102]);
    assert_eq!(sub.recv_timeout::<u64>(DEADLINE), Err(Error::NoReply));
    drop(server);
}

#[test]
fn the_deadline_travels_with_the_request() {
    let (_server, seen) = serve("net-deadline");
    let (a, b) = sessions();
    let _exposed = expose_with(&a, "net-deadline", &ExposeConfig::new()).unwrap();
    let c: Client<u64, u64, u32> = Client::connect(&b, "net-deadline", DEADLINE).unwrap();
    let start = Instant::now();
    assert_eq!(
        c.req_timeout(500, Duration::from_millis(300)),
        Err(Error::Timeout)
    );
    assert!(start.elapsed() >= Duration::from_millis(300));
    // The service saw the call canceled: the bridge stopped waiting at the same deadline.
    assert_eq!(seen.recv_timeout(DEADLINE), Ok(Seen::Canceled(500)));
    // And the client goes on.
    assert_eq!(c.req(1), Ok(2));
    // `Duration::MAX` means the longest deadline a request can carry (LONGEST_TIMEOUT),
    // never an overflow panic, in every form that takes one.
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let forever = Duration::MAX;
        let c2: Result<Client<u64, u64, u32>, _> = Client::connect(&b, "net-deadline", forever);
        let c2 = c2.unwrap().with_timeout(forever);
        let r = (
            c2.req(2),
            c.req_timeout(3, forever),
            c.req_async(4).unwrap().wait_timeout(forever),
            c.send_timeout(5, forever),
        );
        done_tx.send(r).unwrap();
    });
    assert_eq!(
        done.recv_timeout(DEADLINE),
        Ok((Ok(3), Ok(4), Ok(5), Ok(())))
    );
    assert_eq!(seen.recv_timeout(DEADLINE), Ok(Seen::Sent(5)));
}

#[test]
fn nobody_answering_is_server_disappeared_and_a_missing_service_not_found() {
    let (server, _seen) = serve("net-gone");
    let (a, b) = sessions();
    let start = Instant::now();
    let r = Client::<u64, u64, u32>::connect(&b, "net-nothing", Duration::from_millis(300));
    assert!(matches!(r, Err(NetError::NotFound(_))), "{r:?}");
    assert!(start.elapsed() < DEADLINE);
    let exposed = expose_with(&a, "net-gone", &ExposeConfig::new()).unwrap();
    let c: Client<u64, u64, u32> = Client::connect(&b, "net-gone", DEADLINE).unwrap();
    assert_eq!(c.req(1), Ok(2));
    // The service goes: the bridge answers ServerDisappeared, at once.
    drop(server);
    let start = Instant::now();
    assert_eq!(c.req(1), Err(Error::ServerDisappeared));
    assert_eq!(c.send(2), Err(SendError::ServerDisappeared(2)));
    assert!(start.elapsed() < Duration::from_secs(5));
    // The bridge goes: nobody answers, which is ServerDisappeared too, before the deadline.
    drop(exposed);
    let start = Instant::now();
    assert_eq!(
        c.req_timeout(1, Duration::from_secs(10)),
        Err(Error::ServerDisappeared)
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn malformed_frames_are_refused_and_others_served() {
    let (_server, _seen) = serve("net-hostile");
    let (a, b) = sessions();
    let exposed = expose_with(&a, "net-hostile", &ExposeConfig::new()).unwrap();
    let c: Client<u64, u64, u32> = Client::connect(&b, "net-hostile", DEADLINE).unwrap();
    let junk: [&[u8]; 4] = [b"", b"hello", &[0xFF; 64], &[0; 200]];
    for payload in junk {
        let replies = b
            .get(exposed.key())
            .payload(payload.to_vec())
            .timeout(DEADLINE)
            .wait()
            .unwrap();
        let reply = replies.recv_timeout(DEADLINE).unwrap().expect("an answer");
        let bytes = reply
            .into_result()
            .unwrap()
            .payload()
            .to_bytes()
            .into_owned();
        assert_eq!(Answer::decode(&bytes).unwrap().status, Status::Protocol);
        // A request of another type is refused by the service itself.
        assert_eq!(c.req(1), Ok(2));
    }
    let wrong: Client<u32, u64, u32> = Client::connect(&b, "net-hostile", DEADLINE).unwrap();
    assert_eq!(wrong.req(1), Err(Error::Protocol));
    assert_eq!(c.req(2), Ok(3));
}

/// A courier::local service (a channel in this process) exposed on the network: calls, app
/// errors, one-way messages and the deadline, as for a shm one; a lend is refused
/// (`Protocol`), since a local channel carries none.
#[test]
fn a_local_service_can_be_exposed_too() {
    let (server, client) = courier_local::channel::<u64, u64, u32>();
    let (tx, sent) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok((n, ctx)) = server.wait() {
            if ctx.is_one_way() {
                let _ = tx.send(n);
            } else if n == 13 {
                let _ = ctx.fail(7);
            } else if n == 500 {
                // Held until the caller gives up: the bridge's deadline reaches it.
                let end = Instant::now() + DEADLINE;
                while !ctx.is_canceled() && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = tx.send(500);
            } else {
                let _ = ctx.reply(n * 3);
            }
        }
    });
    let (a, b) = sessions();
    let config = ExposeConfig::new().namespace("in-process");
    let _exposed = courier_net::expose_local(&a, "tripler", client, &config).unwrap();
    let c: Client<u64, u64, u32> = Client::connect(&b, "in-process/tripler", DEADLINE).unwrap();
    assert_eq!(c.server_pid(), std::process::id());
    assert_eq!(c.req(5), Ok(15));
    assert_eq!(c.req(13), Err(Error::App(7)));
    c.send(4).unwrap();
    assert_eq!(sent.recv_timeout(DEADLINE), Ok(4));
    assert_eq!(
        c.req_timeout(500, Duration::from_millis(200)),
        Err(Error::Timeout)
    );
    assert_eq!(sent.recv_timeout(DEADLINE), Ok(500));
    assert_eq!(c.lend(1, &[1, 2, 3]), Err(Error::Protocol));
    // A request of another type is refused, as the shm service would.
    let wrong: Client<u32, u64, u32> = Client::connect(&b, "in-process/tripler", DEADLINE).unwrap();
    assert_eq!(wrong.req(1), Err(Error::Protocol));
    assert_eq!(c.req(2), Ok(6));
}

/// A bridge forwards at most 256 subscriptions at once, and one that ended frees its place:
/// 300 subscriptions one after another, each read to its end, all succeed.
#[test]
fn ended_subscriptions_free_their_place() {
    let (_service, _seen) = serve("net-subs");
    let (a, b) = sessions();
    let _exposed = expose_with(&a, "net-subs", &ExposeConfig::new()).unwrap();
    let c: Client<u64, u64, u32> = Client::connect(&b, "net-subs", DEADLINE).unwrap();
    for i in 0..300u64 {
        let sub = c
            .subscribe(i)
            .unwrap_or_else(|e| panic!("subscription {i}: {e}"));
        for k in i..i + 3 {
            assert_eq!(sub.recv_timeout::<u64>(DEADLINE), Ok(k));
        }
        assert_eq!(sub.recv_timeout::<u64>(DEADLINE), Err(Error::NoReply));
    }
}
