//! # ultracore-postgres
//!
//! UltraCore's PostgreSQL adapter. Today: [`PgEventStore`], an
//! [`EventStore`](ultracore_core::store::EventStore) on `tokio-postgres` + `deadpool-postgres`
//! with a commit-ordered, gapless global position, and [`PgSnapshotStore`]; both live in one
//! schema whose tables are created by embedded, versioned migrations ([`migrate`]).
//! The query side: [`Projector`] applies the log to bitemporal read-model tables (accounts,
//! entries, postings with valid and transaction periods; migration V2) with its checkpoint in
//! the same transaction, and [`ReadModel`] answers core's balance, statement and restatement
//! questions from them in SQL.
//!
//! ## How an append works
//! One transaction per engine batch: take a transaction-scoped advisory lock (one writer at a
//! time per schema), read the last position and the versions of the batch's streams, check
//! the batch with core's [`validate_batch`](ultracore_core::store::validate_batch) (the same
//! rules as every other store), insert every event with one multi-row `INSERT … SELECT FROM
//! UNNEST(…)`, `pg_notify` followers, commit. The batch's `expected_position` is the fencing
//! token: a writer that was paused while another appended is refused with
//! `StoreError::PositionConflict`, so two processes writing the same accounts never both
//! spend the same money (the engine rebuilds and its callers retry).
//!
//! **Architecture invariant:** positions are assigned under the lock and become visible
//! before the lock is released, so they are gapless and visible in order; a follower reading
//! `position > last_seen` can never skip an event that commits late (the sequence-gap problem
//! of `bigserial` logs).
//!
//! Conflicts are recognised by SQLSTATE (`23505` unique violation, `40001`/`40P01`), never by
//! message text.
//!
//! ## Example
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use ultracore_core::engine::{Engine, EngineConfig};
//! use ultracore_core::time::{Clock, Timestamp};
//! use ultracore_postgres::{PgConfig, PgEventStore};
//!
//! /// The wall clock (the core never reads it itself).
//! struct WallClock;
//! impl Clock for WallClock {
//!     fn now(&self) -> Timestamp {
//!         let micros = std::time::SystemTime::now()
//!             .duration_since(std::time::UNIX_EPOCH)
//!             .map_or(0, |d| d.as_micros() as i64);
//!         Timestamp::from_micros(micros).unwrap_or(Timestamp::MIN)
//!     }
//! }
//!
//! let config = PgConfig::new("postgres://postgres@127.0.0.1:5432/postgres", "ultracore")?;
//! let store = PgEventStore::connect(config).await?; // runs pending migrations
//! let engine = Engine::open(store, Arc::new(WallClock), EngineConfig::default()).await?;
//! # let _ = engine; Ok(()) }
//! ```
#![warn(missing_docs)]

mod error;
mod follow;
mod numeric;
mod projector;
mod read_model;
mod rows;
mod snapshots;
mod store;
mod tls;

use std::time::Duration;

pub use error::PgError;
pub use numeric::Minor;
pub use projector::{
    Lag, ProjectionError, Projector, ProjectorConfig, BLOCK_CHANGES, BLOCK_FANOUT, BLOCK_LEVEL_TOP,
    PAGE_EVENTS_MAX,
};
pub use read_model::{ReadError, ReadModel};
pub use snapshots::PgSnapshotStore;
pub use store::PgEventStore;
pub use tls::Connector;

/// Longest schema name accepted (PostgreSQL identifiers hold 63 bytes; the notification
/// channel adds a suffix).
pub const SCHEMA_LEN_MAX: usize = 48;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct PgConfig {
    /// A libpq-style URL or key=value string, e.g. `postgres://postgres@127.0.0.1:5432/db`.
    pub url: String,
    /// Schema holding UltraCore's tables (created if missing): `[a-z_][a-z0-9_]*`.
    pub schema: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// `statement_timeout` of every connection: a statement that runs longer is cancelled and
    /// reported as unavailable, instead of holding the writer's lock forever.
    pub statement_timeout: Duration,
    /// How often a follower re-reads the log when no notification arrives (notifications
    /// can be lost when the listening connection drops).
    pub poll_interval: Duration,
    /// For tests: a pause between writing a batch and committing it (holding the append
    /// lock), to model a slow writer. Zero in production.
    #[doc(hidden)]
    pub commit_delay: Duration,
    /// Plain or TLS connections (default plain; see [`Connector::tls`]). Every connection of
    /// the store, its follower and the migrations uses it.
    pub connector: Connector,
}

impl PgConfig {
    /// A configuration with defaults (pool of 8, 30 s statement timeout, 1 s poll).
    pub fn new(url: &str, schema: &str) -> Result<PgConfig, PgError> {
        let valid = !schema.is_empty()
            && schema.len() <= SCHEMA_LEN_MAX
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(PgError::Config(format!(
                "schema name {schema:?}: use 1 to {SCHEMA_LEN_MAX} characters of [a-z0-9_], not starting with a digit"
            )));
        }
        Ok(PgConfig {
            url: url.to_string(),
            schema: schema.to_string(),
            pool_size: 8,
            statement_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            commit_delay: Duration::ZERO,
            connector: Connector::plain(),
        })
    }

    /// The `tokio-postgres` configuration: the URL plus `search_path` and
    /// `statement_timeout` for every session.
    pub(crate) fn pg(&self) -> Result<tokio_postgres::Config, PgError> {
        let mut c: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|e| PgError::Config(format!("database URL: {e}")))?;
        c.options(format!(
            "-c search_path={} -c statement_timeout={}",
            self.schema,
            self.statement_timeout.as_millis()
        ));
        c.application_name("ultracore");
        self.connector.apply(&mut c);
        Ok(c)
    }

    /// The notification channel followers listen on.
    pub(crate) fn channel(&self) -> String {
        format!("{}_events", self.schema)
    }
}

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Creates the schema if needed and applies every pending migration, holding a
/// session-level advisory lock so concurrent starters do not race. Returns the versions
/// applied now (empty when up to date).
pub async fn migrate(config: &PgConfig) -> Result<Vec<u32>, PgError> {
    let (mut client, conn) = config.pg()?.connect(config.connector.clone()).await?;
    let task = tokio::spawn(conn);
    let result = async {
        client
            .batch_execute(&format!(
                "SELECT pg_advisory_lock({MIGRATION_LOCK}); CREATE SCHEMA IF NOT EXISTS {}",
                config.schema
            ))
            .await?;
        let report = embedded::migrations::runner()
            .set_migration_table_name("uc_schema_history")
            .run_async(&mut client)
            .await
            .map_err(|e| PgError::Migration(e.to_string()));
        client
            .batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
            .await?;
        Ok::<_, PgError>(
            report?
                .applied_migrations()
                .iter()
                .map(|m| m.version())
                .collect(),
        )
    }
    .await;
    drop(client);
    let _ = task.await;
    result
}

/// Advisory lock key of migrations (any constant unlikely to collide with an application's).
const MIGRATION_LOCK: i64 = 0x5543_4d49_4752_4154; // "UCMIGRAT"
