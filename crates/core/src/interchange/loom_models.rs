//! loom models of the interchange: every public method of both ends, with the two ends (and
//! re-claimed ends) on different threads. Run by `.ci/interchange.sh`, or by hand with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=10 cargo test -p courier-core --lib --release
//! --target-dir target/loom -- interchange::loom_models`.
//!
//! - `cancel_races_take_and_respond`: `cancel` against `take_request` + `respond`; `cancel`
//!   is one decision and never says "nothing to cancel" while a request is pending.
//! - `cancel_races_peek_and_build`: `cancel` against `request`, `with_request`,
//!   `response_mut`, `with_response_mut`, `send_response`, with the borrow guards alive.
//! - `build_races_take`: `request_mut`, `with_request_mut`, `send_request` and an abandoning
//!   `cancel` against a responder polling `take_request`, `request`, `with_response_mut`.
//! - `response_read_races_respond`: `response`, `with_response`, `take_response`, `state`
//!   against `take_request` + `respond`; `is_canceled` on the way.
//! - `acknowledge_races_request`: `acknowledge_cancel` against a requester retrying
//!   `request`; the peeked request is dropped before the requester writes.
//! - `reclaim_across_threads`: a requester read on one thread, dropped, re-claimed on
//!   another that writes (the seed's Relaxed claim raced here).
//! - `release_races_release`: both ends dropped on different threads, a third claiming:
//!   the payload is dropped once and a claim sees an idle, empty channel.
//! - `claims_race`: `split`, `requester`, `responder` at once: each end has one holder.
//! - `pool_claims_race`: `Interchange::claim` and `InterchangeRef::claim` at once on a pool
//!   of one: one winner, and the channel comes back clean for the next claim.
//! - `waiter_register_races_wake`: no wake is lost.
//! - `async_round`: `request_async` against `serve_async` under loom's executor.

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::boxed::Box;

use super::*;

/// A fresh channel that lives for the rest of the execution.
fn leaked<Rq, Rp>() -> &'static Channel<Rq, Rp> {
    Box::leak(Box::new(Channel::new()))
}

/// Counts its drops.
#[derive(Debug)]
struct Probe {
    value: u32,
    drops: Arc<AtomicUsize>,
}

