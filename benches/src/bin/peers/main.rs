//! Side-by-side PostgreSQL benchmark: UltraCore's `PgEventStore` path against `cala-ledger`
//! and `cqrs-es` + `postgres-es`, same run, same machine, same PostgreSQL server, the same
//! seeded two-posting transfers between the same number of accounts.
//!
//! ```text
//! cargo run --release -p ultracore-benches --features peers --bin peers -- \
//!     [transfers] [accounts] [systems]      # defaults: 20000 1000 ultracore,cala,cqrs
//! ```
//!
//! Each system gets a fresh database of its own on the server named by
//! `ULTRACORE_BENCH_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`;
//! a superuser, for `CHECKPOINT` before each system), dropped at the end. Phases, in order,
//! for every system:
//!
//! * `single ×1`: one task, one transfer per commit (`transfers / 20` of them);
//! * `single ×8`, `single ×64`: that many tasks, one transfer per request each
//!   (`transfers / 4` of them);
//! * `batch ×1`, `batch ×4`: requests of 1,000 transfers, one or four callers (`transfers`
//!   of them), where the system has a batch API.
//!
//! What a "transfer" is for each system is in `docs/BENCHMARKS.md` ("Side by side").

mod cala;
mod cqrs;
mod ultracore;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use ultracore_benches::SplitMix;

/// Transfers per request in the batched phases.
pub const BATCH: usize = 1_000;

/// One two-posting transfer of the workload: `minor` cents from `from` to `to`.
#[derive(Clone, Copy, Debug)]
pub struct Transfer {
    /// Unique across the run (UltraCore's entry id is derived from it).
    pub id: u64,
    /// Index of the debited account.
    pub from: u64,
    /// Index of the credited account, never `from`.
    pub to: u64,
    /// Amount in cents, 1..=10,000.
    pub minor: i64,
}

/// A system under test, set up with its accounts.
#[async_trait]
pub trait System: Send + Sync {
    /// One transfer, committed before it returns.
    async fn transfer(&self, t: Transfer);
    /// Many transfers in one commit; `false` if the system has no batch API.
    async fn batch(&self, ts: Vec<Transfer>) -> bool;
    /// Transfers found in the database afterwards (a check that the run did what it says).
    async fn count(&self) -> u64;
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let transfers: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let accounts: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let systems = args
        .next()
        .unwrap_or_else(|| "ultracore,cala,cqrs".to_string());
    let url = std::env::var("ULTRACORE_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    println!("{transfers} transfers over {accounts} accounts; PostgreSQL at {url}");
    let mut results = Vec::new();
    for name in systems.split(',') {
        let db = format!("uc_peers_{}_{name}", std::process::id());
        admin(&url, &format!("CREATE DATABASE {db}")).await;
        let db_url = with_database(&url, &db);
        let system: Arc<dyn System> = match name {
            "ultracore" => Arc::new(ultracore::Ultracore::setup(&db_url, accounts).await),
            "cala" => Arc::new(cala::Cala::setup(&db_url, accounts).await),
            "cqrs" => Arc::new(cqrs::Cqrs::setup(&db_url, accounts).await),
            other => panic!("unknown system {other}: ultracore, cala or cqrs"),
        };
        // Every system starts right after a checkpoint: otherwise one that runs while the
        // previous system's writes are being checkpointed pays for them (its commits wait
        // behind the checkpointer's disk writes, and its first touch of each page writes a
        // full page image to the WAL).
        admin(&url, "CHECKPOINT").await;
        let wal_before = query_i64(&url, "SELECT (pg_current_wal_lsn() - '0/0')::int8").await;
        let rates = run_phases(name, &system, transfers, accounts).await;
        let wal = query_i64(&url, "SELECT (pg_current_wal_lsn() - '0/0')::int8").await - wal_before;
        let stored = system.count().await;
        let rows = query_i64(&db_url, ROWS).await;
        println!(
            "  {name}: {stored} transfers in the database; {rows} rows in its tables \
             ({:.1} per transfer); WAL written during the phases {:.0} bytes per transfer \
             (server-wide)",
            rows as f64 / stored.max(1) as f64,
            wal as f64 / stored.max(1) as f64
        );
        results.push((name.to_string(), rates));
        drop(system);
        admin(&url, &format!("DROP DATABASE {db} WITH (FORCE)")).await;
    }
    print_table(&results);
}

/// Rows in every table of the database (exact counts, not statistics).
const ROWS: &str = "SELECT coalesce(sum((xpath('/row/c/text()', query_to_xml(format( \
    'SELECT count(*) AS c FROM %I.%I', table_schema, table_name), false, true, '')))[1]::text::bigint), 0)::int8 \
    FROM information_schema.tables WHERE table_type = 'BASE TABLE' \
    AND table_schema NOT IN ('pg_catalog', 'information_schema')";

/// One integer from one query.
async fn query_i64(url: &str, sql: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e}"));
    let conn = tokio::spawn(connection);
    let row = client.query_one(sql, &[]).await.expect(sql);
    drop(client);
    let _ = conn.await;
    row.get(0)
}

