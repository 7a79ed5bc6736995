//! ump's lifecycle semantics, each as a test:
//! - a dropped `ReplyContext` gives the client `NoReply`;
//! - `fail` gives the client `App(e)`;
//! - dropping the server fails queued requests at once, while reply contexts already taken
//!   still deliver;
//! - calls in flight outlive every handle: with the server and all clients gone, a taken
//!   context still replies, cancels and drops as usual;
//! - a request made after the server is gone fails with `ServerDisappeared`;
//! - after the last client goes, the server drains what is queued, then gets
//!   `ClientsDisappeared` (sync and async);
//! - a `ReplyContext` moves to another thread and replies later (deferred response);
//! - clients are cloned and moved across threads;
//! - every mix of sync/async clients and servers, under tokio and under `futures::executor`.

use courier_local::{channel, CancelOutcome, Error};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Upper bound for any cross-thread hand-off in these tests.
const DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn dropped_reply_context_gives_no_reply() {
    let (server, client) = channel::<u32, u32, ()>();
    let pending = client.req_async(1).unwrap();
    let (_, ctx) = server.wait().unwrap();
    drop(ctx);
    assert_eq!(pending.wait(), Err(Error::NoReply));
}

#[test]
fn dropped_reply_context_gives_no_reply_async() {
    let (server, client) = channel::<u32, u32, ()>();
    let t = thread::spawn(move || {
        let (_, ctx) = server.wait().unwrap();
        drop(ctx);
    });
    assert_eq!(pollster::block_on(client.areq(1)), Err(Error::NoReply));
    t.join().unwrap();
}

#[test]
fn fail_gives_app_error() {
    let (server, client) = channel::<u32, u32, String>();
    let t = thread::spawn(move || {
        let (n, ctx) = server.wait().unwrap();
        ctx.fail(format!("no {n}")).unwrap();
    });
    assert_eq!(client.req(7), Err(Error::App("no 7".to_string())));
    t.join().unwrap();
}

#[test]
fn server_drop_fails_queued_but_taken_contexts_still_deliver() {
    let (server, client) = channel::<u32, u32, ()>();
    let first = client.req_async(1).unwrap();
    let second = client.req_async(2).unwrap();
    let third = client.req_async(3).unwrap();
    let (n, ctx) = server.wait().unwrap();
    assert_eq!(n, 1);
    drop(server);
    // Queued requests failed at once: both are ready before anyone replies.
    assert!(second.is_ready() && third.is_ready());
    assert_eq!(second.wait(), Err(Error::ServerDisappeared));
    assert_eq!(third.wait(), Err(Error::ServerDisappeared));
    // The taken context still delivers, from another thread, after the server is gone.
    thread::spawn(move || ctx.reply(10).unwrap())
        .join()
        .unwrap();
    assert_eq!(first.wait(), Ok(10));
}

/// A call's slot keeps only the channel's slot pool alive, not the channel: once the server
/// and every client are gone, the calls already taken still finish every way a call can, and
/// their slots go back to the pool (freed with it by the last of them).
#[test]
fn calls_in_flight_outlive_every_handle() {
    let (server, client) = channel::<u32, u32, ()>();
    let answered = client.req_async(1).unwrap();
    let canceled = client.req_async(2).unwrap();
    let abandoned = client.req_async(3).unwrap();
    let take = || server.wait().unwrap().1;
    let (a, b, c) = (take(), take(), take());
    drop(server);
    drop(client);
    thread::spawn(move || a.reply(10).unwrap()).join().unwrap();
    assert_eq!(answered.wait(), Ok(10));
    assert!(matches!(canceled.cancel(), CancelOutcome::Signaled));
    assert!(b.is_canceled());
    assert_eq!(b.reply(20), Err(Error::OriginDisappeared));
    drop(c);
    assert_eq!(abandoned.wait(), Err(Error::NoReply));
}

#[test]
fn request_after_server_drop_fails() {
    let (server, client) = channel::<u32, u32, ()>();
    drop(server);
    assert!(client.is_server_gone());
    assert_eq!(client.req(1), Err(Error::ServerDisappeared));
    assert!(client.req_async(1).is_err());
    assert_eq!(
        pollster::block_on(client.areq(1)),
        Err(Error::ServerDisappeared)
    );
    assert_eq!(client.send(5).unwrap_err().into_inner(), 5);
}

