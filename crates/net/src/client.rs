//! The network client: [`Client`], with courier::shm's verbs over a zenoh session.

use crate::frame::{Answer, Kind, Request, Status};
use crate::{decode, encode, NetError, PUSH};
use courier_core::error::{Error, SendError};
use courier_shm::{CancelOutcome, Wire};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zenoh::handlers::FifoChannelHandler;
use zenoh::query::{ConsolidationMode, Reply};
use zenoh::sample::Sample;
use zenoh::{Session, Wait};

/// The default deadline of a call made without one ([`Client::with_timeout`] changes it):
/// across a network every call has one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest deadline a call can have: the request's budget field counts milliseconds in
/// a `u32` (about 49 days). A longer timeout, `Duration::MAX` included, means this one.
pub const LONGEST_TIMEOUT: Duration = Duration::from_millis(u32::MAX as u64 - 1);

/// A client of a courier service exposed on the network ([`expose`](crate::expose)), with
/// courier::shm's verbs and errors.
///
/// Every call has a deadline (the call's `timeout`, else the client's
/// [default](Client::with_timeout)), and the deadline travels with the request: the bridge
/// gives up when it passes, so no work is left running for a caller that stopped waiting.
///
/// # Errors
///
/// As on the other transports: [`Error::App`] and [`Error::NoReply`] pass through the bridge
/// unchanged; [`Error::ServerDisappeared`] when no bridge answers at all (none exposes the
/// service, or the service behind it is gone) and [`Error::Timeout`] when the deadline
/// passes first (a slow service, a partitioned network, a bridge whose host died);
/// [`Error::Protocol`] for an answer that is not one (a value of another type, a frame that
/// does not decode).
///
/// # Examples
///
/// ```no_run
/// use courier_net::Client;
/// use std::time::Duration;
///
/// let session = zenoh::Wait::wait(zenoh::open(zenoh::Config::default())).unwrap();
/// let kv: Client<u64, u64, u32> = Client::connect(&session, "kv", Duration::from_secs(5))?;
/// println!("{:?}", kv.req(7));
/// # Ok::<(), courier_net::NetError>(())
/// ```
pub struct Client<Rq, Rp, E> {
    inner: Arc<Inner>,
    timeout: Duration,
    _types: PhantomData<fn(Rq) -> (Rp, E)>,
}

struct Inner {
    session: Session,
    /// The service's key at the host that answered `connect`.
    key: String,
    server_pid: u32,
    /// Numbers this client's subscriptions.
    next_sub: AtomicU64,
}

impl<Rq, Rp, E> Clone for Client<Rq, Rp, E> {
    fn clone(&self) -> Self {
        Client {
            inner: Arc::clone(&self.inner),
            timeout: self.timeout,
            _types: PhantomData,
        }
    }
}

impl<Rq, Rp, E> std::fmt::Debug for Client<Rq, Rp, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("key", &self.inner.key)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A reply frame's outcome, before the reply is decoded.
enum Got {
    Answer(Vec<u8>),
    Failed(Status),
}

/// Sends the request frame `frame` to `key` and returns the channel its answer comes on.
fn query(
    session: &Session,
    key: &str,
    frame: Vec<u8>,
    timeout: Duration,
) -> Result<FifoChannelHandler<Reply>, Status> {
    session
        .get(key)
        .payload(frame)
        .consolidation(ConsolidationMode::None)
        .timeout(timeout.min(LONGEST_TIMEOUT))
        .wait()
        .map_err(|_| Status::Protocol)
}

/// Waits for the answer of a query sent at `sent` with `timeout`.
fn answer(replies: &FifoChannelHandler<Reply>, sent: Instant, timeout: Duration) -> Got {
    // zenoh closes the channel when the query ends: at its timeout, or at once when no
    // queryable matches. A little past the deadline, so that zenoh's own ending is seen.
    let deadline = sent + timeout.min(LONGEST_TIMEOUT) + Duration::from_millis(500);
    match replies.recv_deadline(deadline) {
        Ok(Some(reply)) => got(reply, sent, timeout),
        Ok(None) => Got::Failed(Status::Timeout),
        Err(_) => Got::Failed(ended(sent, timeout)),
    }
}

