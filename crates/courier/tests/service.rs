//! `#[courier::service]` end to end: the issue's `Kv` trait (a call with an application error,
//! a one-way message, a lend, a mutable lend), served over `courier::local` and over
//! `courier::shm` by the same implementation and checked by one conformance function per
//! behaviour, each run on both transports. Also: timeouts reach every call, async forms,
//! several workers, the interface check at connect.
//!
//! Cross-thread waits synchronise through channels with deadlines; nothing sleeps and hopes.

use courier::service::{PairConfig, Reply, Sink};
use courier::{flat, Error, Ipc};
use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

#[cfg(target_os = "linux")]
use courier_testkit::sleeps_of_this_thread;

/// Upper bound for every wait.
const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Ipc, Debug, Clone, Copy, PartialEq, Eq)]
/// Why `get` failed.
#[repr(u8)]
pub enum KvError {
    /// No value under the key.
    NotFound,
    /// The store is full.
    Full,
}

/// The key-value store, and a gated call.
#[courier::service]
pub trait Kv {
    /// A call: `Err` reaches the caller as `courier::Error::App(KvError)`.
    fn get(&self, key: u64) -> Result<u64, KvError>;
    /// No return type: one-way (`send`); the caller does not wait.
    fn put(&self, key: u64, value: u64);
    /// A lend: the server reads the caller's bytes.
    fn sum(&self, #[lend] data: &[u8]) -> u64;
    /// A mutable lend: the server writes the caller's bytes.
    fn fill(&self, byte: u8, #[lend_mut] data: &mut [u8]) -> usize;
    /// Waits until the test opens the gate, then answers: for timeouts.
    fn gated(&self) -> flat::String<8>;
    /// Answered later, from another thread.
    #[deferred]
    fn later(&self, key: u64, reply: Reply<u64, KvError>);
    /// Never answered: the handle is dropped.
    #[deferred]
    fn dropped(&self, reply: Reply<()>);
    /// A Xous scalar: integers in, a pair of words back, no slot payload.
    #[scalar]
    fn divmod(&self, a: u32, b: u32, negate: bool) -> (i64, u32);
    /// A one-way scalar: adds `n` to key 0.
    #[scalar]
    fn bump(&self, n: u16);
    /// Pushes `count` events from `from` on, from another thread, then ends the stream.
    #[subscribe]
    fn watch(&self, from: u64, count: u8, sink: Sink<u64>);
}

/// The service: a map, and a gate the test controls.
struct Store {
    map: Mutex<HashMap<u64, u64>>,
    gate: Mutex<mpsc::Receiver<()>>,
    entered: mpsc::SyncSender<()>,
}

impl Kv for Store {
    fn get(&self, key: u64) -> Result<u64, KvError> {
        let map = self.map.lock().unwrap();
        if map.len() > 1000 {
            return Err(KvError::Full);
        }
        map.get(&key).copied().ok_or(KvError::NotFound)
    }
    fn put(&self, key: u64, value: u64) {
        self.map.lock().unwrap().insert(key, value);
    }
    fn sum(&self, data: &[u8]) -> u64 {
        data.iter().map(|&b| u64::from(b)).sum()
    }
    fn fill(&self, byte: u8, data: &mut [u8]) -> usize {
        data.fill(byte);
        data.len()
    }
    fn gated(&self) -> flat::String<8> {
        let _ = self.entered.send(());
        self.gate
            .lock()
            .unwrap()
            .recv_timeout(DEADLINE)
            .expect("the test never opened the gate");
        "open".try_into().unwrap()
    }
    fn later(&self, key: u64, reply: Reply<u64, KvError>) {
        let found = self.map.lock().unwrap().get(&key).copied();
        std::thread::spawn(move || {
            let _ = match found {
                Some(v) => reply.reply(v),
                None => reply.fail(KvError::NotFound),
            };
        });
    }
    fn dropped(&self, reply: Reply<()>) {
        drop(reply);
    }
    fn divmod(&self, a: u32, b: u32, negate: bool) -> (i64, u32) {
        let q = i64::from(a / b.max(1));
        (if negate { -q } else { q }, a % b.max(1))
    }
    fn bump(&self, n: u16) {
        *self.map.lock().unwrap().entry(0).or_default() += u64::from(n);
    }
    fn watch(&self, from: u64, count: u8, sink: Sink<u64>) {
        std::thread::spawn(move || {
            for i in 0..u64::from(count) {
                sink.push(from + i).expect("the subscriber listens");
            }
        });
    }
}

/// A running service: its client, the gate's controls, the serving thread.
struct Running {
    client: KvClient,
    open: mpsc::Sender<()>,
    entered: mpsc::Receiver<()>,
    /// For a local server: says when its `serve` returned.
    served: Option<mpsc::Receiver<()>>,
    /// What must live as long as the client (the network bridge and its sessions).
    _keep: Vec<Box<dyn std::any::Any>>,
}

fn store() -> (Store, mpsc::Sender<()>, mpsc::Receiver<()>) {
    let (open, gate) = mpsc::channel();
    let (entered_tx, entered) = mpsc::sync_channel(16);
    (
        Store {
            map: Mutex::new(HashMap::new()),
            gate: Mutex::new(gate),
            entered: entered_tx,
        },
        open,
        entered,
    )
}

fn local() -> Running {
    local_with(None)
}

/// A local pair made by `pair_with(config)` (`None`: by `pair()`).
fn local_with(config: Option<PairConfig>) -> Running {
    let (client, server) = match config {
        Some(config) => KvClient::pair_with(config),
        None => KvClient::pair(),
    };
    let (s, open, entered) = store();
    let (done, served) = mpsc::channel();
    std::thread::spawn(move || {
        server.serve(s).unwrap();
        let _ = done.send(());
    });
    Running {
        client,
        open,
        entered,
        served: Some(served),
        _keep: Vec::new(),
    }
}

#[cfg(target_os = "linux")]
fn runtime_dir() {
    courier_testkit::runtime_dir("courier-service");
}

#[cfg(target_os = "linux")]
fn shm(tag: &str) -> Running {
    runtime_dir();
    let name = format!("kv-{}-{tag}", std::process::id());
    let server = KvServer::bind(&name).unwrap();
    let (s, open, entered) = store();
    // Serves until the test process ends (a shm server waits for new clients forever).
    // Serves until the test process ends: a shm server waits for new clients forever.
    std::thread::spawn(move || {
        let _ = server.serve(s);
    });
    let client = KvClient::connect(&name, DEADLINE).unwrap();
    Running {
        client,
        open,
        entered,
        served: None,
        _keep: Vec::new(),
    }
}

/// Two zenoh sessions joined over loopback TCP (the first listens, the second connects).
#[cfg(all(feature = "net", target_os = "linux"))]
fn loopback_sessions() -> (courier::net::zenoh::Session, courier::net::zenoh::Session) {
    use courier::net::zenoh::{self, Wait};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ep = format!("tcp/127.0.0.1:{port}");
    let listen = courier::net::peer_config(std::slice::from_ref(&ep), &[]).unwrap();
    let a = zenoh::open(listen).wait().unwrap();
    let b = zenoh::open(courier::net::peer_config(&[], &[ep]).unwrap())
        .wait()
        .unwrap();
    (a, b)
}

/// The service behind a courier::net bridge: a shm server (a thread), the bridge on one zenoh
/// session, the client on another, joined over loopback TCP.
#[cfg(all(feature = "net", target_os = "linux"))]
fn net(tag: &str) -> Running {
    runtime_dir();
    let name = format!("kv-net-{}-{tag}", std::process::id());
    let server = KvServer::bind(&name).unwrap();
    let (s, open, entered) = store();
    std::thread::spawn(move || {
        let _ = server.serve(s);
    });
    let (a, b) = loopback_sessions();
    let exposed = courier::net::expose(&a, &name).unwrap();
    let client = KvClient::connect_net(&b, &name, DEADLINE).unwrap();
    Running {
        client,
        open,
        entered,
        served: None,
        _keep: vec![Box::new(exposed), Box::new(a), Box::new(b)],
    }
}

impl Running {
    /// Drops the client; a local server's `serve` then returns (every client is gone).
    fn finish(self) {
        drop(self.client);
        if let Some(served) = self.served {
            served
                .recv_timeout(DEADLINE)
                .expect("serve did not return once every client was gone");
        }
    }
}

/// A pair whose both sides busy-poll for as long as any wait here lasts.
fn busy_pair() -> PairConfig {
    PairConfig::new().busy_poll(Duration::from_secs(60))
}

/// Instantiates one conformance function for each transport (and for a busy-polling local
/// pair, whose waits take another path).
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_local {
            $(#[test] fn $name() { super::$name(super::local()); })*
        }
        mod on_local_busy_poll {
            $(#[test] fn $name() { super::$name(super::local_with(Some(super::busy_pair()))); })*
        }
        #[cfg(target_os = "linux")]
        mod on_shm {
            $(#[test] fn $name() { super::$name(super::shm(stringify!($name))); })*
        }
        #[cfg(all(feature = "net", target_os = "linux"))]
        mod on_net {
            $(#[test] fn $name() { super::$name(super::net(stringify!($name))); })*
        }
    };
}

conformance!(
    calls_sends_and_app_errors,
    lends_read_and_write_the_callers_bytes,
    a_timeout_reaches_every_call,
    async_calls_complete,
    clones_call_from_many_threads,
    deferred_replies_come_from_another_thread,
    scalars_carry_integers_both_ways,
    subscriptions_stream_events_then_end,
);

fn subscriptions_stream_events_then_end(r: Running) {
    let c = &r.client;
    let sub = c.watch(100, 5).unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        got.push(sub.recv_timeout(DEADLINE).unwrap());
    }
    assert_eq!(got, [100, 101, 102, 103, 104]);
    // The server dropped its sink: the stream ends after the last event.
    assert_eq!(sub.recv_timeout(DEADLINE), Err(Error::NoReply));
    // The async form, and two subscriptions at once.
    let (a, b) = (c.watch(1, 2).unwrap(), c.watch(7, 1).unwrap());
    let got = pollster::block_on(async {
        let a1 = a.recv_async().await;
        let a2 = a.recv_async().await;
        let b1 = b.recv_async().await;
        (a1, a2, b1, a.recv_async().await)
    });
    assert_eq!(got, (Ok(1), Ok(2), Ok(7), Err(Error::NoReply)));
    drop((a, b));
    r.finish();
}

fn scalars_carry_integers_both_ways(r: Running) {
    let c = &r.client;
    assert_eq!(c.divmod(17, 5, false), Ok((3, 2)));
    assert_eq!(c.divmod(u32::MAX, 1, true), Ok((-i64::from(u32::MAX), 0)));
    c.bump(3).unwrap();
    c.bump(u16::MAX).unwrap();
    // A call after the one-way scalars sees them (one client, one worker, in order).
    assert_eq!(c.get(0), Ok(3 + u64::from(u16::MAX)));
    r.finish();
}

fn deferred_replies_come_from_another_thread(r: Running) {
    let c = &r.client;
    c.put(4, 44).unwrap();
    assert_eq!(c.later(4), Ok(44));
    assert_eq!(c.later(5), Err(Error::App(KvError::NotFound)));
    assert_eq!(pollster::block_on(c.later_async(4)), Ok(44));
    // A handle dropped unanswered: the caller learns there will be no answer.
    assert_eq!(c.dropped(), Err(Error::NoReply));
    r.finish();
}

fn calls_sends_and_app_errors(r: Running) {
    let c = &r.client;
    assert_eq!(c.get(1), Err(Error::App(KvError::NotFound)));
    c.put(1, 10).unwrap();
    c.put(2, 20).unwrap();
    // A call after the sends is served after them (one client, one worker).
    assert_eq!(c.get(1), Ok(10));
    assert_eq!(c.get(2), Ok(20));
    r.finish();
}

fn lends_read_and_write_the_callers_bytes(r: Running) {
    let c = &r.client;
    for len in [1usize, 4095, 4096, 70_000, 1 << 20] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let want: u64 = data.iter().map(|&b| u64::from(b)).sum();
        assert_eq!(c.sum(&data), Ok(want), "sum of {len} bytes");
        let mut buf = vec![0u8; len];
        assert_eq!(c.fill(0xA5, &mut buf), Ok(len));
        assert!(buf.iter().all(|&b| b == 0xA5), "fill of {len} bytes");
    }
    // An empty lend.
    assert_eq!(c.sum(&[]), Ok(0));
    r.finish();
}

fn a_timeout_reaches_every_call(r: Running) {
    let quick = r.client.with_timeout(Duration::from_millis(50));
    // The gate is shut until the call has timed out: the timeout is the only way back.
    assert_eq!(quick.gated(), Err(Error::Timeout));
    r.entered.recv_timeout(DEADLINE).unwrap();
    r.open.send(()).unwrap();
    // The client still works, and the late answer did not leak into the next call.
    assert_eq!(r.client.get(7), Err(Error::App(KvError::NotFound)));
    assert_eq!(quick.sum(&[1, 2, 3]), Ok(6));
    drop(quick);
    r.finish();
}

fn async_calls_complete(r: Running) {
    let c = r.client.clone();
    r.client.put(5, 55).unwrap();
    let got = pollster::block_on(async move {
        let a = c.get_async(5).await;
        let b = c.get_async(6).await;
        (a, b)
    });
    assert_eq!(got, (Ok(55), Err(Error::App(KvError::NotFound))));
    r.finish();
}

fn clones_call_from_many_threads(r: Running) {
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let c = r.client.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    c.put(t * 1000 + i, i).unwrap();
                    let mut b = [0u8; 32];
                    assert_eq!(c.fill(t as u8, &mut b), Ok(32));
                    assert_eq!(b, [t as u8; 32]);
                }
                assert_eq!(c.get(t * 1000 + 199), Ok(199));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    r.finish();
}

#[test]
fn one_implementation_served_by_several_workers() {
    let (client, server) = KvClient::pair();
    let (s, open, entered) = store();
    let s = std::sync::Arc::new(s);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (server, s) = (server.clone(), s.clone());
            std::thread::spawn(move || server.serve(&*s).unwrap())
        })
        .collect();
    drop(server);
    // One worker is held in `gated`; the other still answers.
    let held = {
        let c = client.clone();
        std::thread::spawn(move || c.gated())
    };
    entered.recv_timeout(DEADLINE).unwrap();
    client.put(3, 33).unwrap();
    assert_eq!(client.get(3), Ok(33));
    open.send(()).unwrap();
    assert_eq!(held.join().unwrap().unwrap(), "open");
    drop(client);
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn the_interface_lists_methods_and_kinds() {
    let i = KvClient::INTERFACE;
    assert_eq!(i.name, "Kv");
    assert_eq!(
        i.methods,
        &[
            ("get", "call"),
            ("put", "send"),
            ("sum", "lend"),
            ("fill", "lend_mut"),
            ("gated", "call"),
            ("later", "deferred"),
            ("dropped", "deferred"),
            ("divmod", "scalar"),
            ("bump", "scalar_send"),
            ("watch", "subscribe")
        ]
    );
    assert_ne!(i.signature, OtherClient::INTERFACE.signature);
    assert_ne!(i.signature, KvReorderedClient::INTERFACE.signature);
}

