//! Storage contracts: `EventStore` (atomic multi-stream append with expected versions, reads,
//! following) and `SnapshotStore`, with their in-memory implementations.
//!
//! Adapters (journal, PostgreSQL, Kafka) implement these traits and nothing else; the contract
//! test suite in `testing::contract` (feature `test-util`) holds every implementation to the
//! same behaviour.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use futures_channel::oneshot;

use crate::event::Envelope;
use crate::ids::StreamId;
use crate::limits::{EVENTS_PER_APPEND_MAX, EVENTS_PER_READ_MAX};
use crate::time::RecordedAt;

/// What a writer expects a stream's version to be before its append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// No expectation.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must exist (any version).
    StreamExists,
    /// The stream must be at exactly this version (0 = does not exist).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` (0 = absent) satisfies the expectation.
    pub fn admits(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::StreamExists => actual > 0,
            ExpectedVersion::Exact(v) => actual == v,
        }
    }
}

/// One atomic append: all of it becomes visible, or none of it.
///
/// The writer (the engine: one writer per log) assigns positions, stream versions and
/// transaction times; the store checks them and refuses the whole batch on any mismatch. That
/// makes `expected_position` a fencing token: a paused ex-writer's batch cannot land after a
/// newer writer's.
#[derive(Clone, Debug)]
pub struct AppendBatch<E> {
    /// The log's last position before this batch (0 = empty log).
    pub expected_position: u64,
    /// Stream expectations, checked before anything is written.
    pub expectations: Vec<(StreamId, ExpectedVersion)>,
    /// The events, positions `expected_position + 1 ..` in order.
    pub events: Vec<Envelope<E>>,
}

/// What a successful append reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendReceipt {
    /// Position of the last event written.
    pub last_position: u64,
    /// Its transaction time.
    pub recorded_at: RecordedAt,
}

/// Infrastructure failures. User mistakes are `Rejection`s, never these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A stream was not at the expected version.
    #[error("stream {stream} is at version {actual}, expected {expected:?}")]
    StreamConflict {
        /// The stream.
        stream: StreamId,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// What it is.
        actual: u64,
    },
    /// The log was not at the expected position (another writer appended: fenced out).
    #[error("log is at position {actual}, expected {expected}")]
    PositionConflict {
        /// What the writer expected.
        expected: u64,
        /// What it is.
        actual: u64,
    },
    /// The batch itself is malformed (positions, versions or times out of order; too large).
    #[error("invalid append: {0}")]
    InvalidBatch(String),
    /// The store cannot be reached or refused to work; retrying later may succeed. The
    /// outcome of an append that failed this way is unknown: read before retrying.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data failed a check; needs an operator.
    #[error("store corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// An append-only log of events, partitioned into streams.
#[async_trait]
pub trait EventStore<E>: Send + Sync
where
    E: Clone + Send + Sync + 'static,
{
    /// Appends the batch atomically and durably; returns once it is durable.
    async fn append(&self, batch: AppendBatch<E>) -> Result<AppendReceipt, StoreError>;
    /// Events of one stream with `stream_version >= from_version`, at most `limit`.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<Envelope<E>>, StoreError>;
    /// Events with `position > after`, in order, at most `limit`. Never skips an event that
    /// later becomes visible below the last one returned.
    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<Envelope<E>>, StoreError>;
    /// The last position (0 for an empty log).
    async fn last_position(&self) -> Result<u64, StoreError>;
    /// Resolves once the log holds an event with position > `after` (follow new events).
    async fn wait_for(&self, after: u64) -> Result<(), StoreError>;
    /// Whether an append is ordered before every later append from the moment its future is
    /// first polled (it has been queued, and the store validates and writes appends in that
    /// order), so a caller may hand over the next append before this one completes. The
    /// [`crate::engine::Engine`] then decides its next batch while the previous one is being
    /// made durable. Default `false`: the engine waits for each append first.
    fn orders_appends_when_polled(&self) -> bool {
        false
    }
}

/// Checks a batch against the log's state; shared by every store so they refuse alike.
pub fn validate_batch<E>(
    batch: &AppendBatch<E>,
    last_position: u64,
    last_recorded_at: Option<RecordedAt>,
    stream_version: impl Fn(&StreamId) -> u64,
) -> Result<(), StoreError> {
    if batch.expected_position != last_position {
        return Err(StoreError::PositionConflict {
            expected: batch.expected_position,
            actual: last_position,
        });
    }
    if batch.events.is_empty() || batch.events.len() > EVENTS_PER_APPEND_MAX {
        return Err(StoreError::InvalidBatch(format!(
            "a batch holds 1 to {EVENTS_PER_APPEND_MAX} events"
        )));
    }
    for (stream, expected) in &batch.expectations {
        let actual = stream_version(stream);
        if !expected.admits(actual) {
            return Err(StoreError::StreamConflict {
                stream: stream.clone(),
                expected: *expected,
                actual,
            });
        }
    }
    // foldhash, randomly seeded: SipHash of every stream name was a tenth of the journal
    // writer's time (whose thread validates every batch).
    let mut versions: HashMap<&StreamId, u64, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(batch.events.len(), Default::default());
    let mut prev_time = last_recorded_at;
    for (i, e) in batch.events.iter().enumerate() {
        if e.position != last_position + 1 + i as u64 {
            return Err(StoreError::InvalidBatch(format!(
                "event {i} has position {}, expected {}",
                e.position,
                last_position + 1 + i as u64
            )));
        }
        if prev_time.is_some_and(|p| e.recorded_at <= p) {
            return Err(StoreError::InvalidBatch(
                "recorded_at must strictly increase".into(),
            ));
        }
        prev_time = Some(e.recorded_at);
        let v = versions
            .entry(&e.stream)
            .or_insert_with(|| stream_version(&e.stream));
        *v += 1;
        if e.stream_version != *v {
            return Err(StoreError::InvalidBatch(format!(
                "event {i} of stream {} has version {}, expected {}",
                e.stream, e.stream_version, v
            )));
        }
    }
    Ok(())
}

