//! End-to-end test of `courier-bench shm --quick --only courier` (Linux only): runs the built
//! binary (killed if it takes more than 60 s) and checks
//! - it exits with status 0;
//! - the header records the machine, rustc, commit and date;
//! - courier::shm has a row in every scenario (four sizes, busy-wait and blocking), and no row
//!   failed, on the idle machine and with one core busy; the floor rows (always kept) and the
//!   two 16 MiB goal verdicts of each load are there;
//! - no peer process is left behind (the peers are children of the binary and exit first).

#![cfg(target_os = "linux")]

mod support;
use support::{assert_header, assert_no_failed_rows, both_loads, row, run_with_deadline, verdicts};

#[test]
fn shm_quick_prints_courier_rows() {
    let (status, out) = run_with_deadline(&["shm", "--quick", "--only", "courier"]);
    assert!(status.success(), "exit status {status}; output:\n{out}");

    assert_header(&out);
    for size in ["8 B", "64 KiB", "1 MiB", "16 MiB"] {
        for wait in ["busy-wait", "blocking"] {
            for scenario in both_loads(&format!("{size} {wait}")) {
                row(&out, &scenario, "courier::shm");
            }
        }
    }
    for size in ["64 KiB", "1 MiB", "16 MiB"] {
        for scenario in both_loads(&format!("{size} busy-wait")) {
            let prefix = format!("| {scenario} | floor: no IPC | ");
            assert!(
                out.lines().any(|l| l.starts_with(&prefix)),
                "no floor row {prefix:?} in:\n{out}"
            );
        }
    }
    assert_eq!(
        verdicts(&out),
        4,
        "expected the two 16 MiB floor goals of each load in:\n{out}"
    );
    assert_no_failed_rows(&out);
    assert!(
        !out.lines()
            .any(|l| l.starts_with("| ") && l.contains("| crossbar")),
        "--only courier kept a peer row:\n{out}"
    );
}