/// Two traits with the same methods in another order: one interface.
#[courier::service]
pub trait Ab {
    /// `a + 1`.
    fn a(&self, a: u64) -> u64;
    /// Nothing back.
    fn b(&self, b: u8);
}

/// [`Ab`] reordered.
#[courier::service]
pub trait Ba {
    /// Nothing back.
    fn b(&self, b: u8);
    /// `a + 1`.
    fn a(&self, a: u64) -> u64;
}

#[test]
fn reordering_methods_changes_neither_tags_nor_signature() {
    assert_eq!(AbClient::INTERFACE.signature, BaClient::INTERFACE.signature);
}

/// Another service: a client of `Kv` must not talk to it.
#[courier::service]
pub trait Other {
    /// Echoes `key`.
    fn get(&self, key: u32) -> u32;
}

struct Echo;
impl Other for Echo {
    fn get(&self, key: u32) -> u32 {
        key
    }
}

/// `Kv` with its methods in another order and one argument type changed: another interface.
#[courier::service]
pub trait KvReordered {
    /// As `Kv::put`, with a `u32` value.
    fn put(&self, key: u64, value: u32);
    /// As `Kv::get`.
    fn get(&self, key: u64) -> Result<u64, KvError>;
}

#[cfg(target_os = "linux")]
#[test]
fn a_client_refuses_a_server_of_another_interface_at_connect() {
    runtime_dir();
    let name = format!("other-{}", std::process::id());
    let server = OtherServer::bind(&name).unwrap();
    std::thread::spawn(move || {
        let _ = server.serve(Echo);
    });
    match KvClient::connect(&name, DEADLINE) {
        Err(courier::shm::ShmError::InterfaceMismatch { ours, theirs, .. }) => {
            assert!(ours.starts_with("Kv "), "{ours}");
            assert!(theirs.starts_with("Other "), "{theirs}");
        }
        other => panic!("expected an interface mismatch, got {other:?}"),
    }
    // The right client connects and calls.
    let c = OtherClient::connect(&name, DEADLINE).unwrap();
    assert_eq!(c.get(9), Ok(9));
}

