//! Named services: a [`Listener`] owns a name; a [`Connection`] is one handshake's result on
//! either side.
//!
//! # Names on disk
//!
//! A listener of `name` holds two files in the [runtime directory](crate::runtime_dir):
//! `<name>.lock`, on which it keeps an exclusive `flock` for its whole life, and `<name>.sock`,
//! the Unix socket clients connect to. The lock decides who owns the name: the kernel drops it
//! when its holder dies, however it dies, so the next listener takes it, removes the dead
//! listener's socket file and binds a new one; while the holder lives, nobody else gets it. Two
//! listeners starting at once race only on the lock, which exactly one wins. A listener that is
//! dropped removes both files; one that was killed leaves them, harmless, for the next.
//!
//! A filesystem socket (rather than an abstract one) is used because the runtime directory
//! gives it an owner and a mode: no other user can create, squat or replace a name, and the
//! socket file's mode is a first gate before the credential check.
//!
//! # The handshake
//!
//! ```text
//! client                                      listener
//! connect(<dir>/<name>.sock)  ------------->  accept
//! SO_PEERCRED: listener's pid, uid, gid       SO_PEERCRED: client's pid, uid, gid
//!                                             allowed? (same uid, or in the allow-list)
//!                                               no:  send [REFUSED], hang up
//!                                               yes: create, seal, fill a memfd segment
//! recv [ACCEPTED] + fd  <--------------------     send [ACCEPTED] + fd (SCM_RIGHTS)
//! check the segment (size, seals, header)
//! ```
//!
//! The reply is one 16-byte message: `"CRHS"`, the protocol version (`u16`, little-endian),
//! a status byte, zeros. The client sends nothing, so a client that never reads cannot make the
//! listener wait; a listener that never answers is bounded by the client's timeout.
//!
//! **The credentials come from the kernel (`SO_PEERCRED`, recorded at `connect`), never from
//! bytes the peer sent, and the listener decides before it creates any shared memory.**

use crate::dir;
use crate::error::ShmError;
use crate::segment::{Segment, HEADER_LEN};
use crate::substrate::deadline::Deadline;
use crate::substrate::park::SpinLimit;
use crate::sys::{self, Credentials};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const HELLO_MAGIC: [u8; 4] = *b"CRHS";
const PROTOCOL_VERSION: u16 = 1;
const HELLO_LEN: usize = 16;
const ACCEPTED: u8 = 0;
/// The handshake error of a listener that closed the connection without answering.
const HUNG_UP: &str = "the listener hung up";
const REFUSED: u8 = 1;
/// The listener is at its connection limit.
const BUSY: u8 = 2;

fn hello(status: u8) -> [u8; HELLO_LEN] {
    let mut m = [0; HELLO_LEN];
    m[..4].copy_from_slice(&HELLO_MAGIC);
    m[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    m[6] = status;
    m
}

fn check_name(name: &str) -> Result<(), ShmError> {
    if courier_core::names::is_valid_name(name) {
        Ok(())
    } else {
        Err(ShmError::InvalidName(name.to_owned()))
    }
}

/// The longest socket path, in bytes, a Unix socket address holds (`sun_path` is 108 bytes,
/// the last one a NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The path of `name`'s socket in `dir`, or [`ShmError::SocketPathTooLong`] if it does not
/// fit in a socket address (a long runtime directory with a long name).
fn socket_path(dir: &Path, name: &str) -> Result<PathBuf, ShmError> {
    let path = dir.join(format!("{name}.sock"));
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(ShmError::SocketPathTooLong {
            path,
            len,
            max: MAX_SOCKET_PATH,
        });
    }
    Ok(path)
}

/// How a [`Listener`] sets up its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    segment_size: usize,
    allowed_uids: Vec<u32>,
    allowed_gids: Vec<u32>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            segment_size: 64 * 1024,
            allowed_uids: Vec::new(),
            allowed_gids: Vec::new(),
        }
    }
}

impl ListenerConfig {
    /// The default: 64 KiB segments, only clients of this process's effective uid.
    pub fn new() -> Self {
        Self::default()
    }

    /// The size in bytes of each connection's segment, its 64-byte header included.
    pub fn segment_size(mut self, bytes: usize) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Also admits clients whose effective uid is `uid`. Makes the socket file
    /// world-connectable (0666); the runtime directory must then be 0711 for them to reach it.
    pub fn allow_uid(mut self, uid: u32) -> Self {
        self.allowed_uids.push(uid);
        self
    }

