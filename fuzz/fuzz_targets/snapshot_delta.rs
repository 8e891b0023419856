//! Fuzzes the delta snapshot decoder past its checksum: an arbitrary body applied to the state
//! decoded from the `snapshot_decode` seed must give a ledger or a typed `SnapshotError`, never
//! panic or allocate without bound; whatever applies must encode to a full snapshot that decodes
//! to the same state. The seed corpus holds a real delta against that base (its first 8 bytes
//! name the base's checksum, which the fuzzer keeps).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ultracore_core::ledger::{Ledger, LedgerConfig};

fn base() -> &'static Ledger {
    static BASE: OnceLock<Ledger> = OnceLock::new();
    BASE.get_or_init(|| {
        let body = include_bytes!("../corpus/snapshot_decode/seed-transfers");
        Ledger::decode_snapshot(LedgerConfig::default(), &Ledger::seal_snapshot_body(body))
            .expect("the snapshot_decode seed decodes")
    })
}

fuzz_target!(|body: &[u8]| {
    let sealed = Ledger::seal_delta_body(body);
    let base = base();
    if !base.delta_fits(&sealed) {
        return;
    }
    if let Ok(ledger) = base.clone().apply_delta(&sealed) {
        let again = Ledger::decode_snapshot(LedgerConfig::default(), &ledger.encode_snapshot())
            .expect("the full snapshot of an applied delta must decode");
        assert_eq!(again.position(), ledger.position());
        assert_eq!(again.entry_count(), ledger.entry_count());
    }
});
