//! `#[courier::service(no_std)]`: the same kind of trait over `courier::interchange` (a static
//! slot, values moved, no heap): a client thread and a server thread that polls, calls with
//! an application error, one-way methods and scalars, in order.

use courier::Error;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Why a key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Only keys below 16.
    OutOfRange,
}

/// A firmware-style register file.
#[courier::service(no_std)]
pub trait Registers {
    /// The value of register `key`.
    fn read(&self, key: u8) -> Result<u32, Refused>;
    /// Sets register `key` (one-way: the server acknowledges when done).
    fn write(&self, key: u8, value: u32);
    /// How many writes were made.
    fn writes(&self) -> u32;
    /// A Xous-style scalar (in firmware, a call whose integers are moved as they are):
    /// registers `a` and `b` added, and whether the sum overflowed.
    #[scalar]
    fn add(&self, a: u8, b: u8) -> (u32, bool);
    /// A one-way scalar: clears register `key`.
    #[scalar]
    fn clear(&self, key: u8);
}

struct File {
    regs: [AtomicU32; 16],
    writes: AtomicU32,
}

impl Registers for File {
    fn read(&self, key: u8) -> Result<u32, Refused> {
        let r = self.regs.get(usize::from(key)).ok_or(Refused::OutOfRange)?;
        Ok(r.load(Ordering::SeqCst))
    }
    fn write(&self, key: u8, value: u32) {
        if let Some(r) = self.regs.get(usize::from(key)) {
            r.store(value, Ordering::SeqCst);
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
    }
    fn writes(&self) -> u32 {
        self.writes.load(Ordering::SeqCst)
    }
    fn add(&self, a: u8, b: u8) -> (u32, bool) {
        let get = |k: u8| self.regs[usize::from(k % 16)].load(Ordering::SeqCst);
        get(a).overflowing_add(get(b))
    }
    fn clear(&self, key: u8) {
        self.regs[usize::from(key % 16)].store(0, Ordering::SeqCst);
    }
}

static SLOT: RegistersChannel = RegistersChannel::new();

#[test]
fn calls_and_one_way_messages_over_a_static_slot() {
    let (requester, responder) = SLOT.split().expect("split once");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut server = RegistersServer::new(responder);
            let file = File {
                regs: Default::default(),
                writes: AtomicU32::new(0),
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut served = 0;
            while !stop.load(Ordering::SeqCst) {
                assert!(Instant::now() < deadline, "the client never finished");
                if server.poll(&file) {
                    served += 1;
                } else {
                    std::thread::yield_now();
                }
            }
            served
        })
    };
    let mut client = RegistersClient::new(requester, std::thread::yield_now);
    assert_eq!(client.read(3), Ok(0));
    client.write(3, 0xdead_beef).unwrap();
    assert_eq!(client.read(3), Ok(0xdead_beef));
    assert_eq!(client.read(16), Err(Error::App(Refused::OutOfRange)));
    for i in 0..100 {
        client.write(i % 16, u32::from(i)).unwrap();
    }
    assert_eq!(client.writes(), Ok(101));
    // Scalars: registers 0 and 1 hold 96 and 97 (the last writes of the loop).
    assert_eq!(client.add(0, 1), Ok((193, false)));
    client.write(2, u32::MAX).unwrap();
    assert_eq!(client.add(2, 1), Ok((96, true)));
    client.clear(2).unwrap();
    assert_eq!(client.read(2), Ok(0));
    stop.store(true, Ordering::SeqCst);
    assert_eq!(server.join().unwrap(), 110);
}
