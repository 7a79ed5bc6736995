//! Many callers, several workers, every kind of call at once:
//! - sync `req`, async `areq` (tokio), one-way `send`, `req_async` + `cancel`, and
//!   `req_timeout`, from 6 client threads and 8 tasks against 3 workers on a bounded queue;
//! - every reply reaches its own caller (payloads encode caller and sequence), nothing is
//!   lost or duplicated: every reply a worker delivered was received by its caller, except
//!   those whose future a tokio timeout dropped just after the reply landed (the drop
//!   discards it), and every one-way message is seen exactly once.

use courier_local::{bounded, CancelOutcome, Error};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// (caller, sequence, kind)
type Msg = (u32, u32, u8);

const ONE_WAY: u8 = 0;
const TWO_WAY: u8 = 1;

#[test]
fn everything_at_once_is_exactly_once() {
    let (server, client) = bounded::<Msg, Msg, ()>(32);
    let delivered = Arc::new(AtomicUsize::new(0));
    let one_way_seen = Arc::new(Mutex::new(HashSet::new()));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let server = server.clone();
            let delivered = delivered.clone();
            let one_way_seen = one_way_seen.clone();
            thread::spawn(move || {
                let mut k = 0u32;
                while let Ok((msg, ctx)) = server.wait() {
                    k += 1;
                    if msg.2 == ONE_WAY {
                        assert!(ctx.is_one_way());
                        assert!(one_way_seen.lock().unwrap().insert((msg.0, msg.1)));
                        continue;
                    }
                    if (k + w) % 50 == 0 {
                        // Now and then a slow call, so that timeouts and cancels race replies.
                        thread::sleep(Duration::from_micros(200));
                    }
                    if ctx.reply(msg).is_ok() {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    drop(server);

    let received = Arc::new(AtomicUsize::new(0));
    let dropped_futures = Arc::new(AtomicUsize::new(0));
    let one_way_sent = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..6u32)
        .map(|caller| {
            let c = client.clone();
            let received = received.clone();
            let one_way_sent = one_way_sent.clone();
            thread::spawn(move || {
                for seq in 0..1500u32 {
                    let msg = (caller, seq, TWO_WAY);
                    match seq % 5 {
                        0 | 1 => {
                            assert_eq!(c.req(msg), Ok(msg));
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                        2 => {
                            c.send((caller, seq, ONE_WAY)).unwrap();
                            one_way_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        3 => match c.req_async(msg).unwrap().cancel() {
                            CancelOutcome::Withdrawn(back) => assert_eq!(back, msg),
                            CancelOutcome::Signaled => {}
                            CancelOutcome::Completed(r) => {
                                assert_eq!(r, Ok(msg));
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                        _ => match c.req_timeout(msg, Duration::from_micros(100)) {
                            Ok(r) => {
                                assert_eq!(r, msg);
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => assert_eq!(e, Error::Timeout),
                        },
                    }
                }
            })
        })
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let tasks: Vec<_> = (100..108u32)
        .map(|caller| {
            let c = client.clone();
            let received = received.clone();
            let dropped_futures = dropped_futures.clone();
            rt.spawn(async move {
                for seq in 0..500u32 {
                    let msg = (caller, seq, TWO_WAY);
                    if seq % 4 == 3 {
                        // A timeout that drops the future: the call is canceled.
                        match tokio::time::timeout(Duration::from_micros(50), c.areq(msg)).await {
                            Ok(r) => {
                                assert_eq!(r, Ok(msg));
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => {
                                dropped_futures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    } else {
                        assert_eq!(c.areq(msg).await, Ok(msg));
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    drop(client);
    for w in workers {
        w.join().unwrap();
    }
    let (delivered, received) = (
        delivered.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
    assert!(
        received <= delivered && delivered <= received + dropped_futures.load(Ordering::Relaxed),
        "delivered {delivered}, received {received}"
    );
    assert_eq!(
        one_way_seen.lock().unwrap().len(),
        one_way_sent.load(Ordering::Relaxed)
    );
}
