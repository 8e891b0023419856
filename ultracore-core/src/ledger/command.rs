//! Commands (what a caller asks the ledger to do), their idempotency fingerprints, and the
//! outcomes the engine answers with.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, EntryId};
use crate::money::{Amount, Currency};
use crate::time::{EffectiveAt, RecordedAt};

use super::model::{AccountKind, AccountStatus, Constraints, Direction, Metadata, Posting};

/// Open an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAccount {
    /// Client-chosen id (idempotency key: the same request again returns the same account).
    pub id: AccountId,
    /// Its currency.
    pub currency: Currency,
    /// Asset, liability, …
    pub kind: AccountKind,
    /// Owning customer.
    #[serde(default)]
    pub owner: Option<String>,
    /// Servicing branch.
    #[serde(default)]
    pub branch: Option<String>,
    /// Balance limits.
    #[serde(default)]
    pub constraints: Constraints,
    /// Descriptive data.
    #[serde(default)]
    pub metadata: Metadata,
    /// Valid time from which it exists (default: now; may be back-dated within the window).
    #[serde(default)]
    pub effective_at: Option<EffectiveAt>,
}

impl OpenAccount {
    /// An opening with no owner, branch, constraints or metadata, effective now; set the
    /// other fields with struct update syntax.
    pub fn new(id: AccountId, currency: Currency, kind: AccountKind) -> OpenAccount {
        OpenAccount {
            id,
            currency,
            kind,
            owner: None,
            branch: None,
            constraints: Constraints::default(),
            metadata: Metadata::new(),
            effective_at: None,
        }
    }
}

/// Post a balanced journal entry with two or more postings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostEntry {
    /// Client-chosen id, the idempotency key.
    pub id: EntryId,
    /// The legs; debits equal credits per currency. Shared, so the recorded event holds the
    /// command's legs without copying them (`vec![…].into()` builds it).
    pub postings: Postings,
    /// Valid time (default: now).
    #[serde(default)]
    pub effective_at: Option<EffectiveAt>,
    /// Descriptive data.
    #[serde(default)]
    pub metadata: Metadata,
}

impl PostEntry {
    /// The two-posting case: move `amount` from `debit` to `credit`.
    pub fn transfer(
        id: EntryId,
        debit: AccountId,
        credit: AccountId,
        amount: Amount,
        effective_at: Option<EffectiveAt>,
    ) -> PostEntry {
        PostEntry {
            id,
            postings: vec![
                Posting {
                    account: debit,
                    direction: Direction::Debit,
                    amount,
                },
                Posting {
                    account: credit,
                    direction: Direction::Credit,
                    amount,
                },
            ]
            .into(),
            effective_at,
            metadata: Metadata::new(),
        }
    }
}

/// Reserve funds: a pending transfer from `debit_account` to `credit_account`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceHold {
    /// Client-chosen id of the hold.
    pub id: EntryId,
    /// Account whose available balance is reduced.
    pub debit_account: AccountId,
    /// Account that will receive the funds when posted.
    pub credit_account: AccountId,
    /// Amount reserved.
    pub amount: Amount,
    /// Valid time the reservation starts (default: now).
    #[serde(default)]
    pub effective_at: Option<EffectiveAt>,
    /// Deadline after which the hold expires (optional).
    #[serde(default)]
    pub expires_at: Option<crate::time::Timestamp>,
    /// Descriptive data.
    #[serde(default)]
    pub metadata: Metadata,
}

impl PlaceHold {
    /// The hold's two postings of the held amount: debit, then credit.
    pub fn postings(&self) -> Vec<Posting> {
        vec![
            Posting {
                account: self.debit_account.clone(),
                direction: Direction::Debit,
                amount: self.amount,
            },
            Posting {
                account: self.credit_account.clone(),
                direction: Direction::Credit,
                amount: self.amount,
            },
        ]
    }
}

