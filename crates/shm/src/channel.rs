//! [`ShmChannel`]: a raw, bidirectional message channel between two processes, through the
//! segment of one [`Connection`].
//!
//! # Layout (offsets from the start of the segment's payload)
//!
//! ```text
//! 0        channel header (64 B): "CHAN", version, block size, block count, ring depth, ready
//! 64       direction 0 control (listener -> client), 128 B:
//!            +0   tail      u64  messages published      (written by the sender)
//!            +8   ret_head  u64  returned blocks taken   (written by the sender)
//!            +16  s_wait    u32  the sender sleeps       (futex word, see "Waiting")
//!            +64  head      u64  messages consumed       (written by the receiver)
//!            +72  ret_tail  u64  blocks returned         (written by the receiver)
//!            +80  r_wait    u32  the receiver sleeps     (futex word)
//! 192      direction 1 control (client -> listener), the same
//! 320      message ring of each direction: ring_depth x u64 entries (block << 32 | length)
//!          returned ring of each direction: block_count x u32 block indices
//!          blocks of each direction (64-byte aligned): block_count x block_size bytes
//! ```
//!
//! Every counter only grows (u64: it does not wrap in practice); a slot is `counter % depth`.
//! Each direction is a pair of single-producer single-consumer rings over its own pool of
//! blocks: messages go forward through the message ring, blocks come back through the returned
//! ring. Both are the substrate's checked ring (`substrate/ring.rs`, model-checked with loom);
//! the waits below are its park/wake handshake (`substrate/park.rs`, likewise).
//!
//! # Ownership of a block, per phase
//!
//! ```text
//!   sender process                         shared memory                receiver process
//!   free list (local Vec) --loan()--> LOANED: sender writes the block
//!        ^                              | publish: entry into ring[tail], tail += 1 (Release)
//!        |                              v
//!        |                         IN RING: nobody writes it --try_recv: tail (Acquire),
//!        |                                                   entry, head += 1 (Release)
//!        |                                                      v
//!        |                                                 HELD: the receiver reads it
//!        |                                                 through its ShmMessage
//!        |                                                      | drop: index into
//!        |                                                      v ret[ret_tail], += 1 (Release)
//!   reclaim: ret_tail (Acquire), <------ RETURNED: nobody writes it
//!   check "in flight", push free
//! ```
//!
//! **Each counter has exactly one writer, which keeps the authoritative value in its own
//! process memory and only ever stores it to the segment; everything read from the segment
//! (the peer's counters, ring entries, returned indices) is read once into a local and checked
//! against the layout before use, so a hostile peer can make calls fail with
//! [`ShmError::Corrupt`] but never make this process touch memory outside the segment.** A
//! returned index is accepted only if this side has it in flight (a local bitmap), so a peer
//! cannot return a block twice and make two loans alias. The bytes of a block are the peer's
//! to corrupt: a hostile peer may change a message while it is read, so its content is as
//! untrusted as any input from another process.
//!
//! # Waiting
//!
//! A receiver that finds the ring empty spins briefly, then announces that it sleeps and
//! sleeps on a futex in the segment:
//!
//! ```text
//! receiver                                  sender
//! r_wait = 1                                tail = t + 1       (Release)
//! fence(SeqCst)                             fence(SeqCst)
//! tail == head? then futex_wait(r_wait, 1)  r_wait == 1? then r_wait = 0, futex_wake(r_wait)
//! ```
//!
//! With both fences sequentially consistent, at least one side sees the other's store: the
//! receiver sees the new tail and does not sleep, or the sender sees the flag and wakes it
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

use crate::error::ShmError;
use crate::segment::{Segment, HEADER_LEN};
use crate::service::{ConnectConfig, Connection, Listener, ListenerConfig};
use crate::substrate::deadline::Deadline;
use crate::substrate::park::{self, Gave, AWAKE};
use crate::substrate::ring::{Consumer, Producer, RingError};
use crate::sync::shared::{AtomicU32, AtomicU64, Ordering};
use crate::sys::{self, Credentials};
use crate::view::{ShmView, ShmViewMut};
use crate::watch::Watch;
use std::cell::Cell;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

/// The channel header's magic number: "CHAN" read as a little-endian `u32`.
const CHAN_MAGIC: u32 = u32::from_le_bytes(*b"CHAN");
/// The channel layout version.
const CHAN_VERSION: u32 = 1;
/// The value of the channel header's ready flag once it is complete.
const CHAN_READY: u32 = 1;

/// The largest block, block count and ring depth a layout may have.
const MAX_BLOCK_SIZE: usize = 1 << 30;
const MAX_COUNT: usize = 1 << 20;
/// The largest segment a channel uses (the client maps segments up to 1 GiB by default).
const MAX_SEGMENT: usize = 1 << 30;

// Offsets inside a direction's control area.
const CTL_LEN: usize = 128;
const TAIL: usize = 0;
const RET_HEAD: usize = 8;
const S_WAIT: usize = 16;
const HEAD: usize = 64;
const RET_TAIL: usize = 72;
const R_WAIT: usize = 80;

// Offsets inside the channel header.
const H_MAGIC: usize = 0;
const H_VERSION: usize = 4;
const H_BLOCK_SIZE: usize = 8;
const H_BLOCK_COUNT: usize = 12;
const H_RING_DEPTH: usize = 16;
const H_READY: usize = 20;
const H_LEN: usize = 64;

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
    /// count, so the ring is full only when the pool is). A shallower ring than the pool lets
    /// the receiver keep messages while the sender is held back by [`Full`].
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
    BusySpin,
    /// Spin briefly, then sleep on a futex until a message or the peer's death.
    Adaptive,
    /// As `Adaptive`, but give up with [`ShmError::Timeout`] after this long.
    Timeout(Duration),
}

