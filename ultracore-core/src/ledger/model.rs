//! The ledger's nouns: accounts, their constraints and status, postings, entries and their
//! versions, holds, metadata, and the balance views the queries return.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, EntryId};
use crate::limits::{
    METADATA_KEYS_MAX, METADATA_KEY_LEN_MAX, METADATA_VALUE_LEN_MAX, TEXT_LEN_MAX,
};
use crate::money::{Amount, Currency, SignedAmount};
use crate::time::{EffectiveAt, RecordedAt, Timestamp};

use super::rejection::Rejection;

/// What an account represents, which fixes its normal side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// Debit-normal: cash, loans given, receivables.
    Asset,
    /// Credit-normal: customer deposits, payables.
    Liability,
    /// Credit-normal: capital.
    Equity,
    /// Credit-normal: fees and interest earned.
    Income,
    /// Debit-normal: costs.
    Expense,
}

impl AccountKind {
    /// The side on which the balance of this kind of account normally grows.
    pub fn normal_side(self) -> Direction {
        match self {
            AccountKind::Asset | AccountKind::Expense => Direction::Debit,
            AccountKind::Liability | AccountKind::Equity | AccountKind::Income => Direction::Credit,
        }
    }
}

/// Debit or credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Left side.
    Debit,
    /// Right side.
    Credit,
}

impl Direction {
    /// The other side.
    pub fn opposite(self) -> Direction {
        match self {
            Direction::Debit => Direction::Credit,
            Direction::Credit => Direction::Debit,
        }
    }
}

/// Limits on an account's balance, enforced at every valid time (holds included).
///
/// The ledger tracks `net = credits - debits`. Holds reserve funds: a pending debit counts
/// against the lower bound, a pending credit against the upper bound, and neither counts in
/// the account's favour until posted.
/// - `debits_must_not_exceed_credits`: `net - pending_debits >= -overdraft_limit`.
/// - `credits_must_not_exceed_debits`: `net + pending_credits <= overdraft_limit`.
///
/// An `overdraft_limit` given without either flag applies to the account's normal side
/// (a credit-normal account may go at most that far into debit, and vice versa).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// Debits (posted and pending) may exceed credits by at most the overdraft limit.
    #[serde(default)]
    pub debits_must_not_exceed_credits: bool,
    /// Credits (posted and pending) may exceed debits by at most the overdraft limit.
    #[serde(default)]
    pub credits_must_not_exceed_debits: bool,
    /// How far past the bound the account may go; in the account's currency.
    // Always written (null when absent): skipping fields breaks binary encodings (snapshots).
    #[serde(default)]
    pub overdraft_limit: Option<Amount>,
}

impl Constraints {
    /// The bounds on the ledger's `(lower series, upper series)` for an account of `kind`,
    /// in minor units; `None` where unconstrained.
    pub fn bounds(&self, kind: AccountKind) -> (Option<i128>, Option<i128>) {
        let allowance = self.overdraft_limit.map_or(0, |a| a.minor());
        let (mut lower, mut upper) = (
            self.debits_must_not_exceed_credits,
            self.credits_must_not_exceed_debits,
        );
        if self.overdraft_limit.is_some() && !lower && !upper {
            match kind.normal_side() {
                Direction::Credit => lower = true,
                Direction::Debit => upper = true,
            }
        }
        (lower.then_some(-allowance), upper.then_some(allowance))
    }
}

/// Whether an account accepts postings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// Accepts postings.
    Open,
    /// Refuses every posting and hold until unfrozen.
    Frozen,
    /// Refuses everything, for good.
    Closed,
}

