//! Benchmark (issue 6): how fast 10,000 PPP secrets get applied to ONE simulated router by
//! three tools, in the same run, in three simulator conditions. Prints every time, the
//! router's view of each run (commands, connections, most commands in flight) and the
//! ratios against the targets; nothing is asserted.
//!
//! The tools:
//!
//! - *tikfleet*: the agent's reconciler, through [`run_tikfleet`]: a fresh data folder (store,
//!   outbox with an audit record per command, desired-state store), a connection, the
//!   desired state stored as the uplink stores it, then one pass.
//! - *ansible*: Ansible's `community.routeros.api_modify` (`path: ppp secret`, `data:` the
//!   secrets, `handle_absent_entries: ignore`) in a playbook run with `ansible-playbook`
//!   against localhost (`connection: local`, `gather_facts: false`), by
//!   `benches/py/ansible_apply.py`. The module connects with librouteros; it prints the whole
//!   menu, adds the missing entries one at a time (each waiting for its reply) and prints the
//!   menu again for its result.
//! - *loop*: `benches/py/sequential_add.py`, one `/ppp/secret/add` per secret, each waiting
//!   for its reply, with librouteros.
//! - *pipelined*, a reference and not a contender: `benches/py/pipelined_add.py`, the same
//!   adds tagged, up to 512 outstanding on one librouteros connection. It shows what the
//!   simulator allows in each condition (with `service_ms: 1` it reaches the nominal floor).
//!
//! The conditions ([`support::CONDITIONS`], set through the simulator's control endpoint,
//! `PUT /routers/0/faults`): (a) none; (b) `delay_ms: 5`, every reply 5 ms late (commands
//! still overlap); (c) `service_ms: 1`, the router serves its commands one at a time, 1 ms
//! each, so N secrets take at least N ms (the *floor*: 10 s for 10,000).
//!
//! # Method
//!
//! - **A fresh simulator process per tool per condition**, so each tool starts from an empty
//!   router: by default this bench's own executable started again in the simulator's role
//!   (`tikfleet_sim::start`, what the `tikfleet-sim` binary runs), or the binary named by
//!   `TIKFLEET_SIM_BIN`. RouterOS 7.16.2, plain API, loopback.
//! - **The same secrets for every tool**: `sub00001` … with password `pw-00001` …, profile
//!   `default` (built in, nothing to create), service `pppoe` ([`support::secrets`]); the
//!   Python tools read them from one JSON file.
//! - **Checked, then counted**: after each run the harness reads `/ppp/secret` through the
//!   control endpoint and requires exactly those secrets (name, password, profile, service);
//!   a run with a wrong result is reported as failed and its time is not used.
//! - **Measured, not assumed**: after each run the router's stats give the commands it saw
//!   by word, the connections, the span from the first command received to the last (for a
//!   pipelining client less than its time: the last command arrives before it is served), and
//!   `max_in_flight`, the most commands it was processing at once, which shows whether a
//!   tool keeps one command in flight or pipelines.
//! - **What each time covers**: tikfleet, what [`run_tikfleet`] returns (connecting
//!   included); the loop, from just before connecting (login included) to the last reply,
//!   inside the script (interpreter start and imports excluded); Ansible, the wall time of
//!   the whole `ansible-playbook` process, *process start included* (interpreter, imports,
//!   playbook and vars parsing, templating, the module's run and its result), what an
//!   operator waits for; the task's own duration (json callback) is printed beside it.
//! - Before the measured runs, each Python tool runs once on 100 secrets, unreported (page
//!   cache, Python bytecode).
//!
//! The Python is the bench venv's (`target/bench-venv`, pinned `ansible` and `librouteros`
//! of `scripts/bench/requirements.txt`): the bench runs `scripts/bench/venv` itself, which
//! installs only when needed, unless `TIKFLEET_BENCH_PYTHON` names a Python to use. If that
//! fails, Ansible and the loop are skipped with what to run.
//!
//! # Measured (2-vCPU VM, quiet, 10,000 secrets, 2026-11-24)
//!
//! The scale run: converge from empty 0.256 s, 1,000 mixed changes 0.093 s, a drift check that
//! finds nothing 0.073 s. The comparison, tikfleet / Ansible 12.3.0 (community.routeros
//! 3.14.0) / the loop: (a) 0.206 s / 8.05 s / 1.14 s; (b) 0.582 s / 70.6 s / 64.8 s, so the
//! loop takes 111x and Ansible 121x as long (targets 20x and 10x); (c) 10.04 s / 29.5 s /
//! 23.0 s, tikfleet at 1.00x the 10 s floor (target 1.2x). Every Ansible and loop run had
//! `max_in_flight` 1; tikfleet keeps up to its window (128) in flight. See
//! docs/benchmarks.md.
//!
//! Run: `cargo bench -p tikfleet-agent --bench reconcile`. Knobs: `TIKFLEET_BENCH_SECRETS`
//! (default 10000), `TIKFLEET_BENCH_ONLY` (comma list of `tikfleet,ansible,loop,pipelined`),
//! `TIKFLEET_BENCH_CONDITIONS` (comma list of `none,delay,service` or `a,b,c`),
//! `TIKFLEET_BENCH_RUN_LIMIT_S` (longest run, default 1800), `TIKFLEET_BENCH_PYTHON`,
//! `TIKFLEET_SIM_BIN`.

