//! The `#[courier::service]` part of `courier demo`: one trait and one implementation, served
//! first to a thread of this process (`StoreClient::pair`), then from another process
//! (`courier demo-service-server`, reached with `StoreClient::connect`). The same steps run
//! against both, each printing one `ok:` line with what it measured.

use crate::shm_demo::Tally;
use courier::service::Reply;
use courier::{Error, Ipc};
use std::collections::HashMap;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// How long the server process may take to start, and any one step to answer.
const LIMIT: Duration = Duration::from_secs(10);
/// Timed calls in the latency step.
const CALLS: usize = 10_000;

/// Why a lookup failed.
#[derive(Ipc, Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum StoreError {
    /// No value under the key.
    Missing,
}

/// The demo's service: a key-value store with every method kind.
#[courier::service]
pub(crate) trait Store {
    /// The value under `key`.
    fn get(&self, key: u64) -> Result<u64, StoreError>;
    /// Stores a value (one-way).
    fn put(&self, key: u64, value: u64);
    /// A checksum of the lent bytes.
    fn checksum(&self, #[lend] data: &[u8]) -> u64;
    /// Overwrites the lent bytes with a pattern from `seed`; their new checksum.
    fn scramble(&self, seed: u8, #[lend_mut] data: &mut [u8]) -> u64;
    /// The value under `key`, answered from another thread.
    #[deferred]
    fn later(&self, key: u64, reply: Reply<u64, StoreError>);
    /// How many keys are stored (a Xous scalar message).
    #[scalar]
    fn count(&self) -> u64;
    /// Answers, then ends the server process (across processes only).
    #[deferred]
    fn shutdown(&self, reply: Reply<()>);
}

/// The one implementation of [`Store`].
struct Map {
    values: Mutex<HashMap<u64, u64>>,
    /// Told when a client asks for shutdown.
    stop: Mutex<Option<mpsc::Sender<()>>>,
}

impl Map {
    fn new(stop: Option<mpsc::Sender<()>>) -> Map {
        Map {
            values: Mutex::new(HashMap::new()),
            stop: Mutex::new(stop),
        }
    }
}

/// The checksum both sides compute.
fn checksum(data: &[u8]) -> u64 {
    data.iter()
        .fold(0u64, |h, &b| h.rotate_left(5) ^ u64::from(b))
}

impl Store for Map {
    fn get(&self, key: u64) -> Result<u64, StoreError> {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.get(&key).copied().ok_or(StoreError::Missing)
    }
    fn put(&self, key: u64, value: u64) {
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.insert(key, value);
    }
    fn checksum(&self, data: &[u8]) -> u64 {
        checksum(data)
    }
    fn scramble(&self, seed: u8, data: &mut [u8]) -> u64 {
        for (i, b) in data.iter_mut().enumerate() {
            *b = seed.wrapping_add(i as u8);
        }
        checksum(data)
    }
    fn later(&self, key: u64, reply: Reply<u64, StoreError>) {
        let found = self.get(key);
        std::thread::spawn(move || {
            let _ = match found {
                Ok(v) => reply.reply(v),
                Err(e) => reply.fail(e),
            };
        });
    }
    fn count(&self) -> u64 {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.len() as u64
    }
    fn shutdown(&self, reply: Reply<()>) {
        // The answer is written before the process is told to end.
        let _ = reply.reply(());
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
    }
}

/// The steps, against one client; each adds an `ok:`/`FAILED:` line to `tally`.
fn steps(where_: &str, client: &StoreClient, tally: &mut Tally) {
    let step = |tally: &mut Tally, name: &str, outcome: Result<String, String>| {
        tally.step(&format!("{where_}: {name}"), outcome)
    };
    let c = client.with_timeout(LIMIT);
    step(
        tally,
        "call and app error",
        (|| {
            if c.get(7) != Err(Error::App(StoreError::Missing)) {
                return Err("a missing key was not StoreError::Missing".to_string());
            }
            c.put(7, 49).map_err(|e| format!("put: {e}"))?;
            match c.get(7) {
                Ok(49) => Ok("get(7) missing, put(7, 49), get(7) = 49".to_string()),
                other => Err(format!("get(7) after put: {other:?}")),
            }
        })(),
    );
    step(
        tally,
        "lend and lend_mut",
        (|| {
            let data: Vec<u8> = (0..65_536u32).map(|i| (i * 7) as u8).collect();
            let sum = c.checksum(&data).map_err(|e| format!("checksum: {e}"))?;
            if sum != checksum(&data) {
                return Err("the server's checksum differs".into());
            }
            let mut buf = vec![0u8; 65_536];
            let after = c
                .scramble(3, &mut buf)
                .map_err(|e| format!("scramble: {e}"))?;
            if after != checksum(&buf) || buf[1] != 4 {
                return Err("the server's writes did not come back".into());
            }
            Ok("64 KiB read by the server, 64 KiB written back".to_string())
        })(),
    );
    step(
        tally,
        "deferred reply",
        match (c.later(7), c.later(8)) {
            (Ok(49), Err(Error::App(StoreError::Missing))) => {
                Ok("answered from another server thread".to_string())
            }
            other => Err(format!("later(7), later(8): {other:?}")),
        },
    );
    step(
        tally,
        "scalar message",
        match c.count() {
            Ok(1) => Ok("count() = 1, no slot payload".to_string()),
            other => Err(format!("count(): {other:?}")),
        },
    );
    step(
        tally,
        "async call",
        match pollster::block_on(client.get_async(7)) {
            Ok(49) => Ok("get_async(7) = 49".to_string()),
            other => Err(format!("get_async(7): {other:?}")),
        },
    );
    step(
        tally,
        "latency",
        (|| {
            // Without a timeout: the plain blocking call.
            for _ in 0..1000 {
                client.get(7).map_err(|e| format!("get: {e}"))?;
            }
            let mut samples = Vec::with_capacity(CALLS);
            for _ in 0..CALLS {
                let t = Instant::now();
                client.get(7).map_err(|e| format!("get: {e}"))?;
                samples.push(t.elapsed());
            }
            samples.sort_unstable();
            Ok(format!(
                "{CALLS} get calls: median {:.2?}, p99 {:.2?}",
                samples[CALLS / 2],
                samples[CALLS * 99 / 100]
            ))
        })(),
    );
}

/// Runs the section; adds its steps to `tally`.
pub(crate) fn run(tally: &mut Tally) {
    println!("== #[courier::service]: one trait, served to a thread and from another process\n");

    // In one process.
    let (client, server) = StoreClient::pair();
    let worker = std::thread::spawn(move || server.serve(Map::new(None)));
    steps("thread", &client, tally);
    drop(client);
    let served = worker.join();
    tally.step(
        "thread: serve returns",
        match served {
            Ok(Ok(())) => Ok("once the last client is gone".to_string()),
            other => Err(format!("{other:?}")),
        },
    );

    // Across processes.
    let name = format!("courier-demo-service-{}", std::process::id());
    let started = crate::shm_demo::start_service_server(&name);
    let server = match started {
        Ok(s) => s,
        Err(why) => return tally.step("process: server", Err(why)),
    };
    match StoreClient::connect(&name, LIMIT) {
        Ok(client) => {
            tally.step(
                "process: connect",
                Ok(format!("interface {} checked", StoreClient::INTERFACE)),
            );
            steps("process", &client, tally);
            let down = client
                .with_timeout(LIMIT)
                .shutdown()
                .map_err(|e| format!("shutdown: {e}"))
                .and_then(|()| {
                    drop(client);
                    let status = server.finish(LIMIT, |l| println!("server: {l}"))?;
                    if status.success() {
                        Ok(())
                    } else {
                        Err(format!("the server process exited with {status}"))
                    }
                });
            tally.step(
                "process: shutdown",
                down.map(|()| "answered, then the server process exited 0".to_string()),
            );
        }
        Err(e) => tally.step("process: connect", Err(e.to_string())),
    }
}

/// The server process of this section (`courier demo-service-server <name>`): serves until a
/// client asks it to shut down, then stops serving and drops the server, which removes its
/// name (socket, lock and stats files) from the runtime directory.
pub(crate) fn serve(name: &str) -> bool {
    let server = match StoreServer::bind(name) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo-service-server: bind {name:?}: {e}");
            return false;
        }
    };
    let (stop, stopped) = mpsc::channel();
    let asked = std::thread::scope(|s| {
        let worker = s.spawn(|| server.serve(Map::new(Some(stop))));
        println!("ready {}", std::process::id());
        let _ = std::io::Write::flush(&mut std::io::stdout());
        // A sender dropped unused: `serve` returned (failed) without a shutdown.
        let asked = stopped.recv().is_ok();
        server.stop();
        match worker.join() {
            Ok(Ok(())) => asked,
            Ok(Err(e)) => {
                eprintln!("demo-service-server: serve: {e}");
                false
            }
            Err(_) => false,
        }
    });
    drop(server);
    asked
}