struct MemoryInner<E> {
    events: Vec<Envelope<E>>,
    streams: HashMap<StreamId, Vec<usize>>,
    waiters: Vec<oneshot::Sender<()>>,
}

/// An in-memory `EventStore`: the reference implementation, and the store for tests and for
/// embedding applications that keep their own durability.
pub struct MemoryEventStore<E> {
    inner: Mutex<MemoryInner<E>>,
}

impl<E> Default for MemoryEventStore<E> {
    fn default() -> Self {
        MemoryEventStore {
            inner: Mutex::new(MemoryInner {
                events: Vec::new(),
                streams: HashMap::new(),
                waiters: Vec::new(),
            }),
        }
    }
}

impl<E> MemoryEventStore<E> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemoryInner<E>> {
        // A panic while holding the lock cannot leave a half-applied append: appends are
        // validated before the first mutation and the mutations cannot panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl<E> EventStore<E> for MemoryEventStore<E>
where
    E: Clone + Send + Sync + 'static,
{
    /// An append completes in its first poll.
    fn orders_appends_when_polled(&self) -> bool {
        true
    }

    async fn append(&self, batch: AppendBatch<E>) -> Result<AppendReceipt, StoreError> {
        let mut g = self.lock();
        let last = g.events.len() as u64;
        let last_time = g.events.last().map(|e| e.recorded_at);
        validate_batch(&batch, last, last_time, |s| {
            g.streams.get(s).map_or(0, |v| v.len() as u64)
        })?;
        let mut receipt = None;
        for e in batch.events {
            let idx = g.events.len();
            g.streams.entry(e.stream.clone()).or_default().push(idx);
            receipt = Some(AppendReceipt {
                last_position: e.position,
                recorded_at: e.recorded_at,
            });
            g.events.push(e);
        }
        for w in g.waiters.drain(..) {
            let _ = w.send(());
        }
        receipt.ok_or_else(|| StoreError::InvalidBatch("empty batch".into()))
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<Envelope<E>>, StoreError> {
        let g = self.lock();
        let limit = limit.min(EVENTS_PER_READ_MAX);
        Ok(g.streams.get(stream).map_or_else(Vec::new, |idx| {
            idx.iter()
                .skip(from_version.saturating_sub(1) as usize)
                .take(limit)
                .map(|&i| g.events[i].clone())
                .collect()
        }))
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<Envelope<E>>, StoreError> {
        let g = self.lock();
        let limit = limit.min(EVENTS_PER_READ_MAX);
        let start = (after as usize).min(g.events.len());
        Ok(g.events[start..].iter().take(limit).cloned().collect())
    }

    async fn last_position(&self) -> Result<u64, StoreError> {
        Ok(self.lock().events.len() as u64)
    }

    async fn wait_for(&self, after: u64) -> Result<(), StoreError> {
        let rx = {
            let mut g = self.lock();
            if g.events.len() as u64 > after {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            g.waiters.push(tx);
            rx
        };
        rx.await
            .map_err(|_| StoreError::Unavailable("store dropped".into()))
    }
}

/// A disposable cache of folded state, keyed by scope, position and a schema fingerprint.
/// A snapshot that is missing, stale or fails to decode is ignored and state is rebuilt from
/// the log, so losing snapshots never loses data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// What was folded (for the ledger: the log id).
    pub scope: String,
    /// Last log position folded in.
    pub position: u64,
    /// Fingerprint of the state's encoding; a mismatch means "ignore me".
    pub schema_fingerprint: u64,
    /// The encoded state. A `Vec` behind the `Arc` (not an `Arc<[u8]>`), so that a state just
    /// encoded, or a body just read from a file, is shared without copying it: at 10 M events a
    /// snapshot is ~1 GB, and each copy is that much fresh memory to fault in.
    pub bytes: Arc<Vec<u8>>,
}

/// Where snapshots are kept.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Saves a snapshot, replacing an older one of the same scope.
    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError>;
    /// The latest snapshot of `scope`, if any.
    async fn load(&self, scope: &str) -> Result<Option<Snapshot>, StoreError>;
    /// Removes every snapshot of `scope` (none is not an error). The engine removes the
    /// links of a snapshot chain that a new full snapshot has made stale.
    async fn remove(&self, scope: &str) -> Result<(), StoreError>;
}

/// In-memory `SnapshotStore`.
#[derive(Default)]
pub struct MemorySnapshotStore {
    inner: Mutex<HashMap<String, Snapshot>>,
}

#[async_trait]
impl SnapshotStore for MemorySnapshotStore {
    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let newer = g
            .get(&snapshot.scope)
            .is_none_or(|old| old.position <= snapshot.position);
        if newer {
            g.insert(snapshot.scope.clone(), snapshot);
        }
        Ok(())
    }

    async fn load(&self, scope: &str) -> Result<Option<Snapshot>, StoreError> {
        Ok(self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(scope)
            .cloned())
    }

    async fn remove(&self, scope: &str) -> Result<(), StoreError> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(scope);
        Ok(())
    }
}