mod sim;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use sim::{RouterStats, Sim, SimProgram};
use support::{Condition, SecretSpec};
use tikfleet_agent::audit::AuditLog;
use tikfleet_agent::clock::{SharedClock, SystemClock};
use tikfleet_agent::desired::DesiredStore;
use tikfleet_agent::outbox::{Outbox, OutboxConfig};
use tikfleet_agent::reconcile::{PassReport, ReconcileConfig, Reconciler, Request};
use tikfleet_agent::router::{RouterEndpoint, TlsMode};
use tikfleet_agent::routeros::{DriverConfig, RouterOsClient};
use tikfleet_agent::store::{Store, StoreConfig};
use tikfleet_shared::domain::{DesiredState, DriftSettings, PppSecret, PppService};
use tikfleet_shared::record::DriftTrigger;
use tikfleet_shared::{RouterId, Secret, TenantId, UnixMillis};

// =======================================================================================
// tikfleet's side: the agent's reconciler as `tikfleet-agent run` has it.
// =======================================================================================

/// An agent's reconciler over a fresh data folder, connected to one router: durable store,
/// outbox with an audit record per router command, desired-state store.
struct Tikfleet {
    _dir: tempfile::TempDir,
    router: RouterId,
    tenant: TenantId,
    desired: Arc<DesiredStore>,
    reconciler: Reconciler,
    client: RouterOsClient,
}

impl Tikfleet {
    /// Opens the store and connects (login and version read included).
    async fn connect(api: SocketAddr) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(&StoreConfig::new(dir.path()))?;
        let outbox = Arc::new(Outbox::open(&store, OutboxConfig::default())?);
        let audit = Arc::new(AuditLog::start(outbox));
        let desired = Arc::new(DesiredStore::open(&store)?);
        let clock: SharedClock = Arc::new(SystemClock);
        let reconciler = Reconciler::new(
            Arc::clone(&desired),
            Arc::clone(&audit),
            Arc::clone(&clock),
            ReconcileConfig::default(),
        );
        let router = RouterId::new();
        let tenant = TenantId::new();
        let endpoint = RouterEndpoint {
            id: router,
            tenant,
            name: "bench".into(),
            host: api.ip().to_string(),
            api_port: api.port(),
            ssh_port: 22,
            tls: TlsMode::Plain,
            username: sim::USER.into(),
            password: Secret::new(sim::PASSWORD),
        };
        let client = RouterOsClient::connect(
            endpoint,
            DriverConfig::default(),
            clock,
            Arc::new(audit.observer()),
        )
        .await?;
        Ok(Self {
            _dir: dir,
            router,
            tenant,
            desired,
            reconciler,
            client,
        })
    }

    fn state(&self, generation: u64, secrets: Vec<PppSecret>) -> DesiredState {
        DesiredState {
            generation,
            tenant_id: self.tenant,
            router_id: self.router,
            compiled_at: UnixMillis::EPOCH,
            profiles: vec![],
            ppp_secrets: secrets,
            hotspot_users: vec![],
            address_list_entries: vec![],
            lifecycles: vec![],
            drift: DriftSettings::default(),
        }
    }

    /// Stores `state` (durably, as the uplink does before acking; not timed) and returns it.
    async fn want(&self, state: DesiredState) -> anyhow::Result<DesiredState> {
        self.desired.store(&state).await?;
        Ok(state)
    }

    /// One pass; fails unless it finished without error.
    async fn pass(&self, trigger: DriftTrigger) -> anyhow::Result<PassReport> {
        let r = self
            .reconciler
            .pass(&self.client, self.router, Request::of(trigger), &|_| {})
            .await?;
        if let Some(e) = &r.error {
            anyhow::bail!("the pass failed: {e}");
        }
        Ok(r)
    }
}

