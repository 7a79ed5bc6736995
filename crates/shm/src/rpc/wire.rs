//! What a request, a reply, an application error or a push can be: [`Wire`].

use crate::view::{ShmView, ShmViewMut};
use courier_core::flat::IpcSafe;

/// A value that can cross the process boundary in a call slot.
///
/// Implemented for every `courier::flat` type (`T: IpcSafe`: integers, floats, `bool`,
/// `char`, arrays, `flat::String<N>`, `flat::Vec<T, N>`, `flat::Option<T>` and
/// `#[derive(Ipc)]` types), which are copied into the slot as they are in memory (padding
/// zeroed) and checked when they are read back, and, with the `serde` feature, for
/// `Postcard<T>` (any `serde` type, encoded with `postcard`). The methods are the
/// transport's; they are not meant to be called by users.
///
/// Every message carries its type's [`SIGNATURE`](Wire::SIGNATURE); a receiver refuses a
/// message whose signature differs from the type it expects
/// ([`Error::Protocol`](crate::Error::Protocol)), so client and server that disagree on a type get an error
/// instead of garbage.
pub trait Wire: Sized + Send + 'static {
    /// The layout signature of the type (for flat types, [`IpcSafe::SIGNATURE`]).
    const SIGNATURE: u64;

    /// Writes the value into `out` (shared memory, written in place); `None` if it does not
    /// fit. The value stays the caller's, so a send that fails can hand it back.
    #[doc(hidden)]
    fn encode(&self, out: &mut ShmViewMut<'_>) -> Option<usize>;

    /// Reads a value from `bytes`, which another process wrote and may still be writing:
    /// copied out, then checked, never trusted.
    #[doc(hidden)]
    fn decode(bytes: &ShmView<'_>) -> Option<Self>;
}

impl<T: IpcSafe + Send + 'static> Wire for T {
    const SIGNATURE: u64 = T::SIGNATURE;

    fn encode(&self, out: &mut ShmViewMut<'_>) -> Option<usize> {
        out.write_ref(0, self).ok()
    }

    fn decode(bytes: &ShmView<'_>) -> Option<Self> {
        if bytes.len() != core::mem::size_of::<T>() {
            return None;
        }
        bytes.read(0).ok()
    }
}

/// A `serde` value sent with `postcard` (feature `serde`), for requests and replies that are
/// not flat (they hold a `std::string::String`, a `Vec`, a `HashMap`...). It costs an encoding
/// and a decoding per message, which flat types do not.
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use courier_shm::Postcard;
/// let greeting: Postcard<Vec<String>> = Postcard(vec!["hello".into()]);
/// # let _ = greeting;
/// # }
/// ```
#[cfg(feature = "serde")]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Postcard<T>(pub T);

#[cfg(feature = "serde")]
impl<T> Wire for Postcard<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    /// One signature for every postcard type: postcard's own decoding checks the bytes.
    const SIGNATURE: u64 = u64::from_le_bytes(*b"postcard");

    fn encode(&self, out: &mut ShmViewMut<'_>) -> Option<usize> {
        encode_postcard(&self.0, out)
    }

    fn decode(bytes: &ShmView<'_>) -> Option<Self> {
        // Copied out first: serde checks a string's UTF-8 and then reads its bytes again, so
        // decoding in place would let a peer change them between the check and the use.
        postcard::from_bytes(&bytes.to_vec()).ok().map(Postcard)
    }
}

/// Encodes `value` with postcard into `out`: the bytes of [`Postcard<T>`] (and of the typed
/// services' serde values), `None` if they do not fit.
#[cfg(feature = "serde")]
#[doc(hidden)]
pub fn encode_postcard<T: serde::Serialize>(value: &T, out: &mut ShmViewMut<'_>) -> Option<usize> {
    // Encoded in private memory, then copied in: serde's serializer is not written against a
    // view, and the copy is small beside the encoding itself.
    let bytes = postcard::to_allocvec(value).ok()?;
    out.write_at(0, &bytes).ok()?;
    Some(bytes.len())
}
