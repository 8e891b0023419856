//! Unauthenticated operational endpoints: liveness, readiness, Prometheus metrics, and the
//! OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::ApiError;
use crate::state::AppState;

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "ops", responses((status = 200, description = "alive")))]
pub async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "live" }))
}

/// The ledger takes traffic (503 while shutting down).
#[utoipa::path(get, path = "/health/ready", tag = "ops",
    responses((status = 200, description = "ready"), (status = 503, body = crate::error::Problem)))]
pub async fn ready(State(state): State<AppState>) -> Response {
    if state.is_ready() {
        let position = state.engine.read(|l| l.position()).await;
        Json(serde_json::json!({ "status": "ready", "position": position })).into_response()
    } else {
        ApiError::unavailable("shutting down", 5).into_response()
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let position = state.engine.read(|l| l.position()).await;
    state.metrics.observe_engine(state.engine.stats(), position);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// The OpenAPI 3.1 document of this API, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3.1 JSON")))]
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_json(),
    )
        .into_response()
}
