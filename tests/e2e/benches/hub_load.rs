//! Benchmark: the controller's agent hub under N agent connections from one process. Prints
//! the controller's memory per idle connected agent and the time to push one desired-state
//! change to all N agents; the targets (under 100 KB per idle agent; all 10,000 updated within
//! 2 s) are printed with met / MISSED, never asserted.
//!
//! For each N (default 1,000 then 10,000):
//!
//! 1. The release `tikfleet-controller` binary runs as its own process on loopback with a
//!    fresh data folder (SQLite; PostgreSQL with `TIKFLEET_BENCH_DATABASE_URL`), so its memory
//!    is measured alone. The binary is built first (`cargo build --release -p
//!    tikfleet-controller`) unless `TIKFLEET_CONTROLLER_BIN` names one.
//! 2. Setup through the real HTTP API, a bounded number of requests at a time: a tenant and a
//!    plan, N enrollment tokens, N enrollments (each agent its own Ed25519 identity key and
//!    X25519 seal key), one router per agent (a dummy loopback address nobody dials) and one
//!    subscriber per router on the plan.
//! 3. `VmRSS` of the controller with no agent connected, then N WebSocket-over-TLS
//!    connections from this process, each answering the hub's challenge with a hello signed by
//!    its own key, as `docs/protocol.md` describes. Each connection stores nothing but acks
//!    every durable message it receives (one ack per burst, as an agent acks a stored batch)
//!    and answers pings. Once all have their router, desired state and jobs and the traffic
//!    has stopped, `VmRSS` again: (idle − before) / N is the memory per idle agent.
//! 4. One change that touches every router: `PATCH /api/v1/plans/{id}` with a new rate limit
//!    (the API bumps the generation of every router whose subscribers use the plan). Timed
//!    from sending the request until every connection has received a desired state with a
//!    newer generation than its first.
//!
//! The load runs in this process on the same machine, so the push time includes the client's
//! own work (TLS, decoding) on the same cores.
//!
//! Settings: `TIKFLEET_BENCH_AGENTS` (e.g. `1000` or `1000,10000`), `TIKFLEET_BENCH_DATABASE_URL`
//! (an empty PostgreSQL database, e.g. from `scripts/pg start`; runs after the first reuse it,
//! each with a tenant of its own), `TIKFLEET_CONTROLLER_BIN`. The file-descriptor limit
//! (`RLIMIT_NOFILE`) is raised to its hard limit before the controller starts, so both
//! processes have it; N needs about N + 100 descriptors in each.
//!
//! Linux only (`/proc`). Run: `cargo bench -p tikfleet-e2e --bench hub_load`

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _, stream};
use indicatif::{ProgressBar, ProgressStyle};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tikfleet_shared::AgentId;
use tikfleet_shared::codec::{self, MAX_FRAME_SIZE};
use tikfleet_shared::enroll::{EnrollRequest, EnrollResponse};
use tikfleet_shared::protocol::{
    Ack, Envelope, Hello, IdentityProof, MIN_SUPPORTED_VERSION, Message, OutboxPosition,
    PROTOCOL_VERSION, Pong, hello_signing_payload,
};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const DEFAULT_SIZES: [usize; 2] = [1_000, 10_000];
/// API requests in flight during setup.
const SETUP_CONCURRENCY: usize = 16;
/// TLS + WebSocket handshakes in flight while connecting.
const CONNECT_CONCURRENCY: usize = 64;
/// Traffic must have stopped this long before the idle reading.
const QUIET: Duration = Duration::from_secs(3);
/// Readings of `VmRSS`, this far apart; the largest is reported.
const SAMPLES: usize = 5;
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// The longest any phase may take before the run is abandoned.
const PHASE_LIMIT: Duration = Duration::from_secs(600);
const TARGET_KB_PER_AGENT: f64 = 100.0;
const TARGET_PUSH: Duration = Duration::from_secs(2);
const TARGET_PUSH_AGENTS: usize = 10_000;

