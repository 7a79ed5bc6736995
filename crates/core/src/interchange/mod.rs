//! Static request/response slots for firmware: no heap, no OS, one `static` shared by an
//! interrupt handler, a secure-world service or an idle loop. A drop-in successor to the
//! `interchange` crate (0.3), with its known bugs fixed.
//!
//! ```
//! use courier_core::interchange::{Interchange, State};
//!
//! #[derive(Debug, PartialEq)]
//! enum Request { Blink(u8) }
//! #[derive(Debug, PartialEq)]
//! enum Response { Pressed(bool) }
//!
//! static INTERCHANGE: Interchange<Request, Response, 1> = Interchange::new();
//!
//! let (mut rq, mut rp) = INTERCHANGE.claim().unwrap();
//! rq.request(Request::Blink(3)).unwrap();
//! assert_eq!(rp.take_request(), Some(Request::Blink(3)));
//! rp.respond(Response::Pressed(true)).unwrap();
//! assert_eq!(rq.take_response(), Some(Response::Pressed(true)));
//! assert_eq!(rq.state(), State::Idle);
//! ```
//!
//! # Channels and pools
//!
//! A [`Channel`] is one slot: a buffer that holds a request or a response (never both), and
//! one atomic byte with the [`State`] and which ends are claimed. Its size is the larger
//! payload plus one byte, rounded up to the alignment. [`Channel::split`] claims both ends,
//! a [`Requester`] and a [`Responder`]; an [`Interchange`] is a pool of `N` channels handing
//! out pairs with [`claim`](Interchange::claim). Both have `const fn new`.
//!
//! # The protocol
//!
//! ```text
//!            request / send_request            take_request / request / response_mut
//!   Idle ─────────────────────────▶ Requested ─────────────────────────▶ BuildingResponse
//!    │ ▲  ◀─────────── cancel (early: the request comes back) ──┘              │   │
//!    │ │                                                                       │   │
//!    │ └──────────── take_response ◀── Responded ◀── respond / send_response ──┘   │
//!    │ ▲                                                                           │
//!    │ └───── acknowledge_cancel ◀── Canceled ◀──── cancel (late: signalled) ──────┘
//!    └── request_mut / with_request_mut ─▶ BuildingRequest ─ send_request ─▶ Requested
//!                                           (cancel: abandoned, back to Idle)
//! ```
//!
//! Each end's methods check the state and refuse with an [`Error`] naming it, or, for
//! [`Requester::request`] and [`Responder::respond`], a [`SendError`] that gives the value
//! back. [`Requester::cancel`] decides in one atomic step.
//!
//! # Building in place and borrowing
//!
//! Large requests and responses can be built in the buffer ([`Requester::request_mut`],
//! [`Responder::response_mut`]) and read there ([`Responder::request`],
//! [`Requester::response`]). Borrows are guards ([`Ref`], [`RefMut`]) that borrow the
//! handle, so the handle cannot reuse the buffer while one lives.
//!
//! # Notification
//!
//! Each end runs a [`Callback`] when it hands something to the other end: a bare `fn()`, or
//! a [`Notify`] with context such as a [`Waiter`], which wakes an async task.
//! [`Requester::request_async`] and [`Responder::serve_async`] run whole rounds.
//!
//! # Differences from `interchange` 0.3
//!
//! - `acknowledge_cancel` takes `&mut self` and borrows are guards: no safe path to a
//!   request being overwritten while it is borrowed.
//! - Claims synchronise with the previous holder (Acquire).
//! - `cancel` is one decision; it also abandons a request being built.
//! - Dropping both ends resets the channel; an `Interchange` of 0 channels claims `None`.
//! - A refused `request`/`respond` gives the value back; errors say which state refused.
//! - Callbacks are [`Callback`]s (`Callback::from_fn` wraps the seed's `fn()`).
//! - `Responder::request` may be repeated while the request is in the buffer.
//! - With the `portable-atomic` feature it builds for targets without compare-and-swap.

mod channel;
mod handles;
mod notify;

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_models;

