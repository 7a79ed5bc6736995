//! Shared segments: anonymous, sealed `memfd`s mapped by both processes.
//!
//! # Layout (version [`LAYOUT_VERSION`])
//!
//! ```text
//! offset  size  field
//!      0     8  magic    MAGIC, little-endian "CRSHMSEG"
//!      8     4  version  LAYOUT_VERSION
//!     12     4  ready    0 while the creator writes the header, READY once it is done
//!     16     8  size     the segment's size in bytes, header included
//!     24    40  reserved zero
//!     64   ...  payload
//! ```
//!
//! # Protocol
//!
//! ```text
//! creator (listener)                          opener (client)
//! memfd_create, ftruncate(size)
//! seal: no shrink, no grow, no more seals
//! mmap; write magic, version, size
//! ready.store(READY, Release)  ---fd over SCM_RIGHTS--->  fstat: size within limits
//!                                                          seals present
//!                                                          mmap
//!                                                          ready.load(Acquire), then
//!                                                          magic, version, size: each read once
//! ```
//!
//! **The opener trusts nothing in the segment: every header field is read exactly once into a
//! local and checked before the segment is used, and the size that bounds every access is the
//! one the kernel reports for the sealed file, never the one written in the header.** The seals
//! guarantee that size for good: the creator cannot shrink the file under the opener's mapping.
//!
//! Both processes may write any byte at any time, so the memory is only ever touched through
//! atomics (`&[AtomicU8]`), never through `&[u8]` or `&mut [u8]`.

use crate::error::{SegmentError, ShmError};
use crate::sync::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use crate::sys;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

/// The first eight bytes of every segment: "CRSHMSEG" read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"CRSHMSEG");

/// The layout version this build writes and accepts.
pub const LAYOUT_VERSION: u32 = 1;

/// The size of the header in bytes; the payload starts at this offset.
pub const HEADER_LEN: usize = 64;

/// The value of the ready flag once the header is complete.
const READY: u32 = 1;

/// The header at offset 0 of every segment. `#[repr(C)]`, pointer-free, only atomics.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    ready: AtomicU32,
    size: AtomicU64,
    reserved: [AtomicU64; 5],
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_LEN);

/// A shared segment mapped into this process.
///
/// The other process may write any of its bytes at any time, so the payload is exposed as
/// atomics ([`Segment::payload`]) or copied in and out ([`Segment::read_at`],
/// [`Segment::write_at`]). Dropping the segment unmaps it and closes its file; the memory is
/// freed by the kernel once the other side has done the same (or died).
pub struct Segment {
    ptr: NonNull<u8>,
    len: usize,
    /// The file, kept while it may be sent to a peer; `None` once closed (the mapping
    /// stays).
    fd: Option<OwnedFd>,
}

// SAFETY: `Segment` owns its mapping and file; the mapped memory is only accessed through
// atomics, which any thread may use concurrently.
unsafe impl Send for Segment {}
// SAFETY: as for `Send`: every access through `&Segment` is an atomic access.
unsafe impl Sync for Segment {}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("len", &self.len).finish()
    }
}

impl Segment {
    /// Creates, seals and maps a segment of `len` bytes (header included) and writes its
    /// header, ready flag last. The file descriptor is kept for sending to the peer.
    pub(crate) fn create(len: usize) -> Result<Segment, ShmError> {
        if len < HEADER_LEN {
            return Err(ShmError::InvalidConfig(
                "segment size is smaller than the 64-byte header",
            ));
        }
        let fd = sys::memfd(len as u64).map_err(ShmError::io("creating the memfd segment"))?;
        sys::seal_size(fd.as_fd()).map_err(ShmError::io("sealing the segment"))?;
        let ptr = sys::map_shared(fd.as_fd(), len).map_err(ShmError::io("mapping the segment"))?;
        let seg = Segment {
            ptr,
            len,
            fd: Some(fd),
        };
        let h = seg.header();
        h.magic.store(MAGIC, Ordering::Relaxed);
        h.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        h.size.store(len as u64, Ordering::Relaxed);
        // Release: pairs with the opener's Acquire load of `ready`, so an opener that sees
        // READY also sees the fields above (Relaxed here would let it read a stale header).
        h.ready.store(READY, Ordering::Release);
        Ok(seg)
    }

