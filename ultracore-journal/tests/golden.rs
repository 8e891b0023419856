//! Backward compatibility: `tests/golden/v1/` is a journal written by format version 1 with
//! schema version 1 payloads, one event of every `LedgerEvent` type (core's golden JSON events,
//! with stream versions renumbered into a valid log). This build must still read it to the
//! same events. Regenerate only when adding a new version: `UC_BLESS=1 cargo test --test golden`
//! writes it if it is missing.

use std::collections::HashMap;
use std::path::Path;

use futures_executor::block_on;
use ultracore_core::event::{decode, Envelope};
use ultracore_core::ledger::LedgerEvent;
use ultracore_core::store::{AppendBatch, EventStore};
use ultracore_journal::{Journal, JournalConfig};

fn expected() -> Vec<Envelope<LedgerEvent>> {
    let text = include_str!("../../ultracore-core/tests/golden/ledger_events_v1.jsonl");
    let mut versions: HashMap<String, u64> = HashMap::new();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut e: Envelope<LedgerEvent> = decode(l.as_bytes()).expect("golden JSON decodes");
            let v = versions.entry(e.stream.to_string()).or_default();
            *v += 1;
            e.stream_version = *v;
            e
        })
        .collect()
}

#[test]
fn a_version_1_journal_still_reads_the_same() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1");
    let want = expected();
    assert_eq!(want.len(), 13, "one event of every type");
    if !golden.exists() && std::env::var_os("UC_BLESS").is_some() {
        let (j, _) = Journal::<LedgerEvent>::open(&golden, JournalConfig::default()).expect("open");
        block_on(j.append(AppendBatch {
            expected_position: 0,
            expectations: Vec::new(),
            events: want[..5].to_vec(),
        }))
        .expect("append");
        block_on(j.append(AppendBatch {
            expected_position: 5,
            expectations: Vec::new(),
            events: want[5..].to_vec(),
        }))
        .expect("append");
    }
    // Open a copy: opening may repair a torn tail, and the golden file must never change.
    let dir = tempfile::tempdir().expect("tempdir");
    for f in std::fs::read_dir(&golden).expect("golden journal present") {
        let f = f.expect("entry").path();
        std::fs::copy(&f, dir.path().join(f.file_name().expect("name"))).expect("copy");
    }
    let (j, report) = Journal::<LedgerEvent>::open(dir.path(), JournalConfig::default())
        .expect("the v1 journal opens");
    assert_eq!(
        (report.records, report.events, report.torn_tail),
        (2, 13, None)
    );
    assert_eq!(block_on(j.read_all(0, 100)).expect("read"), want);
}
