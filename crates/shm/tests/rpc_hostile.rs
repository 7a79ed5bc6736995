//! A hostile client against the RPC server, in one process: the test maps a real `Client`'s
//! connection segment a second time (found as the memfd the connection added to
//! `/proc/self/fd`) and writes it as a hostile client process would.
//!
//! Cases (hardening findings 6, 7 and 8):
//! - a client that breaks the request ring (an entry stamped with a lap it cannot hold) is
//!   hung up on: its own calls fail with `ServerDisappeared` at once, other clients are
//!   served;
//! - a client that re-queues transport messages (`FREE_BUF`) as fast as they are settled
//!   holds no worker: other clients' calls are answered and dropping the server returns;
//! - a client that zeroes every shared mapping it was given (its segment and, before each
//!   connection had its own wake-up path, the server's doorbell) hurts only itself: new
//!   clients still connect and are served;
//! - a client that keeps changing its doorbell, so that idle workers never sleep, is hung
//!   up on, while honest clients that ring at every call (no spin on either side, several
//!   workers) are never cut off; a server of more clients than one `futex_waitv` covers
//!   sleeps on the wake-up sockets instead, and is woken as surely.
//!
//! The tests of this file run one at a time (they compare `/proc/self/fd` before and after a
//! connect); every wait has a deadline.
#![cfg(target_os = "linux")]

use courier_shm::{Client, ConnectConfig, Error, Incoming, ReplyContext, Server, ServerConfig};
use std::collections::HashSet;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

type Srv = Server<u64, u64, u32>;
type Cli = Client<u64, u64, u32>;

/// Payload offsets of the RPC layout (version 4, the default 64 slots): see `rpc/layout.rs`.
const DOORBELL: usize = 88;
const SRV_BELL: usize = 160;
const RING: usize = 192;
const SLOTS: u64 = 64;
const RECS: usize = RING + 8 * SLOTS as usize;
const S_STATE: usize = 0;
const S_KIND: usize = 4;
const QUEUED: u32 = 1;
const DONE: u32 = 3;
const FREE_BUF: u32 = 9;
const CANCELED: u32 = 4;
/// Where the payload starts in a segment.
const HEADER: usize = 64;

/// Queues `slot` as the client's entry number `n` of the request ring: the slot index
/// stamped with its lap (see `substrate/ring.rs`, "Stamped entries").
fn queue_entry(seg: &Mapping, n: u64, slot: usize) {
    let stamp = ((n / SLOTS + 1) & 0xfff) << 52;
    seg.u64(RING + 8 * (n % SLOTS) as usize)
        .store(slot as u64 | stamp, Ordering::Release);
}

fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh runtime directory for this test binary, and a unique name.
fn setup(tag: &str) -> (Srv, String) {
    courier_testkit::runtime_dir("courier-rpc-hostile");
    let name = format!("hostile-{tag}");
    (Srv::bind(&name, ServerConfig::new()).unwrap(), name)
}

/// The memfds open in this process now.
fn memfds() -> HashSet<i32> {
    open_fds()
        .into_iter()
        .filter(|fd| {
            std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .is_ok_and(|target| target.to_string_lossy().starts_with("/memfd:"))
        })
        .collect()
}

