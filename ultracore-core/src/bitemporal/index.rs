//! Both time axes of one account: [`BitemporalIndex`], the log of every change in transaction
//! time (log position) with the current valid-time [`Timeline`] and summaries for as-of queries.
//!
//! # Structure
//!
//! * `log`: every [`Change`] in the order applied (positions non-decreasing).
//! * `current`: the [`Timeline`] of all changes, for "as known now" questions, keyed by valid-time
//!   instant (`(effective_at, 0)`): everything effective at one microsecond is one point, so a
//!   limit is never judged between two entries of the same instant.
//! * `levels`: summaries of aligned blocks of the log. Level 0 summarises each block of
//!   `block_len` consecutive changes (default [`SUMMARY_BLOCK_LEN_DEFAULT`]), level `i` each block of
//!   `block_len * fanout^i` (default fan-out [`SUMMARY_FANOUT_DEFAULT`]). A summary holds the
//!   block's net value per key (zeros dropped) in key order with running sums, so "sum of the
//!   block's changes with `key.0 <= v`" is one binary search. A summary is built when its block
//!   completes: level 0 from the raw log, level `i` by merging the `fanout` summaries below it.
//!
//! An as-of query at `known_at = T` finds `p`, the number of changes with position `<= T`, and
//! covers the log prefix `0..p` greedily with the largest complete blocks, then the raw changes of
//! the last, partial level-0 block. When fewer than `block_len` changes are newer than `T`, it
//! instead takes the current answer and subtracts those changes.
//!
//! # Complexity (n changes, B = block_len, F = fanout, L = number of levels ≈ log_F(n / B) + 1)
//!
//! | operation | cost |
//! | --- | --- |
//! | `apply` | `Timeline::add` + O(1), plus amortised O(L log F) for summaries (a block of B·F^i is built at once, in O(B·F^i log F), when it completes) |
//! | `balance(v, None)` | `Timeline::prefix`: O(log n) |
//! | `balance(v, Some(T))` | O(log n) to find p, then at most n/(B·F^(L-1)) + (F-1)(L-1) summaries at O(log(B·F^i)) each, plus at most B raw changes; or `prefix` + at most B raw changes |
//! | `entries(from, to, Some(T))` | the same covering, then O(m log m) for the m matching summary entries |
//!
//! With the defaults (B = 1024, F = 64) and 1,000,000 changes: L = 2, so at most 15 + 63
//! binary searches and 1,023 raw changes.
//!
//! Memory ([`ChangeLog`], the current timeline's and the summaries' running sums store
//! posted-only `i64` amounts narrowly, as nearly every change is): the log (32 bytes per change;
//! 96 for one with hold amounts), the current timeline (~24 bytes per valid-time instant; 64 in
//! chunks that hold hold amounts), and 24 bytes per (block, key) in each level (64 when the
//! block's sums need hold amounts): about 32 + 24 + 24·L bytes per change when keys rarely
//! repeat, and 32 + 24·L when many changes share an instant (a batch's entries do).

use super::log::{ChangeLog, Packed, Stored, Sums};
use super::timeline::{Deltas, Timeline, TimelineError, TimelineKey, Violation};
use crate::varint::{Malformed, Reader, Writer};

/// Default number of changes summarised by one level-0 block.
pub const SUMMARY_BLOCK_LEN_DEFAULT: usize = 1024;

/// Default number of level-`i` blocks in one level-`i+1` block.
pub const SUMMARY_FANOUT_DEFAULT: usize = 64;

const _: () = assert!(SUMMARY_BLOCK_LEN_DEFAULT >= 1 && SUMMARY_FANOUT_DEFAULT >= 2);

/// One recorded change: at log position `position`, `deltas` was added to the value at `key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// Transaction time: the log position that recorded the change.
    pub position: u64,
    /// Valid-time key the change applies to.
    pub key: TimelineKey,
    /// Amounts added.
    pub deltas: Deltas,
}

/// The current timeline's key for a version key: its valid-time instant alone. Balances at an
/// instant include every entry effective then, so limits are checked per instant, never between
/// two entries that take effect at the same microsecond (their recording order is irrelevant).
fn instant(key: TimelineKey) -> TimelineKey {
    (key.0, 0)
}

/// Net value per key of one block of the log, in key order, with running sums.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Summary {
    keys: Vec<TimelineKey>,
    cums: Sums,
}

impl Summary {
    fn from_entries(entries: Vec<(TimelineKey, Deltas)>) -> Summary {
        let net = net_by_key(entries);
        let mut keys = Vec::with_capacity(net.len());
        let mut cums = Vec::with_capacity(net.len());
        let mut running = Deltas::ZERO;
        for (key, d) in net {
            running = running.plus(d);
            keys.push(key);
            cums.push(running);
        }
        Summary {
            keys,
            cums: Sums::new(cums),
        }
    }

    fn before(&self, i: usize) -> Deltas {
        if i == 0 {
            Deltas::ZERO
        } else {
            self.cums.get(i - 1)
        }
    }

    /// Sum of the block's changes with `key.0 <= valid_at`.
    fn prefix(&self, valid_at: i64) -> Deltas {
        self.before(self.keys.partition_point(|k| k.0 <= valid_at))
    }

    /// Appends the block's net entries with `from <= key.0 <= to` to `out`.
    fn push_range(&self, from: i64, to: i64, out: &mut Vec<(TimelineKey, Deltas)>) {
        let start = self.keys.partition_point(|k| k.0 < from);
        let end = self.keys.partition_point(|k| k.0 <= to);
        out.extend((start..end).map(|i| (self.keys[i], self.cums.get(i).minus(self.before(i)))));
    }

    fn memory_bytes(&self) -> usize {
        self.keys.capacity() * size_of::<TimelineKey>() + self.cums.memory_bytes()
    }
}

