//! Benchmark: create-PPP-secret jobs per second against one simulated router, the agent's
//! executor against a sequential Python librouteros loop, with no added latency and with a
//! 5 ms network delay on every reply. Prints every run, the medians and the targets; nothing
//! is asserted.
//!
//! - *agent*: [`JOBS`] `UpsertPppSecret` jobs are enqueued (durably, not timed) in a fresh sled
//!   store, then the executor runs them as `tikfleet-agent run` does: durable queue, durable
//!   outbox with an audit record per command and job updates, rate limits and per-router
//!   concurrency ([`config`] prints the settings), with `run_until_idle`.
//! - *librouteros*: `benches/py/sequential_upsert.py` sends the same two commands per secret
//!   (`print ?name=`, then `add`) one at a time, as a billing panel's loop does.
//!
//! # Method
//!
//! - **The simulator is its own process** for both sides, started fresh for every run (so
//!   every job creates its secret and the name index starts empty): by default this bench's
//!   own executable started again in the simulator's role (`tikfleet_sim::start` on a default
//!   multi-thread runtime, what the `tikfleet-sim` binary runs), or the binary named by
//!   `TIKFLEET_SIM_BIN` (e.g. `target/release/tikfleet-sim`). The delay fault is set and the
//!   command counts are read through its HTTP control endpoint.
//! - **Both sides are timed the same way: connecting and logging in included**, up to the
//!   last reply. The agent: from the executor's start until `run_until_idle` returns (every
//!   job succeeded, its audit records and update durable); the loop: inside the script, from
//!   just before `connect` to the last reply (interpreter start and imports excluded).
//! - **Runs alternate** (agent first, then the loop; the next run the other way round), after
//!   an unreported warm-up of each. Each run is printed; the ratio is the median of the
//!   per-run ratios.
//! - **CPU time** is printed per side as ms per 1,000 jobs: the agent's (this process,
//!   `getrusage`, over the timed window only), the loop's (Python's `process_time`) and the
//!   simulator's (its threads, from `/proc/PID/task/*/schedstat`), so a change can be judged
//!   on a noisy machine by the CPU it costs, not only by wall time.
//! - **Two placements of the loop.** A sequential loop waits for every reply, so its speed is
//!   set by how fast the simulator's thread and Python's wake each other. On a VM, waking a
//!   process on *another* (idle) vCPU costs tens of microseconds; on the *same* vCPU it is a
//!   local switch. The loop is therefore run twice per run: where the scheduler puts it
//!   (usually on different CPUs on a quiet machine), and with Python and the simulator both
//!   pinned to one CPU (`taskset`), its fastest case. Both ratios are printed. A busy machine
//!   tends to put them on one CPU by itself: that is why the loop once looked twice as fast
//!   inside a long run (docs/benchmarks.md).
//!
//! The Python comes from `TIKFLEET_PYTHON` or the venv `scripts/test` creates (`.venv`).
//!
//! Run: `cargo bench -p tikfleet-agent --bench router_jobs`. Knobs: `TIKFLEET_BENCH_JOBS`,
//! `TIKFLEET_BENCH_RUNS` (runs with no added latency), `TIKFLEET_BENCH_DELAY_RUNS` (runs with
//! 5 ms), `TIKFLEET_BENCH_PER_ROUTER`, `TIKFLEET_BENCH_POOL`, `TIKFLEET_SIM_BIN`,
//! `TIKFLEET_BENCH_ONLY=agent` (skip the Python loop, to profile the agent),
//! `TIKFLEET_BENCH_PERF_CTL=FIFO` (`perf record -D -1 --control fifo:FIFO …` samples only the
//! agent's timed windows).

