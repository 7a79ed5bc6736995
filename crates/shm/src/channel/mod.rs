//! [`ShmChannel`]: a raw, bidirectional message channel between two processes, through the
//! segment of one [`Connection`].
//!
//! The code is in four parts: this file (the configuration, [`ShmChannel`] itself and the
//! protocol as a whole), `layout.rs` (where everything lies in the segment, and the header),
//! `send.rs` (loans, the free list, publishing) and `recv.rs` (taking messages, giving blocks
//! back).
//!
//! # Ownership of a block, per phase
//!
//! ```text
//!   sender process                         shared memory                receiver process
//!   free list (local Vec) --loan()--> LOANED: sender writes the block
//!        ^                              | publish: entry stamped with its lap into
//!        |                              v   ring[tail % depth] (Release), tail += 1 (local)
//!        |                         IN RING: nobody writes it --try_recv: entry (Acquire) with
//!        |                                                   this lap's stamp, head += 1
//!        |                                                   (Release)
//!        |                                                      v
//!        |                                                 HELD: the receiver reads it
//!        |                                                 through its ShmMessage
//!        |                                                      | drop: index, stamped with
//!        |                                                      v its lap, into ret[n % count]
//!        |                                                        (Release), n += 1 (local)
//!   reclaim: ret[head % count] with this <-- RETURNED: nobody writes it
//!   lap's stamp (Acquire), head += 1 (local);
//!   check "in flight", push free
//! ```
//!
//! The returned ring keeps no counter in the segment: the receiver never has more blocks to
//! give back than the ring's `block_count` slots (each is one the sender sent), so it never
//! waits for room, and the sender finds each return by its slot's stamp alone (the RPC
//! request ring's scheme, `substrate/ring.rs`). A sender's taking back then reads one line
//! the receiver wrote, and a return writes one.
//!
//! **Each counter has exactly one writer, which keeps the authoritative value in its own
//! process memory and only ever stores it to the segment; everything read from the segment
//! (the peer's counter, ring entries, returned indices) is read once into a local and checked
//! against the layout before use, so a hostile peer can make calls fail with
//! [`ShmError::Corrupt`] but never make this process touch memory outside the segment.** A
//! returned index is accepted only if this side has it in flight (a local bitmap), so a peer
//! cannot return a block twice and make two loans alias. The bytes of a block are the peer's
//! to corrupt: a hostile peer may change a message while it is read, so its content is as
//! untrusted as any input from another process.
//!
//! # Inline messages
//!
//! A message of at most 56 bytes (`INLINE_MAX`) does not travel in a block: the sender
//! writes it into its message-ring entry, after the entry word (an entry is a 64-byte line),
//! and marks the entry `INLINE`; a loaned block whose message turns out that short is
//! copied into the entry at `publish` and goes straight back to the free list. The receiver
//! then reads one line the sender wrote, not two (the entry and the block), and returns no
//! block: in a ping-pong of 8-byte messages between two threads on two CPUs of the
//! benchmarks' AMD EPYC VM, 340 ns a round trip against 460 ns in a block (measured when the
//! receiver read the message in place; with its copy out of the entry, below, 270 ns
//! against 280 ns in place, alternating runs with the host faster).
//!
//! The receiver copies the message out of the entry as it takes it (into a cell of its own
//! process, at most 56 bytes of a line it reads anyway) and hands the entry back at once:
//!
//! ```text
//!   sender                               shared memory                receiver
//!   reserve slot (room: head) --> entry[tail % depth]: bytes, then
//!                                 the word, stamped (Release)
//!                                 IN RING --try_recv: entry (Acquire), bytes copied into
//!                                           a cell (local), head += 1 (Release)
//!   reserve: the slot is free <-- (the sender's again)
//! ```
//!
//! So a received inline message holds nothing in the segment: a receiver may keep it (or
//! forget it) without holding up the ring, and nothing the sender writes afterwards changes
//! it. Its cell goes back to the channel's local stock when it drops.
//!
//! # Waiting
//!
//! A receiver that finds the ring empty spins briefly (or, when the sender last waited on
//! this CPU and is awake, yields the CPU to it for up to 20 µs instead: spinning would keep
//! it from sending), then announces that it sleeps and sleeps on a futex in the segment (a
//! [`WaitStrategy::BusySpin`] receiver never sleeps; it moves to another CPU when it finds
//! the sender awake on its own, and yields the CPU between looks in long spins while the CPUs
//! are oversubscribed and the sender may be on its CPU):
//!
//! ```text
//! receiver                                  sender
//! r_wait = 1                                entry = e | stamp       (Release)
//! fence(SeqCst)                             fence(SeqCst)
//! no stamped entry? then                    r_wait == 1? then
//!     futex_wait(r_wait, 1)                     r_wait = 0, futex_wake(r_wait)
//! ```
//!
//! With both fences sequentially consistent, at least one side sees the other's store: the
//! receiver sees the stamped entry and does not sleep, or the sender sees the flag and wakes it
//! (and a wake that comes first makes `futex_wait` return at once, since the word is no longer
//! 1). So a message is never left waiting for a timeout, unlike crossbar's 50 ms missed-wakeup
//! stall. A sender blocked on a full ring or an empty pool sleeps the same way on `s_wait`,
//! woken by the receiver when it advances `head` or gives a block back. The sender pays a
//! fence and a load per message, and a system call only when the receiver really sleeps.
//! The sleep has no timeout of its own (only the caller's deadline, if any): a blocked
//! process makes no wake-up at all until a message, its deadline or the peer's death.
//!
//! # A dead peer
//!
//! Liveness comes from the kernel, not from heartbeats: the connection's Unix socket carries
//! nothing after the handshake, and when the peer closes it or dies (SIGKILL included, the
//! kernel closes its descriptors) our end reports a hang-up. Each channel owns a **watcher
//! thread** that blocks in `poll` (no timeout) on that socket (`POLLRDHUP`, and the `POLLHUP`
//! / `POLLERR` the kernel always reports; not `POLLIN`, so bytes a hostile peer writes into the
//! socket wake nothing) and on an `eventfd` that the channel's drop signals. On a hang-up it
//! sets a process-local `dead` flag, then wakes this side's two futex words (`r_wait` of the
//! direction we receive on, `s_wait` of the one we send on) in our own mapping, and exits.
//! Every check of the peer's life (`recv`, `try_recv`, the busy spin, `loan`, `send`, a
//! blocked send) is then one load of that flag: no system call on any path, and no
//! once-a-millisecond socket poll on the send path. A send to a peer that died is an error as
//! soon as the watcher has seen the hang-up (microseconds; a send in that window is as lost as
//! one made just before the death). Messages the peer sent before it died are received first.
//!
//! The watcher's wake-up is part of the same no-missed-wakeup protocol:
//!
//! ```text
//! waiter (this process)                        watcher (this process)
//! sleepers += 1                 (SeqCst)       dead = true                  (SeqCst)
//! word = SLEEPING               (SeqCst)       word = AWAKE, futex_wake(word)   (each word)
//! fence(SeqCst)                                sleepers == 0 ? exit : pause, wake again
//! nothing to take and !dead? then futex_wait(word, SLEEPING, deadline)
//! word = AWAKE; sleepers -= 1; look again (the ring, then `dead`)
//! ```
//!
//! `dead` is set before the wake. If the waiter's load of `dead` comes before the watcher's
//! store in the single order of SeqCst operations, its store of SLEEPING comes before the
//! watcher's store of AWAKE, so `futex_wait` either finds AWAKE and returns at once or is
//! queued before the `futex_wake`; otherwise the waiter sees `dead` and does not sleep. The
//! peer can write the word too: a hostile peer that hung up but still maps the segment could
//! put SLEEPING back between the watcher's store and the waiter's `futex_wait`. So the
//! watcher does not stop after one wake: while `sleepers` (a local count, also SeqCst, so the
//! watcher either sees the waiter counted or the waiter sees `dead`) is not zero it wakes again
//! after a pause growing from 50 µs to 10 ms. The waker only ever calls `futex_wake` on its
//! own mapping, whatever the peer wrote.
//!
//! The watcher itself (and why it is a thread per channel) is described in `watch.rs`; it is
//! shared with the RPC layer.

