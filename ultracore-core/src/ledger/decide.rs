//! `decide`: the pure decision for each command. Reads state, never changes it; returns the
//! events to record, "already done" for an idempotent repeat, or a rejection.

use crate::bitemporal::timeline::{Deltas, TimelineKey};
use std::borrow::Cow;

use crate::ids::EntryId;
use crate::limits::{
    HOLDS_EXPIRED_PER_COMMAND_MAX, POSTINGS_PER_ENTRY_MAX, POSTING_AMOUNT_MINOR_MAX,
    VERSIONS_PER_ENTRY_MAX,
};
use crate::money::Currency;
use crate::time::{EffectiveAt, Timestamp};

use super::command::{
    Command, Correct, OpenAccount, PlaceHold, PostEntry, PostHold, Reverse, VoidHold,
};
use super::event::LedgerEvent;
use super::model::{validate_text, AccountStatus, Direction, EntryKind, Metadata, Posting};
use super::{
    hold_place_changes, hold_resolve_changes, posting_changes_at, posting_changes_into, share,
    AccountIxs, Changes, Hints, Ledger, Rejection,
};

/// What `decide` needs from outside the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    /// The current time (default valid time; window and deadline checks).
    pub now: Timestamp,
    /// The log position the first event of this command will get.
    pub next_position: u64,
}

/// The result of deciding one command.
#[derive(Clone, Debug, PartialEq, Eq)]
// Decisions live for one step and are moved, not stored; boxing the large variant would cost
// an allocation per rejection for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Decision {
    /// Record these events (in order), then answer with `Ledger::outcome`.
    Accept(Vec<LedgerEvent>),
    /// An idempotent repeat (or a no-op): nothing to record; answer with `Ledger::outcome`.
    AlreadyDone,
    /// Refused. `record`, when present, must be recorded so the id stays failed.
    Reject {
        /// Why.
        rejection: Rejection,
        /// The event that makes the failure sticky.
        record: Option<LedgerEvent>,
    },
}

/// The events of one decision: inline, as nearly every decision records one event.
pub(crate) type Events = smallvec::SmallVec<[LedgerEvent; 1]>;

/// [`Decision`] as the ledger decides it internally: the events inline rather than in a
/// `Vec`, which would cost an allocation per command on the hot path.
pub(crate) enum Decided {
    /// See [`Decision::Accept`].
    Accept(Events),
    /// See [`Decision::AlreadyDone`].
    AlreadyDone,
    /// See [`Decision::Reject`].
    Reject {
        rejection: Rejection,
        record: Option<LedgerEvent>,
    },
}

impl From<Decided> for Decision {
    fn from(d: Decided) -> Decision {
        match d {
            Decided::Accept(events) => Decision::Accept(events.into_vec()),
            Decided::AlreadyDone => Decision::AlreadyDone,
            Decided::Reject { rejection, record } => Decision::Reject { rejection, record },
        }
    }
}

impl Ledger {
    /// Decides `command` against the current state. Pure.
    pub fn decide(&self, command: &Command, ctx: &Context) -> Decision {
        self.decide_with_changes(command, ctx, None, &mut None)
            .into()
    }

