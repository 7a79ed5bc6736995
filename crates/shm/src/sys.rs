//! Every operating-system call of courier::shm, through `rustix`. The rest of the crate speaks
//! in `OwnedFd`s, paths and plain numbers; nothing else imports `rustix`.

use rustix::event::{PollFd, PollFlags};
use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::ptr::NonNull;
use std::time::Instant;

use crate::sync::AtomicU32;

/// Credentials of the process at the other end of a Unix socket, as the kernel recorded them
/// when the connection was made (`SO_PEERCRED`); the peer cannot forge them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// The peer's process id; 0 if the peer is in another pid namespace.
    pub pid: i32,
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
}

/// The effective uid of this process.
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// What `lstat` says about a path: owner, permission bits and whether it is a directory.
pub(crate) struct FileInfo {
    pub(crate) uid: u32,
    pub(crate) mode: u32,
    pub(crate) is_dir: bool,
}

/// `lstat(path)`: symbolic links are not followed.
pub(crate) fn lstat(path: &Path) -> io::Result<FileInfo> {
    let st = rustix::fs::lstat(path)?;
    Ok(FileInfo {
        uid: st.st_uid,
        mode: st.st_mode & 0o7777,
        is_dir: st.st_mode & 0o170000 == 0o040000,
    })
}

/// `mkdir(path, mode)`.
pub(crate) fn mkdir(path: &Path, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::mkdir(path, Mode::from_raw_mode(mode))?)
}

/// `chmod(path, mode)`.
pub(crate) fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::chmod(path, Mode::from_raw_mode(mode))?)
}

/// `unlink(path)`; a path that is already gone is not an error.
pub(crate) fn unlink_if_present(path: &Path) -> io::Result<()> {
    match rustix::fs::unlink(path) {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        r => Ok(r?),
    }
}

