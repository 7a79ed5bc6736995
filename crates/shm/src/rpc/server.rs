//! The server side: [`Server`], what it receives ([`Incoming`]) and how it answers
//! ([`ReplyContext`], [`ScalarCall`], [`Notifier`]).

use super::layout::{
    kind, status, write_header, Layout, Shared, CBELL, CBELL_WAIT, F_ASYNC, PUSH_DATA, PUSH_END,
    PUSH_HEAD, PUSH_TAIL, P_KIND, P_LEN, P_SIG, P_SUB, REQ_HEAD, REQ_TAIL, SRV_CLOSED, SRV_SLEEP,
    S_ARGS, S_FLAGS, S_KIND, S_LEN, S_OP, S_RARGS, S_RLEN, S_RSIG, S_SIG, S_STATUS,
};
use super::slot;
use super::stats::StatsFile;
use super::wire::Wire;
use super::{Error, BELL_HELLO, LEND_HELLO, LEND_OFFSET, MSG_LEN};
use crate::error::ShmError;
use crate::segment::{Segment, HEADER_LEN};
use crate::service::{Listener, ListenerConfig};
use crate::sync::{fence, AtomicBool, AtomicU64, Ordering};
use crate::sys::{self, Credentials};
use crate::view::{ShmView, ShmViewMut};
use crate::watch::Watch;
use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How many times an idle worker looks at every connection before it sleeps.
const SPINS: u32 = 2000;
/// The longest an idle worker sleeps before it looks again on its own: every sleep is
/// bounded, so no lost wake-up (a client that lies about its ring, say) lasts longer.
const MAX_SLEEP: Duration = Duration::from_millis(500);
/// How many wake-ups a worker reads from one connection at a time.
const KICKS_PER_WAKE: usize = 64;
/// The epoll key of the server's own wake-up (new connections, dead clients); a connection's
/// key is its id + 1.
const WAKE_KEY: u64 = 0;

/// How a [`Server`] sets up the connections of its clients.
///
/// ```
/// use courier_shm::ServerConfig;
/// let config = ServerConfig::new().slots(128).slot_size(16 * 1024).allow_uid(1000);
/// # let _ = config;
/// ```
#[derive(Debug, Clone)]
pub struct ServerConfig {
    slots: usize,
    slot_size: usize,
    push_depth: usize,
    push_size: usize,
    max_lend: usize,
    limits: Limits,
    listener: ListenerConfig,
}

/// What one client, and all of them together, may make the server hold.
#[derive(Debug, Clone, Copy)]
struct Limits {
    clients: usize,
    lends_per_client: usize,
    lend_bytes_per_client: u64,
    lends: usize,
    lend_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            slots: 64,
            slot_size: 4096,
            push_depth: 64,
            push_size: 256,
            max_lend: 1 << 30,
            limits: Limits {
                clients: 128,
                lends_per_client: 256,
                lend_bytes_per_client: 16 << 30,
                lends: 4096,
                lend_bytes: 64 << 30,
            },
            listener: ListenerConfig::new(),
        }
    }
}

impl ServerConfig {
    /// The defaults: 64 call slots of 4 KiB per client, 64 pushes of up to 256 bytes in flight
    /// per client, lends up to 1 GiB, clients of this user only.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many calls one client process may have in flight at once (1..=4096).
    pub fn slots(mut self, n: usize) -> Self {
        self.slots = n;
        self
    }

    /// The largest request, reply or application error, in bytes (up to 64 MiB; rounded up
    /// to 64). Larger payloads travel by lend.
    pub fn slot_size(mut self, bytes: usize) -> Self {
        self.slot_size = bytes;
        self
    }

    /// How many pushes may wait for one client before [`Notifier::push`] reports
    /// [`PushError::Full`].
    pub fn push_depth(mut self, n: usize) -> Self {
        self.push_depth = n;
        self
    }

    /// The largest push, in bytes.
    pub fn push_size(mut self, bytes: usize) -> Self {
        self.push_size = bytes;
        self
    }

    /// The largest buffer a client may lend (bigger ones fail with [`Error::TooLarge`],
    /// checked when the buffer is first lent and at every lend).
    pub fn max_lend(mut self, bytes: usize) -> Self {
        self.max_lend = bytes;
        self
    }

    /// How many client processes may be connected at once (default 128). A client beyond it
    /// is refused at connect ([`ShmError::ServerFull`]). Each connection costs the server
    /// about four descriptors, a watcher thread and a mapping of its segment, so the
    /// default stays within a default limit of 1,024 descriptors.
    pub fn max_clients(mut self, n: usize) -> Self {
        self.limits.clients = n;
        self
    }

    /// How many distinct buffers one client may have registered for lending at once
    /// (default 256); a lend of one more fails with [`Error::LimitReached`] until the client
    /// drops some. The server keeps a mapping, and no descriptor, per buffer.
    pub fn max_lends_per_client(mut self, n: usize) -> Self {
        self.limits.lends_per_client = n;
        self
    }

    /// How many bytes of registered buffers one client may have at once (default 16 GiB of
    /// address space; the pages are the client's).
    pub fn max_lend_bytes_per_client(mut self, bytes: u64) -> Self {
        self.limits.lend_bytes_per_client = bytes;
        self
    }

    /// How many lent buffers all clients together may have registered (default 4,096
    /// mappings, well within the kernel's default `vm.max_map_count`).
    pub fn max_lends(mut self, n: usize) -> Self {
        self.limits.lends = n;
        self
    }

    /// How many bytes of lent buffers all clients together may have registered (default
    /// 64 GiB of address space).
    pub fn max_lend_bytes(mut self, bytes: u64) -> Self {
        self.limits.lend_bytes = bytes;
        self
    }

    /// Also admits clients running as `uid` (by default only this process's user).
    pub fn allow_uid(mut self, uid: u32) -> Self {
        self.listener = self.listener.allow_uid(uid);
        self
    }

    /// Also admits clients whose primary group is `gid`.
    pub fn allow_gid(mut self, gid: u32) -> Self {
        self.listener = self.listener.allow_gid(gid);
        self
    }

    fn layout(&self) -> Result<Layout, ShmError> {
        Layout::new(self.slots, self.slot_size, self.push_depth, self.push_size).ok_or(
            ShmError::InvalidConfig("slots, slot size, push depth or push size out of range"),
        )
    }
}

/// What the server's counters say (see also [`services`](crate::services) for other
/// processes' services).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerStats {
    /// The server's process id.
    pub pid: u32,
    /// Connected client processes.
    pub clients: u64,
    /// Calls queued by clients and not yet taken by a worker.
    pub queued: u64,
    /// Calls taken and not yet answered (deferred replies included).
    pub in_service: u64,
    /// Lent buffers currently held by the server (in calls not yet answered).
    pub lends: u64,
    /// Calls answered since the server started.
    pub served: u64,
}

/// One message a worker received.
#[derive(Debug)]
pub enum Incoming<Rq, Rp, E> {
    /// A call: `req`, `req_timeout`, `areq`, `req_async`, `send` (one-way:
    /// [`ReplyContext::is_one_way`]), `lend` or `lend_mut` ([`ReplyContext::lent`]).
    Call(Rq, ReplyContext<Rp, E>),
    /// A scalar message: `scalar` (one-way) or `blocking_scalar`.
    Scalar(ScalarCall),
    /// A subscription (`subscribe`): keep the [`Notifier`] and push whenever you like.
    Subscribe(Rq, Notifier),
}

