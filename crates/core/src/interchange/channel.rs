//! The channel cell: one payload buffer and one atomic byte, and the pool of channels.
//!
//! # The state word
//!
//! Everything a channel knows about itself is one [`AtomicU8`]:
//!
//! ```text
//!   bit   7          6          5             4             3..0
//!       +----------+----------+-------------+-------------+-----------------+
//!       | RESPONDER| REQUESTER| HOLDS_      | HOLDS_      | state: the      |
//!       | claimed  | claimed  | RESPONSE    | REQUEST     | `State` value   |
//!       +----------+----------+-------------+-------------+-----------------+
//! ```
//!
//! The low nibble is the protocol state, with the same numbers as [`State`] (and the seed).
//! The two `HOLDS_*` bits say which value, if any, is alive in the payload union; the seed
//! kept a separate enum tag for that, padded to the payload's alignment. The two claim bits
//! say which handles exist.
//!
//! # Who owns the buffer
//!
//! | state            | payload                   | owner of the buffer              |
//! |------------------|---------------------------|----------------------------------|
//! | Idle             | empty                     | requester                        |
//! | BuildingRequest  | a request                 | requester                        |
//! | Requested        | a request                 | nobody: whoever moves the state  |
//! |                  |                           | out of Requested takes it        |
//! | BuildingResponse | empty, request, response  | responder                        |
//! | Responded        | a response                | requester                        |
//! | Canceled         | empty, request, response  | responder                        |
//!
//! ```text
//!  requester                         word                          responder
//!  ---------                         ----                          ---------
//!  write request     Idle -------------> Requested
//!                                        Requested -------------> BuildingResponse   take/peek
//!  cancel (early)    Idle <------------- Requested
//!  cancel (late)     BuildingResponse -> Canceled
//!                                        Canceled --------------> Idle               acknowledge
//!                                        BuildingResponse ------> Responded          respond
//!  take response     Idle <------------- Responded
//! ```
//!
//! **Key invariant: only the owner of the buffer in the current state touches the buffer,
//! and every change of owner is an atomic read-modify-write of the word (Release by the side
//! that gives the buffer up, Acquire by the side that takes it).** A side that owns the
//! buffer in the current state is also the only side that can move the state out of it,
//! except that the requester may move BuildingResponse to Canceled, which changes no owner.
//! Out of a contested state (Requested, BuildingResponse) the move is a compare-and-swap;
//! out of a state the mover owns (Idle, Responded) it is a single xor, since nobody else can
//! change the state bits meanwhile (only the claim bits, which the xor leaves alone).
//!
//! Claims: a handle is created by setting its claim bit with Acquire (pairing with the
//! Release that cleared it, so a handle re-claimed on another thread sees everything the
//! previous holder did). The last handle to be dropped sets the other claim bit as a lock,
//! drops whatever the payload holds, and stores an idle, unclaimed word with Release: a
//! re-claimed channel is always Idle and empty. A claim that races with that reset fails.

use core::fmt;
use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};
use core::ptr;

use super::{Requester, Responder, State};
use crate::sync::{const_ptr, mut_ptr, AtomicU8, AtomicUsize, Ordering, UnsafeCell};

/// Mask of the protocol state in the word.
pub(super) const STATE_MASK: u8 = 0b0000_1111;
/// The payload holds a live request.
pub(super) const HOLDS_REQUEST: u8 = 0b0001_0000;
/// The payload holds a live response.
pub(super) const HOLDS_RESPONSE: u8 = 0b0010_0000;
/// Mask of the payload bits.
pub(super) const PAYLOAD_MASK: u8 = HOLDS_REQUEST | HOLDS_RESPONSE;
/// A [`Requester`] exists.
pub(super) const REQUESTER: u8 = 0b0100_0000;
/// A [`Responder`] exists.
pub(super) const RESPONDER: u8 = 0b1000_0000;
/// Mask of the claim bits.
pub(super) const CLAIM_MASK: u8 = REQUESTER | RESPONDER;