/// Where everything is, computed from the three numbers in the header with checked arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    block_size: usize,
    block_count: usize,
    ring_depth: usize,
    /// Distance between two blocks: `block_size` rounded up to 64.
    stride: usize,
    ctl: [usize; 2],
    ring: [usize; 2],
    ret: [usize; 2],
    blocks: [usize; 2],
    /// Bytes of payload the channel uses.
    total: usize,
}

impl Layout {
    fn new(block_size: usize, block_count: usize, ring_depth: usize) -> Option<Layout> {
        if !(1..=MAX_BLOCK_SIZE).contains(&block_size)
            || !(1..=MAX_COUNT).contains(&block_count)
            || !(1..=MAX_COUNT).contains(&ring_depth)
        {
            return None;
        }
        let align = |n: usize, a: usize| n.checked_add(a - 1).map(|n| n / a * a);
        let stride = align(block_size, 64)?;
        let mut off = H_LEN;
        let ctl = [off, off + CTL_LEN];
        off += 2 * CTL_LEN;
        let ring = [off, off + ring_depth * 8];
        off += 2 * ring_depth * 8;
        let ret = [off, off + block_count * 4];
        off = align(off + 2 * block_count * 4, 64)?;
        let pool = stride.checked_mul(block_count)?;
        let blocks = [off, off.checked_add(pool)?];
        let total = blocks[1].checked_add(pool)?;
        if total.checked_add(HEADER_LEN)? > MAX_SEGMENT {
            return None;
        }
        Some(Layout {
            block_size,
            block_count,
            ring_depth,
            stride,
            ctl,
            ring,
            ret,
            blocks,
            total,
        })
    }
}

/// Which direction each side sends on.
const LISTENER_TX: usize = 0;
const CLIENT_TX: usize = 1;

