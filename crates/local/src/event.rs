//! Waiting for something to happen: the sleeping half of every blocking or async wait.
//!
//! An [`Event`] holds the parked threads and pending tasks that want to hear about a
//! condition ("the queue may have a request", "the queue may have room"). It is only touched
//! after a waiter's bounded busy phase found nothing, so it is off the fast path: the side
//! that makes the condition true reads one cache line and does nothing more unless somebody
//! actually sleeps.
//!
//! The handshake that makes a lost wake-up impossible is the usual Dekker pair, made of
//! SeqCst operations rather than fences where they are RMWs anyway:
//!
//! ```text
//!   waiter                                  notifier
//!   ------                                  --------
//!   register (a SeqCst write)               make the condition true: a SeqCst RMW
//!   re-check the condition                    (`notify_one_after_seq_cst`), or any
//!     (SeqCst loads and RMWs)                 write, then fence(SeqCst) (`notify_one`)
//!   park / return Pending                   look for a waiter (SeqCst loads); if one is
//!                                             registered: take it, wake it
//! ```
//!
//! **Either the waiter's re-check sees the condition, or the notifier sees the waiter.** All
//! SeqCst operations and fences fall in one total order S, which agrees with each thread's
//! program order. C++20 \[atomics.order\] p4, which Rust adopts, ties S to what reads see:
//! when a SeqCst read misses a write (reads a value from before it), the read precedes in S
//! the write itself if that write is SeqCst, or else any SeqCst fence the write
//! happens-before. Suppose the notifier's look missed the registration: by that rule the look
//! precedes the registration in S. The making of the condition (a SeqCst RMW, or the fence
//! after a plain write) precedes the look, and the registration precedes the re-check, so
//! the making of the condition precedes the re-check in S. Had the re-check missed it, the
//! same rule would put the re-check first: a contradiction. On x86 a SeqCst load is a plain
//! load and the RMWs are locked anyway, so the handshake costs no fence on the paths that
//! run at every call (a push, and an async worker going back to sleep).
//!
//! Loom treats SeqCst loads and RMWs as Acquire/Release only (a documented limitation), so
//! under `cfg(loom)` both halves also issue a SeqCst fence ([`fence_for_loom`]): the models
//! check the handshake's structure with fence pairs, which give the same order.
//!
//! A notified waiter is removed by the notifier; a waiter that leaves without having
//! consumed what it was woken for (timeout, dropped future) passes the notification on.
//!
//! # Two places to wait
//!
//! Most events have one sleeper at a time (a channel's one server task, one client waiting
//! for room), and a list behind a mutex costs that sleeper a lock, a push and a counter on
//! every sleep, and its notifier a lock and a removal. So the first sleeper takes the **solo cell**, a waiter behind one
//! state word; the others queue in the locked **list**. A notifier wakes the solo waiter
//! first. The cell's state is `generation << 3 | NOTE | phase`:
//!
//! ```text
//!   FREE(g) ──arm: CAS──▶ HELD(g) ──write waiter; CAS──▶ ARMED(g) ──notify or disarm: CAS──▶ TAKING(g)
//!     ▲                     │                               │  ▲                                │
//!     │                     │ a notifier meanwhile:         │  └── the owner refreshes its      │
//!     │                     ▼ CAS +NOTE                     │      waker: CAS to HELD(g), then  │
//!     │                   HELD(g)|NOTE ──the owner: store──▶ ARMED(g+1)   back as above         │
//!     └───────────────────────────── take the waiter; store FREE(g+1) ◀────────────────────────┘
//! ```
//!
//! The owner's id is `g << 3 | 1` (list ids are even). An id whose cell has moved on was
//! notified. A notifier that finds the owner writing the cell (`HELD`) cannot take the
//! waiter, so it leaves `NOTE`: the owner's CAS to `ARMED(g)` fails, and it arms a new
//! generation instead, whose new id tells it to re-check its condition before it sleeps.

use crate::sync::{
    current, fence, fence_for_loom, lock, AtomicUsize, Mutex, Ordering, Thread, UnsafeCell,
};
use std::task::Waker;

