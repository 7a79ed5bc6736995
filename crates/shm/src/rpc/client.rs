//! The client side: [`Client`], [`WaitReply`], [`Subscription`].

use super::buf::ShmBuf;
use super::layout::{
    kind, read_header, state, status, Shared, CBELL, CBELL_WAIT, F_ASYNC, PUSH_END, PUSH_HEAD,
    PUSH_TAIL, P_KIND, P_LEN, P_SIG, P_SUB, REQ_TAIL, SRV_CLOSED, SRV_SLEEP, S_ARGS, S_FLAGS,
    S_KIND, S_LEN, S_OP, S_RARGS, S_RLEN, S_RSIG, S_SIG, S_STATUS,
};
use super::slot;
use super::wire::Wire;
use super::{Error, BELL_HELLO, LEND_HELLO, MSG_LEN};
use crate::error::ShmError;
use crate::service::{ConnectConfig, Connection};
use crate::sync::{fence, AtomicBool, AtomicU32, Ordering};
use crate::sys::{self, Credentials};
use crate::view::{ShmView, ShmViewMut};
use crate::watch::Watch;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How many times a caller looks at its slot before it sleeps.
const SPINS: u32 = 2000;
/// How many times an async call looks at its slot, in its first poll, before it registers
/// with the bell thread (a few microseconds: an executor thread is not held for long).
const ASYNC_SPINS: u32 = 1000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `Error<()>` (the transport's) as `Error<E>` (the caller's): never `App`.
fn widen<E>(e: Error<()>) -> Error<E> {
    match e {
        Error::ServerDisappeared => Error::ServerDisappeared,
        Error::NoReply => Error::NoReply,
        Error::OriginDisappeared => Error::OriginDisappeared,
        Error::ClientsDisappeared => Error::ClientsDisappeared,
        Error::Timeout => Error::Timeout,
        Error::TooLarge => Error::TooLarge,
        Error::LimitReached => Error::LimitReached,
        Error::Protocol | Error::App(()) => Error::Protocol,
    }
}

fn left(deadline: Option<Instant>) -> Result<Option<Duration>, Error<()>> {
    match deadline {
        None => Ok(None),
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(l) if !l.is_zero() => Ok(Some(l)),
            _ => Err(Error::Timeout),
        },
    }
}

/// One client process's connection to a server.
pub(crate) struct Conn {
    sh: Arc<Shared>,
    /// Our end of the connection's wake-up socket: a byte on it wakes a sleeping worker.
    kick: OwnedFd,
    watch: Watch,
    server: Credentials,
    /// Our copy of the connection socket, for registering lendable buffers.
    sock: Mutex<OwnedFd>,
    /// The producer side of the request ring.
    tail: Mutex<u64>,
    pool: Mutex<Pool>,
    pool_cv: Condvar,
    /// Wakers of async waits, by slot.
    wakers: Mutex<Vec<Option<Waker>>>,
    push: Mutex<PushState>,
    push_wakers: Mutex<Vec<Waker>>,
    /// Buffers whose descriptor the server has.
    registered: Mutex<HashSet<u64>>,
    /// Buffers to unmap, told to the server with the next call (no slot was free).
    pending_free: Mutex<Vec<u64>>,
    next_sub: AtomicU32,
    reactor: Mutex<Option<JoinHandle<()>>>,
    stopping: AtomicBool,
}

/// The slots of this connection that no call holds.
struct Pool {
    free: Vec<usize>,
    /// Abandoned (canceled or one-way) slots the server has not completed yet.
    zombies: Vec<usize>,
}

struct PushState {
    head: u64,
    queues: HashMap<u32, SubQueue>,
    /// The server broke the push ring's rules.
    broken: bool,
}

#[derive(Default)]
struct SubQueue {
    items: VecDeque<(u64, Vec<u8>)>,
    ended: bool,
}

impl Conn {
    fn connect(name: &str, timeout: Duration) -> Result<Arc<Conn>, ShmError> {
        let deadline = Instant::now() + timeout;
        let conn = Connection::connect_timeout(name, &ConnectConfig::new(), timeout)?;
        let lay = read_header(conn.segment())?;
        let (seg, sock, server) = conn.into_parts();
        // The second message: our end of the connection's wake-up socket. Only a datagram
        // socket is taken: a send to it with MSG_DONTWAIT never blocks, whatever the server
        // does with its end.
        if !sys::wait_readable(sock.as_fd(), Some(deadline))
            .map_err(ShmError::io("waiting for the wake-up socket"))?
        {
            return Err(ShmError::Timeout);
        }
        let mut msg = [0u8; MSG_LEN + 1];
        let (n, fd) = sys::recv_with_fd(sock.as_fd(), &mut msg)
            .map_err(ShmError::io("receiving the wake-up socket"))?;
        let kick = match fd {
            Some(fd)
                if n == MSG_LEN
                    && msg[..MSG_LEN] == BELL_HELLO
                    && sys::is_dgram_socket(fd.as_fd()) =>
            {
                fd
            }
            _ => {
                return Err(ShmError::Handshake {
                    name: name.to_owned(),
                    reason: "no wake-up socket after the handshake",
                })
            }
        };
        let ours = sock
            .try_clone()
            .map_err(ShmError::io("duplicating the connection socket"))?;
        let sh = Arc::new(Shared { seg, lay });
        let theirs = Arc::clone(&sh);
        let watch = Watch::start(sock, move || {
            for slot in 0..theirs.lay.slots {
                sys::futex_wake(theirs.state(slot));
            }
            sys::futex_wake(theirs.u32(CBELL));
        })?;
        Ok(Arc::new(Conn {
            kick,
            watch,
            server,
            sock: Mutex::new(ours),
            tail: Mutex::new(0),
            pool: Mutex::new(Pool {
                free: (0..lay.slots).rev().collect(),
                zombies: Vec::new(),
            }),
            pool_cv: Condvar::new(),
            wakers: Mutex::new(vec![None; lay.slots]),
            push: Mutex::new(PushState {
                head: 0,
                queues: HashMap::new(),
                broken: false,
            }),
            push_wakers: Mutex::new(Vec::new()),
            registered: Mutex::new(HashSet::new()),
            pending_free: Mutex::new(Vec::new()),
            next_sub: AtomicU32::new(1),
            reactor: Mutex::new(None),
            stopping: AtomicBool::new(false),
            sh,
        }))
    }