/// A query that ended without an answer: the deadline passed, or nobody answered at all.
fn ended(sent: Instant, timeout: Duration) -> Status {
    if sent.elapsed() + Duration::from_millis(5) >= timeout {
        Status::Timeout
    } else {
        Status::ServerGone
    }
}

/// A reply's answer. A zenoh error reply (zenoh's own, at the query's timeout; a bridge
/// never sends one) is the query ending.
fn got(reply: Reply, sent: Instant, timeout: Duration) -> Got {
    match reply.into_result() {
        Ok(sample) => Got::Answer(sample.payload().to_bytes().into_owned()),
        Err(_) => Got::Failed(ended(sent, timeout)),
    }
}

/// The courier error a failure status stands for.
fn error_of<E>(st: Status) -> Error<E> {
    match st {
        Status::NoReply => Error::NoReply,
        Status::ServerGone => Error::ServerDisappeared,
        Status::Timeout => Error::Timeout,
        Status::TooLarge => Error::TooLarge,
        Status::LimitReached => Error::LimitReached,
        Status::Ok | Status::App | Status::Protocol => Error::Protocol,
    }
}

/// The reply (and a mutable lend's bytes) an answer frame holds.
fn reply_of<Rp: Wire, E: Wire>(got: Got, back: Option<&mut [u8]>) -> Result<Rp, Error<E>> {
    let bytes = match got {
        Got::Answer(b) => b,
        Got::Failed(st) => return Err(error_of(st)),
    };
    let Ok(a) = Answer::decode(&bytes) else {
        return Err(Error::Protocol);
    };
    match a.status {
        Status::Ok => {
            if let Some(back) = back {
                if a.lent.len() != back.len() {
                    return Err(Error::Protocol);
                }
                back.copy_from_slice(a.lent);
            }
            decode(a.signature, a.body).ok_or(Error::Protocol)
        }
        Status::App => Err(decode(a.signature, a.body).map_or(Error::Protocol, Error::App)),
        st => Err(error_of(st)),
    }
}

/// The status of an answer that carries no value (send, scalar, subscribe, hello), and its
/// words.
fn status_of(got: Got) -> Result<[u64; 2], Status> {
    let bytes = match got {
        Got::Answer(b) => b,
        Got::Failed(st) => return Err(st),
    };
    match Answer::decode(&bytes) {
        Ok(a) if a.status == Status::Ok => Ok(a.words),
        Ok(a) => Err(a.status),
        Err(_) => Err(Status::Protocol),
    }
}

/// The budget field of a request sent with `timeout`.
fn budget(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX - 1)
}

