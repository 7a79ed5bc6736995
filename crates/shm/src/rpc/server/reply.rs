//! Answering: a taken slot owed a completion ([`SlotRef`]), and the public handles that
//! complete it, [`ReplyContext`] (calls and lends) and [`ScalarCall`].

use crate::rpc::fault::Fault;
use crate::rpc::layout::{status, Out, F_ASYNC, S_FLAGS, S_RARGS, S_RLEN, S_RSIG, S_STATUS};
use crate::rpc::slot;
use crate::rpc::wire::Wire;
use crate::rpc::Error;
use crate::substrate::deadline::Deadline;
use crate::sync::Ordering;
use crate::sys;
use crate::view::{ShmView, ShmViewMut};
use courier_core::flat::{FlatError, IpcSafe};
use courier_core::opcode::{Opcode, UnknownOpcode};
use std::marker::PhantomData;
use std::sync::Arc;

use super::conn::{ring_client, Conn};
use super::lend::Lent;
use super::sent::SentBuf;

/// A taken slot, owed a completion. Dropping it completes with `NO_REPLY`.
pub(super) struct SlotRef {
    pub(super) conn: Arc<Conn>,
    pub(super) slot: usize,
    pub(super) flags: u32,
    /// The call's kind has reply words (`layout::has_args`): the completion writes them.
    pub(super) words: bool,
    pub(super) done: bool,
}

impl std::fmt::Debug for SlotRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("client_pid", &self.conn.peer.pid)
            .field("slot", &self.slot)
            .finish()
    }
}

impl SlotRef {
    /// Completes the slot with `st` and no reply, whatever became of the caller.
    pub(super) fn settle(mut self, st: u32) {
        let _ = self.complete(st, |_| Some((0, 0, [0; 2])));
    }

    pub(super) fn is_canceled(&self) -> bool {
        slot::is_canceled(self.conn.sh.state(self.slot))
    }

