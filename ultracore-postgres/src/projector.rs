//! [`Projector`]: applies the log to the read-model tables of migration V2, one page per
//! transaction, with the checkpoint in the same transaction (exactly-once effect).
//!
//! Calling protocol: `Projector::new(store, config)` reads (or creates) the checkpoint; then
//! either `step()` (one page), `catch_up()` (pages until the log's end, with a progress line
//! per second) or `run()` (catch up, then follow the log with `wait_for`, forever). Any
//! error leaves the tables and the checkpoint as they were before the failed page: drop the
//! projector, build a new one, and it resumes from the checkpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::Transaction;
use ultracore_core::event::Envelope;
use ultracore_core::ids::EntryId;
use ultracore_core::ledger::{LedgerEvent, Posting};
use ultracore_core::store::{EventStore, StoreError};
use ultracore_core::time::Timestamp;

use crate::error::{pool, unavailable};
use crate::numeric::Minor;
use crate::rows::{direction_str, kind_str, status_str, EntryCur, PageRows};
use crate::PgEventStore;

/// Changes (per account) after which its open changes are summarised as a level-0 block, by
/// default ([`ProjectorConfig::block_changes`]).
pub const BLOCK_CHANGES: i64 = 1_024;
/// Level-i blocks per level-(i+1) block.
pub const BLOCK_FANOUT: i64 = 32;
/// Summary levels (0 ..= `BLOCK_LEVEL_TOP`); a top-level block spans 32^3 · 1,024 ≈ 33.5 M
/// changes, so an account of a billion changes still needs only ~30 + 3 · 31 probes.
pub const BLOCK_LEVEL_TOP: i64 = 3;
/// Events per page (one transaction), at most.
pub const PAGE_EVENTS_MAX: usize = ultracore_core::limits::EVENTS_PER_READ_MAX;

const _: () = assert!(BLOCK_CHANGES >= 1 && BLOCK_FANOUT >= 2 && BLOCK_LEVEL_TOP >= 0);

/// Settings of a projector.
#[derive(Clone, Debug)]
pub struct ProjectorConfig {
    /// The checkpoint's name (one row of `uc_projection_checkpoints`).
    pub name: String,
    /// Events read and applied per transaction (at most [`PAGE_EVENTS_MAX`]).
    pub page_events: usize,
    /// How often `catch_up` prints a progress line to stderr (`None`: never).
    pub progress_every: Option<Duration>,
    /// Positions per partition of `uc_postings`. Fixed for the life of a schema: partitions
    /// already created keep their bounds, and a different width would overlap them.
    pub partition_positions: u64,
    /// Changes of an account after which they are summarised as a level-0 block (at the end
    /// of the page that reaches it). Smaller: more summary rows, shorter raw scans. Any value
    /// gives the same answers; it may change between runs.
    pub block_changes: i64,
    /// For tests: fail the page that contains this position after writing its rows and before
    /// writing the checkpoint (the transaction rolls back, as after a crash).
    #[doc(hidden)]
    pub fail_before_checkpoint_at: Option<u64>,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        ProjectorConfig {
            name: "ledger".into(),
            page_events: 2_000,
            progress_every: Some(Duration::from_secs(1)),
            partition_positions: 10_000_000,
            block_changes: BLOCK_CHANGES,
            fail_before_checkpoint_at: None,
        }
    }
}

/// Why a page could not be applied. Nothing of the page is visible after any of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// Reading the log or writing the tables failed (retry later).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another projector with the same name moved the checkpoint: this one is fenced out.
    #[error("checkpoint {name} is at {actual}, this projector expected {expected}")]
    CheckpointMoved {
        /// The checkpoint.
        name: String,
        /// Where this projector left it.
        expected: u64,
        /// Where it is.
        actual: u64,
    },
    /// The log holds an event that does not fit what was projected before it (a bug or a
    /// corrupt log): the projection stops rather than write a wrong row.
    #[error("log inconsistent with the read model: {0}")]
    Inconsistent(String),
    /// The failure injected by `fail_before_checkpoint_at`.
    #[error("injected failure before the checkpoint of position {0}")]
    Injected(u64),
}

fn db(e: tokio_postgres::Error) -> ProjectionError {
    ProjectionError::Store(described(&e))
}

