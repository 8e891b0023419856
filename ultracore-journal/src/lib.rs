//! # UltraCore journal
//!
//! The embedded durable store of UltraCore: an append-only journal that implements core's
//! [`EventStore`](ultracore_core::store::EventStore), and a file-backed
//! [`SnapshotStore`](ultracore_core::store::SnapshotStore). No HTTP, no async runtime: an
//! embedding application uses it with the core's `Engine` on any executor.
//!
//! - **Durable before acknowledged**: an append returns only after `fdatasync` of the segment
//!   that holds it (and, for a new segment, of its directory).
//! - **Group commit**: one writer thread takes every append queued while it was syncing,
//!   validates them in order (core's `validate_batch`: fencing by expected position, stream
//!   expectations, contiguous versions, increasing transaction time), writes them with one
//!   `write` and one `fdatasync`, then answers all of them.
//! - **Atomic batches**: one append is one record, `[len][crc32c][header crc][body]`; after a
//!   crash a record is either whole or cut off as a torn tail, so a batch is all there or not.
//! - **Recovery that never skips**: [`Journal::open`] checks every record. A torn tail (the
//!   last record of the last segment incomplete or failing its checksum) is truncated and
//!   reported in the [`RecoveryReport`]; any other damage refuses to open with
//!   [`JournalError::Corrupt`], naming the file and byte offset.
//! - **One writer per directory**: [`Journal::open`] takes an exclusive `flock` on
//!   `<dir>/LOCK`; a second open (another process, or the same one) fails at once with
//!   [`JournalError::Locked`], naming the directory and the holder's PID.
//! - **Fast start**: [`Journal::checkpoint`] (call it alongside ledger snapshots) saves the
//!   in-memory index so that open decodes only the events after it. Checkpoints form chains:
//!   a base with the whole index, then links with only the events since the last checkpoint
//!   (see [`checkpoint`]), so each costs in proportion to what is new.
//! - **Binary and versioned**: segments carry a format version; every event carries its
//!   payload's schema version, and [`JournalEvent::decode_payload`] is where an old version is
//!   upcast (see [`codec`] and the `ledger` module docs).
//!
//! The file format and the recovery rules are in `docs/ARCHITECTURE.md` ("Embedded journal").
//!
//! ## Example
//!
//! ```
//! use std::sync::Arc;
//! use ultracore_core::prelude::*;
//! use ultracore_journal::{Journal, JournalConfig};
//!
//! # futures_executor::block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let clock = Arc::new(ManualClock::new("2026-01-10T09:00:00Z".parse().unwrap()));
//! let usd = Currency::USD;
//! {
//!     let (journal, report) = Journal::<LedgerEvent>::open(dir.path(), JournalConfig::default()).unwrap();
//!     assert_eq!(report.torn_tail, None);
//!     let engine = Engine::open(journal, clock.clone(), EngineConfig::default()).await.unwrap();
//!     for (id, kind) in [("cash", AccountKind::Asset), ("alice", AccountKind::Liability)] {
//!         let open = OpenAccount {
//!             id: id.parse().unwrap(),
//!             currency: usd,
//!             kind,
//!             owner: None,
//!             branch: None,
//!             constraints: Constraints::default(),
//!             metadata: Metadata::new(),
//!             effective_at: None,
//!         };
//!         engine.execute(Command::OpenAccount(open), Trace::default()).await.unwrap();
//!     }
//!     let deposit = PostEntry::transfer(
//!         "dep-1".parse().unwrap(),
//!         "cash".parse().unwrap(),
//!         "alice".parse().unwrap(),
//!         Amount::parse("100.00", usd).unwrap(),
//!         None,
//!     );
//!     engine.execute(Command::PostEntry(deposit), Trace::default()).await.unwrap();
//! } // the engine and its journal are dropped: the process could stop here
//!
//! clock.advance_micros(1_000_000);
//! let (journal, report) = Journal::<LedgerEvent>::open(dir.path(), JournalConfig::default()).unwrap();
//! assert_eq!(report.events, 3);
//! let engine = Engine::open(journal, clock.clone(), EngineConfig::default()).await.unwrap();
//! let alice = "alice".parse().unwrap();
//! let posted = engine
//!     .read(|l| l.balance(&alice, clock.now(), KnownAt::Now).unwrap().posted.to_string())
//!     .await;
//! assert_eq!(posted, "100.00");
//! # });
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
pub mod codec;
mod error;
mod journal;
mod ledger;
mod lock;
pub mod segment;
mod snapshot;
mod streams;

pub use codec::JournalEvent;
pub use error::{JournalError, RecoveryReport, TornTail};
pub use journal::{
    Journal, JournalConfig, JournalStats, GROUP_REQUESTS_MAX, PREALLOCATE_BYTES_DEFAULT,
    PREALLOCATE_WRITE_MAX, SEGMENT_SIZE_MAX, SEGMENT_SIZE_MIN,
};
pub use lock::{DirLock, LOCK_FILE};
pub use snapshot::{FileSnapshotStore, SCOPE_LEN_MAX, SNAPSHOTS_KEPT};
