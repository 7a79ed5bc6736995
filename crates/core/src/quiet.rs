//! When a spinning waiter first looks for its answer ([`Quiet`]): shared by the blocking
//! requesters of `courier::local` (per call slot) and of `courier::shm`'s RPC client (per
//! connection), whose looks cost the same cache-line round trip.

/// How long a blocking requester spins before its first look at the state word.
///
/// The requester's looks fetch the line of the call's state word shared. One that lands
/// between the server's take (which writes the line) and its answer (which writes it again)
/// makes the answer fetch the line back first: a look too early costs the call a cache-line
/// round trip, about as much as the rest of a small call (courier::local on a 2-vCPU Xeon
/// VM: 393 against 283 ns with no handler work, 515 against 283 ns with 30 ns of it, in a
/// harness that delayed the first look by a fixed 200 ns; courier::shm's RPC on the same VM:
/// 0.66–0.81 µs a call with the first look 20 hints late, against 0.88–1.06 µs at once). So
/// the first look waits some spin-loop hints, learnt by the requester: courier::local keeps
/// one per call slot, hence per channel and usually per requester thread (the pool hands a
/// requester back its last slot); courier::shm's RPC client one per connection.
///
/// ```
/// use courier_core::quiet::Quiet;
///
/// let mut quiet = Quiet::default();
/// // A wait: spin the hints, then look until answered (here at the third look).
/// let spun = quiet.next();
/// for _ in 0..spun {
///     core::hint::spin_loop();
/// }
/// quiet.learn(spun, 3, true);
/// assert_eq!(quiet.next(), 1, "early: one hint more");
/// ```
///
/// A wait's `took` is the hints it spun before its first look plus its looks (a look is one
/// hint). After each wait that only spun:
///
/// - answered at the first look: maybe late; after [`Quiet::PATIENCE`] such waits in a row,
///   the next wait probes (if there are hints to take off): it looks a `step` of hints
///   sooner, at most half of them. Answered at that look, the hints drop to the probe's and
///   the step becomes half of them; not answered, the step halves (down to one hint), and
///   the probe, which looked early on purpose, does not count as early. So a server that
///   became much faster is caught up with in a few probes (from [`Quiet::MAX`] hints to
///   within a few of the answer in under 300 waits, where one hint less per
///   [`Quiet::PATIENCE`] waits took thousands: on a 2-vCPU Xeon VM, after a phase of
///   handlers spinning 150 hints, fast calls took 2.0–2.9 µs for their first 2,000 and were
///   back at 0.3–0.5 µs after 250), and one that did not costs one early look every
///   [`Quiet::PATIENCE`] + 1 waits (one hint early once the step is down to one);
/// - answered at a later look: early; one hint more, unless the call took more than
///   [`Quiet::NEAR`] hints longer than the fastest of the last window of
///   [`Quiet::WINDOW`] waits. Calls of different lengths on one channel then set the hints
///   by the fast ones: a slow call says nothing about how soon a fast one is answered, and
///   raising the hints for it would make every fast call late.
///
/// A wait that yielded or parked halves the hints (and, if it probed, the step): the server
/// was not running, and the spin said nothing about its speed. Being late costs a hint or
/// two, being early a round trip: hence one hint more at once, fewer only after many, by a
/// probe. Async waits (`poll_ready`) do not spin and do not use this.
#[derive(Clone, Copy, Debug)]
pub struct Quiet {
    /// How many hints the next wait spins before its first look.
    hints: u16,
    /// Waits in a row answered at the first look (at most [`Quiet::PATIENCE`]: then the next
    /// wait probes, if `hints` is not 0).
    late: u16,
    /// How many hints sooner the next probe looks (at least one).
    step: u16,
    /// Waits so far in this window, and the smallest `took` among them.
    waits: u16,
    fastest: u16,
    /// The smallest `took` of the last window (`u16::MAX`: none yet).
    bound: u16,
}

impl Default for Quiet {
    fn default() -> Self {
        Self {
            hints: 0,
            late: 0,
            step: 1,
            waits: 0,
            fastest: u16::MAX,
            bound: u16::MAX,
        }
    }
}

impl Quiet {
    /// First-look answers in a row after which a wait probes.
    pub const PATIENCE: u16 = 32;
    /// How much longer than the last window's fastest a call may take and still count.
    pub const NEAR: u16 = 16;
    /// Waits per window.
    pub const WINDOW: u16 = 16;
    /// The most hints: a few µs, which bounds what a deadline can overshoot by.
    pub const MAX: u16 = 128;

    /// How many hints the next wait spins before its first look: for a probe, `step` fewer
    /// than `hints`, and at most half of them fewer (`step` was set for the hints of the
    /// last probe; they may have grown or halved since).
    pub fn next(&self) -> u16 {
        if self.late >= Self::PATIENCE {
            let reach = (self.hints / 2).max(1);
            self.hints.saturating_sub(self.step.min(reach))
        } else {
            self.hints
        }
    }