/// Post a hold, fully (amount = None) or partly; the rest is released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostHold {
    /// The hold.
    pub hold: EntryId,
    /// How much to post (at most the held amount; default: all of it).
    #[serde(default)]
    pub amount: Option<Amount>,
    /// Valid time of the posting (default: now).
    #[serde(default)]
    pub effective_at: Option<EffectiveAt>,
}

/// Release a hold without posting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoidHold {
    /// The hold.
    pub hold: EntryId,
    /// Valid time of the release (default: now).
    #[serde(default)]
    pub effective_at: Option<EffectiveAt>,
}

/// Reverse a posted entry with a new, linked entry that mirrors it. The original stays.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reverse {
    /// Client-chosen id of the reversal entry.
    pub id: EntryId,
    /// The entry to reverse.
    pub entry: EntryId,
    /// Valid time of the reversal (default: now).
    #[serde(default)]
    pub effective_at: Option<EffectiveAt>,
    /// Descriptive data.
    #[serde(default)]
    pub metadata: Metadata,
}

/// Correct a recorded entry: a new version supersedes the current one (nothing is deleted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Correct {
    /// Client-chosen id of the correction.
    pub id: EntryId,
    /// The entry corrected.
    pub entry: EntryId,
    /// New amount (two-posting entries only).
    #[serde(default)]
    pub amount: Option<Amount>,
    /// New postings (any entry).
    #[serde(default)]
    pub postings: Option<Vec<Posting>>,
    /// New valid time.
    #[serde(default)]
    pub effective_at: Option<EffectiveAt>,
    /// Cancel the entry (its money disappears from every valid time, from now on as known).
    #[serde(default)]
    pub cancel: bool,
    /// Why (required).
    pub reason: String,
}

/// Everything the ledger can be asked to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "command")]
pub enum Command {
    /// Open an account.
    OpenAccount(OpenAccount),
    /// Refuse postings on an account until unfrozen.
    FreezeAccount {
        /// The account.
        account: AccountId,
    },
    /// Accept postings again.
    UnfreezeAccount {
        /// The account.
        account: AccountId,
    },
    /// Close an account for good (zero balance and no open holds required).
    CloseAccount {
        /// The account.
        account: AccountId,
    },
    /// Replace an account's metadata (money untouched).
    SetAccountMetadata {
        /// The account.
        account: AccountId,
        /// The new metadata.
        metadata: Metadata,
    },
    /// Post a journal entry.
    PostEntry(PostEntry),
    /// Place a hold.
    PlaceHold(PlaceHold),
    /// Post a hold.
    PostHold(PostHold),
    /// Void a hold.
    VoidHold(VoidHold),
    /// Expire every hold whose deadline has passed.
    ExpireHolds,
    /// Reverse an entry.
    Reverse(Reverse),
    /// Correct an entry.
    Correct(Correct),
}

impl Command {
    /// The client-chosen entry id this command creates, if any: its failures are recorded so
    /// the id stays failed.
    pub fn entry_id(&self) -> Option<&EntryId> {
        match self {
            Command::PostEntry(c) => Some(&c.id),
            Command::PlaceHold(c) => Some(&c.id),
            Command::Reverse(c) => Some(&c.id),
            Command::Correct(c) => Some(&c.id),
            _ => None,
        }
    }

