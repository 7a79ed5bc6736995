//! The server side: [`Server`], what it receives ([`Incoming`]) and how it answers
//! ([`ReplyContext`], [`ScalarCall`], [`Notifier`]).
//!
//! This file holds the service ([`Server`], [`ServerConfig`], the state its workers share),
//! the accept thread, and the workers' wait: polling the connections' request rings (the
//! warm ones; the cold ones when asked), the sleep on the doorbells or the workers' epoll,
//! and turning a taken slot into an [`Incoming`]. The rest:
//!
//! - `conn.rs`: one client's connection (taking requests off its ring, cutting off a client
//!   that breaks the rules, its death);
//! - `lend.rs`: the buffers a client registers for lending, their limits and mappings;
//! - `reply.rs`: completing a taken slot ([`ReplyContext`], [`ScalarCall`]);
//! - `push.rs`: the push ring's writer ([`Notifier`], [`PushError`]).

#[cfg(all(test, loom))]
mod cold_model;
mod conn;
mod lend;
mod push;
mod reply;
mod sent;

pub use push::{Notifier, PushError};
pub use reply::{ReplyContext, ScalarCall};
pub use sent::SentBuf;

use crate::error::ShmError;
use crate::rpc::layout::{
    has_args, kind, status, write_header, Layout, CLI_CPU, CLI_TID, DOORBELL, F_ASYNC, SLEEP_COLD,
    SRV_CLOSED, SRV_CPU, SRV_SLEEP, SRV_TID, S_ARGS, S_FLAGS, S_KIND, S_LEN, S_OP, S_SIG,
};
use crate::rpc::sid::ServerId;
use crate::rpc::stats::{ServerStats, StatsFile};
use crate::rpc::wire::Wire;
use crate::rpc::Error;
use crate::segment::HEADER_LEN;
use crate::service::{Listener, ListenerConfig, DEFAULT_CALLER_SPIN};
use crate::substrate::coop;
use crate::substrate::deadline::Deadline;
use crate::substrate::park::{self, AdaptiveSpin, SpinLimit};
use crate::sync::{fence, AtomicU64, Ordering};
use crate::sys;
use std::any::TypeId;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use conn::Conn;
use reply::SlotRef;

/// How long an idle worker looks at every connection by default before it sleeps.
const DEFAULT_SPIN: Duration = Duration::from_micros(50);
/// The longest an idle worker sleeps before it looks again: every sleep is bounded, so no
/// lost wake-up (a client that lies about its ring, say) lasts longer. On the doorbells a
/// blocking worker's sleep sets no timer for it (the kernel's setting and cancelling one
/// cost a parked call 0.2 µs, 7 % on a busy machine) while the accept thread, which sleeps
/// anyway, runs its rounds: every `MAX_SLEEP` it ends those sleeps (see `accept_loop`).
const MAX_SLEEP: Duration = Duration::from_millis(500);
/// How often, at most, a worker going to sleep rewrites the stats file (each write is a
/// system call; a worker that sleeps between every two calls would pay one per call).
const STATS_EVERY: Duration = Duration::from_millis(10);
/// How many wake-ups a worker reads from one connection at a time: one. A client sends one
/// per call it queues while a worker sleeps, so one is what a sleep usually ends with; reading
/// until the socket is empty would cost a second, failing read on every wake-up (before the
/// call is taken), and a wake-up left unread only ends the next sleep at once.
const KICKS_PER_WAKE: usize = 1;
/// The epoll key of the server's own wake-up (new connections, dead clients); a connection's
/// key is its id + 1. A sleep on the doorbells reports any wake-up with it.
const WAKE_KEY: u64 = 0;
/// The longest sleep on the doorbells while more connections are open than one
/// `futex_waitv` covers (it cannot happen within `max_clients`; a bound, not a path).
const TRUNCATED_NAP: Duration = Duration::from_millis(1);