    /// Maps a segment received from a peer and checks it, trusting nothing in it: its size
    /// (within `HEADER_LEN..=max_len`), its seals, then its header's ready flag, magic,
    /// version and size.
    pub(crate) fn open(fd: OwnedFd, max_len: usize) -> Result<Segment, ShmError> {
        // What the descriptor is first (a FIFO, a socket, a file on disk or on hugetlbfs is
        // named as such), then the seals: once they are on, the size read below holds for
        // good (read before them, a peer could shrink the file between the two and make our
        // mapping fault). Neither check reads the size.
        if let Some(what) = sys::not_tmpfs_file(fd.as_fd()) {
            return Err(SegmentError::NotMemfd(what).into());
        }
        if !sys::has_size_seals(fd.as_fd()) {
            return Err(SegmentError::NotSealed.into());
        }
        let actual =
            sys::file_size(fd.as_fd()).map_err(ShmError::io("reading the segment size"))?;
        let (min, max) = (HEADER_LEN as u64, max_len as u64);
        if actual < min || actual > max {
            return Err(SegmentError::BadSize {
                len: actual,
                min,
                max,
            }
            .into());
        }
        // `actual <= max_len`, a usize: the cast is lossless.
        let len = actual as usize;
        let ptr = sys::map_shared(fd.as_fd(), len).map_err(ShmError::io("mapping the segment"))?;
        // From here on `Drop` unmaps on every error path.
        let seg = Segment {
            ptr,
            len,
            fd: Some(fd),
        };
        let h = seg.header();
        // Acquire: pairs with the creator's Release store of READY; read first so the other
        // fields are read after it. Each field is read once, into a local.
        let ready = h.ready.load(Ordering::Acquire);
        let magic = h.magic.load(Ordering::Relaxed);
        let version = h.version.load(Ordering::Relaxed);
        let size = h.size.load(Ordering::Relaxed);
        if magic != MAGIC {
            return Err(SegmentError::BadMagic(magic).into());
        }
        if version != LAYOUT_VERSION {
            return Err(SegmentError::BadVersion {
                found: version,
                expected: LAYOUT_VERSION,
            }
            .into());
        }
        if size != actual {
            return Err(SegmentError::SizeMismatch {
                header: size,
                actual,
            }
            .into());
        }
        if ready != READY {
            return Err(SegmentError::NotReady.into());
        }
        Ok(seg)
    }

