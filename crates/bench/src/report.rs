//! The report: a header that says how and where the numbers were made, the markdown table with
//! the ratio of courier to each peer, and number formatting.

use crate::runner::Load;
use crate::stats::{Round, Summary};
use std::fmt::Write as _;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// The rustc that built this binary (`rustc -V`, recorded by build.rs).
const RUSTC_VERSION: &str = env!("COURIER_BENCH_RUSTC");

/// Where and when a run happened.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    /// Logical CPUs available to this process.
    pub(crate) nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub(crate) cpu: String,
    /// Kernel release.
    pub(crate) kernel: String,
    /// /proc/loadavg's first three fields, read before measuring.
    pub(crate) load: String,
    /// rustc -V at build time.
    pub(crate) rustc: &'static str,
    /// `git rev-parse --short HEAD`, with `-dirty` when the tree has changes.
    pub(crate) commit: String,
    /// UTC date and time of the start of the run.
    pub(crate) date: String,
}

impl Machine {
    /// Reads the machine's description; every part tolerates failure ("unknown").
    pub(crate) fn detect() -> Self {
        let unknown = || "unknown".to_string();
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(unknown);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| unknown());
        let load = load_average();
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            kernel,
            load,
            rustc: RUSTC_VERSION,
            commit: git_commit().unwrap_or_else(unknown),
            date: utc_now(),
        }
    }

    /// The header lines, in markdown.
    pub(crate) fn markdown(&self) -> String {
        format!(
            "- machine: nproc {}, CPU {}, kernel {}, load average {} (before the run)\n\
             - rustc: {}\n\
             - commit: {}\n\
             - date: {}\n",
            self.nproc, self.cpu, self.kernel, self.load, self.rustc, self.commit, self.date
        )
    }
}

/// /proc/loadavg's first three fields, or "unknown".
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut commit = String::from_utf8(out.stdout).ok()?.trim().to_string();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    if dirty {
        commit.push_str("-dirty");
    }
    Some(commit)
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Count from 0000-03-01 so that the leap day ends each 4/100/400-year cycle.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146_096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// One line of the table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// The scenario, e.g. "(1) sync 1 client : 1 server".
    pub(crate) scenario: &'static str,
    /// The implementation, e.g. "ump 0.13".
    pub(crate) name: &'static str,
    /// True for the row that the others are compared with (courier's) in its scenario.
    pub(crate) subject: bool,
    /// How the row was built (channel shapes, API calls).
    pub(crate) notes: &'static str,
    /// The machine's load while it was measured.
    pub(crate) load: Load,
    /// The measurement.
    pub(crate) summary: Summary,
}

/// The subject row of `scenario`, if it was measured (give rows of one load).
pub(crate) fn subject_of<'a>(rows: &'a [Row], scenario: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.scenario == scenario && r.subject)
}

/// The peers' rows of `scenario`: neither the subject, nor courier's other rows (its typed
/// stubs, its parked variant), nor the floors.
pub(crate) fn peers<'a>(rows: &'a [Row], scenario: &'a str) -> impl Iterator<Item = &'a Row> {
    rows.iter().filter(move |r| {
        r.scenario == scenario
            && !r.subject
            && !r.name.starts_with("floor")
            && !r.name.starts_with("courier")
    })
}

/// The rows measured under `load`.
pub(crate) fn of_load(rows: &[Row], load: Load) -> Vec<Row> {
    rows.iter().filter(|r| r.load == load).cloned().collect()
}

/// The loads that `rows` were measured under, idle first.
pub(crate) fn loads(rows: &[Row]) -> Vec<Load> {
    [Load::Idle, Load::Busy]
        .into_iter()
        .filter(|&l| rows.iter().any(|r| r.load == l))
        .collect()
}

/// One table per load, each under its heading (`###`).
pub(crate) fn tables(rows: &[Row], subject_name: &str) -> String {
    let mut out = String::new();
    for load in loads(rows) {
        let _ = writeln!(out, "### {}\n", load.title());
        out.push_str(&table(&of_load(rows, load), subject_name));
        out.push('\n');
    }
    out
}

/// The goals of every load: `goals(rows of one load, load)`, each goal's text prefixed with
/// the load.
pub(crate) fn goals_by_load(rows: &[Row], goals: impl Fn(&[Row], Load) -> Vec<Goal>) -> Vec<Goal> {
    let mut out = Vec::new();
    for load in loads(rows) {
        for mut goal in goals(&of_load(rows, load), load) {
            goal.text = format!("{}: {}", load.tag(), goal.text);
            out.push(goal);
        }
    }
    out
}