/// Opens (creating if needed, mode 0600) the lock file at `path` and takes an exclusive
/// open-file-description lock (`F_OFD_SETLK`) on all of it without blocking. `Ok(None)` if
/// another open file description holds it.
///
/// An OFD lock, not `flock`: [`is_locked`] can then ask whether the name is held
/// (`F_OFD_GETLK`) without taking a lock itself, so `courier ls` never makes a concurrent
/// bind fail. Unlike a classic `fcntl` lock, it belongs to the open file description, so two
/// servers in one process exclude each other too, and it goes when the descriptor closes.
///
/// The lock is the one that `path` names *now*: if the file was unlinked or replaced while we
/// waited for it, we try again, so two processes can never each hold a lock on a different
/// file under the same name.
pub(crate) fn lock_file(path: &Path) -> io::Result<Option<OwnedFd>> {
    loop {
        let fd = rustix::fs::open(
            path,
            OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o600),
        )?;
        match ofd_lock(fd.as_fd(), libc::F_OFD_SETLK, libc::F_WRLCK) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
        let held = rustix::fs::fstat(&fd)?;
        match rustix::fs::lstat(path) {
            Ok(now) if now.st_dev == held.st_dev && now.st_ino == held.st_ino => {
                return Ok(Some(fd))
            }
            // The previous owner removed (or replaced) the file between our open and our
            // lock: the lock we hold is on an orphan. Start over with the current file.
            Ok(_) | Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `fcntl(fd, cmd, &flock { l_type, whole file })`, retried on `EINTR`; returns the `flock`
/// as the kernel left it (for `F_OFD_GETLK`, the conflicting lock's type or `F_UNLCK`).
fn ofd_lock(fd: BorrowedFd<'_>, cmd: libc::c_int, l_type: libc::c_int) -> io::Result<libc::flock> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: an all-zero `flock` is a valid value of this plain C struct (whole file from
        // offset 0, pid 0, as OFD commands require).
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = l_type as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: `fl` is a writable `flock` that lives across the call, which is what the
        // OFD lock commands read and (GETLK) write; `fd` is a live descriptor.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
        if r != -1 {
            return Ok(fl);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A new listening Unix stream socket bound at `path`, its file given `mode` before it
/// accepts connections. It is non-blocking: [`accept`] never waits (see [`wait_readable`]),
/// so two threads accepting on one listener cannot leave one blocked past its deadline.
pub(crate) fn listen_unix(path: &Path, mode: u32) -> io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let addr = SocketAddrUnix::new(path)?;
    rustix::net::bind(&fd, &addr)?;
    // Until listen() a connect() is refused, so no one connects through a looser mode.
    rustix::fs::chmod(path, Mode::from_raw_mode(mode))?;
    rustix::net::listen(&fd, 128)?;
    Ok(fd)
}

/// Connects a new Unix stream socket to `path`.
pub(crate) fn connect_unix(path: &Path) -> io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let addr = SocketAddrUnix::new(path)?;
    rustix::net::connect(&fd, &addr)?;
    Ok(fd)
}

/// `d` as a time-out for `poll`, `epoll_wait` and `futex`: a span too long for a `Timespec`
/// becomes the longest one (about 292 billion years).
fn timeout_spec(d: std::time::Duration) -> rustix::event::Timespec {
    rustix::event::Timespec::try_from(d).unwrap_or(rustix::event::Timespec {
        tv_sec: i64::MAX,
        tv_nsec: 0,
    })
}

/// Waits until `fd` is readable (or hung up), at most until `deadline` (`None`: forever).
/// `Ok(false)` on timeout.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> io::Result<bool> {
    wait_ready(fd, PollFlags::IN, deadline)
}

/// Waits until `fd` reports one of `events` (or a hang-up or error), at most until
/// `deadline` (`None`: forever). `Ok(false)` on timeout.
fn wait_ready(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    loop {
        let timeout = deadline.map(|d| timeout_spec(d.saturating_duration_since(Instant::now())));
        let mut fds = [PollFd::from_borrowed_fd(fd, events)];
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(false);
                }
            }
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Blocks until `fd` is readable (`Some(true)`) or `stop` is (`Some(false)`), or `timeout`
/// passes (`None`; a signal ends the wait the same way). `None` for `timeout`: no time-out.
pub(crate) fn wait_either(
    fd: BorrowedFd<'_>,
    stop: BorrowedFd<'_>,
    timeout: Option<std::time::Duration>,
) -> io::Result<Option<bool>> {
    let timeout = timeout.map(timeout_spec);
    let mut fds = [
        PollFd::from_borrowed_fd(fd, PollFlags::IN),
        PollFd::from_borrowed_fd(stop, PollFlags::IN),
    ];
    match rustix::event::poll(&mut fds, timeout.as_ref()) {
        Ok(_) if !fds[1].revents().is_empty() => Ok(Some(false)),
        Ok(_) if !fds[0].revents().is_empty() => Ok(Some(true)),
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether a live owner holds the name lock at `path` (see [`lock_file`]); `false` if the
/// file is missing, unlocked or not a regular file. A probe (`F_OFD_GETLK`): it takes no lock,
/// so it never makes a concurrent [`lock_file`] fail, and it never blocks (the file is opened
/// `O_NONBLOCK`, so a FIFO planted under the name cannot hold us in `open`).
pub(crate) fn is_locked(path: &Path) -> bool {
    let Ok(fd) = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
        Mode::empty(),
    ) else {
        return false;
    };
    if !rustix::fs::fstat(&fd).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
    }) {
        return false;
    }
    ofd_lock(fd.as_fd(), libc::F_OFD_GETLK, libc::F_WRLCK)
        .is_ok_and(|fl| i32::from(fl.l_type) != libc::F_UNLCK)
}

/// Accepts one connection (close-on-exec, blocking) from a listener made by [`listen_unix`].
/// `Ok(None)` if none is pending.
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    loop {
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC) {
            Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::CONNABORTED) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
            r => return Ok(Some(r?)),
        }
    }
}

/// How many times the calling thread has been switched out involuntarily: another thread of
/// this machine was given its CPU while it could still run (`ru_nivcsw` of
/// `getrusage(RUSAGE_THREAD)`). Time the hypervisor takes from a virtual CPU, and interrupts,
/// do not count. `None` if the kernel does not say.
#[cfg(not(loom))]
pub(crate) fn involuntary_switches() -> Option<u64> {
    // SAFETY: `rusage` is plain data, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a writable `rusage`, which is what RUSAGE_THREAD fills.
    let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    (r == 0).then(|| u64::try_from(usage.ru_nivcsw).unwrap_or(0))
}

