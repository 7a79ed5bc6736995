//! Typed zero-copy IPC buffers: values laid out in page-aligned memory that another process
//! reads or writes in place, validated when they arrive.
//!
//! ```
//! use courier_core::flat::{Page, String};
//!
//! // A value whose type is IPC-safe (here a bounded string; usually a `#[derive(Ipc)]` type).
//! let mut ipc = Page::new(String::<16>::try_from("hello").unwrap());
//! assert_eq!(ipc.as_str(), "hello"); // `Page<T>` derefs to `T`
//! assert_eq!(core::mem::size_of_val(&ipc), 4096); // padded to a whole page
//!
//! // The bytes another process would see (padding and page tail zeroed) ...
//! let signature = ipc.signature();
//! let bytes = ipc.as_bytes();
//! // ... and the checked, zero-copy view it builds from them.
//! let received = Page::<String<16>>::from_slice(bytes, signature).unwrap();
//! assert_eq!(received.as_str(), "hello");
//! ```
//!
//! # IPC-safe types
//!
//! [`IpcSafe`] types have a fixed layout and no pointers: integers, floats, `bool`, `char`,
//! arrays of IPC-safe types, this module's bounded [`String<N>`](String), [`Vec<T, N>`](Vec)
//! and [`Option<T>`](Option), and `#[repr(C)]` / `#[repr(uN)]` structs and enums with
//! `#[derive(Ipc)]` (from the `courier` facade) whose fields are all IPC-safe. Pointers,
//! references, `Box`, the standard `String`/`Vec`, and the standard `Option` (whose layout is
//! unspecified) are rejected at compile time.
//!
//! # The IPC form
//!
//! [`Page<T>`] holds a `T` aligned to and padded to whole [`PAGE_SIZE`] pages, so it can be
//! lent by remapping pages without dragging other memory along. It dereferences to `T`.
//!
//! # Untrusted bytes
//!
//! [`Page::from_slice`] never trusts its input: it checks the signature, the length, the
//! alignment, every `bool`, `char`, enum tag and [`Option`] tag (through `zerocopy`'s
//! `TryFromBytes`), and every bounded string's length and UTF-8 and every bounded vector's
//! length. A failure is a [`FlatError`] saying which check failed; nothing panics.
//!
//! # No uninitialised bytes
//!
//! Padding inside a value (between fields, after a variant, in a bounded vector's unused
//! slots) and the page tail are zeroed before bytes are exposed ([`Page::as_bytes`],
//! [`Page::with_slice_mut`]); [`Page::from_slice_mut`] hands out `&mut T` over caller-owned
//! bytes only for types without padding, and a private copy, written back with its padding
//! zeroed, for the others.
//!
//! # Signatures
//!
//! [`IpcSafe::SIGNATURE`] is a `u64` computed at compile time from the real layout: size,
//! each field's offset and signature (recursively), enum tag sizes and discriminant values.
//! Names, docs, visibility and formatting do not enter it; it is the same on 32- and 64-bit
//! targets for a layout that is the same on both. Alignment is left out: where it changes a
//! layout it shows in offsets and sizes, and alone it differs between targets whose bytes
//! agree (`u64` is 4-aligned on i686, 8-aligned on x86_64), which would refuse a `[u64; 2]`
//! between a 32-bit and a 64-bit peer. `struct { a: u32, b: u64 }` still differs (offsets 4
//! and 8, sizes 12 and 16), and so do `flat::Option<u64>` (its value at offset 4 or 8) and
//! a struct with 8-byte fields whose size is not a multiple of 8 (x86_64 pads its end): add
//! the padding fields by hand to make such a type portable.
//!
//! # Porting from flatipc
//!
//! | flatipc 0.1.2 | `courier::flat` |
//! |---|---|
//! | `#[derive(flatipc::Ipc)]`, `#[derive(IpcSafe)]` | `#[derive(courier::Ipc)]`, or `#[derive(courier::IpcSafe)]` (the same derive under flatipc's other name; generics work) |
//! | `value.to_ipc()`, `value.into_ipc()`, `ipc.into_original()` | `value.to_ipc()` / `value.into_ipc()`, `Foo::from_ipc(ipc)` / `IpcFoo::from_ipc(ipc)` / `ipc.into_inner()` |
//! | `IpcFoo::from_slice(&[u8], usize) -> Option<&IpcFoo>` | `IpcFoo::from_slice(&[u8], u64) -> Result<&IpcFoo, FlatError>` |
//! | `IpcFoo::from_slice_mut(..) -> Option<&mut IpcFoo>` | `IpcFoo::from_slice_mut(..) -> Result<FlatMut<Foo>, FlatError>` (derefs to `Foo`: in place without padding, a copy written back on drop with it), or `IpcFoo::with_slice_mut(.., \|foo\| ..)` (in place for every type) |
//! | `ipc.signature() -> usize` | `ipc.signature() -> u64`, `Foo::signature()` |
//! | `flatipc::String<N>`, `flatipc::Vec<T, N>` | [`String<N>`](String), [`Vec<T, N>`](Vec) (`T: Copy`) |
//! | `Option<T>` fields | [`flat::Option<T>`](Option) (`From`/`Into` the standard one; the standard `Option` has no layout to check, and is refused with a message naming this one) |
//! | sending `&[u8]` of the whole object | [`Page::as_bytes`] (padding and tail zeroed) |

pub mod signature;

mod option;
mod string;
mod vec;

