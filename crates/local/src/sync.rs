//! The one place that imports atomics, locks, interior mutability and thread parking.
//!
//! Under `cfg(loom)` everything comes from [`loom`], so the model checker sees every atomic
//! access, every `UnsafeCell` access and every park/unpark; otherwise the `std` types are used.
//! Nothing else in the crate imports `std::sync` or `std::thread` for the lock-free parts
//! (the name registry, which is an ordinary locked map, uses `std` directly).

#[cfg(loom)]
pub(crate) use loom::{
    cell::UnsafeCell,
    sync::{
        atomic::{fence, AtomicBool, AtomicPtr, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::{current, yield_now, Thread},
};

#[cfg(not(loom))]
pub(crate) use std::{
    sync::{
        atomic::{fence, AtomicBool, AtomicPtr, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::{current, yield_now, Thread},
};

use std::time::Instant;

/// Spin-loop hint; under loom it yields so that spin loops make progress in the model.
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Parks the current thread until it is unparked, or until `deadline` if there is one.
///
/// Spurious wake-ups are possible, as with [`std::thread::park`]; callers re-check their
/// condition. Under loom deadlines are not modelled: the models never use timeouts.
#[inline]
pub(crate) fn park(deadline: Option<Instant>) {
    #[cfg(loom)]
    {
        let _ = deadline;
        loom::thread::park();
    }
    #[cfg(not(loom))]
    match deadline {
        None => std::thread::park(),
        Some(d) => {
            let now = Instant::now();
            if d > now {
                std::thread::park_timeout(d - now);
            }
        }
    }
}

/// `std::cell::UnsafeCell` with loom's closure-based API, so code is written once for both.
#[cfg(not(loom))]
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    #[inline]
    pub(crate) fn new(data: T) -> Self {
        Self(std::cell::UnsafeCell::new(data))
    }

    /// Gives `f` a shared raw pointer to the contents.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Gives `f` a mutable raw pointer to the contents.
    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Locks a mutex, ignoring poisoning: every critical section in this crate leaves its data
/// consistent before anything that could panic.
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> impl std::ops::DerefMut<Target = T> + '_ {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The bounded busy phase of every blocking wait in the crate: a few short spins, then steps
/// that spin briefly and yield the CPU, then give up so the caller can park.
///
/// Yielding early matters on small machines: when the peer thread shares our core, only a
/// yield (or a sleep) lets it run, while a long pure spin would burn the very time slice the
/// answer needs. When the peer runs on another core, `yield_now` returns at once and the
/// spinning goes on. An idle waiter burns a few microseconds of CPU, then sleeps.
pub(crate) struct Backoff {
    step: u32,
}

impl Backoff {
    /// Steps that only spin, `1 << step` hints each.
    #[cfg(not(loom))]
    const SPIN_STEPS: u32 = 3;
    /// All steps; those after `SPIN_STEPS` spin `1 << SPIN_STEPS` hints, then yield.
    #[cfg(not(loom))]
    const STEPS: u32 = 16;
    // Under loom every spin is a scheduling point: keep the busy phase to one step.
    #[cfg(loom)]
    const SPIN_STEPS: u32 = 1;
    #[cfg(loom)]
    const STEPS: u32 = 1;

    pub(crate) fn new() -> Self {
        Self { step: 0 }
    }

    /// Waits a little. Returns `false` once the busy phase is over and the caller should park.
    #[inline]
    pub(crate) fn snooze(&mut self) -> bool {
        if self.step >= Self::STEPS {
            return false;
        }
        for _ in 0..(1u32 << self.step.min(Self::SPIN_STEPS)) {
            spin_loop();
        }
        if self.step >= Self::SPIN_STEPS {
            yield_now();
        }
        self.step += 1;
        true
    }
}
