//! The two ends of a channel. Each method's transition is in the table of the module docs
//! of `channel`; the SAFETY comments name the row that makes a buffer access sound.

use core::fmt;

use super::channel::{
    Channel, Ref, RefMut, BUILDING_REQUEST, BUILDING_RESPONSE, CANCELED, HOLDS_REQUEST,
    HOLDS_RESPONSE, IDLE, PAYLOAD_MASK, REQUESTED, REQUESTER, RESPONDED, RESPONDER, STATE_MASK,
};
use super::{Callback, Error, SendError, State};

/// The requester end of a [`Channel`]: sends requests, reads responses, cancels.
///
/// Created by [`Channel::split`], [`Channel::requester`] or [`Interchange::claim`]; dropping
/// it releases the end (and resets the channel if the responder is released too).
///
/// [`Interchange::claim`]: super::Interchange::claim
pub struct Requester<'i, Rq, Rp> {
    /// The channel.
    channel: &'i Channel<Rq, Rp>,
    /// Run after publishing a request and after an early cancel.
    callback: Callback<'i>,
}

/// The responder end of a [`Channel`]: takes requests, sends responses, acknowledges
/// cancels.
///
/// Created by [`Channel::split`], [`Channel::responder`] or [`Interchange::claim`]; dropping
/// it releases the end (and resets the channel if the requester is released too).
///
/// [`Interchange::claim`]: super::Interchange::claim
pub struct Responder<'i, Rq, Rp> {
    /// The channel.
    channel: &'i Channel<Rq, Rp>,
    /// Run after publishing a response.
    callback: Callback<'i>,
}

impl<'i, Rq, Rp> Requester<'i, Rq, Rp> {
    /// Wraps a claimed requester end.
    pub(super) fn new(channel: &'i Channel<Rq, Rp>) -> Self {
        Self {
            channel,
            callback: Callback::none(),
        }
    }

