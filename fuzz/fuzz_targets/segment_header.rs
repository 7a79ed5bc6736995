//! Segment and header parsing, through public API only: a hostile listener (a thread of the
//! harness, bound at `<runtime dir>/<name>.sock` like a real one) answers each connection with
//! a handshake message, a memfd (sealed or not, of any size, its segment header and RPC header
//! made valid and then overwritten by the input) and, for the RPC client, a doorbell message
//! and doorbell memfd, all shaped by the input. The client side is the real
//! `Connection::connect_timeout` (the handshake and `Segment::open`) or `Client::connect`
//! (those, then the RPC header reader, the doorbell and a call or two on whatever it accepted).
//!
//! Invariants: nothing panics; connecting returns within its timeout + slack, with an error
//! or a connection; a client that accepted the crafted segment returns from its timed calls in
//! time (nobody serves them), and its drop returns.
#![no_main]

use courier_fuzz::{runtime_dir, timed, unique_name, Bytes, Mapping};
use courier_shm::{Client, ConnectConfig, Connection};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::net::{
    AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const CONNECT: Duration = Duration::from_millis(60);

/// One message the hostile listener sends: bytes and maybe a descriptor.
struct Msg {
    bytes: Vec<u8>,
    fd: Option<OwnedFd>,
}

/// What the listener answers to every connection until the next input.
type Script = Arc<Mutex<Vec<Msg>>>;

struct Hostile {
    name: String,
    script: Script,
}

fn hostile() -> &'static Hostile {
    static H: OnceLock<Hostile> = OnceLock::new();
    H.get_or_init(|| {
        let name = unique_name("fz-seg");
        let path = runtime_dir().join(format!("{name}.sock"));
        let sock = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .expect("socket");
        rustix::net::bind(&sock, &SocketAddrUnix::new(&path).expect("path")).expect("bind");
        rustix::net::listen(&sock, 64).expect("listen");
        let script: Script = Arc::new(Mutex::new(Vec::new()));
        let theirs = Arc::clone(&script);
        std::thread::spawn(move || {
            // The last connection stays open until the next one: a client that accepted the
            // segment keeps a live peer while the input runs.
            let mut _last: Option<OwnedFd> = None;
            loop {
                let Ok(conn) = rustix::net::accept(&sock) else {
                    continue;
                };
                for m in theirs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    send(&conn, &m.bytes, m.fd.as_ref());
                }
                _last = Some(conn);
            }
        });
        Hostile { name, script }
    })
}

fn send(sock: &OwnedFd, bytes: &[u8], fd: Option<&OwnedFd>) {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = fd {
        fds = [fd.as_fd()];
        control.push(SendAncillaryMessage::ScmRights(&fds));
    }
    // A client that gave up already is no error here.
    let _ = rustix::net::sendmsg(
        sock,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    );
}

