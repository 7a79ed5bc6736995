//! A sensor service on host A, called from host B over zenoh (`courier::net`).
//!
//! Host A runs an ordinary courier::shm service and exposes it; host B calls it with the
//! same verbs and errors as a local client. Over loopback, in one command (this program
//! re-executes itself as host A):
//!
//! ```text
//! cargo run -p courier --features net --example net_sensor
//! ```
//!
//! On two machines:
//!
//! ```text
//! hostA$ net_sensor serve tcp/0.0.0.0:7447
//! hostB$ net_sensor call tcp/<host A's address>:7447
//! ```
//!
//! `courier expose sensor --listen tcp/0.0.0.0:7447` exposes a service that is already
//! running, without a line of code.

use courier::net::zenoh::{self, Wait};
use courier::net::{expose_with, peer_config, Client, ExposeConfig};
use courier::shm::{Incoming, Server, ServerConfig};
use courier::Error;
use std::io::BufRead;
use std::time::Duration;

/// A reading in millidegrees Celsius of sensor `n` (0..4); 9 is the error "no such sensor".
type Sensor = Client<u8, i32, u8>;

/// Host A: the service (a thread serving courier::shm) and the bridge, until stdin closes.
fn serve(listen: &str) {
    let server: Server<u8, i32, u8> = Server::bind("sensor", ServerConfig::new()).unwrap();
    std::thread::spawn(move || {
        while let Ok(m) = server.wait() {
            match m {
                Incoming::Call(n, ctx) if n < 4 => drop(ctx.reply(21_000 + i32::from(n) * 250)),
                Incoming::Call(_, ctx) => drop(ctx.fail(9)),
                // A subscription: three readings of the sensor, a little apart.
                Incoming::Subscribe(n, notifier) => {
                    std::thread::spawn(move || {
                        for k in 0..3 {
                            let _ = notifier.push(21_000 + i32::from(n) * 250 + k);
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    });
                }
                Incoming::Scalar(_) => {}
            }
        }
    });
    let session = zenoh::open(peer_config(&[listen.to_owned()], &[]).unwrap())
        .wait()
        .unwrap();
    let config = ExposeConfig::new().namespace("host-a");
    let exposed = expose_with(&session, "sensor", &config).unwrap();
    println!("host A: sensor exposed at {}", exposed.key());
    // Serves until whoever started us closes our stdin.
    for _ in std::io::stdin().lock().lines() {}
}

/// Host B: calls the sensor service of host A.
fn call(connect: &str) {
    let session = zenoh::open(peer_config(&[], &[connect.to_owned()]).unwrap())
        .wait()
        .unwrap();
    let sensor: Sensor = Client::connect(&session, "host-a/sensor", Duration::from_secs(10))
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    for n in 0..4 {
        let t = std::time::Instant::now();
        let reading = sensor.req(n).unwrap();
        println!("host B: sensor {n} reads {reading} m°C ({:?})", t.elapsed());
    }
    assert_eq!(sensor.req(7), Err(Error::App(9)));
    println!("host B: sensor 7 -> {:?} (no such sensor)", sensor.req(7));
    let readings = sensor.subscribe(2).unwrap();
    for _ in 0..3 {
        println!(
            "host B: pushed {}",
            readings
                .recv_timeout::<i32>(Duration::from_secs(2))
                .unwrap()
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => serve(args.get(2).map_or("tcp/0.0.0.0:7447", String::as_str)),
        Some("call") => call(args.get(2).map_or("tcp/127.0.0.1:7447", String::as_str)),
        _ => {
            // Both hosts over loopback: host A is this program re-executed.
            let dir = std::env::temp_dir().join(format!("net-sensor-{}", std::process::id()));
            std::env::set_var("COURIER_RUNTIME_DIR", &dir);
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let endpoint = format!("tcp/127.0.0.1:{port}");
            let mut host_a = std::process::Command::new(&args[0])
                .args(["serve", &endpoint])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut said = String::new();
            std::io::BufReader::new(host_a.stdout.take().unwrap())
                .read_line(&mut said)
                .unwrap();
            print!("{said}");
            call(&endpoint);
            drop(host_a.stdin.take());
            host_a.wait().unwrap();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
