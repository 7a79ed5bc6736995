//! RPC between processes: a named [`Server`] that many client processes call through a
//! [`Client`], with `courier::local`'s verbs and error model and the Xous message kinds.
//!
//! | caller ([`Client`])                       | server ([`Incoming`])                    | Xous idiom |
//! |-------------------------------------------|------------------------------------------|------------|
//! | `req`, `req_timeout`, `areq`, `req_async` | `Call(rq, ctx)`: `ctx.reply` / `ctx.fail` | synchronous |
//! | `send`                                    | `Call(rq, ctx)`, `ctx.is_one_way()`      | fire and forget (memory) |
//! | `lend(rq, &buf)`, `lend_mut(rq, &mut buf)`| `Call(rq, ctx)`: `ctx.lent()`, `ctx.lent_mut()` | lend, lend_mut |
//! | `scalar`, `blocking_scalar`               | `Scalar(call)`: `call.reply([a, b])`      | scalar, blocking scalar |
//! | `subscribe(rq)` → [`Subscription`]        | `Subscribe(rq, notifier)`: `notifier.push(v)` | asynchronous (push) |
//! | any blocking call                         | keep `ctx` / `call`, answer later          | deferred response |
//!
//! # How a call travels
//!
//! Each client process has one connection to the server: the handshake of
//! [`Listener`](crate::Listener) (a Unix socket in the runtime directory, `SO_PEERCRED`, a
//! sealed memfd) gives it a segment of its own (see `layout.rs` for the map), and a second
//! message on the socket passes the client its end of the connection's **wake-up socket**, a
//! datagram socket pair of its own: nothing the server's clients share can be written by one
//! of them to hurt the others.
//!
//! A call owns a **slot** of the connection from start to finish: a 128-byte record (state,
//! kind, opcode, length, signature, four words, which the server's status, reply length,
//! reply signature and reply replace once it has read them; two reply words) and a data
//! area (`slot_size` bytes, page-aligned). A request or reply of at most 32 bytes travels
//! in the record's first line, beside the state word that both sides read at every call
//! anyway (a request where the argument words are, for the kinds that have none), so a
//! small call moves one line of the record each way, and the data area not at all (a value
//! whose length is known only once written, a `Postcard`, is written there first and copied). The caller writes
//! its request into the slot, queues the slot's index on the request ring and waits on the
//! slot's own state word; a worker takes the index, reads the request in place (copying a
//! flat value out before it checks it), writes the reply into the same slot and flips the
//! state to DONE, waking the caller only if it sleeps. So a call costs no allocation, no copy beyond the
//! request and reply themselves, and no thread between caller and worker: the caller's
//! thread is woken by the worker directly. Threads of one client share the connection
//! (a lock only to append to the ring); workers of one server share all connections
//! (each ring is taken by one worker at a time).
//!
//! The slot's state word (see `layout::state`, transitions in `slot.rs`, model-checked with
//! loom) is the call's state machine; the client's
//! cancellation is a compare-and-swap on it that tells it whether the request was still
//! queued (withdrawn: the server skips it), already taken (signaled: the server sees
//! [`ReplyContext::is_canceled`]) or already answered.
//!
//! **Lends** are buffers in shared memory ([`ShmBuf`]): a sealed memfd the client maps once.
//! The first lend of a buffer to a server sends its descriptor over the connection socket;
//! the server maps it once and keeps it until the buffer is dropped (or the client dies), so
//! every later lend passes only an id and a length: a 64 MiB `lend_mut` costs what a small
//! call costs plus what the server does with the bytes. The server checks each lend against
//! the buffer's sealed size and refuses a second lend of a buffer that is lent mutably (or a
//! mutable lend of one lent at all), so it never hands out two views that alias; the caller's
//! `&mut ShmBuf` borrow keeps its own thread off the buffer until the call returns, and a
//! caller that gives up (timeout) gets a fresh copy of the buffer, leaving the old pages to
//! the server until it answers.
//!
//! **Scalars** use only the slot record: an opcode and four `u64` words (whatever the width
//! of `usize` on either side, so 32- and 64-bit processes agree), two words back.
//!
//! **Pushes** travel on a per-connection ring of fixed records from server to client; the
//! server never blocks on a slow subscriber ([`PushError::Full`]).
//!
//! # Waking
//!
//! Every wait spins briefly and then sleeps; each side announces its sleep before a last
//! look, and the other side wakes it only if it announced (the Dekker pattern of
//! [`ShmChannel`](crate::ShmChannel)). A caller sleeps on a futex, its slot's state word
//! (`WAITER` bit). Idle workers sleep at most 500 ms at a time (on the doorbells a blocking
//! worker's sleep sets no timer: the accept thread ends the sleeps every 500 ms), and each
//! connection's `srv_sleep` says how many sleep, so a client rings only when one does. Where
//! they sleep:
//!
//! - **On the doorbells** (a server of at most 127 clients, the default, on Linux 5.16 and
//!   later): one `futex_waitv` on every warm connection's doorbell (see "cold" below), a
//!   word only its client writes, and on the server's own word (new connections, dead
//!   clients). A worker reads
//!   the words before it announces its sleep; a client rings by bumping its doorbell, then
//!   waking one waiter on it, so a ring after the announcement either finds the worker
//!   asleep or changes a word it is about to sleep on (the kernel compares, and the sleep
//!   never starts). A worker woken from that sleep that takes a call and finds another
//!   queued wakes one more sleeper: a sleeper waits on every word at once, and a second
//!   ring that reaches a worker already woken by a first is spent on it. A client can only
//!   ring, or fail to ring, its own doorbell; one that keeps changing it, or waking its
//!   sleepers without changing it, beyond the calls it makes (each costs it a store or a
//!   system call, a worker a system call) is cut off `slots` + 64 changes ahead of its
//!   calls (a call withdrawn before it was taken does not count as one).
//!
//!   A connection that neither calls nor rings for a round of the accept thread (every
//!   500 ms; a new one is spared its first) goes **cold**: its `srv_sleep` says so
//!   (`SLEEP_COLD`), the workers' looks, announcements and sleeps leave it out, and its
//!   client rings the wake-up socket instead, which the connection's watcher thread reads,
//!   ringing the server's word for it and asking the next look to cover the cold
//!   connections too. Its first call warms it again (and ends the sleeps under way, so that
//!   they read the doorbells again). Each word of a `futex_waitv` costs about 0.25 µs a
//!   sleep, and each connection a look and a store on the way, so a server of many idle
//!   clients would otherwise pay for all of them at every sleep: with 64 idle clients
//!   connected, a parked call took 17–19 µs against 9 µs with none; now 9–10 µs (the cold
//!   call itself costs the watcher's wake-up more). The watcher wakes a worker only if a
//!   call may be queued, and counts every ring of the wake-up socket against its client as
//!   a doorbell change is counted (each call taken makes up for one), so a client that
//!   keeps ringing it is cut off too; one that breaks its end of the socket has its calls
//!   found by the rounds only. The round that lets connections go cold
//!   asks for one look at them (a call queued just before, unrung) and ends the sleeps; the
//!   client reads its `srv_sleep` after its fence, and that look comes after a fence, so it
//!   sees the call (loom models in `rpc/server/cold_model.rs`).
//! - **On the wake-up sockets** (more clients, or an older kernel): `epoll_wait` on every
//!   connection's datagram socket and the server's own eventfd; a client sends one byte
//!   (`MSG_DONTWAIT`: it never blocks), which the kernel keeps, so no other client can take
//!   it back or forge a sleep. A woken worker reads it on its way back to sleep (before it
//!   announces that sleep), not before the call it announced.
//!
//! Either way a worker woken for nothing goes back to sleep without spinning, so a client
//! that only sends wake-ups pays a system call for each and keeps no worker busy. A ring
//! on the doorbells costs a store and a futex wake, against a datagram sent and read on the
//! sockets (3.3 µs more per call that wakes a worker, on the 2-core VM of the benchmarks).
//! Async waiters
//! and subscription readers on the connection's client bell, which a thread of the client
//! process (started on first use) turns into `Waker` calls. An async caller (`areq`) and an
//! async worker (`async_wait`) first wait as their blocking counterparts do (a spin, or a
//! yield of the CPU to a peer that last ran on it, or the caller's move to another CPU),
//! a worker for at most 20 µs, a caller for its connection's budget (20 µs unless
//! `ConnectConfig::spin` says otherwise), and neither for a peer that is a task on its own
//! thread (the thread hints `cli_tid`, `srv_tid`); only a call whose future then sleeps asks
//! the server to ring the bell
//! (`F_ASYNC`, set with its waker and checked against the completion, a Dekker pair), so a
//! call answered within the spin costs neither side a wake-up. A task whose waits are all
//! ready at once yields to its executor once every 128 (`substrate::coop`).
//!
//! # Death
//!
//! A watcher thread per connection on each side sees the socket hang up (SIGKILL included):
//! on the client every pending and future call fails with [`Error::ServerDisappeared`] at
//! once; on the server the connection is dropped from the list, its lends unmapped as soon as
//! no context holds them, and every answer to it returns [`Error::OriginDisappeared`].
//!
//! # A hostile peer
//!
//! Every index, length, signature and counter read from shared memory is checked before use;
//! a request is copied out of the slot before it is validated, so it cannot change after the
//! check; a client that breaks a rule of the rings is cut off (its calls never complete,
//! which hurts only it). Like any memory shared with another process, the bytes of a lent
//! buffer can be changed by a misbehaving peer while they are read.

