//! An in-process name registry, in the spirit of Xous's `xous-names`: a server's owner
//! registers a client handle under a name, and any thread connects by name later.
//!
//! Connecting checks the request, reply and error types: asking for a name with the wrong
//! types is a [`NameError::TypeMismatch`] that says both, never a panic. A connection may wait
//! for the name to appear, always with a timeout.
//!
//! A registered name holds a [`Client`], so it counts as a client: the server does not see
//! [`Error::ClientsDisappeared`](crate::Error::ClientsDisappeared) while the name is
//! registered. Dropping the [`Registration`] removes the name. A name whose server has gone is
//! treated as absent and may be registered again.
//!
//! # Examples
//!
//! ```
//! use courier_local::{channel, names};
//! use std::time::Duration;
//!
//! let (server, client) = channel::<u32, u32, ()>();
//! let _registration = names::register("doubler", &client).unwrap();
//! std::thread::spawn(move || {
//!     while let Ok((n, ctx)) = server.wait() {
//!         let _ = ctx.reply(n * 2);
//!     }
//! });
//!
//! let doubler = names::connect_timeout::<u32, u32, ()>("doubler", Duration::from_secs(1)).unwrap();
//! assert_eq!(doubler.req(4), Ok(8));
//!
//! // Wrong types are an error that says what went wrong.
//! let err = names::connect::<String, u32, ()>("doubler").unwrap_err();
//! assert!(err.to_string().contains("alloc::string::String"));
//! ```

use crate::Client;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Longest name, in bytes (as in `xous-names`).
pub const MAX_NAME_LEN: usize = courier_core::names::MAX_NAME_LEN;

/// Why a registry call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// The name breaks the rule of `courier_core::names` (empty, longer than
    /// [`MAX_NAME_LEN`] bytes, `.` or `..`, a control character, one of `/ \ * $ ? #`, a
    /// leading `@`).
    InvalidName(String),
    /// No live service is registered under the name.
    NotFound(String),
    /// A live service already holds the name.
    AlreadyRegistered(String),
    /// The name is registered with other request, reply or error types.
    TypeMismatch {
        /// The name asked for.
        name: String,
        /// `(Rq, Rp, E)` as the caller asked for them.
        expected: &'static str,
        /// `(Rq, Rp, E)` as registered.
        found: &'static str,
    },
    /// The name did not appear before the timeout.
    Timeout(String),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::InvalidName(n) => {
                write!(
                    f,
                    "invalid service name {n:?}: {}",
                    courier_core::names::RULE
                )
            }
            NameError::NotFound(n) => write!(f, "no service is registered as {n:?}"),
            NameError::AlreadyRegistered(n) => {
                write!(f, "a live service is already registered as {n:?}")
            }
            NameError::TypeMismatch {
                name,
                expected,
                found,
            } => write!(
                f,
                "service {name:?} has types {found}, but the caller asked for {expected}"
            ),
            NameError::Timeout(n) => write!(f, "timed out waiting for service {n:?}"),
        }
    }
}

impl std::error::Error for NameError {}

/// Checks a service name against the rule of every transport (`courier_core::names`: 1 to
/// 63 bytes, no control characters, none of `/ \ * $ ? #`, not `.` or `..`, no leading `@`).
///
/// # Errors
///
/// [`NameError::InvalidName`] otherwise.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if courier_core::names::is_valid_name(name) {
        Ok(())
    } else {
        Err(NameError::InvalidName(name.to_owned()))
    }
}

/// A registered client with its types erased.
trait Entry: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn types(&self) -> &'static str;
    fn server_alive(&self) -> bool;
}

impl<Rq, Rp, E> Entry for Client<Rq, Rp, E>
where
    Rq: Send + 'static,
    Rp: Send + 'static,
    E: Send + 'static,
{
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn types(&self) -> &'static str {
        std::any::type_name::<(Rq, Rp, E)>()
    }
    fn server_alive(&self) -> bool {
        !self.is_server_gone()
    }
}

struct Registered {
    id: u64,
    type_id: TypeId,
    client: Box<dyn Entry>,
}

/// A set of named services. Most programs use the process-wide one through the free
/// functions of this module; a `Registry` of its own suits tests and plug-in hosts.
#[derive(Default)]
pub struct Registry {
    map: Mutex<HashMap<String, Registered>>,
    changed: Condvar,
    next_id: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide registry used by this module's free functions.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::new)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Registered>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a clone of `client` under `name`.
    ///
    /// # Errors
    ///
    /// [`NameError::InvalidName`], or [`NameError::AlreadyRegistered`] if a service whose
    /// server is still alive holds the name.
    pub fn register<Rq, Rp, E>(
        &self,
        name: &str,
        client: &Client<Rq, Rp, E>,
    ) -> Result<Registration<'_>, NameError>
    where
        Rq: Send + 'static,
        Rp: Send + 'static,
        E: Send + 'static,
    {
        validate_name(name)?;
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut map = self.lock();
        if map.get(name).is_some_and(|r| r.client.server_alive()) {
            return Err(NameError::AlreadyRegistered(name.to_owned()));
        }
        map.insert(
            name.to_owned(),
            Registered {
                id,
                type_id: TypeId::of::<Client<Rq, Rp, E>>(),
                client: Box::new(client.clone()),
            },
        );
        drop(map);
        self.changed.notify_all();
        Ok(Registration {
            registry: self,
            name: name.to_owned(),
            id,
        })
    }

