//! courier: request/response messaging from a microcontroller's interrupt handler, through
//! threads and async tasks, to processes sharing memory on one host.
//!
//! One model everywhere: a client sends a request and gets exactly one answer — the server's
//! reply, its application error, or an error that says why there is none (the server is gone,
//! it dropped the request, time ran out). Each distance has its transport:
//!
//! - [`interchange`]: a `no_std`, heap-free request/response slot in a `static`, for firmware
//!   (an interrupt handler and the code it serves). The successor to `interchange`.
//! - [`flat`] and [`Ipc`]: typed zero-copy buffers whose bytes are validated on receipt, for
//!   crossing a process boundary. The successor to `flatipc`.
//! - [`local`] (feature `std`, on by default): threads and async tasks of one process, under
//!   any executor. The successor to `ump`.
//! - `shm` (feature `std`, Linux): processes on one host over shared memory: named services
//!   in a private runtime directory, a handshake that checks the peer's credentials and passes
//!   a sealed segment; `ShmChannel`, the successor to crossbar's; and RPC between processes
//!   (`Server`, `Client`) with `local`'s verbs and the Xous caller patterns (lend, lend_mut,
//!   scalar messages, deferred replies, push notifications).
//!
//! ```
//! # #[cfg(feature = "std")] {
//! use courier::local::channel;
//!
//! let (server, client) = channel::<u32, u32, ()>();
//! let worker = std::thread::spawn(move || {
//!     while let Ok((n, ctx)) = server.wait() {
//!         let _ = ctx.reply(n * 2);
//!     }
//! });
//! assert_eq!(client.req(21), Ok(42));
//! drop(client);
//! worker.join().unwrap();
//! # }
//! ```
//!
//! # Stable invariants
//!
//! - Every request gets exactly one outcome, and a value that was not delivered is handed back
//!   where the API can (`SendError`, `CancelOutcome::Withdrawn`, interchange's `SendError`).
//! - Every blocking call has a timeout form, and a blocked caller wakes when its peer goes.
//! - Blocking spins briefly, then sleeps: an idle thread costs no CPU.
//! - Bytes from another process are validated before a typed view of them exists.
//! - Lock-free state machines are documented where they are written and model-checked with
//!   loom.
//!
//! # One API on `local` and `shm`
//!
//! The raw clients and servers of `local` and `shm` share their names, signatures and
//! errors, so that moving a service from a thread to a process changes a constructor:
//!
//! | | both transports |
//! |---|---|
//! | calls | `req`, `req_timeout`, `areq` (async), `req_async` → `WaitReply<Rq, Rp, E>` |
//! | a pending call | `WaitReply::{wait, wait_timeout, wait_async, is_ready, cancel}` → `CancelOutcome<Rq, Rp, E>`, whose `Withdrawn(rq)` hands the request back |
//! | one-way | `send`, `send_timeout`, `try_send`, `try_req`: `SendError<Rq>`, which hands the request back on every error |
//! | liveness | `Client::is_server_gone` (once `true`, stays `true`) |
//! | serving | `Server::wait`, `wait_timeout`, `try_pop`, `async_wait`, `reply_and_receive_next`, all failing with `Error<E>`; `ReplyContext::{reply, fail, is_canceled, is_one_way}` |
//! | errors | one [`Error<E>`] (`#[non_exhaustive]`) on every transport |
//!
//! The differences left have a reason:
//!
//! - `local`'s `wait` yields a `(request, ReplyContext)` tuple, as `ump`'s does, so that a
//!   port from `ump` keeps its loops; `shm`'s yields an `Incoming` enum, because a process
//!   service also receives scalar messages and subscriptions, which `local` does not carry.
//!   The typed services of [`mod@service`] hide both behind one `serve`.
//! - Lends, scalars and subscriptions are `shm` verbs: in one process a reference or a
//!   channel does the job without a transport. Typed services offer them on both.
//! - A named `shm` service never reports `ClientsDisappeared`: new clients may connect at
//!   any time. `shm` alone reports `TooLarge`, `Protocol` and `LimitReached`.
//! - `req_async` returns a `WaitReply` without being `async`: the name is `ump`'s; the async
//!   forms are `areq`, `async_wait`, `wait_async` and `recv_async`.
//! - Setting up (`bind`, `connect`) fails with `shm::ShmError`, which names system causes;
//!   nothing after connect does.
//! - `WaitReply::detach` (a call that goes on without its caller, as a dropped `WaitReply`
//!   does in `ump`) is `local`'s: on `shm` a call's slot is the caller's until it reads the
//!   answer, so a call that must go on without its caller is sent with `send` from the start.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
pub use courier_local as local;

/// Processes on one Linux host: named services, their private runtime directory, the
/// credential-checked handshake that hands both sides a sealed shared-memory segment,
/// `ShmChannel` on top of it, and RPC between processes (`Server`, `Client`, `ShmBuf`).
#[cfg(all(feature = "std", target_os = "linux"))]
pub use courier_shm as shm;

/// Where the std transports' waiting threads run (Linux): they move off a CPU they share
/// with the peer they wait for; [`placement::allow_moves`] turns that off for the process.
#[cfg(all(feature = "std", target_os = "linux"))]
pub use courier_core::placement;

/// Services reachable from other hosts (feature `net`, Linux): a bridge exposes a
/// courier::shm service over zenoh, and a network client calls it with shm's verbs and
/// errors.
#[cfg(all(feature = "net", target_os = "linux"))]
pub use courier_net as net;

/// Static request/response slots for firmware (no heap, no OS): see [`courier_core::interchange`].
pub use courier_core::interchange;