/// One end of a bidirectional shared-memory channel between two processes.
///
/// Both ends can send and receive. Receiving returns a [`ShmMessage`], a view of the message
/// in its block (read by copy) that gives the block back when dropped; sending copies into a block
/// ([`ShmChannel::send`]) or writes one in place ([`ShmChannel::loan`]). The channel is `Send`
/// but not `Sync`: one thread uses an end at a time.
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
    // of the message ring and the consumer of the returned ring of direction `tx`.
    msg_tx: Cell<Producer>,
    ret_rx: Cell<Consumer>,
    free: Cell<Vec<u32>>,
    in_flight: Cell<Vec<bool>>,
    // Receiving side: the consumer of the message ring and the producer of the returned
    // ring of direction `rx`.
    msg_rx: Cell<Consumer>,
    ret_tx: Cell<Producer>,
}

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
        let conn = Connection::connect_timeout(name, &ConnectConfig::new(), timeout)?;
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

    /// Whether the watcher has seen the peer hang up: one load of a process-local flag.
    fn peer_dead(&self) -> bool {
        self.watch.shared.dead.load(Ordering::SeqCst)
    }

    // ----- Sending.

    /// Copies `data` into a block and sends it.
    ///
    /// On a full ring or an exhausted pool this waits (with [`Full::Backpressure`], as long as
    /// the peer lives) or fails (with [`Full::Error`]).
    ///
    /// # Errors
    ///
    /// [`ShmError::TooLarge`], [`ShmError::PoolExhausted`], [`ShmError::RingFull`],
    /// [`ShmError::PeerDead`], [`ShmError::Corrupt`]. Nothing was sent.
    pub fn send(&self, data: &[u8]) -> Result<(), ShmError> {
        self.send_until(data, Deadline::NEVER)
    }

    /// As [`ShmChannel::send`], waiting at most `timeout` for room in the ring.
    ///
    /// # Errors
    ///
    /// As [`ShmChannel::send`], and [`ShmError::Timeout`].
    pub fn send_timeout(&self, data: &[u8], timeout: Duration) -> Result<(), ShmError> {
        self.send_until(data, Deadline::after(timeout))
    }

    fn send_until(&self, data: &[u8], deadline: Deadline) -> Result<(), ShmError> {
        if data.len() > self.lay.block_size {
            return Err(ShmError::TooLarge {
                len: data.len(),
                max: self.lay.block_size,
            });
        }
        let mut loan = self.loan_until(deadline)?;
        loan.write_at(0, data)?;
        loan.publish_until(data.len(), deadline)
    }

    /// Takes a free block to write a message in place; [`ShmLoan::publish`] sends it. Never
    /// waits (see [`ShmChannel::loan_timeout`]).
    ///
    /// # Errors
    ///
    /// [`ShmError::PoolExhausted`] if every block is in use, [`ShmError::PeerDead`],
    /// [`ShmError::Corrupt`] if the peer returned a block it was not sent.
    pub fn loan(&self) -> Result<ShmLoan<'_>, ShmError> {
        if self.peer_dead() {
            return Err(ShmError::PeerDead);
        }
        match self.take_block()? {
            Some(idx) => Ok(self.loaned(idx)),
            None => Err(ShmError::PoolExhausted),
        }
    }

    /// As [`ShmChannel::loan`], but with [`Full::Backpressure`] waits up to `timeout` for the
    /// receiver to give a block back instead of failing with [`ShmError::PoolExhausted`].
    ///
    /// # Errors
    ///
    /// As [`ShmChannel::loan`], and [`ShmError::Timeout`].
    pub fn loan_timeout(&self, timeout: Duration) -> Result<ShmLoan<'_>, ShmError> {
        self.loan_until(Deadline::after(timeout))
    }

    fn loan_until(&self, deadline: Deadline) -> Result<ShmLoan<'_>, ShmError> {
        match self.full {
            Full::Error => self.loan(),
            Full::Backpressure => {
                if self.peer_dead() {
                    return Err(ShmError::PeerDead);
                }
                let idx = self.wait_for(deadline, || self.take_block(), || self.block_ready())?;
                Ok(self.loaned(idx))
            }
        }
    }

    fn loaned(&self, idx: usize) -> ShmLoan<'_> {
        // SAFETY: `idx < block_count` (it came from the local free list), so the block lies
        // inside the segment, which lives as long as the borrow of `self`; the block is
        // LOANED to us: the honest receiver does not touch it until it is published (a hostile
        // one may, which changes bytes but not bounds: the view makes no reference to them);
        // only this loan's view points at it in this process.
        let view = unsafe { ShmViewMut::new(self.block_ptr(self.tx, idx), self.lay.block_size) };
        ShmLoan {
            ch: self,
            idx,
            published: false,
            view,
        }
    }

    /// A free block, taking back the returned ones if none is left.
    fn take_block(&self) -> Result<Option<usize>, ShmError> {
        let mut free = self.free.take();
        let r = if free.is_empty() {
            self.reclaim(&mut free)
        } else {
            Ok(())
        };
        // On an error the blocks taken back before it stay in the free list.
        let idx = if r.is_ok() { free.pop() } else { None };
        self.free.set(free);
        r?;
        Ok(idx.map(|i| i as usize))
    }

    /// Whether a block could be taken now (free, or returned), without taking it.
    fn block_ready(&self) -> Result<bool, ShmError> {
        let free = self.free.take();
        let any_free = !free.is_empty();
        self.free.set(free);
        if any_free {
            return Ok(true);
        }
        let returned = self.ret_rx.get().available(self.ctl64(self.tx, RET_TAIL));
        Ok(returned.map_err(|_| RETURNED_BROKEN)? > 0)
    }

    /// Takes the blocks the receiver returned back into `free`.
    fn reclaim(&self, free: &mut Vec<u32>) -> Result<(), ShmError> {
        let mut ring = self.ret_rx.get();
        let n = ring
            .available(self.ctl64(self.tx, RET_TAIL))
            .map_err(|_| RETURNED_BROKEN)?;
        let mut in_flight = self.in_flight.take();
        let mut result = Ok(());
        let mut taken = 0;
        while taken < n {
            // Read once; accepted only if this side has that block in flight.
            let idx = self
                .u32_at(self.lay.ret[self.tx] + ring.slot(taken) * 4)
                .load(Ordering::Relaxed) as usize;
            match in_flight.get_mut(idx) {
                Some(f) if *f => *f = false,
                _ => {
                    result = Err(ShmError::Corrupt("a block came back that was not sent"));
                    break;
                }
            }
            free.push(idx as u32);
            taken += 1;
        }
        self.in_flight.set(in_flight);
        ring.advance(taken, self.ctl64(self.tx, RET_HEAD));
        self.ret_rx.set(ring);
        result
    }

    /// The slot of the message ring the next entry goes in, if the ring has room.
    fn reserve_slot(&self) -> Result<Option<usize>, ShmError> {
        match self.msg_tx.get().reserve(self.ctl64(self.tx, HEAD)) {
            Ok(slot) => Ok(Some(slot)),
            Err(RingError::Full) => Ok(None),
            Err(RingError::Broken) => Err(ShmError::Corrupt("message-ring head out of range")),
        }
    }

    /// Waits for room in the ring per the `full` policy; returns the slot to fill.
    fn wait_for_room(&self, deadline: Deadline) -> Result<usize, ShmError> {
        if self.full == Full::Error {
            return self.reserve_slot()?.ok_or(ShmError::RingFull);
        }
        self.wait_for(
            deadline,
            || self.reserve_slot(),
            || Ok(self.reserve_slot()?.is_some()),
        )
    }

    /// Retries `attempt` until it gives a value: spinning, then asleep on this direction's
    /// `s_wait` word, woken by the receiver when it consumes a message or returns a block
    /// (`ready` says whether `attempt` may succeed now, without taking anything).
    fn wait_for<T>(
        &self,
        deadline: Deadline,
        attempt: impl FnMut() -> Result<Option<T>, ShmError>,
        ready: impl FnMut() -> Result<bool, ShmError>,
    ) -> Result<T, ShmError> {
        let word = self.ctl32(self.tx, S_WAIT);
        park::wait(word, &*self.watch.shared, deadline, attempt, ready).map_err(|g| match g {
            Gave::Err(e) => e,
            Gave::Dead => ShmError::PeerDead,
            Gave::Expired => ShmError::Timeout,
        })
    }

    /// Publishes block `idx` holding `len <= block_size` bytes in `slot`, which
    /// [`ShmChannel::wait_for_room`] reserved.
    fn commit(&self, slot: usize, idx: usize, len: usize) {
        self.u64_at(self.lay.ring[self.tx] + slot * 8)
            .store(((idx as u64) << 32) | len as u64, Ordering::Relaxed);
        let mut in_flight = self.in_flight.take();
        if let Some(f) = in_flight.get_mut(idx) {
            *f = true;
        }
        self.in_flight.set(in_flight);
        let mut ring = self.msg_tx.get();
        // Its Release store of `tail` makes the entry above and the bytes written into the
        // block visible to a receiver that sees the new tail.
        ring.commit(self.ctl64(self.tx, TAIL));
        self.msg_tx.set(ring);
        park::wake(self.ctl32(self.tx, R_WAIT));
    }

    // ----- Receiving.

    /// Takes the next message if there is one, without waiting.
    ///
    /// # Errors
    ///
    /// [`ShmError::PeerDead`] if there is none and the peer is gone; [`ShmError::Corrupt`].
    pub fn try_recv(&self) -> Result<Option<ShmMessage<'_>>, ShmError> {
        if let Some(m) = self.try_take()? {
            return Ok(Some(m));
        }
        if self.peer_dead() {
            // A message published just before the hang-up is still delivered.
            return self.try_take()?.map(Some).ok_or(ShmError::PeerDead);
        }
        Ok(None)
    }

    /// Waits for the next message ([`WaitStrategy::Adaptive`]).
    ///
    /// # Errors
    ///
    /// [`ShmError::PeerDead`] (as soon as the watcher sees the peer's hang-up),
    /// [`ShmError::Corrupt`].
    pub fn recv(&self) -> Result<ShmMessage<'_>, ShmError> {
        self.recv_with(WaitStrategy::Adaptive)
    }

    /// Waits at most `timeout` for the next message.
    ///
    /// # Errors
    ///
    /// As [`ShmChannel::recv`], and [`ShmError::Timeout`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<ShmMessage<'_>, ShmError> {
        self.recv_with(WaitStrategy::Timeout(timeout))
    }

    /// Waits for the next message as `strategy` says.
    ///
    /// # Errors
    ///
    /// As [`ShmChannel::recv`], and [`ShmError::Timeout`] with [`WaitStrategy::Timeout`].
    pub fn recv_with(&self, strategy: WaitStrategy) -> Result<ShmMessage<'_>, ShmError> {
        let deadline = match strategy {
            WaitStrategy::BusySpin => return self.recv_spinning(),
            WaitStrategy::Adaptive => Deadline::NEVER,
            WaitStrategy::Timeout(d) => Deadline::after(d),
        };
        // Woken by the sender after its store of `tail`, or by the watcher.
        let word = self.ctl32(self.rx, R_WAIT);
        let waiting = || {
            let tail = self.ctl64(self.rx, TAIL);
            Ok(self
                .msg_rx
                .get()
                .available(tail)
                .map_err(|_| MESSAGES_BROKEN)?
                > 0)
        };
        match park::wait(
            word,
            &*self.watch.shared,
            deadline,
            || self.try_take(),
            waiting,
        ) {
            Ok(m) => Ok(m),
            Err(Gave::Err(e)) => Err(e),
            // A message published just before the hang-up is still delivered.
            Err(Gave::Dead) => self.try_take()?.ok_or(ShmError::PeerDead),
            Err(Gave::Expired) => Err(ShmError::Timeout),
        }
    }

    fn recv_spinning(&self) -> Result<ShmMessage<'_>, ShmError> {
        loop {
            if let Some(m) = self.try_take()? {
                return Ok(m);
            }
            if self.peer_dead() {
                return self.try_take()?.ok_or(ShmError::PeerDead);
            }
            std::hint::spin_loop();
        }
    }

    fn try_take(&self) -> Result<Option<ShmMessage<'_>>, ShmError> {
        let mut ring = self.msg_rx.get();
        let (tail, head) = (self.ctl64(self.rx, TAIL), self.ctl64(self.rx, HEAD));
        // The entry is read once; its slot goes back to the sender (Release of `head`) before
        // the entry is checked, so a bad entry is consumed, not met again.
        let entry = ring.pop(tail, head, |slot| {
            self.u64_at(self.lay.ring[self.rx] + slot * 8)
                .load(Ordering::Relaxed)
        });
        let Some(entry) = entry.map_err(|_| MESSAGES_BROKEN)? else {
            return Ok(None);
        };
        self.msg_rx.set(ring);
        park::wake(self.ctl32(self.rx, S_WAIT));
        let idx = (entry >> 32) as usize;
        let len = (entry & 0xffff_ffff) as usize;
        if idx >= self.lay.block_count {
            return Err(ShmError::Corrupt("block index out of range"));
        }
        if len > self.lay.block_size {
            return Err(ShmError::Corrupt("message longer than a block"));
        }
        // SAFETY: `idx < block_count` and `len <= block_size` were checked just above, so the
        // bytes lie inside the segment, which lives as long as the borrow of `self`; the block
        // is HELD by us: the honest sender does not write it until it comes back (a hostile
        // one may, which changes bytes but not bounds: the view makes no reference to them).
        let view = unsafe { ShmView::new(self.block_ptr(self.rx, idx), len) };
        Ok(Some(ShmMessage {
            ch: self,
            idx,
            view,
        }))
    }

    /// Gives block `idx` of the receiving direction back to the sender.
    fn release(&self, idx: usize) {
        let mut ring = self.ret_tx.get();
        let (head, tail) = (self.ctl64(self.rx, RET_HEAD), self.ctl64(self.rx, RET_TAIL));
        // `idx < block_count <= 2^20` fits in u32.
        let slots = self.lay.ret[self.rx];
        let put = |slot: usize| {
            self.u32_at(slots + slot * 4)
                .store(idx as u32, Ordering::Relaxed)
        };
        if ring.push(head, tail, put).is_err() {
            // Only a corrupt peer gets here (an honest one has a free slot for every block it
            // sent): keep the block rather than overwrite an entry.
            return;
        }
        self.ret_tx.set(ring);
        // A sender waiting for a block sleeps without a timeout: it must be woken here.
        park::wake(self.ctl32(self.rx, S_WAIT));
    }
}