/// `unavailable`, with the server's message (which names the constraint or column).
pub(crate) fn described(e: &tokio_postgres::Error) -> StoreError {
    match (unavailable(e), e.as_db_error()) {
        (StoreError::Unavailable(s), Some(d)) => {
            StoreError::Unavailable(format!("{s}: {}", d.message()))
        }
        (other, _) => other,
    }
}

/// The projection lag, shared with whoever exports it (the server's metrics): the log's last
/// position and the checkpoint, as last seen by the projector.
#[derive(Clone, Debug, Default)]
pub struct Lag {
    log: Arc<AtomicU64>,
    checkpoint: Arc<AtomicU64>,
}

impl Lag {
    /// Events in the log not yet applied (log last position − checkpoint).
    pub fn events(&self) -> u64 {
        self.log
            .load(Ordering::Relaxed)
            .saturating_sub(self.checkpoint.load(Ordering::Relaxed))
    }
    /// The checkpoint last written.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint.load(Ordering::Relaxed)
    }
    fn set(&self, log: u64, checkpoint: u64) {
        self.log.store(log.max(checkpoint), Ordering::Relaxed);
        self.checkpoint.store(checkpoint, Ordering::Relaxed);
    }
}

/// Applies the log to the read-model tables (see the module docs for the calling protocol).
pub struct Projector {
    store: PgEventStore,
    config: ProjectorConfig,
    checkpoint: u64,
    /// Positions below this are covered by existing `uc_postings` partitions.
    partitioned_to: u64,
    lag: Lag,
}

impl Projector {
    /// Reads the checkpoint (creating it at 0 the first time).
    pub async fn new(
        store: PgEventStore,
        config: ProjectorConfig,
    ) -> Result<Projector, ProjectionError> {
        // Runs the migrations if this store has not been used yet.
        EventStore::<LedgerEvent>::last_position(&store).await?;
        let client = store.pool().get().await.map_err(pool)?;
        client
            .execute(
                "INSERT INTO uc_projection_checkpoints (projection, position) VALUES ($1, 0) \
                 ON CONFLICT (projection) DO NOTHING",
                &[&config.name],
            )
            .await
            .map_err(db)?;
        let row = client
            .query_one(
                "SELECT position FROM uc_projection_checkpoints WHERE projection = $1",
                &[&config.name],
            )
            .await
            .map_err(db)?;
        let checkpoint = row.get::<_, i64>(0) as u64;
        let lag = Lag::default();
        lag.set(checkpoint, checkpoint);
        Ok(Projector {
            store,
            config,
            checkpoint,
            partitioned_to: 0,
            lag,
        })
    }

    /// The last position applied.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// A handle on the lag, for metrics.
    pub fn lag(&self) -> Lag {
        self.lag.clone()
    }

    /// Applies the next page, if any. Returns the number of events applied.
    pub async fn step(&mut self) -> Result<usize, ProjectionError> {
        let limit = self.config.page_events.clamp(1, PAGE_EVENTS_MAX);
        let events: Vec<Envelope<LedgerEvent>> =
            self.store.read_all(self.checkpoint, limit).await?;
        if events.is_empty() {
            let last = EventStore::<LedgerEvent>::last_position(&self.store).await?;
            self.lag.set(last, self.checkpoint);
            return Ok(0);
        }
        self.apply_page(&events).await?;
        if events.len() == limit {
            let last = EventStore::<LedgerEvent>::last_position(&self.store).await?;
            self.lag.set(last, self.checkpoint);
        } else {
            self.lag.set(self.checkpoint, self.checkpoint);
        }
        Ok(events.len())
    }

    /// Applies pages until the log's end as of the call (a rebuild, when the checkpoint is 0),
    /// printing a progress line to stderr every `progress_every`. Returns the events applied.
    pub async fn catch_up(&mut self) -> Result<u64, ProjectionError> {
        let target = EventStore::<LedgerEvent>::last_position(&self.store).await?;
        let started = Instant::now();
        let mut last_line = started;
        let from = self.checkpoint;
        while self.checkpoint < target {
            if self.step().await? == 0 {
                break;
            }
            if let Some(every) = self.config.progress_every {
                if last_line.elapsed() >= every {
                    last_line = Instant::now();
                    let done = self.checkpoint - from;
                    let secs = started.elapsed().as_secs_f64().max(1e-9);
                    eprintln!(
                        "projection {}: position {} of {} ({:.0} events/s, lag {})",
                        self.config.name,
                        self.checkpoint,
                        target,
                        done as f64 / secs,
                        self.lag.events()
                    );
                }
            }
        }
        Ok(self.checkpoint - from)
    }

