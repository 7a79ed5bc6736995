//! Typed services: what [`#[courier::service]`](macro@crate::service) generates runs on this.
//!
//! A service is a trait. The macro turns its methods into three flat enums (the requests, the
//! replies and the application errors, each variant tagged by a hash of its method's name, so
//! reordering methods changes nothing on the wire), a client `FooClient` whose methods are the
//! trait's, and a server `FooServer` whose `serve` calls an implementation of the trait. Both
//! wrap the transport-neutral [`Client`] and [`Server`] of this module, which carry the calls
//! over `courier::local` (threads and tasks of one process) or `courier::shm` (processes on
//! one host), so the service is written once and moves between the two by changing how the
//! client and server are made (`FooClient::pair()` or `FooServer::bind` and
//! `FooClient::connect`).
//!
//! The items of this module are the generated code's runtime; users meet them only through
//! the generated types and [`Interface`].
//!
//! # Method kinds
//!
//! | trait method | on the wire | client method returns |
//! |---|---|---|
//! | `fn m(&self, a: A) -> Result<T, E>` | a call; `Err` arrives as `Error::App(E)` | `Result<T, Error<E>>` |
//! | `fn m(&self, a: A) -> T` | a call | `Result<T, Error<Infallible>>` |
//! | `fn m(&self, a: A)` | one-way (`send`): the caller does not wait | `Result<(), Error<Infallible>>` |
//! | `fn m(&self, #[lend] d: &[u8]) -> ..` | a lend: the server reads the caller's bytes | as a call |
//! | `fn m(&self, #[lend_mut] d: &mut [u8]) -> ..` | a mutable lend: the server writes them | as a call |
//! | `#[scalar] fn m(&self, a: u32, b: bool) -> (u64, i32)` | a Xous scalar message: up to four integer words, up to two back, no slot payload | `Result<(u64, i32), Error<Infallible>>` |
//! | `#[scalar] fn m(&self, a: u32)` | a one-way scalar message | `Result<(), Error<Infallible>>` |
//! | `#[subscribe] fn m(&self, a: A, sink: Sink<E>)` | a subscription: the server pushes `E`s into the [`Sink`] until it drops it | `Result<Subscription<E>, Error<Infallible>>` ([`Subscription`]: `recv`, `recv_timeout`, `try_recv`, `recv_async`) |
//! | `#[deferred] fn m(&self, a: A, reply: Reply<T, E>)` | a call the server answers later, from anywhere ([`Reply`]) | `Result<T, Error<E>>` |
//!
//! Arguments, results and errors are flat types (`courier::flat`: integers, `bool`, `char`,
//! arrays, `flat::String<N>`, `flat::Vec<T, N>`, `#[derive(Ipc)]` types): a type that is not
//! is a compile error naming `IpcSafe`. With `#[courier::service(serde)]` (feature `serde`)
//! they are any serde types instead (std `String`, `Vec`, maps...): moved as they are in one
//! process, encoded with postcard across processes (an encoding per message, which flat types
//! do not pay); the interface signature then hashes the types as written.
//!
//! # Async servers
//!
//! A method may be an `async fn`; `FooServer::serve` is then an `async fn` too, for any
//! executor (across processes it waits with `courier::shm::Server::async_wait`, in one
//! process with `courier::local::Server::async_wait`). Its future is `Send` when the
//! methods' futures are, which Rust's `async fn` in traits does not promise: with a
//! multi-threaded executor, run it with `block_on` on a thread of its own or on a local set.
//!
//! # Lends and copies
//!
//! A service method receives `&[u8]`/`&mut [u8]`, a Rust reference, and no safe code may hold
//! one to bytes another process can write at the same time. Across processes the server
//! therefore copies the lent bytes into a buffer of its own worker (reused: no allocation per
//! call once warm) before the method runs, and copies a mutable lend back after it; the
//! client copies the caller's slice into a pooled `ShmBuf` registered with the server once.
//! In one process the bytes travel in a `Vec` (one allocation per lend).
//!
//! # Interface signature
//!
//! Each service has an [`Interface`]: its trait name, its methods and their kinds, and a
//! signature hashed from the method names, kinds and the flat signatures of every argument,
//! result and error type. `FooClient::connect` asks the server for its interface once (a
//! scalar message, outside the typed slots) and refuses a server that speaks another one with
//! `ShmError::InterfaceMismatch`, naming both.

use core::convert::Infallible;
use core::fmt;
use core::time::Duration;
use std::any::Any;
use std::boxed::Box;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use std::vec::Vec;

use courier_core::error::{Error, SendError};

/// A service's interface, as the macro describes it: the trait name, the methods with their
/// kinds, and a signature of all of it (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interface {
    /// The trait's name.
    pub name: &'static str,
    /// The signature: a hash of the method names, kinds and flat type signatures.
    pub signature: u64,
    /// Each method's name and kind (`"call"`, `"send"`, `"lend"`, `"lend_mut"`), in the
    /// trait's order.
    pub methods: &'static [(&'static str, &'static str)],
}

impl Interface {
    /// The one-line description a server gives `courier ls`: the interface, then each method
    /// with its kind.
    pub fn describe(&self) -> std::string::String {
        let methods: Vec<std::string::String> = self
            .methods
            .iter()
            .map(|(name, kind)| std::format!("{name} ({kind})"))
            .collect();
        std::format!("{self}: {}", methods.join(", "))
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (interface {:#018x})", self.name, self.signature)
    }
}

/// What a generated dispatch made of one request.
#[doc(hidden)]
#[derive(Debug)]
pub enum Outcome<Rp, F> {
    /// The method returned a value (or `()` for a one-way method).
    Reply(Rp),
    /// The method returned an application error.
    Fail(F),
    /// A `#[deferred]` method took the reply handle: it answers later, from anywhere.
    Deferred,
    /// The request does not fit the method (a lend without bytes, a length past the lent
    /// buffer): only a client of another build sends one. No reply: the caller sees
    /// `Error::NoReply`.
    Refuse,
}

/// The reply handle of one request, before a `#[deferred]` method takes it (only requests
/// without a lend have one).
#[doc(hidden)]
pub struct Pending<Rp, F> {
    inner: PendingInner<Rp, F>,
}

enum PendingInner<Rp, F> {
    Local(courier_local::ReplyContext<Envelope<Rp>, F>),
    #[cfg(target_os = "linux")]
    Shm(courier_shm::ReplyContext<Rp, F>),
}

impl<Rp: Wire, F: Wire> Pending<Rp, F> {
    /// The typed handle a `#[deferred]` method receives: `ok` and `err` put its answer into
    /// the service's reply and error enums.
    pub fn defer<T: 'static, E: 'static>(self, ok: fn(T) -> Rp, err: fn(E) -> F) -> Reply<T, E> {
        let answer: Answer<T, E> = match self.inner {
            PendingInner::Local(ctx) => Box::new(move |r| {
                let done = match r {
                    Ok(v) => ctx.reply(Envelope::plain(ok(v))),
                    Err(e) => ctx.fail(err(e)),
                };
                done.map_err(|e| e.map_app(|_| Error::Protocol))
            }),
            #[cfg(target_os = "linux")]
            PendingInner::Shm(ctx) => Box::new(move |r| {
                let done = match r {
                    Ok(v) => ctx.reply(ok(v)),
                    Err(e) => ctx.fail(err(e)),
                };
                done.map_err(|e| e.map_app(|_| Error::Protocol))
            }),
        };
        Reply {
            answer: Some(answer),
        }
    }
}

/// Sends a deferred answer through the transport's reply context.
type Answer<T, E> = Box<dyn FnOnce(Result<T, E>) -> Result<(), Error<()>> + Send>;

/// The answer a `#[deferred]` method owes: keep it, hand it to another thread, and answer
/// with [`reply`](Reply::reply) or [`fail`](Reply::fail) when ready. Dropping it unanswered
/// gives the caller `Error::NoReply`.
///
/// It boxes the transport's reply context: one allocation per deferred call.
///
/// # Examples
///
/// ```
/// use courier::service::Reply;
///
/// #[courier::service]
/// trait Clock {
///     /// Answers on another thread.
///     #[deferred]
///     fn later(&self, x: u64, reply: Reply<u64>);
/// }
///
/// struct Later;
/// impl Clock for Later {
///     fn later(&self, x: u64, reply: Reply<u64>) {
///         std::thread::spawn(move || reply.reply(x + 1));
///     }
/// }
///
/// let (client, server) = ClockClient::pair();
/// let worker = std::thread::spawn(move || server.serve(Later));
/// assert_eq!(client.later(41), Ok(42));
/// drop(client);
/// worker.join().unwrap().unwrap();
/// ```
pub struct Reply<T, E = core::convert::Infallible> {
    answer: Option<Answer<T, E>>,
}

impl<T, E> Reply<T, E> {
    /// Answers with `value`.
    ///
    /// # Errors
    ///
    /// What the transport says when the caller can no longer receive it (it gave up, or its
    /// process died): `Error::OriginDisappeared` and the like.
    pub fn reply(mut self, value: T) -> Result<(), Error<()>> {
        match self.answer.take() {
            Some(a) => a(Ok(value)),
            None => Err(Error::NoReply),
        }
    }

    /// Answers with the application error `error` (the caller gets `Error::App(error)`).
    ///
    /// # Errors
    ///
    /// As [`reply`](Reply::reply).
    pub fn fail(mut self, error: E) -> Result<(), Error<()>> {
        match self.answer.take() {
            Some(a) => a(Err(error)),
            None => Err(Error::NoReply),
        }
    }
}

impl<T, E> fmt::Debug for Reply<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("answered", &self.answer.is_none())
            .finish()
    }
}

