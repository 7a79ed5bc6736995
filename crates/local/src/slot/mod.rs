//! The call slot: one request, its reply, and the state word that hands them between a
//! requester and a server. Slots are recycled through the channel's [`Pool`] (`pool.rs`), so
//! a call in steady state allocates nothing.
//!
//! # State machine
//!
//! The state word is a phase plus flags. `QUEUED` is the absence of `TAKEN` and `DONE`.
//!
//! ```text
//!            requester                         server (consumer, then ReplyContext)
//!            ---------                         ------
//!   init:    write request, state = 0 (or ONE_WAY), push      (push is the Release)
//!
//!   QUEUED ──(server pops: fetch_or +TAKEN)─────────────────────▶ TAKEN
//!     │                                                            │
//!     │ requester cancels: CAS +WITHDRAWN +CLIENT_GONE             │ reply / fail / drop:
//!     ▼  (request handed back; the server releases the            │ write result, fetch_or DONE
//!   WITHDRAWN  slot when it pops it and sees the flag)             ▼
//!                                                                 DONE ──(requester reads
//!   TAKEN ──(requester cancels: CAS +CLIENT_GONE)──▶ TAKEN|CLIENT_GONE      result, releases)
//!                     server sees is_canceled(); its reply/drop finds CLIENT_GONE and releases
//!
//!   QUEUED or TAKEN ──(requester detaches: CAS +CLIENT_GONE +DETACHED)──▶ the call goes on:
//!                     the server takes it as usual, is_canceled() stays false, and its
//!                     reply/drop finds CLIENT_GONE and releases (DONE first: the requester
//!                     reads and drops the result itself)
//! ```
//!
//! Ownership of each part in each phase:
//!
//! | part      | QUEUED                   | TAKEN              | DONE                      |
//! |-----------|--------------------------|--------------------|---------------------------|
//! | `request` | queue (read-only; whichever of TAKEN and WITHDRAWN is set first decides who moves it out) | moved out | moved out |
//! | `reply`   | server side (unwritten)  | server side        | requester                 |
//! | `waiter`  | requester while `WAITER` is clear; the completer while it is set      | | |
//!
//! `WAITER` says a thread or task waits in the `waiter` cell. The completer (the side that
//! sets `DONE`) takes the waiter out, clears `WAITER`, then wakes it, and never touches the
//! slot again; so the requester treats a slot as finished only when `DONE` is set **and**
//! `WAITER` is clear. A requester that wants to change its waiter first clears `WAITER` with a
//! CAS that fails once `DONE` is set.
//!
//! **Exactly one side releases a slot, and only after the other side's last access
//! happens-before it**: the requester after it read a `DONE` result; the completer when it
//! finds `CLIENT_GONE`; the consumer when it pops a `WITHDRAWN` or a one-way slot.

mod pool;

pub(crate) use pool::Pool;

use crate::event::Waiter;
use crate::queue::Linked;
use crate::sync::{spin_loop, Arc, AtomicPtr, AtomicUsize, Ordering, UnsafeCell};
use courier_core::error::Error;
#[cfg(not(loom))]
use courier_core::pace::Pace;
use courier_core::quiet::Quiet;
use std::mem::MaybeUninit;
use std::ptr;
use std::task::{Context, Poll};
use std::time::Instant;

/// The server took the request.
const TAKEN: usize = 1 << 0;
/// The result is written (reply, application error, `NoReply` or `ServerDisappeared`).
const DONE: usize = 1 << 1;
/// The requester canceled or stopped waiting.
const CLIENT_GONE: usize = 1 << 2;
/// A waiter is stored in the `waiter` cell.
const WAITER: usize = 1 << 3;
/// The requester took the request back before the server took it.
const WITHDRAWN: usize = 1 << 4;
/// A one-way message: no requester waits, nothing is owed.
const ONE_WAY: usize = 1 << 5;
/// With `CLIENT_GONE`: the requester stopped waiting without canceling (`WaitReply::detach`),
/// so the server is not told the call was canceled.
const DETACHED: usize = 1 << 6;
/// The channel's lane slot holds a request for the consumer to take (see "The lane" in
/// `chan`); not set on a queued slot.
const POSTED: usize = 1 << 7;

/// The result a requester receives.
pub(crate) type Outcome<Rp, E> = Result<Rp, Error<E>>;

