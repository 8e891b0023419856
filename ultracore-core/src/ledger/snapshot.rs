//! Snapshots of the ledger's folded state: a disposable cache that lets start-up skip replaying
//! the whole log. A snapshot carries a schema number and a checksum; one that is missing, stale,
//! from another build or damaged is refused with a typed error and the caller replays instead,
//! so losing or corrupting snapshots never loses data.
//!
//! Wire form: 8 bytes schema (little endian), 8 bytes checksum of the body, then the body:
//!
//! 1. the accounts and the small tables (opening fingerprints, corrections, resolutions,
//!    refusals, hold deadlines) in postcard (compact binary serde), length-prefixed;
//! 2. each account's balance index, in account order, the whole part length-prefixed: its
//!    change log and complete summaries as of the cut (`bitemporal::index::PrefixEncoder`;
//!    the current timeline is rebuilt from the log when decoding);
//! 3. the log positions, the whole part length-prefixed: their count, then per position the
//!    transaction time as a delta from the previous one, the event type as a byte, and the
//!    entry as its index in part 4 (as the state holds it), or for a refusal the refused id
//!    inline (a refused id is no entry);
//! 4. the entries in recording order (the state's `Vec`, so an index means the same on both
//!    sides): their count `n`, then the first `n / 2` and the other entries as two
//!    length-prefixed halves. Each is hand-encoded: a plain posted entry (one version, no
//!    metadata, the common case by far) as its id, fingerprint, stream version, position (its
//!    transaction time is the position's, part 3), valid time as a delta from that, and
//!    postings, each as (account index, direction, minor units), so decoding shares the
//!    account's id instead of allocating a copy per posting; any other entry in postcard.
//!    A plain transfer (see `stored::StoredEntry`) decodes straight into the compact form the
//!    state keeps, with no allocation (its id goes into the id arena); the state writes it
//!    back from that form, byte for
//!    byte as it wrote the full entry before entries were stored compactly (schema 5 did not
//!    change).
//!
//! Every part but the first is length-prefixed so that decoding can use three threads: it
//! reads part 2 on one thread and parses the second half of part 4 (the allocations of its
//! ids, and postings of the entries that are no plain transfer, which need no positions) on
//! another while the calling thread reads part 3 and the first half.
//!
//! Encoding runs in steps ([`SnapshotJob`], [`Ledger::begin_snapshot`]) so that a server can
//! take a snapshot while it goes on writing: parts 2 to 4 only ever grow at their ends, so the
//! state as of a cut is a prefix of each, encoded later; an entry changed after the cut is
//! kept as it was ([`Cut`]); part 1 is encoded at the cut.
//!
//! A delta snapshot ([`Ledger::begin_delta`], schema [`SNAPSHOT_DELTA_SCHEMA`]) holds what
//! changed since the snapshot before it (its predecessor in a chain that starts with a full
//! snapshot). Same header; body: the predecessor's checksum (8 bytes), its position, this
//! snapshot's position, its link number and the chain's full snapshot's position (so a link
//! is applied only to the state restored from exactly the links before it); part 1 whole;
//! per account the length of its balance index's change log at the predecessor, the number
//! of changes since and those changes; the log positions since, as in part 3; the number of
//! entries recorded since, then those in two length-prefixed halves as in part 4; the number
//! of entries changed since (recorded before the predecessor's cut), then the changed
//! entries, each as its index then its part 4 form. [`Ledger::apply_delta`] applies the
//! balance-index changes with the index's own `apply` (which builds the summaries), on a
//! second thread, and parses the second half of the new entries on a third.
//!
//! Integers are LEB128 varints (signed ones zigzag-encoded) unless said otherwise. Hand-encoding
//! the two big tables makes decoding about as fast as allocating the state (see
//! docs/BENCHMARKS.md, "Snapshots").

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, EntryId};
use crate::money::Amount;
use crate::time::{EffectiveAt, RecordedAt, Timestamp};

use crate::varint::{Malformed, Reader, Writer};

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;

use crate::bitemporal::index::PrefixEncoder;

use super::event::{EVENT_TYPES, TYPE_ENTRY_REJECTED};
use std::sync::Arc;

use super::command::Postings;
use super::model::{Direction, Entry, EntryKind, Metadata, Posting};
use super::rejection::Rejection;
use super::stored::{compact_legs, IdArena, IdRef, Keys, StoredEntry, Transfer};
use super::{AccountState, Ledger, LedgerConfig, PositionMeta};

/// The snapshot format this build writes and reads. Bump it whenever any snapshotted type
/// (ledger state, balance index internals) changes shape.
pub const SNAPSHOT_SCHEMA: u64 = 0x5543_534e_0000_0006;

/// The delta snapshot format this build writes and reads (see [`Ledger::begin_delta`]). Bump
/// it with [`SNAPSHOT_SCHEMA`].
pub const SNAPSHOT_DELTA_SCHEMA: u64 = 0x5543_5344_0000_0001;

/// Why a snapshot could not be used (the caller then replays the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Written by a build with another snapshot format.
    #[error("snapshot schema {found:#x}, this build reads {expected:#x}")]
    Schema {
        /// Found in the snapshot.
        found: u64,
        /// What this build reads.
        expected: u64,
    },
    /// The body does not match its checksum.
    #[error("snapshot checksum mismatch")]
    Checksum,
    /// The body does not decode.
    #[error("snapshot does not decode: {0}")]
    Decode(String),
    /// The body decodes but its parts contradict each other.
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

/// Part 1 of the body (see the module docs), as written.
#[derive(Serialize)]
struct RestRef<'a> {
    accounts: &'a [AccountState],
    open_fingerprints: Vec<(&'a AccountId, u64)>,
    corrections: Vec<(&'a EntryId, &'a (EntryId, u32, u64))>,
    resolutions: Vec<(&'a EntryId, u64)>,
    /// (id, fingerprint, rejection as JSON: `Rejection` is internally tagged, which binary
    /// formats cannot decode; rejected ids are few).
    rejected: Vec<(&'a EntryId, u64, String)>,
    hold_deadlines: Vec<&'a (Timestamp, EntryId)>,
}

/// Part 1 of the body, as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rest {
    accounts: Vec<AccountState>,
    open_fingerprints: Vec<(AccountId, u64)>,
    corrections: Vec<(EntryId, (EntryId, u32, u64))>,
    resolutions: Vec<(EntryId, u64)>,
    rejected: Vec<(EntryId, u64, String)>,
    hold_deadlines: Vec<(Timestamp, EntryId)>,
}

/// Entry tags in part 4.
const ENTRY_PLAIN: u8 = 0;
const ENTRY_FULL: u8 = 1;

/// A position's entry reference in part 3: none, an id written inline, or `REF_ENTRY + i` for
/// the `i`-th entry of part 4.
const REF_NONE: u64 = 0;
const REF_INLINE: u64 = 1;
const REF_ENTRY: u64 = 2;

/// The entries a snapshot in progress must see as they were at its cut.
#[derive(Clone, Debug)]
pub(crate) struct Cut {
    id: u64,
    /// Entries at the cut; later ones are not in the snapshot.
    entries: usize,
    /// Entries changed since the cut, as they were at the cut.
    before: HashMap<u32, StoredEntry>,
}

impl Cut {
    /// Called before entry `ix` changes: keeps its form at the cut, if it is in the snapshot
    /// and not kept already.
    fn keep(&mut self, ix: u32, entries: &[StoredEntry]) {
        if (ix as usize) < self.entries {
            self.before
                .entry(ix)
                .or_insert_with(|| entries[ix as usize].clone());
        }
    }
}

/// The cuts of the snapshots in progress: at most one full snapshot and one delta at a time,
/// so that deltas can go on along the saved chain while the full snapshot that starts the
/// next chain is encoded (that takes time proportional to the whole state).
#[derive(Clone, Debug, Default)]
pub(crate) struct Cuts {
    full: Option<Cut>,
    delta: Option<Cut>,
    /// The last cut id handed out.
    last_id: u64,
}

impl Cuts {
    /// Called before entry `ix` changes: each snapshot in progress keeps its form at its cut.
    pub(crate) fn keep(&mut self, ix: u32, entries: &[StoredEntry]) {
        for c in [&mut self.full, &mut self.delta].into_iter().flatten() {
            c.keep(ix, entries);
        }
    }

    /// The cut with id `id`, if its snapshot is still in progress.
    fn get(&self, id: u64) -> Option<&Cut> {
        [&self.full, &self.delta]
            .into_iter()
            .flatten()
            .find(|c| c.id == id)
    }
}

/// One snapshot of a chain (a full one, then deltas each on the one before): what the next
/// delta is taken against. Kept for the last saved snapshot and the one in progress.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    /// Its checksum, once it is known to be saved ([`Ledger::snapshot_saved`]) or because the
    /// state was restored from it. The next delta names it by its checksum.
    sum: Option<u64>,
    position: u64,
    entries: usize,
    index_lens: Vec<u32>,
    /// Entries below `entries` changed since its cut.
    changed: HashSet<u32>,
    /// 0 for a full snapshot, `k` for the `k`-th delta after it.
    link: u32,
    /// The position of the chain's full snapshot.
    base: u64,
}

