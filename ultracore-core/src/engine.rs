//! The engine: drives a [`Ledger`] over any [`EventStore`] for an embedding application.
//! Commands from concurrent callers are batched (group commit): one leader decides the whole
//! batch, appends it in one durable write, and answers every caller. On a store that orders
//! appends when they are first polled (`EventStore::orders_appends_when_polled`, the journal)
//! the leader decides the next batch while the previous one is being made durable (two in
//! flight); answers and reads still only ever reflect durable batches.
//!
//! Runtime-agnostic (no tokio): it spawns nothing; the caller that finds no batch in flight
//! becomes the leader and does the work, the others wait on a oneshot channel.
//!
//! Calling protocol:
//! 1. [`Engine::open`] rebuilds the ledger from the store (replay) and is then the writer of
//!    that log. Run exactly one engine per log. A second one cannot corrupt it: any batch
//!    decided on a stale state fails with `PositionConflict` (nothing is written) and that
//!    engine rebuilds from the store; but two engines would keep taking turns, so deployments
//!    must still elect one writer per log (a lease; see `docs/ARCHITECTURE.md`).
//! 2. [`Engine::execute`] / [`Engine::execute_batch`] submit commands and return each
//!    command's outcome once its batch is durable.
//! 3. [`Engine::read`] runs a query on a consistent view that only ever contains durable events.
//! 4. If an append fails, the batch's callers get the store error, and the engine rebuilds its
//!    state from the store before deciding anything else.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use async_lock::{RwLock, RwLockWriteGuard};
use futures_channel::oneshot;

use crate::event::{Envelope, Trace};
use crate::ledger::{
    Command, InvariantViolated, Ledger, LedgerConfig, LedgerEvent, Outcome, Rejection,
};
use crate::ledger::{
    SavedSnapshot, SnapshotAbandoned, SnapshotJob, Warmed, SNAPSHOT_DELTA_SCHEMA, SNAPSHOT_SCHEMA,
    WARM_WINDOW,
};
use crate::limits::{COMMANDS_PER_BATCH_MAX, EVENTS_PER_READ_MAX};
use crate::store::{AppendBatch, AppendReceipt, EventStore, Snapshot, SnapshotStore, StoreError};
use crate::time::Clock;

/// Why a command got no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The ledger refused it (the caller's problem; do not retry as-is).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The store failed; the command may or may not have been recorded. Retrying with the same
    /// id is safe (idempotent).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug: the batch was refused and the state rebuilt.
    #[error(transparent)]
    Invariant(#[from] InvariantViolated),
    /// Too many commands in one call.
    #[error("at most {COMMANDS_PER_BATCH_MAX} commands per batch")]
    BatchTooLarge,
    /// The engine could not rebuild its state after a failure; it refuses work until
    /// [`Engine::recover`] succeeds.
    #[error("engine is recovering from a store failure; retry later")]
    Recovering,
}

/// Engine settings.
#[derive(Clone, Debug, Default)]
pub struct EngineConfig {
    /// Ledger rules.
    pub ledger: LedgerConfig,
    /// Id of this log (goes into event ids).
    pub log_id: u64,
}

type Reply = oneshot::Sender<Vec<Result<Outcome, EngineError>>>;

struct Pending {
    commands: Vec<(Command, Trace)>,
    reply: Reply,
}

/// Units of work per snapshot step in [`Engine::save_snapshot`] (balance-index changes, log
/// positions or entries; ~2–10 ms of encoding on the reference machine).
pub const SNAPSHOT_STEP_DEFAULT: usize = 100_000;

/// Statistics of the last batches, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Batches appended.
    pub batches: u64,
    /// Commands decided.
    pub commands: u64,
    /// Events appended.
    pub events: u64,
    /// Commands in the last batch.
    pub last_batch_commands: u64,
}

/// Drives the ledger: batching, deciding, appending, answering.
pub struct Engine<S> {
    state: RwLock<Ledger>,
    store: S,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    queue: Mutex<Vec<Pending>>,
    leading: AtomicBool,
    poisoned: AtomicBool,
    stats: Mutex<EngineStats>,
    /// Readers waiting for the state lock (see [`Engine::lead`]).
    readers_waiting: AtomicUsize,
    /// The leader, while it waits for a batch in flight, wants to hear of new commands.
    leader_waker: Mutex<Option<Waker>>,
    /// A task runs [`Engine::drive`]: callers only queue their commands and wait.
    driven: AtomicBool,
}

/// The store's future of an append.
type AppendFuture<'a> =
    Pin<Box<dyn Future<Output = Result<AppendReceipt, StoreError>> + Send + 'a>>;

/// A decided batch: its append (none if it produced no events), once finished its outcome,
/// and the answers its callers get once it is durable.
struct InFlight<'a> {
    append: Option<AppendFuture<'a>>,
    outcome: Option<Result<(), StoreError>>,
    batch: Vec<Pending>,
    results: Vec<Vec<Result<Outcome, EngineError>>>,
    events: u64,
    commands: u64,
}

