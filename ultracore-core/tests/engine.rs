//! The engine with concurrent callers: group commit (many callers, few appends), readers never
//! see a batch before it is durable, and every caller gets its own answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::future::join_all;
use ultracore_core::event::Envelope;
use ultracore_core::ids::StreamId;
use ultracore_core::prelude::*;
use ultracore_core::store::{AppendBatch, AppendReceipt, StoreError};

/// `impl EventStore<LedgerEvent> for $store { <the given items> }` whose reads are answered
/// by the store's `inner` memory store.
macro_rules! store_reading_inner {
    ($store:ty { $($items:tt)* }) => {
        #[async_trait]
        impl EventStore<LedgerEvent> for $store {
            $($items)*
            async fn read_stream(
                &self,
                s: &StreamId,
                from: u64,
                limit: usize,
            ) -> Result<Vec<Envelope<LedgerEvent>>, StoreError> {
                self.inner.read_stream(s, from, limit).await
            }
            async fn read_all(
                &self,
                after: u64,
                limit: usize,
            ) -> Result<Vec<Envelope<LedgerEvent>>, StoreError> {
                self.inner.read_all(after, limit).await
            }
            async fn last_position(&self) -> Result<u64, StoreError> {
                self.inner.last_position().await
            }
            async fn wait_for(&self, after: u64) -> Result<(), StoreError> {
                self.inner.wait_for(after).await
            }
        }
    };
}

/// A memory store whose appends take a while: each append yields to the executor a few times
/// before landing (as a disk sync would), and can be held shut by a gate.
struct SlowStore {
    inner: MemoryEventStore<LedgerEvent>,
    appends: AtomicUsize,
    gate_open: Arc<AtomicBool>,
}

struct Yield(u32);