pub use option::Option;
pub use signature::SignatureHasher;
pub use string::{CapacityError, String};
pub use vec::Vec;

use core::fmt;
use core::mem::{align_of, size_of};
use core::ops::{Deref, DerefMut};
use core::result::Result;

use zerocopy::{Immutable, KnownLayout, TryFromBytes};

/// The page size the IPC form is aligned and padded to.
///
/// # Examples
///
/// ```
/// assert_eq!(courier_core::flat::PAGE_SIZE, 4096);
/// ```
pub const PAGE_SIZE: usize = 4096;

/// Why bytes were refused as an IPC value.
///
/// # Examples
///
/// ```
/// use courier_core::flat::{FlatError, Page};
///
/// let err = Page::<u32>::from_slice(&[0u8; 3], <u32 as courier_core::flat::IpcSafe>::SIGNATURE)
///     .unwrap_err();
/// assert!(matches!(err, FlatError::TooShort { .. }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlatError {
    /// The sender's signature is not the receiver's: the two sides disagree on the type or
    /// its layout.
    SignatureMismatch {
        /// The receiver's type signature.
        expected: u64,
        /// The signature that came with the bytes.
        found: u64,
    },
    /// The buffer is shorter than the page-padded value.
    TooShort {
        /// Bytes needed (`size_of::<Page<T>>()`).
        needed: usize,
        /// Bytes given.
        found: usize,
    },
    /// The buffer does not start on the required alignment (a page).
    Misaligned {
        /// The alignment required.
        align: usize,
        /// The buffer's address modulo that alignment.
        offset: usize,
    },
    /// Some byte pattern is not a value of its type: a `bool` other than 0 or 1, a `char`
    /// that is not a Unicode scalar value, an unknown enum or [`Option`] tag.
    InvalidValue,
    /// A bounded string's length is beyond its capacity.
    StringTooLong {
        /// The length that was read.
        len: usize,
        /// The string's capacity `N`.
        capacity: usize,
    },
    /// A bounded string's bytes are not UTF-8.
    InvalidUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// A bounded vector's length is beyond its capacity.
    VecTooLong {
        /// The length that was read.
        len: usize,
        /// The vector's capacity `N`.
        capacity: usize,
    },
}

impl fmt::Display for FlatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::SignatureMismatch { expected, found } => write!(
                f,
                "type signature mismatch: expected {expected:#018x}, found {found:#018x}"
            ),
            Self::TooShort { needed, found } => {
                write!(f, "buffer too short: {found} bytes, need {needed}")
            }
            Self::Misaligned { align, offset } => {
                write!(f, "buffer misaligned: {offset} bytes past a {align}-byte boundary")
            }
            Self::InvalidValue => f.write_str(
                "invalid value: a bool, char, enum tag or option tag has a bit pattern no value of its type has",
            ),
            Self::StringTooLong { len, capacity } => {
                write!(f, "bounded string length {len} exceeds its capacity {capacity}")
            }
            Self::InvalidUtf8 { valid_up_to } => {
                write!(f, "bounded string is not UTF-8 (valid up to byte {valid_up_to})")
            }
            Self::VecTooLong { len, capacity } => {
                write!(f, "bounded vector length {len} exceeds its capacity {capacity}")
            }
        }
    }
}

impl core::error::Error for FlatError {}

/// A type whose values can cross a process boundary as plain bytes.
///
/// Implemented for integers, floats, `bool`, `char`, arrays of IPC-safe types, [`String`],
/// [`Vec`], [`Option`], and by `#[derive(Ipc)]` (from the `courier` facade). Implement it
/// by hand only if you cannot use the derive.
///
/// # Safety
///
/// An implementation promises all of the following.
/// - `Self` has a fixed layout (`repr(C)`, `repr(uN)` or a primitive), contains no pointer,
///   reference or `UnsafeCell`, and has no drop glue that frees resources.
/// - `Self::Mirror` has the same size, alignment and layout as `Self`, and every value of
///   `Self::Mirror` for which [`check`](IpcSafe::check) returns `Ok` is a valid value of
///   `Self` that upholds `Self`'s safety invariants.
/// - [`zero_padding`](IpcSafe::zero_padding) writes only bytes that are padding for the
///   current value (or unused capacity), leaves the value unchanged, and afterwards every byte
///   of the value is initialised.
/// - If `HAS_PADDING` is `false`, every byte of every valid value is initialised, whatever
///   code wrote it; if `NEEDS_CHECK` is `false`, `check` always returns `Ok`.
/// - `SIGNATURE` is determined by the layout (see [`signature`]).
///
/// # Examples
///
/// ```
/// use courier_core::flat::{IpcSafe, Page};
///
/// /// Anything IPC-safe can be put in page form and sent with its signature.
/// fn to_wire<T: IpcSafe>(value: T) -> (u64, usize) {
///     let mut page = Page::new(value);
///     (page.signature(), page.as_bytes().len())
/// }
///
/// assert_eq!(to_wire([1u16, 2, 3]), (<[u16; 3] as IpcSafe>::SIGNATURE, 4096));
/// assert!(!<u32 as IpcSafe>::HAS_PADDING);
/// assert!(<courier_core::flat::String<8> as IpcSafe>::NEEDS_CHECK);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot cross a process boundary: it is not IPC-safe",
    label = "not IPC-safe",
    note = "IPC-safe types: integers, floats, bool, char, arrays, courier::flat::{{String, Vec, Option}} and #[derive(Ipc)] types",
    note = "pointers, references, Box, std String/Vec (they hold addresses) and std Option (unspecified layout) are not"
)]
pub unsafe trait IpcSafe: Sized {
    /// A type with the same layout as `Self` whose validity `zerocopy` checks from bytes.
    type Mirror: TryFromBytes + KnownLayout + Immutable;

