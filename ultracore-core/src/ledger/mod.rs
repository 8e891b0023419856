//! The ledger aggregate: state, `decide` (pure, one function per command) and `apply`
//! (the fold), plus the bitemporal queries.
//!
//! Calling protocol (what the engine does, and what an embedding app that drives the ledger by
//! hand must do):
//! 1. `let decision = ledger.decide(&command, &Context { now, next_position })` — pure; reads
//!    state, never changes it. `next_position` is the log position the first event will get.
//! 2. For [`Decision::Accept`], wrap each event in an [`Envelope`] (positions from
//!    `next_position` on, strictly increasing `recorded_at`) and `ledger.apply(&envelope)`
//!    each, in order, before deciding the next command, so a batch sees its own effects.
//! 3. Append the envelopes durably. If the append fails, the in-memory state is ahead of the
//!    log: rebuild the ledger from the log before deciding anything else.
//! 4. Answer with `ledger.outcome(&command)` (or the rejection).
//!
//! Optional, for throughput: before deciding a window of commands, `ledger.warm(window)`
//! reads the state they will touch, so their cache misses overlap (the engine does this for
//! every [`WARM_WINDOW`] commands of a batch); it changes no answer. What it looked up on the
//! way (each plain entry's fingerprint and account indexes) it hands back as a [`Warmed`];
//! executing the window's `i`th command with `ledger.execute_hinted(cmd,
//! warmed.hints(i, cmd), …)` skips those lookups, with the same answers as `execute`.
//!
//! State layout (what a two-posting transfer costs in memory, beside its two balance-index
//! changes): the entry itself, a `stored::StoredEntry` inline in a dense `Vec` in recording
//! order (56 bytes: where its id lies, fingerprint, valid time, position, and the transfer as
//! two account indexes and an `i64` of minor units; no allocation, the accounts give the ids
//! and the currency); its id's bytes, back to back with the others in the ledger's id arena
//! (`stored::IdArena`, no allocation per id); one slot of the id index (a `u32` and a
//! control byte, at a load of 44–88 %: the index hashes the id the entry holds, see
//! `stored::EntryIndex`); and its log position's record, `PositionMeta` (16 bytes: transaction
//! time, entry index, type code), which also gives the entry its transaction time. Any other
//! entry (multi-leg, metadata, holds, reversals, corrected or reversed entries) keeps the full
//! [`Entry`] in a boxed cold part. Positions and statements name entries by index; only the
//! few refusals keep their ids apart (`rejected_at`), since a refused id is no entry.

mod command;
mod decide;
mod event;
mod lines;
mod model;
mod query;
mod rejection;
mod snapshot;
mod stored;

use stored::StoredEntry;

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;

/// Balance-index changes of one decision: (account index, key, deltas). Inline up to two,
/// which covers a transfer (the hot path) without a heap allocation; a hold with a deadline
/// (four changes) allocates. Room for four made every decision move 336 bytes, not 176.
pub(crate) type Changes = smallvec::SmallVec<[(u32, TimelineKey, Deltas); 2]>;

/// Account indexes of an entry's postings, in posting order.
pub(crate) type AccountIxs = smallvec::SmallVec<[u32; 4]>;

/// Hash maps keyed by ids, with a seeded fast hasher (see [`LedgerConfig::hash_seed`]).
pub(crate) type IdMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;
use std::sync::Arc;

pub use command::{
    AccountReceipt, Command, Correct, EntryReceipt, EntryStatus, OpenAccount, Outcome, PlaceHold,
    PostEntry, PostHold, Postings, Reverse, VoidHold,
};
pub use decide::{Context, Decision};
use decide::{Decided, Events};
pub use event::LedgerEvent;
pub use model::{
    Account, AccountKind, AccountStatus, BalanceView, Basis, Constraints, Direction, Entry,
    EntryKind, EntryVersion, HoldResolution, KnownAt, Metadata, Posting,
};
pub use query::{EntryView, QueryError, Restatement, RestatementChange, Statement, StatementLine};
pub use rejection::Rejection;
pub use snapshot::{
    SavedSnapshot, SnapshotAbandoned, SnapshotError, SnapshotJob, SNAPSHOT_DELTA_SCHEMA,
    SNAPSHOT_SCHEMA,
};

use crate::bitemporal::index::BitemporalIndex;
use crate::bitemporal::log::Packed;
use crate::bitemporal::timeline::{Deltas, TimelineKey};
use crate::event::{DomainEvent, Envelope, Trace};
use crate::ids::{AccountId, EntryId, EventId};
use crate::time::{EffectiveAt, RecordedAt, Timestamp};

/// Settings of a ledger instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerConfig {
    /// How far before now `effective_at` may be, in microseconds.
    pub backdate_window_micros: i64,
    /// How far after now `effective_at` may be, in microseconds.
    pub future_window_micros: i64,
    /// Seed of the hash maps keyed by client-chosen ids. A server that accepts ids from
    /// untrusted clients sets it from a secret random value so ids cannot be chosen to collide.
    pub hash_seed: u64,
}

impl Default for LedgerConfig {
    /// Back-dating up to 400 days (a year's books plus a closing period), future-dating up to 400 days.
    fn default() -> Self {
        const DAY: i64 = 86_400_000_000;
        LedgerConfig {
            backdate_window_micros: 400 * DAY,
            future_window_micros: 400 * DAY,
            hash_seed: 0x5bd1_e995_2f4a_7c15,
        }
    }
}

/// A broken internal invariant: a bug. The write that would break it is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invariant violated: {0}")]
pub struct InvariantViolated(pub String);

/// One account with its bitemporal balance index. Snapshots write the index apart from the
/// rest (see `snapshot`), so it is skipped here.
///
/// Laid out (`repr(C)`, each record starting on a cache line) so that a posting reads and
/// writes few of the record's ten lines: the account's status, currency and valid-from time and the
/// bounds share one or two, and [`BitemporalIndex`] puts what an append touches (the
/// timeline's tail chunk, lengths, block length, the change log's tail) on the two lines that
/// start [`BitemporalIndex::HOT_OFFSET`] bytes into it, which the `index` field's offset
/// (32 past a line) aligns. With the default layout a transfer touched about seven lines of
/// each of its two accounts' records, each a cache miss once accounts outnumber what the
/// core's own cache holds. The serialised fields (`account`, `bounds`, `position`) keep
/// their order, which is the snapshot format's.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[repr(C, align(64))]
pub(crate) struct AccountState {
    pub(crate) account: Account,
    /// (lower, upper) bounds on the index's series, from the constraints.
    pub(crate) bounds: (Option<i128>, Option<i128>),
    /// Log position of the account's latest own event.
    pub(crate) position: u64,
    #[serde(skip)]
    pub(crate) index: BitemporalIndex,
}

// The index's hot lines start on a line boundary.
const _: () = assert!(
    (std::mem::offset_of!(AccountState, index) + BitemporalIndex::HOT_OFFSET).is_multiple_of(64)
);

/// What the ledger remembers about each log position (for statements, diffs and `known_at`):
/// 16 bytes, one per event, so it names the entry by its index and the type by its code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PositionMeta {
    pub(crate) recorded_at: i64,
    /// 1 + the index in [`Ledger::entries`] of the entry the event recorded or changed; `None`
    /// for account events and for refusals (a refused id is no entry: the id is in
    /// [`Ledger::rejected_at`]).
    pub(crate) entry: Option<NonZeroU32>,
    /// Index of the event's type in [`event::EVENT_TYPES`].
    pub(crate) event_type: u8,
}

// The layout the module docs count on; a wider field would cost 8 bytes per event.
const _: () = assert!(std::mem::size_of::<PositionMeta>() == 16);

impl PositionMeta {
    /// The event's type name (`entry_posted`, …).
    pub(crate) fn event_type_name(&self) -> &'static str {
        event::EVENT_TYPES[usize::from(self.event_type)]
    }

    /// The index in [`Ledger::entries`] of the entry the event recorded or changed, if any.
    pub(crate) fn entry_ix(&self) -> Option<usize> {
        self.entry.map(|i| i.get() as usize - 1)
    }
}

