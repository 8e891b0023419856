//! `AppState`: what every handler shares (engine, keys, audit log, metrics, rate limiter), and
//! how it is built from a `Config`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ultracore_core::engine::{Engine, EngineConfig, EngineError, OpenedFrom};
use ultracore_core::ledger::{Ledger, LedgerConfig};
use ultracore_journal::{DirLock, FileSnapshotStore, LOCK_FILE};

use crate::auth::audit::{AuditError, AuditLog, ChainEnd};
use crate::auth::jwt::JwtKeys;
use crate::auth::rate::RateLimiter;
use crate::config::{Config, ConfigError, StoreKind};
use crate::metrics::Metrics;
use crate::store::{open_stores, ServerStore, Stores};
use crate::util::SystemClock;

/// The engine the server runs.
pub type ServerEngine = Engine<ServerStore>;

/// Shared state of the ledger listener.
#[derive(Clone)]
pub struct AppState {
    /// The ledger engine.
    pub engine: Arc<ServerEngine>,
    /// JWT keys.
    pub keys: Arc<JwtKeys>,
    /// Audit log writer.
    pub audit: AuditLog,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Per-principal rate limit.
    pub limiter: Arc<RateLimiter>,
    /// False once shutdown has begun (readiness).
    pub ready: Arc<AtomicBool>,
    /// Snapshot store, if the backend has one.
    pub snapshots: Option<Arc<dyn ultracore_core::store::SnapshotStore>>,
    /// Owner and branch of accounts already seen (for authorisation without the state lock).
    pub attrs: Arc<crate::routes::AttrCache>,
    /// The store's start-up checkpoint, written next to each snapshot.
    pub index_checkpoint: Option<crate::store::IndexCheckpoint>,
    /// Which sensitive actions need an MFA token.
    pub mfa: Arc<crate::auth::mfa::MfaPolicy>,
    /// The SQL read model and its projector, when `read_model = "postgres"`.
    pub sql_reads: Option<Arc<crate::read_model::SqlReads>>,
    /// The data directory's lock, held as long as any clone of the state lives.
    pub data_lock: Arc<DirLock>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Audit log.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// Store or replay.
    #[error("opening the ledger: {0}")]
    Engine(#[from] EngineError),
    /// Store construction.
    #[error("opening the store: {0}")]
    Store(#[from] ultracore_core::store::StoreError),
    /// Another process serves from the same data directory.
    #[error("data directory {} is in use by another ultracore process{}", dir.display(), holder.map(|p| format!(" (PID {p})")).unwrap_or_default())]
    DataDirLocked {
        /// The data directory.
        dir: std::path::PathBuf,
        /// The holder's process id, if it recorded one.
        holder: Option<u32>,
    },
    /// The data directory or its lock file could not be opened.
    #[error("data directory {}: {source}", dir.display())]
    DataDir {
        /// The data directory.
        dir: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Takes the exclusive lock on `<data_dir>/LOCK` (creating the directory if needed), held for
/// the life of the state: the audit log, snapshots and the journal in it have one writer,
/// whatever the store.
fn lock_data_dir(config: &Config) -> Result<Arc<DirLock>, StartError> {
    let dir = config.data_dir.clone();
    let io = |source| StartError::DataDir {
        dir: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    match DirLock::try_file(&dir.join(LOCK_FILE)).map_err(io)? {
        Ok(lock) => Ok(Arc::new(lock)),
        Err(holder) => Err(StartError::DataDirLocked { dir, holder }),
    }
}

/// What start-up found, for the operator.
#[derive(Debug)]
pub struct Startup {
    /// Where the engine started from.
    pub opened: OpenedFrom,
    /// The audit chain as found (records, torn tail).
    pub audit: ChainEnd,
    /// Whether the store survives restarts.
    pub durable: bool,
}

/// The engine's settings: a secret hash seed (ids come from untrusted clients, so the seed
/// keeps hash flooding out), log 0.
fn engine_config() -> EngineConfig {
    EngineConfig {
        ledger: LedgerConfig {
            hash_seed: u64::from_le_bytes(crate::util::random_bytes::<8>()),
            ..LedgerConfig::default()
        },
        log_id: 0,
    }
}

impl AppState {
    /// Opens the stores, the engine (from a snapshot when there is a usable one), the audit
    /// log and the keys.
    ///
    /// On the journal, the ledger snapshot loads and decodes on a blocking thread while this
    /// one opens (recovers) the journal: the two longest parts of a restart overlap.
    pub async fn build(config: &Config) -> Result<(AppState, Startup), StartError> {
        /// The most events of room set aside for the log's tail at start-up.
        const TAIL_ROOM_MAX: usize = 8_000_000;
        let data_lock = lock_data_dir(config)?;
        let engine_config = engine_config();
        let preload = match config.store {
            StoreKind::Journal => {
                let dir = config.data_dir.join("snapshots");
                let for_decode = engine_config.clone();
                // The log's tail after the last snapshot is at most about a snapshot interval
                // (plus what came in while the next one was being taken): room for twice that.
                let tail = usize::try_from(config.snapshot_every_events.saturating_mul(2))
                    .unwrap_or(0)
                    .min(TAIL_ROOM_MAX);
                let runtime = tokio::runtime::Handle::current();
                Some(tokio::task::spawn_blocking(move || {
                    let started = Instant::now();
                    let snaps = FileSnapshotStore::open(dir).ok()?;
                    let ledger = runtime.block_on(
                        Engine::<ServerStore>::load_snapshot_with_room(&snaps, &for_decode, tail),
                    )?;
                    tracing::info!(
                        position = ledger.position(),
                        ms = started.elapsed().as_millis() as u64,
                        "start-up: ledger snapshot loaded and decoded"
                    );
                    Some(ledger)
                }))
            }
            _ => None,
        };
        // The audit log verifies its whole chain when it opens (~3 µs per record): also
        // alongside the journal's recovery.
        let audit_path = config.audit_path();
        let audit = tokio::task::spawn_blocking(move || AuditLog::open(&audit_path));
        let started = Instant::now();
        let stores = open_stores(config)?;
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "start-up: event store opened"
        );
        let audit = audit
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        let snapshot = match preload {
            // A decoder that panicked is no worse than no snapshot: replay.
            Some(task) => Some(task.await.ok().flatten()),
            None => None,
        };
        Self::build_with(
            config,
            stores,
            engine_config,
            snapshot,
            data_lock,
            Some(audit),
        )
        .await
    }

    /// Like [`AppState::build`], on given stores (tests, embedding).
    pub async fn build_on(
        config: &Config,
        stores: Stores,
    ) -> Result<(AppState, Startup), StartError> {
        let data_lock = lock_data_dir(config)?;
        Self::build_with(config, stores, engine_config(), None, data_lock, None).await
    }

    /// `snapshot`: the ledger snapshot already loaded (`Some(None)`: looked, none usable), or
    /// `None` to load it from the stores' snapshot store here; `audit`: the audit log already
    /// opened, or `None` to open it here.
    async fn build_with(
        config: &Config,
        stores: Stores,
        engine_config: EngineConfig,
        snapshot: Option<Option<Ledger>>,
        data_lock: Arc<DirLock>,
        audit: Option<(AuditLog, ChainEnd)>,
    ) -> Result<(AppState, Startup), StartError> {
        let keys = config.jwt_keys()?;
        if config.jwks_url.is_some() {
            // A provider that is down must not keep the ledger down: HS256 tokens still work,
            // and the next token with an unknown kid tries again.
            match keys.refresh().await {
                Ok(n) => tracing::info!(keys = n, "JWKS fetched"),
                Err(e) => {
                    tracing::error!(error = %e, "JWKS not fetched at start; tokens of its keys are refused until a fetch succeeds")
                }
            }
        }
        let mfa = config.mfa_policy()?;
        let (audit, chain) = match audit {
            Some(opened) => opened,
            None => AuditLog::open(&config.audit_path())?,
        };
        let metrics = Arc::new(Metrics::new());
        let store = ServerStore::new(stores.events.clone(), metrics.clone());
        let clock = Arc::new(SystemClock);
        let started = Instant::now();
        let (engine, opened) = match (snapshot, &stores.snapshots) {
            (Some(loaded), _) => Engine::open_from(store, loaded, clock, engine_config).await?,
            (None, Some(snaps)) => {
                Engine::open_with_snapshot(store, snaps.as_ref(), clock, engine_config).await?
            }
            (None, None) => (
                Engine::open(store, clock, engine_config).await?,
                OpenedFrom::Replay,
            ),
        };
        let position = engine.read(|l| l.position()).await;
        let from = match opened {
            OpenedFrom::Snapshot { position } => position,
            OpenedFrom::Replay => 0,
        };
        tracing::info!(
            opened = ?opened,
            position,
            events_replayed = position.saturating_sub(from),
            ms = started.elapsed().as_millis() as u64,
            "start-up: ledger restored"
        );
        let sql_reads = match config.read_model {
            crate::config::ReadModelKind::Memory => None,
            crate::config::ReadModelKind::Postgres => Some(Arc::new(
                crate::read_model::SqlReads::start(config, metrics.clone())?,
            )),
        };
        let state = AppState {
            sql_reads,
            engine: Arc::new(engine),
            keys: Arc::new(keys),
            audit,
            metrics,
            limiter: Arc::new(RateLimiter::new(
                config.rate_limit_per_second,
                config.rate_limit_burst,
            )),
            ready: Arc::new(AtomicBool::new(true)),
            snapshots: stores.snapshots,
            attrs: Arc::default(),
            index_checkpoint: stores.index_checkpoint,
            mfa: Arc::new(mfa),
            data_lock,
        };
        Ok((
            state,
            Startup {
                opened,
                audit: chain,
                durable: stores.durable,
            },
        ))
    }

    /// Whether the server takes traffic.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