    /// Catches up, then follows the log (notifications plus polling) until an error.
    pub async fn run(&mut self) -> Result<(), ProjectionError> {
        loop {
            self.catch_up().await?;
            EventStore::<LedgerEvent>::wait_for(&self.store, self.checkpoint).await?;
        }
    }

    /// Creates the `uc_postings` partitions up to one past the page's last position (DDL in a
    /// transaction of its own: idempotent, no part of the exactly-once write).
    async fn ensure_partitions(&mut self, last: u64) -> Result<(), ProjectionError> {
        let width = self.config.partition_positions.max(1);
        if last < self.partitioned_to {
            return Ok(());
        }
        let client = self.store.pool().get().await.map_err(pool)?;
        // One partition ahead, so the common page never waits on DDL.
        let upto = (last / width + 2) * width;
        let mut from = (last / width).saturating_sub(1) * width;
        if self.partitioned_to == 0 {
            from = 0;
        }
        let mut sql = String::new();
        while from < upto {
            // Positions start at 1; partition k holds [k·w, (k+1)·w).
            sql.push_str(&format!(
                "CREATE TABLE IF NOT EXISTS uc_postings_p{from} PARTITION OF uc_postings \
                 FOR VALUES FROM ({from}) TO ({});",
                from + width
            ));
            from += width;
        }
        client.batch_execute(&sql).await.map_err(db)?;
        self.partitioned_to = upto;
        Ok(())
    }

    async fn apply_page(
        &mut self,
        events: &[Envelope<LedgerEvent>],
    ) -> Result<(), ProjectionError> {
        let first = events.first().map_or(0, |e| e.position);
        let last = events.last().map_or(0, |e| e.position);
        if first != self.checkpoint + 1 {
            return Err(ProjectionError::Inconsistent(format!(
                "page starts at {first}, checkpoint is {}",
                self.checkpoint
            )));
        }
        self.ensure_partitions(last).await?;
        let mut client = self.store.pool().get().await.map_err(pool)?;
        let tx = client.transaction().await.map_err(db)?;
        // Fencing: the checkpoint row is locked for the whole page and must be where we left it.
        let row = tx
            .query_one(
                "SELECT position FROM uc_projection_checkpoints WHERE projection = $1 FOR UPDATE",
                &[&self.config.name],
            )
            .await
            .map_err(db)?;
        let actual = row.get::<_, i64>(0) as u64;
        if actual != self.checkpoint {
            return Err(ProjectionError::CheckpointMoved {
                name: self.config.name.clone(),
                expected: self.checkpoint,
                actual,
            });
        }
        let mut known = load_entries(&tx, &crate::rows::referenced_entries(events)).await?;
        let rows =
            PageRows::build(events, &mut known).map_err(|e| ProjectionError::Inconsistent(e.0))?;
        write_rows(&tx, &rows).await?;
        update_blocks(&tx, &rows, last as i64, self.config.block_changes.max(1)).await?;
        if let Some(p) = self.config.fail_before_checkpoint_at {
            if (first..=last).contains(&p) {
                // Dropping the transaction rolls it back: the rows above vanish with it.
                return Err(ProjectionError::Injected(p));
            }
        }
        tx.execute(
            "UPDATE uc_projection_checkpoints SET position = $2, updated_at = now() \
             WHERE projection = $1",
            &[&self.config.name, &(last as i64)],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.checkpoint = last;
        Ok(())
    }
}

/// The versions in force of `ids`, from `uc_entries`.
async fn load_entries(
    tx: &Transaction<'_>,
    ids: &[String],
) -> Result<HashMap<EntryId, EntryCur>, ProjectionError> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let rows = tx
        .query(
            "SELECT entry_id, version, kind, recorded_position, postings::text, \
                    hold_amount_minor, expires_at \
             FROM uc_entries WHERE entry_id = ANY($1) AND superseded_position IS NULL",
            &[&ids],
        )
        .await
        .map_err(db)?;
    for row in rows {
        let id: &str = row.get(0);
        let bad = |what: String| ProjectionError::Inconsistent(format!("entry {id}: {what}"));
        let postings: Vec<Posting> =
            serde_json::from_str(row.get(4)).map_err(|e| bad(e.to_string()))?;
        let kind = match row.get::<_, &str>(2) {
            "posted" => "posted",
            "reversal" => "reversal",
            "hold" => "hold",
            other => return Err(bad(format!("kind {other}"))),
        };
        let hold = match row.get::<_, Option<Minor>>(5) {
            Some(Minor(amount)) => {
                let expires = match row.get::<_, Option<i64>>(6) {
                    Some(t) => {
                        Some(Timestamp::from_micros(t).ok_or_else(|| bad("deadline".to_string()))?)
                    }
                    None => None,
                };
                Some((amount, expires))
            }
            None => None,
        };
        out.insert(
            id.parse().map_err(|_| bad("id".to_string()))?,
            EntryCur {
                version: row.get::<_, i32>(1) as u32,
                kind,
                position: row.get::<_, i64>(3) as u64,
                postings,
                hold,
            },
        );
    }
    Ok(out)
}

