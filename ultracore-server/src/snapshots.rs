//! Ledger snapshots and the journal's index checkpoint while the server runs (every
//! `snapshot_every_events` events or `snapshot_interval_seconds`), and at shutdown, so that a
//! restart after a crash replays only the events since the last one.
//!
//! Most snapshots are deltas: once a full snapshot is saved, each next one holds only what
//! changed since the one before, until the chain has grown by 3 times its full snapshot (or
//! is `DELTA_LINKS_REBASE` links long); then a full snapshot starts a new chain. So a
//! snapshot costs time proportional to the events since the last one, not to the whole
//! state, and start-up decodes the full snapshot and applies the chain.
//!
//! The full snapshot that starts a new chain is encoded by a task of its own, for as long as
//! the whole state takes (tens of seconds at 10 M events under load), while the periodic
//! deltas go on along the current chain; a crash meanwhile restarts from that chain. Once
//! it is encoded, the first delta on it (the events since its cut) is encoded too, and the
//! two are written one right after the other: only then does start-up switch to the new
//! chain, so the log's tail after the last snapshot stays about one interval long.
//!
//! Writers are not stalled for the length of the encoding: the state is cut (held
//! exclusively for time proportional to the accounts and small tables, not to the log), then
//! encoded in steps of [`SNAPSHOT_STEP`] units under the shared lock, with batches decided and
//! applied between the steps (`Engine::snapshot_in_steps`); checksumming, writing and syncing
//! happen after that. Each snapshot logs how long the encoding took (`encode_ms`, during which
//! writers went on) and the rest (`write_ms`), and exports them as metrics.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use ultracore_core::engine::{delta_pays, EncodedSnapshot};

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
    /// Writing that checkpoint (a link of its chain, or now and then a new base).
    pub checkpoint_time: Duration,
}

impl Taken {
    /// Logs it; `last` is the position of the snapshot before (for `events_since_last`).
    pub fn log(&self, periodic: bool, last: u64) {
        tracing::info!(
            periodic,
            position = self.position,
            events_since_last = self.position.saturating_sub(last),
            delta_of = self.delta_of,
            link = self.link,
            bytes = self.bytes,
            encode_ms = self.encode.as_millis() as u64,
            write_ms = self.write.as_millis() as u64,
            checkpoint = self.checkpoint,
            checkpoint_ms = self.checkpoint_time.as_millis() as u64,
            "snapshot saved"
        );
    }
}

/// Which snapshot [`take`] encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A full snapshot: it starts a new chain.
    Full,
    /// A delta on the last saved snapshot; none if there is none or the chain is at its
    /// longest.
    Delta,
    /// A delta when the chain has room for one (the cheapest snapshot: at shutdown), a full
    /// snapshot otherwise.
    DeltaElseFull,
}

/// A snapshot encoded and not yet written.
struct Encoded {
    snapshot: EncodedSnapshot,
    encode: Duration,
}

/// Encodes a snapshot of `kind` of the durable state on a blocking thread (each step is CPU
/// work under the shared state lock, with batches between the steps). `Ok(None)` when a
/// delta was asked for and there is no chain to add it to, or when `cancel` turns true
/// first.
async fn encode(
    state: &AppState,
    kind: Kind,
    mut cancel: Option<watch::Receiver<bool>>,
) -> Result<Option<Encoded>, String> {
    let start = Instant::now();
    let engine = state.engine.clone();
    let runtime = tokio::runtime::Handle::current();
    let taken = tokio::task::spawn_blocking(move || {
        runtime.block_on(async {
            let job = async {
                match kind {
                    Kind::Full => Some(engine.take_full_snapshot(SNAPSHOT_STEP).await),
                    Kind::Delta => engine.take_delta_snapshot(SNAPSHOT_STEP).await,
                    Kind::DeltaElseFull => match engine.take_delta_snapshot(SNAPSHOT_STEP).await {
                        Some(d) => Some(d),
                        None => Some(engine.take_full_snapshot(SNAPSHOT_STEP).await),
                    },
                }
            };
            match cancel.as_mut() {
                None => job.await,
                Some(c) => tokio::select! {
                    taken = job => taken,
                    _ = c.wait_for(|s| *s) => None,
                },
            }
        })
    })
    .await
    .map_err(|e| format!("snapshot task failed: {e}"))?;
    match taken {
        None => Ok(None),
        Some(Err(e)) => Err(e.to_string()),
        Some(Ok(snapshot)) => Ok(Some(Encoded {
            snapshot,
            encode: start.elapsed(),
        })),
    }
}