/// Sorts by key (stably: equal keys keep their log order), sums equal keys and drops zeros.
///
/// Every partial sum of one key's entries in log order is that key's value at some point of the
/// log, or (when subtracting the newest changes) differs from the current value by fewer than
/// `block_len` changes, so the plain arithmetic stays in range.
fn net_by_key(mut entries: Vec<(TimelineKey, Deltas)>) -> Vec<(TimelineKey, Deltas)> {
    entries.sort_by_key(|e| e.0);
    let mut out: Vec<(TimelineKey, Deltas)> = Vec::with_capacity(entries.len());
    for (key, d) in entries {
        match out.last_mut() {
            Some((k, sum)) if *k == key => *sum = sum.plus(d),
            _ => {
                if out.last().is_some_and(|(_, sum)| sum.is_zero()) {
                    out.pop();
                }
                out.push((key, d));
            }
        }
    }
    if out.last().is_some_and(|(_, sum)| sum.is_zero()) {
        out.pop();
    }
    out
}

/// Summaries of aligned blocks of `block_len` changes.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Level {
    block_len: usize,
    blocks: Vec<Summary>,
}

/// The bitemporal balance index of one account: every change by transaction time (log
/// position) and valid time (key), answering "balance at valid time V as known at position T".
///
/// Calling protocol: `apply` each change in log order (positions non-decreasing; several changes
/// may share a position); query at any time. See the module docs for structure and costs.
///
/// Laid out (`repr(C)`) so that what an append reads and writes lies in 128 bytes from
/// `BitemporalIndex::HOT_OFFSET`: the timeline's tail chunk and lengths (its last fields),
/// the block length, then the change log's tail and length (its first fields).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct BitemporalIndex {
    current: Timeline,
    block_len: usize,
    fanout: usize,
    #[serde(with = "change_log")]
    log: ChangeLog,
    levels: Vec<Level>,
}

// What an append touches spans two lines from `HOT_OFFSET` (see `BitemporalIndex`).
const _: () = assert!(
    std::mem::offset_of!(BitemporalIndex, log) + ChangeLog::HOT_END
        <= BitemporalIndex::HOT_OFFSET + 128
);

impl Default for BitemporalIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl BitemporalIndex {
    /// Offset of the first byte an append touches: the timeline's tail chunk. An embedding
    /// struct aligns it to a cache line (see the layout note on the type).
    pub(crate) const HOT_OFFSET: usize =
        std::mem::offset_of!(BitemporalIndex, current) + Timeline::HOT_OFFSET;

    /// An empty index with the default block sizes.
    pub fn new() -> Self {
        Self::with_block_len(SUMMARY_BLOCK_LEN_DEFAULT, SUMMARY_FANOUT_DEFAULT)
    }

    /// An empty index with level-0 blocks of `block_len` changes (at least 1) and `fanout` blocks
    /// per next-level block (at least 2): for tests with few changes, and for tuning.
    pub fn with_block_len(block_len: usize, fanout: usize) -> Self {
        BitemporalIndex {
            current: Timeline::new(),
            log: ChangeLog::default(),
            levels: Vec::new(),
            block_len: block_len.max(1),
            fanout: fanout.max(2),
        }
    }

    /// Same as [`BitemporalIndex::with_block_len`], with a current timeline of the given chunk
    /// size (see [`Timeline::with_chunk_len_max`]).
    pub fn with_sizes(block_len: usize, fanout: usize, chunk_len_max: usize) -> Self {
        BitemporalIndex {
            current: Timeline::with_chunk_len_max(chunk_len_max),
            ..Self::with_block_len(block_len, fanout)
        }
    }

    /// Records that at log position `position`, `d` was added to the value at `key`, and applies
    /// it to the current timeline. On error nothing changed.
    pub fn apply(
        &mut self,
        position: u64,
        key: TimelineKey,
        d: Deltas,
    ) -> Result<(), TimelineError> {
        if let Some(last) = self.log.last_position() {
            if position < last {
                return Err(TimelineError::PositionOutOfOrder {
                    last,
                    given: position,
                });
            }
        }
        if self.log.len() >= u32::MAX as usize {
            return Err(TimelineError::Overflow);
        }
        self.current.add(instant(key), d)?;
        self.log
            .push(Change {
                position,
                key,
                deltas: d,
            })
            .expect("fewer than u32::MAX changes, checked above");
        self.summarise_completed_blocks();
        Ok(())
    }

    /// Applies `changes` (position, key, deltas) in order, as [`BitemporalIndex::apply`] would
    /// one by one, but adds each run of consecutive changes at one instant to the current
    /// timeline as their sum, once: every change of a batch to one account is at the batch's
    /// instant, so replay and snapshot decode make one timeline update per run instead of one
    /// per change. For replay: on `Err` the index is half-applied, and the caller drops it.
    pub fn apply_many(
        &mut self,
        changes: impl IntoIterator<Item = (u64, TimelineKey, Deltas)>,
    ) -> Result<(), TimelineError> {
        let changes = changes.into_iter();
        // Room for all of them at once (replay hands over one account's changes in one call).
        self.log.reserve(changes.size_hint().0);
        let (before, last) = (self.log.len(), self.log.last_position());
        for (position, key, d) in changes {
            self.log
                .push(Change {
                    position,
                    key,
                    deltas: d,
                })
                .map_err(|_| TimelineError::Overflow)?;
        }
        self.appended(before, last)
    }

    /// Appends `block[range]` (changes in log order, their wide amounts in `wide` as for
    /// [`ChangeLog::push_run`]) as [`BitemporalIndex::apply_many`] would, but keeps the changes
    /// where they are: the log takes the range as a run of the shared block (a bulk replay's
    /// buffer, sorted by account), so no change is copied and the log does not grow. For
    /// replay: on `Err` the index is half-applied, and the caller drops it.
    pub(crate) fn apply_run(
        &mut self,
        block: &std::sync::Arc<[Packed]>,
        range: std::ops::Range<usize>,
        wide: &[(u32, Deltas)],
    ) -> Result<(), TimelineError> {
        let (before, last) = (self.log.len(), self.log.last_position());
        self.log
            .push_run(block, range, wide)
            .map_err(|_| TimelineError::Overflow)?;
        self.appended(before, last)
    }

