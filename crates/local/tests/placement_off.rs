//! With moves turned off (`placement::allow_moves(false)`), a client beside its server stays on
//! their CPU. A binary of its own: the switch is process-wide.
#![cfg(target_os = "linux")]

mod pinned;

use courier_core::placement::{allow_moves, moves_of_this_thread, room_elsewhere, this_cpu};
use pinned::beside_a_pinned_server;
use rustix::thread::sched_getaffinity;
use std::time::{Duration, Instant};

/// How long the client calls beside its server: far longer than the one wait it takes to
/// move when moves are on (`placement.rs`).
const CALLING: Duration = Duration::from_millis(300);

#[test]
fn with_moves_off_a_client_beside_its_server_stays() {
    allow_moves(false);
    let Some((moves, calls, beside, kept_mask)) = beside_a_pinned_server(|client, place| {
        let start = Instant::now();
        let (mut calls, mut beside) = (0u64, 0u64);
        while start.elapsed() < CALLING {
            // Calls begun on the server's CPU (where a move would be due).
            beside += u64::from(this_cpu() == place.server_cpu);
            calls += 1;
            assert_eq!(client.req(calls), Ok(calls + 1));
        }
        let kept = sched_getaffinity(None).unwrap() == place.mask;
        (moves_of_this_thread(), calls, beside, kept)
    }) else {
        return;
    };
    assert!(kept_mask, "the client's mask was changed");
    if beside == 0 {
        // The kernel took the client away at once: no call began beside the server.
        eprintln!("skipped: no call began beside the server ({calls} calls)");
        return;
    }
    if moves == 0 && !room_elsewhere() {
        // No move would have been due with moves on either.
        eprintln!("skipped: another process keeps the other CPUs busy ({calls} calls)");
        return;
    }
    assert_eq!(
        moves, 0,
        "the client moved with moves off ({calls} calls, {beside} beside its server)"
    );
}
