//! Wire types of the ledger API and their conversions from and to the core's types.
//!
//! Requests take amounts, currencies, ids and times as strings and parse them here, so each
//! mistake is answered with the core's own stable code (`too_many_decimals`,
//! `unknown_currency`, `invalid_id`, `invalid_timestamp`, …) instead of a generic serde error.
//! Every request type refuses unknown fields. Responses carry amounts as decimal strings and
//! times as RFC 3339.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use ultracore_core::ids::{AccountId, EntryId};
use ultracore_core::ledger::{
    Account, AccountKind, AccountStatus, BalanceView, Basis, Constraints, Direction, EntryKind,
    EntryStatus, EntryVersion, EntryView, HoldResolution, KnownAt, Metadata, Posting, Restatement,
    Statement,
};
use ultracore_core::money::{Amount, Currency};
use ultracore_core::time::{EffectiveAt, Timestamp};
use utoipa::ToSchema;

use crate::error::{ApiError, Problem};

// ------------------------------------------------------------------------------------------
// Parsing helpers
// ------------------------------------------------------------------------------------------

/// Parses a currency code (`USD`, or `CODE:N` for a custom one).
pub fn currency(s: &str) -> Result<Currency, ApiError> {
    s.parse::<Currency>().map_err(ApiError::from)
}

/// Parses a decimal amount in `currency`.
pub fn amount(s: &str, currency: Currency) -> Result<Amount, ApiError> {
    Amount::parse(s, currency).map_err(ApiError::from)
}

/// Parses an RFC 3339 time.
pub fn timestamp(s: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse_rfc3339(s).map_err(ApiError::from)
}

/// Parses an optional valid time.
pub fn effective(s: Option<&str>) -> Result<Option<EffectiveAt>, ApiError> {
    s.map(|s| timestamp(s).map(EffectiveAt)).transpose()
}

/// Parses an account id.
pub fn account_id(s: &str) -> Result<AccountId, ApiError> {
    AccountId::new(s).map_err(ApiError::from)
}

/// Parses an entry id.
pub fn entry_id(s: &str) -> Result<EntryId, ApiError> {
    EntryId::new(s).map_err(ApiError::from)
}

/// Parses `known_at`: a log position (digits) or an RFC 3339 time; absent means now.
pub fn known_at(s: Option<&str>) -> Result<KnownAt, ApiError> {
    match s {
        None | Some("") => Ok(KnownAt::Now),
        Some(s) if s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse()
            .map(KnownAt::Position)
            .map_err(|_| ApiError::bad_request("invalid_request", "known_at position too large")),
        Some(s) => timestamp(s).map(KnownAt::Time),
    }
}

/// Builds metadata, checking the core's limits.
pub fn metadata(m: Option<BTreeMap<String, String>>) -> Result<Metadata, ApiError> {
    match m {
        None => Ok(Metadata::new()),
        Some(m) => Metadata::from_map(m).map_err(|r| ApiError::rejection(&r, None)),
    }
}

fn cur(c: Currency) -> String {
    format!("{c:#}")
}

// ------------------------------------------------------------------------------------------
// Accounts
// ------------------------------------------------------------------------------------------

/// Account kind (fixes the normal side).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Debit-normal.
    Asset,
    /// Credit-normal.
    Liability,
    /// Credit-normal.
    Equity,
    /// Credit-normal.
    Income,
    /// Debit-normal.
    Expense,
}

impl From<Kind> for AccountKind {
    fn from(k: Kind) -> AccountKind {
        match k {
            Kind::Asset => AccountKind::Asset,
            Kind::Liability => AccountKind::Liability,
            Kind::Equity => AccountKind::Equity,
            Kind::Income => AccountKind::Income,
            Kind::Expense => AccountKind::Expense,
        }
    }
}

impl From<AccountKind> for Kind {
    fn from(k: AccountKind) -> Kind {
        match k {
            AccountKind::Asset => Kind::Asset,
            AccountKind::Liability => Kind::Liability,
            AccountKind::Equity => Kind::Equity,
            AccountKind::Income => Kind::Income,
            AccountKind::Expense => Kind::Expense,
        }
    }
}