/// A measure of a round trip, pooled and in one round.
#[derive(Clone, Copy)]
struct Measure {
    name: &'static str,
    pooled: fn(&Summary) -> f64,
    round: fn(&Round) -> f64,
    /// Whether higher is better.
    higher: bool,
}

impl Measure {
    /// Whether `mine` is at least as good as `theirs`.
    fn at_least(self, mine: f64, theirs: f64) -> bool {
        if self.higher {
            mine >= theirs
        } else {
            mine <= theirs
        }
    }
}

/// The measures a goal compares.
const MEASURES: [Measure; 3] = [
    Measure {
        name: "median",
        pooled: |s| s.median_ns,
        round: |r| r.median_ns,
        higher: false,
    },
    Measure {
        name: "p99",
        pooled: |s| s.p99_ns,
        round: |r| r.p99_ns,
        higher: false,
    },
    Measure {
        name: "calls/s",
        pooled: |s| s.calls_per_s,
        round: |r| r.calls_per_s,
        higher: true,
    },
];

/// In how many rounds `holds(subject's round, reference's round)` for every one of `refs`,
/// of the rounds all the rows have (`None` when they have none, e.g. rows made up in a test).
fn rounds_held(
    c: &Row,
    refs: &[&Row],
    holds: impl Fn(&Round, &Round) -> bool,
) -> Option<(usize, usize)> {
    let n = c.summary.by_round.len();
    // Every row of a run has every round (a row that failed in one is left out).
    debug_assert!(refs.iter().all(|r| r.summary.by_round.len() == n));
    let n = refs
        .iter()
        .map(|r| r.summary.by_round.len())
        .fold(n, usize::min);
    let held = |i: usize| {
        refs.iter()
            .all(|r| holds(&c.summary.by_round[i], &r.summary.by_round[i]))
    };
    (n > 0).then(|| ((0..n).filter(|&i| held(i)).count(), n))
}

/// The median, over the rounds both rows have, of `c`'s `figure` ÷ `r`'s in the same round
/// (`None` without rounds). The rows of a round are measured one after the other, so a host
/// whose speed drifts between rounds (a VM whose CPUs it moves) moves both figures of a
/// pair alike: this ratio tells a tie from a lead better than the pooled one, which mixes the
/// rounds' speeds.
fn paired_ratio(c: &Row, r: &Row, figure: fn(&Round) -> f64) -> Option<f64> {
    let mut q: Vec<f64> = c
        .summary
        .by_round
        .iter()
        .zip(&r.summary.by_round)
        .map(|(a, b)| figure(a) / figure(b))
        .filter(|q| q.is_finite())
        .collect();
    q.sort_by(f64::total_cmp);
    let mid = q.len() / 2;
    match q.len() {
        0 => None,
        n if n % 2 == 1 => Some(q[mid]),
        _ => Some((q[mid - 1] + q[mid]) / 2.0),
    }
}

/// `subject`'s median, p99 and calls/s each at least as good as `reference`'s: three goals
/// (not measured if either row is missing).
pub(crate) fn as_good_as(text: &str, subject: Option<&Row>, reference: Option<&Row>) -> Vec<Goal> {
    MEASURES
        .iter()
        .map(|&m| {
            let text = format!("{text}: {}", m.name);
            match (subject, reference) {
                (Some(c), Some(r)) => Goal::versus(text, c, r, m),
                _ => Goal::not_measured(text),
            }
        })
        .collect()
}

