//! One client process's connection to a server ([`Conn`]): the handshake's second step (the
//! wake-up socket), the slot pool and the callers waiting for a slot ([`Pool`]), writing and
//! queueing a call, one-way posts and the registration of lendable buffers.

use crate::error::ShmError;
use crate::rpc::buf::{BufferHolder, ShmBuf};
use crate::rpc::fault::Fault;
use crate::rpc::layout::{
    has_args, kind, read_header, state, Out, Shared, BELL_DOORBELL, CBELL, CLI_CPU, CLI_TID,
    DOORBELL, F_ASYNC, SLEEP_COLD, SRV_BELL, SRV_CLOSED, SRV_SLEEP, S_ARGS, S_FLAGS, S_KIND, S_LEN,
    S_OP, S_SIG,
};
use crate::rpc::slot;
use crate::rpc::{BELL_HELLO, LEND_HELLO, MSG_LEN};
use crate::service::{ConnectConfig, Connection};
use crate::substrate::deadline::Deadline;
use crate::substrate::park::{self, AdaptiveSpin, Liveness, Pace, SHORT_ANSWER};
use crate::substrate::ring::{Consumer, Producer};
use crate::sync::{fence, AtomicBool, AtomicU32, Ordering};
use crate::sys::{self, Credentials};
use crate::watch::Watch;
use courier_core::quiet::Quiet;
use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;
use std::thread::JoinHandle;
use std::time::Duration;

use super::bell::Wakeups;
use super::call::Call;
use super::subscription::PushState;
use super::{lock, DEATH_CHECK};

/// How often a blocking caller that waits for a slot held by an abandoned call looks at it
/// again when the bell thread, which the server rings when it completes the call, could not
/// be started (see [`Pool`]).
pub(super) const ZOMBIE_LOOK: Duration = Duration::from_millis(1);

/// One client process's connection to a server.
pub(crate) struct Conn {
    pub(super) sh: Arc<Shared>,
    /// Our end of the connection's wake-up socket: a byte on it wakes a sleeping worker,
    /// unless the server sleeps on the doorbells (`doorbell`).
    pub(super) kick: OwnedFd,
    /// Whether the server's idle workers sleep on our doorbell ([`DOORBELL`]) rather than
    /// on the wake-up socket (the server's [`SRV_BELL`], read once at connect).
    pub(super) doorbell: bool,
    pub(super) watch: Watch,
    pub(super) server: Credentials,
    /// Our copy of the connection socket, for registering lendable buffers.
    pub(super) sock: OwnedFd,
    /// Held for one non-blocking send on `sock` (never across a wait).
    pub(super) send_lock: Mutex<()>,
    /// The producer side of the request ring. It never looks for room (`Producer::next_slot`):
    /// a slot is queued again only once its call ended, so the ring never holds more entries
    /// than it has slots.
    pub(super) requests: Mutex<Producer>,
    /// When a spinning caller first looks at its call's state word ([`Quiet`]), learnt over
    /// this connection's calls.
    pub(super) quiet: Mutex<Quiet>,
    /// Everything a waiter registers to be woken by; shared with the watcher, which wakes it
    /// all when the server dies.
    pub(super) wake: Arc<Wakeups>,
    pub(super) push: Mutex<PushState>,
    /// Buffers whose descriptor the server has.
    pub(super) registered: Mutex<HashSet<u64>>,
    /// Buffers to unmap, told to the server with the next call (no slot was free).
    pub(super) pending_free: Mutex<Vec<u64>>,
    pub(super) next_sub: AtomicU32,
    /// The bell thread, and the channel it drops when it ends.
    pub(super) reactor: Mutex<Option<(JoinHandle<()>, Receiver<()>)>>,
    pub(super) stopping: AtomicBool,
    /// How long a caller spins for its answer before it sleeps
    /// ([`ConnectConfig::spin`](crate::ConnectConfig::spin)), adapted to how recent calls
    /// went.
    pub(super) spin: AdaptiveSpin,
    /// How long this connection's recent long calls took (a caller sleeps through most of
    /// the next one, then spins for its end).
    pub(super) pace: Pace,
    /// How long the last call took to be answered, in ns, if it was answered while its
    /// caller spun or handed the CPU over ([`LONG_ANSWER`] if it slept or the spin ran
    /// out): whether moving off the worker's CPU pays ([`Conn::move_pays`]). Relaxed, a
    /// hint.
    pub(super) last_answer_ns: AtomicU32,
}

