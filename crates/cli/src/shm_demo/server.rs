//! `courier demo-server <name>`: the demo's server process. It binds the name, prints
//! `ready <pid>`, and serves every pattern of [`super::proto`] until asked to shut down (or
//! killed: the demo SIGKILLs one on purpose).

use super::proto::*;
use crate::rpc as shm;
use shm::{Incoming, Notifier, ReplyContext, ScalarCall};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// The counters clients read with [`STATUS`].
#[derive(Default)]
struct Counters {
    held: AtomicU64,
    cancels_seen: AtomicU64,
    logs: AtomicU64,
    unsubscribed: AtomicU64,
    scalar_sum: AtomicU64,
    scalar_count: AtomicU64,
}

/// Serves `name` until a [`SHUTDOWN`]; the exit status.
pub(crate) fn run(name: &str) -> bool {
    let server = match DemoServer::bind(
        name,
        shm::ServerConfig::new()
            .slots(64)
            .slot_size(4096)
            .push_depth(256),
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo-server: binding {name:?}: {e}");
            return false;
        }
    };
    println!("ready {}", std::process::id());
    let _ = std::io::stdout().flush();

    let counters = Arc::new(Counters::default());
    // The deferred-response worker: holds reply contexts until a RELEASE is served.
    let (defer_tx, deferred) = mpsc::channel::<(u64, ReplyContext<Rp, AppErr>)>();
    let (release_tx, release) = mpsc::channel::<()>();
    thread::spawn(move || {
        for (arg, rctx) in deferred {
            if release.recv_timeout(HOLD_LIMIT).is_err() {
                continue; // never released: dropping the context gives the caller NoReply
            }
            let _ = rctx.reply(arg * 2);
        }
    });

    loop {
        let incoming = match server.wait() {
            Ok(i) => i,
            Err(e) => {
                eprintln!("demo-server: wait: {e}");
                return false;
            }
        };
        match incoming {
            Incoming::Call([op, arg], rctx) => {
                let shutdown = op == SHUTDOWN;
                call(op, arg, rctx, &counters, &defer_tx, &release_tx);
                if shutdown {
                    return true;
                }
            }
            Incoming::Scalar(sc) => scalar(sc, &counters),
            Incoming::Subscribe([_, count], notifier) => {
                let counters = counters.clone();
                thread::spawn(move || pusher(notifier, count, &counters));
            }
        }
    }
}

/// Answers one call.
fn call(
    op: u64,
    arg: u64,
    mut rctx: ReplyContext<Rp, AppErr>,
    counters: &Arc<Counters>,
    defer_tx: &mpsc::Sender<(u64, ReplyContext<Rp, AppErr>)>,
    release_tx: &mpsc::Sender<()>,
) {
    let reply = match op {
        ECHO | SHUTDOWN => arg.wrapping_add(1),
        FAIL => {
            let why = AppErr::try_from("odd numbers refused").unwrap_or_default();
            let _ = rctx.fail(why);
            return;
        }
        HOLD => {
            counters.held.fetch_add(1, Relaxed);
            let counters = counters.clone();
            thread::spawn(move || {
                let started = Instant::now();
                while !rctx.is_canceled() && started.elapsed() < HOLD_LIMIT {
                    thread::sleep(Duration::from_micros(200));
                }
                if rctx.is_canceled() {
                    counters.cancels_seen.fetch_add(1, Relaxed);
                }
                // Dropped unanswered: the caller, if still there, gets NoReply.
            });
            return;
        }
        LOG => {
            counters.logs.fetch_add(1, Relaxed);
            if !rctx.is_one_way() {
                let _ = rctx.fail(AppErr::try_from("LOG is one-way").unwrap_or_default());
            }
            return;
        }
        STATUS => match arg {
            STATUS_HELD => counters.held.load(Relaxed),
            STATUS_CANCELS_SEEN => counters.cancels_seen.load(Relaxed),
            STATUS_LOGS => counters.logs.load(Relaxed),
            STATUS_UNSUBSCRIBED => counters.unsubscribed.load(Relaxed),
            _ => u64::MAX,
        },
        LEND_SUM => match rctx.lent() {
            Some(bytes) => bytes.to_vec().iter().map(|&b| u64::from(b)).sum(),
            None => u64::MAX,
        },
        LEND_STAMP => match rctx.lent_mut() {
            Some(mut bytes) if bytes.len() >= 16 => {
                let stamp = arg.to_le_bytes();
                let n = bytes.len();
                let _ = bytes.write_at(0, &stamp);
                let _ = bytes.write_at(n - 8, &stamp);
                n as u64
            }
            _ => u64::MAX,
        },
        DEFER => {
            let _ = defer_tx.send((arg, rctx));
            return;
        }
        RELEASE => {
            let _ = release_tx.send(());
            0
        }
        _ => {
            let _ = rctx.fail(AppErr::try_from("unknown opcode").unwrap_or_default());
            return;
        }
    };
    let _ = rctx.reply(reply);
}

/// Answers one scalar message.
fn scalar(sc: ScalarCall, counters: &Counters) {
    let args = sc.args();
    let reply = match sc.op() {
        SC_ADD => {
            counters.scalar_sum.fetch_add(args[0], Relaxed);
            counters.scalar_count.fetch_add(1, Relaxed);
            [0, 0]
        }
        SC_GET => [
            counters.scalar_sum.load(Relaxed),
            counters.scalar_count.load(Relaxed),
        ],
        SC_ECHO => [args[0].wrapping_add(1), 0],
        _ => [u64::MAX, u64::MAX],
    };
    // One-way scalars ignore the reply.
    let _ = sc.reply(reply);
}

/// Pushes `count` notifications (each the monotonic time it was sent), a little apart so each
/// one's latency is measured alone, then waits for the client to unsubscribe.
fn pusher(notifier: Notifier, count: u64, counters: &Counters) {
    let started = Instant::now();
    let mut sent = 0;
    while sent < count && started.elapsed() < HOLD_LIMIT {
        match notifier.push(mono_ns()) {
            Ok(()) => sent += 1,
            Err(shm::PushError::Full) => {}
            Err(_) => return,
        }
        thread::sleep(Duration::from_micros(100));
    }
    while notifier.is_subscribed() && started.elapsed() < HOLD_LIMIT {
        thread::sleep(Duration::from_micros(200));
    }
    if !notifier.is_subscribed() {
        counters.unsubscribed.fetch_add(1, Relaxed);
    }
}
