//! The RPC targets (`rpc_server`, `rpc_client`): one real [`Server`] with an honest worker
//! thread, kept for the whole process, and per input one fresh real [`Client`] whose
//! connection segment the harness maps a second time (found in `/proc/self/fd`) and scribbles
//! over between the client's operations.
//!
//! - `rpc_server` ([`Side::ClientWrites`]): the scribbles hit what the *client* writes (its
//!   unused word where its ring counter was, its stamped ring entries, its slot records and
//!   the small requests in them, its bell flag): a hostile client. The server must not panic
//!   or hang and must keep serving a fresh client.
//! - `rpc_client` ([`Side::ServerWrites`]): the scribbles hit what the *server* writes (the
//!   unused word where its ring head was, sleep count, bells, closed flag, the slots' state
//!   words and replies, small ones in the record, the push ring): a hostile server, seen from
//!   the client, which must not panic and must return from every timed operation by its
//!   deadline.
//!
//! One in eight scribbles lands anywhere in the segment, whatever the side.
//!
//! The server answers as the request says (`op % 8`): reply `v + 1` (0..=3, 7), fail with
//! "no" (4), hold the call until the input answers it (5), drop it unanswered (6); a lend is
//! answered with the sum of its bytes, a mutable lend is filled with `v as u8` and answered
//! with its length; a blocking scalar is answered `[a0 + a1, op]` (op % 4 == 1: held, 2:
//! dropped); a subscription gets `v % 4` pushes at once and more when the input asks.
//! Until the first scribble of an input every answer is checked against that.

use crate::{map_new_segment, memfd_snapshot, timed, Bytes, Mapping};
use courier_core::flat;
use courier_derive::Ipc;
use courier_shm::{
    CancelOutcome, Client, Error, Incoming, Notifier, ReplyContext, ScalarCall, Server,
    ServerConfig, ShmBuf, Subscription, WaitReply,
};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// The request: a few fields of each kind the flat checks look at.
#[derive(Ipc, Clone, Copy, Debug, PartialEq)]
#[ipc(crate = "courier_core::flat")]
#[repr(C)]
pub struct Req {
    op: u32,
    flag: bool,
    letter: char,
    v: u64,
    tag: flat::String<8>,
}

type Why = flat::String<8>;
type Srv = Server<Req, u64, Why>;
type Cli = Client<Req, u64, Why>;

/// The server's shape: small, so most scribbles land on something that matters.
const SLOTS: usize = 4;
const SLOT_SIZE: usize = 128;
const PUSH_DEPTH: usize = 4;
const PUSH_SIZE: usize = 64;
const HEADER: usize = 64;

/// Each client operation's timeout.
const OP: Duration = Duration::from_millis(20);
/// Operations per input, and timed-out operations after which an input stops (each costs
/// `OP`: a connection the server cut off would otherwise eat the whole input at 20 ms a step).
const MAX_OPS: usize = 48;
const MAX_TIMEOUTS: usize = 3;

/// Which words the scribbles aim at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// What the client writes (`rpc_server`: a hostile client).
    ClientWrites,
    /// What the server writes (`rpc_client`: a hostile server).
    ServerWrites,
}

/// Offsets in the connection segment (from its start, the 64-byte segment header included),
/// as `crates/shm/src/rpc/layout.rs` documents them, for the configuration above. Checked
/// against the real segment's size at every connection.
struct Lay {
    recs: usize,
    push: usize,
    push_stride: usize,
    data: usize,
    total: usize,
}

const LAY: Lay = {
    let recs = (192 + SLOTS * 8).div_ceil(64) * 64;
    let push = recs + SLOTS * 128;
    let push_stride = (32 + PUSH_SIZE).div_ceil(64) * 64;
    let end = push + push_stride * PUSH_DEPTH;
    let data = (end + HEADER).div_ceil(4096) * 4096 - HEADER;
    let total = data + align_const(SLOT_SIZE) * SLOTS;
    Lay {
        recs,
        push,
        push_stride,
        data,
        total,
    }
};

const fn align_const(n: usize) -> usize {
    n.div_ceil(64) * 64
}

