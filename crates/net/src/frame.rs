//! The bytes of a call on the network: a [`Request`] frame (client → bridge, the payload of a
//! zenoh query) and an [`Answer`] frame (bridge → client, the payload of its reply, or of a
//! push on a subscription's key).
//!
//! Every integer is little-endian. A frame is a fixed header, then its body, then its lent
//! bytes; the lengths in the header must add up to the frame's length exactly. A frame that
//! is short, long, of another version or of an unknown kind or status is refused with a
//! [`FrameError`]; decoding never panics and never allocates (the body and the lent bytes
//! are borrowed from the frame).
//!
//! ```text
//! request: "CNq1" kind:u8 0:u8 0:u16 op:u32 budget_ms:u32 args:[u64;4] signature:u64
//!          body_len:u32 lent_len:u32 | body | lent                        (64-byte header)
//! answer:  "CNa1" status:u8 0:u8 0:u16 words:[u64;2] signature:u64
//!          body_len:u32 lent_len:u32 | body | lent                        (40-byte header)
//! ```

/// What a request asks the bridge to do: the courier::shm verb it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Is the service there? Answered `Ok` with the server's pid in `words[0]`.
    Hello = 0,
    /// `req`: the body is the request; the answer's body is the reply or the error.
    Call = 1,
    /// `send`: answered once the request is queued at the service.
    Send = 2,
    /// `lend`: the lent bytes travel with the request.
    Lend = 3,
    /// `lend_mut`: the lent bytes travel both ways (the answer's `lent`).
    LendMut = 4,
    /// `scalar`: `op` and `args`, no body; answered once queued.
    Scalar = 5,
    /// `blocking_scalar`: `op` and `args`; the answer's `words`.
    BlockingScalar = 6,
    /// `subscribe`: the body is the request, `lent` the key expression the pushes go to.
    Subscribe = 7,
    /// The end of a subscription: `lent` is its key expression.
    Unsubscribe = 8,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0 => Kind::Hello,
            1 => Kind::Call,
            2 => Kind::Send,
            3 => Kind::Lend,
            4 => Kind::LendMut,
            5 => Kind::Scalar,
            6 => Kind::BlockingScalar,
            7 => Kind::Subscribe,
            8 => Kind::Unsubscribe,
            _ => return None,
        })
    }
}

/// How a request ended: the outcome a courier [`Error`](courier_core::error::Error) is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// The reply (or, for a push, the next value).
    Ok = 0,
    /// The application error, in the body.
    App = 1,
    /// The server dropped the request unanswered; for a push, the stream ended.
    NoReply = 2,
    /// The service is gone (or was never there).
    ServerGone = 3,
    /// The deadline passed at the bridge.
    Timeout = 4,
    /// Too large for the service (or the bridge).
    TooLarge = 5,
    /// Something broke the protocol: the frame, or the service's answer.
    Protocol = 6,
    /// The service (or the bridge) refused the call for a limit.
    LimitReached = 7,
}

impl Status {
    fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::App,
            2 => Status::NoReply,
            3 => Status::ServerGone,
            4 => Status::Timeout,
            5 => Status::TooLarge,
            6 => Status::Protocol,
            7 => Status::LimitReached,
            _ => return None,
        })
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than its header.
    #[error("frame shorter than its header")]
    Short,
    /// Not a frame of this kind and version.
    #[error("not a courier-net frame of this version")]
    BadMagic,
    /// A kind or status byte that means nothing.
    #[error("unknown kind or status")]
    Unknown,
    /// The lengths in the header do not add up to the frame's.
    #[error("lengths do not match the frame")]
    BadLength,
}

const REQ_MAGIC: [u8; 4] = *b"CNq1";
const ANS_MAGIC: [u8; 4] = *b"CNa1";
/// The request header's length.
pub const REQUEST_HEADER: usize = 64;
/// The answer header's length.
pub const ANSWER_HEADER: usize = 40;

/// A budget that means "no deadline".
pub const NO_BUDGET: u32 = u32::MAX;

