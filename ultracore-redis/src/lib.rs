//! # ultracore-redis (not yet implemented)
//!
//! Will hold UltraCore's Redis adapter: sessions, leases paired with fencing tokens that the
//! event store checks (a Redis lock alone is never trusted with money), per-principal rate
//! limits and a response cache. Nothing is implemented yet.
#![warn(missing_docs)]
