//! The SSH driver against the in-process simulator: `/export` on v7 and v6, console commands,
//! SFTP upload/download/remove, error classification (wrong password, refused port, silent
//! server), host keys pinned on first use, and that the driver never blocks the runtime.
//!
//! Every test runs on a single-threaded runtime that also serves the simulator, under a
//! watchdog thread: if the driver blocked the runtime's thread, the simulator could not answer
//! and the watchdog would fail the test instead of letting it hang.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use tikfleet_agent::router::{RouterEndpoint, TlsMode};
use tikfleet_agent::ssh::{HostKeyStore, MemoryHostKeys, RosMajor, SshConfig, SshDriver, SshError};
use tikfleet_shared::{ErrorCode, RouterId, Secret, TenantId};
use tikfleet_sim::cli::SshHandle;
use tikfleet_sim::router::Router;
use tikfleet_sim::ssh::{SshDevice, generate_host_key, host_key_fingerprint};
use tikfleet_sim::{Config, Running};
use tokio::sync::oneshot;

/// Every test body finishes within this, or fails.
const LIMIT: Duration = Duration::from_secs(60);

/// Runs a test body on a fresh current-thread runtime in its own thread, failing the test if
/// it does not finish within [`LIMIT`] (even when the runtime's thread is stuck).
fn within<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(body());
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(LIMIT) {
        Ok(()) => thread.join().expect("test thread"),
        Err(RecvTimeoutError::Disconnected) => {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(RecvTimeoutError::Timeout) => {
            panic!("test did not finish within {LIMIT:?}: is the runtime blocked?")
        }
    }
}

async fn sim(version: &str) -> Running {
    tikfleet_sim::start(Config {
        version: version.into(),
        redial: Duration::from_secs(60),
        ..Config::local()
    })
    .await
    .expect("simulator starts")
}

fn endpoint(id: RouterId, ssh: SocketAddr, password: &str) -> RouterEndpoint {
    RouterEndpoint {
        id,
        tenant: TenantId::new(),
        name: "core-1".into(),
        host: ssh.ip().to_string(),
        api_port: 8728,
        ssh_port: ssh.port(),
        tls: TlsMode::Plain,
        username: "admin".into(),
        password: Secret::new(password),
    }
}

fn quick() -> SshConfig {
    SshConfig {
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(10),
        ..SshConfig::default()
    }
}

/// A driver for router 0 of `sim`, with its own host key store.
fn driver(sim: &Running) -> (SshDriver, Arc<MemoryHostKeys>) {
    let addr = sim.routers[0].ssh.expect("ssh listener");
    let keys = Arc::new(MemoryHostKeys::new());
    let ep = endpoint(RouterId::new(), addr, "admin");
    (SshDriver::new(ep, quick(), keys.clone()), keys)
}

/// Router 0 as its SSH endpoint sees it (for setting up state and checking it).
fn device(sim: &Running) -> SshHandle {
    SshHandle(sim.router(0).clone())
}

/// `bytes` bytes that contain every byte value and do not repeat with a short period.
fn binary(bytes: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    let data: Vec<u8> = (0..bytes)
        .map(|i| {
            // xorshift32, mixed with the index so every value shows up.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as u8).wrapping_add(i as u8)
        })
        .collect();
    let mut seen = [false; 256];
    data.iter().for_each(|b| seen[usize::from(*b)] = true);
    assert!(seen.iter().all(|s| *s), "every byte value is present");
    data
}

fn without_comments(export: &str) -> String {
    export
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn export_on_v7_hides_secrets_unless_asked() {
    within(|| async {
        let sim = sim("7.16.2").await;
        let dev = device(&sim);
        let added = dev.cli("/ppp secret add name=alice password=s3cret-pw profile=default");
        assert_eq!(added.trim(), "", "{added}");
        let (driver, _) = driver(&sim);

        let hidden = driver.export(RosMajor::V7, false).await.expect("export");
        assert!(hidden.contains("/ppp secret"), "{hidden}");
        assert!(hidden.contains("name=alice"), "{hidden}");
        assert!(!hidden.contains("s3cret-pw"), "{hidden}");
        assert!(!hidden.contains('\r'), "line ends are \\n");
        // The simulator's own configuration, apart from the timestamped header.
        assert_eq!(
            without_comments(&hidden),
            without_comments(&dev.export(false, false))
        );

        let shown = driver.export(RosMajor::V7, true).await.expect("export");
        assert!(shown.contains("password=s3cret-pw"), "{shown}");
        assert_eq!(
            without_comments(&shown),
            without_comments(&dev.export(true, false))
        );
        sim.shutdown().await;
    });
}

#[test]
fn export_on_v6_shows_secrets_unless_hidden() {
    within(|| async {
        let sim = sim("6.49.10").await;
        let dev = device(&sim);
        let added = dev.cli("/ppp secret add name=bob password=v6-pw");
        assert_eq!(added.trim(), "", "{added}");
        let (driver, _) = driver(&sim);

        let shown = driver.export(RosMajor::V6, true).await.expect("export");
        assert!(shown.contains("name=bob"), "{shown}");
        assert!(shown.contains("password=v6-pw"), "{shown}");
        let hidden = driver.export(RosMajor::V6, false).await.expect("export");
        assert!(hidden.contains("name=bob"), "{hidden}");
        assert!(!hidden.contains("v6-pw"), "{hidden}");
        sim.shutdown().await;
    });
}

#[test]
fn runs_console_commands_and_classifies_console_errors() {
    within(|| async {
        let sim = sim("7.16.2").await;
        let (driver, _) = driver(&sim);
        let out = driver.run("/system identity print").await.expect("run");
        assert!(out.contains("name: sim-1"), "{out:?}");

        let err = driver.run("/frobnicate now").await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::UnknownCommand, "{err}");

        let err = driver
            .run("/system identity print\n/quit")
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRequest, "{err}");
        sim.shutdown().await;
    });
}

