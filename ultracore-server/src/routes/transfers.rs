//! `/v1/transfers`: single transfers (posted or pending), the batch endpoint, and posting or
//! voiding a pending transfer (a hold).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use ultracore_core::ledger::{Command, EntryKind, PostHold, VoidHold};

use super::{
    accounts_resource, cached_accounts_resource, entry_receipt, entry_resource, execute,
    ledger_accounts_resource,
};
use crate::auth::mfa::Sensitive;
use crate::auth::policy::{authorize, Action, Resource};
use crate::config::TRANSFERS_PER_BATCH_MAX;
use crate::dto::{
    self, BatchItemOut, BatchOut, PostHoldIn, ReceiptOut, TransferIn, TransferOut, VoidHoldIn,
};
use crate::error::{json_error, ApiError, Problem};
use crate::extract::{mfa_required, Body, Caller, OptBody, MFA_REQUIRED};
use crate::state::AppState;

/// Move money from one account to another, or reserve it (`pending: true`) until posted,
/// voided or expired. The id is the idempotency key: the same request again answers the same
/// transfer; the same id with a different body is `409 id_conflict`.
#[utoipa::path(post, path = "/v1/transfers", request_body = TransferIn, tag = "transfers",
    security(("bearer" = [])),
    responses((status = 201, body = TransferOut), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem), (status = 503, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<TransferIn>,
) -> Result<(StatusCode, Json<TransferOut>), ApiError> {
    let cmd = req.to_command()?;
    let resource = accounts_resource(
        &state,
        &[(&req.debit_account, true), (&req.credit_account, false)],
    )
    .await;
    caller.authorize(Action::MoneyMove, &req.id, &resource)?;
    caller.require_mfa(&state.mfa, Sensitive::MoneyMove(&cmd))?;
    let receipt = entry_receipt(execute(&state, &caller, cmd, None).await?)?;
    Ok((StatusCode::CREATED, Json(TransferOut::new(receipt, &req))))
}

/// Up to `TRANSFERS_PER_BATCH_MAX` (8,192) transfers decided together and made durable by one
/// append, answered item by item (each with the status it would have had on its own). A
/// malformed item fails alone; the batch is not atomic.
#[utoipa::path(post, path = "/v1/transfers/batch", request_body = Vec<TransferIn>, tag = "transfers",
    security(("bearer" = [])),
    responses((status = 200, body = BatchOut), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 413, body = Problem)))]