/// What a typed server serves by: its interface (the answer to `connect`'s question) and how
/// its scalar methods map to requests and replies.
#[doc(hidden)]
pub struct Spec<Rq, Rp> {
    /// The interface.
    pub interface: Interface,
    /// The scalar methods.
    pub scalars: Scalars<Rq, Rp>,
}

/// One request a typed server took: its value, the bytes lent with it, and how it is
/// answered. The generated `serve` takes the value, runs the method (giving it the lent bytes
/// or, for a `#[deferred]` method, the reply handle) and finishes the request with the
/// outcome.
#[doc(hidden)]
pub struct Request<'s, Rq, Rp, F> {
    rq: Option<Rq>,
    to: ReplyTo<'s, Rp, F>,
}

enum ReplyTo<'s, Rp, F> {
    /// In one process: the reply context and what came with the request (the lent bytes,
    /// moved there and, for a mutable lend, back in the same box).
    Local {
        ctx: Option<courier_local::ReplyContext<Envelope<Rp>, F>>,
        extra: Option<Box<Extra>>,
        _scratch: core::marker::PhantomData<&'s mut Vec<u8>>,
    },
    /// A subscription across processes: the notifier a `#[subscribe]` method takes.
    #[cfg(target_os = "linux")]
    Subscribe {
        notifier: Option<courier_shm::Notifier>,
    },
    /// Across processes: the reply context (with the lent buffer, if any), the worker's
    /// private copy of lent bytes, and how much of a mutable lend the method was given.
    #[cfg(target_os = "linux")]
    Shm {
        ctx: Option<courier_shm::ReplyContext<Rp, F>>,
        scratch: &'s mut Vec<u8>,
        mutable: bool,
        written: Option<usize>,
    },
    /// A scalar message: two words back, if the caller waits.
    #[cfg(target_os = "linux")]
    Scalar {
        call: courier_shm::ScalarCall,
        words: fn(Rp) -> Option<[u64; 2]>,
    },
}

impl<Rq, Rp: Wire, F: Wire> Request<'_, Rq, Rp, F> {
    /// The request's value (once).
    ///
    /// # Panics
    ///
    /// If called twice: the generated code takes it once.
    pub fn take(&mut self) -> Rq {
        self.rq.take().expect("the request's value is taken once")
    }

    /// The first `len` bytes lent, for a `#[lend]` method; `None` if nothing (or less) was
    /// lent. Across processes they are copied into the worker's own buffer first: the method
    /// gets a `&[u8]`, which must never point into memory the caller can write.
    pub fn bytes(&mut self, len: u64) -> Option<&[u8]> {
        let len = usize::try_from(len).ok()?;
        match &mut self.to {
            ReplyTo::Local { extra, .. } => extra.as_deref()?.lent.as_deref()?.get(..len),
            #[cfg(target_os = "linux")]
            ReplyTo::Shm { ctx, scratch, .. } => {
                copy_lent(ctx.as_ref()?, len, scratch)?;
                Some(&scratch[..])
            }
            #[cfg(target_os = "linux")]
            ReplyTo::Scalar { .. } | ReplyTo::Subscribe { .. } => None,
        }
    }

    /// The first `len` bytes lent mutably, for a `#[lend_mut]` method; `None` if the lend was
    /// not mutable or is shorter. Across processes they are copied in, and back once the
    /// method returned a value ([`finish`](Request::finish)).
    pub fn bytes_mut(&mut self, len: u64) -> Option<&mut [u8]> {
        let len = usize::try_from(len).ok()?;
        match &mut self.to {
            ReplyTo::Local { extra, .. } => {
                let extra = extra.as_deref_mut()?;
                if !extra.mutable {
                    return None;
                }
                extra.lent.as_deref_mut()?.get_mut(..len)
            }
            #[cfg(target_os = "linux")]
            ReplyTo::Shm {
                ctx,
                scratch,
                mutable,
                written,
            } => {
                if !*mutable {
                    return None;
                }
                copy_lent(ctx.as_ref()?, len, scratch)?;
                *written = Some(len);
                Some(&mut scratch[..])
            }
            #[cfg(target_os = "linux")]
            ReplyTo::Scalar { .. } | ReplyTo::Subscribe { .. } => None,
        }
    }

    /// The reply handle, for a `#[deferred]` method: only a request without a lend has one
    /// (lent bytes are the caller's only until the method returns).
    pub fn pending(&mut self) -> Option<Pending<Rp, F>> {
        match &mut self.to {
            ReplyTo::Local { ctx, extra, .. }
                if extra.as_ref().is_none_or(|x| x.lent.is_none()) =>
            {
                ctx.take().map(|ctx| Pending {
                    inner: PendingInner::Local(ctx),
                })
            }
            #[cfg(target_os = "linux")]
            ReplyTo::Shm { ctx, .. } if ctx.as_ref().is_some_and(|c| c.lent().is_none()) => {
                ctx.take().map(|ctx| Pending {
                    inner: PendingInner::Shm(ctx),
                })
            }
            _ => None,
        }
    }

    /// Where a `#[subscribe]` method pushes its events of type `E`, carried across processes
    /// as `W` (`E` itself, or `Serde<E>` in a serde service); `None` if this request is not a
    /// subscription (or one of another event type).
    pub fn sink<E: Send + 'static, W: Carrier<E>>(&mut self) -> Option<Sink<E>> {
        match &mut self.to {
            ReplyTo::Local { extra, .. } => {
                let push = extra.as_mut()?.push.take()?;
                let queue = Arc::downcast::<LocalQueue<E>>(push).ok()?;
                Some(Sink {
                    inner: SinkInner::Local(queue),
                })
            }
            #[cfg(target_os = "linux")]
            ReplyTo::Subscribe { notifier } => Some(Sink {
                inner: SinkInner::Shm(notifier.take()?, push_as::<E, W>),
            }),
            #[cfg(target_os = "linux")]
            _ => None,
        }
    }

    /// Answers the request with `outcome` (nothing, if a deferred method took the handle; a
    /// one-way message's answer goes nowhere, which is what `send` means).
    pub fn finish(self, outcome: Outcome<Rp, F>) {
        match self.to {
            ReplyTo::Local {
                ctx: Some(ctx),
                extra,
                ..
            } => {
                let _ = match outcome {
                    Outcome::Reply(rp) => ctx.reply(Envelope {
                        msg: rp,
                        // A mutable lend's bytes go back in the box they came in.
                        extra: extra.filter(|x| x.mutable).map(|mut x| {
                            x.push = None;
                            x
                        }),
                    }),
                    Outcome::Fail(f) => ctx.fail(f),
                    Outcome::Refuse | Outcome::Deferred => Ok(()),
                };
            }
            #[cfg(target_os = "linux")]
            ReplyTo::Shm {
                ctx: Some(mut ctx),
                scratch,
                written,
                ..
            } => {
                if let (Some(n), Outcome::Reply(_)) = (written, &outcome) {
                    let copied = ctx.lent_mut().and_then(|mut v| {
                        v.slice_mut(..n)
                            .map(|mut part| part.copy_from_slice(&scratch[..n]))
                    });
                    if copied.is_none() {
                        return; // not writable after all: no reply (NoReply)
                    }
                }
                let _ = match outcome {
                    Outcome::Reply(rp) => ctx.reply(rp),
                    Outcome::Fail(f) => ctx.fail(f),
                    Outcome::Refuse | Outcome::Deferred => Ok(()),
                };
            }
            #[cfg(target_os = "linux")]
            ReplyTo::Scalar { call, words } => {
                if let Outcome::Reply(rp) = outcome {
                    if let Some(w) = words(rp) {
                        // A one-way scalar takes no reply; the result says so.
                        let _ = call.reply(w);
                    }
                }
            }
            // Taken by a deferred method, which answers it.
            _ => {}
        }
    }
}

