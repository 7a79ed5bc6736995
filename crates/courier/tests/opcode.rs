//! `#[derive(courier::Opcode)]`: every variant goes to its discriminant and back, an opcode
//! no variant has is an `UnknownOpcode` holding it, explicit and implicit discriminants and
//! any `repr` work, and the enum need not be `Copy` (as num_derive's enums in Xous servers
//! are not). Refused inputs are the trybuild cases of `crates/ui` (`tests/ui/opcode`).

use courier::opcode::{Opcode, UnknownOpcode};

/// A Xous-style opcode enum: implicit discriminants from 0, then an explicit jump.
#[derive(courier::Opcode, Debug, PartialEq)]
enum Api {
    Read,
    Write,
    Erase = 10,
    Status,
    Quit = 0x7FFF_FFFF,
}

#[derive(courier::Opcode, Clone, Copy, Debug, PartialEq)]
#[repr(u8)]
enum Small {
    A = 200,
    B,
}

/// The whole `u32` range.
#[derive(courier::Opcode, Clone, Copy, Debug, PartialEq)]
#[repr(u32)]
enum Wide {
    Zero = 0,
    Max = 0xFFFF_FFFF,
}

#[test]
fn every_variant_round_trips() {
    let all = [
        (Api::Read, 0),
        (Api::Write, 1),
        (Api::Erase, 10),
        (Api::Status, 11),
        (Api::Quit, 0x7FFF_FFFF),
    ];
    for (op, n) in all {
        assert_eq!(Api::from_u32(n).as_ref(), Some(&op));
        assert_eq!(Api::try_from(n).as_ref(), Ok(&op));
        assert_eq!(u32::from(op), n);
    }
    assert_eq!(Small::B.to_u32(), 201);
    assert_eq!(Small::decode(200), Ok(Small::A));
    assert_eq!(Wide::decode(u32::MAX), Ok(Wide::Max));
    assert_eq!(Wide::Zero.to_u32(), 0);
}

#[test]
fn an_opcode_no_variant_has_is_reported_with_its_value() {
    for n in [2, 9, 12, 0x7FFF_FFFE, u32::MAX] {
        assert_eq!(Api::try_from(n), Err(UnknownOpcode(n)));
        assert_eq!(Api::from_u32(n), None);
    }
    assert_eq!(Small::decode(0), Err(UnknownOpcode(0)));
    assert_eq!(UnknownOpcode(7).to_string(), "unknown opcode 7");
}
