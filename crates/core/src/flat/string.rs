//! [`String<N>`]: a UTF-8 string of at most `N` bytes stored inline.

use core::fmt;
use core::mem::size_of;
use core::ops::Deref;
use core::result::Result;

use zerocopy::{FromBytes, Immutable, KnownLayout};

use super::{signature, FlatError, IpcSafe, SignatureHasher};

/// A bounded, inline, IPC-safe UTF-8 string of at most `N` bytes.
///
/// Its layout is `#[repr(C)] { len: [u8; 4], bytes: [u8; N] }` (a native-endian `u32` length,
/// alignment 1, no padding), the same on 32- and 64-bit targets. Unused capacity is kept zeroed.
/// `N` must fit in a `u32`.
///
/// Unlike flatipc's `String`, building one from any `&str` of up to `N` bytes works, a longer
/// one is an `Err`, and [`as_str`](Self::as_str) never panics.
///
/// # Examples
///
/// ```
/// use core::fmt::Write;
/// use courier_core::flat::String;
///
/// let mut s = String::<8>::try_from("hi").unwrap();
/// write!(s, ", you").unwrap();
/// assert_eq!(s.as_str(), "hi, you");
/// assert!(s.push_str("!!").is_err()); // 9 bytes do not fit in 8
/// assert_eq!(s, "hi, you");
/// assert!(String::<2>::try_from("abc").is_err());
/// ```
#[derive(Clone, Copy)]
#[repr(C)]
pub struct String<const N: usize> {
    len: [u8; 4],
    bytes: [u8; N],
}

/// The `zerocopy`-checked mirror of [`String<N>`]: any bytes are valid; lengths and UTF-8 are
/// checked by [`IpcSafe::check`].
#[doc(hidden)]
#[derive(FromBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct StringMirror<const N: usize> {
    len: [u8; 4],
    bytes: [u8; N],
}

/// A value did not fit in a bounded [`String`] or [`Vec`](super::Vec).
///
/// # Examples
///
/// ```
/// use courier_core::flat::{CapacityError, String};
/// assert_eq!(
///     String::<2>::try_from("abc").unwrap_err(),
///     CapacityError { needed: 3, capacity: 2 },
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CapacityError {
    /// The length the operation needed.
    pub needed: usize,
    /// The container's capacity.
    pub capacity: usize,
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "needs {} elements, capacity is {}",
            self.needed, self.capacity
        )
    }
}

impl core::error::Error for CapacityError {}

impl<const N: usize> String<N> {
    const CAPACITY_FITS_U32: () = assert!(N <= u32::MAX as usize, "String<N> needs N <= u32::MAX");

    /// An empty string.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = courier_core::flat::String::<4>::new();
    /// assert!(s.is_empty());
    /// ```
    #[must_use]
    pub const fn new() -> Self {
        let () = Self::CAPACITY_FITS_U32;
        Self {
            len: [0; 4],
            bytes: [0; N],
        }
    }

    /// The length in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(courier_core::flat::String::<9>::try_from("été").unwrap().len(), 5);
    /// ```
    #[must_use]
    pub const fn len(&self) -> usize {
        u32::from_ne_bytes(self.len) as usize
    }

    /// Whether the string is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(courier_core::flat::String::<1>::new().is_empty());
    /// ```
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity `N` in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(courier_core::flat::String::<7>::new().capacity(), 7);
    /// ```
    #[must_use]
    pub const fn capacity(&self) -> usize {
        N
    }

    /// The contents, checked; never panics.
    ///
    /// # Errors
    ///
    /// [`FlatError::StringTooLong`] or [`FlatError::InvalidUtf8`] if the bytes are not a valid
    /// string (impossible for values built through this API or checked by `from_slice`).
    ///
    /// # Examples
    ///
    /// ```
    /// let s = courier_core::flat::String::<4>::try_from("ok").unwrap();
    /// assert_eq!(s.try_as_str(), Ok("ok"));
    /// ```
    pub fn try_as_str(&self) -> Result<&str, FlatError> {
        let len = self.len();
        let bytes = self
            .bytes
            .get(..len)
            .ok_or(FlatError::StringTooLong { len, capacity: N })?;
        core::str::from_utf8(bytes).map_err(|e| FlatError::InvalidUtf8 {
            valid_up_to: e.valid_up_to(),
        })
    }

