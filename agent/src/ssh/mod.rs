//! The SSH driver: what the RouterOS API cannot do, done over SSH with libssh2 (`ssh2`).
//!
//! [`SshDriver`] fetches the text configuration (`/export`), runs console commands the API
//! has no equivalent for, and moves files in the router's `/file` over SFTP (binary backups
//! down, restores up). The API driver in [`crate::routeros`] does everything else.
//!
//! Every operation opens its own session in [`tokio::task::spawn_blocking`] (libssh2 blocks),
//! so the async runtime never waits on the network; connect and command timeouts bound each
//! blocking call ([`SshConfig`]). A session runs: TCP connect → SSH handshake → host key check
//! against the pin in a [`HostKeyStore`] → password login → the operation → disconnect.
//!
//! Host keys are pinned on first use: the first successful login records the key's
//! fingerprint; later connections presenting another key are refused *before* the password is
//! sent ([`SshError::host_key_change`]). The pin rules are plain functions in [`host_key`];
//! failures become shared error codes in [`error`] and nowhere else.
//!
//! Neither the password nor a command line (which may carry one) ever goes into an error or a
//! log; logs name the command's menu path only.

mod error;
mod host_key;

use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ssh2::Session;
use tikfleet_shared::ErrorCode;
use tracing::{debug, info, warn};

pub use error::{HostKeyChange, SshError};
pub use host_key::{
    HostKeyStore, HostKeyStoreError, MemoryHostKeys, PinCheck, check_pin, fingerprint,
};

use crate::router::RouterEndpoint;
use error::{Stage, from_io, from_ssh};

/// Timeouts and limits of the SSH driver.
#[derive(Clone, Debug)]
pub struct SshConfig {
    /// TCP connect, and each blocking step of the handshake and login.
    pub connect_timeout: Duration,
    /// Each blocking step of an operation (libssh2's session timeout): a router that sends
    /// nothing for this long fails the operation with `timeout`.
    pub command_timeout: Duration,
    /// The largest file [`SshDriver::download`] accepts, and the most output a command may
    /// print, in bytes.
    pub max_transfer: u64,
}

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(60),
            max_transfer: 256 * 1024 * 1024,
        }
    }
}

/// The RouterOS major version, where it changes what a console command means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RosMajor {
    /// RouterOS 6 (6.43 and later).
    V6,
    /// RouterOS 7 and later.
    V7,
}

impl RosMajor {
    /// From the major number of the router's version (`/system/resource` `version`).
    #[must_use]
    pub fn from_major(major: u32) -> Self {
        if major <= 6 { Self::V6 } else { Self::V7 }
    }
}

/// The console command that exports the configuration, with secrets shown or hidden.
///
/// v7 hides passwords and keys unless `show-sensitive` is given; v6 shows them unless
/// `hide-sensitive` is given and has no `show-sensitive` (routeros.md, routeros-replies.md §17).
#[must_use]
pub fn export_command(major: RosMajor, show_sensitive: bool) -> &'static str {
    match (major, show_sensitive) {
        (RosMajor::V7, true) => "/export show-sensitive",
        (RosMajor::V7, false) | (RosMajor::V6, true) => "/export",
        (RosMajor::V6, false) => "/export hide-sensitive",
    }
}

/// The SSH driver of one router.
///
/// Cheap to clone; operations may run concurrently (each has its own session).
#[derive(Clone)]
pub struct SshDriver {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: RouterEndpoint,
    config: SshConfig,
    host_keys: Arc<dyn HostKeyStore>,
}

