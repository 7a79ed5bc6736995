//! [`Pool`]: what a call slot gives back when its call ends — itself, to the channel's free
//! slots, and for a withdrawn request the room it held in a bounded queue.
//!
//! A slot holds an `Arc` of its pool (not of the whole channel), so the pool outlives every
//! slot that can return to it, and the slot module needs nothing of the channel's. The slot
//! takes the `Arc` on its first call and keeps it while it waits in the pool: a call in
//! steady state touches no reference count, which every client of the channel would
//! otherwise write twice per call (the same line for all of them).
//!
//! Free slots holding their pool is a cycle, which the channel breaks when its last handle
//! goes ([`Pool::close`]): every free entry is swapped for `CLOSED`, and the slots found are
//! freed. A slot whose call ends later finds no free entry (`recycle` only fills null ones)
//! and is freed by its releaser. One atomic per entry decides each race: a slot put into an
//! entry before the close is taken by it, one put after finds `CLOSED`.

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

/// What a free entry holds once the pool is closed: never a slot's address (slots are aligned
/// to 64 bytes), and never replaced (`recycle` fills only null entries, and `alloc`, which
/// empties entries, is not called once the pool is closed).
fn closed<T>() -> *mut T {
    ptr::without_provenance_mut(1)
}

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

    /// Takes a free slot from the pool, or allocates one. Not called once the pool is closed
    /// (no client is left).
    pub(crate) fn alloc(&self) -> *mut Slot<Rq, Rp, E> {
        for entry in &self.free {
            if !entry.load(Ordering::Relaxed).is_null() {
                // Acquire: pairs with the Release in `recycle`, so the previous user's accesses
                // happen-before ours.
                let p = entry.swap(ptr::null_mut(), Ordering::Acquire);
                debug_assert!(p != closed(), "alloc from a closed pool");
                if !p.is_null() {
                    return p;
                }
            }
        }
        Box::into_raw(Slot::new_boxed())
    }

    /// Puts a released slot back into the pool. Hands it back when the pool is full or
    /// closed: the caller frees it then, after its last use of the pool (freeing the slot may
    /// drop the pool's last `Arc`).
    ///
    /// A raw pointer, not `&self`: once the slot is in a free entry, a concurrent
    /// [`close`](Pool::close) may free it and drop the pool's last `Arc` before this call
    /// returns, and a reference argument must stay valid for the whole call.
    ///
    /// # Safety
    ///
    /// `pool` points at a live pool (the slot's `Arc` keeps it so until the slot is pooled).
    #[must_use = "a slot handed back is the caller's to free"]
    pub(crate) unsafe fn recycle(
        pool: *const Self,
        slot: *mut Slot<Rq, Rp, E>,
    ) -> Option<*mut Slot<Rq, Rp, E>> {
        // SAFETY: the pool is live until the CAS that pools the slot, our last access.
        let free = unsafe { &(*pool).free };
        for entry in free {
            // Release: pairs with the Acquire in `alloc` and `close`. Only a null entry takes
            // the slot, so none does once the pool is closed.
            if entry
                .compare_exchange(ptr::null_mut(), slot, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return None;
            }
        }
        Some(slot)
    }

    /// Breaks the cycle of free slots holding their pool: frees the free slots, and makes
    /// every slot released from now on be freed by its releaser. Called when the channel's
    /// last handle goes, by the channel, which holds an `Arc` of the pool meanwhile.
    pub(crate) fn close(&self) {
        for entry in &self.free {
            // Acquire: pairs with the Release in `recycle`, so the slot's last user's
            // accesses happen-before we free it.
            let p = entry.swap(closed(), Ordering::Acquire);
            if !p.is_null() && p != closed() {
                // SAFETY: pooled slots come from `Box::into_raw` and have no user; the `Arc`
                // of the pool it drops is not the last (the caller holds one).
                drop(unsafe { Box::from_raw(p) });
            }
        }
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
        // A slot that has had a call holds an `Arc` of us, in use or free, so none is left;
        // `close` ran when the channel went.
        for entry in &self.free {
            debug_assert!(entry.load(Ordering::Relaxed) == closed());
        }
    }
}