/// The part of a slot that does not depend on the request type, so that a `ReplyContext`
/// needs only the reply and error types (as in `ump`).
#[repr(C)]
pub(crate) struct SlotCore<Rp, E> {
    state: AtomicUsize,
    reply: UnsafeCell<MaybeUninit<Outcome<Rp, E>>>,
    waiter: UnsafeCell<Option<Waiter>>,
    /// Recycles the whole slot (it knows the request type).
    release: unsafe fn(*mut SlotCore<Rp, E>),
}

/// A call slot, one per call in flight.
///
/// Laid out for the round trip between two cores: the parts both sides touch on every call
/// (`next` when the slot is queued and popped, the request, the state word and the reply) come
/// first, and the slot starts a cache line, so a small call moves one line to the server and
/// back instead of two. The waiter (touched only when the requester sleeps), the release
/// function (only when the server releases) and the pool (only the requester's side) follow.
/// A `ReplyContext` holds a pointer to `core`; [`Slot::CORE_AT`] turns it back into the slot.
#[repr(C, align(64))]
pub(crate) struct Slot<Rq, Rp, E> {
    next: AtomicPtr<Slot<Rq, Rp, E>>,
    request: UnsafeCell<MaybeUninit<Rq>>,
    core: SlotCore<Rp, E>,
    /// The pool the slot returns to, so that it outlives the slot: set by the slot's first
    /// call and kept from then on (see `pool.rs`).
    pool: UnsafeCell<Option<Arc<Pool<Rq, Rp, E>>>>,
    /// How a blocking requester's first look is timed (see [`Quiet`]); the requester's alone,
    /// like `pool`, and kept from one use of the slot to the next.
    quiet: UnsafeCell<Quiet>,
    /// How long its recent waits that parked took, so that a long call is paced (see
    /// [`Slot::wait_paced`]); only the requester uses it. Not under loom: nothing is timed
    /// there.
    #[cfg(not(loom))]
    pace: Pace,
}

impl<Rq, Rp, E> Linked for Slot<Rq, Rp, E> {
    fn next(&self) -> &AtomicPtr<Self> {
        &self.next
    }
}

/// What the consumer found in a popped slot.
pub(crate) enum Taken<Rq> {
    /// The request; the slot now belongs to the server side (or is already released for a
    /// one-way message).
    Request { request: Rq, one_way: bool },
    /// The requester withdrew it; the slot has been released.
    Withdrawn,
}

/// The result of [`Slot::cancel`] (see `CancelOutcome` for the public form).
pub(crate) enum Cancel<Rq, Rp, E> {
    /// The request, and the pool whose room it held (the caller gives it back).
    Withdrawn(Rq, Arc<Pool<Rq, Rp, E>>),
    Signaled,
    Completed(Outcome<Rp, E>),
}

impl<Rq, Rp, E> Slot<Rq, Rp, E> {
    /// Where `core` lies in the slot, in bytes.
    const CORE_AT: usize = std::mem::offset_of!(Slot<Rq, Rp, E>, core);

    /// A new, unused slot.
    pub(crate) fn new_boxed() -> Box<Self> {
        Box::new(Self {
            core: SlotCore {
                state: AtomicUsize::new(0),
                reply: UnsafeCell::new(MaybeUninit::uninit()),
                waiter: UnsafeCell::new(None),
                release: release_erased::<Rq, Rp, E>,
            },
            next: AtomicPtr::new(ptr::null_mut()),
            request: UnsafeCell::new(MaybeUninit::uninit()),
            pool: UnsafeCell::new(None),
            quiet: UnsafeCell::new(Quiet::default()),
            #[cfg(not(loom))]
            pace: Pace::default(),
        })
    }

    /// Fills a free slot with a request before it is pushed. A fresh slot takes an `Arc` of
    /// `pool`; one taken from the pool already holds it.
    ///
    /// # Safety
    ///
    /// `this` is a free slot owned by the caller, fresh or taken from `pool`.
    pub(crate) unsafe fn fill(
        this: *mut Self,
        request: Rq,
        one_way: bool,
        pool: &Arc<Pool<Rq, Rp, E>>,
    ) {
        // SAFETY: the caller owns the free slot; nobody else can reach it until it is pushed.
        unsafe {
            let s = &*this;
            // Relaxed: the queue push (Release) publishes this to the consumer.
            s.core
                .state
                .store(if one_way { ONE_WAY } else { 0 }, Ordering::Relaxed);
            s.request.with_mut(|p| (*p).write(request));
            s.pool.with_mut(|p| {
                let held = &mut *p;
                debug_assert!(held.as_ref().is_none_or(|h| Arc::ptr_eq(h, pool)));
                if held.is_none() {
                    *held = Some(Arc::clone(pool));
                }
            });
        }
    }

