//! End-to-end test of `courier-bench rpc --quick --progress` (Linux only): runs the built
//! binary (killed if it takes more than 60 s) and checks
//! - it exits with status 0;
//! - the header records the machine, rustc, commit and date;
//! - every row is printed, with a median and a p99: courier's req and every small peer, and at
//!   each large size courier's lend_mut, the floor and every large peer; peer rows carry the
//!   ratio to courier; no row failed;
//! - both loads (idle, one core busy) have every row, and the futex wake-up floor and the
//!   one-CPU handover floor are there; the two async scenarios (a current-thread and a
//!   multi-thread server) each have courier's areq / async_wait row and tokio's Unix socket,
//!   compared with it;
//! - the goals are there, with a verdict for the three small-call goals, the busy-poll
//!   comparison and the two 16 MiB ones of each load, the async scenarios' comparisons with
//!   every peer under each load, and the busy load's comparisons with every peer.

#![cfg(target_os = "linux")]

mod support;
use support::{
    assert_header, assert_no_failed_rows, both_loads, goals_judged, row, run_with_deadline,
    verdicts,
};

const SMALL: &str = "small: u64 round trip";
const ASYNC: [&str; 2] = [
    "async: u64 round trip, tokio on both sides",
    "async: u64 round trip, multi-thread tokio server",
];
const LARGE: [&str; 3] = [
    "4 KiB written by the server",
    "1 MiB written by the server",
    "16 MiB written by the server",
];
const PEERS_BOTH: [&str; 4] = [
    "iceoryx2 0.10 (event)",
    "iceoryx2 0.10 (busy-poll)",
    "ipc-channel 0.23",
    "UnixStream",
];

/// Checks a peer row and that it is compared with courier (a ratio like "0.42x").
fn peer_row(out: &str, scenario: &str, name: &str) {
    let cells = row(out, scenario, name);
    assert!(
        cells[5].ends_with('x'),
        "no courier/peer ratio in row {name:?} of {scenario:?}: {cells:?}"
    );
}

#[test]
fn rpc_quick_prints_every_row() {
    let (status, out) = run_with_deadline(&["rpc", "--quick", "--progress"]);
    assert!(status.success(), "exit status {status}; output:\n{out}");

    assert_header(&out);
    assert_no_failed_rows(&out);

    for small in both_loads(SMALL) {
        row(&out, &small, "courier::shm req");
        for name in PEERS_BOTH.iter().chain(&[
            "ipc-channel 0.23 (reply sender per call)",
            "courier::shm via #[courier::service]",
            "courier::shm busy-poll",
            "courier::shm req, spin 0, 64 idle clients",
            "floor: bare futex wake-up",
            "floor: one CPU handed over",
        ]) {
            peer_row(&out, &small, name);
        }
    }
    for scenario in ASYNC.iter().flat_map(|s| both_loads(s)) {
        row(&out, &scenario, "courier::shm areq / async_wait");
        peer_row(&out, &scenario, "UnixStream (tokio)");
    }
    for scenario in LARGE.iter().flat_map(|s| both_loads(s)) {
        row(&out, &scenario, "courier::shm lend_mut");
        for name in PEERS_BOTH.iter().chain(&[
            "floor: memset, one process",
            "courier::shm busy-poll",
            "floor: one CPU handed over",
        ]) {
            peer_row(&out, &scenario, name);
        }
    }

    // Idle: the three small goals, async ahead of every peer (median, p99, calls/s, CPU/call)
    // and against the blocking req (informational) in each of the two async scenarios,
    // busy-poll against busy-poll (median, p99,
    // calls/s) and the handover floor (informational) at each of the four sizes, the futex
    // floor, the crowded parked row against the parked row (informational) and four large
    // ones; busy: the same, and ahead of every peer (median, p99, calls/s, CPU/call) and half a
    // Unix socket.
    assert_eq!(goals_judged(&out), 2 * 35 + 5, "goals in:\n{out}");
    assert!(
        verdicts(&out) >= 2 * 23 + 4,
        "expected PASS or MISS for the three small goals and the two 16 MiB goals of each load, \
         and for the busy load's comparisons, in:\n{out}"
    );
}
