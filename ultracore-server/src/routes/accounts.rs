//! `/v1/accounts`: open, read, freeze, unfreeze, close; balance, statement, restatement.

use axum::extract::{rejection::QueryRejection, Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use ultracore_core::ledger::Command;

use super::{account_attrs, execute};
use crate::auth::mfa::Sensitive;
use crate::auth::policy::{AccountAttrs, Action, Resource};
use crate::dto::{self, AccountOut, BalanceOut, CreateAccount, RestatementOut, StatementOut};
use crate::error::{ApiError, Problem};
use crate::extract::{Body, Caller};
use crate::read_model::{self, Source, SOURCE_HEADER};
use crate::state::AppState;

/// The `x-ultracore-read-source` header of a read answer (see `read_model.rs`).
type Sourced = [(axum::http::HeaderName, &'static str); 1];

fn sourced(source: Source) -> Sourced {
    [(SOURCE_HEADER, source.as_str())]
}

/// Open an account. The same request again answers the same account; the same id with
/// different attributes is `409 account_exists`.
#[utoipa::path(post, path = "/v1/accounts", request_body = CreateAccount, tag = "accounts",
    security(("bearer" = [])),
    responses((status = 201, body = AccountOut), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateAccount>,
) -> Result<(StatusCode, Json<AccountOut>), ApiError> {
    let cmd = req.to_command(|| crate::util::random_id("acc"))?;
    let resource = Resource {
        accounts: vec![AccountAttrs {
            owner: req.owner.clone(),
            branch: req.branch.clone(),
            debited: false,
        }],
    };
    caller.authorize(Action::AccountCreate, cmd.id.as_str(), &resource)?;
    let id = cmd.id.clone();
    execute(&state, &caller, Command::OpenAccount(cmd), None).await?;
    let out = read_account(&state, &id).await?;
    Ok((StatusCode::CREATED, Json(out)))
}

async fn read_account(
    state: &AppState,
    id: &ultracore_core::ids::AccountId,
) -> Result<AccountOut, ApiError> {
    state
        .engine
        .read(|l| l.account(id).map(AccountOut::from))
        .await
        .ok_or_else(|| {
            ApiError::from(ultracore_core::ledger::QueryError::UnknownAccount(
                id.clone(),
            ))
        })
}

/// Authorises `action` on the account at `id` (its owner and branch as the ledger knows them).
async fn authorize_account(
    state: &AppState,
    caller: &Caller,
    action: Action,
    id: &ultracore_core::ids::AccountId,
) -> Result<(), ApiError> {
    let attrs = state.engine.read(|l| account_attrs(l, id, false)).await;
    caller.authorize(
        action,
        id.as_str(),
        &Resource {
            accounts: vec![attrs],
        },
    )
}

/// An account as the ledger knows it now.
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = AccountOut), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AccountOut>, ApiError> {
    let id = dto::account_id(&id)?;
    authorize_account(&state, &caller, Action::AccountRead, &id).await?;
    Ok(Json(read_account(&state, &id).await?))
}

async fn status_change(
    state: AppState,
    caller: Caller,
    id: String,
    action: Action,
    make: fn(ultracore_core::ids::AccountId) -> Command,
) -> Result<Json<AccountOut>, ApiError> {
    let id = dto::account_id(&id)?;
    authorize_account(&state, &caller, action, &id).await?;
    if action == Action::AccountClose {
        caller.require_mfa(&state.mfa, Sensitive::AccountClose)?;
    }
    execute(&state, &caller, make(id.clone()), Some(id.as_str())).await?;
    Ok(Json(read_account(&state, &id).await?))
}

/// Refuse postings until unfrozen.
#[utoipa::path(post, path = "/v1/accounts/{id}/freeze", tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = AccountOut), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn freeze(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AccountOut>, ApiError> {
    status_change(state, caller, id, Action::AccountFreeze, |account| {
        Command::FreezeAccount { account }
    })
    .await
}

/// Accept postings again.
#[utoipa::path(post, path = "/v1/accounts/{id}/unfreeze", tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = AccountOut), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn unfreeze(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AccountOut>, ApiError> {
    status_change(state, caller, id, Action::AccountFreeze, |account| {
        Command::UnfreezeAccount { account }
    })
    .await
}

/// Close for good (zero balance, no open holds).
#[utoipa::path(post, path = "/v1/accounts/{id}/close", tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = AccountOut), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn close(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AccountOut>, ApiError> {
    status_change(state, caller, id, Action::AccountClose, |account| {
        Command::CloseAccount { account }
    })
    .await
}

