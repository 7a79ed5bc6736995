//! A checked single-producer single-consumer index ring over a region of a segment: the
//! message ring and the returned-block ring of each channel direction, the RPC request ring
//! (consumed by the server) and the RPC push ring (both ends).
//!
//! The ring is two counters in the segment (`tail`: entries pushed, written only by the
//! producer; `head`: entries taken, written only by the consumer; the stamped rings below
//! keep one or none of them there) and `depth` entry slots; an entry's slot is
//! `counter % depth`. Counters only grow (u64: they do not wrap in practice,
//! and the arithmetic is wrapping so a hostile value cannot make it panic).
//!
//! ```text
//! producer (one process)                     consumer (the other)
//! tail: its own, kept here                   head: its own, kept here
//! reserve: h = head word     (Acquire)       available: t = tail word       (Acquire)
//!          tail - h > depth ? Broken                    t - head > depth ? Broken
//!          tail - h == depth ? Full                     t == head ? empty
//! write entry[tail % depth]                  read entry[head % depth] once
//! commit: tail += 1; tail word = tail        advance: head += 1; head word = head
//!                            (Release)                                     (Release)
//! ```
//!
//! Ownership of a slot: the producer's while it is not in `head..tail`, the consumer's while it
//! is; it changes hands only through the two Release/Acquire pairs above (the producer's
//! commit makes the entry visible to the consumer; the consumer's advance makes its read of
//! the slot happen before the producer overwrites it).
//!
//! **Each side keeps its authoritative counter in its own memory and only ever stores it to
//! the segment; the peer's counter is read once into a local and checked (`0 <= distance <=
//! depth`) before use, so a hostile peer can make the ring report [`RingError::Broken`] but
//! never make this side read or write a slot outside `0..depth`.** What an entry says (a block
//! index, a length) is the caller's to check: it is as untrusted as any input from outside.
//!
//! # Stamped entries
//!
//! A ring whose entry words are `u64`s with bits 52..64 free (the channel's message ring: a
//! block index below 2^20 and a length below 2^32, or an inline message's length and flag;
//! the word may open a larger slot, as the channel's 64-byte entries) can carry each entry's
//! *lap* in those bits ([`Producer::stamp`]): `(counter / depth + 1) mod 2^12`. The consumer
//! then finds the next entry by reading its slot alone ([`Consumer::peek_stamped`]): the slot
//! holds this lap's stamp once the entry is written, and the previous lap's (or zero, before
//! the first lap) until then; the producer cannot be a whole lap ahead, since it never
//! overwrites a slot the consumer has not handed back. That saves the consumer a cache miss
//! per entry (the producer's counter, then the entry), and the producer's counter is then
//! never read. What else the slot holds (an inline message) the consumer reads between the
//! look and the hand-back:
//!
//! ```text
//! producer                                   consumer
//! reserve: as above                          e = entry[head % depth]         (Acquire)
//! slot[tail % depth]: the rest, then         stamp of e != stamp(head) ? empty
//! entry[tail % depth] = e | stamp(tail)      read the rest of the slot
//!                            (Release)       advance: as above
//! tail += 1 (kept here only)
//! ```
//!
//! A hostile producer can write any entry with any stamp: the consumer takes what the slot
//! says, and checks it as it checks any entry.
//!
//! The RPC request ring and the channel's returned ring are stamped too, and keep no counter
//! in the segment at all: their producer (a client; a receiver giving blocks back) never has
//! more entries queued than the ring holds (each is a call slot it owns, or a block the
//! consumer sent it), so it never waits for room and never reads the consumer's counter,
//! which stays private ([`Consumer::take_stamped`]). Its slot then holds this lap's stamp or
//! the previous lap's; any other is a broken producer.
//!
//! The functions take any [`Word64`], so that the loom model below runs this very code.

use crate::sync::{Ordering, Word64};

/// Why a ring operation could not be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RingError {
    /// The ring holds `depth` entries: the producer must wait for the consumer.
    Full,
    /// The peer's counter is impossible (more than `depth` entries apart from ours, or behind
    /// us), or an unshared stamped ring's slot holds a lap's stamp it cannot hold
    /// ([`Consumer::take_stamped`]): only a hostile or broken peer writes one.
    Broken,
}