/// The goals of the busy load for one scenario (give rows of one load; the peers are
/// [`peers`]): courier's median, p99 and calls/s each ahead of every peer's (the best peer is
/// the reference); and its CPU time per call at most that of the most frugal peer whose
/// median is as good or better (informational when no peer is that fast).
pub(crate) fn ahead_of_every_peer(rows: &[Row], scenario: &str) -> Vec<Goal> {
    let subject = subject_of(rows, scenario);
    let peers: Vec<&Row> = peers(rows, scenario).collect();
    let Some(c) = subject.filter(|_| !peers.is_empty()) else {
        return vec![Goal::not_measured(format!(
            "{scenario}: ahead of every peer"
        ))];
    };
    let mut goals = Vec::new();
    for m in MEASURES {
        let text = format!("{scenario}: {} ahead of every peer", m.name);
        // The peers with a figure for this measure; the best of them is the reference.
        let measured: Vec<&Row> = peers
            .iter()
            .copied()
            .filter(|r| (m.pooled)(&r.summary).is_finite())
            .collect();
        let best = measured.iter().copied().min_by(|a, b| {
            let (x, y) = ((m.pooled)(&a.summary), (m.pooled)(&b.summary));
            if m.higher {
                y.total_cmp(&x)
            } else {
                x.total_cmp(&y)
            }
        });
        goals.push(match best {
            Some(r) => Goal {
                // Round by round, ahead of every measured peer's figure of that round.
                rounds: rounds_held(c, &measured, |a, b| m.at_least((m.round)(a), (m.round)(b))),
                ..Goal::versus(text, c, r, m)
            },
            None => Goal::not_measured(text),
        });
    }
    let text =
        format!("{scenario}: CPU/call at most the best peer's with an equal or better median");
    let frugal = peers
        .iter()
        .filter(|r| r.summary.median_ns <= c.summary.median_ns)
        .min_by(|a, b| {
            a.summary
                .cpu_per_call_ns
                .total_cmp(&b.summary.cpu_per_call_ns)
        });
    goals.push(match frugal {
        Some(r) => Goal {
            text,
            courier: fmt_ns(c.summary.cpu_per_call_ns),
            reference: format!("{} ({})", fmt_ns(r.summary.cpu_per_call_ns), r.name),
            ratio: Some(c.summary.cpu_per_call_ns / r.summary.cpu_per_call_ns),
            verdict: Verdict::of(c.summary.cpu_per_call_ns <= r.summary.cpu_per_call_ns),
            rounds: None,
            paired: None,
        },
        None => Goal {
            text,
            courier: fmt_ns(c.summary.cpu_per_call_ns),
            reference: "no peer is as fast".into(),
            ratio: None,
            verdict: Verdict::Info,
            rounds: None,
            paired: None,
        },
    });
    goals
}

/// The markdown table: one line per row, with the ratio of the scenario's subject (courier) to
/// the row, for the median round trip (lower is better for courier) and calls/s (higher is
/// better for courier).
pub(crate) fn table(rows: &[Row], subject_name: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | name | median round trip | p99 | calls/s | {s}/peer median | {s}/peer calls/s | round medians (min–max) | n | CPU/call | notes |",
        s = subject_name
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for row in rows {
        let s = &row.summary;
        let (ratio_median, ratio_cps) = match subject_of(rows, row.scenario) {
            Some(subject) if !row.subject => (
                ratio(subject.summary.median_ns, s.median_ns),
                ratio(subject.summary.calls_per_s, s.calls_per_s),
            ),
            _ => ("—".to_string(), "—".to_string()),
        };
        let _ = writeln!(
            out,
            "| {}{} | {} | {} | {} | {} | {} | {} | {}–{} | {} | {} | {} |",
            row.scenario,
            row.load.suffix(),
            row.name,
            fmt_ns(s.median_ns),
            fmt_ns(s.p99_ns),
            fmt_rate(s.calls_per_s),
            ratio_median,
            ratio_cps,
            fmt_ns(s.round_min_ns),
            fmt_ns(s.round_max_ns),
            fmt_count(s.n, s.batches, s.clients),
            fmt_ns(s.cpu_per_call_ns),
            row.notes,
        );
    }
    out
}

/// Whether a goal was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Met.
    Pass,
    /// Not met.
    Miss,
    /// A comparison with no goal attached.
    Info,
    /// A row it needs was not measured (e.g. filtered out).
    NotMeasured,
}

impl Verdict {
    /// Pass when `ok`, else Miss.
    pub(crate) fn of(ok: bool) -> Self {
        if ok {
            Verdict::Pass
        } else {
            Verdict::Miss
        }
    }

    /// "PASS", "MISS", "info" or "not measured".
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::Info => "info",
            Verdict::NotMeasured => "not measured",
        }
    }
}

/// A performance goal and how the run did against it.
#[derive(Debug, Clone)]
pub(crate) struct Goal {
    /// What the goal says.
    pub(crate) text: String,
    /// The subject's figure, formatted.
    pub(crate) courier: String,
    /// The reference figure and its row, formatted.
    pub(crate) reference: String,
    /// Subject / reference.
    pub(crate) ratio: Option<f64>,
    /// The verdict.
    pub(crate) verdict: Verdict,
    /// In how many rounds the goal held when each round's own figures are compared, of how
    /// many (`None`: a goal not compared round by round). A verdict that one slowed round
    /// decides shows here as a count that disagrees with it.
    pub(crate) rounds: Option<(usize, usize)>,
    /// The median over the rounds of the subject's figure ÷ the reference's in the same round
    /// ([`paired_ratio`]; `None`: a goal not compared round by round).
    pub(crate) paired: Option<f64>,
}

