//! What the courier fuzz targets share: a private runtime directory, unique service names,
//! a byte reader for the inputs, deadline checks, and a second mapping of a segment that the
//! harness finds through `/proc/self/fd` (no hook in courier-shm is needed).
//!
//! See `README.md` beside this crate for the targets and the invariants they assert.

pub mod rpc;

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Extra time an operation may take past its own timeout before the harness calls it a hang.
/// Generous: the machine has two cores shared with other builds, and ASan slows everything.
pub const SLACK: Duration = Duration::from_millis(1500);

/// The runtime directory of this process: a fresh 0700 directory, set as
/// `COURIER_RUNTIME_DIR` before any service is made (once per process).
pub fn runtime_dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::temp_dir();
        let mut n = 0u32;
        let dir = loop {
            let d = base.join(format!("courier-fuzz-{}-{n}", std::process::id()));
            match std::fs::create_dir(&d) {
                Ok(()) => break d,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => panic!("creating {}: {e}", d.display()),
            }
        };
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod 0700 of the runtime directory");
        std::env::set_var("COURIER_RUNTIME_DIR", &dir);
        dir
    })
}

/// A service name unique in this process and among processes: `<prefix>-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    runtime_dir();
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `op`, asserting it returned within `timeout` + [`SLACK`] (a hang is a finding).
pub fn timed<T>(what: &str, timeout: Duration, op: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let r = op();
    let took = start.elapsed();
    assert!(
        took <= timeout + SLACK,
        "{what} took {took:?}, past its timeout of {timeout:?} (+{SLACK:?} slack)"
    );
    r
}

/// Reads an input front to back; past its end every read gives zeros.
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }
    /// Up to `max` bytes (the count read first).
    pub fn take(&mut self, max: usize) -> Vec<u8> {
        let n = (self.u8() as usize % (max + 1)).min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
}

/// The identity (device, inode) of every memfd made by courier-shm that this process holds
/// open ("/memfd:courier-shm (deleted)" in `/proc/self/fd`), with its size.
pub fn courier_memfds() -> Vec<((u64, u64), u64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        if !target.to_string_lossy().starts_with("/memfd:courier-shm") {
            continue;
        }
        if let Ok(md) = std::fs::metadata(e.path()) {
            use std::os::unix::fs::MetadataExt;
            out.push(((md.dev(), md.ino()), md.size()));
        }
    }
    out
}

/// Waits up to `within` for the memfd `id` to be closed by everyone in this process.
/// `between` runs before each look (to drop what a worker thread may still be handing over).
pub fn memfd_closed(id: (u64, u64), within: Duration, mut between: impl FnMut()) -> bool {
    let deadline = Instant::now() + within;
    loop {
        between();
        if !courier_memfds().iter().any(|(m, _)| *m == id) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// How many descriptors this process has open (for leak checks).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// How many threads this process has (for leak checks).
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// The inodes of [`courier_memfds`], for a before/after comparison.
pub fn memfd_snapshot() -> HashSet<(u64, u64)> {
    courier_memfds().into_iter().map(|(id, _)| id).collect()
}

/// The largest courier memfd that appeared since `before`, mapped again by the harness.
pub fn map_new_segment(before: &HashSet<(u64, u64)>) -> Option<(Mapping, (u64, u64))> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    let mut best: Option<(u64, std::fs::File, (u64, u64))> = None;
    for e in dir.flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        if !target.to_string_lossy().starts_with("/memfd:courier-shm") {
            continue;
        }
        use std::os::unix::fs::MetadataExt;
        let Ok(md) = std::fs::metadata(e.path()) else {
            continue;
        };
        if before.contains(&(md.dev(), md.ino())) {
            continue;
        }
        if best.as_ref().is_none_or(|(len, _, _)| md.size() > *len) {
            // Opening /proc/self/fd/N opens the same memory file (read-write).
            if let Ok(f) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(e.path())
            {
                best = Some((md.size(), f, (md.dev(), md.ino())));
            }
        }
    }
    let (len, f, id) = best?;
    Some((Mapping::new(f.as_fd(), len as usize)?, id))
}

/// A shared mapping of a whole segment (its 64-byte header included) made by the harness:
/// the "other process" that scribbles over it.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is only accessed through atomics (see `write`/`read`).
unsafe impl Send for Mapping {}

impl Mapping {
    pub fn new(fd: BorrowedFd<'_>, len: usize) -> Option<Mapping> {
        if len == 0 {
            return None;
        }
        // SAFETY: a fresh shared mapping of a file we hold; nothing else is placed there.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                fd,
                0,
            )
        }
        .ok()?;
        Some(Mapping {
            ptr: NonNull::new(p.cast())?,
            len,
        })
    }

    /// The segment's size, header included.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn byte(&self, i: usize) -> &AtomicU8 {
        assert!(i < self.len);
        // SAFETY: inside the mapping, which lives as long as `self`; AtomicU8 is valid for
        // any byte and the other users of this memory access it atomically too.
        unsafe { &*self.ptr.as_ptr().add(i).cast::<AtomicU8>() }
    }

    /// Writes `bytes` at `off` (from the start of the segment), clipped to its end.
    pub fn write(&self, off: usize, bytes: &[u8]) {
        for (k, b) in bytes.iter().enumerate() {
            let Some(i) = off.checked_add(k).filter(|&i| i < self.len) else {
                return;
            };
            self.byte(i).store(*b, Ordering::Relaxed);
        }
    }

    /// Reads the `u64` at `off`, or 0 past the end.
    pub fn read_u64(&self, off: usize) -> u64 {
        u64::from(self.read_u32(off)) | u64::from(self.read_u32(off + 4)) << 32
    }

    /// Reads the `u32` at `off`, or 0 past the end.
    pub fn read_u32(&self, off: usize) -> u32 {
        if off + 4 > self.len {
            return 0;
        }
        u32::from_le_bytes(std::array::from_fn(|k| {
            self.byte(off + k).load(Ordering::Relaxed)
        }))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping; no reference into it outlives `&self`.
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
