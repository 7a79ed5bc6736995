//! Unit tests of the interchange module:
//!
//! - the seed's example, line by line, through `Interchange::claim`, an `InterchangeRef` in a
//!   `static` and `Channel::split`;
//! - a table calling every method of both ends in every state (with the three flavours of
//!   BuildingResponse), checking the result, the refusing state and the new state;
//! - one regression test per bug of the seed: reset on release, `N = 0`, values handed back,
//!   abandoning a request being built, errors naming the state, one-decision cancel, claims
//!   across threads (the UB and ordering fixes are also covered by `compile_fail` doctests and
//!   the loom models);
//! - the pool's reuse, drop accounting, footprint (`const` assertions), `Send`/`Sync`;
//! - callbacks (bare and with context), the `Waiter`, and the async helpers under
//!   executors, single-threaded and across threads, including cancellation by drop.

use core::cell::Cell;
use core::mem::size_of;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use std::{println, thread, vec::Vec};

use super::*;

// ---------------------------------------------------------------------------------------
// The seed's example.

#[derive(Clone, Debug, PartialEq)]
enum Request {
    This(u8, u32),
    #[allow(dead_code)]
    That(i64),
}

#[derive(Clone, Debug, PartialEq)]
enum Response {
    Here(u8, u8, u8),
    There(i16),
}

impl Default for Request {
    fn default() -> Self {
        Request::That(0)
    }
}

impl Default for Response {
    fn default() -> Self {
        Response::There(0)
    }
}

/// The seed's example, statement by statement, on any pair of ends.
fn seed_example(
    mut rq: Requester<'_, Request, Response>,
    mut rp: Responder<'_, Request, Response>,
) {
    assert!(rq.state() == State::Idle);

    // happy path: no cancelation
    let request = Request::This(1, 2);
    assert!(rq.request(request).is_ok());

    let request = rp.take_request().unwrap();
    println!("rp got request: {:?}", request);
    assert_eq!(request, Request::This(1, 2));

    let response = Response::There(-1);
    assert!(!rp.is_canceled());
    assert!(rp.respond(response).is_ok());

    let response = rq.take_response().unwrap();
    println!("rq got response: {:?}", response);
    assert_eq!(response, Response::There(-1));

    // early cancelation path
    assert!(rq.request(request).is_ok());

    let request = rq.cancel().unwrap().unwrap();
    println!("responder could cancel: {:?}", request);
    assert_eq!(request, Request::This(1, 2));

    assert!(rp.take_request().is_none());
    assert!(State::Idle == rq.state());

    // late cancelation
    assert!(rq.request(request).is_ok());
    let request = rp.take_request().unwrap();

    println!(
        "responder could cancel: {:?}",
        &rq.cancel().unwrap().is_none()
    );
    assert!(rp.is_canceled());
    assert!(rp.respond(response).is_err());
    assert!(rp.acknowledge_cancel().is_ok());
    assert!(State::Idle == rq.state());
    assert_eq!(request, Request::This(1, 2));

    // building into request buffer
    rq.with_request_mut(|r| *r = Request::This(1, 2)).unwrap();
    assert!(rq.send_request().is_ok());
    let request = rp.take_request().unwrap();
    assert_eq!(request, Request::This(1, 2));
    println!("rp got request: {:?}", request);

    // building into response buffer
    rp.with_response_mut(|r| *r = Response::Here(3, 2, 1))
        .unwrap();
    assert!(rp.send_response().is_ok());
    let response = rq.take_response().unwrap();
    assert_eq!(response, Response::Here(3, 2, 1));
}

#[test]
fn seed_example_through_claim() {
    static INTERCHANGE: Interchange<Request, Response, 1> = Interchange::new();
    let (rq, rp) = INTERCHANGE.claim().unwrap();
    assert!(INTERCHANGE.claim().is_none());
    seed_example(rq, rp);
    // Released: the one channel can be claimed again, and the example runs again.
    let (rq, rp) = INTERCHANGE.claim().unwrap();
    seed_example(rq, rp);
}

#[test]
fn seed_example_through_interchange_ref() {
    static INNER: Interchange<Request, Response, 1> = Interchange::new();
    static INTERCHANGE: InterchangeRef<'static, Request, Response> = INNER.as_interchange_ref();
    let (rq, rp) = INTERCHANGE.claim().unwrap();
    assert!(INTERCHANGE.claim().is_none());
    seed_example(rq, rp);
}

