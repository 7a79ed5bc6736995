//! The shared-memory machinery every protocol of this crate is built from, once: deadlines
//! ([`deadline`]), the clock of a spin ([`clock`]), the checked SPSC index ring ([`ring`]),
//! the park/wake handshake on a futex word ([`park`]), the segment header of each protocol
//! ([`header`]) and the cooperative yield of the futures that spin ([`coop`]). The channel
//! uses all three; the RPC layer uses the deadlines, the ring for its request ring (server
//! side) and push ring, and `park::wait_announced` for a call waiting on its slot's state
//! word and a subscription reader on the client bell.

pub(crate) mod clock;
pub(crate) mod coop;
pub(crate) mod deadline;
pub(crate) mod header;
pub(crate) mod park;
pub(crate) mod ring;
