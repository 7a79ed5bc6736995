//! `courier::local`: request/response between threads and async tasks of one process.
//!
//! A [`channel`] links a [`Server`] with a [`Client`]. The client sends a request and gets
//! exactly one answer: the server's reply, its application error, or an [`Error`] that says why
//! there is none. Blocking and async callers mix freely on both sides, under any executor.
//! It is a drop-in successor to `ump`: the same calls (`req`, `areq`, `req_async`, `wait`,
//! `async_wait`, `try_pop`, `reply`, `fail`) with the same lifecycle rules, plus one-way
//! messages, timeouts, cancellation the server can see, bounded queues and a name registry.
//!
//! ```
//! use courier_local::channel;
//!
//! let (server, client) = channel::<String, String, ()>();
//! let server_thread = std::thread::spawn(move || {
//!     let (name, ctx) = server.wait().unwrap();
//!     ctx.reply(format!("Hello, {name}!")).unwrap();
//! });
//! assert_eq!(client.req("Client".into()).unwrap(), "Hello, Client!");
//! server_thread.join().unwrap();
//! ```
//!
//! # Patterns
//!
//! - **Synchronous**: [`Client::req`] blocks until the reply; [`Client::areq`] awaits it.
//! - **Start now, collect later**: [`Client::req_async`] returns a [`WaitReply`].
//! - **One-way**: [`Client::send`]; the server's [`ReplyContext::is_one_way`] is `true` and it
//!   owes nothing.
//! - **Deferred response**: a [`ReplyContext`] is an ordinary value; store it, move it to
//!   another thread, answer later while the server serves others.
//! - **Worker pool**: clone the [`Server`]; each request goes to one worker.
//! - **Timeouts**: `req_timeout`, `wait_timeout`, `send_timeout`.
//! - **Cancellation**: [`WaitReply::cancel`] withdraws a request the server has not taken and
//!   hands it back; once taken, the server sees [`ReplyContext::is_canceled`]. Dropping a
//!   `WaitReply` or an `areq` future cancels the same way.
//! - **Backpressure**: [`bounded`] queues block `req` and `send` when full; `try_req` and
//!   `try_send` hand the request back instead.
//! - **Discovery**: [`names`] registers clients under names and connects by name with a
//!   type check.
//!
//! # Stable invariants
//!
//! - Every request gets exactly one outcome: a reply, `App(e)`, `NoReply` (the server
//!   dropped its context), `ServerDisappeared` (no server took it) or `Timeout`.
//! - Reply contexts are independent of the `Server`: the last server handle may go while
//!   contexts are in flight, and their replies still arrive. Requests still queued at that
//!   moment fail at once with `ServerDisappeared`.
//! - After the last client is gone the server still receives everything queued, then gets
//!   `ClientsDisappeared`. A [`WeakClient`] does not count, and cannot revive the channel.
//! - Requests are served in the order they entered the queue.
//! - Every blocking wait spins briefly and then sleeps; an idle thread uses no CPU. A
//!   blocking requester whose last two calls each slept for 200 µs or more sleeps through most
//!   of the next one (woken at once by an early answer) and spins for its last 100 µs or so,
//!   so that a long call's answer costs no wake-up after it.
//! - In steady state a call allocates nothing: call slots are recycled.
//!
//! # Porting from `ump`
//!
//! Replace `ump::` with `courier::local::`. Differences: `WaitReply` has a third type
//! parameter (the request type, which `cancel` hands back), dropping a `WaitReply` or an
//! `areq` future withdraws the request instead of letting the server find out at reply
//! time, `Error` has a `Timeout` variant, and `WeakClient::upgrade` follows its documentation
//! (no upgrade once the last strong client is gone).
//!
//! # How it works
//!
//! Each call uses a slot (request, reply, one state word) taken from a per-channel pool; the
//! queue is an intrusive lock-free list of slots. The state machines are documented in the
//! `slot`, `queue`, `chan` and `event` modules and model-checked with loom.

#[cfg(all(test, loom))]
mod loom_tests;

mod chan;
mod client;
mod event;
pub mod names;
mod queue;
mod server;
mod slot;
mod sync;

pub use client::{CancelOutcome, Client, ReplyFuture, WaitReply, WeakClient};
pub use courier_core::error::{Error, SendError};
pub use server::{RecvFuture, ReplyContext, Request, Server};

use sync::Arc;

/// Creates a channel with an unbounded queue: one server and one client to start with.
///
/// # Examples
///
/// ```
/// let (server, client) = courier_local::channel::<u8, u8, ()>();
/// # drop((server, client));
/// ```
#[must_use]
pub fn channel<Rq, Rp, E>() -> (Server<Rq, Rp, E>, Client<Rq, Rp, E>) {
    pair(None)
}

/// Creates a channel whose queue holds at most `capacity` requests (one-way messages
/// included). When it is full, `req`, `areq` and `send` wait for room, their `_timeout` forms
/// wait up to a limit, and `try_req` / `try_send` hand the request back.
///
/// # Panics
///
/// Panics if `capacity` is 0.
///
/// # Examples
///
/// ```
/// use courier_local::{bounded, SendError};
///
/// let (server, client) = bounded::<u32, (), ()>(2);
/// client.send(1).unwrap();
/// client.send(2).unwrap();
/// assert!(matches!(client.try_send(3), Err(SendError::Full(3))));
/// let _ = server.wait().unwrap(); // makes room
/// client.try_send(3).unwrap();
/// ```
#[must_use]
pub fn bounded<Rq, Rp, E>(capacity: usize) -> (Server<Rq, Rp, E>, Client<Rq, Rp, E>) {
    assert!(
        capacity > 0,
        "a bounded channel needs a capacity of at least 1"
    );
    pair(Some(capacity))
}

fn pair<Rq, Rp, E>(cap: Option<usize>) -> (Server<Rq, Rp, E>, Client<Rq, Rp, E>) {
    let shared = Arc::new(chan::Shared::new(cap));
    (
        Server {
            shared: Arc::clone(&shared),
        },
        Client { shared },
    )
}