/// Something that can be woken: a parked thread or a pending task.
#[derive(Debug)]
pub(crate) enum Waiter {
    Thread(Thread),
    Task(Waker),
}

impl Waiter {
    /// The current thread.
    pub(crate) fn thread() -> Self {
        Waiter::Thread(current())
    }

    pub(crate) fn wake(self) {
        match self {
            Waiter::Thread(t) => t.unpark(),
            Waiter::Task(w) => w.wake(),
        }
    }
}

/// Who registers: the current thread, or the task of a waker (cloned only when stored).
#[derive(Clone, Copy)]
pub(crate) enum Want<'a> {
    Thread,
    Task(&'a Waker),
}

impl Want<'_> {
    fn waiter(self) -> Waiter {
        match self {
            Want::Thread => Waiter::thread(),
            Want::Task(w) => Waiter::Task(w.clone()),
        }
    }

    /// Whether waking `waiter` wakes this task already.
    fn is(self, waiter: &Waiter) -> bool {
        matches!((self, waiter), (Want::Task(new), Waiter::Task(old)) if old.will_wake(new))
    }

    /// Puts this waiter in `cell`, unless the task there is woken by the same waker already.
    fn store_in(self, cell: &mut Option<Waiter>) {
        if !cell.as_ref().is_some_and(|w| self.is(w)) {
            *cell = Some(self.waiter());
        }
    }
}

/// Phases of the solo cell's state word (see the module docs).
const FREE: usize = 0;
const HELD: usize = 1;
const ARMED: usize = 2;
const TAKING: usize = 3;
const PHASE: usize = 3;
/// A notifier came while the owner held the cell.
const NOTE: usize = 4;
/// One generation.
const GEN: usize = 8;

/// The solo cell: one waiter behind one state word (see the module docs).
#[derive(Debug)]
struct Solo {
    state: AtomicUsize,
    /// Written by whoever moved the state to `HELD` or `TAKING`, and only then.
    waiter: UnsafeCell<Option<Waiter>>,
}

// SAFETY: the cell is reached only by the one thread that moved the state word to `HELD` or
// `TAKING` (each a CAS from a phase nobody else can leave the same way), and the state word's
// Release/Acquire pairs order each such owner after the previous one. `Waiter` is `Send`.
unsafe impl Sync for Solo {}

impl Solo {
    fn new() -> Self {
        Self {
            state: AtomicUsize::new(FREE),
            waiter: UnsafeCell::new(None),
        }
    }

