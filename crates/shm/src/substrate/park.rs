//! Parking a thread until the other process makes a change: spin briefly, then announce the
//! sleep on a futex word in the segment, look once more, and sleep; the other side, after each
//! change a sleeper may wait for, checks the announcement and wakes it.
//!
//! ```text
//! sleeper (owner of the word)                 waker (the other side)
//! sleepers += 1   (SeqCst, see watch.rs)      publish the change (e.g. tail = t + 1, Release)
//! word = SLEEPING (SeqCst)                    fence(SeqCst)
//! fence(SeqCst)                               word == SLEEPING ?
//! ready()? -> no sleep                          then word = AWAKE, futex_wake(word)
//! dead? -> no sleep
//! futex_wait(word, SLEEPING, timeout)
//! word = AWAKE; sleepers -= 1; look again
//! ```
//!
//! **With both fences sequentially consistent, at least one side sees the other's store: the
//! sleeper's `ready` sees the change and it does not sleep, or the waker sees SLEEPING and
//! wakes it** (and a wake that comes before the `futex_wait` makes it return at once, since the
//! word is no longer SLEEPING). So no change is left waiting for a timeout. The waker pays a
//! fence and a load per change, and a system call only when the owner really sleeps.
//!
//! The peer's death is the other way out: the watcher (`watch.rs`) sets `dead` and wakes the
//! word, again while `sleepers` is not zero; a sleeper counts itself before it reads `dead`
//! ([`Liveness::counted`]), so either the watcher sees it or it sees `dead`.
//!
//! A hostile peer may write the word (put SLEEPING back, or AWAKE early): that can cost a
//! spurious wake-up or a futile `futex_wake`, never memory safety; the watcher's repeated
//! wake-ups end a sleep the peer tries to prolong after its death.
//!
//! The functions take any [`Futex`], so that the loom model below runs this very code against
//! a futex made of a loom mutex and condition variable.

use super::deadline::{Deadline, Expired};
use crate::sync::{Futex, Ordering};
use crate::watch::WatchShared;
use std::time::Duration;

/// Nobody sleeps on the word (or the sleeper has been woken).
pub(crate) const AWAKE: u32 = 0;
/// The owner of the word announced that it sleeps: the other side must wake it.
pub(crate) const SLEEPING: u32 = 1;

/// How many times a waiter looks before it sleeps.
pub(crate) const SPINS: u32 = 512;

/// What a sleeper knows of the peer's life: the watcher's shared state (or a model's).
pub(crate) trait Liveness {
    /// Whether the peer is known to be gone.
    fn is_dead(&self) -> bool;
    /// Runs `sleep` counted as a sleeper, so the watcher wakes it until it leaves.
    fn counted<T>(&self, sleep: impl FnOnce() -> T) -> T;
}

impl Liveness for WatchShared {
    fn is_dead(&self) -> bool {
        WatchShared::is_dead(self)
    }
    fn counted<T>(&self, sleep: impl FnOnce() -> T) -> T {
        WatchShared::counted(self, sleep)
    }
}

/// One sleep on `word` (this side's futex word): announces it, then looks with `ready`, and
/// sleeps (at most `timeout`, `None`: no limit) only if `ready` found nothing (`Ok(None)`) and
/// the peer lives. Returns `ready`'s result.
pub(crate) fn sleep<W: Futex, T, E>(
    word: &W,
    live: &impl Liveness,
    timeout: Option<Duration>,
    ready: impl FnOnce() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    live.counted(|| {
        // SeqCst: with the watcher's SeqCst store of AWAKE after its store of `dead` (see
        // watch.rs): if we read `dead == false` below, this store comes first in the single
        // order, so the watcher's wake-up finds the word or the waiter queued.
        word.store(SLEEPING, Ordering::SeqCst);
        // SeqCst: the Dekker pair with the waker's fence in `wake` after its store of the
        // change: either `ready` sees that store or the waker sees SLEEPING and wakes us.
        W::fence(Ordering::SeqCst);
        let got = ready();
        if let Ok(None) = got {
            if !live.is_dead() {
                word.wait(SLEEPING, timeout);
            }
        }
        // Relaxed: only this side acts on its own AWAKE (the waker's swap decides whether
        // it calls futex_wake, which is harmless either way).
        word.store(AWAKE, Ordering::Relaxed);
        got
    })
}

/// The waker's half, just after a store the owner of `word` may be sleeping for.
pub(crate) fn wake<W: Futex>(word: &W) {
    // SeqCst: orders the store just made before the load of the word, against the sleeper's
    // store of SLEEPING before its `ready` (see the module docs). Without it both could read
    // the old values: the sleeper would sleep with the change made.
    W::fence(Ordering::SeqCst);
    // Relaxed: the fence above orders them; the swap makes one waker call futex_wake.
    if word.load(Ordering::Relaxed) != AWAKE && word.swap(AWAKE, Ordering::Relaxed) != AWAKE {
        word.wake();
    }
}