    /// A stable fingerprint of the request as given (defaults unresolved), for idempotency:
    /// the same id with a different fingerprint is a conflict. A fixed 64-bit hash over an
    /// explicit, versioned byte encoding, so it never changes with the compiler or platform.
    pub fn fingerprint(&self) -> u64 {
        let mut h = Fingerprinter::new();
        h.u8(1); // encoding version
        match self {
            Command::OpenAccount(c) => {
                h.u8(10);
                h.str(c.id.as_str());
                h.str(c.currency.code());
                h.u8(c.currency.minor_units());
                h.u8(c.kind as u8);
                h.opt_str(c.owner.as_deref());
                h.opt_str(c.branch.as_deref());
                h.u8(u8::from(c.constraints.debits_must_not_exceed_credits));
                h.u8(u8::from(c.constraints.credits_must_not_exceed_debits));
                h.opt_amount(c.constraints.overdraft_limit.as_ref());
                h.metadata(&c.metadata);
                h.opt_i64(c.effective_at.map(|e| e.0.as_micros()));
            }
            Command::FreezeAccount { account } => {
                h.u8(11);
                h.str(account.as_str());
            }
            Command::UnfreezeAccount { account } => {
                h.u8(12);
                h.str(account.as_str());
            }
            Command::CloseAccount { account } => {
                h.u8(13);
                h.str(account.as_str());
            }
            Command::SetAccountMetadata { account, metadata } => {
                h.u8(14);
                h.str(account.as_str());
                h.metadata(metadata);
            }
            Command::PostEntry(c) => {
                h.u8(20);
                h.str(c.id.as_str());
                h.postings(&c.postings);
                h.opt_i64(c.effective_at.map(|e| e.0.as_micros()));
                h.metadata(&c.metadata);
            }
            Command::PlaceHold(c) => {
                h.u8(21);
                h.str(c.id.as_str());
                h.str(c.debit_account.as_str());
                h.str(c.credit_account.as_str());
                h.amount(&c.amount);
                h.opt_i64(c.effective_at.map(|e| e.0.as_micros()));
                h.opt_i64(c.expires_at.map(|e| e.as_micros()));
                h.metadata(&c.metadata);
            }
            Command::PostHold(c) => {
                h.u8(22);
                h.str(c.hold.as_str());
                h.opt_amount(c.amount.as_ref());
                h.opt_i64(c.effective_at.map(|e| e.0.as_micros()));
            }
            Command::VoidHold(c) => {
                h.u8(23);
                h.str(c.hold.as_str());
                h.opt_i64(c.effective_at.map(|e| e.0.as_micros()));
            }
            Command::ExpireHolds => h.u8(24),
            Command::Reverse(c) => {
                h.u8(25);
                h.str(c.id.as_str());
                h.str(c.entry.as_str());
                h.opt_i64(c.effective_at.map(|e| e.0.as_micros()));
                h.metadata(&c.metadata);
            }
            Command::Correct(c) => {
                h.u8(26);
                h.str(c.id.as_str());
                h.str(c.entry.as_str());
                h.opt_amount(c.amount.as_ref());
                match &c.postings {
                    None => h.u8(0),
                    Some(p) => {
                        h.u8(1);
                        h.postings(p);
                    }
                }
                h.opt_i64(c.effective_at.map(|e| e.0.as_micros()));
                h.u8(u8::from(c.cancel));
                h.str(&c.reason);
            }
        }
        h.finish()
    }
}

/// [`Fingerprinter`] over raw bytes: a stable checksum for snapshots.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h = Fingerprinter::new();
    h.bytes(&(bytes.len() as u64).to_le_bytes());
    h.bytes(bytes);
    h.finish()
}

/// A small, stable, word-at-a-time hash (multiply-rotate per 8 bytes, SplitMix finaliser):
/// good enough to tell two requests under one id apart, and fixed by this code, never by the
/// compiler or platform. Not cryptographic: a client can only collide its own ids.
struct Fingerprinter(u64);

/// `rest` (1 to 7 bytes) as the little-endian word that copying it into eight zero bytes
/// gives, read with overlapping loads: bytes `0..4` and `n-4..n` for 4 to 7, the first,
/// middle and last for 1 to 3 (a copy of a variable length was a call to `memcpy` per id).
/// Overlapping bytes are equal, so or-ing them is exact.
#[inline]
fn tail_word(rest: &[u8]) -> u64 {
    let n = rest.len();
    let u32_at = |i: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&rest[i..i + 4]);
        u64::from(u32::from_le_bytes(w))
    };
    match n {
        4..=7 => u32_at(0) | u32_at(n - 4) << (8 * (n - 4)),
        1..=3 => {
            u64::from(rest[0])
                | u64::from(rest[n / 2]) << (8 * (n / 2))
                | u64::from(rest[n - 1]) << (8 * (n - 1))
        }
        _ => 0,
    }
}