/// A request as it travels: see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The verb.
    pub kind: Kind,
    /// A scalar's opcode.
    pub op: u32,
    /// How long the caller still waits, in milliseconds ([`NO_BUDGET`]: no limit). Relative,
    /// so that the hosts' clocks need not agree; the bridge gives up when it runs out.
    pub budget_ms: u32,
    /// A scalar's words.
    pub args: [u64; 4],
    /// The signature of the request's type.
    pub signature: u64,
    /// The request's bytes.
    pub body: &'a [u8],
    /// The lent bytes (lends), or the push key (subscriptions).
    pub lent: &'a [u8],
}

/// An answer as it travels: see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer<'a> {
    /// How the call ended.
    pub status: Status,
    /// A blocking scalar's words; `Hello`'s server pid.
    pub words: [u64; 2],
    /// The signature of the body's type.
    pub signature: u64,
    /// The reply's or the error's bytes.
    pub body: &'a [u8],
    /// A mutable lend's bytes as the server left them.
    pub lent: &'a [u8],
}

impl<'a> Answer<'a> {
    /// An answer with only a status.
    pub fn status(status: Status) -> Answer<'static> {
        Answer {
            status,
            words: [0; 2],
            signature: 0,
            body: &[],
            lent: &[],
        }
    }
}

/// Reads the little-endian integer at `at` (the caller checked the length).
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Splits what follows a header into body and lent bytes, checking the lengths.
fn tail(b: &[u8], header: usize, lens_at: usize) -> Result<(&[u8], &[u8]), FrameError> {
    let body = u32_at(b, lens_at) as usize;
    let lent = u32_at(b, lens_at + 4) as usize;
    let rest = &b[header..];
    if body.checked_add(lent) != Some(rest.len()) {
        return Err(FrameError::BadLength);
    }
    Ok(rest.split_at(body))
}

fn put_tail(out: &mut Vec<u8>, body: &[u8], lent: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&(lent.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(lent);
}

impl<'a> Request<'a> {
    /// Reads a request frame.
    ///
    /// # Errors
    ///
    /// See [`FrameError`].
    pub fn decode(b: &'a [u8]) -> Result<Request<'a>, FrameError> {
        if b.len() < REQUEST_HEADER {
            return Err(FrameError::Short);
        }
        if b[..4] != REQ_MAGIC || b[5] != 0 || b[6..8] != [0, 0] {
            return Err(FrameError::BadMagic);
        }
        let kind = Kind::from_u8(b[4]).ok_or(FrameError::Unknown)?;
        let (body, lent) = tail(b, REQUEST_HEADER, 56)?;
        Ok(Request {
            kind,
            op: u32_at(b, 8),
            budget_ms: u32_at(b, 12),
            args: core::array::from_fn(|i| u64_at(b, 16 + 8 * i)),
            signature: u64_at(b, 48),
            body,
            lent,
        })
    }

    /// The frame's bytes.
    ///
    /// # Panics
    ///
    /// If the body or the lent bytes are 4 GiB or more (callers bound them far below).
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.body.len() <= u32::MAX as usize && self.lent.len() <= u32::MAX as usize);
        let mut out = Vec::with_capacity(REQUEST_HEADER + self.body.len() + self.lent.len());
        out.extend_from_slice(&REQ_MAGIC);
        out.extend_from_slice(&[self.kind as u8, 0, 0, 0]);
        out.extend_from_slice(&self.op.to_le_bytes());
        out.extend_from_slice(&self.budget_ms.to_le_bytes());
        for a in self.args {
            out.extend_from_slice(&a.to_le_bytes());
        }
        out.extend_from_slice(&self.signature.to_le_bytes());
        put_tail(&mut out, self.body, self.lent);
        out
    }
}