/// Balance constraints (see `docs/errors/limit_exceeded.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Flags {
    /// Debits (posted and pending) may exceed credits by at most the overdraft limit.
    #[serde(default)]
    pub debits_must_not_exceed_credits: bool,
    /// Credits (posted and pending) may exceed debits by at most the overdraft limit.
    #[serde(default)]
    pub credits_must_not_exceed_debits: bool,
}

/// `POST /v1/accounts`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// Client-chosen id (the idempotency key); generated if absent.
    pub id: Option<String>,
    /// Currency code, e.g. `USD`.
    pub currency: String,
    /// Kind.
    pub kind: Kind,
    /// Owning customer.
    pub owner: Option<String>,
    /// Servicing branch.
    pub branch: Option<String>,
    /// How far past its bound the account may go (decimal string).
    pub overdraft_limit: Option<String>,
    /// Constraints.
    pub flags: Option<Flags>,
    /// Descriptive data.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Valid time from which it exists (default: now).
    pub effective_at: Option<String>,
}

/// An account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountOut {
    /// Id.
    pub id: String,
    /// Currency.
    pub currency: String,
    /// Kind.
    pub kind: Kind,
    /// Owning customer.
    pub owner: Option<String>,
    /// Servicing branch.
    pub branch: Option<String>,
    /// Overdraft limit.
    pub overdraft_limit: Option<String>,
    /// Constraints.
    pub flags: Flags,
    /// Descriptive data.
    pub metadata: BTreeMap<String, String>,
    /// `open`, `frozen` or `closed`.
    pub status: String,
    /// Valid time from which it exists.
    pub opened_at: String,
    /// When the ledger recorded the opening.
    pub recorded_at: String,
}

impl From<&Account> for AccountOut {
    fn from(a: &Account) -> AccountOut {
        AccountOut {
            id: a.id.to_string(),
            currency: cur(a.currency),
            kind: a.kind.into(),
            owner: a.owner.clone(),
            branch: a.branch.clone(),
            overdraft_limit: a.constraints.overdraft_limit.map(|x| x.to_string()),
            flags: Flags {
                debits_must_not_exceed_credits: a.constraints.debits_must_not_exceed_credits,
                credits_must_not_exceed_debits: a.constraints.credits_must_not_exceed_debits,
            },
            metadata: a.metadata.as_map().clone(),
            status: account_status(a.status).to_string(),
            opened_at: a.opened_at.0.to_string(),
            recorded_at: a.recorded_at.0.to_string(),
        }
    }
}

fn account_status(s: AccountStatus) -> &'static str {
    match s {
        AccountStatus::Open => "open",
        AccountStatus::Frozen => "frozen",
        AccountStatus::Closed => "closed",
    }
}

impl CreateAccount {
    /// The core command; `generated_id` is used when the request has none.
    pub fn to_command(
        &self,
        generated_id: impl FnOnce() -> String,
    ) -> Result<ultracore_core::ledger::OpenAccount, ApiError> {
        let currency = currency(&self.currency)?;
        let id = match &self.id {
            Some(id) => account_id(id)?,
            None => account_id(&generated_id())?,
        };
        let flags = self.flags.unwrap_or_default();
        Ok(ultracore_core::ledger::OpenAccount {
            id,
            currency,
            kind: self.kind.into(),
            owner: self.owner.clone(),
            branch: self.branch.clone(),
            constraints: Constraints {
                debits_must_not_exceed_credits: flags.debits_must_not_exceed_credits,
                credits_must_not_exceed_debits: flags.credits_must_not_exceed_debits,
                overdraft_limit: self
                    .overdraft_limit
                    .as_deref()
                    .map(|s| amount(s, currency))
                    .transpose()?,
            },
            metadata: metadata(self.metadata.clone())?,
            effective_at: effective(self.effective_at.as_deref())?,
        })
    }
}

