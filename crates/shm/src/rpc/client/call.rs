//! A call in flight ([`Call`]): waiting for its slot to be done (blocking, with a deadline,
//! or as a future), settling or cancelling it, and reading its answer; the public
//! [`WaitReply`] and [`CancelOutcome`], and the futures of `areq` and `wait_async`.

use crate::rpc::fault::Fault;
use crate::rpc::layout::{
    state, status, Shared, F_ASYNC, SRV_CPU, SRV_TID, S_FLAGS, S_RARGS, S_RLEN, S_RSIG, S_STATUS,
};
use crate::rpc::slot;
use crate::rpc::wire::Wire;
use crate::rpc::Error;
use crate::service::DEFAULT_CALLER_SPIN;
use crate::substrate::coop;
use crate::substrate::deadline::Deadline;
use crate::substrate::park::{self, Gave};
use crate::sync::{fence, Ordering};
use courier_core::placement::move_off_this_cpu;
use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::{lock, ClientShared};

/// A call in flight: owns its slot until it is answered and read, canceled or the server
/// dies. Dropping it unread cancels it.
pub(super) struct Call {
    pub(super) conn: Arc<Conn>,
    pub(super) slot: usize,
    pub(super) pending: bool,
    /// The server was asleep when the call was queued (it was woken for it): the answer
    /// cannot come before that wake-up, so the caller does not spin for it.
    pub(super) woke: bool,
}

/// What [`WaitReply::cancel`] found. The same shape as `courier::local`'s.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelOutcome<Rq, Rp, E> {
    /// The server had not taken the request: it never will, and here it is back.
    Withdrawn(Rq),
    /// The server had taken it and can see the cancellation
    /// ([`ReplyContext::is_canceled`](crate::ReplyContext::is_canceled)); its answer will be
    /// discarded.
    Signaled,
    /// The answer had already come: here it is.
    Completed(Result<Rp, Error<E>>),
}

pub(super) enum Canceled {
    Withdrawn,
    Signaled,
    Done,
    Dead,
}

impl Call {
    /// Whether the worker that last took a call of this connection ran on this CPU: it
    /// cannot answer while we spin here (a hint; Relaxed).
    fn server_here(&self) -> bool {
        self.conn.sh.u32(SRV_CPU).load(Ordering::Relaxed) == park::this_cpu()
    }

    /// Whether the worker that last took a call of this connection is a task on this very
    /// thread (a hint, as `server_here`): then neither a spin, a yield nor a move lets it
    /// answer, only returning to the executor.
    fn server_on_this_thread(&self) -> bool {
        self.conn.sh.u32(SRV_TID).load(Ordering::Relaxed) == park::this_thread()
    }

    pub(super) fn is_done(&self) -> bool {
        self.conn.phase(self.slot) == state::DONE
    }