fn main() -> anyhow::Result<()> {
    let sizes = match std::env::var("TIKFLEET_BENCH_AGENTS") {
        Ok(v) => v
            .split(',')
            .map(|n| n.trim().replace('_', "").parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .context("TIKFLEET_BENCH_AGENTS must be numbers separated by commas")?,
        Err(_) => DEFAULT_SIZES.to_vec(),
    };
    let nofile = raise_nofile()?;
    let largest = sizes.iter().copied().max().unwrap_or(0);
    ensure!(
        nofile >= largest as u64 + 200,
        "the file-descriptor limit is {nofile}, too low for {largest} connections: raise the hard \
         limit (ulimit -Hn) to at least {}",
        largest + 200
    );
    let database_url = std::env::var("TIKFLEET_BENCH_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let bin = controller_binary()?;
    println!(
        "hub_load: controller {}; RLIMIT_NOFILE {nofile}; database {}; {} cores; load average {}",
        bin.display(),
        if database_url.is_some() {
            "PostgreSQL (TIKFLEET_BENCH_DATABASE_URL)"
        } else {
            "SQLite in a fresh data folder"
        },
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    for n in sizes {
        runtime.block_on(run(&bin, database_url.as_deref(), n))?;
    }
    Ok(())
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the controller, spawned later,
/// inherits it). Returns the new soft limit.
fn raise_nofile() -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .with_context(|| format!("cannot raise RLIMIT_NOFILE from {soft} to {hard}"))?;
    }
    Ok(getrlimit(Resource::RLIMIT_NOFILE)?.0)
}

/// The release controller: `TIKFLEET_CONTROLLER_BIN`, or built now next to this bench.
fn controller_binary() -> anyhow::Result<PathBuf> {
    if let Ok(bin) = std::env::var("TIKFLEET_CONTROLLER_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(&workspace)
        .args([
            "build",
            "--release",
            "-p",
            "tikfleet-controller",
            "--bin",
            "tikfleet-controller",
        ])
        .status()
        .context("cannot run cargo to build the controller")?;
    ensure!(status.success(), "building tikfleet-controller failed");
    // This bench runs from <target>/release/deps/.
    let exe = std::env::current_exe()?;
    let release = exe
        .parent()
        .and_then(Path::parent)
        .context("where is the target folder?")?;
    let bin = release.join("tikfleet-controller");
    ensure!(bin.exists(), "{} is missing after the build", bin.display());
    Ok(bin)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------------------------------------
// The controller process

struct Controller {
    child: Child,
    pid: u32,
    api: String,
    token: String,
    log: PathBuf,
    _data: tempfile::TempDir,
}

async fn next_line(lines: &mut tokio::io::Lines<BufReader<ChildStdout>>) -> anyhow::Result<String> {
    tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .context("the controller printed nothing for 60 s")??
        .context("the controller exited")
}

async fn spawn_controller(bin: &Path, database_url: Option<&str>) -> anyhow::Result<Controller> {
    let data = tempfile::tempdir()?;
    let log = data.path().join("controller.log");
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--data")
        .arg(data.path())
        .args(["--listen", "127.0.0.1:0", "--hub-listen", "127.0.0.1:0"])
        .env_remove("TIKFLEET_DATABASE_URL")
        .env_remove("TIKFLEET_CONTROLLER_KEY")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true);
    if let Some(url) = database_url {
        cmd.args(["--database-url", url]);
    }
    let mut child = cmd.spawn().context("cannot start the controller")?;
    let pid = child.id().context("the controller has no pid")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut api, mut hub, mut token) = (None, None, None);
    while api.is_none() || hub.is_none() {
        let line = next_line(&mut lines)
            .await
            .with_context(|| format!("the controller did not start (see {})", log.display()))?;
        if let Some(v) = line.strip_prefix("api: ") {
            api = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("hub: ") {
            hub = Some(v.trim().to_owned());
        }
    }
    // `token:` follows at once when this start created the first admin token.
    if let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(2), lines.next_line()).await
        && let Some(v) = line.strip_prefix("token: ")
    {
        token = Some(v.trim().to_owned());
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let token = match token {
        Some(t) => t,
        // A database that already had an admin token (PostgreSQL reused): make another.
        None => {
            let mut cmd = Command::new(bin);
            cmd.arg("admin-token")
                .arg("--data")
                .arg(data.path())
                .args(["--name", "hub-load-bench"]);
            if let Some(url) = database_url {
                cmd.args(["--database-url", url]);
            }
            let out = cmd.output().await?;
            ensure!(out.status.success(), "admin-token failed");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("token: ").map(|t| t.trim().to_owned()))
                .context("admin-token printed no token")?
        }
    };
    Ok(Controller {
        child,
        pid,
        api: api.unwrap_or_default(),
        token,
        log,
        _data: data,
    })
}

impl Controller {
    /// `VmRSS` and thread count from `/proc/PID/status`.
    fn status(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .with_context(|| format!("no {name} in /proc/{}/status", self.pid))
        };
        Ok((field("VmRSS:")?, field("Threads:")?))
    }

    /// The largest of a few readings of `VmRSS` (KiB), and the thread count.
    async fn rss(&self) -> anyhow::Result<(u64, u64)> {
        let mut most = (0, 0);
        for i in 0..SAMPLES {
            if i > 0 {
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
            let (rss, threads) = self.status()?;
            most = (most.0.max(rss), most.1.max(threads));
        }
        Ok(most)
    }

    /// SIGTERM, then wait (kill after 15 s).
    async fn stop(mut self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid)?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The API

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        ensure!(status.is_success(), "{method} {path}: {status}: {text}");
        Ok(serde_json::from_str(&text)?)
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

fn str_field(v: &Value, name: &str) -> anyhow::Result<String> {
    v.get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("no {name} in {v}"))
}

/// One enrolled agent: its id and identity key.
struct Agent {
    id: AgentId,
    key_id: String,
    key: Ed25519KeyPair,
}

fn bar(n: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>22} [{bar:30}] {pos}/{len} {per_sec} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Runs `f(0..n)` with `SETUP_CONCURRENCY` in flight, in order of completion; the results
/// in index order, and the time it took.
async fn bounded<T, F, Fut>(n: usize, what: &str, f: F) -> anyhow::Result<(Vec<T>, Duration)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let progress = bar(n, what);
    let started = Instant::now();
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut results = stream::iter(0..n)
        .map(|i| {
            let fut = f(i);
            async move { (i, fut.await) }
        })
        .buffer_unordered(SETUP_CONCURRENCY);
    while let Some((i, res)) = results.next().await {
        out[i] = Some(res.with_context(|| format!("{what} #{i}"))?);
        progress.inc(1);
    }
    let took = started.elapsed();
    progress.finish_and_clear();
    Ok((out.into_iter().flatten().collect(), took))
}

struct Setup {
    agents: Vec<Agent>,
    plan_id: String,
    hub_url: String,
    hub_ca_pem: String,
    times: Vec<(String, Duration)>,
}

async fn setup(api: &Api, n: usize) -> anyhow::Result<Setup> {
    let mut times = Vec::new();
    let started = Instant::now();
    let tenant = api
        .post(
            "/tenants",
            &json!({"name": format!("hub-load-{}", uuid_ish())}),
        )
        .await?;
    let tenant_id = str_field(&tenant, "id")?;
    let plan = api
        .post(
            "/plans",
            &json!({"tenant_id": tenant_id, "name": "bench-10M", "rate_limit": "10M/10M"}),
        )
        .await?;
    let plan_id = str_field(&plan, "id")?;
    times.push(("tenant and plan".to_owned(), started.elapsed()));

    let path = format!("/tenants/{tenant_id}/enrollment-tokens");
    let (tokens, took) = bounded(n, "enrollment tokens", |_| {
        let path = path.clone();
        async move { str_field(&api.post(&path, &json!({})).await?, "token") }
    })
    .await?;
    times.push((format!("{} enrollment tokens", thousands(n)), took));

    let rng = SystemRandom::new();
    let (enrolled, took) = bounded(n, "enrollments", |i| {
        let token = tokens[i].clone();
        let rng = rng.clone();
        async move {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| anyhow::anyhow!("cannot make a key"))?;
            let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                .map_err(|_| anyhow::anyhow!("cannot read the key"))?;
            let seal =
                ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::X25519, &rng)
                    .and_then(|k| k.compute_public_key())
                    .map_err(|_| anyhow::anyhow!("cannot make a seal key"))?;
            let request = EnrollRequest {
                token,
                name: format!("site-{i}"),
                public_key: STANDARD.encode(key.public_key().as_ref()),
                seal_key: STANDARD.encode(seal.as_ref()),
                agent_version: "hub-load".into(),
            };
            let resp = api
                .post("/agents/enroll", &serde_json::to_value(&request)?)
                .await?;
            let resp: EnrollResponse = serde_json::from_value(resp)?;
            Ok((
                Agent {
                    id: resp.agent_id,
                    key_id: resp.key_id,
                    key,
                },
                resp.hub_url,
                resp.hub_ca_pem,
            ))
        }
    })
    .await?;
    times.push((format!("{} enrollments", thousands(n)), took));
    let (hub_url, hub_ca_pem) = match enrolled.first() {
        Some((_, url, Some(pem))) => (url.clone(), pem.clone()),
        _ => bail!("the enrollment gave no self-signed hub certificate"),
    };
    let agents: Vec<Agent> = enrolled.into_iter().map(|(a, _, _)| a).collect();

    let (routers, took) = bounded(n, "routers", |i| {
        let body = json!({
            "tenant_id": tenant_id,
            "agent_id": agents[i].id.to_string(),
            "name": format!("r{i}"),
            "address": "127.0.0.1",
            "api_port": 9,
            "username": "admin",
            "password": "bench-router-password",
        });
        async move { str_field(&api.post("/routers", &body).await?, "id") }
    })
    .await?;
    times.push((format!("{} routers", thousands(n)), took));

    let (_, took) = bounded(n, "subscribers", |i| {
        let body = json!({
            "username": format!("sub{i}"),
            "password": "bench-subscriber-password",
            "plan_id": plan_id,
            "router_id": routers[i],
            "service": "pppoe",
            "expires_at": null,
        });
        async move { api.post("/subscribers", &body).await.map(drop) }
    })
    .await?;
    times.push((format!("{} subscribers", thousands(n)), took));
    Ok(Setup {
        agents,
        plan_id,
        hub_url,
        hub_ca_pem,
        times,
    })
}

