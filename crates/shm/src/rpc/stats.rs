//! What `courier ls` shows: each server keeps its counters in `<name>.stats` in the runtime
//! directory (mode 0600, in the 0700 directory), and [`services`] reads them back, listing a
//! service only while its name's lock is held (a killed server's file is ignored, and
//! replaced by the next server of that name).
//!
//! The file is 64 bytes of little-endian `u64`s: magic, pid, clients, queued, in service,
//! lends, served; then, if the server described its interface ([`Server::describe`]), a
//! little-endian `u32` length and that many bytes of UTF-8 (at most [`MAX_DESCRIPTION`]).
//! The server rewrites the counters when a connection comes or goes and when a worker goes to
//! sleep (then at most once per 10 ms, and without even taking the counters in between: a
//! worker that sleeps between every two calls would otherwise pay for them at every call; a
//! write skipped then is made by the first sleep after the 10 ms, at the latest when an idle
//! worker's sleep ends, within 500 ms); the numbers are a snapshot, not a live gauge.
//!
//! [`Server::describe`]: crate::Server::describe

use crate::dir;
use crate::error::ShmError;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAGIC: u64 = u64::from_le_bytes(*b"CRSTATS1");
const LEN: usize = 64;
/// The longest interface description a stats file holds, in bytes.
pub const MAX_DESCRIPTION: usize = 4096;

/// A server's stats file.
#[derive(Debug)]
pub(crate) struct StatsFile {
    path: PathBuf,
    file: Mutex<Written>,
}

/// The file, what its counters say, and when they were last written.
#[derive(Debug)]
struct Written {
    file: fs::File,
    counters: [u8; LEN],
    at: Option<Instant>,
}

