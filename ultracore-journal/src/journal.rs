//! The journal: an [`EventStore`] on segment files, with one writer thread that group-commits
//! every append queued while it synced the previous group, and an in-memory index (position →
//! file offset, stream → positions) rebuilt at open.
//!
//! Order of one group, on the writer thread:
//! 1. take every request queued (blocking for the first);
//! 2. validate each batch in arrival order with core's `validate_batch`, against the log as
//!    extended by the batches accepted before it in the same group; refused batches are
//!    answered at once (nothing of theirs is written);
//! 3. write the accepted frames (pre-encoded by their callers) with one `write` at the end of
//!    the records (over preallocated zeros when the write is small: see
//!    `JournalConfig::preallocate_bytes`), rolling over to a new segment when the current one
//!    would exceed its size (new segment: header synced, directory synced);
//! 4. `fdatasync` once;
//! 5. publish the new events to the index and the last position, wake `wait_for` waiters;
//! 6. answer every accepted caller.
//!
//! A write or sync failure leaves the file in an unknown state (and a failed `fsync` cannot be
//! retried safely), so the journal then refuses every further append with `Unavailable` until
//! it is reopened, which runs recovery. Reads go on serving what was durable.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use async_trait::async_trait;
use futures_channel::oneshot;
use smallvec::SmallVec;
use ultracore_core::event::Envelope;
use ultracore_core::ids::StreamId;
use ultracore_core::limits::EVENTS_PER_READ_MAX;
use ultracore_core::store::{validate_batch, AppendBatch, AppendReceipt, EventStore, StoreError};
use ultracore_core::time::RecordedAt;

use crate::checkpoint::{self, BaseId, Checkpoint, Link};
use crate::codec::{self, EncodeError, EncodedRecord, JournalEvent};
use crate::error::{JournalError, RecoveryReport};
use crate::lock::DirLock;
use crate::segment::{self, SEGMENT_HEADER_LEN};
use crate::streams::{self, Positions, StreamIndex};

/// Smallest allowed `segment_size_max`.
pub const SEGMENT_SIZE_MIN: u64 = 4096;
/// Largest allowed `segment_size_max`: with a record of up to `RECORD_LEN_MAX` after it, every
/// offset in a segment still fits in `u32`.
pub const SEGMENT_SIZE_MAX: u64 = 1 << 30;
/// Most requests the writer takes into one group (bounds the memory of one write).
pub const GROUP_REQUESTS_MAX: usize = 4096;

const _: () = assert!(SEGMENT_SIZE_MAX + codec::RECORD_LEN_MAX as u64 + 64 < u32::MAX as u64);

/// Journal settings.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// A segment is closed and a new one started before a record would take it past this size
    /// (a single larger record gets a segment of its own). Default 64 MiB.
    pub segment_size_max: u64,
    /// Bits of the stream hash the index keeps: all of them (`!0`, the default). Tests set a
    /// tiny mask to make different streams collide; answers must stay exact regardless.
    #[doc(hidden)]
    pub stream_hash_mask: u64,
    /// Bytes of zeros the writer adds (and syncs) ahead of its appends whenever they would
    /// reach past the space already written: appends then overwrite existing blocks, so their
    /// `fdatasync` flushes data only, never the file size (on ext4 that skips a journal commit
    /// per sync: ~1.4x the syncs per second and ~25% less CPU per sync on this project's
    /// machines). Default 1 MiB (a ~2 ms stall every MiB of log); 0 appends by growing the
    /// file, as journals written before this setting existed were. Only small group writes
    /// (under [`PREALLOCATE_WRITE_MAX`]) preallocate: for a large one the sync is dominated
    /// by its data, and writing it twice (zeros, then data) would cost more than it saves.
    pub preallocate_bytes: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            segment_size_max: 64 << 20,
            stream_hash_mask: !0,
            preallocate_bytes: PREALLOCATE_BYTES_DEFAULT,
        }
    }
}

/// Default [`JournalConfig::preallocate_bytes`].
pub const PREALLOCATE_BYTES_DEFAULT: u64 = 1 << 20;

/// Group writes of at least this many bytes grow the file instead of preallocating.
pub const PREALLOCATE_WRITE_MAX: u64 = 128 << 10;

struct SegmentRef {
    path: PathBuf,
    file: Arc<File>,
    /// Bytes durable and published.
    len: u64,
    /// `segment::fold_crc` over the body checksums of its records up to `len`.
    crc_fold: u32,
}

/// What readers see: only published (durable) events.
struct Index {
    /// `(segment index << 32) | offset` of the event at position `i + 1`.
    locations: Vec<u64>,
    segments: Vec<SegmentRef>,
    streams: StreamIndex,
    last_recorded_at: Option<RecordedAt>,
    /// Once a checkpoint chain exists: the stream keys `(hash, first)` of the events from
    /// position `log.0` on, for the chain's next link (see `checkpoint.rs`).
    log: Option<(u64, Vec<(u64, u64)>)>,
}

/// The checkpoint chain on disk that the next link extends.
#[derive(Clone, Copy, Debug)]
struct Chain {
    base: BaseId,
    links: u64,
    /// Events covered by the base and the links.
    covered: u64,
}

