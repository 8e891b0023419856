//! [`ReadModel`]: core's bitemporal queries (balance, statement, restatement) answered in SQL
//! from the tables the [`Projector`](crate::Projector) writes. The answers, bases and errors are
//! those of `ultracore_core::ledger::Ledger` for the same log up to the checkpoint.
//!
//! Cost of `balance` at (V, P) on an account with n changes: one probe for the last level-0
//! block complete at P, at most `n / (B·F^3) + 3·(F−1)` summary probes (each an index-only
//! "last sum at or before V" lookup), and a scan of at most one block's raw changes
//! (about B plus one page); B = 1,024, F = 32. O(log n) probes with a bounded scan, no replay.

use deadpool_postgres::Pool;
use tokio_postgres::Row;
use ultracore_core::ids::{AccountId, EntryId};
use ultracore_core::ledger::{
    AccountKind, BalanceView, Basis, Direction, KnownAt, QueryError, Restatement,
    RestatementChange, Statement, StatementLine,
};
use ultracore_core::limits::STATEMENT_LINES_MAX;
use ultracore_core::money::{Amount, Currency, SignedAmount};
use ultracore_core::store::StoreError;
use ultracore_core::time::Timestamp;

use crate::error::pool;
use crate::numeric::Minor;
use crate::projector::{
    BLOCK_FANOUT, BLOCK_LEVEL_TOP, ROW_PENDING_CREDIT, ROW_PENDING_DEBIT, ROW_POSTED,
};
use crate::rows::kind_of;
use crate::PgEventStore;

/// Why a read-model query failed: the question (core's [`QueryError`], same codes) or the
/// database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The query cannot be answered (unknown account, position not reached, …).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// PostgreSQL failed or the stored rows are corrupt.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn db(e: tokio_postgres::Error) -> ReadError {
    ReadError::Store(crate::projector::described(&e))
}

fn corrupt(what: impl Into<String>) -> ReadError {
    ReadError::Store(StoreError::Corrupt(what.into()))
}

/// Net deltas of an account: posted (credits − debits), pending debits, pending credits, in
/// minor units (core's `Deltas`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sums {
    posted: i128,
    pending_debit: i128,
    pending_credit: i128,
}

impl Sums {
    fn of(row: &Row, from: usize) -> Sums {
        Sums {
            posted: row.get::<_, Minor>(from).0,
            pending_debit: row.get::<_, Minor>(from + 1).0,
            pending_credit: row.get::<_, Minor>(from + 2).0,
        }
    }
    fn plus(self, o: Sums) -> Option<Sums> {
        Some(Sums {
            posted: self.posted.checked_add(o.posted)?,
            pending_debit: self.pending_debit.checked_add(o.pending_debit)?,
            pending_credit: self.pending_credit.checked_add(o.pending_credit)?,
        })
    }
}

/// An account's fixed attributes.
struct AccountInfo {
    id: AccountId,
    currency: Currency,
    kind: AccountKind,
}

/// The read side in SQL. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct ReadModel {
    pool: Pool,
    projection: String,
}