/// The same check across the network: the interface questions cross the bridge.
#[cfg(all(feature = "net", target_os = "linux"))]
#[test]
fn a_network_client_refuses_a_server_of_another_interface_at_connect() {
    runtime_dir();
    let name = format!("other-net-{}", std::process::id());
    let server = OtherServer::bind(&name).unwrap();
    std::thread::spawn(move || {
        let _ = server.serve(Echo);
    });
    let (a, b) = loopback_sessions();
    let _exposed = courier::net::expose(&a, &name).unwrap();
    match KvClient::connect_net(&b, &name, DEADLINE) {
        Err(courier::net::NetError::InterfaceMismatch { ours, theirs, .. }) => {
            assert!(ours.starts_with("Kv "), "{ours}");
            assert!(theirs.starts_with("Other "), "{theirs}");
        }
        other => panic!("expected an interface mismatch, got {other:?}"),
    }
    let c = OtherClient::connect_net(&b, &name, DEADLINE).unwrap();
    assert_eq!(c.get(9), Ok(9));
}

/// A service with `async fn` methods (and a sync one): `serve` is then a future, run here by
/// `pollster` on a thread; across processes it waits through `Server::async_wait`.
#[courier::service]
trait Suspend {
    /// Answers after yielding to the executor once.
    async fn echo(&self, x: u64) -> Result<u64, KvError>;
    /// A lend read by an async method.
    async fn total(&self, #[lend] data: &[u8]) -> u64;
    /// A plain method beside them.
    fn twice(&self, x: u64) -> u64;
}

struct Yielding;

/// A future that is pending once, then ready: the method really suspends.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            std::task::Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
}

