//! Round trips over a [`ShmChannel`](courier_shm::ShmChannel) between two processes.
//!
//! ```text
//! cargo run --release -p courier-shm --example channel_ping -- --server &
//! cargo run --release -p courier-shm --example channel_ping -- --client [--spin] [--size N] [--count N]
//! ```
//!
//! The server echoes every message back; the client sends `--count` messages of `--size` bytes
//! (written and read in full), one at a time, and prints the median and 99th percentile of the
//! round trip. `--spin` waits by busy spinning instead of spin-then-futex.

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use courier_shm::{ShmChannel, ShmConfig, ShmError, WaitStrategy};
    use std::time::{Duration, Instant};

    const NAME: &str = "channel-ping";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        match args.iter().position(|a| a == f) {
            Some(i) => Ok(args.get(i + 1).ok_or("missing value")?.parse()?),
            None => Ok(default),
        }
    };
    let size = value("--size", 8)?;
    let count = value("--count", 100_000)?;
    let wait = if flag("--spin") {
        WaitStrategy::BusySpin
    } else {
        WaitStrategy::Adaptive
    };
    let config = ShmConfig::new().block_size(size.max(8)).block_count(4);

    if flag("--server") {
        let ch = ShmChannel::listen(NAME, config, Duration::from_secs(60))?;
        println!("client pid {} connected", ch.peer().pid);
        loop {
            let msg = match ch.recv_with(wait) {
                Ok(m) => m,
                Err(ShmError::PeerDead) => break,
                Err(e) => return Err(e.into()),
            };
            let mut reply = ch.loan()?;
            let n = msg.len();
            // Block to block, in shared memory: no private copy in between.
            reply
                .slice_mut(..n)
                .ok_or("message longer than a block")?
                .copy_from_view(&msg);
            drop(msg);
            reply.publish(n)?;
        }
        println!("client gone");
    } else if flag("--client") {
        let ch = ShmChannel::connect(NAME, config, Duration::from_secs(10))?;
        let payload = vec![0xa5u8; size];
        let mut times = Vec::with_capacity(count);
        let mut got = vec![0u8; size];
        for i in 0..count + count / 10 {
            let start = Instant::now();
            ch.send(&payload)?;
            let reply = ch.recv_with(wait)?;
            // Copied out in one memcpy, then read: the peer could change the block meanwhile.
            let got = got
                .get_mut(..reply.len())
                .ok_or("reply longer than the request")?;
            reply.copy_to_slice(got);
            let sum = got.iter().fold(0u8, |a, &b| a.wrapping_add(b));
            std::hint::black_box(sum);
            drop(reply);
            // The first tenth warms up.
            if i >= count / 10 {
                times.push(start.elapsed());
            }
        }
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        println!(
            "{count} round trips of {size} B ({}): median {:?}, p99 {:?}",
            if flag("--spin") {
                "busy spin"
            } else {
                "adaptive"
            },
            at(0.5),
            at(0.99)
        );
    } else {
        eprintln!("usage: channel_ping --server | --client [--spin] [--size N] [--count N]");
        std::process::exit(2);
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("courier::shm is Linux only");
}