impl Goal {
    /// A goal on medians: `subject`'s at most `limit` times `reference`'s (not measured if
    /// either row is missing).
    pub(crate) fn median(
        text: String,
        subject: Option<&Row>,
        reference: Option<&Row>,
        limit: f64,
    ) -> Self {
        match (subject, reference) {
            (Some(c), Some(r)) => {
                let q = c.summary.median_ns / r.summary.median_ns;
                Goal {
                    text,
                    courier: fmt_ns(c.summary.median_ns),
                    reference: format!("{} ({})", fmt_ns(r.summary.median_ns), r.name),
                    ratio: Some(q),
                    verdict: Verdict::of(q <= limit),
                    rounds: rounds_held(c, &[r], |a, b| a.median_ns / b.median_ns <= limit),
                    paired: paired_ratio(c, r, |round| round.median_ns),
                }
            }
            _ => Goal::not_measured(text),
        }
    }

    /// `subject`'s median beside `reference`'s, with no goal attached (`info`; not measured if
    /// either row is missing).
    pub(crate) fn informational_median(
        text: String,
        subject: Option<&Row>,
        reference: Option<&Row>,
    ) -> Self {
        let mut goal = Goal::median(text, subject, reference, f64::INFINITY);
        if goal.ratio.is_some() {
            goal.verdict = Verdict::Info;
            goal.rounds = None;
        }
        goal
    }

    /// `subject`'s measure `m` at least as good as `reference`'s.
    fn versus(text: String, c: &Row, r: &Row, m: Measure) -> Self {
        let (mine, theirs) = ((m.pooled)(&c.summary), (m.pooled)(&r.summary));
        let fmt = |v: f64| if m.higher { fmt_rate(v) } else { fmt_ns(v) };
        Goal {
            text,
            courier: fmt(mine),
            reference: format!("{} ({})", fmt(theirs), r.name),
            ratio: Some(mine / theirs),
            verdict: Verdict::of(m.at_least(mine, theirs)),
            rounds: rounds_held(c, &[r], |a, b| m.at_least((m.round)(a), (m.round)(b))),
            paired: paired_ratio(c, r, m.round),
        }
    }

    /// A goal whose rows were not measured.
    pub(crate) fn not_measured(text: String) -> Self {
        Goal {
            text,
            courier: "n/a".into(),
            reference: "n/a".into(),
            ratio: None,
            verdict: Verdict::NotMeasured,
            rounds: None,
            paired: None,
        }
    }
}

/// Both loads side by side, one line per implementation: the README's performance tables
/// are this section of a `--load both` run, pasted. Each scenario's subject is in bold and
/// its scenario is named once; the last column is the subject's median over the row's, idle
/// / busy. Rows are in the order of the idle table (then any measured only under load).
pub(crate) fn side_by_side(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | implementation | idle: median | p99 | calls/s | CPU/call \
         | 1 core busy: median | p99 | calls/s | CPU/call | courier ÷ row, median idle / busy |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for r in rows {
        if !keys.contains(&(r.scenario, r.name)) {
            keys.push((r.scenario, r.name));
        }
    }
    let find = |load: Load, scenario: &str, name: &str| {
        rows.iter()
            .find(|r| r.load == load && r.scenario == scenario && r.name == name)
    };
    let cells = |row: Option<&Row>| match row {
        Some(r) => {
            let s = &r.summary;
            format!(
                "{} | {} | {} | {}",
                fmt_ns(s.median_ns),
                fmt_ns(s.p99_ns),
                fmt_rate_short(s.calls_per_s),
                fmt_ns(s.cpu_per_call_ns)
            )
        }
        None => "— | — | — | —".to_string(),
    };
    let mut last_scenario = None;
    for (scenario, name) in keys {
        let (idle, busy) = (
            find(Load::Idle, scenario, name),
            find(Load::Busy, scenario, name),
        );
        let subject = idle.or(busy).is_some_and(|r| r.subject);
        let versus = |load: Load, row: Option<&Row>| {
            let of_load = |r: &&Row| r.load == load && r.scenario == scenario && r.subject;
            match (rows.iter().find(of_load), row) {
                (Some(s), Some(r)) if r.summary.median_ns > 0.0 => {
                    format!("{:.2}", s.summary.median_ns / r.summary.median_ns)
                }
                _ => "—".to_string(),
            }
        };
        let ratio = if subject {
            String::new()
        } else {
            format!(
                "{} / {}",
                versus(Load::Idle, idle),
                versus(Load::Busy, busy)
            )
        };
        let shown = if last_scenario == Some(scenario) {
            ""
        } else {
            scenario
        };
        last_scenario = Some(scenario);
        let name = if subject {
            format!("**{name}**")
        } else {
            name.to_string()
        };
        let _ = writeln!(
            out,
            "| {shown} | {name} | {} | {} | {ratio} |",
            cells(idle),
            cells(busy)
        );
    }
    out
}

