//! The bridge: [`expose`] makes a courier::shm service of this host answer zenoh queries.
//!
//! The bridge needs no type of the service: it forwards each request's bytes and signature
//! through a `courier_shm::Client<Raw, Raw, Raw>`, and the service checks them as it checks
//! any client's. Workers take queries from the queryable's queue; each decodes the frame
//! (refusing a bad one with [`Status::Protocol`], never panicking), makes the call with the
//! time the caller still waits, and answers. A request whose budget has run out is not sent
//! on: nobody waits for it.

use crate::frame::{Answer, Kind, Request, Status, NO_BUDGET};
use crate::{key_of, namespace, NetError};
use courier_core::error::Error;
use courier_shm::{Client, ConnectConfig, Raw, SendError, ShmBuf, Subscription, Wire};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zenoh::handlers::FifoChannelHandler;
use zenoh::query::{Query, Queryable};
use zenoh::{Session, Wait};

/// The courier::shm client the bridge forwards through.
type RawClient = Client<Raw, Raw, Raw>;

/// The most subscriptions one bridge forwards at once (each has a thread).
const MAX_SUBSCRIPTIONS: usize = 256;

/// How long a worker waits for a query before it looks at the stop flag.
const STOP_LOOK: Duration = Duration::from_millis(100);

/// How [`expose_with`] exposes a service.
#[derive(Debug, Clone)]
pub struct ExposeConfig {
    namespace: Option<String>,
    workers: usize,
    max_bytes: usize,
    connect: ConnectConfig,
    connect_timeout: Duration,
}