impl ReadModel {
    /// Queries over the tables of `store`'s schema, as far as projection `projection`
    /// (the projector's `ProjectorConfig::name`) has applied the log.
    pub fn new(store: &PgEventStore, projection: &str) -> ReadModel {
        ReadModel {
            pool: store.pool().clone(),
            projection: projection.to_string(),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, ReadError> {
        self.pool.get().await.map_err(|e| ReadError::Store(pool(e)))
    }

    /// The checkpoint: the last position the answers reflect.
    pub async fn position(&self) -> Result<u64, ReadError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT position FROM uc_projection_checkpoints WHERE projection = $1",
                &[&self.projection],
            )
            .await
            .map_err(db)?;
        Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    /// Resolves `known_at` against the projected log (as core's `Ledger::basis`).
    pub async fn basis(&self, known_at: KnownAt) -> Result<Basis, ReadError> {
        let client = self.client().await?;
        basis(&client, &self.projection, known_at).await
    }

    /// Balances of `account` at valid time `valid_at` as known at `known_at`.
    pub async fn balance(
        &self,
        account: &AccountId,
        valid_at: Timestamp,
        known_at: KnownAt,
    ) -> Result<BalanceView, ReadError> {
        let client = self.client().await?;
        let info = account_info(&client, account).await?;
        let basis = basis(&client, &self.projection, known_at).await?;
        let sums = sums_at(&client, account, valid_at.as_micros(), basis.position).await?;
        Ok(view(&info, sums, valid_at, basis)?)
    }

    /// The same sums as [`ReadModel::balance`] by a full scan of the account's posting rows
    /// in force (no summaries): `(posted, pending_debits, pending_credits)` in minor units,
    /// unsigned by the normal side. For tests of the summaries, and a plan to compare with.
    #[doc(hidden)]
    pub async fn sums_by_scan(
        &self,
        account: &AccountId,
        valid_at: Timestamp,
        position: u64,
    ) -> Result<(i128, i128, i128), ReadError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT coalesce(sum({po}), 0), coalesce(sum({pd}), 0), coalesce(sum({pc}), 0) \
             FROM uc_postings p WHERE p.account_id = $1 AND p.effective_at <= $2 \
               AND p.recorded_position <= $3 \
               AND (p.superseded_position IS NULL OR p.superseded_position > $3)",
            po = ROW_POSTED,
            pd = ROW_PENDING_DEBIT,
            pc = ROW_PENDING_CREDIT
        );
        let row = client
            .query_one(
                &sql,
                &[&account.as_str(), &valid_at.as_micros(), &(position as i64)],
            )
            .await
            .map_err(db)?;
        let s = Sums::of(&row, 0);
        Ok((s.posted, s.pending_debit, s.pending_credit))
    }

    /// Like [`ReadModel::sums_by_scan`], through the summaries (what `balance` uses).
    #[doc(hidden)]
    pub async fn sums(
        &self,
        account: &AccountId,
        valid_at: Timestamp,
        position: u64,
    ) -> Result<(i128, i128, i128), ReadError> {
        let client = self.client().await?;
        let s = sums_at(&client, account, valid_at.as_micros(), position).await?;
        Ok((s.posted, s.pending_debit, s.pending_credit))
    }

    /// A statement of `account` for valid period [from, to] as known at `known_at`, with a
    /// running balance (as core's `Ledger::statement`).
    pub async fn statement(
        &self,
        account: &AccountId,
        from: Timestamp,
        to: Timestamp,
        known_at: KnownAt,
    ) -> Result<Statement, ReadError> {
        if from > to {
            return Err(QueryError::InvalidRange("from is after to").into());
        }
        let client = self.client().await?;
        let info = account_info(&client, account).await?;
        let basis = basis(&client, &self.projection, known_at).await?;
        let p = basis.position as i64;
        let before = from.as_micros().saturating_sub(1);
        let mut running = sums_at(&client, account, before, basis.position).await?;
        let opening = view(
            &info,
            running,
            Timestamp::from_micros(before).unwrap_or(from),
            basis,
        )?;
        let sql = format!(
            "SELECT p.effective_at, p.recorded_position, min(p.entry_id), \
                    sum({po}), sum({pd}), sum({pc}) \
             FROM uc_postings p \
             WHERE p.account_id = $1 AND p.effective_at >= $2 AND p.effective_at <= $3 \
               AND p.recorded_position <= $4 \
               AND (p.superseded_position IS NULL OR p.superseded_position > $4) \
             GROUP BY p.effective_at, p.recorded_position \
             HAVING sum({po}) <> 0 OR sum({pd}) <> 0 OR sum({pc}) <> 0 \
             ORDER BY p.effective_at, p.recorded_position \
             LIMIT $5",
            po = ROW_POSTED,
            pd = ROW_PENDING_DEBIT,
            pc = ROW_PENDING_CREDIT
        );
        let limit = STATEMENT_LINES_MAX as i64 + 1;
        let rows = client
            .query(
                &sql,
                &[
                    &account.as_str(),
                    &from.as_micros(),
                    &to.as_micros(),
                    &p,
                    &limit,
                ],
            )
            .await
            .map_err(db)?;
        if rows.len() > STATEMENT_LINES_MAX {
            return Err(QueryError::TooLarge.into());
        }
        let sign = normal_sign(info.kind);
        let cur = info.currency;
        let mut lines = Vec::with_capacity(rows.len());
        for r in &rows {
            let d = Sums::of(r, 3);
            running = running.plus(d).ok_or(QueryError::BalanceOutOfRange)?;
            let v = view(&info, running, from, basis)?;
            lines.push(StatementLine {
                effective_at: time(r.get(0))?,
                entry_id: entry_id(r.get(2))?,
                position: r.get::<_, i64>(1) as u64,
                posted_change: signed(d.posted * sign, cur)?,
                pending_debits_change: signed(d.pending_debit, cur)?,
                pending_credits_change: signed(d.pending_credit, cur)?,
                posted_balance: v.posted,
                available_balance: v.available,
            });
        }
        let closing_sums = sums_at(&client, account, to.as_micros(), basis.position).await?;
        Ok(Statement {
            account_id: account.clone(),
            currency: cur,
            from,
            to,
            opening,
            lines,
            closing: view(&info, closing_sums, to, basis)?,
            basis,
        })
    }

    /// What changed for `account` in valid period [from, to] between `known_at_1` and
    /// `known_at_2`, and which events caused it (as core's `Ledger::restatement`).
    pub async fn restatement(
        &self,
        account: &AccountId,
        from: Timestamp,
        to: Timestamp,
        known_at_1: KnownAt,
        known_at_2: KnownAt,
    ) -> Result<Restatement, ReadError> {
        if from > to {
            return Err(QueryError::InvalidRange("from is after to").into());
        }
        let client = self.client().await?;
        let info = account_info(&client, account).await?;
        let b1 = basis(&client, &self.projection, known_at_1).await?;
        let b2 = basis(&client, &self.projection, known_at_2).await?;
        if b1.position > b2.position {
            return Err(QueryError::InvalidRange("known_at_1 is after known_at_2").into());
        }
        // A row recorded in (b1, b2] is a change (+) at its position; a row superseded in
        // (b1, b2] is a change (−) at the superseding position, listed before the additions
        // of that position (core applies a correction as "take back, then add").
        let sql = format!(
            "SELECT c.cause, c.effective_at, min(c.entry_id), sum(c.posted), \
                    min(t.event_type), min(t.recorded_at) \
             FROM ( \
               SELECT p.recorded_position AS cause, 1 AS ord, p.effective_at, \
                      p.recorded_position AS seq, p.entry_id, {po} AS posted \
               FROM uc_postings p WHERE p.account_id = $1 AND p.recorded_position > $2 \
                 AND p.recorded_position <= $3 AND p.effective_at <= $4 \
               UNION ALL \
               SELECT p.superseded_position, 0, p.effective_at, p.recorded_position, p.entry_id, \
                      -({po}) \
               FROM uc_postings p WHERE p.account_id = $1 AND p.superseded_position > $2 \
                 AND p.superseded_position <= $3 AND p.effective_at <= $4 \
             ) c JOIN uc_transactions t ON t.position = c.cause \
             GROUP BY c.cause, c.ord, c.effective_at, c.seq \
             HAVING sum(c.posted) <> 0 \
             ORDER BY c.cause, c.ord, c.effective_at, c.seq \
             LIMIT $5",
            po = ROW_POSTED
        );
        let limit = STATEMENT_LINES_MAX as i64 + 1;
        let rows = client
            .query(
                &sql,
                &[
                    &account.as_str(),
                    &(b1.position as i64),
                    &(b2.position as i64),
                    &to.as_micros(),
                    &limit,
                ],
            )
            .await
            .map_err(db)?;
        if rows.len() > STATEMENT_LINES_MAX {
            return Err(QueryError::TooLarge.into());
        }
        let sign = normal_sign(info.kind);
        let cur = info.currency;
        let mut changes = Vec::with_capacity(rows.len());
        for r in &rows {
            changes.push(RestatementChange {
                effective_at: time(r.get(1))?,
                entry_id: entry_id(r.get(2))?,
                caused_by_position: r.get::<_, i64>(0) as u64,
                caused_by_event_type: r.get::<_, String>(4),
                recorded_at: time(r.get(5))?,
                posted_change: signed(r.get::<_, Minor>(3).0 * sign, cur)?,
            });
        }
        let to_micros = to.as_micros();
        let before = sums_at(&client, account, to_micros, b1.position).await?;
        let after = sums_at(&client, account, to_micros, b2.position).await?;
        Ok(Restatement {
            account_id: account.clone(),
            from,
            to,
            closing_before: view(&info, before, to, b1)?,
            closing_after: view(&info, after, to, b2)?,
            changes,
        })
    }
}

