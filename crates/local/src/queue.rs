//! An intrusive multi-producer, single-consumer FIFO of linked nodes: producers push onto a
//! lock-free stack, and the consumer takes the whole stack at once and reverses it into a
//! private list, which it then pops from in arrival order.
//!
//! ```text
//!   head (producers push here, newest first)       taken (the consumer's, oldest first)
//!    |                                              |
//!   [n5] --next--> [n4] --next--> null             [n1] --next--> [n2] --next--> [n3] --> null
//!
//!   pop: taken non-empty      -> unlink its first node
//!        else swap head, null -> null: empty; else reverse the chain into `taken` and
//!                                unlink its first node
//! ```
//!
//! A push is one compare-and-swap on `head` and a pop touches `head` only when `taken` is
//! empty, so a ping-pong of single requests moves the `head` line once each way and touches no
//! other shared line (no placeholder node travels between the two sides). A push is complete
//! the moment its CAS lands, so the consumer never meets a half-linked node.
//!
//! Order: every node of one swapped chain was pushed before every node pushed after the swap,
//! and the reversal puts a chain in push order, so nodes leave in the order their pushes
//! landed. ABA is harmless: a push links its node to whatever `head` holds when its CAS
//! succeeds, and nothing but the consumer's swap ever removes nodes, all at once.
//!
//! **A node returned by `pop` is no longer reachable from the queue**, and no producer writes
//! its `next` again, so it may be reused at once. Only one consumer at a time may pop; the
//! channel guarantees that with its consumer flag, which several server workers take in turn.

use crate::sync::{AtomicPtr, CachePadded, Ordering};
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
}

/// The producers' end (`head`) and the consumer's (`taken`) are on separate cache lines, so a
/// consumer working through `taken` does not take the line that producers push onto.
pub(crate) struct Queue<T: Linked> {
    /// The newest node pushed, linked to older ones; null when no push is pending.
    head: CachePadded<AtomicPtr<T>>,
    /// Nodes already taken from `head`, oldest first; only the consumer writes it (an atomic
    /// so that [`Queue::looks_empty`] may read it from any thread; the consumer's accesses are
    /// relaxed, plain moves).
    taken: CachePadded<AtomicPtr<T>>,
}

impl<T: Linked> Queue<T> {
    /// Creates an empty queue.
    pub(crate) fn new() -> Self {
        Self {
            head: CachePadded(AtomicPtr::new(ptr::null_mut())),
            taken: CachePadded(AtomicPtr::new(ptr::null_mut())),
        }
    }

