//! The transitions of a call slot's state word (see [`state`]), in one place: the client
//! queues, waits and cancels; the server takes and completes. Each transition is a
//! compare-and-swap on the one word both processes write, so every race between a caller that
//! gives up and a worker that answers has exactly one winner, and the loser learns which.
//!
//! ```text
//!   client                server                       outcome
//!   queue: QUEUED
//!   cancel QUEUED->CANCELED | take QUEUED->TAKEN        one wins: Withdrawn / taken
//!   cancel TAKEN->CANCELED  | complete TAKEN->DONE      one wins: Signaled / Delivered
//!   (either)                  take sees CANCELED: DONE  the client reclaims the slot
//!                             complete sees CANCELED: DONE
//!   wait: QUEUED|TAKEN -> |WAITER (kept by take; complete wakes the word if set)
//! ```
//!
//! Every way to DONE goes through the server's take of the slot's request-ring entry (take,
//! then completion; or take of a withdrawn slot; or, at shutdown, take then failure), and
//! the client queues a slot again only once it is DONE: so the request ring never holds more
//! entries than there are slots, which its stamped, counter-less form relies on
//! (`Consumer::take_stamped`). A way to DONE that skipped the take would let an honest
//! client overwrite an entry not yet taken, and be cut off for it.
//!
//! The functions take any [`Word`] so that the loom model below checks the very code the
//! processes run. A value outside the machine (only a hostile peer writes one) is `Broken`;
//! a peer that keeps changing the word makes a transition give up after a bounded number of
//! tries (`Broken` too).

use super::layout::state;

/// How many times a transition retries against a word that keeps changing.
const TRIES: u32 = 64;

/// The atomic operations the transitions use (`AtomicU32` of std or of loom).
pub(crate) trait Word {
    fn load_acquire(&self) -> u32;
    fn store_release(&self, v: u32);
    /// A sequentially consistent compare-and-swap (`Err` holds the current value).
    fn cas(&self, current: u32, new: u32) -> Result<u32, u32>;
}

macro_rules! word {
    ($ty:ty) => {
        impl Word for $ty {
            #[inline]
            fn load_acquire(&self) -> u32 {
                self.load(core::sync::atomic::Ordering::Acquire)
            }
            #[inline]
            fn store_release(&self, v: u32) {
                self.store(v, core::sync::atomic::Ordering::Release)
            }
            #[inline]
            fn cas(&self, current: u32, new: u32) -> Result<u32, u32> {
                // SeqCst: a completion's CAS and its load of the slot's flags are the Dekker
                // pair with an async waiter's store of the flag and its load of the state.
                self.compare_exchange(
                    current,
                    new,
                    core::sync::atomic::Ordering::SeqCst,
                    core::sync::atomic::Ordering::Acquire,
                )
            }
        }
    };
}

word!(std::sync::atomic::AtomicU32);
#[cfg(loom)]
word!(loom::sync::atomic::AtomicU32);

fn phase(s: u32) -> u32 {
    s & state::PHASE
}

/// What the server found when it took a queued slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// QUEUED -> TAKEN: the call is the server's.
    Taken,
    /// The client withdrew it first; the slot was handed back (DONE).
    Withdrawn,
    Broken,
}

/// Server: QUEUED -> TAKEN (keeping WAITER), or hands a withdrawn slot back, calling
/// `release` first (the server's own bookkeeping must say the slot is free before the client
/// can queue it again).
pub(crate) fn take(word: &impl Word, release: impl FnOnce()) -> Take {
    let mut s = word.load_acquire();
    for _ in 0..TRIES {
        match phase(s) {
            state::QUEUED => match word.cas(s, state::TAKEN | (s & state::WAITER)) {
                Ok(_) => return Take::Taken,
                Err(now) => s = now,
            },
            state::CANCELED => {
                release();
                word.store_release(state::DONE);
                return Take::Withdrawn;
            }
            _ => return Take::Broken,
        }
    }
    Take::Broken
}

/// What the server's completion found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Complete {
    /// TAKEN -> DONE: the caller gets the answer; `wake` if it sleeps on the word.
    Delivered {
        wake: bool,
    },
    /// The caller canceled first; the slot was handed back (DONE), the answer discarded.
    Canceled,
    Broken,
}

/// Whether the slot is still the server's to write (TAKEN, with or without WAITER).
pub(crate) fn is_taken(word: &impl Word) -> bool {
    phase(word.load_acquire()) == state::TAKEN
}