/// The ledger's state: everything needed to decide commands and answer queries, rebuilt by
/// applying events in log order.
#[derive(Clone, Debug)]
pub struct Ledger {
    config: LedgerConfig,
    /// Which ledger this is, among every one in the process (a clone is another): what a
    /// [`Hints`] was learned from, so that it is used on that ledger only.
    instance: Instance,
    pub(crate) accounts: Vec<AccountState>,
    pub(crate) account_ix: stored::AccountIndex,
    /// Fingerprint of each account's opening request (idempotent re-opening).
    pub(crate) open_fingerprints: IdMap<AccountId, u64>,
    /// Every entry, in recording order, in its compact stored form (56 bytes inline; a plain
    /// transfer has no allocation of its own, see [`stored::StoredEntry`]). The index below
    /// moves 4-byte slots, not entries, when it grows.
    pub(crate) entries: Vec<stored::StoredEntry>,
    /// Entry id → index in `entries`.
    pub(crate) entry_ix: stored::EntryIndex,
    /// The entries' ids, back to back (`StoredEntry::id` says where each lies).
    pub(crate) ids: stored::IdArena,
    /// Correction id → (corrected entry, version produced, fingerprint).
    pub(crate) corrections: IdMap<EntryId, (EntryId, u32, u64)>,
    /// Hold id → fingerprint of the command that resolved it.
    pub(crate) resolutions: IdMap<EntryId, u64>,
    /// Refused ids → (fingerprint, why).
    pub(crate) rejected: IdMap<EntryId, (u64, Rejection)>,
    /// (log position, refused id) of every refusal, in log order: the id a refusal's position
    /// names (refused ids are few, and no entries, so positions cannot index them).
    pub(crate) rejected_at: Vec<(u64, EntryId)>,
    /// Open holds with a deadline, by deadline.
    pub(crate) hold_deadlines: BTreeSet<(Timestamp, EntryId)>,
    pub(crate) positions: Vec<PositionMeta>,
    /// During a bulk replay ([`Ledger::apply_all`]): balance-index changes not yet applied,
    /// applied account by account when the buffer fills or the replay ends, and which of the
    /// entries recorded are not yet in the id index.
    deferred: Option<Deferred>,
    /// The snapshots being taken in steps ([`Ledger::begin_snapshot`],
    /// [`Ledger::begin_delta`]): the entries changed since each one's cut, as they were at
    /// the cut.
    pub(crate) cuts: snapshot::Cuts,
    /// The snapshot chain as this state knows it: what the next delta snapshot
    /// ([`Ledger::begin_delta`]) is taken against, with the entries changed since.
    pub(crate) links: snapshot::Links,
}

/// A balance-index change held back during a bulk replay, in 40 bytes: its amounts are the
/// posted amount alone (`posted`) when they fit (a posted-only change within `i64`, nearly
/// every one), and otherwise [`Deferred::wide`]`[wide]`. The buffer is written, sorted and
/// read once per change, and a replay waits on that memory traffic; the full form was 80.
#[derive(Clone, Copy, Debug, Default)]
struct DeferredChange {
    account: u32,
    /// Index in [`Deferred::wide`], or [`NARROW`].
    wide: u32,
    position: u64,
    key: TimelineKey,
    posted: i64,
}

const _: () = assert!(size_of::<DeferredChange>() == 40);

/// [`DeferredChange::wide`] of a change whose amounts are its `posted` alone.
const NARROW: u32 = u32::MAX;

/// Index changes held back during a bulk replay ([`Ledger::apply_all`]), in log order.
#[derive(Clone, Debug)]
struct Deferred {
    changes: Vec<DeferredChange>,
    /// The amounts of changes that are not narrow, by [`DeferredChange::wide`].
    wide: Vec<Deltas>,
    /// Flush when `changes` holds this many.
    max: usize,
    /// The entries from this index on were recorded during the bulk replay and are not yet
    /// in the id index: they are indexed together ([`Ledger::index_deferred_ids`]) when the
    /// buffer flushes, at the end, and before any event that looks an entry up. Indexing a
    /// run of new ids in one loop keeps the index's tables in cache, where inserting one per
    /// event found them evicted by the events in between.
    unindexed_from: u32,
}

impl Deferred {
    fn new(max: usize, entries: u32) -> Deferred {
        Deferred {
            changes: Vec::new(),
            wide: Vec::new(),
            max,
            unindexed_from: entries,
        }
    }

    fn push(
        &mut self,
        account: u32,
        position: u64,
        key: TimelineKey,
        d: Deltas,
    ) -> Result<(), InvariantViolated> {
        let (wide, posted) = match crate::bitemporal::log::narrow(&d) {
            Some(p) => (NARROW, p),
            None => {
                // The buffer flushes at fewer than u32::MAX changes, so this never fails.
                let w = u32::try_from(self.wide.len())
                    .ok()
                    .filter(|&w| w != NARROW)
                    .ok_or_else(|| InvariantViolated("replay buffer overflow".into()))?;
                self.wide.push(d);
                (w, 0)
            }
        };
        self.changes.push(DeferredChange {
            account,
            wide,
            position,
            key,
            posted,
        });
        Ok(())
    }

    /// The amounts of `c`, a change of this buffer.
    fn deltas(wide: &[Deltas], c: &DeferredChange) -> Deltas {
        match c.wide {
            NARROW => Deltas {
                posted: i128::from(c.posted),
                ..Deltas::ZERO
            },
            w => wide[w as usize],
        }
    }
}

/// Index changes buffered by a bulk replay before they are applied account by account:
/// large enough that each account gets several changes per flush, small enough (~10 MB at
/// 40 bytes a change, kept from one flush to the next; the blocks it is sorted into are the
/// state itself) to stay a buffer. 2^17 and 2^19 replayed 210,001 events over 10,000
/// accounts within a few percent of it (docs/BENCHMARKS.md).
const DEFERRED_CHANGES_MAX: usize = 1 << 18;

/// Changes per block that a bulk replay's flush sorts its buffer into (more when one account
/// has more; 64 KB at 32 bytes a change). Accounts' logs keep their runs of these blocks, so
/// the blocks are the replayed state: blocks this small come from the allocator's heap, where
/// a ledger dropped before (a rebuild after a failure) left memory that is already mapped,
/// while one block per flush (8 MB) was fresh memory from the system every time, a page fault
/// per 4 KB.
const RUN_BLOCK_CHANGES: usize = 2048;

/// Commands per [`Ledger::warm`] call when executing a batch: enough that the misses of one
/// window overlap, few enough that what it brings into cache (~8 lines per account, two
/// accounts per transfer) is still there when the window is executed. 32 was the best of
/// 8, 32 and 64 (`UC_WARM=N profile transfers`, docs/BENCHMARKS.md).
pub const WARM_WINDOW: usize = 32;

/// The fewest accounts for which [`Ledger::warm`] reads ahead: 1,024 account records are
/// 640 KiB, with their balance indexes' ends more than this machine's L2 of 1 MiB; below it
/// the cache holds the state, and reading ahead only costs instructions
/// (docs/BENCHMARKS.md, 2026-11-29, "The entry-id index in cache-line buckets").
pub const READ_AHEAD_ACCOUNTS_MIN: usize = 1024;

/// Bytes of id arena [`Ledger::reserve`] sets aside per entry (a typical id's length; untouched
/// reserved pages cost no memory).
const IDS_RESERVED_BYTES_PER_ENTRY: usize = 16;

/// A number no other ledger in the process has; a clone gets a new one (see [`Hints`]).
#[derive(Debug)]
struct Instance(u64);