mod common;
mod sim;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sim::{PASSWORD, Sim, SimProgram, USER, pinned};
use tikfleet_agent::clock::{SharedClock, SystemClock};
use tikfleet_agent::executor::{Executor, ExecutorConfig, RetryPolicy, Routers};
use tikfleet_agent::outbox::{Outbox, OutboxConfig};
use tikfleet_agent::queue::Queue;
use tikfleet_agent::ratelimit::Rate;
use tikfleet_agent::router::{RouterEndpoint, TlsMode};
use tikfleet_agent::routeros::DriverConfig;
use tikfleet_agent::store::{Store, StoreConfig};
use tikfleet_shared::{RouterId, Secret, TenantId};

/// Jobs per run (`TIKFLEET_BENCH_JOBS` overrides).
const JOBS: usize = 2_000;
/// Runs with no added latency (`TIKFLEET_BENCH_RUNS`).
const RUNS: usize = 5;
/// Runs with 5 ms per reply (`TIKFLEET_BENCH_DELAY_RUNS`): the loop takes ~25 s per run.
const DELAY_RUNS: usize = 1;
/// Jobs running at once against the router.
const PER_ROUTER: usize = 256;
/// Pooled API connections to the router (commands are pipelined on each).
const POOL_SIZE: usize = 4;
/// Commands per second (and burst) for the router and the tenant: high enough not to bind.
const RATE: u32 = 100_000;
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

// ---------------------------------------------------------------------------------------
// CPU time

/// CPU time (user + system) of every live thread of process `pid`, from
/// `/proc/PID/task/*/schedstat` (nanoseconds; `/proc/PID/stat` counts 10 ms ticks, too
/// coarse for runs of a fraction of a second). Threads that end inside a window are missed:
/// fine for the simulator (its runtime's workers live through it); the agent's side uses
/// [`own_cpu_ns`].
fn cpu_ns(pid: &str) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread can end between the listing and the read.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let on_cpu = text.split_whitespace().next().unwrap_or("0");
        total += on_cpu.parse::<u64>().unwrap_or(0);
    }
    Ok(total)
}

/// CPU time (user + system) of this process so far, dead threads included (sled's I/O pool
/// starts and ends threads as it goes), in nanoseconds.
fn own_cpu_ns() -> anyhow::Result<u64> {
    use nix::sys::resource::{UsageWho, getrusage};
    use nix::sys::time::TimeValLike as _;
    let usage = getrusage(UsageWho::RUSAGE_SELF)?;
    let us = usage.user_time().num_microseconds() + usage.system_time().num_microseconds();
    Ok(u64::try_from(us)? * 1_000)
}

/// Milliseconds of CPU per 1,000 jobs.
fn per_k(ns: u64, jobs: usize) -> f64 {
    ns as f64 / 1e6 / (jobs as f64 / 1_000.0)
}

// ---------------------------------------------------------------------------------------
// The simulator, in its own process

/// What the router saw.
struct RouterFigures {
    /// Commands by word (`/ppp/…` only).
    commands: BTreeMap<String, u64>,
    connections: u64,
    max_in_flight: u64,
}

async fn figures(sim: &Sim) -> anyhow::Result<RouterFigures> {
    let stats = sim.stats().await?;
    Ok(RouterFigures {
        commands: stats
            .by_path
            .into_iter()
            .filter(|(w, _)| w.starts_with("/ppp/"))
            .collect(),
        connections: stats.connections,
        max_in_flight: stats.max_in_flight,
    })
}

/// The simulator process's CPU time so far.
fn sim_cpu_ns(sim: &Sim) -> anyhow::Result<u64> {
    cpu_ns(&sim.pid.to_string())
}

// ---------------------------------------------------------------------------------------
// The two sides

/// One measured run of one side.
struct Outcome {
    jobs: usize,
    elapsed: Duration,
    /// CPU of the side itself (agent or Python) over the timed window, in ns.
    cpu: u64,
    /// CPU of the simulator over the same window, in ns.
    sim_cpu: u64,
    router: RouterFigures,
    /// Store flushes during the run (agent only).
    flushes: Option<u64>,
    /// Wall time of each block of 1,000 jobs (the loop only).
    blocks: Vec<f64>,
}

impl Outcome {
    fn per_second(&self) -> f64 {
        self.jobs as f64 / self.elapsed.as_secs_f64()
    }