/// A named service that client processes connect to ([`Client`](crate::Client)).
///
/// Cloning gives another handle to the same service, typically for another worker thread:
/// every handle's [`wait`](Server::wait) takes the next call of any client. The service ends
/// when the last handle is dropped: calls no worker has taken fail with
/// [`Error::ServerDisappeared`] at once, calls taken and not yet answered can still be
/// answered, and the name is freed.
///
/// A named service never reports [`Error::ClientsDisappeared`]: new clients may always come.
/// A worker blocked in `wait` with nothing to do uses no CPU (a short spin, then a futex).
///
/// # Examples
///
/// ```no_run
/// use courier_shm::{Incoming, Server, ServerConfig};
///
/// let server: Server<u64, u64, u32> = Server::bind("doubler", ServerConfig::new())?;
/// loop {
///     match server.wait()? {
///         Incoming::Call(n, ctx) if n > u64::MAX / 2 => { let _ = ctx.fail(1); }
///         Incoming::Call(n, ctx) => { let _ = ctx.reply(2 * n); }
///         Incoming::Scalar(call) => {
///             let x = call.args()[0];
///             let _ = call.reply([x.wrapping_mul(2), 0]);
///         }
///         Incoming::Subscribe(_, notifier) => drop(notifier),
///     }
/// }
/// # Ok::<(), courier_shm::ShmError>(())
/// ```
pub struct Server<Rq, Rp, E> {
    shared: Arc<ServerShared>,
    _types: PhantomData<fn(Rq) -> (Rp, E)>,
}

impl<Rq, Rp, E> Clone for Server<Rq, Rp, E> {
    fn clone(&self) -> Self {
        Server {
            shared: Arc::clone(&self.shared),
            _types: PhantomData,
        }
    }
}

impl<Rq, Rp, E> std::fmt::Debug for Server<Rq, Rp, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.shared.core.name)
            .finish_non_exhaustive()
    }
}

/// The handles' shared part: stops the accept thread and fails untaken calls on drop.
struct ServerShared {
    core: Arc<Core>,
    stop: OwnedFd,
    accept: Option<JoinHandle<()>>,
}

/// What the accept thread, the workers and the connections' watchers share.
struct Core {
    name: String,
    lay: Layout,
    max_lend: usize,
    limits: Limits,
    /// Lent buffers registered by all clients: (count, bytes).
    lend_totals: Mutex<(usize, u64)>,
    poller: Poller,
    conns: RwLock<Vec<Arc<Conn>>>,
    /// How many workers sleep (written to every connection's `srv_sleep`); the lock orders
    /// those writes, so a connection never shows a stale zero.
    sleeping: Mutex<u32>,
    /// Round-robin start for the next poll.
    next: AtomicU64,
    counters: Arc<Counters>,
    stats: Option<StatsFile>,
    next_conn: AtomicU64,
}

impl<Rq: Wire, Rp: Wire, E: Wire> Server<Rq, Rp, E> {
    /// Takes the service name `name` (see [`Listener::bind`]) and starts accepting clients.
    ///
    /// # Errors
    ///
    /// [`ShmError::InvalidName`], [`ShmError::InvalidConfig`], [`ShmError::NameInUse`] if a
    /// live server owns the name, the runtime directory's errors, [`ShmError::Io`].
    pub fn bind(name: &str, config: ServerConfig) -> Result<Self, ShmError> {
        let lay = config.layout()?;
        let mut listener = Listener::bind(
            name,
            config.listener.clone().segment_size(HEADER_LEN + lay.total),
        )?;
        let poller = Poller::new()?;
        let stats = StatsFile::create(name).ok();
        if let Some(s) = &stats {
            // Removed while the name is still ours, never a later server's file.
            listener.remove_on_drop(s.path().to_owned());
        }
        let core = Arc::new(Core {
            name: name.to_owned(),
            lay,
            max_lend: config.max_lend,
            limits: config.limits,
            lend_totals: Mutex::new((0, 0)),
            poller,
            conns: RwLock::new(Vec::new()),
            sleeping: Mutex::new(0),
            next: AtomicU64::new(0),
            counters: Arc::new(Counters::default()),
            stats,
            next_conn: AtomicU64::new(0),
        });
        core.publish_stats();
        let stop = sys::eventfd().map_err(ShmError::io("creating the accept thread's eventfd"))?;
        let stop_theirs = stop
            .try_clone()
            .map_err(ShmError::io("duplicating an eventfd"))?;
        let theirs = Arc::clone(&core);
        let accept = std::thread::Builder::new()
            .name(format!("courier-accept-{name}"))
            .spawn(move || accept_loop(&theirs, &listener, &stop_theirs))
            .map_err(ShmError::io("starting the accept thread"))?;
        Ok(Server {
            shared: Arc::new(ServerShared {
                core,
                stop,
                accept: Some(accept),
            }),
            _types: PhantomData,
        })
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.shared.core.name
    }

    /// The service's counters now.
    pub fn stats(&self) -> ServerStats {
        self.shared.core.stats()
    }

    /// Waits for the next message from any client.
    ///
    /// # Errors
    ///
    /// None today besides [`ShmError::Io`]-class failures of the system; the result type
    /// leaves room for them.
    pub fn wait(&self) -> Result<Incoming<Rq, Rp, E>, ShmError> {
        self.wait_until(None)
    }