    /// Fills the channel's lane slot with a request and posts it: the consumer sees it at its
    /// next look ([`Slot::take_posted`]).
    ///
    /// # Safety
    ///
    /// `this` is the channel's lane slot, the caller holds the lane, and the lane's last call
    /// is over (its result read).
    pub(crate) unsafe fn post(this: *mut Self, request: Rq, pool: &Arc<Pool<Rq, Rp, E>>) {
        // SAFETY: the caller holds the lane; the consumer reads the request only once POSTED
        // is set, and nobody else touches the slot between calls.
        unsafe {
            let s = &*this;
            s.request.with_mut(|p| (*p).write(request));
            s.pool.with_mut(|p| {
                if (*p).is_none() {
                    *p = Some(Arc::clone(pool));
                }
            });
            // Release: publishes the request (and the pool) to the consumer's Acquire look.
            // A SeqCst RMW, as a push is: the notifier's half of the wait lists' handshake
            // (see `event`) and the client's half of the shutdown pairing (see `chan`). (On
            // x86 a SeqCst store is the same locked exchange.)
            s.core.state.swap(POSTED, Ordering::SeqCst);
        }
    }

    /// Whether the lane slot holds a posted request not yet taken. Any thread may ask.
    pub(crate) fn is_posted(&self) -> bool {
        // SeqCst: a waiter's look after it registered (see `event`).
        self.core.state.load(Ordering::SeqCst) & (POSTED | TAKEN) == POSTED
    }

    /// Consumer side: takes the request posted in the lane slot. The slot then belongs to
    /// the server side until the result is written, as a popped one does.
    ///
    /// # Safety
    ///
    /// `this` is the channel's lane slot, the caller holds the consumer role, and
    /// [`Slot::is_posted`] said `true` since it took the role (only the consumer sets TAKEN
    /// on a posted slot, and a lane call is never withdrawn, so it is still posted).
    pub(crate) unsafe fn take_posted(this: *mut Self) -> Rq {
        // SAFETY: the lane slot lives as long as the channel, which the caller borrows.
        let s = unsafe { &*this };
        // AcqRel as in `take_request` (a requester that looks at the state sees the call
        // taken).
        s.core.state.fetch_or(TAKEN, Ordering::AcqRel);
        // SAFETY: POSTED was set after the request was written (Release, acquired by the
        // caller's SeqCst load in `is_posted`), and TAKEN makes it ours alone.
        unsafe { s.request.with(|p| ptr::read(p).assume_init()) }
    }

    /// Requester side: the result of a lane call, leaving the slot for the lane's next call
    /// (it is not released: the channel keeps it).
    ///
    /// # Safety
    ///
    /// `this` is the lane slot of a call the caller made, and `is_ready()` returned `true`.
    pub(crate) unsafe fn take_lane_result(this: *mut Self) -> Outcome<Rp, E> {
        // SAFETY: DONE with WAITER clear: the completer wrote the result and is finished with
        // the slot (see `take_result`); the waiter cell is ours again.
        unsafe {
            let s = &*this;
            let r = s.core.reply.with(|p| ptr::read(p).assume_init());
            s.core.waiter.with_mut(|p| *p = None);
            r
        }
    }

    /// The type-erased pointer a `ReplyContext` keeps.
    pub(crate) fn core_ptr(this: *mut Self) -> *mut SlotCore<Rp, E> {
        // In bounds: `core` is a field of the slot; the pointer keeps the slot's provenance,
        // so `release_erased` can step back to the slot.
        this.wrapping_byte_add(Self::CORE_AT).cast()
    }

