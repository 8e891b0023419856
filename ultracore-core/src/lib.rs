//! # UltraCore core
//!
//! An embeddable, event-sourced, bitemporal double-entry ledger with no IO of its own.
//!
//! - **Double entry, to the cent**: amounts are `rust_decimal`-backed [`money::Amount`]s bound
//!   to a [`money::Currency`]; every journal entry balances per currency; accounts carry limits
//!   that hold at every valid time, holds included.
//! - **Event sourced**: every change is a [`ledger::LedgerEvent`] in an append-only log
//!   ([`store::EventStore`]); state is a fold over it ([`ledger::Ledger::apply`]).
//! - **Bitemporal**: every posting has a valid time ([`time::EffectiveAt`]) and a transaction
//!   time ([`time::RecordedAt`], paired with a log position). Back-dated entries and
//!   corrections never lose data, and every query can be asked "as of valid time V, as known
//!   at T" ([`ledger::KnownAt`]) without replaying anything ([`bitemporal`]).
//! - **Sans-IO**: no clock, no threads, no sockets, no files, no randomness. Time comes from a
//!   [`time::Clock`]; ids come from the caller. The async [`engine::Engine`] spawns nothing and
//!   runs on any executor and any store.
//!
//! ## Example
//!
//! ```
//! use std::sync::Arc;
//! use ultracore_core::prelude::*;
//!
//! # futures_executor::block_on(async {
//! let clock = Arc::new(ManualClock::new("2026-01-10T09:00:00Z".parse().unwrap()));
//! let engine = Engine::open(MemoryEventStore::new(), clock.clone(), EngineConfig::default())
//!     .await
//!     .unwrap();
//!
//! let usd = Currency::USD;
//! for (id, kind) in [("cash", AccountKind::Asset), ("alice", AccountKind::Liability)] {
//!     let open = OpenAccount {
//!         id: id.parse().unwrap(),
//!         currency: usd,
//!         kind,
//!         owner: None,
//!         branch: None,
//!         constraints: Constraints::default(),
//!         metadata: Metadata::new(),
//!         effective_at: Some(EffectiveAt("2026-01-01T00:00:00Z".parse().unwrap())),
//!     };
//!     engine.execute(Command::OpenAccount(open), Trace::default()).await.unwrap();
//! }
//!
//! // Alice deposits 100.00, back-dated to 5 January.
//! let deposit = PostEntry::transfer(
//!     "dep-1".parse().unwrap(),
//!     "cash".parse().unwrap(),
//!     "alice".parse().unwrap(),
//!     Amount::parse("100.00", usd).unwrap(),
//!     Some(EffectiveAt("2026-01-05T00:00:00Z".parse().unwrap())),
//! );
//! engine.execute(Command::PostEntry(deposit), Trace::default()).await.unwrap();
//!
//! let alice = "alice".parse().unwrap();
//! let jan6 = "2026-01-06T00:00:00Z".parse().unwrap();
//! let jan4 = "2026-01-04T00:00:00Z".parse().unwrap();
//! engine.read(|l| {
//!     assert_eq!(l.balance(&alice, jan6, KnownAt::Now).unwrap().posted.to_string(), "100.00");
//!     assert_eq!(l.balance(&alice, jan4, KnownAt::Now).unwrap().posted.to_string(), "0.00");
//! }).await;
//! # });
//! ```

#![warn(missing_docs)]

pub mod bitemporal;
pub mod engine;
pub mod event;
pub mod ids;
pub mod ledger;
pub mod limits;
pub mod money;
pub mod store;
pub mod time;
mod varint;

#[cfg(any(test, feature = "test-util"))]
pub mod testing;

/// The names most embedding applications need, in one import.
pub mod prelude {
    pub use crate::engine::{Engine, EngineConfig, EngineError};
    pub use crate::event::{Envelope, Trace};
    pub use crate::ids::{AccountId, EntryId};
    pub use crate::ledger::{
        AccountKind, BalanceView, Command, Constraints, Correct, Direction, KnownAt, Ledger,
        LedgerConfig, LedgerEvent, Metadata, OpenAccount, Outcome, PlaceHold, PostEntry, PostHold,
        Posting, Rejection, Reverse, VoidHold,
    };
    pub use crate::money::{Amount, Currency, RoundingMode, SignedAmount};
    pub use crate::store::{EventStore, MemoryEventStore};
    pub use crate::time::{Clock, EffectiveAt, ManualClock, RecordedAt, Timestamp};
}
