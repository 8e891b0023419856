//! Workload builders shared by the UltraCore benchmarks: ledgers with many accounts, one
//! account with many entries, and pre-built command streams, so each bench measures only the
//! operation it names.

/// With `--features mimalloc`: the server's optional allocator (see ultracore-server's main.rs), for a
/// comparison run. By default the benches use the system allocator, as an embedding
/// application does unless it chooses another.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ultracore_core::event::{Envelope, Trace};
use ultracore_core::ledger::{
    AccountKind, Command, Constraints, Ledger, LedgerConfig, LedgerEvent, Metadata, OpenAccount,
    PostEntry, Warmed,
};
use ultracore_core::money::{Amount, Currency};
use ultracore_core::time::{EffectiveAt, Timestamp};

/// The wall clock, for the bench binaries that run the engine against a real store (the
/// core never reads a clock itself).
pub struct WallClock;

impl ultracore_core::time::Clock for WallClock {
    fn now(&self) -> Timestamp {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        Timestamp::from_micros(micros).unwrap_or(Timestamp::MIN)
    }
}

/// 2026-01-01T00:00:00Z: the start of every benchmark's timeline.
pub const START_SECS: i64 = 1_767_225_600;

/// The benchmarks' epoch.
pub fn start() -> Timestamp {
    Timestamp::from_secs(START_SECS).expect("in range")
}

/// A ledger whose window admits the benches' timelines (10 years back and forward).
pub fn config() -> LedgerConfig {
    const DAY: i64 = 86_400_000_000;
    LedgerConfig {
        backdate_window_micros: 3_650 * DAY,
        future_window_micros: 3_650 * DAY,
        ..LedgerConfig::default()
    }
}

/// Opens `n` accounts `a0..a{n-1}` (liabilities, unconstrained) plus `funding` (asset).
pub fn ledger_with_accounts(n: usize, constrained: bool) -> (Ledger, Vec<Envelope<LedgerEvent>>) {
    let mut ledger = Ledger::new(config());
    let mut log = Vec::new();
    let now = start();
    let mut cmds = vec![open("funding", AccountKind::Asset, Constraints::default())];
    let c = Constraints {
        debits_must_not_exceed_credits: constrained,
        ..Constraints::default()
    };
    cmds.extend((0..n).map(|i| open(&format!("a{i}"), AccountKind::Liability, c)));
    for cmd in &cmds {
        ledger
            .execute(cmd, &Trace::default(), now, 0, &mut log)
            .expect("no invariant breaks")
            .expect("accounts open");
    }
    (ledger, log)
}

/// Executes `cmds` as the engine executes a batch: each window of `window` commands warmed
/// first ([`Ledger::warm`]; `window == 0`: not warmed), command `i` at
/// `start() + first_micros + i` (the clock moves one microsecond per command). Panics on a
/// broken invariant; debug builds also on a refusal.
pub fn execute_windows(
    ledger: &mut Ledger,
    cmds: &[Command],
    window: usize,
    first_micros: i64,
    out: &mut Vec<Envelope<LedgerEvent>>,
) {
    for (w, part) in cmds.chunks(window.max(1)).enumerate() {
        let warmed = if window > 0 {
            ledger.warm(part)
        } else {
            Warmed::default()
        };
        let first = first_micros + (w * window.max(1)) as i64;
        execute_warmed(ledger, part, &warmed, first, out);
    }
}

/// Executes one window `part` with the hints `warmed` holds for it (none if it was not
/// warmed), command `j` at `start() + first_micros + j`. Panics on a broken invariant; debug
/// builds also on a refusal.
pub fn execute_warmed(
    ledger: &mut Ledger,
    part: &[Command],
    warmed: &Warmed<'_>,
    first_micros: i64,
    out: &mut Vec<Envelope<LedgerEvent>>,
) {
    for (j, cmd) in part.iter().enumerate() {
        let now = start().saturating_add_micros(first_micros + j as i64);
        let r = ledger
            .execute_hinted(cmd, warmed.hints(j, cmd), &Trace::default(), now, 0, out)
            .expect("no invariant breaks");
        debug_assert!(r.is_ok());
    }
}