impl Probe {
    fn new(value: u32, drops: &Arc<AtomicUsize>) -> Self {
        Self {
            value,
            drops: drops.clone(),
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

/// Which outcomes of a race the explored interleavings reached (outside loom's view), so a
/// model also checks that loom did explore the race it is about.
struct Reached([std::sync::atomic::AtomicBool; 3]);

impl Reached {
    const fn new() -> Self {
        use std::sync::atomic::AtomicBool as StdBool;
        Self([
            StdBool::new(false),
            StdBool::new(false),
            StdBool::new(false),
        ])
    }

    fn mark(&self, outcome: usize) {
        self.0[outcome].store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn assert_all(&self, what: &str) {
        for (outcome, reached) in self.0.iter().enumerate() {
            assert!(
                reached.load(std::sync::atomic::Ordering::Relaxed),
                "{what}: outcome {outcome} never reached"
            );
        }
    }
}

#[test]
fn cancel_races_take_and_respond() {
    static REACHED: Reached = Reached::new();
    loom::model(|| {
        let channel = leaked::<u32, u64>();
        let (mut rq, mut rp) = channel.split().unwrap();
        rq.request(1).unwrap();
        let responder = thread::spawn(move || {
            let taken = rp.take_request();
            let responded = taken.map(|request| {
                assert_eq!(request, 1);
                rp.respond(2)
                    .map_err(|refused| (refused.state(), refused.into_inner()))
            });
            (taken, responded, rp)
        });
        let canceled = rq.cancel();
        let (taken, responded, mut rp) = responder.join().unwrap();
        match canceled {
            Ok(Some(request)) => {
                REACHED.mark(0);
                assert_eq!(request, 1);
                assert_eq!(taken, None, "recalled, so never taken");
                assert_eq!(rq.state(), State::Idle);
            }
            Ok(None) => {
                REACHED.mark(1);
                assert_eq!(taken, Some(1), "signalled, so it was taken");
                assert_eq!(
                    responded,
                    Some(Err((State::Canceled, 2))),
                    "value handed back"
                );
                assert!(rp.is_canceled());
                rp.acknowledge_cancel().unwrap();
                assert_eq!(rq.state(), State::Idle);
            }
            Err(error) => {
                REACHED.mark(2);
                assert_eq!(error.state(), State::Responded, "only 'too late' refuses");
                assert_eq!(responded, Some(Ok(())));
                assert_eq!(rq.take_response(), Some(2));
            }
        }
    });
    // Recalled, signalled and too late: loom reached all three.
    REACHED.assert_all("cancel vs take and respond");
}

#[test]
fn cancel_races_peek_and_build() {
    static REACHED: Reached = Reached::new();
    loom::model(|| {
        let channel = leaked::<u32, u64>();
        let (mut rq, mut rp) = channel.split().unwrap();
        rq.request(1).unwrap();
        let responder = thread::spawn(move || {
            let peeked = rp.request().map(|request| {
                let value = *request;
                // The guard stays alive while the requester may cancel; a second peek
                // agrees, or is refused because of the cancel.
                match rp.with_request(|again| *again) {
                    Ok(again) => assert_eq!(again, value),
                    Err(error) => assert_eq!(error.state(), State::Canceled),
                }
                value
            });
            let built = rp.response_mut().map(|mut response| *response = 3).is_ok()
                && rp.with_response_mut(|response| *response += 4).is_ok();
            let sent = built && rp.send_response().is_ok();
            (peeked.ok(), sent, rp)
        });
        let canceled = rq.cancel();
        let (peeked, sent, mut rp) = responder.join().unwrap();
        match canceled {
            Ok(Some(request)) => {
                REACHED.mark(0);
                assert_eq!(request, 1);
                assert_eq!(peeked, None);
                assert!(!sent);
            }
            Ok(None) => {
                REACHED.mark(1);
                assert!(!sent, "a canceled response is never sent");
                rp.acknowledge_cancel().unwrap();
            }
            Err(error) => {
                REACHED.mark(2);
                assert_eq!(error.state(), State::Responded);
                assert!(sent);
                assert_eq!(rq.with_response(|response| *response), Ok(7));
                assert_eq!(rq.take_response(), Some(7));
            }
        }
        assert_eq!(rq.state(), State::Idle);
    });
    // Recalled, signalled and too late: loom reached all three.
    REACHED.assert_all("cancel vs peek and build");
}

#[test]
fn build_races_take() {
    loom::model(|| {
        let channel = leaked::<u32, u64>();
        let (mut rq, mut rp) = channel.split().unwrap();
        let responder = thread::spawn(move || {
            let took = rp.take_request();
            let peeked = rp.request().map(|request| *request).ok();
            let built = rp.with_response_mut(|response| *response = 5).is_ok();
            (took, peeked, built, rp)
        });
        *rq.request_mut().unwrap() = 2;
        rq.with_request_mut(|request| *request += 1).unwrap();
        rq.send_request().unwrap();
        let (took, peeked, built, mut rp) = responder.join().unwrap();
        assert!(
            took.is_none() || took == Some(3),
            "never a half-built request"
        );
        assert!(peeked.is_none() || peeked == Some(3));
        if took.is_none() && peeked.is_none() && !built {
            assert_eq!(rp.take_request(), Some(3));
        }
        if rp.send_response().is_err() {
            rp.respond(0).unwrap();
        }
        assert!(rq.take_response().is_some());
        // Abandon a build while the responder looks.
        let responder = thread::spawn(move || {
            let took = rp.take_request();
            (took, rp)
        });
        rq.with_request_mut(|request| *request = 9).unwrap();
        assert_eq!(rq.cancel(), Ok(Some(9)));
        let (took, _rp) = responder.join().unwrap();
        assert_eq!(took, None, "an abandoned build is never seen");
    });
}

#[test]
fn response_read_races_respond() {
    loom::model(|| {
        let channel = leaked::<u32, u64>();
        let (mut rq, mut rp) = channel.split().unwrap();
        rq.request(1).unwrap();
        let responder = thread::spawn(move || {
            assert!(!rp.is_canceled());
            let request = rp.take_request().unwrap();
            rp.respond(u64::from(request) + 1).unwrap();
            rp
        });
        let response = loop {
            match rq.response() {
                Ok(response) => break *response,
                Err(error) => assert!(matches!(
                    error.state(),
                    State::Requested | State::BuildingResponse
                )),
            }
            thread::yield_now();
        };
        assert_eq!(response, 2);
        assert_eq!(rq.with_response(|response| *response), Ok(2));
        assert_eq!(rq.state(), State::Responded);
        assert_eq!(rq.take_response(), Some(2));
        drop(responder.join().unwrap());
    });
}

#[test]
fn acknowledge_races_request() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let channel = leaked::<Probe, u64>();
        let (mut rq, mut rp) = channel.split().unwrap();
        rq.request(Probe::new(1, &drops)).unwrap();
        assert_eq!(rp.request().unwrap().value, 1);
        assert_eq!(rq.cancel().unwrap().map(|p| p.value), None);
        let responder = thread::spawn(move || {
            rp.acknowledge_cancel().unwrap();
            rp
        });
        let mut next = Probe::new(2, &drops);
        loop {
            match rq.request(next) {
                Ok(()) => break,
                Err(refused) => {
                    assert_eq!(refused.state(), State::Canceled);
                    next = refused.into_inner();
                }
            }
            thread::yield_now();
        }
        let mut rp = responder.join().unwrap();
        assert_eq!(
            drops.load(Ordering::Relaxed),
            1,
            "the peeked request was dropped"
        );
        assert_eq!(rp.take_request().map(|p| p.value), Some(2));
        assert_eq!(drops.load(Ordering::Relaxed), 2);
    });
}

#[test]
fn reclaim_across_threads() {
    loom::model(|| {
        let channel = leaked::<u32, u64>();
        let (mut rq, mut rp) = channel.split().unwrap();
        rq.request(1).unwrap();
        rp.take_request().unwrap();
        rp.respond(2).unwrap();
        let first = thread::spawn(move || {
            assert_eq!(*rq.response().unwrap(), 2);
            drop(rq);
        });
        let second = thread::spawn(move || loop {
            if let Some(mut rq) = channel.requester() {
                // Writes the buffer the first holder read.
                assert_eq!(rq.take_response(), Some(2));
                rq.request(3).unwrap();
                break;
            }
            thread::yield_now();
        });
        first.join().unwrap();
        second.join().unwrap();
        assert_eq!(rp.take_request(), Some(3));
    });
}

#[test]
fn release_races_release() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let channel = leaked::<Probe, u64>();
        let (mut rq, rp) = channel.split().unwrap();
        rq.request(Probe::new(1, &drops)).unwrap();
        let dropper = thread::spawn(move || drop(rp));
        let claimer = thread::spawn(move || {
            // Claims only once both ends are gone; then it must find the channel clean.
            channel.split().map(|(rq, mut rp)| {
                assert_eq!(rq.state(), State::Idle);
                assert!(rp.take_request().is_none());
            })
        });
        drop(rq);
        dropper.join().unwrap();
        let claimed = claimer.join().unwrap();
        assert_eq!(
            drops.load(Ordering::Relaxed),
            1,
            "dropped once, by the last release"
        );
        if claimed.is_none() {
            let (rq, _rp) = channel.split().unwrap();
            assert_eq!(rq.state(), State::Idle);
        }
    });
}

