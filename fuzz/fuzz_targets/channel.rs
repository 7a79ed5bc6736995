//! `ShmChannel`: a real listener/client pair in one process (kept across inputs), with sends
//! (copied or loaned), receives (polling and timed) in both directions and, between them,
//! arbitrary writes into the channel's segment (mapped again by the harness, found in
//! `/proc/self/fd`).
//!
//! Invariants: nothing panics; every timed operation returns within its timeout + slack;
//! until the first scribble every message arrives intact and in order (and a send to a ring
//! with room succeeds); after scribbles a fresh pair works again.
#![no_main]

use courier_fuzz::{map_new_segment, memfd_snapshot, timed, unique_name, Bytes, Mapping};
use courier_shm::{Full, ShmChannel, ShmConfig, ShmError};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

const OP: Duration = Duration::from_millis(10);
const BLOCK: usize = 64;
const BLOCKS: usize = 4;
const DEPTH: usize = 4;

struct Pair {
    ends: [ShmChannel; 2],
    map: Mapping,
    /// What each end sent that the other has not received yet (honest pair only).
    inflight: [VecDeque<Vec<u8>>; 2],
    scribbled: bool,
}

fn config(full: Full) -> ShmConfig {
    ShmConfig::new()
        .block_size(BLOCK)
        .block_count(BLOCKS)
        .ring_depth(DEPTH)
        .full(full)
}

fn pair() -> Pair {
    let name = unique_name("fz-chan");
    let before = memfd_snapshot();
    let n = name.clone();
    let listener = std::thread::spawn(move || {
        ShmChannel::listen(&n, config(Full::Backpressure), Duration::from_secs(5))
    });
    let cli = ShmChannel::connect(&name, config(Full::Error), Duration::from_secs(5))
        .expect("connecting the channel");
    let srv = listener
        .join()
        .expect("listener thread")
        .expect("listening");
    let (map, _) = map_new_segment(&before).expect("the channel's segment in /proc/self/fd");
    let mut p = Pair {
        ends: [srv, cli],
        map,
        inflight: Default::default(),
        scribbled: false,
    };
    // A fresh pair works both ways.
    for from in 0..2 {
        let msg = vec![from as u8; 5];
        timed("send", OP * 100, || {
            p.ends[from].send_timeout(&msg, OP * 100)
        })
        .expect("send on a fresh pair");
        let got = timed("recv", OP * 100, || {
            p.ends[1 - from].recv_timeout(OP * 100).map(|m| m.to_vec())
        })
        .expect("recv on a fresh pair");
        assert_eq!(got, msg, "a fresh pair");
    }
    p.inflight = Default::default();
    p
}

static PAIR: Mutex<Option<Pair>> = Mutex::new(None);

/// A received message (or error), checked against what was sent while no byte was scribbled.
fn received(p: &mut Pair, to: usize, r: Result<Option<Vec<u8>>, ShmError>) {
    let from = 1 - to;
    if p.scribbled {
        return;
    }
    match r {
        Ok(Some(m)) => {
            let want = p.inflight[from].pop_front().expect("a message nobody sent");
            assert_eq!(m, want, "message from end {from} to end {to}");
        }
        Ok(None) | Err(ShmError::Timeout) => {
            assert!(p.inflight[from].is_empty(), "a sent message did not arrive");
        }
        Err(e) => panic!("receive on an honest pair: {e:?}"),
    }
}

fn step(p: &mut Pair, b: &mut Bytes<'_>, timeouts: &mut usize) {
    let sel = b.u8();
    let end = (sel >> 7) as usize;
    match sel % 8 {
        0 | 1 => {
            let msg = b.take(BLOCK + 8);
            let r = timed("send_timeout", OP, || p.ends[end].send_timeout(&msg, OP));
            match r {
                Ok(()) => {
                    if !p.scribbled {
                        assert!(msg.len() <= BLOCK, "a message larger than a block was sent");
                        p.inflight[end].push_back(msg);
                    }
                }
                Err(ShmError::Timeout) => *timeouts += 1,
                Err(e) => {
                    if !p.scribbled {
                        // Too large, or a full ring / pool on the `Full::Error` end.
                        let full = p.inflight[end].len() >= DEPTH.min(BLOCKS);
                        assert!(
                            msg.len() > BLOCK || full,
                            "send on an honest pair: {e:?} ({} in flight)",
                            p.inflight[end].len()
                        );
                    }
                }
            }
        }
        2 => {
            let msg = b.take(BLOCK);
            let r = timed("loan_timeout", OP, || match p.ends[end].loan_timeout(OP) {
                Ok(mut l) => {
                    l.write_at(0, &msg).expect("a message fits its block");
                    l.publish_timeout(msg.len(), OP)
                }
                Err(e) => Err(e),
            });
            if r.is_ok() && !p.scribbled {
                p.inflight[end].push_back(msg);
            } else if matches!(r, Err(ShmError::Timeout)) {
                *timeouts += 1;
            }
        }
        3 | 4 => {
            let r = timed("try_recv", OP, || {
                p.ends[end].try_recv().map(|m| m.map(|m| m.to_vec()))
            });
            received(p, end, r);
        }
        5 => {
            let r = timed("recv_timeout", OP, || {
                p.ends[end].recv_timeout(OP).map(|m| Some(m.to_vec()))
            });
            if matches!(r, Err(ShmError::Timeout)) {
                *timeouts += 1;
            }
            received(p, end, r);
        }
        _ => {
            p.scribbled = true;
            let len = p.map.len();
            // Mostly the headers, control lines and rings; sometimes anywhere.
            let span = if sel & 0x40 != 0 { len } else { 64 + 512 };
            let off = b.u16() as usize % span.min(len);
            let bytes = b.take(16);
            p.map.write(off, &bytes);
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut guard = PAIR.lock().unwrap_or_else(|e| e.into_inner());
    let p = guard.get_or_insert_with(pair);
    let mut b = Bytes(data);
    let mut timeouts = 0;
    for _ in 0..64 {
        if b.is_empty() || timeouts >= 3 {
            break;
        }
        step(p, &mut b, &mut timeouts);
    }
    if p.scribbled {
        // The pair may be broken for good (a peer that breaks a ring's rules is refused from
        // then on): drop it, bounded, and make a fresh one, which must work.
        let old = guard.take();
        timed("dropping a scribbled pair", Duration::from_secs(1), || {
            drop(old)
        });
        *guard = Some(pair());
    }
});
