//! tikfleet-sim: a RouterOS device you can run (API, API-SSL, SSH/SFTP, control endpoint).
//!
//! # Layout
//! - `word.rs`: the wire codec (word lengths, sentences, incremental decoder).
//! - `query.rs`: `?` query words and their stack evaluation.
//! - `personality.rs`: every version-specific fact (v6/v7, `!empty`, dates, boards).
//! - `model.rs`: the generic table engine and [`model::CommandError`] (the `!trap` texts).
//! - `menus.rs`: the table menus' fields, defaults, keys and messages.
//! - `device.rs`: a router's state and the command engine; `sessions.rs` the subscriber
//!   sessions and simulated CPEs; `backup.rs` and `export.rs` the backup and export formats.
//! - `reply.rs`: reply sentences. `api.rs`: API connections (tags, cancel, faults).
//! - `tls.rs`: the self-signed certificate and acceptor. `faults.rs`: faults and stats.
//! - `router.rs`: one router as listeners share it. `control.rs`: the HTTP control endpoint.
//! - `cli.rs`: the console for SSH (`SshDevice`); `ssh/`: the SSH transport.
//!
//! [`start`] binds every listener (port 0 works) and returns the bound addresses in
//! [`Running`]; tests run the simulator in-process with it.

pub mod api;
pub mod backup;
pub mod cli;
pub mod control;
pub mod device;
pub mod export;
pub mod faults;
pub mod menus;
pub mod model;
pub mod personality;
pub mod query;
pub mod reply;
pub mod router;
pub mod sessions;
pub mod ssh;
pub mod tls;
pub mod word;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::device::{Device, DeviceConfig};
use crate::personality::{Personality, VersionError};
use crate::router::{Router, RouterAddrs};
use crate::tls::{CertInfo, TlsError};

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// API listen address of router 0 (router i uses port + i; port 0 picks free ports).
    pub api: SocketAddr,
    /// API-SSL listen address of router 0.
    pub api_ssl: Option<SocketAddr>,
    /// SSH listen address of router 0.
    pub ssh: Option<SocketAddr>,
    /// Control endpoint address (one for all routers).
    pub control: Option<SocketAddr>,
    /// Number of routers.
    pub routers: usize,
    /// Login user.
    pub user: String,
    /// Its password.
    pub password: String,
    /// RouterOS version to simulate (`7.16.2`, `6.49.10`, …; 6.43 or later).
    pub version: String,
    /// Redial delay of simulated clients.
    pub redial: Duration,
    /// Default downtime of a reboot.
    pub reboot_down: Duration,
    /// Secrets to pre-populate in each router (`seed-N`, password `pw-N`).
    pub seed_secrets: usize,
    /// Write the API-SSL certificate PEM here.
    pub cert_out: Option<PathBuf>,
}

impl Config {
    /// Loopback, port 0 everywhere, one router, admin/admin, 7.16.2: what tests start from.
    pub fn local() -> Self {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Self {
            api: any,
            api_ssl: Some(any),
            ssh: Some(any),
            control: Some(any),
            routers: 1,
            user: "admin".into(),
            password: "admin".into(),
            version: "7.16.2".into(),
            redial: Duration::from_millis(2000),
            reboot_down: Duration::from_millis(3000),
            seed_secrets: 0,
            cert_out: None,
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The version cannot be simulated.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// A listener could not bind.
    #[error("cannot listen for {listener} on {addr}")]
    Bind {
        /// Which listener (`api of router 2`, `control`).
        listener: String,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Two listeners' port ranges (base port + router index) overlap.
    #[error(
        "the ports of {first} ({first_range}) and {second} ({second_range}) overlap: \
         with N routers each listener takes N consecutive ports from its base port"
    )]
    PortsOverlap {
        /// One listener kind.
        first: &'static str,
        /// Its ports.
        first_range: String,
        /// The other.
        second: &'static str,
        /// Its ports.
        second_range: String,
    },
    /// A listener's port range (base port + router index) goes past port 65535.
    #[error("the ports of {listener} ({range}) go past 65535")]
    PortsOutOfRange {
        /// The listener kind.
        listener: &'static str,
        /// Its ports.
        range: String,
    },
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Writing the certificate file failed.
    #[error("cannot write the certificate to {path}")]
    CertOut {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No routers asked for.
    #[error("at least one router is needed")]
    NoRouters,
}

/// A running simulator.
#[derive(Debug)]
pub struct Running {
    /// Bound addresses per router.
    pub routers: Vec<RouterAddrs>,
    /// Bound control address.
    pub control: Option<SocketAddr>,
    /// The API-SSL certificate.
    pub cert: CertInfo,
    /// Router handles (state, faults, stats) for in-process tests.
    pub handles: Vec<Arc<Router>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The listener lines printed at startup: `api ADDR` per router, then `api-ssl`, `ssh`,
    /// then `control`.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (kind, get) in [
            (
                "api",
                (|a: &RouterAddrs| a.api) as fn(&RouterAddrs) -> Option<SocketAddr>,
            ),
            ("api-ssl", |a| a.api_ssl),
            ("ssh", |a| a.ssh),
        ] {
            for r in &self.routers {
                if let Some(a) = get(r) {
                    out.push(format!("{kind} {a}"));
                }
            }
        }
        if let Some(c) = self.control {
            out.push(format!("control {c}"));
        }
        out
    }

