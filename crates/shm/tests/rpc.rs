//! courier::shm RPC across real processes: the test binary runs itself as the peer
//! (`peer_main`, selected by `COURIER_SHM_TEST_ROLE`), which is a server (the `server` role,
//! steered line by line on its stdin) or client processes (the test process then serves).
//!
//! Cases:
//! - connecting: a client process waits (bounded) for a name bound later; a missing name times
//!   out; several client processes, each calling from several threads, are served by a server
//!   with several workers (`Server` clones) that are shown to work at the same time;
//! - the calls: `req`, `req_timeout` (the server sees `is_canceled`), `areq` under
//!   `futures::executor::block_on`, `pollster` and tokio (current-thread and multi-thread),
//!   dropping an `areq` cancels it, `req_async` with `wait`/`wait_timeout`/`wait_async` and every
//!   `cancel` outcome (Withdrawn, Signaled, Completed), one-way `send` (`is_one_way`),
//!   `fail` → `Error::App`, flat payloads (a `#[derive(Ipc)]` struct, `flat::String`, arrays),
//!   `Postcard` payloads (with `--features serde`), and a client whose types differ from the
//!   server's is refused;
//! - memory messages: `lend` (the server reads the caller's bytes in place) and `lend_mut` (the
//!   caller sees the server's writes) of 4 KiB, 1 MiB and 64 MiB; `lend_mut_timeout` while the
//!   server holds the lend gives Timeout and leaves the caller's buffer its own;
//! - scalars: one-way and blocking with a two-word reply, all 64 bits of every word; opcodes
//!   as a `#[derive(Opcode)]` enum, an unknown one refused (`Error::Protocol`);
//! - deferred responses: a stored `ReplyContext`, `ScalarCall` and lend answered later from
//!   another thread while other calls are served; each dropped unanswered gives `NoReply`;
//! - push notifications: in order, blocking and async; a dropped `Subscription` makes `push`
//!   fail with `Unsubscribed`; a dropped `Notifier` ends `recv`;
//! - faults: SIGKILL of the server with calls of every kind pending → `ServerDisappeared`, then a
//!   new server takes the name and serves a reconnecting client; SIGKILL of a client while the
//!   server holds its calls → `OriginDisappeared`, and `Server::stats` shows it gone, lends freed;
//! - 300 `areq` futures joined on one thread against a server with 4 slots that answers in
//!   batches of 4 all finish (waiting for a slot never blocks the executor);
//! - load: 4 client processes × 4 threads × `COURIER_LOAD_CALLS` calls (default 2,000; the
//!   issue's full size is 100,000: `COURIER_LOAD_CALLS=100000 cargo test --release -p
//!   courier-shm --test rpc -- load`) against 2 workers: every reply reaches its own caller
//!   exactly once, nothing lost, duplicated or misrouted;
//! - an idle server blocked in `wait` uses at most one clock tick in 300 ms;
//! - `courier_shm::services()` lists the live service (its name has spaces, as Xous names
//!   do), its pid and its client count.
//!
//! Every wait has a deadline; peers report on stdout and the test waits for those lines.
#![cfg(target_os = "linux")]

use courier_core::flat;
use courier_core::opcode::UnknownOpcode;
use courier_derive::Ipc;
use courier_shm::{
    CancelOutcome, Client, ConnectConfig, Error, Incoming, Notifier, PushError, ReplyContext,
    ScalarCall, Server, ServerConfig, ShmBuf, ShmError, ShmView, ShmViewMut, Wire,
};
use std::collections::{BTreeSet, HashSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod support;
use support::*;

// ---------------------------------------------------------------------------------------
// The vocabulary both sides speak.

/// The request and reply of the main test service: a `#[derive(Ipc)]` struct.
#[derive(Ipc, Clone, Copy, Debug, PartialEq, Eq)]
#[ipc(crate = "courier_core::flat")]
#[repr(C)]
struct Cmd {
    op: u64,
    a: u64,
    b: u64,
}

/// The application error: a flat string.
type Why = flat::String<32>;
type Srv = Server<Cmd, Cmd, Why>;
type Cli = Client<Cmd, Cmd, Why>;

/// Replies `{ECHO, a, transform(a)}`, and remembers `a` (see `SEEN`).
const ECHO: u64 = 1;
/// Replies `{is_one_way, server pid, client pid}`.
const PID: u64 = 2;
/// Fails with "no <a>".
const FAIL: u64 = 3;
/// Held by the server (`held call <a>`) until its stdin says what to do with it.
const HOLD: u64 = 4;
/// Sent one-way: the server says `one-way <a> <is_one_way>`, then how its reply went.
const ONE_WAY: u64 = 5;
/// A `lend` of `a` bytes holding `pattern(b)`: replies `{lent_mut is None, len, matches}`.
const LEND_CHECK: u64 = 6;
/// A `lend_mut`: the server writes `pattern(b)` over it and replies `{LEND_FILL, len, 0}`.
const LEND_FILL: u64 = 7;
/// A `lend_mut` held by the server (`held lend <a>`), like `HOLD`.
const LEND_HOLD: u64 = 8;
/// Blocks the worker that takes it (`stalled <a>`) until stdin says `unstall`; then echoes.
const STALL: u64 = 9;
/// Replies `{SEEN, a, 1 if an ECHO with this a was served}`.
const SEEN: u64 = 10;

/// Scalar opcodes: the server says `scalar <op> <args> <blocking> from <pid>`, and replies
/// `mix(args)` when blocking; `Sc::Hold` is held (`held scalar`) instead; an opcode it does
/// not know is refused (`unknown opcode <op>`: a blocking caller gets `Error::Protocol`).
#[derive(courier_derive::Opcode, Clone, Copy, Debug, PartialEq, Eq)]
#[opcode(crate = "courier_core::opcode")]
enum Sc {
    Plain = 0x51,
    Hold = 0x53,
}
const SC_PLAIN: u32 = Sc::Plain as u32;
/// No variant of `Sc` has it.
const SC_UNKNOWN: u32 = 0x52;
/// Every bit of every word matters.
const WORDS: [u64; 4] = [
    u64::MAX,
    0x8000_0000_0000_0001,
    0xDEAD_BEEF_CAFE_BABE,
    0x0123_4567_89AB_CDEF,
];

/// Pushed values are `PUSH_BASE + i`.
const PUSH_BASE: u64 = 0xF00D_0000_0000_0000;

/// Peer parameters.
const WORKERS: &str = "COURIER_SHM_TEST_WORKERS";
const INDEX: &str = "COURIER_SHM_TEST_INDEX";
const THREADS: &str = "COURIER_SHM_TEST_THREADS";
const CALLS: &str = "COURIER_SHM_TEST_CALLS";
const BUSY_POLL: &str = "COURIER_SHM_TEST_BUSY_POLL";

fn transform(a: u64) -> u64 {
    a.rotate_left(17) ^ 0x9E37_79B9_7F4A_7C15
}

fn echo(a: u64) -> Cmd {
    Cmd {
        op: ECHO,
        a,
        b: transform(a),
    }
}

fn cmd(op: u64, a: u64) -> Cmd {
    Cmd { op, a, b: 0 }
}

fn mix(w: [u64; 4]) -> [u64; 2] {
    [w[0] ^ w[3], w[1].wrapping_add(w[2])]
}

fn why(s: &str) -> Why {
    Why::try_from(s).unwrap()
}

/// The 8-byte word `i` of the fill pattern `seed`.
fn word(seed: u64, i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed
}

fn fill(buf: &mut ShmViewMut<'_>, seed: u64) {
    let bytes: Vec<u8> = (0..buf.len() / 8)
        .flat_map(|i| word(seed, i).to_le_bytes())
        .collect();
    buf.write_at(0, &bytes).unwrap();
}

/// The index of the first word that is not `pattern(seed)`, if any.
fn mismatch(buf: &ShmView<'_>, seed: u64) -> Option<usize> {
    buf.to_vec()
        .chunks_exact(8)
        .enumerate()
        .position(|(i, w)| u64::from_le_bytes(w.try_into().unwrap()) != word(seed, i))
}

/// The variant's name of an error (or "ok"), for lines and messages.
fn kind(e: &impl Debug) -> String {
    let s = format!("{e:?}");
    s.split(['(', ' ', '{']).next().unwrap().to_owned()
}

/// The name of a cancel outcome.
fn cancel_kind<Rq, Rp, E>(c: &CancelOutcome<Rq, Rp, E>) -> &'static str {
    match c {
        CancelOutcome::Withdrawn(_) => "Withdrawn",
        CancelOutcome::Signaled => "Signaled",
        CancelOutcome::Completed(_) => "Completed",
    }
}

