//! Fuzzes the journal's record decoder (what recovery and reads run on bytes from disk):
//! arbitrary bytes must decode to a batch of events or a typed `DecodeError`, never panic;
//! whatever decodes must agree with the index scan, and re-encode and decode to the same
//! events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ultracore_core::ledger::LedgerEvent;
use ultracore_journal::codec::{check_frame, decode_record, encode_record, scan_event, split_body};

fuzz_target!(|data: &[u8]| {
    let Ok((events, len)) = decode_record::<LedgerEvent>(data) else {
        return;
    };
    assert!(len <= data.len());
    let frame = check_frame(data).expect("a decoded record has a valid frame");
    let (_, raw) = split_body(frame.body).expect("a decoded record has a valid body");
    for ((_, bytes), env) in raw.iter().zip(&events) {
        let key = scan_event(bytes).expect("a decoded event scans");
        assert_eq!(key.stream, env.stream);
        assert_eq!(key.stream_version, env.stream_version);
        assert_eq!(key.recorded_at, env.recorded_at);
    }
    let again = encode_record(&events).expect("decoded events re-encode");
    let (decoded, _) =
        decode_record::<LedgerEvent>(&again.frame).expect("re-encoded record decodes");
    assert_eq!(decoded, events);
});
