//! The SQL read model behind the read endpoints (`ULTRACORE_READ_MODEL=postgres`): a
//! `Projector` that follows the PostgreSQL log in the background, and the routing of
//! `GET /v1/accounts/{id}/{balance,statement,restatement}` to `ReadModel`.
//!
//! Which answers come from SQL: every one whose basis the projection has reached. The handler
//! resolves `known_at` to a log position on the engine's in-memory ledger (`Ledger::basis`, a
//! binary search under the state lock: the same basis the in-memory answer would use, so
//! `now` means the engine's last position), waits up to [`PROJECTION_WAIT`] for the projector's
//! checkpoint to reach it (not at all when it is more than [`PROJECTION_WAIT_EVENTS_MAX`]
//! events behind), and then asks `ReadModel` at exactly that position. The sums,
//! statement lines and restatement diffs are then computed by PostgreSQL, not under the
//! engine's lock. Past the wait (projection lagging or PostgreSQL unreachable) the answer
//! comes from memory instead, so it is never stale and never wrong; the response header
//! `x-ultracore-read-source` says which (`sql` or `memory`), and
//! `ultracore_read_model_fallbacks` counts the memory answers.
//!
//! Metrics: `ultracore_read_model_lag_events` (log's last position − checkpoint, as last seen by
//! the projector) and `ultracore_read_model_lag_seconds` (how long the projection has been
//! behind the log; 0 when caught up).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderName;
use tokio::sync::watch;
use ultracore_core::ids::AccountId;
use ultracore_core::ledger::{BalanceView, Basis, KnownAt, Restatement, Statement};
use ultracore_core::store::{EventStore, StoreError};
use ultracore_core::time::Timestamp;
use ultracore_postgres::{PgEventStore, Projector, ProjectorConfig, ReadError, ReadModel};

use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::AppState;

/// Longest a read waits for the projection to reach its basis before answering from memory.
pub const PROJECTION_WAIT: Duration = Duration::from_secs(1);
/// A read whose basis is more than this many events past the checkpoint does not wait: one
/// page of the projector's default size, which it applies in well under `PROJECTION_WAIT`
/// (~10 K events/s measured, BENCHMARKS.md); further behind, the wait would mostly end in a
/// memory answer anyway, one second later.
pub const PROJECTION_WAIT_EVENTS_MAX: u64 = 2_000;
/// Pause after a projector failure (PostgreSQL down, fenced by another projector) before the
/// projector is rebuilt from the stored checkpoint.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// Longest the follower sleeps without refreshing the lag metrics.
const METRICS_REFRESH: Duration = Duration::from_secs(1);
/// The projection's checkpoint name (shared by every server on the schema: the checkpoint
/// is written in the same transaction as the rows, so whichever server applies a page first
/// wins and the others are fenced and re-read it).
pub const PROJECTION: &str = "ledger";

/// The response header naming where an answer came from.
pub const SOURCE_HEADER: HeaderName = HeaderName::from_static("x-ultracore-read-source");

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `ReadModel` (PostgreSQL).
    Sql,
    /// The engine's in-memory ledger.
    Memory,
}

impl Source {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Sql => "sql",
            Source::Memory => "memory",
        }
    }
}

/// The read model and the projector that keeps it current (the projector stops when this is
/// dropped).
pub struct SqlReads {
    model: ReadModel,
    checkpoint: watch::Receiver<u64>,
    metrics: Arc<Metrics>,
    follower: tokio::task::JoinHandle<()>,
}

impl Drop for SqlReads {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl SqlReads {
    /// Starts the projector on the schema of `config` (its own connection pool, so reads and
    /// projection never wait for the engine's connections). Must run inside a Tokio runtime.
    pub fn start(config: &Config, metrics: Arc<Metrics>) -> Result<SqlReads, StoreError> {
        let url = config.postgres_url.as_deref().ok_or_else(|| {
            StoreError::Unavailable("read model is postgres but no URL is configured".into())
        })?;
        let store = config
            .postgres_config(url)
            .and_then(PgEventStore::lazy)
            .map_err(StoreError::from)?;
        let model = ReadModel::new(&store, PROJECTION);
        let (tx, checkpoint) = watch::channel(0);
        let follower = tokio::spawn(follow(store, tx, metrics.clone()));
        Ok(SqlReads {
            model,
            checkpoint,
            metrics,
            follower,
        })
    }

    /// Whether the projection has applied the log up to `position`, waiting up to
    /// [`PROJECTION_WAIT`].
    async fn reached(&self, position: u64) -> bool {
        let mut rx = self.checkpoint.clone();
        // Far behind (a burst of writes): memory answers at once rather than after the wait.
        if position.saturating_sub(*rx.borrow()) > PROJECTION_WAIT_EVENTS_MAX {
            return false;
        }
        let reached = tokio::time::timeout(PROJECTION_WAIT, async {
            rx.wait_for(|&c| c >= position).await.is_ok()
        });
        reached.await.unwrap_or(false)
    }

