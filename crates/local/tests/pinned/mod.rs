//! A server pinned to one CPU and a client that starts beside it, for the placement tests
//! (`placement.rs`, `placement_off.rs`: binaries of their own, as moves are process-wide).
// Each binary uses a part.
#![allow(dead_code)]

use courier_core::placement::this_cpu;
use courier_local::{channel, Client};
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

/// Where the pair runs.
pub(crate) struct Place {
    /// The process's mask: the client's after its first call.
    pub(crate) mask: CpuSet,
    /// The server's CPU, plus one (as `this_cpu`).
    pub(crate) server_cpu: u32,
    /// A mask of the server's CPU alone.
    pub(crate) one: CpuSet,
}

impl Place {
    /// Puts the calling thread back on the server's CPU, free to leave it again.
    pub(crate) fn go_beside_the_server(&self) {
        sched_setaffinity(None, &self.one).unwrap();
        sched_setaffinity(None, &self.mask).unwrap();
    }
}

/// Runs `calls` on a client thread that made its first call pinned beside a server pinned to
/// the CPU this thread runs on, then was freed; returns its result once the server has ended.
/// `None` (with a message) where the process may run on one CPU only.
pub(crate) fn beside_a_pinned_server<R: Send + 'static>(
    calls: impl FnOnce(&Client<u64, u64, ()>, &Place) -> R + Send + 'static,
) -> Option<R> {
    let mask = sched_getaffinity(None).unwrap();
    if mask.count() < 2 {
        eprintln!("skipped: this process may run on one CPU only");
        return None;
    }
    let server_cpu = this_cpu();
    let mut one = CpuSet::new();
    one.set(server_cpu as usize - 1);
    let place = Place {
        mask,
        server_cpu,
        one,
    };
    let (server, client) = channel::<u64, u64, ()>();
    let served = std::thread::spawn(move || {
        sched_setaffinity(None, &one).unwrap();
        while let Ok((x, ctx)) = server.wait() {
            let _ = ctx.reply(x + 1);
        }
    });
    let result = std::thread::spawn(move || {
        sched_setaffinity(None, &place.one).unwrap();
        assert_eq!(client.req(0), Ok(1));
        // Free to go now; the server stays pinned.
        sched_setaffinity(None, &place.mask).unwrap();
        calls(&client, &place)
    })
    .join()
    .unwrap();
    served.join().unwrap();
    Some(result)
}
