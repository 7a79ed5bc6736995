//! `#[derive(Ipc)]` through the `courier` facade only. Cases:
//! - the seed's README examples: create, deref, convert back, compare through `Deref`;
//! - a server mutating a lent value in place (42 -> 43) and a read-only lend leaving it as is;
//! - structs (named, tuple), `repr(C)` / `repr(u8)` / `repr(u16)` enums with fields and
//!   explicit discriminants, generic and const-generic types, nesting, arrays, `Option`,
//!   `String<N>`, `Vec<T, N>`;
//! - page alignment and padding, zeroed interior padding and page tail;
//! - untrusted bytes: bad bool, char, enum tag, option tag, string length and UTF-8, vector
//!   length, short, misaligned and wrong-signature buffers are typed errors;
//! - `from_slice_mut` in place for padding-free types and as a copy written back (padding
//!   zeroed) for types with padding; `with_slice_mut` in place for both; `to_ipc` as
//!   flatipc spells `into_ipc`; `#[derive(IpcSafe)]` as flatipc's other derive name.

use core::fmt::Write;
use core::mem::{align_of, offset_of, size_of};

use courier::flat::{self, FlatError, IpcSafe, Page};
use courier::Ipc;

/// The seed's `SimpleValue`.
#[derive(Ipc, Debug, PartialEq, Clone, Copy)]
#[repr(C)]
pub struct SimpleValue {
    inner: u32,
}

#[derive(Ipc, Debug, PartialEq)]
#[repr(C)]
struct Value(u32);

/// A page-aligned byte buffer, like the pages a transport maps.
#[repr(C, align(4096))]
struct Buf<const N: usize>([u8; N]);

impl<const N: usize> Buf<N> {
    fn copy_of(bytes: &[u8]) -> Box<Self> {
        let mut buf = Box::new(Buf([0; N]));
        buf.0[..bytes.len()].copy_from_slice(bytes);
        buf
    }
}

#[test]
fn readme_simple_example() {
    let value = SimpleValue { inner: 42 };
    let ipc_value = value.into_ipc();
    assert_eq!(ipc_value.inner, 42);
    assert_eq!(size_of::<IpcSimpleValue>() % 4096, 0);
    assert_eq!(align_of::<IpcSimpleValue>(), 4096);
    let value = SimpleValue::from_ipc(ipc_value);
    assert_eq!(value, SimpleValue { inner: 42 });
    // `IpcFoo::from_ipc` works too.
    assert_eq!(IpcSimpleValue::from_ipc(value.into_ipc()), value);
}

#[test]
fn readme_deref_compare() {
    let x = Value(42).into_ipc();
    let y = Value(42);
    assert_eq!(*x, y);
}

/// The seed's server example: the server mutates the lent value in place.
#[test]
fn readme_server_lend_mut_and_lend() {
    let mut ipc_value = SimpleValue { inner: 42 }.into_ipc();
    let signature = ipc_value.signature();
    let mut message = Buf::<4096>::copy_of(ipc_value.as_bytes());

    // Read-only lend: the server reads, the value is unchanged.
    let seen = IpcSimpleValue::from_slice(&message.0, signature)
        .unwrap()
        .inner;
    assert_eq!(seen, 42);

    // Mutable lend: the server increments in place.
    let mut value = IpcSimpleValue::from_slice_mut(&mut message.0, signature).unwrap();
    value.inner += 1;
    drop(value);
    let back = IpcSimpleValue::from_slice(&message.0, signature).unwrap();
    assert_eq!(back.inner, 43);
    assert_eq!(
        SimpleValue::from_ipc(back.clone()),
        SimpleValue { inner: 43 }
    );
}

#[derive(Ipc, Debug, PartialEq, Clone, Copy)]
#[repr(C)]
struct Inner {
    flag: bool,
    count: u32,
}

#[derive(Ipc, Debug, PartialEq, Clone, Copy)]
#[repr(u8)]
enum Shape {
    Empty,
    Circle { r: u16 } = 5,
    Rect(u8, u32),
}

