//! The routers: the ledger API (port 8000) and the three listeners whose APIs come later
//! (compliance 8001, documents 8002, notifications 8003: health and a 404 problem for now), and
//! the request layer every ledger request passes through: correlation id (taken from
//! `X-Request-Id` or generated, echoed back), audit record (durable before the answer leaves),
//! metrics, and one JSON log line.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::auth::audit::AuditEvent;
use crate::config::{BATCH_BODY_BYTES_MAX, BODY_BYTES_MAX};
use crate::error::{ApiError, ProblemCode};
use crate::extract::RequestCtx;
use crate::metrics::{CodeLabels, LatencyLabels, RouteLabels};
use crate::routes::{accounts, audit, entries, events, ops, transfers};
use crate::state::AppState;

/// Longest `X-Request-Id` taken from a client; longer or non-printable ones are replaced.
const REQUEST_ID_LEN_MAX: usize = 128;

/// The ledger API.
pub fn ledger_router(state: AppState) -> Router {
    Router::new()
        .route("/v1/accounts", post(accounts::create))
        .route("/v1/accounts/{id}", get(accounts::get))
        .route("/v1/accounts/{id}/freeze", post(accounts::freeze))
        .route("/v1/accounts/{id}/unfreeze", post(accounts::unfreeze))
        .route("/v1/accounts/{id}/close", post(accounts::close))
        .route("/v1/accounts/{id}/balance", get(accounts::balance))
        .route("/v1/accounts/{id}/statement", get(accounts::statement))
        .route("/v1/accounts/{id}/restatement", get(accounts::restatement))
        .route("/v1/transfers", post(transfers::create))
        .route(
            "/v1/transfers/batch",
            post(transfers::batch).layer(DefaultBodyLimit::max(BATCH_BODY_BYTES_MAX)),
        )
        .route("/v1/transfers/{id}/post", post(transfers::post))
        .route("/v1/transfers/{id}/void", post(transfers::void))
        .route("/v1/entries", post(entries::create))
        .route("/v1/entries/{id}", get(entries::get))
        .route("/v1/entries/{id}/history", get(entries::history))
        .route("/v1/entries/{id}/corrections", post(entries::correct))
        .route("/v1/entries/{id}/reversal", post(entries::reverse))
        .route("/v1/events", get(events::list))
        .route("/v1/audit", get(audit::list))
        .route("/health/live", get(ops::live))
        .route("/health/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(middleware::from_fn_with_state(state.clone(), request_layer))
        .with_state(state)
}

/// A listener whose API arrives in a later issue: health, and 404 problem JSON for the rest.
pub fn placeholder_router(name: &'static str) -> Router {
    Router::new()
        .route(
            "/health/live",
            get(move || async move { Json(serde_json::json!({ "status": "live", "api": name })) }),
        )
        .route(
            "/health/ready",
            get(move || async move { Json(serde_json::json!({ "status": "ready", "api": name })) }),
        )
        .fallback(not_found)
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed on this resource",
    )
}

/// Paths that are neither authenticated nor audited (probes and scrapes).
fn is_ops_path(path: &str) -> bool {
    matches!(
        path,
        "/health/live" | "/health/ready" | "/metrics" | "/openapi.json"
    )
}

fn correlation_id(headers: &HeaderMap) -> Arc<str> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= REQUEST_ID_LEN_MAX
                && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map_or_else(|| Arc::from(crate::util::random_id("req")), Arc::from)
}

async fn request_layer(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let cid = correlation_id(req.headers());
    let ctx = RequestCtx::new(cid.clone());
    req.extensions_mut().insert(ctx.clone());
    // Label values must stay few: extension methods from clients all count as OTHER.
    let method = match *req.method() {
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::DELETE
        | Method::PATCH
        | Method::HEAD
        | Method::OPTIONS => req.method().to_string(),
        _ => "OTHER".to_string(),
    };
    let path = req.uri().path().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();

    let mut res = next.run(req).await;

    let note = ctx.note.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if !is_ops_path(&path) {
        let outcome = res
            .extensions()
            .get::<ProblemCode>()
            .map_or("ok", |c| c.0)
            .to_string();
        let event = AuditEvent {
            time: crate::util::now().to_string(),
            correlation_id: cid.to_string(),
            principal: note.principal.as_ref().map(|p| p.sub.clone()),
            role: note.principal.as_ref().map(|p| p.role.as_str().to_string()),
            method: method.clone(),
            path: path.clone(),
            action: note.action.map(|a| a.as_str().to_string()),
            resource: note.resource.clone(),
            decision: note.decision.clone().unwrap_or_else(|| "none".to_string()),
            status: res.status().as_u16(),
            outcome,
        };
        if let Err(e) = state.audit.append(event).await {
            // Fail closed: nothing is answered without its audit record. A command may have
            // been executed; retrying it with the same id is safe.
            tracing::error!(error = %e, correlation_id = %cid, "audit append failed");
            res = ApiError::unavailable("the audit log is unavailable", 5).into_response();
        }
    }

    let status = res.status().as_u16();
    let elapsed = start.elapsed();
    state
        .metrics
        .requests
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
            status,
        })
        .inc();
    state
        .metrics
        .latency
        .get_or_create(&LatencyLabels {
            method: method.clone(),
            route,
        })
        .observe(elapsed.as_secs_f64());
    let code = res.extensions().get::<ProblemCode>().map(|c| c.0);
    if let Some(code) = code {
        state
            .metrics
            .errors
            .get_or_create(&CodeLabels {
                code: code.to_string(),
            })
            .inc();
    }
    if let Ok(v) = HeaderValue::from_str(&cid) {
        res.headers_mut().insert("x-request-id", v);
    }
    tracing::info!(
        correlation_id = %cid,
        method = %method,
        path = %path,
        status,
        latency_us = elapsed.as_micros() as u64,
        principal = note.principal.as_ref().map_or("-", |p| p.sub.as_str()),
        outcome = code.unwrap_or("ok"),
        "request"
    );
    res
}
