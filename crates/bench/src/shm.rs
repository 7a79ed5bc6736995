//! `courier-bench shm`: courier::shm's `ShmChannel` beside crossbar 1.2 (`Channel`), iceoryx2
//! 0.10 (publish-subscribe ping-pong), a Unix domain socket and a pipe pair, between two
//! processes, on round trips of 8 B, 64 KiB, 1 MiB and 16 MiB.
//!
//! Every row starts its own peer process: this binary again, as `courier-bench shm --peer KIND
//! --size N --name NAME` (hidden options). The peer echoes each request with a reply of the same
//! size. Both sides write the whole payload of every message they send (a memset, in place in
//! shared memory where the transport lends a block) and check the first and last byte of every
//! message they receive: request bytes are a tag `t` (1..=200, changing every call), reply bytes
//! `t + 1`. A request whose bytes are 0 tells the peer to stop. The parent kills and reaps its
//! peer when a row ends (after a bounded wait for a clean exit), peers die with their parent
//! (`PR_SET_PDEATHSIG`), and both sides have a watchdog.
//!
//! The "floor: no IPC" rows do the same payload work (memset and check both messages) in one
//! process with no transport at all: what any round trip of that size must cost at least.

use crate::proc::{self, Peer, OP_TIMEOUT};
use crate::report::{self, Goal, Machine, Row, Verdict};
use crate::runner::{self, Load};
use crate::stats::{self, Plan, Samples};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options of `courier-bench shm`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Tiny iteration counts, for a smoke test that runs in a few seconds.
    #[arg(long)]
    quick: bool,
    /// Only rows whose name contains this text (case-insensitive); courier and the floor are
    /// always kept.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// Rounds (a new peer process each time) and machine loads.
    #[command(flatten)]
    rounds: runner::RoundArgs,
    /// Also write the report (markdown) to this file.
    #[arg(long, value_name = "FILE")]
    markdown_out: Option<PathBuf>,
    /// Also write the results (machine, rows in nanoseconds, goals) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Internal: run as the peer process of a row of this kind.
    #[arg(long, hide = true, value_name = "KIND")]
    peer: Option<String>,
    /// Internal: the message size of the peer's row.
    #[arg(long, hide = true, default_value_t = 8)]
    size: usize,
    /// Internal: the channel name (or socket path) of the peer's row.
    #[arg(long, hide = true, default_value = "")]
    name: String,
}

/// The name of courier's rows.
const COURIER: &str = "courier::shm";
/// The name of the floor rows.
const FLOOR: &str = "floor: no IPC";

/// A message size and the labels of its two scenarios.
struct Size {
    bytes: usize,
    busy: &'static str,
    blocking: &'static str,
}

const SIZES: [Size; 4] = [
    Size {
        bytes: 8,
        busy: "8 B busy-wait",
        blocking: "8 B blocking",
    },
    Size {
        bytes: 64 << 10,
        busy: "64 KiB busy-wait",
        blocking: "64 KiB blocking",
    },
    Size {
        bytes: 1 << 20,
        busy: "1 MiB busy-wait",
        blocking: "1 MiB blocking",
    },
    Size {
        bytes: 16 << 20,
        busy: "16 MiB busy-wait",
        blocking: "16 MiB blocking",
    },
];

/// One kind of row: a transport and how its receiver waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    CourierSpin,
    CourierBlock,
    CrossbarSpin,
    CrossbarBlock,
    IoxSpin,
    IoxEvent,
    Uds,
    Pipe,
    Floor,
}

const KINDS: [Kind; 9] = [
    Kind::Floor,
    Kind::CourierSpin,
    Kind::CrossbarSpin,
    Kind::IoxSpin,
    Kind::CourierBlock,
    Kind::CrossbarBlock,
    Kind::IoxEvent,
    Kind::Uds,
    Kind::Pipe,
];