impl Suspend for Yielding {
    async fn echo(&self, x: u64) -> Result<u64, KvError> {
        YieldOnce(false).await;
        if x == 0 {
            Err(KvError::NotFound)
        } else {
            Ok(x)
        }
    }
    async fn total(&self, data: &[u8]) -> u64 {
        YieldOnce(false).await;
        data.iter().map(|&b| u64::from(b)).sum()
    }
    fn twice(&self, x: u64) -> u64 {
        2 * x
    }
}

fn async_service_conformance(c: &SuspendClient) {
    assert_eq!(c.echo(7), Ok(7));
    assert_eq!(c.echo(0), Err(Error::App(KvError::NotFound)));
    assert_eq!(c.total(&[1, 2, 3, 4]), Ok(10));
    assert_eq!(c.twice(21), Ok(42));
    assert_eq!(pollster::block_on(c.echo_async(9)), Ok(9));
}

#[test]
fn an_async_service_in_one_process() {
    let (client, server) = SuspendClient::pair();
    let (done, served) = mpsc::channel();
    std::thread::spawn(move || {
        pollster::block_on(server.serve(Yielding)).unwrap();
        let _ = done.send(());
    });
    async_service_conformance(&client);
    drop(client);
    served
        .recv_timeout(DEADLINE)
        .expect("serve returned once the client was gone");
}