/// [`Conn::last_answer_ns`] of a call that was not answered while its caller spun or
/// handed the CPU over.
const LONG_ANSWER: u32 = u32::MAX;

impl Conn {
    /// Wakes a sleeping worker of the server, after a call was queued and `srv_sleep` read
    /// `sleepers`: a bump of our doorbell and a wake of one waiter on it (a store and a light
    /// system call), or, if the server does not sleep on the doorbells or let our connection
    /// go cold ([`SLEEP_COLD`]), a byte on the wake-up socket (`MSG_DONTWAIT`: it never
    /// blocks, whatever the server does with its end).
    fn ring_server(&self, sleepers: u32) {
        if self.doorbell && sleepers != SLEEP_COLD {
            let word = self.sh.u32(DOORBELL);
            // Release: a worker that reads the new value (Acquire) sees the call queued
            // before it.
            word.fetch_add(1, Ordering::Release);
            sys::futex_wake_one(word);
        } else {
            sys::kick(self.kick.as_fd());
        }
    }

    /// Whether a caller whose worker last ran on its CPU, awake, moves to another CPU
    /// ([`move_off_this_cpu`](courier_core::placement::move_off_this_cpu)) rather than hand
    /// its CPU over. The two then each spin on their own CPU (0.5 µs a call with a core
    /// busy, against 3.5 µs handed over). For short calls (the last answered within
    /// [`SHORT_ANSWER`] while its caller spun or handed over): when a CPU is left free, or to
    /// share beside one other process's busy thread ([`free_cpu_beside`] the worker, whose
    /// process does not count as the busy one): the one beside the busy thread loses about
    /// half its time to that thread's slices, which a short call can afford. For longer
    /// calls only when both can have a CPU of their own ([`room_beside`], from the second
    /// look at the machine on, so that a busy machine is never taken for an idle one): split
    /// beside a busy thread, a 1 MiB `lend_mut` made 44–61 k calls/s with a p99 of 28–40 µs,
    /// against 60 k and 21–25 µs handed over; on an idle machine, handed over, it stayed at
    /// 16.2 µs a call where split it takes 11.8 µs. Never when moves are off
    /// ([`allow_moves`](courier_core::placement::allow_moves)).
    ///
    /// [`free_cpu_beside`]: courier_core::placement::free_cpu_beside
    /// [`room_beside`]: courier_core::placement::room_beside
    pub(super) fn move_pays(&self) -> bool {
        use courier_core::placement::{free_cpu_beside, moves_allowed, room_beside};
        let short = self.last_answer_ns.load(Ordering::Relaxed) < SHORT_ANSWER.as_nanos() as u32;
        moves_allowed()
            && if short {
                free_cpu_beside(1)
            } else {
                room_beside(1)
            }
    }

    /// Records how the last call was answered: after this long while its caller spun or
    /// handed the CPU over, or `None` (it slept, or its spin ran out).
    pub(super) fn note_answer(&self, after: Option<Duration>) {
        let ns = after.map_or(LONG_ANSWER, |d| {
            u32::try_from(d.as_nanos()).unwrap_or(LONG_ANSWER)
        });
        self.last_answer_ns.store(ns, Ordering::Relaxed);
    }
}

