//! [`SshError`] and the one place where SSH and SFTP failures become shared [`ErrorCode`]s.
//!
//! Socket errors, libssh2 session errors and SFTP status codes are classified here
//! ([`from_io`], [`from_ssh`]) and nowhere else, so the retry policy sees the same vocabulary
//! as for the API driver. Messages are built from libssh2's own text and ours, never from the
//! password or the command line (a console command may carry a password).

use std::fmt;
use std::io;

use tikfleet_shared::{ErrorCode, ErrorInfo};

use crate::routeros::DriverError;

/// A failed SSH connection or operation: the same coded error as the API driver's
/// ([`DriverError`]: a stable code and a message for people), plus the fingerprints when the
/// router's host key changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct SshError {
    error: DriverError,
    host_key: Option<HostKeyChange>,
}

/// The router presented a host key other than the pinned one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostKeyChange {
    /// The fingerprint pinned earlier.
    pub pinned: String,
    /// The fingerprint the router presents now (re-pin this one once it is verified).
    pub presented: String,
}

impl SshError {
    /// An error with this code and message. The message must not contain a secret.
    #[must_use]
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: DriverError::new(code, message),
            host_key: None,
        }
    }

    /// The router's host key changed: `authentication_failed` (the *router* failed to
    /// authenticate), which fails the job and raises an alert instead of retrying.
    #[must_use]
    pub fn host_key_changed(pinned: String, presented: String) -> Self {
        let message = format!(
            "the router's SSH host key changed (pinned {pinned}, presented {presented}); \
             no password was sent; this happens when RouterOS is reinstalled or its host key \
             regenerated, and also when someone intercepts the connection: verify the new key \
             at the router's console (`/ip ssh export-host-key`, then `ssh-keygen -lf` on the \
             exported public key) and, if it is {presented}, re-pin it for this router"
        );
        Self {
            error: DriverError::new(ErrorCode::AuthenticationFailed, message),
            host_key: Some(HostKeyChange { pinned, presented }),
        }
    }

    /// The stable machine code.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        self.error.code()
    }

    /// What happened, for a person.
    #[must_use]
    pub fn message(&self) -> &str {
        self.error.message()
    }

    /// Whether retrying later can help.
    #[must_use]
    pub fn retryable(&self) -> bool {
        self.error.retryable()
    }

    /// The pinned and presented fingerprints, when the router's host key changed.
    #[must_use]
    pub fn host_key_change(&self) -> Option<&HostKeyChange> {
        self.host_key.as_ref()
    }

    /// The wire form, for job results and audit records.
    #[must_use]
    pub fn to_info(&self) -> ErrorInfo {
        self.error.to_info()
    }

    /// Prefixes the message with where it happened (`router core-1: …`).
    #[must_use]
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.error = self.error.context(what);
        self
    }
}

impl From<SshError> for ErrorInfo {
    fn from(e: SshError) -> Self {
        e.to_info()
    }
}

/// What the driver was doing when something failed; it decides between codes that the
/// same libssh2 error can mean (an authentication error only counts as one at login).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Resolving the host and opening the TCP connection.
    Connect,
    /// The SSH handshake (banner, key exchange, host key).
    Handshake,
    /// Password authentication.
    Login,
    /// An `exec` channel.
    Command,
    /// The SFTP subsystem and its file operations.
    Sftp,
}

impl Stage {
    fn what(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Handshake => "ssh handshake",
            Self::Login => "ssh login",
            Self::Command => "ssh command",
            Self::Sftp => "sftp",
        }
    }
}