#[test]
fn uploads_downloads_and_removes_a_binary_file() {
    within(|| async {
        let sim = sim("7.16.2").await;
        let dev = device(&sim);
        let (driver, _) = driver(&sim);
        let data = binary(1024 * 1024 + 17, 7);

        driver
            .upload("restore.backup", data.clone())
            .await
            .expect("upload");
        assert!(
            dev.file_list()
                .contains(&("restore.backup".to_owned(), data.len() as u64)),
            "{:?}",
            dev.file_list()
        );
        assert_eq!(dev.file_read("restore.backup").as_deref(), Some(&data[..]));

        let back = driver.download("restore.backup").await.expect("download");
        assert!(back == data, "downloaded bytes differ");

        // Replacing a file truncates it.
        driver
            .upload("restore.backup", b"short".to_vec())
            .await
            .expect("upload");
        assert_eq!(
            driver.download("restore.backup").await.expect("download"),
            b"short"
        );

        driver.remove("restore.backup").await.expect("remove");
        assert!(dev.file_read("restore.backup").is_none());
        for err in [
            driver.download("restore.backup").await.unwrap_err(),
            driver.remove("restore.backup").await.unwrap_err(),
        ] {
            assert_eq!(err.code(), ErrorCode::NoSuchItem, "{err}");
        }
        let err = driver.download("../etc/passwd").await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRequest, "{err}");
        sim.shutdown().await;
    });
}

#[test]
fn wrong_password_is_authentication_failed_and_never_shown() {
    within(|| async {
        let sim = sim("7.16.2").await;
        let addr = sim.routers[0].ssh.expect("ssh");
        let keys = Arc::new(MemoryHostKeys::new());
        let ep = endpoint(RouterId::new(), addr, "not-the-password-42");
        let id = ep.id;
        let driver = SshDriver::new(ep, quick(), keys.clone());
        let err = driver.run("/system identity print").await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::AuthenticationFailed, "{err}");
        assert!(!err.retryable());
        assert!(err.host_key_change().is_none());
        for shown in [err.to_string(), format!("{err:?}"), format!("{driver:?}")] {
            assert!(!shown.contains("not-the-password-42"), "{shown}");
        }
        // A failed login pins nothing.
        assert_eq!(keys.get(id), Ok(None));
        sim.shutdown().await;
    });
}

#[test]
fn refused_port_is_connection_refused() {
    within(|| async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let driver = SshDriver::new(
            endpoint(RouterId::new(), addr, "admin"),
            quick(),
            Arc::new(MemoryHostKeys::new()),
        );
        let err = driver.export(RosMajor::V7, false).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::ConnectionRefused, "{err}");
        assert!(err.retryable());
    });
}

#[test]
fn silent_server_is_timeout() {
    within(|| async {
        // The kernel accepts the connection; nothing ever answers the SSH banner.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = SshConfig {
            connect_timeout: Duration::from_millis(300),
            ..quick()
        };
        let driver = SshDriver::new(
            endpoint(RouterId::new(), addr, "admin"),
            config,
            Arc::new(MemoryHostKeys::new()),
        );
        let err = driver.run("/system identity print").await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
        drop(listener);
    });
}

/// The simulator's router behind an SSH endpoint with a host key of the test's choosing,
/// counting login attempts.
struct Endpoint {
    addr: SocketAddr,
    fingerprint: String,
    logins: Arc<AtomicUsize>,
    stop: oneshot::Sender<()>,
}

struct Counting {
    inner: SshHandle,
    logins: Arc<AtomicUsize>,
}