/// Descriptive key/value data: editable without touching money; bounded in size.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Metadata {
        Metadata(BTreeMap::new())
    }
    /// Builds metadata, checking the size limits.
    pub fn from_map(map: BTreeMap<String, String>) -> Result<Metadata, Rejection> {
        let m = Metadata(map);
        m.validate()?;
        Ok(m)
    }
    /// Checks the limits (used on input; deserialised metadata is re-checked by `decide`).
    pub fn validate(&self) -> Result<(), Rejection> {
        if self.0.len() > METADATA_KEYS_MAX {
            return Err(Rejection::InvalidMetadata {
                reason: format!("more than {METADATA_KEYS_MAX} keys"),
            });
        }
        for (k, v) in &self.0 {
            if k.is_empty() || k.len() > METADATA_KEY_LEN_MAX || v.len() > METADATA_VALUE_LEN_MAX {
                return Err(Rejection::InvalidMetadata {
                    reason: format!(
                        "keys must be 1 to {METADATA_KEY_LEN_MAX} bytes and values at most {METADATA_VALUE_LEN_MAX} bytes"
                    ),
                });
            }
        }
        Ok(())
    }
    /// The entries.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks a piece of free text (owner, branch, reason) against [`TEXT_LEN_MAX`].
pub fn validate_text(field: &'static str, s: &str) -> Result<(), Rejection> {
    if s.len() > TEXT_LEN_MAX || s.chars().any(char::is_control) {
        return Err(Rejection::InvalidText {
            field: field.to_string(),
        });
    }
    Ok(())
}

/// An account as the ledger currently knows it (descriptive data; balances live in the index).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Client-chosen id.
    pub id: AccountId,
    /// The one currency every posting to this account must use.
    pub currency: Currency,
    /// Asset, liability, …
    pub kind: AccountKind,
    /// The customer who owns it, if any.
    pub owner: Option<String>,
    /// The branch that services it, if any.
    pub branch: Option<String>,
    /// Balance limits.
    pub constraints: Constraints,
    /// Descriptive data.
    pub metadata: Metadata,
    /// Open, frozen or closed.
    pub status: AccountStatus,
    /// Valid time from which the account exists; postings before it are refused.
    pub opened_at: EffectiveAt,
    /// When the ledger recorded the opening.
    pub recorded_at: RecordedAt,
    /// Number of events in the account's own stream (opening, status and metadata changes).
    pub stream_version: u64,
    /// Holds currently reserving funds on this account.
    pub open_holds: u32,
}

/// One leg of a journal entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Posting {
    /// The account debited or credited.
    pub account: AccountId,
    /// Debit or credit.
    pub direction: Direction,
    /// Positive amount, in the account's currency.
    pub amount: Amount,
}

/// What kind of journal entry this is.
// Externally tagged (not `tag = "type"`): internally tagged enums need a self-describing format,
// and entries are also stored in binary snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A posted entry (transfer or multi-leg).
    Posted,
    /// A reversal of another entry.
    Reversal {
        /// The reversed entry.
        of: EntryId,
    },
    /// A two-phase transfer: funds reserved until posted, voided or expired.
    Hold {
        /// The deadline, if any (valid time and wall clock alike).
        expires_at: Option<Timestamp>,
        /// The reserved amount.
        amount: Amount,
        /// How it ended, once it has.
        resolution: Option<HoldResolution>,
    },
}

/// How a hold ended. Each hold resolves at most once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldResolution {
    /// Posted, fully or partly; the rest was released.
    Posted {
        /// The amount that became posted money.
        amount: Amount,
        /// Valid time of the posting.
        effective_at: EffectiveAt,
        /// Log position of the resolution.
        position: u64,
    },
    /// Released without posting.
    Voided {
        /// Valid time of the release.
        effective_at: EffectiveAt,
        /// Log position of the resolution.
        position: u64,
    },
    /// Released at its deadline.
    Expired {
        /// Log position of the expiry record.
        position: u64,
    },
}

