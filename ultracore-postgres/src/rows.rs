//! What one page of the log becomes in the read-model tables: a pure translation from
//! ledger events to rows and supersessions, done before any SQL runs (so the SQL side only
//! moves data). The semantics mirror core's ledger fold (`ledger/mod.rs`, `apply_payload`):
//! every balance-index change core makes is here either a new posting row (+) or the closing
//! of an existing row's transaction period (−).

use std::collections::HashMap;

use ultracore_core::event::{DomainEvent, Envelope};
use ultracore_core::ids::EntryId;
use ultracore_core::ledger::{AccountKind, AccountStatus, Direction, LedgerEvent, Posting};
use ultracore_core::time::Timestamp;

/// What the projector must know about an entry's version in force, to correct it or resolve
/// its hold (read from `uc_entries` for entries recorded before the page).
#[derive(Clone, Debug)]
pub(crate) struct EntryCur {
    pub(crate) version: u32,
    pub(crate) kind: &'static str,
    pub(crate) position: u64,
    pub(crate) postings: Vec<Posting>,
    /// Held amount and deadline, for a hold.
    pub(crate) hold: Option<(i128, Option<Timestamp>)>,
}

/// A row of `uc_transactions`.
pub(crate) struct TxRow {
    pub(crate) position: i64,
    pub(crate) recorded_at: i64,
    pub(crate) event_type: &'static str,
    pub(crate) entry_id: Option<String>,
}

/// A row of `uc_entries`.
pub(crate) struct EntryRow {
    pub(crate) entry_id: String,
    pub(crate) version: i32,
    pub(crate) kind: &'static str,
    pub(crate) effective_at: i64,
    pub(crate) postings: Vec<Posting>,
    pub(crate) reversal_of: Option<String>,
    pub(crate) hold_amount: Option<i128>,
    pub(crate) expires_at: Option<i64>,
    pub(crate) correction_id: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) cancelled: bool,
    pub(crate) position: i64,
    pub(crate) recorded_at: i64,
    pub(crate) event_id: String,
    /// Set when a later event of the same page supersedes this version.
    pub(crate) superseded: Option<(i64, i64)>,
}

/// A row of `uc_postings`.
pub(crate) struct PostingRow {
    pub(crate) position: i64,
    pub(crate) leg: i16,
    pub(crate) account_id: String,
    pub(crate) entry_id: String,
    pub(crate) entry_version: i32,
    pub(crate) role: &'static str,
    pub(crate) direction: Direction,
    pub(crate) pending: bool,
    pub(crate) amount: i128,
    pub(crate) currency: String,
    pub(crate) effective_at: i64,
    pub(crate) recorded_at: i64,
    /// Set when a later event of the same page closes this row.
    pub(crate) superseded: Option<(i64, i64)>,
}

/// A row of `uc_accounts` for an opening.
pub(crate) struct AccountRow {
    pub(crate) account_id: String,
    pub(crate) version: i64,
    pub(crate) currency: String,
    pub(crate) kind: AccountKind,
    pub(crate) owner: Option<String>,
    pub(crate) branch: Option<String>,
    pub(crate) constraints: serde_json::Value,
    pub(crate) metadata: serde_json::Value,
    pub(crate) valid_from: i64,
    pub(crate) position: i64,
    pub(crate) recorded_at: i64,
    pub(crate) event_id: String,
}

/// A status or metadata change of an account, at valid time `valid_at`.
pub(crate) struct AccountChange {
    pub(crate) account_id: String,
    pub(crate) version: i64,
    pub(crate) status: Option<AccountStatus>,
    pub(crate) metadata: Option<serde_json::Value>,
    pub(crate) valid_at: i64,
    pub(crate) position: i64,
    pub(crate) recorded_at: i64,
    pub(crate) event_id: String,
}

/// Closing the transaction period of rows: posting rows recorded at `recorded_position` with
/// `role`, or an entry version.
pub(crate) struct Supersede {
    pub(crate) recorded_position: i64,
    pub(crate) role: &'static str,
    pub(crate) position: i64,
    pub(crate) recorded_at: i64,
}