/// The message ring's tail is impossible.
const MESSAGES_BROKEN: ShmError = ShmError::Corrupt("message-ring tail out of range");
/// The returned ring's tail is impossible.
const RETURNED_BROKEN: ShmError = ShmError::Corrupt("returned-ring counter out of range");

/// Writes the channel header into a new segment (before it is sent to the client).
fn write_header(seg: &Segment, lay: &Layout) {
    let w = |off: usize, v: u32| seg.u32_at(off).store(v, Ordering::Relaxed);
    w(H_MAGIC, CHAN_MAGIC);
    w(H_VERSION, CHAN_VERSION);
    // The layout's limits keep each of these below 2^31.
    w(H_BLOCK_SIZE, lay.block_size as u32);
    w(H_BLOCK_COUNT, lay.block_count as u32);
    w(H_RING_DEPTH, lay.ring_depth as u32);
    // Release: pairs with the Acquire load in `read_header`.
    seg.u32_at(H_READY).store(CHAN_READY, Ordering::Release);
}

/// Reads and checks the channel header of a segment received from a listener: each field
/// once, the layout recomputed and checked against the segment's real size.
fn read_header(seg: &Segment) -> Result<Layout, ShmError> {
    let payload_len = seg.payload().len();
    if payload_len < H_LEN {
        return Err(ShmError::Corrupt("segment too small for a channel"));
    }
    let r = |off: usize, order| seg.u32_at(off).load(order);
    // Acquire: pairs with the Release store of the ready flag in `write_header`.
    let ready = r(H_READY, Ordering::Acquire);
    let magic = r(H_MAGIC, Ordering::Relaxed);
    let version = r(H_VERSION, Ordering::Relaxed);
    let bs = r(H_BLOCK_SIZE, Ordering::Relaxed);
    let bc = r(H_BLOCK_COUNT, Ordering::Relaxed);
    let depth = r(H_RING_DEPTH, Ordering::Relaxed);
    if magic != CHAN_MAGIC {
        return Err(ShmError::Corrupt("not a channel segment (bad magic)"));
    }
    if version != CHAN_VERSION {
        return Err(ShmError::Corrupt("unsupported channel layout version"));
    }
    if ready != CHAN_READY {
        return Err(ShmError::Corrupt("channel header not ready"));
    }
    let lay = Layout::new(bs as usize, bc as usize, depth as usize)
        .ok_or(ShmError::Corrupt("channel layout out of range"))?;
    if lay.total > payload_len {
        return Err(ShmError::Corrupt("channel layout larger than the segment"));
    }
    Ok(lay)
}