    /// Also admits clients whose effective gid is `gid` (see [`ListenerConfig::allow_uid`]).
    pub fn allow_gid(mut self, gid: u32) -> Self {
        self.allowed_gids.push(gid);
        self
    }

    fn allows(&self, peer: &Credentials) -> bool {
        peer.uid == sys::euid()
            || self.allowed_uids.contains(&peer.uid)
            || self.allowed_gids.contains(&peer.gid)
    }

    fn socket_mode(&self) -> u32 {
        if self.allowed_uids.is_empty() && self.allowed_gids.is_empty() {
            0o600
        } else {
            0o666
        }
    }
}

/// How a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectConfig {
    max_segment_size: usize,
    trusted_uids: Vec<u32>,
    spin: SpinLimit,
}

/// How long an RPC caller spins for its answer by default before it sleeps.
pub(crate) const DEFAULT_CALLER_SPIN: Duration = Duration::from_micros(20);

impl Default for ConnectConfig {
    fn default() -> Self {
        ConnectConfig {
            max_segment_size: 1 << 30,
            trusted_uids: Vec::new(),
            spin: SpinLimit::Adaptive(DEFAULT_CALLER_SPIN),
        }
    }
}

impl ConnectConfig {
    /// The default: segments up to 1 GiB are accepted.
    pub fn new() -> Self {
        Self::default()
    }

    /// The largest segment the client maps; a larger one is a
    /// [`SegmentError::BadSize`](crate::SegmentError::BadSize).
    pub fn max_segment_size(mut self, bytes: usize) -> Self {
        self.max_segment_size = bytes;
        self
    }

    /// Also accepts a listener running as `uid`. By default only a listener of this
    /// process's effective uid is accepted (root's included only when trusted here): the
    /// client sends it every request and lent buffer, so a listener of another user is
    /// refused with [`ShmError::UntrustedPeer`] before anything is mapped.
    pub fn trust_uid(mut self, uid: u32) -> Self {
        self.trusted_uids.push(uid);
        self
    }

    /// The longest an RPC caller of this connection spins for its answer before it sleeps
    /// (default 20 µs). The budget adapts: when an answer comes while spinning it doubles,
    /// and becomes at least twice what that answer took (up to `limit`); it halves after four
    /// misses in a row (below `limit`, only if one more call spinning the whole `limit`
    /// misses too), halves when the caller was preempted while spinning at `limit`, and
    /// drops to none when preempted below it; with none left, one call in 64 spins 2 µs (and one in 256 the whole `limit`) to notice that
    /// the server has become fast again. A caller never spins for a call that had to wake
    /// the server, nor while the server's worker was last on the caller's own CPU: then it
    /// yields the CPU for up to 20 µs instead, which runs the worker at once if it is
    /// waiting there (with a core busy, two processes on one CPU hand a call back and forth
    /// this way in about half the time and CPU of two futex wake-ups).
    ///
    /// Long calls are paced instead: after two calls in a row that each took 200 µs or more
    /// (and slept), the next sleeps until 100 µs before the shorter of the two would have
    /// ended, then spins for its answer (for as long as the shorter took, 250 µs to 1 ms),
    /// so that its answer costs no wake-up; a call answered without sleeping, or a paced
    /// spin that was preempted, ends the pacing. That spends about 100 µs of CPU per long
    /// call.
    ///
    /// `Duration::ZERO`: never spin or yield, paced or not (every call sleeps until its answer,
    /// costing two wake-ups per round trip and no CPU while waiting).
    ///
    /// Replaces a [`busy_poll`](Self::busy_poll) given before.
    ///
    /// ```
    /// use courier_shm::ConnectConfig;
    /// use std::time::Duration;
    /// // A battery-powered device: never burn the CPU waiting.
    /// let config = ConnectConfig::new().spin(Duration::ZERO);
    /// # let _ = config;
    /// ```
    pub fn spin(mut self, limit: Duration) -> Self {
        self.spin = SpinLimit::Adaptive(limit);
        self
    }

