//! `/v1/entries`: multi-leg entries, corrections, reversals, and entries as known at a basis.

use axum::extract::{rejection::QueryRejection, Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use ultracore_core::ledger::{Command, Reverse};

use super::{entry_postings, entry_receipt, entry_resource, execute, postings_resource};
use crate::auth::mfa::Sensitive;
use crate::auth::policy::Action;
use crate::dto::{
    self, CorrectionIn, EntryIn, EntryOut, HistoryOut, ReceiptOut, ReversalIn, VersionOut,
};
use crate::error::{ApiError, Problem};
use crate::extract::{Body, Caller};
use crate::state::AppState;

/// Post a balanced multi-leg entry (two or more postings, debits equal credits per currency).
#[utoipa::path(post, path = "/v1/entries", request_body = EntryIn, tag = "entries",
    security(("bearer" = [])),
    responses((status = 201, body = ReceiptOut), (status = 400, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<EntryIn>,
) -> Result<(StatusCode, Json<ReceiptOut>), ApiError> {
    let cmd = req.to_command()?;
    let Command::PostEntry(entry) = &cmd else {
        return Err(ApiError::internal(
            "entry request did not build a PostEntry",
        ));
    };
    let resource = state
        .engine
        .read(|l| postings_resource(l, &entry.postings))
        .await;
    caller.authorize(Action::MoneyMove, &req.id, &resource)?;
    caller.require_mfa(&state.mfa, Sensitive::MoneyMove(&cmd))?;
    let r = entry_receipt(execute(&state, &caller, cmd, None).await?)?;
    Ok((StatusCode::CREATED, Json(r)))
}

/// Correct an entry: a new version supersedes the current one (new amount, legs or valid time,
/// or a cancellation). Nothing is deleted; `GET /v1/entries/{id}/history` shows every version.
#[utoipa::path(post, path = "/v1/entries/{id}/corrections", request_body = CorrectionIn, tag = "entries",
    security(("bearer" = [])), params(("id" = String, Path, description = "Entry id")),
    responses((status = 201, body = ReceiptOut), (status = 400, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn correct(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<CorrectionIn>,
) -> Result<(StatusCode, Json<ReceiptOut>), ApiError> {
    let entry = dto::entry_id(&id)?;
    let (currency, resource) = state
        .engine
        .read(|l| {
            let currency = l
                .entry_record(&entry)
                .and_then(|e| entry_postings(&e).first().map(|p| p.amount.currency()));
            (currency, entry_resource(l, &entry))
        })
        .await;
    caller.authorize(Action::EntryAmend, entry.as_str(), &resource)?;
    caller.require_mfa(&state.mfa, Sensitive::Correction)?;
    let cmd = req.to_command(entry.clone(), currency)?;
    let r = entry_receipt(execute(&state, &caller, cmd, Some(entry.as_str())).await?)?;
    Ok((StatusCode::CREATED, Json(r)))
}

/// Reverse an entry with a new, linked entry that mirrors it; the original stays.
#[utoipa::path(post, path = "/v1/entries/{id}/reversal", request_body = ReversalIn, tag = "entries",
    security(("bearer" = [])), params(("id" = String, Path, description = "Entry id")),
    responses((status = 201, body = ReceiptOut), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn reverse(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<ReversalIn>,
) -> Result<(StatusCode, Json<ReceiptOut>), ApiError> {
    let entry = dto::entry_id(&id)?;
    let resource = state.engine.read(|l| entry_resource(l, &entry)).await;
    caller.authorize(Action::EntryAmend, entry.as_str(), &resource)?;
    caller.require_mfa(&state.mfa, Sensitive::Reversal)?;
    let cmd = Command::Reverse(Reverse {
        id: dto::entry_id(&req.id)?,
        entry: entry.clone(),
        effective_at: dto::effective(req.effective_at.as_deref())?,
        metadata: dto::metadata(req.metadata.clone())?,
    });
    let r = entry_receipt(execute(&state, &caller, cmd, Some(entry.as_str())).await?)?;
    Ok((StatusCode::CREATED, Json(r)))
}

/// `?known_at=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EntryQuery {
    /// Transaction time or log position (default: now).
    pub known_at: Option<String>,
}

/// An entry as known at `known_at`: the version then in force.
#[utoipa::path(get, path = "/v1/entries/{id}", tag = "entries", security(("bearer" = [])),
    params(("id" = String, Path, description = "Entry id"), EntryQuery),
    responses((status = 200, body = EntryOut), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<EntryQuery>, QueryRejection>,
) -> Result<Json<EntryOut>, ApiError> {
    let Query(q) = q?;
    let entry = dto::entry_id(&id)?;
    let known_at = dto::known_at(q.known_at.as_deref())?;
    let resource = state.engine.read(|l| entry_resource(l, &entry)).await;
    caller.authorize(Action::EntryRead, entry.as_str(), &resource)?;
    let e = state
        .engine
        .read(|l| l.entry(&entry, known_at).map(|e| EntryOut::from(&e)))
        .await?;
    Ok(Json(e))
}

/// Every version of an entry, oldest first, with the transaction-time interval of each.
#[utoipa::path(get, path = "/v1/entries/{id}/history", tag = "entries", security(("bearer" = [])),
    params(("id" = String, Path, description = "Entry id")),
    responses((status = 200, body = HistoryOut), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<HistoryOut>, ApiError> {
    let entry = dto::entry_id(&id)?;
    let resource = state.engine.read(|l| entry_resource(l, &entry)).await;
    caller.authorize(Action::EntryRead, entry.as_str(), &resource)?;
    let versions = state
        .engine
        .read(|l| {
            l.entry_history(&entry)
                .map(|v| v.iter().map(VersionOut::from).collect())
        })
        .await?;
    Ok(Json(HistoryOut {
        id: entry.to_string(),
        versions,
    }))
}
