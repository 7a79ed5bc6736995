//! courier's `#![no_std]` core: the parts of courier that need neither an allocator nor an
//! operating system.
//!
//! This crate is an implementation detail of [`courier`](https://docs.rs/courier); use the
//! facade's modules (`courier::interchange`, `courier::flat`) rather than this crate directly.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(test, loom, all(feature = "placement", target_os = "linux")))]
extern crate std;

pub mod error;
// Every build uses a different subset of the atomics (loom, portable-atomic, the targets).
#[allow(dead_code, unused_imports)]
pub(crate) mod sync;

pub mod flat;
pub mod interchange;
pub mod names;
pub mod opcode;
pub mod pace;
#[cfg(all(feature = "placement", target_os = "linux"))]
pub mod placement;
pub mod quiet;