/// A second, writable mapping of a shared file, as a hostile process would have it.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: only raw atomic accesses are made through the pointer, from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn of_fd(fd: i32) -> Mapping {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{fd}"))
            .unwrap();
        let len = file.metadata().unwrap().len() as usize;
        // SAFETY: a fresh shared mapping at an address the kernel picks; only accessed
        // through atomics below, and unmapped on drop.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                file.as_fd(),
                0,
            )
            .unwrap()
        };
        Mapping {
            ptr: ptr.cast(),
            len,
        }
    }

    fn u32(&self, payload_off: usize) -> &AtomicU32 {
        assert!(HEADER + payload_off + 4 <= self.len);
        // SAFETY: in bounds (checked), 4-aligned offsets in a page-aligned mapping.
        unsafe { &*self.ptr.add(HEADER + payload_off).cast::<AtomicU32>() }
    }

    fn u64(&self, payload_off: usize) -> &AtomicU64 {
        assert!(HEADER + payload_off + 8 <= self.len);
        // SAFETY: as in `u32`, 8-aligned.
        unsafe { &*self.ptr.add(HEADER + payload_off).cast::<AtomicU64>() }
    }

    /// Zeroes every byte, the segment header included.
    fn zero(&self) {
        for off in (0..self.len).step_by(8) {
            // SAFETY: in bounds, 8-aligned in a page-aligned mapping.
            unsafe { &*self.ptr.add(off).cast::<AtomicU64>() }.store(0, Ordering::Relaxed);
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer used.
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

/// A client of `name`, and writable mappings of every memfd its connection brought in.
fn client_and_mappings(name: &str) -> (Cli, Vec<Mapping>) {
    let before = memfds();
    let c = Cli::connect(name, T).unwrap();
    let new: Vec<Mapping> = memfds()
        .difference(&before)
        .map(|&fd| Mapping::of_fd(fd))
        .collect();
    assert!(!new.is_empty(), "the connection brought no memfd");
    (c, new)
}

/// The connection segment among `maps`: the one that carries an RPC header ("CRPC").
fn segment(maps: &[Mapping]) -> &Mapping {
    maps.iter()
        .find(|m| m.len > 4096 && m.u32(0).load(Ordering::Relaxed) == u32::from_le_bytes(*b"CRPC"))
        .expect("no RPC segment among the new memfds")
}

/// A server answering `req(x)` with `x + 1` on a thread of its own, until [`Serving::stop`].
struct Serving {
    stop: Arc<AtomicBool>,
    worker: std::thread::JoinHandle<Srv>,
}

impl Serving {
    fn start(s: Srv) -> Serving {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let worker = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                if let Ok(Incoming::Call(x, ctx)) = s.wait_timeout(Duration::from_millis(20)) {
                    let _ = ctx.reply(x + 1);
                }
            }
            s
        });
        Serving { stop, worker }
    }

    /// Stops serving (within 20 ms) and gives the server back.
    fn stop(self) -> Srv {
        self.stop.store(true, Ordering::Relaxed);
        self.worker.join().unwrap()
    }
}

/// The arrangement of most tests here: the test lock, a server answering on a thread, its
/// name, and a client with its mappings (the one that misbehaves).
fn serving_and_evil(
    tag: &str,
) -> (
    MutexGuard<'static, ()>,
    Serving,
    String,
    (Cli, Vec<Mapping>),
) {
    let g = serial();
    let (s, name) = setup(tag);
    let serving = Serving::start(s);
    let evil = client_and_mappings(&name);
    (g, serving, name, evil)
}

#[test]
fn a_client_that_breaks_its_ring_is_hung_up_on_and_others_are_served() {
    let (_g, serving, name, (evil, maps)) = serving_and_evil("ring");
    assert_eq!(evil.req_timeout(1, T), Ok(2));
    // The ring's next slot (entry 1) gets a stamp of neither its lap nor the one before: no
    // honest client writes one.
    segment(&maps)
        .u64(RING + 8)
        .store(7 << 52, Ordering::Release);
    // The server cuts the client off at its next look and hangs up: the client sees it gone
    // (before the fix the server only ignored it: it stayed "connected" for ever), and its
    // calls fail at once. (No call is made before: the client's own entry would put a valid
    // one back.)
    let end = Instant::now() + T;
    while !evil.is_server_gone() {
        assert!(Instant::now() < end, "the broken client was not hung up on");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(evil.req_timeout(2, T), Err(Error::ServerDisappeared));
    let honest = Cli::connect(&name, T).unwrap();
    assert_eq!(honest.req_timeout(10, T), Ok(11));
    let s = serving.stop();
    assert_eq!(s.stats().clients, 1, "the broken connection was forgotten");
}

#[test]
fn a_client_requeueing_transport_messages_holds_no_worker() {
    let _g = serial();
    let (s, name) = setup("requeue");
    let (evil, maps) = client_and_mappings(&name);
    let seg = segment(&maps);
    let honest = Cli::connect(&name, T).unwrap();
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        // The trap: every slot carries FREE_BUF and is queued again as soon as the server
        // settles it, so the ring is never empty for long.
        scope.spawn(|| {
            let mut tail = 0u64;
            let mut queue = |slot: usize| {
                let rec = RECS + 128 * slot;
                seg.u32(rec + S_KIND).store(FREE_BUF, Ordering::Relaxed);
                seg.u32(rec + S_STATE).store(QUEUED, Ordering::Relaxed);
                queue_entry(seg, tail, slot);
                tail += 1;
            };
            for slot in 0..64 {
                queue(slot);
            }
            while !stop.load(Ordering::Relaxed) {
                for slot in 0..64 {
                    if seg.u32(RECS + 128 * slot + S_STATE).load(Ordering::Acquire) & 0xff == DONE {
                        queue(slot);
                    }
                }
            }
        });
        let s = &s;
        scope.spawn(move || {
            for _ in 0..3 {
                if let Ok(Incoming::Call(x, ctx)) = s.wait_timeout(T) {
                    let _ = ctx.reply(x + 1);
                }
            }
        });
        for i in 0..3 {
            tx.send(honest.req_timeout(i, T)).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    for i in 0..3 {
        assert_eq!(rx.recv_timeout(T).unwrap(), Ok(i + 1));
    }
    // Dropping the server does not wait on the trap either.
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(s);
        done_tx.send(()).unwrap();
    });
    assert!(done_rx.recv_timeout(T).is_ok(), "dropping the server hung");
    drop(evil);
}

