//! Fuzzes the event codec: arbitrary bytes must decode to an event or a typed `CodecError`,
//! never panic; whatever decodes must re-encode and decode to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ultracore_core::event::{decode, encode, Envelope};
use ultracore_core::ledger::LedgerEvent;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = decode::<LedgerEvent>(data) {
        let bytes = encode(&env);
        let again: Envelope<LedgerEvent> = decode(&bytes).expect("re-encoded event must decode");
        assert_eq!(again, env);
    }
});
