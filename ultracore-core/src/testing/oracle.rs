//! A deliberately naive reference ledger: every answer is derived from the list of envelopes
//! alone, by folding over all of them each time. It shares no code with [`crate::bitemporal`]
//! or the ledger's index, so the optimised structures can be checked against it.
//!
//! Semantics (all in net minor units, `net = credits - debits`):
//! - an entry's money is its version in force as known at the basis, at that version's
//!   valid time;
//! - a hold reserves its amount (pending debit on the debit account, pending credit on the
//!   credit account) from its valid time until its resolution's valid time (if the resolution
//!   is known at the basis), else until its deadline, else forever; a posted hold moves the
//!   posted amount at the resolution's valid time.

use std::collections::BTreeMap;

use crate::event::Envelope;
use crate::ids::{AccountId, EntryId};
use crate::ledger::{AccountKind, Constraints, Direction, EntryStatus, LedgerEvent, Posting};
use crate::money::Currency;
use crate::time::Timestamp;

/// Balances at one point: (posted net, pending debits, pending credits), minor units.
pub type Money = (i128, i128, i128);

/// One statement line: the merged movement of one (valid time, log position) key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OracleLine {
    /// Valid time, microseconds.
    pub effective_at: i64,
    /// Log position of the event that recorded the movement's version.
    pub position: u64,
    /// Change of the posted net.
    pub posted: i128,
    /// Change of pending debits.
    pub pending_debit: i128,
    /// Change of pending credits.
    pub pending_credit: i128,
}

struct OpenedAccount {
    currency: Currency,
    kind: AccountKind,
    constraints: Constraints,
}

struct Version {
    postings: Vec<Posting>,
    effective_at: i64,
    position: u64,
    cancelled: bool,
}

struct Hold {
    postings: Vec<Posting>,
    debit: AccountId,
    credit: AccountId,
    amount: i128,
    effective_at: i64,
    position: u64,
    expires_at: Option<i64>,
    /// (valid time, position, posted amount) of the resolution.
    resolution: Option<(i64, u64, i128)>,
}

/// What was known at one basis, folded from the events.
#[derive(Default)]
struct Book {
    accounts: BTreeMap<AccountId, OpenedAccount>,
    entries: BTreeMap<EntryId, Version>,
    holds: BTreeMap<EntryId, Hold>,
    expired: std::collections::BTreeSet<EntryId>,
}

fn fold(events: &[Envelope<LedgerEvent>], known_at: u64) -> Book {
    let mut book = Book::default();
    for e in events.iter().filter(|e| e.position <= known_at) {
        book.apply(&e.payload, e.position);
    }
    book
}

impl Book {
    fn apply(&mut self, event: &LedgerEvent, pos: u64) {
        match event {
            LedgerEvent::AccountOpened {
                id,
                currency,
                kind,
                constraints,
                ..
            } => {
                let a = OpenedAccount {
                    currency: *currency,
                    kind: *kind,
                    constraints: **constraints,
                };
                self.accounts.insert(id.clone(), a);
            }
            LedgerEvent::EntryPosted {
                id,
                postings,
                effective_at,
                ..
            } => self.set_version(id, postings, effective_at.0, pos, false),
            LedgerEvent::EntryCorrected {
                entry,
                postings,
                effective_at,
                cancelled,
                ..
            } => self.set_version(entry, postings, effective_at.0, pos, *cancelled),
            LedgerEvent::HoldPlaced {
                id,
                postings,
                amount,
                effective_at,
                expires_at,
                ..
            } => {
                let hold = Hold {
                    postings: postings.to_vec(),
                    debit: postings[0].account.clone(),
                    credit: postings[1].account.clone(),
                    amount: amount.minor(),
                    effective_at: effective_at.0.as_micros(),
                    position: pos,
                    expires_at: expires_at.map(|t| t.as_micros()),
                    resolution: None,
                };
                self.holds.insert(id.clone(), hold);
            }
            LedgerEvent::HoldPosted {
                hold,
                amount,
                effective_at,
                ..
            } => self.resolve(hold, effective_at.0, pos, amount.minor()),
            LedgerEvent::HoldVoided {
                hold, effective_at, ..
            } => self.resolve(hold, effective_at.0, pos, 0),
            LedgerEvent::HoldExpired { hold } => {
                self.expired.insert(hold.clone());
            }
            _ => {}
        }
    }

    fn set_version(
        &mut self,
        id: &EntryId,
        postings: &[Posting],
        at: Timestamp,
        pos: u64,
        cancelled: bool,
    ) {
        let v = Version {
            postings: postings.to_vec(),
            effective_at: at.as_micros(),
            position: pos,
            cancelled,
        };
        self.entries.insert(id.clone(), v);
    }

