//! The contract every [`EventStore`] implementation must pass (memory, journal, PostgreSQL,
//! Kafka): one suite, so they all behave alike. Each check starts from a fresh store made by
//! the caller's factory, and panics with a message starting with `contract:` on a breach.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use crate::event::{DomainEvent, Envelope, Trace};
use crate::ids::{AccountId, EventId, StreamId};
use crate::ledger::LedgerEvent;
use crate::store::{AppendBatch, EventStore, ExpectedVersion, StoreError};
use crate::time::{EffectiveAt, RecordedAt, Timestamp};

/// Runs the whole contract against stores made by `make` (a fresh, empty store per check).
pub async fn event_store_contract<S: EventStore<LedgerEvent>>(make: impl Fn() -> S) {
    empty_store(&make()).await;
    round_trip(&make()).await;
    multi_stream_atomic(&make()).await;
    expected_versions(&make()).await;
    position_fencing(&make()).await;
    invalid_batches(&make()).await;
    paging(&make()).await;
    wait_for_wakes(&make()).await;
}

/// Builds valid envelopes in sequence: positions, stream versions, increasing times.
struct Log {
    position: u64,
    versions: HashMap<StreamId, u64>,
}

impl Log {
    fn new() -> Log {
        Log {
            position: 0,
            versions: HashMap::new(),
        }
    }

    /// The next event on account stream `account`.
    fn event(&mut self, account: &str) -> Envelope<LedgerEvent> {
        let payload = LedgerEvent::AccountFrozen {
            account: AccountId::new(account).expect("valid id"),
        };
        let stream = payload.stream();
        let version = self.versions.entry(stream.clone()).or_default();
        *version += 1;
        self.position += 1;
        let t = time_of(self.position);
        Envelope {
            event_id: EventId::from_log_position(7, self.position),
            stream,
            stream_version: *version,
            position: self.position,
            recorded_at: RecordedAt(t),
            effective_at: EffectiveAt(t),
            trace: Trace::default(),
            schema_version: <LedgerEvent as DomainEvent>::SCHEMA_VERSION,
            payload,
        }
    }

    /// A batch of events on these account streams, expecting the current position.
    fn batch(&mut self, accounts: &[&str]) -> AppendBatch<LedgerEvent> {
        let expected_position = self.position;
        AppendBatch {
            expected_position,
            expectations: Vec::new(),
            events: accounts.iter().map(|a| self.event(a)).collect(),
        }
    }
}

fn time_of(position: u64) -> Timestamp {
    Timestamp::from_secs(1_767_225_600 + position as i64 * 60).expect("valid time")
}

fn stream(account: &str) -> StreamId {
    StreamId::for_account(&AccountId::new(account).expect("valid id"))
}

async fn all<S: EventStore<LedgerEvent>>(store: &S) -> Vec<Envelope<LedgerEvent>> {
    store.read_all(0, usize::MAX).await.expect("read_all")
}

async fn empty_store<S: EventStore<LedgerEvent>>(store: &S) {
    assert_eq!(store.last_position().await, Ok(0), "contract: empty store");
    assert!(all(store).await.is_empty(), "contract: empty read_all");
    let none = store.read_stream(&stream("a"), 1, 10).await;
    assert_eq!(none, Ok(Vec::new()), "contract: unknown stream reads empty");
}

async fn round_trip<S: EventStore<LedgerEvent>>(store: &S) {
    let mut log = Log::new();
    let batch = log.batch(&["a", "b", "a"]);
    let written = batch.events.clone();
    let receipt = store.append(batch).await.expect("contract: append");
    assert_eq!(receipt.last_position, 3, "contract: receipt position");
    assert_eq!(
        receipt.recorded_at, written[2].recorded_at,
        "contract: receipt time"
    );
    assert_eq!(
        store.last_position().await,
        Ok(3),
        "contract: last_position"
    );
    assert_eq!(all(store).await, written, "contract: read_all round trip");
    let a = store.read_stream(&stream("a"), 1, 10).await.expect("read");
    assert_eq!(
        a,
        vec![written[0].clone(), written[2].clone()],
        "contract: stream a"
    );
    let a2 = store.read_stream(&stream("a"), 2, 10).await.expect("read");
    assert_eq!(
        a2,
        vec![written[2].clone()],
        "contract: stream a from version 2"
    );
    let b = store.read_stream(&stream("b"), 1, 10).await.expect("read");
    assert_eq!(b, vec![written[1].clone()], "contract: stream b");
}