use core::fmt;

pub use channel::{Channel, Interchange, InterchangeRef, Ref, RefMut};
pub use handles::{Requester, Responder};
pub use notify::{Callback, Notify, Waiter};

/// The state of a channel. The numbers are the seed's.
///
/// # Examples
///
/// ```
/// use courier_core::interchange::State;
///
/// assert!(State::Canceled == 12u8);
/// assert_eq!(State::try_from(2), Ok(State::Requested));
/// assert_eq!(State::try_from(7), Err(7));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum State {
    /// Nothing in flight; the requester may send or start building a request.
    Idle = 0,
    /// The requester is building a request in the buffer.
    BuildingRequest = 1,
    /// A request is waiting for the responder.
    Requested = 2,
    /// The responder has the request and is building its response.
    BuildingResponse = 3,
    /// A response is waiting for the requester.
    Responded = 4,
    /// The requester canceled while the responder had the request; the responder must
    /// acknowledge.
    Canceled = 12,
}

impl State {
    /// The state recorded in a channel's state word.
    pub(crate) fn from_word(word: u8) -> Self {
        match Self::try_from(word & channel::STATE_MASK) {
            Ok(state) => state,
            Err(_) => unreachable!("a channel's state word holds only valid states"),
        }
    }
}

impl TryFrom<u8> for State {
    type Error = u8;

    /// The state with number `value`, or `value` back if there is none (the seed mapped
    /// unknown numbers to `Idle`).
    fn try_from(value: u8) -> Result<Self, u8> {
        Ok(match value {
            0 => State::Idle,
            1 => State::BuildingRequest,
            2 => State::Requested,
            3 => State::BuildingResponse,
            4 => State::Responded,
            12 => State::Canceled,
            other => return Err(other),
        })
    }
}

impl PartialEq<u8> for State {
    fn eq(&self, other: &u8) -> bool {
        *self as u8 == *other
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A call refused because the channel was in the wrong state, which it names.
///
/// # Examples
///
/// ```
/// use courier_core::interchange::{Channel, State};
///
/// let channel: Channel<u8, u8> = Channel::new();
/// let (_rq, mut rp) = channel.split().unwrap();
/// let error = rp.acknowledge_cancel().unwrap_err();
/// assert_eq!(error.state(), State::Idle);
/// assert_eq!(error.to_string(), "not allowed while the channel is Idle");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Error {
    /// The state that refused the call.
    state: State,
}

impl Error {
    /// An error for a call refused in `state`.
    pub(crate) fn new(state: State) -> Self {
        Self { state }
    }

    /// The state that refused the call.
    pub fn state(&self) -> State {
        self.state
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not allowed while the channel is {}", self.state)
    }
}

impl core::error::Error for Error {}

/// A request or response that was not sent, given back with the state that refused it.
///
/// # Examples
///
/// ```
/// use courier_core::interchange::{Channel, State};
///
/// let channel: Channel<String, u8> = Channel::new();
/// let (mut rq, _rp) = channel.split().unwrap();
/// rq.request("first".into()).unwrap();
/// let refused = rq.request("second".into()).unwrap_err();
/// assert_eq!(refused.state(), State::Requested);
/// assert_eq!(refused.into_inner(), "second"); // not dropped
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SendError<T> {
    /// The value that was not sent.
    value: T,
    /// The state that refused it.
    state: State,
}

impl<T> SendError<T> {
    /// The value `value`, refused in `state`.
    pub(crate) fn new(value: T, state: State) -> Self {
        Self { value, state }
    }

    /// The state that refused the value.
    pub fn state(&self) -> State {
        self.state
    }

    /// The value that was not sent, borrowed.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        self.value
    }

    /// The state as a plain [`Error`], dropping the value.
    pub fn error(&self) -> Error {
        Error::new(self.state)
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not sent: the channel is {}", self.state)
    }
}

impl<T> core::error::Error for SendError<T> {}

impl<T> From<SendError<T>> for Error {
    fn from(refused: SendError<T>) -> Self {
        refused.error()
    }
}
