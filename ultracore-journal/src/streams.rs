//! The in-memory stream index: stream → positions of its events, keyed by a seeded 64-bit
//! hash of the stream's name, in 16-byte slots.
//!
//! Every ledger entry is a stream of its own, so this index holds millions of streams that
//! mostly have one event. A `HashMap<StreamId, Vec<u64>>` costs ~100 bytes and an allocation
//! per stream, and doubling it moves every entry at once (a pause of up to 0.8 s at 2 M
//! streams). Here:
//!
//! - a slot is `(hash, value)`: the value is the position of the stream's only event, or (top
//!   bit set) the index of its position list in `multi` (streams with two or more events);
//! - the table is split into [`SHARDS`] open-addressed (linear probing) shards chosen by the
//!   hash's top bits; each grows on its own, so a growth moves 1/256 of the index;
//! - names are not stored. The hash narrows the search to candidates; the caller confirms a
//!   candidate by comparing the name stored in the log at the stream's first position
//!   ([`StreamIndex::find`] takes that check as a closure). A collision therefore costs a
//!   read, never a wrong answer: two streams with the same hash simply occupy two slots,
//!   told apart by their first positions (unique per stream), which is also how the writer
//!   names a stream it has already resolved ([`StreamIndex::push`]).
//!
//! The hash is foldhash's quality hasher with a per-journal random seed (ids are chosen by
//! clients; a seed they cannot know keeps them from aiming at one probe chain).

use std::hash::BuildHasher;

/// Shards of the table (a power of two).
pub const SHARDS: usize = 256;
const SHARD_BITS: u32 = SHARDS.trailing_zeros();
/// Slots of a new shard (a power of two).
const SHARD_MIN: usize = 16;
/// The top bit of a value: the rest is an index into `multi`.
const MULTI: u64 = 1 << 63;

/// One slot: `hash == 0` is empty (stored hashes always have their low bit set).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub hash: u64,
    pub value: u64,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Shard {
    pub slots: Vec<Slot>,
    pub len: usize,
}

/// The positions of one stream, in version order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Positions<'a> {
    /// A stream with one event.
    One(u64),
    /// A stream with two or more.
    Many(&'a [u64]),
}

impl Positions<'_> {
    /// The stream's version (its number of events).
    pub fn version(&self) -> u64 {
        match self {
            Positions::One(_) => 1,
            Positions::Many(p) => p.len() as u64,
        }
    }

    /// The position of its first event (which identifies the stream).
    pub fn first(&self) -> u64 {
        match self {
            Positions::One(p) => *p,
            Positions::Many(p) => p[0],
        }
    }

    /// The positions from `from_version` (1-based), at most `limit`.
    pub fn range(&self, from_version: u64, limit: usize) -> Vec<u64> {
        let skip = from_version.saturating_sub(1) as usize;
        match self {
            Positions::One(p) => std::iter::once(*p).skip(skip).take(limit).collect(),
            Positions::Many(p) => p.iter().skip(skip).take(limit).copied().collect(),
        }
    }
}

/// Stream → positions (see the module doc).
#[derive(Clone, Debug)]
pub(crate) struct StreamIndex {
    seed: u64,
    /// Bits of the hash kept: all of them, except in tests that force collisions.
    mask: u64,
    shards: Vec<Shard>,
    multi: Vec<Vec<u64>>,
    streams: u64,
}

impl StreamIndex {
    /// An empty index for about `streams` streams (pre-sized so that filling it to that
    /// number never grows a shard). `mask` keeps only some bits of every hash (`!0` in
    /// production; tests pass a tiny mask so that different streams collide).
    pub fn new(seed: u64, mask: u64, streams: usize) -> StreamIndex {
        let per_shard = (streams / SHARDS) * 8 / 5 + 1;
        let cap = per_shard.next_power_of_two().max(SHARD_MIN);
        StreamIndex {
            seed,
            mask,
            shards: (0..SHARDS)
                .map(|_| Shard {
                    slots: vec![Slot::default(); cap],
                    len: 0,
                })
                .collect(),
            multi: Vec::new(),
            streams: 0,
        }
    }

    /// The seed of the hash.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The mask applied to every hash.
    pub fn mask(&self) -> u64 {
        self.mask
    }

    /// Streams indexed.
    #[allow(dead_code)] // tests, and the checkpoint
    pub fn streams(&self) -> u64 {
        self.streams
    }

    /// The stored hash of a stream name (the bytes of its text form).
    pub fn hash(&self, name: &[u8]) -> u64 {
        hash_with(self.seed, self.mask, name)
    }

    fn shard_of(hash: u64) -> usize {
        (hash.rotate_left(SHARD_BITS) as usize) & (SHARDS - 1)
    }

    fn start(hash: u64, slots: usize) -> usize {
        ((hash >> 1) as usize) & (slots - 1)
    }

