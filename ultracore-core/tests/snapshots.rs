//! Snapshots are a cache: a snapshot at any position plus the events after it rebuilds exactly
//! the state a full replay builds; a damaged, foreign or stale snapshot is refused and the
//! engine falls back to replaying the log.

use std::sync::Arc;

use futures_executor::block_on;
use proptest::prelude::*;
use ultracore_core::engine::{replay_onto, Engine, EngineConfig, OpenedFrom};
use ultracore_core::event::{Envelope, Trace};
use ultracore_core::ledger::{Ledger, LedgerConfig, LedgerEvent, SnapshotError, SnapshotJob};
use ultracore_core::store::{
    AppendBatch, EventStore, MemoryEventStore, MemorySnapshotStore, Snapshot, SnapshotStore,
};
use ultracore_core::testing::same_state;
use ultracore_core::testing::workload::Workload;
use ultracore_core::time::{Clock, ManualClock};

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

/// Encodes `job` in steps of `budget` on `live`, applying one event of `rest` after each
/// step and the remaining ones after the last, as a server does; the snapshot's bytes.
fn steps_beside(
    live: &mut Ledger,
    mut job: SnapshotJob,
    budget: usize,
    rest: &[Envelope<LedgerEvent>],
) -> Vec<u8> {
    let mut rest = rest.iter();
    loop {
        let done = live.snapshot_step(&mut job, budget).expect("same cut");
        if let Some(e) = rest.next() {
            live.apply(e).expect("replays");
        }
        if done {
            break;
        }
    }
    for e in rest {
        live.apply(e).expect("replays");
    }
    live.end_snapshot(&job);
    job.into_bytes()
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

/// The fuzz seed is the body of the snapshot of a fixed history, so it pins the wire form:
/// a change to the format fails here (bump `SNAPSHOT_SCHEMA`, then rewrite the seed with
/// `UPDATE_SNAPSHOT_SEED=1 cargo test -p ultracore-core --features test-util --test snapshots`).
/// It decodes, and the decoded state's own snapshot decodes to the same state (not always to
/// the same bytes: the small tables are written in hash-map order).
#[test]
// Rewriting the seed file is the one IO a core test does, on request.
#[allow(clippy::disallowed_methods)]
fn the_fuzz_seed_is_this_builds_snapshot_of_a_fixed_history() {
    let encoded = fold(&history(5, 40)).encode_snapshot();
    if std::env::var_os("UPDATE_SNAPSHOT_SEED").is_some() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/corpus/snapshot_decode/seed-transfers"
        );
        std::fs::write(path, &encoded[16..]).expect("seed written");
        return;
    }
    let body = include_bytes!("../../fuzz/corpus/snapshot_decode/seed-transfers");
    assert!(
        body[..] == encoded[16..],
        "the snapshot format changed: bump SNAPSHOT_SCHEMA and rewrite the seed (see the doc)"
    );
    let sealed = Ledger::seal_snapshot_body(body);
    let ledger = Ledger::decode_snapshot(LedgerConfig::default(), &sealed).expect("decodes");
    assert!(ledger.entry_count() > 0);
    let again = Ledger::decode_snapshot(LedgerConfig::default(), &ledger.encode_snapshot())
        .expect("re-encoded snapshot decodes");
    assert_eq!(same_state(&again, &ledger), Ok(()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A snapshot taken in steps while the rest of the log is applied between them (holds
    /// posted and voided, corrections, reversals: entries that change after the cut) is
    /// byte for byte the snapshot of the state at the cut, and decodes to that state.
    #[test]
    fn a_snapshot_in_steps_is_the_state_at_its_cut(
        seed in any::<u64>(),
        cut in 0.0f64..1.0,
        budget in 1usize..400,
    ) {
        let log = history(seed, 160);
        let k = (log.len() as f64 * cut) as usize;
        let at_cut = fold(&log[..k]);
        let mut live = fold(&log[..k]);
        let job = live.begin_snapshot();
        prop_assert_eq!(job.position(), k as u64);
        let bytes = steps_beside(&mut live, job, budget, &log[k..]);
        prop_assert!(bytes == at_cut.encode_snapshot(), "stepped snapshot differs");
        let back = Ledger::decode_snapshot(LedgerConfig::default(), &bytes).expect("decodes");
        prop_assert_eq!(same_state(&back, &at_cut), Ok(()));
        // And the live ledger is unaffected: it is the fold of the whole log.
        prop_assert_eq!(same_state(&live, &fold(&log)), Ok(()));
    }
}

#[test]
fn a_snapshot_begun_again_or_on_a_rebuilt_state_is_abandoned() {
    let log = history(3, 80);
    let mut live = fold(&log);
    let mut first = live.begin_snapshot();
    let mut second = live.begin_snapshot();
    assert!(live.snapshot_step(&mut first, 10).is_err());
    assert!(live.snapshot_step(&mut second, 10).is_ok());
    // Ending the abandoned job leaves the current one alone.
    live.end_snapshot(&first);
    assert!(live.snapshot_step(&mut second, 10).is_ok());
    live.end_snapshot(&second);
    assert!(live.snapshot_step(&mut second, 10).is_err());
    let mut job = live.begin_snapshot();
    let rebuilt = fold(&log);
    assert!(rebuilt.snapshot_step(&mut job, 10).is_err());
}

/// The full snapshot of `live` as a base for deltas: encoded and said to be saved.
fn saved_base(live: &mut Ledger) -> Vec<u8> {
    let job = live.begin_snapshot();
    let bytes = finish(live, job);
    live.snapshot_saved(&bytes);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A delta snapshot taken in steps while the rest of the log is applied, applied to the
    /// state decoded from its base, is the state at the delta's cut; the log after it
    /// replays onto it; and a second delta taken on the restored state (which knows the
    /// chain it was restored from) is the next link: base, then both deltas, restore the
    /// final state.
    #[test]
    fn a_delta_on_its_base_is_the_state_at_its_cut(
        seed in any::<u64>(),
        a in 0.0f64..1.0,
        b in 0.0f64..1.0,
        budget in 1usize..400,
    ) {
        let log = history(seed, 160);
        let (a, b) = (a.min(b), a.max(b));
        let (k1, k2) = ((log.len() as f64 * a) as usize, (log.len() as f64 * b) as usize);
        let mut live = fold(&log[..k1]);
        prop_assert!(live.begin_delta().is_none(), "no base yet");
        let base = saved_base(&mut live);
        prop_assert_eq!(
            live.last_saved_snapshot().map(|s| (s.position, s.link)),
            Some((k1 as u64, 0))
        );
        for e in &log[k1..k2] {
            live.apply(e).expect("replays");
        }
        let at_cut = fold(&log[..k2]);
        let job = live.begin_delta().expect("a saved base");
        prop_assert_eq!(job.position(), k2 as u64);
        let delta = steps_beside(&mut live, job, budget, &log[k2..]);
        let restored = Ledger::decode_snapshot(LedgerConfig::default(), &base)
            .expect("base decodes")
            .apply_delta(&delta)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        prop_assert_eq!(same_state(&restored, &at_cut), Ok(()), "seed {}", seed);
        prop_assert_eq!(same_state(&live, &fold(&log)), Ok(()));
        // The restored state goes on from there and takes a cumulative delta of its own.
        let mut restored = restored;
        for e in &log[k2..] {
            restored.apply(e).expect("tail replays");
        }
        prop_assert_eq!(
            restored.last_saved_snapshot().map(|s| (s.position, s.link, s.base)),
            Some((k2 as u64, 1, k1 as u64))
        );
        let mut job = restored.begin_delta().expect("restored from a chain");
        prop_assert_eq!(job.link(), 2);
        while !restored.snapshot_step(&mut job, budget).expect("same cut") {}
        restored.end_snapshot(&job);
        let second = job.into_bytes();
        let first_only = Ledger::decode_snapshot(LedgerConfig::default(), &base)
            .expect("base decodes");
        prop_assert!(!first_only.delta_fits(&second), "link 2 needs link 1 first");
        let again = first_only
            .apply_delta(&delta)
            .and_then(|l| l.apply_delta(&second))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        prop_assert_eq!(same_state(&restored, &fold(&log)), Ok(()), "seed {}", seed);
        prop_assert_eq!(same_state(&again, &fold(&log)), Ok(()), "seed {}", seed);
    }
}

/// `job` on `live` to the end in one go, ended; its bytes.
fn finish(live: &mut Ledger, mut job: SnapshotJob) -> Vec<u8> {
    while !live.snapshot_step(&mut job, usize::MAX).expect("same cut") {}
    live.end_snapshot(&job);
    job.into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// While a full snapshot that starts a new chain is encoded in steps, a delta goes on
    /// along the chain saved before, beside it and the log: each is byte for byte the
    /// snapshot of the state at its own cut, as if taken alone. Once the full snapshot is
    /// saved, the next delta builds on it, and a delta of the chain before, saved later, is
    /// not taken as the chain's last link.
    #[test]
    fn deltas_go_on_along_the_chain_while_a_full_snapshot_is_encoded(
        seed in any::<u64>(),
        cuts in proptest::collection::vec(0.0f64..1.0, 3),
        budget in 1usize..300,
    ) {
        let log = history(seed, 200);
        let mut at: Vec<usize> = cuts.iter().map(|c| (log.len() as f64 * c) as usize).collect();
        at.sort_unstable();
        // The old chain's full snapshot, the new chain's full snapshot, the delta between.
        let (k0, kf, kd) = (at[0], at[1], at[2]);
        let mut live = fold(&log[..k0]);
        let base = saved_base(&mut live);
        for e in &log[k0..kf] {
            live.apply(e).expect("replays");
        }
        let mut full = Some(live.begin_snapshot());
        let mut delta: Option<SnapshotJob> = None;
        let (mut full_bytes, mut delta_bytes) = (None, None);
        let mut next = kf;
        while full.is_some() || delta.is_some() || next < log.len() || delta_bytes.is_none() {
            if next == kd && delta.is_none() && delta_bytes.is_none() {
                let job = live.begin_delta().expect("the old chain is saved");
                prop_assert_eq!((job.link(), job.delta_of()), (1, Some(k0 as u64)));
                delta = Some(job);
            }
            // The full snapshot steps once the delta is begun, so they overlap.
            let overlap = next >= kd;
            if let Some(job) = full.as_mut().filter(|_| overlap) {
                if live.snapshot_step(job, budget).expect("the full cut stays") {
                    let job = full.take().expect("stepped");
                    live.end_snapshot(&job);
                    let bytes = job.into_bytes();
                    live.snapshot_saved(&bytes);
                    prop_assert_eq!(
                        live.last_saved_snapshot().map(|s| (s.position, s.link, s.base)),
                        Some((kf as u64, 0, kf as u64))
                    );
                    full_bytes = Some(bytes);
                }
            }
            if let Some(job) = delta.as_mut() {
                if live.snapshot_step(job, budget).expect("the delta's cut stays") {
                    let job = delta.take().expect("stepped");
                    live.end_snapshot(&job);
                    let bytes = job.into_bytes();
                    live.snapshot_saved(&bytes);
                    // Saved before the new full snapshot was, or after.
                    let delta_first = full_bytes.is_none();
                    let last = live.last_saved_snapshot().map(|s| (s.position, s.link));
                    if delta_first {
                        prop_assert_eq!(last, Some((kd as u64, 1)));
                    } else {
                        prop_assert_eq!(last, Some((kf as u64, 0)), "a stale link is no base");
                    }
                    delta_bytes = Some(bytes);
                }
            }
            if next < log.len() {
                live.apply(&log[next]).expect("replays");
                next += 1;
            }
        }
        let (full_bytes, delta_bytes) = (full_bytes.expect("done"), delta_bytes.expect("done"));
        // Each as if taken alone.
        prop_assert!(full_bytes == fold(&log[..kf]).encode_snapshot(), "full snapshot differs");
        let mut alone = fold(&log[..k0]);
        prop_assert!(saved_base(&mut alone) == base);
        for e in &log[k0..kd] {
            alone.apply(e).expect("replays");
        }
        let job = alone.begin_delta().expect("saved");
        prop_assert!(finish(&mut alone, job) == delta_bytes, "delta differs");
        // The old chain restores the state at the delta's cut.
        let decode = |b: &[u8]| Ledger::decode_snapshot(LedgerConfig::default(), b).expect("decodes");
        let old_chain = decode(&base).apply_delta(&delta_bytes).expect("link 1 applies");
        prop_assert_eq!(same_state(&old_chain, &fold(&log[..kd])), Ok(()));
        // The next delta builds on the new full snapshot, and the new chain restores the
        // whole log.
        let job = live.begin_delta().expect("the new chain is saved");
        prop_assert_eq!((job.link(), job.delta_of()), (1, Some(kf as u64)));
        let next_link = finish(&mut live, job);
        // (Unless both full snapshots are of the same state, byte for byte.)
        prop_assert!(
            full_bytes == base || !decode(&base).delta_fits(&next_link),
            "not on the old chain"
        );
        let new_chain = decode(&full_bytes).apply_delta(&next_link).expect("applies");
        prop_assert_eq!(same_state(&new_chain, &fold(&log)), Ok(()), "seed {}", seed);
        prop_assert_eq!(same_state(&live, &fold(&log)), Ok(()));
    }
}

#[test]
fn a_snapshot_said_not_saved_takes_no_delta_until_a_full_one_is() {
    let log = history(17, 120);
    let mut live = fold(&log[..50]);
    let base = saved_base(&mut live);
    for e in &log[50..80] {
        live.apply(e).expect("replays");
    }
    live.snapshot_not_saved();
    assert!(live.last_saved_snapshot().is_none());
    assert!(live.begin_delta().is_none(), "its base may not be there");
    let again = saved_base(&mut live);
    assert_ne!(again, base);
    assert_eq!(
        live.last_saved_snapshot().map(|s| (s.position, s.link)),
        Some((80, 0))
    );
}

#[test]
fn a_delta_is_refused_on_another_base_a_moved_state_or_damaged() {
    let log = history(11, 120);
    let (k1, k2) = (40, 90);
    let mut live = fold(&log[..k1]);
    let base = saved_base(&mut live);
    for e in &log[k1..k2] {
        live.apply(e).expect("replays");
    }
    let mut job = live.begin_delta().expect("a saved base");
    while !live.snapshot_step(&mut job, 7).expect("same cut") {}
    live.end_snapshot(&job);
    let delta = job.into_bytes();
    let decode = |b: &[u8]| Ledger::decode_snapshot(LedgerConfig::default(), b).expect("decodes");
    // Another base (a full snapshot at another position).
    let other = decode(&fold(&log[..k1 + 1]).encode_snapshot());
    assert!(matches!(
        other.apply_delta(&delta),
        Err(SnapshotError::Inconsistent(_))
    ));
    // The base's state with an event applied since.
    let mut moved = decode(&base);
    moved.apply(&log[k1]).expect("replays");
    assert!(matches!(
        moved.apply_delta(&delta),
        Err(SnapshotError::Inconsistent(_))
    ));
    // A full snapshot is no delta, and a delta no full snapshot.
    assert!(matches!(
        decode(&base).apply_delta(&base),
        Err(SnapshotError::Schema { .. })
    ));
    assert!(matches!(
        Ledger::decode_snapshot(LedgerConfig::default(), &delta),
        Err(SnapshotError::Schema { .. })
    ));
    // The same link twice.
    let once = decode(&base).apply_delta(&delta).expect("applies");
    assert!(!once.delta_fits(&delta));
    assert!(matches!(
        once.apply_delta(&delta),
        Err(SnapshotError::Inconsistent(_))
    ));
    // Any flipped bit.
    for i in (0..delta.len()).step_by(delta.len() / 40 + 1) {
        let mut bad = delta.clone();
        bad[i] ^= 0x10;
        assert!(decode(&base).apply_delta(&bad).is_err(), "byte {i}");
    }
    // A base that was never said to be saved takes no deltas; its own snapshot does.
    let mut unsaved = fold(&log[..k1]);
    let mut job = unsaved.begin_snapshot();
    while !unsaved.snapshot_step(&mut job, 100).expect("same cut") {}
    unsaved.end_snapshot(&job);
    assert!(unsaved.begin_delta().is_none());
    unsaved.snapshot_saved(&delta);
    assert!(unsaved.begin_delta().is_none(), "a delta is no base");
    unsaved.snapshot_saved(&job.into_bytes());
    assert!(unsaved.begin_delta().is_some());
    // The good delta still applies.
    let restored = decode(&base).apply_delta(&delta).expect("applies");
    assert_eq!(same_state(&restored, &fold(&log[..k2])), Ok(()));
}

#[test]
fn engine_saves_a_chain_of_deltas_and_opens_from_it() {
    block_on(async {
        let log = history(13, 400);
        let l = log.len();
        // Deltas while the chain has grown by less than 3 times its full snapshot.
        let (a, b, c) = (l / 8, l / 4, l * 3 / 8);
        let snapshots = MemorySnapshotStore::default();
        let clock = Arc::new(ManualClock::new(Workload::start()));
        let open = |upto: usize| {
            let clock = clock.clone();
            let snapshots = &snapshots;
            let log = &log;
            async move {
                Engine::open_with_snapshot(
                    store_with(&log[..upto]).await,
                    snapshots,
                    clock,
                    EngineConfig::default(),
                )
                .await
                .expect("open")
            }
        };
        let position = |scope: &'static str| {
            let snapshots = &snapshots;
            async move { (snapshots.load(scope).await.expect("load")).map(|s| s.position as usize) }
        };
        // No snapshot yet: a full one.
        let (first, _) = open(a).await;
        assert_eq!(
            first.save_snapshot(&snapshots).await.expect("save"),
            a as u64
        );
        assert_eq!(position("ledger-0").await, Some(a));
        assert_eq!(position("ledger-0-delta-1").await, None);
        // Each start restores the chain so far, and the next snapshot is its next link.
        let (second, opened) = open(b).await;
        assert_eq!(opened, OpenedFrom::Snapshot { position: a as u64 });
        assert_eq!(
            second.save_snapshot(&snapshots).await.expect("save"),
            b as u64
        );
        assert_eq!(position("ledger-0-delta-1").await, Some(b));
        let (third, opened) = open(c).await;
        assert_eq!(opened, OpenedFrom::Snapshot { position: b as u64 });
        assert_eq!(
            third.save_snapshot(&snapshots).await.expect("save"),
            c as u64
        );
        assert_eq!(position("ledger-0-delta-2").await, Some(c));
        assert_eq!(
            position("ledger-0").await,
            Some(a),
            "the full snapshot stays"
        );
        // Base, link 1, link 2, then the log.
        let (fourth, opened) = open(l).await;
        assert_eq!(opened, OpenedFrom::Snapshot { position: c as u64 });
        let full = fold(&log);
        assert_eq!(fourth.read(|x| same_state(x, &full)).await, Ok(()));
        // Grown by 7 times the full snapshot since it: a new full snapshot; the old chain's
        // links no longer follow it.
        assert_eq!(
            fourth.save_snapshot(&snapshots).await.expect("save"),
            l as u64
        );
        assert_eq!(position("ledger-0").await, Some(l));
        assert_eq!(
            position("ledger-0-delta-1").await,
            None,
            "stale links are removed"
        );
        assert_eq!(position("ledger-0-delta-2").await, None);
        let (fifth, opened) = open(l).await;
        assert_eq!(opened, OpenedFrom::Snapshot { position: l as u64 });
        assert_eq!(fifth.read(|x| same_state(x, &full)).await, Ok(()));
    });
}

/// The `snapshot_delta` fuzz seed is this build's delta, against the `snapshot_decode` seed
/// (the snapshot of `history(5, 40)`), up to a longer run of the same workload. Rewritten
/// with the other seed (`UPDATE_SNAPSHOT_SEED=1`, see above); a format change fails here.
#[test]
#[allow(clippy::disallowed_methods)]
fn the_delta_fuzz_seed_is_this_builds_delta_on_the_snapshot_seed() {
    let short = history(5, 40);
    let long = history(5, 60);
    assert!(
        long[..short.len()] == short[..],
        "the workload is a prefix of a longer run"
    );
    let mut live = fold(&short);
    let base = saved_base(&mut live);
    for e in &long[short.len()..] {
        live.apply(e).expect("replays");
    }
    let mut job = live.begin_delta().expect("a saved base");
    while !live.snapshot_step(&mut job, usize::MAX).expect("same cut") {}
    live.end_snapshot(&job);
    let delta = job.into_bytes();
    if std::env::var_os("UPDATE_SNAPSHOT_SEED").is_some() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/corpus/snapshot_delta/seed-delta"
        );
        std::fs::write(path, &delta[16..]).expect("seed written");
        return;
    }
    let body = include_bytes!("../../fuzz/corpus/snapshot_delta/seed-delta");
    assert!(
        body[..] == delta[16..],
        "the delta format changed: bump SNAPSHOT_DELTA_SCHEMA and rewrite the seeds"
    );
    let seed_base = include_bytes!("../../fuzz/corpus/snapshot_decode/seed-transfers");
    assert!(base[16..] == seed_base[..], "the base is the other seed");
    let sealed = Ledger::seal_delta_body(body);
    let restored = Ledger::decode_snapshot(LedgerConfig::default(), &base)
        .expect("decodes")
        .apply_delta(&sealed)
        .expect("applies");
    assert_eq!(same_state(&restored, &fold(&long)), Ok(()));
}