    /// The layout signature (see [`signature`]).
    const SIGNATURE: u64;

    /// Whether some valid value has a byte that may be uninitialised (padding).
    const HAS_PADDING: bool;

    /// Whether [`check`](IpcSafe::check) has anything to check beyond `zerocopy`'s validity.
    const NEEDS_CHECK: bool;

    /// Checks what `zerocopy` cannot: bounded lengths and UTF-8. `bytes` are `mirror`'s own
    /// bytes.
    ///
    /// # Errors
    ///
    /// The first [`FlatError`] found.
    fn check(mirror: &Self::Mirror, bytes: &[u8]) -> Result<(), FlatError>;

    /// Zeroes every padding byte (and unused capacity) of `self`.
    fn zero_padding(&mut self);
}

macro_rules! primitive {
    ($($ty:ty = $id:expr),* $(,)?) => {$(
        // SAFETY: primitives have a fixed layout, no pointers, no padding, and are their own
        // mirror, so zerocopy's validity check is exactly their validity.
        unsafe impl IpcSafe for $ty {
            type Mirror = $ty;
            const SIGNATURE: u64 = SignatureHasher::new(signature::kind::PRIMITIVE)
                .word($id)
                .usize(size_of::<$ty>())
                .finish();
            const HAS_PADDING: bool = false;
            const NEEDS_CHECK: bool = false;
            #[inline]
            fn check(_: &Self::Mirror, _: &[u8]) -> Result<(), FlatError> {
                Ok(())
            }
            #[inline]
            fn zero_padding(&mut self) {}
        }
    )*};
}

primitive! {
    u8 = 1, u16 = 2, u32 = 3, u64 = 4, u128 = 5, usize = 6,
    i8 = 11, i16 = 12, i32 = 13, i64 = 14, i128 = 15, isize = 16,
    f32 = 21, f64 = 22, bool = 31, char = 32, () = 41,
}

// SAFETY: an array's layout is its element's, repeated; `[T::Mirror; N]` therefore matches
// `[T; N]` because `T::Mirror` matches `T`. Checks and padding are delegated per element.
unsafe impl<T: IpcSafe, const N: usize> IpcSafe for [T; N] {
    type Mirror = [T::Mirror; N];
    const SIGNATURE: u64 = SignatureHasher::new(signature::kind::ARRAY)
        .usize(N)
        .word(T::SIGNATURE)
        .finish();
    const HAS_PADDING: bool = T::HAS_PADDING && N > 0;
    const NEEDS_CHECK: bool = T::NEEDS_CHECK && N > 0;

    fn check(mirror: &Self::Mirror, bytes: &[u8]) -> Result<(), FlatError> {
        if !Self::NEEDS_CHECK {
            return Ok(());
        }
        let base = __private::address(mirror);
        for element in mirror {
            T::check(element, __private::field_bytes(bytes, base, element)?)?;
        }
        Ok(())
    }

    fn zero_padding(&mut self) {
        if T::HAS_PADDING {
            for element in self {
                element.zero_padding();
            }
        }
    }
}

/// The layout signature of `T`; the same as `T::SIGNATURE`, usable where a function is handier.
///
/// # Examples
///
/// ```
/// use courier_core::flat::signature_of;
/// assert_ne!(signature_of::<u32>(), signature_of::<i32>());
/// assert_ne!(signature_of::<[u8; 4]>(), signature_of::<[u8; 5]>());
/// ```
#[must_use]
pub const fn signature_of<T: IpcSafe>() -> u64 {
    T::SIGNATURE
}

/// Writes `value` into `out` as the bytes another process reads with [`read_value`]: its
/// padding zeroed first, so nothing uninitialised leaves the process. Returns the number of
/// bytes written (`size_of::<T>()`); `out` may have any alignment.
///
/// # Errors
///
/// [`FlatError::TooShort`] if `out` is smaller than `T`; nothing is written then.
///
/// # Examples
///
/// ```
/// use courier_core::flat::{read_value, write_value};
/// let mut buf = [0u8; 16];
/// let n = write_value([7u16, 9], &mut buf[1..]).unwrap(); // unaligned on purpose
/// assert_eq!(n, 4);
/// assert_eq!(read_value::<[u16; 2]>(&buf[1..1 + n]).unwrap(), [7, 9]);
/// ```
pub fn write_value<T: IpcSafe>(value: T, out: &mut [u8]) -> Result<usize, FlatError> {
    write_ref(&value, out)
}

