//! The whole controller as one value: database, HTTP API and agent hub, started together and
//! stopped together. `tikfleet-controller serve` runs one; the demo and the end-to-end tests
//! start one in-process exactly the same way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::{AppState, HubInfo, api_router};
use crate::clock::SharedClock;
use crate::crypto::AtRestKey;
use crate::db::{Db, sqlite_url};
use crate::hub::{Hub, HubConfig, HubTls, RunningHub};
use crate::notify::Notifier;

/// Where the hub's certificate comes from.
#[derive(Clone, Debug)]
pub enum HubCertificate {
    /// Certificate chain and key from PEM files (production).
    Files {
        /// Certificate chain, PEM.
        cert: PathBuf,
        /// Private key, PEM.
        key: PathBuf,
    },
    /// A self-signed certificate kept in the data folder (`hub-cert.pem`, `hub-key.pem`),
    /// made on first start for these names; enrolling agents are given it to pin. It survives
    /// restarts, so enrolled agents keep trusting the hub.
    SelfSigned {
        /// DNS names or IP addresses the certificate is for.
        names: Vec<String>,
    },
}

/// How to run a controller.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Data folder: the SQLite database (unless `database_url`), the at-rest key, the hub's
    /// self-signed certificate.
    pub data_dir: PathBuf,
    /// `postgres://...` for PostgreSQL, or `sqlite://...`; `None`: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// Where the agent hub listens.
    pub hub_listen: SocketAddr,
    /// The URL agents are told to dial (e.g. `wss://fleet.example.net:7443/agent`); `None`:
    /// `wss://<hub_listen>/agent`.
    pub hub_url: Option<String>,
    /// The hub's certificate.
    pub hub_certificate: HubCertificate,
    /// The hub's settings.
    pub hub: HubConfig,
    /// Retention of router health samples and rollups.
    pub health: crate::db::health::HealthRetention,
    /// How often scheduled credential rotations are looked for (default hourly).
    pub rotation_check: std::time::Duration,
}

impl ServerConfig {
    /// Everything on loopback with ephemeral ports and a self-signed hub certificate: what
    /// tests and the demo use.
    #[must_use]
    pub fn local(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            database_url: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            hub_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            hub_url: None,
            hub_certificate: HubCertificate::SelfSigned {
                names: vec!["localhost".into(), "127.0.0.1".into()],
            },
            hub: HubConfig::default(),
            health: crate::db::health::HealthRetention::default(),
            rotation_check: std::time::Duration::from_secs(3600),
        }
    }
}

/// A running controller.
#[derive(Debug)]
pub struct Server {
    /// Where the HTTP API listens.
    pub api_addr: SocketAddr,
    /// Where the hub listens.
    pub hub_addr: SocketAddr,
    /// The database.
    pub db: Db,
    /// What enrolling agents are told.
    pub hub_info: HubInfo,
    /// The first admin token, when this start created it (printed once).
    pub new_admin_token: Option<String>,
    hub: RunningHub,
    notifier: Option<Notifier>,
    health: Option<crate::db::health::HealthTask>,
    rotations: Option<crate::db::credentials::RotationTask>,
    backup_retention: Option<crate::db::backups::RetentionTask>,
    backup_schedule: Option<crate::db::backups::ScheduleTask>,
    alerts: Option<crate::alerts::AlertTask>,
    api_stop: Option<oneshot::Sender<()>>,
    api_task: Option<JoinHandle<()>>,
}

