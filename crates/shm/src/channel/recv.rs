//! Receiving: the next entry of the message ring, read once and checked, as a
//! [`ShmMessage`]: a view of its block, which goes back through the returned ring when the
//! message drops, or a private copy of a message that came inline in its entry (the entry
//! goes back at once). How a receiver waits (spin, then park) and learns of the peer's death
//! is in the module docs of `channel`.

use super::layout::{HEAD, INLINE, INLINE_MAX, R_CPU, R_WAIT, S_WAIT};
use super::{ShmChannel, WaitStrategy, CLIENT_TX};
use crate::error::ShmError;
use crate::substrate::clock;
use crate::substrate::deadline::Deadline;
use crate::substrate::park::{self, Gave, SpinHint, AWAKE, SHORT_ANSWER};
use crate::sync::shared::Ordering;
use crate::view::ShmView;
use courier_core::placement::move_off_this_cpu;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

/// Short handed-over waits in a row that make a receiver move (`ShmChannel::move_pays`).
const SHORT_STREAK: u32 = 3;

/// How many cells of dropped inline messages a channel keeps for the next ones (a receiver
/// that holds one message at a time uses one).
const CELLS_KEPT: usize = 64;

/// Looks of a busy spin between two readings of the clock (each followed, once the spin has
/// lasted [`park::MOVE_AFTER`], by a look at the CPU hints).
const MOVE_CHECK_EVERY: u32 = 256;

/// What the hints in the control block say about the peer, seen from the CPU we run on.
struct Hints {
    /// The peer last waited on this CPU.
    peer_here: bool,
    /// The peer last waited on another CPU (not known: neither).
    peer_elsewhere: bool,
    /// What a spin does between its looks: the spin-loop hint only if the peer last waited
    /// on another hardware thread of this CPU's core ([`SpinHint`]).
    spin_hint: SpinHint,
    /// The peer sleeps in its own receive (it waits for us).
    peer_blocked: bool,
}