/// The credentials of the peer of a connected Unix socket. Read with `getsockopt` directly:
/// rustix's `socket_peercred` builds a non-zero pid, and a peer in another pid namespace has
/// pid 0 here (which [`Credentials::pid`] then says).
pub(crate) fn peer_credentials(sock: BorrowedFd<'_>) -> io::Result<Credentials> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a writable `ucred` of `len` bytes, as SO_PEERCRED writes; `sock` is a
    // live descriptor for the call's duration.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(io::Error::other("short SO_PEERCRED"));
    }
    Ok(Credentials {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Sends `bytes`, with `fd` attached (`SCM_RIGHTS`) if given, in one message. The message is
/// small; a partial send is reported as an error.
pub(crate) fn send_with_fd(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    send_msg(sock, bytes, fd, SendFlags::empty()).map(drop)
}

/// One `sendmsg` of `bytes` with `fd` attached, retried on `EINTR`, with `flags` beside
/// `MSG_NOSIGNAL`; `Ok(false)` if `MSG_DONTWAIT` found the socket full (nothing was sent).
fn send_msg(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fd: Option<BorrowedFd<'_>>,
    flags: SendFlags,
) -> io::Result<bool> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = fd {
        fds = [fd];
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::Error::other("no room for SCM_RIGHTS"));
        }
    }
    let n = loop {
        match rustix::net::sendmsg(
            sock,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL | flags,
        ) {
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::WOULDBLOCK) if flags.contains(SendFlags::DONTWAIT) => {
                return Ok(false)
            }
            r => break r?,
        }
    };
    if n != bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short send"));
    }
    Ok(true)
}

/// Receives one message into `buf`: its length and the first file descriptor attached to it,
/// if any (close-on-exec). Any further descriptors are closed. A truncated message or
/// truncated control data is an `InvalidData` error.
pub(crate) fn recv_with_fd(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match rustix::net::recvmsg(
            sock,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => {}
            r => break r?,
        }
    };
    let mut first = None;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for fd in fds {
                // Extra descriptors are dropped (closed) here.
                if first.is_none() {
                    first = Some(fd);
                }
            }
        }
    }
    if msg
        .flags
        .intersects(rustix::net::ReturnFlags::TRUNC | rustix::net::ReturnFlags::CTRUNC)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "truncated handshake message",
        ));
    }
    Ok((msg.bytes, first))
}

/// A new anonymous memory file (`memfd`) of `len` bytes that allows sealing, close-on-exec.
/// It has no name in any file system: it disappears with its last descriptor and mapping.
pub(crate) fn memfd(len: u64) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(
        "courier-shm",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    rustix::fs::ftruncate(&fd, len)?;
    Ok(fd)
}

/// The seals courier puts on every segment: its size is fixed for good, so a peer can never
/// shrink it under our mapping (which would make our accesses fault).
pub(crate) fn seal_size(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::fcntl_add_seals(
        fd,
        SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
    )?)
}

/// Whether `fd` carries all the seals of [`seal_size`] (a file that cannot be sealed has none).
pub(crate) fn has_size_seals(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fcntl_get_seals(fd)
        .is_ok_and(|s| s.contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL))
}

/// The size in bytes of the file behind `fd`.
pub(crate) fn file_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let st = rustix::fs::fstat(fd)?;
    u64::try_from(st.st_size).map_err(|_| io::Error::other("negative file size"))
}