/// The producer's end of a ring: the count of entries it pushed, and the consumer's count as
/// last read.
///
/// The producer reads the consumer's shared counter only when the last value it read leaves
/// no room. So the counter's cache line stays with the consumer, whose store of it then
/// costs no wait for the line (a store followed by a fence, as every wake-up handshake does,
/// would otherwise stall the consumer until the producer's copy was invalidated), and a
/// push reads no line the consumer writes. A stale count only understates the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Producer {
    tail: u64,
    depth: u64,
    /// The consumer's counter when last read (checked then).
    seen_head: u64,
}

impl Producer {
    /// The producer of an empty ring of `depth >= 1` slots.
    pub(crate) fn new(depth: usize) -> Producer {
        debug_assert!(depth >= 1);
        Producer {
            tail: 0,
            depth: depth as u64,
            seen_head: 0,
        }
    }

    /// How many entries are in the ring, from the consumer's counter read once.
    ///
    /// # Errors
    ///
    /// [`RingError::Broken`] if the counter is impossible.
    pub(crate) fn in_ring(&mut self, head: &impl Word64) -> Result<u64, RingError> {
        // Acquire: pairs with the consumer's Release store in `Consumer::advance`: its reads of
        // the slots before `head` happen before we overwrite them (Relaxed would let us reuse
        // a slot it is still reading).
        let head = head.load(Ordering::Acquire);
        let used = self.tail.wrapping_sub(head);
        if used > self.depth {
            return Err(RingError::Broken);
        }
        self.seen_head = head;
        Ok(used)
    }

    /// The slot the next entry goes in.
    ///
    /// # Errors
    ///
    /// [`RingError::Full`] if the ring holds `depth` entries; [`RingError::Broken`].
    pub(crate) fn reserve(&mut self, head: &impl Word64) -> Result<usize, RingError> {
        // Room by the count last read needs no new read (its Acquire, then, ordered the
        // consumer's reads of the slots it had freed before our writes to them).
        if self.tail.wrapping_sub(self.seen_head) >= self.depth && self.in_ring(head)? == self.depth
        {
            return Err(RingError::Full);
        }
        Ok((self.tail % self.depth) as usize)
    }

    /// Publishes the entry written into the slot [`Producer::reserve`] gave.
    pub(crate) fn commit(&mut self, tail: &impl Word64) {
        self.tail = self.tail.wrapping_add(1);
        // Release: pairs with the consumer's Acquire load in `Consumer::available`: the entry,
        // and whatever this side wrote before it (a message block), are visible to a consumer
        // that sees the new tail (Relaxed would let it read a stale entry).
        tail.store(self.tail, Ordering::Release);
    }

    /// Reserves a slot, lets `write` fill it, and commits it. (The tests' and the model's way;
    /// the channel's message ring reserves, then commits a stamped entry.)
    ///
    /// # Errors
    ///
    /// As [`Producer::reserve`]; nothing was written.
    #[cfg(test)]
    pub(crate) fn push(
        &mut self,
        head: &impl Word64,
        tail: &impl Word64,
        write: impl FnOnce(usize),
    ) -> Result<(), RingError> {
        let slot = self.reserve(head)?;
        write(slot);
        self.commit(tail);
        Ok(())
    }
}

/// The bits of a stamped entry that carry its lap (see "Stamped entries").
pub(crate) const STAMP_MASK: u64 = 0xfff << 52;

/// The stamp of the entry with counter `n` in a ring of `depth` slots: its lap, plus one (so
/// that a slot never written, zero, is never this lap's).
pub(crate) fn stamp(n: u64, depth: u64) -> u64 {
    ((n / depth).wrapping_add(1) << 52) & STAMP_MASK
}

/// The stamp that the slot of the entry with counter `n` holds before that entry is written:
/// the previous lap's (zero before the first lap, as the slot was never written).
pub(crate) fn stamp_before(n: u64, depth: u64) -> u64 {
    ((n / depth) << 52) & STAMP_MASK
}