/// One binary COPY of `rows` into `table (columns)`.
async fn copy<'a, R>(
    tx: &Transaction<'_>,
    table: &str,
    columns: &str,
    types: &[Type],
    rows: &'a [R],
    fields: impl Fn(&'a R) -> Vec<Box<dyn ToSql + Sync + Send + 'a>>,
) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    let sink = tx
        .copy_in(&format!(
            "COPY {table} ({columns}) FROM STDIN (FORMAT binary)"
        ))
        .await
        .map_err(db)?;
    let writer = BinaryCopyInWriter::new(sink, types);
    let mut writer = std::pin::pin!(writer);
    for r in rows {
        let values = fields(r);
        let refs: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| &**v as &(dyn ToSql + Sync)).collect();
        writer.as_mut().write(&refs).await.map_err(db)?;
    }
    writer.finish().await.map_err(db)?;
    Ok(())
}

type Field<'a> = Box<dyn ToSql + Sync + Send + 'a>;

async fn write_rows(tx: &Transaction<'_>, rows: &PageRows) -> Result<(), ProjectionError> {
    use Type as T;
    // Close the versions this page supersedes first, so no new row ever overlaps an open one.
    supersede(tx, rows).await?;
    copy(
        tx,
        "uc_transactions",
        "position, recorded_at, event_type, entry_id",
        &[T::INT8, T::INT8, T::TEXT, T::TEXT],
        &rows.transactions,
        |r| -> Vec<Field<'_>> {
            vec![
                Box::new(r.position),
                Box::new(r.recorded_at),
                Box::new(r.event_type),
                Box::new(r.entry_id.as_deref()),
            ]
        },
    )
    .await?;
    copy(
        tx,
        "uc_accounts",
        "account_id, version, currency, kind, status, owner, branch, constraints, metadata, \
         valid_from, transaction_from, recorded_position, event_id",
        &[
            T::TEXT,
            T::INT8,
            T::TEXT,
            T::TEXT,
            T::TEXT,
            T::TEXT,
            T::TEXT,
            T::JSON,
            T::JSON,
            T::INT8,
            T::INT8,
            T::INT8,
            T::TEXT,
        ],
        &rows.openings,
        |r| -> Vec<Field<'_>> {
            vec![
                Box::new(r.account_id.as_str()),
                Box::new(r.version),
                Box::new(r.currency.as_str()),
                Box::new(kind_str(r.kind)),
                Box::new("open"),
                Box::new(r.owner.as_deref()),
                Box::new(r.branch.as_deref()),
                Box::new(Json(&r.constraints)),
                Box::new(Json(&r.metadata)),
                Box::new(r.valid_from),
                Box::new(r.recorded_at),
                Box::new(r.position),
                Box::new(r.event_id.as_str()),
            ]
        },
    )
    .await?;
    copy(
        tx,
        "uc_entries",
        "entry_id, version, kind, effective_at, postings, reversal_of, hold_amount_minor, \
         expires_at, correction_id, reason, cancelled, recorded_position, recorded_at, event_id, \
         superseded_position, superseded_at",
        &[
            T::TEXT,
            T::INT4,
            T::TEXT,
            T::INT8,
            T::JSON,
            T::TEXT,
            T::NUMERIC,
            T::INT8,
            T::TEXT,
            T::TEXT,
            T::BOOL,
            T::INT8,
            T::INT8,
            T::TEXT,
            T::INT8,
            T::INT8,
        ],
        &rows.entries,
        |r| -> Vec<Field<'_>> {
            vec![
                Box::new(r.entry_id.as_str()),
                Box::new(r.version),
                Box::new(r.kind),
                Box::new(r.effective_at),
                Box::new(Json(&r.postings)),
                Box::new(r.reversal_of.as_deref()),
                Box::new(r.hold_amount.map(Minor)),
                Box::new(r.expires_at),
                Box::new(r.correction_id.as_deref()),
                Box::new(r.reason.as_deref()),
                Box::new(r.cancelled),
                Box::new(r.position),
                Box::new(r.recorded_at),
                Box::new(r.event_id.as_str()),
                Box::new(r.superseded.map(|s| s.0)),
                Box::new(r.superseded.map(|s| s.1)),
            ]
        },
    )
    .await?;
    copy(
        tx,
        "uc_postings",
        "recorded_position, leg, account_id, entry_id, entry_version, role, direction, pending, \
         amount_minor, currency, effective_at, recorded_at, superseded_position, superseded_at",
        &[
            T::INT8,
            T::INT2,
            T::TEXT,
            T::TEXT,
            T::INT4,
            T::TEXT,
            T::TEXT,
            T::BOOL,
            T::NUMERIC,
            T::TEXT,
            T::INT8,
            T::INT8,
            T::INT8,
            T::INT8,
        ],
        &rows.postings,
        |r| -> Vec<Field<'_>> {
            vec![
                Box::new(r.position),
                Box::new(r.leg),
                Box::new(r.account_id.as_str()),
                Box::new(r.entry_id.as_str()),
                Box::new(r.entry_version),
                Box::new(r.role),
                Box::new(direction_str(r.direction)),
                Box::new(r.pending),
                Box::new(Minor(r.amount)),
                Box::new(r.currency.as_str()),
                Box::new(r.effective_at),
                Box::new(r.recorded_at),
                Box::new(r.superseded.map(|s| s.0)),
                Box::new(r.superseded.map(|s| s.1)),
            ]
        },
    )
    .await?;
    for c in &rows.account_changes {
        account_change(tx, c).await?;
    }
    Ok(())
}

