//! [`Option<T>`]: an optional value with a defined (`repr(u8)`) layout.

use core::mem::size_of;
use core::result::Result;

use zerocopy::{Immutable, KnownLayout, TryFromBytes};

use super::{__private, signature, FlatError, IpcSafe, SignatureHasher};

/// An IPC-safe optional value: `#[repr(u8)]`, tag 0 is `None`, tag 1 is `Some`.
///
/// The standard `Option<T>` has an unspecified layout, so its bytes cannot be validated; use
/// this one in IPC types and convert with `From`/`Into`.
///
/// # Examples
///
/// ```
/// use courier_core::flat;
///
/// let x: flat::Option<u32> = Some(3).into();
/// assert_eq!(x, flat::Option::Some(3));
/// assert_eq!(x.get(), Some(&3));
/// let std_option: Option<u32> = flat::Option::None.into();
/// assert_eq!(std_option, None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Option<T> {
    /// No value.
    #[default]
    None = 0,
    /// Some value.
    Some(T) = 1,
}

/// The `zerocopy`-checked mirror of [`Option<T>`].
#[doc(hidden)]
#[derive(TryFromBytes, KnownLayout, Immutable)]
#[repr(u8)]
pub enum OptionMirror<M> {
    /// No value.
    None = 0,
    /// Some value.
    Some(M) = 1,
}

impl<T> Option<T> {
    /// The value, if any, as a standard `Option`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(courier_core::flat::Option::Some(1).get(), Some(&1));
    /// ```
    pub const fn get(&self) -> core::option::Option<&T> {
        match self {
            Self::Some(value) => core::option::Option::Some(value),
            Self::None => core::option::Option::None,
        }
    }

    /// The value, if any, mutably.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut x = courier_core::flat::Option::Some(1);
    /// *x.get_mut().unwrap() = 2;
    /// assert_eq!(x, courier_core::flat::Option::Some(2));
    /// ```
    pub fn get_mut(&mut self) -> core::option::Option<&mut T> {
        match self {
            Self::Some(value) => core::option::Option::Some(value),
            Self::None => core::option::Option::None,
        }
    }

    /// Whether there is a value.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(courier_core::flat::Option::Some(1).is_some());
    /// ```
    pub const fn is_some(&self) -> bool {
        matches!(self, Self::Some(_))
    }

    /// Whether there is no value.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(courier_core::flat::Option::<u8>::None.is_none());
    /// ```
    pub const fn is_none(&self) -> bool {
        !self.is_some()
    }

    /// Converts into a standard `Option`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(courier_core::flat::Option::Some(1).into_option(), Some(1));
    /// ```
    pub fn into_option(self) -> core::option::Option<T> {
        match self {
            Self::Some(value) => core::option::Option::Some(value),
            Self::None => core::option::Option::None,
        }
    }
}

impl<T> From<core::option::Option<T>> for Option<T> {
    fn from(value: core::option::Option<T>) -> Self {
        match value {
            core::option::Option::Some(value) => Self::Some(value),
            core::option::Option::None => Self::None,
        }
    }
}

impl<T> From<Option<T>> for core::option::Option<T> {
    fn from(value: Option<T>) -> Self {
        value.into_option()
    }
}

// SAFETY: `Option<T>` and `OptionMirror<T::Mirror>` are `repr(u8)` enums with the same variants,
// discriminants and same-layout fields, so (RFC 2195) their layouts match, and zerocopy checks the
// tag. `zero_padding` zeroes only bytes outside the tag and the live field.
unsafe impl<T: IpcSafe> IpcSafe for Option<T> {
    type Mirror = OptionMirror<T::Mirror>;
    const SIGNATURE: u64 = SignatureHasher::new(signature::kind::OPTION)
        .word(T::SIGNATURE)
        .usize(size_of::<Self>())
        .finish();
    const HAS_PADDING: bool = T::HAS_PADDING || size_of::<Self>() != 1;
    const NEEDS_CHECK: bool = T::NEEDS_CHECK;

    fn check(mirror: &Self::Mirror, bytes: &[u8]) -> Result<(), FlatError> {
        if let OptionMirror::Some(value) = mirror {
            let base = __private::address(mirror);
            T::check(value, __private::field_bytes(bytes, base, value)?)?;
        }
        Ok(())
    }

    fn zero_padding(&mut self) {
        let base = __private::address(self);
        let mut ranges = [(0, 1), (0, 0)];
        if let Self::Some(value) = self {
            ranges[1] = (__private::offset_in(base, value), size_of::<T>());
            value.zero_padding();
        }
        // SAFETY: the value's bytes are the tag (byte 0) and, for `Some`, the field's range.
        unsafe { __private::zero_gaps(self, &mut ranges) }
    }
}
