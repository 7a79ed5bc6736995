//! `courier-bench local`: courier::local beside ump 0.13, crossbeam-channel, flume,
//! std::sync::mpsc and tokio, in one run, on three scenarios:
//!
//! 1. one client thread and one server thread, blocking round trip of a `u64`;
//! 2. four client threads and one server thread, throughput;
//! 3. an async client task and a server task on a multi-thread tokio runtime (2 workers).
//!
//! Every row makes its own channel and its own threads (or runtime), warms up, then measures
//! batches of round trips (see [`crate::stats`]). The request is a `u64` and the reply is the
//! request plus one, checked on every call. Peers use the shape a user would write for
//! request/response with them: an unbounded request queue whose items carry a one-shot reply
//! channel made per request. One extra row reuses a single reply channel (labelled): the fastest
//! thing crossbeam can do for one client, but not a general request/response.

use crate::report::{self, Goal, Machine, Row, Verdict};
use crate::runner::{self, Load};
use crate::stats::{self, AsyncCall, Plan, Samples};
use std::thread;
use std::time::{Duration, Instant};

/// Options of `courier-bench local`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Tiny iteration counts, for a smoke test that runs in a few seconds.
    #[arg(long)]
    quick: bool,
    /// Only rows whose name contains this text (case-insensitive); courier is always kept.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// Rounds and machine loads.
    #[command(flatten)]
    rounds: runner::RoundArgs,
    /// Also write the report (markdown) to this file.
    #[arg(long, value_name = "FILE")]
    markdown_out: Option<std::path::PathBuf>,
    /// Also write the results (machine, rows in nanoseconds and calls/s, goals) as JSON to this
    /// file.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
}

/// Scenario (1).
pub(crate) const SYNC: &str = "(1) sync 1:1";
/// Scenario (2).
pub(crate) const THROUGHPUT: &str = "(2) sync 4:1";
/// Scenario (3).
pub(crate) const ASYNC: &str = "(3) async";
/// Scenario (4): one client, one server whose handler works [`LONG_WORK`] before it answers.
pub(crate) const LONG: &str = "(4) sync 1:1, 300 µs handler";
/// How long the handler of scenario (4) works (spinning) before each answer.
const LONG_WORK: Duration = Duration::from_micros(300);
/// The floor of scenario (4): the handler's work alone, on the client's thread.
pub(crate) const LONG_FLOOR: &str = "floor: the handler's work, one thread";

/// Client threads in scenario (2).
const CLIENTS: usize = 4;
/// Worker threads of the tokio runtime in scenario (3).
const WORKERS: usize = 2;

/// The name of courier's rows.
pub(crate) const COURIER: &str = "courier::local";
/// The name of ump's rows.
pub(crate) const UMP: &str = "ump 0.13";
/// The rows of the same calls through a `#[courier::service]` client (the generated stubs'
/// cost beside the raw `req`).
pub(crate) const COURIER_SERVICE: &str = "courier::local via #[courier::service]";
/// courier::local with both sides busy-polling: courier's opt-in mode, not a peer.
pub(crate) const COURIER_BUSY_POLL: &str = "courier::local busy-poll (opt-in)";
/// The row that reuses one reply channel: shown, but not a peer of the same shape.
pub(crate) const CROSSBEAM_REUSED: &str = "crossbeam-channel (reused reply)";
/// The two-thread spin floor: a ping-pong through two atomics, no queue, no sleep.
pub(crate) const SPIN_FLOOR: &str = "floor: two-thread spin ping-pong";
/// courier::local with a server that works before it answers ([`handler_work`]): not a peer.
pub(crate) const COURIER_WORK: &str = "courier::local, handler works";
/// The spin floor with the same work before each answer.
pub(crate) const SPIN_FLOOR_WORK: &str = "floor: two-thread spin ping-pong, handler works";
/// Rounds of [`handler_work`].
const WORK_ROUNDS: u32 = 24;

/// One row to measure.
struct Spec {
    scenario: &'static str,
    name: &'static str,
    notes: &'static str,
    run: fn(&Plan) -> Samples,
}