fn time(micros: i64) -> Result<Timestamp, ReadError> {
    Timestamp::from_micros(micros).ok_or_else(|| corrupt(format!("timestamp {micros}")))
}

fn entry_id(s: Option<String>) -> Result<Option<EntryId>, ReadError> {
    s.map(|s| {
        s.parse()
            .map_err(|_| corrupt(format!("entry id {s:?} in the read model")))
    })
    .transpose()
}

async fn account_info(
    client: &deadpool_postgres::ClientWrapper,
    account: &AccountId,
) -> Result<AccountInfo, ReadError> {
    let stmt = client
        .prepare_cached("SELECT currency, kind FROM uc_accounts WHERE account_id = $1 LIMIT 1")
        .await
        .map_err(db)?;
    let row = client
        .query_opt(&stmt, &[&account.as_str()])
        .await
        .map_err(db)?
        .ok_or_else(|| QueryError::UnknownAccount(account.clone()))?;
    let currency: &str = row.get(0);
    let kind: &str = row.get(1);
    Ok(AccountInfo {
        id: account.clone(),
        currency: currency
            .parse()
            .map_err(|_| corrupt(format!("currency {currency:?}")))?,
        kind: kind_of(kind).ok_or_else(|| corrupt(format!("account kind {kind:?}")))?,
    })
}

