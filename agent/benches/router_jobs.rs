//! Benchmark: create-PPP-secret jobs per second against one simulated router, the agent's
//! executor against a sequential Python librouteros loop, with no added latency and with a
//! 5 ms network delay on every reply. Prints the figures and the targets; nothing is asserted.
//!
//! - *agent*: [`JOBS`] `UpsertPppSecret` jobs are enqueued (durably, not timed) in a fresh sled
//!   store, then the executor runs them as `tikfleet-agent run` does: durable queue, durable
//!   outbox with an audit record per command and job updates, rate limits and per-router
//!   concurrency ([`config`] prints the settings). Timed from the executor's start (connecting
//!   and logging in included) until the queue counts every job succeeded.
//! - *librouteros*: `benches/py/sequential_upsert.py` sends the same two commands per secret
//!   (`print ?name=`, then `add`) one at a time, as a billing panel's loop does. Timed inside
//!   the script, after login.
//!
//! Each run gets a fresh simulated router (tikfleet-sim, in this process), so every job
//! creates its secret; the sim's command counts are printed to show both sides sent the
//! same commands.
//!
//! The Python comes from `TIKFLEET_PYTHON` or the venv `scripts/test` creates (`.venv`).
//!
//! Run: `cargo bench -p tikfleet-agent --bench router_jobs`. To change the job count, the
//! per-router concurrency or the pool size: `TIKFLEET_BENCH_JOBS`, `TIKFLEET_BENCH_PER_ROUTER`,
//! `TIKFLEET_BENCH_POOL`.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tikfleet_agent::clock::{SharedClock, SystemClock};
use tikfleet_agent::executor::{Executor, ExecutorConfig, RetryPolicy, Routers};
use tikfleet_agent::outbox::{Outbox, OutboxConfig};
use tikfleet_agent::queue::Queue;
use tikfleet_agent::ratelimit::Rate;
use tikfleet_agent::router::{RouterEndpoint, TlsMode};
use tikfleet_agent::routeros::DriverConfig;
use tikfleet_agent::store::{Store, StoreConfig};
use tikfleet_shared::{RouterId, Secret, TenantId};
use tikfleet_sim::faults::FaultsPatch;
use tikfleet_sim::router::lock;

/// Jobs per run (`TIKFLEET_BENCH_JOBS` overrides).
const JOBS: usize = 2_000;
/// Jobs running at once against the router.
const PER_ROUTER: usize = 256;
/// Pooled API connections to the router (commands are pipelined on each).
const POOL_SIZE: usize = 4;
/// Commands per second (and burst) for the router and the tenant: high enough not to bind.
const RATE: u32 = 100_000;
const PASSWORD: &str = "bench-pw";
/// Upper bound of one run; a stuck run is an error, not a hang.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// A number from the environment, or `default`.
fn env_or(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(n) => n.parse().with_context(|| format!("{name} is a number")),
        Err(_) => Ok(default),
    }
}

/// The executor's settings for this run.
#[derive(Clone, Copy, Debug)]
struct Settings {
    jobs: usize,
    per_router: usize,
    pool_size: usize,
}

fn config(s: Settings) -> ExecutorConfig {
    ExecutorConfig {
        driver: DriverConfig {
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            pool_size: s.pool_size,
        },
        per_router: s.per_router,
        router_rate: Rate::per_second(RATE, RATE),
        tenant_rate: Rate::per_second(RATE, RATE),
        retry: RetryPolicy::default(),
        seed: 4,
    }
}

/// One measured run.
struct Outcome {
    jobs: usize,
    elapsed: Duration,
    /// Commands the router saw, by word.
    commands: HashMap<String, u64>,
    connections: u64,
    max_in_flight: u64,
    /// Store flushes during the run (agent only).
    flushes: Option<u64>,
}

impl Outcome {
    fn per_second(&self) -> f64 {
        self.jobs as f64 / self.elapsed.as_secs_f64()
    }

