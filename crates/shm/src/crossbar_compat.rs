//! crossbar's `ShmChannel` names over [`crate::ShmChannel`], so that a crossbar user ports by
//! changing `use crossbar::*;` to `use courier::shm::crossbar_compat::*;`.
//!
//! | crossbar | here | courier's own name |
//! |---|---|---|
//! | `ShmChannel::listen(name, PubSubConfig, timeout)` / `connect` | the same | [`crate::ShmChannel::listen`] / `connect` with a [`ShmConfig`] |
//! | `PubSubConfig` (`::default()`) | [`PubSubConfig`] (an alias) | [`ShmConfig`] |
//! | `send(&mut self, &[u8])`, never waiting | the same (`Full::Error` is set) | `send(&self, ..)`, waiting for room by default (`Full::Backpressure`) |
//! | `try_recv() -> Option<SampleGuard>` | the same | `try_recv() -> Result<Option<ShmMessage>, ShmError>` |
//! | `recv()`, `recv_with(WaitStrategy)` `-> Result<SampleGuard, IpcError>` | the same | `-> Result<ShmMessage, ShmError>` |
//! | `SampleGuard` (`Deref<Target = [u8]>`) | [`SampleGuard`] (a private copy) | [`ShmMessage`] (a view, no copy) |
//! | `loan() -> ShmLoan`, `publish` | [`ShmLoan`] (views, `publish(len)`) | the same |
//! | `IpcError::{PoolExhausted, DataTooLarge, PublisherDead, ..}` | [`IpcError`] | [`ShmError`] |
//! | `heartbeat()` | a no-op: the kernel reports a dead peer | — |
//!
//! Two differences stay, because courier never hands out a Rust reference to bytes another
//! process can write:
//! - a [`SampleGuard`] dereferences to a private copy of the message taken at receipt (the
//!   block is still held until the guard drops, as in crossbar; a message of at most 56
//!   bytes came inline, in its ring entry, and holds none); use [`Self::into_inner`]'s
//!   [`ShmMessage`] or courier's own `ShmChannel` to read in place without the copy (or,
//!   for a message that came inline, from the one copy the channel made as it took it);
//! - a loan is written through [`ShmViewMut`](crate::ShmViewMut) (`copy_from_slice`,
//!   `write_at`, `write::<T>`) and published with its length: `loan.publish(len)`.
//!
//! # Examples
//!
//! crossbar's own example, with the imports changed:
//!
//! ```no_run
//! use courier_shm::crossbar_compat::*;
//! use std::time::Duration;
//!
//! // Process A (server, start first)
//! let mut srv = ShmChannel::listen("rpc", PubSubConfig::default(), Duration::from_secs(30)).unwrap();
//! // Process B (client)
//! let mut cli = ShmChannel::connect("rpc", PubSubConfig::default(), Duration::from_secs(5)).unwrap();
//! cli.send(b"request").unwrap();
//! let msg = srv.recv().unwrap();
//! assert_eq!(&*msg, b"request");
//! drop(msg);
//! srv.send(b"response").unwrap();
//! let reply = cli.recv().unwrap();
//! assert_eq!(&*reply, b"response");
//! ```
//!
//! [`Self::into_inner`]: SampleGuard::into_inner

use crate::channel::ShmMessage;
use crate::error::ShmError;
use std::time::Duration;

pub use crate::channel::{Full, ShmConfig, ShmLoan, WaitStrategy};

/// crossbar's configuration type: courier's [`ShmConfig`] (its builder methods set the block
/// size, block count and ring depth; `PubSubConfig::default()` is 64 blocks of 4 KiB).
pub type PubSubConfig = ShmConfig;

/// crossbar's error names for what a channel reports. Every [`ShmError`] maps to one
/// (`From`); what crossbar has no name for stays inside [`IpcError::Other`].
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// Every block of the pool is in use (courier: [`ShmError::PoolExhausted`]).
    #[error("all blocks of the pool are in use")]
    PoolExhausted,
    /// The message is larger than a block (courier: [`ShmError::TooLarge`]).
    #[error("the message is larger than a block")]
    DataTooLarge,
    /// The other end is gone (courier: [`ShmError::PeerDead`], reported as soon as the
    /// kernel closes its socket; no heartbeat is needed).
    #[error("the other end of the channel is gone")]
    PublisherDead,
    /// The wait of [`WaitStrategy::Timeout`], or of `listen`/`connect`, ran out.
    #[error("timed out")]
    Timeout,
    /// The peer's segment or messages are not valid (courier: [`ShmError::Corrupt`] and the
    /// segment checks).
    #[error("invalid shared-memory region: {0}")]
    InvalidRegion(String),
    /// Any other error of courier's, as it is.
    #[error(transparent)]
    Other(ShmError),
}

impl From<ShmError> for IpcError {
    fn from(e: ShmError) -> Self {
        match e {
            ShmError::PoolExhausted | ShmError::RingFull => IpcError::PoolExhausted,
            ShmError::TooLarge { .. } => IpcError::DataTooLarge,
            ShmError::PeerDead => IpcError::PublisherDead,
            ShmError::Timeout => IpcError::Timeout,
            e @ (ShmError::Corrupt(..) | ShmError::BadSegment(..)) => {
                IpcError::InvalidRegion(e.to_string())
            }
            e => IpcError::Other(e),
        }
    }
}

/// One end of a bidirectional shared-memory channel, with crossbar's signatures (see the
/// [module](self)); [`inner`](Self::inner) is courier's [`crate::ShmChannel`] underneath.
#[derive(Debug)]
pub struct ShmChannel {
    inner: crate::ShmChannel,
}