    /// Busy-polls: every RPC call of this connection spins for its answer for up to
    /// `limit` before it sleeps, whatever the calls before did, and also when the call had
    /// to wake the server; long calls are not paced. A call whose worker last ran on its
    /// CPU spins there only where the two can each have a CPU (the scheduler soon moves one
    /// of two spinners sharing a CPU). Where they cannot (other processes' busy threads hold
    /// the other CPUs, or courier cannot tell: before its second look at the machine, or
    /// where `/proc` cannot be read), the worker runs only once the caller gives that CPU
    /// up, and the call waits as by default: it hands the CPU over, or moves, or sleeps if
    /// it woke the server. With one core of two kept busy by another process, a 1 MiB
    /// `lend_mut` busy-polling lost a 4 ms scheduler tick a call for as long as the pair
    /// shared a CPU, and made 22–38 k calls a second against 45–47 k since. A dead server
    /// or the call's deadline ends the spin. An async call spins at most 20 µs (as by
    /// default) before its task is put to sleep, so as not to hold the executor's thread.
    ///
    /// Except on oversubscribed CPUs: a connection whose spins are preempted often (two
    /// calls within 1,024 busy-polling ones: a stop of its spin in which the kernel gave
    /// its CPU to another thread, of 200 µs in the first millisecond of a spin, later of
    /// 0.5 ms, another thread's time slice; time the hypervisor takes from a virtual CPU
    /// does not count, and a thread with a core to itself is never preempted) makes its
    /// calls as by default for 250 ms (an adaptive [`spin`](Self::spin) of at most 20 µs,
    /// or `limit` if shorter, the worker's CPU heeded, and for as long as the worker runs
    /// on the caller's CPU; long calls paced), twice as long each time it is preempted
    /// again soon after (at most a minute), then busy-polls again.
    /// Spinning beside more runnable threads than CPUs, a caller holds a CPU the worker or
    /// other processes need, and loses whole scheduler slices (milliseconds) itself: with
    /// one core of two kept busy by another process, 16 MiB `lend_mut` calls busy-polling
    /// had a p99 of 8 ms and made 0.7 k calls a second, against 0.56–0.64 ms and
    /// 1.8–1.9 k since.
    ///
    /// For latency at the price of a core: the regime of a busy-polling
    /// [`ShmChannel`](crate::ShmChannel) or iceoryx2's busy-poll loops, for a machine with a
    /// core to spare per caller. Pair it with
    /// [`ServerConfig::busy_poll`](crate::ServerConfig::busy_poll), or the server's
    /// worker may be asleep when the call comes. Replaces a [`spin`](Self::spin) given
    /// before.
    ///
    /// ```
    /// use courier_shm::ConnectConfig;
    /// use std::time::Duration;
    /// // A trading engine's client: spin up to a second for each answer.
    /// let config = ConnectConfig::new().busy_poll(Duration::from_secs(1));
    /// # let _ = config;
    /// ```
    pub fn busy_poll(mut self, limit: Duration) -> Self {
        self.spin = SpinLimit::BusyPoll(limit);
        self
    }

    /// The spin limit ([`ConnectConfig::spin`], [`ConnectConfig::busy_poll`]).
    pub(crate) fn spin_limit(&self) -> SpinLimit {
        self.spin
    }

    fn trusts(&self, peer: &Credentials) -> bool {
        peer.uid == sys::euid() || self.trusted_uids.contains(&peer.uid)
    }
}

/// Owns a service name and accepts connections to it.
///
/// Dropping the listener frees the name and removes its files; connections already made live
/// on.
///
/// # Examples
///
/// ```no_run
/// use courier_shm::{Listener, ListenerConfig};
/// use std::time::Duration;
///
/// let listener = Listener::bind("echo", ListenerConfig::new().segment_size(1 << 20))?;
/// let conn = listener.accept_timeout(Duration::from_secs(5))?;
/// println!("client pid {}", conn.peer().pid);
/// conn.segment().write_at(0, b"hello")?;
/// # Ok::<(), courier_shm::ShmError>(())
/// ```
#[derive(Debug)]
pub struct Listener {
    name: String,
    sock_path: PathBuf,
    lock_path: PathBuf,
    sock: OwnedFd,
    config: ListenerConfig,
    /// Other files of the name, removed with the socket (see [`Listener::remove_on_drop`]).
    companions: Vec<PathBuf>,
    // Last: the lock is released only after the files are removed (see `Drop`).
    _lock: OwnedFd,
}