#[test]
fn blocked_client_is_failed_when_server_drops() {
    let (server, client) = channel::<u32, u32, ()>();
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || {
        let pending = client.req_async(1).unwrap();
        tx.send(()).unwrap();
        pending.wait()
    });
    rx.recv_timeout(DEADLINE).unwrap();
    drop(server);
    assert_eq!(t.join().unwrap(), Err(Error::ServerDisappeared));
}

#[test]
fn server_drains_queue_after_last_client_then_clients_disappeared() {
    let (server, client) = channel::<u32, u32, ()>();
    let a = client.clone();
    a.send(1).unwrap();
    let pending = client.req_async(2).unwrap();
    drop(a);
    drop(client);
    let (n, ctx) = server.wait().unwrap();
    assert_eq!(n, 1);
    assert!(ctx.is_one_way());
    let (n, ctx) = server.wait().unwrap();
    assert_eq!(n, 2);
    ctx.reply(20).unwrap();
    assert_eq!(pending.wait(), Ok(20));
    assert!(matches!(server.wait(), Err(Error::ClientsDisappeared)));
    assert!(matches!(server.try_pop(), Err(Error::ClientsDisappeared)));
}

#[test]
fn waiting_server_wakes_when_last_client_drops() {
    let (server, client) = channel::<u32, u32, ()>();
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || {
        tx.send(()).unwrap();
        server.wait().map(|_| ())
    });
    rx.recv_timeout(DEADLINE).unwrap();
    drop(client);
    assert_eq!(t.join().unwrap(), Err(Error::ClientsDisappeared));
}

#[test]
fn async_server_sees_clients_disappeared() {
    let (server, client) = channel::<u32, u32, ()>();
    let t = thread::spawn(move || {
        client.send(1).unwrap();
    });
    let first = futures::executor::block_on(server.async_wait()).unwrap();
    assert_eq!(first.0, 1);
    t.join().unwrap();
    assert!(matches!(
        futures::executor::block_on(server.async_wait()),
        Err(Error::ClientsDisappeared)
    ));
}

#[test]
fn deferred_reply_from_another_thread_while_serving_others() {
    let (server, client) = channel::<u32, u32, ()>();
    let slow = client.req_async(1).unwrap();
    let (n, held) = server.wait().unwrap();
    assert_eq!(n, 1);
    // The server keeps serving while the first context waits elsewhere.
    let (ctx_tx, ctx_rx) = mpsc::channel();
    let replier = thread::spawn(move || {
        let ctx: courier_local::ReplyContext<u32, ()> = ctx_rx.recv_timeout(DEADLINE).unwrap();
        ctx.reply(100).unwrap();
    });
    let fast = client.req_async(2).unwrap();
    let (m, ctx) = server.wait().unwrap();
    ctx.reply(m * 10).unwrap();
    assert_eq!(fast.wait(), Ok(20));
    assert!(!slow.is_ready());
    ctx_tx.send(held).unwrap();
    assert_eq!(slow.wait(), Ok(100));
    replier.join().unwrap();
}

#[test]
fn deferred_contexts_stored_and_answered_in_reverse_order() {
    let (server, client) = channel::<u32, u32, ()>();
    let pendings: Vec<_> = (0..8).map(|i| client.req_async(i).unwrap()).collect();
    let mut stored = Vec::new();
    for _ in 0..8 {
        stored.push(server.wait().unwrap());
    }
    while let Some((n, ctx)) = stored.pop() {
        ctx.reply(n + 1000).unwrap();
    }
    for (i, p) in pendings.into_iter().enumerate() {
        assert_eq!(p.wait(), Ok(i as u32 + 1000));
    }
}

#[test]
fn clients_cloned_and_moved_across_threads() {
    let (server, client) = channel::<(usize, u64), (usize, u64), ()>();
    let srv = thread::spawn(move || {
        let mut served = 0;
        while let Ok(((who, n), ctx)) = server.wait() {
            ctx.reply((who, n * 2)).unwrap();
            served += 1;
        }
        served
    });
    let threads: Vec<_> = (0..4)
        .map(|who| {
            let c = client.clone();
            thread::spawn(move || {
                for n in 0..500u64 {
                    assert_eq!(c.req((who, n)), Ok((who, n * 2)));
                }
            })
        })
        .collect();
    // The original handle moves to yet another thread.
    let moved = thread::spawn(move || client.req((99, 1)));
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(moved.join().unwrap(), Ok((99, 2)));
    assert_eq!(srv.join().unwrap(), 2001);
}

