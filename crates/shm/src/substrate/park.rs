//! Parking a thread until the other process makes a change: spin briefly, then announce the
//! sleep on a futex word in the segment, look once more, and sleep; the other side, after each
//! change a sleeper may wait for, checks the announcement and wakes it.
//!
//! ```text
//! sleeper (owner of the word)                 waker (the other side)
//! sleepers += 1   (SeqCst, see watch.rs)      publish the change (e.g. tail = t + 1, Release)
//! word = SLEEPING (SeqCst)                    fence(SeqCst)
//! fence(SeqCst)                               word == SLEEPING ?
//! ready()? -> no sleep                          then word = AWAKE, futex_wake(word)
//! dead? -> no sleep
//! futex_wait(word, SLEEPING, timeout)
//! word = AWAKE; sleepers -= 1; look again
//! ```
//!
//! **With both fences sequentially consistent, at least one side sees the other's store: the
//! sleeper's `ready` sees the change and it does not sleep, or the waker sees SLEEPING and
//! wakes it** (and a wake that comes before the `futex_wait` makes it return at once, since the
//! word is no longer SLEEPING). So no change is left waiting for a timeout. The waker pays a
//! fence and a load per change, and a system call only when the owner really sleeps.
//!
//! The peer's death is the other way out: the watcher (`watch.rs`) sets `dead` and wakes the
//! word, again while `sleepers` is not zero; a sleeper counts itself before it reads `dead`
//! ([`Liveness::counted`]), so either the watcher sees it or it sees `dead`.
//!
//! A hostile peer may write the word (put SLEEPING back, or AWAKE early): that can cost a
//! spurious wake-up or a futile `futex_wake`, never memory safety; the watcher's repeated
//! wake-ups end a sleep the peer tries to prolong after its death.
//!
//! The functions take any [`Futex`], so that the loom model below runs this very code against
//! a futex made of a loom mutex and condition variable.

use super::clock;
use super::deadline::{Deadline, Expired};
use crate::sync::{Futex, Ordering};
use crate::sys;
use crate::watch::WatchShared;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

/// Nobody sleeps on the word (or the sleeper has been woken).
pub(crate) const AWAKE: u32 = 0;
/// The owner of the word announced that it sleeps: the other side must wake it.
pub(crate) const SLEEPING: u32 = 1;

pub(crate) use courier_core::pace::Pace;
pub(crate) use courier_core::placement::this_cpu;

/// This thread's Linux thread id (never 0, so that 0 can mean "not known" in the hints the
/// two sides of a connection leave each other), read once per thread. Beside the CPU hint
/// it tells a waiter that its peer is a task on its own thread, where neither spinning nor
/// yielding the CPU lets the peer run: only returning to the executor does.
pub(crate) fn this_thread() -> u32 {
    std::thread_local! {
        static TID: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    TID.try_with(|t| {
        if t.get() == 0 {
            t.set(rustix::thread::gettid().as_raw_nonzero().get() as u32);
        }
        t.get()
    })
    .unwrap_or(0)
}

/// How many looks a timed spin makes between two readings of the clock (a reading costs
/// about as much as one look).
pub(crate) const CLOCK_EVERY: u32 = 16;

/// A spin budget that adapts to how the waits it was given went, so that a waiter whose
/// peer answers within the budget keeps spinning, and one that spins in vain (a slow peer,
/// or a machine with more running threads than cores) soon stops burning a CPU for nothing:
///
/// ```text
/// outcome of a wait                    next budget
/// answered while spinning, after t   -> double, and at least 2t (at most `max`; from none:
///                                      the probe's)
/// MISS_STREAK misses in a row       -> at `max`: half (below MIN_SPIN: none); below it:
///                                      `max` for one wait (a check), then half if that
///                                      misses too
/// preempted while spinning          -> at `max`: half (one preemption on a machine that is
///                                      idle otherwise: a daemon, an interrupt); below it:
///                                      none: the cores are oversubscribed, and a spinner
///                                      holds a CPU its peer may be waiting for
/// no budget                         -> one wait in `every` spins `probe`, and one probe in
///                                      FULL_PROBE_EVERY spins `max`, to notice that
///                                      spinning pays again (rare, so that probing costs
///                                      neither CPU nor the tail latency)
/// ```
///
/// A caller probes briefly and often ([`AdaptiveSpin::caller`]): a server that spins answers
/// within a microsecond. A server probes for its whole budget and seldom
/// ([`AdaptiveSpin::server`]): its client may have to wake up before it sends again.
///
/// It starts at `max`. Preemption is seen with a system call only when the clock suggests
/// it: a spinner reads the clock every [`CLOCK_EVERY`] looks, and a gap of [`PREEMPTED`]
/// between two readings in the first millisecond of its spin (later in a long spin, only a
/// longer one) means it was preempted if another thread was given its CPU meanwhile
/// ([`is_preemption`], [`switched_out`]).
///
/// A fixed budget ([`AdaptiveSpin::fixed`], for a busy-polling owner) is `max` at every
/// wait, as long as the CPUs are not oversubscribed. A busy-poller that spins beside more
/// runnable threads than CPUs holds a CPU its peer, or another process, needs, and loses
/// whole scheduler slices of its own (milliseconds); it is told by its spins losing such
/// slices often ([`Turn::Slice`]: another thread held its CPU for [`SLICE`] or more),
/// which a thread with a core to itself never does. (The short turns of an idle machine's
/// kernel threads do not count: some tens a second, they would keep a busy-poller adapting
/// most of the time.)
///
/// ```text
/// busy-polling wait that lost a slice (answered or not), "preempted" below:
///   at most RELAPSE busy-polling waits, and
///   at most `calm`, after the owner last adapted -> it adapts again, for `calm`; `calm`
///                                                   doubles (at most MAX_CALM)
///   else, the last preempted busy-polling wait
///   at most CLOSE busy-polling waits before      -> it adapts for MIN_CALM; `calm` =
///                                                   2 MIN_CALM
///   else                                         -> busy-polling goes on
/// a wait begins ([`begin_wait`]) while adapting,
///   that time over and its peer last on
///   another CPU                                  -> it busy-polls again
///   else                                         -> it adapts (while the two share a CPU,
///                                                   busy-polling cannot pay)
/// ```
///
/// (Adapting: as an owner's default, with a budget of at most the fallback's limit, the
/// hints followed, long calls paced.) Each return to busy-polling on CPUs still
/// oversubscribed costs one preempted wait, so the time adapting doubles; a load that is
/// gone lets RELAPSE busy-polling waits pass unpreempted, and the next fallback starts short
/// again. The fallbacks last a time, not a count of waits, so that an owner whose calls are
/// sporadic does not adapt for hours after a burst of load.
///
/// [`begin_wait`]: AdaptiveSpin::begin_wait
///
/// Shared by the threads of one connection (or server); `Relaxed` throughout, since it is
/// only a hint: a lost update costs one wait a budget too long or too short.
#[derive(Debug)]
pub(crate) struct AdaptiveSpin {
    /// A busy-polling owner's fixed budget and fallbacks (see "fixed budget" above); the
    /// fields below are then those of the fallback.
    busy: Option<BusyPoll>,
    max_ns: u32,
    cur_ns: AtomicU32,
    misses: AtomicU32,
    waits: AtomicU32,
    probe_ns: u32,
    every: u32,
}

/// The state of a busy-polling [`AdaptiveSpin`]: its fixed budget, and when it adapts
/// instead (see "fixed budget" there).
#[derive(Debug)]
struct BusyPoll {
    /// The budget of every busy-polling wait.
    max: Duration,
    /// Until when it adapts ([`now_us`]; 0: it busy-polls).
    calm_until: AtomicU64,
    /// How long the next fallback lasts, in µs.
    calm: AtomicU64,
    /// Its busy-polling waits so far, and that count at the last preempted one and when it
    /// last stopped adapting.
    waits: AtomicU32,
    last_preempted: AtomicU32,
    calm_ended: AtomicU32,
    /// The time ([`now_us`]) when it last stopped adapting.
    calm_ended_us: AtomicU64,
}

/// How long a side spins before it sleeps, as its owner configured it
/// (`ConnectConfig::spin`/`busy_poll`, `ServerConfig::spin`/`busy_poll`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpinLimit {
    /// An adaptive budget of at most this long.
    Adaptive(Duration),
    /// This long at every wait.
    BusyPoll(Duration),
}

/// Below this a halved budget becomes none.
const MIN_SPIN: Duration = Duration::from_nanos(500);
/// How long a caller's probe spins: enough for an answer from a server that is running (a
/// round trip between two running processes takes well under a microsecond).
const CALLER_PROBE: Duration = Duration::from_micros(2);
/// With no budget left, one wait in this many is a caller's probe.
const CALLER_PROBE_EVERY: u32 = 64;
/// With no budget left, one wait in this many is a server's probe (for its whole budget).
const SERVER_PROBE_EVERY: u32 = 256;
/// One probe in this many spins the whole limit rather than the probe's time.
const FULL_PROBE_EVERY: u32 = 4;
/// Misses in a row that halve the budget (fewer are noise: an interrupt, a page fault).
const MISS_STREAK: u32 = 4;
/// A gap this long between two readings of the clock while spinning (16 looks take well
/// under a microsecond), in which another thread was given the spinner's CPU
/// ([`switched_out`]), means the spinner was preempted.
pub(crate) const PREEMPTED: Duration = Duration::from_micros(30);

/// A spinner looks whether its peer died once in this many looks (a load of the watcher's
/// flag; a few microseconds apart).
const DEAD_EVERY: u32 = 256;

/// How a spin ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spun {
    /// The awaited value came, after this long (zero for a value at the first look, which
    /// reads no clock; else read when the value came, so that a spinner preempted after a
    /// reading of the clock and answered when it ran again counts the whole time, not the
    /// time to that reading).
    Answered(Duration),
    /// The budget ran out.
    Missed,
    /// The budget ran out, and the spinner was preempted meanwhile, its longest lost turn
    /// this long.
    Preempted(Turn),
    /// The awaited value came after this long (as [`Spun::Answered`]), and the spinner was
    /// preempted meanwhile, its longest lost turn this long.
    Late(Duration, Turn),
}

/// How long another thread held a spinner's CPU, at the longest in one spin: a turn of
/// [`SLICE`] or more is a scheduler slice of a thread that competes for the CPU; a shorter
/// one is most often an idle machine's housekeeping (a kernel thread's, some tens of times a
/// second on the benchmarks' VM, mostly 50–100 µs), or a peer that ran briefly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Turn {
    /// Shorter than [`SLICE`].
    Short,
    /// [`SLICE`] or more.
    Slice,
}

/// A turn this long of another thread on a spinner's CPU is a scheduler slice ([`Turn`]).
const SLICE: Duration = Duration::from_micros(200);

impl Turn {
    /// The turn another thread had on a spinner's CPU, for a gap this long between two
    /// readings of the spin clock in which the kernel says another thread ran there: the
    /// one classification of [`is_preemption`] (an adaptive spin) and [`Contention::note`]
    /// (a busy spin).
    fn of(gap: Duration) -> Turn {
        if gap >= SLICE {
            Turn::Slice
        } else {
            Turn::Short
        }
    }
}

impl Spun {
    /// How long the value took to come, if it came while spinning.
    pub(crate) fn answered_after(self) -> Option<Duration> {
        match self {
            Spun::Answered(after) | Spun::Late(after, _) => Some(after),
            Spun::Missed | Spun::Preempted(_) => None,
        }
    }