    fn dead(&self) -> bool {
        self.watch.shared.is_dead()
    }

    fn phase(&self, slot: usize) -> u32 {
        self.sh.state(slot).load(Ordering::Acquire) & state::PHASE
    }

    /// Takes a free slot, reclaiming abandoned ones the server has completed; waits (until
    /// `deadline`) while every slot is in flight.
    fn acquire(&self, deadline: Option<Instant>) -> Result<usize, Error<()>> {
        let mut pool = lock(&self.pool);
        loop {
            if self.dead() {
                return Err(Error::ServerDisappeared);
            }
            if let Some(s) = pool.free.pop() {
                return Ok(s);
            }
            let mut i = 0;
            while i < pool.zombies.len() {
                let s = pool.zombies[i];
                if self.phase(s) == state::DONE {
                    pool.zombies.swap_remove(i);
                    pool.free.push(s);
                } else {
                    i += 1;
                }
            }
            if let Some(s) = pool.free.pop() {
                return Ok(s);
            }
            // Every slot is in flight: a release wakes us; abandoned slots are completed by
            // the server without telling us, so look again every millisecond.
            let wait = left(deadline)?.map_or(Duration::from_millis(1), |l| {
                l.min(Duration::from_millis(1))
            });
            pool = self
                .pool_cv
                .wait_timeout(pool, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn release(&self, slot: usize) {
        lock(&self.pool).free.push(slot);
        self.pool_cv.notify_one();
    }

    fn abandon(&self, slot: usize) {
        lock(&self.pool).zombies.push(slot);
    }

    /// Writes a call into a fresh slot and queues it. `write` fills the data area and
    /// returns (length, signature), or `None` if the value does not fit.
    fn start(
        self: &Arc<Self>,
        call: (u32, u32, u32, [u64; 4]),
        write: impl FnOnce(&mut ShmViewMut<'_>) -> Option<(usize, u64)>,
        deadline: Option<Instant>,
    ) -> Result<Call, Error<()>> {
        self.flush_frees();
        let (k, op, flags, args) = call;
        let slot = self.acquire(deadline)?;
        let sh = &self.sh;
        let Some((len, sig)) = write(&mut sh.data_mut(slot)) else {
            self.release(slot);
            return Err(Error::TooLarge);
        };
        let rec = sh.lay.rec(slot);
        sh.u32(rec + S_KIND).store(k, Ordering::Relaxed);
        sh.u32(rec + S_OP).store(op, Ordering::Relaxed);
        sh.u32(rec + S_FLAGS).store(flags, Ordering::Relaxed);
        sh.u32(rec + S_LEN).store(len as u32, Ordering::Relaxed);
        sh.u64(rec + S_SIG).store(sig, Ordering::Relaxed);
        for (i, a) in args.iter().enumerate() {
            sh.u64(rec + S_ARGS + 8 * i).store(*a, Ordering::Relaxed);
        }
        sh.u32(rec + S_STATUS).store(0, Ordering::Relaxed);
        sh.state(slot).store(state::QUEUED, Ordering::Relaxed);
        {
            let mut tail = lock(&self.tail);
            sh.u32(sh.lay.ring(*tail as usize))
                .store(slot as u32, Ordering::Relaxed);
            *tail += 1;
            // Release: the slot record, its data and the ring entry are visible to a worker
            // that sees the new tail (its Acquire load).
            sh.u64(REQ_TAIL).store(*tail, Ordering::Release);
        }
        // SeqCst: the Dekker pair with a worker's announcement in `srv_sleep` and its fence
        // before its last look at the rings: it sees our tail, or we see it sleeping.
        fence(Ordering::SeqCst);
        if sh.u32(SRV_SLEEP).load(Ordering::SeqCst) != 0 {
            sys::kick(self.kick.as_fd());
        }
        let mut call = Call {
            conn: Arc::clone(self),
            slot,
            pending: true,
        };
        // SeqCst (after our tail, above): a server shutting down sets `srv_closed` before it
        // fails the calls queued so far; one queued after that is ours to take back.
        if sh.u32(SRV_CLOSED).load(Ordering::SeqCst) != 0 {
            if let Canceled::Done = call.cancel() {
                call.finish();
            }
            return Err(Error::ServerDisappeared);
        }
        Ok(call)
    }

    /// Sends a one-way message: the slot is abandoned to the server at once.
    fn post(
        self: &Arc<Self>,
        call: (u32, u32, u32, [u64; 4]),
        write: impl FnOnce(&mut ShmViewMut<'_>) -> Option<(usize, u64)>,
        deadline: Option<Instant>,
    ) -> Result<(), Error<()>> {
        let mut c = self.start(call, write, deadline)?;
        c.pending = false;
        self.abandon(c.slot);
        Ok(())
    }

    /// Sends the unmap requests that could not be sent when their buffers were dropped.
    fn flush_frees(self: &Arc<Self>) {
        let ids = std::mem::take(&mut *lock(&self.pending_free));
        for id in ids {
            let _ = self.post(
                (kind::FREE_BUF, 0, 0, [id, 0, 0, 0]),
                |_| Some((0, 0)),
                Some(Instant::now()),
            );
        }
    }

    /// A lendable buffer was dropped (or detached): tell the server to unmap it.
    pub(crate) fn forget_buffer(self: &Arc<Self>, id: u64) {
        if !lock(&self.registered).remove(&id) || self.dead() {
            return;
        }
        let sent = self.post(
            (kind::FREE_BUF, 0, 0, [id, 0, 0, 0]),
            |_| Some((0, 0)),
            Some(Instant::now()),
        );
        if sent.is_err() {
            lock(&self.pending_free).push(id);
        }
    }

    /// Makes sure the server has `buf`'s descriptor (sent once, before the first lend).
    fn register(self: &Arc<Self>, buf: &ShmBuf) -> Result<(), Error<()>> {
        let mut reg = lock(&self.registered);
        if reg.contains(&buf.id()) {
            return Ok(());
        }
        let mut msg = [0u8; MSG_LEN];
        msg[..8].copy_from_slice(&LEND_HELLO);
        msg[8..].copy_from_slice(&buf.id().to_le_bytes());
        let sock = lock(&self.sock);
        sys::send_with_fd(sock.as_fd(), &msg, Some(buf.segment().fd()))
            .map_err(|_| Error::ServerDisappeared)?;
        reg.insert(buf.id());
        lock(&buf.lent_to).push(Arc::downgrade(self));
        Ok(())
    }

    /// Starts the thread that turns the client bell into `Waker` calls, once.
    fn ensure_reactor(self: &Arc<Self>) {
        let mut r = lock(&self.reactor);
        if r.is_some() {
            return;
        }
        // Announce before any async wait registers, so the server rings from now on.
        self.sh.u32(CBELL_WAIT).store(1, Ordering::SeqCst);
        let conn = Arc::clone(self);
        *r = std::thread::Builder::new()
            .name("courier-client-bell".into())
            .stack_size(64 * 1024)
            .spawn(move || reactor(&conn))
            .ok();
    }

    /// Reads the push records the server has published into the subscriptions' queues.
    fn drain_push(&self, push: &mut PushState) {
        if push.broken {
            return;
        }
        let sh = &self.sh;
        // Acquire: the records before the tail are complete.
        let tail = sh.u64(PUSH_TAIL).load(Ordering::Acquire);
        if tail.wrapping_sub(push.head) > sh.lay.push_depth as u64 {
            push.broken = true;
            return;
        }
        while push.head != tail {
            let rec = sh.lay.push_rec(push.head);
            let sub = sh.u32(rec + P_SUB).load(Ordering::Relaxed);
            let k = sh.u32(rec + P_KIND).load(Ordering::Relaxed);
            let len = sh.u32(rec + P_LEN).load(Ordering::Relaxed) as usize;
            let sig = sh.u64(rec + P_SIG).load(Ordering::Relaxed);
            let bytes = sh.push_data(push.head, len).to_vec();
            push.head += 1;
            // Release: we are done reading the record; the server may reuse it.
            sh.u64(PUSH_HEAD).store(push.head, Ordering::Release);
            if let Some(q) = push.queues.get_mut(&sub) {
                if k == PUSH_END {
                    q.ended = true;
                } else {
                    q.items.push_back((sig, bytes));
                }
            }
        }
    }

    fn push_pending(&self) -> bool {
        let push = lock(&self.push);
        self.sh.u64(PUSH_TAIL).load(Ordering::Acquire) != push.head
    }
}

/// The client bell thread: sleeps on the connection's client bell, wakes the async waits
/// whose slots are done and the subscription readers, until the client is dropped or the
/// server dies.
fn reactor(conn: &Conn) {
    let sh = &conn.sh;
    loop {
        sh.u32(CBELL_WAIT).store(1, Ordering::SeqCst);
        // SeqCst: the Dekker pair with the server's fence in `ring_client` after it
        // completes a slot or publishes a push.
        fence(Ordering::SeqCst);
        let seen = sh.u32(CBELL).load(Ordering::SeqCst);
        let dead = conn.dead();
        let stop = conn.stopping.load(Ordering::SeqCst);
        {
            let mut w = lock(&conn.wakers);
            for (slot, waker) in w.iter_mut().enumerate() {
                if waker.is_some() && (dead || stop || conn.phase(slot) == state::DONE) {
                    if let Some(w) = waker.take() {
                        w.wake();
                    }
                }
            }
        }
        if dead || stop || conn.push_pending() {
            for w in std::mem::take(&mut *lock(&conn.push_wakers)) {
                w.wake();
            }
        }
        if dead || stop {
            return;
        }
        conn.watch.shared.counted(|| {
            if !conn.dead() && !conn.stopping.load(Ordering::SeqCst) {
                sys::futex_wait(sh.u32(CBELL), seen, None);
            }
        });
    }
}

/// The client handles' shared part: stops the bell thread when the last handle (client,
/// pending call, subscription) is gone.
struct ClientShared {
    conn: Arc<Conn>,
}

impl Drop for ClientShared {
    fn drop(&mut self) {
        let conn = &self.conn;
        conn.stopping.store(true, Ordering::SeqCst);
        if let Some(t) = lock(&conn.reactor).take() {
            // Our own bump of the bell: the reactor sees `stopping`.
            conn.sh.u32(CBELL).fetch_add(1, Ordering::SeqCst);
            sys::futex_wake(conn.sh.u32(CBELL));
            let _ = t.join();
        }
    }
}

/// A call in flight: owns its slot until it is answered and read, canceled or the server
/// dies. Dropping it unread cancels it.
struct Call {
    conn: Arc<Conn>,
    slot: usize,
    pending: bool,
}

/// What [`WaitReply::cancel`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelOutcome<Rp, E> {
    /// The server had not taken the request: it never will.
    Withdrawn,
    /// The server had taken it and can see the cancellation
    /// ([`ReplyContext::is_canceled`](crate::ReplyContext::is_canceled)); its answer will be
    /// discarded.
    Signaled,
    /// The answer had already come: here it is.
    Completed(Result<Rp, Error<E>>),
}

enum Canceled {
    Withdrawn,
    Signaled,
    Done,
    Dead,
}

impl Call {
    fn is_done(&self) -> bool {
        self.conn.phase(self.slot) == state::DONE
    }

    /// Waits until the slot is done (`Ok`), the server dies or `deadline` passes; the call
    /// stays pending on an error.
    fn wait(&self, deadline: Option<Instant>) -> Result<(), Error<()>> {
        let word = self.conn.sh.state(self.slot);
        for i in 0..SPINS {
            if word.load(Ordering::Acquire) & state::PHASE == state::DONE {
                return Ok(());
            }
            if i % 64 == 63 {
                if self.conn.dead() {
                    return Err(Error::ServerDisappeared);
                }
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        loop {
            let phase = word.load(Ordering::Acquire) & state::PHASE;
            if phase == state::DONE {
                return Ok(());
            }
            if self.conn.dead() {
                return Err(Error::ServerDisappeared);
            }
            let timeout = left(deadline)?;
            if phase != state::QUEUED && phase != state::TAKEN {
                // Only a hostile server puts anything else here.
                return Err(Error::Protocol);
            }
            let Some(sleeping) = slot::announce_sleep(word) else {
                continue;
            };
            self.conn.watch.shared.counted(|| {
                if !self.conn.dead() {
                    sys::futex_wait(word, sleeping, timeout);
                }
            });
        }
    }

    /// Waits for the answer until `deadline`; then cancels the call, unless the answer came
    /// in the meantime. `Ok`: the call is done, ready to read.
    fn settle(mut self, deadline: Option<Instant>) -> Result<Call, Error<()>> {
        match self.wait(deadline) {
            Ok(()) => Ok(self),
            Err(Error::Timeout) => match self.cancel() {
                Canceled::Done => Ok(self),
                Canceled::Withdrawn | Canceled::Signaled | Canceled::Dead => Err(Error::Timeout),
            },
            Err(e) => Err(e),
        }
    }

    /// The async form of `wait`.
    fn poll_done(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error<()>>> {
        if self.is_done() {
            return Poll::Ready(Ok(()));
        }
        if self.conn.dead() {
            return Poll::Ready(Err(Error::ServerDisappeared));
        }
        self.conn.ensure_reactor();
        lock(&self.conn.wakers)[self.slot] = Some(cx.waker().clone());
        // SeqCst: the server reads the flag after it completes the slot; either it sees the
        // flag and rings, or we see DONE below.
        let rec = self.conn.sh.lay.rec(self.slot);
        self.conn
            .sh
            .u32(rec + S_FLAGS)
            .fetch_or(F_ASYNC, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.is_done() || self.conn.dead() {
            lock(&self.conn.wakers)[self.slot] = None;
            return self.poll_done_now();
        }
        Poll::Pending
    }

    fn poll_done_now(&self) -> Poll<Result<(), Error<()>>> {
        if self.is_done() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Ready(Err(Error::ServerDisappeared))
        }
    }

    /// Reads the answer of a done slot and frees it.
    fn take<Rp: Wire, E: Wire>(mut self) -> Result<Rp, Error<E>> {
        // Decode as the status says (a reply and an error type may share a signature).
        let r = self.read(|sh, slot, st, len, sig| match st {
            status::OK if sig == Rp::SIGNATURE => {
                Rp::decode(&sh.data(slot, len)).ok_or(Error::Protocol)
            }
            status::APP if sig == E::SIGNATURE => match E::decode(&sh.data(slot, len)) {
                Some(e) => Err(Error::App(e)),
                None => Err(Error::Protocol),
            },
            status::OK | status::APP => Err(Error::Protocol),
            other => Err(widen(status_error(other))),
        });
        self.finish();
        r
    }

    /// Reads the two reply words of a done scalar slot and frees it.
    fn take_words(mut self) -> Result<[u64; 2], Error<()>> {
        let r = self.read(|sh, slot, st, _, _| {
            let rec = sh.lay.rec(slot);
            match st {
                status::OK => {
                    Ok([0, 1].map(|i| sh.u64(rec + S_RARGS + 8 * i).load(Ordering::Relaxed)))
                }
                other => Err(status_error(other)),
            }
        });
        self.finish();
        r
    }

    /// Reads a done slot's status, reply length (checked against the slot) and signature
    /// once, and hands them to `f` to read the reply.
    fn read<T>(&mut self, f: impl FnOnce(&Shared, usize, u32, usize, u64) -> T) -> T {
        let sh = &self.conn.sh;
        let rec = sh.lay.rec(self.slot);
        let st = sh.u32(rec + S_STATUS).load(Ordering::Relaxed);
        let len = sh.u32(rec + S_RLEN).load(Ordering::Relaxed) as usize;
        let sig = sh.u64(rec + S_RSIG).load(Ordering::Relaxed);
        let len = len.min(sh.lay.slot_size);
        f(sh, self.slot, st, len, sig)
    }

    fn finish(&mut self) {
        if self.pending {
            self.pending = false;
            self.conn.release(self.slot);
        }
    }

    /// Cancels: withdraws a queued request, signals a taken one, or finds it done (the
    /// call is then still ours to read).
    fn cancel(&mut self) -> Canceled {
        if self.conn.dead() && !self.is_done() {
            self.pending = false;
            return Canceled::Dead;
        }
        match slot::cancel(self.conn.sh.state(self.slot)) {
            slot::Cancel::Done => Canceled::Done,
            slot::Cancel::Withdrawn => {
                self.pending = false;
                self.conn.abandon(self.slot);
                Canceled::Withdrawn
            }
            slot::Cancel::Signaled => {
                self.pending = false;
                self.conn.abandon(self.slot);
                Canceled::Signaled
            }
            slot::Cancel::Broken => {
                // A hostile server: give the slot up.
                self.pending = false;
                Canceled::Dead
            }
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.pending {
            lock(&self.conn.wakers)[self.slot] = None;
            if let Canceled::Done = self.cancel() {
                self.finish();
            }
        }
    }
}

fn status_error(st: u32) -> Error<()> {
    match st {
        status::NO_REPLY => Error::NoReply,
        status::TOO_LARGE => Error::TooLarge,
        status::SERVER_GONE => Error::ServerDisappeared,
        status::LIMIT => Error::LimitReached,
        _ => Error::Protocol,
    }
}

/// A connection to a named [`Server`](crate::Server) in another process.
///
/// `Clone`, `Send` and `Sync`: threads and tasks of the process share one connection and may
/// all call at once (up to the server's `slots` calls in flight; more wait for a slot). The
/// verbs are `courier::local`'s ([`req`](Client::req), [`areq`](Client::areq),
/// [`req_async`](Client::req_async), [`send`](Client::send)) and Xous's
/// ([`lend`](Client::lend), [`lend_mut`](Client::lend_mut), [`scalar`](Client::scalar),
/// [`blocking_scalar`](Client::blocking_scalar), [`subscribe`](Client::subscribe)).
///
/// When the server's process dies (or its last `Server` handle is dropped), every pending
/// call fails with [`Error::ServerDisappeared`] at once, and so does every later one: connect
/// again to reach the next server of the name.
///
/// # Examples
///
/// ```no_run
/// use courier_shm::Client;
/// use std::time::Duration;
///
/// let client: Client<u64, u64, u32> = Client::connect("doubler", Duration::from_secs(5))?;
/// assert_eq!(client.req(21), Ok(42));
/// let pending = client.req_async(2)?;
/// assert_eq!(pending.wait_timeout(Duration::from_secs(1)), Ok(4));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Client<Rq, Rp, E> {
    shared: Arc<ClientShared>,
    _types: PhantomData<fn(Rq) -> (Rp, E)>,
}

impl<Rq, Rp, E> Clone for Client<Rq, Rp, E> {
    fn clone(&self) -> Self {
        Client {
            shared: Arc::clone(&self.shared),
            _types: PhantomData,
        }
    }
}

impl<Rq, Rp, E> std::fmt::Debug for Client<Rq, Rp, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server_pid", &self.shared.conn.server.pid)
            .field("connected", &!self.shared.conn.dead())
            .finish()
    }
}

impl<Rq: Wire, Rp: Wire, E: Wire> Client<Rq, Rp, E> {
    /// Connects to the server of `name`, waiting up to `timeout` for the name to appear
    /// (a server that starts later is found) and for the handshake.
    ///
    /// # Errors
    ///
    /// [`ShmError::InvalidName`], [`ShmError::Timeout`], [`ShmError::PermissionDenied`],
    /// [`ShmError::BadSegment`] / [`ShmError::Corrupt`] / [`ShmError::Handshake`] if the
    /// server's segment or messages are not valid, [`ShmError::Io`].
    pub fn connect(name: &str, timeout: Duration) -> Result<Self, ShmError> {
        Ok(Client {
            shared: Arc::new(ClientShared {
                conn: Conn::connect(name, timeout)?,
            }),
            _types: PhantomData,
        })
    }

    /// The server's process id (from the kernel, at connection time).
    pub fn server_pid(&self) -> u32 {
        self.shared.conn.server.pid as u32
    }

    /// Whether the server is still there, as far as this process knows.
    pub fn is_connected(&self) -> bool {
        !self.shared.conn.dead()
    }

    fn start_call(
        &self,
        k: u32,
        flags: u32,
        args: [u64; 4],
        rq: Rq,
        deadline: Option<Instant>,
    ) -> Result<Call, Error<E>> {
        self.shared
            .conn
            .start(
                (k, 0, flags, args),
                |out| rq.encode(out).map(|n| (n, Rq::SIGNATURE)),
                deadline,
            )
            .map_err(widen)
    }

    fn call_until(
        &self,
        k: u32,
        args: [u64; 4],
        rq: Rq,
        deadline: Option<Instant>,
    ) -> Result<Rp, Error<E>> {
        let call = self.start_call(k, 0, args, rq, deadline)?;
        call.settle(deadline).map_err(widen)?.take()
    }

    /// Sends `rq` and waits for the reply.
    ///
    /// # Errors
    ///
    /// [`Error::ServerDisappeared`], [`Error::NoReply`], [`Error::App`],
    /// [`Error::TooLarge`] (the request does not fit a slot: not sent), [`Error::Protocol`].
    pub fn req(&self, rq: Rq) -> Result<Rp, Error<E>> {
        self.call_until(kind::CALL, [0; 4], rq, None)
    }

    /// As [`Client::req`], giving up after `timeout` (waiting for a free slot included): the
    /// request is withdrawn if the server has not taken it, or the server is told.
    ///
    /// # Errors
    ///
    /// As [`Client::req`], and [`Error::Timeout`].
    pub fn req_timeout(&self, rq: Rq, timeout: Duration) -> Result<Rp, Error<E>> {
        self.call_until(kind::CALL, [0; 4], rq, Some(Instant::now() + timeout))
    }

    /// Sends `rq` and returns at once; the reply is waited for with the [`WaitReply`].
    ///
    /// # Errors
    ///
    /// [`Error::ServerDisappeared`], [`Error::TooLarge`].
    pub fn req_async(&self, rq: Rq) -> Result<WaitReply<Rp, E>, Error<E>> {
        Ok(WaitReply {
            call: Some(self.start_call(kind::CALL, 0, [0; 4], rq, None)?),
            _client: Arc::clone(&self.shared),
            _types: PhantomData,
        })
    }

    /// Sends `rq` and awaits the reply, on any executor. Dropping the future cancels the
    /// call. Waiting for a free slot (all `slots` in flight) blocks the thread briefly.
    ///
    /// # Errors
    ///
    /// As [`Client::req`].
    pub async fn areq(&self, rq: Rq) -> Result<Rp, Error<E>> {
        let call = self.start_call(kind::CALL, F_ASYNC, [0; 4], rq, None)?;
        CallFuture {
            call: Some(call),
            spun: false,
            _types: PhantomData::<fn() -> (Rp, E)>,
        }
        .await
    }

    /// Sends `rq` one-way: the server's reply is discarded
    /// ([`ReplyContext::is_one_way`](crate::ReplyContext::is_one_way)). Returns once the
    /// request is queued.
    ///
    /// # Errors
    ///
    /// [`Error::ServerDisappeared`], [`Error::TooLarge`].
    pub fn send(&self, rq: Rq) -> Result<(), Error<E>> {
        self.shared
            .conn
            .post(
                (kind::SEND, 0, 0, [0; 4]),
                |out| rq.encode(out).map(|n| (n, Rq::SIGNATURE)),
                None,
            )
            .map_err(widen)
    }

    /// Lends `buf` with `rq`: the server reads it in place
    /// ([`ReplyContext::lent`](crate::ReplyContext::lent)); returns the reply.
    ///
    /// # Errors
    ///
    /// As [`Client::req`]; [`Error::TooLarge`] if the buffer is larger than the server's
    /// `max_lend`; [`Error::Protocol`] if the buffer is already lent mutably.
    pub fn lend(&self, rq: Rq, buf: &ShmBuf) -> Result<Rp, Error<E>> {
        self.lend_until(rq, buf, false, None)
    }

    /// As [`Client::lend`], giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Client::lend`], and [`Error::Timeout`].
    pub fn lend_timeout(&self, rq: Rq, buf: &ShmBuf, timeout: Duration) -> Result<Rp, Error<E>> {
        self.lend_until(rq, buf, false, Some(Instant::now() + timeout))
    }

    /// Lends `buf` mutably with `rq`: the server writes it in place
    /// ([`ReplyContext::lent_mut`](crate::ReplyContext::lent_mut)) and this call returns
    /// once it has answered, with the bytes as it left them. No byte of the buffer is copied.
    ///
    /// # Errors
    ///
    /// As [`Client::lend`].
    pub fn lend_mut(&self, rq: Rq, buf: &mut ShmBuf) -> Result<Rp, Error<E>> {
        self.lend_until(rq, buf, true, None)
    }

    /// As [`Client::lend_mut`], giving up after `timeout`. If the server still holds the
    /// buffer then, `buf` is given fresh pages holding a copy of its bytes, so the server's
    /// late writes never reach it.
    ///
    /// # Errors
    ///
    /// As [`Client::lend`], and [`Error::Timeout`].
    pub fn lend_mut_timeout(
        &self,
        rq: Rq,
        buf: &mut ShmBuf,
        timeout: Duration,
    ) -> Result<Rp, Error<E>> {
        let r = self.lend_until(rq, buf, true, Some(Instant::now() + timeout));
        if matches!(r, Err(Error::Timeout)) {
            // The server may still write the old pages; see `lend_until`.
            buf.detach().map_err(|_| Error::Timeout)?;
        }
        r
    }

    fn lend_until(
        &self,
        rq: Rq,
        buf: &ShmBuf,
        exclusive: bool,
        deadline: Option<Instant>,
    ) -> Result<Rp, Error<E>> {
        let conn = &self.shared.conn;
        conn.register(buf).map_err(widen)?;
        let k = if exclusive {
            kind::LEND_MUT
        } else {
            kind::LEND
        };
        let call = self.start_call(k, 0, [buf.id(), buf.len() as u64, 0, 0], rq, deadline)?;
        // Answered, even just after the deadline: the lend is back.
        let r = call.settle(deadline).map_err(widen)?.take();
        if matches!(r, Err(Error::LimitReached | Error::TooLarge)) {
            // The server may have refused the registration: send it again next time (a
            // server that kept it ignores the copy).
            lock(&conn.registered).remove(&buf.id());
        }
        r
    }

    /// Sends a one-way scalar message: an opcode and four words, no payload.
    ///
    /// # Errors
    ///
    /// [`Error::ServerDisappeared`].
    pub fn scalar(&self, op: u32, args: [u64; 4]) -> Result<(), Error<E>> {
        self.shared
            .conn
            .post((kind::SCALAR, op, 0, args), |_| Some((0, 0)), None)
            .map_err(widen)
    }

    /// Sends a scalar message and waits for its two-word reply.
    ///
    /// # Errors
    ///
    /// [`Error::ServerDisappeared`], [`Error::NoReply`] (the server dropped it unanswered).
    pub fn blocking_scalar(&self, op: u32, args: [u64; 4]) -> Result<[u64; 2], Error<E>> {
        self.scalar_until(op, args, None)
    }

    /// As [`Client::blocking_scalar`], giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Client::blocking_scalar`], and [`Error::Timeout`].
    pub fn blocking_scalar_timeout(
        &self,
        op: u32,
        args: [u64; 4],
        timeout: Duration,
    ) -> Result<[u64; 2], Error<E>> {
        self.scalar_until(op, args, Some(Instant::now() + timeout))
    }

    fn scalar_until(
        &self,
        op: u32,
        args: [u64; 4],
        deadline: Option<Instant>,
    ) -> Result<[u64; 2], Error<E>> {
        let call = self
            .shared
            .conn
            .start(
                (kind::BLOCKING_SCALAR, op, 0, args),
                |_| Some((0, 0)),
                deadline,
            )
            .map_err(widen)?;
        call.settle(deadline)
            .and_then(Call::take_words)
            .map_err(widen)
    }

    /// Subscribes with `rq`: the server gets a [`Notifier`](crate::Notifier) and pushes
    /// values whenever it likes; they arrive, in order, on the returned [`Subscription`].
    ///
    /// # Errors
    ///
    /// As [`Client::req`].
    pub fn subscribe(&self, rq: Rq) -> Result<Subscription, Error<E>> {
        let conn = &self.shared.conn;
        let id = conn.next_sub.fetch_add(1, Ordering::Relaxed);
        lock(&conn.push).queues.insert(id, SubQueue::default());
        let r = self
            .start_call(kind::SUBSCRIBE, 0, [u64::from(id), 0, 0, 0], rq, None)
            .and_then(|call| call.settle(None).and_then(Call::take_words).map_err(widen));
        match r {
            Ok(_) => Ok(Subscription {
                shared: Arc::clone(&self.shared),
                id,
            }),
            Err(e) => {
                lock(&conn.push).queues.remove(&id);
                Err(e)
            }
        }
    }
}

/// The future of [`Client::areq`] and [`WaitReply::wait_async`].
///
/// Its first poll spins briefly (as a blocking wait does) before it hands the wait to the
/// client's bell thread: a reply that comes within a few microseconds costs no thread hop.
struct CallFuture<Rp, E> {
    call: Option<Call>,
    spun: bool,
    _types: PhantomData<fn() -> (Rp, E)>,
}

impl<Rp: Wire, E: Wire> Future for CallFuture<Rp, E> {
    type Output = Result<Rp, Error<E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.spun {
            self.spun = true;
            if let Some(call) = self.call.as_ref() {
                for _ in 0..ASYNC_SPINS {
                    if call.is_done() {
                        break;
                    }
                    std::hint::spin_loop();
                }
            }
        }
        let Some(call) = self.call.as_ref() else {
            return Poll::Ready(Err(Error::Protocol));
        };
        match call.poll_done(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                let call = self.call.take().expect("checked above");
                Poll::Ready(call.take())
            }
            Poll::Ready(Err(e)) => {
                self.call = None;
                Poll::Ready(Err(widen(e)))
            }
        }
    }
}

/// A call started with [`Client::req_async`]: wait for it now or later, blocking or async,
/// or cancel it. Dropping it cancels the call.
pub struct WaitReply<Rp, E> {
    call: Option<Call>,
    _client: Arc<ClientShared>,
    _types: PhantomData<fn() -> (Rp, E)>,
}

impl<Rp, E> std::fmt::Debug for WaitReply<Rp, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitReply")
            .field("slot", &self.call.as_ref().map(|c| c.slot))
            .finish()
    }
}

impl<Rp: Wire, E: Wire> WaitReply<Rp, E> {
    fn call(&mut self) -> Call {
        self.call
            .take()
            .expect("a WaitReply holds its call until consumed")
    }

