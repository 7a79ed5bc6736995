//! Views of bytes in shared memory: [`ShmView`] (read by copy) and [`ShmViewMut`] (written in
//! place). See [`ShmView`] for why and how.

use courier_core::flat::{self, FlatError, IpcSafe};
use std::marker::PhantomData;
use std::mem::{size_of, MaybeUninit};
use std::ops::{Bound, RangeBounds};

use crate::error::ShmError;

/// A read-only view of `len` bytes in memory shared with another process: every read is a
/// copy into this process's memory. It borrows what owns the mapping (`'a`), so it cannot
/// outlive it.
///
/// A view held by something that gives its bytes back when it drops (a received
/// [`ShmMessage`](crate::ShmMessage): its block goes back to the sender, or, for a message
/// copied out of its ring entry, its cell back to the channel) is lent out only by
/// reference, and what is cut from it borrows it ([`ShmView::slice`]): no view of those
/// bytes outlives their holder. `ShmView` is not `Clone` for that reason, and nothing in
/// this crate returns a `ShmView<'a>` from a `&ShmView<'a>`.
///
/// # Why not `&[u8]`
///
/// Memory shared with another process can change at any moment, whatever this process
/// believes: a hostile or buggy peer may write a lent buffer, a message block or a call slot
/// while we look at it. A `&[u8]` (or `&mut [u8]`, or `&T`) over such bytes promises the
/// compiler that they do not change while the reference lives, so it may read a byte twice
/// and see two values, and a bounds check made on the first read would not protect the
/// second. That is undefined behaviour in safe code, and courier never creates such a
/// reference behind a safe API.
///
/// A view instead holds a raw pointer and a length, and offers:
///
/// - **bulk copies out** ([`ShmView::copy_to_slice`], [`ShmView::read_at`],
///   [`ShmView::to_vec`]) and **checked typed reads** of flat values ([`ShmView::read`]):
///   the bytes land in private memory first (one `memcpy`), and only the copy is checked and
///   used, so what was checked is what is used;
/// - **writes in place** ([`ShmViewMut::copy_from_slice`], [`ShmViewMut::write_at`],
///   [`ShmViewMut::fill`], [`ShmViewMut::write`]): straight into the shared pages, no copy;
/// - **raw access** for code that must work in place: [`ShmView::as_ptr`],
///   [`ShmViewMut::as_mut_ptr`], and, behind `unsafe`, a `&[u8]` / `&mut [u8]`
///   ([`ShmView::as_slice`], [`ShmViewMut::as_mut_slice`]) whose caller vouches that no other
///   process writes the bytes while the reference lives.
///
/// A copy out of shared memory is a plain `memcpy` from a raw pointer into memory this process
/// owns: the compiler assumes nothing about the source (no reference to it exists), and a
/// byte a peer changes during the copy only changes what was copied, which is then checked
/// before use like any input from outside.
///
/// # Examples
///
/// ```no_run
/// use courier_shm::ShmBuf;
///
/// let mut buf = ShmBuf::new(4096)?;
/// buf.view_mut().write_at(0, b"hello")?;       // in place
/// buf.view_mut().write(8, 42u64)?;              // a flat value, in place
/// let mut head = [0u8; 5];
/// buf.view().read_at(0, &mut head)?;           // a copy out
/// assert_eq!(&head, b"hello");
/// assert_eq!(buf.view().read::<u64>(8)?, 42);  // copied, then checked
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ShmView<'a> {
    ptr: *const u8,
    len: usize,
    _mapping: PhantomData<&'a [u8]>,
}

/// A writable view of `len` bytes in memory shared with another process: everything
/// [`ShmView`] offers (through `Deref`), and writes in place.
pub struct ShmViewMut<'a> {
    view: ShmView<'a>,
    _mapping: PhantomData<&'a mut [u8]>,
}

// SAFETY: a view is a pointer and a length; every access through it is a copy through a raw
// pointer (never a reference), which any thread may make while the mapping lives (`'a`).
unsafe impl Send for ShmView<'_> {}
// SAFETY: as for `Send`: `&ShmView` only copies bytes out.
unsafe impl Sync for ShmView<'_> {}
// SAFETY: as for `ShmView`; writes are raw copies into the mapping, racy only with the
// other process, whose writes the protocol already treats as untrusted.
unsafe impl Send for ShmViewMut<'_> {}
// SAFETY: `&ShmViewMut` gives only the read side (`Deref` to `ShmView`).
unsafe impl Sync for ShmViewMut<'_> {}

impl std::fmt::Debug for ShmView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmView").field("len", &self.len).finish()
    }
}

