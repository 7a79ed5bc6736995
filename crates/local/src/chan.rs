//! The state one channel's handles share: the request queue, the slot pool, the handle counts
//! and the two wait lists.
//!
//! # Who may pop
//!
//! The queue has one consumer at a time. A server worker becomes the consumer by setting
//! `consumer`, an atomic flag, for one pop. A worker on its way to sleep that finds it set
//! waits for the holder to let go and looks itself ([`Shared::take_settled`]): had it slept,
//! a push that landed while the holder held the queue (after the holder's last look, before
//! the sleeper registered) would have had nobody awake to take it, since the holder may
//! never look again (`try_pop`). Only `try_pop`, which sleeps on nothing, may give up on a
//! held queue. When the last `Server` goes, whoever drains the queue takes the same role.
//!
//! # Shutdown
//!
//! ```text
//!   client: push slot (SeqCst CAS); load servers (SeqCst)      last server: servers = 0; fence(SeqCst); drain
//! ```
//!
//! **A request pushed after the last server left is failed by somebody**: either the drain
//! sees the slot, or the pushing client sees `servers == 0` and drains itself. (If the load
//! missed the decrement, it precedes the server's fence in the single SeqCst order, and so
//! does the push before it: the drain, after the fence, finds it.)
//!
//! # The lane
//!
//! A blocking [`Client::req`](crate::Client::req) on an unbounded channel, when no other
//! call holds it, skips the queue: it takes the lane (`lane_busy`, a flag on a line only
//! clients write), writes its request into the channel's one lane slot and posts it with a
//! SeqCst swap of the slot's state ([`Slot::post`]). The consumer reads that state at every
//! look and takes the request when the queue is empty ([`Slot::take_posted`]), so the
//! request, its state and later the reply cross between the two cores in the one line of the
//! slot, as in the two-thread spin floor, where a queued call also moves the queue's head
//! there and back (a compare-and-swap by the client, a swap by the consumer). The requester
//! reads the result and lets go of the lane; the slot stays with the channel.
//!
//! ```text
//!   client                                   consumer (holding the consumer role)
//!   lane_busy: swap true (false before)      posted = state POSTED, not TAKEN (SeqCst)
//!   write request; swap state, POSTED        pop the queue: a request? take it (lane waits)
//!   notify a sleeping worker;                empty and posted? fetch_or TAKEN, take the lane's
//!   servers == 0? then drain                 ... reply: write result, fetch_or DONE
//!   wait for DONE; read the result; lane_busy = false (Release)
//! ```
//!
//! **Order**: a client's earlier pushes (one-way messages, `req_async`) happen-before its
//! post. The consumer reads the lane's state *before* it pops the queue, and takes the lane
//! only when that pop finds the queue empty: the pop, after the read that saw the post, sees
//! every push that happened-before it. So a client's calls are taken in the order it made
//! them (popping first and reading the state after could see the post but not the push
//! before it; the loom model `loom_queued_message_goes_before_a_later_lane_call` finds that
//! order). A lane call is never withdrawn (only `req` posts, and it waits until the end);
//! the shutdown pairing below and the wait lists' handshake hold for a post as for a push,
//! and the drain fails a posted request like a queued one.
//!
//! # Orderings of the looks
//!
//! What a waiting worker or client looks at after it registered in a wait list (the queue's
//! ends, `clients`, `servers`, a bounded queue's `len`) is read with SeqCst: that is the
//! waiter's half of the handshake in `event`'s module docs. (The consumer's own read of
//! `taken` in `pop` may be relaxed: only the role's holder writes it, and taking the role is
//! an Acquire of the last holder's release.)
//!
//! Under loom the pushing client's look for a waiter starts with a fence
//! (`sync::fence_for_loom`), which also stands in for the SeqCst order the shutdown pairing
//! above relies on.

use crate::event::Event;
use crate::queue::{Pop, Queue};
use crate::slot::{Pool, Slot, SlotCore, Taken};
use crate::sync::{
    spin_loop, yield_now, Arc, AtomicBool, AtomicUsize, CachePadded, Mutex, Ordering, Side, Waits,
};
use courier_core::error::{Error, SendError};
use std::time::{Duration, Instant};