    /// Brings the rest of the index up to the log after changes `before..` were appended to
    /// it in one go (`last`: the position of the last change before them): checks their
    /// positions' order, adds each run of them at one instant to the current timeline as
    /// its sum, once, and builds the summary of every block they completed.
    fn appended(&mut self, before: usize, last: Option<u64>) -> Result<(), TimelineError> {
        let mut last = last;
        let mut run = InstantRun::default();
        // The changes as stored: a narrow one (nearly all) adds its posted amount to the
        // run's sum, with no `Change` and no three-amount sum built for it.
        let mut changes = self.log.range(before..self.log.len());
        while let Some((position, key, amounts)) = changes.next_stored() {
            if let Some(last) = last {
                if position < last {
                    return Err(TimelineError::PositionOutOfOrder {
                        last,
                        given: position,
                    });
                }
            }
            last = Some(position);
            match amounts {
                Stored::Narrow(posted) => run.add_posted(&mut self.current, key, posted)?,
                Stored::Wide(d) => run.add(&mut self.current, key, d)?,
            }
        }
        run.flush(&mut self.current)?;
        // Every block boundary the new changes crossed, in order.
        let bl = self.block_len;
        let mut n = (before / bl + 1) * bl;
        while n <= self.log.len() {
            self.summarise_blocks_ending_at(n);
            n += bl;
        }
        Ok(())
    }

    /// Reserves room for `additional` more changes appended live (the change log's tail and
    /// the timeline's last chunk), so that they do not reallocate either. Changes no answer.
    pub fn reserve(&mut self, additional: usize) {
        self.current.reserve(additional);
        self.log.reserve(additional);
    }

    /// Reads, for every index of `indexes`, the ends of the timeline and the change log that
    /// an append reads, stage by stage over all of them (see `Ledger::warm`); returns
    /// something derived from what it read.
    pub(crate) fn warm(indexes: &[&BitemporalIndex]) -> u64 {
        let timelines: smallvec::SmallVec<[&Timeline; 128]> =
            indexes.iter().map(|i| &i.current).collect();
        let logs = indexes.iter().fold(0u64, |acc, i| {
            acc.wrapping_add(i.log.last_position().unwrap_or(0))
        });
        Timeline::warm(&timelines).wrapping_add(logs)
    }

    /// The valid-time timeline of everything known now.
    pub fn current(&self) -> &Timeline {
        &self.current
    }

    /// Every change recorded, in log order.
    pub fn changes(&self) -> &ChangeLog {
        &self.log
    }

    /// [`Timeline::check`] on the current timeline.
    pub fn check(
        &self,
        changes: &[(TimelineKey, Deltas)],
        lower: Option<i128>,
        upper: Option<i128>,
    ) -> Result<(), Violation> {
        let at_instants: smallvec::SmallVec<[(TimelineKey, Deltas); 4]> =
            changes.iter().map(|&(k, d)| (instant(k), d)).collect();
        self.current.check(&at_instants, lower, upper)
    }

    /// Whether `apply` would accept every change (no value would leave its representable
    /// range), so a decision can refuse what its application could not store.
    #[inline]
    pub fn can_apply(&self, changes: &[(TimelineKey, Deltas)]) -> bool {
        let last = self.current.last_key();
        match changes {
            // One change past the last instant (the common append): only it must be in range.
            [(key, d)] if last.is_none_or(|l| l < instant(*key)) => d.is_within_value_max(),
            _ => self.can_apply_all(changes, last),
        }
    }

    /// [`BitemporalIndex::can_apply`] in general: each change's instant summed with what is
    /// stored there.
    fn can_apply_all(&self, changes: &[(TimelineKey, Deltas)], last: Option<TimelineKey>) -> bool {
        changes.iter().all(|&(k, _)| {
            let at = instant(k);
            let same = changes
                .iter()
                .filter(|c| instant(c.0) == at)
                .try_fold(Deltas::ZERO, |acc, c| acc.checked_add(&c.1));
            // Past the last instant (the common append) nothing is stored there yet.
            let stored = if last.is_none_or(|l| l < at) {
                Deltas::ZERO
            } else {
                self.current.get(at).unwrap_or(Deltas::ZERO)
            };
            same.and_then(|d| stored.checked_add(&d))
                .is_some_and(|v| v.is_within_value_max())
        })
    }

    /// Sum of the changes with `position <= known_at` (`None`: all) and `key.0 <= valid_at`.
    pub fn balance(&self, valid_at: i64, known_at: Option<u64>) -> Deltas {
        let p = self.known_len(known_at);
        let n = self.log.len();
        if p == n {
            return self.current.prefix(valid_at);
        }
        if n - p <= self.block_len {
            let newer = self.log.range(p..n).filter(|c| c.key.0 <= valid_at);
            return newer.fold(self.current.prefix(valid_at), |acc, c| acc.minus(c.deltas));
        }
        let mut acc = Deltas::ZERO;
        let raw_from = self.for_each_summary(p, |s| acc = acc.plus(s.prefix(valid_at)));
        let raw = self.log.range(raw_from..p).filter(|c| c.key.0 <= valid_at);
        raw.fold(acc, |acc, c| acc.plus(c.deltas))
    }

    /// The timeline entries with `from <= key.0 <= to` as known at `known_at` (`None`: now): the
    /// net value per key, zeros omitted, in key order.
    pub fn entries(&self, from: i64, to: i64, known_at: Option<u64>) -> Vec<(TimelineKey, Deltas)> {
        if from > to {
            return Vec::new();
        }
        let p = self.known_len(known_at);
        let in_range = |c: &Change| from <= c.key.0 && c.key.0 <= to;
        // The current timeline merges each valid-time instant, so per-version lines always come
        // from the summaries of the log (plus its raw tail).
        let mut out = Vec::new();
        let raw_from = self.for_each_summary(p, |s| s.push_range(from, to, &mut out));
        out.extend(
            self.log
                .range(raw_from..p)
                .filter(in_range)
                .map(|c| (c.key, c.deltas)),
        );
        net_by_key(out)
    }

