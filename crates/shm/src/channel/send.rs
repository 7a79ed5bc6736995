//! Sending: a block from the local free list, a stack (taking back the ones the receiver
//! returned first, so the block returned last is reused first),
//! written by copy ([`ShmChannel::send`]) or in place ([`ShmChannel::loan`] and
//! [`ShmLoan`]), then published through the message ring; or, for a message of at most
//! `INLINE_MAX` bytes, copied into its ring entry. The ownership of a block in each
//! phase, and how a full ring or an empty pool waits, are in the module docs of `channel`.

use super::layout::{HEAD, INLINE, INLINE_MAX, R_CPU, R_WAIT, S_WAIT};
use super::{Full, ShmChannel};
use crate::error::ShmError;
use crate::substrate::deadline::Deadline;
use crate::substrate::park::{self, Gave, SpinHint};
use crate::substrate::ring::RingError;
use crate::sync::shared::Ordering;
use crate::sys;
use crate::view::{ShmView, ShmViewMut};
use courier_core::flat::{FlatError, IpcSafe};
use std::ops::RangeBounds;
use std::time::Duration;

impl ShmChannel {
    /// Copies `data` into a block and sends it; a message of at most 56 bytes goes into its
    /// ring entry instead, and takes no block.
    ///
    /// On a full ring or an exhausted pool this waits (with [`Full::Backpressure`], as long as
    /// the peer lives) or fails (with [`Full::Error`]).
    ///
    /// # Errors
    ///
    /// [`ShmError::TooLarge`], [`ShmError::PoolExhausted`], [`ShmError::RingFull`],
    /// [`ShmError::PeerDead`], [`ShmError::Corrupt`]. Nothing was sent.
    pub fn send(&self, data: &[u8]) -> Result<(), ShmError> {
        self.send_until(data, Deadline::NEVER)
    }

    /// As [`ShmChannel::send`], waiting at most `timeout` for room in the ring.
    ///
    /// # Errors
    ///
    /// As [`ShmChannel::send`], and [`ShmError::Timeout`].
    pub fn send_timeout(&self, data: &[u8], timeout: Duration) -> Result<(), ShmError> {
        self.send_until(data, Deadline::after(timeout))
    }

    fn send_until(&self, data: &[u8], deadline: Deadline) -> Result<(), ShmError> {
        if data.len() > self.lay.block_size {
            return Err(ShmError::TooLarge {
                len: data.len(),
                max: self.lay.block_size,
            });
        }
        if data.len() <= INLINE_MAX {
            // Inline: no block at all.
            if self.peer_dead() {
                return Err(ShmError::PeerDead);
            }
            let slot = self.wait_for_room(deadline)?;
            self.commit_inline(slot, &ShmView::from_private(data));
            return Ok(());
        }
        let mut loan = self.loan_until(deadline)?;
        loan.write_at(0, data)?;
        loan.publish_until(data.len(), deadline)
    }

