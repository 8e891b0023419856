//! Fuzzes the ledger snapshot decoder past its checksum: an arbitrary body must decode to a
//! ledger or a typed `SnapshotError`, never panic or allocate without bound; whatever decodes
//! must re-encode to a snapshot that decodes to the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ultracore_core::ledger::{Ledger, LedgerConfig};

fuzz_target!(|body: &[u8]| {
    let sealed = Ledger::seal_snapshot_body(body);
    if let Ok(ledger) = Ledger::decode_snapshot(LedgerConfig::default(), &sealed) {
        let again = Ledger::decode_snapshot(LedgerConfig::default(), &ledger.encode_snapshot())
            .expect("a re-encoded snapshot must decode");
        assert_eq!(again.position(), ledger.position());
        assert_eq!(again.entry_count(), ledger.entry_count());
        assert_eq!(again.encode_snapshot().len(), ledger.encode_snapshot().len());
    }
});