/// Every row, in table order; courier first in each scenario.
const SPECS: &[Spec] = &[
    Spec {
        scenario: SYNC,
        name: COURIER,
        notes: "Client::req / Server::wait + ReplyContext::reply",
        run: courier_sync,
    },
    Spec {
        scenario: SYNC,
        name: COURIER_BUSY_POLL,
        notes: "as courier::local, with Server::set_busy_poll(1 s) and Client::set_busy_poll(1 s): each wait spins up to 1 s before it sleeps (courier's opt-in mode beside the spin floor, not a peer)",
        run: courier_busy_poll_sync,
    },
    Spec {
        scenario: SYNC,
        name: COURIER_SERVICE,
        notes: "IncClient::inc / IncServer::serve (generated from a one-method trait)",
        run: service_sync,
    },
    Spec {
        scenario: SYNC,
        name: UMP,
        notes: "Client::req / Server::wait + ReplyContext::reply",
        run: ump_sync,
    },
    Spec {
        scenario: SYNC,
        name: "crossbeam-channel",
        notes: "unbounded request queue of (u64, Sender); bounded(1) reply channel per request",
        run: crossbeam_sync,
    },
    Spec {
        scenario: SYNC,
        name: SPIN_FLOOR,
        notes: "the request and the reply each in an AtomicU64 (its own cache line); both threads spin on the other's word, never sleep: the physical limit of a round trip between two threads",
        run: spin_floor,
    },
    Spec {
        scenario: SYNC,
        name: COURIER_WORK,
        notes: "as courier::local, with a server that runs 24 dependent xorshift rounds (tens of ns) before each reply: a handler that does anything at all (not a peer)",
        run: courier_work_sync,
    },
    Spec {
        scenario: SYNC,
        name: SPIN_FLOOR_WORK,
        notes: "the spin floor, with the same 24 xorshift rounds before each answer",
        run: spin_floor_work,
    },
    Spec {
        scenario: SYNC,
        name: CROSSBEAM_REUSED,
        notes: "unbounded request queue + one bounded(1) reply channel reused for every call (1 client only; not the same shape)",
        run: crossbeam_reused_sync,
    },
    Spec {
        scenario: SYNC,
        name: "flume",
        notes: "unbounded request queue of (u64, Sender); bounded(1) reply channel per request",
        run: flume_sync,
    },
    Spec {
        scenario: SYNC,
        name: "std::sync::mpsc",
        notes: "channel() of (u64, SyncSender); sync_channel(1) reply per request",
        run: std_sync,
    },
    Spec {
        scenario: SYNC,
        name: "tokio",
        notes: "unbounded mpsc of (u64, oneshot::Sender), oneshot per request; blocking_recv on both threads",
        run: tokio_sync,
    },
    Spec {
        scenario: THROUGHPUT,
        name: COURIER,
        notes: "4 cloned Clients, req",
        run: courier_throughput,
    },
    Spec {
        scenario: THROUGHPUT,
        name: UMP,
        notes: "4 cloned Clients, req",
        run: ump_throughput,
    },
    Spec {
        scenario: THROUGHPUT,
        name: "crossbeam-channel",
        notes: "4 cloned Senders; bounded(1) reply per request",
        run: crossbeam_throughput,
    },
    Spec {
        scenario: THROUGHPUT,
        name: "flume",
        notes: "4 cloned Senders; bounded(1) reply per request",
        run: flume_throughput,
    },
    Spec {
        scenario: THROUGHPUT,
        name: "std::sync::mpsc",
        notes: "4 cloned Senders; sync_channel(1) reply per request",
        run: std_throughput,
    },
    Spec {
        scenario: THROUGHPUT,
        name: "tokio",
        notes: "4 cloned UnboundedSenders; oneshot per request; blocking_recv",
        run: tokio_throughput,
    },
    Spec {
        scenario: ASYNC,
        name: COURIER,
        notes: "Client::areq / Server::async_wait",
        run: courier_async,
    },
    Spec {
        scenario: ASYNC,
        name: UMP,
        notes: "Client::areq / Server::async_wait",
        run: ump_async,
    },
    Spec {
        scenario: ASYNC,
        name: "flume",
        notes: "send_async of (u64, Sender) / recv_async; bounded(1) reply per request",
        run: flume_async,
    },
    Spec {
        scenario: ASYNC,
        name: "tokio",
        notes: "unbounded mpsc of (u64, oneshot::Sender) / recv; oneshot per request",
        run: tokio_async,
    },
    Spec {
        scenario: LONG,
        name: COURIER,
        notes: "Client::req / Server::wait + ReplyContext::reply, the server spinning 300 µs before each reply",
        run: courier_long,
    },
    Spec {
        scenario: LONG,
        name: UMP,
        notes: "Client::req / Server::wait + ReplyContext::reply, the server spinning 300 µs before each reply",
        run: ump_long,
    },
    Spec {
        scenario: LONG,
        name: "crossbeam-channel",
        notes: "unbounded request queue of (u64, Sender); bounded(1) reply channel per request; the server spinning 300 µs before each reply",
        run: crossbeam_long,
    },
    Spec {
        scenario: LONG,
        name: "std::sync::mpsc",
        notes: "channel() of (u64, SyncSender); sync_channel(1) reply per request; the server spinning 300 µs before each reply",
        run: std_long,
    },
    Spec {
        scenario: LONG,
        name: LONG_FLOOR,
        notes: "the 300 µs of work alone, on the measuring thread: what a call cannot take less than",
        run: long_floor,
    },
];

/// The plan of one round of each scenario, full or quick (a row's calls are spread over the
/// rounds).
fn plan(scenario: &str, quick: bool, rounds: usize) -> Plan {
    if quick {
        return Plan {
            warmup: 50,
            settle: Duration::ZERO,
            batches: stats::MIN_BATCHES,
            per_batch: 100,
            budget: Duration::from_secs(2),
        };
    }
    if scenario == LONG {
        // About 10 ms a batch: the row takes what the others do, and a caller that adapts
        // to long calls has settled after its warm-up (unmeasured calls for the settle time).
        return Plan {
            warmup: 20,
            settle: stats::SETTLE,
            batches: (40 / rounds.max(1)).max(stats::MIN_BATCHES),
            per_batch: 32,
            budget: Duration::from_secs(8) / rounds.max(1) as u32,
        };
    }
    let per_batch = if scenario == THROUGHPUT { 1_000 } else { 2_500 };
    Plan {
        warmup: 2_000,
        settle: stats::SETTLE,
        batches: (40 / rounds.max(1)).max(stats::MIN_BATCHES),
        per_batch,
        budget: Duration::from_secs(8) / rounds.max(1) as u32,
    }
}