impl std::fmt::Debug for SshDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The endpoint's password is redacted by `Secret`'s Debug.
        f.debug_struct("SshDriver")
            .field("endpoint", &self.inner.endpoint)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl SshDriver {
    /// A driver for `endpoint` (its `host`, `ssh_port`, `username` and `password`), pinning
    /// host keys in `host_keys`. Nothing connects until the first operation.
    #[must_use]
    pub fn new(
        endpoint: RouterEndpoint,
        config: SshConfig,
        host_keys: Arc<dyn HostKeyStore>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                endpoint,
                config,
                host_keys,
            }),
        }
    }

    /// The router this driver talks to.
    #[must_use]
    pub fn endpoint(&self) -> &RouterEndpoint {
        &self.inner.endpoint
    }

    /// The router's configuration as `/export` prints it (`\n` line ends), with passwords and
    /// keys shown or hidden; `major` decides which flag says so (see [`export_command`]).
    ///
    /// # Errors
    ///
    /// Connection, host key and login failures; a console error in the output.
    pub async fn export(&self, major: RosMajor, show_sensitive: bool) -> Result<String, SshError> {
        let command = export_command(major, show_sensitive);
        self.blocking("export", move |inner, session| inner.exec(session, command))
            .await
    }

    /// Runs one console command line (`/system identity print`) and returns what the console
    /// printed (`\n` line ends). For what the API cannot do; prefer the API driver.
    ///
    /// A one-line answer the console gives for a failed command (`bad command name …`,
    /// `failure: …`, `no such item`, …) becomes an error with the matching code.
    ///
    /// # Errors
    ///
    /// `invalid_request` for a command with a line break; connection, host key and login
    /// failures; console errors as above.
    pub async fn run(&self, command: &str) -> Result<String, SshError> {
        if command.contains(['\n', '\r', '\0']) {
            return Err(SshError::new(
                ErrorCode::InvalidRequest,
                "a console command must be a single line",
            ));
        }
        let command = command.to_owned();
        self.blocking("run", move |inner, session| inner.exec(session, &command))
            .await
    }

    /// Reads a file from the router's `/file` over SFTP (a binary backup, an exported `.rsc`).
    /// The size read is checked against the size SFTP reports.
    ///
    /// # Errors
    ///
    /// `no_such_item` when there is no such file; `invalid_request` for a bad name or a file
    /// over [`SshConfig::max_transfer`]; `connection_reset` when fewer bytes arrive than the
    /// file holds; connection, host key and login failures.
    pub async fn download(&self, remote_name: &str) -> Result<Vec<u8>, SshError> {
        let name = check_name(remote_name)?;
        self.blocking("download", move |inner, session| {
            inner.download(session, &name)
        })
        .await
    }

    /// Writes a file into the router's `/file` over SFTP (created or replaced), then checks
    /// its size on the router.
    ///
    /// # Errors
    ///
    /// `invalid_request` for a bad name; `storage_full` when the router's disk is full;
    /// `connection_reset` when the router holds a different size afterwards; connection,
    /// host key and login failures.
    pub async fn upload(&self, remote_name: &str, bytes: Vec<u8>) -> Result<(), SshError> {
        let name = check_name(remote_name)?;
        self.blocking("upload", move |inner, session| {
            inner.upload(session, &name, &mut bytes.as_slice(), bytes.len() as u64)
        })
        .await
    }

    /// [`upload`](Self::upload) of the local file `local`, streamed (never whole in memory).
    ///
    /// # Errors
    ///
    /// As [`upload`](Self::upload); `internal` when the local file cannot be read.
    pub async fn upload_file(&self, remote_name: &str, local: PathBuf) -> Result<(), SshError> {
        let name = check_name(remote_name)?;
        self.blocking("upload", move |inner, session| {
            let read = |e: std::io::Error| {
                SshError::new(
                    ErrorCode::Internal,
                    format!("cannot read {}: {e}", local.display()),
                )
            };
            let mut file = std::fs::File::open(&local).map_err(read)?;
            let len = file.metadata().map_err(read)?.len();
            inner.upload(session, &name, &mut file, len)
        })
        .await
    }

    /// Removes a file from the router's `/file` over SFTP.
    ///
    /// # Errors
    ///
    /// `no_such_item` when there is no such file; connection, host key and login failures.
    pub async fn remove(&self, remote_name: &str) -> Result<(), SshError> {
        let name = check_name(remote_name)?;
        self.blocking("remove", move |_, session| {
            let sftp = session.sftp().map_err(|e| from_ssh(Stage::Sftp, &e))?;
            sftp.unlink(Path::new(&name))
                .map_err(|e| from_ssh(Stage::Sftp, &e))
        })
        .await
    }

    /// Runs `op` on a fresh session in the blocking pool, then disconnects.
    ///
    /// Dropping the returned future does not stop the blocking work: it ends at its next
    /// timeout at the latest.
    async fn blocking<T, F>(&self, op: &'static str, f: F) -> Result<T, SshError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &Session) -> Result<T, SshError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let joined = tokio::task::spawn_blocking(move || {
            let session = inner.open()?;
            let result = f(&inner, &session);
            // Best effort: the socket closes when the session drops anyway.
            let _ = session.disconnect(None, "done", None);
            result
        })
        .await;
        let ep = &self.inner.endpoint;
        let result = joined.unwrap_or_else(|e| {
            Err(SshError::new(
                ErrorCode::Internal,
                format!("the ssh task failed: {e}"),
            ))
        });
        match &result {
            Ok(_) => debug!(router = %ep.id, op, "ssh operation done"),
            Err(e) => debug!(router = %ep.id, op, error = %e, "ssh operation failed"),
        }
        result.map_err(|e| e.context(format_args!("router {} ({op})", ep.name)))
    }
}

