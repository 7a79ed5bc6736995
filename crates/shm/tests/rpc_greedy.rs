//! A greedy client against a server with the default descriptor limit, across real
//! processes (hardening finding 4): the server (a child, `RLIMIT_NOFILE` 1,024) serves every
//! call; a greedy client process lends 3,000 distinct buffers and keeps them all; meanwhile
//! another client (this test process) must still connect, call and lend within a second each,
//! and the idle server must use no CPU.
//!
//! Every wait has a deadline; peers report on stdout and the test waits for those lines.
#![cfg(target_os = "linux")]

mod support;

use courier_shm::{Client, Error, Incoming, Server, ServerConfig, ShmBuf};
use std::time::{Duration, Instant};
use support::*;

type Srv = Server<u64, u64, u32>;
type Cli = Client<u64, u64, u32>;

const BUFFERS: usize = 3000;
const FAST: Duration = Duration::from_secs(1);

#[test]
fn peer_main() {
    let Some((role, name)) = peer_role() else {
        return;
    };
    match role.as_str() {
        // The server, with the descriptor limit of a default shell.
        "server" => {
            let lim = rustix::process::Rlimit {
                current: Some(1024),
                maximum: Some(1024),
            };
            rustix::process::setrlimit(rustix::process::Resource::Nofile, lim).unwrap();
            let s = Srv::bind(&name, ServerConfig::new()).unwrap();
            say("bound");
            loop {
                match s.wait() {
                    Ok(Incoming::Call(x, mut ctx)) => {
                        let n = ctx.lent().map_or(0, |v| v.len() as u64);
                        if let Some(mut v) = ctx.lent_mut() {
                            v.fill(x as u8);
                        }
                        let _ = ctx.reply(x + n);
                    }
                    Ok(_) => {}
                    Err(e) => panic!("wait: {e}"),
                }
            }
        }
        // Lends BUFFERS distinct buffers, keeps them all, reports how each lend went.
        "greedy" => {
            let c = Cli::connect(&name, DEADLINE).unwrap();
            let mut kept = Vec::with_capacity(BUFFERS);
            let (mut ok, mut limited, mut other) = (0, 0, Vec::new());
            for i in 0..BUFFERS {
                let mut buf = ShmBuf::new(4096).unwrap();
                match c.lend_timeout(i as u64, &mut buf, DEADLINE) {
                    Ok(_) => ok += 1,
                    Err(Error::LimitReached) => limited += 1,
                    Err(e) => other.push(format!("{e:?}")),
                }
                kept.push(buf);
            }
            say(&format!("lent ok {ok} limited {limited} other {other:?}"));
            // A limit refuses only lends: calls still work.
            say(&format!("call {:?}", c.req_timeout(5, DEADLINE)));
            // Keep every buffer until told.
            let _ = read_stdin_line();
            drop(kept);
        }
        _ => panic!("unknown role {role}"),
    }
}

#[test]
fn a_greedy_client_cannot_starve_the_others() {
    let _g = serial();
    let dir = TestDir::new("greedy");
    let name = unique("greedy");
    let srv = spawn("server", &dir, &name, None);
    assert_eq!(srv.line(), "bound");
    std::env::set_var("COURIER_RUNTIME_DIR", &dir.rt);

    let mut greedy = spawn("greedy", &dir, &name, None);
    let report = greedy.line();
    // The default cap is 256 buffers per client: the rest are refused with a clear error.
    assert_eq!(report, "lent ok 256 limited 2744 other []", "{report}");
    assert_eq!(greedy.line(), "call Ok(5)");

    // Another client, while the greedy one keeps its buffers.
    let t = Instant::now();
    let c = Cli::connect(&name, FAST).expect("connect while a greedy client holds buffers");
    assert_eq!(c.req_timeout(41, FAST), Ok(41));
    let mut buf = ShmBuf::new(1 << 20).unwrap();
    assert_eq!(c.lend_mut_timeout(7, &mut buf, FAST), Ok(7 + (1 << 20)));
    assert_eq!(buf.view().get(0), Some(7));
    assert!(
        t.elapsed() < FAST * 3,
        "connect, call and lend took {:?}",
        t.elapsed()
    );

    // The idle server uses no CPU (one tick allowed for the measurement's edges).
    wait_until_asleep(srv.pid() as u32);
    let before = cpu_ticks(srv.pid() as u32);
    std::thread::sleep(Duration::from_millis(300));
    let used = cpu_ticks(srv.pid() as u32) - before;
    assert!(used <= 1, "the idle server used {used} ticks in 300 ms");

    greedy.tell("done");
}