    /// As [`Server::wait`], for at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`ShmError::Timeout`] if nothing came.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Incoming<Rq, Rp, E>, ShmError> {
        self.wait_until(Some(Instant::now() + timeout))
    }

    /// Takes the next message if one is queued.
    ///
    /// # Errors
    ///
    /// None today; see [`Server::wait`].
    pub fn try_pop(&self) -> Result<Option<Incoming<Rq, Rp, E>>, ShmError> {
        Ok(self.poll_once())
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<Incoming<Rq, Rp, E>, ShmError> {
        let core = &self.shared.core;
        // Whether the last wake-up found nothing to do: then the next sleep comes at once,
        // without the spin, so a client that only sends wake-ups keeps no worker spinning.
        let mut idle_wake = false;
        let mut keys = Vec::new();
        loop {
            let spins = if idle_wake { 1 } else { SPINS };
            for i in 0..spins {
                if let Some(m) = self.poll_once() {
                    return Ok(m);
                }
                if i % 64 == 63 {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(ShmError::Timeout);
                    }
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            // Going idle: a good time to record the counters for `courier ls` (not after the
            // wake-up, which is the next call's critical path).
            core.publish_stats();
            // Sleep: announce it in every connection, then look once more (see "Waking" in
            // the module docs).
            core.set_sleeping(1);
            fence(Ordering::SeqCst);
            if let Some(m) = self.poll_once() {
                core.set_sleeping(-1);
                return Ok(m);
            }
            let left = match deadline {
                None => MAX_SLEEP,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(MAX_SLEEP),
                    _ => {
                        core.set_sleeping(-1);
                        return Err(ShmError::Timeout);
                    }
                },
            };
            let slept = core.poller.wait(&mut keys, left);
            core.set_sleeping(-1);
            slept.map_err(ShmError::io("waiting for calls"))?;
            core.take_wakeups(&keys);
            if let Some(m) = self.poll_once() {
                return Ok(m);
            }
            idle_wake = true;
        }
    }

    /// One round over the connections: the first message found, already turned into an
    /// [`Incoming`] (messages the transport handles itself are handled and skipped, at most
    /// `slots` of them per connection per round, so a client that re-queues them as fast as
    /// they are settled cannot hold the worker here).
    fn poll_once(&self) -> Option<Incoming<Rq, Rp, E>> {
        let core = &self.shared.core;
        let conns = core.conns.read().unwrap_or_else(|p| p.into_inner());
        let n = conns.len();
        if n == 0 {
            return None;
        }
        let start = core.next.fetch_add(1, Ordering::Relaxed) as usize;
        let mut finished = false;
        for k in 0..n {
            let conn = &conns[(start + k) % n];
            conn.flush_ends();
            for _ in 0..core.lay.slots {
                let Some(slot) = conn.pop() else { break };
                if let Some(m) = self.incoming(Arc::clone(conn), slot) {
                    return Some(m);
                }
            }
            finished |= conn.finished();
        }
        drop(conns);
        if finished {
            core.forget_finished();
        }
        None
    }

    /// Turns taken slot `slot` of `conn` into an [`Incoming`], or handles it here.
    fn incoming(&self, conn: Arc<Conn>, slot: usize) -> Option<Incoming<Rq, Rp, E>> {
        let core = &self.shared.core;
        let sh = &Arc::clone(&conn).sh;
        let rec = sh.lay.rec(slot);
        // Read every field once; the client may change them afterwards.
        let kind = sh.u32(rec + S_KIND).load(Ordering::Relaxed);
        let op = sh.u32(rec + S_OP).load(Ordering::Relaxed);
        let flags = sh.u32(rec + S_FLAGS).load(Ordering::Relaxed);
        let len = sh.u32(rec + S_LEN).load(Ordering::Relaxed) as usize;
        let sig = sh.u64(rec + S_SIG).load(Ordering::Relaxed);
        let args: [u64; 4] =
            std::array::from_fn(|i| sh.u64(rec + S_ARGS + 8 * i).load(Ordering::Relaxed));
        let slot_ref = SlotRef {
            conn,
            slot,
            flags,
            done: false,
        };
        let decode = |slot_ref: &SlotRef| -> Option<Rq> {
            if sig != Rq::SIGNATURE || len > sh.lay.slot_size {
                return None;
            }
            Rq::decode(&slot_ref.conn.sh.data(slot, len))
        };
        match kind {
            kind::CALL | kind::SEND | kind::LEND | kind::LEND_MUT => {
                let Some(rq) = decode(&slot_ref) else {
                    slot_ref.settle(status::PROTOCOL);
                    return None;
                };
                let lent = if kind == kind::LEND || kind == kind::LEND_MUT {
                    match slot_ref
                        .conn
                        .take_lend(core, args[0], args[1], kind == kind::LEND_MUT)
                    {
                        Ok(l) => Some(l),
                        Err(st) => {
                            slot_ref.settle(st);
                            return None;
                        }
                    }
                } else {
                    None
                };
                Some(Incoming::Call(
                    rq,
                    ReplyContext {
                        slot: slot_ref,
                        one_way: kind == kind::SEND,
                        lent,
                        _types: PhantomData,
                    },
                ))
            }
            kind::SCALAR | kind::BLOCKING_SCALAR => Some(Incoming::Scalar(ScalarCall {
                slot: slot_ref,
                op,
                args,
                blocking: kind == kind::BLOCKING_SCALAR,
            })),
            kind::SUBSCRIBE => {
                let Some(rq) = decode(&slot_ref) else {
                    slot_ref.settle(status::PROTOCOL);
                    return None;
                };
                let id = args[0] as u32;
                let fresh = slot_ref.conn.lock_subs().insert(id);
                let conn = Arc::clone(&slot_ref.conn);
                if !fresh {
                    slot_ref.settle(status::PROTOCOL);
                    return None;
                }
                slot_ref.settle(status::OK);
                Some(Incoming::Subscribe(rq, Notifier { conn, id }))
            }
            kind::UNSUBSCRIBE => {
                slot_ref.conn.lock_subs().remove(&(args[0] as u32));
                slot_ref.settle(status::OK);
                None
            }
            kind::FREE_BUF => {
                slot_ref.conn.free_buffer(core, args[0]);
                slot_ref.settle(status::OK);
                None
            }
            _ => {
                slot_ref.settle(status::PROTOCOL);
                None
            }
        }
    }
}

impl Drop for ServerShared {
    fn drop(&mut self) {
        if let Some(t) = self.accept.take() {
            if sys::eventfd_signal(self.stop.as_fd()).is_ok() {
                let _ = t.join();
            }
        }
        // Calls no worker took fail now; taken ones keep their connection (through their
        // contexts) and can still be answered.
        let conns =
            std::mem::take(&mut *self.core.conns.write().unwrap_or_else(|p| p.into_inner()));
        for conn in &conns {
            conn.sh.u32(SRV_CLOSED).store(1, Ordering::SeqCst);
            // At most one ring's worth: a client that queues again at once is not waited for
            // (it learns of the shutdown from `srv_closed` and the hang-up).
            for _ in 0..conn.sh.lay.slots {
                let Some(slot) = conn.pop() else { break };
                SlotRef {
                    conn: Arc::clone(conn),
                    slot,
                    flags: F_ASYNC,
                    done: false,
                }
                .settle(status::SERVER_GONE);
            }
        }
        drop(conns);
    }
}

impl Core {
    /// Adds `delta` to the sleeping workers and writes the count to every connection.
    fn set_sleeping(&self, delta: i32) {
        let mut n = self.sleeping.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_add_signed(delta);
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        for c in conns.iter() {
            c.sh.u32(SRV_SLEEP).store(*n, Ordering::SeqCst);
        }
    }

    /// Drops the connections of clients that are gone and whose last messages were taken.
    fn forget_finished(&self) {
        let gone: Vec<Arc<Conn>> = {
            let mut conns = self.conns.write().unwrap_or_else(|p| p.into_inner());
            let (gone, live) = std::mem::take(&mut *conns)
                .into_iter()
                .partition(|c| c.finished());
            *conns = live;
            gone
        };
        drop(gone); // outside the lock: joins the watcher threads
        self.publish_stats();
    }

    /// Wakes a sleeping worker (a new connection, a dead client to forget).
    fn ring(&self) {
        let _ = sys::eventfd_signal(self.poller.wake.as_fd());
    }

    /// Reads the wake-ups that ended a sleep (`keys` from [`Poller::wait`]), so that a
    /// level-triggered source does not end the next sleep too.
    fn take_wakeups(&self, keys: &[u64]) {
        if keys.is_empty() {
            return;
        }
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        for &key in keys {
            if key == WAKE_KEY {
                sys::drain(self.poller.wake.as_fd(), 1);
            } else if let Some(c) = conns.iter().find(|c| c.id + 1 == key) {
                sys::drain(c.kick.as_fd(), KICKS_PER_WAKE);
            }
        }
    }

    fn stats(&self) -> ServerStats {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        let queued = conns.iter().map(|c| c.queued()).sum();
        ServerStats {
            pid: std::process::id(),
            // A dead client's connection stays until its last messages are taken.
            clients: conns.iter().filter(|c| !c.gone()).count() as u64,
            queued,
            in_service: self.counters.in_service.load(Ordering::Relaxed),
            lends: self.counters.lends.load(Ordering::Relaxed),
            served: self.counters.served.load(Ordering::Relaxed),
        }
    }

