//! The header at the start of a protocol's segment payload, written once by the side that
//! makes the segment and read once by the side that receives it: a magic number, a layout
//! version, `N` 32-bit parameters (sizes and counts, from which the reader recomputes the
//! whole layout), and a ready flag, published last.
//!
//! ```text
//! 0        magic      u32   which protocol ("CHAN", "CRPC")
//! 4        version    u32   its layout version
//! 8        params     N x u32
//! 8 + 4N   ready      u32   1 once the rest is written (Release; read Acquire)
//! ```
//!
//! The reader loads every field once, ready first (Acquire: the fields written before it are
//! then visible), and checks magic, version and ready before it hands the parameters on; what
//! they say is the caller's to check (a layout recomputed and compared with the segment's
//! real size), as untrusted as any input from the peer.

use crate::error::ShmError;
use crate::segment::Segment;
use crate::sync::shared::Ordering;

/// The value of the ready flag once the header is complete.
const READY: u32 = 1;
/// The offset of the first parameter.
const PARAMS: usize = 8;

/// One protocol's header: its magic number, version and what its errors say.
pub(crate) struct Protocol {
    /// The magic number.
    pub(crate) magic: u32,
    /// The layout version this build speaks.
    pub(crate) version: u32,
    /// The error for a payload smaller than the header.
    pub(crate) too_small: &'static str,
    /// The error for another magic number.
    pub(crate) bad_magic: &'static str,
    /// The error for another version.
    pub(crate) bad_version: &'static str,
    /// The error for a header whose ready flag is not set.
    pub(crate) not_ready: &'static str,
}

impl Protocol {
    /// The offset of the ready flag after `n` parameters.
    const fn ready_at(n: usize) -> usize {
        PARAMS + 4 * n
    }

    /// Writes the header with `params` into a new segment, the ready flag last.
    pub(crate) fn write<const N: usize>(&self, seg: &Segment, params: [u32; N]) {
        let w = |off: usize, v: u32| seg.u32_at(off).store(v, Ordering::Relaxed);
        w(0, self.magic);
        w(4, self.version);
        for (i, p) in params.into_iter().enumerate() {
            w(PARAMS + 4 * i, p);
        }
        // Release: pairs with the Acquire load in `read`.
        seg.u32_at(Self::ready_at(N))
            .store(READY, Ordering::Release);
    }

    /// Reads and checks the header of a segment a peer sent: each field once; the `N`
    /// parameters, unchecked.
    pub(crate) fn read<const N: usize>(&self, seg: &Segment) -> Result<[u32; N], ShmError> {
        if seg.payload().len() < Self::ready_at(N) + 4 {
            return Err(ShmError::Corrupt(self.too_small));
        }
        let r = |off: usize, order| seg.u32_at(off).load(order);
        // Acquire: pairs with the Release store of the ready flag in `write`.
        let ready = r(Self::ready_at(N), Ordering::Acquire);
        if r(0, Ordering::Relaxed) != self.magic {
            return Err(ShmError::Corrupt(self.bad_magic));
        }
        if r(4, Ordering::Relaxed) != self.version {
            return Err(ShmError::Corrupt(self.bad_version));
        }
        if ready != READY {
            return Err(ShmError::Corrupt(self.not_ready));
        }
        Ok(std::array::from_fn(|i| {
            r(PARAMS + 4 * i, Ordering::Relaxed)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: Protocol = Protocol {
        magic: u32::from_le_bytes(*b"TEST"),
        version: 3,
        too_small: "small",
        bad_magic: "magic",
        bad_version: "version",
        not_ready: "ready",
    };

    #[test]
    fn what_is_written_is_read_and_every_field_is_checked() {
        let seg = Segment::create(4096).unwrap();
        assert!(matches!(
            TEST.read::<2>(&seg),
            Err(ShmError::Corrupt("magic"))
        ));
        TEST.write(&seg, [7, 9]);
        assert_eq!(TEST.read::<2>(&seg).unwrap(), [7, 9]);
        // Another protocol, another version, no ready flag.
        let other = Protocol { magic: 1, ..TEST };
        assert!(matches!(
            other.read::<2>(&seg),
            Err(ShmError::Corrupt("magic"))
        ));
        let newer = Protocol { version: 4, ..TEST };
        assert!(matches!(
            newer.read::<2>(&seg),
            Err(ShmError::Corrupt("version"))
        ));
        seg.u32_at(Protocol::ready_at(2))
            .store(0, Ordering::Relaxed);
        assert!(matches!(
            TEST.read::<2>(&seg),
            Err(ShmError::Corrupt("ready"))
        ));
    }
}
