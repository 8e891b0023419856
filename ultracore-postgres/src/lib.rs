//! # ultracore-postgres (not yet implemented)
//!
//! Will hold UltraCore's PostgreSQL adapter: an `ultracore_core::store::EventStore` with a
//! commit-ordered global position, snapshots, embedded migrations, and the bitemporal read
//! models (accounts, entries, postings with `tstzrange` valid and transaction periods and
//! exclusion constraints) fed by a projection runner with exactly-once checkpoints.
//! Nothing is implemented yet.
#![warn(missing_docs)]