/// (payload offset, width) of each word a side writes.
fn fields(side: Side) -> Vec<(usize, usize)> {
    let mut f = Vec::new();
    let rec = |i: usize| LAY.recs + 128 * i;
    match side {
        Side::ClientWrites => {
            f.extend([(64, 8), (72, 8), (80, 4)]);
            for i in 0..SLOTS {
                // A stamped ring entry: its lap's stamp and a slot index.
                f.push((192 + 8 * i, 8));
                let r = rec(i);
                f.extend([(r, 4), (r + 4, 4), (r + 8, 4), (r + 12, 4), (r + 16, 4)]);
                // The argument words, or a small request.
                f.extend([(r + 24, 8), (r + 32, 8), (r + 40, 8), (r + 48, 8), (r + 56, 8)]);
            }
        }
        Side::ServerWrites => {
            f.extend([(128, 8), (136, 8), (144, 4), (148, 4), (152, 4)]);
            for i in 0..SLOTS {
                let r = rec(i);
                // State, reply length, status and signature; a small reply over the
                // request's words; the reply words.
                f.extend([(r, 4), (r + 16, 4), (r + 20, 4), (r + 24, 8)]);
                f.extend([(r + 32, 8), (r + 40, 8), (r + 48, 8), (r + 56, 8)]);
                f.extend([(r + 64, 8), (r + 72, 8)]);
            }
            for j in 0..PUSH_DEPTH {
                let p = LAY.push + LAY.push_stride * j;
                f.extend([(p, 4), (p + 4, 4), (p + 8, 4), (p + 16, 8)]);
            }
        }
    }
    f
}

/// What stays for the whole process.
struct World {
    name: String,
    _server: Srv,
    held: Arc<Mutex<Vec<(u64, ReplyContext<u64, Why>)>>>,
    held_scalars: Arc<Mutex<Vec<ScalarCall>>>,
    notifiers: Arc<Mutex<Vec<Notifier>>>,
    buf: Mutex<ShmBuf>,
    inputs: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let name = crate::unique_name("fz-rpc");
        let server = Srv::bind(
            &name,
            ServerConfig::new()
                .slots(SLOTS)
                .slot_size(SLOT_SIZE)
                .push_depth(PUSH_DEPTH)
                .push_size(PUSH_SIZE)
                .max_lend(1 << 16),
        )
        .expect("binding the fuzz server");
        let held = Arc::new(Mutex::new(Vec::new()));
        let held_scalars = Arc::new(Mutex::new(Vec::new()));
        let notifiers = Arc::new(Mutex::new(Vec::new()));
        let (s, h, hs, n) = (
            server.clone(),
            Arc::clone(&held),
            Arc::clone(&held_scalars),
            Arc::clone(&notifiers),
        );
        std::thread::Builder::new()
            .name("fuzz-worker".into())
            .spawn(move || worker(&s, &h, &hs, &n))
            .expect("starting the worker");
        World {
            name,
            _server: server,
            held,
            held_scalars,
            notifiers,
            buf: Mutex::new(ShmBuf::new(4096).expect("a lend buffer")),
            inputs: Mutex::new(0),
        }
    })
}

/// The honest worker: answers as the module docs say, forever.
fn worker(
    s: &Srv,
    held: &Mutex<Vec<(u64, ReplyContext<u64, Why>)>>,
    held_scalars: &Mutex<Vec<ScalarCall>>,
    notifiers: &Mutex<Vec<Notifier>>,
) {
    loop {
        match s.wait_timeout(Duration::from_millis(200)) {
            Ok(Incoming::Call(rq, mut ctx)) => {
                if ctx.is_one_way() {
                    continue;
                }
                match rq.op % 8 {
                    4 => drop(ctx.fail(Why::try_from("no").expect("fits"))),
                    5 => lock(held).push((rq.v, ctx)),
                    6 => drop(ctx),
                    _ => {
                        let r = if let Some(mut b) = ctx.lent_mut() {
                            b.fill(rq.v as u8);
                            b.len() as u64
                        } else if let Some(b) = ctx.lent() {
                            b.to_vec().iter().map(|&x| u64::from(x)).sum()
                        } else {
                            rq.v.wrapping_add(1)
                        };
                        let _ = ctx.reply(r);
                    }
                }
            }
            Ok(Incoming::Scalar(call)) => {
                if !call.is_blocking() {
                    continue;
                }
                match call.op() % 4 {
                    1 => lock(held_scalars).push(call),
                    2 => drop(call),
                    _ => {
                        let a = call.args();
                        let op = u64::from(call.op());
                        let _ = call.reply([a[0].wrapping_add(a[1]), op]);
                    }
                }
            }
            Ok(Incoming::Subscribe(rq, n)) => {
                for i in 0..rq.v % 4 {
                    let _ = n.push(i);
                }
                lock(notifiers).push(n);
            }
            Err(_) => {}
        }
    }
}

