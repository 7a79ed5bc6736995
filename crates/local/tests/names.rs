//! The in-process name registry:
//! - register a client under a name, connect by name, call through it;
//! - connecting with the wrong types is a `TypeMismatch` naming both, not a panic;
//! - `connect_timeout` waits for a name registered later by another thread, and times out
//!   when it never comes;
//! - a live name cannot be taken twice; a name whose server died can be registered again;
//! - dropping the registration removes the name and lets the server see ClientsDisappeared;
//! - invalid names are refused before anything is registered.

use courier_local::names::{self, NameError, Registry};
use courier_local::{channel, Error};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);

fn echo_server(server: courier_local::Server<u32, u32, ()>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while let Ok((n, ctx)) = server.wait() {
            let _ = ctx.reply(n + 1);
        }
    })
}

#[test]
fn register_connect_and_call() {
    let registry = Registry::new();
    let (server, client) = channel::<u32, u32, ()>();
    let t = echo_server(server);
    let reg = registry.register("echo", &client).unwrap();
    assert_eq!(reg.name(), "echo");
    drop(client);
    let c = registry.connect::<u32, u32, ()>("echo").unwrap();
    assert_eq!(c.req(1), Ok(2));
    assert_eq!(registry.names(), vec!["echo".to_string()]);
    drop(c);
    drop(reg);
    t.join().unwrap();
}

#[test]
fn wrong_types_are_a_clear_error() {
    let registry = Registry::new();
    let (_server, client) = channel::<u32, u32, ()>();
    let _reg = registry.register("typed", &client).unwrap();
    let err = registry.connect::<u64, u32, ()>("typed").unwrap_err();
    match &err {
        NameError::TypeMismatch {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "typed");
            assert_eq!(*expected, "(u64, u32, ())");
            assert_eq!(*found, "(u32, u32, ())");
        }
        other => panic!("expected a type mismatch, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("(u32, u32, ())") && text.contains("(u64, u32, ())"),
        "{text}"
    );
    // connect_timeout reports the mismatch at once instead of waiting.
    let start = Instant::now();
    assert!(matches!(
        registry.connect_timeout::<u64, u32, ()>("typed", DEADLINE),
        Err(NameError::TypeMismatch { .. })
    ));
    assert!(start.elapsed() < DEADLINE);
}

#[test]
fn connect_timeout_waits_for_a_name_registered_later() {
    let registry = Registry::new();
    let (server, client) = channel::<u32, u32, ()>();
    let t = echo_server(server);
    let registry = &registry;
    thread::scope(|s| {
        let (waiting_tx, waiting_rx) = mpsc::channel();
        let connector = s.spawn(move || {
            waiting_tx.send(()).unwrap();
            registry.connect_timeout::<u32, u32, ()>("late", DEADLINE)
        });
        waiting_rx.recv_timeout(DEADLINE).unwrap();
        let reg = registry.register("late", &client).unwrap();
        let c = connector.join().unwrap().unwrap();
        assert_eq!(c.req(41), Ok(42));
        drop(reg);
    });
    drop(client);
    t.join().unwrap();
}

#[test]
fn connect_timeout_times_out() {
    let registry = Registry::new();
    assert_eq!(
        registry
            .connect_timeout::<u32, u32, ()>("never", Duration::from_millis(20))
            .unwrap_err(),
        NameError::Timeout("never".into())
    );
    assert_eq!(
        registry.connect::<u32, u32, ()>("never").unwrap_err(),
        NameError::NotFound("never".into())
    );
}

#[test]
fn live_name_is_exclusive_dead_one_is_reclaimed() {
    let registry = Registry::new();
    let (server, client) = channel::<u32, u32, ()>();
    let _reg = registry.register("svc", &client).unwrap();
    let (_server2, client2) = channel::<u32, u32, ()>();
    assert_eq!(
        registry.register("svc", &client2).unwrap_err(),
        NameError::AlreadyRegistered("svc".into())
    );
    // The first server dies: the name reads as absent and can be taken again.
    drop(server);
    assert!(matches!(
        registry.connect::<u32, u32, ()>("svc"),
        Err(NameError::NotFound(_))
    ));
    let _reg2 = registry.register("svc", &client2).unwrap();
    assert!(registry.connect::<u32, u32, ()>("svc").is_ok());
}

#[test]
fn dropping_registration_releases_the_client() {
    let registry = Registry::new();
    let (server, client) = channel::<u32, u32, ()>();
    let reg = registry.register("holder", &client).unwrap();
    drop(client);
    // The registry's client keeps the channel open.
    assert!(server.try_pop().unwrap().is_none());
    drop(reg);
    assert!(matches!(server.try_pop(), Err(Error::ClientsDisappeared)));
    assert!(registry.names().is_empty());
}

#[test]
fn invalid_names_are_refused() {
    let registry = Registry::new();
    let (_server, client) = channel::<u32, u32, ()>();
    let long = "x".repeat(64);
    for bad in [
        "",
        "a/b",
        "..",
        ".",
        "a*",
        "tab\t",
        "nul\0",
        "@x",
        long.as_str(),
    ] {
        assert!(
            matches!(
                registry.register(bad, &client),
                Err(NameError::InvalidName(_))
            ),
            "{bad:?} accepted"
        );
        assert!(matches!(
            registry.connect::<u32, u32, ()>(bad),
            Err(NameError::InvalidName(_))
        ));
    }
    let max = "y".repeat(63);
    assert!(registry.register(&max, &client).is_ok());
    assert!(registry.register("A-z_0.9", &client).is_ok());
}

/// The Xous seed's own example name (spaces, 49 bytes) registers and connects as it is,
/// and `connect_timeout` with `Duration::MAX` waits without a limit (no overflow panic).
#[test]
fn a_xous_name_and_a_timeout_of_duration_max() {
    let registry = std::sync::Arc::new(Registry::new());
    let (server, client) = channel::<u32, u32, ()>();
    let t = echo_server(server);
    let name = "_Any descriptive and unique name under 64 chars_";
    let r = std::sync::Arc::clone(&registry);
    // The connection waits for a registration that comes after it started.
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        started_tx.send(()).unwrap();
        let r = r
            .connect_timeout::<u32, u32, ()>(name, std::time::Duration::MAX)
            .map(|c| c.req(1));
        done_tx.send(r).unwrap();
    });
    started_rx.recv_timeout(DEADLINE).unwrap();
    let reg = registry.register(name, &client).unwrap();
    drop(client);
    assert_eq!(done_rx.recv_timeout(DEADLINE), Ok(Ok(Ok(2))));
    drop(reg);
    t.join().unwrap();
}

#[test]
fn global_registry_free_functions() {
    let (server, client) = channel::<u32, u32, ()>();
    let t = echo_server(server);
    let reg = names::register("names-test-global", &client).unwrap();
    drop(client);
    let c = names::connect_timeout::<u32, u32, ()>("names-test-global", DEADLINE).unwrap();
    assert_eq!(c.req(9), Ok(10));
    assert!(names::connect::<u32, u32, ()>("names-test-global").is_ok());
    drop(c);
    drop(reg);
    t.join().unwrap();
}
