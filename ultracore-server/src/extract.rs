//! Extractors: [`Body`] (strict JSON with problem-JSON errors), [`Caller`] (the authenticated,
//! rate-limited principal), and the per-request context the audit layer reads back.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::auth::mfa::{MfaPolicy, Sensitive};
use crate::auth::policy::{authorize, Action, Decision, Resource};
use crate::auth::{jwt, Principal};
use crate::error::ApiError;
use crate::state::AppState;

/// The problem code (and audit decision) of a refusal for want of MFA.
pub const MFA_REQUIRED: &str = "mfa_required";

/// `403 mfa_required`.
pub fn mfa_required() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        MFA_REQUIRED,
        "this action needs a token issued after multi-factor authentication (amr containing \"mfa\")",
    )
}

/// What a request learned about itself, for its audit record.
#[derive(Clone, Debug, Default)]
pub struct AuditNote {
    /// Authenticated principal.
    pub principal: Option<Principal>,
    /// Policy action.
    pub action: Option<Action>,
    /// Resource id.
    pub resource: Option<String>,
    /// `allow`, `deny`, or a summary for batches.
    pub decision: Option<String>,
}

/// Per-request context, inserted by the request layer.
#[derive(Clone, Debug)]
pub struct RequestCtx {
    /// `X-Request-Id`.
    pub correlation_id: Arc<str>,
    /// Filled by extractors and handlers.
    pub note: Arc<Mutex<AuditNote>>,
}

impl RequestCtx {
    /// A fresh context.
    pub fn new(correlation_id: Arc<str>) -> RequestCtx {
        RequestCtx {
            correlation_id,
            note: Arc::new(Mutex::new(AuditNote::default())),
        }
    }

    /// Updates the note.
    pub fn note(&self, f: impl FnOnce(&mut AuditNote)) {
        f(&mut self.note.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// A JSON body: `Content-Type: application/json`, within the route's size limit, no unknown
/// fields (the DTOs deny them). Errors: 415, 413, 400 `malformed_json`, 400 `invalid_request`.
#[derive(Debug)]
pub struct Body<T>(pub T);

/// Like [`Body`], but an empty body means `T::default()`.
#[derive(Debug)]
pub struct OptBody<T>(pub T);

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::bad_request("malformed_json", e.to_string())
            }
            Category::Data => ApiError::bad_request("invalid_request", e.to_string()),
        }
    })
}

async fn bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let mime = v
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    let b = Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body exceeds the limit for this endpoint",
            )
        } else {
            ApiError::bad_request("invalid_request", r.body_text())
        }
    })?;
    if !b.is_empty() && json != Some(true) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ));
    }
    Ok(b)
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let b = bytes(req, state).await?;
        if b.is_empty() {
            return Err(ApiError::bad_request(
                "malformed_json",
                "a JSON body is required",
            ));
        }
        parse(&b).map(Body)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let b = bytes(req, state).await?;
        if b.is_empty() {
            return Ok(OptBody(T::default()));
        }
        parse(&b).map(OptBody)
    }
}

/// The authenticated caller. Rejects with 401 (`unauthenticated`, `token_expired`) or 429.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// The request's context.
    pub ctx: RequestCtx,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ctx = parts
            .extensions
            .get::<RequestCtx>()
            .cloned()
            .unwrap_or_else(|| RequestCtx::new(Arc::from(crate::util::random_id("req"))));
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        let principal = state.keys.verify_refreshing(jwt::bearer(header)?).await?;
        ctx.note(|n| n.principal = Some(principal.clone()));
        if let Err(secs) = state.limiter.check(&principal.sub, Instant::now()) {
            return Err(ApiError {
                retry_after: Some(secs),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests for this principal",
                )
            });
        }
        Ok(Caller { principal, ctx })
    }
}

impl Caller {
    /// Asks the policy; records the action, resource and decision for the audit record.
    pub fn authorize(
        &self,
        action: Action,
        resource_id: &str,
        resource: &Resource,
    ) -> Result<(), ApiError> {
        let decision = authorize(&self.principal, action, resource);
        self.ctx.note(|n| {
            n.action = Some(action);
            n.resource = Some(resource_id.to_string());
            n.decision = Some(if decision.allowed() { "allow" } else { "deny" }.to_string());
        });
        match decision {
            Decision::Allow(_) => Ok(()),
            Decision::Deny => Err(ApiError::forbidden(format!(
                "role {} may not {} on {resource_id}",
                self.principal.role.as_str(),
                action.as_str()
            ))),
        }
    }

    /// Refuses `what` with `403 mfa_required` when the MFA policy needs a multi-factor token
    /// for it and this caller's token is not one; the audit record's decision then says
    /// `mfa_required`. Called after [`Caller::authorize`] allowed the action.
    pub fn require_mfa(&self, policy: &MfaPolicy, what: Sensitive<'_>) -> Result<(), ApiError> {
        if self.principal.mfa || !policy.requires(what) {
            return Ok(());
        }
        self.ctx
            .note(|n| n.decision = Some(MFA_REQUIRED.to_string()));
        Err(mfa_required())
    }

    /// The engine trace of a command made by this caller.
    pub fn trace(&self) -> ultracore_core::event::Trace {
        ultracore_core::event::Trace {
            correlation_id: Some(self.ctx.correlation_id.clone()),
            causation_id: None,
            actor: Some(Arc::from(self.principal.sub.as_str())),
        }
    }
}