impl<Rq: Wire, Rp: Wire, E: Wire> Client<Rq, Rp, E> {
    /// Finds the service `name` on the network and connects to it, waiting up to `timeout`
    /// for a bridge to answer. `name` is `service` (any host that exposes it; the first to
    /// answer is used from then on) or `namespace/service` (that host's).
    ///
    /// # Errors
    ///
    /// [`NetError::InvalidName`]; [`NetError::NotFound`] if no bridge answered in time (or
    /// the service behind the bridge is down).
    pub fn connect(session: &Session, name: &str, timeout: Duration) -> Result<Self, NetError> {
        let key = match name.split_once('/') {
            Some((ns, svc)) => crate::key_of(ns, svc)?,
            None => format!("{}/*/{}", crate::ROOT, crate::check_chunk(name)?),
        };
        let deadline = Instant::now() + timeout.min(LONGEST_TIMEOUT);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = Request {
                kind: Kind::Hello,
                op: 0,
                budget_ms: budget(left),
                args: [0; 4],
                signature: 0,
                body: &[],
                lent: &[],
            }
            .encode();
            let sent = Instant::now();
            let replies = query(session, &key, frame, left.max(Duration::from_millis(1)))
                .map_err(|_| NetError::NotFound(key.clone()))?;
            if let Ok(Some(reply)) = replies.recv_deadline(sent + left + Duration::from_millis(500))
            {
                if let Ok(sample) = reply.into_result() {
                    let words = status_of(Got::Answer(sample.payload().to_bytes().into_owned()));
                    if let Ok(words) = words {
                        return Ok(Client {
                            inner: Arc::new(Inner {
                                session: session.clone(),
                                key: sample.key_expr().as_str().to_owned(),
                                server_pid: words[0] as u32,
                                next_sub: AtomicU64::new(0),
                            }),
                            timeout: DEFAULT_TIMEOUT,
                            _types: PhantomData,
                        });
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(NetError::NotFound(key));
            }
            // Nobody answered yet (the bridge may be starting, the route being made):
            // ask again shortly, within the deadline.
            std::thread::sleep(Duration::from_millis(20).min(left));
        }
    }

    /// The same client with `timeout` as the deadline of every call made without one.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The key of the service this client calls (`courier/<namespace>/<service>`).
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The process id of the server behind the bridge, on its host.
    pub fn server_pid(&self) -> u32 {
        self.inner.server_pid
    }

    /// Sends a request frame and waits for the answer until `timeout`.
    fn exchange(&self, frame: Vec<u8>, timeout: Duration) -> Got {
        let sent = Instant::now();
        match query(&self.inner.session, &self.inner.key, frame, timeout) {
            Ok(replies) => answer(&replies, sent, timeout),
            Err(st) => Got::Failed(st),
        }
    }

    /// The frame of a request of kind `kind` carrying `rq`.
    fn frame(&self, kind: Kind, rq: &Rq, lent: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        let body = encode(rq)?;
        Some(
            Request {
                kind,
                op: 0,
                budget_ms: budget(timeout),
                args: [0; 4],
                signature: rq.signature(),
                body: &body,
                lent,
            }
            .encode(),
        )
    }

    fn call(
        &self,
        kind: Kind,
        rq: &Rq,
        lent: &[u8],
        back: Option<&mut [u8]>,
        timeout: Duration,
    ) -> Result<Rp, Error<E>> {
        let frame = self.frame(kind, rq, lent, timeout).ok_or(Error::TooLarge)?;
        reply_of(self.exchange(frame, timeout), back)
    }

    /// Sends `rq` and waits for the reply, for at most the client's default timeout.
    ///
    /// # Errors
    ///
    /// See [`Client`].
    pub fn req(&self, rq: Rq) -> Result<Rp, Error<E>> {
        self.req_timeout(rq, self.timeout)
    }

    /// Sends `rq` and waits for the reply for at most `timeout`; the bridge stops waiting
    /// for the service then too.
    ///
    /// # Errors
    ///
    /// See [`Client`].
    pub fn req_timeout(&self, rq: Rq, timeout: Duration) -> Result<Rp, Error<E>> {
        self.call(Kind::Call, &rq, &[], None, timeout)
    }

    /// Sends `rq` and awaits the reply, on any executor (never blocks its thread).
    ///
    /// # Errors
    ///
    /// As [`Client::req`].
    pub async fn areq(&self, rq: Rq) -> Result<Rp, Error<E>> {
        self.req_async(rq)?.wait_async().await
    }

    /// Sends `rq` and returns at once; the reply is collected with the [`WaitReply`].
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] if the request cannot be encoded; a failure to send it.
    pub fn req_async(&self, rq: Rq) -> Result<WaitReply<Rq, Rp, E>, Error<E>> {
        let timeout = self.timeout;
        let frame = self
            .frame(Kind::Call, &rq, &[], timeout)
            .ok_or(Error::TooLarge)?;
        let sent = Instant::now();
        let replies =
            query(&self.inner.session, &self.inner.key, frame, timeout).map_err(error_of)?;
        Ok(WaitReply {
            replies,
            sent,
            timeout,
            early: None,
            _types: PhantomData,
        })
    }

