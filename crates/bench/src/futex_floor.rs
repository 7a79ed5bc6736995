//! The wake-up floor of the sleeping regime: two processes that wake each other with a bare
//! futex, no spin, no payload beyond the futex words themselves.
//!
//! One page of a file in the run's private directory, mapped by both processes, holds the
//! client's request word and the server's reply word (and a stop flag).
//!
//! ```text
//! client                                  server
//! rq = seq (Release); futex_wake(rq)      while rq == last: futex_wait(rq, last)
//! while rp != seq: futex_wait(rp, ..)     rp = rq (Release); futex_wake(rp)
//! ```
//!
//! Each side calls `futex_wake` on every message whether or not the other sleeps, and sleeps
//! whenever the answer is not already there: what any sleeping transport must pay at least.

use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use rustix::thread::futex;
use std::fs::File;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The size of the mapping: one page.
const LEN: usize = 4096;
/// How long one side waits for the other before it gives up (a dead peer).
const PATIENCE: Duration = Duration::from_secs(10);

/// The two words, mapped from the shared file.
pub(crate) struct Words {
    base: NonNull<u8>,
}

// SAFETY: the mapping is only reached through atomics (`rq`, `rp`), which any thread may use.
unsafe impl Send for Words {}

impl Words {
    /// Creates the shared file at `path` (zeroed) and maps it.
    pub(crate) fn create(path: &Path) -> Result<Words, String> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        file.set_len(LEN as u64)
            .map_err(|e| format!("sizing {}: {e}", path.display()))?;
        Self::map(&file)
    }

    /// Maps the shared file at `path`, made by the other process.
    pub(crate) fn open(path: &Path) -> Result<Words, String> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        Self::map(&file)
    }

    fn map(file: &File) -> Result<Words, String> {
        // SAFETY: a fresh shared mapping of a file of LEN bytes, at an address the kernel
        // picks; nothing else in this process refers to that range.
        let p = unsafe {
            mmap(
                std::ptr::null_mut(),
                LEN,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                file,
                0,
            )
        }
        .map_err(|e| format!("mmap: {e}"))?;
        Ok(Words {
            base: NonNull::new(p.cast()).ok_or("mmap returned null")?,
        })
    }

    fn word(&self, i: usize) -> &AtomicU32 {
        // SAFETY: offsets 0, 64 and 128 (i <= 2) are inside the page, aligned for u32, and
        // the page lives as long as `self`; both processes only use the words atomically.
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
}

impl Drop for Words {
    fn drop(&mut self) {
        // SAFETY: the range mapped in `map`, not used after this.
        let _ = unsafe { munmap(self.base.as_ptr().cast(), LEN) };
    }
}

/// Sleeps on `word` until it no longer holds `old`, at most [`PATIENCE`] in all.
fn wait_change(word: &AtomicU32, old: u32) -> Result<u32, String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let v = word.load(Ordering::Acquire);
        if v != old {
            return Ok(v);
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or("the other process did not answer within 10 s")?;
        let ts = rustix::time::Timespec {
            tv_sec: left.as_secs() as _,
            tv_nsec: left.subsec_nanos() as _,
        };
        // EAGAIN (the word moved) and EINTR are looked at again above.
        let _ = futex::wait(word, futex::Flags::empty(), old, Some(&ts));
    }
}

/// Stores `v` in `word` and wakes its sleeper.
fn publish(word: &AtomicU32, v: u32) {
    word.store(v, Ordering::Release);
    let _ = futex::wake(word, futex::Flags::empty(), 1);
}

/// The client side: a sequence number per call (the request word), answered by the same
/// number in the reply word.
pub(crate) struct Caller {
    words: Words,
    seq: u32,
}

impl Caller {
    /// The client of the words `words` (fresh: both zero).
    pub(crate) fn new(words: Words) -> Caller {
        Caller { words, seq: 0 }
    }

    /// One round trip: returns `x + 1` once the server has answered.
    pub(crate) fn call(&mut self, x: u64) -> Result<u64, String> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let w = &self.words;
        let before = w.rp().load(Ordering::Acquire);
        publish(w.rq(), self.seq);
        let mut seen = before;
        while seen != self.seq {
            seen = wait_change(w.rp(), seen)?;
        }
        Ok(x.wrapping_add(1))
    }

    /// Tells the server to end, and waits for its last answer.
    pub(crate) fn stop(&mut self) -> Result<(), String> {
        self.words.stop().store(1, Ordering::Release);
        self.call(0).map(drop)
    }
}

/// The server: answers each new request word with the same number, until told to stop.
pub(crate) fn serve(w: &Words) -> Result<(), String> {
    let mut last = 0;
    loop {
        last = wait_change(w.rq(), last)?;
        let stopping = w.stop().load(Ordering::Acquire) != 0;
        publish(w.rp(), last);
        if stopping {
            return Ok(());
        }
    }
}
