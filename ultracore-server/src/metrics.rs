//! Prometheus metrics (text exposition at `GET /metrics`): requests by route and status,
//! latency histograms, problems by code, commits (appends) with their size and latency, API
//! batch sizes, and the engine's counters.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use ultracore_core::engine::EngineStats;

/// Labels of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// HTTP method.
    pub method: String,
    /// Route template (`/v1/accounts/{id}`), never the raw path (bounded cardinality).
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Labels of a latency observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    /// HTTP method.
    pub method: String,
    /// Route template.
    pub route: String,
}

/// Labels of a problem.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// Stable problem code.
    pub code: String,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests answered.
    pub requests: Family<RouteLabels, Counter>,
    /// Request latency (seconds).
    pub latency: Family<LatencyLabels, Histogram>,
    /// Problems answered, by code.
    pub errors: Family<CodeLabels, Counter>,
    /// Appends to the event store (one per engine batch: a commit).
    pub commits: Counter,
    /// Failed appends.
    pub commit_errors: Counter,
    /// Events per append (the engine's batch size).
    pub commit_events: Histogram,
    /// Append latency, including the store's sync (seconds).
    pub commit_seconds: Histogram,
    /// Transfers per `POST /v1/transfers/batch`.
    pub api_batch_size: Histogram,
    /// Commands decided by the engine.
    pub engine_commands: Counter,
    /// Last log position.
    pub log_position: Gauge,
    /// Snapshots saved while serving or at shutdown.
    pub snapshots: Counter,
    /// Periodic snapshots that failed.
    pub snapshot_errors: Counter,
    /// Last position covered by a snapshot this process saved.
    pub snapshot_position: Gauge,
    /// Time to encode the state for a snapshot, in steps between which writers go on
    /// (seconds).
    pub snapshot_encode_seconds: Histogram,
    /// Time to seal, write and sync a snapshot once encoded (seconds).
    pub snapshot_write_seconds: Histogram,
    /// The position of the snapshot start-up began from (0: none, the whole log was replayed).
    pub startup_snapshot_position: Gauge,
    /// Events replayed at start-up (after the snapshot, if any).
    pub startup_replayed_events: Gauge,
    /// SQL read model: events in the log not yet projected (0 without a read model).
    pub read_model_lag_events: Gauge,
    /// SQL read model: seconds since the projection was last caught up (0 when it is).
    pub read_model_lag_seconds: Gauge<f64, AtomicU64>,
    /// SQL read model: reads answered from memory because the projection was behind or failed.
    pub read_model_fallbacks: Counter,
    engine_seen: Mutex<EngineStats>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ultracore");
        let requests = Family::<RouteLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
        });
        let errors = Family::<CodeLabels, Counter>::default();
        let commits = Counter::default();
        let commit_errors = Counter::default();
        let commit_events = Histogram::new(exponential_buckets(1.0, 2.0, 15));
        let commit_seconds = Histogram::new(exponential_buckets(0.000_01, 2.0, 20));
        let api_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let engine_commands = Counter::default();
        let log_position = Gauge::default();
        let snapshots = Counter::default();
        let snapshot_errors = Counter::default();
        let snapshot_position = Gauge::default();
        let snapshot_encode_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 18));
        let snapshot_write_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let startup_snapshot_position = Gauge::default();
        let startup_replayed_events = Gauge::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        registry.register("http_problems", "Problem responses by code", errors.clone());
        registry.register("commits", "Appends to the event store", commits.clone());
        registry.register("commit_errors", "Failed appends", commit_errors.clone());
        registry.register("commit_events", "Events per append", commit_events.clone());
        registry.register(
            "commit_duration_seconds",
            "Append latency including sync",
            commit_seconds.clone(),
        );
        registry.register(
            "api_batch_transfers",
            "Transfers per batch request",
            api_batch_size.clone(),
        );
        registry.register(
            "engine_commands",
            "Commands decided by the engine",
            engine_commands.clone(),
        );
        registry.register("log_position", "Last log position", log_position.clone());
        registry.register("snapshots", "Snapshots saved", snapshots.clone());
        registry.register(
            "snapshot_errors",
            "Periodic snapshots that failed",
            snapshot_errors.clone(),
        );
        registry.register(
            "snapshot_position",
            "Last position covered by a snapshot saved by this process",
            snapshot_position.clone(),
        );
        registry.register(
            "snapshot_encode_duration_seconds",
            "Encoding the state for a snapshot, in steps between which writers go on",
            snapshot_encode_seconds.clone(),
        );
        registry.register(
            "snapshot_write_duration_seconds",
            "Sealing, writing and syncing a snapshot once encoded",
            snapshot_write_seconds.clone(),
        );
        registry.register(
            "startup_snapshot_position",
            "Position of the snapshot start-up began from (0: full replay)",
            startup_snapshot_position.clone(),
        );
        registry.register(
            "startup_replayed_events",
            "Events replayed at start-up",
            startup_replayed_events.clone(),
        );
        let read_model_lag_events = Gauge::default();
        let read_model_lag_seconds = Gauge::<f64, AtomicU64>::default();
        let read_model_fallbacks = Counter::default();
        registry.register(
            "read_model_lag_events",
            "Log events not yet applied to the SQL read model",
            read_model_lag_events.clone(),
        );
        registry.register(
            "read_model_lag_seconds",
            "Seconds since the SQL read model was last caught up with the log",
            read_model_lag_seconds.clone(),
        );
        registry.register(
            "read_model_fallbacks",
            "Reads answered from memory because the SQL read model was behind or failed",
            read_model_fallbacks.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            errors,
            commits,
            commit_errors,
            commit_events,
            commit_seconds,
            api_batch_size,
            engine_commands,
            log_position,
            snapshots,
            snapshot_errors,
            snapshot_position,
            snapshot_encode_seconds,
            snapshot_write_seconds,
            startup_snapshot_position,
            startup_replayed_events,
            read_model_lag_events,
            read_model_lag_seconds,
            read_model_fallbacks,
            engine_seen: Mutex::new(EngineStats::default()),
        }
    }

    /// Folds the engine's cumulative statistics into the counters.
    pub fn observe_engine(&self, stats: EngineStats, position: u64) {
        let mut seen = self.engine_seen.lock().unwrap_or_else(|p| p.into_inner());
        self.engine_commands
            .inc_by(stats.commands.saturating_sub(seen.commands));
        *seen = stats;
        self.log_position
            .set(i64::try_from(position).unwrap_or(i64::MAX));
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