/// A message of the in-process transport: the typed value, and what a lend or a subscription
/// adds to it, boxed: a plain call's envelope is its value and one pointer. The envelope is
/// what the call slot carries, and a small slot keeps a call on one cache line (a `u64`
/// round trip of a generated client took 270–290 ns with the extras inline, 64 bytes of
/// envelope, and 230 ns boxed).
#[doc(hidden)]
pub struct Envelope<T> {
    msg: T,
    extra: Option<Box<Extra>>,
}

/// The parts of an [`Envelope`] that a plain call does not have.
struct Extra {
    /// The bytes of a lend (moved there and, for a mutable lend, back).
    lent: Option<Vec<u8>>,
    mutable: bool,
    /// A subscription's queue (a `LocalQueue<E>` of the method's event type).
    push: Option<Arc<dyn Any + Send + Sync>>,
}

impl<T> Envelope<T> {
    fn plain(msg: T) -> Envelope<T> {
        Envelope { msg, extra: None }
    }

    /// `msg` with a copy of `data` lent (for writing too when `mutable`).
    fn lending(msg: T, data: &[u8], mutable: bool) -> Envelope<T> {
        Envelope {
            msg,
            extra: Some(Box::new(Extra {
                lent: Some(data.to_vec()),
                mutable,
                push: None,
            })),
        }
    }

    /// `msg` with a subscription's queue.
    fn pushing(msg: T, push: Arc<dyn Any + Send + Sync>) -> Envelope<T> {
        Envelope {
            msg,
            extra: Some(Box::new(Extra {
                lent: None,
                mutable: false,
                push: Some(push),
            })),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Envelope<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = self.extra.as_deref();
        f.debug_struct("Envelope")
            .field("msg", &self.msg)
            .field("lent", &x.and_then(|x| x.lent.as_ref()).map(Vec::len))
            .field("mutable", &x.is_some_and(|x| x.mutable))
            .field("push", &x.is_some_and(|x| x.push.is_some()))
            .finish()
    }
}

/// Scalar opcodes a typed server answers outside its typed slots: its interface signature
/// and name length, then its name 16 bytes at a time.
const INTERFACE_OP: u32 = 0xFFFF_FF01;
const INTERFACE_NAME_OP: u32 = 0xFFFF_FF02;

/// The client under every generated `FooClient`: one transport, and the timeout every call
/// of this handle waits at most (none by default).
#[doc(hidden)]
pub struct Client<Rq, Rp, F> {
    transport: ClientTransport<Rq, Rp, F>,
    timeout: Option<Duration>,
}

enum ClientTransport<Rq, Rp, F> {
    Local(courier_local::Client<Envelope<Rq>, Envelope<Rp>, F>),
    #[cfg(target_os = "linux")]
    Shm(std::sync::Arc<shm::ShmClient<Rq, Rp, F>>),
    #[cfg(all(feature = "net", target_os = "linux"))]
    Net(courier_net::Client<Rq, Rp, F>),
}

impl<Rq, Rp, F> Clone for Client<Rq, Rp, F> {
    fn clone(&self) -> Self {
        Client {
            transport: match &self.transport {
                ClientTransport::Local(c) => ClientTransport::Local(c.clone()),
                #[cfg(target_os = "linux")]
                ClientTransport::Shm(c) => ClientTransport::Shm(c.clone()),
                #[cfg(all(feature = "net", target_os = "linux"))]
                ClientTransport::Net(c) => ClientTransport::Net(c.clone()),
            },
            timeout: self.timeout,
        }
    }
}

impl<Rq, Rp, F> fmt::Debug for Client<Rq, Rp, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match &self.transport {
            ClientTransport::Local(_) => "local",
            #[cfg(target_os = "linux")]
            ClientTransport::Shm(_) => "shm",
            #[cfg(all(feature = "net", target_os = "linux"))]
            ClientTransport::Net(_) => "net",
        };
        f.debug_struct("Client")
            .field("transport", &transport)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A transport's `SendError` as the typed client reports it (a typed one-way call has
/// nothing to hand back: its arguments were packed into the request).
fn send_error<T, F>(e: SendError<T>) -> Error<F> {
    match e {
        SendError::ServerDisappeared(_) => Error::ServerDisappeared,
        SendError::TooLarge(_) => Error::TooLarge,
        _ => Error::Timeout,
    }
}

/// A local reply envelope's value (and, for a mutable lend, its bytes copied back).
fn local_reply<Rp, F>(
    env: Result<Envelope<Rp>, Error<F>>,
    back: Option<&mut [u8]>,
) -> Result<Rp, Error<F>> {
    let env = env?;
    if let Some(out) = back {
        match env.extra.and_then(|x| x.lent) {
            Some(bytes) if bytes.len() == out.len() => out.copy_from_slice(&bytes),
            _ => return Err(Error::Protocol),
        }
    }
    Ok(env.msg)
}

/// How the two sides of an in-process pair wait (`FooClient::pair_with`): by default (and
/// with `Duration::ZERO`) as every `courier::local` wait, an adaptive spin, then yields, then
/// sleep; with a busy-poll limit, a pure spin up to that limit first (cut short by a call's
/// timeout).
///
/// Busy-polling is the choice for a machine where other processes keep cores busy and the
/// service's latency matters more than a core: a sleeping side pays a wake-up (microseconds)
/// per call there, two busy-polling sides do not, and burn less CPU per call as well (see
/// [`courier::local::Client::set_busy_poll`](crate::local::Client::set_busy_poll)). Set it
/// on both sides, or the server may be asleep when the call comes. Across processes the same
/// knob is `ConnectConfig::busy_poll` and `ServerConfig::busy_poll` (`FooClient::connect_with`,
/// `FooServer::bind_with`).
///
/// ```
/// use courier::service::PairConfig;
/// use std::time::Duration;
///
/// #[courier::service]
/// trait Counter {
///     fn add(&self, n: u64) -> u64;
/// }
///
/// struct One;
/// impl Counter for One {
///     fn add(&self, n: u64) -> u64 {
///         n + 1
///     }
/// }
///
/// let (client, server) = CounterClient::pair_with(PairConfig::new().busy_poll(Duration::from_millis(1)));
/// let worker = std::thread::spawn(move || server.serve(One));
/// assert_eq!(client.add(41), Ok(42));
/// drop(client);
/// worker.join().unwrap().unwrap();
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairConfig {
    client_poll: Duration,
    server_poll: Duration,
}

impl PairConfig {
    /// The default: neither side busy-polls.
    pub const fn new() -> PairConfig {
        PairConfig {
            client_poll: Duration::ZERO,
            server_poll: Duration::ZERO,
        }
    }

    /// Both sides busy-poll up to `limit` ([`client_busy_poll`](Self::client_busy_poll) and
    /// [`server_busy_poll`](Self::server_busy_poll)).
    pub const fn busy_poll(self, limit: Duration) -> PairConfig {
        self.client_busy_poll(limit).server_busy_poll(limit)
    }

    /// The clients' waits for their replies spin up to `limit` before they sleep (and the
    /// clones' too).
    pub const fn client_busy_poll(mut self, limit: Duration) -> PairConfig {
        self.client_poll = limit;
        self
    }