/// What the honest server answers to `rq` (a plain call).
fn expected(rq: &Req) -> Option<Result<u64, Error<Why>>> {
    match rq.op % 8 {
        4 => Some(Err(Error::App(Why::try_from("no").expect("fits")))),
        5 => None, // held: answered later by the input, or times out
        6 => Some(Err(Error::NoReply)),
        _ => Some(Ok(rq.v.wrapping_add(1))),
    }
}

fn req(b: &mut Bytes<'_>) -> Req {
    let op = u32::from(b.u8());
    let v = u64::from(b.u8());
    let tag = match b.u8() % 4 {
        0 => "",
        1 => "a",
        2 => "été",
        _ => "12345678",
    };
    Req {
        op,
        flag: op & 0x10 != 0,
        letter: char::from_u32(0x41 + (op & 0x3f)).unwrap_or('x'),
        v,
        tag: flat::String::try_from(tag).expect("fits"),
    }
}

/// One input's client and what it has in flight.
struct Session<'w> {
    w: &'w World,
    side: Side,
    cli: Cli,
    map: Mapping,
    pending: Vec<(WaitReply<Req, u64, Why>, Option<Result<u64, Error<Why>>>)>,
    subs: Vec<Subscription>,
    /// Slots that may not come back to the client's pool (one-way messages, canceled or
    /// timed-out calls): an untimed operation (`send`, `scalar`, `req_async`, `subscribe`)
    /// waits for a free slot without a deadline, so one is started only while
    /// `pending + lost < SLOTS` guarantees a free slot.
    lost: usize,
    scribbled: bool,
    timeouts: usize,
}

