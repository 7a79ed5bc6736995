//! The `courier` command.
fn main() {}
