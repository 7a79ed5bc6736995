//! Pushes, client side: draining the push ring the server writes into per-subscription
//! queues ([`PushState`]), and the public [`Subscription`] that reads them.

use crate::rpc::fault::Fault;
use crate::rpc::layout::{
    kind, CBELL, CBELL_WAIT, PUSH_END, PUSH_HEAD, PUSH_TAIL, P_KIND, P_LEN, P_SIG, P_SUB,
};
use crate::rpc::wire::Wire;
use crate::rpc::Error;
use crate::substrate::deadline::Deadline;
use crate::substrate::park::{self, Gave};
use crate::substrate::ring::Consumer;
use crate::sync::{fence, Ordering};
use crate::view::ShmView;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use super::conn::Conn;
use super::{lock, ClientShared};

pub(super) struct PushState {
    /// The consumer side of the push ring (the substrate's checked ring).
    pub(super) ring: Consumer,
    pub(super) queues: HashMap<u32, SubQueue>,
    /// The server broke the push ring's rules.
    pub(super) broken: bool,
    /// The record at `head` is for a subscription whose queue is full: draining waits for
    /// its reader (see `drain_push`).
    pub(super) stalled: bool,
}

#[derive(Default)]
pub(super) struct SubQueue {
    pub(super) items: VecDeque<(u64, Vec<u8>)>,
    pub(super) ended: bool,
}

impl Conn {
    /// Reads the push records the server has published into the subscriptions' queues; how
    /// many it read.
    ///
    /// **A subscription's queue never holds more than `push_depth` values.** Draining stops
    /// at a record for a full queue (`stalled`), so the records behind it, for any
    /// subscription, wait in the shared ring until that reader takes a value; the server's
    /// `push` then sees `Full`. That is the backpressure `push_depth` promises: memory for
    /// pushes is bounded by `push_depth` per subscription plus the ring, whatever is unread.
    pub(super) fn drain_push(&self, push: &mut PushState) -> usize {
        if push.broken {
            return 0;
        }
        let sh = &self.sh;
        let depth = sh.lay.push_depth;
        // The server's tail, read once and checked (`Consumer::available`; its Acquire: the
        // records before the tail are complete).
        let Ok(waiting) = push.ring.available(sh.u64(PUSH_TAIL)) else {
            push.broken = true;
            return 0;
        };
        let mut n = 0;
        push.stalled = false;
        while n < waiting {
            let slot = push.ring.slot(0) as u64;
            let rec = sh.lay.push_rec(slot);
            let sub = sh.u32(rec + P_SUB).load(Ordering::Relaxed);
            if push
                .queues
                .get(&sub)
                .is_some_and(|q| q.items.len() >= depth)
            {
                push.stalled = true;
                break;
            }
            let k = sh.u32(rec + P_KIND).load(Ordering::Relaxed);
            let len = sh.u32(rec + P_LEN).load(Ordering::Relaxed) as usize;
            let sig = sh.u64(rec + P_SIG).load(Ordering::Relaxed);
            let bytes = sh.push_data(slot, len).to_vec();
            // We are done reading the record; the server may reuse it (the advance's
            // Release).
            push.ring.advance(1, sh.u64(PUSH_HEAD));
            n += 1;
            if let Some(q) = push.queues.get_mut(&sub) {
                if k == PUSH_END {
                    q.ended = true;
                } else {
                    q.items.push_back((sig, bytes));
                }
            }
        }
        n as usize
    }

    /// Whether the push ring holds records that draining would take (not ones stalled
    /// behind a full queue).
    pub(super) fn push_pending(&self) -> bool {
        let push = lock(&self.push);
        push.ring.available(self.sh.u64(PUSH_TAIL)) != Ok(0) && !push.stalled
    }

    /// Values were drained that readers of other subscriptions may sleep for (the ring had
    /// stalled behind a full queue, and the server does not ring again for them).
    pub(super) fn wake_push_readers(&self) {
        for w in std::mem::take(&mut *lock(&self.wake.push)) {
            w.wake();
        }
        self.kick_reactor();
    }
}

/// The client's end of a subscription ([`Client::subscribe`](crate::Client::subscribe)): the values the server pushes,
/// in order. Dropping it unsubscribes (the server's
/// [`Notifier::push`](crate::Notifier::push) then fails with `Unsubscribed`).
///
/// A receive ends with [`Error::NoReply`] once the server dropped its `Notifier` and every
/// value before was received, and with [`Error::ServerDisappeared`] if the server is gone.
pub struct Subscription {
    pub(super) shared: Arc<ClientShared>,
    pub(super) id: u32,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish()
    }
}

