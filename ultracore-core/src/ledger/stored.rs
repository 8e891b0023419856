//! The form in which the ledger stores each entry: [`StoredEntry`], 56 bytes inline, with no
//! allocation of its own for a plain transfer (the common case by far): its id lies in the
//! ledger's [`IdArena`], its postings are two account indexes and an amount. Every other shape
//! keeps the full [`Entry`] in a boxed cold part. The public [`Entry`] is the view that queries
//! return, materialised from this form on demand ([`Ledger::entry_record`]).
//!
//! Why: with the full `Entry` inline (320 bytes) plus its shared postings (~150 bytes), the
//! state of a transfer was ~1.1–1.3 KB, and decide + apply, replay and snapshot decoding spent
//! much of their time faulting in fresh memory for it.

use std::borrow::Cow;
use std::sync::Arc;

use crate::bitemporal::timeline::{Deltas, TimelineKey};
use crate::ids::{AccountId, EntryId};
use crate::money::{Amount, Currency};
use crate::time::{EffectiveAt, RecordedAt, Timestamp};

use super::lines::LineTable;
use super::model::{Direction, Entry, EntryKind, Metadata, Posting};
use super::{IdMap, Ledger};

/// Account id → index in [`Ledger::accounts`]. An id of up to 23 bytes (nearly every one) is
/// filed as its length and three words read from its bytes ([`short_key`]), in the table's
/// own 32-byte slot, so a lookup reads the id with a few loads, hashes two 128-bit values and
/// compares three words and a length: no pointer to follow (with many accounts that pointer
/// was a cache miss on every lookup, a tenth of a transfer's time), no string hashing, no
/// call to `memcmp`. A longer id goes to a table of its own.
///
/// The slot also names the account's currency (which never changes), as a number into
/// [`AccountIndex::currencies`], the ledger's distinct currencies (a few, in cache): replay's
/// test of a plain transfer reads it from the slot it has just found, instead of waiting on a
/// second read whose address depends on the first (the account's record). The number
/// is 2 bytes so that a slot stays 32 bytes (with the currency itself, 40-byte slots made
/// decide + apply 5 % slower).
#[derive(Clone)]
pub(crate) struct AccountIndex {
    short: hashbrown::HashTable<Slot>,
    /// Ids longer than [`SHORT_KEY_LEN_MAX`].
    long: IdMap<AccountId, Slot>,
    hasher: foldhash::fast::FixedState,
    /// The currencies of the accounts filed, each once, in the order first filed (at most
    /// `NO_CURRENCY_NUMBER` of them).
    currencies: Vec<Currency>,
    /// Each currency's index in `currencies`.
    numbers: IdMap<Currency, u16>,
}

impl std::fmt::Debug for AccountIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountIndex")
            .field("len", &(self.short.len() + self.long.len()))
            .field("currencies", &self.currencies)
            .finish()
    }
}

// A slot holds a short id and its place in 32 bytes, as an inline id and an index did.
const _: () = assert!(size_of::<Slot>() == 32);

/// The longest id [`short_key`] takes.
const SHORT_KEY_LEN_MAX: usize = 23;

/// An id of 1 to [`SHORT_KEY_LEN_MAX`] bytes as three words and its length, read with
/// overlapping loads (no copy into a buffer): bytes `0..4` and `len-4..len` for 4 to 7 bytes,
/// `0..8` and `len-8..len` for 8 to 16, `0..8`, `8..16` and `len-8..len` for 17 to 23, and the
/// first, middle and last byte for 1 to 3. Every byte of the id is in some load, so with the
/// length the words determine the id: two ids have equal keys exactly when they are equal.
/// `None` for a longer (or empty) id.
#[inline]
fn short_key(id: &str) -> Option<([u64; 3], u8)> {
    let b = id.as_bytes();
    let n = b.len();
    let u64_at = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let u32_at = |i: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&b[i..i + 4]);
        u64::from(u32::from_le_bytes(w))
    };
    let words = match n {
        17..=SHORT_KEY_LEN_MAX => [u64_at(0), u64_at(8), u64_at(n - 8)],
        8..=16 => [u64_at(0), u64_at(n - 8), 0],
        4..=7 => [u32_at(0) | u32_at(n - 4) << 32, 0, 0],
        1..=3 => [
            u64::from(b[0]) | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]) << 16,
            0,
            0,
        ],
        _ => return None,
    };
    Some((words, n as u8))
}