/// The snapshot chain as this state knows it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Links {
    /// The last snapshot saved (or restored from).
    saved: Option<Link>,
    /// The full snapshot begun since, until it is saved: it starts a new chain.
    pending_full: Option<Link>,
    /// The delta begun since on `saved`, until it is saved.
    pending_delta: Option<Link>,
}

impl Link {
    /// The link `job` will be once it is saved: number `link` of the chain whose full
    /// snapshot is at `base`.
    fn of(job: &SnapshotJob, link: u32, base: u64) -> Link {
        let lens = job.index_lens.iter().map(|&l| l as u32).collect();
        Link::new(None, job.position, job.entries, lens, link, base)
    }

    /// A link with nothing changed since it.
    fn new(
        sum: Option<u64>,
        position: u64,
        entries: usize,
        index_lens: Vec<u32>,
        link: u32,
        base: u64,
    ) -> Link {
        Link {
            sum,
            position,
            entries,
            index_lens,
            changed: HashSet::new(),
            link,
            base,
        }
    }
}

impl Links {
    /// Called before entry `ix` changes.
    pub(crate) fn changed(&mut self, ix: u32) {
        let all = [
            &mut self.saved,
            &mut self.pending_full,
            &mut self.pending_delta,
        ];
        for l in all.into_iter().flatten() {
            if (ix as usize) < l.entries {
                l.changed.insert(ix);
            }
        }
    }
}

/// The last snapshot a state knows to be saved (see [`Ledger::last_saved_snapshot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SavedSnapshot {
    /// The last log position it covers.
    pub position: u64,
    /// 0 for a full snapshot, `k` for the `k`-th delta after one.
    pub link: u32,
    /// The position of the chain's full snapshot.
    pub base: u64,
}

/// Where a delta snapshot's job starts: the snapshot before it (saved, so its checksum is
/// known), and the entries changed since, as of the delta's cut.
#[derive(Debug)]
struct DeltaFrom {
    prev: Link,
    /// `prev`'s checksum.
    sum: u64,
    /// The entries changed since `prev`, in index order.
    changed: Vec<u32>,
    next_changed: usize,
    /// The changed entries so far (part 4 of a delta holds the new entries in two halves,
    /// then these).
    changed_out: Writer,
}

impl DeltaFrom {
    /// This delta's number in its chain.
    fn link(&self) -> u32 {
        self.prev.link + 1
    }
}

/// A snapshot of the state at one log position, encoded in steps (see
/// [`Ledger::begin_snapshot`]) while the ledger goes on applying events between them.
///
/// Everything big in the state only grows: the entries, their ids, the log positions, and
/// each balance index's change log and summaries. So their part as of the cut is a prefix,
/// fixed at the cut, that can be encoded later. The rest (accounts, the small tables) is
/// encoded at the cut, and an entry that changes after the cut is kept as it was first.
#[derive(Debug)]
pub struct SnapshotJob {
    /// The cut this job belongs to; 0 for a job on a state that does not change.
    cut: u64,
    position: u64,
    rest: Vec<u8>,
    /// Each account's number of balance-index changes at the cut.
    index_lens: Vec<usize>,
    entries: usize,
    refusals: usize,
    /// Part 2 so far, and the account being encoded.
    indexes: Writer,
    account: usize,
    encoder: Option<PrefixEncoder>,
    /// Part 3 so far: next position, transaction time of the previous one, next refusal.
    positions: Writer,
    next_position: usize,
    last_time: i64,
    next_refusal: usize,
    /// Part 4's two halves so far, and the next entry.
    halves: [Writer; 2],
    next_entry: usize,
    /// For a delta snapshot: what it is a delta from (then part 2 holds each index's changes
    /// since the base, part 3 the positions since, and the halves the new entries and the
    /// changed ones).
    delta: Option<DeltaFrom>,
}

/// A snapshot job's ledger is no longer the one it was cut from: the state was rebuilt, or
/// another snapshot was begun.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the ledger changed under the snapshot in progress; begin again")]
pub struct SnapshotAbandoned;

impl SnapshotJob {
    /// The last log position the snapshot covers.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// For a delta snapshot, the position of the snapshot it applies to.
    pub fn delta_of(&self) -> Option<u64> {
        self.delta.as_ref().map(|d| d.prev.position)
    }

    /// 0 for a full snapshot, `k` for the `k`-th delta after one.
    pub fn link(&self) -> u32 {
        self.delta.as_ref().map_or(0, DeltaFrom::link)
    }

    /// The snapshot's bytes, once [`Ledger::snapshot_step`] said it is done (the seal and
    /// checksum are computed here, with no need for the ledger).
    pub fn into_bytes(self) -> Vec<u8> {
        if let Some(d) = &self.delta {
            let mut w = Writer(Vec::with_capacity(
                self.rest.len()
                    + self.indexes.0.len()
                    + self.positions.0.len()
                    + self.halves[0].0.len()
                    + self.halves[1].0.len()
                    + 80,
            ));
            w.0.extend_from_slice(&[0; 16]);
            w.0.extend_from_slice(&d.sum.to_le_bytes());
            w.var(d.prev.position);
            w.var(self.position);
            w.var(u64::from(d.link()));
            w.var(d.prev.base);
            w.bytes(&self.rest);
            w.bytes(&self.indexes.0);
            w.bytes(&self.positions.0);
            w.var((self.entries - d.prev.entries) as u64);
            w.bytes(&self.halves[0].0);
            w.bytes(&self.halves[1].0);
            w.var(d.changed.len() as u64);
            w.bytes(&d.changed_out.0);
            return seal_as(w.0, SNAPSHOT_DELTA_SCHEMA);
        }
        let first = &self.halves[0].0;
        let second = &self.halves[1].0;
        let parts = [
            &self.rest,
            &self.indexes.0,
            &self.positions.0,
            first,
            second,
        ];
        let mut w = Writer(Vec::with_capacity(
            parts.iter().map(|p| p.len() + 10).sum::<usize>() + 32,
        ));
        w.0.extend_from_slice(&[0; 16]);
        w.bytes(&self.rest);
        w.bytes(&self.indexes.0);
        w.bytes(&self.positions.0);
        w.var(self.entries as u64);
        w.bytes(first);
        w.bytes(second);
        seal(w.0)
    }
}

