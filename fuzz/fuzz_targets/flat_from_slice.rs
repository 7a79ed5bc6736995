//! `courier_core::flat`: arbitrary bytes into `read_value` and `Page::from_slice` (and
//! `with_slice_mut`) of a few types: `bool`, `char`, arrays, derived structs and enums
//! (`repr(u8)`, `repr(u16)`, `repr(C)`, with fields), `flat::String`, `flat::Vec`,
//! `flat::Option`.
//!
//! Input: one byte picks the type and the variant of the check, the rest are the bytes.
//!
//! Invariants (a failed one aborts, and libFuzzer saves the input):
//! - nothing panics, whatever the bytes;
//! - `read_value` of the first `size_of::<T>()` bytes and `Page::<T>::from_slice` of the same
//!   bytes at a page boundary agree: both accept (and give the same value) or both refuse;
//! - an accepted value re-encodes (`write_value`) to bytes that are accepted again and give
//!   the same encoding (a fixed point: what was checked is what is used);
//! - an accepted `String` is valid UTF-8 no longer than its capacity, a `Vec` no longer than
//!   its capacity;
//! - a wrong signature is `SignatureMismatch`, a misaligned buffer is refused, a short one is
//!   `TooShort`;
//! - `with_slice_mut` (which zeroes padding afterwards) leaves bytes that still read as the
//!   same value.
#![no_main]
// The variants are built only from fuzz bytes, never by name.
#![allow(dead_code)]

use courier_core::flat::{self, read_value, write_value, FlatError, IpcSafe, Page};
use courier_derive::Ipc;
use libfuzzer_sys::fuzz_target;
use std::mem::size_of;

#[derive(Ipc, Clone, Copy, Debug, PartialEq)]
#[ipc(crate = "courier_core::flat")]
#[repr(u8)]
enum Shape {
    Empty,
    Circle { r: u16 } = 5,
    Rect(u8, u32),
    Named(flat::String<6>),
}

#[derive(Ipc, Clone, Copy, Debug, PartialEq)]
#[ipc(crate = "courier_core::flat")]
#[repr(u16)]
enum Tagged {
    A(char),
    B { on: bool, n: u64 },
    C,
}

#[derive(Ipc, Clone, Copy, Debug, PartialEq)]
#[ipc(crate = "courier_core::flat")]
#[repr(C)]
enum CEnum {
    X,
    Y(i64),
    Z { c: char, b: [bool; 3] },
}

#[derive(Ipc, Clone, Copy, Debug, PartialEq)]
#[ipc(crate = "courier_core::flat")]
#[repr(C)]
struct Mixed {
    flag: bool,
    letter: char,
    shape: Shape,
    title: flat::String<12>,
    shapes: flat::Vec<Shape, 3>,
    tagged: [Tagged; 2],
    maybe: flat::Option<CEnum>,
    count: u16,
}

/// A page-aligned buffer of two pages: room for every `Page<T>` above.
#[repr(C, align(4096))]
struct Buf([u8; 8192]);

/// What the type-specific invariants look at.
trait Inspect {
    fn inspect(&self) {}
}
impl Inspect for bool {}
impl Inspect for char {}
impl Inspect for [bool; 3] {}
impl Inspect for Shape {
    fn inspect(&self) {
        if let Shape::Named(s) = self {
            s.inspect();
        }
    }
}
impl Inspect for Tagged {}
impl Inspect for CEnum {}
impl<const N: usize> Inspect for flat::String<N> {
    fn inspect(&self) {
        let s = self.try_as_str().expect("an accepted String is UTF-8");
        assert!(s.len() <= N, "String<{N}> of {} bytes", s.len());
        assert_eq!(self.as_str(), s);
    }
}
impl<T: IpcSafe + Copy + Inspect, const N: usize> Inspect for flat::Vec<T, N> {
    fn inspect(&self) {
        assert!(self.as_slice().len() <= N);
        self.as_slice().iter().for_each(Inspect::inspect);
    }
}
impl<T: Inspect> Inspect for flat::Option<T> {
    fn inspect(&self) {
        if let flat::Option::Some(v) = self {
            v.inspect();
        }
    }
}
impl Inspect for Mixed {
    fn inspect(&self) {
        self.shape.inspect();
        self.title.inspect();
        self.shapes.inspect();
        self.maybe.inspect();
    }
}