impl InFlight<'_> {
    /// Polls the append once more; ready once the outcome is known.
    fn poll_append(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.outcome.is_some() {
            return Poll::Ready(());
        }
        let Some(append) = self.append.as_mut() else {
            self.outcome = Some(Ok(()));
            return Poll::Ready(());
        };
        match append.as_mut().poll(cx) {
            Poll::Ready(r) => {
                self.outcome = Some(r.map(|_| ()));
                self.append = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Polls the append once, so the store has it.
    async fn poll_once(&mut self) {
        std::future::poll_fn(|cx| {
            let _ = self.poll_append(cx);
            Poll::Ready(())
        })
        .await
    }
}

/// Decrements the count of waiting readers when dropped (also if the read is cancelled).
struct ReaderWaiting<'a>(&'a AtomicUsize);

impl Drop for ReaderWaiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Returns to the executor once (runtime-agnostic `yield_now`).
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

fn answer_all(batch: Vec<Pending>, e: &EngineError) {
    for p in batch {
        let n = p.commands.len();
        let _ = p.reply.send((0..n).map(|_| Err(e.clone())).collect());
    }
}

impl<S: EventStore<LedgerEvent>> Engine<S> {
    /// Rebuilds the ledger from `store` and returns an engine that writes to it.
    pub async fn open(
        store: S,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Result<Self, EngineError> {
        let ledger = replay(&store, config.ledger.clone(), |_| {}).await?;
        Ok(Engine {
            state: RwLock::new(ledger),
            store,
            clock,
            config,
            queue: Mutex::new(Vec::new()),
            leading: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            stats: Mutex::new(EngineStats::default()),
            readers_waiting: AtomicUsize::new(0),
            driven: AtomicBool::new(false),
            leader_waker: Mutex::new(None),
        })
    }

    /// Like [`Engine::open`], but starts from the latest snapshot in `snapshots` when it is
    /// usable (same format, not ahead of the log, and agreeing with the log on the transaction
    /// time of its last position) and replays only the events after it. A snapshot that is
    /// missing or unusable is ignored and the whole log is replayed: snapshots are a cache.
    pub async fn open_with_snapshot(
        store: S,
        snapshots: &dyn SnapshotStore,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Result<(Self, OpenedFrom), EngineError> {
        let snapshot = Self::load_snapshot(snapshots, &config).await;
        Self::open_from(store, snapshot, clock, config).await
    }

    /// The ledger of the latest snapshot in `snapshots` for an engine with `config`, decoded,
    /// or `None` when there is none or it is of another format or damaged. It does not look at
    /// the log: pass the result to [`Engine::open_from`], which checks it against the log. So
    /// start-up can decode the snapshot on one thread while another opens the store.
    ///
    /// Then the deltas saved after it (see [`Engine::take_snapshot`]) are applied link by
    /// link, as long as each is the next one: the result is the state at the last. A link
    /// that is missing, of another chain or damaged ends the chain there (the log has the
    /// rest).
    pub async fn load_snapshot(
        snapshots: &dyn SnapshotStore,
        config: &EngineConfig,
    ) -> Option<Ledger> {
        Self::load_snapshot_with_room(snapshots, config, 0).await
    }

    /// [`Engine::load_snapshot`], with room set aside for `tail` more events (the log's
    /// tail after the snapshot, replayed next), so that the state does not grow by copying
    /// itself then.
    pub async fn load_snapshot_with_room(
        snapshots: &dyn SnapshotStore,
        config: &EngineConfig,
        tail: usize,
    ) -> Option<Ledger> {
        let snap = snapshots.load(&snapshot_scope(config)).await.ok()??;
        if snap.schema_fingerprint != SNAPSHOT_SCHEMA {
            return None;
        }
        // The chain's links as stored, each checked when it is applied: up to the first
        // missing one or one that does not go further.
        let mut links = Vec::new();
        let mut at = snap.position;
        for link in 1..=DELTA_LINKS_MAX {
            match snapshots.load(&delta_scope(config, link)).await {
                Ok(Some(d)) if d.schema_fingerprint == SNAPSHOT_DELTA_SCHEMA && d.position > at => {
                    at = d.position;
                    links.push(d);
                }
                _ => break,
            }
        }
        // Room for what the links add, set aside while decoding rather than grown link by
        // link (at least 4 bytes a link per event, so damaged positions cannot ask for more).
        let bytes: usize = links.iter().map(|d| d.bytes.len()).sum();
        let room = usize::try_from(at - snap.position)
            .map_or(0, |r| r.min(bytes / 4))
            .saturating_add(tail);
        let decode = || {
            Ledger::decode_snapshot_with_room(config.ledger.clone(), &snap.bytes, room)
                .ok()
                .filter(|l| l.position() == snap.position)
        };
        let mut ledger = decode()?;
        for (applied, delta) in links.iter().enumerate() {
            if !ledger.delta_fits(&delta.bytes) {
                break;
            }
            match ledger.apply_delta(&delta.bytes) {
                Ok(l) if l.position() == delta.position => ledger = l,
                // Written wrong or damaged past its checksum: the chain up to the link
                // before, restored again.
                _ => {
                    let mut again = decode()?;
                    for d in &links[..applied] {
                        again = again.apply_delta(&d.bytes).ok()?;
                    }
                    return Some(again);
                }
            }
        }
        Some(ledger)
    }

    /// Like [`Engine::open_with_snapshot`], with the snapshot already loaded (see
    /// [`Engine::load_snapshot`]): uses it when it is a prefix of `store`'s log (not ahead of
    /// it, and agreeing with it on the transaction time of its last position) and replays the
    /// events after it; otherwise replays the whole log.
    pub async fn open_from(
        store: S,
        snapshot: Option<Ledger>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Result<(Self, OpenedFrom), EngineError> {
        let from_snapshot = match snapshot {
            Some(ledger) => prefix_of_log(&store, ledger).await,
            None => None,
        };
        let (ledger, opened) = match from_snapshot {
            Some(ledger) => {
                let position = ledger.position();
                (
                    replay_onto(&store, ledger, |_| {}).await?,
                    OpenedFrom::Snapshot { position },
                )
            }
            None => (
                replay(&store, config.ledger.clone(), |_| {}).await?,
                OpenedFrom::Replay,
            ),
        };
        let engine = Engine {
            state: RwLock::new(ledger),
            store,
            clock,
            config,
            queue: Mutex::new(Vec::new()),
            leading: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            stats: Mutex::new(EngineStats::default()),
            readers_waiting: AtomicUsize::new(0),
            driven: AtomicBool::new(false),
            leader_waker: Mutex::new(None),
        };
        Ok((engine, opened))
    }

    /// Saves a snapshot of the current (durable) state, encoded in steps: a delta snapshot
    /// when that pays, a full one otherwise (see [`Engine::take_snapshot`]); returns the
    /// position it covers. [`Engine::load_snapshot`] reads both back.
    pub async fn save_snapshot(&self, snapshots: &dyn SnapshotStore) -> Result<u64, EngineError> {
        self.save_snapshot_in_steps(snapshots, SNAPSHOT_STEP_DEFAULT)
            .await
    }

    /// [`Engine::save_snapshot`] with steps of `budget` units (see
    /// [`Engine::snapshot_in_steps`]): smaller steps hold writers up for less time each.
    pub async fn save_snapshot_in_steps(
        &self,
        snapshots: &dyn SnapshotStore,
        budget: usize,
    ) -> Result<u64, EngineError> {
        let taken = match self.take_snapshot(budget).await {
            Ok(taken) => taken,
            // The state was rebuilt or another snapshot begun meanwhile: encode a full one in
            // one go, holding the state, rather than race again. Begun like any full
            // snapshot, so that once saved the next delta builds on it.
            Err(SnapshotAbandoned) => {
                self.exclusive(|l| {
                    let mut job = l.begin_snapshot();
                    // Cannot be abandoned: nothing else runs while the state is held.
                    while let Ok(false) = l.snapshot_step(&mut job, usize::MAX) {}
                    l.end_snapshot(&job);
                    EncodedSnapshot {
                        position: job.position(),
                        delta_of: None,
                        link: 0,
                        bytes: Arc::new(job.into_bytes()),
                    }
                })
                .await
            }
        };
        let position = taken.position;
        snapshots.save(self.snapshot_record(&taken)).await?;
        if taken.link == 0 {
            self.remove_stale_links(snapshots).await?;
        }
        self.snapshot_saved(&taken).await;
        Ok(position)
    }

    /// Removes from `snapshots` every delta of this log's chains (links 1 to
    /// [`DELTA_LINKS_MAX`]): call it once a full snapshot is saved, before its first delta,
    /// so the links of the chain it replaced do not stay on disk. Start-up would refuse them
    /// anyway (they do not follow the new full snapshot).
    pub async fn remove_stale_links(
        &self,
        snapshots: &dyn SnapshotStore,
    ) -> Result<(), EngineError> {
        for link in 1..=DELTA_LINKS_MAX {
            snapshots.remove(&delta_scope(&self.config, link)).await?;
        }
        Ok(())
    }

    /// Encodes a snapshot of the durable state in steps (see [`Engine::snapshot_in_steps`]):
    /// a delta snapshot ([`Ledger::begin_delta`], what changed since the last saved
    /// snapshot) when [`delta_pays`], a full one otherwise. Save it with
    /// [`Engine::snapshot_record`], then call [`Engine::snapshot_saved`]: only then does the
    /// next delta build on it.
    pub async fn take_snapshot(&self, budget: usize) -> Result<EncodedSnapshot, SnapshotAbandoned> {
        let job = self
            .exclusive(|l| {
                let delta = l
                    .last_saved_snapshot()
                    .is_some_and(|s| delta_pays(s, l.position()));
                match delta.then(|| l.begin_delta()).flatten() {
                    Some(job) => job,
                    None => l.begin_snapshot(),
                }
            })
            .await;
        self.encode_job(job, budget).await
    }

    /// Encodes a full snapshot of the durable state in steps (see
    /// [`Engine::snapshot_in_steps`]); once it is said to be saved
    /// ([`Engine::snapshot_saved`]) it starts a new chain. Meanwhile deltas can go on along
    /// the chain saved before ([`Engine::take_delta_snapshot`], from another task), so that
    /// the log's tail after the last saved snapshot stays short while the whole state is
    /// encoded (which takes time proportional to it).
    pub async fn take_full_snapshot(
        &self,
        budget: usize,
    ) -> Result<EncodedSnapshot, SnapshotAbandoned> {
        let job = self.exclusive(Ledger::begin_snapshot).await;
        self.encode_job(job, budget).await
    }

    /// Encodes a delta snapshot on the last saved one ([`Ledger::begin_delta`]), whether or
    /// not [`delta_pays`]; `None` when no snapshot is saved or the chain already has
    /// [`DELTA_LINKS_MAX`] links (start-up would not read another).
    pub async fn take_delta_snapshot(
        &self,
        budget: usize,
    ) -> Option<Result<EncodedSnapshot, SnapshotAbandoned>> {
        let job = self
            .exclusive(|l| {
                l.last_saved_snapshot()
                    .is_some_and(|s| s.link < DELTA_LINKS_MAX)
                    .then(|| l.begin_delta())
                    .flatten()
            })
            .await?;
        Some(self.encode_job(job, budget).await)
    }

    /// The last snapshot known to be saved (or restored from): what the next delta builds
    /// on.
    pub async fn last_saved_snapshot(&self) -> Option<SavedSnapshot> {
        self.read(Ledger::last_saved_snapshot).await
    }

    /// Says that the snapshot last said to be saved was not saved after all (see
    /// [`Ledger::snapshot_not_saved`]): the next snapshot is a full one.
    pub async fn snapshot_not_saved(&self) {
        self.exclusive(Ledger::snapshot_not_saved).await;
    }

    /// Runs `job` to the end in steps of `budget`.
    async fn encode_job(
        &self,
        job: SnapshotJob,
        budget: usize,
    ) -> Result<EncodedSnapshot, SnapshotAbandoned> {
        let (delta_of, link) = (job.delta_of(), job.link());
        let (position, bytes) = self.run_snapshot(job, budget).await?;
        Ok(EncodedSnapshot {
            position,
            delta_of,
            link,
            bytes: Arc::new(bytes),
        })
    }

    /// What a [`SnapshotStore`] should hold of `snapshot`: a full snapshot under
    /// [`Engine::snapshot_scope`], the `k`-th delta after it under that scope plus
    /// `-delta-k`.
    pub fn snapshot_record(&self, snapshot: &EncodedSnapshot) -> Snapshot {
        let (scope, schema) = match snapshot.link {
            0 => (snapshot_scope(&self.config), SNAPSHOT_SCHEMA),
            k => (delta_scope(&self.config, k), SNAPSHOT_DELTA_SCHEMA),
        };
        Snapshot {
            scope,
            position: snapshot.position,
            schema_fingerprint: schema,
            bytes: snapshot.bytes.clone(),
        }
    }

    /// Says that `snapshot` was saved: the next delta builds on it. A full snapshot may be
    /// said to be saved before it is written, so that the first delta on it is encoded first
    /// and the two are written one right after the other; say
    /// [`Engine::snapshot_not_saved`] if its write then fails.
    pub async fn snapshot_saved(&self, snapshot: &EncodedSnapshot) {
        self.exclusive(|l| l.snapshot_saved(&snapshot.bytes)).await;
    }

    /// Encodes a snapshot of the durable state without holding writers up for its whole
    /// length: the state is held exclusively only to cut it ([`Ledger::begin_snapshot`]: time
    /// proportional to the accounts and the small tables, not to the log) and to end it, and
    /// shared for one [`Ledger::snapshot_step`] of `budget` units at a time, with at least one
    /// batch decided and applied between two steps when commands are waiting. Returns the
    /// position covered and the snapshot's bytes; [`SnapshotAbandoned`] if the state was
    /// rebuilt meanwhile (after a store failure) or another snapshot was begun.
    ///
    /// If the returned future is dropped before it completes, entries changed afterwards are
    /// still kept as they were at the cut until the next snapshot begins (memory only).
    pub async fn snapshot_in_steps(
        &self,
        budget: usize,
    ) -> Result<(u64, Vec<u8>), SnapshotAbandoned> {
        let job = self.exclusive(Ledger::begin_snapshot).await;
        self.run_snapshot(job, budget).await
    }

    /// Runs a snapshot job in steps of `budget` units, with batches between them.
    async fn run_snapshot(
        &self,
        mut job: SnapshotJob,
        budget: usize,
    ) -> Result<(u64, Vec<u8>), SnapshotAbandoned> {
        let outcome = loop {
            match self.read(|l| l.snapshot_step(&mut job, budget)).await {
                Ok(false) => yield_now().await,
                done => break done,
            }
        };
        self.exclusive(|l| l.end_snapshot(&job)).await;
        outcome?;
        Ok((job.position(), job.into_bytes()))
    }

    /// Runs `f` on the ledger with exclusive access, between batches (the leader lets go of
    /// the state as it does for readers).
    async fn exclusive<R>(&self, f: impl FnOnce(&mut Ledger) -> R) -> R {
        self.readers_waiting.fetch_add(1, Ordering::AcqRel);
        let g = ReaderWaiting(&self.readers_waiting);
        let mut state = self.state.write().await;
        drop(g);
        f(&mut state)
    }

    /// The scope [`Engine::save_snapshot`] saves under, for an application that saves a copy
    /// of the state itself (for example encoded off the state lock).
    pub fn snapshot_scope(&self) -> String {
        snapshot_scope(&self.config)
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Batch statistics so far.
    pub fn stats(&self) -> EngineStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the ledger as of the last durable batch.
    pub async fn read<R>(&self, f: impl FnOnce(&Ledger) -> R) -> R {
        // Counted while waiting, so a leader with a batch in flight lets go of the lock.
        self.readers_waiting.fetch_add(1, Ordering::AcqRel);
        let g = ReaderWaiting(&self.readers_waiting);
        let state = self.state.read().await;
        drop(g);
        f(&state)
    }

    /// Executes one command.
    pub async fn execute(&self, command: Command, trace: Trace) -> Result<Outcome, EngineError> {
        self.execute_batch(vec![(command, trace)])
            .await
            .pop()
            .unwrap_or(Err(EngineError::Recovering))
    }

    /// Executes commands in order; each gets its own outcome. They are decided in one batch
    /// (possibly with other callers' commands) and made durable by one append.
    pub async fn execute_batch(
        &self,
        commands: Vec<(Command, Trace)>,
    ) -> Vec<Result<Outcome, EngineError>> {
        if commands.len() > COMMANDS_PER_BATCH_MAX {
            return commands
                .iter()
                .map(|_| Err(EngineError::BatchTooLarge))
                .collect();
        }
        let n = commands.len();
        let (tx, rx) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Pending {
                commands,
                reply: tx,
            });
        let waker = self
            .leader_waker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(w) = waker {
            w.wake();
        }
        if !self.driven.load(Ordering::Acquire) {
            self.lead_if_idle().await;
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => (0..n).map(|_| Err(EngineError::Recovering)).collect(),
        }
    }

    /// Leads every batch on the calling task, for as long as the returned future is polled;
    /// meanwhile callers of [`Engine::execute_batch`] only queue their commands and wait.
    ///
    /// Without it the first caller that finds no batch in flight leads, and keeps leading
    /// until the queue is empty: under a steady load one caller's answer can then wait long
    /// after its own batch is durable (seconds while a snapshot is encoded in steps), and a
    /// caller cancelled while leading (a dropped request) fails the commands queued behind
    /// it. A server spawns this once on its own task. Dropping it while it leads a batch
    /// has the effect of a cancelled leader (the state is rebuilt; queued commands fail with
    /// [`EngineError::Recovering`], safe to retry); dropping it while idle hands leading back
    /// to the callers.
    pub async fn drive(&self) {
        self.driven.store(true, Ordering::Release);
        let _driven = Driven(self);
        loop {
            std::future::poll_fn(|cx| {
                if !self.queue_is_empty() {
                    return Poll::Ready(());
                }
                *self.leader_waker.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(cx.waker().clone());
                // A command queued before the waker was in place would not have woken it.
                if self.queue_is_empty() {
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
            if !self.lead_if_idle().await {
                // A caller that began leading before this started still leads; it stops when
                // the queue is empty.
                yield_now().await;
            }
        }
    }

    /// Becomes the leader if no one is, and processes batches until the queue is empty;
    /// `false` if someone else leads.
    async fn lead_if_idle(&self) -> bool {
        loop {
            if self
                .leading
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return false; // someone else leads and will see our request
            }
            // If this future is dropped mid-batch (a cancelled request), the state may be ahead
            // of the log: the guard marks it for rebuilding and hands the lead back.
            let mut guard = LeadGuard {
                engine: self,
                done: false,
            };
            self.lead().await;
            guard.done = true;
            drop(guard);
            // A request may have arrived between our last look and giving up the lead.
            if self.queue_is_empty() {
                return true;
            }
        }
    }

    fn queue_is_empty(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    fn take_batch(&self) -> Vec<Pending> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let mut count = 0;
        let mut take = 0;
        for p in q.iter() {
            if take > 0 && count + p.commands.len() > COMMANDS_PER_BATCH_MAX {
                break;
            }
            count += p.commands.len();
            take += 1;
        }
        q.drain(..take).collect()
    }

    /// Decides and appends batches until the queue is empty, two deep: while one batch's
    /// append is in flight, the next is decided on the state that includes the first and
    /// handed to the store, so the store starts on it as soon as it has made the first
    /// durable (for the journal: the next group commit begins right after the last sync,
    /// instead of after the engine has answered and decided again). Nothing is answered
    /// before its batch and every batch before it are durable.
    ///
    /// The state lock is held while a batch is in flight, so readers never see a batch that
    /// is not durable yet; when a reader waits, the pipeline drains and lets go of the lock.
    /// If an append fails, the batch after it (decided on a state that included the failed
    /// one) is answered as its own append turned out (a store refuses it: it expects the log
    /// to have grown by the failed batch), and the state is rebuilt from the store.
    async fn lead(&self) {
        let mut state: Option<RwLockWriteGuard<'_, Ledger>> = None;
        let mut in_flight: Option<InFlight<'_>> = None;
        loop {
            let reader_waits = self.readers_waiting.load(Ordering::Acquire) > 0;
            let batch = if state.is_some() && reader_waits {
                Vec::new()
            } else {
                self.take_batch()
            };
            if batch.is_empty() && !reader_waits {
                if let Some(prev) = in_flight.as_mut() {
                    // Until it is durable, decide whatever arrives meanwhile.
                    if !self.durable_or_new_commands(prev).await {
                        continue;
                    }
                }
            }
            if batch.is_empty() {
                if let Some(prev) = in_flight.take() {
                    let st = state
                        .as_mut()
                        .expect("the lock is held while a batch is in flight");
                    if !self.finish(prev, None).await {
                        self.rebuild(st).await;
                    }
                }
                state = None;
                if self.queue_is_empty() {
                    return;
                }
                if reader_waits {
                    // Let the woken readers take the lock before it is asked for again.
                    yield_now().await;
                }
                continue;
            }
            if state.is_none() {
                if self.poisoned.load(Ordering::Acquire) && self.recover().await.is_err() {
                    answer_all(batch, &EngineError::Recovering);
                    continue;
                }
                state = Some(self.state.write().await);
            }
            let st = state.as_mut().expect("just taken");
            let next = self.decide(batch, st);
            let next = match next {
                Ok(next) => next,
                Err((batch, failure)) => {
                    // Decided on a state that may be ahead of the log: let what is in flight
                    // finish, then rebuild before deciding anything else.
                    if let Some(prev) = in_flight.take() {
                        self.finish(prev, None).await;
                    }
                    self.rebuild(st).await;
                    answer_all(batch, &failure);
                    if self.poisoned.load(Ordering::Acquire) {
                        state = None; // `recover` takes the lock itself
                    }
                    continue;
                }
            };
            let mut next = next;
            if !self.store.orders_appends_when_polled() {
                // One at a time: the store could order the next append before this one.
                if !self.finish(next, None).await {
                    self.rebuild(st).await;
                    if self.poisoned.load(Ordering::Acquire) {
                        state = None;
                    }
                }
                continue;
            }
            // Hand the events to the store now (one poll), so it works on them while the
            // batch before completes.
            next.poll_once().await;
            let Some(prev) = in_flight.replace(next) else {
                continue;
            };
            let next = in_flight.as_mut().expect("just put there");
            if !self.finish(prev, Some(next)).await {
                // The batch in flight was decided on a state that included the failed one.
                let after = in_flight.take().expect("still there");
                self.finish_after_failure(after).await;
                self.rebuild(st).await;
                if self.poisoned.load(Ordering::Acquire) {
                    state = None;
                }
            }
        }
    }

    /// Waits until `batch`'s append has its outcome (true) or new commands are queued (false).
    async fn durable_or_new_commands(&self, batch: &mut InFlight<'_>) -> bool {
        std::future::poll_fn(|cx| {
            if batch.poll_append(cx).is_ready() {
                return Poll::Ready(true);
            }
            *self.leader_waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
            // Checked after registering: a command queued before it would find no waker.
            if self.queue_is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(false)
            }
        })
        .await
    }

    /// Decides a batch on `state`: its events and each caller's outcomes, or, on a broken
    /// invariant, the batch back with the error (the state is then ahead of the log).
    fn decide<'a>(
        &'a self,
        batch: Vec<Pending>,
        state: &mut Ledger,
    ) -> Result<InFlight<'a>, (Vec<Pending>, EngineError)> {
        let start = state.position();
        let now = self.clock.now();
        let mut events: Vec<Envelope<LedgerEvent>> = Vec::new();
        let mut results: Vec<Vec<Result<Outcome, EngineError>>> = Vec::with_capacity(batch.len());
        let mut commands = 0u64;
        // Holds expire at their deadline without anyone asking: the first batch decided at or
        // after a deadline records the expiry before deciding its own commands.
        if state.next_hold_deadline().is_some_and(|d| d <= now) {
            let expire = Command::ExpireHolds;
            if let Err(e) = state.execute(
                &expire,
                &Trace::default(),
                now,
                self.config.log_id,
                &mut events,
            ) {
                return Err((batch, e.into()));
            }
        }
        // Executes the batch, each window warmed first; a broken invariant stops it.
        let log_id = self.config.log_id;
        let executed: Result<(), InvariantViolated> = (|| {
            let mut warmed = Warmed::default();
            for (i, p) in batch.iter().enumerate() {
                let mut out = Vec::with_capacity(p.commands.len());
                for (j, (cmd, trace)) in p.commands.iter().enumerate() {
                    let k = (commands % WARM_WINDOW as u64) as usize;
                    if k == 0 {
                        // The next window of the batch, across requests.
                        let rest = batch[i + 1..].iter().flat_map(|p| &p.commands);
                        let window = p.commands[j..].iter().chain(rest);
                        warmed = state.warm(window.take(WARM_WINDOW).map(|(c, _)| c));
                    }
                    commands += 1;
                    let hints = warmed.hints(k, cmd);
                    let r = state.execute_hinted(cmd, hints, trace, now, log_id, &mut events)?;
                    out.push(r.map_err(EngineError::Rejected));
                }
                results.push(out);
            }
            Ok(())
        })();
        if let Err(e) = executed {
            return Err((batch, EngineError::from(e)));
        }
        let n = events.len() as u64;
        let append = (!events.is_empty()).then(|| {
            self.store.append(AppendBatch {
                expected_position: start,
                expectations: Vec::new(),
                events,
            })
        });
        Ok(InFlight {
            append,
            outcome: None,
            batch,
            results,
            events: n,
            commands,
        })
    }

    /// Waits until `batch` is durable (driving `next` meanwhile, whose result is kept if it
    /// comes first) and answers its callers; returns whether it became durable.
    async fn finish(&self, mut batch: InFlight<'_>, mut next: Option<&mut InFlight<'_>>) -> bool {
        std::future::poll_fn(|cx| {
            if let Some(n) = next.as_deref_mut() {
                let _ = n.poll_append(cx);
            }
            batch.poll_append(cx)
        })
        .await;
        match batch.outcome.take().expect("polled to completion") {
            Ok(()) => {
                if batch.events > 0 {
                    let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                    s.batches += 1;
                    s.events += batch.events;
                    s.commands += batch.commands;
                    s.last_batch_commands = batch.commands;
                }
                for (p, r) in batch.batch.into_iter().zip(batch.results) {
                    let _ = p.reply.send(r);
                }
                true
            }
            Err(e) => {
                answer_all(batch.batch, &EngineError::Store(e));
                false
            }
        }
    }

    /// Answers a batch decided on a state that included a batch whose append failed: as its
    /// own append turned out (a store that lost the batch before refuses it), or, if it had
    /// nothing to append, with the failure (its answers may rest on the lost batch).
    async fn finish_after_failure(&self, batch: InFlight<'_>) {
        if batch.events > 0 {
            self.finish(batch, None).await;
        } else {
            let e = StoreError::Unavailable("an earlier batch failed to append; retry".into());
            answer_all(batch.batch, &EngineError::Store(e));
        }
    }

    /// Replaces the state (ahead of the log after a failure) by a replay of the store; if that
    /// fails too, marks the engine for recovery.
    async fn rebuild(&self, state: &mut Ledger) {
        match replay(&self.store, self.config.ledger.clone(), |_| {}).await {
            Ok(fresh) => *state = fresh,
            Err(_) => self.poisoned.store(true, Ordering::Release),
        }
    }

    /// Rebuilds the state from the store (after a failure, or on demand).
    pub async fn recover(&self) -> Result<(), EngineError> {
        let fresh = replay(&self.store, self.config.ledger.clone(), |_| {}).await?;
        *self.state.write().await = fresh;
        self.poisoned.store(false, Ordering::Release);
        Ok(())
    }
}

/// Where [`Engine::open_with_snapshot`] started from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenedFrom {
    /// A snapshot covering the log up to `position`, plus the events after it.
    Snapshot {
        /// Last position the snapshot covered.
        position: u64,
    },
    /// The whole log (no usable snapshot).
    Replay,
}

fn snapshot_scope(config: &EngineConfig) -> String {
    format!("ledger-{}", config.log_id)
}

/// Where [`Engine::save_snapshot`] keeps the `link`-th delta after a full snapshot.
fn delta_scope(config: &EngineConfig, link: u32) -> String {
    format!("ledger-{}-delta-{link}", config.log_id)
}

/// The most deltas after one full snapshot: start-up reads at most this many links.
pub const DELTA_LINKS_MAX: u32 = 32;

/// The chain length at which [`delta_pays`] says to begin a new chain; deltas may go on along
/// the old one up to [`DELTA_LINKS_MAX`] while its full snapshot is encoded.
pub const DELTA_LINKS_REBASE: u32 = 24;

/// How much a chain may grow, as a multiple of its full snapshot, before the next snapshot
/// is a full one.
pub const DELTA_GROWTH_MAX: u64 = 3;

/// Whether the next snapshot at `position`, after the saved snapshot `last`, should be a
/// delta: while the chain is shorter than [`DELTA_LINKS_REBASE`] and the state has grown by
/// less than [`DELTA_GROWTH_MAX`] times the chain's full snapshot since it. Restoring a
/// chain costs about what restoring one full snapshot of the same state does, so chains
/// are cut only to keep them short (fewer files to trust at start-up) and the full
/// snapshots' positions growing geometrically, which keeps their total cost proportional
/// to the log.
pub fn delta_pays(last: SavedSnapshot, position: u64) -> bool {
    last.link < DELTA_LINKS_REBASE
        && position.saturating_sub(last.base) < last.base.saturating_mul(DELTA_GROWTH_MAX)
}

/// A snapshot encoded by [`Engine::take_snapshot`].
#[derive(Debug)]
pub struct EncodedSnapshot {
    /// The last log position it covers.
    pub position: u64,
    /// For a delta snapshot, the position of the snapshot it builds on; `None` for a full
    /// snapshot.
    pub delta_of: Option<u64>,
    /// 0 for a full snapshot, `k` for the `k`-th delta after one.
    pub link: u32,
    /// Its bytes.
    pub bytes: Arc<Vec<u8>>,
}

/// The snapshot's ledger, if it can be trusted as a prefix of this store's log.
async fn prefix_of_log<S: EventStore<LedgerEvent>>(store: &S, ledger: Ledger) -> Option<Ledger> {
    let position = ledger.position();
    if position > store.last_position().await.ok()? {
        return None;
    }
    if position > 0 {
        // The log's event at that position must be the one the snapshot folded last.
        let at = store.read_all(position - 1, 1).await.ok()?;
        if at.first().map(|e| e.recorded_at) != ledger.recorded_at() {
            return None;
        }
    }
    Some(ledger)
}

/// Hands leading back to the callers when [`Engine::drive`] stops; commands it had not
/// taken yet get [`EngineError::Recovering`] (nobody else would lead them).
struct Driven<'a, S>(&'a Engine<S>);

impl<S> Drop for Driven<'_, S> {
    fn drop(&mut self) {
        self.0.driven.store(false, Ordering::Release);
        let queued: Vec<Pending> = self
            .0
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        answer_all(queued, &EngineError::Recovering);
    }
}

