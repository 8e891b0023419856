//! A hash table of `u32` values in cache-line buckets ([`LineTable`]), for the entry-id index.
//!
//! Each bucket is one 64-byte line: twelve one-byte tags (seven bits of the hash, the high bit
//! set in a used slot) and the twelve values. A lookup reads the home bucket's line, and
//! inserting a new id writes to that same line, which the lookup has just brought into the
//! cache. In hashbrown's layout (a control-byte array apart from the slots) an insert wrote a
//! second, random line that no lookup had read: with many entries a cache miss on every
//! posting, paid after the ledger's warming had fetched everything else
//! (docs/BENCHMARKS.md, 2026-11-29, "The entry-id index in cache-line buckets").
//!
//! Values are never removed, so a bucket fills from its first slot on, and a key is in its
//! home bucket or, when that was full as it was inserted, in one of the full buckets after it:
//! a lookup stops at the first bucket that is not full. At most [`LOAD`] values a bucket on
//! average, so full buckets (and lookups of more than one line) are rare.

/// Slots in a bucket.
const SLOTS: usize = 12;

/// The most values a table holds per bucket before it doubles: three quarters full.
const LOAD: usize = 9;

/// One cache line: [`SLOTS`] tags (then 4 zero bytes) and their values. A tag is 0 in an empty
/// slot, and has its high bit set in a used one.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct Bucket {
    tags: [u8; 16],
    values: [u32; SLOTS],
}

const _: () = assert!(size_of::<Bucket>() == 64);

/// Bytes of `x` that are zero: the high bit of each such byte set, every other bit clear.
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    const LOW7: u64 = u64::from_le_bytes([0x7f; 8]);
    !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
}

