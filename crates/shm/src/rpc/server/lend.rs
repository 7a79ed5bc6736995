//! Lends, server side: the buffers a client registers ([`Lends`]), mapped once and kept
//! until the client frees them or dies, within the per-client and server-wide limits; taking
//! and giving back a lend for one call ([`Lent`]).

use crate::error::ShmError;
use crate::rpc::layout::status;
use crate::rpc::{LEND_HELLO, LEND_OFFSET, MSG_LEN};
use crate::segment::{Segment, HEADER_LEN};
use crate::sync::Ordering;
use crate::sys;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use super::conn::Conn;
use super::Core;

/// The buffers one client registered for lending.
///
/// A buffer is known by its file (device and inode, the same for every descriptor of one
/// memfd), so a client that registers one memfd under several ids gets one mapping with one
/// lend state: the server never hands out two writable views of the same pages.
#[derive(Default)]
pub(super) struct Lends {
    pub(super) files: HashMap<(u64, u64), Lendable>,
    /// The client's buffer ids, each naming a file.
    pub(super) ids: HashMap<u64, (u64, u64)>,
    /// Ids whose registration was refused, and the status their lends get (until the
    /// client frees or registers them again).
    pub(super) refused: HashMap<u64, u32>,
    /// Bytes of `files`.
    pub(super) bytes: u64,
}

/// A buffer a client registered for lending.
pub(super) struct Lendable {
    pub(super) seg: Arc<Segment>,
    /// Shared lends in progress, or `u32::MAX` for an exclusive one.
    pub(super) users: u32,
    /// Ids of the client that name this file.
    pub(super) ids: u32,
}

impl Lendable {
    /// The usable bytes (the mapping past the header and the page before the data).
    pub(super) fn capacity(seg: &Segment) -> u64 {
        (seg.len() - HEADER_LEN - LEND_OFFSET) as u64
    }
}

/// The largest registration refusals one client may have pending: older ones are forgotten
/// (their lends then fail with `Protocol` instead of `LimitReached`).
pub(super) const MAX_REFUSED: usize = 1024;

impl Conn {
    /// Finds registered buffer `id` (reading registrations the client sent, if needed) and
    /// marks it lent, shared or exclusive. `len` is the length the client lends. `Err` is the
    /// status the call completes with.
    pub(super) fn take_lend(
        &self,
        core: &Core,
        id: u64,
        len: u64,
        offset: u64,
        signature: u64,
        exclusive: bool,
    ) -> Result<Lent, u32> {
        if self.gone() {
            // A dead client's buffers are already unmapped; nobody waits for this call.
            return Err(status::NO_REPLY);
        }
        let mut lends = self.lock_lends();
        if !lends.ids.contains_key(&id) {
            self.read_registrations(core, &mut lends);
        }
        if let Some(&st) = lends.refused.get(&id) {
            return Err(st);
        }
        let file = *lends.ids.get(&id).ok_or(status::PROTOCOL)?;
        let entry = lends.files.get_mut(&file).ok_or(status::PROTOCOL)?;
        // The window `offset..offset + len` must lie inside the buffer (the words come from
        // the client, which may lie).
        match offset.checked_add(len) {
            Some(end) if end <= Lendable::capacity(&entry.seg) => {}
            _ => return Err(status::PROTOCOL),
        }
        if len > core.max_lend as u64 {
            return Err(status::TOO_LARGE);
        }
        match (exclusive, entry.users) {
            (_, u32::MAX) | (true, 1..) => return Err(status::PROTOCOL),
            (true, 0) => entry.users = u32::MAX,
            (false, n) => entry.users = n + 1,
        }
        self.counters.lends.fetch_add(1, Ordering::Relaxed);
        Ok(Lent {
            seg: Arc::clone(&entry.seg),
            file,
            offset: offset as usize,
            len: len as usize,
            signature,
            exclusive,
        })
    }