/// What `fd` is, if it is not a regular file on tmpfs (what a memfd without huge pages is),
/// or `None` if it is one. Only the kind and the file system are read, never the size.
pub(crate) fn not_tmpfs_file(fd: BorrowedFd<'_>) -> Option<&'static str> {
    use rustix::fs::FileType;
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    const HUGETLBFS_MAGIC: u64 = 0x9584_58f6;
    match rustix::fs::fstat(fd) {
        Ok(st) => match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Fifo => return Some("a FIFO"),
            FileType::Socket => return Some("a socket"),
            FileType::Directory => return Some("a directory"),
            FileType::CharacterDevice => return Some("a character device"),
            FileType::BlockDevice => return Some("a block device"),
            FileType::Symlink => return Some("a symbolic link"),
            _ => return Some("not a regular file"),
        },
        Err(_) => return Some("fstat failed on it"),
    }
    match rustix::fs::fstatfs(fd) {
        Ok(fs) if fs.f_type as u64 == TMPFS_MAGIC => None,
        Ok(fs) if fs.f_type as u64 == HUGETLBFS_MAGIC => Some("a huge-page memfd (hugetlbfs)"),
        Ok(_) => Some("a regular file outside tmpfs (a file on disk)"),
        Err(_) => Some("fstatfs failed on it"),
    }
}

/// Maps `len` bytes of `fd` shared, readable and writable.
pub(crate) fn map_shared(fd: BorrowedFd<'_>, len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh mapping at an address the kernel picks (null hint) overlaps no existing
    // Rust object; the caller owns the result and unmaps it with `unmap` once.
    let p = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd.as_fd(),
            0,
        )?
    };
    NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// Unmaps a mapping made by [`map_shared`].
///
/// # Safety
///
/// `(ptr, len)` is a live mapping from [`map_shared`], and nothing uses it afterwards.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: the caller guarantees the range is our own mapping and is no longer used.
    let _ = unsafe { rustix::mm::munmap(ptr.as_ptr().cast(), len) };
}

/// A connected pair of Unix stream sockets (close-on-exec), for tests that play both sides.
#[cfg(test)]
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Pins the calling thread to the CPU it runs on, for tests that put threads beside each
/// other: its affinity mask before (to put back), and the one-CPU mask (to pin other
/// threads beside it). `None` if it may not be pinned.
#[cfg(test)]
pub(crate) fn pin_here() -> Option<(rustix::thread::CpuSet, rustix::thread::CpuSet)> {
    use rustix::thread::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
    let mask = sched_getaffinity(None).ok()?;
    let mut one = CpuSet::new();
    one.set(sched_getcpu());
    sched_setaffinity(None, &one).ok()?;
    Some((mask, one))
}

/// A new `eventfd` (close-on-exec), for telling a thread blocked in [`wait_hang_up`] to stop.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    Ok(rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC,
    )?)
}

/// Makes the `eventfd` `fd` readable (adds 1 to its counter).
pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    loop {
        match rustix::io::write(fd, &1u64.to_ne_bytes()) {
            Err(rustix::io::Errno::INTR) => {}
            r => return r.map(drop).map_err(Into::into),
        }
    }
}

/// What ended a [`wait_hang_up`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watched {
    /// The peer hung up (or `poll` failed: the socket can tell nothing more).
    HangUp,
    /// `stop` became readable.
    Stop,
    /// `bell` has something to read.
    Bell,
}