impl ShmChannel {
    /// Creates the server side and waits up to `timeout` for the client.
    ///
    /// # Errors
    ///
    /// [`IpcError::Timeout`] if no client came; what setting up the channel reports.
    pub fn listen(name: &str, config: PubSubConfig, timeout: Duration) -> Result<Self, IpcError> {
        let inner = crate::ShmChannel::listen(name, config.full(Full::Error), timeout)?;
        Ok(ShmChannel { inner })
    }

    /// Creates the client side, waiting up to `timeout` for the server.
    ///
    /// # Errors
    ///
    /// [`IpcError::Timeout`] if no server appeared; what setting up the channel reports.
    pub fn connect(name: &str, config: PubSubConfig, timeout: Duration) -> Result<Self, IpcError> {
        let inner = crate::ShmChannel::connect(name, config.full(Full::Error), timeout)?;
        Ok(ShmChannel { inner })
    }

    /// Copies `data` into a block and sends it, never waiting: as in crossbar, a full pool
    /// (or ring) is an error, whatever the configuration's [`Full`] says.
    ///
    /// # Errors
    ///
    /// [`IpcError::PoolExhausted`], [`IpcError::DataTooLarge`], [`IpcError::PublisherDead`].
    pub fn send(&mut self, data: &[u8]) -> Result<(), IpcError> {
        Ok(self.inner.send(data)?)
    }

    /// A block to write in place, sent with [`ShmLoan::publish`].
    ///
    /// # Errors
    ///
    /// [`IpcError::PoolExhausted`], [`IpcError::PublisherDead`].
    pub fn loan(&mut self) -> Result<ShmLoan<'_>, IpcError> {
        Ok(self.inner.loan()?)
    }

    /// The next message if there is one. `None` also when the other end is gone (as in
    /// crossbar, `try_recv` never reports death: `recv` does).
    pub fn try_recv(&self) -> Option<SampleGuard<'_>> {
        self.inner.try_recv().ok().flatten().map(SampleGuard::new)
    }

    /// Waits for the next message (spin, then sleep).
    ///
    /// # Errors
    ///
    /// [`IpcError::PublisherDead`] once the other end is gone and its messages are read.
    pub fn recv(&self) -> Result<SampleGuard<'_>, IpcError> {
        Ok(SampleGuard::new(self.inner.recv()?))
    }

    /// Waits for the next message as `strategy` says.
    ///
    /// # Errors
    ///
    /// As [`ShmChannel::recv`], and [`IpcError::Timeout`] with [`WaitStrategy::Timeout`].
    pub fn recv_with(&self, strategy: WaitStrategy) -> Result<SampleGuard<'_>, IpcError> {
        Ok(SampleGuard::new(self.inner.recv_with(strategy)?))
    }

    /// Nothing to do: courier learns of a dead peer from the kernel (its socket closes), not
    /// from a heartbeat, so an idle end never looks dead. Kept so that ported code compiles.
    pub fn heartbeat(&mut self) {}

    /// Courier's channel underneath (timeouts on sends and loans, the peer's credentials).
    pub fn inner(&self) -> &crate::ShmChannel {
        &self.inner
    }

    /// Courier's channel, for good.
    pub fn into_inner(self) -> crate::ShmChannel {
        self.inner
    }
}

/// A received message: derefs to a private copy of its bytes, taken at receipt, and holds
/// its block (if it came in one) until dropped (crossbar's `SampleGuard`). A message of at
/// most 56 bytes is the copy the channel made as it took it: no second copy, no allocation.
#[derive(Debug)]
pub struct SampleGuard<'a> {
    msg: ShmMessage<'a>,
    /// The copy of a message that came in a block (empty, unallocated, for one that came
    /// inline: its bytes are already the channel's copy).
    copy: Vec<u8>,
}

impl<'a> SampleGuard<'a> {
    fn new(msg: ShmMessage<'a>) -> Self {
        let copy = match msg.private_bytes() {
            Some(_) => Vec::new(),
            None => msg.to_vec(),
        };
        SampleGuard { msg, copy }
    }

    fn bytes(&self) -> &[u8] {
        self.msg.private_bytes().unwrap_or(&self.copy)
    }

    /// The message in its block, read in place from now on (courier's [`ShmMessage`]).
    pub fn into_inner(self) -> ShmMessage<'a> {
        self.msg
    }
}

impl std::ops::Deref for SampleGuard<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.bytes()
    }
}

impl AsRef<[u8]> for SampleGuard<'_> {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guard derefs to the message's bytes, whether they came inline (the channel's own
    /// copy) or in a block (the guard's copy).
    #[test]
    fn a_guard_derefs_to_the_bytes_of_small_and_large_messages() {
        let (l, c) = crate::channel::support::pair(crate::ShmConfig::new().block_size(128));
        let (l, mut c) = (ShmChannel { inner: l }, ShmChannel { inner: c });
        for len in [0u8, 8, 56, 57, 128] {
            let msg: Vec<u8> = (1..=len).collect();
            c.send(&msg).unwrap();
            let got = l.try_recv().unwrap();
            assert_eq!(&*got, &msg[..]);
            assert_eq!(got.as_ref(), &msg[..]);
            assert_eq!(got.into_inner().to_vec(), msg);
        }
    }

    #[test]
    fn every_channel_error_has_crossbar_s_name() {
        let cases = [
            (ShmError::PoolExhausted, "PoolExhausted"),
            (ShmError::RingFull, "PoolExhausted"),
            (ShmError::PeerDead, "PublisherDead"),
            (ShmError::Timeout, "Timeout"),
            (ShmError::InvalidName("x".into()), "Other"),
        ];
        for (e, name) in cases {
            let got = format!("{:?}", IpcError::from(e));
            assert!(got.starts_with(name), "{got} is not {name}");
        }
    }
}
