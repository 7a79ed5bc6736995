//! The real-process harness shared by the courier-shm integration tests: the test binary runs
//! itself as the peer (`peer_main`, chosen by a role in the environment), the peer reports on
//! stdout behind a marker, and every wait has a deadline.
//!
//! The generic parts (a child killed on drop, lines read with a deadline, polling waits,
//! temporary directories, unique names, the effective uid) come from courier-testkit; what
//! stays here is this harness's own: the peer's protocol, the serial lock and watchdog (the
//! tests set `COURIER_RUNTIME_DIR` in their own process), the runtime directory layout, the
//! fixed [`DEADLINE`], running as `nobody`, and reading /proc and /dev/shm.
//!
//! Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use courier_testkit::{Process, TempDir};
use std::io::{BufRead, Write};
use std::ops::{Deref, DerefMut};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub(crate) use courier_testkit::{euid, unique};

/// Which part a peer process plays.
pub(crate) const ROLE: &str = "COURIER_SHM_TEST_ROLE";
/// The service name a peer uses.
pub(crate) const NAME: &str = "COURIER_SHM_TEST_NAME";
/// If set, the peer processes run this executable (the same test, built for another
/// target) instead of the test binary itself.
pub(crate) const PEER_EXE: &str = "COURIER_SHM_TEST_PEER_EXE";
/// The role and service name this process plays when it runs as a peer (`peer_main`), or
/// `None` in the test process itself.
pub(crate) fn peer_role() -> Option<(String, String)> {
    let role = std::env::var(ROLE).ok()?;
    Some((role, std::env::var(NAME).unwrap()))
}

/// Upper bound for every wait on a peer.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// The peer process.

/// Lines a peer prints start with this marker (libtest may print before them on one line).
const MARK: &str = "@@";

/// Prints one line for the test side.
pub(crate) fn say(msg: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MARK}{msg}").unwrap();
    out.flush().unwrap();
}

/// Reads one line the test side sent with [`Process::tell`](courier_testkit::Process::tell).
pub(crate) fn read_stdin_line() -> String {
    let mut s = String::new();
    std::io::stdin().lock().read_line(&mut s).unwrap();
    s.trim().to_owned()
}

// ---------------------------------------------------------------------------------------
// The test side.

/// Tests set `COURIER_RUNTIME_DIR` for their own process, so they run one at a time; and a
/// watchdog bounds each test as a whole (see [`serial_within`]).
pub(crate) fn serial() -> Serial {
    serial_within(TEST_DEADLINE)
}

/// How long one test may take in all, unless it says otherwise.
pub(crate) const TEST_DEADLINE: Duration = Duration::from_secs(120);

/// [`serial`], with a watchdog of `limit` for the test. Most waits have their own deadline;
/// the watchdog also bounds calls that block without one (a plain `req` to a server that
/// never answers): when it fires, it kills every peer process still running and ends this
/// test process with a message naming the test, rather than hang.
pub(crate) fn serial_within(limit: Duration) -> Serial {
    static LOCK: Mutex<()> = Mutex::new(());
    let lock = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let (done, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            eprintln!("watchdog: {test} did not finish within {limit:?}; killing its peers");
            for pid in PEERS.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
            std::process::exit(101);
        }
    });
    Serial {
        _done: done,
        _lock: lock,
    }
}

/// Held by a test while it runs: the serial lock, and its watchdog (stopped on drop).
pub(crate) struct Serial {
    _done: mpsc::Sender<()>,
    _lock: MutexGuard<'static, ()>,
}

/// The peer processes alive now, for the watchdog.
static PEERS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A fresh directory for one test (0755, so `nobody` can pass through it), with the runtime
/// directory `rt` inside it not yet created; removed on drop.
pub(crate) struct TestDir {
    pub(crate) base: TempDir,
    pub(crate) rt: PathBuf,
}

impl TestDir {
    pub(crate) fn new(test: &str) -> TestDir {
        let base = TempDir::new("courier-shm", test, 0o755);
        let rt = base.join("rt");
        std::env::set_var("COURIER_RUNTIME_DIR", &rt);
        TestDir { base, rt }
    }

    /// The runtime directory's entries, sorted.
    pub(crate) fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.rt)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// A peer process; killed (SIGKILL) and reaped on drop. Derefs to the testkit's [`Process`]
/// (its `child`, `line_within`, `tell`, `close_stdin`); its own methods wait [`DEADLINE`]
/// and keep the watchdog's list of peers.
pub(crate) struct Peer(Process);