/// How long a push may wait for room in a bounded queue.
#[derive(Clone, Copy)]
pub(crate) enum Wait {
    /// Do not wait.
    No,
    /// Wait as long as it takes.
    Forever,
    /// Wait until the deadline.
    Until(Instant),
}

impl Wait {
    /// Wait for `timeout`: [`Wait::Forever`] where the deadline is past what an [`Instant`]
    /// can hold (`Duration::MAX` means no limit, never a panic).
    pub(crate) fn at_most(timeout: Duration) -> Self {
        deadline_after(timeout).map_or(Wait::Forever, Wait::Until)
    }
}

/// The instant `timeout` from now, or `None` (no deadline) where it cannot be represented.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// What one attempt to take a request found.
pub(crate) enum TryTake<Rq, Rp, E> {
    Request(Rq, Option<*mut SlotCore<Rp, E>>),
    Empty,
    /// Another worker is popping: look again soon.
    Busy,
    /// Empty, and no client is left to fill it.
    Closed,
}

/// Laid out by who writes what: the queue's two ends, the consumer role (written at every
/// look a worker takes), the lane's flag (written by clients) and the workers' wait list
/// each have their own cache lines; the handle counts and the pool pointer, read at every
/// call and written rarely, share one.
pub(crate) struct Shared<Rq, Rp, E> {
    queue: Queue<Slot<Rq, Rp, E>>,
    /// The lane slot (see "The lane" in the module docs): from `Box::into_raw`, freed with
    /// the channel.
    lane: *mut Slot<Rq, Rp, E>,
    /// A call holds the lane.
    lane_busy: CachePadded<AtomicBool>,
    /// The consumer role (see the module docs).
    consumer: CachePadded<AtomicBool>,
    pub(crate) clients: AtomicUsize,
    pub(crate) servers: AtomicUsize,
    /// Server workers waiting for a request.
    pub(crate) requests: CachePadded<Event>,
    /// Serialises drains (see [`Shared::drain`]).
    drain_lock: Mutex<()>,
    /// The free slots, and the bounded queue's room (`cap`, `len`, the `room` wait list):
    /// what a slot gives back when its call ends, so slots hold it rather than the channel.
    pool: Arc<Pool<Rq, Rp, E>>,
}

// SAFETY: the raw slot pointers inside (the queue's, the lane's) are owned by the channel and
// carry requests, replies and errors across threads; that is sound when those types are
// `Send`. All shared mutation goes through atomics and the slot protocol.
unsafe impl<Rq: Send, Rp: Send, E: Send> Send for Shared<Rq, Rp, E> {}
// SAFETY: as above; `&Shared` only gives access through atomics, the consumer role and the
// slot protocol, each of which hands a value to exactly one thread.
unsafe impl<Rq: Send, Rp: Send, E: Send> Sync for Shared<Rq, Rp, E> {}

impl<Rq, Rp, E> Drop for Shared<Rq, Rp, E> {
    fn drop(&mut self) {
        // The free slots hold the pool; slots still in use are freed when their calls end.
        self.pool.close();
        // SAFETY: every handle is gone, so no lane call is in flight (a lane call's client
        // holds the channel until it has read the result, and the server side touches the
        // slot no more after it wrote it); the slot came from `Box::into_raw` and holds no
        // request or reply now (both are moved out of it by then).
        drop(unsafe { Box::from_raw(self.lane) });
    }
}

impl<Rq, Rp, E> Shared<Rq, Rp, E> {
    pub(crate) fn new(cap: Option<usize>) -> Self {
        Self {
            queue: Queue::new(),
            lane: Box::into_raw(Slot::new_boxed()),
            lane_busy: CachePadded(AtomicBool::new(false)),
            consumer: CachePadded(AtomicBool::new(false)),
            clients: AtomicUsize::new(1),
            servers: AtomicUsize::new(1),
            requests: CachePadded(Event::new()),
            drain_lock: Mutex::new(()),
            pool: Arc::new(Pool::new(cap)),
        }
    }

    /// How the two sides wait (see `Backoff`).
    pub(crate) fn waits(&self) -> &Waits {
        &self.pool.waits
    }

    fn bounded(&self) -> bool {
        self.pool.bounded()
    }

