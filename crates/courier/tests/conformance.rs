//! The raw transports' conformance suite: one body per behaviour, written once against the
//! verbs `courier::local` and `courier::shm` share, and instantiated for each transport
//! (`on_local`, `on_shm`). A later transport joins by adding a module like [`local_t`] and
//! one `conformance!` line.
//!
//! It covers every shared verb (`req`, `req_timeout`, `areq`, `req_async` and `WaitReply`'s
//! `wait` / `wait_timeout` / `wait_async` / `is_ready` / `cancel`, `send`, `send_timeout`,
//! `try_send`, `try_req`, `is_server_gone`; `wait_timeout`, `try_pop`, `async_wait`, `reply`,
//! `fail` on the server) and every error both transports report (`App`, `NoReply`,
//! `Timeout`, `OriginDisappeared`, `ServerDisappeared`, `SendError`'s `Full`, `Timeout` and
//! `ServerDisappeared`), cancellation, deferred replies, server death and exactly-once
//! delivery under several clients and workers. What only one transport has is tested with
//! it: `ClientsDisappeared` (local), lends, scalars, subscriptions, `TooLarge`, `Protocol`
//! and `LimitReached` (shm's tests); typed services run their own suite (`service.rs`).
//!
//! Cross-thread steps synchronise through channels and joins with deadlines; the one wait
//! for a condition (a closed server noticed) looks at it in a loop bounded by a deadline.

use courier::{Error, SendError};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for every wait.
const DEADLINE: Duration = Duration::from_secs(20);

/// `courier::local`: a bounded channel in this process.
mod local_t {
    use super::*;
    pub(crate) use courier::local::{CancelOutcome, ReplyContext};

    pub(crate) type Server = courier::local::Server<u64, u64, u32>;
    pub(crate) type Client = courier::local::Client<u64, u64, u32>;
    pub(crate) type Ctx = ReplyContext<u64, u32>;

    /// A server and a client whose queue holds `room` requests.
    pub(crate) fn pair(room: usize) -> (Server, Client) {
        courier::local::bounded(room)
    }

    pub(crate) fn next(s: &Server, timeout: Duration) -> Result<(u64, Ctx), Error<u32>> {
        s.wait_timeout(timeout)
    }

    pub(crate) fn try_next(s: &Server) -> Result<Option<(u64, Ctx)>, Error<u32>> {
        s.try_pop()
    }

    pub(crate) async fn next_async(s: &Server) -> Result<(u64, Ctx), Error<u32>> {
        s.async_wait().await
    }

    pub(crate) fn reply_and_next(
        s: &Server,
        ctx: Ctx,
        reply: u64,
    ) -> Result<(u64, Ctx), Error<u32>> {
        s.reply_and_receive_next(ctx, reply)
    }
}

/// `courier::shm`: a named service and a client connected to it, in this process (server
/// death across processes, by SIGKILL, is tested in courier-shm's `rpc.rs`).
#[cfg(target_os = "linux")]
mod shm_t {
    use super::*;
    pub(crate) use courier::shm::{CancelOutcome, ReplyContext};
    use courier::shm::{Incoming, ServerConfig};

    pub(crate) type Server = courier::shm::Server<u64, u64, u32>;
    pub(crate) type Client = courier::shm::Client<u64, u64, u32>;
    pub(crate) type Ctx = ReplyContext<u64, u32>;

    /// A service with `room` call slots per client, and a client of it.
    pub(crate) fn pair(room: usize) -> (Server, Client) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        courier_testkit::runtime_dir("courier-conformance");
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("conformance-{}-{n}", std::process::id());
        let server = Server::bind(&name, ServerConfig::new().slots(room)).unwrap();
        let client = Client::connect(&name, DEADLINE).unwrap();
        (server, client)
    }

    fn call(m: Incoming<u64, u64, u32>) -> (u64, Ctx) {
        match m {
            Incoming::Call(rq, ctx) => (rq, ctx),
            _ => panic!("the suite sends calls only"),
        }
    }

    pub(crate) fn next(s: &Server, timeout: Duration) -> Result<(u64, Ctx), Error<u32>> {
        s.wait_timeout(timeout).map(call)
    }

    pub(crate) fn try_next(s: &Server) -> Result<Option<(u64, Ctx)>, Error<u32>> {
        s.try_pop().map(|m| m.map(call))
    }

    pub(crate) async fn next_async(s: &Server) -> Result<(u64, Ctx), Error<u32>> {
        s.async_wait().await.map(call)
    }

    pub(crate) fn reply_and_next(
        s: &Server,
        ctx: Ctx,
        reply: u64,
    ) -> Result<(u64, Ctx), Error<u32>> {
        s.reply_and_receive_next(ctx, reply).map(call)
    }
}

