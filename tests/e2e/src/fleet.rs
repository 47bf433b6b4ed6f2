//! The whole fleet on loopback, for end-to-end tests: a controller ([`Controller`], the real
//! `Server` with its API and hub, on SQLite in a temp folder or on a fresh PostgreSQL
//! database), agents ([`Agent`], the real `tikfleet-agent` commands run in-process, each on
//! its own runtime and data folder, enrolled through the API), simulated routers
//! ([`Sim`]), and staff talking to the API over HTTP ([`Api`]).
//!
//! Nothing here sleeps to wait for something: [`eventually`] polls a condition with a
//! deadline, and every wait has one.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::Parser as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tikfleet_agent::cli::{Cli, CliError, run_local};
use tikfleet_controller::clock::{ManualClock, SharedClock};
use tikfleet_controller::server::{Server, ServerConfig};
use tikfleet_shared::UnixMillis;
use tokio::sync::oneshot;

use crate::proxy::Proxy;

/// The variable naming a PostgreSQL server for the PostgreSQL pass (as in the controller's
/// own tests): each controller then gets a fresh database on it.
pub const PG_ENV: &str = "TIKFLEET_TEST_DATABASE_URL";

/// 2026-01-01T00:00:00Z: the controller's (manual) clock.
pub const T0: UnixMillis = UnixMillis(1_767_225_600_000);

/// Polls `check` until it returns `Some`, at most `limit`; panics naming `what` otherwise.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        // A short pause between polls of a condition in another process-like component
        // (the controller's database, a router's tables): the deadline bounds the wait.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the sample `name` in an OpenMetrics text: the metric's name with its labels
/// as printed (`tikfleet_agent_outbox_last_seq`, `tikfleet_jobs{status="failed"}`).
#[must_use]
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// A fresh PostgreSQL database's URL when [`PG_ENV`] names a server; `None` (SQLite in the
/// controller's data folder) otherwise.
pub async fn test_database_url() -> Option<String> {
    let server = std::env::var(PG_ENV).ok().filter(|s| !s.is_empty())?;
    sqlx::any::install_default_drivers();
    let name = format!("tf_e2e_{}", uuid::Uuid::now_v7().simple());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&server)
        .await
        .expect("the PostgreSQL server of TIKFLEET_TEST_DATABASE_URL answers");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("a fresh database");
    let (base, query) = server
        .split_once('?')
        .map_or((server.as_str(), None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    Some(match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    })
}

