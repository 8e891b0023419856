//! The core's engine over the journal, end to end: concurrent transfers, close, reopen (full
//! replay and from a file snapshot) and the same state.

use std::sync::Arc;

use futures_executor::block_on;
use ultracore_core::engine::{replay, Engine, EngineConfig, OpenedFrom};
use ultracore_core::prelude::*;
use ultracore_core::store::{SnapshotStore, StoreError};
use ultracore_core::testing::same_state;
use ultracore_journal::{FileSnapshotStore, Journal, JournalConfig};

const CUSTOMERS: usize = 10;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        "2026-01-10T09:00:00Z".parse().expect("time"),
    ))
}

fn open_journal(dir: &std::path::Path) -> Journal<LedgerEvent> {
    let config = JournalConfig {
        segment_size_max: 16 << 10, // several segments even for this small ledger
        ..JournalConfig::default()
    };
    Journal::open(dir, config).expect("open").0
}

fn open_account(id: &str, kind: AccountKind) -> Command {
    Command::OpenAccount(OpenAccount::new(
        id.parse().expect("id"),
        Currency::USD,
        kind,
    ))
}

fn transfer(id: String, to: usize, cents: u64) -> Command {
    Command::PostEntry(PostEntry::transfer(
        id.parse().expect("id"),
        "cash".parse().expect("id"),
        format!("c{to}").parse().expect("id"),
        Amount::parse(
            &format!("{}.{:02}", cents / 100, cents % 100),
            Currency::USD,
        )
        .expect("amount"),
        None,
    ))
}

/// Posted balance of every account, as text.
fn balances(engine: &Engine<Journal<LedgerEvent>>, now: Timestamp) -> Vec<String> {
    let mut ids = vec!["cash".to_string()];
    ids.extend((0..CUSTOMERS).map(|i| format!("c{i}")));
    block_on(engine.read(|l| {
        ids.iter()
            .map(|id| {
                let b = l
                    .balance(&id.parse().expect("id"), now, KnownAt::Now)
                    .expect("balance");
                format!("{id}={}", b.posted)
            })
            .collect()
    }))
}

/// Runs `per_thread` transfers on each of 4 threads; returns how many commands succeeded.
fn run_transfers(engine: &Engine<Journal<LedgerEvent>>, tag: &str, per_thread: usize) -> usize {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                s.spawn(move || {
                    let mut ok = 0;
                    for i in 0..per_thread {
                        let cmd = transfer(
                            format!("{tag}-{t}-{i}"),
                            (t + i) % CUSTOMERS,
                            100 + i as u64,
                        );
                        if block_on(engine.execute(cmd, Trace::default())).is_ok() {
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("join")).sum()
    })
}

#[test]
fn engine_over_the_journal_survives_close_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let (before, position) = {
        let engine = block_on(Engine::open(
            open_journal(dir.path()),
            clock.clone(),
            EngineConfig::default(),
        ))
        .expect("engine");
        block_on(engine.execute(open_account("cash", AccountKind::Asset), Trace::default()))
            .expect("open cash");
        for i in 0..CUSTOMERS {
            block_on(engine.execute(
                open_account(&format!("c{i}"), AccountKind::Liability),
                Trace::default(),
            ))
            .expect("open customer");
        }
        assert_eq!(run_transfers(&engine, "t", 150), 600);
        // Group commit through the engine: fewer appends than commands.
        let stats = engine.stats();
        assert!(stats.batches < 600 + 11, "{stats:?}");
        let position = block_on(engine.read(|l| l.position()));
        (balances(&engine, clock.now()), position)
    };
    assert_eq!(position, 611);
    assert!(before
        .iter()
        .any(|b| b != "cash=0.00" && !b.ends_with("=0.00")));

    let engine = block_on(Engine::open(
        open_journal(dir.path()),
        clock.clone(),
        EngineConfig::default(),
    ))
    .expect("reopen");
    assert_eq!(block_on(engine.read(|l| l.position())), position);
    assert_eq!(balances(&engine, clock.now()), before);
    // Idempotency survives the restart: the same transfer id again is "already done".
    let again = block_on(engine.execute(transfer("t-0-0".into(), 0, 100), Trace::default()));
    assert!(again.is_ok());
    assert_eq!(block_on(engine.read(|l| l.position())), position);
}