/// Typed zero-copy IPC buffers: page-aligned `#[repr(C)]` values validated on receipt.
///
/// ```
/// use courier::Ipc;
///
/// #[derive(Ipc, Debug, PartialEq)]
/// #[repr(C)]
/// struct Value {
///     inner: u32,
///     ready: bool,
/// }
///
/// let mut ipc = Value { inner: 42, ready: true }.into_ipc();
/// assert_eq!(ipc.inner, 42); // IpcValue derefs to Value
/// let sig = ipc.signature();
/// let received = IpcValue::from_slice(ipc.as_bytes(), sig).unwrap();
/// assert_eq!(**received, Value { inner: 42, ready: true });
/// ```
pub use courier_core::flat;

/// `#[derive(Ipc)]`: makes a `#[repr(C)]` type IPC-safe and generates its IPC form `IpcName`
/// (see [`flat`]).
///
/// ```
/// #[derive(courier::Ipc)]
/// #[repr(u8)]
/// enum Command {
///     Stop,
///     Move { x: i32, y: i32 },
/// }
///
/// let ipc = Command::Move { x: 1, y: 2 }.into_ipc();
/// assert!(matches!(*ipc, Command::Move { x: 1, y: 2 }));
/// assert_eq!(core::mem::size_of_val(&ipc), 4096);
/// ```
///
/// A struct whose field is a fixed-capacity string, received as bytes and validated:
///
/// ```
/// use courier::{flat, Ipc};
///
/// #[derive(Ipc, Debug, PartialEq)]
/// #[repr(C)]
/// struct Reading {
///     sensor: flat::String<8>,
///     value: f32,
///     valid: bool,
/// }
///
/// let reading = Reading { sensor: "t0".try_into().unwrap(), value: 21.5, valid: true };
/// let mut ipc: IpcReading = reading.into_ipc();
/// let signature = Reading::signature();
/// let received = IpcReading::from_slice(ipc.as_bytes(), signature).unwrap();
/// assert_eq!(received.sensor, "t0");
/// assert_eq!(Reading::from_ipc(ipc).value, 21.5);
/// ```
///
/// A type without `#[repr(C)]` is refused:
///
/// ```compile_fail
/// #[derive(courier::Ipc)]
/// struct Loose {
///     value: u32,
/// }
/// ```
pub use courier_derive::Ipc;
/// `#[derive(IpcSafe)]`: flatipc's other name for [`macro@Ipc`] (the same derive).
///
/// # Examples
///
/// ```
/// #[derive(courier::IpcSafe, Clone, Copy)]
/// #[repr(C)]
/// struct Reading {
///     sensor: u16,
///     value: u32,
/// }
///
/// #[derive(courier::Ipc)]
/// #[repr(C)]
/// struct Report {
///     reading: Reading,
/// }
///
/// let ipc = Report { reading: Reading { sensor: 1, value: 42 } }.to_ipc();
/// assert_eq!(ipc.reading.value, 42);
/// ```
pub use courier_derive::IpcSafe;

pub use courier_core::opcode;
/// `#[derive(Opcode)]` (see [`opcode`]) and the trait it implements.
pub use courier_core::opcode::Opcode;
/// `#[derive(Opcode)]`: a field-less enum becomes the opcodes of scalar messages.
///
/// # Examples
///
/// ```
/// use courier::opcode::{Opcode, UnknownOpcode};
///
/// #[derive(courier::Opcode, Debug, PartialEq)]
/// enum Op {
///     Add = 1,
///     Clear,
///     Shutdown = 255,
/// }
///
/// assert_eq!(u32::from(Op::Clear), 2);
/// assert_eq!(Op::try_from(255), Ok(Op::Shutdown));
/// assert_eq!(Op::try_from(3), Err(UnknownOpcode(3)));
/// assert_eq!(Op::from_u32(1), Some(Op::Add));
/// ```
///
/// A variant with fields is refused:
///
/// ```compile_fail
/// #[derive(courier::Opcode)]
/// enum Op {
///     Add(u32),
/// }
/// ```
pub use courier_derive::Opcode;

/// The error every request/response transport reports (see [`courier_core::error`]).
pub use courier_core::error::{Error, SendError};

#[cfg(feature = "std")]
pub mod service;

/// What generated code names and users do not.
#[doc(hidden)]
pub mod __private {
    #[cfg(feature = "serde")]
    pub use serde;
}

/// `#[courier::service]`: a trait becomes a typed service, its client and its server, on
/// every std transport (see the `service` module); `#[courier::service(no_std)]` makes a
/// client and a dispatcher over [`interchange`] instead, for firmware without std.
///
/// # Examples
///
/// ```
/// #[courier::service]
/// pub trait Counter {
///     /// Adds `n`; fails past `limit`.
///     fn add(&self, n: u64, limit: u64) -> Result<u64, u8>;
/// }
///
/// struct Total(std::sync::atomic::AtomicU64);
///
/// impl Counter for Total {
///     fn add(&self, n: u64, limit: u64) -> Result<u64, u8> {
///         use std::sync::atomic::Ordering;
///         let now = self.0.fetch_add(n, Ordering::SeqCst) + n;
///         if now > limit { Err(1) } else { Ok(now) }
///     }
/// }
///
/// let (client, server) = CounterClient::pair();
/// let worker = std::thread::spawn(move || server.serve(Total(Default::default())));
/// assert_eq!(client.add(2, 10), Ok(2));
/// assert_eq!(client.add(9, 10), Err(courier::Error::App(1)));
/// drop(client);
/// worker.join().unwrap().unwrap();
/// ```
pub use courier_derive::service;

/// The README's examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
