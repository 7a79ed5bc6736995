//! The requesting side: [`Client`], [`WeakClient`], [`WaitReply`] and the reply future.

use crate::chan::{deadline_after, Reserve, Shared, Wait};
use crate::slot::{Cancel, Slot};
use crate::sync::{Arc, Ordering, Waits};
use courier_core::error::{Error, SendError};
use std::fmt;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::ptr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A handle that sends requests to the [`Server`](crate::Server) of its channel.
///
/// Clones are independent clients of the same server; the server sees
/// [`Error::ClientsDisappeared`] once every clone (and every client upgraded from a
/// [`WeakClient`]) is gone and the queue is empty. A `Client` is `Send` and `Sync`: one handle
/// may be used from several threads at once, and each call is a separate request.
///
/// # Examples
///
/// ```
/// use courier_local::channel;
///
/// let (server, client) = channel::<u32, u32, ()>();
/// let worker = std::thread::spawn(move || {
///     while let Ok((n, ctx)) = server.wait() {
///         ctx.reply(n * 2).unwrap();
///     }
/// });
/// assert_eq!(client.req(21), Ok(42));
/// drop(client); // the server's next wait() returns ClientsDisappeared
/// worker.join().unwrap();
/// ```
pub struct Client<Rq, Rp, E> {
    pub(crate) shared: Arc<Shared<Rq, Rp, E>>,
}

impl<Rq, Rp, E> Client<Rq, Rp, E> {
    /// Sends `request` and blocks until the server replies.
    ///
    /// On a bounded channel this first waits for room in the queue.
    ///
    /// # Errors
    ///
    /// [`Error::ServerDisappeared`] if no server is left to take the request (or it left with
    /// the request still queued), [`Error::NoReply`] if the server dropped the request without
    /// answering, [`Error::App`] if it answered with [`ReplyContext::fail`](crate::ReplyContext::fail).
    pub fn req(&self, request: Rq) -> Result<Rp, Error<E>> {
        // The lane when it is free (a call's line crosses between the cores, not the queue's
        // head as well); the queue otherwise.
        match Shared::post(&self.shared, request)? {
            Ok(lane) => {
                // SAFETY: we posted in the lane and hold it until `leave_lane`: the slot is
                // ours to wait on, and its result ours to read once ready.
                let result = unsafe {
                    (*lane).wait_ready(None);
                    Slot::take_lane_result(lane)
                };
                self.shared.leave_lane();
                result
            }
            Err(request) => self.req_async(request)?.wait(),
        }
    }