/// [`write_value`] of a borrowed value, which stays the caller's: a sender that must hand the
/// value back when sending fails writes it this way.
///
/// # Errors
///
/// [`FlatError::TooShort`] if `out` is smaller than `T`; nothing is written then.
///
/// # Examples
///
/// ```
/// use courier_core::flat::{read_value, write_ref};
/// let value = [7u16, 9];
/// let mut buf = [0u8; 4];
/// assert_eq!(write_ref(&value, &mut buf).unwrap(), 4);
/// assert_eq!(read_value::<[u16; 2]>(&buf).unwrap(), value); // and `value` is still ours
/// ```
pub fn write_ref<T: IpcSafe>(value: &T, out: &mut [u8]) -> Result<usize, FlatError> {
    let n = size_of::<T>();
    if out.len() < n {
        return Err(FlatError::TooShort {
            needed: n,
            found: out.len(),
        });
    }
    // SAFETY: a bitwise copy of `*value`, never dropped (`ManuallyDrop`) and never used as a
    // `T` beyond zeroing its padding: an `IpcSafe` type holds no pointer or handle, so the
    // copy owns nothing the original also owns.
    let mut copy = core::mem::ManuallyDrop::new(unsafe { core::ptr::read(value) });
    copy.zero_padding();
    // SAFETY: after `zero_padding` every byte of `copy` is initialised (the `IpcSafe`
    // contract); `out` holds at least `n` bytes and cannot overlap the local `copy`.
    unsafe { core::ptr::copy_nonoverlapping(&*copy as *const T as *const u8, out.as_mut_ptr(), n) };
    Ok(n)
}

/// Reads a `T` that another process wrote with [`write_value`]: copies `size_of::<T>()` bytes
/// out of `bytes` (any alignment; more bytes are ignored), then checks them (validity of
/// `bool`, `char` and enum tags, lengths, UTF-8) before they become a `T`. The copy is taken
/// first, so a peer that changes the bytes afterwards cannot change what was checked.
///
/// # Errors
///
/// [`FlatError::TooShort`], [`FlatError::InvalidValue`] or a content error. It never panics.
///
/// # Examples
///
/// ```
/// use courier_core::flat::{read_value, FlatError};
/// assert_eq!(read_value::<bool>(&[1]).unwrap(), true);
/// assert_eq!(read_value::<bool>(&[2]).unwrap_err(), FlatError::InvalidValue);
/// ```
pub fn read_value<T: IpcSafe>(bytes: &[u8]) -> Result<T, FlatError> {
    let n = size_of::<T>();
    if bytes.len() < n {
        return Err(FlatError::TooShort {
            needed: n,
            found: bytes.len(),
        });
    }
    let mut value = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: `bytes` holds at least `n` bytes; the local cannot overlap them.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), value.as_mut_ptr().cast::<u8>(), n) };
    // SAFETY: all `n` bytes of `value` were just initialised by the copy; the view lives
    // only while `value` is not moved or written.
    let view = unsafe { core::slice::from_raw_parts(value.as_ptr().cast::<u8>(), n) };
    let mirror = T::Mirror::try_ref_from_bytes(view).map_err(|e| match e {
        // `value` is aligned for `T`, and `T::Mirror` has `T`'s layout: only validity fails.
        zerocopy::ConvertError::Alignment(_) | zerocopy::ConvertError::Size(_) => {
            FlatError::InvalidValue
        }
        zerocopy::ConvertError::Validity(_) => FlatError::InvalidValue,
    })?;
    T::check(mirror, view)?;
    // SAFETY: the bytes are a valid `T::Mirror` that passes `T::check`, hence (by the
    // `IpcSafe` contract) a valid `T`.
    Ok(unsafe { value.assume_init() })
}

/// The IPC form of a `T`: aligned to and padded to whole [`PAGE_SIZE`] pages.
///
/// `#[derive(Ipc)]` on `Foo` names `Page<Foo>` as `IpcFoo` and adds `Foo::into_ipc` and
/// `Foo::from_ipc`. `Page<T>` dereferences to `T`.
///
/// # Examples
///
/// ```
/// use courier_core::flat::Page;
///
/// let mut ipc = Page::new([1u32, 2, 3]);
/// ipc[0] = 10; // DerefMut to the array
/// assert_eq!(*ipc, [10, 2, 3]);
/// assert_eq!(core::mem::align_of_val(&ipc), 4096);
/// assert_eq!(ipc.into_inner(), [10, 2, 3]);
/// ```
#[repr(C, align(4096))]
pub struct Page<T> {
    value: T,
}

/// Zeroes the padding of a borrowed `T` when dropped, also during unwinding.
struct ZeroOnDrop<T: IpcSafe>(*mut T);

impl<T: IpcSafe> Drop for ZeroOnDrop<T> {
    fn drop(&mut self) {
        // SAFETY: `with_slice_mut` builds this guard from a pointer to a valid, aligned `T`
        // inside the caller's `&mut [u8]`, and drops it only after the one `&mut T` it lent
        // out has ended (the closure returned or unwound), so this is the only access.
        unsafe { (*self.0).zero_padding() }
    }
}

impl<T: IpcSafe> Page<T> {
    /// `size_of::<Page<T>>()`: the size of `T` rounded up to whole pages.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::flat::Page;
    /// assert_eq!(Page::<u8>::SIZE, 4096);
    /// assert_eq!(Page::<[u8; 4096]>::SIZE, 4096);
    /// assert_eq!(Page::<[u8; 4097]>::SIZE, 8192);
    /// ```
    pub const SIZE: usize = {
        assert!(size_of::<T>() > 0, "an IPC type must not be zero-sized");
        // A cheap re-check of the `IpcSafe` contract, evaluated for every type that is used.
        assert!(
            size_of::<T>() == size_of::<T::Mirror>() && align_of::<T>() == align_of::<T::Mirror>(),
            "IpcSafe::Mirror must have the layout of the type"
        );
        size_of::<Self>()
    };

