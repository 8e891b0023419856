//! Snapshots are a cache: a snapshot at any position plus the events after it rebuilds exactly
//! the state a full replay builds; a damaged, foreign or stale snapshot is refused and the
//! engine falls back to replaying the log.

use std::sync::Arc;

use futures_executor::block_on;
use proptest::prelude::*;
use ultracore_core::engine::{replay_onto, Engine, EngineConfig, OpenedFrom};
use ultracore_core::event::{Envelope, Trace};
use ultracore_core::ledger::{Ledger, LedgerConfig, LedgerEvent, SnapshotError};
use ultracore_core::store::{
    AppendBatch, EventStore, MemoryEventStore, MemorySnapshotStore, Snapshot, SnapshotStore,
};
use ultracore_core::testing::same_state;
use ultracore_core::testing::workload::Workload;
use ultracore_core::time::ManualClock;

/// A log of `n` workload commands (every event type appears in long enough runs).
fn history(seed: u64, n: usize) -> Vec<Envelope<LedgerEvent>> {
    let mut workload = Workload::new(seed);
    let mut ledger = Ledger::default();
    let mut log = Vec::new();
    let mut now = Workload::start();
    for _ in 0..n {
        let cmd = workload.next(&ledger, now);
        // Refusals are part of the workload; only the log matters here.
        let _answer = ledger
            .execute(&cmd, &Trace::default(), now, 0, &mut log)
            .expect("no invariant breaks");
        now = now.saturating_add_micros(workload.advance_micros());
    }
    log
}

fn fold(events: &[Envelope<LedgerEvent>]) -> Ledger {
    let mut l = Ledger::default();
    for e in events {
        l.apply(e).expect("replays");
    }
    l
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn snapshot_plus_tail_equals_full_replay(seed in any::<u64>(), cut in 0.0f64..1.0) {
        let log = history(seed, 200);
        let k = ((log.len() as f64) * cut) as usize;
        let prefix = fold(&log[..k]);
        let bytes = prefix.encode_snapshot();
        let restored = Ledger::decode_snapshot(LedgerConfig::default(), &bytes)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        prop_assert_eq!(same_state(&restored, &prefix), Ok(()), "seed {}", seed);
        let mut caught_up = restored;
        for e in &log[k..] {
            caught_up.apply(e).expect("tail replays");
        }
        prop_assert_eq!(same_state(&caught_up, &fold(&log)), Ok(()), "seed {}", seed);
    }

    #[test]
    fn damaged_snapshots_are_refused_never_trusted(seed in any::<u64>(), at in any::<usize>(), bit in 0u8..8) {
        let bytes = fold(&history(seed, 60)).encode_snapshot();
        let mut bad = bytes.clone();
        let i = at % bad.len();
        bad[i] ^= 1 << bit;
        prop_assert!(Ledger::decode_snapshot(LedgerConfig::default(), &bad).is_err());
        prop_assert!(Ledger::decode_snapshot(LedgerConfig::default(), &bytes[..bytes.len() / 2]).is_err());
    }
}

#[test]
fn snapshots_of_another_format_are_refused() {
    let mut bytes = fold(&history(1, 30)).encode_snapshot();
    bytes[0] ^= 0xff;
    assert!(matches!(
        Ledger::decode_snapshot(LedgerConfig::default(), &bytes),
        Err(SnapshotError::Schema { .. })
    ));
}

async fn store_with(log: &[Envelope<LedgerEvent>]) -> MemoryEventStore<LedgerEvent> {
    let store = MemoryEventStore::new();
    if !log.is_empty() {
        let batch = AppendBatch {
            expected_position: 0,
            expectations: vec![],
            events: log.to_vec(),
        };
        store.append(batch).await.expect("append");
    }
    store
}

#[test]
fn engine_opens_from_a_snapshot_and_catches_up_with_the_log() {
    block_on(async {
        let log = history(7, 300);
        let half = log.len() / 2;
        let snapshots = MemorySnapshotStore::default();
        let clock = Arc::new(ManualClock::new(Workload::start()));
        // Snapshot taken by an engine that had seen the first half.
        let first = Engine::open(
            store_with(&log[..half]).await,
            clock.clone(),
            EngineConfig::default(),
        )
        .await
        .expect("open");
        assert_eq!(
            first.save_snapshot(&snapshots).await.expect("save"),
            half as u64
        );
        // A later start over the full log uses it and replays only the rest.
        let (engine, opened) = Engine::open_with_snapshot(
            store_with(&log).await,
            &snapshots,
            clock.clone(),
            EngineConfig::default(),
        )
        .await
        .expect("open");
        assert_eq!(
            opened,
            OpenedFrom::Snapshot {
                position: half as u64
            }
        );
        let full = fold(&log);
        assert_eq!(engine.read(|l| same_state(l, &full)).await, Ok(()));
        // The same snapshot against a different log (another history) is not trusted.
        let other = history(8, 300);
        let (engine, opened) = Engine::open_with_snapshot(
            store_with(&other).await,
            &snapshots,
            clock,
            EngineConfig::default(),
        )
        .await
        .expect("open");
        assert_eq!(opened, OpenedFrom::Replay);
        assert_eq!(engine.read(|l| same_state(l, &fold(&other))).await, Ok(()));
    });
}

#[test]
fn a_damaged_snapshot_falls_back_to_replay() {
    block_on(async {
        let log = history(9, 100);
        let snapshots = MemorySnapshotStore::default();
        let mut bytes = fold(&log).encode_snapshot();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x20;
        snapshots
            .save(Snapshot {
                scope: "ledger-0".into(),
                position: log.len() as u64,
                schema_fingerprint: ultracore_core::ledger::SNAPSHOT_SCHEMA,
                bytes: Arc::from(bytes),
            })
            .await
            .expect("save");
        let clock = Arc::new(ManualClock::new(Workload::start()));
        let (engine, opened) = Engine::open_with_snapshot(
            store_with(&log).await,
            &snapshots,
            clock,
            EngineConfig::default(),
        )
        .await
        .expect("open");
        assert_eq!(opened, OpenedFrom::Replay);
        assert_eq!(engine.read(|l| same_state(l, &fold(&log))).await, Ok(()));
        // replay_onto from an empty ledger is the same as a full replay.
        let again = replay_onto(engine.store(), Ledger::default(), |_| {})
            .await
            .expect("replay");
        assert_eq!(same_state(&again, &fold(&log)), Ok(()));
    });
}

/// Entries are stored compactly since schema 5 snapshots were first written; the wire form
/// did not change. The fuzz seed, written by the build before that change, still decodes, and
/// writing it again gives a snapshot that decodes to the same state.
#[test]
fn a_snapshot_written_before_entries_were_compacted_still_decodes() {
    let body = include_bytes!("../../fuzz/corpus/snapshot_decode/seed-transfers");
    let sealed = Ledger::seal_snapshot_body(body);
    let ledger = Ledger::decode_snapshot(LedgerConfig::default(), &sealed).expect("decodes");
    assert!(ledger.entry_count() > 0);
    let again = Ledger::decode_snapshot(LedgerConfig::default(), &ledger.encode_snapshot())
        .expect("re-encoded snapshot decodes");
    assert_eq!(same_state(&again, &ledger), Ok(()));
}
