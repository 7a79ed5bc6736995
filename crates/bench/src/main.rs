//! Benchmarks of courier beside its peers.
fn main() {}
