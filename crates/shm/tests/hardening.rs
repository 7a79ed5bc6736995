//! Names, files and users under attack, across real processes where two are involved: the
//! findings of the hardening review about the runtime directory, the name lock, the stats
//! files `courier ls` reads, socket paths and unbounded timeouts.
//!
//! Cases:
//! - a runtime directory squatted by another user (the `/tmp/courier-<uid>` fallback made
//!   first by someone else) is refused by clients and by `services()`, even though a
//!   listener of that user serves the name and admits us;
//! - a listener in another pid namespace sees its client's pid as 0, without undefined
//!   behaviour;
//! - `services()` never blocks on a FIFO planted as a stats file, and lists the live server
//!   beside it;
//! - probing whether a name is held (`services()`) never makes a concurrent bind fail;
//! - a server that goes away never removes the stats file of the next server of its name;
//! - a socket path too long for a Unix address is a clear error and leaves no file behind;
//! - `Duration::MAX` as a timeout means no deadline, never an overflow panic.
//!
//! Process tests need root (to run a peer as `nobody`, or in a new pid namespace) and skip
//! with a notice otherwise. Every wait has a deadline.
#![cfg(target_os = "linux")]

use courier_shm::{
    services, ConnectConfig, Connection, Listener, ListenerConfig, Server, ServerConfig,
    ShmChannel, ShmConfig, ShmError, MAX_SOCKET_PATH,
};
use std::os::unix::fs::PermissionsExt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod support;
use support::*;

const NOBODY: u32 = 65534;

// ---------------------------------------------------------------------------------------
// The peer process.

/// Not a test of its own: the body of the peer processes. Without `COURIER_SHM_TEST_ROLE`
/// it does nothing.
#[test]
fn peer_main() {
    let Some((role, name)) = peer_role() else {
        return;
    };
    match role.as_str() {
        // A listener that admits root (the squatter's bait), serving until killed.
        "listen-admit-root" => {
            let l = Listener::bind(&name, ListenerConfig::new().allow_uid(0)).unwrap();
            say("ready");
            let mut conns = Vec::new();
            loop {
                if let Ok(c) = l.accept_timeout(DEADLINE) {
                    conns.push(c);
                }
            }
        }
        // Bind, accept one client, report the pid it sees, then hold until stdin closes.
        "listen-report-pid" => {
            let l = Listener::bind(&name, ListenerConfig::new()).unwrap();
            say(&format!("ready {}", std::process::id()));
            let c = l.accept_timeout(DEADLINE).unwrap();
            say(&format!("peer pid {} uid {}", c.peer().pid, c.peer().uid));
            read_stdin_line();
        }
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// The test side.

/// Runs `f` on a thread and returns its result, or `None` if it is not done by `limit` (the
/// thread is then left behind: the caller fails the test).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    courier_testkit::background(f).recv_timeout(limit).ok()
}

#[test]
fn a_squatted_runtime_directory_is_refused() {
    let _g = serial();
    if !can_run_as_nobody("squatter") {
        return;
    }
    let dir = TestDir::new("squat");
    // Another user made our runtime directory first, with a mode that looks right.
    std::fs::create_dir(&dir.rt).unwrap();
    std::os::unix::fs::chown(&dir.rt, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&dir.rt, std::fs::Permissions::from_mode(0o711)).unwrap();
    let name = unique("squat");
    let squatter = spawn("listen-admit-root", &dir, &name, Some(NOBODY));
    assert_eq!(squatter.line(), "ready");
    // The socket is there and would admit us; the directory's owner is what gives it away.
    assert!(dir.rt.join(format!("{name}.sock")).exists());
    let trusting = ConnectConfig::new().trust_uid(NOBODY);
    match Connection::connect_timeout(&name, &trusting, DEADLINE) {
        Err(ShmError::UnsafeRuntimeDir {
            uid, expected_uid, ..
        }) => {
            assert_eq!((uid, expected_uid), (NOBODY, 0));
        }
        other => panic!("expected the directory to be refused, got {other:?}"),
    }
    match courier_shm::Client::<u64, u64, ()>::connect(&name, DEADLINE) {
        Err(ShmError::UnsafeRuntimeDir { uid, .. }) => assert_eq!(uid, NOBODY),
        Err(e) => panic!("expected the directory to be refused, got {e:?}"),
        Ok(_) => panic!("connected through a squatted directory"),
    }
    // `courier ls` refuses to read it too.
    assert!(matches!(
        services(),
        Err(ShmError::UnsafeRuntimeDir { uid: NOBODY, .. })
    ));
}

#[test]
fn a_listener_in_another_pid_namespace_sees_pid_0() {
    let _g = serial();
    if euid() != 0 {
        println!("notice: not root, cannot make a pid namespace; the pid-0 test is skipped");
        return;
    }
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        println!("notice: `unshare --pid --fork` does not run here; the pid-0 test is skipped");
        return;
    }
    let dir = TestDir::new("pidns");
    let name = unique("pidns");
    let mut listener = spawn_via(
        &["unshare", "--pid", "--fork"],
        "listen-report-pid",
        &dir,
        &name,
        None,
        &[],
    );
    // The first process of a new pid namespace is its pid 1.
    assert_eq!(listener.line(), "ready 1");
    let conn = Connection::connect_timeout(&name, &ConnectConfig::new(), DEADLINE).unwrap();
    // We see the listener by its pid in our namespace; it cannot see ours, and says 0.
    assert!(conn.peer().pid > 1, "{:?}", conn.peer());
    assert_eq!(listener.line(), "peer pid 0 uid 0");
    listener.close_stdin();
    assert!(listener.exit_status().success());
}

