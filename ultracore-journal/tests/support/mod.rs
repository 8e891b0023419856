//! Helpers shared by the journal's tests: a deterministic event generator whose event at
//! position p depends only on p (so a recovered log can be checked event by event), and
//! journal opening in temp dirs.

#![allow(dead_code)] // each test file uses a subset

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ultracore_core::event::{DomainEvent, Envelope, Trace};
use ultracore_core::ids::{AccountId, EventId};
use ultracore_core::ledger::LedgerEvent;
use ultracore_core::store::AppendBatch;
use ultracore_core::time::{EffectiveAt, RecordedAt, Timestamp};
use ultracore_journal::{Journal, JournalConfig, RecoveryReport};

/// Accounts the generator cycles through.
pub const ACCOUNTS: u64 = 37;

/// The event at `position`, tagged with the batch `first..=last` it was written in.
pub fn event_at(position: u64, first: u64, last: u64) -> Envelope<LedgerEvent> {
    let k = (position - 1) % ACCOUNTS;
    let account = AccountId::new(&format!("acct-{k}")).expect("valid id");
    let payload = if position.is_multiple_of(3) {
        LedgerEvent::AccountUnfrozen { account }
    } else {
        LedgerEvent::AccountFrozen { account }
    };
    let t = Timestamp::from_micros(1_767_225_600_000_000 + position as i64 * 1_000)
        .expect("valid time");
    Envelope {
        event_id: EventId::from_log_position(7, position),
        stream: payload.stream(),
        stream_version: (position - 1) / ACCOUNTS + 1,
        position,
        recorded_at: RecordedAt(t),
        effective_at: EffectiveAt(t),
        trace: Trace {
            correlation_id: Some(Arc::from(format!("batch:{first}:{last}"))),
            causation_id: None,
            actor: position.is_multiple_of(2).then(|| Arc::from("tester")),
        },
        schema_version: <LedgerEvent as DomainEvent>::SCHEMA_VERSION,
        payload,
    }
}

/// The batch of `n` events after `after`.
pub fn batch(after: u64, n: u64) -> AppendBatch<LedgerEvent> {
    let (first, last) = (after + 1, after + n);
    AppendBatch {
        expected_position: after,
        expectations: Vec::new(),
        events: (first..=last).map(|p| event_at(p, first, last)).collect(),
    }
}

/// The batch an event says it belongs to.
pub fn batch_of(e: &Envelope<LedgerEvent>) -> (u64, u64) {
    let c = e.trace.correlation_id.as_deref().expect("tagged");
    let mut parts = c.strip_prefix("batch:").expect("tagged").split(':');
    let first = parts.next().and_then(|s| s.parse().ok()).expect("first");
    let last = parts.next().and_then(|s| s.parse().ok()).expect("last");
    (first, last)
}

pub fn open(dir: &Path) -> (Journal<LedgerEvent>, RecoveryReport) {
    open_with(dir, JournalConfig::default())
}

pub fn open_with(dir: &Path, config: JournalConfig) -> (Journal<LedgerEvent>, RecoveryReport) {
    Journal::open(dir, config).expect("journal opens")
}

/// The one segment file of a small journal.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "ujl"))
        .collect();
    v.sort();
    v
}
