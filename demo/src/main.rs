//! `tikfleet-demo`: a whole fleet on one machine, for a first look.
//!
//! It starts three simulated RouterOS routers, the controller on SQLite in a data folder, and
//! an agent that enrolls with a one-time token exactly as a site box would; then, through the
//! controller's HTTP API (as staff would), it creates a demo tenant, its routers, plans and
//! subscribers, and waits until the agent has applied every job on the routers. It prints the
//! API's URL, an admin token and the routers' addresses and login, and runs until Ctrl-C,
//! which stops everything cleanly. Nothing is shared in-process that a real deployment would
//! not send over the network: the agent reaches the controller over the hub's WebSocket
//! (TLS) and the routers over the RouterOS API.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::{Value, json};
use tikfleet_clock::{SharedClock, SystemClock};
use tikfleet_controller::server::{Server, ServerConfig};

/// Marks a data folder as the demo's own, so a later run may wipe it.
const MARKER: &str = ".tikfleet-demo";

/// Run a whole tikfleet on this machine: controller, agent, simulated routers, demo data.
#[derive(Debug, Parser)]
#[command(name = "tikfleet-demo", version, about)]
struct Args {
    /// Data folder (controller database, agent store). Made fresh on every run; a folder the
    /// demo did not make is never touched.
    #[arg(long, default_value = "tikfleet-demo-data")]
    data: PathBuf,
    /// Where the controller's HTTP API listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the controller's agent hub listens.
    #[arg(long, default_value = "127.0.0.1:7443")]
    hub_listen: SocketAddr,
    /// API address of the first simulated router (router i listens on port + i; API-SSL on
    /// port + 100 + i, SSH on port + 194 + i).
    #[arg(long, default_value = "127.0.0.1:18728")]
    router_api: SocketAddr,
    /// The simulated routers' control endpoint (fault injection, see tests/sim/README.md).
    #[arg(long, default_value = "127.0.0.1:18080")]
    router_control: SocketAddr,
    /// Simulated routers.
    #[arg(long, default_value_t = 3)]
    routers: usize,
    /// Subscribers created on each router.
    #[arg(long, default_value_t = 8)]
    subscribers: usize,
}

fn offset(addr: SocketAddr, by: u16) -> SocketAddr {
    SocketAddr::new(addr.ip(), addr.port().saturating_add(by))
}

/// Makes `dir` fresh: removes it if an earlier demo made it, refuses anything else.
fn fresh_folder(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        if !dir.join(MARKER).exists() {
            bail!(
                "{} exists and was not made by the demo; choose another folder with --data",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "made by tikfleet-demo; removed by its next run\n",
    )?;
    Ok(())
}

/// A staff client of the controller's API.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}: the controller did not answer"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{method} {path}: {status}: {}",
                body["error"]["message"].as_str().unwrap_or("no message")
            );
        }
        Ok(body)
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    /// Every item of a list endpoint, following cursors.
    async fn all(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let page = match &cursor {
                Some(c) => {
                    self.get(&format!("{path}{sep}limit=500&cursor={c}"))
                        .await?
                }
                None => self.get(&format!("{path}{sep}limit=500")).await?,
            };
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(items),
            }
        }
    }
}

fn id(v: &Value) -> anyhow::Result<String> {
    v["id"]
        .as_str()
        .map(str::to_owned)
        .context("the controller's answer has no id")
}

