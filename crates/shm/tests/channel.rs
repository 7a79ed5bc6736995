//! `ShmChannel` across real processes: the test binary runs itself as the peer (`peer_main`,
//! selected by an environment variable).
//!
//! Cases:
//! - the seed's parity example: request one way, response the other, loan and publish; the
//!   same written against crossbar's names (`crossbar_compat`), imports changed only;
//! - many messages in a row (10,000 each way, lengths varying) without loss or reordering;
//! - the errors of a send across processes: too large, pool exhausted, a full ring as an error
//!   and as backpressure (a blocked send goes through once the receiver makes room);
//! - a receive that times out; a bad name; nobody listening;
//! - SIGKILL of the peer while this side is blocked in `recv`: `PeerDead` well within the
//!   deadline, sends fail too; and SIGKILL of a listener process while a client process is
//!   blocked in `recv`; SIGKILL of a peer in the middle of a stream of sends: every message
//!   received is whole and in order, then `PeerDead`; afterwards the name is free and
//!   /dev/shm holds nothing of courier's;
//! - a process blocked in `recv` on an idle channel uses no CPU (its threads' ticks over
//!   300 ms), and wakes for a message;
//! - a hostile peer process that scribbles random bytes over the whole segment while this side
//!   sends and receives: errors or messages, never a panic or a wait past its timeout.
//!
//! Every wait has a deadline.
#![cfg(target_os = "linux")]

use courier_shm::{
    ConnectConfig, Connection, Full, ShmChannel, ShmConfig, ShmError, ShmView, WaitStrategy,
};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod support;
use support::*;

const MANY: u64 = 10_000;

// ---------------------------------------------------------------------------------------
// The peer process.

fn kind(e: &ShmError) -> &'static str {
    match e {
        ShmError::PeerDead => "peer-dead",
        ShmError::Timeout => "timeout",
        ShmError::RingFull => "ring-full",
        ShmError::PoolExhausted => "pool-exhausted",
        ShmError::TooLarge { .. } => "too-large",
        ShmError::Corrupt(_) => "corrupt",
        _ => "other",
    }
}

fn say_result<T>(r: Result<T, ShmError>) {
    match r {
        Ok(_) => say("ok"),
        Err(e) => say(kind(&e)),
    }
}

/// The message number `i`: its number, then `i % 200` bytes of `i as u8`.
fn numbered(i: u64) -> Vec<u8> {
    let mut m = i.to_le_bytes().to_vec();
    m.resize(8 + (i % 200) as usize, i as u8);
    m
}