    /// Approximate heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        let summaries: usize = self
            .levels
            .iter()
            .map(|l| {
                l.blocks.capacity() * size_of::<Summary>()
                    + l.blocks.iter().map(Summary::memory_bytes).sum::<usize>()
            })
            .sum();
        self.current.memory_bytes()
            + self.log.memory_bytes()
            + self.levels.capacity() * size_of::<Level>()
            + summaries
    }

    /// Number of changes with `position <= known_at`.
    fn known_len(&self, known_at: Option<u64>) -> usize {
        match known_at {
            None => self.log.len(),
            Some(t) => self.log.known_len(t),
        }
    }

    /// Calls `f` on summaries covering the log prefix `0..p` with the largest blocks, and returns
    /// where the raw remainder (less than one level-0 block) starts.
    fn for_each_summary(&self, p: usize, mut f: impl FnMut(&Summary)) -> usize {
        let mut start = 0;
        for level in self.levels.iter().rev() {
            let bl = level.block_len;
            // `start` is a multiple of every higher level's block length, hence of `bl`.
            let (first, end) = (start / bl, p / bl);
            for s in &level.blocks[first..end] {
                f(s);
            }
            start = start.max(end * bl);
        }
        start
    }

    /// Builds the summary of every block that the last change completed.
    fn summarise_completed_blocks(&mut self) {
        let n = self.log.len();
        // The common case, no block completed, without a division when the block length is
        // a power of two (the default): this runs for every change.
        if self.block_len.is_power_of_two() && n & (self.block_len - 1) != 0 {
            return;
        }
        self.summarise_blocks_ending_at(n);
    }

    /// Builds the summary of every block that ends with the log's `n`th change (every block
    /// ending earlier already has its summary).
    fn summarise_blocks_ending_at(&mut self, n: usize) {
        let mut bl = self.block_len;
        let mut level = 0;
        while n.is_multiple_of(bl) {
            let entries: Vec<(TimelineKey, Deltas)> = if level == 0 {
                self.log
                    .range(n - bl..n)
                    .map(|c| (c.key, c.deltas))
                    .collect()
            } else {
                let below = &self.levels[level - 1].blocks;
                let mut v = Vec::new();
                for s in &below[below.len() - self.fanout..] {
                    s.push_range(i64::MIN, i64::MAX, &mut v);
                }
                v
            };
            if self.levels.len() == level {
                self.levels.push(Level {
                    block_len: bl,
                    blocks: Vec::new(),
                });
            }
            self.levels[level]
                .blocks
                .push(Summary::from_entries(entries));
            level += 1;
            match bl.checked_mul(self.fanout) {
                Some(next) => bl = next,
                None => break,
            }
        }
    }
}

/// Writes one change in the change log's varint form (see `change_log`), after the change
/// whose (position, valid time) is `prev`, which it updates.
fn write_change(w: &mut Writer, c: &Change, prev: &mut (u64, i64)) {
    w.var(c.position.wrapping_sub(prev.0));
    w.zig(c.key.0.wrapping_sub(prev.1));
    w.zig(c.key.1.wrapping_sub(c.position) as i64);
    *prev = (c.position, c.key.0);
    write_deltas(w, &c.deltas);
}

/// A byte saying which amounts are non-zero, then those.
fn write_deltas(w: &mut Writer, d: &Deltas) {
    let parts = [d.posted, d.pending_debit, d.pending_credit];
    let mask = parts
        .iter()
        .enumerate()
        .fold(0u8, |m, (i, v)| if *v != 0 { m | 1 << i } else { m });
    w.0.push(mask);
    for v in parts.into_iter().filter(|v| *v != 0) {
        w.zig128(v);
    }
}

fn read_change(r: &mut Reader<'_>, prev: &mut (u64, i64)) -> Result<Change, Malformed> {
    let position = prev.0.wrapping_add(r.var()?);
    let valid = prev.1.wrapping_add(r.zig()?);
    let seq = position.wrapping_add(r.zig()? as u64);
    *prev = (position, valid);
    Ok(Change {
        position,
        key: (valid, seq),
        deltas: read_deltas(r)?,
    })
}

fn read_deltas(r: &mut Reader<'_>) -> Result<Deltas, Malformed> {
    let mask = r.u8()?;
    if mask > 0b111 {
        return Err(Malformed("amount mask"));
    }
    let mut parts = [0i128; 3];
    for (i, p) in parts.iter_mut().enumerate() {
        if mask & (1 << i) != 0 {
            *p = r.zig128()?;
        }
    }
    Ok(Deltas {
        posted: parts[0],
        pending_debit: parts[1],
        pending_credit: parts[2],
    })
}

/// Encodes an index as it was after its first `len` changes, in steps, while changes are
/// still being applied to it between the steps: the log and the summaries only ever grow, so
/// their part for the first `len` changes never changes. The current timeline is not written
/// (it changes in place); [`BitemporalIndex::decode_prefix`] rebuilds it from the log.
///
/// Form: block length, fan-out, the `len` changes (each as `write_change`), the number of
/// levels with a complete block, then per level its number of complete blocks and per block
/// its number of keys and each key (valid time and sequence as deltas from the previous key's)
/// with its running sum (as `write_deltas`).
#[derive(Debug)]
pub(crate) struct PrefixEncoder {
    len: usize,
    out: Writer,
    stage: Stage,
    prev: (u64, i64),
}

#[derive(Debug, Clone, Copy)]
enum Stage {
    Start,
    Changes(usize),
    Levels { level: usize, block: usize },
    Done,
}

