//! courier's compile-fail cases (and one downstream crate that must compile), run by
//! [trybuild](https://docs.rs/trybuild) from `tests/`: `#[derive(Ipc)]` (`tests/ui/flat`),
//! `#[derive(Opcode)]` (`tests/ui/opcode`), `#[courier::service]` (`tests/ui/service`) and
//! courier::shm's views (`tests/ui/shm`). The crate itself is empty: it exists so that
//! trybuild builds the cases against `courier` alone. `cargo test -p courier-ui-tests` runs
//! them; `TRYBUILD=overwrite` rewrites the expected messages after a deliberate change.
#![no_std]
