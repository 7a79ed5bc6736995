//! A loom model of the cold-connection handshake ("Waking" in the `rpc` module docs,
//! [`Core::cool_idle`](super::Core)): the orders and fences that the client's
//! `queue_call`, the accept thread's round (`cool_idle`, then `end_long_sleeps`) and a
//! worker's way to sleep (`read_bells`, `set_sleeping`, its fence, `has_work`) use, on loom's
//! atomics and locks (the server's own run on std's and on words another process writes, which
//! loom cannot drive). It checks that a call queued while its connection goes cold always
//! reaches a worker: the worker's last look sees it, or the client rang a word the worker
//! sleeps on (its doorbell, watched only while warm), or it rang the wake-up socket (a cold
//! connection: its watcher then rings the server's word), or the round changed the server's
//! word the worker read. Not modelled: `warm`, the watcher's own path (a ring of the
//! wake-up socket counts as woken), a client's death, the async reactor; and loom orders
//! SeqCst fences more strongly than C++20 does, so the fence pairs are checked in spirit
//! (the argument in `Core::cool_idle` holds by the C++20 rules).

use crate::sync::model::{fence, Arc, AtomicBool, AtomicU32, Mutex};
use crate::sync::Ordering;

const COLD: u32 = u32::MAX;

struct World {
    /// The client's entry in the request ring.
    queued: AtomicBool,
    /// The connection's `srv_sleep`.
    srv_sleep: AtomicU32,
    /// The connection's doorbell.
    doorbell: AtomicU32,
    /// The client rang the wake-up socket.
    kicked: AtomicBool,
    /// The server's word.
    ring: AtomicU32,
    /// `Core::cold_look`.
    cold_look: AtomicBool,
    /// `Core::sleeping`.
    sleeping: Mutex<u32>,
    /// The connection is cold (its place in `Core::conns`, under that lock).
    cold: Mutex<bool>,
}

impl World {
    /// A connection with a call `queued` or not, `srv_sleep` and `cold` as given, and
    /// `cold_look` asked for or not.
    fn new(queued: bool, srv_sleep: u32, cold: bool, cold_look: bool) -> Arc<World> {
        Arc::new(World {
            queued: AtomicBool::new(queued),
            srv_sleep: AtomicU32::new(srv_sleep),
            doorbell: AtomicU32::new(0),
            kicked: AtomicBool::new(false),
            ring: AtomicU32::new(0),
            cold_look: AtomicBool::new(cold_look),
            sleeping: Mutex::new(0),
            cold: Mutex::new(cold),
        })
    }
}

/// The client, on a thread: queue, fence, read `srv_sleep`, ring as it says.
fn client(w: &Arc<World>) -> loom::thread::JoinHandle<()> {
    let w = Arc::clone(w);
    loom::thread::spawn(move || {
        w.queued.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        match w.srv_sleep.load(Ordering::SeqCst) {
            0 => {}
            COLD => w.kicked.store(true, Ordering::SeqCst),
            _ => {
                w.doorbell.fetch_add(1, Ordering::Release);
            }
        }
    })
}

/// The round lets the connection go cold (`Core::cool_idle`).
fn go_cold(w: &World) {
    let _n = w.sleeping.lock().unwrap();
    let mut cold = w.cold.lock().unwrap();
    w.srv_sleep.store(COLD, Ordering::SeqCst);
    *cold = true;
}

