//! courier: request/response messaging from interrupt handlers to threads, tasks and processes.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
pub use courier_local as local;

/// Static request/response slots for firmware (no heap, no OS): see [`courier_core::interchange`].
pub use courier_core::interchange;

/// Typed zero-copy IPC buffers: page-aligned `#[repr(C)]` values validated on receipt.
///
/// ```
/// use courier::Ipc;
///
/// #[derive(Ipc, Debug, PartialEq)]
/// #[repr(C)]
/// struct Value {
///     inner: u32,
///     ready: bool,
/// }
///
/// let mut ipc = Value { inner: 42, ready: true }.into_ipc();
/// assert_eq!(ipc.inner, 42); // IpcValue derefs to Value
/// let sig = ipc.signature();
/// let received = IpcValue::from_slice(ipc.as_bytes(), sig).unwrap();
/// assert_eq!(**received, Value { inner: 42, ready: true });
/// ```
pub use courier_core::flat;

/// `#[derive(Ipc)]`: makes a `#[repr(C)]` type IPC-safe and generates its IPC form `IpcName`
/// (see [`flat`]).
///
/// ```
/// #[derive(courier::Ipc)]
/// #[repr(u8)]
/// enum Command {
///     Stop,
///     Move { x: i32, y: i32 },
/// }
///
/// let ipc = Command::Move { x: 1, y: 2 }.into_ipc();
/// assert!(matches!(*ipc, Command::Move { x: 1, y: 2 }));
/// assert_eq!(core::mem::size_of_val(&ipc), 4096);
/// ```
pub use courier_derive::Ipc;

/// The README's examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
