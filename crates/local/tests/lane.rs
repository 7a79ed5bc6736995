//! The lane (a blocking `req` on an unbounded channel that no other call holds skips the
//! queue; see `chan`'s module docs), as a user sees it:
//! - a client's messages and calls are taken in the order it made them, whichever way each
//!   went;
//! - callers racing for the lane each get their own reply;
//! - on a bounded channel a `req` takes room in the queue like any request.

use courier_local::{bounded, channel, Error, SendError};
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for any cross-thread hand-off in these tests.
const DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn a_clients_messages_and_calls_are_taken_in_the_order_it_made_them() {
    const ROUNDS: u32 = 2_000;
    let (server, client) = channel::<u32, u32, ()>();
    let serving = thread::spawn(move || {
        let mut next = 0;
        while next < 3 * ROUNDS {
            let (n, ctx) = server.wait_timeout(DEADLINE).expect("a request in time");
            assert_eq!(n, next, "taken out of order");
            next += 1;
            if !ctx.is_one_way() {
                ctx.reply(n).unwrap();
            }
        }
    });
    for round in 0..ROUNDS {
        // A queued message, a call that takes the lane, and a queued call.
        client.send(3 * round).unwrap();
        assert_eq!(client.req(3 * round + 1), Ok(3 * round + 1));
        let pending = client.req_async(3 * round + 2).unwrap();
        assert_eq!(pending.wait_timeout(DEADLINE), Ok(3 * round + 2));
    }
    serving.join().unwrap();
}

#[test]
fn callers_racing_for_the_lane_each_get_their_own_reply() {
    const CALLERS: u32 = 4;
    const CALLS: u32 = 2_000;
    let (server, client) = channel::<u32, u32, ()>();
    let serving = thread::spawn(move || {
        for _ in 0..CALLERS * CALLS {
            let (n, ctx) = server.wait_timeout(DEADLINE).expect("a request in time");
            ctx.reply(n.wrapping_mul(3)).unwrap();
        }
    });
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let client = client.clone();
            thread::spawn(move || {
                for i in 0..CALLS {
                    let n = c * CALLS + i;
                    assert_eq!(client.req(n), Ok(n.wrapping_mul(3)), "caller {c}, call {i}");
                }
            })
        })
        .collect();
    for c in callers {
        c.join().unwrap();
    }
    serving.join().unwrap();
}

#[test]
fn a_call_on_a_bounded_channel_takes_room_in_the_queue() {
    let (server, client) = bounded::<u32, u32, ()>(1);
    let caller = {
        let client = client.clone();
        thread::spawn(move || client.req(1))
    };
    // The call holds the one place: `try_req` finds the channel full once it is made (had it
    // gone around the queue, `try_req` would find room).
    let deadline = Instant::now() + DEADLINE;
    loop {
        match client.try_req(2) {
            Err(SendError::Full(2)) => break,
            Ok(pending) => {
                // Made before the caller's: take it back and look again.
                assert!(Instant::now() < deadline, "the call never took the place");
                drop(pending);
                thread::yield_now();
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    let (n, ctx) = server.wait_timeout(DEADLINE).unwrap();
    assert_eq!(n, 1);
    ctx.reply(10).unwrap();
    assert_eq!(caller.join().unwrap(), Ok(10));
    drop(server);
    assert_eq!(client.req(3), Err(Error::ServerDisappeared));
}
