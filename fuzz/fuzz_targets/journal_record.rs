//! Fuzzes the journal's record decoder (what recovery and reads run on bytes from disk):
//! arbitrary bytes must decode to a batch of events or a typed `DecodeError`, never panic;
//! whatever decodes must agree with the index scan, and re-encode and decode to the same
//! events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ultracore_core::ledger::LedgerEvent;
use ultracore_journal::codec::{
    check_frame, decode_record, encode_record, event_stream, scan_event, scan_event_raw, split_body,
};

fuzz_target!(|data: &[u8]| {
    // The partial readers the recovery scan and the stream index use run on raw bytes too:
    // they may refuse, never panic, and never read past what they are given.
    let _ = scan_event_raw(data);
    let _ = event_stream(data);
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
        let raw_key = scan_event_raw(bytes).expect("a decoded event scans raw");
        let name = env.stream.to_string();
        assert_eq!(raw_key.stream, name);
        assert_eq!(raw_key.stream_version, env.stream_version);
        assert_eq!(raw_key.recorded_at, env.recorded_at);
        assert_eq!(event_stream(bytes).expect("its stream name reads"), name.as_bytes());
    }
    let again = encode_record(&events).expect("decoded events re-encode");
    let (decoded, _) =
        decode_record::<LedgerEvent>(&again.frame).expect("re-encoded record decodes");
    assert_eq!(decoded, events);
});