    /// [`Client::req`] with a time limit on the whole call (waiting for room included).
    ///
    /// # Errors
    ///
    /// As [`Client::req`], plus [`Error::Timeout`] when time runs out: the request is then
    /// withdrawn if the server had not taken it yet, or the server sees
    /// [`ReplyContext::is_canceled`](crate::ReplyContext::is_canceled) turn `true`.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_local::{channel, Error};
    /// use std::time::Duration;
    ///
    /// let (_server, client) = channel::<u32, u32, ()>();
    /// // Nobody serves the queue: the request is withdrawn after 10 ms.
    /// assert_eq!(client.req_timeout(1, Duration::from_millis(10)), Err(Error::Timeout));
    /// ```
    pub fn req_timeout(&self, request: Rq, timeout: Duration) -> Result<Rp, Error<E>> {
        let deadline = deadline_after(timeout);
        let wait = deadline.map_or(Wait::Forever, Wait::Until);
        match Shared::enqueue(&self.shared, request, false, wait) {
            Ok(slot) => WaitReply::new(slot).wait_deadline(deadline),
            Err(SendError::ServerDisappeared(_)) => Err(Error::ServerDisappeared),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// Sends `request` now and returns a [`WaitReply`] to collect the reply later.
    ///
    /// On a bounded channel this blocks while the queue is full; see [`Client::try_req`].
    ///
    /// # Errors
    ///
    /// [`Error::ServerDisappeared`] if no server is left.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_local::channel;
    ///
    /// let (server, client) = channel::<&str, usize, ()>();
    /// let pending = client.req_async("hello").unwrap();
    /// let (text, ctx) = server.wait().unwrap();
    /// ctx.reply(text.len()).unwrap();
    /// assert_eq!(pending.wait(), Ok(5));
    /// ```
    pub fn req_async(&self, request: Rq) -> Result<WaitReply<Rq, Rp, E>, Error<E>> {
        match Shared::enqueue(&self.shared, request, false, Wait::Forever) {
            Ok(slot) => Ok(WaitReply::new(slot)),
            Err(_) => Err(Error::ServerDisappeared),
        }
    }

    /// Sends `request` without waiting for room; the request comes back if it cannot go.
    ///
    /// # Errors
    ///
    /// [`SendError::Full`] if the channel is [`bounded`](crate::bounded) and full,
    /// [`SendError::ServerDisappeared`] if no server is left.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_local::{bounded, SendError};
    ///
    /// let (_server, client) = bounded::<u8, u8, ()>(1);
    /// let _first = client.try_req(1).unwrap();
    /// match client.try_req(2) {
    ///     Err(SendError::Full(request)) => assert_eq!(request, 2),
    ///     _ => unreachable!(),
    /// }
    /// ```
    pub fn try_req(&self, request: Rq) -> Result<WaitReply<Rq, Rp, E>, SendError<Rq>> {
        Shared::enqueue(&self.shared, request, false, Wait::No).map(WaitReply::new)
    }

    /// Sends `request` and waits for the reply without blocking the thread.
    ///
    /// Works under any executor. On a bounded channel the future first waits for room.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the call: a request the server has not taken yet is
    /// withdrawn (and dropped), a taken one is marked canceled so the server sees
    /// [`ReplyContext::is_canceled`](crate::ReplyContext::is_canceled). Nothing is left behind
    /// in the channel. The request is lost with the future, so this is not cancel-safe in
    /// tokio's `select!` sense; use [`Client::req_async`] and [`WaitReply::cancel`] to get a
    /// withdrawn request back.
    ///
    /// # Errors
    ///
    /// As [`Client::req`].
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_local::channel;
    ///
    /// let (server, client) = channel::<u32, u32, ()>();
    /// std::thread::spawn(move || {
    ///     let (n, ctx) = server.wait().unwrap();
    ///     ctx.reply(n + 1).unwrap();
    /// });
    /// let reply = pollster::block_on(client.areq(1));
    /// assert_eq!(reply, Ok(2));
    /// ```
    pub async fn areq(&self, request: Rq) -> Result<Rp, Error<E>> {
        ReserveRoom {
            shared: &self.shared,
            listener: 0,
        }
        .await
        .map_err(|_| Error::ServerDisappeared)?;
        // No raw pointer may live across the `await` (it would make the future `!Send`).
        let reply = match Shared::enqueue_reserved(&self.shared, request, false) {
            Ok(slot) => WaitReply::new(slot).wait_async(),
            Err(_) => return Err(Error::ServerDisappeared),
        };
        reply.await
    }

    /// Sends a one-way message: no reply comes back and the server owes none.
    ///
    /// Blocks while a bounded queue is full. Messages from one client arrive in order.
    ///
    /// # Errors
    ///
    /// [`SendError::ServerDisappeared`] with the message if no server is left.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_local::channel;
    ///
    /// let (server, client) = channel::<&str, (), ()>();
    /// client.send("log line").unwrap();
    /// let (msg, ctx) = server.wait().unwrap();
    /// assert_eq!(msg, "log line");
    /// assert!(ctx.is_one_way()); // dropping it is fine: nobody waits
    /// ```
    pub fn send(&self, message: Rq) -> Result<(), SendError<Rq>> {
        Shared::enqueue(&self.shared, message, true, Wait::Forever).map(drop)
    }

    /// [`Client::send`] without waiting for room.
    ///
    /// # Errors
    ///
    /// [`SendError::Full`] or [`SendError::ServerDisappeared`], with the message.
    pub fn try_send(&self, message: Rq) -> Result<(), SendError<Rq>> {
        Shared::enqueue(&self.shared, message, true, Wait::No).map(drop)
    }

    /// [`Client::send`] waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`SendError::Timeout`] or [`SendError::ServerDisappeared`], with the message.
    pub fn send_timeout(&self, message: Rq, timeout: Duration) -> Result<(), SendError<Rq>> {
        Shared::enqueue(&self.shared, message, true, Wait::at_most(timeout)).map(drop)
    }

    /// A weak handle that does not count as a client (see [`WeakClient`]).
    pub fn weak(&self) -> WeakClient<Rq, Rp, E> {
        WeakClient {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Whether the server side is gone (every `Server` handle dropped). Once `true` it stays
    /// `true`; requests then fail with [`Error::ServerDisappeared`]. `false` is only a
    /// snapshot. The same method, with the same meaning, as on `courier::shm`'s client.
    pub fn is_server_gone(&self) -> bool {
        self.shared.servers.load(Ordering::Acquire) == 0
    }

    /// Makes the channel's clients (this handle and its clones) **busy-poll** for replies:
    /// each blocking wait spins for up to `limit` (or its deadline) before it yields and
    /// sleeps, instead of the short adaptive spin. `Duration::ZERO` goes back to the
    /// adaptive spin. It applies from each thread's next wait on; async waits (`areq`) are
    /// not affected.
    ///
    /// For throughput and latency at the price of a core per waiting client: while another
    /// process keeps a core busy, a sleeping or yielding wait costs a hand-over on a shared
    /// CPU or a wake-up per call, and two busy-polling threads make several times as many
    /// calls for less CPU per call. Pair it with [`Server::set_busy_poll`](crate::Server::set_busy_poll),
    /// or the server may be asleep when the request comes. The same trade as `courier::shm`'s
    /// `ConnectConfig::busy_poll`.
    ///
    /// ```
    /// use courier_local::channel;
    /// use std::time::Duration;
    ///
    /// let (server, client) = channel::<u64, u64, ()>();
    /// server.set_busy_poll(Duration::from_secs(1));
    /// client.set_busy_poll(Duration::from_secs(1));
    /// let worker = std::thread::spawn(move || {
    ///     while let Ok((n, ctx)) = server.wait() {
    ///         ctx.reply(n + 1).unwrap();
    ///     }
    /// });
    /// assert_eq!(client.req(1), Ok(2));
    /// drop(client);
    /// worker.join().unwrap();
    /// ```
    pub fn set_busy_poll(&self, limit: Duration) {
        Waits::set_limit(&self.shared.waits().client_poll_ns, limit);
    }
}

impl<Rq, Rp, E> Clone for Client<Rq, Rp, E> {
    fn clone(&self) -> Self {
        // Relaxed: the new handle is made from a live one, so the count is at least one and
        // cannot reach zero concurrently (as for `Arc::clone`).
        self.shared.clients.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Rq, Rp, E> Drop for Client<Rq, Rp, E> {
    fn drop(&mut self) {
        // Release: every push of ours happens-before a server's Acquire load that sees zero.
        if self.shared.clients.fetch_sub(1, Ordering::Release) == 1 {
            self.shared.requests.notify_all();
        }
    }
}

impl<Rq, Rp, E> fmt::Debug for Client<Rq, Rp, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// A client handle that does not keep the channel's clients alive.
///
/// [`WeakClient::upgrade`] gives a new [`Client`] only while at least one strong `Client` of
/// the channel still exists. Once the last one is gone the server has been (or will be) told
/// [`Error::ClientsDisappeared`], and a weak handle can never revive the channel. (`ump`
/// documents the same rule but lets a weak handle revive a channel while its server lives;
/// courier does what the documentation says.)
///
/// # Examples
///
/// ```
/// use courier_local::channel;
///
/// let (_server, client) = channel::<(), (), ()>();
/// let weak = client.weak();
/// assert!(weak.upgrade().is_some());
/// drop(client);
/// assert!(weak.upgrade().is_none());
/// ```
pub struct WeakClient<Rq, Rp, E> {
    shared: Arc<Shared<Rq, Rp, E>>,
}

impl<Rq, Rp, E> WeakClient<Rq, Rp, E> {
    /// A strong client, if any strong client of the channel still exists.
    pub fn upgrade(&self) -> Option<Client<Rq, Rp, E>> {
        let clients = &self.shared.clients;
        let mut n = clients.load(Ordering::Relaxed);
        loop {
            if n == 0 {
                return None;
            }
            // Relaxed: as `Client::clone`; the count only matters for reaching zero.
            match clients.compare_exchange_weak(n, n + 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    return Some(Client {
                        shared: Arc::clone(&self.shared),
                    })
                }
                Err(actual) => n = actual,
            }
        }
    }
}

impl<Rq, Rp, E> Clone for WeakClient<Rq, Rp, E> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Rq, Rp, E> fmt::Debug for WeakClient<Rq, Rp, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakClient").finish_non_exhaustive()
    }
}

/// What [`WaitReply::cancel`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelOutcome<Rq, Rp, E> {
    /// The server had not taken the request: it is withdrawn and handed back. The server
    /// never sees it.
    Withdrawn(Rq),
    /// The server had taken the request: it now sees
    /// [`ReplyContext::is_canceled`](crate::ReplyContext::is_canceled), and its reply will be
    /// discarded (its `reply` returns [`Error::OriginDisappeared`]).
    Signaled,
    /// The server had already answered; here is the answer.
    Completed(Result<Rp, Error<E>>),
}

/// A request that was sent and whose reply has not been collected yet.
///
/// Returned by [`Client::req_async`] and [`Client::try_req`]. Collect the reply with
/// [`wait`](WaitReply::wait), [`wait_timeout`](WaitReply::wait_timeout) or
/// [`wait_async`](WaitReply::wait_async), or give up with [`cancel`](WaitReply::cancel).
/// Dropping a `WaitReply` cancels the call the same way (unlike `ump`, where the server still
/// receives the request and learns only at reply time). To keep the call running without
/// waiting for its reply, as dropping does in `ump`, [`detach`](WaitReply::detach) it (or
/// send it one-way with [`Client::send`] from the start).
pub struct WaitReply<Rq, Rp, E> {
    slot: *mut Slot<Rq, Rp, E>,
}

// SAFETY: a `WaitReply` owns the requester's share of its slot, through which a request and a
// reply move between threads: sound when they (and the error) are `Send`.
unsafe impl<Rq: Send, Rp: Send, E: Send> Send for WaitReply<Rq, Rp, E> {}
// SAFETY: `&WaitReply` only allows `is_ready`, an atomic load.
unsafe impl<Rq: Send, Rp: Send, E: Send> Sync for WaitReply<Rq, Rp, E> {}

impl<Rq, Rp, E> WaitReply<Rq, Rp, E> {
    fn new(slot: *mut Slot<Rq, Rp, E>) -> Self {
        Self { slot }
    }

    /// Takes the slot out, leaving nothing for `Drop` to cancel.
    fn into_slot(self) -> *mut Slot<Rq, Rp, E> {
        ManuallyDrop::new(self).slot
    }

    /// Blocks until the reply arrives.
    ///
    /// # Errors
    ///
    /// As [`Client::req`].
    pub fn wait(self) -> Result<Rp, Error<E>> {
        let slot = self.into_slot();
        // SAFETY: we own the requester's share of `slot`, which keeps it valid.
        unsafe {
            (*slot).wait_ready(None);
            Slot::take_result(slot)
        }
    }

    /// Blocks until the reply arrives or `timeout` passes; on timeout the call is canceled
    /// (see [`WaitReply::cancel`]) and [`Error::Timeout`] returned.
    ///
    /// # Errors
    ///
    /// As [`Client::req`], plus [`Error::Timeout`].
    pub fn wait_timeout(self, timeout: Duration) -> Result<Rp, Error<E>> {
        self.wait_deadline(deadline_after(timeout))
    }

    fn wait_deadline(self, deadline: Option<Instant>) -> Result<Rp, Error<E>> {
        let slot = self.into_slot();
        // SAFETY: we own the requester's share of `slot`.
        unsafe {
            if (*slot).wait_ready(deadline) {
                return Slot::take_result(slot);
            }
            match cancel(slot) {
                CancelOutcome::Completed(result) => result,
                CancelOutcome::Withdrawn(_) | CancelOutcome::Signaled => Err(Error::Timeout),
            }
        }
    }

    /// Waits for the reply without blocking the thread.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the call as [`WaitReply::cancel`] does, dropping a withdrawn
    /// request.
    pub fn wait_async(self) -> ReplyFuture<Rq, Rp, E> {
        ReplyFuture {
            slot: self.into_slot(),
        }
    }

    /// Whether the reply (or an error) is there, so that `wait` would not block.
    pub fn is_ready(&self) -> bool {
        // SAFETY: we own the requester's share of `slot`, which keeps it valid.
        unsafe { (*self.slot).is_ready() }
    }

    /// Gives up the call: withdraws the request if the server has not taken it (and hands it
    /// back), or tells the server it was canceled.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_local::{channel, CancelOutcome};
    ///
    /// let (server, client) = channel::<String, (), ()>();
    /// let pending = client.req_async("not needed".to_string()).unwrap();
    /// match pending.cancel() {
    ///     CancelOutcome::Withdrawn(request) => assert_eq!(request, "not needed"),
    ///     _ => unreachable!("the server has not taken it"),
    /// }
    /// assert!(server.try_pop().unwrap().is_none()); // the server never sees it
    /// ```
    pub fn cancel(self) -> CancelOutcome<Rq, Rp, E> {
        // SAFETY: we own the requester's share of the slot.
        unsafe { cancel(self.into_slot()) }
    }

    /// Stops waiting without canceling: the call goes on, the server receives it (if it has
    /// not yet) and answers it as usual, and the answer is dropped. This is what dropping a
    /// `WaitReply` does in `ump`. The server is not told: its
    /// [`is_canceled`](crate::ReplyContext::is_canceled) stays `false`, and its `reply`
    /// returns [`Error::OriginDisappeared`] as nobody reads it. Returns the answer if it had
    /// already arrived.
    ///
    /// The call keeps its place in a bounded queue until the server answers it.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_local::channel;
    ///
    /// let (server, client) = channel::<&str, (), ()>();
    /// assert!(client.req_async("flush the log").unwrap().detach().is_none());
    /// let (request, ctx) = server.wait().unwrap(); // the server still gets it
    /// assert_eq!(request, "flush the log");
    /// assert!(!ctx.is_canceled());
    /// ```
    pub fn detach(self) -> Option<Result<Rp, Error<E>>> {
        // SAFETY: we own the requester's share of the slot, and give it up here.
        unsafe { Slot::detach(self.into_slot()) }
    }
}

/// Cancels through the requester's share of `slot`.
///
/// # Safety
///
/// The caller owns the requester's share of a non-null `slot`; it has none afterwards.
unsafe fn cancel<Rq, Rp, E>(slot: *mut Slot<Rq, Rp, E>) -> CancelOutcome<Rq, Rp, E> {
    // SAFETY: guaranteed by the caller.
    match unsafe { Slot::cancel(slot) } {
        Cancel::Withdrawn(request, pool) => {
            pool.unreserve();
            CancelOutcome::Withdrawn(request)
        }
        Cancel::Signaled => CancelOutcome::Signaled,
        Cancel::Completed(result) => CancelOutcome::Completed(result),
    }
}

impl<Rq, Rp, E> Drop for WaitReply<Rq, Rp, E> {
    fn drop(&mut self) {
        // SAFETY: we own the requester's share; `Drop` runs once.
        drop(unsafe { cancel(self.slot) });
    }
}

impl<Rq, Rp, E> fmt::Debug for WaitReply<Rq, Rp, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitReply")
            .field("ready", &self.is_ready())
            .finish()
    }
}

