//! [`DriverError`] and the one place where RouterOS failures become shared [`ErrorCode`]s.
//!
//! Everything that can go wrong between the agent and a router (TCP, TLS, login, `!trap`,
//! `!fatal`, a connection that dies mid-command, a reply that never comes) is classified here
//! and nowhere else, so the retry policy (design.md, "Retries and failure") sees one consistent
//! vocabulary. The table is in [`classify_trap`] and [`from_device`].
//!
//! A `DriverError` is built from the router's words and from our own text, never from the
//! words of the command that failed: a command may carry a password.

use std::fmt;
use std::io;

use mikrotik_rs::{DeviceError, LoginError, TrapCategory};
use tikfleet_shared::{ErrorCode, ErrorInfo};

/// A failed router command or connection: a stable code and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DriverError {
    code: ErrorCode,
    message: String,
}

impl DriverError {
    /// An error with this code and message. The message must not contain a secret.
    #[must_use]
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The stable machine code.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// What happened, for a person (includes the router's own message where there is one).
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether retrying later can help.
    #[must_use]
    pub fn retryable(&self) -> bool {
        self.code.retryable()
    }

    /// Whether the connection the command ran on is gone (reset, `!fatal`, no answer in
    /// time): the pool drops it, and commands not yet answered on it are lost.
    #[must_use]
    pub fn breaks_connection(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::ConnectionReset | ErrorCode::RouterFatal | ErrorCode::Timeout
        )
    }

    /// Whether a cached client should be dropped and made again: its connection broke, or
    /// none could be made (refused, login failed).
    #[must_use]
    pub fn drops_client(&self) -> bool {
        self.breaks_connection()
            || matches!(
                self.code,
                ErrorCode::ConnectionRefused | ErrorCode::AuthenticationFailed
            )
    }

    /// The wire form, for job results and audit records.
    #[must_use]
    pub fn to_info(&self) -> ErrorInfo {
        ErrorInfo::with_message(self.code, self.message.clone())
    }

    /// Prefixes the message with where it happened (`router core-1: …`).
    #[must_use]
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    pub(crate) fn timeout(what: &str, after: std::time::Duration) -> Self {
        Self::new(
            ErrorCode::Timeout,
            format!("{what}: no answer within {} ms", after.as_millis()),
        )
    }

    pub(crate) fn reset(what: &str) -> Self {
        Self::new(
            ErrorCode::ConnectionReset,
            format!("{what}: the connection closed before the router answered"),
        )
    }

    pub(crate) fn fatal(reason: &str) -> Self {
        Self::new(
            ErrorCode::RouterFatal,
            format!("the router ended the session: !fatal {reason}"),
        )
    }
}

impl From<DriverError> for ErrorInfo {
    fn from(e: DriverError) -> Self {
        e.to_info()
    }
}

/// Classifies a `!trap` by its message (and category): the router's message is kept.
///
/// | message contains (case-insensitive) | code |
/// | --- | --- |
/// | `invalid user name or password`, `cannot log in` | `authentication_failed` |
/// | `not enough permissions` | `permission_denied` |
/// | `already exists`, `already have` | `duplicate_name` |
/// | `no such item` | `no_such_item` |
/// | `no such command` (also `… prefix`, `… or directory`) | `unknown_command` |
/// | `input does not match any value of`, `invalid value`, `out of range`, `unknown parameter`, `not specified` | `invalid_value` |
/// | category 2 / `interrupted` | `cancelled` |
/// | anything else | `router_error` |
#[must_use]
pub fn classify_trap(message: &str, category: Option<TrapCategory>) -> DriverError {
    let m = message.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    let code = if has(&["invalid user name or password", "cannot log in"]) {
        ErrorCode::AuthenticationFailed
    } else if has(&["not enough permissions"]) {
        ErrorCode::PermissionDenied
    } else if has(&["already exists", "already have"]) {
        ErrorCode::DuplicateName
    } else if has(&["no such item"]) {
        ErrorCode::NoSuchItem
    } else if has(&["no such command"]) {
        ErrorCode::UnknownCommand
    } else if has(&[
        "input does not match any value of",
        "invalid value",
        "out of range",
        "unknown parameter",
        "not specified",
    ]) {
        ErrorCode::InvalidValue
    } else if category == Some(TrapCategory::CommandExecutionInterrupted) || m == "interrupted" {
        ErrorCode::Cancelled
    } else {
        ErrorCode::RouterError
    };
    DriverError::new(code, format!("the router said: {message}"))
}

/// Classifies an I/O error of the transport (TCP or TLS).
#[must_use]
pub fn from_io(e: &io::Error) -> DriverError {
    use io::ErrorKind as K;
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return from_tls(tls);
    }
    let code = match e.kind() {
        K::ConnectionRefused
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::AddrNotAvailable
        | K::NotFound => ErrorCode::ConnectionRefused,
        K::TimedOut | K::WouldBlock => ErrorCode::Timeout,
        _ => ErrorCode::ConnectionReset,
    };
    let what = match code {
        ErrorCode::ConnectionRefused => "cannot reach the router's API",
        ErrorCode::Timeout => "the router did not answer",
        _ => "the connection to the router failed",
    };
    DriverError::new(code, format!("{what}: {e}"))
}

