//! Criterion benchmarks of the in-memory core. Numbers and commands: docs/BENCHMARKS.md.
//!
//! Run: `cargo bench -p ultracore-benches --bench ledger`
//! Scale the big-account benches with `UC_BENCH_ENTRIES` (default 1,000,000).
#![allow(missing_docs)] // criterion's macros generate undocumented items

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ultracore_benches::*;
use ultracore_core::event::Trace;
use ultracore_core::ledger::{KnownAt, Ledger, WARM_WINDOW};
use ultracore_core::time::Timestamp;

fn entries() -> usize {
    std::env::var("UC_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// decide + apply of two-posting transfers (no store): the state machine's throughput.
fn transfers(c: &mut Criterion) {
    const BATCH: usize = 10_000;
    let mut g = c.benchmark_group("decide_apply_transfer");
    g.throughput(Throughput::Elements(BATCH as u64));
    // As the engine executes a batch: each window of `WARM_WINDOW` commands warmed first
    // (`Ledger::warm`); `_unwarmed` executes the same commands one by one without it.
    // `_no_room` is the setup before 2026-11-29 (no room in the accounts' vectors, below).
    for (name, accounts, window, room) in [
        ("uniform_10000_accounts", 10_000u64, WARM_WINDOW, true),
        ("hotspot_10_accounts", 10, WARM_WINDOW, true),
        ("uniform_10000_accounts_unwarmed", 10_000u64, 0, true),
        (
            "uniform_10000_accounts_no_room",
            10_000u64,
            WARM_WINDOW,
            false,
        ),
    ] {
        // Every account already holds ~10 postings: the steady state, not first postings.
        let base = warm_ledger(accounts as usize, 10);
        let mut round = 0u64;
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    round += 1;
                    let mut ledger = base.clone();
                    // Room in the maps and (but for `_no_room`) each account's vectors, as a
                    // live ledger has from amortised growth (see `room_for_batch`).
                    room_for_batch(&mut ledger, BATCH, accounts, room);
                    (
                        ledger,
                        random_transfers(BATCH, accounts, round * BATCH as u64, round),
                    )
                },
                |(mut ledger, cmds): (Ledger, _)| {
                    let mut out = Vec::with_capacity(BATCH);
                    execute_windows(&mut ledger, &cmds, window, 1, &mut out);
                    (ledger, out)
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// decide + apply as a live ledger does it: one ledger that keeps growing across every
/// batch, instead of a fresh clone per batch. A clone has two effects that a live ledger does
/// not: it has just touched the whole state (so the state sits in the cache), and its vectors
/// have no spare room (so the first append to each account reallocates three of them).
/// The commands of each batch are built before its timing; its envelopes dropped after.
fn transfers_growing(c: &mut Criterion) {
    const BATCH: usize = 10_000;
    let mut g = c.benchmark_group("decide_apply_transfer_growing");
    g.throughput(Throughput::Elements(BATCH as u64));
    let accounts = 10_000u64;
    let mut ledger = warm_ledger(accounts as usize, 10);
    let mut round = 0u64;
    let mut clock = 0i64;
    g.bench_function("uniform_10000_accounts", |b| {
        b.iter_custom(|iters| {
            let mut busy = std::time::Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let cmds = random_transfers(BATCH, accounts, round * BATCH as u64, round);
                ledger.reserve(BATCH);
                let mut out = Vec::with_capacity(BATCH);
                let t = std::time::Instant::now();
                execute_windows(&mut ledger, &cmds, WARM_WINDOW, clock + 1, &mut out);
                busy += t.elapsed();
                clock += BATCH as i64;
                drop(out);
            }
            busy
        })
    });
    g.finish();
}

/// Balance at (valid_at, known_at) on one account with many entries.
fn balances(c: &mut Criterion) {
    let n = entries();
    // Built on first use, so a filtered run (`-- decide_apply`) does not pay for it.
    let data = std::cell::OnceCell::new();
    let built = || {
        eprintln!("building one account with {n} entries…");
        one_account_with_entries(n).0
    };
    let hot = "hot".parse().expect("valid id");
    let mut g = c.benchmark_group(format!("balance_{n}_entries"));
    let mut i = 0i64;
    let at = |i: i64| Timestamp::from_secs(START_SECS + (i * 7919) % n as i64).expect("in range");
    g.bench_function("known_now", |b| {
        let ledger: &Ledger = data.get_or_init(built);
        b.iter(|| {
            i += 1;
            ledger.balance(&hot, at(i), KnownAt::Now).expect("exists")
        })
    });
    for pct in [99u64, 50, 1] {
        g.bench_function(format!("known_at_{pct}pct"), |b| {
            let ledger: &Ledger = data.get_or_init(built);
            let basis = ledger.position() * pct / 100;
            b.iter(|| {
                i += 1;
                ledger
                    .balance(&hot, at(i), KnownAt::Position(basis))
                    .expect("exists")
            })
        });
    }
    g.finish();
}

/// A back-dated withdrawal before every existing entry: decide (with the whole-timeline
/// constraint check) + apply.
fn backdated(c: &mut Criterion) {
    let n = entries();
    let clock = start().saturating_add_micros(n as i64 * 1_000_000 + 2_000_000);
    let mut g = c.benchmark_group(format!("backdated_before_{n}_entries"));
    let mut data = None;
    let mut id = 10_000_000_000u64;
    g.bench_function("decide_apply_with_constraint_check", |b| {
        let ledger: &mut Ledger = data.get_or_insert_with(|| one_account_with_entries(n).0);
        b.iter(|| {
            id += 1;
            // 1 cent out of `hot` at valid time start + 0.5 s: every later balance is re-checked.
            let cmd = transfer(
                id,
                "hot",
                "funding",
                1,
                Some(start().saturating_add_micros(500_000)),
            );
            let mut out = Vec::with_capacity(1);
            ledger
                .execute(&cmd, &Trace::default(), clock, 0, &mut out)
                .expect("no invariant breaks")
                .expect("accepted")
        })
    });
    g.finish();
}

/// Replay: applying recorded events to an empty ledger.
fn replay(c: &mut Criterion) {
    let build = || {
        let (mut ledger, mut events) = ledger_with_accounts(10_000, false);
        for cmd in random_transfers(200_000, 10_000, 1, 7) {
            ledger
                .execute(&cmd, &Trace::default(), start(), 0, &mut events)
                .expect("no invariant breaks")
                .expect("accepted");
        }
        events
    };
    let mut g = c.benchmark_group("replay");
    // 10,001 account openings + 200,000 transfers.
    g.throughput(Throughput::Elements(210_001));
    g.sample_size(10);
    let mut data = None;
    g.bench_function("apply_210k_events_10000_accounts", |b| {
        let events: &Vec<_> = data.get_or_insert_with(build);
        b.iter(|| {
            let mut l = Ledger::new(config());
            for e in events {
                l.apply(e).expect("replays");
            }
            l
        })
    });
    // What the engine's replay does: index changes applied account by account.
    g.bench_function("apply_all_210k_events_10000_accounts", |b| {
        let events: &Vec<_> = data.get_or_insert_with(build);
        b.iter(|| {
            let mut l = Ledger::new(config());
            l.apply_all(events).expect("replays");
            l
        })
    });
    // The same, with each rebuilt ledger dropped outside the timing: criterion keeps a
    // sample's ledgers and drops them after timing it, so most iterations replay into memory
    // that no ledger before them freed, as a process that starts up and replays does.
    g.bench_function("apply_all_210k_events_10000_accounts_drop_excluded", |b| {
        let events: &Vec<_> = data.get_or_insert_with(build);
        b.iter_with_large_drop(|| {
            let mut l = Ledger::new(config());
            l.apply_all(events).expect("replays");
            l
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = transfers, transfers_growing, balances, backdated, replay
}
criterion_main!(benches);