    /// Consumer side: takes the request out of a popped slot, unless it was withdrawn.
    ///
    /// # Safety
    ///
    /// `this` was just popped from the queue by the caller, who holds the consumer role.
    pub(crate) unsafe fn take_request(this: *mut Self) -> Taken<Rq> {
        // SAFETY: a popped slot is valid until one side releases it; neither side releases
        // it before the CAS below decides who owns the request.
        let s = unsafe { &*this };
        // One RMW, no read before it (a read would fetch the line shared, the write fetch it
        // again exclusive). Acquire: pairs with the requester's CAS that set WITHDRAWN, so its
        // last read of the request happens-before we release the slot; Release: a requester
        // whose cancel CAS then fails on TAKEN sees the request as ours.
        let cur = s.core.state.fetch_or(TAKEN, Ordering::AcqRel);
        if cur & WITHDRAWN != 0 {
            // SAFETY: the requester gave the slot up when it withdrew; we are last. The TAKEN
            // we set on it means nothing: nobody reads the state of a released slot, and
            // `fill` rewrites it.
            unsafe { Self::release(this) };
            return Taken::Withdrawn;
        }
        // SAFETY: we set TAKEN before any withdrawal, so the requester can no longer withdraw
        // (its CAS fails): the request is ours to move out, and was initialised before the
        // push that published the slot.
        let request = unsafe { s.request.with(|p| ptr::read(p).assume_init()) };
        let one_way = cur & ONE_WAY != 0;
        if one_way {
            // SAFETY: nobody waits on a one-way slot; we are its last user.
            unsafe { Self::release(this) };
        }
        Taken::Request { request, one_way }
    }

    /// Requester side: whether the result is ready to read.
    pub(crate) fn is_ready(&self) -> bool {
        is_finished(self.core.state.load(Ordering::Acquire))
    }

    /// Requester side: blocks until the result is ready, or until `deadline`.
    /// Returns `false` on timeout; the requester still owns its share of the slot.
    pub(crate) fn wait_ready(&self, deadline: Option<Instant>) -> bool {
        // SAFETY: `pool` is set by the slot's first `fill` and kept; we hold the requester's
        // share, so the slot, and the pool with it, live until we return.
        let pool = unsafe { self.pool.with(|p| (*p).as_ref().map(Arc::as_ptr)) };
        let pool = pool.expect("a slot in use holds its pool");
        // SAFETY: as above: the pool outlives this wait.
        let waits = unsafe { &(*pool).waits };
        // A long call (the last two waits parked for long, see `Pace`): asleep through most
        // of it, then spinning for its end, so that the answer costs no wake-up after it.
        // Where that does not pay (`Waits::paces_here`), it parks at once: its spin and its
        // yields would only lose the CPU to another thread for a time slice now and then (with
        // one core busy, a 300 µs call's p99 was 1.3-1.5x ump's, which parks at once); for
        // want of a CPU each, it parks on its server's CPU (`Waits::join_server`). A
        // busy-polling client waits as it asked, whatever its calls' length.
        #[cfg(not(loom))]
        if let Some((sleep, spin)) = self.pace.ahead().filter(|_| !waits.client_polls()) {
            let began = Instant::now();
            let done = match waits.paces_here() {
                true => match self.wait_paced(began, sleep, spin, deadline) {
                    Some(done) => done,
                    None => self.park_until_ready(deadline),
                },
                false => {
                    #[cfg(target_os = "linux")]
                    let _ = waits.join_server();
                    self.park_until_ready(deadline)
                }
            };
            self.pace.record(done.then(|| began.elapsed()), false);
            return done;
        }
        let mut backoff = crate::sync::Backoff::on(crate::sync::Side::Client(waits), deadline);
        // SAFETY: `quiet` is the requester's, and we hold the requester's share.
        let mut quiet = unsafe { self.quiet.with(|q| *q) };
        let spun = quiet.next();
        // Under loom every hint is a scheduling point, and nothing is timed.
        #[cfg(not(loom))]
        for _ in 0..spun {
            spin_loop();
        }
        let mut looks = 0;
        loop {
            looks += 1;
            if self.is_ready() {
                quiet.learn(spun, looks, backoff.only_spun());
                // SAFETY: as above.
                unsafe { self.quiet.with_mut(|q| *q = quiet) };
                // Answered without a park: not a long call.
                #[cfg(not(loom))]
                self.pace.forget();
                return true;
            }
            if !backoff.snooze() {
                break;
            }
        }
        quiet.learn(spun, looks, false);
        // SAFETY: as above.
        unsafe { self.quiet.with_mut(|q| *q = quiet) };
        #[cfg(not(loom))]
        let parked = Instant::now();
        let done = self.park_until_ready(deadline);
        // The park's length (the spin before it, a few microseconds, is left out: a paced
        // sleep then ends that much sooner).
        #[cfg(not(loom))]
        self.pace.record(done.then(|| parked.elapsed()), false);
        done
    }

