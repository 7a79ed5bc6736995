//! The Xous caller idioms that courier::shm adopts as they are, across real processes (the
//! test binary runs itself as the peer, `peer_main`, chosen by `COURIER_SHM_TEST_ROLE`):
//! - a lend or lend_mut whose reply type is `()` is answered by dropping its context, as a
//!   Xous memory message is: the caller gets `Ok(())` and sees the server's writes (the
//!   flatipc seed's "42 becomes 43 in place"); a call of another kind dropped unanswered is
//!   still `NoReply`, and `fail` still reaches the caller;
//! - Xous's `offset` and `valid`: `lend_range` / `lend_mut_range` lend a window of a buffer,
//!   the server sees only the window (and where it starts) and reports how many bytes are
//!   valid (`set_valid`);
//! - a clean disconnect in both directions: a client process that drops its `Client` (no
//!   SIGKILL) is forgotten by the server, its lends freed, and exits normally; a server
//!   process that drops its `Server` and exits makes its clients' calls `ServerDisappeared`;
//! - unnamed servers (Xous's SIDs): `Server::bind_unnamed` and `Client::connect_id`, the id
//!   handed out in a scalar reply by a named server of another process;
//! - Xous's memory `send`: `send_buf` gives a buffer away; the server keeps it
//!   (`take_sent`) and reads and writes it after the call;
//! - forwarding: a gateway process passes calls and their lends to a storage process
//!   (`ReplyContext::forward`), without copying the lent pages;
//! - flatipc's typed lends: a `ShmBox<T>` lent with its signature, read and changed checked
//!   by the server (the seed's 42 -> 43), refused for another type;
//! - the connection limit of `register_name`: `ServerConfig::max_clients`, across processes.
//!
//! Every wait has a deadline; peers report on stdout and the test waits for those lines.
#![cfg(target_os = "linux")]

use courier_shm::{
    Client, Error, Incoming, Server, ServerConfig, ServerId, ShmBox, ShmBuf, ShmError,
};
use std::time::Duration;

mod support;
use support::*;

/// The request of the Xous-style service: an opcode and an argument.
type Op = [u64; 2];

/// lend_mut: add 1 to the first byte in place, then drop the context.
const INCREMENT: u64 = 1;
/// lend: report the sum of the bytes on stdout (`sum <n>`), then drop the context.
const SUM: u64 = 2;
/// lend: fail with the argument.
const FAIL: u64 = 3;
/// A plain call, dropped unanswered.
const DROP_CALL: u64 = 4;
/// send_buf: keep the buffer (`kept <len> <sum>`); the server's books then hold no lend.
const KEEP: u64 = 6;
/// Report the sums of the kept buffers, read again now (`kept-sums <sum> ..`), then add 1 to
/// the first byte of each in place.
const KEPT_SUMS: u64 = 7;
/// lend_box_mut of a `SimpleValue`: increment it in place (`incremented`, or `refused <why>`).
const BOX_INC: u64 = 8;
/// lend_box of a `SimpleValue`: report it (`value <inner>`, or `refused <why>`).
const BOX_READ: u64 = 9;

/// flatipc's example type.
#[derive(courier_derive::Ipc, Clone, Copy, Debug, PartialEq)]
#[ipc(crate = "courier_core::flat")]
#[repr(C)]
struct SimpleValue {
    inner: u32,
}

/// The server's largest lend (`max_lend`), so that a bigger gift is refused.
const MAX_LEND: usize = 16 << 20;

/// lend_mut of a window: report `window <offset> <len>`, write `offset + i` into the first
/// `arg` bytes, report them valid, and drop (answering `Ok(())` with the count). An `arg`
/// longer than the window is refused by `set_valid` (`refused <arg>`), and the whole window
/// counts as valid.
const READ_INTO: u64 = 5;

/// The `server-gateway` role's storage server name.
const STORAGE: &str = "XOUS_STORAGE";

type XousServer = Server<Op, (), u64>;
type XousClient = Client<Op, (), u64>;