    /// Sends `rq` one-way: returns once the bridge has queued it at the service (so a
    /// success means delivered to the service's queue; an error means it may or may not
    /// have been, if the network failed after the bridge took it).
    ///
    /// # Errors
    ///
    /// [`SendError::ServerDisappeared`] (no bridge, or no service behind it),
    /// [`SendError::Timeout`] (no confirmation within the client's timeout: delivery
    /// unknown), [`SendError::TooLarge`]; each with the request.
    pub fn send(&self, rq: Rq) -> Result<(), SendError<Rq>> {
        self.send_timeout(rq, self.timeout)
    }

    /// As [`Client::send`], waiting at most `timeout` for the confirmation.
    ///
    /// # Errors
    ///
    /// As [`Client::send`].
    pub fn send_timeout(&self, rq: Rq, timeout: Duration) -> Result<(), SendError<Rq>> {
        let Some(frame) = self.frame(Kind::Send, &rq, &[], timeout) else {
            return Err(SendError::TooLarge(rq));
        };
        match status_of(self.exchange(frame, timeout)) {
            Ok(_) => Ok(()),
            Err(Status::TooLarge) => Err(SendError::TooLarge(rq)),
            Err(Status::Timeout) => Err(SendError::Timeout(rq)),
            Err(_) => Err(SendError::ServerDisappeared(rq)),
        }
    }

    /// Lends `data` with `rq`: the bytes travel with the request and the server reads them
    /// as a lent buffer.
    ///
    /// # Errors
    ///
    /// See [`Client`].
    pub fn lend(&self, rq: Rq, data: &[u8]) -> Result<Rp, Error<E>> {
        self.lend_timeout(rq, data, self.timeout)
    }

    /// As [`Client::lend`], for at most `timeout`.
    ///
    /// # Errors
    ///
    /// See [`Client`].
    pub fn lend_timeout(&self, rq: Rq, data: &[u8], timeout: Duration) -> Result<Rp, Error<E>> {
        self.call(Kind::Lend, &rq, data, None, timeout)
    }

    /// Lends `data` mutably with `rq`: the bytes travel to the server, which writes them in
    /// a lent buffer, and come back into `data` with the reply. `data` is left as it was if
    /// the call fails.
    ///
    /// # Errors
    ///
    /// See [`Client`].
    pub fn lend_mut(&self, rq: Rq, data: &mut [u8]) -> Result<Rp, Error<E>> {
        self.lend_mut_timeout(rq, data, self.timeout)
    }

    /// As [`Client::lend_mut`], for at most `timeout`.
    ///
    /// # Errors
    ///
    /// See [`Client`].
    pub fn lend_mut_timeout(
        &self,
        rq: Rq,
        data: &mut [u8],
        timeout: Duration,
    ) -> Result<Rp, Error<E>> {
        let frame = self
            .frame(Kind::LendMut, &rq, data, timeout)
            .ok_or(Error::TooLarge)?;
        reply_of(self.exchange(frame, timeout), Some(data))
    }

    fn scalar_frame(kind: Kind, op: u32, args: [u64; 4], timeout: Duration) -> Vec<u8> {
        Request {
            kind,
            op,
            budget_ms: budget(timeout),
            args,
            signature: 0,
            body: &[],
            lent: &[],
        }
        .encode()
    }

    /// Sends a one-way scalar message; returns once the bridge has queued it. The opcode of
    /// a [`#[derive(Opcode)]`](courier_core::opcode) enum is `Op::Add.into()`.
    ///
    /// # Errors
    ///
    /// [`Error::ServerDisappeared`], [`Error::Timeout`] (delivery unknown).
    pub fn scalar(&self, op: u32, args: [u64; 4]) -> Result<(), Error<E>> {
        self.scalar_timeout(op, args, self.timeout)
    }

    /// As [`Client::scalar`], for at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Client::scalar`].
    pub fn scalar_timeout(
        &self,
        op: u32,
        args: [u64; 4],
        timeout: Duration,
    ) -> Result<(), Error<E>> {
        let frame = Self::scalar_frame(Kind::Scalar, op, args, timeout);
        status_of(self.exchange(frame, timeout))
            .map(drop)
            .map_err(error_of)
    }

