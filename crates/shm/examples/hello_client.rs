//! Connects to the name `hello` (see the `hello_listener` example) and prints the greeting
//! it finds in the shared segment.

#[cfg(target_os = "linux")]
fn main() -> Result<(), courier_shm::ShmError> {
    use courier_shm::{ConnectConfig, Connection, ShmError};
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    let conn =
        Connection::connect_timeout("hello", &ConnectConfig::new(), Duration::from_secs(10))?;
    println!("listener pid {}", conn.peer().pid);
    let deadline = Instant::now() + Duration::from_secs(5);
    // The segment's size is the listener's choice: check it rather than index blindly.
    let len_byte = conn
        .segment()
        .payload()
        .first()
        .ok_or(ShmError::OutOfBounds {
            offset: 0,
            len: 1,
            payload_len: 0,
        })?;
    // Acquire: pairs with the listener's Release store of the length, written last.
    let len = loop {
        match len_byte.load(Ordering::Acquire) {
            0 if Instant::now() > deadline => return Err(ShmError::Timeout),
            0 => std::thread::sleep(Duration::from_millis(1)),
            n => break n,
        }
    };
    let mut greeting = vec![0; usize::from(len)];
    conn.segment().read_at(1, &mut greeting)?;
    println!("{}", String::from_utf8_lossy(&greeting));
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("courier::shm is Linux only");
}