    /// Whether the spinner lost a whole scheduler slice to another thread ([`Turn::Slice`]).
    pub(crate) fn lost_a_slice(self) -> bool {
        matches!(
            self,
            Spun::Late(_, Turn::Slice) | Spun::Preempted(Turn::Slice)
        )
    }
}

/// A gap of [`PREEMPTED`] in a spin counts as preemption only in its first
/// `PREEMPT_WINDOW` (a default adaptive spin, or a paced one, is shorter); later in a long
/// spin, only a gap of [`STARVED`], another thread's time slice: the housekeeping of an idle
/// machine (an interrupt, a kernel thread's work) seldom takes that long, and a busy-poller
/// that waits long between sporadic calls should not take it for oversubscribed CPUs (see
/// [`AdaptiveSpin`]).
const PREEMPT_WINDOW: Duration = Duration::from_millis(1);
const STARVED: Duration = Duration::from_micros(500);

/// Whether a gap from `last` to `t` in a spin that began at `start` is preemption
/// ([`PREEMPT_WINDOW`]), and how long a turn the spinner lost: the gap is long enough, and
/// `switched` says that another thread was given the spinner's CPU (asked only of a gap
/// long enough).
fn is_preemption(
    start: Instant,
    last: Instant,
    t: Instant,
    switched: &mut impl FnMut() -> bool,
) -> Option<Turn> {
    let gap = t - last;
    let long_enough = gap >= PREEMPTED && (last - start < PREEMPT_WINDOW || gap >= STARVED);
    (long_enough && switched()).then(|| Turn::of(gap))
}

/// Whether another thread of this machine was given this thread's CPU while it could run,
/// since this thread last asked ([`sys::involuntary_switches`]): what tells a gap in a spin
/// in which another thread ran (the CPUs are oversubscribed, or the peer shares this one)
/// from one that the hypervisor took from the virtual CPU, or an interrupt. Spinning
/// through those costs nobody a CPU. On the 2-vCPU KVM VM of the benchmarks, with nothing
/// else running, a spinning thread sees gaps of [`PREEMPTED`] or more 70–180 times a second
/// (both CPUs spinning: up to 400), and only 2–25 of them are another thread's (kernel
/// threads' housekeeping, mostly 50–100 µs); with a third spinning thread on the two CPUs,
/// about 90 a second are, nearly all of a scheduler slice (a millisecond or more). Yes for
/// the first ask of a thread, if the kernel does not say, and under loom.
///
/// [`sys::involuntary_switches`]: crate::sys::involuntary_switches
pub(crate) fn switched_out() -> bool {
    #[cfg(not(loom))]
    {
        std::thread_local! {
            /// The count at this thread's last ask.
            static SWITCHES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
        }
        match crate::sys::involuntary_switches() {
            Some(n) => SWITCHES.with(|last| last.replace(n)) != n,
            None => true,
        }
    }
    #[cfg(loom)]
    {
        true
    }
}

/// A busy-polling wait preempted at most this many busy-polling waits after the last
/// preempted one makes its owner adapt for a while (see [`AdaptiveSpin`]).
const CLOSE: u32 = 1024;
/// A busy-polling wait preempted at most this many busy-polling waits after its owner last
/// adapted makes it adapt again, for twice as long (see [`AdaptiveSpin`]).
const RELAPSE: u32 = 4096;
/// The shortest and longest a busy-poller adapts for at a time.
const MIN_CALM: Duration = Duration::from_millis(250);
const MAX_CALM: Duration = Duration::from_secs(60);

/// Microseconds since the first call in this process (never 0): the clock of
/// [`AdaptiveSpin`]'s fallbacks.
fn now_us() -> u64 {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let us = BASE.get_or_init(Instant::now).elapsed().as_micros();
    u64::try_from(us).unwrap_or(u64::MAX - 1) + 1
}

impl AdaptiveSpin {
    /// A caller's budget: at most `max`, probing for [`CALLER_PROBE`] once in
    /// [`CALLER_PROBE_EVERY`] waits when it has none.
    pub(crate) fn caller(max: Duration) -> AdaptiveSpin {
        Self::new(max, CALLER_PROBE.min(max), CALLER_PROBE_EVERY)
    }

    /// A server's budget: at most `max`, probing for all of it once in
    /// [`SERVER_PROBE_EVERY`] waits when it has none.
    pub(crate) fn server(max: Duration) -> AdaptiveSpin {
        Self::new(max, max, SERVER_PROBE_EVERY)
    }

    /// A budget that is `max` at every wait (whatever the last waits did), except while
    /// the CPUs are oversubscribed: then it is `fallback`'s (see [`AdaptiveSpin`]).
    pub(crate) fn fixed(max: Duration, fallback: AdaptiveSpin) -> AdaptiveSpin {
        AdaptiveSpin {
            busy: Some(BusyPoll::new(max)),
            ..fallback
        }
    }

    /// A caller's budget as configured: [`caller`](Self::caller), or [`fixed`](Self::fixed)
    /// when busy-polling (falling back to a caller's budget of at most `default`).
    pub(crate) fn for_caller(limit: SpinLimit, default: Duration) -> AdaptiveSpin {
        match limit {
            SpinLimit::Adaptive(max) => Self::caller(max),
            SpinLimit::BusyPoll(max) => Self::fixed(max, Self::caller(max.min(default))),
        }
    }

    /// As [`for_caller`](Self::for_caller), for a server ([`server`](Self::server)).
    pub(crate) fn for_server(limit: SpinLimit, default: Duration) -> AdaptiveSpin {
        match limit {
            SpinLimit::Adaptive(max) => Self::server(max),
            SpinLimit::BusyPoll(max) => Self::fixed(max, Self::server(max.min(default))),
        }
    }

    fn new(max: Duration, probe: Duration, every: u32) -> AdaptiveSpin {
        let ns = |d: Duration| u32::try_from(d.as_nanos()).unwrap_or(u32::MAX);
        AdaptiveSpin {
            busy: None,
            max_ns: ns(max),
            cur_ns: AtomicU32::new(ns(max)),
            misses: AtomicU32::new(0),
            waits: AtomicU32::new(0),
            probe_ns: ns(probe),
            every,
        }
    }

    /// Whether its limit is zero: the owner asked never to spin.
    pub(crate) fn never(&self) -> bool {
        self.busy
            .as_ref()
            .map_or(self.max_ns == 0, |busy| busy.max.is_zero())
    }

    /// Starts a wait, whose peer last ran on this CPU if `peer_here` (the hints). Whether
    /// it busy-polls is decided here, once: a busy-polling wait spins its fixed budget
    /// whatever the hints say; an adapting one has an adaptive budget and follows them. A
    /// busy-poller that adapts for a while busy-polls again once that time is over, unless
    /// its peer shares its CPU (then the wait yields it, and busy-polling could not pay).
    /// The time is read only while it adapts.
    pub(crate) fn begin_wait(&self, peer_here: bool) -> Wait<'_> {
        self.begin_wait_at(peer_here, now_us)
    }

    /// [`begin_wait`](Self::begin_wait), reading the time with `now` (a test's clock).
    fn begin_wait_at(&self, peer_here: bool, now: impl FnOnce() -> u64) -> Wait<'_> {
        let busy = self
            .busy
            .as_ref()
            .filter(|busy| busy.begin_at(peer_here, now));
        Wait { spin: self, busy }
    }

    /// The budget of the next adapting wait.
    fn budget(&self) -> Duration {
        use std::sync::atomic::Ordering::Relaxed;
        let cur = self.cur_ns.load(Relaxed);
        let ns = if cur == 0 && self.max_ns != 0 {
            let n = self.waits.fetch_add(1, Relaxed);
            if n % self.every != self.every - 1 {
                0
            } else if (n / self.every) % FULL_PROBE_EVERY == FULL_PROBE_EVERY - 1 {
                // A short probe cannot see a server that answers later than it spins.
                self.max_ns
            } else {
                self.probe_ns
            }
        } else if cur < self.max_ns && self.misses.load(Relaxed) == MISS_STREAK {
            // The check after a streak of misses below the limit: answers that come just
            // after a halved budget would otherwise halve it again, down to none.
            self.max_ns
        } else {
            cur
        };
        Duration::from_nanos(u64::from(ns))
    }

    /// Records how an adapting wait that was given [`budget`](Self::budget) ended.
    fn record(&self, outcome: Spun) {
        use std::sync::atomic::Ordering::Relaxed;
        match outcome {
            Spun::Answered(after) | Spun::Late(after, _) => {
                self.misses.store(0, Relaxed);
                let cur = self.cur_ns.load(Relaxed);
                let doubled = if cur == 0 {
                    self.probe_ns
                } else {
                    cur.saturating_mul(2)
                };
                // At least twice what this answer took: a budget that a slow server's answers
                // just outlast would otherwise miss, halve and never come back.
                let needed = u32::try_from(after.as_nanos().saturating_mul(2)).unwrap_or(u32::MAX);
                self.cur_ns
                    .store(doubled.max(needed).min(self.max_ns), Relaxed);
            }
            Spun::Preempted(_) => {
                let cur = self.cur_ns.load(Relaxed);
                self.cur_ns.store(
                    if cur >= self.max_ns {
                        Self::half(cur)
                    } else {
                        0
                    },
                    Relaxed,
                );
            }
            Spun::Missed => {
                let misses = self.misses.fetch_add(1, Relaxed) + 1;
                let cur = self.cur_ns.load(Relaxed);
                if misses < MISS_STREAK || (misses == MISS_STREAK && cur != 0 && cur < self.max_ns)
                {
                    // Noise, or a streak below the limit: the next wait is its check.
                    return;
                }
                self.misses.store(0, Relaxed);
                self.cur_ns.store(Self::half(cur), Relaxed);
            }
        }
    }

    /// Half of a budget of `ns`, or none below [`MIN_SPIN`].
    fn half(ns: u32) -> u32 {
        let half = ns / 2;
        if u128::from(half) < MIN_SPIN.as_nanos() {
            0
        } else {
            half
        }
    }
}

impl BusyPoll {
    fn new(max: Duration) -> BusyPoll {
        BusyPoll {
            max,
            calm_until: AtomicU64::new(0),
            calm: AtomicU64::new(MIN_CALM.as_micros() as u64),
            waits: AtomicU32::new(0),
            // The first preemption is far from any before it, and from any fallback.
            last_preempted: AtomicU32::new(0u32.wrapping_sub(CLOSE + 1)),
            calm_ended: AtomicU32::new(0u32.wrapping_sub(RELAPSE + 1)),
            calm_ended_us: AtomicU64::new(0),
        }
    }

    /// Whether a wait that begins now (on `now`'s clock), its peer on this CPU if
    /// `peer_here`, busy-polls ([`AdaptiveSpin::begin_wait`]).
    fn begin_at(&self, peer_here: bool, now: impl FnOnce() -> u64) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let until = self.calm_until.load(Relaxed);
        if until == 0 {
            return true;
        }
        if peer_here {
            return false;
        }
        let now = now();
        if now < until {
            return false;
        }
        self.calm_until.store(0, Relaxed);
        self.calm_ended.store(self.waits.load(Relaxed), Relaxed);
        self.calm_ended_us.store(now, Relaxed);
        true
    }

    /// Records how a busy-polling wait ended (on `now`'s clock): it counts the wait, and a
    /// preempted one may start a fallback (see "fixed budget" in [`AdaptiveSpin`]).
    fn record_at(&self, outcome: Spun, now: impl FnOnce() -> u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.waits.load(Relaxed).wrapping_add(1);
        self.waits.store(n, Relaxed);
        if !outcome.lost_a_slice() {
            return;
        }
        let now = now();
        let (min, max) = (MIN_CALM.as_micros() as u64, MAX_CALM.as_micros() as u64);
        let next = self.calm.load(Relaxed).clamp(min, max);
        // A relapse: soon after the last fallback ended, in waits and in time (no longer
        // after it than the next fallback would last: an owner of sporadic calls preempted
        // hours later starts again at MIN_CALM).
        let relapse = n.wrapping_sub(self.calm_ended.load(Relaxed)) <= RELAPSE
            && now.saturating_sub(self.calm_ended_us.load(Relaxed)) <= next;
        let close = n.wrapping_sub(self.last_preempted.load(Relaxed)) <= CLOSE;
        self.last_preempted.store(n, Relaxed);
        let calm = if relapse {
            next
        } else if close {
            min
        } else {
            return;
        };
        self.calm_until.store(now.saturating_add(calm), Relaxed);
        self.calm.store((calm * 2).min(max), Relaxed);
    }
}