    /// Completes the slot, once (later calls and the drop do nothing): `write` writes the
    /// reply (in the record if small, else in the data area: [`Out`]) and returns (length,
    /// signature, reply words), or `None` if the value does not fit (completed with
    /// `TOO_LARGE`, reported as [`Error::TooLarge`]); then
    /// `TAKEN -> DONE`, waking a sleeping caller. `Err(OriginDisappeared)` if the caller is
    /// gone or canceled (nothing it can see was changed then, or only its abandoned slot).
    pub(super) fn complete(
        &mut self,
        st: u32,
        write: impl FnOnce(&mut Out<'_>) -> Option<(usize, u64, [u64; 2])>,
    ) -> Result<(), Fault> {
        if std::mem::replace(&mut self.done, true) {
            return Err(Fault::OriginDisappeared);
        }
        let conn = &self.conn;
        let sh = &conn.sh;
        let slot = self.slot;
        let mut outcome = Ok(());
        let r = (|| {
            if conn.gone() {
                conn.in_service[slot].store(false, Ordering::Release);
                return Err(Fault::OriginDisappeared);
            }
            let word = sh.state(slot);
            if slot::is_taken(word) {
                let rec = sh.lay.rec(slot);
                let (st, (len, sig, words)) = match write(&mut sh.reply_out(slot)) {
                    Some(w) => (st, w),
                    None => {
                        outcome = Err(Fault::TooLarge);
                        (status::TOO_LARGE, (0, 0, [0; 2]))
                    }
                };
                sh.u32(rec + S_STATUS).store(st, Ordering::Relaxed);
                sh.u32(rec + S_RLEN).store(len as u32, Ordering::Relaxed);
                sh.u64(rec + S_RSIG).store(sig, Ordering::Relaxed);
                // The record's second line only for a kind that reads it.
                if self.words {
                    for (i, w) in words.iter().enumerate() {
                        sh.u64(rec + S_RARGS + 8 * i).store(*w, Ordering::Relaxed);
                    }
                } else {
                    debug_assert_eq!(words, [0; 2], "reply words for a kind without them");
                }
            }
            // The answer above is visible to a caller that sees DONE (the transition's
            // Release, its Acquire).
            // The slot stops being ours before the word says so (the client may queue it
            // again the moment it sees DONE, and the next worker must not find it in service).
            let release = || conn.in_service[slot].store(false, Ordering::Release);
            match slot::complete(word, release) {
                slot::Complete::Delivered { wake } => {
                    if wake {
                        sys::futex_wake(word);
                    }
                    // SeqCst (after the transition's SeqCst CAS): the Dekker pair with an
                    // async waiter that sets F_ASYNC and then looks for DONE.
                    let flags = sh.u32(sh.lay.rec(slot) + S_FLAGS).load(Ordering::SeqCst);
                    if (self.flags | flags) & F_ASYNC != 0 {
                        ring_client(sh);
                    }
                    outcome
                }
                // The caller gave up after we took it; the slot is back with it.
                slot::Complete::Canceled => {
                    conn.ring_if_async(slot);
                    Err(Fault::OriginDisappeared)
                }
                slot::Complete::Broken => {
                    conn.cut_off();
                    Err(Fault::OriginDisappeared)
                }
            }
        })();
        conn.counters.in_service.fetch_sub(1, Ordering::Relaxed);
        if r.is_ok() {
            conn.counters.served.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl Drop for SlotRef {
    fn drop(&mut self) {
        let _ = self.complete(status::NO_REPLY, |_| Some((0, 0, [0; 2])));
    }
}

/// The answer owed for one call; it may be kept and answered later, from any thread
/// (deferred response).
///
/// Dropping it unanswered completes the call with [`Error::NoReply`] (for every kind of
/// call: unlike Xous, no caller is left blocked), except a lend or lend_mut whose reply type
/// is `()`: as a Xous memory message, dropping answers it, and the caller gets `Ok(())`
/// (its buffer holding whatever the server wrote). A lent buffer ([`lent`](Self::lent),
/// [`lent_mut`](Self::lent_mut)) is the server's until the context is answered or dropped;
/// then it goes back to the caller, whose `lend` / `lend_mut` returns.
pub struct ReplyContext<Rp, E> {
    pub(super) slot: SlotRef,
    pub(super) one_way: bool,
    pub(super) lent: Option<Lent>,
    /// A lend whose reply type is `()`: dropping the context answers `Ok(())`.
    pub(super) unit_on_drop: bool,
    /// The buffer was given away ([`Client::send_buf`](crate::Client::send_buf)).
    pub(super) given: bool,
    /// The count of valid bytes the server reports for the lent window
    /// ([`set_valid`](Self::set_valid)); the window's length if unset.
    pub(super) valid: Option<usize>,
    pub(super) _types: PhantomData<fn(Rp, E)>,
}

impl<Rp, E> std::fmt::Debug for ReplyContext<Rp, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyContext")
            .field("slot", &self.slot)
            .field("one_way", &self.one_way)
            .field("lent", &self.lent.as_ref().map(|l| l.len))
            .finish()
    }
}

impl<Rp: Wire, E: Wire> ReplyContext<Rp, E> {
    /// Answers the call with `reply`.
    ///
    /// # Errors
    ///
    /// [`Error::OriginDisappeared`] if the caller's process died or it canceled the call (the
    /// reply is discarded); [`Error::TooLarge`] if the reply does not fit a slot (the caller
    /// gets `TooLarge` too). A one-way call's reply is discarded: `Ok`.
    pub fn reply(self, reply: Rp) -> Result<(), Error<E>> {
        self.answer(status::OK, reply)
    }

    /// Answers the call with an application error: the caller gets [`Error::App`].
    ///
    /// # Errors
    ///
    /// As [`ReplyContext::reply`].
    pub fn fail(self, err: E) -> Result<(), Error<E>> {
        self.answer(status::APP, err)
    }

    pub(super) fn answer<T: Wire>(mut self, st: u32, value: T) -> Result<(), Error<E>> {
        let words = self.valid_words();
        if let Some(l) = self.lent.take() {
            self.slot.conn.end_lend(&l);
        }
        let r = self.slot.complete(st, |out| {
            out.put(&value).map(|n| (n, value.signature(), words))
        });
        match r {
            Err(Fault::TooLarge) => Err(Error::TooLarge),
            _ if self.one_way => Ok(()),
            Ok(()) => Ok(()),
            Err(_) => Err(Error::OriginDisappeared),
        }
    }

    /// Passes the call on to another server through `to`, as `rq`, and answers the caller
    /// with that server's answer: Xous's forwarding, for proxies and gateways. A lent buffer
    /// goes on as the same window of the same pages (no byte copied): shared for a `lend`,
    /// exclusive for a `lend_mut` (whose valid count comes back too). The worker waits for the
    /// other server; call it from another thread (the context is `Send`) to keep serving.
    ///
    /// The other server's reply, application error, `NoReply`, `TooLarge`, `LimitReached`,
    /// `Protocol` or `ServerDisappeared` reaches the caller as such (`Timeout` as `NoReply`).
    ///
    /// # Errors
    ///
    /// What answering the caller returns ([`Error::OriginDisappeared`] if it gave up), or,
    /// for a lend, [`Error::Protocol`] if this server was not bound with
    /// [`ServerConfig::forwarding`](crate::ServerConfig::forwarding) (the caller gets
    /// `NoReply`; nothing was forwarded).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use courier_shm::{Client, Incoming, Server, ServerConfig};
    /// use std::time::Duration;
    ///
    /// // A gateway in front of "storage": every call, lends included, goes on unchanged.
    /// let gateway = Server::<u32, u64, u8>::bind("gateway", ServerConfig::new().forwarding(true))?;
    /// let storage = Client::<u32, u64, u8>::connect("storage", Duration::from_secs(1))?;
    /// while let Ok(Incoming::Call(rq, ctx)) = gateway.wait() {
    ///     let _ = ctx.forward(&storage, rq);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn forward<Rq2: Wire>(
        mut self,
        to: &crate::Client<Rq2, Rp, E>,
        rq: Rq2,
    ) -> Result<(), Error<E>> {
        let answer = match &self.lent {
            None => to.req(rq),
            Some(l) => {
                let Ok(buf) = crate::ShmBuf::sharing(&l.seg) else {
                    drop(self);
                    return Err(Error::Protocol);
                };
                // The same window, exclusive or not, and the signature of a lent flat value.
                let window = l.offset..l.offset + l.len;
                let (exclusive, signature, len) = (l.exclusive, l.signature, l.len);
                to.lend_until(rq, &buf, window, exclusive, signature, Deadline::NEVER)
                    .0
                    .and_then(|(rp, [valid, _])| match usize::try_from(valid) {
                        Ok(valid) if valid <= len => {
                            self.valid = Some(valid);
                            Ok(rp)
                        }
                        _ => Err(Error::Protocol),
                    })
            }
        };
        let st = match answer {
            Ok(rp) => return self.reply(rp),
            Err(Error::App(e)) => return self.fail(e),
            Err(Error::TooLarge) => status::TOO_LARGE,
            Err(Error::LimitReached) => status::LIMIT,
            Err(Error::Protocol) => status::PROTOCOL,
            Err(Error::ServerDisappeared) => status::SERVER_GONE,
            Err(_) => status::NO_REPLY,
        };
        if let Some(l) = self.lent.take() {
            self.slot.conn.end_lend(&l);
        }
        match self.slot.complete(st, |_| Some((0, 0, [0; 2]))) {
            Ok(()) => Ok(()),
            Err(_) if self.one_way => Ok(()),
            Err(_) => Err(Error::OriginDisappeared),
        }
    }

    /// Whether the caller canceled the call (a timeout, a dropped `WaitReply` or future); the
    /// work may stop, a reply would be discarded.
    pub fn is_canceled(&self) -> bool {
        self.slot.is_canceled() || self.slot.conn.gone()
    }

    /// Whether the call was one-way (`send`): nobody waits for the reply.
    pub fn is_one_way(&self) -> bool {
        self.one_way
    }

    /// The caller's process id (from the kernel, at connection time).
    pub fn client_pid(&self) -> u32 {
        self.slot.conn.peer.pid as u32
    }

    /// The buffer the caller lent with `lend` or `lend_mut`, in place (no copy): a view, from
    /// which bytes are copied out or flat values read and checked ([`ShmView`]), since the
    /// caller's process can write the pages while the server reads them.
    pub fn lent(&self) -> Option<ShmView<'_>> {
        self.lent.as_ref().map(|l| {
            // SAFETY: `ptr..ptr+len` lies inside the lent segment (checked in `take_lend`),
            // which the `Arc` keeps mapped while `self` is borrowed.
            unsafe { ShmView::new(l.ptr(), l.len) }
        })
    }