// ---------------------------------------------------------------------------------------
// The peer process.

/// Not a test of its own: the body of the peer processes. Without `COURIER_SHM_TEST_ROLE`
/// it does nothing.
#[test]
fn peer_main() {
    let Some((role, name)) = peer_role() else {
        return;
    };
    match role.as_str() {
        "server-xous" => serve_xous(&name),
        // Connect, lend a buffer once, drop the client cleanly, then wait for stdin to
        // close and exit normally.
        "client-disconnect" => {
            let cli = XousClient::connect(&name, DEADLINE).unwrap();
            let mut buf = ShmBuf::new(4096).unwrap();
            let r = cli.lend_mut([INCREMENT, 0], &mut buf);
            say(&format!("lent {r:?} {}", buf.view().to_vec()[0]));
            drop(cli);
            say("dropped");
            read_stdin_line();
        }
        // A named server whose blocking scalar opens a session: an unnamed server, whose id
        // goes back in the two reply words; each session fails every call with `arg + 1000`.
        "server-session" => {
            let directory = XousServer::bind(&name, ServerConfig::new()).unwrap();
            say("ready");
            while let Ok(incoming) = directory.wait() {
                if let Incoming::Scalar(sc) = incoming {
                    let (session, id) = XousServer::bind_unnamed(ServerConfig::new()).unwrap();
                    say(&format!("session {id}"));
                    std::thread::spawn(move || {
                        while let Ok(Incoming::Call([_, arg], ctx)) = session.wait() {
                            let _ = ctx.fail(arg + 1000);
                        }
                    });
                    let _ = sc.reply(id.to_words());
                }
            }
        }
        // A gateway: every call, lends included, forwarded to the server named in STORAGE.
        "server-gateway" => {
            let gateway = XousServer::bind(&name, ServerConfig::new().forwarding(true)).unwrap();
            let storage = XousClient::connect(&std::env::var(STORAGE).unwrap(), DEADLINE).unwrap();
            say("ready");
            while let Ok(incoming) = gateway.wait() {
                if let Incoming::Call(rq, ctx) = incoming {
                    let r = ctx.forward(&storage, rq);
                    say(&format!("forwarded {} {r:?}", rq[0]));
                }
            }
        }
        // Connect, then hold the connection until stdin closes.
        "client-idle" => {
            let _cli = XousClient::connect(&name, DEADLINE).unwrap();
            say("connected");
            read_stdin_line();
        }
        other => panic!("unknown role {other}"),
    }
}

