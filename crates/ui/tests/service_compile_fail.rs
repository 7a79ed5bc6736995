//! Must-not-compile cases for `#[courier::service]` (trybuild, expected messages in
//! `tests/ui/service/*.stderr`): a non-flat argument (the error names `IpcSafe` and what is
//! flat), `&mut self`, a reference argument, a lend of something other than bytes, a one-way
//! lend, a generic method, a `#[deferred]` method without its `Reply` or with a lend, a
//! `#[scalar]` method with a float, a lend in a `no_std` service.

#[test]
fn service_compile_fail() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/service/*.rs");
}