    /// Takes a free block to write a message in place; [`ShmLoan::publish`] sends it. Never
    /// waits (see [`ShmChannel::loan_timeout`]).
    ///
    /// # Errors
    ///
    /// [`ShmError::PoolExhausted`] if every block is in use, [`ShmError::PeerDead`],
    /// [`ShmError::Corrupt`] if the peer returned a block it was not sent.
    pub fn loan(&self) -> Result<ShmLoan<'_>, ShmError> {
        if self.peer_dead() {
            return Err(ShmError::PeerDead);
        }
        match self.take_block()? {
            Some(idx) => Ok(self.loaned(idx)),
            None => Err(ShmError::PoolExhausted),
        }
    }

    /// As [`ShmChannel::loan`], but with [`Full::Backpressure`] waits up to `timeout` for the
    /// receiver to give a block back instead of failing with [`ShmError::PoolExhausted`].
    ///
    /// # Errors
    ///
    /// As [`ShmChannel::loan`], and [`ShmError::Timeout`].
    pub fn loan_timeout(&self, timeout: Duration) -> Result<ShmLoan<'_>, ShmError> {
        self.loan_until(Deadline::after(timeout))
    }

    fn loan_until(&self, deadline: Deadline) -> Result<ShmLoan<'_>, ShmError> {
        match self.full {
            Full::Error => self.loan(),
            Full::Backpressure => {
                if self.peer_dead() {
                    return Err(ShmError::PeerDead);
                }
                let idx = self.wait_for(deadline, || self.take_block(), || self.block_ready())?;
                Ok(self.loaned(idx))
            }
        }
    }

    fn loaned(&self, idx: usize) -> ShmLoan<'_> {
        // SAFETY: `idx < block_count` (it came from the local free list), so the block lies
        // inside the segment, which lives as long as the borrow of `self`; the block is
        // LOANED to us: the honest receiver does not touch it until it is published (a hostile
        // one may, which changes bytes but not bounds: the view makes no reference to them);
        // only this loan's view points at it in this process.
        let view = unsafe { ShmViewMut::new(self.block_ptr(self.tx, idx), self.lay.block_size) };
        ShmLoan {
            ch: self,
            idx,
            published: false,
            view,
        }
    }

    /// A free block. In a pool larger than [`WARM_POOL`] of blocks of [`EAGER_RECLAIM`] bytes
    /// or more: the one the receiver returned last, if any; the returned blocks are taken
    /// back first, onto the top of the free stack, so a sender whose messages are read
    /// promptly keeps reusing the same few blocks, still warm in the caches, instead of
    /// cycling through a pool the caches cannot hold. Otherwise blocks are taken back only
    /// when the free stack is empty (or by a receive that waits anyway, once fewer than a
    /// quarter of a pool of [`AHEAD_POOL`] or more are left:
    /// [`ShmChannel::reclaim_while_waiting`]): reading the returned ring at every loan costs a
    /// cache miss (the line of entries the receiver just wrote), and makes the receiver's next
    /// return wait for that line, while a small block, or a block of a pool that stays in a
    /// core's cache, is as quick to fill from anywhere in the pool.
    ///
    /// A block about the size of a core's L2 cache ([`ShmChannel::rotates`]) is the one
    /// exception: the sender takes the third block from the top, so that it fills the
    /// [`ROTATION`] blocks returned last in turn, as a memset of a block that size into the
    /// block it filled last is slower than into another.
    ///
    /// A broken returned ring (a hostile receiver) is reported when the free stack runs dry,
    /// as before: until then the blocks it still has are used.
    fn take_block(&self) -> Result<Option<usize>, ShmError> {
        let mut free = self.free.take();
        let had_free = !free.is_empty();
        let r = if had_free && !self.eager_reclaim() {
            Ok(())
        } else {
            match self.reclaim(&mut free) {
                Err(_) if had_free => Ok(()),
                r => r,
            }
        };
        // On an error the blocks taken back before it stay in the free list.
        let idx = match free.len() {
            _ if r.is_err() => None,
            n if n > 0 && self.rotates => Some(free.remove(n.saturating_sub(ROTATION))),
            _ => free.pop(),
        };
        self.free.set(free);
        r?;
        Ok(idx.map(|i| i as usize))
    }

    /// Whether this channel's blocks are about the size of a core's L2 cache: from 7/8 of it
    /// to 3/2 of it (the L2 of the first CPU, as Linux reports it; never where it does not).
    ///
    /// A sender that fills the block it filled last fills it more slowly there than it fills
    /// another: measured on an AMD EPYC with a 1 MiB L2, in one process, a memset of 1 MiB
    /// took 11.1–11.3 µs into the same block each time and 10.6–10.8 µs into two or three
    /// blocks in turn (5–6 %; 4 % at 1.5 MiB, none at 896 KiB). Below, one block wins, as it
    /// stays in the L2 (two of 512 KiB took 20 % longer); above, one wins again (three in
    /// turn took 1 % longer at 2 MiB, 16 % at 4 MiB). Between two processes, 1 MiB round
    /// trips took 23.0–23.3 µs reusing one block, 22.0–22.1 rotating two and 21.9 rotating
    /// three ([`ROTATION`]); crossbar, which rotates three, 21.5–21.7.
    pub(super) fn rotates(block_size: usize) -> bool {
        sys::l2_cache_bytes()
            .is_some_and(|l2| block_size >= l2 - l2 / 8 && block_size <= l2 + l2 / 2)
    }

    /// Whether returned blocks are taken back at every loan ([`ShmChannel::take_block`]).
    fn eager_reclaim(&self) -> bool {
        self.lay.block_size >= EAGER_RECLAIM
            && self.lay.stride.saturating_mul(self.lay.block_count) > WARM_POOL
    }

    /// Whether a block could be taken now (free, or returned), without taking it.
    fn block_ready(&self) -> Result<bool, ShmError> {
        let free = self.free.take();
        let any_free = !free.is_empty();
        self.free.set(free);
        if any_free {
            return Ok(true);
        }
        let returned = self.ret_rx.get().look_stamped(|s| self.returned_entry(s));
        Ok(returned.map_err(|_| RETURNED_BROKEN)?.is_some())
    }

    /// Takes the returned blocks back while this side waits for a message anyway, in a pool
    /// of [`AHEAD_POOL`] blocks or more whose free stack is down to less than a quarter of it
    /// (and not taken back at every loan already): the reads of the returned ring, lines the
    /// receiver wrote, then overlap the wait instead of lengthening the loan that would
    /// find the stack empty. A receive that finds its message at once takes nothing back. An
    /// error is left for the loan that runs dry to report, as a broken ring is.
    pub(super) fn reclaim_while_waiting(&self) {
        let count = self.lay.block_count;
        let mut free = self.free.take();
        if count >= AHEAD_POOL && free.len() < count / 4 && !self.eager_reclaim() {
            let _ = self.reclaim(&mut free);
            #[cfg(test)]
            self.taken_back_waiting.fetch_add(1, Ordering::Release);
        }
        self.free.set(free);
    }

    /// Takes the blocks the receiver returned back into `free`.
    fn reclaim(&self, free: &mut Vec<u32>) -> Result<(), ShmError> {
        let mut ring = self.ret_rx.get();
        let mut in_flight = self.in_flight.take();
        // At most `block_count` returns are taken: each clears an in-flight flag. A refused
        // one stays where it is, so that every later taking back reports it again.
        let result = loop {
            let idx = match ring.look_stamped(|s| self.returned_entry(s)) {
                Ok(Some(idx)) => idx,
                Ok(None) => break Ok(()),
                Err(_) => break Err(RETURNED_BROKEN),
            };
            // Accepted only if this side has that block in flight.
            match usize::try_from(idx).ok().and_then(|i| in_flight.get_mut(i)) {
                Some(f) if *f => *f = false,
                _ => break Err(ShmError::Corrupt("a block came back that was not sent")),
            }
            ring.pass();
            // `idx < block_count <= 2^20` (it was in flight) fits in u32.
            free.push(idx as u32);
        };
        self.in_flight.set(in_flight);
        self.ret_rx.set(ring);
        result
    }

    /// The returned-ring entry in `slot` of the sending direction, read once.
    fn returned_entry(&self, slot: usize) -> u64 {
        // Acquire: pairs with the receiver's Release store of the entry (`release`): its reads
        // of the block happen before our next writes to it.
        self.returned_word(self.tx, slot).load(Ordering::Acquire)
    }

    /// The slot of the message ring the next entry goes in, if the ring has room.
    fn reserve_slot(&self) -> Result<Option<usize>, ShmError> {
        let mut ring = self.msg_tx.get();
        let reserved = ring.reserve(self.ctl64(self.tx, HEAD));
        self.msg_tx.set(ring);
        match reserved {
            Ok(slot) => Ok(Some(slot)),
            Err(RingError::Full) => Ok(None),
            Err(RingError::Broken) => Err(ShmError::Corrupt("message-ring head out of range")),
        }
    }

    /// Waits for room in the ring per the `full` policy; returns the slot to fill.
    fn wait_for_room(&self, deadline: Deadline) -> Result<usize, ShmError> {
        if self.full == Full::Error {
            return self.reserve_slot()?.ok_or(ShmError::RingFull);
        }
        self.wait_for(
            deadline,
            || self.reserve_slot(),
            || Ok(self.reserve_slot()?.is_some()),
        )
    }

    /// Retries `attempt` until it gives a value: spinning (with the spin-loop hint only if the
    /// receiver last waited on another hardware thread of this core: [`SpinHint`]), then
    /// asleep on this direction's `s_wait` word, woken by the receiver when it consumes a
    /// message or returns a block (`ready` says whether `attempt` may succeed now, without
    /// taking anything).
    fn wait_for<T>(
        &self,
        deadline: Deadline,
        attempt: impl FnMut() -> Result<Option<T>, ShmError>,
        ready: impl FnMut() -> Result<bool, ShmError>,
    ) -> Result<T, ShmError> {
        let word = self.ctl32(self.tx, S_WAIT);
        let live = &*self.watch.shared;
        park::wait(
            word,
            live,
            Some((self.spin.begin_wait(false), || self.spin_hint())),
            deadline,
            attempt,
            ready,
        )
        .map(|(v, _)| v)
        .map_err(|g| match g {
            Gave::Err(e) => e,
            Gave::Dead => ShmError::PeerDead,
            Gave::Expired => ShmError::Timeout,
        })
    }

    /// The spin hint of this side's waits as a sender ([`SpinHint`]), by the CPU the receiver
    /// last waited on (its `R_CPU` hint, read Relaxed: only ever a hint).
    fn spin_hint(&self) -> SpinHint {
        let peer = self.ctl32(self.tx, R_CPU).load(Ordering::Relaxed);
        SpinHint::for_peer_on(park::this_cpu(), peer)
    }

    /// Publishes block `idx` holding `len <= block_size` bytes in `slot`, which
    /// [`ShmChannel::wait_for_room`] reserved.
    fn commit(&self, slot: usize, idx: usize, len: usize) {
        let mut in_flight = self.in_flight.take();
        if let Some(f) = in_flight.get_mut(idx) {
            *f = true;
        }
        self.in_flight.set(in_flight);
        // `idx < 2^20` and `len <= block_size <= 2^30` leave the stamp's bits and `INLINE`
        // free.
        self.commit_entry(slot, ((idx as u64) << 32) | len as u64);
    }

    /// Publishes `msg` (at most [`INLINE_MAX`] bytes) inline, copied into `slot`, which
    /// [`ShmChannel::wait_for_room`] reserved.
    fn commit_inline(&self, slot: usize, msg: &ShmView<'_>) {
        let len = msg.len().min(INLINE_MAX);
        debug_assert_eq!(len, msg.len());
        // SAFETY: `slot` was reserved (the consumer has handed it back: nobody reads it until
        // it is published) and lies inside the ring, with `INLINE_MAX >= len` bytes of the
        // entry from `inline_ptr`; a view's bytes are readable while it lives, and they lie
        // in this process's memory or in a block, apart from the ring.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), self.inline_ptr(self.tx, slot), len) };
        self.commit_entry(slot, INLINE | len as u64);
    }

    /// Publishes `entry` (a block's, or an inline message's written into the slot) in
    /// `slot`, which [`ShmChannel::wait_for_room`] reserved.
    fn commit_entry(&self, slot: usize, entry: u64) {
        let mut ring = self.msg_tx.get();
        // Release: pairs with the receiver's Acquire load of the entry (`try_take`): the bytes
        // written into the block, or into the entry, are visible to a receiver that sees the
        // stamped entry.
        self.entry_word(self.tx, slot)
            .store(entry | ring.stamp(), Ordering::Release);
        ring.commit_stamped();
        self.msg_tx.set(ring);
        park::wake(self.ctl32(self.tx, R_WAIT));
    }
}