#[test]
fn services_never_block_on_a_fifo_and_list_the_live_servers() {
    let _g = serial();
    let dir = TestDir::new("fifo");
    let live = unique("live");
    let trap = unique("trap");
    let _a = Server::<u64, u64, ()>::bind(&live, ServerConfig::new()).unwrap();
    let _b = Server::<u64, u64, ()>::bind(&trap, ServerConfig::new()).unwrap();
    // Someone replaces the second server's stats file with a FIFO nobody writes.
    let stats = dir.rt.join(format!("{trap}.stats"));
    std::fs::remove_file(&stats).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &stats,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let listed = within(DEADLINE, services).expect("services() blocked on a FIFO");
    let names: Vec<String> = listed.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec![live]);
}

#[test]
fn probing_a_name_never_makes_its_bind_fail() {
    let _g = serial();
    let dir = TestDir::new("probe");
    let name = unique("probe");
    std::fs::create_dir(&dir.rt).unwrap();
    std::fs::set_permissions(&dir.rt, std::fs::Permissions::from_mode(0o700)).unwrap();
    // A stats file makes `services()` probe the name's lock on every call.
    std::fs::write(dir.rt.join(format!("{name}.stats")), [0u8; 64]).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut probes = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = services();
                probes += 1;
            }
            probes
        })
    };
    let end = Instant::now() + DEADLINE;
    let mut refused = 0;
    for _ in 0..2000 {
        match Listener::bind(&name, ListenerConfig::new()) {
            Ok(l) => drop(l),
            Err(ShmError::NameInUse(_)) => refused += 1,
            Err(e) => panic!("bind failed: {e}"),
        }
        if Instant::now() > end {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let probes = prober.join().unwrap();
    assert!(probes > 0);
    assert_eq!(
        refused, 0,
        "binds refused while only probed ({probes} probes)"
    );
}

#[test]
fn a_server_going_away_never_removes_the_next_servers_stats() {
    let _g = serial();
    let dir = TestDir::new("stats");
    let name = unique("stats");
    let stats = dir.rt.join(format!("{name}.stats"));
    for round in 0..40 {
        let old = Server::<u64, u64, ()>::bind(&name, ServerConfig::new()).unwrap();
        let (dropped_tx, dropped) = mpsc::channel();
        let t = std::thread::spawn(move || {
            drop(old);
            dropped_tx.send(()).unwrap();
        });
        // Take the name over the moment it is free.
        let end = Instant::now() + DEADLINE;
        let new = loop {
            match Server::<u64, u64, ()>::bind(&name, ServerConfig::new()) {
                Ok(s) => break s,
                Err(ShmError::NameInUse(_)) if Instant::now() < end => std::hint::spin_loop(),
                Err(e) => panic!("round {round}: {e}"),
            }
        };
        dropped.recv_timeout(DEADLINE).unwrap();
        t.join().unwrap();
        assert!(
            stats.exists(),
            "round {round}: the new server's stats file is gone"
        );
        assert_eq!(services().unwrap().len(), 1, "round {round}");
        drop(new);
        assert!(
            !stats.exists(),
            "round {round}: a dropped server left its stats file"
        );
    }
}

#[test]
fn a_socket_path_too_long_is_refused_and_leaves_nothing() {
    let _g = serial();
    let dir = TestDir::new("long");
    // A runtime directory whose path leaves less room than a 63-byte name needs.
    let room = MAX_SOCKET_PATH - ".sock".len() - 1;
    let deep = dir
        .base
        .join("d".repeat(room.saturating_sub(dir.base.as_os_str().len() + 40).max(1)));
    std::env::set_var("COURIER_RUNTIME_DIR", &deep);
    let name = "n".repeat(63);
    assert!(deep.as_os_str().len() + 1 + name.len() + ".sock".len() > MAX_SOCKET_PATH);
    match Listener::bind(&name, ListenerConfig::new()) {
        Err(ShmError::SocketPathTooLong { len, max, .. }) => {
            assert_eq!(max, MAX_SOCKET_PATH);
            assert!(len > max);
        }
        other => panic!("expected SocketPathTooLong, got {other:?}"),
    }
    let left: Vec<_> = std::fs::read_dir(&deep)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(matches!(
        Connection::connect(&name, &ConnectConfig::new()),
        Err(ShmError::SocketPathTooLong { .. })
    ));
    // A short name in the same directory works.
    Listener::bind("short", ListenerConfig::new()).unwrap();
}

#[test]
fn duration_max_means_no_deadline() {
    let _g = serial();
    let _dir = TestDir::new("max");
    let name = unique("max");
    let l = Listener::bind(&name, ListenerConfig::new()).unwrap();
    let n = name.clone();
    let client = std::thread::spawn(move || {
        Connection::connect_timeout(&n, &ConnectConfig::new(), Duration::MAX).map(|c| c.peer())
    });
    let conn = within(DEADLINE, move || {
        l.accept_timeout(Duration::MAX).map(|c| c.peer())
    })
    .expect("accept_timeout(Duration::MAX) did not return");
    assert_eq!(conn.unwrap().pid, std::process::id() as i32);
    assert!(client.join().unwrap().is_ok());

    let chan = unique("max-chan");
    let c = chan.clone();
    let listener = std::thread::spawn(move || ShmChannel::listen(&c, ShmConfig::new(), DEADLINE));
    let connected = within(DEADLINE, move || {
        ShmChannel::connect(&chan, ShmConfig::new(), Duration::MAX).map(|ch| ch.peer())
    })
    .expect("ShmChannel::connect(Duration::MAX) did not return");
    assert!(connected.is_ok(), "{connected:?}");
    assert!(listener.join().unwrap().is_ok());
}
