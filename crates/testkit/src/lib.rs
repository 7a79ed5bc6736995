//! Test support shared by the integration tests of the courier workspace (courier-shm,
//! courier-bench, courier-cli): running child processes under a deadline, and the small
//! things such tests need around them.
//!
//! Two rules hold for everything here:
//!
//! - **Every wait has a deadline.** A wait blocks on a channel with a timeout, or polls a
//!   condition until a deadline; when the deadline passes it fails the test (a panic naming
//!   what was awaited). Nothing sleeps and hopes.
//! - **No child outlives its handle.** A child process is held by a [`ChildGuard`], which
//!   kills (SIGKILL) and reaps it on drop, so a test that panics leaves nothing running.
//!
//! What is here:
//!
//! - [`run`]: runs a command to its end within a deadline and gives its [`Output`].
//! - [`Process`]: a child that runs beside the test and talks in lines: it reads lines the
//!   test [`tell`](Process::tell)s it on stdin, and the test reads what it prints on stdout
//!   (every line, or only the lines behind a marker) with a deadline, such as a readiness
//!   line.
//! - [`ChildGuard`]: the kill-on-drop handle of a child.
//! - [`wait_until`]: polls a condition (a file appearing, a process asleep, ...) until a
//!   deadline.
//! - [`TempDir`] and [`unique`]: a directory and names unique to this test process.
//! - [`euid`] and [`executable_by_others`]: whether a test can run a child as another user.
//! - [`sleeps_of_this_thread`]: how often the calling thread went to sleep (Linux), for tests
//!   of waits that must not sleep.
//! - [`WakeCount`]: a waker that counts its wake-ups, for futures polled by hand.
//!
//! This crate is `publish = false` and only ever a dev-dependency. It is Unix-only.
//!
//! ```
//! use courier_testkit::{run, Process};
//! use std::process::Command;
//! use std::time::Duration;
//!
//! let out = run(Command::new("echo").arg("hi"), Duration::from_secs(20));
//! assert!(out.status.success());
//! assert_eq!(out.stdout, "hi\n");
//!
//! let mut cat = Process::spawn(&mut Command::new("cat"));
//! cat.tell("ready");
//! assert_eq!(cat.line(Duration::from_secs(20)), "ready");
//! // Dropping `cat` kills and reaps it.
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::ops::Deref;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// How long a polling wait sleeps between two looks at its condition.
const POLL: Duration = Duration::from_millis(1);

/// How long [`run`] still reads a killed child's output, for the panic message.
const GRACE: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------
// Waiting.

/// Polls `cond` (every millisecond) until it holds; panics, naming `what`, if it does not
/// within `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "{what}: not before the deadline");
        std::thread::sleep(POLL);
    }
}

/// Runs `f` on a thread of its own; its result comes on the returned channel (which a test
/// reads with a deadline).
pub fn background<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Receiver<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

/// Runs `f` on a thread of its own and returns its result; panics, naming `what`, if it is
/// not done within `limit` (a blocking call that should have returned).
pub fn within<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    background(f)
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what}: not done before the deadline"))
}

// ---------------------------------------------------------------------------------------
// A child process.