/// The hash of a short id's key.
#[inline]
fn short_hash(hasher: &foldhash::fast::FixedState, words: &[u64; 3], len: u8) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = hasher.build_hasher();
    h.write_u128(u128::from(words[0]) | u128::from(words[1]) << 64);
    h.write_u128(u128::from(words[2]) | u128::from(len) << 64);
    h.finish()
}

/// An account's place in an [`AccountIndex`], with its id's key when the id is short.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// [`short_key`]'s words (zero in the table of long ids).
    words: [u64; 3],
    ix: u32,
    /// Index in [`AccountIndex::currencies`], or [`NO_CURRENCY_NUMBER`].
    currency: u16,
    /// [`short_key`]'s length (zero in the table of long ids).
    len: u8,
}

/// An account id's key and hash ([`AccountIndex::probe`]); `len` 0 for an id too long for a
/// short key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Probe {
    words: [u64; 3],
    len: u8,
    hash: u64,
}

/// [`Slot::currency`] of an account whose currency came after `u16::MAX` others (never, in
/// practice): its currency is then looked up by account index.
const NO_CURRENCY_NUMBER: u16 = u16::MAX;

impl AccountIndex {
    pub(crate) fn new(hasher: foldhash::fast::FixedState) -> AccountIndex {
        AccountIndex {
            short: hashbrown::HashTable::new(),
            long: IdMap::with_hasher(hasher.clone()),
            hasher: hasher.clone(),
            currencies: Vec::new(),
            numbers: IdMap::with_hasher(hasher),
        }
    }

    #[inline]
    fn slot(&self, id: &AccountId) -> Option<&Slot> {
        let id = id.as_str();
        match short_key(id) {
            Some((words, len)) => self.short.find(short_hash(&self.hasher, &words, len), |s| {
                s.words == words && s.len == len
            }),
            None => self.long.get(id),
        }
    }

    pub(crate) fn get(&self, id: &AccountId) -> Option<&u32> {
        self.slot(id).map(|s| &s.ix)
    }

    /// The first half of a lookup of `id`: its key and hash, computed without reading the
    /// table. [`Ledger::warm`] computes these for a whole window first, so that the probes
    /// that follow ([`AccountIndex::get_probed`]) are short and their cache misses overlap.
    #[inline]
    pub(crate) fn probe(&self, id: &AccountId) -> Probe {
        match short_key(id.as_str()) {
            Some((words, len)) => Probe {
                words,
                len,
                hash: short_hash(&self.hasher, &words, len),
            },
            None => Probe {
                words: [0; 3],
                len: 0,
                hash: 0,
            },
        }
    }

    /// The second half of a lookup: the index of `id`, whose [`AccountIndex::probe`] is
    /// `probe`.
    #[inline]
    pub(crate) fn get_probed(&self, probe: &Probe, id: &AccountId) -> Option<u32> {
        debug_assert_eq!(*probe, self.probe(id));
        // `slot`'s lookup, in two halves. `slot` keeps its own one-piece copy: routed through
        // a `Probe`, replay's lookups took 10 more instructions each (callgrind).
        match probe.len {
            0 => self.long.get(id.as_str()).map(|s| s.ix),
            len => self
                .short
                .find(probe.hash, |s| s.words == probe.words && s.len == len)
                .map(|s| s.ix),
        }
    }

    /// The account's index and, unless its currency came after `u16::MAX` others, its
    /// currency.
    pub(crate) fn get_with_currency(&self, id: &AccountId) -> Option<(u32, Option<Currency>)> {
        let s = self.slot(id)?;
        Some((s.ix, self.currencies.get(usize::from(s.currency)).copied()))
    }

    pub(crate) fn contains_key(&self, id: &AccountId) -> bool {
        self.slot(id).is_some()
    }

    /// Files `id` at `ix` (an account in `currency`); returns the index it had, if it had one
    /// (and keeps that one).
    pub(crate) fn insert(&mut self, id: &AccountId, ix: u32, currency: Currency) -> Option<u32> {
        if let Some(s) = self.slot(id) {
            return Some(s.ix);
        }
        let number = match self.numbers.get(&currency) {
            Some(&n) => n,
            None => match u16::try_from(self.currencies.len()) {
                Ok(n) if n != NO_CURRENCY_NUMBER => {
                    self.currencies.push(currency);
                    self.numbers.insert(currency, n);
                    n
                }
                _ => NO_CURRENCY_NUMBER,
            },
        };
        let mut slot = Slot {
            words: [0; 3],
            ix,
            currency: number,
            len: 0,
        };
        match short_key(id.as_str()) {
            Some((words, len)) => {
                (slot.words, slot.len) = (words, len);
                let hasher = &self.hasher;
                self.short
                    .insert_unique(short_hash(hasher, &words, len), slot, |s: &Slot| {
                        short_hash(hasher, &s.words, s.len)
                    });
            }
            None => {
                self.long.insert(id.clone(), slot);
            }
        }
        None
    }
}

