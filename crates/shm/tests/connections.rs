//! Connections and naming across real processes: the test binary runs itself as the peer
//! (`peer_main`, selected by an environment variable).
//!
//! Cases:
//! - name rules: bad names are refused before the runtime directory is even created;
//! - runtime directory: created 0700; refused when too open, owned by another user, or a
//!   symbolic link; a client refuses a directory others can write;
//! - exclusive listener: a second listener is refused while the first (another process) lives;
//!   of several processes binding one name at the same moment exactly one wins;
//! - reclaim: after the listener's process is SIGKILLed, the next `bind` takes the name;
//! - handshake: listener and client in two processes see each other's pid and uid, and both
//!   read and write the shared segment;
//! - permissions: a client running as `nobody` is refused with a permission error (by the
//!   credential check, and by the socket's mode), and admitted when allow-listed (needs root:
//!   skipped with a notice otherwise); an RPC client as `nobody` refuses a root server that
//!   admits it unless it trusts root (`Client::connect_with`), and then calls it;
//! - residue: after SIGKILL of every process, nothing blocks a new `bind`, the runtime
//!   directory is empty once that listener is dropped, and /dev/shm holds nothing of courier's.
//!
//! Every wait has a deadline.
#![cfg(target_os = "linux")]

use courier_shm::{
    Client, ConnectConfig, Connection, Incoming, Listener, ListenerConfig, Server, ServerConfig,
    ShmError,
};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

mod support;
use support::*;

const NOBODY: u32 = 65534;

// ---------------------------------------------------------------------------------------
// The peer process.

fn kind(e: &ShmError) -> &'static str {
    match e {
        ShmError::PermissionDenied { .. } => "permission-denied",
        ShmError::NameInUse(_) => "name-in-use",
        ShmError::Timeout => "timeout",
        ShmError::NotFound(_) => "not-found",
        _ => "other",
    }
}

