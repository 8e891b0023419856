//! `Rejection`: every reason the ledger refuses a command, each with a stable code.
//!
//! A rejection is the user's problem (HTTP 4xx, never retried as-is); infrastructure failures
//! are `StoreError`s and broken invariants are `InvariantViolated`. The codes are part of the
//! public contract: each has a page in `docs/errors/` and is the `type` of the HTTP problem.

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, EntryId};
use crate::money::{Currency, MoneyError};
use crate::time::Timestamp;

/// Why a command was refused. Rejections of commands that carry an entry id are recorded, so
/// the id stays failed: retrying the same request returns the same rejection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "code")]
#[non_exhaustive]
pub enum Rejection {
    /// No account has this id.
    #[error("account {account} does not exist")]
    UnknownAccount {
        /// The id asked for.
        account: AccountId,
    },
    /// An account with this id already exists with different attributes.
    #[error("account {account} already exists with different attributes")]
    AccountExists {
        /// The id.
        account: AccountId,
    },
    /// The account is frozen.
    #[error("account {account} is frozen")]
    AccountFrozen {
        /// The account.
        account: AccountId,
    },
    /// The account is closed.
    #[error("account {account} is closed")]
    AccountClosed {
        /// The account.
        account: AccountId,
    },
    /// The account cannot be closed yet.
    #[error("account {account} cannot be closed: {reason}")]
    AccountNotClosable {
        /// The account.
        account: AccountId,
        /// Non-zero balance or open holds.
        reason: String,
    },
    /// A posting's currency differs from its account's.
    #[error("account {account} holds {expected}, not {found}")]
    CurrencyMismatch {
        /// The account.
        account: AccountId,
        /// The account's currency.
        expected: Currency,
        /// The posting's currency.
        found: Currency,
    },
    /// Debits and credits differ in some currency.
    #[error(
        "entry does not balance in {currency}: debits {debits} vs credits {credits} (minor units)"
    )]
    Unbalanced {
        /// The currency that does not balance.
        currency: Currency,
        /// Total debits, minor units.
        #[serde(with = "crate::ids::i128_as_string")]
        debits: i128,
        /// Total credits, minor units.
        #[serde(with = "crate::ids::i128_as_string")]
        credits: i128,
    },
    /// Fewer than two or more than the maximum number of postings.
    #[error("an entry needs 2 to {max} postings, got {count}")]
    PostingCount {
        /// Postings given.
        count: usize,
        /// The maximum.
        max: usize,
    },
    /// A posting or hold of zero.
    #[error("amounts must be greater than zero")]
    ZeroAmount,
    /// A transfer (or hold, or entry) whose postings all touch one account: it would move
    /// nothing.
    #[error("debit and credit accounts must differ")]
    SameAccount,
    /// Valid time outside the back-dating / future-dating window.
    #[error("effective_at {effective_at} is outside the allowed window [{earliest}, {latest}]")]
    EffectiveAtOutsideWindow {
        /// The requested valid time.
        effective_at: Timestamp,
        /// Earliest allowed.
        earliest: Timestamp,
        /// Latest allowed.
        latest: Timestamp,
    },
    /// Valid time before the account existed.
    #[error("account {account} did not exist at {effective_at} (opened {opened_at})")]
    BeforeAccountOpened {
        /// The account.
        account: AccountId,
        /// The requested valid time.
        effective_at: Timestamp,
        /// The account's opening valid time.
        opened_at: Timestamp,
    },
    /// The change would break an account's balance limit at some valid time (insufficient funds).
    #[error("account {account} would break its limit at {at}: balance {balance} vs bound {bound} (minor units)")]
    LimitExceeded {
        /// The account.
        account: AccountId,
        /// The first valid time at which the limit breaks.
        at: Timestamp,
        /// The balance the change would produce there (net credits minus debits, holds included).
        #[serde(with = "crate::ids::i128_as_string")]
        balance: i128,
        /// The bound it crosses.
        #[serde(with = "crate::ids::i128_as_string")]
        bound: i128,
    },
    /// The id is taken by a different request (idempotency conflict).
    #[error("id {id} was already used for a different request")]
    IdConflict {
        /// The id.
        id: EntryId,
    },
    /// No entry has this id.
    #[error("entry {entry} does not exist")]
    UnknownEntry {
        /// The id asked for.
        entry: EntryId,
    },
    /// The entry is not a hold.
    #[error("entry {entry} is not a hold")]
    NotAHold {
        /// The entry.
        entry: EntryId,
    },
    /// The hold was already posted, voided or expired.
    #[error("hold {hold} is already resolved")]
    HoldAlreadyResolved {
        /// The hold.
        hold: EntryId,
    },
    /// The hold's deadline has passed.
    #[error("hold {hold} expired at {expires_at}")]
    HoldExpired {
        /// The hold.
        hold: EntryId,
        /// Its deadline.
        expires_at: Timestamp,
    },
    /// Posting more than the hold reserved.
    #[error("cannot post more than the {held} held (minor units)")]
    PostExceedsHold {
        /// Held amount, minor units.
        #[serde(with = "crate::ids::i128_as_string")]
        held: i128,
        /// Requested amount, minor units.
        #[serde(with = "crate::ids::i128_as_string")]
        requested: i128,
    },
    /// A hold's deadline must come after its valid time and after now.
    #[error("expires_at must be after both effective_at and the current time")]
    ExpiryNotAfterEffective,
    /// A resolution dated before the hold took effect.
    #[error("resolution effective_at is before the hold took effect")]
    ResolutionBeforeHold,
    /// This kind of entry cannot be corrected or reversed (holds; reversed entries).
    #[error("entry {entry} cannot be changed: {reason}")]
    EntryNotChangeable {
        /// The entry.
        entry: EntryId,
        /// Why.
        reason: String,
    },
    /// A correction that changes nothing, or asks for contradictory things.
    #[error("invalid correction: {reason}")]
    InvalidCorrection {
        /// Why.
        reason: String,
    },
    /// Too many corrections of one entry.
    #[error("entry {entry} has reached the maximum number of versions")]
    TooManyVersions {
        /// The entry.
        entry: EntryId,
    },
    /// Metadata over the limits.
    #[error("invalid metadata: {reason}")]
    InvalidMetadata {
        /// Why.
        reason: String,
    },
    /// Free text too long or with control characters.
    #[error("invalid text in {field}")]
    InvalidText {
        /// The field.
        field: String,
    },
    /// A money rule (scale, overflow, currency); `money_code` is the `MoneyError` code.
    #[error("{message}")]
    Money {
        /// The stable code of the money error.
        money_code: String,
        /// Its message.
        message: String,
    },
    /// An amount above the per-posting limit (`limits::POSTING_AMOUNT_MINOR_MAX`), or a change
    /// that would take a balance out of the representable range.
    #[error("amount too large: above the per-posting limit, or a balance would overflow")]
    Overflow,
}