    /// The contents. Never panics: a malformed string (which this API and `from_slice` never
    /// produce) reads as `""`.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = courier_core::flat::String::<4>::try_from("ok").unwrap();
    /// assert_eq!(s.as_str(), "ok");
    /// ```
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.try_as_str().unwrap_or("")
    }

    /// Appends `s`, or changes nothing if it does not fit.
    ///
    /// # Errors
    ///
    /// [`CapacityError`] if the result would be longer than `N` bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut s = courier_core::flat::String::<4>::new();
    /// s.push_str("ab").unwrap();
    /// assert!(s.push_str("cde").is_err());
    /// assert_eq!(s, "ab");
    /// ```
    pub fn push_str(&mut self, s: &str) -> Result<(), CapacityError> {
        let len = self.len();
        let needed = len.saturating_add(s.len());
        let Some(dst) = self.bytes.get_mut(len..needed) else {
            return Err(CapacityError {
                needed,
                capacity: N,
            });
        };
        dst.copy_from_slice(s.as_bytes());
        self.len = (needed as u32).to_ne_bytes();
        Ok(())
    }

    /// Appends one character.
    ///
    /// # Errors
    ///
    /// [`CapacityError`] if it does not fit.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut s = courier_core::flat::String::<1>::new();
    /// s.push('a').unwrap();
    /// assert!(s.push('b').is_err());
    /// ```
    pub fn push(&mut self, c: char) -> Result<(), CapacityError> {
        self.push_str(c.encode_utf8(&mut [0; 4]))
    }

    /// Empties the string (and zeroes its bytes).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut s = courier_core::flat::String::<4>::try_from("abc").unwrap();
    /// s.clear();
    /// assert_eq!(s, "");
    /// ```
    pub fn clear(&mut self) {
        *self = Self::new();
    }
}

impl<const N: usize> Default for String<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> TryFrom<&str> for String<N> {
    type Error = CapacityError;
    fn try_from(s: &str) -> Result<Self, CapacityError> {
        let mut out = Self::new();
        out.push_str(s)?;
        Ok(out)
    }
}

impl<const N: usize> core::str::FromStr for String<N> {
    type Err = CapacityError;
    fn from_str(s: &str) -> Result<Self, CapacityError> {
        Self::try_from(s)
    }
}

impl<const N: usize> Deref for String<N> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> AsRef<str> for String<N> {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> fmt::Write for String<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s).map_err(|_| fmt::Error)
    }
}

impl<const N: usize> fmt::Debug for String<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> fmt::Display for String<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize, const M: usize> PartialEq<String<M>> for String<N> {
    fn eq(&self, other: &String<M>) -> bool {
        self.as_str() == other.as_str()
    }
}

impl<const N: usize> Eq for String<N> {}

impl<const N: usize> PartialEq<str> for String<N> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl<const N: usize> PartialEq<&str> for String<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl<const N: usize> core::hash::Hash for String<N> {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

// SAFETY: `String<N>` and `StringMirror<N>` are identical `repr(C)` structs of byte arrays
// (alignment 1, no padding, no pointers). Every byte pattern is a valid `String<N>`; its safety
// invariant (length <= N, UTF-8) is what `check` verifies.
unsafe impl<const N: usize> IpcSafe for String<N> {
    type Mirror = StringMirror<N>;
    const SIGNATURE: u64 = SignatureHasher::new(signature::kind::STRING)
        .usize(N)
        .usize(size_of::<Self>())
        .finish();
    const HAS_PADDING: bool = false;
    const NEEDS_CHECK: bool = true;

    fn check(mirror: &StringMirror<N>, _: &[u8]) -> Result<(), FlatError> {
        let len = u32::from_ne_bytes(mirror.len) as usize;
        let bytes = mirror
            .bytes
            .get(..len)
            .ok_or(FlatError::StringTooLong { len, capacity: N })?;
        core::str::from_utf8(bytes).map_err(|e| FlatError::InvalidUtf8 {
            valid_up_to: e.valid_up_to(),
        })?;
        Ok(())
    }

    fn zero_padding(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flat::Page;

    #[test]
    fn any_str_up_to_n_fits() {
        for s in ["", "a", "ab", "abc", "é", "aé"] {
            assert_eq!(String::<3>::try_from(s).unwrap(), s, "{s}");
        }
        assert_eq!(
            String::<3>::try_from("abcd").unwrap_err(),
            CapacityError {
                needed: 4,
                capacity: 3
            }
        );
        assert!(String::<3>::try_from("aaé").is_err());
        assert_eq!(core::mem::size_of::<String<100>>(), 104);
        assert_eq!(core::mem::align_of::<String<100>>(), 1);
    }

    #[repr(C, align(4096))]
    struct Aligned([u8; 4096]);

    #[test]
    fn hostile_length_and_utf8_are_errors() {
        let sig = String::<8>::SIGNATURE;
        let mut buf = Aligned([0; 4096]);
        buf.0[..4].copy_from_slice(&9u32.to_ne_bytes());
        assert_eq!(
            Page::<String<8>>::from_slice(&buf.0, sig).unwrap_err(),
            FlatError::StringTooLong {
                len: 9,
                capacity: 8
            }
        );
        buf.0[..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(Page::<String<8>>::from_slice(&buf.0, sig).is_err());
        buf.0[..4].copy_from_slice(&2u32.to_ne_bytes());
        buf.0[4] = b'a';
        buf.0[5] = 0xFF;
        assert_eq!(
            Page::<String<8>>::from_slice(&buf.0, sig).unwrap_err(),
            FlatError::InvalidUtf8 { valid_up_to: 1 }
        );
        buf.0[5] = b'b';
        assert_eq!(
            Page::<String<8>>::from_slice(&buf.0, sig).unwrap().as_str(),
            "ab"
        );
    }
}