/// Writes and syncs `e`; how long that took.
async fn write(state: &AppState, e: &EncodedSnapshot) -> Result<Duration, String> {
    let Some(snaps) = state.snapshots.clone() else {
        return Err("the store keeps no snapshots".into());
    };
    let start = Instant::now();
    snaps
        .save(state.engine.snapshot_record(e))
        .await
        .map_err(|e| e.to_string())?;
    Ok(start.elapsed())
}

/// After a snapshot: the journal's index checkpoint covers at least its position, so the next
/// start decodes only the journal's tail after it.
async fn checkpoint(state: &AppState) -> (Option<u64>, Duration) {
    let Some(checkpoint) = state.index_checkpoint.clone() else {
        return (None, Duration::ZERO);
    };
    let start = Instant::now();
    let written = match tokio::task::spawn_blocking(move || checkpoint()).await {
        Ok(Ok(p)) => Some(p),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "journal index checkpoint not written");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "journal index checkpoint task failed");
            None
        }
    };
    (written, start.elapsed())
}

/// Once a full snapshot is saved: removes the links of the chain it replaced (start-up would
/// refuse them; they would only take disk space). A failure is logged, not fatal.
async fn remove_stale_links(state: &AppState) {
    if let Some(snaps) = &state.snapshots {
        if let Err(e) = state.engine.remove_stale_links(snaps.as_ref()).await {
            tracing::warn!(error = %e, "links of the replaced snapshot chain not removed");
        }
    }
}

/// Counts a saved snapshot in the metrics and says what it was.
fn saved(
    state: &AppState,
    e: &Encoded,
    write: Duration,
    checkpoint: (Option<u64>, Duration),
) -> Taken {
    let position = e.snapshot.position;
    let m = &state.metrics;
    m.snapshots.inc();
    m.snapshot_position
        .set(i64::try_from(position).unwrap_or(i64::MAX));
    m.snapshot_encode_seconds.observe(e.encode.as_secs_f64());
    m.snapshot_write_seconds.observe(write.as_secs_f64());
    Taken {
        position,
        delta_of: e.snapshot.delta_of,
        link: e.snapshot.link,
        bytes: e.snapshot.bytes.len(),
        encode: e.encode,
        write,
        checkpoint: checkpoint.0,
        checkpoint_time: checkpoint.1,
    }
}

/// Saves a snapshot of `kind` of the durable state, then the store's index checkpoint.
/// `Ok(None)` when the store keeps no snapshots, or `kind` is [`Kind::Delta`] and there is no
/// chain to add one to.
pub async fn take(state: &AppState, kind: Kind) -> Result<Option<Taken>, String> {
    if state.snapshots.is_none() {
        return Ok(None);
    }
    let Some(e) = encode(state, kind, None).await? else {
        return Ok(None);
    };
    let written = write(state, &e.snapshot).await?;
    if e.snapshot.link == 0 {
        remove_stale_links(state).await;
    }
    // Only a saved snapshot is what the next delta builds on.
    state.engine.snapshot_saved(&e.snapshot).await;
    let checkpoint = checkpoint(state).await;
    Ok(Some(saved(state, &e, written, checkpoint)))
}