/// The most clients whose doorbells one `futex_waitv` covers, beside the server's own word:
/// the default `max_clients`.
const DOORBELL_CLIENTS: usize = sys::WAITV_MAX - 1;

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
    forwarding: bool,
    spin: SpinLimit,
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
            forwarding: false,
            spin: SpinLimit::Adaptive(DEFAULT_SPIN),
            limits: Limits {
                clients: DOORBELL_CLIENTS,
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

    /// The largest buffer a client may lend (bigger ones fail with [`Error::TooLarge`](crate::Error::TooLarge),
    /// checked when the buffer is first lent and at every lend).
    pub fn max_lend(mut self, bytes: usize) -> Self {
        self.max_lend = bytes;
        self
    }

    /// Lets this server pass the buffers it is lent on to another server
    /// ([`ReplyContext::forward`]): it keeps a descriptor of each registered buffer (without
    /// this, it closes it once mapped), so at most [`max_lends`](Self::max_lends) more
    /// descriptors; keep that below the process's descriptor limit.
    pub fn forwarding(mut self, on: bool) -> Self {
        self.forwarding = on;
        self
    }

    /// The longest an idle worker looks for the next message before it sleeps (default
    /// 50 µs). The budget adapts: when a message comes while spinning it doubles, and becomes
    /// at least twice the time the message took (up to `limit`); it halves after four misses
    /// in a row (below `limit`, only if one more wait spinning the whole `limit` misses
    /// too), halves when the worker was preempted while spinning at `limit`, and drops to
    /// none when preempted below it; with none left, one wait in 256 spins the whole `limit` to notice that calls come fast again.
    /// A worker does not spin while the client of its last call was on the worker's own CPU
    /// (it could not send): it yields the CPU for up to 20 µs instead, which runs that
    /// client at once if it is waiting there. `Duration::ZERO`: a worker neither spins nor
    /// yields, it sleeps as soon as it finds nothing, and a client's call then costs a
    /// wake-up.
    ///
    /// Replaces a [`busy_poll`](Self::busy_poll) given before.
    ///
    /// ```
    /// use courier_shm::ServerConfig;
    /// use std::time::Duration;
    /// // A service that must not burn a core between calls.
    /// let config = ServerConfig::new().spin(Duration::ZERO);
    /// # let _ = config;
    /// ```
    pub fn spin(mut self, limit: Duration) -> Self {
        self.spin = SpinLimit::Adaptive(limit);
        self
    }

    /// Busy-polls: an idle worker looks for the next message for up to `limit` before it
    /// sleeps, at every wait, whatever the waits before did and wherever its last client
    /// ran; except that where the two cannot each have a CPU (other processes' busy threads
    /// hold the others, or courier cannot tell: before its second look at the machine, or
    /// where `/proc` cannot be read), it waits for a client on its own CPU as by default,
    /// yielding the CPU to it for a while and then sleeping, since the client could not call
    /// while the worker spun there. A worker woken by a wake-up that brought nothing sleeps
    /// again at once (a client that only sends wake-ups keeps no worker spinning); the
    /// wait's deadline ends the spin.
    ///
    /// Except on oversubscribed CPUs: a worker whose spins are preempted often (two waits
    /// within 1,024 busy-polling ones: a stop of its spin in which the kernel gave its CPU
    /// to another thread, of 200 µs in the first millisecond of a spin, later of 0.5 ms,
    /// another thread's time slice; time the hypervisor takes from a virtual CPU does not
    /// count, and a thread with a core to itself is never preempted) waits as by default
    /// for 250 ms (an adaptive [`spin`](Self::spin) of at most 50 µs, or `limit` if
    /// shorter, yielding to a client on its own CPU, and for as long as that client runs on
    /// it), twice as long each time it is preempted again soon after (at most a minute),
    /// then busy-polls again. Spinning beside more runnable threads than CPUs, it would
    /// hold a CPU its clients or other processes need, and lose whole scheduler slices
    /// (milliseconds) itself.
    ///
    /// For latency at the price of a core per worker; pair it with
    /// [`ConnectConfig::busy_poll`](crate::ConnectConfig::busy_poll) in the clients.
    /// Replaces a [`spin`](Self::spin) given before.
    ///
    /// ```
    /// use courier_shm::ServerConfig;
    /// use std::time::Duration;
    /// let config = ServerConfig::new().busy_poll(Duration::from_secs(1));
    /// # let _ = config;
    /// ```
    pub fn busy_poll(mut self, limit: Duration) -> Self {
        self.spin = SpinLimit::BusyPoll(limit);
        self
    }

    /// How many client processes may be connected at once (default 127). A client beyond it
    /// is refused at connect ([`ShmError::ServerFull`]). Each connection costs the server
    /// about four descriptors, a watcher thread and a mapping of its segment, so the
    /// default stays within a default limit of 1,024 descriptors. Up to 127, idle workers
    /// sleep on the clients' doorbells (one `futex_waitv`, Linux 5.16 and later), which
    /// wakes them faster than the wake-up sockets a larger server sleeps on (see "Waking"
    /// in the [module docs](crate::rpc)).
    pub fn max_clients(mut self, n: usize) -> Self {
        self.limits.clients = n;
        self
    }

    /// How many distinct buffers one client may have registered for lending at once
    /// (default 256); a lend of one more fails with [`Error::LimitReached`](crate::Error::LimitReached) until the client
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
/// [`Error::ServerDisappeared`](crate::Error::ServerDisappeared) at once, calls taken and not yet answered can still be
/// answered, and the name is freed.
///
/// A named service never reports [`Error::ClientsDisappeared`](crate::Error::ClientsDisappeared): new clients may always come.
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
/// # Ok::<(), Box<dyn std::error::Error>>(())
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
    /// Keep lent buffers' descriptors, to forward lends.
    forwarding: bool,
    /// How long an idle worker spins before it sleeps ([`ServerConfig::spin`]), adapted.
    spin: AdaptiveSpin,
    /// The CPU (plus one) the client of the last call taken sent it from: a spin hint.
    client_cpu: std::sync::atomic::AtomicU32,
    /// The thread of the last call's client ([`CLI_TID`]; 0: not known).
    client_tid: std::sync::atomic::AtomicU32,
    limits: Limits,
    /// Lent buffers registered by all clients: (count, bytes).
    lend_totals: Mutex<(usize, u64)>,
    poller: Poller,
    conns: RwLock<Conns>,
    /// How many workers sleep (written to every warm connection's `srv_sleep`; see
    /// [`Core::cool_idle`]); the lock orders those writes, so a connection never shows a
    /// stale zero.
    sleeping: Mutex<u32>,
    /// Round-robin start for the next poll.
    next: AtomicU64,
    /// A cold connection may have something to take (a call its watcher was rung for, one
    /// queued just before it went cold, a dead client's last messages): the next look covers
    /// the cold connections too. The looks leave them out otherwise, so that an idle client
    /// costs a worker nothing (see [`Core::cool_idle`]).
    cold_look: std::sync::atomic::AtomicBool,
    counters: Arc<Counters>,
    stats: Option<StatsFile>,
    /// This process's id (for the stats; read once, as each read is a system call).
    pid: u32,
    next_conn: AtomicU64,
    /// The tasks waiting in [`Server::async_wait`], woken by the async reactor.
    async_waiters: Mutex<AsyncWaiters>,
    /// Tells the async reactor that a task registered.
    async_registered: std::sync::Condvar,
}

/// The wakers of tasks in [`Server::async_wait`], and whether the reactor thread runs.
#[derive(Default)]
struct AsyncWaiters {
    wakers: Vec<std::task::Waker>,
    reactor: bool,
}