/// One wait of an [`AdaptiveSpin`]'s owner, from [`AdaptiveSpin::begin_wait`]: whether it
/// busy-polls was decided there, and its budget and its record follow that decision (an
/// adapting wait of a server's worker that records after another worker's wait ended the
/// fallback is still an adapting one).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wait<'a> {
    spin: &'a AdaptiveSpin,
    /// The owner's busy-polling state, if this wait busy-polls.
    busy: Option<&'a BusyPoll>,
}

impl Wait<'_> {
    /// Whether this wait busy-polls: it spins whatever the hints say, save a peer's on
    /// this CPU where the pair cannot each have a CPU ([`heeds_peer_here`](Self::heeds_peer_here)).
    pub(crate) fn busy_polls(self) -> bool {
        self.busy.is_some()
    }

    /// Whether the wait heeds a peer that last ran on this CPU (yields this CPU to it, or
    /// moves), rather than spin beside it: an adapting wait always; a busy-polling one only
    /// where the two cannot each have a CPU (other processes' busy threads hold the others,
    /// or that is not known: [`room_beside`](courier_core::placement::room_beside)). Where
    /// they can, the scheduler soon moves one of two spinners sharing a CPU; where they
    /// cannot, three runnable threads on two CPUs leave it nothing to gain by a move, and the
    /// peer runs only once this side gives its CPU up (a 1 MiB `lend_mut` busy-polling beside
    /// a busy process lost a 4 ms tick a call while the pair shared a CPU).
    pub(crate) fn heeds_peer_here(self) -> bool {
        !self.busy_polls() || !courier_core::placement::room_beside(1)
    }

    /// Whether its limit is zero: the owner asked never to spin.
    pub(crate) fn never(self) -> bool {
        self.spin.never()
    }

    /// Its budget.
    pub(crate) fn budget(self) -> Duration {
        match self.busy {
            Some(busy) => busy.max,
            None => self.spin.budget(),
        }
    }

    /// Records how it ended, having been given [`budget`](Self::budget).
    pub(crate) fn record(self, outcome: Spun) {
        self.record_at(outcome, now_us);
    }

    /// [`record`](Self::record), reading the time with `now` (a test's clock).
    fn record_at(self, outcome: Spun, now: impl FnOnce() -> u64) {
        match self.busy {
            Some(busy) => busy.record_at(outcome, now),
            None => self.spin.record(outcome),
        }
    }

    /// Looks with `look` for its budget ([`spin_on`], on the spin clock), at most until
    /// `deadline`, and records how that went: the value, or `None` when the budget ran out
    /// without one.
    pub(crate) fn spin<T>(self, deadline: Deadline, look: impl FnMut() -> Option<T>) -> Option<T> {
        self.spin_clocked(deadline, clock::now, switched_out, look)
    }

    /// [`spin`](Self::spin) for at most `cap` (an async wait, which holds its executor's
    /// thread), giving the value and about how long it took (as [`Spun::Answered`]): a spin
    /// that the cap cut short says nothing of whether the whole budget would have been
    /// answered, so it is recorded only if it was answered, if the budget was no longer
    /// than the cap, if the spinner was preempted (the CPUs are oversubscribed, cut short or
    /// not), or if it busy-polls (whose record counts its waits and preemptions only).
    /// (Recorded as a miss, it would halve the budget of the blocking waits that share it,
    /// for calls they would have caught.)
    pub(crate) fn spin_capped<T>(
        self,
        cap: Duration,
        look: impl FnMut() -> Option<T>,
    ) -> Option<(T, Duration)> {
        let budget = self.budget();
        let mut look = look;
        let spun = spin_clocked(
            budget.min(cap),
            || SpinHint::Pause,
            clock::now,
            switched_out,
            || Ok::<_, std::convert::Infallible>(look()),
        );
        let Ok(spun) = spun;
        match spun {
            Ok((v, how)) => {
                self.record(how);
                Some((v, how.answered_after().unwrap_or_default()))
            }
            Err(how) => {
                if budget <= cap || matches!(how, Spun::Preempted(_)) || self.busy_polls() {
                    self.record(how);
                }
                None
            }
        }
    }

    /// [`spin`](Self::spin), reading the time with `now` and asking `switched` whether
    /// another thread ran on its CPU (a test's).
    fn spin_clocked<T>(
        self,
        deadline: Deadline,
        now: impl FnMut() -> Instant,
        switched: impl FnMut() -> bool,
        mut look: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let spun = spin_clocked(
            deadline.cap(self.budget()),
            || SpinHint::Pause,
            now,
            switched,
            || Ok::<_, std::convert::Infallible>(look()),
        );
        let Ok(spun) = spun;
        self.record(match spun {
            Ok((_, how)) => how,
            Err(how) => how,
        });
        spun.ok().map(|(v, _)| v)
    }
}

/// Pacing ([`Pace`], shared with courier::local's waits) for a waiter of this crate: never
/// for one that does not spin (nothing would end a paced sleep but a wake-up) or busy-polls
/// (it spins through the whole wait anyway; a busy-poller that adapts for a while is paced).
pub(crate) fn pace_ahead_for(pace: &Pace, spin: Wait<'_>) -> Option<(Duration, Duration)> {
    if paces(spin) {
        pace.ahead()
    } else {
        None
    }
}

/// Whether a waiter that spins with `spin` is ever paced (see [`pace_ahead_for`]).
pub(crate) fn paces(spin: Wait<'_>) -> bool {
    !spin.never() && !spin.busy_polls()
}

/// What a sleeper knows of the peer's life: the watcher's shared state (or a model's).
pub(crate) trait Liveness {
    /// Whether the peer is known to be gone.
    fn is_dead(&self) -> bool;
    /// Runs `sleep` counted as a sleeper, so the watcher wakes it until it leaves.
    fn counted<T>(&self, sleep: impl FnOnce() -> T) -> T;
}

impl Liveness for WatchShared {
    fn is_dead(&self) -> bool {
        WatchShared::is_dead(self)
    }
    fn counted<T>(&self, sleep: impl FnOnce() -> T) -> T {
        WatchShared::counted(self, sleep)
    }
}

/// One sleep on `word` (this side's futex word): announces it, then looks with `ready`, and
/// sleeps (at most `timeout`, `None`: no limit) only if `ready` found nothing (`Ok(None)`) and
/// the peer lives. Returns `ready`'s result.
pub(crate) fn sleep<W: Futex, T, E>(
    word: &W,
    live: &impl Liveness,
    timeout: Option<Duration>,
    ready: impl FnOnce() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    live.counted(|| {
        // SeqCst: with the watcher's SeqCst store of AWAKE after its store of `dead` (see
        // watch.rs): if we read `dead == false` below, this store comes first in the single
        // order, so the watcher's wake-up finds the word or the waiter queued.
        word.store(SLEEPING, Ordering::SeqCst);
        // SeqCst: the Dekker pair with the waker's fence in `wake` after its store of the
        // change: either `ready` sees that store or the waker sees SLEEPING and wakes us.
        W::fence(Ordering::SeqCst);
        let got = ready();
        if let Ok(None) = got {
            if !live.is_dead() {
                word.wait(SLEEPING, timeout);
            }
        }
        // Relaxed: only this side acts on its own AWAKE (the waker's swap decides whether
        // it calls futex_wake, which is harmless either way).
        word.store(AWAKE, Ordering::Relaxed);
        got
    })
}

/// The waker's half, just after a store the owner of `word` may be sleeping for.
pub(crate) fn wake<W: Futex>(word: &W) {
    // SeqCst: orders the store just made before the load of the word, against the sleeper's
    // store of SLEEPING before its `ready` (see the module docs). Without it both could read
    // the old values: the sleeper would sleep with the change made.
    W::fence(Ordering::SeqCst);
    // Relaxed: the fence above orders them; the swap makes one waker call futex_wake.
    if word.load(Ordering::Relaxed) != AWAKE && word.swap(AWAKE, Ordering::Relaxed) != AWAKE {
        word.wake();
    }
}

/// What stopped a [`wait`] other than the awaited value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gave<E> {
    /// `attempt` or `ready` failed.
    Err(E),
    /// The peer died (`ready` had found nothing).
    Dead,
    /// The deadline passed.
    Expired,
}

