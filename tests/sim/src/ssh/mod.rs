//! The simulated router's SSH endpoint: password login, `exec` and a minimal interactive shell
//! answered like the RouterOS console, and the `sftp` subsystem over the router's `/file` list.
//!
//! This module owns only the transport. What the router *is* (its users, its configuration, its
//! files) comes from an [`SshDevice`], which the rest of the simulator implements; the tests in
//! `tests/ssh.rs` use a small in-memory one. The console rules (how a command line is split and
//! how `/export` is parsed) live in [`console`], the SFTP file server in [`sftp`].
//!
//! Layout of one connection: [`serve`] accepts, refuses the connection at once while the device
//! is down, and spawns one task per connection running russh's session loop with a
//! `Connection` handler. Each `exec`, `shell` or `sftp` channel then gets its own task, so a
//! slow client on one channel holds up nothing else.

mod console;
mod sftp;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg, Disconnect, MethodKind, MethodSet, SshId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The router behind the SSH endpoint, as the console and `/file` see it.
///
/// Methods are called from async tasks and must not block for long (take a lock, copy, return).
/// Text goes in and out with `\n` line ends; the endpoint turns them into `\r\n` on the wire.
pub trait SshDevice: Send + Sync + 'static {
    /// Checks a login (the router's /user list).
    fn authenticate(&self, user: &str, password: &str) -> bool;

    /// The `/export` text; flags as given on the command line.
    ///
    /// The device decides what they mean for its version (v6 shows secrets unless
    /// `hide-sensitive`, v7 hides them unless `show-sensitive`).
    fn export(&self, show_sensitive: bool, hide_sensitive: bool) -> String;

    /// Runs one console command line (e.g. `/system identity print`) and returns what the
    /// console prints, errors included (e.g. `bad command name foo (line 1 column 1)`).
    fn cli(&self, line: &str) -> String;

    /// The router's `/file` list: each file's name and size in bytes.
    fn file_list(&self) -> Vec<(String, u64)>;

    /// A file's contents, or `None` if there is no such file.
    fn file_read(&self, name: &str) -> Option<Vec<u8>>;

    /// Creates or replaces a file.
    fn file_write(&self, name: &str, data: Vec<u8>);

    /// Removes a file; `false` if there was no such file.
    fn file_remove(&self, name: &str) -> bool;

    /// Whether the device is up (false while rebooting: refuse new SSH sessions).
    fn is_up(&self) -> bool {
        true
    }

    /// The router's `/system identity` name, shown in the interactive prompt
    /// (`[admin@MikroTik] > `).
    fn identity(&self) -> String {
        "MikroTik".to_owned()
    }
}

/// A new ed25519 host key, from a cryptographically secure random generator.
pub fn generate_host_key() -> PrivateKey {
    let seed: [u8; 32] = rand::random();
    PrivateKey::from(Ed25519Keypair::from_seed(&seed))
}

/// The host key's fingerprint as OpenSSH prints it: `SHA256:` and the unpadded base64 of the
/// SHA-256 of the public key blob (what an agent pins on first use).
pub fn host_key_fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

/// How long a failed login waits before the client hears of it (OpenSSH waits too; kept short
/// so tests that try a wrong password stay quick).
const AUTH_REJECTION_TIME: Duration = Duration::from_millis(100);

/// How long to wait before accepting again after `accept` itself failed (e.g. out of file
/// descriptors), so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Serves SSH on `listener` until `shutdown` completes, then stops accepting and disconnects
/// the sessions still open (the service has stopped, as on a router that reboots).
///
/// Each connection runs in its own task; a connection that arrives while
/// [`SshDevice::is_up`] is false is closed before the SSH handshake. Errors are logged, never
/// returned: a failed connection affects only itself.
pub async fn serve(
    listener: TcpListener,
    device: Arc<dyn SshDevice>,
    host_key: PrivateKey,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let config = Arc::new(server_config(host_key));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    if !device.is_up() {
                        info!(%peer, "device is down, refusing ssh connection");
                        drop(socket);
                        continue;
                    }
                    tokio::spawn(connection(
                        Arc::clone(&config),
                        socket,
                        peer,
                        Arc::clone(&device),
                        stop_rx.clone(),
                    ));
                }
                Err(error) => {
                    warn!(%error, "ssh accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
        }
    }
    debug!("ssh endpoint stopping");
    // Receivers see the change even after the sender is dropped.
    let _ = stop_tx.send(true);
}