    fn describe(&self, own: &str) -> String {
        let flushes = self.flushes.map_or(String::new(), |f| {
            format!(", {:.2} flushes/job", f as f64 / self.jobs as f64)
        });
        format!(
            "{:>6.0} jobs/s ({:.3} s; CPU per 1,000 jobs: {own} {:.0} ms, sim {:.0} ms; \
             {} conn, max {} in flight at the sim{flushes})",
            self.per_second(),
            self.elapsed.as_secs_f64(),
            per_k(self.cpu, self.jobs),
            per_k(self.sim_cpu, self.jobs),
            self.router.connections,
            self.router.max_in_flight,
        )
    }

    fn check(&self, side: &str) -> anyhow::Result<()> {
        let n = self.jobs as u64;
        for word in ["/ppp/secret/print", "/ppp/secret/add"] {
            let seen = self.router.commands.get(word).copied().unwrap_or(0);
            anyhow::ensure!(
                seen == n,
                "{side}: the router saw {seen} {word} for {n} jobs: {:?}",
                self.router.commands
            );
        }
        Ok(())
    }
}

/// The agent's executor runs `jobs` jobs against a fresh router.
async fn agent(program: &SimProgram, delay_ms: u64, settings: Settings) -> anyhow::Result<Outcome> {
    let jobs = settings.jobs;
    let sim = Sim::start(program, None, serde_json::json!({ "delay_ms": delay_ms })).await?;
    let tenant = TenantId::new();
    let endpoint = RouterEndpoint {
        id: RouterId::new(),
        tenant,
        name: "bench-1".into(),
        host: sim.api.ip().to_string(),
        api_port: sim.api.port(),
        ssh_port: 22,
        tls: TlsMode::Plain,
        username: USER.into(),
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
    let flushes_before = store.flush_count();
    let (cpu_before, sim_before) = (own_cpu_ns()?, sim_cpu_ns(&sim)?);
    perf_control("enable")?;
    let started = std::time::Instant::now();
    tokio::time::timeout(RUN_LIMIT, executor.run_until_idle(std::future::pending()))
        .await
        .context("the agent's run took too long")?;
    let elapsed = started.elapsed();
    perf_control("disable")?;
    let (cpu, sim_cpu) = (own_cpu_ns()? - cpu_before, sim_cpu_ns(&sim)? - sim_before);
    let flushes = store.flush_count() - flushes_before;
    let counts = queue.counts();
    anyhow::ensure!(
        counts.succeeded == jobs as u64,
        "not every job succeeded: {counts:?}"
    );
    let router = figures(&sim).await?;
    sim.stop().await?;
    let outcome = Outcome {
        jobs,
        elapsed,
        cpu,
        sim_cpu,
        router,
        flushes: Some(flushes),
        blocks: Vec::new(),
    };
    outcome.check("agent")?;
    Ok(outcome)
}

/// With `TIKFLEET_BENCH_PERF_CTL=FIFO`, writes `command` to that FIFO: `perf record -D -1
/// --control fifo:FIFO` then samples only the agent's timed windows.
fn perf_control(command: &str) -> anyhow::Result<()> {
    if let Some(fifo) = std::env::var_os("TIKFLEET_BENCH_PERF_CTL") {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().write(true).open(fifo)?;
        writeln!(f, "{command}")?;
    }
    Ok(())
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

/// The sequential librouteros loop does the same work against a fresh router; with `cpu`,
/// Python and the simulator are both pinned to that CPU.
async fn librouteros(
    program: &SimProgram,
    python: &Path,
    delay_ms: u64,
    jobs: usize,
    cpu: Option<usize>,
) -> anyhow::Result<Outcome> {
    let sim = Sim::start(program, cpu, serde_json::json!({ "delay_ms": delay_ms })).await?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/py/sequential_upsert.py");
    let sim_before = sim_cpu_ns(&sim)?;
    let output = tokio::time::timeout(
        RUN_LIMIT,
        pinned(python, cpu)
            .arg(&script)
            .args(["--host", &sim.api.ip().to_string()])
            .args(["--port", &sim.api.port().to_string()])
            .args(["--user", USER, "--password", PASSWORD])
            .args(["--count", &jobs.to_string(), "--prefix", "sub-"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("the librouteros loop took too long")?
    .with_context(|| format!("cannot run {}", python.display()))?;
    let sim_cpu = sim_cpu_ns(&sim)? - sim_before;
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
    let cpu_seconds = result["cpu_seconds"].as_f64().context("cpu_seconds")?;
    let blocks = result["blocks"]
        .as_array()
        .map(|b| b.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    let router = figures(&sim).await?;
    sim.stop().await?;
    let outcome = Outcome {
        jobs,
        elapsed: Duration::from_secs_f64(seconds),
        cpu: (cpu_seconds * 1e9) as u64,
        sim_cpu,
        router,
        flushes: None,
        blocks,
    };
    outcome.check("librouteros")?;
    Ok(outcome)
}

// ---------------------------------------------------------------------------------------
// Runs and figures

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

fn range(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

fn blocks(o: &Outcome) -> String {
    if o.blocks.len() < 2 {
        return String::new();
    }
    let rates: Vec<String> = o
        .blocks
        .iter()
        .map(|s| format!("{:.0}", 1_000.0 / s))
        .collect();
    format!("      jobs/s per block of 1,000: {}", rates.join(" "))
}

/// The CPU the loop and the simulator share when pinned: the last one this process may use.
fn pin_cpu() -> Option<usize> {
    let n = std::thread::available_parallelism().map_or(1, usize::from);
    let taskset = std::process::Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (n > 1 && taskset).then(|| n - 1)
}

struct Case {
    label: &'static str,
    delay_ms: u64,
    target: f64,
    runs: usize,
    /// Also run the loop pinned to one CPU with the simulator.
    pinned: bool,
}

/// Runs one case: `runs` alternating runs of each side; prints each and the medians.
async fn case(
    c: &Case,
    program: &SimProgram,
    python: Option<&Path>,
    settings: Settings,
    pin: Option<usize>,
) -> anyhow::Result<()> {
    println!("\n{} ({} run(s), alternating):", c.label, c.runs);
    let jobs = settings.jobs;
    let mut ours = Vec::new();
    let mut free = Vec::new();
    let mut one_cpu = Vec::new();
    let (mut r_free, mut r_pinned) = (Vec::new(), Vec::new());
    for run in 0..c.runs {
        let mut a = None;
        let mut f = None;
        let mut p = None;
        // Even runs: agent first; odd runs: the loop first.
        for step in 0..3 {
            let step = if run % 2 == 0 { step } else { 2 - step };
            match (step, python) {
                (0, _) => a = Some(agent(program, c.delay_ms, settings).await?),
                (1, Some(py)) => {
                    f = Some(librouteros(program, py, c.delay_ms, jobs, None).await?);
                }
                (2, Some(py)) if c.pinned && pin.is_some() => {
                    p = Some(librouteros(program, py, c.delay_ms, jobs, pin).await?);
                }
                _ => {}
            }
        }
        let a = a.context("agent run")?;
        println!("  run {}:", run + 1);
        println!("    agent:                    {}", a.describe("agent"));
        if let Some(f) = &f {
            println!("    librouteros, free:        {}", f.describe("python"));
            if let Some(b) = Some(blocks(f)).filter(|b| !b.is_empty()) {
                println!("{b}");
            }
            r_free.push(a.per_second() / f.per_second());
            free.push(f.per_second());
        }
        if let Some(p) = &p {
            println!("    librouteros, one CPU:     {}", p.describe("python"));
            if let Some(b) = Some(blocks(p)).filter(|b| !b.is_empty()) {
                println!("{b}");
            }
            r_pinned.push(a.per_second() / p.per_second());
            one_cpu.push(p.per_second());
        }
        let mut ratios = Vec::new();
        if let Some(r) = r_free.last().filter(|_| f.is_some()) {
            ratios.push(format!("{r:.2}x the free loop"));
        }
        if let Some(r) = r_pinned.last().filter(|_| p.is_some()) {
            ratios.push(format!("{r:.2}x the one-CPU loop"));
        }
        if !ratios.is_empty() {
            println!("    agent: {}", ratios.join(", "));
        }
        if run == 0 {
            let words: Vec<String> = a
                .router
                .commands
                .iter()
                .map(|(w, n)| format!("{w} {n}"))
                .collect();
            println!(
                "    (both sides: the router saw {} per run)",
                words.join(", ")
            );
        }
        ours.push(a.per_second());
    }
    println!("  medians of {} run(s):", c.runs);
    println!("    agent {:.0} jobs/s", median(ours));
    let verdict = |ratios: &[f64]| {
        let m = median(ratios.to_vec());
        let (lo, hi) = range(ratios);
        let met = if m >= c.target { "met" } else { "MISSED" };
        format!(
            "{m:.2}x (runs {lo:.2}–{hi:.2}x; target >= {}x: {met})",
            c.target
        )
    };
    if !free.is_empty() {
        println!(
            "    librouteros, free: {:.0} jobs/s; agent / loop: {}",
            median(free),
            verdict(&r_free)
        );
    }
    if !one_cpu.is_empty() {
        println!(
            "    librouteros, one CPU: {:.0} jobs/s; agent / loop: {}",
            median(one_cpu),
            verdict(&r_pinned)
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if sim::is_sim_role() {
        return sim::sim_role();
    }
    bench()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn bench() -> anyhow::Result<()> {
    let settings = Settings {
        jobs: env_or("TIKFLEET_BENCH_JOBS", JOBS)?,
        per_router: env_or("TIKFLEET_BENCH_PER_ROUTER", PER_ROUTER)?,
        pool_size: env_or("TIKFLEET_BENCH_POOL", POOL_SIZE)?,
    };
    let runs = env_or("TIKFLEET_BENCH_RUNS", RUNS)?;
    let delay_runs = env_or("TIKFLEET_BENCH_DELAY_RUNS", DELAY_RUNS)?;
    let agent_only = std::env::var("TIKFLEET_BENCH_ONLY").is_ok_and(|v| v == "agent");
    let Settings {
        jobs,
        per_router,
        pool_size,
    } = settings;
    let program = SimProgram::from_env()?;
    let python = if agent_only { None } else { Some(python()?) };
    let pin = pin_cpu();
    println!(
        "create-PPP-secret jobs against one simulated router (RouterOS 7.16.2), {jobs} per run, \
         a fresh simulator process per run ({})",
        program.describe()
    );
    println!(
        "agent: executor over a sled queue and outbox, {per_router} jobs at once per router, \
         pool of {pool_size} pipelined connections, router and tenant rate {RATE} commands/s \
         (burst {RATE})"
    );
    println!(
        "librouteros: one command, wait for its reply, the next (print ?name=, then add); \
         'free': placed by the scheduler; 'one CPU': Python and the simulator pinned to CPU {}",
        pin.map_or("(unavailable: needs taskset and 2+ CPUs)".to_owned(), |c| c
            .to_string())
    );
    println!("both sides timed from connecting (login included) to the last job's end");
    // Warm-up (page cache, the sled and Python files, allocator); not reported.
    let warm = Settings {
        jobs: 200,
        ..settings
    };
    agent(&program, 0, warm).await?;
    if let Some(py) = &python {
        librouteros(&program, py, 0, 200, None).await?;
    }

    let cases = [
        Case {
            label: "no added latency",
            delay_ms: 0,
            target: 2.0,
            runs,
            pinned: true,
        },
        Case {
            label: "5 ms delay per reply",
            delay_ms: 5,
            target: 20.0,
            runs: delay_runs,
            pinned: false,
        },
    ];
    for c in cases.iter().filter(|c| c.runs > 0) {
        case(c, &program, python.as_deref(), settings, pin).await?;
    }
    Ok(())
}