impl Inner {
    /// Connects, checks the host key, logs in: a session ready for one operation.
    fn open(&self) -> Result<Session, SshError> {
        let ep = &self.endpoint;
        let tcp = self.connect_tcp()?;
        let _ = tcp.set_nodelay(true);
        let mut session = Session::new().map_err(|e| from_ssh(Stage::Handshake, &e))?;
        session.set_timeout(millis(self.config.connect_timeout));
        session.set_tcp_stream(tcp);
        session
            .handshake()
            .map_err(|e| from_ssh(Stage::Handshake, &e))?;

        let presented = match session.host_key() {
            Some((blob, _kind)) => fingerprint(blob),
            None => {
                return Err(SshError::new(
                    ErrorCode::ConnectionReset,
                    "ssh handshake: the router presented no host key",
                ));
            }
        };
        let pinned = self.host_keys.get(ep.id).map_err(store_error)?;
        let check = check_pin(pinned.as_deref(), &presented);
        if let PinCheck::Changed { pinned } = check {
            warn!(
                router = %ep.id,
                name = %ep.name,
                pinned = %pinned,
                presented = %presented,
                "router's ssh host key changed; refusing to log in"
            );
            return Err(SshError::host_key_changed(pinned, presented));
        }

        session
            .userauth_password(&ep.username, ep.password.expose())
            .map_err(|e| from_ssh(Stage::Login, &e))?;
        if !session.authenticated() {
            return Err(SshError::new(
                ErrorCode::AuthenticationFailed,
                "ssh login: the router did not accept the password",
            ));
        }
        // Pinned only after a successful login, so a wrong host or port (another SSH server
        // that refuses the login) does not leave a wrong pin behind.
        if check == PinCheck::FirstUse {
            self.host_keys.put(ep.id, &presented).map_err(store_error)?;
            info!(router = %ep.id, name = %ep.name, fingerprint = %presented, "pinned the router's ssh host key on first use");
        }
        session.set_timeout(millis(self.config.command_timeout));
        Ok(session)
    }