/// Blocks in the kernel (no time-out) until the peer of the connected socket `sock` hangs
/// up ([`Watched::HangUp`]: it closed its end or died; the kernel closes a dead process's
/// descriptors), `stop` becomes readable ([`Watched::Stop`]) or, if given, `bell` has
/// something to read ([`Watched::Bell`]; a `bell` that reports an error or a hang-up is
/// watched no more). Only the hang-up is asked of `sock`, not readability, so bytes a
/// hostile peer writes into it wake nothing. An error of `poll` itself counts as a hang-up:
/// the socket is then unusable for telling anything.
pub(crate) fn wait_hang_up(
    sock: BorrowedFd<'_>,
    stop: BorrowedFd<'_>,
    mut bell: Option<BorrowedFd<'_>>,
) -> Watched {
    let gone = PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL;
    loop {
        let mut fds = [
            PollFd::from_borrowed_fd(sock, PollFlags::RDHUP),
            PollFd::from_borrowed_fd(stop, PollFlags::IN),
            // Not polled without a bell (the slice below leaves it out).
            PollFd::from_borrowed_fd(bell.unwrap_or(stop), PollFlags::IN),
        ];
        let watched = if bell.is_some() { 3 } else { 2 };
        match rustix::event::poll(&mut fds[..watched], None) {
            Ok(_) => {
                if fds[1].revents().intersects(PollFlags::IN | gone) {
                    return Watched::Stop;
                }
                if fds[0].revents().intersects(gone) {
                    return Watched::HangUp;
                }
                if bell.is_some() {
                    let revents = fds[2].revents();
                    if revents.contains(PollFlags::IN) {
                        return Watched::Bell;
                    }
                    if revents.intersects(gone) {
                        // Nothing to read and never will be: poll would report it at once,
                        // every time.
                        bell = None;
                    }
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return Watched::HangUp,
        }
    }
}

/// `FUTEX_WAIT` on a word in a shared mapping (not `FUTEX_PRIVATE`: the waker is another
/// process): sleeps while `*word == expected`, at most `timeout` (`None`: no limit). Returns
/// when woken, when the word differs, on a signal or on timeout; the caller re-checks its
/// condition in every case.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<std::time::Duration>) {
    let ts = timeout.map(timeout_spec);
    // Every outcome (woken, EAGAIN, ETIMEDOUT, EINTR) means "look again".
    let _ = rustix::thread::futex::wait(
        word,
        rustix::thread::futex::Flags::empty(),
        expected,
        ts.as_ref(),
    );
}

pub(crate) use courier_core::placement::TightTimers;

/// `FUTEX_WAKE` of one waiter on a word in a shared mapping (a connection's doorbell: one
/// idle worker is enough, as with `EPOLLEXCLUSIVE` on a wake-up socket).
pub(crate) fn futex_wake_one(word: &AtomicU32) {
    let _ = rustix::thread::futex::wake(word, rustix::thread::futex::Flags::empty(), 1);
}

/// `FUTEX_WAKE` (`FUTEX_PRIVATE`) of every waiter on a word of this process's own memory.
pub(crate) fn futex_wake_private(word: &AtomicU32) {
    let _ =
        rustix::thread::futex::wake(word, rustix::thread::futex::Flags::PRIVATE, i32::MAX as u32);
}

/// How a [`futex_waitv`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// A wake on the word at this index of the list.
    By(usize),
    /// A word did not hold its expected value when the call began.
    Changed,
    /// The timeout passed, or a signal came.
    No,
}

/// Wakes at most one thread asleep on `word`, a word of this process's own memory.
pub(crate) fn futex_wake_one_private(word: &AtomicU32) {
    let _ = rustix::thread::futex::wake(word, rustix::thread::futex::Flags::PRIVATE, 1);
}

/// The most words one `futex_waitv` waits on (the kernel's `FUTEX_WAITV_MAX`).
pub(crate) const WAITV_MAX: usize = 128;

/// Whether this kernel has `futex_waitv` (Linux 5.16 and later): an empty call is refused
/// with `EINVAL` where it exists, `ENOSYS` where not (or where a seccomp filter hides it).
pub(crate) fn has_futex_waitv() -> bool {
    use rustix::thread::futex;
    let r = futex::waitv(
        &[],
        futex::WaitvFlags::empty(),
        None,
        rustix::time::ClockId::Monotonic,
    );
    r == Err(rustix::io::Errno::INVAL)
}

/// One word of a [`futex_waitv`] call: `word` while it holds `expected`; `private` for a
/// word of this process's own memory, else a word of a shared mapping.
pub(crate) fn waitv_entry(
    word: &AtomicU32,
    expected: u32,
    private: bool,
) -> rustix::thread::futex::Wait {
    use rustix::thread::futex::{Wait, WaitFlags, WaitPtr};
    let mut w = Wait::new();
    w.val = u64::from(expected);
    w.uaddr = WaitPtr::new(word.as_ptr().cast());
    w.flags = if private {
        WaitFlags::SIZE_U32 | WaitFlags::PRIVATE
    } else {
        WaitFlags::SIZE_U32
    };
    w
}

