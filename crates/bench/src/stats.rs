//! Timing plans, per-operation samples and their summary (median, p99, calls/s).
//!
//! Every measured call is timed with chained timestamps: one `Instant::now()` after each reply,
//! the sample being the time since the previous one. So the timer cost (tens of nanoseconds) is
//! paid once per call and no gap between calls goes unmeasured. Calls are grouped in batches; a
//! row stops early (with fewer batches, reported as `n`) when it exceeds its time budget.

use std::future::Future;
use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// How many calls to make, and how long a row may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Unmeasured calls before the first batch.
    pub(crate) warmup: usize,
    /// The least time the unmeasured calls take (more are made until it has passed): a
    /// transport that adapts to the machine as it runs is measured as a caller that has been
    /// running a while sees it.
    pub(crate) settle: Duration,
    /// Number of measured batches.
    pub(crate) batches: usize,
    /// Calls per batch (per client, when there are several clients).
    pub(crate) per_batch: usize,
    /// After this much measuring, stop at the end of the current batch (at least
    /// [`MIN_BATCHES`] batches are always run).
    pub(crate) budget: Duration,
}

impl Plan {
    /// Whether the warm-up, `calls` calls and `since` its start in, goes on: fewer than
    /// [`Plan::warmup`] calls made, or less than [`Plan::settle`] passed.
    fn warming(&self, calls: u64, since: Instant) -> bool {
        calls < self.warmup as u64 || since.elapsed() < self.settle
    }
}

/// How long every row's unmeasured calls run, at least, in a full run ([`Plan::settle`]; each
/// round of a row is a new server and connection), so that rows show a caller that has been
/// running a while. courier's callers look at the machine's load every 10–50 ms and move
/// only on a look that the one before confirms: without this, a 1 MiB RPC row (3 ms a round)
/// often ended before its first move.
pub(crate) const SETTLE: Duration = Duration::from_millis(40);

/// Batches always measured, whatever the budget says (unless the row is [`OVERDUE`]).
pub(crate) const MIN_BATCHES: usize = 3;

/// A row that has taken this many times its budget stops at once, even in the middle of a
/// batch.
pub(crate) const OVERDUE: u32 = 3;

/// The raw result of one row: per-call samples and per-batch means.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    /// One round-trip time per measured call, in nanoseconds.
    pub(crate) per_op_ns: Vec<u64>,
    /// Mean round trip of each batch, in nanoseconds.
    pub(crate) batch_mean_ns: Vec<f64>,
    /// Wall time of the measured phase (all clients together).
    pub(crate) wall: Duration,
    /// Number of batches run (per client).
    pub(crate) batches: usize,
    /// Number of client threads or tasks.
    pub(crate) clients: usize,
    /// CPU time used during the measured phase by this process and the row's peer process
    /// (every thread of both), in nanoseconds.
    pub(crate) cpu_ns: u64,
    /// The figures of each measurement pooled here (one per round): the spread between
    /// repetitions of the row, and the tail within a round (its p99 ÷ its own median), which
    /// a round that runs wholly slower (the host moving the VM's CPUs) does not inflate as it
    /// inflates the pooled p99.
    pub(crate) rounds: Vec<Round>,
}

/// One round's figures of a row: what a goal compares round by round, so that a round the
/// host slowed (which moves the pooled figures of the rows it measured) shows as one round.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Round {
    /// Median of the round's samples, in nanoseconds.
    pub(crate) median_ns: f64,
    /// 99th percentile of the round's samples, in nanoseconds.
    pub(crate) p99_ns: f64,
    /// The round's calls divided by its wall time.
    pub(crate) calls_per_s: f64,
}

