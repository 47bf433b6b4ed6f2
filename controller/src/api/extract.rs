//! Extractors whose rejections are API errors: JSON bodies, query strings, path ids and the
//! bearer token. Axum's own rejections are plain text; these answer the JSON error shape.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::error::{ApiError, codes};
use crate::app::AppState;
use crate::auth::Principal;

/// A JSON body; bad JSON, unknown fields, wrong types and oversized bodies are 4xx.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(r) => Err(json_rejection(&r)),
        }
    }
}

fn json_rejection(r: &JsonRejection) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => ApiError::invalid(format!(
            "the body does not fit this request: {}",
            serde_detail(&e.body_text())
        )),
        JsonRejection::JsonSyntaxError(e) => ApiError::invalid(format!(
            "the body is not valid JSON: {}",
            serde_detail(&e.body_text())
        )),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::UNSUPPORTED_MEDIA_TYPE,
            "send the body with Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::for_status(StatusCode::PAYLOAD_TOO_LARGE)
        }
        other => ApiError::invalid(format!("the body could not be read ({})", other.status())),
    }
}

/// A JSON body that may be left out (an empty body is `None`).
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::for_status(StatusCode::PAYLOAD_TOO_LARGE)
                } else {
                    ApiError::invalid(format!("the body could not be read ({})", e.status()))
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        serde_json::from_slice(&bytes)
            .map(|v| Self(Some(v)))
            .map_err(|e| ApiError::invalid(format!("the body does not fit this request: {e}")))
    }
}

/// Keeps serde's explanation (after axum's prefix).
fn serde_detail(text: &str) -> String {
    let detail = text.rsplit_once(": ").map_or(text, |(_, d)| d);
    detail.chars().take(300).collect()
}

/// A query string; unknown parameters and bad values are 400.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::invalid(format!(
                    "the query string is invalid: {}",
                    serde_detail(&e.body_text())
                )))
            }
            Err(e) => Err(ApiError::invalid(format!(
                "the query string is invalid ({})",
                e.status()
            ))),
        }
    }
}

/// A path parameter (an id); one that is not an id is 400.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => Err(ApiError::invalid(
                "the id in the path is not a valid id (a UUID)",
            )),
            Err(e) => Err(ApiError::invalid(format!(
                "the path is invalid ({})",
                e.status()
            ))),
        }
    }
}

/// The authenticated staff token (`Authorization: Bearer <token>`).
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("send a staff token as Authorization: Bearer <token>")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                let (scheme, rest) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be Bearer <token>")
            })?;
        match state.db.authenticate(token).await? {
            Some(p) => Ok(Self(p)),
            None => Err(ApiError::unauthorized("the token is unknown or revoked")),
        }
    }
}

impl Auth {
    /// The principal, if it may write; viewers get 403.
    ///
    /// # Errors
    /// The principal is a viewer.
    pub fn writer(self) -> Result<Principal, ApiError> {
        if self.0.can_write() {
            Ok(self.0)
        } else {
            Err(ApiError::forbidden(
                "a viewer token can only read; use an operator or admin token",
            ))
        }
    }
}

/// Turns any error response that is not JSON (made by axum or tower-http themselves: unknown
/// routes, wrong methods, body limits) into the API's error shape.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    ApiError::for_status(status).into_response()
}