    /// [`Ledger::decide`], plus the balance-index changes of the first accepted event when
    /// deciding computed them (plain postings), so applying that event at
    /// `ctx.next_position` need not look its accounts up again. The changes are written to
    /// `changes` (set to `None` unless the decision accepts and computed them), where the
    /// caller keeps them, rather than returned.
    pub(crate) fn decide_with_changes(
        &self,
        command: &Command,
        ctx: &Context,
        hints: Option<&Hints>,
        changes: &mut Option<Changes>,
    ) -> Decided {
        *changes = None;
        let fingerprint = Hints::fingerprint(hints).unwrap_or_else(|| command.fingerprint());
        debug_assert_eq!(fingerprint, command.fingerprint());
        if let Some(id) = command.entry_id() {
            let hash = Hints::entry_hash(hints).unwrap_or_else(|| self.entry_ix.hash(id.as_str()));
            debug_assert_eq!(hash, self.entry_ix.hash(id.as_str()));
            if let Some(d) = self.check_entry_id(id, hash, fingerprint, command) {
                return d;
            }
        }
        let result = match command {
            Command::OpenAccount(c) => self.decide_open(c, ctx, fingerprint),
            Command::FreezeAccount { account } => {
                self.decide_status(account, AccountStatus::Frozen)
            }
            Command::UnfreezeAccount { account } => {
                self.decide_status(account, AccountStatus::Open)
            }
            Command::CloseAccount { account } => self.decide_close(account),
            Command::SetAccountMetadata { account, metadata } => {
                self.decide_metadata(account, metadata)
            }
            Command::PostEntry(c) => self.decide_post(c, ctx, fingerprint, hints, changes),
            Command::PlaceHold(c) => self.decide_hold(c, ctx, fingerprint),
            Command::PostHold(c) => self.decide_resolve(&c.hold, Some(c), None, ctx, fingerprint),
            Command::VoidHold(c) => self.decide_resolve(&c.hold, None, Some(c), ctx, fingerprint),
            Command::ExpireHolds => Ok(self.decide_expire(ctx)),
            Command::Reverse(c) => self.decide_reverse(c, ctx, fingerprint),
            Command::Correct(c) => self.decide_correct(c, ctx, fingerprint),
        };
        match result {
            Ok(events) if events.is_empty() => Decided::AlreadyDone,
            Ok(events) => Decided::Accept(events),
            Err(rejection) => {
                // A rejected decision's changes (if it got that far) apply to nothing.
                *changes = None;
                let record = command.entry_id().map(|id| LedgerEvent::EntryRejected {
                    id: id.clone(),
                    fingerprint,
                    rejection: rejection.clone(),
                });
                Decided::Reject { rejection, record }
            }
        }
    }

    /// Idempotency: the id's earlier fate decides, if it has one. `hash` is the id's hash in
    /// the entry-id index.
    fn check_entry_id(
        &self,
        id: &EntryId,
        hash: u64,
        fingerprint: u64,
        command: &Command,
    ) -> Option<Decided> {
        let conflict = || Decided::Reject {
            rejection: Rejection::IdConflict { id: id.clone() },
            record: None,
        };
        // Rejected ids and corrections are rare: skip hashing the id for an empty map.
        let rejected = (!self.rejected.is_empty())
            .then(|| self.rejected.get(id))
            .flatten();
        if let Some((fp, rejection)) = rejected {
            return Some(if *fp == fingerprint {
                Decided::Reject {
                    rejection: rejection.clone(),
                    record: None,
                }
            } else {
                conflict()
            });
        }
        let corrections = (!self.corrections.is_empty())
            .then(|| self.corrections.get(id))
            .flatten();
        let stored = self
            .entry_position_hashed(id, hash)
            .map(|i| &self.entries[i as usize]);
        let same = match (stored, corrections) {
            (Some(e), _) => {
                Some(e.fingerprint == fingerprint && !matches!(command, Command::Correct(_)))
            }
            (None, Some((_, _, fp))) => {
                Some(*fp == fingerprint && matches!(command, Command::Correct(_)))
            }
            (None, None) => None,
        };
        match same {
            Some(true) => Some(Decided::AlreadyDone),
            Some(false) => Some(conflict()),
            None => None,
        }
    }

    fn effective(
        &self,
        given: Option<EffectiveAt>,
        ctx: &Context,
    ) -> Result<EffectiveAt, Rejection> {
        let Some(e) = given else {
            return Ok(EffectiveAt(ctx.now));
        };
        let earliest = ctx
            .now
            .saturating_add_micros(-self.config().backdate_window_micros);
        let latest = ctx
            .now
            .saturating_add_micros(self.config().future_window_micros);
        if e.0 < earliest || e.0 > latest {
            return Err(Rejection::EffectiveAtOutsideWindow {
                effective_at: e.0,
                earliest,
                latest,
            });
        }
        Ok(e)
    }

