// scratch: courier::shm parked round trips between two processes, for perf
use courier::shm::{Client, ConnectConfig, Incoming, Server, ServerConfig};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() > 2 && args[1] == "server" {
        let server = Server::<u64, u64, ()>::bind(
            &args[2],
            if std::env::var("SPIN").is_ok() {
                ServerConfig::new()
            } else {
                ServerConfig::new().spin(Duration::ZERO)
            },
        )
        .unwrap();
        println!("ready");
        loop {
            match server.wait_timeout(Duration::from_secs(5)) {
                Ok(Incoming::Call(x, ctx)) => {
                    let _ = ctx.reply(x + 1);
                    if x == u64::MAX - 1 {
                        return;
                    }
                }
                _ => return,
            }
        }
    }
    let secs: u64 = args.get(1).map_or(5, |s| s.parse().unwrap());
    let name = format!("parked-{}", std::process::id());
    let mut child = Command::new(&args[0])
        .arg("server")
        .arg(&name)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let client = Client::<u64, u64, ()>::connect_with(
        &name,
        &if std::env::var("SPIN").is_ok() {
            ConnectConfig::new()
        } else {
            ConnectConfig::new().spin(Duration::ZERO)
        },
        Duration::from_secs(5),
    )
    .unwrap();
    let s = Instant::now();
    let mut n = 0u64;
    while s.elapsed() < Duration::from_secs(secs) {
        for i in 0..1000u64 {
            client.req(i).unwrap();
        }
        n += 1000;
    }
    println!(
        "{:.2} us/call {n}",
        s.elapsed().as_nanos() as f64 / n as f64 / 1000.0
    );
    let _ = client.req(u64::MAX - 1);
    child.wait().unwrap();
}
