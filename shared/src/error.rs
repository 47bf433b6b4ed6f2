//! Stable error codes and the [`ErrorInfo`] wire struct.
//!
//! Every failure in tikfleet, whether in the HTTP API, a job result or an audit record, is
//! described by an [`ErrorCode`] (a stable snake_case machine code), a message a person can
//! act on, and whether retrying can help. [`ErrorInfo`] is that triple; its JSON form is
//! `{"code":"timeout","message":"…","retryable":true}`, the same shape the API nests under
//! `"error"`.
//!
//! Codes are only ever added, never renamed or removed. A peer that receives a code it does
//! not know decodes it as [`ErrorCode::Unknown`] instead of failing the whole frame, so an
//! outbox record from a newer agent never gets stuck; [`ErrorInfo::retryable`] travels with
//! the code, so the receiver still knows whether to retry.
//!
//! This module is about error *values* carried on the wire. The Rust error enum of the
//! protocol boundary is [`ProtocolError`](crate::protocol::ProtocolError).

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a failure should be handled (design.md, "Retries and failure").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Retry with exponential backoff and jitter.
    Transient,
    /// Fail at once; retrying the same request cannot help.
    Permanent,
    /// Fail and raise an alert: credentials are wrong or were revoked.
    Authentication,
}

/// A stable, machine-readable error code.
///
/// Serialized as its snake_case name (see [`ErrorCode::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The router (or controller) refused the TCP connection.
    ConnectionRefused,
    /// No answer in time.
    Timeout,
    /// The connection was reset or closed mid-conversation.
    ConnectionReset,
    /// The router answered `!fatal` and closed the session.
    RouterFatal,
    /// Login failed: wrong or revoked credentials.
    AuthenticationFailed,
    /// Logged in, but the user's group may not do this.
    PermissionDenied,
    /// The router rejected a value (`!trap` with a bad argument).
    InvalidValue,
    /// An item with this name already exists and is not ours to change.
    DuplicateName,
    /// The router has no such item.
    NoSuchItem,
    /// The router does not know the command (older RouterOS, missing package).
    UnknownCommand,
    /// The peer speaks no protocol version we support.
    UnsupportedVersion,
    /// A disk or queue is full.
    StorageFull,
    /// Too many requests; slow down.
    RateLimited,
    /// The object does not exist, or belongs to another tenant.
    NotFound,
    /// The request conflicts with the current state (e.g. an item made by hand).
    Conflict,
    /// The request is malformed or fails validation.
    InvalidRequest,
    /// The peer broke the agent⇄controller protocol.
    ProtocolError,
    /// A frame exceeded the size limit.
    FrameTooLarge,
    /// The job or request was cancelled.
    Cancelled,
    /// The service is temporarily unavailable (shutting down, agent offline).
    Unavailable,
    /// A bug or unexpected condition on our side.
    Internal,
    /// The router refused a command for a reason no other code describes (a `!trap` such as
    /// `failure: can not remove default item`); the message carries the router's words.
    RouterError,
    /// A code this build does not know (sent by a newer peer). Never sent on purpose.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code a peer may send, in declaration order (without [`ErrorCode::Unknown`]).
    pub const ALL: [ErrorCode; 22] = [
        Self::ConnectionRefused,
        Self::Timeout,
        Self::ConnectionReset,
        Self::RouterFatal,
        Self::AuthenticationFailed,
        Self::PermissionDenied,
        Self::InvalidValue,
        Self::DuplicateName,
        Self::NoSuchItem,
        Self::UnknownCommand,
        Self::UnsupportedVersion,
        Self::StorageFull,
        Self::RateLimited,
        Self::NotFound,
        Self::Conflict,
        Self::InvalidRequest,
        Self::ProtocolError,
        Self::FrameTooLarge,
        Self::Cancelled,
        Self::Unavailable,
        Self::Internal,
        Self::RouterError,
    ];

    /// The stable snake_case code, identical to the serialized form.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionRefused => "connection_refused",
            Self::Timeout => "timeout",
            Self::ConnectionReset => "connection_reset",
            Self::RouterFatal => "router_fatal",
            Self::AuthenticationFailed => "authentication_failed",
            Self::PermissionDenied => "permission_denied",
            Self::InvalidValue => "invalid_value",
            Self::DuplicateName => "duplicate_name",
            Self::NoSuchItem => "no_such_item",
            Self::UnknownCommand => "unknown_command",
            Self::UnsupportedVersion => "unsupported_version",
            Self::StorageFull => "storage_full",
            Self::RateLimited => "rate_limited",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::InvalidRequest => "invalid_request",
            Self::ProtocolError => "protocol_error",
            Self::FrameTooLarge => "frame_too_large",
            Self::Cancelled => "cancelled",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::RouterError => "router_error",
            Self::Unknown => "unknown",
        }
    }

    /// Parses a code from its snake_case name; unknown names give `None`.
    #[must_use]
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// How a failure with this code is handled.
    #[must_use]
    pub const fn class(self) -> ErrorClass {
        match self {
            Self::ConnectionRefused
            | Self::Timeout
            | Self::ConnectionReset
            | Self::RouterFatal
            | Self::StorageFull
            | Self::RateLimited
            | Self::Unavailable
            | Self::Internal => ErrorClass::Transient,
            Self::AuthenticationFailed => ErrorClass::Authentication,
            Self::PermissionDenied
            | Self::InvalidValue
            | Self::DuplicateName
            | Self::NoSuchItem
            | Self::UnknownCommand
            | Self::UnsupportedVersion
            | Self::NotFound
            | Self::Conflict
            | Self::InvalidRequest
            | Self::ProtocolError
            | Self::FrameTooLarge
            | Self::Cancelled
            | Self::RouterError
            | Self::Unknown => ErrorClass::Permanent,
        }
    }

    /// Whether retrying the same operation later can help.
    #[must_use]
    pub const fn retryable(self) -> bool {
        matches!(self.class(), ErrorClass::Transient)
    }

    /// A default message for people, used when nothing more specific is known.
    #[must_use]
    pub const fn default_message(self) -> &'static str {
        match self {
            Self::ConnectionRefused => {
                "the router refused the connection; check that the API service is enabled and reachable"
            }
            Self::Timeout => "the operation timed out; it will be retried",
            Self::ConnectionReset => "the connection was reset; it will be retried",
            Self::RouterFatal => {
                "the router closed the session with a fatal error; it will be retried"
            }
            Self::AuthenticationFailed => "authentication failed; check the credentials",
            Self::PermissionDenied => "permission denied; the user's group lacks the needed policy",
            Self::InvalidValue => "the router rejected a value; check the item's settings",
            Self::DuplicateName => {
                "an item with this name already exists and is not managed by tikfleet"
            }
            Self::NoSuchItem => "the router has no such item",
            Self::UnknownCommand => {
                "the router does not support this command; check the RouterOS version and packages"
            }
            Self::UnsupportedVersion => {
                "no common protocol version; upgrade the agent or the controller"
            }
            Self::StorageFull => "storage is full; free space or raise the cap",
            Self::RateLimited => "too many requests; slow down and retry later",
            Self::NotFound => "not found",
            Self::Conflict => "the request conflicts with the current state",
            Self::InvalidRequest => "the request is invalid",
            Self::ProtocolError => "protocol error between agent and controller",
            Self::FrameTooLarge => "a message exceeded the frame size limit",
            Self::Cancelled => "the operation was cancelled",
            Self::Unavailable => "the service is temporarily unavailable; retry later",
            Self::Internal => "internal error",
            Self::RouterError => "the router refused the command; see its message",
            Self::Unknown => "unknown error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A structured error on the wire: `{"code","message","retryable"}`.
///
/// `retryable` is carried explicitly (it usually equals [`ErrorCode::retryable`]) so that a
/// receiver that does not know the code still knows what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// The stable machine code.
    pub code: ErrorCode,
    /// What happened, for a person; must never contain a secret.
    pub message: String,
    /// Whether retrying can help.
    pub retryable: bool,
}