/// Balances at (valid_at, known_at).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BalanceOut {
    /// Account.
    pub account_id: String,
    /// Currency.
    pub currency: String,
    /// Posted balance, in the account's normal direction.
    pub posted: String,
    /// Reserved by holds against the normal side (`posted - available`).
    pub pending: String,
    /// Reserved by holds on the debit side.
    pub pending_debits: String,
    /// Reserved by holds on the credit side.
    pub pending_credits: String,
    /// Posted minus reservations.
    pub available: String,
    /// Valid time asked about.
    pub valid_at: String,
    /// Transaction time of the basis.
    pub known_at: String,
    /// Log position of the basis (ask again with `known_at=<position>` for the same answer).
    pub position: u64,
}

impl From<&BalanceView> for BalanceOut {
    fn from(b: &BalanceView) -> BalanceOut {
        let pending = b
            .posted
            .checked_sub(b.available)
            .map_or_else(|_| "?".to_string(), |p| p.to_string());
        BalanceOut {
            account_id: b.account_id.to_string(),
            currency: cur(b.currency),
            posted: b.posted.to_string(),
            pending,
            pending_debits: b.pending_debits.to_string(),
            pending_credits: b.pending_credits.to_string(),
            available: b.available.to_string(),
            valid_at: b.valid_at.to_string(),
            known_at: b.basis.recorded_at.to_string(),
            position: b.basis.position,
        }
    }
}

// ------------------------------------------------------------------------------------------
// Transfers and entries
// ------------------------------------------------------------------------------------------

/// `POST /v1/transfers` (and each item of `POST /v1/transfers/batch`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferIn {
    /// Client-chosen id (the idempotency key).
    pub id: String,
    /// Account debited.
    pub debit_account: String,
    /// Account credited.
    pub credit_account: String,
    /// Decimal string, at most the currency's decimals.
    pub amount: String,
    /// Currency code.
    pub currency: String,
    /// Valid time (default: now).
    #[serde(default)]
    pub effective_at: Option<String>,
    /// Reserve only (a hold), to be posted or voided later.
    #[serde(default)]
    pub pending: bool,
    /// Deadline of a pending transfer.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Descriptive data.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl TransferIn {
    /// The core command: a posted two-leg entry, or a hold.
    pub fn to_command(&self) -> Result<ultracore_core::ledger::Command, ApiError> {
        use ultracore_core::ledger::{Command, PlaceHold, PostEntry};
        let currency = currency(&self.currency)?;
        let id = entry_id(&self.id)?;
        let debit = account_id(&self.debit_account)?;
        let credit = account_id(&self.credit_account)?;
        let amount = amount(&self.amount, currency)?;
        let effective_at = effective(self.effective_at.as_deref())?;
        let metadata = metadata(self.metadata.clone())?;
        if self.pending {
            let expires_at = self.expires_at.as_deref().map(timestamp).transpose()?;
            return Ok(Command::PlaceHold(PlaceHold {
                id,
                debit_account: debit,
                credit_account: credit,
                amount,
                effective_at,
                expires_at,
                metadata,
            }));
        }
        if self.expires_at.is_some() {
            return Err(ApiError::bad_request(
                "invalid_request",
                "expires_at is only allowed with pending: true",
            ));
        }
        let mut entry = PostEntry::transfer(id, debit, credit, amount, effective_at);
        entry.metadata = metadata;
        Ok(Command::PostEntry(entry))
    }
}

/// The receipt of an entry command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReceiptOut {
    /// Entry id (for a correction: the corrected entry).
    pub id: String,
    /// `posted`, `pending`, `hold_posted`, `voided`, `expired` or `cancelled`.
    pub status: String,
    /// Version of the entry this command produced.
    pub version: u32,
    /// Valid time of that version.
    pub effective_at: String,
    /// Transaction time of the event.
    pub recorded_at: String,
    /// Log position of the event.
    pub position: u64,
}