fn check_numbered(i: u64, m: &ShmView<'_>) {
    assert_eq!(m.to_vec(), numbered(i), "message {i}");
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Not a test of its own: the body of the peer processes. Without the role variable it does
/// nothing.
#[test]
fn peer_main() {
    let Some((role, name)) = peer_role() else {
        return;
    };
    let connect = |full| ShmChannel::connect(&name, ShmConfig::new().full(full), DEADLINE);
    match role.as_str() {
        // The seed's example, client side, then a loaned message.
        "parity" => {
            let cli = connect(Full::Backpressure).unwrap();
            cli.send(b"request").unwrap();
            let reply = cli.recv_timeout(DEADLINE).unwrap();
            assert_eq!(reply.to_vec(), b"response");
            drop(reply);
            let mut loan = cli.loan().unwrap();
            loan.write_at(0, b"loaned").unwrap();
            loan.publish(6).unwrap();
            say("ok");
        }
        // The seed's example written against crossbar's names, client side, with the
        // imports changed only (`crossbar_compat`): then its error names.
        "compat" => {
            use courier_shm::crossbar_compat::*;
            let mut cli = ShmChannel::connect(&name, PubSubConfig::default(), DEADLINE).unwrap();
            cli.send(b"request").unwrap();
            let reply = cli.recv().unwrap();
            assert_eq!(&*reply, b"response");
            drop(reply);
            assert!(cli.try_recv().is_none());
            match cli.send(&[0; 4097]) {
                Err(IpcError::DataTooLarge) => say("data-too-large"),
                other => say(&format!("unexpected {other:?}")),
            }
            cli.heartbeat();
            say("ok");
            // Told to go on: read what the listener sent until it is gone, which crossbar's
            // recv reports as PublisherDead.
            read_stdin_line();
            let mut drained = 0;
            let last = loop {
                match cli.recv_with(WaitStrategy::Timeout(DEADLINE)) {
                    Ok(m) if &*m == b"x" => drained += 1,
                    Ok(m) => break format!("unexpected message {:?}", &*m),
                    Err(IpcError::PublisherDead) => break "publisher-dead".to_string(),
                    Err(e) => break format!("unexpected {e:?}"),
                }
            };
            say(&format!("drained {drained} {last}"));
        }
        // Send MANY numbered messages, then receive MANY and check them.
        "many" => {
            let cli = connect(Full::Backpressure).unwrap();
            for i in 0..MANY {
                cli.send(&numbered(i)).unwrap();
            }
            for i in 0..MANY {
                let m = cli.recv_timeout(DEADLINE).unwrap();
                check_numbered(i, &m);
            }
            say("ok");
        }
        // The send errors; the listener chose 4 blocks of 64 bytes and a ring of 2.
        "send-errors" => {
            let cli = connect(Full::Error).unwrap();
            say_result(cli.send(&[0; 65]));
            cli.send(b"1").unwrap();
            cli.send(b"2").unwrap();
            say_result(cli.send(b"3"));
            // The two messages went inline, in their ring entries: the 4 blocks are free.
            let _loans: Vec<_> = (0..4).map(|_| cli.loan().unwrap()).collect();
            say_result(cli.loan());
        }
        "backpressure" => {
            let cli = connect(Full::Backpressure).unwrap();
            cli.send(b"1").unwrap();
            cli.send(b"2").unwrap();
            say_result(cli.send_timeout(b"3", Duration::from_millis(20)));
            say("blocking");
            say_result(cli.send_timeout(b"3", DEADLINE));
        }
        // Send numbered messages until killed.
        "stream" => {
            let cli = connect(Full::Backpressure).unwrap();
            for i in 0.. {
                cli.send(&numbered(i)).unwrap();
            }
        }
        // Connect, then wait to be killed.
        "hold" => {
            let _cli = connect(Full::Backpressure).unwrap();
            say("connected");
            read_stdin_line();
        }
        // Listen (the test connects a "blocked-client" peer), then wait to be killed.
        "listen-hold" => {
            say("listening");
            let _srv = ShmChannel::listen(&name, ShmConfig::new(), DEADLINE).unwrap();
            say("connected");
            read_stdin_line();
        }
        // Connect and block in recv; report what ends it and how long after "go" it took.
        "blocked-client" => {
            let cli = connect(Full::Backpressure).unwrap();
            say("receiving");
            let r = cli.recv_with(WaitStrategy::Timeout(DEADLINE));
            say(match &r {
                Ok(_) => "message",
                Err(e) => kind(e),
            });
        }
        // A hostile client: scribble random bytes over the segment until stdin closes.
        "scribbler" => {
            let conn = Connection::connect_timeout(&name, &ConnectConfig::new(), DEADLINE).unwrap();
            let seg = conn.segment();
            let len = seg.payload().len() as u64;
            let mut rng = Rng(0x1234_5678_9abc_def1);
            say("scribbling");
            let stop = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    read_stdin_line();
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                });
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Mostly the control area and rings (the first 1 KiB), sometimes anywhere.
                    let r = rng.next();
                    let span = if r % 4 == 0 { len } else { len.min(1024) };
                    let off = (rng.next() % span.saturating_sub(8).max(1)) as usize;
                    let v = match r >> 61 {
                        0 => [0; 8],
                        1 => [0xff; 8],
                        2 => (rng.next() % 8).to_le_bytes(),
                        _ => rng.next().to_le_bytes(),
                    };
                    let _ = seg.write_at(off, &v);
                }
            });
        }
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// The test side.