impl Future for Yield {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 == 0 {
            Poll::Ready(())
        } else {
            self.0 -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

store_reading_inner!(SlowStore {
    async fn append(&self, batch: AppendBatch<LedgerEvent>) -> Result<AppendReceipt, StoreError> {
        Yield(5).await;
        while !self.gate_open.load(Ordering::SeqCst) {
            Yield(1).await;
        }
        self.appends.fetch_add(1, Ordering::SeqCst);
        self.inner.append(batch).await
    }
});

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn open(id: &str, kind: AccountKind) -> Command {
    Command::OpenAccount(OpenAccount::new(id.parse().unwrap(), Currency::USD, kind))
}

fn deposit(i: usize) -> Command {
    Command::PostEntry(PostEntry::transfer(
        format!("d{i}").parse().unwrap(),
        "cash".parse().unwrap(),
        "alice".parse().unwrap(),
        Amount::parse("1.00", Currency::USD).unwrap(),
        None,
    ))
}

async fn engine(gate_open: Arc<AtomicBool>) -> Engine<SlowStore> {
    engine_on(SlowStore {
        inner: MemoryEventStore::new(),
        appends: AtomicUsize::new(0),
        gate_open,
    })
    .await
}

/// An engine on `store` with the accounts `cash` (asset) and `alice` (liability) open.
async fn engine_on<S: EventStore<LedgerEvent>>(store: S) -> Engine<S> {
    let clock = Arc::new(ManualClock::new(ts("2026-02-01T00:00:00Z")));
    let e = Engine::open(store, clock, EngineConfig::default())
        .await
        .unwrap();
    for c in [
        open("cash", AccountKind::Asset),
        open("alice", AccountKind::Liability),
    ] {
        e.execute(c, Trace::default()).await.unwrap();
    }
    e
}

#[test]
fn concurrent_callers_share_appends_and_each_gets_its_answer() {
    futures_executor::block_on(async {
        let e = engine(Arc::new(AtomicBool::new(true))).await;
        let before = e.store().appends.load(Ordering::SeqCst);
        let calls = (0..200).map(|i| e.execute(deposit(i), Trace::default()));
        let answers = join_all(calls).await;
        for (i, a) in answers.iter().enumerate() {
            match a {
                Ok(Outcome::Entry(r)) => assert_eq!(r.id.as_str(), format!("d{i}")),
                other => panic!("caller {i} got {other:?}"),
            }
        }
        let appends = e.store().appends.load(Ordering::SeqCst) - before;
        assert!(
            appends < 20,
            "200 concurrent callers took {appends} appends: no group commit"
        );
        let balance = e
            .read(|l| {
                l.balance(
                    &"alice".parse().unwrap(),
                    ts("2026-02-02T00:00:00Z"),
                    KnownAt::Now,
                )
            })
            .await
            .unwrap();
        assert_eq!(balance.posted.to_string(), "200.00");
        assert!(e.stats().batches <= appends as u64 + 2);
    });
}

#[test]
fn readers_wait_for_a_batch_to_be_durable_and_never_see_it_before() {
    futures_executor::block_on(async {
        let gate = Arc::new(AtomicBool::new(true));
        let e = engine(gate.clone()).await;
        gate.store(false, Ordering::SeqCst); // the next append blocks until opened
        let alice: AccountId = "alice".parse().unwrap();
        let at = ts("2026-02-02T00:00:00Z");
        let mut write = Box::pin(e.execute(deposit(1), Trace::default()));
        // Drive the writer into its (gated) append.
        for _ in 0..10 {
            assert!(futures::poll!(write.as_mut()).is_pending());
        }
        let durable = || e.store().appends.load(Ordering::SeqCst);
        let appends_before = durable();
        let mut read = Box::pin(e.read(|l| {
            let shown = l
                .balance(&alice, at, KnownAt::Now)
                .unwrap()
                .posted
                .to_string();
            (shown, durable())
        }));
        // While the batch is not durable, a reader gets nothing at all (it waits).
        for _ in 0..10 {
            assert!(futures::poll!(read.as_mut()).is_pending());
            assert!(futures::poll!(write.as_mut()).is_pending());
        }
        gate.store(true, Ordering::SeqCst);
        let (written, (shown, appends_seen)) = futures::join!(write, read);
        written.unwrap();
        assert_eq!(shown, "1.00");
        assert!(
            appends_seen > appends_before,
            "the reader saw the deposit before it was durable"
        );
    });
}

#[test]
fn holds_expire_at_their_deadline_without_an_explicit_command() {
    futures_executor::block_on(async {
        let clock = Arc::new(ManualClock::new(ts("2026-02-01T00:00:00Z")));
        let e = Engine::open(
            MemoryEventStore::new(),
            clock.clone(),
            EngineConfig::default(),
        )
        .await
        .unwrap();
        for c in [
            open("cash", AccountKind::Asset),
            open("alice", AccountKind::Liability),
            deposit(1),
        ] {
            e.execute(c, Trace::default()).await.unwrap();
        }
        let hold = Command::PlaceHold(PlaceHold {
            id: "h1".parse().unwrap(),
            debit_account: "alice".parse().unwrap(),
            credit_account: "cash".parse().unwrap(),
            amount: Amount::parse("1.00", Currency::USD).unwrap(),
            effective_at: None,
            expires_at: Some(ts("2026-02-01T01:00:00Z")),
            metadata: Metadata::new(),
        });
        e.execute(hold, Trace::default()).await.unwrap();
        let alice: AccountId = "alice".parse().unwrap();
        assert_eq!(e.read(|l| l.account(&alice).unwrap().open_holds).await, 1);
        clock.set(ts("2026-02-01T02:00:00Z"));
        // Any command after the deadline: the batch records the expiry first.
        e.execute(deposit(2), Trace::default()).await.unwrap();
        assert_eq!(e.read(|l| l.account(&alice).unwrap().open_holds).await, 0);
        let status = e
            .read(|l| {
                l.entry(&"h1".parse().unwrap(), KnownAt::Now)
                    .unwrap()
                    .status
            })
            .await;
        assert_eq!(status, ultracore_core::ledger::EntryStatus::Expired);
    });
}

/// A store that orders appends when first polled and makes them durable later, one by one in
/// that order, on a thread of its own (as the journal's writer does), with a delay per append
/// and optionally a refused append: what lets the engine decide a batch while the one before
/// is being synced.
struct QueuedStore {
    inner: Arc<MemoryEventStore<LedgerEvent>>,
    queue: Arc<std::sync::Mutex<QueueState>>,
}

/// An append waiting for the store's thread, with where its outcome goes.
type Queued = (
    AppendBatch<LedgerEvent>,
    futures_channel::oneshot::Sender<Result<AppendReceipt, StoreError>>,
);

#[derive(Default)]
struct QueueState {
    waiting: std::collections::VecDeque<Queued>,
    /// Appends queued and not yet durable, at most ever.
    in_flight_max: usize,
    /// Appends taken so far; the one with this number (1-based) is refused unwritten.
    taken: usize,
    fail_append: Option<usize>,
    /// Whether the thread is syncing an append it took.
    syncing: bool,
    /// The next append taken is held until another is queued behind it (or 5 s have
    /// passed): whether the engine pipelines then shows whatever the scheduling, instead of
    /// depending on the test's thread deciding the next batch within one sync's time.
    hold_next: bool,
    stop: bool,
}

impl QueuedStore {
    fn new(fail_append: Option<usize>) -> QueuedStore {
        let queue = Arc::new(std::sync::Mutex::new(QueueState {
            fail_append,
            ..QueueState::default()
        }));
        let inner = Arc::new(MemoryEventStore::new());
        let (q, store) = (queue.clone(), inner.clone());
        // The test is the embedding application here: it owns the store's thread.
        #[allow(clippy::disallowed_methods)]
        std::thread::spawn(move || loop {
            let next = {
                let mut g = q.lock().unwrap();
                if g.stop {
                    return;
                }
                g.waiting.pop_front().map(|w| {
                    g.taken += 1;
                    g.syncing = true;
                    (w, g.fail_append == Some(g.taken))
                })
            };
            let Some(((batch, reply), fail)) = next else {
                std::thread::sleep(std::time::Duration::from_micros(50));
                continue;
            };
            std::thread::sleep(std::time::Duration::from_millis(2)); // the "sync"
            if std::mem::take(&mut q.lock().unwrap().hold_next) {
                let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while q.lock().unwrap().waiting.is_empty() && std::time::Instant::now() < until {
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
            }
            let r = if fail {
                Err(StoreError::Unavailable("injected: the disk said no".into()))
            } else {
                futures_executor::block_on(store.append(batch))
            };
            q.lock().unwrap().syncing = false;
            let _ = reply.send(r);
        });
        QueuedStore { inner, queue }
    }

    fn durable(&self) -> u64 {
        use futures::FutureExt;
        // The memory store answers at once.
        self.inner
            .last_position()
            .now_or_never()
            .expect("answered at once")
            .unwrap()
    }
}

impl Drop for QueuedStore {
    fn drop(&mut self) {
        self.queue.lock().unwrap().stop = true;
    }
}

store_reading_inner!(QueuedStore {
    fn orders_appends_when_polled(&self) -> bool {
        true
    }
    async fn append(&self, batch: AppendBatch<LedgerEvent>) -> Result<AppendReceipt, StoreError> {
        let (tx, rx) = futures_channel::oneshot::channel();
        {
            let mut g = self.queue.lock().unwrap();
            g.waiting.push_back((batch, tx));
            // Queued ones plus the one being synced.
            let in_flight = g.waiting.len() + usize::from(g.syncing);
            g.in_flight_max = g.in_flight_max.max(in_flight);
        }
        rx.await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("store stopped".into())))
    }
});

async fn queued_engine(fail_append: Option<usize>) -> Engine<QueuedStore> {
    engine_on(QueuedStore::new(fail_append)).await
}

/// Alice's posted balance in minor units as the engine shows it, and as the store's log
/// says (the deposits in it).
async fn alice_now(e: &Engine<QueuedStore>) -> (i128, i128) {
    let shown = e
        .read(|l| {
            l.balance(
                &"alice".parse().unwrap(),
                ts("2026-03-01T00:00:00Z"),
                KnownAt::Now,
            )
            .unwrap()
            .posted
            .minor()
        })
        .await;
    let logged = e
        .store()
        .read_all(0, 100_000)
        .await
        .unwrap()
        .iter()
        .filter(|ev| matches!(ev.payload, LedgerEvent::EntryPosted { .. }))
        .count() as i128
        * 100;
    (shown, logged)
}

#[test]
fn the_next_batch_is_decided_while_one_is_being_made_durable_and_answers_wait_for_it() {
    futures_executor::block_on(async {
        let e = &queued_engine(None).await;
        // The first deposit's append waits until the next batch is queued behind it: an
        // engine that does not pipeline never queues one and fails below, after 5 s.
        e.store().queue.lock().unwrap().hold_next = true;
        // 50 callers with 12 deposits each, one after the other: while a batch syncs, the
        // callers answered by the one before send their next deposits, which are decided and
        // queued behind it.
        let callers = (0..50).map(|c| async move {
            for k in 0..12 {
                let i = c * 12 + k;
                let r = e.execute(deposit(i), Trace::default()).await;
                // Answered only once its event is durable.
                let durable = e.store().durable();
                match r {
                    Ok(Outcome::Entry(rec)) => assert!(
                        rec.position <= durable,
                        "deposit {i} at position {} answered when {durable} were durable",
                        rec.position
                    ),
                    other => panic!("deposit {i} got {other:?}"),
                }
            }
        });
        join_all(callers).await;
        let in_flight_max = e.store().queue.lock().unwrap().in_flight_max;
        assert!(
            in_flight_max >= 2,
            "never more than one append in flight: no pipelining"
        );
        assert_eq!(alice_now(e).await, (60_000, 60_000));
    });
}

#[test]
fn a_failed_append_fails_the_batch_decided_after_it_and_the_state_is_rebuilt() {
    // Appends 1 and 2 open the accounts.
    for fail in [3, 4, 6, 9] {
        futures_executor::block_on(async {
            let e = &queued_engine(Some(fail)).await;
            // 50 callers with 8 deposits each, one after the other: a new batch every round.
            let callers = (0..50).map(|c| async move {
                let mut out = Vec::new();
                for k in 0..8 {
                    out.push(e.execute(deposit(c * 8 + k), Trace::default()).await);
                }
                out
            });
            let mut answers: Vec<_> = join_all(callers).await.into_iter().flatten().collect();
            // Back in deposit order (caller c made deposits c*8..c*8+8 in order).
            let order: Vec<usize> = (0..50)
                .flat_map(|c| (0..8).map(move |k| c * 8 + k))
                .collect();
            let mut by_id: Vec<Option<_>> = (0..400).map(|_| None).collect();
            for (i, a) in order.into_iter().zip(answers.drain(..)) {
                by_id[i] = Some(a);
            }
            let answers: Vec<_> = by_id.into_iter().map(|a| a.expect("answered")).collect();
            assert!(
                e.store().queue.lock().unwrap().taken > fail,
                "append {fail}: too few appends to test it"
            );
            let (ok, failed): (Vec<_>, Vec<_>) = (0..400).partition(|&i| answers[i].is_ok());
            assert!(!failed.is_empty(), "append {fail}: nothing failed");
            for &i in &failed {
                assert!(
                    matches!(answers[i], Err(EngineError::Store(_))),
                    "append {fail}: caller {i} got {:?}",
                    answers[i]
                );
            }
            // The engine shows exactly what the log holds, and every acknowledged deposit
            // is in it.
            let (shown, logged) = alice_now(e).await;
            assert_eq!(shown, logged, "append {fail}: state and log differ");
            assert_eq!(shown, ok.len() as i128 * 100, "append {fail}");
            // The failed ones were not recorded: retried, each goes through once.
            for &i in &failed {
                match e.execute(deposit(i), Trace::default()).await {
                    Ok(Outcome::Entry(_)) => {}
                    other => panic!("append {fail}: retry of {i} got {other:?}"),
                }
            }
            assert_eq!(alice_now(e).await, (40_000, 40_000), "append {fail}");
        });
    }
}

#[test]
fn readers_get_in_while_writers_keep_the_pipeline_full_and_see_only_durable_state() {
    futures_executor::block_on(async {
        let e = &queued_engine(None).await;
        let writers = (0..800).map(|i| e_execute(e, i));
        let readers = (0..20).map(|_| async move {
            let (seen, durable) = e.read(|l| (l.position(), e.store().durable())).await;
            assert!(
                seen <= durable,
                "a reader saw position {seen} when {durable} were durable"
            );
        });
        futures::join!(join_all(writers), join_all(readers));
        assert_eq!(alice_now(e).await, (80_000, 80_000));
    });
}

async fn e_execute(e: &Engine<QueuedStore>, i: usize) {
    match e.execute(deposit(i), Trace::default()).await {
        Ok(Outcome::Entry(_)) => {}
        other => panic!("deposit {i} got {other:?}"),
    }
}

/// With a driver task, callers only queue and wait: every caller gets its own answer, appends
/// are still shared, and a snapshot taken in steps meanwhile is the state at its cut.
#[test]
fn a_driven_engine_answers_every_caller_and_snapshots_in_steps_meanwhile() {
    futures_executor::block_on(async {
        let e = engine(Arc::new(AtomicBool::new(true))).await;
        let before = e.store().appends.load(Ordering::SeqCst);
        let driver = e.drive();
        let work = async {
            let calls = (0..300).map(|i| e.execute(deposit(i), Trace::default()));
            let snapshot = e.snapshot_in_steps(7);
            let (answers, snapshot) = futures::join!(join_all(calls), snapshot);
            for (i, a) in answers.iter().enumerate() {
                match a {
                    Ok(Outcome::Entry(r)) => assert_eq!(r.id.as_str(), format!("d{i}")),
                    other => panic!("caller {i} got {other:?}"),
                }
            }
            snapshot.expect("not abandoned")
        };
        // The driver never finishes; the work does.
        futures::pin_mut!(driver);
        let (position, bytes) = match futures::future::select(driver, Box::pin(work)).await {
            futures::future::Either::Right((done, _)) => done,
            futures::future::Either::Left(_) => unreachable!("drive never returns"),
        };
        let appends = e.store().appends.load(Ordering::SeqCst) - before;
        assert!(appends < 60, "300 callers took {appends} appends");
        // The snapshot decodes to a prefix of the log: the fold of its first `position` events.
        let snap = Ledger::decode_snapshot(LedgerConfig::default(), &bytes).expect("decodes");
        assert_eq!(snap.position(), position);
        let events = e.store().inner.read_all(0, usize::MAX).await.unwrap();
        let mut prefix = Ledger::default();
        for env in events.iter().take(position as usize) {
            prefix.apply(env).unwrap();
        }
        // (tests/snapshots.rs compares whole states; here the public queries must agree.)
        assert_eq!(snap.position(), prefix.position());
        assert_eq!(snap.entry_count(), prefix.entry_count());
        for account in ["cash", "alice"] {
            let id = account.parse().unwrap();
            let at = ts("2026-02-02T00:00:00Z");
            assert_eq!(
                snap.balance(&id, at, KnownAt::Now).unwrap(),
                prefix.balance(&id, at, KnownAt::Now).unwrap()
            );
        }
    });
}

/// A driver dropped while idle hands leading back: callers lead their own batches again.
#[test]
fn a_driver_dropped_while_idle_hands_leading_back() {
    futures_executor::block_on(async {
        let e = engine(Arc::new(AtomicBool::new(true))).await;
        {
            let driver = e.drive();
            futures::pin_mut!(driver);
            let work = Box::pin(e.execute(deposit(1), Trace::default()));
            match futures::future::select(driver, work).await {
                futures::future::Either::Right((answer, _)) => assert!(answer.is_ok()),
                futures::future::Either::Left(_) => unreachable!("drive never returns"),
            }
        }
        assert!(e.execute(deposit(2), Trace::default()).await.is_ok());
    });
}