/// A memfd of `len` bytes, with `fill` run on a mapping of it, sealed or not.
fn memfd(len: usize, seal: bool, fill: impl FnOnce(&Mapping)) -> Option<OwnedFd> {
    let fd = rustix::fs::memfd_create(
        "courier-fuzz",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .ok()?;
    rustix::fs::ftruncate(&fd, len as u64).ok()?;
    if let Some(m) = Mapping::new(fd.as_fd(), len) {
        fill(&m);
    }
    if seal {
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .ok()?;
    }
    Some(fd)
}

/// A valid segment header (crates/shm/src/segment.rs) for a segment of `len` bytes.
fn segment_header(m: &Mapping, len: usize) {
    m.write(0, b"CRSHMSEG");
    m.write(8, &1u32.to_le_bytes());
    m.write(12, &1u32.to_le_bytes());
    m.write(16, &(len as u64).to_le_bytes());
}

/// The payload size of an RPC layout (crates/shm/src/rpc/layout.rs), if in range.
fn rpc_total(slots: usize, slot_size: usize, depth: usize, psize: usize) -> usize {
    let a = |n: usize, k: usize| n.div_ceil(k) * k;
    let recs = a(192 + slots * 4, 64);
    let push = recs + slots * 128;
    let end = push + a(32 + psize, 64) * depth;
    let data = a(end + 64, 4096) - 64;
    data + a(slot_size, 64) * slots
}

/// The input's overwrites: up to 8 patches of up to 8 bytes anywhere in the file.
fn patches(m: &Mapping, b: &mut Bytes<'_>) {
    let n = b.u8() % 9;
    for _ in 0..n {
        let off = b.u16() as usize % m.len().max(1);
        let bytes = b.take(8);
        m.write(off, &bytes);
    }
}

fn hello(b: &mut Bytes<'_>, flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 16];
    h[..4].copy_from_slice(b"CRHS");
    h[4..6].copy_from_slice(&1u16.to_le_bytes());
    if flags & 0x04 != 0 {
        let i = b.u8() as usize % 17;
        if i == 16 {
            h.push(b.u8()); // one byte too long
        } else {
            h[i] = b.u8();
        }
    }
    h
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let h = hostile();
    let mut b = Bytes(data);
    let flags = b.u8();
    let rpc = flags & 0x01 != 0;
    let seal = flags & 0x02 == 0;
    let mut script = Vec::new();
    // The handshake: hello + the segment.
    let hello_bytes = hello(&mut b, flags);
    let len = if rpc {
        let (slots, size) = (1 + b.u8() as usize % 8, 1 + b.u16() as usize);
        let (depth, psize) = (1 + b.u8() as usize % 8, 1 + b.u8() as usize * 4);
        let total = rpc_total(slots, size, depth, psize);
        let fields = [slots, size, depth, psize];
        let delta = b.u8() as i8 as isize * 64;
        let len = (64 + total).saturating_add_signed(delta).min(1 << 20);
        let fd = memfd(len, seal, |m| {
            segment_header(m, len);
            m.write(64, b"CRPC");
            m.write(68, &1u32.to_le_bytes());
            for (i, v) in fields.iter().enumerate() {
                m.write(72 + 4 * i, &(*v as u32).to_le_bytes());
            }
            m.write(88, &1u32.to_le_bytes());
            patches(m, &mut b);
        });
        script.push(Msg {
            bytes: hello_bytes,
            fd: if flags & 0x08 != 0 { None } else { fd },
        });
        len
    } else {
        let len = b.u16() as usize;
        let fd = memfd(len, seal, |m| {
            segment_header(m, len);
            patches(m, &mut b);
        });
        script.push(Msg {
            bytes: hello_bytes,
            fd: if flags & 0x08 != 0 { None } else { fd },
        });
        len
    };
    // The RPC doorbell: "CRPCBELL" + 8 zero bytes and a 128-byte segment, both shaped by the
    // input when asked.
    if rpc && flags & 0x10 == 0 {
        let mut bell = b"CRPCBELL\0\0\0\0\0\0\0\0".to_vec();
        if flags & 0x20 != 0 {
            let i = b.u8() as usize % 16;
            bell[i] = b.u8();
        }
        let blen = if flags & 0x40 != 0 {
            b.u8() as usize * 2
        } else {
            128
        };
        let fd = memfd(blen, flags & 0x80 == 0, |m| {
            segment_header(m, blen);
            patches(m, &mut b);
        });
        script.push(Msg { bytes: bell, fd });
    }
    *h.script.lock().unwrap_or_else(|e| e.into_inner()) = script;

    if rpc {
        let r = timed("Client::connect", CONNECT, || {
            Client::<u64, u64, u32>::connect(&h.name, CONNECT)
        });
        if let Ok(c) = r {
            // The crafted segment was accepted: its calls still return in time.
            let t = Duration::from_millis(5);
            let _ = timed("req_timeout", t, || c.req_timeout(1, t));
            let _ = timed("blocking_scalar_timeout", t, || {
                c.blocking_scalar_timeout(1, [0; 4], t)
            });
            timed("dropping the client", Duration::ZERO, || drop(c));
        }
    } else {
        let cfg = ConnectConfig::new().max_segment_size(1 << 20);
        let r = timed("Connection::connect_timeout", CONNECT, || {
            Connection::connect_timeout(&h.name, &cfg, CONNECT)
        });
        if let Ok(c) = r {
            assert_eq!(
                c.segment().len(),
                len,
                "the segment's size is the sealed file's"
            );
            let mut buf = [0u8; 8];
            let _ = c
                .segment()
                .read_at(c.segment().payload().len().saturating_sub(4), &mut buf);
        }
    }
});
