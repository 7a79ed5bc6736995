//! `#[courier::service(serde)]` (feature `serde`): arguments, results and errors of any serde
//! type (std `String`, `Vec`, `Option`, maps), moved as they are in one process and encoded
//! with postcard across processes. The same conformance function runs on both transports.
//!
//! Built only with the `serde` feature (README's test command turns it on:
//! `cargo test --workspace --features courier/serde,courier/net`).
#![cfg(feature = "serde")]

use courier::service::Sink;
use courier::Error;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

/// Why a lookup failed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum LogError {
    /// No line with that number.
    NoSuchLine(u64),
}

/// A log server with text lines.
#[courier::service(serde)]
pub trait Log {
    /// Appends a line; its number.
    fn append(&self, line: String) -> u64;
    /// The line numbered `n`.
    fn line(&self, n: u64) -> Result<String, LogError>;
    /// Every line that contains `word`.
    fn grep(&self, word: String) -> Vec<(u64, String)>;
    /// Forgets everything (one-way).
    fn clear(&self);
    /// Streams the lines from number `from` on (serde events), then ends.
    #[subscribe]
    fn follow(&self, from: u64, sink: Sink<(u64, String)>);
}

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl Log for Lines {
    fn append(&self, line: String) -> u64 {
        let mut v = self.0.lock().unwrap();
        v.push(line);
        v.len() as u64 - 1
    }
    fn line(&self, n: u64) -> Result<String, LogError> {
        let v = self.0.lock().unwrap();
        v.get(n as usize).cloned().ok_or(LogError::NoSuchLine(n))
    }
    fn grep(&self, word: String) -> Vec<(u64, String)> {
        let v = self.0.lock().unwrap();
        v.iter()
            .enumerate()
            .filter(|(_, l)| l.contains(&word))
            .map(|(i, l)| (i as u64, l.clone()))
            .collect()
    }
    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
    fn follow(&self, from: u64, sink: Sink<(u64, String)>) {
        let lines: Vec<_> = self.0.lock().unwrap().iter().cloned().enumerate().collect();
        // Pushed from another thread, after the subscription is answered.
        std::thread::spawn(move || {
            for (i, line) in lines.into_iter().skip(from as usize) {
                if sink.push((i as u64, line)).is_err() {
                    return;
                }
            }
        });
    }
}

fn conformance(c: &LogClient) {
    assert_eq!(c.append("hello world".into()), Ok(0));
    assert_eq!(c.append("déjà vu".into()), Ok(1));
    assert_eq!(c.append("world peace".into()), Ok(2));
    assert_eq!(c.line(1), Ok("déjà vu".to_string()));
    assert_eq!(c.line(9), Err(Error::App(LogError::NoSuchLine(9))));
    assert_eq!(
        c.grep("world".into()),
        Ok(vec![(0, "hello world".into()), (2, "world peace".into())])
    );
    // A subscription of serde events: every line from 1 on, in order, then the end.
    let sub = c.follow(1).unwrap();
    assert_eq!(sub.recv_timeout(DEADLINE), Ok((1, "déjà vu".to_string())));
    assert_eq!(
        pollster::block_on(sub.recv_async()),
        Ok((2, "world peace".to_string()))
    );
    assert_eq!(sub.recv_timeout(DEADLINE), Err(Error::NoReply));
    c.clear().unwrap();
    assert_eq!(c.grep(String::new()), Ok(vec![]));
    assert_eq!(pollster::block_on(c.append_async("again".into())), Ok(0));
}

#[test]
fn serde_values_travel_in_one_process() {
    let (client, server) = LogClient::pair();
    let (done, served) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        server.serve(Lines::default()).unwrap();
        let _ = done.send(());
    });
    conformance(&client);
    drop(client);
    served.recv_timeout(DEADLINE).expect("serve returned");
}

#[cfg(target_os = "linux")]
#[test]
fn serde_values_travel_between_processes_over_shm() {
    courier_testkit::runtime_dir("courier-service-serde");
    let server = LogServer::bind("log").unwrap();
    std::thread::spawn(move || {
        let _ = server.serve(Lines::default());
    });
    let client = LogClient::connect("log", DEADLINE).unwrap();
    conformance(&client);
}

#[test]
fn the_interface_signature_ignores_method_order_but_not_types() {
    /// `Log` with its methods in another order.
    #[courier::service(serde)]
    trait LogReordered {
        #[subscribe]
        fn follow(&self, from: u64, sink: Sink<(u64, String)>);
        fn clear(&self);
        fn grep(&self, word: String) -> Vec<(u64, String)>;
        fn line(&self, n: u64) -> Result<String, LogError>;
        fn append(&self, line: String) -> u64;
    }
    /// `Log` with one result type changed.
    #[courier::service(serde)]
    trait LogChanged {
        fn append(&self, line: String) -> u32;
        fn line(&self, n: u64) -> Result<String, LogError>;
        fn grep(&self, word: String) -> Vec<(u64, String)>;
        fn clear(&self);
        #[subscribe]
        fn follow(&self, from: u64, sink: Sink<(u64, String)>);
    }
    assert_eq!(
        LogClient::INTERFACE.signature,
        LogReorderedClient::INTERFACE.signature
    );
    assert_ne!(
        LogClient::INTERFACE.signature,
        LogChangedClient::INTERFACE.signature
    );
}