impl Instance {
    fn new() -> Instance {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Instance(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

impl Clone for Instance {
    /// A clone is another ledger: its accounts may later be opened in another order.
    fn clone(&self) -> Instance {
        Instance::new()
    }
}

/// What [`Ledger::warm`] learned about one plain entry (`PostEntry`) on its way, so that
/// deciding it need not learn it again: its fingerprint, its id's hash and its first two
/// postings' account indexes. Valid for that command on that ledger only: [`Warmed::hints`]
/// lends it out for the very command it was learned from (the same object, which the
/// `Warmed` keeps borrowed, so unchanged), and [`Ledger::execute_hinted`] ignores it for any
/// other command (it names its command's address, and cannot be copied out of the `Warmed`)
/// and on any other ledger (each has its own instance number; an account's index never
/// changes within one).
#[derive(Debug)]
pub struct Hints {
    instance: u64,
    /// The address of the command it was learned from: [`Ledger::execute_hinted`] uses it for
    /// that command only. While a `&Hints` lives, the [`Warmed`] that lent it keeps that
    /// command borrowed, so no other command can be at that address.
    command: usize,
    fingerprint: u64,
    /// The hash of the entry's id in the entry-id index.
    entry_hash: u64,
    /// Index of the account of posting 0 and 1, or [`Hints::UNKNOWN`].
    accounts: [u32; 2],
}

impl Hints {
    /// No such account (yet): decide looks the id up itself.
    const UNKNOWN: u32 = u32::MAX;

    /// The index of posting `i`'s account, if known.
    pub(crate) fn account(hints: Option<&Hints>, i: usize) -> Option<u32> {
        let ix = *hints?.accounts.get(i)?;
        (ix != Hints::UNKNOWN).then_some(ix)
    }

    /// The command's fingerprint, if known.
    pub(crate) fn fingerprint(hints: Option<&Hints>) -> Option<u64> {
        hints.map(|h| h.fingerprint)
    }

    /// The hash of the entry's id in the entry-id index, if known.
    pub(crate) fn entry_hash(hints: Option<&Hints>) -> Option<u64> {
        hints.map(|h| h.entry_hash)
    }
}

/// The window [`Ledger::warm`] read, with the [`Hints`] it learned for each command.
#[derive(Debug, Default)]
pub struct Warmed<'a> {
    commands: smallvec::SmallVec<[(&'a Command, Option<Hints>); WARM_WINDOW]>,
}

impl<'a> Warmed<'a> {
    /// The hints for `command` if it is the `i`th command warmed (the same object, not an
    /// equal one); `None` otherwise, or if none were learned (not a plain entry).
    pub fn hints(&self, i: usize, command: &Command) -> Option<&Hints> {
        match self.commands.get(i) {
            Some((c, h)) if std::ptr::eq(*c, command) => h.as_ref(),
            _ => None,
        }
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new(LedgerConfig::default())
    }
}

impl Ledger {
    /// An empty ledger.
    pub fn new(config: LedgerConfig) -> Ledger {
        let h = foldhash::fast::FixedState::with_seed(config.hash_seed);
        Ledger {
            accounts: Vec::new(),
            account_ix: stored::AccountIndex::new(h.clone()),
            open_fingerprints: HashMap::with_hasher(h.clone()),
            entries: Vec::new(),
            entry_ix: stored::EntryIndex::new(h.clone()),
            ids: stored::IdArena::default(),
            corrections: HashMap::with_hasher(h.clone()),
            resolutions: HashMap::with_hasher(h.clone()),
            rejected: HashMap::with_hasher(h.clone()),
            rejected_at: Vec::new(),
            hold_deadlines: BTreeSet::new(),
            positions: Vec::new(),
            deferred: None,
            instance: Instance::new(),
            cuts: snapshot::Cuts::default(),
            links: snapshot::Links::default(),
            config,
        }
    }

    /// Its settings.
    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    /// The last log position applied (0 when empty).
    pub fn position(&self) -> u64 {
        self.positions.len() as u64
    }

    /// Transaction time of the last applied event.
    pub fn recorded_at(&self) -> Option<RecordedAt> {
        self.positions
            .last()
            .and_then(|m| Timestamp::from_micros(m.recorded_at))
            .map(RecordedAt)
    }

    /// The account, as known now.
    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.account_ix
            .get(id)
            .map(|&i| &self.accounts[i as usize].account)
    }

    /// Every account, in opening order.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.iter().map(|a| &a.account)
    }

    /// The entry (with all its versions), as known now. Built on demand from the stored
    /// form, so it is owned; the other queries ([`Ledger::entry`],
    /// [`Ledger::entry_history`]) return the parts most callers need.
    pub fn entry_record(&self, id: &EntryId) -> Option<Entry> {
        self.entry_view(id).map(std::borrow::Cow::into_owned)
    }

    /// Number of entries (all kinds).
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// The earliest deadline among holds not yet resolved or expired, if any.
    pub fn next_hold_deadline(&self) -> Option<Timestamp> {
        self.hold_deadlines.first().map(|(t, _)| *t)
    }

    /// Reads, without changing anything, the state that deciding and applying `commands`
    /// will touch: each entry id's slot in the id index, each posted account's record and the
    /// ends of its balance index. Deciding a command waits on a chain of dependent cache
    /// misses per account (id map, account record, timeline chunk, running sums, change log);
    /// the chains of different commands are independent, so touching a window of commands
    /// first lets their misses overlap, and the decisions that follow find the lines in cache.
    /// It runs in stages, each over the whole window, so that within a stage no load waits
    /// on another: the commands' postings; then, reading no state, the fingerprints and the
    /// ids' hashes; then ids to indexes; then the account records; then the ends of their
    /// balance indexes. A ledger of fewer than [`READ_AHEAD_ACCOUNTS_MIN`] accounts, whose
    /// state the cache holds, is not read ahead: only the hints are learned, in one pass
    /// (the stages cost it 5–7 % of a transfer's time and saved it nothing). Changes no
    /// answer; the engine calls it on each window of [`WARM_WINDOW`] commands of a batch
    /// before executing them. Only plain entries (`PostEntry`, the hot path) are warmed;
    /// other commands are skipped. Returns what it learned on the way about each plain entry
    /// (see [`Hints`]).
    pub fn warm<'a>(&self, commands: impl IntoIterator<Item = &'a Command>) -> Warmed<'a> {
        self.warm_with(commands, self.accounts.len() >= READ_AHEAD_ACCOUNTS_MIN)
    }

