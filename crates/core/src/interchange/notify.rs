//! Notification: callbacks with context, a waker cell for async executors, and `async fn`
//! helpers for a whole round on each end.
//!
//! Each end runs its own [`Callback`] right after it publishes something for the other end
//! (the seed's model): the requester after `request`/`send_request` and an early `cancel`,
//! the responder after `respond`/`send_response`. To await the other end, give each end a
//! callback that wakes the [`Waiter`] the other end awaits on:
//!
//! ```text
//!   requester task                                        responder task
//!   request_async(rq, &TO_REQUESTER) --request--> callback wakes TO_RESPONDER
//!                                                        serve_async(&TO_RESPONDER, f)
//!   TO_REQUESTER woken  <-- callback ---------------------- respond(f(rq))
//! ```
//!
//! # The waiter's state word
//!
//! A [`Waiter`] is one slot for a [`Waker`] and one [`AtomicU8`]:
//!
//! - `IDLE` (0): nobody is touching the slot; the registrant may take it.
//! - `REGISTERING` (1): the registrant owns the slot and is storing a waker.
//! - `WAKING` (2): a waker owns the slot and is taking the waker out. Combined with
//!   `REGISTERING` (3): a wake arrived while registering; the registrant, which still owns
//!   the slot, wakes instead.
//!
//! **Key invariant: the slot is touched only by whoever moved the word out of `IDLE`, so a
//! registration and a wake never touch it at once, and a wake is never lost: either the
//! waker takes the stored waker, or the registrant sees `WAKING` and wakes itself.**

use core::fmt;
use core::future::poll_fn;
use core::task::{Poll, Waker};

use super::{Requester, Responder, SendError, State};
use crate::sync::{AtomicU8, Ordering, UnsafeCell};

/// Something a handle can notify: implemented for closures and for [`Waiter`].
pub trait Notify: Sync {
    /// Called by the notifying end, in its own context (thread, interrupt, task).
    fn notify(&self);
}

impl<F: Fn() + Sync> Notify for F {
    fn notify(&self) {
        self()
    }
}

/// What a handle runs after it publishes something for the other end: nothing, a bare
/// `fn()` (the seed's callback), or a [`Notify`] with context, borrowed for the handle's
/// lifetime.
///
/// # Examples
///
/// ```
/// use courier_core::interchange::{Callback, Channel, Notify};
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// struct Doorbell(AtomicU32);
/// impl Notify for Doorbell {
///     fn notify(&self) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///     }
/// }
///
/// static BELL: Doorbell = Doorbell(AtomicU32::new(0));
/// static CHANNEL: Channel<u8, u8> = Channel::new();
///
/// let (mut rq, _rp) = CHANNEL.split().unwrap();
/// *rq.callback_mut() = Callback::new(&BELL);
/// rq.request(1).unwrap();
/// assert_eq!(BELL.0.load(Ordering::Relaxed), 1);
/// ```
#[derive(Clone, Copy)]
pub struct Callback<'a>(Kind<'a>);

/// The kinds of callback. "Nothing" is `Fn(nothing)`: two variants fit in two words (the
/// reference's null niche tells them apart), so a handle stays three words.
#[derive(Clone, Copy)]
enum Kind<'a> {
    /// A bare function.
    Fn(fn()),
    /// A notification with context.
    Notify(&'a dyn Notify),
}

impl<'a> Callback<'a> {
    /// A callback that does nothing (the default).
    pub const fn none() -> Self {
        Self(Kind::Fn(nothing))
    }

    /// A callback that calls `f` (the seed's `fn()` callback).
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::{Callback, Channel};
    ///
    /// fn pend_usb_interrupt() {}
    ///
    /// let channel: Channel<u8, u8> = Channel::new();
    /// let (_rq, mut rp) = channel.split().unwrap();
    /// *rp.callback_mut() = Callback::from_fn(pend_usb_interrupt);
    /// ```
    pub const fn from_fn(f: fn()) -> Self {
        Self(Kind::Fn(f))
    }

    /// A callback that calls `target.notify()`: a closure borrowed for the handle's
    /// lifetime, a [`Waiter`], or any context implementing [`Notify`].
    pub const fn new(target: &'a dyn Notify) -> Self {
        Self(Kind::Notify(target))
    }

    /// Runs the callback.
    #[inline]
    pub fn call(&self) {
        match self.0 {
            Kind::Fn(f) => f(),
            Kind::Notify(target) => target.notify(),
        }
    }
}

impl Default for Callback<'_> {
    fn default() -> Self {
        Self::none()
    }
}

impl From<fn()> for Callback<'_> {
    fn from(f: fn()) -> Self {
        Self::from_fn(f)
    }
}

impl fmt::Debug for Callback<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Kind::Fn(_) => "Callback::Fn",
            Kind::Notify(_) => "Callback::Notify",
        })
    }
}