/// The part of a report after its header: the table (courier's rows first), the goals, and
/// the rows that failed; with both loads, [`side_by_side`] too.
pub(crate) fn results(rows: &[Row], goals: &[Goal], failed: &[String]) -> String {
    let mut out = tables(rows, "courier");
    if loads(rows).len() == 2 {
        out.push_str("### Both loads side by side\n\n");
        out.push_str(&side_by_side(rows));
        out.push('\n');
    }
    out.push_str("\n## Goals (informational: the run exits 0 either way)\n\n");
    out.push_str(&goal_table(goals));
    if goals.iter().any(|g| g.rounds.is_some()) {
        out.push_str(
            "\n*rounds met*: in how many rounds the goal held when each round's own figures \
             are compared (median, p99 or calls/s of that round alone), against the row the \
             goal names or, for \"ahead of every peer\", against every peer; the verdict is on \
             the pooled figures, which one round the host slowed can move. *paired ratio*: the \
             median over the rounds of courier's figure ÷ the reference's in the same round \
             (the ratio column divides the pooled figures).\n",
        );
    }
    if !failed.is_empty() {
        out.push_str("\n## Rows that failed (left out of the table)\n\n");
        for f in failed {
            out.push_str(&format!("- {f}\n"));
        }
    }
    out
}

/// The goals as a markdown table.
pub(crate) fn goal_table(goals: &[Goal]) -> String {
    let mut out = String::from(
        "| goal | courier | reference | ratio | paired ratio | verdict | rounds met |\n|---|---:|---:|---:|---:|---|---:|\n",
    );
    for g in goals {
        let ratio = g.ratio.map_or("n/a".to_string(), |q| format!("{q:.2}x"));
        let paired = g.paired.map_or("—".to_string(), |q| format!("{q:.2}x"));
        let rounds = g
            .rounds
            .map_or("—".to_string(), |(met, n)| format!("{met}/{n}"));
        let cell = |t: &str| t.replace('|', "\\|");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {ratio} | {paired} | {} | {rounds} |",
            cell(&g.text),
            cell(&g.courier),
            cell(&g.reference),
            g.verdict.as_str()
        );
    }
    out
}