    /// Reads the buffer registrations waiting on the socket (the client sends one before it
    /// queues the first lend of a buffer, so it is there already); never blocks. A message
    /// that breaks the protocol cuts the client off; a registration refused for a limit or a
    /// resource of the server is remembered, and the lends of that buffer fail with the
    /// matching status (the client is not cut off: only its own calls fail).
    pub(super) fn read_registrations(&self, core: &Core, lends: &mut Lends) {
        let sock = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        while let Ok(true) = sys::wait_readable(sock.as_fd(), Some(Instant::now())) {
            let mut msg = [0u8; MSG_LEN + 1];
            let (n, fd) = match sys::recv_with_fd(sock.as_fd(), &mut msg) {
                Ok(r) => r,
                // Out of descriptors: the message (and its descriptor) stays queued; this
                // lend fails as if refused, a later one reads it again.
                Err(e) if sys::is_exhaustion(&e) => return,
                Err(_) => return,
            };
            if n == 0 {
                return;
            }
            let (Some(fd), true) = (fd, n == MSG_LEN && msg[..8] == LEND_HELLO) else {
                drop(sock);
                self.cut_off();
                return;
            };
            let id = u64::from_le_bytes(msg[8..16].try_into().expect("8 bytes"));
            if lends.ids.contains_key(&id) {
                // Sent again (the client forgot a refused registration that a worker had
                // accepted meanwhile, say): the mapping we have stands.
                continue;
            }
            lends.refused.remove(&id);
            if let Err(st) = self.register(core, lends, id, fd) {
                if lends.refused.len() >= MAX_REFUSED {
                    lends.refused.clear();
                }
                lends.refused.insert(id, st);
            }
        }
    }

    /// Maps a buffer the client sent, within the limits, under `id`; `Err` is the status its
    /// lends get. The descriptor is closed once mapped, unless the server forwards lends.
    pub(super) fn register(
        &self,
        core: &Core,
        lends: &mut Lends,
        id: u64,
        fd: OwnedFd,
    ) -> Result<(), u32> {
        let file = sys::file_id(fd.as_fd()).map_err(|_| status::PROTOCOL)?;
        if lends.files.contains_key(&file) {
            // Another id for a buffer already mapped: the same lend state.
            lends.ids.insert(id, file);
            if let Some(e) = lends.files.get_mut(&file) {
                e.ids += 1;
            }
            return Ok(());
        }
        let limits = &core.limits;
        if lends.files.len() >= limits.lends_per_client {
            return Err(status::LIMIT);
        }
        let mut seg = match Segment::open(fd, HEADER_LEN + LEND_OFFSET + MAX_LEND_SEGMENT) {
            Ok(seg) if seg.len() >= HEADER_LEN + LEND_OFFSET => seg,
            Ok(_) => return Err(status::PROTOCOL),
            Err(ShmError::Io { source, .. }) if sys::is_exhaustion(&source) => {
                return Err(status::LIMIT)
            }
            Err(ShmError::BadSegment(crate::SegmentError::BadSize { len, .. }))
                if len > (HEADER_LEN + LEND_OFFSET + MAX_LEND_SEGMENT) as u64 =>
            {
                return Err(status::TOO_LARGE)
            }
            Err(_) => return Err(status::PROTOCOL),
        };
        if !core.forwarding {
            seg.close_fd();
        }
        let bytes = Lendable::capacity(&seg);
        if bytes > core.max_lend as u64 {
            return Err(status::TOO_LARGE);
        }
        if lends.bytes + bytes > limits.lend_bytes_per_client {
            return Err(status::LIMIT);
        }
        {
            let mut totals = core.lend_totals.lock().unwrap_or_else(|p| p.into_inner());
            if totals.0 >= limits.lends || totals.1 + bytes > limits.lend_bytes {
                return Err(status::LIMIT);
            }
            totals.0 += 1;
            totals.1 += bytes;
        }
        lends.bytes += bytes;
        lends.ids.insert(id, file);
        lends.files.insert(
            file,
            Lendable {
                seg: Arc::new(seg),
                users: 0,
                ids: 1,
            },
        );
        Ok(())
    }