    /// Reserves room for one request in a bounded queue.
    fn reserve(&self, wait: Wait) -> Result<(), Reserve> {
        let try_reserve = || -> Option<Result<(), Reserve>> {
            // SeqCst: a look after registering (see the module docs).
            if self.servers.load(Ordering::SeqCst) == 0 {
                return Some(Err(Reserve::Closed));
            }
            let pool = &self.pool;
            let mut n = pool.len.load(Ordering::SeqCst);
            while n < pool.cap {
                match pool
                    .len
                    .compare_exchange_weak(n, n + 1, Ordering::Relaxed, Ordering::SeqCst)
                {
                    Ok(_) => return Some(Ok(())),
                    Err(actual) => n = actual,
                }
            }
            None
        };
        if let Some(r) = try_reserve() {
            return r;
        }
        let deadline = match wait {
            Wait::No => return Err(Reserve::Full),
            Wait::Forever => None,
            Wait::Until(d) => Some(d),
        };
        self.pool
            .room
            .wait_until(deadline, Side::Other, try_reserve)
            .unwrap_or(Err(Reserve::Timeout))
    }

    /// The async form of [`Shared::reserve`] with [`Wait::Forever`]; `listener` keeps this
    /// task's registration between polls.
    pub(crate) fn poll_reserve(
        &self,
        cx: &mut std::task::Context<'_>,
        listener: &mut usize,
    ) -> std::task::Poll<Result<(), Reserve>> {
        use std::task::Poll;
        if !self.bounded() {
            return Poll::Ready(if self.servers.load(Ordering::Acquire) == 0 {
                Err(Reserve::Closed)
            } else {
                Ok(())
            });
        }
        let mut registered = false;
        loop {
            match self.reserve(Wait::No) {
                Err(Reserve::Full) => {}
                other => {
                    self.pool.room.unregister(*listener);
                    *listener = 0;
                    return Poll::Ready(other);
                }
            }
            if registered {
                // Registered afresh and looked once more (see `event`'s module docs): sleep.
                return Poll::Pending;
            }
            let previous = *listener;
            *listener = self
                .pool
                .room
                .register(previous, crate::event::Want::Task(cx.waker()));
            if *listener == previous {
                // Still registered from an earlier poll (not notified since): sleep.
                return Poll::Pending;
            }
            // A new registration (the first, or one after a notification that came while
            // we refreshed): look again before sleeping.
            registered = true;
        }
    }

    /// Forgets an async room registration (a dropped future that was maybe notified).
    pub(crate) fn cancel_room_wait(&self, listener: usize) {
        if listener != 0 && !self.pool.room.unregister(listener) {
            self.pool.room.notify_one();
        }
    }

    /// Puts `request` in the queue and returns its slot. For a one-way message the caller
    /// holds no share of the slot and must not touch it.
    pub(crate) fn enqueue(
        this: &Arc<Self>,
        request: Rq,
        one_way: bool,
        wait: Wait,
    ) -> Result<*mut Slot<Rq, Rp, E>, SendError<Rq>> {
        if this.bounded() {
            if let Err(e) = this.reserve(wait) {
                return Err(e.with(request));
            }
        } else if this.servers.load(Ordering::Acquire) == 0 {
            return Err(SendError::ServerDisappeared(request));
        }
        Self::enqueue_reserved(this, request, one_way)
    }

    /// Puts `request` in the queue; room is already reserved (or the queue is unbounded).
    pub(crate) fn enqueue_reserved(
        this: &Arc<Self>,
        request: Rq,
        one_way: bool,
    ) -> Result<*mut Slot<Rq, Rp, E>, SendError<Rq>> {
        let slot = this.pool.alloc();
        // SAFETY: `slot` is free and ours; after `fill` it is a valid, unlinked node that stays
        // valid until released, which only happens after it is popped.
        unsafe {
            Slot::fill(slot, request, one_way, &this.pool);
            this.queue.push(slot);
        }
        // The push was a SeqCst CAS: it is our half of the handshake with a sleeping worker
        // (see `event`) and, with this SeqCst load, with the last server's fence before its
        // drain (see the module docs).
        this.requests.notify_one_after_seq_cst();
        if this.servers.load(Ordering::SeqCst) == 0 {
            // The last server may have drained before our push landed: drain again, so that
            // our request (if no worker took it first) fails with `ServerDisappeared` like
            // every other queued one, through the normal result path.
            this.drain();
        }
        Ok(slot)
    }