/// Closes the transaction periods of rows of earlier pages that this page supersedes: one
/// statement per table, and each row must be open (superseded once, never twice).
async fn supersede(tx: &Transaction<'_>, rows: &PageRows) -> Result<(), ProjectionError> {
    if !rows.superseded_postings.is_empty() {
        let s = &rows.superseded_postings;
        let rp: Vec<i64> = s.iter().map(|x| x.recorded_position).collect();
        let role: Vec<&str> = s.iter().map(|x| x.role).collect();
        let p: Vec<i64> = s.iter().map(|x| x.position).collect();
        let at: Vec<i64> = s.iter().map(|x| x.recorded_at).collect();
        tx.execute(
            "UPDATE uc_postings t SET superseded_position = u.p, superseded_at = u.at \
             FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) AS u(rp, role, p, at) \
             WHERE t.recorded_position = u.rp AND t.role = u.role \
               AND t.superseded_position IS NULL",
            &[&rp, &role, &p, &at],
        )
        .await
        .map_err(db)?;
    }
    if !rows.superseded_entries.is_empty() {
        let s = &rows.superseded_entries;
        let id: Vec<&str> = s.iter().map(|x| x.entry_id.as_str()).collect();
        let v: Vec<i32> = s.iter().map(|x| x.version).collect();
        let p: Vec<i64> = s.iter().map(|x| x.position).collect();
        let at: Vec<i64> = s.iter().map(|x| x.recorded_at).collect();
        let n = tx
            .execute(
                "UPDATE uc_entries t SET superseded_position = u.p, superseded_at = u.at \
                 FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[]) AS u(id, v, p, at) \
                 WHERE t.entry_id = u.id AND t.version = u.v AND t.superseded_position IS NULL",
                &[&id, &v, &p, &at],
            )
            .await
            .map_err(db)?;
        if n as usize != s.len() {
            return Err(ProjectionError::Inconsistent(format!(
                "{} entry versions to supersede, {n} found open",
                s.len()
            )));
        }
    }
    Ok(())
}