    /// The flat value the caller lent with [`Client::lend_box`](crate::Client::lend_box) or
    /// [`lend_box_mut`](crate::Client::lend_box_mut), as a `T`: the signature that came
    /// with the lend is compared with `T`'s, then the bytes are copied out and checked, so
    /// a caller writing them meanwhile cannot change what was checked. `None` for a call
    /// without a lend.
    ///
    /// # Errors
    ///
    /// [`FlatError::SignatureMismatch`] (another type, or bytes lent with `lend`),
    /// [`FlatError::TooShort`], or a content error of the bytes.
    pub fn lent_value<T: IpcSafe>(&self) -> Option<Result<T, FlatError>> {
        let lent = self.lent.as_ref()?;
        if lent.signature != T::SIGNATURE {
            return Some(Err(FlatError::SignatureMismatch {
                expected: T::SIGNATURE,
                found: lent.signature,
            }));
        }
        self.lent().map(|view| view.read::<T>(0))
    }

    /// Changes the flat value the caller lent with
    /// [`lend_box_mut`](crate::Client::lend_box_mut) in place: reads it as
    /// [`lent_value`](Self::lent_value) does, runs `f` on the copy, and writes it back
    /// (padding zeroed); the caller sees it when the call returns. `None` for a call
    /// without a mutable lend. Copying keeps it sound while the caller's process could write
    /// the same bytes: `f` never sees shared memory.
    ///
    /// # Errors
    ///
    /// As [`lent_value`](Self::lent_value); nothing is written then.
    pub fn update_lent<T: IpcSafe, R>(
        &mut self,
        f: impl FnOnce(&mut T) -> R,
    ) -> Option<Result<R, FlatError>> {
        let mut value = match self.lent_value::<T>()? {
            Ok(v) => v,
            Err(e) => return Some(Err(e)),
        };
        let mut view = self.lent_mut()?;
        let r = f(&mut value);
        Some(view.write(0, value).map(|_| r))
    }