/// [`State::Idle`]: the requester owns an empty buffer.
pub(super) const IDLE: u8 = State::Idle as u8;
/// [`State::BuildingRequest`]: the requester owns a buffer holding a request.
pub(super) const BUILDING_REQUEST: u8 = State::BuildingRequest as u8;
/// [`State::Requested`]: a request is published; nobody owns the buffer.
pub(super) const REQUESTED: u8 = State::Requested as u8;
/// [`State::BuildingResponse`]: the responder owns the buffer.
pub(super) const BUILDING_RESPONSE: u8 = State::BuildingResponse as u8;
/// [`State::Responded`]: the requester owns a buffer holding a response.
pub(super) const RESPONDED: u8 = State::Responded as u8;
/// [`State::Canceled`]: the responder still owns the buffer and must acknowledge.
pub(super) const CANCELED: u8 = State::Canceled as u8;

/// The one buffer shared by the request and the response. Which field is alive is recorded
/// in the word's payload bits, never in the union itself.
pub(super) union Payload<Rq, Rp> {
    /// No value (Idle, or a taken request).
    empty: (),
    /// A request (BuildingRequest, Requested, or peeked at in BuildingResponse/Canceled).
    request: ManuallyDrop<Rq>,
    /// A response (Responded, or being built in BuildingResponse/Canceled).
    response: ManuallyDrop<Rp>,
}

/// A single request/response slot.
///
/// A channel holds one buffer, big enough for a request or a response, and one atomic byte.
/// Its two ends, a [`Requester`] and a [`Responder`], are claimed with [`split`](Self::split)
/// (or one at a time with [`requester`](Self::requester) and [`responder`](Self::responder)),
/// and released by dropping them. When the last one is dropped, the channel is reset to
/// [`State::Idle`] and whatever it held is dropped.
///
/// # Examples
///
/// ```
/// use courier_core::interchange::{Channel, State};
///
/// static CHANNEL: Channel<u32, u64> = Channel::new();
///
/// let (mut rq, mut rp) = CHANNEL.split().unwrap();
/// rq.request(21).unwrap();
/// let n = rp.take_request().unwrap();
/// rp.respond(u64::from(n) * 2).unwrap();
/// assert_eq!(rq.take_response(), Some(42));
/// assert_eq!(rq.state(), State::Idle);
///
/// // Both ends are claimed until they are dropped.
/// assert!(CHANNEL.split().is_none());
/// drop((rq, rp));
/// assert!(CHANNEL.split().is_some());
/// ```
///
/// # Thread safety
///
/// A channel, and so its handles, can be shared between threads when both payloads are
/// `Send + Sync` (the handles lend `&Rq`/`&Rp` to whoever holds `&Requester`/`&Responder`).
/// With a payload that is not, none of them crosses threads:
///
/// ```compile_fail,E0277
/// # use courier_core::interchange::Channel;
/// fn sync<T: Sync>() {}
/// sync::<Channel<std::rc::Rc<String>, u8>>();
/// ```
/// ```compile_fail,E0277
/// # use courier_core::interchange::Channel;
/// fn send<T: Send>() {}
/// send::<Channel<u8, std::rc::Rc<String>>>();
/// ```
/// ```compile_fail,E0277
/// # use courier_core::interchange::Requester;
/// fn send<T: Send>() {}
/// send::<Requester<'static, std::rc::Rc<String>, u8>>();
/// ```
/// ```compile_fail,E0277
/// # use courier_core::interchange::Requester;
/// fn sync<T: Sync>() {}
/// sync::<Requester<'static, u8, std::rc::Rc<String>>>();
/// ```
/// ```compile_fail,E0277
/// # use courier_core::interchange::Responder;
/// fn send<T: Send>() {}
/// send::<Responder<'static, std::rc::Rc<String>, u8>>();
/// ```
/// ```compile_fail,E0277
/// # use courier_core::interchange::Responder;
/// fn sync<T: Sync>() {}
/// sync::<Responder<'static, u8, std::rc::Rc<String>>>();
/// ```
pub struct Channel<Rq, Rp> {
    /// The buffer; who may touch it is decided by `word` (module docs).
    payload: UnsafeCell<Payload<Rq, Rp>>,
    /// State, payload and claim bits (module docs).
    word: AtomicU8,
}

