//! The simulator's SSH endpoint driven by the client the agent uses (`ssh2`, i.e. libssh2):
//! login, `exec` of `/export` and console commands, a minimal shell, SFTP over `/file`, the
//! host key fingerprint, and refusal while the device is down.
//!
//! The device here is a small in-memory stand-in ([`FakeRouter`]): these tests check the
//! transport and protocol handling, not the simulated router. ssh2 is blocking, so each client
//! runs in `spawn_blocking`; every test is bounded by [`TEST_TIMEOUT`] and libssh2's own
//! timeout.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ssh2::{HashType, HostKeyType, KeyboardInteractivePrompt, Prompt, Session};
use tikfleet_sim::ssh::{SshDevice, generate_host_key, host_key_fingerprint, serve};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TEST_TIMEOUT: Duration = Duration::from_secs(60);
const USER: &str = "admin";
const PASSWORD: &str = "s3cret";

/// An in-memory router: one user, canned export and console text, a file map.
#[derive(Default)]
struct FakeRouter {
    files: Mutex<BTreeMap<String, Vec<u8>>>,
    cli_lines: Mutex<Vec<String>>,
    down: AtomicBool,
}

impl FakeRouter {
    fn with_files(files: &[(&str, Vec<u8>)]) -> Arc<Self> {
        let router = Self::default();
        router.files.lock().unwrap().extend(
            files
                .iter()
                .map(|(name, data)| ((*name).to_owned(), data.clone())),
        );
        Arc::new(router)
    }

    fn file(&self, name: &str) -> Option<Vec<u8>> {
        self.files.lock().unwrap().get(name).cloned()
    }

    fn cli_lines(&self) -> Vec<String> {
        self.cli_lines.lock().unwrap().clone()
    }
}

fn export_text(show_sensitive: bool, hide_sensitive: bool) -> String {
    format!(
        "# by RouterOS 7.16.2\n# show={show_sensitive} hide={hide_sensitive}\n\
         /ppp secret\nadd name=alice profile=10M\n"
    )
}

impl SshDevice for FakeRouter {
    fn authenticate(&self, user: &str, password: &str) -> bool {
        user == USER && password == PASSWORD
    }

    fn export(&self, show_sensitive: bool, hide_sensitive: bool) -> String {
        export_text(show_sensitive, hide_sensitive)
    }

    fn cli(&self, line: &str) -> String {
        self.cli_lines.lock().unwrap().push(line.to_owned());
        format!("ran: {line}\n")
    }

    fn file_list(&self) -> Vec<(String, u64)> {
        let files = self.files.lock().unwrap();
        files
            .iter()
            .map(|(name, data)| (name.clone(), data.len() as u64))
            .collect()
    }

    fn file_read(&self, name: &str) -> Option<Vec<u8>> {
        self.file(name)
    }

    fn file_write(&self, name: &str, data: Vec<u8>) {
        self.files.lock().unwrap().insert(name.to_owned(), data);
    }

    fn file_remove(&self, name: &str) -> bool {
        self.files.lock().unwrap().remove(name).is_some()
    }

    fn is_up(&self) -> bool {
        !self.down.load(Ordering::SeqCst)
    }
}

/// A running SSH endpoint on a free loopback port.
struct Endpoint {
    addr: SocketAddr,
    fingerprint: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn spawn_endpoint(device: Arc<FakeRouter>) -> Endpoint {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let key = generate_host_key();
    let fingerprint = host_key_fingerprint(&key);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, device, key, async {
        let _ = stopped.await;
    }));
    Endpoint {
        addr,
        fingerprint,
        stop,
        task,
    }
}

/// Runs a blocking client against the endpoint, bounded by [`TEST_TIMEOUT`].
async fn client<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(TEST_TIMEOUT, tokio::task::spawn_blocking(f))
        .await
        .expect("client timed out")
        .expect("client panicked")
}

/// Connects and completes the SSH handshake, without logging in.
fn handshake(addr: SocketAddr) -> Result<Session, ssh2::Error> {
    let tcp = std::net::TcpStream::connect(addr).expect("tcp connect");
    let mut session = Session::new()?;
    session.set_timeout(30_000);
    session.set_tcp_stream(tcp);
    session.handshake()?;
    Ok(session)
}

/// Connects and logs in with a password.
fn login(addr: SocketAddr, user: &str, password: &str) -> Result<Session, ssh2::Error> {
    let session = handshake(addr)?;
    session.userauth_password(user, password)?;
    Ok(session)
}

/// Runs one command over `exec`; returns stdout and the exit status.
fn exec(session: &Session, command: &str) -> (String, i32) {
    let mut channel = session.channel_session().unwrap();
    channel.exec(command).unwrap();
    let mut out = String::new();
    channel.read_to_string(&mut out).unwrap();
    channel.wait_close().unwrap();
    (out, channel.exit_status().unwrap())
}