impl Listener {
    /// Takes the name `name` in the runtime directory (creating it 0700 if missing) and
    /// listens on it. A name left by a dead listener is taken over.
    ///
    /// # Errors
    ///
    /// [`ShmError::InvalidName`] (before anything is touched), [`ShmError::InvalidConfig`],
    /// [`ShmError::UnsafeRuntimeDir`], [`ShmError::NoRuntimeDir`], [`ShmError::NameInUse`]
    /// if a live listener owns the name, or [`ShmError::Io`].
    pub fn bind(name: &str, config: ListenerConfig) -> Result<Listener, ShmError> {
        check_name(name)?;
        if config.segment_size < HEADER_LEN {
            return Err(ShmError::InvalidConfig(
                "segment size is smaller than the 64-byte header",
            ));
        }
        let dir = dir::for_listener()?;
        // Before the lock file is made: a name that cannot be bound leaves nothing behind.
        let sock_path = socket_path(&dir, name)?;
        let lock_path = dir.join(format!("{name}.lock"));
        let lock = sys::lock_file(&lock_path)
            .map_err(ShmError::io("locking the service name"))?
            .ok_or_else(|| ShmError::NameInUse(name.to_owned()))?;
        // We own the name: whatever socket file is there was left by a dead listener.
        sys::unlink_if_present(&sock_path).map_err(ShmError::io("removing a stale socket"))?;
        let sock = sys::listen_unix(&sock_path, config.socket_mode())
            .map_err(ShmError::io("binding the service socket"))?;
        Ok(Listener {
            name: name.to_owned(),
            sock_path,
            lock_path,
            sock,
            config,
            companions: Vec::new(),
            _lock: lock,
        })
    }

