//! `courier-bench rpc`: courier::shm's request/response (`Client::req`, `Client::lend_mut`)
//! beside iceoryx2 0.10 request-response, ipc-channel 0.23 and a Unix domain socket, between
//! two processes.
//!
//! Two kinds of scenario:
//! - **small**: a `u64` request, the server replies request + 1;
//! - **large** (4 KiB, 1 MiB, 16 MiB): a small request, the server writes N bytes (a memset
//!   with a byte that changes every call) and replies; the client checks the first and last
//!   byte. courier's server writes them in place into the client's lent buffer
//!   (`lend_mut`); the peers send a reply of N bytes. The "floor" row does the memset and the
//!   check in one process, with no transport at all: what any such call must cost at least.
//!
//! A third scenario, **async**, is the small call with both sides on a tokio current-thread
//! runtime: courier's `Client::areq` against `Server::async_wait`, beside tokio's Unix
//! socket. Each call is one `block_on` on the client's runtime (for both rows; that entry
//! costs about 0.3 µs a call on the machines measured so far). A fourth, **async with a
//! multi-thread server**, is the same with the server's loop a task spawned on tokio's
//! multi-thread runtime (one worker thread per CPU, as `#[tokio::main]` builds it).
//!
//! courier's small call is also run parked (no spin on either side, beside the bare futex
//! floor), and every size busy-polling (`busy_poll` on both sides: `req` small, `lend_mut`
//! large), beside iceoryx2's busy-poll row. At every size, "floor: one CPU handed over" is two
//! processes pinned to one CPU that hand it back and forth with `sched_yield` (the server
//! writing the payload): the least a round trip costs where the pair shares one CPU, as
//! courier's default does with a core busy.
//!
//! Every row starts its own server process: this binary again, as `courier-bench rpc --peer
//! KIND --size N --name NAME` (hidden options). The request [`STOP`] makes the server answer
//! and exit. The client kills and reaps its server when a row ends (after a bounded wait for a
//! clean exit), servers die with their client (`PR_SET_PDEATHSIG`), and both have a watchdog.

use crate::pair_floor;
use crate::proc::{self, Peer, OP_TIMEOUT};
use crate::report::{self, Goal, Machine, Row, Verdict};
use crate::runner::{self, Load};
use crate::stats::{self, Plan, Samples};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options of `courier-bench rpc`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Tiny iteration counts, for a smoke test that runs in a few seconds.
    #[arg(long)]
    quick: bool,
    /// Show a progress bar on stderr (one tick per row) instead of a line per row.
    #[arg(long)]
    progress: bool,
    /// Rounds and machine loads.
    #[command(flatten)]
    rounds: runner::RoundArgs,
    /// Only rows whose name contains this text (case-insensitive); courier and the floor are
    /// always kept.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// Also write the report (markdown) to this file.
    #[arg(long, value_name = "FILE")]
    markdown_out: Option<PathBuf>,
    /// Also write the results (machine, rows in nanoseconds, goals) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Internal: run as the server process of a row of this kind.
    #[arg(long, hide = true, value_name = "KIND")]
    peer: Option<String>,
    /// Internal: the reply size of the server's row (8: the small scenario).
    #[arg(long, hide = true, default_value_t = SMALL)]
    size: usize,
    /// Internal: the service name (or socket path) of the server's row.
    #[arg(long, hide = true, default_value = "")]
    name: String,
}

/// The size of the small scenario (one `u64` each way).
const SMALL: usize = 8;

/// The reply sizes of the large scenarios.
const LARGE: [usize; 3] = [4 << 10, 1 << 20, 16 << 20];

/// The request that makes a server answer (with anything) and exit.
const STOP: u64 = u64::MAX;

/// The scenario of the async rows: the small call with an async client and an async server.
const ASYNC: &str = "async: u64 round trip, tokio on both sides";

/// The scenario of the async rows whose server runs on tokio's multi-thread runtime (the
/// default of `#[tokio::main]`): its loop is a task on one of the runtime's worker threads.
const ASYNC_MT: &str = "async: u64 round trip, multi-thread tokio server";

/// The scenario of a row of `kind` at size `n`.
fn scenario_of(kind: Kind, n: usize) -> &'static str {
    match kind {
        Kind::CourierAsync | Kind::UdsAsync => ASYNC,
        Kind::CourierAsyncMt | Kind::UdsAsyncMt => ASYNC_MT,
        _ => scenario(n),
    }
}

/// The scenario of size `n`.
fn scenario(n: usize) -> &'static str {
    match n {
        SMALL => "small: u64 round trip",
        4096 => "4 KiB written by the server",
        1_048_576 => "1 MiB written by the server",
        _ => "16 MiB written by the server",
    }
}

/// The byte the server writes for call `x`: changes every call, never 0 (a fresh buffer).
fn fill_byte(x: u64) -> u8 {
    (x % 251) as u8 + 1
}

/// Checks the first and last byte of a large reply of call `x`.
fn check_bytes(msg: &[u8], n: usize, x: u64) -> Result<(), String> {
    check_ends(msg.len(), msg.first().copied(), msg.last().copied(), n, x)
}

/// Checks a large reply of call `x` of `len` bytes by its first and last byte.
fn check_ends(
    len: usize,
    first: Option<u8>,
    last: Option<u8>,
    n: usize,
    x: u64,
) -> Result<(), String> {
    let expect = Some(fill_byte(x));
    if len != n || first != expect || last != expect {
        return Err(format!(
            "bad reply: {len} bytes (expected {n}), first {first:?}, last {last:?}, expected {expect:?}"
        ));
    }
    Ok(())
}

/// Checks a small reply of call `x`.
fn check_small(reply: u64, x: u64) -> Result<u64, String> {
    if reply == x.wrapping_add(1) {
        Ok(reply)
    } else {
        Err(format!("bad reply {reply} to request {x}"))
    }
}

/// How many idle clients the crowded parked row connects beside the one that calls.
const CROWD: usize = 64;

/// One kind of row: an implementation and how it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// courier::shm `Client::req` (small).
    CourierReq,
    /// courier::shm `Client::req` with no spin on either side (small): the parked regime.
    CourierParked,
    /// As `CourierParked`, with [`CROWD`] more clients connected and idle: what a server
    /// of many clients pays per call for the ones that do not call.
    CourierParkedCrowd,
    /// courier::shm, both sides busy-polling: `Client::req` (small), `Client::lend_mut`
    /// (large).
    CourierBusy,
    /// courier::shm `Client::lend_mut` (large).
    CourierLend,
    /// The small call through a `#[courier::service]` client and server (the stubs' cost).
    CourierService,
    /// courier::shm `Client::areq` and `Server::async_wait`, each on a tokio current-thread
    /// runtime (small; the [`ASYNC`] scenario's subject).
    CourierAsync,
    /// As `CourierAsync`, the server's loop a task on a multi-thread runtime (the
    /// [`ASYNC_MT`] scenario's subject).
    CourierAsyncMt,
    /// The memset and check alone, in one process (large).
    Floor,
    /// Two processes waking each other with a bare futex, no spin (small): the floor of the
    /// sleeping regime.
    FutexFloor,
    /// Two processes pinned to one CPU, handing it back and forth with `sched_yield`, the
    /// server writing the payload: the floor of a pair that shares one CPU.
    HandoverFloor,
    /// iceoryx2 request-response with an event service each way for wakeups.
    IoxEvent,
    /// iceoryx2 request-response, both sides busy-polling.
    IoxSpin,
    /// ipc-channel: a request sender plus one reply channel sent at setup (bytes when large).
    Ipc,
    /// ipc-channel: a new reply sender sent with every request (small).
    IpcPerCall,
    /// A Unix domain stream socket.
    Uds,
    /// tokio's Unix domain stream socket, on a current-thread runtime on each side (small).
    UdsAsync,
    /// As `UdsAsync`, the server's loop a task on a multi-thread runtime.
    UdsAsyncMt,
}