impl ShmChannel {
    /// Takes the next message if there is one, without waiting.
    ///
    /// # Errors
    ///
    /// [`ShmError::PeerDead`] if there is none and the peer is gone; [`ShmError::Corrupt`].
    pub fn try_recv(&self) -> Result<Option<ShmMessage<'_>>, ShmError> {
        if let Some(m) = self.try_take()? {
            return Ok(Some(m));
        }
        if self.peer_dead() {
            // A message published just before the hang-up is still delivered.
            return self.try_take()?.map(Some).ok_or(ShmError::PeerDead);
        }
        Ok(None)
    }

    /// Waits for the next message ([`WaitStrategy::Adaptive`]).
    ///
    /// # Errors
    ///
    /// [`ShmError::PeerDead`] (as soon as the watcher sees the peer's hang-up),
    /// [`ShmError::Corrupt`].
    pub fn recv(&self) -> Result<ShmMessage<'_>, ShmError> {
        self.recv_with(WaitStrategy::Adaptive)
    }

    /// Waits at most `timeout` for the next message.
    ///
    /// # Errors
    ///
    /// As [`ShmChannel::recv`], and [`ShmError::Timeout`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<ShmMessage<'_>, ShmError> {
        self.recv_with(WaitStrategy::Timeout(timeout))
    }

    /// Waits for the next message as `strategy` says.
    ///
    /// # Errors
    ///
    /// As [`ShmChannel::recv`], and [`ShmError::Timeout`] with [`WaitStrategy::Timeout`].
    pub fn recv_with(&self, strategy: WaitStrategy) -> Result<ShmMessage<'_>, ShmError> {
        let deadline = match strategy {
            WaitStrategy::BusySpin => return self.recv_spinning(),
            WaitStrategy::Adaptive => Deadline::NEVER,
            WaitStrategy::Timeout(d) => Deadline::after(d),
        };
        // Woken by the sender after its store of an entry, or by the watcher.
        let word = self.ctl32(self.rx, R_WAIT);
        let waiting = || Ok(self.msg_rx.get().ready_stamped(|slot| self.entry(slot)));
        // Only a look: a message already there is taken below like any other, so that it
        // counts in the handed-over streak of `move_pays`.
        if !waiting()? {
            self.reclaim_while_waiting();
        }
        // No spin when the peer cannot send while we spin: it sleeps in its own receive
        // (it waits for us), or it last waited on this CPU (it would run where we spin).
        let Hints {
            mut peer_here,
            peer_blocked,
            spin_hint,
            ..
        } = self.note_cpu();
        let handing_over = !peer_blocked && !self.spin.never();
        // A peer that is awake and last waited on this CPU: the connecting side moves to
        // another CPU where that pays (`move_pays`), and spins there; else the peer gets the
        // CPU handed over.
        if peer_here && handing_over && self.move_pays() && move_off_this_cpu().is_some() {
            peer_here = self.note_cpu().peer_here;
        }
        if peer_here && handing_over {
            let start = Instant::now();
            if let Some(m) = park::yield_on(deadline.cap(park::YIELD_FOR), || self.try_take())? {
                let short = start.elapsed() < SHORT_ANSWER;
                let streak = self.short_handovers.get();
                self.short_handovers
                    .set(if short { streak.saturating_add(1) } else { 0 });
                return Ok(m);
            }
        }
        let spin =
            (!peer_blocked && !peer_here).then(|| (self.spin.begin_wait(false), move || spin_hint));
        match park::wait_paced(
            word,
            &*self.watch.shared,
            spin,
            Some(&self.pace),
            deadline,
            || self.try_take(),
            waiting,
        ) {
            Ok((m, answered)) => {
                // A wait answered soon while spinning says nothing of the sender's turnaround
                // (the receiver may have come late, just before the message); a long or
                // slept one says it is long.
                if answered.is_none_or(|d| d >= SHORT_ANSWER) {
                    self.short_handovers.set(0);
                }
                Ok(m)
            }
            Err(Gave::Err(e)) => Err(e),
            // A message published just before the hang-up is still delivered.
            Err(Gave::Dead) => self.try_take()?.ok_or(ShmError::PeerDead),
            Err(Gave::Expired) => Err(ShmError::Timeout),
        }
    }

    /// Whether a receiver whose sender, awake, last waited on its CPU moves to another CPU
    /// rather than hand its CPU over: by the RPC caller's rule (`Conn::move_pays` in the RPC
    /// client), if its last [`SHORT_STREAK`] handed-over waits were each answered within
    /// [`SHORT_ANSWER`] (and no wait since took longer or slept) and a CPU is left beside at
    /// most one other process's busy thread (the sender's process does not count as the
    /// busy one). Unlike an RPC caller, which waits from the moment it sends, a receiver may
    /// start its wait late: displaced by the sender on its own CPU, it comes back just as the
    /// next message lands, and one such wait looks short (0.1–0.4 µs waits were seen in a
    /// 16 MiB ping-pong with a core busy, whose moves then tripled its p99); several in a row
    /// are the sender's turnaround. Only the connecting side moves (when both sides moved,
    /// they could move together), never when moves are off.
    fn move_pays(&self) -> bool {
        use courier_core::placement::{free_cpu_beside, moves_allowed};
        self.tx == CLIENT_TX
            && self.short_handovers.get() >= SHORT_STREAK
            && moves_allowed()
            && free_cpu_beside(1)
    }

    /// Stores the CPU we wait on in our `R_CPU` hint and reads the peer's hints. Relaxed:
    /// hints, read and written without ordering.
    fn note_cpu(&self) -> Hints {
        let cpu = park::this_cpu();
        let here = self.ctl32(self.rx, R_CPU);
        // Stored only when it changed: the peer reads this line at every message it sends.
        if here.load(Ordering::Relaxed) != cpu {
            here.store(cpu, Ordering::Relaxed);
        }
        let peer_cpu = self.ctl32(self.tx, R_CPU).load(Ordering::Relaxed);
        Hints {
            peer_here: peer_cpu == cpu,
            peer_elsewhere: peer_cpu != 0 && peer_cpu != cpu,
            spin_hint: SpinHint::for_peer_on(cpu, peer_cpu),
            peer_blocked: self.ctl32(self.tx, R_WAIT).load(Ordering::Relaxed) != AWAKE,
        }
    }

    /// [`WaitStrategy::BusySpin`]: looks at the ring until a message comes or the peer dies.
    /// The spin clock ([`clock::now`]) is read every [`MOVE_CHECK_EVERY`] looks:
    /// - a gap between two readings says whether the CPUs are oversubscribed
    ///   ([`Contention`]); while they are, a spin that has lasted [`park::YIELD_AFTER`]
    ///   yields the CPU between looks, so that the sender, if it waits for this CPU, fills
    ///   its message at full speed (not when the sender last waited on another CPU: the
    ///   CPU would go to a third thread);
    /// - once the spin has lasted [`park::MOVE_AFTER`], it reads the hints again: a peer
    ///   awake that last waited on this CPU cannot run while we spin, so the receiver moves
    ///   to another CPU ([`move_off_this_cpu`]) and spins there.
    ///
    /// Otherwise the looks follow each other without the spin-loop hint, unless the peer
    /// last waited on another hardware thread of this core ([`SpinHint`]).
    ///
    /// [`Contention`]: park::Contention
    fn recv_spinning(&self) -> Result<ShmMessage<'_>, ShmError> {
        let mut looks: u32 = 0;
        // The first reading of the clock, the last, and the last look at the hints.
        let (mut began, mut last): (Option<Instant>, Option<Instant>) = (None, None);
        let mut since: Option<Instant> = None;
        let mut yielding = false;
        let hints = self.note_cpu();
        let (mut hint, mut peer_elsewhere) = (hints.spin_hint, hints.peer_elsewhere);
        loop {
            if let Some(m) = self.try_take()? {
                return Ok(m);
            }
            if looks == 0 {
                self.reclaim_while_waiting();
            }
            if self.peer_dead() {
                return self.try_take()?.ok_or(ShmError::PeerDead);
            }
            looks = looks.wrapping_add(1);
            if looks % MOVE_CHECK_EVERY == 0 {
                let now = clock::now();
                if let Some(last) = last.replace(now) {
                    self.contention.note(last, now, park::switched_out);
                }
                yielding = self
                    .contention
                    .yields(*began.get_or_insert(now), now, peer_elsewhere);
                if now - *since.get_or_insert(now) >= park::MOVE_AFTER {
                    let mut hints = self.note_cpu();
                    if hints.peer_here && !hints.peer_blocked {
                        move_off_this_cpu();
                        hints = self.note_cpu();
                    }
                    (hint, peer_elsewhere) = (hints.spin_hint, hints.peer_elsewhere);
                    since = Some(clock::now());
                }
            }
            if yielding {
                std::thread::yield_now();
            } else {
                hint.between_looks();
            }
        }
    }

    fn try_take(&self) -> Result<Option<ShmMessage<'_>>, ShmError> {
        let mut ring = self.msg_rx.get();
        // The entry is read once. An inline message is copied out of it; then its slot goes
        // back to the sender (Release of `head`) before the entry is checked further, so a
        // bad entry is consumed, not met again.
        let Some(entry) = ring.peek_stamped(|slot| self.entry(slot)) else {
            return Ok(None);
        };
        let inline = (entry & INLINE != 0).then(|| self.inline_message(ring.slot(0), entry));
        ring.advance(1, self.ctl64(self.rx, HEAD));
        self.msg_rx.set(ring);
        park::wake(self.ctl32(self.rx, S_WAIT));
        match inline {
            Some(message) => message.map(Some),
            None => self.block_message(entry),
        }
    }

    /// The inline message of the entry in `slot`, copied into a cell of this process (the
    /// entry goes back once this returns), checked.
    fn inline_message(&self, slot: usize, entry: u64) -> Result<ShmMessage<'_>, ShmError> {
        let len = (entry & (INLINE - 1)) as usize;
        if len > INLINE_MAX {
            return Err(ShmError::Corrupt("inline message longer than its entry"));
        }
        let mut cells = self.cells.take();
        let cell = cells.pop().unwrap_or_else(|| Box::new([0; INLINE_MAX]));
        self.cells.set(cells);
        let cell = NonNull::from(Box::leak(cell)).cast::<u8>();
        // SAFETY: the source is `len <= INLINE_MAX` bytes of the entry in `slot <
        // ring_depth`, inside the segment; the entry is not handed back yet, so the honest
        // sender does not write it (a hostile one may, which changes the bytes we copy, not
        // their bounds; the copy makes no reference to them). The destination is the cell:
        // `INLINE_MAX` bytes of this process's memory, ours alone.
        unsafe {
            std::ptr::copy_nonoverlapping(self.inline_ptr(self.rx, slot), cell.as_ptr(), len)
        };
        // SAFETY: `len` bytes of the cell (`ShmView::new`'s second case): it stays allocated
        // until the message drops and is touched by nothing else meanwhile (no reference to
        // it exists: the message keeps it as a raw pointer), and the message lends the view
        // out only by reference (`Deref`), the views cut from it borrowing it
        // (`ShmView::slice`), so no view of the cell outlives the message.
        let view = unsafe { ShmView::new(cell.as_ptr(), len) };
        Ok(ShmMessage {
            ch: self,
            held: Held::Inline(cell),
            view,
        })
    }

    /// The message of a block's entry, checked.
    fn block_message(&self, entry: u64) -> Result<Option<ShmMessage<'_>>, ShmError> {
        let idx = (entry >> 32) as usize;
        let len = (entry & 0xffff_ffff) as usize;
        if idx >= self.lay.block_count {
            return Err(ShmError::Corrupt("block index out of range"));
        }
        if len > self.lay.block_size {
            return Err(ShmError::Corrupt("message longer than a block"));
        }
        // SAFETY: `idx < block_count` and `len <= block_size` were checked just above, so the
        // bytes lie inside the segment, which lives as long as the borrow of `self`; the block
        // is HELD by us: the honest sender does not write it until it comes back (a hostile
        // one may, which changes bytes but not bounds: the view makes no reference to them).
        let view = unsafe { ShmView::new(self.block_ptr(self.rx, idx), len) };
        Ok(Some(ShmMessage {
            ch: self,
            held: Held::Block(idx),
            view,
        }))
    }

    /// Takes back the cell of a dropped inline message, for the next one (at most
    /// [`CELLS_KEPT`] are kept; a receiver that held more frees the rest).
    fn give_back_cell(&self, cell: NonNull<u8>) {
        // SAFETY: `cell` came from `Box::leak` of a `Box<[u8; INLINE_MAX]>` in
        // `inline_message`, and its message, the only holder, is being dropped.
        let cell = unsafe { Box::from_raw(cell.cast::<[u8; INLINE_MAX]>().as_ptr()) };
        let mut cells = self.cells.take();
        if cells.len() < CELLS_KEPT {
            cells.push(cell);
        }
        self.cells.set(cells);
    }

    /// The message-ring entry in `slot` of the receiving direction, read once.
    fn entry(&self, slot: usize) -> u64 {
        // Acquire: pairs with the sender's Release store of the entry (`commit_entry`): the
        // bytes it wrote into the block, or into the entry, are visible once its stamped entry
        // is (Relaxed would let us read them before).
        self.entry_word(self.rx, slot).load(Ordering::Acquire)
    }

    /// Gives block `idx` of the receiving direction back to the sender.
    fn release(&self, idx: usize) {
        // The returned ring is unshared (`Consumer::take_stamped`): no count of it lies in the
        // segment, and no room is looked for. The sender never has more blocks to take back
        // than the ring holds, as each is one it sent; a hostile sender that sent one twice
        // can make us write over a return it has not taken, which it alone sees (a foreign
        // stamp, or a block it did not send).
        let mut ring = self.ret_tx.get();
        // Release: pairs with the sender's Acquire load of the entry (`reclaim`): our reads of
        // the block happen before its next writes to it. `idx < block_count <= 2^20` leaves
        // the stamp's bits free.
        self.returned_word(self.rx, ring.next_slot())
            .store(idx as u64 | ring.stamp(), Ordering::Release);
        ring.commit_stamped();
        self.ret_tx.set(ring);
        // A sender waiting for a block sleeps without a timeout: it must be woken here.
        park::wake(self.ctl32(self.rx, S_WAIT));
    }
}