impl<Rq: Wire, Rp: Wire, E: Wire> Server<Rq, Rp, E> {
    /// Starts a server without a public name (Xous's unnamed server, reached by SID): its
    /// clients connect with [`Client::connect_id`](crate::Client::connect_id) and the id,
    /// which this process hands to those it chooses (in a reply, or the two words of a
    /// scalar reply: [`ServerId::to_words`]). [`services`](crate::services) does not list
    /// it. [`ServerId`] says what the id does and does not protect.
    ///
    /// # Errors
    ///
    /// As [`Server::bind`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use courier_shm::{Client, Server, ServerConfig};
    /// use std::time::Duration;
    ///
    /// let (session, id) = Server::<u64, u64, ()>::bind_unnamed(ServerConfig::new())?;
    /// // ... the id reaches a client, which connects:
    /// let client = Client::<u64, u64, ()>::connect_id(id, Duration::from_secs(1))?;
    /// # let _ = (session, client);
    /// # Ok(())
    /// # }
    /// ```
    pub fn bind_unnamed(config: ServerConfig) -> Result<(Self, ServerId), ShmError> {
        loop {
            let id = ServerId::random()?;
            match Self::bind(&id.name(), config.clone()) {
                // 128 random bits taken already: draw again.
                Err(ShmError::NameInUse(_)) => continue,
                r => return r.map(|server| (server, id)),
            }
        }
    }

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
        let poller = Poller::new(config.limits.clients)?;
        let stats = StatsFile::create(name).ok();
        if let Some(s) = &stats {
            // Removed while the name is still ours, never a later server's file.
            listener.remove_on_drop(s.path().to_owned());
        }
        let core = Arc::new(Core {
            name: name.to_owned(),
            lay,
            max_lend: config.max_lend,
            forwarding: config.forwarding,
            spin: AdaptiveSpin::for_server(config.spin, DEFAULT_SPIN),
            client_cpu: std::sync::atomic::AtomicU32::new(0),
            client_tid: std::sync::atomic::AtomicU32::new(0),
            limits: config.limits,
            lend_totals: Mutex::new((0, 0)),
            poller,
            conns: RwLock::new(Conns::default()),
            sleeping: Mutex::new(0),
            next: AtomicU64::new(0),
            cold_look: std::sync::atomic::AtomicBool::new(false),
            counters: Arc::new(Counters::default()),
            stats,
            pid: std::process::id(),
            next_conn: AtomicU64::new(0),
            async_waiters: Mutex::new(AsyncWaiters::default()),
            async_registered: std::sync::Condvar::new(),
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

    /// Says what this server serves, for `courier ls` and [`services`](crate::services)
    /// (`ServiceInfo::interface`); at most [`MAX_DESCRIPTION`](crate::MAX_DESCRIPTION)
    /// bytes are kept. `#[courier::service]` servers describe their interface and methods.
    pub fn describe(&self, description: &str) {
        if let Some(s) = &self.shared.core.stats {
            s.describe(description);
        }
    }

    /// The service's counters now.
    pub fn stats(&self) -> ServerStats {
        self.shared.core.stats()
    }

    /// Answers `ctx` with `reply`, then waits for the next message: Xous's
    /// `reply_and_receive_next`. A caller that gave up meanwhile misses nothing the server
    /// could tell it, so that reply's [`Error::OriginDisappeared`] is not reported; a reply
    /// too large for the slot is (the caller got [`Error::TooLarge`]), and then nothing is
    /// waited for.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] (the reply), or as [`Server::wait`].
    pub fn reply_and_receive_next(
        &self,
        ctx: ReplyContext<Rp, E>,
        reply: Rp,
    ) -> Result<Incoming<Rq, Rp, E>, Error<E>> {
        match ctx.reply(reply) {
            Err(Error::TooLarge) => Err(Error::TooLarge),
            _ => self.wait(),
        }
    }

    /// Waits for the next message from any client.
    ///
    /// The error type is `courier::local`'s (`Server::wait` there returns the same
    /// [`Error<E>`]), so a serving loop reads the same on both transports.
    ///
    /// # Errors
    ///
    /// [`Error::LimitReached`] only if the system refuses the wait itself (the poll of the
    /// connections' wake-up sockets fails); never [`Error::ClientsDisappeared`], since new
    /// clients may always connect to a named service.
    pub fn wait(&self) -> Result<Incoming<Rq, Rp, E>, Error<E>> {
        self.wait_until(Deadline::NEVER)
    }

    /// As [`Server::wait`], for at most `timeout` (`Duration::MAX`, or any `timeout` too large
    /// to add to the clock, means no limit).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if nothing came; as [`Server::wait`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Incoming<Rq, Rp, E>, Error<E>> {
        self.wait_until(Deadline::after(timeout))
    }

    /// Takes the next message if one is queued.
    ///
    /// # Errors
    ///
    /// None today; the type is [`Server::wait`]'s.
    pub fn try_pop(&self) -> Result<Option<Incoming<Rq, Rp, E>>, Error<E>> {
        Ok(self.poll_once())
    }

    fn wait_until(&self, deadline: Deadline) -> Result<Incoming<Rq, Rp, E>, Error<E>> {
        // Whether the last wake-up found nothing to do: then the next sleep comes at once,
        // without the spin, so a client that only sends wake-ups keeps no worker spinning.
        let mut idle_wake = false;
        // The wake-up keys of this worker's last sleep, and the server they belong to: one
        // buffer per worker thread, kept, so that a worker that sleeps between calls
        // allocates nothing, and so that the wake-ups that ended the last sleep are read on
        // the way to the next one rather than before the call they announced.
        thread_local! {
            static KEYS: std::cell::Cell<(usize, Vec<u64>)> =
                const { std::cell::Cell::new((0, Vec::new())) };
            static BELLS: std::cell::Cell<Bells> = std::cell::Cell::default();
        }
        let this = Arc::as_ptr(&self.shared.core) as usize;
        let (of, mut keys) = KEYS.try_with(std::cell::Cell::take).unwrap_or_default();
        if of != this {
            // Another server's (drained by its workers' next sleeps) or none.
            keys.clear();
        }
        let mut bells = BELLS.try_with(std::cell::Cell::take).unwrap_or_default();
        // A thread's first wait sizes the buffers of its sleeps, so that its first sleep,
        // which may come after thousands of calls answered without one, allocates nothing
        // (for up to `SLEEP_BUFFERS` connections; more grow them once).
        if keys.capacity() == 0 {
            keys.reserve(SLEEP_BUFFERS);
            bells.reserve(SLEEP_BUFFERS);
        }
        let r = self.wait_with(deadline, &mut idle_wake, (&mut keys, &mut bells));
        let _ = KEYS.try_with(|k| k.set((this, keys)));
        bells.clear();
        let _ = BELLS.try_with(|b| b.set(bells));
        r
    }

    /// [`wait_until`](Self::wait_until) with the sleep's buffers: the keys of the last
    /// wake-up, and what the next sleep is on.
    fn wait_with(
        &self,
        deadline: Deadline,
        idle_wake: &mut bool,
        (keys, bells): (&mut Vec<u64>, &mut Bells),
    ) -> Result<Incoming<Rq, Rp, E>, Error<E>> {
        let core = &self.shared.core;
        // (A busy-polling worker spins whatever the hints say, save beside a client on this
        // CPU where the two cannot each have one (`Wait::heeds_peer_here`), unless its spins
        // were preempted often of late: `AdaptiveSpin::begin_wait`.)
        let wait = core
            .spin
            .begin_wait(core.client_cpu.load(Ordering::Relaxed) == park::this_cpu());
        loop {
            if let Some(m) = self.poll_once() {
                return Ok(m);
            }
            // No spin when the client of the last call is on this CPU: it cannot send its
            // next call while we spin here. We yield the CPU to it for a while instead.
            let client_here = core.client_cpu.load(Ordering::Relaxed) == park::this_cpu()
                && wait.heeds_peer_here();
            if !*idle_wake && client_here && !core.spin.never() {
                let look = || Ok::<_, std::convert::Infallible>(self.poll_once());
                let Ok(found) = park::yield_on(deadline.cap(park::YIELD_FOR), look);
                if let Some(m) = found {
                    return Ok(m);
                }
            }
            if !*idle_wake && !client_here {
                if let Some(m) = wait.spin(deadline, || self.poll_once()) {
                    return Ok(m);
                }
            }
            // Going idle: a good time to record the counters for `courier ls` and to read
            // the wake-ups that ended the last sleep (not after the wake-up, which is the
            // next call's critical path). Reading them before the announcement below loses
            // none: a client that rings after it is seen by the look that follows it. At most
            // one reading of the clock serves the counters and the deadline, made only if
            // one of them needs it (a deadline that a spin above used up is found passed
            // there).
            let mut reading = None;
            let mut now = || *reading.get_or_insert_with(Instant::now);
            core.publish_stats_idle(&mut now);
            core.take_wakeups(keys);
            keys.clear();
            // Sleep: read the doorbells, announce it in every warm connection, then look
            // once more (see "Waking" in the module docs).
            core.read_bells(bells);
            core.set_sleeping(1);
            fence(Ordering::SeqCst);
            if let Some(m) = self.poll_once() {
                core.set_sleeping(-1);
                return Ok(m);
            }
            // A timer only for a deadline within `MAX_SLEEP`: a later one is looked at again
            // when the accept thread's round ends the sleep.
            let left = match deadline.left_with(now) {
                Ok(None) => None,
                Ok(Some(left)) => (left <= MAX_SLEEP).then_some(left),
                Err(_expired) => {
                    core.set_sleeping(-1);
                    return Err(Error::Timeout);
                }
            };
            let slept = core.sleep(bells, keys, left);
            core.set_sleeping(-1);
            slept.map_err(|_| Error::LimitReached)?;
            // The wake-ups in `keys` are read on the way to the next sleep (above).
            if let Some(m) = self.poll_once() {
                core.pass_wake_on();
                return Ok(m);
            }
            *idle_wake = true;
        }
    }

    /// Waits for the next message without blocking the thread: the future for a task under
    /// any executor. It takes what is there when polled; when nothing is, it first spins
    /// for the server's adaptive budget, as a blocking worker does, but for at most 20 µs
    /// (a caller's default spin; with the last caller on this CPU it yields the CPU to it
    /// for as long instead), since a loop's next call comes within microseconds of the last
    /// answer. Then the task sleeps and is woken by the server's async reactor, a thread
    /// (started by the first `async_wait`) that sleeps on the connections' doorbells exactly
    /// as a blocking worker does, without taking messages, and wakes the waiting tasks when
    /// a call may be there. Several tasks (and blocking workers) may wait at once; each
    /// message goes to one of them. A task that finds a message at every poll yields to its
    /// executor once every 128 of them, so that a steady stream of calls does not keep the
    /// thread's other tasks from running.
    ///
    /// # Errors
    ///
    /// [`Error::LimitReached`] if the reactor thread cannot be started.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use courier_shm::{Incoming, Server, ServerConfig};
    ///
    /// let server = Server::<u64, u64, ()>::bind("doubler", ServerConfig::new())?;
    /// pollster::block_on(async {
    ///     while let Ok(Incoming::Call(n, ctx)) = server.async_wait().await {
    ///         let _ = ctx.reply(n * 2);
    ///     }
    /// });
    /// # Ok::<(), courier_shm::ShmError>(())
    /// ```
    pub fn async_wait(&self) -> AsyncWait<'_, Rq, Rp, E> {
        AsyncWait {
            server: self,
            spun: false,
        }
    }