/// The slots of this connection that no call holds, and the callers waiting for one.
///
/// Slot waiting, blocking and async alike (one mechanism: a blocking caller's `Waker`
/// unparks its thread):
///
/// ```text
///   caller                          releaser / bell thread / watcher
///   lock pool; dead? -> error
///   free slot? take it -> done
///   queue (ticket, waker)
///   mark zombies F_ASYNC            release: push free, pop first waiter, wake it
///   unlock; sleep / Pending         bell thread: DONE zombies -> free, wake as many waiters
///   woken: lock pool, look again    watcher (death): wake every waiter
/// ```
///
/// A waiter that was popped and woken but gives up (deadline, dropped future) passes the
/// wake-up on to the next waiter, so a freed slot never sits unclaimed while someone waits.
///
/// **Zombies** are abandoned slots (one-way calls, canceled calls) that stay the server's
/// until it completes them (a canceled one: until it hands it back, when it takes or answers
/// it), which it does without telling the client unless the slot's `F_ASYNC` flag asks it to
/// ring the client bell. So while a caller waits for a slot, every zombie is flagged
/// `F_ASYNC` (then a last look for DONE: the Dekker pair with the server's store of DONE, a
/// SeqCst CAS or a Release store followed by a SeqCst fence, and its load of the flag), and
/// the bell thread reclaims zombies on every ring.
pub(super) struct Pool {
    pub(super) free: Vec<usize>,
    pub(super) zombies: Vec<Zombie>,
    pub(super) waiters: VecDeque<(u64, Waker)>,
    pub(super) next_ticket: u64,
}

/// An abandoned slot the server has not completed yet.
pub(super) struct Zombie {
    pub(super) slot: usize,
    /// Flagged `F_ASYNC` (the server rings when it completes it).
    pub(super) flagged: bool,
}

impl Pool {
    /// Removes `ticket` from the queue; `true` if it was there (not woken).
    pub(super) fn dequeue(&mut self, ticket: u64) -> bool {
        match self.waiters.iter().position(|(t, _)| *t == ticket) {
            Some(i) => {
                self.waiters.remove(i);
                true
            }
            None => false,
        }
    }

    /// Pops the first `n` waiters, to be woken once the lock is released.
    pub(super) fn pop_waiters(&mut self, n: usize) -> Vec<Waker> {
        let n = n.min(self.waiters.len());
        self.waiters.drain(..n).map(|(_, w)| w).collect()
    }
}

/// Unparks a thread waiting in a blocking call (its `Waker`).
pub(super) struct Unpark(std::thread::Thread);

impl Unpark {
    /// A waker that unparks the calling thread: made once per thread and cloned after (an
    /// `Arc` count), so a blocking call that has to wait allocates nothing.
    pub(super) fn current() -> Waker {
        thread_local! {
            static WAKER: Waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        }
        WAKER
            .try_with(Waker::clone)
            .unwrap_or_else(|_| Waker::from(Arc::new(Unpark(std::thread::current()))))
    }
}

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

