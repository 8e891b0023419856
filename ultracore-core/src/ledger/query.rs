//! Queries on both time axes: balances at (valid_at, known_at), statements, entry versions,
//! the restatement diff, and the outcome of an accepted command. None of them replays events:
//! they read the per-account bitemporal indexes (see `bitemporal`).

use serde::{Deserialize, Serialize};

use crate::bitemporal::timeline::Deltas;
use crate::ids::{AccountId, EntryId};
use crate::limits::STATEMENT_LINES_MAX;
use crate::money::{Amount, Currency, SignedAmount};
use crate::time::{RecordedAt, Timestamp};

use super::command::{
    AccountReceipt, Command, EntryReceipt, EntryStatus, Outcome, PlaceHold, PostEntry, PostHold,
    Reverse, VoidHold,
};
use super::event::TYPE_ENTRY_REJECTED;
use super::model::{
    AccountKind, BalanceView, Basis, Direction, Entry, EntryKind, EntryVersion, HoldResolution,
    KnownAt, Metadata,
};
use super::stored::StoredEntry;
use super::{AccountState, Ledger, Rejection};

/// Why a query could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// No such account.
    #[error("account {0} does not exist")]
    UnknownAccount(AccountId),
    /// No such entry (as known at the basis).
    #[error("entry {0} does not exist")]
    UnknownEntry(EntryId),
    /// A basis position the ledger has not reached.
    #[error("position {requested} is beyond the last recorded position {last}")]
    PositionNotReached {
        /// Asked for.
        requested: u64,
        /// Last recorded.
        last: u64,
    },
    /// `from` after `to`, or `known_at_1` after `known_at_2`.
    #[error("invalid range: {0}")]
    InvalidRange(&'static str),
    /// More lines than one answer may hold.
    #[error("the answer would exceed {STATEMENT_LINES_MAX} lines; narrow the period")]
    TooLarge,
    /// A balance beyond what an amount can express (more than 10^28 - 1 minor units).
    #[error("a balance is beyond the range of an amount")]
    BalanceOutOfRange,
}

impl QueryError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::UnknownAccount(_) => "unknown_account",
            QueryError::UnknownEntry(_) => "unknown_entry",
            QueryError::PositionNotReached { .. } => "position_not_reached",
            QueryError::InvalidRange(_) => "invalid_range",
            QueryError::TooLarge => "answer_too_large",
            QueryError::BalanceOutOfRange => "balance_out_of_range",
        }
    }
}

/// One line of a statement: one entry version's effect on the account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    /// Valid time.
    pub effective_at: Timestamp,
    /// The entry (or hold) that caused it.
    pub entry_id: Option<EntryId>,
    /// Log position of the version that recorded it.
    pub position: u64,
    /// Change of the posted balance (normal direction).
    pub posted_change: SignedAmount,
    /// Change of pending debits.
    pub pending_debits_change: SignedAmount,
    /// Change of pending credits.
    pub pending_credits_change: SignedAmount,
    /// Posted balance after this line.
    pub posted_balance: SignedAmount,
    /// Available balance after this line.
    pub available_balance: SignedAmount,
}

/// A statement for a valid-time period, as known at a basis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// The account.
    pub account_id: AccountId,
    /// Its currency.
    pub currency: Currency,
    /// Period start (inclusive).
    pub from: Timestamp,
    /// Period end (inclusive).
    pub to: Timestamp,
    /// Balances just before `from`.
    pub opening: BalanceView,
    /// Lines in valid-time order.
    pub lines: Vec<StatementLine>,
    /// Balances at `to`.
    pub closing: BalanceView,
    /// What the answer is based on.
    pub basis: Basis,
}

/// An entry as known at a basis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryView {
    /// Its id.
    pub id: EntryId,
    /// Kind (and hold state as known now).
    pub kind: EntryKind,
    /// Status as known at the basis.
    pub status: EntryStatus,
    /// The version in force at the basis.
    pub version: EntryVersion,
    /// Descriptive data.
    pub metadata: Metadata,
    /// Reversal, if any (as known now).
    pub reversed_by: Option<EntryId>,
    /// What the answer is based on.
    pub basis: Basis,
}

/// One change that restated a period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestatementChange {
    /// Valid time of the affected posting version.
    pub effective_at: Timestamp,
    /// The entry whose version changed.
    pub entry_id: Option<EntryId>,
    /// The event that caused the change.
    pub caused_by_position: u64,
    /// Its type (`entry_posted`, `entry_corrected`, …).
    pub caused_by_event_type: String,
    /// Its transaction time.
    pub recorded_at: Timestamp,
    /// Change of the posted balance (normal direction).
    pub posted_change: SignedAmount,
}