    fn publish_stats(&self) {
        if let Some(f) = &self.stats {
            f.write(&self.stats());
        }
    }
}

/// The counters every connection updates.
#[derive(Debug, Default)]
struct Counters {
    served: AtomicU64,
    in_service: AtomicU64,
    lends: AtomicU64,
}

/// Where idle workers sleep: an epoll instance watching each connection's wake-up socket
/// and the server's own eventfd (see "Waking" in the module docs).
struct Poller {
    epoll: OwnedFd,
    wake: OwnedFd,
}

impl Poller {
    fn new() -> Result<Poller, ShmError> {
        let epoll = sys::epoll().map_err(ShmError::io("creating the workers' epoll"))?;
        let wake = sys::eventfd().map_err(ShmError::io("creating the workers' eventfd"))?;
        sys::set_nonblocking(wake.as_fd()).map_err(ShmError::io("setting up an eventfd"))?;
        sys::epoll_add(epoll.as_fd(), wake.as_fd(), WAKE_KEY)
            .map_err(ShmError::io("watching the workers' eventfd"))?;
        Ok(Poller { epoll, wake })
    }

    /// Sleeps until a wake-up or `timeout`; the keys of the sources that woke us go to `keys`.
    fn wait(&self, keys: &mut Vec<u64>, timeout: Duration) -> std::io::Result<()> {
        sys::epoll_wait(self.epoll.as_fd(), keys, timeout)
    }
}

/// The accept thread: takes clients until the server's drop signals `stop`. When the process
/// runs out of descriptors or memory it waits (10 ms, doubling up to 1 s) instead of retrying
/// at once, so a full descriptor table costs no CPU; a client beyond `max_clients` is told so.
fn accept_loop(core: &Arc<Core>, listener: &Listener, stop: &OwnedFd) {
    const BACKOFF_FIRST: Duration = Duration::from_millis(10);
    const BACKOFF_MAX: Duration = Duration::from_secs(1);
    let mut backoff = BACKOFF_FIRST;
    loop {
        match listener.wait_client(stop.as_fd()) {
            Ok(true) => {}
            Ok(false) | Err(_) => return,
        }
        let clients = core.conns.read().unwrap_or_else(|p| p.into_inner()).len();
        if clients >= core.limits.clients {
            let _ = listener.refuse_busy();
            continue;
        }
        let lay = core.lay;
        let started = listener
            .accept_with(Some(Instant::now() + Duration::from_secs(1)), |seg| {
                write_header(seg, &lay)
            })
            .and_then(|conn| {
                let (seg, sock, peer) = conn.into_parts();
                Conn::start(core, seg, sock, peer)
            });
        let c = match started {
            Ok(c) => c,
            Err(ShmError::Io { source, .. }) if sys::is_exhaustion(&source) => {
                // Out of descriptors or memory: the client stays in the backlog (or gives up);
                // look again after a pause, or at once if the server is stopping.
                if !matches!(
                    sys::wait_readable(stop.as_fd(), Some(Instant::now() + backoff)),
                    Ok(false)
                ) {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            Err(_) => continue, // refused or vanished client: the listener stays usable
        };
        backoff = BACKOFF_FIRST;
        core.conns
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&c));
        // Show the new connection how many workers sleep, then wake one: its first request
        // may have been queued before it was in the list.
        let n = *core.sleeping.lock().unwrap_or_else(|p| p.into_inner());
        c.sh.u32(SRV_SLEEP).store(n, Ordering::SeqCst);
        core.ring();
        core.publish_stats();
    }
}

/// One client process's connection, server side.
struct Conn {
    id: u64,
    sh: Shared,
    peer: Credentials,
    counters: Arc<Counters>,
    core: Weak<Core>,
    watch: Watch,
    /// Our copy of the connection socket: lent buffers' descriptors arrive on it.
    sock: Mutex<OwnedFd>,
    /// Our end of the connection's wake-up socket (the client sends a byte when a worker
    /// sleeps); watched by the workers' epoll.
    kick: OwnedFd,
    /// The consumer side of the request ring (the next index to read).
    head: Mutex<u64>,
    /// A copy of `head` for cheap looks.
    head_seen: AtomicU64,
    /// `head` when the client was seen dead (`u64::MAX` while it lives): its last messages
    /// are still taken, at most one ring's worth, whatever its counters say.
    head_at_death: AtomicU64,
    /// Which slots are taken and not yet completed (a client may not queue them again).
    in_service: Vec<AtomicBool>,
    lends: Mutex<Lends>,
    /// Live subscriptions.
    subs: Mutex<HashSet<u32>>,
    /// Subscriptions whose end could not be pushed yet (the ring was full): pushed before
    /// anything else, as soon as there is room.
    ends: Mutex<Vec<u32>>,
    has_ends: AtomicBool,
    /// The producer side of the push ring (the next record to write).
    push_tail: Mutex<u64>,
    /// The client broke the protocol: it was hung up on and its calls are ignored.
    broken: AtomicBool,
}

/// The buffers one client registered for lending.
///
/// A buffer is known by its file (device and inode, the same for every descriptor of one
/// memfd), so a client that registers one memfd under several ids gets one mapping with one
/// lend state: the server never hands out two writable views of the same pages.
#[derive(Default)]
struct Lends {
    files: HashMap<(u64, u64), Lendable>,
    /// The client's buffer ids, each naming a file.
    ids: HashMap<u64, (u64, u64)>,
    /// Ids whose registration was refused, and the status their lends get (until the
    /// client frees or registers them again).
    refused: HashMap<u64, u32>,
    /// Bytes of `files`.
    bytes: u64,
}

/// A buffer a client registered for lending.
struct Lendable {
    seg: Arc<Segment>,
    /// Shared lends in progress, or `u32::MAX` for an exclusive one.
    users: u32,
    /// Ids of the client that name this file.
    ids: u32,
}

impl Lendable {
    /// The usable bytes (the mapping past the header and the page before the data).
    fn capacity(seg: &Segment) -> u64 {
        (seg.len() - HEADER_LEN - LEND_OFFSET) as u64
    }
}

/// The largest registration refusals one client may have pending: older ones are forgotten
/// (their lends then fail with `Protocol` instead of `LimitReached`).
const MAX_REFUSED: usize = 1024;