fn uuid_ish() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

// ---------------------------------------------------------------------------------------------
// The agents' connections

/// What every connection reports to the bench.
#[derive(Default)]
struct Stats {
    welcomed: AtomicUsize,
    /// Connections that received their first desired state.
    initial: AtomicUsize,
    /// Connections that received a newer desired state than their first.
    updated: AtomicUsize,
    failed: AtomicUsize,
    /// Durable messages received, all connections.
    durable: AtomicU64,
    /// When each updated connection got its newer desired state.
    arrivals: Mutex<Vec<Instant>>,
    first_error: Mutex<Option<String>>,
    notify: Notify,
}

impl Stats {
    fn bump(&self, counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.notify.notify_one();
    }

    fn fail(&self, e: &anyhow::Error) {
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| format!("{e:#}"));
        self.bump(&self.failed);
    }

    /// Waits until `done()` (woken by the connections), failing if a connection failed.
    async fn wait(&self, what: &str, done: impl Fn(&Self) -> bool) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + PHASE_LIMIT;
        loop {
            let notified = self.notify.notified();
            if self.failed.load(Ordering::Relaxed) > 0 {
                let e = self
                    .first_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                bail!(
                    "{} connection(s) failed while {what}; the first: {}",
                    self.failed.load(Ordering::Relaxed),
                    e.unwrap_or_default()
                );
            }
            if done(self) {
                return Ok(());
            }
            tokio::time::timeout_at(deadline, notified)
                .await
                .with_context(|| format!("timed out while {what}"))?;
        }
    }
}