/// Starts this test binary as a peer playing `role` on service `name`, as `uid` if given.
pub(crate) fn spawn(role: &str, dir: &TestDir, name: &str, uid: Option<u32>) -> Peer {
    spawn_with(role, dir, name, uid, &[])
}

/// [`spawn`] with extra environment variables for the peer (its parameters).
pub(crate) fn spawn_with(
    role: &str,
    dir: &TestDir,
    name: &str,
    uid: Option<u32>,
    env: &[(&str, String)],
) -> Peer {
    spawn_via(&[], role, dir, name, uid, env)
}

/// [`spawn_with`], the peer started through `wrapper` (a command and its arguments, such as
/// `unshare --pid --fork`), which then runs this test binary.
pub(crate) fn spawn_via(
    wrapper: &[&str],
    role: &str,
    dir: &TestDir,
    name: &str,
    uid: Option<u32>,
    env: &[(&str, String)],
) -> Peer {
    // The peer is this test binary, or the same test built for another target (a 32-bit
    // peer for a 64-bit test process: `.ci/peer32.sh`).
    let exe = match std::env::var_os(PEER_EXE) {
        Some(exe) => PathBuf::from(exe),
        None => std::env::current_exe().unwrap(),
    };
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args(["--exact", "peer_main", "--nocapture", "--test-threads=1"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(ROLE, role)
        .env(NAME, name)
        .env("COURIER_RUNTIME_DIR", &dir.rt)
        .stderr(Stdio::inherit());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let peer = Peer(Process::spawn_marked(&mut cmd, MARK));
    PEERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(peer.id());
    peer
}

impl Peer {
    pub(crate) fn pid(&self) -> i32 {
        self.id() as i32
    }

    /// The peer's next line, within the deadline.
    pub(crate) fn line(&self) -> String {
        self.line_within(DEADLINE)
            .expect("the peer said nothing before the deadline")
    }

    pub(crate) fn kill(&mut self) {
        self.0.kill();
        let id = self.id();
        PEERS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&p| p != id);
    }

    /// Waits for the peer to exit by itself, within the deadline.
    pub(crate) fn exit_status(&mut self) -> ExitStatus {
        self.0.exit_status(DEADLINE)
    }
}

impl Deref for Peer {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.0
    }
}

impl DerefMut for Peer {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.0
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether this test can run a peer as `nobody`: it runs as root, and `nobody` can execute
/// this test binary. Otherwise says why `test` is skipped.
pub(crate) fn can_run_as_nobody(test: &str) -> bool {
    if euid() != 0 {
        println!("notice: not root, cannot run a peer as nobody; the {test} test is skipped");
        return false;
    }
    // The peer is this test binary, or the same test built for another target (a 32-bit
    // peer for a 64-bit test process: `.ci/peer32.sh`).
    let exe = match std::env::var_os(PEER_EXE) {
        Some(exe) => PathBuf::from(exe),
        None => std::env::current_exe().unwrap(),
    };
    if !courier_testkit::executable_by_others(&exe) {
        println!("notice: {exe:?} is not reachable by nobody; the {test} test is skipped");
        return false;
    }
    true
}

/// Names in /dev/shm that mention courier (there should never be any).
pub(crate) fn courier_files_in_dev_shm() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("courier"))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Watching a process from /proc.

/// The CPU time (user + system, in clock ticks) of every thread of process `pid`.
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue; // the thread exited meanwhile
        };
        // After the command name in parentheses: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        total += f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    }
    total
}

/// The context switches of every thread of process `pid`: each wake-up from a sleep is one.
pub(crate) fn context_switches(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(status) = std::fs::read_to_string(task.unwrap().path().join("status")) else {
            continue;
        };
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    total
}

/// Whether every thread of `pid` is asleep (state `S`), as a process blocked in `recv` is.
pub(crate) fn all_asleep(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        .all(|stat| stat[stat.rfind(')').unwrap() + 2..].starts_with('S'))
}

/// Polls `cond` (every millisecond) until it holds; panics, naming `what`, after the deadline.
pub(crate) fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    courier_testkit::wait_until(what, DEADLINE, cond);
}

/// Waits until every thread of `pid` is asleep (a process blocked in a wait, past any spin).
pub(crate) fn wait_until_asleep(pid: u32) {
    wait_for(&format!("process {pid} asleep"), || all_asleep(pid));
}
