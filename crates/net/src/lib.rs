//! courier::net: courier services reachable from other hosts, over [zenoh](https://zenoh.io).
//!
//! A host exposes a courier::shm service with [`expose`] (or `courier expose <name>`): a
//! bridge that answers zenoh queries by calling the service. A client on any host of the
//! zenoh network calls it with [`Client`], which has courier::shm's verbs (`req`, `areq`,
//! `req_async`, `send`, `lend`, `lend_mut`, `scalar`, `blocking_scalar`, `subscribe`, each
//! with a `_timeout` form) and its [`Error`]s. The service needs
//! no change and the bridge none of its types: requests travel as bytes with their type's
//! signature, and the service checks them as it checks a local client's.
//!
//! # Keys
//!
//! A service `name` exposed by a host answers on the zenoh key `courier/<namespace>/<name>`.
//! The namespace is the host's name by default ([`ExposeConfig::namespace`] sets another:
//! a robot's name, a rack slot). A client connects to `"name"` (the first host exposing it
//! to answer) or to `"namespace/name"` (that host's). The pushes of a subscription go to
//! `courier/<namespace>/<name>/push/<client session id>/<n>`.
//!
//! # Deadlines and errors
//!
//! Every network call has a deadline (the call's timeout, else the client's default of 10 s)
//! and the deadline travels with the request as the time left, so that hosts need not agree
//! on the time: the bridge stops waiting for the service when it passes. No bridge answering
//! gives `ServerDisappeared`, the deadline passing first `Timeout`; `App` and `NoReply` pass
//! through unchanged. A host that dies or a network that partitions fails pending calls at
//! their deadlines; nothing hangs.
//!
//! # Security
//!
//! Nothing is exposed that is not named: a bridge serves one service, and only on its key.
//! The uid checks of courier::shm stop at the host: the bridge is the shm client, so the
//! service sees the bridge's user, and anyone who can reach the bridge's zenoh network can
//! call the service. What replaces the uid check across hosts is zenoh's:
//!
//! - **mutual TLS** (zenoh's `transport_tls` feature, `tls/...` endpoints with
//!   `root_ca_certificate`, `listen_certificate`/`listen_private_key` and
//!   `enable_mtls: true`): only hosts holding a certificate of your CA connect;
//! - **access control** (zenoh's `access_control` config): allow `query` on
//!   `courier/<namespace>/<name>` and `put` on its `push/**` keys for the identities (the
//!   certificate common names, interfaces or usernames) that may call it, deny the rest.
//!
//! The default build has TCP only (`default-features = false`); a deployment enables zenoh's
//! TLS feature in its own build. A hostile peer's malformed frames are refused with
//! `Protocol` and the bridge goes on serving the others (the frames are checked by
//! [`frame`], which never panics, and the service checks each value).
#![cfg(target_os = "linux")]

pub mod bridge;
pub mod client;
pub mod frame;

pub use bridge::{expose, expose_local, expose_with, ExposeConfig, Exposed};
pub use client::{Client, Subscription, WaitReply, DEFAULT_TIMEOUT, LONGEST_TIMEOUT};
pub use courier_core::error::{Error, SendError};
pub use courier_shm::CancelOutcome;
/// The zenoh this crate is built with, for opening sessions with the same version.
pub use zenoh;

/// The first chunk of every courier key.
pub const ROOT: &str = "courier";

/// The chunk under a service's key where its subscriptions' pushes go.
pub(crate) const PUSH: &str = "push";

/// Why a bridge could not be set up, or a client could not connect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A service name or namespace that cannot be one chunk of a zenoh key.
    #[error("invalid name {0:?}: one key chunk, no `/`, `*`, `$`, `?`, `#` or leading `@`")]
    InvalidName(String),
    /// No bridge answered for the key within the timeout.
    #[error("no bridge answered for {0} in time")]
    NotFound(String),
    /// The service to expose could not be reached on this host.
    #[error("the service could not be reached: {0}")]
    Shm(#[from] courier_shm::ShmError),
    /// zenoh refused a declaration.
    #[error("zenoh: {0}")]
    Zenoh(String),
    /// A typed client (`FooClient::connect_net`) found a server of another interface.
    #[error("{name}: the server speaks {theirs}, not {ours}")]
    InterfaceMismatch {
        /// The service's name.
        name: String,
        /// The client's interface.
        ours: String,
        /// What the server said it speaks.
        theirs: String,
    },
}