impl Chain {
    /// Whether the next checkpoint, at `events`, should be a new base rather than a link:
    /// when the links would cover as many events as the base, or the chain is full.
    fn rebase_at(&self, events: u64) -> bool {
        self.links >= checkpoint::LINKS_MAX || events - self.base.events >= self.base.events
    }
}

impl Index {
    /// Whether the event at `position` is on the stream named `name` (read from the log: the
    /// index keeps hashes, not names).
    fn stream_is(&self, position: u64, name: &[u8]) -> std::io::Result<bool> {
        let (seg, off) = unpack(self.locations[(position - 1) as usize]);
        let s = &self.segments[seg];
        let mut buf = [0u8; codec::STREAM_NAME_SPAN];
        let n = s.len.saturating_sub(off).min(buf.len() as u64) as usize;
        s.file.read_exact_at(&mut buf[..n], off)?;
        let stored = codec::event_stream(&buf[..n]).map_err(|e| {
            std::io::Error::other(format!(
                "{} at byte {off}: stream name of the event at position {position}: {e}",
                s.path.display()
            ))
        })?;
        Ok(stored == name)
    }

    /// The positions of the stream named `name` whose stored hash is `hash`.
    fn find(&self, hash: u64, name: &[u8]) -> std::io::Result<Option<Positions<'_>>> {
        self.streams.find(hash, |first| self.stream_is(first, name))
    }

    /// [`Index::find`] with the name made only if a stream with that hash exists (most
    /// appends start new streams, and formatting each name cost a third of validation).
    fn find_stream(&self, hash: u64, stream: &StreamId) -> std::io::Result<Option<Positions<'_>>> {
        let name = std::cell::OnceCell::new();
        self.streams.find(hash, |first| {
            self.stream_is(first, name.get_or_init(|| stream.to_string()).as_bytes())
        })
    }
}