fn ppp_secret(s: &SecretSpec) -> PppSecret {
    PppSecret {
        subscriber_id: None,
        name: s.name.clone(),
        password: Secret::new(s.password.clone()),
        service: PppService::Pppoe,
        profile: s.profile.clone(),
        disabled: false,
        remote_address: None,
        comment: None,
    }
}

/// Applies `secrets` with tikfleet's reconciler to the empty router whose API listens on
/// `api` and returns how long it took: from before connecting (login and version read
/// included) until the pass ended — every secret applied, its audit records, the drift and
/// apply reports committed to the outbox, the state recorded as applied.
async fn run_tikfleet(api: SocketAddr, secrets: &[SecretSpec]) -> anyhow::Result<Duration> {
    let secrets_wanted = secrets.iter().map(ppp_secret).collect::<Vec<_>>();
    let started = Instant::now();
    let t = Tikfleet::connect(api).await?;
    let state = t.state(1, secrets_wanted);
    // Storing the state is the uplink's work before the pass: not part of the pass, but
    // inside the timed window all the same (it is small).
    t.want(state).await?;
    let r = t.pass(DriftTrigger::Reconcile).await?;
    let time = started.elapsed();
    anyhow::ensure!(r.steps == secrets.len(), "{}", r.detail());
    Ok(time)
}

/// The scale run of the issue: 10,000 subscribers on one router converge from empty, then
/// 1,000 mixed changes, then a drift check that finds nothing; each checked against the
/// router, each time printed.
async fn scale(program: &SimProgram, n: usize) -> anyhow::Result<()> {
    println!("\ntikfleet at scale, {n} subscribers on one router, no added latency:");
    let sim = Sim::start(program, None, support::CONDITIONS[0].faults()).await?;
    let t = Tikfleet::connect(sim.api).await?;
    let specs = support::secrets(n);
    let mut secrets: Vec<PppSecret> = specs.iter().map(ppp_secret).collect();

    let one = t.want(t.state(1, secrets.clone())).await?;
    let started = Instant::now();
    let r = t.pass(DriftTrigger::Reconcile).await?;
    let converge = started.elapsed();
    support::verify_state(&sim, &one).await?;
    println!(
        "  converge from empty   {:>8.3} s  {} (target < 2 s)",
        converge.as_secs_f64(),
        r.detail()
    );

    // 1,000 mixed changes: 300 removed, 200 on another profile, 100 new passwords, 100
    // disabled, 300 new.
    let extra = support::secrets(n + 300).split_off(n);
    secrets.drain(0..300);
    for (i, s) in secrets.iter_mut().enumerate().take(400) {
        match i {
            0..200 => s.profile = "default-encryption".into(),
            200..300 => s.password = Secret::new(format!("new-{i}")),
            _ => s.disabled = true,
        }
    }
    secrets.extend(extra.iter().map(ppp_secret));
    let two = t.want(t.state(2, secrets)).await?;
    let started = Instant::now();
    let r = t.pass(DriftTrigger::Reconcile).await?;
    let changes = started.elapsed();
    anyhow::ensure!(r.steps == 1_000, "{}", r.detail());
    support::verify_state(&sim, &two).await?;
    println!(
        "  1,000 mixed changes   {:>8.3} s  {}",
        changes.as_secs_f64(),
        r.detail()
    );

    let started = Instant::now();
    let r = t.pass(DriftTrigger::Request).await?;
    let check = started.elapsed();
    anyhow::ensure!(r.steps == 0 && r.findings == 0, "{}", r.detail());
    support::verify_state(&sim, &two).await?;
    println!(
        "  drift check, no drift {:>8.3} s  {} (target < 1 s)",
        check.as_secs_f64(),
        r.detail()
    );
    sim.stop().await?;
    Ok(())
}