#[test]
fn engine_reopens_from_a_file_snapshot_and_replays_only_the_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap_dir = tempfile::tempdir().expect("tempdir");
    let snapshots = FileSnapshotStore::open(snap_dir.path()).expect("snapshots");
    let clock = clock();
    let config = EngineConfig::default();
    let (snapped_at, before) = {
        let engine = block_on(Engine::open(
            open_journal(dir.path()),
            clock.clone(),
            config.clone(),
        ))
        .expect("engine");
        block_on(engine.execute(open_account("cash", AccountKind::Asset), Trace::default()))
            .expect("open");
        for i in 0..CUSTOMERS {
            block_on(engine.execute(
                open_account(&format!("c{i}"), AccountKind::Liability),
                Trace::default(),
            ))
            .expect("open");
        }
        run_transfers(&engine, "a", 50);
        let snapped_at = block_on(engine.save_snapshot(&snapshots)).expect("snapshot");
        run_transfers(&engine, "b", 25);
        (snapped_at, balances(&engine, clock.now()))
    };
    assert_eq!(snapped_at, 211);
    let (engine, from) = block_on(Engine::open_with_snapshot(
        open_journal(dir.path()),
        &snapshots,
        clock.clone(),
        config.clone(),
    ))
    .expect("reopen");
    assert_eq!(
        from,
        OpenedFrom::Snapshot {
            position: snapped_at
        }
    );
    assert_eq!(balances(&engine, clock.now()), before);
    // The snapshot + tail state is exactly the full replay's.
    let replayed = block_on(replay(engine.store(), config.ledger.clone(), |_| {})).expect("replay");
    block_on(engine.read(|l| same_state(l, &replayed))).expect("same state");
    drop(engine);

    // A damaged snapshot file is reported by the store and the engine falls back to replay.
    let files = snapshots.files_of("ledger-0").expect("list");
    assert_eq!(files.len(), 1);
    let path = files[0].1.clone();
    let mut bytes = std::fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");
    assert!(block_on(snapshots.load("ledger-0")).is_err());
    let (engine, from) = block_on(Engine::open_with_snapshot(
        open_journal(dir.path()),
        &snapshots,
        clock.clone(),
        config,
    ))
    .expect("reopen");
    assert_eq!(from, OpenedFrom::Replay);
    assert_eq!(balances(&engine, clock.now()), before);
}

#[test]
fn file_snapshots_keep_the_newest_and_round_trip() {
    use ultracore_core::store::Snapshot;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileSnapshotStore::open(dir.path()).expect("open");
    assert_eq!(block_on(store.load("s/1")), Ok(None));
    let snap = |position: u64| Snapshot {
        scope: "s/1".into(),
        position,
        schema_fingerprint: 42,
        bytes: Arc::from(vec![position as u8; 1000]),
    };
    block_on(store.save(snap(5))).expect("save");
    block_on(store.save(snap(3))).expect("an older save is ignored");
    assert_eq!(block_on(store.load("s/1")), Ok(Some(snap(5))));
    block_on(store.save(snap(9))).expect("save");
    let reopened = FileSnapshotStore::open(dir.path()).expect("open");
    assert_eq!(block_on(reopened.load("s/1")), Ok(Some(snap(9))));
    assert_eq!(block_on(reopened.load("other")), Ok(None));
}

/// A small snapshot of `scope` at `position`, its bytes telling the position.
fn snap(scope: &str, position: u64) -> ultracore_core::store::Snapshot {
    ultracore_core::store::Snapshot {
        scope: scope.into(),
        position,
        schema_fingerprint: 7,
        bytes: Arc::from(vec![position as u8; 100]),
    }
}

#[test]
fn removing_a_scope_removes_its_files_and_only_those() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileSnapshotStore::open(dir.path()).expect("open");
    for scope in ["ledger-0-delta-1", "ledger-0-delta-10", "ledger-0"] {
        for position in [10, 20] {
            block_on(store.save(snap(scope, position))).expect("save");
        }
    }
    block_on(store.remove("ledger-0-delta-1")).expect("remove");
    block_on(store.remove("never-saved")).expect("nothing to remove is no error");
    assert_eq!(block_on(store.load("ledger-0-delta-1")), Ok(None));
    assert_eq!(store.files_of("ledger-0-delta-1").expect("list"), vec![]);
    for scope in ["ledger-0-delta-10", "ledger-0"] {
        assert_eq!(
            block_on(store.load(scope)),
            Ok(Some(snap(scope, 20))),
            "{scope}"
        );
        assert_eq!(store.files_of(scope).expect("list").len(), 2, "{scope}");
    }
    // A scope saved again after its removal starts over.
    block_on(store.save(snap("ledger-0-delta-1", 5))).expect("save");
    assert_eq!(
        block_on(store.load("ledger-0-delta-1")),
        Ok(Some(snap("ledger-0-delta-1", 5)))
    );
}

