//! `FaultyStore`: a decorator over any [`EventStore`] that injects append failures on a
//! schedule, to test retries, recovery and "no partial write is ever visible".
//!
//! Faults (each counted per append attempt, 1-based):
//! - [`Fault::FailBefore`]: the append is refused with `Unavailable` and nothing is written;
//! - [`Fault::LostAck`]: the append lands, but the caller gets `Unavailable` (a lost
//!   acknowledgement: the outcome is unknown to the writer);
//! - [`Fault::SpuriousConflict`]: a `PositionConflict` that did not really happen; nothing is
//!   written.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::event::Envelope;
use crate::ids::StreamId;
use crate::store::{AppendBatch, AppendReceipt, EventStore, StoreError};

use super::rng::Rng;

/// One injected failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Refuse before writing (`Unavailable`).
    FailBefore,
    /// Write, then report `Unavailable`.
    LostAck,
    /// Refuse with a `PositionConflict` without writing.
    SpuriousConflict,
}

/// When faults happen.
#[derive(Clone, Debug)]
pub enum FaultSchedule {
    /// Never.
    None,
    /// At these append attempts (1-based).
    Script(BTreeMap<u64, Fault>),
    /// At each attempt with probability `num / den`, the kind chosen uniformly, from `seed`.
    Seeded {
        /// The generator.
        rng: Rng,
        /// Probability numerator.
        num: u64,
        /// Probability denominator.
        den: u64,
    },
}

impl FaultSchedule {
    /// A fault with probability `num / den` per append, reproducible from `seed`.
    pub fn seeded(seed: u64, num: u64, den: u64) -> FaultSchedule {
        FaultSchedule::Seeded {
            rng: Rng::new(seed),
            num,
            den,
        }
    }

    /// Exactly these faults at these (1-based) append attempts.
    pub fn script(faults: impl IntoIterator<Item = (u64, Fault)>) -> FaultSchedule {
        FaultSchedule::Script(faults.into_iter().collect())
    }

    fn next(&mut self, attempt: u64) -> Option<Fault> {
        match self {
            FaultSchedule::None => None,
            FaultSchedule::Script(m) => m.get(&attempt).copied(),
            FaultSchedule::Seeded { rng, num, den } => rng.chance(*num, *den).then(|| {
                *rng.pick(&[Fault::FailBefore, Fault::LostAck, Fault::SpuriousConflict])
                    .unwrap_or(&Fault::FailBefore)
            }),
        }
    }
}

/// What the decorator saw, for assertions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Append attempts.
    pub appends: u64,
    /// Faults injected, in order, with their attempt number.
    pub injected: Vec<(u64, Fault)>,
    /// Sizes (in events) of the batches that were really written, in order.
    pub written_batches: Vec<usize>,
}

struct State {
    schedule: FaultSchedule,
    stats: FaultStats,
}

/// An [`EventStore`] decorator that injects append faults; reads pass through.
pub struct FaultyStore<S> {
    inner: S,
    state: Mutex<State>,
}

impl<S> FaultyStore<S> {
    /// Wraps `inner` with `schedule`.
    pub fn new(inner: S, schedule: FaultSchedule) -> FaultyStore<S> {
        FaultyStore {
            inner,
            state: Mutex::new(State {
                schedule,
                stats: FaultStats::default(),
            }),
        }
    }

    /// The decorated store (reads and writes on it bypass the faults).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// What happened so far.
    pub fn stats(&self) -> FaultStats {
        self.lock().stats.clone()
    }

    /// Replaces the schedule (e.g. `FaultSchedule::None` to let recovery succeed).
    pub fn set_schedule(&self, schedule: FaultSchedule) {
        self.lock().schedule = schedule;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts the attempt and draws its fault.
    fn draw(&self) -> Option<Fault> {
        let mut g = self.lock();
        g.stats.appends += 1;
        let attempt = g.stats.appends;
        let fault = g.schedule.next(attempt);
        if let Some(f) = fault {
            g.stats.injected.push((attempt, f));
        }
        fault
    }
}

#[async_trait]
impl<S, E> EventStore<E> for FaultyStore<S>
where
    S: EventStore<E>,
    E: Clone + Send + Sync + 'static,
{
    fn orders_appends_when_polled(&self) -> bool {
        self.inner.orders_appends_when_polled()
    }

    async fn append(&self, batch: AppendBatch<E>) -> Result<AppendReceipt, StoreError> {
        let unavailable = |what: &str| StoreError::Unavailable(format!("injected fault: {what}"));
        let n = batch.events.len();
        match self.draw() {
            Some(Fault::FailBefore) => Err(unavailable("failed before writing")),
            Some(Fault::SpuriousConflict) => Err(StoreError::PositionConflict {
                expected: batch.expected_position,
                actual: batch.expected_position + 1,
            }),
            Some(Fault::LostAck) => {
                self.inner.append(batch).await?;
                self.lock().stats.written_batches.push(n);
                Err(unavailable("acknowledgement lost"))
            }
            None => {
                let receipt = self.inner.append(batch).await?;
                self.lock().stats.written_batches.push(n);
                Ok(receipt)
            }
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<Envelope<E>>, StoreError> {
        self.inner.read_stream(stream, from_version, limit).await
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<Envelope<E>>, StoreError> {
        self.inner.read_all(after, limit).await
    }

    async fn last_position(&self) -> Result<u64, StoreError> {
        self.inner.last_position().await
    }

    async fn wait_for(&self, after: u64) -> Result<(), StoreError> {
        self.inner.wait_for(after).await
    }
}