async fn basis(
    client: &deadpool_postgres::ClientWrapper,
    projection: &str,
    known_at: KnownAt,
) -> Result<Basis, ReadError> {
    let (t, p) = match known_at {
        KnownAt::Now => (None, None),
        KnownAt::Time(t) => (Some(t.as_micros()), None),
        KnownAt::Position(p) => (None, Some(i64::try_from(p).unwrap_or(i64::MAX))),
    };
    // One round trip: the checkpoint, the position the question resolves to, and its time.
    let stmt = client
        .prepare_cached(
            "WITH c AS (SELECT coalesce((SELECT position FROM uc_projection_checkpoints \
                                         WHERE projection = $1), 0) AS last), \
                  b AS (SELECT CASE \
                     WHEN $2::bigint IS NOT NULL THEN coalesce((SELECT t.position FROM uc_transactions t \
                          WHERE t.recorded_at <= $2 AND t.position <= c.last \
                          ORDER BY t.recorded_at DESC LIMIT 1), 0) \
                     WHEN $3::bigint IS NOT NULL THEN $3::bigint \
                     ELSE c.last END AS position, c.last FROM c) \
             SELECT b.last, b.position, \
                    (SELECT t.recorded_at FROM uc_transactions t WHERE t.position = b.position) \
             FROM b",
        )
        .await
        .map_err(db)?;
    let row = client
        .query_one(&stmt, &[&projection, &t, &p])
        .await
        .map_err(db)?;
    let last = row.get::<_, i64>(0) as u64;
    let position = row.get::<_, i64>(1) as u64;
    if let KnownAt::Position(requested) = known_at {
        if requested > last {
            return Err(QueryError::PositionNotReached { requested, last }.into());
        }
    }
    let recorded_at = match row.get::<_, Option<i64>>(2) {
        Some(t) => time(t)?,
        None => Timestamp::EPOCH,
    };
    Ok(Basis {
        position,
        recorded_at,
    })
}

