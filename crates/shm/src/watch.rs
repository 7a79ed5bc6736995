//! The watcher of one connection: a thread blocked in `poll` on the connection's socket (and an
//! `eventfd` its owner signals to stop it) that sees the peer's death and runs a wake-up.
//!
//! Liveness comes from the kernel, not from heartbeats: the socket carries nothing the watcher
//! reads, and when the peer closes it or dies (SIGKILL included: the kernel closes a dead
//! process's descriptors) `poll` reports a hang-up. The watcher then sets `dead` and calls its
//! owner's `wake` (which wakes this process's sleepers on their futex words), and repeats the
//! wake-up while `sleepers` is not zero, after a pause growing from 50 µs to 10 ms:
//!
//! ```text
//! waiter (this process)                        watcher (this process)
//! sleepers += 1                 (SeqCst)       dead = true                  (SeqCst)
//! announce the sleep on a word  (SeqCst)       wake(): futex_wake each word
//! fence(SeqCst)                                sleepers == 0 ? exit : pause, wake again
//! nothing to take and !dead? then futex_wait
//! sleepers -= 1; look again
//! ```
//!
//! A waiter that read `dead == false` counted itself first, so the watcher sees it and keeps
//! waking until it has left; a waiter that went to sleep after the watcher's last wake-up is
//! impossible, since it reads `dead` after counting itself. The repetition also defeats a
//! hostile peer that rewrites a futex word between our wake-up and the waiter's sleep.
//!
//! Used by [`ShmChannel`](crate::ShmChannel) (one watcher per channel) and by the RPC client
//! and server (one per connection). **Why a thread per connection** rather than one
//! process-wide thread with `epoll`: a process has few connections; a thread per connection
//! needs no registry and no lock shared between connections, its lifetime is the connection's
//! (the owner's drop signals the `eventfd` and joins it, so nothing leaks), and it costs one
//! sleeping thread with a 64 KiB stack and no CPU (but for a bell, below). A peer that forked a
//! child which inherited its socket stays "alive" until the child exits.
//!
//! The RPC server's watchers also answer a **bell** ([`Watch::start_with_bell`]): the
//! connection's wake-up socket, which the client of a cold connection rings (see "Waking" in
//! the `rpc` module); the watcher reads what came (up to [`BELL_READS`] datagrams at a time)
//! and wakes a worker, and the server counts each ring against its client, which is cut off
//! if it rings more than it calls.

use crate::error::ShmError;
use crate::sync::{AtomicBool, AtomicU32, Ordering};
use crate::sys;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The watcher's first pause between repeated wake-ups of a waiter that has not left its
/// sleep yet; it doubles up to [`REWAKE_MAX`].
const REWAKE_FIRST: Duration = Duration::from_micros(50);
const REWAKE_MAX: Duration = Duration::from_millis(10);
/// The watcher thread's stack: it only polls and wakes.
const WATCHER_STACK: usize = 64 * 1024;
/// The most datagrams the watcher reads from its bell before it rings once.
pub(crate) const BELL_READS: usize = 64;

/// What a connection's users and its watcher thread share.
pub(crate) struct WatchShared {
    /// The peer hung up. Set once by the watcher, before it wakes the waiters.
    pub(crate) dead: AtomicBool,
    /// How many threads of this process are between announcing a sleep and leaving it. The
    /// watcher wakes again while it is not zero.
    pub(crate) sleepers: AtomicU32,
    /// Made readable by the owner's drop: the watcher stops.
    stop: OwnedFd,
}

