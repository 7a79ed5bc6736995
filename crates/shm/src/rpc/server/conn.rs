//! One client process's connection, server side ([`Conn`]): its start (the wake-up socket),
//! taking requests off its ring, cutting off a client that breaks the protocol, and what
//! happens when the client dies ([`client_gone`]); ringing the client's bell.

use crate::error::ShmError;
use crate::rpc::layout::{Shared, BELL_DOORBELL, CBELL, CBELL_WAIT, F_ASYNC, SRV_BELL, S_FLAGS};
use crate::rpc::slot;
use crate::rpc::BELL_HELLO;
use crate::segment::Segment;
use crate::substrate::ring::{self, Consumer, Producer, RingError, STAMP_MASK};
use crate::sync::{fence, AtomicBool, AtomicIsize, AtomicU32, AtomicU64, Ordering};
use crate::sys::{self, Credentials};
use crate::watch::Watch;
use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};

use super::lend::Lends;
use super::{Core, Counters};

/// One client process's connection, server side.
pub(super) struct Conn {
    pub(super) id: u64,
    pub(super) sh: Shared,
    pub(super) peer: Credentials,
    pub(super) counters: Arc<Counters>,
    pub(super) core: Weak<Core>,
    pub(super) watch: Watch,
    /// Our copy of the connection socket: lent buffers' descriptors arrive on it.
    pub(super) sock: Mutex<OwnedFd>,
    /// Our end of the connection's wake-up socket (the client sends a byte when a worker
    /// sleeps): watched by the workers' epoll, or, where they sleep on the doorbells, read by
    /// the connection's watcher (through a second descriptor), as cold connections' clients
    /// ring it.
    pub(super) kick: OwnedFd,
    /// The client's doorbell as a sleeping worker last saw it change (`note_ring`).
    last_bell: AtomicU32,
    /// Doorbell changes (and wakes on an unchanged doorbell) seen, less the calls taken
    /// since, down to minus one per slot (`note_ring`).
    idle_bells: AtomicIsize,
    /// The consumer side of the request ring (the substrate's checked ring).
    pub(super) requests: Mutex<Consumer>,
    /// A copy of the entries `requests` took, for cheap looks.
    pub(super) head_seen: AtomicU64,
    /// `head` when the client was seen dead (`u64::MAX` while it lives): its last messages
    /// are still taken, at most one ring's worth, whatever its ring entries say.
    pub(super) head_at_death: AtomicU64,
    /// Which slots are taken and not yet completed (a client may not queue them again).
    pub(super) in_service: Vec<AtomicBool>,
    pub(super) lends: Mutex<Lends>,
    /// Live subscriptions.
    pub(super) subs: Mutex<HashSet<u32>>,
    /// Subscriptions whose end could not be pushed yet (the ring was full): pushed before
    /// anything else, as soon as there is room.
    pub(super) ends: Mutex<Vec<u32>>,
    pub(super) has_ends: AtomicBool,
    /// The producer side of the push ring (the substrate's checked ring).
    pub(super) push: Mutex<Producer>,
    /// The client broke the protocol: it was hung up on and its calls are ignored.
    pub(super) broken: AtomicBool,
    /// On the doorbells: neither a call nor a ring for a round of the accept thread, and no
    /// worker's look, announcement or sleep covers the connection unless asked to
    /// (`Core::cold_look`); `srv_sleep` holds [`SLEEP_COLD`], so the client rings the wake-up
    /// socket, which the watcher reads ([`Core::cool_idle`], [`Core::warm`]). Changed with
    /// the connection's place in the server's list, under `Core::sleeping` and that list's
    /// write lock.
    ///
    /// [`SLEEP_COLD`]: crate::rpc::layout::SLEEP_COLD
    pub(super) cold: AtomicBool,
    /// A call was taken, or a ring seen, since the accept thread's last round, or the
    /// connection is new (Relaxed: a hint).
    pub(super) active: AtomicBool,
}

/// How many doorbell changes, beyond one per slot, a client may show ahead of the calls it
/// makes before it is cut off ([`Conn::note_ring`]).
const IDLE_BELLS: usize = 64;

