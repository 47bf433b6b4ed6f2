//! What the reconcile benchmark (`benches/reconcile.rs`) needs around the tools it times:
//! the secrets to apply, the simulator conditions (the simulator process itself is
//! `benches/sim`, shared with `router_jobs`), checks of the router's final state, and the
//! Python tools (Ansible's `api_modify`, a sequential librouteros loop) run from the bench
//! venv.
//!
//! Nothing here times anything itself except through the tools' own figures.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::process::Command;

use crate::sim::{PASSWORD, Sim, USER};

/// A number from the environment, or `default`.
pub fn env_or(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(n) => n.parse().with_context(|| format!("{name} is a number")),
        Err(_) => Ok(default),
    }
}

/// A comma-separated list from the environment (trimmed, lower case, empty items dropped).
pub fn env_list(name: &str) -> Option<Vec<String>> {
    std::env::var(name).ok().map(|v| {
        v.split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

// ---------------------------------------------------------------------------------------
// The secrets

/// One PPP secret as every tool is asked to apply it (also the JSON the Python tools read).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecretSpec {
    pub name: String,
    pub password: String,
    pub profile: String,
    pub service: String,
}

/// `n` secrets: `sub00001` (password `pw-00001`) … , profile `default` (built in, so no
/// profile needs creating), service `pppoe`.
pub fn secrets(n: usize) -> Vec<SecretSpec> {
    (1..=n)
        .map(|i| SecretSpec {
            name: format!("sub{i:05}"),
            password: format!("pw-{i:05}"),
            profile: "default".to_owned(),
            service: "pppoe".to_owned(),
        })
        .collect()
}

/// Writes `secrets` as a JSON list into `dir`; the Python tools read that file.
pub fn write_secrets(dir: &Path, secrets: &[SecretSpec]) -> anyhow::Result<PathBuf> {
    let path = dir.join("secrets.json");
    std::fs::write(&path, serde_json::to_vec(secrets)?)?;
    Ok(path)
}

// ---------------------------------------------------------------------------------------
// Conditions

/// A simulator condition, set through `PUT /routers/0/faults`.
#[derive(Clone, Copy, Debug)]
pub struct Condition {
    /// Its name in `TIKFLEET_BENCH_CONDITIONS`.
    pub key: &'static str,
    /// Its letter in the issue (a, b, c), also accepted by `TIKFLEET_BENCH_CONDITIONS`.
    pub letter: &'static str,
    pub label: &'static str,
    /// `delay_ms`: every reply delayed that long (commands still overlap).
    pub delay_ms: u64,
    /// `service_ms`: the router serves its commands one at a time, each taking that long.
    pub service_ms: u64,
}

impl Condition {
    /// The simulator faults of this condition (`PUT /routers/0/faults`).
    pub fn faults(&self) -> serde_json::Value {
        serde_json::json!({ "delay_ms": self.delay_ms, "service_ms": self.service_ms })
    }

    /// The time no tool can beat: `n` commands served one at a time (0 without service time).
    pub fn floor(&self, n: usize) -> Duration {
        Duration::from_millis(self.service_ms * n as u64)
    }
}

/// The three conditions of issue 6.
pub const CONDITIONS: [Condition; 3] = [
    Condition {
        key: "none",
        letter: "a",
        label: "(a) no added latency",
        delay_ms: 0,
        service_ms: 0,
    },
    Condition {
        key: "delay",
        letter: "b",
        label: "(b) 5 ms network delay on every reply (delay_ms: 5)",
        delay_ms: 5,
        service_ms: 0,
    },
    Condition {
        key: "service",
        letter: "c",
        label: "(c) 1 ms service time per command, served one at a time (service_ms: 1)",
        delay_ms: 0,
        service_ms: 1,
    },
];

/// The conditions `TIKFLEET_BENCH_CONDITIONS` names (`none,delay,service` or `a,b,c`), all
/// by default.
pub fn conditions_from_env() -> anyhow::Result<Vec<Condition>> {
    let Some(names) = env_list("TIKFLEET_BENCH_CONDITIONS") else {
        return Ok(CONDITIONS.to_vec());
    };
    for n in &names {
        anyhow::ensure!(
            CONDITIONS.iter().any(|c| c.key == n || c.letter == n),
            "TIKFLEET_BENCH_CONDITIONS: unknown condition {n:?} (none|delay|service, or a|b|c)"
        );
    }
    Ok(CONDITIONS
        .iter()
        .filter(|c| names.iter().any(|n| n == c.key || n == c.letter))
        .copied()
        .collect())
}

// ---------------------------------------------------------------------------------------
// What the router holds after a run

/// Checks that the router holds exactly `secrets` (name, password, profile, service),
/// read through the control endpoint; the error says what is wrong.
pub async fn verify(sim: &Sim, secrets: &[SecretSpec]) -> anyhow::Result<()> {
    let (by_name, rows) = sim.secrets().await?;
    let mut wrong = Vec::new();
    if rows != secrets.len() {
        wrong.push(format!(
            "{rows} secrets on the router, {} expected",
            secrets.len()
        ));
    }
    if by_name.len() != rows {
        wrong.push(format!("{rows} rows but {} distinct names", by_name.len()));
    }
    let mut bad = 0;
    for s in secrets {
        let problem = match by_name.get(&s.name) {
            None => Some(format!("{} is missing", s.name)),
            Some(row) => {
                let field = |k: &str| row.get(k).map_or("(absent)", String::as_str);
                [
                    ("password", &s.password),
                    ("profile", &s.profile),
                    ("service", &s.service),
                ]
                .into_iter()
                .find(|(k, v)| field(k) != v.as_str())
                .map(|(k, v)| format!("{}: {k} is {:?}, not {v:?}", s.name, field(k)))
            }
        };
        if let Some(p) = problem {
            bad += 1;
            if bad <= 3 {
                wrong.push(p);
            }
        }
    }
    if bad > 3 {
        wrong.push(format!("{bad} secrets wrong or missing in all"));
    }
    anyhow::ensure!(wrong.is_empty(), "wrong result: {}", wrong.join("; "));
    Ok(())
}

/// Checks that the router's `/ppp/secret` is exactly `state`'s secrets: every field
/// (password, profile, service, disabled, the managed marker) and nothing else.
pub async fn verify_state(
    sim: &Sim,
    state: &tikfleet_shared::domain::DesiredState,
) -> anyhow::Result<()> {
    let (by_name, rows) = sim.secrets().await?;
    anyhow::ensure!(
        rows == state.ppp_secrets.len() && by_name.len() == rows,
        "{rows} secrets on the router, {} desired",
        state.ppp_secrets.len()
    );
    for s in &state.ppp_secrets {
        let row = by_name
            .get(&s.name)
            .with_context(|| format!("{} is missing", s.name))?;
        let field = |k: &str| row.get(k).map_or("(absent)", String::as_str);
        let disabled = matches!(field("disabled"), "true" | "yes");
        anyhow::ensure!(
            field("password") == s.password.expose()
                && field("profile") == s.profile
                && field("service") == s.service.as_str()
                && disabled == s.disabled
                && field("comment").starts_with("tikfleet:"),
            "{} differs from its desired state: {row:?}",
            s.name
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The Python tools

/// The bench venv's Python: `TIKFLEET_BENCH_PYTHON` if set, else what `scripts/bench/venv`
/// prepares (it is run each time: it installs only when needed and prints the venv's path).
pub fn bench_python() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TIKFLEET_BENCH_PYTHON") {
        let p = PathBuf::from(p);
        anyhow::ensure!(
            p.exists(),
            "TIKFLEET_BENCH_PYTHON: {} is missing",
            p.display()
        );
        return Ok(p);
    }
    let script = repo_root().join("scripts/bench/venv");
    let out = std::process::Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed ({}); run it by hand to see why",
        script.display(),
        out.status
    );
    let stdout = String::from_utf8(out.stdout)?;
    let venv = stdout
        .lines()
        .last()
        .context("scripts/bench/venv printed no path")?;
    let python = PathBuf::from(venv.trim()).join("bin/python");
    anyhow::ensure!(python.exists(), "{} is missing", python.display());
    Ok(python)
}

/// The workspace's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A script of `benches/py`.
pub fn py_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("benches/py")
        .join(name)
}

/// Runs `script` against `api` with the secrets file, within `limit`; its one JSON object.
pub async fn run_python(
    python: &Path,
    script: &Path,
    api: SocketAddr,
    secrets_file: &Path,
    limit: Duration,
) -> anyhow::Result<serde_json::Value> {
    let name = script.file_name().map_or_else(
        || script.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let output = tokio::time::timeout(
        limit,
        Command::new(python)
            .arg(script)
            .args(["--host", &api.ip().to_string()])
            .args(["--port", &api.port().to_string()])
            .args(["--user", USER, "--password", PASSWORD])
            .arg("--secrets")
            .arg(secrets_file)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{name} took longer than {} s", limit.as_secs()))?
    .with_context(|| format!("cannot run {}", python.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{name} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim_end()
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{name} printed no JSON: {text}"))?;
    serde_json::from_str(line).with_context(|| format!("{name} printed {line}"))
}

/// A number of seconds from a tool's JSON.
pub fn secs(v: &serde_json::Value, key: &str) -> Option<Duration> {
    v[key]
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}