struct Shared {
    dir: PathBuf,
    /// Held until the last handle (the journal, its writer thread) is gone.
    _lock: DirLock,
    /// The stream index's hash seed and mask (fixed for the journal's life), so appenders can
    /// hash their streams before queueing.
    hash_seed: u64,
    hash_mask: u64,
    stats: StatCounters,
    index: RwLock<Index>,
    last_position: AtomicU64,
    waiters: Mutex<Vec<oneshot::Sender<()>>>,
    /// One checkpoint written at a time; the chain the next one extends, if any.
    checkpointing: Mutex<Option<Chain>>,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Index> {
        // The writer only mutates the index after the data is durable and cannot panic midway
        // through an update that readers could observe half-done (pushes and inserts).
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct StatCounters {
    syncs: AtomicU64,
    appends: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
    sync_micros: AtomicU64,
    sync_micros_max: AtomicU64,
    busy_micros: AtomicU64,
}

/// What the journal has done since it was opened (for metrics and benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// `fdatasync` calls on segments (one per group, plus one per rollover).
    pub syncs: u64,
    /// Appends acknowledged.
    pub appends: u64,
    /// Events acknowledged.
    pub events: u64,
    /// Bytes written and acknowledged.
    pub bytes: u64,
    /// Time spent in `write` + `fdatasync`, in total and at most once.
    pub sync_micros: u64,
    /// The longest single `write` + `fdatasync`.
    pub sync_micros_max: u64,
    /// Time the writer thread spent on groups (validation, IO, index, answers).
    pub busy_micros: u64,
}

struct Request<E> {
    batch: AppendBatch<E>,
    encoded: Result<EncodedRecord, EncodeError>,
    /// Each event's stream hash, computed on the caller's thread (empty if encoding failed).
    hashes: Vec<u64>,
    reply: oneshot::Sender<Reply<E>>,
}

/// The outcome, and the batch handed back so that its memory is freed on the caller's thread
/// rather than on the writer's critical path (freeing memory another thread allocated is
/// slow in glibc's allocator, and it was a quarter of the writer's time).
type Reply<E> = (Result<AppendReceipt, StoreError>, Option<AppendBatch<E>>);

/// An embedded, durable [`EventStore`] on segment files in one directory.
///
/// One `Journal` per directory (one process, one writer): open takes an exclusive lock on the
/// directory and a second open fails with [`JournalError::Locked`] until this one is dropped.
/// Dropping it lets the writer thread finish the appends already queued, then joins it.
pub struct Journal<E: JournalEvent> {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Request<E>>>,
    writer: Option<JoinHandle<()>>,
    _events: PhantomData<fn() -> E>,
}

impl<E: JournalEvent> Journal<E> {
    /// Opens (or creates) the journal in `dir`: scans every segment, rebuilds the index,
    /// truncates a torn tail (reported in the [`RecoveryReport`]) and refuses to open on any
    /// other damage ([`JournalError::Corrupt`], naming the file and byte offset).
    pub fn open(
        dir: impl AsRef<Path>,
        config: JournalConfig,
    ) -> Result<(Journal<E>, RecoveryReport), JournalError> {
        let dir = dir.as_ref().to_path_buf();
        if !(SEGMENT_SIZE_MIN..=SEGMENT_SIZE_MAX).contains(&config.segment_size_max) {
            return Err(JournalError::Config(format!(
                "segment_size_max must be {SEGMENT_SIZE_MIN} to {SEGMENT_SIZE_MAX} bytes"
            )));
        }
        std::fs::create_dir_all(&dir).map_err(JournalError::io(&dir))?;
        // Before recovery, which may truncate a torn tail: that tail may be another writer's.
        let lock = DirLock::acquire(&dir)?;
        let (index, report, writer_file, chain) = recover(&dir, &config)?;
        let (hash_seed, hash_mask) = (index.streams.seed(), index.streams.mask());
        let last_position = index.locations.len() as u64;
        let last_recorded_at = index.last_recorded_at;
        let seg_idx = index.segments.len() - 1;
        let seg_len = index.segments[seg_idx].len;
        let seg_fold = index.segments[seg_idx].crc_fold;
        let seg_alloc = writer_file
            .metadata()
            .map_err(JournalError::io(&index.segments[seg_idx].path))?
            .len()
            .max(seg_len);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            _lock: lock,
            hash_seed,
            hash_mask,
            stats: StatCounters::default(),
            index: RwLock::new(index),
            last_position: AtomicU64::new(last_position),
            waiters: Mutex::new(Vec::new()),
            checkpointing: Mutex::new(chain),
        });
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer {
            shared: shared.clone(),
            file: writer_file,
            seg_idx,
            seg_len,
            seg_alloc,
            preallocate_bytes: config.preallocate_bytes,
            seg_fold,
            segment_size_max: config.segment_size_max,
            last_position,
            last_recorded_at,
            failed: None,
            buf: Vec::new(),
        };
        let handle = std::thread::Builder::new()
            .name("ultracore-journal".into())
            .spawn(move || writer.run(rx))
            .map_err(JournalError::io(&dir))?;
        Ok((
            Journal {
                shared,
                tx: Some(tx),
                writer: Some(handle),
                _events: PhantomData,
            },
            report,
        ))
    }

    /// Counters since open.
    pub fn stats(&self) -> JournalStats {
        let s = &self.shared.stats;
        JournalStats {
            syncs: s.syncs.load(Ordering::Relaxed),
            appends: s.appends.load(Ordering::Relaxed),
            events: s.events.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            sync_micros: s.sync_micros.load(Ordering::Relaxed),
            sync_micros_max: s.sync_micros_max.load(Ordering::Relaxed),
            busy_micros: s.busy_micros.load(Ordering::Relaxed),
        }
    }

    /// Writes an index checkpoint of everything durable now and returns the position it
    /// covers; the next [`Journal::open`] then decodes only the events after it (it still reads
    /// and checksums every record). Call it alongside ledger snapshots.
    ///
    /// Checkpoints form chains (see `checkpoint.rs`): usually this writes a *link* with only
    /// the events since the last checkpoint (~24 bytes each; the writer's publish pauses for
    /// the move of its key log, O(1), and a copy of the new locations); about once per doubling
    /// of the log it writes a new *base*, the whole index, copied under the index's read lock
    /// (a pause of the writer's publish for ~30 bytes per event of memcpy) and written outside
    /// it. A link that fails to write ends the chain: the next checkpoint is a base.
    ///
    /// Once a chain exists, the journal keeps 16 bytes per event appended since the last
    /// checkpoint (the keys of the next link), so call it regularly (the server does after every
    /// ledger snapshot, by default every 1,000,000 events).
    pub fn checkpoint(&self) -> Result<u64, JournalError> {
        let mut chain = self
            .shared
            .checkpointing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let events = self.shared.last_position.load(Ordering::Acquire);
        match *chain {
            Some(c) if !c.rebase_at(events) => {
                let link = {
                    let mut idx = self.shared.write();
                    let len = idx.locations.len() as u64;
                    let segments = idx.segments.iter().map(|s| (s.len, s.crc_fold)).collect();
                    let last_recorded_at = idx.last_recorded_at;
                    let locations = idx.locations[c.covered as usize..].to_vec();
                    let (from, keys) = idx
                        .log
                        .replace((len + 1, Vec::new()))
                        .expect("a chain keeps a key log");
                    // The log starts at or before the chain's end (it may hold events a new
                    // base already covers).
                    let skip = (c.covered + 1 - from) as usize;
                    debug_assert_eq!(keys.len() - skip, locations.len());
                    Link {
                        base: c.base,
                        number: c.links + 1,
                        before: c.covered,
                        segments,
                        last_recorded_at,
                        events: locations
                            .into_iter()
                            .zip(&keys[skip..])
                            .map(|(l, &(hash, first))| [l, hash, first])
                            .collect(),
                    }
                };
                if link.events.is_empty() {
                    return Ok(c.covered);
                }
                let covered = c.covered + link.events.len() as u64;
                // The log has been handed over: if the link is not written, only a new base
                // can cover its events.
                *chain = None;
                checkpoint::save_link(&self.shared.dir, &link)?;
                *chain = Some(Chain {
                    links: link.number,
                    covered,
                    ..c
                });
                Ok(covered)
            }
            _ => {
                *chain = None;
                {
                    // The key log starts no later than the base's end.
                    let mut idx = self.shared.write();
                    if idx.log.is_none() {
                        idx.log = Some((idx.locations.len() as u64 + 1, Vec::new()));
                    }
                }
                let cp = {
                    let idx = self.shared.read();
                    Checkpoint {
                        segments: idx.segments.iter().map(|s| (s.len, s.crc_fold)).collect(),
                        locations: idx.locations.clone(),
                        last_recorded_at: idx.last_recorded_at,
                        streams: idx.streams.clone(),
                    }
                };
                let base = checkpoint::save(&self.shared.dir, &cp)?;
                *chain = Some(Chain {
                    base,
                    links: 0,
                    covered: base.events,
                });
                // Links of the old chain name the old base and would never be applied; they
                // are removed so that they do not pile up.
                checkpoint::remove_links(&self.shared.dir)?;
                Ok(base.events)
            }
        }
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Queues `batch` for the writer now and returns a future for its outcome. Appends
    /// submitted in order from one thread are validated and written in that order, so a
    /// caller may pipeline batches (the next one expecting the position the previous one
    /// will reach) without waiting for each sync. [`EventStore::append`] is `submit(..).await`.
    /// The batch is encoded on the calling thread, off the writer's critical path.
    pub fn submit(
        &self,
        batch: AppendBatch<E>,
    ) -> impl std::future::Future<Output = Result<AppendReceipt, StoreError>> + Send + 'static {
        let encoded = codec::encode_record(&batch.events);
        let (seed, mask) = (self.shared.hash_seed, self.shared.hash_mask);
        let hashes = match &encoded {
            // The name as the record stores it: what the recovery scan will hash.
            Ok(rec) => rec
                .event_offsets
                .iter()
                .map(|&o| {
                    codec::event_stream(&rec.frame[o as usize..])
                        .map_or(0, |name| streams::hash_with(seed, mask, name))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.as_ref().map(|tx| {
            tx.send(Request {
                batch,
                encoded,
                hashes,
                reply,
            })
            .is_ok()
        });
        async move {
            if sent != Some(true) {
                return Err(StoreError::Unavailable("journal writer stopped".into()));
            }
            match rx.await {
                Ok((outcome, batch)) => {
                    drop(batch);
                    outcome
                }
                Err(_) => Err(StoreError::Unavailable(
                    "journal writer stopped; the outcome is unknown".into(),
                )),
            }
        }
    }

    /// Reads the events at positions `first..=last` (all published).
    fn read_positions(&self, first: u64, last: u64) -> Result<Vec<Envelope<E>>, StoreError> {
        if first > last {
            return Ok(Vec::new());
        }
        let runs = self.plan(first, last);
        let mut out = Vec::with_capacity((last - first + 1) as usize);
        for run in runs {
            let mut buf = vec![0u8; (run.end - run.start) as usize];
            run.file
                .read_exact_at(&mut buf, run.start)
                .map_err(|e| StoreError::Unavailable(format!("{}: {e}", run.path.display())))?;
            for (position, rel) in run.events {
                let env = codec::decode_event(&buf[rel..], position).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "{} at byte {}: {e}",
                        run.path.display(),
                        run.start + rel as u64
                    ))
                })?;
                out.push(env);
            }
        }
        Ok(out)
    }

    /// Splits `first..=last` into byte ranges, one per segment touched.
    fn plan(&self, first: u64, last: u64) -> Vec<Run> {
        let idx = self.shared.read();
        let mut runs: Vec<Run> = Vec::new();
        for p in first..=last {
            let (seg, off) = unpack(idx.locations[(p - 1) as usize]);
            match runs.last_mut() {
                Some(run) if run.seg == seg => {
                    run.events.push((p, (off - run.start) as usize));
                }
                _ => runs.push(Run {
                    seg,
                    path: idx.segments[seg].path.clone(),
                    file: idx.segments[seg].file.clone(),
                    start: off,
                    end: 0,
                    events: vec![(p, 0)],
                }),
            }
        }
        for run in &mut runs {
            let (p_last, rel) = *run.events.last().expect("runs are never empty");
            run.end = match idx.locations.get(p_last as usize).map(|&l| unpack(l)) {
                Some((seg, off)) if seg == run.seg => off,
                _ => idx.segments[run.seg].len,
            };
            debug_assert!(run.end >= run.start + rel as u64);
        }
        runs
    }
}

