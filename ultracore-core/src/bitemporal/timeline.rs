//! The current valid-time index of one account: [`Timeline`], an ordered map from
//! [`TimelineKey`] to [`Deltas`] with O(log n) prefix sums and bound checks over every later point.
//!
//! # Structure
//!
//! Entries live in sorted *chunks* of at most `chunk_len_max` entries (default
//! [`CHUNK_LEN_MAX_DEFAULT`]). A chunk stores each key side by side with, instead of its value,
//! the running sum of the chunk's values from its start through that key (one vector of pairs,
//! `points::Points`, so an append writes and grows one heap block, not two), plus the minimum of `lower_series` and the maximum
//! of `upper_series` over those running sums. A segment tree over the aggregates of every chunk
//! *except the last* (the "tail") combines them with the monoid
//!
//! ```text
//! combine(l, r) = { sum:       l.sum + r.sum,
//!                   min_lower: min(l.min_lower, l.sum.lower_series() + r.min_lower),
//!                   max_upper: max(l.max_upper, l.sum.upper_series() + r.max_upper) }
//! ```
//!
//! Keeping the tail out of the tree is what makes appending cheap: an append touches only the
//! tail's vector of points and three numbers; the tree changes once every `chunk_len_max`
//! appends. The tail is also kept inline in the [`Timeline`], apart from the vector of the other
//! chunks, so an append reaches its points without first reading that vector's buffer: with many
//! accounts, each one a heap block (and a page) fewer per posting to wait on.
//!
//! # Complexity (n entries, C ≈ n / chunk_len chunks, B = chunk_len_max)
//!
//! | operation | cost |
//! | --- | --- |
//! | `add`, key after every key (append) | O(1) amortised (O(log C) once per B appends) |
//! | `add`, key inside | O(log C + B); O(C - i) when chunk i splits or merges (once per ≥ B/4 adds) |
//! | `prefix(v)` | O(1) if v ≥ last key, else O(log C + log B) |
//! | `total`, `len`, `is_empty` | O(1) |
//! | `get` | O(log C + log B) |
//! | `range(from, to)` | O(log C + log B) to start, O(1) per entry |
//! | `check` (k changes) | O(1) for one append; otherwise O(k (log k + log C + B)) |
//!
//! Memory: 24 bytes per entry (16 key + an 8-byte running sum) in full chunks whose running sums
//! are posted money within `i64`, as nearly all are (`Points`); 64 (16 + 48) in a chunk
//! where one is not (holds, sums beyond `i64`). Plus slack in chunks that were split (≥ half
//! full) and ~1 byte per entry for the chunk index and tree.
//!
//! # Arithmetic range
//!
//! Every component of every stored value is kept within ±[`VALUE_COMPONENT_MAX`] (2^90) and the
//! entry count within [`TIMELINE_LEN_MAX`] (2^32); `add` refuses anything else with
//! [`TimelineError::Overflow`]. Then every sum over any range of entries is below 2^122 in
//! magnitude, its `lower_series`/`upper_series` below 2^123, and every internal expression adds at
//! most four such terms, so the internal arithmetic cannot overflow `i128` and is written with
//! plain operators (which still panic in debug builds, should this reasoning ever be wrong).

use std::cmp::Ordering;

use super::log::narrow;
use super::points::Points;

/// A point on the valid-time axis: (effective_at in microseconds since the Unix epoch,
/// tie-breaking sequence). Entries are ordered by this key.
pub type TimelineKey = (i64, u64);

/// Largest magnitude of any component of a value stored in a [`Timeline`] (2^90 minor units,
/// ~1.2e27: far above any real balance, far enough below `i128::MAX` that sums cannot overflow).
pub const VALUE_COMPONENT_MAX: i128 = 1 << 90;

/// Largest number of entries in one [`Timeline`].
pub const TIMELINE_LEN_MAX: u64 = 1 << 32;

/// Default largest number of entries in one chunk of a [`Timeline`].
pub const CHUNK_LEN_MAX_DEFAULT: usize = 256;

/// Smallest accepted `chunk_len_max` (splitting needs room for two non-empty halves).
const CHUNK_LEN_MAX_MIN: usize = 4;

// The bound argument in the module docs: 2^32 entries of 2^90 each stay below 2^122.
const _: () = assert!(VALUE_COMPONENT_MAX <= 1 << 90 && TIMELINE_LEN_MAX <= 1 << 32);
const _: () = assert!(CHUNK_LEN_MAX_DEFAULT >= CHUNK_LEN_MAX_MIN);

/// Signed amounts (minor currency units) carried by one timeline entry, or a sum of entries.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Deltas {
    /// Net credits minus debits of posted money.
    pub posted: i128,
    /// Amount reserved by holds against debits.
    pub pending_debit: i128,
    /// Amount reserved by holds for incoming credits.
    pub pending_credit: i128,
}

impl Deltas {
    /// All components zero.
    pub const ZERO: Deltas = Deltas {
        posted: 0,
        pending_debit: 0,
        pending_credit: 0,
    };

    /// Builds a value from its three components.
    pub const fn new(posted: i128, pending_debit: i128, pending_credit: i128) -> Self {
        Deltas {
            posted,
            pending_debit,
            pending_credit,
        }
    }

    /// Whether every component is zero.
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// Component-wise sum, `None` on `i128` overflow.
    pub fn checked_add(&self, rhs: &Deltas) -> Option<Deltas> {
        Some(Deltas {
            posted: self.posted.checked_add(rhs.posted)?,
            pending_debit: self.pending_debit.checked_add(rhs.pending_debit)?,
            pending_credit: self.pending_credit.checked_add(rhs.pending_credit)?,
        })
    }

    /// Component-wise difference, `None` on `i128` overflow.
    pub fn checked_sub(&self, rhs: &Deltas) -> Option<Deltas> {
        Some(Deltas {
            posted: self.posted.checked_sub(rhs.posted)?,
            pending_debit: self.pending_debit.checked_sub(rhs.pending_debit)?,
            pending_credit: self.pending_credit.checked_sub(rhs.pending_credit)?,
        })
    }

    /// Component-wise negation, `None` if a component is `i128::MIN`.
    pub fn checked_neg(&self) -> Option<Deltas> {
        Some(Deltas {
            posted: self.posted.checked_neg()?,
            pending_debit: self.pending_debit.checked_neg()?,
            pending_credit: self.pending_credit.checked_neg()?,
        })
    }

    /// `posted - pending_debit`: the series lower bounds are checked against, since holds
    /// reserve funds. Saturates at the `i128` range, which no value held by a [`Timeline`] reaches.
    pub fn lower_series(&self) -> i128 {
        self.posted.saturating_sub(self.pending_debit)
    }

    /// `posted + pending_credit`: the series upper bounds are checked against. Saturates at the
    /// `i128` range, which no value held by a [`Timeline`] reaches.
    pub fn upper_series(&self) -> i128 {
        self.posted.saturating_add(self.pending_credit)
    }

    /// Whether every component is within ±[`VALUE_COMPONENT_MAX`].
    pub fn is_within_value_max(&self) -> bool {
        let ok = |x: i128| (-VALUE_COMPONENT_MAX..=VALUE_COMPONENT_MAX).contains(&x);
        ok(self.posted) && ok(self.pending_debit) && ok(self.pending_credit)
    }

    /// Sum of two values known to be in range (see "Arithmetic range" in the module docs).
    pub(crate) fn plus(self, rhs: Deltas) -> Deltas {
        Deltas {
            posted: self.posted + rhs.posted,
            pending_debit: self.pending_debit + rhs.pending_debit,
            pending_credit: self.pending_credit + rhs.pending_credit,
        }
    }