impl Conn {
    fn start(
        core: &Arc<Core>,
        mut seg: Segment,
        sock: OwnedFd,
        peer: Credentials,
    ) -> Result<Arc<Conn>, ShmError> {
        // The client has the segment now; we keep only the mapping.
        seg.close_fd();
        let ours = sock
            .try_clone()
            .map_err(ShmError::io("duplicating the connection socket"))?;
        // The client's second handshake message: its end of the wake-up socket.
        let (kick, theirs) =
            sys::dgram_pair().map_err(ShmError::io("creating a wake-up socket"))?;
        // Our end only (the client's is another socket): workers read it without blocking.
        sys::set_nonblocking(kick.as_fd()).map_err(ShmError::io("setting up a wake-up socket"))?;
        sys::send_with_fd(sock.as_fd(), &BELL_HELLO, Some(theirs.as_fd()))
            .map_err(ShmError::io("sending the wake-up socket"))?;
        drop(theirs);
        let id = core.next_conn.fetch_add(1, Ordering::Relaxed);
        sys::epoll_add(core.poller.epoll.as_fd(), kick.as_fd(), id + 1)
            .map_err(ShmError::io("watching a wake-up socket"))?;
        let weak = Arc::downgrade(core);
        let slots = core.lay.slots;
        let watch = Watch::start(sock, {
            let weak = weak.clone();
            move || client_gone(&weak, id)
        })?;
        Ok(Arc::new(Conn {
            id,
            sh: Shared { seg, lay: core.lay },
            peer,
            counters: Arc::clone(&core.counters),
            core: weak,
            watch,
            sock: Mutex::new(ours),
            kick,
            head: Mutex::new(0),
            head_seen: AtomicU64::new(0),
            head_at_death: AtomicU64::new(u64::MAX),
            in_service: (0..slots).map(|_| AtomicBool::new(false)).collect(),
            lends: Mutex::new(Lends::default()),
            subs: Mutex::new(HashSet::new()),
            ends: Mutex::new(Vec::new()),
            has_ends: AtomicBool::new(false),
            push_tail: Mutex::new(0),
            broken: AtomicBool::new(false),
        }))
    }

    fn gone(&self) -> bool {
        self.watch.shared.is_dead() || self.broken.load(Ordering::Relaxed)
    }

    /// Whether the connection can be forgotten: the client broke the protocol (it was hung
    /// up on), or it is dead and its last messages were taken: none is queued, or a ring's
    /// worth was taken since its death (a dead client's counters are not waited on).
    fn finished(&self) -> bool {
        if self.broken.load(Ordering::Relaxed) {
            return true;
        }
        if !self.watch.shared.is_dead() {
            return false;
        }
        let seen = self.head_seen.load(Ordering::Relaxed);
        let at_death = match self.head_at_death.load(Ordering::Relaxed) {
            u64::MAX => {
                self.head_at_death.store(seen, Ordering::Relaxed);
                seen
            }
            h => h,
        };
        self.queued() == 0 || seen.wrapping_sub(at_death) >= self.sh.lay.slots as u64
    }

    fn lock_subs(&self) -> std::sync::MutexGuard<'_, HashSet<u32>> {
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_lends(&self) -> std::sync::MutexGuard<'_, Lends> {
        self.lends.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls queued and not taken, as far as the (untrusted) tail says.
    fn queued(&self) -> u64 {
        let tail = self.sh.u64(REQ_TAIL).load(Ordering::Relaxed);
        tail.saturating_sub(self.head_seen.load(Ordering::Relaxed))
            .min(self.sh.lay.slots as u64)
    }

    /// Takes the next queued slot: `QUEUED -> TAKEN`. A slot the client withdrew is
    /// completed here and skipped; a client that breaks the ring's rules is cut off.
    fn pop(&self) -> Option<usize> {
        // A dead client's messages are still taken (a one-way `send` just before its exit
        // is delivered); a broken one's are not.
        if self.broken.load(Ordering::Relaxed) {
            return None;
        }
        let seen = self.head_seen.load(Ordering::Relaxed);
        // Acquire: pairs with the client's Release store of the tail, so the ring entry and
        // the slot record it wrote before are visible.
        let tail = self.sh.u64(REQ_TAIL).load(Ordering::Acquire);
        if tail == seen {
            return None;
        }
        let mut head = self.head.try_lock().ok()?;
        // Again under the lock: the look above was only a hint, and another worker may have
        // taken entries past it since (a stale tail behind our head would look like a
        // broken ring).
        let tail = self.sh.u64(REQ_TAIL).load(Ordering::Acquire);
        loop {
            if *head == tail {
                return None;
            }
            if tail.wrapping_sub(*head) > self.sh.lay.slots as u64 {
                self.cut_off();
                return None;
            }
            let slot = self
                .sh
                .u32(self.sh.lay.ring(*head as usize % self.sh.lay.slots))
                .load(Ordering::Relaxed) as usize;
            *head += 1;
            self.head_seen.store(*head, Ordering::Relaxed);
            self.sh.u64(REQ_HEAD).store(*head, Ordering::Release);
            if slot >= self.sh.lay.slots || self.in_service[slot].swap(true, Ordering::AcqRel) {
                self.cut_off();
                return None;
            }
            let release = || self.in_service[slot].store(false, Ordering::Release);
            match slot::take(self.sh.state(slot), release) {
                slot::Take::Taken => {
                    self.counters.in_service.fetch_add(1, Ordering::Relaxed);
                    return Some(slot);
                }
                // Withdrawn before we took it: the slot is back with the client (tell a caller
                // waiting for a free slot: it may be this one); next.
                slot::Take::Withdrawn => self.ring_if_async(slot),
                slot::Take::Broken => {
                    self.cut_off();
                    return None;
                }
            }
        }
    }

    /// The client broke the protocol: ignore it from now on and hang up on it, so its
    /// process sees the server gone (every pending and later call fails with
    /// `ServerDisappeared`) and the connection is forgotten at once, whatever its ring
    /// counters say.
    fn cut_off(&self) {
        if !self.broken.swap(true, Ordering::Relaxed) {
            sys::shutdown(self.sock.lock().unwrap_or_else(|p| p.into_inner()).as_fd());
            // A worker forgets the connection (and its lends, in `Conn`'s drop) at once.
            if let Some(core) = self.core.upgrade() {
                core.ring();
            }
        }
    }

    /// Finds registered buffer `id` (reading registrations the client sent, if needed) and
    /// marks it lent, shared or exclusive. `len` is the length the client lends. `Err` is the
    /// status the call completes with.
    fn take_lend(&self, core: &Core, id: u64, len: u64, exclusive: bool) -> Result<Lent, u32> {
        if self.gone() {
            // A dead client's buffers are already unmapped; nobody waits for this call.
            return Err(status::NO_REPLY);
        }
        let mut lends = self.lock_lends();
        if !lends.ids.contains_key(&id) {
            self.read_registrations(core, &mut lends);
        }
        if let Some(&st) = lends.refused.get(&id) {
            return Err(st);
        }
        let file = *lends.ids.get(&id).ok_or(status::PROTOCOL)?;
        let entry = lends.files.get_mut(&file).ok_or(status::PROTOCOL)?;
        if len > Lendable::capacity(&entry.seg) {
            return Err(status::PROTOCOL);
        }
        if len > core.max_lend as u64 {
            return Err(status::TOO_LARGE);
        }
        match (exclusive, entry.users) {
            (_, u32::MAX) | (true, 1..) => return Err(status::PROTOCOL),
            (true, 0) => entry.users = u32::MAX,
            (false, n) => entry.users = n + 1,
        }
        self.counters.lends.fetch_add(1, Ordering::Relaxed);
        Ok(Lent {
            seg: Arc::clone(&entry.seg),
            file,
            len: len as usize,
            exclusive,
        })
    }