/// A child process, killed (SIGKILL) and reaped when dropped.
///
/// The field is the [`Child`] itself, for what this type does not wrap.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Starts `cmd` (configured as the caller likes); panics, naming the command, if it
    /// cannot be started.
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        match cmd.spawn() {
            Ok(child) => ChildGuard(child),
            Err(e) => panic!("starting {cmd:?}: {e}"),
        }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Waits for the child to exit by itself; its exit status, or `None` if it is still
    /// running after `limit` (it is then left running).
    pub fn wait_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().expect("waiting for a child") {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Kills the child (SIGKILL) and reaps it; does nothing more if it is gone already.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------
// Running a command to its end.

/// What a command run by [`run`] gave.
#[derive(Debug)]
pub struct Output {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it printed on stdout (invalid UTF-8 replaced).
    pub stdout: String,
    /// Everything it printed on stderr (invalid UTF-8 replaced).
    pub stderr: String,
}

/// Runs `cmd` with its stdout and stderr piped and read to their end, and waits for it to
/// exit. If it has not exited and closed both within `limit`, it is killed and the test
/// fails, with whatever it printed until then.
pub fn run(cmd: &mut Command, limit: Duration) -> Output {
    let end = Instant::now() + limit;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(cmd);
    let stdout = read_to_end(child.0.stdout.take().expect("piped stdout"));
    let stderr = read_to_end(child.0.stderr.take().expect("piped stderr"));
    let status = child.wait_within(limit);
    let left = || end.saturating_duration_since(Instant::now());
    let out = stdout.recv_timeout(left());
    let err = stderr.recv_timeout(left());
    match (status, out, err) {
        (Some(status), Ok(stdout), Ok(stderr)) => Output {
            status,
            stdout,
            stderr,
        },
        (status, out, err) => {
            child.kill();
            // Killed, the child closes its ends of the pipes (a grandchild may hold them on).
            let out = out
                .or_else(|_| stdout.recv_timeout(GRACE))
                .unwrap_or_default();
            let err = err
                .or_else(|_| stderr.recv_timeout(GRACE))
                .unwrap_or_default();
            let why = match status {
                None => "still running",
                Some(_) => "exited, but its output stayed open",
            };
            panic!(
                "{cmd:?} took more than {limit:?} ({why}); killed\n\
                 --- its stdout:\n{out}\n--- its stderr:\n{err}"
            );
        }
    }
}

/// Reads `r` to its end on a thread; the text arrives on the channel.
fn read_to_end(mut r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = r.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

// ---------------------------------------------------------------------------------------
// A child that talks in lines.

/// A child process running beside the test, talked to in lines: the test writes lines to
/// its stdin ([`tell`](Process::tell)) and reads the lines it prints on stdout
/// ([`line`](Process::line)), each read with a deadline. Killed and reaped when dropped.
pub struct Process {
    /// The child (kill-on-drop).
    pub child: ChildGuard,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Process {
    /// Starts `cmd` with its stdin and stdout piped (stderr as `cmd` says; inherited unless
    /// set); every line it prints on stdout is read for [`line`](Process::line).
    pub fn spawn(cmd: &mut Command) -> Process {
        Process::start(cmd, None)
    }

    /// [`spawn`](Process::spawn), but only the lines of stdout holding `marker` are read,
    /// each as the text after the marker; the rest is skipped. This picks a child's messages
    /// out of other output on the same stream (a test binary run as the child prints
    /// libtest's lines, and may print them just before a message on the same line).
    pub fn spawn_marked(cmd: &mut Command, marker: &str) -> Process {
        Process::start(cmd, Some(marker.to_owned()))
    }

    fn start(cmd: &mut Command, marker: Option<String>) -> Process {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = ChildGuard::spawn(cmd);
        let stdout = child.0.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut listened = true;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let text = match &marker {
                    None => &line[..],
                    Some(m) => match line.find(m.as_str()) {
                        Some(i) => &line[i + m.len()..],
                        None => continue,
                    },
                };
                // Read on to the end even when nobody listens, so that the child never
                // writes into a closed pipe.
                listened = listened && tx.send(text.to_owned()).is_ok();
            }
        });
        Process {
            stdin: child.0.stdin.take(),
            child,
            lines,
        }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child's next line; panics if it says nothing within `limit`.
    pub fn line(&self, limit: Duration) -> String {
        self.line_within(limit).unwrap_or_else(|| {
            panic!(
                "process {} said nothing within {limit:?} (or closed its stdout)",
                self.id()
            )
        })
    }

    /// The child's next line, if it comes within `limit` (`None` also once the child has
    /// closed its stdout and every line was read).
    pub fn line_within(&self, limit: Duration) -> Option<String> {
        self.lines.recv_timeout(limit).ok()
    }

    /// Writes one line to the child's stdin.
    pub fn tell(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("the child's stdin is closed");
        writeln!(stdin, "{line}").expect("writing to the child's stdin");
        stdin.flush().expect("writing to the child's stdin");
    }

    /// Closes the child's stdin (its next read sees end of file).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Kills the child (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Waits for the child to exit by itself; panics if it has not within `limit`.
    pub fn exit_status(&mut self, limit: Duration) -> ExitStatus {
        self.child
            .wait_within(limit)
            .unwrap_or_else(|| panic!("process {} did not exit within {limit:?}", self.id()))
    }

    /// The child alone, its stdin closed and its lines no longer kept (its stdout is still
    /// read, to the end).
    pub fn into_child(self) -> ChildGuard {
        self.child
    }
}

// ---------------------------------------------------------------------------------------
// Directories and names.

/// A fresh directory for one test, removed with its contents when dropped. Derefs to its
/// path.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `<temp dir>/<prefix>-<pid>-<tag>` (the pid of this test process), with permission
    /// bits `mode`; what an earlier process with the same pid left there is removed first.
    pub fn new(prefix: &str, tag: &str, mode: u32) -> TempDir {
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {path:?}: {e}"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {mode:o} {path:?}: {e}"));
        TempDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The runtime directory of this whole test process, `<temp dir>/<prefix>-<pid>-rt` (mode
/// 0o700), set in `COURIER_RUNTIME_DIR` at every call: the variable is process-wide and tests
/// run on parallel threads, so they share one directory, kept until the process ends (in a
/// `static`, never dropped). Made at the first call, after [`sweep_gone`] removed those of
/// processes that are gone. One prefix per test process.
pub fn runtime_dir(prefix: &str) -> &'static Path {
    static DIR: std::sync::OnceLock<(String, TempDir)> = std::sync::OnceLock::new();
    let (first, dir) = DIR.get_or_init(|| {
        sweep_gone(prefix);
        (prefix.to_owned(), TempDir::new(prefix, "rt", 0o700))
    });
    assert_eq!(
        first, prefix,
        "one runtime directory prefix per test process"
    );
    std::env::set_var("COURIER_RUNTIME_DIR", dir.path());
    dir.path()
}

