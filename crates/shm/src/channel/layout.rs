//! Where everything of a channel lies in its segment, and the header that says so.
//!
//! # Layout (offsets from the start of the segment's payload)
//!
//! ```text
//! 0        channel header (64 B, `substrate/header.rs`): "CHAN", version, block size, block
//!          count, ring depth, ready
//! 64       direction 0 control (listener -> client), 512 B, four groups 128 B apart (a
//!          group's line and its neighbour, which x86 cores fetch in pairs, hold nothing
//!          another group's writer writes):
//!            +0   (unused)
//!            +128 head      u64  messages consumed       (written by the receiver)
//!            +256 s_wait    u32  the sender sleeps       (futex word, see "Waiting")
//!            +384 r_wait    u32  the receiver sleeps     (futex word)
//!            +388 r_cpu     u32  the receiver's CPU      (a hint, see `R_CPU`)
//! 576      direction 1 control (client -> listener), the same
//! 1088     message ring of each direction: ring_depth x 64-byte entries, one line each:
//!            +0   u64  stamp << 52 | block << 32 | length, or, for a message of at most
//!                      INLINE_MAX bytes, stamp << 52 | INLINE | length (bit 31 of the
//!                      length field: see `INLINE`)
//!            +8   the message itself, if inline (up to 56 bytes)
//!          (the sender's count of messages is kept in its process only)
//!          returned ring of each direction: block_count x u64, stamp << 52 | block
//!          (no counter: see "Ownership of a block" in `mod.rs`)
//!          blocks of each direction (64-byte aligned): block_count x block_size bytes
//!          (each ring, and each direction's blocks, start 128 bytes apart in the segment)
//! ```
//!
//! Every counter only grows (u64: it does not wrap in practice); a slot is `counter % depth`.
//! Each direction is a pair of single-producer single-consumer rings over its own pool of
//! blocks: messages go forward through the message ring, blocks come back through the returned
//! ring. Both are the substrate's checked ring (`substrate/ring.rs`, model-checked with loom),
//! their entries stamped with their lap (its "Stamped entries"), so a consumer reads an
//! entry's slot alone, not a counter and then the slot; the returned ring shares no counter at
//! all (its producer never waits for room). The waits are the
//! substrate's park/wake handshake (`substrate/park.rs`, likewise).
//!

use crate::error::ShmError;
use crate::segment::{Segment, HEADER_LEN};
use crate::substrate::header::Protocol;

/// The channel header's magic number: "CHAN" read as a little-endian `u32`.
pub(super) const CHAN_MAGIC: u32 = u32::from_le_bytes(*b"CHAN");
/// The channel layout version (3: 64-byte ring entries, with inline messages; 4: a stamped
/// returned ring, with no counters).
pub(super) const CHAN_VERSION: u32 = 4;

/// The size of a message-ring entry: one cache line, the entry word and an inline message.
pub(super) const ENTRY: usize = 64;
/// Where an inline message lies in its entry (after the entry word).
pub(super) const INLINE_AT: usize = 8;
/// The longest message sent inline, in its ring entry, rather than in a block.
pub(super) const INLINE_MAX: usize = ENTRY - INLINE_AT;
/// The bit of an entry's length field that marks an inline message (no block length has
/// it: a block holds at most 2^30 bytes).
pub(super) const INLINE: u64 = 1 << 31;

/// The largest block, block count and ring depth a layout may have.
pub(super) const MAX_BLOCK_SIZE: usize = 1 << 30;
pub(super) const MAX_COUNT: usize = 1 << 20;
/// The largest segment a channel uses (the client maps segments up to 1 GiB by default).
pub(super) const MAX_SEGMENT: usize = 1 << 30;

