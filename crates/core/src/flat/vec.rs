//! [`Vec<T, N>`]: at most `N` elements stored inline.

use core::fmt;
use core::mem::{offset_of, size_of, MaybeUninit};
use core::ops::{Deref, DerefMut};
use core::result::Result;

use zerocopy::{Immutable, KnownLayout, TryFromBytes};

use super::{__private, signature, CapacityError, FlatError, IpcSafe, SignatureHasher};

/// A bounded, inline, IPC-safe vector of at most `N` elements of an IPC-safe `Copy` type.
///
/// Restricted to `T: Copy`, so elements never need dropping (flatipc's `Vec` leaked them). Its
/// layout is `#[repr(C)] { len: u32, items: [T; N] }`; unused slots are always zeroed (`new`,
/// `pop` and `clear` zero them), so no stale element travels in a message. `push` on a full
/// vector hands the value back in `Err`; no accessor panics, even on a hostile length, which
/// `from_slice` refuses anyway.
///
/// # Examples
///
/// ```
/// use courier_core::flat::Vec;
///
/// let mut v = Vec::<u16, 2>::new();
/// v.push(1).unwrap();
/// v.push(2).unwrap();
/// assert_eq!(v.push(3), Err(3)); // full: the value comes back
/// assert_eq!(v.as_slice(), &[1, 2]);
/// assert_eq!(v.pop(), Some(2));
/// assert_eq!(v.len(), 1);
/// ```
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Vec<T: IpcSafe + Copy, const N: usize> {
    len: u32,
    items: [MaybeUninit<T>; N],
}

/// The `zerocopy`-checked mirror of [`Vec<T, N>`]; live elements and the length are checked by
/// [`IpcSafe::check`].
#[doc(hidden)]
#[derive(TryFromBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct VecMirror<M, const N: usize> {
    len: u32,
    items: [MaybeUninit<M>; N],
}

impl<T: IpcSafe + Copy, const N: usize> Vec<T, N> {
    const CAPACITY_FITS_U32: () = assert!(N <= u32::MAX as usize, "Vec<T, N> needs N <= u32::MAX");

    /// An empty vector (all slots zeroed).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(courier_core::flat::Vec::<u8, 3>::new().is_empty());
    /// ```
    #[must_use]
    pub const fn new() -> Self {
        let () = Self::CAPACITY_FITS_U32;
        Self {
            len: 0,
            items: [const { MaybeUninit::zeroed() }; N],
        }
    }

    /// The number of elements (never more than `N`).
    ///
    /// # Examples
    ///
    /// ```
    /// let v = courier_core::flat::Vec::<u8, 3>::try_from(&[1, 2][..]).unwrap();
    /// assert_eq!(v.len(), 2);
    /// ```
    #[must_use]
    pub const fn len(&self) -> usize {
        let len = self.len as usize;
        if len < N {
            len
        } else {
            N
        }
    }

    /// Whether there are no elements.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(courier_core::flat::Vec::<u8, 3>::new().is_empty());
    /// ```
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity `N`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(courier_core::flat::Vec::<u8, 3>::new().capacity(), 3);
    /// ```
    #[must_use]
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Appends `value`.
    ///
    /// # Errors
    ///
    /// `Err(value)` if the vector is full.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut v = courier_core::flat::Vec::<char, 1>::new();
    /// assert_eq!(v.push('a'), Ok(()));
    /// assert_eq!(v.push('b'), Err('b'));
    /// ```
    pub fn push(&mut self, value: T) -> Result<(), T> {
        let len = self.len();
        match self.items.get_mut(len) {
            Some(slot) => {
                slot.write(value);
                self.len = len as u32 + 1;
                Ok(())
            }
            None => Err(value),
        }
    }

    /// Removes and returns the last element.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut v = courier_core::flat::Vec::<u8, 2>::try_from(&[7][..]).unwrap();
    /// assert_eq!(v.pop(), Some(7));
    /// assert_eq!(v.pop(), None);
    /// ```
    pub fn pop(&mut self) -> core::option::Option<T> {
        let value = *self.as_slice().last()?;
        let len = self.len() - 1;
        // Keep uncounted slots zeroed, so a popped value never travels in later messages.
        self.items[len] = MaybeUninit::zeroed();
        self.len = len as u32;
        Some(value)
    }

    /// Removes every element (and zeroes the slots).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut v = courier_core::flat::Vec::<u8, 2>::try_from(&[1, 2][..]).unwrap();
    /// v.clear();
    /// assert!(v.is_empty());
    /// ```
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// The elements.
    ///
    /// # Examples
    ///
    /// ```
    /// let v = courier_core::flat::Vec::<u8, 4>::try_from(&[1, 2][..]).unwrap();
    /// assert_eq!(v.as_slice(), &[1, 2]);
    /// ```
    #[must_use]
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `len()` is at most `N`, and the first `len` slots are initialised `T`s: `push`
        // writes a slot before counting it, and `from_slice` checks every counted element (the
        // fields are private; no other code sets `len`). `MaybeUninit<T>` has `T`'s layout.
        unsafe { core::slice::from_raw_parts(self.items.as_ptr().cast::<T>(), self.len()) }
    }

    /// The elements, mutably.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut v = courier_core::flat::Vec::<u8, 4>::try_from(&[1, 2][..]).unwrap();
    /// v.as_mut_slice()[0] = 9;
    /// assert_eq!(v.as_slice(), &[9, 2]);
    /// ```
    #[must_use]
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        let len = self.len();
        // SAFETY: as in `as_slice`; we borrow `self` mutably for the result's lifetime.
        unsafe { core::slice::from_raw_parts_mut(self.items.as_mut_ptr().cast::<T>(), len) }
    }
}