/// Not a test of its own: the body of the peer processes. Without `COURIER_SHM_TEST_ROLE`
/// it does nothing.
#[test]
fn peer_main() {
    let Some((role, name)) = peer_role() else {
        return;
    };
    // The test process may run as root while a peer runs as another user: peers trust it
    // (a client refuses a listener of another uid unless told; see `client-strict`).
    let cc = ConnectConfig::new().trust_uid(0);
    match role.as_str() {
        // Bind, then serve handshakes and keep every connection, until killed.
        "listen" => {
            let listener = Listener::bind(&name, ListenerConfig::new()).unwrap();
            say(&format!("ready {}", std::process::id()));
            let mut conns = Vec::new();
            loop {
                if let Ok(c) = listener.accept_timeout(DEADLINE) {
                    conns.push(c);
                }
            }
        }
        // Wait for "go", try to bind, report, then hold until stdin closes.
        "bind-race" => {
            assert_eq!(read_stdin_line(), "go");
            let r = Listener::bind(&name, ListenerConfig::new());
            match &r {
                Ok(_) => say("bound"),
                Err(e) => say(kind(e)),
            }
            read_stdin_line();
        }
        // Connect, write into the segment, wait for "go", check the listener's write.
        "client" => {
            let conn = Connection::connect_timeout(&name, &cc, DEADLINE).unwrap();
            say(&format!(
                "connected {} {}",
                conn.peer().pid,
                conn.peer().uid
            ));
            conn.segment().write_at(0, b"ping from client").unwrap();
            say("wrote");
            assert_eq!(read_stdin_line(), "go");
            let mut buf = [0; 18];
            conn.segment().read_at(100, &mut buf).unwrap();
            say(if &buf == b"pong from listener" {
                "ok"
            } else {
                "bad"
            });
        }
        // Connect once and report the outcome.
        "client-once" => match Connection::connect_timeout(&name, &cc, DEADLINE) {
            Ok(c) => say(&format!("connected {}", c.peer().pid)),
            Err(e) => say(kind(&e)),
        },
        // As `client-once`, trusting no listener of another uid.
        "client-strict" => {
            match Connection::connect_timeout(&name, &ConnectConfig::new(), DEADLINE) {
                Ok(c) => say(&format!("connected {}", c.peer().pid)),
                Err(ShmError::UntrustedPeer { peer, .. }) => {
                    say(&format!("untrusted {}", peer.uid))
                }
                Err(e) => say(kind(&e)),
            }
        }
        // An RPC client: first trusting only its own uid, then root too; one call.
        "rpc-client" => {
            let t = DEADLINE;
            match Client::<u64, u64, ()>::connect(&name, t) {
                Err(ShmError::UntrustedPeer { peer, .. }) => {
                    say(&format!("untrusted {}", peer.uid))
                }
                Err(e) => say(kind(&e)),
                Ok(_) => say("connected without trust"),
            }
            let c = Client::<u64, u64, ()>::connect_with(&name, &cc, t).unwrap();
            say(&format!("req {:?}", c.req_timeout(41, t)));
        }
        // Connect, then hold the connection until killed.
        "client-hold" => {
            let _conn = Connection::connect_timeout(&name, &cc, DEADLINE).unwrap();
            say("connected");
            read_stdin_line();
        }
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// The test side.

#[test]
fn bad_names_touch_nothing() {
    let _g = serial();
    let dir = TestDir::new("names");
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "/etc/passwd",
        "a\0b",
        "new\nline",
        "back\\slash",
        "wild*",
        "@admin",
        &"n".repeat(64),
    ] {
        assert!(matches!(
            Listener::bind(bad, ListenerConfig::new()),
            Err(ShmError::InvalidName(n)) if n == bad
        ));
        assert!(matches!(
            Connection::connect(bad, &ConnectConfig::new()),
            Err(ShmError::InvalidName(_))
        ));
    }
    assert!(!dir.rt.exists(), "a bad name created the runtime directory");
    let longest = "n".repeat(63);
    let l = Listener::bind(&longest, ListenerConfig::new()).unwrap();
    assert_eq!(l.name(), longest);
    // Xous-style names, with spaces, `+` and UTF-8, are file names like any other.
    for xous in [
        "_Any descriptive and unique name under 64 chars_",
        "c++ log",
        "é",
    ] {
        let l = Listener::bind(xous, ListenerConfig::new()).unwrap();
        assert_eq!(l.name(), xous);
    }
    let err = Listener::bind("a/b", ListenerConfig::new()).unwrap_err();
    assert!(err.to_string().contains("invalid service name"), "{err}");
}

#[test]
fn runtime_dir_is_private() {
    let _g = serial();
    let dir = TestDir::new("rtdir");
    let name = unique("rtdir");

    // Missing: created 0700, whatever the umask.
    let l = Listener::bind(&name, ListenerConfig::new()).unwrap();
    let meta = std::fs::symlink_metadata(&dir.rt).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o7777, 0o700);
    assert_eq!(meta.uid(), euid());
    assert_eq!(
        dir.entries(),
        [format!("{name}.lock"), format!("{name}.sock")]
    );
    drop(l);
    assert!(
        dir.entries().is_empty(),
        "a dropped listener left {:?}",
        dir.entries()
    );

    // 0711 (search only for others) is accepted.
    std::fs::set_permissions(&dir.rt, std::fs::Permissions::from_mode(0o711)).unwrap();
    drop(Listener::bind(&name, ListenerConfig::new()).unwrap());

    // Too open: refused by a listener, and by a client when others may write.
    for mode in [0o755, 0o770, 0o777] {
        std::fs::set_permissions(&dir.rt, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = Listener::bind(&name, ListenerConfig::new()).unwrap_err();
        assert!(
            matches!(err, ShmError::UnsafeRuntimeDir { mode: m, .. } if m == mode),
            "{mode:o}: {err:?}"
        );
    }
    assert!(matches!(
        Connection::connect(&name, &ConnectConfig::new()),
        Err(ShmError::UnsafeRuntimeDir { .. })
    ));
    std::fs::set_permissions(&dir.rt, std::fs::Permissions::from_mode(0o700)).unwrap();

    // A symbolic link, even to a good directory, is refused.
    let link = dir.base.join("link");
    std::os::unix::fs::symlink(&dir.rt, &link).unwrap();
    std::env::set_var("COURIER_RUNTIME_DIR", &link);
    assert!(matches!(
        Listener::bind(&name, ListenerConfig::new()),
        Err(ShmError::UnsafeRuntimeDir { .. })
    ));

    // Another user's directory is refused (needs root to make one).
    if euid() == 0 {
        let theirs = dir.base.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
        std::env::set_var("COURIER_RUNTIME_DIR", &theirs);
        assert!(matches!(
            Listener::bind(&name, ListenerConfig::new()),
            Err(ShmError::UnsafeRuntimeDir { uid: NOBODY, .. })
        ));
    } else {
        println!("notice: not root, the other-owner directory case is skipped");
    }

    // A relative override is refused.
    std::env::set_var("COURIER_RUNTIME_DIR", "relative/dir");
    assert!(matches!(
        Listener::bind(&name, ListenerConfig::new()),
        Err(ShmError::NoRuntimeDir(_))
    ));
}

#[test]
fn handshake_across_processes_shares_the_segment() {
    let _g = serial();
    let dir = TestDir::new("handshake");
    let name = unique("handshake");
    let listener = Listener::bind(&name, ListenerConfig::new().segment_size(4096)).unwrap();
    let mut client = spawn("client", &dir, &name, None);
    let conn = listener.accept_timeout(DEADLINE).unwrap();

    // Both sides see the other's pid and uid, from the kernel.
    assert_eq!(conn.peer().pid, client.pid());
    assert_eq!(conn.peer().uid, euid());
    assert_eq!(
        client.line(),
        format!("connected {} {}", std::process::id(), euid())
    );
    assert_eq!(conn.segment().len(), 4096);

    // The client wrote; we read it, write back, and the client reads ours.
    assert_eq!(client.line(), "wrote");
    let mut buf = [0; 16];
    conn.segment().read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"ping from client");
    conn.segment().write_at(100, b"pong from listener").unwrap();
    client.tell("go");
    assert_eq!(client.line(), "ok");
    assert!(client.exit_status().success());
}