/// Units of work (changes, summary keys, positions, entries) [`Ledger::encode_snapshot`]
/// does per step: all of it.
const ALL: usize = usize::MAX;

impl Ledger {
    /// Encodes the whole state as a snapshot.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut job = self.snapshot_job(0, None);
        while !self
            .snapshot_step(&mut job, ALL)
            .expect("a job on a borrowed state cannot be abandoned")
        {}
        job.into_bytes()
    }

    /// Begins a snapshot of the state as it is now, to be encoded by [`Ledger::snapshot_step`]
    /// while events go on being applied between the steps: the caller holds the state
    /// exclusively only here (the small tables are encoded now, in time proportional to them,
    /// not to the log) and in [`Ledger::end_snapshot`], and shares it during each step. An
    /// entry changed before the snapshot ends is copied once, as it was. Beginning another
    /// full snapshot abandons this one. Not during a bulk replay.
    ///
    /// Once the caller says it is saved ([`Ledger::snapshot_saved`]), the next delta
    /// snapshots ([`Ledger::begin_delta`]) build on it: it starts a new chain. Until then,
    /// deltas can go on along the chain saved before, one at a time beside this job, so that
    /// the log's tail after the last saved snapshot stays short while the state is encoded
    /// whole.
    pub fn begin_snapshot(&mut self) -> SnapshotJob {
        let id = self.new_cut(false);
        let job = self.snapshot_job(id, None);
        self.links.pending_full = Some(Link::of(&job, 0, job.position));
        job
    }

    /// Begins a delta snapshot: like [`Ledger::begin_snapshot`], but it holds only what
    /// changed since the last saved snapshot (full or delta; see
    /// [`Ledger::last_saved_snapshot`]): the accounts and small tables, the balance-index
    /// changes, log positions and entries added since, and the entries changed since. It
    /// costs time proportional to that, not to the state. `None` when no snapshot is known to
    /// be saved.
    ///
    /// Snapshots form chains: a full one, then deltas each on the one before.
    /// [`Ledger::apply_delta`] applies the next link to the state restored from the ones
    /// before; a missing or damaged link ends the chain there (the log has the rest).
    ///
    /// Beginning another delta abandons this one; a full snapshot in progress
    /// ([`Ledger::begin_snapshot`]) is not disturbed. Once that full snapshot is said to be
    /// saved, this delta (on the chain before it) is not what the next one builds on, even if
    /// it is then said to be saved.
    pub fn begin_delta(&mut self) -> Option<SnapshotJob> {
        let mut prev = self.links.saved.clone()?;
        let sum = prev.sum?;
        prev.link.checked_add(1)?;
        let mut changed: Vec<u32> = std::mem::take(&mut prev.changed).into_iter().collect();
        changed.sort_unstable();
        let from = DeltaFrom {
            prev,
            sum,
            changed,
            next_changed: 0,
            changed_out: Writer::default(),
        };
        let (link, base) = (from.link(), from.prev.base);
        let id = self.new_cut(true);
        let job = self.snapshot_job(id, Some(from));
        self.links.pending_delta = Some(Link::of(&job, link, base));
        Some(job)
    }

    /// The last snapshot this state knows to be saved (or was restored from), which the
    /// next delta would build on.
    pub fn last_saved_snapshot(&self) -> Option<SavedSnapshot> {
        let l = self.links.saved.as_ref()?;
        l.sum.map(|_| SavedSnapshot {
            position: l.position,
            link: l.link,
            base: l.base,
        })
    }

    /// Says that `bytes`, the snapshot of the job begun last, is saved: the next delta
    /// builds on it. Bytes of any other snapshot are ignored.
    pub fn snapshot_saved(&mut self, bytes: &[u8]) {
        let Some((schema, sum)) = header(bytes) else {
            return;
        };
        let body = &bytes[16..];
        let position = match schema {
            SNAPSHOT_SCHEMA => full_position(body),
            SNAPSHOT_DELTA_SCHEMA => Self::delta_header(&mut Reader::new(body))
                .ok()
                .map(|(_, _, position, _, _)| position),
            _ => None,
        };
        let links = &mut self.links;
        if schema == SNAPSHOT_SCHEMA {
            if links
                .pending_full
                .as_ref()
                .is_some_and(|p| Some(p.position) == position)
            {
                let mut link = links.pending_full.take().expect("checked above");
                link.sum = Some(sum);
                links.saved = Some(link);
                // A delta begun on the chain before builds on nothing the state now knows.
                links.pending_delta = None;
            }
        } else if let Some(p) = &links.pending_delta {
            // Only the next link of the chain the state knows (a delta on the chain before a
            // full snapshot saved meanwhile is not).
            let next = links
                .saved
                .as_ref()
                .is_some_and(|s| s.base == p.base && s.link.checked_add(1) == Some(p.link));
            if next && Some(p.position) == position {
                let mut link = links.pending_delta.take().expect("checked above");
                link.sum = Some(sum);
                links.saved = Some(link);
            }
        }
    }

    /// Says that the snapshot last said to be saved ([`Ledger::snapshot_saved`]) was not
    /// saved after all (its write failed): the next delta would build on a snapshot that is
    /// not there, so the next snapshot is a full one instead ([`Ledger::begin_delta`] says
    /// `None` until one is saved).
    pub fn snapshot_not_saved(&mut self) {
        self.links.saved = None;
        self.links.pending_delta = None;
    }

    /// A new cut id, and the cut recorded in the full or the delta slot (abandoning the
    /// snapshot of the same kind in progress, if any).
    fn new_cut(&mut self, delta: bool) -> u64 {
        let cuts = &mut self.cuts;
        cuts.last_id = cuts.last_id.wrapping_add(1).max(1);
        let cut = Cut {
            id: cuts.last_id,
            entries: self.entries.len(),
            before: HashMap::default(),
        };
        *if delta {
            &mut cuts.delta
        } else {
            &mut cuts.full
        } = Some(cut);
        cuts.last_id
    }

    /// Ends the snapshot `job` belongs to (done or given up): entries stop being kept.
    pub fn end_snapshot(&mut self, job: &SnapshotJob) {
        for slot in [&mut self.cuts.full, &mut self.cuts.delta] {
            if slot.as_ref().is_some_and(|c| c.id == job.cut) {
                *slot = None;
            }
        }
    }

    /// Encodes about `budget` more units (balance-index changes or summary keys, log
    /// positions, entries) of `job`; `Ok(true)` once it is complete.
    pub fn snapshot_step(
        &self,
        job: &mut SnapshotJob,
        budget: usize,
    ) -> Result<bool, SnapshotAbandoned> {
        let cut = match job.cut {
            0 => None,
            id => match self.cuts.get(id) {
                Some(c) => Some(c),
                None => return Err(SnapshotAbandoned),
            },
        };
        let budget = budget.max(1);
        if job.delta.is_some() {
            return Ok(self.delta_step(job, cut, budget));
        }
        let mut used = 0;
        // Part 2: the balance indexes, each as of its length at the cut.
        while job.account < job.index_lens.len() {
            let index = &self.accounts[job.account].index;
            let encoder = job
                .encoder
                .get_or_insert_with(|| PrefixEncoder::new(job.index_lens[job.account]));
            let (did, done) = encoder.step(index, budget - used);
            used += did;
            if done {
                let bytes = job.encoder.take().map(PrefixEncoder::finish);
                job.indexes.bytes(&bytes.unwrap_or_default());
                job.account += 1;
            }
            if used >= budget {
                return Ok(false);
            }
        }
        // Part 3: the log positions.
        if !self.positions_step(job, &mut used, budget) {
            return Ok(false);
        }
        // Part 4: the entries, each as it was at the cut, in two halves.
        Ok(self.entries_step(job, cut, &mut used, budget))
    }

    /// Encodes the entries of `job` (part 4, or in a delta the entries recorded since the
    /// snapshot before), each as it was at the cut, in two halves, until `used` reaches
    /// `budget`; whether they are all done.
    fn entries_step(
        &self,
        job: &mut SnapshotJob,
        cut: Option<&Cut>,
        used: &mut usize,
        budget: usize,
    ) -> bool {
        let first = job.delta.as_ref().map_or(0, |d| d.prev.entries);
        let split = first + (job.entries - first) / 2;
        while job.next_entry < job.entries {
            let i = job.next_entry;
            self.encode_stored(
                &mut job.halves[usize::from(i >= split)],
                at_cut(self, cut, i),
            );
            job.next_entry += 1;
            *used += 1;
            if *used >= budget {
                return job.next_entry == job.entries;
            }
        }
        true
    }

    /// Encodes log positions of `job` (part 3) until `used` reaches `budget`; whether they
    /// are all done.
    fn positions_step(&self, job: &mut SnapshotJob, used: &mut usize, budget: usize) -> bool {
        let n = job.position as usize;
        let first = job.delta.as_ref().map_or(0, |d| d.prev.position as usize);
        while job.next_position < n {
            let i = job.next_position;
            let m = &self.positions[i];
            let w = &mut job.positions;
            if i == first {
                w.var((n - first) as u64);
                w.zig(m.recorded_at);
            } else {
                // Strictly increasing (checked on apply), so the delta is positive.
                w.var(m.recorded_at.wrapping_sub(job.last_time) as u64);
            }
            job.last_time = m.recorded_at;
            w.0.push(m.event_type);
            if m.event_type == TYPE_ENTRY_REJECTED {
                let (at, id) = &self.rejected_at[job.next_refusal];
                debug_assert_eq!(*at, i as u64 + 1);
                job.next_refusal += 1;
                w.var(REF_INLINE);
                w.bytes(id.as_str().as_bytes());
            } else {
                match m.entry_ix() {
                    None => w.var(REF_NONE),
                    Some(e) => w.var(REF_ENTRY + e as u64),
                }
            }
            job.next_position += 1;
            *used += 1;
            if *used >= budget {
                return false;
            }
        }
        if n == first && job.positions.0.is_empty() {
            job.positions.var(0);
        }
        debug_assert_eq!(job.next_refusal, job.refusals);
        true
    }

    /// [`Ledger::snapshot_step`] for a delta snapshot.
    fn delta_step(&self, job: &mut SnapshotJob, cut: Option<&Cut>, budget: usize) -> bool {
        let mut used = 0;
        // Part 2: each balance index's changes since the base, up to the cut.
        while job.account < job.index_lens.len() {
            let d = job.delta.as_ref().expect("a delta job");
            let from = d
                .prev
                .index_lens
                .get(job.account)
                .map_or(0, |&l| l as usize);
            let to = job.index_lens[job.account];
            job.indexes.var(from as u64);
            self.accounts[job.account]
                .index
                .encode_changes(&mut job.indexes, from, to);
            used += (to - from).max(1);
            job.account += 1;
            if used >= budget {
                return false;
            }
        }
        // Part 3: the log positions since the base.
        if !self.positions_step(job, &mut used, budget) {
            return false;
        }
        // Part 4: the entries recorded since the base in two halves, then those changed since.
        if !self.entries_step(job, cut, &mut used, budget) || used >= budget {
            return false;
        }
        let d = job.delta.as_mut().expect("a delta job");
        while d.next_changed < d.changed.len() {
            let ix = d.changed[d.next_changed];
            d.changed_out.var(u64::from(ix));
            self.encode_stored(&mut d.changed_out, at_cut(self, cut, ix as usize));
            d.next_changed += 1;
            used += 1;
            if used >= budget {
                return d.next_changed == d.changed.len();
            }
        }
        true
    }

    /// Part 4's form of one stored entry.
    fn encode_stored(&self, w: &mut Writer, e: &StoredEntry) {
        match e.cold_entry() {
            Some(full) => self.encode_entry(w, full),
            None => self.encode_transfer(w, e),
        }
    }

    /// A job for the state as it is now, belonging to cut `cut`, with part 1 encoded; a delta
    /// job if `delta` says from what.
    fn snapshot_job(&self, cut: u64, delta: Option<DeltaFrom>) -> SnapshotJob {
        let rest = RestRef {
            accounts: &self.accounts,
            open_fingerprints: self
                .open_fingerprints
                .iter()
                .map(|(k, v)| (k, *v))
                .collect(),
            corrections: self.corrections.iter().collect(),
            resolutions: self.resolutions.iter().map(|(k, v)| (k, *v)).collect(),
            rejected: self
                .rejected
                .iter()
                .map(|(id, (fp, r))| {
                    let json = serde_json::to_string(r).expect("rejections always serialise");
                    (id, *fp, json)
                })
                .collect(),
            hold_deadlines: self.hold_deadlines.iter().collect(),
        };
        // Plain data, no maps with non-string keys, no failing custom serialisers: serialising
        // to a Vec cannot fail.
        let rest = postcard::to_stdvec(&rest).expect("ledger state always serialises");
        let entries = self.entries.len();
        let (first_position, first_entry, first_refusal) = match &delta {
            None => (0, 0, 0),
            Some(d) => (
                d.prev.position as usize,
                d.prev.entries,
                self.rejected_at
                    .partition_point(|(at, _)| *at <= d.prev.position),
            ),
        };
        let new_positions = self.positions.len() - first_position;
        let new_entries = entries - first_entry;
        SnapshotJob {
            cut,
            position: self.positions.len() as u64,
            rest,
            index_lens: self
                .accounts
                .iter()
                .map(|a| a.index.changes().len())
                .collect(),
            entries,
            refusals: self.rejected_at.len(),
            indexes: Writer::default(),
            account: 0,
            encoder: None,
            positions: Writer(Vec::with_capacity(new_positions * 6 + 16)),
            next_position: first_position,
            last_time: 0,
            next_refusal: first_refusal,
            halves: [
                Writer(Vec::with_capacity(new_entries / 2 * 48)),
                Writer(Vec::with_capacity(new_entries.div_ceil(2) * 48)),
            ],
            next_entry: first_entry,
            delta,
        }
    }

    /// Wraps an arbitrary snapshot body in a valid header (schema and checksum), so a fuzzer
    /// can reach the body decoder past the checksum. Not for anything else.
    #[doc(hidden)]
    pub fn seal_snapshot_body(body: &[u8]) -> Vec<u8> {
        sealed_body(body, SNAPSHOT_SCHEMA)
    }

    /// [`Ledger::seal_snapshot_body`] for a delta snapshot's body. Not for anything else.
    #[doc(hidden)]
    pub fn seal_delta_body(body: &[u8]) -> Vec<u8> {
        sealed_body(body, SNAPSHOT_DELTA_SCHEMA)
    }

    /// Part 4's form of a plain transfer stored hot: the same bytes as [`Ledger::encode_entry`]
    /// writes for its full form, read straight from the compact one.
    fn encode_transfer(&self, w: &mut Writer, e: &StoredEntry) {
        let t = e.as_transfer().expect("called on hot entries only");
        let position = e.current_position();
        w.0.push(ENTRY_PLAIN);
        w.bytes(self.entry_id_str(e).as_bytes());
        w.0.extend_from_slice(&e.fingerprint.to_le_bytes());
        w.var(1);
        w.var(position);
        w.zig(
            e.current_effective_at()
                .0
                .as_micros()
                .wrapping_sub(self.recorded_at_of(position).as_micros()),
        );
        w.var(2);
        for (ix, direction) in [(t.debit, 0), (t.credit, 1)] {
            w.var(u64::from(ix));
            w.0.push(direction);
            w.zig128(i128::from(t.minor));
        }
    }

    /// Part 4's form of one entry stored cold.
    fn encode_entry(&self, w: &mut Writer, e: &Entry) {
        let c = &e.current;
        let plain = matches!(e.kind, EntryKind::Posted)
            && e.metadata.as_map().is_empty()
            && e.previous.is_empty()
            && e.reversed_by.is_none()
            && c.version == 1
            && c.superseded_at.is_none()
            && c.correction_id.is_none()
            && c.reason.is_none()
            && !c.cancelled;
        let ixs: Option<super::AccountIxs> = plain
            .then(|| {
                c.postings
                    .iter()
                    .map(|p| {
                        let ix = *self.account_ix.get(&p.account)?;
                        let same =
                            self.accounts[ix as usize].account.currency == p.amount.currency();
                        same.then_some(ix)
                    })
                    .collect()
            })
            .flatten();
        let Some(ixs) = ixs else {
            w.0.push(ENTRY_FULL);
            w.bytes(&postcard::to_stdvec(e).expect("entries always serialise"));
            return;
        };
        w.0.push(ENTRY_PLAIN);
        w.bytes(e.id.as_str().as_bytes());
        w.0.extend_from_slice(&e.fingerprint.to_le_bytes());
        w.var(e.stream_version);
        // recorded_at is the position's (part 3); valid time is usually close to it.
        w.var(c.position);
        w.zig(
            c.effective_at
                .0
                .as_micros()
                .wrapping_sub(c.recorded_at.0.as_micros()),
        );
        w.var(c.postings.len() as u64);
        for (p, ix) in c.postings.iter().zip(ixs) {
            w.var(u64::from(ix));
            w.0.push(match p.direction {
                Direction::Debit => 0,
                Direction::Credit => 1,
            });
            w.zig128(p.amount.minor());
        }
    }

    /// Rebuilds a ledger from a snapshot made by [`Ledger::encode_snapshot`].
    /// The state becomes the base of later delta snapshots ([`Ledger::begin_delta`]), and
    /// deltas against this snapshot can be applied to it ([`Ledger::apply_delta`]).
    pub fn decode_snapshot(config: LedgerConfig, bytes: &[u8]) -> Result<Ledger, SnapshotError> {
        Self::decode_snapshot_with_room(config, bytes, 0)
    }

    /// [`Ledger::decode_snapshot`], with room for `room` more entries and log positions set
    /// aside while decoding (as [`Ledger::reserve`] would, without moving what was decoded):
    /// for the deltas and the log's tail that will be applied next.
    pub fn decode_snapshot_with_room(
        config: LedgerConfig,
        bytes: &[u8],
        room: usize,
    ) -> Result<Ledger, SnapshotError> {
        let (sum, body) = checked_body(bytes, SNAPSHOT_SCHEMA)?;
        let mut r = Reader::new(body);
        let rest: Rest = postcard::from_bytes(r.bytes()?).map_err(decode_error)?;
        let index_part = r.bytes()?;
        let position_part = r.bytes()?;
        let n = r.len_hint(4)?;
        let halves = [r.bytes()?, r.bytes()?];
        if !r.is_done() {
            return Err(decode_error("trailing bytes"));
        }
        let split = n / 2;
        let accounts = &rest.accounts[..];
        // Three threads: the balance indexes (about a third of the work) and the parsing of
        // the second half of the entries (into an id arena of its own, then appended) run
        // beside the log positions and the first half.
        let (indexes, positions, (entries, ids)) = std::thread::scope(|scope| {
            // Each balance index grows in proportion to the events still to come.
            let indexes =
                scope.spawn(move || decode_indexes(index_part, accounts.len(), (room, n)));
            let second = scope.spawn(move || parse_entries(halves[1], n - split, accounts));
            let decoded =
                decode_positions(position_part, 0, room).and_then(|(positions, refused)| {
                    let mut entries = Vec::with_capacity(n.saturating_add(room));
                    let mut ids = IdArena::default();
                    let mut r = Reader::new(halves[0]);
                    for _ in 0..split {
                        let e = parse_entry(&mut r, accounts, &mut ids)?;
                        entries.push(e.finish(&positions, &ids, 0)?);
                    }
                    if !r.is_done() {
                        return Err(decode_error("trailing bytes after the entries"));
                    }
                    Ok((positions, refused, entries, ids))
                });
            let second = second
                .join()
                .unwrap_or_else(|_| Err(decode_error("entry decoder panicked")));
            let indexes = indexes
                .join()
                .unwrap_or_else(|_| Err(decode_error("index decoder panicked")));
            let (positions, refused, mut entries, mut ids) = decoded?;
            let (second, second_ids) = second?;
            let base = ids.len();
            for e in second {
                entries.push(e.finish(&positions, &second_ids, base)?);
            }
            ids.append(&second_ids);
            Ok::<_, SnapshotError>((indexes?, (positions, refused), (entries, ids)))
        })?;
        let mut ledger = Ledger::assemble(config, rest, positions, entries, ids, room)?;
        for (st, index) in ledger.accounts.iter_mut().zip(indexes) {
            st.index = index;
        }
        check_consistent(&ledger, 0, 0, &[])?;
        ledger.restored_from(sum, 0, ledger.position());
        Ok(ledger)
    }

    /// The state was just restored from the snapshot with checksum `sum`, link `link` of a
    /// chain whose full snapshot is at `base`: the next delta builds on it.
    fn restored_from(&mut self, sum: u64, link: u32, base: u64) {
        let lens = self
            .accounts
            .iter()
            .map(|a| a.index.changes().len() as u32)
            .collect();
        let saved = Link::new(
            Some(sum),
            self.position(),
            self.entries.len(),
            lens,
            link,
            base,
        );
        self.links = Links {
            saved: Some(saved),
            ..Links::default()
        };
    }

    /// A delta's header: (previous snapshot's checksum, its position, the delta's position,
    /// link number, base position).
    fn delta_header(r: &mut Reader<'_>) -> Result<(u64, u64, u64, u32, u64), Malformed> {
        let sum = r.u64_le()?;
        let prev = r.var()?;
        let position = r.var()?;
        let link = u32::try_from(r.var()?).map_err(|_| Malformed("link number"))?;
        let base = r.var()?;
        Ok((sum, prev, position, link, base))
    }

    /// Whether the delta `header` is the next link for this state: on the snapshot it was
    /// restored from or last saved, with nothing applied since.
    fn delta_follows(&self, (sum, prev, _, link, base): (u64, u64, u64, u32, u64)) -> bool {
        self.links.saved.as_ref().is_some_and(|s| {
            s.sum == Some(sum)
                && s.position == prev
                && s.link.checked_add(1) == Some(link)
                && s.base == base
                && self.position() == prev
        })
    }

    /// Whether `bytes` look like the next delta for this state (see [`Ledger::apply_delta`]),
    /// judged from the header alone: [`Ledger::apply_delta`] on a delta for another state
    /// would only consume the state to refuse it.
    pub fn delta_fits(&self, bytes: &[u8]) -> bool {
        let Some((SNAPSHOT_DELTA_SCHEMA, _)) = header(bytes) else {
            return false;
        };
        Self::delta_header(&mut Reader::new(&bytes[16..])).is_ok_and(|h| self.delta_follows(h))
    }

    /// Applies a delta snapshot ([`Ledger::begin_delta`]) to this state, which must be the
    /// state restored from the snapshot the delta was taken on (decoded from the full
    /// snapshot, then the deltas before this one applied), with nothing applied since: the
    /// result is the state at the delta's position, and the next delta builds on it. A delta
    /// for another state is refused ([`SnapshotError::Inconsistent`]) before anything
    /// changes; one that fails to decode later leaves the state unusable, so the state is
    /// consumed (restore it again).
    pub fn apply_delta(mut self, bytes: &[u8]) -> Result<Ledger, SnapshotError> {
        let (delta_sum, body) = checked_body(bytes, SNAPSHOT_DELTA_SCHEMA)?;
        let mut r = Reader::new(body);
        let head = Self::delta_header(&mut r)?;
        let (_, base_position, position, link, chain_base) = head;
        if !self.delta_follows(head) {
            return Err(inconsistent(
                "the delta is not the next link for this state",
            ));
        }
        let base_entries = self.links.saved.as_ref().map_or(0, |s| s.entries);
        if position < base_position {
            return Err(inconsistent("the delta is behind its base"));
        }
        let rest: Rest = postcard::from_bytes(r.bytes()?).map_err(decode_error)?;
        let index_part = r.bytes()?;
        let position_part = r.bytes()?;
        let new_count = r.len_hint(4)?;
        let new_halves = [r.bytes()?, r.bytes()?];
        let changed_count = r.len_hint(4)?;
        let changed_part = r.bytes()?;
        if !r.is_done() {
            return Err(decode_error("trailing bytes"));
        }
        // Accounts only grow, in order.
        let old_accounts = self.accounts.len();
        if rest.accounts.len() < old_accounts
            || self
                .accounts
                .iter()
                .zip(&rest.accounts)
                .any(|(a, b)| a.account.id != b.account.id)
        {
            return Err(inconsistent(
                "the delta's accounts are not its base's and more",
            ));
        }
        // The balance indexes (about half the work) are applied on a second thread while
        // this one reads the positions and entries.
        let mut indexes: Vec<crate::bitemporal::index::BitemporalIndex> = self
            .accounts
            .iter_mut()
            .map(|st| std::mem::take(&mut st.index))
            .collect();
        indexes.resize_with(rest.accounts.len(), Default::default);
        let first_entry = self.entries.len();
        let (indexes, rest_done) = std::thread::scope(|scope| {
            let index_thread = scope.spawn(move || {
                let mut ir = Reader::new(index_part);
                for index in indexes.iter_mut() {
                    let from = ir.var()?;
                    if from != index.changes().len() as u64 {
                        return Err(inconsistent(
                            "a balance index's delta does not follow its base",
                        ));
                    }
                    index.apply_encoded_changes(&mut ir)?;
                }
                if !ir.is_done() {
                    return Err(decode_error("trailing bytes after the indexes"));
                }
                Ok(indexes)
            });
            let rest_done = (|| -> Result<Vec<u32>, SnapshotError> {
                let (positions, refused) = decode_positions(position_part, base_position, 0)?;
                if positions.len() as u64 != position - base_position {
                    return Err(inconsistent(
                        "the delta's positions do not reach its position",
                    ));
                }
                // The entries: parsed before anything changes, the second half of the new
                // ones on a third thread.
                let split = new_count / 2;
                let accounts = &rest.accounts[..];
                let second =
                    scope.spawn(move || parse_entries(new_halves[1], new_count - split, accounts));
                let first = parse_entries(new_halves[0], split, accounts);
                let second = second
                    .join()
                    .unwrap_or_else(|_| Err(decode_error("entry parser panicked")));
                let ((first, first_ids), (second, second_ids)) = (first?, second?);
                let mut changed_ids = IdArena::default();
                let mut cr = Reader::new(changed_part);
                let mut changed = Vec::with_capacity(changed_count);
                for _ in 0..changed_count {
                    let ix = u32::try_from(cr.var()?)
                        .ok()
                        .filter(|&ix| (ix as usize) < base_entries)
                        .ok_or_else(|| decode_error("changed entry index"))?;
                    changed.push((ix, parse_entry(&mut cr, accounts, &mut changed_ids)?));
                }
                if !cr.is_done() {
                    return Err(decode_error("trailing bytes after the changed entries"));
                }
                // From here on the state changes.
                self.positions.extend(positions);
                self.rejected_at.extend(refused);
                let (old, added) = accounts.split_at(self.accounts.len());
                for (st, new) in self.accounts.iter_mut().zip(old) {
                    // The decoded state's index is empty: the real one is on the other thread.
                    *st = new.clone();
                }
                for st in added {
                    let ix = u32::try_from(self.accounts.len())
                        .map_err(|_| inconsistent("too many accounts"))?;
                    if self
                        .account_ix
                        .insert(&st.account.id, ix, st.account.currency)
                        .is_some()
                    {
                        return Err(inconsistent(&format!("account {} twice", st.account.id)));
                    }
                    self.accounts.push(st.clone());
                }
                let first_new = first_entry;
                if u32::try_from(first_new + new_count).is_err() {
                    return Err(inconsistent("too many entries"));
                }
                self.entries.reserve(new_count);
                for (half, ids) in [(first, first_ids), (second, second_ids)] {
                    let id_base = self.ids.len();
                    for p in half {
                        let e = p.finish(&self.positions, &ids, id_base)?;
                        self.entries.push(e);
                    }
                    self.ids.append(&ids);
                }
                let keys = Keys {
                    entries: &self.entries,
                    ids: &self.ids,
                };
                self.entry_ix.reserve(self.entries.len() - first_new, keys);
                if !self
                    .entry_ix
                    .insert_all(first_new as u32, self.entries.len() as u32, keys)
                {
                    return Err(inconsistent("an entry twice"));
                }
                let mut changed_ixs = Vec::with_capacity(changed.len());
                for (ix, p) in changed {
                    changed_ixs.push(ix);
                    let mut e = p.finish(&self.positions, &changed_ids, 0)?;
                    let old = &self.entries[ix as usize];
                    if changed_ids.get(e.id) != self.ids.get(old.id) {
                        return Err(inconsistent("a changed entry's id differs"));
                    }
                    e.id = old.id;
                    self.entries[ix as usize] = e;
                }
                if self.positions[base_position as usize..]
                    .iter()
                    .filter_map(PositionMeta::entry_ix)
                    .any(|i| i >= self.entries.len())
                {
                    return Err(decode_error("entry reference"));
                }
                self.open_fingerprints.clear();
                self.open_fingerprints.extend(rest.open_fingerprints);
                self.corrections.clear();
                self.corrections.extend(rest.corrections);
                self.resolutions.clear();
                self.resolutions.extend(rest.resolutions);
                self.rejected.clear();
                for (id, fp, json) in rest.rejected {
                    let r: Rejection = serde_json::from_str(&json).map_err(decode_error)?;
                    self.rejected.insert(id, (fp, r));
                }
                self.hold_deadlines.clear();
                self.hold_deadlines.extend(rest.hold_deadlines);
                Ok(changed_ixs)
            })();
            let indexes = index_thread
                .join()
                .unwrap_or_else(|_| Err(decode_error("index applier panicked")));
            (indexes, rest_done)
        });
        let changed_ixs = rest_done?;
        for (st, index) in self.accounts.iter_mut().zip(indexes?) {
            st.index = index;
        }
        check_consistent(&self, base_position as usize, first_entry, &changed_ixs)?;
        self.restored_from(delta_sum, link, chain_base);
        Ok(self)
    }

    /// A ledger from the decoded parts 1, 3 and 4 of a snapshot (its balance indexes still
    /// empty).
    fn assemble(
        config: LedgerConfig,
        rest: Rest,
        (positions, rejected_at): (Vec<PositionMeta>, Vec<(u64, EntryId)>),
        entries: Vec<StoredEntry>,
        ids: IdArena,
        room: usize,
    ) -> Result<Ledger, SnapshotError> {
        let mut ledger = Ledger::new(config);
        for (i, st) in rest.accounts.iter().enumerate() {
            let ix = u32::try_from(i).map_err(|_| inconsistent("too many accounts"))?;
            if ledger
                .account_ix
                .insert(&st.account.id, ix, st.account.currency)
                .is_some()
            {
                return Err(inconsistent(&format!("account {} twice", st.account.id)));
            }
        }
        ledger.set_accounts(rest.accounts);
        if positions
            .iter()
            .filter_map(PositionMeta::entry_ix)
            .any(|i| i >= entries.len())
        {
            return Err(decode_error("entry reference"));
        }
        // Positions refer to entries by a u32 index.
        if u32::try_from(entries.len()).is_err() {
            return Err(inconsistent("too many entries"));
        }
        ledger.entries = entries;
        ledger.ids = ids;
        let keys = Keys {
            entries: &ledger.entries,
            ids: &ledger.ids,
        };
        ledger
            .entry_ix
            .reserve(ledger.entries.len().saturating_add(room), keys);
        if !ledger
            .entry_ix
            .insert_all(0, ledger.entries.len() as u32, keys)
        {
            return Err(inconsistent("an entry twice"));
        }
        ledger.positions = positions;
        ledger.rejected_at = rejected_at;
        ledger.open_fingerprints.extend(rest.open_fingerprints);
        ledger.corrections.extend(rest.corrections);
        ledger.resolutions.extend(rest.resolutions);
        for (id, fp, json) in rest.rejected {
            let r: Rejection = serde_json::from_str(&json).map_err(decode_error)?;
            ledger.rejected.insert(id, (fp, r));
        }
        ledger.hold_deadlines.extend(rest.hold_deadlines);
        Ok(ledger)
    }
}

