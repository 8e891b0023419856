//! Two-posting transfers per second through the PostgreSQL event store (durable: each batch is
//! one committed transaction), in three shapes:
//!
//! * `single`: one caller, one transfer per request: one commit per transfer;
//! * `concurrent`: 64 callers, one transfer each per request: the engine's group commit puts
//!   all waiting requests in one commit;
//! * `batched`: requests of 1,000 transfers (the bulk-load path): one commit per request.
//!
//! ```text
//! cargo run --release -p ultracore-benches --bin pg_transfers -- [transfers] [accounts]
//! ```
//! Uses `ULTRACORE_BENCH_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and a schema of its own, dropped at the end. Prints a progress line every second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ultracore_benches::{open, random_transfers, WallClock};
use ultracore_core::prelude::*;
use ultracore_postgres::{PgConfig, PgEventStore};

const CALLERS: usize = 64;
const BATCH: usize = 1_000;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let transfers: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let accounts: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let url = std::env::var("ULTRACORE_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let schema = format!("uc_bench_{}", std::process::id());
    let config = PgConfig::new(&url, &schema).expect("config");
    let store = match PgEventStore::connect(config.clone()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("PostgreSQL at {url}: {e}");
            std::process::exit(2);
        }
    };
    let engine = Arc::new(
        Engine::open(store.clone(), Arc::new(WallClock), EngineConfig::default())
            .await
            .expect("engine"),
    );
    let mut setup: Vec<_> = (0..accounts)
        .map(|i| {
            open(
                &format!("a{i}"),
                AccountKind::Liability,
                Constraints::default(),
            )
        })
        .map(|c| (c, Trace::default()))
        .collect();
    setup.insert(
        0,
        (
            open("funding", AccountKind::Asset, Constraints::default()),
            Trace::default(),
        ),
    );
    for chunk in setup.chunks(BATCH) {
        for r in engine.execute_batch(chunk.to_vec()).await {
            r.expect("account opened");
        }
    }
    println!("PostgreSQL event store, {accounts} accounts, schema {schema}");
    let mut first_id = 1u64;
    // One caller: every transfer is its own commit; a tenth of the workload is enough.
    let n = (transfers / 10).max(100);
    let cmds = random_transfers(n, accounts, first_id, 1);
    first_id += n as u64;
    let rate = run("single (1 caller, 1 transfer per commit)", n, || {
        let engine = engine.clone();
        async move {
            let done = Arc::new(AtomicU64::new(0));
            let progress = progress(done.clone(), n);
            for c in cmds {
                engine.execute(c, Trace::default()).await.expect("accepted");
                done.fetch_add(1, Ordering::Relaxed);
            }
            progress.abort();
        }
    })
    .await;
    println!("  → {rate:.0} transfers/s");
    let cmds = random_transfers(transfers, accounts, first_id, 2);
    first_id += transfers as u64;
    let rate = run("concurrent (64 callers, group commit)", transfers, || {
        let engine = engine.clone();
        async move {
            let done = Arc::new(AtomicU64::new(0));
            let progress = progress(done.clone(), transfers);
            let per = transfers.div_ceil(CALLERS);
            let mut tasks = Vec::new();
            for part in cmds.chunks(per).map(|c| c.to_vec()) {
                let engine = engine.clone();
                let done = done.clone();
                tasks.push(tokio::spawn(async move {
                    for c in part {
                        engine.execute(c, Trace::default()).await.expect("accepted");
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in tasks {
                t.await.expect("caller");
            }
            progress.abort();
        }
    })
    .await;
    println!("  → {rate:.0} transfers/s");
    let cmds = random_transfers(transfers, accounts, first_id, 3);
    let rate = run("batched (1,000 transfers per request)", transfers, || {
        let engine = engine.clone();
        async move {
            let done = Arc::new(AtomicU64::new(0));
            let progress = progress(done.clone(), transfers);
            for chunk in cmds.chunks(BATCH) {
                let batch = chunk
                    .iter()
                    .map(|c| (c.clone(), Trace::default()))
                    .collect();
                for r in engine.execute_batch(batch).await {
                    r.expect("accepted");
                }
                done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            progress.abort();
        }
    })
    .await;
    println!("  → {rate:.0} transfers/s");
    let stats = engine.stats();
    println!("engine: {} appends, {} events", stats.batches, stats.events);
    if let Ok(client) = store.pool().get().await {
        let _ = client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await;
    }
}

async fn run<F, Fut>(name: &str, n: usize, f: F) -> f64
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    println!("{name}: {n} transfers");
    let t = Instant::now();
    f().await;
    n as f64 / t.elapsed().as_secs_f64()
}

fn progress(done: Arc<AtomicU64>, total: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let d = done.load(Ordering::Relaxed);
            eprintln!(
                "  [{:>3.0}s] {d}/{total} ({:.0}/s)",
                start.elapsed().as_secs_f64(),
                d as f64 / start.elapsed().as_secs_f64()
            );
        }
    })
}
