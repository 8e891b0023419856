//! The one place that turns configuration into an event store (and optional snapshot store),
//! and `ServerStore`, the instrumented handle the engine runs on. Any
//! `EventStore<LedgerEvent>` plugs in behind it: the embedded durable journal
//! (`ultracore-journal`, the default), PostgreSQL (`ultracore-postgres`) or memory.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use ultracore_core::event::Envelope;
use ultracore_core::ids::StreamId;
use ultracore_core::ledger::LedgerEvent;
use ultracore_core::store::{
    AppendBatch, AppendReceipt, EventStore, MemoryEventStore, SnapshotStore, StoreError,
};

use ultracore_journal::{FileSnapshotStore, Journal, JournalConfig};
use ultracore_postgres::{PgEventStore, PgSnapshotStore};

use crate::config::{Config, StoreKind};
use crate::metrics::Metrics;

/// The stores the server runs on.
pub struct Stores {
    /// The event log.
    pub events: Arc<dyn EventStore<LedgerEvent>>,
    /// Snapshots of ledger state, if the backend keeps them.
    pub snapshots: Option<Arc<dyn SnapshotStore>>,
    /// Whether the log survives a restart (printed at start-up).
    pub durable: bool,
    /// Writes the store's own start-up checkpoint (the journal's index), if it has one; called
    /// next to each ledger snapshot so the next start decodes only the tail.
    pub index_checkpoint: Option<IndexCheckpoint>,
}

/// A store's checkpoint hook: writes it and returns the position it covers.
pub type IndexCheckpoint = Arc<dyn Fn() -> Result<u64, String> + Send + Sync>;

/// Builds the stores named by `config`. Opening the journal scans it (recovery): a torn tail
/// left by a crash is truncated and logged; any other damage stops start-up with an error
/// naming the file and byte offset.
pub fn open_stores(config: &Config) -> Result<Stores, StoreError> {
    match config.store {
        StoreKind::Journal => {
            let dir = config.data_dir.join("journal");
            let (journal, report) = Journal::<LedgerEvent>::open(&dir, JournalConfig::default())?;
            match &report.torn_tail {
                Some(t) => tracing::warn!(
                    file = %t.file.display(),
                    offset = t.offset,
                    bytes_discarded = t.bytes_discarded,
                    reason = %t.reason,
                    "journal: truncated a torn tail (a write interrupted by a crash; it was never acknowledged)"
                ),
                None => tracing::info!(
                    segments = report.segments,
                    events = report.events,
                    checkpoint = report.checkpoint,
                    checkpoint_links = report.checkpoint_links,
                    "journal: recovered"
                ),
            }
            if let Some(why) = &report.checkpoint_ignored {
                tracing::warn!(reason = %why, "journal: index checkpoint not used; the whole journal was decoded");
            }
            if let Some(why) = &report.checkpoint_link_ignored {
                tracing::warn!(reason = %why, "journal: index checkpoint chain ended early; the next checkpoint starts a new one");
            }
            let snapshots = FileSnapshotStore::open(config.data_dir.join("snapshots"))?;
            let journal = Arc::new(journal);
            let for_checkpoint = journal.clone();
            Ok(Stores {
                events: journal,
                snapshots: Some(Arc::new(snapshots)),
                durable: true,
                index_checkpoint: Some(Arc::new(move || {
                    for_checkpoint.checkpoint().map_err(|e| e.to_string())
                })),
            })
        }
        StoreKind::Postgres => {
            let url = config.postgres_url.as_deref().ok_or_else(|| {
                StoreError::Unavailable(
                    "store is postgres but no URL is configured (ULTRACORE_POSTGRES_URL)".into(),
                )
            })?;
            let pg = config
                .postgres_config(url)
                .and_then(PgEventStore::lazy)
                .map_err(StoreError::from)?;
            Ok(Stores {
                events: Arc::new(pg.clone()),
                snapshots: Some(Arc::new(PgSnapshotStore::new(pg))),
                durable: true,
                index_checkpoint: None,
            })
        }
        StoreKind::Memory => Ok(Stores {
            events: Arc::new(MemoryEventStore::<LedgerEvent>::new()),
            snapshots: None,
            durable: false,
            index_checkpoint: None,
        }),
    }
}

/// The engine's store: any event store, with commit metrics.
#[derive(Clone)]
pub struct ServerStore {
    inner: Arc<dyn EventStore<LedgerEvent>>,
    metrics: Arc<Metrics>,
}

impl ServerStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn EventStore<LedgerEvent>>, metrics: Arc<Metrics>) -> ServerStore {
        ServerStore { inner, metrics }
    }
}

#[async_trait]
impl EventStore<LedgerEvent> for ServerStore {
    fn orders_appends_when_polled(&self) -> bool {
        self.inner.orders_appends_when_polled()
    }

    async fn append(&self, batch: AppendBatch<LedgerEvent>) -> Result<AppendReceipt, StoreError> {
        let events = batch.events.len();
        let start = Instant::now();
        let r = self.inner.append(batch).await;
        self.metrics
            .commit_seconds
            .observe(start.elapsed().as_secs_f64());
        match &r {
            Ok(_) => {
                self.metrics.commits.inc();
                self.metrics.commit_events.observe(events as f64);
            }
            Err(_) => {
                self.metrics.commit_errors.inc();
            }
        }
        r
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<Envelope<LedgerEvent>>, StoreError> {
        self.inner.read_stream(stream, from_version, limit).await
    }

    async fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Envelope<LedgerEvent>>, StoreError> {
        self.inner.read_all(after, limit).await
    }

    async fn last_position(&self) -> Result<u64, StoreError> {
        self.inner.last_position().await
    }

    async fn wait_for(&self, after: u64) -> Result<(), StoreError> {
        self.inner.wait_for(after).await
    }
}