mod layout;
mod recv;
mod send;

pub use recv::ShmMessage;
pub use send::ShmLoan;

use crate::error::ShmError;
use crate::segment::{Segment, HEADER_LEN};
use crate::service::{ConnectConfig, Connection, Listener, ListenerConfig};
use crate::substrate::deadline::Deadline;
use crate::substrate::park::{AdaptiveSpin, Contention, Pace, AWAKE};
use crate::substrate::ring::{Consumer, Producer};
use crate::sync::shared::{AtomicU32, AtomicU64, Ordering};
use crate::sys::{self, Credentials};
use crate::watch::Watch;
use layout::{read_header, write_header, Layout, ENTRY, INLINE_AT, INLINE_MAX, R_WAIT, S_WAIT};
use std::cell::Cell;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

/// What a send does when the ring towards the peer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Wait until the receiver makes room in the ring or gives a block back (forever in
    /// [`ShmChannel::send`], up to a deadline in [`ShmChannel::send_timeout`]), while
    /// checking that it lives.
    Backpressure,
    /// Fail at once with [`ShmError::RingFull`] or [`ShmError::PoolExhausted`].
    Error,
}

/// The shape of a channel. The listener's configuration decides the layout of the segment
/// (block size, block count, ring depth) for both directions; each side's own `full` decides
/// what its sends do on a full ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmConfig {
    block_size: usize,
    block_count: usize,
    ring_depth: Option<usize>,
    full: Full,
}

impl Default for ShmConfig {
    fn default() -> Self {
        ShmConfig {
            block_size: 4096,
            block_count: 64,
            ring_depth: None,
            full: Full::Backpressure,
        }
    }
}

impl ShmConfig {
    /// The default: 64 blocks of 4 KiB per direction, a ring as deep as the pool, backpressure.
    pub fn new() -> Self {
        Self::default()
    }

    /// The size in bytes of each block: the largest message (1 to 2^30).
    pub fn block_size(mut self, bytes: usize) -> Self {
        self.block_size = bytes;
        self
    }

    /// The number of blocks in each direction's pool (1 to 2^20).
    pub fn block_count(mut self, count: usize) -> Self {
        self.block_count = count;
        self
    }

    /// The number of messages each direction's ring holds (1 to 2^20; by default the block
    /// count). A shallower ring than the pool lets the receiver keep messages while the
    /// sender is held back by [`Full`]. Each entry takes 64 bytes of the segment; a message of
    /// at most 56 bytes travels in its entry (the receiver copies it out as it takes it).
    pub fn ring_depth(mut self, depth: usize) -> Self {
        self.ring_depth = Some(depth);
        self
    }

