//! `GET /v1/events`: the log, in pages, for integrators (catch-up readers).

use axum::extract::{rejection::QueryRejection, Query, State};
use axum::Json;
use serde::Deserialize;
use ultracore_core::store::EventStore;

use crate::auth::policy::{Action, Resource};
use crate::config::EVENTS_PER_PAGE_MAX;
use crate::dto::EventsOut;
use crate::error::{ApiError, Problem};
use crate::extract::Caller;
use crate::state::AppState;

/// `?after=&limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Return events after this position (default 0: from the start).
    pub after: Option<u64>,
    /// At most this many (default 100, at most 1,000).
    pub limit: Option<usize>,
}

/// Events after `after`, in log order, in the core's stored JSON form.
#[utoipa::path(get, path = "/v1/events", tag = "events", security(("bearer" = [])), params(EventsQuery),
    responses((status = 200, body = EventsOut), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<EventsOut>, ApiError> {
    let Query(q) = q?;
    caller.authorize(Action::EventsRead, "log", &Resource::default())?;
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(100).clamp(1, EVENTS_PER_PAGE_MAX);
    let store = state.engine.store();
    let page = store
        .read_all(after, limit)
        .await
        .map_err(|e| ApiError::engine(e.into(), None))?;
    let last_position = store
        .last_position()
        .await
        .map_err(|e| ApiError::engine(e.into(), None))?;
    let next_after = page.last().map_or(after, |e| e.position);
    let events = page
        .iter()
        .map(|e| {
            serde_json::from_slice(&ultracore_core::event::encode(e)).map_err(ApiError::internal)
        })
        .collect::<Result<_, _>>()?;
    Ok(Json(EventsOut {
        events,
        next_after,
        last_position,
    }))
}