#[test]
fn a_live_listener_is_never_stolen_and_a_dead_ones_name_is_reclaimed() {
    let _g = serial();
    let dir = TestDir::new("reclaim");
    let name = unique("reclaim");
    let mut first = spawn("listen", &dir, &name, None);
    assert_eq!(first.line(), format!("ready {}", first.pid()));

    // Alive: the name is not ours, and a client reaches the live listener.
    assert!(matches!(
        Listener::bind(&name, ListenerConfig::new()),
        Err(ShmError::NameInUse(n)) if n == name
    ));
    let conn = Connection::connect_timeout(&name, &ConnectConfig::new(), DEADLINE).unwrap();
    assert_eq!(conn.peer().pid, first.pid());
    drop(conn);
    assert!(matches!(
        Listener::bind(&name, ListenerConfig::new()),
        Err(ShmError::NameInUse(_))
    ));

    // Killed: its files are still there, but the name is taken over at once.
    first.kill();
    assert_eq!(
        dir.entries(),
        [format!("{name}.lock"), format!("{name}.sock")]
    );
    assert!(matches!(
        Connection::connect(&name, &ConnectConfig::new()),
        Err(ShmError::NotFound(_))
    ));
    let second = Listener::bind(&name, ListenerConfig::new()).unwrap();
    let mut client = spawn("client-once", &dir, &name, None);
    let conn = second.accept_timeout(DEADLINE).unwrap();
    assert_eq!(conn.peer().pid, client.pid());
    assert_eq!(client.line(), format!("connected {}", std::process::id()));
    assert!(client.exit_status().success());
}

#[test]
fn of_listeners_binding_at_once_exactly_one_wins() {
    let _g = serial();
    let dir = TestDir::new("race");
    std::fs::create_dir(&dir.rt).unwrap();
    std::fs::set_permissions(&dir.rt, std::fs::Permissions::from_mode(0o700)).unwrap();
    for round in 0..3 {
        let name = unique(&format!("race{round}"));
        let mut peers: Vec<Peer> = (0..4)
            .map(|_| spawn("bind-race", &dir, &name, None))
            .collect();
        for p in &mut peers {
            p.tell("go");
        }
        let outcomes: Vec<String> = peers.iter().map(|p| p.line()).collect();
        assert_eq!(
            outcomes.iter().filter(|o| *o == "bound").count(),
            1,
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes.iter().filter(|o| *o == "name-in-use").count(),
            3,
            "{outcomes:?}"
        );
    }
}