    /// Waits for the reply.
    ///
    /// # Errors
    ///
    /// As [`Client::req`].
    pub fn wait(mut self) -> Result<Rp, Error<E>> {
        self.call().settle(None).map_err(widen)?.take()
    }

    /// Waits at most `timeout`; then the call is canceled.
    ///
    /// # Errors
    ///
    /// As [`Client::req_timeout`].
    pub fn wait_timeout(mut self, timeout: Duration) -> Result<Rp, Error<E>> {
        self.call()
            .settle(Some(Instant::now() + timeout))
            .map_err(widen)?
            .take()
    }

    /// Awaits the reply, on any executor.
    ///
    /// # Errors
    ///
    /// As [`Client::req`].
    pub async fn wait_async(mut self) -> Result<Rp, Error<E>> {
        CallFuture {
            call: Some(self.call()),
            spun: false,
            _types: PhantomData::<fn() -> (Rp, E)>,
        }
        .await
    }

    /// Whether the reply is there (a `wait` would not block).
    pub fn is_ready(&self) -> bool {
        self.call.as_ref().is_some_and(Call::is_done)
    }

    /// Cancels the call and says how far it had got.
    pub fn cancel(mut self) -> CancelOutcome<Rp, E> {
        let mut call = self.call();
        match call.cancel() {
            Canceled::Withdrawn => CancelOutcome::Withdrawn,
            Canceled::Signaled => CancelOutcome::Signaled,
            Canceled::Done => CancelOutcome::Completed(call.take()),
            Canceled::Dead => CancelOutcome::Completed(Err(Error::ServerDisappeared)),
        }
    }
}

/// The client's end of a subscription ([`Client::subscribe`]): the values the server pushes,
/// in order. Dropping it unsubscribes (the server's
/// [`Notifier::push`](crate::Notifier::push) then fails with `Unsubscribed`).
///
/// A receive ends with [`Error::NoReply`] once the server dropped its `Notifier` and every
/// value before was received, and with [`Error::ServerDisappeared`] if the server is gone.
pub struct Subscription {
    shared: Arc<ClientShared>,
    id: u32,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish()
    }
}