/// Removes the directories `<temp dir>/<prefix>-<pid>` and `<temp dir>/<prefix>-<pid>-...`
/// whose process is gone. A directory that a test process keeps for its whole run (in a
/// `static`, shared by its tests because the runtime directory is an environment variable)
/// is never dropped; sweeping at the start of each run keeps only the live processes' ones.
pub fn sweep_gone(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('-') else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        let is_pid = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
        if is_pid && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A name unique to this test process and `tag` (`t<pid>-<tag>`), for a service or a file
/// that processes of other test runs must not share.
pub fn unique(tag: &str) -> String {
    format!("t{}-{tag}", std::process::id())
}

// ---------------------------------------------------------------------------------------
// Users.

/// This process's effective user id.
pub fn euid() -> u32 {
    std::fs::metadata("/proc/self")
        .expect("reading /proc/self")
        .uid()
}

/// Whether users other than the owner (such as `nobody`) can execute `path`: the file
/// readable and executable by others, and every directory above it searchable by others.
pub fn executable_by_others(path: &Path) -> bool {
    let file_ok = std::fs::metadata(path).is_ok_and(|m| m.mode() & 0o005 == 0o005);
    file_ok
        && path
            .ancestors()
            .skip(1)
            .all(|a| std::fs::metadata(a).is_ok_and(|m| m.mode() & 0o001 != 0))
}

// ---------------------------------------------------------------------------------------
// Threads.

/// The calling thread's voluntary context switches so far, from `/proc/thread-self/status`
/// (Linux): one each time the thread went to sleep (a futex wait, a blocking read), none for a
/// preemption or a `sched_yield`. A test of a wait that must spin reads it before and after.
#[cfg(target_os = "linux")]
pub fn sleeps_of_this_thread() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status")
        .expect("reading /proc/thread-self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("no voluntary_ctxt_switches line in /proc/thread-self/status")
}

// ---------------------------------------------------------------------------------------
// Futures.

/// A waker that counts how often it was woken, for tests that poll a future by hand and
/// check that a `Pending` came with a wake-up (or without one).
#[derive(Debug, Default)]
pub struct WakeCount(std::sync::atomic::AtomicUsize);

impl WakeCount {
    /// A counter at zero and its waker.
    pub fn new() -> (std::sync::Arc<WakeCount>, std::task::Waker) {
        let count = std::sync::Arc::new(WakeCount::default());
        let waker = std::task::Waker::from(std::sync::Arc::clone(&count));
        (count, waker)
    }

    /// How many times the waker (or a clone of it) was woken so far.
    pub fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl std::task::Wake for WakeCount {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(20);

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    /// Whether process `pid` exists (a zombie counts).
    fn exists(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn run_gives_status_and_both_streams() {
        let out = run(&mut sh("echo out; echo err >&2; exit 3"), LIMIT);
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    #[should_panic(expected = "still running")]
    fn run_kills_a_command_past_its_deadline() {
        run(&mut sh("exec sleep 30"), Duration::from_millis(100));
    }

    #[test]
    fn a_marked_process_gives_only_its_marked_lines() {
        let mut p = Process::spawn_marked(
            &mut sh("echo noise; echo 'noise@@one'; read x; echo \"@@$x\""),
            "@@",
        );
        assert_eq!(p.line(LIMIT), "one");
        p.tell("two");
        assert_eq!(p.line(LIMIT), "two");
        assert!(p.exit_status(LIMIT).success());
        assert_eq!(p.line_within(LIMIT), None);
    }

    #[test]
    fn closing_stdin_ends_a_reader() {
        let mut p = Process::spawn(&mut Command::new("cat"));
        p.close_stdin();
        assert!(p.exit_status(LIMIT).success());
    }

    #[test]
    fn a_dropped_child_is_killed_and_reaped() {
        let p = Process::spawn(&mut sh("echo ready; exec sleep 30"));
        assert_eq!(p.line(LIMIT), "ready");
        let child = p.into_child();
        let pid = child.id();
        assert!(exists(pid));
        drop(child);
        assert!(!exists(pid));
    }

    #[test]
    fn wait_until_sees_a_condition_come_true() {
        let dir = TempDir::new("courier-testkit", "wait", 0o700);
        let file = dir.join("ready");
        let _writer = ChildGuard::spawn(&mut sh(&format!("touch '{}'", file.display())));
        wait_until("the file", LIMIT, || file.exists());
    }

    #[test]
    #[should_panic(expected = "never: not before the deadline")]
    fn wait_until_fails_at_its_deadline() {
        wait_until("never", Duration::from_millis(20), || false);
    }

    #[test]
    fn a_temp_dir_is_fresh_and_removed() {
        let dir = TempDir::new("courier-testkit", "dir", 0o750);
        let path = dir.path().to_owned();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o750);
        assert!(path.ends_with(format!("courier-testkit-{}-dir", std::process::id())));
        std::fs::write(dir.join("f"), b"x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn the_runtime_directory_is_made_once_private_and_set_in_the_environment() {
        let prefix = "courier-testkit-rt";
        let dir = runtime_dir(prefix);
        assert_eq!(
            dir.file_name().unwrap().to_str().unwrap(),
            format!("{prefix}-{}-rt", std::process::id())
        );
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(
            std::env::var_os("COURIER_RUNTIME_DIR").as_deref(),
            Some(dir.as_os_str())
        );
        assert_eq!(runtime_dir(prefix), dir, "the same directory at every call");
    }

    #[test]
    fn sweeping_removes_the_directories_of_gone_processes_only() {
        // No process has the id pid_max (ids are below it).
        let max = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap();
        let gone = max.trim().parse::<u64>().unwrap();
        let prefix = format!("courier-testkit-sweep{}", std::process::id());
        let tmp = std::env::temp_dir();
        let dirs = [
            (format!("{prefix}-{gone}"), false),
            (format!("{prefix}-{gone}-3"), false),
            (format!("{prefix}-{}", std::process::id()), true),
            (format!("{prefix}-{}-0", std::process::id()), true),
            (format!("{prefix}-x{gone}"), true),
            (format!("{prefix}{gone}"), true),
        ];
        for (d, _) in &dirs {
            std::fs::create_dir_all(tmp.join(d).join("sub")).unwrap();
        }
        sweep_gone(&prefix);
        for (d, kept) in &dirs {
            assert_eq!(tmp.join(d).exists(), *kept, "{d}");
            let _ = std::fs::remove_dir_all(tmp.join(d));
        }
    }

    #[test]
    fn names_and_users() {
        assert_eq!(unique("x"), format!("t{}-x", std::process::id()));
        assert_eq!(
            euid(),
            std::fs::metadata("/proc/self/status").unwrap().uid()
        );
        assert!(executable_by_others(Path::new("/bin/sh")));
    }
}