impl PrefixEncoder {
    pub(crate) fn new(len: usize) -> Self {
        PrefixEncoder {
            len,
            out: Writer(Vec::new()),
            stage: Stage::Start,
            prev: (0, 0),
        }
    }

    /// Encodes about `budget` more changes or summary keys of `index` (the index this
    /// encoder was made for, with at least `len` changes); returns how many it did, and
    /// whether it is done.
    pub(crate) fn step(&mut self, index: &BitemporalIndex, budget: usize) -> (usize, bool) {
        let mut used = 0;
        loop {
            match self.stage {
                Stage::Start => {
                    self.out.var(index.block_len as u64);
                    self.out.var(index.fanout as u64);
                    self.out.var(self.len as u64);
                    self.stage = Stage::Changes(0);
                }
                Stage::Changes(from) => {
                    let to = self.len.min(from.saturating_add(budget - used));
                    for c in index.log.range(from..to) {
                        write_change(&mut self.out, &c, &mut self.prev);
                    }
                    used += to - from;
                    if to < self.len {
                        self.stage = Stage::Changes(to);
                        return (used, false);
                    }
                    let levels = index
                        .levels
                        .iter()
                        .take_while(|l| self.len / l.block_len > 0)
                        .count();
                    self.out.var(levels as u64);
                    self.stage = Stage::Levels { level: 0, block: 0 };
                }
                Stage::Levels { level, block } => {
                    let Some(l) = index.levels.get(level).filter(|l| self.len >= l.block_len)
                    else {
                        self.stage = Stage::Done;
                        continue;
                    };
                    let blocks = self.len / l.block_len;
                    if block == 0 {
                        self.out.var(blocks as u64);
                    }
                    let mut b = block;
                    while b < blocks && used < budget {
                        let s = &l.blocks[b];
                        self.out.var(s.keys.len() as u64);
                        let mut prev = (0i64, 0u64);
                        for (i, k) in s.keys.iter().enumerate() {
                            self.out.zig(k.0.wrapping_sub(prev.0));
                            self.out.zig(k.1.wrapping_sub(prev.1) as i64);
                            prev = *k;
                            write_deltas(&mut self.out, &s.cums.get(i));
                        }
                        used += s.keys.len().max(1);
                        b += 1;
                    }
                    self.stage = if b < blocks {
                        Stage::Levels { level, block: b }
                    } else {
                        Stage::Levels {
                            level: level + 1,
                            block: 0,
                        }
                    };
                    if used >= budget {
                        return (used, matches!(self.stage, Stage::Done));
                    }
                }
                Stage::Done => return (used, true),
            }
        }
    }

    /// The encoded bytes (call once `step` said it is done).
    pub(crate) fn finish(self) -> Vec<u8> {
        self.out.0
    }
}

impl BitemporalIndex {
    /// Writes changes `from..to` of the log (a delta snapshot's part of this index): their
    /// count, then each as [`PrefixEncoder`] writes it.
    pub(crate) fn encode_changes(&self, w: &mut Writer, from: usize, to: usize) {
        w.var((to - from) as u64);
        let mut prev = (0, 0);
        for c in self.log.range(from..to) {
            write_change(w, &c, &mut prev);
        }
    }

    /// Applies changes written by [`BitemporalIndex::encode_changes`], as
    /// [`BitemporalIndex::apply_many`] (summaries are built as blocks complete). On `Err` the
    /// index is half-applied; the caller drops it.
    pub(crate) fn apply_encoded_changes(&mut self, r: &mut Reader<'_>) -> Result<(), Malformed> {
        let n = r.len_hint(4)?;
        self.log.reserve(n);
        let mut prev = (0, 0);
        let mut unread = None;
        let changes = (0..n).map_while(|_| match read_change(r, &mut prev) {
            Ok(c) => Some((c.position, c.key, c.deltas)),
            Err(e) => {
                unread = Some(e);
                None
            }
        });
        let applied = self.apply_many(changes);
        if let Some(e) = unread {
            return Err(e);
        }
        applied.map_err(|_| Malformed("a change the balance index refuses"))
    }
}

/// Sums consecutive changes at one instant before they reach the current timeline (see
/// [`BitemporalIndex::apply_many`]).
#[derive(Default)]
struct InstantRun(Option<(TimelineKey, Deltas)>);

impl InstantRun {
    fn add(
        &mut self,
        current: &mut Timeline,
        key: TimelineKey,
        d: Deltas,
    ) -> Result<(), TimelineError> {
        let at = instant(key);
        match &mut self.0 {
            Some((k, sum)) if *k == at => {
                *sum = sum.checked_add(&d).ok_or(TimelineError::Overflow)?;
                Ok(())
            }
            _ => {
                self.flush(current)?;
                self.0 = Some((at, d));
                Ok(())
            }
        }
    }

    /// `add` of a change that moves posted money only, by `posted`.
    #[inline]
    fn add_posted(
        &mut self,
        current: &mut Timeline,
        key: TimelineKey,
        posted: i64,
    ) -> Result<(), TimelineError> {
        match &mut self.0 {
            Some((k, sum)) if *k == instant(key) => {
                sum.posted = sum
                    .posted
                    .checked_add(i128::from(posted))
                    .ok_or(TimelineError::Overflow)?;
                Ok(())
            }
            _ => self.add(current, key, Deltas::new(i128::from(posted), 0, 0)),
        }
    }

    fn flush(&mut self, current: &mut Timeline) -> Result<(), TimelineError> {
        match self.0.take() {
            Some((k, d)) => current.add(k, d),
            None => Ok(()),
        }
    }
}

