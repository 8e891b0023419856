//! The binary payload form of [`LedgerEvent`] (schema version 1) for the journal.
//!
//! `LedgerEvent` is internally tagged (`"type": "..."`) for its JSON form, which binary formats
//! cannot decode. A serde *remote* definition below mirrors it field for field, externally
//! tagged, so postcard writes a variant index and the fields in order. The mirror is checked by
//! the compiler against the real type: adding a variant or a field to `LedgerEvent` breaks this
//! file's build until the mirror (and the schema version) follow.
//!
//! How a schema change is read: when `LedgerEvent` moves to version 2, copy this mirror into a
//! frozen `LedgerEventV1` type (deriving for itself, no longer `remote`), point the remote
//! mirror at the new shape, and make `decode_payload` decode version 1 bytes into
//! `LedgerEventV1` and convert them (the upcaster). `tests/golden` keeps a journal written by
//! version 1 so the old path stays tested.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ultracore_core::event::DomainEvent;
use ultracore_core::ids::{AccountId, EntryId};
use ultracore_core::ledger::{
    AccountKind, Constraints, LedgerEvent, Metadata, Postings, Rejection,
};
use ultracore_core::money::{Amount, Currency};
use ultracore_core::time::{EffectiveAt, Timestamp};

use crate::codec::JournalEvent;

// A bump of the core's schema must come with a decoder for version 1 here (see the module doc).
const _: () = assert!(<LedgerEvent as DomainEvent>::SCHEMA_VERSION == 1);

#[derive(Serialize, Deserialize)]
#[serde(remote = "LedgerEvent")]
#[allow(dead_code)] // the fields are read through the remote derive only
enum LedgerEventV1 {
    AccountOpened {
        id: AccountId,
        currency: Currency,
        kind: AccountKind,
        owner: Option<String>,
        branch: Option<String>,
        constraints: Box<Constraints>,
        metadata: Metadata,
        opened_at: EffectiveAt,
        fingerprint: u64,
    },
    AccountFrozen {
        account: AccountId,
    },
    AccountUnfrozen {
        account: AccountId,
    },
    AccountClosed {
        account: AccountId,
    },
    AccountMetadataSet {
        account: AccountId,
        metadata: Metadata,
    },
    EntryPosted {
        id: EntryId,
        postings: Postings,
        effective_at: EffectiveAt,
        metadata: Metadata,
        reversal_of: Option<EntryId>,
        fingerprint: u64,
    },
    HoldPlaced {
        id: EntryId,
        postings: Postings,
        amount: Amount,
        effective_at: EffectiveAt,
        expires_at: Option<Timestamp>,
        metadata: Metadata,
        fingerprint: u64,
    },
    HoldPosted {
        hold: EntryId,
        amount: Amount,
        effective_at: EffectiveAt,
        fingerprint: u64,
    },
    HoldVoided {
        hold: EntryId,
        effective_at: EffectiveAt,
        fingerprint: u64,
    },
    HoldExpired {
        hold: EntryId,
    },
    EntryCorrected {
        entry: EntryId,
        correction_id: EntryId,
        version: u32,
        postings: Postings,
        effective_at: EffectiveAt,
        cancelled: bool,
        reason: String,
        fingerprint: u64,
    },
    EntryRejected {
        id: EntryId,
        fingerprint: u64,
        #[serde(with = "rejection_as_json")]
        rejection: Rejection,
    },
}

/// `Rejection` is internally tagged, so it crosses as JSON text (rejected ids are rare).
mod rejection_as_json {
    use super::*;

    pub fn serialize<S: Serializer>(r: &Rejection, s: S) -> Result<S::Ok, S::Error> {
        let json = serde_json::to_string(r).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&json)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Rejection, D::Error> {
        let json = std::borrow::Cow::<'de, str>::deserialize(d)?;
        serde_json::from_str(&json).map_err(serde::de::Error::custom)
    }
}

struct AsV1<'a>(&'a LedgerEvent);

impl Serialize for AsV1<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        LedgerEventV1::serialize(self.0, s)
    }
}

struct FromV1(LedgerEvent);

impl<'de> Deserialize<'de> for FromV1 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        LedgerEventV1::deserialize(d).map(FromV1)
    }
}

impl JournalEvent for LedgerEvent {
    const SCHEMA_VERSION: u16 = <LedgerEvent as DomainEvent>::SCHEMA_VERSION;

    fn encode_payload(&self, out: &mut Vec<u8>) {
        // Plain data with no failing serialisers (a `Rejection` always serialises to JSON):
        // encoding into a Vec cannot fail.
        let buf = std::mem::take(out);
        *out = postcard::to_extend(&AsV1(self), buf).expect("ledger events always encode");
    }

    fn decode_payload(schema_version: u16, bytes: &[u8]) -> Result<Self, String> {
        match schema_version {
            1 => {
                let (FromV1(e), rest) =
                    postcard::take_from_bytes(bytes).map_err(|e| e.to_string())?;
                if !rest.is_empty() {
                    return Err(format!("{} bytes after the payload", rest.len()));
                }
                Ok(e)
            }
            v => Err(format!(
                "schema version {v}; this build reads 1 to {}",
                <Self as JournalEvent>::SCHEMA_VERSION
            )),
        }
    }
}