    /// Waits until the slot is done (`Ok`), the server dies or `deadline` passes; the call
    /// stays pending on an error.
    ///
    /// The caller first spins, for the connection's adaptive budget ([`AdaptiveSpin`]), and
    /// not at all when the server was asleep when the call was queued, nor when the worker
    /// last ran on this CPU and the caller stays there (then it yields the CPU to it for a
    /// while instead, [`park::yield_on`]; it moves to another CPU first, and spins there,
    /// where [`Conn::move_pays`]); after two long calls
    /// it sleeps through most of the next one first, then spins for its end ([`Pace`],
    /// [`park::wait_announced_paced`]). Then it parks on the
    /// slot's state word ([`park::wait_announced`]): its sleep is the `WAITER` bit, set by a
    /// CAS on the QUEUED or TAKEN word ([`slot::announce_sleep`]); the server's completion
    /// CAS (TAKEN -> DONE) sees the bit and wakes the word, or our CAS fails on DONE (one
    /// word, so the two compare-and-swaps are ordered: no fence needed).
    ///
    /// [`AdaptiveSpin`]: crate::substrate::park::AdaptiveSpin
    /// [`Pace`]: crate::substrate::park::Pace
    pub(super) fn wait(&self, deadline: Deadline) -> Result<(), Fault> {
        let word = self.conn.sh.state(self.slot);
        let looks = Cell::new(0u32);
        let done = || {
            looks.set(looks.get().saturating_add(1));
            Ok(self.is_done().then_some(()))
        };
        let announce = || match word.load(Ordering::Acquire) & state::PHASE {
            state::DONE => Ok(None),
            state::QUEUED | state::TAKEN => Ok(slot::announce_sleep(word)),
            // Only a hostile server puts anything else here.
            _ => Err(Fault::Protocol),
        };
        // A busy-polling caller spins whatever the hints say, for a call that woke the
        // server too, save beside a worker on this CPU where the two cannot each have one
        // (`Wait::heeds_peer_here`: it then hands the CPU over, or moves, as an adaptive
        // caller does). It also waits as an adaptive caller for a while when its spins were
        // preempted often of late (`AdaptiveSpin::begin_wait`).
        let server_here = self.server_here();
        let wait = self.conn.spin.begin_wait(server_here);
        let busy_poll = wait.busy_polls();
        let mut here = server_here && wait.heeds_peer_here();
        let handing_over = !self.woke && !wait.never();
        // The server's worker last ran on this CPU and is awake: move to another CPU where
        // that pays (`Conn::move_pays`), and spin there; else hand it this one.
        if here && handing_over && self.conn.move_pays() && move_off_this_cpu().is_some() {
            here = self.server_here();
        }
        if here && handing_over {
            let done = || Ok::<_, Fault>(self.is_done().then_some(()));
            let start = Instant::now();
            if park::yield_on(deadline.cap(park::YIELD_FOR), done)?.is_some() {
                self.conn.note_answer(Some(start.elapsed()));
                return Ok(());
            }
        }
        let quiet = (self.woke && !busy_poll) || here;
        // A long call (the last two were, see `Pace`): sleep through most of it, then spin
        // for its end, so that the answer costs no wake-up.
        let ahead = if quiet {
            None
        } else {
            park::pace_ahead_for(&self.conn.pace, wait)
        };
        let (sleep, spin) = match ahead {
            _ if quiet => (None, Duration::ZERO),
            Some((sleep, spin)) => (Some(sleep), spin),
            None => (None, wait.budget()),
        };
        // A caller about to spin first waits the hints its connection learnt, so that its
        // first look does not land between the worker's take and its answer ([`Quiet`]).
        let first_look = (sleep.is_none() && !spin.is_zero()).then(|| {
            let hints = lock(&self.conn.quiet).next();
            for _ in 0..hints {
                std::hint::spin_loop();
            }
            hints
        });
        // A caller that never spins has no use for how long it slept (its `Pace` is for
        // paced spins): no reading of the clock around the sleep.
        let timed = !self.conn.spin.never();
        let waited = park::wait_announced_paced(
            word,
            &*self.conn,
            sleep,
            spin,
            timed,
            deadline,
            done,
            announce,
        );
        if let Some(hints) = first_look {
            let only_spun =
                matches!(waited, Ok(((), spun, None)) if spun.answered_after().is_some());
            lock(&self.conn.quiet).learn(hints, looks.get(), only_spun);
        }
        match waited {
            Ok(((), spun, slept)) => {
                self.conn.note_answer(match slept {
                    None => spun.answered_after(),
                    Some(_) => None,
                });
                if !self.woke {
                    // A paced spin says nothing of short calls: the budget is theirs.
                    if ahead.is_none() {
                        wait.record(spun);
                    }
                    if timed {
                        self.conn
                            .pace
                            .record(slept, matches!(spun, park::Spun::Preempted(_)));
                    }
                } else if busy_poll {
                    // A busy-poller counts every wait, and its preemptions (`AdaptiveSpin`).
                    wait.record(spun);
                }
                Ok(())
            }
            Err(Gave::Err(e)) => Err(e),
            // The answer may have landed just before the server died.
            Err(Gave::Dead) => self.done_or_dead(),
            Err(Gave::Expired) => Err(Fault::Timeout),
        }
    }

    /// Waits for the answer until `deadline`; then cancels the call, unless the answer came
    /// in the meantime. `Ok`: the call is done, ready to read.
    pub(super) fn settle(mut self, deadline: Deadline) -> Result<Call, Fault> {
        match self.wait(deadline) {
            Ok(()) => Ok(self),
            Err(Fault::Timeout) => match self.cancel() {
                Canceled::Done => Ok(self),
                Canceled::Withdrawn | Canceled::Signaled | Canceled::Dead => Err(Fault::Timeout),
            },
            Err(e) => Err(e),
        }
    }