async fn multi_stream_atomic<S: EventStore<LedgerEvent>>(store: &S) {
    let mut log = Log::new();
    store.append(log.batch(&["a"])).await.expect("seed");
    // A batch on two streams whose second expectation fails: nothing is written.
    let mut bad = log.batch(&["a", "b"]);
    bad.expectations = vec![
        (stream("a"), ExpectedVersion::Exact(1)),
        (stream("b"), ExpectedVersion::StreamExists),
    ];
    let err = store.append(bad.clone()).await;
    let want = StoreError::StreamConflict {
        stream: stream("b"),
        expected: ExpectedVersion::StreamExists,
        actual: 0,
    };
    assert_eq!(err, Err(want), "contract: multi-stream conflict");
    assert_eq!(
        store.last_position().await,
        Ok(1),
        "contract: nothing written"
    );
    bad.expectations[1].1 = ExpectedVersion::NoStream;
    store
        .append(bad)
        .await
        .expect("contract: multi-stream append");
    let b = store.read_stream(&stream("b"), 1, 10).await.expect("read");
    assert_eq!(b.len(), 1, "contract: both streams written");
    assert_eq!(all(store).await.len(), 3, "contract: whole batch written");
}

/// Appends one event on `account` with `expected`, returning the store's answer.
async fn append_expecting<S: EventStore<LedgerEvent>>(
    store: &S,
    log: &mut Log,
    account: &str,
    expected: ExpectedVersion,
) -> Result<u64, StoreError> {
    let mut attempt = Log {
        position: log.position,
        versions: log.versions.clone(),
    };
    let mut batch = attempt.batch(&[account]);
    batch.expectations = vec![(stream(account), expected)];
    let r = store.append(batch).await.map(|r| r.last_position);
    if r.is_ok() {
        *log = attempt;
    }
    r
}

async fn expected_versions<S: EventStore<LedgerEvent>>(store: &S) {
    use ExpectedVersion::{Any, Exact, NoStream, StreamExists};
    let mut log = Log::new();
    let conflict = |expected, actual| {
        Err(StoreError::StreamConflict {
            stream: stream("a"),
            expected,
            actual,
        })
    };
    let cases: [(ExpectedVersion, Result<u64, StoreError>); 9] = [
        (StreamExists, conflict(StreamExists, 0)),
        (Exact(1), conflict(Exact(1), 0)),
        (NoStream, Ok(1)),
        (NoStream, conflict(NoStream, 1)),
        (StreamExists, Ok(2)),
        (Exact(3), conflict(Exact(3), 2)),
        (Exact(2), Ok(3)),
        (Exact(0), conflict(Exact(0), 3)),
        (Any, Ok(4)),
    ];
    for (i, (expected, want)) in cases.into_iter().enumerate() {
        let got = append_expecting(store, &mut log, "a", expected).await;
        assert_eq!(
            got, want,
            "contract: expected-version case {i} ({expected:?})"
        );
    }
    assert_eq!(
        store.last_position().await,
        Ok(4),
        "contract: only accepted appends"
    );
    let ok = append_expecting(store, &mut log, "b", Exact(0)).await;
    assert_eq!(ok, Ok(5), "contract: Exact(0) on a new stream");
}

async fn position_fencing<S: EventStore<LedgerEvent>>(store: &S) {
    let mut log = Log::new();
    store.append(log.batch(&["a", "a"])).await.expect("seed");
    for stale in [0, 1, 3] {
        let mut l = Log {
            position: stale,
            versions: HashMap::new(),
        };
        let batch = l.batch(&["z"]);
        let want = StoreError::PositionConflict {
            expected: stale,
            actual: 2,
        };
        let got = store.append(batch).await;
        assert_eq!(
            got,
            Err(want),
            "contract: fencing at expected position {stale}"
        );
    }
    assert_eq!(
        all(store).await.len(),
        2,
        "contract: fenced batches not written"
    );
    store
        .append(log.batch(&["a"]))
        .await
        .expect("contract: the writer goes on");
}