#[test]
fn one_client_shared_by_reference_from_threads() {
    let (server, client) = channel::<u64, u64, ()>();
    let srv = thread::spawn(move || {
        while let Ok((n, ctx)) = server.wait() {
            ctx.reply(n + 1).unwrap();
        }
    });
    thread::scope(|s| {
        for t in 0..3u64 {
            let client = &client;
            s.spawn(move || {
                for i in 0..300 {
                    let n = t * 1000 + i;
                    assert_eq!(client.req(n), Ok(n + 1));
                }
            });
        }
    });
    drop(client);
    srv.join().unwrap();
}

/// Sync server, async clients on tokio.
#[test]
fn async_clients_on_tokio_sync_server() {
    let (server, client) = channel::<u64, u64, ()>();
    let srv = thread::spawn(move || {
        while let Ok((n, ctx)) = server.wait() {
            ctx.reply(n * 3).unwrap();
        }
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let c = client.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..100 {
                    let n = t * 100 + i;
                    assert_eq!(c.areq(n).await, Ok(n * 3));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    srv.join().unwrap();
}

/// Async server task on tokio, sync clients on threads.
#[test]
fn async_server_on_tokio_sync_clients() {
    let (server, client) = channel::<u64, u64, ()>();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let srv = rt.spawn(async move {
        let mut served = 0u64;
        while let Ok((n, ctx)) = server.async_wait().await {
            ctx.reply(n + 7).unwrap();
            served += 1;
        }
        served
    });
    let threads: Vec<_> = (0..3u64)
        .map(|t| {
            let c = client.clone();
            thread::spawn(move || {
                for i in 0..200 {
                    assert_eq!(c.req(t * 1000 + i), Ok(t * 1000 + i + 7));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(client);
    assert_eq!(rt.block_on(srv).unwrap(), 600);
}

/// Async server and async clients, both under `futures::executor` (a second executor).
#[test]
fn async_both_sides_on_futures_executor() {
    use futures::executor::LocalPool;
    use futures::task::LocalSpawnExt;

    let (server, client) = channel::<u32, u32, ()>();
    let mut pool = LocalPool::new();
    let spawner = pool.spawner();
    spawner
        .spawn_local(async move {
            while let Ok((n, ctx)) = server.async_wait().await {
                ctx.reply(n * n).unwrap();
            }
        })
        .unwrap();
    let results = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    for t in 0..4u32 {
        let c = client.clone();
        let results = results.clone();
        spawner
            .spawn_local(async move {
                for i in 0..50 {
                    let n = t * 50 + i;
                    let r = c.areq(n).await.unwrap();
                    results.borrow_mut().push((n, r));
                }
            })
            .unwrap();
    }
    drop(client);
    pool.run();
    let results = results.borrow();
    assert_eq!(results.len(), 200);
    assert!(results.iter().all(|&(n, r)| r == n * n));
}

/// Async client with `wait_async` against an async server, each on its own executor thread.
#[test]
fn wait_async_across_executors() {
    let (server, client) = channel::<u32, u32, ()>();
    let srv = thread::spawn(move || {
        futures::executor::block_on(async {
            while let Ok((n, ctx)) = server.async_wait().await {
                ctx.reply(n + 1).unwrap();
            }
        })
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for i in 0..100 {
            let pending = client.req_async(i).unwrap();
            assert_eq!(pending.wait_async().await, Ok(i + 1));
        }
    });
    drop(client);
    srv.join().unwrap();
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<courier_local::Client<String, Vec<u8>, std::io::ErrorKind>>();
    send_sync::<courier_local::Server<String, Vec<u8>, ()>>();
    send_sync::<courier_local::WeakClient<String, Vec<u8>, ()>>();
    send_sync::<courier_local::ReplyContext<Vec<u8>, ()>>();
    send_sync::<courier_local::WaitReply<String, Vec<u8>, ()>>();
    send::<courier_local::ReplyFuture<String, Vec<u8>, ()>>();
    let (server, client) = channel::<String, String, ()>();
    fn send_future<F: std::future::Future + Send>(_: &F) {}
    let areq = client.areq(String::new());
    send_future(&areq);
    let recv = server.async_wait();
    send_future(&recv);
}