    fn resolve(&mut self, hold: &EntryId, at: Timestamp, pos: u64, posted: i128) {
        if let Some(h) = self.holds.get_mut(hold) {
            h.resolution = Some((at.as_micros(), pos, posted));
        }
    }

    /// Every movement of `account` as (valid time, position, posted, pending debit, pending
    /// credit), unmerged and unsorted.
    fn movements(&self, account: &AccountId) -> Vec<OracleLine> {
        let mut out = Vec::new();
        for v in self.entries.values() {
            for p in v.postings.iter().filter(|p| &p.account == account) {
                let net = match p.direction {
                    Direction::Credit => p.amount.minor(),
                    Direction::Debit => -p.amount.minor(),
                };
                out.push(line(v.effective_at, v.position, net, 0, 0));
            }
        }
        for h in self.holds.values() {
            if &h.debit == account {
                hold_movements(h, -1, &mut out, |l, a| l.pending_debit = a);
            }
            if &h.credit == account {
                hold_movements(h, 1, &mut out, |l, a| l.pending_credit = a);
            }
        }
        out
    }
}

fn line(effective_at: i64, position: u64, posted: i128, pd: i128, pc: i128) -> OracleLine {
    OracleLine {
        effective_at,
        position,
        posted,
        pending_debit: pd,
        pending_credit: pc,
    }
}

/// A hold's movements on one side: `sign` is -1 on the debit side, +1 on the credit side;
/// `pending` sets the pending field of that side.
fn hold_movements(
    h: &Hold,
    sign: i128,
    out: &mut Vec<OracleLine>,
    pending: impl Fn(&mut OracleLine, i128),
) {
    let mut start = line(h.effective_at, h.position, 0, 0, 0);
    pending(&mut start, h.amount);
    out.push(start);
    let end = match (h.resolution, h.expires_at) {
        (Some((at, pos, posted)), _) => Some(line(at, pos, sign * posted, 0, 0)),
        (None, Some(deadline)) => Some(line(deadline, h.position, 0, 0, 0)),
        (None, None) => None,
    };
    if let Some(mut end) = end {
        pending(&mut end, -h.amount);
        out.push(end);
    }
}

fn sum_until(movements: &[OracleLine], valid_at: i64) -> Money {
    movements
        .iter()
        .filter(|m| m.effective_at <= valid_at)
        .fold((0, 0, 0), |(a, b, c), m| {
            (a + m.posted, b + m.pending_debit, c + m.pending_credit)
        })
}

/// Balances of `account` at valid time `valid_at` as known at log position `known_at`
/// (zero for an account not known then).
pub fn balance(
    events: &[Envelope<LedgerEvent>],
    account: &AccountId,
    valid_at: Timestamp,
    known_at: u64,
) -> Money {
    let book = fold(events, known_at);
    sum_until(&book.movements(account), valid_at.as_micros())
}

/// The movements of `account` with valid time in `[from, to]` as known at `known_at`,
/// merged per (valid time, position), zero lines dropped, in (valid time, position) order.
pub fn statement_lines(
    events: &[Envelope<LedgerEvent>],
    account: &AccountId,
    from: Timestamp,
    to: Timestamp,
    known_at: u64,
) -> Vec<OracleLine> {
    let book = fold(events, known_at);
    let mut merged: BTreeMap<(i64, u64), OracleLine> = BTreeMap::new();
    for m in book.movements(account) {
        if m.effective_at < from.as_micros() || m.effective_at > to.as_micros() {
            continue;
        }
        let l = merged
            .entry((m.effective_at, m.position))
            .or_insert_with(|| line(m.effective_at, m.position, 0, 0, 0));
        l.posted += m.posted;
        l.pending_debit += m.pending_debit;
        l.pending_credit += m.pending_credit;
    }
    merged
        .into_values()
        .filter(|l| (l.posted, l.pending_debit, l.pending_credit) != (0, 0, 0))
        .collect()
}

/// An entry (or hold) as known at a basis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OracleEntry {
    /// The postings of the version in force.
    pub postings: Vec<Posting>,
    /// Its valid time, microseconds.
    pub effective_at: i64,
    /// Log position of the event that recorded it.
    pub position: u64,
    /// Its status.
    pub status: EntryStatus,
}

