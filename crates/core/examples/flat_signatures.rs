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

/// Eight-byte fields, whose alignment differs (4 on i686, 8 on x86_64) while their layout
/// does not: the signature must agree, or a 32-bit peer could not talk to a 64-bit one.
#[derive(Ipc)]
#[ipc(crate = "courier_core::flat")]
#[repr(C)]
pub struct Wide {
    id: u64,
    value: f64,
    delta: i64,
    pair: [u64; 2],
    maybe: flat::Option<u32>,
}

/// A `u32` then a `u64`: the `u64` sits at offset 4 on i686 and 8 on x86_64, so this layout
/// (and its signature) differs by design.
#[derive(Ipc)]
#[ipc(crate = "courier_core::flat")]
#[repr(C)]
pub struct Unpadded {
    small: u32,
    big: u64,
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
        row::<Wide>("Wide"),
        row::<u64>("u64"),
        row::<[u64; 2]>("[u64;2]"),
    ];
    for (name, signature, size) in rows {
        println!("{name} size={size} signature={signature:#018x}");
    }
    // These layouts differ by design between 32- and 64-bit targets; the CI script checks that
    // they do differ, which proves the two outputs came from two different targets.
    for (name, signature, size) in [row::<usize>("usize"), row::<Unpadded>("Unpadded")] {
        println!("width-dependent: {name} size={size} signature={signature:#018x}");
    }
    Ok(())
}