#[test]
fn a_client_zeroing_what_it_was_given_hurts_only_itself() {
    let (_g, serving, name, (evil, maps)) = serving_and_evil("zero");
    for m in &maps {
        m.zero();
    }
    // New clients connect and are served (a shared doorbell whose header was zeroed made
    // every later connect fail with BadMagic).
    for i in 0..3 {
        let c = Cli::connect(&name, T).unwrap();
        assert_eq!(c.req_timeout(i, T), Ok(i + 1));
    }
    serving.stop();
    drop(evil);
}

/// Whether the connection in `maps` was told to ring the doorbell (the server's workers sleep
/// on the doorbells: `futex_waitv` is there and the server takes at most 127 clients).
fn on_doorbells(maps: &[Mapping]) -> bool {
    segment(maps).u32(SRV_BELL).load(Ordering::Relaxed) == 1
}

/// Runs `attack` over and over on a thread, given the misbehaving client's segment, until
/// the server hangs up on that client (or the deadline), while an honest client makes 50
/// calls; then the misbehaving client must have been hung up on and the honest one must
/// still be served. Skipped where the server sleeps on the sockets.
fn hung_up_on_while_others_are_served(
    tag: &str,
    what: &str,
    mut attack: impl FnMut(&Mapping) + Send,
) {
    let (_g, serving, name, (evil, maps)) = serving_and_evil(tag);
    if !on_doorbells(&maps) {
        eprintln!("skipped: this kernel has no futex_waitv, the server sleeps on sockets");
        serving.stop();
        return;
    }
    let honest = Cli::connect(&name, T).unwrap();
    let seg = segment(&maps);
    let end = Instant::now() + T;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !evil.is_server_gone() && Instant::now() < end {
                attack(seg);
            }
        });
        for i in 0..50 {
            assert_eq!(honest.req_timeout(i, T), Ok(i + 1));
        }
    });
    assert!(
        evil.is_server_gone(),
        "the client {what} was not hung up on"
    );
    assert_eq!(evil.req_timeout(1, T), Err(Error::ServerDisappeared));
    assert_eq!(
        honest.req_timeout(7, T),
        Ok(8),
        "the honest client was cut off too"
    );
    serving.stop();
}

/// A new doorbell value at every store, no call ever queued.
#[test]
fn a_client_that_keeps_changing_its_doorbell_is_hung_up_on() {
    let mut v = 0u32;
    hung_up_on_while_others_are_served("doorbell", "changing its doorbell", |seg| {
        v = v.wrapping_add(1);
        seg.u32(DOORBELL).store(v, Ordering::Release);
        std::hint::spin_loop();
    });
}

/// A doorbell flipper that also queues, now and then, a call it has already withdrawn (which
/// costs it two stores and a worker nothing but a look): the withdrawn calls do not make up
/// for the changes (before, any move of the ring forgave every change seen so far).
#[test]
fn withdrawn_calls_do_not_excuse_a_changing_doorbell() {
    let (mut v, mut tail) = (0u32, 0u64);
    let what = "changing its doorbell between withdrawn calls";
    hung_up_on_while_others_are_served("withdrawn", what, |seg| {
        v = v.wrapping_add(1);
        seg.u32(DOORBELL).store(v, Ordering::Release);
        let slot = (tail % 64) as usize;
        let state = seg.u32(RECS + 128 * slot + S_STATE);
        // Every 16th change, a withdrawn call in a slot the server is done with.
        if v % 16 == 0 && (tail < 64 || state.load(Ordering::Acquire) & 0xff == DONE) {
            state.store(CANCELED, Ordering::Relaxed);
            queue_entry(seg, tail, slot);
            tail += 1;
        }
        std::hint::spin_loop();
    });
}