impl Session<'_> {
    fn free(&self) -> bool {
        self.pending.len() + self.lost < SLOTS
    }

    /// Checks a result against the honest answer (until the first scribble).
    fn check(
        &mut self,
        what: &str,
        got: &Result<u64, Error<Why>>,
        want: &Option<Result<u64, Error<Why>>>,
    ) {
        if matches!(got, Err(Error::Timeout)) {
            self.timeouts += 1;
            self.lost += 1;
            return;
        }
        if got.is_err() {
            // A slot the server cut off or broke may never come back.
            self.lost += 1;
        }
        if self.scribbled {
            return;
        }
        assert!(
            !matches!(got, Err(Error::Protocol) | Err(Error::ServerDisappeared)),
            "{what}: {got:?} from an honest server and client"
        );
        if let Some(want) = want {
            assert_eq!(got, want, "{what}: wrong answer from an honest server");
        }
    }

    fn scribble(&mut self, b: &mut Bytes<'_>) {
        self.scribbled = true;
        let seg = self.map.len();
        let sel = b.u8();
        if sel % 8 == 0 {
            // Anywhere: up to 16 bytes at any offset (header included).
            let off = b.u16() as usize % seg;
            let bytes = b.take(16);
            self.map.write(off, &bytes);
            return;
        }
        let f = fields(self.side);
        let (off, width) = f[b.u8() as usize % f.len()];
        let file_off = HEADER + off;
        // A field's whole value (a stamped ring entry keeps its stamp in the high bits, so
        // "current plus or minus a little" makes a plausible fake entry).
        let cur = if width == 8 {
            self.map.read_u64(file_off)
        } else {
            u64::from(self.map.read_u32(file_off))
        };
        let v = match sel % 8 {
            1 => u64::from(b.u8() % 8),
            2 => u64::from(b.u8() % 8) | 0x100,
            3 => cur.wrapping_add(u64::from(b.u8() % 8)),
            4 => cur.wrapping_sub(u64::from(b.u8() % 8)),
            5 => u64::MAX - u64::from(b.u8() % 4),
            6 => u64::from(b.u8() % 8) << 32 | u64::from(b.u8()),
            _ => b.u64(),
        };
        self.map.write(file_off, &v.to_le_bytes()[..width]);
        // Now and then the slot data (requests or replies) too.
        if sel & 0x80 != 0 {
            let slot = b.u8() as usize % SLOTS;
            let at =
                HEADER + LAY.data + slot * align_const(SLOT_SIZE) + b.u8() as usize % SLOT_SIZE;
            let bytes = b.take(16);
            self.map.write(at, &bytes);
        }
    }

    fn step(&mut self, b: &mut Bytes<'_>) {
        let w = self.w;
        match b.u8() % 13 {
            0 => {
                let rq = req(b);
                let want = expected(&rq).or(Some(Err(Error::Timeout)));
                let got = timed("req_timeout", OP, || self.cli.req_timeout(rq, OP));
                self.check("req_timeout", &got, &want);
            }
            1 if self.free() => {
                let rq = req(b);
                let want = expected(&rq);
                match timed("req_async", OP, || self.cli.req_async(rq)) {
                    Ok(wr) => self.pending.push((wr, want)),
                    Err(e) => self.check("req_async", &Err(e), &None),
                }
            }
            2 if !self.pending.is_empty() => {
                let i = b.u8() as usize % self.pending.len();
                let (wr, want) = self.pending.swap_remove(i);
                let got = timed("wait_timeout", OP, || wr.wait_timeout(OP));
                self.check("wait_timeout", &got, &want);
            }
            3 if !self.pending.is_empty() => {
                let i = b.u8() as usize % self.pending.len();
                let (wr, want) = self.pending.swap_remove(i);
                let _ = wr.is_ready();
                match timed("cancel", Duration::ZERO, || wr.cancel()) {
                    CancelOutcome::Completed(got) => self.check("cancel", &got, &want),
                    CancelOutcome::Withdrawn(_) | CancelOutcome::Signaled => self.lost += 1,
                }
            }
            4 if self.free() => {
                let rq = req(b);
                let r = timed("send", OP, || self.cli.send(rq));
                self.lost += 1;
                if !self.scribbled {
                    assert_eq!(r, Ok(()), "send to an honest server");
                }
            }
            5 if self.free() => {
                let args = [b.u64(), b.u64(), 0, 0];
                let op = u32::from(b.u8());
                let _ = timed("scalar", OP, || self.cli.scalar(op, args));
                self.lost += 1;
            }
            6 => {
                let args = [b.u64(), b.u64(), b.u64(), 0];
                let op = u32::from(b.u8());
                let got = timed("blocking_scalar_timeout", OP, || {
                    self.cli.blocking_scalar_timeout(op, args, OP)
                });
                let want = match op % 4 {
                    1 => Err(Error::Timeout),
                    2 => Err(Error::NoReply),
                    _ => Ok([args[0].wrapping_add(args[1]), u64::from(op)]),
                };
                if matches!(got, Err(Error::Timeout)) {
                    self.timeouts += 1;
                    self.lost += 1;
                } else if got.is_err() {
                    self.lost += 1;
                }
                if !self.scribbled && !matches!(got, Err(Error::Timeout)) {
                    assert_eq!(got, want, "blocking_scalar from an honest server");
                }
            }
            7 => {
                let mut rq = req(b);
                rq.op &= !7; // answered at once (a held lend would just time out)
                let mut buf = lock(&w.buf);
                if buf.is_poisoned() {
                    // A lend that timed out left the buffer with the server (poisoned): a
                    // fresh one takes its place.
                    *buf = ShmBuf::new(4096).expect("a lend buffer");
                }
                if b.u8() & 1 == 0 {
                    let sum: u64 = buf.view().to_vec().iter().map(|&x| u64::from(x)).sum();
                    let got = timed("lend_timeout", OP, || {
                        self.cli.lend_timeout(rq, &mut buf, OP)
                    });
                    self.check("lend_timeout", &got, &Some(Ok(sum)));
                } else {
                    let n = buf.len() as u64;
                    let got = timed("lend_mut_timeout", OP, || {
                        self.cli.lend_mut_timeout(rq, &mut buf, OP)
                    });
                    self.check("lend_mut_timeout", &got, &Some(Ok(n)));
                    if got.is_ok() && !self.scribbled {
                        assert!(
                            buf.view().to_vec().iter().all(|&x| x == rq.v as u8),
                            "lend_mut bytes"
                        );
                    }
                }
            }
            // `subscribe` waits for its answer without a deadline (it has no timeout form):
            // only while nothing was scribbled, so the honest server answers it.
            8 if self.free() && !self.scribbled => {
                let rq = req(b);
                let n = rq.v % 4;
                let sub = timed("subscribe", OP, || self.cli.subscribe(rq))
                    .expect("subscribe to an honest server");
                for i in 0..n {
                    assert_eq!(
                        timed("recv_timeout", OP * 50, || sub.recv_timeout::<u64>(OP * 50)),
                        Ok(i),
                        "push {i} of {n}"
                    );
                }
                self.subs.push(sub);
            }
            9 if !self.subs.is_empty() => {
                let i = b.u8() as usize % self.subs.len();
                let sub = &self.subs[i];
                if b.u8() & 1 == 0 {
                    let _ = timed("try_recv", OP, || sub.try_recv::<u64>());
                } else {
                    let r = timed("recv_timeout", OP, || sub.recv_timeout::<u64>(OP));
                    if r == Err(Error::Timeout) {
                        self.timeouts += 1;
                    }
                }
                if b.u8() % 4 == 0 {
                    drop(self.subs.swap_remove(i));
                }
            }
            10 => {
                // The server side of the input: answer a held call or scalar, push, or end a
                // subscription.
                match b.u8() % 4 {
                    0 => {
                        if let Some((v, ctx)) = lock(&w.held).pop() {
                            let _ = ctx.reply(v.wrapping_add(1));
                        }
                    }
                    1 => {
                        if let Some(call) = lock(&w.held_scalars).pop() {
                            let _ = call.reply([1, 2]);
                        }
                    }
                    2 => {
                        let v = b.u64();
                        for n in lock(&w.notifiers).iter() {
                            let _ = n.push(v);
                        }
                    }
                    _ => drop(lock(&w.notifiers).pop()),
                }
            }
            11 | 12 => self.scribble(b),
            _ => {}
        }
    }
}