/// Staff's HTTP client for one controller's API.
#[derive(Clone, Debug)]
pub struct Api {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The token used.
    pub token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: String, token: String) -> Self {
        Self {
            base,
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    /// The same API with another token.
    #[must_use]
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: token.to_owned(),
            ..self.clone()
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("the API answers");
        let status = resp.status();
        let text = resp.text().await.expect("a body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    /// `POST path` without a body.
    pub async fn post_empty(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)))
            .await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.patch(format!("{}{path}", self.base)).json(&body))
            .await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }

    /// `POST path`, which must answer `expected`; returns the body.
    pub async fn ok(&self, expected: StatusCode, path: &str, body: Value) -> Value {
        let (status, v) = self.post(path, body).await;
        assert_eq!(status, expected, "POST {path}: {v}");
        v
    }

    /// Every item of a list endpoint, following the cursors.
    pub async fn all(&self, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("{path}{sep}limit=500&cursor={c}"),
                None => format!("{path}{sep}limit=500"),
            };
            let (status, v) = self.get(&url).await;
            assert_eq!(status, StatusCode::OK, "GET {url}: {v}");
            items.extend(v["items"].as_array().expect("items").iter().cloned());
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return items,
            }
        }
    }

    /// The whole audit log.
    pub async fn audit(&self) -> Vec<Value> {
        self.all("/api/v1/audit").await
    }

    /// A job.
    pub async fn job(&self, id: &str) -> Value {
        let (status, v) = self.get(&format!("/api/v1/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }

    /// Waits until every job the controller has is `succeeded`; returns them.
    pub async fn all_jobs_succeed(&self, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let jobs = self.all("/api/v1/jobs").await;
            if jobs.iter().all(|j| j["status"] == "succeeded") {
                return jobs;
            }
            if Instant::now() >= deadline {
                let pending: Vec<&Value> = jobs
                    .iter()
                    .filter(|j| j["status"] != "succeeded")
                    .take(5)
                    .collect();
                let n = jobs.iter().filter(|j| j["status"] != "succeeded").count();
                panic!("gave up waiting for every job to succeed: {n} did not, e.g. {pending:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How the controller's hub is reached by agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HubPath {
    /// Agents dial the hub's own address; a restart binds the same address again.
    Direct,
    /// Agents dial a fault-injecting proxy in front of the hub.
    Proxied,
}

/// A controller: the real `Server` on loopback, restartable on the same data folder and
/// database.
pub struct Controller {
    server: Option<Server>,
    config: ServerConfig,
    clock: ManualClock,
    /// The fault-injecting proxy agents dial, with [`HubPath::Proxied`].
    pub proxy: Option<Proxy>,
    /// The first admin's API client.
    pub admin: Api,
    /// The database URL (a PostgreSQL database or the SQLite file).
    pub database_url: String,
    dir: tempfile::TempDir,
}

impl Controller {
    /// Starts a controller on a fresh data folder (and a fresh PostgreSQL database in the
    /// PostgreSQL pass).
    pub async fn start(path: HubPath) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut config = ServerConfig::local(dir.path());
        config.database_url = test_database_url().await;
        let database_url = config
            .database_url
            .clone()
            .unwrap_or_else(|| tikfleet_controller::db::sqlite_url(dir.path()));
        let proxy = match path {
            HubPath::Direct => None,
            HubPath::Proxied => {
                // The proxy exists before the hub, so enrollment can name it; it is pointed
                // at the hub once the hub is bound.
                let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], 9)))
                    .await
                    .expect("proxy");
                config.hub_url = Some(format!("wss://127.0.0.1:{}/agent", proxy.addr().port()));
                Some(proxy)
            }
        };
        let clock = ManualClock::new(T0);
        let server = Server::start(config.clone(), Arc::new(clock.clone()) as SharedClock)
            .await
            .expect("the controller starts");
        let token = server
            .new_admin_token
            .clone()
            .expect("a first admin token on a fresh database");
        // Restarts bind the same hub address, so enrolled agents' hub URL stays valid.
        config.hub_listen = server.hub_addr;
        if let Some(proxy) = &proxy {
            proxy.set_target(server.hub_addr);
        }
        Self {
            admin: Api::new(server.api_url(), token),
            server: Some(server),
            config,
            clock,
            proxy,
            database_url,
            dir,
        }
    }

    /// The running server.
    #[must_use]
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("the controller runs")
    }

    /// The controller's data folder.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The controller's clock.
    #[must_use]
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// Stops the API and the hub and closes the database.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// Starts again on the same data folder, database and hub address (the API gets a new
    /// port; [`Controller::admin`] follows it).
    pub async fn restart(&mut self) {
        self.stop().await;
        let server = Server::start(
            self.config.clone(),
            Arc::new(self.clock.clone()) as SharedClock,
        )
        .await
        .expect("the controller starts again");
        assert!(server.new_admin_token.is_none(), "the same database");
        self.admin.base = server.api_url();
        self.server = Some(server);
    }

    /// A tenant and an operator token in it: `(tenant id, operator API)`. Its backup
    /// schedule is off — the harness's simulated routers have no SSH, so a backup would fail
    /// — until a test turns it on (`PUT /api/v1/tenants/{id}/backups`); backups by hand work.
    pub async fn tenant(&self, name: &str) -> (String, Api) {
        let t = self
            .admin
            .ok(
                StatusCode::CREATED,
                "/api/v1/tenants",
                json!({ "name": name }),
            )
            .await;
        let id = t["id"].as_str().expect("tenant id").to_owned();
        let tok = self
            .admin
            .ok(
                StatusCode::CREATED,
                &format!("/api/v1/tenants/{id}/tokens"),
                json!({"role": "operator", "name": format!("{name}-ops")}),
            )
            .await;
        let token = tok["token"].as_str().expect("token").to_owned();
        let ops = self.admin.with_token(&token);
        let (st, v) = ops
            .put(
                &format!("/api/v1/tenants/{id}/backups"),
                json!({"schedule": {"enabled": false}}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        (id, ops)
    }

    /// The first column of the first row of `sql` (an integer or NULL), read straight from
    /// the database; for what the API does not show.
    pub async fn scalar(&self, sql: &str) -> Option<i64> {
        use sqlx::Row as _;
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&self.database_url)
            .await
            .expect("the database opens");
        sqlx::query(sql)
            .fetch_one(&mut conn)
            .await
            .expect("a row")
            .get::<Option<i64>, _>(0)
    }

    /// Reads the agent-reported audit rows' outbox seqs and the agent's committed seq
    /// straight from the database (the API does not show seqs).
    pub async fn agent_audit_seqs(&self, agent: &str) -> (Vec<i64>, i64) {
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&self.database_url)
            .await
            .expect("the database opens");
        use sqlx::Row as _;
        let agent: uuid::Uuid = agent.parse().expect("an agent id");
        // The agent's own records carry their outbox seq; rows the controller writes from a
        // drift report (one per finding) carry none.
        let seqs: Vec<i64> = sqlx::query(&format!(
            "SELECT seq FROM audit WHERE agent_id = '{agent}' AND seq IS NOT NULL ORDER BY seq"
        ))
        .fetch_all(&mut conn)
        .await
        .expect("audit seqs")
        .iter()
        .map(|r| r.get::<i64, _>(0))
        .collect();
        let committed: i64 = sqlx::query(&format!(
            "SELECT records_committed FROM agents WHERE id = '{agent}'"
        ))
        .fetch_one(&mut conn)
        .await
        .expect("the agent")
        .get(0);
        (seqs, committed)
    }
}

