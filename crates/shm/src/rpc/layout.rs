//! The shared memory of one RPC connection: where everything is, and the values of the slot
//! state word. See the [module docs](super) for the protocol that uses it.
//!
//! # Layout (offsets from the start of the segment's payload)
//!
//! ```text
//! 0      header (64 B, `substrate/header.rs`): "CRPC", version, slots, slot size, push depth,
//!        push size, ready
//! 64     written by the client: cli_tid u32 (+0), push_head u64 (+8), cbell_wait u32 (+16),
//!                               cli_cpu u32 (+20), doorbell u32 (+24)
//! 128    written by the server: srv_tid u32 (+0), push_tail u64 (+8), srv_sleep u32 (+16),
//!                               cbell u32 (+20), srv_closed u32 (+24), srv_cpu u32 (+28),
//!                               srv_bell u32 (+32)
//! 192    request ring: `slots` x u64 stamped slot indices (client -> server; see
//!        `substrate/ring.rs`, "Stamped entries": the server finds a call by reading the
//!        ring alone, and neither side keeps a counter in shared memory)
//! ..     slot records (64-aligned): `slots` x 128 B, see `S_*` and [`INLINE`]
//! ..     push ring (64-aligned): `push_depth` x (32 B header + `push_size`), see `P_*`
//! ..     slot data, page-aligned in the mapping: `slots` x `slot_size`
//! ```
//!
//! Each word of the two lines above has one writer, named there. A slot record's words change
//! hands with the slot (see [`SLOT_REC`]), and its state word is written by both sides, only
//! with the transitions of [`state`].

use crate::error::ShmError;
use crate::rpc::wire::Wire;
use crate::segment::{Segment, HEADER_LEN};
use crate::substrate::header::Protocol;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::view::{ShmView, ShmViewMut};

pub(crate) const MAGIC: u32 = u32::from_le_bytes(*b"CRPC");
/// 2: the doorbells (`DOORBELL`, `SRV_BELL`); a client of version 1 would ring a socket no
/// worker watches. 3: small messages in the slot record ([`INLINE`]) and a stamped request
/// ring; a client of version 2 would look for a small reply in the data area, and queue
/// calls the server never sees. 4: cold connections ([`SLEEP_COLD`]); a client of version 3
/// would ring a doorbell no worker watches.
pub(crate) const VERSION: u32 = 4;

// The client's line. It holds no counter of the request ring: the server finds calls by
// their stamped entries, so the client does not write its line at every call, and the
// server does not read it at every call.
/// The thread the client last queued a call from (its Linux thread id; 0: not known), a
/// hint beside [`CLI_CPU`]: an async worker whose caller is a task on its own thread
/// neither spins nor yields for it. (A peer of layout 4 before it leaves it 0: unused then.)
pub(crate) const CLI_TID: usize = 64;
pub(crate) const PUSH_HEAD: usize = 72;
pub(crate) const CBELL_WAIT: usize = 80;
/// The CPU the client last queued a call from, plus one (0: not known): a hint for the
/// server's spin (a client on the worker's CPU cannot send while the worker spins).
pub(crate) const CLI_CPU: usize = 84;
/// The client's doorbell: bumped, then futex-woken, when it queues a call while a worker
/// sleeps and the server sleeps on doorbells ([`SRV_BELL`]). Only this client writes it, so
/// whatever it does with it reaches no other client.
pub(crate) const DOORBELL: usize = 88;
// The server's line. It holds no counter of the request ring: the server keeps its count
// of requests taken in its own memory (`Consumer::take_stamped`), so that its line is not
// written on every call, and a caller's look at `srv_sleep` finds the line in its cache.
/// The thread of the worker that last took a call of this connection (0: not known), a hint
/// beside [`SRV_CPU`]: an async caller whose worker is a task on its own thread neither
/// spins, yields nor moves for it.
pub(crate) const SRV_TID: usize = 128;
pub(crate) const PUSH_TAIL: usize = 136;
/// How many workers sleep (the client rings when it queues a call and this is not 0), or
/// [`SLEEP_COLD`].
pub(crate) const SRV_SLEEP: usize = 144;
/// [`SRV_SLEEP`] of a connection the server let go cold (neither a call nor a ring for a
/// round of the accept thread, on the doorbells): no worker's sleep watches its doorbell, so
/// its client rings the wake-up socket instead, which the connection's watcher thread reads.
/// A server that writes it where it should not only makes its client's rings slower.
pub(crate) const SLEEP_COLD: u32 = u32::MAX;
pub(crate) const CBELL: usize = 148;
pub(crate) const SRV_CLOSED: usize = 152;
/// The CPU of the worker that last took a call of this connection, plus one (0: not known):
/// a hint for the caller's spin. Hints are read and written Relaxed; a hostile value costs
/// speed at most.
pub(crate) const SRV_CPU: usize = 156;
/// How the client wakes a sleeping worker, written once before the client is told of the
/// connection: [`BELL_DOORBELL`] (bump and wake [`DOORBELL`]), else a byte on the wake-up
/// socket. The client reads it once; a server that lies only delays its own wake-ups.
pub(crate) const SRV_BELL: usize = 160;
/// [`SRV_BELL`]: the server's idle workers sleep on the doorbells (`futex_waitv`).
pub(crate) const BELL_DOORBELL: u32 = 1;
const RING: usize = 192;