/// Runs the local benchmark and prints the report.
pub(crate) fn run(args: &Args) -> Result<(), String> {
    let machine = Machine::detect();
    stats::start_watchdog(
        Duration::from_secs(if args.quick { 60 } else { 240 }),
        "run",
    );
    let started = Instant::now();
    let filter = args.only.as_ref().map(|s| s.to_lowercase());
    let specs: Vec<&Spec> = SPECS
        .iter()
        .filter(|spec| {
            spec.name == COURIER
                || filter
                    .as_ref()
                    .is_none_or(|f| spec.name.to_lowercase().contains(f))
        })
        .collect();
    let schedule = args.rounds.schedule("local", args.quick, false);
    let rounds = schedule.rounds;
    let (measured, failed) = runner::run(
        &schedule,
        &specs,
        |spec| format!("{} {}", &spec.scenario[..3], spec.name),
        |spec, _round| Ok((spec.run)(&plan(spec.scenario, args.quick, rounds))),
    );
    let rows: Vec<Row> = measured
        .into_iter()
        .map(|m| {
            let spec = specs[m.spec];
            Row {
                scenario: spec.scenario,
                name: spec.name,
                subject: spec.name == COURIER,
                notes: spec.notes,
                load: m.load,
                summary: m.samples.summary(),
            }
        })
        .collect();
    let goals = report::goals_by_load(&rows, goals);
    let text = render(
        &machine,
        &rows,
        &goals,
        &failed,
        args.quick,
        rounds,
        started.elapsed(),
    );
    report::emit(
        "local",
        &text,
        &machine,
        &rows,
        &goals,
        args.markdown_out.as_deref(),
        args.json.as_deref(),
    )
}

/// The whole report: header, table, goals.
fn render(
    machine: &Machine,
    rows: &[Row],
    goals: &[Goal],
    failed: &[String],
    quick: bool,
    rounds: usize,
    took: Duration,
) -> String {
    let mut out = String::new();
    out.push_str("# courier-bench local\n\n");
    out.push_str(&machine.markdown());
    let plan1 = plan(SYNC, quick, rounds);
    let plan2 = plan(THROUGHPUT, quick, rounds);
    let plan4 = plan(LONG, quick, rounds);
    out.push_str(&runner::loads_note("threads"));
    out.push_str(&format!(
        "- method: {rounds} round(s) per load; each round measures every row once (starting at a different \
         row each round), and a row's samples from all rounds are pooled. A row makes its own channel and threads (or \
         tokio runtime), warms up ({} calls{}), then measures batches of round trips of a u64 \
         (reply = request + 1, checked): {}×{} per round in (1) and (3), {}×{} per client in (2); \
         a row stops early after {:?} of a round. Each round trip is timed with one \
         `Instant::now()` after the reply (chained timestamps). *median* and *p99* are over all \
         per-call samples; *calls/s* = measured calls / wall time of the measured phases (all \
         clients together in (2)); *round medians* show the spread between rounds; *CPU/call* \
         = the CPU time of every thread of this process during the measured phase \
         (`/proc/self/task/*/schedstat`) per call.{}\n\
         - scenarios: {SYNC} = one client thread, one server thread; {THROUGHPUT} = {CLIENTS} \
         client threads, one server thread; {ASYNC} = a client task and a server task spawned on \
         a multi-thread tokio runtime ({WORKERS} workers; both tasks may share one worker); \
         {LONG} = one client thread, one server thread that spins {LONG_WORK:?} before each \
         reply ({}×{} calls per round). crossbeam-channel and std::sync::mpsc have no async \
         API and are not in (3).\n\
         - ratios: {COURIER}/peer median below 1 means courier is faster; {COURIER}/peer \
         calls/s above 1 means courier is faster.\n\
         - wall time of the run: {:.1} s; load average after: {}\n\n",
        plan1.warmup,
        if plan1.settle.is_zero() {
            String::new()
        } else {
            format!(
                ", and for {:?} at least, so that a thread that adapts as it runs is measured \
                 settled",
                plan1.settle
            )
        },
        plan1.batches,
        plan1.per_batch,
        plan2.batches,
        plan2.per_batch,
        plan1.budget,
        if quick {
            " **--quick: tiny counts, numbers are not meaningful.**"
        } else {
            ""
        },
        plan4.batches,
        plan4.per_batch,
        took.as_secs_f64(),
        report::load_average(),
    ));
    out.push_str(&report::results(rows, goals, failed));
    out.push_str(
        "\n\"best peer\" is the fastest row of the same shape (a reply channel per request, or \
         the library's own request/response); the reused-reply-channel row is not of that \
         shape (one client only), and \"ahead of every peer\" counts it. courier's other rows \
         (its typed service, its opt-in busy-poll mode) and the spin floor are not peers.\n",
    );
    out
}

/// Median of `name`'s row in `scenario`.
fn find<'a>(rows: &'a [Row], scenario: &str, name: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.scenario == scenario && r.name == name)
}

/// The fastest same-shape peer (by median) of `scenario`.
fn best_peer<'a>(rows: &'a [Row], scenario: &'a str) -> Option<&'a Row> {
    report::peers(rows, scenario)
        .filter(|r| r.name != CROSSBEAM_REUSED)
        .min_by(|a, b| a.summary.median_ns.total_cmp(&b.summary.median_ns))
}

