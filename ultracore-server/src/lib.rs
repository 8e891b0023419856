//! # ultracore-server (not yet implemented)
//!
//! Will hold the reference HTTP server (`ultracore serve`) and CLI: the ledger API under `/v1`
//! on port 8000 (compliance 8001, documents 8002, notifications 8003), JWT authentication,
//! RBAC + ABAC authorisation, a hash-chained audit log, RFC 7807 errors, Prometheus metrics,
//! and the embedded durable journal as the default store. Nothing is implemented yet: today
//! `ultracore-core` is embedded directly (see `examples/embedded-ledger`).
#![warn(missing_docs)]