impl Kind {
    /// The value of `--peer`.
    fn arg(self) -> &'static str {
        match self {
            Kind::CourierSpin => "courier-spin",
            Kind::CourierBlock => "courier-block",
            Kind::CrossbarSpin => "crossbar-spin",
            Kind::CrossbarBlock => "crossbar-block",
            Kind::IoxSpin => "iceoryx2-spin",
            Kind::IoxEvent => "iceoryx2-event",
            Kind::Uds => "uds",
            Kind::Pipe => "pipe",
            Kind::Floor => "floor",
        }
    }

    fn from_arg(arg: &str) -> Option<Kind> {
        KINDS.iter().copied().find(|k| k.arg() == arg)
    }

    /// The row's name.
    fn name(self) -> &'static str {
        match self {
            Kind::CourierSpin | Kind::CourierBlock => COURIER,
            Kind::CrossbarSpin | Kind::CrossbarBlock => "crossbar 1.2",
            Kind::IoxSpin | Kind::IoxEvent => "iceoryx2 0.10",
            Kind::Uds => "UnixStream",
            Kind::Pipe => "pipe pair",
            Kind::Floor => FLOOR,
        }
    }

    /// True when the receiver waits by busy-polling.
    fn busy(self) -> bool {
        matches!(
            self,
            Kind::CourierSpin | Kind::CrossbarSpin | Kind::IoxSpin | Kind::Floor
        )
    }

    fn notes(self) -> &'static str {
        match self {
            Kind::CourierSpin => "ShmChannel::loan → memset in the block (view fill) → publish(n); recv_with(BusySpin), first/last byte copied out of the view",
            Kind::CourierBlock => "ShmChannel::loan → memset in the block (view fill) → publish(n); recv_with(Timeout(10 s)) (spin, then futex), first/last byte copied out of the view",
            Kind::CrossbarSpin => "Channel::loan → memset → set_len → publish; recv_with(BusySpin), read in place; heartbeat() every 256 messages (every message when large)",
            Kind::CrossbarBlock => "Channel::loan → memset → set_len → publish; recv() (default Adaptive: spin, then futex), read in place; heartbeat() as busy row",
            Kind::IoxSpin => "publish-subscribe [u8] on two services; loan_slice_uninit → memset → send; busy-poll receive(), read in place",
            Kind::IoxEvent => "as the busy-poll row, plus an event service each way: Notifier::notify after send; receive(), else Listener::timed_wait (10 s)",
            Kind::Uds => "std UnixStream (listener in a temp dir): write_all / read_exact, 10 s socket timeouts; the kernel copies in and out",
            Kind::Pipe => "the peer's stdin and stdout: write_all / read_exact, default 64 KiB pipe buffer; the kernel copies in and out",
            Kind::Floor => "one process, no transport: memset the request, check it, memset the reply, check it",
        }
    }

    /// Whether this kind runs at `bytes`.
    fn runs_at(self, bytes: usize) -> bool {
        self != Kind::Floor || bytes > 8
    }
}

/// The plan of a size, full or quick.
fn plan(bytes: usize, quick: bool, rounds: usize) -> Plan {
    let budget = Duration::from_millis(1500) / rounds.max(1) as u32;
    if quick {
        return Plan {
            warmup: 3,
            settle: Duration::ZERO,
            batches: stats::MIN_BATCHES,
            per_batch: if bytes >= 16 << 20 { 2 } else { 10 },
            budget,
        };
    }
    // Every row takes 10 batches a round, of 8–40 ms in all at the small sizes: a round much
    // shorter than a scheduler's time slice (a few ms) would show, with a core busy, whether a
    // slice happened to end in it rather than how often slices end. At 1 and 16 MiB, where
    // courier and the best peer both run at the memset floor and a noisy neighbour moves that
    // floor by ±10 % within seconds, about 150–200 ms (at most the row's budget), so that one
    // burst of the host's weighs less in a round's median.
    let (warmup, batches, per_batch) = match bytes {
        0..=4096 => (1_000, 50, 2_000),
        4097..=65536 => (100, 50, 1_000),
        65537..=1_048_576 => (10, 50, 400),
        _ => (2, 50, 16),
    };
    Plan {
        warmup,
        settle: stats::SETTLE,
        batches: (batches / rounds.max(1)).max(stats::MIN_BATCHES),
        per_batch,
        budget,
    }
}

/// The request tag of call `x`: never 0 (the stop message), the reply carries `tag + 1`.
fn tag(x: u64) -> u8 {
    (x % 200) as u8 + 1
}

/// Checks a received payload: its length and its first and last bytes.
fn check(msg: &[u8], n: usize, expect: u8) -> Result<(), String> {
    if msg.len() != n || msg[0] != expect || msg[n - 1] != expect {
        return Err(format!(
            "bad message: {} bytes (expected {n}), first {:?}, last {:?}, expected {expect}",
            msg.len(),
            msg.first(),
            msg.last()
        ));
    }
    Ok(())
}

/// Runs the shm benchmark (or, with `--peer`, one peer process) and prints the report.
pub(crate) fn run(args: &Args) -> Result<(), String> {
    if let Some(kind) = &args.peer {
        let kind = Kind::from_arg(kind).ok_or_else(|| format!("unknown peer kind {kind}"))?;
        return run_peer(kind, args.size, &args.name);
    }
    let machine = Machine::detect();
    // One private runtime directory for courier's names, set before any thread starts.
    let dir = proc::runtime_dir("shm")?;
    stats::start_watchdog(
        Duration::from_secs(if args.quick { 60 } else { 240 }),
        "run",
    );
    let started = Instant::now();
    let result = measure_all(args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let (rows, failed) = result;
    let goals = report::goals_by_load(&rows, goals);
    let rounds = args.rounds.rounds(args.quick);
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
        "shm",
        &text,
        &machine,
        &rows,
        &goals,
        args.markdown_out.as_deref(),
        args.json.as_deref(),
    )
}