    /// One round over the connections: the first message found, already turned into an
    /// [`Incoming`] (messages the transport handles itself are handled and skipped, at most
    /// `slots` of them per connection per round, so a client that re-queues them as fast as
    /// they are settled cannot hold the worker here).
    fn poll_once(&self) -> Option<Incoming<Rq, Rp, E>> {
        let core = &self.shared.core;
        let all = core.take_cold_look();
        let guard = core.conns.read().unwrap_or_else(|p| p.into_inner());
        let conns = if all { &guard[..] } else { guard.warm() };
        let n = conns.len();
        if n == 0 {
            return None;
        }
        let start = core.next.fetch_add(1, Ordering::Relaxed) as usize;
        let mut finished = false;
        // A cold connection that called, warmed once `conns` is let go (`Core::warm` takes
        // `sleeping`, which is taken before `conns` everywhere).
        let mut warm = None;
        let mut found = None;
        let mut unlooked = false;
        'conns: for k in 0..n {
            let conn = &conns[(start + k) % n];
            conn.flush_ends();
            for _ in 0..core.lay.slots {
                let Some(slot) = conn.pop() else { break };
                if conn.note_call() && warm.is_none() {
                    warm = Some(Arc::clone(conn));
                }
                if let Some(m) = self.incoming(Arc::clone(conn), slot) {
                    found = Some(m);
                    // The cold connections after this one were not looked at.
                    unlooked = all && k + 1 < n;
                    break 'conns;
                }
            }
            finished |= conn.finished();
        }
        drop(guard);
        if unlooked {
            // Asked for again, and a sleeper woken for it: a thread on its way to sleep may
            // have found the flag taken (by us) and left the cold connections out, and the
            // call there may be one nobody rang for, or the one whose ring woke us.
            core.ring_one();
        }
        if let Some(conn) = warm {
            core.warm(&conn);
        }
        if found.is_none() && finished {
            core.forget_finished();
        }
        found
    }

    /// Turns taken slot `slot` of `conn` into an [`Incoming`], or handles it here.
    fn incoming(&self, conn: Arc<Conn>, slot: usize) -> Option<Incoming<Rq, Rp, E>> {
        let core = &self.shared.core;
        let sh = &Arc::clone(&conn).sh;
        let rec = sh.lay.rec(slot);
        // The spin hints (see `wait_with`); Relaxed: hints only.
        sh.set_hint(SRV_CPU, park::this_cpu());
        sh.set_hint(SRV_TID, park::this_thread());
        core.client_cpu
            .store(sh.u32(CLI_CPU).load(Ordering::Relaxed), Ordering::Relaxed);
        core.client_tid
            .store(sh.u32(CLI_TID).load(Ordering::Relaxed), Ordering::Relaxed);
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
            words: has_args(kind),
            done: false,
        };
        let decode = |slot_ref: &SlotRef| -> Option<Rq> {
            if len > sh.lay.slot_size {
                return None;
            }
            Rq::decode_signed(sig, &slot_ref.conn.sh.request(slot, kind, len))
        };
        match kind {
            kind::CALL | kind::SEND | kind::LEND | kind::LEND_MUT | kind::SEND_BUF => {
                let Some(rq) = decode(&slot_ref) else {
                    slot_ref.settle(status::PROTOCOL);
                    return None;
                };
                let mut slot_ref = slot_ref;
                let lent = if matches!(kind, kind::LEND | kind::LEND_MUT | kind::SEND_BUF) {
                    let exclusive = kind != kind::LEND;
                    match slot_ref
                        .conn
                        .take_lend(core, args[0], args[1], args[2], args[3], exclusive)
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
                let given = kind == kind::SEND_BUF;
                if let (true, Some(l)) = (given, &lent) {
                    // The buffer is ours now: off the client's books, and the caller, which
                    // waits only for this, is released at once.
                    slot_ref.conn.give_away(core, l);
                    let _ = slot_ref.complete(status::OK, |_| Some((0, 0, [0; 2])));
                }
                let unit_on_drop =
                    !given && lent.is_some() && TypeId::of::<Rp>() == TypeId::of::<()>();
                Some(Incoming::Call(
                    rq,
                    ReplyContext {
                        slot: slot_ref,
                        one_way: kind == kind::SEND || given,
                        lent,
                        unit_on_drop,
                        given,
                        valid: None,
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
        let conns = self
            .core
            .conns
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take_all();
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
                    // Failed: the caller reads no reply words.
                    words: false,
                    done: false,
                }
                .settle(status::SERVER_GONE);
            }
        }
        drop(conns);
    }
}

/// The future of [`Server::async_wait`].
#[must_use = "a future does nothing unless polled"]
pub struct AsyncWait<'a, Rq, Rp, E> {
    server: &'a Server<Rq, Rp, E>,
    /// Whether this wait had its spin: only its first poll spins, so a task that the reactor
    /// woke for a call another worker took goes back to sleep at once (as a blocking worker
    /// after a wake-up that found nothing).
    spun: bool,
}