    /// Moves `value` into its IPC form.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::flat::Page;
    /// let ipc = Page::new(42u32);
    /// assert_eq!(*ipc, 42);
    /// ```
    #[inline]
    pub fn new(value: T) -> Self {
        let _ = Self::SIZE;
        Self { value }
    }

    /// Moves the value back out of its IPC form.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::flat::Page;
    /// assert_eq!(Page::new(7u8).into_inner(), 7);
    /// ```
    #[inline]
    pub fn into_inner(self) -> T {
        self.value
    }

    /// Moves the value back out of its IPC form (the same as [`into_inner`](Self::into_inner),
    /// named as the derive's `Foo::from_ipc`).
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::flat::Page;
    /// assert_eq!(Page::from_ipc(Page::new(7u8)), 7);
    /// ```
    #[inline]
    pub fn from_ipc(ipc: Self) -> T {
        ipc.value
    }

    /// The layout signature of `T`, to send along with the bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::flat::{IpcSafe, Page};
    /// assert_eq!(Page::new(1u16).signature(), <u16 as IpcSafe>::SIGNATURE);
    /// ```
    #[inline]
    pub fn signature(&self) -> u64 {
        T::SIGNATURE
    }

    /// The page-sized bytes of this value, with every padding byte and the page tail zeroed.
    ///
    /// It takes `&mut self` because it writes the zeroes: padding may have become
    /// uninitialised again through `DerefMut` since the last call.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::flat::Page;
    /// let mut ipc = Page::new([1u8, 2]);
    /// let bytes = ipc.as_bytes();
    /// assert_eq!(bytes.len(), 4096);
    /// assert_eq!(&bytes[..3], &[1, 2, 0]);
    /// assert!(bytes[2..].iter().all(|&b| b == 0));
    /// ```
    pub fn as_bytes(&mut self) -> &[u8] {
        self.value.zero_padding();
        let tail = size_of::<Self>() - size_of::<T>();
        // SAFETY: `size_of::<T>() .. size_of::<Self>()` lies inside `*self` (which we borrow
        // mutably) and is the page tail: padding of `Page<T>` after its only field, so writing
        // it cannot change or invalidate the value.
        unsafe {
            core::ptr::write_bytes((self as *mut Self as *mut u8).add(size_of::<T>()), 0, tail)
        };
        // SAFETY: every byte of `*self` is now initialised: `zero_padding` initialised `T`'s
        // padding (its contract), the tail was just zeroed, and the other bytes belong to valid
        // fields. `T` has no `UnsafeCell` (the `IpcSafe` contract), so a shared byte view of it
        // cannot race with interior mutation; it borrows `self` for its lifetime.
        unsafe { core::slice::from_raw_parts(self as *const Self as *const u8, size_of::<Self>()) }
    }

    /// Checks the signature, length and alignment of `bytes`; returns the `T`-sized prefix.
    fn check_frame(bytes: &[u8], signature: u64) -> Result<&[u8], FlatError> {
        if signature != T::SIGNATURE {
            return Err(FlatError::SignatureMismatch {
                expected: T::SIGNATURE,
                found: signature,
            });
        }
        if bytes.len() < Self::SIZE {
            return Err(FlatError::TooShort {
                needed: Self::SIZE,
                found: bytes.len(),
            });
        }
        let offset = (bytes.as_ptr() as usize) % align_of::<Self>();
        if offset != 0 {
            return Err(FlatError::Misaligned {
                align: align_of::<Self>(),
                offset,
            });
        }
        let prefix = &bytes[..size_of::<T>()];
        let mirror = T::Mirror::try_ref_from_bytes(prefix).map_err(|e| match e {
            zerocopy::ConvertError::Alignment(_) => FlatError::Misaligned {
                align: align_of::<T>(),
                offset: (bytes.as_ptr() as usize) % align_of::<T>(),
            },
            zerocopy::ConvertError::Size(_) => FlatError::TooShort {
                needed: size_of::<T>(),
                found: prefix.len(),
            },
            zerocopy::ConvertError::Validity(_) => FlatError::InvalidValue,
        })?;
        T::check(mirror, prefix)?;
        Ok(prefix)
    }

    /// A checked, zero-copy view of a value another process wrote into `bytes`.
    ///
    /// `bytes` must start on a page boundary and hold at least [`Self::SIZE`] bytes (more are
    /// ignored); `signature` is the one the sender sent ([`Page::signature`]).
    ///
    /// # Errors
    ///
    /// [`FlatError::SignatureMismatch`], [`FlatError::TooShort`], [`FlatError::Misaligned`],
    /// or a content error ([`FlatError::InvalidValue`], [`FlatError::StringTooLong`],
    /// [`FlatError::InvalidUtf8`], [`FlatError::VecTooLong`]). It never panics.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::flat::{FlatError, Page};
    ///
    /// let mut ipc = Page::new([true, false]);
    /// let sig = ipc.signature();
    /// let bytes = ipc.as_bytes();
    /// assert_eq!(**Page::<[bool; 2]>::from_slice(bytes, sig).unwrap(), [true, false]);
    ///
    /// // A `bool` byte of 7 is refused, not undefined behaviour.
    /// let mut bad = Page::new([7u8, 0]);
    /// let bad = bad.as_bytes();
    /// assert_eq!(Page::<[bool; 2]>::from_slice(bad, sig).unwrap_err(), FlatError::InvalidValue);
    /// ```
    pub fn from_slice(bytes: &[u8], signature: u64) -> Result<&Self, FlatError> {
        Self::check_frame(bytes, signature)?;
        // SAFETY: `check_frame` proved that `bytes` starts on `align_of::<Self>()`, holds at
        // least `size_of::<Self>()` bytes, and that its first `size_of::<T>()` bytes are a valid
        // `T::Mirror` that passes `T::check`, hence (by the `IpcSafe` contract) a valid `T`. The
        // rest of `Page<T>` is padding, valid for any bytes. Neither has an `UnsafeCell`, and the
        // result borrows `bytes` immutably for as long as it lives.
        Ok(unsafe { &*bytes.as_ptr().cast::<Self>() })
    }