/// Runs `n` workload commands on `engine` (refusals are part of the workload).
async fn run_commands(
    engine: &Engine<MemoryEventStore<LedgerEvent>>,
    clock: &ManualClock,
    workload: &mut Workload,
    n: usize,
) {
    for _ in 0..n {
        let cmd = engine.read(|l| workload.next(l, clock.now())).await;
        let _answer = engine.execute(cmd, Trace::default()).await;
        clock.advance_micros(workload.advance_micros());
    }
}

/// An engine on an empty in-memory store after `n` commands of workload `seed`, with its
/// clock and the workload to go on with.
async fn engine_after(
    seed: u64,
    n: usize,
) -> (
    Engine<MemoryEventStore<LedgerEvent>>,
    Arc<ManualClock>,
    Workload,
) {
    let clock = Arc::new(ManualClock::new(Workload::start()));
    let engine = Engine::open(
        MemoryEventStore::new(),
        clock.clone(),
        EngineConfig::default(),
    )
    .await
    .expect("open");
    let mut workload = Workload::new(seed);
    run_commands(&engine, &clock, &mut workload, n).await;
    (engine, clock, workload)
}

/// The log of `engine`'s store up to `position`, folded.
async fn folded(engine: &Engine<MemoryEventStore<LedgerEvent>>, position: u64) -> Ledger {
    let log = engine.store().read_all(0, usize::MAX).await.expect("read");
    fold(&log[..position as usize])
}