/// The goals of one load (`rows` are that load's), each with PASS or MISS (or nothing, when
/// a row was not measured): on the idle machine, the latency goals beside ump, the best peer,
/// the spin floor, the reused crossbeam channel and tokio, and the four-client tail; with a
/// core busy, ahead of every peer in every scenario.
fn goals(rows: &[Row], load: Load) -> Vec<Goal> {
    if load == Load::Busy {
        return [SYNC, THROUGHPUT, ASYNC, LONG]
            .into_iter()
            .flat_map(|scenario| report::ahead_of_every_peer(rows, scenario))
            .collect();
    }
    let mut goals = Vec::new();
    let median_goal = |text: String, scenario: &str, reference: Option<&Row>, limit: f64| {
        Goal::median(text, find(rows, scenario, COURIER), reference, limit)
    };
    for scenario in [SYNC, ASYNC] {
        goals.push(median_goal(
            format!("{scenario}: median round trip ≤ 0.5 × ump"),
            scenario,
            find(rows, scenario, UMP),
            0.5,
        ));
        goals.push(median_goal(
            format!("{scenario}: median round trip ≤ best peer"),
            scenario,
            best_peer(rows, scenario),
            1.0,
        ));
    }
    goals.push(median_goal(
        format!("{LONG}: median round trip ≤ best peer"),
        LONG,
        best_peer(rows, LONG),
        1.0,
    ));
    goals.push(Goal::informational_median(
        format!("{LONG}: courier ÷ the handler's work alone (informational)"),
        find(rows, LONG, COURIER),
        find(rows, LONG, LONG_FLOOR),
    ));
    goals.push(median_goal(
        format!("{SYNC}: median round trip ≤ 1.5 × the two-thread spin floor"),
        SYNC,
        find(rows, SYNC, SPIN_FLOOR),
        1.5,
    ));
    goals.push(Goal::informational_median(
        format!(
            "{SYNC}: with handler work, courier ÷ the spin floor with the same work (informational)"
        ),
        find(rows, SYNC, COURIER_WORK),
        find(rows, SYNC, SPIN_FLOOR_WORK),
    ));
    goals.push(median_goal(
        format!("{SYNC}: median round trip ≤ one reused crossbeam reply channel"),
        SYNC,
        find(rows, SYNC, CROSSBEAM_REUSED),
        1.0,
    ));
    goals.push(median_goal(
        format!("{ASYNC}: areq median ≤ tokio mpsc + oneshot"),
        ASYNC,
        find(rows, ASYNC, "tokio"),
        1.0,
    ));
    let text = format!("{THROUGHPUT}: calls/s ≥ 2 × ump");
    goals.push(
        match (find(rows, THROUGHPUT, COURIER), find(rows, THROUGHPUT, UMP)) {
            (Some(c), Some(u)) => {
                let q = c.summary.calls_per_s / u.summary.calls_per_s;
                Goal {
                    text,
                    courier: report::fmt_rate(c.summary.calls_per_s),
                    reference: format!("{} ({UMP})", report::fmt_rate(u.summary.calls_per_s)),
                    ratio: Some(q),
                    verdict: Verdict::of(q >= 2.0),
                    rounds: None,
                    paired: None,
                }
            }
            _ => Goal::not_measured(text),
        },
    );
    let text = format!("{THROUGHPUT}: p99 ≤ 3 × median");
    goals.push(match find(rows, THROUGHPUT, COURIER) {
        Some(c) => {
            let q = c.summary.p99_ns / c.summary.median_ns;
            Goal {
                text,
                courier: report::fmt_ns(c.summary.p99_ns),
                reference: format!("median {}", report::fmt_ns(c.summary.median_ns)),
                ratio: Some(q),
                verdict: Verdict::of(q <= 3.0),
                rounds: None,
                paired: None,
            }
        }
        None => Goal::not_measured(text),
    });
    let text = format!(
        "{THROUGHPUT}: p99 ≤ 3 × median within every round (a round the host slows \
         throughout moves the pooled figures, not this)"
    );
    goals.push(match find(rows, THROUGHPUT, COURIER) {
        Some(c) if c.summary.round_tail_max.is_finite() => {
            let q = c.summary.round_tail_max;
            Goal {
                text,
                courier: format!("{q:.2}× (worst of {} rounds)", c.summary.rounds),
                reference: "3×".into(),
                ratio: Some(q / 3.0),
                verdict: Verdict::of(q <= 3.0),
                rounds: None,
                paired: None,
            }
        }
        _ => Goal::not_measured(text),
    });
    goals
}

// ---------------------------------------------------------------------------------------------
// Running a server beside the measuring client(s).

/// Runs `server` on its own thread while `client` measures; `client` must drop its handles
/// before returning so that the server loop ends, and then the server thread is joined.
fn with_server_thread(
    server: impl FnOnce() + Send + 'static,
    client: impl FnOnce() -> Samples,
) -> Samples {
    let handle = thread::Builder::new()
        .name("bench-server".into())
        .spawn(server)
        .expect("spawning the server thread");
    let samples = client();
    handle.join().expect("server thread panicked");
    samples
}

/// The multi-thread runtime of scenario (3).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("building the tokio runtime")
}