    /// The channel this end belongs to.
    pub fn channel(&self) -> &'i Channel<Rq, Rp> {
        self.channel
    }

    /// The callback run after a request is published ([`request`](Self::request),
    /// [`send_request`](Self::send_request)) and after an early [`cancel`](Self::cancel):
    /// use it to notify the responder (pend its interrupt, wake its task).
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::{Callback, Channel, Waiter};
    ///
    /// static RESPONDER_WAITS: Waiter = Waiter::new();
    /// let channel: Channel<u8, u8> = Channel::new();
    /// let (mut rq, _rp) = channel.split().unwrap();
    /// *rq.callback_mut() = Callback::new(&RESPONDER_WAITS);
    /// ```
    pub fn callback_mut(&mut self) -> &mut Callback<'i> {
        &mut self.callback
    }

    /// The channel's current state.
    pub fn state(&self) -> State {
        self.channel.state()
    }

    /// Sends `request`: Idle → Requested, then runs the callback.
    ///
    /// # Errors
    ///
    /// In any state but Idle, gives `request` back with the state that refused it.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::{Channel, State};
    ///
    /// let channel: Channel<u8, u8> = Channel::new();
    /// let (mut rq, _rp) = channel.split().unwrap();
    /// rq.request(1).unwrap();
    /// let refused = rq.request(2).unwrap_err();
    /// assert_eq!((refused.state(), refused.into_inner()), (State::Requested, 2));
    /// ```
    pub fn request(&mut self, request: Rq) -> Result<(), SendError<Rq>> {
        let channel = self.channel;
        let bits = channel.bits();
        if bits != IDLE {
            return Err(SendError::new(request, State::from_word(bits)));
        }
        // SAFETY: Idle: the requester owns the empty buffer, and only the requester (this
        // handle, borrowed mutably) moves the state out of Idle.
        unsafe { channel.write_request(request) };
        channel.advance_owned(IDLE, REQUESTED | HOLDS_REQUEST);
        self.callback.call();
        Ok(())
    }

    /// Runs `f` on the request being built in the buffer (Idle → BuildingRequest, starting
    /// from `Rq::default()`; BuildingRequest stays, keeping what was built so far). Send it
    /// with [`send_request`](Self::send_request), or abandon it with
    /// [`cancel`](Self::cancel).
    ///
    /// # Errors
    ///
    /// In any state but Idle and BuildingRequest, with the state.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::Channel;
    ///
    /// let channel: Channel<[u8; 4], ()> = Channel::new();
    /// let (mut rq, mut rp) = channel.split().unwrap();
    /// rq.with_request_mut(|r| r[0] = 1).unwrap();
    /// rq.with_request_mut(|r| r[1] = 2).unwrap();
    /// rq.send_request().unwrap();
    /// assert_eq!(rp.take_request(), Some([1, 2, 0, 0]));
    /// ```
    pub fn with_request_mut<R>(&mut self, f: impl FnOnce(&mut Rq) -> R) -> Result<R, Error>
    where
        Rq: Default,
    {
        let mut request = self.request_mut()?;
        Ok(f(&mut request))
    }

    /// Like [`with_request_mut`](Self::with_request_mut), returning a guard that borrows
    /// this end.
    ///
    /// # Errors
    ///
    /// In any state but Idle and BuildingRequest, with the state.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::{Channel, State};
    ///
    /// let channel: Channel<[u8; 8], u8> = Channel::new();
    /// let (mut rq, _rp) = channel.split().unwrap();
    /// rq.request_mut().unwrap()[..2].copy_from_slice(b"hi");
    /// assert_eq!(rq.state(), State::BuildingRequest);
    /// assert_eq!(&rq.request_mut().unwrap()[..3], b"hi\0");
    /// ```
    pub fn request_mut(&mut self) -> Result<RefMut<'_, Rq>, Error>
    where
        Rq: Default,
    {
        let channel = self.channel;
        match channel.state() {
            State::Idle => {
                let fresh = Rq::default();
                // SAFETY: Idle: the requester owns the empty buffer, and only the requester
                // (this handle, borrowed mutably) moves the state out of Idle.
                unsafe { channel.write_request(fresh) };
                channel.advance_owned(IDLE, BUILDING_REQUEST | HOLDS_REQUEST);
            }
            State::BuildingRequest => {}
            state => return Err(Error::new(state)),
        }
        // SAFETY: BuildingRequest: the requester owns the buffer, which holds a request, and
        // only the requester moves the state on; the guard borrows this handle mutably.
        Ok(unsafe { channel.request_mut() })
    }

    /// Sends the request built in place: BuildingRequest → Requested, then runs the
    /// callback.
    ///
    /// # Errors
    ///
    /// In any state but BuildingRequest, with the state.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::{Channel, State};
    ///
    /// let channel: Channel<u32, u8> = Channel::new();
    /// let (mut rq, mut rp) = channel.split().unwrap();
    /// assert_eq!(rq.send_request().unwrap_err().state(), State::Idle, "nothing built");
    /// *rq.request_mut().unwrap() = 5;
    /// rq.send_request().unwrap();
    /// assert_eq!(rp.take_request(), Some(5));
    /// ```
    pub fn send_request(&mut self) -> Result<(), Error> {
        let building = BUILDING_REQUEST | HOLDS_REQUEST;
        self.channel
            .transition_from(building, REQUESTED | HOLDS_REQUEST)
            .map_err(Error::new)?;
        self.callback.call();
        Ok(())
    }

    /// Cancels the current request, deciding in one atomic step:
    ///
    /// - BuildingRequest → Idle: the request being built is abandoned and returned,
    ///   `Ok(Some(request))`;
    /// - Requested → Idle: the responder had not taken it; it is recalled and returned,
    ///   `Ok(Some(request))`, and the callback runs (early cancel);
    /// - BuildingResponse → Canceled: the responder has it; it is signalled, `Ok(None)`, and
    ///   must [`acknowledge_cancel`](Responder::acknowledge_cancel) before the channel is
    ///   usable again (late cancel).
    ///
    /// # Errors
    ///
    /// With the state when there is nothing to cancel: Idle (no request), Responded (too
    /// late: the response is there to take) or Canceled (already canceled). Never while a
    /// request is being built, pending or being answered.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::{Channel, State};
    ///
    /// let channel: Channel<u8, u8> = Channel::new();
    /// let (mut rq, mut rp) = channel.split().unwrap();
    /// rq.request(1).unwrap();
    /// assert_eq!(rq.cancel(), Ok(Some(1)));
    /// rq.request(2).unwrap();
    /// rp.take_request().unwrap();
    /// assert_eq!(rq.cancel(), Ok(None));
    /// assert!(rp.is_canceled());
    /// rp.acknowledge_cancel().unwrap();
    /// assert_eq!(rq.cancel().unwrap_err().state(), State::Idle);
    /// ```
    pub fn cancel(&mut self) -> Result<Option<Rq>, Error> {
        let channel = self.channel;
        let old = channel
            .transition(|bits| match bits & STATE_MASK {
                BUILDING_REQUEST | REQUESTED => Some(IDLE),
                BUILDING_RESPONSE => Some(CANCELED | (bits & PAYLOAD_MASK)),
                _ => None,
            })
            .map_err(Error::new)?;
        match old & STATE_MASK {
            BUILDING_RESPONSE => Ok(None),
            state => {
                // SAFETY: we moved BuildingRequest or Requested (both holding a request) to
                // Idle: the requester owns the buffer, the word says it is empty, and only
                // this handle, borrowed mutably, acts in Idle.
                let request = unsafe { channel.read_request() };
                if state == REQUESTED {
                    self.callback.call();
                }
                Ok(Some(request))
            }
        }
    }

    /// Borrows the response (Responded, which stays). Can be repeated.
    ///
    /// # Errors
    ///
    /// In any state but Responded, with the state.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::Channel;
    ///
    /// let channel: Channel<u8, [u8; 32]> = Channel::new();
    /// let (mut rq, mut rp) = channel.split().unwrap();
    /// rq.request(1).unwrap();
    /// rp.take_request().unwrap();
    /// rp.respond([9; 32]).unwrap();
    /// assert_eq!(rq.response().unwrap()[0], 9); // read in place, no copy
    /// assert_eq!(rq.with_response(|r| r[31]).unwrap(), 9);
    /// assert!(rq.take_response().is_some());
    /// assert!(rq.response().is_err());
    /// ```
    pub fn response(&self) -> Result<Ref<'_, Rp>, Error> {
        let channel = self.channel;
        match channel.state() {
            // SAFETY: Responded: the requester owns the buffer, which holds a response (the
            // Acquire load in `state` synchronised with the responder's Release), and only
            // the requester moves the state on, which needs `&mut self`, borrowed by the
            // guard.
            State::Responded => Ok(unsafe { channel.response_ref() }),
            state => Err(Error::new(state)),
        }
    }

    /// Runs `f` on the response (Responded, which stays). Can be repeated.
    ///
    /// # Errors
    ///
    /// In any state but Responded, with the state.
    pub fn with_response<R>(&self, f: impl FnOnce(&Rp) -> R) -> Result<R, Error> {
        Ok(f(&*self.response()?))
    }

    /// Moves the response out: Responded → Idle. `None` in any other state.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::{Channel, State};
    ///
    /// let channel: Channel<u8, u8> = Channel::new();
    /// let (mut rq, mut rp) = channel.split().unwrap();
    /// rq.request(1).unwrap();
    /// assert_eq!(rq.take_response(), None, "not answered yet");
    /// rp.take_request().unwrap();
    /// rp.respond(2).unwrap();
    /// assert_eq!(rq.take_response(), Some(2));
    /// assert_eq!(rq.state(), State::Idle);
    /// ```
    pub fn take_response(&mut self) -> Option<Rp> {
        let channel = self.channel;
        if channel.bits() != RESPONDED | HOLDS_RESPONSE {
            return None;
        }
        // SAFETY: Responded: the requester owns the buffer, which holds the response (the
        // Acquire in `bits` synchronised with the responder's Release), and only the
        // requester, this handle borrowed mutably, leaves Responded.
        let response = unsafe { channel.read_response() };
        channel.advance_owned(RESPONDED | HOLDS_RESPONSE, IDLE);
        Some(response)
    }
}