/// The bytes `write_value` makes of `v` (padding zeroed).
fn encode<T: IpcSafe + Clone>(v: &T) -> Vec<u8> {
    let mut out = vec![0u8; size_of::<T>()];
    let n = write_value(v.clone(), &mut out).expect("room for the value");
    assert_eq!(n, size_of::<T>());
    out
}

fn check<T: IpcSafe + Clone + Inspect + std::fmt::Debug>(mode: u8, bytes: &[u8]) {
    let n = size_of::<T>();
    let by_value = read_value::<T>(bytes);
    if bytes.len() < n {
        assert!(
            matches!(by_value, Err(FlatError::TooShort { .. })),
            "{by_value:?}"
        );
    }
    if let Ok(v) = &by_value {
        v.inspect();
        let enc = encode(v);
        let again = read_value::<T>(&enc).expect("a re-encoded value is accepted");
        assert_eq!(encode(&again), enc, "re-encoding is not a fixed point");
    }

    // The same bytes at a page boundary, zero-padded to the page.
    let mut buf = Box::new(Buf([0; 8192]));
    let k = bytes.len().min(buf.0.len());
    buf.0[..k].copy_from_slice(&bytes[..k]);
    let page_len = size_of::<Page<T>>();
    let sig = T::SIGNATURE;
    match mode % 4 {
        0 => {
            let r = Page::<T>::from_slice(&buf.0[..page_len], sig);
            let padded = read_value::<T>(&buf.0[..n]);
            match (&r, &padded) {
                (Ok(p), Ok(v)) => {
                    p.inspect();
                    let seen: &T = p;
                    assert_eq!(encode(seen), encode(v), "from_slice and read_value differ");
                }
                (Err(a), Err(b)) => {
                    assert_eq!(a, b, "from_slice and read_value refuse differently")
                }
                _ => panic!("from_slice {r:?} but read_value {padded:?}"),
            }
        }
        1 => {
            let wrong = sig ^ u64::from(bytes.first().copied().unwrap_or(1) | 1);
            let r = Page::<T>::from_slice(&buf.0[..page_len], wrong);
            assert!(
                matches!(r, Err(FlatError::SignatureMismatch { .. })),
                "{r:?}"
            );
        }
        2 => {
            // Misaligned by one byte, or one byte short.
            assert!(Page::<T>::from_slice(&buf.0[1..page_len + 1], sig).is_err());
            let short = Page::<T>::from_slice(&buf.0[..page_len - 1], sig);
            assert!(
                matches!(short, Err(FlatError::TooShort { .. })),
                "{short:?}"
            );
        }
        _ => {
            let before = read_value::<T>(&buf.0[..n]);
            let r = Page::<T>::with_slice_mut(&mut buf.0[..page_len], sig, |v| v.clone());
            assert_eq!(
                r.is_ok(),
                before.is_ok(),
                "with_slice_mut and read_value disagree"
            );
            if let (Ok(seen), Ok(before)) = (r, before) {
                assert_eq!(encode(&seen), encode(&before));
                // Padding zeroed afterwards: the bytes still read as the same value.
                let after = read_value::<T>(&buf.0[..n]).expect("still valid after with_slice_mut");
                assert_eq!(encode(&after), encode(&before));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let mode = sel >> 4;
    match sel % 12 {
        0 => check::<bool>(mode, bytes),
        1 => check::<char>(mode, bytes),
        2 => check::<[bool; 3]>(mode, bytes),
        3 => check::<flat::String<16>>(mode, bytes),
        4 => check::<flat::Vec<char, 5>>(mode, bytes),
        5 => check::<flat::Option<char>>(mode, bytes),
        6 => check::<flat::Option<flat::String<8>>>(mode, bytes),
        7 => check::<Shape>(mode, bytes),
        8 => check::<Tagged>(mode, bytes),
        9 => check::<CEnum>(mode, bytes),
        10 => check::<Mixed>(mode, bytes),
        _ => check::<flat::Vec<Shape, 4>>(mode, bytes),
    }
});