/// What changed for valid period [from, to] between two bases.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restatement {
    /// The account.
    pub account_id: AccountId,
    /// Period start.
    pub from: Timestamp,
    /// Period end.
    pub to: Timestamp,
    /// Balance at `to` as known at the first basis.
    pub closing_before: BalanceView,
    /// Balance at `to` as known at the second basis.
    pub closing_after: BalanceView,
    /// Every change recorded between the bases that touched a valid time up to `to`.
    pub changes: Vec<RestatementChange>,
}

impl Ledger {
    /// Resolves `known_at` to a basis.
    pub fn basis(&self, known_at: KnownAt) -> Result<Basis, QueryError> {
        let last = self.position();
        let position = match known_at {
            KnownAt::Now => last,
            KnownAt::Position(p) if p > last => {
                return Err(QueryError::PositionNotReached { requested: p, last })
            }
            KnownAt::Position(p) => p,
            KnownAt::Time(t) => {
                self.positions
                    .partition_point(|m| m.recorded_at <= t.as_micros()) as u64
            }
        };
        Ok(Basis {
            position,
            recorded_at: self.recorded_at_of(position),
        })
    }

    pub(crate) fn recorded_at_of(&self, position: u64) -> Timestamp {
        position
            .checked_sub(1)
            .and_then(|i| self.positions.get(i as usize))
            .and_then(|m| Timestamp::from_micros(m.recorded_at))
            .unwrap_or(Timestamp::EPOCH)
    }

    fn state(&self, id: &AccountId) -> Result<&AccountState, QueryError> {
        self.account_ix
            .get(id)
            .map(|&i| &self.accounts[i as usize])
            .ok_or_else(|| QueryError::UnknownAccount(id.clone()))
    }

    /// Balances of `account` at valid time `valid_at` as known at `known_at`.
    /// O(log n) for `KnownAt::Now`; see `bitemporal::index` for past bases.
    pub fn balance(
        &self,
        account: &AccountId,
        valid_at: Timestamp,
        known_at: KnownAt,
    ) -> Result<BalanceView, QueryError> {
        let st = self.state(account)?;
        let basis = self.basis(known_at)?;
        let known = (known_at != KnownAt::Now).then_some(basis.position);
        let d = st.index.balance(valid_at.as_micros(), known);
        view(st, d, valid_at, basis)
    }

    /// A statement of `account` for valid period [from, to] as known at `known_at`, with a
    /// running balance.
    pub fn statement(
        &self,
        account: &AccountId,
        from: Timestamp,
        to: Timestamp,
        known_at: KnownAt,
    ) -> Result<Statement, QueryError> {
        if from > to {
            return Err(QueryError::InvalidRange("from is after to"));
        }
        let st = self.state(account)?;
        let basis = self.basis(known_at)?;
        let known = (known_at != KnownAt::Now).then_some(basis.position);
        let before = from.as_micros().saturating_sub(1);
        let mut running = st.index.balance(before, known);
        let opening = view(
            st,
            running,
            Timestamp::from_micros(before).unwrap_or(from),
            basis,
        )?;
        let entries = st.index.entries(from.as_micros(), to.as_micros(), known);
        if entries.len() > STATEMENT_LINES_MAX {
            return Err(QueryError::TooLarge);
        }
        let cur = st.account.currency;
        let sign = normal_sign(st.account.kind);
        let mut lines = Vec::with_capacity(entries.len());
        for (key, d) in entries {
            running = running
                .checked_add(&d)
                .ok_or(QueryError::BalanceOutOfRange)?;
            let v = view(st, running, from, basis)?;
            lines.push(StatementLine {
                effective_at: Timestamp::from_micros(key.0).unwrap_or(from),
                entry_id: self.entry_at(key.1),
                position: key.1,
                posted_change: signed(d.posted * sign, cur)?,
                pending_debits_change: signed(d.pending_debit, cur)?,
                pending_credits_change: signed(d.pending_credit, cur)?,
                posted_balance: v.posted,
                available_balance: v.available,
            });
        }
        let closing = view(st, st.index.balance(to.as_micros(), known), to, basis)?;
        Ok(Statement {
            account_id: account.clone(),
            currency: cur,
            from,
            to,
            opening,
            lines,
            closing,
            basis,
        })
    }

    /// The entry the event at `position` recorded, changed or refused, if any.
    fn entry_at(&self, position: u64) -> Option<EntryId> {
        let m = self
            .positions
            .get(usize::try_from(position.checked_sub(1)?).ok()?)?;
        if m.event_type == TYPE_ENTRY_REJECTED {
            let i = self
                .rejected_at
                .binary_search_by_key(&position, |(p, _)| *p)
                .ok()?;
            return Some(self.rejected_at[i].1.clone());
        }
        Some(self.entry_id(&self.entries[m.entry_ix()?]))
    }