fn outcome<T, E: Debug>(r: &Result<T, E>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => kind(e),
    }
}

/// The request `a` of a load call: (process, thread, sequence number).
fn load_key(p: u64, t: u64, seq: u64) -> u64 {
    (p << 48) | (t << 32) | seq
}

fn env_or(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .map(|v| v.parse().unwrap())
        .unwrap_or(default)
}

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
        "server" => serve(&name),
        "server-bytes" => serve_bytes(&name),
        "server-batch" => serve_batches(&name),
        #[cfg(feature = "serde")]
        "server-postcard" => serve_postcard(&name),
        // Connect (the name may appear later), make one call, report the server's pid.
        "client-late" => {
            say("connecting");
            let cli = Cli::connect(&name, DEADLINE).unwrap();
            let r = cli.req(cmd(PID, 0)).unwrap();
            say(&format!("served {}", r.a));
        }
        // THREADS threads (one with a clone of the client) × CALLS echo calls each.
        "client-threads" => {
            let p = env_or(INDEX, 0);
            let threads = env_or(THREADS, 4);
            let calls = env_or(CALLS, 100);
            let cli = Cli::connect(&name, DEADLINE).unwrap();
            say("connected");
            let bad = Mutex::new(None);
            thread::scope(|s| {
                for t in 0..threads {
                    let own = cli.clone();
                    let cli = &cli;
                    let bad = &bad;
                    s.spawn(move || {
                        let c = if t == 0 { &own } else { cli };
                        for seq in 0..calls {
                            let a = load_key(p, t, seq);
                            match c.req(Cmd { op: ECHO, a, b: !a }) {
                                Ok(r) if r == echo(a) => {}
                                other => {
                                    *bad.lock().unwrap() =
                                        Some(format!("bad {p} {t} {seq}: {other:?}"));
                                    return;
                                }
                            }
                        }
                    });
                }
            });
            match bad.into_inner().unwrap() {
                Some(b) => say(&b),
                None => say(&format!("done {p} {}", threads * calls)),
            }
        }
        // Connect, then hold the connection until stdin closes.
        "client-idle" => {
            let _cli = Cli::connect(&name, DEADLINE).unwrap();
            say("connected");
            read_stdin_line();
        }
        // A held call and a held lend_mut of 1 MiB, from two threads, until killed.
        "client-hold-calls" => {
            let cli = Cli::connect(&name, DEADLINE).unwrap();
            thread::scope(|s| {
                s.spawn(|| cli.req(cmd(HOLD, 1)));
                s.spawn(|| {
                    let mut buf = ShmBuf::new(1 << 20).unwrap();
                    cli.lend_mut(cmd(LEND_HOLD, 2), &mut buf)
                });
                say("calling");
            });
        }
        other => panic!("unknown role {other}"),
    }
}

/// What the `server` role holds for later.
#[derive(Default)]
struct Held {
    calls: Mutex<Vec<(u64, ReplyContext<Cmd, Why>)>>,
    scalars: Mutex<Vec<ScalarCall>>,
    notifiers: Mutex<Vec<(u64, Notifier)>>,
    seen: Mutex<HashSet<u64>>,
    unstalled: Mutex<bool>,
    unstall: Condvar,
}

/// The `server` role: WORKERS workers (clones of one `Server`) answer the ops above; the main
/// thread obeys stdin, answering held calls from a thread other than the one that took them.
/// With BUSY_POLL set, the workers busy-poll for that many milliseconds.
fn serve(name: &str) {
    let config = match env_or(BUSY_POLL, 0) {
        0 => ServerConfig::new(),
        ms => ServerConfig::new().busy_poll(Duration::from_millis(ms)),
    };
    let server = Srv::bind(name, config).unwrap();
    let held = Arc::new(Held::default());
    for _ in 0..env_or(WORKERS, 2) {
        let server = server.clone();
        let held = held.clone();
        thread::spawn(move || loop {
            match server.wait() {
                Ok(incoming) => handle(incoming, &held),
                Err(e) => {
                    say(&format!("wait-error {e}"));
                    return;
                }
            }
        });
    }
    say(&format!("ready {}", std::process::id()));
    loop {
        let line = read_stdin_line();
        if line.is_empty() {
            std::process::exit(0);
        }
        obey(&line, &held);
    }
}

fn handle(incoming: Incoming<Cmd, Cmd, Why>, held: &Held) {
    match incoming {
        Incoming::Call(rq, mut ctx) => {
            let _ = match rq.op {
                ECHO => {
                    held.seen.lock().unwrap().insert(rq.a);
                    ctx.reply(echo(rq.a))
                }
                PID => {
                    let r = Cmd {
                        op: u64::from(ctx.is_one_way()),
                        a: u64::from(std::process::id()),
                        b: u64::from(ctx.client_pid()),
                    };
                    ctx.reply(r)
                }
                FAIL => ctx.fail(why(&format!("no {}", rq.a))),
                HOLD | LEND_HOLD => {
                    held.calls.lock().unwrap().push((rq.a, ctx));
                    let what = if rq.op == HOLD { "call" } else { "lend" };
                    say(&format!("held {what} {}", rq.a));
                    Ok(())
                }
                ONE_WAY => {
                    say(&format!("one-way {} {}", rq.a, ctx.is_one_way()));
                    let r = ctx.reply(rq);
                    say(&format!("one-way-reply {} {}", rq.a, outcome(&r)));
                    Ok(())
                }
                LEND_CHECK => {
                    let no_mut = ctx.lent_mut().is_none();
                    let (len, ok) = match ctx.lent() {
                        Some(b) => (b.len() as u64, mismatch(&b, rq.b).is_none()),
                        None => (0, false),
                    };
                    ctx.reply(Cmd {
                        op: u64::from(no_mut),
                        a: len,
                        b: u64::from(ok),
                    })
                }
                LEND_FILL => {
                    let len = match ctx.lent_mut() {
                        Some(mut b) => {
                            fill(&mut b, rq.b);
                            b.len() as u64
                        }
                        None => 0,
                    };
                    ctx.reply(Cmd {
                        op: LEND_FILL,
                        a: len,
                        b: 0,
                    })
                }
                STALL => {
                    say(&format!("stalled {}", rq.a));
                    let g = held.unstalled.lock().unwrap();
                    let (g, _) = held
                        .unstall
                        .wait_timeout_while(g, DEADLINE, |u| !*u)
                        .unwrap();
                    drop(g);
                    ctx.reply(echo(rq.a))
                }
                SEEN => {
                    let seen = held.seen.lock().unwrap().contains(&rq.a);
                    ctx.reply(Cmd {
                        op: SEEN,
                        a: rq.a,
                        b: u64::from(seen),
                    })
                }
                _ => ctx.fail(why("unknown op")),
            };
        }
        Incoming::Scalar(sc) => {
            match sc.opcode::<Sc>() {
                Ok(Sc::Plain) => {}
                Ok(Sc::Hold) => {
                    held.scalars.lock().unwrap().push(sc);
                    say("held scalar");
                    return;
                }
                Err(UnknownOpcode(op)) => {
                    say(&format!("unknown opcode {op}"));
                    let _ = sc.refuse();
                    return;
                }
            }
            let a = sc.args();
            say(&format!(
                "scalar {} {} {} {} {} {} from {}",
                sc.op(),
                a[0],
                a[1],
                a[2],
                a[3],
                sc.is_blocking(),
                sc.client_pid()
            ));
            if sc.is_blocking() {
                let _ = sc.reply(mix(a));
            }
        }
        Incoming::Subscribe(rq, notifier) => {
            held.notifiers.lock().unwrap().push((rq.a, notifier));
            say(&format!("subscribed {}", rq.a));
        }
    }
}