    /// The bases `known_at` resolve to on the engine, if the projection reaches them in
    /// time; `None` when memory must answer instead (counted as a fallback only when the
    /// projection was too slow: a basis the engine refuses is the in-memory query's error to
    /// give, in its own order of checks).
    async fn ready_at(&self, state: &AppState, known_at: &[KnownAt]) -> Option<Vec<Basis>> {
        let bases = state
            .engine
            .read(|l| {
                known_at
                    .iter()
                    .map(|k| l.basis(*k))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .ok()?;
        let last = bases.iter().map(|b| b.position).max().unwrap_or(0);
        if self.reached(last).await {
            Some(bases)
        } else {
            self.metrics.read_model_fallbacks.inc();
            None
        }
    }

    /// `ReadModel`'s answer, or `None` (counted) when memory must answer instead.
    fn settle<T>(&self, r: Result<T, ReadError>) -> Result<Option<T>, ApiError> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(ReadError::Query(q)) => Err(q.into()),
            Err(e) => {
                tracing::warn!(error = %e, "read model failed; answering from memory");
                self.metrics.read_model_fallbacks.inc();
                Ok(None)
            }
        }
    }
}

/// Follows the log forever: builds a projector from the stored checkpoint, applies pages as
/// they come, publishes the checkpoint and the lag; after any failure waits and starts over.
async fn follow(store: PgEventStore, tx: watch::Sender<u64>, metrics: Arc<Metrics>) {
    let behind_since = Mutex::new(None::<Instant>);
    let publish = |events: u64, checkpoint: u64| {
        let mut since = behind_since.lock().unwrap_or_else(|p| p.into_inner());
        let seconds = match (events, *since) {
            (0, _) => {
                *since = None;
                0.0
            }
            (_, Some(t)) => t.elapsed().as_secs_f64(),
            (_, None) => {
                *since = Some(Instant::now());
                0.0
            }
        };
        metrics
            .read_model_lag_events
            .set(i64::try_from(events).unwrap_or(i64::MAX));
        metrics.read_model_lag_seconds.set(seconds);
        tx.send_if_modified(|c| std::mem::replace(c, checkpoint) != checkpoint);
    };
    loop {
        let config = ProjectorConfig {
            name: PROJECTION.into(),
            progress_every: None,
            ..ProjectorConfig::default()
        };
        let mut projector = match Projector::new(store.clone(), config).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "read model: projector cannot start; retrying");
                // The log's end is unknown: keep the last lag seen (at least 1, so the
                // seconds keep counting).
                let checkpoint = *tx.borrow();
                publish(1.max(metrics_lag(&metrics)), checkpoint);
                tokio::time::sleep(RETRY_AFTER_FAILURE).await;
                continue;
            }
        };
        loop {
            let lag = projector.lag();
            match projector.step().await {
                Ok(n) => {
                    publish(lag.events(), projector.checkpoint());
                    if n == 0 {
                        let wait = EventStore::<ultracore_core::ledger::LedgerEvent>::wait_for(
                            &store,
                            projector.checkpoint(),
                        );
                        let _ = tokio::time::timeout(METRICS_REFRESH, wait).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "read model: projection failed; restarting");
                    publish(1.max(lag.events()), projector.checkpoint());
                    tokio::time::sleep(RETRY_AFTER_FAILURE).await;
                    break;
                }
            }
        }
    }
}

fn metrics_lag(metrics: &Metrics) -> u64 {
    u64::try_from(metrics.read_model_lag_events.get()).unwrap_or(0)
}

/// `balance` from SQL when the projection has reached its basis, else `None`.
pub async fn balance(
    state: &AppState,
    id: &AccountId,
    valid_at: Timestamp,
    known_at: KnownAt,
) -> Result<Option<BalanceView>, ApiError> {
    let Some(reads) = state.sql_reads.as_deref() else {
        return Ok(None);
    };
    let Some(bases) = reads.ready_at(state, &[known_at]).await else {
        return Ok(None);
    };
    let at = KnownAt::Position(bases[0].position);
    reads.settle(reads.model.balance(id, valid_at, at).await)
}

/// `statement` from SQL when the projection has reached its basis, else `None`. `from`
/// defaults to the account's opening as the engine knows it (as the in-memory handler does).
pub async fn statement(
    state: &AppState,
    id: &AccountId,
    from: Option<Timestamp>,
    to: Timestamp,
    known_at: KnownAt,
) -> Result<Option<Statement>, ApiError> {
    let Some(reads) = state.sql_reads.as_deref() else {
        return Ok(None);
    };
    let Some(bases) = reads.ready_at(state, &[known_at]).await else {
        return Ok(None);
    };
    let from = match from {
        Some(f) => f,
        None => state
            .engine
            .read(|l| l.account(id).map(|a| a.opened_at.0))
            .await
            .unwrap_or(Timestamp::EPOCH),
    };
    let at = KnownAt::Position(bases[0].position);
    reads.settle(reads.model.statement(id, from, to, at).await)
}

/// `restatement` from SQL when the projection has reached both bases, else `None`.
pub async fn restatement(
    state: &AppState,
    id: &AccountId,
    (from, to): (Timestamp, Timestamp),
    k1: KnownAt,
    k2: KnownAt,
) -> Result<Option<Restatement>, ApiError> {
    let Some(reads) = state.sql_reads.as_deref() else {
        return Ok(None);
    };
    let Some(bases) = reads.ready_at(state, &[k1, k2]).await else {
        return Ok(None);
    };
    let (p1, p2) = (bases[0].position, bases[1].position);
    let r = reads
        .model
        .restatement(id, from, to, KnownAt::Position(p1), KnownAt::Position(p2))
        .await;
    reads.settle(r)
}