    /// What a send does on a full ring.
    pub fn full(mut self, full: Full) -> Self {
        self.full = full;
        self
    }

    fn layout(&self) -> Result<Layout, ShmError> {
        Layout::new(
            self.block_size,
            self.block_count,
            self.ring_depth.unwrap_or(self.block_count),
        )
        .ok_or(ShmError::InvalidConfig(
            "block size, block count or ring depth out of range, or the segment over 1 GiB",
        ))
    }
}

/// How a blocked receive waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Spin on the ring without sleeping (lowest latency, one core busy), checking the
    /// watcher's "peer dead" flag on every empty look.
    ///
    /// A spin that has lasted 20 µs while the sender, awake, last waited on this same CPU
    /// (where it cannot run while we spin: each message would wait for the scheduler's
    /// slice, milliseconds) moves the receiving thread to another CPU of its affinity mask:
    /// the mask is narrowed to the other CPUs, then put back, so the thread stays where it
    /// landed. A thread allowed on one CPU only is not moved (it yields instead).
    ///
    /// Where the CPUs are oversubscribed, a spin yields the CPU between looks
    /// (`sched_yield`) once it has lasted 500 µs: for 250 ms after a spin of this channel
    /// lost a scheduler slice (another thread held its CPU for 200 µs or more), unless the
    /// sender last waited on another CPU (the yield would then go to a third thread, for
    /// the rest of its slice). It never sleeps: it stays runnable and looks again as soon as
    /// nothing else wants the CPU, and the sender never has to wake it; but a sender that
    /// fills a large message beside it gets the whole CPU (a 16 MiB round trip with a third
    /// process spinning on a 2-CPU machine took 7.0–8.0 ms spinning throughout, about 4.0
    /// ms yielding to whatever runs beside it, and 1.2–1.4 ms yielding only where the
    /// sender may be). A thread with a CPU to itself never loses a slice, and never yields.
    ///
    /// The looks follow each other without the spin-loop hint (`PAUSE`, which takes tens of
    /// nanoseconds on recent cores and delays the look that finds the message), unless the
    /// sender last waited on another hardware thread of this core
    /// ([`smt_siblings`](courier_core::placement::smt_siblings)): there the hint gives it the
    /// core's units while we wait.
    BusySpin,
    /// Spin briefly, then sleep on a futex until a message or the peer's death.
    Adaptive,
    /// As `Adaptive`, but give up with [`ShmError::Timeout`] after this long.
    Timeout(Duration),
}

/// Which direction each side sends on.
const LISTENER_TX: usize = 0;
const CLIENT_TX: usize = 1;

/// One end of a bidirectional shared-memory channel between two processes.
///
/// Both ends can send and receive. Receiving returns a [`ShmMessage`], a view of the message
/// in its block (read by copy) that gives the block back when dropped; sending copies into a block
/// ([`ShmChannel::send`]) or writes one in place ([`ShmChannel::loan`]). A message of at most
/// 56 bytes travels inline instead, in its ring entry (see the module docs). The channel is
/// `Send` but not `Sync`: one thread uses an end at a time.
///
/// # Examples
///
/// ```no_run
/// use courier_shm::{ShmChannel, ShmConfig};
/// use std::time::Duration;
///
/// // Process A (server, start first):
/// let srv = ShmChannel::listen("rpc", ShmConfig::new(), Duration::from_secs(30))?;
/// // Process B (client):
/// let cli = ShmChannel::connect("rpc", ShmConfig::new(), Duration::from_secs(5))?;
///
/// cli.send(b"request")?;
/// let msg = srv.recv()?;
/// assert_eq!(msg.to_vec(), b"request");
/// drop(msg);
/// srv.send(b"response")?;
/// let reply = cli.recv()?;
/// assert_eq!(reply.to_vec(), b"response");
/// # Ok::<(), courier_shm::ShmError>(())
/// ```
pub struct ShmChannel {
    /// Shared with the watcher thread, which wakes our futex words in it.
    seg: Arc<Segment>,
    /// The peer's liveness, kept by the watcher thread (which owns the socket).
    watch: Watch,
    peer: Credentials,
    lay: Layout,
    full: Full,
    tx: usize,
    rx: usize,
    // Sending side, authoritative copies (never read back from the segment): the producer
    // of the message ring and the consumer of the returned ring (unshared) of direction
    // `tx`.
    msg_tx: Cell<Producer>,
    ret_rx: Cell<Consumer>,
    free: Cell<Vec<u32>>,
    in_flight: Cell<Vec<bool>>,
    // Receiving side: the consumer of the message ring and the producer of the returned
    // ring (unshared: it never looks for room) of direction `rx`.
    msg_rx: Cell<Consumer>,
    ret_tx: Cell<Producer>,
    /// Cells of `INLINE_MAX` bytes for the inline messages taken, given back by the messages
    /// dropped (at most `CELLS_KEPT` kept), the last one first.
    #[allow(
        clippy::vec_box,
        reason = "a cell leaves the stock for a message, which views it at a fixed address"
    )]
    cells: Cell<Vec<Box<[u8; INLINE_MAX]>>>,
    /// How many times a waiting receive looked at the returned ring to take blocks back
    /// ([`ShmChannel::reclaim_while_waiting`]), for the tests to wait on.
    #[cfg(test)]
    taken_back_waiting: Arc<std::sync::atomic::AtomicU64>,
    /// How long a blocking wait spins before it sleeps ([`AdaptiveSpin`], up to
    /// [`WAIT_SPIN`]).
    spin: AdaptiveSpin,
    /// How long the last blocking receives that slept took: a receiver whose peer takes
    /// long and regularly over each message sleeps through most of the next wait and spins
    /// for its end ([`Pace`]), so that a large message costs no wake-up.
    pace: Pace,
    /// Handed-over blocking receives in a row answered soon (reset by one that was not, or
    /// by a receive that slept or waited long): whether moving off the sender's CPU pays
    /// (`move_pays`).
    short_handovers: Cell<u32>,
    /// Whether a busy-spinning receive lost a scheduler slice lately, so that its long
    /// spins yield the CPU between looks ([`Contention`]).
    contention: Contention,
    /// The sender fills the blocks returned last in turn ([`ShmChannel::rotates`]).
    rotates: bool,
}

