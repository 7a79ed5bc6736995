//! The clock of a spin: [`now`], an [`Instant`] read from the CPU's time-stamp counter where
//! the kernel keeps time with it, for less than half the price of [`Instant::now`].
//!
//! A spinner reads the clock when it finds what it waits for, to learn how long it waited
//! (its budget adapts to that, and a long gap says it was preempted). That reading lies on
//! the path of the message: the answer is handed on only after it. On the 2-vCPU AMD EPYC
//! KVM VM of the benchmarks `Instant::now` (the vDSO's `clock_gettime`) takes 30.7 ns, this
//! clock 13.5 ns (a bare `rdtsc` 11 ns); an 8-byte ShmChannel round trip with blocking
//! receives reads it twice.
//!
//! # How
//!
//! Where the kernel's clock source is the TSC (`/sys/devices/system/clocksource/clocksource0/
//! current_clocksource` says `tsc`), the kernel has found the counter invariant and in step
//! across CPUs. The first readings are `Instant::now`'s, while the counter's rate against it
//! is measured over [`CALIBRATE_OVER`]; from then on a reading is the instant of the
//! calibration plus the ticks since, scaled. Elsewhere (another clock source, another
//! architecture, loom) it is `Instant::now`. The clock source is read once per process: a
//! kernel that gives up on the TSC later (its watchdog found it unstable) leaves the spins
//! of a running process on it, which at worst times them wrong (a spin that ends early or
//! late, a preemption seen or missed), never a wait that ends without its value.
//!
//! **Compare its readings only with each other**: its rate is `Instant`'s as measured over
//! 20 ms, not NTP's slewed one, so over an hour it may drift some milliseconds from
//! `Instant::now`. A spin measures microseconds with it.

use std::time::Instant;

/// Reads the spin clock (see the module docs).
#[inline]
pub(crate) fn now() -> Instant {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", not(loom)))]
    {
        tsc::now()
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(loom))))]
    {
        Instant::now()
    }
}

/// How long the counter's rate is measured against `Instant` before it is used.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(loom)))]
const CALIBRATE_OVER: std::time::Duration = std::time::Duration::from_millis(20);

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(loom)))]
mod tsc {
    use super::CALIBRATE_OVER;
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// The counter's scale, once measured.
    struct Scale {
        /// An instant and the counter's value at it.
        at: Instant,
        ticks_at: u64,
        /// Nanoseconds per tick, in 32.32 fixed point.
        ns_per_tick: u64,
    }

    impl Scale {
        fn instant(&self, ticks: u64) -> Instant {
            // A counter read on a CPU a few ticks behind the calibration's counts as the
            // calibration's instant, not as a jump of centuries.
            let elapsed = ticks.saturating_sub(self.ticks_at);
            let ns = (u128::from(elapsed) * u128::from(self.ns_per_tick)) >> 32;
            let ns = u64::try_from(ns).unwrap_or(u64::MAX);
            self.at
                .checked_add(Duration::from_nanos(ns))
                .unwrap_or_else(Instant::now)
        }
    }

    static SCALE: OnceLock<Scale> = OnceLock::new();
    /// Where the measurement of the rate starts; `None` where the kernel does not keep time
    /// with the counter.
    static START: OnceLock<Option<(Instant, u64)>> = OnceLock::new();

    fn ticks() -> u64 {
        // SAFETY: `rdtsc` exists on every x86-64 CPU and only reads the counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    /// Whether the kernel keeps time with the TSC, so that it is invariant and in step
    /// across CPUs.
    fn kernel_uses_tsc() -> bool {
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .is_ok_and(|s| s.trim() == "tsc")
    }

    #[inline]
    pub(super) fn now() -> Instant {
        match SCALE.get() {
            Some(scale) => scale.instant(ticks()),
            None => calibrating(),
        }
    }

    /// An instant and the counter's value at it: the counter is read just before and just
    /// after the clock, and of a few tries the closest two readings are kept (their middle),
    /// since a thread preempted between the two readings of a pair would pair an instant with
    /// a count milliseconds later, and every reading after would keep the error.
    fn pair() -> (Instant, u64) {
        let mut best: Option<(u64, Instant, u64)> = None;
        for _ in 0..5 {
            let before = ticks();
            let t = Instant::now();
            let width = ticks().saturating_sub(before);
            if best.is_none_or(|(w, ..)| width < w) {
                best = Some((width, t, before + width / 2));
            }
        }
        let (_, t, at) = best.expect("five tries");
        (t, at)
    }

    /// `Instant::now`, and the scale once [`CALIBRATE_OVER`] has passed since the first call.
    #[cold]
    fn calibrating() -> Instant {
        let t = Instant::now();
        let Some((t0, ticks0)) = *START.get_or_init(|| kernel_uses_tsc().then(pair)) else {
            return t;
        };
        if t - t0 >= CALIBRATE_OVER {
            let (t1, ticks1) = pair();
            let dticks = u128::from(ticks1.saturating_sub(ticks0));
            let ns_per_tick = ((t1 - t0).as_nanos() << 32).checked_div(dticks);
            if let Some(Ok(ns_per_tick)) = ns_per_tick.map(u64::try_from) {
                // A racing thread's scale, measured over about the same span, is as good.
                let _ = SCALE.set(Scale {
                    at: t1,
                    ticks_at: ticks1,
                    ns_per_tick,
                });
            }
        }
        t
    }

    #[cfg(test)]
    pub(super) fn scaled() -> bool {
        SCALE.get().is_some()
    }

    #[cfg(test)]
    pub(super) fn kernel_tsc() -> bool {
        kernel_uses_tsc()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The spin clock keeps `Instant`'s pace: over spans of 1 to 50 ms, once calibrated, it
    /// measures what `Instant::now` measures within 2 % (plus 20 µs for the readings
    /// themselves, which a preempted test thread may see apart).
    #[test]
    fn the_spin_clock_measures_what_instant_measures() {
        let first = now();
        let deadline = Instant::now() + Duration::from_secs(10);
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            while tsc::kernel_tsc() && !tsc::scaled() {
                assert!(Instant::now() < deadline, "never calibrated");
                std::thread::sleep(Duration::from_millis(5));
                let _ = now();
            }
            if !tsc::kernel_tsc() {
                eprintln!("the kernel's clock source is not the TSC: the spin clock is Instant");
            }
        }
        assert!(now() >= first, "went backwards");
        for ms in [1u64, 5, 20, 50] {
            // Three tries: a test thread preempted between the two readings of a pair sees
            // them apart; a clock at another pace fails all three.
            let tries: Vec<_> = (0..3)
                .map(|_| {
                    let (a, b) = (now(), Instant::now());
                    std::thread::sleep(Duration::from_millis(ms));
                    (now() - a, b.elapsed())
                })
                .collect();
            assert!(
                tries.iter().any(|&(spin, real)| {
                    let slack = real / 50 + Duration::from_micros(20);
                    spin + slack >= real && spin <= real + slack
                }),
                "{ms} ms: the spin clock measured, against Instant: {tries:?}"
            );
        }
    }
}