/// Spawns `server` and a client task that measures with `client`, both on a fresh runtime;
/// waits for the client, then for the server (which ends when the client's handles drop).
fn with_server_task<S, C>(server: S, client: C) -> Samples
where
    S: std::future::Future<Output = ()> + Send + 'static,
    C: std::future::Future<Output = Samples> + Send + 'static,
{
    let rt = runtime();
    rt.block_on(async move {
        let server = tokio::spawn(server);
        let samples = tokio::spawn(client).await.expect("client task panicked");
        server.await.expect("server task panicked");
        samples
    })
}

// ---------------------------------------------------------------------------------------------
// courier::local

struct CourierAsync(courier::local::Client<u64, u64, ()>);

impl AsyncCall for CourierAsync {
    async fn call(&mut self, x: u64) -> u64 {
        self.0.areq(x).await.expect("courier areq")
    }
}

/// A server loop that answers `x` with `work(x)`.
fn courier_serve(server: courier::local::Server<u64, u64, ()>, work: fn(u64) -> u64) {
    while let Ok((x, rctx)) = server.wait() {
        let _ = rctx.reply(work(x));
    }
}

fn courier_sync(plan: &Plan) -> Samples {
    courier_sync_polling(plan, Duration::ZERO, plus_one)
}

fn courier_busy_poll_sync(plan: &Plan) -> Samples {
    courier_sync_polling(plan, Duration::from_secs(1), plus_one)
}

/// One client's `req` over courier::local, both sides busy-polling up to `limit` (`ZERO`:
/// the default adaptive wait), against a server that answers `x` with `work(x)`.
fn courier_sync_polling(plan: &Plan, limit: Duration, work: fn(u64) -> u64) -> Samples {
    let (server, client) = courier::local::channel::<u64, u64, ()>();
    server.set_busy_poll(limit);
    client.set_busy_poll(limit);
    with_server_thread(
        move || courier_serve(server, work),
        move || stats::measure_sync(plan, |x| client.req(x).expect("courier req")),
    )
}

/// What the handler-work rows' servers compute before they answer `x`: [`WORK_ROUNDS`]
/// dependent xorshift rounds (tens of nanoseconds), then the usual `x + 1` (wrapping: the
/// floor's server also works on its stop word).
fn handler_work(x: u64) -> u64 {
    let mut h = std::hint::black_box(x) | 1;
    for _ in 0..WORK_ROUNDS {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
    }
    std::hint::black_box(h);
    x.wrapping_add(1)
}

fn courier_work_sync(plan: &Plan) -> Samples {
    courier_sync_polling(plan, Duration::ZERO, handler_work)
}

/// The answer of every row's server but the handler-work ones: `x + 1`.
fn plus_one(x: u64) -> u64 {
    x + 1
}

/// The handler of scenario (4): spins for [`LONG_WORK`] (reading the clock), then `x + 1`.
fn long_work(x: u64) -> u64 {
    let start = Instant::now();
    while start.elapsed() < LONG_WORK {
        std::hint::spin_loop();
    }
    x.wrapping_add(1)
}

fn courier_long(plan: &Plan) -> Samples {
    courier_sync_polling(plan, Duration::ZERO, long_work)
}

/// The floor of scenario (4): the work alone, on the measuring thread.
fn long_floor(plan: &Plan) -> Samples {
    stats::measure_sync(plan, long_work)
}

/// The benchmark's service: the same u64 + 1 as every other row.
#[courier::service]
trait Inc {
    fn inc(&self, x: u64) -> u64;
}

struct Adder;

impl Inc for Adder {
    fn inc(&self, x: u64) -> u64 {
        x + 1
    }
}

fn service_sync(plan: &Plan) -> Samples {
    let (client, server) = IncClient::pair();
    with_server_thread(
        move || server.serve(Adder).expect("serve"),
        move || stats::measure_sync(plan, |x| client.inc(x).expect("IncClient::inc")),
    )
}

fn courier_throughput(plan: &Plan) -> Samples {
    let (server, client) = courier::local::channel::<u64, u64, ()>();
    with_server_thread(
        move || courier_serve(server, plus_one),
        move || {
            let clients = (0..CLIENTS)
                .map(|_| {
                    let client = client.clone();
                    move |x| client.req(x).expect("courier req")
                })
                .collect();
            drop(client);
            stats::measure_threads(plan, clients)
        },
    )
}

fn courier_async(plan: &Plan) -> Samples {
    let plan = *plan;
    let (server, client) = courier::local::channel::<u64, u64, ()>();
    with_server_task(
        async move {
            while let Ok((x, rctx)) = server.async_wait().await {
                let _ = rctx.reply(x + 1);
            }
        },
        async move { stats::measure_async(plan, CourierAsync(client)).await },
    )
}

// ---------------------------------------------------------------------------------------------
// ump 0.13

/// A server loop that answers `x` with `work(x)`.
fn ump_serve(server: ump::Server<u64, u64, ()>, work: fn(u64) -> u64) {
    while let Ok((x, rctx)) = server.wait() {
        let _ = rctx.reply(work(x));
    }
}

fn ump_sync(plan: &Plan) -> Samples {
    ump_sync_with(plan, plus_one)
}

fn ump_long(plan: &Plan) -> Samples {
    ump_sync_with(plan, long_work)
}

/// One client's `req` against a server that answers `x` with `work(x)`.
fn ump_sync_with(plan: &Plan, work: fn(u64) -> u64) -> Samples {
    let (server, client) = ump::channel::<u64, u64, ()>();
    with_server_thread(
        move || ump_serve(server, work),
        move || stats::measure_sync(plan, |x| client.req(x).expect("ump req")),
    )
}

