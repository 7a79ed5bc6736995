//! `courier-bench net`: courier::net (a client calling a courier::shm service through a zenoh
//! bridge) beside a raw zenoh query/reply, tarpc (a well-known Rust RPC stack: bincode over
//! TCP; tonic's gRPC needs `protoc` for its stubs, which this machine does not have) and a
//! plain TCP exchange (the floor), between two processes over loopback.
//!
//! Scenarios: **small**, a `u64` request and reply; **1 MiB lent**, the client sends 1 MiB
//! (courier's `lend`: the bytes travel to the bridge, which lends them to the service) and
//! the server checks its first and last byte and replies a `u64`.
//!
//! Every row starts its own server process: this binary as `courier-bench net --peer KIND
//! --size N --name PORT`, listening on a loopback port the client picked. The request
//! [`STOP`] makes the server answer and exit shortly after.

use crate::proc::{self, Peer, OP_TIMEOUT};
use crate::report::{self, Goal, Machine, Row};
use crate::stats::{self, Plan, Samples};
use courier_net::zenoh::{self, Wait};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options of `courier-bench net`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Tiny iteration counts, for a smoke test that runs in a few seconds.
    #[arg(long)]
    quick: bool,
    /// Also write the report (markdown) to this file.
    #[arg(long, value_name = "FILE")]
    markdown_out: Option<PathBuf>,
    /// Also write the results (machine, rows in nanoseconds, goals) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Internal: run as the server process of a row of this kind.
    #[arg(long, hide = true, value_name = "KIND")]
    peer: Option<String>,
    /// Internal: the request size of the server's row.
    #[arg(long, hide = true, default_value_t = SMALL)]
    size: usize,
    /// Internal: the loopback port the server listens on.
    #[arg(long, hide = true, default_value = "0")]
    name: String,
}

/// The small scenario's size (one `u64`).
const SMALL: usize = 8;
/// The large scenario's size.
const LARGE: usize = 1 << 20;
/// The request that makes a server answer and exit.
const STOP: u64 = u64::MAX;
/// The zenoh key of the raw row.
const RAW_KEY: &str = "courier-bench/raw";
/// The service name of the courier row (its key: `courier/bench/<name>`).
const SERVICE: &str = "bench";

fn scenario(n: usize) -> &'static str {
    if n == SMALL {
        "small: u64 round trip over loopback"
    } else {
        "1 MiB sent by the client (lend)"
    }
}

/// The byte at both ends of a large request of call `x`.
fn fill_byte(x: u64) -> u8 {
    (x % 251) as u8 + 1
}

/// Writes request `x` into `buf`: `x` in the first 8 bytes and, for a large request, the
/// call's byte after it and at the end.
fn fill_request(buf: &mut [u8], x: u64) {
    let n = buf.len();
    buf[..8].copy_from_slice(&x.to_le_bytes());
    if n > SMALL {
        buf[8] = fill_byte(x);
        buf[n - 1] = fill_byte(x);
    }
}

/// Whether a large request of call `x` arrived whole (its length, first and last byte).
fn arrived(len: usize, first: u8, last: u8, n: usize, x: u64) -> bool {
    len == n && first == fill_byte(x) && last == fill_byte(x)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Courier,
    Zenoh,
    Tarpc,
    Tcp,
}

const KINDS: [Kind; 4] = [Kind::Courier, Kind::Zenoh, Kind::Tarpc, Kind::Tcp];