/// Measures every selected row in each round (a row that fails once is dropped); returns the
/// rows and the failures.
fn measure_all(args: &Args, dir: &Path) -> (Vec<Row>, Vec<String>) {
    let filter = args.only.as_ref().map(|s| s.to_lowercase());
    let mut specs = Vec::new();
    for (si, size) in SIZES.iter().enumerate() {
        for (ki, &kind) in KINDS.iter().enumerate() {
            let keep = kind.name() == COURIER
                || kind == Kind::Floor
                || filter
                    .as_ref()
                    .is_none_or(|f| kind.name().to_lowercase().contains(f));
            if keep && kind.runs_at(size.bytes) {
                specs.push((si, ki, size, kind));
            }
        }
    }
    let schedule = args.rounds.schedule("shm", args.quick, false);
    let rounds = schedule.rounds;
    let mut count = 0;
    let (measured, failed) = runner::run(
        &schedule,
        &specs,
        |&(_, _, size, kind)| format!("{} {} ({})", scenario(size, kind), kind.name(), kind.arg()),
        |&(_, _, size, kind), _round| {
            count += 1;
            let name = format!("cb{}-{count}", std::process::id());
            measure_row(
                kind,
                size.bytes,
                &name,
                dir,
                &plan(size.bytes, args.quick, rounds),
            )
        },
    );
    let rows = measured
        .into_iter()
        .map(|m| {
            let (_, _, size, kind) = specs[m.spec];
            Row {
                scenario: scenario(size, kind),
                name: kind.name(),
                subject: kind.name() == COURIER,
                notes: kind.notes(),
                load: m.load,
                summary: m.samples.summary(),
            }
        })
        .collect();
    (rows, failed)
}

/// The scenario of a row: the size and whether the receiver busy-waits.
fn scenario(size: &Size, kind: Kind) -> &'static str {
    if kind.busy() {
        size.busy
    } else {
        size.blocking
    }
}

/// The client side of one row: one round trip per call.
trait Client {
    /// Sends a request of tag `t` and checks the reply (tag `t + 1`).
    fn round_trip(&mut self, t: u8) -> Result<(), String>;
    /// Sends the stop message.
    fn stop(&mut self) -> Result<(), String>;
}

/// Starts the peer of a row: `courier-bench shm --peer KIND --size N --name NAME`.
fn spawn(kind: Kind, n: usize, name: &str, piped: bool) -> Result<Peer, String> {
    let size = n.to_string();
    Peer::spawn(
        &["shm", "--peer", kind.arg(), "--size", &size, "--name", name],
        piped,
    )
}

/// Measures one row: starts the peer, connects, measures, stops the peer.
fn measure_row(
    kind: Kind,
    n: usize,
    name: &str,
    dir: &Path,
    plan: &Plan,
) -> Result<Samples, String> {
    if kind == Kind::Floor {
        let mut request = vec![0u8; n];
        let mut reply = vec![0u8; n];
        let mut client = Floor {
            request: &mut request,
            reply: &mut reply,
        };
        return measure_client(&mut client, plan);
    }
    let mut peer;
    let mut client: Box<dyn Client> = match kind {
        Kind::CourierSpin | Kind::CourierBlock => {
            peer = spawn(kind, n, name, false)?;
            Box::new(courier_side::Parent::new(kind, n, name)?)
        }
        Kind::CrossbarSpin | Kind::CrossbarBlock => {
            peer = spawn(kind, n, name, false)?;
            Box::new(crossbar_side::Parent::new(kind, n, name)?)
        }
        Kind::IoxSpin | Kind::IoxEvent => {
            let parent = iox_side::Parent::new(kind == Kind::IoxEvent, n, name)?;
            peer = spawn(kind, n, name, false)?;
            parent.wait_for_peer()?;
            Box::new(parent)
        }
        Kind::Uds => {
            let path = dir.join(format!("{name}.sock"));
            let listener = UnixListener::bind(&path)
                .map_err(|e| format!("binding {}: {e}", path.display()))?;
            let path_text = path.to_str().ok_or("temp path is not UTF-8")?;
            peer = spawn(kind, n, path_text, false)?;
            Box::new(Stream::new(proc::accept(&listener)?, n)?)
        }
        Kind::Pipe => {
            peer = spawn(kind, n, name, true)?;
            let child = peer.child_mut().ok_or("no child")?;
            let stdin = child.stdin.take().ok_or("no stdin")?;
            let stdout = child.stdout.take().ok_or("no stdout")?;
            Box::new(Pipe {
                w: stdin,
                r: stdout,
                buf: vec![0u8; n],
            })
        }
        Kind::Floor => unreachable!("handled above"),
    };
    let samples = measure_client(client.as_mut(), plan)?;
    let stopped = client.stop();
    drop(client);
    let clean = peer.finish();
    if kind == Kind::CrossbarSpin || kind == Kind::CrossbarBlock {
        crossbar_side::remove_files(name);
    }
    stopped?;
    if !clean {
        return Err("the peer did not exit cleanly".into());
    }
    Ok(samples)
}

