//! `ultracore serve`: binds the four listeners, serves until a shutdown signal, then stops
//! accepting, lets in-flight requests finish (each one's command is durable and audited before
//! its answer), flushes the audit log, saves a snapshot when the store keeps them, and returns.
//! While serving, a task saves snapshots (and the journal's index checkpoint) as configured
//! (`snapshots.rs`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;
use ultracore_core::engine::OpenedFrom;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::{ledger_router, placeholder_router};
use crate::config::Config;
use crate::snapshots::{run_periodic, take, Kind, SnapshotPolicy};
use crate::state::{AppState, StartError};
use crate::tls::TlsListener;

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Start-up.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A listener failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Serves until `shutdown` completes. Prints where each listener is (on stdout, one line each,
/// `ultracore: <api> listening on http://<addr>`), so scripts and tests can find a port 0.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Checked before the store is opened: a replay can take long, a typo in a path should not.
    let tls = config.tls().map_err(StartError::from)?;
    let (state, startup) = AppState::build(&config).await?;
    if startup.audit.torn_tail > 0 {
        tracing::warn!(
            bytes = startup.audit.torn_tail,
            "audit log had an unfinished last record (never acknowledged); truncated"
        );
    }
    // The engine's batches are led on a task of their own, started before any request can
    // arrive: a request handler then only queues its commands and waits for its answer, and
    // is never held up leading other connections' batches (nor, if its client goes away,
    // cancelled in the middle of one).
    let engine = state.engine.clone();
    let driver = tokio::spawn(async move { engine.drive().await });
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listeners = [
        ("ledger", bind(config.ledger_addr).await?),
        ("compliance", bind(config.compliance_addr).await?),
        ("document", bind(config.document_addr).await?),
        ("notification", bind(config.notification_addr).await?),
    ];
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for (name, listener) in listeners {
        let addr = listener.local_addr()?;
        println!("ultracore: {name} API listening on {scheme}://{addr}");
        let router = match name {
            "ledger" => ledger_router(state.clone()),
            other => placeholder_router(other),
        };
        let mut rx = stop_rx.clone();
        let stopped = async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let tls = tls.clone();
        tasks.push(tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    axum::serve(TlsListener::new(listener, acceptor)?, router)
                        .with_graceful_shutdown(stopped)
                        .await
                }
                None => {
                    // No Nagle delay: each answer is one small write that the client awaits.
                    let listener = listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    axum::serve(listener, router)
                        .with_graceful_shutdown(stopped)
                        .await
                }
            }
        }));
    }
    let store = if startup.durable {
        "durable"
    } else {
        "in memory: nothing survives a restart"
    };
    let position = state.engine.read(|l| l.position()).await;
    let snapshot_at = match startup.opened {
        OpenedFrom::Snapshot { position: at } => at,
        OpenedFrom::Replay => 0,
    };
    let rebuilt = match startup.opened {
        OpenedFrom::Snapshot { position: at } => format!(
            "state at position {position}: snapshot at {at} + {} events replayed",
            position.saturating_sub(at)
        ),
        OpenedFrom::Replay => format!("state at position {position}: {position} events replayed"),
    };
    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    state
        .metrics
        .startup_snapshot_position
        .set(gauge(snapshot_at));
    state
        .metrics
        .startup_replayed_events
        .set(gauge(position.saturating_sub(snapshot_at)));
    let periodic = tokio::spawn(run_periodic(
        state.clone(),
        SnapshotPolicy {
            every_events: config.snapshot_every_events,
            interval: (config.snapshot_interval_seconds > 0)
                .then(|| Duration::from_secs(config.snapshot_interval_seconds)),
        },
        snapshot_at,
        stop_rx.clone(),
    ));
    println!(
        "ultracore: store {store}; {rebuilt}; audit log {} ({} records)",
        config.audit_path().display(),
        startup.audit.records
    );
    println!("ultracore: get a token with `ultracore token --sub <you> --role admin`");
    tracing::info!(opened = ?startup.opened, "ultracore serving");

    shutdown.await;
    tracing::info!("shutdown: no new connections; finishing in-flight requests");
    state.ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    for t in tasks {
        match t.await {
            Ok(r) => r?,
            Err(e) => tracing::error!(error = %e, "listener task failed"),
        }
    }
    state.audit.flush().await;
    // A periodic delta in progress finishes first (a full one is given up); then the final
    // snapshot: a delta when the chain has room.
    if let Err(e) = periodic.await {
        tracing::error!(error = %e, "periodic snapshot task failed");
    }
    match take(&state, Kind::DeltaElseFull).await {
        Ok(Some(t)) => t.log(false, snapshot_at),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "snapshot not saved"),
    }
    // Idle now (every request was answered): stopping it hands leading back to callers.
    driver.abort();
    tracing::info!("shutdown complete");
    Ok(())
}
