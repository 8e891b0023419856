//! Errors of the adapter, and the one place where PostgreSQL errors become core's
//! `StoreError`s: by SQLSTATE, never by message text.

use tokio_postgres::error::SqlState;
use ultracore_core::store::StoreError;

/// What can go wrong setting the adapter up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// PostgreSQL refused or could not be reached.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The pool could not be built or hand out a connection.
    #[error("connection pool: {0}")]
    Pool(String),
    /// A migration failed.
    #[error("migration: {0}")]
    Migration(String),
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> StoreError {
        match e {
            PgError::Postgres(e) => unavailable(&e),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// Whether the error is a transient conflict of concurrent transactions (serialization
/// failure or deadlock): the whole transaction may be retried.
pub(crate) fn is_retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// Whether the error is a unique violation, and of which constraint.
pub(crate) fn unique_violation(e: &tokio_postgres::Error) -> Option<String> {
    let db = e.as_db_error()?;
    (*db.code() == SqlState::UNIQUE_VIOLATION).then(|| db.constraint().unwrap_or("").to_string())
}

/// Everything else PostgreSQL says is "unavailable": the operation may be retried later and
/// the outcome of an interrupted append is unknown (the engine reads before retrying).
pub(crate) fn unavailable(e: &tokio_postgres::Error) -> StoreError {
    let code = e.code().map_or("none", |c| c.code());
    StoreError::Unavailable(format!("postgres (SQLSTATE {code}): {e}"))
}

pub(crate) fn pool(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => unavailable(&e),
        other => StoreError::Unavailable(format!("connection pool: {other}")),
    }
}