impl Conn {
    pub(super) fn start(
        core: &Arc<Core>,
        mut seg: Segment,
        sock: OwnedFd,
        peer: Credentials,
    ) -> Result<Arc<Conn>, ShmError> {
        // The client has the segment now; we keep only the mapping.
        seg.close_fd();
        let sh = Shared { seg, lay: core.lay };
        // How to wake a sleeping worker: before the client learns of the connection (it
        // reads this once, after the wake-up socket below).
        let bell = if core.poller.doorbells {
            BELL_DOORBELL
        } else {
            0
        };
        sh.u32(SRV_BELL).store(bell, Ordering::Relaxed);
        let ours = sock
            .try_clone()
            .map_err(ShmError::io("duplicating the connection socket"))?;
        // The client's second handshake message: its end of the wake-up socket.
        let (kick, theirs) =
            sys::dgram_pair().map_err(ShmError::io("creating a wake-up socket"))?;
        // Our end only (the client's is another socket): workers read it without blocking.
        sys::set_nonblocking(kick.as_fd()).map_err(ShmError::io("setting up a wake-up socket"))?;
        sys::send_with_fd(sock.as_fd(), &BELL_HELLO, Some(theirs.as_fd()))
            .map_err(ShmError::io("sending the wake-up socket"))?;
        drop(theirs);
        let id = core.next_conn.fetch_add(1, Ordering::Relaxed);
        sys::epoll_add(core.poller.epoll.as_fd(), kick.as_fd(), id + 1)
            .map_err(ShmError::io("watching a wake-up socket"))?;
        let weak = Arc::downgrade(core);
        let slots = core.lay.slots;
        let gone = {
            let weak = weak.clone();
            move || client_gone(&weak, id)
        };
        let watch = if core.poller.doorbells {
            // A cold connection's client rings the wake-up socket: the watcher reads it and
            // rings the server's word for it (the workers' epoll is not waited on here).
            let bell = kick
                .try_clone()
                .map_err(ShmError::io("duplicating a wake-up socket"))?;
            let weak = weak.clone();
            Watch::start_with_bell(sock, bell, move || ring_for_cold(&weak, id), gone)?
        } else {
            Watch::start(sock, gone)?
        };
        Ok(Arc::new(Conn {
            id,
            sh,
            peer,
            counters: Arc::clone(&core.counters),
            core: weak,
            watch,
            sock: Mutex::new(ours),
            kick,
            requests: Mutex::new(Consumer::new(slots)),
            head_seen: AtomicU64::new(0),
            head_at_death: AtomicU64::new(u64::MAX),
            in_service: (0..slots).map(|_| AtomicBool::new(false)).collect(),
            lends: Mutex::new(Lends::default()),
            subs: Mutex::new(HashSet::new()),
            ends: Mutex::new(Vec::new()),
            has_ends: AtomicBool::new(false),
            push: Mutex::new(Producer::new(core.lay.push_depth)),
            broken: AtomicBool::new(false),
            last_bell: AtomicU32::new(0),
            idle_bells: AtomicIsize::new(0),
            cold: AtomicBool::new(false),
            // Warm through the next round at least: a new client usually calls soon.
            active: AtomicBool::new(true),
        }))
    }

    pub(super) fn gone(&self) -> bool {
        self.watch.shared.is_dead() || self.broken.load(Ordering::Relaxed)
    }

    /// Whether the connection can be forgotten: the client broke the protocol (it was hung
    /// up on), or it is dead and its last messages were taken: none is queued, or a ring's
    /// worth was taken since its death (a dead client's counters are not waited on).
    pub(super) fn finished(&self) -> bool {
        if self.broken.load(Ordering::Relaxed) {
            return true;
        }
        if !self.watch.shared.is_dead() {
            return false;
        }
        let seen = self.head_seen.load(Ordering::Relaxed);
        let at_death = match self.head_at_death.load(Ordering::Relaxed) {
            u64::MAX => {
                self.head_at_death.store(seen, Ordering::Relaxed);
                seen
            }
            h => h,
        };
        !self.may_have_queued() || seen.wrapping_sub(at_death) >= self.sh.lay.slots as u64
    }

    pub(super) fn lock_subs(&self) -> std::sync::MutexGuard<'_, HashSet<u32>> {
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn lock_lends(&self) -> std::sync::MutexGuard<'_, Lends> {
        self.lends.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The (untrusted) entry of the request ring for counter `n`. Acquire: pairs with the
    /// client's Release store of the entry, so the slot record it wrote before is visible.
    fn entry(&self, n: u64) -> u64 {
        self.sh.u64(self.sh.lay.ring(n)).load(Ordering::Acquire)
    }

    /// Calls queued and not taken, as far as the (untrusted) stamps of the ring say: the
    /// entries after the last taken that hold their lap's stamp.
    pub(super) fn queued(&self) -> u64 {
        let seen = self.head_seen.load(Ordering::Relaxed);
        let depth = self.sh.lay.slots as u64;
        (0..depth)
            .map(|i| seen.wrapping_add(i))
            .take_while(|&n| self.entry(n) & STAMP_MASK == ring::stamp(n, depth))
            .count() as u64
    }