/// Waits until `attempt` gives a value: spins for `spin`'s budget (and records how that
/// went; `None`: no spin), looking as its [`SpinHint`] says (asked for only if the first
/// look finds nothing), then sleeps on `word` (this side's futex word, woken by the peer
/// after each change `ready` may see) until `deadline`. The value comes with how long it
/// took if it came without a sleep (`None`: the waiter slept).
///
/// `attempt` takes what it waits for (a message, a block); `ready` only says whether
/// `attempt` may now succeed, without taking anything (it runs after the announcement).
pub(crate) fn wait<W: Futex, T, E>(
    word: &W,
    live: &impl Liveness,
    spin: Option<(Wait<'_>, impl FnOnce() -> SpinHint)>,
    deadline: Deadline,
    attempt: impl FnMut() -> Result<Option<T>, E>,
    ready: impl FnMut() -> Result<bool, E>,
) -> Result<(T, Option<Duration>), Gave<E>> {
    wait_paced(word, live, spin, None, deadline, attempt, ready)
}

/// [`wait`] for a waiter whose waits may be long and regular (a ShmChannel receiver whose
/// peer takes a while over each message): with `pace`, a spinning wait (`spin` given, with a
/// budget) whose last two waits slept for long sleeps through most of this one and spins for
/// its end ([`Pace::ahead`]), so that the value costs no wake-up; it records how the wait
/// went in `pace`, and a paced spin leaves `spin`'s budget alone (it says nothing of short
/// waits). With `pace` `None`, exactly [`wait`].
pub(crate) fn wait_paced<W: Futex, T, E>(
    word: &W,
    live: &impl Liveness,
    spin: Option<(Wait<'_>, impl FnOnce() -> SpinHint)>,
    pace: Option<&Pace>,
    deadline: Deadline,
    attempt: impl FnMut() -> Result<Option<T>, E>,
    mut ready: impl FnMut() -> Result<bool, E>,
) -> Result<(T, Option<Duration>), Gave<E>> {
    let (spin, hint) = spin.unzip();
    let pace = pace.filter(|_| spin.is_some_and(paces));
    let ahead = pace.and_then(Pace::ahead);
    let (first, budget) = match ahead {
        Some((sleep, spin)) => (Some(sleep), spin),
        None => (None, spin.map_or(Duration::ZERO, Wait::budget)),
    };
    let (v, spun, slept) = wait_with(
        first,
        budget,
        || hint.map_or(SpinHint::Pause, |hint| hint()),
        true,
        live,
        deadline,
        attempt,
        |timeout| sleep(word, live, timeout, || Ok(ready()?.then_some(()))).map(drop),
    )?;
    if let Some(spin) = spin.filter(|_| ahead.is_none()) {
        spin.record(spun);
    }
    if let Some(pace) = pace {
        pace.record(slept, matches!(spun, Spun::Preempted(_)));
    }
    let answered = match slept {
        None => spun.answered_after(),
        Some(_) => None,
    };
    Ok((v, answered))
}

/// One sleep on a word the sleeper may not overwrite with [`SLEEPING`], because it carries
/// more than the announcement (an RPC slot's state, which both processes change; the client
/// bell, a counter the peer bumps): `announce` marks the sleep in its own way and looks once
/// more, returning the value to sleep on while the word still holds it (`Ok(Some(v))`), or
/// `Ok(None)` if the word already moved or there is something to take (no sleep).
///
/// ```text
/// sleeper                                     waker (the other side)
/// sleepers += 1   (SeqCst, see watch.rs)      publish the change
/// announce: v = mark the sleep in the word    SeqCst RMW or fence, then a look at the mark
///           (a SeqCst CAS or store + fence),    (the slot's WAITER bit seen by its DONE CAS,
///           look again -> None: no sleep        the bell's waiter flag), then futex_wake
/// dead? -> no sleep
/// futex_wait(word, v, timeout)
/// sleepers -= 1; look again
/// ```
///
/// As for [`sleep`], the announcement and the waker's change are a Dekker pair: the
/// announcement's look sees the change, or the waker sees the mark and wakes the word; and a
/// change of the word between the announcement and `futex_wait` makes it return at once,
/// since the word no longer holds `v`. The mark is the caller's protocol; its loom model is
/// below (`an_announced_sleep_is_always_woken`).
pub(crate) fn sleep_announced<W: Futex, E>(
    word: &W,
    live: &impl Liveness,
    timeout: Option<Duration>,
    announce: impl FnOnce() -> Result<Option<u32>, E>,
) -> Result<(), E> {
    live.counted(|| {
        if let Some(v) = announce()? {
            if !live.is_dead() {
                word.wait(v, timeout);
            }
        }
        Ok(())
    })
}

/// [`wait`] on a word whose sleep is announced by the caller ([`sleep_announced`]), after
/// spinning for `spin` (the RPC caller's budget adapts, a subscription reader does not spin).
/// The value comes with how the spin went.
pub(crate) fn wait_announced<W: Futex, T, E>(
    word: &W,
    live: &impl Liveness,
    spin: Duration,
    deadline: Deadline,
    attempt: impl FnMut() -> Result<Option<T>, E>,
    announce: impl FnMut() -> Result<Option<u32>, E>,
) -> Result<(T, Spun), Gave<E>> {
    wait_announced_paced(word, live, None, spin, false, deadline, attempt, announce)
        .map(|(v, spun, _)| (v, spun))
}

/// [`wait_announced`] for a caller that expects the answer after about `ahead` (its
/// [`Pace`]): it first sleeps for `ahead` (woken early if the answer comes first), then
/// spins for `spin`, then sleeps until the answer as [`wait_announced`] does. With `None`,
/// exactly [`wait_announced`]. The value comes with how the spin went, and, when `timed`, how
/// long the whole wait took if it slept (`None` if it did not; always `None` untimed, which
/// spares a caller that has no use for it two readings of the clock around the sleep).
#[allow(clippy::too_many_arguments)]
pub(crate) fn wait_announced_paced<W: Futex, T, E>(
    word: &W,
    live: &impl Liveness,
    ahead: Option<Duration>,
    spin: Duration,
    timed: bool,
    deadline: Deadline,
    attempt: impl FnMut() -> Result<Option<T>, E>,
    mut announce: impl FnMut() -> Result<Option<u32>, E>,
) -> Result<(T, Spun, Option<Duration>), Gave<E>> {
    wait_with(
        ahead,
        spin,
        || SpinHint::Pause,
        timed,
        live,
        deadline,
        attempt,
        |timeout| sleep_announced(word, live, timeout, &mut announce),
    )
}

/// How long a waiter whose peer last ran on its own CPU hands the CPU over
/// ([`yield_on`]) before it sleeps.
pub(crate) const YIELD_FOR: Duration = Duration::from_micros(20);

/// Answers that come within this long are short: an RPC caller (`Conn::move_pays`) and a
/// ShmChannel receiver (`ShmChannel::move_pays`) move off a peer's CPU, rather than hand it
/// over, only for short calls. Less than about twice what handing the CPU to the peer and
/// back costs (two switches: 3.5 µs a call on the 2-core VM of the README's tables, where a
/// 4 KiB `lend_mut` took 3.8 µs handed over and a 1 MiB one 16 µs), beyond which the one of
/// the two beside another process's busy thread loses more to that thread's slices than the
/// handover costs.
pub(crate) const SHORT_ANSWER: Duration = Duration::from_micros(8);

/// Runs `attempt` until it gives a value, yielding the CPU between looks, for at most `budget`
/// (the clock is read at every look; a yield is a system call, a reading is not).
///
/// For a waiter whose peer last ran on this CPU (the spin hints) and is awake: spinning
/// would hold the CPU the peer needs, and a futex sleep costs a wake-up on each side, while
/// a yield runs the peer at once (when it is runnable here) and comes back when it yields
/// or sleeps. With one core busy, two processes handing a call back and forth this way take
/// about half the time and CPU of two that wake each other. When the peer is not runnable
/// here after all (a stale hint), each look costs a system call, for at most `budget`.
pub(crate) fn yield_on<T, E>(
    budget: Duration,
    mut attempt: impl FnMut() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    let start = Instant::now();
    loop {
        if let Some(v) = attempt()? {
            return Ok(Some(v));
        }
        if start.elapsed() >= budget {
            return Ok(None);
        }
        std::thread::yield_now();
    }
}

/// What a spin does between two looks ([`spin_on`]).
///
/// The spin-loop hint (`PAUSE` on x86, `YIELD` on Arm) lets the other hardware thread of the
/// core use its units while this one waits, but delays the look after it. On a 2-vCPU Zen 3
/// EPYC VM, where a `PAUSE` takes about 29 ns, ShmChannel round trips between two processes
/// measured side by side, row after row, took without it 0.92–0.93× as long as with one per
/// look at 64 KiB busy-waiting (0.95–0.97× crossbar's, which spins without it; 0.83× with a
/// core busy) and 0.94–0.98× at 8 B; blocking (the adaptive spin, then a futex) 0.97–0.98× at
/// 8 B, 0.93–0.96× at 64 KiB (0.86× with a core busy) and 0.94× at 1 MiB, for the same CPU
/// per call. So a channel's waits look bare unless the peer last waited on another hardware
/// thread of this core ([`smt_siblings`](courier_core::placement::smt_siblings)), where the
/// hint lends it the units. The RPC waits keep the hint: measured the same way, their
/// busy-poll rows went either way (0.88–1.21× by size and run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpinHint {
    /// Look again at once.
    Bare,
    /// The spin-loop hint before each look.
    Pause,
}

impl SpinHint {
    /// The hint for a spin whose peer last waited on CPU `peer_cpu` (plus one, as
    /// [`this_cpu`]; 0 if not known), seen from CPU `cpu`.
    pub(crate) fn for_peer_on(cpu: u32, peer_cpu: u32) -> SpinHint {
        if courier_core::placement::smt_siblings(cpu, peer_cpu) {
            SpinHint::Pause
        } else {
            SpinHint::Bare
        }
    }

    /// What comes between two looks.
    #[inline]
    pub(crate) fn between_looks(self) {
        if self == SpinHint::Pause {
            std::hint::spin_loop();
        }
    }
}

/// How long a busy spin that finds its peer awake on its own CPU goes on before it moves off
/// that CPU ([`courier_core::placement::move_off_this_cpu`]). Shorter than a scheduler
/// slice by far: until then the peer cannot run, and every microsecond of the spin is lost.
pub(crate) const MOVE_AFTER: Duration = Duration::from_micros(20);

/// Whether a busy spinner that never sleeps (a channel's `WaitStrategy::BusySpin`) lost a
/// scheduler slice lately, and so whether a long spin of its yields the CPU between looks
/// (`sched_yield`):
///
/// ```text
/// two readings of the spin clock SLICE or more apart,
///   another thread given the spinner's CPU meanwhile  -> contended until CONTENDED_FOR
///                                                        after the later reading
/// a look, YIELD_AFTER or more into a spin, contended  -> yield the CPU before the next look
/// else                                                -> look again at once (or after the
///                                                        spin-loop hint: SpinHint)
/// ```
///
/// With more runnable threads than CPUs, a spinner holds a CPU that another thread, its
/// peer among them, needs: a peer that fills a large message beside it takes twice as
/// long. Measured on the 2-vCPU KVM VM of the benchmarks, with a third process spinning: a
/// 16 MiB ShmChannel round trip between two busy spinners took 7.4–7.8 ms, twice the 3.4 ms
/// of the two memsets alone in one process, and crossbar's 8.0 ms. A spinner that yields
/// stays runnable and looks again as soon as the scheduler has nothing else to run there:
/// its peer's message never waits for a wake-up. A spin that lasts less than YIELD_AFTER
/// never yields, so that a message that takes its sender less time than a scheduler slice
/// is looked for as before; and a thread that has a CPU to itself never loses a slice, so
/// it never yields.
///
/// Yielding mends only the spinner's own CPU. When the scheduler leaves the spinner a CPU
/// to itself and puts its peer beside the third process, the peer fills its message at
/// half speed and the spinner, never preempted, never yields: runs in that placement took
/// 7.5–8.0 ms, as before (one in five of the runs measured; only a sleeping receiver,
/// whose CPU the scheduler then gives to the peer, does better there).
///
/// And a yield helps only a peer on the spinner's CPU. When the spinner shares its CPU with
/// the third process and its peer works on the other CPU, a yield gives the CPU to the third
/// process until its slice ends (a tick, 4 ms there) while the message waits: 16 MiB round
/// trips then took 3.96–4.00 ms in most rounds (on 7 December; iceoryx2's spinners 0.8–1.9
/// ms beside them). So a spinner whose peer last waited on another CPU (the hint each side
/// leaves in the segment) does not yield: 1.19–1.37 ms in three runs, against 1.48–1.84 ms
/// for iceoryx2's. A peer whose CPU is not known yet (it never waited) is yielded to.
///
/// Per channel (`Cell`: a channel is used from one thread at a time).
#[derive(Debug, Default)]
pub(crate) struct Contention {
    /// Until when the spinner yields in long spins (the spin clock's time), if it does.
    until: std::cell::Cell<Option<Instant>>,
}

/// How long a spin goes on before it yields its CPU while contended ([`Contention`]): less
/// than the wait for a 16 MiB message (1.5 ms and more), more than most waits for 1 MiB
/// (20 µs, and a preempted peer's turn). Measured as in [`Contention`], alternating runs:
/// at 50 µs, 1 MiB round trips came at 3.3–7.9 k a second against 9.2–11.2 k spinning
/// throughout, for 1.3–2.4× the CPU per call (a spinner that yields in each wait a
/// preempted peer makes long gives its CPU away to the third process); at 500 µs, at
/// 9.6–11.0 k, while 16 MiB took 4.0–4.2 ms in three runs of four (7.5 ms in the fourth:
/// see [`Contention`] for the placement that yielding cannot mend; the 4.0 ms were the
/// yields that went to the third process, which a spinner whose sender last waited on
/// another CPU no longer makes).
pub(crate) const YIELD_AFTER: Duration = Duration::from_micros(500);
/// How long a lost slice makes long spins yield ([`Contention`]).
const CONTENDED_FOR: Duration = Duration::from_millis(250);

impl Contention {
    /// Notes a reading of the spin clock at `now` that follows one at `last` in a spin: a
    /// gap of [`SLICE`] or more in which another thread was given the spinner's CPU (asked
    /// of `switched`, only for a gap that long: [`switched_out`] in a spin) makes it
    /// contended for [`CONTENDED_FOR`].
    pub(crate) fn note(&self, last: Instant, now: Instant, switched: impl FnOnce() -> bool) {
        if Turn::of(now.saturating_duration_since(last)) == Turn::Slice && switched() {
            self.until.set(Some(now + CONTENDED_FOR));
        }
    }

    /// Whether a spin that began at `began` yields its CPU between looks at `now`: never
    /// while its peer last waited on another CPU (`peer_elsewhere`), as a yield would then
    /// give this CPU to a third thread, not to the peer (see [`Contention`]).
    pub(crate) fn yields(&self, began: Instant, now: Instant, peer_elsewhere: bool) -> bool {
        !peer_elsewhere
            && now.saturating_duration_since(began) >= YIELD_AFTER
            && self.until.get().is_some_and(|until| now < until)
    }
}

/// Runs `attempt` until it gives a value or `spin` is spent (the clock is read after the
/// first look, then every [`CLOCK_EVERY`] looks): the value and how the spin went
/// ([`Spun::Answered`] or [`Spun::Late`], with about how long it took), or how the spin
/// ended without one ([`Spun::Missed`] or [`Spun::Preempted`]). A gap between two readings
/// of the clock (or the last reading and the value) is preemption as [`is_preemption`]
/// says, asking [`switched_out`]. The looks follow `hint`, asked for after the first look.
/// The clock is the spin clock ([`clock::now`]): the reading after the look that found the
/// value delays the value's taker, and the spin clock takes less than half of
/// `Instant::now`'s time for it.
pub(crate) fn spin_on<T, E>(
    spin: Duration,
    hint: impl FnOnce() -> SpinHint,
    attempt: impl FnMut() -> Result<Option<T>, E>,
) -> Result<Result<(T, Spun), Spun>, E> {
    spin_clocked(spin, hint, clock::now, switched_out, attempt)
}

/// [`spin_on`], reading the time with `now` and asking `switched` whether another thread ran
/// on the spinner's CPU (a test's, which decide what the spinner sees as preemption without
/// depending on how the test's threads are scheduled).
fn spin_clocked<T, E>(
    spin: Duration,
    hint: impl FnOnce() -> SpinHint,
    mut now: impl FnMut() -> Instant,
    mut switched: impl FnMut() -> bool,
    mut attempt: impl FnMut() -> Result<Option<T>, E>,
) -> Result<Result<(T, Spun), Spun>, E> {
    if spin.is_zero() {
        return Ok(Err(Spun::Missed));
    }
    // A value there at the first look costs no reading of the clock, nor of the hint (most
    // sends, and every receive that finds its message waiting).
    if let Some(v) = attempt()? {
        return Ok(Ok((v, Spun::Answered(Duration::ZERO))));
    }
    let hint = hint();
    let start = now();
    let mut last = start;
    // The longest turn lost so far, if any.
    let mut preempted: Option<Turn> = None;
    let mut looks = 0u32;
    loop {
        if let Some(v) = attempt()? {
            // The gap since the last reading counts too: a spinner is most often preempted
            // while the value comes, and finds it at its first look when it runs again.
            // (That gap holds the work of the look that found the value, which is short
            // for every waiter but a worker that maps a lent buffer there, now and then.)
            let t = now();
            let late = preempted.max(is_preemption(start, last, t, &mut switched));
            let after = t - start;
            return Ok(Ok((
                v,
                match late {
                    Some(turn) => Spun::Late(after, turn),
                    None => Spun::Answered(after),
                },
            )));
        }
        looks = looks.wrapping_add(1);
        if looks % CLOCK_EVERY == 0 {
            let t = now();
            preempted = preempted.max(is_preemption(start, last, t, &mut switched));
            if t - start >= spin {
                return Ok(Err(match preempted {
                    Some(turn) => Spun::Preempted(turn),
                    None => Spun::Missed,
                }));
            }
            last = t;
        }
        hint.between_looks();
    }
}

/// The loop of every wait: a first sleep of `ahead` if given (ended early by a wake-up),
/// a spin (`spin`), then attempt, the peer's death, the deadline and one sleep
/// (`sleep_once`, given how long it may last), until `attempt` gives a value. The value comes
/// with how the spin went, and how long the wait took if it slept (the clock is read only on
/// the way to a sleep and after it; the time of a spin that came before is counted as its
/// budget). Untimed (`!timed`), a wait without a first sleep reads no clock for it and says
/// `None`.
#[allow(clippy::too_many_arguments)]
fn wait_with<T, E>(
    ahead: Option<Duration>,
    spin: Duration,
    hint: impl FnOnce() -> SpinHint,
    timed: bool,
    live: &impl Liveness,
    deadline: Deadline,
    mut attempt: impl FnMut() -> Result<Option<T>, E>,
    mut sleep_once: impl FnMut(Option<Duration>) -> Result<(), E>,
) -> Result<(T, Spun, Option<Duration>), Gave<E>> {
    let mut slept_since = None;
    if let Some(ahead) = ahead {
        // Asleep until `ahead` has passed: a sleep ended by a change that is not the
        // answer (the server taking the call) goes on for the rest. With the thread's timer
        // slack as it is (50 µs by default) the sleep would end most of `PACE_MARGIN` late:
        // it is tightened for the sleeps (not before an answer already there), and put back
        // before the spin.
        let since = Instant::now();
        slept_since = Some(since);
        let mut tight: Option<sys::TightTimers> = None;
        loop {
            if let Some(v) = attempt().map_err(Gave::Err)? {
                return Ok((v, Spun::Missed, Some(since.elapsed())));
            }
            if live.is_dead() {
                return Err(Gave::Dead);
            }
            let Some(rest) = ahead.checked_sub(since.elapsed()).filter(|r| !r.is_zero()) else {
                break;
            };
            let left = deadline.left().map_err(|Expired| Gave::Expired)?;
            tight.get_or_insert_with(sys::TightTimers::tighten);
            sleep_once(Some(left.map_or(rest, |left| left.min(rest)))).map_err(Gave::Err)?;
        }
        drop(tight);
    }
    // A long (paced, busy-polling) spin stops at the deadline, and when the peer dies; a
    // deadline already passed leaves none.
    let spin = deadline.cap(spin);
    let mut looks = 0u32;
    let look = || {
        if let Some(v) = attempt()? {
            return Ok(Some(Some(v)));
        }
        looks = looks.wrapping_add(1);
        Ok((looks % DEAD_EVERY == 0 && live.is_dead()).then_some(None))
    };
    let spun = match spin_on(spin, hint, look).map_err(Gave::Err)? {
        Ok((Some(v), how)) => {
            let slept = slept_since.map(|t| t.elapsed());
            return Ok((v, how, slept));
        }
        Ok((None, _)) => return Err(Gave::Dead),
        Err(how) => how,
    };
    // The spin, if there was no first sleep, is counted as its budget.
    let (since, before) = match slept_since {
        Some(t) => (Some(t), Duration::ZERO),
        None if timed => (Some(Instant::now()), spin),
        None => (None, spin),
    };
    loop {
        if let Some(v) = attempt().map_err(Gave::Err)? {
            return Ok((v, spun, since.map(|t| before + t.elapsed())));
        }
        if live.is_dead() {
            return Err(Gave::Dead);
        }
        let timeout = deadline.left().map_err(|Expired| Gave::Expired)?;
        sleep_once(timeout).map_err(Gave::Err)?;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn ns(budget: Duration) -> u64 {
        budget.as_nanos() as u64
    }

    #[test]
    fn a_spin_pauses_only_beside_a_peer_on_another_thread_of_its_core() {
        let cpu = this_cpu();
        // On this very CPU the peer cannot run while we spin, hint or not; nor is an unknown
        // CPU a sibling.
        assert_eq!(SpinHint::for_peer_on(cpu, cpu), SpinHint::Bare);
        assert_eq!(SpinHint::for_peer_on(cpu, 0), SpinHint::Bare);
        for peer in 1..=64 {
            let sibling = courier_core::placement::smt_siblings(cpu, peer);
            let hint = SpinHint::for_peer_on(cpu, peer);
            assert_eq!(hint == SpinHint::Pause, sibling, "cpu {cpu}, peer {peer}");
        }
    }

    #[test]
    fn a_spin_asks_for_its_hint_only_when_the_first_look_finds_nothing() {
        let asked = std::cell::Cell::new(0);
        let hint = || {
            asked.set(asked.get() + 1);
            SpinHint::Bare
        };
        let r = spin_on(Duration::from_secs(5), hint, || Ok::<_, ()>(Some(1)));
        assert_eq!(r, Ok(Ok((1, Spun::Answered(Duration::ZERO)))));
        assert_eq!(asked.get(), 0, "a value at the first look");
        let mut looks = 0;
        let r = spin_on(Duration::from_secs(5), hint, || {
            looks += 1;
            Ok::<_, ()>((looks == 3).then_some(looks))
        });
        assert!(matches!(r, Ok(Ok((3, _)))), "{r:?}");
        assert_eq!(asked.get(), 1, "once, after the first look");
    }

    #[test]
    fn a_budget_halves_after_a_streak_of_misses_and_comes_back_when_answered() {
        let a = AdaptiveSpin::caller(Duration::from_micros(16));
        assert_eq!(ns(a.budget()), 16_000);
        for _ in 0..MISS_STREAK - 1 {
            a.record(Spun::Missed);
        }
        assert_eq!(
            ns(a.budget()),
            16_000,
            "fewer misses than a streak change nothing"
        );
        a.record(Spun::Missed);
        assert_eq!(ns(a.budget()), 8_000);
        a.record(Spun::Answered(Duration::ZERO));
        assert_eq!(ns(a.budget()), 16_000, "doubled, capped at the limit");
        // Halving down to below MIN_SPIN leaves no budget (below the limit, each streak
        // is followed by a check that misses too).
        for _ in 0..6 * (MISS_STREAK + 1) {
            a.record(Spun::Missed);
        }
        assert_eq!(ns(a.budget()), 0);
    }

    #[test]
    fn a_streak_of_misses_below_the_limit_is_checked_with_the_whole_limit() {
        let a = AdaptiveSpin::caller(Duration::from_micros(20));
        for _ in 0..MISS_STREAK {
            a.record(Spun::Missed);
        }
        assert_eq!(ns(a.budget()), 10_000);
        // Answers that come after 12 µs: each misses the halved budget...
        for _ in 0..MISS_STREAK {
            assert_eq!(ns(a.budget()), 10_000);
            a.record(Spun::Missed);
        }
        // ...and the wait after the streak spins the whole limit, which sees one.
        assert_eq!(ns(a.budget()), 20_000, "the check");
        a.record(Spun::Answered(Duration::from_micros(12)));
        assert_eq!(ns(a.budget()), 20_000, "back to the limit, not halved");
        // A check that misses too halves the budget.
        for _ in 0..MISS_STREAK {
            a.record(Spun::Missed);
        }
        for _ in 0..MISS_STREAK {
            a.record(Spun::Missed);
        }
        assert_eq!(ns(a.budget()), 20_000, "the check");
        a.record(Spun::Missed);
        assert_eq!(ns(a.budget()), 5_000);
    }

    #[test]
    fn preemption_stops_the_spin_and_rare_short_probes_restart_it() {
        let a = AdaptiveSpin::caller(Duration::from_micros(20));
        // The first preemption halves the limit, the second leaves no budget.
        a.record(Spun::Preempted(Turn::Slice));
        a.record(Spun::Preempted(Turn::Slice));
        let budgets: Vec<u64> = (0..CALLER_PROBE_EVERY).map(|_| ns(a.budget())).collect();
        let probes: Vec<usize> = (0..budgets.len()).filter(|&i| budgets[i] != 0).collect();
        assert_eq!(probes, [CALLER_PROBE_EVERY as usize - 1], "{budgets:?}");
        assert_eq!(budgets[probes[0]], CALLER_PROBE.as_nanos() as u64);
        // A probe that is answered grows the budget back, doubling up to the limit.
        a.record(Spun::Answered(Duration::ZERO));
        assert_eq!(ns(a.budget()), 2_000);
        a.record(Spun::Answered(Duration::ZERO));
        a.record(Spun::Answered(Duration::ZERO));
        a.record(Spun::Answered(Duration::ZERO));
        assert_eq!(ns(a.budget()), 16_000);
        a.record(Spun::Answered(Duration::ZERO));
        assert_eq!(ns(a.budget()), 20_000);
    }

    #[test]
    fn an_answer_sets_the_budget_to_at_least_twice_what_it_took() {
        let a = AdaptiveSpin::caller(Duration::from_micros(20));
        a.record(Spun::Preempted(Turn::Slice));
        a.record(Spun::Preempted(Turn::Slice));
        a.record(Spun::Answered(Duration::from_micros(6)));
        assert_eq!(ns(a.budget()), 12_000, "more than the probe's 2 µs doubled");
        a.record(Spun::Answered(Duration::from_micros(1)));
        assert_eq!(ns(a.budget()), 20_000, "doubled, capped at the limit");
        // A spin of 50 µs on `clock`, answered at its look 2 * CLOCK_EVERY + 8.
        fn answered_late_in(
            clock: impl FnMut() -> Instant,
        ) -> Result<Result<((), Spun), Spun>, ()> {
            let mut looks = 0;
            spin_clocked(
                Duration::from_micros(50),
                || SpinHint::Pause,
                clock,
                every_gap,
                || {
                    looks += 1;
                    Ok((looks == 2 * CLOCK_EVERY + 8).then_some(()))
                },
            )
        }
        // How long the answer took is read off the spinner's clock: at the start, every
        // CLOCK_EVERY looks, and once more when the answer comes.
        let r = answered_late_in(steady_clock(Duration::from_micros(1)));
        assert_eq!(r, Ok(Ok(((), Spun::Answered(Duration::from_micros(3))))));
        // A spinner preempted after a reading and answered when it runs again: the whole
        // time counts (before, 2 µs: the time to the last reading), and it says it was
        // preempted.
        let r = answered_late_in(test_clock(
            Duration::from_micros(1),
            4,
            Duration::from_millis(3),
        ));
        let after = Duration::from_micros(3) + Duration::from_millis(3);
        assert_eq!(r, Ok(Ok(((), Spun::Late(after, Turn::Slice)))));
    }

    #[test]
    fn a_caller_with_no_budget_probes_briefly_and_now_and_then_for_its_whole_limit() {
        let a = AdaptiveSpin::caller(Duration::from_micros(20));
        a.record(Spun::Preempted(Turn::Slice));
        a.record(Spun::Preempted(Turn::Slice));
        let probes: Vec<u64> = (0..2 * FULL_PROBE_EVERY * CALLER_PROBE_EVERY)
            .map(|_| ns(a.budget()))
            .filter(|&b| b != 0)
            .collect();
        assert_eq!(
            probes,
            [2_000, 2_000, 2_000, 20_000, 2_000, 2_000, 2_000, 20_000]
        );
    }

    #[test]
    fn a_server_probes_with_its_whole_budget() {
        let a = AdaptiveSpin::server(Duration::from_micros(50));
        a.record(Spun::Preempted(Turn::Slice));
        a.record(Spun::Preempted(Turn::Slice));
        let probes: Vec<u64> = (0..2 * SERVER_PROBE_EVERY)
            .map(|_| ns(a.budget()))
            .filter(|&b| b != 0)
            .collect();
        assert_eq!(probes, [50_000, 50_000]);
    }

    /// A clock for a spinner that advances `step` at each reading, and `stall` more at the
    /// reading numbered `stall_at` (as if the spinner had been preempted just before it): what
    /// the spinner sees does not depend on how the test's own thread is scheduled.
    fn test_clock(step: Duration, stall_at: usize, stall: Duration) -> impl FnMut() -> Instant {
        let mut t = Instant::now();
        let mut readings = 0;
        move || {
            readings += 1;
            t += step;
            if readings == stall_at {
                t += stall;
            }
            t
        }
    }

    /// A clock that only ever advances `step` per reading: a spinner never preempted.
    fn steady_clock(step: Duration) -> impl FnMut() -> Instant {
        test_clock(step, 0, Duration::ZERO)
    }

    /// For a test clock's spinner: every gap long enough was another thread's turn on its
    /// CPU (so that the test clock alone decides).
    fn every_gap() -> bool {
        true
    }

    #[test]
    fn spinning_for_the_budget_records_how_it_went() {
        let a = AdaptiveSpin::caller(Duration::from_micros(16));
        for _ in 0..MISS_STREAK {
            let clock = steady_clock(Duration::from_micros(1));
            assert_eq!(
                a.begin_wait(false)
                    .spin_clocked(Deadline::NEVER, clock, every_gap, || None::<u8>),
                None
            );
        }
        assert_eq!(ns(a.budget()), 8_000, "a streak of misses halved it");
        let mut n = 0;
        let clock = steady_clock(Duration::from_micros(1));
        let found = a
            .begin_wait(false)
            .spin_clocked(Deadline::NEVER, clock, every_gap, || {
                n += 1;
                (n == 3).then_some(n)
            });
        assert_eq!(found, Some(3));
        assert_eq!(ns(a.budget()), 16_000, "an answer doubled it");
        // A spin that was preempted at the limit halves it; a second leaves no budget.
        for left in [8_000, 0] {
            let clock = test_clock(Duration::from_micros(1), 2, PREEMPTED);
            assert_eq!(
                a.begin_wait(false)
                    .spin_clocked(Deadline::NEVER, clock, every_gap, || None::<u8>),
                None
            );
            assert_eq!(ns(a.budget()), left);
        }
    }

    /// A peer that is alive or dead for the whole test, and no watcher to count sleepers.
    struct Peer {
        dead: bool,
    }

    impl Liveness for Peer {
        fn is_dead(&self) -> bool {
            self.dead
        }
        fn counted<T>(&self, sleep: impl FnOnce() -> T) -> T {
            sleep()
        }
    }

    #[test]
    fn a_paced_wait_sleeps_on_after_a_change_that_was_not_the_answer_then_spins() {
        // The thread's timer slack: tightened for the sleeps, put back for the spin (where
        // `prctl` works).
        const SLACK: u64 = 50_000;
        let slack = || rustix::thread::current_timer_slack().ok();
        let set = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(SLACK));
        let expect = |tight: u64| set.is_ok().then_some(if tight > 0 { tight } else { SLACK });
        let ahead = Duration::from_millis(3);
        let mut sleeps: Vec<Duration> = Vec::new();
        let mut slacks = Vec::new();
        let mut looks = 0;
        let r = wait_with(
            Some(ahead),
            Duration::from_secs(5),
            || SpinHint::Pause,
            true,
            &Peer { dead: false },
            Deadline::NEVER,
            || {
                looks += 1;
                slacks.push(slack());
                // The answer comes after the second sleep (which used up `ahead`) and the
                // look after it, so the spin's first look sees it.
                Ok::<_, ()>((looks == 4).then_some(7))
            },
            |timeout| {
                let timeout = timeout.expect("a paced sleep is bounded");
                assert_eq!(
                    slack(),
                    expect(courier_core::placement::TIGHT_SLACK),
                    "a paced sleep's slack"
                );
                // The first sleep ends at once (the server took the call); the next lasts.
                if !sleeps.is_empty() {
                    std::thread::sleep(timeout);
                }
                sleeps.push(timeout);
                Ok(())
            },
        );
        let (v, spun, slept) = r.unwrap();
        assert_eq!((v, spun, looks), (7, Spun::Answered(Duration::ZERO), 4));
        // The looks before the first sleep and in the spin ran with the thread's own slack.
        assert_eq!(slacks[0], expect(0), "{slacks:?}");
        assert_eq!(slacks[3], expect(0), "{slacks:?}");
        assert_eq!(slack(), expect(0));
        assert_eq!(sleeps.len(), 2, "{sleeps:?}");
        assert!(sleeps[0] <= ahead, "{sleeps:?}");
        assert!(
            sleeps[1] <= sleeps[0],
            "the rest, not the whole again: {sleeps:?}"
        );
        assert!(slept.unwrap() >= sleeps[1], "{slept:?} {sleeps:?}");
        // Answered during the first sleep: no spin.
        let r = wait_with(
            Some(ahead),
            Duration::from_secs(5),
            || SpinHint::Pause,
            true,
            &Peer { dead: false },
            Deadline::NEVER,
            || Ok::<_, ()>((!sleeps.is_empty()).then_some(1)),
            |_| panic!("no sleep: the answer is there at the first look"),
        );
        assert!(matches!(r, Ok((1, Spun::Missed, Some(_)))), "{r:?}");
    }

    #[test]
    fn a_paced_receive_sleeps_first_keeps_its_pace_and_leaves_the_spin_budget_alone() {
        use std::cell::Cell;
        let word = AtomicU32::new(AWAKE);
        let spin = AdaptiveSpin::caller(Duration::from_micros(20));
        // Halved by a streak of misses: a recorded answer would double it again.
        for _ in 0..MISS_STREAK {
            spin.record(Spun::Missed);
        }
        let pace = Pace::default();
        let us = Duration::from_micros;
        // Looks at the value, and the looks before the first sleep's own look.
        let (looks, before_sleep) = (Cell::new(0), Cell::new(None));
        let wait = |value: u32| {
            looks.set(0);
            before_sleep.set(None);
            let start = Instant::now();
            wait_paced(
                &word,
                &Peer { dead: false },
                Some((spin.begin_wait(false), || SpinHint::Bare)),
                Some(&pace),
                // Nobody wakes the word: an unpaced sleep ends at this deadline, after the
                // value came (a paced one ends at its pace); the look after a sleep comes
                // before the deadline's.
                Deadline::after(Duration::from_millis(2)),
                || {
                    looks.set(looks.get() + 1);
                    // The value comes 400 µs into the wait.
                    Ok::<_, ()>((start.elapsed() >= us(400)).then_some(value))
                },
                || {
                    before_sleep.set(before_sleep.get().or(Some(looks.get())));
                    Ok(false)
                },
            )
            .unwrap()
        };
        // Without a pace yet, the wait spins first, then sleeps.
        assert_eq!(wait(1), (1, None), "it slept");
        assert!(before_sleep.get() > Some(1), "it spun before it slept");
        pace.record(Some(us(400)), false);
        assert!(pace.ahead().is_some(), "two long waits that slept: a pace");
        let budget = spin.budget();
        // Paced: one look, asleep (the sleep looks once), then spinning until the value.
        assert_eq!(wait(2).0, 2);
        assert_eq!(before_sleep.get(), Some(1), "one look, then the sleep");
        assert_eq!(
            spin.budget(),
            budget,
            "a paced spin leaves the budget alone"
        );
        assert!(
            pace.ahead().is_some(),
            "a paced wait long enough keeps the pace"
        );
    }

    /// A busy-poller's fallback, on a test's clock (µs, as [`now_us`]).
    struct Busy {
        a: AdaptiveSpin,
        now: std::cell::Cell<u64>,
        fallback: Duration,
        max: Duration,
    }

    impl Busy {
        fn new() -> Busy {
            let (max, fallback) = (Duration::from_secs(3600), Duration::from_micros(20));
            Busy {
                a: AdaptiveSpin::fixed(max, AdaptiveSpin::caller(fallback)),
                now: std::cell::Cell::new(1),
                fallback,
                max,
            }
        }

        /// One wait (the peer last on another CPU, unless `peer_here`) that ends as
        /// `outcome` after 1 µs; whether it busy-polled.
        fn wait(&self, peer_here: bool, outcome: Spun) -> bool {
            let wait = self.a.begin_wait_at(peer_here, || self.now.get());
            if wait.busy_polls() {
                assert_eq!(wait.budget(), self.max);
            } else {
                assert!(wait.budget() <= self.fallback);
            }
            wait.record_at(outcome, || self.now.get());
            self.now.set(self.now.get() + 1);
            wait.busy_polls()
        }

        /// `n` busy-polling waits that end as `outcome`.
        fn busy(&self, n: u32, outcome: Spun) {
            for i in 0..n {
                assert!(self.wait(false, outcome), "wait {i} of {n} adapted");
            }
        }

        /// Waits that adapt, each ending as `outcome`, until one busy-polls again; how long
        /// (µs) after the preempted wait that began the fallback it busy-polled.
        fn adapting(&self, outcome: Spun) -> u64 {
            let start = self.now.get() - 1;
            assert!(!self.wait(false, outcome), "not adapting");
            while !self.wait(false, outcome) {}
            self.now.get() - 1 - start
        }
    }

    #[test]
    fn a_fixed_budget_stays_whatever_the_waits_did_unless_often_preempted() {
        let min = MIN_CALM.as_micros() as u64;
        let late = Spun::Late(Duration::from_millis(3), Turn::Slice);
        let b = Busy::new();
        // Misses, answers and one preempted wait now and then: busy-polling all along.
        b.busy(2 * MISS_STREAK, Spun::Missed);
        b.busy(2 * MISS_STREAK, Spun::Answered(Duration::ZERO));
        for outcome in [Spun::Preempted(Turn::Slice), late] {
            b.busy(1, outcome);
            b.busy(CLOSE, Spun::Answered(Duration::ZERO));
        }
        // Short turns lost (an idle machine's housekeeping), however close together: the
        // same.
        let short = Duration::from_micros(40);
        b.busy(2 * CLOSE, Spun::Preempted(Turn::Short));
        b.busy(2 * CLOSE, Spun::Late(short, Turn::Short));
        b.busy(CLOSE, Spun::Answered(Duration::ZERO));
        // Two close together: it adapts (the fallback's budget, the hints followed) for
        // MIN_CALM, then busy-polls again.
        b.busy(1, Spun::Preempted(Turn::Slice));
        b.busy(CLOSE - 1, Spun::Answered(Duration::ZERO));
        b.busy(1, late);
        assert_eq!(b.adapting(Spun::Answered(Duration::from_micros(1))), min);
        // A relapse (preempted within RELAPSE busy waits of the fallback's end) adapts again,
        // twice as long each time; while its peer shares its CPU it goes on adapting,
        // however long.
        b.busy(1, Spun::Preempted(Turn::Slice));
        b.now.set(b.now.get() + 10 * min);
        assert!(!b.wait(true, Spun::Missed), "busy-polling beside its peer");
        assert!(b.wait(false, Spun::Missed));
        b.busy(RELAPSE - 2, Spun::Missed);
        b.busy(1, Spun::Preempted(Turn::Slice));
        assert_eq!(b.adapting(Spun::Missed), 4 * min);
        b.busy(1, Spun::Preempted(Turn::Slice));
        assert_eq!(b.adapting(Spun::Missed), 8 * min);
        // Preempted soon after a fallback in waits, but later than the next one would last
        // in time (a sporadic caller): no relapse; close to the last preemption in waits,
        // it adapts for MIN_CALM again.
        b.busy(1, Spun::Preempted(Turn::Slice));
        assert_eq!(b.adapting(Spun::Missed), 16 * min);
        b.now.set(b.now.get() + 33 * min);
        b.busy(1, Spun::Preempted(Turn::Slice));
        assert_eq!(b.adapting(Spun::Missed), min);
        // The load gone (RELAPSE busy waits unpreempted): one preempted wait is noise again,
        // and the next fallback is MIN_CALM.
        b.busy(RELAPSE, Spun::Missed);
        b.busy(1, Spun::Preempted(Turn::Slice));
        b.busy(1, Spun::Preempted(Turn::Slice));
        assert_eq!(b.adapting(Spun::Missed), min);
        // Configured.
        assert!(AdaptiveSpin::fixed(Duration::ZERO, AdaptiveSpin::caller(Duration::ZERO)).never());
        let second = Duration::from_secs(1);
        let fallback = Duration::from_micros(20);
        let adaptive = AdaptiveSpin::for_caller(SpinLimit::Adaptive(second), fallback);
        assert!(!adaptive.begin_wait(false).busy_polls());
        let server = AdaptiveSpin::for_server(SpinLimit::BusyPoll(second), fallback);
        assert!(server.begin_wait(true).busy_polls());
        assert_eq!(server.begin_wait(false).budget(), second);
    }

    #[test]
    fn a_wait_records_as_it_began_though_another_ended_the_fallback_meanwhile() {
        let b = Busy::new();
        let clock = || b.now.get();
        b.busy(2, Spun::Preempted(Turn::Slice));
        // One worker's wait begins while its server adapts; another's, once that is over.
        let adapting = b.a.begin_wait_at(false, clock);
        assert!(!adapting.busy_polls());
        b.now.set(b.now.get() + MIN_CALM.as_micros() as u64);
        let busy = b.a.begin_wait_at(false, clock);
        assert!(busy.busy_polls());
        // The first, preempted, is an adapting wait's miss, not a busy-poller's relapse.
        adapting.record_at(Spun::Preempted(Turn::Slice), clock);
        busy.record_at(Spun::Answered(Duration::ZERO), clock);
        assert!(
            b.wait(false, Spun::Answered(Duration::ZERO)),
            "busy-polling, not adapting again"
        );
    }

    #[test]
    fn only_a_timed_wait_says_how_long_it_slept() {
        for timed in [true, false] {
            let mut looks = 0;
            let mut sleeps = 0;
            let r = wait_with(
                None,
                Duration::ZERO,
                || SpinHint::Pause,
                timed,
                &Peer { dead: false },
                Deadline::NEVER,
                || {
                    looks += 1;
                    // The look after the first sleep finds the value.
                    Ok::<_, ()>((looks == 2).then_some(5))
                },
                |_| {
                    sleeps += 1;
                    std::thread::sleep(Duration::from_millis(2));
                    Ok(())
                },
            );
            let (v, spun, slept) = r.expect("a value after one sleep");
            assert_eq!((v, spun, sleeps), (5, Spun::Missed, 1));
            if timed {
                let slept = slept.expect("a timed wait that slept says how long");
                assert!(slept >= Duration::from_millis(2), "{slept:?}");
            } else {
                assert_eq!(slept, None, "an untimed wait reads no clock for its sleep");
            }
        }
    }

    #[test]
    fn a_long_spin_ends_when_the_peer_dies() {
        let mut looks = 0u32;
        let r = wait_with(
            None,
            Duration::from_secs(3600),
            || SpinHint::Pause,
            true,
            &Peer { dead: true },
            Deadline::NEVER,
            || {
                looks += 1;
                Ok::<Option<()>, ()>(None)
            },
            |_| panic!("no sleep: the peer is dead"),
        );
        assert_eq!(r, Err(Gave::Dead));
        // Seen within DEAD_EVERY looks of the spin (and the first look before it).
        assert!(looks <= DEAD_EVERY + 1, "{looks} looks");
    }

    #[test]
    fn a_yielding_wait_looks_until_the_value_or_its_budget() {
        let mut looks = 0;
        let r = yield_on(Duration::from_secs(5), || {
            looks += 1;
            Ok::<_, ()>((looks == 3).then_some(7))
        });
        assert_eq!((r, looks), (Ok(Some(7)), 3));
        let budget = Duration::from_millis(2);
        let start = Instant::now();
        let r = yield_on(budget, || Ok::<Option<()>, ()>(None));
        assert_eq!(r, Ok(None));
        assert!(start.elapsed() >= budget);
        assert_eq!(yield_on(budget, || Err::<Option<()>, _>("bad")), Err("bad"));
    }

    #[test]
    fn a_zero_limit_never_spins() {
        let a = AdaptiveSpin::caller(Duration::ZERO);
        for _ in 0..4 * CALLER_PROBE_EVERY {
            assert_eq!(ns(a.budget()), 0);
            a.record(Spun::Missed);
        }
        a.record(Spun::Answered(Duration::ZERO));
        assert_eq!(ns(a.budget()), 0);
    }

    #[test]
    fn a_timed_spin_reports_a_gap_as_preemption() {
        let budget = Duration::from_micros(50);
        let nothing = || Ok::<Option<()>, ()>(None);
        // Nothing comes: the spin ends after its time, unpreempted, having looked once before
        // reading the clock, then read it once at the start and once every CLOCK_EVERY looks
        // until 50 µs had passed.
        let mut looks = 0;
        let r = spin_clocked(
            budget,
            || SpinHint::Pause,
            steady_clock(Duration::from_micros(1)),
            every_gap,
            || {
                looks += 1;
                nothing()
            },
        );
        assert_eq!(r, Ok(Err(Spun::Missed)));
        assert_eq!(looks, 1 + 50 * CLOCK_EVERY);
        // A gap between two readings just short of PREEMPTED is not preemption; one of
        // PREEMPTED is.
        let step = Duration::from_micros(1);
        let short = test_clock(step, 3, PREEMPTED - step - Duration::from_nanos(1));
        assert_eq!(
            spin_clocked(budget, || SpinHint::Pause, short, every_gap, nothing),
            Ok(Err(Spun::Missed))
        );
        let long = test_clock(step, 3, PREEMPTED - step);
        assert_eq!(
            spin_clocked(budget, || SpinHint::Pause, long, every_gap, nothing),
            Ok(Err(Spun::Preempted(Turn::Short)))
        );
        // The longest turn lost says whether it was a slice: a gap just short of SLICE is
        // not, one of SLICE is.
        for (stall, turn) in [
            (SLICE - step - step, Turn::Short),
            (SLICE - step, Turn::Slice),
        ] {
            let clock = test_clock(step, 3, stall);
            assert_eq!(
                spin_clocked(
                    Duration::from_millis(1),
                    || SpinHint::Pause,
                    clock,
                    every_gap,
                    nothing
                ),
                Ok(Err(Spun::Preempted(turn))),
                "{stall:?}"
            );
        }
        // A gap of PREEMPTED counts only in the first PREEMPT_WINDOW of a spin; later, only
        // one of STARVED (another thread's slice, not an idle machine's housekeeping).
        let long = Duration::from_millis(10);
        let window = PREEMPT_WINDOW.as_micros() as usize;
        let at = |reading, stall| test_clock(step, reading, stall);
        let r = spin_clocked(
            long,
            || SpinHint::Pause,
            at(window - 10, PREEMPTED),
            every_gap,
            nothing,
        );
        assert_eq!(r, Ok(Err(Spun::Preempted(Turn::Short))));
        let r = spin_clocked(
            long,
            || SpinHint::Pause,
            at(window + 10, STARVED - step - step),
            every_gap,
            nothing,
        );
        assert_eq!(r, Ok(Err(Spun::Missed)));
        let r = spin_clocked(
            long,
            || SpinHint::Pause,
            at(window + 10, STARVED - step),
            every_gap,
            nothing,
        );
        assert_eq!(r, Ok(Err(Spun::Preempted(Turn::Slice))));
        // The same for the gap before the look that finds the value (the reading that
        // stalls is the one made when the value comes, as in the test above).
        for (stall, late) in [(STARVED - step - step, false), (STARVED - step, true)] {
            let mut looks = 0;
            let found = (window + 10) * CLOCK_EVERY as usize + 8;
            let r = spin_clocked(
                long,
                || SpinHint::Pause,
                at(window + 12, stall),
                every_gap,
                || {
                    looks += 1;
                    Ok::<_, ()>((looks == found).then_some(()))
                },
            );
            assert!(
                matches!(r, Ok(Ok(((), how))) if matches!(how, Spun::Late(..)) == late),
                "{stall:?}: {r:?}"
            );
        }
        // A gap long enough in which no other thread took the CPU is not preemption.
        let long = test_clock(step, 3, PREEMPTED - step);
        assert_eq!(
            spin_clocked(budget, || SpinHint::Pause, long, || false, nothing),
            Ok(Err(Spun::Missed))
        );
        // The same on the real clock: one look that stalls, the first after the clock
        // started, in a sleep (a switch the thread asked for, not an involuntary one). Another
        // thread of a busy machine may also take this one's CPU meanwhile: then the attempt
        // says nothing, and another is made.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "every attempt was preempted");
            let before = crate::sys::involuntary_switches();
            switched_out();
            let mut looks = 0;
            let r = spin_on(
                budget,
                || SpinHint::Pause,
                || {
                    looks += 1;
                    if looks == 2 {
                        std::thread::sleep(PREEMPTED * 2);
                    }
                    nothing()
                },
            );
            if crate::sys::involuntary_switches() == before {
                assert_eq!(r, Ok(Err(Spun::Missed)));
                break;
            }
        }
        // A value ends it at once; no budget means no look.
        let mut n = 0;
        let r = spin_on(
            Duration::from_secs(5),
            || SpinHint::Pause,
            || {
                n += 1;
                Ok::<_, ()>((n == 3).then_some(7))
            },
        );
        assert_eq!(n, 3);
        assert!(
            matches!(r, Ok(Ok((7, how))) if how.answered_after() < Some(Duration::from_secs(5))),
            "{r:?}"
        );
        let r = spin_on(
            Duration::ZERO,
            || SpinHint::Pause,
            || -> Result<Option<()>, ()> { panic!("no look with no budget") },
        );
        assert_eq!(r, Ok(Err(Spun::Missed)));
    }

    #[test]
    fn a_lost_slice_makes_long_spins_yield_for_a_while() {
        let c = Contention::default();
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let just = Duration::from_micros(1);
        // Never contended: no spin yields, however long.
        assert!(!c.yields(t0, at(10_000), false));
        // A gap short of a slice is not asked about; one in which no other thread ran (the
        // hypervisor's time, an interrupt) changes nothing.
        c.note(at(0), at(0) + SLICE - just, || {
            panic!("asked about a short gap")
        });
        c.note(at(0), at(10_000), || false);
        assert!(!c.yields(t0, at(20_000), false));
        // A lost slice: a spin that has lasted YIELD_AFTER yields, a shorter one does not...
        let lost = at(30_000);
        c.note(lost - SLICE, lost, || true);
        assert!(c.yields(lost - YIELD_AFTER, lost, false));
        assert!(!c.yields(lost - YIELD_AFTER + just, lost, false));
        // ... until CONTENDED_FOR after the slice was lost.
        let end = lost + CONTENDED_FOR;
        assert!(c.yields(t0, end - just, false));
        assert!(!c.yields(t0, end, false));
        // Another lost slice, later, starts it again.
        c.note(end, end + SLICE, || true);
        assert!(c.yields(t0, end + SLICE + CONTENDED_FOR - just, false));
        // Contended or not, no spin yields whose peer last waited on another CPU: the CPU
        // would go to a third thread.
        assert!(!c.yields(t0, end + SLICE + CONTENDED_FOR - just, true));
    }

    #[test]
    fn a_spin_beside_a_thread_that_wants_its_cpu_is_preempted() {
        use rustix::thread::sched_setaffinity;
        use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
        let Some((mask, one)) = crate::sys::pin_here() else {
            eprintln!("skipped: this thread may not be pinned to one CPU");
            return;
        };
        // A thread that never sleeps, on this thread's CPU: the scheduler must give it turns
        // taken from this thread's spins, and the spinner must see them.
        let (running, stop) = (AtomicBool::new(false), AtomicBool::new(false));
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = std::thread::scope(|s| {
            s.spawn(|| {
                if sched_setaffinity(None, &one).is_ok() {
                    running.store(true, Relaxed);
                }
                while !stop.load(Relaxed) && Instant::now() < deadline {
                    std::hint::spin_loop();
                }
            });
            while !running.load(Relaxed) && Instant::now() < deadline {
                std::thread::yield_now();
            }
            let mut seen = false;
            while !seen && Instant::now() < deadline {
                let r = spin_on(
                    Duration::from_millis(50),
                    || SpinHint::Pause,
                    || Ok::<Option<()>, ()>(None),
                );
                seen = r == Ok(Err(Spun::Preempted(Turn::Slice)));
            }
            stop.store(true, Relaxed);
            seen
        });
        sched_setaffinity(None, &mask).unwrap();
        assert!(
            running.load(Relaxed),
            "the competing thread could not be pinned"
        );
        assert!(seen, "no spin saw the competing thread's turns within 10 s");
    }
}