impl SshDevice for Counting {
    fn authenticate(&self, user: &str, password: &str) -> bool {
        self.logins.fetch_add(1, Ordering::SeqCst);
        self.inner.authenticate(user, password)
    }
    fn export(&self, show_sensitive: bool, hide_sensitive: bool) -> String {
        self.inner.export(show_sensitive, hide_sensitive)
    }
    fn cli(&self, line: &str) -> String {
        self.inner.cli(line)
    }
    fn file_list(&self) -> Vec<(String, u64)> {
        self.inner.file_list()
    }
    fn file_read(&self, name: &str) -> Option<Vec<u8>> {
        self.inner.file_read(name)
    }
    fn file_write(&self, name: &str, data: Vec<u8>) {
        self.inner.file_write(name, data);
    }
    fn file_remove(&self, name: &str) -> bool {
        self.inner.file_remove(name)
    }
    fn is_up(&self) -> bool {
        self.inner.is_up()
    }
    fn identity(&self) -> String {
        self.inner.identity()
    }
}

async fn ssh_endpoint(router: Arc<Router>) -> Endpoint {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let key = generate_host_key();
    let fingerprint = host_key_fingerprint(&key);
    let logins = Arc::new(AtomicUsize::new(0));
    let device = Arc::new(Counting {
        inner: SshHandle(router),
        logins: logins.clone(),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(tikfleet_sim::ssh::serve(
        listener,
        device,
        key,
        async move {
            let _ = stopped.await;
        },
    ));
    Endpoint {
        addr,
        fingerprint,
        logins,
        stop,
    }
}

#[test]
fn host_key_is_pinned_on_first_use_and_a_changed_key_is_refused_before_login() {
    within(|| async {
        let sim = sim("7.16.2").await;
        let first = ssh_endpoint(sim.router(0).clone()).await;
        let keys = Arc::new(MemoryHostKeys::new());
        let id = RouterId::new();
        let store: Arc<dyn HostKeyStore> = keys.clone();

        let driver = SshDriver::new(endpoint(id, first.addr, "admin"), quick(), store.clone());
        driver
            .run("/system identity print")
            .await
            .expect("first use");
        assert_eq!(keys.get(id), Ok(Some(first.fingerprint.clone())));
        assert!(first.fingerprint.starts_with("SHA256:"));
        assert!(!first.fingerprint.ends_with('='), "unpadded base64");
        // Same key again: accepted.
        driver
            .run("/system identity print")
            .await
            .expect("pinned key");
        assert_eq!(first.logins.load(Ordering::SeqCst), 2);

        // The same router id answering with another key (reinstalled, or intercepted).
        let second = ssh_endpoint(sim.router(0).clone()).await;
        assert_ne!(second.fingerprint, first.fingerprint);
        let moved = SshDriver::new(endpoint(id, second.addr, "admin"), quick(), store);
        let err: SshError = moved.download("anything.backup").await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::AuthenticationFailed, "{err}");
        assert!(!err.retryable());
        let change = err.host_key_change().expect("a host key change");
        assert_eq!(change.pinned, first.fingerprint);
        assert_eq!(change.presented, second.fingerprint);
        assert!(err.message().contains("host key changed"), "{err}");
        assert!(err.message().contains("re-pin"), "{err}");
        assert_eq!(
            second.logins.load(Ordering::SeqCst),
            0,
            "no login attempted against a changed key"
        );
        assert_eq!(
            keys.get(id),
            Ok(Some(first.fingerprint.clone())),
            "pin kept"
        );

        // After an operator verified the new key and re-pinned it, the router is usable.
        keys.put(id, &second.fingerprint).unwrap();
        moved
            .run("/system identity print")
            .await
            .expect("re-pinned");
        assert_eq!(second.logins.load(Ordering::SeqCst), 1);

        let _ = first.stop.send(());
        let _ = second.stop.send(());
        sim.shutdown().await;
    });
}

#[test]
fn concurrent_downloads_do_not_block_the_runtime() {
    within(|| async {
        // The simulator is served by this same single-threaded runtime: if a download blocked
        // the thread, the other download (and the simulator) could not progress.
        let sim = sim("7.16.2").await;
        let dev = device(&sim);
        let (driver, _) = driver(&sim);
        let a = binary(1024 * 1024, 11);
        let b = binary(1024 * 1024, 13);
        dev.file_write("a.backup", a.clone());
        dev.file_write("b.backup", b.clone());
        let (got_a, got_b) = tokio::join!(driver.download("a.backup"), driver.download("b.backup"));
        assert!(got_a.expect("a") == a, "a differs");
        assert!(got_b.expect("b") == b, "b differs");
        sim.shutdown().await;
    });
}