    /// Takes the free cell for `want`; `None` if somebody else has it.
    fn arm(&self, want: Want<'_>) -> Option<usize> {
        let s = self.state.load(Ordering::Relaxed);
        if s & PHASE != FREE {
            return None;
        }
        // Acquire: the last owner's take of the cell happens-before our write.
        self.state
            .compare_exchange(s, s | HELD, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // SAFETY: `HELD` is ours: nobody else touches the cell until we publish it.
        self.waiter
            .with_mut(|cell| want.store_in(unsafe { &mut *cell }));
        Some(self.publish(s))
    }

    /// Refreshes registration `id`'s waiter; `None` if it was notified (or unregistered).
    fn refresh(&self, id: usize, want: Want<'_>) -> Option<usize> {
        let g = id & !(PHASE | NOTE);
        self.state
            .compare_exchange(g | ARMED, g | HELD, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // SAFETY: as in `arm`.
        self.waiter
            .with_mut(|cell| want.store_in(unsafe { &mut *cell }));
        Some(self.publish(g))
    }

    /// Publishes the cell we hold for generation `g`, and returns the registration's id.
    fn publish(&self, g: usize) -> usize {
        // SeqCst: the waiter's half of the handshake; Release: the cell's contents go with it.
        match self
            .state
            .compare_exchange(g | HELD, g | ARMED, Ordering::SeqCst, Ordering::Acquire)
        {
            Ok(_) => g | 1,
            Err(_) => {
                // Only a notifier's NOTE can have come in: it notified us. A new generation
                // gives us a new id, so our caller re-checks its condition before it sleeps
                // (the Acquire above makes what the notifier published visible to that check).
                let next = g.wrapping_add(GEN);
                self.state.store(next | ARMED, Ordering::SeqCst);
                next | 1
            }
        }
    }

    /// Takes registration `id`'s waiter back. `true` if it was still armed (not notified).
    fn disarm(&self, id: usize) -> bool {
        let g = id & !(PHASE | NOTE);
        // A plain look first: after a wake-up the cell has usually moved on.
        if self.state.load(Ordering::Relaxed) != g | ARMED
            || self
                .state
                .compare_exchange(g | ARMED, g | TAKING, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        drop(self.take(g));
        true
    }

    /// Empties the cell we moved to `TAKING(g)` and frees it for the next generation.
    fn take(&self, g: usize) -> Option<Waiter> {
        // SAFETY: `TAKING` is ours, and the Acquire that got it ordered the owner's write
        // before this read.
        let waiter = self.waiter.with_mut(|cell| unsafe { (*cell).take() });
        // Release: our take happens-before the next owner's write.
        self.state
            .store(g.wrapping_add(GEN) | FREE, Ordering::Release);
        waiter
    }

    /// Wakes the solo waiter, or marks it notified while its owner holds the cell. Returns
    /// `false` when there was nobody here to notify: free (a waiter that arms later re-checks
    /// after its SeqCst publish), being taken by another notifier (which wakes it), or
    /// marked already (its owner's publish fails and it re-checks). Every read of the state
    /// is SeqCst: the notifier's look of the handshake (see the module docs).
    fn notify(&self) -> bool {
        let mut s = self.state.load(Ordering::SeqCst);
        loop {
            let g = s & !(PHASE | NOTE);
            let next = match s & (PHASE | NOTE) {
                ARMED => g | TAKING,
                HELD => s | NOTE,
                _ => return false,
            };
            // Acquire: the owner's write of the cell; Release: the condition the caller made
            // true, for an owner whose publish fails on our NOTE.
            match self
                .state
                .compare_exchange(s, next, Ordering::AcqRel, Ordering::SeqCst)
            {
                Ok(_) if next & PHASE == TAKING => {
                    if let Some(w) = self.take(g) {
                        w.wake();
                    }
                    return true;
                }
                Ok(_) => return true,
                Err(actual) => s = actual,
            }
        }
    }
}

/// The waiters for one condition. See the module docs for the protocol.
#[derive(Debug)]
pub(crate) struct Event {
    /// The first sleeper.
    solo: Solo,
    /// Number of entries in `list`; read without the lock by notifiers.
    waiting: AtomicUsize,
    list: Mutex<Vec<(usize, Waiter)>>,
    next_id: AtomicUsize,
}

impl Event {
    pub(crate) fn new() -> Self {
        Self {
            solo: Solo::new(),
            waiting: AtomicUsize::new(0),
            // Room for a few sleepers up front, so the first sleep in steady state allocates nothing.
            list: Mutex::new(Vec::with_capacity(4)),
            // List ids are even (solo ids are odd), and never 0.
            next_id: AtomicUsize::new(2),
        }
    }

    /// Adds (or, for an `id` still registered, refreshes) a waiter with a SeqCst RMW, so that
    /// the caller's re-check of its condition, with SeqCst loads, comes after the registration
    /// (see the module docs).
    ///
    /// Returns the waiter's id: `id` itself if it was still registered (the caller was not
    /// notified since), a new one otherwise, after which the caller must re-check its
    /// condition before sleeping. Pass `0` for a first registration.
    pub(crate) fn register(&self, id: usize, want: Want<'_>) -> usize {
        let id = match id {
            0 => None,
            id if id & 1 == 1 => self.solo.refresh(id, want),
            id => self.refresh_listed(id, want),
        }
        .or_else(|| self.solo.arm(want))
        .unwrap_or_else(|| self.list(want));
        // The registration's last write was SeqCst: the solo cell's `publish` (a CAS, or the
        // store of a new generation after a notifier's mark), or the list's count. A listed
        // waiter that only refreshed its waker wrote nothing: its entry, and the count's
        // SeqCst increment that announced it, stand since before its last re-check, and a
        // notifier that saw it would have removed it. The caller's SeqCst re-check completes
        // the handshake.
        fence_for_loom();
        id
    }

    /// Refreshes list entry `id`; `None` if it is gone (notified).
    fn refresh_listed(&self, id: usize, want: Want<'_>) -> Option<usize> {
        let mut list = lock(&self.list);
        let entry = list.iter_mut().find(|(i, _)| *i == id)?;
        if !want.is(&entry.1) {
            entry.1 = want.waiter();
        }
        Some(id)
    }

    /// Adds a new entry to the list.
    fn list(&self, want: Want<'_>) -> usize {
        let mut list = lock(&self.list);
        let id = self.next_id.fetch_add(2, Ordering::Relaxed);
        list.push((id, want.waiter()));
        // SeqCst: the registration of the handshake; a notifier reads `waiting` with SeqCst
        // (see the module docs).
        self.waiting.fetch_add(1, Ordering::SeqCst);
        id
    }

    /// Removes waiter `id`. Returns `true` if it was still registered (it was not notified).
    pub(crate) fn unregister(&self, id: usize) -> bool {
        if id & 1 == 1 {
            return self.solo.disarm(id);
        }
        // Our own increment of `waiting` is visible to us, and while our entry is listed the
        // count stays at least one: reading zero proves a notifier removed us, so the lock
        // can be skipped (the common case after a wake-up).
        if id == 0 || self.waiting.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut list = lock(&self.list);
        match list.iter().position(|(i, _)| *i == id) {
            Some(pos) => {
                list.swap_remove(pos);
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Wakes one waiter, if any: the solo waiter first, else the longest-waiting in the list.
    /// The caller has already made its condition true, or is passing on a notification it
    /// will not use; this function issues the fence that orders that before its look (see
    /// the module docs).
    #[inline]
    pub(crate) fn notify_one(&self) {
        fence(Ordering::SeqCst);
        self.notify_one_after_seq_cst();
    }

    /// [`Event::notify_one`] for a caller whose last act making the condition true was a
    /// SeqCst RMW (a push onto the request queue): that RMW orders the condition before the
    /// look, so no fence is needed (see the module docs).
    #[inline]
    pub(crate) fn notify_one_after_seq_cst(&self) {
        fence_for_loom();
        if self.solo.notify() || self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let waiter = {
            let mut list = lock(&self.list);
            if list.is_empty() {
                return;
            }
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            list.remove(0).1
        };
        waiter.wake();
    }

    /// Wakes every waiter.
    pub(crate) fn notify_all(&self) {
        fence(Ordering::SeqCst);
        self.solo.notify();
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let waiters: Vec<(usize, Waiter)> = {
            let mut list = lock(&self.list);
            self.waiting.store(0, Ordering::Relaxed);
            std::mem::take(&mut *list)
        };
        for (_, w) in waiters {
            w.wake();
        }
    }

    /// Blocks the current thread until `check` returns `Some`, or until `deadline`.
    ///
    /// `check` is called after a bounded busy phase and again after every wake-up; it must
    /// return `Some` when the condition this event signals is true (or can never become true).
    /// Returns `None` on timeout, after a final check.
    pub(crate) fn wait_until<T>(
        &self,
        deadline: Option<std::time::Instant>,
        side: crate::sync::Side<'_>,
        mut check: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let mut backoff = crate::sync::Backoff::on(side, deadline);
        loop {
            if let Some(v) = check() {
                return Some(v);
            }
            if !backoff.snooze() {
                break;
            }
        }
        loop {
            let id = self.register(0, Want::Thread);
            if let Some(v) = check() {
                self.unregister(id);
                return Some(v);
            }
            crate::sync::park(deadline);
            let still_registered = self.unregister(id);
            if let Some(v) = check() {
                return Some(v);
            }
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                if !still_registered {
                    // We were woken for something we did not take: let someone else have it.
                    self.notify_one();
                }
                return None;
            }
        }
    }
}
