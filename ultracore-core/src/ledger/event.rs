//! The ledger's events: the only thing ever written. State is a fold over them.

use serde::{Deserialize, Serialize};

use crate::event::DomainEvent;
use crate::ids::{AccountId, EntryId, StreamId};
use crate::money::{Amount, Currency};
use crate::time::{EffectiveAt, Timestamp};

use super::command::Postings;
use super::model::{AccountKind, Constraints, Metadata};
use super::rejection::Rejection;

/// Something that happened to the ledger. Schema version: `<LedgerEvent as DomainEvent>::SCHEMA_VERSION`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum LedgerEvent {
    /// An account was opened.
    AccountOpened {
        /// Its id.
        id: AccountId,
        /// Its currency.
        currency: Currency,
        /// Its kind.
        kind: AccountKind,
        /// Owning customer.
        owner: Option<String>,
        /// Servicing branch.
        branch: Option<String>,
        /// Limits. Boxed (64 bytes, on a rare event) so that every event, and every
        /// envelope, is 48 bytes smaller: each is moved several times on its way to the log.
        constraints: Box<Constraints>,
        /// Descriptive data.
        metadata: Metadata,
        /// Valid time from which it exists.
        opened_at: EffectiveAt,
        /// Fingerprint of the opening request.
        fingerprint: u64,
    },
    /// An account was frozen.
    AccountFrozen {
        /// The account.
        account: AccountId,
    },
    /// An account was unfrozen.
    AccountUnfrozen {
        /// The account.
        account: AccountId,
    },
    /// An account was closed.
    AccountClosed {
        /// The account.
        account: AccountId,
    },
    /// An account's metadata was replaced.
    AccountMetadataSet {
        /// The account.
        account: AccountId,
        /// The new metadata.
        metadata: Metadata,
    },
    /// A journal entry was posted (a reversal too, with `reversal_of`).
    EntryPosted {
        /// The entry id.
        id: EntryId,
        /// Its postings.
        postings: Postings,
        /// Valid time.
        effective_at: EffectiveAt,
        /// Descriptive data.
        metadata: Metadata,
        /// The entry this one reverses, if it is a reversal.
        reversal_of: Option<EntryId>,
        /// Fingerprint of the request.
        fingerprint: u64,
    },
    /// Funds were reserved.
    HoldPlaced {
        /// The hold's id.
        id: EntryId,
        /// The two postings (debit then credit) of the held amount.
        postings: Postings,
        /// Held amount.
        amount: Amount,
        /// Valid time the reservation starts.
        effective_at: EffectiveAt,
        /// Deadline.
        expires_at: Option<Timestamp>,
        /// Descriptive data.
        metadata: Metadata,
        /// Fingerprint of the request.
        fingerprint: u64,
    },
    /// A hold was posted (fully or partly).
    HoldPosted {
        /// The hold.
        hold: EntryId,
        /// Amount posted.
        amount: Amount,
        /// Valid time of the posting.
        effective_at: EffectiveAt,
        /// Fingerprint of the request.
        fingerprint: u64,
    },
    /// A hold was released.
    HoldVoided {
        /// The hold.
        hold: EntryId,
        /// Valid time of the release.
        effective_at: EffectiveAt,
        /// Fingerprint of the request.
        fingerprint: u64,
    },
    /// A hold reached its deadline.
    HoldExpired {
        /// The hold.
        hold: EntryId,
    },
    /// An entry was corrected: a new version supersedes the current one.
    EntryCorrected {
        /// The corrected entry.
        entry: EntryId,
        /// The correction's own id.
        correction_id: EntryId,
        /// The new version number.
        version: u32,
        /// The new postings (empty when cancelled).
        postings: Postings,
        /// The new valid time.
        effective_at: EffectiveAt,
        /// Whether the entry is cancelled.
        cancelled: bool,
        /// Why.
        reason: String,
        /// Fingerprint of the request.
        fingerprint: u64,
    },
    /// A command carrying a client id was refused; recorded so the id stays failed.
    EntryRejected {
        /// The id.
        id: EntryId,
        /// Fingerprint of the refused request.
        fingerprint: u64,
        /// Why it was refused.
        rejection: Rejection,
    },
}

// An event is as large as its largest variant: 192 bytes with `AccountOpened`'s constraints
// inline (see that field).
const _: () = assert!(size_of::<LedgerEvent>() == 144);

/// The event type names (what [`DomainEvent::event_type`] answers), indexed by
/// [`LedgerEvent::type_code`]: the state remembers a position's type as one byte.
pub(crate) const EVENT_TYPES: [&str; 12] = [
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

/// [`LedgerEvent::type_code`] of [`LedgerEvent::EntryRejected`].
pub(crate) const TYPE_ENTRY_REJECTED: u8 = 11;

impl LedgerEvent {
    /// The index of the event's type name in [`EVENT_TYPES`].
    pub(crate) fn type_code(&self) -> u8 {
        match self {
            LedgerEvent::AccountOpened { .. } => 0,
            LedgerEvent::AccountFrozen { .. } => 1,
            LedgerEvent::AccountUnfrozen { .. } => 2,
            LedgerEvent::AccountClosed { .. } => 3,
            LedgerEvent::AccountMetadataSet { .. } => 4,
            LedgerEvent::EntryPosted { .. } => 5,
            LedgerEvent::HoldPlaced { .. } => 6,
            LedgerEvent::HoldPosted { .. } => 7,
            LedgerEvent::HoldVoided { .. } => 8,
            LedgerEvent::HoldExpired { .. } => 9,
            LedgerEvent::EntryCorrected { .. } => 10,
            LedgerEvent::EntryRejected { .. } => TYPE_ENTRY_REJECTED,
        }
    }
}

impl DomainEvent for LedgerEvent {
    fn event_type(&self) -> &'static str {
        EVENT_TYPES[usize::from(self.type_code())]
    }

    const SCHEMA_VERSION: u16 = 1;

    fn stream(&self) -> StreamId {
        match self {
            LedgerEvent::AccountOpened { id, .. } => StreamId::for_account(id),
            LedgerEvent::AccountFrozen { account }
            | LedgerEvent::AccountUnfrozen { account }
            | LedgerEvent::AccountClosed { account }
            | LedgerEvent::AccountMetadataSet { account, .. } => StreamId::for_account(account),
            LedgerEvent::EntryPosted { id, .. }
            | LedgerEvent::HoldPlaced { id, .. }
            | LedgerEvent::EntryRejected { id, .. } => StreamId::for_entry(id),
            LedgerEvent::HoldPosted { hold, .. }
            | LedgerEvent::HoldVoided { hold, .. }
            | LedgerEvent::HoldExpired { hold } => StreamId::for_entry(hold),
            LedgerEvent::EntryCorrected { entry, .. } => StreamId::for_entry(entry),
        }
    }

    fn effective_at(&self) -> Option<EffectiveAt> {
        match self {
            LedgerEvent::AccountOpened { opened_at, .. } => Some(*opened_at),
            LedgerEvent::EntryPosted { effective_at, .. }
            | LedgerEvent::HoldPlaced { effective_at, .. }
            | LedgerEvent::HoldPosted { effective_at, .. }
            | LedgerEvent::HoldVoided { effective_at, .. }
            | LedgerEvent::EntryCorrected { effective_at, .. } => Some(*effective_at),
            _ => None,
        }
    }

    fn upcasters() -> &'static [crate::event::Upcaster] {
        &[]
    }
}