#[test]
fn file_snapshots_are_pruned_to_the_last_two_and_a_damaged_newest_falls_back() {
    use ultracore_journal::SNAPSHOTS_KEPT;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileSnapshotStore::open(dir.path()).expect("open");
    for position in [10, 20, 30, 40] {
        block_on(store.save(snap("ledger-0", position))).expect("save");
    }
    block_on(store.save(snap("other", 5))).expect("save");
    let kept = store.files_of("ledger-0").expect("list");
    let positions: Vec<u64> = kept.iter().map(|(p, _)| *p).collect();
    assert_eq!(SNAPSHOTS_KEPT, 2);
    assert_eq!(positions, vec![40, 30], "the newest two, newest first");
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        3,
        "nothing else left behind (no temp files), and the other scope untouched"
    );
    assert_eq!(block_on(store.load("other")), Ok(Some(snap("other", 5))));

    // Damage the newest: load falls back to the one before it.
    let mut bytes = std::fs::read(&kept[0].1).expect("read");
    bytes[40] ^= 0xff;
    std::fs::write(&kept[0].1, &bytes).expect("write");
    assert_eq!(
        block_on(store.load("ledger-0")),
        Ok(Some(snap("ledger-0", 30)))
    );
    // Both damaged: the store says so (and the engine replays).
    let mut bytes = std::fs::read(&kept[1].1).expect("read");
    bytes[40] ^= 0xff;
    std::fs::write(&kept[1].1, &bytes).expect("write");
    assert!(matches!(
        block_on(store.load("ledger-0")),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn a_snapshot_file_from_before_pruning_is_still_read_and_then_pruned() {
    use ultracore_core::store::Snapshot;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileSnapshotStore::open(dir.path()).expect("open");
    let snap = |position: u64| Snapshot {
        scope: "ledger-0".into(),
        position,
        schema_fingerprint: 7,
        bytes: Arc::from(vec![1u8; 10]),
    };
    // The old layout: one `<scope>.snapshot` per scope, same file format.
    block_on(store.save(snap(3))).expect("save");
    let (_, path) = store.files_of("ledger-0").expect("list").remove(0);
    let legacy = dir.path().join("ledger-0.snapshot");
    std::fs::rename(&path, &legacy).expect("rename");
    assert_eq!(block_on(store.load("ledger-0")), Ok(Some(snap(3))));
    block_on(store.save(snap(2))).expect("an older save is ignored");
    assert_eq!(block_on(store.load("ledger-0")), Ok(Some(snap(3))));
    block_on(store.save(snap(4))).expect("save");
    block_on(store.save(snap(5))).expect("save");
    assert!(!legacy.exists(), "pruned like any other");
    assert_eq!(block_on(store.load("ledger-0")), Ok(Some(snap(5))));
}

#[test]
fn every_damaged_byte_and_every_truncation_of_a_snapshot_file_is_refused() {
    use ultracore_core::store::Snapshot;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileSnapshotStore::open(dir.path()).expect("open");
    let snap = Snapshot {
        scope: "ledger-0".into(),
        position: 9,
        schema_fingerprint: 7,
        bytes: Arc::from((0..=255u8).collect::<Vec<u8>>()),
    };
    block_on(store.save(snap.clone())).expect("save");
    assert_eq!(block_on(store.load("ledger-0")), Ok(Some(snap.clone())));
    let (_, path) = store.files_of("ledger-0").expect("list").remove(0);
    let good = std::fs::read(&path).expect("read");
    for i in 0..good.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[i] ^= flip;
            std::fs::write(&path, &bad).expect("write");
            assert!(
                matches!(
                    block_on(store.load("ledger-0")),
                    Err(StoreError::Corrupt(_))
                ),
                "byte {i} xor {flip:#x} went unnoticed"
            );
        }
    }
    for len in 0..good.len() {
        std::fs::write(&path, &good[..len]).expect("write");
        assert!(
            matches!(
                block_on(store.load("ledger-0")),
                Err(StoreError::Corrupt(_))
            ),
            "a file cut to {len} bytes went unnoticed"
        );
    }
    std::fs::write(&path, &good).expect("write");
    assert_eq!(block_on(store.load("ledger-0")), Ok(Some(snap)));
}