/// What stopped a [`wait`] other than the awaited value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gave<E> {
    /// `attempt` or `ready` failed.
    Err(E),
    /// The peer died (`ready` had found nothing).
    Dead,
    /// The deadline passed.
    Expired,
}

/// Waits until `attempt` gives a value: `SPINS` looks, then sleeps on `word` (this side's
/// futex word, woken by the peer after each change `ready` may see) until `deadline`.
///
/// `attempt` takes what it waits for (a message, a block); `ready` only says whether
/// `attempt` may now succeed, without taking anything (it runs after the announcement).
pub(crate) fn wait<W: Futex, T, E>(
    word: &W,
    live: &impl Liveness,
    deadline: Deadline,
    mut attempt: impl FnMut() -> Result<Option<T>, E>,
    mut ready: impl FnMut() -> Result<bool, E>,
) -> Result<T, Gave<E>> {
    for _ in 0..SPINS {
        if let Some(v) = attempt().map_err(Gave::Err)? {
            return Ok(v);
        }
        std::hint::spin_loop();
    }
    loop {
        if let Some(v) = attempt().map_err(Gave::Err)? {
            return Ok(v);
        }
        if live.is_dead() {
            return Err(Gave::Dead);
        }
        let timeout = deadline.left().map_err(|Expired| Gave::Expired)?;
        sleep(word, live, timeout, || Ok(ready()?.then_some(()))).map_err(Gave::Err)?;
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! Every interleaving of a sleeper that waits for a change and a waker that makes it: the
    //! sleeper is never left asleep with the change made (a missed wake-up leaves its thread
    //! blocked on the condition variable forever, which loom reports as a deadlock).
    use super::*;
    use crate::sync::Word32;
    use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
    use loom::sync::{Arc, Condvar, Mutex};

    /// A futex for the model: the value check and the sleep are atomic against a wake, as in
    /// the kernel (the futex's hash-bucket lock is this mutex).
    struct ModelFutex {
        word: AtomicU32,
        lock: Mutex<()>,
        cv: Condvar,
    }

    impl Word32 for ModelFutex {
        fn load(&self, order: Ordering) -> u32 {
            self.word.load(order)
        }
        fn store(&self, v: u32, order: Ordering) {
            self.word.store(v, order)
        }
        fn swap(&self, v: u32, order: Ordering) -> u32 {
            self.word.swap(v, order)
        }
    }

    impl Futex for ModelFutex {
        fn fence(order: Ordering) {
            loom::sync::atomic::fence(order)
        }
        fn wait(&self, expected: u32, _timeout: Option<Duration>) {
            let g = self.lock.lock().unwrap();
            // Relaxed: the kernel reads the word as it stands; the mutex orders it against
            // `wake`, as the bucket lock does.
            if self.word.load(Ordering::Relaxed) == expected {
                drop(self.cv.wait(g).unwrap());
            }
        }
        fn wake(&self) {
            let _g = self.lock.lock().unwrap();
            self.cv.notify_all();
        }
    }

    /// A peer that stays alive, counting sleepers as the watcher's state does.
    struct Alive {
        sleepers: AtomicU32,
        dead: AtomicBool,
    }

    impl Liveness for Alive {
        fn is_dead(&self) -> bool {
            self.dead.load(Ordering::SeqCst)
        }
        fn counted<T>(&self, sleep: impl FnOnce() -> T) -> T {
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            let r = sleep();
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            r
        }
    }

    struct Pair {
        word: ModelFutex,
        change: AtomicU64,
        live: Alive,
    }

    #[test]
    fn a_change_always_wakes_the_sleeper() {
        loom::model(|| {
            let p = Arc::new(Pair {
                word: ModelFutex {
                    word: AtomicU32::new(AWAKE),
                    lock: Mutex::new(()),
                    cv: Condvar::new(),
                },
                change: AtomicU64::new(0),
                live: Alive {
                    sleepers: AtomicU32::new(0),
                    dead: AtomicBool::new(false),
                },
            });
            let w = Arc::clone(&p);
            let waker = loom::thread::spawn(move || {
                // Release: as a ring's commit (what the sleeper then reads is visible).
                w.change.store(1, Ordering::Release);
                wake(&w.word);
            });
            // The sleeper's loop, as `wait` runs it once the spins are over (the spins only
            // add interleavings of the same loads).
            loop {
                if p.change.load(Ordering::Acquire) == 1 {
                    break;
                }
                let seen = sleep(&p.word, &p.live, None, || {
                    Ok::<_, ()>((p.change.load(Ordering::Acquire) == 1).then_some(()))
                });
                if seen == Ok(Some(())) {
                    break;
                }
            }
            waker.join().unwrap();
            assert_eq!(p.live.sleepers.load(Ordering::SeqCst), 0);
        });
    }
}
