//! Derive macros for courier. Use them through the `courier` facade (`courier::Ipc`).
