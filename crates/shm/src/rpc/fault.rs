//! [`Fault`]: why a call failed on the transport's side, before any application error.

use crate::rpc::Error;
use crate::substrate::deadline::Expired;

/// What went wrong in the transport: [`Error`] without its `App` variant. The transport's
/// internals return it, so no `App(())` exists to be mapped away; it becomes the caller's
/// `Error<E>` through `From` (`?` converts it) at the public API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// [`Error::ServerDisappeared`].
    ServerDisappeared,
    /// [`Error::NoReply`].
    NoReply,
    /// [`Error::OriginDisappeared`].
    OriginDisappeared,
    /// [`Error::Timeout`].
    Timeout,
    /// [`Error::TooLarge`].
    TooLarge,
    /// [`Error::Protocol`].
    Protocol,
    /// [`Error::LimitReached`].
    LimitReached,
}

impl<E> From<Fault> for Error<E> {
    fn from(f: Fault) -> Self {
        match f {
            Fault::ServerDisappeared => Error::ServerDisappeared,
            Fault::NoReply => Error::NoReply,
            Fault::OriginDisappeared => Error::OriginDisappeared,
            Fault::Timeout => Error::Timeout,
            Fault::TooLarge => Error::TooLarge,
            Fault::Protocol => Error::Protocol,
            Fault::LimitReached => Error::LimitReached,
        }
    }
}

impl From<Expired> for Fault {
    fn from(_: Expired) -> Self {
        Fault::Timeout
    }
}