#[test]
fn seed_example_through_split() {
    let channel = Channel::new();
    let (rq, rp) = channel.split().unwrap();
    seed_example(rq, rp);
}

// ---------------------------------------------------------------------------------------
// Every method in every state.

type Rq<'c> = Requester<'c, u32, u64>;
type Rp<'c> = Responder<'c, u32, u64>;

/// The request sent to reach a state.
const SENT: u32 = 5;
/// The response sent to reach Responded.
const ANSWERED: u64 = 9;
/// The response being built in `Start::BuildingResponseBuilt`.
const BUILT: u64 = 8;

/// Where a table column starts.
#[derive(Clone, Copy, Debug)]
enum Start {
    Idle,
    BuildingRequest,
    Requested,
    /// BuildingResponse after `take_request`.
    Taken,
    /// BuildingResponse after `request` (the request is still in the buffer).
    Peeked,
    /// BuildingResponse with a response being built.
    Building,
    Responded,
    Canceled,
}

const STARTS: [Start; 8] = [
    Start::Idle,
    Start::BuildingRequest,
    Start::Requested,
    Start::Taken,
    Start::Peeked,
    Start::Building,
    Start::Responded,
    Start::Canceled,
];

/// Drives a fresh pair of ends to `start`.
fn reach(start: Start, rq: &mut Rq<'_>, rp: &mut Rp<'_>) -> State {
    match start {
        Start::Idle => {}
        Start::BuildingRequest => rq.with_request_mut(|r| *r = SENT).unwrap(),
        Start::Requested => rq.request(SENT).unwrap(),
        Start::Taken => {
            rq.request(SENT).unwrap();
            assert_eq!(rp.take_request(), Some(SENT));
        }
        Start::Peeked => {
            rq.request(SENT).unwrap();
            assert_eq!(*rp.request().unwrap(), SENT);
        }
        Start::Building => {
            rq.request(SENT).unwrap();
            rp.with_response_mut(|r| *r = BUILT).unwrap();
        }
        Start::Responded => {
            rq.request(SENT).unwrap();
            rp.take_request().unwrap();
            rp.respond(ANSWERED).unwrap();
        }
        Start::Canceled => {
            rq.request(SENT).unwrap();
            rp.take_request().unwrap();
            assert_eq!(rq.cancel(), Ok(None));
        }
    }
    rq.state()
}

/// What a call gave: `Ok(None)` for `()`, `Ok(Some(v))` for a value, `Err(state)` for a
/// refusal (an error naming the state, or `None` from a `take_*`).
type Outcome = Result<Option<u64>, State>;

/// One expected cell: the outcome and the state afterwards.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Refused, naming the state it started in, which is unchanged.
    No,
    /// Succeeded with `()`, now in the state.
    Unit(State),
    /// Succeeded with the value, now in the state.
    Val(u64, State),
}

use Expect::{No, Unit, Val};
use State::{BuildingRequest as BQ, BuildingResponse as BR, Canceled as CX, Idle as I};
use State::{Requested as RQ, Responded as RD};

type Call = fn(&mut Rq<'_>, &mut Rp<'_>) -> Outcome;