    /// Difference of two values known to be in range (see "Arithmetic range" in the module docs).
    pub(crate) fn minus(self, rhs: Deltas) -> Deltas {
        Deltas {
            posted: self.posted - rhs.posted,
            pending_debit: self.pending_debit - rhs.pending_debit,
            pending_credit: self.pending_credit - rhs.pending_credit,
        }
    }
}

/// Why a timeline (or bitemporal index) refused a change. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimelineError {
    /// A value would overflow `i128`, leave ±[`VALUE_COMPONENT_MAX`], or the timeline would hold
    /// more than [`TIMELINE_LEN_MAX`] entries.
    #[error("timeline arithmetic overflow: a value or the entry count would leave its range")]
    Overflow,
    /// A change was recorded at a log position before the last recorded one (a caller bug:
    /// transaction time never goes backwards).
    #[error("log position {given} is before the last recorded position {last}")]
    PositionOutOfOrder {
        /// The last position already recorded.
        last: u64,
        /// The position given.
        given: u64,
    },
}

/// Which bound a [`Violation`] broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BoundKind {
    /// `lower_series` fell below the lower bound.
    Lower,
    /// `upper_series` rose above the upper bound.
    Upper,
}

/// The first point of the timeline at which a checked set of changes would break a bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Violation {
    /// Key of the first violating entry.
    pub at: TimelineKey,
    /// The running balance series there (`lower_series` or `upper_series`, per `kind`); saturated
    /// to `i128::MIN`/`i128::MAX` when the changes themselves are out of range.
    pub value: i128,
    /// The bound it broke.
    pub bound: i128,
    /// Which bound.
    pub kind: BoundKind,
}

/// The bounds of one `check`, with the logic shared by every place that tests a point.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    lower: Option<i128>,
    upper: Option<i128>,
}

impl Bounds {
    /// Tests the running value `v` of the entry at `at`; the lower bound is reported first.
    fn check_point(&self, at: TimelineKey, v: Deltas) -> Result<(), Violation> {
        if let Some(bound) = self.lower {
            let value = v.lower_series();
            if value < bound {
                return Err(Violation {
                    at,
                    value,
                    bound,
                    kind: BoundKind::Lower,
                });
            }
        }
        if let Some(bound) = self.upper {
            let value = v.upper_series();
            if value > bound {
                return Err(Violation {
                    at,
                    value,
                    bound,
                    kind: BoundKind::Upper,
                });
            }
        }
        Ok(())
    }

    /// The violation reported when a change cannot even be represented (add would overflow).
    fn unrepresentable(&self, at: TimelineKey) -> Violation {
        match self.lower {
            Some(bound) => Violation {
                at,
                value: i128::MIN,
                bound,
                kind: BoundKind::Lower,
            },
            None => Violation {
                at,
                value: i128::MAX,
                bound: self.upper.unwrap_or(i128::MAX),
                kind: BoundKind::Upper,
            },
        }
    }

    /// Whether a run of entries summarised by `agg`, preceded by running value `base` and shifted
    /// by `offset`, holds a violating point.
    fn agg_violates(&self, base: Deltas, offset: Deltas, agg: &Agg) -> bool {
        if agg.len == 0 {
            return false;
        }
        let lower_bad = self
            .lower
            .is_some_and(|b| base.lower_series() + agg.min_lower + offset.lower_series() < b);
        let upper_bad = self
            .upper
            .is_some_and(|b| base.upper_series() + agg.max_upper + offset.upper_series() > b);
        lower_bad || upper_bad
    }
}

/// Aggregate of a run of consecutive entries; `min_lower`/`max_upper` are over the running sums
/// measured from the start of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Agg {
    len: u64,
    sum: Deltas,
    min_lower: i128,
    max_upper: i128,
}

impl Agg {
    const EMPTY: Agg = Agg {
        len: 0,
        sum: Deltas::ZERO,
        min_lower: i128::MAX,
        max_upper: i128::MIN,
    };

    fn combine(l: &Agg, r: &Agg) -> Agg {
        if l.len == 0 {
            return *r;
        }
        if r.len == 0 {
            return *l;
        }
        Agg {
            len: l.len + r.len,
            sum: l.sum.plus(r.sum),
            min_lower: l.min_lower.min(l.sum.lower_series() + r.min_lower),
            max_upper: l.max_upper.max(l.sum.upper_series() + r.max_upper),
        }
    }
}

/// A sorted run of entries. `points.cum(i)` is the sum of the values of entries `0..=i`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Chunk {
    points: Points,
    min_lower: i128,
    max_upper: i128,
}

impl Chunk {
    fn with_capacity(capacity: usize) -> Chunk {
        Chunk {
            points: Points::with_capacity(capacity),
            min_lower: i128::MAX,
            max_upper: i128::MIN,
        }
    }

    fn len(&self) -> usize {
        self.points.len()
    }

    fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    fn key(&self, pos: usize) -> TimelineKey {
        self.points.key(pos)
    }

    fn sum(&self) -> Deltas {
        self.points.last_cum().unwrap_or(Deltas::ZERO)
    }

    /// Running sum of the entries before position `pos`.
    fn before(&self, pos: usize) -> Deltas {
        if pos == 0 {
            Deltas::ZERO
        } else {
            self.points.cum(pos - 1)
        }
    }

    fn value_at(&self, pos: usize) -> Deltas {
        self.points.cum(pos).minus(self.before(pos))
    }

    fn agg(&self) -> Agg {
        Agg {
            len: self.len() as u64,
            sum: self.sum(),
            min_lower: self.min_lower,
            max_upper: self.max_upper,
        }
    }

    fn push(&mut self, key: TimelineKey, d: Deltas) {
        // A posted-only change to a narrow chunk whose sum stays narrow: that sum is both its
        // series (no pending amounts), so the extrema move in `i64` too.
        if let Some(cum) = narrow(&d).and_then(|x| self.points.push_narrow(key, x)) {
            let cum = i128::from(cum);
            self.min_lower = self.min_lower.min(cum);
            self.max_upper = self.max_upper.max(cum);
            return;
        }
        let cum = self.sum().plus(d);
        self.points.push(key, cum);
        self.min_lower = self.min_lower.min(cum.lower_series());
        self.max_upper = self.max_upper.max(cum.upper_series());
    }

    /// Inserts a new entry at `pos` with value `d` (every later running sum moves by `d`).
    fn insert(&mut self, pos: usize, key: TimelineKey, d: Deltas) {
        let before = self.before(pos);
        self.reserve_one();
        self.points.insert(pos, key, before);
        self.points.shift_from(pos, d);
    }

    /// Removes the entry at `pos`, whose value is `old` (every later running sum moves back).
    fn remove(&mut self, pos: usize, old: Deltas) {
        self.points.remove(pos);
        self.points.shift_from(pos, Deltas::ZERO.minus(old));
    }

    fn shift_from(&mut self, pos: usize, d: Deltas) {
        self.points.shift_from(pos, d);
    }

    fn recompute_extrema(&mut self) {
        self.min_lower = i128::MAX;
        self.max_upper = i128::MIN;
        for (_, c) in self.points.iter() {
            self.min_lower = self.min_lower.min(c.lower_series());
            self.max_upper = self.max_upper.max(c.upper_series());
        }
    }

    /// Restores the extrema after the last running sum changed from `before` (every other
    /// running sum unchanged): the same result as [`Chunk::recompute_extrema`], which it falls back
    /// to only when `before` may have been the sole extreme and the new sum moved inward.
    fn update_extrema_at_last(&mut self, before: Deltas) {
        let Some(now) = self.points.last_cum() else {
            return;
        };
        let (lower, upper) = (now.lower_series(), now.upper_series());
        let min_may_rise = lower > self.min_lower && before.lower_series() == self.min_lower;
        let max_may_fall = upper < self.max_upper && before.upper_series() == self.max_upper;
        if min_may_rise || max_may_fall {
            self.recompute_extrema();
        } else {
            self.min_lower = self.min_lower.min(lower);
            self.max_upper = self.max_upper.max(upper);
        }
    }