#[cfg(all(test, loom))]
pub(crate) mod loom_models {
    //! Every interleaving of a sleeper that waits for a change and a waker that makes it: the
    //! sleeper is never left asleep with the change made (a missed wake-up leaves its thread
    //! blocked on the condition variable forever, which loom reports as a deadlock).
    use super::*;
    use crate::sync::Word32;
    use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
    use loom::sync::{Arc, Condvar, Mutex};

    /// A futex for the model: the value check and the sleep are atomic against a wake, as in
    /// the kernel (the futex's hash-bucket lock is this mutex).
    pub(crate) struct ModelFutex {
        pub(crate) word: AtomicU32,
        lock: Mutex<()>,
        cv: Condvar,
    }

    impl ModelFutex {
        pub(crate) fn new(v: u32) -> ModelFutex {
            ModelFutex {
                word: AtomicU32::new(v),
                lock: Mutex::new(()),
                cv: Condvar::new(),
            }
        }
    }

    impl Word32 for ModelFutex {
        fn load(&self, order: Ordering) -> u32 {
            self.word.load(order)
        }
        fn store(&self, v: u32, order: Ordering) {
            self.word.store(v, order)
        }
        fn swap(&self, v: u32, order: Ordering) -> u32 {
            self.word.swap(v, order)
        }
    }