impl Kind {
    fn arg(self) -> &'static str {
        match self {
            Kind::Courier => "courier",
            Kind::Zenoh => "zenoh",
            Kind::Tarpc => "tarpc",
            Kind::Tcp => "tcp",
        }
    }

    fn from_arg(s: &str) -> Option<Kind> {
        KINDS.into_iter().find(|k| k.arg() == s)
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Courier => "courier::net (bridge → courier::shm)",
            Kind::Zenoh => "zenoh 1.x get/queryable (raw)",
            Kind::Tarpc => "tarpc 0.37 (bincode over TCP)",
            Kind::Tcp => "TCP (std, the floor)",
        }
    }

    fn notes(self) -> &'static str {
        match self {
            Kind::Courier => "net::Client::<u64, u64, u64>::req / lend (1 MiB) over a zenoh peer session; server process: a zenoh session, expose(\"bench\") and a courier::shm Server thread (reply x + 1)",
            Kind::Zenoh => "session.get(key).payload(bytes) → first reply; server: a queryable whose callback replies x + 1",
            Kind::Tarpc => "#[tarpc::service] echo(x) / sink(x, Vec<u8>); tokio current-thread runtime on each side",
            Kind::Tcp => "write the request (8 B or 1 MiB), read 8 B; TCP_NODELAY",
        }
    }
}

fn plan(n: usize, quick: bool) -> Plan {
    let budget = Duration::from_millis(1500);
    let (warmup, batches, per_batch) = match (quick, n == SMALL) {
        (true, _) => (3, stats::MIN_BATCHES, 5),
        (false, true) => (200, 20, 200),
        (false, false) => (5, 10, 10),
    };
    Plan {
        warmup,
        settle: Duration::ZERO,
        batches,
        per_batch,
        budget,
    }
}

/// A free loopback port.
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no loopback port: {e}"))
}

fn endpoint(port: &str) -> String {
    format!("tcp/127.0.0.1:{port}")
}

/// One client of a row.
trait Client {
    fn call(&mut self, x: u64) -> Result<u64, String>;
}

pub(crate) fn run(args: &Args) -> Result<(), String> {
    if let Some(kind) = &args.peer {
        let kind = Kind::from_arg(kind).ok_or_else(|| format!("unknown peer kind {kind}"))?;
        proc::become_peer();
        return serve(kind, args.size, &args.name);
    }
    let machine = Machine::detect();
    let dir = proc::runtime_dir("net")?;
    stats::start_watchdog(
        Duration::from_secs(if args.quick { 90 } else { 240 }),
        "run",
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for n in [SMALL, LARGE] {
        for kind in KINDS {
            let label = format!("{} | {}", scenario(n), kind.name());
            stats::set_current_row(&label);
            eprintln!("courier-bench net: {label}");
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                measure_row(kind, n, &plan(n, args.quick))
            }));
            match outcome {
                Ok(Ok(samples)) => rows.push(Row {
                    scenario: scenario(n),
                    name: kind.name(),
                    subject: kind == Kind::Courier,
                    notes: kind.notes(),
                    load: crate::runner::Load::Idle,
                    summary: samples.summary(),
                }),
                Ok(Err(e)) => failed.push(format!("{label}: {e}")),
                Err(_) => failed.push(format!("{label}: panicked (see stderr)")),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let goals = goals(&rows);
    let mut text = format!(
        "# courier-bench net: courier::net beside raw zenoh, tarpc and TCP (two processes, loopback)\n\n{}\n",
        machine.markdown()
    );
    text.push_str(&report::results(&rows, &goals, &failed));
    text.push_str(&format!(
        "\nRun time {:.1?}{}.\n",
        started.elapsed(),
        if args.quick {
            " (--quick: tiny counts)"
        } else {
            ""
        }
    ));
    report::emit(
        "net",
        &text,
        &machine,
        &rows,
        &goals,
        args.markdown_out.as_deref(),
        args.json.as_deref(),
    )
}

/// The goals: within 1.2× of raw zenoh, ahead of tarpc.
fn goals(rows: &[Row]) -> Vec<Goal> {
    let mut goals = Vec::new();
    for n in [SMALL, LARGE] {
        let sc = scenario(n);
        let find = |k: Kind| rows.iter().find(|r| r.scenario == sc && r.name == k.name());
        for (peer, limit, what) in [
            (Kind::Zenoh, 1.2, "within 1.2× of raw zenoh"),
            (Kind::Tarpc, 1.0, "ahead of tarpc"),
        ] {
            let text = format!("{sc}: courier median {what}");
            goals.push(Goal::median(text, find(Kind::Courier), find(peer), limit));
        }
    }
    goals
}

/// Measures one row: starts the server, connects, measures, stops the server.
fn measure_row(kind: Kind, n: usize, plan: &Plan) -> Result<Samples, String> {
    let port = free_port()?.to_string();
    let size = n.to_string();
    let mut peer = Peer::spawn(
        &[
            "net",
            "--peer",
            kind.arg(),
            "--size",
            &size,
            "--name",
            &port,
        ],
        false,
    )?;
    let mut client: Box<dyn Client> = match kind {
        Kind::Courier => Box::new(CourierClient::connect(&port, n)?),
        Kind::Zenoh => Box::new(ZenohClient::connect(&port, n)?),
        Kind::Tarpc => Box::new(tarpc_side::Client::connect(&port, n)?),
        Kind::Tcp => Box::new(TcpClient::connect(&port, n)?),
    };
    let samples = stats::measure_fallible(plan, |x| client.call(x))?;
    let _ = client.call(STOP);
    let clean = peer.finish();
    drop(client);
    if !clean {
        return Err("the server did not exit cleanly".into());
    }
    Ok(samples)
}

/// The server process of a row.
fn serve(kind: Kind, n: usize, port: &str) -> Result<(), String> {
    match kind {
        Kind::Courier => courier_server(n, port),
        Kind::Zenoh => zenoh_server(n, port),
        Kind::Tarpc => tarpc_side::server(n, port),
        Kind::Tcp => tcp_server(n, port),
    }
}

/// Ends this server process shortly after its last answer has left.
fn exit_soon() {
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(200));
        std::process::exit(0);
    });
}