// SAFETY: the buffer is only touched by the side that owns it in the current state, and
// ownership moves by Release/Acquire compare-and-swaps on `word`, so values move between
// threads (needs `Send`). The borrowing methods (`Responder::request`, `Requester::response`)
// take `&self` of a handle, and a handle is `Sync` when the channel is, so two threads can
// read the same value at once (needs `Sync`). Same bounds as the seed.
unsafe impl<Rq: Send + Sync, Rp: Send + Sync> Sync for Channel<Rq, Rp> {}

impl<Rq, Rp> Channel<Rq, Rp> {
    /// A new, idle, unclaimed channel.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::Channel;
    ///
    /// static IN_A_STATIC: Channel<[u8; 64], u32> = Channel::new();
    /// let on_the_stack: Channel<[u8; 64], u32> = Channel::new();
    /// assert!(IN_A_STATIC.split().is_some() && on_the_stack.split().is_some());
    /// ```
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            payload: UnsafeCell::new(Payload { empty: () }),
            word: AtomicU8::new(IDLE),
        }
    }

    /// A new, idle, unclaimed channel (not `const` under loom).
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            payload: UnsafeCell::new(Payload { empty: () }),
            word: AtomicU8::new(IDLE),
        }
    }

    /// Claims the requester end, or `None` if it is already claimed.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::Channel;
    ///
    /// let channel: Channel<u8, u8> = Channel::new();
    /// let rq = channel.requester().unwrap();
    /// assert!(channel.requester().is_none());
    /// drop(rq);
    /// assert!(channel.requester().is_some());
    /// ```
    pub fn requester(&self) -> Option<Requester<'_, Rq, Rp>> {
        self.claim(REQUESTER).then(|| Requester::new(self))
    }

    /// Claims the responder end, or `None` if it is already claimed.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::Channel;
    ///
    /// let channel: Channel<u8, u8> = Channel::new();
    /// let rp = channel.responder().unwrap();
    /// assert!(channel.responder().is_none());
    /// drop(rp);
    /// assert!(channel.responder().is_some());
    /// ```
    pub fn responder(&self) -> Option<Responder<'_, Rq, Rp>> {
        self.claim(RESPONDER).then(|| Responder::new(self))
    }

    /// Claims both ends at once, or `None` if either is claimed (then neither is taken).
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::Channel;
    ///
    /// let channel: Channel<u8, u8> = Channel::new();
    /// let rp = channel.responder().unwrap();
    /// assert!(channel.split().is_none());
    /// assert!(channel.requester().is_some(), "a failed split takes nothing");
    /// drop(rp);
    /// ```
    pub fn split(&self) -> Option<(Requester<'_, Rq, Rp>, Responder<'_, Rq, Rp>)> {
        self.claim(CLAIM_MASK)
            .then(|| (Requester::new(self), Responder::new(self)))
    }

    /// The current state.
    pub(super) fn state(&self) -> State {
        // Acquire: pairs with the Release of the transition that produced this state, so a
        // side that now owns the buffer without a transition of its own (the requester in
        // Responded) sees the other side's writes.
        State::from_word(self.word.load(Ordering::Acquire))
    }

    /// Sets the claim bits `bits` if none of them is set.
    fn claim(&self, bits: u8) -> bool {
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            if current & bits != 0 {
                return false;
            }
            // Acquire: pairs with the Release in `release` (or the reset store), so this
            // handle sees every buffer access of the previous holder. The seed used Relaxed
            // here, which let a re-claimed handle race with the previous one.
            match self.word.compare_exchange_weak(
                current,
                current | bits,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Gives up the claim bit `mine`; resets the channel if it was the last handle.
    pub(super) fn release(&self, mine: u8) {
        let other = CLAIM_MASK & !mine;
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            debug_assert!(current & mine != 0, "releasing an end that is not claimed");
            let (new, success) = if current & other != 0 {
                // The other end is held: just give up ours. Release: pairs with the
                // Acquire of the next claim of this end.
                (current & !mine, Ordering::Release)
            } else {
                // The last handle: take the other claim bit too, as a lock, so nobody
                // claims while we reset. Acquire: pairs with the Release with which the
                // other end gave up its claim, so its last accesses happen before the reset.
                (current | other, Ordering::Acquire)
            };
            match self
                .word
                .compare_exchange_weak(current, new, success, Ordering::Relaxed)
            {
                Ok(_) if current & other != 0 => return,
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        // SAFETY: both claim bits are ours, so no handle exists and none can be created: we
        // own the buffer, which holds what the payload bits of `current` say.
        unsafe { self.drop_payload(current & PAYLOAD_MASK) };
        // Release: pairs with the Acquire of the next claim, which then sees the empty buffer.
        self.word.store(IDLE, Ordering::Release);
    }

    /// Replaces the state and payload bits, keeping the claim bits, in one compare-and-swap
    /// loop. `step` gets the current state and payload bits and returns the new ones, or
    /// `None` to refuse. Returns the bits it replaced, or the state that refused.
    #[inline]
    pub(super) fn transition(&self, mut step: impl FnMut(u8) -> Option<u8>) -> Result<u8, State> {
        // Acquire on the load and on failure: the caller may act on a refusal only through
        // the returned state, so Relaxed would do for the buffer; Acquire keeps `state()`'s
        // guarantee for the state it reports.
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let Some(new) = step(current & !CLAIM_MASK) else {
                return Err(State::from_word(current));
            };
            debug_assert_eq!(new & CLAIM_MASK, 0);
            // AcqRel on success: Release hands the buffer (and what we wrote into it) to the
            // side that next moves the state; Acquire takes it from the side that last did.
            match self.word.compare_exchange_weak(
                current,
                (current & CLAIM_MASK) | new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(current & !CLAIM_MASK),
                Err(actual) => current = actual,
            }
        }
    }

    /// Moves the state from exactly `from` (state and payload bits) to `to`, keeping the
    /// claim bits.
    ///
    /// The hot path of every round: it guesses that both ends are claimed, the usual case,
    /// so a successful call is a single compare-and-swap with no load before it; a wrong
    /// guess costs one failed compare-and-swap, whose result seeds the loop.
    #[inline]
    pub(super) fn transition_from(&self, from: u8, to: u8) -> Result<(), State> {
        // AcqRel on success, as in `transition`. Acquire on failure: the state we report was
        // read with the same guarantee as `state()`.
        match self.word.compare_exchange(
            CLAIM_MASK | from,
            CLAIM_MASK | to,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Ok(()),
            Err(actual) => self.transition_from_slow(actual, from, to),
        }
    }

    /// `transition_from` when the guess about the claim bits was wrong.
    #[cold]
    fn transition_from_slow(&self, mut current: u8, from: u8, to: u8) -> Result<(), State> {
        while current & !CLAIM_MASK == from {
            // Orderings as in `transition_from`.
            match self.word.compare_exchange_weak(
                current,
                (current & CLAIM_MASK) | to,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
        Err(State::from_word(current))
    }

    /// Moves the state from `from` to `to` when the caller owns `from`: it has just seen the
    /// state and payload bits equal `from`, and only the caller can move them out of it
    /// (Idle and Responded for the requester). Then no compare is needed: one atomic xor
    /// flips the bits and leaves the claim bits, which the other end may be changing, alone.
    #[inline]
    pub(super) fn advance_owned(&self, from: u8, to: u8) {
        debug_assert_eq!(self.bits(), from);
        debug_assert_eq!((from ^ to) & CLAIM_MASK, 0);
        // AcqRel: Release publishes what the caller wrote into the buffer to the side that
        // takes it next (its Acquire); Acquire as in `transition`.
        self.word.fetch_xor(from ^ to, Ordering::AcqRel);
    }

    /// The state and payload bits, without the claim bits.
    #[inline]
    pub(super) fn bits(&self) -> u8 {
        // Acquire: as in `state()`.
        self.word.load(Ordering::Acquire) & !CLAIM_MASK
    }

    /// Sets the payload bits to `payload`, keeping the state (which the requester may move
    /// from BuildingResponse to Canceled meanwhile), and returns the old payload bits.
    /// Only the owner of the buffer calls this.
    pub(super) fn set_payload(&self, payload: u8) -> u8 {
        let old = self.transition(|bits| Some((bits & STATE_MASK) | payload));
        // The closure never refuses.
        old.map_or(0, |bits| bits & PAYLOAD_MASK)
    }

    /// Drops whatever the buffer holds according to `payload` bits.
    ///
    /// # Safety
    ///
    /// The caller owns the buffer, it holds what `payload` says, and the word no longer says
    /// so (or nobody can read the word's payload bits before they are reset).
    pub(super) unsafe fn drop_payload(&self, payload: u8) {
        self.payload.with_mut(|p| {
            if payload & HOLDS_REQUEST != 0 {
                // SAFETY: the caller guarantees a live request we own.
                unsafe { ManuallyDrop::drop(&mut (*p).request) }
            } else if payload & HOLDS_RESPONSE != 0 {
                // SAFETY: the caller guarantees a live response we own.
                unsafe { ManuallyDrop::drop(&mut (*p).response) }
            }
        });
    }

    /// Writes a request into the buffer (the old contents are not dropped).
    ///
    /// # Safety
    ///
    /// The caller owns the buffer and it holds no live value.
    pub(super) unsafe fn write_request(&self, request: Rq) {
        // SAFETY: the caller owns the buffer; writing a union field is a plain write.
        self.payload.with_mut(|p| unsafe {
            p.write(Payload {
                request: ManuallyDrop::new(request),
            })
        });
    }

    /// Writes a response into the buffer (the old contents are not dropped).
    ///
    /// # Safety
    ///
    /// The caller owns the buffer and it holds no live value.
    pub(super) unsafe fn write_response(&self, response: Rp) {
        // SAFETY: the caller owns the buffer; writing a union field is a plain write.
        self.payload.with_mut(|p| unsafe {
            p.write(Payload {
                response: ManuallyDrop::new(response),
            })
        });
    }

    /// Moves the request out of the buffer.
    ///
    /// # Safety
    ///
    /// The caller owns the buffer, it holds a live request, and afterwards nothing treats
    /// it as live (the word's payload bits say so).
    pub(super) unsafe fn read_request(&self) -> Rq {
        // SAFETY: the caller guarantees a live request that is read exactly once.
        self.payload
            .with_mut(|p| unsafe { ManuallyDrop::into_inner(ptr::read(&(*p).request)) })
    }

    /// Moves the response out of the buffer.
    ///
    /// # Safety
    ///
    /// As for [`read_request`](Self::read_request), for a response.
    pub(super) unsafe fn read_response(&self) -> Rp {
        // SAFETY: the caller guarantees a live response that is read exactly once.
        self.payload
            .with_mut(|p| unsafe { ManuallyDrop::into_inner(ptr::read(&(*p).response)) })
    }

    /// A shared borrow of the request.
    ///
    /// # Safety
    ///
    /// The buffer holds a live request and nothing writes or drops it for `'a`.
    pub(super) unsafe fn request_ref<'a>(&'a self) -> Ref<'a, Rq> {
        let access = const_ptr(&self.payload);
        // SAFETY: the caller guarantees a live request that stays put for 'a.
        let value: *const Rq = unsafe { &*access.deref().request };
        // SAFETY: as above; `access` keeps loom's record of the read for the guard's life.
        unsafe { Ref::new(value, access) }
    }

    /// A shared borrow of the response.
    ///
    /// # Safety
    ///
    /// The buffer holds a live response and nothing writes or drops it for `'a`.
    pub(super) unsafe fn response_ref<'a>(&'a self) -> Ref<'a, Rp> {
        let access = const_ptr(&self.payload);
        // SAFETY: the caller guarantees a live response that stays put for 'a.
        let value: *const Rp = unsafe { &*access.deref().response };
        // SAFETY: as above; `access` keeps loom's record of the read for the guard's life.
        unsafe { Ref::new(value, access) }
    }

    /// An exclusive borrow of the request.
    ///
    /// # Safety
    ///
    /// The buffer holds a live request and nothing else reads, writes or drops it for `'a`.
    pub(super) unsafe fn request_mut<'a>(&'a self) -> RefMut<'a, Rq> {
        let access = mut_ptr(&self.payload);
        // SAFETY: the caller guarantees a live request that only we touch for 'a.
        let value: *mut Rq = unsafe { &mut *access.deref().request };
        // SAFETY: as above; `access` keeps loom's record of the write for the guard's life.
        unsafe { RefMut::new(value, access) }
    }

    /// An exclusive borrow of the response.
    ///
    /// # Safety
    ///
    /// The buffer holds a live response and nothing else reads, writes or drops it for `'a`.
    pub(super) unsafe fn response_mut<'a>(&'a self) -> RefMut<'a, Rp> {
        let access = mut_ptr(&self.payload);
        // SAFETY: the caller guarantees a live response that only we touch for 'a.
        let value: *mut Rp = unsafe { &mut *access.deref().response };
        // SAFETY: as above; `access` keeps loom's record of the write for the guard's life.
        unsafe { RefMut::new(value, access) }
    }
}

