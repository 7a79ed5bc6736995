//! The demo's child processes: this same binary run with a hidden subcommand, its stdout read
//! line by line by a thread, and killed and reaped when the handle is dropped, so no child
//! outlives the demo (and each child also asks the kernel to kill it if the demo dies).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A child process of the demo.
pub(crate) struct Proc {
    /// What it is, for messages.
    label: String,
    child: Child,
    /// Its stdin, for [`Proc::tell`].
    stdin: Option<ChildStdin>,
    /// Its stdout, a line at a time; disconnected at end of file.
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `courier <args...>` (this executable).
    pub(crate) fn spawn(label: &str, args: &[&str]) -> Result<Proc, String> {
        let exe = std::env::current_exe().map_err(|e| format!("locating this executable: {e}"))?;
        let mut child = Command::new(exe)
            .args(args)
            .arg("--parent")
            .arg(std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting the {label}: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc {
            label: label.to_string(),
            child,
            stdin,
            lines,
        })
    }

    /// The child's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line of output, within `limit`.
    pub(crate) fn line(&self, limit: Duration) -> Result<String, String> {
        self.lines.recv_timeout(limit).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => {
                format!("the {} said nothing for {limit:?}", self.label)
            }
            mpsc::RecvTimeoutError::Disconnected => format!("the {} ended early", self.label),
        })
    }

    /// Reads lines until one starts with `prefix` and returns the rest of it; every line
    /// before it goes to `other`. Gives up after `limit`.
    pub(crate) fn expect(
        &self,
        prefix: &str,
        limit: Duration,
        mut other: impl FnMut(&str),
    ) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .line(left)
                .map_err(|e| format!("waiting for {prefix:?}: {e}"))?;
            match line.strip_prefix(prefix) {
                Some(rest) => return Ok(rest.to_string()),
                None => other(&line),
            }
        }
    }

    /// Every remaining line goes to `each`, then the exit status; killed after `limit`.
    pub(crate) fn finish(
        mut self,
        limit: Duration,
        mut each: impl FnMut(&str),
    ) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => each(&line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "the {} took more than {limit:?}; killed",
                        self.label
                    ))
                }
            }
        }
        // Output ended: the process is exiting; give it what is left of the deadline.
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
                Ok(None) => {
                    return Err(format!(
                        "the {} did not exit in {limit:?}; killed",
                        self.label
                    ))
                }
                Err(e) => return Err(format!("waiting for the {}: {e}", self.label)),
            }
        }
    }

    /// Writes `line` to the child's stdin.
    pub(crate) fn tell(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("no stdin pipe")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("telling the {} {line:?}: {e}", self.label))
    }

    /// SIGKILL now, and reap.
    pub(crate) fn kill(&mut self) -> Result<(), String> {
        self.child
            .kill()
            .map_err(|e| format!("killing the {}: {e}", self.label))?;
        self.child
            .wait()
            .map_err(|e| format!("reaping the {}: {e}", self.label))?;
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