/// Through the engine's API, as the server uses it: a full snapshot that starts a new chain
/// is encoded in steps while commands go on and a delta on the saved chain is taken and
/// saved beside it; until the full snapshot is saved, start-up restores the old chain with
/// that delta; then the first delta on the new full snapshot, and start-up restores the new
/// chain (the old chain's links removed).
#[test]
fn engine_takes_a_delta_beside_a_new_chains_full_snapshot() {
    block_on(async {
        let (engine, clock, mut workload) = engine_after(23, 150).await;
        let config = EngineConfig::default();
        let snapshots = MemorySnapshotStore::default();
        let first = engine.save_snapshot(&snapshots).await.expect("first full");
        run_commands(&engine, &clock, &mut workload, 100).await;
        // The new chain's full snapshot, in small steps, beside commands and an old-chain
        // delta.
        let full = engine.take_full_snapshot(5);
        let beside = async {
            run_commands(&engine, &clock, &mut workload, 60).await;
            let delta = engine
                .take_delta_snapshot(5)
                .await
                .expect("the old chain is saved")
                .expect("encoded");
            snapshots
                .save(engine.snapshot_record(&delta))
                .await
                .expect("save");
            engine.snapshot_saved(&delta).await;
            run_commands(&engine, &clock, &mut workload, 60).await;
            delta
        };
        let (full, delta) = futures::join!(full, beside);
        let full = full.expect("encoded");
        assert_eq!((delta.link, delta.delta_of), (1, Some(first)));
        assert!(full.position > first && full.position < delta.position);
        let restore = || async {
            Engine::<MemoryEventStore<LedgerEvent>>::load_snapshot(&snapshots, &config)
                .await
                .expect("a chain")
        };
        // Until the full snapshot is saved, start-up restores the old chain and its delta.
        let old = restore().await;
        assert_eq!(old.position(), delta.position);
        assert_eq!(
            same_state(&old, &folded(&engine, delta.position).await),
            Ok(())
        );
        // As the server saves a new chain: the full snapshot said saved, its first delta
        // encoded, then the full snapshot written, the old links removed, the delta written.
        engine.snapshot_saved(&full).await;
        let next = engine
            .take_delta_snapshot(5)
            .await
            .expect("the new chain is known")
            .expect("encoded");
        assert_eq!((next.link, next.delta_of), (1, Some(full.position)));
        snapshots
            .save(engine.snapshot_record(&full))
            .await
            .expect("save");
        engine.remove_stale_links(&snapshots).await.expect("remove");
        let between = restore().await;
        assert_eq!(between.position(), full.position, "the full snapshot alone");
        snapshots
            .save(engine.snapshot_record(&next))
            .await
            .expect("save");
        engine.snapshot_saved(&next).await;
        let new = restore().await;
        assert_eq!(new.position(), next.position);
        assert_eq!(
            same_state(&new, &folded(&engine, next.position).await),
            Ok(())
        );
        assert_eq!(
            engine.last_saved_snapshot().await.map(|s| (s.link, s.base)),
            Some((1, full.position))
        );
    });
}

