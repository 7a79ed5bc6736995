//! courier::net's frames, as a hostile network peer sends them to a bridge (requests) or to a
//! client (answers and pushes): `courier_net::frame`, compiled here from its source file so
//! that the harness does not build zenoh with sanitizers (the module depends on nothing but
//! `thiserror`).
//!
//! Invariants: decoding never panics; a frame that decodes re-encodes to exactly the same
//! bytes (nothing is skipped, guessed or defaulted), and its body and lent bytes lie inside
//! the input.
#![no_main]

#[allow(dead_code, unreachable_pub)]
#[path = "../../crates/net/src/frame.rs"]
mod frame;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rq) = frame::Request::decode(data) {
        assert_eq!(rq.encode(), data);
        assert!(rq.body.len() + rq.lent.len() + frame::REQUEST_HEADER == data.len());
    }
    if let Ok(a) = frame::Answer::decode(data) {
        assert_eq!(a.encode(), data);
        assert!(a.body.len() + a.lent.len() + frame::ANSWER_HEADER == data.len());
    }
});