/// How many blocks a sender of blocks about the size of a core's L2 cache fills in turn
/// ([`ShmChannel::rotates`]).
const ROTATION: usize = 3;

/// The smallest pool whose returned blocks a waiting receiver takes back
/// ([`ShmChannel::reclaim_while_waiting`]). Each time a side reads the returned ring, the
/// receiver's next return waits for the line to come back (its wake-up check fences), so
/// taking back early costs the peer once per batch; a batch of less than a quarter of 16
/// blocks comes often enough to cost more than it saves. In an 8-byte ping-pong on a 2-vCPU
/// Xeon VM: with 64 blocks, p99 2.4–2.7 µs → 1.25–1.3 µs; with 16, 1.7–1.8 → 1.2 µs; the
/// median within 3 % either way. With 4 blocks, taking back while waiting made the median
/// 20 % slower (p99 20 % faster).
const AHEAD_POOL: usize = 16;

/// Blocks at least this large, in a pool larger than [`WARM_POOL`], are taken back as soon
/// as they return (see `ShmChannel::take_block`).
const EAGER_RECLAIM: usize = 4096;

/// The largest pool (bytes of one direction's blocks) filled in turn, block after block: it
/// stays in a core's L2 cache (256 KiB and up on current x86 and Arm cores), where a memset
/// of a 64 KiB block took the same time from a pool of one block as of four (560 ns), and
/// 23 % longer from a pool of 1 MiB. The default pool (64 blocks of 4 KiB) is this size.
const WARM_POOL: usize = 256 * 1024;

