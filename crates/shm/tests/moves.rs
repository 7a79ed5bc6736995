//! A waiter whose peer, awake, waits on its CPU moves to another CPU once the two hand
//! messages back and forth quickly, and never while moves are off
//! (`placement::allow_moves(false)`): a ShmChannel's connecting side receiving from an echo,
//! and an RPC caller calling a worker. An RPC caller of long calls (30 µs of work each) moves
//! too, where the machine leaves the two a CPU each, unless the kernel has already run it on
//! another CPU (its waits are long enough for the idle CPU's balancing to pull it).
//!
//! The peer is a thread of this process pinned to one CPU; the test thread is pinned to the
//! same CPU at first, so that the two hand it to each other at every message, then its mask
//! is widened to every CPU while it is still on that one. One binary, one test:
//! `allow_moves` is the whole process's.
//!
//! Skipped on a machine with one CPU, or (with a message) when the machine is so busy that no
//! CPU is left beside other processes' threads (for long calls: when the two cannot have a
//! CPU each), where the waiter rightly stays.
#![cfg(target_os = "linux")]

use courier_core::placement;
use courier_shm::{Client, Incoming, Server, ServerConfig, ShmChannel, ShmConfig};
use rustix::thread::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);

fn only(cpu: usize) -> CpuSet {
    let mut set = CpuSet::new();
    set.set(cpu);
    set
}

/// Round trips in a row made off the peer's CPU after which a waiter that never moved is
/// taken to have been placed apart by the kernel (its idle CPU's balancing pulls a waiter
/// that sleeps or yields): nothing is left for courier to move.
const APART: u32 = 1000;

/// What the last part of [`moves_when_allowed`] saw.
struct Outcome {
    /// Moves courier made.
    moves: u64,
    /// The last [`APART`] round trips ran off the peer's CPU, with no move of courier's.
    apart: bool,
}

/// Runs round trips on this thread (`round_trip(i)`), its peer pinned to `home`: pinned
/// there too (no move possible), widened with moves off (none made), then widened with moves
/// on until it moves, the kernel has run it apart for [`APART`] round trips, or 5 s pass.
/// The last part starts again from `home` (up to [`ATTEMPTS`] times) when the kernel ran the
/// thread apart: the kernel's wake-up balancing does that now and then even to a waiter
/// that hands its CPU over at every message.
fn moves_when_allowed(
    what: &str,
    home: usize,
    all: &CpuSet,
    mut round_trip: impl FnMut(u8),
) -> Outcome {
    let start = placement::moves_of_this_thread();
    sched_setaffinity(None, &only(home)).expect("pin the test thread");
    for i in 0..50 {
        round_trip(i);
    }
    assert_eq!(
        placement::moves_of_this_thread(),
        start,
        "{what}: pinned to one CPU"
    );

    placement::allow_moves(false);
    sched_setaffinity(None, all).expect("widen");
    for i in 0..200 {
        round_trip(i);
    }
    assert_eq!(
        placement::moves_of_this_thread(),
        start,
        "{what}: moves are off"
    );

    placement::allow_moves(true);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut outcome = Outcome {
        moves: 0,
        apart: false,
    };
    for _ in 0..ATTEMPTS {
        sched_setaffinity(None, &only(home)).expect("pin again");
        for i in 0..10 {
            round_trip(i);
        }
        sched_setaffinity(None, all).expect("widen again");
        let before = placement::moves_of_this_thread();
        let (mut i, mut apart) = (0u8, 0u32);
        while placement::moves_of_this_thread() == before
            && apart < APART
            && Instant::now() < deadline
        {
            round_trip(i);
            i = i.wrapping_add(1);
            apart = if sched_getcpu() == home { 0 } else { apart + 1 };
        }
        let moves = placement::moves_of_this_thread() - before;
        outcome = Outcome {
            moves,
            apart: moves == 0 && apart >= APART,
        };
        if !outcome.apart {
            break;
        }
    }
    outcome
}

/// How many times [`moves_when_allowed`] starts its last part again after the kernel ran
/// the thread apart.
const ATTEMPTS: u32 = 3;

