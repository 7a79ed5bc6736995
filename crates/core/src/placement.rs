//! Where a thread runs (Linux, feature `placement`): the CPU it is on, and moving it off
//! that CPU when the peer it waits for is stuck behind it there.
//!
//! Two threads that hand a call back and forth on one CPU pay for every call with the
//! scheduler: a spinning waiter keeps its peer from running until the slice ends
//! (milliseconds), and a yielding one hands the CPU over for one turn, after which both,
//! having just run, look cache-hot to the load balancer and stay together. The waits of the
//! std transports notice this (the peer leaves a hint of the CPU it last waited on) and then
//! move the waiting thread with [`move_off_this_cpu`]: its affinity mask is narrowed to the
//! other CPUs, so the kernel migrates it before the call returns, then put back as it was,
//! so the thread stays where it landed and the scheduler may move it again later.
//!
//! A move is a good trade only where the thread lands on a CPU that is free for it. A waiter
//! that can hand the CPU over with a yield (courier::local's) asks [`room_elsewhere`] first:
//! with another process's thread busy on every other CPU, the yield's hand-over on a shared
//! CPU (a few microseconds a call) beats landing beside that thread (half a CPU, and a wait
//! of the other thread's whole slice now and then). The same look tells [`free_cpu`]: whether
//! other processes leave a CPU free at all, where a thread that sleeps is woken at once
//! (courier::local parks instead of yielding to another process's busy thread only then).
//!
//! Where the look finds no room, a client that sleeps through long calls is better on its
//! server's CPU than beside another process's busy thread, whose CPU each wake-up would have
//! to take from it: courier::local's client then moves there with [`move_to`].

