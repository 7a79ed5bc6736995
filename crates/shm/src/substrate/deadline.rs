//! One deadline type for every wait of the transport: "no later than this instant", or no
//! limit at all, and how long a sleep may last before it.
//!
//! `Instant + Duration` panics on overflow; a caller who passes `Duration::MAX` (or any
//! timeout past what the clock can represent) means "no deadline", so [`Deadline::after`] turns
//! an overflow into [`Deadline::NEVER`] instead.

use crate::error::ShmError;
use std::time::{Duration, Instant};

/// When a wait gives up: an instant, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline(Option<Instant>);

/// The deadline has passed: the caller's "timeout" error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expired;

impl Deadline {
    /// No deadline: wait until the awaited change or the peer's death.
    pub(crate) const NEVER: Deadline = Deadline(None);

    /// `timeout` from now; [`Deadline::NEVER`] if that instant cannot be represented
    /// (`Duration::MAX`, say).
    pub(crate) fn after(timeout: Duration) -> Deadline {
        Deadline(Instant::now().checked_add(timeout))
    }

    /// The instant, or `None` for no deadline.
    pub(crate) fn instant(self) -> Option<Instant> {
        self.0
    }

    /// The earlier of two deadlines ([`Deadline::NEVER`] is later than any instant): a
    /// sleep bounded both by the caller's deadline and by a slice of its own.
    pub(crate) fn min(self, other: Deadline) -> Deadline {
        match (self.0, other.0) {
            (Some(a), Some(b)) => Deadline(Some(a.min(b))),
            (a, b) => Deadline(a.or(b)),
        }
    }

    /// `d`, or what is left before the deadline if that is less (zero once it has passed):
    /// how long a spin or a run of yields may last.
    pub(crate) fn cap(self, d: Duration) -> Duration {
        if d.is_zero() {
            // Nothing to cap: no reading of the clock (a spin budget of zero, the parked
            // regime, comes here on every wait).
            return d;
        }
        match self.left() {
            Ok(None) => d,
            Ok(Some(left)) => left.min(d),
            Err(Expired) => Duration::ZERO,
        }
    }

    /// How long a sleep may last: `Ok(None)` without a deadline, `Ok(Some(left))` with
    /// `left > 0`, [`Expired`] once it has passed.
    pub(crate) fn left(self) -> Result<Option<Duration>, Expired> {
        self.left_with(Instant::now)
    }

    /// [`left`](Self::left), reading the time with `now` (called only with a deadline: a
    /// caller may share one reading between several uses, made only if one needs it).
    pub(crate) fn left_with(
        self,
        now: impl FnOnce() -> Instant,
    ) -> Result<Option<Duration>, Expired> {
        match self.0 {
            None => Ok(None),
            Some(d) => match d.checked_duration_since(now()) {
                Some(left) if !left.is_zero() => Ok(Some(left)),
                _ => Err(Expired),
            },
        }
    }
}

impl From<Option<Instant>> for Deadline {
    fn from(instant: Option<Instant>) -> Deadline {
        Deadline(instant)
    }
}

impl From<Expired> for ShmError {
    fn from(_: Expired) -> ShmError {
        ShmError::Timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_is_what_is_left_of_the_deadline_if_less() {
        let d = Duration::from_secs(3600);
        assert_eq!(Deadline::NEVER.cap(d), d);
        assert!(Deadline::after(Duration::from_secs(60)).cap(d) <= Duration::from_secs(60));
        assert_eq!(
            Deadline::after(d).cap(Duration::from_micros(20)),
            Duration::from_micros(20)
        );
        let past = Deadline::from(Some(Instant::now()));
        assert_eq!(past.cap(d), Duration::ZERO);
    }

    #[test]
    fn an_unrepresentable_timeout_is_no_deadline() {
        assert_eq!(Deadline::after(Duration::MAX), Deadline::NEVER);
        assert_eq!(Deadline::NEVER.left(), Ok(None));
        assert_eq!(
            Deadline::NEVER.left_with(|| panic!("no deadline: no reading")),
            Ok(None)
        );
        assert_eq!(Deadline::from(None), Deadline::NEVER);
        let soon = Deadline::after(Duration::from_secs(1));
        assert_eq!(Deadline::NEVER.min(soon), soon);
        assert_eq!(soon.min(Deadline::NEVER), soon);
        assert_eq!(Deadline::NEVER.min(Deadline::NEVER), Deadline::NEVER);
        let later = Deadline::after(Duration::from_secs(2));
        assert_eq!(later.min(soon), soon);
    }

    #[test]
    fn time_left_shrinks_then_expires() {
        let d = Deadline::after(Duration::from_secs(3600));
        let left = d.left().unwrap().unwrap();
        assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3600));
        // At a reading the caller made: what is left then, nothing at or after the instant.
        let at = d.instant().unwrap();
        let earlier = at - Duration::from_secs(10);
        assert_eq!(d.left_with(|| earlier), Ok(Some(Duration::from_secs(10))));
        assert_eq!(d.left_with(|| at), Err(Expired));
        assert_eq!(d.left_with(|| at + Duration::from_secs(1)), Err(Expired));
        let past = Deadline::from(Some(Instant::now()));
        assert_eq!(past.left(), Err(Expired));
        assert!(matches!(ShmError::from(Expired), ShmError::Timeout));
        assert_eq!(
            crate::rpc::fault::Fault::from(Expired),
            crate::rpc::fault::Fault::Timeout
        );
    }
}
