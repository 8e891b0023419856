//! Every bound the core enforces, in one place, with compile-time checks of how they relate.
//!
//! A limit on everything (TigerBeetle style): inputs that exceed one are rejected with a typed
//! error before any work is done, so memory and time per command are bounded.

/// Longest client-chosen id, in bytes.
pub const ID_LEN_MAX: usize = 64;
/// Most postings in one journal entry.
pub const POSTINGS_PER_ENTRY_MAX: usize = 64;
/// Most commands the engine decides and appends as one batch (one durable write).
pub const COMMANDS_PER_BATCH_MAX: usize = 8_192;
/// Most events one command may emit (an entry emits one; expiring holds emits one per hold).
pub const EVENTS_PER_COMMAND_MAX: usize = 1_024;
/// Most events one append may carry.
pub const EVENTS_PER_APPEND_MAX: usize = COMMANDS_PER_BATCH_MAX * 2;
/// Most events returned by one read.
pub const EVENTS_PER_READ_MAX: usize = 10_000;
/// Most metadata keys on an account or entry.
pub const METADATA_KEYS_MAX: usize = 32;
/// Longest metadata key, in bytes.
pub const METADATA_KEY_LEN_MAX: usize = 64;
/// Longest metadata value, in bytes.
pub const METADATA_VALUE_LEN_MAX: usize = 1_024;
/// Longest free text (correction reason, owner, branch), in bytes.
pub const TEXT_LEN_MAX: usize = 512;
/// Most corrections (versions) of one entry.
pub const VERSIONS_PER_ENTRY_MAX: u32 = 1_000;
/// Most lines in one statement answer.
pub const STATEMENT_LINES_MAX: usize = 100_000;
/// Largest amount of one posting or hold, in minor units (10^24: 10^22 dollars, or a million
/// units of an 18-decimal token). Keeps every per-instant value far inside the balance index's
/// representable range (2^90), so sums can never overflow.
pub const POSTING_AMOUNT_MINOR_MAX: i128 = 1_000_000_000_000_000_000_000_000;

/// Most holds expired by one `ExpireHolds` command.
pub const HOLDS_EXPIRED_PER_COMMAND_MAX: usize = EVENTS_PER_COMMAND_MAX;

const _: () = assert!(POSTINGS_PER_ENTRY_MAX >= 2, "a transfer needs two postings");
const _: () = assert!(EVENTS_PER_APPEND_MAX >= COMMANDS_PER_BATCH_MAX);
const _: () = assert!(HOLDS_EXPIRED_PER_COMMAND_MAX <= EVENTS_PER_COMMAND_MAX);
const _: () = assert!(EVENTS_PER_READ_MAX >= EVENTS_PER_APPEND_MAX / 2);
const _: () = assert!(
    POSTING_AMOUNT_MINOR_MAX * POSTINGS_PER_ENTRY_MAX as i128
        <= crate::bitemporal::timeline::VALUE_COMPONENT_MAX
);
