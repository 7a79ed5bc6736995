//! No heap allocation per call in steady state: after a warm-up, blocking round trips, async
//! round trips, one-way messages and canceled calls allocate nothing (call slots are
//! recycled, the queue is intrusive, wait lists keep their capacity).
//!
//! A counting global allocator counts allocations made by the test's own threads.
//!
//! "Nothing" is exact but for one bounded effect: when a slot's release races the next
//! call's acquire, the call finds the pool empty and allocates one more slot, which the pool
//! then keeps. That can happen at most once per extra call in flight, so the count is bounded
//! by the calls in flight (here at most [`RAMP`]), never by the number of calls.

use courier_local::{bounded, channel, CancelOutcome};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

struct Counting;

thread_local! {
    /// The counter of the test this thread works for, if any. Only threads that opt in are
    /// counted, and each test has its own counter, so tests running in parallel and the
    /// harness's own threads do not disturb each other's figures.
    static COUNTER: Cell<Option<&'static AtomicUsize>> = const { Cell::new(None) };
}

fn count_one() {
    let _ = COUNTER.try_with(|c| {
        if let Some(counter) = c.get() {
            counter.fetch_add(1, Ordering::Relaxed);
            if TRACE.load(Ordering::Relaxed) {
                c.set(None);
                eprintln!("allocation\n{}", std::backtrace::Backtrace::force_capture());
                c.set(Some(counter));
            }
        }
    });
}

/// Set `COURIER_ALLOC_TRACE=1` to print a backtrace for every counted allocation.
static TRACE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A fresh counter for one test.
fn new_counter() -> &'static AtomicUsize {
    TRACE.store(
        std::env::var_os("COURIER_ALLOC_TRACE").is_some(),
        Ordering::Relaxed,
    );
    Box::leak(Box::new(AtomicUsize::new(0)))
}

// SAFETY: forwards to the system allocator unchanged; counting has no effect on the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Slots a test may add to the pool after its warm-up (see the module docs).
const RAMP: usize = 2;

/// Runs `f` with this thread's allocations counted in `counter`.
fn counted<T>(counter: &'static AtomicUsize, f: impl FnOnce() -> T) -> T {
    COUNTER.with(|c| c.set(Some(counter)));
    let r = f();
    COUNTER.with(|c| c.set(None));
    r
}

/// Runs `rounds(warmup)` uncounted, then `rounds(measured)` with this thread's allocations
/// counted, and returns the allocations counted meanwhile (the server thread, counted all
/// along, adds its own made in that window).
fn steady_state_allocations(
    counter: &'static AtomicUsize,
    warmup: u64,
    measured: u64,
    mut rounds: impl FnMut(u64),
) -> usize {
    rounds(warmup);
    let before = counter.load(Ordering::SeqCst);
    counted(counter, || rounds(measured));
    counter.load(Ordering::SeqCst) - before
}

/// Round trips between a client thread and a server thread; both are counted, and only the
/// client's measured part (after a warm-up) is compared.
#[test]
fn blocking_round_trips_allocate_nothing() {
    let counter = new_counter();
    let (server, client) = channel::<u64, u64, ()>();
    let srv = thread::spawn(move || {
        counted(counter, || {
            while let Ok((n, ctx)) = server.wait() {
                if !ctx.is_one_way() {
                    ctx.reply(n + 1).unwrap();
                }
            }
        })
    });
    let allocated = thread::spawn(move || {
        // The warm-up fills the pool and lets the wait lists reach their size.
        steady_state_allocations(counter, 5_000, 20_000, |n| {
            for i in 0..n {
                assert_eq!(client.req(i), Ok(i + 1));
                if i % 7 == 0 {
                    client.send(i).unwrap();
                }
            }
        })
    })
    .join()
    .unwrap();
    srv.join().unwrap();
    assert!(
        allocated <= RAMP,
        "{allocated} allocations during 20,000 steady-state calls"
    );
}

