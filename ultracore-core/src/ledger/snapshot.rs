//! Snapshots of the ledger's folded state: a disposable cache that lets start-up skip replaying
//! the whole log. A snapshot carries a schema number and a checksum; one that is missing, stale,
//! from another build or damaged is refused with a typed error and the caller replays instead,
//! so losing or corrupting snapshots never loses data.
//!
//! Wire form: 8 bytes schema (little endian), 8 bytes checksum of the body, then the body in
//! postcard (compact binary serde; amounts, times and ids in their exact binary forms).

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, EntryId};
use crate::time::Timestamp;

use super::model::Entry;
use super::rejection::Rejection;
use super::{AccountState, Ledger, LedgerConfig, PositionMeta};

/// The snapshot format this build writes and reads. Bump it whenever any snapshotted type
/// (ledger state, balance index internals) changes shape.
pub const SNAPSHOT_SCHEMA: u64 = 0x5543_534e_0000_0002;

/// Why a snapshot could not be used (the caller then replays the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Written by a build with another snapshot format.
    #[error("snapshot schema {found:#x}, this build reads {expected:#x}")]
    Schema {
        /// Found in the snapshot.
        found: u64,
        /// What this build reads.
        expected: u64,
    },
    /// The body does not match its checksum.
    #[error("snapshot checksum mismatch")]
    Checksum,
    /// The body does not decode.
    #[error("snapshot does not decode: {0}")]
    Decode(String),
    /// The body decodes but its parts contradict each other.
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

#[derive(Serialize)]
struct BodyRef<'a> {
    accounts: &'a [AccountState],
    open_fingerprints: Vec<(&'a AccountId, u64)>,
    entries: Vec<&'a Entry>,
    corrections: Vec<(&'a EntryId, &'a (EntryId, u32, u64))>,
    resolutions: Vec<(&'a EntryId, u64)>,
    /// (id, fingerprint, rejection as JSON: `Rejection` is internally tagged, which binary
    /// formats cannot decode; rejected ids are few).
    rejected: Vec<(&'a EntryId, u64, String)>,
    hold_deadlines: Vec<&'a (Timestamp, EntryId)>,
    positions: &'a [PositionMeta],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    accounts: Vec<AccountState>,
    open_fingerprints: Vec<(AccountId, u64)>,
    entries: Vec<Entry>,
    corrections: Vec<(EntryId, (EntryId, u32, u64))>,
    resolutions: Vec<(EntryId, u64)>,
    rejected: Vec<(EntryId, u64, String)>,
    hold_deadlines: Vec<(Timestamp, EntryId)>,
    positions: Vec<PositionMeta>,
}

impl Ledger {
    /// Encodes the whole state as a snapshot.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let body = BodyRef {
            accounts: &self.accounts,
            open_fingerprints: self
                .open_fingerprints
                .iter()
                .map(|(k, v)| (k, *v))
                .collect(),
            entries: self.entries.values().map(|e| &**e).collect(),
            corrections: self.corrections.iter().collect(),
            resolutions: self.resolutions.iter().map(|(k, v)| (k, *v)).collect(),
            rejected: self
                .rejected
                .iter()
                .map(|(id, (fp, r))| {
                    let json = serde_json::to_string(r).expect("rejections always serialise");
                    (id, *fp, json)
                })
                .collect(),
            hold_deadlines: self.hold_deadlines.iter().collect(),
            positions: &self.positions,
        };
        // Plain data, no maps with non-string keys, no failing custom serialisers: serialising
        // to a Vec cannot fail.
        let json = postcard::to_stdvec(&body).expect("ledger state always serialises");
        let mut out = Vec::with_capacity(json.len() + 16);
        out.extend_from_slice(&SNAPSHOT_SCHEMA.to_le_bytes());
        out.extend_from_slice(&super::command::stable_hash(&json).to_le_bytes());
        out.extend_from_slice(&json);
        out
    }

    /// Rebuilds a ledger from a snapshot made by [`Ledger::encode_snapshot`].
    pub fn decode_snapshot(config: LedgerConfig, bytes: &[u8]) -> Result<Ledger, SnapshotError> {
        let (head, json) = bytes.split_at_checked(16).ok_or(SnapshotError::Checksum)?;
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&head[i..i + 8]);
            u64::from_le_bytes(w)
        };
        if word(0) != SNAPSHOT_SCHEMA {
            return Err(SnapshotError::Schema {
                found: word(0),
                expected: SNAPSHOT_SCHEMA,
            });
        }
        if word(8) != super::command::stable_hash(json) {
            return Err(SnapshotError::Checksum);
        }
        let body: Body =
            postcard::from_bytes(json).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        let mut ledger = Ledger::new(config);
        check_consistent(&body)?;
        for (i, st) in body.accounts.iter().enumerate() {
            let ix = u32::try_from(i)
                .map_err(|_| SnapshotError::Inconsistent("too many accounts".into()))?;
            if ledger
                .account_ix
                .insert(st.account.id.clone(), ix)
                .is_some()
            {
                return Err(SnapshotError::Inconsistent(format!(
                    "account {} twice",
                    st.account.id
                )));
            }
        }
        ledger.accounts = body.accounts;
        ledger.open_fingerprints.extend(body.open_fingerprints);
        for e in body.entries {
            ledger.entries.insert(e.id.clone(), Box::new(e));
        }
        ledger.corrections.extend(body.corrections);
        ledger.resolutions.extend(body.resolutions);
        for (id, fp, json) in body.rejected {
            let r: Rejection =
                serde_json::from_str(&json).map_err(|e| SnapshotError::Decode(e.to_string()))?;
            ledger.rejected.insert(id, (fp, r));
        }
        ledger.hold_deadlines.extend(body.hold_deadlines);
        ledger.positions = body.positions;
        Ok(ledger)
    }
}

/// Cheap cross-checks of a decoded body (a checksum catches damage; these catch a snapshot
/// that was written wrong).
fn check_consistent(b: &Body) -> Result<(), SnapshotError> {
    let last = b.positions.len() as u64;
    let bad = |what: String| Err(SnapshotError::Inconsistent(what));
    for st in &b.accounts {
        if st.position > last || st.bounds != st.account.constraints.bounds(st.account.kind) {
            return bad(format!("account {}", st.account.id));
        }
        if st.index.changes().last().is_some_and(|c| c.position > last) {
            return bad(format!(
                "balance index of {} is ahead of the log",
                st.account.id
            ));
        }
    }
    if b.entries.iter().any(|e| e.current.position > last) {
        return bad("an entry is ahead of the log".into());
    }
    if b.positions
        .windows(2)
        .any(|w| w[0].recorded_at >= w[1].recorded_at)
    {
        return bad("transaction times do not increase".into());
    }
    Ok(())
}

const EVENT_TYPE_NAMES: [&str; 12] = [
    "account_opened",
    "account_frozen",
    "account_unfrozen",
    "account_closed",
    "account_metadata_set",
    "entry_posted",
    "hold_placed",
    "hold_posted",
    "hold_voided",
    "hold_expired",
    "entry_corrected",
    "entry_rejected",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PositionMetaWire {
    recorded_at: i64,
    entry: Option<EntryId>,
    event_type: String,
}

impl<'de> Deserialize<'de> for PositionMeta {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = PositionMetaWire::deserialize(d)?;
        let event_type = EVENT_TYPE_NAMES
            .iter()
            .copied()
            .find(|n| *n == w.event_type)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("unknown event type {}", w.event_type))
            })?;
        Ok(PositionMeta {
            recorded_at: w.recorded_at,
            entry: w.entry,
            event_type,
        })
    }
}
