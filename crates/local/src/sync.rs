//! The one place that imports atomics, locks, interior mutability and thread parking.
//!
//! Under `cfg(loom)` everything comes from [`loom`], so the model checker sees every atomic
//! access, every `UnsafeCell` access and every park/unpark; otherwise the `std` types are used.
//! Nothing else in the crate imports `std::sync` or `std::thread` for the lock-free parts
//! (the name registry, which is an ordinary locked map, uses `std` directly).

#[cfg(loom)]
pub(crate) use loom::{
    cell::UnsafeCell,
    sync::{
        atomic::{fence, AtomicBool, AtomicPtr, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::{current, yield_now, Thread},
};

#[cfg(not(loom))]
pub(crate) use std::{
    sync::{
        atomic::{fence, AtomicBool, AtomicPtr, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::{current, yield_now, Thread},
};

use std::time::Instant;

/// A SeqCst fence under loom only, where a handshake relies on the single order of SeqCst
/// loads and RMWs (the wait lists', see `event`). Loom models SeqCst fences fully but treats
/// SeqCst loads and RMWs as Acquire/Release, so without the fence it would explore orders the
/// memory model forbids; with it, the model checks the handshake with fence pairs, which give
/// the same order. Outside loom it is nothing.
#[inline(always)]
pub(crate) fn fence_for_loom() {
    #[cfg(loom)]
    fence(Ordering::SeqCst);
}

/// How the waits of a channel's two sides go (see [`Backoff`]). Outside the model under loom
/// (plain std atomics): only the busy phase of a wait reads them, relaxed, and nothing but
/// how long a thread spins and where it runs depends on them.
#[derive(Debug, Default)]
pub(crate) struct Waits {
    /// The CPU a server worker last waited on, plus one (0: not known).
    // Only the Linux build without loom places threads.
    #[cfg_attr(any(loom, not(target_os = "linux")), allow(dead_code))]
    pub(crate) server_cpu: std::sync::atomic::AtomicU32,
    /// The busy-poll limit of the server's waits for requests, in nanoseconds (0: none,
    /// the adaptive spin).
    pub(crate) server_poll_ns: std::sync::atomic::AtomicU64,
    /// The busy-poll limit of the clients' waits for replies, as `server_poll_ns`.
    pub(crate) client_poll_ns: std::sync::atomic::AtomicU64,
    /// This channel's number, which no other channel of the process ever has (a streak of
    /// short waits is counted per channel: [`short_calls`]).
    #[cfg_attr(any(loom, not(target_os = "linux")), allow(dead_code))]
    id: ChannelId,
}

/// A number no other channel of the process has, before or after: an address would be
/// handed to the next channel once this one is dropped.
#[derive(Debug)]
#[cfg_attr(any(loom, not(target_os = "linux")), allow(dead_code))]
struct ChannelId(u64);

impl Default for ChannelId {
    fn default() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        ChannelId(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

impl Waits {
    /// Whether the clients busy-poll (`Client::set_busy_poll`): their waits spin up to the
    /// limit, long calls or not.
    #[cfg(not(loom))]
    pub(crate) fn client_polls(&self) -> bool {
        Side::Client(self).busy_poll().is_some()
    }

    /// Whether a client's long call is paced (`courier_core::pace::Pace`): it sleeps through
    /// most of it, then spins for its end. Not where the server last waited on this CPU (the
    /// spin would keep it from answering), nor where other processes' busy threads leave the
    /// client and its server no CPU each ([`courier_core::placement::room_seen`]; a look that
    /// cannot tell is taken for room, as a wrong guess costs this one call): a paced spin
    /// there takes the time of the server or of another process's thread, and a woken thread
    /// finds a CPU that is not idle (no halted CPU to wake). Measured with one core busy on
    /// the 2-vCPU VM, pacing made a 300 µs call no faster (305.8 against ump's 305.3 µs) and
    /// its p99 1.28× ump's.
    #[cfg(not(loom))]
    pub(crate) fn paces_here(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            let server = self.server_cpu.load(std::sync::atomic::Ordering::Relaxed);
            server != courier_core::placement::this_cpu()
                && courier_core::placement::room_seen() != Some(false)
        }
        #[cfg(not(target_os = "linux"))]
        true
    }

    /// Where a client's long call is not paced ([`Waits::paces_here`]: a look that could tell
    /// found no CPU for each, or the server last waited on this one), the client sleeps
    /// through it on its server's CPU: it moves there first if the server last waited on
    /// another ([`courier_core::placement::move_to`]), at most once in [`JOIN_EVERY`] such
    /// calls of the thread (the hint is the CPU of the server's last yield, which a server
    /// that always finds a request waiting does not renew). The server then works on a CPU of
    /// its own
    /// (where it shares one with another process's busy thread, the scheduler soon moves one
    /// of the two onto the CPU the sleeping client leaves idle), and the answer wakes the
    /// client onto the CPU its server is about to leave, not onto one that another process's
    /// thread holds, which the wake-up has to take from it. A client that moved off its
    /// server's CPU while its first calls looked short, or that the scheduler placed apart,
    /// came back only by chance: measured with one core busy on the 2-vCPU VM, calls with
    /// 300 µs of work took 313–321 µs a call apart (and 15–35 µs more CPU), 305 µs together,
    /// as ump's.
    ///
    /// It does not look at the machine again: a look costs tens of microseconds of CPU, which
    /// a client beside its server takes from the server's work (a look in every 10 ms made
    /// 3 % of those 300 µs calls about 100 µs late).
    ///
    /// Returns the CPU it moved to (plus one), if it moved.
    #[cfg(all(not(loom), target_os = "linux"))]
    pub(crate) fn join_server(&self) -> Option<u32> {
        use courier_core::placement::{move_to, this_cpu};
        let server = self.server_cpu.load(std::sync::atomic::Ordering::Relaxed);
        if server == 0 || server == this_cpu() {
            return None;
        }
        if JOIN_SKIPS.try_with(take_one).unwrap_or(true) {
            return None;
        }
        let landed = move_to(server)?;
        let _ = JOIN_SKIPS.try_with(|n| n.set(JOIN_EVERY - 1));
        Some(landed)
    }

    /// This channel's number ([`ChannelId`]).
    #[cfg(all(not(loom), target_os = "linux"))]
    fn channel(&self) -> u64 {
        self.id.0
    }

    /// Stores a busy-poll limit (`Duration::ZERO`: none).
    pub(crate) fn set_limit(word: &std::sync::atomic::AtomicU64, limit: std::time::Duration) {
        let ns = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        word.store(ns, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Which side of a channel a wait is on, for its [`Waits`] (see [`Backoff`]).
#[derive(Clone, Copy)]
// Only the build without loom spins by the clock and places threads.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) enum Side<'a> {
    /// A server worker waiting for a request: notes its CPU in the hint when it yields.
    Server(&'a Waits),
    /// A client waiting for its reply: leaves its CPU when the hint says the server is on it.
    Client(&'a Waits),
    /// Any other wait.
    Other,
}

impl Side<'_> {
    /// This side's busy-poll limit, if it has one.
    #[cfg(not(loom))]
    fn busy_poll(self) -> Option<std::time::Duration> {
        let ns = match self {
            Side::Server(w) => w.server_poll_ns.load(Ordering::Relaxed),
            Side::Client(w) => w.client_poll_ns.load(Ordering::Relaxed),
            Side::Other => 0,
        };
        (ns > 0).then(|| std::time::Duration::from_nanos(ns))
    }
}

/// A value alone on its cache lines (128 bytes: x86 fetches lines in adjacent pairs), so that
/// writes to it do not take the line away from threads that read its neighbours: the queue's
/// producer end, its consumer end and the rarely written counters each get their own.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Spin-loop hint; under loom it yields so that spin loops make progress in the model.
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Parks the current thread until it is unparked, or until `deadline` if there is one.
///
/// Spurious wake-ups are possible, as with [`std::thread::park`]; callers re-check their
/// condition. Under loom deadlines are not modelled: the models never use timeouts.
#[inline]
pub(crate) fn park(deadline: Option<Instant>) {
    #[cfg(loom)]
    {
        let _ = deadline;
        loom::thread::park();
    }
    #[cfg(not(loom))]
    match deadline {
        None => std::thread::park(),
        Some(d) => {
            let now = Instant::now();
            if d > now {
                std::thread::park_timeout(d - now);
            }
        }
    }
}

/// `std::cell::UnsafeCell` with loom's closure-based API, so code is written once for both.
#[cfg(not(loom))]
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    #[inline]
    pub(crate) fn new(data: T) -> Self {
        Self(std::cell::UnsafeCell::new(data))
    }

    /// Gives `f` a shared raw pointer to the contents.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Gives `f` a mutable raw pointer to the contents.
    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Locks a mutex, ignoring poisoning: every critical section in this crate leaves its data
/// consistent before anything that could panic.
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> impl std::ops::DerefMut<Target = T> + '_ {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The bounded busy phase of every blocking wait in the crate: a few short spins, then steps
/// that spin briefly and yield the CPU, then give up so the caller can park.
///
/// How a waiter waits before it parks: first a pure spin for an adaptive time (below), then
/// a few short spins, then spins each followed by a yield, then the caller parks.
///
/// Yielding matters on small machines: when the peer thread shares our core, only a yield (or
/// a sleep) lets it run, while a long pure spin would burn the very time slice the answer
/// needs. When the peer runs on another core, `yield_now` returns at once and the spinning
/// goes on. An idle waiter burns a few microseconds of CPU, then sleeps.
///
/// The pure spin (not under loom) lasts the side's busy-poll limit when it has one
/// (`set_busy_poll`; cut short by the wait's deadline, and the thread's budget left as it
/// was), else this thread's current budget, which adapts to how its waits went:
///
/// ```text
/// wait answered before the first yield            -> budget doubles (from none: MIN_PURE),
///                                                    up to MAX_PURE
/// wait answered within MAX_PURE, though it yielded,
///   and no yield gave the CPU away                -> the same: a full pure spin would have
///                                                    seen the answer
/// any other wait (a yield that let another thread
///   run, a park, an answer later than MAX_PURE)   -> budget halves (below MIN_PURE: none)
/// no budget                                       -> one wait in PROBE_EVERY spins PROBE_NS
/// ```
///
/// A round trip between two running threads takes a few hundred nanoseconds, so while both
/// run the budget stays up and no wait pays a system call. The second rule keeps two threads
/// from settling into yielding at each other: each one's yields make the other's waits a few
/// microseconds long, which a pure spin would have ended at once. When the peer shares our
/// core (a busy machine) our yields give it the CPU and take longer (GAVE_WAY), the budget
/// goes to nothing and the waiter yields at once, as it would without it. A yield that gives a
/// whole time slice to a thread that does not wait ([`LOST_SLICE`]: another process's busy
/// thread) ends the yielding where other processes leave a CPU free: that wait parks, and so
/// do the thread's next [`YIELDLESS_WAITS`] waits where they would yield (a yielding thread
/// is not woken by its answer; a parked one is, onto the free CPU).
///
/// Where each side runs (Linux): a server that reaches a yield notes its CPU in the
/// channel's [`Waits::server_cpu`]; a client that reaches a yield and finds the server's CPU
/// to be its own (a server thread is often started on its client's CPU, and four clients on
/// two CPUs keep one beside the server) moves to another CPU once per wait
/// ([`courier_core::placement::move_off_this_cpu`]), when
/// [`courier_core::placement::room_elsewhere`] finds no other process's thread busy on the
/// other CPUs, or, if its calls are short ([`short_calls`]), when
/// [`courier_core::placement::free_cpu`] finds a CPU that holds at most one. Otherwise the
/// two would hand the CPU back and forth with yields (about 4 µs a call) for as long as the
/// load balancer leaves them together, which is long: both have always just run. Where every
/// CPU holds another process's busy thread the yields are the better trade, so then it
/// stays.
pub(crate) struct Backoff<'a> {
    step: u32,
    /// The side of the channel this wait is on.
    side: Side<'a>,
    /// This wait moved the thread (once is enough).
    moved: bool,
    /// When the wait began to spin: read at the first snooze, so that a wait answered at once
    /// pays no clock reading.
    #[cfg(not(loom))]
    start: Option<Instant>,
    #[cfg(not(loom))]
    pure: Option<PureSpin>,
    /// The pure spin is the side's busy-poll limit, not this thread's adaptive budget (which
    /// the wait then leaves as it was).
    #[cfg(not(loom))]
    polls: bool,
    /// The wait went past its pure spin and short spins (it yielded or will park).
    yielded: bool,
    /// One of its yields let another thread run on this CPU.
    #[cfg(not(loom))]
    gave_way: bool,
    /// The busy phase is over: the caller parks.
    #[cfg(not(loom))]
    parks: bool,
}

/// The pure spin of one wait: its budget and how many looks it made.
#[cfg(not(loom))]
struct PureSpin {
    budget: std::time::Duration,
    looks: u32,
}

/// A yield that keeps the thread off the CPU this long let another thread run (a yield with
/// nothing else to run returns in well under a microsecond).
#[cfg(not(loom))]
const GAVE_WAY: std::time::Duration = std::time::Duration::from_micros(3);

/// Looks between two readings of the clock in a pure spin. One look is one spin-loop hint
/// (a `PAUSE` takes about 25 ns on recent AMD cores, so a look per 16 hints would leave an
/// answer unseen for up to 400 ns), and a clock reading costs about two of them.
#[cfg(not(loom))]
pub(crate) const CLOCK_EVERY: u32 = 16;

#[cfg(not(loom))]
std::thread_local! {
    /// This thread's pure-spin budget, in nanoseconds.
    static PURE_NS: std::cell::Cell<u32> = const { std::cell::Cell::new(MAX_PURE_NS) };
    /// Waits begun with no budget, counted to place the probes.
    static BARE_WAITS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// With no budget, one wait in this many spins [`PROBE_NS`] anyway, to notice that spinning
/// pays again (a round trip takes longer than the short spins alone, so without probes a
/// thread whose budget fell to nothing would never find out).
#[cfg(not(loom))]
const PROBE_EVERY: u32 = 64;
/// How long a probe spins.
#[cfg(not(loom))]
const PROBE_NS: u32 = 2_000;

/// The longest pure spin, in nanoseconds.
#[cfg(not(loom))]
const MAX_PURE_NS: u32 = 4_000;
/// The shortest pure spin; a halved budget below it becomes none.
#[cfg(not(loom))]
const MIN_PURE_NS: u32 = 250;

impl Drop for Backoff<'_> {
    fn drop(&mut self) {
        #[cfg(not(loom))]
        if !self.polls {
            // The clock is read only for a wait that yielded (already a slow one).
            let spun = self
                .yielded
                .then(|| self.start.map(|s| s.elapsed()))
                .flatten();
            let quick = self.was_quick(spun);
            #[cfg(target_os = "linux")]
            if let Side::Client(waits) = self.side {
                note_wait_length(waits.channel(), spun);
            }
            let _ = PURE_NS.try_with(|b| {
                let cur = b.get();
                b.set(if !quick {
                    if cur / 2 < MIN_PURE_NS {
                        0
                    } else {
                        cur / 2
                    }
                } else {
                    cur.saturating_mul(2).clamp(MIN_PURE_NS, MAX_PURE_NS)
                });
            });
        }
    }
}

impl<'a> Backoff<'a> {
    /// Steps that only spin, `1 << step` hints each.
    #[cfg(not(loom))]
    const SPIN_STEPS: u32 = 3;
    /// All steps; those after `SPIN_STEPS` spin `1 << SPIN_STEPS` hints, then yield.
    #[cfg(not(loom))]
    const STEPS: u32 = 16;
    // Under loom every spin is a scheduling point: keep the busy phase to one step.
    #[cfg(loom)]
    const SPIN_STEPS: u32 = 1;
    #[cfg(loom)]
    const STEPS: u32 = 1;

    /// A wait on no side of a channel (no CPU hint, no busy-poll): the unit tests' waits.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn new() -> Self {
        Self::on(Side::Other, None)
    }

    /// A wait on `side` of a channel that ends at `deadline` if it has one (which bounds a
    /// busy-poll's spin).
    pub(crate) fn on(side: Side<'a>, deadline: Option<Instant>) -> Self {
        #[cfg(not(loom))]
        let polls = side.busy_poll();
        #[cfg(loom)]
        let _ = deadline;
        Self {
            step: 0,
            side,
            moved: false,
            #[cfg(not(loom))]
            start: None,
            #[cfg(not(loom))]
            gave_way: false,
            #[cfg(not(loom))]
            parks: false,
            #[cfg(not(loom))]
            polls: polls.is_some(),
            #[cfg(not(loom))]
            pure: match polls {
                // Busy-polling: one pure spin for the limit, or until the deadline.
                Some(limit) => Some(PureSpin {
                    budget: deadline.map_or(limit, |d| {
                        limit.min(d.saturating_duration_since(Instant::now()))
                    }),
                    looks: 0,
                }),
                None => PURE_NS
                    .try_with(std::cell::Cell::get)
                    .ok()
                    .map(|ns| if ns == 0 { Self::probe() } else { ns })
                    .filter(|&ns| ns > 0)
                    .map(|ns| PureSpin {
                        budget: std::time::Duration::from_nanos(u64::from(ns)),
                        looks: 0,
                    }),
            },
            yielded: false,
        }
    }

    /// Whether the wait, which spun for `spun` (`None`: not at all), counts as one a pure
    /// spin would have ended at once (see the table in the type's docs).
    #[cfg(not(loom))]
    fn was_quick(&self, spun: Option<std::time::Duration>) -> bool {
        let max = std::time::Duration::from_nanos(u64::from(MAX_PURE_NS));
        !self.yielded || (!self.gave_way && !self.parks && spun.is_some_and(|t| t <= max))
    }

    /// The pure spin of a wait begun with no budget: [`PROBE_NS`] once in [`PROBE_EVERY`]
    /// waits, else none.
    #[cfg(not(loom))]
    fn probe() -> u32 {
        BARE_WAITS
            .try_with(|n| {
                let k = n.get().wrapping_add(1);
                n.set(k);
                if k % PROBE_EVERY == 0 {
                    PROBE_NS
                } else {
                    0
                }
            })
            .unwrap_or(0)
    }

    /// Whether the wait so far only spun (it neither yielded nor is about to park).
    pub(crate) fn only_spun(&self) -> bool {
        !self.yielded
    }

    /// Waits a little. Returns `false` once the busy phase is over and the caller should park.
    #[inline]
    pub(crate) fn snooze(&mut self) -> bool {
        #[cfg(not(loom))]
        let start = *self.start.get_or_insert_with(Instant::now);
        #[cfg(not(loom))]
        if let Some(pure) = &mut self.pure {
            // One hint per look, so the caller sees its answer within a hint of its coming;
            // the clock is read every CLOCK_EVERY looks.
            let looks = pure.looks;
            pure.looks = looks.wrapping_add(1);
            let spent = looks % CLOCK_EVERY == CLOCK_EVERY - 1 && start.elapsed() >= pure.budget;
            if !spent {
                spin_loop();
                return true;
            }
            self.pure = None;
        }
        if self.step >= Self::STEPS {
            self.yielded = true;
            #[cfg(not(loom))]
            {
                self.parks = true;
            }
            return false;
        }
        for _ in 0..(1u32 << self.step.min(Self::SPIN_STEPS)) {
            spin_loop();
        }
        if self.step >= Self::SPIN_STEPS {
            self.yielded = true;
            if self.place() {
                // On another CPU now, away from the peer: no need to hand this one over.
                self.step += 1;
                return true;
            }
            #[cfg(not(loom))]
            if take_yieldless_wait() {
                // A recent yield lost a time slice to another thread: park instead.
                self.step = Self::STEPS;
                return true;
            }
            #[cfg(not(loom))]
            let before = Instant::now();
            yield_now();
            #[cfg(not(loom))]
            self.yielded_for(before.elapsed(), parking_pays);
        }
        self.step += 1;
        true
    }

    /// Notes a yield that kept the thread off its CPU for `off`: past [`GAVE_WAY`] it let
    /// another thread run; past [`LOST_SLICE`] that thread ran for a time slice, so if
    /// `parking_pays` (asked only then) this wait parks next and the thread's next
    /// [`YIELDLESS_WAITS`] waits do not yield.
    #[cfg(not(loom))]
    fn yielded_for(&mut self, off: std::time::Duration, parking_pays: impl FnOnce() -> bool) {
        if off >= GAVE_WAY {
            self.gave_way = true;
        }
        if off >= LOST_SLICE && parking_pays() {
            self.step = Self::STEPS - 1;
            let _ = YIELDLESS.try_with(|n| n.set(YIELDLESS_WAITS));
        }
    }
}

/// A yield that keeps the thread off its CPU this long gave a time slice to another
/// thread, not a moment to its peer (a peer on the same CPU answers within a few
/// microseconds, then waits itself): the CPU is shared with a thread that does not wait, as on
/// a machine where other processes keep the cores busy.
///
/// A thread that yields to such a thread is not woken when its answer comes: it waits for the
/// scheduler to pick it again, up to the rest of a time slice (milliseconds), while a parked
/// thread is woken by its answer onto a free CPU. So where other processes leave a CPU free
/// ([`parking_pays`]), a wait that lost a slice parks at once, and the thread's next
/// [`YIELDLESS_WAITS`] waits that reach their yields park there instead. On a 2-core VM with
/// one core kept busy by another process, one client and one server made 259–605 k calls/s
/// this way (median 3.8 µs, or 210–240 ns in the runs where the two settled on both CPUs),
/// against 62–222 k calls/s with the yields, whose p99 was as good but whose late 1 % came
/// milliseconds late (courier-bench local, (1) with one core busy). Since the look at the
/// host's load stopped taking our own threads for busy ones (`courier_core::placement`), the
/// pair starts on both CPUs, and since a client of short calls moves off its server's CPU
/// beside one busy thread ([`short_calls`]), it comes back there whenever a wake-up brought
/// the two together: 1.9–4.9 M calls/s at 150–160 ns, p99 0.19–0.66 µs. With both
/// cores busy the yields stay: parked there, the pair made 20–128 k calls/s against
/// 132 k–1.4 M yielding (a woken thread waits for a busy one's slice to end; two that yield to
/// each other on a shared CPU trade it at once).
///
/// Shorter limits, or more yieldless waits, also take for lost slices the yields of four
/// clients and their server sharing two idle CPUs (which hand each other the CPU for tens of
/// microseconds at times), and then park where a yield was quicker: 50 µs and 1024 waits
/// raised that scenario's p99 from 0.3 µs to 27–36 µs.
#[cfg(not(loom))]
const LOST_SLICE: std::time::Duration = std::time::Duration::from_micros(200);

/// Waits that park instead of yielding after a yield lost a slice ([`LOST_SLICE`]); the next
/// one yields again, to notice that the machine is idle again.
#[cfg(not(loom))]
const YIELDLESS_WAITS: u32 = 64;

#[cfg(not(loom))]
std::thread_local! {
    /// Waits this thread still parks without yielding (see [`LOST_SLICE`]).
    static YIELDLESS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether a thread that parks is woken onto a CPU at once: other processes leave one free
/// ([`courier_core::placement::free_cpu`], Linux). With every CPU busy a woken thread waits
/// for another process's thread to end its slice, and two threads that yield to each other on
/// a shared CPU do better: there the yields stay.
#[cfg(all(not(loom), target_os = "linux"))]
fn parking_pays() -> bool {
    courier_core::placement::free_cpu()
}

/// Elsewhere the host's load is not looked at: the yields stay.
#[cfg(all(not(loom), not(target_os = "linux")))]
fn parking_pays() -> bool {
    false
}

/// Whether this wait parks without yielding (and counts it): a recent yield of this thread lost
/// a time slice ([`LOST_SLICE`]).
#[cfg(not(loom))]
fn take_yieldless_wait() -> bool {
    YIELDLESS.try_with(take_one).unwrap_or(false)
}

/// Takes one from a thread's countdown of waits: whether any was left.
#[cfg(not(loom))]
fn take_one(left: &std::cell::Cell<u32>) -> bool {
    let n = left.get();
    left.set(n.saturating_sub(1));
    n > 0
}

/// A wait answered within this long counts as short ([`short_calls`]); a call handed back and
/// forth on one CPU takes about 4 µs.
#[cfg(all(not(loom), target_os = "linux"))]
const SHORT_WAIT: std::time::Duration = std::time::Duration::from_micros(8);

/// Short waits in a row after which a client beside its server moves beside another
/// process's busy thread rather than hand the CPU back and forth ([`short_calls`]).
#[cfg(all(not(loom), target_os = "linux"))]
const SHORT_STREAK: u32 = 3;

/// A client moves to its server's CPU at most once in this many long calls that are not
/// paced ([`Waits::join_server`]).
#[cfg(all(not(loom), target_os = "linux"))]
const JOIN_EVERY: u32 = 16;

#[cfg(all(not(loom), target_os = "linux"))]
std::thread_local! {
    /// Chances to move to its server's CPU this thread still skips ([`JOIN_EVERY`]).
    static JOIN_SKIPS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

#[cfg(all(not(loom), target_os = "linux"))]
std::thread_local! {
    /// The channel of this thread's last wait as a client ([`ChannelId`]), and its waits in a row
    /// on that channel answered within [`SHORT_WAIT`].
    static SHORT_WAITS: std::cell::Cell<(u64, u32)> = const { std::cell::Cell::new((0, 0)) };
}

/// Counts a client's wait on `channel` ([`ChannelId`]) that spun (and yielded) for `spun`
/// (`None`: answered in its pure spin) in this thread's streak of short waits, which a wait
/// on another channel starts over.
#[cfg(all(not(loom), target_os = "linux"))]
fn note_wait_length(channel: u64, spun: Option<std::time::Duration>) {
    let short = spun.is_none_or(|t| t <= SHORT_WAIT);
    let _ = SHORT_WAITS.try_with(|n| {
        let (on, streak) = n.get();
        let streak = if on == channel { streak } else { 0 };
        n.set((channel, if short { streak.saturating_add(1) } else { 0 }));
    });
}

/// Whether this thread's last [`SHORT_STREAK`] waits, all on `channel`
/// ([`ChannelId`]), were each answered within [`SHORT_WAIT`]. Short calls on one channel
/// say nothing of another's: a thread that had made short calls and then called a server
/// whose every call took 300 µs moved off that server's CPU at its first wait, beside another
/// process's busy thread, for good (the client then sleeps through each call, and its wake-up
/// waits for that thread: 313–316 µs a call in 1 round of 5 to 3 of 5 in `courier-bench
/// local`'s (4) with one core busy, 305 µs otherwise).
///
/// Where the calls are short, a client beside its server does better on a CPU
/// shared with another process's busy thread, spinning, than handing its own CPU back and
/// forth with yields. It loses time slices to that thread now and then (a wait that lost one
/// parks, [`LOST_SLICE`]); between them its calls take a few hundred nanoseconds instead of
/// about 4 µs. With one core of two kept busy, a client and server calling for 2 s made, per
/// 100 ms window, 0.5–0.9 M calls/s at 0.54 µs where the pair ran apart and 0.25–0.34 M at
/// 3.9 µs where it handed over, about half the windows each (the load balancer and wake-ups
/// bring the two together again; nothing moved them apart but chance); with this rule,
/// 2.0–2.7 M calls/s at 180–190 ns (p99 0.2–0.3 µs) in 19 windows of 20.
#[cfg(all(not(loom), target_os = "linux"))]
fn short_calls(channel: u64) -> bool {
    SHORT_WAITS
        .try_with(|n| n.get().0 == channel && n.get().1 >= SHORT_STREAK)
        .unwrap_or(false)
}

/// Placement checks (one at each yield of a client wait) that a thread skips after one found
/// no room elsewhere.
#[cfg(all(not(loom), target_os = "linux"))]
const QUIET_AFTER_NO_ROOM: u32 = 64;

#[cfg(all(not(loom), target_os = "linux"))]
std::thread_local! {
    /// Placement checks this thread has still to skip (see [`QUIET_AFTER_NO_ROOM`]).
    static QUIET_WAITS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether this placement check is skipped (and counts it).
#[cfg(all(not(loom), target_os = "linux"))]
fn placement_quiet() -> bool {
    QUIET_WAITS.try_with(take_one).unwrap_or(true)
}

impl Backoff<'_> {
    /// At a yield: a server notes its CPU, a client beside its server moves (see the type's
    /// docs). Returns whether the thread moved.
    #[cfg(all(not(loom), target_os = "linux"))]
    fn place(&mut self) -> bool {
        use courier_core::placement::{
            free_cpu, move_off_this_cpu, moves_allowed, room_elsewhere, this_cpu,
        };
        match self.side {
            Side::Server(waits) => {
                let hint = &waits.server_cpu;
                let cpu = this_cpu();
                // Stored only when it changed: clients read the line.
                if hint.load(Ordering::Relaxed) != cpu {
                    hint.store(cpu, Ordering::Relaxed);
                }
                false
            }
            Side::Client(waits) => {
                let hint = &waits.server_cpu;
                if self.moved
                    || !moves_allowed()
                    || placement_quiet()
                    || hint.load(Ordering::Relaxed) != this_cpu()
                {
                    return false;
                }
                // Another CPU holds no busy thread of another process, or the calls are short
                // and one holds no more than a single one.
                if !room_elsewhere() {
                    if !free_cpu() {
                        // Beside its server with no room elsewhere is how a loaded machine
                        // runs every call: skip the next checks of this thread.
                        let _ = QUIET_WAITS.try_with(|n| n.set(QUIET_AFTER_NO_ROOM));
                        return false;
                    }
                    if !short_calls(waits.channel()) {
                        // Not yet: the next yield asks again (after a wait that parked, the
                        // streak starts over).
                        return false;
                    }
                }
                self.moved = true;
                move_off_this_cpu().is_some()
            }
            Side::Other => false,
        }
    }

    #[cfg(any(loom, not(target_os = "linux")))]
    fn place(&mut self) -> bool {
        let _ = (self.side, self.moved);
        false
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn budget() -> u32 {
        PURE_NS.with(std::cell::Cell::get)
    }

    /// Runs `f` on a fresh thread (a fresh budget).
    fn on_new_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().unwrap();
    }

    #[test]
    fn a_wait_that_parks_halves_the_pure_spin_and_a_quick_one_doubles_it() {
        on_new_thread(|| {
            assert_eq!(budget(), MAX_PURE_NS);
            let mut b = Backoff::new();
            while b.snooze() {}
            drop(b);
            assert_eq!(budget(), MAX_PURE_NS / 2);
            for _ in 0..8 {
                let mut b = Backoff::new();
                while b.snooze() {}
            }
            assert_eq!(budget(), 0, "halved below the minimum: no pure spin");
            // With no budget, one wait in PROBE_EVERY spins PROBE_NS anyway.
            let probes = (0..2 * PROBE_EVERY)
                .filter(|_| {
                    let b = Backoff::new();
                    let probe = b.pure.is_some();
                    std::mem::forget(b);
                    probe
                })
                .count();
            assert_eq!(probes, 2);
            // With no budget the first snoozes only spin: answered there, the budget is back.
            let mut b = Backoff::new();
            assert!(b.snooze());
            drop(b);
            assert_eq!(budget(), MIN_PURE_NS);
            for _ in 0..8 {
                drop(Backoff::new());
            }
            assert_eq!(budget(), MAX_PURE_NS, "doubled up to the maximum");
        });
    }

    fn yieldless_left() -> u32 {
        YIELDLESS.with(std::cell::Cell::get)
    }

    /// A wait at its first yield (set by hand: no real yield, whose length the test could not
    /// control on a busy machine).
    fn at_first_yield() -> Backoff<'static> {
        let mut b = Backoff::new();
        b.pure = None;
        b.yielded = true;
        b.step = Backoff::SPIN_STEPS + 1;
        b
    }

    #[test]
    fn a_yield_that_lost_a_slice_parks_and_the_next_waits_do_not_yield() {
        on_new_thread(|| {
            // Off the CPU for a moment (a peer answered): the wait goes on yielding.
            let pays = || true;
            let mut b = at_first_yield();
            b.yielded_for(std::time::Duration::from_micros(10), pays);
            assert!(b.gave_way);
            assert!(
                b.step < Backoff::STEPS - 1,
                "a short yield ended the busy phase"
            );
            assert_eq!(yieldless_left(), 0);
            std::mem::forget(b);
            // Off the CPU for a slice with every CPU busy: parking would not pay, the wait
            // goes on yielding.
            let mut b = at_first_yield();
            b.yielded_for(LOST_SLICE, || false);
            assert!(b.step < Backoff::STEPS - 1, "parked beside busy CPUs");
            assert_eq!(yieldless_left(), 0);
            std::mem::forget(b);
            // Off the CPU for a slice with a CPU free: this wait parks at its next snooze...
            let mut b = at_first_yield();
            b.yielded_for(LOST_SLICE, pays);
            b.step += 1; // as `snooze` does after its yield
            assert!(!b.snooze(), "a lost slice did not end the busy phase");
            std::mem::forget(b);
            assert_eq!(yieldless_left(), YIELDLESS_WAITS);
            // ... and the next YIELDLESS_WAITS waits park where they would yield, without a
            // yield (the first snooze that reaches the yields skips them).
            for _ in 0..YIELDLESS_WAITS {
                let mut b = Backoff::new();
                b.pure = None;
                while !b.yielded {
                    assert!(b.snooze());
                }
                assert!(!b.gave_way && b.step == Backoff::STEPS);
                assert!(!b.snooze(), "a wait went on after a lost slice");
                std::mem::forget(b);
            }
            // Then the waits yield again.
            assert_eq!(yieldless_left(), 0);
            assert!(!take_yieldless_wait());
        });
    }

    #[test]
    fn a_wait_that_yielded_counts_as_quick_only_if_short_and_nobody_else_ran() {
        let us = std::time::Duration::from_micros;
        let mut b = Backoff::new();
        assert!(b.was_quick(None), "answered at the first look");
        b.yielded = true;
        assert!(
            b.was_quick(Some(us(3))),
            "a full pure spin would have seen it"
        );
        assert!(
            !b.was_quick(Some(us(5))),
            "longer than the longest pure spin"
        );
        assert!(!b.was_quick(None));
        b.gave_way = true;
        assert!(!b.was_quick(Some(us(1))), "a yield let another thread run");
        b.gave_way = false;
        b.parks = true;
        assert!(!b.was_quick(Some(us(1))), "it went to sleep");
        std::mem::forget(b);
    }

    #[test]
    fn the_pure_spin_lasts_about_its_budget_before_the_yields() {
        on_new_thread(|| {
            let start = Instant::now();
            let mut b = Backoff::new();
            while b.snooze() && !b.yielded {}
            assert!(b.yielded);
            assert!(
                start.elapsed() >= std::time::Duration::from_nanos(u64::from(MAX_PURE_NS)),
                "left the pure spin after {:?}",
                start.elapsed()
            );
        });
    }

    /// A thread's streak of short waits is counted per channel: short calls on one channel
    /// do not make its first calls on another look short (before, they moved a client of
    /// long calls off its server's CPU beside another process's busy thread, for good).
    #[cfg(target_os = "linux")]
    #[test]
    fn short_calls_are_counted_per_channel() {
        on_new_thread(|| {
            let (a, b) = (Waits::default(), Waits::default());
            let (a, b) = (a.channel(), b.channel());
            let short = Some(SHORT_WAIT);
            for _ in 0..SHORT_STREAK {
                assert!(!short_calls(a));
                note_wait_length(a, short);
            }
            assert!(short_calls(a), "{SHORT_STREAK} short waits in a row");
            assert!(!short_calls(b), "none yet on the other channel");
            note_wait_length(b, None);
            assert!(!short_calls(b), "one short wait on it");
            assert!(
                !short_calls(a),
                "a wait on another channel starts the streak over"
            );
            for _ in 0..SHORT_STREAK {
                note_wait_length(a, None);
            }
            note_wait_length(a, Some(SHORT_WAIT * 2));
            assert!(!short_calls(a), "a long wait starts it over");
        });
    }

    /// A client whose long call is not paced sleeps on its server's CPU: it moves there when
    /// the server last waited on another, and only then, at most once in `JOIN_EVERY` such
    /// calls.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_client_joins_its_servers_cpu() {
        use courier_core::placement::{move_to, moves_of_this_thread, this_cpu};
        use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
        let full = sched_getaffinity(None).unwrap();
        let allowed: Vec<usize> = (0..CpuSet::MAX_CPU).filter(|&c| full.is_set(c)).collect();
        if allowed.len() < 2 {
            eprintln!("skipped: this process may run on one CPU only ({allowed:?})");
            return;
        }
        on_new_thread(move || {
            let waits = Waits::default();
            let (home, other) = (allowed[0] as u32 + 1, allowed[1] as u32 + 1);
            assert_eq!(waits.join_server(), None, "no server seen yet");
            // Pinned beside the server: it stays.
            let mut one = CpuSet::new();
            one.set(allowed[0]);
            sched_setaffinity(None, &one).unwrap();
            waits.server_cpu.store(home, Ordering::Relaxed);
            assert_eq!(waits.join_server(), None, "beside its server already");
            sched_setaffinity(None, &full).unwrap();
            // The server last waited elsewhere: the client goes there (the scheduler may put
            // the thread there first: then it is moved back).
            waits.server_cpu.store(other, Ordering::Relaxed);
            assert_eq!(moves_of_this_thread(), 0);
            let joined = (0..10).find_map(|_| {
                if this_cpu() == other {
                    let _ = move_to(home);
                }
                waits.join_server()
            });
            assert_eq!(joined, Some(other));
            assert_eq!(sched_getaffinity(None).unwrap(), full, "the mask is kept");
            // Apart again at once: the next chance is skipped.
            let _ = move_to(home);
            let moves = moves_of_this_thread();
            assert_eq!(waits.join_server(), None, "moved again at the next call");
            assert_eq!(moves_of_this_thread(), moves);
        });
    }
}