/// Every kind, in the order of the table (courier first, then the floor; the async scenarios'
/// four last).
const KINDS: [Kind; 18] = [
    Kind::CourierReq,
    Kind::CourierLend,
    Kind::CourierParked,
    Kind::CourierParkedCrowd,
    Kind::CourierBusy,
    Kind::CourierService,
    Kind::Floor,
    Kind::FutexFloor,
    Kind::HandoverFloor,
    Kind::IoxEvent,
    Kind::IoxSpin,
    Kind::Ipc,
    Kind::IpcPerCall,
    Kind::Uds,
    // The async scenario last, so that its rows follow the small ones in the tables.
    Kind::CourierAsync,
    Kind::UdsAsync,
    Kind::CourierAsyncMt,
    Kind::UdsAsyncMt,
];

impl Kind {
    /// The value of `--peer`.
    fn arg(self) -> &'static str {
        match self {
            Kind::CourierReq => "courier-req",
            Kind::CourierParked => "courier-parked",
            Kind::CourierParkedCrowd => "courier-parked-crowd",
            Kind::CourierBusy => "courier-busy-poll",
            Kind::CourierLend => "courier-lend-mut",
            Kind::CourierService => "courier-service",
            Kind::CourierAsync => "courier-async",
            Kind::CourierAsyncMt => "courier-async-mt",
            Kind::Floor => "floor",
            Kind::FutexFloor => "futex-floor",
            Kind::HandoverFloor => "handover-floor",
            Kind::IoxEvent => "iceoryx2-event",
            Kind::IoxSpin => "iceoryx2-spin",
            Kind::Ipc => "ipc-channel",
            Kind::IpcPerCall => "ipc-channel-per-call",
            Kind::Uds => "uds",
            Kind::UdsAsync => "uds-async",
            Kind::UdsAsyncMt => "uds-async-mt",
        }
    }

    fn from_arg(arg: &str) -> Option<Kind> {
        KINDS.iter().copied().find(|k| k.arg() == arg)
    }

    /// The row's name.
    fn name(self) -> &'static str {
        match self {
            Kind::CourierReq => "courier::shm req",
            Kind::CourierParked => "courier::shm req, spin 0 (parked)",
            Kind::CourierParkedCrowd => "courier::shm req, spin 0, 64 idle clients",
            Kind::CourierBusy => "courier::shm busy-poll",
            Kind::CourierLend => "courier::shm lend_mut",
            Kind::CourierService => "courier::shm via #[courier::service]",
            Kind::CourierAsync | Kind::CourierAsyncMt => "courier::shm areq / async_wait",
            Kind::Floor => "floor: memset, one process",
            Kind::FutexFloor => "floor: bare futex wake-up",
            Kind::HandoverFloor => "floor: one CPU handed over",
            Kind::IoxEvent => "iceoryx2 0.10 (event)",
            Kind::IoxSpin => "iceoryx2 0.10 (busy-poll)",
            Kind::Ipc => "ipc-channel 0.23",
            Kind::IpcPerCall => "ipc-channel 0.23 (reply sender per call)",
            Kind::Uds => "UnixStream",
            Kind::UdsAsync | Kind::UdsAsyncMt => "UnixStream (tokio)",
        }
    }

    fn is_courier(self) -> bool {
        matches!(
            self,
            Kind::CourierReq | Kind::CourierLend | Kind::CourierAsync | Kind::CourierAsyncMt
        )
    }

    /// The rows whose server runs on a multi-thread runtime.
    fn multi_thread(self) -> bool {
        matches!(self, Kind::CourierAsyncMt | Kind::UdsAsyncMt)
    }

    /// The floors, kept whatever `--only` says.
    fn is_floor(self) -> bool {
        matches!(self, Kind::Floor | Kind::FutexFloor | Kind::HandoverFloor)
    }

    fn notes(self, n: usize) -> &'static str {
        let small = n == SMALL;
        match self {
            Kind::CourierReq => "Client::<u64, u64, ()>::req(x) (the default: an adaptive spin of up to 20 µs, then futex; the busy-poll row below is the busy-polling mode); server: one worker, Server::wait_timeout (adaptive spin up to 50 µs, then sleep) → Incoming::Call → ReplyContext::reply(x + 1)",
            Kind::CourierParked => "as courier::shm req, with ConnectConfig::spin(0) and ServerConfig::spin(0): both sides sleep at once, every call costs two wake-ups (not a peer: the sleeping regime beside the futex floor)",
            Kind::CourierParkedCrowd => "as the parked row, with 64 more clients of this process connected to the server and idle for 1.2 s (two of its rounds) before the row starts: the cost, per call, of the clients that do not call (not a peer)",
            Kind::CourierBusy if small => "as courier::shm req, with ConnectConfig::busy_poll(1 s) and ServerConfig::busy_poll(1 s): both sides spin at every wait (yielding only to a peer on their own CPU, where the two cannot each have one), the regime of iceoryx2's busy-poll row (not a peer: courier's busy-polling mode)",
            Kind::CourierBusy => "as courier::shm lend_mut, with ConnectConfig::busy_poll(1 s) and ServerConfig::busy_poll(1 s): both sides spin at every wait (yielding only to a peer on their own CPU, where the two cannot each have one), the regime of iceoryx2's busy-poll row (not a peer: courier's busy-polling mode)",
            Kind::CourierService => "IncClient::inc(x) / IncServer::serve(impl Inc), generated from a one-method trait over the same req/reply (not a peer: the stubs' cost beside the raw req)",
            Kind::CourierAsync => "client: a tokio current-thread runtime, block_on(Client::areq(x)) per call (adaptive spin up to 20 µs in the future's first poll, then the task sleeps until the client's bell thread wakes it); server: a tokio current-thread runtime, Server::async_wait().await (spin, then its reactor thread wakes the task) → reply(x + 1)",
            Kind::CourierLend => "one ShmBuf::new(N) for the row; each call Client::lend_mut(x, &mut buf); server: ctx.lent_mut() → fill(N bytes) in place → reply(x + 1); client checks first/last byte",
            Kind::Floor => "one process, no transport: fill N bytes, check the first and last",
            Kind::FutexFloor => "two processes, one shared page: the client stores a sequence number in its word and futex_wake()s it, then futex_wait()s on the server's word; the server the same way round. No spin, no payload: the cost of two wake-ups",
            Kind::HandoverFloor if small => "two processes pinned to the caller's CPU, one shared page: each stores a sequence number in its word, then sched_yield()s until the other's word changes. No spin, no payload: the cost of two switches between processes, the least a round trip costs where the pair shares one CPU",
            Kind::HandoverFloor => "as the small handover floor, and the server memsets N bytes in the shared mapping before it answers; the client checks the first and last byte",
            Kind::IoxEvent if small => "request_response::<u64, u64>; send_copy(x) → Notifier::notify; PendingResponse::receive, else Listener::timed_wait (10 s); server the same way round",
            Kind::IoxEvent => "request_response::<u64, [u8]>; server: loan_slice_uninit(N) → memset → send → notify; client: receive, else Listener::timed_wait, reads first/last byte in place",
            Kind::IoxSpin if small => "request_response::<u64, u64>; send_copy(x); both sides busy-poll receive()",
            Kind::IoxSpin => "request_response::<u64, [u8]>; server: loan_slice_uninit(N) → memset → send; both sides busy-poll receive(); client reads first/last byte in place",
            Kind::Ipc if small => "IpcSender<Request> to the server plus one IpcSender<u64> for replies, sent once at setup; blocking recv() both sides",
            Kind::Ipc => "IpcSender<Request> to the server; the server memsets a reused Vec of N bytes and sends it on an IpcBytesSender sent at setup; client: blocking recv() → Vec<u8>",
            Kind::IpcPerCall => "each request carries a new IpcSender<u64> (ipc::channel() per call) for its reply; blocking recv()",
            Kind::Uds if small => "std UnixStream (listener in a temp dir): write_all 8 B / read_exact 8 B, 10 s socket timeouts",
            Kind::Uds => "std UnixStream: client writes 8 B; server memsets a reused buffer of N bytes, write_all; client read_exact N (the kernel copies in and out)",
            Kind::UdsAsync => "tokio::net::UnixStream on a current-thread runtime each side: client block_on(write_all 8 B, read_exact 8 B) per call; server read_exact / write_all in a task",
            Kind::CourierAsyncMt => "client as courier's row of the async scenario (block_on(Client::areq(x)) per call on a current-thread runtime); server: its loop a task spawned on a tokio multi-thread runtime (tokio's default: a worker thread per CPU): Server::async_wait().await (spin, then its reactor thread wakes the task) → reply(x + 1)",
            Kind::UdsAsyncMt => "as UnixStream (tokio) in the async scenario, the server's loop a task spawned on a tokio multi-thread runtime (tokio's default: a worker thread per CPU)",
        }
    }

    /// Whether this kind runs at size `n`.
    fn runs_at(self, n: usize) -> bool {
        match self {
            Kind::CourierReq
            | Kind::CourierParked
            | Kind::CourierParkedCrowd
            | Kind::CourierService
            | Kind::CourierAsync
            | Kind::CourierAsyncMt
            | Kind::IpcPerCall
            | Kind::UdsAsync
            | Kind::UdsAsyncMt
            | Kind::FutexFloor => n == SMALL,
            Kind::CourierLend | Kind::Floor => n != SMALL,
            _ => true,
        }
    }
}

