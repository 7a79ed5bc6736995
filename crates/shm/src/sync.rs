//! The atomics of courier::shm, from one place (house rule). Shared memory is touched by
//! another process, which loom cannot model, so these are always the real atomics.

pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