/// Runs one input against the process's server.
pub fn run(data: &[u8], side: Side) {
    let w = world();
    let mut b = Bytes(data);
    let before = memfd_snapshot();
    let cli = timed("connect", Duration::from_secs(5), || {
        Cli::connect(&w.name, Duration::from_secs(5))
    })
    .expect("an honest client connects to the fuzz server");
    let (map, seg_id) =
        map_new_segment(&before).expect("the new connection's segment in /proc/self/fd");
    assert_eq!(
        map.len(),
        HEADER + LAY.total,
        "the harness's copy of the RPC layout is out of date (crates/shm/src/rpc/layout.rs)"
    );
    let mut s = Session {
        w,
        side,
        cli,
        map,
        pending: Vec::new(),
        subs: Vec::new(),
        lost: 0,
        scribbled: false,
        timeouts: 0,
    };
    for _ in 0..MAX_OPS {
        if b.is_empty() || s.timeouts >= MAX_TIMEOUTS {
            break;
        }
        s.step(&mut b);
    }
    let scribbled = s.scribbled;
    // Everything the input left is dropped: each drop is bounded too.
    let map = timed("dropping the session", OP * 10, move || {
        let Session {
            cli,
            pending,
            subs,
            map,
            ..
        } = s;
        drop(pending);
        drop(subs);
        drop(cli);
        map
    });
    drop(map);
    // The server lets go of the connection of a client that hung up (its segment, socket and
    // watcher): nothing of it is left once the client and the contexts are dropped. (The
    // worker may store a context or notifier of this input just after the input ended: they
    // are dropped at every look.)
    let clear = || {
        lock(&w.held).clear();
        lock(&w.held_scalars).clear();
        lock(&w.notifiers).clear();
    };
    assert!(
        crate::memfd_closed(seg_id, Duration::from_secs(2), clear),
        "the server still holds the segment of a client that hung up 2 s ago"
    );

    // The honest counterpart keeps working: a fresh client gets correct answers.
    if scribbled {
        let fresh = timed("connect", Duration::from_secs(5), || {
            Cli::connect(&w.name, Duration::from_secs(5))
        })
        .expect("a fresh client connects after the scribbles");
        let rq = Req {
            op: 0,
            flag: true,
            letter: 'é',
            v: 41,
            tag: flat::String::try_from("fresh").expect("fits"),
        };
        let t = Duration::from_secs(3);
        assert_eq!(
            timed("fresh req_timeout", t, || fresh.req_timeout(rq, t)),
            Ok(42),
            "a fresh client after the scribbles"
        );
        assert_eq!(
            timed("fresh blocking_scalar", t, || fresh
                .blocking_scalar_timeout(0, [2, 3, 0, 0], t)),
            Ok([5, 0])
        );
    }
    leak_check(&w.inputs);
}

/// Every 512 inputs: the descriptors and threads of dropped clients (both sides: the server
/// forgets a connection once the client hung up) must be gone again.
fn leak_check(inputs: &Mutex<u64>) {
    static BASE: OnceLock<(usize, usize)> = OnceLock::new();
    let mut n = lock(inputs);
    *n += 1;
    let base = *BASE.get_or_init(|| (crate::open_fds(), crate::threads()));
    if *n % 512 != 0 {
        return;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let (fds, threads) = (crate::open_fds(), crate::threads());
        if fds <= base.0 + 64 && threads <= base.1 + 16 {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "leak after {} inputs: {fds} descriptors (first input: {}), {threads} threads \
                 (first input: {}), {} courier memfds open",
                *n,
                base.0,
                base.1,
                crate::courier_memfds().len()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