impl Server {
    /// Opens the database (migrating it), loads or creates the at-rest key and the hub's
    /// certificate, binds the API and the hub, and serves both in the background.
    ///
    /// # Errors
    /// The data folder, database, key, certificate or a listener cannot be set up; the
    /// message says which and why.
    pub async fn start(config: ServerConfig, clock: SharedClock) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data folder {}",
                config.data_dir.display()
            )
        })?;
        let key = AtRestKey::load(&config.data_dir).context("cannot load the at-rest key")?;
        let url = config
            .database_url
            .clone()
            .unwrap_or_else(|| sqlite_url(&config.data_dir));
        let db = Db::open(&url, key, clock.clone())
            .await
            .with_context(|| format!("cannot open the database {}", redact_url(&url)))?;
        let new_admin_token = db
            .bootstrap_admin()
            .await
            .context("cannot create the first admin token")?;

        let (tls, ca_pem) = hub_tls(&config)?;
        let hub = Hub::new(
            &tls,
            db.clone(),
            db.signals().clone(),
            clock.clone(),
            config.hub.clone(),
        )
        .bind(config.hub_listen)
        .await
        .with_context(|| format!("cannot listen for agents on {}", config.hub_listen))?;
        let hub_addr = hub.local_addr();
        let hub_info = HubInfo {
            url: config
                .hub_url
                .clone()
                .unwrap_or_else(|| format!("wss://{hub_addr}/agent")),
            ca_pem,
        };

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen for the API on {}", config.listen))?;
        let api_addr = listener.local_addr()?;
        let notifier = Notifier::start(db.clone(), clock.clone())
            .context("cannot start the notification sender")?;
        let health = crate::db::health::HealthTask::start(db.clone(), clock.clone(), config.health);
        let rotations = crate::db::credentials::RotationTask::start(
            db.clone(),
            clock.clone(),
            config.rotation_check,
        );
        let backup_retention = crate::db::backups::RetentionTask::start(db.clone(), clock.clone());
        let backup_schedule = crate::db::backups::ScheduleTask::start(
            db.clone(),
            clock.clone(),
            crate::db::backups::SCHEDULE_INTERVAL,
        );
        let alerts = crate::alerts::AlertTask::start(
            db.clone(),
            clock.clone(),
            crate::alerts::EVAL_INTERVAL,
        );
        let app = api_router(
            AppState::new(db.clone(), clock, hub_info.clone()).with_health_raw(config.health.raw),
        );
        let (api_stop, stopped) = oneshot::channel::<()>();
        let api_task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the API server stopped");
            }
        });
        tracing::info!(%api_addr, %hub_addr, hub_url = %hub_info.url, "controller started");
        Ok(Self {
            api_addr,
            hub_addr,
            db,
            hub_info,
            new_admin_token,
            hub,
            notifier: Some(notifier),
            health: Some(health),
            rotations: Some(rotations),
            backup_retention: Some(backup_retention),
            backup_schedule: Some(backup_schedule),
            alerts: Some(alerts),
            api_stop: Some(api_stop),
            api_task: Some(api_task),
        })
    }

    /// The API's base URL, e.g. `http://127.0.0.1:8080`.
    #[must_use]
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// The hub's live connections.
    #[must_use]
    pub fn connections(&self) -> &crate::hub::Connections {
        self.hub.connections()
    }

    /// Stops the API (in-flight requests finish, up to 10 s), the hub (sessions are closed
    /// with `going_away`) and the notification sender, then closes the database.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.api_stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.api_task.take()
            && tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
        {
            tracing::warn!("API requests did not finish in time");
        }
        self.hub.shutdown().await;
        if let Some(alerts) = self.alerts.take() {
            alerts.shutdown().await;
        }
        if let Some(notifier) = self.notifier.take() {
            notifier.shutdown().await;
        }
        if let Some(rotations) = self.rotations.take() {
            rotations.shutdown().await;
        }
        if let Some(health) = self.health.take() {
            health.shutdown().await;
        }
        if let Some(retention) = self.backup_retention.take() {
            retention.shutdown().await;
        }
        if let Some(schedule) = self.backup_schedule.take() {
            schedule.shutdown().await;
        }
        self.db.close().await;
    }
}

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM: how `serve` and the demo know to stop.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `postgres://user:password@host/db` without the password, for error messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The hub's TLS, and the PEM agents must pin when it is self-signed.
fn hub_tls(config: &ServerConfig) -> anyhow::Result<(HubTls, Option<String>)> {
    match &config.hub_certificate {
        HubCertificate::Files { cert, key } => Ok((HubTls::from_pem_files(cert, key)?, None)),
        HubCertificate::SelfSigned { names } => {
            let cert = config.data_dir.join("hub-cert.pem");
            let key = config.data_dir.join("hub-key.pem");
            if !cert.exists() || !key.exists() {
                make_self_signed(names, &cert, &key)?;
            }
            let pem = std::fs::read_to_string(&cert)
                .with_context(|| format!("cannot read {}", cert.display()))?;
            Ok((HubTls::from_pem_files(&cert, &key)?, Some(pem)))
        }
    }
}

fn make_self_signed(names: &[String], cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .context("cannot make the hub's certificate")?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names
            .first()
            .cloned()
            .unwrap_or_else(|| "tikfleet-hub".into()),
    );
    let key = rcgen::KeyPair::generate().context("cannot make the hub's key")?;
    let cert = params
        .self_signed(&key)
        .context("cannot sign the hub's certificate")?;
    write_private(key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    Ok(())
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_not_shown() {
        assert_eq!(
            redact_url("postgres://fleet:s3cret@db.example:5432/fleet"),
            "postgres://fleet:***@db.example:5432/fleet"
        );
        assert_eq!(
            redact_url("postgres://fleet@127.0.0.1/x"),
            "postgres://fleet@127.0.0.1/x"
        );
        assert_eq!(redact_url("sqlite:///a/b.db"), "sqlite:///a/b.db");
    }
}
