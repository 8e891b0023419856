//! The compact storage of a balance index's change log ([`ChangeLog`]) and of its summaries'
//! running sums (`Sums`).
//!
//! Almost every change moves posted money only, by an amount that fits an `i64` of minor
//! units; holds are the exception. So a change is stored in 32 bytes (position, key, posted
//! amount) instead of the 80 of a [`Change`] with its three `i128` amounts, and the few others
//! keep their full amounts in a side table. Likewise a summary's running sums are `i64`s when
//! all of them fit (8 bytes each instead of 48). Both hand out the same values as the plain
//! form would; only memory differs.
//!
//! A log's changes lie in runs of blocks shared with other logs (a bulk replay sorts its
//! buffer of changes by account into one block, and each account's log takes its part), then
//! in the log's own vector: see [`ChangeLog`].

use std::sync::Arc;

use super::index::Change;
use super::timeline::{Deltas, TimelineKey};

/// Marks a stored change whose amounts live in [`ChangeLog::wide`].
const WIDE: i64 = i64::MIN;

/// One change as stored: `posted` is the posted amount, or [`WIDE`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Packed {
    position: u64,
    key: TimelineKey,
    posted: i64,
}

// The layout the module docs count on.
const _: () = assert!(size_of::<Packed>() == 32);

impl Packed {
    /// A change whose amounts are `posted` alone if `posted` is given (see [`narrow`]), and
    /// otherwise kept apart (the log it goes to is told them, see [`ChangeLog::push_run`]).
    pub(crate) fn new(position: u64, key: TimelineKey, posted: Option<i64>) -> Packed {
        Packed {
            position,
            key,
            posted: posted.unwrap_or(WIDE),
        }
    }
}

/// The amounts of `d` as a narrow posted amount, if they have one.
pub(crate) fn narrow(d: &Deltas) -> Option<i64> {
    if d.pending_debit != 0 || d.pending_credit != 0 {
        return None;
    }
    i64::try_from(d.posted).ok().filter(|&p| p != WIDE)
}

/// A run of consecutive changes of one log that lies in a block shared with other logs: a
/// bulk replay sorts each buffer of changes by account into one block, and every account's
/// log takes its part of that block as a run instead of copying it (see
/// [`ChangeLog::push_run`]).
#[derive(Clone)]
struct Run {
    block: Arc<[Packed]>,
    /// `block[start..end]` are the run's changes.
    start: u32,
    end: u32,
    /// Index in the log of the run's first change.
    first: u32,
}

impl Run {
    fn changes(&self) -> &[Packed] {
        &self.block[self.start as usize..self.end as usize]
    }
}

/// Every change of one balance index, in log order, 32 bytes each (plus 64 for a change with
/// hold amounts or a posted amount beyond `i64`).
///
/// The changes are `runs` (parts of blocks shared with other accounts' logs, from bulk
/// replays), then `tail` (the log's own vector, which live appends grow). A replay thus
/// stores each change once, in the block its buffer was sorted into, instead of copying it
/// into each account's vector and growing that vector (a `realloc`, a copy and a `free` of
/// memory out of cache, per account per buffer).
///
/// `repr(C)`, with what an append of a narrow change touches (`tail`, `in_runs`) first, so
/// that a struct embedding it can put them on a cache line with its own hot fields.
#[derive(Clone, Default)]
#[repr(C)]
pub struct ChangeLog {
    tail: Vec<Packed>,
    /// Number of changes in `runs`.
    in_runs: usize,
    runs: Vec<Run>,
    /// (index in the log, amounts) of each wide change, in index order.
    wide: Vec<(u32, Deltas)>,
}