    /// Splits off the entries from `at` into a new chunk, rebasing their running sums.
    fn split_off(&mut self, at: usize) -> Chunk {
        let base = self.before(at);
        let points = self.points.split_off(at, base);
        let mut right = Chunk {
            points,
            min_lower: 0,
            max_upper: 0,
        };
        right.recompute_extrema();
        self.points.shrink_to_fit();
        self.recompute_extrema();
        right
    }

    /// Makes room for one more entry, growing by 1/8 rather than doubling: a chunk never holds
    /// more than `chunk_len_max + 1` entries, so doubling would mostly buy unused memory.
    fn reserve_one(&mut self) {
        let len = self.len();
        if len == self.points.capacity() {
            self.points.reserve_exact((len / 8).max(4));
        }
    }

    /// Appends every entry of `right` (all keys greater than ours).
    fn absorb(&mut self, right: Chunk) {
        let base = self.sum();
        self.points.extend_shifted(&right.points, base);
        self.recompute_extrema();
    }
}

/// Segment tree over chunk aggregates (every chunk but the tail). Node 1 is the root; the leaf of
/// chunk `i` is node `cap + i`; leaves at and beyond `leaves` are empty.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Tree {
    leaves: usize,
    cap: usize,
    nodes: Vec<Agg>,
}

impl Tree {
    fn new() -> Tree {
        Tree {
            leaves: 0,
            cap: 2,
            nodes: vec![Agg::EMPTY; 4],
        }
    }

    fn total(&self) -> Deltas {
        self.nodes[1].sum
    }

    fn set(&mut self, i: usize, agg: Agg) {
        let mut node = self.cap + i;
        self.nodes[node] = agg;
        while node > 1 {
            node /= 2;
            self.nodes[node] = Agg::combine(&self.nodes[2 * node], &self.nodes[2 * node + 1]);
        }
    }

    /// Rebuilds the whole tree over `aggs`, growing the capacity to fit at least `extra` more.
    fn rebuild(&mut self, aggs: &[Agg], extra: usize) {
        let needed = aggs.len() + extra;
        if needed > self.cap {
            // At least 2 so that the root (node 1) is never itself a leaf.
            self.cap = needed.next_power_of_two().max(2);
        }
        self.nodes = vec![Agg::EMPTY; 2 * self.cap];
        self.nodes[self.cap..self.cap + aggs.len()].copy_from_slice(aggs);
        self.leaves = aggs.len();
        for j in (1..self.cap).rev() {
            self.nodes[j] = Agg::combine(&self.nodes[2 * j], &self.nodes[2 * j + 1]);
        }
    }

    /// Recomputes the inner nodes above leaves `a..b`.
    fn fix_above(&mut self, a: usize, b: usize) {
        if a >= b {
            return;
        }
        let (mut lo, mut hi) = ((self.cap + a) / 2, (self.cap + b - 1) / 2);
        while lo >= 1 {
            for j in lo..=hi {
                self.nodes[j] = Agg::combine(&self.nodes[2 * j], &self.nodes[2 * j + 1]);
            }
            lo /= 2;
            hi /= 2;
        }
    }

    /// Inserts a leaf at `i`, shifting the later ones: O(leaves - i + log cap), or O(cap) when
    /// the capacity doubles. The shift moves the tree's own copies, so no chunk is read.
    fn insert(&mut self, i: usize, agg: Agg) {
        let (cap, leaves) = (self.cap, self.leaves);
        if leaves == cap {
            let mut aggs = self.nodes[cap..cap + leaves].to_vec();
            aggs.insert(i, agg);
            self.rebuild(&aggs, 0);
            return;
        }
        self.nodes.copy_within(cap + i..cap + leaves, cap + i + 1);
        self.nodes[cap + i] = agg;
        self.leaves += 1;
        self.fix_above(i, leaves + 1);
    }

    /// Removes the leaf at `i`, shifting the later ones: O(leaves - i + log cap).
    fn remove(&mut self, i: usize) {
        let (cap, leaves) = (self.cap, self.leaves);
        self.nodes.copy_within(cap + i + 1..cap + leaves, cap + i);
        self.nodes[cap + leaves - 1] = Agg::EMPTY;
        self.leaves -= 1;
        self.fix_above(i, leaves);
    }

    /// Sum of leaves `0..c`.
    fn prefix_sum(&self, c: usize) -> Deltas {
        let (mut l, mut r) = (self.cap, self.cap + c);
        let mut acc = Deltas::ZERO;
        while l < r {
            if l & 1 == 1 {
                acc = acc.plus(self.nodes[l].sum);
                l += 1;
            }
            if r & 1 == 1 {
                r -= 1;
                acc = acc.plus(self.nodes[r].sum);
            }
            l /= 2;
            r /= 2;
        }
        acc
    }

    /// First leaf in `a..b` whose chunk holds a violating point, with `base` the running value
    /// before leaf `a`; on return `base` is the running value before the leaf found (or before `b`).
    fn find_first(
        &self,
        (a, b): (usize, usize),
        base: &mut Deltas,
        offset: Deltas,
        bounds: &Bounds,
    ) -> Option<usize> {
        self.find_in(1, (0, self.cap), (a, b), base, offset, bounds)
    }

    fn find_in(
        &self,
        node: usize,
        (lo, hi): (usize, usize),
        (a, b): (usize, usize),
        base: &mut Deltas,
        offset: Deltas,
        bounds: &Bounds,
    ) -> Option<usize> {
        if hi <= a || b <= lo {
            return None;
        }
        if a <= lo && hi <= b {
            let agg = &self.nodes[node];
            if !bounds.agg_violates(*base, offset, agg) {
                *base = base.plus(agg.sum);
                return None;
            }
            if hi - lo == 1 {
                return Some(lo);
            }
        }
        let mid = (lo + hi) / 2;
        self.find_in(2 * node, (lo, mid), (a, b), base, offset, bounds)
            .or_else(|| self.find_in(2 * node + 1, (mid, hi), (a, b), base, offset, bounds))
    }
}

/// A position in the entry order: (chunk index, index in chunk), normalised so that the index is
/// inside the chunk, or `(chunks.len(), 0)` for the end.
type Pos = (usize, usize);

/// The current valid-time index of one account: an ordered map [`TimelineKey`] → [`Deltas`]
/// (zero values are never stored) with fast prefix sums and bound checks. See the module docs for
/// the structure and the cost of each operation.
///
/// `repr(C)`, with what an append touches (`tail`, `len`, `chunk_len_max`) last, so that a
/// struct embedding it can put those fields and its own hot ones on shared cache lines.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct Timeline {
    /// Every chunk but the last.
    body: Vec<Chunk>,
    /// First key of each chunk, kept apart so the binary search touches one dense array.
    firsts: Vec<TimelineKey>,
    tree: Tree,
    /// The last chunk, where appends go, kept inline so that an append reaches it without
    /// first reading the body's buffer: one heap block fewer per append. Empty exactly when
    /// the timeline is.
    tail: Chunk,
    len: usize,
    chunk_len_max: usize,
}