async fn invalid_batches<S: EventStore<LedgerEvent>>(store: &S) {
    let mut log = Log::new();
    store.append(log.batch(&["a"])).await.expect("seed");
    let before = all(store).await;
    let fresh = |log: &Log| Log {
        position: log.position,
        versions: log.versions.clone(),
    };
    let mut variants: Vec<(&str, AppendBatch<LedgerEvent>)> = Vec::new();
    let mut empty = fresh(&log).batch(&[]);
    empty.events.clear();
    variants.push(("empty batch", empty));
    let mut gap = fresh(&log).batch(&["a", "b"]);
    gap.events[1].position += 1;
    variants.push(("gap in positions", gap));
    let mut dup = fresh(&log).batch(&["a", "b"]);
    dup.events[1].position = dup.events[0].position;
    variants.push(("repeated position", dup));
    let mut time = fresh(&log).batch(&["a", "b"]);
    time.events[1].recorded_at = time.events[0].recorded_at;
    variants.push(("recorded_at not increasing", time));
    let mut past = fresh(&log).batch(&["b"]);
    past.events[0].recorded_at = before[0].recorded_at;
    variants.push(("recorded_at not after the log's last", past));
    let mut skip = fresh(&log).batch(&["a"]);
    skip.events[0].stream_version = 3;
    variants.push(("stream version skipped", skip));
    let mut restart = fresh(&log).batch(&["a", "b"]);
    restart.events[0].stream_version = 1;
    variants.push(("stream version repeated", restart));
    for (what, batch) in variants {
        let got = store.append(batch).await;
        assert!(
            matches!(got, Err(StoreError::InvalidBatch(_))),
            "contract: {what} must be refused as InvalidBatch, got {got:?}"
        );
        assert_eq!(all(store).await, before, "contract: {what} wrote something");
    }
}

async fn paging<S: EventStore<LedgerEvent>>(store: &S) {
    let mut log = Log::new();
    for i in 0..5 {
        let accounts = ["a", "b", "c", "a", "b"];
        store
            .append(log.batch(&accounts[..=i]))
            .await
            .expect("append");
    }
    let every = all(store).await;
    assert_eq!(every.len(), 15, "contract: all events");
    let mut paged = Vec::new();
    loop {
        let after = paged
            .last()
            .map_or(0, |e: &Envelope<LedgerEvent>| e.position);
        let page = store.read_all(after, 4).await.expect("page");
        assert!(page.len() <= 4, "contract: read_all respects its limit");
        if page.is_empty() {
            break;
        }
        paged.extend(page);
    }
    assert_eq!(paged, every, "contract: paged read_all");
    assert_eq!(
        store.read_all(15, 10).await,
        Ok(Vec::new()),
        "contract: read past end"
    );
    assert_eq!(
        store.read_all(99, 10).await,
        Ok(Vec::new()),
        "contract: far past end"
    );
    assert_eq!(
        store.read_all(0, 0).await,
        Ok(Vec::new()),
        "contract: limit 0"
    );
    let a: Vec<_> = every
        .iter()
        .filter(|e| e.stream == stream("a"))
        .cloned()
        .collect();
    let page = store
        .read_stream(&stream("a"), 2, 3)
        .await
        .expect("stream page");
    assert_eq!(page, a[1..4].to_vec(), "contract: read_stream paging");
    let tail = store.read_stream(&stream("a"), 99, 3).await;
    assert_eq!(tail, Ok(Vec::new()), "contract: read_stream past end");
}

/// Records whether it was woken.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn wait_for_wakes<S: EventStore<LedgerEvent>>(store: &S) {
    let mut log = Log::new();
    store.append(log.batch(&["a"])).await.expect("seed");
    store
        .wait_for(0)
        .await
        .expect("contract: wait_for below the end returns");
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let mut waiting = pin!(store.wait_for(1));
    let first = waiting.as_mut().poll(&mut Context::from_waker(&waker));
    assert!(
        first.is_pending(),
        "contract: wait_for at the end must wait"
    );
    store.append(log.batch(&["b"])).await.expect("append");
    // Drive it on the caller's executor: a store that never wakes hangs here.
    match waiting.as_mut().poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(r) => r.expect("contract: wait_for after the append"),
        Poll::Pending => waiting.await.expect("contract: wait_for after the append"),
    }
}
