//! The floors of a round trip between two processes, where no transport could do less:
//!
//! - **the wake-up floor** ([`Wait::Futex`]) of the sleeping regime: two processes that wake
//!   each other with a bare futex, no spin, no payload beyond the futex words themselves;
//! - **the handover floor** ([`Wait::Handover`]) of two processes that share one CPU: both
//!   pinned to the caller's CPU, each waits for the other with `sched_yield`, so each round
//!   trip is two switches from one process to the other; the server writes the payload (N
//!   bytes, when large) in a shared mapping and the client checks its first and last byte.
//!   With a core busy, courier's default hands one CPU back and forth this way.
//!
//! One page of a file in the run's private directory, mapped by both processes, holds the
//! client's request word and the server's reply word (and a stop flag, and the CPU of a
//! handover); the payload follows it.
//!
//! ```text
//! client                                  server
//! rq = seq (Release); futex_wake(rq)      while rq == last: futex_wait(rq, last)
//! while rp != seq: futex_wait(rp, ..)     [memset payload]; rp = rq (Release); futex_wake(rp)
//! ```
//!
//! With [`Wait::Futex`] each side calls `futex_wake` on every message whether or not the other
//! sleeps, and sleeps whenever the answer is not already there: what any sleeping transport
//! must pay at least. With [`Wait::Handover`] `futex_wait` is `sched_yield` and there is no
//! `futex_wake`.

use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use rustix::thread::{futex, sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
use std::fs::File;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The page of the words; the payload follows it.
const PAGE: usize = 4096;
/// How long one side waits for the other before it gives up (a dead peer).
const PATIENCE: Duration = Duration::from_secs(10);

/// How the two sides wait for each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// `futex_wait` / `futex_wake`, wherever the scheduler puts the two.
    Futex,
    /// `sched_yield`, both pinned to the caller's CPU.
    Handover,
}

/// The words and the payload, mapped from the shared file.
pub(crate) struct Words {
    base: NonNull<u8>,
    /// Bytes of payload after the page.
    n: usize,
}

// SAFETY: the page is only reached through atomics, which any thread may use; the payload
// only through raw pointers (`fill`, `ends`), written by one process while the other waits.
unsafe impl Send for Words {}

impl Words {
    /// Creates the shared file at `path` (zeroed), with room for `n` bytes of payload, and
    /// maps it.
    pub(crate) fn create(path: &Path, n: usize) -> Result<Words, String> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        file.set_len((PAGE + n) as u64)
            .map_err(|e| format!("sizing {}: {e}", path.display()))?;
        Self::map(&file, n)
    }

    /// Maps the shared file at `path`, made by the other process.
    pub(crate) fn open(path: &Path) -> Result<Words, String> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        let len = file
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len() as usize;
        Self::map(
            &file,
            len.checked_sub(PAGE)
                .ok_or("the shared file is too short")?,
        )
    }

    fn map(file: &File, n: usize) -> Result<Words, String> {
        // SAFETY: a fresh shared mapping of a file of PAGE + n bytes, at an address the
        // kernel picks; nothing else in this process refers to that range.
        let p = unsafe {
            mmap(
                std::ptr::null_mut(),
                PAGE + n,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                file,
                0,
            )
        }
        .map_err(|e| format!("mmap: {e}"))?;
        Ok(Words {
            base: NonNull::new(p.cast()).ok_or("mmap returned null")?,
            n,
        })
    }

    fn word(&self, i: usize) -> &AtomicU32 {
        // SAFETY: offsets 0 to 192 (i <= 3) are inside the page, aligned for u32, and the
        // page lives as long as `self`; both processes only use the words atomically.
        unsafe { &*self.base.as_ptr().add(i * 64).cast::<AtomicU32>() }
    }

    /// The client's request word.
    fn rq(&self) -> &AtomicU32 {
        self.word(0)
    }

    /// The server's reply word.
    fn rp(&self) -> &AtomicU32 {
        self.word(1)
    }

    /// Set (before the last request) when the server should end after answering it.
    fn stop(&self) -> &AtomicU32 {
        self.word(2)
    }

    /// The CPU both pin themselves to, plus one ([`Wait::Handover`]; 0: [`Wait::Futex`]).
    fn cpu(&self) -> &AtomicU32 {
        self.word(3)
    }

    /// Sets every byte of the payload to `byte` (the server, between a request and its
    /// reply, while the client waits).
    fn fill(&self, byte: u8) {
        // SAFETY: the payload is the `n` bytes after the page, inside the mapping; only
        // raw-pointer writes and reads reach it, and the client reads it only after the
        // Release store of the reply word that follows this.
        unsafe { std::ptr::write_bytes(self.base.as_ptr().add(PAGE), byte, self.n) }
    }

    /// The first and last byte of the payload, if any (the client, after the reply).
    fn ends(&self) -> Option<(u8, u8)> {
        if self.n == 0 {
            return None;
        }
        // SAFETY: bytes 0 and n - 1 of the payload, inside the mapping; read by copy, after
        // the Acquire load of the reply word that followed the server's `fill`.
        unsafe {
            let p = self.base.as_ptr().add(PAGE);
            Some((p.read_volatile(), p.add(self.n - 1).read_volatile()))
        }
    }
}

impl Drop for Words {
    fn drop(&mut self) {
        // SAFETY: the range mapped in `map`, not used after this.
        let _ = unsafe { munmap(self.base.as_ptr().cast(), PAGE + self.n) };
    }
}