// The fields an append touches are the last 80 bytes.
const _: () = assert!(Timeline::HOT_OFFSET + size_of::<Chunk>() + 16 == size_of::<Timeline>());

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Timeline {
    /// Offset of the first field an append touches (the tail chunk; then `len` and
    /// `chunk_len_max`, to the end).
    pub(crate) const HOT_OFFSET: usize = std::mem::offset_of!(Timeline, tail);

    /// An empty timeline with the default chunk size.
    pub fn new() -> Self {
        Self::with_chunk_len_max(CHUNK_LEN_MAX_DEFAULT)
    }

    /// An empty timeline whose chunks hold at most `chunk_len_max` entries (at least 4): for tests
    /// that exercise chunk splits with few entries, and for tuning.
    pub fn with_chunk_len_max(chunk_len_max: usize) -> Self {
        Timeline {
            body: Vec::new(),
            tail: Chunk::with_capacity(0),
            firsts: Vec::new(),
            tree: Tree::new(),
            len: 0,
            chunk_len_max: chunk_len_max.max(CHUNK_LEN_MAX_MIN),
        }
    }

    /// Number of entries (keys with a non-zero value).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The greatest key, if any.
    pub fn last_key(&self) -> Option<TimelineKey> {
        self.tail.points.last_key()
    }

    /// Reads the last chunk's last key and running sum of each timeline (what an append
    /// reads), first every last chunk, then every key and sum, so the loads of one stage do
    /// not wait on each other; returns something derived from them (see `Ledger::warm`).
    pub(crate) fn warm(timelines: &[&Timeline]) -> u64 {
        let tails: smallvec::SmallVec<[&Chunk; 128]> =
            timelines.iter().filter_map(|t| t.last_chunk()).collect();
        tails.iter().fold(0u64, |acc, c| {
            let key = c.points.last_key().map_or(0, |k| k.0 as u64);
            acc.wrapping_add(key).wrapping_add(c.sum().posted as u64)
        })
    }

    /// The value at `key`, `None` if absent (values are never zero).
    pub fn get(&self, key: TimelineKey) -> Option<Deltas> {
        let (ci, pi) = self.lower_bound(key);
        let chunk = self.chunk_get(ci)?;
        (chunk.key(pi) == key).then(|| chunk.value_at(pi))
    }

    /// Sum of all values.
    pub fn total(&self) -> Deltas {
        match self.last_chunk() {
            Some(tail) => self.tree.total().plus(tail.sum()),
            None => Deltas::ZERO,
        }
    }

    /// Sum of all values whose key has `key.0 <= valid_at`.
    pub fn prefix(&self, valid_at: i64) -> Deltas {
        match self.last_key() {
            None => Deltas::ZERO,
            Some(last) if last.0 <= valid_at => self.total(),
            Some(_) => self.prefix_through(&(valid_at, u64::MAX)),
        }
    }

    /// Sum of all values whose key is `<= key`.
    pub fn prefix_through(&self, key: &TimelineKey) -> Deltas {
        if self.chunk_count() == 0 {
            return Deltas::ZERO;
        }
        self.prefix_before(self.upper_bound(*key))
    }

    /// The entries with `from <= key.0 <= to`, in key order.
    pub fn range(&self, from: i64, to: i64) -> Entries<'_> {
        let (ci, pi) = if from > to || self.chunk_count() == 0 {
            (self.chunk_count(), 0)
        } else {
            self.lower_bound((from, 0))
        };
        Entries {
            timeline: self,
            ci,
            pi,
            to,
        }
    }

    /// Approximate heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        let per_chunk: usize = self.chunks().map(|c| c.points.memory_bytes()).sum();
        per_chunk
            + self.body.capacity() * size_of::<Chunk>()
            + self.firsts.capacity() * size_of::<TimelineKey>()
            + self.tree.nodes.capacity() * size_of::<Agg>()
    }

    /// Adds `d` to the value at `key` (inserting the key if absent); a value that becomes zero is
    /// removed. On error nothing changed.
    pub fn add(&mut self, key: TimelineKey, d: Deltas) -> Result<(), TimelineError> {
        if d.is_zero() {
            return Ok(());
        }
        match self.last_key() {
            Some(last) if key <= last => self.add_inside(key, d),
            _ => self.append(key, d),
        }
    }

    /// Whether applying every change of `changes` (each as [`Timeline::add`]; unsorted, keys may
    /// repeat) keeps `lower <= lower_series` and `upper_series <= upper` at every entry of the
    /// resulting timeline from the smallest changed key on, the value at an entry being the sum
    /// of values up to and including it. Reports the first violating entry; where both bounds
    /// break at one entry, the lower one. Changes whose result `add` could not represent count as
    /// a violation at their key (when at least one bound is given). Mutates nothing.
    pub fn check(
        &self,
        changes: &[(TimelineKey, Deltas)],
        lower: Option<i128>,
        upper: Option<i128>,
    ) -> Result<(), Violation> {
        let bounds = Bounds { lower, upper };
        if changes.is_empty() || (lower.is_none() && upper.is_none()) {
            return Ok(());
        }
        let last = self.last_key();
        if let [(key, d)] = changes {
            if last.is_none_or(|l| *key > l) {
                return self.check_append(*key, *d, &bounds);
            }
        }
        let merged = merge_changes(changes, &bounds)?;
        let mut offset = Deltas::ZERO;
        let mut after_prev: Option<Pos> = None;
        for &(key, change) in &merged {
            let pos = self.lower_bound(key);
            let old = self.value_at_pos(pos, key);
            if let Some(from) = after_prev {
                self.check_span(from, pos, offset, &bounds)?;
            }
            let old_value = old.unwrap_or(Deltas::ZERO);
            let new_value = old_value
                .checked_add(&change)
                .filter(Deltas::is_within_value_max)
                .ok_or_else(|| bounds.unrepresentable(key))?;
            // Both values are in range now, so their difference (the effective change) is too.
            offset = offset.plus(new_value.minus(old_value));
            let old_through = self.prefix_before(pos).plus(old_value);
            if !new_value.is_zero() {
                bounds.check_point(key, old_through.plus(offset))?;
            }
            after_prev = Some(if old.is_some() {
                self.next_pos(pos)
            } else {
                pos
            });
        }
        match after_prev {
            Some(from) => self.check_span(from, (self.chunk_count(), 0), offset, &bounds),
            None => Ok(()),
        }
    }

    fn check_append(&self, key: TimelineKey, d: Deltas, bounds: &Bounds) -> Result<(), Violation> {
        if d.is_zero() {
            return Ok(());
        }
        if !d.is_within_value_max() {
            return Err(bounds.unrepresentable(key));
        }
        bounds.check_point(key, self.total().plus(d))
    }

    /// Checks the existing entries in positions `from..to`, each shifted by `offset`.
    fn check_span(
        &self,
        from: Pos,
        to: Pos,
        offset: Deltas,
        bounds: &Bounds,
    ) -> Result<(), Violation> {
        if from >= to {
            return Ok(());
        }
        let count = self.chunk_count();
        let mut base = self.prefix_before((from.0, 0));
        let first = self.chunk(from.0);
        if from.0 == to.0 {
            return self.scan(from.0, (from.1, to.1), base, offset, bounds);
        }
        self.scan(from.0, (from.1, first.len()), base, offset, bounds)?;
        base = base.plus(first.sum());
        // Whole chunks from.0+1 .. to.0: those in the tree first, then the tail.
        let mut a = from.0 + 1;
        let tree_end = to.0.min(self.tree.leaves);
        while a < tree_end {
            match self
                .tree
                .find_first((a, tree_end), &mut base, offset, bounds)
            {
                Some(ci) => {
                    let chunk = self.chunk(ci);
                    self.scan(ci, (0, chunk.len()), base, offset, bounds)?;
                    // Unreachable while the tree is consistent; kept so a stale node cannot hide
                    // a later violation.
                    base = base.plus(chunk.sum());
                    a = ci + 1;
                }
                None => break,
            }
        }
        if to.0 == count && count > from.0 + 1 {
            let tail = self.chunk(count - 1);
            if bounds.agg_violates(base, offset, &tail.agg()) {
                self.scan(count - 1, (0, tail.len()), base, offset, bounds)?;
            }
            return Ok(());
        }
        if to.0 < count {
            self.scan(to.0, (0, to.1), base, offset, bounds)?;
        }
        Ok(())
    }

    /// Checks entries `p..q` of chunk `ci`, whose preceding running value is `base`.
    fn scan(
        &self,
        ci: usize,
        (p, q): (usize, usize),
        base: Deltas,
        offset: Deltas,
        bounds: &Bounds,
    ) -> Result<(), Violation> {
        let chunk = self.chunk(ci);
        let shift = base.plus(offset);
        for i in p..q {
            bounds.check_point(chunk.key(i), shift.plus(chunk.points.cum(i)))?;
        }
        Ok(())
    }

    /// Reserves room for `additional` more points appended after the last key, as far as the
    /// last chunk holds them (a full chunk starts a new one, sized for a whole chunk). An empty
    /// timeline gets none: its first append starts a chunk of its own. Changes no value.
    pub fn reserve(&mut self, additional: usize) {
        if self.tail.is_empty() {
            return;
        }
        let room = self.chunk_len_max.saturating_sub(self.tail.len());
        self.tail.points.reserve(additional.min(room));
    }

    fn append(&mut self, key: TimelineKey, d: Deltas) -> Result<(), TimelineError> {
        if !d.is_within_value_max() || self.len as u64 >= TIMELINE_LEN_MAX {
            return Err(TimelineError::Overflow);
        }
        let n = self.tail.len();
        if n == 0 || n >= self.chunk_len_max {
            // Most accounts hold few entries: the first chunk starts small and grows by
            // doubling; later tails are sized for the chunk they will become.
            let capacity = if n == 0 { 4 } else { self.chunk_len_max };
            let former = std::mem::replace(&mut self.tail, Chunk::with_capacity(capacity));
            if n > 0 {
                // The former tail becomes a tree leaf.
                self.tree.insert(self.tree.leaves, former.agg());
                self.body.push(former);
            }
            self.firsts.push(key);
        }
        self.tail.push(key, d);
        self.len += 1;
        Ok(())
    }

    fn add_inside(&mut self, key: TimelineKey, d: Deltas) -> Result<(), TimelineError> {
        let ci = self.chunk_for(key);
        // The chunk's own field, not `chunk_mut`, so that `self.len` stays usable.
        let chunk = if ci < self.body.len() {
            &mut self.body[ci]
        } else {
            &mut self.tail
        };
        let pi = chunk.points.partition_point(|k| *k < key);
        if pi < chunk.len() && chunk.key(pi) == key {
            let old = chunk.value_at(pi);
            let new = old
                .checked_add(&d)
                .filter(Deltas::is_within_value_max)
                .ok_or(TimelineError::Overflow)?;
            if new.is_zero() {
                chunk.remove(pi, old);
                self.len -= 1;
            } else if pi + 1 == chunk.len() {
                // The chunk's last entry (the common case: another change at the newest
                // instant): only its running sum moves, so the extrema follow without a scan
                // unless it held one of them and moved away from it.
                let before = chunk.points.cum(pi);
                chunk.shift_from(pi, d);
                chunk.update_extrema_at_last(before);
                self.after_chunk_change(ci);
                return Ok(());
            } else {
                // `new - old` equals `d` and is in range since both values are.
                chunk.shift_from(pi, d);
            }
        } else {
            if !d.is_within_value_max() || self.len as u64 >= TIMELINE_LEN_MAX {
                return Err(TimelineError::Overflow);
            }
            chunk.insert(pi, key, d);
            self.len += 1;
        }
        chunk.recompute_extrema();
        self.after_chunk_change(ci);
        Ok(())
    }

    /// Restores the chunk-size policy and the index after chunk `ci` changed.
    fn after_chunk_change(&mut self, ci: usize) {
        let len = self.chunk(ci).len();
        if len == 0 {
            self.remove_chunk(ci);
            self.firsts.remove(ci);
            // Chunk ci left the tree, or (if it was the tail) the new tail, chunk ci - 1, did.
            if self.tree.leaves > 0 {
                self.tree.remove(ci.min(self.tree.leaves - 1));
            }
            return;
        }
        self.firsts[ci] = self.chunk(ci).key(0);
        if len > self.chunk_len_max {
            let right = self.chunk_mut(ci).split_off(len / 2);
            let right_agg = right.agg();
            self.firsts.insert(ci + 1, right.key(0));
            self.insert_chunk(ci + 1, right);
            let left_agg = self.chunk(ci).agg();
            if ci < self.tree.leaves {
                self.tree.set(ci, left_agg);
                self.tree.insert(ci + 1, right_agg);
            } else {
                // The tail split: its left half joins the tree, the right half is the new tail.
                self.tree.insert(ci, left_agg);
            }
            return;
        }
        if len < self.chunk_len_max / 4 {
            // Merge a small chunk into a neighbour when the result stays at most half full, so a
            // later insert there does not split it again at once.
            let half = self.chunk_len_max / 2;
            if ci + 1 < self.chunk_count() && len + self.chunk(ci + 1).len() <= half {
                self.merge_next(ci);
                return;
            }
            if ci > 0 && len + self.chunk(ci - 1).len() <= half {
                self.merge_next(ci - 1);
                return;
            }
        }
        if ci < self.tree.leaves {
            self.tree.set(ci, self.chunk(ci).agg());
        }
    }

    fn merge_next(&mut self, ci: usize) {
        let right = self.remove_chunk(ci + 1);
        self.firsts.remove(ci + 1);
        self.chunk_mut(ci).absorb(right);
        if ci + 1 < self.tree.leaves {
            self.tree.set(ci, self.chunk(ci).agg());
            self.tree.remove(ci + 1);
        } else {
            // Merged into the tail: chunk ci leaves the tree.
            self.tree.remove(ci);
        }
    }

    /// Number of chunks: the body's, and the tail unless the timeline is empty.
    fn chunk_count(&self) -> usize {
        self.body.len() + usize::from(!self.tail.is_empty())
    }

    /// Chunk `ci`, which must exist (the tail is chunk `body.len()`; while a change is being
    /// restored by [`Timeline::after_chunk_change`], it may be empty).
    fn chunk(&self, ci: usize) -> &Chunk {
        debug_assert!(ci <= self.body.len());
        self.body.get(ci).unwrap_or(&self.tail)
    }

    fn chunk_mut(&mut self, ci: usize) -> &mut Chunk {
        debug_assert!(ci <= self.body.len());
        if ci < self.body.len() {
            &mut self.body[ci]
        } else {
            &mut self.tail
        }
    }

    /// Chunk `ci`, if there is one.
    fn chunk_get(&self, ci: usize) -> Option<&Chunk> {
        (ci < self.chunk_count()).then(|| self.chunk(ci))
    }

    /// The tail, unless the timeline is empty.
    fn last_chunk(&self) -> Option<&Chunk> {
        (!self.tail.is_empty()).then_some(&self.tail)
    }

    /// Every chunk, in key order.
    fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.body.iter().chain(self.last_chunk())
    }

    /// Inserts `c` as chunk `at` (`at <= chunk_count()`); at the end, it becomes the tail.
    fn insert_chunk(&mut self, at: usize, c: Chunk) {
        if at == self.chunk_count() {
            let former = std::mem::replace(&mut self.tail, c);
            if !former.is_empty() {
                self.body.push(former);
            }
        } else {
            self.body.insert(at, c);
        }
    }

    /// Removes chunk `at` (removing the tail makes the last of the body the tail).
    fn remove_chunk(&mut self, at: usize) -> Chunk {
        if at < self.body.len() {
            self.body.remove(at)
        } else {
            let last = self.body.pop().unwrap_or_else(|| Chunk::with_capacity(0));
            std::mem::replace(&mut self.tail, last)
        }
    }

    /// Index of the last chunk whose first key is `<= key`, or 0. Requires a chunk.
    fn chunk_for(&self, key: TimelineKey) -> usize {
        self.firsts.partition_point(|f| *f <= key).saturating_sub(1)
    }

    fn normalise(&self, (ci, pi): Pos) -> Pos {
        if pi >= self.chunk(ci).len() {
            (ci + 1, 0)
        } else {
            (ci, pi)
        }
    }

    /// Position of the first entry with key `>= key`.
    fn lower_bound(&self, key: TimelineKey) -> Pos {
        if self.chunk_count() == 0 {
            return (0, 0);
        }
        let ci = self.chunk_for(key);
        self.normalise((ci, self.chunk(ci).points.partition_point(|k| *k < key)))
    }

    /// Position of the first entry with key `> key`.
    fn upper_bound(&self, key: TimelineKey) -> Pos {
        if self.chunk_count() == 0 {
            return (0, 0);
        }
        let ci = self.chunk_for(key);
        self.normalise((ci, self.chunk(ci).points.partition_point(|k| *k <= key)))
    }

    fn next_pos(&self, (ci, pi): Pos) -> Pos {
        self.normalise((ci, pi + 1))
    }

    /// The value at `pos` if the entry there has key `key`.
    fn value_at_pos(&self, (ci, pi): Pos, key: TimelineKey) -> Option<Deltas> {
        let chunk = self.chunk_get(ci)?;
        (chunk.key(pi) == key).then(|| chunk.value_at(pi))
    }

    /// Sum of the values of all entries before chunk `ci`.
    fn prefix_before_chunk(&self, ci: usize) -> Deltas {
        match ci.cmp(&self.tree.leaves) {
            Ordering::Less => self.tree.prefix_sum(ci),
            Ordering::Equal => self.tree.total(),
            Ordering::Greater => self.total(),
        }
    }

    /// Sum of the values of all entries before position `pos`.
    fn prefix_before(&self, (ci, pi): Pos) -> Deltas {
        match self.chunk_get(ci) {
            Some(chunk) => self.prefix_before_chunk(ci).plus(chunk.before(pi)),
            None => self.total(),
        }
    }

    /// Debug-time consistency check of every derived field; used by the tests.
    #[cfg(test)]
    fn assert_consistent(&self) {
        let mut len = 0;
        let mut prev: Option<TimelineKey> = None;
        assert_eq!(self.tail.is_empty(), self.body.is_empty() && self.len == 0);
        for (i, c) in self.chunks().enumerate() {
            assert!(!c.is_empty() && c.len() <= self.chunk_len_max);
            assert_eq!(self.firsts[i], c.key(0));
            for (j, (k, _)) in c.points.iter().enumerate() {
                assert!(prev.is_none_or(|p| p < k));
                assert!(!c.value_at(j).is_zero());
                prev = Some(k);
            }
            let mut fresh = c.clone();
            fresh.recompute_extrema();
            assert_eq!(
                (fresh.min_lower, fresh.max_upper),
                (c.min_lower, c.max_upper)
            );
            len += c.len();
        }
        assert_eq!(len, self.len);
        assert_eq!(self.firsts.len(), self.chunk_count());
        assert_eq!(self.tree.leaves, self.chunk_count().saturating_sub(1));
        let mut fresh = Tree::new();
        let aggs: Vec<Agg> = self.body[..self.tree.leaves]
            .iter()
            .map(Chunk::agg)
            .collect();
        fresh.rebuild(&aggs, 0);
        assert_eq!(fresh.nodes[1], self.tree.nodes[1]);
        let tree = &self.tree;
        for j in 1..tree.cap {
            assert_eq!(
                tree.nodes[j],
                Agg::combine(&tree.nodes[2 * j], &tree.nodes[2 * j + 1])
            );
        }
        assert!(tree.nodes[tree.cap + tree.leaves..]
            .iter()
            .all(|a| *a == Agg::EMPTY));
        for i in 0..self.tree.leaves {
            assert_eq!(self.tree.nodes[self.tree.cap + i], self.chunk(i).agg());
        }
    }
}

