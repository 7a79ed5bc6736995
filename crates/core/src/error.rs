//! The error model shared by every request/response transport.
//!
//! [`Error`] is what a caller or a server learns about a round trip that did not end in a
//! reply: the other side is gone, it did not answer, the application refused, or time ran out.
//! It is the same type for `courier::local` and the process transports, so code that handles
//! it does not care where the peer lives.

use core::fmt;

/// Why a request/response round trip, or a wait for a request, did not produce a value.
///
/// The first five variants keep the meaning they have in `ump`, so code ported from it keeps
/// its `match` arms; [`Error::Timeout`] is new and is only returned by the `*_timeout` forms
/// of blocking calls.
///
/// # Examples
///
/// ```
/// use courier_core::error::Error;
///
/// let e: Error<&str> = Error::App("bad input");
/// assert_eq!(e.to_string(), "application error: \"bad input\"");
/// assert_eq!(e.into_apperr(), Some("bad input"));
/// assert_eq!(Error::<()>::NoReply.to_string(), "server dropped the request without replying");
/// ```
///
/// # Non-exhaustive
///
/// The enum is `#[non_exhaustive]`: a transport added later (the network one) may need a
/// variant of its own, and a `match` outside this crate keeps a `_` arm for it. The variants
/// marked "process transports only" never come from `courier::local`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error<E> {
    /// The server is gone: there was none when the request was sent, or the last server handle
    /// was dropped while the request still sat in the queue (requests a server had already
    /// taken still get their reply).
    ServerDisappeared,
    /// The server took the request and then dropped its reply context without replying or
    /// failing.
    NoReply,
    /// Returned to a server that replies to a requester that no longer waits: it dropped or
    /// canceled its wait (see `ReplyContext::is_canceled`). The reply was discarded.
    OriginDisappeared,
    /// Returned to a server waiting for requests when the queue is empty and no client handle
    /// is left, so no request can ever arrive.
    ClientsDisappeared,
    /// The server answered with an application error through `ReplyContext::fail`.
    App(E),
    /// A `*_timeout` call ran out of time. For a request, the request was withdrawn if the
    /// server had not taken it yet, or the server was told it was canceled.
    Timeout,
    /// Process transports only: the message does not fit the service's call slot (nothing was
    /// sent), or a lent buffer is out of the size a service accepts.
    TooLarge,
    /// Process transports only: the other side broke the protocol. Bytes that arrived failed
    /// validation (a layout signature of another type, a bad length, an invalid value), or
    /// the peer used a lent buffer in a way the protocol forbids. Nothing invalid was used.
    Protocol,
    /// Process transports only: the server refused the call because a limit was reached: a
    /// cap of its configuration (lent buffers per client or in total, their bytes), or it
    /// ran out of descriptors or memory. Nothing was served; the connection stays usable,
    /// and the call may succeed once resources are freed.
    LimitReached,
}

impl<E> Error<E> {
    /// The same error with its application error, if any, replaced by what `f` makes of it:
    /// another application error, or another variant (a typed client turns an error it
    /// cannot have been sent into [`Error::Protocol`]). The other variants stay as they are.
    ///
    /// ```
    /// use courier_core::error::Error;
    ///
    /// let e: Error<u8> = Error::App(7);
    /// assert_eq!(e.map_app(|n| Error::App(u32::from(n) * 2)), Error::App(14));
    /// assert_eq!(Error::<u8>::Timeout.map_app(|_| Error::<u32>::Protocol), Error::Timeout);
    /// ```
    pub fn map_app<E2>(self, f: impl FnOnce(E) -> Error<E2>) -> Error<E2> {
        match self {
            Error::App(e) => f(e),
            Error::ServerDisappeared => Error::ServerDisappeared,
            Error::NoReply => Error::NoReply,
            Error::OriginDisappeared => Error::OriginDisappeared,
            Error::ClientsDisappeared => Error::ClientsDisappeared,
            Error::Timeout => Error::Timeout,
            Error::TooLarge => Error::TooLarge,
            Error::Protocol => Error::Protocol,
            Error::LimitReached => Error::LimitReached,
        }
    }

    /// Returns the application error if this is [`Error::App`], and `None` otherwise.
    pub fn into_apperr(self) -> Option<E> {
        match self {
            Error::App(e) => Some(e),
            _ => None,
        }
    }

    /// Returns the application error.
    ///
    /// # Panics
    ///
    /// Panics if this is not [`Error::App`].
    #[track_caller]
    pub fn unwrap_apperr(self) -> E {
        match self {
            Error::App(e) => e,
            other => panic!("not an application error: {}", other.describe()),
        }
    }

    /// A static description of every variant but `App`.
    fn describe(&self) -> &'static str {
        match self {
            Error::ServerDisappeared => "server disappeared",
            Error::NoReply => "server dropped the request without replying",
            Error::OriginDisappeared => "requester disappeared",
            Error::ClientsDisappeared => "all clients disappeared",
            Error::App(_) => "application error",
            Error::Timeout => "timed out",
            Error::TooLarge => "message too large for the service's call slot",
            Error::Protocol => "the peer broke the protocol (invalid message)",
            Error::LimitReached => "the server refused the call: a resource limit was reached",
        }
    }
}

/// Shows the application error with its `Debug` form, so that `Error<()>` and other plain
/// error types display too.
impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::App(e) => write!(f, "application error: {e:?}"),
            other => f.write_str(other.describe()),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}

/// Why a request could not be put into a server's queue; the request is handed back.
///
/// # Examples
///
/// ```
/// use courier_core::error::SendError;
///
/// let e = SendError::Full(7_u32);
/// assert!(e.is_full());
/// assert_eq!(e.into_inner(), 7);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SendError<T> {
    /// The queue is bounded and full (only from the `try_*` forms). On a process transport:
    /// every call slot of the connection is in flight.
    Full(T),
    /// The queue stayed full until the timeout ran out (only from the `*_timeout` forms).
    Timeout(T),
    /// No server is left to take the request.
    ServerDisappeared(T),
    /// Process transports only: the request does not fit the service's call slot; nothing
    /// was sent.
    TooLarge(T),
}

impl<T> SendError<T> {
    /// The request that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Full(t)
            | SendError::Timeout(t)
            | SendError::ServerDisappeared(t)
            | SendError::TooLarge(t) => t,
        }
    }

    /// `true` for [`SendError::Full`].
    pub fn is_full(&self) -> bool {
        matches!(self, SendError::Full(_))
    }

    /// `true` for [`SendError::ServerDisappeared`].
    pub fn is_disconnected(&self) -> bool {
        matches!(self, SendError::ServerDisappeared(_))
    }

    fn describe(&self) -> &'static str {
        match self {
            SendError::Full(_) => "queue is full",
            SendError::Timeout(_) => "timed out waiting for room in the queue",
            SendError::ServerDisappeared(_) => "server disappeared",
            SendError::TooLarge(_) => "message too large for the service's call slot",
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The request is not printed: it need not be `Debug`, as in crossbeam's `SendError`.
        let name = match self {
            SendError::Full(_) => "Full(..)",
            SendError::Timeout(_) => "Timeout(..)",
            SendError::ServerDisappeared(_) => "ServerDisappeared(..)",
            SendError::TooLarge(_) => "TooLarge(..)",
        };
        f.write_str(name)
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

impl<T> core::error::Error for SendError<T> {}
