//! Prints the layout signatures of types whose layout is the same on 32- and 64-bit targets
//! (fixed-width fields only). `.ci/flat.sh` builds this for `i686-unknown-linux-musl` and for the
//! host and requires identical output.
//!
//! It lives in courier-core (not the facade) so that the 32-bit build compiles only this crate,
//! the derive and proptest; it also exercises the derive's `#[ipc(crate = "...")]` option.

use courier_core::flat::{self, IpcSafe};
use courier_derive::Ipc;

/// flatipc's real-world type, whose signature flatipc truncated in 32-bit cross builds.
#[derive(Ipc)]
#[ipc(crate = "courier_core::flat")]
#[repr(C)]
pub struct TrngBuf {
    data: [u32; 1020],
    len: u16,
}

/// Nested structs and an enum with fields.
#[derive(Ipc)]
#[ipc(crate = "courier_core::flat")]
#[repr(C)]
pub struct Message {
    id: u32,
    kind: Kind,
    name: flat::String<24>,
    args: flat::Vec<i32, 6>,
    reply_to: flat::Option<u16>,
    letter: char,
    ready: bool,
}

/// An enum with fields and explicit discriminants.
#[derive(Ipc)]
#[ipc(crate = "courier_core::flat")]
#[repr(u8)]
pub enum Kind {
    /// Nothing.
    Ping = 1,
    /// A point.
    Move {
        /// Horizontal.
        x: i16,
        /// Vertical.
        y: i16,
    } = 7,
    /// Raw bytes.
    Blob([u8; 5]),
}

/// A `repr(C)` enum: its tag is a C `int`, 4 bytes on both targets.
#[derive(Ipc)]
#[ipc(crate = "courier_core::flat")]
#[repr(C)]
pub enum CTagged {
    /// A float.
    F(f32),
    /// A pair.
    P(u16, u8),
}

fn row<T: IpcSafe>(name: &str) -> (&str, u64, usize) {
    (name, T::SIGNATURE, core::mem::size_of::<T>())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rows = [
        row::<TrngBuf>("TrngBuf"),
        row::<Message>("Message"),
        row::<Kind>("Kind"),
        row::<CTagged>("CTagged"),
        row::<flat::String<100>>("String<100>"),
        row::<flat::Vec<u16, 10>>("Vec<u16,10>"),
        row::<[char; 3]>("[char;3]"),
    ];
    for (name, signature, size) in rows {
        println!("{name} size={size} signature={signature:#018x}");
    }
    // These layouts differ by design between 32- and 64-bit targets; the CI script checks that
    // they do differ, which proves the two outputs came from two different targets.
    let (name, signature, size) = row::<usize>("usize");
    println!("width-dependent: {name} size={size} signature={signature:#018x}");
    Ok(())
}
