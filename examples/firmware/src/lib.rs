//! A trussed-style firmware app: an app talks to a crypto service through a static
//! request/response slot, the service's side run from an interrupt handler (or the main
//! loop). The service is one `#[courier::service(no_std)]` trait; no heap, no OS, no
//! allocation. CI builds this crate for `thumbv7em-none-eabihf` (Cortex-M4F).
//!
//! What trussed apps write by hand today (a `Request`/`Reply` enum pair, a `syscall!` macro
//! that fills the slot, and a dispatcher matching the request) is generated from the trait.
#![no_std]

use core::sync::atomic::{AtomicU32, Ordering};

/// Why the service refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoError {
    /// No key in that slot.
    NoKey,
}

/// The crypto service of the app.
#[courier::service(no_std)]
pub trait Crypto {
    /// A 32-bit tag of `data` under key `key` (a toy MAC: this is an example of the plumbing).
    fn tag(&self, key: u8, data: [u8; 16]) -> Result<u32, CryptoError>;
    /// Stores a key (one-way: acknowledged when stored).
    fn store_key(&self, slot: u8, key: u32);
    /// How many requests the service answered.
    fn served(&self) -> u32;
}

/// The service: four key slots.
pub struct Keys {
    slots: [AtomicU32; 4],
    served: AtomicU32,
}

impl Keys {
    /// No keys yet.
    pub const fn new() -> Keys {
        Keys {
            slots: [
                AtomicU32::new(0),
                AtomicU32::new(0),
                AtomicU32::new(0),
                AtomicU32::new(0),
            ],
            served: AtomicU32::new(0),
        }
    }
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new()
    }
}

impl Crypto for Keys {
    fn tag(&self, key: u8, data: [u8; 16]) -> Result<u32, CryptoError> {
        self.served.fetch_add(1, Ordering::Relaxed);
        let k = self
            .slots
            .get(usize::from(key))
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&k| k != 0)
            .ok_or(CryptoError::NoKey)?;
        Ok(data.iter().fold(k, |h, &b| h.rotate_left(5) ^ u32::from(b)))
    }
    fn store_key(&self, slot: u8, key: u32) {
        self.served.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = self.slots.get(usize::from(slot)) {
            s.store(key, Ordering::Relaxed);
        }
    }
    fn served(&self) -> u32 {
        self.served.load(Ordering::Relaxed)
    }
}

/// The slot between the app and the service, in a `static`.
pub static SLOT: CryptoChannel = CryptoChannel::new();
/// The service's state.
pub static KEYS: Keys = Keys::new();

/// The service's side: answers the pending request (from the slot's interrupt, say).
pub fn on_interrupt(server: &mut CryptoServer<'static>) -> bool {
    server.poll(&KEYS)
}

/// The app's side: stores a key, then tags a block with it. `wait` is what the core does
/// while the service works (a `wfi`, or a call into the service on a single-core build).
pub fn app(client: &mut CryptoClient<'static>) -> Result<u32, courier::Error<CryptoError>> {
    client
        .store_key(1, 0x1234_5678)
        .map_err(|e| e.map_app(|never| match never {}))?;
    client.tag(1, *b"sixteen bytes!!!")
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn the_app_gets_its_tag_from_the_service() {
        let (requester, responder) = SLOT.split().unwrap();
        let stop = std::sync::Arc::new(core::sync::atomic::AtomicBool::new(false));
        let serving = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut server = CryptoServer::new(responder);
                while !stop.load(Ordering::SeqCst) {
                    if !on_interrupt(&mut server) {
                        std::thread::yield_now();
                    }
                }
            })
        };
        let mut client = CryptoClient::new(requester, std::thread::yield_now);
        let tag = app(&mut client).unwrap();
        assert_eq!(tag, Keys::new().tag_with(0x1234_5678, *b"sixteen bytes!!!"));
        assert_eq!(
            client.tag(2, [0; 16]),
            Err(courier::Error::App(CryptoError::NoKey))
        );
        assert_eq!(client.served(), Ok(3));
        stop.store(true, Ordering::SeqCst);
        serving.join().unwrap();
    }

    impl Keys {
        /// The tag the service computes, for the test's expectation.
        fn tag_with(&self, k: u32, data: [u8; 16]) -> u32 {
            data.iter().fold(k, |h, &b| h.rotate_left(5) ^ u32::from(b))
        }
    }
}
