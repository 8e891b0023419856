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

#[async_trait]
impl EventStore<LedgerEvent> for SlowStore {
    async fn append(&self, batch: AppendBatch<LedgerEvent>) -> Result<AppendReceipt, StoreError> {
        Yield(5).await;
        while !self.gate_open.load(Ordering::SeqCst) {
            Yield(1).await;
        }
        self.appends.fetch_add(1, Ordering::SeqCst);
        self.inner.append(batch).await
    }
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
    let store = SlowStore {
        inner: MemoryEventStore::new(),
        appends: AtomicUsize::new(0),
        gate_open,
    };
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
