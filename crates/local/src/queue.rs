//! An intrusive multi-producer, single-consumer FIFO of linked nodes (Vyukov's design).
//!
//! Producers push with one `swap` on `head` and one store into the previous node's `next`: no
//! lock, no allocation (the nodes are the call slots themselves, recycled by the channel).
//! Exactly one consumer at a time may pop; the channel guarantees that with its consumer flag,
//! which several server workers take in turn.
//!
//! ```text
//!   tail (consumer end)                               head (producer end)
//!    |                                                  |
//!   [stub] --next--> [n1] --next--> [n2] --next--> ... [nk] --next--> null
//! ```
//!
//! A producer is briefly "between" its `swap` and its link store; a consumer that reaches that
//! gap sees [`Pop::Inconsistent`] and retries later. The producer wakes the consumer after it
//! links (the channel notifies after every push), so a consumer that goes to sleep on an
//! inconsistent queue is not stranded.
//!
//! **A node returned by `pop` is no longer reachable from the queue**: a node is only
//! returned once another node (possibly the stub) is linked behind it, so no producer will
//! ever write its `next` again and it may be reused at once.

use crate::sync::{AtomicPtr, Ordering, UnsafeCell};
use std::ptr;

/// A node that can be linked into a [`Queue`].
pub(crate) trait Linked {
    /// The link to the next node; only the queue touches it.
    fn next(&self) -> &AtomicPtr<Self>
    where
        Self: Sized;
}

/// What [`Queue::pop`] found.
pub(crate) enum Pop<T> {
    Node(*mut T),
    Empty,
    /// A producer is between its two steps; try again soon.
    Inconsistent,
}

pub(crate) struct Queue<T: Linked> {
    /// Last node pushed; producers swap themselves in here.
    head: AtomicPtr<T>,
    /// Next node to pop; only the consumer touches it.
    tail: UnsafeCell<*mut T>,
    /// The placeholder node that keeps the list non-empty; owned by the queue.
    stub: *mut T,
}

impl<T: Linked> Queue<T> {
    /// Creates an empty queue around `stub`, a node that is never returned by `pop`.
    pub(crate) fn new(stub: Box<T>) -> Self {
        let stub = Box::into_raw(stub);
        // SAFETY: `stub` comes from `Box::into_raw` just above, so it is valid and unaliased.
        unsafe { (*stub).next().store(ptr::null_mut(), Ordering::Relaxed) };
        Self {
            head: AtomicPtr::new(stub),
            tail: UnsafeCell::new(stub),
            stub,
        }
    }

    /// Appends `node`. Any thread may push.
    ///
    /// # Safety
    ///
    /// `node` is valid, is not in any queue, and stays valid until `pop` returns it.
    pub(crate) unsafe fn push(&self, node: *mut T) {
        // SAFETY: the caller guarantees `node` is valid; it is not linked yet, so nobody else
        // writes its `next`.
        unsafe { (*node).next().store(ptr::null_mut(), Ordering::Relaxed) };
        // AcqRel: Release publishes the node's contents (the request) to the consumer, which
        // reaches the node through `prev.next` (Acquire) or `head` (Acquire); Acquire orders our
        // write to `prev.next` after the previous pusher's initialisation of `prev`.
        let prev = self.head.swap(node, Ordering::AcqRel);
        // SAFETY: `prev` was the head: it is the stub or a node that `pop` cannot have returned
        // yet (it has no successor until this store), so it is still valid.
        unsafe { (*prev).next().store(node, Ordering::Release) };
    }

    /// Removes the oldest node.
    ///
    /// # Safety
    ///
    /// Only one thread at a time may call `pop` or `is_empty` (the channel's consumer flag).
    pub(crate) unsafe fn pop(&self) -> Pop<T> {
        self.tail.with_mut(|tail_ptr| {
            // SAFETY: the caller holds the consumer role, so `tail` is ours alone, and every
            // node reachable from it is valid (nodes stay valid while linked).
            unsafe {
                let mut tail = *tail_ptr;
                // Acquire: pairs with the Release store in `push` that linked the successor.
                let mut next = (*tail).next().load(Ordering::Acquire);
                if tail == self.stub {
                    if next.is_null() {
                        return if self.head.load(Ordering::Acquire) == self.stub {
                            Pop::Empty
                        } else {
                            Pop::Inconsistent
                        };
                    }
                    *tail_ptr = next;
                    tail = next;
                    next = (*tail).next().load(Ordering::Acquire);
                }
                if !next.is_null() {
                    *tail_ptr = next;
                    return Pop::Node(tail);
                }
                if tail != self.head.load(Ordering::Acquire) {
                    return Pop::Inconsistent;
                }
                // `tail` is the last node: put the stub behind it so that it can be unlinked.
                self.push(self.stub);
                next = (*tail).next().load(Ordering::Acquire);
                if !next.is_null() {
                    *tail_ptr = next;
                    return Pop::Node(tail);
                }
                Pop::Inconsistent
            }
        })
    }

    /// Whether the queue holds no node (a producer in mid-push counts as a node).
    ///
    /// # Safety
    ///
    /// As for [`Queue::pop`].
    pub(crate) unsafe fn is_empty(&self) -> bool {
        self.tail.with(|tail_ptr| {
            // SAFETY: as in `pop`, the caller holds the consumer role.
            unsafe {
                let tail = *tail_ptr;
                tail == self.stub
                    && (*tail).next().load(Ordering::Acquire).is_null()
                    && self.head.load(Ordering::Acquire) == self.stub
            }
        })
    }
}

impl<T: Linked> Drop for Queue<T> {
    fn drop(&mut self) {
        // The channel empties the queue before dropping it; only the stub is left to free.
        // SAFETY: `stub` came from `Box::into_raw` in `new` and is freed only here.
        drop(unsafe { Box::from_raw(self.stub) });
    }
}