/// A returned-ring slot holds a lap's stamp it cannot hold.
const RETURNED_BROKEN: ShmError = ShmError::Corrupt("returned-ring entry out of turn");

/// A block loaned for writing a message in place. Derefs to a [`ShmViewMut`] of the whole
/// block (`block_size` bytes, holding whatever it held before: write what you send);
/// [`ShmLoan::publish`] sends its first `len` bytes. Dropped without publishing, the block goes
/// back to the pool.
///
/// The view writes into the shared block and reads back by copy: no `&mut [u8]` to the block
/// is ever made, since a hostile receiver could write it while we hold one (see
/// [`ShmView`](crate::ShmView)).
///
/// # Examples
///
/// ```no_run
/// # let ch = courier_shm::ShmChannel::connect("rpc", Default::default(), std::time::Duration::from_secs(5))?;
/// let mut loan = ch.loan()?;
/// loan.write_at(0, b"hello")?;
/// loan.publish(5)?;
/// # Ok::<(), courier_shm::ShmError>(())
/// ```
#[derive(Debug)]
pub struct ShmLoan<'a> {
    ch: &'a ShmChannel,
    idx: usize,
    published: bool,
    /// The whole block, LOANED to us.
    view: ShmViewMut<'a>,
}

impl ShmLoan<'_> {
    /// Sends the first `len` bytes of the block (copied into the ring entry if `len` is at
    /// most 56, the block then going back to the pool). On a full ring this waits or fails
    /// as the channel's [`Full`] says.
    ///
    /// # Errors
    ///
    /// [`ShmError::TooLarge`] if `len` is larger than the block, [`ShmError::RingFull`],
    /// [`ShmError::PeerDead`], [`ShmError::Corrupt`]; the block then goes back to the pool.
    pub fn publish(self, len: usize) -> Result<(), ShmError> {
        self.publish_until(len, Deadline::NEVER)
    }

    /// As [`ShmLoan::publish`], waiting at most `timeout` for room in the ring.
    ///
    /// # Errors
    ///
    /// As [`ShmLoan::publish`], and [`ShmError::Timeout`].
    pub fn publish_timeout(self, len: usize, timeout: Duration) -> Result<(), ShmError> {
        self.publish_until(len, Deadline::after(timeout))
    }

    fn publish_until(mut self, len: usize, deadline: Deadline) -> Result<(), ShmError> {
        if len > self.ch.lay.block_size {
            return Err(ShmError::TooLarge {
                len,
                max: self.ch.lay.block_size,
            });
        }
        let slot = self.ch.wait_for_room(deadline)?;
        if len <= INLINE_MAX {
            // Inline: the bytes go into the entry, and the block back to the top of the free
            // stack when the loan drops, unpublished (it stays in this core's cache, and the
            // receiver reads one line, not two).
            if let Some(msg) = self.view.slice(..len) {
                self.ch.commit_inline(slot, &msg);
                return Ok(());
            }
        }
        self.ch.commit(slot, self.idx, len);
        self.published = true;
        Ok(())
    }
}