/// Part 3: the log positions, and (position, id) of each refusal.
#[allow(clippy::type_complexity)]
fn decode_positions(
    part: &[u8],
    first: u64,
    room: usize,
) -> Result<(Vec<PositionMeta>, Vec<(u64, EntryId)>), SnapshotError> {
    let mut r = Reader::new(part);
    let n = r.len_hint(2)?;
    let mut positions = Vec::with_capacity(n.saturating_add(room));
    let mut refused = Vec::new();
    let mut last = 0i64;
    for i in 0..n {
        let recorded_at = if i == 0 {
            r.zig()?
        } else {
            let delta = i64::try_from(r.var()?).map_err(|_| decode_error("time delta"))?;
            last.checked_add(delta)
                .ok_or_else(|| decode_error("time"))?
        };
        last = recorded_at;
        let event_type = r.u8()?;
        if usize::from(event_type) >= EVENT_TYPES.len() {
            return Err(decode_error("event type"));
        }
        let refusal = event_type == TYPE_ENTRY_REJECTED;
        let entry = match r.var()? {
            REF_NONE if !refusal => None,
            REF_INLINE if refusal => {
                refused.push((first + i as u64 + 1, entry_id(&mut r)?));
                None
            }
            k if k >= REF_ENTRY && !refusal => {
                let ix = u32::try_from(k - REF_ENTRY)
                    .ok()
                    .filter(|&ix| ix < u32::MAX)
                    .ok_or_else(|| decode_error("entry reference"))?;
                NonZeroU32::new(ix + 1)
            }
            _ => return Err(inconsistent("a position's entry does not fit its type")),
        };
        positions.push(PositionMeta {
            recorded_at,
            entry,
            event_type,
        });
    }
    if !r.is_done() {
        return Err(decode_error("trailing bytes after the positions"));
    }
    Ok((positions, refused))
}