impl<Rq, Rp, E> std::fmt::Debug for AsyncWait<'_, Rq, Rp, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncWait").finish_non_exhaustive()
    }
}

impl<Rq: Wire, Rp: Wire, E: Wire> std::future::Future for AsyncWait<'_, Rq, Rp, E> {
    type Output = Result<Incoming<Rq, Rp, E>, Error<E>>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        if coop::must_yield(cx) {
            return Poll::Pending;
        }
        let server = self.server;
        if let Some(m) = server.poll_once() {
            coop::ready();
            return Poll::Ready(Ok(m));
        }
        let core = &server.shared.core;
        // The spin of a blocking worker (the server's adaptive budget), for at most a
        // caller's default spin so that the executor's thread is not held longer: a client
        // that calls in a loop has its next call queued within a microsecond or two of the
        // last answer, and a task that sleeps instead pays two wake-ups a call (the reactor
        // thread's, then the executor's). When the client of the last call runs on this CPU
        // it cannot queue while we spin: the task yields the CPU to it for as long instead;
        // and when it is a task on this very thread, neither lets it run: the task sleeps.
        let client_on_this_thread =
            || core.client_tid.load(Ordering::Relaxed) == park::this_thread();
        if !std::mem::replace(&mut self.spun, true)
            && !core.spin.never()
            && !client_on_this_thread()
        {
            let here = core.client_cpu.load(Ordering::Relaxed) == park::this_cpu();
            let wait = core.spin.begin_wait(here);
            let client_here = here && wait.heeds_peer_here();
            let found = if client_here {
                let look = || Ok::<_, std::convert::Infallible>(server.poll_once());
                let Ok(found) = park::yield_on(park::YIELD_FOR, look);
                found
            } else {
                wait.spin_capped(DEFAULT_CALLER_SPIN, || server.poll_once())
                    .map(|(m, _)| m)
            };
            if let Some(m) = found {
                coop::ready();
                return Poll::Ready(Ok(m));
            }
        }
        {
            let mut w = core.async_waiters.lock().unwrap_or_else(|p| p.into_inner());
            if !w.wakers.iter().any(|k| k.will_wake(cx.waker())) {
                w.wakers.push(cx.waker().clone());
            }
            if !w.reactor {
                let weak = Arc::downgrade(core);
                let started = std::thread::Builder::new()
                    .name(format!("courier-async-{}", core.name))
                    .spawn(move || async_reactor(&weak));
                if started.is_err() {
                    w.wakers.clear();
                    return Poll::Ready(Err(Error::LimitReached));
                }
                w.reactor = true;
            }
        }
        core.async_registered.notify_one();
        // A message that came between the look above and the registration: the reactor may
        // have looked before we registered, so look again.
        match server.poll_once() {
            Some(m) => {
                coop::ready();
                Poll::Ready(Ok(m))
            }
            None => {
                coop::pending();
                Poll::Pending
            }
        }
    }
}