/// A received message, in place in its block (or, for a message of at most 56 bytes, which
/// came inline in its ring entry, a copy in this process). Derefs to a [`ShmView`] of its
/// bytes (read by copy: [`ShmView::to_vec`], [`ShmView::read_at`], [`ShmView::read`]);
/// dropping it gives the block back to the sender.
///
/// The sender could still write the block (an honest one does not until it comes back), so
/// no `&[u8]` to it is ever made: what you copy out is what you check and use. Holding a
/// message holds its block, and nothing else: an inline message's entry went back to the
/// sender when it was taken.
///
/// # Examples
///
/// ```no_run
/// # let ch = courier_shm::ShmChannel::connect("rpc", Default::default(), std::time::Duration::from_secs(5))?;
/// let msg = ch.recv()?;
/// let mut head = [0u8; 4];
/// msg.read_at(0, &mut head)?;
/// let all: Vec<u8> = msg.to_vec();
/// # Ok::<(), courier_shm::ShmError>(())
/// ```
#[derive(Debug)]
pub struct ShmMessage<'a> {
    ch: &'a ShmChannel,
    pub(super) held: Held,
    /// The message's `len` bytes, HELD by us.
    view: ShmView<'a>,
}

/// Where a received message lies, held until it drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    /// In this block of the receiving direction's pool.
    Block(usize),
    /// Copied out of its ring entry, in this cell (`INLINE_MAX` bytes, a leaked `Box`).
    Inline(NonNull<u8>),
}