    /// Requester side, a long call (see [`Pace`]) whose wait `began`: registered as the
    /// waiter, asleep until `sleep` has passed (woken early by the answer), with a tight timer
    /// slack so that the sleep ends on time; then, the waiter taken back, spinning for at most
    /// `spin`. Returns whether the result is ready (`Some(false)`: `deadline` passed), or
    /// `None` if the spin ended without it (the caller parks then).
    #[cfg(not(loom))]
    fn wait_paced(
        &self,
        began: Instant,
        sleep: std::time::Duration,
        spin: std::time::Duration,
        deadline: Option<Instant>,
    ) -> Option<bool> {
        let wake_at = deadline.map_or(began + sleep, |d| d.min(began + sleep));
        if !self.set_waiter(Waiter::thread()) {
            // DONE came first, so the completer saw no waiter and is finished.
            return Some(true);
        }
        {
            #[cfg(target_os = "linux")]
            let _tight = courier_core::placement::TightTimers::tighten();
            while !self.is_ready() && Instant::now() < wake_at {
                crate::sync::park(Some(wake_at));
            }
        }
        if !self.take_waiter_back() {
            return Some(true);
        }
        if self.is_ready() {
            return Some(true);
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Some(false);
        }
        let until = deadline.map_or(now + spin, |d| d.min(now + spin));
        let mut looks = 0u32;
        loop {
            if self.is_ready() {
                return Some(true);
            }
            looks = looks.wrapping_add(1);
            if looks % crate::sync::CLOCK_EVERY == 0 && Instant::now() >= until {
                return None;
            }
            spin_loop();
        }
    }

    /// Requester side: parks, registered as the waiter, until the result is ready or
    /// `deadline` passes. Returns `false` on timeout; the requester still owns its share of
    /// the slot.
    fn park_until_ready(&self, deadline: Option<Instant>) -> bool {
        if !self.set_waiter(Waiter::thread()) {
            // DONE came first, so the completer saw no waiter and is finished.
            return true;
        }
        loop {
            if self.is_ready() {
                return true;
            }
            crate::sync::park(deadline);
            if !self.is_ready() && deadline.is_some_and(|d| Instant::now() >= d) {
                // Timed out, unless the result came before the waiter was taken back.
                return !self.take_waiter_back();
            }
        }
    }

    /// Requester side, registered as the waiter: takes the waiter back. Returns `true` if it
    /// was still ours (no result yet), or `false` once the result is ready: `DONE` was set
    /// before we could take the waiter back, so the completer clears `WAITER` and unparks us,
    /// which this waits for.
    fn take_waiter_back(&self) -> bool {
        if self.clear_waiter() {
            return true;
        }
        while !self.is_ready() {
            crate::sync::park(None);
        }
        false
    }