/// An entry of part 4 as parsed, before its transaction time (from part 3) is known: what
/// a second thread can do without the positions, including the allocations. Its id is in the
/// arena it was parsed into.
enum Parsed {
    Plain(PlainEntry),
    Full(IdRef, Box<Entry>),
}

/// A plain entry as parsed, before its times are resolved from the positions.
struct PlainEntry {
    id: IdRef,
    fingerprint: u64,
    stream_version: u64,
    position: u64,
    /// Valid time minus transaction time.
    valid_delta: i64,
    postings: PlainPostings,
}

/// A plain entry's postings as parsed: a transfer's compact form (it is then stored hot, with
/// no allocation), or the shared postings of any other plain entry (stored cold).
enum PlainPostings {
    Transfer(Transfer),
    Other(Postings),
}

/// Parses `count` entries (one half of part 4), their ids into an arena of their own; account
/// indexes refer to `accounts`.
fn parse_entries(
    part: &[u8],
    count: usize,
    accounts: &[AccountState],
) -> Result<(Vec<Parsed>, IdArena), SnapshotError> {
    let mut r = Reader::new(part);
    // At least 4 bytes per entry: a damaged count cannot reserve more than the input's worth.
    let mut out = Vec::with_capacity(count.min(part.len() / 4));
    let mut ids = IdArena::default();
    for _ in 0..count {
        out.push(parse_entry(&mut r, accounts, &mut ids)?);
    }
    if !r.is_done() {
        return Err(decode_error("trailing bytes after the entries"));
    }
    Ok((out, ids))
}

