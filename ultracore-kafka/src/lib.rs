//! # ultracore-kafka (not yet implemented)
//!
//! Will hold UltraCore's Kafka adapter: an `ultracore_core::store::EventStore` on the topics
//! `ledger-events`, `cash-events`, `compliance-events`, `document-events` and
//! `notification-events`, partitioned by account id, with one writer per partition and
//! expected-offset fencing so a zombie writer's batch is ignored by every reader
//! (see `docs/ARCHITECTURE.md`). Nothing is implemented yet; this crate exists so the
//! workspace has its final shape and the dependency direction (adapters depend on core) is
//! checked from the start.
#![warn(missing_docs)]