impl Subscription {
    /// The next value if one is there.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] if the value is not a `T`; [`Error::NoReply`] /
    /// [`Error::ServerDisappeared`] when the subscription has ended.
    pub fn try_recv<T: Wire>(&self) -> Result<Option<T>, Error<()>> {
        Ok(self.next()?)
    }

    /// [`Subscription::try_recv`] with the transport's error.
    fn next<T: Wire>(&self) -> Result<Option<T>, Fault> {
        let conn = &self.shared.conn;
        let mut push = lock(&conn.push);
        conn.drain_push(&mut push);
        if push.broken {
            return Err(Fault::Protocol);
        }
        let q = push.queues.entry(self.id).or_default();
        if let Some((sig, bytes)) = q.items.pop_front() {
            if push.stalled && conn.drain_push(&mut push) > 0 {
                // Our queue held the ring up: values for other readers came through.
                drop(push);
                conn.wake_push_readers();
            }
            return T::decode_signed(sig, &ShmView::from_private(&bytes))
                .map(Some)
                .ok_or(Fault::Protocol);
        }
        if q.ended {
            return Err(Fault::NoReply);
        }
        if conn.dead() {
            return Err(Fault::ServerDisappeared);
        }
        Ok(None)
    }

    /// Waits for the next value.
    ///
    /// # Errors
    ///
    /// As [`Subscription::try_recv`].
    pub fn recv<T: Wire>(&self) -> Result<T, Error<()>> {
        Ok(self.recv_until(Deadline::NEVER)?)
    }

    /// Waits at most `timeout` for the next value.
    ///
    /// # Errors
    ///
    /// As [`Subscription::try_recv`], and [`Error::Timeout`].
    pub fn recv_timeout<T: Wire>(&self, timeout: Duration) -> Result<T, Error<()>> {
        Ok(self.recv_until(Deadline::after(timeout))?)
    }

    /// Parks on the client bell ([`park::wait_announced`], without spinning): the sleep is
    /// announced by `cbell_wait` and the bell's value before the last look at the push ring;
    /// the server bumps the bell and wakes it after each push while `cbell_wait` is set, so a
    /// push after the look changes the word and the sleep does not happen or ends.
    pub(super) fn recv_until<T: Wire>(&self, deadline: Deadline) -> Result<T, Fault> {
        let conn = &self.shared.conn;
        let sh = &conn.sh;
        let bell = sh.u32(CBELL);
        let announce = || {
            sh.u32(CBELL_WAIT).store(1, Ordering::SeqCst);
            // SeqCst: the Dekker pair with the server's fence in `ring_client` after it
            // publishes a push: it sees `cbell_wait` and rings, or `push_pending` below sees
            // the push.
            fence(Ordering::SeqCst);
            let seen = bell.load(Ordering::SeqCst);
            Ok((!conn.push_pending()).then_some(seen))
        };
        let no_spin = Duration::ZERO;
        match park::wait_announced(bell, &**conn, no_spin, deadline, || self.next(), announce) {
            Ok((v, _spun)) => Ok(v),
            Err(Gave::Err(e)) => Err(e),
            // Values pushed before the server died are still received.
            Err(Gave::Dead) => self.next()?.ok_or(Fault::ServerDisappeared),
            Err(Gave::Expired) => Err(Fault::Timeout),
        }
    }

    /// Awaits the next value, on any executor.
    ///
    /// # Errors
    ///
    /// As [`Subscription::try_recv`].
    pub async fn recv_async<T: Wire>(&self) -> Result<T, Error<()>> {
        std::future::poll_fn(|cx| {
            if let Some(v) = self.try_recv()? {
                return Poll::Ready(Ok(v));
            }
            let conn = &self.shared.conn;
            if conn.ensure_reactor().is_err() {
                // No bell thread: look again at the executor's next turn (see `poll_done`).
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            lock(&conn.wake.push).push(cx.waker().clone());
            // The reactor wakes on every ring of the bell; look once more after registering.
            if conn.push_pending() || conn.dead() {
                if let Some(v) = self.try_recv()? {
                    return Poll::Ready(Ok(v));
                }
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let conn = &self.shared.conn;
        let mut push = lock(&conn.push);
        let was = push.queues.remove(&self.id);
        // Our full queue may have held the ring up: its records are now dropped as read.
        if push.stalled && conn.drain_push(&mut push) > 0 {
            drop(push);
            conn.wake_push_readers();
        } else {
            drop(push);
        }
        if was.is_some_and(|q| !q.ended) && !conn.dead() {
            let _ = conn.post(
                (kind::UNSUBSCRIBE, 0, 0, [u64::from(self.id), 0, 0, 0]),
                |_| Some((0, 0)),
                Deadline::after(Duration::from_millis(100)),
            );
        }
    }
}