/// What a row reports.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    /// Median of the per-call samples, in nanoseconds.
    pub(crate) median_ns: f64,
    /// 99th percentile of the per-call samples, in nanoseconds.
    pub(crate) p99_ns: f64,
    /// Measured calls divided by the wall time of the measured phase.
    pub(crate) calls_per_s: f64,
    /// Smallest batch mean, in nanoseconds.
    pub(crate) batch_min_ns: f64,
    /// Largest batch mean, in nanoseconds.
    pub(crate) batch_max_ns: f64,
    /// Measured calls.
    pub(crate) n: usize,
    /// Batches (per client).
    pub(crate) batches: usize,
    /// Clients.
    pub(crate) clients: usize,
    /// CPU time per measured call, both processes (client and server) together, in
    /// nanoseconds: what a round trip costs the machine, beside what it costs in time.
    pub(crate) cpu_per_call_ns: f64,
    /// Smallest median of one round, in nanoseconds.
    pub(crate) round_min_ns: f64,
    /// Largest median of one round, in nanoseconds.
    pub(crate) round_max_ns: f64,
    /// Rounds pooled.
    pub(crate) rounds: usize,
    /// Largest p99 ÷ median of one round.
    pub(crate) round_tail_max: f64,
    /// Each round's figures, in the order of the rounds (the same for every row of a run).
    pub(crate) by_round: Vec<Round>,
}

impl Samples {
    /// Adds another measurement of the same row (e.g. from a later round): the samples are
    /// pooled, the wall times and batch counts add up.
    pub(crate) fn absorb(&mut self, other: Samples) {
        self.per_op_ns.extend(other.per_op_ns);
        self.batch_mean_ns.extend(other.batch_mean_ns);
        self.wall += other.wall;
        self.batches += other.batches;
        self.clients = self.clients.max(other.clients);
        self.cpu_ns += other.cpu_ns;
        self.rounds.extend(other.rounds);
    }

    /// Median, p99 and calls/s of these samples.
    pub(crate) fn summary(mut self) -> Summary {
        self.per_op_ns.sort_unstable();
        let n = self.per_op_ns.len();
        let fold = |f: fn(f64, f64) -> f64, init| self.batch_mean_ns.iter().copied().fold(init, f);
        let round =
            |f: fn(f64, f64) -> f64, init| self.rounds.iter().map(|r| r.median_ns).fold(init, f);
        Summary {
            median_ns: percentile(&self.per_op_ns, 0.50),
            p99_ns: percentile(&self.per_op_ns, 0.99),
            calls_per_s: rate(n, self.wall),
            batch_min_ns: fold(f64::min, f64::INFINITY),
            batch_max_ns: fold(f64::max, 0.0),
            n,
            batches: self.batches,
            clients: self.clients,
            cpu_per_call_ns: if n > 0 {
                self.cpu_ns as f64 / n as f64
            } else {
                f64::NAN
            },
            round_min_ns: round(f64::min, f64::INFINITY),
            round_max_ns: round(f64::max, 0.0),
            rounds: self.rounds.len(),
            round_tail_max: self
                .rounds
                .iter()
                .map(|r| r.p99_ns / r.median_ns)
                .fold(f64::NAN, f64::max),
            by_round: self.rounds,
        }
    }
}

