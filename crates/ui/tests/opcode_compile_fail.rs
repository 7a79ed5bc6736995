//! Must-not-compile cases for `#[derive(Opcode)]` (trybuild, with the expected messages in
//! `tests/ui/opcode/*.stderr`): a variant with fields, a type that is not an enum, and a
//! discriminant wider than 32 bits. What the derive accepts is tested in courier's
//! `tests/opcode.rs`.

#[test]
fn opcode_compile_fail() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/opcode/*.rs");
}