struct Run {
    seg: usize,
    path: PathBuf,
    file: Arc<File>,
    start: u64,
    end: u64,
    events: Vec<(u64, usize)>,
}

fn pack(seg: usize, offset: u64) -> u64 {
    ((seg as u64) << 32) | offset
}

fn unpack(loc: u64) -> (usize, u64) {
    ((loc >> 32) as usize, loc & 0xffff_ffff)
}

impl<E: JournalEvent> Drop for Journal<E> {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.writer.take() {
            // A panicked writer already answered nobody; its callers saw `Unavailable`.
            let _ = h.join();
        }
    }
}

#[async_trait]
impl<E: JournalEvent> EventStore<E> for Journal<E> {
    /// The first poll queues the batch to the writer thread, which takes requests in order.
    fn orders_appends_when_polled(&self) -> bool {
        true
    }

    async fn append(&self, batch: AppendBatch<E>) -> Result<AppendReceipt, StoreError> {
        self.submit(batch).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<Envelope<E>>, StoreError> {
        let limit = limit.min(EVENTS_PER_READ_MAX);
        let name = stream.to_string();
        let positions: Vec<u64> = {
            let idx = self.shared.read();
            let hash = idx.streams.hash(name.as_bytes());
            idx.find(hash, name.as_bytes())
                .map_err(|e| StoreError::Unavailable(format!("journal read: {e}")))?
                .map_or_else(Vec::new, |p| p.range(from_version, limit))
        };
        let mut out = Vec::with_capacity(positions.len());
        for p in positions {
            out.extend(self.read_positions(p, p)?);
        }
        Ok(out)
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<Envelope<E>>, StoreError> {
        let limit = limit.min(EVENTS_PER_READ_MAX) as u64;
        let last = self.shared.last_position.load(Ordering::Acquire);
        if after >= last || limit == 0 {
            return Ok(Vec::new());
        }
        self.read_positions(after + 1, last.min(after + limit))
    }

    async fn last_position(&self) -> Result<u64, StoreError> {
        Ok(self.shared.last_position.load(Ordering::Acquire))
    }

    async fn wait_for(&self, after: u64) -> Result<(), StoreError> {
        let rx = {
            // Checked under the waiters' lock, which the writer takes after publishing: a
            // commit can never fall between the check and the registration.
            let mut w = self
                .shared
                .waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if self.shared.last_position.load(Ordering::Acquire) > after {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            w.push(tx);
            rx
        };
        rx.await
            .map_err(|_| StoreError::Unavailable("journal closed".into()))
    }
}

/// Scans every segment and returns the index, the report and the last segment open for append.
/// With a usable index checkpoint, events it covers are checked (record checksums, positions,
/// locations) but not decoded; if it disagrees with the segments in any way, or the scan
/// through it fails, the index is rebuilt from a full scan instead (which reports real damage).
fn recover(
    dir: &Path,
    config: &JournalConfig,
) -> Result<(Index, RecoveryReport, File, Option<Chain>), JournalError> {
    let mut files = segment::list(dir)?;
    if files.is_empty() {
        segment::create(dir, 1, 1)?;
        files = segment::list(dir)?;
    }
    let mut ignored = None;
    let mut torn_before = None;
    let mut result = None;
    let mut chain = None;
    match checkpoint::load(dir, config.stream_hash_mask) {
        Ok(None) => {}
        Err(why) => ignored = Some(why),
        Ok(Some(loaded)) => {
            let position = loaded.checkpoint.locations.len() as u64;
            match scan_segments(&files, config, Some(loaded.checkpoint)) {
                Ok(Ok((index, mut report))) => {
                    report.checkpoint = Some(position);
                    report.checkpoint_links = loaded.links;
                    // A chain with a link file not applied is not extended: the next
                    // checkpoint is a new base, which removes the link files.
                    if loaded.link_ignored.is_none() {
                        chain = Some(Chain {
                            base: loaded.base,
                            links: loaded.links,
                            covered: position,
                        });
                    }
                    report.checkpoint_link_ignored = loaded.link_ignored;
                    result = Some((index, report));
                }
                Ok(Err((why, torn))) => {
                    ignored = Some(why);
                    torn_before = torn;
                }
                Err(e) => {
                    ignored = Some(format!("scan through it failed: {e}"));
                }
            }
        }
    }
    let (index, mut report) = match result {
        Some(r) => r,
        None => match scan_segments(&files, config, None)? {
            Ok(r) => r,
            Err((why, _)) => unreachable!("a full scan has no checkpoint to disagree with: {why}"),
        },
    };
    if report.torn_tail.is_none() {
        // Cut off by the attempt through the checkpoint, before it was abandoned.
        report.torn_tail = torn_before;
    }
    report.checkpoint_ignored = ignored;
    let last = index.segments.last().expect("at least one segment");
    let writer_file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&last.path)
        .map_err(JournalError::io(&last.path))?;
    Ok((index, report, writer_file, chain))
}

/// Why a checkpoint was abandoned, and a torn tail cut off before that.
type Disagreement = (String, Option<crate::error::TornTail>);

fn scan_segments(
    files: &[(u32, PathBuf)],
    config: &JournalConfig,
    cp: Option<Checkpoint>,
) -> Result<Result<(Index, RecoveryReport), Disagreement>, JournalError> {
    // Pre-size the index from the segment sizes (~100 bytes per event; most ledger events
    // start a stream), so the scan never grows it.
    let bytes: u64 = files
        .iter()
        .filter_map(|(_, p)| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let events_guess = (bytes / 100) as usize;
    let (mut index, covered_lens) = match cp {
        Some(cp) => {
            let mut locations = cp.locations;
            locations.reserve(events_guess.saturating_sub(locations.len()));
            // The chain goes on from the checkpoint: the keys of the events after it are kept
            // for its next link.
            let covered = locations.len() as u64;
            let index = Index {
                locations,
                segments: Vec::with_capacity(files.len()),
                streams: cp.streams,
                last_recorded_at: cp.last_recorded_at,
                log: Some((covered + 1, Vec::new())),
            };
            (index, cp.segments)
        }
        None => {
            let index = Index {
                locations: Vec::with_capacity(events_guess),
                segments: Vec::with_capacity(files.len()),
                streams: StreamIndex::new(
                    streams::random_seed(),
                    config.stream_hash_mask,
                    events_guess,
                ),
                last_recorded_at: None,
                log: None,
            };
            (index, Vec::new())
        }
    };
    if covered_lens.len() > files.len() {
        return Ok(Err(("covers segments that do not exist".into(), None)));
    }
    let covered_events = index.locations.len() as u64;
    let mut seen_covered = 0u64;
    let mut disagreement: Option<String> = None;
    let mut report = RecoveryReport::default();
    let count = files.len();
    let mut next = 1u64;
    // One read buffer for every segment (see `segment::scan_with`).
    let mut buf = Vec::new();
    for (i, (seq, path)) in files.iter().enumerate() {
        let expected_seq = files[0].0 + i as u32;
        if *seq != expected_seq || files[0].0 != 1 {
            return Err(JournalError::Corrupt {
                file: path.clone(),
                offset: 0,
                reason: format!("segment {expected_seq} is missing"),
            });
        }
        let seg_idx = index.segments.len();
        // Listed before its scan so that a stream name in it can be read back (below).
        let file = File::open(path).map_err(JournalError::io(path))?;
        let file_len = file.metadata().map_err(JournalError::io(path))?.len();
        index.segments.push(SegmentRef {
            path: path.clone(),
            file: Arc::new(file),
            len: file_len,
            crc_fold: 0,
        });
        let decode_from = covered_lens.get(i).map_or(0, |c| c.0);
        let mut pending_io: Option<std::io::Error> = None;
        let mut last_seen = next - 1;
        let scan = segment::scan_with(
            &mut buf,
            path,
            *seq,
            next,
            i + 1 == count,
            decode_from,
            |position, ev| {
                last_seen = position;
                let here = pack(seg_idx, ev.offset as u64);
                let Some(key) = ev.key else {
                    // Covered by the checkpoint: it must say exactly this.
                    if position > covered_events || index.locations[(position - 1) as usize] != here
                    {
                        disagreement = Some(format!("disagrees at position {position}"));
                        return Err("checkpoint disagrees".into());
                    }
                    seen_covered += 1;
                    return Ok(());
                };
                if position != index.locations.len() as u64 + 1 {
                    disagreement = Some(format!("does not cover position {position}"));
                    return Err("checkpoint disagrees".into());
                }
                segment::check_time(&mut index.last_recorded_at, key.recorded_at)?;
                let name = key.stream.as_bytes();
                let hash = index.streams.hash(name);
                let found = match index.find(hash, name) {
                    Ok(found) => found.map(|p| (p.first(), p.version())),
                    Err(e) => {
                        let reason = e.to_string();
                        pending_io = Some(e);
                        return Err(reason);
                    }
                };
                let (first, version) = found.unwrap_or((position, 0));
                if key.stream_version != version + 1 {
                    return Err(format!(
                        "event at position {position} has stream version {}, expected {}",
                        key.stream_version,
                        version + 1
                    ));
                }
                index.locations.push(here);
                index.streams.push(hash, first, position);
                if let Some((_, keys)) = &mut index.log {
                    keys.push((hash, first));
                }
                Ok(())
            },
        );
        if let Some(why) = disagreement {
            return Ok(Err((format!("index checkpoint {why}"), report.torn_tail)));
        }
        if let (Err(_), Some(e)) = (&scan, pending_io) {
            return Err(JournalError::io(path)(e));
        }
        let scan = scan?;
        next = last_seen + 1;
        report.segments += 1;
        report.records += scan.records;
        report.bytes += scan.len;
        if scan.torn.is_some() {
            report.torn_tail = scan.torn;
        }
        index.segments[seg_idx].len = scan.len;
        index.segments[seg_idx].crc_fold = scan.crc_fold;
        if let Some(&(_, fold)) = covered_lens.get(i) {
            if fold != scan.crc_fold_covered {
                return Ok(Err((
                    format!("does not match the records of {}", path.display()),
                    report.torn_tail,
                )));
            }
        }
    }
    if seen_covered != covered_events {
        return Ok(Err((
            format!("index checkpoint covers {covered_events} events, the segments {seen_covered}"),
            report.torn_tail,
        )));
    }
    report.events = index.locations.len() as u64;
    Ok(Ok((index, report)))
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    seg_idx: usize,
    seg_len: u64,
    /// Bytes of the current segment file that exist (records, then preallocated zeros).
    seg_alloc: u64,
    preallocate_bytes: u64,
    seg_fold: u32,
    segment_size_max: u64,
    last_position: u64,
    last_recorded_at: Option<RecordedAt>,
    failed: Option<String>,
    buf: Vec<u8>,
}

/// A request that passed validation, with each event's `(stream hash, first position of its
/// stream)`: how the index files it without looking the stream up again.
struct Accepted<E> {
    request: Request<E>,
    keys: Vec<(u64, u64)>,
}

/// Streams of batches accepted earlier in the group, by hash: (request, an event naming the
/// stream, its first position, its version).
type Overlay = HashMap<u64, SmallVec<[(u32, u32, u64, u64); 1]>, foldhash::fast::FixedState>;

/// A stream as validation found it: its hash, first position (0 if new) and version.
#[derive(Clone, Copy)]
struct Resolved {
    hash: u64,
    first: u64,
    version: u64,
}

/// A segment created during a group, published with it.
struct NewSegment {
    path: PathBuf,
    file: Arc<File>,
}

impl Writer {
    fn run<E: JournalEvent>(&mut self, rx: mpsc::Receiver<Request<E>>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < GROUP_REQUESTS_MAX {
                match rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            let t = Instant::now();
            self.group(group);
            let micros = t.elapsed().as_micros() as u64;
            self.shared
                .stats
                .busy_micros
                .fetch_add(micros, Ordering::Relaxed);
        }
    }

    fn group<E: JournalEvent>(&mut self, group: Vec<Request<E>>) {
        let accepted = self.validate(group);
        if accepted.is_empty() {
            return;
        }
        match self.write(&accepted) {
            Ok((locations, new_segments, lens)) => {
                self.publish(&accepted, locations, new_segments, lens);
                let stats = &self.shared.stats;
                stats
                    .appends
                    .fetch_add(accepted.len() as u64, Ordering::Relaxed);
                let events: usize = accepted.iter().map(|a| a.request.batch.events.len()).sum();
                stats.events.fetch_add(events as u64, Ordering::Relaxed);
                for Accepted { request: r, .. } in accepted {
                    let last = r
                        .batch
                        .events
                        .last()
                        .expect("validated batches are not empty");
                    let receipt = AppendReceipt {
                        last_position: last.position,
                        recorded_at: last.recorded_at,
                    };
                    let _ = r.reply.send((Ok(receipt), Some(r.batch)));
                }
            }
            Err(e) => {
                let msg = format!("journal write failed, outcome unknown; reopen to recover: {e}");
                self.failed = Some(msg.clone());
                for Accepted { request: r, .. } in accepted {
                    let _ = r
                        .reply
                        .send((Err(StoreError::Unavailable(msg.clone())), Some(r.batch)));
                }
            }
        }
    }

    /// Validates in arrival order; answers refused requests; returns the accepted ones, each
    /// with its events' `(stream hash, stream's first position)` for the index.
    fn validate<E: JournalEvent>(&mut self, group: Vec<Request<E>>) -> Vec<Accepted<E>> {
        let idx = self.shared.read();
        // Streams written by batches accepted earlier in this group (not yet in the index):
        // hash → (request, event naming the stream, its first position, its version).
        let mut overlay: Overlay = HashMap::default();
        let mut verdicts: Vec<Result<Vec<(u64, u64)>, StoreError>> =
            Vec::with_capacity(group.len());
        for (ri, r) in group.iter().enumerate() {
            if let Some(msg) = &self.failed {
                verdicts.push(Err(StoreError::Unavailable(msg.clone())));
                continue;
            }
            let events = &r.batch.events;
            // The version (and first position) of every stream the batch names, before it.
            let mut local: HashMap<&StreamId, Resolved, foldhash::fast::FixedState> =
                HashMap::with_capacity_and_hasher(events.len(), Default::default());
            let resolve = |stream: &StreamId, hash: Option<u64>| -> std::io::Result<Resolved> {
                let hash = match hash.filter(|&h| h != 0) {
                    Some(h) => h,
                    None => idx.streams.hash(stream.to_string().as_bytes()),
                };
                if let Some(cands) = overlay.get(&hash) {
                    for &(rj, ej, first, version) in cands {
                        if group[rj as usize].batch.events[ej as usize].stream == *stream {
                            return Ok(Resolved {
                                hash,
                                first,
                                version,
                            });
                        }
                    }
                }
                Ok(match idx.find_stream(hash, stream)? {
                    Some(p) => Resolved {
                        hash,
                        first: p.first(),
                        version: p.version(),
                    },
                    None => Resolved {
                        hash,
                        first: 0,
                        version: 0,
                    },
                })
            };
            let mut io_error = None;
            for (i, e) in events.iter().enumerate() {
                if !local.contains_key(&e.stream) {
                    match resolve(&e.stream, r.hashes.get(i).copied()) {
                        Ok(res) => {
                            local.insert(&e.stream, res);
                        }
                        Err(err) => {
                            io_error = Some(err);
                            break;
                        }
                    }
                }
            }
            for (stream, _) in &r.batch.expectations {
                if io_error.is_none() && !local.contains_key(stream) {
                    match resolve(stream, None) {
                        Ok(res) => {
                            local.insert(stream, res);
                        }
                        Err(err) => io_error = Some(err),
                    }
                }
            }
            if let Some(err) = io_error {
                verdicts.push(Err(StoreError::Unavailable(format!(
                    "journal read while validating: {err}"
                ))));
                continue;
            }
            let checked =
                validate_batch(&r.batch, self.last_position, self.last_recorded_at, |s| {
                    local.get(s).map_or(0, |res| res.version)
                })
                .and_then(|()| match &r.encoded {
                    Ok(_) => Ok(()),
                    Err(e) => Err(StoreError::InvalidBatch(e.to_string())),
                });
            if let Err(e) = checked {
                verdicts.push(Err(e));
                continue;
            }
            let mut keys = Vec::with_capacity(events.len());
            for e in events {
                let res = local.get_mut(&e.stream).expect("every stream was resolved");
                if res.version == 0 {
                    res.first = e.position;
                }
                res.version += 1;
                keys.push((res.hash, res.first));
            }
            for (ei, e) in events.iter().enumerate() {
                let res = local[&e.stream];
                let cands = overlay.entry(res.hash).or_default();
                let entry = (ri as u32, ei as u32, res.first, res.version);
                match cands
                    .iter_mut()
                    .find(|c| group[c.0 as usize].batch.events[c.1 as usize].stream == e.stream)
                {
                    Some(c) => *c = entry,
                    None => cands.push(entry),
                }
            }
            let last = events.last().expect("validated batches are not empty");
            self.last_position = last.position;
            self.last_recorded_at = Some(last.recorded_at);
            verdicts.push(Ok(keys));
        }
        drop(idx);
        let mut accepted = Vec::with_capacity(group.len());
        for (r, verdict) in group.into_iter().zip(verdicts) {
            match verdict {
                Ok(keys) => accepted.push(Accepted { request: r, keys }),
                Err(e) => {
                    let _ = r.reply.send((Err(e), Some(r.batch)));
                }
            }
        }
        accepted
    }

    /// Writes and syncs the accepted frames; returns their events' locations, the segments
    /// created and the new lengths of the segments written.
    #[allow(clippy::type_complexity)]
    fn write<E: JournalEvent>(
        &mut self,
        accepted: &[Accepted<E>],
    ) -> std::io::Result<(Vec<u64>, Vec<NewSegment>, Vec<(usize, u64, u32)>)> {
        let events: usize = accepted.iter().map(|a| a.request.batch.events.len()).sum();
        let mut locations = Vec::with_capacity(events);
        let mut new_segments = Vec::new();
        let mut lens = Vec::new();
        self.buf.clear();
        for Accepted { request: r, .. } in accepted {
            let Ok(rec) = &r.encoded else {
                unreachable!("validate accepts only encoded batches")
            };
            let used = self.seg_len + self.buf.len() as u64;
            if used > SEGMENT_HEADER_LEN as u64
                && used + rec.frame.len() as u64 > self.segment_size_max
            {
                self.flush()?;
                lens.push((self.seg_idx, self.seg_len, self.seg_fold));
                let first = r.batch.events[0].position;
                let seq = u32::try_from(self.seg_idx + 2)
                    .map_err(|_| std::io::Error::other("too many segments"))?;
                let file = segment::create(&self.shared.dir, seq, first)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let path = self.shared.dir.join(segment::file_name(seq));
                let reader = File::open(&path)?;
                self.file = file;
                self.seg_idx += 1;
                self.seg_len = SEGMENT_HEADER_LEN as u64;
                self.seg_alloc = SEGMENT_HEADER_LEN as u64;
                self.seg_fold = 0;
                new_segments.push(NewSegment {
                    path,
                    file: Arc::new(reader),
                });
            }
            let base = self.seg_len + self.buf.len() as u64;
            locations.extend(
                rec.event_offsets
                    .iter()
                    .map(|&o| pack(self.seg_idx, base + o as u64)),
            );
            self.seg_fold = segment::fold_crc(self.seg_fold, codec::le_u32(&rec.frame, 4));
            self.buf.extend_from_slice(&rec.frame);
        }
        self.flush()?;
        lens.push((self.seg_idx, self.seg_len, self.seg_fold));
        Ok((locations, new_segments, lens))
    }

    /// Writes the buffer to the current segment and syncs it.
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        if (self.buf.len() as u64) < PREALLOCATE_WRITE_MAX {
            self.preallocate(self.seg_len + self.buf.len() as u64)?;
        }
        self.file.write_all_at(&self.buf, self.seg_len)?;
        self.file.sync_data()?;
        // A large write past the preallocated space grew the file.
        self.seg_alloc = self.seg_alloc.max(self.seg_len + self.buf.len() as u64);
        let stats = &self.shared.stats;
        let micros = t.elapsed().as_micros() as u64;
        stats.sync_micros.fetch_add(micros, Ordering::Relaxed);
        stats.sync_micros_max.fetch_max(micros, Ordering::Relaxed);
        stats.syncs.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        self.seg_len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Makes sure the segment file has `need` bytes: if not, writes zeros up to
    /// `preallocate_bytes` past what exists (at least to `need`, at most to the segment's size
    /// limit unless `need` is beyond it) and syncs them, size included. With preallocation off
    /// it does nothing and appends grow the file.
    fn preallocate(&mut self, need: u64) -> std::io::Result<()> {
        if self.preallocate_bytes == 0 || need <= self.seg_alloc {
            return Ok(());
        }
        let target = need.max((self.seg_alloc + self.preallocate_bytes).min(self.segment_size_max));
        segment::fill_ahead(&self.file, self.seg_alloc, target, 0)?;
        self.seg_alloc = target;
        Ok(())
    }

    fn publish<E: JournalEvent>(
        &mut self,
        accepted: &[Accepted<E>],
        locations: Vec<u64>,
        new_segments: Vec<NewSegment>,
        lens: Vec<(usize, u64, u32)>,
    ) {
        {
            let mut idx = self.shared.write();
            for s in new_segments {
                idx.segments.push(SegmentRef {
                    path: s.path,
                    file: s.file,
                    len: SEGMENT_HEADER_LEN as u64,
                    crc_fold: 0,
                });
            }
            for (seg, len, fold) in lens {
                idx.segments[seg].len = len;
                idx.segments[seg].crc_fold = fold;
            }
            idx.locations.extend(locations);
            let idx = &mut *idx;
            for a in accepted {
                for (e, &(hash, first)) in a.request.batch.events.iter().zip(&a.keys) {
                    idx.streams.push(hash, first, e.position);
                }
                if let Some((_, keys)) = &mut idx.log {
                    keys.extend_from_slice(&a.keys);
                }
            }
            idx.last_recorded_at = self.last_recorded_at;
        }
        self.shared
            .last_position
            .store(self.last_position, Ordering::Release);
        let waiters = std::mem::take(
            &mut *self
                .shared
                .waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for w in waiters {
            let _ = w.send(());
        }
    }
}