/// libssh2 session error codes (`libssh2.h`), named as there.
mod rc {
    pub const BANNER_RECV: i32 = -2;
    pub const BANNER_SEND: i32 = -3;
    pub const INVALID_MAC: i32 = -4;
    pub const KEX_FAILURE: i32 = -5;
    pub const SOCKET_SEND: i32 = -7;
    pub const KEY_EXCHANGE_FAILURE: i32 = -8;
    pub const TIMEOUT: i32 = -9;
    pub const DECRYPT: i32 = -12;
    pub const SOCKET_DISCONNECT: i32 = -13;
    pub const PASSWORD_EXPIRED: i32 = -15;
    pub const METHOD_NONE: i32 = -17;
    pub const AUTHENTICATION_FAILED: i32 = -18;
    pub const CHANNEL_FAILURE: i32 = -21;
    pub const CHANNEL_REQUEST_DENIED: i32 = -22;
    pub const CHANNEL_CLOSED: i32 = -26;
    pub const CHANNEL_EOF_SENT: i32 = -27;
    pub const SOCKET_TIMEOUT: i32 = -30;
    pub const REQUEST_DENIED: i32 = -32;
    pub const METHOD_NOT_SUPPORTED: i32 = -33;
    pub const SOCKET_RECV: i32 = -43;
    pub const BAD_SOCKET: i32 = -45;
    pub const ALGO_UNSUPPORTED: i32 = -51;
}

/// SFTP status codes (draft-ietf-secsh-filexfer), as libssh2 reports them.
mod fx {
    pub const NO_SUCH_FILE: i32 = 2;
    pub const PERMISSION_DENIED: i32 = 3;
    pub const NO_CONNECTION: i32 = 6;
    pub const CONNECTION_LOST: i32 = 7;
    pub const OP_UNSUPPORTED: i32 = 8;
    pub const NO_SUCH_PATH: i32 = 10;
    pub const WRITE_PROTECT: i32 = 12;
    pub const NO_SPACE_ON_FILESYSTEM: i32 = 14;
    pub const QUOTA_EXCEEDED: i32 = 15;
}

/// Classifies a socket error (connecting, or reading a channel or file through `io::Read`).
///
/// | kind | code |
/// | --- | --- |
/// | refused, host/network unreachable, address unavailable, name not resolved (at connect) | `connection_refused` |
/// | timed out, would block | `timeout` |
/// | not found (an SFTP file read through `io`) | `no_such_item` |
/// | anything else | `connection_reset` |
pub(crate) fn from_io(stage: Stage, e: &io::Error) -> SshError {
    use io::ErrorKind as K;
    let code = match e.kind() {
        K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => {
            ErrorCode::ConnectionRefused
        }
        // Name resolution failures come back as uncategorised errors.
        _ if stage == Stage::Connect && !matches!(e.kind(), K::TimedOut | K::WouldBlock) => {
            ErrorCode::ConnectionRefused
        }
        K::TimedOut | K::WouldBlock => ErrorCode::Timeout,
        K::NotFound if stage == Stage::Sftp => ErrorCode::NoSuchItem,
        _ => ErrorCode::ConnectionReset,
    };
    let what = match code {
        ErrorCode::ConnectionRefused => "cannot reach the router's SSH service",
        ErrorCode::Timeout => "the router did not answer in time",
        _ => stage.what(),
    };
    SshError::new(code, format!("{what} ({}): {e}", stage.what()))
}