    /// Whether a call may be queued (a hint that errs towards "yes"): the ring's slot of the
    /// next entry holds anything but the stamp it had before that entry was written. (The
    /// next entry's counter comes from `head_seen`, which another worker may have moved on;
    /// then the slot holds the entry it took, of this lap, or a later lap's: that says
    /// "maybe", and the look under the lock decides.)
    pub(super) fn may_have_queued(&self) -> bool {
        let n = self.head_seen.load(Ordering::Relaxed);
        self.entry(n) & STAMP_MASK != ring::stamp_before(n, self.sh.lay.slots as u64)
    }

    /// Takes the next queued slot: `QUEUED -> TAKEN`. A slot the client withdrew is
    /// completed here and skipped; a client that breaks the ring's rules is cut off.
    pub(super) fn pop(&self) -> Option<usize> {
        // A dead client's messages are still taken (a one-way `send` just before its exit
        // is delivered); a broken one's are not.
        if self.broken.load(Ordering::Relaxed) {
            return None;
        }
        // A look without the lock, at the slot of the next entry: the one line the client
        // wrote to queue the call (no counter of its is read).
        if !self.may_have_queued() {
            return None;
        }
        // Waited for, not tried: the holder (another worker, a `try_pop`, the server's drop)
        // holds it only to take one entry, and may have looked before the entry came; a
        // worker that gave up here after announcing its sleep would sleep on a queued call
        // that the holder, if it looks no more, leaves there (until the end of its sleep,
        // up to 500 ms later).
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        // The entry is read again under the lock (`Consumer::take_stamped`): the look above
        // was only a hint. At most one ring's worth of withdrawn entries is skipped per call,
        // as many as the ring can hold at one look.
        for _ in 0..self.sh.lay.slots {
            let slot = match requests.take_stamped(|s| self.entry(s as u64)) {
                Ok(Some(slot)) => slot,
                Ok(None) => return None,
                // A stamp of neither this lap nor the one before.
                Err(RingError::Broken | RingError::Full) => {
                    self.cut_off();
                    return None;
                }
            };
            self.head_seen.store(requests.taken(), Ordering::Relaxed);
            // An entry is a slot index (below 4096): other bits set, or a slot out of range
            // or in service, is a client that breaks the ring.
            let slot = usize::try_from(slot).unwrap_or(usize::MAX);
            if slot >= self.sh.lay.slots || self.in_service[slot].swap(true, Ordering::AcqRel) {
                self.cut_off();
                return None;
            }
            let release = || self.in_service[slot].store(false, Ordering::Release);
            match slot::take(self.sh.state(slot), release) {
                slot::Take::Taken => {
                    self.counters.in_service.fetch_add(1, Ordering::Relaxed);
                    // A call: it accounts for one doorbell change (`note_ring`).
                    let floor = -(self.sh.lay.slots as isize);
                    let _ =
                        self.idle_bells
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                Some((n - 1).max(floor))
                            });
                    return Some(slot);
                }
                // Withdrawn before we took it: the slot is back with the client (tell a caller
                // waiting for a free slot: it may be this one); next.
                slot::Take::Withdrawn => self.ring_if_async(slot),
                slot::Take::Broken => {
                    self.cut_off();
                    return None;
                }
            }
        }
        None
    }

    /// A sleeping worker saw the client's doorbell at `now`, changed since it last looked.
    /// An honest client bumps it once per call it queues while a worker sleeps, so it shows
    /// no more changes than it makes calls. Each change counts one, each call taken (a call
    /// withdrawn before it was taken does not count) takes one off, down to minus one per slot
    /// (a call may be taken before the change it rang for is seen); a client more than
    /// `slots` + [`IDLE_BELLS`] changes ahead keeps changing the word to keep the workers
    /// from sleeping (each change costs it a store, and a worker a system call), and is cut
    /// off. Each value is counted once, whichever worker sees it first.
    pub(super) fn note_ring(&self, now: u32) {
        if self.last_bell.swap(now, Ordering::Relaxed) != now {
            self.count_idle_bell();
        }
    }

    /// Notes a call taken from this connection: it stays warm through the accept thread's
    /// next round. `true` if it is cold: the caller warms it (`Core::warm`) once it holds no
    /// lock. Two Relaxed loads of server memory; a store only when the flag changes.
    pub(super) fn note_call(&self) -> bool {
        if !self.active.load(Ordering::Relaxed) {
            self.active.store(true, Ordering::Relaxed);
        }
        self.cold.load(Ordering::Relaxed)
    }

    /// A sleeping worker was woken by a wake on the client's doorbell, which had not
    /// changed: anyone who maps the word can wake its sleepers without changing it, and an
    /// honest client changes it before it wakes them. Counted as [`Conn::note_ring`] counts a
    /// change (an honest client's wake can find the word already read, once per call at most).
    pub(super) fn note_empty_wake(&self) {
        self.count_idle_bell();
    }

    fn count_idle_bell(&self) {
        let idle = self.idle_bells.fetch_add(1, Ordering::Relaxed) + 1;
        if idle > (self.sh.lay.slots + IDLE_BELLS) as isize {
            self.cut_off();
        }
    }

    /// The client broke the protocol: ignore it from now on and hang up on it, so its
    /// process sees the server gone (every pending and later call fails with
    /// `ServerDisappeared`) and the connection is forgotten at once, whatever its ring
    /// entries say.
    pub(super) fn cut_off(&self) {
        if !self.broken.swap(true, Ordering::Relaxed) {
            sys::shutdown(self.sock.lock().unwrap_or_else(|p| p.into_inner()).as_fd());
            // A worker forgets the connection (and its lends, in `Conn`'s drop) at once.
            if let Some(core) = self.core.upgrade() {
                core.ring();
            }
        }
    }

    /// Rings the client's bell if slot `slot`'s record asks for it (`F_ASYNC`: an async
    /// caller, or a caller waiting for an abandoned slot to come back), after the slot was
    /// handed back (a withdrawn or canceled call: its DONE is a Release store).
    pub(super) fn ring_if_async(&self, slot: usize) {
        // SeqCst fence, then SeqCst load: the Dekker pair with the client's SeqCst flag store
        // and its fence before it looks for DONE (the fence orders our Release store of DONE
        // before the load, as the SeqCst CAS of a delivered answer does): either we see the
        // flag and ring, or the client sees DONE.
        fence(Ordering::SeqCst);
        let flags = self
            .sh
            .u32(self.sh.lay.rec(slot) + S_FLAGS)
            .load(Ordering::SeqCst);
        if flags & F_ASYNC != 0 {
            ring_client(&self.sh);
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(core) = self.core.upgrade() {
            core.release_lends(&mut self.lock_lends());
        }
    }
}