/// The plan of one round of a size, full or quick: the calls of a row are spread over the
/// `rounds`.
fn plan(n: usize, quick: bool, rounds: usize) -> Plan {
    let budget = Duration::from_millis(1500) / rounds.max(1) as u32;
    if quick {
        return Plan {
            warmup: 3,
            settle: Duration::ZERO,
            batches: stats::MIN_BATCHES,
            per_batch: if n >= 16 << 20 { 2 } else { 10 },
            budget,
        };
    }
    let (warmup, batches, per_batch) = match n {
        // Every row takes 10 batches a round (5–40 ms for courier at the small sizes), as in
        // `courier-bench shm`: longer than a few scheduler time slices; 150–250 ms at 1 and
        // 16 MiB (at most the row's budget), where rows at the memset floor are compared.
        0..=4096 => (1_000, 50, 2_000),
        4097..=1_048_576 => (20, 50, 800),
        _ => (3, 50, 40),
    };
    Plan {
        warmup,
        settle: stats::SETTLE,
        batches: (batches / rounds.max(1)).max(stats::MIN_BATCHES),
        per_batch,
        budget,
    }
}

/// The client side of one row: one call per `call`.
trait Client {
    /// Makes call `x` and checks its reply; returns `x + 1`.
    fn call(&mut self, x: u64) -> Result<u64, String>;
    /// Sends [`STOP`] and waits (bounded) for its answer.
    fn stop(&mut self) -> Result<(), String>;
}