fn ump_throughput(plan: &Plan) -> Samples {
    let (server, client) = ump::channel::<u64, u64, ()>();
    with_server_thread(
        move || ump_serve(server, plus_one),
        move || {
            let clients = (0..CLIENTS)
                .map(|_| {
                    let client = client.clone();
                    move |x| client.req(x).expect("ump req")
                })
                .collect();
            drop(client);
            stats::measure_threads(plan, clients)
        },
    )
}

struct UmpAsync(ump::Client<u64, u64, ()>);

impl AsyncCall for UmpAsync {
    async fn call(&mut self, x: u64) -> u64 {
        self.0.areq(x).await.expect("ump areq")
    }
}

fn ump_async(plan: &Plan) -> Samples {
    let plan = *plan;
    let (server, client) = ump::channel::<u64, u64, ()>();
    with_server_task(
        async move {
            while let Ok((x, rctx)) = server.async_wait().await {
                let _ = rctx.reply(x + 1);
            }
        },
        async move { stats::measure_async(plan, UmpAsync(client)).await },
    )
}

// ---------------------------------------------------------------------------------------------
// crossbeam-channel

type CbRequest = (u64, crossbeam_channel::Sender<u64>);

/// A server loop that answers `x` with `work(x)`.
fn crossbeam_serve(requests: crossbeam_channel::Receiver<CbRequest>, work: fn(u64) -> u64) {
    for (x, reply) in requests {
        let _ = reply.send(work(x));
    }
}

fn crossbeam_call(requests: &crossbeam_channel::Sender<CbRequest>, x: u64) -> u64 {
    let (reply, replies) = crossbeam_channel::bounded(1);
    requests.send((x, reply)).expect("crossbeam send");
    replies.recv().expect("crossbeam recv")
}

fn crossbeam_sync(plan: &Plan) -> Samples {
    crossbeam_sync_with(plan, plus_one)
}

fn crossbeam_long(plan: &Plan) -> Samples {
    crossbeam_sync_with(plan, long_work)
}

/// One client's calls against a server that answers `x` with `work(x)`.
fn crossbeam_sync_with(plan: &Plan, work: fn(u64) -> u64) -> Samples {
    let (tx, rx) = crossbeam_channel::unbounded();
    with_server_thread(
        move || crossbeam_serve(rx, work),
        move || stats::measure_sync(plan, |x| crossbeam_call(&tx, x)),
    )
}

/// The two-thread spin floor: the client stores a sequence number, the server spins until it
/// sees it and stores it back. Both spin on `spin_loop`, yielding the CPU only after 1024
/// fruitless looks (never on an idle machine, where an answer takes a few hundred spins; it
/// keeps a preempted peer from costing a whole scheduler slice on a busy one).
fn spin_floor(plan: &Plan) -> Samples {
    spin_floor_with(plan, None)
}

fn spin_floor_work(plan: &Plan) -> Samples {
    spin_floor_with(plan, Some(handler_work))
}

