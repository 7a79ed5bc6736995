//! What a typed lend costs beside the same lend of bytes, between two processes:
//! `cargo run --release -p courier-shm --example typed_lend` starts both (the client re-runs
//! this binary as the server) and prints the median round trip of
//! - `lend_box_mut` of a `ShmBox<T>`, the server changing it with `update_lent` (the value's
//!   signature checked, its bytes copied out, checked, changed and written back), and
//! - `lend_mut` of a `ShmBuf` of the same size, the server changing the same bytes in place
//!   with `write_at` (no type, no check),
//!
//! for a 16-byte value and a 4 KiB one, in interleaved batches, with their ratio.

#[cfg(target_os = "linux")]
use courier_derive::Ipc;

/// flatipc's example, grown to 16 bytes.
#[cfg(target_os = "linux")]
#[derive(Ipc, Clone, Copy)]
#[ipc(crate = "courier_core::flat")]
#[repr(C)]
struct Small {
    inner: u32,
    flags: u32,
    stamp: u64,
}

/// A page of readings.
#[cfg(target_os = "linux")]
#[derive(Ipc, Clone, Copy)]
#[ipc(crate = "courier_core::flat")]
#[repr(C)]
struct Page4k {
    count: u64,
    readings: [u64; 511],
}

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use courier_shm::{Client, Incoming, Server, ServerConfig, ShmBox, ShmBuf};
    use std::time::{Duration, Instant};

    // Requests: which row the call belongs to.
    const SMALL_TYPED: u64 = 1;
    const SMALL_BYTES: u64 = 2;
    const PAGE_TYPED: u64 = 3;
    const PAGE_BYTES: u64 = 4;

    let name = format!("typed-lend-{}", std::process::id());
    if let Some(name) = std::env::args().nth(1) {
        let server: Server<u64, (), ()> = Server::bind(&name, ServerConfig::new())?;
        println!("ready");
        loop {
            let (row, mut ctx) = match server.wait_timeout(Duration::from_secs(5)) {
                Ok(Incoming::Call(row, ctx)) => (row, ctx),
                Ok(_) => continue,
                Err(_) => return Ok(()),
            };
            // Each row increments the first counter of the value; a lend with a `()` reply is
            // answered by dropping its context.
            match row {
                SMALL_TYPED => {
                    ctx.update_lent(|v: &mut Small| v.inner += 1);
                }
                PAGE_TYPED => {
                    ctx.update_lent(|v: &mut Page4k| v.count += 1);
                }
                SMALL_BYTES | PAGE_BYTES => {
                    if let Some(mut lent) = ctx.lent_mut() {
                        let mut word = [0u8; 4];
                        lent.read_at(0, &mut word)?;
                        let next = u32::from_ne_bytes(word).wrapping_add(1);
                        lent.write_at(0, &next.to_ne_bytes())?;
                    }
                }
                _ => {}
            }
        }
    }
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg(&name)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let client: Client<u64, (), ()> = Client::connect(&name, Duration::from_secs(10))?;
    let mut small = ShmBox::new(Small {
        inner: 0,
        flags: 0,
        stamp: 0,
    })?;
    let mut small_bytes = ShmBuf::new(std::mem::size_of::<Small>())?;
    let mut page = ShmBox::new(Page4k {
        count: 0,
        readings: [0; 511],
    })?;
    let mut page_bytes = ShmBuf::new(std::mem::size_of::<Page4k>())?;

    const BATCHES: usize = 20;
    const PER_BATCH: usize = 500;
    let mut times: [Vec<Duration>; 4] = Default::default();
    for _ in 0..BATCHES {
        for (row, t) in times.iter_mut().enumerate() {
            for _ in 0..PER_BATCH {
                let start = Instant::now();
                match row as u64 + 1 {
                    SMALL_TYPED => client.lend_box_mut(SMALL_TYPED, &mut small)?,
                    SMALL_BYTES => client.lend_mut(SMALL_BYTES, &mut small_bytes)?,
                    PAGE_TYPED => client.lend_box_mut(PAGE_TYPED, &mut page)?,
                    _ => client.lend_mut(PAGE_BYTES, &mut page_bytes)?,
                }
                t.push(start.elapsed());
            }
        }
    }
    // Every call was served: the counters went up once per call.
    let calls = (BATCHES * PER_BATCH) as u64;
    assert_eq!(u64::from(small.get()?.inner), calls);
    assert_eq!(page.get()?.count, calls);
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let [a, b, c, d] = &mut times;
    let (st, sb, pt, pb) = (median(a), median(b), median(c), median(d));
    println!("median round trip, {calls} calls per row, two processes:");
    println!(
        "  16 B   lend_box_mut + update_lent {st:>10.2?}   lend_mut + write_at {sb:>10.2?}   typed/bytes {:.2}",
        st.as_secs_f64() / sb.as_secs_f64()
    );
    println!(
        "  4 KiB  lend_box_mut + update_lent {pt:>10.2?}   lend_mut + write_at {pb:>10.2?}   typed/bytes {:.2}",
        pt.as_secs_f64() / pb.as_secs_f64()
    );
    drop(client);
    let _ = child.wait();
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("courier-shm is Linux only");
}
