//! Where the threads of a channel run (Linux) while other processes keep every other CPU
//! busy: a client of short calls beside its server still moves, beside one busy thread,
//! rather than hand its CPU back and forth with the server at every call (about 4 µs a call
//! against a few hundred nanoseconds apart).
//!
//! The server is pinned to one CPU; a busy shell loop (`sh -c 'while :; do :; done'`) is
//! pinned to each other CPU and killed when the test ends. Skipped, with a message, on a
//! machine of one CPU or more than 16, or where no look at the machine finds exactly the
//! loops busy (unseen, the client moves by the idle machine's rule, which `placement.rs`
//! tests), or where the client stayed and some look found yet more busy processes (it then
//! rightly stays: a CI machine's other work, or a competing load run beside the tests).
#![cfg(target_os = "linux")]

use courier_core::placement::{free_cpu, moves_of_this_thread, room_elsewhere, this_cpu};
use courier_local::channel;
use rustix::process::Pid;
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Upper bound for the calls.
const DEADLINE: Duration = Duration::from_secs(10);

fn only(cpu: usize) -> CpuSet {
    let mut set = CpuSet::new();
    set.set(cpu);
    set
}

/// Busy loops in processes of their own, killed on drop.
struct Loops(Vec<Child>);

impl Loops {
    /// One loop pinned to each of `cpus`.
    fn on(cpus: &[usize]) -> Loops {
        let mut loops = Loops(Vec::new());
        for &cpu in cpus {
            let child = Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("start a busy loop");
            let pid = Pid::from_child(&child);
            loops.0.push(child);
            sched_setaffinity(Some(pid), &only(cpu)).expect("pin the busy loop");
        }
        loops
    }
}

impl Drop for Loops {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_client_of_short_calls_moves_beside_a_busy_thread() {
    let mask = sched_getaffinity(None).unwrap();
    let cpus: Vec<usize> = (0..CpuSet::MAX_CPU).filter(|&c| mask.is_set(c)).collect();
    if cpus.len() < 2 || cpus.len() > 16 {
        eprintln!("skipped: this test needs 2 to 16 CPUs, this process may use {cpus:?}");
        return;
    }
    let home = cpus[0];
    let _loops = Loops::on(&cpus[1..]);

    let (server, client) = channel::<u64, u64, ()>();
    let served = std::thread::spawn(move || {
        sched_setaffinity(None, &only(home)).unwrap();
        while let Ok((x, ctx)) = server.wait() {
            let _ = ctx.reply(x + 1);
        }
    });
    let (moves, calls, seen_busy, seen_crowded) = std::thread::spawn(move || {
        sched_setaffinity(None, &only(home)).unwrap();
        assert_eq!(client.req(0), Ok(1));
        sched_setaffinity(None, &mask).unwrap();
        let start = Instant::now();
        let mut calls = 0u64;
        let mut seen_busy = false;
        let mut seen_crowded = false;
        while moves_of_this_thread() == 0 && start.elapsed() < DEADLINE {
            // The kernel may move the client first; it goes back beside the server, since
            // only a move of its own counts.
            if this_cpu() as usize != home + 1 {
                sched_setaffinity(None, &only(home)).unwrap();
                sched_setaffinity(None, &mask).unwrap();
            }
            calls += 1;
            assert_eq!(client.req(calls), Ok(calls + 1));
            let free = free_cpu();
            seen_busy |= !room_elsewhere() && free;
            seen_crowded |= !free;
        }
        (moves_of_this_thread(), calls, seen_busy, seen_crowded)
    })
    .join()
    .unwrap();
    served.join().unwrap();
    if !seen_busy {
        // Either the loops went unseen (the client then moves by the idle machine's rule) or
        // yet more processes keep every CPU busy (it rightly stays).
        eprintln!(
            "skipped: no look found exactly the busy loops ({calls} calls, {moves} moves): \
             room elsewhere {}, a CPU free {}",
            room_elsewhere(),
            free_cpu()
        );
        return;
    }
    if moves == 0 && seen_crowded {
        eprintln!(
            "skipped: the client stayed ({calls} calls), and some look found every CPU busy \
             besides the loops: other processes are busy too"
        );
        return;
    }
    assert_eq!(
        moves, 1,
        "the client did not leave its server's CPU in {calls} calls beside busy loops"
    );
}