#[cfg(target_os = "linux")]
#[test]
fn an_async_service_across_processes() {
    runtime_dir();
    let name = format!("suspend-{}", std::process::id());
    let server = SuspendServer::bind(&name).unwrap();
    std::thread::spawn(move || {
        let _ = pollster::block_on(server.serve(Yielding));
    });
    let client = SuspendClient::connect(&name, DEADLINE).unwrap();
    async_service_conformance(&client);
}

/// `FooServer::stop` ends every blocking `serve` of the server and its clones, in one
/// process (with a client still connected) and across processes.
#[test]
fn stop_ends_serve_on_both_transports() {
    let (client, server) = AbClient::pair();
    struct Plus;
    impl Ab for Plus {
        fn a(&self, a: u64) -> u64 {
            a + 1
        }
        fn b(&self, _: u8) {}
    }
    let (done, served) = mpsc::channel();
    let worker = server.clone();
    let d = done.clone();
    std::thread::spawn(move || {
        let _ = d.send(worker.serve(Plus).is_ok());
    });
    assert_eq!(client.a(1), Ok(2));
    server.stop();
    assert_eq!(served.recv_timeout(DEADLINE), Ok(true));
    drop(client);

    #[cfg(target_os = "linux")]
    {
        runtime_dir();
        let name = format!("stop-{}", std::process::id());
        let server = AbServer::bind(&name).unwrap();
        let worker = server.clone();
        std::thread::spawn(move || {
            let _ = done.send(worker.serve(Plus).is_ok());
        });
        let client = AbClient::connect(&name, DEADLINE).unwrap();
        assert_eq!(client.a(41), Ok(42));
        server.stop();
        assert_eq!(served.recv_timeout(DEADLINE), Ok(true));
    }
}

