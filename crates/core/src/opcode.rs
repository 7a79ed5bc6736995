//! Opcodes of scalar messages as enums: what `num_derive`'s `FromPrimitive` and `ToPrimitive`
//! do for Xous servers, with the unknown case as a value instead of a `None` to unwrap.
//!
//! `#[derive(courier::Opcode)]` on a field-less enum implements [`Opcode`], `From<Op> for
//! u32` and `TryFrom<u32> for Op` (whose error is [`UnknownOpcode`]). A server matches the
//! enum and answers an opcode it does not know with an error (`ScalarCall::opcode` and
//! `ScalarCall::refuse` in `courier::shm`) instead of panicking in an `unwrap`.
//!
//! ```
//! use courier_core::opcode::{Opcode, UnknownOpcode};
//!
//! #[derive(Debug, Clone, Copy, PartialEq, Eq)]
//! enum Op { Add = 1, Reset = 7 }
//!
//! // What the derive writes, by hand:
//! impl Opcode for Op {
//!     fn to_u32(self) -> u32 { self as u32 }
//!     fn from_u32(op: u32) -> Option<Self> {
//!         match op { 1 => Some(Op::Add), 7 => Some(Op::Reset), _ => None }
//!     }
//! }
//!
//! assert_eq!(Op::Reset.to_u32(), 7);
//! assert_eq!(Op::decode(1), Ok(Op::Add));
//! assert_eq!(Op::decode(2), Err(UnknownOpcode(2)));
//! ```

use core::fmt;

/// A field-less enum whose variants are the opcodes of scalar messages.
pub trait Opcode: Sized {
    /// The opcode on the wire.
    fn to_u32(self) -> u32;

    /// The variant whose opcode is `op`, if any.
    fn from_u32(op: u32) -> Option<Self>;

    /// The variant whose opcode is `op`, or the unknown opcode as an error.
    ///
    /// # Errors
    ///
    /// [`UnknownOpcode`] holding `op` when no variant has it.
    fn decode(op: u32) -> Result<Self, UnknownOpcode> {
        Self::from_u32(op).ok_or(UnknownOpcode(op))
    }
}

/// An opcode that no variant of the enum has: a peer of another version, or a hostile one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnknownOpcode(pub u32);

impl fmt::Display for UnknownOpcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown opcode {}", self.0)
    }
}

impl core::error::Error for UnknownOpcode {}