impl<Rq, Rp> Default for Channel<Rq, Rp> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Rq, Rp> Drop for Channel<Rq, Rp> {
    fn drop(&mut self) {
        // Only reachable with a live payload if a handle was leaked (`mem::forget`).
        let payload = self.word.load(Ordering::Relaxed) & PAYLOAD_MASK;
        // SAFETY: `&mut self`: no handle borrows the channel, so we own the buffer, which
        // holds what the payload bits say.
        unsafe { self.drop_payload(payload) };
    }
}

impl<Rq, Rp> fmt::Debug for Channel<Rq, Rp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = self.word.load(Ordering::Relaxed);
        f.debug_struct("Channel")
            .field("state", &State::from_word(word))
            .field("requester_claimed", &(word & REQUESTER != 0))
            .field("responder_claimed", &(word & RESPONDER != 0))
            .finish_non_exhaustive()
    }
}

/// Keeps loom's record of a buffer access alive for as long as a guard (only under loom).
#[cfg(loom)]
trait Access {}
#[cfg(loom)]
impl<T: ?Sized> Access for T {}

/// A shared borrow of a request or response inside a channel's buffer.
///
/// It borrows the handle it came from, so the handle cannot move the channel on (take,
/// respond, acknowledge a cancel, be dropped) while the borrow lives. Dereferences to `T`.
pub struct Ref<'a, T> {
    /// The value.
    value: &'a T,
    /// Under loom, the tracked access.
    #[cfg(loom)]
    _access: std::boxed::Box<dyn Access + 'a>,
}