    /// The async form of `wait`.
    pub(super) fn poll_done(&self, cx: &mut Context<'_>) -> Poll<Result<(), Fault>> {
        if self.is_done() {
            return Poll::Ready(Ok(()));
        }
        if self.conn.dead() {
            return Poll::Ready(self.done_or_dead());
        }
        if self.conn.ensure_reactor().is_err() {
            // No thread to wake us: look again at the executor's next turn (never blocks
            // it, never leaves the future unwoken; costs polls until a spawn succeeds).
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        lock(&self.conn.wake.calls)[self.slot] = Some(cx.waker().clone());
        // SeqCst: the server reads the flag after it completes the slot; either it sees the
        // flag and rings, or we see DONE below.
        let rec = self.conn.sh.lay.rec(self.slot);
        self.conn
            .sh
            .u32(rec + S_FLAGS)
            .fetch_or(F_ASYNC, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.is_done() {
            lock(&self.conn.wake.calls)[self.slot] = None;
            return Poll::Ready(Ok(()));
        }
        if self.conn.dead() {
            lock(&self.conn.wake.calls)[self.slot] = None;
            return Poll::Ready(self.done_or_dead());
        }
        Poll::Pending
    }

    /// After seeing the server dead: the answer may have landed just before it died (its
    /// `reply` returned `Ok`), so look at the slot once more. **An answer that landed is
    /// never reported as `ServerDisappeared`.**
    pub(super) fn done_or_dead(&self) -> Result<(), Fault> {
        if self.is_done() {
            Ok(())
        } else {
            Err(Fault::ServerDisappeared)
        }
    }

    /// Reads the answer of a done slot and frees it.
    pub(super) fn take<Rp: Wire, E: Wire>(self) -> Result<Rp, Error<E>> {
        self.take_reply(false).map(|(rp, _)| rp)
    }

    /// As `take`, with the two reply words beside the reply (a lend's `[valid, 0]`).
    pub(super) fn take_with_words<Rp: Wire, E: Wire>(self) -> Result<(Rp, [u64; 2]), Error<E>> {
        self.take_reply(true)
    }

    /// `take`, reading the reply words (the record's second line) only if `words`: a call of
    /// a kind without them has none to read.
    fn take_reply<Rp: Wire, E: Wire>(mut self, words: bool) -> Result<(Rp, [u64; 2]), Error<E>> {
        // Decode as the status says (a reply and an error type may share a signature).
        let r = self.read(|sh, slot, st, len, sig| match st {
            status::OK => {
                let rec = sh.lay.rec(slot);
                let words = if words {
                    [0, 1].map(|i| sh.u64(rec + S_RARGS + 8 * i).load(Ordering::Relaxed))
                } else {
                    [0; 2]
                };
                Rp::decode_signed(sig, &sh.reply(slot, len))
                    .map(|rp| (rp, words))
                    .ok_or(Error::Protocol)
            }
            status::APP => match E::decode_signed(sig, &sh.reply(slot, len)) {
                Some(e) => Err(Error::App(e)),
                None => Err(Error::Protocol),
            },
            other => Err(Error::from(status_error(other))),
        });
        self.finish();
        r
    }

    /// Reads the two reply words of a done scalar slot and frees it.
    pub(super) fn take_words(mut self) -> Result<[u64; 2], Fault> {
        let r = self.read(|sh, slot, st, _, _| {
            let rec = sh.lay.rec(slot);
            match st {
                status::OK => {
                    Ok([0, 1].map(|i| sh.u64(rec + S_RARGS + 8 * i).load(Ordering::Relaxed)))
                }
                other => Err(status_error(other)),
            }
        });
        self.finish();
        r
    }

    /// Reads a done slot's status, reply length (checked against the slot) and signature
    /// once, and hands them to `f` to read the reply.
    pub(super) fn read<T>(&mut self, f: impl FnOnce(&Shared, usize, u32, usize, u64) -> T) -> T {
        let sh = &self.conn.sh;
        let rec = sh.lay.rec(self.slot);
        let st = sh.u32(rec + S_STATUS).load(Ordering::Relaxed);
        let len = sh.u32(rec + S_RLEN).load(Ordering::Relaxed) as usize;
        let sig = sh.u64(rec + S_RSIG).load(Ordering::Relaxed);
        let len = len.min(sh.lay.slot_size);
        f(sh, self.slot, st, len, sig)
    }

    /// Leaves a one-way call's slot to the server (it comes back once completed).
    pub(super) fn abandon(mut self) {
        self.pending = false;
        self.conn.abandon(self.slot);
    }

    pub(super) fn finish(&mut self) {
        if self.pending {
            self.pending = false;
            self.conn.release(self.slot);
        }
    }

    /// Cancels: withdraws a queued request, signals a taken one, or finds it done (the
    /// call is then still ours to read).
    pub(super) fn cancel(&mut self) -> Canceled {
        // Death first, then the slot (as in `done_or_dead`): an answer that landed before
        // the server died is still read.
        if self.conn.dead() && self.done_or_dead().is_err() {
            self.pending = false;
            return Canceled::Dead;
        }
        match slot::cancel(self.conn.sh.state(self.slot)) {
            slot::Cancel::Done => Canceled::Done,
            slot::Cancel::Withdrawn => {
                self.pending = false;
                self.conn.abandon(self.slot);
                Canceled::Withdrawn
            }
            slot::Cancel::Signaled => {
                self.pending = false;
                self.conn.abandon(self.slot);
                Canceled::Signaled
            }
            slot::Cancel::Broken => {
                // A hostile server: give the slot up.
                self.pending = false;
                Canceled::Dead
            }
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.pending {
            lock(&self.conn.wake.calls)[self.slot] = None;
            if let Canceled::Done = self.cancel() {
                self.finish();
            }
        }
    }
}

pub(super) fn status_error(st: u32) -> Fault {
    match st {
        status::NO_REPLY => Fault::NoReply,
        status::TOO_LARGE => Fault::TooLarge,
        status::SERVER_GONE => Fault::ServerDisappeared,
        status::LIMIT => Fault::LimitReached,
        _ => Fault::Protocol,
    }
}

/// Waits for a free slot without blocking: the future of [`Client::areq`]'s first step.
/// Queued among the connection's slot waiters (see [`Pool`]); dropped, it leaves the queue.
pub(super) struct SlotFuture<'a> {
    pub(super) conn: &'a Arc<Conn>,
    pub(super) ticket: Option<u64>,
}

impl Future for SlotFuture<'_> {
    type Output = Result<usize, Fault>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut needs_reactor = false;
        match this
            .conn
            .poll_slot(&mut this.ticket, cx.waker(), &mut needs_reactor)
        {
            Ok(Some(s)) => Poll::Ready(Ok(s)),
            Err(e) => Poll::Ready(Err(e)),
            Ok(None) => {
                if needs_reactor && this.conn.ensure_reactor().is_err() {
                    // No bell thread to notice completed zombies: look again at the
                    // executor's next turn.
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for SlotFuture<'_> {
    fn drop(&mut self) {
        self.conn.leave_slot_queue(self.ticket.take());
    }
}

/// The future of [`Client::areq`] and [`WaitReply::wait_async`].
///
/// Its first poll waits as a blocking wait does before it hands the wait to the client's
/// bell thread, so that a reply that comes within a few microseconds costs no wake-up: it
/// spins for the connection's adaptive budget (a busy-polling connection's for at most
/// [`DEFAULT_CALLER_SPIN`]); or, when the worker last ran on this CPU, it moves to another
/// CPU and spins there where that pays ([`Conn::move_pays`]), else yields this CPU to the
/// worker for up to [`park::YIELD_FOR`] (a `sched_yield` can also hand the CPU to another
/// process for the rest of its slice). None of that when the call had to wake the server,
/// when the answer is there already, or when the worker is a task on this very thread. A
/// poll that comes after [`coop::BUDGET`] ready ones on this thread yields to the executor
/// first.
pub(super) struct CallFuture<Rp, E> {
    pub(super) call: Option<Call>,
    pub(super) spun: bool,
    pub(super) _types: PhantomData<fn() -> (Rp, E)>,
}

impl<Rp: Wire, E: Wire> Future for CallFuture<Rp, E> {
    type Output = Result<Rp, Error<E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if coop::must_yield(cx) {
            return Poll::Pending;
        }
        if !self.spun {
            self.spun = true;
            // Not for a call answered already (`wait_async` of an old call), nor one whose
            // worker is a task on this thread.
            if let Some(call) = self
                .call
                .as_ref()
                .filter(|c| !c.woke && !c.is_done() && !c.server_on_this_thread())
            {
                // As a blocking caller: a worker that last ran on this CPU and is awake
                // cannot answer while we spin here, so move to another CPU where that pays
                // (`Conn::move_pays`) and spin there, else yield this one to it.
                let mut here = call.server_here();
                let wait = call.conn.spin.begin_wait(here);
                let busy_poll = wait.busy_polls();
                let adaptive = !busy_poll && !wait.never();
                if here && adaptive && call.conn.move_pays() && move_off_this_cpu().is_some() {
                    here = call.server_here();
                }
                // How long the answer took, if it came: what `move_pays` goes by, as for a
                // blocking call.
                let answered = if !here {
                    // A busy-poll holds the executor's thread no longer than a default spin
                    // (an adaptive budget is the connection's own limit: no cap).
                    let cap = if busy_poll {
                        DEFAULT_CALLER_SPIN
                    } else {
                        Duration::MAX
                    };
                    let done = || call.is_done().then_some(());
                    wait.spin_capped(cap, done).map(|((), after)| after)
                } else if adaptive {
                    // Spinning would keep the worker off this CPU, and a sleep costs two
                    // wake-ups (the bell thread's, then the executor's): yield the CPU to it
                    // for a while ([`Call::wait`] does the same), holding the executor's
                    // thread no longer than a spin.
                    let start = Instant::now();
                    let done = || Ok::<_, std::convert::Infallible>(call.is_done().then_some(()));
                    let Ok(answered) = park::yield_on(park::YIELD_FOR, done);
                    answered.map(|()| start.elapsed())
                } else {
                    None
                };
                call.conn.note_answer(answered);
            }
        }
        let Some(call) = self.call.as_ref() else {
            return Poll::Ready(Err(Error::Protocol));
        };
        match call.poll_done(cx) {
            Poll::Pending => {
                coop::pending();
                Poll::Pending
            }
            Poll::Ready(Ok(())) => {
                coop::ready();
                let call = self.call.take().expect("checked above");
                Poll::Ready(call.take())
            }
            Poll::Ready(Err(e)) => {
                coop::ready();
                self.call = None;
                Poll::Ready(Err(Error::from(e)))
            }
        }
    }
}

/// A call started with [`Client::req_async`](crate::Client::req_async): wait for it now or later, blocking or async,
/// or cancel it. Dropping it cancels the call.
///
/// It keeps the request (the slot holds a copy), so that a call withdrawn before the server
/// took it hands the request back ([`CancelOutcome::Withdrawn`]), as `courier::local` does.
pub struct WaitReply<Rq, Rp, E> {
    pub(super) call: Option<Call>,
    pub(super) request: Option<Rq>,
    pub(super) _client: Arc<ClientShared>,
    pub(super) _types: PhantomData<fn() -> (Rp, E)>,
}

impl<Rq, Rp, E> std::fmt::Debug for WaitReply<Rq, Rp, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitReply")
            .field("slot", &self.call.as_ref().map(|c| c.slot))
            .finish()
    }
}

impl<Rq, Rp: Wire, E: Wire> WaitReply<Rq, Rp, E> {
    pub(super) fn call(&mut self) -> Call {
        self.call
            .take()
            .expect("a WaitReply holds its call until consumed")
    }