    /// An entry as known at `known_at`: the version then in force.
    pub fn entry(&self, id: &EntryId, known_at: KnownAt) -> Result<EntryView, QueryError> {
        let basis = self.basis(known_at)?;
        let e = self
            .entry_view(id)
            .ok_or_else(|| QueryError::UnknownEntry(id.clone()))?;
        let version = e
            .version_at(basis.position)
            .ok_or_else(|| QueryError::UnknownEntry(id.clone()))?
            .clone();
        Ok(EntryView {
            id: id.clone(),
            kind: e.kind.clone(),
            status: status_at(&e, &version, basis.position),
            version,
            metadata: e.metadata.clone(),
            reversed_by: e.reversed_by.clone(),
            basis,
        })
    }

    /// Every version of an entry, oldest first, with the transaction-time interval in which
    /// each was believed.
    pub fn entry_history(&self, id: &EntryId) -> Result<Vec<EntryVersion>, QueryError> {
        let e = self
            .entry_view(id)
            .ok_or_else(|| QueryError::UnknownEntry(id.clone()))?;
        Ok(e.versions().cloned().collect())
    }

    /// What changed for `account` in valid period [from, to] between `known_at_1` and
    /// `known_at_2`, and which events caused it.
    pub fn restatement(
        &self,
        account: &AccountId,
        from: Timestamp,
        to: Timestamp,
        known_at_1: KnownAt,
        known_at_2: KnownAt,
    ) -> Result<Restatement, QueryError> {
        if from > to {
            return Err(QueryError::InvalidRange("from is after to"));
        }
        let st = self.state(account)?;
        let b1 = self.basis(known_at_1)?;
        let b2 = self.basis(known_at_2)?;
        if b1.position > b2.position {
            return Err(QueryError::InvalidRange("known_at_1 is after known_at_2"));
        }
        let changes = st.index.changes();
        let lo = changes.known_len(b1.position);
        let hi = changes.known_len(b2.position);
        let sign = normal_sign(st.account.kind);
        let cur = st.account.currency;
        let mut out = Vec::new();
        for c in changes.range(lo..hi) {
            if c.key.0 > to.as_micros() || c.deltas.posted == 0 {
                continue;
            }
            if out.len() >= STATEMENT_LINES_MAX {
                return Err(QueryError::TooLarge);
            }
            let meta = &self.positions[(c.position - 1) as usize];
            out.push(RestatementChange {
                effective_at: Timestamp::from_micros(c.key.0).unwrap_or(from),
                entry_id: self.entry_at(c.key.1),
                caused_by_position: c.position,
                caused_by_event_type: meta.event_type_name().to_string(),
                recorded_at: Timestamp::from_micros(meta.recorded_at).unwrap_or(Timestamp::EPOCH),
                posted_change: signed(c.deltas.posted * sign, cur)?,
            });
        }
        let to_micros = to.as_micros();
        Ok(Restatement {
            account_id: account.clone(),
            from,
            to,
            closing_before: view(st, st.index.balance(to_micros, Some(b1.position)), to, b1)?,
            closing_after: view(st, st.index.balance(to_micros, Some(b2.position)), to, b2)?,
            changes: out,
        })
    }

    /// The answer for a command that was accepted (now applied) or found already done.
    pub fn outcome(&self, command: &Command) -> Result<Outcome, Rejection> {
        let account_receipt = |id: &AccountId| -> Result<Outcome, Rejection> {
            let st = self
                .account_ix
                .get(id)
                .map(|&i| &self.accounts[i as usize])
                .ok_or_else(|| Rejection::UnknownAccount {
                    account: id.clone(),
                })?;
            Ok(Outcome::Account(AccountReceipt {
                id: id.clone(),
                status: st.account.status,
                position: st.position,
            }))
        };
        let entry = |id: &EntryId| {
            self.stored_entry(id)
                .ok_or_else(|| Rejection::UnknownEntry { entry: id.clone() })
        };
        match command {
            Command::OpenAccount(c) => account_receipt(&c.id),
            Command::FreezeAccount { account }
            | Command::UnfreezeAccount { account }
            | Command::CloseAccount { account }
            | Command::SetAccountMetadata { account, .. } => account_receipt(account),
            Command::PostEntry(PostEntry { id, .. })
            | Command::PlaceHold(PlaceHold { id, .. })
            | Command::Reverse(Reverse { id, .. }) => Ok(self.receipt(entry(id)?, id, Some(1))),
            Command::PostHold(PostHold { hold, .. }) | Command::VoidHold(VoidHold { hold, .. }) => {
                Ok(self.receipt(entry(hold)?, hold, None))
            }
            Command::Correct(c) => {
                let (target, version, _) =
                    self.corrections
                        .get(&c.id)
                        .ok_or_else(|| Rejection::UnknownEntry {
                            entry: c.id.clone(),
                        })?;
                Ok(self.receipt(entry(target)?, target, Some(*version)))
            }
            Command::ExpireHolds => Ok(Outcome::HoldsExpired { count: 0 }),
        }
    }
}