/// FUTEX_WAKE on its own doorbell, never changing it, no call queued.
#[test]
fn a_client_that_keeps_waking_the_workers_without_ringing_is_hung_up_on() {
    let what = "waking the workers without ringing";
    hung_up_on_while_others_are_served("wakes", what, |seg| {
        use rustix::thread::futex;
        let _ = futex::wake(seg.u32(DOORBELL), futex::Flags::empty(), u32::MAX >> 1);
        std::thread::yield_now();
    });
}

/// The descriptors open in this process now.
fn open_fds() -> HashSet<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Descriptors of our own for the datagram sockets among `fds`, those that a connect added,
/// one per socket: both ends of the connection's wake-up socket (the server runs in this
/// process too; it has two descriptors of its end, and may still hold the client's end it
/// sent). Ours, so that a number the server closes and a later connection reuses is not
/// among them.
fn wake_up_sockets(fds: &HashSet<i32>) -> Vec<std::os::fd::OwnedFd> {
    let mut seen = HashSet::new();
    let found: Vec<std::os::fd::OwnedFd> = fds
        .iter()
        .filter_map(|&fd| {
            // SAFETY: `fd` was open in this process when listed; if it was closed since, the
            // calls below fail on it (or find another descriptor, which we then copy, no
            // more); it is borrowed for them only.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let dgram = rustix::net::sockopt::socket_type(fd) == Ok(rustix::net::SocketType::DGRAM);
            let inode = rustix::fs::fstat(fd).ok()?.st_ino;
            (dgram && seen.insert(inode))
                .then(|| fd.try_clone_to_owned().ok())
                .flatten()
        })
        .collect();
    assert!(
        !found.is_empty(),
        "the connection brought no datagram socket"
    );
    found
}

/// Runs `attack` over and over on a thread, given the misbehaving client's segment and its
/// connection's wake-up sockets (see [`wake_up_sockets`]), while an honest client makes 50
/// calls; then the misbehaving client must have been hung up on, the honest one still
/// served. The worker never spins, so that what the client queues waits for a wake-up (the
/// watcher's, for its rings). Skipped where the workers read the wake-up sockets themselves.
fn rings_its_wake_up_socket(
    tag: &str,
    what: &str,
    cold_first: bool,
    mut attack: impl FnMut(&Mapping, &[std::os::fd::OwnedFd]) + Send,
) {
    let _g = serial();
    courier_testkit::runtime_dir("courier-rpc-hostile");
    let name = format!("hostile-{tag}");
    let s = Srv::bind(&name, ServerConfig::new().spin(Duration::ZERO)).unwrap();
    let serving = Serving::start(s);
    let before = open_fds();
    let (evil, maps) = client_and_mappings(&name);
    // The client's end is one of them; a byte sent on the server's end only fills the
    // client's (which never reads it).
    let kicks = wake_up_sockets(&open_fds().difference(&before).copied().collect());
    if !on_doorbells(&maps) {
        eprintln!("skipped: the workers read the wake-up sockets themselves here (no futex_waitv)");
        serving.stop();
        return;
    }
    let seg = segment(&maps);
    if cold_first {
        // Left out of the workers' looks: only its watcher's rings get them to look at it.
        courier_testkit::wait_until("the connection cold", T, || {
            seg.u32(SRV_SLEEP).load(Ordering::SeqCst) == SLEEP_COLD
        });
    }
    let honest = Cli::connect(&name, T).unwrap();
    let end = Instant::now() + T;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !evil.is_server_gone() && Instant::now() < end {
                attack(seg, &kicks);
                std::thread::yield_now();
            }
        });
        for i in 0..50 {
            assert_eq!(honest.req_timeout(i, T), Ok(i + 1));
        }
    });
    assert!(
        evil.is_server_gone(),
        "the client {what} was not hung up on"
    );
    assert_eq!(
        honest.req_timeout(7, T),
        Ok(8),
        "the honest client was cut off too"
    );
    serving.stop();
}