/// `?valid_at=&known_at=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BalanceQuery {
    /// Valid time (RFC 3339; default now).
    pub valid_at: Option<String>,
    /// Transaction time (RFC 3339) or log position (digits); default now.
    pub known_at: Option<String>,
}

/// Balances at valid time `valid_at` as known at `known_at`.
#[utoipa::path(get, path = "/v1/accounts/{id}/balance", tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id"), BalanceQuery),
    responses((status = 200, body = BalanceOut), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn balance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<BalanceQuery>, QueryRejection>,
) -> Result<(Sourced, Json<BalanceOut>), ApiError> {
    let Query(q) = q?;
    let id = dto::account_id(&id)?;
    let valid_at = match &q.valid_at {
        Some(v) => dto::timestamp(v)?,
        None => crate::util::now(),
    };
    let known_at = dto::known_at(q.known_at.as_deref())?;
    authorize_account(&state, &caller, Action::AccountRead, &id).await?;
    if let Some(b) = read_model::balance(&state, &id, valid_at, known_at).await? {
        return Ok((sourced(Source::Sql), Json((&b).into())));
    }
    let b = state
        .engine
        .read(|l| l.balance(&id, valid_at, known_at))
        .await?;
    Ok((sourced(Source::Memory), Json((&b).into())))
}

/// `?from=&to=&known_at=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatementQuery {
    /// Period start (default: the account's opening).
    pub from: Option<String>,
    /// Period end (default: now).
    pub to: Option<String>,
    /// Transaction time or log position (default: now).
    pub known_at: Option<String>,
}

/// A statement with running balance for a valid-time period, as known at `known_at`.
#[utoipa::path(get, path = "/v1/accounts/{id}/statement", tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id"), StatementQuery),
    responses((status = 200, body = StatementOut), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn statement(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<StatementQuery>, QueryRejection>,
) -> Result<(Sourced, Json<StatementOut>), ApiError> {
    let Query(q) = q?;
    let id = dto::account_id(&id)?;
    let from = q.from.as_deref().map(dto::timestamp).transpose()?;
    let to =
        q.to.as_deref()
            .map(dto::timestamp)
            .transpose()?
            .unwrap_or_else(crate::util::now);
    let known_at = dto::known_at(q.known_at.as_deref())?;
    authorize_account(&state, &caller, Action::AccountRead, &id).await?;
    if let Some(s) = read_model::statement(&state, &id, from, to, known_at).await? {
        return Ok((sourced(Source::Sql), Json(StatementOut::from(&s))));
    }
    let s = state
        .engine
        .read(|l| {
            let from = from
                .or_else(|| l.account(&id).map(|a| a.opened_at.0))
                .unwrap_or(ultracore_core::time::Timestamp::EPOCH);
            l.statement(&id, from, to, known_at)
                .map(|s| StatementOut::from(&s))
        })
        .await?;
    Ok((sourced(Source::Memory), Json(s)))
}

/// `?from=&to=&known_at_1=&known_at_2=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RestatementQuery {
    /// Period start.
    pub from: String,
    /// Period end.
    pub to: String,
    /// First basis: transaction time or log position.
    pub known_at_1: String,
    /// Second basis (default: now).
    pub known_at_2: Option<String>,
}

/// What changed for a valid period between two bases, and which events caused it.
#[utoipa::path(get, path = "/v1/accounts/{id}/restatement", tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id"), RestatementQuery),
    responses((status = 200, body = RestatementOut), (status = 400, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn restatement(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<RestatementQuery>, QueryRejection>,
) -> Result<(Sourced, Json<RestatementOut>), ApiError> {
    let Query(q) = q?;
    let id = dto::account_id(&id)?;
    let from = dto::timestamp(&q.from)?;
    let to = dto::timestamp(&q.to)?;
    let k1 = dto::known_at(Some(&q.known_at_1))?;
    let k2 = dto::known_at(q.known_at_2.as_deref())?;
    authorize_account(&state, &caller, Action::AccountRead, &id).await?;
    if let Some(r) = read_model::restatement(&state, &id, (from, to), k1, k2).await? {
        return Ok((sourced(Source::Sql), Json(RestatementOut::from(&r))));
    }
    let r = state
        .engine
        .read(|l| {
            l.restatement(&id, from, to, k1, k2)
                .map(|r| RestatementOut::from(&r))
        })
        .await?;
    Ok((sourced(Source::Memory), Json(r)))
}
