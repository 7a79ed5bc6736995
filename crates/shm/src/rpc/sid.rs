//! Unnamed servers (Xous's SID-based `connect_for_process` pattern): a server bound without a
//! public name is reached through its [`ServerId`], 128 random bits that another service
//! hands to the clients it chooses (in a reply, or in the two words of a blocking scalar).
//!
//! On disk an unnamed server is a service like any other, under the name `.sid.<32 hex
//! digits>`, which [`services`](crate::services) (and `courier ls`) leave out. The id is not
//! a capability against the processes of this user, which can list the private runtime
//! directory anyway: it keeps the server out of the name space and out of sight.

use crate::error::ShmError;
use std::fmt;
use std::str::FromStr;

/// What the names of unnamed servers start with.
pub(crate) const PREFIX: &str = ".sid.";

/// The id of an unnamed server ([`Server::bind_unnamed`](crate::Server::bind_unnamed)),
/// which clients connect to with [`Client::connect_id`](crate::Client::connect_id).
///
/// It travels as two `u64` words ([`to_words`](Self::to_words)) or as 32 hex digits
/// ([`Display`](fmt::Display) and [`FromStr`]). It keeps the server out of the name space
/// and out of [`services`](crate::services); it is not a capability against processes of
/// the same user, which can list the private runtime directory.
///
/// ```
/// use courier_shm::ServerId;
///
/// let id: ServerId = "000102030405060708090a0b0c0d0e0f".parse().unwrap();
/// assert_eq!(id.to_words(), [0x0001_0203_0405_0607, 0x0809_0a0b_0c0d_0e0f]);
/// assert_eq!(ServerId::from_words(id.to_words()), id);
/// assert_eq!(id.to_string(), "000102030405060708090a0b0c0d0e0f");
/// assert!("not hex".parse::<ServerId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerId([u64; 2]);

impl ServerId {
    /// A fresh id from the kernel's random numbers.
    pub(crate) fn random() -> Result<Self, ShmError> {
        let mut bytes = [0u8; 16];
        let mut filled = 0;
        while filled < bytes.len() {
            let n = rustix::rand::getrandom(
                &mut bytes[filled..],
                rustix::rand::GetRandomFlags::empty(),
            )
            .map_err(|e| ShmError::io("reading random numbers for a server id")(e.into()))?;
            filled += n;
        }
        let word = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        Ok(ServerId([word(0), word(8)]))
    }

    /// The id as two words, to send in a scalar reply or a flat type.
    pub fn to_words(self) -> [u64; 2] {
        self.0
    }

    /// The id from two words (as [`to_words`](Self::to_words) gave them).
    pub fn from_words(words: [u64; 2]) -> Self {
        ServerId(words)
    }

    /// The service name the server is bound under.
    pub(crate) fn name(self) -> String {
        format!("{PREFIX}{self}")
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.0[0], self.0[1])
    }
}

impl fmt::Debug for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerId({self})")
    }
}

/// A string that is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a server id is 32 hex digits")]
pub struct ParseServerIdError;

impl FromStr for ServerId {
    type Err = ParseServerIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseServerIdError);
        }
        let word = |r: std::ops::Range<usize>| {
            u64::from_str_radix(&s[r], 16).map_err(|_| ParseServerIdError)
        };
        Ok(ServerId([word(0..16)?, word(16..32)?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_differ_and_make_valid_hidden_names() {
        let a = ServerId::random().unwrap();
        let b = ServerId::random().unwrap();
        assert_ne!(a, b);
        let name = a.name();
        assert!(name.starts_with(PREFIX));
        assert!(courier_core::names::is_valid_name(&name), "{name}");
        assert_eq!(name[PREFIX.len()..].parse::<ServerId>(), Ok(a));
    }

    #[test]
    fn only_32_hex_digits_parse() {
        for bad in [
            "",
            "0",
            &"0".repeat(31),
            &"0".repeat(33),
            &"g".repeat(32),
            "+0000000000000000000000000000000",
        ] {
            assert_eq!(bad.parse::<ServerId>(), Err(ParseServerIdError), "{bad:?}");
        }
    }
}