    impl Futex for ModelFutex {
        fn fence(order: Ordering) {
            loom::sync::atomic::fence(order)
        }
        fn wait(&self, expected: u32, _timeout: Option<Duration>) {
            let g = self.lock.lock().unwrap();
            // Relaxed: the kernel reads the word as it stands; the mutex orders it against
            // `wake`, as the bucket lock does.
            if self.word.load(Ordering::Relaxed) == expected {
                drop(self.cv.wait(g).unwrap());
            }
        }
        fn wake(&self) {
            let _g = self.lock.lock().unwrap();
            self.cv.notify_all();
        }
    }

    /// A peer that stays alive, counting sleepers as the watcher's state does.
    pub(crate) struct Alive {
        sleepers: AtomicU32,
        dead: AtomicBool,
    }

    impl Alive {
        pub(crate) fn new() -> Alive {
            Alive {
                sleepers: AtomicU32::new(0),
                dead: AtomicBool::new(false),
            }
        }

        pub(crate) fn sleepers(&self) -> u32 {
            self.sleepers.load(Ordering::SeqCst)
        }
    }

    impl Liveness for Alive {
        fn is_dead(&self) -> bool {
            self.dead.load(Ordering::SeqCst)
        }
        fn counted<T>(&self, sleep: impl FnOnce() -> T) -> T {
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            let r = sleep();
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            r
        }
    }

