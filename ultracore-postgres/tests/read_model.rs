//! The SQL read models against core: random histories (back-dating, corrections, holds,
//! reversals, freezes) go through the in-memory `Ledger` and through `PgEventStore` +
//! `Projector`; balances, statements and restatements must agree at many (valid_at,
//! known_at) points. Also: a projection interrupted between its rows and its checkpoint
//! catches up exactly once, and the exclusion constraints refuse overlapping versions.

mod common;

use std::time::Duration;

use ultracore_core::event::{Envelope, Trace};
use ultracore_core::ledger::{KnownAt, Ledger, LedgerEvent, QueryError};
use ultracore_core::store::{AppendBatch, EventStore};
use ultracore_core::testing::workload::Workload;
use ultracore_core::time::Timestamp;
use ultracore_postgres::{
    PgEventStore, ProjectionError, Projector, ProjectorConfig, ReadError, ReadModel,
};

/// A small deterministic generator for the points asked (independent of the workload's).
struct Pick(u64);

impl Pick {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The ledger after `n` workload commands, and its log.
fn history(seed: u64, n: usize) -> (Ledger, Vec<Envelope<LedgerEvent>>) {
    let mut workload = Workload::new(seed);
    let mut ledger = Ledger::default();
    let mut log = Vec::new();
    let mut now = Workload::start();
    for _ in 0..n {
        let cmd = workload.next(&ledger, now);
        let _answer = ledger
            .execute(&cmd, &Trace::default(), now, 0, &mut log)
            .expect("no invariant breaks");
        now = now.saturating_add_micros(workload.advance_micros());
    }
    (ledger, log)
}

/// Appends `log` in batches of varying size.
async fn append_all(store: &PgEventStore, log: &[Envelope<LedgerEvent>], pick: &mut Pick) {
    let mut at = 0;
    while at < log.len() {
        let n = (1 + pick.below(40) as usize).min(log.len() - at);
        let batch = AppendBatch {
            expected_position: at as u64,
            expectations: Vec::new(),
            events: log[at..at + n].to_vec(),
        };
        EventStore::append(store, batch).await.expect("append");
        at += n;
    }
}

fn config(page: usize, block_changes: i64) -> ProjectorConfig {
    ProjectorConfig {
        page_events: page,
        progress_every: None,
        partition_positions: 97,
        block_changes,
        ..ProjectorConfig::default()
    }
}

fn same<T: PartialEq + std::fmt::Debug>(
    what: &str,
    core: Result<T, QueryError>,
    sql: Result<T, ReadError>,
) {
    match (core, sql) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{what}"),
        (Err(a), Err(ReadError::Query(b))) => assert_eq!(a, b, "{what}"),
        (a, b) => panic!("{what}: core {a:?}, sql {b:?}"),
    }
}

/// Interesting instants: every valid and transaction time of the log (and a microsecond
/// either side), plus a few random ones.
fn instants(log: &[Envelope<LedgerEvent>], pick: &mut Pick, n: usize) -> Vec<Timestamp> {
    let mut out = Vec::new();
    for _ in 0..n {
        let e = &log[pick.below(log.len() as u64) as usize];
        let base = if pick.below(2) == 0 {
            e.effective_at.0
        } else {
            e.recorded_at.0
        };
        let shift = [-1i64, 0, 1, 3_600_000_000, -86_400_000_000][pick.below(5) as usize];
        out.push(base.saturating_add_micros(shift));
    }
    out
}

fn known(log: &[Envelope<LedgerEvent>], pick: &mut Pick) -> KnownAt {
    let last = log.len() as u64;
    match pick.below(4) {
        0 => KnownAt::Now,
        1 => KnownAt::Position(pick.below(last + 2)),
        2 => {
            let e = &log[pick.below(last) as usize];
            KnownAt::Time(
                e.recorded_at
                    .0
                    .saturating_add_micros(pick.below(3) as i64 - 1),
            )
        }
        _ => KnownAt::Position(last.saturating_sub(pick.below(5))),
    }
}

