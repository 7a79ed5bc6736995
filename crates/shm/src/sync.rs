//! The atomics of courier::shm, from one place (house rule).
//!
//! Two worlds meet here:
//!
//! - **Words in shared memory** are always std's atomics (re-exported at the top of this
//!   module, and as [`shared`]): another process writes them, which loom cannot model, and
//!   their layout must be the bare integer the peer reads. The futex system calls take them.
//! - **The substrate's algorithms** (the SPSC ring, the park/wake handshake) are written
//!   against the small traits [`Word32`], [`Word64`] and [`Futex`], implemented here for
//!   std's atomics (what the processes run) and, under `cfg(loom)`, for loom's
//!   ([`model`]). A loom model then drives *the same code* in one process with two threads,
//!   as `rpc/slot.rs` does for the call slot.
//!
//! Everything process-local that a model needs (a flag, a count) comes from [`model`]: loom's
//! under `cfg(loom)`, std's otherwise.
//!
//! The top-level names stay std's in every build, because the RPC layer uses them for words
//! in the segment; new code says which world it means (`sync::shared` or `sync::model`).

pub(crate) use std::sync::atomic::{
    fence, AtomicBool, AtomicIsize, AtomicU32, AtomicU64, AtomicU8, Ordering,
};
use std::time::Duration;

/// Words in shared memory: std's atomics in every build.
pub(crate) mod shared {
    pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
}

/// Process-local atomics and blocking: loom's under `cfg(loom)`, std's otherwise.
#[allow(unused_imports)] // Each build uses a different part (the models, or the processes).
pub(crate) mod model {
    #[cfg(loom)]
    pub(crate) use loom::sync::{
        atomic::{fence, AtomicBool, AtomicU32, AtomicU64},
        Arc, Condvar, Mutex,
    };
    #[cfg(not(loom))]
    pub(crate) use std::sync::{
        atomic::{fence, AtomicBool, AtomicU32, AtomicU64},
        Arc, Condvar, Mutex,
    };
}

/// A 64-bit word a substrate algorithm reads and writes (a ring counter, a ring entry). The
/// algorithm chooses every ordering; the implementations only forward it.
pub(crate) trait Word64 {
    fn load(&self, order: Ordering) -> u64;
    fn store(&self, v: u64, order: Ordering);
}

/// A 32-bit word a substrate algorithm reads and writes.
pub(crate) trait Word32 {
    fn load(&self, order: Ordering) -> u32;
    fn store(&self, v: u32, order: Ordering);
    fn swap(&self, v: u32, order: Ordering) -> u32;
}

/// A 32-bit word that a thread can sleep on (a futex word), and the fence of the same world.
pub(crate) trait Futex: Word32 {
    /// A fence of the world this word lives in (std's, or loom's in a model).
    fn fence(order: Ordering);
    /// Sleeps while the word is `expected`, at most `timeout` (`None`: no limit). May return
    /// early for any reason: the caller looks again.
    fn wait(&self, expected: u32, timeout: Option<Duration>);
    /// Wakes every thread sleeping on the word (in this mapping).
    fn wake(&self);
}

macro_rules! words {
    ($u64:ty, $u32:ty) => {
        impl Word64 for $u64 {
            fn load(&self, order: Ordering) -> u64 {
                <$u64>::load(self, order)
            }
            fn store(&self, v: u64, order: Ordering) {
                <$u64>::store(self, v, order)
            }
        }
        impl Word32 for $u32 {
            fn load(&self, order: Ordering) -> u32 {
                <$u32>::load(self, order)
            }
            fn store(&self, v: u32, order: Ordering) {
                <$u32>::store(self, v, order)
            }
            fn swap(&self, v: u32, order: Ordering) -> u32 {
                <$u32>::swap(self, v, order)
            }
        }
    };
}

words!(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU32);
#[cfg(loom)]
words!(loom::sync::atomic::AtomicU64, loom::sync::atomic::AtomicU32);

impl Futex for std::sync::atomic::AtomicU32 {
    fn fence(order: Ordering) {
        std::sync::atomic::fence(order)
    }
    fn wait(&self, expected: u32, timeout: Option<Duration>) {
        crate::sys::futex_wait(self, expected, timeout)
    }
    fn wake(&self) {
        crate::sys::futex_wake(self)
    }
}