/// `futex_waitv`: sleeps until one of `words` is woken, or already differs from its
/// expected value, or `timeout` passes (`None`: no time-out, and no timer for the kernel to
/// set and cancel). `Ok(Woken::By(i))`: woken by a wake on word `i`; `Ok(Woken::Changed)`: a
/// word did not hold its value at the call (look again); `Ok(Woken::No)`: the timeout
/// passed, or a signal came. The words must stay mapped until it returns (the caller holds
/// what maps them).
pub(crate) fn futex_waitv(
    words: &[rustix::thread::futex::Wait],
    timeout: Option<std::time::Duration>,
) -> io::Result<Woken> {
    use rustix::time::{clock_gettime, ClockId, Timespec};
    let Some(timeout) = timeout else {
        return waitv_until(words, None);
    };
    let now = clock_gettime(ClockId::Monotonic);
    let add = Timespec::try_from(timeout).unwrap_or(Timespec {
        tv_sec: i64::MAX / 2,
        tv_nsec: 0,
    });
    let mut until = Timespec {
        tv_sec: now.tv_sec.saturating_add(add.tv_sec),
        tv_nsec: now.tv_nsec + add.tv_nsec,
    };
    if until.tv_nsec >= 1_000_000_000 {
        until.tv_nsec -= 1_000_000_000;
        until.tv_sec = until.tv_sec.saturating_add(1);
    }
    waitv_until(words, Some(&until))
}

/// [`futex_waitv`] until the monotonic clock reads `until` (`None`: no time-out).
fn waitv_until(
    words: &[rustix::thread::futex::Wait],
    until: Option<&rustix::time::Timespec>,
) -> io::Result<Woken> {
    match rustix::thread::futex::waitv(
        words,
        rustix::thread::futex::WaitvFlags::empty(),
        until,
        rustix::time::ClockId::Monotonic,
    ) {
        Ok(i) => Ok(Woken::By(i)),
        Err(rustix::io::Errno::AGAIN) => Ok(Woken::Changed),
        Err(rustix::io::Errno::TIMEDOUT | rustix::io::Errno::INTR) => Ok(Woken::No),
        Err(e) => Err(e.into()),
    }
}

/// `FUTEX_WAKE` of every waiter on a word in a shared mapping.
pub(crate) fn futex_wake(word: &AtomicU32) {
    let _ =
        rustix::thread::futex::wake(word, rustix::thread::futex::Flags::empty(), i32::MAX as u32);
}