    /// Waits for the reply.
    ///
    /// # Errors
    ///
    /// As [`Client::req`](crate::Client::req).
    pub fn wait(mut self) -> Result<Rp, Error<E>> {
        self.call()
            .settle(Deadline::NEVER)
            .map_err(Error::from)?
            .take()
    }

    /// Waits at most `timeout`; then the call is canceled.
    ///
    /// # Errors
    ///
    /// As [`Client::req_timeout`](crate::Client::req_timeout).
    pub fn wait_timeout(mut self, timeout: Duration) -> Result<Rp, Error<E>> {
        self.call()
            .settle(Deadline::after(timeout))
            .map_err(Error::from)?
            .take()
    }

    /// Awaits the reply, on any executor.
    ///
    /// # Errors
    ///
    /// As [`Client::req`](crate::Client::req).
    pub async fn wait_async(mut self) -> Result<Rp, Error<E>> {
        CallFuture {
            call: Some(self.call()),
            spun: false,
            _types: PhantomData::<fn() -> (Rp, E)>,
        }
        .await
    }

    /// Whether the reply is there (a `wait` would not block).
    pub fn is_ready(&self) -> bool {
        self.call.as_ref().is_some_and(Call::is_done)
    }

    /// Cancels the call and says how far it had got.
    pub fn cancel(mut self) -> CancelOutcome<Rq, Rp, E> {
        let mut call = self.call();
        match call.cancel() {
            Canceled::Withdrawn => CancelOutcome::Withdrawn(
                self.request
                    .take()
                    .expect("a WaitReply holds its request until canceled"),
            ),
            Canceled::Signaled => CancelOutcome::Signaled,
            Canceled::Done => CancelOutcome::Completed(call.take()),
            Canceled::Dead => CancelOutcome::Completed(Err(Error::ServerDisappeared)),
        }
    }
}