    /// Learns from one wait that spun `spun` hints first (as [`Quiet::next`] said) and was
    /// answered at its `looks`-th look; `only_spun`: it neither yielded nor parked.
    pub fn learn(&mut self, spun: u16, looks: u32, only_spun: bool) {
        let probe = spun < self.hints;
        if !only_spun {
            self.hints /= 2;
            self.late = 0;
            if probe {
                self.step = (self.step / 2).max(1);
            }
        } else {
            let took = u16::try_from(looks).map_or(u16::MAX, |l| spun.saturating_add(l));
            self.fastest = self.fastest.min(took);
            if probe {
                self.late = 0;
                if looks <= 1 {
                    self.hints = spun;
                    self.step = (spun / 2).max(1);
                } else {
                    self.step = (self.step / 2).max(1);
                }
            } else if looks <= 1 {
                self.late = (self.late + 1).min(Self::PATIENCE);
            } else if took <= self.bound.saturating_add(Self::NEAR) {
                self.late = 0;
                self.hints = (self.hints + 1).min(Self::MAX);
            }
        }
        self.waits += 1;
        if self.waits == Self::WINDOW {
            self.bound = self.fastest;
            self.fastest = u16::MAX;
            self.waits = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Quiet;

    /// Runs `n` waits, the `i`-th answered `took(i)` hints after it began (`None`: it yielded).
    fn waits(q: &mut Quiet, n: u16, took: impl Fn(u16) -> Option<u16>) {
        for i in 0..n {
            let spun = q.next();
            match took(i) {
                Some(t) if t > spun => q.learn(spun, u32::from(t - spun), true),
                Some(_) => q.learn(spun, 1, true),
                None => q.learn(spun, 500, false),
            }
        }
    }

    #[test]
    fn hints_grow_to_where_the_answer_comes_and_back_off_only_after_patience() {
        let mut q = Quiet::default();
        waits(&mut q, 11, |_| Some(12));
        assert_eq!(q.hints, 11, "one hint a wait while early");
        waits(&mut q, 400, |_| Some(12));
        assert!(
            (10..=11).contains(&q.hints),
            "settles at the answer: {}",
            q.hints
        );
        // Now answered at once: the wait after PATIENCE of them in a row probes one hint
        // sooner, is answered there, and the next probe goes half the way down.
        let mut q = Quiet::default();
        waits(&mut q, 11, |_| Some(12));
        waits(&mut q, Quiet::PATIENCE, |_| Some(0));
        assert_eq!(q.hints, 11);
        assert_eq!(q.next(), 10, "a probe");
        waits(&mut q, 1, |_| Some(0));
        assert_eq!(q.hints, 10);
        waits(&mut q, Quiet::PATIENCE + 1, |_| Some(0));
        assert_eq!(q.hints, 5);
        waits(&mut q, 8 * (Quiet::PATIENCE + 1), |_| Some(0));
        assert_eq!(q.hints, 0);
    }

    #[test]
    fn a_server_that_became_fast_is_caught_up_with_in_a_few_probes() {
        let mut q = Quiet::default();
        waits(&mut q, 1000, |_| Some(1000));
        assert_eq!(q.hints, Quiet::MAX);
        // The server now answers after 5 hints: probes halve the hints while they are
        // answered, and never go below the answer less the first look (the look after 4
        // hints sees it); a probe not answered at its first look leaves them.
        let mut n = 0;
        while q.hints > 10 {
            waits(&mut q, 1, |_| Some(5));
            assert!(q.hints >= 4, "below the answer: {}", q.hints);
            n += 1;
            assert!(n < 300, "still at {} after {n} waits", q.hints);
        }
        waits(&mut q, 2000, |_| Some(5));
        assert!(
            (4..=10).contains(&q.hints),
            "settles near the answer: {}",
            q.hints
        );
    }

    #[test]
    fn a_probe_reaches_at_most_half_the_hints_and_one_that_yielded_halves_the_step() {
        let mut q = Quiet::default();
        waits(&mut q, 400, |_| Some(40));
        let settled = q.hints;
        // A step left from larger hints reaches half of the present ones at most.
        q.late = Quiet::PATIENCE;
        q.step = 100;
        assert_eq!(q.next(), settled - settled / 2);
        // A probe that yielded: the hints halve, as for any such wait, and so does the step.
        waits(&mut q, 1, |_| None);
        assert_eq!((q.hints, q.step), (settled / 2, 50));
        // With no hints there is nothing to probe.
        let q = Quiet {
            late: Quiet::PATIENCE,
            step: 3,
            ..Quiet::default()
        };
        assert_eq!(q.next(), 0);
    }

    #[test]
    fn a_probe_answered_late_does_not_raise_the_hints_and_the_next_goes_less_far() {
        let mut q = Quiet::default();
        waits(&mut q, 400, |_| Some(40));
        let settled = q.hints;
        q.late = Quiet::PATIENCE;
        q.step = 16;
        let probe = q.next();
        assert_eq!(probe, settled - 16);
        waits(&mut q, 1, |_| Some(40));
        assert_eq!(q.hints, settled, "a probe that looked early says nothing");
        assert_eq!(q.step, 8);
    }

    #[test]
    fn slow_calls_among_fast_ones_do_not_raise_the_hints() {
        let mut q = Quiet::default();
        waits(&mut q, 400, |_| Some(12));
        let settled = q.hints;
        // Every other call now takes 200 hints: far from the fastest, so it does not count.
        waits(&mut q, 400, |i| Some(if i % 2 == 1 { 200 } else { 12 }));
        assert!(q.hints <= settled, "{} > {settled}", q.hints);
        // Calls of one length that is slow from the start do raise them.
        let mut slow = Quiet::default();
        waits(&mut slow, 400, |_| Some(60));
        assert_eq!(slow.hints, 59);
    }

    #[test]
    fn a_wait_that_yielded_halves_and_hints_stop_at_max() {
        let mut q = Quiet::default();
        waits(&mut q, 400, |_| Some(1000));
        assert_eq!(q.hints, Quiet::MAX);
        waits(&mut q, 1, |_| None);
        assert_eq!(q.hints, Quiet::MAX / 2);
        waits(&mut q, 8, |_| None);
        assert_eq!(q.hints, 0);
    }
}
