//! Running a benchmark's rows: repeated rounds, on an idle machine and with one core kept busy
//! by a competing process, with failures recorded rather than fatal.
//!
//! ```text
//! for each load (idle, then busy):
//!     for each round (each starts at a different row):
//!         for each row: [start the burner] -> measure -> [stop the burner] -> pool the samples
//! ```
//!
//! The busy load is one process (this binary, re-executed as `courier-bench burn`) spinning on
//! the CPU for the length of one row: started before the row's own processes and threads, and
//! killed after. Its CPU time is not counted in the row's CPU/call. On the 2-core machines the
//! numbers are published for, that leaves the row one free core for two sides.

use crate::stats::{self, Samples};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The state of the machine a row is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Load {
    /// Nothing else runs.
    Idle,
    /// A competing process spins on one core.
    Busy,
}

impl Load {
    /// The heading of the load's table.
    pub(crate) fn title(self) -> &'static str {
        match self {
            Load::Idle => "Idle machine",
            Load::Busy => "One core busy (a competing process spins on it for every row)",
        }
    }

    /// What follows a scenario's name in the table of this load, so that a row's scenario
    /// cell says which load it was measured under.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Load::Idle => "",
            Load::Busy => " · 1 core busy",
        }
    }

    /// The short name, in progress lines, goal texts and JSON.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Load::Idle => "idle",
            Load::Busy => "busy",
        }
    }
}

/// The report's line on the loads: how the busy one is made; `what` are a row's own
/// (`threads` or `processes`).
pub(crate) fn loads_note(what: &str) -> String {
    format!(
        "- loads: each table is one load. *One core busy*: a competing process (this binary, \
         `courier-bench burn`) spins on one core during every row, started before the row's \
         {what} and killed after; its CPU time is not in CPU/call.\n"
    )
}

/// Which loads to measure under (`--load`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Loads {
    /// The idle machine only.
    Idle,
    /// One core busy only.
    Busy,
    /// Both, idle first.
    Both,
}

impl Loads {
    /// The loads, in the order they are measured.
    pub(crate) fn list(self) -> &'static [Load] {
        match self {
            Loads::Idle => &[Load::Idle],
            Loads::Busy => &[Load::Busy],
            Loads::Both => &[Load::Idle, Load::Busy],
        }
    }
}

/// The options every row-based benchmark shares (flattened into its `Args`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RoundArgs {
    /// Rounds per load: each round measures every row once, a row's samples from all rounds
    /// are pooled, and the spread of the rounds' medians is reported (--quick runs one).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub(crate) rounds: usize,
    /// Which machine loads to measure under: `idle`, `busy` (a competing process spins on
    /// one core during every row, started and stopped by the benchmark), or `both`.
    #[arg(long, value_enum, default_value_t = Loads::Both)]
    pub(crate) load: Loads,
}

impl RoundArgs {
    /// Rounds to run: one with `quick`.
    pub(crate) fn rounds(&self, quick: bool) -> usize {
        if quick {
            1
        } else {
            self.rounds.max(1)
        }
    }

    /// The schedule of benchmark `bench`: these rounds (one with `quick`) and loads, with a
    /// progress bar if `bar`.
    pub(crate) fn schedule(&self, bench: &'static str, quick: bool, bar: bool) -> Schedule {
        Schedule {
            bench,
            rounds: self.rounds(quick),
            loads: self.load.list(),
            bar,
        }
    }
}

/// A row measured under one load: the index of its spec and its pooled samples.
pub(crate) struct Measured {
    /// Index into the specs given to [`run`].
    pub(crate) spec: usize,
    /// The load it was measured under.
    pub(crate) load: Load,
    /// Every round's samples, pooled.
    pub(crate) samples: Samples,
}

/// How to run: rounds, loads, and where progress goes.
pub(crate) struct Schedule {
    /// The benchmark's name, in progress lines.
    pub(crate) bench: &'static str,
    /// Rounds per load.
    pub(crate) rounds: usize,
    /// The loads, in order.
    pub(crate) loads: &'static [Load],
    /// A progress bar on stderr instead of a line per row.
    pub(crate) bar: bool,
}