/// The entry `id` as known at `known_at` (`None` if not recorded by then).
pub fn entry_at(
    events: &[Envelope<LedgerEvent>],
    id: &EntryId,
    known_at: u64,
) -> Option<OracleEntry> {
    let book = fold(events, known_at);
    if let Some(v) = book.entries.get(id) {
        let status = if v.cancelled {
            EntryStatus::Cancelled
        } else {
            EntryStatus::Posted
        };
        return Some(OracleEntry {
            postings: v.postings.clone(),
            effective_at: v.effective_at,
            position: v.position,
            status,
        });
    }
    let h = book.holds.get(id)?;
    let status = match h.resolution {
        Some((_, _, 0)) => EntryStatus::Voided,
        Some(_) => EntryStatus::HoldPosted,
        None if book.expired.contains(id) => EntryStatus::Expired,
        None => EntryStatus::Pending,
    };
    Some(OracleEntry {
        postings: h.postings.clone(),
        effective_at: h.effective_at,
        position: h.position,
        status,
    })
}

/// The accounts known at `known_at`, with their currencies, in id order.
pub fn accounts(events: &[Envelope<LedgerEvent>], known_at: u64) -> Vec<(AccountId, Currency)> {
    let book = fold(events, known_at);
    book.accounts
        .iter()
        .map(|(id, a)| (id.clone(), a.currency))
        .collect()
}

/// (lower bound on `posted - pending_debit`, upper bound on `posted + pending_credit`),
/// written out again from the documented rule rather than shared with the ledger.
fn bounds(c: &Constraints, kind: AccountKind) -> (Option<i128>, Option<i128>) {
    let allowance = c.overdraft_limit.map_or(0, |a| a.minor());
    let only_limit = c.overdraft_limit.is_some()
        && !c.debits_must_not_exceed_credits
        && !c.credits_must_not_exceed_debits;
    let credit_normal = matches!(
        kind,
        AccountKind::Liability | AccountKind::Equity | AccountKind::Income
    );
    let lower = c.debits_must_not_exceed_credits || (only_limit && credit_normal);
    let upper = c.credits_must_not_exceed_debits || (only_limit && !credit_normal);
    (lower.then_some(-allowance), upper.then_some(allowance))
}

/// Auditor: every constrained account respects its bounds at every valid time, as known at
/// `known_at`. `Err` names the account, the valid time and the balances.
pub fn audit_constraints(events: &[Envelope<LedgerEvent>], known_at: u64) -> Result<(), String> {
    let book = fold(events, known_at);
    for (id, a) in &book.accounts {
        let (lower, upper) = bounds(&a.constraints, a.kind);
        if lower.is_none() && upper.is_none() {
            continue;
        }
        let moves = book.movements(id);
        for t in moves.iter().map(|m| m.effective_at) {
            let (posted, pd, pc) = sum_until(&moves, t);
            let low_ok = lower.is_none_or(|l| posted - pd >= l);
            let up_ok = upper.is_none_or(|u| posted + pc <= u);
            if !low_ok || !up_ok {
                return Err(format!(
                    "account {id} breaks its bounds {lower:?}..{upper:?} at valid time {t} as \
                     known at {known_at}: posted {posted}, pending debit {pd}, pending credit {pc}"
                ));
            }
        }
    }
    Ok(())
}

/// Every entry, correction and hold in the log balances per currency, and every posting uses
/// its account's currency. `Err` names the first offender.
pub fn audit_entries(events: &[Envelope<LedgerEvent>]) -> Result<(), String> {
    let book = fold(events, u64::MAX);
    for e in events {
        let (id, postings) = match &e.payload {
            LedgerEvent::EntryPosted { id, postings, .. }
            | LedgerEvent::HoldPlaced { id, postings, .. } => (id, postings),
            LedgerEvent::EntryCorrected {
                entry, postings, ..
            } => (entry, postings),
            _ => continue,
        };
        check_postings(&book, postings)
            .map_err(|why| format!("{} at position {}: {why}", id, e.position))?;
    }
    Ok(())
}

fn check_postings(book: &Book, postings: &[Posting]) -> Result<(), String> {
    let mut sums: BTreeMap<String, i128> = BTreeMap::new();
    for p in postings {
        let a = book
            .accounts
            .get(&p.account)
            .ok_or_else(|| format!("unknown account {}", p.account))?;
        if a.currency != p.amount.currency() || p.amount.minor() <= 0 {
            return Err(format!("bad posting {p:?}"));
        }
        let signed = match p.direction {
            Direction::Credit => p.amount.minor(),
            Direction::Debit => -p.amount.minor(),
        };
        *sums.entry(a.currency.code().to_string()).or_default() += signed;
    }
    match sums.iter().find(|(_, s)| **s != 0) {
        Some((c, s)) => Err(format!("unbalanced in {c} by {s}")),
        None => Ok(()),
    }
}