/// A slot record, two lines:
///
/// ```text
///  0  state u32 (both, see `state`)
///  4  kind u32          client, before it queues the slot
///  8  op u32            client, before it queues the slot
/// 12  flags u32         client, also while the call is in flight (`F_ASYNC`)
/// 16  len u32           client, before queueing  | rlen u32       server, before DONE
/// 20  status u32                                   server, before DONE
/// 24  sig u64           client, before queueing  | rsig u64       server, before DONE
/// 32  args 4 x u64, or a small request (client)  | a small reply  server, before DONE
/// 64  reply words 2 x u64                          server, before DONE (kinds with args)
/// ```
///
/// The server reads the request's words once, when it takes the slot, and then writes its
/// reply over them: a small call's request and reply both travel in the first line, the
/// one that carries the state word both sides read at every call anyway, so each side
/// takes one miss on the record, not two. The second line carries the reply words, which
/// only kinds with argument words have ([`has_args`]: every kind but `CALL` and `SEND`).
pub(crate) const SLOT_REC: usize = 128;
pub(crate) const S_STATE: usize = 0;
pub(crate) const S_KIND: usize = 4;
pub(crate) const S_OP: usize = 8;
pub(crate) const S_FLAGS: usize = 12;
pub(crate) const S_LEN: usize = 16;
pub(crate) const S_STATUS: usize = 20;
pub(crate) const S_SIG: usize = 24;
pub(crate) const S_ARGS: usize = 32;
/// The reply's length, over the request's once the server has taken the slot.
pub(crate) const S_RLEN: usize = S_LEN;
/// The reply's signature, over the request's.
pub(crate) const S_RSIG: usize = S_SIG;
/// Where a small reply travels ([`INLINE`]), over the request's words.
pub(crate) const S_RINLINE: usize = S_ARGS;
pub(crate) const S_RARGS: usize = 64;

/// Messages of at most this many bytes travel in the slot record's first line, which
/// crosses between the processes at every call anyway, rather than in the slot's data area,
/// which would cost a cache miss on each side: the request of a `CALL` or a `SEND` (kinds
/// that have no argument words) at `S_ARGS`, and every reply at [`S_RINLINE`] (the same
/// bytes: the server has read the request by then). Where a message is follows from its
/// kind and length alone (`Shared::request`, `Shared::reply`), so a peer cannot point the
/// reader anywhere else.
pub(crate) const INLINE: usize = 32;

/// Whether a slot of kind `k` carries argument words (`S_ARGS`); a kind that carries none
/// has its request there when it is small ([`INLINE`]).
pub(crate) fn has_args(k: u32) -> bool {
    !matches!(k, kind::CALL | kind::SEND)
}

/// A push record: sub id, kind, length, signature, then the bytes.
pub(crate) const PUSH_HDR: usize = 32;
pub(crate) const P_SUB: usize = 0;
pub(crate) const P_KIND: usize = 4;
pub(crate) const P_LEN: usize = 8;
pub(crate) const P_SIG: usize = 16;

/// The slot state word.
///
/// ```text
///            client queues            server takes            server completes
///   (free) ----------------> QUEUED ---------------> TAKEN ------------------> DONE (client's)
///                              |                       |
///                client cancels|          client cancels|
///                              v                       v
///                          CANCELED  -- server sees it on take (withdrawn) or on completion
///                                       (signaled): it stores DONE, the client reclaims
/// ```
///
/// `WAITER` is or-ed into QUEUED or TAKEN by a client thread that sleeps on the word; the
/// server's transitions keep it, and its completion wakes the word if it was set.
pub(crate) mod state {
    pub(crate) const QUEUED: u32 = 1;
    pub(crate) const TAKEN: u32 = 2;
    pub(crate) const DONE: u32 = 3;
    pub(crate) const CANCELED: u32 = 4;
    pub(crate) const WAITER: u32 = 0x100;
    pub(crate) const PHASE: u32 = 0xff;
}

