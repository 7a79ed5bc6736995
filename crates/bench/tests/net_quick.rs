//! End-to-end test of `courier-bench net --quick` (Linux only): runs the built binary (killed
//! if it takes more than 60 s) and checks
//! - it exits with status 0 and its header records the machine, rustc, commit and date;
//! - every row is printed in both scenarios, the peers with their ratio to courier, and no
//!   row failed;
//! - the four goals (within 1.2× of raw zenoh, ahead of tarpc; small and 1 MiB) have verdicts.

#![cfg(target_os = "linux")]

mod support;
use support::{assert_header, assert_no_failed_rows, row, run_with_deadline, verdicts};

const SCENARIOS: [&str; 2] = [
    "small: u64 round trip over loopback",
    "1 MiB sent by the client (lend)",
];
const PEERS: [&str; 3] = [
    "zenoh 1.x get/queryable (raw)",
    "tarpc 0.37 (bincode over TCP)",
    "TCP (std, the floor)",
];

#[test]
fn net_quick_prints_every_row() {
    let (status, out) = run_with_deadline(&["net", "--quick"]);
    assert!(status.success(), "exit status {status}; output:\n{out}");
    assert_header(&out);
    assert_no_failed_rows(&out);
    for scenario in SCENARIOS {
        row(&out, scenario, "courier::net (bridge → courier::shm)");
        for name in PEERS {
            let cells = row(&out, scenario, name);
            assert!(
                cells[5].ends_with('x'),
                "no courier/peer ratio in row {name:?} of {scenario:?}: {cells:?}"
            );
        }
    }
    assert_eq!(verdicts(&out), 4, "expected four goal verdicts in:\n{out}");
}