/// The high bits of the bytes of `x` (as [`zero_bytes`] gives them) as bit `i` for byte `i`.
#[inline(always)]
fn byte_bits(x: u64) -> u32 {
    // Each byte's high bit, moved down to the byte's low bit, then gathered into the top
    // byte by one multiplication (no two partial products meet in the same bit).
    ((x >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
}

/// The bucket where a lookup of `hash` starts, among `n`: the low 32 bits of the hash scaled
/// to `n` (a multiplication, so `n` need not be a power of two, and a table takes the
/// buckets it needs; the tag and the entry index's shard come from the high bits).
#[inline(always)]
fn home(hash: u64, n: usize) -> usize {
    ((u64::from(hash as u32) * n as u64) >> 32) as usize
}

/// The bucket after `b`, among `n`.
#[inline(always)]
fn next(b: usize, n: usize) -> usize {
    if b + 1 == n {
        0
    } else {
        b + 1
    }
}

/// The tag of `hash`: its top seven bits, with the high bit set (so never 0).
#[inline(always)]
fn tag(hash: u64) -> u8 {
    (hash >> 57) as u8 | 0x80
}

impl Bucket {
    /// Slots whose tag is `tag`, as bits (bit `i` for slot `i`).
    #[inline(always)]
    fn matching(&self, tag: u8) -> u32 {
        let (low, high) = self.words();
        let t = u64::from_le_bytes([tag; 8]);
        byte_bits(zero_bytes(low ^ t)) | byte_bits(zero_bytes(high ^ t)) << 8
    }

    /// The first empty slot, or [`SLOTS`] if the bucket is full.
    #[inline(always)]
    fn first_free(&self) -> usize {
        let (low, high) = self.words();
        let free = byte_bits(zero_bytes(low)) | byte_bits(zero_bytes(high)) << 8;
        // The high word's top 4 bytes are zero, so there is a bit at `SLOTS` or below.
        free.trailing_zeros() as usize
    }

    /// The tags, as the first 8 and the next 4 (in the low half of the second word).
    #[inline(always)]
    fn words(&self) -> (u64, u64) {
        let [a, b, c, d, e, f, g, h, i, j, k, l, ..] = self.tags;
        (
            u64::from_le_bytes([a, b, c, d, e, f, g, h]),
            u64::from(u32::from_le_bytes([i, j, k, l])),
        )
    }
}

/// A hash table of `u32` values whose keys live elsewhere: the caller hashes a key and says
/// whether a value's key is the one it looks for (as hashbrown's `HashTable`, whose role it
/// took in the entry-id index). Values cannot be removed.
#[derive(Clone, Debug, Default)]
pub(crate) struct LineTable {
    /// The buckets (any number of them; none before the first value).
    buckets: Vec<Bucket>,
    len: usize,
}

impl LineTable {
    /// An empty table (no allocation).
    pub(crate) fn new() -> LineTable {
        LineTable::default()
    }

    /// Values held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes held.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * size_of::<Bucket>()
    }

    /// The value whose key hashes to `hash` and for which `eq` says yes.
    #[inline]
    pub(crate) fn find(&self, hash: u64, eq: impl FnMut(u32) -> bool) -> Option<u32> {
        match self.buckets.len() {
            0 => None,
            _ => self.probe(hash, eq).ok(),
        }
    }

    /// A lookup in a table with buckets: the value found, or the bucket the lookup stopped
    /// at (the first one that is not full, where the value would go).
    #[inline(always)]
    fn probe(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Result<u32, usize> {
        let n = self.buckets.len();
        let tag = tag(hash);
        let mut b = home(hash, n);
        loop {
            let bucket = &self.buckets[b];
            let mut m = bucket.matching(tag);
            while m != 0 {
                let v = bucket.values[m.trailing_zeros() as usize];
                if eq(v) {
                    return Ok(v);
                }
                m &= m - 1;
            }
            if bucket.tags[SLOTS - 1] == 0 {
                return Err(b);
            }
            // The table is never full (at most `LOAD` of `SLOTS` a bucket), so this ends.
            b = next(b, n);
        }
    }

    /// Reads the line of the bucket where a lookup of `hash` starts; returns something
    /// derived from it. Changes nothing: it brings the line into the cache ahead of a lookup
    /// or an insert.
    #[inline]
    pub(crate) fn touch(&self, hash: u64) -> u64 {
        match self.buckets.len() {
            0 => 0,
            n => u64::from(self.buckets[home(hash, n)].tags[0]),
        }
    }

    /// Adds `value`, whose key hashes to `hash`, unless a value for which `eq` says yes is
    /// there: then returns that one and adds nothing. One pass: the bucket a lookup stops at
    /// is the one the value goes to. `rehash` gives the hash of a value already held, to move
    /// it when the table grows.
    #[inline]
    pub(crate) fn insert_if_absent(
        &mut self,
        hash: u64,
        value: u32,
        eq: impl FnMut(u32) -> bool,
        rehash: impl Fn(u32) -> u64,
    ) -> Result<(), u32> {
        self.reserve(1, rehash);
        let b = match self.probe(hash, eq) {
            Ok(held) => return Err(held),
            Err(b) => b,
        };
        let bucket = &mut self.buckets[b];
        let free = bucket.first_free();
        bucket.tags[free] = tag(hash);
        bucket.values[free] = value;
        self.len += 1;
        Ok(())
    }

    /// Makes room for `additional` more values without growing; `rehash` as for
    /// [`LineTable::insert_if_absent`].
    #[inline]
    pub(crate) fn reserve(&mut self, additional: usize, rehash: impl Fn(u32) -> u64) {
        let need = self.len.saturating_add(additional);
        if need > self.buckets.len() * LOAD {
            self.grow(need, rehash);
        }
    }

    /// Moves the values to enough buckets for `need` values: twice as many as now, or more
    /// if `need` asks for more (a reservation gets what it asks for, growth one value at a
    /// time doubles).
    #[cold]
    #[inline(never)]
    fn grow(&mut self, need: usize, rehash: impl Fn(u32) -> u64) {
        let n = need.div_ceil(LOAD).max(self.buckets.len() * 2);
        assert!(u32::try_from(n).is_ok(), "more than 2^32 buckets");
        let old = std::mem::replace(&mut self.buckets, vec![Bucket::default(); n]);
        for bucket in &old {
            for (&t, &v) in bucket.tags[..SLOTS].iter().zip(&bucket.values) {
                if t == 0 {
                    break;
                }
                let hash = rehash(v);
                let mut b = home(hash, n);
                loop {
                    let into = &mut self.buckets[b];
                    let free = into.first_free();
                    if free < SLOTS {
                        into.tags[free] = tag(hash);
                        into.values[free] = v;
                        break;
                    }
                    b = next(b, n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A hash with few distinct values in its low bits and tag, so buckets fill, overflow
    /// into the next ones and tags collide.
    fn crowded(key: u64) -> u64 {
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h & 0x3) | (h & (0x3 << 57))
    }

    proptest! {
        /// `matching` and `first_free` against plain loops over the tags.
        #[test]
        fn tag_masks_match_a_plain_loop(
            used in 0usize..=SLOTS,
            tags in proptest::array::uniform12(0x80u8..=0xff),
            probe in 0x80u8..=0xff,
        ) {
            let mut b = Bucket::default();
            b.tags[..used].copy_from_slice(&tags[..used]);
            let expected = (0..SLOTS).filter(|&i| i < used && tags[i] == probe).fold(0, |m, i| m | 1 << i);
            prop_assert_eq!(b.matching(probe), expected);
            prop_assert_eq!(b.first_free(), used);
        }
    }

    proptest! {
        /// Against a `HashMap`: every key inserted once is found with its value, a key
        /// inserted again is refused with the value it has, an absent key is not found;
        /// with hashes good and crowded, and across growth.
        #[test]
        fn behaves_as_a_map(
            keys in proptest::collection::vec(0u64..5_000, 0..2_000),
            crowd in any::<bool>(),
            room in 0usize..500,
        ) {
            let hash = |k: u64| {
                if crowd {
                    crowded(k)
                } else {
                    k.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                }
            };
            // Values are indexes into `by_value`, which holds the keys (as the ledger's
            // entries hold the ids).
            let mut by_value: Vec<u64> = Vec::new();
            let mut t = LineTable::new();
            t.reserve(room, |v| hash(by_value[v as usize]));
            let mut model: HashMap<u64, u32> = HashMap::new();
            for &k in &keys {
                let value = by_value.len() as u32;
                let got = t.insert_if_absent(
                    hash(k),
                    value,
                    |v| by_value[v as usize] == k,
                    |v| hash(by_value[v as usize]),
                );
                match model.get(&k) {
                    Some(&v) => prop_assert_eq!(got, Err(v)),
                    None => {
                        prop_assert_eq!(got, Ok(()));
                        model.insert(k, value);
                        by_value.push(k);
                    }
                }
                prop_assert_eq!(t.len(), model.len());
            }
            for k in 0u64..5_100 {
                let found = t.find(hash(k), |v| by_value[v as usize] == k);
                prop_assert_eq!(found, model.get(&k).copied());
            }
            // Room for all, and no more than twice what the most ever asked for needs.
            let buckets = t.heap_bytes() / 64;
            prop_assert!(buckets * LOAD >= model.len());
            let asked = room.max(model.len() + 1);
            prop_assert!(buckets <= 2 * asked.div_ceil(LOAD));
        }
    }
}