impl Conn {
    pub(super) fn connect(
        name: &str,
        config: &ConnectConfig,
        timeout: Duration,
    ) -> Result<Arc<Conn>, ShmError> {
        let deadline = Deadline::after(timeout);
        let conn = Connection::connect_timeout(name, config, timeout)?;
        let lay = read_header(conn.segment())?;
        let (seg, sock, server) = conn.into_parts();
        // The second message: our end of the connection's wake-up socket. Only a datagram
        // socket is taken: a send to it with MSG_DONTWAIT never blocks, whatever the server
        // does with its end.
        if !sys::wait_readable(sock.as_fd(), deadline.instant())
            .map_err(ShmError::io("waiting for the wake-up socket"))?
        {
            return Err(ShmError::Timeout);
        }
        let mut msg = [0u8; MSG_LEN + 1];
        let (n, fd) = sys::recv_with_fd(sock.as_fd(), &mut msg)
            .map_err(ShmError::io("receiving the wake-up socket"))?;
        let kick = match fd {
            Some(fd)
                if n == MSG_LEN
                    && msg[..MSG_LEN] == BELL_HELLO
                    && sys::is_dgram_socket(fd.as_fd()) =>
            {
                fd
            }
            _ => {
                return Err(ShmError::Handshake {
                    name: name.to_owned(),
                    reason: "no wake-up socket after the handshake",
                })
            }
        };
        let ours = sock
            .try_clone()
            .map_err(ShmError::io("duplicating the connection socket"))?;
        let sh = Arc::new(Shared { seg, lay });
        // Written by the server before it sent the wake-up socket; read once.
        let doorbell = sh.u32(SRV_BELL).load(Ordering::Relaxed) == BELL_DOORBELL;
        let wake = Arc::new(Wakeups {
            pool: Mutex::new(Pool {
                free: (0..lay.slots).rev().collect(),
                zombies: Vec::new(),
                waiters: VecDeque::new(),
                next_ticket: 0,
            }),
            calls: Mutex::new(vec![None; lay.slots]),
            push: Mutex::new(Vec::new()),
        });
        let theirs = Arc::clone(&sh);
        let wakers = Arc::clone(&wake);
        let watch = Watch::start(sock, move || {
            for slot in 0..theirs.lay.slots {
                sys::futex_wake(theirs.state(slot));
            }
            sys::futex_wake(theirs.u32(CBELL));
            wakers.wake_all();
        })?;
        Ok(Arc::new(Conn {
            kick,
            doorbell,
            watch,
            server,
            sock: ours,
            send_lock: Mutex::new(()),
            requests: Mutex::new(Producer::new(lay.slots)),
            quiet: Mutex::new(Quiet::default()),
            wake,
            push: Mutex::new(PushState {
                ring: Consumer::new(lay.push_depth),
                queues: HashMap::new(),
                broken: false,
                stalled: false,
            }),
            registered: Mutex::new(HashSet::new()),
            pending_free: Mutex::new(Vec::new()),
            next_sub: AtomicU32::new(1),
            reactor: Mutex::new(None),
            stopping: AtomicBool::new(false),
            spin: AdaptiveSpin::for_caller(
                config.spin_limit(),
                crate::service::DEFAULT_CALLER_SPIN,
            ),
            pace: Pace::default(),
            last_answer_ns: AtomicU32::new(LONG_ANSWER),
            sh,
        }))
    }

    pub(super) fn dead(&self) -> bool {
        #[cfg(test)]
        super::tests::hook(super::tests::Point::DeathCheck);
        self.watch.shared.is_dead()
    }

    pub(super) fn phase(&self, slot: usize) -> u32 {
        self.sh.state(slot).load(Ordering::Acquire) & state::PHASE
    }

    /// Moves the zombies the server has completed to the free list; how many.
    pub(super) fn reclaim(&self, pool: &mut Pool) -> usize {
        let before = pool.free.len();
        let mut i = 0;
        while i < pool.zombies.len() {
            let s = pool.zombies[i].slot;
            if self.phase(s) == state::DONE {
                pool.zombies.swap_remove(i);
                pool.free.push(s);
            } else {
                i += 1;
            }
        }
        pool.free.len() - before
    }

    /// Asks the server to ring when it completes or hands back each zombie (see [`Pool`]).
    pub(super) fn flag_zombies(&self, pool: &mut Pool) {
        let mut any = false;
        for z in pool.zombies.iter_mut().filter(|z| !z.flagged) {
            let rec = self.sh.lay.rec(z.slot);
            // SeqCst: the Dekker pair with the server's completion CAS and its SeqCst load of
            // the flag: it sees the flag and rings, or our look below (after the fence) sees
            // DONE.
            self.sh
                .u32(rec + S_FLAGS)
                .fetch_or(F_ASYNC, Ordering::SeqCst);
            z.flagged = true;
            any = true;
        }
        if any {
            fence(Ordering::SeqCst);
        }
    }

