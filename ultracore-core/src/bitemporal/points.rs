//! A timeline chunk's entries ([`Points`]): each key side by side with the running sum through
//! it, in one vector.
//!
//! An append to an account's timeline writes one key and one running sum. Kept in two vectors
//! (as they were until 2026-11-29), that is two heap blocks at two addresses, each a cache line
//! and a page to reach, and two vectors to grow; side by side it is one of each. A search over
//! the keys reads 24-byte (narrow) or 64-byte (wide) strides instead of 16-byte ones, which
//! costs a chunk's binary search (at most 9 steps) about one cache line more.

use super::log::narrow;
use super::timeline::{Deltas, TimelineKey};

/// The entries of a timeline chunk, in key order: each key with the running sum of the chunk's
/// values up to and including it. The sums are `i64` posted amounts while every one is posted
/// money within `i64` (nearly always: 24 bytes a point), otherwise full [`Deltas`] (64 bytes a
/// point), for good once one is not. Either way [`Points::cum`] is the same value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Points {
    Narrow(Vec<(TimelineKey, i64)>),
    Wide(Vec<(TimelineKey, Deltas)>),
}

// The sizes the module docs count on.
const _: () = assert!(size_of::<(TimelineKey, i64)>() == 24);
const _: () = assert!(size_of::<(TimelineKey, Deltas)>() == 64);

/// `$e` with `$v` bound to the vector of either form.
macro_rules! each {
    ($self:expr, $v:ident => $e:expr) => {
        match $self {
            Points::Narrow($v) => $e,
            Points::Wide($v) => $e,
        }
    };
}

/// A narrow running sum as a full value.
#[inline(always)]
fn widen(x: i64) -> Deltas {
    Deltas::new(i128::from(x), 0, 0)
}

/// Heap bytes a vector holds.
fn heap_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * size_of::<T>()
}

impl Points {
    /// Stores `points` narrowly when every sum fits.
    pub(crate) fn new(points: Vec<(TimelineKey, Deltas)>) -> Points {
        let narrowed: Option<Vec<(TimelineKey, i64)>> = points
            .iter()
            .map(|(k, d)| narrow(d).map(|x| (*k, x)))
            .collect();
        match narrowed {
            Some(n) => Points::Narrow(n),
            None => Points::Wide(points),
        }
    }

    pub(crate) fn with_capacity(capacity: usize) -> Points {
        Points::Narrow(Vec::with_capacity(capacity))
    }

    /// Reserves room for at least `additional` more points (as [`Vec::reserve`]).
    pub(crate) fn reserve(&mut self, additional: usize) {
        each!(self, v => v.reserve(additional));
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn capacity(&self) -> usize {
        each!(self, v => v.capacity())
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        each!(self, v => heap_bytes(v))
    }

    /// The `i`th key. Panics if `i >= len()`.
    #[inline]
    pub(crate) fn key(&self, i: usize) -> TimelineKey {
        each!(self, v => v[i].0)
    }

    /// The running sum through the `i`th point. Panics if `i >= len()`.
    #[inline]
    pub(crate) fn cum(&self, i: usize) -> Deltas {
        match self {
            Points::Narrow(v) => widen(v[i].1),
            Points::Wide(v) => v[i].1,
        }
    }

    #[inline]
    pub(crate) fn last_key(&self) -> Option<TimelineKey> {
        each!(self, v => v.last().map(|p| p.0))
    }

    #[inline]
    pub(crate) fn last_cum(&self) -> Option<Deltas> {
        match self {
            Points::Narrow(v) => v.last().map(|p| widen(p.1)),
            Points::Wide(v) => v.last().map(|p| p.1),
        }
    }

    /// The number of leading points whose key satisfies `pred` (which must hold for a prefix
    /// of the keys and not after it), as [`slice::partition_point`].
    #[inline]
    pub(crate) fn partition_point(&self, mut pred: impl FnMut(&TimelineKey) -> bool) -> usize {
        each!(self, v => v.partition_point(|p| pred(&p.0)))
    }

    /// Every (key, running sum), in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (TimelineKey, Deltas)> + '_ {
        (0..self.len()).map(|i| (self.key(i), self.cum(i)))
    }

    /// The wide form of these points (a no-op when already wide); keeps the capacity.
    fn wide(&mut self) -> &mut Vec<(TimelineKey, Deltas)> {
        if let Points::Narrow(v) = self {
            let mut w = Vec::with_capacity(v.capacity());
            w.extend(v.iter().map(|&(k, x)| (k, widen(x))));
            *self = Points::Wide(w);
        }
        match self {
            Points::Wide(w) => w,
            Points::Narrow(_) => unreachable!("just widened"),
        }
    }