impl From<&ultracore_core::ledger::EntryReceipt> for ReceiptOut {
    fn from(r: &ultracore_core::ledger::EntryReceipt) -> ReceiptOut {
        ReceiptOut {
            id: r.id.to_string(),
            status: entry_status(r.status).to_string(),
            version: r.version,
            effective_at: r.effective_at.0.to_string(),
            recorded_at: r.recorded_at.0.to_string(),
            position: r.position,
        }
    }
}

/// A transfer's answer: the receipt plus what was asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransferOut {
    /// Id.
    pub id: String,
    /// Status now.
    pub status: String,
    /// Version.
    pub version: u32,
    /// Valid time.
    pub effective_at: String,
    /// Transaction time.
    pub recorded_at: String,
    /// Log position.
    pub position: u64,
    /// Account debited.
    pub debit_account: String,
    /// Account credited.
    pub credit_account: String,
    /// Amount.
    pub amount: String,
    /// Currency.
    pub currency: String,
    /// Whether it is a hold.
    pub pending: bool,
    /// Deadline of a hold.
    pub expires_at: Option<String>,
}

impl TransferOut {
    /// Combines the receipt with the request.
    pub fn new(r: ReceiptOut, t: &TransferIn) -> TransferOut {
        TransferOut {
            id: r.id,
            status: r.status,
            version: r.version,
            effective_at: r.effective_at,
            recorded_at: r.recorded_at,
            position: r.position,
            debit_account: t.debit_account.clone(),
            credit_account: t.credit_account.clone(),
            amount: t.amount.clone(),
            currency: t.currency.clone(),
            pending: t.pending,
            expires_at: t.expires_at.clone(),
        }
    }
}

/// One answer of a batch: either `result` or `problem`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchItemOut {
    /// Index of the item in the request.
    pub index: usize,
    /// The status the item would have had on its own (201, 400, 403, 409, 422, …).
    pub status: u16,
    /// The transfer, if accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<TransferOut>,
    /// Why not, if refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

/// `POST /v1/transfers/batch` answer.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchOut {
    /// Items accepted (or already done).
    pub accepted: usize,
    /// Items refused.
    pub refused: usize,
    /// One answer per item, in request order.
    pub results: Vec<BatchItemOut>,
}

/// One leg of a multi-leg entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostingIn {
    /// Account.
    pub account: String,
    /// `debit` or `credit`.
    pub direction: Side,
    /// Decimal string.
    pub amount: String,
    /// Currency code.
    pub currency: String,
}

/// Debit or credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Debit.
    Debit,
    /// Credit.
    Credit,
}

impl PostingIn {
    fn to_posting(&self) -> Result<Posting, ApiError> {
        let c = currency(&self.currency)?;
        Ok(Posting {
            account: account_id(&self.account)?,
            direction: match self.direction {
                Side::Debit => Direction::Debit,
                Side::Credit => Direction::Credit,
            },
            amount: amount(&self.amount, c)?,
        })
    }
}

fn postings(p: &[PostingIn]) -> Result<Vec<Posting>, ApiError> {
    if p.len() > ultracore_core::limits::POSTINGS_PER_ENTRY_MAX {
        return Err(ApiError::rejection(
            &ultracore_core::ledger::Rejection::PostingCount {
                count: p.len(),
                max: ultracore_core::limits::POSTINGS_PER_ENTRY_MAX,
            },
            None,
        ));
    }
    p.iter().map(PostingIn::to_posting).collect()
}

/// `POST /v1/entries`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryIn {
    /// Client-chosen id.
    pub id: String,
    /// Two or more legs, balanced per currency.
    pub postings: Vec<PostingIn>,
    /// Valid time (default: now).
    pub effective_at: Option<String>,
    /// Descriptive data.
    pub metadata: Option<BTreeMap<String, String>>,
}

impl EntryIn {
    /// The core command.
    pub fn to_command(&self) -> Result<ultracore_core::ledger::Command, ApiError> {
        Ok(ultracore_core::ledger::Command::PostEntry(
            ultracore_core::ledger::PostEntry {
                id: entry_id(&self.id)?,
                postings: postings(&self.postings)?.into(),
                effective_at: effective(self.effective_at.as_deref())?,
                metadata: metadata(self.metadata.clone())?,
            },
        ))
    }
}