    fn decide_open(
        &self,
        c: &OpenAccount,
        ctx: &Context,
        fingerprint: u64,
    ) -> Result<Events, Rejection> {
        if self.account_ix.contains_key(&c.id) {
            // Same request again: same answer. Anything else under this id is a conflict.
            return if self.open_fingerprint(&c.id) == Some(fingerprint) {
                Ok(smallvec::smallvec![])
            } else {
                Err(Rejection::AccountExists {
                    account: c.id.clone(),
                })
            };
        }
        if let Some(owner) = &c.owner {
            validate_text("owner", owner)?;
        }
        if let Some(branch) = &c.branch {
            validate_text("branch", branch)?;
        }
        c.metadata.validate()?;
        if let Some(limit) = c.constraints.overdraft_limit {
            if limit.currency() != c.currency {
                return Err(Rejection::CurrencyMismatch {
                    account: c.id.clone(),
                    expected: c.currency,
                    found: limit.currency(),
                });
            }
        }
        let opened_at = self.effective(c.effective_at, ctx)?;
        Ok(smallvec::smallvec![LedgerEvent::AccountOpened {
            id: c.id.clone(),
            currency: c.currency,
            kind: c.kind,
            owner: c.owner.clone(),
            branch: c.branch.clone(),
            constraints: Box::new(c.constraints),
            metadata: c.metadata.clone(),
            opened_at,
            fingerprint,
        }])
    }

    fn open_fingerprint(&self, id: &crate::ids::AccountId) -> Option<u64> {
        self.open_fingerprints.get(id).copied()
    }

    fn account_state(&self, id: &crate::ids::AccountId) -> Result<&super::AccountState, Rejection> {
        self.account_index(id).map(|i| &self.accounts[i as usize])
    }

    fn account_index(&self, id: &crate::ids::AccountId) -> Result<u32, Rejection> {
        self.account_ix
            .get(id)
            .copied()
            .ok_or_else(|| Rejection::UnknownAccount {
                account: id.clone(),
            })
    }

    fn decide_status(
        &self,
        id: &crate::ids::AccountId,
        to: AccountStatus,
    ) -> Result<Events, Rejection> {
        let st = self.account_state(id)?;
        match (st.account.status, to) {
            (AccountStatus::Closed, _) => Err(Rejection::AccountClosed {
                account: id.clone(),
            }),
            (from, to) if from == to => Ok(smallvec::smallvec![]),
            (_, AccountStatus::Frozen) => Ok(smallvec::smallvec![LedgerEvent::AccountFrozen {
                account: id.clone(),
            }]),
            _ => Ok(smallvec::smallvec![LedgerEvent::AccountUnfrozen {
                account: id.clone(),
            }]),
        }
    }

