//! The serving side: [`Server`], [`ReplyContext`] and the receive future.

use crate::chan::{Shared, TryTake};
use crate::event::Want;
use crate::slot::SlotCore;
use crate::sync::{fence, spin_loop, Arc, Ordering, Side, Waits};
use courier_core::error::Error;
use std::fmt;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::ptr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A request and the context to answer it with.
pub type Request<Rq, Rp, E> = (Rq, ReplyContext<Rp, E>);

/// The handle that receives the requests of a channel's clients.
///
/// # Several workers
///
/// `Server` is `Clone`, `Send` and `Sync`. Every clone (or every thread sharing one handle by
/// reference or `Arc`) takes requests from the same queue, each request going to exactly one
/// worker, in FIFO order of arrival. Queued requests fail with
/// [`Error::ServerDisappeared`] only when the **last** server handle is dropped; reply
/// contexts already taken keep working after that.
///
/// # Examples
///
/// A pool of two workers:
///
/// ```
/// use courier_local::channel;
///
/// let (server, client) = channel::<u64, u64, ()>();
/// let workers: Vec<_> = (0..2)
///     .map(|_| {
///         let server = server.clone();
///         std::thread::spawn(move || {
///             while let Ok((n, ctx)) = server.wait() {
///                 ctx.reply(n * n).unwrap();
///             }
///         })
///     })
///     .collect();
/// drop(server);
/// let total: u64 = (1..=10).map(|n| client.req(n).unwrap()).sum();
/// assert_eq!(total, 385);
/// drop(client);
/// for w in workers {
///     w.join().unwrap();
/// }
/// ```
pub struct Server<Rq, Rp, E> {
    pub(crate) shared: Arc<Shared<Rq, Rp, E>>,
}

impl<Rq, Rp, E> Server<Rq, Rp, E> {
    /// Blocks until a request arrives.
    ///
    /// Spins briefly, then sleeps: an idle server thread uses no CPU.
    ///
    /// # Errors
    ///
    /// [`Error::ClientsDisappeared`] when the queue is empty and no client is left. Requests
    /// queued before the last client went are still delivered first.
    pub fn wait(&self) -> Result<Request<Rq, Rp, E>, Error<E>> {
        self.wait_deadline(None)
            .expect("a wait without deadline returns only with a result")
    }

    /// Answers `ctx` with `reply`, then waits for the next request: Xous's
    /// `reply_and_receive_next`, the loop of a server that answers as it goes. A caller that
    /// gave up meanwhile misses nothing the server could tell it, so that reply's
    /// [`Error::OriginDisappeared`] is not reported.
    ///
    /// # Errors
    ///
    /// As [`Server::wait`].
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_local::channel;
    ///
    /// let (server, client) = channel::<u32, u32, ()>();
    /// let worker = std::thread::spawn(move || {
    ///     let (mut n, mut ctx) = server.wait()?;
    ///     loop {
    ///         (n, ctx) = server.reply_and_receive_next(ctx, n * 2)?;
    ///     }
    ///     # #[allow(unreachable_code)]
    ///     Ok::<(), courier_local::Error<()>>(())
    /// });
    /// assert_eq!(client.req(2), Ok(4));
    /// assert_eq!(client.req(5), Ok(10));
    /// drop(client);
    /// assert!(worker.join().unwrap().is_err()); // ClientsDisappeared
    /// ```
    pub fn reply_and_receive_next(
        &self,
        ctx: ReplyContext<Rp, E>,
        reply: Rp,
    ) -> Result<Request<Rq, Rp, E>, Error<E>> {
        let _ = ctx.reply(reply);
        self.wait()
    }

    /// [`Server::wait`] for at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Server::wait`], plus [`Error::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_local::{channel, Error};
    /// use std::time::Duration;
    ///
    /// let (server, _client) = channel::<(), (), ()>();
    /// assert!(matches!(server.wait_timeout(Duration::from_millis(5)), Err(Error::Timeout)));
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Request<Rq, Rp, E>, Error<E>> {
        self.wait_deadline(crate::chan::deadline_after(timeout))
            .unwrap_or(Err(Error::Timeout))
    }

    fn wait_deadline(
        &self,
        deadline: Option<Instant>,
    ) -> Option<Result<Request<Rq, Rp, E>, Error<E>>> {
        self.shared
            .requests
            .wait_until(deadline, Side::Server(self.shared.waits()), || {
                into_result(self.shared.take_settled())
            })
    }

