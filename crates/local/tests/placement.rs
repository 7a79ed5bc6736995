//! Where the threads of a channel run (Linux): a client whose server waits on its CPU moves to
//! another one, rather than handing that CPU back and forth with the server at every call.
#![cfg(target_os = "linux")]

mod pinned;

use courier_core::placement::{moves_of_this_thread, room_elsewhere, this_cpu};
use pinned::beside_a_pinned_server;
use std::time::{Duration, Instant};

/// Upper bound for the whole test.
const DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn a_client_beside_its_server_moves_off_their_cpu() {
    let Some((moves, calls)) = beside_a_pinned_server(|client, place| {
        let start = Instant::now();
        let mut calls = 0u64;
        // A move is due only while no other process keeps the other CPUs busy (a look that
        // finds one is kept 10 ms: the calls go on).
        while moves_of_this_thread() == 0 && start.elapsed() < DEADLINE {
            // The kernel's balancing may move the client first; then it goes back beside the
            // server, since only a move of its own counts.
            if this_cpu() != place.server_cpu {
                place.go_beside_the_server();
            }
            calls += 1;
            assert_eq!(client.req(calls), Ok(calls + 1));
        }
        (moves_of_this_thread(), calls)
    }) else {
        return;
    };
    if moves == 0 && !room_elsewhere() {
        eprintln!("skipped: another process keeps the other CPUs busy ({calls} calls made)");
        return;
    }
    assert_eq!(
        moves, 1,
        "the client did not leave its server's CPU in {calls} calls"
    );
}