/// Two saves at once, in small steps: the second one's full snapshot abandons the first's
/// (and the first's full snapshot, encoded again in one go, the second's); the next snapshot
/// is the first link on a saved full snapshot, and the chain restores the state.
#[test]
fn two_saves_at_once_leave_a_chain_that_restores() {
    block_on(async {
        let (engine, clock, mut workload) = engine_after(29, 200).await;
        let config = EngineConfig::default();
        let snapshots = MemorySnapshotStore::default();
        // Commands go on meanwhile: the abandoned job's full snapshot, encoded again, is of a
        // later position than the one that abandoned it (which must not then be what the
        // next delta builds on: the store keeps the newer one).
        let (a, b, ()) = futures::join!(
            engine.save_snapshot_in_steps(&snapshots, 5),
            engine.save_snapshot_in_steps(&snapshots, 5),
            run_commands(&engine, &clock, &mut workload, 40)
        );
        let (a, b) = (a.expect("saved"), b.expect("saved"));
        run_commands(&engine, &clock, &mut workload, 80).await;
        let position = engine.save_snapshot(&snapshots).await.expect("saved");
        assert_eq!(
            engine.last_saved_snapshot().await.map(|s| (s.link, s.base)),
            Some((1, a.max(b)))
        );
        let restored = Engine::<MemoryEventStore<LedgerEvent>>::load_snapshot(&snapshots, &config)
            .await
            .expect("a chain");
        assert_eq!(restored.position(), position);
        assert_eq!(
            same_state(&restored, &folded(&engine, position).await),
            Ok(())
        );
    });
}