impl StatsFile {
    pub(crate) fn create(name: &str) -> Result<StatsFile, ShmError> {
        let path = dir::for_listener()?.join(format!("{name}.stats"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(ShmError::io("creating the stats file"))?;
        Ok(StatsFile::opened(path, file))
    }

    /// The stats file `file`, opened at `path`, with nothing written yet.
    fn opened(path: PathBuf, file: fs::File) -> StatsFile {
        StatsFile {
            path,
            file: Mutex::new(Written {
                file,
                counters: [0; LEN],
                at: None,
            }),
        }
    }

    /// Writes the counters, unless the file already holds them.
    pub(crate) fn write(&self, s: &ServerStats) {
        self.write_within(|| *s, Duration::ZERO, Instant::now);
    }

    /// As [`StatsFile::write`], but at most once per `every`: within `every` of the last
    /// write nothing is done, and the counters are not even taken (`stats` reads every
    /// connection, and this runs on a worker's way to sleep, between two calls). The caller
    /// comes back later (a worker's sleeps are bounded), and the write is made then. `now`
    /// reads the time; it is called at most once.
    pub(crate) fn write_within(
        &self,
        stats: impl FnOnce() -> ServerStats,
        every: Duration,
        now: impl FnOnce() -> Instant,
    ) {
        let mut w = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let mut clock = Some(now);
        let mut read = || clock.take().map(|now| now());
        let mut at = None;
        if let (Some(last), false) = (w.at, every.is_zero()) {
            let Some(now) = read() else { return };
            if now.saturating_duration_since(last) < every {
                return;
            }
            at = Some(now);
        }
        let s = stats();
        let words = [
            MAGIC,
            u64::from(s.pid),
            s.clients,
            s.queued,
            s.in_service,
            s.lends,
            s.served,
            0,
        ];
        let mut bytes = [0u8; LEN];
        for (i, w) in words.iter().enumerate() {
            bytes[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
        }
        if w.counters == bytes {
            return;
        }
        // Best effort: the numbers are informational. One system call (no seek).
        let _ = w.file.write_all_at(&bytes, 0);
        w.counters = bytes;
        w.at = at.or_else(read);
    }

    /// Writes the interface description after the counters (cut at [`MAX_DESCRIPTION`]
    /// bytes, on a character boundary).
    pub(crate) fn describe(&self, text: &str) {
        let mut end = text.len().min(MAX_DESCRIPTION);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = Vec::with_capacity(4 + end);
        bytes.extend_from_slice(&(end as u32).to_le_bytes());
        bytes.extend_from_slice(&text.as_bytes()[..end]);
        let w = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = w.file.write_all_at(&bytes, LEN as u64);
    }

    /// Where the file is; the server's listener removes it with the name's other files.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// What the server's counters say (see also [`services`](crate::services) for other
/// processes' services).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerStats {
    /// The server's process id.
    pub pid: u32,
    /// Connected client processes.
    pub clients: u64,
    /// Calls queued by clients and not yet taken by a worker.
    pub queued: u64,
    /// Calls taken and not yet answered (deferred replies included).
    pub in_service: u64,
    /// Lent buffers currently held by the server (in calls not yet answered).
    pub lends: u64,
    /// Calls answered since the server started.
    pub served: u64,
}

/// The counters and description of the stats file at `path`, if it is a regular file (opened
/// without following a link and without blocking: a FIFO planted under the name is skipped,
/// never waited on).
fn read_stats(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let limit = LEN + 4 + MAX_DESCRIPTION;
    let mut bytes = Vec::with_capacity(LEN);
    file.take(limit as u64).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// One live service, as [`services`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The service name.
    pub name: String,
    /// The server's counters when it last wrote them.
    pub stats: ServerStats,
    /// What the server says it serves ([`Server::describe`](crate::Server::describe)): for a
    /// `#[courier::service]`, its interface and methods.
    pub interface: Option<String>,
}

/// The description after the counters, if there is a well-formed one: another process wrote
/// these bytes, so a bad length or bad UTF-8 is no description, never a panic.
fn description(bytes: &[u8]) -> Option<String> {
    let len = bytes.get(LEN..LEN + 4)?;
    let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
    if len == 0 || len > MAX_DESCRIPTION {
        return None;
    }
    let text = bytes.get(LEN + 4..LEN + 4 + len)?;
    String::from_utf8(text.to_vec()).ok()
}

/// The live RPC services of this user (in the [runtime directory](crate::runtime_dir)),
/// sorted by name.
///
/// # Errors
///
/// The runtime directory's errors ([`ShmError::UnsafeRuntimeDir`], [`ShmError::Io`]); a
/// missing directory is an empty list.
///
/// # Examples
///
/// ```no_run
/// for s in courier_shm::services()? {
///     println!("{} pid {} clients {}", s.name, s.stats.pid, s.stats.clients);
/// }
/// # Ok::<(), courier_shm::ShmError>(())
/// ```
pub fn services() -> Result<Vec<ServiceInfo>, ShmError> {
    // The directory is checked as a client checks it: another user's directory (a squatter
    // of `/tmp/courier-<uid>`) is refused, not listed.
    let Some(dir) = dir::checked_for_client()? else {
        return Ok(Vec::new());
    };
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ShmError::io("reading the runtime directory")(e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".stats")) else {
            continue;
        };
        if !courier_core::names::is_valid_name(name)
            || name.starts_with(crate::rpc::sid::PREFIX)
            || !crate::sys::is_locked(&dir.join(format!("{name}.lock")))
        {
            continue;
        }
        let Some(bytes) = read_stats(&entry.path()) else {
            continue;
        };
        if bytes.len() < LEN {
            continue;
        }
        let w = |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("8"));
        if w(0) != MAGIC {
            continue;
        }
        out.push(ServiceInfo {
            name: name.to_owned(),
            stats: ServerStats {
                pid: w(1) as u32,
                clients: w(2),
                queued: w(3),
                in_service: w(4),
                lends: w(5),
                served: w(6),
            },
            interface: description(&bytes),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_within_its_interval_is_skipped_without_taking_the_counters() {
        let path = std::env::temp_dir().join(format!("courier-stats-{}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let f = StatsFile::opened(path.clone(), file);
        let served = |path: &std::path::Path| {
            let bytes = fs::read(path).unwrap();
            u64::from_le_bytes(bytes[48..56].try_into().unwrap())
        };
        let stats = |served| ServerStats {
            pid: 1,
            served,
            ..ServerStats::default()
        };
        let hour = Duration::from_secs(3600);
        let taken = std::cell::Cell::new(0);
        let counters = |served| {
            let taken = &taken;
            move || {
                taken.set(taken.get() + 1);
                stats(served)
            }
        };
        // The first write is made at once.
        f.write_within(counters(1), hour, Instant::now);
        assert_eq!((served(&path), taken.get()), (1, 1));
        // Within the hour the counters are not even taken.
        f.write_within(counters(2), hour, Instant::now);
        assert_eq!((served(&path), taken.get()), (1, 1));
        // Once the hour is up, they are taken and written.
        let later = || Instant::now() + hour;
        f.write_within(counters(2), hour, later);
        assert_eq!((served(&path), taken.get()), (2, 2));
        // `write` has no interval.
        f.write(&stats(3));
        assert_eq!(served(&path), 3);
        let _ = fs::remove_file(&path);
    }

    #[test]
    fn descriptions_from_another_process_are_checked() {
        let mut bytes = vec![0u8; LEN];
        assert_eq!(description(&bytes), None);
        bytes.extend_from_slice(&5u32.to_le_bytes());
        bytes.extend_from_slice(b"Store");
        assert_eq!(description(&bytes).as_deref(), Some("Store"));
        // A length past the bytes, past the limit, and bytes that are not UTF-8.
        bytes[LEN..LEN + 4].copy_from_slice(&6u32.to_le_bytes());
        assert_eq!(description(&bytes), None);
        bytes[LEN..LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(description(&bytes), None);
        bytes[LEN..LEN + 4].copy_from_slice(&2u32.to_le_bytes());
        bytes[LEN + 4] = 0xff;
        assert_eq!(description(&bytes), None);
    }
}