impl<'a> Answer<'a> {
    /// Reads an answer frame.
    ///
    /// # Errors
    ///
    /// See [`FrameError`].
    pub fn decode(b: &'a [u8]) -> Result<Answer<'a>, FrameError> {
        if b.len() < ANSWER_HEADER {
            return Err(FrameError::Short);
        }
        if b[..4] != ANS_MAGIC || b[5] != 0 || b[6..8] != [0, 0] {
            return Err(FrameError::BadMagic);
        }
        let status = Status::from_u8(b[4]).ok_or(FrameError::Unknown)?;
        let (body, lent) = tail(b, ANSWER_HEADER, 32)?;
        Ok(Answer {
            status,
            words: [u64_at(b, 8), u64_at(b, 16)],
            signature: u64_at(b, 24),
            body,
            lent,
        })
    }

    /// The frame's bytes.
    ///
    /// # Panics
    ///
    /// As [`Request::encode`].
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.body.len() <= u32::MAX as usize && self.lent.len() <= u32::MAX as usize);
        let mut out = Vec::with_capacity(ANSWER_HEADER + self.body.len() + self.lent.len());
        out.extend_from_slice(&ANS_MAGIC);
        out.extend_from_slice(&[self.status as u8, 0, 0, 0]);
        for w in self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.signature.to_le_bytes());
        put_tail(&mut out, self.body, self.lent);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = Kind> {
        (0u8..9).prop_map(|b| Kind::from_u8(b).expect("0..9 are kinds"))
    }

    fn status() -> impl Strategy<Value = Status> {
        (0u8..8).prop_map(|b| Status::from_u8(b).expect("0..8 are statuses"))
    }

    proptest! {
        #[test]
        fn requests_round_trip(
            kind in kind(), op: u32, budget_ms: u32, args: [u64; 4], signature: u64,
            body in proptest::collection::vec(any::<u8>(), 0..300),
            lent in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let rq = Request { kind, op, budget_ms, args, signature, body: &body, lent: &lent };
            let bytes = rq.encode();
            prop_assert_eq!(bytes.len(), REQUEST_HEADER + body.len() + lent.len());
            prop_assert_eq!(Request::decode(&bytes), Ok(rq));
            // One byte more or less is refused.
            prop_assert!(Request::decode(&bytes[..bytes.len() - 1]).is_err());
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert_eq!(Request::decode(&longer), Err(FrameError::BadLength));
            // An answer is not a request.
            prop_assert_eq!(Answer::decode(&bytes), Err(FrameError::BadMagic));
        }

        #[test]
        fn answers_round_trip(
            status in status(), words: [u64; 2], signature: u64,
            body in proptest::collection::vec(any::<u8>(), 0..300),
            lent in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let a = Answer { status, words, signature, body: &body, lent: &lent };
            let bytes = a.encode();
            prop_assert_eq!(Answer::decode(&bytes), Ok(a));
            prop_assert!(Answer::decode(&bytes[..bytes.len() - 1]).is_err());
        }

        /// Whatever a hostile peer sends, decoding returns; what it accepts re-encodes to
        /// the same bytes (nothing is ignored or guessed).
        #[test]
        fn any_bytes_decode_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(rq) = Request::decode(&bytes) {
                prop_assert_eq!(rq.encode(), bytes.clone());
            }
            if let Ok(a) = Answer::decode(&bytes) {
                prop_assert_eq!(a.encode(), bytes);
            }
        }

        /// The same, for bytes that start as a valid header: every header field mutated.
        #[test]
        fn mutated_frames_decode_or_are_refused(
            at in 0usize..REQUEST_HEADER, byte: u8,
            body in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let rq = Request { kind: Kind::Call, op: 1, budget_ms: 2, args: [3; 4], signature: 4, body: &body, lent: &[] };
            let mut bytes = rq.encode();
            bytes[at] = byte;
            if let Ok(back) = Request::decode(&bytes) {
                prop_assert_eq!(back.encode(), bytes);
            }
        }
    }

    #[test]
    fn short_and_foreign_frames_are_refused() {
        assert_eq!(Request::decode(&[]), Err(FrameError::Short));
        assert_eq!(Request::decode(&[0; 63]), Err(FrameError::Short));
        assert_eq!(Request::decode(&[0; 64]), Err(FrameError::BadMagic));
        let mut unknown = Request {
            kind: Kind::Call,
            op: 0,
            budget_ms: 0,
            args: [0; 4],
            signature: 0,
            body: &[],
            lent: &[],
        }
        .encode();
        unknown[4] = 9;
        assert_eq!(Request::decode(&unknown), Err(FrameError::Unknown));
        assert_eq!(Answer::decode(&[0; 39]), Err(FrameError::Short));
    }
}
