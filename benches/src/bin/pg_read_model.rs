//! The PostgreSQL read models: projection throughput and lag under the `pg_transfers` batched
//! load, a rebuild from the log, and as-of balance latency in SQL at 1,000,000 postings on one
//! account.
//!
//! ```text
//! cargo run --release -p ultracore-benches --bin pg_read_model -- [transfers] [accounts] [postings]
//! ```
//! Defaults: 100,000 transfers over 1,000 accounts (batches of 1,000 through the engine, as
//! `pg_transfers`'s batched phase) with a projector following; then 1,000,000 transfers into
//! one account (10% back-dated up to 30 days), appended in batches and projected, then 2,000
//! as-of balances at random (valid time, position). Uses `ULTRACORE_BENCH_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`) and two schemas of its own,
//! dropped at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ultracore_benches::{
    ledger_with_accounts, open, random_transfers, start, transfer, SplitMix, WallClock,
};
use ultracore_core::prelude::*;
use ultracore_core::store::AppendBatch;
use ultracore_postgres::{PgConfig, PgEventStore, Projector, ProjectorConfig, ReadModel};

const BATCH: usize = 1_000;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let transfers: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let accounts: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let postings: usize = args
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let url = std::env::var("ULTRACORE_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let pid = std::process::id();
    if transfers > 0 {
        let schema = format!("uc_bench_rm_{pid}");
        let store = connect(&url, &schema).await;
        under_load(&store, transfers, accounts).await;
        drop_schema(&store, &schema).await;
    }
    if postings > 0 {
        let schema = format!("uc_bench_rm1_{pid}");
        let store = connect(&url, &schema).await;
        one_account(&store, postings).await;
        drop_schema(&store, &schema).await;
    }
}

async fn connect(url: &str, schema: &str) -> PgEventStore {
    let config = PgConfig::new(url, schema).expect("config");
    match PgEventStore::connect(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("PostgreSQL at {url}: {e}");
            std::process::exit(2);
        }
    }
}

async fn drop_schema(store: &PgEventStore, schema: &str) {
    if let Ok(client) = store.pool().get().await {
        let _ = client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await;
    }
}

async fn log_end(store: &PgEventStore) -> u64 {
    EventStore::<LedgerEvent>::last_position(store)
        .await
        .expect("last position")
}

/// Phase 1: batched transfers through the engine with a projector following; then a rebuild.
async fn under_load(store: &PgEventStore, transfers: usize, accounts: u64) {
    let engine = Arc::new(
        Engine::open(store.clone(), Arc::new(WallClock), EngineConfig::default())
            .await
            .expect("engine"),
    );
    let mut setup = vec![(
        open("funding", AccountKind::Asset, Constraints::default()),
        Trace::default(),
    )];
    setup.extend((0..accounts).map(|i| {
        (
            open(
                &format!("a{i}"),
                AccountKind::Liability,
                Constraints::default(),
            ),
            Trace::default(),
        )
    }));
    for chunk in setup.chunks(BATCH) {
        for r in engine.execute_batch(chunk.to_vec()).await {
            r.expect("account opened");
        }
    }
    println!(
        "projection under load: {transfers} transfers over {accounts} accounts, batches of {BATCH}"
    );
    let mut projector = Projector::new(
        store.clone(),
        ProjectorConfig {
            progress_every: None,
            ..ProjectorConfig::default()
        },
    )
    .await
    .expect("projector");
    let lag = projector.lag();
    let follower = tokio::spawn(async move { projector.run().await });
    // Samples the lag (log end − checkpoint) every 250 ms; keeps the largest.
    let max_lag = Arc::new(AtomicU64::new(0));
    let sampler = {
        let store = store.clone();
        let lag = lag.clone();
        let max_lag = max_lag.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            for n in 1u64.. {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let behind = log_end(&store).await.saturating_sub(lag.checkpoint());
                max_lag.fetch_max(behind, Ordering::Relaxed);
                if n % 4 == 0 {
                    eprintln!(
                        "  [{:>3.0}s] lag {behind} events",
                        t.elapsed().as_secs_f64()
                    );
                }
            }
        })
    };
    let cmds = random_transfers(transfers, accounts, 1, 3);
    let t = Instant::now();
    for chunk in cmds.chunks(BATCH) {
        let batch = chunk
            .iter()
            .map(|c| (c.clone(), Trace::default()))
            .collect();
        for r in engine.execute_batch(batch).await {
            r.expect("accepted");
        }
    }
    let appended = t.elapsed();
    let end = log_end(store).await;
    while lag.checkpoint() < end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let projected = t.elapsed();
    sampler.abort();
    follower.abort();
    println!(
        "  appended {transfers} transfers in {:.2} s ({:.0}/s); projection caught up {:.2} s after the last append",
        appended.as_secs_f64(),
        transfers as f64 / appended.as_secs_f64(),
        (projected - appended).as_secs_f64()
    );
    println!(
        "  projection kept pace at {:.0} events/s (events {end} / {:.2} s)",
        transfers as f64 / projected.as_secs_f64(),
        projected.as_secs_f64()
    );
    println!(
        "  lag while appending: at most {} events (sampled every 250 ms)",
        max_lag.load(Ordering::Relaxed)
    );
    let t = Instant::now();
    let rebuilt = rebuild(store).await;
    println!(
        "  rebuild from the log: {rebuilt} events in {:.2} s ({:.0} events/s)",
        t.elapsed().as_secs_f64(),
        rebuilt as f64 / t.elapsed().as_secs_f64()
    );
}

