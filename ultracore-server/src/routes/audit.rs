//! `GET /v1/audit`: the audit log, in pages, for auditors and admins.

use axum::extract::{rejection::QueryRejection, Query, State};
use axum::Json;
use serde::Deserialize;

use crate::auth::policy::{Action, Resource};
use crate::config::AUDIT_RECORDS_PER_PAGE_MAX;
use crate::dto::AuditOut;
use crate::error::{ApiError, Problem};
use crate::extract::Caller;
use crate::state::AppState;

/// `?after=&limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Records with `seq` greater than this (default 0).
    pub after: Option<u64>,
    /// At most this many (default 100, at most 1,000).
    pub limit: Option<usize>,
}

/// Audit records after `after`. Each carries `prev_hash` and `hash`, so a reader can check the
/// chain itself.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = AuditOut), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditOut>, ApiError> {
    let Query(q) = q?;
    caller.authorize(Action::AuditRead, "audit", &Resource::default())?;
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(100).clamp(1, AUDIT_RECORDS_PER_PAGE_MAX);
    let audit = state.audit.clone();
    let records = tokio::task::spawn_blocking(move || audit.read(after, limit))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let next_after = records.last().map_or(after, |r| r.seq);
    Ok(Json(AuditOut {
        records,
        next_after,
    }))
}