    /// A checked mutable view of a value another process wrote into `bytes`, as flatipc's
    /// `from_slice_mut`, for every IPC-safe type.
    ///
    /// For a type without padding the view is the value in place (zero-copy). For a type with
    /// padding it is a private copy, written back into `bytes` (its padding zeroed) when the
    /// view drops: a write through `&mut T` may leave padding uninitialised, and `bytes` must
    /// never hold an uninitialised byte. A view that is forgotten (`mem::forget`) writes
    /// nothing back. [`with_slice_mut`](Self::with_slice_mut) is the zero-copy form for types
    /// with padding.
    ///
    /// # Errors
    ///
    /// As [`from_slice`](Self::from_slice).
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::flat::{Option, Page};
    ///
    /// let mut ipc = Page::new([41u32, 1]);
    /// let sig = ipc.signature();
    /// let mut buf = Page::new([0u8; 4096]); // any page-aligned buffer of a page or more
    /// buf.copy_from_slice(ipc.as_bytes());
    /// let mut value = Page::<[u32; 2]>::from_slice_mut(buf.as_mut_slice(), sig).unwrap();
    /// value[0] += 1;
    /// drop(value);
    /// assert_eq!(buf[..4], 42u32.to_ne_bytes());
    ///
    /// // A type with padding (a tag byte, then a `u32`): the same call.
    /// let mut ipc = Page::new(Option::Some(41u32));
    /// let sig = ipc.signature();
    /// buf.copy_from_slice(ipc.as_bytes());
    /// let mut value = Page::<Option<u32>>::from_slice_mut(buf.as_mut_slice(), sig).unwrap();
    /// *value = Option::Some(42);
    /// drop(value);
    /// let back = Page::<Option<u32>>::from_slice(buf.as_slice(), sig).unwrap();
    /// assert_eq!(**back, Option::Some(42));
    /// assert_eq!(buf[1..4], [0, 0, 0]); // the padding is zero
    /// ```
    pub fn from_slice_mut(bytes: &mut [u8], signature: u64) -> Result<FlatMut<'_, T>, FlatError> {
        Self::check_frame(bytes, signature)?;
        let ptr = bytes.as_mut_ptr().cast::<T>();
        if !T::HAS_PADDING {
            // SAFETY: as in `from_slice`, the first `size_of::<T>()` bytes are a valid, aligned
            // `T`, and we borrow `bytes` mutably for the result's lifetime. `T` has no padding,
            // so no write through the result can leave an uninitialised byte in `bytes`.
            return Ok(FlatMut(Inner::InPlace(unsafe { &mut *ptr })));
        }
        // SAFETY: `ptr` points to a valid, aligned `T` (checked above); reading it makes a
        // bitwise copy, and the bytes stay as they were (initialised) until written back.
        let value = unsafe { ptr.read() };
        Ok(FlatMut(Inner::Copy { bytes, value }))
    }

    /// Runs `f` on a checked, zero-copy, mutable view of the value in `bytes`, then zeroes the
    /// value's padding, so `bytes` holds only initialised bytes afterwards (also if `f`
    /// panics). Works for every IPC-safe type.
    ///
    /// # Errors
    ///
    /// As [`from_slice`](Self::from_slice); `f` is not called then.
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::flat::{Option, Page};
    ///
    /// let mut ipc = Page::new(Option::Some(41u32));
    /// let sig = ipc.signature();
    /// let mut buf = Page::new([0u8; 4096]);
    /// buf.copy_from_slice(ipc.as_bytes());
    /// let old = Page::<Option<u32>>::with_slice_mut(buf.as_mut_slice(), sig, |v| {
    ///     core::mem::replace(v, Option::Some(42))
    /// })
    /// .unwrap();
    /// assert_eq!(old, Option::Some(41));
    /// let received = Page::<Option<u32>>::from_slice(buf.as_slice(), sig).unwrap();
    /// assert_eq!(**received, Option::Some(42));
    /// ```
    pub fn with_slice_mut<R>(
        bytes: &mut [u8],
        signature: u64,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<R, FlatError> {
        Self::check_frame(bytes, signature)?;
        let ptr = bytes.as_mut_ptr().cast::<T>();
        let guard = ZeroOnDrop(ptr);
        // SAFETY: as in `from_slice_mut`, `ptr` points to a valid, aligned `T` inside `bytes`,
        // which we borrow mutably; this is the only reference to it while `f` runs, and the
        // higher-ranked closure type stops `f` from keeping it. `guard` zeroes the padding after.
        let result = f(unsafe { &mut *ptr });
        drop(guard);
        Ok(result)
    }

    /// A view of `bytes` as a `Page<T>` without any check.
    ///
    /// # Safety
    ///
    /// `bytes` must start on a page boundary, hold at least [`Self::SIZE`] bytes, and its first
    /// `size_of::<T>()` bytes must be a valid `T` (as [`from_slice`](Self::from_slice) would
    /// have verified).
    ///
    /// # Examples
    ///
    /// ```
    /// use courier_core::flat::Page;
    /// let mut ipc = Page::new(5u64);
    /// let bytes = ipc.as_bytes();
    /// // SAFETY: `bytes` are the bytes of a `Page<u64>`.
    /// let view = unsafe { Page::<u64>::from_slice_unchecked(bytes) };
    /// assert_eq!(**view, 5);
    /// ```
    pub unsafe fn from_slice_unchecked(bytes: &[u8]) -> &Self {
        debug_assert!(Self::check_frame(bytes, T::SIGNATURE).is_ok());
        // SAFETY: the caller promises what `from_slice` would have checked.
        unsafe { &*bytes.as_ptr().cast::<Self>() }
    }
}