impl std::ops::Index<&AccountId> for AccountIndex {
    type Output = u32;
    fn index(&self, id: &AccountId) -> &u32 {
        self.get(id).expect("the account is in the index")
    }
}

/// One journal entry as the ledger stores it.
///
/// Hot form (`cold` is `None`): a plain transfer, i.e. a posted entry with no metadata, one
/// version, never reversed, stream version 1, and exactly two postings, a debit then a credit
/// of the same amount in the accounts' currency, that fits in an `i64` of minor units. Its
/// postings are two account indexes (the account gives the id and the currency) and the
/// amount; its transaction time is its position's (`Ledger::positions`).
///
/// Cold form: anything else keeps the full [`Entry`] in `cold`; the hot fields other than `id`
/// and `fingerprint` are then unused. An entry is cold exactly when it is not a plain transfer
/// (see [`compact_transfer`]): apply and snapshot decoding choose the same form for the same
/// entry, and an entry only moves from hot to cold (when it is reversed or corrected), never
/// back, so two ledgers with the same history hold equal `StoredEntry`s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredEntry {
    /// Client-chosen id, in `Ledger::ids`.
    pub(crate) id: IdRef,
    /// Fingerprint of the request that created it (idempotency).
    pub(crate) fingerprint: u64,
    /// Valid time (hot form).
    effective_at: EffectiveAt,
    /// Log position that recorded it (hot form).
    position: u64,
    /// The transfer (hot form).
    transfer: Transfer,
    /// The full entry (cold form).
    cold: Option<Box<Entry>>,
}

// The size the module docs and docs/ARCHITECTURE.md count on.
const _: () = assert!(std::mem::size_of::<StoredEntry>() <= 56);

/// Where an entry's id lies in an [`IdArena`]: its offset (the low 56 bits) and its length (the
/// high 8 bits; ids are at most `ID_LEN_MAX` = 64 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IdRef(u64);

const _: () = assert!(crate::limits::ID_LEN_MAX <= u8::MAX as usize);

impl IdRef {
    const OFFSET_BITS: u32 = 56;

    /// The same id in an arena that has `base` more bytes before it.
    pub(crate) fn shifted(self, base: usize) -> IdRef {
        IdRef(self.0 + base as u64)
    }

    fn range(self) -> std::ops::Range<usize> {
        let start = (self.0 & ((1 << Self::OFFSET_BITS) - 1)) as usize;
        start..start + (self.0 >> Self::OFFSET_BITS) as usize
    }
}

/// The ids of the entries, back to back in recording order: one growing buffer instead of an
/// allocation per entry (~48 bytes from `malloc` for a short id, and a `malloc` and `free`
/// each). Only valid ids (checked when they entered) are pushed, so every [`IdRef`] handed
/// out names a valid id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IdArena(String);

impl IdArena {
    /// Appends a valid id; returns where it lies.
    pub(crate) fn push(&mut self, id: &str) -> IdRef {
        debug_assert!(crate::ids::validate(id).is_ok());
        let offset = self.0.len() as u64;
        assert!(offset < 1 << IdRef::OFFSET_BITS, "64 PiB of ids");
        self.0.push_str(id);
        IdRef(offset | (id.len() as u64) << IdRef::OFFSET_BITS)
    }

    /// The id `r` names (`r` came from this arena).
    pub(crate) fn get(&self, r: IdRef) -> &str {
        &self.0[r.range()]
    }

    /// Appends another arena; its refs must be [`IdRef::shifted`] by the length before.
    pub(crate) fn append(&mut self, other: &IdArena) {
        self.0.push_str(&other.0);
    }

    /// Makes room for `bytes` more bytes of ids.
    pub(crate) fn reserve(&mut self, bytes: usize) {
        self.0.reserve(bytes);
    }

    /// Its length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Drops the ids pushed since its length was `len`.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }
}

/// A plain transfer's postings: `minor` units from account `debit` to account `credit`
/// (indexes into `Ledger::accounts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Transfer {
    pub(crate) debit: u32,
    pub(crate) credit: u32,
    pub(crate) minor: i64,
}