/// What a running agent prints, shared with the thread that runs it.
#[derive(Clone, Debug, Default)]
pub struct Output(Arc<Mutex<Vec<u8>>>);

impl Output {
    /// Everything written so far.
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `tikfleet-agent run` running in-process on its own thread and runtime, as its own process
/// would.
#[derive(Debug)]
pub struct RunningAgent {
    /// What it printed so far.
    pub output: Output,
    stop: Option<oneshot::Sender<()>>,
    done: oneshot::Receiver<Result<(), String>>,
}

impl RunningAgent {
    /// The agent's Prometheus endpoint, from its "running" line.
    #[must_use]
    pub fn metrics_url(&self) -> Option<String> {
        let text = self.output.text();
        let start = text.find("metrics http://")? + "metrics ".len();
        let url: String = text[start..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != ',')
            .collect();
        Some(url)
    }

    /// The agent's metrics text, read now.
    pub async fn metrics(&self) -> String {
        let url = self.metrics_url().expect("the agent serves metrics");
        reqwest::get(&url)
            .await
            .expect("the metrics endpoint answers")
            .text()
            .await
            .expect("a body")
    }

    /// Stops it (as SIGTERM does) and returns what it printed, or its error.
    pub async fn stop(mut self) -> Result<String, String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(30), &mut self.done)
            .await
            .expect("the agent stops in time")
            .expect("the agent's thread ends");
        result.map(|()| self.output.text())
    }
}

/// One agent: a data folder, a configuration file, and the commands run on it.
#[derive(Debug)]
pub struct Agent {
    /// The agent's id at the controller (after [`Agent::enroll`]).
    pub id: String,
    dir: tempfile::TempDir,
    config: PathBuf,
}

/// Agent settings the tests change.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    /// Largest reconnect backoff step, ms.
    pub reconnect_max_ms: u64,
    /// `[limits] router_concurrency`.
    pub router_concurrency: usize,
    /// `[retry] max_attempts`.
    pub max_attempts: u32,
    /// `[probes] interval_secs`: health probes every that many seconds of the agent's clock;
    /// `None` (the default) turns probes off.
    pub probe_interval_secs: Option<u64>,
    /// `[outbox] max_telemetry`: `None` keeps the agent's default cap.
    pub max_telemetry: Option<u64>,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            reconnect_max_ms: 2_000,
            router_concurrency: 4,
            max_attempts: 3,
            probe_interval_secs: None,
            max_telemetry: None,
        }
    }
}