    /// One attempt to take a slot. With `waker`, a caller that finds none is queued under
    /// `ticket` (kept across attempts) and `Ok(None)` means: wait to be woken. `Ok(Some(true))`
    /// in `needs_reactor`: only the bell thread will notice the slot that frees it.
    pub(super) fn poll_slot(
        &self,
        ticket: &mut Option<u64>,
        waker: &Waker,
        needs_reactor: &mut bool,
    ) -> Result<Option<usize>, Fault> {
        let mut pool = lock(&self.wake.pool);
        let registered = ticket.is_some_and(|t| pool.waiters.iter().any(|(x, _)| *x == t));
        // Under the pool lock: the watcher sets `dead` before it empties the queue, so
        // either it finds us queued or we see `dead` here.
        if self.dead() {
            if let Some(t) = ticket.take() {
                pool.dequeue(t);
            }
            return Err(Fault::ServerDisappeared);
        }
        let take = |pool: &mut Pool, ticket: &mut Option<u64>| {
            let s = pool.free.pop()?;
            if let Some(t) = ticket.take() {
                pool.dequeue(t);
            }
            Some(s)
        };
        if let Some(s) = take(&mut pool, ticket) {
            return Ok(Some(s));
        }
        if registered {
            let t = ticket.expect("registered");
            if let Some(e) = pool.waiters.iter_mut().find(|(x, _)| *x == t) {
                e.1.clone_from(waker);
            }
        } else {
            let t = pool.next_ticket;
            pool.next_ticket += 1;
            pool.waiters.push_back((t, waker.clone()));
            *ticket = Some(t);
        }
        self.flag_zombies(&mut pool);
        self.reclaim(&mut pool);
        if let Some(s) = take(&mut pool, ticket) {
            return Ok(Some(s));
        }
        *needs_reactor = !pool.zombies.is_empty();
        Ok(None)
    }

    /// Leaves the slot queue after giving up (deadline, dropped future): a waiter that was
    /// already woken for a free slot passes the wake-up on.
    pub(super) fn leave_slot_queue(&self, ticket: Option<u64>) {
        let Some(t) = ticket else { return };
        let mut pool = lock(&self.wake.pool);
        if pool.dequeue(t) {
            return;
        }
        let n = pool.free.len();
        let wake = pool.pop_waiters(n);
        drop(pool);
        wake.into_iter().for_each(Waker::wake);
    }

