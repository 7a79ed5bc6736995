//! Pacing of long calls (`courier_core::pace::Pace`): after two calls whose waits parked for
//! long, a blocking requester sleeps through most of the next call, registered as its waiter,
//! and spins for its end. These tests check that a paced wait is still woken by an early
//! answer, ends at its deadline, and leaves the slot ready for the next call. Each long call
//! lasts `LONG`, far beyond the pace's threshold (200 µs), so the requester's waits park.
//!
//! A requester paces only where its server did not last wait on its CPU, so the server and
//! the client are pinned to two different CPUs (the tests skip where there is one).

use courier_local::{channel, Client, Error};
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_millis(200);
/// A call much shorter than the pace expects, but answered well after the requester went to
/// its paced sleep.
const SHORTER: Duration = Duration::from_millis(20);
const DEADLINE: Duration = Duration::from_secs(20);

/// Runs `calls` on a thread pinned to one CPU against a server pinned to another, which
/// answers `x + 1`: after `LONG` for an odd request, after `SHORTER` for an even one from 100
/// on, at once for a smaller even one, and once the test says so (through the sender `calls`
/// gets) for a request of 1000 or more. Skips (with a message) where the process may run on
/// one CPU only.
fn pinned_pair(calls: impl FnOnce(&Client<u64, u64, ()>, mpsc::Sender<()>) + Send + 'static) {
    let mask = sched_getaffinity(None).unwrap();
    let cpus: Vec<usize> = (0..CpuSet::MAX_CPU).filter(|&c| mask.is_set(c)).collect();
    if cpus.len() < 2 {
        eprintln!("skipped: this process may run on one CPU only");
        return;
    }
    let only = |cpu: usize| {
        let mut one = CpuSet::new();
        one.set(cpu);
        one
    };
    let (server_cpu, client_cpu) = (only(cpus[0]), only(cpus[1]));
    let (server, client) = channel::<u64, u64, ()>();
    let (open, gate) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        sched_setaffinity(None, &server_cpu).unwrap();
        while let Ok((x, ctx)) = server.wait() {
            if x >= 1000 {
                gate.recv_timeout(DEADLINE)
                    .expect("the test opens the gate");
            } else if x % 2 == 1 {
                std::thread::sleep(LONG);
            } else if x >= 100 {
                std::thread::sleep(SHORTER);
            }
            let _ = ctx.reply(x + 1);
        }
    });
    std::thread::spawn(move || {
        sched_setaffinity(None, &client_cpu).unwrap();
        calls(&client, open);
    })
    .join()
    .unwrap();
    worker.join().unwrap();
}

#[test]
fn a_short_call_after_long_ones_is_answered_at_once_not_when_the_pace_expected() {
    pinned_pair(|client, _open| {
        for x in [1, 3, 5] {
            assert_eq!(client.req(x), Ok(x + 1));
        }
        // Paced now: the next wait would sleep until about LONG - 100 µs unless woken.
        let start = Instant::now();
        assert_eq!(client.req(100), Ok(101));
        let took = start.elapsed();
        assert!(took >= SHORTER, "{took:?}");
        assert!(
            took < LONG / 2,
            "a call of {SHORTER:?} took {took:?}: the paced sleep was not ended by its answer"
        );
        // One answered at once, too.
        assert_eq!(client.req(2), Ok(3));
        // Long calls are still answered (and paced again after two).
        for x in [7, 9, 11] {
            assert_eq!(client.req(x), Ok(x + 1));
        }
    });
}

#[test]
fn a_paced_wait_ends_at_its_deadline_and_the_late_answer_does_not_disturb_the_next_call() {
    pinned_pair(|client, open| {
        // Through the pool's slots (a requester gets its last one back), as a call with a
        // deadline waits, rather than the lane of `req`.
        for x in [1, 3, 5] {
            assert_eq!(client.req_async(x).unwrap().wait(), Ok(x + 1));
        }
        // Paced, with a deadline well before the paced sleep would end: the wait ends there.
        let timeout = LONG / 4;
        let start = Instant::now();
        let call = client.req_async(1000).unwrap();
        assert_eq!(call.wait_timeout(timeout), Err(Error::Timeout));
        let took = start.elapsed();
        assert!(
            took >= timeout,
            "timed out after {took:?}, before {timeout:?}"
        );
        assert!(took < LONG, "timed out after {took:?}, not at {timeout:?}");
        // The server answers the abandoned call; the next calls get their own answers.
        open.send(()).unwrap();
        assert_eq!(client.req(2), Ok(3));
        assert_eq!(client.req(7), Ok(8));
    });
}