impl Agent {
    /// A fresh data folder with a configuration: reconnects capped at
    /// `settings.reconnect_max_ms`, router rate limits high enough for thousands of jobs,
    /// health probes off unless `settings.probe_interval_secs` says (their reads are not
    /// audited, and tests compare the commands a router saw with the audit log), the
    /// outbox's telemetry cap from `settings.max_telemetry` if given.
    #[must_use]
    pub fn new(settings: &AgentSettings) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = dir.path().join("agent.toml");
        let probes = match settings.probe_interval_secs {
            Some(secs) => format!("interval_secs = {secs}\n"),
            None => "enabled = false\n".to_owned(),
        };
        let outbox = settings
            .max_telemetry
            .map(|n| format!("[outbox]\nmax_telemetry = {n}\n\n"))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n\n[limits]\nrouter_commands_per_second = 5000\nrouter_burst = 5000\n\
                 tenant_commands_per_second = 5000\ntenant_burst = 5000\nrouter_concurrency = {}\n\n\
                 [retry]\nmax_attempts = {}\n\n[probes]\n{probes}\n{outbox}\
                 [uplink]\nreconnect_min_ms = 200\nreconnect_max_ms = {}\n\n\
                 [metrics]\nlisten = \"127.0.0.1:0\"\n",
                dir.path().join("data").display().to_string(),
                settings.router_concurrency,
                settings.max_attempts,
                settings.reconnect_max_ms,
            ),
        )
        .expect("the agent's configuration");
        Self {
            id: String::new(),
            dir,
            config,
        }
    }

    /// The agent's data folder.
    #[must_use]
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn cli(&self, args: &[&str]) -> Cli {
        let config = self.config.display().to_string();
        Cli::try_parse_from(
            ["tikfleet-agent", "--config", config.as_str()]
                .into_iter()
                .chain(args.iter().copied()),
        )
        .expect("a valid command line")
    }

    /// Runs one command to its end: what it printed, or its error as the binary prints it.
    pub async fn command(&self, args: &[&str]) -> Result<String, String> {
        let cli = self.cli(args);
        let mut out = Output::default();
        let result = tokio::time::timeout(
            Duration::from_secs(60),
            run_local(&cli, &mut out, std::future::pending()),
        )
        .await
        .expect("the command finishes in time");
        result
            .map(|()| out.text())
            .map_err(|e: CliError| e.to_string())
    }

    /// Enrolls through the controller's API with a fresh enrollment token of `tenant`.
    pub async fn enroll(&mut self, api: &Api, tenant: &str, name: &str) -> String {
        let token = api
            .ok(
                StatusCode::CREATED,
                &format!("/api/v1/tenants/{tenant}/enrollment-tokens"),
                json!({"ttl_secs": 3600}),
            )
            .await["token"]
            .as_str()
            .expect("token")
            .to_owned();
        let out = self
            .command(&[
                "enroll",
                "--controller",
                &api.base,
                "--token",
                &token,
                "--name",
                name,
            ])
            .await
            .expect("enrolled");
        assert!(out.starts_with("enrolled: agent "), "{out}");
        self.id = out
            .split_whitespace()
            .nth(2)
            .expect("the agent id")
            .to_owned();
        token
    }

    /// The usual start of a test: an agent with the default settings, enrolled in `tenant`
    /// as `site-1`, running on the system clock, and connected (the controller shows it).
    pub async fn running(api: &Api, tenant: &str) -> (Self, RunningAgent) {
        let mut agent = Self::new(&AgentSettings::default());
        agent.enroll(api, tenant, "site-1").await;
        let running = agent.start();
        connected(api, &agent.id).await;
        (agent, running)
    }

    /// Starts `run` on its own thread and runtime.
    #[must_use]
    pub fn start(&self) -> RunningAgent {
        self.start_with_clock(Arc::new(tikfleet_agent::clock::SystemClock))
    }

    /// Starts `run` on `clock` (e.g. the controller's manual clock, so one test moves the
    /// time of both).
    #[must_use]
    pub fn start_with_clock(&self, clock: SharedClock) -> RunningAgent {
        let cli = self.cli(&["run"]);
        let output = Output::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let (done_tx, done) = oneshot::channel();
        let mut out = output.clone();
        std::thread::Builder::new()
            .name(format!("agent-{}", self.id))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a runtime");
                let result = runtime.block_on(tikfleet_agent::cli::run_local_with_clock(
                    &cli,
                    &mut out,
                    async {
                        let _ = stopped.await;
                    },
                    clock,
                ));
                // The runtime's leftover tasks may still hold the agent's store: shut it down
                // before saying the agent stopped, so a restart on the same data folder
                // finds it free (as after a process exit).
                runtime.shutdown_timeout(Duration::from_secs(10));
                let _ = done_tx.send(result.map_err(|e| e.to_string()));
            })
            .expect("the agent's thread");
        RunningAgent {
            output,
            stop: Some(stop),
            done,
        }
    }

    /// The agent's outbox (with the agent stopped): `(last seq assigned, acked)`.
    pub fn outbox(&self) -> (u64, u64) {
        let store = tikfleet_agent::store::Store::open(&tikfleet_agent::store::StoreConfig::new(
            self.data_dir().join("store"),
        ))
        .expect("the agent's store opens (the agent is stopped)");
        let outbox = tikfleet_agent::outbox::Outbox::open(
            &store,
            tikfleet_agent::outbox::OutboxConfig::default(),
        )
        .expect("the outbox");
        let stats = outbox.stats();
        (stats.last_seq, stats.acked)
    }
}