/// `POST /v1/transfers/{id}/post`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostHoldIn {
    /// Amount to post (default: all of it), in the hold's currency.
    pub amount: Option<String>,
    /// Valid time (default: now).
    pub effective_at: Option<String>,
}

/// `POST /v1/transfers/{id}/void`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoidHoldIn {
    /// Valid time (default: now).
    pub effective_at: Option<String>,
}

/// `POST /v1/entries/{id}/corrections`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrectionIn {
    /// Client-chosen id of the correction.
    pub id: String,
    /// New amount (two-leg entries), in the entry's currency.
    pub amount: Option<String>,
    /// New legs (any entry).
    pub postings: Option<Vec<PostingIn>>,
    /// New valid time.
    pub effective_at: Option<String>,
    /// Cancel the entry.
    #[serde(default)]
    pub cancel: bool,
    /// Why (required).
    pub reason: String,
}

impl CorrectionIn {
    /// The core command; `entry_currency` is the currency of the corrected entry.
    pub fn to_command(
        &self,
        entry: EntryId,
        entry_currency: Option<Currency>,
    ) -> Result<ultracore_core::ledger::Command, ApiError> {
        let amount = match (&self.amount, entry_currency) {
            (None, _) => None,
            (Some(a), Some(c)) => Some(amount(a, c)?),
            (Some(_), None) => {
                return Err(ApiError::rejection(
                    &ultracore_core::ledger::Rejection::UnknownEntry { entry },
                    Some(""),
                ))
            }
        };
        Ok(ultracore_core::ledger::Command::Correct(
            ultracore_core::ledger::Correct {
                id: entry_id(&self.id)?,
                entry,
                amount,
                postings: self.postings.as_deref().map(postings).transpose()?,
                effective_at: effective(self.effective_at.as_deref())?,
                cancel: self.cancel,
                reason: self.reason.clone(),
            },
        ))
    }
}

/// `POST /v1/entries/{id}/reversal`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReversalIn {
    /// Client-chosen id of the reversal entry.
    pub id: String,
    /// Valid time (default: now).
    pub effective_at: Option<String>,
    /// Descriptive data.
    pub metadata: Option<BTreeMap<String, String>>,
}

/// One leg, as answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PostingOut {
    /// Account.
    pub account: String,
    /// `debit` or `credit`.
    pub direction: Side,
    /// Decimal string.
    pub amount: String,
    /// Currency.
    pub currency: String,
}

impl From<&Posting> for PostingOut {
    fn from(p: &Posting) -> PostingOut {
        PostingOut {
            account: p.account.to_string(),
            direction: match p.direction {
                Direction::Debit => Side::Debit,
                Direction::Credit => Side::Credit,
            },
            amount: p.amount.to_string(),
            currency: cur(p.amount.currency()),
        }
    }
}

/// One version of an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VersionOut {
    /// 1 for the original, +1 per correction.
    pub version: u32,
    /// Legs (empty if cancelled).
    pub postings: Vec<PostingOut>,
    /// Valid time.
    pub effective_at: String,
    /// Log position that recorded it.
    pub position: u64,
    /// Transaction time that recorded it.
    pub recorded_at: String,
    /// Transaction time a later version replaced it, if one did.
    pub superseded_at: Option<String>,
    /// Log position of that replacement.
    pub superseded_at_position: Option<u64>,
    /// The correction that produced it.
    pub correction_id: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Whether this version cancels the entry.
    pub cancelled: bool,
}

