//! Pushes, server side: writing records into a connection's push ring, ends of
//! subscriptions deferred while it is full, and the public [`Notifier`] and [`PushError`].

use crate::rpc::layout::{PUSH_DATA, PUSH_END, PUSH_HEAD, PUSH_TAIL, P_KIND, P_LEN, P_SIG, P_SUB};
use crate::rpc::wire::Wire;
use crate::substrate::ring::RingError;
use crate::sync::Ordering;
use crate::view::ShmViewMut;
use std::sync::Arc;

use super::conn::{ring_client, Conn};

impl Conn {
    /// Writes one record (of subscription `sub`) into the push ring and rings the client;
    /// never waits. `Full` if the ring has no room; a head the client moved past the tail cuts
    /// it off.
    pub(super) fn write_push(
        &self,
        sub: u32,
        kind: u32,
        fill: impl FnOnce(&mut ShmViewMut<'_>) -> Option<(usize, u64)>,
    ) -> Result<(), PushError> {
        let sh = &self.sh;
        let mut ring = self.push.lock().unwrap_or_else(|p| p.into_inner());
        // The client's head, read once and checked (`Producer::reserve`).
        let slot = match ring.reserve(sh.u64(PUSH_HEAD)) {
            Ok(slot) => slot as u64,
            Err(RingError::Full) => return Err(PushError::Full),
            // A head moved past our tail: only a broken or hostile client writes one.
            Err(RingError::Broken) => {
                self.cut_off();
                return Err(PushError::ClientGone);
            }
        };
        let (len, sig) = fill(&mut sh.push_data_mut(slot)).ok_or(PushError::TooLarge)?;
        let rec = sh.lay.push_rec(slot);
        sh.u32(rec + P_SUB).store(sub, Ordering::Relaxed);
        sh.u32(rec + P_KIND).store(kind, Ordering::Relaxed);
        sh.u32(rec + P_LEN).store(len as u32, Ordering::Relaxed);
        sh.u64(rec + P_SIG).store(sig, Ordering::Relaxed);
        // The record is visible to a client that sees the new tail (the commit's Release).
        ring.commit(sh.u64(PUSH_TAIL));
        drop(ring);
        ring_client(sh);
        Ok(())
    }

    /// Pushes the subscription ends that found the ring full, while there is room.
    pub(super) fn flush_ends(&self) {
        if !self.has_ends.load(Ordering::Relaxed) {
            return;
        }
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(&id) = ends.first() {
            if self.write_push(id, PUSH_END, |_| Some((0, 0))) == Err(PushError::Full) {
                return;
            }
            ends.remove(0);
        }
        self.has_ends.store(false, Ordering::Relaxed);
    }
}

/// Why [`Notifier::push`] did not deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The client dropped its [`Subscription`](crate::Subscription).
    #[error("the client unsubscribed")]
    Unsubscribed,
    /// The client's process is gone.
    #[error("the client process is gone")]
    ClientGone,
    /// The client has not read the pushes already waiting (`ServerConfig::push_depth`); the
    /// value was not sent. A server never blocks on a slow subscriber.
    #[error("the client's push ring is full")]
    Full,
    /// The value does not fit a push record (`ServerConfig::push_size`).
    #[error("the value is larger than a push record")]
    TooLarge,
}

/// The server's end of a subscription: pushes values to one client whenever the server likes
/// (the asynchronous pattern). `Send + Sync`: keep it anywhere, push from any thread.
///
/// Dropping it ends the subscription: the client's receive returns
/// [`Error::NoReply`](crate::Error::NoReply) after the values already pushed.
pub struct Notifier {
    pub(super) conn: Arc<Conn>,
    pub(super) id: u32,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("client_pid", &self.conn.peer.pid)
            .field("id", &self.id)
            .finish()
    }
}

impl Notifier {
    /// Whether the client still listens.
    pub fn is_subscribed(&self) -> bool {
        !self.conn.gone() && self.conn.lock_subs().contains(&self.id)
    }

    /// The subscribed client's process id.
    pub fn client_pid(&self) -> u32 {
        self.conn.peer.pid as u32
    }

    /// Pushes `value` to the client. Never blocks.
    ///
    /// # Errors
    ///
    /// See [`PushError`]; the value was not delivered.
    pub fn push<T: Wire>(&self, value: T) -> Result<(), PushError> {
        if self.conn.gone() {
            return Err(PushError::ClientGone);
        }
        if !self.is_subscribed() {
            return Err(PushError::Unsubscribed);
        }
        self.conn.write_push(self.id, PUSH_DATA, |out| {
            value.encode(out).map(|n| (n, value.signature()))
        })
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        let was = self.conn.lock_subs().remove(&self.id);
        if was
            && !self.conn.gone()
            && self.conn.write_push(self.id, PUSH_END, |_| Some((0, 0))) == Err(PushError::Full)
        {
            // Never wait for a slow client: the end is pushed by a worker as soon as the
            // ring has room (see `Conn::flush_ends`).
            let mut ends = self.conn.ends.lock().unwrap_or_else(|p| p.into_inner());
            ends.push(self.id);
            self.conn.has_ends.store(true, Ordering::Relaxed);
        }
    }
}