    /// The server's waits for requests (every worker's) spin up to `limit` before they sleep.
    pub const fn server_busy_poll(mut self, limit: Duration) -> PairConfig {
        self.server_poll = limit;
        self
    }

    /// The clients' busy-poll limit (`ZERO`: none).
    pub const fn client_poll(&self) -> Duration {
        self.client_poll
    }

    /// The server's busy-poll limit (`ZERO`: none).
    pub const fn server_poll(&self) -> Duration {
        self.server_poll
    }
}

impl<Rq: Send + 'static, Rp: Send + 'static, F: Send + 'static> Client<Rq, Rp, F> {
    /// A client and a server of one process (`FooClient::pair`).
    pub fn pair() -> (Client<Rq, Rp, F>, Server<Rq, Rp, F>) {
        Self::pair_with(PairConfig::new())
    }

    /// A client and a server of one process that wait as `config` says
    /// (`FooClient::pair_with`).
    pub fn pair_with(config: PairConfig) -> (Client<Rq, Rp, F>, Server<Rq, Rp, F>) {
        let (server, client) = courier_local::channel();
        client.set_busy_poll(config.client_poll);
        server.set_busy_poll(config.server_poll);
        (
            Client {
                transport: ClientTransport::Local(client),
                timeout: None,
            },
            Server {
                transport: ServerTransport::Local(server),
                stop: Arc::default(),
            },
        )
    }

    /// This handle with every call bounded by `timeout` (`None`: no limit).
    pub fn with_timeout(&self, timeout: Option<Duration>) -> Client<Rq, Rp, F> {
        let mut c = self.clone();
        c.timeout = timeout;
        c
    }

    /// The timeout of this handle's calls.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

impl<Rq, Rp, F> Client<Rq, Rp, F>
where
    Rq: Wire,
    Rp: Wire,
    F: Wire,
{
    /// Whether the server is known to be gone.
    pub fn is_server_gone(&self) -> bool {
        match &self.transport {
            ClientTransport::Local(c) => c.is_server_gone(),
            #[cfg(target_os = "linux")]
            ClientTransport::Shm(c) => c.client.is_server_gone(),
            // Across a network a gone server is learned from a call's error: a bridge may
            // reconnect to a restarted one at any time.
            #[cfg(all(feature = "net", target_os = "linux"))]
            ClientTransport::Net(_) => false,
        }
    }

    /// A call: waits for the reply (or the timeout).
    pub fn call(&self, rq: Rq) -> Result<Rp, Error<F>> {
        match (&self.transport, self.timeout) {
            (ClientTransport::Local(c), _) => {
                local_reply(self.local_req(c, Envelope::plain(rq)), None)
            }
            #[cfg(target_os = "linux")]
            (ClientTransport::Shm(c), None) => c.client.req(rq),
            #[cfg(target_os = "linux")]
            (ClientTransport::Shm(c), Some(t)) => c.client.req_timeout(rq, t),
            #[cfg(all(feature = "net", target_os = "linux"))]
            (ClientTransport::Net(c), None) => c.req(rq),
            #[cfg(all(feature = "net", target_os = "linux"))]
            (ClientTransport::Net(c), Some(t)) => c.req_timeout(rq, t),
        }
    }

    /// A call awaited: never blocks the executor's thread. Cancel it by dropping the future
    /// (the handle's timeout does not apply: use the executor's).
    pub async fn call_async(&self, rq: Rq) -> Result<Rp, Error<F>> {
        match &self.transport {
            ClientTransport::Local(c) => local_reply(c.areq(Envelope::plain(rq)).await, None),
            #[cfg(target_os = "linux")]
            ClientTransport::Shm(c) => c.client.areq(rq).await,
            #[cfg(all(feature = "net", target_os = "linux"))]
            ClientTransport::Net(c) => c.areq(rq).await,
        }
    }

    /// A one-way message: returns once it is queued.
    pub fn send(&self, rq: Rq) -> Result<(), Error<F>> {
        match (&self.transport, self.timeout) {
            (ClientTransport::Local(c), None) => c.send(Envelope::plain(rq)).map_err(send_error),
            (ClientTransport::Local(c), Some(t)) => {
                c.send_timeout(Envelope::plain(rq), t).map_err(send_error)
            }
            #[cfg(target_os = "linux")]
            (ClientTransport::Shm(c), None) => c.client.send(rq).map_err(send_error),
            #[cfg(target_os = "linux")]
            (ClientTransport::Shm(c), Some(t)) => c.client.send_timeout(rq, t).map_err(send_error),
            #[cfg(all(feature = "net", target_os = "linux"))]
            (ClientTransport::Net(c), None) => c.send(rq).map_err(send_error),
            #[cfg(all(feature = "net", target_os = "linux"))]
            (ClientTransport::Net(c), Some(t)) => c.send_timeout(rq, t).map_err(send_error),
        }
    }

    /// A call in one process, bounded by the handle's timeout.
    fn local_req(
        &self,
        c: &courier_local::Client<Envelope<Rq>, Envelope<Rp>, F>,
        env: Envelope<Rq>,
    ) -> Result<Envelope<Rp>, Error<F>> {
        match self.timeout {
            None => c.req(env),
            Some(t) => c.req_timeout(env, t),
        }
    }

    /// A call that lends `data` to the server for reading.
    pub fn lend(&self, rq: Rq, data: &[u8]) -> Result<Rp, Error<F>> {
        match &self.transport {
            ClientTransport::Local(c) => {
                local_reply(self.local_req(c, Envelope::lending(rq, data, false)), None)
            }
            #[cfg(target_os = "linux")]
            ClientTransport::Shm(c) => c.lend(rq, shm::Data::Ref(data), self.timeout),
            #[cfg(all(feature = "net", target_os = "linux"))]
            ClientTransport::Net(c) => match self.timeout {
                None => c.lend(rq, data),
                Some(t) => c.lend_timeout(rq, data, t),
            },
        }
    }

    /// A call that lends `data` to the server for reading and writing; the server's writes
    /// are in `data` when it returns `Ok` (on an error, `data` may hold some of them).
    pub fn lend_mut(&self, rq: Rq, data: &mut [u8]) -> Result<Rp, Error<F>> {
        match &self.transport {
            ClientTransport::Local(c) => {
                let env = Envelope::lending(rq, data, true);
                local_reply(self.local_req(c, env), Some(data))
            }
            #[cfg(target_os = "linux")]
            ClientTransport::Shm(c) => c.lend(rq, shm::Data::Mut(data), self.timeout),
            #[cfg(all(feature = "net", target_os = "linux"))]
            ClientTransport::Net(c) => match self.timeout {
                None => c.lend_mut(rq, data),
                Some(t) => c.lend_mut_timeout(rq, data, t),
            },
        }
    }
}

impl<Rq, Rp, F> Client<Rq, Rp, F>
where
    Rq: Wire,
    Rp: Wire,
    F: Wire,
{
    /// A `#[scalar]` call: up to four words out, two back. Across processes it is a Xous
    /// scalar message (no slot payload, opcode `op`); in one process, the request `rq` and
    /// the words `unpack` finds in the reply.
    pub fn scalar(
        &self,
        op: u32,
        args: [u64; 4],
        rq: impl FnOnce() -> Rq,
        unpack: impl FnOnce(Rp) -> Option<[u64; 2]>,
    ) -> Result<[u64; 2], Error<F>> {
        match &self.transport {
            ClientTransport::Local(_) => self
                .call(rq())
                .and_then(|rp| unpack(rp).ok_or(Error::Protocol)),
            #[cfg(target_os = "linux")]
            ClientTransport::Shm(c) => match self.timeout {
                None => c.client.blocking_scalar(op, args),
                Some(t) => c.client.blocking_scalar_timeout(op, args, t),
            },
            #[cfg(all(feature = "net", target_os = "linux"))]
            ClientTransport::Net(c) => match self.timeout {
                None => c.blocking_scalar(op, args),
                Some(t) => c.blocking_scalar_timeout(op, args, t),
            },
        }
    }

    /// A one-way `#[scalar]` message (see [`scalar`](Client::scalar)).
    pub fn scalar_send(
        &self,
        op: u32,
        args: [u64; 4],
        rq: impl FnOnce() -> Rq,
    ) -> Result<(), Error<F>> {
        match &self.transport {
            ClientTransport::Local(_) => self.send(rq()),
            #[cfg(target_os = "linux")]
            ClientTransport::Shm(c) => match self.timeout {
                None => c.client.scalar(op, args),
                Some(t) => c.client.scalar_timeout(op, args, t),
            },
            #[cfg(all(feature = "net", target_os = "linux"))]
            ClientTransport::Net(c) => match self.timeout {
                None => c.scalar(op, args),
                Some(t) => c.scalar_timeout(op, args, t),
            },
        }
    }
}

/// How a server turns a scalar message into a request of its service and a reply into the
/// two words it answers with (generated for the `#[scalar]` methods).
#[doc(hidden)]
pub struct Scalars<Rq, Rp> {
    /// The request of opcode `op` with these argument words, if `op` is a scalar method.
    pub request: fn(u32, [u64; 4]) -> Option<Rq>,
    /// The words of a scalar method's reply.
    pub words: fn(Rp) -> Option<[u64; 2]>,
}

/// A value of a `#[courier::service(serde)]` service: any serde type, moved as it is in one
/// process and encoded with postcard across processes (copied out of shared memory before it
/// is decoded).
#[doc(hidden)]
#[cfg(feature = "serde")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serde<T>(pub T);

#[cfg(all(feature = "serde", target_os = "linux"))]
impl<T> courier_shm::Wire for Serde<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    const SIGNATURE: u64 = <courier_shm::Postcard<T> as courier_shm::Wire>::SIGNATURE;