/// Simulated routers.
pub struct Sim {
    /// The simulator.
    pub running: tikfleet_sim::Running,
}

/// One row of a router menu, by field name.
pub type Row = BTreeMap<String, String>;

impl Sim {
    /// `n` routers (admin/admin); clients that lose their session redial only after a
    /// minute, so a disconnect stays visible.
    pub async fn start(n: usize) -> Self {
        Self::start_version(n, "7.16.2").await
    }

    /// [`Sim::start`] simulating RouterOS `version` (`7.16.2`, `6.49.10`, …).
    pub async fn start_version(n: usize, version: &str) -> Self {
        let running = tikfleet_sim::start(tikfleet_sim::Config {
            routers: n,
            redial: Duration::from_secs(60),
            ssh: None,
            api_ssl: None,
            version: version.to_owned(),
            ..tikfleet_sim::Config::local()
        })
        .await
        .expect("the simulator starts");
        Self { running }
    }

    /// Router `i`'s API address.
    #[must_use]
    pub fn api(&self, i: usize) -> SocketAddr {
        self.running.routers[i].api.expect("api listener")
    }

    /// The rows of a menu of router `i`, keyed by name.
    #[must_use]
    pub fn menu(&self, i: usize, path: &str) -> BTreeMap<String, Row> {
        let router = self.running.router(i);
        let mut dev = tikfleet_sim::router::lock(&router.device);
        let now = Instant::now();
        dev.tick(now);
        dev.menu_rows(path, now)
            .expect("a menu")
            .into_iter()
            .map(|row| {
                let row: Row = row.into_iter().collect();
                (row.get("name").cloned().unwrap_or_default(), row)
            })
            .collect()
    }

    /// Commands router `i` saw, per command word.
    #[must_use]
    pub fn commands(&self, i: usize) -> BTreeMap<String, u64> {
        let router = self.running.router(i);
        let stats = tikfleet_sim::router::lock(&router.stats);
        stats.view(None, Instant::now()).by_path
    }

    /// Connections router `i` was asked for, refused ones included.
    #[must_use]
    pub fn connections(&self, i: usize) -> u64 {
        let router = self.running.router(i);
        tikfleet_sim::router::lock(&router.stats).connections
    }

    /// A subscriber's CPE dials in (PPPoE or hotspot) on router `i`.
    pub fn dial(&self, i: usize, service: &str, name: &str, password: &str) {
        let service = match service {
            "pppoe" => tikfleet_sim::sessions::Service::Pppoe,
            _ => tikfleet_sim::sessions::Service::Hotspot,
        };
        let router = self.running.router(i);
        let mut dev = tikfleet_sim::router::lock(&router.device);
        dev.start_client(service, name, password, None, Instant::now())
            .unwrap_or_else(|e| panic!("{name} cannot dial: {e}"));
    }

    /// A subscriber's CPE hangs up for good (no redial).
    pub fn hang_up(&self, i: usize, service: &str, name: &str) {
        let service = match service {
            "pppoe" => tikfleet_sim::sessions::Service::Pppoe,
            _ => tikfleet_sim::sessions::Service::Hotspot,
        };
        let router = self.running.router(i);
        let mut dev = tikfleet_sim::router::lock(&router.device);
        dev.stop_client(service, name, Instant::now());
    }

    /// Applies faults to router `i` (the control endpoint's `PUT /routers/{i}/faults`).
    pub fn faults(&self, i: usize, patch: Value) {
        let patch: tikfleet_sim::faults::FaultsPatch =
            serde_json::from_value(patch).expect("a faults patch");
        let router = self.running.router(i);
        tikfleet_sim::router::lock(&router.faults).apply(patch);
    }
}

/// Adds router `i` of `sim` to the controller for `agent`; returns its id.
pub async fn add_router(api: &Api, sim: &Sim, i: usize, agent: &str, name: &str) -> String {
    let addr = sim.api(i);
    let r = api
        .ok(
            StatusCode::CREATED,
            "/api/v1/routers",
            json!({
                "agent_id": agent, "name": name, "address": addr.ip().to_string(),
                "api_port": addr.port(), "tls": {"mode": "plain"},
                "username": "admin", "password": "admin",
            }),
        )
        .await;
    r["id"].as_str().expect("router id").to_owned()
}