/// The longest a blocking receive (or a send waiting for room) spins before it sleeps.
const WAIT_SPIN: std::time::Duration = std::time::Duration::from_micros(20);

impl std::fmt::Debug for ShmChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmChannel")
            .field("peer", &self.peer)
            .field("block_size", &self.lay.block_size)
            .field("block_count", &self.lay.block_count)
            .field("ring_depth", &self.lay.ring_depth)
            .field("full", &self.full)
            .finish_non_exhaustive()
    }
}

impl ShmChannel {
    /// Takes the service name `name`, waits up to `timeout` for one client, and makes the
    /// channel with the layout of `config`. The name is freed once the client is connected.
    ///
    /// # Errors
    ///
    /// [`ShmError::InvalidConfig`] if the layout is out of range; those of
    /// [`Listener::bind`] (a bad name, a name in use, the runtime directory) and of
    /// [`Listener::accept_timeout`] ([`ShmError::Timeout`], [`ShmError::PermissionDenied`]).
    pub fn listen(name: &str, config: ShmConfig, timeout: Duration) -> Result<Self, ShmError> {
        let deadline = Deadline::after(timeout);
        let lay = config.layout()?;
        let listener = Listener::bind(
            name,
            ListenerConfig::new().segment_size(HEADER_LEN + lay.total),
        )?;
        let conn = listener.accept_with(deadline.instant(), |seg| write_header(seg, &lay))?;
        drop(listener);
        Self::new(conn, lay, config.full, LISTENER_TX)
    }

    /// Connects to the channel listening on `name`, waiting up to `timeout` for it. The
    /// layout is the listener's; only `config`'s [`Full`] policy is used.
    ///
    /// # Errors
    ///
    /// Those of [`Connection::connect_timeout`] (a bad name, [`ShmError::Timeout`],
    /// [`ShmError::PermissionDenied`], [`ShmError::BadSegment`]), and [`ShmError::Corrupt`] if
    /// the channel header is not one this build can use.
    pub fn connect(name: &str, config: ShmConfig, timeout: Duration) -> Result<Self, ShmError> {
        Self::connect_with(name, config, &ConnectConfig::new(), timeout)
    }

    /// [`ShmChannel::connect`] with the client's side of the checks (`connect`): the largest
    /// segment it maps and the users whose listeners it trusts besides its own
    /// ([`ConnectConfig::trust_uid`]).
    ///
    /// # Errors
    ///
    /// Those of [`ShmChannel::connect`], and [`ShmError::UntrustedPeer`] if the listener runs
    /// as a user `connect` does not trust.
    pub fn connect_with(
        name: &str,
        config: ShmConfig,
        connect: &ConnectConfig,
        timeout: Duration,
    ) -> Result<Self, ShmError> {
        let conn = Connection::connect_timeout(name, connect, timeout)?;
        let lay = read_header(conn.segment())?;
        Self::new(conn, lay, config.full, CLIENT_TX)
    }

    fn new(conn: Connection, lay: Layout, full: Full, tx: usize) -> Result<Self, ShmError> {
        let (seg, sock, peer) = conn.into_parts();
        Self::from_parts(seg, sock, peer, lay, full, tx)
    }

    fn from_parts(
        seg: Segment,
        sock: OwnedFd,
        peer: Credentials,
        lay: Layout,
        full: Full,
        tx: usize,
    ) -> Result<Self, ShmError> {
        // `block_count <= MAX_COUNT` fits in u32.
        let free = (0..lay.block_count as u32).rev().collect();
        let rx = 1 - tx;
        let seg = Arc::new(seg);
        // The words this side sleeps on: the receiver's of the direction it receives on, the
        // sender's of the direction it sends on.
        let words = [lay.ctl[rx] + R_WAIT, lay.ctl[tx] + S_WAIT];
        let theirs = Arc::clone(&seg);
        let watch = Watch::start(sock, move || {
            for &off in &words {
                let word = theirs.u32_at(off);
                word.store(AWAKE, Ordering::SeqCst);
                sys::futex_wake(word);
            }
        })?;
        Ok(ShmChannel {
            seg,
            watch,
            peer,
            lay,
            full,
            tx,
            rx,
            msg_tx: Cell::new(Producer::new(lay.ring_depth)),
            ret_rx: Cell::new(Consumer::new(lay.block_count)),
            free: Cell::new(free),
            in_flight: Cell::new(vec![false; lay.block_count]),
            msg_rx: Cell::new(Consumer::new(lay.ring_depth)),
            ret_tx: Cell::new(Producer::new(lay.block_count)),
            cells: Cell::new(Vec::new()),
            #[cfg(test)]
            taken_back_waiting: Arc::default(),
            spin: AdaptiveSpin::caller(WAIT_SPIN),
            pace: Pace::default(),
            short_handovers: Cell::new(0),
            contention: Contention::default(),
            rotates: ShmChannel::rotates(lay.block_size),
        })
    }