/// Runs the rpc benchmark (or, with `--peer`, one server process) and prints the report.
pub(crate) fn run(args: &Args) -> Result<(), String> {
    if let Some(kind) = &args.peer {
        let kind = Kind::from_arg(kind).ok_or_else(|| format!("unknown peer kind {kind}"))?;
        proc::become_peer();
        return run_server(kind, args.size, &args.name);
    }
    let machine = Machine::detect();
    let dir = proc::runtime_dir("rpc")?;
    stats::start_watchdog(
        Duration::from_secs(if args.quick { 60 } else { 180 }),
        "run",
    );
    let started = Instant::now();
    let result = measure_all(args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let (rows, failed) = result;
    let goals = report::goals_by_load(&rows, goals);
    let text = render(
        &machine,
        &rows,
        &goals,
        &failed,
        (args.quick, args.rounds.rounds(args.quick)),
        started.elapsed(),
    );
    report::emit(
        "rpc",
        &text,
        &machine,
        &rows,
        &goals,
        args.markdown_out.as_deref(),
        args.json.as_deref(),
    )
}

/// Measures every selected row in each round under each load; returns the rows and the
/// failures.
fn measure_all(args: &Args, dir: &Path) -> (Vec<Row>, Vec<String>) {
    let filter = args.only.as_ref().map(|s| s.to_lowercase());
    let mut specs = Vec::new();
    for n in std::iter::once(SMALL).chain(LARGE) {
        for kind in KINDS {
            let keep = kind.is_courier()
                || kind.is_floor()
                || kind == Kind::CourierService
                || kind == Kind::CourierParked
                || kind == Kind::CourierParkedCrowd
                || kind == Kind::CourierBusy
                || filter
                    .as_ref()
                    .is_none_or(|f| kind.name().to_lowercase().contains(f));
            if keep && kind.runs_at(n) {
                specs.push((n, kind));
            }
        }
    }
    let schedule = args.rounds.schedule("rpc", args.quick, args.progress);
    let mut count = 0;
    let (measured, failed) = runner::run(
        &schedule,
        &specs,
        |&(n, kind)| {
            format!(
                "{} | {} ({})",
                scenario_of(kind, n),
                kind.name(),
                kind.arg()
            )
        },
        |&(n, kind), _round| {
            count += 1;
            let name = format!("cr{}-{count}", std::process::id());
            measure_row(kind, n, &name, dir, &plan(n, args.quick, schedule.rounds))
        },
    );
    let rows = measured
        .into_iter()
        .map(|m| {
            let (n, kind) = specs[m.spec];
            Row {
                scenario: scenario_of(kind, n),
                name: kind.name(),
                subject: kind.is_courier(),
                notes: kind.notes(n),
                load: m.load,
                summary: m.samples.summary(),
            }
        })
        .collect();
    (rows, failed)
}

/// Starts the server of a row: `courier-bench rpc --peer KIND --size N --name NAME`.
fn spawn(kind: Kind, n: usize, name: &str) -> Result<Peer, String> {
    let size = n.to_string();
    Peer::spawn(
        &["rpc", "--peer", kind.arg(), "--size", &size, "--name", name],
        false,
    )
}

/// Measures one row: starts the server, connects, measures, stops the server.
fn measure_row(
    kind: Kind,
    n: usize,
    name: &str,
    dir: &Path,
    plan: &Plan,
) -> Result<Samples, String> {
    if kind == Kind::Floor {
        let mut floor = Floor { buf: vec![0u8; n] };
        return stats::measure_fallible(plan, |x| floor.call(x));
    }
    let mut peer;
    let mut client: Box<dyn Client> = match kind {
        Kind::CourierReq
        | Kind::CourierParked
        | Kind::CourierParkedCrowd
        | Kind::CourierBusy
        | Kind::CourierLend
        | Kind::CourierService
        | Kind::CourierAsync
        | Kind::CourierAsyncMt => {
            peer = spawn(kind, n, name)?;
            courier_side::client(kind, n, name)?
        }
        Kind::IoxEvent | Kind::IoxSpin => {
            let client = iox_side::Parent::new(kind == Kind::IoxEvent, n, name)?;
            peer = spawn(kind, n, name)?;
            client.wait_for_server()?;
            Box::new(client)
        }
        Kind::Ipc | Kind::IpcPerCall => {
            let (server, server_name) = ipc_side::Parent::listen()?;
            peer = spawn(kind, n, &server_name)?;
            Box::new(ipc_side::Parent::accept(server, kind, n)?)
        }
        Kind::Uds | Kind::UdsAsync | Kind::UdsAsyncMt => {
            let path = dir.join(format!("{name}.sock"));
            let listener = UnixListener::bind(&path)
                .map_err(|e| format!("binding {}: {e}", path.display()))?;
            let path_text = path.to_str().ok_or("temp path is not UTF-8")?;
            peer = spawn(kind, n, path_text)?;
            let s = proc::accept(&listener)?;
            if kind != Kind::Uds {
                Box::new(tokio_side::Stream::new(s)?)
            } else {
                proc::bound_socket(&s)?;
                Box::new(Stream {
                    s,
                    buf: vec![0u8; n],
                })
            }
        }
        Kind::FutexFloor | Kind::HandoverFloor => {
            let path = dir.join(format!("{name}.floor"));
            let (payload, wait) = match kind {
                Kind::FutexFloor => (0, pair_floor::Wait::Futex),
                _ if n == SMALL => (0, pair_floor::Wait::Handover),
                _ => (n, pair_floor::Wait::Handover),
            };
            // The caller pins itself (handover) before the server starts.
            let caller = pair_floor::Caller::new(pair_floor::Words::create(&path, payload)?, wait)?;
            let path_text = path.to_str().ok_or("temp path is not UTF-8")?;
            peer = spawn(kind, n, path_text)?;
            Box::new(caller)
        }
        Kind::Floor => unreachable!("handled above"),
    };
    let samples = stats::measure_fallible(plan, |x| client.call(x))?;
    let stopped = client.stop();
    // Every server exits on STOP: wait for that while still connected, then hang up.
    let clean = peer.finish();
    drop(client);
    stopped?;
    if !clean {
        return Err("the server did not exit cleanly".into());
    }
    Ok(samples)
}

/// The server process of a row: answers calls until [`STOP`], or its client's death.
fn run_server(kind: Kind, n: usize, name: &str) -> Result<(), String> {
    match kind {
        Kind::CourierReq
        | Kind::CourierParked
        | Kind::CourierParkedCrowd
        | Kind::CourierBusy
        | Kind::CourierLend => courier_side::server(kind, n, name),
        Kind::CourierService => courier_side::service_server(name),
        Kind::CourierAsync | Kind::CourierAsyncMt => {
            courier_side::async_server(name, kind.multi_thread())
        }
        Kind::IoxEvent | Kind::IoxSpin => iox_side::server(kind == Kind::IoxEvent, n, name),
        Kind::Ipc | Kind::IpcPerCall => ipc_side::server(n, name),
        Kind::Uds => {
            let s = UnixStream::connect(name).map_err(|e| format!("connect {name}: {e}"))?;
            stream_server(&s, n)
        }
        Kind::UdsAsync | Kind::UdsAsyncMt => {
            let s = UnixStream::connect(name).map_err(|e| format!("connect {name}: {e}"))?;
            tokio_side::server(s, kind.multi_thread())
        }
        Kind::FutexFloor | Kind::HandoverFloor => {
            pair_floor::serve(&pair_floor::Words::open(Path::new(name))?)
        }
        Kind::Floor => Err("the floor has no server".into()),
    }
}

impl Client for pair_floor::Caller {
    fn call(&mut self, x: u64) -> Result<u64, String> {
        pair_floor::Caller::call(self, x)
    }

    fn stop(&mut self) -> Result<(), String> {
        pair_floor::Caller::stop(self)
    }
}

/// The floor: the payload work of a large call, in one process.
struct Floor {
    buf: Vec<u8>,
}

impl Client for Floor {
    fn call(&mut self, x: u64) -> Result<u64, String> {
        let n = self.buf.len();
        self.buf.fill(fill_byte(x));
        check_bytes(std::hint::black_box(&self.buf), n, x)?;
        Ok(x.wrapping_add(1))
    }

    fn stop(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// The Unix socket client: 8 B request; an 8 B reply (small) or N bytes (large).
struct Stream {
    s: UnixStream,
    buf: Vec<u8>,
}

impl Client for Stream {
    fn call(&mut self, x: u64) -> Result<u64, String> {
        let mut s = &self.s;
        s.write_all(&x.to_le_bytes())
            .map_err(|e| format!("write: {e}"))?;
        s.read_exact(&mut self.buf)
            .map_err(|e| format!("read: {e}"))?;
        let n = self.buf.len();
        if n == SMALL {
            let reply = u64::from_le_bytes(self.buf[..8].try_into().expect("8 bytes"));
            check_small(reply, x)
        } else {
            check_bytes(&self.buf, n, x)?;
            Ok(x.wrapping_add(1))
        }
    }

    fn stop(&mut self) -> Result<(), String> {
        let mut s = &self.s;
        s.write_all(&STOP.to_le_bytes())
            .map_err(|e| format!("write: {e}"))
    }
}

/// The Unix socket server: read 8 B, answer, until [`STOP`] or the end of the stream.
fn stream_server(s: &UnixStream, n: usize) -> Result<(), String> {
    let mut s = s;
    let mut buf = vec![0u8; n];
    loop {
        let mut rq = [0u8; 8];
        match s.read_exact(&mut rq) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("read: {e}")),
        }
        let x = u64::from_le_bytes(rq);
        if x == STOP {
            return Ok(());
        }
        if n == SMALL {
            buf.copy_from_slice(&x.wrapping_add(1).to_le_bytes());
        } else {
            buf.fill(fill_byte(x));
        }
        s.write_all(&buf).map_err(|e| format!("write: {e}"))?;
    }
}

/// courier::shm's request/response: a `Server<u64, u64, ()>` in the server process, a
/// `Client` here; large rows lend one `ShmBuf` of N bytes for the whole row (`lend_mut`).
mod courier_side {
    use super::{check_ends, check_small, fill_byte, Client, Kind, CROWD, OP_TIMEOUT, SMALL, STOP};
    use courier::shm::{
        Client as RpcClient, ConnectConfig, Incoming, Server, ServerConfig, ShmBuf,
    };
    use std::time::Duration;

    /// The application error type of the service (never sent).
    type AppError = ();
    type Rpc = RpcClient<u64, u64, AppError>;
    /// How long a busy-polling side spins at each wait (longer than any gap in a row).
    const BUSY_POLL: Duration = Duration::from_secs(1);

    /// `req(x)`: blocking, the default.
    struct Req {
        client: Rpc,
    }

    /// `lend_mut(x, &mut buf)`: the server fills the buffer in place.
    struct LendMut {
        client: Rpc,
        buf: ShmBuf,
        n: usize,
    }

    fn stop(client: &Rpc) -> Result<(), String> {
        client
            .req_timeout(STOP, OP_TIMEOUT)
            .map(|_| ())
            .map_err(|e| format!("stop: {e}"))
    }

    impl Client for Req {
        fn call(&mut self, x: u64) -> Result<u64, String> {
            let reply = self.client.req(x).map_err(|e| format!("req: {e}"))?;
            check_small(reply, x)
        }

        fn stop(&mut self) -> Result<(), String> {
            stop(&self.client)
        }
    }

    /// `areq(x)` on a current-thread tokio runtime of its own, one `block_on` per call.
    struct AsyncReq {
        rt: tokio::runtime::Runtime,
        client: Rpc,
    }

    impl Client for AsyncReq {
        fn call(&mut self, x: u64) -> Result<u64, String> {
            let reply = self
                .rt
                .block_on(self.client.areq(x))
                .map_err(|e| format!("areq: {e}"))?;
            check_small(reply, x)
        }

        fn stop(&mut self) -> Result<(), String> {
            stop(&self.client)
        }
    }

    /// A current-thread tokio runtime (with its timers).
    pub(super) fn runtime() -> Result<tokio::runtime::Runtime, String> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))
    }

    /// A multi-thread tokio runtime (with its timers), one worker thread per CPU, as
    /// `#[tokio::main]` builds it.
    pub(super) fn multi_thread_runtime() -> Result<tokio::runtime::Runtime, String> {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))
    }

    /// Runs `serve` to its end: on a current-thread runtime, or as a task spawned on a
    /// multi-thread runtime's workers.
    pub(super) fn serve_on<F>(multi_thread: bool, serve: F) -> Result<(), String>
    where
        F: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        if !multi_thread {
            return runtime()?.block_on(serve);
        }
        let rt = multi_thread_runtime()?;
        rt.block_on(async { tokio::spawn(serve).await })
            .map_err(|e| format!("server task: {e}"))?
    }

    /// The server of the async rows: one task answers until [`STOP`], on a current-thread
    /// runtime or a multi-thread one's worker.
    pub(super) fn async_server(name: &str, multi_thread: bool) -> Result<(), String> {
        let server = Server::<u64, u64, AppError>::bind(name, ServerConfig::new())
            .map_err(|e| format!("bind: {e}"))?;
        serve_on(multi_thread, async move {
            loop {
                let (x, ctx) = match tokio::time::timeout(OP_TIMEOUT, server.async_wait()).await {
                    Ok(Ok(Incoming::Call(x, ctx))) => (x, ctx),
                    Ok(Ok(_)) => return Err("unexpected message kind".into()),
                    Ok(Err(e)) => return Err(format!("async_wait: {e}")),
                    Err(_) => return Err("no call within the deadline".into()),
                };
                if x == STOP {
                    return ctx.reply(STOP).map_err(|e| format!("reply: {e}"));
                }
                ctx.reply(x.wrapping_add(1))
                    .map_err(|e| format!("reply: {e}"))?;
            }
        })
    }

    /// `req(x)` beside [`CROWD`] clients that never call.
    struct Crowd {
        req: Req,
        _idle: Vec<Rpc>,
    }

    impl Client for Crowd {
        fn call(&mut self, x: u64) -> Result<u64, String> {
            self.req.call(x)
        }

        fn stop(&mut self) -> Result<(), String> {
            self.req.stop()
        }
    }

    impl Client for LendMut {
        fn call(&mut self, x: u64) -> Result<u64, String> {
            let reply = self
                .client
                .lend_mut(x, &mut self.buf)
                .map_err(|e| format!("lend_mut: {e}"))?;
            let v = self.buf.view();
            check_ends(v.len(), v.get(0), v.get(v.len() - 1), self.n, x)?;
            check_small(reply, x)
        }

        fn stop(&mut self) -> Result<(), String> {
            stop(&self.client)
        }
    }

    /// The service of the `#[courier::service]` row: x + 1, as every row.
    #[courier::service]
    trait Inc {
        fn inc(&self, x: u64) -> u64;
    }

    /// Answers x + 1; on [`STOP`], tells the process to end.
    struct Adder(std::sync::Mutex<std::sync::mpsc::Sender<()>>);

    impl Inc for Adder {
        fn inc(&self, x: u64) -> u64 {
            if x == STOP {
                let _ = self.0.lock().map(|s| s.send(()));
                return STOP;
            }
            x.wrapping_add(1)
        }
    }

    struct Service {
        client: IncClient,
    }

    impl Client for Service {
        fn call(&mut self, x: u64) -> Result<u64, String> {
            let reply = self.client.inc(x).map_err(|e| format!("inc: {e}"))?;
            check_small(reply, x)
        }

        fn stop(&mut self) -> Result<(), String> {
            // The server's process may end before its answer to STOP is written.
            match self.client.with_timeout(OP_TIMEOUT).inc(STOP) {
                Ok(_) | Err(courier::Error::ServerDisappeared | courier::Error::NoReply) => Ok(()),
                Err(e) => Err(format!("stop: {e}")),
            }
        }
    }

    /// The generated server on a thread of its own (it serves until the process ends); this
    /// thread returns once a client asked it to stop.
    pub(super) fn service_server(name: &str) -> Result<(), String> {
        let server = IncServer::bind(name).map_err(|e| format!("bind: {e}"))?;
        let (stop, stopped) = std::sync::mpsc::channel();
        std::thread::spawn(move || server.serve(Adder(std::sync::Mutex::new(stop))));
        stopped
            .recv_timeout(OP_TIMEOUT * 10)
            .map_err(|_| "no STOP within the deadline".to_string())
    }

    /// Connects to the row's server (waiting up to [`OP_TIMEOUT`] for its name to appear).
    pub(super) fn client(kind: Kind, n: usize, name: &str) -> Result<Box<dyn Client>, String> {
        if kind == Kind::CourierService {
            let client =
                IncClient::connect(name, OP_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
            return Ok(Box::new(Service { client }));
        }
        let config = match kind {
            Kind::CourierParked | Kind::CourierParkedCrowd => {
                ConnectConfig::new().spin(Duration::ZERO)
            }
            Kind::CourierBusy => ConnectConfig::new().busy_poll(BUSY_POLL),
            _ => ConnectConfig::new(),
        };
        let client =
            Rpc::connect_with(name, &config, OP_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
        if kind == Kind::CourierParkedCrowd {
            let idle = (0..CROWD)
                .map(|_| Rpc::connect(name, OP_TIMEOUT))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("connect an idle client: {e}"))?;
            // Idle for two of the server's rounds (500 ms each; see "Waking" in courier::shm).
            std::thread::sleep(Duration::from_millis(1200));
            return Ok(Box::new(Crowd {
                req: Req { client },
                _idle: idle,
            }));
        }
        if matches!(kind, Kind::CourierAsync | Kind::CourierAsyncMt) {
            return Ok(Box::new(AsyncReq {
                rt: runtime()?,
                client,
            }));
        }
        if n == SMALL {
            return Ok(Box::new(Req { client }));
        }
        let buf = ShmBuf::new(n).map_err(|e| format!("ShmBuf::new({n}): {e}"))?;
        Ok(Box::new(LendMut { client, buf, n }))
    }

    /// The server: one worker (this thread) answers until [`STOP`].
    pub(super) fn server(kind: Kind, n: usize, name: &str) -> Result<(), String> {
        let config = match kind {
            Kind::CourierParked | Kind::CourierParkedCrowd => {
                ServerConfig::new().spin(Duration::ZERO)
            }
            Kind::CourierBusy => ServerConfig::new().busy_poll(BUSY_POLL),
            _ => ServerConfig::new(),
        };
        let server =
            Server::<u64, u64, AppError>::bind(name, config).map_err(|e| format!("bind: {e}"))?;
        loop {
            let (x, mut ctx) = match server.wait_timeout(OP_TIMEOUT) {
                Ok(Incoming::Call(x, ctx)) => (x, ctx),
                Ok(_) => return Err("unexpected message kind".into()),
                Err(e) => return Err(format!("wait: {e}")),
            };
            if x == STOP {
                return ctx.reply(STOP).map_err(|e| format!("reply: {e}"));
            }
            if n != SMALL {
                let mut lent = ctx.lent_mut().ok_or("lend_mut call without a buffer")?;
                if lent.len() != n {
                    return Err(format!("lent {} bytes, expected {n}", lent.len()));
                }
                lent.fill(fill_byte(x));
            }
            ctx.reply(x.wrapping_add(1))
                .map_err(|e| format!("reply: {e}"))?;
        }
    }
}