    /// Appends `node`. Any thread may push.
    ///
    /// # Safety
    ///
    /// `node` is valid, is not in any queue, and stays valid until `pop` returns it.
    pub(crate) unsafe fn push(&self, node: *mut T) {
        // First guess an empty queue rather than read `head`: a read, then a CAS, would fetch
        // the line from the consumer twice (shared, then exclusive).
        let mut cur = ptr::null_mut();
        loop {
            // SAFETY: the caller guarantees `node` is valid; it is not linked yet, so nobody
            // else reads or writes its `next`.
            unsafe { (*node).next().store(cur, Ordering::Relaxed) };
            // Release: publishes the node's contents (the request) and its link to the
            // consumer's Acquire swap. Later pushes' CASes continue this release sequence, so
            // a swap that reads a newer head still synchronises with this push. SeqCst: the
            // push is the notifier's half of the wait lists' handshake (see `event`).
            match self
                .head
                .compare_exchange_weak(cur, node, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Removes the oldest node.
    ///
    /// # Safety
    ///
    /// Only one thread at a time may call `pop` (the channel's consumer flag).
    pub(crate) unsafe fn pop(&self) -> Pop<T> {
        let mut node = self.taken.load(Ordering::Relaxed);
        if node.is_null() {
            // A swap, not a read then a swap: when a push has landed, the read would fetch
            // the line shared and the swap fetch it again exclusive. An idle consumer's swaps
            // write only its own copy of the line.
            // Acquire: pairs with the pushes' Release CASes (see `push`). SeqCst: a waiter's
            // look after it registered (see `event`).
            let mut chain = self.head.swap(ptr::null_mut(), Ordering::SeqCst);
            if chain.is_null() {
                return Pop::Empty;
            }
            // Reverse the chain (newest first) into arrival order.
            let mut reversed = ptr::null_mut();
            while !chain.is_null() {
                // SAFETY: the caller holds the consumer role, so the nodes of a swapped chain
                // are ours alone; nodes stay valid while linked.
                let older = unsafe { (*chain).next() }.load(Ordering::Relaxed);
                if older != reversed {
                    // SAFETY: as above.
                    unsafe { (*chain).next() }.store(reversed, Ordering::Relaxed);
                }
                reversed = chain;
                chain = older;
            }
            node = reversed;
        }
        // SAFETY: `node` heads `taken` (or the chain just swapped), which only we, the
        // consumer, unlink from.
        let rest = unsafe { (*node).next() }.load(Ordering::Relaxed);
        self.taken.store(rest, Ordering::Relaxed);
        Pop::Node(node)
    }

    /// Whether the queue holds no node, as far as this thread can tell; any thread may ask,
    /// and it writes nothing (no locked instruction, no line taken exclusive).
    ///
    /// A push, or a node the consumer left in `taken`, is seen when it happens-before the look,
    /// or when the single order of SeqCst operations puts it first (the wait lists' handshake,
    /// see `event`); a node being popped meanwhile may be seen as there or not.
    pub(crate) fn looks_empty(&self) -> bool {
        // SeqCst: a waiter's look after it registered (see `event`); on `head` it is also the
        // Acquire that pairs with the pushes' Release CASes, for a caller that goes on to read
        // what it saw.
        self.taken.load(Ordering::SeqCst).is_null() && self.head.load(Ordering::SeqCst).is_null()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Node {
        next: AtomicPtr<Node>,
        producer: usize,
        seq: usize,
    }

    impl Linked for Node {
        fn next(&self) -> &AtomicPtr<Node> {
            &self.next
        }
    }

    fn node(producer: usize, seq: usize) -> *mut Node {
        Box::into_raw(Box::new(Node {
            next: AtomicPtr::new(ptr::null_mut()),
            producer,
            seq,
        }))
    }

    /// Pushes a fresh node.
    fn push(q: &Queue<Node>, producer: usize, seq: usize) {
        // SAFETY: a fresh node, which the test pops (and frees) before it ends.
        unsafe { q.push(node(producer, seq)) };
    }

    /// Pops one node, or `None` when empty; frees it after reading it.
    fn pop(q: &Queue<Node>) -> Option<(usize, usize)> {
        // SAFETY: the test's one thread that pops is the only consumer.
        match unsafe { q.pop() } {
            // SAFETY: a popped node came from `node` and is no longer in the queue.
            Pop::Node(n) => Some(unsafe {
                let n = Box::from_raw(n);
                (n.producer, n.seq)
            }),
            Pop::Empty => None,
        }
    }

    #[test]
    fn nodes_leave_in_the_order_they_came_across_batches() {
        let q = Queue::new();
        push(&q, 0, 1);
        push(&q, 0, 2);
        assert_eq!(pop(&q), Some((0, 1)));
        // A push while the consumer works through a taken batch goes behind it.
        push(&q, 0, 3);
        assert!(!q.looks_empty());
        assert_eq!(pop(&q), Some((0, 2)));
        assert_eq!(pop(&q), Some((0, 3)));
        assert_eq!(pop(&q), None);
        assert!(q.looks_empty());
    }

    #[test]
    fn concurrent_producers_lose_nothing_and_keep_their_own_order() {
        const PRODUCERS: usize = 3;
        const EACH: usize = 20_000;
        struct Shared(Queue<Node>);
        // SAFETY: the nodes are plain data; producers only push and the test thread alone pops.
        unsafe impl Sync for Shared {}
        // SAFETY: as above.
        unsafe impl Send for Shared {}
        let q = Arc::new(Shared(Queue::new()));
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let q = Arc::clone(&q);
                std::thread::spawn(move || {
                    for seq in 0..EACH {
                        push(&q.0, p, seq);
                    }
                })
            })
            .collect();
        let mut next = [0usize; PRODUCERS];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while next.iter().sum::<usize>() < PRODUCERS * EACH {
            assert!(std::time::Instant::now() < deadline, "stuck at {next:?}");
            match pop(&q.0) {
                Some((p, seq)) => {
                    assert_eq!(seq, next[p], "producer {p}'s nodes out of order");
                    next[p] += 1;
                }
                None => std::hint::spin_loop(),
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(pop(&q.0), None);
    }
}
