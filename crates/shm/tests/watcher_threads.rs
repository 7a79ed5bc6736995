//! Every `ShmChannel` has a liveness watcher thread; dropping the channel stops and joins it.
//! Alone in its test binary, so that no other test's threads change the count.
#![cfg(target_os = "linux")]

use courier_shm::{ShmChannel, ShmConfig, ShmError};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(20);

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Waits (up to 1 s: a joined thread may linger in /proc for an instant) for the thread
/// count to come back to `want`.
fn assert_threads_back_to(want: usize) {
    let start = Instant::now();
    while threads() != want {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{} threads, {want} before",
            threads()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A connected (listener, client) pair in this process.
fn pair(name: &str) -> (ShmChannel, ShmChannel) {
    std::thread::scope(|s| {
        let l = s.spawn(|| ShmChannel::listen(name, ShmConfig::new(), DEADLINE).unwrap());
        let c = ShmChannel::connect(name, ShmConfig::new(), DEADLINE).unwrap();
        (l.join().unwrap(), c)
    })
}

#[test]
fn dropping_channels_joins_their_watchers() {
    let rt = std::env::temp_dir().join(format!("courier-watch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&rt);
    std::env::set_var("COURIER_RUNTIME_DIR", &rt);
    let name = format!("w{}", std::process::id());

    let before = threads();
    let pairs: Vec<_> = (0..4).map(|_| pair(&name)).collect();
    // One watcher per end.
    assert_threads_back_to(before + 8);
    drop(pairs);
    assert_threads_back_to(before);

    // A watcher that has already seen its peer die (and woken a blocked receiver) is joined
    // too, and so is the peer's.
    let (l, c) = pair(&name);
    c.send(b"x").unwrap();
    drop(c);
    assert_eq!(l.recv().unwrap().to_vec(), b"x");
    assert!(matches!(l.recv(), Err(ShmError::PeerDead)));
    drop(l);
    assert_threads_back_to(before);

    let _ = std::fs::remove_dir_all(&rt);
}
