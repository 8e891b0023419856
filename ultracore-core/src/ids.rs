//! Identifiers: client-chosen account and entry ids, stream ids, event ids.
//!
//! Account and entry ids are chosen by the client (that is what makes retries idempotent end
//! to end). They are short, printable and validated once at the edge; inside the core an id of
//! up to 23 bytes is kept inline (cloning one into an event copies 24 bytes) and a longer one is
//! reference-counted (cloning it costs a counter increment).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::ID_LEN_MAX;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid id: 1 to {ID_LEN_MAX} characters from A-Z a-z 0-9 . _ : @ -")]
pub struct IdError;

impl IdError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        "invalid_id"
    }
}

/// Checks the id rules without building an id.
pub(crate) fn validate(s: &str) -> Result<(), IdError> {
    let ok = !s.is_empty()
        && s.len() <= ID_LEN_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(IdError)
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(smol_str::SmolStr);

        impl $name {
            /// Validates and builds the id.
            pub fn new(s: &str) -> Result<Self, IdError> {
                validate(s)?;
                Ok($name(smol_str::SmolStr::new(s)))
            }
            /// The id as text.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        // Hash and equality are those of the text, so maps keyed by ids are searched by `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                $name::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.0.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
                $name::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// An account's id, chosen by the client (or by the server on the client's behalf).
    AccountId
);
string_id!(
    /// A journal entry's id, chosen by the client: transfers, multi-leg entries, holds,
    /// hold resolutions, reversals and corrections all carry one, and it is the idempotency key.
    EntryId
);
/// The id of an event stream (an aggregate's history): `account-<id>`, `entry-<id>`, or a
/// plain name. Ledger streams hold their id rather than a formatted string, so naming the
/// stream of an event costs no allocation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(StreamKind);

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum StreamKind {
    Account(AccountId),
    Entry(EntryId),
    Named(Arc<str>),
}

impl StreamId {
    /// Parses a stream name; `account-…` and `entry-…` names must carry a valid id.
    pub fn new(s: &str) -> Result<StreamId, IdError> {
        if let Some(id) = s.strip_prefix("account-") {
            return Ok(StreamId(StreamKind::Account(AccountId::new(id)?)));
        }
        if let Some(id) = s.strip_prefix("entry-") {
            return Ok(StreamId(StreamKind::Entry(EntryId::new(id)?)));
        }
        validate(s)?;
        Ok(StreamId(StreamKind::Named(Arc::from(s))))
    }

    /// The stream of an account's lifecycle events.
    pub fn for_account(id: &AccountId) -> StreamId {
        StreamId(StreamKind::Account(id.clone()))
    }

    /// The stream of a journal entry (and its holds, corrections and resolutions).
    pub fn for_entry(id: &EntryId) -> StreamId {
        StreamId(StreamKind::Entry(id.clone()))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            StreamKind::Account(id) => write!(f, "account-{id}"),
            StreamKind::Entry(id) => write!(f, "entry-{id}"),
            StreamKind::Named(n) => f.write_str(n),
        }
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({self})")
    }
}

impl std::str::FromStr for StreamId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        StreamId::new(s)
    }
}

impl Serialize for StreamId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        StreamId::new(&s).map_err(serde::de::Error::custom)
    }
}

/// An event's id: unique within a deployment. The core derives it from the log id and the
/// event's global position (ids are inputs to the core, never random). On the wire: 32 hex
/// digits (JSON numbers that large lose precision in many parsers).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub u128);

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return s.serialize_u128(self.0);
        }
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return u128::deserialize(d).map(EventId);
        }
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        if s.len() != 32 {
            return Err(serde::de::Error::custom("event id: 32 hex digits"));
        }
        u128::from_str_radix(&s, 16)
            .map(EventId)
            .map_err(|_| serde::de::Error::custom("event id: 32 hex digits"))
    }
}

/// Serde for `i128` as a decimal string: JSON numbers beyond 2^53 are not portable, and
/// `serde_json::Value` cannot hold an `i128` at all.
pub mod i128_as_string {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the number as a string (as the number itself in binary formats).
    pub fn serialize<S: Serializer>(v: &i128, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return s.serialize_i128(*v);
        }
        s.collect_str(v)
    }

    /// Reads a string holding an `i128` (the number itself in binary formats).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        if !d.is_human_readable() {
            return i128::deserialize(d);
        }
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        if s.len() > 40 {
            return Err(serde::de::Error::custom("integer too long"));
        }
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl EventId {
    /// The id of the event at `position` in log `log_id`.
    pub const fn from_log_position(log_id: u64, position: u64) -> EventId {
        EventId(((log_id as u128) << 64) | position as u128)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(AccountId::new("acc-1.main@branch:7").is_ok());
        assert!(AccountId::new("").is_err());
        assert!(AccountId::new("has space").is_err());
        assert!(AccountId::new("é").is_err());
        assert!(AccountId::new(&"x".repeat(ID_LEN_MAX)).is_ok());
        assert!(AccountId::new(&"x".repeat(ID_LEN_MAX + 1)).is_err());
    }

    #[test]
    fn ids_round_trip_through_json() {
        let id = EntryId::new("T-1").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"T-1\"");
        assert_eq!(serde_json::from_str::<EntryId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<EntryId>("\"bad id\"").is_err());
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    #[test]
    fn stream_ids_round_trip_even_for_the_longest_entry_ids() {
        let long = EntryId::new(&"x".repeat(ID_LEN_MAX)).unwrap();
        let s = StreamId::for_entry(&long);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<StreamId>(&json).unwrap(), s);
        assert_eq!(
            StreamId::new("account-a1").unwrap(),
            StreamId::for_account(&AccountId::new("a1").unwrap())
        );
        assert!(StreamId::new("entry-").is_err());
        assert_eq!(StreamId::new("demo").unwrap().to_string(), "demo");
    }
}