impl From<&EntryVersion> for VersionOut {
    fn from(v: &EntryVersion) -> VersionOut {
        VersionOut {
            version: v.version,
            postings: v.postings.iter().map(PostingOut::from).collect(),
            effective_at: v.effective_at.0.to_string(),
            position: v.position,
            recorded_at: v.recorded_at.0.to_string(),
            superseded_at: v.superseded_at.map(|(_, t)| t.0.to_string()),
            superseded_at_position: v.superseded_at.map(|(p, _)| p),
            correction_id: v.correction_id.as_ref().map(ToString::to_string),
            reason: v.reason.clone(),
            cancelled: v.cancelled,
        }
    }
}

/// The hold part of a pending transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HoldOut {
    /// Amount reserved.
    pub amount: String,
    /// Deadline.
    pub expires_at: Option<String>,
    /// `posted`, `voided` or `expired` once resolved.
    pub resolution: Option<String>,
    /// Amount posted, if posted.
    pub posted_amount: Option<String>,
}

/// An entry as known at a basis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EntryOut {
    /// Id.
    pub id: String,
    /// `posted`, `reversal` or `hold`.
    pub kind: String,
    /// The reversed entry, for a reversal.
    pub reversal_of: Option<String>,
    /// Hold details, for a hold.
    pub hold: Option<HoldOut>,
    /// Status as known at the basis.
    pub status: String,
    /// The version in force at the basis.
    pub version: VersionOut,
    /// Descriptive data.
    pub metadata: BTreeMap<String, String>,
    /// The reversal, if any.
    pub reversed_by: Option<String>,
    /// Transaction time of the basis.
    pub known_at: String,
    /// Log position of the basis.
    pub position: u64,
}

impl From<&EntryView> for EntryOut {
    fn from(e: &EntryView) -> EntryOut {
        let (kind, reversal_of, hold) = match &e.kind {
            EntryKind::Posted => ("posted", None, None),
            EntryKind::Reversal { of } => ("reversal", Some(of.to_string()), None),
            EntryKind::Hold {
                expires_at,
                amount,
                resolution,
            } => {
                let (res, posted) = match resolution {
                    None => (None, None),
                    Some(HoldResolution::Posted { amount, .. }) => {
                        (Some("posted"), Some(amount.to_string()))
                    }
                    Some(HoldResolution::Voided { .. }) => (Some("voided"), None),
                    Some(HoldResolution::Expired { .. }) => (Some("expired"), None),
                };
                (
                    "hold",
                    None,
                    Some(HoldOut {
                        amount: amount.to_string(),
                        expires_at: expires_at.map(|t| t.to_string()),
                        resolution: res.map(str::to_string),
                        posted_amount: posted,
                    }),
                )
            }
        };
        EntryOut {
            id: e.id.to_string(),
            kind: kind.to_string(),
            reversal_of,
            hold,
            status: entry_status(e.status).to_string(),
            version: (&e.version).into(),
            metadata: e.metadata.as_map().clone(),
            reversed_by: e.reversed_by.as_ref().map(ToString::to_string),
            known_at: e.basis.recorded_at.to_string(),
            position: e.basis.position,
        }
    }
}

/// `GET /v1/entries/{id}/history`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HistoryOut {
    /// Entry id.
    pub id: String,
    /// Every version, oldest first.
    pub versions: Vec<VersionOut>,
}

/// The wire name of an entry status.
pub fn entry_status(s: EntryStatus) -> &'static str {
    match s {
        EntryStatus::Posted => "posted",
        EntryStatus::Pending => "pending",
        EntryStatus::HoldPosted => "hold_posted",
        EntryStatus::Voided => "voided",
        EntryStatus::Expired => "expired",
        EntryStatus::Cancelled => "cancelled",
    }
}

// ------------------------------------------------------------------------------------------
// Statements, restatements, events, audit
// ------------------------------------------------------------------------------------------

/// One statement line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineOut {
    /// Valid time.
    pub effective_at: String,
    /// Entry that caused it.
    pub entry_id: Option<String>,
    /// Log position of the version.
    pub position: u64,
    /// Change of the posted balance.
    pub posted_change: String,
    /// Change of pending debits.
    pub pending_debits_change: String,
    /// Change of pending credits.
    pub pending_credits_change: String,
    /// Posted balance after this line (running balance).
    pub posted_balance: String,
    /// Available balance after this line.
    pub available_balance: String,
}