impl std::fmt::Debug for ShmViewMut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmViewMut")
            .field("len", &self.view.len)
            .finish()
    }
}

/// `range` of a sequence of `len` items as `start..end`, or `None` if it does not fit.
fn bounds(range: impl RangeBounds<usize>, len: usize) -> Option<(usize, usize)> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1)?,
        Bound::Excluded(&e) => e,
        Bound::Unbounded => len,
    };
    (start <= end && end <= len).then_some((start, end))
}

impl<'a> ShmView<'a> {
    /// A view of `len` bytes at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr..ptr + len` lies inside one mapping that stays mapped for `'a`, and nothing in
    /// this process holds a reference (`&`/`&mut`) to those bytes during `'a`. Or: the
    /// bytes are this process's own (an inline message's cell), valid and written by
    /// nothing else for as long as the view's holder lives, which lends the view out only
    /// by reference (see [`ShmView`]).
    pub(crate) unsafe fn new(ptr: *const u8, len: usize) -> ShmView<'a> {
        ShmView {
            ptr,
            len,
            _mapping: PhantomData,
        }
    }

    /// A view of bytes this process owns alone (decoding a value already copied out of
    /// shared memory, or received from the network, goes through the same code as one read
    /// in place).
    pub fn from_private(bytes: &'a [u8]) -> ShmView<'a> {
        // SAFETY: `bytes` is valid for `'a`; the view only reads, as the shared borrow does.
        unsafe { ShmView::new(bytes.as_ptr(), bytes.len()) }
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first byte, for raw access (see [`ShmView`]).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// The byte at `index`, read once, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<u8> {
        // SAFETY: `index < len`: inside the mapping (`new`'s contract); a byte read through
        // a raw pointer creates no reference.
        (index < self.len).then(|| unsafe { self.ptr.add(index).read_volatile() })
    }

    /// The bytes of `range` as a view of their own, or `None` if it does not fit. The new view
    /// borrows this one, so it cannot outlive what holds the bytes (a received message gives
    /// them back when it drops).
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Option<ShmView<'_>> {
        let (start, end) = bounds(range, self.len)?;
        // SAFETY: `start..end` lies inside this view, hence inside the mapping, and the new
        // view borrows this one, so it lives no longer than this view does.
        Some(unsafe { ShmView::new(self.ptr.add(start), end - start) })
    }

    /// Copies every byte into `dst`, which must be exactly as long (as
    /// `<[u8]>::copy_from_slice`).
    ///
    /// # Panics
    ///
    /// If `dst.len() != self.len()`.
    pub fn copy_to_slice(&self, dst: &mut [u8]) {
        assert_eq!(
            dst.len(),
            self.len,
            "ShmView::copy_to_slice: destination length differs from the view's"
        );
        // SAFETY: the source is `len` bytes of the mapping (`new`'s contract); the
        // destination is private memory of `len` bytes (a `&mut` cannot alias the shared
        // mapping, to which no reference exists); a racy copy only changes what we copy.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr, dst.as_mut_ptr(), self.len) }
    }

    /// Copies `dst.len()` bytes starting at `offset` into `dst`.
    ///
    /// # Errors
    ///
    /// [`ShmError::OutOfBounds`] if the range does not fit in the view.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<(), ShmError> {
        let end = offset.checked_add(dst.len());
        match end.and_then(|end| self.slice(offset..end)) {
            Some(src) => {
                src.copy_to_slice(dst);
                Ok(())
            }
            None => Err(ShmError::OutOfBounds {
                offset,
                len: dst.len(),
                payload_len: self.len,
            }),
        }
    }

    /// A copy of every byte.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        self.copy_to_slice(&mut v);
        v
    }

    /// The flat value at `offset` (any alignment): its bytes are copied out, then checked
    /// (`bool`, `char` and enum tags, lengths, UTF-8), so a peer that writes them meanwhile
    /// cannot change what was checked.
    ///
    /// # Errors
    ///
    /// [`FlatError::TooShort`] if the value does not fit in the view from `offset`;
    /// [`FlatError::InvalidValue`] or a content error if the bytes are not a `T`.
    pub fn read<T: IpcSafe>(&self, offset: usize) -> Result<T, FlatError> {
        let n = size_of::<T>();
        let Some(src) = offset
            .checked_add(n)
            .and_then(|end| self.slice(offset..end))
        else {
            return Err(FlatError::TooShort {
                needed: n,
                found: self.len.saturating_sub(offset),
            });
        };
        let mut copy = MaybeUninit::<T>::uninit();
        // SAFETY: `src` is `n` bytes of the mapping; `copy` is `n` bytes of our stack.
        unsafe { std::ptr::copy_nonoverlapping(src.ptr, copy.as_mut_ptr().cast::<u8>(), n) };
        // SAFETY: the copy above initialised all `n` bytes of `copy`, which is ours alone.
        let bytes = unsafe { std::slice::from_raw_parts(copy.as_ptr().cast::<u8>(), n) };
        flat::read_value(bytes)
    }

    /// The bytes as a slice, in place.
    ///
    /// # Safety
    ///
    /// **The trust assumption:** no other process (and no other view in this one) writes
    /// these bytes while the returned reference lives. courier's protocols do not give that
    /// guarantee against a hostile peer: use this only when the peer is trusted (the same
    /// program, say) or the pages are known to be private again.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the bytes lie in the mapping for `'a` (`new`); the caller guarantees that
        // nothing writes them while the slice lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<'a> ShmViewMut<'a> {
    /// A writable view of `len` bytes at `ptr`.
    ///
    /// # Safety
    ///
    /// As [`ShmView::new`], and this process may write the bytes during `'a`.
    pub(crate) unsafe fn new(ptr: *mut u8, len: usize) -> ShmViewMut<'a> {
        ShmViewMut {
            // SAFETY: the caller's contract includes `ShmView::new`'s.
            view: unsafe { ShmView::new(ptr, len) },
            _mapping: PhantomData,
        }
    }

    /// A writable view of bytes this process owns alone (encoding a value for the network
    /// goes through the same code as one written into a slot).
    pub fn from_private(bytes: &'a mut [u8]) -> ShmViewMut<'a> {
        // SAFETY: `bytes` is valid and ours alone for `'a`; the view borrows it mutably.
        unsafe { ShmViewMut::new(bytes.as_mut_ptr(), bytes.len()) }
    }

    /// The first byte, for raw access (see [`ShmView`]).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.view.ptr.cast_mut()
    }

    /// The bytes of `range` as a writable view of their own, or `None` if it does not fit.
    pub fn slice_mut(&mut self, range: impl RangeBounds<usize>) -> Option<ShmViewMut<'_>> {
        let (start, end) = bounds(range, self.view.len)?;
        // SAFETY: `start..end` lies inside this view; the new view borrows `self` mutably.
        Some(unsafe { ShmViewMut::new(self.as_mut_ptr().add(start), end - start) })
    }

    /// Writes the byte at `index`.
    ///
    /// # Panics
    ///
    /// If `index >= self.len()`.
    pub fn set(&mut self, index: usize, byte: u8) {
        assert!(index < self.view.len, "ShmViewMut::set: index out of range");
        // SAFETY: `index < len`: inside the mapping, writable by us (`new`).
        unsafe { self.as_mut_ptr().add(index).write_volatile(byte) }
    }

    /// Copies `src` over every byte, which must be exactly as many (as
    /// `<[u8]>::copy_from_slice`).
    ///
    /// # Panics
    ///
    /// If `src.len() != self.len()`.
    pub fn copy_from_slice(&mut self, src: &[u8]) {
        assert_eq!(
            src.len(),
            self.view.len,
            "ShmViewMut::copy_from_slice: source length differs from the view's"
        );
        // SAFETY: the destination is `len` writable bytes of the mapping (`new`); the source
        // is private memory, which cannot overlap it (no reference to the mapping exists).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.as_mut_ptr(), src.len()) }
    }

    /// Copies every byte of `src` (another view, of this mapping or another) over every byte
    /// of this one, which must be exactly as long: shared memory to shared memory in one
    /// `memmove`, with no private copy in between (an echo, say).
    ///
    /// # Panics
    ///
    /// If `src.len() != self.len()`.
    pub fn copy_from_view(&mut self, src: &ShmView<'_>) {
        assert_eq!(
            src.len, self.view.len,
            "ShmViewMut::copy_from_view: source length differs from the view's"
        );
        // SAFETY: the source is `len` readable bytes of a mapping and the destination `len`
        // writable bytes of one (both views' contracts); no reference to either exists, and
        // `ptr::copy` allows them to overlap (two views of the same bytes).
        unsafe { std::ptr::copy(src.ptr, self.as_mut_ptr(), src.len) }
    }

    /// Copies `src` into the bytes starting at `offset`.
    ///
    /// # Errors
    ///
    /// [`ShmError::OutOfBounds`] if the range does not fit in the view.
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> Result<(), ShmError> {
        let len = self.view.len;
        let end = offset.checked_add(src.len());
        match end.and_then(|end| self.slice_mut(offset..end)) {
            Some(mut dst) => {
                dst.copy_from_slice(src);
                Ok(())
            }
            None => Err(ShmError::OutOfBounds {
                offset,
                len: src.len(),
                payload_len: len,
            }),
        }
    }

    /// Sets every byte to `byte`.
    pub fn fill(&mut self, byte: u8) {
        // SAFETY: `len` writable bytes of the mapping (`new`).
        unsafe { std::ptr::write_bytes(self.as_mut_ptr(), byte, self.view.len) }
    }

    /// Writes the flat value `value` at `offset` (any alignment), padding zeroed; returns
    /// the number of bytes written.
    ///
    /// # Errors
    ///
    /// [`FlatError::TooShort`] if it does not fit in the view from `offset`.
    pub fn write<T: IpcSafe>(&mut self, offset: usize, value: T) -> Result<usize, FlatError> {
        self.write_ref(offset, &value)
    }

    /// [`ShmViewMut::write`] of a borrowed value, which stays the caller's.
    ///
    /// # Errors
    ///
    /// As [`ShmViewMut::write`].
    pub fn write_ref<T: IpcSafe>(&mut self, offset: usize, value: &T) -> Result<usize, FlatError> {
        let n = size_of::<T>();
        let found = self.view.len.saturating_sub(offset);
        let Some(mut dst) = offset
            .checked_add(n)
            .and_then(|end| self.slice_mut(offset..end))
        else {
            return Err(FlatError::TooShort { needed: n, found });
        };
        let mut copy = MaybeUninit::<T>::uninit();
        // SAFETY: `copy` is `n` bytes of our stack; `write_value` fills every one of them
        // (padding zeroed) before anything reads it.
        let out = unsafe { std::slice::from_raw_parts_mut(copy.as_mut_ptr().cast::<u8>(), n) };
        flat::write_ref(value, out)?;
        dst.copy_from_slice(out);
        Ok(n)
    }

    /// The bytes as a mutable slice, in place.
    ///
    /// # Safety
    ///
    /// **The trust assumption:** no other process reads or writes these bytes while the
    /// returned reference lives (see [`ShmView::as_slice`]).
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: writable bytes of the mapping (`new`); the caller guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr(), self.view.len) }
    }
}