/// One stdin command of the `server` role; each ends with one line said.
fn obey(line: &str, held: &Held) {
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap();
    let arg: u64 = words.next().map_or(0, |w| w.parse().unwrap());
    let take = |a: u64| {
        let mut calls = held.calls.lock().unwrap();
        let i = calls
            .iter()
            .position(|(x, _)| *x == a)
            .expect("no such held call");
        calls.remove(i).1
    };
    match verb {
        // Bounded poll: does the held call see its caller's cancellation?
        "cancel-check" => {
            let end = Instant::now() + DEADLINE;
            loop {
                let canceled = held
                    .calls
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|(x, c)| *x == arg && c.is_canceled());
                if canceled {
                    say(&format!("canceled {arg}"));
                    return;
                }
                if Instant::now() > end {
                    say(&format!("not-canceled {arg}"));
                    return;
                }
                thread::sleep(Duration::from_millis(1));
            }
        }
        // Answer a held call (writing pattern(arg) into a lent buffer first).
        "reply" => {
            let mut ctx = take(arg);
            if let Some(mut b) = ctx.lent_mut() {
                fill(&mut b, arg);
            }
            let r = ctx.reply(echo(arg));
            say(&format!("replied {arg} {}", outcome(&r)));
        }
        "drop" => {
            drop(take(arg));
            say(&format!("dropped {arg}"));
        }
        // Write over a held lend after its caller gave up on it.
        "scribble" => {
            let mut calls = held.calls.lock().unwrap();
            let ctx = &mut calls.iter_mut().find(|(x, _)| *x == arg).unwrap().1;
            match ctx.lent_mut() {
                Some(mut b) => {
                    b.fill(0xEE);
                    say(&format!("scribbled {arg}"));
                }
                None => say(&format!("no-lend {arg}")),
            }
        }
        "scalar-reply" => {
            let scalars: Vec<ScalarCall> = held.scalars.lock().unwrap().drain(..).collect();
            let mut outcomes = Vec::new();
            for sc in scalars {
                let a = sc.args();
                outcomes.push(outcome(&sc.reply(mix(a))));
            }
            say(&format!("scalar-replied {}", outcomes.join(" ")));
        }
        "scalar-drop" => {
            held.scalars.lock().unwrap().clear();
            say("scalar-dropped");
        }
        // Push arg values to the newest subscriber; a full queue is backpressure.
        "push" => {
            let notifiers = held.notifiers.lock().unwrap();
            let n = &notifiers.last().expect("no subscriber").1;
            let end = Instant::now() + DEADLINE;
            for i in 0..arg {
                loop {
                    match n.push(PUSH_BASE + i) {
                        Ok(()) => break,
                        Err(PushError::Full) if Instant::now() < end => {
                            thread::sleep(Duration::from_millis(1));
                        }
                        Err(e) => {
                            say(&format!("push-error {i} {}", kind(&e)));
                            return;
                        }
                    }
                }
            }
            say(&format!("pushed {arg}"));
        }
        // Push to the newest subscriber until it is seen gone (bounded).
        "push-until-unsubscribed" => {
            let (_, n) = held.notifiers.lock().unwrap().pop().expect("no subscriber");
            let end = Instant::now() + DEADLINE;
            loop {
                match n.push(0u64) {
                    Err(PushError::Unsubscribed) => {
                        say(&format!("unsubscribed {}", n.is_subscribed()));
                        return;
                    }
                    Ok(()) | Err(PushError::Full) if Instant::now() < end => {
                        thread::sleep(Duration::from_millis(1));
                    }
                    Ok(()) | Err(PushError::Full) => {
                        say("still-subscribed");
                        return;
                    }
                    Err(e) => {
                        say(&format!("push-error {}", kind(&e)));
                        return;
                    }
                }
            }
        }
        "drop-notifiers" => {
            held.notifiers.lock().unwrap().clear();
            say("dropped-notifiers");
        }
        "unstall" => {
            *held.unstalled.lock().unwrap() = true;
            held.unstall.notify_all();
            say("unstalled");
        }
        other => panic!("unknown command {other}"),
    }
}

/// The `server-batch` role: 4 slots, one worker that takes 4 calls before it echoes them
/// all, until stdin closes.
fn serve_batches(name: &str) {
    let server = Srv::bind(name, ServerConfig::new().slots(4)).unwrap();
    thread::spawn(move || loop {
        let mut held = Vec::new();
        while held.len() < 4 {
            match server.wait() {
                Ok(Incoming::Call(rq, ctx)) => held.push((rq, ctx)),
                Ok(_) => {}
                Err(e) => {
                    say(&format!("wait-error {e}"));
                    return;
                }
            }
        }
        for (rq, ctx) in held {
            let _ = ctx.reply(echo(rq.a));
        }
    });
    say(&format!("ready {}", std::process::id()));
    read_stdin_line();
}

/// The `server-bytes` role: `[u8; 32]` in, its hex as a `flat::String<64>` out; a request
/// starting with 0 fails with 42.
fn serve_bytes(name: &str) {
    let server =
        Server::<[u8; 32], flat::String<64>, u32>::bind(name, ServerConfig::new()).unwrap();
    say("ready");
    loop {
        match server.wait() {
            Ok(Incoming::Call(rq, ctx)) => {
                let _ = if rq[0] == 0 {
                    ctx.fail(42)
                } else {
                    let mut hex = flat::String::<64>::default();
                    for b in rq {
                        std::fmt::Write::write_fmt(&mut hex, format_args!("{b:02x}")).unwrap();
                    }
                    ctx.reply(hex)
                };
            }
            Ok(_) => {}
            Err(e) => {
                say(&format!("wait-error {e}"));
                return;
            }
        }
    }
}

/// With `Postcard`: a name and numbers in, `"<name><n>"` for each number out, in a
/// `Vec<String>`; no numbers fails with "empty".
#[cfg(feature = "serde")]
type Greet = courier_shm::Postcard<(String, Vec<u32>)>;
#[cfg(feature = "serde")]
type Greetings = courier_shm::Postcard<Vec<String>>;
#[cfg(feature = "serde")]
type Refusal = courier_shm::Postcard<String>;