#[test]
fn bounded_calls_and_cancels_allocate_nothing() {
    let counter = new_counter();
    let (server, client) = bounded::<u64, u64, ()>(8);
    let srv = thread::spawn(move || {
        counted(counter, || {
            while let Ok((n, ctx)) = server.wait() {
                if !ctx.is_one_way() {
                    let _ = ctx.reply(n * 2);
                }
            }
        })
    });
    let allocated = thread::spawn(move || {
        let run = |client: &courier_local::Client<u64, u64, ()>, n: u64| {
            for i in 0..n {
                assert_eq!(client.req(i), Ok(i * 2));
                client.send(i).unwrap();
                match client.req_async(i).unwrap().cancel() {
                    CancelOutcome::Withdrawn(r) => assert_eq!(r, i),
                    CancelOutcome::Signaled => {}
                    CancelOutcome::Completed(r) => assert_eq!(r, Ok(i * 2)),
                }
            }
        };
        steady_state_allocations(counter, 1_000, 10_000, |n| run(&client, n))
    })
    .join()
    .unwrap();
    srv.join().unwrap();
    assert!(
        allocated <= RAMP,
        "{allocated} allocations during 10,000 steady-state call/send/cancel rounds"
    );
}

#[test]
fn async_round_trips_with_static_waker_allocate_nothing() {
    let counter = new_counter();
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll};

    /// A minimal executor: spin-polls one future with a waker that allocates nothing.
    fn block_on<F: Future>(fut: F) -> F::Output {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(fut);
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
            thread::yield_now();
        }
    }

    let (server, client) = bounded::<u64, u64, ()>(8);
    let srv = thread::spawn(move || {
        counted(counter, || {
            block_on(async {
                while let Ok((n, ctx)) = server.async_wait().await {
                    let _ = ctx.reply(n * 2);
                }
            })
        })
    });
    let allocated = thread::spawn(move || {
        let run = |client: &courier_local::Client<u64, u64, ()>, n: u64| {
            for i in 0..n {
                assert_eq!(block_on(client.areq(i)), Ok(i * 2));
                if let CancelOutcome::Withdrawn(r) = client.req_async(i).unwrap().cancel() {
                    assert_eq!(r, i);
                }
            }
        };
        steady_state_allocations(counter, 1_000, 5_000, |n| run(&client, n))
    })
    .join()
    .unwrap();
    srv.join().unwrap();
    assert!(
        allocated <= RAMP,
        "{allocated} allocations during 5,000 steady-state async calls"
    );
}

/// A client that finds its server on its own CPU looks for room elsewhere (it reads
/// `/proc`) and moves: neither may allocate. Both threads start pinned to one CPU, so every
/// call of the measured part meets its server there until the client, freed halfway, moves.
#[cfg(target_os = "linux")]
#[test]
fn a_client_beside_its_server_allocates_nothing_to_look_or_move() {
    use courier_core::placement::{moves_of_this_thread, this_cpu};
    use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
    let counter = new_counter();
    let mask = sched_getaffinity(None).unwrap();
    let mut one = CpuSet::new();
    one.set(this_cpu() as usize - 1);
    let (server, client) = channel::<u64, u64, ()>();
    let srv = thread::spawn(move || {
        sched_setaffinity(None, &one).unwrap();
        counted(counter, || {
            while let Ok((n, ctx)) = server.wait() {
                let _ = ctx.reply(n + 1);
            }
        })
    });
    let (allocated, moves) = thread::spawn(move || {
        sched_setaffinity(None, &one).unwrap();
        let mut freed = false;
        // Calls beside the server take microseconds each: 20,000 of them outlast a look's
        // 10 ms validity, so the measured part looks at least once.
        let allocated = steady_state_allocations(counter, 1_000, 40_000, |n| {
            for i in 0..n {
                assert_eq!(client.req(i), Ok(i + 1));
                if i == n / 2 && n > 1_000 {
                    sched_setaffinity(None, &mask).unwrap();
                    freed = true;
                }
            }
        });
        assert!(freed);
        (allocated, moves_of_this_thread())
    })
    .join()
    .unwrap();
    srv.join().unwrap();
    assert!(
        allocated <= RAMP,
        "{allocated} allocations beside the server ({moves} moves)"
    );
}
