//! Pacing long waits ([`Pace`]): a waiter whose recent waits each lasted a while sleeps
//! through most of the next one and spins for its end, so that the answer costs no wake-up
//! after it. Shared by the blocking waits of courier::shm (an RPC caller, a ShmChannel
//! receiver) and of courier::local (a requester).
//!
//! ```text
//! the last two waits slept, each >= LONG_WAIT  -> next: sleep min(the two) - PACE_MARGIN
//!                                                 (woken early if the answer comes), then
//!                                                 spin up to min(the two) (at least
//!                                                 PACED_SPIN, at most MAX_PACED_SPIN)
//! a wait answered without sleeping             -> forget: short calls spin as before
//! a paced spin preempted                       -> forget: the cores are oversubscribed
//! ```
//!
//! The margin covers the timer's lateness and the wake-up's: a paced sleep runs with a timer
//! slack of 1 µs ([`placement::TightTimers`](crate::placement::TightTimers), Linux), since
//! the default 50 µs would use up most of it. The paced spin then costs about that much CPU
//! per call, for a call that takes at least [`LONG_WAIT`] (more for a call slower than the
//! last two).
//!
//! ```
//! use courier_core::pace::{Pace, PACE_MARGIN};
//! use core::time::Duration;
//!
//! let pace = Pace::default();
//! let us = Duration::from_micros;
//! pace.record(Some(us(500)), false);
//! pace.record(Some(us(450)), false);
//! // Asleep until the margin before the shorter of the two, then spinning as long as it took.
//! assert_eq!(pace.ahead(), Some((us(450) - PACE_MARGIN, us(450))));
//! // Answered without a sleep: short calls again, no pace.
//! pace.record(None, false);
//! assert_eq!(pace.ahead(), None);
//! ```

use core::sync::atomic::{AtomicU32, Ordering::Relaxed};
use core::time::Duration;

/// How long a waiter's recent long waits took (see the module docs). `Relaxed` atomics, a
/// hint: shared by the threads of one connection (courier::shm), or kept by one requester
/// (courier::local's call slot).
#[derive(Debug, Default)]
pub struct Pace {
    /// The last two waits that slept, in µs (0: none, or forgotten).
    last: [AtomicU32; 2],
}

/// Waits shorter than this are not paced (there is no room for a sleep before the margin).
pub const LONG_WAIT: Duration = Duration::from_micros(200);
/// How long before the expected answer a paced sleep ends.
pub const PACE_MARGIN: Duration = Duration::from_micros(100);
/// How long a paced waiter spins after its sleep before it sleeps again, at least and at
/// most.
pub const PACED_SPIN: Duration = Duration::from_micros(250);
/// See [`PACED_SPIN`].
pub const MAX_PACED_SPIN: Duration = Duration::from_millis(1);

impl Pace {
    /// How long the next wait should sleep, then spin, if the last waits say: asleep until
    /// [`PACE_MARGIN`] before the shorter of the last two, then spinning for as long as that
    /// took (at least [`PACED_SPIN`], at most [`MAX_PACED_SPIN`]): a call that takes twice
    /// as long as the last is still seen spinning.
    pub fn ahead(&self) -> Option<(Duration, Duration)> {
        let us = self.last[0].load(Relaxed).min(self.last[1].load(Relaxed));
        let last = Duration::from_micros(u64::from(us));
        (last >= LONG_WAIT).then(|| {
            let spin = last.clamp(PACED_SPIN, MAX_PACED_SPIN);
            (last - PACE_MARGIN, spin)
        })
    }

    /// Records how a wait went: `slept` is how long it took if it slept, `None` if it was
    /// answered without sleeping; `preempted` if its spin was.
    pub fn record(&self, slept: Option<Duration>, preempted: bool) {
        match slept {
            Some(d) if !preempted => {
                let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
                self.last[1].store(self.last[0].load(Relaxed), Relaxed);
                self.last[0].store(us, Relaxed);
            }
            _ => self.forget(),
        }
    }

    /// Forgets the last waits (a short one came): no pace until two long ones again. Stores
    /// only what is not forgotten yet, so that a run of short waits writes nothing.
    pub fn forget(&self) {
        if self.last[0].load(Relaxed) != 0 {
            self.last[0].store(0, Relaxed);
        }
        if self.last[1].load(Relaxed) != 0 {
            self.last[1].store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_two_long_waits_in_a_row_pace_the_next_and_a_short_or_preempted_one_stops_it() {
        let p = Pace::default();
        let us = Duration::from_micros;
        assert_eq!(p.ahead(), None);
        p.record(Some(us(400)), false);
        assert_eq!(p.ahead(), None, "one long wait is not a pace");
        p.record(Some(us(300)), false);
        // Asleep until the margin before the shorter, then spinning as long as it took.
        assert_eq!(p.ahead(), Some((us(300) - PACE_MARGIN, us(300))));
        p.record(Some(us(5000)), false);
        assert_eq!(p.ahead(), Some((us(200), us(300))));
        // A wait that was answered without sleeping, or whose spin was preempted, or one
        // shorter than LONG_WAIT: no pace.
        for (slept, preempted) in [(None, false), (Some(us(400)), true)] {
            p.record(Some(us(400)), false);
            p.record(Some(us(400)), false);
            assert!(p.ahead().is_some());
            p.record(slept, preempted);
            assert_eq!(p.ahead(), None);
        }
        p.record(Some(us(400)), false);
        p.record(Some(LONG_WAIT - us(1)), false);
        assert_eq!(p.ahead(), None);
        // The spin is bounded both ways.
        p.record(Some(LONG_WAIT), false);
        p.record(Some(LONG_WAIT), false);
        assert_eq!(p.ahead().map(|(_, spin)| spin), Some(PACED_SPIN));
        p.record(Some(us(60_000)), false);
        p.record(Some(us(60_000)), false);
        assert_eq!(p.ahead().map(|(_, spin)| spin), Some(MAX_PACED_SPIN));
    }
}