/// A block loaned for writing a message in place. Derefs to a [`ShmViewMut`] of the whole
/// block (`block_size` bytes, holding whatever it held before: write what you send);
/// [`ShmLoan::publish`] sends its first `len` bytes. Dropped without publishing, the block goes
/// back to the pool.
///
/// The view writes into the shared block and reads back by copy: no `&mut [u8]` to the block
/// is ever made, since a hostile receiver could write it while we hold one (see
/// [`ShmView`](crate::ShmView)).
///
/// # Examples
///
/// ```no_run
/// # let ch = courier_shm::ShmChannel::connect("rpc", Default::default(), std::time::Duration::from_secs(5))?;
/// let mut loan = ch.loan()?;
/// loan.write_at(0, b"hello")?;
/// loan.publish(5)?;
/// # Ok::<(), courier_shm::ShmError>(())
/// ```
#[derive(Debug)]
pub struct ShmLoan<'a> {
    ch: &'a ShmChannel,
    idx: usize,
    published: bool,
    /// The whole block, LOANED to us.
    view: ShmViewMut<'a>,
}

impl ShmLoan<'_> {
    /// Sends the first `len` bytes of the block. On a full ring this waits or fails as the
    /// channel's [`Full`] says.
    ///
    /// # Errors
    ///
    /// [`ShmError::TooLarge`] if `len` is larger than the block, [`ShmError::RingFull`],
    /// [`ShmError::PeerDead`], [`ShmError::Corrupt`]; the block then goes back to the pool.
    pub fn publish(self, len: usize) -> Result<(), ShmError> {
        self.publish_until(len, Deadline::NEVER)
    }

    /// As [`ShmLoan::publish`], waiting at most `timeout` for room in the ring.
    ///
    /// # Errors
    ///
    /// As [`ShmLoan::publish`], and [`ShmError::Timeout`].
    pub fn publish_timeout(self, len: usize, timeout: Duration) -> Result<(), ShmError> {
        self.publish_until(len, Deadline::after(timeout))
    }

    fn publish_until(mut self, len: usize, deadline: Deadline) -> Result<(), ShmError> {
        if len > self.ch.lay.block_size {
            return Err(ShmError::TooLarge {
                len,
                max: self.ch.lay.block_size,
            });
        }
        let slot = self.ch.wait_for_room(deadline)?;
        self.ch.commit(slot, self.idx, len);
        self.published = true;
        Ok(())
    }
}

impl<'a> std::ops::Deref for ShmLoan<'a> {
    type Target = ShmViewMut<'a>;

    fn deref(&self) -> &ShmViewMut<'a> {
        &self.view
    }
}

impl<'a> std::ops::DerefMut for ShmLoan<'a> {
    fn deref_mut(&mut self) -> &mut ShmViewMut<'a> {
        &mut self.view
    }
}

impl Drop for ShmLoan<'_> {
    fn drop(&mut self) {
        if !self.published {
            let mut free = self.ch.free.take();
            free.push(self.idx as u32);
            self.ch.free.set(free);
        }
    }
}