    fn encode(&self, out: &mut courier_shm::ShmViewMut<'_>) -> Option<usize> {
        courier_shm::rpc::encode_postcard(&self.0, out)
    }

    fn decode(bytes: &courier_shm::ShmView<'_>) -> Option<Self> {
        <courier_shm::Postcard<T> as courier_shm::Wire>::decode(bytes).map(|p| Serde(p.0))
    }
}

/// Why a pushed event was not delivered (the event is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushError {
    /// The subscriber dropped its subscription.
    Unsubscribed,
    /// The subscriber's process is gone.
    Gone,
    /// The subscriber has not read the events before: its queue is full (a slow reader costs
    /// the server nothing, and never blocks it).
    Full,
    /// The event is larger than the transport's push record.
    TooLarge,
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PushError::Unsubscribed => "the subscriber unsubscribed",
            PushError::Gone => "the subscriber is gone",
            PushError::Full => "the subscriber's queue is full",
            PushError::TooLarge => "the event is larger than a push record",
        })
    }
}

impl std::error::Error for PushError {}

/// How many events a subscription holds in one process before pushes fail with
/// [`PushError::Full`] (across processes: the server's `push_depth`).
const LOCAL_PUSH_DEPTH: usize = 64;

/// The queue of one subscription in one process.
struct LocalQueue<E> {
    state: Mutex<QueueState<E>>,
    ready: Condvar,
}

struct QueueState<E> {
    events: VecDeque<E>,
    /// The sink was dropped: after the queued events, the stream ends.
    ended: bool,
    /// The subscription was dropped: pushes fail.
    unsubscribed: bool,
    /// A task waiting in `recv_async`.
    waker: Option<Waker>,
}