#[test]
fn parity_example_across_processes() {
    let _g = serial();
    let dir = TestDir::new("parity");
    let name = unique("parity");
    let peer = spawn("parity", &dir, &name, None);
    let srv = ShmChannel::listen(&name, ShmConfig::new(), DEADLINE).unwrap();
    assert_eq!(srv.peer().pid, peer.child.id() as i32);
    let msg = srv.recv_timeout(DEADLINE).unwrap();
    assert_eq!(msg.to_vec(), b"request");
    drop(msg);
    srv.send(b"response").unwrap();
    assert_eq!(srv.recv_timeout(DEADLINE).unwrap().to_vec(), b"loaned");
    assert_eq!(peer.line(), "ok");
}

/// crossbar's example, with its imports changed to `courier_shm::crossbar_compat` and
/// nothing else, on both sides of two processes: `PubSubConfig`, `send(&mut self, ..)`,
/// `recv` / `try_recv -> Option` / `recv_with`, `SampleGuard` dereferencing to bytes, and
/// `IpcError`'s names (`DataTooLarge`, `PoolExhausted`, `PublisherDead`).
#[test]
fn crossbar_s_example_ported_by_imports_across_processes() {
    use courier_shm::crossbar_compat::{IpcError, PubSubConfig, ShmChannel as CbChannel};
    let _g = serial();
    let dir = TestDir::new("compat");
    let name = unique("compat");
    let mut peer = spawn("compat", &dir, &name, None);
    let mut srv = CbChannel::listen(&name, PubSubConfig::default(), DEADLINE).unwrap();
    let msg = srv.recv().unwrap();
    assert_eq!(&*msg, b"request");
    drop(msg);
    srv.send(b"response").unwrap();
    assert_eq!(peer.line(), "data-too-large");
    assert_eq!(peer.line(), "ok");
    // Every block of the pool sent and unread: PoolExhausted.
    let blocks = srv.inner().block_count();
    let mut sent = 0;
    let full = loop {
        match srv.send(b"x") {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent <= blocks, "more sends than blocks");
    };
    assert!(matches!(full, IpcError::PoolExhausted), "{full:?}");
    assert_eq!(sent, blocks);
    // The peer reads them all, then learns that this end is gone.
    peer.tell("go");
    drop(srv);
    assert_eq!(peer.line(), format!("drained {blocks} publisher-dead"));
}

#[test]
fn many_messages_each_way_in_order() {
    let _g = serial();
    let dir = TestDir::new("many");
    let name = unique("many");
    let peer = spawn("many", &dir, &name, None);
    let config = ShmConfig::new().block_size(256).block_count(16);
    let srv = ShmChannel::listen(&name, config, DEADLINE).unwrap();
    for i in 0..MANY {
        let m = srv.recv_timeout(DEADLINE).unwrap();
        check_numbered(i, &m);
    }
    for i in 0..MANY {
        srv.send_timeout(&numbered(i), DEADLINE).unwrap();
    }
    assert_eq!(peer.line(), "ok");
}

#[test]
fn send_errors_across_processes() {
    let _g = serial();
    let dir = TestDir::new("senderr");
    let name = unique("senderr");
    let config = ShmConfig::new().block_size(64).block_count(4).ring_depth(2);

    let peer = spawn("send-errors", &dir, &name, None);
    let srv = ShmChannel::listen(&name, config, DEADLINE).unwrap();
    assert_eq!(peer.line(), "too-large");
    assert_eq!(peer.line(), "ring-full");
    assert_eq!(peer.line(), "pool-exhausted");
    assert_eq!(srv.recv_timeout(DEADLINE).unwrap().to_vec(), b"1");
    assert_eq!(srv.recv_timeout(DEADLINE).unwrap().to_vec(), b"2");
    drop(srv);

    let peer = spawn("backpressure", &dir, &name, None);
    let srv = ShmChannel::listen(&name, config, DEADLINE).unwrap();
    assert_eq!(peer.line(), "timeout");
    assert_eq!(peer.line(), "blocking");
    // The peer's send waits for room; receiving makes it, and nothing is lost.
    for want in [b"1", b"2", b"3"] {
        assert_eq!(srv.recv_timeout(DEADLINE).unwrap().to_vec(), want);
    }
    assert_eq!(peer.line(), "ok");
}