#[derive(Ipc, Debug, PartialEq, Clone, Copy)]
#[repr(u16)]
enum Tagged {
    A(char),
    B { inner: Inner, on: bool },
}

#[derive(Ipc, Debug, PartialEq, Clone, Copy)]
#[repr(C)]
enum CEnum {
    X,
    Y(i64),
}

#[derive(Ipc, Debug, PartialEq, Clone, Copy)]
#[repr(C)]
struct Generic<T, const N: usize> {
    items: [T; N],
    last: flat::Option<T>,
}

#[derive(Ipc, Debug, PartialEq, Clone, Copy)]
#[repr(C)]
struct TextView {
    title: flat::String<32>,
    inner: Inner,
    shapes: flat::Vec<Shape, 4>,
    tagged: [Tagged; 2],
    pos: flat::Option<Generic<u16, 3>>,
    letter: char,
    ratio: f32,
    c: CEnum,
}

fn text_view() -> TextView {
    let mut shapes = flat::Vec::new();
    shapes.push(Shape::Circle { r: 3 }).unwrap();
    shapes.push(Shape::Rect(1, 2)).unwrap();
    TextView {
        title: flat::String::try_from("hello").unwrap(),
        inner: Inner {
            flag: true,
            count: 7,
        },
        shapes,
        tagged: [
            Tagged::A('λ'),
            Tagged::B {
                inner: Inner {
                    flag: false,
                    count: 1,
                },
                on: true,
            },
        ],
        pos: flat::Option::Some(Generic {
            items: [1, 2, 3],
            last: flat::Option::None,
        }),
        letter: 'x',
        ratio: 0.5,
        c: CEnum::Y(-3),
    }
}

#[test]
fn nested_round_trip_and_mutation_through_deref_mut() {
    let mut ipc = text_view().into_ipc();
    ipc.inner.count += 1;
    write!(ipc.title, ", world").unwrap();
    let sig = ipc.signature();
    assert_eq!(sig, TextView::signature());
    let buf = Buf::<4096>::copy_of(ipc.as_bytes());
    let got = IpcTextView::from_slice(&buf.0, sig).unwrap();
    assert_eq!(got.title, "hello, world");
    assert_eq!(got.inner.count, 8);
    assert_eq!(
        got.shapes.as_slice(),
        &[Shape::Circle { r: 3 }, Shape::Rect(1, 2)]
    );
    assert_eq!(TextView::from_ipc(got.clone()), TextView::from_ipc(ipc));
}

#[test]
fn enum_discriminants_follow_the_source() {
    let mut ipc = Shape::Circle { r: 0x0102 }.into_ipc();
    let bytes = ipc.as_bytes();
    assert_eq!(bytes[0], 5);
    let mut ipc = Shape::Rect(9, 1).into_ipc();
    assert_eq!(ipc.as_bytes()[0], 6);
    // repr(C) enum: a C-int tag (4 bytes here), then the payload union.
    let mut ipc = CEnum::X.into_ipc();
    assert!(ipc.as_bytes().iter().all(|&b| b == 0));
    let mut ipc = CEnum::Y(-1).into_ipc();
    assert_eq!(ipc.as_bytes()[0], 1);
}

#[test]
fn padding_and_tail_are_zeroed() {
    // `Inner` has 3 padding bytes after `flag`.
    const { assert!(<Inner as IpcSafe>::HAS_PADDING) };
    let mut ipc = Inner {
        flag: true,
        count: u32::MAX,
    }
    .into_ipc();
    // Scribble over the padding through the typed view's memory first.
    *ipc = Inner {
        flag: true,
        count: u32::MAX,
    };
    let bytes = ipc.as_bytes();
    assert_eq!(&bytes[..4], &[1, 0, 0, 0]);
    assert_eq!(&bytes[4..8], &u32::MAX.to_ne_bytes());
    assert!(bytes[8..].iter().all(|&b| b == 0));

    // Variant padding: `Rect(u8, u32)` in `repr(u8)` is tag, u8, 2 padding bytes, u32.
    let mut ipc = Shape::Empty.into_ipc();
    assert!(ipc.as_bytes().iter().skip(1).all(|&b| b == 0));

    let mut ipc = text_view().into_ipc();
    let bytes = ipc.as_bytes();
    assert!(bytes[size_of::<TextView>()..].iter().all(|&b| b == 0));
}

