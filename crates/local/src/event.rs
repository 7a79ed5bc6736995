//! Waiting for something to happen: the sleeping half of every blocking or async wait.
//!
//! An [`Event`] is a list of parked threads and pending tasks that want to hear about a
//! condition ("the queue may have a request", "the queue may have room"). It is only touched
//! after a waiter's bounded busy phase found nothing, so its mutex is off the fast path: the
//! side that makes the condition true checks one atomic counter, `waiting`, and takes the lock
//! only when somebody actually sleeps.
//!
//! The handshake that makes a lost wake-up impossible is the usual Dekker pair:
//!
//! ```text
//!   waiter                                  notifier
//!   ------                                  --------
//!   push self, waiting += 1   (SeqCst)      make the condition true
//!   fence(SeqCst)                           fence(SeqCst)
//!   re-check the condition                  if waiting > 0: pop one waiter, wake it
//!   park / return Pending
//! ```
//!
//! **Either the waiter's re-check sees the condition, or the notifier sees the waiter.**
//! A notified waiter is removed from the list by the notifier; a waiter that leaves without
//! having consumed what it was woken for (timeout, dropped future) passes the notification on.

use crate::sync::{current, fence, lock, AtomicUsize, Mutex, Ordering, Thread};
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

    /// Whether waking `self` would wake the same task as `waker`.
    fn will_wake(&self, waker: &Waker) -> bool {
        matches!(self, Waiter::Task(w) if w.will_wake(waker))
    }
}

/// A list of waiters for one condition. See the module docs for the protocol.
#[derive(Debug)]
pub(crate) struct Event {
    /// Number of entries in `list`; read without the lock by notifiers.
    waiting: AtomicUsize,
    list: Mutex<Vec<(usize, Waiter)>>,
    next_id: AtomicUsize,
}

impl Event {
    pub(crate) fn new() -> Self {
        Self {
            waiting: AtomicUsize::new(0),
            // Room for a few sleepers up front, so the first sleep in steady state allocates nothing.
            list: Mutex::new(Vec::with_capacity(4)),
            next_id: AtomicUsize::new(1),
        }
    }

    /// Adds (or, for an `id` still in the list, refreshes) a waiter, then fences so that the
    /// caller's re-check of its condition comes after the registration (see the module docs).
    ///
    /// Returns the waiter's id: `id` itself if it was still registered (the caller was not
    /// notified since), a new one otherwise, after which the caller must re-check its
    /// condition before sleeping. Pass `0` for a first registration.
    pub(crate) fn register(&self, id: usize, waiter: Waiter) -> usize {
        let id = {
            let mut list = lock(&self.list);
            if let Some(entry) = list.iter_mut().find(|(i, _)| *i == id && id != 0) {
                if let Waiter::Task(w) = &waiter {
                    if !entry.1.will_wake(w) {
                        entry.1 = waiter;
                    }
                }
                id
            } else {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                list.push((id, waiter));
                // SeqCst: pairs with the notifier's fence before it reads `waiting`.
                self.waiting.fetch_add(1, Ordering::SeqCst);
                id
            }
        };
        fence(Ordering::SeqCst);
        id
    }

    /// Removes waiter `id`. Returns `true` if it was still registered (it was not notified).
    pub(crate) fn unregister(&self, id: usize) -> bool {
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

    /// Wakes the longest-waiting waiter, if any. The caller has already made its condition
    /// true; this function issues the fence that pairs with [`Event::register`].
    #[inline]
    pub(crate) fn notify_one(&self) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) == 0 {
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
        if self.waiting.load(Ordering::Relaxed) == 0 {
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
            let id = self.register(0, Waiter::thread());
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