impl Producer {
    /// The slot the next entry goes in, for a producer that never has more entries queued
    /// than the ring holds and so never looks for room (the consumer's counter stays
    /// unshared: [`Consumer::take_stamped`]); any other reserves with
    /// [`Producer::reserve`].
    pub(crate) fn next_slot(&self) -> usize {
        (self.tail % self.depth) as usize
    }

    /// The stamp the entry going into the slot [`Producer::reserve`] (or
    /// [`Producer::next_slot`]) gave must carry.
    pub(crate) fn stamp(&self) -> u64 {
        stamp(self.tail, self.depth)
    }

    /// Publishes the stamped entry written into the slot [`Producer::reserve`] (or
    /// [`Producer::next_slot`]) gave (with a Release store: that store is what the consumer
    /// sees): only counts it.
    pub(crate) fn commit_stamped(&mut self) {
        self.tail = self.tail.wrapping_add(1);
    }
}

/// The consumer's end of a ring: the count of entries it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Consumer {
    head: u64,
    depth: u64,
}

impl Consumer {
    /// The consumer of an empty ring of `depth >= 1` slots.
    pub(crate) fn new(depth: usize) -> Consumer {
        debug_assert!(depth >= 1);
        Consumer {
            head: 0,
            depth: depth as u64,
        }
    }

    /// How many entries wait, from the producer's counter read once.
    ///
    /// # Errors
    ///
    /// [`RingError::Broken`] if the counter is impossible.
    pub(crate) fn available(&self, tail: &impl Word64) -> Result<u64, RingError> {
        // Acquire: pairs with the producer's Release store in `Producer::commit`: the entries
        // before `tail` (and what they describe) are visible.
        let tail = tail.load(Ordering::Acquire);
        let n = tail.wrapping_sub(self.head);
        if n > self.depth {
            return Err(RingError::Broken);
        }
        Ok(n)
    }

    /// How many entries this side has taken (its own counter).
    pub(crate) fn taken(&self) -> u64 {
        self.head
    }

    /// The slot of the `i`-th waiting entry (`i < available`).
    pub(crate) fn slot(&self, i: u64) -> usize {
        (self.head.wrapping_add(i) % self.depth) as usize
    }

    /// Hands the first `n` waiting entries (all read) back to the producer.
    pub(crate) fn advance(&mut self, n: u64, head: &impl Word64) {
        self.head = self.head.wrapping_add(n);
        // Release: pairs with the producer's Acquire load in `Producer::in_ring`: our reads of
        // the slots happen before it overwrites them.
        head.store(self.head, Ordering::Release);
    }

    /// Whether the next entry of a stamped ring is there, from its slot (`read` reads the slot
    /// once, with Acquire).
    pub(crate) fn ready_stamped(&self, read: impl FnOnce(usize) -> u64) -> bool {
        self.peek_stamped(read).is_some()
    }

    /// The next entry of a stamped ring, if its slot holds it, without taking it: `read`
    /// reads the slot once (with Acquire: pairs with the producer's Release store of the
    /// entry, so what the entry describes is visible). The entry comes without its stamp. A
    /// consumer that reads more of the slot than the entry (the channel's inline messages,
    /// which lie in it) does so before it hands the slot back with
    /// [`advance`](Self::advance).
    pub(crate) fn peek_stamped(&self, read: impl FnOnce(usize) -> u64) -> Option<u64> {
        let e = read(self.slot(0));
        (e & STAMP_MASK == stamp(self.head, self.depth)).then_some(e & !STAMP_MASK)
    }

    /// Takes the next entry of a stamped ring, if its slot holds it
    /// ([`peek_stamped`](Self::peek_stamped)), then the slot goes back. (The tests' and the
    /// models' way; the channel reads an inline message out of the slot in between.)
    #[cfg(test)]
    pub(crate) fn pop_stamped(
        &mut self,
        head: &impl Word64,
        read: impl FnOnce(usize) -> u64,
    ) -> Option<u64> {
        let e = self.peek_stamped(read)?;
        self.advance(1, head);
        Some(e)
    }