/// Saves `full`, a full snapshot encoded while the chain before it went on, as the start of a
/// new chain: encodes the first delta on it (the events since its cut), then writes the two
/// one right after the other, so that start-up moves to the new chain with a short tail.
/// Returns what was saved (the full snapshot, then the delta if it was saved too).
async fn start_chain(state: &AppState, full: Encoded) -> Result<Vec<Taken>, String> {
    // The first delta builds on it before it is written; undone if the write fails.
    state.engine.snapshot_saved(&full.snapshot).await;
    let position = state.engine.read(|l| l.position()).await;
    let first = if position > full.snapshot.position {
        encode(state, Kind::Delta, None).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "first delta of a new chain not encoded");
            None
        })
    } else {
        None
    };
    let written = match write(state, &full.snapshot).await {
        Ok(w) => w,
        Err(e) => {
            state.engine.snapshot_not_saved().await;
            return Err(e);
        }
    };
    let mut out = vec![saved(state, &full, written, (None, Duration::ZERO))];
    // The old chain's links are stale now: gone before the new chain's first is written.
    remove_stale_links(state).await;
    if let Some(d) = first {
        match write(state, &d.snapshot).await {
            Ok(w) => {
                state.engine.snapshot_saved(&d.snapshot).await;
                out.push(saved(state, &d, w, (None, Duration::ZERO)));
            }
            // The next delta builds on the full snapshot again.
            Err(e) => tracing::warn!(error = %e, "first delta of a new chain not saved"),
        }
    }
    let (checkpoint, took) = checkpoint(state).await;
    if let Some(last) = out.last_mut() {
        last.checkpoint = checkpoint;
        last.checkpoint_time = took;
    }
    Ok(out)
}

/// Takes a snapshot whenever `policy` says one is due, until `stop` turns true. `last` is the
/// position the state was opened from (a snapshot's, or 0).
///
/// A due snapshot is a delta on the saved chain; when there is none yet, or the chain is due
/// to be replaced ([`delta_pays`]), a task begins encoding the full snapshot of a new chain,
/// and deltas go on along the current chain until it is done (see the module docs). At
/// `stop`, a full snapshot still being encoded is given up: the snapshot at shutdown is a
/// delta on the saved chain when it has room for one.
pub async fn run_periodic(
    state: AppState,
    policy: SnapshotPolicy,
    mut last: u64,
    mut stop: watch::Receiver<bool>,
) {
    if (policy.every_events == 0 && policy.interval.is_none()) || state.snapshots.is_none() {
        return;
    }
    let mut since = Instant::now();
    let mut retry_at = since;
    let mut full: Option<JoinHandle<Result<Option<Encoded>, String>>> = None;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep(SNAPSHOT_POLL) => {}
        }
        let failed = |state: &AppState, e: &str, retry_at: &mut Instant| {
            state.metrics.snapshot_errors.inc();
            tracing::warn!(error = %e, "periodic snapshot not saved; retrying later");
            *retry_at = Instant::now() + SNAPSHOT_RETRY_AFTER;
        };
        if full.as_ref().is_some_and(JoinHandle::is_finished) {
            let encoded = match full.take().expect("checked").await {
                Ok(r) => r,
                Err(e) => Err(format!("snapshot task failed: {e}")),
            };
            let started = match encoded {
                Ok(Some(f)) => start_chain(&state, f).await,
                Ok(None) => Ok(Vec::new()),
                Err(e) => Err(e),
            };
            match started {
                Ok(taken) => {
                    for t in &taken {
                        t.log(true, last);
                        last = t.position;
                        since = Instant::now();
                    }
                }
                Err(e) => failed(&state, &e, &mut retry_at),
            }
            continue;
        }
        let position = state.engine.read(|l| l.position()).await;
        if Instant::now() < retry_at || !policy.due(position, last, since.elapsed()) {
            continue;
        }
        let chain = state.engine.last_saved_snapshot().await;
        if full.is_none() && chain.is_none_or(|s| !delta_pays(s, position)) {
            tracing::info!(
                position,
                chain_link = chain.map(|s| s.link),
                "full snapshot begun: it starts a new chain; deltas go on along the saved one until it is saved"
            );
            let (state, stop) = (state.clone(), stop.clone());
            full = Some(tokio::spawn(async move {
                encode(&state, Kind::Full, Some(stop)).await
            }));
        }
        if chain.is_none() {
            // Nothing to add a delta to until the first full snapshot is saved.
            continue;
        }
        match take(&state, Kind::Delta).await {
            Ok(Some(t)) => {
                t.log(true, last);
                last = t.position;
                since = Instant::now();
            }
            // The chain is at its longest: the full snapshot in progress replaces it.
            Ok(None) => {}
            Err(e) => failed(&state, &e, &mut retry_at),
        }
    }
    // Given up at the stop signal (between two of its steps).
    if let Some(f) = full {
        let _ = f.await;
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