/// Copies the log into a fresh schema and projects it from position 0.
async fn rebuild(from: &PgEventStore) -> u64 {
    let schema = format!("{}_rebuild", from.config().schema);
    let to = connect(&from.config().url, &schema).await;
    let client = to.pool().get().await.expect("client");
    client
        .batch_execute(&format!(
            "INSERT INTO {schema}.uc_events SELECT * FROM {}.uc_events",
            from.config().schema
        ))
        .await
        .expect("copy the log");
    drop(client);
    let mut p = Projector::new(to.clone(), ProjectorConfig::default())
        .await
        .expect("projector");
    let n = p.catch_up().await.expect("rebuild");
    drop_schema(&to, &schema).await;
    n
}

/// Phase 2: `n` transfers into one account, projected; then as-of balance latency.
async fn one_account(store: &PgEventStore, n: usize) {
    println!("as-of balance at {n} postings on one account");
    let (mut ledger, setup) = ledger_with_accounts(1, false);
    append(store, &setup).await;
    let mut rng = SplitMix(7);
    let day = 86_400_000_000i64;
    let t = Instant::now();
    let mut last_line = Instant::now();
    let chunk = 8_000;
    let mut done = 0;
    while done < n {
        let mut log = Vec::with_capacity(chunk);
        for i in done..(done + chunk).min(n) {
            // One transfer per simulated second; every tenth back-dated by up to 30 days.
            let now = start().saturating_add_micros(day + i as i64 * 1_000_000);
            let at = (rng.below(10) == 0)
                .then(|| now.saturating_add_micros(-(rng.below(30 * day as u64) as i64)))
                .filter(|at| *at > start());
            let cmd = transfer(
                i as u64,
                "funding",
                "a0",
                1 + rng.below(100_000) as i128,
                at,
            );
            ledger
                .execute(&cmd, &Trace::default(), now, 0, &mut log)
                .expect("no invariant breaks")
                .expect("accepted");
        }
        done += log.len();
        append(store, &log).await;
        if last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            eprintln!(
                "  appended {done}/{n} ({:.0}/s)",
                done as f64 / t.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "  appended {n} transfers in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut p = Projector::new(store.clone(), ProjectorConfig::default())
        .await
        .expect("projector");
    let t = Instant::now();
    let events = p.catch_up().await.expect("projection");
    println!(
        "  projected {events} events in {:.1} s ({:.0} events/s)",
        t.elapsed().as_secs_f64(),
        events as f64 / t.elapsed().as_secs_f64()
    );
    if let Ok(client) = store.pool().get().await {
        // Index-only scans need the visibility map: what autovacuum does on a live system.
        let _ = client.batch_execute("VACUUM ANALYZE").await;
    }
    let rm = ReadModel::new(store, "ledger");
    let account: AccountId = "a0".parse().expect("id");
    let last = p.checkpoint();
    let first_at = start().as_micros();
    let last_at = start().as_micros() + day + n as i64 * 1_000_000;
    let mut rng = SplitMix(11);
    for (label, known) in [("position", true), ("now", false)] {
        let mut micros = Vec::new();
        for i in 0..2_000 {
            let v =
                Timestamp::from_micros(first_at + rng.below((last_at - first_at) as u64) as i64)
                    .expect("time");
            let k = if known {
                KnownAt::Position(1 + rng.below(last))
            } else {
                KnownAt::Now
            };
            let t = Instant::now();
            let b = rm.balance(&account, v, k).await.expect("balance");
            micros.push(t.elapsed().as_micros() as u64);
            if i == 0 {
                // The first answer checked against core (same log, same basis).
                let core = ledger.balance(&account, v, k).expect("core");
                assert_eq!(b, core, "SQL and core disagree");
            }
        }
        micros.sort_unstable();
        let pct = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize];
        println!(
            "  balance(a0, random valid_at, known_at = {label}): p50 {} µs, p99 {} µs, max {} µs ({} queries)",
            pct(0.5),
            pct(0.99),
            micros[micros.len() - 1],
            micros.len()
        );
    }
    // The same sums by a full scan of the account's rows in force (no summaries).
    let mut micros = Vec::new();
    for _ in 0..20 {
        let v = Timestamp::from_micros(first_at + rng.below((last_at - first_at) as u64) as i64)
            .expect("time");
        let pos = 1 + rng.below(last);
        let t = Instant::now();
        let scan = rm.sums_by_scan(&account, v, pos).await.expect("scan");
        micros.push(t.elapsed().as_micros() as u64);
        assert_eq!(rm.sums(&account, v, pos).await.expect("sums"), scan);
    }
    micros.sort_unstable();
    println!(
        "  the same by full scan (no summaries): p50 {} µs ({} queries)",
        micros[micros.len() / 2],
        micros.len()
    );
}

async fn append(store: &PgEventStore, events: &[Envelope<LedgerEvent>]) {
    for chunk in events.chunks(ultracore_core::limits::EVENTS_PER_APPEND_MAX.min(8_000)) {
        let expected = chunk[0].position - 1;
        store
            .append(AppendBatch {
                expected_position: expected,
                expectations: Vec::new(),
                events: chunk.to_vec(),
            })
            .await
            .expect("append");
    }
}