/// Asks core and SQL the same questions.
async fn compare(ledger: &Ledger, log: &[Envelope<LedgerEvent>], rm: &ReadModel, seed: u64) {
    let mut pick = Pick(seed.wrapping_mul(31) | 1);
    let accounts: Vec<_> = ledger.accounts().map(|a| a.id.clone()).collect();
    assert!(
        !accounts.is_empty(),
        "seed {seed}: the workload opened no account"
    );
    let valid = instants(log, &mut pick, 24);
    // So the comparison cannot pass by comparing only empty answers.
    let (mut lines, mut changes) = (0, 0);
    for account in &accounts {
        for v in &valid {
            let k = known(log, &mut pick);
            if let Ok(b) = ledger.basis(k) {
                let scan = rm
                    .sums_by_scan(account, *v, b.position)
                    .await
                    .expect("scan");
                let fast = rm.sums(account, *v, b.position).await.expect("sums");
                assert_eq!(
                    fast, scan,
                    "seed {seed}: sums of {account} at {v}, position {}",
                    b.position
                );
            }
            same(
                &format!("seed {seed}: balance {account} at {v} known {k:?}"),
                ledger.balance(account, *v, k),
                rm.balance(account, *v, k).await,
            );
        }
        for _ in 0..4 {
            let (a, b) = (
                valid[pick.below(valid.len() as u64) as usize],
                valid[pick.below(valid.len() as u64) as usize],
            );
            let (from, to) = (a.min(b), a.max(b));
            let k = known(log, &mut pick);
            let core = ledger.statement(account, from, to, k);
            lines += core.as_ref().map_or(0, |s| s.lines.len());
            same(
                &format!("seed {seed}: statement {account} {from}..{to} known {k:?}"),
                core,
                rm.statement(account, from, to, k).await,
            );
            let (k1, k2) = (known(log, &mut pick), known(log, &mut pick));
            let core = ledger.restatement(account, from, to, k1, k2);
            changes += core.as_ref().map_or(0, |r| r.changes.len());
            same(
                &format!("seed {seed}: restatement {account} {from}..{to} {k1:?} → {k2:?}"),
                core,
                rm.restatement(account, from, to, k1, k2).await,
            );
        }
    }
    assert!(
        lines > 20 && changes > 5,
        "seed {seed}: {lines} lines, {changes} changes compared"
    );
    let missing = "no-such-account".parse().expect("id");
    same(
        "unknown account",
        ledger.balance(&missing, valid[0], KnownAt::Now),
        rm.balance(&missing, valid[0], KnownAt::Now).await,
    );
}