/// Classifies a TLS error: a certificate the router should not have is an authentication
/// failure (it raises an alert), anything else a transient reset.
#[must_use]
pub fn from_tls(e: &rustls::Error) -> DriverError {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            DriverError::new(
                ErrorCode::AuthenticationFailed,
                format!("tls: the router's certificate was refused: {}", other.0),
            )
        }
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            DriverError::new(
                ErrorCode::AuthenticationFailed,
                format!(
                    "tls: the router's certificate was refused ({e}); check the pinned \
                     fingerprint or the CA and server name"
                ),
            )
        }
        _ => DriverError::new(ErrorCode::ConnectionReset, format!("tls: {e}")),
    }
}

/// Classifies a connection or login failure of mikrotik-rs.
#[must_use]
pub fn from_device(e: &DeviceError) -> DriverError {
    match e {
        DeviceError::Connection(io) => from_io(io),
        DeviceError::Tls(tls) => from_tls(tls),
        DeviceError::Authentication { response }
        | DeviceError::Login(LoginError::Authentication(response)) => {
            let classified = classify_trap(&response.message, response.category);
            let code = match classified.code() {
                ErrorCode::PermissionDenied => ErrorCode::PermissionDenied,
                _ => ErrorCode::AuthenticationFailed,
            };
            DriverError::new(
                code,
                format!("login refused; check the credentials: {}", response.message),
            )
        }
        DeviceError::Login(LoginError::Fatal(reason)) => DriverError::fatal(reason),
        // A router whose API service is disabled, or restricted by address in /ip/service,
        // accepts the TCP connection and closes it before answering the login.
        DeviceError::ConnectionClosed => DriverError::new(
            ErrorCode::ConnectionRefused,
            "the router closed the connection before login; check that the API service is \
             enabled and allows the agent's address (/ip/service)",
        ),
        DeviceError::Actor(_) => DriverError::reset("sending a command"),
        DeviceError::Protocol(p) => DriverError::new(
            ErrorCode::ConnectionReset,
            format!("could not decode the router's reply: {p}"),
        ),
        DeviceError::Login(LoginError::Protocol(p)) => DriverError::new(
            ErrorCode::ConnectionReset,
            format!("could not decode the router's login reply: {p}"),
        ),
        DeviceError::ConnectionState(c) | DeviceError::Login(LoginError::Connection(c)) => {
            DriverError::new(ErrorCode::ConnectionReset, format!("connection: {c}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trap_table() {
        let check = |message: &str, code: ErrorCode| {
            let e = classify_trap(message, None);
            assert_eq!(e.code(), code, "{message}");
            assert!(e.message().contains(message), "{e}");
        };
        check(
            "failure: secret with the same name already exists",
            ErrorCode::DuplicateName,
        );
        check(
            "failure: already have user with this name for this server",
            ErrorCode::DuplicateName,
        );
        check("failure: already have such entry", ErrorCode::DuplicateName);
        check("no such item", ErrorCode::NoSuchItem);
        check("no such item (4)", ErrorCode::NoSuchItem);
        check("no such command prefix", ErrorCode::UnknownCommand);
        check(
            "no such command or directory (adress)",
            ErrorCode::UnknownCommand,
        );
        check("no such command", ErrorCode::UnknownCommand);
        check(
            "input does not match any value of profile",
            ErrorCode::InvalidValue,
        );
        check(
            "invalid value for argument remote-address",
            ErrorCode::InvalidValue,
        );
        check(
            "value of mtu out of range (1..255)",
            ErrorCode::InvalidValue,
        );
        check("value out of range", ErrorCode::InvalidValue);
        check("unknown parameter", ErrorCode::InvalidValue);
        check("unknown parameter routing-table", ErrorCode::InvalidValue);
        check("failure: name not specified", ErrorCode::InvalidValue);
        check(
            "invalid user name or password (6)",
            ErrorCode::AuthenticationFailed,
        );
        check("cannot log in", ErrorCode::AuthenticationFailed);
        check("not enough permissions (9)", ErrorCode::PermissionDenied);
        check("interrupted", ErrorCode::Cancelled);
        check(
            "failure: can not remove default item",
            ErrorCode::RouterError,
        );
        assert_eq!(
            classify_trap("whatever", Some(TrapCategory::CommandExecutionInterrupted)).code(),
            ErrorCode::Cancelled
        );
        assert!(!ErrorCode::RouterError.retryable());
    }

    #[test]
    fn io_table() {
        let check = |kind: io::ErrorKind, code: ErrorCode| {
            assert_eq!(from_io(&io::Error::from(kind)).code(), code, "{kind:?}");
        };
        check(
            io::ErrorKind::ConnectionRefused,
            ErrorCode::ConnectionRefused,
        );
        check(io::ErrorKind::TimedOut, ErrorCode::Timeout);
        check(io::ErrorKind::ConnectionReset, ErrorCode::ConnectionReset);
        check(io::ErrorKind::BrokenPipe, ErrorCode::ConnectionReset);
        check(io::ErrorKind::UnexpectedEof, ErrorCode::ConnectionReset);
        assert_eq!(
            from_device(&DeviceError::ConnectionClosed).code(),
            ErrorCode::ConnectionRefused
        );
        let tls = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(from_io(&tls).code(), ErrorCode::AuthenticationFailed);
        assert!(ErrorCode::ConnectionRefused.retryable());
        assert!(ErrorCode::RouterFatal.retryable());
    }
}