/// The callback that does nothing.
fn nothing() {}

/// Nobody touches the slot.
const IDLE: u8 = 0;
/// The registrant owns the slot.
const REGISTERING: u8 = 0b01;
/// A waker owns the slot (or, with `REGISTERING`, a wake is pending for the registrant).
const WAKING: u8 = 0b10;

/// One task waiting for a channel, woken through [`Notify`] (an atomic waker: no heap,
/// `const fn new`, usable in a `static`).
///
/// # Examples
///
/// ```
/// use courier_core::interchange::Waiter;
/// use std::task::{Context, Poll};
///
/// static WAITER: Waiter = Waiter::new();
///
/// let waker = futures::task::noop_waker();
/// WAITER.register(&waker);
/// WAITER.wake(); // wakes `waker` once
/// WAITER.wake(); // nothing registered: nothing to do
/// ```
pub struct Waiter {
    /// `IDLE`, `REGISTERING`, `WAKING` (module docs).
    state: AtomicU8,
    /// The registered waker; owned by whoever moved `state` out of `IDLE`.
    waker: UnsafeCell<Option<Waker>>,
}

// SAFETY: the waker slot is only touched by the side that moved `state` out of `IDLE`
// (Acquire), and handed back with Release; `Waker` is `Send + Sync`.
unsafe impl Sync for Waiter {}

impl Waiter {
    /// A waiter with no waker registered.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            state: AtomicU8::new(IDLE),
            waker: UnsafeCell::new(None),
        }
    }

    /// A waiter with no waker registered (not `const` under loom).
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            state: AtomicU8::new(IDLE),
            waker: UnsafeCell::new(None),
        }
    }

    /// Registers `waker` to be woken by the next [`wake`](Self::wake), replacing the one
    /// registered before. If a wake races with the registration, `waker` is woken at once.
    pub fn register(&self, waker: &Waker) {
        // Acquire: pairs with the Release that last returned the slot to IDLE, so the slot
        // is ours to write.
        match self
            .state
            .compare_exchange(IDLE, REGISTERING, Ordering::Acquire, Ordering::Acquire)
        {
            Ok(_) => {
                self.waker.with_mut(|slot| {
                    // SAFETY: REGISTERING: we own the slot until we leave that state.
                    let slot = unsafe { &mut *slot };
                    if !slot.as_ref().is_some_and(|old| old.will_wake(waker)) {
                        *slot = Some(waker.clone());
                    }
                });
                // AcqRel: Release hands the slot (with our waker) to the next `wake`;
                // Acquire on failure pairs with the waker's `fetch_or`.
                match self.state.compare_exchange(
                    REGISTERING,
                    IDLE,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {}
                    Err(_) => {
                        // A wake came in while we registered: it left the slot to us.
                        // SAFETY: REGISTERING | WAKING: we still own the slot.
                        let woken = self.waker.with_mut(|slot| unsafe { (*slot).take() });
                        // Release: hands the slot back (pairs with the next Acquire).
                        self.state.swap(IDLE, Ordering::AcqRel);
                        if let Some(woken) = woken {
                            woken.wake();
                        }
                    }
                }
            }
            // A wake is taking the slot right now: it may miss our waker, so wake it here.
            Err(WAKING) => waker.wake_by_ref(),
            // Another registration is in progress (two tasks on one waiter): it wins.
            Err(_) => {}
        }
    }

    /// Wakes the registered waker, if any (and unregisters it).
    pub fn wake(&self) {
        if let Some(waker) = self.take() {
            waker.wake();
        }
    }

    /// Takes the registered waker out, if any.
    fn take(&self) -> Option<Waker> {
        // AcqRel: Acquire pairs with the registrant's Release, so its waker is visible;
        // Release lets a concurrent registrant see WAKING.
        match self.state.fetch_or(WAKING, Ordering::AcqRel) {
            IDLE => {
                // SAFETY: we moved IDLE to WAKING: we own the slot.
                let waker = self.waker.with_mut(|slot| unsafe { (*slot).take() });
                // Release: hands the slot back to the next registrant.
                self.state.fetch_and(!WAKING, Ordering::Release);
                waker
            }
            // A registration is in progress (it will see WAKING and wake) or another wake
            // is taking the waker.
            _ => None,
        }
    }
}

impl Default for Waiter {
    fn default() -> Self {
        Self::new()
    }
}

impl Notify for Waiter {
    fn notify(&self) {
        self.wake();
    }
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter").finish_non_exhaustive()
    }
}

/// Cancels the request on drop unless disarmed: makes `request_async` cancel-safe.
struct CancelOnDrop<'r, 'i, Rq, Rp>(Option<&'r mut Requester<'i, Rq, Rp>>);