    /// The credentials of the process at the other end.
    pub fn peer(&self) -> Credentials {
        self.peer
    }

    /// The size of a block: the largest message.
    pub fn block_size(&self) -> usize {
        self.lay.block_size
    }

    /// The number of blocks in each direction's pool.
    pub fn block_count(&self) -> usize {
        self.lay.block_count
    }

    // ----- Access to the segment. Every offset below comes from `Layout`, whose `total` was
    // checked against the payload's real length when the channel was made, plus an index
    // that the caller checked against the layout's counts.

    fn u64_at(&self, off: usize) -> &AtomicU64 {
        self.seg.u64_at(off)
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        self.seg.u32_at(off)
    }

    fn ctl64(&self, dir: usize, field: usize) -> &AtomicU64 {
        self.u64_at(self.lay.ctl[dir] + field)
    }

    fn ctl32(&self, dir: usize, field: usize) -> &AtomicU32 {
        self.u32_at(self.lay.ctl[dir] + field)
    }

    /// A block's first byte. `idx < block_count`.
    fn block_ptr(&self, dir: usize, idx: usize) -> *mut u8 {
        // SAFETY: idx < block_count, so the block lies inside `blocks[dir]..blocks[dir] +
        // stride * block_count`, within `lay.total`, within the payload.
        unsafe {
            self.seg
                .payload_ptr()
                .add(self.lay.blocks[dir] + idx * self.lay.stride)
        }
    }

    /// The entry word of message-ring slot `slot < ring_depth` of direction `dir`.
    fn entry_word(&self, dir: usize, slot: usize) -> &AtomicU64 {
        self.u64_at(self.lay.ring[dir] + slot * ENTRY)
    }

    /// The entry word of returned-ring slot `slot < block_count` of direction `dir`.
    fn returned_word(&self, dir: usize, slot: usize) -> &AtomicU64 {
        self.u64_at(self.lay.ret[dir] + slot * 8)
    }

    /// The first byte of the inline message in message-ring slot `slot < ring_depth` of
    /// direction `dir` (`INLINE_MAX` bytes from there are the entry's).
    fn inline_ptr(&self, dir: usize, slot: usize) -> *mut u8 {
        debug_assert!(
            slot < self.lay.ring_depth,
            "inline slot {slot} out of the ring"
        );
        // SAFETY: slot < ring_depth, so the entry lies inside `ring[dir]..ring[dir] +
        // ring_depth * ENTRY`, within `lay.total`, within the payload.
        unsafe {
            self.seg
                .payload_ptr()
                .add(self.lay.ring[dir] + slot * ENTRY + INLINE_AT)
        }
    }

    /// Whether the watcher has seen the peer hang up: one load of a process-local flag.
    fn peer_dead(&self) -> bool {
        self.watch.shared.dead.load(Ordering::SeqCst)
    }
}

/// Test helpers shared by the channel's unit tests (`mod.rs`, `send.rs`, `recv.rs`, and
/// `crossbar_compat`'s).
#[cfg(test)]
pub(crate) mod support {
    use super::layout::{read_header, write_header, MAX_SEGMENT};
    use super::*;
    use crate::sync::shared::{AtomicU32, AtomicU64};
    use std::time::{Duration, Instant};

    pub(super) const PID: Credentials = Credentials {
        pid: 1,
        uid: 0,
        gid: 0,
    };

    /// Both ends of a channel in this process: two mappings of one memfd, a socket pair for
    /// liveness. Also returns a third mapping, for playing a hostile peer.
    pub(super) fn pair_with(config: ShmConfig) -> (ShmChannel, ShmChannel, Segment) {
        let lay = config.layout().unwrap();
        let seg = Segment::create(HEADER_LEN + lay.total).unwrap();
        write_header(&seg, &lay);
        let open =
            |s: &Segment| Segment::open(s.fd().try_clone_to_owned().unwrap(), MAX_SEGMENT).unwrap();
        let cseg = open(&seg);
        let evil = open(&seg);
        let clay = read_header(&cseg).unwrap();
        assert_eq!(clay, lay);
        let (a, b) = sys::socketpair().unwrap();
        let l = ShmChannel::from_parts(seg, a, PID, lay, config.full, LISTENER_TX).unwrap();
        let c = ShmChannel::from_parts(cseg, b, PID, clay, config.full, CLIENT_TX).unwrap();
        (l, c, evil)
    }

    pub(crate) fn pair(config: ShmConfig) -> (ShmChannel, ShmChannel) {
        let (l, c, _) = pair_with(config);
        (l, c)
    }

    pub(super) const SHORT: Duration = Duration::from_millis(5);

    /// Waits (up to 1 s) for the watcher of `ch` to see the peer's hang-up; returns how long.
    pub(super) fn wait_dead(ch: &ShmChannel) -> Duration {
        let start = Instant::now();
        while !ch.peer_dead() {
            assert!(start.elapsed() < Duration::from_secs(1), "no hang-up seen");
            std::thread::sleep(Duration::from_micros(100));
        }
        start.elapsed()
    }