/// What the connections share: where and how to connect.
struct Link {
    addr: SocketAddr,
    url: String,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
}

impl Link {
    fn new(hub_url: &str, ca_pem: &str) -> anyhow::Result<Self> {
        let authority = hub_url
            .strip_prefix("wss://")
            .and_then(|rest| rest.split('/').next())
            .context("the hub URL is not wss://host:port/...")?;
        let addr: SocketAddr = authority.parse().context("the hub URL's address")?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            addr,
            url: hub_url.to_owned(),
            server_name: ServerName::IpAddress(addr.ip().into()),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

type Ws = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

fn frame(envelope: &Envelope) -> anyhow::Result<WsMessage> {
    Ok(WsMessage::Binary(codec::encode(envelope)?.into()))
}

async fn next_envelope(ws: &mut Ws) -> anyhow::Result<Envelope> {
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Binary(bytes))) => return Ok(codec::decode(&bytes)?),
            Some(Ok(WsMessage::Close(_))) | None => bail!("the hub closed the connection"),
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("websocket: {e}"),
        }
    }
}

/// One agent's connection: handshake, then store nothing, ack everything, answer pings.
async fn agent_connection(
    agent: &Agent,
    link: &Link,
    stats: &Stats,
    permit: OwnedSemaphorePermit,
) -> anyhow::Result<()> {
    let tcp = TcpStream::connect(link.addr).await?;
    tcp.set_nodelay(true)?;
    let tls = link.tls.connect(link.server_name.clone(), tcp).await?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_FRAME_SIZE))
        .max_frame_size(Some(MAX_FRAME_SIZE));
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(link.url.as_str(), tls, Some(config)).await?;
    let challenge = match next_envelope(&mut ws).await?.msg {
        Message::Challenge(c) => c,
        other => bail!("expected a challenge, got {}", other.name()),
    };
    let hello = Hello {
        agent_id: agent.id,
        proof: IdentityProof {
            key_id: agent.key_id.clone(),
            signature: agent
                .key
                .sign(&hello_signing_payload(&challenge.nonce, agent.id))
                .as_ref()
                .to_vec(),
        },
        min_version: MIN_SUPPORTED_VERSION,
        max_version: PROTOCOL_VERSION,
        agent_version: "hub-load".into(),
        routers: Vec::new(),
        outbox: OutboxPosition {
            acked: 0,
            next_seq: 1,
            pending_bytes: 0,
        },
    };
    ws.send(frame(&Envelope {
        version: MIN_SUPPORTED_VERSION,
        seq: None,
        ack: 0,
        msg: Message::Hello(hello),
    })?)
    .await?;
    let version = match next_envelope(&mut ws).await?.msg {
        Message::Welcome(w) => w.version,
        Message::Close(c) => bail!("refused: {:?} {}", c.code, c.reason),
        other => bail!("expected a welcome, got {}", other.name()),
    };
    drop(permit);
    stats.bump(&stats.welcomed);

    let envelope = |ack: u64, msg: Message| Envelope {
        version,
        seq: None,
        ack,
        msg,
    };
    let (mut received, mut acked) = (0u64, 0u64);
    let mut first_generation: Option<u64> = None;
    let mut updated = false;
    loop {
        // Ack once per burst: when no further frame is ready.
        let item = if received > acked {
            match ws.next().now_or_never() {
                Some(item) => item,
                None => {
                    ws.send(frame(&envelope(received, Message::Ack(Ack {})))?)
                        .await?;
                    acked = received;
                    continue;
                }
            }
        } else {
            ws.next().await
        };
        let env = match item {
            Some(Ok(WsMessage::Binary(bytes))) => codec::decode(&bytes)?,
            Some(Ok(WsMessage::Close(_))) | None => bail!("the hub closed the connection"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("websocket: {e}"),
        };
        if let Some(seq) = env.seq {
            if seq <= received {
                continue;
            }
            ensure!(seq == received + 1, "hub seq {seq} after {received}");
            received = seq;
            stats.durable.fetch_add(1, Ordering::Relaxed);
        }
        match env.msg {
            Message::DesiredState(state) => match first_generation {
                None => {
                    first_generation = Some(state.generation);
                    stats.bump(&stats.initial);
                }
                Some(first) if state.generation > first && !updated => {
                    updated = true;
                    stats
                        .arrivals
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Instant::now());
                    stats.bump(&stats.updated);
                }
                Some(_) => {}
            },
            Message::Ping(ping) => {
                ws.send(frame(&envelope(
                    received,
                    Message::Pong(Pong { nonce: ping.nonce }),
                ))?)
                .await?;
                acked = received;
            }
            Message::Close(c) => bail!("the hub closed: {:?} {}", c.code, c.reason),
            Message::Revoked(r) => bail!("revoked: {}", r.reason),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One run

async fn run(bin: &Path, database_url: Option<&str>, n: usize) -> anyhow::Result<()> {
    println!();
    println!("== N = {} agents ==", thousands(n));
    let controller = spawn_controller(bin, database_url).await?;
    let result = measure(&controller, n).await;
    if result.is_err() {
        eprintln!("controller log: {}", controller.log.display());
        if let Ok(log) = std::fs::read_to_string(&controller.log) {
            for line in log
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                eprintln!("  {line}");
            }
        }
    }
    controller.stop().await?;
    result
}

async fn measure(controller: &Controller, n: usize) -> anyhow::Result<()> {
    let api = Api {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(SETUP_CONCURRENCY)
            .build()?,
        base: controller.api.clone(),
        token: controller.token.clone(),
    };
    let setup_started = Instant::now();
    let setup = setup(&api, n).await?;
    let setup_took = setup_started.elapsed();
    println!(
        "setup through the API ({SETUP_CONCURRENCY} requests at a time): {:.1} s",
        setup_took.as_secs_f64()
    );
    for (what, took) in &setup.times {
        println!("  {what:<28} {:>8.2} s", took.as_secs_f64(),);
    }

    // Settle after setup, then the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_before, threads_before) = controller.rss().await?;

    let link = Arc::new(Link::new(&setup.hub_url, &setup.hub_ca_pem)?);
    let stats = Arc::new(Stats::default());
    let agents = Arc::new(setup.agents);
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let progress = bar(n, "welcomed");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permit = Arc::clone(&gate).acquire_owned().await?;
        let (agents, link, task_stats) =
            (Arc::clone(&agents), Arc::clone(&link), Arc::clone(&stats));
        tasks.spawn(async move {
            if let Err(e) = agent_connection(&agents[i], &link, &task_stats, permit).await {
                task_stats.fail(&e);
            }
        });
        progress.set_position(stats.welcomed.load(Ordering::Relaxed) as u64);
    }
    stats
        .wait("connecting", |s| {
            progress.set_position(s.welcomed.load(Ordering::Relaxed) as u64);
            s.welcomed.load(Ordering::Relaxed) == n
        })
        .await?;
    let connected = started.elapsed();
    progress.finish_and_clear();
    stats
        .wait("receiving the first desired states", |s| {
            s.initial.load(Ordering::Relaxed) == n
        })
        .await?;
    let initial = started.elapsed();
    // Idle: no durable message for QUIET.
    let mut last = stats.durable.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < QUIET {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = stats.durable.load(Ordering::Relaxed);
        if now != last {
            (last, quiet_since) = (now, Instant::now());
        }
        ensure!(
            stats.failed.load(Ordering::Relaxed) == 0,
            "a connection failed while settling"
        );
    }
    let (rss_idle, threads_idle) = controller.rss().await?;
    let per_agent_kb = (rss_idle.saturating_sub(rss_before)) as f64 * 1024.0 / n as f64 / 1000.0;
    println!(
        "connect: {} agents welcomed in {:.2} s; all had their router, desired state and jobs \
         ({:.1} durable messages each, acked) after {:.2} s",
        thousands(n),
        connected.as_secs_f64(),
        last as f64 / n as f64,
        initial.as_secs_f64()
    );
    println!(
        "memory: controller VmRSS {:.1} MB ({threads_before} threads) before any agent connected, \
         {:.1} MB ({threads_idle} threads) with {} idle agents",
        mb(rss_before),
        mb(rss_idle),
        thousands(n)
    );
    println!(
        "  per idle agent: {per_agent_kb:.1} KB (target under {TARGET_KB_PER_AGENT:.0} KB: {})",
        verdict(per_agent_kb < TARGET_KB_PER_AGENT)
    );

    // The change: one plan, every router.
    let t0 = Instant::now();
    api.call(
        reqwest::Method::PATCH,
        &format!("/plans/{}", setup.plan_id),
        Some(&json!({"rate_limit": "20M/20M"})),
    )
    .await?;
    let answered = t0.elapsed();
    stats
        .wait("waiting for the new desired states", |s| {
            s.updated.load(Ordering::Relaxed) == n
        })
        .await?;
    let mut arrivals: Vec<Duration> = stats
        .arrivals
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|at| at.duration_since(t0))
        .collect();
    arrivals.sort();
    let pct = |p: f64| {
        let i = ((arrivals.len() as f64 * p).ceil() as usize).clamp(1, arrivals.len()) - 1;
        arrivals[i]
    };
    let push = pct(1.0);
    println!(
        "push: PATCH /api/v1/plans/{{id}} (new rate limit, {} routers) answered in {:.0} ms; \
         first agent updated after {:.0} ms, half after {:.0} ms, 99% after {:.0} ms, all {} after {:.0} ms",
        thousands(n),
        ms(answered),
        ms(pct(0.0)),
        ms(pct(0.5)),
        ms(pct(0.99)),
        thousands(n),
        ms(push)
    );
    if n >= TARGET_PUSH_AGENTS {
        println!(
            "  target: all {} updated within {} s: {}",
            thousands(TARGET_PUSH_AGENTS),
            TARGET_PUSH.as_secs(),
            verdict(push <= TARGET_PUSH)
        );
    } else {
        println!(
            "  target: all {} updated within {} s (measured at N = {})",
            thousands(TARGET_PUSH_AGENTS),
            TARGET_PUSH.as_secs(),
            thousands(TARGET_PUSH_AGENTS)
        );
    }
    println!("load average now: {}", load_average());
    tasks.shutdown().await;
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