/// Waits until `word` no longer holds `old`, at most [`PATIENCE`] in all: asleep on it, or
/// yielding the CPU to the other process.
fn wait_change(word: &AtomicU32, old: u32, wait: Wait) -> Result<u32, String> {
    let deadline = Instant::now() + PATIENCE;
    let mut looks = 0u32;
    loop {
        let v = word.load(Ordering::Acquire);
        if v != old {
            return Ok(v);
        }
        looks = looks.wrapping_add(1);
        // A clock read every 256 looks when yielding (each look is a system call already).
        let left = if wait == Wait::Futex || looks % 256 == 0 {
            Some(
                deadline
                    .checked_duration_since(Instant::now())
                    .ok_or("the other process did not answer within 10 s")?,
            )
        } else {
            None
        };
        match (wait, left) {
            (Wait::Futex, Some(left)) => {
                let ts = rustix::time::Timespec {
                    tv_sec: left.as_secs() as _,
                    tv_nsec: left.subsec_nanos() as _,
                };
                // EAGAIN (the word moved) and EINTR are looked at again above.
                let _ = futex::wait(word, futex::Flags::empty(), old, Some(&ts));
            }
            _ => rustix::thread::sched_yield(),
        }
    }
}

/// Stores `v` in `word` and, asleep on it, wakes its sleeper.
fn publish(word: &AtomicU32, v: u32, wait: Wait) {
    word.store(v, Ordering::Release);
    if wait == Wait::Futex {
        let _ = futex::wake(word, futex::Flags::empty(), 1);
    }
}

/// The payload byte of call `seq`.
fn byte_of(seq: u32) -> u8 {
    (seq % 251) as u8 + 1
}

/// Pins the calling thread to CPU `cpu`.
fn pin(cpu: usize) -> Result<(), String> {
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(None, &set).map_err(|e| format!("pinning to CPU {cpu}: {e}"))
}

/// The client side: a sequence number per call (the request word), answered by the same
/// number in the reply word.
pub(crate) struct Caller {
    words: Words,
    seq: u32,
    wait: Wait,
    /// The affinity to put back when done ([`Wait::Handover`]).
    was: Option<CpuSet>,
}

impl Caller {
    /// The client of the words `words` (fresh: all zero), waiting by `wait`: with
    /// [`Wait::Handover`], pinned to the CPU it runs on now until it is dropped, and the
    /// server started after this pins itself there too.
    pub(crate) fn new(words: Words, wait: Wait) -> Result<Caller, String> {
        let mut was = None;
        if wait == Wait::Handover {
            was = Some(sched_getaffinity(None).map_err(|e| format!("sched_getaffinity: {e}"))?);
            let cpu = sched_getcpu();
            pin(cpu)?;
            words.cpu().store(cpu as u32 + 1, Ordering::Release);
        }
        Ok(Caller {
            words,
            seq: 0,
            wait,
            was,
        })
    }

    /// One round trip: returns `x + 1` once the server has answered (and its payload, if
    /// any, checks).
    pub(crate) fn call(&mut self, x: u64) -> Result<u64, String> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let w = &self.words;
        let before = w.rp().load(Ordering::Acquire);
        publish(w.rq(), self.seq, self.wait);
        let mut seen = before;
        while seen != self.seq {
            seen = wait_change(w.rp(), seen, self.wait)?;
        }
        let want = byte_of(self.seq);
        match w.ends() {
            Some((first, last)) if (first, last) != (want, want) => Err(format!(
                "bad payload: first {first}, last {last}, expected {want}"
            )),
            _ => Ok(x.wrapping_add(1)),
        }
    }

    /// Tells the server to end, and waits for its last answer.
    pub(crate) fn stop(&mut self) -> Result<(), String> {
        self.words.stop().store(1, Ordering::Release);
        self.call(0).map(drop)
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        if let Some(was) = &self.was {
            let _ = sched_setaffinity(None, was);
        }
    }
}

/// The server: answers each new request word with the same number (after filling the
/// payload), until told to stop.
pub(crate) fn serve(w: &Words) -> Result<(), String> {
    let wait = match w.cpu().load(Ordering::Acquire) {
        0 => Wait::Futex,
        cpu => {
            pin(cpu as usize - 1)?;
            Wait::Handover
        }
    };
    let mut last = 0;
    loop {
        last = wait_change(w.rq(), last, wait)?;
        let stopping = w.stop().load(Ordering::Acquire) != 0;
        w.fill(byte_of(last));
        publish(w.rp(), last, wait);
        if stopping {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handover between two threads: the caller is pinned to one CPU while it lives (the
    /// server thread too), every reply carries the payload of its call, and the caller's
    /// affinity is put back when it is dropped.
    #[test]
    fn a_handover_pins_both_to_one_cpu_and_checks_the_payload() {
        let path = std::env::temp_dir().join(format!("courier-pair-floor-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let before = sched_getaffinity(None).unwrap();
        let mut caller = Caller::new(Words::create(&path, 65536).unwrap(), Wait::Handover).unwrap();
        let pinned = sched_getaffinity(None).unwrap();
        assert_eq!(pinned.count(), 1, "the caller is not pinned to one CPU");
        let server = {
            let path = path.clone();
            std::thread::spawn(move || {
                let words = Words::open(&path)?;
                let r = serve(&words);
                let mask = sched_getaffinity(None).map_err(|e| e.to_string())?;
                r.map(|()| mask)
            })
        };
        for x in 0..100 {
            assert_eq!(caller.call(x), Ok(x + 1));
        }
        caller.stop().unwrap();
        let server_mask = server.join().unwrap().unwrap();
        assert_eq!(server_mask, pinned, "the server is not on the caller's CPU");
        drop(caller);
        assert_eq!(sched_getaffinity(None).unwrap(), before);
        std::fs::remove_file(&path).unwrap();
    }
}
