//! courier: request/response messaging from interrupt handlers to threads, tasks and processes.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
pub use courier_local as local;

/// Static request/response slots for firmware (no heap, no OS): see [`courier_core::interchange`].
pub use courier_core::interchange;

/// The README's examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