    /// Reads the buffer registrations waiting on the socket (the client sends one before it
    /// queues the first lend of a buffer, so it is there already); never blocks. A message
    /// that breaks the protocol cuts the client off; a registration refused for a limit or a
    /// resource of the server is remembered, and the lends of that buffer fail with the
    /// matching status (the client is not cut off: only its own calls fail).
    fn read_registrations(&self, core: &Core, lends: &mut Lends) {
        let sock = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        while let Ok(true) = sys::wait_readable(sock.as_fd(), Some(Instant::now())) {
            let mut msg = [0u8; MSG_LEN + 1];
            let (n, fd) = match sys::recv_with_fd(sock.as_fd(), &mut msg) {
                Ok(r) => r,
                // Out of descriptors: the message (and its descriptor) stays queued; this
                // lend fails as if refused, a later one reads it again.
                Err(e) if sys::is_exhaustion(&e) => return,
                Err(_) => return,
            };
            if n == 0 {
                return;
            }
            let (Some(fd), true) = (fd, n == MSG_LEN && msg[..8] == LEND_HELLO) else {
                drop(sock);
                self.cut_off();
                return;
            };
            let id = u64::from_le_bytes(msg[8..16].try_into().expect("8 bytes"));
            if lends.ids.contains_key(&id) {
                // Sent again (the client forgot a refused registration that a worker had
                // accepted meanwhile, say): the mapping we have stands.
                continue;
            }
            lends.refused.remove(&id);
            if let Err(st) = self.register(core, lends, id, fd) {
                if lends.refused.len() >= MAX_REFUSED {
                    lends.refused.clear();
                }
                lends.refused.insert(id, st);
            }
        }
    }

    /// Maps a buffer the client sent, within the limits, under `id`; `Err` is the status its
    /// lends get. The descriptor is closed once mapped.
    fn register(&self, core: &Core, lends: &mut Lends, id: u64, fd: OwnedFd) -> Result<(), u32> {
        let file = sys::file_id(fd.as_fd()).map_err(|_| status::PROTOCOL)?;
        if lends.files.contains_key(&file) {
            // Another id for a buffer already mapped: the same lend state.
            lends.ids.insert(id, file);
            if let Some(e) = lends.files.get_mut(&file) {
                e.ids += 1;
            }
            return Ok(());
        }
        let limits = &core.limits;
        if lends.files.len() >= limits.lends_per_client {
            return Err(status::LIMIT);
        }
        let mut seg = match Segment::open(fd, HEADER_LEN + LEND_OFFSET + MAX_LEND_SEGMENT) {
            Ok(seg) if seg.len() >= HEADER_LEN + LEND_OFFSET => seg,
            Ok(_) => return Err(status::PROTOCOL),
            Err(ShmError::Io { source, .. }) if sys::is_exhaustion(&source) => {
                return Err(status::LIMIT)
            }
            Err(ShmError::BadSegment(crate::SegmentError::BadSize { len, .. }))
                if len > (HEADER_LEN + LEND_OFFSET + MAX_LEND_SEGMENT) as u64 =>
            {
                return Err(status::TOO_LARGE)
            }
            Err(_) => return Err(status::PROTOCOL),
        };
        seg.close_fd();
        let bytes = Lendable::capacity(&seg);
        if bytes > core.max_lend as u64 {
            return Err(status::TOO_LARGE);
        }
        if lends.bytes + bytes > limits.lend_bytes_per_client {
            return Err(status::LIMIT);
        }
        {
            let mut totals = core.lend_totals.lock().unwrap_or_else(|p| p.into_inner());
            if totals.0 >= limits.lends || totals.1 + bytes > limits.lend_bytes {
                return Err(status::LIMIT);
            }
            totals.0 += 1;
            totals.1 += bytes;
        }
        lends.bytes += bytes;
        lends.ids.insert(id, file);
        lends.files.insert(
            file,
            Lendable {
                seg: Arc::new(seg),
                users: 0,
                ids: 1,
            },
        );
        Ok(())
    }

    /// The client dropped buffer `id`: forget the id, and unmap the buffer once no id names
    /// it (and no context holds it).
    fn free_buffer(&self, core: &Core, id: u64) {
        let mut lends = self.lock_lends();
        lends.refused.remove(&id);
        let Some(file) = lends.ids.remove(&id) else {
            return;
        };
        let last = lends.files.get_mut(&file).is_some_and(|e| {
            e.ids -= 1;
            e.ids == 0
        });
        if last {
            if let Some(e) = lends.files.remove(&file) {
                let bytes = Lendable::capacity(&e.seg);
                lends.bytes -= bytes;
                core.forget_lends(1, bytes);
            }
        }
    }

    /// Gives a lend back (its context is answered or dropped).
    fn end_lend(&self, lent: &Lent) {
        self.counters.lends.fetch_sub(1, Ordering::Relaxed);
        if let Some(e) = self.lock_lends().files.get_mut(&lent.file) {
            if Arc::ptr_eq(&e.seg, &lent.seg) {
                e.users = if lent.exclusive {
                    0
                } else {
                    e.users.saturating_sub(1)
                };
            }
        }
    }

    /// Rings the client's bell if slot `slot`'s record asks for it (`F_ASYNC`: an async
    /// caller, or a caller waiting for an abandoned slot to come back).
    fn ring_if_async(&self, slot: usize) {
        // SeqCst: as in `SlotRef::complete`, the Dekker pair with the client's flag store.
        let flags = self
            .sh
            .u32(self.sh.lay.rec(slot) + S_FLAGS)
            .load(Ordering::SeqCst);
        if flags & F_ASYNC != 0 {
            ring_client(&self.sh);
        }
    }

    /// Writes one record (of subscription `sub`) into the push ring and rings the client;
    /// never waits. `Full` if the ring has no room; a head the client moved past the tail cuts
    /// it off.
    fn write_push(
        &self,
        sub: u32,
        kind: u32,
        fill: impl FnOnce(&mut ShmViewMut<'_>) -> Option<(usize, u64)>,
    ) -> Result<(), PushError> {
        let sh = &self.sh;
        let mut tail = self.push_tail.lock().unwrap_or_else(|p| p.into_inner());
        // Acquire: the client's reads of records before `head` are done.
        let head = sh.u64(PUSH_HEAD).load(Ordering::Acquire);
        let used = tail.wrapping_sub(head);
        if used > sh.lay.push_depth as u64 {
            self.cut_off();
            return Err(PushError::ClientGone);
        }
        if used == sh.lay.push_depth as u64 {
            return Err(PushError::Full);
        }
        let (len, sig) = fill(&mut sh.push_data_mut(*tail)).ok_or(PushError::TooLarge)?;
        let rec = sh.lay.push_rec(*tail);
        sh.u32(rec + P_SUB).store(sub, Ordering::Relaxed);
        sh.u32(rec + P_KIND).store(kind, Ordering::Relaxed);
        sh.u32(rec + P_LEN).store(len as u32, Ordering::Relaxed);
        sh.u64(rec + P_SIG).store(sig, Ordering::Relaxed);
        *tail += 1;
        // Release: the record is visible to a client that sees the new tail.
        sh.u64(PUSH_TAIL).store(*tail, Ordering::Release);
        drop(tail);
        ring_client(sh);
        Ok(())
    }

    /// Pushes the subscription ends that found the ring full, while there is room.
    fn flush_ends(&self) {
        if !self.has_ends.load(Ordering::Relaxed) {
            return;
        }
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(&id) = ends.first() {
            if self.write_push(id, PUSH_END, |_| Some((0, 0))) == Err(PushError::Full) {
                return;
            }
            ends.remove(0);
        }
        self.has_ends.store(false, Ordering::Relaxed);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(core) = self.core.upgrade() {
            core.release_lends(&mut self.lock_lends());
        }
    }
}

/// The largest lent buffer the server maps.
const MAX_LEND_SEGMENT: usize = 1 << 30;

impl Core {
    /// Takes `count` buffers of `bytes` off the server's totals.
    fn forget_lends(&self, count: usize, bytes: u64) {
        let mut totals = self.lend_totals.lock().unwrap_or_else(|p| p.into_inner());
        totals.0 = totals.0.saturating_sub(count);
        totals.1 = totals.1.saturating_sub(bytes);
    }