/// A status or metadata change at valid time t: every row of the account in force now whose
/// valid period reaches t or later is closed in transaction time and replaced by its part
/// before t (unchanged) and its part from t on (changed).
async fn account_change(
    tx: &Transaction<'_>,
    c: &crate::rows::AccountChange,
) -> Result<(), ProjectionError> {
    let status = c.status.map(status_str);
    let metadata = c.metadata.as_ref().map(Json);
    tx.execute(
        "WITH closed AS ( \
           UPDATE uc_accounts SET transaction_to = $5, superseded_position = $4 \
           WHERE account_id = $1 AND superseded_position IS NULL \
             AND (valid_to IS NULL OR valid_to > $3) \
           RETURNING * ) \
         INSERT INTO uc_accounts (account_id, version, currency, kind, status, owner, branch, \
             constraints, metadata, valid_from, valid_to, transaction_from, recorded_position, event_id) \
         SELECT account_id, $2::bigint, currency, kind, status, owner, branch, constraints, \
                metadata, valid_from, $3::bigint, $5::bigint, $4::bigint, $8::text \
         FROM closed WHERE valid_from < $3 \
         UNION ALL \
         SELECT account_id, $2::bigint, currency, kind, coalesce($6::text, status), owner, branch, \
                constraints, coalesce($7::json, metadata), greatest(valid_from, $3::bigint), \
                valid_to, $5::bigint, $4::bigint, $8::text FROM closed",
        &[
            &c.account_id,
            &c.version,
            &c.valid_at,
            &c.position,
            &c.recorded_at,
            &status,
            &metadata,
            &c.event_id,
        ],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// One row's deltas, `(posted, pending_debit, pending_credit)`, from `uc_postings` alias `p`.
pub(crate) const ROW_POSTED: &str =
    "CASE WHEN p.pending THEN 0 WHEN p.direction = 'credit' THEN p.amount_minor ELSE -p.amount_minor END";
pub(crate) const ROW_PENDING_DEBIT: &str =
    "CASE WHEN p.pending AND p.direction = 'debit' THEN p.amount_minor ELSE 0 END";
pub(crate) const ROW_PENDING_CREDIT: &str =
    "CASE WHEN p.pending AND p.direction = 'credit' THEN p.amount_minor ELSE 0 END";

/// Counts the page's changes per account and summarises every account whose open changes
/// reached `block_changes` as a level-0 block ending at the page's last position; every
/// [`BLOCK_FANOUT`]-th block of a level also completes a block of the level above.
async fn update_blocks(
    tx: &Transaction<'_>,
    rows: &PageRows,
    last: i64,
    block_changes: i64,
) -> Result<(), ProjectionError> {
    if rows.changes_per_account.is_empty() {
        return Ok(());
    }
    let mut accounts: Vec<(&String, &i64)> = rows.changes_per_account.iter().collect();
    // A fixed order: concurrent pages never run in one schema, but it keeps plans and locks
    // predictable.
    accounts.sort_unstable();
    let ids: Vec<&str> = accounts.iter().map(|(a, _)| a.as_str()).collect();
    let counts: Vec<i64> = accounts.iter().map(|(_, n)| **n).collect();
    let heads = tx
        .query(
            "INSERT INTO uc_balance_heads AS h (account_id, open_from, open_changes, blocks) \
             SELECT a, 0, n, 0 FROM unnest($1::text[], $2::bigint[]) AS u(a, n) \
             ON CONFLICT (account_id) DO UPDATE SET open_changes = h.open_changes + excluded.open_changes \
             RETURNING account_id, open_from, open_changes, blocks",
            &[&ids, &counts],
        )
        .await
        .map_err(db)?;
    let mut closing: Vec<(String, i16, i64, i64, i64)> = Vec::new();
    let mut upper: Vec<(String, i16, i64, i64)> = Vec::new();
    for h in &heads {
        let (account, open_from, open, blocks): (String, i64, i64, i64) =
            (h.get(0), h.get(1), h.get(2), h.get(3));
        if open < block_changes || open_from >= last {
            continue;
        }
        closing.push((account.clone(), 0, blocks, open_from, last));
        let done = blocks + 1;
        let mut size = 1i64;
        for level in 1..=BLOCK_LEVEL_TOP {
            size *= BLOCK_FANOUT;
            if done % size != 0 {
                break;
            }
            let block = done / size - 1;
            // Its first level-0 block.
            upper.push((account.clone(), level as i16, block, block * size));
        }
    }
    if closing.is_empty() {
        return Ok(());
    }
    insert_blocks(tx, &closing).await?;
    let ids: Vec<&str> = closing.iter().map(|c| c.0.as_str()).collect();
    tx.execute(
        "UPDATE uc_balance_heads SET open_from = $2, open_changes = 0, blocks = blocks + 1 \
         WHERE account_id = ANY($1)",
        &[&ids, &last],
    )
    .await
    .map_err(db)?;
    if !upper.is_empty() {
        let a: Vec<&str> = upper.iter().map(|u| u.0.as_str()).collect();
        let l: Vec<i16> = upper.iter().map(|u| u.1).collect();
        let b: Vec<i64> = upper.iter().map(|u| u.2).collect();
        let b0: Vec<i64> = upper.iter().map(|u| u.3).collect();
        let firsts = tx
            .query(
                "SELECT u.a, u.l, u.b, k.first_position \
                 FROM unnest($1::text[], $2::smallint[], $3::bigint[], $4::bigint[]) AS u(a, l, b, b0) \
                 JOIN uc_balance_blocks k ON k.account_id = u.a AND k.level = 0 AND k.block = u.b0",
                &[&a, &l, &b, &b0],
            )
            .await
            .map_err(db)?;
        if firsts.len() != upper.len() {
            return Err(ProjectionError::Inconsistent(
                "a level-0 block below an upper block is missing".into(),
            ));
        }
        let blocks: Vec<(String, i16, i64, i64, i64)> = firsts
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), last))
            .collect();
        insert_blocks(tx, &blocks).await?;
    }
    Ok(())
}