/// A connected pair of Unix datagram sockets (close-on-exec): one connection's wake-up path
/// from a client to the server's idle workers (see `rpc/mod.rs`, "Waking").
pub(crate) fn dgram_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Whether `fd` is a datagram socket (what a server must send as a connection's wake-up
/// path: a send to it with `MSG_DONTWAIT` never blocks, whatever the peer does).
pub(crate) fn is_dgram_socket(fd: BorrowedFd<'_>) -> bool {
    rustix::net::sockopt::socket_type(fd).is_ok_and(|t| t == SocketType::DGRAM)
}

/// Sends a one-byte wake-up on a datagram socket without ever blocking: a full socket
/// already holds wake-ups the receiver has not read, so dropping this one loses nothing.
pub(crate) fn kick(fd: BorrowedFd<'_>) {
    loop {
        match rustix::net::send(fd, &[1], SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
            Err(rustix::io::Errno::INTR) => {}
            _ => return,
        }
    }
}

/// Reads and discards up to `max` pending datagrams (or eventfd counts) from `fd` without
/// blocking; `true` if something was pending.
pub(crate) fn drain(fd: BorrowedFd<'_>, max: usize) -> bool {
    let mut buf = [0u8; 8];
    let mut any = false;
    for _ in 0..max {
        match rustix::io::read(fd, &mut buf) {
            Ok(_) => any = true,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => break,
        }
    }
    any
}

/// A new epoll instance (close-on-exec).
pub(crate) fn epoll() -> io::Result<OwnedFd> {
    Ok(rustix::event::epoll::create(
        rustix::event::epoll::CreateFlags::CLOEXEC,
    )?)
}

/// Watches `fd` for readability (level-triggered) in `epoll`, reported with `key`. At most one
/// waiter is woken per event (`EPOLLEXCLUSIVE`), so a wake-up costs one worker, not all.
pub(crate) fn epoll_add(epoll: BorrowedFd<'_>, fd: BorrowedFd<'_>, key: u64) -> io::Result<()> {
    use rustix::event::epoll::{self, EventData, EventFlags};
    Ok(epoll::add(
        epoll,
        fd,
        EventData::new_u64(key),
        EventFlags::IN | EventFlags::EXCLUSIVE,
    )?)
}

/// Waits up to `timeout` for readiness in `epoll`; the keys of the ready sources go into
/// `keys` (cleared first). An interrupted wait returns with no keys.
pub(crate) fn epoll_wait(
    epoll: BorrowedFd<'_>,
    keys: &mut Vec<u64>,
    timeout: std::time::Duration,
) -> io::Result<()> {
    keys.clear();
    let mut events = [MaybeUninit::uninit(); 16];
    let ts = timeout_spec(timeout);
    match rustix::event::epoll::wait(epoll, &mut events, Some(&ts)) {
        Ok((ready, _)) => keys.extend(ready.iter().map(|e| e.data.u64())),
        Err(rustix::io::Errno::INTR) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Makes a non-blocking `fd` (an eventfd, say) non-blocking; used for descriptors this process
/// made itself.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    Ok(rustix::fs::fcntl_setfl(fd, flags | OFlags::NONBLOCK)?)
}

/// Shuts a connected socket down both ways: its peer sees a hang-up at once, however many
/// descriptors of it are still open.
pub(crate) fn shutdown(sock: BorrowedFd<'_>) {
    let _ = rustix::net::shutdown(sock, rustix::net::Shutdown::Both);
}

/// Which file `fd` is: (device, inode), the same for every descriptor of one memfd.
pub(crate) fn file_id(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// Whether `e` says the process or the system ran out of descriptors or memory: a resource
/// error, not a fault of the peer.
pub(crate) fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(rustix::io::Errno::from_raw_os_error),
        Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE | rustix::io::Errno::NOMEM)
    )
}

/// [`send_with_fd`] that never blocks (`MSG_DONTWAIT`): `Ok(false)` if the socket's buffer
/// is full and nothing was sent (wait with [`wait_writable`] and try again).
pub(crate) fn try_send_with_fd(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<bool> {
    send_msg(sock, bytes, fd, SendFlags::DONTWAIT)
}

/// Waits until `fd` is writable (or hung up: the next send reports it), at most until
/// `deadline` (`None`: forever). `Ok(false)` on timeout.
pub(crate) fn wait_writable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> io::Result<bool> {
    wait_ready(fd, PollFlags::OUT, deadline)
}

/// The size in bytes of the first CPU's level-2 cache (data or unified), as Linux reports it
/// in sysfs; `None` where it does not (or reports something unreadable). Read once.
pub(crate) fn l2_cache_bytes() -> Option<usize> {
    static L2: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *L2.get_or_init(|| {
        let dir = Path::new("/sys/devices/system/cpu/cpu0/cache");
        (0..8).find_map(|i| {
            let index = dir.join(format!("index{i}"));
            let read = |f: &str| std::fs::read_to_string(index.join(f)).ok();
            let level = read("level")?;
            let kind = read("type")?;
            if level.trim() != "2" || kind.trim() == "Instruction" {
                return None;
            }
            parse_cache_size(read("size")?.trim())
        })
    })
}

/// A sysfs cache size: a number of bytes with an optional `K`, `M` or `G` suffix.
fn parse_cache_size(s: &str) -> Option<usize> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return None,
    };
    digits.parse::<usize>().ok()?.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::parse_cache_size;

    #[test]
    fn cache_sizes_parse_as_sysfs_writes_them() {
        assert_eq!(parse_cache_size("1024K"), Some(1 << 20));
        assert_eq!(parse_cache_size("2M"), Some(2 << 20));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size("1024KB"), None);
        assert_eq!(parse_cache_size("K"), None);
        assert_eq!(parse_cache_size(""), None);
        assert_eq!(parse_cache_size("99999999999999999999G"), None);
    }
}