/// Reads part 4's form of one entry, its id into `ids`; account indexes refer to `accounts`.
fn parse_entry(
    r: &mut Reader<'_>,
    accounts: &[AccountState],
    ids: &mut IdArena,
) -> Result<Parsed, SnapshotError> {
    match r.u8()? {
        ENTRY_FULL => {
            let e: Entry = postcard::from_bytes(r.bytes()?).map_err(decode_error)?;
            Ok(Parsed::Full(ids.push(e.id.as_str()), Box::new(e)))
        }
        ENTRY_PLAIN => {
            let id = std::str::from_utf8(r.bytes()?).map_err(decode_error)?;
            crate::ids::validate(id).map_err(decode_error)?;
            let id = ids.push(id);
            let fingerprint = r.u64_le()?;
            let stream_version = r.var()?;
            let position = r.var()?;
            let valid_delta = r.zig()?;
            let n = r.len_hint(3)?;
            let mut leg = || {
                let ix = u32::try_from(r.var()?).map_err(|_| decode_error("account index"))?;
                let acc = &accounts
                    .get(ix as usize)
                    .ok_or_else(|| decode_error("account index"))?
                    .account;
                let direction = match r.u8()? {
                    0 => Direction::Debit,
                    1 => Direction::Credit,
                    _ => return Err(decode_error("direction")),
                };
                let amount = Amount::from_minor(r.zig128()?, acc.currency).map_err(decode_error)?;
                Ok((ix, direction, amount))
            };
            let posting = |(ix, direction, amount): (u32, Direction, Amount)| Posting {
                account: accounts[ix as usize].account.id.clone(),
                direction,
                amount,
            };
            // A transfer becomes its compact form without allocating; other plain entries go
            // through a Vec into their shared postings.
            let postings = if n == 2 {
                let legs = [leg()?, leg()?];
                let currency_of = |ix: u32| accounts.get(ix as usize).map(|a| a.account.currency);
                match compact_legs(legs, currency_of).filter(|_| stream_version == 1) {
                    Some(t) => PlainPostings::Transfer(t),
                    None => PlainPostings::Other(Arc::new(legs.map(posting))),
                }
            } else {
                PlainPostings::Other(
                    (0..n)
                        .map(|_| leg().map(posting))
                        .collect::<Result<Vec<_>, SnapshotError>>()?
                        .into(),
                )
            };
            Ok(Parsed::Plain(PlainEntry {
                id,
                fingerprint,
                stream_version,
                position,
                valid_delta,
                postings,
            }))
        }
        _ => Err(decode_error("entry tag")),
    }
}