impl WatchShared {
    /// Whether the peer is known to be gone: one load of a process-local flag.
    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Runs `sleep` counted as a sleeper (see the module docs): `sleep` announces itself on its
    /// futex word, checks its condition and `dead`, and only then sleeps.
    pub(crate) fn counted<T>(&self, sleep: impl FnOnce() -> T) -> T {
        // SeqCst: with the watcher's store of `dead` and load of `sleepers`.
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let r = sleep();
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

/// The watcher of one connection, stopped and joined on drop.
pub(crate) struct Watch {
    pub(crate) shared: Arc<WatchShared>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// Starts watching `sock`; on its hang-up the thread sets `dead` and calls `wake` (again
    /// while sleepers remain). `wake` must only wake (and may be called several times).
    pub(crate) fn start(
        sock: OwnedFd,
        wake: impl Fn() + Send + 'static,
    ) -> Result<Watch, ShmError> {
        Watch::spawn(sock, None::<(OwnedFd, fn() -> bool)>, wake)
    }

    /// As [`Watch::start`], and while the peer lives, reads what arrives on `bell` (a
    /// non-blocking datagram socket; up to [`BELL_READS`] datagrams at a time, so that a
    /// flood costs one `ring` per batch) and calls `ring` after each read; the watcher stops
    /// when `ring` returns `false` (its owner is gone).
    pub(crate) fn start_with_bell(
        sock: OwnedFd,
        bell: OwnedFd,
        ring: impl Fn() -> bool + Send + 'static,
        wake: impl Fn() + Send + 'static,
    ) -> Result<Watch, ShmError> {
        Watch::spawn(sock, Some((bell, ring)), wake)
    }

    fn spawn<R: Fn() -> bool + Send + 'static>(
        sock: OwnedFd,
        bell: Option<(OwnedFd, R)>,
        wake: impl Fn() + Send + 'static,
    ) -> Result<Watch, ShmError> {
        let stop = sys::eventfd().map_err(ShmError::io("creating the watcher's eventfd"))?;
        let shared = Arc::new(WatchShared {
            dead: AtomicBool::new(false),
            sleepers: AtomicU32::new(0),
            stop,
        });
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("courier-shm-watch".into())
            .stack_size(WATCHER_STACK)
            .spawn(move || watch(&theirs, sock, bell, wake))
            .map_err(ShmError::io("starting the watcher thread"))?;
        Ok(Watch {
            shared,
            thread: Some(thread),
        })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            if t.thread().id() == std::thread::current().id() {
                // Dropped by its own thread (the RPC server forgets a dead client in its
                // `wake`): it cannot join itself. Told to stop, in case it was not about to
                // return (a bell's `ring` that dropped the last reference).
                let _ = sys::eventfd_signal(self.shared.stop.as_fd());
                return;
            }
            // If the signal fails (it cannot, short of a bad descriptor), the thread may block
            // forever: leave it detached rather than hang this drop.
            if sys::eventfd_signal(self.shared.stop.as_fd()).is_ok() {
                let _ = t.join();
            }
        }
    }
}

/// The watcher thread's body: blocks until the peer hangs up (or the owner is dropped),
/// answering the bell meanwhile, then sets `dead` and wakes this side's waiters until none is
/// left asleep.
fn watch(
    shared: &WatchShared,
    sock: OwnedFd,
    bell: Option<(OwnedFd, impl Fn() -> bool)>,
    wake: impl Fn(),
) {
    loop {
        let bell_fd = bell.as_ref().map(|(fd, _)| fd.as_fd());
        match sys::wait_hang_up(sock.as_fd(), shared.stop.as_fd(), bell_fd) {
            sys::Watched::Stop => return,
            sys::Watched::HangUp => break,
            sys::Watched::Bell => {
                if let Some((fd, ring)) = &bell {
                    sys::drain(fd.as_fd(), BELL_READS);
                    if !ring() {
                        return;
                    }
                }
            }
        }
    }
    // SeqCst: before the wake-ups below, and against the sleeper's count in `sleepers` before
    // its load of `dead` (see the module docs).
    shared.dead.store(true, Ordering::SeqCst);
    let mut pause = REWAKE_FIRST;
    loop {
        wake();
        if shared.sleepers.load(Ordering::SeqCst) == 0 {
            return;
        }
        // A waiter is still between its announcement and its wake-up: it has seen `dead`
        // and is leaving, or a hostile peer rewrote its word after our wake-up and the waiter
        // went to sleep on it. Wake again, until the owner is dropped if need be.
        let until = Instant::now() + pause;
        if sys::wait_readable(shared.stop.as_fd(), Some(until)).unwrap_or(true) {
            return;
        }
        pause = (pause * 2).min(REWAKE_MAX);
    }
}