    fn positions(&self, value: u64) -> Positions<'_> {
        if value & MULTI == 0 {
            Positions::One(value)
        } else {
            Positions::Many(&self.multi[(value & !MULTI) as usize])
        }
    }

    fn first_of(&self, value: u64) -> u64 {
        self.positions(value).first()
    }

    /// The stream with this hash whose first event `is_it` confirms (called with the first
    /// position of each candidate, in probe order, until one is confirmed).
    pub fn find<E>(
        &self,
        hash: u64,
        mut is_it: impl FnMut(u64) -> Result<bool, E>,
    ) -> Result<Option<Positions<'_>>, E> {
        let shard = &self.shards[Self::shard_of(hash)];
        let m = shard.slots.len() - 1;
        let mut i = Self::start(hash, shard.slots.len());
        loop {
            let s = shard.slots[i];
            if s.hash == 0 {
                return Ok(None);
            }
            if s.hash == hash && is_it(self.first_of(s.value))? {
                return Ok(Some(self.positions(s.value)));
            }
            i = (i + 1) & m;
        }
    }

    /// Records the event at `position` of the stream with this hash whose first event is at
    /// `first` (`first == position`: a new stream). The caller has established which stream
    /// it is (validation); this only files the position.
    ///
    /// # Panics
    /// If `first != position` and no stream with this hash starts at `first` (a caller bug).
    pub fn push(&mut self, hash: u64, first: u64, position: u64) {
        assert!(
            self.file(hash, first, position),
            "push to a stream that is not indexed"
        );
    }

    /// Files `position` under the stream with this hash that starts at `first` (a new stream
    /// if `first == position`); `false`, changing nothing, if no such stream is indexed.
    fn file(&mut self, hash: u64, first: u64, position: u64) -> bool {
        if first == position {
            self.insert_new(hash, position);
            return true;
        }
        let shard_idx = Self::shard_of(hash);
        let m = self.shards[shard_idx].slots.len() - 1;
        let mut i = Self::start(hash, m + 1);
        loop {
            let s = self.shards[shard_idx].slots[i];
            if s.hash == 0 {
                return false;
            }
            if s.hash == hash && self.first_of(s.value) == first {
                if s.value & MULTI == 0 {
                    let idx = self.multi.len() as u64;
                    self.multi.push(vec![s.value, position]);
                    self.shards[shard_idx].slots[i].value = MULTI | idx;
                } else {
                    self.multi[(s.value & !MULTI) as usize].push(position);
                }
                return true;
            }
            i = (i + 1) & m;
        }
    }

    /// [`StreamIndex::push`] for keys read from a file (a checkpoint link, whose events follow
    /// every indexed one): refuses, instead of panicking, a key that cannot be right: a hash
    /// this index could not have stored, a stream start that is not before the position, or
    /// one that is not indexed.
    pub fn try_push(&mut self, hash: u64, first: u64, position: u64) -> Result<(), String> {
        if hash & 1 == 0 || hash & !(self.mask | 1) != 0 {
            return Err(format!("bad stream hash at position {position}"));
        }
        if position & MULTI != 0 || first == 0 || first > position {
            return Err(format!("bad position {position} (stream from {first})"));
        }
        if !self.file(hash, first, position) {
            return Err(format!(
                "position {position}: no stream starting at {first} with that hash"
            ));
        }
        Ok(())
    }

    fn insert_new(&mut self, hash: u64, position: u64) {
        debug_assert!(position & MULTI == 0);
        let shard = &mut self.shards[Self::shard_of(hash)];
        // Grow at 5/8 full: a miss (a new stream, the common case) then probes ~3 slots.
        if (shard.len + 1) * 8 > shard.slots.len() * 5 {
            let grown = vec![Slot::default(); 2 * shard.slots.len()];
            let old = std::mem::replace(&mut shard.slots, grown);
            for s in old.into_iter().filter(|s| s.hash != 0) {
                place(&mut shard.slots, s);
            }
        }
        place(
            &mut shard.slots,
            Slot {
                hash,
                value: position,
            },
        );
        shard.len += 1;
        self.streams += 1;
    }

    /// The raw parts, for the checkpoint.
    #[allow(dead_code)]
    pub fn parts(&self) -> (&[Shard], &[Vec<u64>]) {
        (&self.shards, &self.multi)
    }

    #[allow(dead_code)]
    /// Rebuilds from raw parts (a checkpoint), checking what a damaged checkpoint could break:
    /// shard sizes, slot counts, and that every value points at a list that exists.
    pub fn from_parts(
        seed: u64,
        mask: u64,
        shards: Vec<Shard>,
        multi: Vec<Vec<u64>>,
    ) -> Result<StreamIndex, String> {
        if shards.len() != SHARDS {
            return Err("wrong shard count".into());
        }
        let mut streams = 0;
        for (k, sh) in shards.iter().enumerate() {
            let n = sh.slots.len();
            if !n.is_power_of_two() || n < SHARD_MIN {
                return Err("shard size".into());
            }
            let used = sh.slots.iter().filter(|s| s.hash != 0).count();
            if used != sh.len || used * 8 > n * 5 {
                return Err("shard fill".into());
            }
            for s in sh.slots.iter().filter(|s| s.hash != 0) {
                if Self::shard_of(s.hash) != k || s.hash & 1 == 0 {
                    return Err("slot in the wrong shard".into());
                }
                if s.value & MULTI != 0 {
                    let l = multi.get((s.value & !MULTI) as usize);
                    if l.is_none_or(|l| l.len() < 2) {
                        return Err("dangling position list".into());
                    }
                } else if s.value == 0 {
                    return Err("position 0".into());
                }
            }
            streams += used as u64;
        }
        Ok(StreamIndex {
            seed,
            mask,
            shards,
            multi,
            streams,
        })
    }
}