    /// Posts `request` in the lane (see "The lane" in the module docs) and returns the lane
    /// slot, to wait on with [`Slot::wait_ready`] and read with [`Slot::take_lane_result`],
    /// then [`Shared::leave_lane`]. `Ok(Err(request))` when the lane is not free (another call
    /// holds it, or the channel is bounded): the caller queues the request instead.
    #[allow(clippy::type_complexity)]
    pub(crate) fn post(
        this: &Arc<Self>,
        request: Rq,
    ) -> Result<Result<*mut Slot<Rq, Rp, E>, Rq>, Error<E>> {
        // A look before the swap: a client that finds the lane busy does not take its line.
        // Acquire: pairs with the last holder's Release in `leave_lane`, so its reads of the
        // slot happen-before our writes.
        if this.bounded()
            || this.lane_busy.load(Ordering::Relaxed)
            || this.lane_busy.swap(true, Ordering::Acquire)
        {
            return Ok(Err(request));
        }
        if this.servers.load(Ordering::Acquire) == 0 {
            this.leave_lane();
            return Err(Error::ServerDisappeared);
        }
        // SAFETY: we hold the lane, and its last call is over (its holder let go after
        // reading the result).
        unsafe { Slot::post(this.lane, request, &this.pool) };
        // As after a push: the post was a SeqCst RMW (see `enqueue_reserved`).
        this.requests.notify_one_after_seq_cst();
        if this.servers.load(Ordering::SeqCst) == 0 {
            this.drain();
        }
        Ok(Ok(this.lane))
    }

    /// Lets go of the lane once its call's result is read.
    pub(crate) fn leave_lane(&self) {
        // Release: our reads of the slot happen-before the next holder's writes.
        self.lane_busy.store(false, Ordering::Release);
    }

    /// Whether neither the queue nor the lane holds a request, as far as this thread can tell
    /// (see [`Queue::looks_empty`]); writes nothing.
    fn looks_empty(&self) -> bool {
        // SAFETY: the lane slot lives as long as the channel.
        self.queue.looks_empty() && !unsafe { &*self.lane }.is_posted()
    }

    /// [`Shared::take_settled`], except that a queue that looks empty (see
    /// [`Queue::looks_empty`]) is reported after two plain loads, without taking the consumer
    /// role: for a wait that looks more often than it finds (the async server looks before
    /// and after it registers). A spinning worker takes the role at once instead, so that a
    /// push that landed costs it one transfer of the queue's line rather than two (shared,
    /// then exclusive).
    pub(crate) fn try_take_if_any(&self) -> TryTake<Rq, Rp, E> {
        // With no client left, `try_take` tells `Closed` from `Empty`. SeqCst: a look after
        // registering (see the module docs).
        if self.looks_empty() && self.clients.load(Ordering::SeqCst) != 0 {
            return TryTake::Empty;
        }
        self.take_settled()
    }

    /// [`Shared::try_take`] for a worker that may go to sleep on what it finds: never `Busy`.
    /// A queue held by another worker (one pop, a few instructions) is waited for and looked
    /// at (see "Who may pop" in the module docs); after 64 spins the CPU is yielded instead,
    /// in case the holder was preempted.
    pub(crate) fn take_settled(&self) -> TryTake<Rq, Rp, E> {
        let mut spins = 0u32;
        loop {
            match self.try_take() {
                TryTake::Busy if spins < 64 => {
                    spins += 1;
                    spin_loop();
                }
                TryTake::Busy => yield_now(),
                other => return other,
            }
        }
    }

    /// Takes one request if there is one; tells an empty queue with no client left apart.
    pub(crate) fn try_take(&self) -> TryTake<Rq, Rp, E> {
        match self.take_once() {
            TryTake::Empty => {
                // Acquire: pairs with the last client's Release decrement; every push it made
                // happens-before, so if the queue is still empty, nothing more can come.
                // SeqCst: a look after registering (see the module docs).
                if self.clients.load(Ordering::SeqCst) == 0 {
                    // Look once more: a push may have landed after our pop.
                    match self.take_once() {
                        TryTake::Empty => {
                            // Other workers may have backed off while we held the queue and
                            // gone to sleep: no push will ever wake them, so we do.
                            self.requests.notify_all();
                            TryTake::Closed
                        }
                        other => other,
                    }
                } else {
                    TryTake::Empty
                }
            }
            other => other,
        }
    }

