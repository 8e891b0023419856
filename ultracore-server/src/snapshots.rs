//! Ledger snapshots and the journal's index checkpoint while the server runs (every
//! `snapshot_every_events` events or `snapshot_interval_seconds`), and at shutdown, so that a
//! restart after a crash replays only the events since the last one.
//!
//! Most snapshots are deltas: once a full snapshot is saved, each next one holds only what
//! changed since the one before (`Engine::take_snapshot`), until the chain has grown by 3
//! times its full snapshot (or is `DELTA_LINKS_MAX` links long); then a full snapshot starts
//! a new chain. So a snapshot costs time proportional to the events since the last one, not
//! to the whole state, and start-up decodes the full snapshot and applies the chain.
//!
//! Writers are not stalled for the length of the encoding: the state is cut (held
//! exclusively for time proportional to the accounts and small tables, not to the log), then
//! encoded in steps of [`SNAPSHOT_STEP`] units under the shared lock, with batches decided and
//! applied between the steps (`Engine::snapshot_in_steps`); checksumming, writing and syncing
//! happen after that. Each snapshot logs how long the encoding took (`encode_ms`, during which
//! writers went on) and the rest (`write_ms`), and exports them as metrics.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::state::AppState;

/// How often the periodic task looks at the log position. A snapshot is due at most this late.
pub const SNAPSHOT_POLL: Duration = Duration::from_millis(250);

/// How long the periodic task waits after a failed snapshot before it tries again.
pub const SNAPSHOT_RETRY_AFTER: Duration = Duration::from_secs(10);

/// When to snapshot while serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Events appended since the last snapshot that make the next one due (0: never).
    pub every_events: u64,
    /// Time since the last snapshot that makes the next one due if the log grew (None: never).
    pub interval: Option<Duration>,
}

impl SnapshotPolicy {
    /// Whether a snapshot is due: the log is at `position`, the last snapshot covered `last`
    /// and was taken `elapsed` ago.
    pub fn due(&self, position: u64, last: u64, elapsed: Duration) -> bool {
        let grown = position.saturating_sub(last);
        grown > 0
            && ((self.every_events > 0 && grown >= self.every_events)
                || self.interval.is_some_and(|i| elapsed >= i))
    }
}

/// Units of work per snapshot step (balance-index changes, log positions or entries): about
/// 5–10 ms of encoding here, so a writer waits at most that long for the state.
pub const SNAPSHOT_STEP: usize = 100_000;

/// One snapshot taken.
#[derive(Clone, Copy, Debug)]
pub struct Taken {
    /// Last log position it covers.
    pub position: u64,
    /// For a delta snapshot, the position of the snapshot it builds on; `None` for a full
    /// one.
    pub delta_of: Option<u64>,
    /// 0 for a full snapshot, `k` for the `k`-th delta after one.
    pub link: u32,
    /// Its size.
    pub bytes: usize,
    /// Encoding the state, in steps between which writers went on.
    pub encode: Duration,
    /// Sealing, writing and syncing the snapshot.
    pub write: Duration,
    /// The position the journal's index checkpoint covers, if the store has one and it was
    /// written.
    pub checkpoint: Option<u64>,
}

/// Saves a snapshot of the durable state, then the store's index checkpoint. `Ok(None)` when
/// the store keeps no snapshots.
pub async fn take(state: &AppState) -> Result<Option<Taken>, String> {
    let Some(snaps) = state.snapshots.clone() else {
        return Ok(None);
    };
    let start = Instant::now();
    let engine = state.engine.clone();
    let runtime = tokio::runtime::Handle::current();
    let (taken, encode, written) = tokio::task::spawn_blocking(move || {
        // On a blocking thread: each step is CPU work under the shared state lock.
        let taken = runtime
            .block_on(engine.take_snapshot(SNAPSHOT_STEP))
            .map_err(|e| e.to_string())?;
        let encoded = start.elapsed();
        let written = runtime.block_on(snaps.save(engine.snapshot_record(&taken)));
        Ok::<_, String>((taken, encoded, written))
    })
    .await
    .map_err(|e| format!("snapshot task failed: {e}"))??;
    written.map_err(|e| e.to_string())?;
    // Only a saved snapshot is what the next delta builds on.
    state.engine.snapshot_saved(&taken).await;
    let write = start.elapsed() - encode;
    let position = taken.position;
    // After the snapshot: the checkpoint covers at least its position, so the next start
    // decodes only the journal's tail after it.
    let checkpoint = match state.index_checkpoint.clone() {
        None => None,
        Some(checkpoint) => match tokio::task::spawn_blocking(move || checkpoint()).await {
            Ok(Ok(p)) => Some(p),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "journal index checkpoint not written");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "journal index checkpoint task failed");
                None
            }
        },
    };
    state.metrics.snapshots.inc();
    state
        .metrics
        .snapshot_position
        .set(i64::try_from(position).unwrap_or(i64::MAX));
    state
        .metrics
        .snapshot_encode_seconds
        .observe(encode.as_secs_f64());
    state
        .metrics
        .snapshot_write_seconds
        .observe(write.as_secs_f64());
    Ok(Some(Taken {
        position,
        delta_of: taken.delta_of,
        link: taken.link,
        bytes: taken.bytes.len(),
        encode,
        write,
        checkpoint,
    }))
}

/// Takes a snapshot whenever `policy` says one is due, until `stop` turns true. `last` is the
/// position the state was opened from (a snapshot's, or 0).
pub async fn run_periodic(
    state: AppState,
    policy: SnapshotPolicy,
    mut last: u64,
    mut stop: watch::Receiver<bool>,
) {
    if policy.every_events == 0 && policy.interval.is_none() {
        return;
    }
    let mut since = Instant::now();
    let mut retry_at = since;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(SNAPSHOT_POLL) => {}
        }
        let position = state.engine.read(|l| l.position()).await;
        if Instant::now() < retry_at || !policy.due(position, last, since.elapsed()) {
            continue;
        }
        match take(&state).await {
            Ok(Some(t)) => {
                tracing::info!(
                    periodic = true,
                    position = t.position,
                    events_since_last = t.position - last,
                    delta_of = t.delta_of,
                    link = t.link,
                    bytes = t.bytes,
                    encode_ms = t.encode.as_millis() as u64,
                    write_ms = t.write.as_millis() as u64,
                    checkpoint = t.checkpoint,
                    "snapshot saved"
                );
                last = t.position;
            }
            Ok(None) => return,
            Err(e) => {
                state.metrics.snapshot_errors.inc();
                tracing::warn!(error = %e, "periodic snapshot not saved; retrying later");
                retry_at = Instant::now() + SNAPSHOT_RETRY_AFTER;
                continue;
            }
        }
        since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_by_count_or_by_time_and_only_when_the_log_grew() {
        let p = SnapshotPolicy {
            every_events: 100,
            interval: Some(Duration::from_secs(60)),
        };
        let s = Duration::from_secs;
        assert!(!p.due(99, 0, s(0)));
        assert!(p.due(100, 0, s(0)));
        assert!(p.due(150, 100, s(60)), "time");
        assert!(!p.due(150, 100, s(59)));
        assert!(!p.due(100, 100, s(3600)), "nothing new");
        let off = SnapshotPolicy {
            every_events: 0,
            interval: None,
        };
        assert!(!off.due(u64::MAX, 0, s(u64::MAX / 2)));
    }
}