/// tokio's Unix socket: the async peer of the [`ASYNC`] scenario, a current-thread runtime on
/// each side.
mod tokio_side {
    use super::courier_side::{runtime, serve_on};
    use super::{check_small, Client, OP_TIMEOUT, STOP};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The client: one `block_on` per call, as courier's async row.
    pub(super) struct Stream {
        rt: tokio::runtime::Runtime,
        s: tokio::net::UnixStream,
    }

    impl Stream {
        /// Wraps an accepted socket for the runtime.
        pub(super) fn new(s: std::os::unix::net::UnixStream) -> Result<Stream, String> {
            let rt = runtime()?;
            let s = on(&rt, s)?;
            Ok(Stream { rt, s })
        }
    }

    /// `s`, non-blocking, registered with `rt`'s reactor.
    fn on(
        rt: &tokio::runtime::Runtime,
        s: std::os::unix::net::UnixStream,
    ) -> Result<tokio::net::UnixStream, String> {
        let _in = rt.enter();
        registered(s)
    }

    /// `s`, non-blocking, registered with the reactor of the runtime we run in.
    fn registered(s: std::os::unix::net::UnixStream) -> Result<tokio::net::UnixStream, String> {
        s.set_nonblocking(true)
            .map_err(|e| format!("set_nonblocking: {e}"))?;
        tokio::net::UnixStream::from_std(s).map_err(|e| format!("from_std: {e}"))
    }

    /// Writes `x`, reads the 8-byte answer, within [`OP_TIMEOUT`].
    async fn round_trip(s: &mut tokio::net::UnixStream, x: u64) -> Result<u64, String> {
        let io = async {
            s.write_all(&x.to_le_bytes()).await?;
            let mut rp = [0u8; 8];
            s.read_exact(&mut rp).await?;
            Ok::<_, std::io::Error>(u64::from_le_bytes(rp))
        };
        tokio::time::timeout(OP_TIMEOUT, io)
            .await
            .map_err(|_| "no answer within the deadline".to_string())?
            .map_err(|e| format!("socket: {e}"))
    }

    impl Client for Stream {
        fn call(&mut self, x: u64) -> Result<u64, String> {
            let reply = self.rt.block_on(round_trip(&mut self.s, x))?;
            check_small(reply, x)
        }

        fn stop(&mut self) -> Result<(), String> {
            let s = &mut self.s;
            self.rt
                .block_on(s.write_all(&STOP.to_le_bytes()))
                .map_err(|e| format!("write: {e}"))
        }
    }