mod buf;
mod client;
pub(crate) mod fault;
mod layout;
mod server;
mod shmbox;
mod sid;
mod slot;
mod stats;
mod wire;

pub use buf::ShmBuf;
pub use client::{CancelOutcome, Client, SendBufError, Subscription, WaitReply};
pub use courier_core::error::{Error, SendError};
pub use server::{
    AsyncWait, Incoming, Notifier, PushError, ReplyContext, ScalarCall, SentBuf, Server,
    ServerConfig,
};
pub use shmbox::ShmBox;
pub use sid::{ParseServerIdError, ServerId};
pub use stats::{services, ServerStats, ServiceInfo, MAX_DESCRIPTION};
#[cfg(feature = "serde")]
pub use wire::{encode_postcard, Postcard};
pub use wire::{Raw, Wire};

use crate::segment::HEADER_LEN;

/// Every message on a connection's socket after the handshake is 16 bytes: an 8-byte tag and
/// a little-endian `u64`, with one descriptor attached.
pub(crate) const MSG_LEN: usize = 16;
/// Server to client, once: the client's end of the connection's wake-up socket.
pub(crate) const BELL_HELLO: [u8; MSG_LEN] = *b"CRPCBELL\0\0\0\0\0\0\0\0";
/// Client to server, once per buffer: a lendable buffer's descriptor and id.
pub(crate) const LEND_HELLO: [u8; 8] = *b"CRPCLEND";
/// Where a lendable buffer's bytes start in its segment's payload: page-aligned in the
/// mapping.
pub(crate) const LEND_OFFSET: usize = 4096 - HEADER_LEN;
