//! Serves one handshake on the name `hello` and greets the client through the shared segment.
//!
//! Run `cargo run -p courier-shm --example hello_listener`, then, in another terminal,
//! `cargo run -p courier-shm --example hello_client`.

#[cfg(target_os = "linux")]
fn main() -> Result<(), courier_shm::ShmError> {
    use courier_shm::{Listener, ListenerConfig};
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    let listener = Listener::bind("hello", ListenerConfig::new().segment_size(4096))?;
    println!(
        "listening as {:?} in {:?}",
        listener.name(),
        courier_shm::runtime_dir()?
    );
    let conn = listener.accept_timeout(Duration::from_secs(60))?;
    let peer = conn.peer();
    println!(
        "client pid {} (uid {}, gid {})",
        peer.pid, peer.uid, peer.gid
    );
    let greeting = b"hello from the listener";
    conn.segment().write_at(1, greeting)?;
    // The length byte last, with Release: a client that reads it with Acquire sees the
    // whole greeting.
    conn.segment().payload()[0].store(greeting.len() as u8, Ordering::Release);
    // Keep the segment mapped a moment so the client can read it.
    std::thread::sleep(Duration::from_secs(2));
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("courier::shm is Linux only");
}