impl Transfer {
    /// Its two balance-index changes at `key`, debit then credit: what
    /// `Ledger::posting_changes` computes for its postings when the accounts differ.
    /// An array, which the caller borrows where it is built (a 176-byte [`super::Changes`]
    /// would be moved to it by `memcpy`).
    pub(crate) fn changes(&self, key: TimelineKey) -> [(u32, TimelineKey, Deltas); 2] {
        // `minor` fits an i64, so its negation fits an i128.
        let posted = |p: i128| Deltas {
            posted: p,
            ..Deltas::ZERO
        };
        let m = i128::from(self.minor);
        [(self.debit, key, posted(-m)), (self.credit, key, posted(m))]
    }
}

/// The compact form of a plain posted entry's postings, if it has one: exactly two postings,
/// a debit then a credit, of the same amount, in the currency of their accounts, fitting an
/// `i64`. `ixs[i]` must be the account index of `postings[i]`. The caller checks the rest of
/// "plain" (kind posted, no metadata, one version, stream version 1).
pub(crate) fn compact_transfer(
    postings: &[Posting],
    ixs: [u32; 2],
    currency: impl Fn(u32) -> Option<Currency>,
) -> Option<Transfer> {
    compact_transfer_in(
        postings,
        [(ixs[0], currency(ixs[0])?), (ixs[1], currency(ixs[1])?)],
    )
}

/// [`compact_transfer`] given each posting's account index and that account's currency.
pub(crate) fn compact_transfer_in(
    postings: &[Posting],
    [(di, dc), (ci, cc)]: [(u32, Currency); 2],
) -> Option<Transfer> {
    let [d, c] = postings else { return None };
    compact_legs(
        [(di, d.direction, d.amount), (ci, c.direction, c.amount)],
        |ix| Some(if ix == di { dc } else { cc }),
    )
}

/// [`compact_transfer`] on two legs given as (account index, direction, amount): the one
/// test of "plain transfer" that apply and snapshot decoding share.
pub(crate) fn compact_legs(
    [(d, d_dir, d_amount), (c, c_dir, c_amount)]: [(u32, Direction, Amount); 2],
    currency_of: impl Fn(u32) -> Option<Currency>,
) -> Option<Transfer> {
    let shape = d_dir == Direction::Debit
        && c_dir == Direction::Credit
        && d_amount == c_amount
        && currency_of(d) == Some(d_amount.currency())
        && currency_of(c) == Some(c_amount.currency());
    if !shape {
        return None;
    }
    Some(Transfer {
        debit: d,
        credit: c,
        minor: i64::try_from(d_amount.minor()).ok()?,
    })
}

impl StoredEntry {
    /// A plain transfer (hot form), recorded at `position`.
    pub(crate) fn transfer(
        id: IdRef,
        fingerprint: u64,
        effective_at: EffectiveAt,
        position: u64,
        transfer: Transfer,
    ) -> StoredEntry {
        StoredEntry {
            id,
            fingerprint,
            effective_at,
            position,
            transfer,
            cold: None,
        }
    }

    /// Any other entry (cold form). The unused hot fields are zero, so equal entries compare
    /// equal however they came to be stored cold.
    pub(crate) fn cold(id: IdRef, entry: Entry) -> StoredEntry {
        StoredEntry {
            id,
            fingerprint: entry.fingerprint,
            effective_at: EffectiveAt(Timestamp::EPOCH),
            position: 0,
            transfer: Transfer {
                debit: 0,
                credit: 0,
                minor: 0,
            },
            cold: Some(Box::new(entry)),
        }
    }

    /// The full entry, if this one is stored cold.
    pub(crate) fn cold_entry(&self) -> Option<&Entry> {
        self.cold.as_deref()
    }

    /// The plain transfer, if this entry is stored hot.
    pub(crate) fn as_transfer(&self) -> Option<Transfer> {
        self.cold.is_none().then_some(self.transfer)
    }

    /// Number of events in the entry's stream.
    pub(crate) fn stream_version(&self) -> u64 {
        self.cold.as_ref().map_or(1, |e| e.stream_version)
    }

    /// Log position of the version in force now.
    pub(crate) fn current_position(&self) -> u64 {
        self.cold
            .as_ref()
            .map_or(self.position, |e| e.current.position)
    }