impl BitemporalIndex {
    /// Rebuilds an index from what [`PrefixEncoder`] wrote: the log and the summaries as
    /// written, the current timeline by adding up the log. The log gets room for `room.0`
    /// more changes per `room.1` it holds (changes still to come, from a snapshot chain or
    /// the journal's tail: reserved once here rather than grown, and copied, link by link).
    pub(crate) fn decode_prefix(
        b: &[u8],
        room: (usize, usize),
    ) -> Result<BitemporalIndex, Malformed> {
        let mut r = Reader::new(b);
        let block_len = usize::try_from(r.var()?).map_err(|_| Malformed("block length"))?;
        let fanout = usize::try_from(r.var()?).map_err(|_| Malformed("fan-out"))?;
        if block_len == 0 || fanout < 2 {
            return Err(Malformed("block sizes"));
        }
        let mut index = BitemporalIndex::with_block_len(block_len, fanout);
        let n = r.len_hint(4)?;
        let more = (n as u128 * room.0 as u128 / room.1.max(1) as u128) as usize;
        index.log.reserve(n.saturating_add(more));
        let mut prev = (0, 0);
        // Changes at one instant in a row reach the timeline as their sum (see `InstantRun`).
        let mut run = InstantRun::default();
        for _ in 0..n {
            let c = read_change(&mut r, &mut prev)?;
            if index.log.last_position().is_some_and(|p| c.position < p) {
                return Err(Malformed("change positions out of order"));
            }
            run.add(&mut index.current, c.key, c.deltas)
                .map_err(|_| Malformed("balance out of range"))?;
            index
                .log
                .push(c)
                .map_err(|_| Malformed("too many changes"))?;
        }
        run.flush(&mut index.current)
            .map_err(|_| Malformed("balance out of range"))?;
        let levels = r.len_hint(1)?;
        let mut bl = block_len;
        for _ in 0..levels {
            let blocks = r.len_hint(1)?;
            if blocks == 0 || blocks != n / bl {
                return Err(Malformed("summary block count"));
            }
            let mut level = Level {
                block_len: bl,
                blocks: Vec::with_capacity(blocks),
            };
            for _ in 0..blocks {
                let k = r.len_hint(2)?;
                let mut keys = Vec::with_capacity(k);
                let mut cums = Vec::with_capacity(k);
                let mut prev = (0i64, 0u64);
                for _ in 0..k {
                    let key = (
                        prev.0.wrapping_add(r.zig()?),
                        prev.1.wrapping_add(r.zig()? as u64),
                    );
                    prev = key;
                    keys.push(key);
                    cums.push(read_deltas(&mut r)?);
                }
                level.blocks.push(Summary {
                    keys,
                    cums: Sums::new(cums),
                });
            }
            index.levels.push(level);
            bl = bl.checked_mul(fanout).ok_or(Malformed("block length"))?;
        }
        // Every level with a complete block is there.
        if n >= bl {
            return Err(Malformed("summary levels missing"));
        }
        if !r.is_done() {
            return Err(Malformed("trailing bytes"));
        }
        Ok(index)
    }
}

/// The change log's serialised form: one byte string of varints, each change as its position's
/// delta from the previous one, its key (valid time as a delta from the previous change's, the
/// sequence as a delta from its position), a byte saying which amounts are non-zero, and those.
/// About 10 bytes per change instead of 40 in generic serde form, and decoded without a serde
/// call per field (snapshots are restored at start-up, where every microsecond counts).
mod change_log {
    use super::ChangeLog;
    use crate::varint::{Reader, Writer};

    pub(super) fn serialize<S: serde::Serializer>(
        log: &ChangeLog,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut w = Writer(Vec::with_capacity(8 + log.len() * 10));
        w.var(log.len() as u64);
        let mut prev = (0u64, 0i64);
        for c in log.iter() {
            super::write_change(&mut w, &c, &mut prev);
        }
        s.serialize_bytes(&w.0)
    }

    fn decode(b: &[u8]) -> Result<ChangeLog, crate::varint::Malformed> {
        let mut r = Reader::new(b);
        let n = r.len_hint(4)?;
        let mut log = ChangeLog::default();
        log.reserve(n);
        let mut prev = (0u64, 0i64);
        for _ in 0..n {
            log.push(super::read_change(&mut r, &mut prev)?)
                .map_err(|_| crate::varint::Malformed("too many changes"))?;
        }
        if !r.is_done() {
            return Err(crate::varint::Malformed("trailing bytes"));
        }
        Ok(log)
    }

    struct Bytes;