    /// The file descriptor, for passing to the peer.
    ///
    /// # Panics
    ///
    /// If [`Segment::close_fd`] was called: only segments this process keeps to itself are
    /// closed.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd
            .as_ref()
            .expect("the descriptor of a segment that is sent is never closed")
            .as_fd()
    }

    /// The file descriptor, unless [`Segment::close_fd`] closed it.
    pub(crate) fn try_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.fd.as_ref().map(|fd| fd.as_fd())
    }

    /// Closes the file descriptor; the mapping stays until the segment is dropped. A server
    /// keeps no descriptor per connection or lent buffer, so its descriptor limit bounds
    /// neither.
    pub(crate) fn close_fd(&mut self) {
        self.fd = None;
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEADER_LEN bytes (checked by `create` and `open`),
        // page-aligned (so aligned for `Header`), lives as long as `self`, and `Header` is
        // only atomics, valid for any bit pattern and safe to share with the other process.
        unsafe { self.ptr.cast::<Header>().as_ref() }
    }

    /// The segment's size in bytes, header included (the size of the sealed file, not a
    /// value read from shared memory).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: a segment holds at least its header. (For clippy's `len` convention.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The start of the payload, for the channel's raw views of its blocks. Valid for
    /// `len() - HEADER_LEN` bytes while `self` lives.
    #[inline]
    pub(crate) fn payload_ptr(&self) -> *mut u8 {
        // SAFETY: HEADER_LEN <= len (checked by `create` and `open`): still inside the mapping.
        unsafe { self.ptr.as_ptr().add(HEADER_LEN) }
    }

    /// The `u32` at payload offset `off`, shared with the peer. Offsets come from the
    /// layouts of this crate (never straight from shared memory), so a misaligned or
    /// out-of-range one is a bug here: it panics rather than touch memory outside the payload.
    #[inline]
    pub(crate) fn u32_at(&self, off: usize) -> &AtomicU32 {
        self.check_word(off, 4);
        // SAFETY: `check_word` proved `off..off + 4` is inside the payload and `off` 4-aligned
        // (the payload starts 64-aligned in a page-aligned mapping that lives as long as
        // `self`); `AtomicU32` is valid for any bits and may be accessed concurrently by the
        // other process.
        unsafe { &*self.payload_ptr().add(off).cast::<AtomicU32>() }
    }

    /// The `u64` at payload offset `off`, as [`Segment::u32_at`].
    #[inline]
    pub(crate) fn u64_at(&self, off: usize) -> &AtomicU64 {
        self.check_word(off, 8);
        // SAFETY: as in `u32_at`, for 8 bytes, 8-aligned.
        unsafe { &*self.payload_ptr().add(off).cast::<AtomicU64>() }
    }

    #[inline]
    fn check_word(&self, off: usize, size: usize) {
        assert!(
            off % size == 0
                && off
                    .checked_add(size)
                    .is_some_and(|end| end <= self.len - HEADER_LEN),
            "word at payload offset {off} (size {size}) outside a payload of {} bytes",
            self.len - HEADER_LEN
        );
    }

    /// The payload: every byte after the header, shared with the peer.
    pub fn payload(&self) -> &[AtomicU8] {
        // SAFETY: bytes HEADER_LEN..len are inside the mapping, which lives as long as
        // `self`; `AtomicU8` has the size and alignment of `u8`, is valid for any byte, and
        // makes concurrent access by the other process a non-racy atomic access.
        unsafe {
            std::slice::from_raw_parts(
                self.ptr.as_ptr().add(HEADER_LEN).cast::<AtomicU8>(),
                self.len - HEADER_LEN,
            )
        }
    }

    fn range(&self, offset: usize, len: usize) -> Result<&[AtomicU8], ShmError> {
        let payload = self.payload();
        offset
            .checked_add(len)
            .and_then(|end| payload.get(offset..end))
            .ok_or(ShmError::OutOfBounds {
                offset,
                len,
                payload_len: payload.len(),
            })
    }

    /// Copies `buf.len()` payload bytes starting at `offset` into `buf`.
    ///
    /// # Errors
    ///
    /// [`ShmError::OutOfBounds`] if the range does not fit in the payload.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<(), ShmError> {
        let src = self.range(offset, buf.len())?;
        for (b, a) in buf.iter_mut().zip(src) {
            *b = a.load(Ordering::Relaxed);
        }
        Ok(())
    }

    /// Copies `data` into the payload starting at `offset`.
    ///
    /// # Errors
    ///
    /// [`ShmError::OutOfBounds`] if the range does not fit in the payload.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<(), ShmError> {
        for (b, a) in data.iter().zip(self.range(offset, data.len())?) {
            a.store(*b, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `(ptr, len)` is the mapping this segment made; no reference into it outlives
        // `&self` borrows, which have ended.
        unsafe { sys::unmap(self.ptr, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sealed memfd of `len` bytes whose header is written by `write`, as a hostile or
    /// broken creator would.
    fn crafted(len: usize, seal: bool, write: impl FnOnce(&Header)) -> OwnedFd {
        let fd = sys::memfd(len as u64).unwrap();
        if seal {
            sys::seal_size(fd.as_fd()).unwrap();
        }
        let ptr = sys::map_shared(fd.as_fd(), len).unwrap();
        // SAFETY: the mapping is `len >= HEADER_LEN` bytes and page-aligned.
        write(unsafe { ptr.cast::<Header>().as_ref() });
        // SAFETY: our own mapping; the reference above is gone.
        unsafe { sys::unmap(ptr, len) };
        fd
    }

    fn good(h: &Header, len: usize) {
        h.magic.store(MAGIC, Ordering::Relaxed);
        h.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        h.size.store(len as u64, Ordering::Relaxed);
        h.ready.store(READY, Ordering::Release);
    }

    fn open_err(fd: OwnedFd) -> SegmentError {
        match Segment::open(fd, 1 << 20) {
            Err(ShmError::BadSegment(e)) => e,
            other => panic!("expected a segment error, got {other:?}"),
        }
    }

    #[test]
    fn create_then_open_shares_memory() {
        let a = Segment::create(4096).unwrap();
        let fd = a.fd().try_clone_to_owned().unwrap();
        let b = Segment::open(fd, 1 << 20).unwrap();
        assert_eq!(b.len(), 4096);
        assert_eq!(b.payload().len(), 4096 - HEADER_LEN);
        a.write_at(10, b"hello").unwrap();
        let mut buf = [0; 5];
        b.read_at(10, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        assert!(matches!(
            b.read_at(4096 - HEADER_LEN - 2, &mut buf),
            Err(ShmError::OutOfBounds { .. })
        ));
        assert!(matches!(
            b.write_at(usize::MAX, b"x"),
            Err(ShmError::OutOfBounds { .. })
        ));
    }

    #[test]
    fn too_small_config_is_refused() {
        assert!(matches!(
            Segment::create(HEADER_LEN - 1),
            Err(ShmError::InvalidConfig(_))
        ));
    }

    #[test]
    fn bad_magic() {
        let fd = crafted(4096, true, |h| {
            good(h, 4096);
            h.magic.store(0xdead_beef, Ordering::Relaxed);
        });
        assert_eq!(open_err(fd), SegmentError::BadMagic(0xdead_beef));
    }

    #[test]
    fn bad_version() {
        let fd = crafted(4096, true, |h| {
            good(h, 4096);
            h.version.store(LAYOUT_VERSION + 1, Ordering::Relaxed);
        });
        assert_eq!(
            open_err(fd),
            SegmentError::BadVersion {
                found: LAYOUT_VERSION + 1,
                expected: LAYOUT_VERSION
            }
        );
    }

    #[test]
    fn not_ready() {
        let fd = crafted(4096, true, |h| {
            good(h, 4096);
            h.ready.store(0, Ordering::Relaxed);
        });
        assert_eq!(open_err(fd), SegmentError::NotReady);
    }

    #[test]
    fn header_size_lies() {
        let fd = crafted(4096, true, |h| good(h, 1 << 30));
        assert_eq!(
            open_err(fd),
            SegmentError::SizeMismatch {
                header: 1 << 30,
                actual: 4096
            }
        );
    }

    #[test]
    fn unsealed_segment_is_refused() {
        let fd = crafted(4096, false, |h| good(h, 4096));
        assert_eq!(open_err(fd), SegmentError::NotSealed);
    }

    #[test]
    fn sizes_outside_limits_are_refused() {
        let fd = sys::memfd(HEADER_LEN as u64 - 1).unwrap();
        sys::seal_size(fd.as_fd()).unwrap();
        assert!(matches!(
            open_err(fd),
            SegmentError::BadSize { len: 63, .. }
        ));
        let fd = crafted(2 << 20, true, |h| good(h, 2 << 20));
        assert!(matches!(open_err(fd), SegmentError::BadSize { .. }));
    }

    /// A peer's descriptor that is not a sealed memfd on tmpfs is refused with a clear error
    /// before anything is mapped: never a SIGBUS, a hang or a mapping past the end of a file.
    #[test]
    fn descriptors_that_are_not_sealed_tmpfs_memfds_are_refused() {
        use std::os::fd::OwnedFd;
        // An unsealed memfd whose header claims 1 MiB, shrunk to a page: refused on its seals
        // before its size is even read.
        let fd = crafted(1 << 20, false, |h| good(h, 1 << 20));
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        assert_eq!(open_err(fd), SegmentError::NotSealed);
        // A FIFO (opened read-write, non-blocking: opening it never waits).
        let dir = std::env::temp_dir().join(format!("courier-seg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let f: OwnedFd = rustix::fs::open(
            &fifo,
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NONBLOCK,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        assert_eq!(open_err(f), SegmentError::NotMemfd("a FIFO"));
        // A socket.
        let (a, _b) = sys::socketpair().unwrap();
        assert_eq!(open_err(a), SegmentError::NotMemfd("a socket"));
        // A plain file (in the build directory, on disk).
        let path = std::env::current_exe().unwrap().with_extension("seg-test");
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let f: OwnedFd = std::fs::File::open(&path).unwrap().into();
        match open_err(f) {
            // Where the build directory is itself on tmpfs, the file is unsealed instead.
            SegmentError::NotMemfd(what) => assert!(what.contains("outside tmpfs"), "{what}"),
            e => assert_eq!(e, SegmentError::NotSealed),
        }
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir_all(&dir);
        // A sealed huge-page memfd, where the kernel has huge pages to give.
        match rustix::fs::memfd_create(
            "courier-huge",
            rustix::fs::MemfdFlags::HUGETLB | rustix::fs::MemfdFlags::ALLOW_SEALING,
        ) {
            Ok(fd) => {
                if rustix::fs::ftruncate(&fd, 2 << 20).is_ok() {
                    let _ = sys::seal_size(fd.as_fd());
                    assert_eq!(
                        open_err(fd),
                        SegmentError::NotMemfd("a huge-page memfd (hugetlbfs)")
                    );
                } else {
                    eprintln!("skipped the huge-page case: no huge pages to size a memfd");
                }
            }
            Err(e) => eprintln!("skipped the huge-page case: memfd_create(MFD_HUGETLB): {e}"),
        }
    }

    /// The size of an unsealed file is never read: one larger than any segment we accept is
    /// refused for its missing seals, not for its size (which a peer could change between a
    /// size check and the seal check).
    #[test]
    fn the_size_of_an_unsealed_file_is_never_read() {
        let fd = crafted(4 << 20, false, |h| good(h, 4 << 20));
        assert_eq!(open_err(fd), SegmentError::NotSealed);
        let fd = sys::memfd(HEADER_LEN as u64 - 1).unwrap();
        assert_eq!(open_err(fd), SegmentError::NotSealed);
    }
}