/// Sums of the changes of `account` with valid time `<= valid_at` recorded at positions
/// `<= known`: complete blocks by their summaries, the rest from the raw rows.
async fn sums_at(
    client: &deadpool_postgres::ClientWrapper,
    account: &AccountId,
    valid_at: i64,
    known: u64,
) -> Result<Sums, ReadError> {
    let sql = format!(
        "WITH k AS ( \
           SELECT coalesce(max(block) + 1, 0) AS k0, coalesce(max(last_position), 0) AS e FROM ( \
             SELECT block, last_position FROM uc_balance_blocks \
             WHERE account_id = $1 AND level = 0 AND last_position <= $3 \
             ORDER BY last_position DESC LIMIT 1) last_block), \
         cover AS ( \
           SELECT l.level, b.block FROM k, generate_series(0, {top}) AS l(level), \
           LATERAL generate_series( \
             CASE WHEN l.level = {top} THEN 0 \
                  ELSE (k.k0 / power({f}, l.level + 1)::bigint) * {f} END, \
             k.k0 / power({f}, l.level)::bigint - 1) AS b(block)), \
         parts AS ( \
           SELECT s.posted, s.pending_debit, s.pending_credit FROM cover c \
           CROSS JOIN LATERAL ( \
             SELECT posted, pending_debit, pending_credit FROM uc_balance_sums \
             WHERE account_id = $1 AND level = c.level AND block = c.block AND effective_at <= $2 \
             ORDER BY effective_at DESC LIMIT 1) s \
           UNION ALL \
           SELECT {po}, {pd}, {pc} FROM uc_postings p, k \
           WHERE p.account_id = $1 AND p.recorded_position > k.e AND p.recorded_position <= $3 \
             AND p.effective_at <= $2 \
           UNION ALL \
           SELECT -({po}), -({pd}), -({pc}) FROM uc_postings p, k \
           WHERE p.account_id = $1 AND p.superseded_position > k.e AND p.superseded_position <= $3 \
             AND p.effective_at <= $2) \
         SELECT coalesce(sum(posted), 0), coalesce(sum(pending_debit), 0), \
                coalesce(sum(pending_credit), 0) FROM parts",
        top = BLOCK_LEVEL_TOP,
        f = BLOCK_FANOUT,
        po = ROW_POSTED,
        pd = ROW_PENDING_DEBIT,
        pc = ROW_PENDING_CREDIT
    );
    let stmt = client.prepare_cached(&sql).await.map_err(db)?;
    let row = client
        .query_one(&stmt, &[&account.as_str(), &valid_at, &(known as i64)])
        .await
        .map_err(db)?;
    Ok(Sums::of(&row, 0))
}

/// +1 for credit-normal accounts, −1 for debit-normal ones (core's `normal_sign`).
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

/// The balance view of core's `view`: normal direction, reservations against the normal side
/// reduce what is available.
fn view(
    info: &AccountInfo,
    d: Sums,
    valid_at: Timestamp,
    basis: Basis,
) -> Result<BalanceView, QueryError> {
    let cur = info.currency;
    let sign = normal_sign(info.kind);
    let posted = d.posted * sign;
    let reserved = match info.kind.normal_side() {
        Direction::Credit => d.pending_debit,
        Direction::Debit => d.pending_credit,
    };
    Ok(BalanceView {
        account_id: info.id.clone(),
        currency: cur,
        posted: signed(posted, cur)?,
        pending_debits: amount(d.pending_debit, cur)?,
        pending_credits: amount(d.pending_credit, cur)?,
        available: signed(posted - reserved, cur)?,
        valid_at,
        basis,
    })
}