/// `n` calls in `wall`, per second (0 for no time).
fn rate(n: usize, wall: Duration) -> f64 {
    let secs = wall.as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// The `q` quantile (0..=1) of sorted samples, nearest rank; NaN when there are none.
pub(crate) fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// One client's measurement, kept apart so that several clients can be merged.
#[derive(Debug, Default)]
struct ClientRun {
    per_op_ns: Vec<u64>,
    batch_mean_ns: Vec<f64>,
    batches: usize,
}

impl ClientRun {
    fn with_capacity(plan: &Plan) -> Self {
        ClientRun {
            per_op_ns: Vec::with_capacity(plan.batches * plan.per_batch),
            batch_mean_ns: Vec::with_capacity(plan.batches),
            batches: 0,
        }
    }

    /// True when the plan is done or the budget (counted from `start`) is spent.
    fn done(&self, plan: &Plan, start: Instant) -> bool {
        self.batches >= plan.batches
            || (self.batches >= MIN_BATCHES && start.elapsed() >= plan.budget)
            || start.elapsed() >= plan.budget * OVERDUE
    }

    /// True when a batch must end before its `calls` reach the plan's: the row has taken
    /// [`OVERDUE`] times its budget (round trips that each wait out a scheduler slice, on a
    /// busy machine). Looked at every 64 calls, after at least one.
    fn overdue(&self, plan: &Plan, start: Instant, calls: usize) -> bool {
        calls > 0 && calls % 64 == 0 && start.elapsed() >= plan.budget * OVERDUE
    }

    /// Records a batch of `calls` calls, timed from `batch_start` to `last`.
    fn end_batch(&mut self, batch_start: Instant, last: Instant, calls: usize) {
        if calls > 0 {
            self.batch_mean_ns
                .push((last - batch_start).as_nanos() as f64 / calls as f64);
        }
        self.batches += 1;
    }
}

/// The check every round trip makes: the reply is the request plus one.
#[inline]
fn check(request: u64, reply: u64) {
    assert_eq!(reply, request.wrapping_add(1), "wrong reply");
}

/// Runs the plan's calls on one blocking client: `call(x)` must return `x + 1`.
fn client_loop(plan: &Plan, call: &mut impl FnMut(u64) -> u64, start: Instant) -> ClientRun {
    let mut run = ClientRun::with_capacity(plan);
    let mut x = 0u64;
    while !run.done(plan, start) {
        let batch_start = Instant::now();
        let mut last = batch_start;
        let mut calls = 0;
        while calls < plan.per_batch && !run.overdue(plan, start, calls) {
            x = x.wrapping_add(1);
            let reply = call(black_box(x));
            let now = Instant::now();
            check(x, reply);
            run.per_op_ns.push((now - last).as_nanos() as u64);
            last = now;
            calls += 1;
        }
        run.end_batch(batch_start, last, calls);
    }
    run
}

fn warm_up(plan: &Plan, call: &mut impl FnMut(u64) -> u64) {
    let start = Instant::now();
    let mut i = 0u64;
    while plan.warming(i, start) {
        check(i, call(black_box(i)));
        i += 1;
    }
}

/// Measures one blocking client on the current thread.
pub(crate) fn measure_sync(plan: &Plan, mut call: impl FnMut(u64) -> u64) -> Samples {
    warm_up(plan, &mut call);
    let cpu = cpu_snapshot();
    let start = Instant::now();
    let run = client_loop(plan, &mut call, start);
    let wall = start.elapsed();
    merge(vec![run], wall, cpu.elapsed())
}

/// Measures one blocking client whose calls can fail (a round trip to another process):
/// `call(x)` returns `x + 1` or an error, and the first error ends the measurement and is
/// returned.
pub(crate) fn measure_fallible(
    plan: &Plan,
    mut call: impl FnMut(u64) -> Result<u64, String>,
) -> Result<Samples, String> {
    let mut error = None;
    let samples = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        measure_sync(plan, |x| match call(x) {
            Ok(reply) => reply,
            Err(e) => {
                error = Some(e);
                panic!("round trip failed");
            }
        })
    }));
    match (samples, error) {
        (Ok(s), _) => Ok(s),
        (Err(_), Some(e)) => Err(e),
        (Err(_), None) => Err("the measurement panicked".into()),
    }
}

/// Measures several blocking clients, one thread each, released together after their warm-up.
/// Calls/s is the total over all clients, divided by the time from release to the last
/// client's end.
pub(crate) fn measure_threads<C>(plan: &Plan, clients: Vec<C>) -> Samples
where
    C: FnMut(u64) -> u64 + Send,
{
    let count = clients.len();
    let barrier = Arc::new(Barrier::new(count + 1));
    std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .into_iter()
            .map(|mut call| {
                let barrier = Arc::clone(&barrier);
                s.spawn(move || {
                    warm_up(plan, &mut call);
                    barrier.wait();
                    let start = Instant::now();
                    client_loop(plan, &mut call, start)
                })
            })
            .collect();
        let cpu = cpu_snapshot();
        barrier.wait();
        let start = Instant::now();
        let runs: Vec<ClientRun> = handles
            .into_iter()
            .map(|h| h.join().expect("client thread panicked"))
            .collect();
        let wall = start.elapsed();
        merge(runs, wall, cpu.elapsed())
    })
}