    /// Takes the next entry ([`peek_stamped`](Self::peek_stamped), then the count moves on)
    /// of a ring whose producer never waits for room and so never reads our counter: it
    /// stays in our memory, unshared (the RPC request ring: a client never has more calls
    /// queued than the ring holds, each being a call slot it owns until the server has taken
    /// it). Such a producer never overwrites an entry we have not taken, so the slot holds
    /// this lap's stamp (an entry) or the previous lap's (none yet); any other is a broken
    /// producer.
    ///
    /// # Errors
    ///
    /// [`RingError::Broken`] if the slot holds another lap's stamp; nothing was taken.
    pub(crate) fn take_stamped(
        &mut self,
        read: impl FnOnce(usize) -> u64,
    ) -> Result<Option<u64>, RingError> {
        let e = self.look_stamped(read)?;
        if e.is_some() {
            self.pass();
        }
        Ok(e)
    }

    /// Moves past the entry [`look_stamped`](Self::look_stamped) gave (a ring whose counter
    /// stays unshared, as [`take_stamped`](Self::take_stamped)'s): a consumer that refuses an
    /// entry leaves it, and meets it again at its next look.
    pub(crate) fn pass(&mut self) {
        self.head = self.head.wrapping_add(1);
    }

    /// The next entry of a ring [`take_stamped`](Self::take_stamped) takes from, if its slot
    /// holds it, without taking it (the slot is read once, as there).
    ///
    /// # Errors
    ///
    /// [`RingError::Broken`] if the slot holds another lap's stamp.
    pub(crate) fn look_stamped(
        &self,
        read: impl FnOnce(usize) -> u64,
    ) -> Result<Option<u64>, RingError> {
        let e = read(self.slot(0));
        match e & STAMP_MASK {
            s if s == stamp(self.head, self.depth) => Ok(Some(e & !STAMP_MASK)),
            s if s == stamp_before(self.head, self.depth) => Ok(None),
            _ => Err(RingError::Broken),
        }
    }