/// Classifies a libssh2 error.
///
/// | libssh2 | code |
/// | --- | --- |
/// | `TIMEOUT`, `SOCKET_TIMEOUT` | `timeout` |
/// | `AUTHENTICATION_FAILED`, `PASSWORD_EXPIRED`, `METHOD_NONE`, `METHOD_NOT_SUPPORTED` at login | `authentication_failed` |
/// | socket send/recv/disconnect, banner, channel closed, MAC/decrypt | `connection_reset` |
/// | key exchange failure, unsupported algorithm | `unsupported_version` |
/// | channel or request denied | `permission_denied` |
/// | SFTP `NO_SUCH_FILE`, `NO_SUCH_PATH` | `no_such_item` |
/// | SFTP `PERMISSION_DENIED`, `WRITE_PROTECT` | `permission_denied` |
/// | SFTP `NO_SPACE_ON_FILESYSTEM`, `QUOTA_EXCEEDED` | `storage_full` |
/// | SFTP `NO_CONNECTION`, `CONNECTION_LOST` | `connection_reset` |
/// | SFTP `OP_UNSUPPORTED` | `unknown_command` |
/// | other SFTP statuses (`FAILURE`, …) | `router_error` |
/// | anything else | `connection_reset` |
pub(crate) fn from_ssh(stage: Stage, e: &ssh2::Error) -> SshError {
    let code = match e.code() {
        ssh2::ErrorCode::Session(n) => match n {
            rc::TIMEOUT | rc::SOCKET_TIMEOUT => ErrorCode::Timeout,
            rc::AUTHENTICATION_FAILED
            | rc::PASSWORD_EXPIRED
            | rc::METHOD_NONE
            | rc::METHOD_NOT_SUPPORTED
                if stage == Stage::Login =>
            {
                ErrorCode::AuthenticationFailed
            }
            rc::KEX_FAILURE | rc::KEY_EXCHANGE_FAILURE | rc::ALGO_UNSUPPORTED => {
                ErrorCode::UnsupportedVersion
            }
            rc::CHANNEL_FAILURE | rc::CHANNEL_REQUEST_DENIED | rc::REQUEST_DENIED => {
                ErrorCode::PermissionDenied
            }
            rc::BANNER_RECV
            | rc::BANNER_SEND
            | rc::SOCKET_SEND
            | rc::SOCKET_RECV
            | rc::SOCKET_DISCONNECT
            | rc::BAD_SOCKET
            | rc::CHANNEL_CLOSED
            | rc::CHANNEL_EOF_SENT
            | rc::INVALID_MAC
            | rc::DECRYPT => ErrorCode::ConnectionReset,
            _ => ErrorCode::ConnectionReset,
        },
        ssh2::ErrorCode::SFTP(n) => match n {
            fx::NO_SUCH_FILE | fx::NO_SUCH_PATH => ErrorCode::NoSuchItem,
            fx::PERMISSION_DENIED | fx::WRITE_PROTECT => ErrorCode::PermissionDenied,
            fx::NO_SPACE_ON_FILESYSTEM | fx::QUOTA_EXCEEDED => ErrorCode::StorageFull,
            fx::NO_CONNECTION | fx::CONNECTION_LOST => ErrorCode::ConnectionReset,
            fx::OP_UNSUPPORTED => ErrorCode::UnknownCommand,
            _ => ErrorCode::RouterError,
        },
    };
    let what = match code {
        ErrorCode::AuthenticationFailed => {
            "the router refused the SSH login; check the user name and password, and that the \
             user's group has the ssh policy"
        }
        ErrorCode::Timeout => "the router did not answer in time",
        ErrorCode::UnsupportedVersion => {
            "no SSH algorithms in common with the router; check its `/ip ssh` settings \
             (strong-crypto) and the RouterOS version"
        }
        ErrorCode::NoSuchItem => "no such file on the router",
        _ => stage.what(),
    };
    SshError::new(code, format!("{what} ({}): {}", stage.what(), e.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_ssh(stage: Stage, code: ssh2::ErrorCode, expected: ErrorCode) {
        let e = ssh2::Error::new(code, "libssh2 says");
        let got = from_ssh(stage, &e);
        assert_eq!(got.code(), expected, "{stage:?} {code:?}: {got}");
        assert!(got.message().contains("libssh2 says"), "{got}");
    }

    fn check_io(stage: Stage, kind: io::ErrorKind, expected: ErrorCode) {
        let got = from_io(stage, &io::Error::new(kind, "os says"));
        assert_eq!(got.code(), expected, "{stage:?} {kind:?}: {got}");
    }

    #[test]
    fn libssh2_errors() {
        use ssh2::ErrorCode::{SFTP, Session};
        check_ssh(Stage::Handshake, Session(rc::TIMEOUT), ErrorCode::Timeout);
        check_ssh(
            Stage::Command,
            Session(rc::SOCKET_TIMEOUT),
            ErrorCode::Timeout,
        );
        check_ssh(
            Stage::Login,
            Session(rc::AUTHENTICATION_FAILED),
            ErrorCode::AuthenticationFailed,
        );
        check_ssh(
            Stage::Login,
            Session(rc::PASSWORD_EXPIRED),
            ErrorCode::AuthenticationFailed,
        );
        // The same number outside login is not a credentials problem.
        check_ssh(
            Stage::Command,
            Session(rc::AUTHENTICATION_FAILED),
            ErrorCode::ConnectionReset,
        );
        check_ssh(
            Stage::Handshake,
            Session(rc::KEX_FAILURE),
            ErrorCode::UnsupportedVersion,
        );
        check_ssh(
            Stage::Handshake,
            Session(rc::BANNER_RECV),
            ErrorCode::ConnectionReset,
        );
        check_ssh(
            Stage::Command,
            Session(rc::SOCKET_DISCONNECT),
            ErrorCode::ConnectionReset,
        );
        check_ssh(
            Stage::Sftp,
            Session(rc::CHANNEL_REQUEST_DENIED),
            ErrorCode::PermissionDenied,
        );
        check_ssh(Stage::Sftp, SFTP(fx::NO_SUCH_FILE), ErrorCode::NoSuchItem);
        check_ssh(Stage::Sftp, SFTP(fx::NO_SUCH_PATH), ErrorCode::NoSuchItem);
        check_ssh(
            Stage::Sftp,
            SFTP(fx::PERMISSION_DENIED),
            ErrorCode::PermissionDenied,
        );
        check_ssh(
            Stage::Sftp,
            SFTP(fx::NO_SPACE_ON_FILESYSTEM),
            ErrorCode::StorageFull,
        );
        check_ssh(
            Stage::Sftp,
            SFTP(fx::CONNECTION_LOST),
            ErrorCode::ConnectionReset,
        );
        check_ssh(
            Stage::Sftp,
            SFTP(fx::OP_UNSUPPORTED),
            ErrorCode::UnknownCommand,
        );
        check_ssh(Stage::Sftp, SFTP(4), ErrorCode::RouterError);
        check_ssh(Stage::Command, Session(-999), ErrorCode::ConnectionReset);
    }

    #[test]
    fn socket_errors() {
        use io::ErrorKind as K;
        check_io(
            Stage::Connect,
            K::ConnectionRefused,
            ErrorCode::ConnectionRefused,
        );
        check_io(
            Stage::Connect,
            K::HostUnreachable,
            ErrorCode::ConnectionRefused,
        );
        check_io(Stage::Connect, K::Other, ErrorCode::ConnectionRefused);
        check_io(Stage::Connect, K::TimedOut, ErrorCode::Timeout);
        check_io(Stage::Command, K::TimedOut, ErrorCode::Timeout);
        check_io(Stage::Sftp, K::NotFound, ErrorCode::NoSuchItem);
        check_io(
            Stage::Command,
            K::ConnectionReset,
            ErrorCode::ConnectionReset,
        );
        check_io(Stage::Sftp, K::Other, ErrorCode::ConnectionReset);
    }

    #[test]
    fn host_key_change_is_an_alert_and_says_how_to_re_pin() {
        let e = SshError::host_key_changed("SHA256:old".into(), "SHA256:new".into());
        assert_eq!(e.code(), ErrorCode::AuthenticationFailed);
        assert!(!e.retryable());
        assert!(e.message().contains("host key changed"), "{e}");
        assert!(e.message().contains("re-pin"), "{e}");
        assert!(e.message().contains("no password was sent"), "{e}");
        let change = e.host_key_change().expect("change");
        assert_eq!(change.pinned, "SHA256:old");
        assert_eq!(change.presented, "SHA256:new");
    }
}