    /// The client dropped buffer `id`: forget the id, and unmap the buffer once no id names
    /// it (and no context holds it).
    pub(super) fn free_buffer(&self, core: &Core, id: u64) {
        let mut lends = self.lock_lends();
        lends.refused.remove(&id);
        let Some(file) = lends.ids.remove(&id) else {
            return;
        };
        let last = lends.files.get_mut(&file).is_some_and(|e| {
            e.ids -= 1;
            e.ids == 0
        });
        if last {
            if let Some(e) = lends.files.remove(&file) {
                let bytes = Lendable::capacity(&e.seg);
                lends.bytes -= bytes;
                core.forget_lends(1, bytes);
            }
        }
    }

    /// The client gave the buffer of `lent` away ([`kind::SEND_BUF`]): it leaves the
    /// client's books (its ids, its byte count, the server's totals), and `lent` (then a
    /// [`SentBuf`](crate::SentBuf)) keeps the mapping for as long as the server likes.
    ///
    /// [`kind::SEND_BUF`]: crate::rpc::layout::kind::SEND_BUF
    pub(super) fn give_away(&self, core: &Core, lent: &Lent) {
        let mut lends = self.lock_lends();
        if let Some(e) = lends.files.remove(&lent.file) {
            let bytes = Lendable::capacity(&e.seg);
            lends.bytes -= bytes;
            core.forget_lends(1, bytes);
        }
        lends.ids.retain(|_, file| *file != lent.file);
    }

    /// Gives a lend back (its context is answered or dropped).
    pub(super) fn end_lend(&self, lent: &Lent) {
        self.counters.lends.fetch_sub(1, Ordering::Relaxed);
        if let Some(e) = self.lock_lends().files.get_mut(&lent.file) {
            if Arc::ptr_eq(&e.seg, &lent.seg) {
                e.users = if lent.exclusive {
                    0
                } else {
                    e.users.saturating_sub(1)
                };
            }
        }
    }
}

/// The largest lent buffer the server maps.
pub(super) const MAX_LEND_SEGMENT: usize = 1 << 30;

impl Core {
    /// Takes `count` buffers of `bytes` off the server's totals.
    pub(super) fn forget_lends(&self, count: usize, bytes: u64) {
        let mut totals = self.lend_totals.lock().unwrap_or_else(|p| p.into_inner());
        totals.0 = totals.0.saturating_sub(count);
        totals.1 = totals.1.saturating_sub(bytes);
    }

    /// Forgets every buffer of one client (it died or was cut off); mappings still held by a
    /// context go when it does.
    pub(super) fn release_lends(&self, lends: &mut Lends) {
        let lends = std::mem::take(lends);
        self.forget_lends(lends.files.len(), lends.bytes);
    }
}

/// A buffer a caller lent with this call.
pub(super) struct Lent {
    pub(super) seg: Arc<Segment>,
    pub(super) file: (u64, u64),
    /// Where the lent window starts in the caller's buffer.
    pub(super) offset: usize,
    /// The window's length: what the server may read (or write).
    pub(super) len: usize,
    /// The signature of the flat value lent (`Client::lend_box`), or 0 for bytes.
    pub(super) signature: u64,
    pub(super) exclusive: bool,
}

impl Lent {
    /// The window's first byte.
    pub(super) fn ptr(&self) -> *mut u8 {
        // SAFETY: the segment holds HEADER_LEN + LEND_OFFSET + the buffer's capacity, and
        // `offset + len` is at most that capacity (checked in `take_lend` against its
        // sealed size).
        unsafe { self.seg.payload_ptr().add(LEND_OFFSET + self.offset) }
    }
}