    /// Takes a request if one is queued, without blocking.
    ///
    /// # Errors
    ///
    /// [`Error::ClientsDisappeared`] when the queue is empty and no client is left.
    pub fn try_pop(&self) -> Result<Option<Request<Rq, Rp, E>>, Error<E>> {
        // `Busy` means another worker holds the queue for a few instructions: look a few more
        // times before saying "empty". Giving up leaves nothing behind: a worker that sleeps
        // looks itself once the holder lets go (see `Shared::take_settled`).
        for _ in 0..64 {
            match self.shared.try_take() {
                TryTake::Busy => spin_loop(),
                other => return into_result(other).transpose(),
            }
        }
        Ok(None)
    }

    /// Waits for a request without blocking the thread.
    ///
    /// When the queue is empty the task registers its waker and sleeps at once, in the wait
    /// list's solo cell (a few atomic operations, no lock). It does not first yield to the
    /// executor: a task that wakes itself invites a multi-thread executor to wake an idle
    /// worker, which may steal it, and moving the server between threads is what made the
    /// slowest calls slow.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a request is taken from the queue only in the poll that returns it, so
    /// dropping the future loses nothing (and passes a wake-up it received on to another
    /// waiting worker).
    ///
    /// # Errors
    ///
    /// As [`Server::wait`].
    pub fn async_wait(&self) -> RecvFuture<'_, Rq, Rp, E> {
        RecvFuture {
            shared: &self.shared,
            listener: 0,
        }
    }

    /// Makes the channel's server workers (this handle and its clones) **busy-poll** for
    /// requests: each blocking wait spins for up to `limit` (or its deadline) before it
    /// yields and sleeps, instead of the short adaptive spin. `Duration::ZERO` goes back to
    /// the adaptive spin. It applies from each worker's next wait on; async waits
    /// (`async_wait`) are not affected.
    ///
    /// For throughput and latency at the price of a core per worker, spent even while no
    /// request comes (up to `limit` per wait); see
    /// [`Client::set_busy_poll`](crate::Client::set_busy_poll), its pair.
    pub fn set_busy_poll(&self, limit: Duration) {
        Waits::set_limit(&self.shared.waits().server_poll_ns, limit);
    }
}

/// Maps one attempt to take a request to `Some(result)` when the wait is over.
fn into_result<Rq, Rp, E>(t: TryTake<Rq, Rp, E>) -> Option<Result<Request<Rq, Rp, E>, Error<E>>> {
    match t {
        TryTake::Request(request, slot) => Some(Ok((request, ReplyContext::new(slot)))),
        TryTake::Closed => Some(Err(Error::ClientsDisappeared)),
        TryTake::Empty | TryTake::Busy => None,
    }
}

impl<Rq, Rp, E> Clone for Server<Rq, Rp, E> {
    fn clone(&self) -> Self {
        // Relaxed: made from a live handle, so the count cannot reach zero concurrently.
        self.shared.servers.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Rq, Rp, E> Drop for Server<Rq, Rp, E> {
    fn drop(&mut self) {
        if self.shared.servers.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SeqCst: pairs with a client's SeqCst push and its SeqCst check of `servers`
            // after it (see `chan`'s module docs).
            fence(Ordering::SeqCst);
            self.shared.drain();
        }
    }
}

impl<Rq, Rp, E> fmt::Debug for Server<Rq, Rp, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

/// The future returned by [`Server::async_wait`].
#[must_use = "futures do nothing unless polled"]
pub struct RecvFuture<'a, Rq, Rp, E> {
    shared: &'a Shared<Rq, Rp, E>,
    /// Our registration in the `requests` event, 0 when none.
    listener: usize,
}

impl<Rq, Rp, E> Future for RecvFuture<'_, Rq, Rp, E> {
    type Output = Result<Request<Rq, Rp, E>, Error<E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut registered = false;
        loop {
            if let Some(r) = into_result(this.shared.try_take_if_any()) {
                this.shared.requests.unregister(this.listener);
                this.listener = 0;
                return Poll::Ready(r);
            }
            if registered {
                // Registered afresh and looked once more (see `event`'s module docs): sleep.
                return Poll::Pending;
            }
            let previous = this.listener;
            this.listener = this
                .shared
                .requests
                .register(previous, Want::Task(cx.waker()));
            if this.listener == previous {
                // Still registered from an earlier poll (not notified since): sleep.
                return Poll::Pending;
            }
            registered = true;
        }
    }
}

impl<Rq, Rp, E> Drop for RecvFuture<'_, Rq, Rp, E> {
    fn drop(&mut self) {
        if self.listener != 0 && !self.shared.requests.unregister(self.listener) {
            // We were woken for a request we will not take: wake another worker.
            self.shared.requests.notify_one();
        }
    }
}