#[test]
fn loom_a_call_queued_as_its_connection_goes_cold_reaches_a_worker() {
    loom::model(|| {
        let w = World::new(false, 0, false, false);
        let client = client(&w);
        // The accept thread's round: the idle connection goes cold, the next look covers the
        // cold ones, and the sleepers are woken.
        let round = {
            let w = Arc::clone(&w);
            loom::thread::spawn(move || {
                go_cold(&w);
                w.cold_look.store(true, Ordering::Release);
                if *w.sleeping.lock().unwrap() > 0 {
                    w.ring.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        // A worker on its way to sleep.
        let ring = w.ring.load(Ordering::SeqCst);
        let watched = {
            let cold = w.cold.lock().unwrap();
            (!*cold).then(|| w.doorbell.load(Ordering::Acquire))
        };
        {
            let mut n = w.sleeping.lock().unwrap();
            *n += 1;
            if !*w.cold.lock().unwrap() {
                w.srv_sleep.store(*n, Ordering::SeqCst);
            }
        }
        fence(Ordering::SeqCst);
        // `has_work`: every connection if `cold_look` says so (after a fence, as the look
        // that follows takes it), else the warm ones, as the list says now.
        let seen = if w.cold_look.load(Ordering::Acquire) {
            fence(Ordering::SeqCst);
            w.queued.load(Ordering::Relaxed)
        } else {
            !*w.cold.lock().unwrap() && w.queued.load(Ordering::Relaxed)
        };
        client.join().unwrap();
        round.join().unwrap();
        let woken = ring != w.ring.load(Ordering::SeqCst)
            || watched.is_some_and(|v| v != w.doorbell.load(Ordering::Relaxed))
            || w.kicked.load(Ordering::SeqCst);
        assert!(seen || woken, "a call queued with nobody to take it");
    });
}

/// A worker that does not sleep (it spins, or serves others) meets the same round: the
/// client found no sleeper and did not ring, its connection went cold, and the one look
/// that covers the cold connections (`take_cold_look`, Acquire then a SeqCst fence) must see
/// the call, since nothing else will: the looks leave the connection out from then on.
#[test]
fn loom_the_look_at_cold_connections_sees_a_call_queued_before_they_went_cold() {
    loom::model(|| {
        let w = World::new(false, 0, false, false);
        let client = client(&w);
        go_cold(&w);
        w.cold_look.store(true, Ordering::Release);
        // The awake worker, on another thread, takes the flag and looks.
        let worker = {
            let w = Arc::clone(&w);
            loom::thread::spawn(move || {
                while !w.cold_look.swap(false, Ordering::Acquire) {
                    loom::thread::yield_now();
                }
                fence(Ordering::SeqCst);
                w.queued.load(Ordering::Relaxed)
            })
        };
        let seen = worker.join().unwrap();
        client.join().unwrap();
        assert!(
            seen || w.kicked.load(Ordering::SeqCst),
            "a call queued before its connection went cold, missed by the look at cold ones"
        );
    });
}

/// Two workers and one request for a look at the cold connections (`cold_look`, set by a
/// round for a call queued unrung just before its connection went cold): an awake worker
/// takes it, and its look stops at another call before it reaches ours (`poll_once`'s early
/// return), so it asks again (`Core::ring_one`: the flag, then a bump of the server's
/// word); the other worker is on its way to sleep, and may have read the flag while it was
/// taken. It must look at our call or be woken: by the bump, since it read the server's word
/// before its look.
#[test]
fn loom_a_look_at_cold_connections_cut_short_is_asked_for_again() {
    loom::model(|| {
        let w = World::new(true, COLD, true, true);
        let awake = {
            let w = Arc::clone(&w);
            loom::thread::spawn(move || {
                if w.cold_look.swap(false, Ordering::Acquire) {
                    fence(Ordering::SeqCst);
                    // Another call first: ours is not looked at. Asked for again.
                    w.cold_look.store(true, Ordering::Release);
                    w.ring.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let ring = w.ring.load(Ordering::SeqCst);
        {
            let mut n = w.sleeping.lock().unwrap();
            *n += 1;
        }
        fence(Ordering::SeqCst);
        let seen = w.cold_look.load(Ordering::Acquire) && {
            fence(Ordering::SeqCst);
            w.queued.load(Ordering::Relaxed)
        };
        awake.join().unwrap();
        let woken = ring != w.ring.load(Ordering::SeqCst);
        assert!(
            seen || woken,
            "a look cut short, asked for again, reached nobody"
        );
    });
}