impl PartialEq for ChangeLog {
    /// Equal changes in equal order, however they are stored.
    fn eq(&self, other: &ChangeLog) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for ChangeLog {}

impl std::fmt::Debug for ChangeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl ChangeLog {
    /// End of the fields a narrow append touches (`tail`, `in_runs`).
    pub(crate) const HOT_END: usize = std::mem::offset_of!(ChangeLog, in_runs) + size_of::<usize>();

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.in_runs + self.tail.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored form of the `i`th change. Panics if `i >= len()`.
    fn packed(&self, i: usize) -> Packed {
        if i >= self.in_runs {
            return self.tail[i - self.in_runs];
        }
        let r = &self.runs[self.runs.partition_point(|r| r.first as usize <= i) - 1];
        r.changes()[i - r.first as usize]
    }

    /// The `i`th change. Panics if `i >= len()`, like indexing a slice.
    pub fn get(&self, i: usize) -> Change {
        let p = self.packed(i);
        Change {
            position: p.position,
            key: p.key,
            deltas: if p.posted == WIDE {
                self.wide_at(i)
            } else {
                Deltas::new(i128::from(p.posted), 0, 0)
            },
        }
    }

    /// The last change, if any.
    pub fn last(&self) -> Option<Change> {
        self.len().checked_sub(1).map(|i| self.get(i))
    }

    /// Position of the last change, if any (no amounts looked up).
    pub fn last_position(&self) -> Option<u64> {
        match self.tail.last() {
            Some(p) => Some(p.position),
            None => self
                .runs
                .last()
                .and_then(|r| r.changes().last())
                .map(|p| p.position),
        }
    }

    /// Number of changes with `position <= t` (positions are non-decreasing).
    pub fn known_len(&self, t: u64) -> usize {
        // The runs whose every change is known at `t`, then the first one that is not.
        let k = self
            .runs
            .partition_point(|r| r.changes().last().is_some_and(|p| p.position <= t));
        match self.runs.get(k) {
            Some(r) => r.first as usize + r.changes().partition_point(|p| p.position <= t),
            None => self.in_runs + self.tail.partition_point(|p| p.position <= t),
        }
    }

    /// Appends a change. Fails (changing nothing) only if the log already holds `u32::MAX`
    /// changes with wide amounts before it, which no account reaches.
    pub(crate) fn push(&mut self, c: Change) -> Result<(), TooLong> {
        let posted = narrow(&c.deltas);
        if posted.is_none() {
            let i = u32::try_from(self.len()).map_err(|_| TooLong)?;
            self.wide.push((i, c.deltas));
        }
        self.tail.push(Packed::new(c.position, c.key, posted));
        Ok(())
    }

    /// Appends `block[range]` without copying it, `wide` giving the amounts of its wide
    /// changes (offset in `block`, amounts; in offset order, within `range`). The caller
    /// checks the positions' order. Fails (changing nothing) if the log would hold more than
    /// `u32::MAX` changes.
    pub(crate) fn push_run(
        &mut self,
        block: &Arc<[Packed]>,
        range: std::ops::Range<usize>,
        wide: &[(u32, Deltas)],
    ) -> Result<(), TooLong> {
        let n = self.len();
        let first = u32::try_from(n).map_err(|_| TooLong)?;
        let fits = |x: usize| u32::try_from(x).map_err(|_| TooLong);
        let (start, end) = (fits(range.start)?, fits(range.end)?);
        fits(n + (end - start) as usize)?;
        debug_assert!(start <= end && range.end <= block.len());
        if start == end {
            return Ok(());
        }
        if !self.tail.is_empty() {
            // The runs come before the tail: the tail (changes appended live since the last
            // bulk replay, rare) becomes a run of its own block first.
            let own: Arc<[Packed]> = Arc::from(std::mem::take(&mut self.tail));
            self.runs.push(Run {
                start: 0,
                end: own.len() as u32,
                first: self.in_runs as u32,
                block: own,
            });
            self.in_runs = n;
        }
        self.wide
            .extend(wide.iter().map(|&(at, d)| (first + (at - start), d)));
        self.runs.push(Run {
            block: Arc::clone(block),
            start,
            end,
            first,
        });
        self.in_runs = n + (end - start) as usize;
        Ok(())
    }