use core::ffi::CStr;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use rustix::fd::AsFd;
use rustix::fs::{openat, Mode, OFlags, RawDir, CWD};
use rustix::thread::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The CPU this thread runs on, plus one (so that 0 can mean "not known" in the hints that
/// threads and processes leave each other).
#[inline]
pub fn this_cpu() -> u32 {
    sched_getcpu() as u32 + 1
}

std::thread_local! {
    static MOVES: Cell<u64> = const { Cell::new(0) };
}

/// How many times [`move_off_this_cpu`] and [`move_to`] moved the calling thread.
pub fn moves_of_this_thread() -> u64 {
    MOVES.try_with(Cell::get).unwrap_or(0)
}

/// Whether courier's waits may move their threads: on unless [`allow_moves`] turned it off.
static MOVES_ALLOWED: AtomicBool = AtomicBool::new(true);

/// Lets courier's waits move their threads to another CPU (`true`, the default) or keeps
/// every thread of this process where the scheduler and the user put it (`false`), from the
/// next wait on.
///
/// Turn moves off where something else owns the threads' affinity: a program that changes
/// its threads' masks while they may wait (a move puts back the mask it read, see
/// [`move_off_this_cpu`]), or a runtime that places its threads itself. Threads pinned to one
/// CPU are never moved, whatever this says. With moves off, a waiter beside its peer on one
/// CPU yields to it instead, and a client of long calls sleeps wherever it is, as on a
/// system without this module.
///
/// ```
/// use courier_core::placement::{allow_moves, move_off_this_cpu, moves_allowed};
///
/// allow_moves(false);
/// assert!(!moves_allowed());
/// assert_eq!(move_off_this_cpu(), None); // yields, stays on its CPU
/// allow_moves(true);
/// ```
pub fn allow_moves(yes: bool) {
    MOVES_ALLOWED.store(yes, Ordering::Relaxed);
}

/// Whether courier's waits may move their threads (see [`allow_moves`]).
pub fn moves_allowed() -> bool {
    MOVES_ALLOWED.load(Ordering::Relaxed)
}

/// Moves the calling thread to another CPU of its affinity mask and returns that CPU (plus
/// one, as [`this_cpu`]); `None` when it has no other CPU to go to or moves are off
/// ([`allow_moves`]): it yields instead.
///
/// A thread whose mask allows only this CPU (pinned, `taskset` with one CPU) is not moved; a
/// change of its mask made by another thread between the two calls is lost (the mask read
/// first is put back).
pub fn move_off_this_cpu() -> Option<u32> {
    let moved = move_within(|mask, cpu| {
        if !mask.is_set(cpu) || mask.count() < 2 {
            return None;
        }
        let mut others = *mask;
        others.unset(cpu);
        Some(others)
    });
    if moved.is_none() {
        std::thread::yield_now();
    }
    moved
}

/// Moves the calling thread to `cpu` (plus one, as [`this_cpu`]) and returns it; `None`
/// when the thread is on it already, its affinity mask does not allow it, or moves are off
/// ([`allow_moves`]). The mask is put back as [`move_off_this_cpu`] puts it back: the thread
/// stays on `cpu` until the scheduler moves it. (Should putting it back fail twice, the
/// thread stays pinned to `cpu`, and no later move takes it anywhere else.)
pub fn move_to(cpu: u32) -> Option<u32> {
    move_within(|mask, here| {
        let to = (cpu as usize).checked_sub(1)?;
        if to == here || to >= CpuSet::MAX_CPU || !mask.is_set(to) {
            return None;
        }
        let mut only = CpuSet::new();
        only.set(to);
        Some(only)
    })
}

/// Narrows the calling thread's affinity mask to the CPUs `narrow` picks (given the mask and
/// the CPU the thread is on), so that the kernel migrates it before the call returns, then
/// puts the mask back; returns the CPU it landed on (plus one, as [`this_cpu`]), or `None`
/// when moves are off or `narrow` picks nothing. Counts the move ([`moves_of_this_thread`]).
fn move_within(narrow: impl FnOnce(&CpuSet, usize) -> Option<CpuSet>) -> Option<u32> {
    if !moves_allowed() {
        return None;
    }
    let mask = sched_getaffinity(None).ok()?;
    let narrowed = narrow(&mask, sched_getcpu())?;
    sched_setaffinity(None, &narrowed).ok()?;
    // Read while the narrowed mask holds: one of the CPUs it allows.
    let landed = this_cpu();
    // Put back at once (tried twice). Should it fail, the thread keeps the narrowed mask,
    // which holds only CPUs of the user's.
    if sched_setaffinity(None, &mask).is_err() {
        let _ = sched_setaffinity(None, &mask);
    }
    let _ = MOVES.try_with(|n| n.set(n.get() + 1));
    Some(landed)
}

/// Whether CPUs `a` and `b` (each plus one, as [`this_cpu`]; 0 is "not known") are two
/// hardware threads of one core (SMT, "hyperthreads"): they share the core's execution
/// units, so a thread that spins on one slows whatever runs on the other, unless it
/// spins with the spin-loop hint (`PAUSE`), which hands the units over while it waits.
///
/// Read from `/sys/devices/system/cpu/cpuN/topology/thread_siblings_list` once per CPU and
/// kept, without allocating. A CPU whose topology cannot be read (or past the first
/// [`TOPOLOGY_CPUS`]) counts as a core of its own; a CPU is not its own sibling.
///
/// ```
/// use courier_core::placement::{smt_siblings, this_cpu};
///
/// assert!(!smt_siblings(this_cpu(), this_cpu()));
/// assert!(!smt_siblings(0, this_cpu())); // not known
/// ```
pub fn smt_siblings(a: u32, b: u32) -> bool {
    a != b && a != 0 && b != 0 && core_of(a - 1) == core_of(b - 1)
}

/// How many CPUs [`smt_siblings`] knows the topology of.
pub const TOPOLOGY_CPUS: usize = 1024;

/// The core of each CPU, as the first CPU of its sibling list, plus one; 0 until read.
static CORES: [AtomicU32; TOPOLOGY_CPUS] = [const { AtomicU32::new(0) }; TOPOLOGY_CPUS];

/// The core of `cpu` (its lowest sibling; `cpu` itself where that cannot be read).
fn core_of(cpu: u32) -> u32 {
    let Some(slot) = CORES.get(cpu as usize) else {
        return cpu;
    };
    match slot.load(Ordering::Relaxed) {
        0 => {
            let core = read_core(cpu).unwrap_or(cpu);
            slot.store(core + 1, Ordering::Relaxed);
            core
        }
        known => known - 1,
    }
}

/// The first CPU of `cpu`'s `thread_siblings_list`.
fn read_core(cpu: u32) -> Option<u32> {
    const HEAD: &[u8] = b"/sys/devices/system/cpu/cpu";
    const TAIL: &[u8] = b"/topology/thread_siblings_list\0";
    let mut path = [0u8; 80];
    let mut digits = [0u8; 10];
    let mut n = cpu;
    let mut d = digits.len();
    loop {
        d -= 1;
        digits[d] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let digits = &digits[d..];
    let len = HEAD.len() + digits.len() + TAIL.len();
    path[..HEAD.len()].copy_from_slice(HEAD);
    path[HEAD.len()..HEAD.len() + digits.len()].copy_from_slice(digits);
    path[HEAD.len() + digits.len()..len].copy_from_slice(TAIL);
    let path = CStr::from_bytes_with_nul(&path[..len]).ok()?;
    let mut buf = [0; 64];
    first_cpu(read_start(CWD, path, &mut buf)?)
}

/// The first CPU of a CPU list (`0-3`, `1,65`, as sysfs writes them: lowest first).
fn first_cpu(list: &[u8]) -> Option<u32> {
    let end = list
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(list.len());
    core::str::from_utf8(&list[..end]).ok()?.parse().ok()
}

/// How long a look at the host's load ([`room_elsewhere`], [`free_cpu`]) is kept before the
/// next one: a look that leans on the one before it ([`settled`]) and whose own count agrees
/// with what the two make of it (room, or no room), for [`STEADY_FOR`]; any other for
/// [`CONFIRM_IN`], since its count alone may come from a moment when this process's threads
/// were being started or were going to sleep, or is yet to be confirmed.
///
/// A look costs its thread 150–200 µs here (three readings of `/proc/loadavg` and of every
/// thread's `stat`, 4–7 µs a file on a 2-vCPU VM); until bdc22d0 a busy machine was looked
/// at every 10 ms, 1.5–2 % of a CPU for whichever threads waited.
const STEADY_FOR: Duration = Duration::from_millis(50);
/// See [`STEADY_FOR`].
const CONFIRM_IN: Duration = Duration::from_millis(10);

/// The last look ([`pack`]; [`NOT_SEEN`] if it failed), and when it must be made again
/// (nanoseconds after `BASE`).
static SEEN: AtomicU64 = AtomicU64::new(NOT_SEEN);
const NOT_SEEN: u64 = u64::MAX;
static SEEN_UNTIL: AtomicU64 = AtomicU64::new(0);
static BASE: OnceLock<Instant> = OnceLock::new();

/// Whether a thread that leaves its CPU to its peer is likely to find another CPU of its mask
/// free: the threads of other processes that are runnable now, plus the two of the pair,
/// fit on the CPUs of its mask. Counts all of this process's runnable threads as its own
/// (a process's spinning clients crowding the other CPU do not stop a move; another
/// process's busy thread there does).
///
/// The answer is looked up (in `/proc/loadavg` and each of this process's threads'
/// `/proc/self/task/*/stat`) at most once in 10 ms for the whole process, once in 50 ms
/// while looks agree, and kept in between; a failed look answers `false`.
/// Other processes' threads count once two looks in a row (10 ms apart) have found them: a
/// machine that becomes busy is seen at the second look, one that becomes idle at the
/// next.
///
/// So a look that has no look to lean on (the process's first, or the first after 200 ms
/// without one) answers `false`, and the next look comes 10 ms later: room is never taken
/// on one look's word. A move made on such a word is not undone: a client whose first
/// waits, before the second look, took it for room moved off its server's CPU onto
/// that of another process's busy thread, and stayed there. Measured on a 2-vCPU VM with one
/// core busy, calls with 300 µs of work took 317–321 µs that way (in 4 runs of 12, and 340
/// µs of CPU a call), against 305 µs where client and server stayed together (12 runs of
/// 12 since).
pub fn room_elsewhere() -> bool {
    room_seen() == Some(true)
}

/// [`room_elsewhere`] with the cases told apart: `Some(true)` room, `Some(false)` none, both
/// by a look that leans on the one before it; `None` where no such look is there (a failed
/// look, or one that leans on none: the process's first, or the first after 200 ms without
/// one). A waiter whose choice can be undone at its next wait (courier::local's pacing) may
/// take `None` for room; one whose choice stays (a move) takes only `Some`.
pub fn room_seen() -> Option<bool> {
    seen()
        .filter(|look| look.settled)
        .map(|look| room_in(look.counts))
}

/// [`room_elsewhere`] of a look's counts.
fn room_in((foreign, cpus): (usize, usize)) -> bool {
    foreign + 2 <= cpus
}

/// Whether other processes' runnable threads leave a CPU of this thread's mask free, so that
/// a thread woken from sleep finds one at once instead of waiting for another process's busy
/// thread to end its time slice. Looked up as [`room_elsewhere`] (the same look serves both);
/// a failed look answers `false`.
///
/// Unlike [`room_elsewhere`], a look that leans on none answers on its own count (of no other
/// process's thread: `true`): what its callers do on it is to park rather than yield, which
/// the next wait may undo, or, for a client of short calls, to move beside another process's
/// busy thread, which is the right move beside one and no worse beside more.
pub fn free_cpu() -> bool {
    seen().is_some_and(|look| free_in(look.counts))
}

/// [`free_cpu`] of a look's counts.
fn free_in((foreign, cpus): (usize, usize)) -> bool {
    foreign < cpus
}

/// [`free_cpu`] for a thread whose peer is another process's thread that is awake (it waits
/// on or runs its side of a call): a look counts `peer_threads` of that process's runnable
/// threads as other processes' busy threads, so that many are taken off first. Looked up as
/// [`free_cpu`]; a failed look answers `false`.
///
/// A peer that was asleep at the look makes this count one busy thread too few, at most:
/// a thread that moves on that answer beside a busy thread loses time slices to it, and the
/// caller's own record of its waits (preempted, not answered while spinning) stops it.
pub fn free_cpu_beside(peer_threads: usize) -> bool {
    seen().is_some_and(|look| free_beside_in(look.counts, peer_threads))
}

/// [`room_elsewhere`] for a thread whose peer is another process's thread that is awake:
/// whether the pair, the peer's `peer_threads` taken off the other processes' busy threads,
/// fits on CPUs no other process's busy thread holds (the two can then each run on a CPU of
/// their own, beside nobody). Looked up, and answered `false` before a second look, as
/// [`room_elsewhere`].
pub fn room_beside(peer_threads: usize) -> bool {
    seen().is_some_and(|look| look.settled && room_beside_in(look.counts, peer_threads))
}

/// [`room_beside`] of a look's counts.
fn room_beside_in((foreign, cpus): (usize, usize), peer_threads: usize) -> bool {
    room_in((foreign.saturating_sub(peer_threads), cpus))
}

/// [`free_cpu_beside`] of a look's counts.
fn free_beside_in((foreign, cpus): (usize, usize), peer_threads: usize) -> bool {
    free_in((foreign.saturating_sub(peer_threads), cpus))
}

/// A look at the host's load, as [`seen`] keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Look {
    /// Other processes' runnable threads ([`settled`]), and the CPUs of the looking thread's
    /// mask.
    counts: (usize, usize),
    /// The look leaned on the one before it ([`leans_on`]): its count of other processes'
    /// threads is one a busy machine would have shown.
    settled: bool,
}

/// The last look, made again when it is too old.
fn seen() -> Option<Look> {
    let base = *BASE.get_or_init(Instant::now);
    let now = base.elapsed().as_nanos() as u64;
    let until = SEEN_UNTIL.load(Ordering::Relaxed);
    // One thread looks (it claims the look by moving the time on); the others keep the
    // last answer meanwhile.
    let claim = now + CONFIRM_IN.as_nanos() as u64;
    if now < until
        || SEEN_UNTIL
            .compare_exchange(until, claim, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return unpack(SEEN.load(Ordering::Relaxed));
    }
    let Some((raw, cpus)) = look() else {
        SEEN.store(NOT_SEEN, Ordering::Relaxed);
        return None;
    };
    let now_ms = millis(now);
    let prev = unpack_prev(PREV.load(Ordering::Relaxed));
    PREV.store(pack_prev(raw, now_ms), Ordering::Relaxed);
    let look = Look {
        counts: (settled(raw, prev, now_ms), cpus),
        settled: leans_on(prev, now_ms),
    };
    // One word: a reader never pairs one look's counts with another's `settled`.
    SEEN.store(pack(look), Ordering::Relaxed);
    // A look that leans on none, or whose own count says otherwise than the two looks
    // together, is looked at again soon.
    if look.settled && room_in((raw, cpus)) == room_in(look.counts) {
        SEEN_UNTIL.store(now + STEADY_FOR.as_nanos() as u64, Ordering::Relaxed);
    }
    Some(look)
}

/// The raw count of the last look (other processes' runnable threads) and when it was made
/// ([`millis`], in the high half), for [`settled`]; [`NOT_SEEN`] before the first.
static PREV: AtomicU64 = AtomicU64::new(NOT_SEEN);

/// How old a look may be for the next one to lean on it ([`settled`]).
const PREV_FOR: Duration = Duration::from_millis(200);

/// A time (nanoseconds after `BASE`) in milliseconds, wrapping every 2^32 ms (49.7 days):
/// looks are compared by [`settled`] with a wrapping difference, so a process that runs
/// longer than that compares them as on its first day.
fn millis(ns: u64) -> u32 {
    (ns / 1_000_000) as u32
}

fn pack_prev(raw: usize, now_ms: u32) -> u64 {
    (u64::from(now_ms) << 32) | (raw.min(u32::MAX as usize - 1) as u64)
}

fn unpack_prev(word: u64) -> Option<(usize, u32)> {
    (word != NOT_SEEN).then_some(((word & 0xFFFF_FFFF) as usize, (word >> 32) as u32))
}

/// The other processes' runnable threads to act on, from a look's raw count `raw` made at
/// `now_ms` ([`millis`]) and the look before it (`prev`: its raw count and time): the smaller
/// of the two when `prev` is less than [`PREV_FOR`] old, else none. A count of other
/// processes' threads holds only once two looks in a row have found it; a look that finds
/// fewer than the one before is believed at once.
///
/// A single look can count one of this process's threads as another process's: a thread
/// preempted on its way to sleep stays on its CPU's run queue (the host's count has it) while
/// its own state already reads "sleeping" (ours does not), for up to a time slice. Threads
/// that have just been started, or that park and wake in turn (four clients and a server on
/// two CPUs), make such looks common: taken alone, one said "no room" on an idle machine for
/// 10 ms, and a client beside its server then yielded to it at every call (about 1000 calls
/// of 4–7 µs instead of 160 ns). Another process's busy thread is runnable at every look, so
/// it is counted from the second look on, 10 ms after the first ([`seen`] looks again that
/// soon when it took a count back).
fn settled(raw: usize, prev: Option<(usize, u32)>, now_ms: u32) -> usize {
    match prev {
        Some((before, _)) if leans_on(prev, now_ms) => raw.min(before),
        _ => 0,
    }
}

/// Whether a look made at `now_ms` leans on the look before it, `prev` ([`settled`]): there
/// is one, less than [`PREV_FOR`] old.
fn leans_on(prev: Option<(usize, u32)>, now_ms: u32) -> bool {
    prev.is_some_and(|(_, at)| now_ms.wrapping_sub(at) < PREV_FOR.as_millis() as u32)
}

/// A look in one word: other processes' runnable threads in the high half (at most
/// `u32::MAX - 1`, so that no look packs to [`NOT_SEEN`]), whether it leaned on the look
/// before it in bit 31, the CPUs of the mask in bits 0–30.
fn pack(look: Look) -> u64 {
    let (foreign, cpus) = look.counts;
    let foreign = foreign.min(u32::MAX as usize - 1) as u64;
    let cpus = cpus.min(CPUS_MASK as usize) as u64;
    (foreign << 32) | (u64::from(look.settled) << 31) | cpus
}

const CPUS_MASK: u64 = (1 << 31) - 1;

fn unpack(word: u64) -> Option<Look> {
    (word != NOT_SEEN).then_some(Look {
        counts: ((word >> 32) as usize, (word & CPUS_MASK) as usize),
        settled: word & (1 << 31) != 0,
    })
}

/// Other processes' runnable threads and the CPUs of this thread's mask.
fn look() -> Option<(usize, usize)> {
    let cpus = sched_getaffinity(None).ok()?.count() as usize;
    // Three readings of the host's runnable threads, each followed by a count of ours, and
    // the middle one of the three differences: a kernel worker that runs for a few
    // microseconds is not a busy CPU, and one of our threads that runs at one count and not
    // the other is not another process's thread (or a missing one).
    let mut foreign = [0; 3];
    for f in &mut foreign {
        let all = runnable_on_host()?;
        *f = all.saturating_sub(runnable_here()?);
    }
    foreign.sort_unstable();
    Some((foreign[1], cpus))
}

/// Reads the start of a small file (at most `buf.len()` bytes, in one read) without
/// allocating: this runs inside courier::local's waits, which allocate nothing.
fn read_start<'b>(dir: impl AsFd, path: &CStr, buf: &'b mut [u8]) -> Option<&'b [u8]> {
    let fd = openat(dir, path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let n = loop {
        match rustix::io::read(&fd, &mut *buf) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r.ok()?,
        }
    };
    Some(&buf[..n])
}