#[test]
fn claims_race() {
    loom::model(|| {
        let channel = leaked::<u32, u64>();
        let splitter = thread::spawn(move || channel.split());
        let requester = channel.requester();
        let split = splitter.join().unwrap();
        assert!(
            split.is_some() != requester.is_some(),
            "exactly one holder of the requester"
        );
        assert_eq!(channel.responder().is_some(), split.is_none());
        drop((split, requester));
        assert!(channel.split().is_some());
    });
}

#[test]
fn pool_claims_race() {
    loom::model(|| {
        let pool: &'static Interchange<u32, u64, 1> = Box::leak(Box::new(Interchange::new()));
        let other = thread::spawn(move || {
            pool.as_interchange_ref().claim().map(|(mut rq, rp)| {
                rq.request(1).unwrap();
                assert_eq!(rp.state(), State::Requested);
                (rq, rp)
            })
        });
        let mine = pool.claim();
        let theirs = other.join().unwrap();
        assert!(
            mine.is_some() != theirs.is_some(),
            "exactly one claim of the one channel"
        );
        drop((mine, theirs));
        let (rq, rp) = pool.claim().expect("released");
        assert_eq!((rq.state(), rp.state()), (State::Idle, State::Idle));
    });
}

#[test]
fn waiter_register_races_wake() {
    use core::future::poll_fn;
    use core::task::Poll;
    use loom::sync::atomic::AtomicBool;

    loom::model(|| {
        let waiter = Arc::new(Waiter::new());
        let ready = Arc::new(AtomicBool::new(false));
        let waker = {
            let (waiter, ready) = (waiter.clone(), ready.clone());
            thread::spawn(move || {
                ready.store(true, Ordering::Release);
                waiter.notify();
            })
        };
        // loom's executor reports a deadlock if the wake is lost.
        loom::future::block_on(poll_fn(|cx| {
            waiter.register(cx.waker());
            if ready.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }));
        waker.join().unwrap();
    });
}

#[test]
fn async_round() {
    loom::model(|| {
        let channel = leaked::<u32, u64>();
        let to_requester: &'static Waiter = Box::leak(Box::new(Waiter::new()));
        let to_responder: &'static Waiter = Box::leak(Box::new(Waiter::new()));
        let (mut rq, mut rp) = channel.split().unwrap();
        *rq.callback_mut() = Callback::new(to_responder);
        *rp.callback_mut() = Callback::new(to_requester);
        let server = thread::spawn(move || {
            loom::future::block_on(rp.serve_async(to_responder, |n| u64::from(n) * 2)).unwrap();
        });
        let answer = loom::future::block_on(rq.request_async(21, to_requester)).unwrap();
        assert_eq!(answer, 42);
        server.join().unwrap();
        // Drop the wakers still registered (loom checks that its executor's wakers go away).
        to_requester.wake();
        to_responder.wake();
    });
}