    /// Takes a free slot, reclaiming abandoned ones the server has completed; waits (until
    /// `deadline`) while every slot is in flight. A deadline already past makes one attempt.
    pub(super) fn acquire(self: &Arc<Self>, deadline: Deadline) -> Result<usize, Fault> {
        let waker = Unpark::current();
        let mut ticket = None;
        let r = loop {
            let mut needs_reactor = false;
            match self.poll_slot(&mut ticket, &waker, &mut needs_reactor) {
                Ok(Some(s)) => break Ok(s),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            let timeout = match deadline.left() {
                Ok(t) => t,
                Err(e) => break Err(e.into()),
            };
            // Without the bell thread, completed zombies are found by looking again.
            let nap = if needs_reactor && self.ensure_reactor().is_err() {
                Some(timeout.map_or(ZOMBIE_LOOK, |t| t.min(ZOMBIE_LOOK)))
            } else {
                timeout
            };
            match nap {
                Some(d) => std::thread::park_timeout(d),
                None => std::thread::park(),
            }
        };
        self.leave_slot_queue(ticket);
        r
    }

    pub(super) fn release(&self, slot: usize) {
        let mut pool = lock(&self.wake.pool);
        pool.free.push(slot);
        let wake = pool.pop_waiters(1);
        drop(pool);
        wake.into_iter().for_each(Waker::wake);
    }

    /// Gives a slot to the server for good (a one-way call, or a canceled one): it comes
    /// back once the server completes it.
    ///
    /// A caller that queued for a slot while no zombie was there did not start the bell
    /// thread, the only one that hears the server ring for a zombie: with waiters left and
    /// a zombie not yet completed, it is started here; if it cannot be, every waiter is
    /// woken to look again (and naps [`ZOMBIE_LOOK`] at a time, or its task looks at every
    /// turn of its executor).
    pub(super) fn abandon(self: &Arc<Self>, slot: usize) {
        let mut pool = lock(&self.wake.pool);
        pool.zombies.push(Zombie {
            slot,
            flagged: false,
        });
        if pool.waiters.is_empty() {
            return;
        }
        self.flag_zombies(&mut pool);
        let n = self.reclaim(&mut pool);
        let wake = pool.pop_waiters(n);
        let unheard = !pool.waiters.is_empty() && !pool.zombies.is_empty();
        drop(pool);
        wake.into_iter().for_each(Waker::wake);
        // Not under the pool lock: the bell thread takes it.
        if unheard && self.ensure_reactor().is_err() {
            let all: Vec<Waker> = lock(&self.wake.pool)
                .waiters
                .iter()
                .map(|(_, w)| w.clone())
                .collect();
            all.into_iter().for_each(Waker::wake);
        }
    }

    /// Writes a call into a fresh slot and queues it. `write` writes the request (in the
    /// record if small, else in the data area: [`Out`]) and returns (length, signature), or
    /// `None` if the value does not fit.
    pub(super) fn start(
        self: &Arc<Self>,
        call: (u32, u32, u32, [u64; 4]),
        write: impl FnOnce(&mut Out<'_>) -> Option<(usize, u64)>,
        deadline: Deadline,
    ) -> Result<Call, Fault> {
        self.flush_frees();
        let slot = self.acquire(deadline)?;
        self.start_in(slot, call, write)
    }

    /// [`Conn::start`] in a slot already taken (from the pool).
    pub(super) fn start_in(
        self: &Arc<Self>,
        slot: usize,
        call: (u32, u32, u32, [u64; 4]),
        write: impl FnOnce(&mut Out<'_>) -> Option<(usize, u64)>,
    ) -> Result<Call, Fault> {
        let (k, op, flags, args) = call;
        let sh = &self.sh;
        let Some((len, sig)) = write(&mut sh.request_out(slot, k)) else {
            self.release(slot);
            return Err(Fault::TooLarge);
        };
        let rec = sh.lay.rec(slot);
        sh.u32(rec + S_KIND).store(k, Ordering::Relaxed);
        sh.u32(rec + S_OP).store(op, Ordering::Relaxed);
        sh.u32(rec + S_FLAGS).store(flags, Ordering::Relaxed);
        sh.u32(rec + S_LEN).store(len as u32, Ordering::Relaxed);
        sh.u64(rec + S_SIG).store(sig, Ordering::Relaxed);
        // A kind with no argument words has its small request where they would be.
        if has_args(k) {
            for (i, a) in args.iter().enumerate() {
                sh.u64(rec + S_ARGS + 8 * i).store(*a, Ordering::Relaxed);
            }
        } else {
            debug_assert_eq!(args, [0; 4], "kind {k} has no argument words");
        }
        // The spin hint for the server.
        sh.set_hint(CLI_CPU, park::this_cpu());
        sh.set_hint(CLI_TID, park::this_thread());
        sh.state(slot).store(state::QUEUED, Ordering::Relaxed);
        {
            // The entry, stamped with its lap, is all a worker reads to find the call. The
            // ring never holds more than `slots` entries: a slot is queued again only once
            // its call ended, after the server took its entry.
            let mut requests = lock(&self.requests);
            let at = sh.lay.ring_slot(requests.next_slot());
            // Release: the slot record and its data are visible to a worker that sees the
            // entry (its Acquire load).
            sh.u64(at)
                .store(slot as u64 | requests.stamp(), Ordering::Release);
            requests.commit_stamped();
        }
        // SeqCst: the Dekker pair with a worker's announcement in `srv_sleep` and its fence
        // before its last look at the rings: it sees our entry, or we see it sleeping.
        fence(Ordering::SeqCst);
        let sleepers = sh.u32(SRV_SLEEP).load(Ordering::SeqCst);
        let woke = sleepers != 0;
        if woke {
            self.ring_server(sleepers);
        }
        let mut call = Call {
            conn: Arc::clone(self),
            slot,
            pending: true,
            woke,
        };
        // SeqCst (after our entry, above): a server shutting down sets `srv_closed` before it
        // fails the calls queued so far. A call it took before (answered already, perhaps)
        // goes on as usual; one still queued may have come after its last look, so it is
        // taken back. (Canceling a taken call here would throw away an answer that landed.)
        #[cfg(test)]
        super::tests::hook(super::tests::Point::ClosedCheck);
        if sh.u32(SRV_CLOSED).load(Ordering::SeqCst) != 0 {
            match slot::withdraw(sh.state(slot)) {
                slot::Withdraw::Taken => {}
                slot::Withdraw::Withdrawn => {
                    call.pending = false;
                    self.abandon(slot);
                    return Err(Fault::ServerDisappeared);
                }
                slot::Withdraw::Broken => {
                    // A hostile server: give the slot up.
                    call.pending = false;
                    return Err(Fault::ServerDisappeared);
                }
            }
        }
        Ok(call)
    }

    /// Sends a one-way message: the slot is abandoned to the server at once.
    pub(super) fn post(
        self: &Arc<Self>,
        call: (u32, u32, u32, [u64; 4]),
        write: impl FnOnce(&mut Out<'_>) -> Option<(usize, u64)>,
        deadline: Deadline,
    ) -> Result<(), Fault> {
        let c = self.start(call, write, deadline)?;
        c.abandon();
        Ok(())
    }

    /// Sends the unmap requests that could not be sent when their buffers were dropped.
    pub(super) fn flush_frees(self: &Arc<Self>) {
        let ids = std::mem::take(&mut *lock(&self.pending_free));
        for id in ids {
            let _ = self.post(
                (kind::FREE_BUF, 0, 0, [id, 0, 0, 0]),
                |_| Some((0, 0)),
                Deadline::after(Duration::ZERO),
            );
        }
    }

    /// Makes sure the server has `buf`'s descriptor (sent once, before the first lend).
    ///
    /// The server reads registrations only when it needs them, so the socket can be full:
    /// the send never blocks, and room is waited for until `deadline` (`None`: until the
    /// server dies, looking at the watcher's verdict every [`DEATH_CHECK`]), holding no lock.
    pub(super) fn register(
        self: &Arc<Self>,
        buf: &ShmBuf,
        deadline: Deadline,
    ) -> Result<(), Fault> {
        let mut msg = [0u8; MSG_LEN];
        msg[..8].copy_from_slice(&LEND_HELLO);
        msg[8..].copy_from_slice(&buf.id().to_le_bytes());
        loop {
            {
                let _send = lock(&self.send_lock);
                // Under the send lock: a thread that registered the buffer meanwhile did so
                // under it too.
                if lock(&self.registered).contains(&buf.id()) {
                    return Ok(());
                }
                match sys::try_send_with_fd(self.sock.as_fd(), &msg, Some(buf.segment().fd())) {
                    Ok(true) => {
                        lock(&self.registered).insert(buf.id());
                        let holder: Weak<Conn> = Arc::downgrade(self);
                        lock(&buf.lent_to).push(holder);
                        return Ok(());
                    }
                    Ok(false) => {}
                    Err(_) => return Err(Fault::ServerDisappeared),
                }
            }
            if self.dead() {
                return Err(Fault::ServerDisappeared);
            }
            deadline.left()?;
            let until = deadline.min(Deadline::after(DEATH_CHECK));
            sys::wait_writable(self.sock.as_fd(), until.instant())
                .map_err(|_| Fault::ServerDisappeared)?;
        }
    }
}

/// The server's life as the watcher sees it, for [`park`](crate::substrate::park) waits on
/// the connection's words (a slot's state, the client bell); `is_dead` goes through
/// [`Conn::dead`].
impl Liveness for Conn {
    fn is_dead(&self) -> bool {
        self.dead()
    }
    fn counted<T>(&self, sleep: impl FnOnce() -> T) -> T {
        self.watch.shared.counted(sleep)
    }
}

impl BufferHolder for Conn {
    /// A lendable buffer was dropped (or detached): tell the server to unmap it.
    fn forget_buffer(self: Arc<Self>, id: u64) {
        if !lock(&self.registered).remove(&id) || self.dead() {
            return;
        }
        let sent = self.post(
            (kind::FREE_BUF, 0, 0, [id, 0, 0, 0]),
            |_| Some((0, 0)),
            Deadline::after(Duration::ZERO),
        );
        if sent.is_err() {
            lock(&self.pending_free).push(id);
        }
    }
}
