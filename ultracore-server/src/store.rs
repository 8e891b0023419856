//! The one place that turns configuration into an event store (and optional snapshot store),
//! and `ServerStore`, the instrumented handle the engine runs on. Any
//! `EventStore<LedgerEvent>` plugs in behind it: today `MemoryEventStore`; the durable journal
//! (`ultracore-journal`) adds a `StoreKind` and one arm in [`open_stores`].

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use ultracore_core::event::Envelope;
use ultracore_core::ids::StreamId;
use ultracore_core::ledger::LedgerEvent;
use ultracore_core::store::{
    AppendBatch, AppendReceipt, EventStore, MemoryEventStore, SnapshotStore, StoreError,
};

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
}

/// Builds the stores named by `config`.
pub fn open_stores(config: &Config) -> Result<Stores, StoreError> {
    match config.store {
        StoreKind::Memory => Ok(Stores {
            events: Arc::new(MemoryEventStore::<LedgerEvent>::new()),
            snapshots: None,
            durable: false,
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
