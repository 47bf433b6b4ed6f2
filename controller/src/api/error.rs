//! Every API error as one JSON shape, `{"error":{"code","message","retryable"}}`, made in
//! one place: handlers return [`ApiError`] with `?`, storage errors map through `From`, and
//! axum's own rejections (bad JSON, oversized bodies, unknown routes and methods) are turned
//! into the same shape by the extractors in `extract` and the `json_errors` layer.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tikfleet_shared::ErrorCode;
use utoipa::ToSchema;

use crate::db::{DbError, Refusal};

/// Codes the controller's API adds to [`ErrorCode`]'s.
pub mod codes {
    /// No valid bearer token.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// The token's role may not do this.
    pub const FORBIDDEN: &str = "forbidden";
    /// The request body is larger than the limit.
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// The body is not `application/json`.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// No such route for this method.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// The enrollment token was already used.
    pub const ENROLLMENT_TOKEN_USED: &str = "enrollment_token_used";
    /// The enrollment token expired.
    pub const ENROLLMENT_TOKEN_EXPIRED: &str = "enrollment_token_expired";
    /// No such enrollment token.
    pub const ENROLLMENT_TOKEN_INVALID: &str = "enrollment_token_invalid";
    /// The agent was revoked.
    pub const AGENT_REVOKED: &str = "agent_revoked";
    /// The key named in a rotation is not a current key of the agent.
    pub const UNKNOWN_KEY: &str = "unknown_key";
    /// The rotation's signature does not verify.
    pub const INVALID_SIGNATURE: &str = "invalid_signature";
    /// The rotation was signed too long ago (or in the future).
    pub const SIGNATURE_EXPIRED: &str = "signature_expired";
    /// The request is well formed but cannot be carried out as asked (a drift item whose
    /// router value cannot be taken into the database).
    pub const UNPROCESSABLE: &str = "unprocessable";
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An error's code, message and whether retrying can help.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code.
    pub code: String,
    /// What happened, for a person.
    pub message: String,
    /// Whether retrying the same request later can help.
    pub retryable: bool,
}

/// An API error: status, stable code, message, retryable.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retryable: bool,
}

impl ApiError {
    /// An error with a status, code and message; not retryable.
    #[must_use]
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retryable: false,
        }
    }

    /// 400 `invalid_request`.
    #[must_use]
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest.as_str(),
            message,
        )
    }

    /// 404 `not_found`.
    #[must_use]
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound.as_str(),
            format!("{what} not found"),
        )
    }

    /// 403 `forbidden`.
    #[must_use]
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, codes::FORBIDDEN, message)
    }

    /// 401 `unauthorized`.
    #[must_use]
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED, message)
    }

    /// The generic error for a status that has no more specific one (used for responses
    /// axum made itself).
    #[must_use]
    pub fn for_status(status: StatusCode) -> Self {
        let (code, message) = match status {
            StatusCode::NOT_FOUND => (
                ErrorCode::NotFound.as_str(),
                "no such path; see /api/v1/openapi.json",
            ),
            StatusCode::METHOD_NOT_ALLOWED => (
                codes::METHOD_NOT_ALLOWED,
                "this path does not take this method",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => (
                codes::PAYLOAD_TOO_LARGE,
                "the request body is larger than 1 MiB",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                codes::UNSUPPORTED_MEDIA_TYPE,
                "send the body as application/json",
            ),
            StatusCode::UNAUTHORIZED => (codes::UNAUTHORIZED, "a valid bearer token is required"),
            StatusCode::FORBIDDEN => (codes::FORBIDDEN, "this token may not do that"),
            s if s.is_server_error() => (ErrorCode::Internal.as_str(), "internal error"),
            _ => (ErrorCode::InvalidRequest.as_str(), "the request is invalid"),
        };
        let mut e = Self::new(status, code, message);
        e.retryable = status.is_server_error();
        e
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                retryable: self.retryable,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound(what) => Self::not_found(what),
            DbError::Conflict(m) => {
                Self::new(StatusCode::CONFLICT, ErrorCode::Conflict.as_str(), m)
            }
            DbError::Invalid(m) => Self::invalid(m),
            DbError::Forbidden(m) => Self::forbidden(m),
            DbError::Unprocessable(m) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, codes::UNPROCESSABLE, m)
            }
            DbError::Refused(r) => refusal(r),
            other => {
                let retryable = other.retryable();
                tracing::error!(error = %other, "request failed in storage");
                if retryable {
                    let mut e = Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorCode::Unavailable.as_str(),
                        "the database is busy or unreachable; retry later",
                    );
                    e.retryable = true;
                    e
                } else {
                    let mut e = Self::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        ErrorCode::Internal.as_str(),
                        "internal error; the controller's log has the details",
                    );
                    e.retryable = true;
                    e
                }
            }
        }
    }
}

fn refusal(r: Refusal) -> ApiError {
    match r {
        Refusal::TokenUnknown => ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::ENROLLMENT_TOKEN_INVALID,
            "no such enrollment token; ask staff for a new one",
        ),
        Refusal::TokenUsed => ApiError::new(
            StatusCode::CONFLICT,
            codes::ENROLLMENT_TOKEN_USED,
            "this enrollment token was already used; ask staff for a new one",
        ),
        Refusal::TokenExpired => ApiError::new(
            StatusCode::GONE,
            codes::ENROLLMENT_TOKEN_EXPIRED,
            "this enrollment token expired; ask staff for a new one",
        ),
        Refusal::AgentRevoked => ApiError::new(
            StatusCode::FORBIDDEN,
            codes::AGENT_REVOKED,
            "this agent was revoked; enroll it again with a new token",
        ),
        Refusal::KeyUnknown => ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::UNKNOWN_KEY,
            "the key_id is not a current key of this agent",
        ),
        Refusal::SignatureStale => ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::SIGNATURE_EXPIRED,
            "signed_at is more than 5 minutes from the controller's clock; check the agent's clock and sign again",
        ),
        Refusal::SignatureInvalid => ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::INVALID_SIGNATURE,
            "the signature does not verify with the current key",
        ),
    }
}