impl<'a, T> Ref<'a, T> {
    /// Wraps a borrow of the buffer.
    ///
    /// # Safety
    ///
    /// `value` points to a live `T` that nothing writes or drops for `'a`.
    #[allow(unused_variables)]
    unsafe fn new<U: 'a>(value: *const T, access: crate::sync::ConstPtr<U>) -> Self {
        Self {
            // SAFETY: forwarded to the caller.
            value: unsafe { &*value },
            #[cfg(loom)]
            _access: std::boxed::Box::new(access),
        }
    }
}

impl<T> Deref for Ref<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Ref<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.value, f)
    }
}

/// An exclusive borrow of a request or response being built inside a channel's buffer.
///
/// It borrows the handle it came from mutably. Dereferences (mutably) to `T`.
pub struct RefMut<'a, T> {
    /// The value.
    value: &'a mut T,
    /// Under loom, the tracked access.
    #[cfg(loom)]
    _access: std::boxed::Box<dyn Access + 'a>,
}

impl<'a, T> RefMut<'a, T> {
    /// Wraps an exclusive borrow of the buffer.
    ///
    /// # Safety
    ///
    /// `value` points to a live `T` that nothing else touches for `'a`.
    #[allow(unused_variables)]
    unsafe fn new<U: 'a>(value: *mut T, access: crate::sync::MutPtr<U>) -> Self {
        Self {
            // SAFETY: forwarded to the caller.
            value: unsafe { &mut *value },
            #[cfg(loom)]
            _access: std::boxed::Box::new(access),
        }
    }
}