/// The spin floor, its server calling `work` (if any) on each request before it answers.
fn spin_floor_with(plan: &Plan, work: Option<fn(u64) -> u64>) -> Samples {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    #[repr(align(128))]
    struct Line(AtomicU64);
    const STOP: u64 = u64::MAX;
    fn until(word: &AtomicU64, pred: impl Fn(u64) -> bool) -> u64 {
        let mut spins = 0u32;
        loop {
            let v = word.load(Ordering::Acquire);
            if pred(v) {
                return v;
            }
            spins += 1;
            if spins % 1024 == 0 {
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
    let words = Arc::new([Line(AtomicU64::new(0)), Line(AtomicU64::new(0))]);
    let server_words = Arc::clone(&words);
    with_server_thread(
        move || {
            let [rq, rp] = &*server_words;
            let mut last = 0;
            loop {
                last = until(&rq.0, |v| v != last);
                if let Some(work) = work {
                    std::hint::black_box(work(last));
                }
                rp.0.store(last, Ordering::Release);
                if last == STOP {
                    return;
                }
            }
        },
        move || {
            let [rq, rp] = &*words;
            let mut seq = 0u64;
            let samples = stats::measure_sync(plan, |x| {
                seq += 1;
                rq.0.store(seq, Ordering::Release);
                until(&rp.0, |v| v == seq);
                x + 1
            });
            rq.0.store(STOP, Ordering::Release);
            samples
        },
    )
}

fn crossbeam_reused_sync(plan: &Plan) -> Samples {
    let (tx, rx) = crossbeam_channel::unbounded::<u64>();
    let (reply_tx, reply_rx) = crossbeam_channel::bounded::<u64>(1);
    with_server_thread(
        move || {
            for x in rx {
                let _ = reply_tx.send(x + 1);
            }
        },
        move || {
            stats::measure_sync(plan, |x| {
                tx.send(x).expect("crossbeam send");
                reply_rx.recv().expect("crossbeam recv")
            })
        },
    )
}

fn crossbeam_throughput(plan: &Plan) -> Samples {
    let (tx, rx) = crossbeam_channel::unbounded();
    with_server_thread(
        move || crossbeam_serve(rx, plus_one),
        move || {
            let clients = (0..CLIENTS)
                .map(|_| {
                    let tx = tx.clone();
                    move |x| crossbeam_call(&tx, x)
                })
                .collect();
            drop(tx);
            stats::measure_threads(plan, clients)
        },
    )
}

// ---------------------------------------------------------------------------------------------
// flume

type FlumeRequest = (u64, flume::Sender<u64>);

fn flume_serve(requests: flume::Receiver<FlumeRequest>) {
    for (x, reply) in requests {
        let _ = reply.send(x + 1);
    }
}

fn flume_call(requests: &flume::Sender<FlumeRequest>, x: u64) -> u64 {
    let (reply, replies) = flume::bounded(1);
    requests.send((x, reply)).expect("flume send");
    replies.recv().expect("flume recv")
}

fn flume_sync(plan: &Plan) -> Samples {
    let (tx, rx) = flume::unbounded();
    with_server_thread(
        move || flume_serve(rx),
        move || stats::measure_sync(plan, |x| flume_call(&tx, x)),
    )
}

fn flume_throughput(plan: &Plan) -> Samples {
    let (tx, rx) = flume::unbounded();
    with_server_thread(
        move || flume_serve(rx),
        move || {
            let clients = (0..CLIENTS)
                .map(|_| {
                    let tx = tx.clone();
                    move |x| flume_call(&tx, x)
                })
                .collect();
            drop(tx);
            stats::measure_threads(plan, clients)
        },
    )
}

struct FlumeAsync(flume::Sender<FlumeRequest>);

impl AsyncCall for FlumeAsync {
    async fn call(&mut self, x: u64) -> u64 {
        let (reply, replies) = flume::bounded(1);
        self.0
            .send_async((x, reply))
            .await
            .expect("flume send_async");
        replies.recv_async().await.expect("flume recv_async")
    }
}

fn flume_async(plan: &Plan) -> Samples {
    let plan = *plan;
    let (tx, rx) = flume::unbounded::<FlumeRequest>();
    with_server_task(
        async move {
            while let Ok((x, reply)) = rx.recv_async().await {
                let _ = reply.send_async(x + 1).await;
            }
        },
        async move { stats::measure_async(plan, FlumeAsync(tx)).await },
    )
}

// ---------------------------------------------------------------------------------------------
// std::sync::mpsc

type StdRequest = (u64, std::sync::mpsc::SyncSender<u64>);

/// A server loop that answers `x` with `work(x)`.
fn std_serve(requests: std::sync::mpsc::Receiver<StdRequest>, work: fn(u64) -> u64) {
    for (x, reply) in requests {
        let _ = reply.send(work(x));
    }
}

fn std_call(requests: &std::sync::mpsc::Sender<StdRequest>, x: u64) -> u64 {
    let (reply, replies) = std::sync::mpsc::sync_channel(1);
    requests.send((x, reply)).expect("std send");
    replies.recv().expect("std recv")
}

fn std_sync(plan: &Plan) -> Samples {
    std_sync_with(plan, plus_one)
}

fn std_long(plan: &Plan) -> Samples {
    std_sync_with(plan, long_work)
}

/// One client's calls against a server that answers `x` with `work(x)`.
fn std_sync_with(plan: &Plan, work: fn(u64) -> u64) -> Samples {
    let (tx, rx) = std::sync::mpsc::channel();
    with_server_thread(
        move || std_serve(rx, work),
        move || stats::measure_sync(plan, |x| std_call(&tx, x)),
    )
}

fn std_throughput(plan: &Plan) -> Samples {
    let (tx, rx) = std::sync::mpsc::channel();
    with_server_thread(
        move || std_serve(rx, plus_one),
        move || {
            let clients = (0..CLIENTS)
                .map(|_| {
                    let tx = tx.clone();
                    move |x| std_call(&tx, x)
                })
                .collect();
            drop(tx);
            stats::measure_threads(plan, clients)
        },
    )
}

// ---------------------------------------------------------------------------------------------
// tokio (mpsc + oneshot)

type TokioRequest = (u64, tokio::sync::oneshot::Sender<u64>);

fn tokio_serve(mut requests: tokio::sync::mpsc::UnboundedReceiver<TokioRequest>) {
    while let Some((x, reply)) = requests.blocking_recv() {
        let _ = reply.send(x + 1);
    }
}

fn tokio_call(requests: &tokio::sync::mpsc::UnboundedSender<TokioRequest>, x: u64) -> u64 {
    let (reply, replies) = tokio::sync::oneshot::channel();
    requests.send((x, reply)).expect("tokio send");
    replies.blocking_recv().expect("tokio blocking_recv")
}

fn tokio_sync(plan: &Plan) -> Samples {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    with_server_thread(
        move || tokio_serve(rx),
        move || stats::measure_sync(plan, |x| tokio_call(&tx, x)),
    )
}

fn tokio_throughput(plan: &Plan) -> Samples {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    with_server_thread(
        move || tokio_serve(rx),
        move || {
            let clients = (0..CLIENTS)
                .map(|_| {
                    let tx = tx.clone();
                    move |x| tokio_call(&tx, x)
                })
                .collect();
            drop(tx);
            stats::measure_threads(plan, clients)
        },
    )
}

struct TokioAsync(tokio::sync::mpsc::UnboundedSender<TokioRequest>);

impl AsyncCall for TokioAsync {
    async fn call(&mut self, x: u64) -> u64 {
        let (reply, replies) = tokio::sync::oneshot::channel();
        self.0.send((x, reply)).expect("tokio send");
        replies.await.expect("tokio oneshot")
    }
}

fn tokio_async(plan: &Plan) -> Samples {
    let plan = *plan;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<TokioRequest>();
    with_server_task(
        async move {
            while let Some((x, reply)) = rx.recv().await {
                let _ = reply.send(x + 1);
            }
        },
        async move { stats::measure_async(plan, TokioAsync(tx)).await },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scenario: &'static str, name: &'static str, median_ns: f64, calls_per_s: f64) -> Row {
        report::test_row(
            scenario,
            name,
            name == COURIER,
            Load::Idle,
            median_ns,
            calls_per_s,
        )
    }

    #[test]
    fn goals_compare_courier_with_ump_and_the_best_same_shape_peer() {
        let rows = [
            row(SYNC, COURIER, 1_000.0, 0.0),
            row(SYNC, UMP, 2_500.0, 0.0),
            row(SYNC, "flume", 900.0, 0.0),
            row(SYNC, SPIN_FLOOR, 800.0, 0.0),
            row(SYNC, CROSSBEAM_REUSED, 100.0, 0.0),
            row(SYNC, COURIER_WORK, 1_200.0, 0.0),
            row(SYNC, SPIN_FLOOR_WORK, 50.0, 0.0),
            row(THROUGHPUT, COURIER, 1.0, 300.0),
            row(THROUGHPUT, UMP, 0.0, 100.0),
            row(ASYNC, COURIER, 500.0, 0.0),
            row(ASYNC, UMP, 900.0, 0.0),
            row(ASYNC, "tokio", 450.0, 0.0),
            row(LONG, COURIER, 300_000.0, 0.0),
            row(LONG, UMP, 340_000.0, 0.0),
            row(LONG, LONG_FLOOR, 250_000.0, 0.0),
        ];
        let goals = goals(&rows, Load::Idle);
        let verdicts: Vec<Verdict> = goals.iter().map(|g| g.verdict).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Pass, // (1) 1000 <= 0.5 * 2500
                Verdict::Miss, // (1) flume (900) is faster; the reused row and the floors do not count
                Verdict::Miss, // (3) 500 > 0.5 * 900
                Verdict::Miss, // (3) best peer is tokio (450)
                Verdict::Pass, // (4) 300 µs <= ump's 340 µs; the floor is not a peer
                Verdict::Info, // (4) 300 / 250 µs, no goal attached
                Verdict::Pass, // (1) 1000 <= 1.5 * 800 (spin floor)
                Verdict::Info, // (1) with handler work: 1200 / 50, no goal attached
                Verdict::Miss, // (1) the reused reply channel (100) is faster
                Verdict::Miss, // (3) tokio (450) is faster
                Verdict::Pass, // (2) 300 >= 2 * 100
                Verdict::Pass, // (2) p99 = 2 x median
                Verdict::Pass, // (2) the same within its one round
            ]
        );
        assert!(goals[1].reference.contains("flume"));
        assert!(goals[3].reference.contains("tokio"));
        assert!(goals[4].reference.contains(UMP));
        assert_eq!(goals[5].ratio, Some(1.2));
        assert_eq!(goals[7].ratio, Some(24.0));
    }

    #[test]
    fn the_round_tail_goal_takes_the_worst_round() {
        let mut four = row(THROUGHPUT, COURIER, 100.0, 1.0);
        // Pooled, a slow round puts the p99 at 5 x the median; within rounds, at most 2.5 x.
        four.summary.p99_ns = 500.0;
        four.summary.round_tail_max = 2.5;
        let goals = goals(&[four.clone()], Load::Idle);
        let verdict = |start: &str| {
            let g = goals.iter().filter(|g| g.text.starts_with(start));
            g.map(|g| g.verdict).collect::<Vec<_>>()
        };
        let prefix = format!("{THROUGHPUT}: p99");
        assert_eq!(verdict(&prefix), [Verdict::Miss, Verdict::Pass]);
        four.summary.round_tail_max = 3.5;
        let goals = super::goals(&[four], Load::Idle);
        assert_eq!(goals.last().map(|g| g.verdict), Some(Verdict::Miss));
    }

    #[test]
    fn busy_goals_want_courier_ahead_of_every_peer() {
        let rows = [
            row(SYNC, COURIER, 1_000.0, 50.0),
            row(SYNC, UMP, 2_500.0, 40.0),
            row(SYNC, SPIN_FLOOR, 10.0, 900.0),
        ];
        let goals = goals(&rows, Load::Busy);
        // Median, p99, calls/s and CPU/call in each of the four scenarios; only (1) measured.
        assert_eq!(goals.len(), 4 * 4 - 3 * 3);
        let verdicts: Vec<Verdict> = goals[..4].iter().map(|g| g.verdict).collect();
        // The floor is not a peer; ump is slower, so no peer is as fast (CPU: info).
        assert_eq!(
            verdicts,
            [Verdict::Pass, Verdict::Pass, Verdict::Pass, Verdict::Info]
        );
        assert!(goals[4..].iter().all(|g| g.verdict == Verdict::NotMeasured));
    }

    #[test]
    fn goals_without_rows_are_not_measured() {
        let rows = [row(SYNC, COURIER, 1_000.0, 0.0)];
        let goals = goals(&rows, Load::Idle);
        assert_eq!(goals.len(), 13);
        assert!(goals.iter().all(|g| g.verdict == Verdict::NotMeasured));
    }
}
