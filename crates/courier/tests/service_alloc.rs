//! A `#[courier::service]` call allocates nothing in steady state, on either side: after a
//! warm-up, calls, one-way messages and (across processes) lends make no heap allocation in
//! the client's thread or the serving thread. In one process a lend moves its bytes in a
//! `Vec` (one allocation per lend, documented), so lends are counted there only to show it.
//!
//! A counting global allocator counts allocations made by the threads that opt in.

use courier::Ipc;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

struct Counting;

thread_local! {
    /// The counter this thread adds to, if it opted in.
    static COUNTER: Cell<Option<&'static AtomicUsize>> = const { Cell::new(None) };
}

// SAFETY: forwards to the system allocator unchanged; counting has no effect on the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNTER.try_with(|c| c.get().map(|n| n.fetch_add(1, Ordering::Relaxed)));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn count_on_this_thread(counter: &'static AtomicUsize) {
    COUNTER.with(|c| c.set(Some(counter)));
}

/// Why `get` failed.
#[derive(Ipc, Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Missing {
    /// Never set.
    Unset,
}

/// A register, a sum over lent bytes and a fill of them.
#[courier::service]
pub trait Reg {
    /// The register, or `Unset`.
    fn get(&self) -> Result<u64, Missing>;
    /// Sets the register (one-way).
    fn set(&self, value: u64);
    /// The sum of the lent bytes.
    fn sum(&self, #[lend] data: &[u8]) -> u64;
    /// Fills the lent bytes.
    fn fill(&self, byte: u8, #[lend_mut] data: &mut [u8]) -> usize;
}

struct Register(AtomicUsize);

impl Reg for Register {
    fn get(&self) -> Result<u64, Missing> {
        match self.0.load(Ordering::SeqCst) {
            0 => Err(Missing::Unset),
            v => Ok(v as u64),
        }
    }
    fn set(&self, value: u64) {
        self.0.store(value as usize, Ordering::SeqCst);
    }
    fn sum(&self, data: &[u8]) -> u64 {
        data.iter().map(|&b| u64::from(b)).sum()
    }
    fn fill(&self, byte: u8, data: &mut [u8]) -> usize {
        data.fill(byte);
        data.len()
    }
}

const CALLS: u64 = 5_000;

/// How many allocations `f` made on the counted threads.
fn allocations(counter: &AtomicUsize, f: impl FnOnce()) -> usize {
    let before = counter.load(Ordering::SeqCst);
    f();
    counter.load(Ordering::SeqCst) - before
}

/// `rounds` rounds of get/set (and lends when `lends`), checked.
fn exercise(c: &RegClient, rounds: u64, lends: bool) {
    let data = [3u8; 256];
    let mut buf = [0u8; 256];
    for i in 1..=rounds {
        c.set(i).unwrap();
        assert_eq!(c.get(), Ok(i));
        if lends {
            assert_eq!(c.sum(&data), Ok(768));
            assert_eq!(c.fill(i as u8, &mut buf), Ok(256));
            assert_eq!(buf[255], i as u8);
        }
    }
}

/// Serves `server` on a thread counted by `counter`; returns when told to stop (the serving
/// thread keeps serving for a shm server, which waits for new clients forever).
fn serve_counted(server: RegServer, counter: &'static AtomicUsize) -> mpsc::Receiver<()> {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        count_on_this_thread(counter);
        let _ = server.serve(Register(AtomicUsize::new(0)));
        let _ = done.send(());
    });
    finished
}

#[test]
fn local_calls_and_sends_allocate_nothing() {
    let counter: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    let (client, server) = RegClient::pair();
    let finished = serve_counted(server, counter);
    count_on_this_thread(counter);
    exercise(&client, 100, true);
    let calls = allocations(counter, || exercise(&client, CALLS, false));
    // A local lend moves its bytes in a Vec, inside a box that also brings a mutable lend's
    // bytes back: two allocations a call, none for the reply. (A plain call's envelope keeps
    // no room for a lend, so that it stays small; see `Envelope`.)
    let lends = allocations(counter, || exercise(&client, 100, true));
    COUNTER.with(|c| c.set(None));
    drop(client);
    finished.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        calls <= 2,
        "{calls} allocations in {CALLS} rounds of calls and sends"
    );
    assert!(
        lends <= 100 * 2 * 2,
        "{lends} allocations in 100 rounds of two lends"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn shm_calls_sends_and_lends_allocate_nothing() {
    courier_testkit::runtime_dir("courier-service-alloc");
    let counter: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    let server = RegServer::bind("alloc").unwrap();
    let _serving = serve_counted(server, counter);
    let client = RegClient::connect("alloc", Duration::from_secs(20)).unwrap();
    count_on_this_thread(counter);
    exercise(&client, 100, true);
    let calls = allocations(counter, || exercise(&client, CALLS, false));
    let all = allocations(counter, || exercise(&client, CALLS, true));
    COUNTER.with(|c| c.set(None));
    assert!(
        calls <= 2,
        "{calls} allocations in {CALLS} rounds of calls and sends"
    );
    assert!(
        all <= 2,
        "{all} allocations in {CALLS} rounds of calls, sends and lends"
    );
}