/// Whether the caller canceled.
pub(crate) fn is_canceled(word: &impl Word) -> bool {
    phase(word.load_acquire()) == state::CANCELED
}

/// Server, after writing the answer into the slot: TAKEN -> DONE (Release: the answer is
/// visible to a caller that sees DONE). `release` runs first, as in [`take`]: once the word
/// says DONE the client may queue the slot again at once.
pub(crate) fn complete(word: &impl Word, release: impl FnOnce()) -> Complete {
    release();
    let mut s = word.load_acquire();
    for _ in 0..TRIES {
        match phase(s) {
            state::TAKEN => match word.cas(s, state::DONE) {
                Ok(_) => {
                    return Complete::Delivered {
                        wake: s & state::WAITER != 0,
                    }
                }
                Err(now) => s = now,
            },
            state::CANCELED => {
                word.store_release(state::DONE);
                return Complete::Canceled;
            }
            _ => return Complete::Broken,
        }
    }
    Complete::Broken
}

/// What the client's cancellation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cancel {
    /// QUEUED -> CANCELED: the server will never see the request.
    Withdrawn,
    /// TAKEN -> CANCELED: the server sees `is_canceled`; its answer will be discarded.
    Signaled,
    /// Already DONE: the answer is there to read.
    Done,
    Broken,
}

/// Client: withdraws or signals, or finds the answer.
pub(crate) fn cancel(word: &impl Word) -> Cancel {
    let mut s = word.load_acquire();
    for _ in 0..TRIES {
        let outcome = match phase(s) {
            state::DONE => return Cancel::Done,
            state::QUEUED => Cancel::Withdrawn,
            state::TAKEN => Cancel::Signaled,
            _ => return Cancel::Broken,
        };
        match word.cas(s, state::CANCELED) {
            Ok(_) => return outcome,
            Err(now) => s = now,
        }
    }
    Cancel::Broken
}

/// What the client found when it tried to take back a request the server may never look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Withdraw {
    /// QUEUED -> CANCELED: the server will never see the request.
    Withdrawn,
    /// The server had taken it (or answered it already): the call goes on.
    Taken,
    Broken,
}

/// Client: QUEUED -> CANCELED only. Unlike [`cancel`], a call the server took is left alone,
/// so its answer still counts.
pub(crate) fn withdraw(word: &impl Word) -> Withdraw {
    let mut s = word.load_acquire();
    for _ in 0..TRIES {
        match phase(s) {
            state::QUEUED => match word.cas(s, state::CANCELED) {
                Ok(_) => return Withdraw::Withdrawn,
                Err(now) => s = now,
            },
            state::TAKEN | state::DONE => return Withdraw::Taken,
            _ => return Withdraw::Broken,
        }
    }
    Withdraw::Broken
}