struct LeadGuard<'a, S> {
    engine: &'a Engine<S>,
    done: bool,
}

impl<S> Drop for LeadGuard<'_, S> {
    fn drop(&mut self) {
        if !self.done {
            self.engine.poisoned.store(true, Ordering::Release);
            // Callers queued behind the dropped leader have already gone to wait on their
            // replies; nobody would serve them until a new caller arrives. Answer them now:
            // their commands were not decided, so retrying is safe.
            let queued: Vec<Pending> = self
                .engine
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
                .collect();
            for p in queued {
                let n = p.commands.len();
                let _ = p
                    .reply
                    .send((0..n).map(|_| Err(EngineError::Recovering)).collect());
            }
        }
        self.engine.leading.store(false, Ordering::Release);
    }
}

/// Rebuilds a ledger by applying every event of `store` in order; `progress` is called with
/// the position reached after each page.
pub async fn replay<S: EventStore<LedgerEvent> + ?Sized>(
    store: &S,
    config: LedgerConfig,
    progress: impl FnMut(u64),
) -> Result<Ledger, EngineError> {
    replay_onto(store, Ledger::new(config), progress).await
}

/// Applies every event of `store` after `ledger`'s position (catch-up after a snapshot).
pub async fn replay_onto<S: EventStore<LedgerEvent> + ?Sized>(
    store: &S,
    mut ledger: Ledger,
    mut progress: impl FnMut(u64),
) -> Result<Ledger, EngineError> {
    // Index changes are buffered across pages and applied account by account (see
    // `Ledger::apply_all`); the ledger is only handed out after the buffer is applied.
    ledger.bulk_begin();
    // Room for every event still to come (at most one entry each), so the maps grow once here
    // rather than rehashing what they hold midway: the tail after a snapshot can be as long
    // as the snapshot interval.
    if let Ok(last) = store.last_position().await {
        let tail = last.saturating_sub(ledger.position());
        ledger.reserve(usize::try_from(tail).unwrap_or(0));
    }
    loop {
        let page = store
            .read_all(ledger.position(), EVENTS_PER_READ_MAX)
            .await?;
        if page.is_empty() {
            ledger.bulk_end()?;
            return Ok(ledger);
        }
        for env in &page {
            ledger.apply(env)?;
        }
        progress(ledger.position());
    }
}