    /// The server: answers x + 1 until [`STOP`] or the end of the stream.
    pub(super) fn server(
        s: std::os::unix::net::UnixStream,
        multi_thread: bool,
    ) -> Result<(), String> {
        serve_on(multi_thread, async move {
            let mut s = registered(s)?;
            loop {
                let mut rq = [0u8; 8];
                match tokio::time::timeout(OP_TIMEOUT * 10, s.read_exact(&mut rq)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Ok(Err(e)) => return Err(format!("read: {e}")),
                    Err(_) => return Err("no request within the deadline".into()),
                }
                let x = u64::from_le_bytes(rq);
                if x == STOP {
                    return Ok(());
                }
                s.write_all(&x.wrapping_add(1).to_le_bytes())
                    .await
                    .map_err(|e| format!("write: {e}"))?;
            }
        })
    }
}

/// ipc-channel 0.23: a one-shot server for the setup, then typed channels (bytes when large).
mod ipc_side {
    use super::{check_bytes, check_small, fill_byte, Client, Kind, SMALL, STOP};
    use ipc_channel::ipc::{
        self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcSender,
    };
    use serde::{Deserialize, Serialize};
    use std::sync::mpsc;

    /// What the client sends to the server.
    #[derive(Debug, Serialize, Deserialize)]
    pub(super) enum Request {
        /// Answer on the reply channel of the setup.
        Call(u64),
        /// Answer on this sender.
        CallWithReply(u64, IpcSender<u64>),
    }

    /// The server's first message: where to send requests, and where to send the setup.
    #[derive(Debug, Serialize, Deserialize)]
    pub(super) struct Hello {
        requests: IpcSender<Request>,
        setup: IpcSender<Setup>,
    }

    /// The client's answer to [`Hello`]: the reply channels, sent once.
    #[derive(Debug, Serialize, Deserialize)]
    pub(super) struct Setup {
        replies: IpcSender<u64>,
        bytes: IpcBytesSender,
    }

    pub(super) struct Parent {
        requests: IpcSender<Request>,
        replies: IpcReceiver<u64>,
        bytes: IpcBytesReceiver,
        per_call: bool,
        n: usize,
    }

    /// Runs `f` on a thread and waits for it up to [`super::OP_TIMEOUT`] (ipc-channel's
    /// `accept` has no timeout; on a timeout the thread is left blocked until the process
    /// ends, and the row fails).
    fn bounded<T: Send + 'static>(
        what: &str,
        f: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(super::OP_TIMEOUT)
            .map_err(|_| format!("{what}: no answer within {:?}", super::OP_TIMEOUT))?
    }

    impl Parent {
        /// The one-shot server the server process connects to, and its name.
        pub(super) fn listen() -> Result<(IpcOneShotServer<Hello>, String), String> {
            IpcOneShotServer::new().map_err(|e| format!("one-shot server: {e}"))
        }

        /// Accepts the server process and sends it the reply channels.
        pub(super) fn accept(
            server: IpcOneShotServer<Hello>,
            kind: Kind,
            n: usize,
        ) -> Result<Parent, String> {
            let hello = bounded("accept", move || {
                server
                    .accept()
                    .map(|(_, hello)| hello)
                    .map_err(|e| format!("accept: {e:?}"))
            })?;
            let (replies_tx, replies) = ipc::channel().map_err(|e| format!("channel: {e}"))?;
            let (bytes_tx, bytes) = ipc::bytes_channel().map_err(|e| format!("channel: {e}"))?;
            hello
                .setup
                .send(Setup {
                    replies: replies_tx,
                    bytes: bytes_tx,
                })
                .map_err(|e| format!("send setup: {e:?}"))?;
            Ok(Parent {
                requests: hello.requests,
                replies,
                bytes,
                per_call: kind == Kind::IpcPerCall,
                n,
            })
        }
    }

    impl Client for Parent {
        fn call(&mut self, x: u64) -> Result<u64, String> {
            if self.per_call {
                let (tx, rx) = ipc::channel().map_err(|e| format!("channel: {e}"))?;
                self.requests
                    .send(Request::CallWithReply(x, tx))
                    .map_err(|e| format!("send: {e:?}"))?;
                let reply = rx.recv().map_err(|e| format!("recv: {e:?}"))?;
                return check_small(reply, x);
            }
            self.requests
                .send(Request::Call(x))
                .map_err(|e| format!("send: {e:?}"))?;
            if self.n == SMALL {
                let reply = self.replies.recv().map_err(|e| format!("recv: {e:?}"))?;
                check_small(reply, x)
            } else {
                let msg = self.bytes.recv().map_err(|e| format!("recv: {e:?}"))?;
                check_bytes(&msg, self.n, x)?;
                Ok(x.wrapping_add(1))
            }
        }

        fn stop(&mut self) -> Result<(), String> {
            self.requests
                .send(Request::Call(STOP))
                .map_err(|e| format!("send: {e:?}"))
        }
    }

    /// The server process: connects to the client's one-shot server `name`.
    pub(super) fn server(n: usize, name: &str) -> Result<(), String> {
        let (requests, requests_rx) = ipc::channel().map_err(|e| format!("channel: {e}"))?;
        let (setup, setup_rx) = ipc::channel::<Setup>().map_err(|e| format!("channel: {e}"))?;
        IpcSender::<Hello>::connect(name.to_string())
            .map_err(|e| format!("connect {name}: {e}"))?
            .send(Hello { requests, setup })
            .map_err(|e| format!("send hello: {e:?}"))?;
        let setup = setup_rx
            .try_recv_timeout(super::OP_TIMEOUT)
            .map_err(|e| format!("recv setup: {e:?}"))?;
        let mut buf = vec![0u8; n];
        loop {
            // Blocking: the channel disconnects when the client ends (or dies).
            let request = match requests_rx.recv() {
                Ok(r) => r,
                Err(ipc_channel::IpcError::Disconnected) => return Ok(()),
                Err(e) => return Err(format!("recv: {e:?}")),
            };
            match request {
                Request::Call(STOP) => return Ok(()),
                Request::Call(x) if n == SMALL => setup
                    .replies
                    .send(x.wrapping_add(1))
                    .map_err(|e| format!("send: {e:?}"))?,
                Request::Call(x) => {
                    buf.fill(fill_byte(x));
                    setup.bytes.send(&buf).map_err(|e| format!("send: {e}"))?;
                }
                Request::CallWithReply(x, reply) => reply
                    .send(x.wrapping_add(1))
                    .map_err(|e| format!("send: {e:?}"))?,
            }
        }
    }
}

/// iceoryx2 0.10 request-response: `u64` → `u64` (small) or `u64` → `[u8]` (large), with an
/// event service each way in the blocking variant.
mod iox_side {
    use super::{check_bytes, check_small, fill_byte, Client, OP_TIMEOUT, SMALL, STOP};
    use iceoryx2::port::client::Client as IoxClient;
    use iceoryx2::port::listener::Listener;
    use iceoryx2::port::notifier::Notifier;
    use iceoryx2::prelude::*;
    use iceoryx2::service::port_factory::request_response::PortFactory;
    use iceoryx2::service::port_factory::PortFactory as _;
    use std::time::{Duration, Instant};

    type EventFactory = iceoryx2::service::port_factory::event::PortFactory<ipc::Service>;

    fn service_name(name: &str, which: &str) -> Result<ServiceName, String> {
        format!("courier-bench-rpc/{name}/{which}")
            .as_str()
            .try_into()
            .map_err(|e| format!("service name: {e:?}"))
    }

    fn open_event(
        node: &Node<ipc::Service>,
        name: &str,
        which: &str,
    ) -> Result<EventFactory, String> {
        node.service_builder(&service_name(name, which)?)
            .event()
            .open_or_create()
            .map_err(|e| format!("event service {which}: {e:?}"))
    }

    /// The event ends of the blocking variant: a notifier towards the other side's listener.
    struct Events {
        tx_service: EventFactory,
        _rx_service: EventFactory,
        notifier: Notifier<ipc::Service>,
        listener: Listener<ipc::Service>,
    }

