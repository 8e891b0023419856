//! `ApiError`: every way a request fails, rendered as RFC 7807 problem JSON
//! (`application/problem+json`) whose `type` ends in a stable code with a page in `docs/errors/`.
//!
//! Ledger rejections, money errors and query errors keep the core's codes; the server adds a few
//! of its own (`malformed_json`, `invalid_request`, `unauthenticated`, …), listed in
//! [`SERVER_CODES`]. Bodies never carry internals: store and invariant failures are logged and
//! answered with a generic detail.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use ultracore_core::engine::EngineError;
use ultracore_core::ids::IdError;
use ultracore_core::ledger::{QueryError, Rejection};
use ultracore_core::money::MoneyError;
use ultracore_core::store::StoreError;
use ultracore_core::time::TimestampError;

/// Prefix of every problem `type`: a URN that ends in the stable code, so clients can match on
/// it without depending on where the docs are hosted.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:ultracore:error:";

/// Codes introduced by the server (the core's codes are documented with the core).
pub const SERVER_CODES: &[&str] = &[
    "malformed_json",
    "invalid_request",
    "unsupported_media_type",
    "body_too_large",
    "batch_too_large",
    "unauthenticated",
    "token_expired",
    "forbidden",
    "mfa_required",
    "not_found",
    "method_not_allowed",
    "rate_limited",
    "unavailable",
    "internal",
];

/// A failed request: status, stable code, human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code (the suffix of the problem `type`).
    pub code: &'static str,
    /// Human-readable explanation; may change between releases.
    pub detail: String,
    /// Seconds after which a retry may succeed (429, 503).
    pub retry_after: Option<u64>,
}

/// The problem document (RFC 7807), plus `code` for clients that match on the bare code.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:ultracore:error:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// Explanation of this occurrence.
    pub detail: String,
    /// The stable code alone.
    pub code: String,
}

/// Marker put in response extensions so the audit and metrics layers see the outcome code.
#[derive(Clone, Copy, Debug)]
pub struct ProblemCode(pub &'static str);

impl ApiError {
    /// A problem with `status` and `code`.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 400 with a server code.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 401.
    pub fn unauthenticated(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404 for an unknown route.
    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(detail: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
        }
    }

    /// 500; the cause is logged, never sent.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log for this request id",
        )
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        Problem {
            type_: format!("{PROBLEM_TYPE_PREFIX}{}", self.code),
            title: title(self.code),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_string(),
        }
    }
}

fn title(code: &str) -> String {
    let mut t = code.replace('_', " ");
    if let Some(first) = t.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    t
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut res = (self.status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res.extensions_mut().insert(ProblemCode(self.code));
        res
    }
}

/// The status of a ledger rejection: 409 for id conflicts, 400 for malformed money input,
/// 404 when the thing missing is the resource named in the path, 422 for every other rule.
pub fn rejection_status(r: &Rejection, path_id: Option<&str>) -> StatusCode {
    match r {
        Rejection::IdConflict { .. } | Rejection::AccountExists { .. } => StatusCode::CONFLICT,
        Rejection::UnknownAccount { account } if path_id == Some(account.as_str()) => {
            StatusCode::NOT_FOUND
        }
        Rejection::UnknownEntry { entry } if path_id == Some(entry.as_str()) => {
            StatusCode::NOT_FOUND
        }
        _ => match r.code() {
            "too_many_decimals"
            | "invalid_amount_format"
            | "negative_amount"
            | "unknown_currency"
            | "invalid_currency" => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        },
    }
}

impl ApiError {
    /// A rejection of a command on the resource `path_id` (if the path names one).
    pub fn rejection(r: &Rejection, path_id: Option<&str>) -> ApiError {
        ApiError::new(rejection_status(r, path_id), r.code(), r.to_string())
    }

    /// An engine failure of a command on `path_id`.
    pub fn engine(e: EngineError, path_id: Option<&str>) -> ApiError {
        match e {
            EngineError::Rejected(r) => ApiError::rejection(&r, path_id),
            EngineError::BatchTooLarge => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                e.to_string(),
            ),
            EngineError::Recovering => ApiError::unavailable("the ledger is recovering", 1),
            EngineError::Store(s) => match s {
                // Another writer moved the log, or the store is down: the engine rebuilt its
                // state; the same request (same id) can be retried safely.
                StoreError::Unavailable(_) | StoreError::PositionConflict { .. } => {
                    tracing::warn!(error = %s, "store failure answered with 503");
                    ApiError::unavailable("the store is unavailable; retry with the same id", 1)
                }
                other => ApiError::internal(other),
            },
            EngineError::Invariant(i) => ApiError::internal(i),
            other => ApiError::internal(other),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        let status = match e {
            QueryError::UnknownAccount(_) | QueryError::UnknownEntry(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<MoneyError> for ApiError {
    fn from(e: MoneyError) -> ApiError {
        let status = match e {
            MoneyError::CurrencyMismatch { .. } | MoneyError::Overflow => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<IdError> for ApiError {
    fn from(e: IdError) -> ApiError {
        ApiError::bad_request(e.code(), e.to_string())
    }
}

impl From<TimestampError> for ApiError {
    fn from(e: TimestampError) -> ApiError {
        ApiError::bad_request(e.code(), e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        match &r {
            JsonRejection::JsonSyntaxError(_) => {
                ApiError::bad_request("malformed_json", r.body_text())
            }
            JsonRejection::JsonDataError(_) => {
                ApiError::bad_request("invalid_request", r.body_text())
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            ),
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body exceeds the limit for this endpoint",
            ),
            _ => ApiError::bad_request("invalid_request", r.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::bad_request("invalid_request", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError::bad_request("invalid_request", r.body_text())
    }
}

/// Maps a serde error on a body the server parsed itself (batch items).
pub fn json_error(e: &serde_json::Error) -> ApiError {
    ApiError::bad_request("invalid_request", e.to_string())
}