async fn differential(seed: u64, commands: usize, page: usize, block_changes: i64) {
    let db = common::TestDb::create();
    let store = db.fresh_store();
    let (ledger, log) = history(seed, commands);
    let mut pick = Pick(seed | 1);
    append_all(&store, &log, &mut pick).await;
    let mut projector = Projector::new(store.clone(), config(page, block_changes))
        .await
        .expect("projector");
    let applied = projector.catch_up().await.expect("catch up");
    assert_eq!(applied, log.len() as u64, "seed {seed}");
    assert_eq!(projector.lag().events(), 0);
    let rm = ReadModel::new(&store, "ledger");
    compare(&ledger, &log, &rm, seed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_answers_equal_core_answers_small_blocks() {
    // One change per block: every page closes blocks, and upper levels form early.
    for seed in [1, 2] {
        differential(seed, 700, 13, 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_answers_equal_core_answers_default_blocks() {
    for seed in [3, 4] {
        differential(seed, 500, 250, 3).await;
    }
}

/// Counts rows of the read-model tables, to see that nothing was written twice or lost.
async fn table_counts(store: &PgEventStore) -> Vec<i64> {
    let client = store.pool().get().await.expect("client");
    let mut out = Vec::new();
    for table in [
        "uc_transactions",
        "uc_entries",
        "uc_postings",
        "uc_accounts",
        "uc_balance_blocks",
        "uc_balance_sums",
    ] {
        let row = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count");
        out.push(row.get(0));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_between_rows_and_checkpoint_leaves_nothing_and_catches_up_exactly_once() {
    let db = common::TestDb::create();
    let store = db.fresh_store();
    let reference = db.fresh_store();
    let seed = 5;
    let (ledger, log) = history(seed, 400);
    let mut pick = Pick(seed);
    append_all(&store, &log, &mut pick).await;
    append_all(&reference, &log, &mut pick).await;
    // The reference: projected in one go, no failure.
    Projector::new(reference.clone(), config(50, 2))
        .await
        .expect("projector")
        .catch_up()
        .await
        .expect("reference");
    let failing_at = (log.len() / 2) as u64;
    let mut faulty = Projector::new(
        store.clone(),
        ProjectorConfig {
            fail_before_checkpoint_at: Some(failing_at),
            ..config(50, 2)
        },
    )
    .await
    .expect("projector");
    match faulty.catch_up().await {
        Err(ProjectionError::Injected(p)) => assert_eq!(p, failing_at),
        other => panic!("expected the injected failure, got {other:?}"),
    }
    let checkpoint = faulty.checkpoint();
    assert!(checkpoint < failing_at && checkpoint > 0);
    drop(faulty);
    // Nothing past the checkpoint is visible: the failed page's rows rolled back with it.
    let client = store.pool().get().await.expect("client");
    let row = client
        .query_one(
            "SELECT (SELECT coalesce(max(position), 0) FROM uc_transactions), \
                    (SELECT coalesce(max(recorded_position), 0) FROM uc_postings), \
                    (SELECT count(*) FROM uc_postings WHERE superseded_position > $1), \
                    (SELECT position FROM uc_projection_checkpoints WHERE projection = 'ledger')",
            &[&(checkpoint as i64)],
        )
        .await
        .expect("query");
    let (tx_max, postings_max, closed_later, stored): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(tx_max as u64, checkpoint);
    assert!(postings_max as u64 <= checkpoint);
    assert_eq!(closed_later, 0);
    assert_eq!(stored as u64, checkpoint);
    // A new projector resumes from the checkpoint and applies the rest exactly once.
    let mut resumed = Projector::new(store.clone(), config(50, 2))
        .await
        .expect("projector");
    assert_eq!(resumed.checkpoint(), checkpoint);
    let applied = resumed.catch_up().await.expect("catch up");
    assert_eq!(applied, log.len() as u64 - checkpoint);
    assert_eq!(table_counts(&store).await, table_counts(&reference).await);
    compare(&ledger, &log, &ReadModel::new(&store, "ledger"), seed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_mid_page_again_and_again_ends_exactly_once() {
    let db = common::TestDb::create();
    let store = db.fresh_store();
    let seed = 6;
    let (ledger, log) = history(seed, 500);
    let mut pick = Pick(seed);
    // The log grows while projectors are started and killed (their task dropped at a random
    // moment, mid-transaction or not).
    let writer = {
        let store = store.clone();
        let log = log.clone();
        tokio::spawn(async move {
            let mut pick = Pick(99);
            let mut at = 0;
            while at < log.len() {
                let n = (1 + pick.below(30) as usize).min(log.len() - at);
                let batch = AppendBatch {
                    expected_position: at as u64,
                    expectations: Vec::new(),
                    events: log[at..at + n].to_vec(),
                };
                EventStore::append(&store, batch).await.expect("append");
                at += n;
                tokio::time::sleep(Duration::from_millis(pick.below(4))).await;
            }
        })
    };
    let mut kills = 0;
    while !writer.is_finished() || kills < 5 {
        let store = store.clone();
        let task = tokio::spawn(async move {
            let mut p = Projector::new(store, config(7, 1)).await?;
            p.run().await
        });
        tokio::time::sleep(Duration::from_millis(1 + pick.below(40))).await;
        task.abort();
        let _ = task.await;
        kills += 1;
    }
    writer.await.expect("writer");
    let mut last = Projector::new(store.clone(), config(7, 1))
        .await
        .expect("projector");
    last.catch_up().await.expect("catch up");
    assert_eq!(last.checkpoint(), log.len() as u64);
    let counts = table_counts(&store).await;
    assert_eq!(counts[0], log.len() as i64, "one transaction row per event");
    compare(&ledger, &log, &ReadModel::new(&store, "ledger"), seed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projectors_of_one_name_cannot_both_advance() {
    let db = common::TestDb::create();
    let store = db.fresh_store();
    let (_, log) = history(7, 100);
    append_all(&store, &log, &mut Pick(7)).await;
    let mut a = Projector::new(store.clone(), config(10, 4))
        .await
        .expect("a");
    let mut b = Projector::new(store.clone(), config(10, 4))
        .await
        .expect("b");
    assert_eq!(a.step().await.expect("a steps"), 10);
    match b.step().await {
        Err(ProjectionError::CheckpointMoved {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (0, 10)),
        other => panic!("b must be fenced out, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusion_constraints_refuse_overlapping_versions() {
    let db = common::TestDb::create();
    let store = db.fresh_store();
    let (_, log) = history(8, 200);
    append_all(&store, &log, &mut Pick(8)).await;
    Projector::new(store.clone(), config(100, 4))
        .await
        .expect("projector")
        .catch_up()
        .await
        .expect("catch up");
    let client = store.pool().get().await.expect("client");
    // A second account row over the same valid and transaction time as one in force.
    let overlap_account = client
        .execute(
            "INSERT INTO uc_accounts (account_id, version, currency, kind, status, constraints, \
                 metadata, valid_from, transaction_from, recorded_position, event_id) \
             SELECT account_id, version + 1000, currency, kind, 'frozen', constraints, metadata, \
                    valid_from + 1, transaction_from + 1, recorded_position + 1000000, event_id \
             FROM uc_accounts WHERE superseded_position IS NULL AND valid_to IS NULL LIMIT 1",
            &[],
        )
        .await
        .expect_err("overlapping account versions must be refused");
    assert_eq!(
        overlap_account.code(),
        Some(&tokio_postgres::error::SqlState::EXCLUSION_VIOLATION)
    );
    // The same row starting after the transaction period it would overlap is fine: closing
    // the first one's period is what a new version does.
    let sequential = client
        .execute(
            "WITH closed AS (UPDATE uc_accounts SET transaction_to = transaction_from + 10, \
                 superseded_position = recorded_position + 1 \
               WHERE ctid = (SELECT ctid FROM uc_accounts WHERE superseded_position IS NULL \
                             AND valid_to IS NULL LIMIT 1) RETURNING *) \
             INSERT INTO uc_accounts (account_id, version, currency, kind, status, constraints, \
                 metadata, valid_from, transaction_from, recorded_position, event_id) \
             SELECT account_id, version + 1000, currency, kind, 'frozen', constraints, metadata, \
                    valid_from, transaction_from + 10, recorded_position + 1, event_id FROM closed",
            &[],
        )
        .await
        .expect("a version after the closed one");
    assert_eq!(sequential, 1);
    // Two versions of one entry both in force now.
    let overlap_entry = client
        .execute(
            "INSERT INTO uc_entries (entry_id, version, kind, effective_at, postings, cancelled, \
                 recorded_position, recorded_at, event_id) \
             SELECT entry_id, version + 1, kind, effective_at, postings, false, \
                    recorded_position + 1, recorded_at + 1, event_id \
             FROM uc_entries WHERE superseded_position IS NULL LIMIT 1",
            &[],
        )
        .await
        .expect_err("two open versions of one entry must be refused");
    assert_eq!(
        overlap_entry.code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    );
}