impl<'a> std::ops::Deref for ShmViewMut<'a> {
    type Target = ShmView<'a>;

    fn deref(&self) -> &ShmView<'a> {
        &self.view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_view(len: usize, f: impl FnOnce(ShmViewMut<'_>)) {
        let mut backing = vec![0u8; len];
        // SAFETY: private memory standing in for a mapping; no reference to it is used while
        // the view lives.
        f(unsafe { ShmViewMut::new(backing.as_mut_ptr(), len) });
    }

    #[test]
    fn copies_in_and_out() {
        with_view(64, |mut v| {
            v.write_at(3, b"abc").unwrap();
            let mut out = [0; 3];
            v.read_at(3, &mut out).unwrap();
            assert_eq!(&out, b"abc");
            assert_eq!(v.get(4), Some(b'b'));
            assert_eq!(v.get(64), None);
            v.set(63, 9);
            assert_eq!(v.to_vec()[63], 9);
            assert!(matches!(
                v.read_at(62, &mut out),
                Err(ShmError::OutOfBounds { offset: 62, .. })
            ));
            assert!(v.write_at(usize::MAX, b"x").is_err());
            v.fill(7);
            assert!(v.to_vec().iter().all(|&b| b == 7));
            v.write_at(3, b"abc").unwrap();
            let mut other = vec![0u8; 4];
            {
                // SAFETY: private memory standing in for a second mapping, used only by the
                // view while it lives.
                let mut w = unsafe { ShmViewMut::new(other.as_mut_ptr(), 4) };
                w.copy_from_view(&v.slice(3..7).unwrap());
                assert_eq!(w.to_vec(), [b'a', b'b', b'c', 7]);
            }
            assert_eq!(other, [b'a', b'b', b'c', 7]);
            assert_eq!(v.slice(60..).unwrap().len(), 4);
            assert!(v.slice(60..65).is_none());
            assert!(v.slice(usize::MAX..).is_none());
        });
    }

    #[test]
    fn typed_reads_are_checked() {
        with_view(16, |mut v| {
            assert_eq!(v.write(1, 0xdead_beef_u32), Ok(4));
            assert_eq!(v.read::<u32>(1), Ok(0xdead_beef));
            v.set(0, 2);
            assert_eq!(v.read::<bool>(0), Err(FlatError::InvalidValue));
            assert!(matches!(
                v.read::<u64>(12),
                Err(FlatError::TooShort {
                    needed: 8,
                    found: 4
                })
            ));
            assert!(v.write(usize::MAX, 1u8).is_err());
        });
    }
}