    fn describe(&self) -> String {
        let mut words: Vec<_> = self.commands.iter().collect();
        words.sort();
        let words: Vec<String> = words.iter().map(|(w, n)| format!("{w} {n}")).collect();
        let flushes = self.flushes.map_or(String::new(), |f| {
            format!(", {:.2} store flushes/job", f as f64 / self.jobs as f64)
        });
        format!(
            "{:>7.0} jobs/s ({} jobs in {:.2} s; router saw {}; {} connection(s), at most {} command(s) in flight{flushes})",
            self.per_second(),
            self.jobs,
            self.elapsed.as_secs_f64(),
            words.join(", "),
            self.connections,
            self.max_in_flight,
        )
    }
}

/// A fresh simulated router (API only) with `delay_ms` on every reply.
async fn router(delay_ms: u64) -> anyhow::Result<tikfleet_sim::Running> {
    let mut config = tikfleet_sim::Config::local();
    config.api_ssl = None;
    config.ssh = None;
    config.control = None;
    config.password = PASSWORD.to_owned();
    let sim = tikfleet_sim::start(config).await?;
    lock(&sim.router(0).faults).apply(FaultsPatch {
        delay_ms: Some(delay_ms),
        ..FaultsPatch::default()
    });
    Ok(sim)
}

fn router_figures(sim: &tikfleet_sim::Running) -> (HashMap<String, u64>, u64, u64) {
    let stats = lock(&sim.router(0).stats);
    let view = stats.view(None, Instant::now());
    let commands = view
        .by_path
        .into_iter()
        .filter(|(w, _)| w.starts_with("/ppp/"))
        .collect();
    (commands, view.connections, view.max_in_flight)
}