/// A byte on each of the connection's datagram sockets.
fn kick_all(kicks: &[std::os::fd::OwnedFd]) {
    for kick in kicks {
        let _ = rustix::net::send(kick, &[1], rustix::net::SendFlags::DONTWAIT);
    }
}

/// A client that keeps ringing its wake-up socket (the path of a cold connection's client,
/// read by the connection's watcher) with nothing queued: each ring counts as a doorbell
/// change does, and the client is hung up on, while an honest client is served.
#[test]
fn a_client_that_keeps_ringing_its_wake_up_socket_for_nothing_is_hung_up_on() {
    let what = "ringing its wake-up socket for nothing";
    rings_its_wake_up_socket("kicks", what, false, |_, kicks| kick_all(kicks));
}

/// The same, from a cold connection, with a call it has already withdrawn queued before
/// each ring (so that the watcher finds a call that may be queued, and wakes a worker, which
/// skips it): the withdrawn calls do not make up for the rings. The client rings once per
/// withdrawn call, the next once the server is done with the last, so each ring is one the
/// watcher reads on its own and counts: it is cut off after `slots` + 64 of them (when a
/// ring counted only if it found nothing queued, the rare ones that found the call already
/// skipped took 100 000 rings and more to add up).
#[test]
fn withdrawn_calls_do_not_excuse_rings_of_the_wake_up_socket() {
    let mut tail = 0u64;
    let what = "ringing its wake-up socket for withdrawn calls";
    let rang = AtomicU64::new(0);
    rings_its_wake_up_socket("kicks-withdrawn", what, true, |seg, kicks| {
        let state = |n: u64| seg.u32(RECS + 128 * (n % 64) as usize + S_STATE);
        // A new withdrawn call once the server is done with the last one (it completes a
        // withdrawn slot when it comes to its entry), and a ring for it only: each ring
        // finds a call queued (the workers never spin, and only the watcher wakes them).
        let last_done = tail == 0 || state(tail - 1).load(Ordering::Acquire) & 0xff == DONE;
        if last_done && (tail < 64 || state(tail).load(Ordering::Acquire) & 0xff == DONE) {
            state(tail).store(CANCELED, Ordering::Relaxed);
            queue_entry(seg, tail, (tail % 64) as usize);
            tail += 1;
            kick_all(kicks);
            rang.fetch_add(1, Ordering::Relaxed);
        }
    });
    let rang = rang.load(Ordering::Relaxed);
    assert!(
        rang <= 4 * (SLOTS + 64),
        "cut off only after {rang} rings: the withdrawn calls were let off"
    );
}

/// Three clients that never spin, each making `calls` calls on its own thread, against a
/// server of `config` with two workers that never spin: each call finds the workers asleep
/// and rings. Every call is answered, none after a worker's sleep ran out on its own (a
/// lost wake-up: a sleeping worker looks again within 500 ms whatever happens, so a call
/// answered only then takes hundreds of milliseconds where a ring takes tens of
/// microseconds), and no client is cut off.
/// A call slower than this waited for the end of a worker's bounded sleep (within 500 ms),
/// not for a ring.
const LOST_WAKEUP: Duration = Duration::from_millis(300);

fn parked_calls_from_three_clients(tag: &str, config: ServerConfig, calls: u64) -> bool {
    courier_testkit::runtime_dir("courier-rpc-hostile");
    let name = format!("hostile-{tag}");
    let s = Srv::bind(&name, config.spin(Duration::ZERO)).unwrap();
    let stop = AtomicBool::new(false);
    let (_probe, maps) = client_and_mappings(&name);
    let doorbells = on_doorbells(&maps);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(Incoming::Call(x, ctx)) = s.wait_timeout(Duration::from_secs(1)) {
                        let _ = ctx.reply(x + 1);
                    }
                }
            });
        }
        let clients: Vec<_> = (0..3)
            .map(|k| {
                let name = &name;
                scope.spawn(move || {
                    let config = ConnectConfig::new().spin(Duration::ZERO);
                    let c = Cli::connect_with(name, &config, T).unwrap();
                    for i in 0..calls {
                        let x = k * 1_000_000 + i;
                        let start = Instant::now();
                        assert_eq!(c.req_timeout(x, T), Ok(x + 1), "client {k}, call {i}");
                        assert!(
                            start.elapsed() < LOST_WAKEUP,
                            "client {k}, call {i} took {:?}: a lost wake-up",
                            start.elapsed()
                        );
                    }
                    assert!(!c.is_server_gone(), "client {k} was cut off");
                })
            })
            .collect();
        let results: Vec<_> = clients.into_iter().map(|c| c.join()).collect();
        stop.store(true, Ordering::Relaxed);
        for r in results {
            r.unwrap();
        }
    });
    doorbells
}

