//! A Xous-style log server, written once as a `#[courier::service]` trait and run twice: in
//! this process (a server thread), then as two processes (this program re-executed as the
//! server).
//!
//! ```text
//! cargo run -p courier --example log_service
//! ```
//!
//! # Porting note: the hand-written Xous version it replaces
//!
//! A Xous service of the same shape is written in four places that must agree by hand:
//!
//! ```text
//! // api.rs, shared by server and clients
//! #[derive(num_derive::FromPrimitive, num_derive::ToPrimitive)]
//! pub enum Opcode { Append = 0, Lines = 1, Level = 2, Tail = 3 }
//!
//! // server: one loop, one match on the opcode, unpacking by hand
//! loop {
//!     let msg = xous::receive_message(sid).unwrap();
//!     match num_traits::FromPrimitive::from_usize(msg.body.id()) {
//!         Some(Opcode::Append) => { /* memory message: map the buffer, parse the bytes */ }
//!         Some(Opcode::Lines) => xous::msg_blocking_scalar_unpack!(msg, _, _, _, _, {
//!             xous::return_scalar(msg.sender, lines.len()).unwrap();
//!         }),
//!         Some(Opcode::Level) => xous::msg_scalar_unpack!(msg, level, _, _, _, { /* ... */ }),
//!         Some(Opcode::Tail) => { /* keep the sender's SID, later send_message to it */ }
//!         None => log::error!("unknown opcode"),
//!     }
//! }
//!
//! // client: one stub per opcode, each packing its own arguments
//! pub fn lines(&self) -> Result<usize, xous::Error> {
//!     let r = xous::send_message(self.conn,
//!         xous::Message::new_blocking_scalar(Opcode::Lines as usize, 0, 0, 0, 0))?;
//!     if let xous::Result::Scalar1(n) = r { Ok(n) } else { Err(xous::Error::InternalError) }
//! }
//! ```
//!
//! Here the trait is the only place: the opcodes are hashes of the method names, the client
//! stubs and the server's match are generated, `Lines` and `Level` stay scalar messages
//! (`#[scalar]`), `Append` a memory message (`#[lend]`), and `Tail`'s deferred pushes a typed
//! subscription (`#[subscribe]`). Moving the server from a thread to a process changes how
//! the two ends are made, nothing else; a client built against another version of the trait
//! is refused at `connect` (`ShmError::InterfaceMismatch`).

use courier::service::Sink;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The log service.
#[courier::service]
pub trait Log {
    /// Appends the lent bytes (UTF-8) as one line; its number.
    fn append(&self, #[lend] line: &[u8]) -> u64;
    /// How many lines there are (a scalar message).
    #[scalar]
    fn lines(&self) -> u64;
    /// Sets the verbosity level (a one-way scalar message).
    #[scalar]
    fn level(&self, level: u8);
    /// Every line appended from now on, as its length and first byte.
    #[subscribe]
    fn tail(&self, sink: Sink<[u64; 2]>);
}

#[derive(Default)]
struct Store {
    lines: Mutex<Vec<String>>,
    level: Mutex<u8>,
    tails: Mutex<Vec<Sink<[u64; 2]>>>,
}

impl Log for Store {
    fn append(&self, line: &[u8]) -> u64 {
        let text = String::from_utf8_lossy(line).into_owned();
        let event = [
            line.len() as u64,
            u64::from(line.first().copied().unwrap_or(0)),
        ];
        // Subscribers that left are forgotten.
        self.tails
            .lock()
            .unwrap()
            .retain(|s| s.push(event).is_ok() || s.is_subscribed());
        let mut lines = self.lines.lock().unwrap();
        lines.push(text);
        lines.len() as u64 - 1
    }
    fn lines(&self) -> u64 {
        self.lines.lock().unwrap().len() as u64
    }
    fn level(&self, level: u8) {
        *self.level.lock().unwrap() = level;
    }
    fn tail(&self, sink: Sink<[u64; 2]>) {
        self.tails.lock().unwrap().push(sink);
    }
}

/// What a client does, wherever the server runs.
fn use_the_log(log: &LogClient, where_: &str) -> Result<(), Box<dyn std::error::Error>> {
    let tail = log.tail()?;
    let started = Instant::now();
    for line in ["boot", "mounted /", "network up"] {
        log.append(line.as_bytes())?;
    }
    log.level(2)?;
    let count = log.lines()?;
    let first = tail.recv_timeout(Duration::from_secs(5))?;
    println!(
        "{where_}: {count} lines; tail saw a line of {} bytes starting {:?}; {:.1?} in all",
        first[0],
        first[1] as u8 as char,
        started.elapsed()
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, name] = &args[..] {
        if mode == "serve" {
            // The server process: serves until the example ends it.
            let server = LogServer::bind(name)?;
            println!("ready");
            server.serve(Store::default())?;
            return Ok(());
        }
    }

    // In one process.
    let (log, server) = LogClient::pair();
    let worker = std::thread::spawn(move || server.serve(Store::default()));
    use_the_log(&log, "thread")?;
    drop(log);
    worker.join().expect("server thread")?;

    // Across processes (Linux): the same trait, the same client code.
    if cfg!(target_os = "linux") {
        let name = format!("log-example-{}", std::process::id());
        let mut server = std::process::Command::new(std::env::current_exe()?)
            .args(["serve", &name])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut ready = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(server.stdout.take().expect("piped")).read_line(&mut ready)?;
        let outcome = LogClient::connect(&name, Duration::from_secs(5))
            .map_err(Box::<dyn std::error::Error>::from)
            .and_then(|log| use_the_log(&log, "process"));
        server.kill()?;
        server.wait()?;
        outcome?;
    }
    Ok(())
}
