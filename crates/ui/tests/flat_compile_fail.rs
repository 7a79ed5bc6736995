//! Must-not-compile cases for `#[derive(Ipc)]` (trybuild, with the expected messages in
//! `tests/ui/flat/*.stderr`): raw pointers, references, `Box`, std `String`/`Vec`/`Option`,
//! a bounded `Vec` of pointers, a generic instantiated with a reference, a missing `repr(C)`,
//! `repr(packed)` and unions. Also one must-compile-and-run case: a downstream crate that depends on `courier` alone uses
//! the derive on structs, enums and generics.

#[test]
fn flat_compile_fail() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/flat/*.rs");
    t.pass("tests/ui/flat-pass/*.rs");
}
