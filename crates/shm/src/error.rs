//! The errors of courier::shm.

use crate::sys::Credentials;
use std::io;
use std::path::PathBuf;

/// Why a call of courier::shm failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShmError {
    /// The service name breaks the rule of `courier_core::names` (empty, longer than 63
    /// bytes, `.` or `..`, a control character, one of `/ \ * $ ? #`, a leading `@`).
    /// Nothing was touched on disk.
    #[error("invalid service name {0:?}: {rule}", rule = courier_core::names::RULE)]
    InvalidName(String),

    /// The runtime directory exists but is not safe to use: it is not a directory (a symbolic
    /// link, say), or belongs to another user, or lets other users read or write it.
    #[error(
        "unsafe runtime directory {path:?}: owner uid {uid}, mode {mode:o} \
         (need a directory owned by uid {expected_uid}, mode 0700 or 0711; \
         set XDG_RUNTIME_DIR or COURIER_RUNTIME_DIR to a directory of your own)"
    )]
    UnsafeRuntimeDir {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// Its permission bits (`S_IFDIR` not included), 0 if it is not a directory.
        mode: u32,
        /// The uid it must belong to.
        expected_uid: u32,
    },

    /// The service's socket path is longer than a Unix socket address holds: the runtime
    /// directory's path and the name are too long together. Nothing was created; use a
    /// shorter name or a shorter `COURIER_RUNTIME_DIR`.
    #[error(
        "socket path {path:?} is {len} bytes, a Unix socket address holds {max}: \
         use a shorter service name or runtime directory"
    )]
    SocketPathTooLong {
        /// The path that does not fit.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The longest that fits ([`MAX_SOCKET_PATH`](crate::MAX_SOCKET_PATH)).
        max: usize,
    },

    /// No runtime directory could be chosen: neither `COURIER_RUNTIME_DIR` nor
    /// `XDG_RUNTIME_DIR` is set to an absolute path and the fallback could not be made.
    #[error("no usable runtime directory: {0}")]
    NoRuntimeDir(String),

    /// A live listener already owns the name.
    #[error("service {0:?} is already served by a live listener")]
    NameInUse(String),

    /// The service is at its limit of connected clients (`ServerConfig::max_clients`); try
    /// again once some have left.
    #[error("service {0:?} is at its limit of connected clients")]
    ServerFull(String),

    /// No listener serves the name (no socket, or a socket left by a dead listener).
    #[error("no listener serves {0:?}")]
    NotFound(String),

    /// The peer's credentials are not allowed: a listener refused this client, or the
    /// operating system denied access to the service's socket. On the listener's side
    /// `peer` says who was refused; on the client's side it is `None`.
    #[error("permission denied for service {name:?}{}", peer.map(|p| format!(" (peer pid {}, uid {}, gid {})", p.pid, p.uid, p.gid)).unwrap_or_default())]
    PermissionDenied {
        /// The service name.
        name: String,
        /// The refused peer, when the listener reports it.
        peer: Option<Credentials>,
    },

    /// The listener of the name runs as a user this client does not trust (by default, any
    /// user but its own: see `ConnectConfig::trust_uid`). Nothing was sent to it.
    #[error("service {name:?} is served by uid {} (pid {}), which this client does not trust", peer.uid, peer.pid)]
    UntrustedPeer {
        /// The service name.
        name: String,
        /// The listener's credentials.
        peer: Credentials,
    },

    /// A typed client (`#[courier::service]`) found a server of the name that speaks another
    /// interface: another service, or another version of this one (a method added, removed or
    /// changed). Checked once, at connect; nothing else was sent.
    #[error("service {name:?} serves {theirs}, but this client speaks {ours}")]
    InterfaceMismatch {
        /// The service name.
        name: String,
        /// The client's interface: its trait name and signature.
        ours: String,
        /// The server's, as it described itself (or why it could not).
        theirs: String,
    },

    /// The shared segment the peer sent is not one courier can use.
    #[error("bad shared segment: {0}")]
    BadSegment(#[from] SegmentError),

    /// The peer broke the handshake protocol (a wrong message, or it hung up mid-way).
    #[error("handshake with {name:?} failed: {reason}")]
    Handshake {
        /// The service name.
        name: String,
        /// What was wrong.
        reason: &'static str,
    },

    /// The configuration cannot be used (a segment too small for its header, or too large).
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),

    /// The deadline passed first.
    #[error("timed out")]
    Timeout,

    /// An offset and length outside a segment's payload.
    #[error("range {offset}+{len} is outside the payload of {payload_len} bytes")]
    OutOfBounds {
        /// The offset asked for.
        offset: usize,
        /// The length asked for.
        len: usize,
        /// The payload's length.
        payload_len: usize,
    },

    /// Every block of this side's pool is in use: loaned, or sent and not yet released by the
    /// receiver. Nothing was sent; try again once the receiver drops its messages.
    #[error("every block of the pool is in use")]
    PoolExhausted,

    /// The message is larger than a block. Nothing was sent.
    #[error("message of {len} bytes is larger than a block of {max} bytes")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The block size.
        max: usize,
    },

    /// The ring towards the peer is full and the channel was configured with
    /// [`Full::Error`](crate::Full::Error). Nothing was sent.
    #[error("the ring towards the peer is full")]
    RingFull,

    /// The peer closed the channel or its process died (seen through the connection's socket).
    /// Messages it sent before are still received first.
    #[error("the peer closed the channel or died")]
    PeerDead,

    /// The peer wrote a value into the shared segment that no honest peer writes (an index or
    /// length out of range, a counter that went backwards, a block returned twice). The value
    /// was not used. Treat the peer as hostile and drop the channel.
    #[error("corrupt shared segment: {0}")]
    Corrupt(&'static str),

    /// An operating-system call failed.
    #[error("{op}: {source}")]
    Io {
        /// What courier was doing.
        op: &'static str,
        /// The error from the system.
        #[source]
        source: io::Error,
    },
}

impl ShmError {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> ShmError {
        move |source| ShmError::Io { op, source }
    }
}

/// Why a shared segment was rejected. Every field of its header is checked, read once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// The segment is smaller than its header, or larger than the configured maximum.
    #[error("segment of {len} bytes is outside {min}..={max}")]
    BadSize {
        /// Its size.
        len: u64,
        /// The smallest size accepted.
        min: u64,
        /// The largest size accepted.
        max: u64,
    },
    /// The segment's size can still change: it lacks the shrink, grow or seal seal. (Checked
    /// before its size is read, so a peer cannot shrink it between the two.)
    #[error("segment is not sealed against resizing")]
    NotSealed,
    /// The descriptor is not a memfd in ordinary shared memory: a FIFO, a socket, a file on
    /// disk, or a huge-page memfd (whose pool a peer could drain under our mapping).
    #[error("the descriptor is not a regular memfd on tmpfs ({0})")]
    NotMemfd(&'static str),
    /// The header does not start with courier's magic number.
    #[error("bad magic number {0:#018x}")]
    BadMagic(u64),
    /// The header's layout version is not the one this build speaks.
    #[error("layout version {found}, this build speaks {expected}")]
    BadVersion {
        /// The version in the header.
        found: u32,
        /// The version of this build.
        expected: u32,
    },
    /// The size written in the header differs from the segment's real size.
    #[error("header says {header} bytes, segment has {actual}")]
    SizeMismatch {
        /// The size in the header.
        header: u64,
        /// The real size.
        actual: u64,
    },
    /// The creator has not finished writing the header (its ready flag is not set).
    #[error("segment is not ready")]
    NotReady,
}