    /// The changes in `range` (indexes), in order.
    pub fn range(&self, range: std::ops::Range<usize>) -> Changes<'_> {
        let start = range.start.min(range.end);
        let end = range.end.min(self.len());
        let (cur, piece): (&[Packed], usize) = if start >= self.in_runs {
            (
                self.tail.get(start - self.in_runs..).unwrap_or(&[]),
                self.runs.len() + 1,
            )
        } else {
            let k = self.runs.partition_point(|r| r.first as usize <= start) - 1;
            let r = &self.runs[k];
            (&r.changes()[start - r.first as usize..], k + 1)
        };
        Changes {
            log: self,
            next: start,
            end,
            cur,
            piece,
            wide: self.wide.partition_point(|(i, _)| (*i as usize) < start),
        }
    }

    /// Every change, in order.
    pub fn iter(&self) -> Changes<'_> {
        self.range(0..self.len())
    }

    /// The changes as plain [`Change`]s (tests, debugging).
    pub fn to_vec(&self) -> Vec<Change> {
        self.iter().collect()
    }

    /// Reserves room for `additional` more changes appended one by one.
    pub fn reserve(&mut self, additional: usize) {
        self.tail.reserve(additional);
    }

    /// Approximate heap bytes held: a run counts the part of its block that it holds.
    pub fn memory_bytes(&self) -> usize {
        self.in_runs * size_of::<Packed>()
            + self.runs.capacity() * size_of::<Run>()
            + self.tail.capacity() * size_of::<Packed>()
            + self.wide.capacity() * size_of::<(u32, Deltas)>()
    }

    /// The changes of piece `k`: run `k`, or the tail for `k == runs.len()`.
    fn piece(&self, k: usize) -> &[Packed] {
        match self.runs.get(k) {
            Some(r) => r.changes(),
            None => {
                assert_eq!(
                    k,
                    self.runs.len(),
                    "a change log's pieces end with its tail"
                );
                &self.tail
            }
        }
    }

    fn wide_at(&self, i: usize) -> Deltas {
        let w = self.wide.partition_point(|(j, _)| (*j as usize) < i);
        // Every packed change marked wide has its entry.
        self.wide[w].1
    }
}

impl FromIterator<Change> for ChangeLog {
    /// Collects changes; panics past `u32::MAX` wide changes (see `ChangeLog::push`).
    fn from_iter<I: IntoIterator<Item = Change>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut log = ChangeLog::default();
        log.reserve(iter.size_hint().0);
        for c in iter {
            log.push(c).expect("fewer than u32::MAX wide changes");
        }
        log
    }
}

/// A change log is longer than [`ChangeLog`] can index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong;

/// Iterator over a range of a [`ChangeLog`].
#[derive(Clone, Debug)]
pub struct Changes<'a> {
    log: &'a ChangeLog,
    next: usize,
    end: usize,
    /// The rest of the piece (run or tail) that holds change `next`.
    cur: &'a [Packed],
    /// The piece after the one `cur` is in.
    piece: usize,
    /// Index in `log.wide` of the first wide change at or after `next`.
    wide: usize,
}

/// A change's amounts as stored: a posted amount alone (nearly always), or all of them.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stored {
    Narrow(i64),
    Wide(Deltas),
}

impl Changes<'_> {
    /// The next change as stored: its position, its key and its amounts, without building
    /// the [`Change`] (and its three `i128` amounts) that `next` hands out.
    #[inline(always)]
    pub(crate) fn next_stored(&mut self) -> Option<(u64, TimelineKey, Stored)> {
        if self.next >= self.end {
            return None;
        }
        while self.cur.is_empty() {
            self.cur = self.log.piece(self.piece);
            self.piece += 1;
        }
        let p = self.cur[0];
        self.cur = &self.cur[1..];
        let amounts = if p.posted == WIDE {
            let d = self.log.wide[self.wide].1;
            self.wide += 1;
            Stored::Wide(d)
        } else {
            Stored::Narrow(p.posted)
        };
        self.next += 1;
        Some((p.position, p.key, amounts))
    }
}

