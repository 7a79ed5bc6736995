//! A real `courier_shm::Server` against a real `Client` whose connection segment the input
//! scribbles over (what the client writes: ring, slot records, requests) between honest calls
//! of every kind. See `src/rpc.rs` for the operations and README.md for the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    courier_fuzz::rpc::run(data, courier_fuzz::rpc::Side::ClientWrites);
});