/// Run by a connection's watcher when the client hangs up: its lent buffers are unmapped
/// at once (as soon as no context holds them), its subscriptions end, and a worker is woken
/// to take what it queued before it died and then forget the connection.
pub(super) fn client_gone(core: &Weak<Core>, id: u64) {
    let Some(core) = core.upgrade() else { return };
    let conn = {
        let conns = core.conns.read().unwrap_or_else(|p| p.into_inner());
        conns.iter().find(|c| c.id == id).cloned()
    };
    if let Some(conn) = conn {
        core.release_lends(&mut conn.lock_lends());
        conn.lock_subs().clear();
        core.publish_stats();
        // A cold connection is looked at only when asked for.
        core.look_at_cold();
        core.ring();
        // Dropped here, on the watcher thread, if no worker or context holds it (see
        // `Watch`'s drop).
        drop(conn);
    }
}

/// Run by a connection's watcher when its client rang the wake-up socket (the watcher has
/// read what came; on the doorbells, where a client rings it while its connection is cold).
/// The ring counts against the client as a doorbell change does ([`Conn::note_empty_wake`];
/// each call taken makes up for one), so that a client that keeps ringing is cut off rather
/// than keep the workers busy; if a call may be queued, a sleeping worker is woken for it
/// ([`Core::ring_one`]), as the doorbell would have. No reference to the connection outlives
/// this call: the server's drop, which drops the connection and joins this thread, must not
/// find the last one here. `false` once the server is gone: the watcher stops.
fn ring_for_cold(core: &Weak<Core>, id: u64) -> bool {
    let Some(strong) = core.upgrade() else {
        return false;
    };
    let queued = {
        let conns = strong.conns.read().unwrap_or_else(|p| p.into_inner());
        // Not in the list yet: the accept thread rings once it is (its first call may come
        // before).
        conns.iter().find(|c| c.id == id).map(|conn| {
            conn.note_empty_wake();
            conn.may_have_queued()
        })
    };
    if queued == Some(true) {
        strong.ring_one();
    }
    drop(strong);
    // Dropped here if the server went meanwhile: then its drop could not stop this thread.
    core.strong_count() > 0
}

/// Rings the client's bell (its async waiters and subscription readers sleep on it).
pub(super) fn ring_client(sh: &Shared) {
    // SeqCst: the Dekker pair with the client's store of `cbell_wait` and its fence before
    // it reads the bell and looks at slots and the push ring.
    fence(Ordering::SeqCst);
    if sh.u32(CBELL_WAIT).load(Ordering::SeqCst) != 0 {
        sh.u32(CBELL).fetch_add(1, Ordering::SeqCst);
        sys::futex_wake(sh.u32(CBELL));
    }
}