// =======================================================================================

/// Secrets per run (`TIKFLEET_BENCH_SECRETS`).
const SECRETS: u64 = 10_000;
/// Longest run in seconds (`TIKFLEET_BENCH_RUN_LIMIT_S`): a stuck run fails, not hangs.
const RUN_LIMIT_S: u64 = 1_800;
/// Secrets of the unreported warm-up runs.
const WARM_UP: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Tikfleet,
    Ansible,
    Loop,
    /// The reference: what one pipelining connection gets from the simulator.
    Pipelined,
}

impl Tool {
    const ALL: [Tool; 4] = [Tool::Tikfleet, Tool::Ansible, Tool::Loop, Tool::Pipelined];

    fn key(self) -> &'static str {
        match self {
            Tool::Tikfleet => "tikfleet",
            Tool::Ansible => "ansible",
            Tool::Loop => "loop",
            Tool::Pipelined => "pipelined",
        }
    }

    fn python(self) -> bool {
        self != Tool::Tikfleet
    }
}

/// The tools `TIKFLEET_BENCH_ONLY` names, all by default.
fn tools_from_env() -> anyhow::Result<Vec<Tool>> {
    let Some(names) = support::env_list("TIKFLEET_BENCH_ONLY") else {
        return Ok(Tool::ALL.to_vec());
    };
    for n in &names {
        anyhow::ensure!(
            Tool::ALL.iter().any(|t| t.key() == n),
            "TIKFLEET_BENCH_ONLY: unknown tool {n:?} (tikfleet|ansible|loop|pipelined)"
        );
    }
    Ok(Tool::ALL
        .into_iter()
        .filter(|t| names.iter().any(|n| n == t.key()))
        .collect())
}

/// What a run came to.
enum Outcome {
    /// Applied and checked: the tool's time and what else it reported.
    Timed { time: Duration, note: String },
    /// Not run (not wired, or no Python).
    Skipped(String),
    /// It failed, or the router's secrets were wrong afterwards.
    Failed(String),
}

struct Run {
    tool: Tool,
    outcome: Outcome,
    /// The router's stats after the run, when they could be read.
    stats: Option<RouterStats>,
}

impl Run {
    fn time(&self) -> Option<Duration> {
        match self.outcome {
            Outcome::Timed { time, .. } => Some(time),
            _ => None,
        }
    }
}

/// What every run shares.
struct Context {
    program: SimProgram,
    secrets: Vec<SecretSpec>,
    secrets_file: PathBuf,
    /// The bench venv's Python, or why there is none.
    python: Result<PathBuf, String>,
    limit: Duration,
}

/// One tool against a fresh simulator in `condition`: run, read the stats, check.
async fn run(tool: Tool, condition: &Condition, cx: &Context) -> Run {
    let python = match (&cx.python, tool.python()) {
        (Err(why), true) => {
            return Run {
                tool,
                outcome: Outcome::Skipped(why.clone()),
                stats: None,
            };
        }
        (Ok(p), true) => Some(p.as_path()),
        (_, false) => None,
    };
    let sim = match Sim::start(&cx.program, None, condition.faults()).await {
        Ok(sim) => sim,
        Err(e) => {
            return Run {
                tool,
                outcome: Outcome::Failed(format!("simulator: {e:#}")),
                stats: None,
            };
        }
    };
    let result = apply(tool, &sim, python, &cx.secrets, &cx.secrets_file, cx.limit).await;
    let stats = sim.stats().await;
    let checked = match &result {
        Ok(_) => support::verify(&sim, &cx.secrets).await,
        Err(_) => Ok(()),
    };
    if let Err(e) = sim.stop().await {
        eprintln!("reconcile bench: stopping a simulator: {e:#}");
    }
    let outcome = match (result, checked) {
        (Err(e), _) => Outcome::Failed(format!("{e:#}")),
        (Ok(_), Err(e)) => Outcome::Failed(format!("{e:#}")),
        (Ok((time, note)), Ok(())) => Outcome::Timed { time, note },
    };
    Run {
        tool,
        outcome,
        stats: stats.ok(),
    }
}

