//! An async client task and an async server task on a tokio runtime; prints the round-trip
//! latency. Also a profiling target for the async path.
//!
//! `cargo run --release -p courier-local --example async_ping_pong [calls]`

use courier_local::channel;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calls: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    let (server, client) = channel::<u64, u64, ()>();
    let server_task = rt.spawn(async move {
        while let Ok((n, ctx)) = server.async_wait().await {
            let _ = ctx.reply(n + 1);
        }
    });
    let mut samples = rt.block_on(rt.spawn(async move {
        let mut samples = Vec::with_capacity(calls as usize);
        for i in 0..calls {
            let start = Instant::now();
            let reply = client.areq(i).await;
            samples.push(start.elapsed());
            assert_eq!(reply, Ok(i + 1));
        }
        samples
    }))?;
    rt.block_on(server_task)?;
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{calls} async round trips: median {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}