#[test]
fn timeouts_and_names() {
    let _g = serial();
    let dir = TestDir::new("timeouts");
    let name = unique("timeouts");
    assert!(matches!(
        ShmChannel::listen("../x", ShmConfig::new(), DEADLINE),
        Err(ShmError::InvalidName(_))
    ));
    assert!(matches!(
        ShmChannel::connect("a/b", ShmConfig::new(), DEADLINE),
        Err(ShmError::InvalidName(_))
    ));
    assert!(matches!(
        ShmChannel::connect(&name, ShmConfig::new(), Duration::from_millis(30)),
        Err(ShmError::Timeout)
    ));
    assert!(matches!(
        ShmChannel::listen(&name, ShmConfig::new(), Duration::from_millis(30)),
        Err(ShmError::Timeout)
    ));
    assert!(matches!(
        ShmChannel::listen(&name, ShmConfig::new().block_count(0), DEADLINE),
        Err(ShmError::InvalidConfig(_))
    ));
    let mut peer = spawn("hold", &dir, &name, None);
    let srv = ShmChannel::listen(&name, ShmConfig::new(), DEADLINE).unwrap();
    assert_eq!(peer.line(), "connected");
    assert!(matches!(
        srv.recv_timeout(Duration::from_millis(30)),
        Err(ShmError::Timeout)
    ));
    assert!(srv.try_recv().unwrap().is_none());
    peer.kill();
}

#[test]
fn sigkill_of_the_peer_wakes_a_blocked_recv_with_peer_dead() {
    let _g = serial();
    let dir = TestDir::new("kill");
    let name = unique("kill");
    let mut peer = spawn("hold", &dir, &name, None);
    let srv = ShmChannel::listen(&name, ShmConfig::new(), DEADLINE).unwrap();
    assert_eq!(peer.line(), "connected");
    let (tx, rx) = mpsc::channel();
    let receiver = std::thread::spawn(move || {
        tx.send(()).unwrap();
        // Blocked here (after its spin, asleep on the futex) when the peer is killed.
        let r = srv.recv_timeout(DEADLINE).map(|m| m.to_vec());
        (r, Instant::now(), srv)
    });
    rx.recv_timeout(DEADLINE).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let killed = Instant::now();
    peer.kill();
    let (r, woke, srv) = receiver.join().unwrap();
    assert!(matches!(r, Err(ShmError::PeerDead)), "{r:?}");
    // A deadline, not a measurement: the watcher sees the socket's hang-up at once and wakes
    // the sleeping receiver.
    assert!(woke.duration_since(killed) < Duration::from_secs(1));
    assert!(matches!(srv.send(b"x"), Err(ShmError::PeerDead)));
    assert!(matches!(srv.try_recv(), Err(ShmError::PeerDead)));
    drop(srv);
    // Nothing is left: the name is free again and /dev/shm holds nothing of ours.
    assert_eq!(courier_files_in_dev_shm(), Vec::<String>::new());
    let peer = spawn("parity", &dir, &name, None);
    let srv = ShmChannel::listen(&name, ShmConfig::new(), DEADLINE).unwrap();
    assert_eq!(srv.recv_timeout(DEADLINE).unwrap().to_vec(), b"request");
    drop(peer);
}