fn open(listen: &[String], connect: &[String]) -> Result<zenoh::Session, String> {
    let config = courier_net::peer_config(listen, connect).map_err(|e| e.to_string())?;
    zenoh::open(config)
        .wait()
        .map_err(|e| format!("zenoh: {e}"))
}

// ---------------------------------------------------------------------------------------
// courier::net

fn courier_server(n: usize, port: &str) -> Result<(), String> {
    use courier::shm::{Incoming, Server, ServerConfig};
    let name = format!("{SERVICE}-{port}");
    let server: Server<u64, u64, u64> =
        Server::bind(&name, ServerConfig::new().max_lend(n.max(4096)))
            .map_err(|e| format!("bind: {e}"))?;
    let session = open(&[endpoint(port)], &[])?;
    let config = courier_net::ExposeConfig::new().namespace(SERVICE);
    let _exposed = courier_net::expose_with(&session, &name, &config).map_err(|e| e.to_string())?;
    loop {
        match server.wait() {
            Ok(Incoming::Call(x, ctx)) => {
                let ok = match ctx.lent() {
                    None => true,
                    Some(v) => {
                        let mut ends = [0u8; 1];
                        let first = v.read_at(0, &mut ends).map(|()| ends[0]);
                        let last = v.read_at(v.len() - 1, &mut ends).map(|()| ends[0]);
                        matches!((first, last), (Ok(f), Ok(l)) if arrived(v.len(), f, l, n, x))
                    }
                };
                let _ = if ok {
                    ctx.reply(x.wrapping_add(1))
                } else {
                    ctx.fail(x)
                };
                if x == STOP {
                    exit_soon();
                }
            }
            Ok(_) => {}
            Err(e) => return Err(format!("wait: {e}")),
        }
    }
}

struct CourierClient {
    _session: zenoh::Session,
    client: courier_net::Client<u64, u64, u64>,
    buf: Vec<u8>,
}

impl CourierClient {
    fn connect(port: &str, n: usize) -> Result<Self, String> {
        let session = open(&[], &[endpoint(port)])?;
        let key = format!("{SERVICE}/{SERVICE}-{port}");
        let client = courier_net::Client::connect(&session, &key, OP_TIMEOUT)
            .map_err(|e| e.to_string())?
            .with_timeout(OP_TIMEOUT);
        Ok(CourierClient {
            _session: session,
            client,
            buf: vec![0u8; if n == SMALL { 0 } else { n }],
        })
    }
}