impl Api {
    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.put(format!("{}{path}", self.base)).json(&body))
            .await
    }

    /// Waits until job `id` finished (`succeeded`, `failed` or `cancelled`); returns it.
    pub async fn job_finished(&self, id: &str, limit: Duration) -> Value {
        eventually(&format!("job {id} to finish"), limit, || async {
            let job = self.job(id).await;
            matches!(
                job["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
            .then_some(job)
        })
        .await
    }
}

/// A RouterOS API client of router `i` of `sim`, logged in as its administrator
/// (admin/admin): for changes made on the router by hand, behind tikfleet's back.
pub async fn admin_client(sim: &Sim, i: usize) -> tikfleet_agent::routeros::RouterOsClient {
    let addr = sim.api(i);
    let endpoint = tikfleet_agent::router::RouterEndpoint {
        id: tikfleet_shared::RouterId::new(),
        tenant: tikfleet_shared::TenantId::new(),
        name: format!("by-hand-{i}"),
        host: addr.ip().to_string(),
        api_port: addr.port(),
        ssh_port: 22,
        tls: tikfleet_agent::router::TlsMode::Plain,
        username: "admin".into(),
        password: tikfleet_shared::Secret::new("admin"),
    };
    tikfleet_agent::routeros::RouterOsClient::connect(
        endpoint,
        tikfleet_agent::routeros::DriverConfig::default(),
        Arc::new(tikfleet_agent::clock::SystemClock),
        Arc::new(tikfleet_agent::routeros::NoopObserver),
    )
    .await
    .expect("the router's administrator logs in")
}

// ---------------------------------------------------------------------------------------
// Steps the fleet and drift scenarios share

/// The longest any wait for the fleet to settle may take.
pub const SETTLE: Duration = Duration::from_secs(60);

/// Runs a test body within `limit`.
pub async fn within<F: std::future::Future<Output = ()>>(limit: Duration, f: F) {
    tokio::time::timeout(limit, f)
        .await
        .expect("test timed out");
}

/// Waits until the controller shows the agent connected.
pub async fn connected(api: &Api, agent: &str) {
    eventually("the agent to connect", SETTLE, || async {
        let (status, v) = api.get(&format!("/api/v1/agents/{agent}")).await;
        (status == StatusCode::OK && v["connected"] == true).then_some(())
    })
    .await;
}

/// A plan; returns its id.
pub async fn plan(api: &Api, name: &str, rate: &str) -> String {
    api.ok(
        StatusCode::CREATED,
        "/api/v1/plans",
        json!({"name": name, "rate_limit": rate}),
    )
    .await["id"]
        .as_str()
        .expect("plan id")
        .to_owned()
}

/// A subscriber of `service` (`pppoe`, `hotspot`); returns its id.
pub async fn subscriber(
    api: &Api,
    router: &str,
    plan: &str,
    name: &str,
    password: &str,
    service: &str,
) -> String {
    api.ok(
        StatusCode::CREATED,
        "/api/v1/subscribers",
        json!({
            "username": name, "password": password, "plan_id": plan, "router_id": router,
            "service": service, "expires_at": "2030-01-01T00:00:00Z",
        }),
    )
    .await["id"]
        .as_str()
        .expect("subscriber id")
        .to_owned()
}

/// Waits until the agent stored the router's latest desired state and its reconciler
/// applied it; returns the sync view.
pub async fn synced(api: &Api, router: &str) -> Value {
    eventually(
        "the agent to store and apply the desired state",
        SETTLE,
        || async {
            let (status, v) = api.get(&format!("/api/v1/routers/{router}/sync")).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            (v["desired_generation"] == v["stored_generation"]
                && v["desired_generation"] == v["applied_generation"]
                && v["in_sync"] == true)
                .then_some(v)
        },
    )
    .await
}

/// Drift items of `router`: `status` `None` for the default list (open and enforcing),
/// `Some("all")` for every one.
pub async fn drift_items(api: &Api, router: &str, status: Option<&str>) -> Vec<Value> {
    let path = match status {
        Some(s) => format!("/api/v1/drift?router_id={router}&status={s}"),
        None => format!("/api/v1/drift?router_id={router}"),
    };
    api.all(&path).await
}