impl Parsed {
    /// The entry, its transaction time taken from `positions` (part 3); its id is in `ids`,
    /// which the ledger's arena will hold from byte `base` on.
    fn finish(
        self,
        positions: &[PositionMeta],
        ids: &IdArena,
        base: usize,
    ) -> Result<StoredEntry, SnapshotError> {
        let PlainEntry {
            id,
            fingerprint,
            stream_version,
            position,
            valid_delta,
            postings,
        } = match self {
            Parsed::Full(id, e) => return Ok(StoredEntry::cold(id.shifted(base), *e)),
            Parsed::Plain(p) => p,
        };
        let recorded_at = usize::try_from(position)
            .ok()
            .and_then(|p| positions.get(p.checked_sub(1)?))
            .ok_or_else(|| decode_error("entry position"))?
            .recorded_at;
        let effective_at = recorded_at
            .checked_add(valid_delta)
            .and_then(Timestamp::from_micros)
            .ok_or_else(|| decode_error("time out of range"))?;
        let recorded_at =
            Timestamp::from_micros(recorded_at).ok_or_else(|| decode_error("time out of range"))?;
        let at = id.shifted(base);
        Ok(match postings {
            PlainPostings::Transfer(t) => {
                StoredEntry::transfer(at, fingerprint, EffectiveAt(effective_at), position, t)
            }
            PlainPostings::Other(postings) => StoredEntry::cold(
                at,
                Entry::recorded(
                    EntryId::new(ids.get(id)).map_err(decode_error)?,
                    EntryKind::Posted,
                    Metadata::new(),
                    postings,
                    EffectiveAt(effective_at),
                    (position, RecordedAt(recorded_at)),
                    fingerprint,
                    stream_version,
                ),
            ),
        })
    }
}