/// Runnable threads on the host now: the numerator of `/proc/loadavg`'s fourth field.
fn runnable_on_host() -> Option<usize> {
    let mut buf = [0; 128];
    parse_loadavg(read_start(CWD, c"/proc/loadavg", &mut buf)?)
}

fn parse_loadavg(text: &[u8]) -> Option<usize> {
    let text = core::str::from_utf8(text).ok()?;
    text.split_whitespace()
        .nth(3)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// This process's runnable threads now (state `R` in each thread's `stat`), listed and read
/// without allocating. The kernel ends a listing early when the thread it has reached exits
/// meanwhile: a count that comes short makes other processes look busier, so the error is
/// on the side of not moving.
fn runnable_here() -> Option<usize> {
    let tasks = openat(
        CWD,
        c"/proc/self/task",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut listing = [MaybeUninit::<u8>::uninit(); 2048];
    let mut dir = RawDir::new(&tasks, &mut listing);
    let mut n = 0;
    while let Some(entry) = dir.next() {
        let entry = entry.ok()?;
        let name = entry.file_name().to_bytes();
        // "<tid>/stat", NUL-terminated, on the stack.
        let mut path = [0u8; 32];
        if name.first() == Some(&b'.') || name.len() + 6 > path.len() {
            continue;
        }
        path[..name.len()].copy_from_slice(name);
        path[name.len()..name.len() + 6].copy_from_slice(b"/stat\0");
        let path = CStr::from_bytes_with_nul(&path[..name.len() + 6]).ok()?;
        // The pid, the command (at most 15 bytes, in parentheses) and the state fit in 64
        // bytes. A thread that ended since the listing is not runnable.
        let mut stat = [0; 64];
        if let Some(stat) = read_start(&tasks, path, &mut stat) {
            n += usize::from(stat_state(stat) == Some(b'R'));
        }
    }
    Some(n)
}

/// The state letter of a `stat` line: the first field after the command name, which is in
/// parentheses and may itself hold spaces and parentheses (the fields after it are numbers).
fn stat_state(stat: &[u8]) -> Option<u8> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat[close + 1..].iter().copied().find(|&b| b != b' ')
}

/// The calling thread's timer slack, lowered to [`TIGHT_SLACK`] while this lives and put
/// back when it drops ([`TightTimers::tighten`]). Not `Send`: it belongs to the thread it was
/// made on (whose slack it puts back), so it is never held across an `.await`.
///
/// Linux lets a timed sleep end up to the thread's timer slack late (50 µs by default), so
/// that timers can be batched. A waiter that sleeps until just before an expected answer
/// ([`Pace`](crate::pace::Pace)) cannot afford that. Measured on the 2-vCPU KVM guest
/// of courier's README tables (10th–90th percentile of 400 sleeps of 300 µs), one run:
/// 67–74 µs late with the default slack, 21–26 µs with 1 µs (what remains is mostly the
/// wake-up of an idle vCPU); in another, 77–97 µs with the default.
///
/// The drop puts back the slack read at the start, even if it was changed meanwhile (through
/// `/proc/<tid>/timerslack_ns`); a real-time thread, whose slack reads as 0, and a thread
/// where `prctl` fails are left alone.
#[derive(Debug)]
#[must_use = "the slack is put back when this drops"]
pub struct TightTimers {
    /// The slack to put back (`None`: it was tight already, or could not be read).
    old: Option<u64>,
    /// Not `Send` (see above).
    _thread: std::marker::PhantomData<*const ()>,
}

/// The timer slack of a [`TightTimers`] section, in ns.
pub const TIGHT_SLACK: u64 = 1_000;

impl TightTimers {
    /// Lowers this thread's timer slack to [`TIGHT_SLACK`] unless it is that low already
    /// (two system calls, three with the drop's).
    pub fn tighten() -> TightTimers {
        use rustix::thread::{current_timer_slack, set_current_timer_slack};
        let old = current_timer_slack().ok().filter(|&old| old > TIGHT_SLACK);
        if old.is_some() {
            let _ = set_current_timer_slack(std::num::NonZeroU64::new(TIGHT_SLACK));
        }
        TightTimers {
            old,
            _thread: std::marker::PhantomData,
        }
    }
}

impl Drop for TightTimers {
    fn drop(&mut self) {
        if let Some(old) = self.old {
            let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(old));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::num::NonZeroU64;
    use std::format;
    use std::vec::Vec;

    #[test]
    fn tight_timers_lower_this_threads_slack_and_put_it_back() {
        // On a thread of its own: the slack is per thread, and the test harness's threads are
        // reused.
        std::thread::spawn(|| {
            if rustix::thread::set_current_timer_slack(NonZeroU64::new(70_000)).is_err() {
                std::eprintln!("skipped: prctl(PR_SET_TIMERSLACK) is refused here");
                return;
            }
            let slack = || rustix::thread::current_timer_slack().unwrap();
            {
                let _tight = TightTimers::tighten();
                assert_eq!(slack(), TIGHT_SLACK);
                // Nested: already tight, left alone (and not put back to 70 µs on drop).
                drop(TightTimers::tighten());
                assert_eq!(slack(), TIGHT_SLACK);
            }
            assert_eq!(slack(), 70_000, "the thread's own slack is back");
            // A thread whose slack is tighter keeps it.
            rustix::thread::set_current_timer_slack(NonZeroU64::new(10)).unwrap();
            drop(TightTimers::tighten());
            assert_eq!(slack(), 10);
        })
        .join()
        .unwrap();
    }

    /// The CPUs of an affinity mask.
    fn cpus(mask: &CpuSet) -> Vec<usize> {
        (0..CpuSet::MAX_CPU).filter(|&c| mask.is_set(c)).collect()
    }

    #[test]
    fn a_cpu_list_gives_its_first_cpu() {
        assert_eq!(first_cpu(b"0-1\n"), Some(0));
        assert_eq!(first_cpu(b"3,67\n"), Some(3));
        assert_eq!(first_cpu(b"12\n"), Some(12));
        assert_eq!(first_cpu(b"\n"), None);
        assert_eq!(first_cpu(b""), None);
    }

    /// The CPUs of a CPU list, in full (`0-3,8`).
    fn cpu_list(text: &str) -> Vec<u32> {
        let mut cpus = Vec::new();
        for part in text.trim().split(',').filter(|p| !p.is_empty()) {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            cpus.extend(lo.parse::<u32>().unwrap()..=hi.parse::<u32>().unwrap());
        }
        cpus
    }

    #[test]
    fn siblings_are_the_cpus_that_sysfs_lists_together() {
        let lists: Vec<(u32, Vec<u32>)> = (0..64u32)
            .filter_map(|cpu| {
                let path =
                    format!("/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list");
                Some((cpu, cpu_list(&std::fs::read_to_string(path).ok()?)))
            })
            .collect();
        if lists.is_empty() {
            std::println!("skipped: no CPU topology in /sys/devices/system/cpu");
            return;
        }
        for (a, siblings) in &lists {
            for (b, _) in &lists {
                let want = a != b && siblings.contains(b);
                assert_eq!(smt_siblings(a + 1, b + 1), want, "cpu{a} and cpu{b}");
            }
            assert!(!smt_siblings(0, a + 1) && !smt_siblings(a + 1, 0));
        }
    }

    #[test]
    fn other_processes_threads_count_once_two_looks_in_a_row_find_them() {
        // A first look finds no other process's thread on its own.
        assert_eq!(settled(1, None, 5), 0);
        assert_eq!(settled(0, None, 5), 0);
        // One thread more than the look before, 10 ms earlier: taken as that look.
        assert_eq!(settled(1, Some((0, 0)), 10), 0);
        // Seen twice in a row: another process's busy thread.
        assert_eq!(settled(1, Some((1, 0)), 10), 1);
        assert_eq!(settled(2, Some((1, 0)), 199), 1);
        // Fewer than before: the machine became idle, seen at once.
        assert_eq!(settled(0, Some((2, 0)), 10), 0);
        // A look 200 ms old or more says nothing about now: this one stands as a first.
        assert_eq!(settled(2, Some((2, 0)), 200), 0);
        // The packed form keeps the count and the time to the millisecond.
        assert_eq!(
            unpack_prev(pack_prev(3, millis(1_234_567_890))),
            Some((3, 1_234))
        );
        assert_eq!(unpack_prev(NOT_SEEN), None);
    }

    /// The millisecond clock wraps after 49.7 days; two looks 10 ms apart across the wrap are
    /// still two looks in a row (before, the later one was taken for 49.7 days older, and
    /// from then on every look stood as a first: a busy machine read as idle for good).
    #[test]
    fn looks_across_the_clock_wrap_still_confirm_each_other() {
        let wrap = (1u64 << 32) * 1_000_000;
        let (just_before, just_after) = (millis(wrap - 4_000_000), millis(wrap + 6_000_000));
        assert!(just_after < just_before, "the clock wrapped");
        let prev = unpack_prev(pack_prev(1, just_before));
        assert_eq!(settled(1, prev, just_after), 1);
        // A day later, two looks 10 ms apart still confirm each other.
        let day = 24 * 3_600 * 1_000_000_000u64;
        let prev = unpack_prev(pack_prev(1, millis(wrap + day)));
        assert_eq!(settled(1, prev, millis(wrap + day + 10_000_000)), 1);
        // And a look 200 ms old across the wrap is still too old.
        assert_eq!(settled(1, prev, millis(wrap + day + 200_000_000)), 0);
        assert_eq!(
            settled(1, Some((1, just_before)), just_before.wrapping_add(200)),
            0
        );
    }

    /// Two CPUs: the pair has a CPU each only while no other process's thread is busy, and
    /// a look says so only when it leans on the look before it; a look keeps its counts and
    /// whether it leaned in one word.
    #[test]
    fn room_beside_a_peer_needs_a_cpu_each_and_a_second_look() {
        assert!(room_beside_in((1, 2), 1), "the peer alone");
        assert!(room_beside_in((0, 2), 1), "the peer asleep at the look");
        assert!(!room_beside_in((2, 2), 1), "the peer and one busy thread");
        assert!(
            room_beside_in((3, 4), 1),
            "the peer and two busy threads on four CPUs"
        );
        assert!(!leans_on(None, 5), "a first look");
        assert!(leans_on(Some((2, 100)), 110), "10 ms after the one before");
        assert!(
            !leans_on(Some((2, 100)), 300),
            "200 ms after the one before"
        );
        for look in [
            Look {
                counts: (0, 2),
                settled: true,
            },
            Look {
                counts: (3, 64),
                settled: false,
            },
            Look {
                counts: (u32::MAX as usize - 1, CPUS_MASK as usize),
                settled: true,
            },
        ] {
            assert_eq!(unpack(pack(look)), Some(look));
        }
        assert_ne!(
            pack(Look {
                counts: (usize::MAX, usize::MAX),
                settled: true
            }),
            NOT_SEEN
        );
        assert_eq!(unpack(NOT_SEEN), None);
    }

    #[test]
    fn a_free_cpu_beside_a_peer_discounts_the_peer() {
        assert!(free_beside_in((1, 2), 1), "the peer alone");
        assert!(free_beside_in((0, 2), 1), "the peer asleep at the look");
        assert!(free_beside_in((2, 2), 1), "the peer and one busy thread");
        assert!(!free_beside_in((3, 2), 1), "the peer and two busy threads");
        assert!(
            !free_in((2, 2)),
            "without the discount, the peer fills the second CPU"
        );
        assert!(!free_beside_in((5, 4), 1));
    }

    #[test]
    fn a_thread_moves_off_its_cpu_and_keeps_its_mask() {
        let allowed = cpus(&sched_getaffinity(None).unwrap());
        if allowed.len() < 2 {
            std::eprintln!("skipped: this process may run on one CPU only ({allowed:?})");
            return;
        }
        std::thread::spawn(move || {
            for k in 1..=20 {
                let before = this_cpu();
                let landed = move_off_this_cpu().expect("moved");
                assert_ne!(landed, before, "still on the CPU it left");
                assert!(
                    allowed.contains(&(landed as usize - 1)),
                    "{landed} outside the mask"
                );
                assert_eq!(cpus(&sched_getaffinity(None).unwrap()), allowed);
                assert_eq!(moves_of_this_thread(), k);
            }
            // Pinned to one CPU: nowhere to go, the mask is left alone.
            let mut one = CpuSet::new();
            one.set(allowed[0]);
            sched_setaffinity(None, &one).unwrap();
            assert_eq!(move_off_this_cpu(), None);
            assert_eq!(cpus(&sched_getaffinity(None).unwrap()), [allowed[0]]);
            assert_eq!(moves_of_this_thread(), 20);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_moves_to_a_cpu_of_its_mask_and_keeps_the_mask() {
        let full = sched_getaffinity(None).unwrap();
        let allowed = cpus(&full);
        if allowed.len() < 2 {
            std::eprintln!("skipped: this process may run on one CPU only ({allowed:?})");
            return;
        }
        std::thread::spawn(move || {
            // Pinned: not to the CPU it is on, nor outside its mask, nor to no CPU; the mask
            // is left alone.
            let mut one = CpuSet::new();
            one.set(allowed[0]);
            sched_setaffinity(None, &one).unwrap();
            assert_eq!(move_to(allowed[0] as u32 + 1), None, "where it is");
            assert_eq!(move_to(allowed[1] as u32 + 1), None, "outside the mask");
            assert_eq!(move_to(0), None);
            assert_eq!(move_to(u32::MAX), None);
            assert_eq!(cpus(&sched_getaffinity(None).unwrap()), [allowed[0]]);
            assert_eq!(moves_of_this_thread(), 0);
            sched_setaffinity(None, &full).unwrap();
            let mut moves = 0;
            for k in 0..20 {
                let to = allowed[k % allowed.len()] as u32 + 1;
                // `None` only where the thread is already (the scheduler may have put it
                // there since the last turn).
                if let Some(landed) = move_to(to) {
                    assert_eq!(landed, to);
                    moves += 1;
                }
                assert_eq!(cpus(&sched_getaffinity(None).unwrap()), allowed);
                assert_eq!(moves_of_this_thread(), moves);
            }
            assert!(moves >= 10, "{moves} moves in 20 turns through {allowed:?}");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_files_behind_room_elsewhere_parse() {
        assert_eq!(parse_loadavg(b"0.52 0.58 0.59 3/467 12345\n"), Some(3));
        assert_eq!(parse_loadavg(b"0.52 0.58"), None);
        assert_eq!(stat_state(b"42 (a) b) c) R 1 42 42"), Some(b'R'));
        assert_eq!(stat_state(b"42 (sleepy) S 1"), Some(b'S'));
        assert_eq!(stat_state(b"42 no parentheses"), None);
        // The real files: this test's thread is runnable while it reads them. (A listing of
        // /proc/self/task ends early when the thread it stands on exits meanwhile, as the
        // binary's other tests' threads do: so "at least once in ten".)
        assert!(runnable_on_host().unwrap() >= 1);
        assert!((0..10).any(|_| runnable_here().unwrap() >= 1));
    }

    /// Set in the child process that [`in_a_child_alone`] runs a test in.
    const CHILD: &str = "COURIER_PLACEMENT_TEST_CHILD";

    /// Runs this module's test `name` alone, in a child process of one test thread: the looks
    /// count this process's runnable threads as its own, and a thread of the other tests of
    /// this binary that runs at one count and not the other would hide a burner; and the
    /// process-wide look starts afresh there. Returns whether this is that child, which runs
    /// the test's body; the parent checks the child's outcome and passes its skip on.
    fn in_a_child_alone(name: &str) -> bool {
        if std::env::var_os(CHILD).is_some() {
            return true;
        }
        // One child at a time: each would find the other's burners.
        static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                &std::format!("placement::tests::{name}"),
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .expect("the test binary");
        let text = std::string::String::from_utf8_lossy(&out.stdout);
        let said = std::string::String::from_utf8_lossy(&out.stderr);
        if let Some(skip) = said.lines().find(|l| l.contains("skipped:")) {
            std::eprintln!("{skip}");
        }
        assert!(out.status.success(), "{text}{said}");
        assert!(text.contains("1 passed"), "the child ran no test: {text}");
        false
    }

    /// The CPUs of this thread's mask, if the tests that burn all but one of them can run
    /// here (else says why not, as a skip).
    fn cpus_to_burn() -> Option<usize> {
        let cpus = sched_getaffinity(None).unwrap().count() as usize;
        let fit = (2..=16).contains(&cpus);
        if !fit {
            std::eprintln!("skipped: {cpus} CPUs (the test burns all but one)");
        }
        fit.then_some(cpus)
    }

    /// Whether nothing but this test keeps a CPU busy (40 looks at `/proc`, a millisecond
    /// apart, one of which finds no other process's thread runnable); else says so, as a
    /// skip: the counts the tests assert assume that nothing but their burners is busy.
    fn machine_quiet() -> bool {
        let quiet = (0..40).any(|_| {
            std::thread::sleep(Duration::from_millis(1));
            look().is_some_and(|(foreign, _)| foreign == 0)
        });
        if !quiet {
            std::eprintln!("skipped: another process keeps a CPU busy (40 looks at /proc)");
        }
        quiet
    }

    /// Another process's thread that keeps a CPU busy until killed.
    fn burner() -> std::process::Child {
        std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("sh")
    }

    /// Whether the process `pid` is running or runnable.
    fn running(pid: u32) -> bool {
        std::fs::read_to_string(std::format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| stat_state(s.as_bytes()))
            == Some(b'R')
    }

    /// Waits (at most 10 s) until every one of `burners` runs.
    fn until_all_run(burners: &[std::process::Child]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !burners.iter().all(|b| running(b.id())) {
            assert!(Instant::now() < deadline, "the burners never all ran");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn kill_all(burners: Vec<std::process::Child>) {
        for mut b in burners {
            let _ = b.kill();
            let _ = b.wait();
        }
    }

    /// The process's first look, made beside another process's threads busy on all CPUs but
    /// one, answers no room, though it has no look before it to confirm their count (before,
    /// it counted none of them: room, and a client of long calls moved off its server's CPU
    /// onto a busy one, for good); the next looks confirm them; once they are gone, room is
    /// seen again.
    #[test]
    fn no_room_on_the_word_of_one_look() {
        let Some(cpus) = cpus_to_burn() else { return };
        if !in_a_child_alone("no_room_on_the_word_of_one_look") || !machine_quiet() {
            return;
        }
        let burners: Vec<_> = (1..cpus).map(|_| burner()).collect();
        until_all_run(&burners);
        let first = (room_elsewhere(), room_seen());
        // The next looks, 10 ms apart, lean on the one before: one of them (the second, but
        // for a look that missed a burner) confirms them.
        let mut next = Vec::new();
        while next.len() < 10 && !next.contains(&Some(false)) {
            std::thread::sleep(CONFIRM_IN + Duration::from_millis(1));
            next.push(room_seen());
        }
        kill_all(burners);
        let busy = cpus - 1;
        assert_eq!(
            first,
            (false, None),
            "the first look beside {busy} busy CPUs"
        );
        assert!(
            next.contains(&Some(false)),
            "no look confirmed {busy} busy CPUs: {next:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while !room_elsewhere() {
            assert!(
                Instant::now() < deadline,
                "no room 5 s after the burners went: {:?} (other processes' runnable threads, CPUs)",
                look()
            );
            std::thread::sleep(CONFIRM_IN + Duration::from_millis(1));
        }
    }

    #[test]
    fn no_room_beside_another_process_busy_on_every_other_cpu() {
        let Some(cpus) = cpus_to_burn() else { return };
        if !in_a_child_alone("no_room_beside_another_process_busy_on_every_other_cpu")
            || !machine_quiet()
        {
            return;
        }
        let mut burners: Vec<_> = (1..cpus).map(|_| burner()).collect();
        // Looks made while every burner is runnable (each always is, once started), a
        // millisecond apart: 40, or fewer if `enough` holds of one. A sleeping thread may
        // still count as runnable for a while (the scheduler dequeues some sleepers late),
        // and the other tests of the parent process run beside this one, so a look can see
        // threads too many, never one too few.
        let looks_when_all_run =
            |burners: &[std::process::Child], enough: fn((usize, usize)) -> bool| {
                until_all_run(burners);
                let mut looks = Vec::new();
                while looks.len() < 40 && !looks.iter().copied().any(enough) {
                    std::thread::sleep(Duration::from_millis(1));
                    looks.push(look().expect("a look at /proc"));
                }
                looks
            };
        let beside_all_but_one = looks_when_all_run(&burners, free_in);
        // One more: every CPU is busy.
        burners.push(burner());
        let beside_all = looks_when_all_run(&burners, |_| false);
        kill_all(burners);
        assert!(
            !beside_all_but_one.iter().copied().any(room_in),
            "room for a pair beside {} busy CPUs: {beside_all_but_one:?} (other processes' \
             runnable threads, CPUs)",
            cpus - 1
        );
        assert!(
            beside_all_but_one.iter().copied().any(free_in),
            "no look saw the free CPU beside {} busy CPUs: {beside_all_but_one:?}",
            cpus - 1
        );
        assert!(
            !beside_all.iter().copied().any(free_in),
            "a free CPU beside {cpus} busy CPUs: {beside_all:?}"
        );
    }
}
