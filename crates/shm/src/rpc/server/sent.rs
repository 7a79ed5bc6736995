//! A buffer a client gave away with [`Client::send_buf`](crate::Client::send_buf) (Xous's
//! memory `send`): the server's to keep, read and write after the call, with no copy.

use super::lend::Lent;
use crate::view::{ShmView, ShmViewMut};

/// A buffer a client gave away ([`Client::send_buf`](crate::Client::send_buf)), taken from
/// its call with [`ReplyContext::take_sent`](crate::ReplyContext::take_sent). The server
/// keeps the pages mapped for as long as it holds this, whatever the client does next.
///
/// The sender gave up its `ShmBuf`, but a hostile sender may have kept a descriptor of the
/// same memory and still write it: the bytes are reached through views
/// ([`ShmView`]/[`ShmViewMut`]) that copy or check, never as `&[u8]`.
pub struct SentBuf {
    lent: Lent,
}

impl SentBuf {
    pub(super) fn new(lent: Lent) -> Self {
        SentBuf { lent }
    }

    /// The buffer's length in bytes.
    pub fn len(&self) -> usize {
        self.lent.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.lent.len == 0
    }

    /// The bytes, to copy out or read flat values from.
    pub fn view(&self) -> ShmView<'_> {
        // SAFETY: `ptr..ptr + len` lies inside the segment (checked in `take_lend` against its
        // sealed size), which `self.lent.seg` keeps mapped while `self` is borrowed.
        unsafe { ShmView::new(self.lent.ptr(), self.lent.len) }
    }

    /// The bytes, to write in place.
    pub fn view_mut(&mut self) -> ShmViewMut<'_> {
        // SAFETY: as in `view`; the client gave the buffer away (it was taken exclusively and
        // is off the client's books, so no lend of it is ever served again), and `&mut self`
        // makes this the only writable view this process hands out.
        unsafe { ShmViewMut::new(self.lent.ptr(), self.lent.len) }
    }
}

impl std::fmt::Debug for SentBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentBuf")
            .field("len", &self.lent.len)
            .finish()
    }
}
