//! PostgreSQL restarted mid-run: acknowledged writes survive, the store reports `Unavailable`
//! while the server is down (the server turns that into 503), and the engine recovers by
//! itself once it is back. Runs its own throwaway PostgreSQL (initdb + pg_ctl) so it can stop
//! it; fails with a clear message when the PostgreSQL binaries are missing.

#[path = "common/cluster.rs"]
mod cluster;

use std::sync::Arc;
use std::time::Duration;

use ultracore_core::ledger::KnownAt;
use ultracore_core::prelude::*;
use ultracore_core::store::StoreError;
use ultracore_postgres::{PgConfig, PgEventStore};

use cluster::Cluster;

fn transfer(i: usize) -> Command {
    Command::PostEntry(PostEntry::transfer(
        format!("t{i}").parse().expect("id"),
        "cash".parse().expect("id"),
        "alice".parse().expect("id"),
        Amount::parse("1.00", Currency::USD).expect("amount"),
        None,
    ))
}

fn open(id: &str, kind: AccountKind) -> Command {
    Command::OpenAccount(OpenAccount::new(
        id.parse().expect("id"),
        Currency::USD,
        kind,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_postgres_restart_and_the_engine_recovers() {
    let cluster = Cluster::create();
    let mut config = PgConfig::new(&cluster.url(), "uc_outage").expect("config");
    config.statement_timeout = Duration::from_secs(5);
    let store = PgEventStore::connect(config.clone())
        .await
        .expect("connect");
    let now: Timestamp = "2026-02-01T00:00:00Z".parse().expect("time");
    let engine = Engine::open(
        store,
        Arc::new(ManualClock::new(now)),
        EngineConfig::default(),
    )
    .await
    .expect("engine");
    for c in [
        open("cash", AccountKind::Asset),
        open("alice", AccountKind::Liability),
    ] {
        engine.execute(c, Trace::default()).await.expect("opened");
    }
    let mut acknowledged = 0usize;
    for i in 0..20 {
        engine
            .execute(transfer(i), Trace::default())
            .await
            .expect("before the outage");
        acknowledged += 1;
    }

    cluster.stop();
    // Down: the write is refused as unavailable (never acknowledged, never half-done).
    match engine.execute(transfer(100), Trace::default()).await {
        Err(EngineError::Store(StoreError::Unavailable(_))) | Err(EngineError::Recovering) => {}
        other => panic!("while PostgreSQL is down: {other:?}"),
    }

    cluster.start();
    // Back: the caller retries the same command (same id) until it is answered.
    let mut answered = None;
    for _ in 0..100 {
        match engine.execute(transfer(100), Trace::default()).await {
            Ok(o) => {
                answered = Some(o);
                break;
            }
            // No call to `recover`: the engine rebuilds itself on the next batch.
            Err(EngineError::Store(_)) | Err(EngineError::Recovering) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("after restart: {e:?}"),
        }
    }
    assert!(answered.is_some(), "the engine did not recover within 10 s");
    acknowledged += 1;
    for i in 200..210 {
        engine
            .execute(transfer(i), Trace::default())
            .await
            .expect("after recovery");
        acknowledged += 1;
    }

    // A fresh process sees every acknowledged write exactly once.
    let store = PgEventStore::connect(config).await.expect("reconnect");
    let reopened = Engine::open(
        store,
        Arc::new(ManualClock::new(now)),
        EngineConfig::default(),
    )
    .await
    .expect("reopen");
    let posted = reopened
        .read(|l| {
            l.balance(&"alice".parse().expect("id"), now, KnownAt::Now)
                .expect("alice")
                .posted
                .to_string()
        })
        .await;
    assert_eq!(posted, format!("{acknowledged}.00"));
}