/// Measures every spec `rounds` times under each load with `measure(spec, round)`. A spec that
/// fails (an error or a panic) is dropped from that load, its failure recorded; the others
/// go on. Returns the rows measured and the failures.
pub(crate) fn run<S>(
    how: &Schedule,
    specs: &[S],
    label: impl Fn(&S) -> String,
    mut measure: impl FnMut(&S, usize) -> Result<Samples, String>,
) -> (Vec<Measured>, Vec<String>) {
    let mut progress = Progress {
        bench: how.bench,
        bar: how.bar,
        done: 0,
        total: how.loads.len() * how.rounds * specs.len(),
    };
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for &load in how.loads {
        let mut pooled: Vec<Option<Samples>> = specs.iter().map(|_| None).collect();
        let mut broken = vec![false; specs.len()];
        for round in 0..how.rounds {
            // Each round starts at a different row, so that a change of load on the machine
            // during the run falls on every row rather than on one.
            let offset = round * specs.len() / how.rounds;
            for i in (0..specs.len()).map(|i| (i + offset) % specs.len()) {
                let text = format!(
                    "{} [{}, round {}/{}]",
                    label(&specs[i]),
                    load.tag(),
                    round + 1,
                    how.rounds
                );
                progress.start(&text);
                if broken[i] {
                    progress.tick();
                    continue;
                }
                stats::set_current_row(&text);
                let outcome = match load {
                    Load::Idle => once(&mut measure, &specs[i], round),
                    Load::Busy => match Burner::start() {
                        Ok(burner) => {
                            let outcome = once(&mut measure, &specs[i], round);
                            drop(burner);
                            outcome
                        }
                        Err(e) => Err(e),
                    },
                };
                progress.tick();
                match outcome {
                    Ok(samples) => match &mut pooled[i] {
                        Some(all) => all.absorb(samples),
                        empty => *empty = Some(samples),
                    },
                    Err(e) => {
                        failed.push(format!("{text}: {e}"));
                        broken[i] = true;
                    }
                }
            }
        }
        for (spec, samples) in pooled.into_iter().enumerate() {
            if let (false, Some(samples)) = (broken[spec], samples) {
                rows.push(Measured {
                    spec,
                    load,
                    samples,
                });
            }
        }
    }
    rows.sort_by_key(|m| (m.load == Load::Busy, m.spec));
    (rows, failed)
}

/// One measurement, a panic turned into an error.
fn once<S>(
    measure: &mut impl FnMut(&S, usize) -> Result<Samples, String>,
    spec: &S,
    round: usize,
) -> Result<Samples, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| measure(spec, round)))
        .unwrap_or_else(|_| Err("panicked (see stderr)".to_string()))
}

/// The competing process of the busy load: killed and reaped when dropped.
pub(crate) struct Burner {
    child: Child,
}

/// A burner ends itself after this long, whatever happens (a row takes seconds).
const BURN_LIMIT: Duration = Duration::from_secs(300);

impl Burner {
    /// Starts `courier-bench burn`.
    pub(crate) fn start() -> Result<Burner, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let child = Command::new(exe)
            .arg("burn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting the competing process: {e}"))?;
        Ok(Burner { child })
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of `courier-bench burn`: spins until killed (or its parent dies, or
/// [`BURN_LIMIT`] passes).
pub(crate) fn burn() -> ! {
    #[cfg(target_os = "linux")]
    {
        let _ =
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    }
    stats::start_watchdog(BURN_LIMIT, "burner");
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}

/// Progress on stderr: a line per row, or a bar.
struct Progress {
    bench: &'static str,
    bar: bool,
    done: usize,
    total: usize,
}

impl Progress {
    const WIDTH: usize = 30;

    fn start(&self, label: &str) {
        if self.bar {
            let filled = self.done * Self::WIDTH / self.total.max(1);
            eprint!(
                "\rcourier-bench {} [{}{}] {}/{} {:<60.60}",
                self.bench,
                "#".repeat(filled),
                ".".repeat(Self::WIDTH - filled),
                self.done,
                self.total,
                label
            );
        } else {
            eprintln!(
                "courier-bench {}: {}/{}: {label}",
                self.bench,
                self.done + 1,
                self.total
            );
        }
    }

    fn tick(&mut self) {
        self.done += 1;
        if self.bar && self.done == self.total {
            eprintln!(
                "\rcourier-bench {} [{}] {}/{} {:<60}",
                self.bench,
                "#".repeat(Self::WIDTH),
                self.done,
                self.total,
                "done"
            );
        }
    }
}