    /// Forgets every buffer of one client (it died or was cut off); mappings still held by a
    /// context go when it does.
    fn release_lends(&self, lends: &mut Lends) {
        let lends = std::mem::take(lends);
        self.forget_lends(lends.files.len(), lends.bytes);
    }
}

/// Run by a connection's watcher when the client hangs up: its lent buffers are unmapped
/// at once (as soon as no context holds them), its subscriptions end, and a worker is woken
/// to take what it queued before it died and then forget the connection.
fn client_gone(core: &Weak<Core>, id: u64) {
    let Some(core) = core.upgrade() else { return };
    let conn = {
        let conns = core.conns.read().unwrap_or_else(|p| p.into_inner());
        conns.iter().find(|c| c.id == id).cloned()
    };
    if let Some(conn) = conn {
        core.release_lends(&mut conn.lock_lends());
        conn.lock_subs().clear();
        core.publish_stats();
        core.ring();
        // Dropped here, on the watcher thread, if no worker or context holds it (see
        // `Watch`'s drop).
        drop(conn);
    }
}

/// A taken slot, owed a completion. Dropping it completes with `NO_REPLY`.
struct SlotRef {
    conn: Arc<Conn>,
    slot: usize,
    flags: u32,
    done: bool,
}

impl std::fmt::Debug for SlotRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("client_pid", &self.conn.peer.pid)
            .field("slot", &self.slot)
            .finish()
    }
}

impl SlotRef {
    /// Completes the slot with `st` and no reply, whatever became of the caller.
    fn settle(mut self, st: u32) {
        let _ = self.complete(st, |_| Some((0, 0, [0; 2])));
    }

    fn is_canceled(&self) -> bool {
        slot::is_canceled(self.conn.sh.state(self.slot))
    }

    /// Completes the slot, once (later calls and the drop do nothing): `write` fills the
    /// data area and returns (length, signature, reply words), or `None` if the value does not
    /// fit (completed with `TOO_LARGE`, reported as [`Error::TooLarge`]); then
    /// `TAKEN -> DONE`, waking a sleeping caller. `Err(OriginDisappeared)` if the caller is
    /// gone or canceled (nothing it can see was changed then, or only its abandoned slot).
    fn complete(
        &mut self,
        st: u32,
        write: impl FnOnce(&mut ShmViewMut<'_>) -> Option<(usize, u64, [u64; 2])>,
    ) -> Result<(), Error<()>> {
        if std::mem::replace(&mut self.done, true) {
            return Err(Error::OriginDisappeared);
        }
        let conn = &self.conn;
        let sh = &conn.sh;
        let slot = self.slot;
        let mut outcome = Ok(());
        let r = (|| {
            if conn.gone() {
                conn.in_service[slot].store(false, Ordering::Release);
                return Err(Error::OriginDisappeared);
            }
            let word = sh.state(slot);
            if slot::is_taken(word) {
                let rec = sh.lay.rec(slot);
                let (st, (len, sig, words)) = match write(&mut sh.data_mut(slot)) {
                    Some(w) => (st, w),
                    None => {
                        outcome = Err(Error::TooLarge);
                        (status::TOO_LARGE, (0, 0, [0; 2]))
                    }
                };
                sh.u32(rec + S_STATUS).store(st, Ordering::Relaxed);
                sh.u32(rec + S_RLEN).store(len as u32, Ordering::Relaxed);
                sh.u64(rec + S_RSIG).store(sig, Ordering::Relaxed);
                for (i, w) in words.iter().enumerate() {
                    sh.u64(rec + S_RARGS + 8 * i).store(*w, Ordering::Relaxed);
                }
            }
            // The answer above is visible to a caller that sees DONE (the transition's
            // Release, its Acquire).
            // The slot stops being ours before the word says so (the client may queue it
            // again the moment it sees DONE, and the next worker must not find it in service).
            let release = || conn.in_service[slot].store(false, Ordering::Release);
            match slot::complete(word, release) {
                slot::Complete::Delivered { wake } => {
                    if wake {
                        sys::futex_wake(word);
                    }
                    // SeqCst (after the transition's SeqCst CAS): the Dekker pair with an
                    // async waiter that sets F_ASYNC and then looks for DONE.
                    let flags = sh.u32(sh.lay.rec(slot) + S_FLAGS).load(Ordering::SeqCst);
                    if (self.flags | flags) & F_ASYNC != 0 {
                        ring_client(sh);
                    }
                    outcome
                }
                // The caller gave up after we took it; the slot is back with it.
                slot::Complete::Canceled => {
                    conn.ring_if_async(slot);
                    Err(Error::OriginDisappeared)
                }
                slot::Complete::Broken => {
                    conn.cut_off();
                    Err(Error::OriginDisappeared)
                }
            }
        })();
        conn.counters.in_service.fetch_sub(1, Ordering::Relaxed);
        if r.is_ok() {
            conn.counters.served.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl Drop for SlotRef {
    fn drop(&mut self) {
        let _ = self.complete(status::NO_REPLY, |_| Some((0, 0, [0; 2])));
    }
}

/// Rings the client's bell (its async waiters and subscription readers sleep on it).
fn ring_client(sh: &Shared) {
    // SeqCst: the Dekker pair with the client's store of `cbell_wait` and its fence before
    // it reads the bell and looks at slots and the push ring.
    fence(Ordering::SeqCst);
    if sh.u32(CBELL_WAIT).load(Ordering::SeqCst) != 0 {
        sh.u32(CBELL).fetch_add(1, Ordering::SeqCst);
        sys::futex_wake(sh.u32(CBELL));
    }
}

/// A buffer a caller lent with this call.
struct Lent {
    seg: Arc<Segment>,
    file: (u64, u64),
    len: usize,
    exclusive: bool,
}

impl Lent {
    fn ptr(&self) -> *mut u8 {
        // SAFETY: the segment is at least HEADER_LEN + LEND_OFFSET + len bytes (checked in
        // `take_lend` against its sealed size).
        unsafe { self.seg.payload_ptr().add(LEND_OFFSET) }
    }
}

/// The answer owed for one call; it may be kept and answered later, from any thread
/// (deferred response).
///
/// Dropping it unanswered completes the call with [`Error::NoReply`] (for every kind of
/// call: unlike Xous, no caller is left blocked). A lent buffer ([`lent`](Self::lent),
/// [`lent_mut`](Self::lent_mut)) is the server's until the context is answered or dropped;
/// then it goes back to the caller, whose `lend` / `lend_mut` returns.
pub struct ReplyContext<Rp, E> {
    slot: SlotRef,
    one_way: bool,
    lent: Option<Lent>,
    _types: PhantomData<fn(Rp, E)>,
}

impl<Rp, E> std::fmt::Debug for ReplyContext<Rp, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyContext")
            .field("slot", &self.slot)
            .field("one_way", &self.one_way)
            .field("lent", &self.lent.as_ref().map(|l| l.len))
            .finish()
    }
}

impl<Rp: Wire, E: Wire> ReplyContext<Rp, E> {
    /// Answers the call with `reply`.
    ///
    /// # Errors
    ///
    /// [`Error::OriginDisappeared`] if the caller's process died or it canceled the call (the
    /// reply is discarded); [`Error::TooLarge`] if the reply does not fit a slot (the caller
    /// gets `TooLarge` too). A one-way call's reply is discarded: `Ok`.
    pub fn reply(self, reply: Rp) -> Result<(), Error<E>> {
        self.answer(status::OK, reply)
    }

    /// Answers the call with an application error: the caller gets [`Error::App`].
    ///
    /// # Errors
    ///
    /// As [`ReplyContext::reply`].
    pub fn fail(self, err: E) -> Result<(), Error<E>> {
        self.answer(status::APP, err)
    }

    fn answer<T: Wire>(mut self, st: u32, value: T) -> Result<(), Error<E>> {
        if let Some(l) = self.lent.take() {
            self.slot.conn.end_lend(&l);
        }
        let r = self.slot.complete(st, |out| {
            value.encode(out).map(|n| (n, T::SIGNATURE, [0; 2]))
        });
        match r {
            Err(Error::TooLarge) => Err(Error::TooLarge),
            _ if self.one_way => Ok(()),
            Ok(()) => Ok(()),
            Err(_) => Err(Error::OriginDisappeared),
        }
    }

    /// Whether the caller canceled the call (a timeout, a dropped `WaitReply` or future); the
    /// work may stop, a reply would be discarded.
    pub fn is_canceled(&self) -> bool {
        self.slot.is_canceled() || self.slot.conn.gone()
    }

    /// Whether the call was one-way (`send`): nobody waits for the reply.
    pub fn is_one_way(&self) -> bool {
        self.one_way
    }

    /// The caller's process id (from the kernel, at connection time).
    pub fn client_pid(&self) -> u32 {
        self.slot.conn.peer.pid as u32
    }

    /// The buffer the caller lent with `lend` or `lend_mut`, in place (no copy): a view, from
    /// which bytes are copied out or flat values read and checked ([`ShmView`]), since the
    /// caller's process can write the pages while the server reads them.
    pub fn lent(&self) -> Option<ShmView<'_>> {
        self.lent.as_ref().map(|l| {
            // SAFETY: `ptr..ptr+len` lies inside the lent segment (checked in `take_lend`),
            // which the `Arc` keeps mapped while `self` is borrowed.
            unsafe { ShmView::new(l.ptr(), l.len) }
        })
    }

    /// The buffer the caller lent with `lend_mut`, for writing in place; the caller sees the
    /// bytes when the call returns. `None` for other calls (including `lend`).
    pub fn lent_mut(&mut self) -> Option<ShmViewMut<'_>> {
        self.lent.as_mut().filter(|l| l.exclusive).map(|l| {
            // SAFETY: as in `lent`; the lend is exclusive (checked in `take_lend`: no other
            // lend of this buffer is in progress), and `&mut self` makes this the only
            // writable view this process hands out.
            unsafe { ShmViewMut::new(l.ptr(), l.len) }
        })
    }
}