    /// [`Ledger::warm`], reading ahead or only learning the hints as `read_ahead` says.
    pub(crate) fn warm_with<'a>(
        &self,
        commands: impl IntoIterator<Item = &'a Command>,
        read_ahead: bool,
    ) -> Warmed<'a> {
        if !read_ahead {
            return self.learn_hints(commands);
        }
        let mut acc = 0u64;
        let mut warmed = Warmed::default();
        // Stage 0: the commands' postings, each a block of its own on the heap. Read here
        // with nothing else between the reads, so that those that missed the cache are
        // fetched together, not one at a time as the next stage reaches each.
        let commands: smallvec::SmallVec<[&'a Command; WARM_WINDOW]> =
            commands.into_iter().collect();
        for command in &commands {
            if let Command::PostEntry(c) = command {
                for p in c.postings.iter() {
                    acc = acc.wrapping_add(p.account.as_str().len() as u64);
                }
            }
        }
        // Stage 1, computing only (the commands' own memory, read in order): each plain
        // entry's fingerprint, its id's hash and its accounts' keys and hashes. None of it
        // reads the state, so it is kept out of the stage that does: there, the few
        // instructions between one lookup and the next let the processor have the lookups of
        // several commands in flight at once (with the hashing in between, it had about one).
        let mut entry_hashes: smallvec::SmallVec<[u64; WARM_WINDOW]> = smallvec::SmallVec::new();
        let mut probes: smallvec::SmallVec<[(stored::Probe, &AccountId); 2 * WARM_WINDOW]> =
            smallvec::SmallVec::new();
        for command in commands {
            let Command::PostEntry(c) = command else {
                warmed.commands.push((command, None));
                continue;
            };
            let hints = self.hints_for(command, c);
            entry_hashes.push(hints.entry_hash);
            for p in c.postings.iter() {
                probes.push((self.account_ix.probe(&p.account), &p.account));
            }
            warmed.commands.push((command, Some(hints)));
        }
        // Stage 2: the lookups, ids to indexes.
        let keys = self.keys();
        let mut next = probes.iter();
        let mut ixs: smallvec::SmallVec<[u32; 2 * WARM_WINDOW]> = smallvec::SmallVec::new();
        let plain = warmed.commands.iter_mut().filter_map(|(command, hints)| {
            let (Command::PostEntry(c), Some(h)) = (command, hints) else {
                return None;
            };
            Some((c, h))
        });
        for ((c, hints), &hash) in plain.zip(&entry_hashes) {
            if let Some(e) = self.entry_ix.get_hashed(hash, c.id.as_str(), keys) {
                acc = acc.wrapping_add(u64::from(e));
            }
            for (i, (probe, id)) in next.by_ref().take(c.postings.len()).enumerate() {
                if let Some(ix) = self.account_ix.get_probed(probe, id) {
                    ixs.push(ix);
                    if let Some(h) = hints.accounts.get_mut(i) {
                        *h = ix;
                    }
                }
            }
        }
        // Stage 3: the account records.
        let found: smallvec::SmallVec<[&BitemporalIndex; 2 * WARM_WINDOW]> = ixs
            .iter()
            .map(|&ix| {
                let st = &self.accounts[ix as usize];
                acc = acc.wrapping_add(st.account.opened_at.0.as_micros() as u64);
                acc = acc.wrapping_add(u64::from(st.account.currency.minor_units()));
                &st.index
            })
            .collect();
        // Stage 4: the ends of their balance indexes.
        acc = acc.wrapping_add(BitemporalIndex::warm(&found));
        std::hint::black_box(acc);
        warmed
    }

    /// The hints of [`Ledger::warm`] without its reads ahead: for a ledger whose state is in
    /// the cache.
    fn learn_hints<'a>(&self, commands: impl IntoIterator<Item = &'a Command>) -> Warmed<'a> {
        let mut warmed = Warmed::default();
        for command in commands {
            let Command::PostEntry(c) = command else {
                warmed.commands.push((command, None));
                continue;
            };
            let mut hints = self.hints_for(command, c);
            for (h, p) in hints.accounts.iter_mut().zip(c.postings.iter()) {
                if let Some(&ix) = self.account_ix.get(&p.account) {
                    *h = ix;
                }
            }
            warmed.commands.push((command, Some(hints)));
        }
        warmed
    }

    /// The hints of the plain entry `command` (whose body is `c`) that need no lookup: all
    /// but its account indexes, which the caller fills in.
    #[inline(always)]
    fn hints_for(&self, command: &Command, c: &PostEntry) -> Hints {
        Hints {
            instance: self.instance.0,
            command: std::ptr::from_ref(command).addr(),
            fingerprint: command.fingerprint(),
            entry_hash: self.entry_ix.hash(c.id.as_str()),
            accounts: [Hints::UNKNOWN; 2],
        }
    }

    /// Reserves room for `entries` more entries (and their log positions), so a bulk load or
    /// a latency-sensitive phase does not pay for growing the maps midway.
    pub fn reserve(&mut self, entries: usize) {
        self.entries.reserve(entries);
        self.entry_ix.reserve(
            entries,
            stored::Keys {
                entries: &self.entries,
                ids: &self.ids,
            },
        );
        self.positions.reserve(entries);
        // Room for ids of a typical length; longer ones grow the arena as usual.
        self.ids
            .reserve(entries.saturating_mul(IDS_RESERVED_BYTES_PER_ENTRY));
    }

    /// Reserves room in every account's balance index for `changes` more changes appended
    /// live (as [`Vec::reserve`]: the room may grow by doubling), so the next postings to each
    /// account do not reallocate its index's vectors. What [`Ledger::reserve`] does for the
    /// entry maps, per account: a ledger that has run for a while has such room from its
    /// vectors' amortised growth, while a clone (or a state built to exact size) has none, and
    /// its first posting to each account would move that account's vectors. Touches every
    /// account, so it costs time in proportion to their number; changes no answer.
    pub fn reserve_per_account(&mut self, changes: usize) {
        for st in &mut self.accounts {
            st.index.reserve(changes);
        }
    }

    /// Applies recorded events in log order, like calling [`Ledger::apply`] on each, but faster
    /// for long runs (replay, catch-up): balance-index changes are buffered and applied
    /// account by account, so each account's index is touched once per few hundred thousand
    /// changes instead of once per change (random accounts otherwise cost a cache miss per
    /// structure per change). The result is identical to applying one by one.
    ///
    /// On error the ledger is unusable (as after a failed [`Ledger::apply`]).
    pub fn apply_all<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a Envelope<LedgerEvent>>,
    ) -> Result<(), InvariantViolated> {
        self.apply_all_buffered(events, DEFERRED_CHANGES_MAX)
    }

    /// [`Ledger::apply_all`] with a given buffer size (in index changes), so tests can make
    /// the buffer flush often.
    #[doc(hidden)]
    pub fn apply_all_buffered<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a Envelope<LedgerEvent>>,
        buffer_max: usize,
    ) -> Result<(), InvariantViolated> {
        let events = events.into_iter();
        self.reserve(events.size_hint().0);
        let entries = self.entries_recorded();
        self.deferred.get_or_insert_with(|| {
            Deferred::new(buffer_max.clamp(1, NARROW as usize - 1), entries)
        });
        let applied = events.into_iter().try_for_each(|e| self.apply(e));
        let ended = self.bulk_end();
        applied.and(ended)
    }

    /// Starts buffering balance-index changes (see [`Ledger::apply_all`]). Until
    /// [`Ledger::bulk_end`], queries and decisions would see incomplete indexes: only replay
    /// code, which answers nothing meanwhile, uses this.
    pub(crate) fn bulk_begin(&mut self) {
        let entries = self.entries_recorded();
        self.deferred
            .get_or_insert_with(|| Deferred::new(DEFERRED_CHANGES_MAX, entries));
    }

    /// Replaces every account (hints learned before name other account indexes, so this is
    /// another ledger for them).
    pub(crate) fn set_accounts(&mut self, accounts: Vec<AccountState>) {
        self.accounts = accounts;
        self.instance = Instance::new();
    }

    /// Whether every entry recorded is in the id index (always, except within a bulk replay
    /// between two [`Ledger::index_deferred_ids`]).
    pub(crate) fn ids_indexed(&self) -> bool {
        self.deferred
            .as_ref()
            .is_none_or(|d| d.unindexed_from == self.entries_recorded())
    }

    /// Entries recorded (`entries.len()`, which `insert_entry` keeps below `u32::MAX`).
    fn entries_recorded(&self) -> u32 {
        u32::try_from(self.entries.len()).unwrap_or(u32::MAX)
    }

    /// During a bulk replay, adds the entries recorded since the last call to the id index,
    /// refusing an id recorded twice.
    fn index_deferred_ids(&mut self) -> Result<(), InvariantViolated> {
        let to = self.entries_recorded();
        let Some(d) = &mut self.deferred else {
            return Ok(());
        };
        let from = std::mem::replace(&mut d.unindexed_from, to);
        let keys = stored::Keys {
            entries: &self.entries,
            ids: &self.ids,
        };
        self.entry_ix.insert_range(from, to, keys).map_err(|ix| {
            InvariantViolated(format!(
                "entry {} recorded twice",
                self.ids.get(self.entries[ix as usize].id)
            ))
        })
    }

    /// Applies every buffered index change, indexes the ids recorded meanwhile and stops
    /// buffering.
    pub(crate) fn bulk_end(&mut self) -> Result<(), InvariantViolated> {
        self.index_deferred_ids()?;
        match self.deferred.take() {
            Some(rest) => self.apply_deferred(&rest.changes, &rest.wide),
            None => Ok(()),
        }
    }

    /// Applies buffered index changes grouped by account, each account's in log order.
    ///
    /// The order comes from a counting sort (stable, O(changes + accounts), each change moved
    /// once), not a comparison sort, which spent most of a replay moving the ~90-byte changes.
    /// The sorted blocks are where the changes stay: each account's log takes its part as a
    /// run (`ChangeLog::push_run`), so no change is copied again and no log grows.
    fn apply_deferred(
        &mut self,
        changes: &[DeferredChange],
        wide: &[Deltas],
    ) -> Result<(), InvariantViolated> {
        let mut count = vec![0u32; self.accounts.len()];
        for c in changes {
            count[c.account as usize] += 1;
        }
        // Blocks of about `RUN_BLOCK_CHANGES`, each holding whole accounts' runs, and where
        // each account's run starts: (block, offset).
        let mut place = vec![(0u32, 0u32); count.len()];
        let mut sizes: Vec<u32> = Vec::new();
        let mut fill = 0u32;
        for (a, &n) in count.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if fill > 0 && fill as usize + n as usize > RUN_BLOCK_CHANGES {
                sizes.push(fill);
                fill = 0;
            }
            place[a] = (sizes.len() as u32, fill);
            fill += n;
        }
        if fill > 0 {
            sizes.push(fill);
        }
        let mut blocks: Vec<Arc<[Packed]>> = sizes
            .iter()
            .map(|&n| (0..n).map(|_| Packed::default()).collect())
            .collect();
        // (block, offset, amounts) of the changes that are not narrow.
        let mut wides: Vec<(u32, u32, Deltas)> = Vec::new();
        {
            // Scatter each change once into its place (sequential reads, independent
            // writes), so the apply loop below reads in order instead of waiting on a random
            // read per change.
            let mut out: Vec<&mut [Packed]> = blocks
                .iter_mut()
                .map(|b| Arc::get_mut(b).expect("just made, not shared"))
                .collect();
            for c in changes {
                let (b, o) = &mut place[c.account as usize];
                let narrow = (c.wide == NARROW).then_some(c.posted);
                out[*b as usize][*o as usize] = Packed::new(c.position, c.key, narrow);
                if narrow.is_none() {
                    wides.push((*b, *o, Deferred::deltas(wide, c)));
                }
                *o += 1;
            }
        }
        wides.sort_unstable_by_key(|w| (w.0, w.1));
        // After the scatter, `place[a]` is where account `a`'s run ends.
        let mut w = 0usize;
        for (account, (&n, &(b, end))) in count.iter().zip(&place).enumerate() {
            if n == 0 {
                continue;
            }
            let w_end = w + wides[w..].partition_point(|x| (x.0, x.1) < (b, end));
            let mine: Vec<(u32, Deltas)> = wides[w..w_end].iter().map(|x| (x.1, x.2)).collect();
            self.accounts[account]
                .index
                .apply_run(&blocks[b as usize], (end - n) as usize..end as usize, &mine)
                .map_err(|e| InvariantViolated(format!("balance index: {e:?}")))?;
            w = w_end;
        }
        Ok(())
    }

    /// Approximate heap bytes used by the balance indexes (for capacity planning).
    pub fn index_memory_bytes(&self) -> usize {
        self.accounts.iter().map(|a| a.index.memory_bytes()).sum()
    }

    /// Decides `command`, wraps its events in envelopes (positions after the current one,
    /// strictly increasing transaction times from `now`), applies them, and pushes them to
    /// `out` for the caller to append. Returns the answer for the caller: the outcome, or the
    /// rejection (whose record, if any, is among the events). This is steps 1, 2 and 4 of the
    /// calling protocol in one call; the engine and the test harness both use it.
    pub fn execute(
        &mut self,
        command: &Command,
        trace: &Trace,
        now: Timestamp,
        log_id: u64,
        out: &mut Vec<Envelope<LedgerEvent>>,
    ) -> Result<Result<Outcome, Rejection>, InvariantViolated> {
        self.execute_hinted(command, None, trace, now, log_id, out)
    }

    /// [`Ledger::execute`], given what [`Ledger::warm`] learned about `command` (from
    /// [`Warmed::hints`]), so that its decision skips those lookups. Hints learned for another
    /// command or on another ledger are ignored. Same answers, events and state as `execute`.
    pub fn execute_hinted(
        &mut self,
        command: &Command,
        hints: Option<&Hints>,
        trace: &Trace,
        now: Timestamp,
        log_id: u64,
        out: &mut Vec<Envelope<LedgerEvent>>,
    ) -> Result<Result<Outcome, Rejection>, InvariantViolated> {
        let ctx = Context {
            now,
            next_position: self.position() + 1,
        };
        let hints = hints.filter(|h| {
            h.instance == self.instance.0 && h.command == std::ptr::from_ref(command).addr()
        });
        let mut changes = None;
        let decision = self.decide_with_changes(command, &ctx, hints, &mut changes);
        // Where and when the last event was recorded: a new entry's receipt is built from it,
        // not read back from the state just written.
        let mut recorded = None;
        let (payloads, rejection) = match decision {
            Decided::Accept(events) => (events, None),
            Decided::AlreadyDone => (Events::new(), None),
            Decided::Reject { rejection, record } => {
                (record.into_iter().collect(), Some(rejection))
            }
        };
        let count = payloads.len();
        let mut entry = None;
        for (i, payload) in payloads.into_iter().enumerate() {
            // Built where the caller keeps it, and applied from there: an envelope is 288
            // bytes, and moving it into `out` after applying it was a `memcpy` per event.
            out.push(self.envelope(payload, trace, now, log_id));
            let env = out.last().expect("just pushed");
            // Only the first event can use changes computed by the decision (at its position).
            // And only it records the command's entry, whose id's hash warm may have taken.
            let (decided, id_hash) = match i {
                0 => (changes.as_ref(), Hints::entry_hash(hints)),
                _ => (None, None),
            };
            entry = match self.apply_with(env, decided, id_hash) {
                Ok(entry) => entry,
                Err(e) => {
                    // Not applied, so not the caller's to append.
                    out.pop();
                    return Err(e);
                }
            };
            recorded = Some((env.position, env.recorded_at, env.effective_at));
        }
        Ok(match (rejection, command) {
            (Some(r), _) => Err(r),
            (None, Command::ExpireHolds) => Ok(Outcome::HoldsExpired { count }),
            // A new entry (its one event recorded it): posted, version 1, where and when its
            // event says, without finding it by its id again.
            (None, Command::PostEntry(c)) if count == 1 => {
                let (Some(_), Some((position, recorded_at, effective_at))) = (entry, recorded)
                else {
                    return Err(InvariantViolated(format!(
                        "entry {} recorded no entry",
                        c.id
                    )));
                };
                let receipt = Outcome::Entry(EntryReceipt {
                    id: c.id.clone(),
                    status: EntryStatus::Posted,
                    version: 1,
                    effective_at,
                    position,
                    recorded_at,
                });
                debug_assert_eq!(Ok(&receipt), self.outcome(command).as_ref());
                Ok(receipt)
            }
            (None, _) => self.outcome(command),
        })
    }

    /// Wraps `payload` as the next event of this ledger's log: next position, next stream
    /// version, and a transaction time that is `now` unless that would not be strictly after
    /// the last one.
    pub fn envelope(
        &self,
        payload: LedgerEvent,
        trace: &Trace,
        now: Timestamp,
        log_id: u64,
    ) -> Envelope<LedgerEvent> {
        let position = self.position() + 1;
        let recorded_at = match self.recorded_at() {
            Some(last) if last.0 >= now => last.0.saturating_add_micros(1),
            _ => now,
        };
        let effective_at = payload.effective_at().unwrap_or(EffectiveAt(recorded_at));
        Envelope {
            event_id: EventId::from_log_position(log_id, position),
            stream: payload.stream(),
            stream_version: self.next_stream_version(&payload),
            position,
            recorded_at: RecordedAt(recorded_at),
            effective_at,
            trace: trace.clone(),
            schema_version: <LedgerEvent as DomainEvent>::SCHEMA_VERSION,
            payload,
        }
    }

    /// The version the event's stream will have once `event` is appended to it.
    pub fn next_stream_version(&self, event: &LedgerEvent) -> u64 {
        let account_version = |id: &AccountId| {
            self.account_ix
                .get(id)
                .map_or(0, |&i| self.accounts[i as usize].account.stream_version)
        };
        let entry_version = |id: &EntryId| self.stored_entry(id).map_or(0, |e| e.stream_version());
        1 + match event {
            LedgerEvent::AccountOpened { .. }
            | LedgerEvent::EntryPosted { .. }
            | LedgerEvent::HoldPlaced { .. }
            | LedgerEvent::EntryRejected { .. } => 0,
            LedgerEvent::AccountFrozen { account }
            | LedgerEvent::AccountUnfrozen { account }
            | LedgerEvent::AccountClosed { account }
            | LedgerEvent::AccountMetadataSet { account, .. } => account_version(account),
            LedgerEvent::HoldPosted { hold, .. }
            | LedgerEvent::HoldVoided { hold, .. }
            | LedgerEvent::HoldExpired { hold } => entry_version(hold),
            LedgerEvent::EntryCorrected { entry, .. } => entry_version(entry),
        }
    }

    /// Applies one recorded event. Events must come in log order, each exactly once.
    ///
    /// Fails only on a broken invariant (a bug, or an event that `decide` would never have
    /// produced); the ledger is then unusable and must be rebuilt from the log.
    pub fn apply(&mut self, env: &Envelope<LedgerEvent>) -> Result<(), InvariantViolated> {
        self.apply_with(env, None, None).map(|_| ())
    }

    /// [`Ledger::apply`], given the event's balance-index changes when `decide` already
    /// computed them against this same state (see [`Ledger::decide_with_changes`]), and the
    /// hash of the id of the entry it records when already known (`id_hash`, see [`Hints`]).
    /// Returns the index in [`Ledger::entries`] of the entry the event recorded or changed.
    fn apply_with(
        &mut self,
        env: &Envelope<LedgerEvent>,
        changes: Option<&Changes>,
        id_hash: Option<u64>,
    ) -> Result<Option<u32>, InvariantViolated> {
        let expected = self.position() + 1;
        if env.position != expected {
            return Err(InvariantViolated(format!(
                "event at position {} applied when {} was expected",
                env.position, expected
            )));
        }
        if let Some(last) = self.positions.last() {
            if env.recorded_at.0.as_micros() <= last.recorded_at {
                return Err(InvariantViolated("recorded_at did not increase".into()));
            }
        }
        let entry = self.apply_payload(env, changes, id_hash)?;
        self.positions.push(PositionMeta {
            recorded_at: env.recorded_at.0.as_micros(),
            // `insert_entry` keeps indexes below u32::MAX, so 1 + index fits.
            entry: entry.and_then(|i| NonZeroU32::new(i + 1)),
            event_type: env.payload.type_code(),
        });
        Ok(entry)
    }

    fn account_mut(&mut self, id: &AccountId) -> Result<&mut AccountState, InvariantViolated> {
        match self.account_ix.get(id) {
            Some(&i) => Ok(&mut self.accounts[i as usize]),
            None => Err(InvariantViolated(format!(
                "event names unknown account {id}"
            ))),
        }
    }

    /// The index in `entries` of an entry an event names.
    fn entry_index(&self, id: &EntryId) -> Result<u32, InvariantViolated> {
        self.entry_position(id)
            .ok_or_else(|| InvariantViolated(format!("event names unknown entry {id}")))
    }

    fn entry_mut(&mut self, id: &EntryId) -> Result<&mut Entry, InvariantViolated> {
        let i = self.entry_index(id)?;
        Ok(self.entry_mut_at(i))
    }

    /// Applies balance-index changes (from [`Ledger::posting_changes`] and friends).
    fn apply_changes(
        &mut self,
        position: u64,
        changes: &[(u32, TimelineKey, Deltas)],
    ) -> Result<(), InvariantViolated> {
        if let Some(buf) = &mut self.deferred {
            for &(acc, key, d) in changes {
                buf.push(acc, position, key, d)?;
            }
            if buf.changes.len() >= buf.max {
                let mut full = std::mem::take(&mut buf.changes);
                let mut wide = std::mem::take(&mut buf.wide);
                self.apply_deferred(&full, &wide)?;
                // The buffers go back emptied: their pages stay mapped for the next ones
                // (allocated anew, a buffer of this size is fresh memory from the system,
                // a page fault per 4 KB, at every flush).
                full.clear();
                wide.clear();
                if let Some(buf) = &mut self.deferred {
                    (buf.changes, buf.wide) = (full, wide);
                }
                self.index_deferred_ids()?;
            }
            return Ok(());
        }
        for &(acc, key, d) in changes {
            self.accounts[acc as usize]
                .index
                .apply(position, key, d)
                .map_err(|e| InvariantViolated(format!("balance index: {e:?}")))?;
        }
        Ok(())
    }

    /// Applies the event's effect; returns the index in `entries` of the entry it recorded
    /// or changed, if any.
    fn apply_payload(
        &mut self,
        env: &Envelope<LedgerEvent>,
        precomputed: Option<&Changes>,
        id_hash: Option<u64>,
    ) -> Result<Option<u32>, InvariantViolated> {
        let pos = env.position;
        // During a bulk replay, entries are indexed by id in runs; an event that may look one
        // up has the run so far indexed first (plain entries and openings look none up).
        if self.deferred.is_some()
            && !matches!(
                &env.payload,
                LedgerEvent::EntryPosted {
                    reversal_of: None,
                    ..
                } | LedgerEvent::AccountOpened { .. }
            )
        {
            self.index_deferred_ids()?;
        }
        match &env.payload {
            LedgerEvent::AccountOpened {
                id,
                currency,
                kind,
                owner,
                branch,
                constraints,
                metadata,
                opened_at,
                fingerprint,
            } => {
                if self.account_ix.contains_key(id) {
                    return Err(InvariantViolated(format!("account {id} opened twice")));
                }
                let account = Account {
                    id: id.clone(),
                    currency: *currency,
                    kind: *kind,
                    owner: owner.clone(),
                    branch: branch.clone(),
                    constraints: **constraints,
                    metadata: metadata.clone(),
                    status: AccountStatus::Open,
                    opened_at: *opened_at,
                    recorded_at: env.recorded_at,
                    stream_version: 1,
                    open_holds: 0,
                };
                let ix = u32::try_from(self.accounts.len())
                    .map_err(|_| InvariantViolated("too many accounts".into()))?;
                self.accounts.push(AccountState {
                    bounds: constraints.bounds(*kind),
                    account,
                    index: BitemporalIndex::new(),
                    position: pos,
                });
                self.account_ix.insert(id, ix, *currency);
                self.open_fingerprints.insert(id.clone(), *fingerprint);
                Ok(None)
            }
            LedgerEvent::AccountFrozen { account } => {
                self.account_event(account, pos, |a| a.status = AccountStatus::Frozen)
            }
            LedgerEvent::AccountUnfrozen { account } => {
                self.account_event(account, pos, |a| a.status = AccountStatus::Open)
            }
            LedgerEvent::AccountClosed { account } => {
                self.account_event(account, pos, |a| a.status = AccountStatus::Closed)
            }
            LedgerEvent::AccountMetadataSet { account, metadata } => {
                self.account_event(account, pos, |a| a.metadata = metadata.clone())
            }
            LedgerEvent::EntryPosted {
                id,
                postings,
                effective_at,
                metadata,
                reversal_of,
                fingerprint,
            } => {
                // A plain transfer is stored compact. It is recognised from its postings'
                // account indexes: those of its two index changes when the decision handed
                // them over (one change per account, in posting order, when the accounts
                // differ), with the accounts' currencies from their records (on the line
                // the decision read their status from, see `AccountState`); otherwise looked
                // up, with the currencies from the same slots (a replay, see
                // `stored::AccountIndex`).
                let transfer = match precomputed.map(|c| c.as_slice()) {
                    _ if reversal_of.is_some() || !metadata.is_empty() => None,
                    Some([(d, ..), (c, ..)]) => {
                        stored::compact_transfer(postings, [*d, *c], |ix| {
                            self.accounts.get(ix as usize).map(|a| a.account.currency)
                        })
                    }
                    _ => self
                        .posting_accounts(postings)
                        .and_then(|a| stored::compact_transfer_in(postings, a)),
                };
                // Each source of changes is borrowed where it lies (the match would move a
                // `Changes` into one variable, a `memcpy` per event).
                let (pair, computed);
                let changes: &[(u32, TimelineKey, Deltas)] = match (precomputed, transfer) {
                    (Some(c), _) => c,
                    // Between two accounts (a replay's events, nearly all), its two index
                    // changes come straight from its compact form: no list of changes built
                    // and merged per account.
                    (None, Some(t)) if t.debit != t.credit => {
                        pair = t.changes((effective_at.0.as_micros(), pos));
                        &pair
                    }
                    (None, _) => {
                        computed = self
                            .posting_changes(postings, *effective_at, pos, 1)
                            .map_err(|r| InvariantViolated(format!("entry {id}: {r}")))?;
                        &computed
                    }
                };
                debug_assert_eq!(
                    Ok(changes),
                    self.posting_changes(postings, *effective_at, pos, 1)
                        .as_deref()
                );
                self.apply_changes(pos, changes)?;
                if let Some(of) = reversal_of {
                    self.entry_mut(of)?.reversed_by = Some(id.clone());
                }
                let kind = match reversal_of {
                    Some(of) => EntryKind::Reversal { of: of.clone() },
                    None => EntryKind::Posted,
                };
                let ix = self.insert_entry(id, id_hash, |r| match transfer {
                    Some(t) => StoredEntry::transfer(r, *fingerprint, *effective_at, pos, t),
                    None => StoredEntry::cold(
                        r,
                        Entry::recorded(
                            id.clone(),
                            kind,
                            metadata.clone(),
                            postings.clone(),
                            *effective_at,
                            (pos, env.recorded_at),
                            *fingerprint,
                            1,
                        ),
                    ),
                })?;
                Ok(Some(ix))
            }
            LedgerEvent::HoldPlaced {
                id,
                postings,
                amount,
                effective_at,
                expires_at,
                metadata,
                fingerprint,
            } => {
                let (debit, credit) = self.hold_accounts(postings)?;
                let changes = hold_place_changes(
                    debit,
                    credit,
                    amount.minor(),
                    *effective_at,
                    *expires_at,
                    pos,
                );
                self.apply_changes(pos, &changes)?;
                self.accounts[debit as usize].account.open_holds += 1;
                self.accounts[credit as usize].account.open_holds += 1;
                if let Some(deadline) = expires_at {
                    self.hold_deadlines.insert((*deadline, id.clone()));
                }
                let kind = EntryKind::Hold {
                    expires_at: *expires_at,
                    amount: *amount,
                    resolution: None,
                };
                let entry = Entry::recorded(
                    id.clone(),
                    kind,
                    metadata.clone(),
                    postings.clone(),
                    *effective_at,
                    (pos, env.recorded_at),
                    *fingerprint,
                    1,
                );
                Ok(Some(
                    self.insert_entry(id, None, |r| StoredEntry::cold(r, entry))?,
                ))
            }
            LedgerEvent::HoldPosted {
                hold,
                amount,
                effective_at,
                fingerprint,
            } => {
                let resolution = HoldResolution::Posted {
                    amount: *amount,
                    effective_at: *effective_at,
                    position: pos,
                };
                let ix =
                    self.resolve_hold(hold, Some(amount.minor()), *effective_at, resolution, pos)?;
                self.resolutions.insert(hold.clone(), *fingerprint);
                Ok(Some(ix))
            }
            LedgerEvent::HoldVoided {
                hold,
                effective_at,
                fingerprint,
            } => {
                let resolution = HoldResolution::Voided {
                    effective_at: *effective_at,
                    position: pos,
                };
                let ix = self.resolve_hold(hold, None, *effective_at, resolution, pos)?;
                self.resolutions.insert(hold.clone(), *fingerprint);
                Ok(Some(ix))
            }
            LedgerEvent::HoldExpired { hold } => {
                // The reservation already ends at the deadline in valid time (recorded when the
                // hold was placed); expiry only settles the hold's status.
                let ix = self.entry_index(hold)?;
                let (postings, deadline) = {
                    let e = self.entry_mut_at(ix);
                    let deadline = match &mut e.kind {
                        EntryKind::Hold {
                            expires_at: Some(d),
                            resolution: r @ None,
                            ..
                        } => {
                            *r = Some(HoldResolution::Expired { position: pos });
                            *d
                        }
                        _ => return Err(InvariantViolated(format!("{hold} cannot expire"))),
                    };
                    e.stream_version += 1;
                    (e.current.postings.clone(), deadline)
                };
                let (debit, credit) = self.hold_accounts(&postings)?;
                self.accounts[debit as usize].account.open_holds -= 1;
                self.accounts[credit as usize].account.open_holds -= 1;
                self.hold_deadlines.remove(&(deadline, hold.clone()));
                Ok(Some(ix))
            }
            LedgerEvent::EntryCorrected {
                entry,
                correction_id,
                version,
                postings,
                effective_at,
                cancelled,
                reason,
                fingerprint,
            } => {
                let ix = self.entry_index(entry)?;
                let old = self.entry_mut_at(ix).current.clone();
                let mut changes = self
                    .posting_changes(&old.postings, old.effective_at, old.position, -1)
                    .map_err(|r| InvariantViolated(r.to_string()))?;
                changes.extend(
                    self.posting_changes(postings, *effective_at, pos, 1)
                        .map_err(|r| InvariantViolated(r.to_string()))?,
                );
                self.apply_changes(pos, &changes)?;
                let e = self.entry_mut_at(ix);
                let mut prev = std::mem::replace(
                    &mut e.current,
                    EntryVersion {
                        version: *version,
                        postings: postings.clone(),
                        effective_at: *effective_at,
                        position: pos,
                        recorded_at: env.recorded_at,
                        superseded_at: None,
                        correction_id: Some(correction_id.clone()),
                        reason: Some(reason.clone()),
                        cancelled: *cancelled,
                    },
                );
                prev.superseded_at = Some((pos, env.recorded_at));
                e.previous.push(prev);
                e.stream_version += 1;
                self.corrections.insert(
                    correction_id.clone(),
                    (entry.clone(), *version, *fingerprint),
                );
                Ok(Some(ix))
            }
            LedgerEvent::EntryRejected {
                id,
                fingerprint,
                rejection,
            } => {
                self.rejected
                    .insert(id.clone(), (*fingerprint, rejection.clone()));
                self.rejected_at.push((pos, id.clone()));
                Ok(None)
            }
        }
    }

    fn account_event(
        &mut self,
        id: &AccountId,
        pos: u64,
        f: impl FnOnce(&mut Account),
    ) -> Result<Option<u32>, InvariantViolated> {
        let st = self.account_mut(id)?;
        f(&mut st.account);
        st.account.stream_version += 1;
        st.position = pos;
        Ok(None)
    }

    /// Records a new entry with id `id` at the end of `entries`, built by `entry` from where
    /// its id lies in the arena; returns its index. `hash` is the id's hash in the entry-id
    /// index, if known.
    fn insert_entry(
        &mut self,
        id: &EntryId,
        hash: Option<u64>,
        entry: impl FnOnce(stored::IdRef) -> StoredEntry,
    ) -> Result<u32, InvariantViolated> {
        // Positions store 1 + the index in a u32.
        let ix = u32::try_from(self.entries.len())
            .ok()
            .filter(|&i| i < u32::MAX)
            .ok_or_else(|| InvariantViolated("too many entries".into()))?;
        if self.deferred.is_some() {
            // A bulk replay indexes the id later, refusing a duplicate then.
            let r = self.ids.push(id.as_str());
            self.entries.push(entry(r));
            return Ok(ix);
        }
        // One hash and one probe both to refuse a duplicate and to insert: the entry is
        // recorded first (the index compares the ids the entries hold) and taken back if its
        // id is there already.
        let hash = hash.unwrap_or_else(|| self.entry_ix.hash(id.as_str()));
        debug_assert_eq!(hash, self.entry_ix.hash(id.as_str()));
        let ids_len = self.ids.len();
        let r = self.ids.push(id.as_str());
        self.entries.push(entry(r));
        let keys = stored::Keys {
            entries: &self.entries,
            ids: &self.ids,
        };
        if self.entry_ix.insert_if_absent(hash, ix, keys).is_err() {
            self.entries.pop();
            self.ids.truncate(ids_len);
            return Err(InvariantViolated(format!("entry {id} recorded twice")));
        }
        Ok(ix)
    }

    /// The (debit, credit) account indexes of a hold's two postings.
    pub(crate) fn hold_accounts(
        &self,
        postings: &[Posting],
    ) -> Result<(u32, u32), InvariantViolated> {
        let ix = |p: &Posting| {
            self.account_ix
                .get(&p.account)
                .copied()
                .ok_or_else(|| InvariantViolated(format!("unknown account {}", p.account)))
        };
        match postings {
            [d, c] if d.direction == Direction::Debit && c.direction == Direction::Credit => {
                Ok((ix(d)?, ix(c)?))
            }
            _ => Err(InvariantViolated(
                "a hold has one debit and one credit posting".into(),
            )),
        }
    }

    fn resolve_hold(
        &mut self,
        hold: &EntryId,
        posted: Option<i128>,
        effective_at: EffectiveAt,
        resolution: HoldResolution,
        pos: u64,
    ) -> Result<u32, InvariantViolated> {
        let ix = self.entry_index(hold)?;
        let (postings, held, expires_at, placed_at) = {
            let e = self.entry_mut_at(ix);
            let placed_at = e.current.position;
            match &mut e.kind {
                EntryKind::Hold {
                    expires_at,
                    amount,
                    resolution: r @ None,
                } => {
                    *r = Some(resolution);
                    e.stream_version += 1;
                    (
                        e.current.postings.clone(),
                        amount.minor(),
                        *expires_at,
                        placed_at,
                    )
                }
                _ => return Err(InvariantViolated(format!("{hold} is not an open hold"))),
            }
        };
        let (debit, credit) = self.hold_accounts(&postings)?;
        let changes = hold_resolve_changes(
            debit,
            credit,
            held,
            posted,
            effective_at,
            expires_at,
            placed_at,
            pos,
        );
        self.apply_changes(pos, &changes)?;
        self.accounts[debit as usize].account.open_holds -= 1;
        self.accounts[credit as usize].account.open_holds -= 1;
        if let Some(d) = expires_at {
            self.hold_deadlines.remove(&(d, hold.clone()));
        }
        Ok(ix)
    }

    /// The account indexes and currencies of a two-posting entry's postings, if both
    /// accounts exist.
    fn posting_accounts(&self, postings: &[Posting]) -> Option<[(u32, crate::money::Currency); 2]> {
        let find = |p: &Posting| match self.account_ix.get_with_currency(&p.account)? {
            (ix, Some(currency)) => Some((ix, currency)),
            (ix, None) => Some((ix, self.accounts.get(ix as usize)?.account.currency)),
        };
        match postings {
            [a, b] => Some([find(a)?, find(b)?]),
            _ => None,
        }
    }

    /// Index changes of a set of postings at (effective_at, seq), merged per account;
    /// `sign` is +1 to add the version, -1 to take it back.
    pub(crate) fn posting_changes(
        &self,
        postings: &[Posting],
        effective_at: EffectiveAt,
        seq: u64,
        sign: i128,
    ) -> Result<Changes, Rejection> {
        let mut ixs = AccountIxs::new();
        for p in postings {
            match self.account_ix.get(&p.account) {
                Some(&ix) => ixs.push(ix),
                None => {
                    return Err(Rejection::UnknownAccount {
                        account: p.account.clone(),
                    })
                }
            }
        }
        posting_changes_at(postings, &ixs, effective_at, seq, sign)
    }
}

