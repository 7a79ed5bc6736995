//! A server process and a client process: `cargo run --release -p courier-shm --example
//! rpc_ping` starts both (the client re-runs this binary as the server) and prints the
//! median round trip of a small `req`, an `areq` and a 16 MiB `lend_mut` (whose reply is the
//! time the server spent filling the buffer, so the transport's share shows).

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use courier_shm::{Client, Incoming, Server, ServerConfig, ShmBuf};
    use std::time::{Duration, Instant};

    let name = format!("rpc-ping-{}", std::process::id());
    if let Some(name) = std::env::args().nth(1) {
        // The server: echo + 1, fill lends, until the client goes (5 s without a call).
        let server: Server<u64, u64, ()> = Server::bind(&name, ServerConfig::new())?;
        println!("ready");
        loop {
            match server.wait_timeout(Duration::from_secs(5)) {
                Ok(Incoming::Call(n, mut ctx)) => {
                    // A lend: fill it and answer with the nanoseconds that took.
                    if let Some(mut buf) = ctx.lent_mut() {
                        let t = Instant::now();
                        buf.fill(n as u8);
                        let _ = ctx.reply(t.elapsed().as_nanos() as u64);
                        continue;
                    }
                    let _ = ctx.reply(n + 1);
                }
                Ok(_) => {}
                Err(_) => return Ok(()),
            }
        }
    }
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg(&name)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let client: Client<u64, u64, ()> = Client::connect(&name, Duration::from_secs(10))?;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut small = Vec::new();
    for i in 0..20_000u64 {
        let t = Instant::now();
        assert_eq!(client.req(i), Ok(i + 1));
        small.push(t.elapsed());
    }
    println!("req round trip, median: {:?}", median(small));
    let mut asynchronous = Vec::new();
    for i in 0..5_000u64 {
        let t = Instant::now();
        assert_eq!(futures::executor::block_on(client.areq(i)), Ok(i + 1));
        asynchronous.push(t.elapsed());
    }
    println!(
        "areq round trip (futures block_on), median: {:?}",
        median(asynchronous)
    );
    let mut buf = ShmBuf::new(16 << 20)?;
    let mut big = Vec::new();
    let mut w = Vec::new();
    for i in 0..200u64 {
        let t = Instant::now();
        let ns = client.lend_mut(i, &mut buf).expect("lend_mut");
        big.push(t.elapsed());
        w.push(Duration::from_nanos(ns));
        assert_eq!(buf.view().get(buf.len() - 1), Some(i as u8));
    }
    let (big, w) = (median(big), median(w));
    println!(
        "lend_mut 16 MiB round trip, median: {big:?} (the server's fill: {w:?}; the rest: {:?})",
        big.saturating_sub(w)
    );
    drop(client);
    child.kill()?;
    child.wait()?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() {}