    /// The TCP connection: each resolved address in turn, within the connect timeout.
    fn connect_tcp(&self) -> Result<TcpStream, SshError> {
        let ep = &self.endpoint;
        let addrs = (ep.host.as_str(), ep.ssh_port)
            .to_socket_addrs()
            .map_err(|e| from_io(Stage::Connect, &e))?;
        let timeout = self.config.connect_timeout.max(Duration::from_millis(1));
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(tcp) => return Ok(tcp),
                Err(e) => last = Some(from_io(Stage::Connect, &e)),
            }
        }
        Err(last.unwrap_or_else(|| {
            SshError::new(
                ErrorCode::ConnectionRefused,
                format!(
                    "cannot reach the router's SSH service: {} has no address",
                    ep.host
                ),
            )
        }))
    }

    /// Runs a command on an `exec` channel and returns its output, `\r\n` turned into `\n`.
    fn exec(&self, session: &Session, command: &str) -> Result<String, SshError> {
        let ssh = |e: ssh2::Error| from_ssh(Stage::Command, &e);
        let io = |e: std::io::Error| from_io(Stage::Command, &e);
        debug!(router = %self.endpoint.id, command = %command_path(command), "ssh exec");
        let mut channel = session.channel_session().map_err(ssh)?;
        channel.exec(command).map_err(ssh)?;
        let limit = self.config.max_transfer;
        let mut out = Vec::new();
        (&mut channel)
            .take(limit.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(io)?;
        // RouterOS prints errors on stdout; read stderr too so nothing is lost.
        let mut err = Vec::new();
        channel
            .stderr()
            .take(limit.saturating_add(1))
            .read_to_end(&mut err)
            .map_err(io)?;
        if out.len() as u64 + err.len() as u64 > limit {
            return Err(SshError::new(
                ErrorCode::InvalidRequest,
                format!("ssh command: the output is larger than {limit} bytes"),
            ));
        }
        channel.wait_close().map_err(ssh)?;
        out.extend_from_slice(&err);
        let text = String::from_utf8_lossy(&out).replace("\r\n", "\n");
        if let Some(e) = console_error(&text) {
            return Err(e);
        }
        let status = channel.exit_status().map_err(ssh)?;
        if status != 0 {
            return Err(SshError::new(
                ErrorCode::RouterError,
                format!("ssh command: exit status {status}: {}", first_line(&text)),
            ));
        }
        Ok(text)
    }

    fn download(&self, session: &Session, name: &str) -> Result<Vec<u8>, SshError> {
        let ssh = |e: ssh2::Error| from_ssh(Stage::Sftp, &e);
        let sftp = session.sftp().map_err(ssh)?;
        let path = Path::new(name);
        let size = sftp.stat(path).map_err(ssh)?.size.ok_or_else(|| {
            SshError::new(
                ErrorCode::RouterError,
                "sftp: the router did not report the file's size",
            )
        })?;
        let limit = self.config.max_transfer;
        if size > limit {
            return Err(SshError::new(
                ErrorCode::InvalidRequest,
                format!("sftp: the file has {size} bytes, more than the limit of {limit}"),
            ));
        }
        let mut file = sftp.open(path).map_err(ssh)?;
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        (&mut file)
            .take(size.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| from_io(Stage::Sftp, &e))?;
        if data.len() as u64 != size {
            return Err(SshError::new(
                ErrorCode::ConnectionReset,
                format!("sftp: read {} bytes of a file of {size} bytes", data.len()),
            ));
        }
        debug!(router = %self.endpoint.id, file = name, size, "sftp download");
        Ok(data)
    }

    fn upload(
        &self,
        session: &Session,
        name: &str,
        source: &mut dyn std::io::Read,
        len: u64,
    ) -> Result<(), SshError> {
        let ssh = |e: ssh2::Error| from_ssh(Stage::Sftp, &e);
        let sftp = session.sftp().map_err(ssh)?;
        let path = Path::new(name);
        let mut file = sftp.create(path).map_err(ssh)?;
        let written = std::io::copy(source, &mut file).map_err(|e| from_io(Stage::Sftp, &e))?;
        if written != len {
            return Err(SshError::new(
                ErrorCode::Internal,
                format!("sftp: the source held {written} bytes, not {len}"),
            ));
        }
        // Dropping the handle closes it; the router stores the file then (ssh2's explicit
        // close is not public API). The size check below sees the stored file.
        drop(file);
        let stored = sftp.stat(path).map_err(ssh)?.size;
        if stored != Some(len) {
            return Err(SshError::new(
                ErrorCode::ConnectionReset,
                format!(
                    "sftp: wrote {len} bytes but the router holds {}",
                    stored.map_or_else(|| "an unknown size".to_owned(), |s| format!("{s} bytes")),
                ),
            ));
        }
        debug!(router = %self.endpoint.id, file = name, size = len, "sftp upload");
        Ok(())
    }
}

fn store_error(e: HostKeyStoreError) -> SshError {
    SshError::new(ErrorCode::Internal, e.to_string())
}

/// A duration as libssh2's timeout in milliseconds (0 would mean "wait forever").
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

/// Checks a `/file` name: not empty, no `..` component, no control characters.
fn check_name(name: &str) -> Result<String, SshError> {
    let bad = name.is_empty()
        || name.chars().any(char::is_control)
        || name.split('/').any(|part| part == "..");
    if bad {
        return Err(SshError::new(
            ErrorCode::InvalidRequest,
            format!("not a usable router file name: {name:?}"),
        ));
    }
    Ok(name.to_owned())
}

