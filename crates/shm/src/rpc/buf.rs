//! [`ShmBuf`]: a caller's buffer in shared memory, for `lend` and `lend_mut`.

use super::LEND_OFFSET;
use crate::error::ShmError;
use crate::segment::{Segment, HEADER_LEN};
use crate::view::{ShmView, ShmViewMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// The largest buffer (1 GiB).
const MAX_LEN: usize = 1 << 30;

/// A connection whose server was given a buffer's descriptor (the client's connection): told
/// when the buffer is dropped or detached, so that its server unmaps it. Defined here so that
/// this file needs nothing of the client.
pub(crate) trait BufferHolder: Send + Sync {
    /// Buffer `id` is gone: tell the server to forget (unmap) it.
    fn forget_buffer(self: Arc<Self>, id: u64);
}

/// A byte buffer in shared memory (a sealed memfd), page-aligned and zero-filled when made,
/// that a [`Client`](crate::Client) lends to a server without copying it:
/// [`lend`](crate::Client::lend) lets the server read it in place,
/// [`lend_mut`](crate::Client::lend_mut) lets it write it in place.
///
/// Make one per purpose and reuse it: the first lend to a server maps it there, every later
/// lend passes only an id. Dropping it tells each server that mapped it to unmap it.
///
/// ```no_run
/// use courier_shm::{Client, ShmBuf};
/// use std::time::Duration;
///
/// let client: Client<u32, u64, u32> = Client::connect("storage", Duration::from_secs(5))?;
/// let mut block = ShmBuf::new(16 << 20)?;
/// block.view_mut().write_at(0, b"hello")?;
/// let written = client.lend_mut(7, &mut block).expect("call"); // the server fills it
/// println!("server wrote {written} bytes; first byte {:?}", block.view().get(0));
/// # Ok::<(), courier_shm::ShmError>(())
/// ```
pub struct ShmBuf {
    seg: Segment,
    len: usize,
    id: u64,
    /// The connections that mapped this buffer (told to unmap it on drop or detach).
    pub(crate) lent_to: Mutex<Vec<Weak<dyn BufferHolder>>>,
    /// A timed-out lend left these pages with a server and no fresh ones could be had.
    poisoned: bool,
}

impl std::fmt::Debug for ShmBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmBuf")
            .field("len", &self.len)
            .field("id", &self.id)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl ShmBuf {
    /// A zero-filled buffer of `len` bytes (1 byte to 1 GiB). Its memory is taken from the
    /// system page by page as it is first touched.
    ///
    /// # Errors
    ///
    /// [`ShmError::InvalidConfig`] for a length of 0 or above 1 GiB; [`ShmError::Io`] if the
    /// memfd cannot be made or mapped.
    pub fn new(len: usize) -> Result<ShmBuf, ShmError> {
        if len == 0 || len > MAX_LEN {
            return Err(ShmError::InvalidConfig("a ShmBuf holds 1 byte to 1 GiB"));
        }
        let pages = len.div_ceil(4096) * 4096;
        Ok(ShmBuf::over(
            Segment::create(HEADER_LEN + LEND_OFFSET + pages)?,
            len,
        ))
    }

    /// A buffer of the same pages as `seg` (a lent buffer this server received, its
    /// descriptor kept: `ServerConfig::forwarding`), mapped again in this process, to lend
    /// them on without copying. Its length is the whole buffer's.
    pub(crate) fn sharing(seg: &Segment) -> Result<ShmBuf, ShmError> {
        let fd = seg
            .try_fd()
            .ok_or(ShmError::InvalidConfig(
                "forwarding a lend needs a server bound with ServerConfig::forwarding",
            ))?
            .try_clone_to_owned()
            .map_err(ShmError::io("duplicating a lent buffer's descriptor"))?;
        let seg = Segment::open(fd, seg.len())?;
        let len = seg.len() - HEADER_LEN - LEND_OFFSET;
        Ok(ShmBuf::over(seg, len))
    }

    /// A buffer of `len` bytes over `seg`, under a new id, lent to nobody yet.
    fn over(seg: Segment, len: usize) -> ShmBuf {
        ShmBuf {
            seg,
            len,
            id: next_id(),
            lent_to: Mutex::new(Vec::new()),
            poisoned: false,
        }
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false` (a buffer holds at least one byte).
    pub fn is_empty(&self) -> bool {
        false
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }

    fn ptr(&self) -> *mut u8 {
        // SAFETY: the segment holds HEADER_LEN + LEND_OFFSET + len bytes or more.
        unsafe { self.seg.payload_ptr().add(LEND_OFFSET) }
    }

    /// The bytes, to copy out or read flat values from ([`ShmView`]).
    ///
    /// A view rather than `&[u8]`: once the buffer was lent, the server that mapped it can
    /// write its pages at any time (a hostile one even after the call), so no reference to
    /// them is ever handed out.
    pub fn view(&self) -> ShmView<'_> {
        // SAFETY: `ptr..ptr+len` is inside our mapping, which lives as long as `self`.
        unsafe { ShmView::new(self.ptr(), self.len) }
    }

    /// The bytes, to write in place ([`ShmViewMut`]).
    pub fn view_mut(&mut self) -> ShmViewMut<'_> {
        // SAFETY: as in `view`; `&mut self` keeps this process's other views away.
        unsafe { ShmViewMut::new(self.ptr(), self.len) }
    }

    /// Whether a timed-out lend ([`Client::lend_timeout`](crate::Client::lend_timeout),
    /// [`Client::lend_mut_timeout`](crate::Client::lend_mut_timeout)) left this buffer's
    /// pages with a server that may still read or write them, because no fresh pages could
    /// be made for it (no memory or descriptors). Every later lend of it fails with
    /// [`Error::Protocol`](crate::Error::Protocol); its views still work (they are safe on
    /// bytes a peer writes) but show and share the server's pages. Make a new buffer.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Replaces the memory with a private copy under a new id, after a lend that the server
    /// may still hold (a timed-out call): the old pages stay the server's until it answers,
    /// this buffer never sees its late writes, and it never sees what we write next.
    ///
    /// The copy reads pages the server may be writing at that moment: it goes through views
    /// (no reference to the shared bytes is made), in chunks, into the fresh pages, which no
    /// other process has. The copy holds whatever bytes were there as it read them.
    ///
    /// If no fresh buffer can be made, the buffer is poisoned instead (see
    /// [`ShmBuf::is_poisoned`]).
    pub(crate) fn detach(&mut self) {
        let Ok(mut fresh) = ShmBuf::new(self.len) else {
            self.poisoned = true;
            return;
        };
        let mut chunk = vec![0u8; self.len.min(64 << 10)];
        let mut at = 0;
        while at < self.len {
            let n = chunk.len().min(self.len - at);
            let (src, dst) = (&mut chunk[..n], at);
            if self.view().read_at(at, src).is_err() || fresh.view_mut().write_at(dst, src).is_err()
            {
                // Both are `len` bytes long: not reached.
                self.poisoned = true;
                return;
            }
            at += n;
        }
        let old = std::mem::replace(self, fresh);
        drop(old); // tells the servers to unmap the old id once they are done
    }
}

impl Drop for ShmBuf {
    fn drop(&mut self) {
        let conns = std::mem::take(&mut *self.lent_to.lock().unwrap_or_else(|p| p.into_inner()));
        for c in conns {
            if let Some(c) = c.upgrade() {
                c.forget_buffer(self.id);
            }
        }
    }
}
