//! # ultracore-server
//!
//! The reference server of UltraCore: the `ultracore` binary and the library behind it. It runs
//! the core's [`Engine`](ultracore_core::engine::Engine) over any
//! `EventStore<LedgerEvent>` (chosen in one place, [`store::open_stores`]: the embedded durable
//! journal by default, PostgreSQL, or memory) behind an HTTP API:
//!
//! - the ledger API under `/v1` on `ULTRACORE_LEDGER_ADDR` (default `127.0.0.1:8000`):
//!   accounts, balances as of (valid time, known at), transfers and holds, multi-leg entries,
//!   a batch endpoint, corrections, reversals, statements, restatements, the event log, and the
//!   audit log. Amounts are decimal strings, times RFC 3339. See `docs/api.md`.
//! - three more listeners (compliance 8001, documents 8002, notifications 8003) with health
//!   endpoints only, until their APIs arrive;
//! - `Authorization: Bearer <JWT>` (HS256, or RS256/ES256 from a JWKS file or URL,
//!   [`auth::jwt`]) on everything except `/health/*`, `/metrics` and `/openapi.json`; roles
//!   enforced by a policy table ([`auth::policy`]), and an optional MFA step-up for sensitive
//!   actions ([`auth::mfa`]);
//! - optional TLS on every listener ([`tls`]);
//! - snapshots while serving, so a restart after a crash replays only the tail ([`snapshots`]);
//! - every request audited in a hash-chained, fsync'd log ([`auth::audit`]);
//! - RFC 7807 problem JSON for every error ([`error`]), Prometheus metrics, JSON logs with a
//!   correlation id, an OpenAPI 3.1 document generated from the code, graceful shutdown.
//!
//! ## Run it
//!
//! ```sh
//! cargo run --release -p ultracore-server --bin ultracore -- serve
//! TOKEN=$(cargo run -q --release -p ultracore-server --bin ultracore -- token --sub me --role admin)
//! curl -s -H "Authorization: Bearer $TOKEN" localhost:8000/v1/events
//! ```
//!
//! ## Use it as a library
//!
//! [`app::ledger_router`] is an ordinary axum `Router`; tests drive it with
//! `tower::ServiceExt::oneshot` and no socket:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ultracore_server::{app, config::Config, state::AppState};
//! let config = Config::load(None, |k| std::env::var(k).ok())?;
//! let (state, _startup) = AppState::build(&config).await?;
//! let router = app::ledger_router(state);
//! let listener = tokio::net::TcpListener::bind(config.ledger_addr).await?;
//! axum::serve(listener, router).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod config;
pub mod dto;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod read_model;
pub mod routes;
pub mod serve;
pub mod snapshots;
pub mod state;
pub mod store;
pub mod tls;
pub mod util;