// Offsets inside a direction's control area.
//
// The sleep words are apart from the counters: a waker reads its peer's sleep word at every
// message, and finds it in its own cache as long as the peer does not sleep; next to a counter
// the peer stores at every message, each read would be a miss, and the peer's next store would
// wait for the line to come back.
pub(super) const CTL_LEN: usize = 512;
pub(super) const HEAD: usize = 128;
pub(super) const S_WAIT: usize = 256;
pub(super) const R_WAIT: usize = 384;
/// The CPU the receiver of this direction last waited on, plus one (0: not known): a hint
/// for the peer's spin (a peer on our CPU cannot run while we spin). Written by the
/// receiver, read by the sender; only ever a hint, so a hostile value costs speed at most.
pub(super) const R_CPU: usize = 388;

/// The alignment, in the segment, of each area that one side writes (see `CTL_LEN`).
const GROUP: usize = 128;

/// The channel header's length (its fields: `write_header`).
pub(super) const H_LEN: usize = 64;

/// Where everything is, computed from the three numbers in the header with checked arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    pub(super) block_size: usize,
    pub(super) block_count: usize,
    pub(super) ring_depth: usize,
    /// Distance between two blocks: `block_size` rounded up to 64.
    pub(super) stride: usize,
    pub(super) ctl: [usize; 2],
    pub(super) ring: [usize; 2],
    pub(super) ret: [usize; 2],
    pub(super) blocks: [usize; 2],
    /// Bytes of payload the channel uses.
    pub(super) total: usize,
}

impl Layout {
    pub(super) fn new(block_size: usize, block_count: usize, ring_depth: usize) -> Option<Layout> {
        if !(1..=MAX_BLOCK_SIZE).contains(&block_size)
            || !(1..=MAX_COUNT).contains(&block_count)
            || !(1..=MAX_COUNT).contains(&ring_depth)
        {
            return None;
        }
        let align = |n: usize, a: usize| n.checked_add(a - 1).map(|n| n / a * a);
        // Each area starts a 128-byte pair of lines in the segment (the payload starts
        // HEADER_LEN into it): one side's writes to one area never share a pair with the
        // other side's writes to another.
        let group = |n: usize| align(n + HEADER_LEN, GROUP).map(|n| n - HEADER_LEN);
        let stride = align(block_size, 64)?;
        let mut off = group(H_LEN)?;
        let ctl = [off, off + CTL_LEN];
        off += 2 * CTL_LEN;
        let ring_len = align(ring_depth.checked_mul(ENTRY)?, GROUP)?;
        let ring = [off, off + ring_len];
        off += 2 * ring_len;
        let ret_len = align(block_count * 8, GROUP)?;
        let ret = [off, off + ret_len];
        off += 2 * ret_len;
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

/// The channel's header (see `substrate/header.rs`): block size, block count, ring depth.
const HEADER: Protocol = Protocol {
    magic: CHAN_MAGIC,
    version: CHAN_VERSION,
    too_small: "segment too small for a channel",
    bad_magic: "not a channel segment (bad magic)",
    bad_version: "unsupported channel layout version",
    not_ready: "channel header not ready",
};

/// Writes the channel header into a new segment (before it is sent to the client).
pub(super) fn write_header(seg: &Segment, lay: &Layout) {
    // The layout's limits keep each of these below 2^31.
    HEADER.write(
        seg,
        [
            lay.block_size as u32,
            lay.block_count as u32,
            lay.ring_depth as u32,
        ],
    );
}

/// Reads and checks the channel header of a segment received from a listener: each field
/// once, the layout recomputed and checked against the segment's real size.
pub(super) fn read_header(seg: &Segment) -> Result<Layout, ShmError> {
    let [bs, bc, depth] = HEADER.read(seg)?;
    let lay = Layout::new(bs as usize, bc as usize, depth as usize)
        .ok_or(ShmError::Corrupt("channel layout out of range"))?;
    if lay.total > seg.payload().len() {
        return Err(ShmError::Corrupt("channel layout larger than the segment"));
    }
    Ok(lay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ShmConfig;

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
}
