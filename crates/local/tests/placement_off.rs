//! With moves turned off (`placement::allow_moves(false)`), a client beside its server stays on
//! their CPU. A binary of its own: the switch is process-wide.
#![cfg(target_os = "linux")]

use courier_core::placement::{allow_moves, moves_of_this_thread, room_elsewhere, this_cpu};
use courier_local::channel;
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
use std::time::{Duration, Instant};

/// How long the client calls beside its server: far longer than the one wait it takes to
/// move when moves are on (`placement.rs`).
const CALLING: Duration = Duration::from_millis(300);

#[test]
fn with_moves_off_a_client_beside_its_server_stays() {
    let mask = sched_getaffinity(None).unwrap();
    if mask.count() < 2 {
        eprintln!("skipped: this process may run on one CPU only");
        return;
    }
    allow_moves(false);
    let server_cpu = this_cpu();
    let mut one = CpuSet::new();
    one.set(server_cpu as usize - 1);
    let (server, client) = channel::<u64, u64, ()>();
    let served = std::thread::spawn(move || {
        sched_setaffinity(None, &one).unwrap();
        while let Ok((x, ctx)) = server.wait() {
            let _ = ctx.reply(x + 1);
        }
    });
    let (moves, calls, beside, kept_mask) = std::thread::spawn(move || {
        sched_setaffinity(None, &one).unwrap();
        assert_eq!(client.req(0), Ok(1));
        sched_setaffinity(None, &mask).unwrap();
        let start = Instant::now();
        let (mut calls, mut beside) = (0u64, 0u64);
        while start.elapsed() < CALLING {
            // Calls begun on the server's CPU (where a move would be due).
            beside += u64::from(this_cpu() == server_cpu);
            calls += 1;
            assert_eq!(client.req(calls), Ok(calls + 1));
        }
        let kept = sched_getaffinity(None).unwrap() == mask;
        (moves_of_this_thread(), calls, beside, kept)
    })
    .join()
    .unwrap();
    served.join().unwrap();
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