/// russh's settings for the simulated router.
fn server_config(host_key: PrivateKey) -> russh::server::Config {
    russh::server::Config {
        // What RouterOS announces.
        server_id: SshId::Standard("SSH-2.0-ROSSSH".into()),
        methods: MethodSet::from(&[MethodKind::Password, MethodKind::KeyboardInteractive][..]),
        auth_rejection_time: AUTH_REJECTION_TIME,
        // OpenSSH clients first try "none" to learn the methods: no need to wait there.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        nodelay: true,
        ..Default::default()
    }
}

/// Runs one connection to its end, or until the endpoint stops.
async fn connection(
    config: Arc<russh::server::Config>,
    socket: TcpStream,
    peer: SocketAddr,
    device: Arc<dyn SshDevice>,
    mut stop: watch::Receiver<bool>,
) {
    debug!(%peer, "ssh connection accepted");
    let handler = Connection {
        device,
        peer,
        user: String::new(),
        channels: HashMap::new(),
        ptys: HashSet::new(),
    };
    let started = tokio::select! {
        started = russh::server::run_stream(config, socket, handler) => started,
        () = stopped(&mut stop) => return,
    };
    let session = match started {
        Ok(session) => session,
        Err(error) => {
            debug!(%peer, %error, "ssh connection failed before the session started");
            return;
        }
    };
    let handle = session.handle();
    tokio::select! {
        result = session => match result {
            Ok(()) => debug!(%peer, "ssh connection closed"),
            Err(error) => debug!(%peer, %error, "ssh connection ended with an error"),
        },
        () = stopped(&mut stop) => {
            let reason = "ssh service stopped".to_owned();
            if let Err(error) = handle.disconnect(Disconnect::ByApplication, reason, "en".to_owned()).await {
                debug!(%peer, %error, "could not send disconnect");
            }
        }
    }
}

/// Completes once the endpoint stops.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stopped.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// The russh handler of one connection: login, then session channels.
struct Connection {
    device: Arc<dyn SshDevice>,
    peer: SocketAddr,
    /// The logged-in user (empty before login).
    user: String,
    /// Session channels opened and not yet given a request (exec, shell or subsystem).
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// Channels that asked for a pseudo-terminal (their shell echoes what is typed).
    ptys: HashSet<ChannelId>,
}

impl Connection {
    /// Checks a password against the device; logs the outcome (never the password).
    fn check_login(&mut self, user: &str, password: &str) -> Auth {
        if !self.device.is_up() {
            info!(peer = %self.peer, user, "ssh login refused: device is down");
            return Auth::reject();
        }
        if self.device.authenticate(user, password) {
            info!(peer = %self.peer, user, "ssh login");
            self.user = user.to_owned();
            Auth::Accept
        } else {
            info!(peer = %self.peer, user, "ssh login failed");
            Auth::reject()
        }
    }

    /// Takes the channel a request is for, or answers failure if it is unknown or already
    /// serving an earlier request. While the device is down the whole session is dropped.
    fn take_channel(
        &mut self,
        id: ChannelId,
        session: &mut Session,
    ) -> Result<Option<Channel<Msg>>, russh::Error> {
        if !self.device.is_up() {
            info!(peer = %self.peer, "device is down, closing ssh session");
            session.disconnect(Disconnect::ByApplication, "device is down", "en")?;
            return Ok(None);
        }
        match self.channels.remove(&id) {
            Some(channel) => Ok(Some(channel)),
            None => {
                session.channel_failure(id)?;
                Ok(None)
            }
        }
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(self.check_login(user, password))
    }