    impl Events {
        /// `tx` is the event this side notifies, `rx` the one it listens to.
        fn new(node: &Node<ipc::Service>, name: &str, tx: &str, rx: &str) -> Result<Self, String> {
            let tx_service = open_event(node, name, tx)?;
            let rx_service = open_event(node, name, rx)?;
            let notifier = tx_service
                .notifier_builder()
                .create()
                .map_err(|e| format!("notifier: {e:?}"))?;
            let listener = rx_service
                .listener_builder()
                .create()
                .map_err(|e| format!("listener: {e:?}"))?;
            Ok(Events {
                tx_service,
                _rx_service: rx_service,
                notifier,
                listener,
            })
        }

        fn notify(&self) -> Result<(), String> {
            self.notifier
                .notify()
                .map(|_| ())
                .map_err(|e| format!("notify: {e:?}"))
        }

        fn other_side_listens(&self) -> bool {
            self.tx_service.dynamic_config().number_of_listeners() >= 1
        }
    }

    /// Waits for the next thing `poll` returns: busy-polling, or on the listener when there
    /// is one; fails after [`OP_TIMEOUT`].
    fn wait_for<T>(
        events: Option<&Events>,
        mut poll: impl FnMut() -> Result<Option<T>, String>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + OP_TIMEOUT;
        let mut polls = 0u32;
        loop {
            if let Some(v) = poll()? {
                return Ok(v);
            }
            if let Some(ev) = events {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err("no message within the timeout".into());
                }
                ev.listener
                    .timed_wait(|_| {}, left)
                    .map_err(|e| format!("wait: {e:?}"))?;
                continue;
            }
            polls = polls.wrapping_add(1);
            if polls % 4096 == 0 && Instant::now() >= deadline {
                return Err("no message within the timeout".into());
            }
            std::hint::spin_loop();
        }
    }

    /// Waits (sleeping) until `ready` holds, up to [`OP_TIMEOUT`].
    fn wait_until(what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + OP_TIMEOUT;
        while !ready() {
            if Instant::now() >= deadline {
                return Err(format!("{what} did not connect"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// The client's ports, small or large.
    enum Ports {
        Small(
            PortFactory<ipc::Service, u64, (), u64, ()>,
            IoxClient<ipc::Service, u64, (), u64, ()>,
        ),
        Large(
            PortFactory<ipc::Service, u64, (), [u8], ()>,
            IoxClient<ipc::Service, u64, (), [u8], ()>,
        ),
    }

    pub(super) struct Parent {
        _node: Node<ipc::Service>,
        ports: Ports,
        events: Option<Events>,
        n: usize,
    }

    fn node() -> Result<Node<ipc::Service>, String> {
        NodeBuilder::new()
            .create::<ipc::Service>()
            .map_err(|e| format!("node: {e:?}"))
    }

    impl Parent {
        pub(super) fn new(events: bool, n: usize, name: &str) -> Result<Parent, String> {
            let node = node()?;
            let service = service_name(name, "rpc")?;
            let builder = node.service_builder(&service);
            let ports = if n == SMALL {
                let factory = builder
                    .request_response::<u64, u64>()
                    .open_or_create()
                    .map_err(|e| format!("service: {e:?}"))?;
                let client = factory
                    .client_builder()
                    .create()
                    .map_err(|e| format!("client: {e:?}"))?;
                Ports::Small(factory, client)
            } else {
                let factory = builder
                    .request_response::<u64, [u8]>()
                    .open_or_create()
                    .map_err(|e| format!("service: {e:?}"))?;
                let client = factory
                    .client_builder()
                    .create()
                    .map_err(|e| format!("client: {e:?}"))?;
                Ports::Large(factory, client)
            };
            let events = if events {
                Some(Events::new(&node, name, "request-event", "response-event")?)
            } else {
                None
            };
            Ok(Parent {
                _node: node,
                ports,
                events,
                n,
            })
        }

        /// Waits until the server process has its server port (and listener).
        pub(super) fn wait_for_server(&self) -> Result<(), String> {
            wait_until("the iceoryx2 server", || {
                let servers = match &self.ports {
                    Ports::Small(f, _) => f.dynamic_config().number_of_servers(),
                    Ports::Large(f, _) => f.dynamic_config().number_of_servers(),
                };
                servers >= 1 && self.events.as_ref().is_none_or(Events::other_side_listens)
            })
        }

        /// One call: send `x`, wait for the answer, check it; keeps the pending response
        /// until the answer is there (dropping it earlier would cancel the request).
        fn call_inner(&self, x: u64) -> Result<u64, String> {
            let events = self.events.as_ref();
            match &self.ports {
                Ports::Small(_, client) => {
                    let pending = client.send_copy(x).map_err(|e| format!("send: {e:?}"))?;
                    if let Some(ev) = events {
                        ev.notify()?;
                    }
                    let reply = wait_for(events, || {
                        pending
                            .receive()
                            .map(|r| r.map(|r| *r.payload()))
                            .map_err(|e| format!("receive: {e:?}"))
                    })?;
                    if x == STOP {
                        return Ok(reply);
                    }
                    check_small(reply, x)
                }
                Ports::Large(_, client) => {
                    let pending = client.send_copy(x).map_err(|e| format!("send: {e:?}"))?;
                    if let Some(ev) = events {
                        ev.notify()?;
                    }
                    let response = wait_for(events, || {
                        pending.receive().map_err(|e| format!("receive: {e:?}"))
                    })?;
                    if x != STOP {
                        check_bytes(response.payload(), self.n, x)?;
                    }
                    Ok(x.wrapping_add(1))
                }
            }
        }
    }

    impl Client for Parent {
        fn call(&mut self, x: u64) -> Result<u64, String> {
            self.call_inner(x)
        }

        fn stop(&mut self) -> Result<(), String> {
            self.call_inner(STOP).map(|_| ())
        }
    }

    pub(super) fn server(events: bool, n: usize, name: &str) -> Result<(), String> {
        let node = node()?;
        let service = service_name(name, "rpc")?;
        let events = if events {
            Some(Events::new(&node, name, "response-event", "request-event")?)
        } else {
            None
        };
        let events = events.as_ref();
        let builder = node.service_builder(&service);
        if n == SMALL {
            let factory = builder
                .request_response::<u64, u64>()
                .open_or_create()
                .map_err(|e| format!("service: {e:?}"))?;
            let server = factory
                .server_builder()
                .create()
                .map_err(|e| format!("server: {e:?}"))?;
            wait_until("the iceoryx2 client", || {
                factory.dynamic_config().number_of_clients() >= 1
                    && events.is_none_or(Events::other_side_listens)
            })?;
            loop {
                let request = wait_for(events, || {
                    server.receive().map_err(|e| format!("receive: {e:?}"))
                })?;
                let x = *request.payload();
                request
                    .send_copy(x.wrapping_add(1))
                    .map_err(|e| format!("send: {e:?}"))?;
                if let Some(ev) = events {
                    ev.notify()?;
                }
                if x == STOP {
                    return Ok(());
                }
            }
        } else {
            let factory = builder
                .request_response::<u64, [u8]>()
                .open_or_create()
                .map_err(|e| format!("service: {e:?}"))?;
            let server = factory
                .server_builder()
                .initial_max_slice_len(n)
                .create()
                .map_err(|e| format!("server: {e:?}"))?;
            wait_until("the iceoryx2 client", || {
                factory.dynamic_config().number_of_clients() >= 1
                    && events.is_none_or(Events::other_side_listens)
            })?;
            loop {
                let request = wait_for(events, || {
                    server.receive().map_err(|e| format!("receive: {e:?}"))
                })?;
                let x = *request.payload();
                let len = if x == STOP { 0 } else { n };
                let mut response = request
                    .loan_slice_uninit(len)
                    .map_err(|e| format!("loan: {e:?}"))?;
                let byte = fill_byte(x);
                for b in response.payload_mut() {
                    b.write(byte);
                }
                // SAFETY: every element was written just above.
                let response = unsafe { response.assume_init() };
                response.send().map_err(|e| format!("send: {e:?}"))?;
                if let Some(ev) = events {
                    ev.notify()?;
                }
                if x == STOP {
                    return Ok(());
                }
            }
        }
    }
}

/// The goals of one load (`rows` are that load's): courier's small round trip below
/// iceoryx2's and under a tenth of ipc-channel's; lend_mut of 16 MiB within a few times the
/// small round trip plus the floor; with a core busy, ahead of every peer and at most half a
/// Unix socket round trip; the sleeping regime's cost beside the bare futex floor; and
/// (informational) courier beside the one-CPU handover floor.
fn goals(rows: &[Row], load: Load) -> Vec<Goal> {
    let median = |n: usize, kind: Kind| row_at(rows, n, kind).map(|r| r.summary.median_ns);
    let small = scenario(SMALL);
    let req = median(SMALL, Kind::CourierReq);
    let mut goals = Vec::new();
    for (peer, factor, text) in [
        (
            Kind::IoxEvent,
            1.0,
            "small round trip: courier req (blocking) below iceoryx2's blocking (event) row",
        ),
        (
            Kind::IoxSpin,
            1.0,
            "small round trip: courier req (blocking) below iceoryx2's busy-poll row",
        ),
        (
            Kind::Ipc,
            0.1,
            "small round trip: courier req under a tenth of ipc-channel's",
        ),
    ] {
        match (req, median(SMALL, peer)) {
            (Some(c), Some(p)) => goals.push(Goal {
                text: text.to_string(),
                courier: report::fmt_ns(c),
                reference: format!("{} ({})", report::fmt_ns(p), peer.name()),
                ratio: Some(c / p),
                verdict: Verdict::of(c < factor * p),
                rounds: None,
                paired: None,
            }),
            _ => goals.push(Goal::not_measured(text.to_string())),
        }
    }
    // Async callers and servers: ahead of every async peer under both loads, and what async
    // costs beside the blocking call.
    for (scenario, kind) in [
        (ASYNC, Kind::CourierAsync),
        (ASYNC_MT, Kind::CourierAsyncMt),
    ] {
        goals.extend(report::ahead_of_every_peer(rows, scenario));
        goals.push(Goal::informational_median(
            format!(
                "{scenario}: courier areq / async_wait ÷ courier's blocking req (informational)"
            ),
            row_at(rows, SMALL, kind),
            row_at(rows, SMALL, Kind::CourierReq),
        ));
    }
    if load == Load::Busy {
        goals.extend(report::ahead_of_every_peer(rows, small));
        goals.push(Goal::median(
            "small round trip: courier req at most 0.5× a Unix socket round trip".into(),
            row_at(rows, SMALL, Kind::CourierReq),
            row_at(rows, SMALL, Kind::Uds),
            0.5,
        ));
    }
    for n in std::iter::once(SMALL).chain(LARGE) {
        let at = |kind: Kind| row_at(rows, n, kind);
        goals.extend(report::as_good_as(
            &format!(
                "{}, busy-polling both sides: courier's busy-poll row at or ahead of iceoryx2's",
                scenario(n)
            ),
            at(Kind::CourierBusy),
            at(Kind::IoxSpin),
        ));
    }
    // Issue 14: the 16 MiB call within 1.05× of writing the bytes once.
    goals.push(Goal::median(
        format!(
            "{}: courier lend_mut ≤ 1.05 × the memset floor",
            scenario(LARGE[2])
        ),
        row_at(rows, LARGE[2], Kind::CourierLend),
        row_at(rows, LARGE[2], Kind::Floor),
        1.05,
    ));
    // Where the pair shares one CPU (courier's default with a core busy hands it back and
    // forth), the least a round trip costs: two switches between processes.
    for n in std::iter::once(SMALL).chain(LARGE) {
        let courier = if n == SMALL {
            Kind::CourierReq
        } else {
            Kind::CourierLend
        };
        goals.push(Goal::informational_median(
            format!(
                "{}: courier ÷ the one-CPU handover floor (informational)",
                scenario(n)
            ),
            row_at(rows, n, courier),
            row_at(rows, n, Kind::HandoverFloor),
        ));
    }
    goals.push(Goal::median(
        "small round trip, parked (spin 0 both sides): courier ≤ 1.2 × the bare futex wake-up floor".into(),
        row_at(rows, SMALL, Kind::CourierParked),
        row_at(rows, SMALL, Kind::FutexFloor),
        1.2,
    ));
    goals.push(Goal::informational_median(
        format!(
            "small round trip, parked, {CROWD} idle clients connected: courier ÷ courier parked alone (informational)"
        ),
        row_at(rows, SMALL, Kind::CourierParkedCrowd),
        row_at(rows, SMALL, Kind::CourierParked),
    ));
    for n in LARGE {
        let text = if n == LARGE[2] {
            format!(
                "{}: courier lend_mut ≤ floor + {FEW} × courier's small req (ratio: (lend_mut − floor) / req)",
                scenario(n)
            )
        } else {
            format!(
                "{}: courier lend_mut − floor, in small round trips (informational)",
                scenario(n)
            )
        };
        let lend = median(n, Kind::CourierLend);
        let floor = median(n, Kind::Floor);
        match (lend, floor, req) {
            (Some(c), Some(f), Some(s)) => goals.push(Goal {
                text,
                courier: format!(
                    "{} (− floor = {})",
                    report::fmt_ns(c),
                    report::fmt_ns_delta(c - f)
                ),
                reference: format!(
                    "floor {} + {FEW} × req {} = {}",
                    report::fmt_ns(f),
                    report::fmt_ns(s),
                    report::fmt_ns(f + FEW * s)
                ),
                ratio: Some((c - f) / s),
                verdict: if n == LARGE[2] {
                    Verdict::of(c <= f + FEW * s)
                } else {
                    Verdict::Info
                },
                rounds: None,
                paired: None,
            }),
            _ => goals.push(Goal::not_measured(text)),
        }
    }
    goals
}

/// The row of `kind` at size `n` among `rows`, if measured.
fn row_at(rows: &[Row], n: usize, kind: Kind) -> Option<&Row> {
    rows.iter()
        .find(|r| r.scenario == scenario_of(kind, n) && r.name == kind.name())
}

/// "A few times the small round trip": the bound of the 16 MiB goal.
const FEW: f64 = 4.0;

/// The whole report: header, table, goals, failures.
fn render(
    machine: &Machine,
    rows: &[Row],
    goals: &[Goal],
    failed: &[String],
    (quick, rounds): (bool, usize),
    took: Duration,
) -> String {
    let mut out = String::new();
    out.push_str("# courier-bench rpc\n\n");
    out.push_str(&machine.markdown());
    let p8 = plan(SMALL, quick, rounds);
    let p16 = plan(16 << 20, quick, rounds);
    out.push_str(&runner::loads_note("processes"));
    out.push_str(&format!(
        "- method: two processes per row (the server is this binary, re-executed; a new \
         process and service name for every row), except the memset floor rows. {rounds} \
         round(s) per load, each measuring every row once (starting at a different row each \
         round); in each, a row warms up (unmeasured calls for 40 ms in a full run, so that a \
         caller that adapts as it runs is measured settled), then times batches of calls ({}×{} small … {}×{} at \
         16 MiB; a round of a row stops early after {:?}). Each call is timed with one \
         `Instant::now()` after the reply (chained timestamps); *median*, *p99* and *calls/s* \
         are over the calls of every round; *round medians* show the spread between \
         rounds.{}\n\
         - CPU/call: the CPU time of every thread of both processes (client and server) during \
         the measured phase, from the scheduler's accounting (`/proc/*/task/*/schedstat`), per \
         call: what a round trip costs the machine; a spinning waiter shows here.\n\
         - small: a u64 request, reply = request + 1, checked. Large: a u64 request; the server \
         writes all N bytes (a byte that changes every call) and the client checks the first \
         and last byte of the reply — for courier, of its own lent buffer (`lend_mut`).\n\
         - ratios: courier/peer median below 1 means courier is faster; every row of a scenario \
         is compared with courier's row of that scenario (req when small, lend_mut when large).\n\
         - the busy-poll rows keep both processes spinning, so they need both cores: with \
         {nproc} CPU(s) and other load, a preempted spinner waits out a scheduler slice.\n\
         - wall time of the run: {:.1} s; load average after: {}\n\n",
        p8.batches,
        p8.per_batch,
        p16.batches,
        p16.per_batch,
        p8.budget,
        if quick {
            " **--quick: tiny counts, numbers are not meaningful.**"
        } else {
            ""
        },
        took.as_secs_f64(),
        report::load_average(),
        nproc = machine.nproc,
    ));
    out.push_str(&report::results(rows, goals, failed));
    out
}
