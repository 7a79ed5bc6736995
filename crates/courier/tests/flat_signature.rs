//! Layout signatures of `#[derive(Ipc)]` types. Cases:
//! - unchanged by doc comments, visibility, other attributes and derives, trailing commas,
//!   formatting, field names, the type's name, and type aliases;
//! - changed by a nested field's type (even of the same size), a nested field's size, the order
//!   of fields at any depth, an enum discriminant at any depth, a bounded capacity, and the repr;
//! - always a full `u64` (the high half is used).
// Visibility is one of the things under test, and the types exist only for their signatures.
#![allow(unreachable_pub, dead_code)]

use courier::flat::IpcSafe;
use courier::Ipc;

mod plain {
    use super::*;
    #[derive(Ipc)]
    #[repr(C)]
    pub struct TrngBuf {
        pub data: [u32; 1020],
        pub len: u16,
    }
}

mod decorated {
    use super::*;
    type U16 = u16;
    /// Mirrored from `plain`, with docs, another visibility, other attributes and derives.
    #[allow(dead_code)]
    #[derive(Clone, Ipc, Copy)]
    #[repr(C)]
    pub(crate) struct TrngBuffer {
        /// The random words.
        data: [u32; 1020],
        #[allow(unused)]
        length: U16,
    }
}

#[test]
fn unaffected_by_docs_visibility_attributes_formatting_and_names() {
    assert_eq!(
        plain::TrngBuf::signature(),
        decorated::TrngBuffer::signature()
    );
}

#[test]
fn signature_uses_all_64_bits() {
    // Not a proof, but a truncated 32-bit signature would have a zero high half for all of these.
    let sigs = [
        plain::TrngBuf::signature(),
        <u8 as IpcSafe>::SIGNATURE,
        <[u16; 3] as IpcSafe>::SIGNATURE,
    ];
    assert!(sigs.iter().any(|s| s >> 32 != 0));
}

/// Three levels deep: `Outer { mid: Mid { leaf: Leaf } }`, each variant defined in its own module.
macro_rules! nested {
    ($name:ident, { $($leaf:tt)* }, { $($mid:tt)* }, { $($outer:tt)* }) => {
        mod $name {
            use super::*;
            #[derive(Ipc)]
            #[repr(C)]
            pub struct Leaf { $($leaf)* }
            #[derive(Ipc)]
            #[repr(C)]
            pub struct Mid { $($mid)* }
            #[derive(Ipc)]
            #[repr(C)]
            pub struct Outer { $($outer)* }
        }
    };
}

nested!(base, { a: u32, b: u8 }, { x: u16, leaf: Leaf }, { mid: Mid, z: bool });
nested!(leaf_signed, { a: i32, b: u8 }, { x: u16, leaf: Leaf }, { mid: Mid, z: bool });
nested!(leaf_float, { a: f32, b: u8 }, { x: u16, leaf: Leaf }, { mid: Mid, z: bool });
nested!(leaf_wider, { a: u64, b: [u8; 100] }, { x: u16, leaf: Leaf }, { mid: Mid, z: bool });
nested!(leaf_order, { b: u8, a: u32 }, { x: u16, leaf: Leaf }, { mid: Mid, z: bool });
nested!(mid_order, { a: u32, b: u8 }, { leaf: Leaf, x: u16 }, { mid: Mid, z: bool });
nested!(leaf_bool, { a: u32, b: bool }, { x: u16, leaf: Leaf }, { mid: Mid, z: bool });
nested!(renamed, { aa: u32, bb: u8 }, { xx: u16, leaf2: Leaf }, { mid2: Mid, zz: bool });

#[test]
fn nested_changes_change_the_outer_signature() {
    let base = base::Outer::signature();
    assert_eq!(
        base,
        renamed::Outer::signature(),
        "field names do not matter"
    );
    for (what, other) in [
        (
            "leaf field u32 -> i32 (same size)",
            leaf_signed::Outer::signature(),
        ),
        (
            "leaf field u32 -> f32 (same size)",
            leaf_float::Outer::signature(),
        ),
        ("leaf field resized", leaf_wider::Outer::signature()),
        ("leaf fields reordered", leaf_order::Outer::signature()),
        ("mid fields reordered", mid_order::Outer::signature()),
        ("leaf field u8 -> bool", leaf_bool::Outer::signature()),
    ] {
        assert_ne!(base, other, "{what}");
    }
}

mod disc_a {
    use super::*;
    #[derive(Ipc)]
    #[repr(u8)]
    pub enum E {
        A = 1,
        B(u16),
    }
    #[derive(Ipc)]
    #[repr(C)]
    pub struct Holder {
        pub e: E,
    }
}

mod disc_b {
    use super::*;
    #[derive(Ipc)]
    #[repr(u8)]
    pub enum E {
        A = 2,
        B(u16),
    }
    #[derive(Ipc)]
    #[repr(C)]
    pub struct Holder {
        pub e: E,
    }
}

mod disc_c {
    use super::*;
    #[derive(Ipc)]
    #[repr(u8)]
    pub enum E {
        A = 1,
        B(i16),
    }
    #[derive(Ipc)]
    #[repr(C)]
    pub struct Holder {
        pub e: E,
    }
}

mod disc_d {
    use super::*;
    #[derive(Ipc)]
    #[repr(u16)]
    pub enum E {
        A = 1,
        B(u16),
    }
    #[derive(Ipc)]
    #[repr(C)]
    pub struct Holder {
        pub e: E,
    }
}

#[test]
fn enum_discriminants_payloads_and_tags_change_the_signature() {
    let a = disc_a::Holder::signature();
    assert_ne!(a, disc_b::Holder::signature(), "discriminant");
    assert_ne!(a, disc_c::Holder::signature(), "payload type");
    assert_ne!(a, disc_d::Holder::signature(), "tag width");
}

#[test]
fn capacities_change_the_signature() {
    use courier::flat::{String, Vec};
    assert_ne!(
        <String<8> as IpcSafe>::SIGNATURE,
        <String<9> as IpcSafe>::SIGNATURE
    );
    assert_ne!(
        <Vec<u8, 8> as IpcSafe>::SIGNATURE,
        <Vec<u8, 9> as IpcSafe>::SIGNATURE
    );
    assert_ne!(
        <Vec<u8, 8> as IpcSafe>::SIGNATURE,
        <Vec<i8, 8> as IpcSafe>::SIGNATURE
    );
    assert_ne!(
        <[u8; 8] as IpcSafe>::SIGNATURE,
        <String<4> as IpcSafe>::SIGNATURE
    );
}
