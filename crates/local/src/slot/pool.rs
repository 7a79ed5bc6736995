//! [`Pool`]: what a call slot gives back when its call ends — itself, to the channel's free
//! slots, and for a withdrawn request the room it held in a bounded queue.
//!
//! A slot in use holds an `Arc` of its pool (not of the whole channel), so the pool outlives
//! every slot that can return to it, and the slot module needs nothing of the channel's.

use super::Slot;
use crate::event::Event;
use crate::sync::{AtomicPtr, AtomicUsize, Ordering, Waits};
use std::ptr;

/// Recycled slots kept per channel; more concurrent calls than this allocate (and free).
#[cfg(not(loom))]
const POOL_SIZE: usize = 16;
/// Small under loom: every pool entry is an atomic the model checker interleaves.
#[cfg(loom)]
const POOL_SIZE: usize = 2;

/// A channel's free slots and its bounded queue's room.
pub(crate) struct Pool<Rq, Rp, E> {
    free: [AtomicPtr<Slot<Rq, Rp, E>>; POOL_SIZE],
    /// Capacity of a bounded queue; `usize::MAX` when unbounded.
    pub(crate) cap: usize,
    /// Requests in the queue, counted only when bounded.
    pub(crate) len: AtomicUsize,
    /// Clients waiting for room in a bounded queue.
    pub(crate) room: Event,
    /// How the two sides wait (see `Backoff`): here because clients reach the pool from the
    /// slot they wait on.
    pub(crate) waits: Waits,
}

// SAFETY: the pool owns the free slots it holds (raw pointers from `Box::into_raw`), which
// carry no request or reply while free but are typed with them; sound when those types are
// `Send`. Every access goes through the atomics.
unsafe impl<Rq: Send, Rp: Send, E: Send> Send for Pool<Rq, Rp, E> {}
// SAFETY: as above; `&Pool` only swaps pointers in and out atomically (each free slot goes to
// exactly one taker) and counts with atomics.
unsafe impl<Rq: Send, Rp: Send, E: Send> Sync for Pool<Rq, Rp, E> {}

impl<Rq, Rp, E> Pool<Rq, Rp, E> {
    /// An empty pool for a queue of `cap` requests (`None`: unbounded).
    pub(crate) fn new(cap: Option<usize>) -> Self {
        Pool {
            free: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            cap: cap.unwrap_or(usize::MAX),
            len: AtomicUsize::new(0),
            room: Event::new(),
            waits: Waits::default(),
        }
    }

    /// Whether the queue is bounded.
    pub(crate) fn bounded(&self) -> bool {
        self.cap != usize::MAX
    }

    /// Takes a free slot from the pool, or allocates one.
    pub(crate) fn alloc(&self) -> *mut Slot<Rq, Rp, E> {
        for entry in &self.free {
            if !entry.load(Ordering::Relaxed).is_null() {
                // Acquire: pairs with the Release in `recycle`, so the previous user's accesses
                // happen-before ours.
                let p = entry.swap(ptr::null_mut(), Ordering::Acquire);
                if !p.is_null() {
                    return p;
                }
            }
        }
        Box::into_raw(Slot::new_boxed())
    }

    /// Puts a released slot back into the pool, or frees it when the pool is full.
    pub(crate) fn recycle(&self, slot: *mut Slot<Rq, Rp, E>) {
        for entry in &self.free {
            // Release: pairs with the Acquire in `alloc`.
            if entry
                .compare_exchange(ptr::null_mut(), slot, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
        // SAFETY: released slots come from `Box::into_raw` and have no other user.
        drop(unsafe { Box::from_raw(slot) });
    }

    /// Gives back room reserved in a bounded queue (after a withdrawal, or a failed push),
    /// waking a client that waits for it.
    pub(crate) fn unreserve(&self) {
        if self.bounded() {
            self.len.fetch_sub(1, Ordering::Relaxed);
            self.room.notify_one();
        }
    }
}

impl<Rq, Rp, E> Drop for Pool<Rq, Rp, E> {
    fn drop(&mut self) {
        // Every slot in use holds an `Arc` to us, so none is in use now: the pool holds every
        // remaining slot.
        for entry in &self.free {
            let p = entry.swap(ptr::null_mut(), Ordering::Acquire);
            if !p.is_null() {
                // SAFETY: pooled slots come from `Box::into_raw` and have no user.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}