/// The phases' names, in the order `run_phases` runs them.
const PHASES: [&str; 5] = [
    "single ×1",
    "single ×8",
    "single ×64",
    "batch ×1",
    "batch ×4",
];

/// Runs every phase on `system`; `None` where it has no batch API.
async fn run_phases(
    name: &str,
    system: &Arc<dyn System>,
    transfers: usize,
    accounts: u64,
) -> Vec<Option<f64>> {
    let mut first_id = 1;
    let mut rates = Vec::new();
    let shapes = [(1, false), (8, false), (64, false), (1, true), (4, true)];
    for (seed, (phase, (tasks, batched))) in (1..).zip(PHASES.iter().zip(shapes)) {
        let n = match (tasks, batched) {
            (1, false) => (transfers / 20).max(100),
            (_, false) => (transfers / 4).max(100),
            _ => transfers,
        };
        let work = workload(n, accounts, first_id, seed);
        first_id += n as u64;
        let start = Instant::now();
        let supported = if batched {
            batches(system, work, tasks).await
        } else {
            singles(system, work, tasks).await;
            true
        };
        let rate = supported.then(|| n as f64 / start.elapsed().as_secs_f64());
        match rate {
            Some(r) => println!("  {name} {phase}: {n} transfers, {r:.0}/s"),
            None => println!("  {name} {phase}: no batch API"),
        }
        rates.push(rate);
    }
    rates
}

/// `n` transfers between random pairs of `accounts` accounts, from the seed.
fn workload(n: usize, accounts: u64, first_id: u64, seed: u64) -> Vec<Transfer> {
    let mut rng = SplitMix(seed);
    (0..n as u64)
        .map(|i| {
            let from = rng.below(accounts);
            let to = (from + 1 + rng.below(accounts - 1)) % accounts;
            let minor = 1 + rng.below(10_000) as i64;
            Transfer {
                id: first_id + i,
                from,
                to,
                minor,
            }
        })
        .collect()
}

/// `tasks` callers take transfers from a shared queue, one request each; prints the latency
/// percentiles of the requests.
async fn singles(system: &Arc<dyn System>, work: Vec<Transfer>, tasks: usize) {
    let work = Arc::new(work);
    let next = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..tasks)
        .map(|_| {
            let (system, work, next) = (system.clone(), work.clone(), next.clone());
            tokio::spawn(async move {
                let mut micros = Vec::new();
                while let Some(t) = work.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let start = Instant::now();
                    system.transfer(*t).await;
                    micros.push(start.elapsed().as_micros() as u64);
                }
                micros
            })
        })
        .collect();
    let mut micros = Vec::new();
    for c in callers {
        micros.extend(c.await.expect("caller"));
    }
    micros.sort_unstable();
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize];
    println!(
        "    latency µs: p50 {} p90 {} p99 {} max {}",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

/// `tasks` callers take requests of `BATCH` transfers from a shared queue; `false` if the
/// system has no batch API.
async fn batches(system: &Arc<dyn System>, work: Vec<Transfer>, tasks: usize) -> bool {
    let chunks: Arc<Vec<Vec<Transfer>>> = Arc::new(work.chunks(BATCH).map(<[_]>::to_vec).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..tasks)
        .map(|_| {
            let (system, chunks, next) = (system.clone(), chunks.clone(), next.clone());
            tokio::spawn(async move {
                while let Some(c) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if !system.batch(c.clone()).await {
                        return false;
                    }
                }
                true
            })
        })
        .collect();
    let mut supported = true;
    for c in callers {
        supported &= c.await.expect("caller");
    }
    supported
}

/// Runs one statement on the server's maintenance database.
async fn admin(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e}"));
    let conn = tokio::spawn(connection);
    client.batch_execute(sql).await.expect(sql);
    drop(client);
    let _ = conn.await;
}

/// `url` with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let slash = base
        .rfind('/')
        .filter(|&i| i > "postgres://".len())
        .unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..slash]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn print_table(results: &[(String, Vec<Option<f64>>)]) {
    println!();
    print!("| system |");
    for p in PHASES {
        print!(" {p} |");
    }
    println!();
    println!("|---|{}", "---:|".repeat(PHASES.len()));
    for (name, rates) in results {
        print!("| {name} |");
        for r in rates {
            match r {
                Some(r) => print!(" {r:.0} |"),
                None => print!(" n/a |"),
            }
        }
        println!();
    }
}