    /// A new client of the service registered as `name`.
    ///
    /// # Errors
    ///
    /// [`NameError::InvalidName`], [`NameError::NotFound`] (also when the service's server is
    /// gone) or [`NameError::TypeMismatch`].
    pub fn connect<Rq, Rp, E>(&self, name: &str) -> Result<Client<Rq, Rp, E>, NameError>
    where
        Rq: Send + 'static,
        Rp: Send + 'static,
        E: Send + 'static,
    {
        validate_name(name)?;
        let map = self.lock();
        Self::lookup(&map, name)?.ok_or_else(|| NameError::NotFound(name.to_owned()))
    }

    /// [`Registry::connect`], waiting up to `timeout` for the name to appear.
    ///
    /// # Errors
    ///
    /// As [`Registry::connect`], with [`NameError::Timeout`] in place of `NotFound`.
    pub fn connect_timeout<Rq, Rp, E>(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Client<Rq, Rp, E>, NameError>
    where
        Rq: Send + 'static,
        Rp: Send + 'static,
        E: Send + 'static,
    {
        validate_name(name)?;
        // `None`: no deadline (`Duration::MAX`).
        let deadline = crate::chan::deadline_after(timeout);
        let mut map = self.lock();
        loop {
            if let Some(client) = Self::lookup(&map, name)? {
                return Ok(client);
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if now >= d => return Err(NameError::Timeout(name.to_owned())),
                Some(d) => d - now,
                None => Duration::MAX,
            };
            // A dead server does not announce itself: look again at least every 50 ms.
            let slice = left.min(Duration::from_millis(50));
            map = self
                .changed
                .wait_timeout(map, slice)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn lookup<Rq, Rp, E>(
        map: &HashMap<String, Registered>,
        name: &str,
    ) -> Result<Option<Client<Rq, Rp, E>>, NameError>
    where
        Rq: Send + 'static,
        Rp: Send + 'static,
        E: Send + 'static,
    {
        let Some(entry) = map.get(name).filter(|r| r.client.server_alive()) else {
            return Ok(None);
        };
        if entry.type_id != TypeId::of::<Client<Rq, Rp, E>>() {
            return Err(NameError::TypeMismatch {
                name: name.to_owned(),
                expected: std::any::type_name::<(Rq, Rp, E)>(),
                found: entry.client.types(),
            });
        }
        Ok(entry
            .client
            .as_any()
            .downcast_ref::<Client<Rq, Rp, E>>()
            .cloned())
    }

    /// The names registered now whose servers are alive, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, r)| r.client.server_alive())
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }
}

/// Keeps a name registered; dropping it removes the name (and the client it holds).
#[must_use = "dropping the registration unregisters the name at once"]
pub struct Registration<'r> {
    registry: &'r Registry,
    name: String,
    id: u64,
}

impl Registration<'_> {
    /// The registered name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let removed = {
            let mut map = self.registry.lock();
            if map.get(&self.name).is_some_and(|r| r.id == self.id) {
                map.remove(&self.name)
            } else {
                None
            }
        };
        // The client is dropped outside the lock: it may wake the server.
        drop(removed);
    }
}

impl fmt::Debug for Registration<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.name)
            .finish()
    }
}

/// Registers `client` as `name` in the process-wide registry. See [`Registry::register`].
///
/// # Errors
///
/// As [`Registry::register`].
pub fn register<Rq, Rp, E>(
    name: &str,
    client: &Client<Rq, Rp, E>,
) -> Result<Registration<'static>, NameError>
where
    Rq: Send + 'static,
    Rp: Send + 'static,
    E: Send + 'static,
{
    Registry::global().register(name, client)
}

/// Connects to `name` in the process-wide registry. See [`Registry::connect`].
///
/// # Errors
///
/// As [`Registry::connect`].
pub fn connect<Rq, Rp, E>(name: &str) -> Result<Client<Rq, Rp, E>, NameError>
where
    Rq: Send + 'static,
    Rp: Send + 'static,
    E: Send + 'static,
{
    Registry::global().connect(name)
}

/// Connects to `name` in the process-wide registry, waiting up to `timeout` for it to
/// appear. See [`Registry::connect_timeout`].
///
/// # Errors
///
/// As [`Registry::connect_timeout`].
pub fn connect_timeout<Rq, Rp, E>(
    name: &str,
    timeout: Duration,
) -> Result<Client<Rq, Rp, E>, NameError>
where
    Rq: Send + 'static,
    Rp: Send + 'static,
    E: Send + 'static,
{
    Registry::global().connect_timeout(name, timeout)
}