/// [`Ledger::posting_changes`] with the postings' account indexes already known (`ixs[i]` is
/// the index of `postings[i].account`).
pub(crate) fn posting_changes_at(
    postings: &[Posting],
    ixs: &[u32],
    effective_at: EffectiveAt,
    seq: u64,
    sign: i128,
) -> Result<Changes, Rejection> {
    let mut out = Changes::new();
    posting_changes_into(postings, ixs, effective_at, seq, sign, &mut out)?;
    Ok(out)
}

/// [`posting_changes_at`] into `out` (emptied first), where the caller keeps them: the hot
/// path's changes are built where they are used instead of being moved (176 bytes, a
/// `memcpy` each time) from one function's result to the next.
pub(crate) fn posting_changes_into(
    postings: &[Posting],
    ixs: &[u32],
    effective_at: EffectiveAt,
    seq: u64,
    sign: i128,
    out: &mut Changes,
) -> Result<(), Rejection> {
    debug_assert_eq!(postings.len(), ixs.len());
    let key = (effective_at.0.as_micros(), seq);
    out.clear();
    for (p, &acc) in postings.iter().zip(ixs) {
        let signed = match p.direction {
            Direction::Credit => p.amount.minor(),
            Direction::Debit => -p.amount.minor(),
        } * sign;
        match out.iter_mut().find(|(a, _, _)| *a == acc) {
            Some((_, _, d)) => {
                d.posted = d.posted.checked_add(signed).ok_or(Rejection::Overflow)?;
            }
            None => out.push((
                acc,
                key,
                Deltas {
                    posted: signed,
                    ..Deltas::ZERO
                },
            )),
        }
    }
    Ok(())
}