    /// A small deterministic generator (xorshift64*), so failures replay.
    pub(super) struct Rng(pub(super) u64);
    impl Rng {
        pub(super) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    pub(super) fn evil_u64(evil: &Segment, off: usize, v: u64) {
        // SAFETY: test-only; callers pass 8-aligned offsets inside the payload.
        unsafe { &*evil.payload_ptr().add(off).cast::<AtomicU64>() }.store(v, Ordering::Relaxed);
    }

    pub(super) fn evil_u32(evil: &Segment, off: usize, v: u32) {
        // SAFETY: test-only; callers pass 4-aligned offsets inside the payload.
        unsafe { &*evil.payload_ptr().add(off).cast::<AtomicU32>() }.store(v, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::layout::HEAD;
    use crate::channel::support::*;
    use crate::channel::{Full, ShmConfig, WaitStrategy};
    use crate::substrate::ring::stamp;
    use std::time::{Duration, Instant};

    #[test]
    fn both_directions_copy_and_loan() {
        let (l, c) = pair(ShmConfig::new().block_size(100).block_count(4));
        c.send(b"request").unwrap();
        let m = l.recv_timeout(SHORT).unwrap();
        assert_eq!(m.to_vec(), b"request");
        l.send(b"response").unwrap();
        assert_eq!(
            c.recv_with(WaitStrategy::BusySpin).unwrap().to_vec(),
            b"response"
        );
        drop(m);
        let mut loan = l.loan().unwrap();
        assert_eq!(loan.len(), 100);
        loan.write_at(0, b"in pl").unwrap();
        loan.publish(5).unwrap();
        assert_eq!(c.try_recv().unwrap().unwrap().to_vec(), b"in pl");
        assert!(c.try_recv().unwrap().is_none());
        // An empty message is a message.
        c.send(b"").unwrap();
        assert_eq!(l.recv().unwrap().len(), 0);
    }

    /// An inline message is a copy: holding one holds no ring entry, so a receiver that
    /// keeps one (or forgets one) goes on receiving, and its sender never finds the ring full
    /// on its account.
    #[test]
    fn held_inline_messages_hold_no_room_in_the_ring() {
        let depth = 4;
        let (l, c) = pair(ShmConfig::new().ring_depth(depth).full(Full::Error));
        c.send(b"kept").unwrap();
        let kept = l.try_recv().unwrap().unwrap();
        c.send(b"forgotten").unwrap();
        std::mem::forget(l.try_recv().unwrap().unwrap());
        for i in 0..3 * depth as u8 {
            c.send(&[i]).unwrap();
            assert_eq!(l.try_recv().unwrap().unwrap().to_vec(), [i]);
        }
        // A full ring's worth queued while one is held.
        for i in 0..depth as u8 {
            c.send(&[i]).unwrap();
        }
        assert!(matches!(c.send(b"x"), Err(ShmError::RingFull)));
        for i in 0..depth as u8 {
            assert_eq!(l.try_recv().unwrap().unwrap().to_vec(), [i]);
        }
        assert_eq!(kept.to_vec(), b"kept");
    }

    #[test]
    fn the_channel_is_send() {
        fn send<T: Send>() {}
        send::<ShmChannel>();
    }

    #[test]
    fn adversarial_values_are_corrupt_errors() {
        let cfg = ShmConfig::new().block_size(64).block_count(4);
        let lay = cfg.layout().unwrap();
        let rx_ctl = lay.ctl[CLIENT_TX];
        let corrupt = |r: Result<Option<ShmMessage<'_>>, ShmError>| {
            assert!(matches!(r, Err(ShmError::Corrupt(_))), "{r:?}");
        };
        // The stamp of the first lap (see `substrate::ring`, "Stamped entries").
        const LAP_0: u64 = 1 << 52;
        // An entry without this lap's stamp (none, or the last lap's) is no message.
        let (l, _c, evil) = pair_with(cfg);
        for stamp in [0, 0xfff << 52, 2 << 52] {
            evil_u64(&evil, lay.ring[CLIENT_TX], stamp | 1 << 32 | 1);
            assert!(l.try_recv().unwrap().is_none());
        }
        assert!(matches!(l.recv_timeout(SHORT), Err(ShmError::Timeout)));
        // An entry names a block out of range, then a length over the block.
        let (l, _c, evil) = pair_with(cfg);
        evil_u64(&evil, lay.ring[CLIENT_TX], LAP_0 | 0xf_ffff << 32 | 1);
        evil_u64(
            &evil,
            lay.ring[CLIENT_TX] + layout::ENTRY,
            LAP_0 | 1 << 32 | u64::from(u32::MAX >> 1),
        );
        // An inline message longer than its entry holds.
        evil_u64(
            &evil,
            lay.ring[CLIENT_TX] + 2 * layout::ENTRY,
            LAP_0 | layout::INLINE | (layout::INLINE_MAX as u64 + 1),
        );
        corrupt(l.try_recv());
        corrupt(l.try_recv());
        corrupt(l.try_recv());
        assert!(l.try_recv().unwrap().is_none());
        // A sender that rewrites the entry of an inline message once it is taken changes
        // nothing the receiver holds: the message is a copy, and the entry is the sender's
        // again.
        let (l, c, evil) = pair_with(cfg);
        c.send(b"abc").unwrap();
        let abc = l.try_recv().unwrap().unwrap();
        evil_u64(
            &evil,
            lay.ring[CLIENT_TX] + INLINE_AT,
            u64::from_le_bytes(*b"XXXXXXXX"),
        );
        assert_eq!(abc.to_vec(), b"abc");
        // The receiver's head runs ahead of what was sent: seen once the sender reads it,
        // when the head it last read leaves no room in the ring.
        let (_l, c, evil) = pair_with(cfg.ring_depth(2));
        c.send(b"x").unwrap();
        c.send(b"x").unwrap();
        evil_u64(&evil, rx_ctl + HEAD, 7);
        assert!(matches!(c.send(b"x"), Err(ShmError::Corrupt(_))));
        // A block comes back twice, or that was never sent, or out of turn.
        // The receiver's `n`-th return, as a hostile receiver writes it.
        let ret = |evil: &Segment, n: u64, idx: u64| {
            let depth = lay.block_count as u64;
            let slot = lay.ret[CLIENT_TX] + (n % depth) as usize * 8;
            evil_u64(evil, slot, idx | stamp(n, depth));
        };
        let (l, c, evil) = pair_with(cfg);
        // (Messages too long to go inline: blocks 0 to 3.)
        for _ in 0..4 {
            c.send(&[b'x'; 60]).unwrap();
        }
        drop(l.try_recv().unwrap());
        ret(&evil, 1, 3);
        ret(&evil, 2, 3);
        // The first honest return is taken, and block 3; its duplicate is refused, and stays
        // refused: the next loan that runs dry meets it again.
        assert!(matches!(c.loan(), Err(ShmError::Corrupt(_))));
        let _a = c.loan().unwrap();
        let _b = c.loan().unwrap();
        assert!(matches!(c.loan(), Err(ShmError::Corrupt(_))));
        // Blocks 0 and 1 sent, 1 given back honestly; then block 3, which was never sent, and
        // an index out of range.
        for bad in [3, 1 << 40 | 1] {
            let (l, c, evil) = pair_with(cfg);
            c.send(&[b'x'; 60]).unwrap();
            c.send(&[b'x'; 60]).unwrap();
            let first = l.try_recv().unwrap();
            drop(l.try_recv().unwrap());
            ret(&evil, 1, bad);
            // Blocks 2 and 3 from the free stack; then the returns: block 1 is taken, and
            // the loan reports the bad one.
            let _held: Vec<_> = (0..2).map(|_| c.loan().unwrap()).collect();
            assert!(matches!(c.loan(), Err(ShmError::Corrupt(_))), "{bad}");
            assert!(
                c.loan().is_ok(),
                "block 1 was taken back before the bad return"
            );
            drop(first);
        }
        // A return of the next lap where this one's is due.
        let (l, c, evil) = pair_with(cfg);
        c.send(&[b'x'; 60]).unwrap();
        drop(l.try_recv().unwrap());
        ret(&evil, lay.block_count as u64, 0);
        let _held: Vec<_> = (0..3).map(|_| c.loan().unwrap()).collect();
        assert!(matches!(c.loan(), Err(ShmError::Corrupt(_))));
    }

    #[test]
    fn random_writes_by_a_hostile_peer_give_errors_never_panics_or_hangs() {
        let cfg = ShmConfig::new().block_size(24).block_count(8).ring_depth(4);
        let lay = cfg.layout().unwrap();
        // The area a hostile peer would aim at: the header, counters, rings.
        let hot = lay.blocks[0];
        const TINY: Duration = Duration::from_millis(1);
        for seed in 1..=100u64 {
            let (l, c, evil) = pair_with(cfg.full(if seed % 2 == 0 {
                Full::Error
            } else {
                Full::Backpressure
            }));
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut held = Vec::new();
            for _ in 0..200 {
                let r = rng.next();
                let off = (r as usize % (hot / 8)) * 8;
                let v = match r >> 60 {
                    0 => 0,
                    1 => u64::MAX,
                    2 => rng.next() % 16,
                    3 => (rng.next() << 32) | (rng.next() % 64),
                    _ => rng.next(),
                };
                evil_u64(&evil, off, v);
                let start = Instant::now();
                match rng.next() % 6 {
                    0 => drop(c.send_timeout(b"hello", TINY)),
                    1 => drop(l.send_timeout(b"hello", TINY)),
                    2 => {
                        if let Ok(m) = l.recv_timeout(TINY) {
                            let _ = m.to_vec().iter().map(|&b| u64::from(b)).sum::<u64>();
                            held.push(m);
                        }
                    }
                    3 => {
                        if let Ok(Some(m)) = c.try_recv() {
                            let _ = m.len();
                        }
                    }
                    4 => {
                        if let Ok(mut loan) = c.loan() {
                            loan.fill(7);
                            let _ = loan.publish_timeout(3, TINY);
                        }
                    }
                    _ => held.clear(),
                }
                assert!(start.elapsed() < Duration::from_secs(2), "seed {seed}");
            }
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::collections::VecDeque;

        #[derive(Debug, Clone)]
        enum Op {
            Send(usize),
            Loan(usize),
            AbandonLoan,
            TryRecv,
            DropHeld(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0usize..72).prop_map(Op::Send),
                (0usize..72).prop_map(Op::Loan),
                Just(Op::AbandonLoan),
                Just(Op::TryRecv),
                any::<usize>().prop_map(Op::DropHeld),
            ]
        }

        /// The model of one direction: messages sent and not taken (each holds a ring
        /// entry; an inline message taken is a copy and holds none), blocks in use.
        #[derive(Default)]
        struct Model {
            queue: VecDeque<Vec<u8>>,
            blocks: usize,
        }

        impl Model {
            fn inline(len: usize) -> bool {
                len <= layout::INLINE_MAX
            }
        }

        proptest! {
            /// Against a model (a queue of messages, a count of blocks in use): an honest
            /// pair never loses, reorders or changes a message, and each error is the
            /// model's. Messages up to `INLINE_MAX` bytes travel in their ring entry (copied
            /// out when taken), longer ones in a block.
            #[test]
            fn an_honest_pair_matches_the_model(
                count in 1usize..6,
                depth in 1usize..6,
                ops in proptest::collection::vec(op(), 1..200),
            ) {
                let bs = 64;
                let cfg = ShmConfig::new()
                    .block_size(bs)
                    .block_count(count)
                    .ring_depth(depth)
                    .full(Full::Error);
                let (l, c) = pair(cfg);
                let mut m = Model::default();
                // A held message, and what it must hold.
                let mut held: Vec<(ShmMessage<'_>, Vec<u8>)> = Vec::new();
                let mut n: u8 = 0;
                for op in ops {
                    match op {
                        Op::Send(len) | Op::Loan(len) => {
                            n = n.wrapping_add(1);
                            let msg = vec![n; len];
                            let loan = matches!(op, Op::Loan(_));
                            let r = if loan {
                                c.loan().and_then(|mut loan| {
                                    let k = len.min(loan.len());
                                    loan.write_at(0, &msg[..k]).unwrap();
                                    loan.publish(len)
                                })
                            } else {
                                c.send(&msg)
                            };
                            // A loan takes a block before its length is known; a send takes
                            // one only for a message too long to go inline.
                            let needs_block = loan || (!Model::inline(len) && len <= bs);
                            let want = if !loan && len > bs {
                                Err("too large")
                            } else if needs_block && m.blocks == count {
                                Err("pool exhausted")
                            } else if len > bs {
                                Err("too large")
                            } else if m.queue.len() == depth {
                                Err("ring full")
                            } else {
                                Ok(())
                            };
                            let got = match r {
                                Ok(()) => Ok(()),
                                Err(ShmError::TooLarge { .. }) => Err("too large"),
                                Err(ShmError::PoolExhausted) => Err("pool exhausted"),
                                Err(ShmError::RingFull) => Err("ring full"),
                                Err(e) => {
                                    prop_assert!(false, "unexpected {}", e);
                                    unreachable!()
                                }
                            };
                            prop_assert_eq!(got, want, "len {}, loan {}", len, loan);
                            if got.is_ok() {
                                if !Model::inline(len) {
                                    m.blocks += 1;
                                }
                                m.queue.push_back(msg);
                            }
                        }
                        Op::AbandonLoan => {
                            match c.loan() {
                                Ok(loan) => { prop_assert!(m.blocks < count); drop(loan) }
                                Err(ShmError::PoolExhausted) => prop_assert_eq!(m.blocks, count),
                                Err(e) => prop_assert!(false, "unexpected {}", e),
                            }
                        }
                        Op::TryRecv => match l.try_recv() {
                            Ok(Some(msg)) => {
                                let want = m.queue.pop_front();
                                prop_assert_eq!(Some(msg.to_vec()), want.clone());
                                held.push((msg, want.unwrap_or_default()));
                            }
                            Ok(None) => prop_assert!(m.queue.is_empty()),
                            Err(e) => prop_assert!(false, "unexpected {}", e),
                        },
                        Op::DropHeld(i) => {
                            if !held.is_empty() {
                                let (msg, want) = held.swap_remove(i % held.len());
                                // Still intact while held.
                                prop_assert_eq!(&msg.to_vec(), &want);
                                drop(msg);
                                if !Model::inline(want.len()) {
                                    m.blocks -= 1;
                                }
                            }
                        }
                    }
                }
            }

            /// A hostile peer's writes anywhere in the control area and rings, between the
            /// calls of the other side: errors at worst, never a panic or a wait past a timeout.
            #[test]
            fn hostile_writes_never_panic(
                writes in proptest::collection::vec((any::<u16>(), any::<u64>(), 0u8..6), 1..100),
            ) {
                let cfg = ShmConfig::new().block_size(16).block_count(3).ring_depth(2);
                let lay = cfg.layout().unwrap();
                let (l, c, evil) = pair_with(cfg);
                let mut held = Vec::new();
                for (off, v, what) in writes {
                    let off = (usize::from(off) % (lay.blocks[0] / 8)) * 8;
                    evil_u64(&evil, off, v);
                    let start = Instant::now();
                    match what {
                        0 => drop(c.send_timeout(b"abc", Duration::from_millis(1))),
                        1 => drop(l.send_timeout(b"abc", Duration::from_millis(1))),
                        2 => if let Ok(m) = l.recv_timeout(Duration::from_millis(1)) {
                            let _ = m.to_vec().iter().fold(0u8, |a, &b| a ^ b);
                            held.push(m);
                        },
                        3 => drop(c.try_recv().map(|m| m.map(|m| m.len()))),
                        4 => drop(c.loan().map(|l| l.len())),
                        _ => held.clear(),
                    }
                    prop_assert!(start.elapsed() < Duration::from_secs(2));
                }
            }
        }
    }
}