/// Times the client's round trips with the plan; the first error ends the row.
fn measure_client(client: &mut dyn Client, plan: &Plan) -> Result<Samples, String> {
    stats::measure_fallible(plan, |x| {
        client.round_trip(tag(x)).map(|()| x.wrapping_add(1))
    })
}

/// The floor: the payload work of a round trip, in one process.
struct Floor<'a> {
    request: &'a mut [u8],
    reply: &'a mut [u8],
}

impl Client for Floor<'_> {
    fn round_trip(&mut self, t: u8) -> Result<(), String> {
        let n = self.request.len();
        self.request.fill(t);
        check(std::hint::black_box(&*self.request), n, t)?;
        self.reply.fill(t.wrapping_add(1));
        check(std::hint::black_box(&*self.reply), n, t.wrapping_add(1))
    }

    fn stop(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// A byte stream (socket) client: write_all, then read_exact.
struct Stream {
    s: UnixStream,
    buf: Vec<u8>,
}

impl Stream {
    fn new(s: UnixStream, n: usize) -> Result<Stream, String> {
        proc::bound_socket(&s)?;
        Ok(Stream {
            s,
            buf: vec![0u8; n],
        })
    }
}

/// One round trip over a writer and a reader of the same size as `buf`.
fn stream_round_trip(
    w: &mut impl Write,
    r: &mut impl Read,
    buf: &mut [u8],
    t: u8,
) -> Result<(), String> {
    let n = buf.len();
    buf.fill(t);
    w.write_all(buf).map_err(|e| format!("write: {e}"))?;
    r.read_exact(buf).map_err(|e| format!("read: {e}"))?;
    check(buf, n, t.wrapping_add(1))
}

impl Client for Stream {
    fn round_trip(&mut self, t: u8) -> Result<(), String> {
        let mut r = &self.s;
        let mut w = &self.s;
        stream_round_trip(&mut w, &mut r, &mut self.buf, t)
    }

    fn stop(&mut self) -> Result<(), String> {
        self.buf.fill(0);
        self.s
            .write_all(&self.buf)
            .map_err(|e| format!("write: {e}"))
    }
}

/// A pipe pair client: the peer's stdin and stdout.
struct Pipe {
    w: std::process::ChildStdin,
    r: std::process::ChildStdout,
    buf: Vec<u8>,
}

impl Client for Pipe {
    fn round_trip(&mut self, t: u8) -> Result<(), String> {
        stream_round_trip(&mut self.w, &mut self.r, &mut self.buf, t)
    }

    fn stop(&mut self) -> Result<(), String> {
        self.buf.fill(0);
        self.w
            .write_all(&self.buf)
            .map_err(|e| format!("write: {e}"))
    }
}

/// The peer process: echoes requests of `n` bytes with replies of tag + 1 until the stop
/// message (tag 0), the end of its input or its parent's death.
fn run_peer(kind: Kind, n: usize, name: &str) -> Result<(), String> {
    proc::become_peer();
    match kind {
        Kind::CourierSpin | Kind::CourierBlock => courier_side::peer(kind, n, name),
        Kind::CrossbarSpin | Kind::CrossbarBlock => crossbar_side::peer(kind, n, name),
        Kind::IoxSpin | Kind::IoxEvent => iox_side::peer(kind == Kind::IoxEvent, n, name),
        Kind::Uds => {
            let s = UnixStream::connect(name).map_err(|e| format!("connect {name}: {e}"))?;
            stream_peer(&mut &s, &mut &s, n)
        }
        Kind::Pipe => stream_peer(
            &mut std::io::stdout().lock(),
            &mut std::io::stdin().lock(),
            n,
        ),
        Kind::Floor => Err("the floor has no peer".into()),
    }
}

/// The peer of a byte stream: read_exact, check, memset, write_all.
fn stream_peer(w: &mut impl Write, r: &mut impl Read, n: usize) -> Result<(), String> {
    let mut buf = vec![0u8; n];
    loop {
        match r.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("read: {e}")),
        }
        let t = buf[0];
        check(&buf, n, t)?;
        if t == 0 {
            return Ok(());
        }
        buf.fill(t.wrapping_add(1));
        w.write_all(&buf).map_err(|e| format!("write: {e}"))?;
        w.flush().map_err(|e| format!("flush: {e}"))?;
    }
}

