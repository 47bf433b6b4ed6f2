//! Benchmark: resident memory of the real `tikfleet-agent run` binary serving 10 routers, and
//! the size of the (stripped) release binary. Prints the figures and the target (idle RSS
//! under 20 MB); nothing is asserted.
//!
//! The binary is the one Cargo builds for this benchmark with the `bench` profile, which
//! inherits `release` (thin LTO, stripped): `target/release/tikfleet-agent`. Steps:
//!
//! 1. 10 simulated routers (tikfleet-sim, in this process) and a fresh data folder; each
//!    router is registered with `tikfleet-agent router add` (password on stdin, sealed in the
//!    vault), as a technician does.
//! 2. *idle*: `tikfleet-agent run` starts (no connections yet: clients are made when a job
//!    needs one); after it settles, `VmRSS` is read from `/proc/PID/status` a few times.
//! 3. *after one job per router*: one create-PPP-secret job per router is put in the queue
//!    (through the library, with the agent stopped), the agent runs again, connects to all 10
//!    routers, runs the jobs and keeps the connections; after it settles, `VmRSS` again.
//!
//! Linux only (`/proc`). Run: `cargo bench -p tikfleet-agent --bench idle_memory`

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tikfleet_agent::queue::Queue;
use tikfleet_agent::store::{Store, StoreConfig};
use tikfleet_shared::{RouterId, TenantId, UnixMillis};
use tikfleet_sim::router::lock;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const ROUTERS: usize = 10;
const PASSWORD: &str = "bench-pw";
const TENANT: &str = "0190f5d2-7a4b-7cc1-8d1e-1234567890ab";
/// How long the agent runs before memory is read.
const SETTLE: Duration = Duration::from_secs(5);
/// Readings after settling, this far apart; the largest is reported.
const SAMPLES: usize = 5;
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
const LIMIT: Duration = Duration::from_secs(60);
const TARGET_MB: f64 = 20.0;

