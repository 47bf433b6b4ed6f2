//! [`RouterOsClient`]: a small pool of API connections to one router, with timeouts,
//! reconnection, version detection and pipelined commands.
//!
//! Each pooled connection is a mikrotik-rs [`MikrotikDevice`]: one socket whose actor tags
//! every command and routes the interleaved replies back, so many commands can be in flight
//! on one connection. The pool holds up to [`DriverConfig::pool_size`] of them and opens them
//! lazily: an idle live connection is preferred, a new one is opened only while every live one
//! is busy. A connection that fails (reset, `!fatal`, timeout) is dropped from the pool and the
//! next command opens a fresh one. Every new connection logs in, reads `/system/resource`
//! `version`, refuses versions older than 6.43 and refreshes the [`Capabilities`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use mikrotik_rs::{Event, MikrotikDevice};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tikfleet_shared::ErrorCode;
use tikfleet_shared::record::{AuditParams, AuditStatus};
use tokio::sync::mpsc::UnboundedReceiver;

use super::command::{Cmd, Row};
use super::error::{DriverError, classify_trap, from_device};
use super::observer::{CommandEvent, CommandObserver};
use super::version::{Capabilities, RosVersion};
use crate::clock::SharedClock;
use crate::router::RouterEndpoint;

/// Timeouts and pool size.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// TCP connect, TLS handshake, login and version check together.
    pub connect_timeout: Duration,
    /// From sending a command to its last reply.
    pub command_timeout: Duration,
    /// Connections per router (at least 1).
    pub pool_size: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            pool_size: 2,
        }
    }
}

/// What `/system/package/update` says about a newer RouterOS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateCheck {
    /// `installed-version`.
    pub installed: Option<String>,
    /// `latest-version`, once the check has found it.
    pub latest: Option<String>,
    /// `status` (`New version is available`, `System is already up to date`, `ERROR: …`).
    pub status: Option<String>,
    /// Whether a newer version exists.
    pub available: bool,
    /// Why the check could not tell (the router cannot reach MikroTik's servers, …). A failed
    /// check is not a driver error.
    pub error: Option<String>,
}