/// courier::shm's `ShmChannel`.
mod courier_side {
    use super::{Client, Kind, OP_TIMEOUT};
    use courier::shm::{ShmChannel, ShmConfig, ShmError, ShmView, WaitStrategy};

    fn wait(kind: Kind) -> WaitStrategy {
        if kind == Kind::CourierSpin {
            WaitStrategy::BusySpin
        } else {
            WaitStrategy::Timeout(OP_TIMEOUT)
        }
    }

    /// Small messages: the default pool (64 blocks; crossbar's row has its default, 256).
    /// Large ones: 4 blocks, 2 above 1 MiB.
    fn config(n: usize) -> ShmConfig {
        let config = ShmConfig::new().block_size(n.max(8));
        match n {
            0..=4096 => config,
            4097..=0x10_0000 => config.block_count(4),
            _ => config.block_count(2),
        }
    }

    /// Sends `n` bytes of `t` by loan: one memset in place in the block (through the loan's
    /// view, as the peers' `as_mut_slice` / `loan_slice_uninit`).
    fn send(ch: &ShmChannel, n: usize, t: u8) -> Result<(), String> {
        let mut loan = ch.loan().map_err(|e| format!("loan: {e}"))?;
        loan.slice_mut(..n)
            .ok_or_else(|| format!("{n} bytes do not fit in a block"))?
            .fill(t);
        loan.publish(n).map_err(|e| format!("publish: {e}"))
    }

    /// The first byte of a received message and its check, as the peers' rows do it (first
    /// and last byte), each read as a copy out of the block.
    fn check_view(msg: &ShmView<'_>, n: usize, expect: u8) -> Result<(), String> {
        let (len, first, last) = (msg.len(), msg.get(0), msg.get(n.wrapping_sub(1)));
        if len != n || first != Some(expect) || last != Some(expect) {
            return Err(format!(
                "bad message: {len} bytes (expected {n}), first {first:?}, last {last:?}, \
                 expected {expect}"
            ));
        }
        Ok(())
    }

    pub(super) struct Parent {
        ch: ShmChannel,
        n: usize,
        wait: WaitStrategy,
    }

    impl Parent {
        pub(super) fn new(kind: Kind, n: usize, name: &str) -> Result<Parent, String> {
            let ch = ShmChannel::listen(name, config(n), OP_TIMEOUT)
                .map_err(|e| format!("listen: {e}"))?;
            Ok(Parent {
                ch,
                n,
                wait: wait(kind),
            })
        }
    }

    impl Client for Parent {
        fn round_trip(&mut self, t: u8) -> Result<(), String> {
            send(&self.ch, self.n, t)?;
            let msg = self
                .ch
                .recv_with(self.wait)
                .map_err(|e| format!("recv: {e}"))?;
            check_view(&msg, self.n, t.wrapping_add(1))
        }

        fn stop(&mut self) -> Result<(), String> {
            send(&self.ch, self.n, 0)
        }
    }

    pub(super) fn peer(kind: Kind, n: usize, name: &str) -> Result<(), String> {
        let ch = ShmChannel::connect(name, ShmConfig::new(), OP_TIMEOUT)
            .map_err(|e| format!("connect: {e}"))?;
        let wait = if kind == Kind::CourierSpin {
            WaitStrategy::BusySpin
        } else {
            WaitStrategy::Adaptive
        };
        loop {
            let msg = match ch.recv_with(wait) {
                Ok(m) => m,
                Err(ShmError::PeerDead) => return Ok(()),
                Err(e) => return Err(format!("recv: {e}")),
            };
            let t = msg.get(0).unwrap_or(0);
            check_view(&msg, n, t)?;
            drop(msg);
            if t == 0 {
                return Ok(());
            }
            send(&ch, n, t.wrapping_add(1))?;
        }
    }
}

/// crossbar 1.2's `Channel`.
mod crossbar_side {
    use super::{check, Client, Kind, OP_TIMEOUT};
    use crossbar::{Channel, Config, WaitStrategy};

    /// Heartbeat every this many messages (every message when large).
    const HEARTBEAT_EVERY: u32 = 256;

    fn config(n: usize) -> Config {
        if n <= 65_536 - 8 {
            Config::default()
        } else {
            Config {
                block_size: (n + 4096) as u32,
                block_count: 8,
                ring_depth: 2,
                ..Config::default()
            }
        }
    }

    fn large(n: usize) -> bool {
        n > 65_536 - 8
    }

    /// Sends `n` bytes of `t` by loan, with a heartbeat now and then.
    fn send(ch: &mut Channel, n: usize, t: u8, count: &mut u32) -> Result<(), String> {
        let mut loan = ch.loan().map_err(|e| format!("loan: {e:?}"))?;
        loan.as_mut_slice()[..n].fill(t);
        loan.set_len(n).map_err(|e| format!("set_len: {e:?}"))?;
        loan.publish();
        *count = count.wrapping_add(1);
        if large(n) || *count % HEARTBEAT_EVERY == 0 {
            ch.heartbeat().map_err(|e| format!("heartbeat: {e:?}"))?;
        }
        Ok(())
    }