/// Runs `f` on a thread and returns its result, failing the test if it takes longer than
/// [`DEADLINE`].
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    courier_testkit::within(what, DEADLINE, f)
}

/// The suite, instantiated for the transport module `$t` as module `$m`.
macro_rules! conformance {
    ($m:ident, $t:ident) => {
        mod $m {
            use super::$t::{next, next_async, pair, reply_and_next, try_next, CancelOutcome};
            use super::*;

            /// A server thread answering `n` with `2n`, `fail`ing odd numbers above 1000 with
            /// `n`, and dropping the context of 999.
            fn doubler(s: super::$t::Server) -> thread::JoinHandle<()> {
                thread::spawn(move || {
                    while let Ok((n, ctx)) = next(&s, DEADLINE) {
                        if n == 999 {
                            drop(ctx);
                        } else if n > 1000 && n % 2 == 1 {
                            let _ = ctx.fail(n as u32);
                        } else {
                            let _ = ctx.reply(2 * n);
                        }
                    }
                })
            }

            #[test]
            fn a_call_gets_its_reply_its_app_error_or_no_reply() {
                let (s, c) = pair(4);
                let _worker = doubler(s);
                assert_eq!(c.req(21), Ok(42));
                assert_eq!(c.req(1001), Err(Error::App(1001)));
                assert_eq!(c.req(999), Err(Error::NoReply));
                assert_eq!(c.req_timeout(5, DEADLINE), Ok(10));
                assert_eq!(c.req_async(6).unwrap().wait(), Ok(12));
                assert_eq!(c.req_async(7).unwrap().wait_timeout(DEADLINE), Ok(14));
                assert_eq!(c.try_req(8).unwrap().wait(), Ok(16));
                assert_eq!(pollster::block_on(c.areq(9)), Ok(18));
                assert_eq!(
                    pollster::block_on(c.req_async(1003).unwrap().wait_async()),
                    Err(Error::App(1003))
                );
                assert!(!c.is_server_gone());
            }

            /// `Duration::MAX` as a timeout means "no limit" in every `_timeout` form: no
            /// overflow panic, no instant timeout. (Before, courier::local added it to
            /// `Instant::now()` and panicked.)
            #[test]
            fn a_timeout_of_duration_max_means_no_limit() {
                let (s, c) = pair(4);
                let worker = thread::spawn(move || {
                    // Released by the first call: a server waiting without a limit.
                    for _ in 0..3 {
                        let (n, ctx) = next(&s, Duration::MAX).unwrap();
                        let _ = ctx.reply(n + 1);
                    }
                    s
                });
                let c2 = c.clone();
                let r = within("Duration::MAX timeouts", move || {
                    let a = c2.req_timeout(1, Duration::MAX);
                    let b = c2.req_async(2).unwrap().wait_timeout(Duration::MAX);
                    c2.send_timeout(3, Duration::MAX)
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>((a, b))
                });
                assert_eq!(r, Ok((Ok(2), Ok(3))));
                let s = worker.join().unwrap();
                assert!(matches!(try_next(&s), Ok(None)));
            }

            /// Xous's `reply_and_receive_next`: a serving loop that answers and takes the
            /// next call in one step serves every caller, and a caller that gave up
            /// (its reply goes nowhere) does not stop the loop.
            #[test]
            fn reply_and_receive_next_serves_a_loop() {
                let (s, c) = pair(4);
                let (took_tx, took) = mpsc::channel();
                let (go, go_rx) = mpsc::channel::<()>();
                let worker = thread::spawn(move || {
                    let (mut n, mut ctx) = next(&s, DEADLINE).unwrap();
                    let mut served = 0;
                    while n != 0 {
                        served += 1;
                        if n == 7 {
                            // Hold 7 until its caller has given up.
                            took_tx.send(()).unwrap();
                            go_rx.recv_timeout(DEADLINE).unwrap();
                        }
                        (n, ctx) = reply_and_next(&s, ctx, n + 1).unwrap();
                    }
                    let _ = ctx.reply(0);
                    served
                });
                let r = within("a reply_and_receive_next loop", move || {
                    let clients: Vec<_> = (0..2u64)
                        .map(|t| {
                            let c = c.clone();
                            thread::spawn(move || {
                                (1..=50u64)
                                    .all(|i| c.req(t * 1000 + 10 + i) == Ok(t * 1000 + 11 + i))
                            })
                        })
                        .collect();
                    let all_ok = clients.into_iter().all(|h| h.join().unwrap());
                    // A caller that gives up once the server holds its call: the reply goes
                    // nowhere, and the loop goes on.
                    let gone = c.req_async(7).unwrap();
                    took.recv_timeout(DEADLINE).unwrap();
                    let canceled = matches!(gone.cancel(), CancelOutcome::Signaled);
                    go.send(()).unwrap();
                    (all_ok, canceled, c.req(8), c.req(0))
                });
                assert_eq!(r, (true, true, Ok(9), Ok(0)));
                assert_eq!(worker.join().unwrap(), 102);
            }

            #[test]
            fn a_server_waits_with_a_deadline_and_polls_without_one() {
                let (s, _c) = pair(4);
                assert!(matches!(try_next(&s), Ok(None)));
                let start = Instant::now();
                assert!(matches!(
                    next(&s, Duration::from_millis(50)),
                    Err(Error::Timeout)
                ));
                assert!(start.elapsed() >= Duration::from_millis(50));
            }

            #[test]
            fn a_timed_out_call_is_withdrawn_or_signaled() {
                let (s, c) = pair(4);
                // Not taken: withdrawn, and the server never sees it.
                assert_eq!(
                    c.req_timeout(1, Duration::from_millis(20)),
                    Err(Error::Timeout)
                );
                assert!(matches!(try_next(&s), Ok(None)));
                // Taken: the server learns, and its answer goes nowhere.
                let pending = c.req_async(2).unwrap();
                let (n, ctx) = next(&s, DEADLINE).unwrap();
                assert_eq!(n, 2);
                assert!(!ctx.is_canceled());
                assert!(!pending.is_ready());
                assert_eq!(
                    pending.wait_timeout(Duration::from_millis(20)),
                    Err(Error::Timeout)
                );
                assert!(ctx.is_canceled());
                assert_eq!(ctx.reply(4), Err(Error::OriginDisappeared));
                // The client goes on.
                let _worker = doubler(s);
                assert_eq!(c.req(3), Ok(6));
            }

            #[test]
            fn cancel_says_how_far_the_call_got() {
                let (s, c) = pair(4);
                // Before the server took it: withdrawn, and the request comes back.
                match c.req_async(10).unwrap().cancel() {
                    CancelOutcome::Withdrawn(rq) => assert_eq!(rq, 10),
                    other => panic!("expected Withdrawn, got {other:?}"),
                }
                assert!(matches!(try_next(&s), Ok(None)));
                // Taken: signaled.
                let pending = c.req_async(11).unwrap();
                let (_, ctx) = next(&s, DEADLINE).unwrap();
                assert!(matches!(pending.cancel(), CancelOutcome::Signaled));
                assert!(ctx.is_canceled());
                assert_eq!(ctx.reply(0), Err(Error::OriginDisappeared));
                // Answered: the answer.
                let pending = c.req_async(12).unwrap();
                let (n, ctx) = next(&s, DEADLINE).unwrap();
                ctx.reply(n + 1).unwrap();
                assert!(pending.is_ready());
                assert_eq!(pending.cancel(), CancelOutcome::Completed(Ok(13)));
                // A dropped WaitReply cancels too: the server sees it.
                drop(c.req_async(14).unwrap());
                assert!(matches!(try_next(&s), Ok(None)));
            }

            #[test]
            fn one_way_sends_reach_the_server() {
                let (s, c) = pair(4);
                c.send(1).unwrap();
                c.send_timeout(2, DEADLINE).unwrap();
                c.try_send(3).unwrap();
                for want in 1..=3 {
                    let (n, ctx) = next(&s, DEADLINE).unwrap();
                    assert_eq!(n, want);
                    assert!(ctx.is_one_way());
                    drop(ctx); // nobody waits: dropping is an answer
                }
                let pending = c.req_async(4).unwrap();
                let (_, ctx) = next(&s, DEADLINE).unwrap();
                assert!(!ctx.is_one_way());
                ctx.reply(0).unwrap();
                assert_eq!(pending.wait(), Ok(0));
            }

            #[test]
            fn a_full_queue_hands_the_request_back() {
                let (s, c) = pair(2);
                let first = c.req_async(1).unwrap();
                let second = c.req_async(2).unwrap();
                assert_eq!(c.try_req(3).map(drop), Err(SendError::Full(3)));
                assert_eq!(c.try_send(4), Err(SendError::Full(4)));
                assert_eq!(
                    c.send_timeout(5, Duration::from_millis(20)),
                    Err(SendError::Timeout(5))
                );
                assert_eq!(
                    c.req_timeout(6, Duration::from_millis(20)),
                    Err(Error::Timeout)
                );
                // Answer one: room again.
                let (n, ctx) = next(&s, DEADLINE).unwrap();
                ctx.reply(n).unwrap();
                assert_eq!(first.wait(), Ok(1));
                c.try_send(7).unwrap();
                drop(second);
            }

            #[test]
            fn a_deferred_reply_comes_from_another_thread() {
                let (s, c) = pair(4);
                let pending = c.req_async(5).unwrap();
                let (n, ctx) = next(&s, DEADLINE).unwrap();
                let (go, wait) = mpsc::channel::<()>();
                let answerer = thread::spawn(move || {
                    wait.recv_timeout(DEADLINE).unwrap();
                    ctx.reply(n * 100)
                });
                assert!(!pending.is_ready());
                go.send(()).unwrap();
                assert_eq!(pending.wait_timeout(DEADLINE), Ok(500));
                assert_eq!(answerer.join().unwrap(), Ok(()));
            }

            #[test]
            fn an_async_server_answers_async_callers() {
                let (s, c) = pair(4);
                let server = thread::spawn(move || {
                    pollster::block_on(async {
                        for _ in 0..3 {
                            let (n, ctx) = next_async(&s).await.unwrap();
                            ctx.reply(n + 1).unwrap();
                        }
                    })
                });
                let got = within("async calls", move || {
                    pollster::block_on(async {
                        let a = c.areq(1).await;
                        let b = c.req_async(2).unwrap().wait_async().await;
                        let d = c.areq(3).await;
                        (a, b, d)
                    })
                });
                assert_eq!(got, (Ok(2), Ok(3), Ok(4)));
                server.join().unwrap();
            }

            #[test]
            fn server_death_fails_queued_calls_and_hands_sends_back() {
                let (s, c) = pair(4);
                let taken = c.req_async(1).unwrap();
                let (n, ctx) = next(&s, DEADLINE).unwrap();
                let queued = c.req_async(2).unwrap();
                let clone = s.clone();
                drop(s);
                // One handle left: the service lives on.
                assert!(!c.is_server_gone());
                drop(clone);
                // Queued and never taken: failed.
                assert_eq!(queued.wait_timeout(DEADLINE), Err(Error::ServerDisappeared));
                // Taken before the end: still answered.
                ctx.reply(n * 7).unwrap();
                assert_eq!(taken.wait_timeout(DEADLINE), Ok(7));
                // The client learns, and says so without blocking.
                let start = Instant::now();
                while !c.is_server_gone() {
                    assert!(
                        start.elapsed() < DEADLINE,
                        "the client never saw the server go"
                    );
                    thread::yield_now();
                }
                assert_eq!(c.req(3), Err(Error::ServerDisappeared));
                assert_eq!(c.req_timeout(3, DEADLINE), Err(Error::ServerDisappeared));
                assert_eq!(pollster::block_on(c.areq(3)), Err(Error::ServerDisappeared));
                assert_eq!(c.send(4), Err(SendError::ServerDisappeared(4)));
                assert_eq!(c.try_send(5), Err(SendError::ServerDisappeared(5)));
                assert_eq!(c.try_req(6).map(drop), Err(SendError::ServerDisappeared(6)));
                assert_eq!(
                    c.send_timeout(7, DEADLINE),
                    Err(SendError::ServerDisappeared(7))
                );
            }

            #[test]
            fn a_blocked_caller_wakes_when_the_server_goes() {
                let (s, c) = pair(4);
                let (sent, wait_sent) = mpsc::channel();
                let caller = thread::spawn(move || {
                    let pending = c.req_async(1).unwrap();
                    sent.send(()).unwrap();
                    pending.wait()
                });
                wait_sent.recv_timeout(DEADLINE).unwrap();
                drop(s);
                let got = within("the blocked caller", move || caller.join().unwrap());
                assert_eq!(got, Err(Error::ServerDisappeared));
            }

            #[test]
            fn every_request_is_answered_once_to_its_own_caller() {
                const CLIENTS: u64 = 4;
                const EACH: u64 = 300;
                let (s, c) = pair(8);
                let seen = Arc::new(Mutex::new(HashSet::new()));
                // Set once every caller is done: a worker then stops at its next idle look.
                let done = Arc::new(AtomicBool::new(false));
                let workers: Vec<_> = (0..2)
                    .map(|_| {
                        let (s, seen, done) = (s.clone(), Arc::clone(&seen), Arc::clone(&done));
                        thread::spawn(move || loop {
                            match next(&s, Duration::from_millis(20)) {
                                Ok((n, ctx)) => {
                                    assert!(seen.lock().unwrap().insert(n), "{n} delivered twice");
                                    let _ = ctx.reply(n ^ 0x5555);
                                }
                                Err(Error::Timeout) if !done.load(Ordering::SeqCst) => {}
                                Err(_) => return,
                            }
                        })
                    })
                    .collect();
                drop(s);
                let callers: Vec<_> = (0..CLIENTS)
                    .map(|k| {
                        let c = c.clone();
                        thread::spawn(move || {
                            for i in 0..EACH {
                                let n = (k << 32) | i;
                                // Each verb in turn; sends are counted by the server.
                                let got = match i % 4 {
                                    0 => c.req(n),
                                    1 => pollster::block_on(c.areq(n)),
                                    2 => c.req_async(n).unwrap().wait(),
                                    _ => {
                                        c.send(n).unwrap();
                                        continue;
                                    }
                                };
                                assert_eq!(got, Ok(n ^ 0x5555), "caller {k} got another's reply");
                            }
                        })
                    })
                    .collect();
                within("the callers", move || {
                    callers.into_iter().for_each(|t| t.join().unwrap())
                });
                drop(c);
                done.store(true, Ordering::SeqCst);
                within("the workers", move || {
                    workers.into_iter().for_each(|t| t.join().unwrap())
                });
                let seen = seen.lock().unwrap();
                assert_eq!(seen.len() as u64, CLIENTS * EACH, "a request was lost");
            }
        }
    };
}

conformance!(on_local, local_t);
#[cfg(target_os = "linux")]
conformance!(on_shm, shm_t);

/// Only `courier::local` can know that no client is left (a named shm service may always get
/// a new one): its server's wait says so.
#[test]
fn local_only_a_server_learns_that_every_client_is_gone() {
    let (s, c) = local_t::pair(4);
    c.send(1).unwrap();
    drop(c);
    // Queued before the last client went: still delivered.
    assert_eq!(local_t::next(&s, DEADLINE).map(|(n, _)| n), Ok(1));
    assert!(matches!(
        local_t::next(&s, DEADLINE),
        Err(Error::ClientsDisappeared)
    ));
}