/// Two clients ring at once while both workers sleep, and the call one worker takes first
/// cannot end until the other call is answered: the other worker must be woken for it. (A
/// sleeping worker waits on every doorbell, and a wake that reaches it after it was woken
/// is spent on it: without passing the wake on, the second call waited for the other
/// worker's own next look, most rounds.) Forty rounds: each call within [`LOST_WAKEUP`],
/// their median within 4 ms.
#[test]
fn two_calls_rung_at_once_wake_two_workers() {
    let _g = serial();
    courier_testkit::runtime_dir("courier-rpc-hostile");
    const SLOW: u64 = 1 << 40;
    let name = "hostile-two-rings";
    let s = Srv::bind(name, ServerConfig::new().spin(Duration::ZERO)).unwrap();
    let stop = AtomicBool::new(false);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let done_rx = std::sync::Mutex::new(done_rx);
    // The two calls start within a spin of each other: the quick client, once the slow one
    // waits for it, lets both go (a blocking barrier would wake one thread after the other).
    let (ready, go) = (AtomicU64::new(0), AtomicU64::new(0));
    let config = ConnectConfig::new().spin(Duration::ZERO);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(Incoming::Call(x, ctx)) = s.wait_timeout(Duration::from_secs(1)) {
                        if x & SLOW != 0 {
                            // Answered once the other client's call was.
                            let rx = done_rx.lock().unwrap();
                            rx.recv_timeout(T).expect("the other call was answered");
                        }
                        let _ = ctx.reply(x + 1);
                    }
                }
            });
        }
        let slow = scope.spawn(|| {
            let c = Cli::connect_with(name, &config, T).unwrap();
            for i in 0..40 {
                ready.store(i + 1, Ordering::SeqCst);
                let end = Instant::now() + T;
                while go.load(Ordering::SeqCst) != i + 1 {
                    assert!(Instant::now() < end, "round {i}: never let go");
                    std::hint::spin_loop();
                }
                assert_eq!(c.req_timeout(SLOW | i, T), Ok((SLOW | i) + 1));
            }
        });
        let quick = scope.spawn(|| {
            let c = Cli::connect_with(name, &config, T).unwrap();
            let mut took = Vec::new();
            for i in 0..40 {
                let end = Instant::now() + T;
                while ready.load(Ordering::SeqCst) != i + 1 {
                    assert!(
                        Instant::now() < end,
                        "round {i}: the slow client never came"
                    );
                    std::thread::yield_now();
                }
                go.store(i + 1, Ordering::SeqCst);
                let t = Instant::now();
                assert_eq!(c.req_timeout(i, T), Ok(i + 1));
                took.push(t.elapsed());
                done_tx.send(()).unwrap();
            }
            took.sort_unstable();
            // Left to the end of the other worker's sleep (within 500 ms), a call takes
            // milliseconds; woken, tens of microseconds. The median forgives a round the host
            // delayed.
            assert!(
                took[39] < LOST_WAKEUP,
                "the slowest quick call took {:?}",
                took[39]
            );
            assert!(
                took[20] < Duration::from_millis(4),
                "the median quick call took {:?}: left to the other worker's own look",
                took[20]
            );
        });
        let results = [quick.join(), slow.join()];
        stop.store(true, Ordering::Relaxed);
        for r in results {
            r.unwrap();
        }
    });
}

#[test]
fn honest_clients_ringing_at_every_call_are_never_cut_off() {
    let _g = serial();
    let doorbells = parked_calls_from_three_clients("parked", ServerConfig::new(), 2000);
    if !doorbells {
        eprintln!("note: this kernel has no futex_waitv; the calls rang the wake-up sockets");
    }
}

#[test]
fn a_server_of_more_clients_than_the_doorbells_cover_is_woken_by_sockets() {
    let _g = serial();
    let config = ServerConfig::new().max_clients(1000);
    let doorbells = parked_calls_from_three_clients("sockets", config, 500);
    assert!(
        !doorbells,
        "a server of 1000 clients cannot sleep on one futex_waitv"
    );
}