impl<T> Deref for RefMut<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T> DerefMut for RefMut<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for RefMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.value, f)
    }
}

/// A pool of `N` channels, claimed one pair of handles at a time.
///
/// [`claim`](Self::claim) returns the ends of a channel of which neither end is held, or
/// `None` while every channel has at least one end held (and always for `N = 0`). A channel
/// comes back to the pool, Idle and empty, when both of its ends are dropped.
///
/// # Examples
///
/// ```
/// use courier_core::interchange::Interchange;
///
/// static POOL: Interchange<u64, u32, 10> = Interchange::new();
///
/// let mut held = [const { None }; 10];
/// for slot in held.iter_mut() {
///     *slot = Some(POOL.claim().unwrap());
/// }
/// assert!(POOL.claim().is_none());
/// held[3] = None;
/// assert!(POOL.claim().is_some());
/// ```
pub struct Interchange<Rq, Rp, const N: usize> {
    /// The channels.
    channels: [Channel<Rq, Rp>; N],
    /// Where the next claim starts looking: a hint to spread claims, never a correctness
    /// input (Relaxed).
    next: AtomicUsize,
}

impl<Rq, Rp, const N: usize> Interchange<Rq, Rp, N> {
    /// A pool of `N` idle, unclaimed channels.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            channels: [const { Channel::new() }; N],
            next: AtomicUsize::new(0),
        }
    }

    /// A pool of `N` idle, unclaimed channels (not `const` under loom).
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            channels: core::array::from_fn(|_| Channel::new()),
            next: AtomicUsize::new(0),
        }
    }

    /// Claims both ends of a free channel, or `None` if there is none.
    pub fn claim(&self) -> Option<(Requester<'_, Rq, Rp>, Responder<'_, Rq, Rp>)> {
        self.as_interchange_ref().claim()
    }

    /// The pool without its size in the type, for a `static` that does not name `N`.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::{Interchange, InterchangeRef};
    ///
    /// static POOL: Interchange<u8, u8, 2> = Interchange::new();
    /// static ANY_SIZE: InterchangeRef<'static, u8, u8> = POOL.as_interchange_ref();
    ///
    /// let a = ANY_SIZE.claim().unwrap();
    /// let b = ANY_SIZE.claim().unwrap();
    /// assert!(POOL.claim().is_none());
    /// # drop((a, b));
    /// ```
    pub const fn as_interchange_ref(&self) -> InterchangeRef<'_, Rq, Rp> {
        InterchangeRef {
            channels: &self.channels,
            next: &self.next,
        }
    }
}