/// An async client under test: one round trip per `call`.
///
/// (A trait rather than an async closure, so that the measuring future can be proven `Send`
/// and spawned on a multi-thread runtime.)
pub(crate) trait AsyncCall: Send {
    /// Sends `x` and resolves to the reply, which must be `x + 1`.
    fn call(&mut self, x: u64) -> impl Future<Output = u64> + Send + '_;
}

/// Measures one async client. Run it inside the runtime under test (e.g. in a spawned task).
pub(crate) async fn measure_async(plan: Plan, mut client: impl AsyncCall) -> Samples {
    let settling = Instant::now();
    let mut i = 0u64;
    while plan.warming(i, settling) {
        check(i, client.call(black_box(i)).await);
        i += 1;
    }
    let cpu = cpu_snapshot();
    let start = Instant::now();
    let mut run = ClientRun::with_capacity(&plan);
    let mut x = 0u64;
    while !run.done(&plan, start) {
        let batch_start = Instant::now();
        let mut last = batch_start;
        let mut calls = 0;
        while calls < plan.per_batch && !run.overdue(&plan, start, calls) {
            x = x.wrapping_add(1);
            let reply = client.call(black_box(x)).await;
            let now = Instant::now();
            check(x, reply);
            run.per_op_ns.push((now - last).as_nanos() as u64);
            last = now;
            calls += 1;
        }
        run.end_batch(batch_start, last, calls);
    }
    let wall = start.elapsed();
    merge(vec![run], wall, cpu.elapsed())
}

fn merge(runs: Vec<ClientRun>, wall: Duration, cpu_ns: u64) -> Samples {
    let clients = runs.len();
    let batches = runs.iter().map(|r| r.batches).min().unwrap_or(0);
    let mut out = Samples {
        wall,
        batches,
        clients,
        cpu_ns,
        ..Samples::default()
    };
    for run in runs {
        out.per_op_ns.extend(run.per_op_ns);
        out.batch_mean_ns.extend(run.batch_mean_ns);
    }
    let mut sorted = out.per_op_ns.clone();
    sorted.sort_unstable();
    out.rounds.push(Round {
        median_ns: percentile(&sorted, 0.50),
        p99_ns: percentile(&sorted, 0.99),
        calls_per_s: rate(sorted.len(), wall),
    });
    out
}