impl<T: IpcSafe + Copy, const N: usize> Default for Vec<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: IpcSafe + Copy, const N: usize> TryFrom<&[T]> for Vec<T, N> {
    type Error = CapacityError;
    fn try_from(items: &[T]) -> Result<Self, CapacityError> {
        if items.len() > N {
            return Err(CapacityError {
                needed: items.len(),
                capacity: N,
            });
        }
        let mut out = Self::new();
        for &item in items {
            // Cannot fail: the length was checked above.
            let _ = out.push(item);
        }
        Ok(out)
    }
}

impl<T: IpcSafe + Copy, const N: usize> Deref for Vec<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: IpcSafe + Copy, const N: usize> DerefMut for Vec<T, N> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

impl<T: IpcSafe + Copy + fmt::Debug, const N: usize> fmt::Debug for Vec<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<T: IpcSafe + Copy + PartialEq, const N: usize> PartialEq for Vec<T, N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: IpcSafe + Copy + Eq, const N: usize> Eq for Vec<T, N> {}

impl<T: IpcSafe + Copy + PartialEq, const N: usize> PartialEq<[T]> for Vec<T, N> {
    fn eq(&self, other: &[T]) -> bool {
        self.as_slice() == other
    }
}

// SAFETY: `Vec<T, N>` and `VecMirror<T::Mirror, N>` are `repr(C)` structs of a `u32` and an array
// of `MaybeUninit` of same-layout types, so their layouts match. Any bytes are valid for both;
// the safety invariant (len <= N, counted elements valid) is what `check` verifies, using
// zerocopy's validation of `T::Mirror` for each counted element. `zero_padding` writes only the
// gap after `len`, uncounted slots, padding inside counted elements, and the tail.
unsafe impl<T: IpcSafe + Copy, const N: usize> IpcSafe for Vec<T, N> {
    type Mirror = VecMirror<T::Mirror, N>;
    const SIGNATURE: u64 = SignatureHasher::new(signature::kind::VEC)
        .usize(N)
        .word(T::SIGNATURE)
        .usize(size_of::<Self>())
        .finish();
    // Uncounted slots are always initialised (zeroed by `new`, written whole by `push`).
    const HAS_PADDING: bool = T::HAS_PADDING || size_of::<Self>() != 4 + N * size_of::<T>();
    const NEEDS_CHECK: bool = true;

    fn check(mirror: &Self::Mirror, bytes: &[u8]) -> Result<(), FlatError> {
        let len = mirror.len as usize;
        let live = mirror
            .items
            .get(..len)
            .ok_or(FlatError::VecTooLong { len, capacity: N })?;
        let base = __private::address(mirror);
        for item in live {
            let item_bytes = __private::field_bytes(bytes, base, item)?;
            let item =
                T::Mirror::try_ref_from_bytes(item_bytes).map_err(|_| FlatError::InvalidValue)?;
            T::check(item, item_bytes)?;
        }
        Ok(())
    }

    fn zero_padding(&mut self) {
        let len = self.len();
        for item in self.as_mut_slice() {
            item.zero_padding();
        }
        let items = offset_of!(Self, items);
        let base = (self as *mut Self).cast::<u8>();
        // SAFETY: both ranges lie inside `*self` (which we borrow mutably): `4..items` is the gap
        // between `len` and `items`, then come the uncounted slots and the tail padding up to
        // `size_of::<Self>()`. None of them holds part of the value.
        unsafe {
            core::ptr::write_bytes(base.add(4), 0, items - 4);
            let used = items + len * size_of::<T>();
            core::ptr::write_bytes(base.add(used), 0, size_of::<Self>() - used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flat::Page;

    #[repr(C, align(4096))]
    struct Aligned([u8; 4096]);

    #[test]
    fn push_pop_and_capacity() {
        let mut v = Vec::<u64, 3>::new();
        for i in 0..3 {
            v.push(i).unwrap();
        }
        assert_eq!(v.push(9), Err(9));
        assert_eq!(&*v, &[0, 1, 2]);
        assert_eq!(v.pop(), Some(2));
        v.push(5).unwrap();
        assert_eq!(&*v, &[0, 1, 5]);
        assert!(Vec::<u8, 1>::try_from(&[1, 2][..]).is_err());
    }

    #[test]
    fn hostile_length_and_elements_are_errors() {
        let sig = Vec::<bool, 4>::SIGNATURE;
        let mut buf = Aligned([0; 4096]);
        buf.0[..4].copy_from_slice(&5u32.to_ne_bytes());
        assert_eq!(
            Page::<Vec<bool, 4>>::from_slice(&buf.0, sig).unwrap_err(),
            FlatError::VecTooLong {
                len: 5,
                capacity: 4
            }
        );
        buf.0[..4].copy_from_slice(&2u32.to_ne_bytes());
        buf.0[4] = 1;
        buf.0[5] = 2; // not a bool
        buf.0[6] = 9; // uncounted slot: ignored
        assert_eq!(
            Page::<Vec<bool, 4>>::from_slice(&buf.0, sig).unwrap_err(),
            FlatError::InvalidValue
        );
        buf.0[5] = 0;
        let v = Page::<Vec<bool, 4>>::from_slice(&buf.0, sig).unwrap();
        assert_eq!(v.as_slice(), &[true, false]);
    }

    #[test]
    fn as_bytes_zeroes_uncounted_slots() {
        let mut v = Vec::<u32, 4>::try_from(&[1, 2, 3][..]).unwrap();
        v.pop();
        let mut page = Page::new(v);
        let bytes = page.as_bytes();
        assert_eq!(&bytes[..4], &2u32.to_ne_bytes());
        assert_eq!(&bytes[12..], &[0u8; 4096 - 12][..]);
    }
}
