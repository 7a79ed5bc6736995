//! The shared-memory machinery every protocol of this crate is built from, once: deadlines
//! ([`deadline`]), the checked SPSC index ring ([`ring`]) and the park/wake handshake on a
//! futex word ([`park`]). The channel uses all three; the RPC layer's rings and waits have
//! the same shapes.

pub(crate) mod deadline;
pub(crate) mod park;
pub(crate) mod ring;