/// What a slot carries (`S_KIND`).
pub(crate) mod kind {
    pub(crate) const CALL: u32 = 1;
    pub(crate) const SEND: u32 = 2;
    pub(crate) const LEND: u32 = 3;
    pub(crate) const LEND_MUT: u32 = 4;
    pub(crate) const SCALAR: u32 = 5;
    pub(crate) const BLOCKING_SCALAR: u32 = 6;
    pub(crate) const SUBSCRIBE: u32 = 7;
    pub(crate) const UNSUBSCRIBE: u32 = 8;
    pub(crate) const FREE_BUF: u32 = 9;
    /// A buffer given away with a one-way request (`Client::send_buf`): completed as soon as
    /// the server takes it, the buffer then the server's.
    pub(crate) const SEND_BUF: u32 = 10;
}

/// `S_FLAGS`: someone waits for this slot on the client's bell thread, so completing it
/// rings the bell: an async caller whose future registered its waker (set then, with a
/// SeqCst Dekker pair against the completion; a call whose answer the future finds at once
/// never sets it, so it costs the server no wake-up), or a caller waiting for an abandoned
/// slot to come back.
pub(crate) const F_ASYNC: u32 = 1;

/// How a slot was completed (`S_STATUS`).
pub(crate) mod status {
    pub(crate) const OK: u32 = 1;
    pub(crate) const APP: u32 = 2;
    pub(crate) const NO_REPLY: u32 = 3;
    pub(crate) const PROTOCOL: u32 = 5;
    pub(crate) const TOO_LARGE: u32 = 6;
    pub(crate) const SERVER_GONE: u32 = 7;
    /// A limit of the server (`ServerConfig`), or its descriptors or memory, refused the
    /// call: `Error::LimitReached`.
    pub(crate) const LIMIT: u32 = 8;
}

/// Push record kinds.
pub(crate) const PUSH_DATA: u32 = 1;
pub(crate) const PUSH_END: u32 = 2;

/// Largest values a layout may have.
pub(crate) const MAX_SLOTS: usize = 4096;
pub(crate) const MAX_SLOT_SIZE: usize = 64 << 20;
pub(crate) const MAX_PUSH_DEPTH: usize = 65536;
pub(crate) const MAX_PUSH_SIZE: usize = 1 << 20;
/// The largest connection segment (the client maps up to this).
pub(crate) const MAX_SEGMENT: usize = 1 << 30;
const PAGE: usize = 4096;

/// Where everything is in one connection's segment; computed from four numbers, by the server
/// when it makes the segment and by the client from the header, then checked against the
/// segment's real size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) slots: usize,
    pub(crate) slot_size: usize,
    pub(crate) push_depth: usize,
    pub(crate) push_size: usize,
    pub(crate) recs: usize,
    pub(crate) push: usize,
    pub(crate) push_stride: usize,
    pub(crate) data: usize,
    /// Bytes of payload the layout uses.
    pub(crate) total: usize,
}

fn align(n: usize, a: usize) -> Option<usize> {
    n.checked_add(a - 1).map(|n| n / a * a)
}

impl Layout {
    pub(crate) fn new(
        slots: usize,
        slot_size: usize,
        push_depth: usize,
        push_size: usize,
    ) -> Option<Layout> {
        if !(1..=MAX_SLOTS).contains(&slots)
            || !(1..=MAX_SLOT_SIZE).contains(&slot_size)
            || !(1..=MAX_PUSH_DEPTH).contains(&push_depth)
            || !(1..=MAX_PUSH_SIZE).contains(&push_size)
        {
            return None;
        }
        let slot_size = align(slot_size, 64)?;
        let recs = align(RING + slots * 8, 64)?;
        let push = recs + slots * SLOT_REC;
        let push_stride = align(PUSH_HDR + push_size, 64)?;
        let end = push.checked_add(push_stride.checked_mul(push_depth)?)?;
        // The data starts page-aligned in the mapping (the payload starts HEADER_LEN in).
        let data = align(end + HEADER_LEN, PAGE)? - HEADER_LEN;
        let total = data.checked_add(slot_size.checked_mul(slots)?)?;
        if total.checked_add(HEADER_LEN)? > MAX_SEGMENT {
            return None;
        }
        Some(Layout {
            slots,
            slot_size,
            push_depth,
            push_size,
            recs,
            push,
            push_stride,
            data,
            total,
        })
    }