/// Payload offset of `srv_sleep`, how many workers the server says sleep (see
/// `rpc/layout.rs`).
const SRV_SLEEP: usize = 144;

/// [`SRV_SLEEP`] of a connection the server let go cold (see `rpc/layout.rs`): its client
/// rings the wake-up socket, not its doorbell.
const SLEEP_COLD: u32 = u32::MAX;

/// A server that never spins, its one worker on a thread of its own (parked at every wait:
/// `wait()`, no deadline, or a task in `async_wait()` on that thread; answering `x` with
/// `x + 1` until `u64::MAX`), the worker's thread id, and a client with its mappings.
struct ParkedServer {
    worker: std::thread::JoinHandle<()>,
    tid: i32,
    c: Cli,
    maps: Vec<Mapping>,
}

impl ParkedServer {
    /// Starts it as `hostile-{tag}`, its worker a task if `task`; `None` (skipped, with a
    /// message) where the server does not sleep on the doorbells.
    fn start(tag: &str, task: bool) -> Option<ParkedServer> {
        courier_testkit::runtime_dir("courier-rpc-hostile");
        let name = format!("hostile-{tag}");
        let s = Srv::bind(&name, ServerConfig::new().spin(Duration::ZERO)).unwrap();
        let (tid_tx, tid_rx) = mpsc::channel();
        let worker = std::thread::spawn(move || {
            tid_tx
                .send(rustix::thread::gettid().as_raw_nonzero().get())
                .unwrap();
            let answer = |x: u64, ctx: ReplyContext<u64, u32>| {
                let _ = ctx.reply(x.wrapping_add(1));
                x != u64::MAX
            };
            if task {
                pollster::block_on(async {
                    while let Ok(Incoming::Call(x, ctx)) = s.async_wait().await {
                        if !answer(x, ctx) {
                            break;
                        }
                    }
                });
            } else {
                while let Ok(Incoming::Call(x, ctx)) = s.wait() {
                    if !answer(x, ctx) {
                        break;
                    }
                }
            }
        });
        let tid = tid_rx.recv_timeout(T).unwrap();
        let (c, maps) = client_and_mappings(&name);
        let parked = ParkedServer {
            worker,
            tid,
            c,
            maps,
        };
        if on_doorbells(&parked.maps) {
            return Some(parked);
        }
        eprintln!("skipped: the server sleeps on the wake-up sockets here (no futex_waitv)");
        parked.finish();
        None
    }

    /// Ends the worker (the last call).
    fn finish(self) {
        assert_eq!(self.c.req_timeout(u64::MAX, T), Ok(0));
        self.worker.join().unwrap();
    }
}

/// Whether thread `tid` of this process sleeps in the kernel.
fn in_kernel_sleep(tid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..].starts_with('S')
}

/// A call queued while the only worker sleeps, and not rung for (the client found
/// `srv_sleep` cleared: a client that lies to itself, or a lost wake-up): still answered, by
/// the server's own round. The worker sleeps in `wait()`, with no deadline, and a sleep on
/// the doorbells sets no timer of its own; the accept thread ends such sleeps every 500 ms.
#[test]
fn a_call_nobody_rang_for_is_answered_by_the_servers_round() {
    let _g = serial();
    let Some(parked) = ParkedServer::start("unrung", false) else {
        return;
    };
    let (c, tid, seg) = (&parked.c, parked.tid, segment(&parked.maps));
    // The worker asleep in its wait: announced to this connection, and in the kernel.
    let asleep = || seg.u32(SRV_SLEEP).load(Ordering::SeqCst) != 0 && in_kernel_sleep(tid);
    // The server may write `srv_sleep` again between our clearing it and the client's read
    // (a round that woke the worker, which went back to sleep): then the client rings, and
    // the attempt proves nothing. The doorbell tells; a few attempts make one that counts.
    let mut unrung = 0;
    for attempt in 1..=5u64 {
        courier_testkit::wait_until("the worker asleep", T, asleep);
        let rung = seg.u32(DOORBELL).load(Ordering::SeqCst);
        // The client reads no sleeper, so it does not ring.
        seg.u32(SRV_SLEEP).store(0, Ordering::SeqCst);
        let started = Instant::now();
        assert_eq!(
            c.req_timeout(attempt, T),
            Ok(attempt + 1),
            "a call nobody rang for was not answered"
        );
        if seg.u32(DOORBELL).load(Ordering::SeqCst) == rung {
            eprintln!("answered after {:?} with no ring", started.elapsed());
            unrung += 1;
            break;
        }
    }
    assert_eq!(
        unrung, 1,
        "every attempt's client rang: the round was never needed"
    );
    parked.finish();
}