    /// Requester side: the async form of [`Slot::wait_ready`].
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let cur = self.core.state.load(Ordering::Acquire);
        if is_finished(cur) {
            return Poll::Ready(());
        }
        if cur & DONE != 0 || (cur & WAITER != 0 && !self.clear_waiter()) {
            // The completer is between setting DONE and clearing WAITER, a few instructions.
            // It will wake the waker of an earlier poll, which may belong to another task if
            // this future has moved: wait for it here rather than rely on that waker.
            self.spin_until_finished();
            return Poll::Ready(());
        }
        // A waker from an earlier poll, if any, has been taken back by `clear_waiter` above.
        if self.set_waiter(Waiter::Task(cx.waker().clone())) {
            Poll::Pending
        } else {
            // DONE came first, so the completer saw no waiter and is finished.
            Poll::Ready(())
        }
    }

    /// Stores `waiter` and sets `WAITER`. Returns `false` if the result arrived first.
    fn set_waiter(&self, waiter: Waiter) -> bool {
        // SAFETY: WAITER is clear (we never leave it set when we return to the caller without
        // a result), so the requester owns the cell.
        self.core.waiter.with_mut(|p| unsafe { *p = Some(waiter) });
        // Release: publishes the waiter to the completer, whose fetch_or(DONE) is AcqRel.
        self.update_unless_done(|s| s | WAITER, Ordering::Release)
    }

    /// Clears `WAITER` before the result arrives. Returns `false` if `DONE` was set first (the
    /// completer then owns the waiter and clears the flag itself).
    fn clear_waiter(&self) -> bool {
        // Acquire: the cell is ours again after this; nobody else wrote it meanwhile.
        self.update_unless_done(|s| s & !WAITER, Ordering::Acquire)
    }

    /// Replaces the state `s` with `f(s)` unless `DONE` is set. Returns `false` on `DONE`.
    ///
    /// Finding `DONE` is an Acquire (load and failed CAS): a caller that then reads the
    /// result synchronises with the completer's AcqRel `fetch_or`.
    fn update_unless_done(&self, f: impl Fn(usize) -> usize, success: Ordering) -> bool {
        let mut cur = self.core.state.load(Ordering::Acquire);
        loop {
            if cur & DONE != 0 {
                return false;
            }
            match self
                .core
                .state
                .compare_exchange_weak(cur, f(cur), success, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// `DONE` is set; the completer is between setting it and clearing `WAITER`, a handful of
    /// instructions with no blocking call in between. `cancel` (which may run in a destructor)
    /// and `poll_ready` (whose stored waker may be stale) wait this way.
    fn spin_until_finished(&self) {
        while !self.is_ready() {
            spin_loop();
        }
    }

    /// Requester side: reads the result and releases the slot.
    ///
    /// # Safety
    ///
    /// `is_ready()` returned `true` and the requester has not given up its share.
    pub(crate) unsafe fn take_result(this: *mut Self) -> Outcome<Rp, E> {
        // SAFETY: DONE with WAITER clear: the completer wrote the result (published by its
        // AcqRel fetch_or / Release fetch_and, acquired by `is_ready`) and is finished with
        // the slot; we are its last user.
        unsafe {
            let r = (*this).core.reply.with(|p| ptr::read(p).assume_init());
            Self::release(this);
            r
        }
    }

    /// Requester side: gives up the call. Withdraws the request if the server has not taken
    /// it, tells the server otherwise, or returns the result if it is already there.
    ///
    /// # Safety
    ///
    /// The requester has not given up its share of the slot; after this call it has none.
    pub(crate) unsafe fn cancel(this: *mut Self) -> Cancel<Rq, Rp, E> {
        // SAFETY: the requester's share keeps the slot alive until the CAS below gives it up.
        let s = unsafe { &*this };
        let mut cur = s.core.state.load(Ordering::Acquire);
        loop {
            if cur & DONE != 0 {
                s.spin_until_finished();
                // SAFETY: the result is ready and our share is intact.
                return Cancel::Completed(unsafe { Self::take_result(this) });
            }
            if cur & TAKEN == 0 {
                // Still queued. Copy the request out first: after our CAS the consumer may
                // release the slot at any moment. Until the CAS decides, the copy is only bits.
                // SAFETY: the request is initialised while QUEUED and nobody writes it; the
                // consumer only reads it after winning the CAS, so a concurrent read is fine.
                let copy: MaybeUninit<Rq> = unsafe { s.request.with(|p| ptr::read(p)) };
                // SAFETY: `pool` is set by the slot's first `fill` and kept; we still hold
                // our share.
                let pool = unsafe { s.pool.with(|p| (*p).clone()) };
                let new = (cur | WITHDRAWN | CLIENT_GONE) & !WAITER;
                // AcqRel: Release orders our read of the request before the consumer's release
                // of the slot (it loads the state with Acquire).
                match s
                    .core
                    .state
                    .compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        // SAFETY: our CAS made the withdrawal final, so the bits are ours.
                        let request = unsafe { copy.assume_init() };
                        let pool = pool.expect("a slot in use holds its pool");
                        return Cancel::Withdrawn(request, pool);
                    }
                    Err(actual) => cur = actual,
                }
            } else {
                let new = (cur | CLIENT_GONE) & !WAITER;
                // Release: our last accesses (none to the payload) before the completer's
                // release of the slot.
                match s
                    .core
                    .state
                    .compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return Cancel::Signaled,
                    Err(actual) => cur = actual,
                }
            }
        }
    }

    /// Requester side: stops waiting without canceling. The call stays queued or taken and
    /// the server answers it as usual; the answer is dropped. Returns the result if it was
    /// already there.
    ///
    /// # Safety
    ///
    /// The requester has not given up its share of the slot; after this call it has none.
    pub(crate) unsafe fn detach(this: *mut Self) -> Option<Outcome<Rp, E>> {
        // SAFETY: the requester's share keeps the slot alive until the CAS gives it up.
        let s = unsafe { &*this };
        // Release (in the CAS): our last accesses (none to the payload) happen-before the
        // completer's release of the slot, which loads the state with Acquire.
        if s.update_unless_done(
            |cur| (cur | CLIENT_GONE | DETACHED) & !WAITER,
            Ordering::AcqRel,
        ) {
            return None;
        }
        s.spin_until_finished();
        // SAFETY: the result is ready and our share is intact.
        Some(unsafe { Self::take_result(this) })
    }

    /// Puts a finished slot back into its pool, or frees it when the pool is full or closed.
    ///
    /// # Safety
    ///
    /// The caller is the slot's last user (see the module docs).
    pub(crate) unsafe fn release(this: *mut Self) {
        // SAFETY: we are the last user, so we may touch every cell. The slot's `Arc` keeps the
        // pool alive until the slot is freed, which is after our last use of `pool`.
        unsafe {
            let s = &*this;
            s.core.waiter.with_mut(|p| *p = None);
            let pool = s.pool.with(|p| (*p).as_ref().map(Arc::as_ptr));
            let unpooled = match pool {
                Some(pool) => Pool::recycle(pool, this),
                None => Some(this),
            };
            if let Some(slot) = unpooled {
                // Released slots come from `Box::into_raw`; this may drop the pool's last `Arc`.
                drop(Box::from_raw(slot));
            }
        }
    }
}

