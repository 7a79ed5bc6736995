//! A real `courier_shm::Client` against a real `Server` while the input scribbles over what
//! the server writes (ring head, bells, closed flag, slot states and replies, push ring)
//! between and during the client's calls. See `src/rpc.rs` and README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    courier_fuzz::rpc::run(data, courier_fuzz::rpc::Side::ServerWrites);
});