impl<E> LocalQueue<E> {
    fn new() -> LocalQueue<E> {
        LocalQueue {
            state: Mutex::new(QueueState {
                events: VecDeque::new(),
                ended: false,
                unsubscribed: false,
                waker: None,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState<E>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the state and wakes whoever waits.
    fn notify(&self, change: impl FnOnce(&mut QueueState<E>)) {
        let mut s = self.lock();
        change(&mut s);
        let waker = s.waker.take();
        drop(s);
        self.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Where a `#[subscribe]` method pushes its events: keep it (on another thread, say) and
/// [`push`](Sink::push); dropping it ends the subscriber's stream. Pushing never blocks.
pub struct Sink<E> {
    inner: SinkInner<E>,
}

enum SinkInner<E> {
    Local(Arc<LocalQueue<E>>),
    /// The notifier, and how an `E` goes into it (the carrier chosen by the macro).
    #[cfg(target_os = "linux")]
    Shm(courier_shm::Notifier, PushFn<E>),
}

#[cfg(target_os = "linux")]
type PushFn<E> = fn(&courier_shm::Notifier, E) -> Result<(), courier_shm::PushError>;

/// Pushes `event` carried as `W`.
#[cfg(target_os = "linux")]
fn push_as<E, W: Carrier<E>>(
    n: &courier_shm::Notifier,
    event: E,
) -> Result<(), courier_shm::PushError> {
    n.push(W::carry(event))
}

/// How a subscription's event of type `E` travels across processes: as itself (a flat type),
/// or as `Serde<E>` in a `#[courier::service(serde)]` service. In one process it is moved.
#[doc(hidden)]
pub trait Carrier<E>: Wire {
    /// The event as it travels.
    fn carry(event: E) -> Self;
    /// The event as it arrived.
    fn deliver(self) -> E;
}

impl<T: Wire> Carrier<T> for T {
    fn carry(event: T) -> T {
        event
    }
    fn deliver(self) -> T {
        self
    }
}

#[cfg(feature = "serde")]
impl<T> Carrier<T> for Serde<T>
where
    Serde<T>: Wire,
{
    fn carry(event: T) -> Serde<T> {
        Serde(event)
    }
    fn deliver(self) -> T {
        self.0
    }
}

impl<E> Sink<E> {
    /// Pushes `event` to the subscriber.
    ///
    /// # Errors
    ///
    /// [`PushError`]: the event was not delivered.
    pub fn push(&self, event: E) -> Result<(), PushError> {
        match &self.inner {
            SinkInner::Local(q) => {
                let mut s = q.lock();
                if s.unsubscribed {
                    return Err(PushError::Unsubscribed);
                }
                if s.events.len() >= LOCAL_PUSH_DEPTH {
                    return Err(PushError::Full);
                }
                s.events.push_back(event);
                let waker = s.waker.take();
                drop(s);
                q.ready.notify_all();
                if let Some(w) = waker {
                    w.wake();
                }
                Ok(())
            }
            #[cfg(target_os = "linux")]
            SinkInner::Shm(n, push) => push(n, event).map_err(|e| match e {
                courier_shm::PushError::Unsubscribed => PushError::Unsubscribed,
                courier_shm::PushError::ClientGone => PushError::Gone,
                courier_shm::PushError::Full => PushError::Full,
                _ => PushError::TooLarge,
            }),
        }
    }

    /// Whether the subscriber still listens.
    pub fn is_subscribed(&self) -> bool {
        match &self.inner {
            SinkInner::Local(q) => !q.lock().unsubscribed,
            #[cfg(target_os = "linux")]
            SinkInner::Shm(n, _) => n.is_subscribed(),
        }
    }
}

impl<E> Drop for Sink<E> {
    fn drop(&mut self) {
        if let SinkInner::Local(q) = &self.inner {
            q.notify(|s| s.ended = true);
        }
    }
}

impl<E> fmt::Debug for Sink<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink").finish_non_exhaustive()
    }
}

/// The events of a `#[subscribe]` method, in the order pushed. The stream ends
/// (`Error::NoReply`) once the server drops its [`Sink`] and the queued events are read;
/// dropping the subscription tells the server ([`PushError::Unsubscribed`]).
///
/// `W` is how the events travel across processes (`E` itself, or `Serde<E>` in a serde
/// service); the generated client picks it.
pub struct Subscription<E, W = E> {
    inner: SubInner<E, W>,
}

enum SubInner<E, W> {
    Local(Arc<LocalQueue<E>>),
    #[cfg(target_os = "linux")]
    Shm(
        courier_shm::Subscription,
        core::marker::PhantomData<fn() -> (E, W)>,
    ),
    #[cfg(all(feature = "net", target_os = "linux"))]
    Net(
        courier_net::Subscription,
        core::marker::PhantomData<fn() -> (E, W)>,
    ),
}

impl<E: Send + 'static, W: Carrier<E>> Subscription<E, W> {
    /// The next event if one is there.
    ///
    /// # Errors
    ///
    /// `Error::NoReply` once the stream has ended, `Error::ServerDisappeared`,
    /// `Error::Protocol` for an event that is not an `E`.
    pub fn try_recv(&self) -> Result<Option<E>, Error<()>> {
        match &self.inner {
            SubInner::Local(q) => {
                let mut s = q.lock();
                match s.events.pop_front() {
                    Some(e) => Ok(Some(e)),
                    None if s.ended => Err(Error::NoReply),
                    None => Ok(None),
                }
            }
            #[cfg(target_os = "linux")]
            SubInner::Shm(sub, _) => Ok(sub.try_recv::<W>()?.map(W::deliver)),
            #[cfg(all(feature = "net", target_os = "linux"))]
            SubInner::Net(sub, _) => Ok(sub.try_recv::<W>()?.map(W::deliver)),
        }
    }

    /// Waits for the next event.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Subscription::try_recv).
    pub fn recv(&self) -> Result<E, Error<()>> {
        self.recv_until(None)
    }

    /// Waits at most `timeout` for the next event.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Subscription::try_recv), and `Error::Timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<E, Error<()>> {
        self.recv_until(Instant::now().checked_add(timeout))
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<E, Error<()>> {
        match &self.inner {
            SubInner::Local(q) => {
                let mut s = q.lock();
                loop {
                    if let Some(e) = s.events.pop_front() {
                        return Ok(e);
                    }
                    if s.ended {
                        return Err(Error::NoReply);
                    }
                    s = match deadline {
                        None => q.ready.wait(s).unwrap_or_else(|p| p.into_inner()),
                        Some(d) => {
                            let left = d.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                return Err(Error::Timeout);
                            }
                            q.ready
                                .wait_timeout(s, left)
                                .unwrap_or_else(|p| p.into_inner())
                                .0
                        }
                    };
                }
            }
            #[cfg(target_os = "linux")]
            SubInner::Shm(sub, _) => match deadline {
                None => sub.recv::<W>(),
                Some(d) => sub.recv_timeout::<W>(d.saturating_duration_since(Instant::now())),
            }
            .map(W::deliver),
            // A network subscription has only bounded waits: an unbounded one waits in
            // one-second steps (a host that dies sends no end; use `recv_timeout` there).
            #[cfg(all(feature = "net", target_os = "linux"))]
            SubInner::Net(sub, _) => loop {
                let step = Duration::from_secs(1);
                let wait = deadline.map_or(step, |d| {
                    d.saturating_duration_since(Instant::now()).min(step)
                });
                match sub.recv_timeout::<W>(wait) {
                    Err(Error::Timeout) if deadline.is_none_or(|d| Instant::now() < d) => {}
                    r => break r.map(W::deliver),
                }
            },
        }
    }

    /// The next event, awaited: never blocks the executor's thread.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Subscription::try_recv).
    pub async fn recv_async(&self) -> Result<E, Error<()>> {
        match &self.inner {
            SubInner::Local(q) => {
                core::future::poll_fn(|cx: &mut Context<'_>| {
                    let mut s = q.lock();
                    if let Some(e) = s.events.pop_front() {
                        return Poll::Ready(Ok(e));
                    }
                    if s.ended {
                        return Poll::Ready(Err(Error::NoReply));
                    }
                    s.waker = Some(cx.waker().clone());
                    Poll::Pending
                })
                .await
            }
            #[cfg(target_os = "linux")]
            SubInner::Shm(sub, _) => sub.recv_async::<W>().await.map(W::deliver),
            #[cfg(all(feature = "net", target_os = "linux"))]
            SubInner::Net(sub, _) => sub.recv_async::<W>().await.map(W::deliver),
        }
    }
}

impl<E, W> Drop for Subscription<E, W> {
    fn drop(&mut self) {
        if let SubInner::Local(q) = &self.inner {
            q.notify(|s| s.unsubscribed = true);
        }
    }
}

impl<E, W> fmt::Debug for Subscription<E, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl<Rq, Rp, F> Client<Rq, Rp, F>
where
    Rq: Wire,
    Rp: Wire,
    F: Wire,
{
    /// A subscription: `rq` goes to the server's `#[subscribe]` method, which pushes events of
    /// type `E` (carried as `W` across processes) until it drops its [`Sink`].
    pub fn subscribe<E: Send + 'static, W: Carrier<E>>(
        &self,
        rq: Rq,
    ) -> Result<Subscription<E, W>, Error<F>> {
        match &self.transport {
            ClientTransport::Local(c) => {
                let queue = Arc::new(LocalQueue::<E>::new());
                let push: Arc<dyn Any + Send + Sync> = queue.clone();
                let env = Envelope::pushing(rq, push);
                match self.timeout {
                    None => c.send(env),
                    Some(t) => c.send_timeout(env, t),
                }
                .map_err(send_error)?;
                Ok(Subscription {
                    inner: SubInner::Local(queue),
                })
            }
            #[cfg(target_os = "linux")]
            ClientTransport::Shm(c) => {
                let sub = match self.timeout {
                    None => c.client.subscribe(rq),
                    Some(t) => c.client.subscribe_timeout(rq, t),
                }?;
                Ok(Subscription {
                    inner: SubInner::Shm(sub, core::marker::PhantomData),
                })
            }
            #[cfg(all(feature = "net", target_os = "linux"))]
            ClientTransport::Net(c) => {
                let sub = match self.timeout {
                    None => c.subscribe(rq),
                    Some(t) => c.subscribe_timeout(rq, t),
                }?;
                Ok(Subscription {
                    inner: SubInner::Net(sub, core::marker::PhantomData),
                })
            }
        }
    }
}

/// What may travel in a typed service: on Linux, what `courier::shm` can carry (flat types);
/// elsewhere any `Send` value (only the in-process transport exists there).
#[doc(hidden)]
#[cfg(target_os = "linux")]
pub trait Wire: courier_shm::Wire {}
#[cfg(target_os = "linux")]
impl<T: courier_shm::Wire> Wire for T {}
#[doc(hidden)]
#[cfg(not(target_os = "linux"))]
pub trait Wire: Send + 'static {}
#[cfg(not(target_os = "linux"))]
impl<T: Send + 'static> Wire for T {}

/// The server under every generated `FooServer`.
#[doc(hidden)]
pub struct Server<Rq, Rp, F> {
    transport: ServerTransport<Rq, Rp, F>,
    /// Set by [`Server::stop`]; shared by clones.
    stop: Arc<core::sync::atomic::AtomicBool>,
}

/// How often a blocking `serve` looks at the stop flag while no request comes.
const STOP_LOOK: Duration = Duration::from_millis(250);

enum ServerTransport<Rq, Rp, F> {
    Local(courier_local::Server<Envelope<Rq>, Envelope<Rp>, F>),
    #[cfg(target_os = "linux")]
    Shm(courier_shm::Server<Rq, Rp, F>),
}

impl<Rq, Rp, F> Clone for Server<Rq, Rp, F> {
    fn clone(&self) -> Self {
        Server {
            transport: match &self.transport {
                ServerTransport::Local(s) => ServerTransport::Local(s.clone()),
                #[cfg(target_os = "linux")]
                ServerTransport::Shm(s) => ServerTransport::Shm(s.clone()),
            },
            stop: self.stop.clone(),
        }
    }
}

impl<Rq, Rp, F> fmt::Debug for Server<Rq, Rp, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match &self.transport {
            ServerTransport::Local(_) => "local",
            #[cfg(target_os = "linux")]
            ServerTransport::Shm(_) => "shm",
        };
        f.debug_struct("Server")
            .field("transport", &transport)
            .finish()
    }
}

/// Why a typed server stopped serving.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeError {
    /// The transport could not wait for requests: what its server's `wait` reported (across
    /// processes, [`Error::LimitReached`] when the system refuses the wait's poll or the
    /// async reactor's thread).
    Wait(Error<Infallible>),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ServeError::Wait(ref e) => write!(f, "serving failed: {e}"),
        }
    }
}

impl std::error::Error for ServeError {}