impl<Rq, Rp, const N: usize> Default for Interchange<Rq, Rp, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Rq, Rp, const N: usize> fmt::Debug for Interchange<Rq, Rp, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interchange")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

/// An [`Interchange`] with the number of channels erased; see
/// [`Interchange::as_interchange_ref`].
pub struct InterchangeRef<'alloc, Rq, Rp> {
    /// The channels.
    channels: &'alloc [Channel<Rq, Rp>],
    /// The pool's claim hint.
    next: &'alloc AtomicUsize,
}

impl<'alloc, Rq, Rp> InterchangeRef<'alloc, Rq, Rp> {
    /// Claims both ends of a free channel, or `None` if there is none.
    pub fn claim(&self) -> Option<(Requester<'alloc, Rq, Rp>, Responder<'alloc, Rq, Rp>)> {
        let n = self.channels.len();
        if n == 0 {
            return None;
        }
        // Relaxed: the cursor only spreads claims over the pool; the claim itself is the
        // Acquire compare-and-swap in `split`.
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let channels: &'alloc [Channel<Rq, Rp>] = self.channels;
        channels[start..]
            .iter()
            .chain(&channels[..start])
            .find_map(Channel::split)
    }
}

impl<Rq, Rp> Clone for InterchangeRef<'_, Rq, Rp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Rq, Rp> Copy for InterchangeRef<'_, Rq, Rp> {}

impl<Rq, Rp> fmt::Debug for InterchangeRef<'_, Rq, Rp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InterchangeRef")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}