impl Client for CourierClient {
    fn call(&mut self, x: u64) -> Result<u64, String> {
        let r = if self.buf.is_empty() {
            self.client.req(x)
        } else {
            let n = self.buf.len();
            self.buf[0] = fill_byte(x);
            self.buf[n - 1] = fill_byte(x);
            self.client.lend(x, &self.buf)
        };
        r.map_err(|e| format!("call {x}: {e}"))
    }
}

// ---------------------------------------------------------------------------------------
// Raw zenoh

fn zenoh_server(n: usize, port: &str) -> Result<(), String> {
    let session = open(&[endpoint(port)], &[])?;
    let _queryable = session
        .declare_queryable(RAW_KEY)
        .callback(move |q| {
            let bytes = q
                .payload()
                .map(|p| p.to_bytes().into_owned())
                .unwrap_or_default();
            let Some(x) = bytes
                .get(..8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8")))
            else {
                return;
            };
            let ok = n == SMALL || arrived(bytes.len(), bytes[8], bytes[bytes.len() - 1], n, x);
            let reply = if ok { x.wrapping_add(1) } else { x };
            let _ = q.reply(RAW_KEY, reply.to_le_bytes().to_vec()).wait();
            if x == STOP {
                exit_soon();
            }
        })
        .wait()
        .map_err(|e| format!("queryable: {e}"))?;
    loop {
        std::thread::park();
    }
}

struct ZenohClient {
    session: zenoh::Session,
    buf: Vec<u8>,
}

impl ZenohClient {
    fn connect(port: &str, n: usize) -> Result<Self, String> {
        let session = open(&[], &[endpoint(port)])?;
        let mut c = ZenohClient {
            session,
            buf: vec![0u8; n.max(8)],
        };
        // The queryable's declaration reaches this session shortly after it connects.
        let end = Instant::now() + OP_TIMEOUT;
        while c.call(0).is_err() {
            if Instant::now() > end {
                return Err("the raw queryable never answered".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(c)
    }
}

impl Client for ZenohClient {
    fn call(&mut self, x: u64) -> Result<u64, String> {
        fill_request(&mut self.buf, x);
        let replies = self
            .session
            .get(RAW_KEY)
            .payload(self.buf.clone())
            .timeout(OP_TIMEOUT)
            .wait()
            .map_err(|e| format!("get: {e}"))?;
        let reply = replies.recv().map_err(|e| format!("no reply: {e}"))?;
        let sample = reply
            .into_result()
            .map_err(|_| "an error reply".to_string())?;
        let bytes = sample.payload().to_bytes();
        let b: [u8; 8] = bytes[..]
            .try_into()
            .map_err(|_| "a reply of another size")?;
        Ok(u64::from_le_bytes(b))
    }
}

// ---------------------------------------------------------------------------------------
// TCP

fn tcp_server(n: usize, port: &str) -> Result<(), String> {
    let listener =
        TcpListener::bind(format!("127.0.0.1:{port}")).map_err(|e| format!("bind: {e}"))?;
    let (mut s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; n];
    loop {
        if s.read_exact(&mut buf).is_err() {
            return Ok(());
        }
        let x = u64::from_le_bytes(buf[..8].try_into().expect("8"));
        let ok = n == SMALL || arrived(n, buf[8], buf[n - 1], n, x);
        let reply = if ok { x.wrapping_add(1) } else { x };
        s.write_all(&reply.to_le_bytes())
            .map_err(|e| format!("write: {e}"))?;
        if x == STOP {
            return Ok(());
        }
    }
}

struct TcpClient {
    s: TcpStream,
    buf: Vec<u8>,
}

impl TcpClient {
    fn connect(port: &str, n: usize) -> Result<Self, String> {
        let end = Instant::now() + OP_TIMEOUT;
        loop {
            match TcpStream::connect(format!("127.0.0.1:{port}")) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(OP_TIMEOUT));
                    return Ok(TcpClient {
                        s,
                        buf: vec![0u8; n],
                    });
                }
                Err(e) if Instant::now() > end => return Err(format!("connect: {e}")),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

impl Client for TcpClient {
    fn call(&mut self, x: u64) -> Result<u64, String> {
        fill_request(&mut self.buf, x);
        self.s
            .write_all(&self.buf)
            .map_err(|e| format!("write: {e}"))?;
        let mut r = [0u8; 8];
        self.s
            .read_exact(&mut r)
            .map_err(|e| format!("read: {e}"))?;
        Ok(u64::from_le_bytes(r))
    }
}

// ---------------------------------------------------------------------------------------
// tarpc

mod tarpc_side {
    use super::{arrived, exit_soon, OP_TIMEOUT, SMALL, STOP};
    use futures::StreamExt;
    use std::time::Instant;
    use tarpc::server::Channel;
    use tarpc::tokio_serde::formats::Bincode;

    #[tarpc::service]
    pub(crate) trait Bench {
        /// x + 1.
        async fn echo(x: u64) -> u64;
        /// x + 1 if `data` arrived whole.
        async fn sink(x: u64, data: Vec<u8>) -> u64;
    }

    #[derive(Clone)]
    struct Server(usize);

    impl Bench for Server {
        async fn echo(self, _: tarpc::context::Context, x: u64) -> u64 {
            if x == STOP {
                exit_soon();
            }
            x.wrapping_add(1)
        }
        async fn sink(self, _: tarpc::context::Context, x: u64, data: Vec<u8>) -> u64 {
            let n = self.0;
            let ok = data.len() == n && arrived(n, data[0], data[n - 1], n, x);
            if ok {
                x.wrapping_add(1)
            } else {
                x
            }
        }
    }

    fn runtime() -> Result<tokio::runtime::Runtime, String> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio: {e}"))
    }

    pub(crate) fn server(n: usize, port: &str) -> Result<(), String> {
        runtime()?.block_on(async move {
            let mut listener =
                tarpc::serde_transport::tcp::listen(format!("127.0.0.1:{port}"), Bincode::default)
                    .await
                    .map_err(|e| format!("listen: {e}"))?;
            listener.config_mut().max_frame_length(usize::MAX);
            let Some(Ok(transport)) = listener.next().await else {
                return Err("no connection".to_string());
            };
            let channel = tarpc::server::BaseChannel::with_defaults(transport);
            channel
                .execute(Server(n).serve())
                .for_each(|response| async move {
                    response.await;
                })
                .await;
            Ok(())
        })
    }

    pub(crate) struct Client {
        rt: tokio::runtime::Runtime,
        client: BenchClient,
        data: Vec<u8>,
    }

    impl Client {
        pub(crate) fn connect(port: &str, n: usize) -> Result<Self, String> {
            let rt = runtime()?;
            let end = Instant::now() + OP_TIMEOUT;
            let client = rt.block_on(async {
                loop {
                    let mut connect = tarpc::serde_transport::tcp::connect(
                        format!("127.0.0.1:{port}"),
                        Bincode::default,
                    );
                    connect.config_mut().max_frame_length(usize::MAX);
                    match connect.await {
                        Ok(t) => {
                            return Ok(BenchClient::new(tarpc::client::Config::default(), t).spawn())
                        }
                        Err(e) if Instant::now() > end => return Err(format!("connect: {e}")),
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                    }
                }
            })?;
            Ok(Client {
                rt,
                client,
                data: if n == SMALL { Vec::new() } else { vec![0u8; n] },
            })
        }
    }

    impl super::Client for Client {
        fn call(&mut self, x: u64) -> Result<u64, String> {
            let mut ctx = tarpc::context::current();
            ctx.deadline = Instant::now() + OP_TIMEOUT;
            let r = if self.data.is_empty() || x == STOP {
                self.rt.block_on(self.client.echo(ctx, x))
            } else {
                let n = self.data.len();
                self.data[0] = super::fill_byte(x);
                self.data[n - 1] = super::fill_byte(x);
                self.rt
                    .block_on(self.client.sink(ctx, x, self.data.clone()))
            };
            r.map_err(|e| format!("tarpc: {e}"))
        }
    }
}