/// One version of an entry's money: what it posts, when it takes effect, while it was believed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryVersion {
    /// 1 for the original, +1 per correction.
    pub version: u32,
    /// The postings of this version (empty if the correction cancelled the entry).
    pub postings: Arc<[Posting]>,
    /// Valid time.
    pub effective_at: EffectiveAt,
    /// Log position of the event that recorded this version.
    pub position: u64,
    /// Transaction time of that event.
    pub recorded_at: RecordedAt,
    /// Transaction time at which a later version replaced it, if one did.
    pub superseded_at: Option<(u64, RecordedAt)>,
    /// The correction that produced this version (None for the original).
    pub correction_id: Option<EntryId>,
    /// Why it was corrected.
    pub reason: Option<String>,
    /// Whether this version cancels the entry.
    pub cancelled: bool,
}

/// A journal entry with all its versions: the view the queries return. The ledger stores
/// entries in a compact form and builds this one on demand ([`super::Ledger::entry_record`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Client-chosen id.
    pub id: EntryId,
    /// Posted, reversal or hold.
    pub kind: EntryKind,
    /// Descriptive data.
    pub metadata: Metadata,
    /// The version in force now.
    pub current: EntryVersion,
    /// Earlier versions, oldest first.
    pub previous: Vec<EntryVersion>,
    /// The id of the entry that reversed this one, if any.
    pub reversed_by: Option<EntryId>,
    /// Fingerprint of the request that created it (idempotency).
    pub fingerprint: u64,
    /// Number of events in the entry's stream.
    pub stream_version: u64,
}

impl Entry {
    /// A newly recorded entry: one version (the original) in force since `position`, no
    /// reversal, stream version `stream_version`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn recorded(
        id: EntryId,
        kind: EntryKind,
        metadata: Metadata,
        postings: Arc<[Posting]>,
        effective_at: EffectiveAt,
        (position, recorded_at): (u64, RecordedAt),
        fingerprint: u64,
        stream_version: u64,
    ) -> Entry {
        Entry {
            id,
            kind,
            metadata,
            current: EntryVersion {
                version: 1,
                postings,
                effective_at,
                position,
                recorded_at,
                superseded_at: None,
                correction_id: None,
                reason: None,
                cancelled: false,
            },
            previous: Vec::new(),
            reversed_by: None,
            fingerprint,
            stream_version,
        }
    }

    /// The version in force as known at log position `known_at`, if the entry existed then.
    pub fn version_at(&self, known_at: u64) -> Option<&EntryVersion> {
        std::iter::once(&self.current)
            .chain(self.previous.iter().rev())
            .find(|v| v.position <= known_at)
    }
    /// All versions, oldest first.
    pub fn versions(&self) -> impl Iterator<Item = &EntryVersion> {
        self.previous.iter().chain(std::iter::once(&self.current))
    }
}

/// Balances of one account at one (valid time, known at) point, in the account's normal
/// direction (a deposit account's balance is positive when the bank owes the customer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceView {
    /// The account.
    pub account_id: AccountId,
    /// Its currency.
    pub currency: Currency,
    /// Posted balance.
    pub posted: SignedAmount,
    /// Reserved by holds on the debit side.
    pub pending_debits: Amount,
    /// Reserved by holds on the credit side.
    pub pending_credits: Amount,
    /// Posted minus the reservations against the normal side.
    pub available: SignedAmount,
    /// The valid time asked about.
    pub valid_at: Timestamp,
    /// What the answer is based on.
    pub basis: Basis,
}

/// The basis of an answer: the log position (and its transaction time) it reflects.
/// Ask again with `KnownAt::Position(basis.position)` and the answer is the same, forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Basis {
    /// Last log position included.
    pub position: u64,
    /// Transaction time of that position (the epoch for an empty log).
    pub recorded_at: Timestamp,
}

/// "As known at": a transaction time, a log position (a repeatable-read token), or now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KnownAt {
    /// Everything the ledger knows.
    Now,
    /// Everything recorded at or before this transaction time.
    Time(Timestamp),
    /// Everything up to and including this log position.
    Position(u64),
}