/// The future returned by [`WaitReply::wait_async`].
///
/// # Cancel safety
///
/// Dropping it cancels the call (see [`WaitReply::cancel`]).
#[must_use = "futures do nothing unless polled"]
pub struct ReplyFuture<Rq, Rp, E> {
    /// Null once the result has been taken.
    slot: *mut Slot<Rq, Rp, E>,
}

// SAFETY: as for `WaitReply`.
unsafe impl<Rq: Send, Rp: Send, E: Send> Send for ReplyFuture<Rq, Rp, E> {}
// SAFETY: `&ReplyFuture` allows nothing.
unsafe impl<Rq: Send, Rp: Send, E: Send> Sync for ReplyFuture<Rq, Rp, E> {}

impl<Rq, Rp, E> Unpin for ReplyFuture<Rq, Rp, E> {}

impl<Rq, Rp, E> Future for ReplyFuture<Rq, Rp, E> {
    type Output = Result<Rp, Error<E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let slot = self.slot;
        assert!(!slot.is_null(), "ReplyFuture polled after completion");
        // SAFETY: we own the requester's share of `slot` until we take the result.
        match unsafe { (*slot).poll_ready(cx) } {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                self.slot = ptr::null_mut();
                // SAFETY: ready, and our share is intact; we give it up here.
                Poll::Ready(unsafe { Slot::take_result(slot) })
            }
        }
    }
}

impl<Rq, Rp, E> Drop for ReplyFuture<Rq, Rp, E> {
    fn drop(&mut self) {
        if !self.slot.is_null() {
            // SAFETY: we still own the requester's share.
            drop(unsafe { cancel(self.slot) });
        }
    }
}

impl<Rq, Rp, E> fmt::Debug for ReplyFuture<Rq, Rp, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyFuture").finish_non_exhaustive()
    }
}

/// Waits for room in a bounded queue; unregisters on drop.
struct ReserveRoom<'a, Rq, Rp, E> {
    shared: &'a Shared<Rq, Rp, E>,
    listener: usize,
}

impl<Rq, Rp, E> Future for ReserveRoom<'_, Rq, Rp, E> {
    type Output = Result<(), Reserve>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        this.shared.poll_reserve(cx, &mut this.listener)
    }
}

impl<Rq, Rp, E> Drop for ReserveRoom<'_, Rq, Rp, E> {
    fn drop(&mut self) {
        self.shared.cancel_room_wait(self.listener);
    }
}