/// How long a wait lasts in the busy-poll tests: far beyond the adaptive spin (a few
/// microseconds), so a side that is not busy-polling goes to sleep in it.
#[cfg(target_os = "linux")]
const LONG_WAIT: Duration = Duration::from_millis(50);

/// How often a client of a pair made with `config` slept while its call waited `LONG_WAIT`
/// behind the server's gate.
#[cfg(target_os = "linux")]
fn client_sleeps(config: Option<PairConfig>) -> u64 {
    let r = local_with(config);
    let client = r.client.clone();
    let asked = std::thread::spawn(move || {
        let before = sleeps_of_this_thread();
        assert_eq!(client.gated().unwrap().as_str(), "open");
        sleeps_of_this_thread() - before
    });
    r.entered.recv_timeout(DEADLINE).unwrap();
    std::thread::sleep(LONG_WAIT);
    r.open.send(()).unwrap();
    asked.join().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn pair_with_busy_poll_keeps_the_client_awake_through_a_long_call() {
    assert_eq!(client_sleeps(Some(busy_pair())), 0);
    // Only the server's side: the client sleeps as by default.
    let server_only = PairConfig::new().server_busy_poll(Duration::from_secs(60));
    assert!(client_sleeps(Some(server_only)) >= 1);
    assert!(client_sleeps(None) >= 1);
}

/// How often the serving thread of a pair made with `config` slept while no request came
/// for `LONG_WAIT`, then one did.
#[cfg(target_os = "linux")]
fn server_sleeps(config: PairConfig) -> u64 {
    let (client, server) = KvClient::pair_with(config);
    let (s, _open, _entered) = store();
    let (ready, at_work) = mpsc::channel();
    let serving = std::thread::spawn(move || {
        ready.send(()).unwrap();
        let before = sleeps_of_this_thread();
        server.serve(s).unwrap();
        sleeps_of_this_thread() - before
    });
    at_work.recv_timeout(DEADLINE).unwrap();
    std::thread::sleep(LONG_WAIT);
    assert_eq!(client.get(7), Err(Error::App(KvError::NotFound)));
    drop(client);
    serving.join().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn pair_with_busy_poll_keeps_the_server_awake_while_it_waits() {
    let server_only = PairConfig::new().server_busy_poll(Duration::from_secs(60));
    assert_eq!(server_sleeps(server_only), 0);
    assert!(server_sleeps(PairConfig::new()) >= 1);
}

#[test]
fn pair_config_keeps_each_side_s_limit() {
    let c = PairConfig::new()
        .busy_poll(Duration::from_millis(3))
        .client_busy_poll(Duration::from_millis(5));
    assert_eq!(c.client_poll(), Duration::from_millis(5));
    assert_eq!(c.server_poll(), Duration::from_millis(3));
    assert_eq!(PairConfig::default(), PairConfig::new());
    assert_eq!(PairConfig::new().server_poll(), Duration::ZERO);
}