/// Runs one tool against `sim`: its time and a note of its other figures.
async fn apply(
    tool: Tool,
    sim: &Sim,
    python: Option<&Path>,
    secrets: &[SecretSpec],
    secrets_file: &Path,
    limit: Duration,
) -> anyhow::Result<(Duration, String)> {
    let n = secrets.len() as u64;
    match tool {
        Tool::Tikfleet => {
            let time = tokio::time::timeout(limit, run_tikfleet(sim.api, secrets))
                .await
                .with_context(|| format!("took longer than {} s", limit.as_secs()))??;
            Ok((time, "connecting included".to_owned()))
        }
        Tool::Ansible => {
            let script = support::py_script("ansible_apply.py");
            let python = python.context("no Python")?;
            let v = support::run_python(python, &script, sim.api, secrets_file, limit).await?;
            anyhow::ensure!(
                v["count"].as_u64() == Some(n) && v["new_entries"].as_u64() == Some(n),
                "ansible_apply.py reported {v}"
            );
            let time = support::secs(&v, "seconds").context("seconds")?;
            let task = support::secs(&v, "task_seconds")
                .map_or("?".to_owned(), |t| format!("{:.3} s", t.as_secs_f64()));
            Ok((
                time,
                format!(
                    "whole ansible-playbook process, start included; the task alone {task} \
                     (ansible {}, community.routeros {})",
                    v["ansible"].as_str().unwrap_or("?"),
                    v["community_routeros"].as_str().unwrap_or("?")
                ),
            ))
        }
        Tool::Loop => {
            let script = support::py_script("sequential_add.py");
            let python = python.context("no Python")?;
            let v = support::run_python(python, &script, sim.api, secrets_file, limit).await?;
            anyhow::ensure!(
                v["added"].as_u64() == Some(n),
                "sequential_add.py reported {v}"
            );
            let time = support::secs(&v, "seconds").context("seconds")?;
            let cpu = support::secs(&v, "cpu_seconds").map_or(0.0, |t| t.as_secs_f64());
            Ok((
                time,
                format!("connect and login included; Python CPU {cpu:.3} s"),
            ))
        }
        Tool::Pipelined => {
            let script = support::py_script("pipelined_add.py");
            let python = python.context("no Python")?;
            let v = support::run_python(python, &script, sim.api, secrets_file, limit).await?;
            anyhow::ensure!(
                v["added"].as_u64() == Some(n),
                "pipelined_add.py reported {v}"
            );
            let time = support::secs(&v, "seconds").context("seconds")?;
            Ok((
                time,
                format!(
                    "reference, not a contender: librouteros, tagged adds, up to {} \
                     outstanding on one connection; connect and login included",
                    v["window"].as_u64().unwrap_or(0)
                ),
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Printing

fn seconds(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn router(stats: &Option<RouterStats>) -> String {
    match stats {
        Some(s) => format!(
            "max_in_flight {}, {} conn, span {:.3} s; {}",
            s.max_in_flight,
            s.connections,
            s.span_ms as f64 / 1e3,
            s.commands()
        ),
        None => "router stats unavailable".to_owned(),
    }
}

fn print_run(r: &Run) {
    let key = r.tool.key();
    match &r.outcome {
        Outcome::Timed { time, note } => {
            println!("  {key:<9} {:>11}  ({note})", seconds(*time));
            println!("  {:<9} {:>11}  router: {}", "", "", router(&r.stats));
        }
        Outcome::Skipped(why) => println!("  {key:<9} {:>11}  ({why})", "skipped"),
        Outcome::Failed(why) => {
            println!("  {key:<9} {:>11}  {why}", "FAILED");
            if r.stats.is_some() {
                println!("  {:<9} {:>11}  router: {}", "", "", router(&r.stats));
            }
        }
    }
}

/// The targets of issue 6 for a condition: (tikfleet's speed-up over the loop, over
/// Ansible, tikfleet's time over the floor at most).
fn targets(c: &Condition) -> (Option<f64>, Option<f64>, Option<f64>) {
    match c.key {
        "delay" => (Some(20.0), Some(10.0), None),
        "service" => (None, None, Some(1.2)),
        _ => (None, None, None),
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// `name / tikfleet = R x`, with the target if any.
fn speed_up(name: &str, other: Option<Duration>, ours: Duration, target: Option<f64>) -> String {
    match other {
        Some(o) => {
            let r = o.as_secs_f64() / ours.as_secs_f64();
            match target {
                Some(t) => format!(
                    "{name} / tikfleet = {r:.1}x (target >= {t}x: {})",
                    verdict(r >= t)
                ),
                None => format!("{name} / tikfleet = {r:.1}x"),
            }
        }
        None => format!("{name} / tikfleet: n/a ({name} not timed)"),
    }
}

fn summary(n: usize, results: &[(Condition, Vec<Run>)]) {
    println!("\n== summary: {n} secrets onto one router, a fresh simulator per run ==");
    println!(
        "  {:<10} {:<9} {:>11} {:>9} {:>14} {:>6} {:>12}",
        "condition", "tool", "time", "/ floor", "max_in_flight", "conns", "router span"
    );
    for (c, runs) in results {
        let floor = c.floor(n);
        for r in runs {
            let time = match &r.outcome {
                Outcome::Timed { time, .. } => seconds(*time),
                Outcome::Skipped(_) => "skipped".to_owned(),
                Outcome::Failed(_) => "FAILED".to_owned(),
            };
            let over = match r.time() {
                Some(t) if !floor.is_zero() => {
                    format!("{:.2}", t.as_secs_f64() / floor.as_secs_f64())
                }
                _ => "-".to_owned(),
            };
            let (mif, conns, span) =
                r.stats
                    .as_ref()
                    .map_or(("?".to_owned(), "?".to_owned(), "?".to_owned()), |s| {
                        (
                            s.max_in_flight.to_string(),
                            s.connections.to_string(),
                            format!("{:.3} s", s.span_ms as f64 / 1e3),
                        )
                    });
            println!(
                "  {:<10} {:<9} {time:>11} {over:>9} {mif:>14} {conns:>6} {span:>12}",
                c.key,
                r.tool.key()
            );
        }
    }
    println!("\n  ratios and targets:");
    for (c, runs) in results {
        let time = |tool: Tool| runs.iter().find(|r| r.tool == tool).and_then(Run::time);
        let (t_loop, t_ansible, t_floor) = targets(c);
        let floor = c.floor(n);
        let mut lines = Vec::new();
        match time(Tool::Tikfleet) {
            Some(ours) => {
                lines.push(speed_up("loop", time(Tool::Loop), ours, t_loop));
                lines.push(speed_up("ansible", time(Tool::Ansible), ours, t_ansible));
                if !floor.is_zero() {
                    let r = ours.as_secs_f64() / floor.as_secs_f64();
                    lines.push(match t_floor {
                        Some(t) => format!(
                            "tikfleet / floor ({}) = {r:.2} (target <= {t}: {})",
                            seconds(floor),
                            verdict(r <= t)
                        ),
                        None => format!("tikfleet / floor ({}) = {r:.2}", seconds(floor)),
                    });
                }
                if let Some(p) = time(Tool::Pipelined) {
                    lines.push(format!(
                        "tikfleet / pipelined reference ({}) = {:.2}",
                        seconds(p),
                        ours.as_secs_f64() / p.as_secs_f64()
                    ));
                }
            }
            None => {
                let mut t = Vec::new();
                if let Some(x) = t_loop {
                    t.push(format!("tikfleet >= {x}x the loop"));
                }
                if let Some(x) = t_ansible {
                    t.push(format!("tikfleet >= {x}x Ansible"));
                }
                if let Some(x) = t_floor {
                    t.push(format!("tikfleet within {x}x of the floor"));
                }
                let targets = if t.is_empty() {
                    String::new()
                } else {
                    format!("; targets: {}", t.join(", "))
                };
                lines.push(format!("tikfleet not timed: no ratios{targets}"));
            }
        }
        if let (Some(a), Some(l)) = (time(Tool::Ansible), time(Tool::Loop)) {
            lines.push(format!(
                "ansible / loop = {:.2}x",
                a.as_secs_f64() / l.as_secs_f64()
            ));
        }
        if !floor.is_zero() {
            for tool in [Tool::Ansible, Tool::Loop, Tool::Pipelined] {
                if let Some(t) = time(tool) {
                    lines.push(format!(
                        "{} / floor ({}) = {:.2}",
                        tool.key(),
                        seconds(floor),
                        t.as_secs_f64() / floor.as_secs_f64()
                    ));
                }
            }
        }
        println!("  {}", c.label);
        for l in lines {
            println!("    {l}");
        }
    }
}

// ---------------------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    if sim::is_sim_role() {
        return sim::sim_role();
    }
    bench()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn bench() -> anyhow::Result<()> {
    let n = usize::try_from(support::env_or("TIKFLEET_BENCH_SECRETS", SECRETS)?)?;
    let tools = tools_from_env()?;
    let conditions = support::conditions_from_env()?;
    let limit = Duration::from_secs(support::env_or("TIKFLEET_BENCH_RUN_LIMIT_S", RUN_LIMIT_S)?);
    let program = SimProgram::from_env()?;
    let python = if tools.iter().any(|t| t.python()) {
        tokio::task::spawn_blocking(support::bench_python)
            .await?
            .map_err(|e| {
                let why = format!(
                    "no bench venv: {e:#}; run scripts/bench/venv (or set TIKFLEET_BENCH_PYTHON)"
                );
                println!("the Python tools are skipped: {why}");
                why
            })
    } else {
        Err("not asked for".to_owned())
    };
    let dir = tempfile::tempdir()?;
    let secrets = support::secrets(n);
    let secrets_file = support::write_secrets(dir.path(), &secrets)?;

    println!(
        "applying {n} PPP secrets (sub00001…, profile default, service pppoe) to one simulated \
         router (RouterOS 7.16.2), a fresh simulator process per tool per condition ({})",
        program.describe()
    );
    if let Ok(py) = &python {
        println!("python: {}", py.display());
    }
    println!(
        "times: tikfleet as run_tikfleet reports it; the loop from connecting (login included) \
         to its last reply; ansible the whole ansible-playbook process, its start included"
    );
    println!(
        "after each run the router must hold exactly these secrets (name, password, profile, \
         service), or the run is FAILED; max_in_flight is the router's own count"
    );

    // Warm-up (page cache, Python bytecode), unreported.
    if let Ok(py) = &python {
        let warm = support::secrets(WARM_UP.min(n.max(1)));
        let warm_file = dir.path().join("warm");
        std::fs::create_dir_all(&warm_file)?;
        let warm_file = support::write_secrets(&warm_file, &warm)?;
        let warm_cx = Context {
            program: program.clone(),
            secrets: warm,
            secrets_file: warm_file,
            python: Ok(py.clone()),
            limit,
        };
        for tool in tools.iter().copied().filter(|t| t.python()) {
            let r = run(tool, &CONDITIONS_NONE, &warm_cx).await;
            if let Outcome::Failed(why) = &r.outcome {
                println!("warm-up of {} failed: {why}", tool.key());
            }
        }
    }

    if tools.contains(&Tool::Tikfleet)
        && conditions.iter().any(|c| c.key == CONDITIONS_NONE.key)
        && let Err(e) = scale(&program, n).await
    {
        println!("  FAILED: {e:#}");
    }

    let cx = Context {
        program,
        secrets,
        secrets_file,
        python,
        limit,
    };
    let mut results = Vec::new();
    for c in &conditions {
        println!("\n{}:", c.label);
        let mut runs = Vec::new();
        for &tool in &tools {
            let r = run(tool, c, &cx).await;
            print_run(&r);
            runs.push(r);
        }
        results.push((*c, runs));
    }
    summary(n, &results);
    Ok(())
}

/// Condition (a), for the warm-up.
const CONDITIONS_NONE: Condition = support::CONDITIONS[0];