/// Inserts blocks `(account, level, block, first_position, last_position)` and their sums,
/// computed from the posting rows recorded (+) and superseded (−) in each block's range.
async fn insert_blocks(
    tx: &Transaction<'_>,
    blocks: &[(String, i16, i64, i64, i64)],
) -> Result<(), ProjectionError> {
    let a: Vec<&str> = blocks.iter().map(|b| b.0.as_str()).collect();
    let l: Vec<i16> = blocks.iter().map(|b| b.1).collect();
    let k: Vec<i64> = blocks.iter().map(|b| b.2).collect();
    let f: Vec<i64> = blocks.iter().map(|b| b.3).collect();
    let t: Vec<i64> = blocks.iter().map(|b| b.4).collect();
    tx.execute(
        "INSERT INTO uc_balance_blocks (account_id, level, block, first_position, last_position) \
         SELECT * FROM unnest($1::text[], $2::smallint[], $3::bigint[], $4::bigint[], $5::bigint[])",
        &[&a, &l, &k, &f, &t],
    )
    .await
    .map_err(db)?;
    let sql = format!(
        "INSERT INTO uc_balance_sums (account_id, level, block, effective_at, posted, pending_debit, pending_credit) \
         SELECT b.a, b.l, b.k, d.eff, sum(sum(d.po)) OVER w, sum(sum(d.pd)) OVER w, sum(sum(d.pc)) OVER w \
         FROM unnest($1::text[], $2::smallint[], $3::bigint[], $4::bigint[], $5::bigint[]) AS b(a, l, k, f, t) \
         CROSS JOIN LATERAL ( \
           SELECT p.effective_at, {po}, {pd}, {pc} FROM uc_postings p \
            WHERE p.account_id = b.a AND p.recorded_position > b.f AND p.recorded_position <= b.t \
           UNION ALL \
           SELECT p.effective_at, -({po}), -({pd}), -({pc}) FROM uc_postings p \
            WHERE p.account_id = b.a AND p.superseded_position > b.f AND p.superseded_position <= b.t \
         ) AS d(eff, po, pd, pc) \
         GROUP BY b.a, b.l, b.k, d.eff \
         WINDOW w AS (PARTITION BY b.a, b.l, b.k ORDER BY d.eff)",
        po = ROW_POSTED,
        pd = ROW_PENDING_DEBIT,
        pc = ROW_PENDING_CREDIT
    );
    tx.execute(&sql, &[&a, &l, &k, &f, &t]).await.map_err(db)?;
    Ok(())
}
