//! The compact storage of a balance index's change log ([`ChangeLog`]) and of its summaries'
//! running sums (`Sums`).
//!
//! Almost every change moves posted money only, by an amount that fits an `i64` of minor
//! units; holds are the exception. So a change is stored in 32 bytes (position, key, posted
//! amount) instead of the 80 of a [`Change`] with its three `i128` amounts, and the few others
//! keep their full amounts in a side table. Likewise a summary's running sums are `i64`s when
//! all of them fit (8 bytes each instead of 48). Both hand out the same values as the plain
//! form would; only memory differs.

use super::index::Change;
use super::timeline::{Deltas, TimelineKey};

/// Marks a stored change whose amounts live in [`ChangeLog::wide`].
const WIDE: i64 = i64::MIN;

/// One change as stored: `posted` is the posted amount, or [`WIDE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Packed {
    position: u64,
    key: TimelineKey,
    posted: i64,
}

// The layout the module docs count on.
const _: () = assert!(size_of::<Packed>() == 32);

/// The amounts of `d` as a narrow posted amount, if they have one.
pub(crate) fn narrow(d: &Deltas) -> Option<i64> {
    if d.pending_debit != 0 || d.pending_credit != 0 {
        return None;
    }
    i64::try_from(d.posted).ok().filter(|&p| p != WIDE)
}

/// Every change of one balance index, in log order, 32 bytes each (plus 64 for a change with
/// hold amounts or a posted amount beyond `i64`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeLog {
    packed: Vec<Packed>,
    /// (index in `packed`, amounts) of each wide change, in index order.
    wide: Vec<(u32, Deltas)>,
}

impl ChangeLog {
    /// Number of changes.
    pub fn len(&self) -> usize {
        self.packed.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }

    /// The `i`th change. Panics if `i >= len()`, like indexing a slice.
    pub fn get(&self, i: usize) -> Change {
        let p = self.packed[i];
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
        self.packed.last().map(|p| p.position)
    }

    /// Number of changes with `position <= t` (positions are non-decreasing).
    pub fn known_len(&self, t: u64) -> usize {
        self.packed.partition_point(|p| p.position <= t)
    }

    /// Appends a change. Fails (changing nothing) only if the log already holds `u32::MAX`
    /// changes with wide amounts before it, which no account reaches.
    pub(crate) fn push(&mut self, c: Change) -> Result<(), TooLong> {
        let posted = match narrow(&c.deltas) {
            Some(p) => p,
            None => {
                let i = u32::try_from(self.packed.len()).map_err(|_| TooLong)?;
                self.wide.push((i, c.deltas));
                WIDE
            }
        };
        self.packed.push(Packed {
            position: c.position,
            key: c.key,
            posted,
        });
        Ok(())
    }

    /// The changes in `range` (indexes), in order.
    pub fn range(&self, range: std::ops::Range<usize>) -> Changes<'_> {
        let start = range.start.min(range.end);
        let end = range.end.min(self.len());
        Changes {
            log: self,
            next: start,
            end,
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

    /// Reserves room for `additional` more changes.
    pub fn reserve(&mut self, additional: usize) {
        self.packed.reserve(additional);
    }

    /// Approximate heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.packed.capacity() * size_of::<Packed>()
            + self.wide.capacity() * size_of::<(u32, Deltas)>()
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
    /// Index in `log.wide` of the first wide change at or after `next`.
    wide: usize,
}

impl Iterator for Changes<'_> {
    type Item = Change;

