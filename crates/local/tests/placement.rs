//! Where the threads of a channel run (Linux): a client whose server waits on its CPU moves to
//! another one, rather than handing that CPU back and forth with the server at every call.
#![cfg(target_os = "linux")]

use courier_core::placement::{moves_of_this_thread, room_elsewhere, this_cpu};
use courier_local::channel;
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
use std::time::{Duration, Instant};

/// Upper bound for the whole test.
const DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn a_client_beside_its_server_moves_off_their_cpu() {
    let mask = sched_getaffinity(None).unwrap();
    if mask.count() < 2 {
        eprintln!("skipped: this process may run on one CPU only");
        return;
    }
    // Both threads start pinned to the CPU this one runs on.
    let mut one = CpuSet::new();
    let server_cpu = this_cpu();
    one.set(server_cpu as usize - 1);
    let (server, client) = channel::<u64, u64, ()>();
    let served = std::thread::spawn(move || {
        sched_setaffinity(None, &one).unwrap();
        while let Ok((x, ctx)) = server.wait() {
            let _ = ctx.reply(x + 1);
        }
    });
    let moved = std::thread::spawn(move || {
        sched_setaffinity(None, &one).unwrap();
        assert_eq!(client.req(0), Ok(1));
        // Free to go now; the server stays pinned.
        sched_setaffinity(None, &mask).unwrap();
        let start = Instant::now();
        let mut calls = 0u64;
        // A move is due only while no other process keeps the other CPUs busy (a look that
        // finds one is kept 10 ms: the calls go on).
        while moves_of_this_thread() == 0 && start.elapsed() < DEADLINE {
            // The kernel's balancing may move the client first; then it goes back beside the
            // server, since only a move of its own counts.
            if this_cpu() != server_cpu {
                sched_setaffinity(None, &one).unwrap();
                sched_setaffinity(None, &mask).unwrap();
            }
            calls += 1;
            assert_eq!(client.req(calls), Ok(calls + 1));
        }
        (moves_of_this_thread(), calls)
    })
    .join()
    .unwrap();
    served.join().unwrap();
    let (moves, calls) = moved;
    if moves == 0 && !room_elsewhere() {
        eprintln!("skipped: another process keeps the other CPUs busy ({calls} calls made)");
        return;
    }
    assert_eq!(
        moves, 1,
        "the client did not leave its server's CPU in {calls} calls"
    );
}