impl<Rq: Wire, Rp: Wire, F: Wire> Server<Rq, Rp, F> {
    /// The next request, waiting for it on the calling thread; `None` once every client is
    /// gone (in one process; across processes new clients may always come). Interface
    /// questions are answered here; `scratch` holds the copy of a lend across processes.
    ///
    /// # Errors
    ///
    /// [`ServeError`] if the shared-memory server fails.
    pub fn next<'s>(
        &self,
        spec: &Spec<Rq, Rp>,
        scratch: &'s mut Vec<u8>,
    ) -> Result<Option<Request<'s, Rq, Rp, F>>, ServeError> {
        let stopped = || self.stop.load(core::sync::atomic::Ordering::SeqCst);
        match &self.transport {
            ServerTransport::Local(server) => loop {
                if stopped() {
                    return Ok(None);
                }
                match server.wait_timeout(STOP_LOOK) {
                    Ok(request) => return Ok(Some(local_request(request))),
                    Err(Error::Timeout) => {}
                    Err(_) => return Ok(None), // every client is gone
                }
            },
            #[cfg(target_os = "linux")]
            ServerTransport::Shm(server) => {
                let parts = loop {
                    if stopped() {
                        return Ok(None);
                    }
                    let incoming = match server.wait_timeout(STOP_LOOK) {
                        Ok(incoming) => incoming,
                        Err(Error::Timeout) => continue,
                        Err(e) => return Err(ServeError::Wait(e.map_app(|_| Error::Protocol))),
                    };
                    if let Some(parts) = shm::classify(incoming, spec) {
                        break parts;
                    }
                };
                Ok(Some(parts.into_request(scratch)))
            }
        }
    }

    /// Asks every `serve` of this server and its clones to return `Ok(())`: a blocking one
    /// within [`STOP_LOOK`] (250 ms), an async one when its next request comes. Requests
    /// already taken are answered first.
    pub fn stop(&self) {
        self.stop.store(true, core::sync::atomic::Ordering::SeqCst);
    }

    /// [`next`](Server::next) for a task: never blocks the executor's thread.
    ///
    /// # Errors
    ///
    /// As [`next`](Server::next).
    pub async fn next_async<'s>(
        &self,
        spec: &Spec<Rq, Rp>,
        scratch: &'s mut Vec<u8>,
    ) -> Result<Option<Request<'s, Rq, Rp, F>>, ServeError> {
        if self.stop.load(core::sync::atomic::Ordering::SeqCst) {
            return Ok(None);
        }
        match &self.transport {
            ServerTransport::Local(server) => Ok(server.async_wait().await.ok().map(local_request)),
            #[cfg(target_os = "linux")]
            ServerTransport::Shm(server) => {
                let parts = loop {
                    let incoming = server
                        .async_wait()
                        .await
                        .map_err(|e| ServeError::Wait(e.map_app(|_| Error::Protocol)))?;
                    if let Some(parts) = shm::classify(incoming, spec) {
                        break parts;
                    }
                };
                Ok(Some(parts.into_request(scratch)))
            }
        }
    }
}

/// Copies the first `len` bytes `ctx`'s caller lent into `scratch` (the worker's own
/// memory); `None` if nothing, or less, was lent.
#[cfg(target_os = "linux")]
fn copy_lent<Rp: Wire, F: Wire>(
    ctx: &courier_shm::ReplyContext<Rp, F>,
    len: usize,
    scratch: &mut Vec<u8>,
) -> Option<()> {
    let lent = ctx.lent()?;
    let part = lent.slice(..len)?;
    scratch.clear();
    scratch.resize(len, 0);
    part.copy_to_slice(scratch);
    Some(())
}

/// A request of the in-process transport.
fn local_request<'s, Rq, Rp, F>(
    (env, ctx): courier_local::Request<Envelope<Rq>, Envelope<Rp>, F>,
) -> Request<'s, Rq, Rp, F> {
    Request {
        rq: Some(env.msg),
        to: ReplyTo::Local {
            ctx: Some(ctx),
            extra: env.extra,
            _scratch: core::marker::PhantomData,
        },
    }
}

#[cfg(target_os = "linux")]
impl<Rq: Wire, Rp: Wire, F: Wire> Server<Rq, Rp, F> {
    /// Takes the service name `name` and describes `interface` for `courier ls`
    /// (`FooServer::bind_with`).
    pub fn bind(
        name: &str,
        interface: &Interface,
        config: courier_shm::ServerConfig,
    ) -> Result<Self, courier_shm::ShmError> {
        let server = courier_shm::Server::bind(name, config)?;
        server.describe(&interface.describe());
        Ok(Server {
            transport: ServerTransport::Shm(server),
            stop: Arc::default(),
        })
    }
}

#[cfg(target_os = "linux")]
impl<Rq: Wire, Rp: Wire, F: Wire> Client<Rq, Rp, F> {
    /// Connects to the server of `name` and checks that it speaks `interface`
    /// (`FooClient::connect`).
    pub fn connect(
        name: &str,
        interface: &Interface,
        config: &courier_shm::ConnectConfig,
        timeout: Duration,
    ) -> Result<Self, courier_shm::ShmError> {
        let client = courier_shm::Client::connect_with(name, config, timeout)?;
        shm::check_interface(&client, name, interface, timeout)?;
        Ok(Client {
            transport: ClientTransport::Shm(std::sync::Arc::new(shm::ShmClient {
                client,
                pool: std::sync::Mutex::new(Vec::new()),
            })),
            timeout: None,
        })
    }
}

/// Asks a server for its interface with `ask` (a blocking scalar: the two interface
/// questions travel outside the typed slots) and compares it with `ours`: `Err(None)` if
/// time ran out, `Err(Some(theirs))` naming what the server speaks instead.
#[cfg(target_os = "linux")]
fn interface_of(
    ask: impl Fn(u32, [u64; 4]) -> Result<[u64; 2], Error<()>>,
    ours: &Interface,
) -> Result<(), Option<std::string::String>> {
    let [signature, len] = match ask(INTERFACE_OP, [0; 4]) {
        Ok(words) => words,
        Err(Error::Timeout) => return Err(None),
        Err(e) => {
            return Err(Some(std::format!(
                "no interface it would describe ({e}): not a #[courier::service] server"
            )))
        }
    };
    if signature == ours.signature {
        return Ok(());
    }
    // Another interface: fetch its name (at most 256 bytes, 16 per message) to say which.
    let len = len.min(256) as usize;
    let mut bytes = Vec::with_capacity(len);
    for chunk in 0..len.div_ceil(16) {
        match ask(INTERFACE_NAME_OP, [chunk as u64, 0, 0, 0]) {
            Ok([a, b]) => {
                bytes.extend_from_slice(&a.to_le_bytes());
                bytes.extend_from_slice(&b.to_le_bytes());
            }
            Err(_) => break,
        }
    }
    bytes.truncate(len);
    let their_name = std::string::String::from_utf8_lossy(&bytes);
    Err(Some(std::format!(
        "{their_name} (interface {signature:#018x})"
    )))
}

/// The zenoh session a typed client connects through (`FooClient::connect_net`): zenoh's
/// `Session` with the `net` feature; without it, a type with no value, so that the
/// generated constructor exists and cannot be called.
#[cfg(all(feature = "net", target_os = "linux"))]
pub type NetSession = courier_net::zenoh::Session;
/// See the `net` feature's form.
#[cfg(not(all(feature = "net", target_os = "linux")))]
#[derive(Debug)]
pub enum NetSession {}

/// Why `FooClient::connect_net` failed (`courier::net::NetError` with the `net` feature).
#[cfg(all(feature = "net", target_os = "linux"))]
pub type NetError = courier_net::NetError;
/// See the `net` feature's form.
#[cfg(not(all(feature = "net", target_os = "linux")))]
#[derive(Debug)]
pub enum NetError {}