/// Columns in the order of `STARTS`.
#[rustfmt::skip]
const TABLE: &[(&str, Call, [Expect; 8])] = &[
    //                                          Idle           BuildingReq    Requested      Taken          Peeked         Building       Responded      Canceled
    ("rq.request", |rq, _| rq.request(7).map(|()| None).map_err(|e| { assert_eq!(*e.value(), 7); e.state() }),
                                               [Unit(RQ),      No,            No,            No,            No,            No,            No,            No]),
    ("rq.with_request_mut", |rq, _| rq.with_request_mut(|r| u64::from(core::mem::replace(r, 6))).map(Some).map_err(|e| e.state()),
                                               [Val(0, BQ),    Val(5, BQ),    No,            No,            No,            No,            No,            No]),
    ("rq.request_mut", |rq, _| rq.request_mut().map(|r| Some(u64::from(*r))).map_err(|e| e.state()),
                                               [Val(0, BQ),    Val(5, BQ),    No,            No,            No,            No,            No,            No]),
    ("rq.send_request", |rq, _| rq.send_request().map(|()| None).map_err(|e| e.state()),
                                               [No,            Unit(RQ),      No,            No,            No,            No,            No,            No]),
    ("rq.cancel", |rq, _| rq.cancel().map(|r| r.map(u64::from)).map_err(|e| e.state()),
                                               [No,            Val(5, I),     Val(5, I),     Unit(CX),      Unit(CX),      Unit(CX),      No,            No]),
    ("rq.response", |rq, _| rq.response().map(|r| Some(*r)).map_err(|e| e.state()),
                                               [No,            No,            No,            No,            No,            No,            Val(9, RD),    No]),
    ("rq.with_response", |rq, _| rq.with_response(|r| *r).map(Some).map_err(|e| e.state()),
                                               [No,            No,            No,            No,            No,            No,            Val(9, RD),    No]),
    ("rq.take_response", |rq, _| { let before = rq.state(); rq.take_response().map(Some).ok_or(before) },
                                               [No,            No,            No,            No,            No,            No,            Val(9, I),     No]),
    ("rq.state", |rq, _| Ok(Some(rq.state() as u64)),
                                               [Val(0, I),     Val(1, BQ),    Val(2, RQ),    Val(3, BR),    Val(3, BR),    Val(3, BR),    Val(4, RD),    Val(12, CX)]),
    ("rp.state", |_, rp| Ok(Some(rp.state() as u64)),
                                               [Val(0, I),     Val(1, BQ),    Val(2, RQ),    Val(3, BR),    Val(3, BR),    Val(3, BR),    Val(4, RD),    Val(12, CX)]),
    ("rp.take_request", |_, rp| { let before = rp.state(); rp.take_request().map(|r| Some(u64::from(r))).ok_or(before) },
                                               [No,            No,            Val(5, BR),    No,            No,            No,            No,            No]),
    ("rp.request", |_, rp| rp.request().map(|r| Some(u64::from(*r))).map_err(|e| e.state()),
                                               [No,            No,            Val(5, BR),    No,            Val(5, BR),    No,            No,            No]),
    ("rp.with_request", |_, rp| rp.with_request(|r| u64::from(*r)).map(Some).map_err(|e| e.state()),
                                               [No,            No,            Val(5, BR),    No,            Val(5, BR),    No,            No,            No]),
    ("rp.is_canceled", |_, rp| Ok(Some(u64::from(rp.is_canceled()))),
                                               [Val(0, I),     Val(0, BQ),    Val(0, RQ),    Val(0, BR),    Val(0, BR),    Val(0, BR),    Val(0, RD),    Val(1, CX)]),
    ("rp.acknowledge_cancel", |_, rp| rp.acknowledge_cancel().map(|()| None).map_err(|e| e.state()),
                                               [No,            No,            No,            No,            No,            No,            No,            Unit(I)]),
    ("rp.respond", |_, rp| rp.respond(7).map(|()| None).map_err(|e| { assert_eq!(*e.value(), 7); e.state() }),
                                               [No,            No,            No,            Unit(RD),      Unit(RD),      Unit(RD),      No,            No]),
    ("rp.with_response_mut", |_, rp| rp.with_response_mut(|r| core::mem::replace(r, 7)).map(Some).map_err(|e| e.state()),
                                               [No,            No,            Val(0, BR),    Val(0, BR),    Val(0, BR),    Val(8, BR),    No,            No]),
    ("rp.response_mut", |_, rp| rp.response_mut().map(|r| Some(*r)).map_err(|e| e.state()),
                                               [No,            No,            Val(0, BR),    Val(0, BR),    Val(0, BR),    Val(8, BR),    No,            No]),
    ("rp.send_response", |_, rp| rp.send_response().map(|()| None).map_err(|e| e.state()),
                                               [No,            No,            No,            No,            No,            Unit(RD),      No,            No]),
];

