//! End-to-end test of `courier-bench shm --quick --only courier` (Linux only): runs the built
//! binary (killed if it takes more than 60 s) and checks
//! - it exits with status 0;
//! - the header records the machine, rustc, commit and date;
//! - courier::shm has a row in every scenario (four sizes, busy-wait and blocking), and no row
//!   failed; the floor rows (always kept) and the two 16 MiB goal verdicts are there;
//! - no peer process is left behind (the peers are children of the binary and exit first).

#![cfg(target_os = "linux")]

mod support;
use support::run_with_deadline;

#[test]
fn shm_quick_prints_courier_rows() {
    let (status, out) = run_with_deadline(&["shm", "--quick", "--only", "courier"]);
    assert!(status.success(), "exit status {status}; output:\n{out}");

    for header in ["- machine: nproc ", "- rustc: ", "- commit: ", "- date: "] {
        assert!(
            out.lines().any(|l| l.starts_with(header)),
            "no header line {header:?} in:\n{out}"
        );
    }
    for size in ["8 B", "64 KiB", "1 MiB", "16 MiB"] {
        for wait in ["busy-wait", "blocking"] {
            let prefix = format!("| {size} {wait} | courier::shm | ");
            let line = out
                .lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no row {prefix:?} in:\n{out}"));
            let cells: Vec<&str> = line.split(" | ").collect();
            assert_eq!(cells.len(), 10, "row {prefix:?} has not 10 cells: {line}");
            assert!(
                cells[2].ends_with('s') && cells[3].ends_with('s'),
                "no median or p99 in: {line}"
            );
        }
    }
    for size in ["64 KiB", "1 MiB", "16 MiB"] {
        let prefix = format!("| {size} busy-wait | floor: no IPC | ");
        assert!(
            out.lines().any(|l| l.starts_with(&prefix)),
            "no floor row {prefix:?} in:\n{out}"
        );
    }
    let verdicts = out
        .lines()
        .filter(|l| l.ends_with("| PASS |") || l.ends_with("| MISS |"))
        .count();
    assert_eq!(
        verdicts, 2,
        "expected the two 16 MiB floor goals in:\n{out}"
    );
    assert!(
        !out.contains("Rows that failed"),
        "some rows failed:\n{out}"
    );
    assert!(
        !out.lines()
            .any(|l| l.starts_with("| ") && l.contains("| crossbar")),
        "--only courier kept a peer row:\n{out}"
    );
}
