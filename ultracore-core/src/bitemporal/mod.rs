//! Bitemporal balance index of one account: valid time (when money is effective) and transaction
//! time (when the ledger learnt of it, as a log position).
//!
//! [`timeline::Timeline`] is the current valid-time view with fast prefix sums and bound checks;
//! [`index::BitemporalIndex`] adds the transaction-time log and answers as-of questions;
//! [`log::ChangeLog`] stores that log compactly; a timeline chunk keeps each key beside its
//! running sum (`points`).

pub mod index;
pub mod log;
mod points;
pub mod timeline;

pub use index::{BitemporalIndex, Change};
pub use log::{ChangeLog, Changes};
pub use timeline::{BoundKind, Deltas, Entries, Timeline, TimelineError, TimelineKey, Violation};