/// Closing an entry version.
pub(crate) struct SupersedeEntry {
    pub(crate) entry_id: String,
    pub(crate) version: i32,
    pub(crate) position: i64,
    pub(crate) recorded_at: i64,
}

/// Everything one page writes.
#[derive(Default)]
pub(crate) struct PageRows {
    pub(crate) transactions: Vec<TxRow>,
    pub(crate) entries: Vec<EntryRow>,
    pub(crate) postings: Vec<PostingRow>,
    pub(crate) openings: Vec<AccountRow>,
    /// In log order (each is applied to the rows the previous ones left).
    pub(crate) account_changes: Vec<AccountChange>,
    pub(crate) superseded_postings: Vec<Supersede>,
    pub(crate) superseded_entries: Vec<SupersedeEntry>,
    /// Balance-index changes per account (rows written + rows closed): sizes summary blocks.
    pub(crate) changes_per_account: HashMap<String, i64>,
    /// The page's first position.
    first_position: Option<i64>,
}

/// Why a page could not be translated: an event that core's fold would also refuse.
#[derive(Debug)]
pub(crate) struct Inconsistent(pub(crate) String);

/// The entries a page acts on without creating them (corrections, hold resolutions): their
/// versions in force must be read from `uc_entries` first.
pub(crate) fn referenced_entries(events: &[Envelope<LedgerEvent>]) -> Vec<String> {
    let mut created = std::collections::HashSet::new();
    let mut out = Vec::new();
    for e in events {
        match &e.payload {
            LedgerEvent::EntryPosted { id, .. } | LedgerEvent::HoldPlaced { id, .. } => {
                created.insert(id.clone());
            }
            LedgerEvent::EntryCorrected { entry: id, .. }
            | LedgerEvent::HoldPosted { hold: id, .. }
            | LedgerEvent::HoldVoided { hold: id, .. }
                if !created.contains(id) =>
            {
                out.push(id.to_string());
            }
            _ => {}
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn signed_leg(p: &Posting) -> (Direction, i128) {
    (p.direction, p.amount.minor())
}

impl PageRows {
    /// Translates `events` (consecutive, in log order), given the versions in force of the
    /// entries they reference (`known`, updated as the page goes).
    pub(crate) fn build(
        events: &[Envelope<LedgerEvent>],
        known: &mut HashMap<EntryId, EntryCur>,
    ) -> Result<PageRows, Inconsistent> {
        let mut rows = PageRows {
            first_position: events.first().map(|e| e.position as i64),
            ..PageRows::default()
        };
        for env in events {
            rows.add(env, known)?;
        }
        Ok(rows)
    }

    fn count(&mut self, account: &str) {
        *self
            .changes_per_account
            .entry(account.to_string())
            .or_insert(0) += 1;
    }

    fn posting(&mut self, row: PostingRow) {
        self.count(&row.account_id.clone());
        self.postings.push(row);
    }

    fn add(
        &mut self,
        env: &Envelope<LedgerEvent>,
        known: &mut HashMap<EntryId, EntryCur>,
    ) -> Result<(), Inconsistent> {
        let pos = env.position as i64;
        let at = env.recorded_at.0.as_micros();
        let event_id = env.event_id.to_string();
        let mut entry_of_tx: Option<String> = None;
        match &env.payload {
            LedgerEvent::AccountOpened {
                id,
                currency,
                kind,
                owner,
                branch,
                constraints,
                metadata,
                opened_at,
                ..
            } => {
                let json = |v: serde_json::Result<serde_json::Value>| {
                    v.map_err(|e| Inconsistent(format!("account {id}: {e}")))
                };
                self.openings.push(AccountRow {
                    account_id: id.to_string(),
                    version: env.stream_version as i64,
                    currency: format!("{currency:#}"),
                    kind: *kind,
                    owner: owner.clone(),
                    branch: branch.clone(),
                    constraints: json(serde_json::to_value(constraints))?,
                    metadata: json(serde_json::to_value(metadata))?,
                    valid_from: opened_at.0.as_micros(),
                    position: pos,
                    recorded_at: at,
                    event_id,
                });
            }
            LedgerEvent::AccountFrozen { account }
            | LedgerEvent::AccountUnfrozen { account }
            | LedgerEvent::AccountClosed { account }
            | LedgerEvent::AccountMetadataSet { account, .. } => {
                let (status, metadata) = match &env.payload {
                    LedgerEvent::AccountFrozen { .. } => (Some(AccountStatus::Frozen), None),
                    LedgerEvent::AccountUnfrozen { .. } => (Some(AccountStatus::Open), None),
                    LedgerEvent::AccountClosed { .. } => (Some(AccountStatus::Closed), None),
                    LedgerEvent::AccountMetadataSet { metadata, .. } => (
                        None,
                        Some(
                            serde_json::to_value(metadata)
                                .map_err(|e| Inconsistent(format!("account {account}: {e}")))?,
                        ),
                    ),
                    _ => (None, None),
                };
                self.account_changes.push(AccountChange {
                    account_id: account.to_string(),
                    version: env.stream_version as i64,
                    status,
                    metadata,
                    valid_at: env.effective_at.0.as_micros(),
                    position: pos,
                    recorded_at: at,
                    event_id,
                });
            }
            LedgerEvent::EntryPosted {
                id,
                postings,
                effective_at,
                reversal_of,
                ..
            } => {
                entry_of_tx = Some(id.to_string());
                let eff = effective_at.0.as_micros();
                self.version_rows(id, 1, postings, eff, pos, at);
                let kind = if reversal_of.is_some() {
                    "reversal"
                } else {
                    "posted"
                };
                self.entries.push(EntryRow {
                    entry_id: id.to_string(),
                    version: 1,
                    kind,
                    effective_at: eff,
                    postings: postings.to_vec(),
                    reversal_of: reversal_of.as_ref().map(|r| r.to_string()),
                    hold_amount: None,
                    expires_at: None,
                    correction_id: None,
                    reason: None,
                    cancelled: false,
                    position: pos,
                    recorded_at: at,
                    event_id,
                    superseded: None,
                });
                known.insert(
                    id.clone(),
                    EntryCur {
                        version: 1,
                        kind,
                        position: env.position,
                        postings: postings.to_vec(),
                        hold: None,
                    },
                );
            }
            LedgerEvent::HoldPlaced {
                id,
                postings,
                amount,
                effective_at,
                expires_at,
                ..
            } => {
                entry_of_tx = Some(id.to_string());
                let eff = effective_at.0.as_micros();
                let legs = hold_legs(id, postings)?;
                let held = amount.minor();
                let mut leg = 0i16;
                for (p, ends) in [
                    (legs.0, false),
                    (legs.1, false),
                    (legs.0, true),
                    (legs.1, true),
                ] {
                    let (role, at_valid, amount) = match (ends, expires_at) {
                        (false, _) => ("hold_start", eff, held),
                        (true, Some(end)) => ("hold_end", end.as_micros(), -held),
                        (true, None) => continue,
                    };
                    self.posting(PostingRow {
                        position: pos,
                        leg,
                        account_id: p.account.to_string(),
                        entry_id: id.to_string(),
                        entry_version: 1,
                        role,
                        direction: p.direction,
                        pending: true,
                        amount,
                        currency: format!("{:#}", p.amount.currency()),
                        effective_at: at_valid,
                        recorded_at: at,
                        superseded: None,
                    });
                    leg += 1;
                }
                self.entries.push(EntryRow {
                    entry_id: id.to_string(),
                    version: 1,
                    kind: "hold",
                    effective_at: eff,
                    postings: postings.to_vec(),
                    reversal_of: None,
                    hold_amount: Some(held),
                    expires_at: expires_at.map(|t| t.as_micros()),
                    correction_id: None,
                    reason: None,
                    cancelled: false,
                    position: pos,
                    recorded_at: at,
                    event_id,
                    superseded: None,
                });
                known.insert(
                    id.clone(),
                    EntryCur {
                        version: 1,
                        kind: "hold",
                        position: env.position,
                        postings: postings.to_vec(),
                        hold: Some((held, *expires_at)),
                    },
                );
            }
            LedgerEvent::HoldPosted {
                hold,
                amount,
                effective_at,
                ..
            } => {
                entry_of_tx = Some(hold.to_string());
                self.resolve(
                    hold,
                    Some(amount.minor()),
                    effective_at.0.as_micros(),
                    env,
                    known,
                )?;
            }
            LedgerEvent::HoldVoided {
                hold, effective_at, ..
            } => {
                entry_of_tx = Some(hold.to_string());
                self.resolve(hold, None, effective_at.0.as_micros(), env, known)?;
            }
            LedgerEvent::HoldExpired { hold } => {
                // The reservation already ends at the deadline (its hold_end rows): no money moves.
                entry_of_tx = Some(hold.to_string());
            }
            LedgerEvent::EntryCorrected {
                entry,
                correction_id,
                version,
                postings,
                effective_at,
                cancelled,
                reason,
                ..
            } => {
                entry_of_tx = Some(entry.to_string());
                let cur = known
                    .get(entry)
                    .cloned()
                    .ok_or_else(|| Inconsistent(format!("correction of unknown entry {entry}")))?;
                // Take the superseded version back: close its rows.
                self.close_postings(cur.position as i64, "posting", pos, at);
                for p in &cur.postings {
                    self.count(p.account.as_str());
                }
                self.close_entry(entry, cur.version as i32, cur.position as i64, pos, at);
                let eff = effective_at.0.as_micros();
                self.version_rows(entry, *version as i32, postings, eff, pos, at);
                self.entries.push(EntryRow {
                    entry_id: entry.to_string(),
                    version: *version as i32,
                    kind: cur.kind,
                    effective_at: eff,
                    postings: postings.to_vec(),
                    reversal_of: None,
                    hold_amount: None,
                    expires_at: None,
                    correction_id: Some(correction_id.to_string()),
                    reason: Some(reason.clone()),
                    cancelled: *cancelled,
                    position: pos,
                    recorded_at: at,
                    event_id,
                    superseded: None,
                });
                known.insert(
                    entry.clone(),
                    EntryCur {
                        version: *version,
                        kind: cur.kind,
                        position: env.position,
                        postings: postings.to_vec(),
                        hold: None,
                    },
                );
            }
            LedgerEvent::EntryRejected { id, .. } => entry_of_tx = Some(id.to_string()),
        }
        self.transactions.push(TxRow {
            position: pos,
            recorded_at: at,
            event_type: env.payload.event_type(),
            entry_id: entry_of_tx,
        });
        Ok(())
    }

    /// Closes the transaction period of the posting rows recorded at `recorded_position` with
    /// `role`: in place when they are rows of this page (so no version is ever written
    /// overlapping another), else by an UPDATE run before this page's rows are written.
    fn close_postings(&mut self, recorded_position: i64, role: &'static str, pos: i64, at: i64) {
        let first = self
            .postings
            .partition_point(|r| r.position < recorded_position);
        let in_page = self.first_position.is_some_and(|f| recorded_position >= f);
        if in_page {
            for r in self.postings[first..]
                .iter_mut()
                .take_while(|r| r.position == recorded_position)
                .filter(|r| r.role == role && r.superseded.is_none())
            {
                r.superseded = Some((pos, at));
            }
        } else {
            self.superseded_postings.push(Supersede {
                recorded_position,
                role,
                position: pos,
                recorded_at: at,
            });
        }
    }

    /// Closes an entry version, like [`PageRows::close_postings`].
    fn close_entry(
        &mut self,
        id: &EntryId,
        version: i32,
        recorded_position: i64,
        pos: i64,
        at: i64,
    ) {
        let in_page = self.first_position.is_some_and(|f| recorded_position >= f);
        let id = id.to_string();
        if in_page {
            if let Some(r) = self
                .entries
                .iter_mut()
                .rev()
                .find(|r| r.entry_id == id && r.version == version)
            {
                r.superseded = Some((pos, at));
            }
        } else {
            self.superseded_entries.push(SupersedeEntry {
                entry_id: id,
                version,
                position: pos,
                recorded_at: at,
            });
        }
    }

    /// The rows of one entry version: one posted row per posting.
    fn version_rows(
        &mut self,
        id: &EntryId,
        version: i32,
        postings: &[Posting],
        eff: i64,
        pos: i64,
        at: i64,
    ) {
        for (leg, p) in postings.iter().enumerate() {
            let (direction, amount) = signed_leg(p);
            self.posting(PostingRow {
                position: pos,
                leg: leg as i16,
                account_id: p.account.to_string(),
                entry_id: id.to_string(),
                entry_version: version,
                role: "posting",
                direction,
                pending: false,
                amount,
                currency: format!("{:#}", p.amount.currency()),
                effective_at: eff,
                recorded_at: at,
                superseded: None,
            });
        }
    }

    /// A hold posted (`posted = Some(x)`) or voided at valid time `eff`: the reservation is
    /// released at `eff` on both sides, `x` moves as posted money, and the end-of-reservation
    /// rows at the deadline are closed (core: `hold_resolve_changes`).
    fn resolve(
        &mut self,
        hold: &EntryId,
        posted: Option<i128>,
        eff: i64,
        env: &Envelope<LedgerEvent>,
        known: &HashMap<EntryId, EntryCur>,
    ) -> Result<(), Inconsistent> {
        let cur = known
            .get(hold)
            .ok_or_else(|| Inconsistent(format!("resolution of unknown hold {hold}")))?;
        let (held, expires_at) = cur
            .hold
            .ok_or_else(|| Inconsistent(format!("{hold} is not a hold")))?;
        let (debit, credit) = hold_legs(hold, &cur.postings)?;
        let (debit, credit) = (debit.clone(), credit.clone());
        let pos = env.position as i64;
        let at = env.recorded_at.0.as_micros();
        let version = cur.version as i32;
        let placed = cur.position as i64;
        let mut legs: Vec<(&Posting, &'static str, bool, i128)> = vec![
            (&debit, "hold_release", true, -held),
            (&credit, "hold_release", true, -held),
        ];
        if let Some(x) = posted.filter(|x| *x != 0) {
            legs.push((&debit, "hold_post", false, x));
            legs.push((&credit, "hold_post", false, x));
        }
        for (leg, (p, role, pending, amount)) in legs.into_iter().enumerate() {
            self.posting(PostingRow {
                position: pos,
                leg: leg as i16,
                account_id: p.account.to_string(),
                entry_id: hold.to_string(),
                entry_version: version,
                role,
                direction: p.direction,
                pending,
                amount,
                currency: format!("{:#}", p.amount.currency()),
                effective_at: eff,
                recorded_at: at,
                superseded: None,
            });
        }
        if expires_at.is_some() {
            self.close_postings(placed, "hold_end", pos, at);
            self.count(debit.account.as_str());
            self.count(credit.account.as_str());
        }
        Ok(())
    }
}

/// A hold's (debit, credit) postings.
fn hold_legs<'a>(
    id: &EntryId,
    postings: &'a [Posting],
) -> Result<(&'a Posting, &'a Posting), Inconsistent> {
    match postings {
        [d, c] if d.direction == Direction::Debit && c.direction == Direction::Credit => Ok((d, c)),
        _ => Err(Inconsistent(format!(
            "hold {id} must have one debit and one credit posting"
        ))),
    }
}

/// The text form of an account kind in `uc_accounts.kind` (core's serde name).
pub(crate) fn kind_str(kind: AccountKind) -> &'static str {
    match kind {
        AccountKind::Asset => "asset",
        AccountKind::Liability => "liability",
        AccountKind::Equity => "equity",
        AccountKind::Income => "income",
        AccountKind::Expense => "expense",
    }
}

/// The inverse of [`kind_str`].
pub(crate) fn kind_of(s: &str) -> Option<AccountKind> {
    Some(match s {
        "asset" => AccountKind::Asset,
        "liability" => AccountKind::Liability,
        "equity" => AccountKind::Equity,
        "income" => AccountKind::Income,
        "expense" => AccountKind::Expense,
        _ => return None,
    })
}

/// The text form of a status in `uc_accounts.status`.
pub(crate) fn status_str(s: AccountStatus) -> &'static str {
    match s {
        AccountStatus::Open => "open",
        AccountStatus::Frozen => "frozen",
        AccountStatus::Closed => "closed",
    }
}

/// The text form of a direction.
pub(crate) fn direction_str(d: Direction) -> &'static str {
    match d {
        Direction::Debit => "debit",
        Direction::Credit => "credit",
    }
}