/// The run as JSON: machine, rows (times in nanoseconds) and goals.
pub(crate) fn json(benchmark: &str, machine: &Machine, rows: &[Row], goals: &[Goal]) -> String {
    let num = |x: f64| {
        if x.is_finite() {
            format!("{x:.1}")
        } else {
            "null".to_string()
        }
    };
    let mut out = String::from("{\n");
    let _ = writeln!(out, "  \"benchmark\": {},", json_str(benchmark));
    let _ = writeln!(
        out,
        "  \"machine\": {{\"nproc\": {}, \"cpu\": {}, \"kernel\": {}, \"load_before\": {}, \
         \"rustc\": {}, \"commit\": {}, \"date\": {}}},",
        machine.nproc,
        json_str(&machine.cpu),
        json_str(&machine.kernel),
        json_str(&machine.load),
        json_str(machine.rustc),
        json_str(&machine.commit),
        json_str(&machine.date)
    );
    out.push_str("  \"rows\": [\n");
    for (i, row) in rows.iter().enumerate() {
        let s = &row.summary;
        let _ = writeln!(
            out,
            "    {{\"scenario\": {}, \"load\": {}, \"name\": {}, \"subject\": {}, \"median_ns\": {}, \
             \"p99_ns\": {}, \"calls_per_s\": {}, \"batch_min_ns\": {}, \"batch_max_ns\": {}, \
             \"round_min_ns\": {}, \"round_max_ns\": {}, \"rounds\": {}, \"round_tail_max\": {}, \
             \"n\": {}, \"batches\": {}, \"clients\": {}, \"cpu_per_call_ns\": {}, \"notes\": {}}}{}",
            json_str(row.scenario),
            json_str(row.load.tag()),
            json_str(row.name),
            row.subject,
            num(s.median_ns),
            num(s.p99_ns),
            num(s.calls_per_s),
            num(s.batch_min_ns),
            num(s.batch_max_ns),
            num(s.round_min_ns),
            num(s.round_max_ns),
            s.rounds,
            num(s.round_tail_max),
            s.n,
            s.batches,
            s.clients,
            num(s.cpu_per_call_ns),
            json_str(row.notes),
            if i + 1 < rows.len() { "," } else { "" }
        );
    }
    out.push_str("  ],\n  \"goals\": [\n");
    for (i, g) in goals.iter().enumerate() {
        let _ = writeln!(
            out,
            "    {{\"goal\": {}, \"ratio\": {}, \"paired_ratio\": {}, \"verdict\": {}, \"rounds_met\": {}}}{}",
            json_str(&g.text),
            g.ratio.map_or("null".to_string(), |q| format!("{q:.4}")),
            g.paired.map_or("null".to_string(), |q| format!("{q:.4}")),
            json_str(g.verdict.as_str()),
            g.rounds
                .map_or("null".to_string(), |(met, n)| format!("[{met}, {n}]")),
            if i + 1 < goals.len() { "," } else { "" }
        );
    }
    out.push_str("  ]\n}\n");
    out
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `a / b` as "0.42x", or "n/a".
pub(crate) fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "n/a".to_string()
    }
}

/// A duration in nanoseconds, with a unit that keeps three or four significant digits.
pub(crate) fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        "n/a".to_string()
    } else if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// A difference of durations in nanoseconds: [`fmt_ns`] of its size, with a minus sign when
/// it is negative (e.g. a row measured below its floor).
pub(crate) fn fmt_ns_delta(ns: f64) -> String {
    if ns < 0.0 {
        format!("−{}", fmt_ns(-ns))
    } else {
        fmt_ns(ns)
    }
}

/// A rate per second, as "415.6 k" or "1.55 M".
pub(crate) fn fmt_rate(per_s: f64) -> String {
    fmt_rate_to(per_s, 1)
}

/// A rate per second to two or three significant digits: "415 k", "1.55 M", "378".
pub(crate) fn fmt_rate_short(per_s: f64) -> String {
    fmt_rate_to(per_s, 0)
}

/// A rate per second with `decimals` below a million (as is, or in thousands: "k"), two in
/// millions ("M").
fn fmt_rate_to(per_s: f64, decimals: usize) -> String {
    if !per_s.is_finite() {
        "n/a".to_string()
    } else if per_s < 1e3 {
        format!("{per_s:.decimals$}")
    } else if per_s < 1e6 {
        format!("{:.decimals$} k", per_s / 1e3)
    } else {
        format!("{:.2} M", per_s / 1e6)
    }
}

/// "50k (20×2500)" or, with several clients, "80k (4×20×1000)".
fn fmt_count(n: usize, batches: usize, clients: usize) -> String {
    let n_text = if n >= 10_000 && n % 1000 == 0 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    };
    let per_batch = n / batches.max(1) / clients.max(1);
    if clients > 1 {
        format!("{n_text} ({clients}×{batches}×{per_batch})")
    } else {
        format!("{n_text} ({batches}×{per_batch})")
    }
}