/// The `server-xous` role: serves until stdin says `quit`, then drops its `Server` and
/// exits normally.
fn serve_xous(name: &str) {
    let server = XousServer::bind(name, ServerConfig::new().max_lend(MAX_LEND)).unwrap();
    let mut kept = Vec::new();
    let quit = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let q = std::sync::Arc::clone(&quit);
    std::thread::spawn(move || {
        if read_stdin_line().trim() == "quit" {
            q.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    say("ready");
    while !quit.load(std::sync::atomic::Ordering::SeqCst) {
        match server.wait_timeout(Duration::from_millis(20)) {
            Ok(incoming) => handle(incoming, &mut kept, &server),
            Err(Error::Timeout) => {}
            Err(e) => panic!("wait: {e}"),
        }
    }
    drop(server);
    say("closed");
}

fn sum(view: &courier_shm::ShmView<'_>) -> u64 {
    view.to_vec().iter().map(|&b| u64::from(b)).sum()
}

fn handle(
    incoming: Incoming<Op, (), u64>,
    kept: &mut Vec<courier_shm::SentBuf>,
    server: &XousServer,
) {
    let Incoming::Call([op, arg], mut ctx) = incoming else {
        return;
    };
    match op {
        INCREMENT => {
            if let Some(mut lent) = ctx.lent_mut() {
                let mut first = [0u8];
                lent.read_at(0, &mut first).unwrap();
                lent.write_at(0, &[first[0].wrapping_add(1)]).unwrap();
            }
            // Dropped: the caller's lend_mut returns Ok(()).
        }
        SUM => {
            let total = ctx.lent().map(|l| sum(&l)).unwrap_or(0);
            say(&format!("sum {total}"));
        }
        FAIL => {
            let _ = ctx.fail(arg);
        }
        DROP_CALL => drop(ctx),
        BOX_INC => match ctx.update_lent(|v: &mut SimpleValue| v.inner += 1) {
            Some(Ok(())) => say("incremented"),
            Some(Err(e)) => say(&format!("refused {e:?}")),
            None => say("no lend"),
        },
        BOX_READ => match ctx.lent_value::<SimpleValue>() {
            Some(Ok(v)) => say(&format!("value {}", v.inner)),
            Some(Err(e)) => say(&format!("refused {e:?}")),
            None => say("no lend"),
        },
        KEEP => {
            let buf = ctx.take_sent().expect("a buffer given away");
            assert!(ctx.is_one_way());
            drop(ctx);
            say(&format!(
                "kept {} {} lends {}",
                buf.len(),
                sum(&buf.view()),
                server.stats().lends
            ));
            kept.push(buf);
        }
        KEPT_SUMS => {
            let sums: Vec<String> = kept.iter().map(|b| sum(&b.view()).to_string()).collect();
            for b in kept.iter_mut() {
                let first = b.view().to_vec()[0];
                b.view_mut().write_at(0, &[first.wrapping_add(1)]).unwrap();
            }
            say(&format!("kept-sums {}", sums.join(" ")));
        }
        READ_INTO => {
            let offset = ctx.lent_offset().unwrap();
            let len = ctx.lent().unwrap().len();
            say(&format!("window {offset} {len}"));
            let n = (arg as usize).min(len);
            let bytes: Vec<u8> = (0..n).map(|i| (offset + i) as u8).collect();
            ctx.lent_mut().unwrap().write_at(0, &bytes).unwrap();
            if ctx.set_valid(arg as usize).is_err() {
                say(&format!("refused {arg}"));
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// The tests.

/// A server process, ready, and a client of it in this process.
fn xous_server(dir: &TestDir, name: &str) -> (Peer, XousClient) {
    let peer = spawn("server-xous", dir, name, None);
    assert_eq!(peer.line(), "ready");
    let cli = XousClient::connect(name, DEADLINE).unwrap();
    (peer, cli)
}

#[test]
fn dropping_a_lend_with_a_unit_reply_answers_it() {
    let _g = serial();
    let dir = TestDir::new("xous-drop");
    let name = unique("xous-drop");
    let (srv, cli) = xous_server(&dir, &name);

    // The flatipc seed's example: the server increments 42 to 43 in place, and answers by
    // letting the message go.
    let mut buf = ShmBuf::new(4096).unwrap();
    buf.view_mut().write_at(0, &[42]).unwrap();
    assert_eq!(cli.lend_mut([INCREMENT, 0], &mut buf), Ok(()));
    assert_eq!(buf.view().to_vec()[0], 43);

    // A read-only lend, dropped: Ok(()) too, and the server read the caller's bytes.
    buf.view_mut().write_at(0, &[1, 2, 3]).unwrap();
    assert_eq!(cli.lend([SUM, 0], &buf), Ok(()));
    assert_eq!(srv.line(), "sum 6");

    // An explicit failure still reaches the caller, and a plain call dropped unanswered is
    // still NoReply: only lends are answered by dropping.
    assert_eq!(cli.lend([FAIL, 9], &buf), Err(Error::App(9)));
    assert_eq!(cli.req([DROP_CALL, 0]), Err(Error::NoReply));
}

/// Xous's `offset` and `valid`: a lend of a sub-range shows the server that window only, and
/// the server reports how many of its bytes are valid.
#[test]
fn a_lend_of_a_window_carries_offset_and_valid() {
    let _g = serial();
    let dir = TestDir::new("xous-window");
    let name = unique("xous-window");
    let (srv, cli) = xous_server(&dir, &name);
    let mut buf = ShmBuf::new(8192).unwrap();
    buf.view_mut().copy_from_slice(&[0xEE; 8192]);

    // The server fills 100 bytes of the window 1000..5096 and says 100 are valid.
    assert_eq!(
        cli.lend_mut_range([READ_INTO, 100], &mut buf, 1000..5096),
        Ok(((), 100))
    );
    assert_eq!(srv.line(), "window 1000 4096");
    let after = buf.view().to_vec();
    let expected: Vec<u8> = (1000..1100).map(|i| i as u8).collect();
    assert_eq!(&after[1000..1100], &expected[..]);
    // Nothing outside what the server wrote changed: before the window, after the bytes.
    assert!(after[..1000].iter().all(|&b| b == 0xEE));
    assert!(after[1100..].iter().all(|&b| b == 0xEE));

    // A count longer than the window is refused on the server's side; the window's length
    // is what the caller gets.
    assert_eq!(
        cli.lend_mut_range([READ_INTO, 9000], &mut buf, 0..16),
        Ok(((), 16))
    );
    assert_eq!(srv.line(), "window 0 16");
    assert_eq!(srv.line(), "refused 9000");

    // A read-only window: the server sees its bytes only.
    buf.view_mut().copy_from_slice(&[0; 8192]);
    buf.view_mut().write_at(4096, &[5, 6, 7]).unwrap();
    assert_eq!(cli.lend_range([SUM, 0], &buf, 4096..4099), Ok(()));
    assert_eq!(srv.line(), "sum 18");

    // A window outside the buffer is refused before anything is sent.
    assert_eq!(
        cli.lend_range([SUM, 0], &buf, 8000..8200),
        Err(Error::TooLarge)
    );
    let (start, end) = (10, 5);
    assert_eq!(
        cli.lend_mut_range([READ_INTO, 1], &mut buf, start..end),
        Err(Error::TooLarge)
    );
    // The connection goes on.
    assert_eq!(cli.lend([SUM, 0], &buf), Ok(()));
    assert_eq!(srv.line(), "sum 18");
}

#[test]
fn a_client_that_disconnects_cleanly_is_forgotten() {
    let _g = serial();
    let dir = TestDir::new("xous-bye");
    let name = unique("xous-bye");
    let server = XousServer::bind(&name, ServerConfig::new()).unwrap();
    let mut client = spawn("client-disconnect", &dir, &name, None);
    // Its lend_mut, served here and answered by dropping.
    match server.wait_timeout(DEADLINE).unwrap() {
        Incoming::Call([INCREMENT, _], mut ctx) => {
            assert_eq!(server.stats().lends, 1);
            ctx.lent_mut().unwrap().write_at(0, &[7]).unwrap();
            drop(ctx);
        }
        _ => panic!("expected the client's lend_mut"),
    }
    assert_eq!(client.line(), "lent Ok(()) 7");
    assert_eq!(client.line(), "dropped");
    // The server forgets the client: no connection, no lend, nothing queued.
    wait_for("the server to forget the client", || {
        let s = server.stats();
        s.clients == 0 && s.lends == 0 && s.queued == 0 && s.in_service == 0
    });
    // It still serves: another client connects and calls.
    let other = XousClient::connect(&name, DEADLINE).unwrap();
    let srv = std::thread::spawn(move || {
        if let Incoming::Call(_, ctx) = server.wait_timeout(DEADLINE).unwrap() {
            let _ = ctx.fail(5);
        }
    });
    assert_eq!(other.req([0, 0]), Err(Error::App(5)));
    srv.join().unwrap();
    // And the client process ends normally.
    client.close_stdin();
    assert!(client.exit_status().success());
}

#[test]
fn a_server_that_closes_cleanly_ends_its_clients_calls() {
    let _g = serial();
    let dir = TestDir::new("xous-close");
    let name = unique("xous-close");
    let (mut srv, cli) = xous_server(&dir, &name);
    assert_eq!(cli.lend([SUM, 0], &ShmBuf::new(4096).unwrap()), Ok(()));
    assert_eq!(srv.line(), "sum 0");
    srv.tell("quit");
    assert_eq!(srv.line(), "closed");
    assert!(srv.exit_status().success());
    wait_for("the client to see the server gone", || cli.is_server_gone());
    assert_eq!(cli.req([SUM, 0]), Err(Error::ServerDisappeared));
    let mut buf = ShmBuf::new(4096).unwrap();
    assert_eq!(
        cli.lend_mut([INCREMENT, 0], &mut buf),
        Err(Error::ServerDisappeared)
    );
    // The name is free again: a new server takes it and the old client may reconnect.
    let (_srv2, again) = xous_server(&dir, &name);
    assert_eq!(again.lend_mut([INCREMENT, 0], &mut buf), Ok(()));
    assert_eq!(buf.view().to_vec()[0], 1);
}

/// `register_name(name, Some(2))`: a server admits two client processes; a third is refused
/// at connect (`ServerFull`), and admitted once one of the two has gone.
#[test]
fn a_connection_limit_refuses_one_client_too_many() {
    let _g = serial();
    let dir = TestDir::new("xous-limit");
    let name = unique("xous-limit");
    let server = XousServer::bind(&name, ServerConfig::new().max_clients(2)).unwrap();
    let mut first = spawn("client-idle", &dir, &name, None);
    let second = spawn("client-idle", &dir, &name, None);
    assert_eq!(first.line(), "connected");
    assert_eq!(second.line(), "connected");
    wait_for("two clients", || server.stats().clients == 2);
    match XousClient::connect(&name, DEADLINE) {
        Err(ShmError::ServerFull(n)) => assert_eq!(n, name),
        other => panic!("a third client was not refused: {:?}", other.map(|_| ())),
    }
    first.close_stdin();
    assert!(first.exit_status().success());
    wait_for("one client", || server.stats().clients == 1);
    let third = XousClient::connect(&name, DEADLINE).unwrap();
    let srv = std::thread::spawn(move || {
        if let Incoming::Call(_, ctx) = server.wait_timeout(DEADLINE).unwrap() {
            let _ = ctx.fail(3);
        }
    });
    assert_eq!(third.req([0, 0]), Err(Error::App(3)));
    srv.join().unwrap();
}

/// Xous's unnamed servers: a named server hands out the id of an unnamed one (in a scalar
/// reply), the client connects by id and is served; `services()` lists the named server
/// only; an id nobody serves is not found.
#[test]
fn an_unnamed_server_is_reached_by_the_id_another_hands_out() {
    let _g = serial();
    let dir = TestDir::new("xous-sid");
    let name = unique("xous-sid");
    let peer = spawn("server-session", &dir, &name, None);
    assert_eq!(peer.line(), "ready");
    let directory = XousClient::connect(&name, DEADLINE).unwrap();
    let words = directory.blocking_scalar(1, [0; 4]).unwrap();
    let id = ServerId::from_words(words);
    assert_eq!(peer.line(), format!("session {id}"));
    let session = XousClient::connect_id(id, DEADLINE).unwrap();
    assert_eq!(session.server_pid(), peer.pid() as u32);
    assert_eq!(session.req([0, 5]), Err(Error::App(1005)));
    // A second session is another server.
    let other = ServerId::from_words(directory.blocking_scalar(1, [0; 4]).unwrap());
    assert_ne!(other, id);
    assert_eq!(peer.line(), format!("session {other}"));
    // Out of sight: only the named server is listed.
    let listed: Vec<String> = courier_shm::services()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&name));
    // An id that nobody serves.
    let nobody = "0123456789abcdef0123456789abcdef".parse().unwrap();
    assert!(matches!(
        XousClient::connect_id(nobody, Duration::from_millis(100)),
        Err(ShmError::Timeout)
    ));
}

/// Xous's memory `send`: `send_buf` gives a buffer away, with no copy; the server keeps its
/// pages after the call (off its lend books) and reads and writes them later, whatever the
/// client does next. A gift the server cannot take comes back with its request.
#[test]
fn a_buffer_given_away_is_the_servers_to_keep() {
    let _g = serial();
    let dir = TestDir::new("xous-gift");
    let name = unique("xous-gift");
    let (srv, cli) = xous_server(&dir, &name);
    let mut frame = ShmBuf::new(8 << 20).unwrap();
    frame.view_mut().copy_from_slice(&vec![0x80; 8 << 20]);
    cli.send_buf([KEEP, 0], frame).map_err(|(e, ..)| e).unwrap();
    let full = (8u64 << 20) * 0x80;
    assert_eq!(srv.line(), format!("kept {} {full} lends 0", 8 << 20));
    // A second gift, and the first is still the server's, readable and writable.
    let mut small = ShmBuf::new(4096).unwrap();
    small.view_mut().copy_from_slice(&[1; 4096]);
    cli.send_buf([KEEP, 0], small).map_err(|(e, ..)| e).unwrap();
    assert_eq!(srv.line(), "kept 4096 4096 lends 0");
    assert_eq!(cli.req([KEPT_SUMS, 0]), Err(Error::NoReply));
    assert_eq!(srv.line(), format!("kept-sums {full} 4096"));
    assert_eq!(cli.req([KEPT_SUMS, 0]), Err(Error::NoReply));
    assert_eq!(srv.line(), format!("kept-sums {} 4097", full + 1));
    // Larger than the server's max_lend: refused, and the request and buffer come back.
    let mut big = ShmBuf::new(MAX_LEND + 4096).unwrap();
    big.view_mut().write_at(0, &[9]).unwrap();
    match cli.send_buf([KEEP, 5], big) {
        Err((Error::TooLarge, rq, back)) => {
            assert_eq!(rq, [KEEP, 5]);
            assert_eq!(back.view().to_vec()[0], 9);
        }
        other => panic!(
            "expected TooLarge with the gift back, got {:?}",
            other.map_err(|(e, ..)| e)
        ),
    }
    // The connection goes on.
    assert_eq!(cli.lend([SUM, 0], &ShmBuf::new(4096).unwrap()), Ok(()));
    assert_eq!(srv.line(), "sum 0");
}

/// The resident memory of process `pid`, in bytes (VmRSS).
fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Xous's forwarding: a gateway process passes every call, with its lend, to a storage
/// process, which answers the original caller through it; the lent pages are never copied
/// by the gateway (its resident memory does not grow by the 15 MiB it forwards).
#[test]
fn a_gateway_forwards_calls_and_lends_without_copying_them() {
    let _g = serial();
    let dir = TestDir::new("xous-fwd");
    let storage_name = unique("xous-storage");
    let name = unique("xous-gateway");
    let storage = spawn("server-xous", &dir, &storage_name, None);
    assert_eq!(storage.line(), "ready");
    let gateway = spawn_with(
        "server-gateway",
        &dir,
        &name,
        None,
        &[(STORAGE, storage_name)],
    );
    assert_eq!(gateway.line(), "ready");
    let cli = XousClient::connect(&name, DEADLINE).unwrap();

    // The seed's example, through the gateway: 42 becomes 43 in the caller's buffer.
    let mut buf = ShmBuf::new(4096).unwrap();
    buf.view_mut().write_at(0, &[42]).unwrap();
    assert_eq!(cli.lend_mut([INCREMENT, 0], &mut buf), Ok(()));
    assert_eq!(buf.view().to_vec()[0], 43);
    assert_eq!(gateway.line(), format!("forwarded {INCREMENT} Ok(())"));
    // A shared lend and a window with its valid count.
    buf.view_mut().write_at(0, &[1, 2, 3]).unwrap();
    assert_eq!(cli.lend([SUM, 0], &buf), Ok(()));
    assert_eq!(storage.line(), "sum 6");
    assert_eq!(gateway.line(), format!("forwarded {SUM} Ok(())"));
    assert_eq!(
        cli.lend_mut_range([READ_INTO, 10], &mut buf, 100..200),
        Ok(((), 10))
    );
    assert_eq!(storage.line(), "window 100 100");
    assert_eq!(gateway.line(), format!("forwarded {READ_INTO} Ok(())"));
    assert_eq!(
        buf.view().to_vec()[100..110],
        (100..110).map(|i| i as u8).collect::<Vec<_>>()[..]
    );
    // A typed lend keeps its signature through the gateway.
    let mut boxed = ShmBox::new(SimpleValue { inner: 42 }).unwrap();
    assert_eq!(cli.lend_box_mut([BOX_INC, 0], &mut boxed), Ok(()));
    assert_eq!(storage.line(), "incremented");
    assert_eq!(gateway.line(), format!("forwarded {BOX_INC} Ok(())"));
    assert_eq!(boxed.get(), Ok(SimpleValue { inner: 43 }));
    // Errors pass through as they are.
    assert_eq!(cli.lend([FAIL, 9], &buf), Err(Error::App(9)));
    assert_eq!(gateway.line(), format!("forwarded {FAIL} Ok(())"));
    assert_eq!(cli.req([DROP_CALL, 0]), Err(Error::NoReply));
    assert_eq!(gateway.line(), format!("forwarded {DROP_CALL} Ok(())"));

    // 15 MiB (under the storage's max_lend) through the gateway: the storage reads every
    // page, the gateway touches none.
    let size = 15 << 20;
    let before = rss(gateway.pid());
    let mut big = ShmBuf::new(size).unwrap();
    big.view_mut().copy_from_slice(&vec![7; size]);
    assert_eq!(cli.lend([SUM, 0], &big), Ok(()));
    assert_eq!(storage.line(), format!("sum {}", 7 * size as u64));
    assert_eq!(gateway.line(), format!("forwarded {SUM} Ok(())"));
    let after = rss(gateway.pid());
    assert!(
        after < before + (size as u64) / 2,
        "the gateway's resident memory grew from {before} to {after} bytes forwarding {size}"
    );
}

/// flatipc's typed lends across two processes: the seed's own example (the server increments
/// 42 to 43 in place) with a `ShmBox<SimpleValue>`; the signature travels with the lend, so a
/// value of another type, or plain bytes, is refused by the server's typed read.
#[test]
fn a_typed_value_is_lent_with_its_signature() {
    let _g = serial();
    let dir = TestDir::new("xous-box");
    let name = unique("xous-box");
    let (srv, cli) = xous_server(&dir, &name);
    let mut value = ShmBox::new(SimpleValue { inner: 42 }).unwrap();
    assert_eq!(cli.lend_box_mut([BOX_INC, 0], &mut value), Ok(()));
    assert_eq!(srv.line(), "incremented");
    assert_eq!(value.get(), Ok(SimpleValue { inner: 43 }));
    // Read-only: the server reads it, checked.
    assert_eq!(cli.lend_box([BOX_READ, 0], &value), Ok(()));
    assert_eq!(srv.line(), "value 43");
    // Lent read-only, a change is refused (no mutable view), and the value is unchanged.
    assert_eq!(cli.lend_box([BOX_INC, 0], &value), Ok(()));
    assert_eq!(srv.line(), "no lend");
    assert_eq!(value.get(), Ok(SimpleValue { inner: 43 }));
    // Another type, or bytes: the signatures differ.
    let other = ShmBox::new([7u64; 2]).unwrap();
    assert_eq!(cli.lend_box([BOX_READ, 0], &other), Ok(()));
    assert!(srv.line().starts_with("refused SignatureMismatch"));
    assert_eq!(cli.lend([BOX_READ, 0], other.buf()), Ok(()));
    assert!(srv.line().starts_with("refused SignatureMismatch"));
    // set, then lent again.
    value.set(SimpleValue { inner: 1000 });
    assert_eq!(cli.lend_box_mut([BOX_INC, 0], &mut value), Ok(()));
    assert_eq!(srv.line(), "incremented");
    assert_eq!(value.get(), Ok(SimpleValue { inner: 1001 }));
}