    /// The request ring's slot of the entry with counter `n` (taken modulo in 64 bits, so
    /// that a 32-bit and a 64-bit peer agree after 2^32 calls); a slot's own index, below
    /// `slots`, names that slot.
    #[inline]
    pub(crate) fn ring(&self, n: u64) -> usize {
        RING + 8 * (n % self.slots as u64) as usize
    }

    /// The request ring's slot `i` (`i < slots`: the client's own `Producer::next_slot`).
    #[inline]
    pub(crate) fn ring_slot(&self, i: usize) -> usize {
        debug_assert!(i < self.slots);
        RING + 8 * i
    }

    #[inline]
    pub(crate) fn rec(&self, slot: usize) -> usize {
        self.recs + slot * SLOT_REC
    }

    pub(crate) fn push_rec(&self, n: u64) -> usize {
        self.push + (n % self.push_depth as u64) as usize * self.push_stride
    }

    pub(crate) fn slot_data(&self, slot: usize) -> usize {
        self.data + slot * self.slot_size
    }
}

/// Typed access to one connection's segment at offsets of its checked [`Layout`].
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) seg: Segment,
    pub(crate) lay: Layout,
}

impl Shared {
    /// Offsets come from `Layout` (or a constant below its first area) plus an index the
    /// caller checked against the layout's counts.
    #[inline]
    pub(crate) fn u32(&self, off: usize) -> &AtomicU32 {
        self.seg.u32_at(off)
    }

    #[inline]
    pub(crate) fn u64(&self, off: usize) -> &AtomicU64 {
        self.seg.u64_at(off)
    }

    /// Stores `value` into the hint word at `off` (`CLI_CPU`, `SRV_CPU`) only if it changed:
    /// the peer reads the word's line at every call, and a store would move it out of the
    /// peer's cache each time. Relaxed: hints only.
    pub(crate) fn set_hint(&self, off: usize, value: u32) {
        let word = self.u32(off);
        if word.load(Ordering::Relaxed) != value {
            word.store(value, Ordering::Relaxed);
        }
    }

    /// The state word of slot `slot` (`slot < lay.slots`).
    #[inline]
    pub(crate) fn state(&self, slot: usize) -> &AtomicU32 {
        self.u32(self.lay.rec(slot) + S_STATE)
    }

    /// A raw pointer to `len` bytes at `off` (`off + len <= lay.total`, checked by callers
    /// against the layout).
    pub(crate) fn bytes_ptr(&self, off: usize) -> *mut u8 {
        debug_assert!(off <= self.lay.total);
        // SAFETY: `off <= lay.total <= payload length`: inside the mapping (or one past).
        unsafe { self.seg.payload_ptr().add(off) }
    }