type Tls = Option<(Arc<ClientConfig>, ServerName<'static>)>;

#[derive(Clone)]
struct Live {
    device: MikrotikDevice,
    generation: u64,
    load: Arc<AtomicUsize>,
}

/// Counts a command against its connection while it runs.
struct LoadGuard(Arc<AtomicUsize>);

impl LoadGuard {
    fn new(load: &Arc<AtomicUsize>) -> Self {
        load.fetch_add(1, Ordering::SeqCst);
        Self(load.clone())
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Inner {
    endpoint: RouterEndpoint,
    config: DriverConfig,
    clock: SharedClock,
    observer: Arc<dyn CommandObserver>,
    tls: Tls,
    slots: Vec<tokio::sync::Mutex<Option<Live>>>,
    generation: AtomicU64,
    connects: AtomicU64,
    version: RwLock<(RosVersion, Capabilities)>,
}

/// A pooled, observed RouterOS API client for one router. Cheap to clone.
#[derive(Clone)]
pub struct RouterOsClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RouterOsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterOsClient")
            .field("router", &self.inner.endpoint.name)
            .field("host", &self.inner.endpoint.host)
            .field("port", &self.inner.endpoint.api_port)
            .finish_non_exhaustive()
    }
}

/// A connection lent to one command or batch.
struct Lease {
    slot: usize,
    live: Live,
}

impl RouterOsClient {
    /// Connects to the router (one connection, more on demand), logs in, detects the version
    /// and refuses versions older than 6.43.
    ///
    /// # Errors
    ///
    /// Classified [`DriverError`]s: `connection_refused`, `timeout`, `authentication_failed`
    /// (also for a refused certificate), `unsupported_version`, `invalid_request` (bad TLS
    /// settings), …
    pub async fn connect(
        endpoint: RouterEndpoint,
        config: DriverConfig,
        clock: SharedClock,
        observer: Arc<dyn CommandObserver>,
    ) -> Result<Self, DriverError> {
        let tls = super::tls::client_config(&endpoint.tls, &endpoint.host)?;
        let pool_size = config.pool_size.max(1);
        let placeholder = RosVersion {
            major: 0,
            minor: 0,
            patch: 0,
            channel: String::new(),
        };
        let caps = Capabilities::for_version(&placeholder);
        let client = Self {
            inner: Arc::new(Inner {
                endpoint,
                config,
                clock,
                observer,
                tls,
                slots: (0..pool_size)
                    .map(|_| tokio::sync::Mutex::new(None))
                    .collect(),
                generation: AtomicU64::new(1),
                connects: AtomicU64::new(0),
                version: RwLock::new((placeholder, caps)),
            }),
        };
        let lease = client.acquire().await.map_err(|e| client.ctx(e))?;
        drop(lease);
        Ok(client)
    }

    /// The router this client talks to.
    #[must_use]
    pub fn endpoint(&self) -> &RouterEndpoint {
        &self.inner.endpoint
    }

    /// The RouterOS version seen on the most recent connection.
    #[must_use]
    pub fn version(&self) -> RosVersion {
        self.read_version().0.clone()
    }

    /// What this router's version can do.
    #[must_use]
    pub fn caps(&self) -> Capabilities {
        self.read_version().1.clone()
    }

    /// How many connections this client has opened (logins), reconnects included.
    #[must_use]
    pub fn connections_opened(&self) -> u64 {
        self.inner.connects.load(Ordering::SeqCst)
    }

    /// Runs one command and returns its rows.
    ///
    /// # Errors
    ///
    /// The classified failure; the observer has seen it too.
    pub async fn run(&self, cmd: Cmd) -> Result<Vec<Row>, DriverError> {
        self.run_many(vec![cmd])
            .await
            .pop()
            .unwrap_or_else(|| Err(DriverError::new(ErrorCode::Internal, "no result")))
    }

    /// Sends every command at once on one connection (each with its own tag) and waits for
    /// all of them; results come back in the order of `cmds`. RouterOS runs tagged commands
    /// concurrently, so a batch must not depend on its own order. Each command has the full
    /// command timeout from the moment it was sent.
    pub async fn run_many(&self, cmds: Vec<Cmd>) -> Vec<Result<Vec<Row>, DriverError>> {
        let mut results: Vec<Option<Result<Vec<Row>, DriverError>>> = vec![None; cmds.len()];
        let mut pending = Vec::with_capacity(cmds.len());
        let mut lease = match self.acquire().await {
            Ok(l) => Some(l),
            Err(e) => {
                let e = self.ctx(e);
                for (i, cmd) in cmds.iter().enumerate() {
                    self.observe(cmd, self.inner.clock.now(), Duration::ZERO, Err(&e));
                    results[i] = Some(Err(e.clone()));
                }
                None
            }
        };
        let mut reconnected = false;
        let mut leases = Vec::new();
        for (i, cmd) in cmds.iter().enumerate() {
            while let Some(l) = &lease {
                let started_at = self.inner.clock.now();
                let t0 = Instant::now();
                let guard = LoadGuard::new(&l.live.load);
                match l.live.device.send_command(cmd.build()).await {
                    Ok(rx) => {
                        pending.push((i, rx, started_at, t0, guard, l.slot, l.live.generation));
                        break;
                    }
                    Err(_) if !reconnected => {
                        // The connection died before this command reached it: nothing was
                        // sent, so retrying on a fresh connection is safe.
                        drop(guard);
                        reconnected = true;
                        self.invalidate(l.slot, l.live.generation).await;
                        leases.extend(lease.take());
                        match self.acquire().await {
                            Ok(n) => lease = Some(n),
                            Err(e) => {
                                let e = self.ctx(e);
                                self.observe(cmd, started_at, t0.elapsed(), Err(&e));
                                results[i] = Some(Err(e));
                            }
                        }
                    }
                    Err(e) => {
                        let e = self.ctx(from_device(&e));
                        self.observe(cmd, started_at, t0.elapsed(), Err(&e));
                        results[i] = Some(Err(e));
                        break;
                    }
                }
            }
            if lease.is_none() && results[i].is_none() {
                let e = self.ctx(DriverError::reset("sending a command"));
                self.observe(cmd, self.inner.clock.now(), Duration::ZERO, Err(&e));
                results[i] = Some(Err(e));
            }
        }
        let timeout = self.inner.config.command_timeout;
        for (i, rx, started_at, t0, guard, slot, generation) in pending {
            let cmd = &cmds[i];
            let deadline = tokio::time::Instant::from_std(t0 + timeout);
            let res = collect(rx, deadline, cmd.path(), timeout).await;
            drop(guard);
            if let Err(e) = &res
                && e.breaks_connection()
            {
                self.invalidate(slot, generation).await;
            }
            let res = res.map_err(|e| self.ctx(e));
            self.observe(cmd, started_at, t0.elapsed(), res.as_ref().map(|_| ()));
            results[i] = Some(res);
        }
        drop(leases);
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(DriverError::new(ErrorCode::Internal, "no result"))))
            .collect()
    }

    /// Runs `cmds` on one connection with at most `window` of them in flight (each tagged),
    /// calling `each(index, result)` as each one completes, in completion order. Bulk work
    /// (the reconciler) uses it: a router across a slow link is kept busy without being
    /// flooded. Commands must not depend on each other's order.
    ///
    /// If the connection fails, the command that saw it and every command not yet answered
    /// or sent get that error (the connection is dropped from the pool; the caller decides
    /// whether to run a new pass).
    pub async fn run_window(
        &self,
        cmds: &[Cmd],
        window: usize,
        mut each: impl FnMut(usize, Result<Vec<Row>, DriverError>),
    ) {
        use futures_util::StreamExt as _;
        use futures_util::stream::FuturesUnordered;

        if cmds.is_empty() {
            return;
        }
        let lease = match self.acquire().await {
            Ok(l) => l,
            Err(e) => {
                let e = self.ctx(e);
                for (i, cmd) in cmds.iter().enumerate() {
                    self.observe(cmd, self.inner.clock.now(), Duration::ZERO, Err(&e));
                    each(i, Err(e.clone()));
                }
                return;
            }
        };
        let timeout = self.inner.config.command_timeout;
        let window = window.max(1);
        let mut running = FuturesUnordered::new();
        let mut next = 0;
        let mut broken: Option<DriverError> = None;
        loop {
            while broken.is_none() && next < cmds.len() && running.len() < window {
                let cmd = &cmds[next];
                let started_at = self.inner.clock.now();
                let t0 = Instant::now();
                let guard = LoadGuard::new(&lease.live.load);
                match lease.live.device.send_command(cmd.build()).await {
                    Ok(rx) => {
                        let i = next;
                        let deadline = tokio::time::Instant::from_std(t0 + timeout);
                        running.push(async move {
                            let res = collect(rx, deadline, cmd.path(), timeout).await;
                            drop(guard);
                            (i, res, started_at, t0)
                        });
                    }
                    Err(e) => {
                        let e = self.ctx(from_device(&e));
                        self.observe(cmd, started_at, t0.elapsed(), Err(&e));
                        each(next, Err(e.clone()));
                        broken = Some(e);
                    }
                }
                next += 1;
            }
            let Some((i, res, started_at, t0)) = running.next().await else {
                break;
            };
            if let Err(e) = &res
                && e.breaks_connection()
                && broken.is_none()
            {
                broken = Some(self.ctx(e.clone()));
            }
            let res = res.map_err(|e| self.ctx(e));
            self.observe(&cmds[i], started_at, t0.elapsed(), res.as_ref().map(|_| ()));
            each(i, res);
        }
        if let Some(e) = broken {
            self.invalidate(lease.slot, lease.live.generation).await;
            // Never sent: nothing reached the router, so they are not audited as run.
            for i in next..cmds.len() {
                each(i, Err(e.clone()));
            }
        }
    }

    /// Asks the router whether a newer RouterOS exists (`check-for-updates`, then reads
    /// `status` / `latest-version`). Never fails: a failed check says so in `error`.
    pub async fn check_for_updates(&self) -> UpdateCheck {
        let mut out = UpdateCheck {
            installed: None,
            latest: None,
            status: None,
            available: false,
            error: None,
        };
        if let Err(e) = self
            .run(Cmd::new("/system/package/update/check-for-updates"))
            .await
        {
            out.error = Some(e.to_string());
        }
        match self.run(Cmd::new("/system/package/update/print")).await {
            Ok(rows) => {
                let row = rows.into_iter().next().unwrap_or_default();
                out.installed = row.get("installed-version").cloned();
                out.latest = row.get("latest-version").cloned().filter(|v| !v.is_empty());
                out.status = row.get("status").cloned();
            }
            Err(e) => {
                out.error.get_or_insert_with(|| e.to_string());
            }
        }
        let status = out.status.as_deref().unwrap_or("").to_ascii_lowercase();
        if status.starts_with("error") {
            out.error
                .get_or_insert_with(|| out.status.clone().unwrap_or_default());
        }
        let newer = match (&out.installed, &out.latest) {
            (Some(i), Some(l)) => match (RosVersion::parse(i), RosVersion::parse(l)) {
                (Ok(i), Ok(l)) => i.is_older_than(&l),
                _ => false,
            },
            _ => false,
        };
        out.available = status.contains("new version is available") || newer;
        out
    }

    fn read_version(&self) -> std::sync::RwLockReadGuard<'_, (RosVersion, Capabilities)> {
        self.inner
            .version
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn ctx(&self, e: DriverError) -> DriverError {
        let ep = &self.inner.endpoint;
        if e.message().starts_with("router ") {
            return e;
        }
        e.context(format_args!(
            "router {} ({}:{})",
            ep.name, ep.host, ep.api_port
        ))
    }

    fn observe(
        &self,
        cmd: &Cmd,
        started_at: tikfleet_shared::UnixMillis,
        duration: Duration,
        res: Result<(), &DriverError>,
    ) {
        self.emit(cmd.path(), cmd.audit_params(), started_at, duration, res);
    }

    fn emit(
        &self,
        action: &str,
        params: AuditParams,
        started_at: tikfleet_shared::UnixMillis,
        duration: Duration,
        res: Result<(), &DriverError>,
    ) {
        let ev = CommandEvent {
            router_id: self.inner.endpoint.id,
            tenant_id: self.inner.endpoint.tenant,
            action: action.to_owned(),
            params,
            status: if res.is_ok() {
                AuditStatus::Succeeded
            } else {
                AuditStatus::Failed
            },
            error: res.err().map(DriverError::to_info),
            started_at,
            duration,
        };
        self.inner.observer.observe_owned(ev);
    }

    /// Lends a connection: an idle live one, else a new one in an empty slot, else the least
    /// busy live one; waits for a slot that is connecting only when nothing else is free.
    async fn acquire(&self) -> Result<Lease, DriverError> {
        let slots = &self.inner.slots;
        let mut best: Option<(usize, Live, usize)> = None;
        let mut empty = None;
        for (i, slot) in slots.iter().enumerate() {
            let Ok(guard) = slot.try_lock() else { continue };
            match &*guard {
                Some(live) => {
                    let load = live.load.load(Ordering::SeqCst);
                    if load == 0 {
                        return Ok(Lease {
                            slot: i,
                            live: live.clone(),
                        });
                    }
                    if best.as_ref().is_none_or(|(_, _, l)| load < *l) {
                        best = Some((i, live.clone(), load));
                    }
                }
                None => {
                    if empty.is_none() {
                        empty = Some(i);
                    }
                }
            }
        }
        let i = match (empty, best) {
            (Some(i), _) => i,
            (None, Some((slot, live, _))) => return Ok(Lease { slot, live }),
            // Every slot is connecting: wait for the first.
            (None, None) => 0,
        };
        let mut guard = slots[i].lock().await;
        if let Some(live) = &*guard {
            return Ok(Lease {
                slot: i,
                live: live.clone(),
            });
        }
        let device = self.open().await?;
        let live = Live {
            device,
            generation: self.inner.generation.fetch_add(1, Ordering::SeqCst),
            load: Arc::new(AtomicUsize::new(0)),
        };
        *guard = Some(live.clone());
        Ok(Lease { slot: i, live })
    }

    async fn invalidate(&self, slot: usize, generation: u64) {
        let mut guard = self.inner.slots[slot].lock().await;
        if guard.as_ref().is_some_and(|l| l.generation == generation) {
            *guard = None;
            tracing::debug!(router = %self.inner.endpoint.name, slot, "dropped a failed connection");
        }
    }

    /// Opens, logs in and checks the version, within the connect timeout.
    async fn open(&self) -> Result<MikrotikDevice, DriverError> {
        let timeout = self.inner.config.connect_timeout;
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + timeout);
        let ep = &self.inner.endpoint;
        let started_at = self.inner.clock.now();
        let login = async {
            let addr = (ep.host.as_str(), ep.api_port);
            let builder =
                MikrotikDevice::builder(addr).credentials(&ep.username, Some(ep.password.expose()));
            let res = match &self.inner.tls {
                None => builder.connect().await,
                Some((config, name)) => {
                    builder
                        .tls_config(config.clone(), name.clone())
                        .connect()
                        .await
                }
            };
            res.map_err(|e| match from_device(&e) {
                // Closed or reset before the login was answered: a router whose API service
                // is disabled or restricted by address does exactly that.
                e if e.code() == ErrorCode::ConnectionReset => DriverError::new(
                    ErrorCode::ConnectionRefused,
                    format!(
                        "the router closed the connection before login; check that the API \
                         service is enabled and allows the agent's address (/ip/service): {}",
                        e.message()
                    ),
                ),
                e => e,
            })
        };
        let res = match tokio::time::timeout_at(deadline, login).await {
            Ok(r) => r,
            Err(_) => Err(DriverError::timeout("connecting and logging in", timeout)),
        };
        let mut params = AuditParams::new();
        params.insert("name", ep.username.clone());
        params.insert_secret("password", &ep.password);
        self.emit(
            "/login",
            params,
            started_at,
            started.elapsed(),
            res.as_ref().map(|_| ()),
        );
        let device = res?;
        self.inner.connects.fetch_add(1, Ordering::SeqCst);
        tracing::debug!(router = %ep.name, "logged in");

        let cmd = Cmd::new("/system/resource/print").proplist(&["version"]);
        let started_at = self.inner.clock.now();
        let t0 = Instant::now();
        let res = match device.send_command(cmd.build()).await {
            Ok(rx) => collect(rx, deadline, cmd.path(), timeout).await,
            Err(e) => Err(from_device(&e)),
        };
        self.observe(&cmd, started_at, t0.elapsed(), res.as_ref().map(|_| ()));
        let rows = res?;
        let text = rows.first().and_then(|r| r.get("version")).ok_or_else(|| {
            DriverError::new(
                ErrorCode::RouterError,
                "/system/resource did not report a version",
            )
        })?;
        let version = RosVersion::parse(text)?;
        version.check_supported()?;
        let caps = Capabilities::for_version(&version);
        *self
            .inner
            .version
            .write()
            .unwrap_or_else(PoisonError::into_inner) = (version, caps);
        Ok(device)
    }
}

/// Collects one command's replies until it ends, fails or runs out of time.
async fn collect(
    mut rx: UnboundedReceiver<Event>,
    deadline: tokio::time::Instant,
    path: &str,
    timeout: Duration,
) -> Result<Vec<Row>, DriverError> {
    let mut rows = Vec::new();
    loop {
        let event = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(e) => e,
            // Dropping `rx` makes mikrotik-rs send `/cancel` for the command.
            Err(_) => return Err(DriverError::timeout(path, timeout)),
        };
        match event {
            Some(Event::Reply { response, .. }) => rows.push(
                response
                    .attributes
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default()))
                    .collect(),
            ),
            // mikrotik-rs ends a command at `!empty` (7.18+) and drops the `!done` after it.
            Some(Event::Done { .. } | Event::Empty { .. }) => return Ok(rows),
            // A `!trap` ends the command in mikrotik-rs; the router's `!done` is ignored.
            Some(Event::Trap { response, .. }) => {
                return Err(classify_trap(&response.message, response.category)
                    .context(format_args!("{path}")));
            }
            Some(Event::Fatal { reason }) => return Err(DriverError::fatal(&reason)),
            None => return Err(DriverError::reset(path)),
        }
    }
}