impl<Rq, Rp> Drop for CancelOnDrop<'_, '_, Rq, Rp> {
    fn drop(&mut self) {
        if let Some(requester) = self.0.take() {
            // Either the request is recalled (and dropped here), or the responder is
            // signalled; an error means the response arrived, and it stays to be taken.
            let _ = requester.cancel();
        }
    }
}

impl<Rq, Rp> Requester<'_, Rq, Rp> {
    /// Waits until the response is there and takes it.
    ///
    /// `waiter` must be woken by the responder's callback (see the module docs). Cancel-safe:
    /// dropping the future leaves the channel as it is.
    pub async fn take_response_async(&mut self, waiter: &Waiter) -> Rp {
        poll_fn(|cx| {
            if let Some(response) = self.take_response() {
                return Poll::Ready(response);
            }
            waiter.register(cx.waker());
            // Checked again after registering, so a response published in between is not
            // missed.
            match self.take_response() {
                Some(response) => Poll::Ready(response),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// A whole round: sends `request`, then waits for the response and takes it.
    ///
    /// `waiter` must be woken by the responder's callback (see the module docs).
    /// Cancel-safe: dropping the future before it completes cancels the request (early:
    /// the request is dropped; late: the responder sees [`Responder::is_canceled`]).
    ///
    /// # Errors
    ///
    /// If the request cannot be sent (the channel is not Idle), gives it back with the
    /// state.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::{Callback, Channel, Waiter};
    ///
    /// static CHANNEL: Channel<u32, u32> = Channel::new();
    /// static TO_REQUESTER: Waiter = Waiter::new();
    /// static TO_RESPONDER: Waiter = Waiter::new();
    ///
    /// let (mut rq, mut rp) = CHANNEL.split().unwrap();
    /// *rq.callback_mut() = Callback::new(&TO_RESPONDER);
    /// *rp.callback_mut() = Callback::new(&TO_REQUESTER);
    ///
    /// let server = std::thread::spawn(move || {
    ///     pollster::block_on(rp.serve_async(&TO_RESPONDER, |n| n + 1)).unwrap();
    /// });
    /// let answer = pollster::block_on(rq.request_async(41, &TO_REQUESTER)).unwrap();
    /// assert_eq!(answer, 42);
    /// server.join().unwrap();
    /// ```
    pub async fn request_async(
        &mut self,
        request: Rq,
        waiter: &Waiter,
    ) -> Result<Rp, SendError<Rq>> {
        self.request(request)?;
        let mut guard = CancelOnDrop(Some(self));
        let requester = guard
            .0
            .as_deref_mut()
            .expect("armed until the round completes");
        let response = requester.take_response_async(waiter).await;
        guard.0 = None;
        Ok(response)
    }
}

impl<Rq, Rp> Responder<'_, Rq, Rp> {
    /// Waits until a request is there and takes it. A cancel left unacknowledged from an
    /// earlier round is acknowledged on the way.
    ///
    /// `waiter` must be woken by the requester's callback (see the module docs).
    /// Cancel-safe: dropping the future leaves the request in the channel.
    pub async fn take_request_async(&mut self, waiter: &Waiter) -> Rq {
        poll_fn(|cx| {
            for registered in [false, true] {
                if self.is_canceled() {
                    let _ = self.acknowledge_cancel();
                }
                if let Some(request) = self.take_request() {
                    return Poll::Ready(request);
                }
                if !registered {
                    // Checked again after registering, so a request published in between
                    // is not missed.
                    waiter.register(cx.waker());
                }
            }
            Poll::Pending
        })
        .await
    }

    /// A whole round: waits for a request, answers it with `handler`, sends the response.
    ///
    /// `waiter` must be woken by the requester's callback (see the module docs).
    /// Cancel-safe while waiting (the request stays in the channel).
    ///
    /// # Errors
    ///
    /// If the requester canceled while `handler` ran, the cancel is acknowledged and the
    /// response is given back with [`State::Canceled`].
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::{Channel, Waiter};
    /// use futures::FutureExt;
    ///
    /// let waiter = Waiter::new();
    /// let channel: Channel<u8, u16> = Channel::new();
    /// let (mut rq, mut rp) = channel.split().unwrap();
    /// rq.request(4).unwrap();
    /// let served = rp.serve_async(&waiter, |n| u16::from(n) * 100).now_or_never();
    /// assert_eq!(served, Some(Ok(())));
    /// assert_eq!(rq.take_response(), Some(400));
    /// ```
    pub async fn serve_async(
        &mut self,
        waiter: &Waiter,
        handler: impl FnOnce(Rq) -> Rp,
    ) -> Result<(), SendError<Rp>> {
        let request = self.take_request_async(waiter).await;
        let response = handler(request);
        self.respond(response).inspect_err(|refused| {
            if refused.state() == State::Canceled {
                let _ = self.acknowledge_cancel();
            }
        })
    }
}
