//! A plain loop over one workload, for profilers (`perf record`, `valgrind --tool=callgrind`):
//! `cargo run --release -p ultracore-benches --bin profile -- transfers|clone|replay|decide|snapshot|delta|floor [rounds]`.

use std::time::Instant;

use ultracore_benches::*;
use ultracore_core::event::Trace;
use ultracore_core::ledger::Ledger;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "transfers".into());
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(20);
    match mode.as_str() {
        "transfers" => transfers(rounds),
        "clone" => clone_batches(rounds),
        "replay" => replay(rounds),
        "decide" => decide_only(rounds),
        "snapshot" => snapshot(rounds),
        "delta" => delta(rounds),
        "floor" => floor(rounds),
        other => eprintln!("unknown mode {other}: transfers | replay"),
    }
}

fn transfers(rounds: usize) {
    // Steady state: one ledger keeps growing; accounts already hold history. Commands are
    // built before timing (and envelopes dropped after), so a profile shows only the loop.
    let accounts: u64 = std::env::var("UC_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut ledger = warm_ledger(accounts as usize, 10);
    let batches: Vec<_> = (0..rounds)
        .map(|r| random_transfers(10_000, accounts, (r as u64 + 1) * 10_000, r as u64))
        .collect();
    ledger.reserve(rounds * 10_000);
    let faults = minor_faults();
    let t = Instant::now();
    let logs = run_transfers(&mut ledger, &batches);
    let total = t.elapsed();
    let faults = minor_faults() - faults;
    std::hint::black_box(&logs);
    let count = (rounds * 10_000) as f64;
    println!(
        "{:.0} transfers/s ({:.2} page faults per transfer)",
        count / total.as_secs_f64(),
        faults as f64 / count
    );
    std::process::exit(0); // skip dropping the ledger: not part of the measurement
}

/// Minor page faults of this process so far (`/proc/self/stat`, field 10); 0 where unreadable.
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = &s[s.rfind(')')? + 2..];
            rest.split(' ').nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The measured loop of `transfers`, a function of its own so that
/// `valgrind --tool=callgrind --toggle-collect='*run_transfers*'` counts only it.
#[inline(never)]
fn run_transfers(
    ledger: &mut Ledger,
    batches: &[Vec<ultracore_core::ledger::Command>],
) -> Vec<Vec<ultracore_core::event::Envelope<ultracore_core::ledger::LedgerEvent>>> {
    // As the engine executes a batch: each window warmed first; `UC_WARM=0` turns that off,
    // `UC_WARM=N` sets the window.
    let window: usize = std::env::var("UC_WARM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ultracore_core::ledger::WARM_WINDOW);
    // `UC_REUSE_OUT=1`: one output vector for every batch, its envelopes dropped (inside the
    // timing) before the next batch, as the engine's store consumes each batch's events;
    // otherwise every batch writes its envelopes into fresh memory, kept until the end.
    let reuse = std::env::var("UC_REUSE_OUT").is_ok_and(|v| v == "1");
    let mut logs = Vec::with_capacity(batches.len());
    let mut shared = Vec::new();
    for (r, cmds) in batches.iter().enumerate() {
        let start = 1 + (r * cmds.len()) as i64;
        if reuse {
            shared.clear();
            execute_windows(ledger, cmds, window, start, &mut shared);
        } else {
            let mut out = Vec::with_capacity(cmds.len());
            execute_windows(ledger, cmds, window, start, &mut out);
            logs.push(out);
        }
    }
    if reuse {
        logs.push(shared);
    }
    logs
}

/// The criterion bench `decide_apply_transfer/uniform_10000_accounts` as a plain loop: each
/// batch of 10,000 transfers runs on a fresh clone of the same ledger, given room for the
/// batch (both untimed). `UC_ACCOUNTS=N` as for `transfers`; `UC_NO_ROOM=1` skips the
/// per-account room (the bench's `_no_room`); `UC_SPLIT=1` also prints the time spent warming.
fn clone_batches(rounds: usize) {
    const BATCH: usize = 10_000;
    let accounts: u64 = std::env::var("UC_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let room = !std::env::var("UC_NO_ROOM").is_ok_and(|v| v == "1");
    let base = warm_ledger(accounts as usize, 10);
    let mut busy = std::time::Duration::ZERO;
    // `UC_SPLIT=1`: also say how much of the time went to warming (`Ledger::warm`).
    let split = std::env::var_os("UC_SPLIT").is_some();
    let mut warm_t = std::time::Duration::ZERO;
    for r in 0..rounds {
        let mut ledger = base.clone();
        room_for_batch(&mut ledger, BATCH, accounts, room);
        let cmds = random_transfers(BATCH, accounts, (r as u64 + 1) * BATCH as u64, r as u64);
        let mut out = Vec::with_capacity(BATCH);
        let t = Instant::now();
        if split {
            // The same as `run_batch`, with the time spent warming each window counted apart.
            let w = ultracore_core::ledger::WARM_WINDOW;
            for (k, part) in cmds.chunks(w).enumerate() {
                let t0 = Instant::now();
                let warmed = ledger.warm(part);
                warm_t += t0.elapsed();
                execute_warmed(&mut ledger, part, &warmed, 1 + (k * w) as i64, &mut out);
            }
        } else {
            run_batch(&mut ledger, &cmds, &mut out);
        }
        busy += t.elapsed();
        std::hint::black_box((&ledger, &out));
    }
    println!(
        "{:.0} transfers/s",
        (rounds * BATCH) as f64 / busy.as_secs_f64()
    );
    if split {
        eprintln!(
            "warm {:.0} ns/transfer, total {:.0} ns/transfer",
            warm_t.as_nanos() as f64 / (rounds * BATCH) as f64,
            busy.as_nanos() as f64 / (rounds * BATCH) as f64
        );
    }
    std::process::exit(0);
}

/// The measured part of `clone` (for `--toggle-collect='*run_batch*'`).
#[inline(never)]
fn run_batch(
    ledger: &mut Ledger,
    cmds: &[ultracore_core::ledger::Command],
    out: &mut Vec<ultracore_core::event::Envelope<ultracore_core::ledger::LedgerEvent>>,
) {
    execute_windows(ledger, cmds, ultracore_core::ledger::WARM_WINDOW, 1, out);
}

fn replay(rounds: usize) {
    let (mut ledger, mut events) = ledger_with_accounts(10_000, false);
    // `UC_SPREAD=1`: each transfer effective 1 µs after the one before (its own instant in
    // every timeline) instead of all at one instant.
    let spread = std::env::var("UC_SPREAD").is_ok_and(|v| v == "1");
    for (i, cmd) in random_transfers(200_000, 10_000, 1, 7).iter().enumerate() {
        let now = if spread {
            start().saturating_add_micros(i as i64)
        } else {
            start()
        };
        let _ = ledger.execute(cmd, &Trace::default(), now, 0, &mut events);
    }
    // `UC_REPLAY=one-by-one`: `Ledger::apply` per event instead of `apply_all`; `UC_BUF=N`:
    // `apply_all_buffered` with a buffer of N index changes instead of the default.
    let bulk = std::env::var("UC_REPLAY").map_or(true, |v| v != "one-by-one");
    let mut busy = std::time::Duration::ZERO;
    let mut dropping = std::time::Duration::ZERO;
    for _ in 0..rounds {
        let t = Instant::now();
        let mut l = Ledger::new(config());
        if bulk {
            match std::env::var("UC_BUF").ok().and_then(|v| v.parse().ok()) {
                Some(max) => l.apply_all_buffered(&events, max).expect("replays"),
                None => l.apply_all(&events).expect("replays"),
            }
        } else {
            for e in &events {
                l.apply(e).expect("replays");
            }
        }
        busy += t.elapsed();
        let t = Instant::now();
        drop(std::hint::black_box(l));
        dropping += t.elapsed();
    }
    println!(
        "drop: {:.0} ms per ledger",
        dropping.as_secs_f64() * 1e3 / rounds as f64
    );
    let per = busy.as_secs_f64() / rounds as f64;
    let how = if bulk { "apply_all" } else { "one by one" };
    println!("{:.0} events/s ({how})", events.len() as f64 / per);
}

fn decide_only(rounds: usize) {
    use ultracore_core::ledger::Context;
    let (base, _) = ledger_with_accounts(10_000, false);
    let cmds = random_transfers(10_000, 10_000, 10_000, 1);
    let ctx = Context {
        now: start(),
        next_position: base.position() + 1,
    };
    let t = Instant::now();
    for _ in 0..rounds {
        for cmd in &cmds {
            std::hint::black_box(base.decide(cmd, &ctx));
        }
    }
    let n = (rounds * cmds.len()) as f64;
    println!("{:.0} decisions/s", n / t.elapsed().as_secs_f64());
}

fn snapshot(rounds: usize) {
    let (mut ledger, mut events) = ledger_with_accounts(10_000, false);
    for cmd in random_transfers(200_000, 10_000, 1, 7) {
        let _ = ledger.execute(&cmd, &Trace::default(), start(), 0, &mut events);
    }
    // What a copy of the state would cost (the server does not copy: it encodes in steps
    // beside the writers, see ARCHITECTURE "Snapshots are encoded in steps").
    let t = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(ledger.clone());
    }
    let copy = t.elapsed().as_secs_f64() / rounds as f64;
    println!("copy of the state (for comparison): {:.0} ms", copy * 1e3);
    let t = Instant::now();
    let mut bytes = Vec::new();
    for _ in 0..rounds {
        bytes = ledger.encode_snapshot();
    }
    let encode = t.elapsed().as_secs_f64() / rounds as f64;
    let t = Instant::now();
    for _ in 0..rounds {
        let l = Ledger::decode_snapshot(config(), &bytes).expect("decodes");
        std::hint::black_box(&l);
    }
    let decode = t.elapsed().as_secs_f64() / rounds as f64;
    println!(
        "snapshot of {} events: {} MB, encode {:.0} ms, decode {:.0} ms ({:.0} events/s restored)",
        events.len(),
        bytes.len() / 1_000_000,
        encode * 1e3,
        decode * 1e3,
        events.len() as f64 / decode
    );
}

/// A full snapshot at 200,000 transfers, then a delta snapshot of 200,000 more: how fast
/// each restores, in events per second.
fn delta(rounds: usize) {
    let (mut ledger, mut events) = ledger_with_accounts(10_000, false);
    for cmd in random_transfers(200_000, 10_000, 1, 7) {
        let _ = ledger.execute(&cmd, &Trace::default(), start(), 0, &mut events);
    }
    let at_base = events.len();
    let mut job = ledger.begin_snapshot();
    while !ledger
        .snapshot_step(&mut job, usize::MAX)
        .expect("same cut")
    {}
    ledger.end_snapshot(&job);
    let base = job.into_bytes();
    ledger.snapshot_saved(&base);
    for cmd in random_transfers(200_000, 10_000, 200_001, 8) {
        let _ = ledger.execute(&cmd, &Trace::default(), start(), 0, &mut events);
    }
    let t = Instant::now();
    let mut delta = Vec::new();
    for _ in 0..rounds {
        let mut job = ledger.begin_delta().expect("a saved base");
        while !ledger
            .snapshot_step(&mut job, usize::MAX)
            .expect("same cut")
        {}
        ledger.end_snapshot(&job);
        delta = job.into_bytes();
    }
    let encode = t.elapsed().as_secs_f64() / rounds as f64;
    let (mut decode, mut apply) = (0.0, 0.0);
    let in_delta = events.len() - at_base;
    for _ in 0..rounds {
        let t = Instant::now();
        // With room for the delta, as `Engine::load_snapshot` decodes.
        let l = Ledger::decode_snapshot_with_room(config(), &base, in_delta).expect("decodes");
        decode += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let l = l.apply_delta(&delta).expect("applies");
        apply += t.elapsed().as_secs_f64();
        std::hint::black_box(&l);
    }
    let (decode, apply) = (decode / rounds as f64, apply / rounds as f64);
    println!(
        "full snapshot of {at_base} events: {} MB, decode {:.0} ms ({:.0} events/s); \
         delta of {in_delta} events: {} MB, encode {:.0} ms, apply {:.0} ms ({:.0} events/s)",
        base.len() / 1_000_000,
        decode * 1e3,
        at_base as f64 / decode,
        delta.len() / 1_000_000,
        encode * 1e3,
        apply * 1e3,
        in_delta as f64 / apply,
    );
}

/// The floor: the least work any ledger must do per two-posting transfer over 10,000
/// accounts (an idempotency lookup and insert of the id, two account lookups by id, two
/// compact account updates, two 40-byte change records and one 64-byte entry record appended),
/// with none of UltraCore's validation, events or indexes. Tells how far the real path is
/// from what the hardware allows.
fn floor(rounds: usize) {
    use std::collections::HashMap;
    #[derive(Clone, Copy, Default)]
    struct Hot {
        posted: i128,
        last: i64,
        count: u32,
    }
    let accounts = 10_000u64;
    let h = foldhash::fast::FixedState::with_seed(7);
    let mut ix: HashMap<String, u32, _> = HashMap::with_hasher(h.clone());
    for i in 0..accounts {
        ix.insert(format!("a{i}"), i as u32);
    }
    let mut hot = vec![Hot::default(); accounts as usize];
    let n = rounds * 10_000;
    let mut rng = SplitMix(1);
    let cmds: Vec<(String, String, String, i128)> = (0..n)
        .map(|i| {
            let from = rng.below(accounts);
            let to = (from + 1 + rng.below(accounts - 1)) % accounts;
            (
                format!("t{i}"),
                format!("a{from}"),
                format!("a{to}"),
                1 + rng.below(10_000) as i128,
            )
        })
        .collect();
    let mut entries: HashMap<String, u32, _> = HashMap::with_hasher(h);
    entries.reserve(n);
    let mut changes: Vec<(u32, i64, i128)> = Vec::with_capacity(2 * n);
    let mut records: Vec<[u64; 8]> = Vec::with_capacity(n);
    let t = Instant::now();
    for (i, (id, from, to, amount)) in cmds.iter().enumerate() {
        if entries.contains_key(id.as_str()) {
            continue;
        }
        let (Some(&a), Some(&b)) = (ix.get(from.as_str()), ix.get(to.as_str())) else {
            continue;
        };
        let now = i as i64;
        for (acc, d) in [(a, -amount), (b, *amount)] {
            let st = &mut hot[acc as usize];
            st.posted += d;
            st.last = now;
            st.count += 1;
            changes.push((acc, now, d));
        }
        records.push([
            i as u64,
            a as u64,
            b as u64,
            *amount as u64,
            now as u64,
            0,
            0,
            0,
        ]);
        entries.insert(id.clone(), i as u32);
    }
    let per = t.elapsed().as_secs_f64() / n as f64;
    std::hint::black_box((&hot, &changes, &records));
    println!(
        "floor: {:.0} ns per transfer ({:.0} transfers/s)",
        per * 1e9,
        1.0 / per
    );
    std::process::exit(0);
}