impl<'a> std::ops::Deref for ShmLoan<'a> {
    type Target = ShmViewMut<'a>;

    fn deref(&self) -> &ShmViewMut<'a> {
        &self.view
    }
}

/// Writing the block: the methods of [`ShmViewMut`], on the loan itself. The loan derefs to
/// its view for reading only: a `&mut` to the view would let safe code move it out
/// (`mem::swap` of two loans' views) and write the block after `publish`, while the receiver
/// reads it; a view taken with [`ShmLoan::view_mut`] borrows the loan instead.
impl ShmLoan<'_> {
    /// The whole block as a writable view that borrows the loan (to hand to code that takes a
    /// [`ShmViewMut`]).
    pub fn view_mut(&mut self) -> ShmViewMut<'_> {
        self.view
            .slice_mut(..)
            .expect("a view's whole range fits in it")
    }

    /// As [`ShmViewMut::as_mut_ptr`].
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.view.as_mut_ptr()
    }

    /// As [`ShmViewMut::slice_mut`].
    pub fn slice_mut(&mut self, range: impl RangeBounds<usize>) -> Option<ShmViewMut<'_>> {
        self.view.slice_mut(range)
    }

    /// As [`ShmViewMut::set`].
    ///
    /// # Panics
    ///
    /// If `index >= self.len()`.
    pub fn set(&mut self, index: usize, byte: u8) {
        self.view.set(index, byte);
    }

    /// As [`ShmViewMut::copy_from_slice`].
    ///
    /// # Panics
    ///
    /// If `src.len() != self.len()`.
    pub fn copy_from_slice(&mut self, src: &[u8]) {
        self.view.copy_from_slice(src);
    }

    /// As [`ShmViewMut::copy_from_view`].
    ///
    /// # Panics
    ///
    /// If `src.len() != self.len()`.
    pub fn copy_from_view(&mut self, src: &ShmView<'_>) {
        self.view.copy_from_view(src);
    }

    /// As [`ShmViewMut::write_at`].
    ///
    /// # Errors
    ///
    /// [`ShmError::OutOfBounds`] if the range does not fit in the block.
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> Result<(), ShmError> {
        self.view.write_at(offset, src)
    }

    /// As [`ShmViewMut::fill`].
    pub fn fill(&mut self, byte: u8) {
        self.view.fill(byte);
    }

    /// As [`ShmViewMut::write`].
    ///
    /// # Errors
    ///
    /// [`FlatError::TooShort`] if it does not fit in the block from `offset`.
    pub fn write<T: IpcSafe>(&mut self, offset: usize, value: T) -> Result<usize, FlatError> {
        self.view.write(offset, value)
    }

    /// As [`ShmViewMut::write_ref`].
    ///
    /// # Errors
    ///
    /// As [`ShmLoan::write`].
    pub fn write_ref<T: IpcSafe>(&mut self, offset: usize, value: &T) -> Result<usize, FlatError> {
        self.view.write_ref(offset, value)
    }

    /// As [`ShmViewMut::as_mut_slice`].
    ///
    /// # Safety
    ///
    /// As [`ShmViewMut::as_mut_slice`]: no other process reads or writes these bytes while
    /// the returned reference lives.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.view.as_mut_slice() }
    }
}