impl Iterator for Changes<'_> {
    type Item = Change;

    fn next(&mut self) -> Option<Change> {
        let (position, key, amounts) = self.next_stored()?;
        Some(Change {
            position,
            key,
            deltas: match amounts {
                Stored::Narrow(p) => Deltas::new(i128::from(p), 0, 0),
                Stored::Wide(d) => d,
            },
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end.saturating_sub(self.next);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Changes<'_> {}

/// A summary's running sums: `i64` posted amounts while every sum is posted money within
/// `i64` (nearly always), 8 bytes each instead of 48; otherwise full [`Deltas`]. Either way
/// `get(i)` is the same value. (A timeline chunk keeps its sums beside its keys, in
/// `points::Points`, which follows the same rule.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Sums {
    Narrow(Vec<i64>),
    Wide(Vec<Deltas>),
}

impl Sums {
    /// Stores `sums` narrowly when every one fits.
    pub(crate) fn new(sums: Vec<Deltas>) -> Sums {
        let narrowed: Option<Vec<i64>> = sums.iter().map(narrow).collect();
        match narrowed {
            Some(n) => Sums::Narrow(n),
            None => Sums::Wide(sums),
        }
    }

    pub(crate) fn get(&self, i: usize) -> Deltas {
        match self {
            Sums::Narrow(v) => Deltas::new(i128::from(v[i]), 0, 0),
            Sums::Wide(v) => v[i],
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Sums::Narrow(v) => v.len(),
            Sums::Wide(v) => v.len(),
        }
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        match self {
            Sums::Narrow(v) => v.capacity() * size_of::<i64>(),
            Sums::Wide(v) => v.capacity() * size_of::<Deltas>(),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Deltas> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

impl Default for Sums {
    fn default() -> Self {
        Sums::Narrow(Vec::new())
    }
}

/// Serialised as the sequence of full [`Deltas`] (the form snapshots have always had), so the
/// storage choice never shows on the wire.
impl serde::Serialize for Sums {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Sums {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Deltas>::deserialize(d).map(Sums::new)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Amounts around the narrow/wide boundary, and a few with hold amounts.
    pub(crate) fn deltas() -> impl Strategy<Value = Deltas> {
        prop_oneof![
            4 => (-1000i128..1000).prop_map(|p| Deltas::new(p, 0, 0)),
            1 => Just(Deltas::new(i128::from(i64::MIN), 0, 0)),
            1 => Just(Deltas::new(i128::from(i64::MAX), 0, 0)),
            1 => Just(Deltas::new(i128::from(i64::MAX) + 1, 0, 0)),
            1 => (-5i128..5, -5i128..5, -5i128..5).prop_map(|(a, b, c)| Deltas::new(a, b, c)),
        ]
    }

    /// `changes` in a block shared with other logs, `pad` unrelated changes before and after
    /// them, and their wide amounts (offset in the block, amounts), as a bulk replay's flush
    /// makes them for [`ChangeLog::push_run`].
    pub(crate) fn shared_block(
        pad: usize,
        changes: &[Change],
    ) -> (Arc<[Packed]>, Vec<(u32, Deltas)>) {
        let mut block = vec![Packed::default(); pad];
        let mut wide = Vec::new();
        for c in changes {
            let n = narrow(&c.deltas);
            if n.is_none() {
                wide.push((block.len() as u32, c.deltas));
            }
            block.push(Packed::new(c.position, c.key, n));
        }
        block.extend(std::iter::repeat_n(Packed::default(), pad));
        (block.into(), wide)
    }

    /// Every accessor of `log` answers as the plain list `plain` would; `range` is asked for
    /// `range`, and `known_len` for every position up to one past the last.
    fn reads_as(
        log: &ChangeLog,
        plain: &[Change],
        range: std::ops::Range<usize>,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(log.len(), plain.len());
        prop_assert_eq!(log.to_vec(), plain.to_vec());
        prop_assert_eq!(log.last(), plain.last().copied());
        prop_assert_eq!(log.last_position(), plain.last().map(|c| c.position));
        for (i, c) in plain.iter().enumerate() {
            prop_assert_eq!(log.get(i), *c);
        }
        let (a, b) = (range.start.min(plain.len()), range.end.min(plain.len()));
        let want: Vec<Change> = if a <= b {
            plain[a..b].to_vec()
        } else {
            Vec::new()
        };
        prop_assert_eq!(log.range(range).collect::<Vec<_>>(), want);
        let last = plain.last().map_or(0, |c| c.position);
        for t in 0..=last + 1 {
            prop_assert_eq!(log.known_len(t), plain.partition_point(|c| c.position <= t));
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn hands_back_exactly_what_was_pushed(
            ds in prop::collection::vec((0u64..3, -50i64..50, 0u64..4, deltas()), 0..60),
            from in 0usize..70,
            to in 0usize..70,
        ) {
            let mut position = 0;
            let plain: Vec<Change> = ds
                .iter()
                .map(|&(step, valid, seq, deltas)| {
                    position += step;
                    Change { position, key: (valid, position + seq), deltas }
                })
                .collect();
            let log: ChangeLog = plain.iter().copied().collect();
            reads_as(&log, &plain, from..to)?;
            let sums = Sums::new(plain.iter().map(|c| c.deltas).collect());
            for (i, c) in plain.iter().enumerate() {
                prop_assert_eq!(sums.get(i), c.deltas);
            }
        }
    }

    proptest! {
        /// Changes appended one by one and as runs of shared blocks, in any mix, read back
        /// as the plain list of them would.
        #[test]
        fn runs_and_the_tail_read_as_one_log(
            parts in prop::collection::vec(
                (any::<bool>(), prop::collection::vec((0u64..3, -50i64..50, deltas()), 0..12), 0usize..4),
                0..12,
            ),
            from in 0usize..150,
            to in 0usize..150,
        ) {
            let mut position = 0;
            let mut plain: Vec<Change> = Vec::new();
            let mut log = ChangeLog::default();
            for (as_run, ds, pad) in parts {
                let changes: Vec<Change> = ds
                    .iter()
                    .map(|&(step, valid, deltas)| {
                        position += step;
                        Change { position, key: (valid, position), deltas }
                    })
                    .collect();
                if as_run {
                    // The run sits in the middle of a block that other logs share.
                    let (block, wide) = shared_block(pad, &changes);
                    log.push_run(&block, pad..pad + changes.len(), &wide).unwrap();
                } else {
                    for c in &changes {
                        log.push(*c).unwrap();
                    }
                }
                plain.extend(changes);
            }
            reads_as(&log, &plain, from..to)?;
            let copy: ChangeLog = plain.iter().copied().collect();
            prop_assert_eq!(&log, &copy);
        }
    }

    #[test]
    fn plain_transfers_take_32_bytes_and_holds_keep_their_amounts() {
        let mut log = ChangeLog::default();
        for i in 0..1000u64 {
            let c = Change {
                position: i,
                key: (i as i64, i),
                deltas: Deltas::new(i128::from(i) - 500, 0, 0),
            };
            log.push(c).unwrap();
        }
        assert!(log.wide.is_empty());
        let hold = Change {
            position: 1000,
            key: (1000, 1000),
            deltas: Deltas::new(0, 7, 0),
        };
        log.push(hold).unwrap();
        assert_eq!(log.wide.len(), 1);
        assert_eq!(log.last(), Some(hold));
        assert!(matches!(Sums::new(vec![hold.deltas]), Sums::Wide(_)));
        assert!(matches!(
            Sums::new(vec![Deltas::new(-3, 0, 0)]),
            Sums::Narrow(_)
        ));
    }
}
