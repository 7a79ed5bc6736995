//! `set_busy_poll`: a busy-polling wait spins through a long wait instead of sleeping, ends at
//! its deadline, and `Duration::ZERO` brings the sleeping wait back (Linux: a thread's
//! voluntary context switches, which only a wait that sleeps makes, are read from /proc).
#![cfg(target_os = "linux")]

use courier_local::{channel, Error};
use courier_testkit::sleeps_of_this_thread;
use std::sync::{mpsc, Barrier};
use std::time::{Duration, Instant};

/// Upper bound for any cross-thread hand-off in these tests.
const DEADLINE: Duration = Duration::from_secs(10);

/// How long a wait lasts here: far beyond the adaptive spin (a few microseconds), so a wait
/// that is not busy-polling goes to sleep in it.
const LONG_WAIT: Duration = Duration::from_millis(50);

/// How often a client slept while waiting `LONG_WAIT` for its reply, busy-polling for up to
/// `limit` (`None`: never set; `Some(ZERO)`: set, then back to the adaptive spin).
fn client_sleeps(limit: Option<Duration>) -> u64 {
    let (server, client) = channel::<u32, u32, ()>();
    if let Some(limit) = limit {
        client.set_busy_poll(Duration::from_secs(60));
        client.set_busy_poll(limit);
    }
    let (go, wait_for_go) = mpsc::channel::<()>();
    let served = std::thread::spawn(move || {
        let (x, ctx) = server.wait().unwrap();
        wait_for_go.recv_timeout(DEADLINE).unwrap();
        ctx.reply(x + 1).unwrap();
    });
    let asked = std::thread::spawn(move || {
        let before = sleeps_of_this_thread();
        assert_eq!(client.req(1), Ok(2));
        sleeps_of_this_thread() - before
    });
    std::thread::sleep(LONG_WAIT);
    go.send(()).unwrap();
    served.join().unwrap();
    asked.join().unwrap()
}

#[test]
fn a_busy_polling_client_does_not_sleep_through_a_long_wait() {
    assert_eq!(client_sleeps(Some(Duration::from_secs(60))), 0);
}

#[test]
fn a_client_sleeps_through_a_long_wait_unless_busy_polling() {
    assert!(client_sleeps(None) >= 1);
    assert!(client_sleeps(Some(Duration::ZERO)) >= 1);
}

/// How often a server worker slept while waiting `LONG_WAIT` for a request.
fn server_sleeps(limit: Option<Duration>) -> u64 {
    let (server, client) = channel::<u32, u32, ()>();
    if let Some(limit) = limit {
        server.set_busy_poll(limit);
    }
    let ready = std::sync::Arc::new(Barrier::new(2));
    let at_work = ready.clone();
    let served = std::thread::spawn(move || {
        at_work.wait();
        let before = sleeps_of_this_thread();
        let (x, ctx) = server.wait().unwrap();
        let slept = sleeps_of_this_thread() - before;
        ctx.reply(x + 1).unwrap();
        slept
    });
    ready.wait();
    std::thread::sleep(LONG_WAIT);
    assert_eq!(client.req_timeout(1, DEADLINE), Ok(2));
    served.join().unwrap()
}

#[test]
fn a_busy_polling_server_does_not_sleep_through_a_long_wait() {
    assert_eq!(server_sleeps(Some(Duration::from_secs(60))), 0);
    assert!(server_sleeps(None) >= 1);
}

#[test]
fn a_busy_poll_ends_at_the_wait_s_deadline() {
    let (server, client) = channel::<u32, u32, ()>();
    client.set_busy_poll(Duration::from_secs(60));
    let (done, wait_for_done) = mpsc::channel::<()>();
    let served = std::thread::spawn(move || {
        // Holds the request unanswered until the client has timed out.
        let (_, ctx) = server.wait().unwrap();
        wait_for_done.recv_timeout(DEADLINE).unwrap();
        drop(ctx);
    });
    let start = Instant::now();
    assert_eq!(client.req_timeout(1, LONG_WAIT), Err(Error::Timeout));
    // The spin stopped at the call's deadline, not at the busy-poll limit.
    assert!(start.elapsed() < DEADLINE, "waited {:?}", start.elapsed());
    done.send(()).unwrap();
    served.join().unwrap();
}

/// This thread's CPU time so far (`/proc/thread-self/schedstat`, its first field).
fn cpu_of_this_thread() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    let ns = stat.split_whitespace().next().unwrap().parse().unwrap();
    Duration::from_nanos(ns)
}

/// A busy-polling client spins up to its limit in every wait, long calls included: the pacing
/// of long calls (after two calls that slept long, a client sleeps through most of the next
/// one, or sleeps at once where that does not pay) leaves it alone.
#[test]
fn a_busy_polling_client_spins_its_limit_in_long_calls_too() {
    const LIMIT: Duration = Duration::from_millis(20);
    let (server, client) = channel::<u32, u32, ()>();
    client.set_busy_poll(LIMIT);
    let served = std::thread::spawn(move || {
        while let Ok((x, ctx)) = server.wait() {
            // Each call outlasts the limit, so each wait ends in a sleep, a long one.
            std::thread::sleep(LONG_WAIT);
            ctx.reply(x + 1).unwrap();
        }
    });
    let spun = std::thread::spawn(move || {
        for x in 0..3 {
            assert_eq!(client.req(x), Ok(x + 1));
        }
        let before = cpu_of_this_thread();
        assert_eq!(client.req(3), Ok(4));
        cpu_of_this_thread() - before
    })
    .join()
    .unwrap();
    served.join().unwrap();
    assert!(
        spun >= LIMIT / 2,
        "the fourth call's wait took {spun:?} of CPU: it did not spin its {LIMIT:?}"
    );
}