    /// Router `i`.
    pub fn router(&self, i: usize) -> &Arc<Router> {
        &self.handles[i]
    }

    /// Stops listening, closes every connection and waits for the listeners to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// Binds listener `kind` of router `i`: base port + i (port 0 stays 0: any free port).
async fn bind(base: SocketAddr, i: usize, kind: &str) -> Result<TcpListener, StartError> {
    let mut addr = base;
    if base.port() != 0 {
        // `check_port_ranges` has refused ranges past 65535.
        let port = u16::try_from(usize::from(base.port()) + i).unwrap_or(u16::MAX);
        addr.set_port(port);
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            listener: format!("{kind} of router {i}"),
            addr,
            source,
        })
}

/// Refuses configurations whose fixed port ranges collide, before anything binds.
fn check_port_ranges(config: &Config) -> Result<(), StartError> {
    let n = u32::try_from(config.routers).unwrap_or(u32::MAX);
    let mut ranges: Vec<(&'static str, SocketAddr, u32)> = vec![("api", config.api, n)];
    ranges.extend(config.api_ssl.map(|a| ("api-ssl", a, n)));
    ranges.extend(config.ssh.map(|a| ("ssh", a, n)));
    ranges.extend(config.control.map(|a| ("control", a, 1)));
    ranges.retain(|(_, a, _)| a.port() != 0);
    let show = |a: &SocketAddr, len: u32| match len {
        1 => format!("port {}", a.port()),
        _ => format!(
            "ports {}-{}",
            a.port(),
            u64::from(a.port()) + u64::from(len) - 1
        ),
    };
    for (listener, a, len) in &ranges {
        if u64::from(a.port()) + u64::from(*len) - 1 > u64::from(u16::MAX) {
            return Err(StartError::PortsOutOfRange {
                listener,
                range: show(a, *len),
            });
        }
    }
    for (i, (first, a, alen)) in ranges.iter().enumerate() {
        for (second, b, blen) in &ranges[i + 1..] {
            let (a0, b0) = (u32::from(a.port()), u32::from(b.port()));
            let same_host = a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
            if same_host && a0 < b0 + blen && b0 < a0 + alen {
                return Err(StartError::PortsOverlap {
                    first,
                    first_range: show(a, *alen),
                    second,
                    second_range: show(b, *blen),
                });
            }
        }
    }
    Ok(())
}

fn local(l: &TcpListener) -> Option<SocketAddr> {
    l.local_addr().ok()
}

/// Binds every listener and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    if config.routers == 0 {
        return Err(StartError::NoRouters);
    }
    check_port_ranges(&config)?;
    let personality = Arc::new(Personality::for_version(&config.version)?);
    let (acceptor, cert) = tls::setup()?;
    if let Some(path) = &config.cert_out {
        std::fs::write(path, &cert.pem).map_err(|source| StartError::CertOut {
            path: path.clone(),
            source,
        })?;
    }
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut handles = Vec::new();
    let mut addrs = Vec::new();
    let host_key = ssh::generate_host_key();
    // Bind every listener before serving any, so a failure leaves nothing running.
    let mut listeners = Vec::with_capacity(config.routers);
    for i in 0..config.routers {
        let api = bind(config.api, i, "api").await?;
        let api_ssl = match config.api_ssl {
            Some(a) => Some(bind(a, i, "api-ssl").await?),
            None => None,
        };
        let ssh_l = match config.ssh {
            Some(a) => Some(bind(a, i, "ssh").await?),
            None => None,
        };
        listeners.push((api, api_ssl, ssh_l));
    }
    let control_listener = match config.control {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
                    listener: "control".to_owned(),
                    addr,
                    source,
                })?,
        ),
        None => None,
    };
    for (i, (api, api_ssl, ssh_l)) in listeners.into_iter().enumerate() {
        let ra = RouterAddrs {
            api: local(&api),
            api_ssl: api_ssl.as_ref().and_then(local),
            ssh: ssh_l.as_ref().and_then(local),
        };
        let port = |a: Option<SocketAddr>, d: u16| a.map_or(d, |a| a.port());
        let dc = DeviceConfig {
            index: i,
            user: config.user.clone(),
            password: config.password.clone(),
            ports: (port(ra.api, 8728), port(ra.api_ssl, 8729), port(ra.ssh, 22)),
            redial: config.redial,
        };
        let now = Instant::now();
        let mut device = Device::new(personality.clone(), dc, now);
        if config.seed_secrets > 0 {
            device.seed_secrets(config.seed_secrets, now);
        }
        let router = Arc::new(Router::new(i, device, config.reboot_down));
        let _ = router.addrs.set(ra);
        tasks.push(tokio::spawn(api::serve(
            api,
            router.clone(),
            None,
            shutdown_rx.clone(),
        )));
        if let Some(l) = api_ssl {
            tasks.push(tokio::spawn(api::serve(
                l,
                router.clone(),
                Some(acceptor.clone()),
                shutdown_rx.clone(),
            )));
        }
        if let Some(l) = ssh_l {
            let dev: Arc<dyn ssh::SshDevice> = Arc::new(cli::SshHandle(router.clone()));
            let mut rx = shutdown_rx.clone();
            let stop = async move {
                let _ = rx.wait_for(|v| *v).await;
            };
            tasks.push(tokio::spawn(ssh::serve(l, dev, host_key.clone(), stop)));
        }
        handles.push(router);
        addrs.push(ra);
    }
    let control = match control_listener {
        Some(l) => {
            let bound = local(&l);
            let app = control::app(control::AppState {
                routers: handles.clone(),
                cert: cert.clone(),
            });
            let mut rx = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                let stop = async move {
                    let _ = rx.wait_for(|v| *v).await;
                };
                if let Err(e) = axum::serve(l, app).with_graceful_shutdown(stop).await {
                    tracing::warn!(error = %e, "control endpoint failed");
                }
            }));
            bound
        }
        None => None,
    };
    Ok(Running {
        routers: addrs,
        control,
        cert,
        handles,
        shutdown,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(routers: usize, api: u16, ssl: u16, ssh: u16, control: u16) -> Config {
        let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        Config {
            api: at(api),
            api_ssl: Some(at(ssl)),
            ssh: Some(at(ssh)),
            control: Some(at(control)),
            routers,
            ..Config::local()
        }
    }

    fn check(config: Config, expected: Result<(), &str>) {
        let got = check_port_ranges(&config).map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_owned), "{config:?}");
    }

    #[test]
    fn port_ranges() {
        check(ports(1, 18728, 18729, 18722, 18080), Ok(()));
        check(ports(2, 18728, 18828, 18722, 18080), Ok(()));
        check(
            ports(2, 18728, 18729, 18722, 18080),
            Err(
                "the ports of api (ports 18728-18729) and api-ssl (ports 18729-18730) overlap: \
                 with N routers each listener takes N consecutive ports from its base port",
            ),
        );
        check(
            ports(10, 18728, 18828, 18622, 18730),
            Err(
                "the ports of api (ports 18728-18737) and control (port 18730) overlap: \
                 with N routers each listener takes N consecutive ports from its base port",
            ),
        );
        // Port 0 (any free port) never collides.
        check(ports(50, 0, 0, 0, 0), Ok(()));
        check(ports(50, 18728, 0, 0, 18728 + 50), Ok(()));
        // Different hosts do not collide; the unspecified address collides with every host.
        let mut c = ports(2, 18728, 18729, 0, 0);
        c.api_ssl = Some(([127, 0, 0, 2], 18729).into());
        check(c.clone(), Ok(()));
        c.api_ssl = Some(([0, 0, 0, 0], 18729).into());
        assert!(matches!(
            check_port_ranges(&c),
            Err(StartError::PortsOverlap { .. })
        ));
        check(
            ports(2, 65535, 0, 0, 0),
            Err("the ports of api (ports 65535-65536) go past 65535"),
        );
        check(ports(1, 65535, 0, 0, 0), Ok(()));
    }

    #[tokio::test]
    async fn start_refuses_overlapping_ports_before_binding() {
        let err = start(ports(3, 18728, 18730, 0, 0)).await.unwrap_err();
        assert!(matches!(err, StartError::PortsOverlap { .. }), "{err}");
    }
}