impl ErrorInfo {
    /// An error with the code's default message and retry flag.
    #[must_use]
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code,
            message: code.default_message().to_owned(),
            retryable: code.retryable(),
        }
    }

    /// An error with a specific message and the code's retry flag.
    #[must_use]
    pub fn with_message(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retryable: code.retryable(),
        }
    }
}

impl From<ErrorCode> for ErrorInfo {
    fn from(code: ErrorCode) -> Self {
        Self::new(code)
    }
}

impl fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorInfo {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_matches_serde_for_every_code() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            let back: ErrorCode =
                rmp_serde::from_slice(&rmp_serde::to_vec(&code).unwrap()).unwrap();
            assert_eq!(back, code);
        }
    }

    #[test]
    fn codes_are_unique() {
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn retry_classification() {
        let check = |code: ErrorCode, retryable: bool| {
            assert_eq!(code.retryable(), retryable, "{code}");
        };
        check(ErrorCode::ConnectionRefused, true);
        check(ErrorCode::Timeout, true);
        check(ErrorCode::ConnectionReset, true);
        check(ErrorCode::RouterFatal, true);
        check(ErrorCode::RateLimited, true);
        check(ErrorCode::InvalidValue, false);
        check(ErrorCode::PermissionDenied, false);
        check(ErrorCode::AuthenticationFailed, false);
        check(ErrorCode::Unknown, false);
        check(ErrorCode::RouterError, false);
        assert_eq!(
            ErrorCode::AuthenticationFailed.class(),
            ErrorClass::Authentication
        );
    }

    #[test]
    fn unknown_codes_decode_as_unknown() {
        let info: ErrorInfo = serde_json::from_str(
            r#"{"code":"quantum_flux","message":"new in v9","retryable":true}"#,
        )
        .unwrap();
        assert_eq!(info.code, ErrorCode::Unknown);
        assert!(info.retryable);
    }

    #[test]
    fn json_shape() {
        let info = ErrorInfo::with_message(ErrorCode::Timeout, "router r1 did not answer");
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"code":"timeout","message":"router r1 did not answer","retryable":true}"#
        );
        assert_eq!(info.to_string(), "timeout: router r1 did not answer");
    }

    #[test]
    fn default_messages_are_lowercase_without_trailing_period() {
        for code in ErrorCode::ALL {
            let m = code.default_message();
            assert!(!m.ends_with('.'), "{code}: {m}");
            assert!(
                m.chars().next().is_some_and(char::is_lowercase),
                "{code}: {m}"
            );
        }
    }
}