/// Runs an agent command in-process, exactly as `tikfleet-agent --data-dir DIR ARGS...`.
async fn agent_command(
    dir: &Path,
    args: &[&str],
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<String> {
    use clap::Parser as _;
    let mut argv = vec!["tikfleet-agent", "--data-dir"];
    let dir = dir.to_string_lossy().into_owned();
    argv.push(&dir);
    argv.extend_from_slice(args);
    let cli = tikfleet_agent::cli::Cli::try_parse_from(argv)?;
    let mut out = Vec::new();
    let result = tikfleet_agent::cli::run_local(&cli, &mut out, shutdown).await;
    let out = String::from_utf8_lossy(&out).into_owned();
    result.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(out)
}

/// Creates the demo tenant and everything in it; returns the number of jobs to wait for.
async fn populate(
    api: &Api,
    args: &Args,
    sim: &tikfleet_sim::Running,
    agent_dir: &Path,
    hub_ready: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let tenant = api.post("/tenants", json!({"name": "Demo ISP"})).await?;
    let tenant_id = id(&tenant)?;
    // Staff of the tenant do the rest, as they would: with an operator token of their own.
    let operator = api
        .post(
            &format!("/tenants/{tenant_id}/tokens"),
            json!({"role": "operator", "name": "demo-operator"}),
        )
        .await?;
    let api = &Api {
        http: api.http.clone(),
        base: api.base.clone(),
        token: operator["token"]
            .as_str()
            .context("no operator token")?
            .to_owned(),
    };
    let enrollment = api
        .post(
            &format!("/tenants/{tenant_id}/enrollment-tokens"),
            json!({}),
        )
        .await?;
    let token = enrollment["token"]
        .as_str()
        .context("no enrollment token")?;
    let enrolled = agent_command(
        agent_dir,
        &[
            "enroll",
            "--controller",
            &api.base,
            "--token",
            token,
            "--name",
            "demo-site",
        ],
        std::future::ready(()),
    )
    .await
    .context("the agent could not enroll")?;
    print!("{enrolled}");
    hub_ready.await;
    let agents = api.get("/agents").await?;
    let agent_id = agents["items"][0]["id"]
        .as_str()
        .context("the enrolled agent is not listed")?
        .to_owned();

    let plans = [
        ("home-10M", "10M/10M"),
        ("home-50M", "50M/20M"),
        ("business-100M", "100M/100M"),
    ];
    let mut plan_ids = Vec::new();
    for (name, rate) in plans {
        let plan = api
            .post("/plans", json!({"name": name, "rate_limit": rate}))
            .await?;
        plan_ids.push(id(&plan)?);
    }
    // A short grace and suspension to a "please renew" profile, so the first subscriber of
    // each router, expiring three minutes from now, shows the whole lifecycle while the demo
    // runs: grace at 3 minutes, suspended at 8 (`GET /subscribers/{id}/lifecycle`).
    api.put(
        &format!("/tenants/{tenant_id}/lifecycle"),
        json!({"grace_period_secs": 300, "suspension_mode": "profile"}),
    )
    .await?;
    let format = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .context("cannot format a time")
    };
    let now = time::OffsetDateTime::now_utc();
    let expires = format(now + time::Duration::days(30))?;
    let expires_soon = format(now + time::Duration::minutes(3))?;
    let bar = indicatif::ProgressBar::new((args.routers * args.subscribers) as u64).with_style(
        indicatif::ProgressStyle::with_template("{msg:28} [{bar:30}] {pos}/{len}")
            .context("progress style")?
            .progress_chars("=> "),
    );
    bar.set_message("creating subscribers");
    for (i, addrs) in sim.routers.iter().enumerate() {
        let api_addr = addrs.api.context("router without API")?;
        let router = api
            .post(
                "/routers",
                json!({
                    "agent_id": agent_id,
                    "name": format!("core-{}", i + 1),
                    "address": api_addr.ip().to_string(),
                    "api_port": api_addr.port(),
                    "ssh_port": addrs.ssh.map_or(22, |a| a.port()),
                    "tls": {"mode": "plain"},
                    "username": "admin",
                    "password": "admin",
                }),
            )
            .await?;
        let router_id = id(&router)?;
        for j in 0..args.subscribers {
            let hotspot = j % 4 == 3;
            api.post(
                "/subscribers",
                json!({
                    "username": format!("{}-{}", if hotspot { "guest" } else { "cust" }, i * 1000 + j + 1),
                    "password": format!("demo-{}-{}", i + 1, j + 1),
                    "plan_id": plan_ids[j % plan_ids.len()],
                    "router_id": router_id,
                    "service": if hotspot { "hotspot" } else { "pppoe" },
                    "expires_at": if j == 0 { &expires_soon } else { &expires },
                }),
            )
            .await?;
            bar.inc(1);
        }
    }
    bar.finish();

    // The agent applies the jobs on the routers; follow them until none is left.
    let jobs = api.all("/jobs").await?;
    let bar = indicatif::ProgressBar::new(jobs.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{msg:28} [{bar:30}] {pos}/{len}")
            .context("progress style")?
            .progress_chars("=> "),
    );
    bar.set_message("agent applying jobs");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let jobs = api.all("/jobs").await?;
        let done = jobs
            .iter()
            .filter(|j| {
                matches!(
                    j["status"].as_str(),
                    Some("succeeded" | "failed" | "cancelled")
                )
            })
            .count();
        bar.set_length(jobs.len() as u64);
        bar.set_position(done as u64);
        if done == jobs.len() {
            let failed = jobs.iter().filter(|j| j["status"] != "succeeded").count();
            bar.finish();
            if failed > 0 {
                eprintln!(
                    "warning: {failed} job(s) did not succeed; see GET /api/v1/jobs?status=failed"
                );
            }
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bar.abandon();
            bail!(
                "the agent did not finish its jobs within 2 minutes ({done} of {} done)",
                jobs.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    fresh_folder(&args.data)?;
    let data = std::fs::canonicalize(&args.data)?;
    let agent_dir = data.join("agent");
    let clock: SharedClock = Arc::new(SystemClock);

    let mut sim_config = tikfleet_sim::Config::local();
    sim_config.api = args.router_api;
    sim_config.api_ssl = Some(offset(args.router_api, 100));
    sim_config.ssh = Some(offset(args.router_api, 194));
    sim_config.control = Some(args.router_control);
    sim_config.routers = args.routers;
    let sim = tikfleet_sim::start(sim_config).await.context(
        "cannot start the simulated routers (is another demo running? try --router-api)",
    )?;

    let mut config = ServerConfig::local(&data.join("controller"));
    config.listen = args.listen;
    config.hub_listen = args.hub_listen;
    let server = Server::start(config, clock).await.context(
        "cannot start the controller (is another one running? try --listen and --hub-listen)",
    )?;
    let admin = server
        .new_admin_token
        .clone()
        .context("the fresh controller made no admin token")?;
    let api = Api {
        http: reqwest::Client::new(),
        base: server.api_url(),
        token: admin.clone(),
    };

    // The agent runs beside everything else until Ctrl-C (it is enrolled first, inside
    // `populate`, then started).
    let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let (enrolled_tx, enrolled_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = async {
        if enrolled_rx.await.is_err() {
            return Ok(String::new());
        }
        agent_command(&agent_dir, &["run"], async {
            let _ = agent_stopped.await;
        })
        .await
    };
    let connected = server.connections().clone();
    let staff = async {
        let mut enrolled_tx = Some(enrolled_tx);
        let hub_ready = async {
            if let Some(tx) = enrolled_tx.take() {
                let _ = tx.send(());
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while connected.connected().is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let populated = populate(&api, &args, &sim, &agent_dir, hub_ready).await;
        if let Err(e) = populated {
            let _ = stop_agent.send(());
            return Err(e);
        }
        print_welcome(&server, &admin, &sim, &args);
        tikfleet_controller::server::shutdown_signal().await;
        eprintln!("stopping…");
        let _ = stop_agent.send(());
        Ok(())
    };
    let (agent_result, staff_result) = tokio::join!(agent, staff);
    server.shutdown().await;
    sim.shutdown().await;
    staff_result?;
    agent_result.map(|_| ())
}

fn print_welcome(server: &Server, token: &str, sim: &tikfleet_sim::Running, args: &Args) {
    let mut out = std::io::stdout().lock();
    let api = server.api_url();
    let _ = writeln!(out);
    let _ = writeln!(out, "tikfleet demo is running (Ctrl-C stops everything)");
    let _ = writeln!(
        out,
        "url: {api}/api/v1   (OpenAPI: {api}/api/v1/openapi.json)"
    );
    let _ = writeln!(out, "token: {token}");
    let _ = writeln!(
        out,
        "hub: {}   (the agent in {} is connected)",
        server.hub_info.url,
        args.data.join("agent").display()
    );
    let _ = writeln!(
        out,
        "routers (simulated RouterOS 7.16.2, login admin / admin):"
    );
    for (i, r) in sim.routers.iter().enumerate() {
        let show = |a: Option<SocketAddr>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
        let _ = writeln!(
            out,
            "  core-{}  api {}  api-ssl {}  ssh {}",
            i + 1,
            show(r.api),
            show(r.api_ssl),
            show(r.ssh)
        );
    }
    let _ = writeln!(out, "try:");
    let _ = writeln!(
        out,
        "  curl -H 'Authorization: Bearer {token}' {api}/api/v1/subscribers"
    );
    let _ = writeln!(
        out,
        "  curl -H 'Authorization: Bearer {token}' '{api}/api/v1/audit?format=csv'"
    );
    let _ = writeln!(
        out,
        "  curl -H 'Authorization: Bearer {token}' {api}/api/v1/routers   (health: \
         /api/v1/routers/ID/health, backups (the first within a minute of the start, then daily): \
         /api/v1/routers/ID/backups, alerts: /api/v1/alerts)"
    );
    let _ = writeln!(
        out,
        "  make a router busy: curl -X PUT -H 'Content-Type: application/json' -d \
         '{{\"cpu_load\": 95}}' http://{}/routers/0/faults   (cpu_high fires after 5 minutes)",
        args.router_control
    );
    let _ = writeln!(
        out,
        "the first subscriber of each router (cust-1, cust-1001, ...) expires 3 minutes after the \
         start: grace at 1M/1M, then suspended 5 minutes later (status in the subscriber list; \
         history at /api/v1/subscribers/ID/lifecycle; renew with POST /api/v1/subscribers/ID/renew \
         {{\"period_secs\": 2592000}})"
    );
    let _ = out.flush();
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