impl Subscription {
    /// The next value if one is there.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] if the value is not a `T`; [`Error::NoReply`] /
    /// [`Error::ServerDisappeared`] when the subscription has ended.
    pub fn try_recv<T: Wire>(&self) -> Result<Option<T>, Error<()>> {
        let conn = &self.shared.conn;
        let mut push = lock(&conn.push);
        conn.drain_push(&mut push);
        if push.broken {
            return Err(Error::Protocol);
        }
        let q = push.queues.entry(self.id).or_default();
        if let Some((sig, bytes)) = q.items.pop_front() {
            if sig != T::SIGNATURE {
                return Err(Error::Protocol);
            }
            return T::decode(&ShmView::from_private(&bytes))
                .map(Some)
                .ok_or(Error::Protocol);
        }
        if q.ended {
            return Err(Error::NoReply);
        }
        if conn.dead() {
            return Err(Error::ServerDisappeared);
        }
        Ok(None)
    }

    /// Waits for the next value.
    ///
    /// # Errors
    ///
    /// As [`Subscription::try_recv`].
    pub fn recv<T: Wire>(&self) -> Result<T, Error<()>> {
        self.recv_until(None)
    }

    /// Waits at most `timeout` for the next value.
    ///
    /// # Errors
    ///
    /// As [`Subscription::try_recv`], and [`Error::Timeout`].
    pub fn recv_timeout<T: Wire>(&self, timeout: Duration) -> Result<T, Error<()>> {
        self.recv_until(Some(Instant::now() + timeout))
    }