fn agent_binary() -> anyhow::Result<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tikfleet-agent"));
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p tikfleet-agent`",
        bin.display()
    );
    Ok(bin)
}

fn command(bin: &Path, data: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--data-dir")
        .arg(data)
        .env_remove("TIKFLEET_VAULT_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("TIKFLEET_AGENT_CONFIG")
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    cmd
}

/// `router add` for one simulated router.
async fn register(
    bin: &Path,
    data: &Path,
    name: &str,
    id: RouterId,
    port: u16,
) -> anyhow::Result<()> {
    let mut child = command(bin, data)
        .args(["router", "add", "--name", name, "--host", "127.0.0.1"])
        .args(["--api-port", &port.to_string(), "--user", "admin"])
        .args([
            "--tls",
            "plain",
            "--tenant",
            TENANT,
            "--id",
            &id.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("the agent binary runs")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(format!("{PASSWORD}\n").as_bytes()).await?;
    drop(stdin);
    let out = tokio::time::timeout(LIMIT, child.wait_with_output()).await??;
    anyhow::ensure!(
        out.status.success(),
        "router add {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Starts `run` and waits for its "running" line.
async fn start_agent(bin: &Path, data: &Path) -> anyhow::Result<Child> {
    let mut child = command(bin, data)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("the agent binary runs")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(LIMIT, lines.next_line())
        .await
        .context("the agent did not start in time")??
        .context("the agent exited before it started")?;
    anyhow::ensure!(
        line.starts_with("tikfleet-agent running"),
        "unexpected: {line}"
    );
    // Keep reading (and discarding) so the agent never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(child)
}

/// Stops the agent as systemd does (SIGTERM) and waits for it.
async fn stop_agent(mut child: Child) -> anyhow::Result<()> {
    let pid = child.id().context("the agent is running")?;
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await?;
    anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
    let status = tokio::time::timeout(LIMIT, child.wait()).await??;
    anyhow::ensure!(status.success(), "the agent stopped with {status}");
    Ok(())
}

/// A `kB` field of `/proc/PID/status`, in MB (10^6 bytes).
fn status_mb(pid: u32, field: &str) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading /proc/PID/status (Linux only)")?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    let kb: f64 = line
        .trim_start_matches(field)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024.0 / 1e6)
}

fn threads(pid: u32) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap_or("?")
        .trim()
        .to_owned())
}

/// Lets the agent settle, then reads its memory a few times; prints and returns the largest.
async fn measure(child: &Child, label: &str) -> anyhow::Result<f64> {
    let pid = child.id().context("the agent is running")?;
    tokio::time::sleep(SETTLE).await;
    let mut rss: f64 = 0.0;
    for _ in 0..SAMPLES {
        rss = rss.max(status_mb(pid, "VmRSS:")?);
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    let hwm = status_mb(pid, "VmHWM:")?;
    println!(
        "{label}: VmRSS {rss:.1} MB (peak VmHWM {hwm:.1} MB, {} threads; target < {TARGET_MB} MB: {})",
        threads(pid)?,
        if rss < TARGET_MB { "met" } else { "MISSED" }
    );
    Ok(rss)
}

/// Puts one job per router in the (stopped) agent's queue.
async fn enqueue_one_each(data: &Path, routers: &[RouterId]) -> anyhow::Result<()> {
    let store = Store::open(&StoreConfig::new(data.join("store")))?;
    let queue = Queue::open(
        &store,
        UnixMillis::from_system_time(std::time::SystemTime::now()),
    )?;
    for (i, router) in routers.iter().enumerate() {
        queue
            .enqueue(
                common::secret_job(TENANT.parse::<TenantId>().context("tenant id")?, *router, i),
                UnixMillis::from_system_time(std::time::SystemTime::now()),
            )
            .await?;
    }
    drop(queue);
    drop(store);
    // Let the group-commit flusher task drop its handle so the agent can open the store.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let bin = agent_binary()?;
    let size = std::fs::metadata(&bin)?.len();
    println!(
        "binary {}: {:.1} MB ({size} bytes; the release profile strips it)",
        bin.display(),
        size as f64 / 1e6
    );

    let mut config = tikfleet_sim::Config::local();
    config.routers = ROUTERS;
    config.api_ssl = None;
    config.ssh = None;
    config.control = None;
    config.password = PASSWORD.to_owned();
    let sim = tikfleet_sim::start(config).await?;

    let dir = tempfile::tempdir()?;
    let data = dir.path();
    let mut ids = Vec::with_capacity(ROUTERS);
    for (i, r) in sim.routers.iter().enumerate() {
        let id = RouterId::new();
        let port = r.api.context("api listener")?.port();
        register(&bin, data, &format!("sim-{i}"), id, port).await?;
        ids.push(id);
    }

    let agent = start_agent(&bin, data).await?;
    measure(&agent, "idle, 10 routers registered, no connections").await?;
    stop_agent(agent).await?;

    enqueue_one_each(data, &ids).await?;
    let agent = start_agent(&bin, data).await?;
    let started = Instant::now();
    loop {
        let done = sim
            .handles
            .iter()
            .filter(|r| {
                lock(&r.stats)
                    .view(None, Instant::now())
                    .by_path
                    .contains_key("/ppp/secret/add")
            })
            .count();
        if done == ROUTERS {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < LIMIT,
            "only {done} of {ROUTERS} routers got their job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    measure(
        &agent,
        "idle after one job per router (10 open connections)",
    )
    .await?;
    stop_agent(agent).await?;

    let store = Store::open(&StoreConfig::new(data.join("store")))?;
    let counts = Queue::open(
        &store,
        UnixMillis::from_system_time(std::time::SystemTime::now()),
    )?
    .counts();
    anyhow::ensure!(counts.succeeded == ROUTERS as u64, "jobs: {counts:?}");
    sim.shutdown().await;
    Ok(())
}