impl<Rp, E> Drop for ReplyContext<Rp, E> {
    fn drop(&mut self) {
        if let Some(l) = self.lent.take() {
            self.slot.conn.end_lend(&l);
        }
        // `self.slot` completes with NO_REPLY in its own drop if still owed.
    }
}

/// A scalar message: an opcode and four words, no payload. See [`Incoming::Scalar`].
///
/// Words are `u64` on the wire whatever the width of `usize` on either side, so a 32-bit and
/// a 64-bit process agree. Dropping a blocking one unanswered gives its caller
/// [`Error::NoReply`].
#[derive(Debug)]
pub struct ScalarCall {
    slot: SlotRef,
    op: u32,
    args: [u64; 4],
    blocking: bool,
}

impl ScalarCall {
    /// The opcode.
    pub fn op(&self) -> u32 {
        self.op
    }

    /// The four argument words.
    pub fn args(&self) -> [u64; 4] {
        self.args
    }

    /// Whether the caller waits for a reply (`blocking_scalar`).
    pub fn is_blocking(&self) -> bool {
        self.blocking
    }

    /// The caller's process id.
    pub fn client_pid(&self) -> u32 {
        self.slot.conn.peer.pid as u32
    }

    /// Whether the caller gave up waiting.
    pub fn is_canceled(&self) -> bool {
        self.slot.is_canceled() || self.slot.conn.gone()
    }

    /// Answers with two words. For a one-way scalar the words are discarded: `Ok`.
    ///
    /// # Errors
    ///
    /// [`Error::OriginDisappeared`] if the caller died or gave up.
    pub fn reply(self, words: [u64; 2]) -> Result<(), Error<()>> {
        let (blocking, mut slot) = (self.blocking, self.slot);
        let r = slot.complete(status::OK, |_| Some((0, 0, words)));
        if !blocking {
            return Ok(());
        }
        r
    }
}

/// Why [`Notifier::push`] did not deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The client dropped its [`Subscription`](crate::Subscription).
    #[error("the client unsubscribed")]
    Unsubscribed,
    /// The client's process is gone.
    #[error("the client process is gone")]
    ClientGone,
    /// The client has not read the pushes already waiting (`ServerConfig::push_depth`); the
    /// value was not sent. A server never blocks on a slow subscriber.
    #[error("the client's push ring is full")]
    Full,
    /// The value does not fit a push record (`ServerConfig::push_size`).
    #[error("the value is larger than a push record")]
    TooLarge,
}

/// The server's end of a subscription: pushes values to one client whenever the server likes
/// (the asynchronous pattern). `Send + Sync`: keep it anywhere, push from any thread.
///
/// Dropping it ends the subscription: the client's receive returns
/// [`Error::NoReply`] after the values already pushed.
pub struct Notifier {
    conn: Arc<Conn>,
    id: u32,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("client_pid", &self.conn.peer.pid)
            .field("id", &self.id)
            .finish()
    }
}

impl Notifier {
    /// Whether the client still listens.
    pub fn is_subscribed(&self) -> bool {
        !self.conn.gone() && self.conn.lock_subs().contains(&self.id)
    }

    /// The subscribed client's process id.
    pub fn client_pid(&self) -> u32 {
        self.conn.peer.pid as u32
    }

    /// Pushes `value` to the client. Never blocks.
    ///
    /// # Errors
    ///
    /// See [`PushError`]; the value was not delivered.
    pub fn push<T: Wire>(&self, value: T) -> Result<(), PushError> {
        if self.conn.gone() {
            return Err(PushError::ClientGone);
        }
        if !self.is_subscribed() {
            return Err(PushError::Unsubscribed);
        }
        self.conn.write_push(self.id, PUSH_DATA, |out| {
            value.encode(out).map(|n| (n, T::SIGNATURE))
        })
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        let was = self.conn.lock_subs().remove(&self.id);
        if was
            && !self.conn.gone()
            && self.conn.write_push(self.id, PUSH_END, |_| Some((0, 0))) == Err(PushError::Full)
        {
            // Never wait for a slow client: the end is pushed by a worker as soon as the
            // ring has room (see `Conn::flush_ends`).
            let mut ends = self.conn.ends.lock().unwrap_or_else(|p| p.into_inner());
            ends.push(self.id);
            self.conn.has_ends.store(true, Ordering::Relaxed);
        }
    }
}