impl<Rq: Wire, Rp: Wire, F: Wire> Client<Rq, Rp, F> {
    /// Connects through `session` to the service `name` exposed on the network
    /// (`courier::net`) and checks that it speaks `interface` (`FooClient::connect_net`).
    ///
    /// # Errors
    ///
    /// `NetError::NotFound` if no bridge answers in time, `NetError::InterfaceMismatch` if
    /// the server speaks another interface.
    #[cfg(all(feature = "net", target_os = "linux"))]
    pub fn connect_net(
        session: &NetSession,
        name: &str,
        interface: &Interface,
        timeout: Duration,
    ) -> Result<Self, NetError> {
        let client = courier_net::Client::<Rq, Rp, F>::connect(session, name, timeout)?;
        let ask = |op, args| {
            client
                .blocking_scalar_timeout(op, args, timeout)
                .map_err(|e| e.map_app(|_| Error::Protocol))
        };
        match interface_of(ask, interface) {
            Ok(()) => Ok(Client {
                transport: ClientTransport::Net(client),
                timeout: None,
            }),
            Err(theirs) => Err(courier_net::NetError::InterfaceMismatch {
                name: name.into(),
                ours: std::string::ToString::to_string(interface),
                theirs: theirs.unwrap_or_else(|| "nothing within the timeout".into()),
            }),
        }
    }

    /// Without the `net` feature there is no session to connect through.
    ///
    /// # Errors
    ///
    /// None: no `NetSession` value exists.
    #[cfg(not(all(feature = "net", target_os = "linux")))]
    pub fn connect_net(
        session: &NetSession,
        _name: &str,
        _interface: &Interface,
        _timeout: Duration,
    ) -> Result<Self, NetError> {
        match *session {}
    }
}

#[cfg(target_os = "linux")]
mod shm {
    //! The shared-memory side: pooled lend buffers, the interface check, the serve loop.

    use super::{Interface, ReplyTo, Request, Spec, Wire};
    use super::{INTERFACE_NAME_OP, INTERFACE_OP};
    use core::time::Duration;
    use courier_core::error::Error;
    use courier_shm::{Incoming, ShmBuf, ShmError};
    use std::sync::Mutex;
    use std::vec::Vec;

    /// The caller's bytes of a lend.
    pub(super) enum Data<'a> {
        Ref(&'a [u8]),
        Mut(&'a mut [u8]),
    }

    /// Buffers kept for lends, at most this many (the rest are dropped after use).
    const POOL: usize = 4;

    pub(super) struct ShmClient<Rq, Rp, F> {
        pub(super) client: courier_shm::Client<Rq, Rp, F>,
        /// Lend buffers registered with the server, reused (each call takes one out).
        pub(super) pool: Mutex<Vec<ShmBuf>>,
    }

    impl<Rq: Wire, Rp: Wire, F: Wire> ShmClient<Rq, Rp, F> {
        /// A pooled buffer of at least `len` bytes (one of the pool's, or a new one rounded up
        /// to a power of two, so a growing caller makes few).
        fn take(&self, len: usize) -> Result<ShmBuf, Error<F>> {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = pool.iter().position(|b| b.len() >= len) {
                return Ok(pool.swap_remove(i));
            }
            drop(pool);
            let size = len.max(4096).checked_next_power_of_two().unwrap_or(len);
            ShmBuf::new(size)
                .or_else(|_| ShmBuf::new(len.max(1)))
                .map_err(|_| Error::LimitReached)
        }

        fn give_back(&self, buf: ShmBuf) {
            if buf.is_poisoned() {
                return;
            }
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < POOL {
                pool.push(buf);
            }
        }

        /// A lend of `data`, copied into a pooled buffer; a mutable lend's result is copied
        /// back into it once the server replied.
        pub(super) fn lend(
            &self,
            rq: Rq,
            data: Data<'_>,
            timeout: Option<Duration>,
        ) -> Result<Rp, Error<F>> {
            let src: &[u8] = match &data {
                Data::Ref(d) => d,
                Data::Mut(d) => d,
            };
            let mut buf = self.take(src.len())?;
            if let Some(mut part) = buf.view_mut().slice_mut(..src.len()) {
                part.copy_from_slice(src);
            }
            let r = match (&data, timeout) {
                (Data::Ref(_), None) => self.client.lend(rq, &buf),
                (Data::Ref(_), Some(t)) => self.client.lend_timeout(rq, &mut buf, t),
                (Data::Mut(_), None) => self.client.lend_mut(rq, &mut buf),
                (Data::Mut(_), Some(t)) => self.client.lend_mut_timeout(rq, &mut buf, t),
            };
            if let (Ok(_), Data::Mut(out)) = (&r, data) {
                if let Some(part) = buf.view().slice(..out.len()) {
                    part.copy_to_slice(out);
                }
            }
            self.give_back(buf);
            r
        }
    }

    /// Asks the server of `name` for its interface and compares it with ours.
    pub(super) fn check_interface<Rq: Wire, Rp: Wire, F: Wire>(
        client: &courier_shm::Client<Rq, Rp, F>,
        name: &str,
        ours: &Interface,
        timeout: Duration,
    ) -> Result<(), ShmError> {
        let ask = |op, args| {
            client
                .blocking_scalar_timeout(op, args, timeout)
                .map_err(|e| e.map_app(|_| Error::Protocol))
        };
        match super::interface_of(ask, ours) {
            Ok(()) => Ok(()),
            Err(None) => Err(ShmError::Timeout),
            Err(Some(theirs)) => Err(ShmError::InterfaceMismatch {
                name: name.into(),
                ours: std::string::ToString::to_string(ours),
                theirs,
            }),
        }
    }

    /// The scalar answer to an interface question.
    fn interface_words(interface: &Interface, op: u32, args: [u64; 4]) -> Option<[u64; 2]> {
        match op {
            INTERFACE_OP => Some([interface.signature, interface.name.len() as u64]),
            INTERFACE_NAME_OP => {
                let name = interface.name.as_bytes();
                let start = usize::try_from(args[0]).ok()?.checked_mul(16)?;
                let mut chunk = [0u8; 16];
                if let Some(part) = name.get(start..) {
                    let n = part.len().min(16);
                    chunk[..n].copy_from_slice(&part[..n]);
                }
                let word = |i: usize| u64::from_le_bytes(chunk[i..i + 8].try_into().expect("8"));
                Some([word(0), word(8)])
            }
            _ => None,
        }
    }

    /// A request of the shared-memory transport, before it gets the worker's buffer.
    pub(super) enum Parts<Rq, Rp, F> {
        Call(Rq, courier_shm::ReplyContext<Rp, F>),
        Scalar(Rq, courier_shm::ScalarCall, fn(Rp) -> Option<[u64; 2]>),
        Subscribe(Rq, courier_shm::Notifier),
    }

    impl<Rq: Wire, Rp: Wire, F: Wire> Parts<Rq, Rp, F> {
        pub(super) fn into_request(self, scratch: &mut Vec<u8>) -> Request<'_, Rq, Rp, F> {
            match self {
                Parts::Call(rq, mut ctx) => {
                    let mutable = ctx.lent_mut().is_some();
                    Request {
                        rq: Some(rq),
                        to: ReplyTo::Shm {
                            ctx: Some(ctx),
                            scratch,
                            mutable,
                            written: None,
                        },
                    }
                }
                Parts::Scalar(rq, call, words) => Request {
                    rq: Some(rq),
                    to: ReplyTo::Scalar { call, words },
                },
                Parts::Subscribe(rq, notifier) => Request {
                    rq: Some(rq),
                    to: ReplyTo::Subscribe {
                        notifier: Some(notifier),
                    },
                },
            }
        }
    }

    /// What a typed server makes of a message: a request for the service, or `None` for one
    /// answered here (an interface question) or dropped (a subscription, an unknown scalar:
    /// the caller learns there is no answer).
    pub(super) fn classify<Rq: Wire, Rp: Wire, F: Wire>(
        incoming: Incoming<Rq, Rp, F>,
        spec: &Spec<Rq, Rp>,
    ) -> Option<Parts<Rq, Rp, F>> {
        match incoming {
            Incoming::Call(rq, ctx) => Some(Parts::Call(rq, ctx)),
            Incoming::Scalar(call) => {
                if let Some(words) = interface_words(&spec.interface, call.op(), call.args()) {
                    let _ = call.reply(words);
                    return None;
                }
                let rq = (spec.scalars.request)(call.op(), call.args())?;
                Some(Parts::Scalar(rq, call, spec.scalars.words))
            }
            Incoming::Subscribe(rq, notifier) => Some(Parts::Subscribe(rq, notifier)),
        }
    }
}