    /// Slot `slot`'s data area (its first `len` bytes, at most the slot size), for reading
    /// what the peer wrote: a view, since the peer may change the bytes while we read.
    pub(crate) fn data(&self, slot: usize, len: usize) -> ShmView<'_> {
        let len = len.min(self.lay.slot_size);
        // SAFETY: `slot < lay.slots` (callers check), so the area lies inside the layout,
        // which lies inside the mapping `self.seg` keeps for as long as `&self`; `len <=
        // slot_size`. No reference to slot data is ever made.
        unsafe { ShmView::new(self.bytes_ptr(self.lay.slot_data(slot)), len) }
    }

    /// Slot `slot`'s data area for writing; the caller owns the slot in the protocol (the
    /// client before queueing, the server between taking and completing).
    pub(crate) fn data_mut(&self, slot: usize) -> ShmViewMut<'_> {
        // SAFETY: as for `data`, for the whole slot; writes go through the view's raw
        // copies, so a peer writing the same bytes (only a hostile one would) races with
        // nothing this process assumes.
        unsafe { ShmViewMut::new(self.bytes_ptr(self.lay.slot_data(slot)), self.lay.slot_size) }
    }

    /// `len` bytes of slot record `slot` at `off` (within the record), for reading.
    fn record(&self, slot: usize, off: usize, len: usize) -> ShmView<'_> {
        debug_assert!(off + len <= SLOT_REC);
        // SAFETY: `slot < lay.slots` (callers check) and `off + len <= SLOT_REC`: inside the
        // record, inside the layout, inside the mapping `self.seg` keeps for as long as
        // `&self`. No reference to the bytes is made.
        unsafe { ShmView::new(self.bytes_ptr(self.lay.rec(slot) + off), len) }
    }

    /// As [`Shared::record`], for writing.
    fn record_mut(&self, slot: usize, off: usize, len: usize) -> ShmViewMut<'_> {
        debug_assert!(off + len <= SLOT_REC);
        // SAFETY: as in `record`; writes go through the view's raw copies.
        unsafe { ShmViewMut::new(self.bytes_ptr(self.lay.rec(slot) + off), len) }
    }

    /// The request of slot `slot`, of kind `k` and `len` bytes (at most the slot size): in
    /// the record or in the data area, as [`INLINE`] says.
    pub(crate) fn request(&self, slot: usize, k: u32, len: usize) -> ShmView<'_> {
        if !has_args(k) && len <= INLINE {
            self.record(slot, S_ARGS, len)
        } else {
            self.data(slot, len)
        }
    }

    /// Where the client writes the request of slot `slot`, of kind `k`.
    pub(crate) fn request_out(&self, slot: usize, k: u32) -> Out<'_> {
        Out {
            small: (!has_args(k)).then(|| self.record_mut(slot, S_ARGS, INLINE)),
            large: self.data_mut(slot),
        }
    }

    /// The reply of slot `slot`, `len` bytes (at most the slot size): in the record or in
    /// the data area, as [`INLINE`] says.
    pub(crate) fn reply(&self, slot: usize, len: usize) -> ShmView<'_> {
        if len <= INLINE {
            self.record(slot, S_RINLINE, len)
        } else {
            self.data(slot, len)
        }
    }

    /// Where the server writes the reply of slot `slot`.
    pub(crate) fn reply_out(&self, slot: usize) -> Out<'_> {
        Out {
            small: Some(self.record_mut(slot, S_RINLINE, INLINE)),
            large: self.data_mut(slot),
        }
    }

    /// The data bytes of push record `n` for writing (server).
    pub(crate) fn push_data_mut(&self, n: u64) -> ShmViewMut<'_> {
        // SAFETY: the record lies inside the push ring of the layout, inside the mapping;
        // the producer (server, under its push lock) owns records between tail and head +
        // depth.
        unsafe {
            ShmViewMut::new(
                self.bytes_ptr(self.lay.push_rec(n) + PUSH_HDR),
                self.lay.push_size,
            )
        }
    }

    /// The data bytes of push record `n` for reading (client).
    pub(crate) fn push_data(&self, n: u64, len: usize) -> ShmView<'_> {
        let len = len.min(self.lay.push_size);
        // SAFETY: as for `push_data_mut`; `len <= push_size`.
        unsafe { ShmView::new(self.bytes_ptr(self.lay.push_rec(n) + PUSH_HDR), len) }
    }
}

/// The connection segment's header (see `substrate/header.rs`): slots, slot size, push
/// depth, push record size.
const HEADER: Protocol = Protocol {
    magic: MAGIC,
    version: VERSION,
    too_small: "segment too small for an RPC connection",
    bad_magic: "not an RPC connection segment (bad magic)",
    bad_version: "unsupported RPC layout version",
    not_ready: "RPC header not ready",
};

/// Writes the header of a new connection segment (server side, before it is sent).
pub(crate) fn write_header(seg: &Segment, lay: &Layout) {
    // The layout's limits keep each of these below 2^31.
    HEADER.write(
        seg,
        [
            lay.slots as u32,
            lay.slot_size as u32,
            lay.push_depth as u32,
            lay.push_size as u32,
        ],
    );
}

/// Reads and checks the header of a segment received from a server: each field once, the
/// layout recomputed and checked against the segment's real size.
pub(crate) fn read_header(seg: &Segment) -> Result<Layout, ShmError> {
    let [slots, slot_size, push_depth, push_size] = HEADER.read(seg)?;
    let lay = Layout::new(
        slots as usize,
        slot_size as usize,
        push_depth as usize,
        push_size as usize,
    )
    .ok_or(ShmError::Corrupt("RPC layout out of range"))?;
    if lay.total > seg.payload().len() {
        return Err(ShmError::Corrupt("RPC layout larger than the segment"));
    }
    Ok(lay)
}

/// Where a message is written ([`Shared::request_out`], [`Shared::reply_out`]): in the slot
/// record if it is small and its kind travels there ([`INLINE`]), else in the data area.
pub(crate) struct Out<'a> {
    /// The record's area for a small message, if this message may travel there.
    small: Option<ShmViewMut<'a>>,
    large: ShmViewMut<'a>,
}