/// A checked mutable view of a value in a caller's bytes, from [`Page::from_slice_mut`]:
/// the value in place for a type without padding, a private copy written back on drop (its
/// padding zeroed) for a type with padding.
pub struct FlatMut<'a, T: IpcSafe>(Inner<'a, T>);

enum Inner<'a, T> {
    InPlace(&'a mut T),
    Copy { bytes: &'a mut [u8], value: T },
}

impl<T: IpcSafe> Deref for FlatMut<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        match &self.0 {
            Inner::InPlace(v) => v,
            Inner::Copy { value, .. } => value,
        }
    }
}

impl<T: IpcSafe> DerefMut for FlatMut<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        match &mut self.0 {
            Inner::InPlace(v) => v,
            Inner::Copy { value, .. } => value,
        }
    }
}

impl<T: IpcSafe> Drop for FlatMut<'_, T> {
    fn drop(&mut self) {
        if let Inner::Copy { bytes, value } = &mut self.0 {
            value.zero_padding();
            // SAFETY: `value` is a valid `T` whose padding bytes were just written (zeroed),
            // so all `size_of::<T>()` of its bytes are initialised and may be read as bytes;
            // `bytes` holds at least that many (checked by `from_slice_mut`), and the two do
            // not overlap (`value` is this guard's own copy).
            unsafe {
                core::ptr::copy_nonoverlapping(
                    (value as *const T).cast::<u8>(),
                    bytes.as_mut_ptr(),
                    size_of::<T>(),
                );
            }
        }
    }
}

impl<T: IpcSafe + fmt::Debug> fmt::Debug for FlatMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T> Deref for Page<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for Page<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Page<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Page").field(&self.value).finish()
    }
}

impl<T: Clone> Clone for Page<T> {
    fn clone(&self) -> Self {
        Self {
            value: self.value.clone(),
        }
    }
}

impl<T: PartialEq> PartialEq for Page<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Eq> Eq for Page<T> {}

/// Support for `#[derive(Ipc)]`'s generated code. Not a public API: it may change at any time.
#[doc(hidden)]
pub mod __private {
    pub use zerocopy;

    use super::FlatError;

    /// The address of a value, as a number.
    #[inline]
    pub fn address<T>(value: &T) -> usize {
        value as *const T as usize
    }

    /// The offset of `field` inside the value at address `base`.
    #[inline]
    pub fn offset_in<F>(base: usize, field: &F) -> usize {
        (field as *const F as usize).wrapping_sub(base)
    }