#[test]
fn a_waiter_moves_off_its_peers_cpu_unless_moves_are_off() {
    courier_testkit::runtime_dir("courier-moves");
    let all = sched_getaffinity(None).expect("affinity");
    let cpus: Vec<usize> = (0..CpuSet::MAX_CPU).filter(|&c| all.is_set(c)).collect();
    if cpus.len() < 2 {
        eprintln!("skipped: a move needs two CPUs, this thread may use {cpus:?}");
        return;
    }
    let home = cpus[0];
    let pid = std::process::id();

    // ShmChannel: an echo on the listening side; the connecting side (this thread) moves.
    let name = format!("moves-channel-{pid}");
    let listener_name = name.clone();
    let echo = std::thread::spawn(move || {
        sched_setaffinity(None, &only(home)).expect("pin the echo");
        let ch = ShmChannel::listen(&listener_name, ShmConfig::new(), TIMEOUT).expect("listen");
        while let Ok(m) = ch.recv_timeout(TIMEOUT) {
            let b = m.to_vec();
            drop(m);
            if b.is_empty() || ch.send(&b).is_err() {
                return;
            }
        }
    });
    let ch = ShmChannel::connect(&name, ShmConfig::new(), TIMEOUT).expect("connect");
    let channel_moves = moves_when_allowed("ShmChannel", home, &all, |i| {
        ch.send(&[i]).expect("send");
        let m = ch.recv_timeout(TIMEOUT).expect("echo");
        assert_eq!(m.to_vec(), [i]);
    });
    ch.send(&[]).expect("stop the echo");
    echo.join().expect("echo thread");

    // RPC: a worker answering x + 1; the caller (this thread) moves.
    let name = format!("moves-rpc-{pid}");
    let server = Server::<u64, u64, ()>::bind(&name, ServerConfig::new()).expect("bind");
    let worker = std::thread::spawn(move || {
        sched_setaffinity(None, &only(home)).expect("pin the worker");
        while let Ok(Incoming::Call(x, ctx)) = server.wait_timeout(TIMEOUT) {
            if x == u64::MAX {
                return;
            }
            if x & LONG != 0 {
                let start = Instant::now();
                while start.elapsed() < LONG_WORK {
                    std::hint::spin_loop();
                }
            }
            ctx.reply(x + 1).expect("reply");
        }
    });
    let client = Client::<u64, u64, ()>::connect(&name, TIMEOUT).expect("connect");
    let rpc_moves = moves_when_allowed("RPC", home, &all, |i| {
        assert_eq!(client.req(u64::from(i)), Ok(u64::from(i) + 1));
    });
    // Long calls, on a connection of their own: each answered after more than the short
    // calls' bound, so only the long calls' rule can move the caller.
    let long = Client::<u64, u64, ()>::connect(&name, TIMEOUT).expect("connect");
    let long_moves = moves_when_allowed("RPC, long calls", home, &all, |i| {
        let x = LONG | u64::from(i);
        assert_eq!(long.req(x), Ok(x + 1));
    });
    client.send(u64::MAX).expect("stop the worker");
    worker.join().expect("worker thread");

    // Short calls: the waiter hands its CPU over at every message, which the kernel mostly
    // leaves as it is; the move must be courier's.
    if (channel_moves.moves == 0 || rpc_moves.moves == 0) && !placement::free_cpu_beside(1) {
        eprintln!("skipped: other processes keep every CPU busy, so the waiters stay");
        return;
    }
    if channel_moves.apart || rpc_moves.apart {
        eprintln!(
            "skipped: the kernel ran a waiter of short calls apart from its peer in each of \
             {ATTEMPTS} attempts, leaving courier nothing to move"
        );
        return;
    }
    assert!(
        channel_moves.moves >= 1,
        "the ShmChannel receiver never moved in 5 s"
    );
    assert!(rpc_moves.moves >= 1, "the RPC caller never moved in 5 s");
    // Long calls: the caller waits 30 µs a call, long enough for the kernel to run it on the
    // idle CPU itself (seen in most runs on a 2-vCPU VM); apart either way.
    if long_moves.apart {
        eprintln!("long calls: the kernel ran the caller apart from the worker first");
        return;
    }
    if long_moves.moves == 0 && !room_for_each_of_two() {
        eprintln!("skipped (long calls): other processes leave no CPU for each of the two");
        return;
    }
    assert!(
        long_moves.moves >= 1,
        "the RPC caller of long calls never moved in 5 s, nor ran apart"
    );
}

/// Whether the machine leaves a CPU to each of the two: `room_beside` answers from a look
/// that leans on another made less than 200 ms before, and looks are 50 ms apart at most
/// once, so it is asked twice, 60 ms apart (the first answer may come from an old look).
fn room_for_each_of_two() -> bool {
    let _ = placement::room_beside(1);
    std::thread::sleep(Duration::from_millis(60));
    placement::room_beside(1)
}

/// The flag of a long call, and the work its worker does before answering (well over the
/// 8 µs under which a call counts as short).
const LONG: u64 = 1 << 40;
const LONG_WORK: Duration = Duration::from_micros(30);