/// Context switches so far of this process's connection watchers (the threads named
/// `courier-shm-watch`, cut to 15 bytes by the kernel), client and server side.
fn watcher_switches() -> u64 {
    let mut sum = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let dir = task.path();
        let named = std::fs::read_to_string(dir.join("comm"))
            .is_ok_and(|comm| comm.trim_end() == "courier-shm-wat");
        // A thread that ended meanwhile has nothing to read.
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue;
        };
        if named {
            sum += status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .map(|l| l.split(':').nth(1).unwrap().trim().parse::<u64>().unwrap())
                .sum::<u64>();
        }
    }
    sum
}

/// A connection that neither calls nor rings for a round of the accept thread (every
/// 500 ms) goes cold: its `srv_sleep` says so, no worker's sleep watches its doorbell, and
/// its client rings the wake-up socket instead, which the connection's watcher reads to
/// wake a worker (so that a server of many idle clients sleeps on the busy ones' doorbells
/// only). Its next call is answered through that path, not by the round: the doorbell does
/// not change and a watcher wakes. The call warms it again before it is answered, and
/// from then on the client rings its doorbell.
#[test]
fn an_idle_connection_goes_cold_and_its_calls_wake_a_worker_through_its_watcher() {
    goes_cold_and_wakes_through_its_watcher("cold", false);
}

/// The same with the worker a task in `async_wait()`: the server's async reactor sleeps on
/// the doorbells as a worker does, and is woken as surely.
#[test]
fn a_cold_connections_call_wakes_an_async_server_through_its_watcher() {
    goes_cold_and_wakes_through_its_watcher("cold-async", true);
}

fn goes_cold_and_wakes_through_its_watcher(tag: &str, task: bool) {
    let _g = serial();
    let Some(parked) = ParkedServer::start(tag, task) else {
        return;
    };
    let (c, tid, seg) = (&parked.c, parked.tid, segment(&parked.maps));
    assert_eq!(c.req_timeout(1, T), Ok(2));
    let srv_sleep = || seg.u32(SRV_SLEEP).load(Ordering::SeqCst);
    courier_testkit::wait_until("the idle connection cold", T, || srv_sleep() == SLEEP_COLD);
    // A round just ran: the next is 500 ms away, and a call it answered would take about
    // that long (see `LOST_WAKEUP`).
    courier_testkit::wait_until("the worker asleep", T, || in_kernel_sleep(tid));
    let rung = seg.u32(DOORBELL).load(Ordering::SeqCst);
    let switches = watcher_switches();
    let started = Instant::now();
    assert_eq!(c.req_timeout(2, T), Ok(3), "a cold connection's call");
    assert!(
        started.elapsed() < LOST_WAKEUP,
        "a cold connection's call took {:?}: answered by the round, not woken by its watcher",
        started.elapsed()
    );
    assert_eq!(
        seg.u32(DOORBELL).load(Ordering::SeqCst),
        rung,
        "the client of a cold connection rang its doorbell"
    );
    // The watcher that read the wake-up socket counts a switch when it blocks again; a call
    // answered by the round wakes none, and this wait runs out.
    courier_testkit::wait_until("a watcher woken by the wake-up socket", T, || {
        watcher_switches() > switches
    });
    assert_ne!(
        srv_sleep(),
        SLEEP_COLD,
        "the call did not warm its connection"
    );
    // Warm again: the client rings its doorbell. (A round may let it go cold once more
    // between our look and the call, if a second passes: a few attempts.)
    let mut rang = false;
    for attempt in 3..=7u64 {
        courier_testkit::wait_until("the worker asleep", T, || {
            in_kernel_sleep(tid) && srv_sleep() != 0
        });
        let before = seg.u32(DOORBELL).load(Ordering::SeqCst);
        let warm = srv_sleep() != SLEEP_COLD;
        assert_eq!(c.req_timeout(attempt, T), Ok(attempt + 1));
        if warm && seg.u32(DOORBELL).load(Ordering::SeqCst) != before {
            rang = true;
            break;
        }
    }
    assert!(
        rang,
        "a warmed connection's client did not ring its doorbell"
    );
    parked.finish();
}