    pub(super) struct Parent {
        ch: Channel,
        n: usize,
        busy: bool,
        count: u32,
    }

    impl Parent {
        pub(super) fn new(kind: Kind, n: usize, name: &str) -> Result<Parent, String> {
            let ch = Channel::listen(name, config(n), OP_TIMEOUT)
                .map_err(|e| format!("listen: {e:?}"))?;
            Ok(Parent {
                ch,
                n,
                busy: kind == Kind::CrossbarSpin,
                count: 0,
            })
        }
    }

    impl Client for Parent {
        fn round_trip(&mut self, t: u8) -> Result<(), String> {
            send(&mut self.ch, self.n, t, &mut self.count)?;
            let msg = if self.busy {
                self.ch.recv_with(WaitStrategy::BusySpin)
            } else {
                self.ch.recv()
            }
            .map_err(|e| format!("recv: {e:?}"))?;
            check(&msg, self.n, t.wrapping_add(1))
        }

        fn stop(&mut self) -> Result<(), String> {
            send(&mut self.ch, self.n, 0, &mut self.count)
        }
    }

    pub(super) fn peer(kind: Kind, n: usize, name: &str) -> Result<(), String> {
        let mut ch =
            Channel::connect(name, config(n), OP_TIMEOUT).map_err(|e| format!("connect: {e:?}"))?;
        let mut count = 0;
        loop {
            let t = {
                let msg = if kind == Kind::CrossbarSpin {
                    ch.recv_with(WaitStrategy::BusySpin)
                } else {
                    ch.recv()
                }
                .map_err(|e| format!("recv: {e:?}"))?;
                let t = msg.first().copied().unwrap_or(0);
                check(&msg, n, t)?;
                t
            };
            if t == 0 {
                return Ok(());
            }
            send(&mut ch, n, t.wrapping_add(1), &mut count)?;
        }
    }