    /// Sends a scalar message and waits for its two-word reply.
    ///
    /// # Errors
    ///
    /// See [`Client`].
    pub fn blocking_scalar(&self, op: u32, args: [u64; 4]) -> Result<[u64; 2], Error<E>> {
        self.blocking_scalar_timeout(op, args, self.timeout)
    }

    /// As [`Client::blocking_scalar`], for at most `timeout`.
    ///
    /// # Errors
    ///
    /// See [`Client`].
    pub fn blocking_scalar_timeout(
        &self,
        op: u32,
        args: [u64; 4],
        timeout: Duration,
    ) -> Result<[u64; 2], Error<E>> {
        let frame = Self::scalar_frame(Kind::BlockingScalar, op, args, timeout);
        status_of(self.exchange(frame, timeout)).map_err(error_of)
    }

    /// Subscribes with `rq`: the server's pushes arrive, in order, on the returned
    /// [`Subscription`].
    ///
    /// # Errors
    ///
    /// See [`Client`].
    pub fn subscribe(&self, rq: Rq) -> Result<Subscription, Error<E>> {
        self.subscribe_timeout(rq, self.timeout)
    }

    /// As [`Client::subscribe`], waiting at most `timeout` for the server to accept.
    ///
    /// # Errors
    ///
    /// See [`Client`].
    pub fn subscribe_timeout(&self, rq: Rq, timeout: Duration) -> Result<Subscription, Error<E>> {
        let inner = &self.inner;
        let n = inner.next_sub.fetch_add(1, Ordering::Relaxed);
        let push_key = format!("{}/{PUSH}/{}/{n}", inner.key, inner.session.zid());
        // Declared before the request leaves, on the same session: the bridge's first push
        // finds it.
        let subscriber = inner
            .session
            .declare_subscriber(push_key.clone())
            .wait()
            .map_err(|_| Error::Protocol)?;
        let frame = self
            .frame(Kind::Subscribe, &rq, push_key.as_bytes(), timeout)
            .ok_or(Error::TooLarge)?;
        status_of(self.exchange(frame, timeout)).map_err(error_of)?;
        Ok(Subscription {
            subscriber,
            session: inner.session.clone(),
            key: inner.key.clone(),
            push_key,
        })
    }
}

/// A call sent with [`Client::req_async`]: wait for its reply now or later, blocking or
/// async, or give it up.
pub struct WaitReply<Rq, Rp, E> {
    replies: FifoChannelHandler<Reply>,
    sent: Instant,
    timeout: Duration,
    /// An answer seen by `is_ready`.
    early: Option<Got>,
    _types: PhantomData<fn(Rq) -> (Rp, E)>,
}

impl<Rq, Rp, E> std::fmt::Debug for WaitReply<Rq, Rp, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitReply").finish_non_exhaustive()
    }
}

impl<Rq, Rp: Wire, E: Wire> WaitReply<Rq, Rp, E> {
    /// Waits for the reply (until the call's deadline).
    ///
    /// # Errors
    ///
    /// See [`Client`].
    pub fn wait(mut self) -> Result<Rp, Error<E>> {
        if let Some(got) = self.early.take() {
            return reply_of(got, None);
        }
        reply_of(answer(&self.replies, self.sent, self.timeout), None)
    }

    /// Waits at most `timeout` (and never past the call's deadline).
    ///
    /// # Errors
    ///
    /// See [`Client`]; [`Error::Timeout`] when `timeout` passes first.
    pub fn wait_timeout(mut self, timeout: Duration) -> Result<Rp, Error<E>> {
        if let Some(got) = self.early.take() {
            return reply_of(got, None);
        }
        match self.replies.recv_timeout(timeout.min(LONGEST_TIMEOUT)) {
            Ok(Some(reply)) => reply_of(got(reply, self.sent, self.timeout), None),
            Ok(None) => Err(Error::Timeout),
            Err(_) => Err(error_of(ended(self.sent, self.timeout))),
        }
    }