    /// Keyboard-interactive as OpenSSH does it with PAM: one `Password: ` prompt.
    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let Some(mut response) = response else {
            return Ok(Auth::Partial {
                name: "".into(),
                instructions: "".into(),
                prompts: vec![("Password: ".into(), false)].into(),
            });
        };
        let answer = response.next();
        match (answer, response.next()) {
            (Some(password), None) => {
                let password = String::from_utf8_lossy(&password).into_owned();
                Ok(self.check_login(user, &password))
            }
            _ => Ok(Auth::reject()),
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        self.ptys.remove(&channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.ptys.insert(channel);
        session.channel_success(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Accepted and ignored, as a router does with LANG and the like.
        session.channel_success(channel)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(chan) = self.take_channel(channel, session)? else {
            return Ok(());
        };
        session.channel_success(channel)?;
        let line = String::from_utf8_lossy(data).into_owned();
        info!(peer = %self.peer, user = %self.user, command = %console::redact(&line), "ssh exec");
        tokio::spawn(run_exec(chan, Arc::clone(&self.device), line, self.peer));
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(chan) = self.take_channel(channel, session)? else {
            return Ok(());
        };
        session.channel_success(channel)?;
        let echo = self.ptys.contains(&channel);
        let prompt = format!("[{}@{}] > ", self.user, self.device.identity());
        tokio::spawn(run_shell(
            chan,
            Arc::clone(&self.device),
            prompt,
            echo,
            self.peer,
        ));
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name != "sftp" {
            debug!(peer = %self.peer, subsystem = name, "unknown ssh subsystem");
            session.channel_failure(channel)?;
            return Ok(());
        }
        let Some(chan) = self.take_channel(channel, session)? else {
            return Ok(());
        };
        session.channel_success(channel)?;
        debug!(peer = %self.peer, user = %self.user, "sftp session");
        let server = sftp::FileServer::new(Arc::clone(&self.device));
        russh_sftp::server::run(chan.into_stream(), server).await;
        Ok(())
    }
}

/// Runs one `exec` command line and closes the channel.
///
/// RouterOS sends console output over SSH with `\r\n` line ends (Oxidized's RouterOS model,
/// which uses exec, strips lines like `# inactive time\r\n` from `/export`); exit status 0.
async fn run_exec(
    channel: Channel<Msg>,
    device: Arc<dyn SshDevice>,
    line: String,
    peer: SocketAddr,
) {
    let output = console::crlf(&console::run(&*device, &line));
    let result = async {
        channel.data(output.as_bytes()).await?;
        channel.exit_status(0).await?;
        channel.eof().await?;
        channel.close().await
    }
    .await;
    if let Err(error) = result {
        debug!(%peer, %error, "ssh exec output not delivered");
    }
}

/// Longest line the interactive shell keeps; the rest of a longer line is dropped.
const MAX_SHELL_LINE: usize = 64 * 1024;

/// A minimal interactive console: prints the prompt, reads lines, answers each through
/// [`console::run`]. With a pty it echoes what is typed and handles backspace and Ctrl-C;
/// `quit` or Ctrl-D on an empty line ends the session.
async fn run_shell(
    mut channel: Channel<Msg>,
    device: Arc<dyn SshDevice>,
    prompt: String,
    echo: bool,
    peer: SocketAddr,
) {
    let result: Result<(), russh::Error> = async {
        channel.data_bytes(format!("\r\n{prompt}")).await?;
        let mut line: Vec<u8> = Vec::new();
        let mut after_cr = false;
        'session: while let Some(msg) = channel.wait().await {
            let data = match msg {
                ChannelMsg::Data { data } => data,
                ChannelMsg::Eof | ChannelMsg::Close => break,
                _ => continue,
            };
            let mut out: Vec<u8> = Vec::new();
            for &byte in data.iter() {
                let was_cr = std::mem::replace(&mut after_cr, byte == b'\r');
                match byte {
                    b'\n' if was_cr => {}
                    b'\r' | b'\n' => {
                        if echo {
                            out.extend_from_slice(b"\r\n");
                        }
                        let text = String::from_utf8_lossy(&line).trim().to_owned();
                        line.clear();
                        if text == "quit" || text == "/quit" {
                            out.extend_from_slice(b"interrupted\r\n");
                            channel.data_bytes(out).await?;
                            break 'session;
                        }
                        if !text.is_empty() {
                            let output = console::crlf(&console::run(&*device, &text));
                            out.extend_from_slice(output.as_bytes());
                            if !output.is_empty() && !output.ends_with('\n') {
                                out.extend_from_slice(b"\r\n");
                            }
                        }
                        out.extend_from_slice(prompt.as_bytes());
                    }
                    0x7f | 0x08 => {
                        if line.pop().is_some() && echo {
                            out.extend_from_slice(b"\x08 \x08");
                        }
                    }
                    0x03 => {
                        line.clear();
                        out.extend_from_slice(b"\r\n");
                        out.extend_from_slice(prompt.as_bytes());
                    }
                    0x04 if line.is_empty() => {
                        channel.data_bytes(out).await?;
                        break 'session;
                    }
                    _ => {
                        if line.len() < MAX_SHELL_LINE {
                            line.push(byte);
                            if echo {
                                out.push(byte);
                            }
                        }
                    }
                }
            }
            if !out.is_empty() {
                channel.data_bytes(out).await?;
            }
        }
        channel.exit_status(0).await?;
        channel.eof().await?;
        channel.close().await
    }
    .await;
    if let Err(error) = result {
        debug!(%peer, %error, "ssh shell ended");
    }
}