/// The words of a command line up to the first `name=value` or quote: its menu path and
/// verb, safe to log (`/ppp secret add name=a password=b` → `/ppp secret add`).
fn command_path(command: &str) -> String {
    command
        .split_whitespace()
        .take_while(|w| !w.contains(['=', '"']))
        .collect::<Vec<_>>()
        .join(" ")
}

fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    line.chars().take(200).collect()
}

/// The error a console answer means, when the whole answer is one line the console prints
/// for a failed command; `None` for anything else (output, or nothing).
///
/// | the line starts with | code |
/// | --- | --- |
/// | `bad command name`, `no such command` | `unknown_command` |
/// | `expected end of command`, `syntax error`, `input does not match`, `invalid value`, `value of` … `out of range` | `invalid_value` |
/// | `no such item` | `no_such_item` |
/// | `failure:` (`… already exists`, `already have` → `duplicate_name`) | `router_error` |
fn console_error(output: &str) -> Option<SshError> {
    let trimmed = output.trim();
    if trimmed.is_empty() || trimmed.contains('\n') {
        return None;
    }
    let starts = |prefix: &str| trimmed.starts_with(prefix);
    let code = if starts("bad command name") || starts("no such command") {
        ErrorCode::UnknownCommand
    } else if starts("expected end of command")
        || starts("syntax error")
        || starts("input does not match")
        || starts("invalid value")
        || (starts("value of") && trimmed.contains("out of range"))
    {
        ErrorCode::InvalidValue
    } else if starts("no such item") {
        ErrorCode::NoSuchItem
    } else if starts("failure:") {
        if trimmed.contains("already exists") || trimmed.contains("already have") {
            ErrorCode::DuplicateName
        } else {
            ErrorCode::RouterError
        }
    } else {
        return None;
    };
    Some(SshError::new(
        code,
        format!("the router's console said: {}", first_line(trimmed)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_flags_per_version() {
        for (major, show, expected) in [
            (RosMajor::V7, true, "/export show-sensitive"),
            (RosMajor::V7, false, "/export"),
            (RosMajor::V6, true, "/export"),
            (RosMajor::V6, false, "/export hide-sensitive"),
        ] {
            assert_eq!(export_command(major, show), expected, "{major:?} {show}");
        }
        assert_eq!(RosMajor::from_major(6), RosMajor::V6);
        assert_eq!(RosMajor::from_major(7), RosMajor::V7);
        assert_eq!(RosMajor::from_major(8), RosMajor::V7);
    }

    #[test]
    fn console_errors() {
        fn check(output: &str, expected: Option<ErrorCode>) {
            assert_eq!(
                console_error(output).map(|e| e.code()),
                expected,
                "{output:?}"
            );
        }
        check(
            "bad command name foo (line 1 column 1)\n",
            Some(ErrorCode::UnknownCommand),
        );
        check(
            "expected end of command (line 1 column 9)\n",
            Some(ErrorCode::InvalidValue),
        );
        check(
            "input does not match any value of profile\n",
            Some(ErrorCode::InvalidValue),
        );
        check("no such item\n", Some(ErrorCode::NoSuchItem));
        check(
            "failure: secret with the same name already exists\n",
            Some(ErrorCode::DuplicateName),
        );
        check(
            "failure: can not remove default item\n",
            Some(ErrorCode::RouterError),
        );
        check("", None);
        check("name: sim-1\n", None);
        // Output that merely contains such words on one of several lines is output.
        check("# comment\nfailure: x\n", None);
    }

    #[test]
    fn safe_command_paths() {
        for (command, expected) in [
            ("/ppp secret add name=a password=hunter2", "/ppp secret add"),
            ("/system identity print", "/system identity print"),
            ("/user set admin password=\"x y\"", "/user set admin"),
            ("", ""),
        ] {
            assert_eq!(command_path(command), expected);
        }
    }

    #[test]
    fn file_names() {
        for ok in ["a.backup", "/a.backup", "flash/a.rsc"] {
            assert_eq!(check_name(ok).as_deref(), Ok(ok));
        }
        for bad in ["", "../etc/passwd", "a/../b", "a\nb", "a\0b"] {
            assert_eq!(
                check_name(bad).map_err(|e| e.code()),
                Err(ErrorCode::InvalidRequest),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn timeouts_never_mean_forever() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
