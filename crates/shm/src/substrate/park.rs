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
    attempt: impl FnMut() -> Result<Option<T>, E>,
    mut ready: impl FnMut() -> Result<bool, E>,
) -> Result<T, Gave<E>> {
    wait_with(SPINS, live, deadline, attempt, |timeout| {
        sleep(word, live, timeout, || Ok(ready()?.then_some(()))).map(drop)
    })
}

/// One sleep on a word the sleeper may not overwrite with [`SLEEPING`], because it carries
/// more than the announcement (an RPC slot's state, which both processes change; the client
/// bell, a counter the peer bumps): `announce` marks the sleep in its own way and looks once
/// more, returning the value to sleep on while the word still holds it (`Ok(Some(v))`), or
/// `Ok(None)` if the word already moved or there is something to take (no sleep).
///
/// ```text
/// sleeper                                     waker (the other side)
/// sleepers += 1   (SeqCst, see watch.rs)      publish the change
/// announce: v = mark the sleep in the word    SeqCst RMW or fence, then a look at the mark
///           (a SeqCst CAS or store + fence),    (the slot's WAITER bit seen by its DONE CAS,
///           look again -> None: no sleep        the bell's waiter flag), then futex_wake
/// dead? -> no sleep
/// futex_wait(word, v, timeout)
/// sleepers -= 1; look again
/// ```
///
/// As for [`sleep`], the announcement and the waker's change are a Dekker pair: the
/// announcement's look sees the change, or the waker sees the mark and wakes the word; and a
/// change of the word between the announcement and `futex_wait` makes it return at once,
/// since the word no longer holds `v`. The mark is the caller's protocol; its loom model is
/// below (`an_announced_sleep_is_always_woken`).
pub(crate) fn sleep_announced<W: Futex, E>(
    word: &W,
    live: &impl Liveness,
    timeout: Option<Duration>,
    announce: impl FnOnce() -> Result<Option<u32>, E>,
) -> Result<(), E> {
    live.counted(|| {
        if let Some(v) = announce()? {
            if !live.is_dead() {
                word.wait(v, timeout);
            }
        }
        Ok(())
    })
}

/// [`wait`] on a word whose sleep is announced by the caller ([`sleep_announced`]), after
/// `spins` looks (the RPC caller spins longer than the channel, a subscription reader not at
/// all).
pub(crate) fn wait_announced<W: Futex, T, E>(
    word: &W,
    live: &impl Liveness,
    spins: u32,
    deadline: Deadline,
    attempt: impl FnMut() -> Result<Option<T>, E>,
    mut announce: impl FnMut() -> Result<Option<u32>, E>,
) -> Result<T, Gave<E>> {
    wait_with(spins, live, deadline, attempt, |timeout| {
        sleep_announced(word, live, timeout, &mut announce)
    })
}

/// The loop of every wait: `spins` attempts, then attempt, the peer's death, the deadline and
/// one sleep (`sleep_once`, given how long it may last), until `attempt` gives a value.
fn wait_with<T, E>(
    spins: u32,
    live: &impl Liveness,
    deadline: Deadline,
    mut attempt: impl FnMut() -> Result<Option<T>, E>,
    mut sleep_once: impl FnMut(Option<Duration>) -> Result<(), E>,
) -> Result<T, Gave<E>> {
    for _ in 0..spins {
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
        sleep_once(timeout).map_err(Gave::Err)?;
    }
}

#[cfg(all(test, loom))]
pub(crate) mod loom_models {
    //! Every interleaving of a sleeper that waits for a change and a waker that makes it: the
    //! sleeper is never left asleep with the change made (a missed wake-up leaves its thread
    //! blocked on the condition variable forever, which loom reports as a deadlock).
    use super::*;
    use crate::sync::Word32;
    use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
    use loom::sync::{Arc, Condvar, Mutex};

    /// A futex for the model: the value check and the sleep are atomic against a wake, as in
    /// the kernel (the futex's hash-bucket lock is this mutex).
    pub(crate) struct ModelFutex {
        pub(crate) word: AtomicU32,
        lock: Mutex<()>,
        cv: Condvar,
    }

    impl ModelFutex {
        pub(crate) fn new(v: u32) -> ModelFutex {
            ModelFutex {
                word: AtomicU32::new(v),
                lock: Mutex::new(()),
                cv: Condvar::new(),
            }
        }
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
    pub(crate) struct Alive {
        sleepers: AtomicU32,
        dead: AtomicBool,
    }

    impl Alive {
        pub(crate) fn new() -> Alive {
            Alive {
                sleepers: AtomicU32::new(0),
                dead: AtomicBool::new(false),
            }
        }

        pub(crate) fn sleepers(&self) -> u32 {
            self.sleepers.load(Ordering::SeqCst)
        }
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

    /// The announced shape ([`sleep_announced`]) on a counter bell, as the client's
    /// subscription reader uses it: the sleeper sets a waiter flag, fences, reads the bell,
    /// looks for the change, and sleeps while the bell holds what it read; the waker publishes
    /// the change, fences, and bumps and wakes the bell if the flag is set (the server's
    /// `ring_client`). The sleeper is never left asleep with the change made.
    #[test]
    fn an_announced_sleep_on_a_bell_is_always_woken() {
        struct Bell {
            bell: ModelFutex,
            waiting: AtomicU32,
            change: AtomicU64,
            live: Alive,
        }
        loom::model(|| {
            let p = Arc::new(Bell {
                bell: ModelFutex::new(0),
                waiting: AtomicU32::new(0),
                change: AtomicU64::new(0),
                live: Alive::new(),
            });
            let w = Arc::clone(&p);
            let waker = loom::thread::spawn(move || {
                w.change.store(1, Ordering::Release);
                loom::sync::atomic::fence(Ordering::SeqCst);
                if w.waiting.load(Ordering::SeqCst) != 0 {
                    w.bell.word.fetch_add(1, Ordering::SeqCst);
                    w.bell.wake();
                }
            });
            let attempt = || Ok::<_, ()>((p.change.load(Ordering::Acquire) == 1).then_some(()));
            let announce = || {
                p.waiting.store(1, Ordering::SeqCst);
                loom::sync::atomic::fence(Ordering::SeqCst);
                let seen = p.bell.word.load(Ordering::SeqCst);
                Ok((p.change.load(Ordering::Acquire) != 1).then_some(seen))
            };
            let got = wait_announced(&p.bell, &p.live, 0, Deadline::NEVER, attempt, announce);
            assert_eq!(got, Ok(()));
            waker.join().unwrap();
            assert_eq!(p.live.sleepers(), 0);
        });
    }
}
