//! Cooperative yielding for courier's futures that can be ready at every poll.
//!
//! [`Server::async_wait`](crate::Server::async_wait) and `Client::areq` look, and then spin
//! for a while, before they sleep: with a steady stream of calls they are ready at every
//! poll, and a task that awaits them in a loop would hold its executor's thread for as long
//! as the stream lasts (the other tasks of a single-threaded runtime would never run). So
//! they count, per thread, the polls in a row that ended `Ready` without a sleep; after
//! [`BUDGET`] of them the next poll wakes its task and returns `Pending` once, as tokio's
//! own resources do when a task's budget is spent. A poll that ends `Pending` for real (the
//! task sleeps, and the executor runs the others) starts the count again.
//!
//! The count is the thread's, not the task's (an executor's task boundaries are not
//! visible here): a yield may fall on another task's poll than the one that spent the
//! budget, which is as good for the tasks that were waiting.

use std::cell::Cell;
use std::task::Context;

/// How many polls in a row on one thread may end `Ready` before the next yields once: tokio's
/// own default budget. Not fewer: on tokio's multi-thread runtime a task that wakes itself is
/// taken over by another worker, woken for it (about 5 µs on a 2-vCPU VM), which at one yield
/// every 32 calls put a server task's p99 at 5 µs against 0.8 µs.
pub(crate) const BUDGET: u32 = 128;

thread_local! {
    static STREAK: Cell<u32> = const { Cell::new(0) };
}

/// To call first in a poll that may end `Ready` at once: whether it must yield instead.
/// Then the task has been woken already, and the caller returns `Pending` with its state
/// unchanged (its next poll looks and spins as this one would have).
pub(crate) fn must_yield(cx: &Context<'_>) -> bool {
    STREAK
        .try_with(|s| {
            let spent = s.get() >= BUDGET;
            if spent {
                s.set(0);
                cx.waker().wake_by_ref();
            }
            spent
        })
        .unwrap_or(false)
}

/// The poll ends `Ready`.
pub(crate) fn ready() {
    let _ = STREAK.try_with(|s| s.set(s.get().saturating_add(1)));
}

/// The poll ends `Pending`: the task sleeps until woken.
pub(crate) fn pending() {
    let _ = STREAK.try_with(|s| s.set(0));
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_testkit::WakeCount;

    #[test]
    fn a_streak_of_budget_readies_yields_once_and_a_pending_starts_it_again() {
        let (count, waker) = WakeCount::new();
        let cx = Context::from_waker(&waker);
        pending();
        for _ in 0..BUDGET {
            assert!(!must_yield(&cx));
            ready();
        }
        assert!(must_yield(&cx), "no yield after {BUDGET} readies");
        assert_eq!(count.count(), 1, "the task was not woken");
        assert!(!must_yield(&cx), "a yield starts the count again");
        for _ in 0..BUDGET - 1 {
            ready();
        }
        pending();
        ready();
        assert!(!must_yield(&cx), "a pending starts the count again");
        assert_eq!(count.count(), 1);
    }
}