#[test]
fn a_process_blocked_in_recv_on_an_idle_channel_uses_no_cpu() {
    let _g = serial();
    let dir = TestDir::new("idle");
    let name = unique("idle");
    let client = spawn("blocked-client", &dir, &name, None);
    let srv = ShmChannel::listen(&name, ShmConfig::new(), DEADLINE).unwrap();
    assert_eq!(client.line(), "receiving");
    let pid = client.child.id();
    // Known to be blocked: past its bounded spin, every thread asleep.
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(50));
    while !all_asleep(pid) {
        assert!(
            start.elapsed() < DEADLINE,
            "the receiver never went to sleep"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (ticks, switches) = (cpu_ticks(pid), context_switches(pid));
    std::thread::sleep(Duration::from_millis(300));
    let used = cpu_ticks(pid) - ticks;
    let woke = context_switches(pid) - switches;
    assert!(used <= 1, "a blocked receiver used {used} ticks in 300 ms");
    // Sharper than ticks (a 10 ms sleep slice would be ~30 short wake-ups and still 0 ticks):
    // it does not wake at all.
    assert!(woke <= 2, "a blocked receiver woke {woke} times in 300 ms");
    // And it is asleep, not stuck: a message wakes it.
    srv.send(b"wake up").unwrap();
    assert_eq!(client.line(), "message");
}

#[test]
fn sigkill_of_a_listener_process_wakes_a_client_blocked_in_recv() {
    let _g = serial();
    let dir = TestDir::new("killsrv");
    let name = unique("killsrv");
    let mut listener = spawn("listen-hold", &dir, &name, None);
    assert_eq!(listener.line(), "listening");
    let client = spawn("blocked-client", &dir, &name, None);
    assert_eq!(listener.line(), "connected");
    assert_eq!(client.line(), "receiving");
    std::thread::sleep(Duration::from_millis(50));
    listener.kill();
    let reported = client
        .line_within(Duration::from_secs(1))
        .expect("the client did not see the listener's death within 1 s");
    assert_eq!(reported, "peer-dead");
    assert_eq!(courier_files_in_dev_shm(), Vec::<String>::new());
}

#[test]
fn sigkill_in_the_middle_of_a_stream_loses_nothing_that_was_sent() {
    let _g = serial();
    let dir = TestDir::new("stream");
    let name = unique("stream");
    let mut peer = spawn("stream", &dir, &name, None);
    let config = ShmConfig::new().block_size(256).block_count(8);
    let srv = ShmChannel::listen(&name, config, DEADLINE).unwrap();
    for i in 0..500 {
        check_numbered(i, &srv.recv_timeout(DEADLINE).unwrap());
    }
    peer.kill();
    // What was published before the kill arrives whole and in order; then the peer is dead.
    let mut i = 500;
    loop {
        match srv.recv_timeout(DEADLINE) {
            Ok(m) => check_numbered(i, &m),
            Err(ShmError::PeerDead) => break,
            Err(e) => panic!("after message {i}: {e}"),
        }
        i += 1;
    }
    assert!(
        i <= 500 + 8,
        "more messages than blocks arrived after the kill"
    );
    assert!(matches!(srv.send(b"x"), Err(ShmError::PeerDead)));
}

#[test]
fn a_hostile_peer_scribbling_over_the_segment_gets_errors_not_panics() {
    let _g = serial();
    let dir = TestDir::new("hostile");
    let name = unique("hostile");
    let mut peer = spawn("scribbler", &dir, &name, None);
    let config = ShmConfig::new()
        .block_size(64)
        .block_count(8)
        .ring_depth(4)
        .full(Full::Backpressure);
    let srv = ShmChannel::listen(&name, config, DEADLINE).unwrap();
    assert_eq!(peer.line(), "scribbling");
    let step = Duration::from_millis(2);
    let (mut messages, mut errors) = (0u32, 0u32);
    let mut held = Vec::new();
    for i in 0..3000u32 {
        let start = Instant::now();
        let outcome = match i % 5 {
            0 => srv.send_timeout(b"to a hostile peer", step).map(|_| ()),
            1 => srv.recv_timeout(step).map(|m| {
                // Read every byte: bounds hold whatever the peer wrote.
                let _ = m.to_vec().iter().fold(0u8, |a, &b| a ^ b);
                held.push(m);
            }),
            2 => srv.try_recv().map(drop),
            3 => srv.loan().and_then(|mut l| {
                l.fill(1);
                let n = l.len();
                l.publish_timeout(n, step)
            }),
            _ => {
                held.clear();
                Ok(())
            }
        };
        match outcome {
            Ok(()) => messages += 1,
            Err(ShmError::Corrupt(_) | ShmError::Timeout) => errors += 1,
            Err(ShmError::PoolExhausted | ShmError::RingFull) => errors += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "call {i} waited past its timeout"
        );
    }
    assert!(errors > 0, "the scribbler caused no error at all");
    let _ = messages;
    peer.close_stdin();
    peer.kill();
    drop(held);
    // The dead scribbler is seen as such (or as corrupt), never waited for.
    let r = srv.recv_timeout(DEADLINE).map(|m| m.len());
    assert!(
        matches!(r, Err(ShmError::PeerDead | ShmError::Corrupt(_)) | Ok(_)),
        "{r:?}"
    );
}