    /// Makes `path` (a file beside the socket, such as an RPC server's `<name>.stats`) go
    /// with the name: it is removed when the listener drops, while the name's lock is still
    /// held, so it can never remove the file of a new owner of the name.
    pub(crate) fn remove_on_drop(&mut self, path: PathBuf) {
        self.companions.push(path);
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for a client and performs the handshake.
    ///
    /// # Errors
    ///
    /// As [`Listener::accept_timeout`], without the timeout.
    pub fn accept(&self) -> Result<Connection, ShmError> {
        self.accept_until(None)
    }

    /// Waits up to `timeout` for a client and performs the handshake (`Duration::MAX`: no
    /// limit).
    ///
    /// # Errors
    ///
    /// [`ShmError::Timeout`]; [`ShmError::PermissionDenied`] with the client's credentials if
    /// they are not allowed (the client was told and hung up on; the listener stays usable);
    /// [`ShmError::Io`] if the segment cannot be made or sent (a client that hung up first,
    /// say).
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection, ShmError> {
        self.accept_until(Deadline::after(timeout).instant())
    }

    fn accept_until(&self, deadline: Option<Instant>) -> Result<Connection, ShmError> {
        self.accept_with(deadline, |_| {})
    }

    /// Accepts one waiting client (if any) and tells it the service is at its connection
    /// limit: it gets [`ShmError::ServerFull`].
    pub(crate) fn refuse_busy(&self) -> Result<(), ShmError> {
        if let Some(sock) =
            sys::accept(self.sock.as_fd()).map_err(ShmError::io("accepting a client"))?
        {
            // Best effort: the client may already be gone.
            let _ = sys::send_with_fd(sock.as_fd(), &hello(BUSY), None);
        }
        Ok(())
    }

    /// Blocks until a client is waiting to be accepted (`Some(true)`) or `stop` becomes
    /// readable (`Some(false)`), or `timeout` passes (`None`; `None` for `timeout`: no
    /// time-out): the RPC server's accept thread sleeps here.
    pub(crate) fn wait_client(
        &self,
        stop: std::os::fd::BorrowedFd<'_>,
        timeout: Option<std::time::Duration>,
    ) -> io::Result<Option<bool>> {
        sys::wait_either(self.sock.as_fd(), stop, timeout)
    }

    /// As [`Listener::accept_timeout`], with `init` run on the new segment before it is sent:
    /// what it writes is in place before the client can map the segment.
    pub(crate) fn accept_with(
        &self,
        deadline: Option<Instant>,
        init: impl FnOnce(&Segment),
    ) -> Result<Connection, ShmError> {
        let sock = loop {
            if !sys::wait_readable(self.sock.as_fd(), deadline)
                .map_err(ShmError::io("waiting for a client"))?
            {
                return Err(ShmError::Timeout);
            }
            // Another thread may have taken the client we were woken for: wait again.
            if let Some(s) =
                sys::accept(self.sock.as_fd()).map_err(ShmError::io("accepting a client"))?
            {
                break s;
            }
        };
        let peer = sys::peer_credentials(sock.as_fd())
            .map_err(ShmError::io("reading the client's credentials"))?;
        if !self.config.allows(&peer) {
            // Best effort: the client may already be gone.
            let _ = sys::send_with_fd(sock.as_fd(), &hello(REFUSED), None);
            return Err(ShmError::PermissionDenied {
                name: self.name.clone(),
                peer: Some(peer),
            });
        }
        let segment = Segment::create(self.config.segment_size)?;
        init(&segment);
        sys::send_with_fd(sock.as_fd(), &hello(ACCEPTED), Some(segment.fd()))
            .map_err(ShmError::io("sending the segment"))?;
        Ok(Connection {
            name: self.name.clone(),
            peer,
            segment,
            _sock: sock,
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // We still hold the lock, so no other listener can own these paths yet; a listener
        // that opened the lock file before we remove it finds it unlinked and starts over
        // (see `sys::lock_file`).
        let _ = sys::unlink_if_present(&self.sock_path);
        for path in &self.companions {
            let _ = sys::unlink_if_present(path);
        }
        let _ = sys::unlink_if_present(&self.lock_path);
    }
}

/// One side of an established connection: the shared segment and who is at the other end.
///
/// Dropping it unmaps the segment and closes the socket; the segment's memory is freed by the
/// kernel once both sides have done so, or died.
///
/// # Examples
///
/// ```no_run
/// use courier_shm::{ConnectConfig, Connection};
/// use std::time::Duration;
///
/// let conn = Connection::connect_timeout("echo", &ConnectConfig::new(), Duration::from_secs(5))?;
/// println!("listener pid {}", conn.peer().pid);
/// let mut buf = [0; 5];
/// conn.segment().read_at(0, &mut buf)?;
/// # Ok::<(), courier_shm::ShmError>(())
/// ```
#[derive(Debug)]
pub struct Connection {
    name: String,
    peer: Credentials,
    segment: Segment,
    // Kept open: the peer's liveness is read from it.
    _sock: OwnedFd,
}

impl Connection {
    /// Connects to the listener of `name` once and performs the handshake, waiting for the
    /// listener's answer without a deadline (prefer [`Connection::connect_timeout`]).
    ///
    /// # Errors
    ///
    /// As [`Connection::connect_timeout`], with [`ShmError::NotFound`] at once if no listener
    /// serves the name, and no [`ShmError::Timeout`].
    pub fn connect(name: &str, config: &ConnectConfig) -> Result<Connection, ShmError> {
        check_name(name)?;
        let path = socket_path(&dir::for_client(name)?, name)?;
        let sock = match sys::connect_unix(&path) {
            Ok(s) => s,
            Err(e) => return Err(connect_error(name, e)),
        };
        Self::handshake(name, sock, config, None)
    }

    /// Connects to the listener of `name`, waiting up to `timeout` for the name to appear
    /// (looking again every 10 ms) and for the handshake. `Duration::MAX` means no limit.
    ///
    /// # Errors
    ///
    /// [`ShmError::InvalidName`] (before anything is touched); [`ShmError::Timeout`] if no
    /// listener answered in time; [`ShmError::PermissionDenied`] if the listener refused this
    /// process's credentials or the system denied access to its socket;
    /// [`ShmError::UnsafeRuntimeDir`] if the runtime directory is writable by others;
    /// [`ShmError::BadSegment`] if the segment fails a check; [`ShmError::Handshake`] if the
    /// listener broke the protocol; [`ShmError::Io`].
    pub fn connect_timeout(
        name: &str,
        config: &ConnectConfig,
        timeout: Duration,
    ) -> Result<Connection, ShmError> {
        check_name(name)?;
        // `Duration::MAX` (or any timeout past the clock's range) means no limit.
        let deadline = Deadline::after(timeout);
        loop {
            let attempt = dir::for_client(name).and_then(|d| {
                let path = socket_path(&d, name)?;
                sys::connect_unix(&path).map_err(|e| connect_error(name, e))
            });
            match attempt.and_then(|sock| Self::handshake(name, sock, config, deadline.instant())) {
                Ok(conn) => return Ok(conn),
                Err(ShmError::NotFound(_)) => {}
                // A listener that dies while our connection waits in its backlog (its process
                // closes the listening socket after the sockets of its connections) resets
                // or hangs up on it: the name is changing hands, so look again.
                Err(ShmError::Io { ref source, .. })
                    if source.kind() == io::ErrorKind::ConnectionReset => {}
                Err(ShmError::Handshake { reason, .. }) if reason == HUNG_UP => {}
                Err(e) => return Err(e),
            }
            let left = deadline.left()?.unwrap_or(Duration::MAX);
            std::thread::sleep(left.min(Duration::from_millis(10)));
        }
    }

    fn handshake(
        name: &str,
        sock: OwnedFd,
        config: &ConnectConfig,
        deadline: Option<Instant>,
    ) -> Result<Connection, ShmError> {
        let fail = |reason| ShmError::Handshake {
            name: name.to_owned(),
            reason,
        };
        let peer = sys::peer_credentials(sock.as_fd())
            .map_err(ShmError::io("reading the listener's credentials"))?;
        if !config.trusts(&peer) {
            return Err(ShmError::UntrustedPeer {
                name: name.to_owned(),
                peer,
            });
        }
        if !sys::wait_readable(sock.as_fd(), deadline)
            .map_err(ShmError::io("waiting for the listener"))?
        {
            return Err(ShmError::Timeout);
        }
        let mut msg = [0u8; HELLO_LEN + 1];
        let (n, fd) = sys::recv_with_fd(sock.as_fd(), &mut msg)
            .map_err(ShmError::io("receiving the handshake"))?;
        if n == 0 {
            return Err(fail(HUNG_UP));
        }
        if n != HELLO_LEN || msg[..4] != HELLO_MAGIC {
            return Err(fail("not a courier handshake"));
        }
        if msg[4..6] != PROTOCOL_VERSION.to_le_bytes() {
            return Err(fail("unsupported protocol version"));
        }
        match (msg[6], fd) {
            (REFUSED, _) => Err(ShmError::PermissionDenied {
                name: name.to_owned(),
                peer: None,
            }),
            (ACCEPTED, Some(fd)) => Ok(Connection {
                name: name.to_owned(),
                peer,
                segment: Segment::open(fd, config.max_segment_size)?,
                _sock: sock,
            }),
            (BUSY, _) => Err(ShmError::ServerFull(name.to_owned())),
            (ACCEPTED, None) => Err(fail("no segment was attached")),
            _ => Err(fail("unknown status")),
        }
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The credentials of the process at the other end, as the kernel recorded them: for a
    /// client, the listener's; for a listener, the client's.
    pub fn peer(&self) -> Credentials {
        self.peer
    }

    /// The shared segment.
    pub fn segment(&self) -> &Segment {
        &self.segment
    }

    /// The connection's parts: its segment, its socket (the peer's liveness) and the peer.
    pub(crate) fn into_parts(self) -> (Segment, OwnedFd, Credentials) {
        (self.segment, self._sock, self.peer)
    }
}

fn connect_error(name: &str, e: io::Error) -> ShmError {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            ShmError::NotFound(name.to_owned())
        }
        io::ErrorKind::PermissionDenied => ShmError::PermissionDenied {
            name: name.to_owned(),
            peer: None,
        },
        _ => ShmError::Io {
            op: "connecting to the service",
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<Listener>();
        assert_send_sync::<Connection>();
        assert_send_sync::<Segment>();
    }

    #[test]
    fn bad_names_are_refused_before_any_file_is_touched() {
        // No runtime directory is consulted: this would fail on an unset or bad one too.
        for bad in ["", ".", "..", "a/b", "../x", "a\0b", &"n".repeat(64)] {
            assert!(matches!(
                Listener::bind(bad, ListenerConfig::new()),
                Err(ShmError::InvalidName(_))
            ));
            assert!(matches!(
                Connection::connect(bad, &ConnectConfig::new()),
                Err(ShmError::InvalidName(_))
            ));
            assert!(matches!(
                Connection::connect_timeout(bad, &ConnectConfig::new(), Duration::ZERO),
                Err(ShmError::InvalidName(_))
            ));
        }
    }

    /// A connected pair (listener's end, client's end) through a socket at a fresh path.
    fn pair(tag: &str) -> (OwnedFd, OwnedFd) {
        let path = std::env::temp_dir().join(format!(
            "courier-shm-unit-{}-{tag}.sock",
            std::process::id()
        ));
        sys::unlink_if_present(&path).unwrap();
        let l = sys::listen_unix(&path, 0o600).unwrap();
        let c = sys::connect_unix(&path).unwrap();
        let s = sys::accept(l.as_fd()).unwrap().unwrap();
        sys::unlink_if_present(&path).unwrap();
        (s, c)
    }

    /// What a client makes of a listener that answers `msg` with `fd` attached.
    fn client_sees(tag: &str, msg: Option<&[u8]>, fd: Option<&OwnedFd>) -> ShmError {
        let (server, client) = pair(tag);
        if let Some(msg) = msg {
            sys::send_with_fd(server.as_fd(), msg, fd.map(|f| f.as_fd())).unwrap();
        } else {
            drop(server);
        }
        let deadline = Some(Instant::now() + Duration::from_millis(50));
        match Connection::handshake("x", client, &ConnectConfig::new(), deadline) {
            Ok(_) => panic!("a hostile listener was accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_hostile_listener_gets_typed_errors() {
        // A segment whose header was never written.
        let blank = sys::memfd(4096).unwrap();
        sys::seal_size(blank.as_fd()).unwrap();
        assert!(matches!(
            client_sees("blank", Some(&hello(ACCEPTED)), Some(&blank)),
            ShmError::BadSegment(crate::SegmentError::BadMagic(0))
        ));
        // A real segment is accepted through the same path.
        let (server, client) = pair("good");
        let seg = Segment::create(4096).unwrap();
        sys::send_with_fd(server.as_fd(), &hello(ACCEPTED), Some(seg.fd())).unwrap();
        let conn = Connection::handshake("x", client, &ConnectConfig::new(), None).unwrap();
        assert_eq!(conn.peer().pid, std::process::id() as i32);
        // Too large for the client's limit.
        let (server, client) = pair("big");
        sys::send_with_fd(server.as_fd(), &hello(ACCEPTED), Some(seg.fd())).unwrap();
        let small = ConnectConfig::new().max_segment_size(1024);
        assert!(matches!(
            Connection::handshake("x", client, &small, None),
            Err(ShmError::BadSegment(crate::SegmentError::BadSize {
                len: 4096,
                ..
            }))
        ));

        assert!(matches!(
            client_sees("refused", Some(&hello(REFUSED)), None),
            ShmError::PermissionDenied { peer: None, .. }
        ));
        for (tag, msg) in [
            ("no-fd", hello(ACCEPTED).to_vec()),
            ("status", hello(7).to_vec()),
            ("magic", b"XXXX\x01\0\0\0\0\0\0\0\0\0\0\0".to_vec()),
            ("short", b"CRHS".to_vec()),
            ("long", [hello(ACCEPTED).as_slice(), b"more"].concat()),
            ("version", {
                let mut m = hello(ACCEPTED);
                m[4] = 9;
                m.to_vec()
            }),
        ] {
            assert!(
                matches!(
                    client_sees(tag, Some(&msg), None),
                    ShmError::Handshake { .. }
                ),
                "{tag}"
            );
        }
        assert!(matches!(
            client_sees("hangup", None, None),
            ShmError::Handshake { .. }
        ));
        // A listener that never answers: the client's deadline ends the wait.
        let (_server, client) = pair("silent");
        let deadline = Some(Instant::now() + Duration::from_millis(20));
        assert!(matches!(
            Connection::handshake("x", client, &ConnectConfig::new(), deadline),
            Err(ShmError::Timeout)
        ));
    }

    #[test]
    fn a_client_trusts_only_its_own_uid_unless_told() {
        let me = sys::euid();
        let peer = |uid| Credentials {
            pid: 0,
            uid,
            gid: 0,
        };
        let other = me.wrapping_add(12345);
        assert!(ConnectConfig::new().trusts(&peer(me)));
        assert!(!ConnectConfig::new().trusts(&peer(other)));
        assert!(ConnectConfig::new().trust_uid(other).trusts(&peer(other)));
    }

    #[test]
    fn hello_round_trip() {
        let m = hello(REFUSED);
        assert_eq!(&m[..4], b"CRHS");
        assert_eq!(m[6], REFUSED);
    }
}