/// Sorts `changes` by key and sums those with equal keys (zero sums kept: the key still starts
/// the checked range).
fn merge_changes(
    changes: &[(TimelineKey, Deltas)],
    bounds: &Bounds,
) -> Result<Vec<(TimelineKey, Deltas)>, Violation> {
    let mut sorted = changes.to_vec();
    sorted.sort_unstable_by_key(|c| c.0);
    let mut merged: Vec<(TimelineKey, Deltas)> = Vec::with_capacity(sorted.len());
    for (key, d) in sorted {
        match merged.last_mut() {
            Some((k, sum)) if *k == key => {
                *sum = sum
                    .checked_add(&d)
                    .ok_or_else(|| bounds.unrepresentable(key))?;
            }
            _ => merged.push((key, d)),
        }
    }
    Ok(merged)
}

/// Iterator over the entries of a [`Timeline`] in a valid-time range, in key order.
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    timeline: &'a Timeline,
    ci: usize,
    pi: usize,
    to: i64,
}

impl Iterator for Entries<'_> {
    type Item = (TimelineKey, Deltas);

    fn next(&mut self) -> Option<Self::Item> {
        let chunk = self.timeline.chunk_get(self.ci)?;
        let key = chunk.key(self.pi);
        if key.0 > self.to {
            self.ci = self.timeline.chunk_count();
            return None;
        }
        let value = chunk.value_at(self.pi);
        self.pi += 1;
        if self.pi == chunk.len() {
            self.ci += 1;
            self.pi = 0;
        }
        Some((key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    type Naive = BTreeMap<TimelineKey, Deltas>;

    fn d(posted: i128) -> Deltas {
        Deltas::new(posted, 0, 0)
    }

    /// The oracle's add: `None` where the timeline must refuse with `Overflow`.
    fn naive_add(map: &mut Naive, key: TimelineKey, delta: Deltas) -> Option<()> {
        let old = map.get(&key).copied().unwrap_or_default();
        let new = old
            .checked_add(&delta)
            .filter(Deltas::is_within_value_max)?;
        if new.is_zero() {
            map.remove(&key);
        } else {
            map.insert(key, new);
        }
        Some(())
    }

    fn naive_prefix(map: &Naive, valid_at: i64) -> Deltas {
        map.iter()
            .filter(|(k, _)| k.0 <= valid_at)
            .fold(Deltas::ZERO, |a, (_, v)| a.plus(*v))
    }

    fn naive_check(
        map: &Naive,
        changes: &[(TimelineKey, Deltas)],
        lower: Option<i128>,
        upper: Option<i128>,
    ) -> Result<(), Violation> {
        let mut after = map.clone();
        for &(k, c) in changes {
            naive_add(&mut after, k, c).expect("test values stay in range");
        }
        let Some(min_key) = changes.iter().map(|c| c.0).min() else {
            return Ok(());
        };
        let bounds = Bounds { lower, upper };
        let mut running = Deltas::ZERO;
        for (k, v) in after {
            running = running.plus(v);
            if k >= min_key {
                bounds.check_point(k, running)?;
            }
        }
        Ok(())
    }

    fn timeline_of(entries: &[(TimelineKey, Deltas)], chunk_len_max: usize) -> Timeline {
        let mut t = Timeline::with_chunk_len_max(chunk_len_max);
        for &(k, v) in entries {
            t.add(k, v).unwrap();
        }
        t.assert_consistent();
        t
    }

    #[test]
    fn empty_timeline_answers_zero() {
        let t = Timeline::new();
        assert!(t.is_empty());
        assert_eq!(t.len(), 0);
        assert_eq!(t.prefix(i64::MAX), Deltas::ZERO);
        assert_eq!(t.prefix(i64::MIN), Deltas::ZERO);
        assert_eq!(t.total(), Deltas::ZERO);
        assert_eq!(t.get((0, 0)), None);
        assert_eq!(t.range(i64::MIN, i64::MAX).count(), 0);
        assert_eq!(
            t.check(&[((5, 0), d(-1))], Some(0), None)
                .unwrap_err()
                .value,
            -1
        );
        assert_eq!(t.check(&[], Some(0), None), Ok(()));
        t.assert_consistent();
    }

    #[test]
    fn same_effective_time_different_sequence_are_distinct_entries() {
        let t = timeline_of(&[((10, 1), d(5)), ((10, 0), d(3)), ((10, 2), d(-1))], 4);
        assert_eq!(t.len(), 3);
        assert_eq!(t.prefix(10), d(7));
        assert_eq!(t.prefix(9), Deltas::ZERO);
        assert_eq!(t.prefix_through(&(10, 0)), d(3));
        assert_eq!(t.prefix_through(&(10, 1)), d(8));
        let keys: Vec<_> = t.range(10, 10).map(|e| e.0).collect();
        assert_eq!(keys, vec![(10, 0), (10, 1), (10, 2)]);
    }

    #[test]
    fn adding_the_negation_removes_the_entry() {
        let mut t = timeline_of(&[((1, 0), d(5)), ((2, 0), d(7)), ((3, 0), d(9))], 4);
        t.add((2, 0), d(-7)).unwrap();
        t.assert_consistent();
        assert_eq!(t.len(), 2);
        assert_eq!(t.get((2, 0)), None);
        assert_eq!(t.prefix(2), d(5));
        // Removing the last entry, then appending after it again.
        t.add((3, 0), d(-9)).unwrap();
        t.add((1, 0), d(-5)).unwrap();
        t.assert_consistent();
        assert!(t.is_empty());
        t.add((0, 0), d(1)).unwrap();
        assert_eq!(t.total(), d(1));
        t.assert_consistent();
    }

    #[test]
    fn check_with_cancelling_changes() {
        // Superseding a posting with a correction: -old +new at the same and at a later key.
        let t = timeline_of(&[((1, 0), d(10)), ((5, 0), d(-4)), ((9, 0), d(-6))], 4);
        // Cancelling the credit at 1 drives every later point negative.
        let v = t.check(&[((1, 0), d(-10))], Some(0), None).unwrap_err();
        assert_eq!(
            v,
            Violation {
                at: (5, 0),
                value: -4,
                bound: 0,
                kind: BoundKind::Lower
            }
        );
        // Cancel and re-post it one step earlier: fine.
        assert_eq!(
            t.check(&[((1, 0), d(-10)), ((0, 7), d(10))], Some(0), None),
            Ok(())
        );
        // Changes that cancel each other entirely leave the timeline as it is.
        assert_eq!(
            t.check(&[((3, 0), d(-100)), ((3, 0), d(100))], Some(0), None),
            Ok(())
        );
        // The removed key itself is no point: only later ones are checked.
        let t2 = timeline_of(&[((1, 0), d(-3)), ((2, 0), d(3))], 4);
        assert_eq!(t2.check(&[((2, 0), d(-3))], Some(-3), None), Ok(()));
        assert_eq!(t2.check(&[((2, 0), d(-3))], Some(-2), None), Ok(()));
        assert_eq!(t2.check(&[((1, 0), d(3))], Some(0), None), Ok(()));
    }

    #[test]
    fn check_finds_a_violation_only_far_in_the_future() {
        let mut entries = vec![((0, 0), d(1_000))];
        for i in 1..2_000 {
            entries.push(((i, 0), d(if i == 1_900 { -1_900 } else { 0 }).plus(d(1))));
        }
        let t = timeline_of(&entries, 8);
        // From key 3 on, the running balance is lowest at 1_900: 1_000 + 1_899 - 1_899 = 1_000.
        assert_eq!(t.check(&[((3, 0), d(-1_000))], Some(0), None), Ok(()));
        let v = t.check(&[((3, 0), d(-1_001))], Some(0), None).unwrap_err();
        assert_eq!(
            v,
            Violation {
                at: (1_900, 0),
                value: -1,
                bound: 0,
                kind: BoundKind::Lower
            }
        );
    }

    #[test]
    fn upper_bound_and_pending_series() {
        let t = timeline_of(
            &[
                ((1, 0), Deltas::new(100, 30, 0)),
                ((2, 0), Deltas::new(0, 0, 50)),
            ],
            4,
        );
        assert_eq!(t.total().lower_series(), 70);
        assert_eq!(t.total().upper_series(), 150);
        // A new hold of 71 against debits at the end breaks the lower bound, 70 does not.
        assert_eq!(
            t.check(&[((3, 0), Deltas::new(0, 70, 0))], Some(0), None),
            Ok(())
        );
        let v = t
            .check(&[((3, 0), Deltas::new(0, 71, 0))], Some(0), None)
            .unwrap_err();
        assert_eq!(
            v,
            Violation {
                at: (3, 0),
                value: -1,
                bound: 0,
                kind: BoundKind::Lower
            }
        );
        // Upper bound 150: a back-dated credit of 1 breaks it at the last point only.
        let v = t.check(&[((0, 0), d(1))], None, Some(150)).unwrap_err();
        assert_eq!(
            v,
            Violation {
                at: (2, 0),
                value: 151,
                bound: 150,
                kind: BoundKind::Upper
            }
        );
        // Both broken at one point: lower is reported.
        let v = t
            .check(&[((0, 0), Deltas::new(0, 200, 200))], Some(0), Some(0))
            .unwrap_err();
        assert_eq!(v.kind, BoundKind::Lower);
        assert_eq!(v.at, (0, 0));
    }

    #[test]
    fn overflow_is_an_error_and_changes_nothing() {
        let mut t = timeline_of(&[((1, 0), d(VALUE_COMPONENT_MAX))], 4);
        assert_eq!(t.add((1, 0), d(1)), Err(TimelineError::Overflow));
        assert_eq!(
            t.add((2, 0), d(VALUE_COMPONENT_MAX + 1)),
            Err(TimelineError::Overflow)
        );
        assert_eq!(
            t.add((0, 0), Deltas::new(0, i128::MIN, 0)),
            Err(TimelineError::Overflow)
        );
        assert_eq!(t.add((1, 0), d(i128::MAX)), Err(TimelineError::Overflow));
        t.assert_consistent();
        assert_eq!(t.total(), d(VALUE_COMPONENT_MAX));
        let v = t
            .check(&[((0, 0), d(i128::MAX)), ((0, 0), d(1))], Some(0), None)
            .unwrap_err();
        assert_eq!((v.at, v.value), ((0, 0), i128::MIN));
        assert_eq!(
            t.check(&[((9, 0), d(i128::MIN))], None, Some(0))
                .unwrap_err()
                .value,
            i128::MAX
        );
        assert_eq!(Deltas::new(i128::MIN, 1, 0).lower_series(), i128::MIN);
        assert_eq!(Deltas::new(i128::MIN, 0, 0).checked_neg(), None);
        assert_eq!(d(i128::MAX).checked_add(&d(1)), None);
        assert_eq!(d(i128::MIN).checked_sub(&d(1)), None);
    }

    #[test]
    fn chunks_split_and_merge_under_middle_inserts_and_removals() {
        let mut t = Timeline::with_chunk_len_max(8);
        let mut naive = Naive::new();
        for i in 0..200i64 {
            let key = ((i * 37) % 101, 0);
            t.add(key, d(i as i128 + 1)).unwrap();
            naive_add(&mut naive, key, d(i as i128 + 1)).unwrap();
            t.assert_consistent();
        }
        let keys: Vec<_> = naive.keys().copied().collect();
        for key in keys.iter().step_by(2).chain(keys.iter().skip(1).step_by(2)) {
            let v = naive[key];
            t.add(*key, Deltas::ZERO.minus(v)).unwrap();
            naive.remove(key);
            t.assert_consistent();
            assert_eq!(t.prefix(50), naive_prefix(&naive, 50));
        }
        assert!(t.is_empty());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Add(TimelineKey, Deltas),
        /// Supersede an existing entry (index taken modulo the length): add its negation.
        Cancel(usize),
        /// A change far after everything, the common case.
        Append(Deltas),
        /// Another change at the newest key (several entries effective at one instant).
        AddAtLast(Deltas),
        Check(Vec<ChangeSpec>, Option<i128>, Option<i128>),
    }

    #[derive(Clone, Debug)]
    enum ChangeSpec {
        Add(TimelineKey, Deltas),
        Cancel(usize),
    }

    fn key() -> impl Strategy<Value = TimelineKey> {
        (0i64..30, 0u64..3)
    }

    fn deltas() -> impl Strategy<Value = Deltas> {
        prop_oneof![
            4 => (-20i128..20).prop_map(d),
            4 => (-20i128..20, -5i128..10, -5i128..10).prop_map(|(p, a, b)| Deltas::new(p, a, b)),
            // Posted amounts around 2^62 and beyond `i64`: running sums cross the `i64`
            // range both ways, so chunks turn their narrow sums wide.
            1 => (-3i128..=3, -3i128..=3).prop_map(|(k, p)| d(k * (1i128 << 62) + p)),
        ]
    }

    fn change_spec() -> impl Strategy<Value = ChangeSpec> {
        prop_oneof![
            (key(), deltas()).prop_map(|(k, v)| ChangeSpec::Add(k, v)),
            any::<usize>().prop_map(ChangeSpec::Cancel),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (key(), deltas()).prop_map(|(k, v)| Op::Add(k, v)),
            2 => any::<usize>().prop_map(Op::Cancel),
            2 => deltas().prop_map(Op::Append),
            3 => deltas().prop_map(Op::AddAtLast),
            3 => (
                prop::collection::vec(change_spec(), 1..5),
                prop::option::of(-40i128..40),
                prop::option::of(-40i128..40)
            )
                .prop_map(|(c, l, u)| Op::Check(c, l, u)),
        ]
    }

    fn resolve(naive: &Naive, spec: &ChangeSpec) -> (TimelineKey, Deltas) {
        match spec {
            ChangeSpec::Add(k, v) => (*k, *v),
            ChangeSpec::Cancel(i) => match naive.iter().nth(i % naive.len().max(1)) {
                Some((k, v)) => (*k, Deltas::ZERO.minus(*v)),
                None => ((0, 0), Deltas::ZERO),
            },
        }
    }

    fn compare(t: &Timeline, naive: &Naive, (from, to): (i64, i64)) {
        t.assert_consistent();
        assert_eq!(t.len(), naive.len());
        assert_eq!(t.total(), naive_prefix(naive, i64::MAX));
        for v in (-1..=31)
            .chain(999_999..=1_000_001)
            .chain(naive.keys().map(|k| k.0))
        {
            assert_eq!(t.prefix(v), naive_prefix(naive, v), "prefix({v})");
        }
        for (k, v) in naive {
            assert_eq!(t.get(*k), Some(*v));
            let through = naive
                .range(..=*k)
                .fold(Deltas::ZERO, |a, (_, v)| a.plus(*v));
            assert_eq!(t.prefix_through(k), through);
        }
        let got: Vec<_> = t.range(from, to).collect();
        let want: Vec<_> = naive
            .iter()
            .filter(|(k, _)| from <= k.0 && k.0 <= to)
            .map(|(k, v)| (*k, *v))
            .collect();
        assert_eq!(got, want, "range({from}, {to})");
    }

    fn run_ops(ops: &[Op], chunk_len_max: usize, range: (i64, i64)) {
        let mut t = Timeline::with_chunk_len_max(chunk_len_max);
        let mut naive = Naive::new();
        let mut next_append = 1_000_000i64;
        for op in ops {
            match op {
                Op::Add(k, v) => {
                    t.add(*k, *v).unwrap();
                    naive_add(&mut naive, *k, *v).unwrap();
                }
                Op::Cancel(i) => {
                    let (k, v) = resolve(&naive, &ChangeSpec::Cancel(*i));
                    t.add(k, v).unwrap();
                    naive_add(&mut naive, k, v).unwrap();
                }
                Op::Append(v) => {
                    next_append += 1;
                    t.add((next_append, 0), *v).unwrap();
                    naive_add(&mut naive, (next_append, 0), *v).unwrap();
                }
                Op::AddAtLast(v) => {
                    let k = t.last_key().unwrap_or((next_append, 0));
                    t.add(k, *v).unwrap();
                    naive_add(&mut naive, k, *v).unwrap();
                }
                Op::Check(specs, lower, upper) => {
                    let changes: Vec<_> = specs.iter().map(|s| resolve(&naive, s)).collect();
                    // Bounds relative to the current balance, so that both outcomes occur.
                    let base = t.total();
                    let lower = lower.map(|l| base.lower_series() + l);
                    let upper = upper.map(|u| base.upper_series() + u);
                    let want = naive_check(&naive, &changes, lower, upper);
                    assert_eq!(
                        t.check(&changes, lower, upper),
                        want,
                        "{changes:?} {lower:?} {upper:?}"
                    );
                    // And a pure append after everything.
                    let append = [((next_append + 1, 0), changes[0].1)];
                    let want = naive_check(&naive, &append, lower, upper);
                    assert_eq!(t.check(&append, lower, upper), want);
                }
            }
            compare(&t, &naive, range);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn timeline_matches_naive_oracle_small_chunks(
            ops in prop::collection::vec(op(), 1..120),
            range in (-2i64..32, -2i64..32),
            chunk_len_max in 4usize..13,
        ) {
            run_ops(&ops, chunk_len_max, range);
        }

        #[test]
        fn timeline_matches_naive_oracle_default_chunks(
            ops in prop::collection::vec(op(), 1..60),
            range in (-2i64..32, -2i64..32),
        ) {
            run_ops(&ops, CHUNK_LEN_MAX_DEFAULT, range);
        }

        #[test]
        fn huge_values_overflow_as_errors_never_panics(
            adds in prop::collection::vec(
                (key(), prop_oneof![
                    Just(VALUE_COMPONENT_MAX), Just(-VALUE_COMPONENT_MAX), Just(VALUE_COMPONENT_MAX + 1),
                    Just(i128::MAX), Just(i128::MIN), -3i128..3
                ], 0usize..3),
                1..80,
            ),
        ) {
            let mut t = Timeline::with_chunk_len_max(4);
            let mut naive = Naive::new();
            for (k, x, component) in adds {
                let mut v = Deltas::ZERO;
                match component { 0 => v.posted = x, 1 => v.pending_debit = x, _ => v.pending_credit = x }
                let want = naive_add(&mut naive, k, v).ok_or(TimelineError::Overflow);
                prop_assert_eq!(t.add(k, v), want);
                t.assert_consistent();
                prop_assert_eq!(t.total(), naive_prefix(&naive, i64::MAX));
                prop_assert_eq!(t.prefix(k.0), naive_prefix(&naive, k.0));
                // Any check with in-range changes is answered without panicking.
                let _ = t.check(&[((0, 0), d(-VALUE_COMPONENT_MAX)), ((40, 0), d(1))], Some(0), Some(0));
            }
        }
    }
}