fn crlf(text: &str) -> String {
    text.replace('\n', "\r\n")
}

/// Standard base64 without padding, as OpenSSH prints fingerprints.
fn base64_unpadded(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// About 1 MiB holding every byte value, in an order that is not a plain cycle.
fn binary_blob(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 256) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_password_logs_in_and_wrong_one_is_refused() {
    let endpoint = spawn_endpoint(FakeRouter::with_files(&[])).await;
    let addr = endpoint.addr;
    client(move || {
        let session = login(addr, USER, PASSWORD).unwrap();
        assert!(session.authenticated());

        let session = handshake(addr).unwrap();
        assert!(session.userauth_password(USER, "wrong").is_err());
        assert!(!session.authenticated());
        assert!(session.userauth_password("nobody", PASSWORD).is_err());
        assert!(!session.authenticated());
    })
    .await;
}

struct Answer(&'static str);

impl KeyboardInteractivePrompt for Answer {
    fn prompt<'a>(
        &mut self,
        _user: &str,
        _instructions: &str,
        prompts: &[Prompt<'a>],
    ) -> Vec<String> {
        prompts.iter().map(|_| self.0.to_owned()).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_interactive_checks_the_password_too() {
    let endpoint = spawn_endpoint(FakeRouter::with_files(&[])).await;
    let addr = endpoint.addr;
    client(move || {
        let session = handshake(addr).unwrap();
        assert!(
            session
                .userauth_keyboard_interactive(USER, &mut Answer("wrong"))
                .is_err()
        );
        let session = handshake(addr).unwrap();
        session
            .userauth_keyboard_interactive(USER, &mut Answer(PASSWORD))
            .unwrap();
        assert!(session.authenticated());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_export_and_console_commands() {
    let device = FakeRouter::with_files(&[]);
    let endpoint = spawn_endpoint(Arc::clone(&device)).await;
    let addr = endpoint.addr;
    let cases: Vec<(&str, String)> = vec![
        ("/export", crlf(&export_text(false, false))),
        ("/export terse", crlf(&export_text(false, false))),
        ("/export show-sensitive", crlf(&export_text(true, false))),
        (
            "export hide-sensitive verbose",
            crlf(&export_text(false, true)),
        ),
        ("/export file=cfg", String::new()),
        (
            "/export nonsense",
            "expected end of command (line 1 column 9)\r\n".to_owned(),
        ),
        (
            "/system identity print",
            "ran: /system identity print\r\n".to_owned(),
        ),
        (
            "/ip address print; /export show-sensitive file=secret",
            "ran: /ip address print\r\n".to_owned(),
        ),
    ];
    client(move || {
        let session = login(addr, USER, PASSWORD).unwrap();
        for (command, expected) in cases {
            let (out, status) = exec(&session, command);
            assert_eq!(out, expected, "{command}");
            assert_eq!(status, 0, "{command}");
        }
    })
    .await;
    assert_eq!(
        device.file("cfg.rsc"),
        Some(export_text(false, false).into_bytes())
    );
    assert_eq!(
        device.file("secret.rsc"),
        Some(export_text(true, false).into_bytes())
    );
    assert_eq!(
        device.cli_lines(),
        ["/system identity print", "/ip address print"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_answers_lines_at_a_prompt() {
    let device = FakeRouter::with_files(&[]);
    let endpoint = spawn_endpoint(Arc::clone(&device)).await;
    let addr = endpoint.addr;
    let out = client(move || {
        let session = login(addr, USER, PASSWORD).unwrap();
        let mut channel = session.channel_session().unwrap();
        channel.shell().unwrap();
        channel
            .write_all(b"/system identity print\r\n\r\nquit\r\n")
            .unwrap();
        let mut out = String::new();
        channel.read_to_string(&mut out).unwrap();
        channel.wait_close().unwrap();
        out
    })
    .await;
    let prompt = "[admin@MikroTik] > ";
    assert_eq!(
        out,
        format!("\r\n{prompt}ran: /system identity print\r\n{prompt}{prompt}interrupted\r\n")
    );
    assert_eq!(device.cli_lines(), ["/system identity print"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_serves_the_file_list() {
    let backup = binary_blob(1024 * 1024 + 123);
    assert!((0..=255u8).all(|b| backup.contains(&b)));
    let device = FakeRouter::with_files(&[
        ("router.backup", backup.clone()),
        ("old.rsc", b"/system identity\nset name=r1\n".to_vec()),
    ]);
    let endpoint = spawn_endpoint(Arc::clone(&device)).await;
    let addr = endpoint.addr;
    let upload = binary_blob(1024 * 1024 + 7)
        .into_iter()
        .rev()
        .collect::<Vec<u8>>();
    let to_send = upload.clone();
    client(move || {
        let session = login(addr, USER, PASSWORD).unwrap();
        let sftp = session.sftp().unwrap();

        assert_eq!(sftp.realpath(Path::new(".")).unwrap(), PathBuf::from("/"));
        let mut listing: Vec<(PathBuf, Option<u64>, bool)> = sftp
            .readdir("/")
            .unwrap()
            .into_iter()
            .map(|(path, stat)| (path, stat.size, stat.is_file()))
            .collect();
        listing.sort();
        assert_eq!(
            listing,
            [
                (PathBuf::from("/old.rsc"), Some(29), true),
                (
                    PathBuf::from("/router.backup"),
                    Some(backup.len() as u64),
                    true
                ),
            ]
        );

        let stat = sftp.stat(Path::new("/router.backup")).unwrap();
        assert_eq!(stat.size, Some(backup.len() as u64));
        assert!(stat.is_file());
        assert!(sftp.stat(Path::new("/")).unwrap().is_dir());
        assert!(sftp.stat(Path::new("missing.backup")).is_err());

        let mut downloaded = Vec::new();
        let mut file = sftp.open("/router.backup").unwrap();
        assert_eq!(file.stat().unwrap().size, Some(backup.len() as u64));
        file.read_to_end(&mut downloaded).unwrap();
        assert!(downloaded == backup, "downloaded backup differs");
        assert!(sftp.open("/missing.backup").is_err());

        let mut file = sftp.create(Path::new("/restore.backup")).unwrap();
        file.write_all(&to_send).unwrap();
        file.close().unwrap();
        assert_eq!(
            sftp.stat(Path::new("restore.backup")).unwrap().size,
            Some(to_send.len() as u64)
        );

        sftp.unlink(Path::new("/old.rsc")).unwrap();
        assert!(sftp.unlink(Path::new("/old.rsc")).is_err());

        sftp.rename(
            Path::new("/restore.backup"),
            Path::new("/moved.backup"),
            None,
        )
        .unwrap();
    })
    .await;
    assert!(
        device.file("moved.backup") == Some(upload),
        "upload differs"
    );
    assert_eq!(device.file("restore.backup"), None);
    assert_eq!(device.file("old.rsc"), None);
    assert!(device.file("router.backup").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sees_the_reported_host_key() {
    let endpoint = spawn_endpoint(FakeRouter::with_files(&[])).await;
    let addr = endpoint.addr;
    let fingerprint = endpoint.fingerprint.clone();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    let (hash, kind) = client(move || {
        let session = handshake(addr).unwrap();
        let hash = session.host_key_hash(HashType::Sha256).unwrap().to_vec();
        let (_, kind) = session.host_key().unwrap();
        (hash, kind)
    })
    .await;
    assert!(matches!(kind, HostKeyType::Ed25519));
    assert_eq!(format!("SHA256:{}", base64_unpadded(&hash)), fingerprint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_is_down_refuses_sessions() {
    let device = FakeRouter::with_files(&[]);
    let endpoint = spawn_endpoint(Arc::clone(&device)).await;
    let addr = endpoint.addr;

    device.down.store(true, Ordering::SeqCst);
    client(move || assert!(handshake(addr).is_err())).await;

    device.down.store(false, Ordering::SeqCst);
    client(move || assert!(login(addr, USER, PASSWORD).is_ok())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_ends_open_sessions() {
    let endpoint = spawn_endpoint(FakeRouter::with_files(&[])).await;
    let addr = endpoint.addr;
    let (session, mut shell) = client(move || {
        let session = login(addr, USER, PASSWORD).unwrap();
        let mut shell = session.channel_session().unwrap();
        shell.shell().unwrap();
        (session, shell)
    })
    .await;

    endpoint.stop.send(()).unwrap();
    tokio::time::timeout(TEST_TIMEOUT, endpoint.task)
        .await
        .expect("serve did not return")
        .unwrap();
    client(move || {
        assert!(std::net::TcpStream::connect(addr).is_err());
        // The open shell ends (disconnected) instead of waiting for input.
        let mut out = Vec::new();
        let _ = shell.read_to_end(&mut out);
        assert!(session.channel_session().is_err(), "session still open");
    })
    .await;
}

#[test]
fn base64_matches_known_values() {
    assert_eq!(base64_unpadded(b""), "");
    assert_eq!(base64_unpadded(b"f"), "Zg");
    assert_eq!(base64_unpadded(b"fo"), "Zm8");
    assert_eq!(base64_unpadded(b"foo"), "Zm9v");
    assert_eq!(base64_unpadded(b"foobar"), "Zm9vYmFy");
}
