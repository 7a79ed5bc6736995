//! What the demo's server and client processes say to each other: the request is an opcode
//! and an argument (`[u64; 2]`), the reply a `u64`, the application error a short string.

use crate::rpc as shm;
use std::time::Duration;

/// A request: `[opcode, argument]`.
pub(crate) type Rq = [u64; 2];
/// A reply.
pub(crate) type Rp = u64;
/// An application error (what `fail` sends).
pub(crate) type AppErr = courier::flat::String<32>;
/// The demo's client.
pub(crate) type DemoClient = shm::Client<Rq, Rp, AppErr>;
/// The demo's server.
pub(crate) type DemoServer = shm::Server<Rq, Rp, AppErr>;

/// Replies `argument + 1`.
pub(crate) const ECHO: u64 = 1;
/// Fails with an application error.
pub(crate) const FAIL: u64 = 2;
/// Holds the request on another thread until the caller cancels it (at most [`HOLD_LIMIT`]).
pub(crate) const HOLD: u64 = 3;
/// One-way: counts a log line.
pub(crate) const LOG: u64 = 4;
/// Replies with the counter named by the argument (`STATUS_*`).
pub(crate) const STATUS: u64 = 5;
/// Lend: replies with the sum of the lent bytes.
pub(crate) const LEND_SUM: u64 = 6;
/// Lend mut: writes the argument into the first and last 8 bytes of the buffer, replies its
/// length.
pub(crate) const LEND_STAMP: u64 = 7;
/// Deferred: a worker thread replies `argument * 2` once [`RELEASE`] has been served.
pub(crate) const DEFER: u64 = 8;
/// Lets the deferred worker reply.
pub(crate) const RELEASE: u64 = 9;
/// Subscribe: the server pushes `argument` notifications (each the monotonic time in ns).
pub(crate) const SUBSCRIBE: u64 = 10;
/// Replies, then the server exits.
pub(crate) const SHUTDOWN: u64 = 11;

/// [`STATUS`] counter: held requests taken so far.
pub(crate) const STATUS_HELD: u64 = 1;
/// [`STATUS`] counter: held requests the server saw canceled.
pub(crate) const STATUS_CANCELS_SEEN: u64 = 2;
/// [`STATUS`] counter: one-way log lines received.
pub(crate) const STATUS_LOGS: u64 = 3;
/// [`STATUS`] counter: subscriptions the server saw end.
pub(crate) const STATUS_UNSUBSCRIBED: u64 = 4;

/// Scalar op (one-way): adds `args[0]` to the server's scalar sum.
pub(crate) const SC_ADD: u32 = 1;
/// Scalar op (blocking): replies `[sum, count]` of the [`SC_ADD`]s.
pub(crate) const SC_GET: u32 = 2;
/// Scalar op (blocking): replies `[args[0] + 1, 0]`.
pub(crate) const SC_ECHO: u32 = 3;

/// The longest the server holds a [`HOLD`] request or waits for an unsubscribe.
pub(crate) const HOLD_LIMIT: Duration = Duration::from_secs(10);

/// Nanoseconds on the system-wide monotonic clock: comparable between processes.
pub(crate) fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// Kills this process when its parent dies, so a demo child never outlives the demo; false if
/// the parent is already gone.
pub(crate) fn die_with_parent(parent: u32) -> bool {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    // The parent may have died before the call above: then we were re-parented.
    rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32) == Some(parent)
}
