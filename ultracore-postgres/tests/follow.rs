//! Followers never skip an event, whatever the mix of slow and fast concurrent writers: the
//! sequence-gap problem of `bigserial` logs (a slow transaction takes a lower number, commits
//! later, and a reader that already moved past it never sees it) must not exist here.

mod common;

use std::time::Duration;

use ultracore_core::event::{DomainEvent, Envelope, Trace};
use ultracore_core::ids::{AccountId, EventId};
use ultracore_core::ledger::LedgerEvent;
use ultracore_core::store::{AppendBatch, EventStore, StoreError};
use ultracore_core::time::{EffectiveAt, RecordedAt, Timestamp};
use ultracore_postgres::PgEventStore;

const WRITERS: usize = 4;
const BATCHES_PER_WRITER: usize = 25;

/// Appends `count` events on the writer's own stream at the end of the log, retrying when
/// another writer got there first.
async fn append_at_end(store: &PgEventStore, writer: usize, version: &mut u64, count: usize) {
    let account = AccountId::new(&format!("w{writer}")).expect("id");
    loop {
        let last = EventStore::<LedgerEvent>::last_position(store)
            .await
            .expect("last");
        let last_time = match last {
            0 => Timestamp::from_secs(1_767_225_600).expect("time"),
            p => {
                EventStore::<LedgerEvent>::read_all(store, p - 1, 1)
                    .await
                    .expect("read")[0]
                    .recorded_at
                    .0
            }
        };
        let events = (0..count)
            .map(|i| {
                let position = last + 1 + i as u64;
                let t = last_time.saturating_add_micros(1 + i as i64);
                let payload = LedgerEvent::AccountFrozen {
                    account: account.clone(),
                };
                Envelope {
                    event_id: EventId::from_log_position(writer as u64, position),
                    stream: payload.stream(),
                    stream_version: *version + 1 + i as u64,
                    position,
                    recorded_at: RecordedAt(t),
                    effective_at: EffectiveAt(t),
                    trace: Trace::default(),
                    schema_version: <LedgerEvent as DomainEvent>::SCHEMA_VERSION,
                    payload,
                }
            })
            .collect();
        let batch = AppendBatch {
            expected_position: last,
            expectations: Vec::new(),
            events,
        };
        match store.append(batch).await {
            Ok(_) => {
                *version += count as u64;
                return;
            }
            Err(StoreError::PositionConflict { .. }) => tokio::task::yield_now().await,
            Err(e) => panic!("writer {writer}: {e}"),
        }
    }
}

/// Reads the log in small pages as it grows, checking each page continues exactly where the
/// last one ended, until `total` events were seen.
async fn follow(store: PgEventStore, total: usize) -> Vec<Envelope<LedgerEvent>> {
    let mut seen: Vec<Envelope<LedgerEvent>> = Vec::new();
    while seen.len() < total {
        let after = seen.last().map_or(0, |e| e.position);
        let page = EventStore::<LedgerEvent>::read_all(&store, after, 7)
            .await
            .expect("page");
        if page.is_empty() {
            tokio::time::timeout(
                Duration::from_secs(10),
                EventStore::<LedgerEvent>::wait_for(&store, after),
            )
            .await
            .expect("a follower is woken within 10 s")
            .expect("wait_for");
            continue;
        }
        for (i, e) in page.iter().enumerate() {
            assert_eq!(
                e.position,
                after + 1 + i as u64,
                "a follower skipped or reordered an event"
            );
        }
        seen.extend(page);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_never_skip_events_of_slow_writers() {
    let db = common::TestDb::create();
    let config = db.fresh_config();
    let total: usize = (0..WRITERS)
        .map(|w| {
            (0..BATCHES_PER_WRITER)
                .map(|b| 1 + (w + b) % 5)
                .sum::<usize>()
        })
        .sum();
    let mut followers = Vec::new();
    for _ in 0..2 {
        let store = PgEventStore::connect(config.clone())
            .await
            .expect("follower");
        followers.push(tokio::spawn(follow(store, total)));
    }
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut c = config.clone();
        // Half the writers hold their transaction open before committing.
        if w % 2 == 0 {
            c.commit_delay = Duration::from_millis(15);
        }
        let store = PgEventStore::connect(c).await.expect("writer");
        writers.push(tokio::spawn(async move {
            let mut version = 0;
            for b in 0..BATCHES_PER_WRITER {
                append_at_end(&store, w, &mut version, 1 + (w + b) % 5).await;
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let reader = PgEventStore::connect(config).await.expect("reader");
    let mut log = Vec::new();
    loop {
        let page = EventStore::<LedgerEvent>::read_all(&reader, log.len() as u64, 1000)
            .await
            .expect("read");
        if page.is_empty() {
            break;
        }
        log.extend(page);
    }
    assert_eq!(log.len(), total, "every acknowledged event is in the log");
    for f in followers {
        let seen = f.await.expect("follower");
        assert_eq!(seen, log, "a follower saw exactly the log, in order");
    }
}