impl Drop for ShmLoan<'_> {
    fn drop(&mut self) {
        if !self.published {
            let mut free = self.ch.free.take();
            free.push(self.idx as u32);
            self.ch.free.set(free);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::layout::INLINE_MAX;
    use crate::channel::recv::Held;
    use crate::channel::support::*;
    use crate::channel::{Full, ShmConfig, WaitStrategy};
    use std::time::{Duration, Instant};

    /// A message one byte too long to go inline: it travels in a block.
    fn big(b: u8) -> [u8; INLINE_MAX + 1] {
        [b; INLINE_MAX + 1]
    }

    /// The block a received message lies in.
    fn block_of(m: &crate::ShmMessage<'_>) -> usize {
        match m.held {
            Held::Block(idx) => idx,
            Held::Inline(_) => panic!("an inline message"),
        }
    }

    /// Sends `n` messages from `c` too long to go inline, each received by `l` (and its
    /// block returned) before the next; the blocks they were written in.
    fn ping(l: &ShmChannel, c: &ShmChannel, n: u8) -> Vec<usize> {
        (0..n)
            .map(|i| {
                let mut loan = c.loan().unwrap();
                let idx = loan.idx;
                loan.write_at(0, &big(i)).unwrap();
                loan.publish(INLINE_MAX + 1).unwrap();
                assert_eq!(l.recv().unwrap().to_vec(), big(i));
                idx
            })
            .collect()
    }

    /// In a pool larger than a core's cache holds, a sender whose messages are read at once
    /// keeps one block warm: the block the receiver returned last is the next one loaned (the
    /// old code went round all eight first).
    #[test]
    fn the_block_returned_last_is_reused_first() {
        let cfg = ShmConfig::new().block_size(64 * 1024).block_count(8);
        const { assert!(64 * 1024 * 8 > WARM_POOL) };
        let (l, c) = pair(cfg);
        let used = ping(&l, &c, 20);
        assert!(used.iter().all(|&b| b == used[0]), "blocks used: {used:?}");
        // Two messages held by the receiver: two blocks in use, then the later one returned
        // comes back first.
        c.send(&big(1)).unwrap();
        c.send(&big(2)).unwrap();
        let (a, b) = (l.recv().unwrap(), l.recv().unwrap());
        let (ia, ib) = (block_of(&a), block_of(&b));
        drop(a);
        drop(b);
        assert_eq!(c.loan().unwrap().idx, ib);
        assert_ne!(ia, ib);
    }

    /// Blocks about the size of a core's L2 are filled [`ROTATION`] in turn, the ones
    /// returned last: not one block over and over, nor the whole pool.
    #[test]
    fn blocks_about_the_size_of_the_l2_are_filled_in_turn() {
        let cfg = ShmConfig::new().block_size(64 * 1024).block_count(8);
        let (l, mut c) = pair(cfg);
        c.rotates = true;
        let used = ping(&l, &c, 20);
        for w in used.windows(ROTATION + 1) {
            let mut turn = w[..ROTATION].to_vec();
            turn.sort_unstable();
            turn.dedup();
            assert_eq!(turn.len(), ROTATION, "blocks used: {used:?}");
            assert_eq!(w[ROTATION], w[0], "blocks used: {used:?}");
        }
        // Which sizes rotate follows the L2 this machine reports.
        match sys::l2_cache_bytes() {
            Some(l2) => {
                assert!(ShmChannel::rotates(l2) && ShmChannel::rotates(l2 + l2 / 2));
                assert!(ShmChannel::rotates(l2 - l2 / 8));
                assert!(!ShmChannel::rotates(l2 - l2 / 8 - 1));
                assert!(!ShmChannel::rotates(l2 / 2) && !ShmChannel::rotates(2 * l2));
            }
            None => assert!(!ShmChannel::rotates(1 << 20)),
        }
    }

    /// A receive that waits takes the returned blocks back once the free stack is below a
    /// quarter of a pool of [`AHEAD_POOL`] or more, so the next loan reads no line the
    /// receiver wrote; with more left, or in a smaller pool, they stay in the returned ring
    /// for the loan that finds the stack empty.
    #[test]
    fn a_waiting_receiver_takes_returned_blocks_back_when_few_are_left() {
        let free = |ch: &ShmChannel| {
            let f = ch.free.take();
            let n = f.len();
            ch.free.set(f);
            n
        };
        for (count, sent, taken_back) in [(16, 13, true), (16, 12, false), (8, 7, false)] {
            let (l, c) = pair(ShmConfig::new().block_size(64).block_count(count));
            for i in 0..sent {
                c.send(&big(i as u8)).unwrap();
                assert_eq!(l.recv().unwrap().to_vec(), big(i as u8));
            }
            assert_eq!(free(&c), count - sent);
            // Nothing to receive: the wait times out, having looked at the returned ring.
            let r = c.recv_timeout(Duration::from_millis(1));
            assert!(matches!(r, Err(ShmError::Timeout)), "{r:?}");
            let want = if taken_back { count } else { count - sent };
            assert_eq!(free(&c), want, "{count} blocks, {sent} sent");
        }
        // The spinning receive: the peer answers once the blocks were taken back (as the
        // channel counts for its tests), or after 10 s.
        let (l, c) = pair(ShmConfig::new().block_size(64).block_count(16));
        for i in 0..13u8 {
            c.send(&big(i)).unwrap();
            assert_eq!(l.recv().unwrap().to_vec(), big(i));
        }
        let taken_back = std::sync::Arc::clone(&c.taken_back_waiting);
        let peer = std::thread::spawn(move || {
            let start = Instant::now();
            while taken_back.load(Ordering::Acquire) == 0
                && start.elapsed() < Duration::from_secs(10)
            {
                std::hint::spin_loop();
            }
            l.send(b"x").unwrap();
            l
        });
        assert_eq!(c.recv_with(WaitStrategy::BusySpin).unwrap().to_vec(), b"x");
        assert_eq!(free(&c), 16);
        drop(peer.join().unwrap());
    }

    /// A pool a core's cache holds is filled block after block: the returned ring is read
    /// only when the free stack runs dry, not at every loan.
    #[test]
    fn a_small_pool_is_used_in_turn() {
        for cfg in [
            ShmConfig::new().block_count(8),
            ShmConfig::new().block_size(64).block_count(8),
        ] {
            let (l, c) = pair(cfg);
            let used = ping(&l, &c, 16);
            let mut first = used[..8].to_vec();
            first.sort_unstable();
            assert_eq!(first, (0..8).collect::<Vec<_>>(), "blocks used: {used:?}");
            // Then the eight returned ones, taken back at once when the stack ran dry.
            let mut again = used[8..].to_vec();
            again.sort_unstable();
            assert_eq!(again, first, "blocks used: {used:?}");
        }
    }

    #[test]
    fn pool_exhausted_too_large_and_unpublished_loans() {
        let (l, c) = pair(
            ShmConfig::new()
                .block_size(64)
                .block_count(2)
                .full(Full::Error),
        );
        assert!(matches!(
            c.send(&[0; 65]),
            Err(ShmError::TooLarge { len: 65, max: 64 })
        ));
        let a = c.loan().unwrap();
        let b = c.loan().unwrap();
        assert!(matches!(c.loan(), Err(ShmError::PoolExhausted)));
        drop(a);
        assert!(matches!(b.publish(65), Err(ShmError::TooLarge { .. })));
        // Both blocks are free again.
        c.send(&big(1)).unwrap();
        c.send(&big(2)).unwrap();
        assert!(matches!(c.send(&big(3)), Err(ShmError::PoolExhausted)));
        let m1 = l.try_recv().unwrap().unwrap();
        assert!(matches!(c.send(&big(3)), Err(ShmError::PoolExhausted)));
        drop(m1);
        c.send(&big(3)).unwrap();
        assert_eq!(l.try_recv().unwrap().unwrap().to_vec(), big(2));
        assert_eq!(l.try_recv().unwrap().unwrap().to_vec(), big(3));

        // With backpressure, a send waits for a block instead, and a message held too long
        // is a timeout.
        let (l, c) = pair(ShmConfig::new().block_size(64).block_count(1));
        c.send(&big(1)).unwrap();
        let m = l.try_recv().unwrap().unwrap();
        assert!(matches!(
            c.send_timeout(&big(2), SHORT),
            Err(ShmError::Timeout)
        ));
        assert!(matches!(c.loan(), Err(ShmError::PoolExhausted)));
        // A message short enough to go inline needs no block: it goes, by copy or by loan
        // (whose block comes back as it is published).
        c.send(b"inline").unwrap();
        assert_eq!(l.try_recv().unwrap().unwrap().to_vec(), b"inline");
        std::thread::scope(|s| {
            s.spawn(move || c.loan_timeout(Duration::from_secs(10)).unwrap().publish(0));
            std::thread::sleep(SHORT);
            drop(m);
        });
        assert_eq!(l.recv_timeout(Duration::from_secs(10)).unwrap().len(), 0);
    }

    #[test]
    fn full_ring_is_an_error_or_backpressure() {
        let cfg = ShmConfig::new().block_count(4).ring_depth(2);
        let (l, c) = pair(cfg.full(Full::Error));
        c.send(b"1").unwrap();
        c.send(b"2").unwrap();
        assert!(matches!(c.send(b"3"), Err(ShmError::RingFull)));
        assert_eq!(l.try_recv().unwrap().unwrap().to_vec(), b"1");
        c.send(b"3").unwrap();

        let (l, c) = pair(cfg.full(Full::Backpressure));
        c.send(b"1").unwrap();
        c.send(b"2").unwrap();
        assert!(matches!(
            c.send_timeout(b"3", SHORT),
            Err(ShmError::Timeout)
        ));
        // A receiver on another thread makes room: the blocked send goes through.
        std::thread::scope(|s| {
            s.spawn(move || c.send_timeout(b"3", Duration::from_secs(10)).unwrap());
            std::thread::sleep(SHORT);
            let got: Vec<Vec<u8>> = (0..3)
                .map(|_| l.recv_timeout(Duration::from_secs(10)).unwrap().to_vec())
                .collect();
            assert_eq!(got, [b"1", b"2", b"3"]);
        });
    }

    #[test]
    fn a_sender_waiting_for_a_block_is_woken_when_one_comes_back() {
        // Waiters sleep without a timeout now: a returned block must wake the sender, not the
        // end of a sleep slice (nor its 10 s deadline).
        let (l, c) = pair(ShmConfig::new().block_size(64).block_count(1));
        c.send(&big(1)).unwrap();
        let m = l.try_recv().unwrap().unwrap();
        std::thread::scope(|s| {
            let blocked = s.spawn(move || {
                let r = c.loan_timeout(Duration::from_secs(10)).map(drop);
                (r, Instant::now())
            });
            std::thread::sleep(Duration::from_millis(30));
            let returned = Instant::now();
            drop(m);
            let (r, woke) = blocked.join().unwrap();
            r.unwrap();
            assert!(woke.duration_since(returned) < Duration::from_secs(1));
        });
    }

    #[test]
    fn a_sender_blocked_on_a_full_ring_wakes_on_the_hang_up() {
        let (l, c) = pair(ShmConfig::new().block_count(1));
        c.send(b"1").unwrap();
        std::thread::scope(|s| {
            let blocked = s.spawn(move || {
                let r = c.send(b"2");
                (r, Instant::now())
            });
            std::thread::sleep(Duration::from_millis(30));
            let closed = Instant::now();
            drop(l);
            let (r, woke) = blocked.join().unwrap();
            assert!(matches!(r, Err(ShmError::PeerDead)), "{r:?}");
            assert!(woke.duration_since(closed) < Duration::from_secs(1));
        });
    }
}