    /// Valid time of the version in force now.
    pub(crate) fn current_effective_at(&self) -> EffectiveAt {
        self.cold
            .as_ref()
            .map_or(self.effective_at, |e| e.current.effective_at)
    }

    /// Log position of the first version (the entry's recording).
    pub(crate) fn first_position(&self) -> u64 {
        self.cold.as_ref().map_or(self.position, |e| {
            e.previous.first().unwrap_or(&e.current).position
        })
    }
}

/// Entry id → index in `Ledger::entries`: hash tables of bare `u32` indexes that hash and
/// compare the ids the entries hold, so a slot is 4 bytes (plus a tag byte) where an
/// (id, index) map slot is 24, and the id is not shared a second time. The tables keep a
/// slot's tag and index on one cache line ([`LineTable`]), so that recording a new entry
/// writes the line its lookup read.
///
/// The ids are spread over [`ENTRY_INDEX_SHARDS`] tables by bits of their hash that the
/// tables themselves do not use: a table that grows rehashes a sixteenth of the entries
/// (writers wait for that, between two batches), and a snapshot's entries are indexed on
/// two threads, each filling half of the tables ([`EntryIndex::insert_all`]).
#[derive(Clone)]
pub(crate) struct EntryIndex {
    tables: Box<[LineTable; ENTRY_INDEX_SHARDS]>,
    hasher: foldhash::fast::FixedState,
}

/// Tables in an [`EntryIndex`].
pub(crate) const ENTRY_INDEX_SHARDS: usize = 16;

/// Which table of an [`EntryIndex`] a hash goes to: bits 48 to 51, which a [`LineTable`]
/// uses neither for the bucket (the low 32 bits) nor for the tag (the top 7 bits).
fn shard(hash: u64) -> usize {
    (hash >> 48) as usize % ENTRY_INDEX_SHARDS
}

impl std::fmt::Debug for EntryIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryIndex")
            .field("len", &self.tables.iter().map(|t| t.len()).sum::<usize>())
            .finish()
    }
}

impl EntryIndex {
    /// An empty index hashing with `hasher`.
    pub(crate) fn new(hasher: foldhash::fast::FixedState) -> EntryIndex {
        EntryIndex {
            tables: Box::new(std::array::from_fn(|_| LineTable::new())),
            hasher,
        }
    }

    /// The hash of `id` in this index.
    pub(crate) fn hash(&self, id: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, id)
    }

    /// The index of the entry with id `id`, if any.
    pub(crate) fn get(&self, id: &str, keys: Keys<'_>) -> Option<u32> {
        self.get_hashed(self.hash(id), id, keys)
    }

    /// [`EntryIndex::get`] with the id's hash already known.
    pub(crate) fn get_hashed(&self, hash: u64, id: &str, keys: Keys<'_>) -> Option<u32> {
        self.tables[shard(hash)].find(hash, |i| keys.id(i) == id)
    }

    /// Adds entry `ix`, whose id hashes to `hash`, unless an entry with its id is there:
    /// then returns that one's index and adds nothing. `keys` must hold entry `ix`.
    pub(crate) fn insert_if_absent(
        &mut self,
        hash: u64,
        ix: u32,
        keys: Keys<'_>,
    ) -> Result<(), u32> {
        let id = keys.id(ix);
        let rehash = rehasher(&self.hasher, keys);
        self.tables[shard(hash)].insert_if_absent(hash, ix, |i| keys.id(i) == id, rehash)
    }

    /// Adds the entries `from..to` (none indexed yet), on two threads when there are many;
    /// `false` if an id is there twice (the index is then unusable).
    pub(crate) fn insert_all(&mut self, from: u32, to: u32, keys: Keys<'_>) -> bool {
        let (hasher, tables) = (&self.hasher, &mut self.tables[..]);
        if to.saturating_sub(from) < 100_000 {
            return fill(hasher, tables, 0, from..to, keys).is_ok();
        }
        let (low, high) = tables.split_at_mut(ENTRY_INDEX_SHARDS / 2);
        std::thread::scope(|scope| {
            let other =
                scope.spawn(|| fill(hasher, high, ENTRY_INDEX_SHARDS / 2, from..to, keys).is_ok());
            let mine = fill(hasher, low, 0, from..to, keys).is_ok();
            other.join().unwrap_or(false) && mine
        })
    }

    /// Adds the entries `from..to` (none indexed yet) on this thread, in order; on an id
    /// already indexed (or twice in the range), stops and returns the index of the entry
    /// that repeats it (the index is then unusable).
    pub(crate) fn insert_range(&mut self, from: u32, to: u32, keys: Keys<'_>) -> Result<(), u32> {
        fill(&self.hasher, &mut self.tables[..], 0, from..to, keys)
    }

    /// Makes room for `additional` more entries.
    pub(crate) fn reserve(&mut self, additional: usize, keys: Keys<'_>) {
        // Hashes spread the entries evenly; a little more for the luck of the draw.
        let each = additional / ENTRY_INDEX_SHARDS + additional / ENTRY_INDEX_SHARDS / 16;
        for t in self.tables.iter_mut() {
            t.reserve(each, rehasher(&self.hasher, keys));
        }
    }

    /// Number of indexed entries (for the test utilities' consistency checks).
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn len(&self) -> usize {
        self.tables.iter().map(|t| t.len()).sum()
    }
}

