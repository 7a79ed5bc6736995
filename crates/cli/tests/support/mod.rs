//! Runs the built `courier` binary with a deadline, for the end-to-end tests.
#![allow(dead_code, unreachable_pub)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// What a run of `courier` gave.
pub struct Output {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

/// `courier <args>`, with `env` added to its environment, killed (and the test failed) if it
/// takes longer than `deadline`.
pub fn courier(args: &[&str], env: &[(&str, &Path)], deadline: Duration) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_courier"));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawning courier");
    let stdout = read_all(child.stdout.take().expect("piped stdout"));
    let stderr = read_all(child.stderr.take().expect("piped stderr"));
    match stdout.recv_timeout(deadline) {
        Ok(out) => {
            let status = child.wait().expect("waiting for courier");
            let err = stderr.recv_timeout(deadline).unwrap_or_default();
            Output {
                status,
                stdout: out,
                stderr: err,
            }
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("courier {args:?} took more than {deadline:?}; killed");
        }
    }
}

/// Reads `r` to the end on a thread; the text arrives on the channel.
fn read_all(mut r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = r.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    rx
}

/// A private courier runtime directory (mode 0700), removed when dropped.
pub struct RuntimeDir(pub PathBuf);

impl RuntimeDir {
    /// A fresh one, named after `tag` and this process.
    pub fn new(tag: &str) -> RuntimeDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("courier-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("creating a runtime dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod 0700");
        RuntimeDir(dir)
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