impl<Rq, Rp, E> fmt::Debug for RecvFuture<'_, Rq, Rp, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvFuture").finish_non_exhaustive()
    }
}

/// The right, and the duty, to answer one request.
///
/// Answer with [`reply`](ReplyContext::reply) or [`fail`](ReplyContext::fail). A context may
/// be moved to any thread or task and answered later (a deferred response) while the server
/// goes on serving; it stays valid after every `Server` handle is gone. Dropping it unanswered
/// gives the requester [`Error::NoReply`]. A context for a one-way message
/// ([`is_one_way`](ReplyContext::is_one_way)) owes nothing.
///
/// # Examples
///
/// Deferred response from another thread:
///
/// ```
/// use courier_local::channel;
///
/// let (server, client) = channel::<u32, u32, ()>();
/// let pending = client.req_async(20).unwrap();
/// let (n, ctx) = server.wait().unwrap();
/// std::thread::spawn(move || ctx.reply(n + 1).unwrap()).join().unwrap();
/// assert_eq!(pending.wait(), Ok(21));
/// ```
pub struct ReplyContext<Rp, E> {
    /// Null for a one-way message.
    slot: *mut SlotCore<Rp, E>,
}

// SAFETY: the context owns the server's share of its slot, through which a reply or an error
// moves to the requester's thread: sound when both are `Send`.
unsafe impl<Rp: Send, E: Send> Send for ReplyContext<Rp, E> {}
// SAFETY: `&ReplyContext` only allows atomic loads (`is_canceled`, `is_one_way`).
unsafe impl<Rp: Send, E: Send> Sync for ReplyContext<Rp, E> {}

impl<Rp, E> ReplyContext<Rp, E> {
    fn new(slot: Option<*mut SlotCore<Rp, E>>) -> Self {
        Self {
            slot: slot.unwrap_or(ptr::null_mut()),
        }
    }

    /// Sends `reply` to the requester.
    ///
    /// # Errors
    ///
    /// [`Error::OriginDisappeared`] if the requester canceled or stopped waiting (the reply is
    /// dropped), or if this is a one-way message.
    pub fn reply(self, reply: Rp) -> Result<(), Error<E>> {
        self.complete(Ok(reply))
    }

    /// Answers with an application error: the requester gets [`Error::App`].
    ///
    /// # Errors
    ///
    /// As [`ReplyContext::reply`].
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_local::{channel, Error};
    ///
    /// let (server, client) = channel::<i32, u32, &str>();
    /// let pending = client.req_async(-1).unwrap();
    /// let (_, ctx) = server.wait().unwrap();
    /// ctx.fail("negative").unwrap();
    /// assert_eq!(pending.wait(), Err(Error::App("negative")));
    /// ```
    pub fn fail(self, error: E) -> Result<(), Error<E>> {
        self.complete(Err(Error::App(error)))
    }

    fn complete(self, result: Result<Rp, Error<E>>) -> Result<(), Error<E>> {
        let slot = ManuallyDrop::new(self).slot;
        if slot.is_null() {
            return Err(Error::OriginDisappeared);
        }
        // SAFETY: we own the server's share of the slot and give it up here, once.
        unsafe { SlotCore::complete(slot, result) }.map_err(|_| Error::OriginDisappeared)
    }

    /// Whether the requester canceled the call (or stopped waiting, e.g. dropped its
    /// `areq` future or timed out). A server doing long work may check this and stop early.
    /// A call the requester [detached](crate::WaitReply::detach) is not canceled.
    pub fn is_canceled(&self) -> bool {
        // SAFETY: we own the server's share of the slot, which keeps it valid.
        !self.slot.is_null() && unsafe { (*self.slot).is_canceled() }
    }

    /// Whether this request came from [`Client::send`](crate::Client::send): nobody waits for
    /// an answer, and dropping the context is the normal way to finish it.
    pub fn is_one_way(&self) -> bool {
        self.slot.is_null()
    }
}

impl<Rp, E> Drop for ReplyContext<Rp, E> {
    fn drop(&mut self) {
        if !self.slot.is_null() {
            // SAFETY: we own the server's share; `Drop` runs once.
            let _ = unsafe { SlotCore::complete(self.slot, Err(Error::NoReply)) };
        }
    }
}

impl<Rp, E> fmt::Debug for ReplyContext<Rp, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyContext")
            .field("one_way", &self.is_one_way())
            .field("canceled", &self.is_canceled())
            .finish()
    }
}