/// Adds the entries of `range` whose ids hash to the shards `first..first + tables.len()`
/// to those `tables`, in order; on an id already there, stops and returns the index of the
/// entry that repeats it.
fn fill(
    hasher: &foldhash::fast::FixedState,
    tables: &mut [LineTable],
    first: usize,
    range: std::ops::Range<u32>,
    keys: Keys<'_>,
) -> Result<(), u32> {
    let rehash = rehasher(hasher, keys);
    // In steps of `STEP` ids: their hashes, then a read of each one's bucket with nothing
    // else between the reads (so that the cache misses of a step overlap, instead of each
    // insert waiting on its own), then the inserts.
    const STEP: u32 = 32;
    let mut hashes = [0u64; STEP as usize];
    let mut start = range.start;
    while start < range.end {
        let end = range.end.min(start.saturating_add(STEP));
        let step = start..end;
        for (h, ix) in hashes.iter_mut().zip(step.clone()) {
            *h = rehash(ix);
        }
        let mut touched = 0u64;
        for (&hash, _) in hashes.iter().zip(step.clone()) {
            if let Some(table) = shard(hash).checked_sub(first).and_then(|s| tables.get(s)) {
                touched = touched.wrapping_add(table.touch(hash));
            }
        }
        std::hint::black_box(touched);
        for (&hash, ix) in hashes.iter().zip(step) {
            let Some(table) = shard(hash)
                .checked_sub(first)
                .and_then(|s| tables.get_mut(s))
            else {
                continue;
            };
            let id = keys.id(ix);
            if table
                .insert_if_absent(hash, ix, |i| keys.id(i) == id, &rehash)
                .is_err()
            {
                return Err(ix);
            }
        }
        start = end;
    }
    Ok(())
}

/// The hash of an indexed entry's id, for the table to move slots when it grows.
fn rehasher<'a>(
    hasher: &'a foldhash::fast::FixedState,
    keys: Keys<'a>,
) -> impl Fn(u32) -> u64 + 'a {
    move |i| std::hash::BuildHasher::hash_one(hasher, keys.id(i))
}

/// What [`EntryIndex`] hashes: the ids of the entries, where they lie.
#[derive(Clone, Copy)]
pub(crate) struct Keys<'a> {
    pub(crate) entries: &'a [StoredEntry],
    pub(crate) ids: &'a IdArena,
}

impl<'a> Keys<'a> {
    fn id(&self, ix: u32) -> &'a str {
        self.ids.get(self.entries[ix as usize].id)
    }
}