/// Client, before it sleeps: sets WAITER on a QUEUED or TAKEN word. `Some(v)`: sleep while
/// the word is `v`; `None`: the word changed (look again) or is DONE.
pub(crate) fn announce_sleep(word: &impl Word) -> Option<u32> {
    let s = word.load_acquire();
    match phase(s) {
        state::QUEUED | state::TAKEN => {
            let sleeping = s | state::WAITER;
            (s == sleeping || word.cas(s, sleeping).is_ok()).then_some(sleeping)
        }
        _ => None,
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! Every interleaving of a caller that cancels (or sleeps) against a worker that takes and
    //! answers: exactly one side wins each race, the caller's view matches the server's, the
    //! slot always ends DONE (reclaimable), and an answer read is the one written; and a
    //! caller parked on the word (`park::wait_announced`, as `Call::wait` does) is always
    //! woken by the completion.
    use super::*;
    use crate::substrate::deadline::Deadline;
    use crate::substrate::park::loom_models::{Alive, ModelFutex};
    use crate::substrate::park::{self, Gave};
    use crate::sync::Futex;
    use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use loom::sync::Arc;

    struct Slot {
        word: AtomicU32,
        reply: AtomicU32,
        /// The server's own "taken and not completed" mark for the slot.
        in_service: AtomicBool,
    }

    fn slot() -> Arc<Slot> {
        Arc::new(Slot {
            word: AtomicU32::new(state::QUEUED),
            reply: AtomicU32::new(0),
            in_service: AtomicBool::new(true),
        })
    }

    fn server(slot: &Slot) -> (Take, Option<Complete>) {
        let release = || slot.in_service.store(false, Ordering::Release);
        let t = take(&slot.word, release);
        if t != Take::Taken {
            return (t, None);
        }
        if is_taken(&slot.word) {
            slot.reply.store(42, Ordering::Relaxed);
        }
        (t, Some(complete(&slot.word, release)))
    }

    #[test]
    fn cancel_races_take_and_complete() {
        loom::model(|| {
            let slot = slot();
            let s2 = Arc::clone(&slot);
            let worker = loom::thread::spawn(move || server(&s2));
            let c = cancel(&slot.word);
            if c == Cancel::Done {
                // Acquire on DONE: the reply written before it is visible, and the server no
                // longer counts the slot as in service (the client may queue it again now).
                assert_eq!(slot.reply.load(Ordering::Relaxed), 42);
                assert!(!slot.in_service.load(Ordering::Acquire));
            }
            let (t, done) = worker.join().unwrap();
            match c {
                Cancel::Withdrawn => assert_eq!((t, done), (Take::Withdrawn, None)),
                Cancel::Signaled => {
                    assert_eq!((t, done), (Take::Taken, Some(Complete::Canceled)))
                }
                Cancel::Done => assert_eq!(
                    (t, done),
                    (Take::Taken, Some(Complete::Delivered { wake: false }))
                ),
                Cancel::Broken => panic!("an honest pair never breaks the machine"),
            }
            // Whatever happened, the slot is the client's again.
            assert_eq!(slot.word.load(Ordering::Acquire), state::DONE);
        });
    }

    #[test]
    fn sleeper_is_told_to_wake() {
        loom::model(|| {
            let slot = slot();
            let s2 = Arc::clone(&slot);
            let worker = loom::thread::spawn(move || server(&s2));
            let slept = announce_sleep(&slot.word);
            let (t, done) = worker.join().unwrap();
            assert_eq!(t, Take::Taken);
            let Some(Complete::Delivered { wake }) = done else {
                panic!("not delivered: {done:?}")
            };
            // A caller that announced its sleep (the WAITER bit is in the word) is always
            // woken: `take` keeps the bit and `complete` reports it. (A caller whose
            // announcement failed never sleeps: it looks again.)
            if slept.is_some() {
                assert!(wake, "a sleeping caller would never be woken");
            }
            assert_eq!(slot.word.load(Ordering::Acquire), state::DONE);
            assert_eq!(slot.reply.load(Ordering::Relaxed), 42);
        });
    }

    #[test]
    fn withdraw_races_take_and_complete() {
        loom::model(|| {
            let slot = slot();
            let s2 = Arc::clone(&slot);
            let worker = loom::thread::spawn(move || server(&s2));
            let w = withdraw(&slot.word);
            let (t, done) = worker.join().unwrap();
            match w {
                // The server never saw the request; it handed the slot back.
                Withdraw::Withdrawn => assert_eq!((t, done), (Take::Withdrawn, None)),
                // A taken call is never touched: its answer is delivered, not discarded.
                Withdraw::Taken => assert_eq!(
                    (t, done),
                    (Take::Taken, Some(Complete::Delivered { wake: false }))
                ),
                Withdraw::Broken => panic!("an honest pair never breaks the machine"),
            }
            assert_eq!(slot.word.load(Ordering::Acquire), state::DONE);
        });
    }

    /// The caller's wait of `Call::wait` (announce by setting WAITER, sleep on the word)
    /// against a worker that takes the call and completes it, waking the word only if
    /// `complete` saw the bit: the caller is never left asleep on a DONE slot (loom reports
    /// a thread blocked forever on the model futex as a deadlock).
    #[test]
    fn a_parked_caller_is_always_woken() {
        loom::model(|| {
            let p = Arc::new((ModelFutex::new(state::QUEUED), Alive::new()));
            let p2 = Arc::clone(&p);
            let worker = loom::thread::spawn(move || {
                let word = &p2.0.word;
                assert_eq!(take(word, || ()), Take::Taken);
                if let Complete::Delivered { wake: true } = complete(word, || ()) {
                    p2.0.wake();
                }
            });
            let word = &p.0.word;
            let done = || Ok::<_, ()>((phase(word.load_acquire()) == state::DONE).then_some(()));
            let announce = || Ok(announce_sleep(word));
            let got: Result<(), Gave<()>> = park::wait_announced(
                &p.0,
                &p.1,
                std::time::Duration::ZERO,
                Deadline::NEVER,
                done,
                announce,
            )
            .map(|((), _spun)| ());
            assert_eq!(got, Ok(()));
            worker.join().unwrap();
            assert_eq!(p.1.sleepers(), 0);
        });
    }
}