    /// Takes the next entry, if any: `read` reads its slot (once), then the slot goes back.
    /// (The tests' and the model's way of taking one entry; the transports take theirs
    /// with [`available`](Self::available) and [`advance`](Self::advance), or with
    /// [`take_stamped`](Self::take_stamped).)
    ///
    /// # Errors
    ///
    /// [`RingError::Broken`] if the producer's counter is impossible; nothing was taken.
    #[cfg(test)]
    pub(crate) fn pop<T>(
        &mut self,
        tail: &impl Word64,
        head: &impl Word64,
        read: impl FnOnce(usize) -> T,
    ) -> Result<Option<T>, RingError> {
        if self.available(tail)? == 0 {
            return Ok(None);
        }
        let v = read(self.slot(0));
        self.advance(1, head);
        Ok(Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::AtomicU64;

    #[test]
    fn entries_go_through_in_order_and_a_full_ring_is_refused() {
        let (head, tail) = (AtomicU64::new(0), AtomicU64::new(0));
        let slots: Vec<AtomicU64> = (0..3).map(|_| AtomicU64::new(0)).collect();
        let (mut p, mut c) = (Producer::new(3), Consumer::new(3));
        let mut next = 0u64;
        let mut want = 0u64;
        for round in 0..10 {
            // Fill the ring, then one more is refused and writes nothing.
            while p.reserve(&head) != Err(RingError::Full) {
                p.push(&head, &tail, |s| slots[s].store(next, Ordering::Relaxed))
                    .unwrap();
                next += 1;
            }
            assert_eq!(p.in_ring(&head), Ok(3));
            let r = p.push(&head, &tail, |_| panic!("wrote into a full ring"));
            assert_eq!(r, Err(RingError::Full));
            // Take one or all.
            let take = if round % 2 == 0 { 1 } else { 3 };
            for _ in 0..take {
                let got = c.pop(&tail, &head, |s| slots[s].load(Ordering::Relaxed));
                assert_eq!(got, Ok(Some(want)));
                want += 1;
            }
        }
        assert_eq!(next - want, p.in_ring(&head).unwrap());
    }

    #[test]
    fn stamped_entries_are_taken_once_in_order_across_the_stamps_wrap() {
        let head = AtomicU64::new(0);
        let slots: Vec<AtomicU64> = (0..3).map(|_| AtomicU64::new(0)).collect();
        let (mut p, mut c) = (Producer::new(3), Consumer::new(3));
        let read = |s: usize| slots[s].load(Ordering::Acquire);
        // Nothing written yet: no slot holds the first lap's stamp.
        assert!(!c.ready_stamped(read));
        assert_eq!(c.pop_stamped(&head, read), None);
        let (mut next, mut want) = (0u64, 0u64);
        // 4096 laps and more: the stamp wraps to zero and still tells the laps apart.
        while want < 3 * 4100 {
            while let Ok(s) = p.reserve(&head) {
                slots[s].store(next | p.stamp(), Ordering::Release);
                p.commit_stamped();
                next += 1;
            }
            while c.ready_stamped(read) {
                assert_eq!(c.pop_stamped(&head, read), Some(want));
                want += 1;
            }
            assert_eq!(want, next, "all that was pushed is taken, once");
            assert_eq!(c.pop_stamped(&head, read), None);
        }
        // The slot the consumer looks at next holds the last lap's entry: not taken.
        assert_eq!(
            slots[c.slot(0)].load(Ordering::Relaxed) & !STAMP_MASK,
            want - 3
        );
    }

    #[test]
    fn impossible_counters_are_broken() {
        let (head, tail) = (AtomicU64::new(0), AtomicU64::new(0));
        let (mut p, mut c) = (Producer::new(2), Consumer::new(2));
        assert_eq!(c.pop(&tail, &head, |_| ()), Ok(None));
        // The producer's tail runs more than `depth` ahead, or behind the consumer.
        for bad in [3, u64::MAX] {
            tail.store(bad, Ordering::Relaxed);
            assert_eq!(
                c.pop(&tail, &head, |_| panic!("read")),
                Err(RingError::Broken)
            );
        }
        tail.store(0, Ordering::Relaxed);
        // The consumer's head runs ahead of what was pushed: seen as soon as the producer
        // reads it, which it does once the head it last read leaves no room.
        p.push(&head, &tail, |_| ()).unwrap();
        p.push(&head, &tail, |_| ()).unwrap();
        head.store(3, Ordering::Relaxed);
        assert_eq!(p.reserve(&head), Err(RingError::Broken));
        assert_eq!(
            p.push(&head, &tail, |_| panic!("write")),
            Err(RingError::Broken)
        );
        head.store(0, Ordering::Relaxed);
        assert_eq!(p.reserve(&head), Err(RingError::Full));
        assert_eq!(c.available(&tail), Ok(2));
    }

    #[test]
    fn an_unshared_stamped_consumer_takes_in_order_and_sees_a_foreign_stamp() {
        let slots: Vec<AtomicU64> = (0..3).map(|_| AtomicU64::new(0)).collect();
        let mut c = Consumer::new(3);
        let read = |s: usize| slots[s].load(Ordering::Acquire);
        assert_eq!(c.take_stamped(read), Ok(None));
        // A producer that never waits for room: it writes whenever it has an entry, and never
        // has more than three waiting.
        let (mut pushed, mut want) = (0u64, 0u64);
        for round in 0..7u64 {
            for _ in 0..=round % 3 {
                let s = (pushed % 3) as usize;
                // Before it is written, the slot holds the previous lap's stamp.
                let before = slots[s].load(Ordering::Relaxed) & STAMP_MASK;
                assert_eq!(before, stamp_before(pushed, 3));
                slots[s].store((100 + pushed) | stamp(pushed, 3), Ordering::Release);
                pushed += 1;
            }
            while let Some(e) = c.take_stamped(read).unwrap() {
                assert_eq!(e, 100 + want);
                want += 1;
            }
            assert_eq!((want, c.taken()), (pushed, pushed));
        }
        // An entry of another lap than this one or the one before (a hostile producer's)
        // is not taken and breaks the ring; nothing moves.
        let s = c.slot(0);
        // (`pushed` is 13: this lap's stamp is 5, the one before 4; these are 6, 3 and 0.)
        for bad in [stamp(pushed + 3, 3), stamp_before(pushed - 3, 3), 0] {
            slots[s].store(5 | bad, Ordering::Relaxed);
            assert_eq!(c.take_stamped(read), Err(RingError::Broken));
            assert_eq!(c.taken(), pushed);
        }
        slots[s].store(5 | stamp_before(pushed, 3), Ordering::Relaxed);
        assert_eq!(c.take_stamped(read), Ok(None));
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! Every interleaving of a producer and a consumer on a ring of depth 2 passing 3 entries
    //! (so the ring is full at least once in many interleavings): no entry is lost, duplicated
    //! or reordered, and the producer never writes a slot the consumer may still be reading
    //! (the entries are plain cells, so loom reports such a race, or a read of an entry whose
    //! write it has not seen, as a failure).
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{fence, AtomicU64};
    use loom::sync::Arc;

    const DEPTH: usize = 2;
    const N: u64 = 3;

    /// The slot for the producer's next entry, once the ring has room.
    fn reserve(p: &mut Producer, head: &AtomicU64) -> usize {
        loop {
            match p.reserve(head) {
                Ok(s) => break s,
                Err(RingError::Full) => loom::thread::yield_now(),
                Err(RingError::Broken) => panic!("an honest ring is never broken"),
            }
        }
    }

    struct Ring {
        head: AtomicU64,
        tail: AtomicU64,
        slots: [UnsafeCell<u64>; DEPTH],
    }

    #[test]
    fn entries_are_never_lost_duplicated_or_reordered() {
        loom::model(|| {
            let ring = Arc::new(Ring {
                head: AtomicU64::new(0),
                tail: AtomicU64::new(0),
                slots: [UnsafeCell::new(0), UnsafeCell::new(0)],
            });
            let r = Arc::clone(&ring);
            let producer = loom::thread::spawn(move || {
                let mut p = Producer::new(DEPTH);
                let mut fulls = 0;
                for v in 1..=N {
                    loop {
                        // SAFETY: the ring gives this slot to the producer until commit.
                        let put = |s: usize| r.slots[s].with_mut(|e| unsafe { *e = v });
                        match p.push(&r.head, &r.tail, put) {
                            Ok(()) => break,
                            Err(RingError::Full) => {
                                fulls += 1;
                                loom::thread::yield_now();
                            }
                            Err(RingError::Broken) => panic!("an honest ring is never broken"),
                        }
                    }
                }
                fulls
            });
            let mut c = Consumer::new(DEPTH);
            let mut got = Vec::new();
            while got.len() < N as usize {
                // SAFETY: the ring gives this slot to the consumer until advance.
                let take = |s: usize| ring.slots[s].with(|e| unsafe { *e });
                match c.pop(&ring.tail, &ring.head, take) {
                    Ok(Some(v)) => got.push(v),
                    Ok(None) => loom::thread::yield_now(),
                    Err(e) => panic!("an honest ring is never {e:?}"),
                }
            }
            assert_eq!(got, [1, 2, 3]);
            producer.join().unwrap();
            // Nothing more arrives.
            assert_eq!(c.available(&ring.tail), Ok(0));
        });
    }

    /// A stamped ring as the channel uses it, with `P` payload cells: the producer writes a
    /// cell before it stores the entry, and the consumer reads it after the entry (a block
    /// the entry names, or the entry's own slot for an inline message).
    struct Stamped<const P: usize> {
        head: AtomicU64,
        slots: [AtomicU64; DEPTH],
        payload: [UnsafeCell<u64>; P],
    }

    impl<const P: usize> Stamped<P> {
        fn new() -> Arc<Self> {
            Arc::new(Stamped {
                head: AtomicU64::new(0),
                slots: std::array::from_fn(|_| AtomicU64::new(0)),
                payload: std::array::from_fn(|_| UnsafeCell::new(0)),
            })
        }
    }

    #[test]
    fn stamped_entries_are_never_lost_duplicated_or_reordered() {
        loom::model(|| {
            // One payload cell per entry, as blocks.
            let ring = Stamped::<{ N as usize }>::new();
            let r = Arc::clone(&ring);
            let producer = loom::thread::spawn(move || {
                let mut p = Producer::new(DEPTH);
                for v in 1..=N {
                    let s = reserve(&mut p, &r.head);
                    let cell = (v - 1) as usize;
                    // SAFETY: the payload cell is the producer's until its entry is stored.
                    r.payload[cell].with_mut(|e| unsafe { *e = v * 10 });
                    r.slots[s].store(cell as u64 | p.stamp(), Ordering::Release);
                    p.commit_stamped();
                }
            });
            let mut c = Consumer::new(DEPTH);
            let mut got = Vec::new();
            while got.len() < N as usize {
                let read = |s: usize| ring.slots[s].load(Ordering::Acquire);
                match c.pop_stamped(&ring.head, read) {
                    // SAFETY: the producer never writes a payload cell again once its entry
                    // is stored; loom reports the read if the entry's store did not make
                    // the write visible.
                    Some(cell) => got.push(ring.payload[cell as usize].with(|e| unsafe { *e })),
                    None => loom::thread::yield_now(),
                }
            }
            assert_eq!(got, [10, 20, 30]);
            producer.join().unwrap();
            assert!(!c.ready_stamped(|s| ring.slots[s].load(Ordering::Acquire)));
        });
    }

    /// The channel's inline messages: each payload lies in its entry's slot (one payload
    /// cell per slot), which the consumer reads (copies out) after the entry and before it
    /// hands the slot back. With two slots and three entries, the third goes into the first
    /// one's slot: loom reports the producer's write if it could overlap the consumer's read
    /// of that slot.
    #[test]
    fn an_inline_payload_is_read_before_its_slot_goes_back() {
        loom::model(|| {
            let ring = Stamped::<DEPTH>::new();
            let r = Arc::clone(&ring);
            let producer = loom::thread::spawn(move || {
                let mut p = Producer::new(DEPTH);
                for v in 1..=N {
                    let s = reserve(&mut p, &r.head);
                    // SAFETY: the slot is the producer's until its entry is stored.
                    r.payload[s].with_mut(|e| unsafe { *e = v * 10 });
                    r.slots[s].store(v | p.stamp(), Ordering::Release);
                    p.commit_stamped();
                }
            });
            let read = |s: usize| ring.slots[s].load(Ordering::Acquire);
            let mut c = Consumer::new(DEPTH);
            let mut got = Vec::new();
            while got.len() < N as usize {
                let Some(e) = c.peek_stamped(read) else {
                    loom::thread::yield_now();
                    continue;
                };
                // SAFETY: the slot is the consumer's from its entry until it is handed back;
                // loom reports the read if the producer could write it meanwhile.
                let v = ring.payload[c.slot(0)].with(|p| unsafe { *p });
                c.advance(1, &ring.head);
                got.push((e, v));
            }
            assert_eq!(got, [(1, 10), (2, 20), (3, 30)]);
            producer.join().unwrap();
        });
    }

    /// The channel's blocks: each goes forward through the message ring and comes back
    /// through the returned ring (stamped, no counter shared: the receiver never has more
    /// blocks to give back than its slots). With two blocks and three messages, the third
    /// goes in the first one's block once it is back: loom reports the sender's write if it
    /// could overlap the receiver's read of that block.
    #[test]
    fn a_returned_block_is_read_before_the_sender_writes_it_again() {
        loom::model(|| {
            // The payload cells are the two blocks.
            let ring = Stamped::<2>::new();
            let returned: Arc<[AtomicU64; 2]> =
                Arc::new(std::array::from_fn(|_| AtomicU64::new(0)));
            let (r, back) = (Arc::clone(&ring), Arc::clone(&returned));
            let sender = loom::thread::spawn(move || {
                let mut p = Producer::new(DEPTH);
                let mut ret = Consumer::new(2);
                let mut free = vec![1u64, 0];
                for v in 1..=N {
                    let block = loop {
                        if let Some(b) = free.pop() {
                            break b;
                        }
                        match ret.take_stamped(|s| back[s].load(Ordering::Acquire)) {
                            Ok(Some(b)) => free.push(b),
                            Ok(None) => loom::thread::yield_now(),
                            Err(e) => panic!("an honest receiver's returns are never {e:?}"),
                        }
                    };
                    // SAFETY: the block is the sender's from its return (or the start) until
                    // its entry is stored.
                    r.payload[block as usize].with_mut(|e| unsafe { *e = v * 10 });
                    let s = reserve(&mut p, &r.head);
                    r.slots[s].store(block | p.stamp(), Ordering::Release);
                    p.commit_stamped();
                }
            });
            let mut c = Consumer::new(DEPTH);
            let mut returns = Producer::new(2);
            let mut got = Vec::new();
            while got.len() < N as usize {
                let read = |s: usize| ring.slots[s].load(Ordering::Acquire);
                let Some(block) = c.pop_stamped(&ring.head, read) else {
                    loom::thread::yield_now();
                    continue;
                };
                // SAFETY: the block is the receiver's from its entry until it goes back;
                // loom reports the read if the sender could write it meanwhile.
                got.push(ring.payload[block as usize].with(|e| unsafe { *e }));
                returned[returns.next_slot()].store(block | returns.stamp(), Ordering::Release);
                returns.commit_stamped();
            }
            assert_eq!(got, [10, 20, 30]);
            sender.join().unwrap();
        });
    }

    /// The RPC request ring: stamped, no counter shared, a producer (the client) that queues
    /// a slot again only once the consumer is done with its last entry, and the sleep
    /// handshake of a worker: it announces its sleep, fences, looks at the ring once more and
    /// sleeps on the bell word as read before the announcement; the client stores its entry,
    /// fences, and rings the bell if it sees a sleeper.
    struct Requests {
        slots: [AtomicU64; 1],
        /// Entries the consumer is done with (the slot's call ended: the client may reuse it).
        done: AtomicU64,
        /// The worker's announcement (`srv_sleep`).
        sleeping: AtomicU64,
        /// The doorbell: the worker sleeps while it holds the value it read.
        bell: AtomicU64,
        payload: [UnsafeCell<u64>; 2],
    }

    #[test]
    fn requests_go_through_a_reused_slot_in_order_and_a_sleeping_worker_is_always_rung() {
        loom::model(|| {
            let ring = Arc::new(Requests {
                slots: [AtomicU64::new(0)],
                done: AtomicU64::new(0),
                sleeping: AtomicU64::new(0),
                bell: AtomicU64::new(0),
                payload: [UnsafeCell::new(0), UnsafeCell::new(0)],
            });
            let r = Arc::clone(&ring);
            let client = loom::thread::spawn(move || {
                let mut requests = Producer::new(1);
                for v in 0..2u64 {
                    // The one slot is queued again only once its call ended.
                    while r.done.load(Ordering::Acquire) < v {
                        loom::thread::yield_now();
                    }
                    // SAFETY: the payload cell is the client's until its entry is stored.
                    r.payload[v as usize].with_mut(|e| unsafe { *e = 10 + v });
                    r.slots[requests.next_slot()].store(v | requests.stamp(), Ordering::Release);
                    requests.commit_stamped();
                    fence(Ordering::SeqCst);
                    if r.sleeping.load(Ordering::SeqCst) != 0 {
                        r.bell.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
            let mut c = Consumer::new(1);
            let mut got = Vec::new();
            let read = |s: usize| ring.slots[s].load(Ordering::Acquire);
            let take = |c: &mut Consumer, got: &mut Vec<u64>| match c.take_stamped(read) {
                Ok(Some(cell)) => {
                    // SAFETY: the client never writes a payload cell again once its entry
                    // is stored.
                    got.push(ring.payload[cell as usize].with(|e| unsafe { *e }));
                    ring.done.store(got.len() as u64, Ordering::Release);
                    true
                }
                Ok(None) => false,
                Err(e) => panic!("an honest client's ring is never {e:?}"),
            };
            while got.len() < 2 {
                if take(&mut c, &mut got) {
                    continue;
                }
                let bell = ring.bell.load(Ordering::SeqCst);
                ring.sleeping.store(1, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                if !take(&mut c, &mut got) {
                    // Asleep until rung: a lost wake-up spins here for ever.
                    while ring.bell.load(Ordering::SeqCst) == bell {
                        loom::thread::yield_now();
                    }
                }
                ring.sleeping.store(0, Ordering::SeqCst);
            }
            assert_eq!(got, [10, 11]);
            client.join().unwrap();
        });
    }
}