#[test]
fn untrusted_bytes_are_checked() {
    let sig = Inner::signature();
    let mut ipc = Inner {
        flag: true,
        count: 1,
    }
    .into_ipc();
    let mut buf = Buf::<8192>::copy_of(ipc.as_bytes());
    assert!(IpcInner::from_slice(&buf.0, sig).is_ok());

    buf.0[offset_of!(Inner, flag)] = 7;
    assert_eq!(
        IpcInner::from_slice(&buf.0, sig).unwrap_err(),
        FlatError::InvalidValue
    );
    buf.0[0] = 1;
    assert_eq!(
        IpcInner::from_slice(&buf.0, sig ^ 1).unwrap_err(),
        FlatError::SignatureMismatch {
            expected: sig,
            found: sig ^ 1
        }
    );
    assert!(matches!(
        IpcInner::from_slice(&buf.0[..100], sig),
        Err(FlatError::TooShort {
            needed: 4096,
            found: 100
        })
    ));
    assert!(matches!(
        IpcInner::from_slice(&buf.0[8..4104], sig),
        Err(FlatError::Misaligned {
            align: 4096,
            offset: 8
        })
    ));

    // Unknown enum tag.
    let mut ipc = Shape::Empty.into_ipc();
    let mut buf = Buf::<4096>::copy_of(ipc.as_bytes());
    buf.0[0] = 4;
    assert_eq!(
        IpcShape::from_slice(&buf.0, Shape::signature()).unwrap_err(),
        FlatError::InvalidValue
    );
    buf.0[0] = 6;
    assert_eq!(
        **IpcShape::from_slice(&buf.0, Shape::signature()).unwrap(),
        Shape::Rect(0, 0)
    );

    // Invalid char inside an enum inside an array inside a struct.
    let tv = text_view();
    let mut ipc = tv.into_ipc();
    let sig = ipc.signature();
    let mut buf = Buf::<4096>::copy_of(ipc.as_bytes());
    assert!(IpcTextView::from_slice(&buf.0, sig).is_ok());
    let char_at = offset_of!(TextView, tagged) + 4; // repr(u16): u16 tag, then the char at 4
    assert_eq!(&buf.0[char_at..char_at + 4], &('λ' as u32).to_ne_bytes());
    buf.0[char_at..char_at + 4].copy_from_slice(&0x11_0000u32.to_ne_bytes());
    assert_eq!(
        IpcTextView::from_slice(&buf.0, sig).unwrap_err(),
        FlatError::InvalidValue
    );
    buf.0[char_at..char_at + 4].copy_from_slice(&('λ' as u32).to_ne_bytes());

    // Hostile string length and bad UTF-8.
    let title = offset_of!(TextView, title);
    buf.0[title..title + 4].copy_from_slice(&33u32.to_ne_bytes());
    assert_eq!(
        IpcTextView::from_slice(&buf.0, sig).unwrap_err(),
        FlatError::StringTooLong {
            len: 33,
            capacity: 32
        }
    );
    buf.0[title..title + 4].copy_from_slice(&5u32.to_ne_bytes());
    buf.0[title + 4] = 0xC3; // a lone lead byte
    assert!(matches!(
        IpcTextView::from_slice(&buf.0, sig).unwrap_err(),
        FlatError::InvalidUtf8 { valid_up_to: 0 }
    ));
    buf.0[title + 4] = b'h';

    // Hostile vector length, then a bad tag in a counted element.
    let shapes = offset_of!(TextView, shapes);
    buf.0[shapes..shapes + 4].copy_from_slice(&5u32.to_ne_bytes());
    assert_eq!(
        IpcTextView::from_slice(&buf.0, sig).unwrap_err(),
        FlatError::VecTooLong {
            len: 5,
            capacity: 4
        }
    );
    buf.0[shapes..shapes + 4].copy_from_slice(&3u32.to_ne_bytes());
    // The third slot is zeroed: tag 0 is `Shape::Empty`, valid.
    assert_eq!(
        IpcTextView::from_slice(&buf.0, sig).unwrap().shapes.len(),
        3
    );
    buf.0[shapes + 4 + 2 * size_of::<Shape>()] = 1;
    assert_eq!(
        IpcTextView::from_slice(&buf.0, sig).unwrap_err(),
        FlatError::InvalidValue
    );
}