    /// Appends the running sum `last + x` (`last` the last running sum, zero when there is
    /// none) if the points are narrow and it stays narrow, as [`Points::push`] of the same sum
    /// would, and returns it; otherwise changes nothing and returns `None`. Appending a
    /// posted-only change, the common case, thus takes no `i128` arithmetic.
    #[inline]
    pub(crate) fn push_narrow(&mut self, key: TimelineKey, x: i64) -> Option<i64> {
        let Points::Narrow(v) = self else {
            return None;
        };
        let last = v.last().map_or(0, |p| p.1);
        // `narrow` never gives `i64::MIN`, so a narrow running sum may not be it either.
        let cum = last.checked_add(x).filter(|&c| c != i64::MIN)?;
        v.push((key, cum));
        Some(cum)
    }

    #[inline]
    pub(crate) fn push(&mut self, key: TimelineKey, cum: Deltas) {
        match (&mut *self, narrow(&cum)) {
            (Points::Narrow(v), Some(x)) => v.push((key, x)),
            _ => self.wide().push((key, cum)),
        }
    }

    pub(crate) fn insert(&mut self, i: usize, key: TimelineKey, cum: Deltas) {
        match (&mut *self, narrow(&cum)) {
            (Points::Narrow(v), Some(x)) => v.insert(i, (key, x)),
            _ => self.wide().insert(i, (key, cum)),
        }
    }

    pub(crate) fn remove(&mut self, i: usize) {
        each!(self, v => {
            v.remove(i);
        })
    }

    /// Adds `d` to every running sum from point `pos` on.
    pub(crate) fn shift_from(&mut self, pos: usize, d: Deltas) {
        if let (Points::Narrow(v), Some(x)) = (&mut *self, narrow(&d)) {
            // `narrow` never gives `i64::MIN`, so a shifted sum may not be it either.
            let fits = |c: i64| c.checked_add(x).is_some_and(|s| s != i64::MIN);
            if v[pos..].iter().all(|p| fits(p.1)) {
                for p in &mut v[pos..] {
                    p.1 += x;
                }
                return;
            }
        }
        for p in &mut self.wide()[pos..] {
            p.1 = p.1.plus(d);
        }
    }

    /// Splits off the points from `at`, each running sum less `base`.
    pub(crate) fn split_off(&mut self, at: usize, base: Deltas) -> Points {
        let mut right = match self {
            Points::Narrow(v) => Points::Narrow(v.split_off(at)),
            Points::Wide(v) => Points::Wide(v.split_off(at)),
        };
        right.shift_from(0, Deltas::ZERO.minus(base));
        right
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        each!(self, v => v.shrink_to_fit())
    }

    pub(crate) fn reserve_exact(&mut self, extra: usize) {
        each!(self, v => v.reserve_exact(extra))
    }

    /// Appends `right`'s points (all keys greater than ours), each running sum plus `base`.
    pub(crate) fn extend_shifted(&mut self, right: &Points, base: Deltas) {
        let from = self.len();
        match (&mut *self, right) {
            (Points::Narrow(v), Points::Narrow(r)) => v.extend_from_slice(r),
            _ => {
                let w = self.wide();
                w.extend(right.iter());
            }
        }
        self.shift_from(from, base);
    }
}

/// Serialised as the sequence of (key, full [`Deltas`]) pairs, so the storage choice never
/// shows on the wire.
impl serde::Serialize for Points {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Points {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<(TimelineKey, Deltas)>::deserialize(d).map(Points::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitemporal::log::tests::deltas;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Push(Deltas),
        PushNarrow(i64),
        Insert(usize, Deltas),
        Remove(usize),
        Shift(usize, Deltas),
        SplitOff(usize, Deltas),
        Extend(Vec<Deltas>, Deltas),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => deltas().prop_map(Op::Push),
            2 => prop_oneof![any::<i64>(), -1000i64..1000].prop_map(Op::PushNarrow),
            2 => (any::<usize>(), deltas()).prop_map(|(i, d)| Op::Insert(i, d)),
            1 => any::<usize>().prop_map(Op::Remove),
            2 => (any::<usize>(), deltas()).prop_map(|(i, d)| Op::Shift(i, d)),
            1 => (any::<usize>(), deltas()).prop_map(|(i, d)| Op::SplitOff(i, d)),
            1 => (proptest::collection::vec(deltas(), 0..4), deltas())
                .prop_map(|(v, d)| Op::Extend(v, d)),
        ]
    }

