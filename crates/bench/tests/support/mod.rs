//! Shared by the end-to-end tests of the `courier-bench` binary: running it with a deadline
//! (through courier-testkit), and reading its markdown report.
//!
//! Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

/// The longest a benchmark run in a test may take before it is killed.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// Runs the benchmark binary with `args`; returns its exit status and stdout (its stderr is
/// passed on to the test's output).
pub(crate) fn run_with_deadline(args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = courier_testkit::run(
        Command::new(env!("CARGO_BIN_EXE_courier-bench")).args(args),
        DEADLINE,
    );
    eprint!("{}", out.stderr);
    (out.status, out.stdout)
}

/// Checks that the report's header records the machine, rustc, commit and date.
pub(crate) fn assert_header(out: &str) {
    for header in ["- machine: nproc ", "- rustc: ", "- commit: ", "- date: "] {
        assert!(
            out.lines().any(|l| l.starts_with(header)),
            "no header line {header:?} in:\n{out}"
        );
    }
}

/// The cells of the table row `name` of `scenario`, after checking it has all 11 cells, a
/// median, a p99 and a CPU time per call (cells: scenario, name, median, p99, calls/s, ratio
/// median, ratio calls/s, round medians, n, CPU/call, notes).
pub(crate) fn row<'a>(out: &'a str, scenario: &str, name: &str) -> Vec<&'a str> {
    let prefix = format!("| {scenario} | {name} | ");
    let line = out
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no row {prefix:?} in:\n{out}"));
    let cells: Vec<&str> = line.split(" | ").collect();
    assert_eq!(cells.len(), 11, "row {prefix:?} has not 11 cells: {line}");
    assert!(
        cells[2].ends_with('s') && cells[3].ends_with('s'),
        "no median or p99 in: {line}"
    );
    assert!(cells[9].ends_with('s'), "no CPU time per call in: {line}");
    cells
}

/// How many goals the report gives a PASS or MISS verdict.
pub(crate) fn verdicts(out: &str) -> usize {
    out.lines()
        .filter(|l| matches!(verdict(l), Some("PASS" | "MISS")))
        .count()
}

/// The verdict cell of a line of the goals table (`| goal | … | verdict | rounds met |`),
/// counted from the right, which no goal text can shift.
fn verdict(line: &str) -> Option<&str> {
    let cells: Vec<&str> = line.split('|').collect();
    (line.starts_with("| ") && line.ends_with(" |") && cells.len() >= 8)
        .then(|| cells[cells.len() - 3].trim())
}

/// How many goals the report lists with a verdict (PASS, MISS or info; not "not measured").
pub(crate) fn goals_judged(out: &str) -> usize {
    out.lines()
        .filter(|l| matches!(verdict(l), Some("PASS" | "MISS" | "info")))
        .count()
}

/// The scenario cells of both loads' tables: `scenario` as it is (idle machine) and with the
/// busy load's suffix.
pub(crate) fn both_loads(scenario: &str) -> [String; 2] {
    [scenario.to_string(), format!("{scenario} · 1 core busy")]
}

/// Checks that no row of the report failed.
pub(crate) fn assert_no_failed_rows(out: &str) {
    assert!(
        !out.contains("Rows that failed"),
        "some rows failed:\n{out}"
    );
}