#[test]
fn every_method_in_every_state() {
    let mut checked = 0;
    for (name, call, row) in TABLE {
        for (start, expect) in STARTS.iter().zip(row) {
            let channel: Channel<u32, u64> = Channel::new();
            let (mut rq, mut rp) = channel.split().unwrap();
            let before = reach(*start, &mut rq, &mut rp);
            let got = call(&mut rq, &mut rp);
            let after = rq.state();
            let context = std::format!("{name} from {start:?}: got {got:?}, now {after:?}");
            match *expect {
                No => {
                    assert_eq!(got, Err(before), "{context}");
                    assert_eq!(after, before, "{context}");
                }
                Unit(state) => {
                    assert_eq!(got, Ok(None), "{context}");
                    assert_eq!(after, state, "{context}");
                }
                Val(value, state) => {
                    assert_eq!(got, Ok(Some(value)), "{context}");
                    assert_eq!(after, state, "{context}");
                }
            }
            drop((rq, rp));
            let (rq, _rp) = channel.split().expect("released");
            assert_eq!(rq.state(), State::Idle, "reset after {name} from {start:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, TABLE.len() * STARTS.len());
}

#[test]
fn after_a_call_the_buffer_holds_what_it_should() {
    // Built requests keep their contents across calls and reach the responder.
    let channel: Channel<u32, u64> = Channel::new();
    let (mut rq, mut rp) = channel.split().unwrap();
    *rq.request_mut().unwrap() += 3;
    rq.with_request_mut(|r| *r *= 2).unwrap();
    rq.send_request().unwrap();
    assert_eq!(*rp.request().unwrap(), 6);
    assert_eq!(rp.with_request(|r| *r).unwrap(), 6, "peeking is repeatable");
    // A response overwrites the peeked request.
    *rp.response_mut().unwrap() = 40;
    rp.with_response_mut(|r| *r += 2).unwrap();
    assert_eq!(rp.request().unwrap_err().state(), State::BuildingResponse);
    rp.send_response().unwrap();
    assert_eq!(*rq.response().unwrap(), 42);
    assert_eq!(
        rq.with_response(|r| *r).unwrap(),
        42,
        "reading is repeatable"
    );
    assert_eq!(rq.take_response(), Some(42));
}

// ---------------------------------------------------------------------------------------
// The seed's bugs.

/// Counts live values so tests can check that every value is dropped exactly once.
#[derive(Debug)]
struct Tracked<'a> {
    live: &'a Cell<i32>,
    id: u32,
}

impl<'a> Tracked<'a> {
    fn new(live: &'a Cell<i32>, id: u32) -> Self {
        live.set(live.get() + 1);
        Self { live, id }
    }
}

impl Default for Tracked<'_> {
    fn default() -> Self {
        unreachable!("built values come from Tracked::new in these tests")
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.live.set(self.live.get() - 1);
    }
}

#[test]
fn dropping_both_ends_resets_the_channel() {
    let channel: Channel<u32, u64> = Channel::new();
    let (mut rq, rp) = channel.split().unwrap();
    rq.request(7).unwrap();
    drop((rq, rp));
    let (mut rq, mut rp) = channel.split().unwrap();
    assert_eq!(rq.state(), State::Idle);
    assert_eq!(rp.take_request(), None, "no stale request after a re-claim");
    rq.request(8).unwrap();
    assert_eq!(rp.take_request(), Some(8));
}

#[test]
fn release_drops_whatever_the_channel_holds() {
    let live = Cell::new(0);
    for holds in 0..6 {
        let channel: Channel<Tracked<'_>, Tracked<'_>> = Channel::new();
        let (mut rq, mut rp) = channel.split().unwrap();
        match holds {
            0 => {}
            1 => rq.request(Tracked::new(&live, 1)).unwrap(),
            2 => {
                rq.request(Tracked::new(&live, 1)).unwrap();
                assert_eq!(rp.request().unwrap().id, 1);
            }
            3 => {
                rq.request(Tracked::new(&live, 1)).unwrap();
                drop(rp.take_request());
                rp.respond(Tracked::new(&live, 2)).unwrap();
            }
            4 => {
                // Canceled with the request still in the buffer.
                rq.request(Tracked::new(&live, 1)).unwrap();
                assert_eq!(rp.request().unwrap().id, 1);
                assert!(rq.cancel().unwrap().is_none());
            }
            _ => {
                // Released one end at a time, the responder first.
                rq.request(Tracked::new(&live, 1)).unwrap();
                drop(rp);
                assert_eq!(live.get(), 1, "the requester still holds the channel");
                drop(rq);
                assert_eq!(live.get(), 0);
                continue;
            }
        }
        drop((rq, rp));
        assert_eq!(
            live.get(),
            0,
            "case {holds}: the release dropped the payload"
        );
    }
    assert_eq!(live.get(), 0);
}

#[test]
fn every_value_is_dropped_exactly_once() {
    let live = Cell::new(0);
    let channel: Channel<Tracked<'_>, Tracked<'_>> = Channel::new();
    let (mut rq, mut rp) = channel.split().unwrap();
    // Peeked request overwritten by a response.
    rq.request(Tracked::new(&live, 1)).unwrap();
    assert_eq!(rp.request().unwrap().id, 1);
    rp.respond(Tracked::new(&live, 2)).unwrap();
    assert_eq!(live.get(), 1, "respond dropped the peeked request");
    assert_eq!(rq.take_response().unwrap().id, 2);
    assert_eq!(live.get(), 0);
    // Late cancel with a peeked request, then acknowledge.
    rq.request(Tracked::new(&live, 3)).unwrap();
    assert_eq!(rp.with_request(|r| r.id).unwrap(), 3);
    assert!(rq.cancel().unwrap().is_none());
    let refused = rp.respond(Tracked::new(&live, 4)).unwrap_err();
    assert_eq!(refused.into_inner().id, 4);
    assert_eq!(live.get(), 1);
    rp.acknowledge_cancel().unwrap();
    assert_eq!(live.get(), 0, "acknowledge dropped the peeked request");
    // Refused request comes back and is dropped by the caller.
    rq.request(Tracked::new(&live, 5)).unwrap();
    let refused = rq.request(Tracked::new(&live, 6)).unwrap_err();
    assert_eq!(
        (refused.state(), refused.into_inner().id),
        (State::Requested, 6)
    );
    assert_eq!(live.get(), 1);
    assert_eq!(rq.cancel().unwrap().unwrap().id, 5);
    assert_eq!(live.get(), 0);
}

#[test]
fn zero_channels_claim_none() {
    let pool: Interchange<u8, u8, 0> = Interchange::new();
    assert!(pool.claim().is_none());
    assert!(pool.as_interchange_ref().claim().is_none());
}

#[test]
fn a_refused_send_hands_the_value_back() {
    let channel: Channel<u32, u64> = Channel::new();
    let (mut rq, mut rp) = channel.split().unwrap();
    let refused = rp.respond(11).unwrap_err();
    assert_eq!((refused.state(), refused.into_inner()), (State::Idle, 11));
    rq.request(1).unwrap();
    let refused = rq.request(2).unwrap_err();
    assert_eq!(
        (refused.state(), refused.into_inner()),
        (State::Requested, 2)
    );
    let refused = rp.respond(12).unwrap_err();
    assert_eq!(
        (refused.state(), refused.into_inner()),
        (State::Requested, 12)
    );
}

#[test]
fn a_request_being_built_can_be_abandoned() {
    let channel: Channel<u32, u64> = Channel::new();
    let (mut rq, mut rp) = channel.split().unwrap();
    rq.with_request_mut(|r| *r = 4).unwrap();
    assert_eq!(rq.cancel(), Ok(Some(4)));
    assert_eq!(rq.state(), State::Idle);
    assert_eq!(rp.take_request(), None);
    // The next build starts from the default, not the abandoned request.
    assert_eq!(rq.with_request_mut(|r| *r).unwrap(), 0);
}

#[test]
fn a_build_after_a_late_cancel_starts_from_default() {
    let channel: Channel<u32, u64> = Channel::new();
    let (mut rq, mut rp) = channel.split().unwrap();
    rq.request(5).unwrap();
    assert_eq!(*rp.request().unwrap(), 5);
    assert_eq!(rq.cancel(), Ok(None));
    rp.acknowledge_cancel().unwrap();
    assert_eq!(
        *rq.request_mut().unwrap(),
        0,
        "the seed restarted from the stale request"
    );
}

#[test]
fn errors_name_the_state_that_refused() {
    let channel: Channel<u32, u64> = Channel::new();
    let (mut rq, mut rp) = channel.split().unwrap();
    let error = rp.acknowledge_cancel().unwrap_err();
    assert_eq!(error.state(), State::Idle);
    assert_eq!(
        std::format!("{error}"),
        "not allowed while the channel is Idle"
    );
    rq.request(1).unwrap();
    rp.take_request().unwrap();
    rp.respond(2).unwrap();
    let error = rq.cancel().unwrap_err();
    assert_eq!(
        error,
        Error::new(State::Responded),
        "too late: the response is there"
    );
    let refused = rq.request(3).unwrap_err();
    assert_eq!(
        std::format!("{refused}"),
        "not sent: the channel is Responded"
    );
    assert_eq!(Error::from(refused), Error::new(State::Responded));
    let _: &dyn core::error::Error = &error;
}

#[test]
fn state_numbers_are_the_seeds() {
    for (state, number) in [
        (State::Idle, 0),
        (State::BuildingRequest, 1),
        (State::Requested, 2),
    ]
    .into_iter()
    .chain([
        (State::BuildingResponse, 3),
        (State::Responded, 4),
        (State::Canceled, 12),
    ]) {
        assert!(state == number);
        assert_eq!(State::try_from(number), Ok(state));
    }
    assert_eq!(
        State::try_from(5),
        Err(5),
        "unknown numbers are not silently Idle"
    );
}

#[test]
fn handles_claim_one_end_at_a_time() {
    let channel: Channel<u32, u64> = Channel::new();
    let rq = channel.requester().unwrap();
    assert!(channel.requester().is_none());
    assert!(channel.split().is_none());
    let rp = channel.responder().unwrap();
    assert!(channel.responder().is_none());
    // Re-claiming one end keeps the other end's work.
    let mut rq = rq;
    rq.request(3).unwrap();
    drop(rq);
    let rq = channel.requester().unwrap();
    assert_eq!(rq.state(), State::Requested);
    assert!(core::ptr::eq(rq.channel(), rp.channel()));
}

#[test]
fn a_handle_reclaimed_on_another_thread_continues() {
    static CHANNEL: Channel<u32, u64> = Channel::new();
    let (mut rq, mut rp) = CHANNEL.split().unwrap();
    rq.request(1).unwrap();
    rp.take_request().unwrap();
    rp.respond(2).unwrap();
    assert_eq!(*rq.response().unwrap(), 2);
    drop(rq);
    let taken = thread::spawn(|| CHANNEL.requester().unwrap().take_response())
        .join()
        .unwrap();
    assert_eq!(taken, Some(2));
    drop(rp);
}

// ---------------------------------------------------------------------------------------
// The pool.

#[test]
fn pool_claims_are_reused_after_release() {
    let pool: Interchange<u64, u32, 10> = Interchange::new();
    let mut held: Vec<_> = (0..10).map(|_| pool.claim().unwrap()).collect();
    assert!(pool.claim().is_none());
    held.clear();
    held.extend((0..10).map(|_| pool.claim().unwrap()));
    assert!(pool.claim().is_none());
    held.clear();
    held.extend((0..5).map(|_| pool.claim().unwrap()));
    held.clear();
    held.extend((0..10).map(|_| pool.claim().unwrap()));
    assert!(pool.claim().is_none());
    // A channel with only one end held is not free.
    let (rq, rp) = held.pop().unwrap();
    drop(rp);
    assert!(pool.claim().is_none());
    drop(rq);
    assert!(pool.claim().is_some());
}

#[test]
fn pool_channels_come_back_clean() {
    let pool: Interchange<u64, u32, 2> = Interchange::new();
    for round in 0..6 {
        let (mut rq, mut rp) = pool.claim().unwrap();
        assert_eq!(rq.state(), State::Idle, "round {round}");
        assert_eq!(rp.take_request(), None);
        rq.request(round).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Footprint, Send and Sync.

/// `size_of::<Channel<Rq, Rp>>()` is the larger payload plus one byte, rounded up to the
/// payload's alignment.
const fn expected_size(payload: usize, align: usize) -> usize {
    (payload + 1).div_ceil(align) * align
}

const _: () = {
    assert!(size_of::<Channel<(), ()>>() == 1);
    assert!(size_of::<Channel<u8, u8>>() == 2);
    assert!(size_of::<Channel<u32, u32>>() == expected_size(4, 4));
    assert!(size_of::<Channel<u64, u32>>() == expected_size(8, 8));
    assert!(size_of::<Channel<u128, u8>>() == expected_size(16, core::mem::align_of::<u128>()));
    assert!(size_of::<Channel<[u8; 1024], [u8; 16]>>() == 1025);
    assert!(size_of::<Channel<[u64; 128], [u8; 16]>>() == 1032);
    assert!(
        size_of::<Channel<Request, Response>>()
            == expected_size(size_of::<Request>(), core::mem::align_of::<Request>())
    );
    assert!(size_of::<State>() == 1);
    // A handle is the channel reference and a two-word callback (the seed's: two words with
    // a context-free `fn()`).
    assert!(size_of::<Callback<'static>>() == 2 * size_of::<usize>());
    assert!(size_of::<Requester<'static, u64, u64>>() == 3 * size_of::<usize>());
    assert!(size_of::<Responder<'static, u64, u64>>() == 3 * size_of::<usize>());
    assert!(size_of::<Interchange<u64, u32, 10>>() == 10 * 16 + size_of::<usize>());
};

#[test]
fn handles_and_channels_are_send_and_sync() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Channel<std::string::String, u8>>();
    sync::<Channel<std::string::String, u8>>();
    send::<Requester<'static, std::string::String, &'static mut u8>>();
    sync::<Requester<'static, std::string::String, &'static mut u8>>();
    send::<Responder<'static, std::string::String, &'static mut u8>>();
    sync::<Responder<'static, std::string::String, &'static mut u8>>();
    send::<Interchange<u8, u8, 2>>();
    sync::<Interchange<u8, u8, 2>>();
    sync::<Waiter>();
    send::<Callback<'static>>();
    sync::<Callback<'static>>();
}

// ---------------------------------------------------------------------------------------
// Notification.

static BARE_CALLS: AtomicUsize = AtomicUsize::new(0);

fn count_bare_call() {
    BARE_CALLS.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn bare_callbacks_run_where_the_seed_runs_them() {
    let channel: Channel<Request, Response> = Channel::new();
    let (mut rq, mut rp) = channel.split().unwrap();
    *rq.callback_mut() = Callback::from_fn(count_bare_call);
    *rp.callback_mut() = (count_bare_call as fn()).into();
    seed_example(rq, rp);
    // Requester: three `request`s, the early `cancel`, `send_request`; responder: `respond`,
    // `send_response`. Nothing for the late cancel, the refused `respond`, the takes.
    assert_eq!(BARE_CALLS.load(Ordering::Relaxed), 7);
}

#[test]
fn callbacks_carry_context() {
    let requests = AtomicUsize::new(0);
    let responses = AtomicUsize::new(0);
    let on_request = || {
        requests.fetch_add(1, Ordering::Relaxed);
    };
    let on_response = || {
        responses.fetch_add(10, Ordering::Relaxed);
    };
    let channel: Channel<u32, u64> = Channel::new();
    let (mut rq, mut rp) = channel.split().unwrap();
    *rq.callback_mut() = Callback::new(&on_request);
    *rp.callback_mut() = Callback::new(&on_response);
    rq.request(1).unwrap();
    assert_eq!(requests.load(Ordering::Relaxed), 1);
    assert_eq!(responses.load(Ordering::Relaxed), 0);
    rp.take_request().unwrap();
    rp.respond(2).unwrap();
    assert_eq!(responses.load(Ordering::Relaxed), 10);
    // No callback for a refused call.
    assert!(rp.respond(3).is_err());
    assert_eq!(responses.load(Ordering::Relaxed), 10);
}

/// A waker that counts its wakes.
struct CountingWaker(AtomicUsize);

impl futures::task::ArcWake for CountingWaker {
    fn wake_by_ref(this: &Arc<Self>) {
        this.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn waiter_wakes_the_registered_waker_once() {
    let waiter = Waiter::new();
    let count = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = futures::task::waker(count.clone());
    waiter.wake();
    assert_eq!(count.0.load(Ordering::SeqCst), 0);
    waiter.register(&waker);
    waiter.register(&waker);
    waiter.notify();
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    waiter.wake();
    assert_eq!(
        count.0.load(Ordering::SeqCst),
        1,
        "unregistered after a wake"
    );
}

#[test]
fn async_rounds_on_one_thread_executor() {
    use futures::executor::LocalPool;
    use futures::task::LocalSpawnExt;

    static CHANNEL: Channel<u32, u64> = Channel::new();
    static TO_REQUESTER: Waiter = Waiter::new();
    static TO_RESPONDER: Waiter = Waiter::new();

    let (mut rq, mut rp) = CHANNEL.split().unwrap();
    *rq.callback_mut() = Callback::new(&TO_RESPONDER);
    *rp.callback_mut() = Callback::new(&TO_REQUESTER);

    let mut pool = LocalPool::new();
    let answers = std::rc::Rc::new(core::cell::RefCell::new(Vec::new()));
    let sink = answers.clone();
    pool.spawner()
        .spawn_local(async move {
            for n in 0..5 {
                let answer = rq.request_async(n, &TO_REQUESTER).await.unwrap();
                sink.borrow_mut().push(answer);
            }
        })
        .unwrap();
    pool.spawner()
        .spawn_local(async move {
            for _ in 0..5 {
                rp.serve_async(&TO_RESPONDER, |n| u64::from(n) * 10)
                    .await
                    .unwrap();
            }
        })
        .unwrap();
    // Runs until no task can make progress: with a lost wake that is before the rounds are
    // done (and the test fails instead of hanging).
    pool.run_until_stalled();
    assert_eq!(*answers.borrow(), [0, 10, 20, 30, 40]);
}

#[test]
fn async_rounds_across_threads() {
    static CHANNEL: Channel<u32, u64> = Channel::new();
    static TO_REQUESTER: Waiter = Waiter::new();
    static TO_RESPONDER: Waiter = Waiter::new();
    const ROUNDS: u32 = 2000;

    let (mut rq, mut rp) = CHANNEL.split().unwrap();
    *rq.callback_mut() = Callback::new(&TO_RESPONDER);
    *rp.callback_mut() = Callback::new(&TO_REQUESTER);
    let server = thread::spawn(move || {
        pollster::block_on(async {
            for _ in 0..ROUNDS {
                rp.serve_async(&TO_RESPONDER, |n| u64::from(n) + 1)
                    .await
                    .unwrap();
            }
        })
    });
    let client = thread::spawn(move || {
        pollster::block_on(async {
            for n in 0..ROUNDS {
                assert_eq!(
                    rq.request_async(n, &TO_REQUESTER).await.unwrap(),
                    u64::from(n) + 1
                );
            }
        })
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(server.is_finished() && client.is_finished()) {
        assert!(
            Instant::now() < deadline,
            "async rounds stalled: a wake was lost"
        );
        thread::yield_now();
    }
    server.join().unwrap();
    client.join().unwrap();
}

#[test]
fn dropping_a_request_future_cancels_it() {
    use futures::FutureExt;

    let waiter = Waiter::new();
    let channel: Channel<u32, u64> = Channel::new();
    let (mut rq, mut rp) = channel.split().unwrap();

    // Early: nobody took the request; dropping the future recalls it.
    let mut round = std::boxed::Box::pin(rq.request_async(1, &waiter));
    assert!(round.as_mut().now_or_never().is_none());
    drop(round);
    assert_eq!(rq.state(), State::Idle);

    // Late: the responder took it; dropping the future signals the cancel.
    let mut round = std::boxed::Box::pin(rq.request_async(2, &waiter));
    assert!(round.as_mut().now_or_never().is_none());
    assert_eq!(rp.take_request(), Some(2));
    drop(round);
    assert!(rp.is_canceled());
    let refused = rp.respond(3).unwrap_err();
    assert_eq!(refused.state(), State::Canceled);

    // serve_async acknowledges the stale cancel and serves the next request.
    assert_eq!(rq.request(4).unwrap_err().state(), State::Canceled);
    let mut serve = std::boxed::Box::pin(rp.serve_async(&waiter, |n| u64::from(n) * 2));
    assert!(serve.as_mut().now_or_never().is_none(), "no request yet");
    assert_eq!(rq.state(), State::Idle, "the stale cancel was acknowledged");
    rq.request(4).unwrap();
    assert_eq!(serve.now_or_never(), Some(Ok(())));
    assert_eq!(rq.take_response(), Some(8));
}

#[test]
fn spinning_round_trips_across_threads() {
    static CHANNEL: Channel<u32, u64> = Channel::new();
    const ROUNDS: u32 = 20_000;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut rq, mut rp) = CHANNEL.split().unwrap();
    let server = thread::spawn(move || {
        for _ in 0..ROUNDS {
            let request = loop {
                if let Some(request) = rp.take_request() {
                    break request;
                }
                assert!(Instant::now() < deadline, "no request");
                core::hint::spin_loop();
            };
            rp.respond(u64::from(request) * 3).unwrap();
        }
    });
    for n in 0..ROUNDS {
        rq.request(n).unwrap();
        let response = loop {
            if let Some(response) = rq.take_response() {
                break response;
            }
            assert!(Instant::now() < deadline, "no response");
            core::hint::spin_loop();
        };
        assert_eq!(response, u64::from(n) * 3);
    }
    server.join().unwrap();
}