#[test]
fn with_slice_mut_keeps_bytes_initialised() {
    let mut ipc = Shape::Rect(1, 2).into_ipc();
    let sig = ipc.signature();
    let mut buf = Buf::<4096>::copy_of(ipc.as_bytes());
    buf.0[2] = 0xAA; // padding inside `Rect`, as a sloppy peer might send
    let old =
        IpcShape::with_slice_mut(&mut buf.0, sig, |s| core::mem::replace(s, Shape::Empty)).unwrap();
    assert_eq!(old, Shape::Rect(1, 2));
    assert!(buf.0[1..size_of::<Shape>()].iter().all(|&b| b == 0));
    assert_eq!(**IpcShape::from_slice(&buf.0, sig).unwrap(), Shape::Empty);
}

#[test]
fn generics_have_distinct_signatures() {
    let a = Generic::<u8, 2>::signature();
    let b = Generic::<u8, 3>::signature();
    let c = Generic::<i8, 2>::signature();
    assert_ne!(a, b);
    assert_ne!(a, c);
    let g = Generic {
        items: [1u8, 2],
        last: flat::Option::Some(3),
    }
    .into_ipc();
    assert_eq!(g.items, [1, 2]);
    let _: IpcGeneric<u8, 2> = g;
}

#[test]
fn page_sizes() {
    #[derive(Ipc)]
    #[repr(C)]
    struct Exact([u8; 4096]);
    #[derive(Ipc)]
    #[repr(C)]
    struct OneMore([u8; 4097]);
    assert_eq!(size_of::<IpcExact>(), 4096);
    assert_eq!(size_of::<IpcOneMore>(), 8192);
    assert_eq!(Page::<Exact>::SIZE, 4096);
}

/// flatipc's field type, marked with its other derive name.
#[derive(courier::IpcSafe, Debug, PartialEq, Clone, Copy)]
#[repr(C)]
struct Reading {
    sensor: u16,
    // two bytes of padding here
    value: u32,
}

#[derive(Ipc, Debug, PartialEq, Clone, Copy)]
#[repr(C)]
struct Report {
    reading: Reading,
    count: u8,
}

/// flatipc's spellings: `to_ipc`, `#[derive(IpcSafe)]`, and `from_slice_mut` on a type with
/// padding (a copy written back on drop, the padding zeroed even after a whole-value write;
/// a forgotten view writes nothing).
#[test]
fn flatipc_spellings_and_from_slice_mut_with_padding() {
    let mut ipc = Report {
        reading: Reading {
            sensor: 7,
            value: 42,
        },
        count: 1,
    }
    .to_ipc();
    let sig = ipc.signature();
    assert_eq!(sig, Report::signature());
    let mut message = Buf::<4096>::copy_of(ipc.as_bytes());
    assert_eq!(message.0[2..4], [0, 0]);

    let mut value = IpcReport::from_slice_mut(&mut message.0, sig).unwrap();
    value.reading.value += 1;
    // A whole-value write, which may leave the padding of the copy uninitialised.
    *value = Report {
        count: value.count + 1,
        ..*value
    };
    drop(value);
    assert_eq!(message.0[2..4], [0, 0], "padding written back zeroed");
    let back = IpcReport::from_slice(&message.0, sig).unwrap();
    assert_eq!(
        back.reading,
        Reading {
            sensor: 7,
            value: 43
        }
    );
    assert_eq!(back.count, 2);

    // Forgotten: nothing is written back.
    let mut value = IpcReport::from_slice_mut(&mut message.0, sig).unwrap();
    value.count = 99;
    core::mem::forget(value);
    assert_eq!(IpcReport::from_slice(&message.0, sig).unwrap().count, 2);
}
