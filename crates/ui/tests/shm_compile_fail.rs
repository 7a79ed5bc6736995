//! Must-not-compile cases for courier::shm (trybuild, with the expected messages in
//! `tests/ui/shm/*.stderr`): no safe API hands out a Rust reference to bytes another process
//! can write at the same time (hardening findings 3 and 9). A received channel message, a
//! loan, a lendable buffer and a lent buffer on the server's side are views, not `&[u8]` or
//! `&mut [u8]`; the raw slice of a view is `unsafe`. Each case compiled before the views.
#![cfg(target_os = "linux")]

#[test]
fn shm_compile_fail() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/shm/*.rs");
}