/// The pid of the row's peer process (0: the row runs in this process alone).
static PEER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Counts `pid`'s CPU time with this process's in the rows measured from now on (`None`:
/// this process alone).
pub(crate) fn watch_peer(pid: Option<u32>) {
    PEER.store(pid.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
}

/// The CPU time of this process so far (its CPU clock: every thread, ended ones included,
/// up to date for the running thread), and of each thread of the peer (the scheduler's
/// accounting, `/proc/<pid>/task/<tid>/schedstat`, in nanoseconds).
pub(crate) fn cpu_snapshot() -> CpuSnapshot {
    let peer = PEER.load(std::sync::atomic::Ordering::Relaxed);
    let mut threads = Vec::new();
    if peer != 0 {
        process_threads(&peer.to_string(), &mut threads);
    }
    CpuSnapshot {
        own: own_cpu_ns(),
        peer: threads,
    }
}

/// This process's CPU clock, in nanoseconds (0 where there is none).
fn own_cpu_ns() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// CPU times at one moment: this process's, and the peer's by thread.
#[derive(Debug, Default)]
pub(crate) struct CpuSnapshot {
    own: u64,
    peer: Vec<((String, String), u64)>,
}

impl CpuSnapshot {
    /// The CPU time used since `self` was taken: this process's growth, and each peer
    /// thread's (all of one that started since). A peer thread that ended meanwhile is not
    /// counted (its time cannot be read any more), so the peer's part is a lower bound.
    pub(crate) fn elapsed(&self) -> u64 {
        let now = cpu_snapshot();
        let peer: u64 = now
            .peer
            .iter()
            .map(|(id, t)| {
                let before = self
                    .peer
                    .iter()
                    .find(|(i, _)| i == id)
                    .map_or(0, |(_, b)| *b);
                t.saturating_sub(before)
            })
            .sum();
        now.own.saturating_sub(self.own) + peer
    }
}

/// Adds the on-CPU time of each thread of `/proc/<pid>` to `out`.
fn process_threads(pid: &str, out: &mut Vec<((String, String), u64)>) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for t in tasks.flatten() {
        let tid = t.file_name().to_string_lossy().into_owned();
        let Ok(stat) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = stat.split_whitespace().next().and_then(|v| v.parse().ok()) {
            out.push(((pid.to_owned(), tid), ns));
        }
    }
}

/// The row being measured, for the watchdog's message.
static CURRENT_ROW: Mutex<String> = Mutex::new(String::new());

/// Records which row is being measured now (named by the watchdog if it fires).
pub(crate) fn set_current_row(label: &str) {
    let mut current = CURRENT_ROW.lock().unwrap_or_else(|e| e.into_inner());
    current.clear();
    current.push_str(label);
}

/// Ends the process with status 3 if it is still running after `limit` (a hung row), naming
/// the row being measured. `what` says which process this is, for the message.
pub(crate) fn start_watchdog(limit: Duration, what: &'static str) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        let current = CURRENT_ROW
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        eprintln!(
            "courier-bench: {what} watchdog: still running after {limit:?}, in row {current}; \
             exiting"
        );
        std::process::exit(3);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn sync_measurement_counts_every_call() {
        let plan = Plan {
            warmup: 3,
            settle: Duration::ZERO,
            batches: 4,
            per_batch: 10,
            budget: Duration::from_secs(60),
        };
        let s = measure_sync(&plan, |x| x + 1).summary();
        assert_eq!(s.n, 40);
        assert_eq!(s.batches, 4);
        assert_eq!(s.clients, 1);
        assert!(s.batch_min_ns <= s.batch_max_ns);
    }

    #[test]
    fn threads_measurement_merges_clients() {
        let plan = Plan {
            warmup: 1,
            settle: Duration::ZERO,
            batches: 3,
            per_batch: 5,
            budget: Duration::from_secs(60),
        };
        let clients: Vec<_> = (0..3).map(|_| |x: u64| x + 1).collect();
        let s = measure_threads(&plan, clients).summary();
        assert_eq!(s.n, 45);
        assert_eq!(s.clients, 3);
    }

    #[test]
    fn rounds_pool_their_samples() {
        let plan = Plan {
            warmup: 0,
            settle: Duration::ZERO,
            batches: 3,
            per_batch: 4,
            budget: Duration::from_secs(60),
        };
        let mut all = measure_sync(&plan, |x| x + 1);
        all.absorb(measure_sync(&plan, |x| x + 1));
        let s = all.summary();
        assert_eq!((s.n, s.batches, s.clients, s.rounds), (24, 6, 1, 2));
        assert!(s.round_min_ns <= s.round_max_ns);
    }

    /// One round of 100 calls: `slow_calls` of `slow` ns, the others of `fast` ns.
    fn round(fast: u64, slow: u64, slow_calls: usize) -> Samples {
        let mut per_op_ns = vec![fast; 100 - slow_calls];
        per_op_ns.resize(100, slow);
        let run = ClientRun {
            per_op_ns,
            batch_mean_ns: vec![fast as f64],
            batches: 1,
        };
        merge(vec![run], Duration::from_millis(1), 0)
    }

    #[test]
    fn a_slow_round_moves_the_pooled_tail_but_not_the_round_tail() {
        // Four rounds at 100 ns and one the host slowed throughout, at 500 ns: pooled, the
        // p99 is that round's 500 ns (5 x the median); within each round it is the median.
        let rounds = |last: Samples| {
            let mut all = round(100, 100, 0);
            for _ in 0..3 {
                all.absorb(round(100, 100, 0));
            }
            all.absorb(last);
            all.summary()
        };
        let s = rounds(round(500, 500, 0));
        assert_eq!((s.median_ns, s.p99_ns), (100.0, 500.0));
        assert_eq!(s.round_tail_max, 1.0);
        // A tail inside one round shows (the p99 of 100 calls is the 99th: two slow calls
        // put it at 9 x that round's median; one does not).
        assert_eq!(rounds(round(100, 900, 1)).round_tail_max, 1.0);
        assert_eq!(rounds(round(100, 900, 2)).round_tail_max, 9.0);
    }
}
