//! A server thread and a client thread exchange numbers; prints the round-trip latency.
//!
//! `cargo run --release -p courier-local --example ping_pong [calls]`

use courier_local::channel;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calls: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200_000);
    let (server, client) = channel::<u64, u64, ()>();
    let server_thread = std::thread::spawn(move || {
        while let Ok((n, ctx)) = server.wait() {
            let _ = ctx.reply(n + 1);
        }
    });
    let mut samples = Vec::with_capacity(calls as usize);
    for i in 0..calls {
        let start = Instant::now();
        let reply = client.req(i)?;
        samples.push(start.elapsed());
        assert_eq!(reply, i + 1);
    }
    drop(client);
    server_thread.join().expect("server thread panicked");
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{calls} round trips: median {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}
