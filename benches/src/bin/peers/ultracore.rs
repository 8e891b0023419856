//! UltraCore in the side-by-side: the ledger engine on `PgEventStore`. A transfer is one
//! `PostEntry` of two postings (debit `a{from}`, credit `a{to}`, USD), decided against the
//! in-memory ledger and appended as one event; a request's commit carries every transfer the
//! engine has queued (group commit), a batch request carries its 1,000.

use std::sync::Arc;

use async_trait::async_trait;
use ultracore_benches::{open, transfer, WallClock};
use ultracore_core::prelude::*;
use ultracore_postgres::{PgConfig, PgEventStore};

use crate::{System, Transfer, BATCH};

/// The engine and its store.
pub struct Ultracore {
    engine: Engine<PgEventStore>,
    store: PgEventStore,
}

impl Ultracore {
    /// Opens the engine on `url` (schema `ultracore`) and opens `accounts` liability accounts
    /// without constraints, like the peers' accounts.
    pub async fn setup(url: &str, accounts: u64) -> Ultracore {
        let config = PgConfig::new(url, "ultracore").expect("config");
        let store = PgEventStore::connect(config).await.expect("PostgreSQL");
        let engine = Engine::open(store.clone(), Arc::new(WallClock), EngineConfig::default())
            .await
            .expect("engine");
        let opens: Vec<_> = (0..accounts)
            .map(|i| {
                let cmd = open(
                    &format!("a{i}"),
                    AccountKind::Liability,
                    Constraints::default(),
                );
                (cmd, Trace::default())
            })
            .collect();
        for chunk in opens.chunks(BATCH) {
            for r in engine.execute_batch(chunk.to_vec()).await {
                r.expect("account opened");
            }
        }
        Ultracore { engine, store }
    }
}

fn command(t: Transfer) -> Command {
    let (from, to) = (format!("a{}", t.from), format!("a{}", t.to));
    transfer(t.id, &from, &to, i128::from(t.minor), None)
}

#[async_trait]
impl System for Ultracore {
    async fn transfer(&self, t: Transfer) {
        let outcome = self.engine.execute(command(t), Trace::default()).await;
        outcome.expect("transfer accepted");
    }

    async fn batch(&self, ts: Vec<Transfer>) -> bool {
        let batch = ts
            .into_iter()
            .map(|t| (command(t), Trace::default()))
            .collect();
        for r in self.engine.execute_batch(batch).await {
            r.expect("transfer accepted");
        }
        true
    }

    async fn count(&self) -> u64 {
        let client = self.store.pool().get().await.expect("connection");
        let row = client
            .query_one(
                "SELECT count(*) FROM ultracore.uc_events WHERE event_type = 'entry_posted'",
                &[],
            )
            .await
            .expect("count");
        u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)
    }
}