impl<'i, Rq, Rp> Responder<'i, Rq, Rp> {
    /// Wraps a claimed responder end.
    pub(super) fn new(channel: &'i Channel<Rq, Rp>) -> Self {
        Self {
            channel,
            callback: Callback::none(),
        }
    }

    /// The channel this end belongs to.
    pub fn channel(&self) -> &'i Channel<Rq, Rp> {
        self.channel
    }

    /// The callback run after a response is published ([`respond`](Self::respond),
    /// [`send_response`](Self::send_response)): use it to notify the requester.
    pub fn callback_mut(&mut self) -> &mut Callback<'i> {
        &mut self.callback
    }

    /// The channel's current state.
    pub fn state(&self) -> State {
        self.channel.state()
    }

    /// Moves the request out: Requested → BuildingResponse. `None` in any other state.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::{Channel, State};
    ///
    /// let channel: Channel<u8, u8> = Channel::new();
    /// let (mut rq, mut rp) = channel.split().unwrap();
    /// assert_eq!(rp.take_request(), None);
    /// rq.request(1).unwrap();
    /// assert_eq!(rp.take_request(), Some(1));
    /// assert_eq!(rp.state(), State::BuildingResponse);
    /// ```
    pub fn take_request(&mut self) -> Option<Rq> {
        let channel = self.channel;
        channel
            .transition_from(REQUESTED | HOLDS_REQUEST, BUILDING_RESPONSE)
            .ok()?;
        // SAFETY: we moved Requested to BuildingResponse: the responder owns the buffer,
        // which holds the request, and the word says it is empty (a late cancel keeps the
        // payload bits and the responder's ownership).
        Some(unsafe { channel.read_request() })
    }

    /// Borrows the request without moving it: Requested → BuildingResponse, or stays in
    /// BuildingResponse while the request is still in the buffer. Can be repeated.
    ///
    /// The guard borrows this end, so nothing that reuses the buffer
    /// ([`acknowledge_cancel`](Self::acknowledge_cancel), [`respond`](Self::respond), ...)
    /// can be called while it lives:
    ///
    /// ```compile_fail,E0502
    /// use courier_core::interchange::Channel;
    ///
    /// let channel: Channel<u64, u64> = Channel::new();
    /// let (mut rq, mut rp) = channel.split().unwrap();
    /// rq.request(1).unwrap();
    /// let borrowed = rp.request().unwrap();
    /// rq.cancel().unwrap();
    /// rp.acknowledge_cancel().unwrap(); // error: `rp` is borrowed by `borrowed`
    /// rq.request(2).unwrap();
    /// assert_eq!(*borrowed, 1);
    /// ```
    ///
    /// # Errors
    ///
    /// With the state, in any state but Requested and BuildingResponse, and in
    /// BuildingResponse when the request was taken or overwritten by a response.
    pub fn request(&self) -> Result<Ref<'_, Rq>, Error> {
        let channel = self.channel;
        channel
            .transition(|bits| match bits {
                b if b == REQUESTED | HOLDS_REQUEST => Some(BUILDING_RESPONSE | HOLDS_REQUEST),
                b if b == BUILDING_RESPONSE | HOLDS_REQUEST => Some(b),
                _ => None,
            })
            .map_err(Error::new)?;
        // SAFETY: BuildingResponse with a request in the buffer: the responder owns it (a
        // late cancel keeps that). Whatever drops or overwrites the request (`take_request`,
        // `respond`, `with_response_mut`, `acknowledge_cancel`, dropping this handle) needs
        // `&mut self` or `self`, which the guard's borrow of `&self` rules out.
        Ok(unsafe { channel.request_ref() })
    }

    /// Runs `f` on the request without moving it; see [`request`](Self::request).
    ///
    /// The closure cannot reach this end mutably, so it cannot acknowledge a cancel:
    ///
    /// ```compile_fail,E0502
    /// use courier_core::interchange::Channel;
    ///
    /// let channel: Channel<String, u64> = Channel::new();
    /// let (mut rq, mut rp) = channel.split().unwrap();
    /// rq.request("hello".into()).unwrap();
    /// rp.with_request(|r| {
    ///     rq.cancel().unwrap();
    ///     rp.acknowledge_cancel().unwrap(); // error: `rp` is already borrowed
    ///     rq.request("world".into()).unwrap();
    ///     r.len()
    /// })
    /// .unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`request`](Self::request).
    pub fn with_request<R>(&self, f: impl FnOnce(&Rq) -> R) -> Result<R, Error> {
        Ok(f(&*self.request()?))
    }

    /// Whether the requester canceled the request it is working on (late cancel). The
    /// responder should stop and [`acknowledge_cancel`](Self::acknowledge_cancel).
    pub fn is_canceled(&self) -> bool {
        self.channel.state() == State::Canceled
    }

    /// Acknowledges a late cancel: drops whatever the buffer holds, Canceled → Idle.
    ///
    /// Takes `&mut self`, so no borrow of the request can outlive it (the seed took `&self`,
    /// which let safe code read a request the requester had already overwritten).
    ///
    /// # Errors
    ///
    /// In any state but Canceled, with the state.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::{Channel, State};
    ///
    /// let channel: Channel<u8, u8> = Channel::new();
    /// let (mut rq, mut rp) = channel.split().unwrap();
    /// rq.request(1).unwrap();
    /// assert_eq!(*rp.request().unwrap(), 1);
    /// assert_eq!(rq.cancel(), Ok(None)); // late: the responder has seen it
    /// assert!(rp.is_canceled());
    /// assert_eq!(rq.request(2).unwrap_err().state(), State::Canceled);
    /// rp.acknowledge_cancel().unwrap();
    /// rq.request(2).unwrap();
    /// ```
    pub fn acknowledge_cancel(&mut self) -> Result<(), Error> {
        let channel = self.channel;
        let state = channel.state();
        if state != State::Canceled {
            return Err(Error::new(state));
        }
        // Canceled: the responder owns the buffer and only the responder leaves Canceled.
        let payload = channel.set_payload(0);
        // SAFETY: Canceled: the responder owns the buffer, which held `payload`, and the
        // word no longer says so.
        unsafe { channel.drop_payload(payload) };
        // AcqRel in `transition`: the Release hands the emptied buffer to the requester.
        let idle = channel.transition_from(CANCELED, IDLE);
        debug_assert!(idle.is_ok(), "only the responder leaves Canceled");
        Ok(())
    }

    /// Sends `response`: BuildingResponse → Responded, then runs the callback. A request
    /// still in the buffer (peeked at) is dropped first.
    ///
    /// # Errors
    ///
    /// In any state but BuildingResponse, or if the requester cancels meanwhile, gives
    /// `response` back with the state that refused it.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::{Channel, State};
    ///
    /// let channel: Channel<u8, u8> = Channel::new();
    /// let (mut rq, mut rp) = channel.split().unwrap();
    /// rq.request(1).unwrap();
    /// rp.take_request().unwrap();
    /// rq.cancel().unwrap();
    /// let refused = rp.respond(2).unwrap_err();
    /// assert_eq!((refused.state(), refused.into_inner()), (State::Canceled, 2));
    /// ```
    pub fn respond(&mut self, response: Rp) -> Result<(), SendError<Rp>> {
        let channel = self.channel;
        let bits = channel.bits();
        if bits & STATE_MASK != BUILDING_RESPONSE {
            return Err(SendError::new(response, State::from_word(bits)));
        }
        // BuildingResponse (or Canceled, if the requester cancels now): the responder owns
        // the buffer either way, and only the responder changes the payload bits, so they
        // are still `bits & PAYLOAD_MASK`: empty after `take_request`, the usual case.
        if bits & PAYLOAD_MASK != 0 {
            let old = channel.set_payload(0);
            // SAFETY: the responder owns the buffer, which held `old`; the word says empty.
            unsafe { channel.drop_payload(old) };
        }
        // SAFETY: the responder owns the empty buffer.
        unsafe { channel.write_response(response) };
        match channel.transition_from(BUILDING_RESPONSE, RESPONDED | HOLDS_RESPONSE) {
            Ok(()) => {
                self.callback.call();
                Ok(())
            }
            Err(state) => {
                debug_assert_eq!(state, State::Canceled);
                // SAFETY: the requester canceled before the publication: Canceled, the
                // responder still owns the buffer, which holds our response, and the word
                // says empty.
                let response = unsafe { channel.read_response() };
                Err(SendError::new(response, state))
            }
        }
    }

    /// Runs `f` on the response being built in the buffer: from Requested (the request is
    /// dropped unread) or BuildingResponse, starting from `Rp::default()` unless a response
    /// is already being built. Send it with [`send_response`](Self::send_response).
    ///
    /// # Errors
    ///
    /// In any state but Requested and BuildingResponse, with the state.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::Channel;
    ///
    /// let channel: Channel<u8, [u8; 3]> = Channel::new();
    /// let (mut rq, mut rp) = channel.split().unwrap();
    /// rq.request(7).unwrap();
    /// assert_eq!(*rp.request().unwrap(), 7);
    /// rp.with_response_mut(|r| r[2] = 9).unwrap();
    /// rp.send_response().unwrap();
    /// assert_eq!(rq.take_response(), Some([0, 0, 9]));
    /// ```
    pub fn with_response_mut<R>(&mut self, f: impl FnOnce(&mut Rp) -> R) -> Result<R, Error>
    where
        Rp: Default,
    {
        let mut response = self.response_mut()?;
        Ok(f(&mut response))
    }

    /// Like [`with_response_mut`](Self::with_response_mut), returning a guard that borrows
    /// this end.
    ///
    /// # Errors
    ///
    /// In any state but Requested and BuildingResponse, with the state.
    pub fn response_mut(&mut self) -> Result<RefMut<'_, Rp>, Error>
    where
        Rp: Default,
    {
        let channel = self.channel;
        let old = channel
            .transition(|bits| match bits & STATE_MASK {
                REQUESTED => Some(BUILDING_RESPONSE | (bits & PAYLOAD_MASK)),
                BUILDING_RESPONSE => Some(bits),
                _ => None,
            })
            .map_err(Error::new)?;
        if old & PAYLOAD_MASK != HOLDS_RESPONSE {
            let fresh = Rp::default();
            let stale = channel.set_payload(0);
            // SAFETY: BuildingResponse (or Canceled): the responder owns the buffer, which
            // held `stale`, and the word says empty.
            unsafe { channel.drop_payload(stale) };
            // SAFETY: as above, the buffer is empty.
            unsafe { channel.write_response(fresh) };
            channel.set_payload(HOLDS_RESPONSE);
        }
        // SAFETY: BuildingResponse or Canceled: the responder owns the buffer, which holds a
        // response, and only `&mut self` methods replace it; the guard borrows this handle.
        Ok(unsafe { channel.response_mut() })
    }

    /// Sends the response built in place: BuildingResponse → Responded, then runs the
    /// callback.
    ///
    /// # Errors
    ///
    /// With the state: in any state but BuildingResponse (Canceled after a late cancel),
    /// and in BuildingResponse when no response was built.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::interchange::{Channel, State};
    ///
    /// let channel: Channel<u8, u16> = Channel::new();
    /// let (mut rq, mut rp) = channel.split().unwrap();
    /// rq.request(1).unwrap();
    /// rp.take_request().unwrap();
    /// assert_eq!(rp.send_response().unwrap_err().state(), State::BuildingResponse);
    /// *rp.response_mut().unwrap() = 300;
    /// rp.send_response().unwrap();
    /// assert_eq!(rq.take_response(), Some(300));
    /// ```
    pub fn send_response(&mut self) -> Result<(), Error> {
        let built = BUILDING_RESPONSE | HOLDS_RESPONSE;
        self.channel
            .transition_from(built, RESPONDED | HOLDS_RESPONSE)
            .map_err(Error::new)?;
        self.callback.call();
        Ok(())
    }
}

impl<Rq, Rp> Drop for Requester<'_, Rq, Rp> {
    fn drop(&mut self) {
        self.channel.release(REQUESTER);
    }
}

impl<Rq, Rp> Drop for Responder<'_, Rq, Rp> {
    fn drop(&mut self) {
        self.channel.release(RESPONDER);
    }
}

impl<Rq, Rp> fmt::Debug for Requester<'_, Rq, Rp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requester")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl<Rq, Rp> fmt::Debug for Responder<'_, Rq, Rp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}