/// Prints the report `text`, and writes it to `markdown_out` and the rows and goals as JSON
/// to `json` when asked.
pub(crate) fn emit(
    benchmark: &str,
    text: &str,
    machine: &Machine,
    rows: &[Row],
    goals: &[Goal],
    markdown_out: Option<&std::path::Path>,
    json_out: Option<&std::path::Path>,
) -> Result<(), String> {
    print!("{text}");
    if let Some(path) = markdown_out {
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if let Some(path) = json_out {
        let json = json(benchmark, machine, rows, goals);
        std::fs::write(path, json).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// A row with made-up figures, for the tests of reports and goals: p99 twice the median,
/// the CPU per call equal to it.
#[cfg(test)]
pub(crate) fn test_row(
    scenario: &'static str,
    name: &'static str,
    subject: bool,
    load: Load,
    median_ns: f64,
    calls_per_s: f64,
) -> Row {
    Row {
        scenario,
        name,
        subject,
        notes: "",
        load,
        summary: Summary {
            median_ns,
            p99_ns: 2.0 * median_ns,
            calls_per_s,
            batch_min_ns: median_ns,
            batch_max_ns: median_ns,
            n: 1,
            batches: 1,
            clients: 1,
            cpu_per_call_ns: median_ns,
            round_min_ns: median_ns,
            round_max_ns: median_ns,
            rounds: 1,
            round_tail_max: 2.0,
            by_round: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scenario: &'static str, name: &'static str, load: Load, median_ns: f64) -> Row {
        test_row(
            scenario,
            name,
            name == "courier",
            load,
            median_ns,
            1e9 / median_ns,
        )
    }

    #[test]
    fn both_loads_side_by_side_one_line_per_implementation() {
        let rows = [
            row("8 B", "floor", Load::Idle, 100.0),
            row("8 B", "courier", Load::Idle, 400.0),
            row("8 B", "peer", Load::Idle, 800.0),
            row("16 B", "courier", Load::Idle, 1_000.0),
            row("8 B", "floor", Load::Busy, 100.0),
            row("8 B", "courier", Load::Busy, 2_000.0),
            row("8 B", "peer", Load::Busy, 1_000.0),
            row("16 B", "courier", Load::Busy, 3_000.0),
            row("16 B", "late peer", Load::Busy, 1_500.0),
        ];
        let table = side_by_side(&rows);
        let lines: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(
            lines,
            [
                "| 8 B | floor | 100 ns | 200 ns | 10.00 M | 100 ns | 100 ns | 200 ns | 10.00 M \
                 | 100 ns | 4.00 / 20.00 |",
                "|  | **courier** | 400 ns | 800 ns | 2.50 M | 400 ns | 2.00 µs | 4.00 µs | 500 k \
                 | 2.00 µs |  |",
                "|  | peer | 800 ns | 1.60 µs | 1.25 M | 800 ns | 1.00 µs | 2.00 µs | 1.00 M \
                 | 1.00 µs | 0.50 / 2.00 |",
                "| 16 B | **courier** | 1.00 µs | 2.00 µs | 1.00 M | 1.00 µs | 3.00 µs | 6.00 µs \
                 | 333 k | 3.00 µs |  |",
                "|  | late peer | — | — | — | — | 1.50 µs | 3.00 µs | 667 k | 1.50 µs | — / 2.00 |",
            ]
        );
        assert!(results(&rows, &[], &[]).contains("### Both loads side by side"));
        assert!(!results(&rows[..4], &[], &[]).contains("side by side"));
    }

    #[test]
    fn a_paired_ratio_compares_each_round_with_the_same_round() {
        let rounds = |medians: &[f64]| -> Vec<Round> {
            medians
                .iter()
                .map(|&median_ns| Round {
                    median_ns,
                    p99_ns: 2.0 * median_ns,
                    calls_per_s: 1e9 / median_ns,
                })
                .collect()
        };
        // courier is 10 % faster in every round, but the host ran its last two rounds three
        // times slower and courier's pooled median came from them.
        let mut c = row("64 KiB", "courier", Load::Idle, 300.0);
        c.summary.by_round = rounds(&[100.0, 100.0, 100.0, 300.0, 300.0]);
        let mut p = row("64 KiB", "peer", Load::Idle, 110.0);
        p.summary.by_round = rounds(&[110.0, 110.0, 110.0, 330.0, 330.0]);
        let g = Goal::median("m".into(), Some(&c), Some(&p), 1.0);
        assert_eq!(g.verdict, Verdict::Miss);
        assert!(
            (g.paired.unwrap() - 100.0 / 110.0).abs() < 1e-9,
            "{:?}",
            g.paired
        );
        assert!(goal_table(&[g]).contains("| 0.91x | MISS | 5/5 |"));
        // An even number of rounds: the mean of the middle two ratios.
        c.summary.by_round = rounds(&[80.0, 90.0, 100.0, 110.0]);
        p.summary.by_round = rounds(&[100.0; 4]);
        let g = Goal::median("m".into(), Some(&c), Some(&p), 1.0);
        assert!((g.paired.unwrap() - 0.95).abs() < 1e-9, "{:?}", g.paired);
        // Higher is better for calls/s: the ratio is still courier's ÷ the reference's.
        let goals = as_good_as("64 KiB", Some(&c), Some(&p));
        let cps = goals.iter().find(|g| g.text.ends_with("calls/s")).unwrap();
        let want = (1e9 / 90.0 / 1e7 + 1e9 / 100.0 / 1e7) / 2.0;
        assert!(
            (cps.paired.unwrap() - want).abs() < 1e-9,
            "{:?}",
            cps.paired
        );
        // No rounds: no paired ratio.
        c.summary.by_round.clear();
        p.summary.by_round.clear();
        assert_eq!(
            Goal::median("m".into(), Some(&c), Some(&p), 1.0).paired,
            None
        );
    }

    #[test]
    fn goals_count_the_rounds_they_held_in_beside_the_pooled_verdict() {
        let rounds = |p99s: &[f64]| -> Vec<Round> {
            p99s.iter()
                .map(|&p99_ns| Round {
                    median_ns: 100.0,
                    p99_ns,
                    calls_per_s: 1e6,
                })
                .collect()
        };
        // courier's p99 is the better one in four rounds of five; one slow round (900 ns)
        // makes its pooled p99 the worse one.
        let mut c = row("8 B", "courier", Load::Idle, 100.0);
        c.summary.p99_ns = 900.0;
        c.summary.by_round = rounds(&[150.0, 150.0, 900.0, 150.0, 150.0]);
        let mut p = row("8 B", "peer", Load::Idle, 100.0);
        p.summary.p99_ns = 200.0;
        p.summary.by_round = rounds(&[200.0; 5]);
        let goals = as_good_as("8 B", Some(&c), Some(&p));
        let p99 = goals.iter().find(|g| g.text.ends_with("p99")).unwrap();
        assert_eq!(p99.verdict, Verdict::Miss);
        assert_eq!(p99.rounds, Some((4, 5)));
        // Higher is better for calls/s: equal rounds count as met.
        let cps = goals.iter().find(|g| g.text.ends_with("calls/s")).unwrap();
        assert_eq!(cps.rounds, Some((5, 5)));
        // A limit on medians, round by round.
        c.summary.by_round[1].median_ns = 160.0;
        let g = Goal::median("limit".into(), Some(&c), Some(&p), 1.5);
        assert_eq!(g.rounds, Some((4, 5)));
        assert!(goal_table(&[g]).contains("| PASS | 4/5 |"));
        // Ahead of every peer: in each round, of every peer's figure of that round, not only
        // of the peer that is best pooled. A second peer, worse pooled, beats courier's p99
        // in round 0.
        let mut q = row("8 B", "other", Load::Busy, 100.0);
        q.summary.p99_ns = 1_000.0;
        q.summary.by_round = rounds(&[120.0, 1_000.0, 1_000.0, 1_000.0, 1_000.0]);
        let (mut c, mut p) = (c.clone(), p.clone());
        for r in [&mut c, &mut p] {
            r.load = Load::Busy;
        }
        let goals = ahead_of_every_peer(&[c, p, q], "8 B");
        let p99 = goals.iter().find(|g| g.text.contains("p99")).unwrap();
        assert!(p99.reference.contains("(peer)"), "{}", p99.reference);
        assert_eq!(p99.rounds, Some((3, 5)));
        // Rows with no rounds (made up) say nothing.
        let (a, b) = (
            row("8 B", "courier", Load::Idle, 1.0),
            row("8 B", "x", Load::Idle, 2.0),
        );
        assert_eq!(as_good_as("8 B", Some(&a), Some(&b))[0].rounds, None);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_ns(638.2), "638 ns");
        assert_eq!(fmt_ns(2_370.0), "2.37 µs");
        assert_eq!(fmt_ns(1_230_000.0), "1.23 ms");
        assert_eq!(fmt_ns_delta(-74_352.0), "−74.35 µs");
        assert_eq!(fmt_ns_delta(2_370.0), "2.37 µs");
        assert_eq!(fmt_rate(415_600.0), "415.6 k");
        assert_eq!(fmt_rate(1_550_000.0), "1.55 M");
        assert_eq!(ratio(1.0, 4.0), "0.25x");
        assert_eq!(ratio(1.0, 0.0), "n/a");
        assert_eq!(fmt_count(50_000, 20, 1), "50k (20×2500)");
        assert_eq!(fmt_count(80_000, 20, 4), "80k (4×20×1000)");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(json_str("µs ≤"), "\"µs ≤\"");
    }
}