impl Ledger {
    /// What the entry id index hashes.
    pub(crate) fn keys(&self) -> Keys<'_> {
        Keys {
            entries: &self.entries,
            ids: &self.ids,
        }
    }

    /// The index in `entries` of the entry with id `id`.
    pub(crate) fn entry_position(&self, id: &EntryId) -> Option<u32> {
        self.entry_position_hashed(id, self.entry_ix.hash(id.as_str()))
    }

    /// [`Ledger::entry_position`] with the id's hash in the index already known.
    pub(crate) fn entry_position_hashed(&self, id: &EntryId, hash: u64) -> Option<u32> {
        debug_assert!(
            self.ids_indexed(),
            "an entry looked up by id during a bulk replay before its ids were indexed"
        );
        self.entry_ix.get_hashed(hash, id.as_str(), self.keys())
    }

    /// A stored entry's id, as text.
    pub(crate) fn entry_id_str(&self, e: &StoredEntry) -> &str {
        self.ids.get(e.id)
    }

    /// A stored entry's id (a new allocation: the ledger keeps ids in its arena).
    pub(crate) fn entry_id(&self, e: &StoredEntry) -> EntryId {
        EntryId::new(self.entry_id_str(e)).expect("the arena holds only valid ids")
    }

    /// The stored form of an entry.
    pub(crate) fn stored_entry(&self, id: &EntryId) -> Option<&StoredEntry> {
        self.entry_position(id).map(|i| &self.entries[i as usize])
    }

    /// The entry (with all its versions), as known now: borrowed when stored cold, built when
    /// stored hot.
    pub(crate) fn entry_view(&self, id: &EntryId) -> Option<Cow<'_, Entry>> {
        self.stored_entry(id).map(|e| self.materialise(e))
    }

    /// The full view of a stored entry.
    pub(crate) fn materialise<'a>(&'a self, e: &'a StoredEntry) -> Cow<'a, Entry> {
        if let Some(full) = e.cold_entry() {
            return Cow::Borrowed(full);
        }
        let t = e.transfer;
        let posting = |ix: u32, direction| {
            let account = &self.accounts[ix as usize].account;
            Posting {
                account: account.id.clone(),
                direction,
                amount: Amount::from_minor(i128::from(t.minor), account.currency)
                    .expect("a hot entry's amount was a valid amount when it was stored"),
            }
        };
        let postings: Arc<[Posting]> = Arc::new([
            posting(t.debit, Direction::Debit),
            posting(t.credit, Direction::Credit),
        ]);
        Cow::Owned(Entry::recorded(
            self.entry_id(e),
            EntryKind::Posted,
            Metadata::new(),
            postings,
            e.effective_at,
            (e.position, RecordedAt(self.recorded_at_of(e.position))),
            e.fingerprint,
            1,
        ))
    }

    /// The entry at index `ix` of `entries` as a full, mutable [`Entry`], moving it to the
    /// cold form first if it is hot (every change to an entry makes it no longer plain).
    pub(crate) fn entry_mut_at(&mut self, ix: u32) -> &mut Entry {
        self.cuts.keep(ix, &self.entries);
        self.links.changed(ix);
        let ix = ix as usize;
        if self.entries[ix].cold.is_none() {
            let full = self.materialise(&self.entries[ix]).into_owned();
            self.entries[ix] = StoredEntry::cold(self.entries[ix].id, full);
        }
        self.entries[ix]
            .cold
            .as_deref_mut()
            .expect("made cold just above")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{EffectiveAt, Timestamp};

    /// The longest id an [`AccountId`] keeps inline.
    const ACCOUNT_ID_INLINE: usize = smol_str::SmolStr::INLINE_CAP;

    /// Each account's slot names its currency while the ledger has at most
    /// `NO_CURRENCY_NUMBER` distinct ones; an account in a currency after those is still
    /// found, with its currency left to be looked up by index.
    #[test]
    fn the_account_index_numbers_currencies_until_it_runs_out() {
        let mut index = AccountIndex::new(foldhash::fast::FixedState::with_seed(1));
        let n = usize::from(NO_CURRENCY_NUMBER) + 2;
        let currency = |i: usize| Currency::custom(&format!("CX{i:06}"), 2).unwrap();
        let id = |i: usize| -> AccountId { format!("acc-{i}").parse().unwrap() };
        for i in 0..n {
            assert_eq!(index.insert(&id(i), i as u32, currency(i)), None);
        }
        // A currency already numbered keeps its number, past the limit too.
        assert_eq!(index.insert(&id(n), n as u32, currency(7)), None);
        for i in 0..n {
            let expected = (i < usize::from(NO_CURRENCY_NUMBER)).then(|| currency(i));
            assert_eq!(
                index.get_with_currency(&id(i)),
                Some((i as u32, expected)),
                "{i}"
            );
        }
        assert_eq!(
            index.get_with_currency(&id(n)),
            Some((n as u32, Some(currency(7))))
        );
    }

    /// Ids inline and shared (longer than `ACCOUNT_ID_INLINE`), at the boundary and with a
    /// common prefix, are each found under their own index and only there.
    #[test]
    fn the_account_index_finds_inline_and_shared_ids() {
        let ids: Vec<AccountId> = [
            "a".to_string(),
            "x".repeat(ACCOUNT_ID_INLINE - 1),
            "x".repeat(ACCOUNT_ID_INLINE),
            "x".repeat(ACCOUNT_ID_INLINE + 1),
            "y".repeat(crate::limits::ID_LEN_MAX),
            format!("{}z", "y".repeat(ACCOUNT_ID_INLINE)),
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let mut index = AccountIndex::new(foldhash::fast::FixedState::with_seed(1));
        // Two currencies, alternating: each account's slot names its own.
        let currency = |i: usize| [Currency::USD, Currency::EUR][i % 2];
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(index.insert(id, i as u32, currency(i)), None, "{id}");
            assert_eq!(
                index.get_with_currency(id),
                Some((i as u32, Some(currency(i))))
            );
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(index.get(id), Some(&(i as u32)), "{id}");
            assert!(index.contains_key(id));
            assert_eq!(index[id], i as u32);
            // A second filing keeps the first index and says so.
            assert_eq!(index.insert(id, 99, Currency::JPY), Some(i as u32));
            assert_eq!(
                index.get_with_currency(id),
                Some((i as u32, Some(currency(i))))
            );
            assert_eq!(index.get(id), Some(&(i as u32)));
        }
        for absent in ["b", "x", &"x".repeat(ACCOUNT_ID_INLINE + 2)] {
            assert_eq!(index.get(&absent.parse().unwrap()), None, "{absent}");
        }
    }

    proptest::proptest! {
        /// The index finds exactly the ids filed, under the index each was first filed at,
        /// whatever their lengths (every boundary of `short_key`'s loads, and past it) and
        /// however alike they are (two letters, so runs and shared prefixes and suffixes are
        /// common, the cases where overlapping loads could confuse two ids).
        #[test]
        fn the_account_index_is_a_map_of_ids(
            pool in proptest::collection::vec("[ab]{1,30}", 1..40),
            filed in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..40),
        ) {
            let ids: Vec<AccountId> = pool.iter().map(|s| s.parse().unwrap()).collect();
            let mut index = AccountIndex::new(foldhash::fast::FixedState::with_seed(5));
            let mut model: std::collections::HashMap<&str, u32> = Default::default();
            for (n, i) in filed.iter().enumerate() {
                let id = &ids[i.index(ids.len())];
                let had = model.get(id.as_str()).copied();
                proptest::prop_assert_eq!(index.insert(id, n as u32, Currency::USD), had);
                model.entry(id.as_str()).or_insert(n as u32);
            }
            for id in &ids {
                proptest::prop_assert_eq!(index.get(id).copied(), model.get(id.as_str()).copied());
                proptest::prop_assert_eq!(index.contains_key(id), model.contains_key(id.as_str()));
            }
        }
    }

    /// `n` entries whose ids are `e0`, `e1`, …, except that entry `dup` (if any) repeats
    /// entry 7's id.
    fn entries(n: u32, dup: Option<u32>) -> (Vec<StoredEntry>, IdArena) {
        let mut ids = IdArena::default();
        let entries = (0..n)
            .map(|i| {
                let id = ids.push(&format!("e{}", if Some(i) == dup { 7 } else { i }));
                let t = Transfer {
                    debit: 0,
                    credit: 1,
                    minor: 1,
                };
                StoredEntry::transfer(id, 0, EffectiveAt(Timestamp::EPOCH), u64::from(i) + 1, t)
            })
            .collect();
        (entries, ids)
    }

    /// Both paths of `insert_all` (one thread below 100,000 entries, two above) index every
    /// entry where `get` finds it, and refuse an id that is there twice, wherever it falls.
    #[test]
    fn insert_all_indexes_everything_and_refuses_a_repeated_id() {
        let h = foldhash::fast::FixedState::with_seed(3);
        for n in [1_000u32, 150_000] {
            let (e, ids) = entries(n, None);
            let keys = Keys {
                entries: &e,
                ids: &ids,
            };
            let mut ix = EntryIndex::new(h.clone());
            ix.reserve(n as usize, keys);
            // In two runs, as a delta adds to a decoded snapshot.
            assert!(ix.insert_all(0, n / 3, keys));
            assert!(ix.insert_all(n / 3, n, keys));
            assert_eq!(ix.len(), n as usize);
            for i in (0..n).step_by(97) {
                assert_eq!(ix.get(&format!("e{i}"), keys), Some(i), "n {n}, e{i}");
            }
            assert_eq!(ix.get("e-absent", keys), None);
            for dup in [n / 2, n - 1] {
                let (e, ids) = entries(n, Some(dup));
                let keys = Keys {
                    entries: &e,
                    ids: &ids,
                };
                let mut ix = EntryIndex::new(h.clone());
                assert!(!ix.insert_all(0, n, keys), "n {n}, dup at {dup}");
            }
        }
    }
}