    struct Pair {
        word: ModelFutex,
        change: AtomicU64,
        live: Alive,
    }

    #[test]
    fn a_change_always_wakes_the_sleeper() {
        loom::model(|| {
            let p = Arc::new(Pair {
                word: ModelFutex {
                    word: AtomicU32::new(AWAKE),
                    lock: Mutex::new(()),
                    cv: Condvar::new(),
                },
                change: AtomicU64::new(0),
                live: Alive {
                    sleepers: AtomicU32::new(0),
                    dead: AtomicBool::new(false),
                },
            });
            let w = Arc::clone(&p);
            let waker = loom::thread::spawn(move || {
                // Release: as a ring's commit (what the sleeper then reads is visible).
                w.change.store(1, Ordering::Release);
                wake(&w.word);
            });
            // The sleeper's loop, as `wait` runs it once the spins are over (the spins only
            // add interleavings of the same loads).
            loop {
                if p.change.load(Ordering::Acquire) == 1 {
                    break;
                }
                let seen = sleep(&p.word, &p.live, None, || {
                    Ok::<_, ()>((p.change.load(Ordering::Acquire) == 1).then_some(()))
                });
                if seen == Ok(Some(())) {
                    break;
                }
            }
            waker.join().unwrap();
            assert_eq!(p.live.sleepers.load(Ordering::SeqCst), 0);
        });
    }