impl Fingerprinter {
    fn new() -> Fingerprinter {
        Fingerprinter(0xcbf2_9ce4_8422_2325)
    }
    fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
    fn bytes(&mut self, b: &[u8]) {
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.word(tail_word(rest) ^ ((rest.len() as u64) << 59));
        }
    }
    /// Same as `bytes(&[x])` (a one-byte remainder word), without the slice walk.
    fn u8(&mut self, x: u8) {
        self.word(u64::from(x) ^ (1 << 59));
    }
    /// Same as `bytes(&x.to_le_bytes())`.
    fn u64(&mut self, x: u64) {
        self.word(x);
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.bytes(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
    fn opt_i64(&mut self, x: Option<i64>) {
        match x {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                self.u64(x as u64);
            }
        }
    }
    fn amount(&mut self, a: &Amount) {
        // Same as `self.str(a.currency().code())`: the length word, then the zero-padded code
        // as one word (a remainder word, so tagged with its length, unless it fills all 8).
        let (code, len) = a.currency().code_word();
        self.u64(u64::from(len));
        if len == 8 {
            self.word(u64::from_le_bytes(code));
        } else if len > 0 {
            self.word(u64::from_le_bytes(code) ^ (u64::from(len) << 59));
        }
        self.u8(a.currency().minor_units());
        // Same as `bytes(&minor.to_le_bytes())`: the low word, then the high word.
        let minor = a.minor() as u128;
        self.u64(minor as u64);
        self.u64((minor >> 64) as u64);
    }
    fn opt_amount(&mut self, a: Option<&Amount>) {
        match a {
            None => self.u8(0),
            Some(a) => {
                self.u8(1);
                self.amount(a);
            }
        }
    }
    fn postings(&mut self, p: &[Posting]) {
        self.u64(p.len() as u64);
        for x in p {
            self.str(x.account.as_str());
            self.u8(x.direction as u8);
            self.amount(&x.amount);
        }
    }
    fn metadata(&mut self, m: &Metadata) {
        self.u64(m.as_map().len() as u64);
        for (k, v) in m.as_map() {
            self.str(k);
            self.str(v);
        }
    }
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The state of an entry as reported to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryStatus {
    /// Posted money.
    Posted,
    /// A hold still reserving funds.
    Pending,
    /// A hold that was posted.
    HoldPosted,
    /// A hold that was voided.
    Voided,
    /// A hold that expired.
    Expired,
    /// Cancelled by a correction.
    Cancelled,
}

/// What the engine answers for an accepted (or idempotently repeated) entry command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryReceipt {
    /// The entry (for a correction: the corrected entry).
    pub id: EntryId,
    /// Its status now.
    pub status: EntryStatus,
    /// Its current version.
    pub version: u32,
    /// Valid time of the current version.
    pub effective_at: EffectiveAt,
    /// Log position of the event this command produced.
    pub position: u64,
    /// Transaction time of that event.
    pub recorded_at: RecordedAt,
}

/// What the engine answers for an account command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountReceipt {
    /// The account.
    pub id: AccountId,
    /// Its status now.
    pub status: AccountStatus,
    /// Log position of the account's latest event.
    pub position: u64,
}

/// The answer to an accepted command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Outcome {
    /// An account command.
    Account(AccountReceipt),
    /// An entry command.
    Entry(EntryReceipt),
    /// Holds expired by `ExpireHolds`.
    HoldsExpired {
        /// How many.
        count: usize,
    },
}

/// Shared postings, cheap to clone into events and state.
pub type Postings = Arc<[Posting]>;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// `tail_word` is the zero-padded copy it replaced, for every length from 1 to 7.
        #[test]
        fn tail_word_is_the_padded_copy(rest in proptest::collection::vec(any::<u8>(), 1..8)) {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(&rest);
            prop_assert_eq!(super::tail_word(&rest), u64::from_le_bytes(w));
        }
    }
}