    /// Deletes the files crossbar leaves in /dev/shm for channel `name` (its lock files).
    pub(super) fn remove_files(name: &str) {
        let prefix = format!("crossbar-{name}");
        if let Ok(entries) = std::fs::read_dir("/dev/shm") {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// iceoryx2 0.10: publish-subscribe of `[u8]` slices on two services (ping and pong).
mod iox_side {
    use super::{check, Client, OP_TIMEOUT};
    use iceoryx2::port::listener::Listener;
    use iceoryx2::port::notifier::Notifier;
    use iceoryx2::port::publisher::Publisher;
    use iceoryx2::port::subscriber::Subscriber;
    use iceoryx2::prelude::*;
    use iceoryx2::service::port_factory::publish_subscribe::PortFactory;
    use iceoryx2::service::port_factory::PortFactory as _;
    use std::time::Instant;

    type Factory = PortFactory<ipc::Service, [u8], ()>;
    type EventFactory = iceoryx2::service::port_factory::event::PortFactory<ipc::Service>;

    fn open_event(
        node: &Node<ipc::Service>,
        name: &str,
        which: &str,
    ) -> Result<EventFactory, String> {
        let service_name: ServiceName = format!("courier-bench/{name}/{which}-event")
            .as_str()
            .try_into()
            .map_err(|e| format!("service name: {e:?}"))?;
        node.service_builder(&service_name)
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

    fn open(node: &Node<ipc::Service>, name: &str, which: &str) -> Result<Factory, String> {
        let service_name: ServiceName = format!("courier-bench/{name}/{which}")
            .as_str()
            .try_into()
            .map_err(|e| format!("service name: {e:?}"))?;
        node.service_builder(&service_name)
            .publish_subscribe::<[u8]>()
            .max_publishers(1)
            .max_subscribers(1)
            .open_or_create()
            .map_err(|e| format!("service {which}: {e:?}"))
    }

    struct Ends {
        _node: Node<ipc::Service>,
        tx_service: Factory,
        rx_service: Factory,
        publisher: Publisher<ipc::Service, [u8], ()>,
        subscriber: Subscriber<ipc::Service, [u8], ()>,
        events: Option<Events>,
    }

    fn ends(events: bool, n: usize, name: &str, tx: &str, rx: &str) -> Result<Ends, String> {
        let node = NodeBuilder::new()
            .create::<ipc::Service>()
            .map_err(|e| format!("node: {e:?}"))?;
        let tx_service = open(&node, name, tx)?;
        let rx_service = open(&node, name, rx)?;
        let publisher = tx_service
            .publisher_builder()
            .initial_max_slice_len(n)
            .create()
            .map_err(|e| format!("publisher: {e:?}"))?;
        let subscriber = rx_service
            .subscriber_builder()
            .create()
            .map_err(|e| format!("subscriber: {e:?}"))?;
        let events = if events {
            let tx_service = open_event(&node, name, tx)?;
            let rx_service = open_event(&node, name, rx)?;
            let notifier = tx_service
                .notifier_builder()
                .create()
                .map_err(|e| format!("notifier: {e:?}"))?;
            let listener = rx_service
                .listener_builder()
                .create()
                .map_err(|e| format!("listener: {e:?}"))?;
            Some(Events {
                tx_service,
                _rx_service: rx_service,
                notifier,
                listener,
            })
        } else {
            None
        };
        Ok(Ends {
            _node: node,
            tx_service,
            rx_service,
            publisher,
            subscriber,
            events,
        })
    }

    impl Ends {
        fn send(&self, n: usize, t: u8) -> Result<(), String> {
            let mut sample = self
                .publisher
                .loan_slice_uninit(n)
                .map_err(|e| format!("loan: {e:?}"))?;
            for b in sample.payload_mut() {
                b.write(t);
            }
            // SAFETY: every element was written just above.
            let sample = unsafe { sample.assume_init() };
            sample.send().map_err(|e| format!("send: {e:?}"))?;
            if let Some(ev) = &self.events {
                ev.notifier.notify().map_err(|e| format!("notify: {e:?}"))?;
            }
            Ok(())
        }

        /// Busy-polls for the next message; returns its first byte after checking it.
        fn recv(&self, n: usize, expect: Option<u8>) -> Result<u8, String> {
            let deadline = Instant::now() + OP_TIMEOUT;
            let mut polls = 0u32;
            loop {
                if let Some(sample) = self
                    .subscriber
                    .receive()
                    .map_err(|e| format!("receive: {e:?}"))?
                {
                    let t = expect.unwrap_or_else(|| sample.first().copied().unwrap_or(0));
                    check(&sample, n, t)?;
                    return Ok(t);
                }
                if let Some(ev) = &self.events {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err("receive: no message within the timeout".into());
                    }
                    ev.listener
                        .timed_wait(|_| {}, left)
                        .map_err(|e| format!("wait: {e:?}"))?;
                    continue;
                }
                polls = polls.wrapping_add(1);
                if polls % 4096 == 0 && Instant::now() >= deadline {
                    return Err("receive: no message within the timeout".into());
                }
                std::hint::spin_loop();
            }
        }

        /// Waits until the other process has its subscriber and publisher.
        fn wait_connected(&self) -> Result<(), String> {
            let deadline = Instant::now() + OP_TIMEOUT;
            while self.tx_service.dynamic_config().number_of_subscribers() < 1
                || self.rx_service.dynamic_config().number_of_publishers() < 1
                || self
                    .events
                    .as_ref()
                    .is_some_and(|ev| ev.tx_service.dynamic_config().number_of_listeners() < 1)
            {
                if Instant::now() >= deadline {
                    return Err("the iceoryx2 peer did not connect".into());
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Ok(())
        }
    }

    pub(super) struct Parent {
        ends: Ends,
        n: usize,
    }

    impl Parent {
        pub(super) fn new(events: bool, n: usize, name: &str) -> Result<Parent, String> {
            Ok(Parent {
                ends: ends(events, n, name, "ping", "pong")?,
                n,
            })
        }

        pub(super) fn wait_for_peer(&self) -> Result<(), String> {
            self.ends.wait_connected()
        }
    }

    impl Client for Parent {
        fn round_trip(&mut self, t: u8) -> Result<(), String> {
            self.ends.send(self.n, t)?;
            self.ends.recv(self.n, Some(t.wrapping_add(1))).map(|_| ())
        }

        fn stop(&mut self) -> Result<(), String> {
            self.ends.send(self.n, 0)
        }
    }

    pub(super) fn peer(events: bool, n: usize, name: &str) -> Result<(), String> {
        let ends = ends(events, n, name, "pong", "ping")?;
        ends.wait_connected()?;
        loop {
            let t = ends.recv(n, None)?;
            if t == 0 {
                return Ok(());
            }
            ends.send(n, t.wrapping_add(1))?;
        }
    }
}

/// The goals: courier's 8 B round trip faster than every peer's, and for large messages a
/// cost over the floor that does not grow with the size.
fn goals(rows: &[Row], load: Load) -> Vec<Goal> {
    let median = |scenario: &str, name: &str| {
        rows.iter()
            .find(|r| r.scenario == scenario && r.name == name)
            .map(|r| r.summary.median_ns)
    };
    let mut goals = Vec::new();
    let small = &SIZES[0];
    for (scenario, peers_of, text) in [
        (
            small.busy,
            &[small.busy, small.blocking][..],
            "8 B round trip, courier busy-wait faster than every peer row at 8 B",
        ),
        (
            small.blocking,
            &[small.blocking][..],
            "8 B round trip, courier blocking faster than every blocking peer row",
        ),
    ] {
        let best = rows
            .iter()
            .filter(|r| peers_of.contains(&r.scenario) && r.name != COURIER && r.name != FLOOR)
            .min_by(|a, b| a.summary.median_ns.total_cmp(&b.summary.median_ns));
        match (median(scenario, COURIER), best) {
            (Some(c), Some(best)) => goals.push(Goal {
                text: text.to_string(),
                courier: report::fmt_ns(c),
                reference: format!(
                    "{} ({}, {})",
                    report::fmt_ns(best.summary.median_ns),
                    best.name,
                    best.scenario
                ),
                ratio: Some(c / best.summary.median_ns),
                verdict: Verdict::of(c < best.summary.median_ns),
                rounds: None,
                paired: None,
            }),
            _ => goals.push(Goal::not_measured(text.to_string())),
        }
    }
    for size in &SIZES[1..] {
        for scenario in [size.busy, size.blocking] {
            let text = format!("{scenario}: courier − floor (informational)");
            match (median(scenario, COURIER), median(size.busy, FLOOR)) {
                (Some(c), Some(f)) => goals.push(Goal {
                    text,
                    courier: format!(
                        "{} (− floor = {})",
                        report::fmt_ns(c),
                        report::fmt_ns_delta(c - f)
                    ),
                    reference: format!("{} (floor)", report::fmt_ns(f)),
                    ratio: Some(c / f),
                    verdict: Verdict::Info,
                    rounds: None,
                    paired: None,
                }),
                _ => goals.push(Goal::not_measured(text)),
            }
        }
    }
    if load == Load::Busy {
        for scenario in [small.busy, small.blocking] {
            goals.extend(report::ahead_of_every_peer(rows, scenario));
        }
    }
    for size in &SIZES[1..] {
        for scenario in [size.busy, size.blocking] {
            let best = report::peers(rows, scenario)
                .min_by(|a, b| a.summary.median_ns.total_cmp(&b.summary.median_ns));
            goals.push(Goal::median(
                format!("{scenario}: courier at or below the best peer"),
                report::subject_of(rows, scenario),
                best,
                1.0,
            ));
        }
    }
    let big = &SIZES[3];
    for scenario in [big.busy, big.blocking] {
        let text = format!(
            "{scenario}, by loan: courier − floor ≤ 10 % of the floor (cost does not grow beyond touching the bytes)"
        );
        match (median(scenario, COURIER), median(big.busy, FLOOR)) {
            (Some(c), Some(f)) => goals.push(Goal {
                text,
                courier: format!(
                    "{} (− floor = {})",
                    report::fmt_ns(c),
                    report::fmt_ns_delta(c - f)
                ),
                reference: format!("{} (floor)", report::fmt_ns(f)),
                ratio: Some(c / f),
                verdict: Verdict::of(c - f <= 0.1 * f),
                rounds: None,
                paired: None,
            }),
            _ => goals.push(Goal::not_measured(text)),
        }
    }
    goals
}

/// The whole report: header, table, goals, failures.
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
    out.push_str("# courier-bench shm\n\n");
    out.push_str(&machine.markdown());
    let p8 = plan(8, quick, rounds);
    let p16 = plan(16 << 20, quick, rounds);
    out.push_str(&runner::loads_note("processes"));
    out.push_str(&format!(
        "- method: {rounds} round(s) per load; each round measures every row once (starting at a \
         different row each round) and a row's samples from all rounds are pooled. *CPU/call*: \
         the CPU time of every thread of both processes during the measured phase \
         (`/proc/*/task/*/schedstat`), per round trip. Two processes per row (the peer is this binary, re-executed; a new process, \
         channel and name for every row), except the floor rows. Each row warms up (unmeasured \
         round trips for 40 ms in a full run, so that an end that adapts as it runs is measured \
         settled), then times \
         batches of round trips ({}×{} at 8 B … {}×{} at 16 MiB; a row stops early after {:?}). \
         Each side memsets the whole payload of every message it sends and checks the first and \
         last byte of every message it receives. Each round trip is timed with one \
         `Instant::now()` after the reply (chained timestamps); *median* and *p99* are over all \
         round trips; *round medians* show the spread between rounds.{}\n\
         - ratios: courier/peer median below 1 means courier is faster; each row is compared \
         with courier's row of the same size and wait (busy-wait or blocking).\n\
         - busy-wait rows keep both processes spinning, so they need both cores: with {nproc} \
         CPU(s) and other load on the machine, a spinner that is preempted waits out a \
         scheduler slice (milliseconds), which shows as medians near 4 or 8 ms at large sizes; \
         the blocking rows do not have that problem.\n\
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