    /// The announced shape ([`sleep_announced`]) on a counter bell, as the client's
    /// subscription reader uses it: the sleeper sets a waiter flag, fences, reads the bell,
    /// looks for the change, and sleeps while the bell holds what it read; the waker publishes
    /// the change, fences, and bumps and wakes the bell if the flag is set (the server's
    /// `ring_client`). The sleeper is never left asleep with the change made.
    #[test]
    fn an_announced_sleep_on_a_bell_is_always_woken() {
        struct Bell {
            bell: ModelFutex,
            waiting: AtomicU32,
            change: AtomicU64,
            live: Alive,
        }
        loom::model(|| {
            let p = Arc::new(Bell {
                bell: ModelFutex::new(0),
                waiting: AtomicU32::new(0),
                change: AtomicU64::new(0),
                live: Alive::new(),
            });
            let w = Arc::clone(&p);
            let waker = loom::thread::spawn(move || {
                w.change.store(1, Ordering::Release);
                loom::sync::atomic::fence(Ordering::SeqCst);
                if w.waiting.load(Ordering::SeqCst) != 0 {
                    w.bell.word.fetch_add(1, Ordering::SeqCst);
                    w.bell.wake();
                }
            });
            let attempt = || Ok::<_, ()>((p.change.load(Ordering::Acquire) == 1).then_some(()));
            let announce = || {
                p.waiting.store(1, Ordering::SeqCst);
                loom::sync::atomic::fence(Ordering::SeqCst);
                let seen = p.bell.word.load(Ordering::SeqCst);
                Ok((p.change.load(Ordering::Acquire) != 1).then_some(seen))
            };
            let got = wait_announced(
                &p.bell,
                &p.live,
                Duration::ZERO,
                Deadline::NEVER,
                attempt,
                announce,
            )
            .map(|(v, _spun)| v);
            assert_eq!(got, Ok(()));
            waker.join().unwrap();
            assert_eq!(p.live.sleepers(), 0);
        });
    }
}