/// The `server-postcard` role.
#[cfg(feature = "serde")]
fn serve_postcard(name: &str) {
    use courier_shm::Postcard;
    let server = Server::<Greet, Greetings, Refusal>::bind(name, ServerConfig::new()).unwrap();
    say("ready");
    loop {
        match server.wait() {
            Ok(Incoming::Call(Postcard((who, ns)), ctx)) => {
                let _ = if ns.is_empty() {
                    ctx.fail(Postcard("empty".into()))
                } else {
                    ctx.reply(Postcard(ns.iter().map(|n| format!("{who}{n}")).collect()))
                };
            }
            Ok(_) => {}
            Err(e) => {
                say(&format!("wait-error {e}"));
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The test side.

/// A `server` peer with `workers` workers, ready, and a client of it in this process.
fn server_peer(dir: &TestDir, name: &str, workers: u64) -> (Peer, Cli) {
    let peer = spawn_with("server", dir, name, None, &[(WORKERS, workers.to_string())]);
    assert_eq!(peer.line(), format!("ready {}", peer.pid()));
    let cli = Cli::connect(name, DEADLINE).unwrap();
    assert_eq!(cli.server_pid(), peer.pid() as u32);
    (peer, cli)
}

/// Tells the server peer `cmd` and checks its answer.
fn order(peer: &mut Peer, cmd: &str, answer: &str) {
    peer.tell(cmd);
    assert_eq!(peer.line(), answer, "after {cmd:?}");
}

/// The next `n` lines of a peer, in whatever order they came.
fn lines(peer: &Peer, n: usize) -> BTreeSet<String> {
    (0..n).map(|_| peer.line()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The blocking calls of the test process with the usual deadline, so that a call that is
/// never answered fails its test instead of hanging the run. (The plain forms are used in
/// background threads, whose results are awaited with a deadline, and in the peers.)
trait Bounded<Rq, Rp, E> {
    fn req_d(&self, rq: Rq) -> Result<Rp, Error<E>>;
    fn blocking_scalar_d(&self, op: u32, args: [u64; 4]) -> Result<[u64; 2], Error<E>>;
}

impl<Rq: Wire, Rp: Wire, E: Wire> Bounded<Rq, Rp, E> for Client<Rq, Rp, E> {
    fn req_d(&self, rq: Rq) -> Result<Rp, Error<E>> {
        self.req_timeout(rq, DEADLINE)
    }
    fn blocking_scalar_d(&self, op: u32, args: [u64; 4]) -> Result<[u64; 2], Error<E>> {
        self.blocking_scalar_timeout(op, args, DEADLINE)
    }
}

/// Runs `f` on another thread and returns its result, or fails after the deadline (an async
/// call run by an executor has no timeout of its own).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    result_of(&background(f), what)
}

/// Sets its flag when dropped, also by a panic: stops the workers of a scope, so that a
/// failing assertion ends the test instead of leaving the scope waiting for them.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `f` on its own thread; the result comes back through the receiver.
fn background<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> mpsc::Receiver<T> {
    courier_testkit::background(f)
}

fn result_of<T>(rx: &mpsc::Receiver<T>, what: &str) -> T {
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("{what}: no result before the deadline"))
}

#[test]
fn connect_waits_for_a_late_name_and_a_missing_one_times_out() {
    let _g = serial();
    let dir = TestDir::new("connect");
    let name = unique("connect");

    // Nobody serves it: a bounded wait, then Timeout.
    let start = Instant::now();
    let r = Cli::connect(&unique("missing"), Duration::from_millis(300));
    let took = start.elapsed();
    assert!(matches!(r, Err(ShmError::Timeout)), "{:?}", r.err());
    assert!(took >= Duration::from_millis(300), "gave up after {took:?}");
    assert!(took < DEADLINE, "took {took:?}");

    // A client process is waiting for the name (asleep in connect) before it is bound.
    let client = spawn("client-late", &dir, &name, None);
    assert_eq!(client.line(), "connecting");
    wait_until_asleep(client.child.id());
    let server = Srv::bind(&name, ServerConfig::new()).unwrap();
    assert_eq!(server.name(), name);
    match server.wait_timeout(DEADLINE).unwrap() {
        Incoming::Call(rq, ctx) => {
            assert_eq!(rq, cmd(PID, 0));
            assert_eq!(ctx.client_pid(), client.child.id());
            ctx.reply(cmd(PID, u64::from(std::process::id()))).unwrap();
        }
        _ => panic!("expected a call"),
    }
    assert_eq!(client.line(), format!("served {}", std::process::id()));
}

#[test]
fn client_processes_with_threads_and_a_server_with_workers() {
    let _g = serial();
    let dir = TestDir::new("many");
    let name = unique("many");
    const W: usize = 3;
    let server = Srv::bind(&name, ServerConfig::new()).unwrap();
    let clients: Vec<Peer> = (0..3)
        .map(|p| {
            spawn_with(
                "client-threads",
                &dir,
                &name,
                None,
                &[
                    (INDEX, p.to_string()),
                    (THREADS, "4".into()),
                    (CALLS, "50".into()),
                ],
            )
        })
        .collect();
    let arrived = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let pids = Mutex::new(HashSet::new());
    let per_worker: Vec<AtomicU64> = (0..W).map(|_| AtomicU64::new(0)).collect();
    thread::scope(|s| {
        for w in 0..W {
            let server = server.clone();
            let (arrived, stop, pids, per_worker) = (&arrived, &stop, &pids, &per_worker);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (rq, ctx) = match server.wait_timeout(Duration::from_millis(50)) {
                        Ok(Incoming::Call(rq, ctx)) => (rq, ctx),
                        Ok(_) => panic!("expected a call"),
                        Err(Error::Timeout) => continue,
                        Err(e) => panic!("wait: {e}"),
                    };
                    // Rendezvous: every worker holds its first call until all do, so they
                    // are shown to serve at the same time.
                    if per_worker[w].fetch_add(1, Ordering::Relaxed) == 0 {
                        arrived.fetch_add(1, Ordering::SeqCst);
                        wait_for("every worker holding a call at once", || {
                            arrived.load(Ordering::SeqCst) == W
                        });
                    }
                    pids.lock().unwrap().insert(ctx.client_pid());
                    assert_eq!(rq.b, !rq.a);
                    ctx.reply(echo(rq.a)).unwrap();
                }
            });
        }
        let _stop = StopOnDrop(&stop);
        for c in &clients {
            assert_eq!(c.line(), "connected");
        }
        for (p, c) in clients.iter().enumerate() {
            let said = c.line_within(DEADLINE);
            assert_eq!(
                said,
                Some(format!("done {p} 200")),
                "client {p}; server: {:?}",
                server.stats()
            );
        }
    });
    let expected: HashSet<u32> = clients.iter().map(|c| c.child.id()).collect();
    assert_eq!(*pids.lock().unwrap(), expected);
    let total: u64 = per_worker.iter().map(|n| n.load(Ordering::Relaxed)).sum();
    assert_eq!(total, 600);
    assert_eq!(server.stats().served, 600);
}

#[test]
fn req_fail_one_way_and_req_timeout() {
    let _g = serial();
    let dir = TestDir::new("req");
    let name = unique("req");
    let (mut srv, cli) = server_peer(&dir, &name, 2);

    // req, full 64-bit values through a derived struct.
    for a in [0, 1, u64::MAX, 0x8000_0000_0000_0000, 0xDEAD_BEEF_0BAD_F00D] {
        assert_eq!(cli.req_d(Cmd { op: ECHO, a, b: 7 }), Ok(echo(a)));
    }
    let who = cli.req_d(cmd(PID, 0)).unwrap();
    assert_eq!(who.op, 0, "a req is not one-way");
    assert_eq!(who.a, u64::from(cli.server_pid()));
    assert_eq!(who.b, u64::from(std::process::id()));

    // fail → Error::App, with the flat string intact.
    assert_eq!(cli.req_d(cmd(FAIL, 41)), Err(Error::App(why("no 41"))));

    // One-way: the server sees is_one_way, and its reply is discarded quietly.
    cli.send(cmd(ONE_WAY, 40)).unwrap();
    assert_eq!(srv.line(), "one-way 40 true");
    assert_eq!(srv.line(), "one-way-reply 40 ok");

    // req_timeout on a held call: Timeout, the server sees the cancellation, and its late
    // reply goes nowhere.
    assert_eq!(
        cli.req_timeout(cmd(ECHO, 5), Duration::from_secs(5)),
        Ok(echo(5))
    );
    let start = Instant::now();
    assert_eq!(
        cli.req_timeout(cmd(HOLD, 20), Duration::from_millis(200)),
        Err(Error::Timeout)
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < DEADLINE,
        "{took:?}"
    );
    assert_eq!(srv.line(), "held call 20");
    order(&mut srv, "cancel-check 20", "canceled 20");
    order(&mut srv, "reply 20", "replied 20 OriginDisappeared");
    // The client is still fine.
    assert_eq!(cli.req_d(cmd(ECHO, 21)), Ok(echo(21)));
    assert!(!cli.is_server_gone());
}

#[test]
fn areq_under_three_executors_and_dropping_it_cancels() {
    let _g = serial();
    let dir = TestDir::new("areq");
    let name = unique("areq");
    let (mut srv, cli) = server_peer(&dir, &name, 2);

    let c = cli.clone();
    let r = within("areq under futures' block_on", move || {
        futures::executor::block_on(c.areq(cmd(ECHO, 30)))
    });
    assert_eq!(r, Ok(echo(30)));
    let c = cli.clone();
    let r = within("areq under pollster", move || {
        pollster::block_on(c.areq(cmd(ECHO, 31)))
    });
    assert_eq!(r, Ok(echo(31)));
    let c = cli.clone();
    let r = within("a failing areq", move || {
        futures::executor::block_on(c.areq(cmd(FAIL, 32)))
    });
    assert_eq!(r, Err(Error::App(why("no 32"))));

    // tokio, one thread: many calls in flight at once from one task.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = rt
        .block_on(async {
            let all = futures::future::join_all((100..116).map(|a| cli.areq(cmd(ECHO, a))));
            tokio::time::timeout(DEADLINE, all).await
        })
        .expect("16 areqs on a current-thread runtime: not done before the deadline");
    assert_eq!(got, (100..116).map(|a| Ok(echo(a))).collect::<Vec<_>>());

    // tokio, several threads: spawned tasks with clones of the client.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(async {
        let tasks: Vec<_> = (200..232)
            .map(|a| {
                let cli = cli.clone();
                tokio::spawn(async move {
                    tokio::time::timeout(DEADLINE, cli.areq(cmd(ECHO, a)))
                        .await
                        .expect("an areq on a multi-thread runtime: not done before the deadline")
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    assert_eq!(got, (200..232).map(|a| Ok(echo(a))).collect::<Vec<_>>());

    // Dropping an areq future cancels the call: the server sees it.
    let r = rt.block_on(async {
        tokio::time::timeout(Duration::from_millis(200), cli.areq(cmd(HOLD, 33))).await
    });
    assert!(r.is_err(), "a held areq finished: {r:?}");
    assert_eq!(srv.line(), "held call 33");
    order(&mut srv, "cancel-check 33", "canceled 33");
    order(&mut srv, "reply 33", "replied 33 OriginDisappeared");
}

#[test]
fn areq_300_on_one_thread_against_4_slots_answered_in_batches() {
    // Hardening finding 5: the futures that free the slots need the very thread that waits
    // for one, so waiting for a slot must not block it.
    let _g = serial();
    let dir = TestDir::new("areq-batches");
    let name = unique("areq-batches");
    let srv = spawn("server-batch", &dir, &name, None);
    assert_eq!(srv.line(), format!("ready {}", srv.pid()));
    let cli = Cli::connect(&name, DEADLINE).unwrap();
    let got = within("300 areqs joined on one thread", move || {
        futures::executor::block_on(futures::future::join_all(
            (0..300).map(|a| cli.areq(cmd(ECHO, a))),
        ))
    });
    assert_eq!(got, (0..300).map(|a| Ok(echo(a))).collect::<Vec<_>>());
}

#[test]
fn req_async_wait_and_every_cancel_outcome() {
    let _g = serial();
    let dir = TestDir::new("reqasync");
    let name = unique("reqasync");
    // One worker, so a stalled call keeps the next one queued.
    let (mut srv, cli) = server_peer(&dir, &name, 1);

    // wait, wait_async.
    let w = cli.req_async(cmd(ECHO, 1)).unwrap();
    assert_eq!(within("WaitReply::wait", move || w.wait()), Ok(echo(1)));
    let w = cli.req_async(cmd(ECHO, 2)).unwrap();
    let r = within("wait_async", move || {
        futures::executor::block_on(w.wait_async())
    });
    assert_eq!(r, Ok(echo(2)));

    // Completed: the reply is there before the cancel.
    let w = cli.req_async(cmd(ECHO, 10)).unwrap();
    wait_for("the reply to be ready", || w.is_ready());
    match w.cancel() {
        CancelOutcome::Completed(r) => assert_eq!(r, Ok(echo(10))),
        other => panic!("expected Completed, got {}", cancel_kind(&other)),
    }

    // Signaled: the server holds it and sees the cancellation.
    let w = cli.req_async(cmd(HOLD, 11)).unwrap();
    assert_eq!(srv.line(), "held call 11");
    assert!(!w.is_ready());
    match w.cancel() {
        CancelOutcome::Signaled => {}
        other => panic!("expected Signaled, got {}", cancel_kind(&other)),
    }
    order(&mut srv, "cancel-check 11", "canceled 11");
    order(&mut srv, "reply 11", "replied 11 OriginDisappeared");

    // Withdrawn: the only worker is stalled, the request still queued; the server never
    // sees it, while one queued beside it is served once the worker is free.
    let stalled = {
        let cli = cli.clone();
        background(move || cli.req_d(cmd(STALL, 12)))
    };
    assert_eq!(srv.line(), "stalled 12");
    let withdrawn = cli.req_async(cmd(ECHO, 13)).unwrap();
    let kept = cli.req_async(cmd(ECHO, 14)).unwrap();
    match withdrawn.cancel() {
        // The request comes back, as on courier::local.
        CancelOutcome::Withdrawn(rq) => assert_eq!(rq, cmd(ECHO, 13)),
        other => panic!("expected Withdrawn, got {}", cancel_kind(&other)),
    }
    order(&mut srv, "unstall", "unstalled");
    assert_eq!(result_of(&stalled, "the stalled call"), Ok(echo(12)));
    assert_eq!(kept.wait_timeout(DEADLINE), Ok(echo(14)));
    assert_eq!(cli.req_d(cmd(SEEN, 14)).unwrap().b, 1);
    assert_eq!(
        cli.req_d(cmd(SEEN, 13)).unwrap().b,
        0,
        "a withdrawn call was served"
    );

    // wait_timeout on a held call: Timeout, and the server is told.
    let w = cli.req_async(cmd(HOLD, 15)).unwrap();
    assert_eq!(
        w.wait_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    );
    assert_eq!(srv.line(), "held call 15");
    order(&mut srv, "cancel-check 15", "canceled 15");
    order(&mut srv, "reply 15", "replied 15 OriginDisappeared");

    // Dropping a WaitReply the server has taken cancels it: the server sees that.
    let w = cli.req_async(cmd(HOLD, 16)).unwrap();
    assert_eq!(srv.line(), "held call 16");
    drop(w);
    order(&mut srv, "cancel-check 16", "canceled 16");
    order(&mut srv, "drop 16", "dropped 16");
}

#[test]
fn flat_arrays_and_strings_and_mismatched_types_are_refused() {
    let _g = serial();
    let dir = TestDir::new("flat");
    let name = unique("flat");
    let srv = spawn("server-bytes", &dir, &name, None);
    assert_eq!(srv.line(), "ready");
    let cli = Client::<[u8; 32], flat::String<64>, u32>::connect(&name, DEADLINE).unwrap();
    let mut rq = [0u8; 32];
    for (i, b) in rq.iter_mut().enumerate() {
        *b = 0xA0 + i as u8;
    }
    let hex: String = rq.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(cli.req_d(rq).unwrap().as_str(), hex);
    assert_eq!(cli.req_d([0; 32]), Err(Error::App(42)));

    // A client whose reply type differs is refused: at connect, or call by call.
    match Client::<[u8; 32], u64, u32>::connect(&name, DEADLINE) {
        Err(e) => println!("a mismatched client is refused at connect: {e}"),
        Ok(bad) => {
            let r = bad.req([1; 32]);
            assert_eq!(outcome(&r), "Protocol", "{r:?}");
        }
    }
    // And the good client is unaffected.
    assert_eq!(cli.req_d(rq).unwrap().as_str(), hex);
}

/// Needs `--features serde` (`cargo test -p courier-shm --features serde --test rpc`).
#[cfg(feature = "serde")]
#[test]
fn postcard_payloads_across_processes() {
    use courier_shm::Postcard;
    let _g = serial();
    let dir = TestDir::new("postcard");
    let name = unique("postcard");
    let srv = spawn("server-postcard", &dir, &name, None);
    assert_eq!(srv.line(), "ready");
    let cli = Client::<Greet, Greetings, Refusal>::connect(&name, DEADLINE).unwrap();
    assert_eq!(
        cli.req_timeout(Postcard(("n".into(), vec![1, u32::MAX])), DEADLINE),
        Ok(Postcard(vec!["n1".to_owned(), format!("n{}", u32::MAX)]))
    );
    // Larger than a 4 KiB slot: refused before it is sent, and the client goes on.
    let big = Postcard(("x".repeat(10_000), vec![1]));
    assert_eq!(cli.req_timeout(big, DEADLINE), Err(Error::TooLarge));
    assert_eq!(
        cli.req_timeout(Postcard(("y".into(), vec![2])), DEADLINE),
        Ok(Postcard(vec!["y2".to_owned()]))
    );
    // An application error whose type shares the reply's signature (every Postcard does).
    assert_eq!(
        cli.req_timeout(Postcard(("n".into(), vec![])), DEADLINE),
        Err(Error::App(Postcard("empty".to_owned())))
    );
}

#[test]
fn lend_and_lend_mut_of_4k_1m_64m() {
    let _g = serial();
    let dir = TestDir::new("lend");
    let name = unique("lend");
    let (_srv, cli) = server_peer(&dir, &name, 2);
    for (i, size) in [4096usize, 1 << 20, 64 << 20].into_iter().enumerate() {
        let mut buf = ShmBuf::new(size).unwrap();
        assert_eq!(buf.len(), size);
        assert!(
            buf.view().to_vec().iter().all(|&b| b == 0),
            "a new ShmBuf is not zeroed"
        );
        let seed = 0x1111_0000 + i as u64;
        fill(&mut buf.view_mut(), seed);

        // lend: the server reads the caller's bytes in place, and cannot write them.
        let c = cli.clone();
        let (r, buf_back, lend_took) = within("lend", move || {
            let start = Instant::now();
            let rq = Cmd {
                op: LEND_CHECK,
                a: size as u64,
                b: seed,
            };
            let r = c.lend(rq, &buf);
            (r, buf, start.elapsed())
        });
        let mut buf = buf_back;
        let r = r.unwrap();
        assert_eq!(r.a, size as u64, "the server saw a lend of {} bytes", r.a);
        assert_eq!(r.b, 1, "the server read other bytes than the caller wrote");
        assert_eq!(r.op, 1, "a read-only lend offered lent_mut to the server");
        assert_eq!(mismatch(&buf.view(), seed), None);

        // lend_mut: the server's writes are there on return.
        let seed2 = 0x2222_0000 + i as u64;
        let c = cli.clone();
        let (r, buf, lend_mut_took) = within("lend_mut", move || {
            let start = Instant::now();
            let rq = Cmd {
                op: LEND_FILL,
                a: 0,
                b: seed2,
            };
            let r = c.lend_mut(rq, &mut buf);
            (r, buf, start.elapsed())
        });
        let r = r.unwrap();
        assert_eq!(
            r,
            Cmd {
                op: LEND_FILL,
                a: size as u64,
                b: 0
            }
        );
        assert_eq!(
            mismatch(&buf.view(), seed2),
            None,
            "the server's writes are not seen"
        );
        println!("{size} bytes: lend {lend_took:?}, lend_mut {lend_mut_took:?} (debug build)");
    }
}

#[test]
fn lend_mut_timeout_while_held_leaves_the_buffer_usable() {
    let _g = serial();
    let dir = TestDir::new("lendto");
    let name = unique("lendto");
    let (mut srv, cli) = server_peer(&dir, &name, 2);
    let mut buf = ShmBuf::new(1 << 20).unwrap();
    fill(&mut buf.view_mut(), 1);
    assert_eq!(
        cli.lend_mut_timeout(cmd(LEND_HOLD, 50), &mut buf, Duration::from_millis(200)),
        Err(Error::Timeout)
    );
    assert_eq!(srv.line(), "held lend 50");
    order(&mut srv, "cancel-check 50", "canceled 50");

    // The buffer is the caller's again: readable, writable, lendable.
    assert_eq!(
        mismatch(&buf.view(), 1),
        None,
        "the timed-out lend changed the buffer"
    );
    fill(&mut buf.view_mut(), 2);
    assert_eq!(mismatch(&buf.view(), 2), None);
    let r = cli
        .lend_timeout(
            Cmd {
                op: LEND_CHECK,
                a: 0,
                b: 2,
            },
            &mut buf,
            DEADLINE,
        )
        .unwrap();
    assert_eq!((r.a, r.b), (1 << 20, 1));
    let r = cli
        .lend_mut_timeout(
            Cmd {
                op: LEND_FILL,
                a: 0,
                b: 3,
            },
            &mut buf,
            DEADLINE,
        )
        .unwrap();
    assert_eq!(r.a, 1 << 20);
    assert_eq!(mismatch(&buf.view(), 3), None);

    // The server still holding the abandoned lend cannot write into the caller's buffer now.
    srv.tell("scribble 50");
    let said = srv.line();
    assert!(said == "scribbled 50" || said == "no-lend 50", "{said}");
    assert_eq!(
        mismatch(&buf.view(), 3),
        None,
        "the server wrote into the caller's buffer after lend_mut_timeout returned ({said})"
    );
    order(&mut srv, "reply 50", "replied 50 OriginDisappeared");
    assert_eq!(mismatch(&buf.view(), 3), None);
}

#[test]
fn scalars_one_way_and_blocking_with_full_words() {
    let _g = serial();
    let dir = TestDir::new("scalar");
    let name = unique("scalar");
    let (mut srv, cli) = server_peer(&dir, &name, 2);
    let me = std::process::id();
    let w = WORDS;
    let line = |blocking: bool| {
        format!(
            "scalar {SC_PLAIN} {} {} {} {} {blocking} from {me}",
            w[0], w[1], w[2], w[3]
        )
    };

    cli.scalar(Sc::Plain.into(), WORDS).unwrap();
    assert_eq!(srv.line(), line(false));
    assert_eq!(cli.blocking_scalar_d(SC_PLAIN, WORDS), Ok(mix(WORDS)));
    assert_eq!(srv.line(), line(true));
    assert_eq!(mix(WORDS), [0xFEDC_BA98_7654_3210, 0x5EAD_BEEF_CAFE_BABF]);
    let rev = [w[3], w[2], w[1], w[0]];
    assert_eq!(
        cli.blocking_scalar_timeout(SC_PLAIN, rev, DEADLINE),
        Ok(mix(rev))
    );
    srv.line();

    // Held: the timeout form gives up, then the server's late reply is ignored.
    assert_eq!(
        cli.blocking_scalar_timeout(Sc::Hold.into(), WORDS, Duration::from_millis(200)),
        Err(Error::Timeout)
    );
    assert_eq!(srv.line(), "held scalar");
    srv.tell("scalar-reply");
    let said = srv.line();
    assert!(said.starts_with("scalar-replied "), "{said}");
    // The connection is still good.
    assert_eq!(cli.blocking_scalar_d(SC_PLAIN, WORDS), Ok(mix(WORDS)));
    assert_eq!(srv.line(), line(true));

    // An opcode the server's enum does not have reaches it as a value it refuses: the
    // blocking caller gets Protocol, a one-way one nothing; the connection stays good.
    assert_eq!(
        cli.blocking_scalar_d(SC_UNKNOWN, WORDS),
        Err(Error::Protocol)
    );
    assert_eq!(srv.line(), format!("unknown opcode {SC_UNKNOWN}"));
    cli.scalar(SC_UNKNOWN, WORDS).unwrap();
    assert_eq!(srv.line(), format!("unknown opcode {SC_UNKNOWN}"));
    assert_eq!(cli.blocking_scalar_d(SC_PLAIN, WORDS), Ok(mix(WORDS)));
    assert_eq!(srv.line(), line(true));
}

/// Three kinds of deferred call, held by the server while it serves others, then answered
/// (`answer`) or dropped from its control thread.
fn deferred_round(srv: &mut Peer, cli: &Cli, base: u64, answer: bool) {
    let call = {
        let cli = cli.clone();
        background(move || cli.req(cmd(HOLD, base)))
    };
    let scalar = {
        let cli = cli.clone();
        background(move || cli.blocking_scalar(Sc::Hold.into(), WORDS))
    };
    let lend = {
        let cli = cli.clone();
        background(move || {
            let mut buf = ShmBuf::new(64 << 10).unwrap();
            fill(&mut buf.view_mut(), 9);
            let r = cli.lend_mut(cmd(LEND_HOLD, base + 2), &mut buf);
            (r, buf)
        })
    };
    assert_eq!(
        lines(srv, 3),
        set(&[
            &format!("held call {base}"),
            "held scalar",
            &format!("held lend {}", base + 2)
        ])
    );
    // Other calls are served meanwhile, by the same (single) worker.
    assert_eq!(cli.req_d(cmd(ECHO, base + 3)), Ok(echo(base + 3)));
    assert_eq!(cli.blocking_scalar_d(SC_PLAIN, WORDS), Ok(mix(WORDS)));
    srv.line();

    if answer {
        order(srv, &format!("reply {base}"), &format!("replied {base} ok"));
        order(srv, "scalar-reply", "scalar-replied ok");
        order(
            srv,
            &format!("reply {}", base + 2),
            &format!("replied {} ok", base + 2),
        );
        assert_eq!(result_of(&call, "deferred call"), Ok(echo(base)));
        assert_eq!(result_of(&scalar, "deferred scalar"), Ok(mix(WORDS)));
        let (r, buf) = result_of(&lend, "deferred lend");
        assert_eq!(r, Ok(echo(base + 2)));
        assert_eq!(
            mismatch(&buf.view(), base + 2),
            None,
            "the deferred lend's writes"
        );
    } else {
        order(srv, &format!("drop {base}"), &format!("dropped {base}"));
        order(srv, "scalar-drop", "scalar-dropped");
        order(
            srv,
            &format!("drop {}", base + 2),
            &format!("dropped {}", base + 2),
        );
        assert_eq!(result_of(&call, "dropped call"), Err(Error::NoReply));
        assert_eq!(result_of(&scalar, "dropped scalar"), Err(Error::NoReply));
        let (r, mut buf) = result_of(&lend, "dropped lend");
        assert_eq!(r, Err(Error::NoReply));
        // Its buffer is usable afterwards.
        fill(&mut buf.view_mut(), 5);
        assert_eq!(mismatch(&buf.view(), 5), None);
    }
}

#[test]
fn deferred_replies_from_another_thread_and_dropped_ones_give_no_reply() {
    let _g = serial();
    let dir = TestDir::new("defer");
    let name = unique("defer");
    let (mut srv, cli) = server_peer(&dir, &name, 1);
    deferred_round(&mut srv, &cli, 60, true);
    deferred_round(&mut srv, &cli, 70, false);
}

#[test]
fn push_notifications_in_order_and_the_ends_of_a_subscription() {
    let _g = serial();
    let dir = TestDir::new("push");
    let name = unique("push");
    let (mut srv, cli) = server_peer(&dir, &name, 2);

    let sub = cli.subscribe(cmd(0, 80)).unwrap();
    assert_eq!(srv.line(), "subscribed 80");
    assert_eq!(sub.try_recv::<u64>(), Ok(None));

    // Blocking, in order (more than the push queue holds: the server waits on Full).
    srv.tell("push 200");
    for i in 0..200 {
        assert_eq!(sub.recv_timeout::<u64>(DEADLINE), Ok(PUSH_BASE + i));
    }
    assert_eq!(srv.line(), "pushed 200");
    // Async, in order, under two executors.
    srv.tell("push 50");
    let (got, sub) = within("50 recv_async under futures' block_on", move || {
        let got: Vec<_> = futures::executor::block_on(async {
            let mut got = Vec::new();
            for _ in 0..50 {
                got.push(sub.recv_async::<u64>().await);
            }
            got
        });
        (got, sub)
    });
    assert_eq!(got, (0..50).map(|i| Ok(PUSH_BASE + i)).collect::<Vec<_>>());
    assert_eq!(srv.line(), "pushed 50");
    srv.tell("push 20");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for i in 0..20 {
            let got = tokio::time::timeout(DEADLINE, sub.recv_async::<u64>()).await;
            assert_eq!(got, Ok(Ok(PUSH_BASE + i)), "tokio recv_async {i}");
        }
    });
    assert_eq!(srv.line(), "pushed 20");
    assert_eq!(sub.try_recv::<u64>(), Ok(None));

    // Dropping the Subscription: the server's push fails with Unsubscribed.
    drop(sub);
    order(&mut srv, "push-until-unsubscribed", "unsubscribed false");

    // Dropping the Notifier ends the subscriber's recv: NoReply (the server is still there).
    let sub = cli.subscribe(cmd(0, 81)).unwrap();
    assert_eq!(srv.line(), "subscribed 81");
    let waiting = background(move || sub.recv_timeout::<u64>(DEADLINE));
    order(&mut srv, "drop-notifiers", "dropped-notifiers");
    assert_eq!(
        result_of(&waiting, "recv after the notifier was dropped"),
        Err(Error::NoReply)
    );
    // The client still works.
    assert_eq!(cli.req_d(cmd(ECHO, 82)), Ok(echo(82)));
}

#[test]
fn sigkill_of_the_server_fails_every_pending_call_and_a_new_server_takes_over() {
    let _g = serial();
    let dir = TestDir::new("killsrv");
    let name = unique("killsrv");
    let (mut srv, cli) = server_peer(&dir, &name, 2);

    let req = {
        let cli = cli.clone();
        background(move || outcome(&cli.req(cmd(HOLD, 1))))
    };
    let areq = {
        let cli = cli.clone();
        background(move || outcome(&futures::executor::block_on(cli.areq(cmd(HOLD, 2)))))
    };
    let scalar = {
        let cli = cli.clone();
        background(move || outcome(&cli.blocking_scalar(Sc::Hold.into(), WORDS)))
    };
    let lend = {
        let cli = cli.clone();
        background(move || {
            let mut buf = ShmBuf::new(1 << 20).unwrap();
            fill(&mut buf.view_mut(), 4);
            let r = outcome(&cli.lend_mut(cmd(LEND_HOLD, 4), &mut buf));
            // The buffer is usable after the server's death.
            fill(&mut buf.view_mut(), 5);
            (r, mismatch(&buf.view(), 5))
        })
    };
    let sub = cli.subscribe(cmd(0, 5)).unwrap();
    let recv = background(move || outcome(&sub.recv::<u64>()));
    assert_eq!(
        lines(&srv, 5),
        set(&[
            "held call 1",
            "held call 2",
            "held scalar",
            "held lend 4",
            "subscribed 5"
        ])
    );

    srv.kill();
    let killed = Instant::now();
    assert_eq!(result_of(&req, "req"), "ServerDisappeared");
    assert_eq!(result_of(&areq, "areq"), "ServerDisappeared");
    assert_eq!(result_of(&scalar, "blocking_scalar"), "ServerDisappeared");
    assert_eq!(
        result_of(&lend, "lend_mut"),
        ("ServerDisappeared".to_owned(), None)
    );
    assert_eq!(result_of(&recv, "subscription recv"), "ServerDisappeared");
    println!(
        "every pending call failed {:?} after the kill",
        killed.elapsed()
    );
    assert!(cli.is_server_gone());
    assert_eq!(cli.req_d(cmd(ECHO, 6)), Err(Error::ServerDisappeared));

    // A new server binds the name; a reconnecting client is served by it.
    let (_srv2, cli2) = server_peer(&dir, &name, 2);
    assert_eq!(cli2.req_d(cmd(ECHO, 7)), Ok(echo(7)));
    let who = cli2.req_d(cmd(PID, 0)).unwrap();
    assert_eq!(who.a, u64::from(cli2.server_pid()));
    assert_ne!(cli2.server_pid(), srv.pid() as u32);
}

/// Both sides busy-poll, the client for an hour per call: calls are answered, and a call
/// spinning for its answer when the server is killed fails at once (the spin looks at the
/// server's death), as does one made afterwards.
#[test]
fn a_busy_polling_caller_is_answered_and_sees_the_server_die_while_it_spins() {
    let _g = serial();
    let dir = TestDir::new("busypoll");
    let name = unique("busypoll");
    let env = [(WORKERS, "1".to_owned()), (BUSY_POLL, "1000".to_owned())];
    let mut srv = spawn_with("server", &dir, &name, None, &env);
    assert_eq!(srv.line(), format!("ready {}", srv.pid()));
    let config = ConnectConfig::new().busy_poll(Duration::from_secs(3600));
    let cli = Cli::connect_with(&name, &config, DEADLINE).unwrap();
    for a in 0..100 {
        assert_eq!(cli.req_d(cmd(ECHO, a)), Ok(echo(a)));
    }
    let held = {
        let cli = cli.clone();
        background(move || outcome(&cli.req(cmd(HOLD, 1))))
    };
    assert_eq!(srv.line(), "held call 1");
    srv.kill();
    // Within the test's deadline, far shorter than the spin.
    assert_eq!(result_of(&held, "busy-polling req"), "ServerDisappeared");
    assert_eq!(cli.req_d(cmd(ECHO, 2)), Err(Error::ServerDisappeared));
}

#[test]
fn sigkill_of_a_client_gives_origin_disappeared_and_frees_its_lends() {
    let _g = serial();
    let dir = TestDir::new("killcli");
    let name = unique("killcli");
    let server = Srv::bind(&name, ServerConfig::new()).unwrap();
    let mut client = spawn("client-hold-calls", &dir, &name, None);
    let mut held = Vec::new();
    for _ in 0..2 {
        match server.wait_timeout(DEADLINE).unwrap() {
            Incoming::Call(rq, ctx) => {
                assert_eq!(ctx.client_pid(), client.child.id());
                held.push((rq, ctx));
            }
            _ => panic!("expected a call"),
        }
    }
    held.sort_by_key(|(rq, _)| rq.a);
    assert_eq!(held[0].0, cmd(HOLD, 1));
    assert_eq!(held[1].0, cmd(LEND_HOLD, 2));
    assert_eq!(held[1].1.lent().map(|v| v.len()), Some(1 << 20));
    assert_eq!(client.line(), "calling");
    let stats = server.stats();
    assert_eq!(stats.pid, std::process::id());
    assert_eq!(stats.clients, 1);
    assert_eq!(stats.in_service, 2);
    assert_eq!(stats.lends, 1);

    client.kill();
    wait_for("the server to see its client gone", || {
        server.stats().clients == 0
    });
    for (rq, ctx) in held {
        assert_eq!(
            ctx.reply(echo(rq.a)),
            Err(Error::OriginDisappeared),
            "reply to a dead client's {rq:?}"
        );
    }
    let stats = server.stats();
    assert_eq!(stats.clients, 0);
    assert_eq!(stats.in_service, 0);
    assert_eq!(stats.lends, 0, "the dead client's lend was not freed");
    // The server goes on: a new client is served.
    let late = spawn("client-late", &dir, &name, None);
    assert_eq!(late.line(), "connecting");
    match server.wait_timeout(DEADLINE).unwrap() {
        Incoming::Call(_, ctx) => ctx.reply(cmd(PID, 99)).unwrap(),
        _ => panic!("expected a call"),
    }
    assert_eq!(late.line(), "served 99");
}

#[test]
fn load_every_reply_reaches_its_own_caller_exactly_once() {
    const P: u64 = 4;
    const T: u64 = 4;
    let k = env_or("COURIER_LOAD_CALLS", 2_000);
    // 100 µs a call at worst, and never less than the usual deadline.
    let deadline = DEADLINE.max(Duration::from_micros(100 * P * T * k));
    let _g = serial_within(TEST_DEADLINE + 2 * deadline);
    let dir = TestDir::new("load");
    let name = unique("load");
    let server = Srv::bind(&name, ServerConfig::new()).unwrap();
    let seen: Vec<AtomicBool> = (0..P * T * k).map(|_| AtomicBool::new(false)).collect();
    let dup = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let clients: Vec<Peer> = (0..P)
        .map(|p| {
            spawn_with(
                "client-threads",
                &dir,
                &name,
                None,
                &[
                    (INDEX, p.to_string()),
                    (THREADS, T.to_string()),
                    (CALLS, k.to_string()),
                ],
            )
        })
        .collect();
    thread::scope(|s| {
        for _ in 0..2 {
            let server = server.clone();
            let (seen, dup, stop) = (&seen, &dup, &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (rq, ctx) = match server.wait_timeout(Duration::from_millis(50)) {
                        Ok(Incoming::Call(rq, ctx)) => (rq, ctx),
                        Ok(_) => panic!("expected a call"),
                        Err(Error::Timeout) => continue,
                        Err(e) => panic!("wait: {e}"),
                    };
                    let (p, t, seq) = (rq.a >> 48, (rq.a >> 32) & 0xFFFF, rq.a & 0xFFFF_FFFF);
                    assert!(p < P && t < T && seq < k && rq.b == !rq.a, "{rq:?}");
                    if seen[(p * T * k + t * k + seq) as usize].swap(true, Ordering::Relaxed) {
                        dup.fetch_add(1, Ordering::Relaxed);
                    }
                    ctx.reply(echo(rq.a)).unwrap();
                }
            });
        }
        let _stop = StopOnDrop(&stop);
        for c in &clients {
            assert_eq!(c.line(), "connected");
        }
        for (p, c) in clients.iter().enumerate() {
            let said = c.line_within(deadline).unwrap_or_else(|| {
                panic!(
                    "load client {p} did not finish before the deadline; server: {:?}",
                    server.stats()
                )
            });
            assert_eq!(said, format!("done {p} {}", T * k));
        }
    });
    let took = start.elapsed();
    assert_eq!(dup.load(Ordering::Relaxed), 0, "requests served twice");
    let missing = seen.iter().filter(|s| !s.load(Ordering::Relaxed)).count();
    assert_eq!(missing, 0, "requests never served");
    assert_eq!(server.stats().served, P * T * k);
    println!(
        "load: {P} processes × {T} threads × {k} calls = {} calls in {took:?}",
        P * T * k
    );
}

#[test]
fn an_idle_server_blocked_in_wait_uses_no_cpu() {
    let _g = serial();
    let dir = TestDir::new("idle");
    let name = unique("idle");
    let (srv, cli) = server_peer(&dir, &name, 2);
    assert_eq!(cli.req_d(cmd(ECHO, 1)), Ok(echo(1)));
    let pid = srv.child.id();
    // The worker records the call in the stats file on its way to sleep, or (writes are at
    // least 10 ms apart) on its way to a later one, at the latest when its longest sleep
    // (500 ms) ends: settled once that is done.
    wait_for("the stats file to show the call", || {
        courier_shm::services()
            .unwrap()
            .into_iter()
            .any(|s| s.name == name && s.stats.served >= 1)
    });
    // Twice: after a call taken while spinning, and after one that woke the sleeping
    // server (whose wake-up is read on the worker's way back to sleep: read late or not at
    // all, it would keep the workers' epoll ready and the server spinning).
    for k in 2..4 {
        wait_until_asleep(pid);
        let (ticks, switches) = (cpu_ticks(pid), context_switches(pid));
        thread::sleep(Duration::from_millis(300));
        let used = cpu_ticks(pid) - ticks;
        let woke = context_switches(pid) - switches;
        assert!(used <= 1, "an idle server used {used} ticks in 300 ms");
        // At most one round of the accept thread in the window (every 500 ms: it wakes, and
        // ends both workers' sleeps, which set no timer of their own): three wake-ups, and as
        // many again for the two workers meeting on a lock as they go back to sleep together.
        // A server that spun or kept waking would show hundreds.
        assert!(woke <= 6, "an idle server woke {woke} times in 300 ms");
        // Asleep, not stuck.
        assert_eq!(cli.req_d(cmd(ECHO, k)), Ok(echo(k)));
    }
}

/// The service has a Xous-style name (spaces, `+`), which client processes connect to and
/// `services()` lists as it is.
#[test]
fn services_lists_the_live_service_with_its_pid_and_clients() {
    let _g = serial();
    let dir = TestDir::new("ls");
    let name = format!("_A log server c++ {}_", unique("ls"));
    assert!(name.len() <= 63, "{name:?}");
    let mut srv = spawn_with("server", &dir, &name, None, &[(WORKERS, "1".into())]);
    assert_eq!(srv.line(), format!("ready {}", srv.pid()));
    let mut clients: Vec<Peer> = (0..2)
        .map(|_| spawn("client-idle", &dir, &name, None))
        .collect();
    for c in &clients {
        assert_eq!(c.line(), "connected");
    }
    let find = || {
        courier_shm::services()
            .unwrap()
            .into_iter()
            .find(|s| s.name == name)
    };
    wait_for("services() to show two clients", || {
        find().is_some_and(|s| s.stats.clients == 2)
    });
    let info = find().unwrap();
    assert_eq!(info.stats.pid, srv.pid() as u32);
    clients[0].kill();
    wait_for("services() to show one client", || {
        find().is_some_and(|s| s.stats.clients == 1)
    });
    srv.kill();
    wait_for("services() to drop the dead service", || find().is_none());
}
