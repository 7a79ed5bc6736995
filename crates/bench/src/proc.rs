//! What the two-process benchmarks (`shm`, `rpc`) share: the peer process (this binary,
//! re-executed with hidden options), its bounded start and exit, the peer's own safety nets
//! (death with its parent, a watchdog), a bounded `accept`, and the private runtime directory
//! that courier's names live in during a run.

use crate::stats;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a peer may take to appear, and a blocking receive to return.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a peer may take to exit after the stop message.
pub(crate) const EXIT_WAIT: Duration = Duration::from_secs(3);
/// A peer process ends itself after this long, whatever happens.
pub(crate) const PEER_LIMIT: Duration = Duration::from_secs(120);

/// A peer process: killed and reaped when dropped, unless it already exited.
pub(crate) struct Peer {
    child: Option<Child>,
}

impl Peer {
    /// Starts this binary again with `args` (e.g. `["rpc", "--peer", "uds", ...]`); with
    /// `piped`, its stdin and stdout are pipes to this process, else /dev/null.
    pub(crate) fn spawn(args: &[&str], piped: bool) -> Result<Peer, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.args(args).stderr(Stdio::inherit());
        if piped {
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        } else {
            cmd.stdin(Stdio::null()).stdout(Stdio::null());
        }
        let child = cmd.spawn().map_err(|e| format!("spawning the peer: {e}"))?;
        // Its CPU time counts with ours in the row it serves.
        crate::stats::watch_peer(Some(child.id()));
        Ok(Peer { child: Some(child) })
    }

    /// The child process, until [`Peer::finish`].
    pub(crate) fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Waits up to [`EXIT_WAIT`] for a clean exit, then kills; true if it exited cleanly.
    pub(crate) fn finish(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        crate::stats::watch_peer(None);
        let deadline = Instant::now() + EXIT_WAIT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::stats::watch_peer(None);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Called first in a peer process: it dies with its parent (`PR_SET_PDEATHSIG`), and ends
/// itself after [`PEER_LIMIT`] whatever happens.
pub(crate) fn become_peer() {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    stats::start_watchdog(PEER_LIMIT, "peer");
}

/// Creates a private (0700) directory for this run's sockets and courier's names, and points
/// `COURIER_RUNTIME_DIR` at it, which the peers inherit. Call before any thread starts; the
/// caller removes the directory at the end.
pub(crate) fn runtime_dir(bench: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!("courier-bench-{bench}-{}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    std::env::set_var("COURIER_RUNTIME_DIR", &dir);
    Ok(dir)
}

/// Accepts one connection, waiting up to [`OP_TIMEOUT`].
pub(crate) fn accept(listener: &UnixListener) -> Result<UnixStream, String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("set_nonblocking: {e}"))?;
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)
                    .map_err(|e| format!("set_nonblocking: {e}"))?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
}

/// Sets both timeouts of a socket to [`OP_TIMEOUT`], so that no read or write waits forever.
pub(crate) fn bound_socket(s: &UnixStream) -> Result<(), String> {
    s.set_read_timeout(Some(OP_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(OP_TIMEOUT)))
        .map_err(|e| format!("socket timeouts: {e}"))
}