/// Index changes of placing a hold: the reservation starts at `effective_at` and, if there is
/// a deadline, ends there (both recorded now, keyed by the hold's position).
pub(crate) fn hold_place_changes(
    debit: u32,
    credit: u32,
    amount: i128,
    effective_at: EffectiveAt,
    expires_at: Option<Timestamp>,
    pos: u64,
) -> Changes {
    let start = (effective_at.0.as_micros(), pos);
    let mut v = smallvec::smallvec![
        (
            debit,
            start,
            Deltas {
                pending_debit: amount,
                ..Deltas::ZERO
            },
        ),
        (
            credit,
            start,
            Deltas {
                pending_credit: amount,
                ..Deltas::ZERO
            },
        ),
    ];
    if let Some(end) = expires_at {
        let end = (end.as_micros(), pos);
        v.push((
            debit,
            end,
            Deltas {
                pending_debit: -amount,
                ..Deltas::ZERO
            },
        ));
        v.push((
            credit,
            end,
            Deltas {
                pending_credit: -amount,
                ..Deltas::ZERO
            },
        ));
    }
    v
}

/// Index changes of resolving a hold at `effective_at` (log position `pos`): the reservation
/// now ends there instead of at its deadline, and `posted` (if any) becomes posted money.
#[allow(clippy::too_many_arguments)]
pub(crate) fn hold_resolve_changes(
    debit: u32,
    credit: u32,
    held: i128,
    posted: Option<i128>,
    effective_at: EffectiveAt,
    expires_at: Option<Timestamp>,
    placed_at: u64,
    pos: u64,
) -> Changes {
    let at = (effective_at.0.as_micros(), pos);
    let x = posted.unwrap_or(0);
    let mut v = smallvec::smallvec![
        (
            debit,
            at,
            Deltas {
                posted: -x,
                pending_debit: -held,
                pending_credit: 0,
            },
        ),
        (
            credit,
            at,
            Deltas {
                posted: x,
                pending_debit: 0,
                pending_credit: -held,
            },
        ),
    ];
    if let Some(end) = expires_at {
        let end = (end.as_micros(), placed_at);
        v.push((
            debit,
            end,
            Deltas {
                pending_debit: held,
                ..Deltas::ZERO
            },
        ));
        v.push((
            credit,
            end,
            Deltas {
                pending_credit: held,
                ..Deltas::ZERO
            },
        ));
    }
    v
}

/// Shared so `Arc<[Posting]>` can be built from a `Vec` without naming `Arc` at call sites.
pub(crate) fn share(postings: &[Posting]) -> Postings {
    Arc::from(postings)
}

#[cfg(test)]
mod tests;