    /// Any sum that stays within ±2^100 (so the plain model cannot overflow).
    fn small(d: &Deltas) -> bool {
        let ok = |x: i128| x.abs() < 1 << 100;
        ok(d.posted) && ok(d.pending_debit) && ok(d.pending_credit)
    }

    proptest! {
        /// Every operation leaves the points reading as a plain vector of (key, Deltas) would,
        /// narrow while every sum fits and wide once one did not.
        #[test]
        fn reads_as_plain_pairs(ops in proptest::collection::vec(op(), 0..60)) {
            let mut points = Points::with_capacity(0);
            let mut plain: Vec<(TimelineKey, Deltas)> = Vec::new();
            let mut next_key = 0u64;
            let key = |n: &mut u64| {
                *n += 1;
                (*n as i64, *n)
            };
            for op in ops {
                match op {
                    Op::Push(d) => {
                        let k = key(&mut next_key);
                        points.push(k, d);
                        plain.push((k, d));
                    }
                    Op::PushNarrow(x) => {
                        let k = key(&mut next_key);
                        let last = plain.last().map_or(Deltas::ZERO, |p| p.1);
                        let sum = last.posted.checked_add(i128::from(x)).map(|p| {
                            Deltas::new(p, last.pending_debit, last.pending_credit)
                        });
                        let got = points.push_narrow(k, x);
                        match sum.filter(|s| narrow(s).is_some()) {
                            Some(s) if matches!(points, Points::Narrow(_)) => {
                                prop_assert_eq!(got, narrow(&s));
                                plain.push((k, s));
                            }
                            _ => prop_assert_eq!(got, None),
                        }
                    }
                    Op::Insert(i, d) => {
                        let i = i % (plain.len() + 1);
                        let k = key(&mut next_key);
                        points.insert(i, k, d);
                        plain.insert(i, (k, d));
                    }
                    Op::Remove(i) => {
                        if !plain.is_empty() {
                            let i = i % plain.len();
                            points.remove(i);
                            plain.remove(i);
                        }
                    }
                    Op::Shift(i, d) => {
                        let i = i % (plain.len() + 1);
                        if plain[i..].iter().all(|p| small(&p.1.plus(d))) {
                            points.shift_from(i, d);
                            for p in &mut plain[i..] {
                                p.1 = p.1.plus(d);
                            }
                        }
                    }
                    Op::SplitOff(i, base) => {
                        let i = i % (plain.len() + 1);
                        if plain[i..].iter().all(|p| small(&p.1.minus(base))) {
                            let right = points.split_off(i, base);
                            let plain_right: Vec<_> = plain
                                .split_off(i)
                                .into_iter()
                                .map(|(k, c)| (k, c.minus(base)))
                                .collect();
                            prop_assert_eq!(right.iter().collect::<Vec<_>>(), plain_right);
                        }
                    }
                    Op::Extend(sums, base) => {
                        if sums.iter().all(|c| small(&c.plus(base))) {
                            let pairs: Vec<_> = sums.iter().map(|&c| (key(&mut next_key), c)).collect();
                            points.extend_shifted(&Points::new(pairs.clone()), base);
                            plain.extend(pairs.into_iter().map(|(k, c)| (k, c.plus(base))));
                        }
                    }
                }
                prop_assert_eq!(points.len(), plain.len());
                prop_assert_eq!(points.iter().collect::<Vec<_>>(), plain.clone());
                prop_assert_eq!(points.last_key(), plain.last().map(|p| p.0));
                prop_assert_eq!(points.last_cum(), plain.last().map(|p| p.1));
                if plain.iter().any(|p| narrow(&p.1).is_none()) {
                    prop_assert!(matches!(points, Points::Wide(_)));
                }
                prop_assert_eq!(points.partition_point(|k| k.1 <= next_key / 2),
                    plain.partition_point(|p| p.0 .1 <= next_key / 2));
            }
        }
    }

    #[test]
    fn narrow_until_a_sum_does_not_fit() {
        let mut p = Points::with_capacity(0);
        p.push((1, 1), Deltas::new(-3, 0, 0));
        assert!(matches!(p, Points::Narrow(_)));
        p.push((2, 2), Deltas::new(i128::from(i64::MAX) + 1, 0, 0));
        assert!(matches!(p, Points::Wide(_)));
        assert_eq!(p.cum(0), Deltas::new(-3, 0, 0));
        assert_eq!(p.key(1), (2, 2));
        // A sum equal to i64::MIN is kept wide, as everywhere narrow amounts are stored.
        assert!(matches!(
            Points::new(vec![((0, 0), Deltas::new(i128::from(i64::MIN), 0, 0))]),
            Points::Wide(_)
        ));
    }
}
