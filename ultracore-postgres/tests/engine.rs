//! The ledger engine on PostgreSQL: restart and snapshots, and two writers on the same
//! accounts that must never spend the same money twice.

mod common;

use std::sync::Arc;

use ultracore_core::engine::{replay, OpenedFrom};
use ultracore_core::ledger::{KnownAt, LedgerConfig, Rejection};
use ultracore_core::prelude::*;
use ultracore_core::store::SnapshotStore;
use ultracore_postgres::{PgEventStore, PgSnapshotStore};

fn ts(s: &str) -> Timestamp {
    s.parse().expect("valid time")
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(ts("2026-02-01T00:00:00Z")))
}

fn open(id: &str, kind: AccountKind, no_overdraft: bool) -> Command {
    Command::OpenAccount(OpenAccount {
        constraints: Constraints {
            debits_must_not_exceed_credits: no_overdraft,
            ..Constraints::default()
        },
        ..OpenAccount::new(id.parse().expect("id"), Currency::USD, kind)
    })
}

fn transfer(id: &str, from: &str, to: &str, amount: &str) -> Command {
    Command::PostEntry(PostEntry::transfer(
        id.parse().expect("id"),
        from.parse().expect("id"),
        to.parse().expect("id"),
        Amount::parse(amount, Currency::USD).expect("amount"),
        None,
    ))
}

fn posted(l: &Ledger, account: &str, now: Timestamp) -> String {
    l.balance(&account.parse().expect("id"), now, KnownAt::Now)
        .expect("account exists")
        .posted
        .to_string()
}

/// Executes, retrying while the store reports a conflict or an outage (the command's id makes
/// retries safe). Returns the final answer.
async fn execute_retrying(
    engine: &Engine<PgEventStore>,
    command: Command,
) -> Result<Outcome, EngineError> {
    for _ in 0..200 {
        match engine.execute(command.clone(), Trace::default()).await {
            Err(EngineError::Store(_)) | Err(EngineError::Recovering) => {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            other => return other,
        }
    }
    panic!("no answer after 200 attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_state_survives_a_restart_and_snapshots_shorten_it() {
    let db = common::TestDb::create();
    let config = db.fresh_config();
    let now = ts("2026-02-01T00:00:00Z");
    {
        let store = PgEventStore::connect(config.clone())
            .await
            .expect("connect");
        let engine = Engine::open(store, clock(), EngineConfig::default())
            .await
            .expect("open");
        for c in [
            open("cash", AccountKind::Asset, false),
            open("alice", AccountKind::Liability, true),
        ] {
            engine.execute(c, Trace::default()).await.expect("opened");
        }
        for i in 0..50 {
            engine
                .execute(
                    transfer(&format!("d{i}"), "cash", "alice", "2.50"),
                    Trace::default(),
                )
                .await
                .expect("deposit");
        }
        let snapshots = PgSnapshotStore::new(engine.store().clone());
        engine.save_snapshot(&snapshots).await.expect("snapshot");
        engine
            .execute(transfer("w1", "alice", "cash", "5.00"), Trace::default())
            .await
            .expect("withdrawal");
    }
    // A new process: everything comes back from PostgreSQL.
    let store = PgEventStore::connect(config.clone())
        .await
        .expect("reconnect");
    let engine = Engine::open(store.clone(), clock(), EngineConfig::default())
        .await
        .expect("reopen");
    let balance = engine.read(|l| posted(l, "alice", now)).await;
    assert_eq!(balance, "120.00");
    // The same request again is answered, not applied twice.
    engine
        .execute(transfer("w1", "alice", "cash", "5.00"), Trace::default())
        .await
        .expect("idempotent repeat");
    assert_eq!(engine.read(|l| posted(l, "alice", now)).await, "120.00");
    // From the snapshot: only the tail is replayed, to the same state.
    let snapshots = PgSnapshotStore::new(store.clone());
    let (from_snap, opened) =
        Engine::open_with_snapshot(store, &snapshots, clock(), EngineConfig::default())
            .await
            .expect("open with snapshot");
    assert!(
        matches!(opened, OpenedFrom::Snapshot { position, .. } if position == 52),
        "{opened:?}"
    );
    assert_eq!(from_snap.read(|l| posted(l, "alice", now)).await, "120.00");
    // Removing a scope removes its snapshot (and removing it again is no error).
    snapshots.remove("ledger-0").await.expect("remove");
    snapshots.remove("ledger-0").await.expect("remove again");
    assert_eq!(snapshots.load("ledger-0").await.expect("load"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_the_same_accounts_never_double_spend() {
    let db = common::TestDb::create();
    let config = db.fresh_config();
    // Two engines with their own connection pools: two "processes" sharing one log.
    let a = Engine::open(
        PgEventStore::connect(config.clone()).await.expect("a"),
        clock(),
        EngineConfig::default(),
    )
    .await
    .expect("engine a");
    for c in [
        open("bank", AccountKind::Asset, false),
        open("wallet", AccountKind::Liability, true),
        open("shop", AccountKind::Liability, false),
        transfer("fund", "bank", "wallet", "100.00"),
    ] {
        a.execute(c, Trace::default()).await.expect("setup");
    }
    let b = Engine::open(
        PgEventStore::connect(config.clone()).await.expect("b"),
        clock(),
        EngineConfig::default(),
    )
    .await
    .expect("engine b");
    let (a, b) = (Arc::new(a), Arc::new(b));
    // 160 attempts to spend 1.00 from a wallet holding 100.00, split over both writers.
    let mut tasks = Vec::new();
    for i in 0..160 {
        let engine = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let id = format!("spend{i}");
            let answer = execute_retrying(&engine, transfer(&id, "wallet", "shop", "1.00")).await;
            (id, answer)
        }));
    }
    let mut accepted = Vec::new();
    for t in tasks {
        let (id, answer) = t.await.expect("task");
        match answer {
            Ok(_) => accepted.push(id),
            Err(EngineError::Rejected(Rejection::LimitExceeded { .. })) => {}
            Err(other) => panic!("{id}: unexpected {other:?}"),
        }
    }
    assert_eq!(
        accepted.len(),
        100,
        "exactly the funds available were spent"
    );
    // The log, read by a third party, agrees: no spend recorded twice, none beyond the funds.
    let store = PgEventStore::connect(config).await.expect("reader");
    let rebuilt = replay(&store, LedgerConfig::default(), |_| {})
        .await
        .expect("replay");
    let now = ts("2026-02-01T00:00:00Z");
    assert_eq!(posted(&rebuilt, "wallet", now), "0.00");
    assert_eq!(posted(&rebuilt, "shop", now), "100.00");
    for id in &accepted {
        assert!(
            rebuilt.entry_record(&id.parse().expect("id")).is_some(),
            "{id} lost"
        );
    }
}