/// The async reactor of one server: while tasks wait, sleeps as a worker would (announced
/// in every warm connection, so clients ring), and wakes them when a call may be there. Ends
/// within [`MAX_SLEEP`] of the server's drop.
fn async_reactor(core: &std::sync::Weak<Core>) {
    let mut keys = Vec::new();
    let mut bells = Bells::default();
    loop {
        let Some(core) = core.upgrade() else { return };
        {
            let w = core.async_waiters.lock().unwrap_or_else(|p| p.into_inner());
            if w.wakers.is_empty() {
                // Bounded: the server may go away meanwhile.
                let _ = core
                    .async_registered
                    .wait_timeout(w, MAX_SLEEP)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
        }
        // Announce, then look (see "Waking" in the module docs): a client that queues a
        // call after the look sees the announcement and rings.
        core.read_bells(&mut bells);
        core.set_sleeping(1);
        fence(Ordering::SeqCst);
        let mut work = core.has_work();
        if !work {
            // Its own timer: the reactor ends within `MAX_SLEEP` of the server's drop, after
            // the accept thread. What ended the sleep does not say a call is there (the
            // server's word is rung for the accept thread's rounds too, and for connections
            // that come and go): only a queued call wakes the tasks.
            let _ = core.sleep(&mut bells, &mut keys, Some(MAX_SLEEP));
            core.take_wakeups(&keys);
            work = core.has_work();
        }
        bells.clear();
        core.set_sleeping(-1);
        if work {
            let wakers = std::mem::take(
                &mut core
                    .async_waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .wakers,
            );
            if wakers.is_empty() {
                // The wake may have been meant for a blocking worker.
                core.pass_wake_on();
            }
            wakers.into_iter().for_each(std::task::Waker::wake);
        }
    }
}

impl Core {
    /// Whether a warm connection has a call queued, or the cold ones are to be looked at
    /// ([`Core::cold_look`]) (a hint: a worker may take it first). A connection cut off for
    /// breaking the ring does not count, whatever its entries say.
    fn has_work(&self) -> bool {
        if self.cold_look.load(Ordering::Acquire) {
            return true;
        }
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        conns
            .warm()
            .iter()
            .any(|c| !c.broken.load(Ordering::Relaxed) && c.may_have_queued())
    }

    /// Whether this look covers the cold connections ([`Core::cold_look`], taken). A look
    /// that does comes after a SeqCst fence: a client that read its connection warm before
    /// it went cold, after it queued a call, did not ring (no worker slept), and the round
    /// that let it go cold set `cold_look` after that (see [`Core::cool_idle`]).
    fn take_cold_look(&self) -> bool {
        if !self.cold_look.load(Ordering::Relaxed) || !self.cold_look.swap(false, Ordering::Acquire)
        {
            return false;
        }
        fence(Ordering::SeqCst);
        true
    }

    /// Has the next look cover the cold connections ([`Core::cold_look`]).
    pub(super) fn look_at_cold(&self) {
        self.cold_look.store(true, Ordering::Release);
    }

    /// Adds `delta` to the sleeping workers and writes the count to every connection but the
    /// cold ones (whose `srv_sleep` says [`SLEEP_COLD`] whatever the count).
    fn set_sleeping(&self, delta: i32) {
        let mut n = self.sleeping.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_add_signed(delta);
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        for c in conns.warm() {
            c.sh.u32(SRV_SLEEP).store(*n, Ordering::SeqCst);
        }
    }

    /// A cold connection called: its `srv_sleep` says how many workers sleep again, so its
    /// client rings the doorbell from now on, and the sleeps under way (which do not watch
    /// that doorbell) end, each to read the doorbells again. A thread that read the
    /// connection as cold on its way to sleep read the server's word before (see
    /// [`Core::read_bells`]): our bump below changes it, so that sleep ends or never starts.
    fn warm(&self, conn: &Arc<Conn>) {
        let n = self.sleeping.lock().unwrap_or_else(|p| p.into_inner());
        let mut conns = self.conns.write().unwrap_or_else(|p| p.into_inner());
        // Not there: another worker warmed it, or it was forgotten.
        if !conns.warm_up(conn) {
            return;
        }
        conn.sh.u32(SRV_SLEEP).store(*n, Ordering::SeqCst);
        conn.cold.store(false, Ordering::Relaxed);
        drop(conns);
        drop(n);
        self.ring();
    }

    /// The accept thread's round, on the doorbells: a connection that neither called nor rang
    /// since the last round (nor connected: see [`Conn::active`]) goes cold. Its `srv_sleep`
    /// says [`SLEEP_COLD`], so its client rings the wake-up socket (read by the connection's
    /// watcher, which rings the server's word: [`Core::ring_one`]), and the looks,
    /// announcements and sleeps from now on leave it out: a server of many idle clients pays
    /// for the busy ones only (`futex_waitv` costs about 0.25 µs a word a sleep, and the
    /// announcement a store per connection).
    ///
    /// A client that read its `srv_sleep` before the store below, after it queued a call
    /// (and rang the doorbell, or did not as no worker slept), cannot be missed. The looks
    /// leave cold connections out, but this round then sets [`Core::cold_look`] and ends the
    /// sleeps (`end_long_sleeps`, which the accept thread runs next, under `sleeping`): a
    /// thread that announced its sleep before that is woken, one that announced after sees
    /// `cold_look` and looks at every connection, after a SeqCst fence. The client's fence
    /// comes before its read of `srv_sleep`, which read a value older than our store, and
    /// our store comes before that look's fence: the look sees the call (the two SeqCst
    /// fences order the pair as in the Dekker pattern).
    fn cool_idle(&self) {
        let _n = self.sleeping.lock().unwrap_or_else(|p| p.into_inner());
        let mut conns = self.conns.write().unwrap_or_else(|p| p.into_inner());
        // From the last warm one down: the one that takes the place of a connection let go
        // was looked at already.
        for i in (0..conns.warm).rev() {
            let c = &conns[i];
            if c.active.swap(false, Ordering::Relaxed) {
                continue;
            }
            c.sh.u32(SRV_SLEEP).store(SLEEP_COLD, Ordering::SeqCst);
            c.cold.store(true, Ordering::Relaxed);
            conns.cool(i);
        }
        drop(conns);
        // Every round, one look at the cold connections: a call queued just before its
        // connection went cold, unrung (no worker slept then), and whatever else a cold
        // connection holds (subscription ends waiting for room in its push ring). A worker
        // asleep is woken by this round's `end_long_sleeps`, which the accept thread runs
        // next.
        self.look_at_cold();
    }

    /// Wakes one sleeping thread for a cold connection's client, which rang its wake-up
    /// socket (read by the connection's watcher), and has the next look cover the cold
    /// connections.
    pub(super) fn ring_one(&self) {
        self.look_at_cold();
        self.wake_one();
    }

    /// Bumps the server's word, so that a thread on its way to sleep on it looks again, and
    /// wakes one thread asleep on it (on the doorbells).
    fn wake_one(&self) {
        self.poller.ring.fetch_add(1, Ordering::SeqCst);
        sys::futex_wake_one_private(&self.poller.ring);
    }

    /// Drops the connections of clients that are gone and whose last messages were taken.
    fn forget_finished(&self) {
        let gone: Vec<Arc<Conn>> = {
            let mut conns = self.conns.write().unwrap_or_else(|p| p.into_inner());
            conns.take_finished(Conn::finished)
        };
        drop(gone); // outside the lock: joins the watcher threads
        self.publish_stats();
    }

    /// Wakes a sleeping worker (a new connection, a dead client to forget). On the
    /// doorbells, every sleeping thread: each looks at the connections again for its next
    /// sleep (a new one's doorbell is in none of the sleeps under way).
    fn ring(&self) {
        if self.poller.doorbells {
            self.poller.ring.fetch_add(1, Ordering::SeqCst);
            sys::futex_wake_private(&self.poller.ring);
        } else {
            let _ = sys::eventfd_signal(self.poller.wake.as_fd());
        }
    }

    /// The accept thread's round, every [`MAX_SLEEP`] on the doorbells: ends the sleeps
    /// without a timer under way, so that none lasts longer than that (give or take the
    /// accept thread's own work between two rounds: taking one client).
    fn end_long_sleeps(&self) {
        if *self.sleeping.lock().unwrap_or_else(|p| p.into_inner()) > 0 {
            self.ring();
        }
    }

    /// The accept thread ends (the server's drop, an error, a panic): from now on every sleep
    /// sets its timer, and the sleeps without one under way end.
    fn end_rounds(&self) {
        self.poller.rounds.store(false, Ordering::SeqCst);
        self.ring();
    }

    /// A thread woken from its sleep on the doorbells took a call (or, the reactor, found no
    /// task to wake): if a call is still queued and a worker still sleeps, wakes one. A
    /// sleeper waits on every doorbell at once, and a wake that reaches it after another has
    /// woken it is spent on it: two clients ringing at once can wake one worker, which takes
    /// one call and would leave the other to the end of the next sleep (up to 500 ms), however
    /// long its own call takes. The server's word is bumped too, so that a worker about to
    /// sleep on its old value looks again.
    fn pass_wake_on(&self) {
        if !self.poller.doorbells {
            return;
        }
        let sleepers = *self.sleeping.lock().unwrap_or_else(|p| p.into_inner());
        if sleepers > 0 && self.has_work() {
            self.wake_one();
        }
    }

    /// Reads what a thread about to announce its sleep will sleep on ([`Bells`]), on the
    /// doorbells; nothing otherwise. The server's word first: a connection added after the
    /// list was read rings it afterwards.
    fn read_bells(&self, bells: &mut Bells) {
        bells.clear();
        if !self.poller.doorbells {
            return;
        }
        bells.ring = self.poller.ring.load(Ordering::SeqCst);
        // The warm connections only (see `Core::cool_idle` and `Core::warm`, which change
        // the list under its write lock).
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        for c in conns.warm().iter().filter(|c| !c.gone()) {
            if bells.conns.len() == DOORBELL_CLIENTS {
                bells.truncated = true;
                break;
            }
            // Acquire: pairs with the client's Release bump, after its call was queued.
            let v = c.sh.u32(DOORBELL).load(Ordering::Acquire);
            bells.conns.push((Arc::clone(c), v));
        }
    }

    /// Sleeps until a wake-up or `timeout`: on the doorbells read in `bells` (then emptied),
    /// or on the wake-up sockets; `keys` says what woke it (none: the timeout or a signal).
    /// With no `timeout`, a sleep on the doorbells sets no timer while the accept thread runs
    /// its rounds ([`Core::end_long_sleeps`]); any other sleep lasts [`MAX_SLEEP`] at most.
    fn sleep(
        &self,
        bells: &mut Bells,
        keys: &mut Vec<u64>,
        timeout: Option<Duration>,
    ) -> std::io::Result<()> {
        if !self.poller.doorbells {
            return self
                .poller
                .wait(keys, timeout.map_or(MAX_SLEEP, |t| t.min(MAX_SLEEP)));
        }
        keys.clear();
        let mut waits = std::mem::take(&mut bells.waits);
        waits.clear();
        waits.push(sys::waitv_entry(&self.poller.ring, bells.ring, true));
        for (c, v) in &bells.conns {
            waits.push(sys::waitv_entry(c.sh.u32(DOORBELL), *v, false));
        }
        // SeqCst: the accept thread clears `rounds` before its last bump of the server's
        // word, which we read before this (in `read_bells`): if we see the rounds still run,
        // that bump changes the word we wait on, and the sleep ends or never starts. (A word
        // of the rounds' own would cost every sleep a `futex_waitv` entry: as much as the
        // timer it saves.)
        let timeout = match timeout {
            _ if bells.truncated => Some(timeout.map_or(TRUNCATED_NAP, |t| t.min(TRUNCATED_NAP))),
            None if self.poller.rounds.load(Ordering::SeqCst) => None,
            None => Some(MAX_SLEEP),
            Some(t) => Some(t),
        };
        let woken = sys::futex_waitv(&waits, timeout);
        waits.clear();
        bells.waits = waits;
        // Entry 0 is the server's word, entry i + 1 connection i's doorbell.
        let by = match woken {
            Ok(sys::Woken::By(i)) => i.checked_sub(1),
            _ => None,
        };
        for (i, (c, v)) in bells.conns.drain(..).enumerate() {
            let now = c.sh.u32(DOORBELL).load(Ordering::Relaxed);
            if now != v {
                c.note_ring(now);
            } else if by == Some(i) {
                c.note_empty_wake();
            } else {
                continue;
            }
            // A connection that rings stays warm, so that a client that rings more than it
            // calls is still counted (and cut off), rather than let go cold and ignored.
            c.active.store(true, Ordering::Relaxed);
        }
        bells.truncated = false;
        if woken? != sys::Woken::No {
            keys.push(WAKE_KEY);
        }
        Ok(())
    }

    /// Reads the wake-ups that ended a sleep (`keys` from [`Poller::wait`]), so that a
    /// level-triggered source does not end the next sleep too.
    fn take_wakeups(&self, keys: &[u64]) {
        // A doorbell keeps no count to read.
        if keys.is_empty() || self.poller.doorbells {
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
            pid: self.pid,
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

    /// Records the counters on a worker's way to sleep, at most once per [`STATS_EVERY`]
    /// (taking them only then: they read every connection). A write skipped is made by a
    /// later sleep, at the latest after the end of this one (within [`MAX_SLEEP`]): the sleep
    /// is not cut short for it, since a sleep with a timer that near cost a parked call on a
    /// busy machine 7 % more (2.58 against 2.76 µs, medians of 12 alternated runs on the
    /// 2-vCPU VM; taking the counters cost about as much again).
    fn publish_stats_idle(&self, now: impl FnOnce() -> Instant) {
        if let Some(f) = &self.stats {
            f.write_within(|| self.stats(), STATS_EVERY, now);
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

/// Where idle workers sleep (see "Waking" in the module docs): on every warm connection's
/// doorbell and the server's own word, in one `futex_waitv`; or, in a server of more clients
/// than that covers or on a kernel without it, in an epoll instance watching each
/// connection's wake-up socket and the server's own eventfd.
struct Poller {
    epoll: OwnedFd,
    wake: OwnedFd,
    /// Whether the workers sleep on the doorbells (fixed when the server binds).
    doorbells: bool,
    /// The server's own word, on the doorbells: bumped and woken by [`Core::ring`].
    ring: std::sync::atomic::AtomicU32,
    /// Whether the accept thread runs its rounds (from the bind until it ends, whatever
    /// ends it): when not, every sleep sets its timer.
    rounds: std::sync::atomic::AtomicBool,
}

/// The server's connections, the warm ones first: a worker's looks, announcements and sleeps
/// go through [`Conns::warm`] only (see [`Core::cool_idle`]); `Conn::cold` says the same of
/// each (both change together, under `Core::sleeping` and the write lock of `Core::conns`).
/// Derefs to all of them.
#[derive(Default)]
struct Conns {
    all: Vec<Arc<Conn>>,
    /// `all[..warm]` are the warm ones.
    warm: usize,
}

impl std::ops::Deref for Conns {
    type Target = [Arc<Conn>];

    fn deref(&self) -> &[Arc<Conn>] {
        &self.all
    }
}

impl Conns {
    /// The warm connections.
    fn warm(&self) -> &[Arc<Conn>] {
        &self.all[..self.warm]
    }

    /// Adds a new connection, warm.
    fn push_warm(&mut self, conn: Arc<Conn>) {
        self.all.push(conn);
        let last = self.all.len() - 1;
        self.all.swap(self.warm, last);
        self.warm += 1;
    }

    /// Moves warm connection `i` among the cold ones (the last warm one takes its place).
    fn cool(&mut self, i: usize) {
        debug_assert!(i < self.warm);
        self.warm -= 1;
        self.all.swap(i, self.warm);
    }

    /// Moves `conn`, if cold, among the warm ones; `false` if it was not there.
    fn warm_up(&mut self, conn: &Arc<Conn>) -> bool {
        let Some(i) = self.all[self.warm..]
            .iter()
            .position(|c| Arc::ptr_eq(c, conn))
        else {
            return false;
        };
        self.all.swap(self.warm + i, self.warm);
        self.warm += 1;
        true
    }

    /// Takes the connections that `done` says are finished out of the list.
    fn take_finished(&mut self, done: impl Fn(&Conn) -> bool) -> Vec<Arc<Conn>> {
        let (gone, mut live): (Vec<_>, Vec<_>) = std::mem::take(&mut self.all)
            .into_iter()
            .partition(|c| done(c));
        // Warm ones first, as before (a stable sort on a flag).
        live.sort_by_key(|c| c.cold.load(Ordering::Relaxed));
        self.warm = live.partition_point(|c| !c.cold.load(Ordering::Relaxed));
        self.all = live;
        gone
    }

    /// Takes every connection out of the list.
    fn take_all(&mut self) -> Vec<Arc<Conn>> {
        self.warm = 0;
        std::mem::take(&mut self.all)
    }
}

/// What one thread sleeps on, on the doorbells: the values of the server's word and of each
/// connection's doorbell, read before it announced its sleep (a client that rings after
/// the announcement changes its doorbell from the value read, so the sleep ends or never
/// starts). The connections are held until the sleep ends, so the words stay mapped. Kept
/// per thread, emptied after each sleep (no allocation once warm).
#[derive(Default)]
struct Bells {
    ring: u32,
    conns: Vec<(Arc<Conn>, u32)>,
    /// More connections were open than one `futex_waitv` covers: the sleep is cut short.
    truncated: bool,
    waits: Vec<rustix::thread::futex::Wait>,
}

/// How many connections a worker's sleep buffers are sized for on its first wait.
const SLEEP_BUFFERS: usize = 8;

impl Bells {
    /// Makes room for the doorbells of `conns` connections.
    fn reserve(&mut self, conns: usize) {
        self.conns.reserve(conns);
        // The server's own word, then one per connection.
        self.waits.reserve(conns + 1);
    }

    /// Lets the connections go (a sleep that did not happen).
    fn clear(&mut self) {
        self.conns.clear();
        self.truncated = false;
    }
}

impl Poller {
    fn new(clients: usize) -> Result<Poller, ShmError> {
        let epoll = sys::epoll().map_err(ShmError::io("creating the workers' epoll"))?;
        let wake = sys::eventfd().map_err(ShmError::io("creating the workers' eventfd"))?;
        sys::set_nonblocking(wake.as_fd()).map_err(ShmError::io("setting up an eventfd"))?;
        sys::epoll_add(epoll.as_fd(), wake.as_fd(), WAKE_KEY)
            .map_err(ShmError::io("watching the workers' eventfd"))?;
        Ok(Poller {
            epoll,
            wake,
            doorbells: clients <= DOORBELL_CLIENTS && sys::has_futex_waitv(),
            ring: std::sync::atomic::AtomicU32::new(0),
            rounds: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Sleeps until a wake-up or `timeout`; the keys of the sources that woke us go to `keys`.
    fn wait(&self, keys: &mut Vec<u64>, timeout: Duration) -> std::io::Result<()> {
        sys::epoll_wait(self.epoll.as_fd(), keys, timeout)
    }
}

/// The accept thread: takes clients until the server's drop signals `stop`. When the process
/// runs out of descriptors or memory it waits (10 ms, doubling up to 1 s) instead of retrying
/// at once, so a full descriptor table costs no CPU; a client beyond `max_clients` is told so.
/// On the doorbells it also ends the workers' sleeps every [`MAX_SLEEP`] (they set no timer).
fn accept_loop(core: &Arc<Core>, listener: &Listener, stop: &OwnedFd) {
    const BACKOFF_FIRST: Duration = Duration::from_millis(10);
    const BACKOFF_MAX: Duration = Duration::from_secs(1);
    let mut backoff = BACKOFF_FIRST;
    // However this thread ends, the sleeps stop counting on its rounds.
    struct EndRounds<'a>(&'a Core);
    impl Drop for EndRounds<'_> {
        fn drop(&mut self) {
            self.0.end_rounds();
        }
    }
    let _end_rounds = EndRounds(core);
    // When the next round is due (clients coming often do not put it off): runs it if due,
    // and says when the next one is (none on the sockets, where sleeps set their timers).
    let mut round = Instant::now() + MAX_SLEEP;
    let mut run_round = |now: Instant| {
        if !core.poller.doorbells {
            return None;
        }
        if now >= round {
            core.cool_idle();
            core.end_long_sleeps();
            round = now + MAX_SLEEP;
        }
        Some(round)
    };
    loop {
        let now = Instant::now();
        let until_round = run_round(now).map(|next| next.saturating_duration_since(now));
        match listener.wait_client(stop.as_fd(), until_round) {
            Ok(Some(true)) => {}
            Ok(None) => continue,
            Ok(Some(false)) | Err(_) => return,
        }
        let held = || core.conns.read().unwrap_or_else(|p| p.into_inner()).len();
        // At the limit, forget the clients that have gone first: a worker does so when it
        // wakes, but none may be waiting now, and a client that left must not keep the
        // next one out.
        if held() >= core.limits.clients {
            core.forget_finished();
        }
        if held() >= core.limits.clients {
            let _ = listener.refuse_busy();
            continue;
        }
        let lay = core.lay;
        let started = listener
            .accept_with(Deadline::after(Duration::from_secs(1)).instant(), |seg| {
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
                // look again after a pause, or at once if the server is stopping. The rounds
                // go on meanwhile.
                let until = Instant::now() + backoff;
                loop {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    let next = run_round(now).map_or(until, |r| r.min(until));
                    if !matches!(sys::wait_readable(stop.as_fd(), Some(next)), Ok(false)) {
                        return;
                    }
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
            .push_warm(Arc::clone(&c));
        // Show the new connection how many workers sleep, then wake one: its first request
        // may have been queued before it was in the list.
        let n = *core.sleeping.lock().unwrap_or_else(|p| p.into_inner());
        c.sh.u32(SRV_SLEEP).store(n, Ordering::SeqCst);
        core.ring();
        core.publish_stats();
    }
}