/// A received message, in place in its block. Derefs to a [`ShmView`] of its bytes (read by
/// copy: [`ShmView::to_vec`], [`ShmView::read_at`], [`ShmView::read`]); dropping it gives the
/// block back to the sender.
///
/// The sender could still write the block (an honest one does not until it comes back), so
/// no `&[u8]` to it is ever made: what you copy out is what you check and use.
///
/// # Examples
///
/// ```no_run
/// # let ch = courier_shm::ShmChannel::connect("rpc", Default::default(), std::time::Duration::from_secs(5))?;
/// let msg = ch.recv()?;
/// let mut head = [0u8; 4];
/// msg.read_at(0, &mut head)?;
/// let all: Vec<u8> = msg.to_vec();
/// # Ok::<(), courier_shm::ShmError>(())
/// ```
#[derive(Debug)]
pub struct ShmMessage<'a> {
    ch: &'a ShmChannel,
    idx: usize,
    /// The message's `len` bytes, HELD by us.
    view: ShmView<'a>,
}

impl<'a> std::ops::Deref for ShmMessage<'a> {
    type Target = ShmView<'a>;

    fn deref(&self) -> &ShmView<'a> {
        &self.view
    }
}

impl Drop for ShmMessage<'_> {
    fn drop(&mut self) {
        self.ch.release(self.idx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::substrate::park::SLEEPING;
    use crate::sync::AtomicBool;
    use std::time::Instant;

    const PID: Credentials = Credentials {
        pid: 1,
        uid: 0,
        gid: 0,
    };

    /// Both ends of a channel in this process: two mappings of one memfd, a socket pair for
    /// liveness. Also returns a third mapping, for playing a hostile peer.
    fn pair_with(config: ShmConfig) -> (ShmChannel, ShmChannel, Segment) {
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

    fn pair(config: ShmConfig) -> (ShmChannel, ShmChannel) {
        let (l, c, _) = pair_with(config);
        (l, c)
    }

    const SHORT: Duration = Duration::from_millis(5);

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

    #[test]
    fn pool_exhausted_too_large_and_unpublished_loans() {
        let (l, c) = pair(
            ShmConfig::new()
                .block_size(8)
                .block_count(2)
                .full(Full::Error),
        );
        assert!(matches!(
            c.send(&[0; 9]),
            Err(ShmError::TooLarge { len: 9, max: 8 })
        ));
        let a = c.loan().unwrap();
        let b = c.loan().unwrap();
        assert!(matches!(c.loan(), Err(ShmError::PoolExhausted)));
        drop(a);
        assert!(matches!(b.publish(9), Err(ShmError::TooLarge { .. })));
        // Both blocks are free again.
        c.send(b"1").unwrap();
        c.send(b"2").unwrap();
        assert!(matches!(c.send(b"3"), Err(ShmError::PoolExhausted)));
        let m1 = l.try_recv().unwrap().unwrap();
        assert!(matches!(c.send(b"3"), Err(ShmError::PoolExhausted)));
        drop(m1);
        c.send(b"3").unwrap();
        assert_eq!(l.try_recv().unwrap().unwrap().to_vec(), b"2");
        assert_eq!(l.try_recv().unwrap().unwrap().to_vec(), b"3");

        // With backpressure, a send waits for a block instead, and a message held too long
        // is a timeout.
        let (l, c) = pair(ShmConfig::new().block_size(8).block_count(1));
        c.send(b"1").unwrap();
        let m = l.try_recv().unwrap().unwrap();
        assert!(matches!(
            c.send_timeout(b"2", SHORT),
            Err(ShmError::Timeout)
        ));
        assert!(matches!(c.loan(), Err(ShmError::PoolExhausted)));
        std::thread::scope(|s| {
            s.spawn(move || c.loan_timeout(Duration::from_secs(10)).unwrap().publish(0));
            std::thread::sleep(SHORT);
            drop(m);
        });
        assert_eq!(l.recv_timeout(Duration::from_secs(10)).unwrap().len(), 0);
    }

    #[test]
    fn full_ring_is_an_error_or_backpressure() {
        let cfg = ShmConfig::new().block_count(4).ring_depth(2);
        let (l, c) = pair(cfg.full(Full::Error));
        c.send(b"1").unwrap();
        c.send(b"2").unwrap();
        assert!(matches!(c.send(b"3"), Err(ShmError::RingFull)));
        assert_eq!(l.try_recv().unwrap().unwrap().to_vec(), b"1");
        c.send(b"3").unwrap();

        let (l, c) = pair(cfg.full(Full::Backpressure));
        c.send(b"1").unwrap();
        c.send(b"2").unwrap();
        assert!(matches!(
            c.send_timeout(b"3", SHORT),
            Err(ShmError::Timeout)
        ));
        // A receiver on another thread makes room: the blocked send goes through.
        std::thread::scope(|s| {
            s.spawn(move || c.send_timeout(b"3", Duration::from_secs(10)).unwrap());
            std::thread::sleep(SHORT);
            let got: Vec<Vec<u8>> = (0..3)
                .map(|_| l.recv_timeout(Duration::from_secs(10)).unwrap().to_vec())
                .collect();
            assert_eq!(got, [b"1", b"2", b"3"]);
        });
    }

    #[test]
    fn recv_times_out_and_a_closed_peer_is_dead() {
        let (l, c) = pair(ShmConfig::new());
        assert!(matches!(l.recv_timeout(SHORT), Err(ShmError::Timeout)));
        assert!(l.try_recv().unwrap().is_none());
        c.send(b"last words").unwrap();
        drop(c);
        assert_eq!(l.recv().unwrap().to_vec(), b"last words");
        assert!(matches!(l.recv(), Err(ShmError::PeerDead)));
        assert!(matches!(l.try_recv(), Err(ShmError::PeerDead)));
        assert!(matches!(
            l.recv_with(WaitStrategy::BusySpin),
            Err(ShmError::PeerDead)
        ));
        assert!(matches!(l.send(b"x"), Err(ShmError::PeerDead)));
        assert!(matches!(l.loan(), Err(ShmError::PeerDead)));

        // A sender that never received learns it from the watcher too: as soon as the flag is
        // set (the hang-up reaches the watcher at once; the wait is a deadline, not a delay).
        let (l, c) = pair(ShmConfig::new());
        l.send(b"alive").unwrap();
        drop(c);
        wait_dead(&l);
        assert!(matches!(l.send(b"x"), Err(ShmError::PeerDead)));
        assert!(matches!(
            l.send_timeout(b"x", SHORT),
            Err(ShmError::PeerDead)
        ));
        assert!(matches!(l.loan(), Err(ShmError::PeerDead)));
    }

    /// Waits (up to 1 s) for the watcher of `ch` to see the peer's hang-up; returns how long.
    fn wait_dead(ch: &ShmChannel) -> Duration {
        let start = Instant::now();
        while !ch.peer_dead() {
            assert!(start.elapsed() < Duration::from_secs(1), "no hang-up seen");
            std::thread::sleep(Duration::from_micros(100));
        }
        start.elapsed()
    }

    #[test]
    fn a_sender_waiting_for_a_block_is_woken_when_one_comes_back() {
        // Waiters sleep without a timeout now: a returned block must wake the sender, not the
        // end of a sleep slice (nor its 10 s deadline).
        let (l, c) = pair(ShmConfig::new().block_size(8).block_count(1));
        c.send(b"1").unwrap();
        let m = l.try_recv().unwrap().unwrap();
        std::thread::scope(|s| {
            let blocked = s.spawn(move || {
                let r = c.loan_timeout(Duration::from_secs(10)).map(drop);
                (r, Instant::now())
            });
            std::thread::sleep(Duration::from_millis(30));
            let returned = Instant::now();
            drop(m);
            let (r, woke) = blocked.join().unwrap();
            r.unwrap();
            assert!(woke.duration_since(returned) < Duration::from_secs(1));
        });
    }

    #[test]
    fn a_sender_blocked_on_a_full_ring_wakes_on_the_hang_up() {
        let (l, c) = pair(ShmConfig::new().block_count(1));
        c.send(b"1").unwrap();
        std::thread::scope(|s| {
            let blocked = s.spawn(move || {
                let r = c.send(b"2");
                (r, Instant::now())
            });
            std::thread::sleep(Duration::from_millis(30));
            let closed = Instant::now();
            drop(l);
            let (r, woke) = blocked.join().unwrap();
            assert!(matches!(r, Err(ShmError::PeerDead)), "{r:?}");
            assert!(woke.duration_since(closed) < Duration::from_secs(1));
        });
    }

    #[test]
    fn a_hostile_peer_rewriting_the_sleep_word_cannot_keep_a_waiter_asleep() {
        let cfg = ShmConfig::new();
        let lay = cfg.layout().unwrap();
        let (l, c, evil) = pair_with(cfg);
        let word = lay.ctl[CLIENT_TX] + R_WAIT;
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            // Keeps putting SLEEPING back, so a single wake-up could be lost.
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    evil_u32(&evil, word, SLEEPING);
                    std::hint::spin_loop();
                }
            });
            let blocked = s.spawn(move || l.recv().map(|m| m.len()));
            std::thread::sleep(Duration::from_millis(30));
            drop(c);
            let r = blocked.join().unwrap();
            stop.store(true, Ordering::Relaxed);
            assert!(matches!(r, Err(ShmError::PeerDead)), "{r:?}");
        });
    }

    #[test]
    fn many_messages_across_threads_in_order() {
        let (l, c) = pair(ShmConfig::new().block_size(16).block_count(8).ring_depth(4));
        const N: u64 = 20_000;
        std::thread::scope(|s| {
            s.spawn(move || {
                for i in 0..N {
                    c.send(&i.to_le_bytes()).unwrap();
                }
            });
            for i in 0..N {
                let m = l.recv().unwrap();
                assert_eq!(u64::from_le_bytes(m.to_vec().try_into().unwrap()), i);
            }
        });
    }

    #[test]
    fn the_channel_is_send() {
        fn send<T: Send>() {}
        send::<ShmChannel>();
    }

    #[test]
    fn layouts_out_of_range_are_refused() {
        for cfg in [
            ShmConfig::new().block_size(0),
            ShmConfig::new().block_count(0),
            ShmConfig::new().ring_depth(0),
            ShmConfig::new().block_count(MAX_COUNT + 1),
            ShmConfig::new().block_size(MAX_BLOCK_SIZE).block_count(2),
            ShmConfig::new().block_size(usize::MAX),
        ] {
            assert!(
                matches!(cfg.layout(), Err(ShmError::InvalidConfig(_))),
                "{cfg:?}"
            );
        }
    }

    /// A small deterministic generator (xorshift64*), so failures replay.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    fn evil_u64(evil: &Segment, off: usize, v: u64) {
        // SAFETY: test-only; callers pass 8-aligned offsets inside the payload.
        unsafe { &*evil.payload_ptr().add(off).cast::<AtomicU64>() }.store(v, Ordering::Relaxed);
    }

    fn evil_u32(evil: &Segment, off: usize, v: u32) {
        // SAFETY: test-only; callers pass 4-aligned offsets inside the payload.
        unsafe { &*evil.payload_ptr().add(off).cast::<AtomicU32>() }.store(v, Ordering::Relaxed);
    }

    #[test]
    fn adversarial_values_are_corrupt_errors() {
        let cfg = ShmConfig::new().block_size(32).block_count(4);
        let lay = cfg.layout().unwrap();
        let rx_ctl = lay.ctl[CLIENT_TX];
        let corrupt = |r: Result<Option<ShmMessage<'_>>, ShmError>| {
            assert!(matches!(r, Err(ShmError::Corrupt(_))), "{r:?}");
        };
        // The tail jumps far ahead.
        let (l, _c, evil) = pair_with(cfg);
        evil_u64(&evil, rx_ctl + TAIL, u64::MAX);
        corrupt(l.try_recv());
        assert!(matches!(l.recv_timeout(SHORT), Err(ShmError::Corrupt(_))));
        // An entry names a block out of range, then a length over the block.
        let (l, _c, evil) = pair_with(cfg);
        evil_u64(&evil, lay.ring[CLIENT_TX], (u64::from(u32::MAX) << 32) | 1);
        evil_u64(
            &evil,
            lay.ring[CLIENT_TX] + 8,
            1 << 32 | u64::from(u32::MAX),
        );
        evil_u64(&evil, rx_ctl + TAIL, 2);
        corrupt(l.try_recv());
        corrupt(l.try_recv());
        assert!(l.try_recv().unwrap().is_none());
        // The receiver's head runs ahead of what was sent.
        let (_l, c, evil) = pair_with(cfg);
        evil_u64(&evil, rx_ctl + HEAD, 7);
        assert!(matches!(c.send(b"x"), Err(ShmError::Corrupt(_))));
        // A block comes back that was never sent, or twice.
        let (l, c, evil) = pair_with(cfg);
        for _ in 0..4 {
            c.send(b"x").unwrap();
        }
        drop(l.try_recv().unwrap());
        evil_u32(&evil, lay.ret[CLIENT_TX] + 4, 3);
        evil_u32(&evil, lay.ret[CLIENT_TX] + 8, 3);
        evil_u64(&evil, rx_ctl + RET_TAIL, 3);
        // The first honest return is taken; the duplicate is refused.
        assert!(matches!(c.loan(), Err(ShmError::Corrupt(_))));
        // The two good returns are usable; with the pool empty again, a counter far ahead.
        let _a = c.loan().unwrap();
        let _b = c.loan().unwrap();
        evil_u64(&evil, rx_ctl + RET_TAIL, 1 << 40);
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
                (0usize..40).prop_map(Op::Send),
                (0usize..40).prop_map(Op::Loan),
                Just(Op::AbandonLoan),
                Just(Op::TryRecv),
                any::<usize>().prop_map(Op::DropHeld),
            ]
        }

        proptest! {
            /// Against a model (a queue of messages, a count of blocks in use): an honest pair
            /// never loses, reorders or changes a message, and each error is the model's.
            #[test]
            fn an_honest_pair_matches_the_model(
                count in 1usize..6,
                depth in 1usize..6,
                ops in proptest::collection::vec(op(), 1..200),
            ) {
                let bs = 32;
                let cfg = ShmConfig::new()
                    .block_size(bs)
                    .block_count(count)
                    .ring_depth(depth)
                    .full(Full::Error);
                let (l, c) = pair(cfg);
                let mut queue: VecDeque<Vec<u8>> = VecDeque::new();
                let mut held: Vec<(ShmMessage<'_>, Vec<u8>)> = Vec::new();
                let mut n: u8 = 0;
                for op in ops {
                    let in_use = queue.len() + held.len();
                    match op {
                        Op::Send(len) | Op::Loan(len) => {
                            n = n.wrapping_add(1);
                            let msg = vec![n; len];
                            let r = if let Op::Send(_) = op {
                                c.send(&msg)
                            } else {
                                c.loan().and_then(|mut loan| {
                                    let k = len.min(loan.len());
                                    loan.write_at(0, &msg[..k]).unwrap();
                                    loan.publish(len)
                                })
                            };
                            match r {
                                Err(ShmError::TooLarge { .. }) => prop_assert!(len > bs),
                                // A loan is taken before its length is known.
                                Err(ShmError::PoolExhausted) => {
                                    prop_assert_eq!(in_use, count);
                                }
                                Err(ShmError::RingFull) => {
                                    prop_assert!(len <= bs && in_use < count);
                                    prop_assert_eq!(queue.len(), depth);
                                }
                                Ok(()) => {
                                    prop_assert!(len <= bs && in_use < count && queue.len() < depth);
                                    queue.push_back(msg);
                                }
                                Err(e) => prop_assert!(false, "unexpected {}", e),
                            }
                        }
                        Op::AbandonLoan => {
                            match c.loan() {
                                Ok(loan) => { prop_assert!(in_use < count); drop(loan) }
                                Err(ShmError::PoolExhausted) => prop_assert_eq!(in_use, count),
                                Err(e) => prop_assert!(false, "unexpected {}", e),
                            }
                        }
                        Op::TryRecv => match l.try_recv() {
                            Ok(Some(m)) => {
                                let want = queue.pop_front();
                                prop_assert_eq!(Some(m.to_vec()), want.clone());
                                held.push((m, want.unwrap_or_default()));
                            }
                            Ok(None) => prop_assert!(queue.is_empty()),
                            Err(e) => prop_assert!(false, "unexpected {}", e),
                        },
                        Op::DropHeld(i) => {
                            if !held.is_empty() {
                                let (m, want) = held.swap_remove(i % held.len());
                                // Still intact while held.
                                prop_assert_eq!(m.to_vec(), want);
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