    /// The buffer the caller gave away with
    /// [`Client::send_buf`](crate::Client::send_buf), to keep after the call: `None` for
    /// other calls, or once taken. Until taken, [`lent`](Self::lent) and
    /// [`lent_mut`](Self::lent_mut) reach it too; a context dropped with it unmaps it.
    pub fn take_sent(&mut self) -> Option<SentBuf> {
        if !self.given {
            return None;
        }
        let lent = self.lent.take()?;
        self.slot.conn.end_lend(&lent);
        Some(SentBuf::new(lent))
    }

    /// Where the lent window starts in the caller's buffer: `0` for `lend` / `lend_mut`,
    /// `range.start` for [`Client::lend_range`](crate::Client::lend_range) /
    /// [`lend_mut_range`](crate::Client::lend_mut_range) (Xous's `offset`). `None` for a
    /// call without a lend.
    pub fn lent_offset(&self) -> Option<usize> {
        self.lent.as_ref().map(|l| l.offset)
    }

    /// Reports how many bytes of the lent window, from its start, are valid (Xous's
    /// `valid`): the caller of [`lend_mut_range`](crate::Client::lend_mut_range) gets it
    /// beside the reply. Unset, it is the window's length.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] (nothing set) if `valid` is longer than the window, or the call
    /// has no lend.
    pub fn set_valid(&mut self, valid: usize) -> Result<(), Error<E>> {
        match &self.lent {
            Some(l) if valid <= l.len => {
                self.valid = Some(valid);
                Ok(())
            }
            _ => Err(Error::TooLarge),
        }
    }