fn resolution_position(e: &Entry) -> Option<u64> {
    match &e.kind {
        EntryKind::Hold {
            resolution: Some(r),
            ..
        } => Some(match r {
            HoldResolution::Posted { position, .. }
            | HoldResolution::Voided { position, .. }
            | HoldResolution::Expired { position } => *position,
        }),
        _ => None,
    }
}

impl Ledger {
    /// The receipt for version `version` of an entry (the current one if `None`, and then at
    /// its hold's resolution if it has one). A plain transfer's is read from its stored form,
    /// which has one version, without building the full entry.
    /// `id` is the entry's id (the one it was looked up by: the ledger keeps ids in its arena,
    /// so this saves building one).
    pub(crate) fn receipt(&self, e: &StoredEntry, id: &EntryId, version: Option<u32>) -> Outcome {
        let Some(full) = e.cold_entry() else {
            let position = e.current_position();
            return Outcome::Entry(EntryReceipt {
                id: id.clone(),
                status: EntryStatus::Posted,
                version: 1,
                effective_at: e.current_effective_at(),
                position,
                recorded_at: RecordedAt(self.recorded_at_of(position)),
            });
        };
        match version {
            Some(v) => receipt(full, v, None, self),
            None => receipt(full, full.current.version, resolution_position(full), self),
        }
    }
}

fn receipt(e: &Entry, version: u32, position: Option<u64>, ledger: &Ledger) -> Outcome {
    let v = e
        .versions()
        .find(|v| v.version == version)
        .unwrap_or(&e.current);
    let position = position.unwrap_or(v.position);
    let recorded_at = RecordedAt(ledger.recorded_at_of(position));
    Outcome::Entry(EntryReceipt {
        id: e.id.clone(),
        status: status_at(e, &e.current, u64::MAX),
        version: v.version,
        effective_at: v.effective_at,
        position,
        recorded_at,
    })
}

fn status_at(e: &Entry, v: &EntryVersion, basis: u64) -> EntryStatus {
    if v.cancelled {
        return EntryStatus::Cancelled;
    }
    match &e.kind {
        EntryKind::Hold { resolution, .. } => match resolution {
            Some(HoldResolution::Posted { position, .. }) if *position <= basis => {
                EntryStatus::HoldPosted
            }
            Some(HoldResolution::Voided { position, .. }) if *position <= basis => {
                EntryStatus::Voided
            }
            Some(HoldResolution::Expired { position }) if *position <= basis => {
                EntryStatus::Expired
            }
            _ => EntryStatus::Pending,
        },
        _ => EntryStatus::Posted,
    }
}

/// +1 for credit-normal accounts (net = credits - debits is their balance), -1 otherwise.
fn normal_sign(kind: AccountKind) -> i128 {
    match kind.normal_side() {
        Direction::Credit => 1,
        Direction::Debit => -1,
    }
}

fn signed(minor: i128, currency: Currency) -> Result<SignedAmount, QueryError> {
    SignedAmount::from_minor(minor, currency).map_err(|_| QueryError::BalanceOutOfRange)
}

fn amount(minor: i128, currency: Currency) -> Result<Amount, QueryError> {
    Amount::from_minor(minor, currency).map_err(|_| QueryError::BalanceOutOfRange)
}

fn view(
    st: &AccountState,
    d: Deltas,
    valid_at: Timestamp,
    basis: Basis,
) -> Result<BalanceView, QueryError> {
    let cur = st.account.currency;
    let sign = normal_sign(st.account.kind);
    let posted = d.posted * sign;
    // Reservations against the normal side reduce what is available.
    let reserved = match st.account.kind.normal_side() {
        Direction::Credit => d.pending_debit,
        Direction::Debit => d.pending_credit,
    };
    Ok(BalanceView {
        account_id: st.account.id.clone(),
        currency: cur,
        posted: signed(posted, cur)?,
        pending_debits: amount(d.pending_debit, cur)?,
        pending_credits: amount(d.pending_credit, cur)?,
        available: signed(posted - reserved, cur)?,
        valid_at,
        basis,
    })
}