/// The agent's executor runs `jobs` jobs against a fresh router.
async fn agent(delay_ms: u64, settings: Settings) -> anyhow::Result<Outcome> {
    let jobs = settings.jobs;
    let sim = router(delay_ms).await?;
    let api = sim.routers[0].api.context("api listener")?;
    let tenant = TenantId::new();
    let endpoint = RouterEndpoint {
        id: RouterId::new(),
        tenant,
        name: "bench-1".into(),
        host: api.ip().to_string(),
        api_port: api.port(),
        ssh_port: 22,
        tls: TlsMode::Plain,
        username: "admin".into(),
        password: Secret::new(PASSWORD),
    };
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreConfig::new(dir.path().join("store")))?;
    let clock: SharedClock = Arc::new(SystemClock);
    let queue = Arc::new(Queue::open(&store, clock.now())?);
    let outbox = Arc::new(Outbox::open(&store, OutboxConfig::default())?);

    // Enqueue everything first (group commit, concurrently), untimed.
    let mut set = tokio::task::JoinSet::new();
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(jobs.div_ceil(64)) {
        let (queue, clock, chunk) = (Arc::clone(&queue), Arc::clone(&clock), chunk.to_vec());
        let router = endpoint.id;
        set.spawn(async move {
            for i in chunk {
                queue
                    .enqueue(common::secret_job(tenant, router, i), clock.now())
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(res) = set.join_next().await {
        res??;
    }

    let routers: HashMap<RouterId, RouterEndpoint> = HashMap::from([(endpoint.id, endpoint)]);
    let executor = Executor::new(
        Arc::clone(&queue),
        outbox,
        Arc::new(routers) as Arc<dyn Routers>,
        clock,
        config(settings),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let flushes_before = store.flush_count();
    let started = Instant::now();
    let task = tokio::spawn(async move {
        executor
            .run(async {
                let _ = stopped.await;
            })
            .await;
    });
    let elapsed = loop {
        let counts = queue.counts();
        if counts.succeeded == jobs as u64 {
            break started.elapsed();
        }
        anyhow::ensure!(
            counts.failed == 0 && counts.retrying == 0,
            "jobs failed: {counts:?}"
        );
        anyhow::ensure!(
            started.elapsed() < RUN_LIMIT,
            "the run took too long: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let flushes = store.flush_count() - flushes_before;
    let _ = stop.send(());
    task.await?;
    let (commands, connections, max_in_flight) = router_figures(&sim);
    sim.shutdown().await;
    Ok(Outcome {
        jobs,
        elapsed,
        commands,
        connections,
        max_in_flight,
        flushes: Some(flushes),
    })
}

fn python() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TIKFLEET_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    anyhow::ensure!(
        venv.exists(),
        "no Python with librouteros at {}: run scripts/test once (it creates .venv), or \
         `python3 -m venv .venv && .venv/bin/pip install -r tests/e2e/py/requirements.txt`, \
         or set TIKFLEET_PYTHON to a python that has librouteros",
        venv.display()
    );
    Ok(venv)
}

/// The sequential librouteros loop does the same work against a fresh router.
async fn librouteros(python: &PathBuf, delay_ms: u64, jobs: usize) -> anyhow::Result<Outcome> {
    let sim = router(delay_ms).await?;
    let api = sim.routers[0].api.context("api listener")?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/py/sequential_upsert.py");
    let output = tokio::time::timeout(
        RUN_LIMIT,
        tokio::process::Command::new(python)
            .arg(&script)
            .args(["--host", &api.ip().to_string()])
            .args(["--port", &api.port().to_string()])
            .args(["--user", "admin", "--password", PASSWORD])
            .args(["--count", &jobs.to_string(), "--prefix", "sub-"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("the librouteros loop took too long")?
    .with_context(|| format!("cannot run {}", python.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "the librouteros loop failed ({}): {}\n(if librouteros is missing, run scripts/test once: it prepares .venv)",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout)
        .context("the librouteros loop prints one JSON object")?;
    let created = result["created"].as_u64().unwrap_or(0);
    anyhow::ensure!(
        created == jobs as u64,
        "librouteros created {created} of {jobs}"
    );
    let seconds = result["seconds"].as_f64().context("seconds")?;
    let (commands, connections, max_in_flight) = router_figures(&sim);
    sim.shutdown().await;
    Ok(Outcome {
        jobs,
        elapsed: Duration::from_secs_f64(seconds),
        commands,
        connections,
        max_in_flight,
        flushes: None,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let settings = Settings {
        jobs: env_or("TIKFLEET_BENCH_JOBS", JOBS)?,
        per_router: env_or("TIKFLEET_BENCH_PER_ROUTER", PER_ROUTER)?,
        pool_size: env_or("TIKFLEET_BENCH_POOL", POOL_SIZE)?,
    };
    let Settings {
        jobs,
        per_router,
        pool_size,
    } = settings;
    let python = python()?;
    println!(
        "create-PPP-secret jobs against one simulated router (RouterOS 7.16.2), {jobs} per run"
    );
    println!(
        "agent: executor over a sled queue and outbox, {per_router} jobs at once per router, \
         pool of {pool_size} pipelined connections, router and tenant rate {RATE} commands/s \
         (burst {RATE})"
    );
    println!("librouteros: one command, wait for its reply, the next (print ?name=, then add)");
    // Warm-up (connections, allocator, page cache); not reported.
    agent(
        0,
        Settings {
            jobs: 200,
            ..settings
        },
    )
    .await?;

    for (label, delay_ms, target) in [
        ("no added latency", 0, 2.0),
        ("5 ms delay per reply", 5, 20.0),
    ] {
        println!("\n{label}:");
        let ours = agent(delay_ms, settings).await?;
        println!("  agent executor:   {}", ours.describe());
        let theirs = librouteros(&python, delay_ms, jobs).await?;
        println!("  librouteros loop: {}", theirs.describe());
        let ratio = ours.per_second() / theirs.per_second();
        println!(
            "  agent / librouteros: {ratio:.2}x (target >= {target}x: {})",
            if ratio >= target { "met" } else { "MISSED" }
        );
    }
    Ok(())
}