    /// Takes one request if there is one, as the queue's consumer.
    fn take_once(&self) -> TryTake<Rq, Rp, E> {
        // Acquire: pairs with the previous consumer's Release store below. A CAS rather than
        // a swap: a failed attempt writes nothing, so it cannot get in the holder's way.
        if self
            .consumer
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return TryTake::Busy;
        }
        // The lane's state first, then the queue (see "The lane" in the module docs).
        // SAFETY: the lane slot lives with the channel.
        let posted = unsafe { &*self.lane }.is_posted();
        let found = loop {
            // SAFETY: we hold the consumer role.
            match unsafe { self.queue.pop() } {
                Pop::Node(slot) => {
                    // SAFETY: `slot` was just popped by us, the consumer.
                    match unsafe { Slot::take_request(slot) } {
                        Taken::Withdrawn => continue,
                        Taken::Request { request, one_way } => {
                            let ctx = (!one_way).then(|| Slot::core_ptr(slot));
                            break TryTake::Request(request, ctx);
                        }
                    }
                }
                // The lane only once the queue is empty, at a look after we saw the post.
                Pop::Empty if posted => {
                    // SAFETY: we hold the consumer role and saw the post after taking it.
                    let request = unsafe { Slot::take_posted(self.lane) };
                    break TryTake::Request(request, Some(Slot::core_ptr(self.lane)));
                }
                Pop::Empty => break TryTake::Empty,
            }
        };
        // While we hold the consumer role, nothing but pushes changes the queue: this look is exact
        // about what it saw.
        let more = matches!(found, TryTake::Request(..)) && !self.looks_empty();
        // Release: hands the queue's consumer end to the next consumer.
        self.consumer.store(false, Ordering::Release);
        match found {
            TryTake::Request(..) => {
                self.pool.unreserve();
                if more {
                    // Other workers may have backed off while we held the role.
                    self.requests.notify_one();
                }
                found
            }
            other => other,
        }
    }

    /// Fails every queued request with `ServerDisappeared`; used once no server is left.
    ///
    /// No worker can hold the consumer role then (a worker borrows a `Server`), so drainers
    /// only exclude each other, with `drain_lock`: shutdown is not a fast path. A push that
    /// lands after a drain's last look is not missed: that pusher checks `servers` after its
    /// push and drains again itself.
    pub(crate) fn drain(&self) {
        let _exclusive = crate::sync::lock(&self.drain_lock);
        // Acquire: pairs with the last consumer's Release, handing over the queue's tail.
        let acquired = self
            .consumer
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        debug_assert!(
            acquired,
            "a worker popped after the last server was dropped"
        );
        // SAFETY: we hold the consumer role.
        while let Pop::Node(slot) = unsafe { self.queue.pop() } {
            // SAFETY: popped by us, the consumer.
            if let Taken::Request { request, one_way } = unsafe { Slot::take_request(slot) } {
                drop(request);
                if self.bounded() {
                    self.pool.len.fetch_sub(1, Ordering::Relaxed);
                }
                if !one_way {
                    // SAFETY: we took the request, so we hold the server's share.
                    let _ = unsafe {
                        SlotCore::complete(Slot::core_ptr(slot), Err(Error::ServerDisappeared))
                    };
                }
            }
        }
        // SAFETY: the lane slot lives with the channel.
        if unsafe { &*self.lane }.is_posted() {
            // SAFETY: we hold the consumer role and just saw the post.
            drop(unsafe { Slot::take_posted(self.lane) });
            // SAFETY: we took the request, so we hold the server's share.
            let _ = unsafe {
                SlotCore::complete(Slot::core_ptr(self.lane), Err(Error::ServerDisappeared))
            };
        }
        self.consumer.store(false, Ordering::Release);
        self.pool.room.notify_all();
    }
}

/// Why [`Shared::reserve`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reserve {
    Full,
    Timeout,
    Closed,
}

impl Reserve {
    pub(crate) fn with<T>(self, value: T) -> SendError<T> {
        match self {
            Reserve::Full => SendError::Full(value),
            Reserve::Timeout => SendError::Timeout(value),
            Reserve::Closed => SendError::ServerDisappeared(value),
        }
    }
}