impl Rejection {
    /// The stable, documented code of this rejection (the HTTP problem `type` suffix).
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::UnknownAccount { .. } => "unknown_account",
            Rejection::AccountExists { .. } => "account_exists",
            Rejection::AccountFrozen { .. } => "account_frozen",
            Rejection::AccountClosed { .. } => "account_closed",
            Rejection::AccountNotClosable { .. } => "account_not_closable",
            Rejection::CurrencyMismatch { .. } => "currency_mismatch",
            Rejection::Unbalanced { .. } => "unbalanced_entry",
            Rejection::PostingCount { .. } => "posting_count",
            Rejection::ZeroAmount => "zero_amount",
            Rejection::SameAccount => "same_account",
            Rejection::EffectiveAtOutsideWindow { .. } => "effective_at_outside_window",
            Rejection::BeforeAccountOpened { .. } => "before_account_opened",
            Rejection::LimitExceeded { .. } => "limit_exceeded",
            Rejection::IdConflict { .. } => "id_conflict",
            Rejection::UnknownEntry { .. } => "unknown_entry",
            Rejection::NotAHold { .. } => "not_a_hold",
            Rejection::HoldAlreadyResolved { .. } => "hold_already_resolved",
            Rejection::HoldExpired { .. } => "hold_expired",
            Rejection::PostExceedsHold { .. } => "post_exceeds_hold",
            Rejection::ExpiryNotAfterEffective => "expiry_not_after_effective",
            Rejection::ResolutionBeforeHold => "resolution_before_hold",
            Rejection::EntryNotChangeable { .. } => "entry_not_changeable",
            Rejection::InvalidCorrection { .. } => "invalid_correction",
            Rejection::TooManyVersions { .. } => "too_many_versions",
            Rejection::InvalidMetadata { .. } => "invalid_metadata",
            Rejection::InvalidText { .. } => "invalid_text",
            Rejection::Money { money_code, .. } => match money_code.as_str() {
                "too_many_decimals" => "too_many_decimals",
                "negative_amount" => "negative_amount",
                "amount_overflow" => "amount_overflow",
                "currency_mismatch" => "currency_mismatch",
                "unknown_currency" => "unknown_currency",
                "invalid_currency" => "invalid_currency",
                _ => "invalid_amount_format",
            },
            Rejection::Overflow => "amount_overflow",
        }
    }
}

impl From<MoneyError> for Rejection {
    fn from(e: MoneyError) -> Self {
        Rejection::Money {
            money_code: e.code().to_string(),
            message: e.to_string(),
        }
    }
}