/// Gives a clone of a ledger over `accounts` accounts the room a live ledger has for a batch
/// of `batch` transfers: in its entry maps (a clone would pay a whole rehash inside the batch)
/// and, unless `per_account` is false, in each account's balance index (a clone's vectors have
/// no room, so every account's first posting of the batch would reallocate them). Map and
/// vector growth are amortised over a live ledger's life; this is the benches' untimed setup.
pub fn room_for_batch(ledger: &mut Ledger, batch: usize, accounts: u64, per_account: bool) {
    ledger.reserve(batch);
    if per_account {
        // The batch's postings per account, on average.
        ledger.reserve_per_account(2 * batch / accounts.max(1) as usize);
    }
}

/// `ledger_with_accounts(n)` plus `per_account` warm-up transfers per account, so benches
/// measure the steady state (accounts with history) rather than every account's first posting.
pub fn warm_ledger(n: usize, per_account: usize) -> Ledger {
    let (mut ledger, mut log) = ledger_with_accounts(n, false);
    let count = n * per_account / 2;
    for cmd in random_transfers(count, n as u64, 1_000_000_000, 99) {
        ledger
            .execute(&cmd, &Trace::default(), start(), 0, &mut log)
            .expect("no invariant breaks")
            .expect("warm-up transfer accepted");
    }
    ledger
}

/// An account-opening command.
pub fn open(id: &str, kind: AccountKind, constraints: Constraints) -> Command {
    Command::OpenAccount(OpenAccount {
        id: id.parse().expect("valid id"),
        currency: Currency::USD,
        kind,
        owner: None,
        branch: None,
        constraints,
        metadata: Metadata::new(),
        effective_at: Some(EffectiveAt(start())),
    })
}

/// A transfer command of `minor` cents.
pub fn transfer(id: u64, from: &str, to: &str, minor: i128, at: Option<Timestamp>) -> Command {
    Command::PostEntry(PostEntry::transfer(
        format!("t{id}").parse().expect("valid id"),
        from.parse().expect("valid id"),
        to.parse().expect("valid id"),
        Amount::from_minor(minor, Currency::USD).expect("in range"),
        at.map(EffectiveAt),
    ))
}

/// A tiny deterministic PRNG (SplitMix64) so workloads are reproducible.
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// `count` transfers between random pairs of `a0..a{accounts-1}` with ids from `first_id`.
pub fn random_transfers(count: usize, accounts: u64, first_id: u64, seed: u64) -> Vec<Command> {
    let mut rng = SplitMix(seed);
    (0..count as u64)
        .map(|i| {
            let from = rng.below(accounts);
            let to = (from + 1 + rng.below(accounts - 1)) % accounts;
            transfer(
                first_id + i,
                &format!("a{from}"),
                &format!("a{to}"),
                1 + rng.below(10_000) as i128,
                None,
            )
        })
        .collect()
}

/// A ledger with one account (`hot`, constrained: no overdraft) holding `entries` deposits
/// from `funding`, one per second of valid time from the start (the first one of 10^10 USD,
/// the rest 1.00 each); returns it and its log.
pub fn one_account_with_entries(entries: usize) -> (Ledger, Vec<Envelope<LedgerEvent>>) {
    let mut ledger = Ledger::new(config());
    let mut log = Vec::with_capacity(entries + 2);
    let now = start();
    let no_overdraft = Constraints {
        debits_must_not_exceed_credits: true,
        ..Constraints::default()
    };
    let setup = [
        open("funding", AccountKind::Asset, Constraints::default()),
        open("hot", AccountKind::Liability, no_overdraft),
    ];
    for cmd in &setup {
        ledger
            .execute(cmd, &Trace::default(), now, 0, &mut log)
            .expect("no invariant breaks")
            .expect("accounts open");
    }
    // The clock runs ahead of the entries so every entry is "now or earlier".
    let clock = now.saturating_add_micros(entries as i64 * 1_000_000 + 1_000_000);
    for i in 0..entries {
        let at = now.saturating_add_micros(i as i64 * 1_000_000);
        // The first deposit is large so back-dated withdrawals right after it stay covered.
        let amount = if i == 0 { 1_000_000_000_000 } else { 100 };
        let cmd = transfer(i as u64, "funding", "hot", amount, Some(at));
        ledger
            .execute(&cmd, &Trace::default(), clock, 0, &mut log)
            .expect("no invariant breaks")
            .expect("deposit accepted");
    }
    (ledger, log)
}