#[test]
fn sigkill_of_every_process_leaves_nothing_that_blocks() {
    let _g = serial();
    let dir = TestDir::new("residue");
    let name = unique("residue");
    let mut listener = spawn("listen", &dir, &name, None);
    assert!(listener.line().starts_with("ready"));
    let mut client = spawn("client-hold", &dir, &name, None);
    assert_eq!(client.line(), "connected");

    listener.kill();
    client.kill();

    assert_eq!(courier_files_in_dev_shm(), Vec::<String>::new());
    let l = Listener::bind(&name, ListenerConfig::new()).unwrap();
    drop(l);
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
    assert_eq!(courier_files_in_dev_shm(), Vec::<String>::new());
}

#[test]
fn another_user_is_refused_unless_allowed() {
    let _g = serial();
    if !can_run_as_nobody("permission") {
        return;
    }
    let dir = TestDir::new("nobody");
    let name = unique("nobody");

    // Same-uid only (the default): the socket's mode keeps nobody out.
    let l = Listener::bind(&name, ListenerConfig::new()).unwrap();
    std::fs::set_permissions(&dir.rt, std::fs::Permissions::from_mode(0o711)).unwrap();
    let client = spawn("client-once", &dir, &name, Some(NOBODY));
    assert_eq!(client.line(), "permission-denied");
    drop(l);

    // The socket is open to others (an allow-list), but nobody is not on it: the credential
    // check refuses it, and the listener says who it was.
    let l = Listener::bind(&name, ListenerConfig::new().allow_uid(4242)).unwrap();
    let client = spawn("client-once", &dir, &name, Some(NOBODY));
    match l.accept_timeout(DEADLINE) {
        Err(ShmError::PermissionDenied {
            name: n,
            peer: Some(p),
        }) => {
            assert_eq!(n, name);
            assert_eq!(p.uid, NOBODY);
            assert_eq!(p.pid, client.pid());
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(client.line(), "permission-denied");
    drop(l);

    // Allowed by uid: admitted.
    let l = Listener::bind(&name, ListenerConfig::new().allow_uid(NOBODY)).unwrap();
    let mut client = spawn("client-once", &dir, &name, Some(NOBODY));
    let conn = l.accept_timeout(DEADLINE).unwrap();
    assert_eq!(conn.peer().uid, NOBODY);
    assert_eq!(client.line(), format!("connected {}", std::process::id()));
    assert!(client.exit_status().success());

    // The listener admits nobody, but nobody's client does not trust a listener of another
    // user (root here) unless told: it refuses before it sends or maps anything.
    let mut client = spawn("client-strict", &dir, &name, Some(NOBODY));
    let _ = l.accept_timeout(DEADLINE);
    assert_eq!(client.line(), format!("untrusted {}", euid()));
    assert!(client.exit_status().success());
}

#[test]
fn an_rpc_client_trusts_a_server_of_another_user_only_when_told() {
    let _g = serial();
    if !can_run_as_nobody("trust") {
        return;
    }
    let dir = TestDir::new("rpc-trust");
    let name = unique("rpc-trust");
    let server =
        Server::<u64, u64, ()>::bind(&name, ServerConfig::new().allow_uid(NOBODY)).unwrap();
    // Nobody passes through the runtime directory (the socket's mode lets it in).
    std::fs::set_permissions(&dir.rt, std::fs::Permissions::from_mode(0o711)).unwrap();
    let mut client = spawn("rpc-client", &dir, &name, Some(NOBODY));
    // The strict connect refuses root's server before it sends anything.
    assert_eq!(client.line(), format!("untrusted {}", euid()));
    // Trusting root, it connects and calls.
    match server.wait_timeout(DEADLINE).unwrap() {
        Incoming::Call(n, ctx) => {
            assert_eq!(ctx.client_pid(), client.pid() as u32);
            ctx.reply(n + 1).unwrap();
        }
        _ => panic!("not a call"),
    }
    assert_eq!(client.line(), "req Ok(42)");
    assert!(client.exit_status().success());
}