    fn decide_close(&self, id: &crate::ids::AccountId) -> Result<Events, Rejection> {
        let st = self.account_state(id)?;
        if st.account.status == AccountStatus::Closed {
            return Ok(smallvec::smallvec![]);
        }
        let total = st.index.current().total();
        let reason = if st.account.open_holds > 0 {
            Some(format!("{} open holds", st.account.open_holds))
        } else if !total.is_zero() {
            Some("balance is not zero".to_string())
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Rejection::AccountNotClosable {
                account: id.clone(),
                reason,
            }),
            None => Ok(smallvec::smallvec![LedgerEvent::AccountClosed {
                account: id.clone(),
            }]),
        }
    }

    fn decide_metadata(
        &self,
        id: &crate::ids::AccountId,
        metadata: &Metadata,
    ) -> Result<Events, Rejection> {
        let st = self.account_state(id)?;
        if st.account.status == AccountStatus::Closed {
            return Err(Rejection::AccountClosed {
                account: id.clone(),
            });
        }
        metadata.validate()?;
        if &st.account.metadata == metadata {
            return Ok(smallvec::smallvec![]);
        }
        Ok(smallvec::smallvec![LedgerEvent::AccountMetadataSet {
            account: id.clone(),
            metadata: metadata.clone(),
        }])
    }

    /// Validates postings: count, amounts, accounts usable at `effective_at`, currencies,
    /// balance per currency.
    /// Returns the postings' account indexes, in posting order, so callers need not look the
    /// accounts up again.
    /// `hints` may give postings' account indexes (see [`Hints`]).
    fn validate_postings(
        &self,
        postings: &[Posting],
        effective_at: EffectiveAt,
        hints: Option<&Hints>,
    ) -> Result<AccountIxs, Rejection> {
        if postings.len() < 2 || postings.len() > POSTINGS_PER_ENTRY_MAX {
            return Err(Rejection::PostingCount {
                count: postings.len(),
                max: POSTINGS_PER_ENTRY_MAX,
            });
        }
        let mut ixs = AccountIxs::new();
        for (i, p) in postings.iter().enumerate() {
            if p.amount.is_zero() {
                return Err(Rejection::ZeroAmount);
            }
            if p.amount.minor() > POSTING_AMOUNT_MINOR_MAX {
                return Err(Rejection::Overflow);
            }
            let ix = match Hints::account(hints, i) {
                Some(ix) => ix,
                None => self.account_index(&p.account)?,
            };
            debug_assert_eq!(self.account_ix.get(&p.account), Some(&ix));
            ixs.push(ix);
            let st = &self.accounts[ix as usize];
            self.check_usable(st, effective_at)?;
            if p.amount.currency() != st.account.currency {
                return Err(Rejection::CurrencyMismatch {
                    account: p.account.clone(),
                    expected: st.account.currency,
                    found: p.amount.currency(),
                });
            }
        }
        if ixs.iter().all(|&ix| ix == ixs[0]) {
            return Err(Rejection::SameAccount);
        }
        if let [a, b] = postings {
            // A transfer (the common case): balanced when one leg debits what the other
            // credits, in one currency; otherwise the general sums below name the imbalance.
            if a.direction != b.direction && a.amount == b.amount {
                return Ok(ixs);
            }
        }
        Self::check_balanced(postings)?;
        Ok(ixs)
    }

    /// Debits equal credits in every currency of `postings` (each within
    /// `POSTING_AMOUNT_MINOR_MAX`, so no sum can overflow; checked all the same).
    fn check_balanced(postings: &[Posting]) -> Result<(), Rejection> {
        // (currency, debits, credits); entries rarely hold more than one or two currencies.
        let mut sums: smallvec::SmallVec<[(Currency, i128, i128); 4]> = smallvec::SmallVec::new();
        for p in postings {
            let cur = p.amount.currency();
            let slot = match sums.iter().position(|s| s.0 == cur) {
                Some(i) => i,
                None => {
                    sums.push((cur, 0, 0));
                    sums.len() - 1
                }
            };
            let s = &mut sums[slot];
            match p.direction {
                Direction::Debit => {
                    s.1 =
                        s.1.checked_add(p.amount.minor())
                            .ok_or(Rejection::Overflow)?
                }
                Direction::Credit => {
                    s.2 =
                        s.2.checked_add(p.amount.minor())
                            .ok_or(Rejection::Overflow)?
                }
            }
        }
        for (currency, debits, credits) in sums {
            if debits != credits {
                return Err(Rejection::Unbalanced {
                    currency,
                    debits,
                    credits,
                });
            }
        }
        Ok(())
    }

    fn check_usable(
        &self,
        st: &super::AccountState,
        effective_at: EffectiveAt,
    ) -> Result<(), Rejection> {
        let a = &st.account;
        match a.status {
            AccountStatus::Open => {}
            AccountStatus::Frozen => {
                return Err(Rejection::AccountFrozen {
                    account: a.id.clone(),
                })
            }
            AccountStatus::Closed => {
                return Err(Rejection::AccountClosed {
                    account: a.id.clone(),
                })
            }
        }
        if effective_at < a.opened_at {
            return Err(Rejection::BeforeAccountOpened {
                account: a.id.clone(),
                effective_at: effective_at.0,
                opened_at: a.opened_at.0,
            });
        }
        Ok(())
    }

    /// Checks every constrained account touched by `changes` along its whole timeline.
    fn check_limits(&self, changes: &Changes) -> Result<(), Rejection> {
        // A transfer (the common case): one change to each of two accounts.
        if let [(a, ka, da), (b, kb, db)] = changes.as_slice() {
            if a != b {
                self.check_account(*a, &[(*ka, *da)])?;
                return self.check_account(*b, &[(*kb, *db)]);
            }
        }
        for (i, &(acc, _, _)) in changes.iter().enumerate() {
            if changes[..i].iter().any(|c| c.0 == acc) {
                continue; // this account was checked with its first change
            }
            // The common case (one change per account) borrows that change, with no list built.
            let one = [(changes[i].1, changes[i].2)];
            let many: smallvec::SmallVec<[(TimelineKey, Deltas); 4]>;
            let mine: &[(TimelineKey, Deltas)] = if changes[i + 1..].iter().all(|c| c.0 != acc) {
                &one
            } else {
                many = changes[i..]
                    .iter()
                    .filter(|c| c.0 == acc)
                    .map(|c| (c.1, c.2))
                    .collect();
                &many
            };
            self.check_account(acc, mine)?;
        }
        Ok(())
    }

    /// [`Ledger::check_limits`] for one account and all its changes.
    #[inline]
    fn check_account(&self, acc: u32, mine: &[(TimelineKey, Deltas)]) -> Result<(), Rejection> {
        let st = &self.accounts[acc as usize];
        if !st.index.can_apply(mine) {
            return Err(Rejection::Overflow);
        }
        let (lower, upper) = st.bounds;
        if lower.is_none() && upper.is_none() {
            return Ok(());
        }
        st.index
            .check(mine, lower, upper)
            .map_err(|v| Rejection::LimitExceeded {
                account: st.account.id.clone(),
                at: Timestamp::from_micros(v.at.0).unwrap_or(Timestamp::MIN),
                balance: v.value,
                bound: v.bound,
            })
    }

    fn decide_post(
        &self,
        c: &PostEntry,
        ctx: &Context,
        fingerprint: u64,
        hints: Option<&Hints>,
        changes: &mut Option<Changes>,
    ) -> Result<Events, Rejection> {
        let effective_at = self.effective(c.effective_at, ctx)?;
        let ixs = self.validate_postings(&c.postings, effective_at, hints)?;
        c.metadata.validate()?;
        let changes = changes.insert(Changes::new());
        posting_changes_into(
            &c.postings,
            &ixs,
            effective_at,
            ctx.next_position,
            1,
            changes,
        )?;
        self.check_limits(changes)?;
        let event = LedgerEvent::EntryPosted {
            id: c.id.clone(),
            postings: c.postings.clone(),
            effective_at,
            metadata: c.metadata.clone(),
            reversal_of: None,
            fingerprint,
        };
        Ok(smallvec::smallvec![event])
    }

    fn decide_hold(
        &self,
        c: &PlaceHold,
        ctx: &Context,
        fingerprint: u64,
    ) -> Result<Events, Rejection> {
        let effective_at = self.effective(c.effective_at, ctx)?;
        if c.debit_account == c.credit_account {
            return Err(Rejection::SameAccount);
        }
        if let Some(exp) = c.expires_at {
            if exp <= effective_at.0 || exp <= ctx.now {
                return Err(Rejection::ExpiryNotAfterEffective);
            }
        }
        let postings = c.postings();
        self.validate_postings(&postings, effective_at, None)?;
        c.metadata.validate()?;
        let debit = self.account_ix[&c.debit_account];
        let credit = self.account_ix[&c.credit_account];
        let changes = hold_place_changes(
            debit,
            credit,
            c.amount.minor(),
            effective_at,
            c.expires_at,
            ctx.next_position,
        );
        self.check_limits(&changes)?;
        Ok(smallvec::smallvec![LedgerEvent::HoldPlaced {
            id: c.id.clone(),
            postings: share(&postings),
            amount: c.amount,
            effective_at,
            expires_at: c.expires_at,
            metadata: c.metadata.clone(),
            fingerprint,
        }])
    }

    fn decide_resolve(
        &self,
        hold: &EntryId,
        post: Option<&PostHold>,
        void: Option<&VoidHold>,
        ctx: &Context,
        fingerprint: u64,
    ) -> Result<Events, Rejection> {
        let stored = self
            .stored_entry(hold)
            .ok_or_else(|| Rejection::UnknownEntry {
                entry: hold.clone(),
            })?;
        // A hold is never a plain transfer, so it is stored cold, in full.
        let Some(e) = stored.cold_entry() else {
            return Err(Rejection::NotAHold {
                entry: hold.clone(),
            });
        };
        let EntryKind::Hold {
            expires_at,
            amount,
            resolution,
        } = &e.kind
        else {
            return Err(Rejection::NotAHold {
                entry: hold.clone(),
            });
        };
        if resolution.is_some() {
            return if self.resolutions.get(hold) == Some(&fingerprint) {
                Ok(smallvec::smallvec![])
            } else {
                Err(Rejection::HoldAlreadyResolved { hold: hold.clone() })
            };
        }
        let requested_at = post
            .and_then(|p| p.effective_at)
            .or(void.and_then(|v| v.effective_at));
        let effective_at = self.effective(requested_at, ctx)?;
        if let Some(exp) = expires_at {
            if ctx.now >= *exp || effective_at.0 >= *exp {
                return Err(Rejection::HoldExpired {
                    hold: hold.clone(),
                    expires_at: *exp,
                });
            }
        }
        if effective_at < e.current.effective_at {
            return Err(Rejection::ResolutionBeforeHold);
        }
        let (debit, credit) =
            self.hold_accounts(&e.current.postings)
                .map_err(|_| Rejection::NotAHold {
                    entry: hold.clone(),
                })?;
        let posted = match post {
            Some(p) => {
                let x = p.amount.unwrap_or(*amount);
                if x.currency() != amount.currency() {
                    return Err(Rejection::CurrencyMismatch {
                        account: e.current.postings[0].account.clone(),
                        expected: amount.currency(),
                        found: x.currency(),
                    });
                }
                if x.is_zero() {
                    return Err(Rejection::ZeroAmount);
                }
                if x.minor() > amount.minor() {
                    return Err(Rejection::PostExceedsHold {
                        held: amount.minor(),
                        requested: x.minor(),
                    });
                }
                for acc in [debit, credit] {
                    self.check_usable(&self.accounts[acc as usize], effective_at)?;
                }
                Some(x)
            }
            None => None,
        };
        let changes = hold_resolve_changes(
            debit,
            credit,
            amount.minor(),
            posted.map(|x| x.minor()),
            effective_at,
            *expires_at,
            e.current.position,
            ctx.next_position,
        );
        self.check_limits(&changes)?;
        Ok(smallvec::smallvec![match posted {
            Some(amount) => LedgerEvent::HoldPosted {
                hold: hold.clone(),
                amount,
                effective_at,
                fingerprint,
            },
            None => LedgerEvent::HoldVoided {
                hold: hold.clone(),
                effective_at,
                fingerprint,
            },
        }])
    }

    fn decide_expire(&self, ctx: &Context) -> Events {
        self.hold_deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= ctx.now)
            .take(HOLDS_EXPIRED_PER_COMMAND_MAX)
            .map(|(_, hold)| LedgerEvent::HoldExpired { hold: hold.clone() })
            .collect()
    }

    /// The entry a reversal or correction targets, if it can still be changed.
    fn changeable(
        &self,
        id: &EntryId,
        kinds_ok: fn(&EntryKind) -> bool,
    ) -> Result<Cow<'_, super::Entry>, Rejection> {
        let e = self
            .entry_view(id)
            .ok_or_else(|| Rejection::UnknownEntry { entry: id.clone() })?;
        let refuse = |reason: &str| Rejection::EntryNotChangeable {
            entry: id.clone(),
            reason: reason.to_string(),
        };
        if !kinds_ok(&e.kind) {
            return Err(refuse(
                "holds are posted or voided, not reversed or corrected; reversals are final",
            ));
        }
        if e.reversed_by.is_some() {
            return Err(refuse("it has been reversed"));
        }
        if e.current.cancelled {
            return Err(refuse("it has been cancelled"));
        }
        Ok(e)
    }

    fn decide_reverse(
        &self,
        c: &Reverse,
        ctx: &Context,
        fingerprint: u64,
    ) -> Result<Events, Rejection> {
        let original = self.changeable(&c.entry, |k| matches!(k, EntryKind::Posted))?;
        let effective_at = self.effective(c.effective_at, ctx)?;
        if effective_at < original.current.effective_at {
            return Err(Rejection::EntryNotChangeable {
                entry: c.entry.clone(),
                reason: "a reversal cannot take effect before the entry it reverses".into(),
            });
        }
        c.metadata.validate()?;
        let postings: Vec<Posting> = original
            .current
            .postings
            .iter()
            .map(|p| Posting {
                direction: p.direction.opposite(),
                ..p.clone()
            })
            .collect();
        let ixs = self.validate_postings(&postings, effective_at, None)?;
        let changes = posting_changes_at(&postings, &ixs, effective_at, ctx.next_position, 1)?;
        self.check_limits(&changes)?;
        Ok(smallvec::smallvec![LedgerEvent::EntryPosted {
            id: c.id.clone(),
            postings: share(&postings),
            effective_at,
            metadata: c.metadata.clone(),
            reversal_of: Some(c.entry.clone()),
            fingerprint,
        }])
    }

    fn decide_correct(
        &self,
        c: &Correct,
        ctx: &Context,
        fingerprint: u64,
    ) -> Result<Events, Rejection> {
        let e = self.changeable(&c.entry, |k| matches!(k, EntryKind::Posted))?;
        let invalid = |reason: &str| Rejection::InvalidCorrection {
            reason: reason.to_string(),
        };
        if c.reason.trim().is_empty() {
            return Err(invalid("a reason is required"));
        }
        validate_text("reason", &c.reason)?;
        let version = e.current.version + 1;
        if version > VERSIONS_PER_ENTRY_MAX {
            return Err(Rejection::TooManyVersions {
                entry: c.entry.clone(),
            });
        }
        let cur = &e.current;
        let (postings, effective_at) = if c.cancel {
            if c.amount.is_some() || c.postings.is_some() || c.effective_at.is_some() {
                return Err(invalid("cancel excludes amount, postings and effective_at"));
            }
            (Vec::new(), cur.effective_at)
        } else {
            let effective_at = match c.effective_at {
                Some(_) => self.effective(c.effective_at, ctx)?,
                None => cur.effective_at,
            };
            let postings: Vec<Posting> = match (&c.amount, &c.postings) {
                (Some(_), Some(_)) => return Err(invalid("give amount or postings, not both")),
                (Some(a), None) => {
                    if cur.postings.len() != 2 {
                        return Err(invalid(
                            "amount applies to two-posting entries; give postings",
                        ));
                    }
                    cur.postings
                        .iter()
                        .map(|p| Posting {
                            amount: *a,
                            ..p.clone()
                        })
                        .collect()
                }
                (None, Some(p)) => p.clone(),
                (None, None) => cur.postings.to_vec(),
            };
            if postings.as_slice() == &*cur.postings && effective_at == cur.effective_at {
                return Err(invalid("the correction changes nothing"));
            }
            self.validate_postings(&postings, effective_at, None)?;
            (postings, effective_at)
        };
        // Taking the old postings back moves money on their accounts too: they must be usable
        // (a closed or frozen account's history is not rewritten by a correction).
        for p in cur.postings.iter() {
            self.check_usable(self.account_state(&p.account)?, cur.effective_at)?;
        }
        let mut changes =
            self.posting_changes(&cur.postings, cur.effective_at, cur.position, -1)?;
        changes.extend(self.posting_changes(&postings, effective_at, ctx.next_position, 1)?);
        self.check_limits(&changes)?;
        Ok(smallvec::smallvec![LedgerEvent::EntryCorrected {
            entry: c.entry.clone(),
            correction_id: c.id.clone(),
            version,
            postings: share(&postings),
            effective_at,
            cancelled: c.cancel,
            reason: c.reason.clone(),
            fingerprint,
        }])
    }
}