    /// The reply words of a lend: `[valid, 0]`.
    fn valid_words(&self) -> [u64; 2] {
        let valid = self.valid.or(self.lent.as_ref().map(|l| l.len));
        [valid.unwrap_or(0) as u64, 0]
    }

    /// The buffer the caller lent with `lend_mut`, for writing in place; the caller sees the
    /// bytes when the call returns. `None` for other calls (including `lend`).
    pub fn lent_mut(&mut self) -> Option<ShmViewMut<'_>> {
        self.lent.as_mut().filter(|l| l.exclusive).map(|l| {
            // SAFETY: as in `lent`; the lend is exclusive (checked in `take_lend`: no other
            // lend of this buffer is in progress), and `&mut self` makes this the only
            // writable view this process hands out.
            unsafe { ShmViewMut::new(l.ptr(), l.len) }
        })
    }
}

impl<Rp, E> Drop for ReplyContext<Rp, E> {
    fn drop(&mut self) {
        if let Some(l) = self.lent.take() {
            self.slot.conn.end_lend(&l);
            if self.unit_on_drop {
                // Xous's rule for memory messages: a lend whose reply is `()` is answered
                // by dropping it.
                let words = [self.valid.unwrap_or(l.len) as u64, 0];
                let _ = self.slot.complete(status::OK, |out| {
                    out.put(&()).map(|n| (n, <() as Wire>::SIGNATURE, words))
                });
            }
        }
        // `self.slot` completes with NO_REPLY in its own drop if still owed.
    }
}

/// A scalar message: an opcode and four words, no payload. See [`Incoming::Scalar`](crate::Incoming::Scalar).
///
/// Words are `u64` on the wire whatever the width of `usize` on either side, so a 32-bit and
/// a 64-bit process agree. Dropping a blocking one unanswered gives its caller
/// [`Error::NoReply`].
#[derive(Debug)]
pub struct ScalarCall {
    pub(super) slot: SlotRef,
    pub(super) op: u32,
    pub(super) args: [u64; 4],
    pub(super) blocking: bool,
}

impl ScalarCall {
    /// The opcode.
    pub fn op(&self) -> u32 {
        self.op
    }

    /// The opcode as the enum `O` (a [`#[derive(Opcode)]`](courier_core::opcode) enum), or
    /// the opcode no variant has, to answer with [`ScalarCall::refuse`].
    ///
    /// # Errors
    ///
    /// [`UnknownOpcode`] when `O` has no variant with this opcode.
    pub fn opcode<O: Opcode>(&self) -> Result<O, UnknownOpcode> {
        O::decode(self.op)
    }

    /// The four argument words.
    pub fn args(&self) -> [u64; 4] {
        self.args
    }

    /// Whether the caller waits for a reply (`blocking_scalar`).
    pub fn is_blocking(&self) -> bool {
        self.blocking
    }

    /// The caller's process id.
    pub fn client_pid(&self) -> u32 {
        self.slot.conn.peer.pid as u32
    }

    /// Whether the caller gave up waiting.
    pub fn is_canceled(&self) -> bool {
        self.slot.is_canceled() || self.slot.conn.gone()
    }

    /// Answers with two words. For a one-way scalar the words are discarded: `Ok`.
    ///
    /// # Errors
    ///
    /// [`Error::OriginDisappeared`] if the caller died or gave up.
    pub fn reply(self, words: [u64; 2]) -> Result<(), Error<()>> {
        self.answer(status::OK, words)
    }

    /// Refuses the message because this server does not know its opcode (or its
    /// arguments): a blocking caller gets [`Error::Protocol`]; for a one-way scalar nothing
    /// is sent (`Ok`).
    ///
    /// # Errors
    ///
    /// [`Error::OriginDisappeared`] if the caller died or gave up.
    pub fn refuse(self) -> Result<(), Error<()>> {
        self.answer(status::PROTOCOL, [0; 2])
    }

    fn answer(self, status: u32, words: [u64; 2]) -> Result<(), Error<()>> {
        let (blocking, mut slot) = (self.blocking, self.slot);
        let r = slot.complete(status, |_| Some((0, 0, words)));
        if !blocking {
            return Ok(());
        }
        Ok(r?)
    }
}
