//! The client bell: the futex word the server rings after completing a slot an async
//! waiter or a slot waiter watches, or after publishing a push. The bell thread
//! ([`reactor`], started on first use) sleeps on it and turns each ring into `Waker` calls;
//! [`Wakeups`] holds the wakers it calls.

use crate::rpc::layout::{state, CBELL, CBELL_WAIT};
use crate::sync::{fence, Ordering};
use crate::sys;
use std::sync::{Arc, Mutex};
use std::task::Waker;

use super::conn::{Conn, Pool};
use super::lock;

/// The wakers of a connection: slot waiters, async calls, subscription readers.
pub(super) struct Wakeups {
    pub(super) pool: Mutex<Pool>,
    /// Wakers of async waits, by slot.
    pub(super) calls: Mutex<Vec<Option<Waker>>>,
    pub(super) push: Mutex<Vec<Waker>>,
}

impl Wakeups {
    /// The server is gone (the watcher's callback) or the client stops: wakes every waiter,
    /// which then looks at `dead()` / `stopping`. Each waiter registers under the same lock
    /// it is taken from here and looks at `dead()` after registering, so none is missed.
    pub(super) fn wake_all(&self) {
        let slots: Vec<Waker> = lock(&self.pool).waiters.drain(..).map(|(_, w)| w).collect();
        let calls: Vec<Waker> = lock(&self.calls)
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        let push = std::mem::take(&mut *lock(&self.push));
        for w in slots.into_iter().chain(calls).chain(push) {
            w.wake();
        }
    }
}

impl Conn {
    /// Rings the client bell ourselves: the bell thread looks at everything again.
    pub(super) fn kick_reactor(&self) {
        self.sh.u32(CBELL).fetch_add(1, Ordering::SeqCst);
        sys::futex_wake(self.sh.u32(CBELL));
    }

    /// Starts the thread that turns the client bell into `Waker` calls, once. `Err` if it
    /// cannot be started (tried again on the next call).
    pub(super) fn ensure_reactor(self: &Arc<Self>) -> Result<(), ()> {
        let mut r = lock(&self.reactor);
        if r.is_some() {
            return Ok(());
        }
        // Announce before any async wait registers, so the server rings from now on.
        self.sh.u32(CBELL_WAIT).store(1, Ordering::SeqCst);
        let conn = Arc::clone(self);
        let (ending, ended) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("courier-client-bell".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ending = ending;
                reactor(&conn);
            })
            .map_err(drop)?;
        *r = Some((t, ended));
        Ok(())
    }
}

/// The client bell thread: sleeps on the connection's client bell, wakes the async waits
/// whose slots are done, the slot waiters for zombies that came back and the subscription
/// readers, until the client is dropped or the server dies.
pub(super) fn reactor(conn: &Conn) {
    let sh = &conn.sh;
    loop {
        sh.u32(CBELL_WAIT).store(1, Ordering::SeqCst);
        // SeqCst: the Dekker pair with the server's fence in `ring_client` after it
        // completes a slot or publishes a push.
        fence(Ordering::SeqCst);
        let seen = sh.u32(CBELL).load(Ordering::SeqCst);
        let dead = conn.dead();
        let stop = conn.stopping.load(Ordering::SeqCst);
        if dead || stop {
            conn.wake.wake_all();
            return;
        }
        let mut wake = Vec::new();
        {
            let mut w = lock(&conn.wake.calls);
            for (slot, waker) in w.iter_mut().enumerate() {
                if waker.is_some() && conn.phase(slot) == state::DONE {
                    wake.extend(waker.take());
                }
            }
        }
        {
            let mut pool = lock(&conn.wake.pool);
            conn.reclaim(&mut pool);
            let free = pool.free.len();
            wake.extend(pool.pop_waiters(free));
        }
        if conn.push_pending() {
            wake.extend(std::mem::take(&mut *lock(&conn.wake.push)));
        }
        wake.into_iter().for_each(Waker::wake);
        conn.watch.shared.counted(|| {
            if !conn.dead() && !conn.stopping.load(Ordering::SeqCst) {
                sys::futex_wait(sh.u32(CBELL), seen, None);
            }
        });
    }
}