/// `DONE` set and no completer still touching the waiter.
fn is_finished(state: usize) -> bool {
    state & (DONE | WAITER) == DONE
}

/// # Safety
///
/// `core` points at the `core` field of a `Slot<Rq, Rp, E>`, and the caller is its last user.
unsafe fn release_erased<Rq, Rp, E>(core: *mut SlotCore<Rp, E>) {
    // `core` lies `CORE_AT` bytes into its slot (`Slot::core_ptr`), whose provenance it kept.
    let slot = core.wrapping_byte_sub(Slot::<Rq, Rp, E>::CORE_AT).cast();
    // SAFETY: `slot` is the slot that holds `core`; the caller is its last user.
    unsafe { Slot::<Rq, Rp, E>::release(slot) }
}

impl<Rp, E> SlotCore<Rp, E> {
    /// Server side: whether the requester canceled or stopped waiting.
    pub(crate) fn is_canceled(&self) -> bool {
        self.state.load(Ordering::Relaxed) & (CLIENT_GONE | DETACHED) == CLIENT_GONE
    }

    /// Server side: delivers `result` and gives up the server's share of the slot. Hands the
    /// result back if the requester is gone.
    ///
    /// # Safety
    ///
    /// `this` is a taken slot and the caller holds the server's share (a `ReplyContext`).
    pub(crate) unsafe fn complete(
        this: *mut Self,
        result: Outcome<Rp, E>,
    ) -> Result<(), Outcome<Rp, E>> {
        // SAFETY: the server's share keeps the slot alive until we give it up below.
        let s = unsafe { &*this };
        // The reply is written before the state is read: a read first would fetch the line
        // shared from the requester spinning on it, and the write fetch it again exclusive.
        // A requester that has left never reads the cell, so writing it is harmless.
        // SAFETY: the reply cell belongs to the server side until DONE is set.
        s.reply.with_mut(|p| unsafe { (*p).write(result) });
        // AcqRel: Release publishes the reply to the requester's Acquire load; Acquire makes
        // the requester's accesses visible if it left meanwhile and we release the slot.
        let prev = s.state.fetch_or(DONE, Ordering::AcqRel);
        if prev & CLIENT_GONE != 0 {
            // SAFETY: the requester left before seeing DONE and never reads the reply: the
            // value we wrote is ours again, and we are the slot's last user.
            unsafe {
                let r = s.reply.with(|p| ptr::read(p).assume_init());
                (s.release)(this);
                return Err(r);
            }
        }
        if prev & WAITER != 0 {
            // SAFETY: WAITER and DONE are both set: the requester does not touch the cell
            // until we clear WAITER.
            let waiter = s.waiter.with_mut(|p| unsafe { (*p).take() });
            // Release: our take of the waiter happens-before the requester's release of the
            // slot (it waits for WAITER to clear with Acquire). Nothing touches `s` after this.
            s.state.fetch_and(!WAITER, Ordering::Release);
            if let Some(w) = waiter {
                w.wake();
            }
        }
        Ok(())
    }
}