    fn recv_until<T: Wire>(&self, deadline: Option<Instant>) -> Result<T, Error<()>> {
        let conn = &self.shared.conn;
        let sh = &conn.sh;
        loop {
            if let Some(v) = self.try_recv()? {
                return Ok(v);
            }
            let timeout = left(deadline)?;
            sh.u32(CBELL_WAIT).store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let seen = sh.u32(CBELL).load(Ordering::SeqCst);
            if conn.push_pending() {
                continue;
            }
            conn.watch.shared.counted(|| {
                if !conn.dead() {
                    sys::futex_wait(sh.u32(CBELL), seen, timeout);
                }
            });
        }
    }

    /// Awaits the next value, on any executor.
    ///
    /// # Errors
    ///
    /// As [`Subscription::try_recv`].
    pub async fn recv_async<T: Wire>(&self) -> Result<T, Error<()>> {
        std::future::poll_fn(|cx| {
            if let Some(v) = self.try_recv()? {
                return Poll::Ready(Ok(v));
            }
            let conn = &self.shared.conn;
            conn.ensure_reactor();
            lock(&conn.push_wakers).push(cx.waker().clone());
            // The reactor wakes on every ring of the bell; look once more after registering.
            if conn.push_pending() || conn.dead() {
                if let Some(v) = self.try_recv()? {
                    return Poll::Ready(Ok(v));
                }
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let conn = &self.shared.conn;
        let was = lock(&conn.push).queues.remove(&self.id);
        if was.is_some_and(|q| !q.ended) && !conn.dead() {
            let _ = conn.post(
                (kind::UNSUBSCRIBE, 0, 0, [u64::from(self.id), 0, 0, 0]),
                |_| Some((0, 0)),
                Some(Instant::now() + Duration::from_millis(100)),
            );
        }
    }
}