/// The largest value encoded for the network (values are encoded in private memory first).
const MAX_VALUE: usize = 64 << 20;

/// Decodes a value of `T` that arrived with `signature`.
pub(crate) fn decode<T: courier_shm::Wire>(signature: u64, bytes: &[u8]) -> Option<T> {
    T::decode_signed(signature, &courier_shm::ShmView::from_private(bytes))
}

/// Encodes `value` in private memory: its signature and bytes.
pub(crate) fn encode<T: courier_shm::Wire>(value: &T) -> Option<Vec<u8>> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let mut size = 256;
        loop {
            if s.len() < size {
                s.resize(size, 0);
            }
            if let Some(n) =
                value.encode(&mut courier_shm::ShmViewMut::from_private(&mut s[..size]))
            {
                return Some(s[..n].to_vec());
            }
            if size >= MAX_VALUE {
                return None;
            }
            size *= 4;
        }
    })
}

/// `chunk` if it can be one chunk of a key.
pub(crate) fn check_chunk(chunk: &str) -> Result<&str, NetError> {
    let bad = chunk.is_empty()
        || chunk.starts_with('@')
        || chunk.contains(['/', '*', '$', '?', '#'])
        || chunk.chars().any(char::is_control);
    if bad {
        Err(NetError::InvalidName(chunk.to_owned()))
    } else {
        Ok(chunk)
    }
}

/// The key of service `name` in `namespace`.
pub(crate) fn key_of(namespace: &str, name: &str) -> Result<String, NetError> {
    Ok(format!(
        "{ROOT}/{}/{}",
        check_chunk(namespace)?,
        check_chunk(name)?
    ))
}

/// This host's default namespace: its name, with characters a key chunk cannot hold
/// replaced by `-`.
pub fn namespace() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if host.is_empty() {
        "localhost".to_owned()
    } else {
        host
    }
}

/// A zenoh configuration for a peer that listens on `listen` and connects to `connect`
/// (endpoints such as `tcp/127.0.0.1:7447`), with multicast scouting off: the hosts are
/// named, never discovered.
///
/// # Errors
///
/// [`NetError::Zenoh`] for an endpoint zenoh does not accept.
pub fn peer_config(listen: &[String], connect: &[String]) -> Result<zenoh::Config, NetError> {
    let mut c = zenoh::Config::default();
    let json = |v: &[String]| {
        let quoted: Vec<String> = v.iter().map(|e| format!("{e:?}")).collect();
        format!("[{}]", quoted.join(","))
    };
    let set = |c: &mut zenoh::Config, key: &str, value: &str| {
        c.insert_json5(key, value)
            .map_err(|e| NetError::Zenoh(format!("{key}: {e}")))
    };
    set(&mut c, "mode", "\"peer\"")?;
    set(&mut c, "scouting/multicast/enabled", "false")?;
    set(&mut c, "listen/endpoints", &json(listen))?;
    set(&mut c, "connect/endpoints", &json(connect))?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_chunk_each() {
        assert_eq!(key_of("host-a", "kv").unwrap(), "courier/host-a/kv");
        for bad in ["", "a/b", "*", "a$", "q?", "#", "@x", "a\nb"] {
            assert!(key_of("ns", bad).is_err(), "{bad:?}");
            assert!(key_of(bad, "kv").is_err(), "{bad:?}");
        }
        let ns = namespace();
        assert!(check_chunk(&ns).is_ok(), "{ns:?}");
    }

    /// Every name a service may have (`courier_core::names`) makes a key zenoh accepts, one
    /// chunk long: the Xous-style names with spaces and `+` included.
    #[test]
    fn every_valid_service_name_is_one_chunk_of_a_valid_key() {
        for name in [
            "kv",
            "_Any descriptive and unique name under 64 chars_",
            "c++ log",
            "é",
            "a@b",
            "...",
        ] {
            assert!(courier_core::names::is_valid_name(name), "{name:?}");
            let key = key_of("host-a", name).unwrap();
            let parsed = zenoh::key_expr::KeyExpr::try_from(key.clone());
            assert!(parsed.is_ok(), "{key:?}: {parsed:?}");
            assert_eq!(key.split('/').count(), 3, "{key:?}");
        }
    }
}