    /// Awaits the reply on any executor.
    ///
    /// # Errors
    ///
    /// See [`Client`].
    pub async fn wait_async(mut self) -> Result<Rp, Error<E>> {
        if let Some(got) = self.early.take() {
            return reply_of(got, None);
        }
        match self.replies.recv_async().await {
            Ok(reply) => reply_of(got(reply, self.sent, self.timeout), None),
            Err(_) => Err(error_of(ended(self.sent, self.timeout))),
        }
    }

    /// Whether the answer is there (a `wait` would not block).
    pub fn is_ready(&mut self) -> bool {
        if self.early.is_none() {
            if let Ok(Some(reply)) = self.replies.try_recv() {
                self.early = Some(got(reply, self.sent, self.timeout));
            }
        }
        self.early.is_some()
    }

    /// Gives the call up: its answer, if it came, or [`CancelOutcome::Signaled`] (the
    /// bridge is not told; it stops at the call's deadline and its answer is discarded).
    pub fn cancel(mut self) -> CancelOutcome<Rq, Rp, E> {
        if self.is_ready() {
            let got = self.early.take().expect("is_ready saw it");
            return CancelOutcome::Completed(reply_of(got, None));
        }
        CancelOutcome::Signaled
    }
}

/// The pushes of a subscription made with [`Client::subscribe`]. Dropping it tells the
/// bridge, which unsubscribes from the service.
pub struct Subscription {
    subscriber: zenoh::pubsub::Subscriber<FifoChannelHandler<Sample>>,
    session: Session,
    key: String,
    push_key: String,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("key", &self.push_key)
            .finish()
    }
}

impl Subscription {
    fn value<T: Wire>(sample: &Sample) -> Result<T, Error<()>> {
        let bytes = sample.payload().to_bytes();
        match Answer::decode(&bytes) {
            Ok(a) if a.status == Status::Ok => decode(a.signature, a.body).ok_or(Error::Protocol),
            Ok(a) => Err(error_of(a.status)),
            Err(_) => Err(Error::Protocol),
        }
    }

    /// The next value if one is there.
    ///
    /// # Errors
    ///
    /// [`Error::NoReply`] when the server ended the subscription,
    /// [`Error::ServerDisappeared`], [`Error::Protocol`] for a value that is not a `T`.
    pub fn try_recv<T: Wire>(&self) -> Result<Option<T>, Error<()>> {
        match self.subscriber.try_recv() {
            Ok(Some(s)) => Self::value(&s).map(Some),
            Ok(None) => Ok(None),
            Err(_) => Err(Error::ServerDisappeared),
        }
    }

    /// Waits at most `timeout` for the next value. (There is no unbounded `recv` across a
    /// network: a host that dies sends no end.)
    ///
    /// # Errors
    ///
    /// As [`Subscription::try_recv`], and [`Error::Timeout`].
    pub fn recv_timeout<T: Wire>(&self, timeout: Duration) -> Result<T, Error<()>> {
        match self.subscriber.recv_timeout(timeout.min(LONGEST_TIMEOUT)) {
            Ok(Some(s)) => Self::value(&s),
            Ok(None) => Err(Error::Timeout),
            Err(_) => Err(Error::ServerDisappeared),
        }
    }

    /// Awaits the next value on any executor.
    ///
    /// # Errors
    ///
    /// As [`Subscription::try_recv`].
    pub async fn recv_async<T: Wire>(&self) -> Result<T, Error<()>> {
        match self.subscriber.recv_async().await {
            Ok(s) => Self::value(&s),
            Err(_) => Err(Error::ServerDisappeared),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let frame = Request {
            kind: Kind::Unsubscribe,
            op: 0,
            budget_ms: budget(DEFAULT_TIMEOUT),
            args: [0; 4],
            signature: 0,
            body: &[],
            lent: self.push_key.as_bytes(),
        }
        .encode();
        // Not waited for: the bridge also ends a forward nobody listens to.
        let _ = self
            .session
            .get(&self.key)
            .payload(frame)
            .callback(|_| {})
            .wait();
    }
}
