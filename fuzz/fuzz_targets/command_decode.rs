//! Fuzzes sequences of operations: the input is JSON lines of commands (the shape an API body
//! takes). Each line that parses is executed against a small ledger; nothing may panic, every
//! rejection is typed, and replaying the log rebuilds the live state (the harness checks it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ultracore_core::ledger::Command;
use ultracore_core::testing::gwt::Scenario;
use ultracore_core::time::Timestamp;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let now = Timestamp::from_secs(1_767_225_600).expect("2026-01-01 is in range");
    let mut s = Scenario::new(now);
    for line in text.lines().take(64) {
        if let Ok(cmd) = serde_json::from_str::<Command>(line) {
            let _ = s.when(cmd);
        }
    }
});