impl Default for ExposeConfig {
    fn default() -> Self {
        ExposeConfig {
            namespace: None,
            workers: 4,
            max_bytes: 64 << 20,
            connect: ConnectConfig::new(),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl ExposeConfig {
    /// Four workers, requests and lends up to 64 MiB, this host's name as the namespace.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key's namespace (`courier/<namespace>/<service>`); by default the host name.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    /// How many calls the bridge makes at once (1..=256).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.clamp(1, 256);
        self
    }

    /// The largest request, reply or lend the bridge forwards; larger ones are answered
    /// [`Status::TooLarge`] without reaching the service.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// The checks of the bridge's connection to the service (whose servers it trusts).
    pub fn connect_config(mut self, config: ConnectConfig) -> Self {
        self.connect = config;
        self
    }

    /// The key service `name` is exposed at with this config.
    fn key(&self, name: &str) -> Result<String, NetError> {
        match &self.namespace {
            Some(ns) => key_of(ns, name),
            None => key_of(&namespace(), name),
        }
    }

    /// How long [`expose_with`] waits for the service to appear.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

/// A service exposed on the network. Dropping it stops answering: the queryable is
/// undeclared, the workers end within 100 ms, the subscriptions it forwarded end.
pub struct Exposed {
    key: String,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Exposed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposed").field("key", &self.key).finish()
    }
}

impl Exposed {
    /// The zenoh key the service answers on.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Exposed {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        // The forwarders look at their flag at each value or every STOP_LOOK.
        for (_, ended) in lock(&self.shared.subscriptions).drain() {
            ended.store(true, Ordering::SeqCst);
        }
    }
}

/// What the workers share.
struct Shared {
    name: String,
    key: String,
    session: Session,
    config: ExposeConfig,
    /// Where the calls go.
    backend: Backend,
    queryable: Queryable<FifoChannelHandler<Query>>,
    stop: AtomicBool,
    /// The forwarded subscriptions, by push key: set to end one. A forwarder removes its own
    /// entry when it ends.
    subscriptions: Arc<Mutex<HashMap<String, Arc<AtomicBool>>>>,
}

/// Exposes this host's courier::shm service `name` at `courier/<host name>/<name>`: see
/// [`expose_with`].
///
/// # Errors
///
/// As [`expose_with`].
pub fn expose(session: &Session, name: &str) -> Result<Exposed, NetError> {
    expose_with(session, name, &ExposeConfig::new())
}

/// Exposes this host's courier::shm service `name` on the network, at the key
/// `courier/<namespace>/<name>`. The service needs no change and the bridge no type of it.
///
/// # Errors
///
/// [`NetError::InvalidName`] for a name or namespace that cannot be a key chunk,
/// [`NetError::Shm`] if the service cannot be reached within the config's connect timeout,
/// [`NetError::Zenoh`] if the queryable cannot be declared.
pub fn expose_with(
    session: &Session,
    name: &str,
    config: &ExposeConfig,
) -> Result<Exposed, NetError> {
    let key = config.key(name)?;
    let client = RawClient::connect_with(name, &config.connect, config.connect_timeout)?;
    start(
        session,
        name,
        key,
        config,
        Backend::Shm(Mutex::new(Some(client))),
    )
}

/// Exposes a courier::local service of this process (the client side of its channel) at
/// `courier/<namespace>/<name>`, as [`expose_with`] does a courier::shm one. Its types must
/// be able to travel (flat types, or `courier::shm::Postcard` ones). A local channel carries
/// calls and one-way messages: a network client's lends, scalars and subscriptions are
/// answered [`Status::Protocol`] (a `#[courier::service]` offers those on every transport).
///
/// # Errors
///
/// As [`expose_with`] (but the service is here: no connect error).
pub fn expose_local<Rq, Rp, E>(
    session: &Session,
    name: &str,
    client: courier_local::Client<Rq, Rp, E>,
    config: &ExposeConfig,
) -> Result<Exposed, NetError>
where
    Rq: Wire,
    Rp: Wire + Send,
    E: Wire + Send,
{
    let key = config.key(name)?;
    start(session, name, key, config, Backend::Local(Box::new(client)))
}

/// Where a bridge's calls go.
enum Backend {
    /// A courier::shm service, through a connection made again when it restarts.
    Shm(Mutex<Option<RawClient>>),
    /// A courier::local service of this process.
    Local(Box<dyn LocalService>),
}

/// A courier::local client, its types erased: serves one request frame.
trait LocalService: Send + Sync {
    fn serve(&self, rq: &Request<'_>, budget: Option<Duration>) -> Vec<u8>;
}

impl<Rq: Wire, Rp: Wire + Send, E: Wire + Send> LocalService for courier_local::Client<Rq, Rp, E> {
    fn serve(&self, rq: &Request<'_>, budget: Option<Duration>) -> Vec<u8> {
        if rq.kind == Kind::Hello {
            return Answer {
                words: [u64::from(std::process::id()), 0],
                ..Answer::status(Status::Ok)
            }
            .encode();
        }
        let Some(value) = crate::decode::<Rq>(rq.signature, rq.body) else {
            return Answer::status(Status::Protocol).encode();
        };
        match rq.kind {
            Kind::Call => {
                let r = match budget {
                    None => self.req(value),
                    Some(t) => self.req_timeout(value, t),
                };
                match r {
                    Ok(rp) => match crate::encode(&rp) {
                        Some(body) => Answer {
                            signature: rp.signature(),
                            body: &body,
                            ..Answer::status(Status::Ok)
                        }
                        .encode(),
                        None => Answer::status(Status::TooLarge).encode(),
                    },
                    Err(Error::App(e)) => match crate::encode(&e) {
                        Some(body) => Answer {
                            signature: e.signature(),
                            body: &body,
                            ..Answer::status(Status::App)
                        }
                        .encode(),
                        None => Answer::status(Status::TooLarge).encode(),
                    },
                    Err(e) => Answer::status(status_of(&e)).encode(),
                }
            }
            Kind::Send => {
                let r = match budget {
                    None => self.send(value),
                    Some(t) => self.send_timeout(value, t),
                };
                Answer::status(match r {
                    Ok(()) => Status::Ok,
                    Err(SendError::ServerDisappeared(_)) => Status::ServerGone,
                    Err(_) => Status::Timeout,
                })
                .encode()
            }
            _ => Answer::status(Status::Protocol).encode(),
        }
    }
}

/// Declares the queryable and starts the workers.
fn start(
    session: &Session,
    name: &str,
    key: String,
    config: &ExposeConfig,
    backend: Backend,
) -> Result<Exposed, NetError> {
    let queryable = session
        .declare_queryable(&key)
        .wait()
        .map_err(|e| NetError::Zenoh(e.to_string()))?;
    let shared = Arc::new(Shared {
        name: name.to_owned(),
        key: key.clone(),
        session: session.clone(),
        config: config.clone(),
        backend,
        queryable,
        stop: AtomicBool::new(false),
        subscriptions: Arc::default(),
    });
    let workers = (0..config.workers)
        .map(|i| {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("courier-net-{name}-{i}"))
                .spawn(move || worker(&shared))
                .map_err(|e| NetError::Zenoh(format!("starting a bridge worker: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Exposed {
        key,
        shared,
        workers,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A worker: takes queries until the bridge stops.
fn worker(shared: &Shared) {
    // A worker's lend buffer, kept while lends keep their size.
    let mut buf: Option<ShmBuf> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let query = match shared.queryable.recv_timeout(STOP_LOOK) {
            Ok(Some(q)) => q,
            Ok(None) => continue,
            Err(_) => return,
        };
        let payload = query.payload().map(|p| p.to_bytes().into_owned());
        let bytes = payload.unwrap_or_default();
        let answer = match Request::decode(&bytes) {
            Ok(rq) => shared.serve(&rq, &mut buf),
            Err(_) => Answer::status(Status::Protocol).encode(),
        };
        let _ = query.reply(&shared.key, answer).wait();
    }
}

/// A courier error as the status it travels as.
fn status_of<E>(e: &Error<E>) -> Status {
    match e {
        Error::App(_) => Status::App,
        Error::NoReply => Status::NoReply,
        Error::ServerDisappeared => Status::ServerGone,
        Error::Timeout => Status::Timeout,
        Error::TooLarge => Status::TooLarge,
        Error::LimitReached => Status::LimitReached,
        _ => Status::Protocol,
    }
}

/// An answer carrying a reply, an error or a failure.
fn answer_of(r: Result<Raw, Error<Raw>>, lent: &[u8]) -> Vec<u8> {
    match r {
        Ok(raw) => Answer {
            status: Status::Ok,
            words: [0; 2],
            signature: raw.signature,
            body: &raw.bytes,
            lent,
        }
        .encode(),
        Err(Error::App(raw)) => Answer {
            status: Status::App,
            words: [0; 2],
            signature: raw.signature,
            body: &raw.bytes,
            lent: &[],
        }
        .encode(),
        Err(e) => Answer::status(status_of(&e)).encode(),
    }
}

impl Shared {
    /// The connection to the service: the one made before, or a new one if the service
    /// went (and came back).
    fn client(&self, deadline: Option<Instant>) -> Option<RawClient> {
        let Backend::Shm(client) = &self.backend else {
            return None;
        };
        let mut c = lock(client);
        if let Some(client) = c.as_ref().filter(|c| !c.is_server_gone()) {
            return Some(client.clone());
        }
        let left = deadline.map_or(Duration::from_millis(200), |d| {
            d.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200))
        });
        *c = RawClient::connect_with(&self.name, &self.config.connect, left).ok();
        c.clone()
    }

    /// Makes the call `rq` asks for and returns the answer's bytes.
    fn serve(&self, rq: &Request<'_>, buf: &mut Option<ShmBuf>) -> Vec<u8> {
        let budget =
            (rq.budget_ms != NO_BUDGET).then(|| Duration::from_millis(rq.budget_ms.into()));
        if budget == Some(Duration::ZERO) {
            return Answer::status(Status::Timeout).encode();
        }
        if rq.body.len() > self.config.max_bytes || rq.lent.len() > self.config.max_bytes {
            return Answer::status(Status::TooLarge).encode();
        }
        let deadline = budget.and_then(|b| Instant::now().checked_add(b));
        if rq.kind == Kind::Unsubscribe {
            let key = String::from_utf8_lossy(rq.lent);
            if let Some(flag) = lock(&self.subscriptions).remove(key.as_ref()) {
                flag.store(true, Ordering::SeqCst);
            }
            return Answer::status(Status::Ok).encode();
        }
        if let Backend::Local(local) = &self.backend {
            return local.serve(rq, budget);
        }
        let Some(client) = self.client(deadline) else {
            return Answer::status(Status::ServerGone).encode();
        };
        let left = || deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let raw = Raw::new(rq.signature, rq.body.to_vec());
        match rq.kind {
            Kind::Hello => Answer {
                words: [u64::from(client.server_pid()), 0],
                ..Answer::status(Status::Ok)
            }
            .encode(),
            Kind::Call => answer_of(
                match left() {
                    None => client.req(raw),
                    Some(t) => client.req_timeout(raw, t),
                },
                &[],
            ),
            Kind::Send => {
                let r = match left() {
                    None => client.send(raw),
                    Some(t) => client.send_timeout(raw, t),
                };
                Answer::status(match r {
                    Ok(()) => Status::Ok,
                    Err(SendError::Timeout(_) | SendError::Full(_)) => Status::Timeout,
                    Err(SendError::TooLarge(_)) => Status::TooLarge,
                    Err(_) => Status::ServerGone,
                })
                .encode()
            }
            Kind::Lend | Kind::LendMut => {
                // A shared buffer cannot be empty: an empty lend arrives as one zero byte (a
                // typed service reads the length its request carries, so it sees none).
                let len = rq.lent.len().max(1);
                let b = match buf.take().filter(|b| b.len() == len && !b.is_poisoned()) {
                    Some(b) => b,
                    None => match ShmBuf::new(len) {
                        Ok(b) => b,
                        Err(_) => return Answer::status(Status::LimitReached).encode(),
                    },
                };
                let mut b = b;
                if b.view_mut().write_at(0, rq.lent).is_err() {
                    return Answer::status(Status::Protocol).encode();
                }
                let r = match (rq.kind, left()) {
                    (Kind::Lend, None) => client.lend(raw, &b),
                    (Kind::Lend, Some(t)) => client.lend_timeout(raw, &mut b, t),
                    (_, None) => client.lend_mut(raw, &mut b),
                    (_, Some(t)) => client.lend_mut_timeout(raw, &mut b, t),
                };
                let back = if rq.kind == Kind::LendMut && r.is_ok() {
                    let mut back = b.view().to_vec();
                    back.truncate(rq.lent.len());
                    back
                } else {
                    Vec::new()
                };
                *buf = Some(b);
                answer_of(r, &back)
            }
            Kind::Scalar => {
                let r = match left() {
                    None => client.scalar(rq.op, rq.args),
                    Some(t) => client.scalar_timeout(rq.op, rq.args, t),
                };
                Answer::status(match r {
                    Ok(()) => Status::Ok,
                    Err(e) => status_of(&e),
                })
                .encode()
            }
            Kind::BlockingScalar => {
                let r = match left() {
                    None => client.blocking_scalar(rq.op, rq.args),
                    Some(t) => client.blocking_scalar_timeout(rq.op, rq.args, t),
                };
                match r {
                    Ok(words) => Answer {
                        words,
                        ..Answer::status(Status::Ok)
                    }
                    .encode(),
                    Err(e) => Answer::status(status_of(&e)).encode(),
                }
            }
            Kind::Subscribe => self.subscribe(&client, raw, rq.lent, left()),
            Kind::Unsubscribe => unreachable!("answered above"),
        }
    }

    /// Subscribes to the service and forwards its pushes to `key` on a thread of their own.
    fn subscribe(
        &self,
        client: &RawClient,
        raw: Raw,
        key: &[u8],
        left: Option<Duration>,
    ) -> Vec<u8> {
        let Ok(key) = std::str::from_utf8(key) else {
            return Answer::status(Status::Protocol).encode();
        };
        // Pushes go under the service's own key, nowhere else.
        if !key.starts_with(&format!("{}/push/", self.key)) || key.contains(['*', '$', '?', '#']) {
            return Answer::status(Status::Protocol).encode();
        }
        // One thread per forwarded subscription: a client cannot make more than this many.
        if lock(&self.subscriptions).len() >= MAX_SUBSCRIPTIONS {
            return Answer::status(Status::LimitReached).encode();
        }
        let Ok(publisher) = self.session.declare_publisher(key.to_owned()).wait() else {
            return Answer::status(Status::Protocol).encode();
        };
        let sub = match left {
            None => client.subscribe(raw),
            Some(t) => client.subscribe_timeout(raw, t),
        };
        let sub = match sub {
            Ok(s) => s,
            Err(e) => return Answer::status(status_of(&e)).encode(),
        };
        let ended = Arc::new(AtomicBool::new(false));
        lock(&self.subscriptions).insert(key.to_owned(), Arc::clone(&ended));
        let (stop, all, own) = (
            Arc::clone(&ended),
            Arc::clone(&self.subscriptions),
            key.to_owned(),
        );
        let started = std::thread::Builder::new()
            .name(format!("courier-net-push-{}", self.name))
            .spawn(move || {
                forward_pushes(&sub, &publisher, &stop);
                lock(&all).remove(&own);
            });
        if started.is_err() {
            lock(&self.subscriptions).remove(key);
            return Answer::status(Status::LimitReached).encode();
        }
        Answer::status(Status::Ok).encode()
    }
}

/// Publishes each value of `sub` until it ends, the subscriber unsubscribes or nobody
/// listens on the key any more (the client's host went away).
fn forward_pushes(
    sub: &Subscription,
    publisher: &zenoh::pubsub::Publisher<'_>,
    ended: &AtomicBool,
) {
    let mut quiet = 0u32;
    loop {
        if ended.load(Ordering::SeqCst) {
            return;
        }
        match sub.recv_timeout::<Raw>(STOP_LOOK) {
            Ok(raw) => {
                let frame = Answer {
                    signature: raw.signature,
                    body: &raw.bytes,
                    ..Answer::status(Status::Ok)
                }
                .encode();
                if publisher.put(frame).wait().is_err() {
                    return;
                }
            }
            Err(Error::Timeout) => {
                // Every 5 s of quiet, ask whether anyone still listens.
                quiet += 1;
                if quiet % 50 == 0 {
                    let listening = publisher
                        .matching_status()
                        .wait()
                        .map_or(true, |m| m.matching());
                    if !listening {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = publisher.put(Answer::status(status_of(&e)).encode()).wait();
                return;
            }
        }
    }
}