    fn next(&mut self) -> Option<Change> {
        if self.next >= self.end {
            return None;
        }
        let p = self.log.packed[self.next];
        let deltas = if p.posted == WIDE {
            let d = self.log.wide[self.wide].1;
            self.wide += 1;
            d
        } else {
            Deltas::new(i128::from(p.posted), 0, 0)
        };
        self.next += 1;
        Some(Change {
            position: p.position,
            key: p.key,
            deltas,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end.saturating_sub(self.next);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Changes<'_> {}

/// Running sums (of a summary, or of a timeline chunk): `i64` posted amounts while every sum
/// is posted money within `i64` (nearly always), 8 bytes each instead of 48; otherwise full
/// [`Deltas`], for good once one is not. Either way `get(i)` is the same value.
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

    pub(crate) fn with_capacity(capacity: usize) -> Sums {
        Sums::Narrow(Vec::with_capacity(capacity))
    }

    pub(crate) fn capacity(&self) -> usize {
        match self {
            Sums::Narrow(v) => v.capacity(),
            Sums::Wide(v) => v.capacity(),
        }
    }

    pub(crate) fn last(&self) -> Option<Deltas> {
        match self {
            Sums::Narrow(v) => v.last().map(|&x| Deltas::new(i128::from(x), 0, 0)),
            Sums::Wide(v) => v.last().copied(),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Deltas> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// The wide form of these sums (a no-op when already wide); keeps the capacity.
    fn wide(&mut self) -> &mut Vec<Deltas> {
        if let Sums::Narrow(v) = self {
            let mut w = Vec::with_capacity(v.capacity());
            w.extend(v.iter().map(|&x| Deltas::new(i128::from(x), 0, 0)));
            *self = Sums::Wide(w);
        }
        match self {
            Sums::Wide(w) => w,
            Sums::Narrow(_) => unreachable!("just widened"),
        }
    }

    pub(crate) fn push(&mut self, d: Deltas) {
        match (&mut *self, narrow(&d)) {
            (Sums::Narrow(v), Some(x)) => v.push(x),
            _ => self.wide().push(d),
        }
    }

    pub(crate) fn insert(&mut self, i: usize, d: Deltas) {
        match (&mut *self, narrow(&d)) {
            (Sums::Narrow(v), Some(x)) => v.insert(i, x),
            _ => self.wide().insert(i, d),
        }
    }

    pub(crate) fn remove(&mut self, i: usize) {
        match self {
            Sums::Narrow(v) => {
                v.remove(i);
            }
            Sums::Wide(v) => {
                v.remove(i);
            }
        }
    }

    /// Adds `d` to every sum from `pos` on.
    pub(crate) fn shift_from(&mut self, pos: usize, d: Deltas) {
        if let (Sums::Narrow(v), Some(x)) = (&mut *self, narrow(&d)) {
            if v[pos..]
                .iter()
                .all(|c| c.checked_add(x).is_some_and(|s| s != WIDE))
            {
                for c in &mut v[pos..] {
                    *c += x;
                }
                return;
            }
        }
        for c in &mut self.wide()[pos..] {
            *c = c.plus(d);
        }
    }

    /// Splits off the sums from `at`, each less `base`.
    pub(crate) fn split_off(&mut self, at: usize, base: Deltas) -> Sums {
        let mut right = match self {
            Sums::Narrow(v) => Sums::Narrow(v.split_off(at)),
            Sums::Wide(v) => Sums::Wide(v.split_off(at)),
        };
        right.shift_from(0, Deltas::ZERO.minus(base));
        right
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        match self {
            Sums::Narrow(v) => v.shrink_to_fit(),
            Sums::Wide(v) => v.shrink_to_fit(),
        }
    }

    pub(crate) fn reserve_exact(&mut self, extra: usize) {
        match self {
            Sums::Narrow(v) => v.reserve_exact(extra),
            Sums::Wide(v) => v.reserve_exact(extra),
        }
    }

    /// Appends `right`'s sums, each plus `base`.
    pub(crate) fn extend_shifted(&mut self, right: &Sums, base: Deltas) {
        let from = self.len();
        match (&mut *self, right) {
            (Sums::Narrow(v), Sums::Narrow(r)) => v.extend_from_slice(r),
            _ => {
                let w = self.wide();
                w.extend(right.iter());
            }
        }
        self.shift_from(from, base);
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn deltas() -> impl Strategy<Value = Deltas> {
        prop_oneof![
            4 => (-1000i128..1000).prop_map(|p| Deltas::new(p, 0, 0)),
            1 => Just(Deltas::new(i128::from(i64::MIN), 0, 0)),
            1 => Just(Deltas::new(i128::from(i64::MAX), 0, 0)),
            1 => Just(Deltas::new(i128::from(i64::MAX) + 1, 0, 0)),
            1 => (-5i128..5, -5i128..5, -5i128..5).prop_map(|(a, b, c)| Deltas::new(a, b, c)),
        ]
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
            prop_assert_eq!(log.len(), plain.len());
            prop_assert_eq!(log.to_vec(), plain.clone());
            prop_assert_eq!(log.last(), plain.last().copied());
            for (i, c) in plain.iter().enumerate() {
                prop_assert_eq!(log.get(i), *c);
            }
            let (a, b) = (from.min(plain.len()), to.min(plain.len()));
            let want: Vec<Change> = if a <= b { plain[a..b].to_vec() } else { Vec::new() };
            prop_assert_eq!(log.range(from..to).collect::<Vec<_>>(), want);
            for t in 0..=position + 1 {
                prop_assert_eq!(log.known_len(t), plain.partition_point(|c| c.position <= t));
            }
            let sums = Sums::new(plain.iter().map(|c| c.deltas).collect());
            for (i, c) in plain.iter().enumerate() {
                prop_assert_eq!(sums.get(i), c.deltas);
            }
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