impl ShmMessage<'_> {
    /// The bytes of a message that came inline, which are this process's own (the copy made
    /// as it was taken); `None` for a message in a block, which the sender could write.
    pub(crate) fn private_bytes(&self) -> Option<&[u8]> {
        match self.held {
            // SAFETY: the cell holds `len` bytes copied in before the message was made, and
            // nothing writes it until the message drops (it is this message's alone), so a
            // shared slice of it, borrowing the message, is sound.
            Held::Inline(cell) => Some(unsafe {
                std::slice::from_raw_parts(cell.as_ptr().cast_const(), self.view.len())
            }),
            Held::Block(_) => None,
        }
    }
}

impl<'a> std::ops::Deref for ShmMessage<'a> {
    type Target = ShmView<'a>;

    fn deref(&self) -> &ShmView<'a> {
        &self.view
    }
}

impl Drop for ShmMessage<'_> {
    fn drop(&mut self) {
        match self.held {
            Held::Block(idx) => self.ch.release(idx),
            Held::Inline(cell) => self.ch.give_back_cell(cell),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::layout::R_WAIT;
    use crate::channel::support::*;
    use crate::channel::{ShmConfig, WaitStrategy, CLIENT_TX};
    use crate::substrate::park::SLEEPING;
    use crate::sync::AtomicBool;
    use std::time::Duration;

    /// Inline messages are copies in cells of the receiver: many can be held at once (more
    /// than the ring holds), each intact; dropped, they leave at most `CELLS_KEPT` cells in
    /// the channel's stock, from which the next message takes one.
    #[test]
    fn held_inline_messages_leave_a_bounded_stock_of_cells() {
        let (l, c) = pair(ShmConfig::new().ring_depth(8));
        let stock = || {
            let cells = l.cells.take();
            let n = cells.len();
            l.cells.set(cells);
            n
        };
        let held: Vec<_> = (0..CELLS_KEPT as u64 + 10)
            .map(|i| {
                c.send(&i.to_le_bytes()).unwrap();
                l.try_recv().unwrap().unwrap()
            })
            .collect();
        assert_eq!(stock(), 0);
        for (i, m) in (0u64..).zip(&held) {
            assert_eq!(m.to_vec(), i.to_le_bytes());
        }
        drop(held);
        assert_eq!(stock(), CELLS_KEPT);
        c.send(b"x").unwrap();
        let m = l.try_recv().unwrap().unwrap();
        assert_eq!(stock(), CELLS_KEPT - 1);
        drop(m);
        assert_eq!(stock(), CELLS_KEPT);
    }

    #[test]
    fn recv_times_out_and_a_closed_peer_is_dead() {
        let (l, c) = pair(ShmConfig::new());
        assert!(matches!(l.recv_timeout(SHORT), Err(ShmError::Timeout)));
        assert!(l.try_recv().unwrap().is_none());
        c.send(b"last words").unwrap();
        drop(c);
        assert_eq!(l.recv().unwrap().to_vec(), b"last words");
        assert!(matches!(l.recv(), Err(ShmError::PeerDead)));
        assert!(matches!(l.try_recv(), Err(ShmError::PeerDead)));
        assert!(matches!(
            l.recv_with(WaitStrategy::BusySpin),
            Err(ShmError::PeerDead)
        ));
        assert!(matches!(l.send(b"x"), Err(ShmError::PeerDead)));
        assert!(matches!(l.loan(), Err(ShmError::PeerDead)));

        // A sender that never received learns it from the watcher too: as soon as the flag is
        // set (the hang-up reaches the watcher at once; the wait is a deadline, not a delay).
        let (l, c) = pair(ShmConfig::new());
        l.send(b"alive").unwrap();
        drop(c);
        wait_dead(&l);
        assert!(matches!(l.send(b"x"), Err(ShmError::PeerDead)));
        assert!(matches!(
            l.send_timeout(b"x", SHORT),
            Err(ShmError::PeerDead)
        ));
        assert!(matches!(l.loan(), Err(ShmError::PeerDead)));
    }

    #[test]
    fn a_hostile_peer_rewriting_the_sleep_word_cannot_keep_a_waiter_asleep() {
        let cfg = ShmConfig::new();
        let lay = cfg.layout().unwrap();
        let (l, c, evil) = pair_with(cfg);
        let word = lay.ctl[CLIENT_TX] + R_WAIT;
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            // Keeps putting SLEEPING back, so a single wake-up could be lost.
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    evil_u32(&evil, word, SLEEPING);
                    std::hint::spin_loop();
                }
            });
            let blocked = s.spawn(move || l.recv().map(|m| m.len()));
            std::thread::sleep(Duration::from_millis(30));
            drop(c);
            let r = blocked.join().unwrap();
            stop.store(true, Ordering::Relaxed);
            assert!(matches!(r, Err(ShmError::PeerDead)), "{r:?}");
        });
    }

    #[test]
    fn a_busy_spin_moves_off_the_cpu_of_an_awake_peer() {
        use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
        let mask = sched_getaffinity(None).unwrap();
        if mask.count() < 2 {
            eprintln!("skipped: this process may run on one CPU only");
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let pause = || {
            assert!(Instant::now() < deadline, "deadline passed");
            std::thread::sleep(Duration::from_micros(100));
        };
        // One attempt: the receiver spins, the sender waits awake on its CPU until the receiver
        // is elsewhere. Returns how often the receiver moved itself. The kernel's balancing may
        // move it first (the sender's CPU holds two runnable threads, the other none), and then
        // the attempt proves nothing: a new one starts. A receiver that never moves itself (a
        // yield in place of the move) fails every attempt.
        let attempt = || {
            let (l, c) = pair(ShmConfig::new());
            std::thread::scope(|s| {
                let r = s.spawn(move || {
                    let m = l.recv_with(WaitStrategy::BusySpin).map(|m| m.to_vec());
                    (m, courier_core::placement::moves_of_this_thread())
                });
                // The receiver's hint, seen through the other end's mapping.
                let hint = c.ctl32(c.tx, R_CPU);
                let first = loop {
                    match hint.load(Ordering::Relaxed) {
                        0 => pause(),
                        cpu => break cpu,
                    }
                };
                // Wait (awake) on the receiver's CPU: its spin keeps us from running there.
                let mut one = CpuSet::new();
                one.set(first as usize - 1);
                sched_setaffinity(None, &one).unwrap();
                assert!(matches!(c.recv_timeout(SHORT), Err(ShmError::Timeout)));
                // Past the deadline the receiver is answered all the same, so that a failure
                // is reported rather than a spin that never ends.
                while hint.load(Ordering::Relaxed) == first && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_micros(100));
                }
                sched_setaffinity(None, &mask).unwrap();
                c.send(b"moved").unwrap();
                let (m, moves) = r.join().unwrap();
                assert_eq!(m.unwrap(), b"moved");
                moves
            })
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            // Not the scheduler's own balancing: that does not count as a move of its own.
            if attempt() >= 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver did not move itself in {attempts} attempts"
            );
        }
        if attempts > 1 {
            eprintln!("moved itself at attempt {attempts} (the kernel moved it first before)");
        }
    }

    #[test]
    fn a_busy_spin_that_loses_slices_to_its_working_sender_yields_to_it() {
        use rustix::thread::sched_setaffinity;
        use rustix::time::{clock_gettime, ClockId};
        let Some((mask, one)) = crate::sys::pin_here() else {
            eprintln!("skipped: this thread may not be pinned to one CPU");
            return;
        };
        let cpu_time = || Duration::try_from(clock_gettime(ClockId::ThreadCPUTime)).unwrap();
        // The sender works for WORK on the receiver's CPU, then sends. A spin that only looks
        // would get about half of that CPU meanwhile (two runnable threads: the scheduler
        // alternates them every few milliseconds). This one loses a slice to the sender
        // within the first few, and from then on yields between looks: it runs only when
        // the sender's turn is over, for a look.
        const WORK: Duration = Duration::from_millis(200);
        let (l, c) = pair(ShmConfig::new());
        let (spun, pinned) = std::thread::scope(|s| {
            let sender = s.spawn(move || {
                let pinned = sched_setaffinity(None, &one).is_ok();
                let until = Instant::now() + WORK;
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                c.send(b"done").unwrap();
                pinned
            });
            let before = cpu_time();
            let m = l.recv_with(WaitStrategy::BusySpin).map(|m| m.to_vec());
            let spun = cpu_time() - before;
            assert_eq!(m.unwrap(), b"done");
            (spun, sender.join().unwrap())
        });
        sched_setaffinity(None, &mask).unwrap();
        assert!(pinned, "the sender could not be pinned");
        assert!(
            spun < WORK / 4,
            "the receiver took {spun:?} of the CPU in {WORK:?} beside its working sender"
        );
    }

    #[test]
    fn many_messages_across_threads_in_order() {
        let (l, c) = pair(ShmConfig::new().block_size(16).block_count(8).ring_depth(4));
        const N: u64 = 20_000;
        std::thread::scope(|s| {
            s.spawn(move || {
                for i in 0..N {
                    c.send(&i.to_le_bytes()).unwrap();
                }
            });
            for i in 0..N {
                let m = l.recv().unwrap();
                assert_eq!(u64::from_le_bytes(m.to_vec().try_into().unwrap()), i);
            }
        });
    }
}