/// `GET /v1/accounts/{id}/statement`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatementOut {
    /// Account.
    pub account_id: String,
    /// Currency.
    pub currency: String,
    /// Period start.
    pub from: String,
    /// Period end.
    pub to: String,
    /// Balances just before `from`.
    pub opening: BalanceOut,
    /// Lines in valid-time order, with running balances.
    pub lines: Vec<LineOut>,
    /// Balances at `to`.
    pub closing: BalanceOut,
    /// Transaction time of the basis.
    pub known_at: String,
    /// Log position of the basis.
    pub position: u64,
}

impl From<&Statement> for StatementOut {
    fn from(s: &Statement) -> StatementOut {
        StatementOut {
            account_id: s.account_id.to_string(),
            currency: cur(s.currency),
            from: s.from.to_string(),
            to: s.to.to_string(),
            opening: (&s.opening).into(),
            lines: s
                .lines
                .iter()
                .map(|l| LineOut {
                    effective_at: l.effective_at.to_string(),
                    entry_id: l.entry_id.as_ref().map(ToString::to_string),
                    position: l.position,
                    posted_change: l.posted_change.to_string(),
                    pending_debits_change: l.pending_debits_change.to_string(),
                    pending_credits_change: l.pending_credits_change.to_string(),
                    posted_balance: l.posted_balance.to_string(),
                    available_balance: l.available_balance.to_string(),
                })
                .collect(),
            closing: (&s.closing).into(),
            known_at: s.basis.recorded_at.to_string(),
            position: s.basis.position,
        }
    }
}

/// One change between two bases.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChangeOut {
    /// Valid time of the affected posting version.
    pub effective_at: String,
    /// Entry whose version changed.
    pub entry_id: Option<String>,
    /// Position of the event that caused it.
    pub caused_by_position: u64,
    /// Its type.
    pub caused_by_event_type: String,
    /// Its transaction time.
    pub recorded_at: String,
    /// Change of the posted balance.
    pub posted_change: String,
}

/// `GET /v1/accounts/{id}/restatement`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestatementOut {
    /// Account.
    pub account_id: String,
    /// Period start.
    pub from: String,
    /// Period end.
    pub to: String,
    /// Balance at `to` as known at the first basis.
    pub closing_before: BalanceOut,
    /// Balance at `to` as known at the second basis.
    pub closing_after: BalanceOut,
    /// What changed, and which events caused it.
    pub changes: Vec<ChangeOut>,
}

impl From<&Restatement> for RestatementOut {
    fn from(r: &Restatement) -> RestatementOut {
        RestatementOut {
            account_id: r.account_id.to_string(),
            from: r.from.to_string(),
            to: r.to.to_string(),
            closing_before: (&r.closing_before).into(),
            closing_after: (&r.closing_after).into(),
            changes: r
                .changes
                .iter()
                .map(|c| ChangeOut {
                    effective_at: c.effective_at.to_string(),
                    entry_id: c.entry_id.as_ref().map(ToString::to_string),
                    caused_by_position: c.caused_by_position,
                    caused_by_event_type: c.caused_by_event_type.clone(),
                    recorded_at: c.recorded_at.to_string(),
                    posted_change: c.posted_change.to_string(),
                })
                .collect(),
        }
    }
}

/// `GET /v1/events`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EventsOut {
    /// Event envelopes in log order, in the core's JSON codec (the stored form).
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
    /// Pass as `after` for the next page.
    pub next_after: u64,
    /// Last position in the log.
    pub last_position: u64,
}

/// `GET /v1/audit`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditOut {
    /// Records in order.
    pub records: Vec<crate::auth::audit::AuditRecord>,
    /// Pass as `after` for the next page.
    pub next_after: u64,
}

/// Basis of an answer, for callers that only need it.
pub fn basis_time(b: &Basis) -> String {
    b.recorded_at.to_string()
}
