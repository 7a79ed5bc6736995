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

    /// How many bytes [`encode`](Wire::encode) writes, if that is known without encoding
    /// (`None`, the default: not known). A small value whose length is known is written
    /// straight to where small messages travel; one whose length is not known is written
    /// where large ones do, then copied.
    #[doc(hidden)]
    fn encoded_len(&self) -> Option<usize> {
        None
    }

    /// Reads a value from `bytes`, which another process wrote and may still be writing:
    /// copied out, then checked, never trusted.
    #[doc(hidden)]
    fn decode(bytes: &ShmView<'_>) -> Option<Self>;

    /// The signature this value travels with: [`SIGNATURE`](Wire::SIGNATURE), except for
    /// [`Raw`], which carries the signature of the value it stands for.
    #[doc(hidden)]
    fn signature(&self) -> u64 {
        Self::SIGNATURE
    }

    /// Reads a value that arrived with `signature`: `None` if that is not this type's (or
    /// the bytes are not a valid value).
    #[doc(hidden)]
    fn decode_signed(signature: u64, bytes: &ShmView<'_>) -> Option<Self> {
        if signature == Self::SIGNATURE {
            Self::decode(bytes)
        } else {
            None
        }
    }
}

impl<T: IpcSafe + Send + 'static> Wire for T {
    const SIGNATURE: u64 = T::SIGNATURE;

    fn encode(&self, out: &mut ShmViewMut<'_>) -> Option<usize> {
        out.write_ref(0, self).ok()
    }

    fn encoded_len(&self) -> Option<usize> {
        Some(core::mem::size_of::<T>())
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

/// A value of any type, as its signature and its bytes: what a bridge or a tool that forwards
/// the calls of every service moves, without knowing their types
/// (`Client<Raw, Raw, Raw>`, [`Subscription::recv`](crate::Subscription::recv)`::<Raw>`).
///
/// A `Raw` request travels with its own signature, so the server checks it against the
/// type it expects exactly as it checks a typed client's; a `Raw` reply, error or push
/// accepts any signature and keeps it, so the bytes can be passed on and checked where the
/// type is known. The bytes were copied out of shared memory: they are private.
///
/// ```
/// use courier_shm::{Raw, Wire};
///
/// let r = Raw::new(<u64 as Wire>::SIGNATURE, 42u64.to_le_bytes().to_vec());
/// assert_eq!(r.signature(), u64::SIGNATURE);
/// assert_eq!(r.bytes, 42u64.to_le_bytes());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Raw {
    /// The signature of the type the bytes are a value of.
    pub signature: u64,
    /// The value's bytes, as that type writes them.
    pub bytes: Vec<u8>,
}

impl Raw {
    /// The value of the type whose signature is `signature`, written as `bytes`.
    pub fn new(signature: u64, bytes: Vec<u8>) -> Raw {
        Raw { signature, bytes }
    }
}

impl Wire for Raw {
    /// Never sent: a `Raw` travels with [`Raw::signature`](Raw#structfield.signature).
    const SIGNATURE: u64 = 0;

    fn encode(&self, out: &mut ShmViewMut<'_>) -> Option<usize> {
        out.write_at(0, &self.bytes).ok()?;
        Some(self.bytes.len())
    }

    fn encoded_len(&self) -> Option<usize> {
        Some(self.bytes.len())
    }

    fn decode(bytes: &ShmView<'_>) -> Option<Self> {
        Self::decode_signed(0, bytes)
    }

    fn signature(&self) -> u64 {
        self.signature
    }

    fn decode_signed(signature: u64, bytes: &ShmView<'_>) -> Option<Self> {
        Some(Raw {
            signature,
            bytes: bytes.to_vec(),
        })
    }
}