/// Part 2: one balance index per account.
fn decode_indexes(
    part: &[u8],
    accounts: usize,
    room: (usize, usize),
) -> Result<Vec<crate::bitemporal::index::BitemporalIndex>, SnapshotError> {
    let mut r = Reader::new(part);
    let mut out = Vec::with_capacity(accounts.min(part.len()));
    for _ in 0..accounts {
        out.push(crate::bitemporal::index::BitemporalIndex::decode_prefix(
            r.bytes()?,
            room,
        )?);
    }
    if !r.is_done() {
        return Err(decode_error("trailing bytes after the indexes"));
    }
    Ok(out)
}

/// Entry `i` of `l` as it was at `cut` (kept by [`Cut::keep`] if it changed since).
fn at_cut<'a>(l: &'a Ledger, cut: Option<&'a Cut>, i: usize) -> &'a StoredEntry {
    cut.and_then(|c| c.before.get(&(i as u32)))
        .unwrap_or(&l.entries[i])
}

/// Fills in the header of `out` (16 bytes reserved at its start, then the body).
fn seal(out: Vec<u8>) -> Vec<u8> {
    seal_as(out, SNAPSHOT_SCHEMA)
}

/// Fills in the header of `out` with `schema` and the body's checksum.
fn seal_as(mut out: Vec<u8>, schema: u64) -> Vec<u8> {
    let sum = super::command::stable_hash(&out[16..]);
    out[..8].copy_from_slice(&schema.to_le_bytes());
    out[8..16].copy_from_slice(&sum.to_le_bytes());
    out
}

/// `body` behind a valid header of `schema`.
fn sealed_body(body: &[u8], schema: u64) -> Vec<u8> {
    let mut out = vec![0; 16];
    out.extend_from_slice(body);
    seal_as(out, schema)
}

/// A snapshot's schema and checksum words, if it has a header.
fn header(bytes: &[u8]) -> Option<(u64, u64)> {
    let word = |i: usize| Some(u64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?));
    Some((word(0)?, word(8)?))
}

/// The header's words and the body of a snapshot of `schema` whose body matches its
/// checksum.
fn checked_body(bytes: &[u8], schema: u64) -> Result<(u64, &[u8]), SnapshotError> {
    let (found, sum) = header(bytes).ok_or(SnapshotError::Checksum)?;
    if found != schema {
        return Err(SnapshotError::Schema {
            found,
            expected: schema,
        });
    }
    let body = &bytes[16..];
    if sum != super::command::stable_hash(body) {
        return Err(SnapshotError::Checksum);
    }
    Ok((sum, body))
}

/// The position a full snapshot's body covers (its count of positions, part 3).
fn full_position(body: &[u8]) -> Option<u64> {
    let mut r = Reader::new(body);
    r.bytes().ok()?;
    r.bytes().ok()?;
    Reader::new(r.bytes().ok()?).var().ok()
}

impl From<Malformed> for SnapshotError {
    fn from(m: Malformed) -> SnapshotError {
        decode_error(m)
    }
}

fn entry_id(r: &mut Reader<'_>) -> Result<EntryId, SnapshotError> {
    let s = std::str::from_utf8(r.bytes()?).map_err(decode_error)?;
    EntryId::new(s).map_err(decode_error)
}

fn decode_error(e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Decode(e.to_string())
}

fn inconsistent(what: &str) -> SnapshotError {
    SnapshotError::Inconsistent(what.to_string())
}

/// Cheap cross-checks of a decoded ledger (a checksum catches damage; these catch a snapshot
/// that was written wrong), of the positions from `from_position` and the entries from
/// `from_entry` on and at `changed` (what a delta added to a state checked before).
fn check_consistent(
    l: &Ledger,
    from_position: usize,
    from_entry: usize,
    changed: &[u32],
) -> Result<(), SnapshotError> {
    let last = l.positions.len() as u64;
    let bad = |what: String| Err(SnapshotError::Inconsistent(what));
    for st in &l.accounts {
        if st.position > last || st.bounds != st.account.constraints.bounds(st.account.kind) {
            return bad(format!("account {}", st.account.id));
        }
        if st.index.changes().last_position().is_some_and(|p| p > last) {
            return bad(format!(
                "balance index of {} is ahead of the log",
                st.account.id
            ));
        }
    }
    let new_entries = &l.entries[from_entry.min(l.entries.len())..];
    let changed_entries = changed.iter().filter_map(|&ix| l.entries.get(ix as usize));
    if new_entries
        .iter()
        .chain(changed_entries)
        .any(|e| e.current_position() > last)
    {
        return bad("an entry is ahead of the log".into());
    }
    // Recording order: each entry's first version comes after the previous entry's.
    if l.entries[from_entry.saturating_sub(1).min(l.entries.len())..]
        .windows(2)
        .any(|w| w[0].first_position() >= w[1].first_position())
    {
        return bad("entries are not in recording order".into());
    }
    if l.positions[from_position.saturating_sub(1).min(l.positions.len())..]
        .windows(2)
        .any(|w| w[0].recorded_at >= w[1].recorded_at)
    {
        return bad("transaction times do not increase".into());
    }
    Ok(())
}