impl Out<'_> {
    /// Writes `value` where a message of its length travels; its length, or `None` if it
    /// does not fit in the slot. A value whose length is known beforehand
    /// ([`Wire::encoded_len`]) is written once, in place; one whose length is not is written
    /// in the data area and, if it turns out small, copied into the record.
    pub(crate) fn put<W: Wire>(&mut self, value: &W) -> Option<usize> {
        if let Some(small) = &mut self.small {
            if value.encoded_len().is_some_and(|n| n <= INLINE) {
                if let Some(n) = value.encode(small).filter(|&n| n <= INLINE) {
                    return Some(n);
                }
            }
        }
        let n = value.encode(&mut self.large)?;
        if let Some(small) = self.small.as_mut().filter(|_| n <= INLINE) {
            let (Some(mut to), Some(from)) = (small.slice_mut(..n), self.large.slice(..n)) else {
                unreachable!("{n} bytes fit both areas");
            };
            to.copy_from_view(&from);
        }
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_page_aligned_and_areas_do_not_overlap() {
        for (slots, size, depth, psize) in [(1, 1, 1, 1), (64, 4096, 64, 256), (7, 100, 3, 999)] {
            let l = Layout::new(slots, size, depth, psize).unwrap();
            assert_eq!((l.data + HEADER_LEN) % PAGE, 0);
            assert!(RING + 8 * slots <= l.recs);
            assert!(l.recs + SLOT_REC * slots <= l.push);
            assert!(l.push + l.push_stride * depth <= l.data);
            assert_eq!(l.total, l.data + l.slot_size * slots);
            assert!(l.slot_size >= size && l.slot_size % 64 == 0);
        }
        assert!(Layout::new(0, 1, 1, 1).is_none());
        assert!(Layout::new(MAX_SLOTS, MAX_SLOT_SIZE, 1, 1).is_none());
    }

    /// A value of `n` bytes whose length is not known before it is written.
    struct Unknown(usize);

    impl Wire for Unknown {
        const SIGNATURE: u64 = 1;
        fn encode(&self, out: &mut ShmViewMut<'_>) -> Option<usize> {
            out.write_at(0, &vec![7; self.0]).ok()?;
            Some(self.0)
        }
        fn decode(_: &ShmView<'_>) -> Option<Self> {
            None
        }
    }

    /// Puts `value` through an [`Out`] over private areas (the record's, if `small`):
    /// its length, and the two areas after.
    fn put(value: &impl Wire, small: bool) -> (Option<usize>, [u8; INLINE], [u8; 64]) {
        let (mut rec, mut data) = ([0u8; INLINE], [0u8; 64]);
        let n = Out {
            small: small.then(|| ShmViewMut::from_private(&mut rec)),
            large: ShmViewMut::from_private(&mut data),
        }
        .put(value);
        (n, rec, data)
    }

    #[test]
    fn a_small_message_goes_to_the_record_once_and_a_large_one_to_the_data_area() {
        // Known length, small: written in the record only.
        let (n, rec, data) = put(&u64::MAX, true);
        assert_eq!(
            (n, &rec[..9], data),
            (
                Some(8),
                &[255, 255, 255, 255, 255, 255, 255, 255, 0][..],
                [0; 64]
            )
        );
        // Unknown length, small: written in the data area, then copied into the record.
        let (n, rec, data) = put(&Unknown(INLINE), true);
        assert_eq!((n, rec), (Some(INLINE), [7; INLINE]));
        assert_eq!(&data[..INLINE + 1], &[&[7; INLINE][..], &[0]].concat()[..]);
        // Large (known or not): the data area only.
        for (n, rec, data) in [
            put(&[9u8; INLINE + 1], true),
            put(&Unknown(INLINE + 1), true),
        ] {
            assert_eq!((n, rec), (Some(INLINE + 1), [0; INLINE]));
            assert!(data[0] != 0 && data[..=INLINE].iter().all(|&b| b == data[0]));
        }
        // No record area (a kind with argument words): the data area, however small.
        let (n, _, data) = put(&1u8, false);
        assert_eq!((n, data[0]), (Some(1), 1));
        // Too large for either: nothing.
        assert_eq!(put(&Unknown(65), true).0, None);
        assert!(has_args(kind::LEND) && has_args(kind::SCALAR) && !has_args(kind::CALL));
    }
}
