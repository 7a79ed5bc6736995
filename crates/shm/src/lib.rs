//! courier::shm: messaging between processes on one Linux host, through shared memory.
//!
//! This is the transport's foundation: named services, their runtime directory, the
//! connection handshake that checks who the peer is and hands both sides a shared segment, and
//! [`ShmChannel`], a raw bidirectional message channel over that segment.
//!
//! ```no_run
//! use courier_shm::{ConnectConfig, Connection, Listener, ListenerConfig};
//! use std::time::Duration;
//!
//! // In the server process:
//! let listener = Listener::bind("echo", ListenerConfig::new())?;
//! let conn = listener.accept_timeout(Duration::from_secs(5))?;
//! conn.segment().write_at(0, b"hi")?;
//!
//! // In the client process:
//! let conn = Connection::connect_timeout("echo", &ConnectConfig::new(), Duration::from_secs(5))?;
//! let mut buf = [0; 2];
//! conn.segment().read_at(0, &mut buf)?;
//! # Ok::<(), courier_shm::ShmError>(())
//! ```
//!
//! # Names
//!
//! A service name is 1 to 63 bytes of UTF-8, not `.` or `..`, without control characters,
//! `/ \ * $ ? #` or a leading `@` (the rule of every transport: `courier_core::names`);
//! anything else is [`ShmError::InvalidName`] before any file is touched. A [`Listener`] owns its name
//! exclusively; a name left by a dead listener (even one killed with SIGKILL) is taken over by
//! the next, and a live one is never stolen.
//!
//! # The runtime directory
//!
//! Names live in a directory only their owner can enter: see [`runtime_dir`]. It is
//! `$COURIER_RUNTIME_DIR` if set, else `$XDG_RUNTIME_DIR/courier`, else `/tmp/courier-<uid>`;
//! it is created 0700 and refused ([`ShmError::UnsafeRuntimeDir`]) if it is owned by another
//! user or open to others.
//!
//! # Security
//!
//! The listener reads the client's credentials from the kernel (`SO_PEERCRED`): by default
//! only the same effective uid is admitted, and [`ListenerConfig::allow_uid`] and
//! [`ListenerConfig::allow_gid`] widen it. A refused client gets
//! [`ShmError::PermissionDenied`]. Both sides learn the other's pid, uid and gid
//! ([`Connection::peer`]).
//!
//! # Segments
//!
//! Each connection gets an anonymous `memfd` segment, sealed so its size can never change,
//! passed over the socket. It starts with a header (magic number, layout version, size, and a
//! ready flag written last); the client checks every field, as if the listener were hostile,
//! and reports a mismatch as a [`SegmentError`]. Segments have no name anywhere: nothing of
//! them is left in `/dev/shm` or on disk when the processes exit or die.
//!
//! # Channels
//!
//! [`ShmChannel::listen`] and [`ShmChannel::connect`] make the two ends of a channel; each
//! sends (a copy with [`ShmChannel::send`], or in place with [`ShmChannel::loan`]) and
//! receives ([`ShmChannel::recv`], [`ShmChannel::try_recv`], [`ShmChannel::recv_with`] a
//! [`WaitStrategy`]) a [`ShmMessage`], a [`ShmView`] of the block (read by copy, never as a
//! `&[u8]` the peer could change underneath) that gives it back when dropped. The listener's [`ShmConfig`] sets the block size and count and the ring depth;
//! a full ring or pool is backpressure or an error ([`Full`]), never a lost message. A blocked
//! receiver spins briefly, then sleeps on a futex with no periodic wake-up (an idle process
//! uses no CPU); a peer's death, SIGKILL included, ends it with [`ShmError::PeerDead`] at once:
//! a watcher thread blocked in the kernel on the connection's socket sees the hang-up.
//! Every value the peer can write is checked before use: a hostile peer gets
//! [`ShmError::Corrupt`], never an access outside the segment.
//!
//! ```no_run
//! use courier_shm::{ShmChannel, ShmConfig};
//! use std::time::Duration;
//!
//! // Server process:
//! let srv = ShmChannel::listen("rpc", ShmConfig::new(), Duration::from_secs(30))?;
//! let msg = srv.recv()?;
//! let mut reply = srv.loan()?;
//! let n = msg.len();
//! reply.write_at(0, &msg.to_vec())?; // a view: read by copy, written in place
//! drop(msg); // gives the request's block back
//! reply.publish(n)?;
//!
//! // Client process:
//! let cli = ShmChannel::connect("rpc", ShmConfig::new(), Duration::from_secs(5))?;
//! cli.send(b"ping")?;
//! assert_eq!(cli.recv_timeout(Duration::from_secs(1))?.to_vec(), b"ping");
//! # Ok::<(), courier_shm::ShmError>(())
//! ```
//!
//! # Platforms
//!
//! Linux only (memfd, seals and `SO_PEERCRED`); elsewhere this crate is empty, so the
//! workspace still builds.

#[cfg(target_os = "linux")]
mod channel;
#[cfg(target_os = "linux")]
pub mod crossbar_compat;
#[cfg(target_os = "linux")]
mod dir;
#[cfg(target_os = "linux")]
mod error;
/// The RPC guide (how a call travels, waking, lends, deferred replies, hostile peers); its
/// types are re-exported at the crate root.
#[cfg(target_os = "linux")]
pub mod rpc;
#[cfg(target_os = "linux")]
mod segment;
#[cfg(target_os = "linux")]
mod service;
#[cfg(target_os = "linux")]
mod substrate;
#[cfg(target_os = "linux")]
mod sync;
#[cfg(target_os = "linux")]
mod sys;
#[cfg(target_os = "linux")]
mod view;
#[cfg(target_os = "linux")]
mod watch;

#[cfg(target_os = "linux")]
pub use channel::{Full, ShmChannel, ShmConfig, ShmLoan, ShmMessage, WaitStrategy};
#[cfg(target_os = "linux")]
pub use dir::{runtime_dir, RUNTIME_DIR_ENV};
#[cfg(target_os = "linux")]
pub use error::{SegmentError, ShmError};
#[cfg(all(target_os = "linux", feature = "serde"))]
pub use rpc::Postcard;
#[cfg(target_os = "linux")]
pub use rpc::{
    services, AsyncWait, CancelOutcome, Client, Error, Incoming, Notifier, ParseServerIdError,
    PushError, Raw, ReplyContext, ScalarCall, SendBufError, SendError, SentBuf, Server,
    ServerConfig, ServerId, ServerStats, ServiceInfo, ShmBox, ShmBuf, Subscription, WaitReply,
    Wire, MAX_DESCRIPTION,
};
#[cfg(target_os = "linux")]
pub use segment::{Segment, HEADER_LEN, LAYOUT_VERSION, MAGIC};
#[cfg(target_os = "linux")]
pub use service::{ConnectConfig, Connection, Listener, ListenerConfig, MAX_SOCKET_PATH};
#[cfg(target_os = "linux")]
pub use sys::Credentials;
#[cfg(target_os = "linux")]
pub use view::{ShmView, ShmViewMut};