    impl<'de> serde::de::Visitor<'de> for Bytes {
        type Value = ChangeLog;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an encoded change log")
        }
        fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<ChangeLog, E> {
            decode(b).map_err(E::custom)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<ChangeLog, A::Error> {
            // Self-describing formats (JSON) write bytes as a sequence of numbers.
            let mut b = Vec::new();
            while let Some(x) = a.next_element::<u8>()? {
                b.push(x);
            }
            decode(&b).map_err(serde::de::Error::custom)
        }
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<ChangeLog, D::Error> {
        d.deserialize_bytes(Bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn d(posted: i128) -> Deltas {
        Deltas::new(posted, 0, 0)
    }

    /// Room reserved after a clone (whose vectors have none) takes that many appends without
    /// growing anything, and the result is the index the appends give without it.
    #[test]
    fn reserved_room_takes_appends_without_growing() {
        let mut plain = BitemporalIndex::new();
        for p in 1..=10u64 {
            plain.apply(p, (p as i64 * 10, p), d(5)).unwrap();
        }
        let mut roomy = plain.clone();
        roomy.reserve(3);
        let reserved = roomy.memory_bytes();
        for p in 11..=13u64 {
            plain.apply(p, (p as i64 * 10, p), d(-2)).unwrap();
            roomy.apply(p, (p as i64 * 10, p), d(-2)).unwrap();
        }
        assert_eq!(roomy.memory_bytes(), reserved, "the appends used the room");
        assert_eq!(roomy.changes(), plain.changes());
        let points =
            |i: &BitemporalIndex| i.current().range(i64::MIN, i64::MAX).collect::<Vec<_>>();
        assert_eq!(points(&roomy), points(&plain));
        // Without the room the clone's first append grows it.
        let mut tight = roomy.clone();
        let before = tight.memory_bytes();
        tight.apply(14, (140, 14), d(1)).unwrap();
        assert!(tight.memory_bytes() > before);
    }

    /// The oracle: fold every change known at `known_at` into a map, from scratch.
    fn naive_state(log: &[Change], known_at: Option<u64>) -> BTreeMap<TimelineKey, Deltas> {
        let mut map = BTreeMap::new();
        for c in log
            .iter()
            .filter(|c| known_at.is_none_or(|t| c.position <= t))
        {
            let v: &mut Deltas = map.entry(c.key).or_default();
            *v = v.checked_add(&c.deltas).unwrap();
        }
        map.retain(|_, v| !v.is_zero());
        map
    }

    fn naive_balance(log: &[Change], valid_at: i64, known_at: Option<u64>) -> Deltas {
        log.iter()
            .filter(|c| known_at.is_none_or(|t| c.position <= t) && c.key.0 <= valid_at)
            .fold(Deltas::ZERO, |a, c| a.checked_add(&c.deltas).unwrap())
    }

    #[test]
    fn empty_index_answers_zero() {
        let index = BitemporalIndex::new();
        assert_eq!(index.balance(0, None), Deltas::ZERO);
        assert_eq!(index.balance(0, Some(0)), Deltas::ZERO);
        assert!(index.entries(i64::MIN, i64::MAX, Some(3)).is_empty());
        assert!(index.changes().is_empty());
        assert!(index.current().is_empty());
    }

    #[test]
    fn back_dated_correction_is_visible_only_from_its_position() {
        let mut index = BitemporalIndex::with_block_len(2, 2);
        index.apply(1, (100, 0), d(50)).unwrap();
        index.apply(2, (200, 0), d(-20)).unwrap();
        // At position 3 the posting at 100 is superseded by one of 40 at 50.
        index.apply(3, (100, 0), d(-50)).unwrap();
        index.apply(3, (50, 0), d(40)).unwrap();
        index.apply(4, (300, 0), d(1)).unwrap();
        assert_eq!(index.balance(150, Some(2)), d(50));
        assert_eq!(index.balance(150, Some(3)), d(40));
        assert_eq!(index.balance(60, Some(2)), Deltas::ZERO);
        assert_eq!(index.balance(60, None), d(40));
        assert_eq!(
            index.entries(0, 250, Some(2)),
            vec![((100, 0), d(50)), ((200, 0), d(-20))]
        );
        assert_eq!(
            index.entries(0, 250, Some(3)),
            vec![((50, 0), d(40)), ((200, 0), d(-20))]
        );
        assert_eq!(index.balance(i64::MAX, Some(0)), Deltas::ZERO);
        assert_eq!(index.changes().len(), 5);
    }

    #[test]
    fn positions_must_not_go_backwards() {
        let mut index = BitemporalIndex::new();
        index.apply(5, (0, 0), d(1)).unwrap();
        assert_eq!(
            index.apply(4, (1, 0), d(1)),
            Err(TimelineError::PositionOutOfOrder { last: 5, given: 4 })
        );
        assert_eq!(
            index.apply(5, (1, 0), d(i128::MAX)),
            Err(TimelineError::Overflow)
        );
        assert_eq!(index.changes().len(), 1);
        assert_eq!(index.current().total(), d(1));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Apply {
            position_step: u64,
            key: TimelineKey,
            deltas: Deltas,
        },
        /// Supersede the `i`-th current entry (modulo the count).
        Cancel { position_step: u64, i: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        op_over(40, 3, 3)
    }

    /// Changes at `instants` instants, positions `0..steps` apart, `applies` of them to each
    /// cancellation.
    fn op_over(instants: i64, steps: u64, applies: u32) -> impl Strategy<Value = Op> {
        let deltas =
            (-20i128..20, -5i128..10, -5i128..10).prop_map(|(p, a, b)| Deltas::new(p, a, b));
        prop_oneof![
            applies => (0u64..steps, (0i64..instants, 0u64..3), deltas)
                .prop_map(|(position_step, key, deltas)| Op::Apply { position_step, key, deltas }),
            1 => (0u64..steps, any::<usize>()).prop_map(|(position_step, i)| Op::Cancel { position_step, i }),
        ]
    }

    /// The index after `ops`, and the last position.
    fn build(
        ops: &[Op],
        (block_len, fanout, chunk_len_max): (usize, usize, usize),
    ) -> (BitemporalIndex, u64) {
        let mut index = BitemporalIndex::with_sizes(block_len, fanout, chunk_len_max);
        let mut position = 0;
        for op in ops {
            let (step, key, deltas) = match *op {
                Op::Apply {
                    position_step,
                    key,
                    deltas,
                } => (position_step, key, deltas),
                Op::Cancel { position_step, i } => {
                    let state = naive_state(&index.changes().to_vec(), None);
                    match state.iter().nth(i % state.len().max(1)) {
                        Some((k, v)) => (position_step, *k, Deltas::ZERO.minus(*v)),
                        None => (position_step, (0, 0), d(1)),
                    }
                }
            };
            position += step;
            index.apply(position, key, deltas).unwrap();
        }
        (index, position)
    }

    fn run(ops: &[Op], sizes: (usize, usize, usize), queries: &[(i64, i64, u64)]) {
        let (index, position) = build(ops, sizes);
        let log = index.changes().to_vec();
        assert_eq!(log.len(), ops.len());
        for t in (0..=position + 1).map(Some).chain([None]) {
            for v in -1..=41 {
                assert_eq!(
                    index.balance(v, t),
                    naive_balance(&log, v, t),
                    "balance({v}, {t:?})"
                );
            }
            for &(from, to, _) in queries {
                let want: Vec<_> = naive_state(&log, t)
                    .into_iter()
                    .filter(|(k, _)| from <= k.0 && k.0 <= to)
                    .collect();
                assert_eq!(
                    index.entries(from, to, t),
                    want,
                    "entries({from}, {to}, {t:?})"
                );
            }
        }
        assert_eq!(index.current().total(), naive_balance(&log, i64::MAX, None));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn index_matches_naive_fold(
            ops in prop::collection::vec(op(), 0..150),
            sizes in (1usize..6, 2usize..4, 4usize..9),
            queries in prop::collection::vec((-2i64..42, -2i64..42, 0u64..1), 1..4),
        ) {
            run(&ops, sizes, &queries);
        }

        #[test]
        fn index_matches_naive_fold_default_sizes(
            ops in prop::collection::vec(op(), 0..60),
            queries in prop::collection::vec((-2i64..42, -2i64..42, 0u64..1), 1..3),
        ) {
            run(&ops, (SUMMARY_BLOCK_LEN_DEFAULT, SUMMARY_FANOUT_DEFAULT, 256), &queries);
        }
    }

    /// Changes that pile up at a few instants (runs of them in a row, some cancelling out).
    fn clustered_op() -> impl Strategy<Value = Op> {
        op_over(4, 2, 4)
    }

    /// Everything the index answers from: every balance and the current timeline.
    fn answers(index: &BitemporalIndex, last: u64) -> Vec<Deltas> {
        let mut out: Vec<Deltas> = index
            .current()
            .range(i64::MIN, i64::MAX)
            .map(|e| e.1)
            .collect();
        out.push(Deltas::new(index.current().len() as i128, 0, 0));
        for t in (0..=last + 1).map(Some).chain([None]) {
            out.extend((-1..=5).map(|v| index.balance(v, t)));
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Decoding (a snapshot's prefix, then a delta's changes) and `apply_many` add a run of
        /// changes at one instant to the timeline as one sum; the index answers exactly as the
        /// one it was encoded from, which added them one by one.
        #[test]
        fn decoded_indexes_answer_like_the_encoded_one(
            ops in prop::collection::vec(clustered_op(), 0..120),
            split in 0usize..120,
            sizes in (1usize..6, 2usize..4, 4usize..9),
        ) {
            let (index, last) = build(&ops, sizes);
            let n = index.changes().len();
            let split = split.min(n);
            let mut prefix = PrefixEncoder::new(split);
            assert!(prefix.step(&index, usize::MAX).1);
            let prefix = prefix.finish();
            let mut delta = Writer(Vec::new());
            index.encode_changes(&mut delta, split, n);
            let mut decoded = BitemporalIndex::decode_prefix(&prefix, (1, 1)).unwrap();
            decoded.apply_encoded_changes(&mut Reader::new(&delta.0)).unwrap();
            prop_assert_eq!(answers(&decoded, last), answers(&index, last));
            let mut whole = PrefixEncoder::new(n);
            assert!(whole.step(&index, usize::MAX).1);
            let whole = BitemporalIndex::decode_prefix(&whole.finish(), (0, 1)).unwrap();
            prop_assert_eq!(answers(&whole, last), answers(&index, last));
            // Replay's path: the same changes through `apply_many`, in two calls.
            let mut many = BitemporalIndex::with_sizes(sizes.0, sizes.1, sizes.2);
            let log = index.changes().to_vec();
            let (a, b) = log.split_at(split);
            for part in [a, b] {
                many.apply_many(part.iter().map(|c| (c.position, c.key, c.deltas))).unwrap();
            }
            prop_assert_eq!(answers(&many, last), answers(&index, last));
            prop_assert_eq!(many.levels.len(), index.levels.len());
        }

        /// A bulk replay's path: the changes in parts, each either applied one by one or taken
        /// as a run of a shared block (`apply_run`), whose summaries are built for every block
        /// boundary a run crosses. The index answers as the one built change by change.
        #[test]
        fn runs_of_shared_blocks_answer_like_changes_applied_one_by_one(
            ops in prop::collection::vec(clustered_op(), 0..120),
            cuts in prop::collection::vec((0usize..120, any::<bool>()), 0..8),
            sizes in (1usize..6, 2usize..4, 4usize..9),
        ) {
            let (index, last) = build(&ops, sizes);
            let log = index.changes().to_vec();
            let mut ends: Vec<usize> = cuts.iter().map(|c| c.0.min(log.len())).collect();
            ends.push(log.len());
            ends.sort_unstable();
            let mut runs = BitemporalIndex::with_sizes(sizes.0, sizes.1, sizes.2);
            let mut start = 0;
            for (i, &end) in ends.iter().enumerate() {
                let part = &log[start..end];
                if cuts.get(i).is_some_and(|c| c.1) {
                    // One padding change before and after the run: the block is shared.
                    let (block, wide) = super::super::log::tests::shared_block(1, part);
                    runs.apply_run(&block, 1..1 + part.len(), &wide).unwrap();
                } else {
                    for c in part {
                        runs.apply(c.position, c.key, c.deltas).unwrap();
                    }
                }
                start = end;
            }
            prop_assert_eq!(runs.changes(), index.changes());
            prop_assert_eq!(answers(&runs, last), answers(&index, last));
            prop_assert_eq!(runs.levels.len(), index.levels.len());
            for t in (0..=last + 1).map(Some).chain([None]) {
                prop_assert_eq!(runs.entries(-1, 5, t), index.entries(-1, 5, t));
            }
        }
    }

    #[test]
    fn many_levels_match_the_oracle() {
        // 3 levels of blocks (4, 8, 16) and a raw remainder, with heavy key collisions.
        let mut index = BitemporalIndex::with_sizes(4, 2, 4);
        for i in 0..101u64 {
            let key = (((i * 7) % 13) as i64, i % 2);
            index
                .apply(i / 3, key, Deltas::new(i as i128 - 50, (i % 5) as i128, 0))
                .unwrap();
        }
        assert_eq!(index.levels.len(), 5);
        let log = index.changes().to_vec();
        for t in 0..40 {
            for v in -1..14 {
                assert_eq!(index.balance(v, Some(t)), naive_balance(&log, v, Some(t)));
            }
        }
    }
}