    /// The bytes of `field`, a field of the value at `base` whose bytes are `bytes`.
    ///
    /// # Errors
    ///
    /// [`FlatError::TooShort`] if the field is not inside `bytes` (never for correct callers).
    #[inline]
    pub fn field_bytes<'a, F>(
        bytes: &'a [u8],
        base: usize,
        field: &F,
    ) -> Result<&'a [u8], FlatError> {
        let start = offset_in(base, field);
        let size = core::mem::size_of::<F>();
        start
            .checked_add(size)
            .and_then(|end| bytes.get(start..end))
            .ok_or(FlatError::TooShort {
                needed: start.saturating_add(size),
                found: bytes.len(),
            })
    }

    /// Zeroes every byte of `*value` outside `ranges` (`(offset, len)` pairs, in any order).
    ///
    /// # Safety
    ///
    /// Every byte of `*value` that is part of its current value (not padding) must lie in one
    /// of `ranges`.
    #[inline]
    pub unsafe fn zero_gaps<T>(value: &mut T, ranges: &mut [(usize, usize)]) {
        // Insertion sort: a handful of fields, no allocation.
        for i in 1..ranges.len() {
            let mut j = i;
            while j > 0 && ranges[j - 1].0 > ranges[j].0 {
                ranges.swap(j - 1, j);
                j -= 1;
            }
        }
        // SAFETY: the caller's promise, and the ranges are now sorted.
        unsafe { zero_gaps_sorted(value, ranges) }
    }

    /// [`zero_gaps`] for ranges already sorted by offset (a `repr(C)` struct's fields in
    /// declaration order). With constant ranges it compiles down to a few stores.
    ///
    /// # Safety
    ///
    /// As [`zero_gaps`], and `ranges` must be sorted by offset.
    #[inline]
    pub unsafe fn zero_gaps_sorted<T>(value: &mut T, ranges: &[(usize, usize)]) {
        let size = core::mem::size_of::<T>();
        let base = value as *mut T as *mut u8;
        let mut cursor = 0usize;
        for &(start, len) in ranges {
            let start = start.min(size);
            // SAFETY: `cursor..start` lies inside `*value` (both at most `size`) and is outside
            // every range, so by the caller's promise it is padding.
            unsafe { zero_span(base, cursor, start) };
            cursor = cursor.max(start.saturating_add(len).min(size));
        }
        // SAFETY: as above, for the bytes after the last range.
        unsafe { zero_span(base, cursor, size) };
    }

    /// Zeroes `base[from..to]` (nothing if `to <= from`); small gaps without a `memset` call.
    ///
    /// # Safety
    ///
    /// `base[from..to]` must be valid for writes and hold only padding.
    #[inline(always)]
    unsafe fn zero_span(base: *mut u8, from: usize, to: usize) {
        if to <= from {
            return;
        }
        let len = to - from;
        if len <= 16 {
            for i in from..to {
                // SAFETY: `i` is in `from..to`, valid for writes (the caller's promise).
                unsafe { base.add(i).write(0) };
            }
        } else {
            // SAFETY: the caller's promise.
            unsafe { core::ptr::write_bytes(base.add(from), 0, len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(4096))]
    struct Aligned<const N: usize>([u8; N]);

    #[test]
    fn send_sync_follow_the_payload() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Page<u32>>();
        assert_send_sync::<Page<String<4>>>();
        assert_send_sync::<Page<Vec<u8, 4>>>();
        assert_send_sync::<Page<Option<char>>>();
        assert_send_sync::<FlatError>();
        assert_send_sync::<CapacityError>();
    }

    #[test]
    fn sizes_are_whole_pages() {
        assert_eq!(Page::<u8>::SIZE, 4096);
        assert_eq!(Page::<[u8; 4096]>::SIZE, 4096);
        assert_eq!(Page::<[u8; 4097]>::SIZE, 8192);
        assert_eq!(align_of::<Page<u8>>(), 4096);
    }

    #[test]
    fn bad_bool_and_char_are_errors() {
        let mut buf = Aligned([0u8; 4096]);
        buf.0[0] = 7;
        assert_eq!(
            Page::<bool>::from_slice(&buf.0, bool::SIGNATURE).unwrap_err(),
            FlatError::InvalidValue
        );
        buf.0[..4].copy_from_slice(&0xD800u32.to_ne_bytes()); // a surrogate
        assert_eq!(
            Page::<char>::from_slice(&buf.0, char::SIGNATURE).unwrap_err(),
            FlatError::InvalidValue
        );
        buf.0[..4].copy_from_slice(&0x1F600u32.to_ne_bytes());
        assert_eq!(
            **Page::<char>::from_slice(&buf.0, char::SIGNATURE).unwrap(),
            '😀'
        );
    }

    #[test]
    fn frame_errors() {
        let buf = Aligned([0u8; 8192]);
        assert_eq!(
            Page::<u32>::from_slice(&buf.0, 1).unwrap_err(),
            FlatError::SignatureMismatch {
                expected: u32::SIGNATURE,
                found: 1
            }
        );
        assert_eq!(
            Page::<u32>::from_slice(&buf.0[..4095], u32::SIGNATURE).unwrap_err(),
            FlatError::TooShort {
                needed: 4096,
                found: 4095
            }
        );
        assert_eq!(
            Page::<u32>::from_slice(&buf.0[4..4100], u32::SIGNATURE).unwrap_err(),
            FlatError::Misaligned {
                align: 4096,
                offset: 4
            }
        );
        // Longer buffers are fine: the prefix is used.
        assert_eq!(
            **Page::<u32>::from_slice(&buf.0, u32::SIGNATURE).unwrap(),
            0
        );
    }

    #[test]
    fn as_bytes_zeroes_tail_and_padding() {
        let mut page = Page::new(Option::Some(0xABu8));
        let bytes = page.as_bytes();
        assert_eq!(&bytes[..2], &[1, 0xAB]);
        assert!(bytes[2..].iter().all(|&b| b == 0));
    }

    #[test]
    fn zero_gaps_covers_unsorted_ranges() {
        let mut v = [0xFFu8; 10];
        // SAFETY: `[u8; 10]` has no padding; zeroing bytes of a u8 array is always valid.
        unsafe { __private::zero_gaps(&mut v, &mut [(6, 2), (1, 2)]) };
        assert_eq!(v, [0, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0, 0]);
    }

    #[test]
    fn with_slice_mut_zeroes_padding_after_a_typed_write() {
        let mut buf = Aligned([0xEEu8; 4096]);
        buf.0[0] = 0; // None
        let sig = Option::<u32>::SIGNATURE;
        Page::<Option<u32>>::with_slice_mut(&mut buf.0, sig, |v| *v = Option::None).unwrap();
        // Bytes 1..8 are padding of the `None` variant: zeroed afterwards.
        assert_eq!(&buf.0[..8], &[0; 8]);
        // The page tail is not part of `T` and is left as it was.
        assert_eq!(buf.0[8], 0xEE);
    }

    #[test]
    fn signatures_differ_by_type() {
        let sigs = [
            u8::SIGNATURE,
            i8::SIGNATURE,
            bool::SIGNATURE,
            u32::SIGNATURE,
            f32::SIGNATURE,
            char::SIGNATURE,
            <[u8; 4]>::SIGNATURE,
            <[u16; 2]>::SIGNATURE,
        ];
        for (i, a) in sigs.iter().enumerate() {
            for b in &sigs[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