fn place(slots: &mut [Slot], s: Slot) {
    let m = slots.len() - 1;
    let mut i = StreamIndex::start(s.hash, slots.len());
    while slots[i].hash != 0 {
        i = (i + 1) & m;
    }
    slots[i] = s;
}

/// The stored hash of `name` under `seed`: never 0 (the low bit is set).
pub(crate) fn hash_with(seed: u64, mask: u64, name: &[u8]) -> u64 {
    let h = foldhash::quality::FixedState::with_seed(seed).hash_one(name);
    (h & mask) | 1
}

/// A fresh random seed (from the std hasher's per-process random keys and the clock).
pub(crate) fn random_seed() -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Streams named by numbers; the "log" maps each first position to its name.
    struct Model {
        idx: StreamIndex,
        names: HashMap<u64, String>,
        truth: HashMap<String, Vec<u64>>,
        position: u64,
    }

    impl Model {
        fn new(mask: u64, presize: usize) -> Model {
            Model {
                idx: StreamIndex::new(42, mask, presize),
                names: HashMap::new(),
                truth: HashMap::new(),
                position: 0,
            }
        }

        fn lookup(&self, name: &str) -> Option<Vec<u64>> {
            let h = self.idx.hash(name.as_bytes());
            self.idx
                .find(h, |first| Ok::<_, ()>(self.names[&first] == name))
                .expect("no io")
                .map(|p| p.range(1, usize::MAX))
        }

        fn append(&mut self, name: &str) {
            self.position += 1;
            let p = self.position;
            let h = self.idx.hash(name.as_bytes());
            let first = match self.lookup(name) {
                Some(ps) => ps[0],
                None => {
                    self.names.insert(p, name.to_string());
                    p
                }
            };
            self.idx.push(h, first, p);
            self.truth.entry(name.to_string()).or_default().push(p);
        }

        fn check(&self) {
            for (name, ps) in &self.truth {
                assert_eq!(self.lookup(name).as_ref(), Some(ps), "{name}");
            }
            assert_eq!(self.lookup("never-written"), None);
            assert_eq!(self.idx.streams(), self.truth.len() as u64);
        }
    }

    fn workload(m: &mut Model, n: u64) {
        let mut x = 7u64;
        for i in 0..n {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Mostly new streams, some appends to earlier ones.
            let name = if x >> 61 == 0 && i > 0 {
                format!("s{}", (x >> 20) % i)
            } else {
                format!("s{i}")
            };
            m.append(&name);
        }
    }

    #[test]
    fn finds_every_stream_with_full_hashes_while_growing() {
        let mut m = Model::new(!0, 0);
        workload(&mut m, 20_000);
        m.check();
    }

    #[test]
    fn a_tiny_hash_makes_everything_collide_and_answers_stay_exact() {
        // Two bits of hash: 4 distinct values for hundreds of streams, so almost every
        // lookup meets candidates of other streams and must confirm by name.
        for mask in [0, 0b11, 0xff] {
            let mut m = Model::new(mask, 0);
            workload(&mut m, 600);
            m.check();
        }
    }

    #[test]
    fn parts_round_trip_and_damage_is_refused() {
        let mut m = Model::new(!0, 1000);
        workload(&mut m, 3_000);
        let (shards, multi) = m.idx.parts();
        let back = StreamIndex::from_parts(42, !0, shards.to_vec(), multi.to_vec()).expect("valid");
        let m2 = Model {
            idx: back,
            names: m.names.clone(),
            truth: m.truth.clone(),
            position: m.position,
        };
        m2.check();
        let mut bad = shards.to_vec();
        let k = bad.iter().position(|s| s.len > 0).expect("some shard used");
        bad[k].len += 1;
        assert!(StreamIndex::from_parts(42, !0, bad, multi.to_vec()).is_err());
        let mut bad = shards.to_vec();
        let k = bad.iter().position(|s| s.len > 0).expect("some shard used");
        let j = bad[k].slots.iter().position(|s| s.hash != 0).expect("used");
        bad[k].slots[j].value = MULTI | 1_000_000;
        assert!(StreamIndex::from_parts(42, !0, bad, multi.to_vec()).is_err());
    }
}