pub async fn batch(
    State(state): State<AppState>,
    caller: Caller,
    Body(items): Body<Vec<Box<serde_json::value::RawValue>>>,
) -> Result<Json<BatchOut>, ApiError> {
    if items.len() > TRANSFERS_PER_BATCH_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "at most {TRANSFERS_PER_BATCH_MAX} transfers per batch, got {}",
                items.len()
            ),
        ));
    }
    state.metrics.api_batch_size.observe(items.len() as f64);
    let mut results: Vec<Option<Result<TransferOut, ApiError>>> = vec![None; items.len()];
    let mut parsed: Vec<(usize, TransferIn, Command)> = Vec::with_capacity(items.len());
    for (i, v) in items.into_iter().enumerate() {
        // Each item is parsed on its own from its raw text (no intermediate `Value` tree), so
        // a malformed item fails alone.
        let item = serde_json::from_str::<TransferIn>(v.get())
            .map_err(|e| json_error(&e))
            .and_then(|t| t.to_command().map(|c| (t, c)));
        match item {
            Ok((t, c)) => parsed.push((i, t, c)),
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    // Authorise every item: from the account-attribute cache (owner and branch never change
    // once an account is open), with one consistent read for the items naming accounts not
    // in it yet. Reads of the ledger would wait for the batch in flight to become durable.
    let mut allowed = Vec::with_capacity(parsed.len());
    let mut denied = Vec::new();
    let mut uncached = Vec::new();
    let allow = |r: &Resource| authorize(&caller.principal, Action::MoneyMove, r).allowed();
    for (i, t, c) in parsed {
        let accounts = [
            (t.debit_account.as_str(), true),
            (t.credit_account.as_str(), false),
        ];
        match cached_accounts_resource(&state, &accounts) {
            Some(r) if allow(&r) => allowed.push((i, t, c)),
            Some(_) => denied.push(i),
            None => uncached.push((i, t, c)),
        }
    }
    if !uncached.is_empty() {
        let verdicts = state
            .engine
            .read(|l| {
                uncached
                    .iter()
                    .map(|(_, t, _)| {
                        let accounts = [
                            (t.debit_account.as_str(), true),
                            (t.credit_account.as_str(), false),
                        ];
                        allow(&ledger_accounts_resource(&state, l, &accounts))
                    })
                    .collect::<Vec<bool>>()
            })
            .await;
        for (item, ok) in uncached.into_iter().zip(verdicts) {
            if ok {
                allowed.push(item);
            } else {
                denied.push(item.0);
            }
        }
        // Answers and the engine keep the request's order.
        allowed.sort_by_key(|(i, _, _)| *i);
    }
    // Items the policy allows but that need a multi-factor token this caller lacks.
    let (allowed, need_mfa): (Vec<_>, Vec<_>) = allowed.into_iter().partition(|(_, _, c)| {
        caller.principal.mfa || !state.mfa.requires(Sensitive::MoneyMove(c))
    });
    caller.ctx.note(|n| {
        n.action = Some(Action::MoneyMove);
        n.resource = Some(format!("batch of {}", results.len()));
        let mut decision = format!("allow {} deny {}", allowed.len(), denied.len());
        if !need_mfa.is_empty() {
            decision.push_str(&format!(" {MFA_REQUIRED} {}", need_mfa.len()));
        }
        n.decision = Some(decision);
    });
    for i in denied {
        results[i] = Some(Err(ApiError::forbidden(format!(
            "role {} may not move money out of this account",
            caller.principal.role.as_str()
        ))));
    }
    for (i, _, _) in need_mfa {
        results[i] = Some(Err(mfa_required()));
    }
    let trace = caller.trace();
    let commands = allowed
        .iter()
        .map(|(_, _, c)| (c.clone(), trace.clone()))
        .collect();
    let outcomes = state.engine.execute_batch(commands).await;
    for ((i, t, _), outcome) in allowed.iter().zip(outcomes) {
        results[*i] = Some(
            outcome
                .map_err(|e| ApiError::engine(e, None))
                .and_then(entry_receipt)
                .map(|r| TransferOut::new(r, t)),
        );
    }
    let mut out = BatchOut {
        accepted: 0,
        refused: 0,
        results: Vec::with_capacity(results.len()),
    };
    for (index, r) in results.into_iter().enumerate() {
        let r = r.unwrap_or_else(|| Err(ApiError::internal("batch item without an answer")));
        out.results.push(match r {
            Ok(t) => {
                out.accepted += 1;
                BatchItemOut {
                    index,
                    status: 201,
                    result: Some(t),
                    problem: None,
                }
            }
            Err(e) => {
                out.refused += 1;
                BatchItemOut {
                    index,
                    status: e.status.as_u16(),
                    result: None,
                    problem: Some(e.problem()),
                }
            }
        });
    }
    Ok(Json(out))
}

/// The hold's currency and policy resource (empty if unknown or not a hold).
async fn hold_context(
    state: &AppState,
    id: &ultracore_core::ids::EntryId,
) -> (Option<ultracore_core::money::Currency>, Resource) {
    state
        .engine
        .read(|l| {
            let currency = l.entry_record(id).and_then(|e| match &e.kind {
                EntryKind::Hold { amount, .. } => Some(amount.currency()),
                _ => None,
            });
            (currency, entry_resource(l, id))
        })
        .await
}

/// Post a pending transfer, fully or partly (never more than held); the rest is released.
#[utoipa::path(post, path = "/v1/transfers/{id}/post", request_body = PostHoldIn, tag = "transfers",
    security(("bearer" = [])), params(("id" = String, Path, description = "Pending transfer id")),
    responses((status = 200, body = ReceiptOut), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn post(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptBody(req): OptBody<PostHoldIn>,
) -> Result<Json<ReceiptOut>, ApiError> {
    let hold = dto::entry_id(&id)?;
    let (currency, resource) = hold_context(&state, &hold).await;
    caller.authorize(Action::HoldResolve, hold.as_str(), &resource)?;
    let amount = match (&req.amount, currency) {
        (Some(a), Some(c)) => Some(dto::amount(a, c)?),
        _ => None, // an unknown hold or a non-hold is reported by the core
    };
    let cmd = Command::PostHold(PostHold {
        hold: hold.clone(),
        amount,
        effective_at: dto::effective(req.effective_at.as_deref())?,
    });
    let r = entry_receipt(execute(&state, &caller, cmd, Some(hold.as_str())).await?)?;
    Ok(Json(r))
}

/// Release a pending transfer without posting.
#[utoipa::path(post, path = "/v1/transfers/{id}/void", request_body = VoidHoldIn, tag = "transfers",
    security(("bearer" = [])), params(("id" = String, Path, description = "Pending transfer id")),
    responses((status = 200, body = ReceiptOut), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn void(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptBody(req): OptBody<VoidHoldIn>,
) -> Result<Json<ReceiptOut>, ApiError> {
    let hold = dto::entry_id(&id)?;
    let (_, resource) = hold_context(&state, &hold).await;
    caller.authorize(Action::HoldResolve, hold.as_str(), &resource)?;
    let cmd = Command::VoidHold(VoidHold {
        hold: hold.clone(),
        effective_at: dto::effective(req.effective_at.as_deref())?,
    });
    let r = entry_receipt(execute(&state, &caller, cmd, Some(hold.as_str())).await?)?;
    Ok(Json(r))
}
