//! What the reconcile benchmark (`benches/reconcile.rs`) needs around the tools it times:
//! the secrets to apply, a simulator in its own process with a condition set through its
//! control endpoint, the router's command statistics and final state, and the two Python
//! tools (Ansible's `api_modify`, a sequential librouteros loop) run from the bench venv.
//!
//! Nothing here times anything itself except through the tools' own figures.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// The router's login user.
pub const USER: &str = "admin";
/// Its password.
pub const PASSWORD: &str = "bench-pw";
/// The environment variable that makes the bench executable a simulator (see [`sim_role`]).
pub const SIM_ROLE: &str = "TIKFLEET_BENCH_SIM_ROLE";

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
// The simulator, in its own process

/// The simulator role: `tikfleet_sim::start` with one router (API and control endpoint on
/// loopback, free ports), the listener lines on stdout, then run until stdin closes (the
/// bench's end of the pipe), so a simulator never outlives the bench.
pub fn sim_role() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut config = tikfleet_sim::Config::local();
        config.api_ssl = None;
        config.ssh = None;
        config.user = USER.to_owned();
        config.password = PASSWORD.to_owned();
        let sim = tikfleet_sim::start(config).await?;
        let mut out = tokio::io::stdout();
        for line in sim.lines() {
            out.write_all(format!("{line}\n").as_bytes()).await?;
        }
        out.flush().await?;
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        sim.shutdown().await;
        anyhow::Ok(())
    })
}

/// How to start a simulator process.
#[derive(Clone, Debug)]
pub enum SimProgram {
    /// This executable, in the simulator role.
    SelfRole(PathBuf),
    /// A `tikfleet-sim` binary (`TIKFLEET_SIM_BIN`).
    Binary(PathBuf),
}

impl SimProgram {
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var_os("TIKFLEET_SIM_BIN") {
            Some(bin) => {
                let bin = PathBuf::from(bin);
                anyhow::ensure!(
                    bin.exists(),
                    "TIKFLEET_SIM_BIN: {} is missing",
                    bin.display()
                );
                Ok(Self::Binary(bin))
            }
            None => Ok(Self::SelfRole(std::env::current_exe()?)),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::SelfRole(_) => "this bench's executable in the simulator role".to_owned(),
            Self::Binary(b) => b.display().to_string(),
        }
    }

    fn command(&self) -> Command {
        match self {
            Self::SelfRole(exe) => {
                let mut cmd = Command::new(exe);
                cmd.env(SIM_ROLE, "1");
                cmd
            }
            Self::Binary(bin) => {
                let mut cmd = Command::new(bin);
                cmd.args(["--api", "127.0.0.1:0", "--control", "127.0.0.1:0"])
                    .args(["--user", USER, "--password", PASSWORD]);
                cmd
            }
        }
    }
}

/// What the router's stats say after a run (`GET /routers/0/stats`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RouterStats {
    /// Per command word.
    pub by_path: BTreeMap<String, u64>,
    /// From the first command received to the last (ms).
    pub span_ms: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Most commands being processed at once.
    pub max_in_flight: u64,
}

impl RouterStats {
    /// `/login 1, /ppp/secret/add 10000, …`.
    pub fn commands(&self) -> String {
        let words: Vec<String> = self
            .by_path
            .iter()
            .map(|(w, n)| format!("{w} {n}"))
            .collect();
        words.join(", ")
    }
}

/// A running simulator process with one router in a given condition.
pub struct Sim {
    child: Child,
    pid: Option<u32>,
    /// The router's API (plain).
    pub api: SocketAddr,
    control: SocketAddr,
    http: reqwest::Client,
}

impl Sim {
    /// Starts a fresh simulator (an empty router) and sets `condition`.
    pub async fn start(program: &SimProgram, condition: &Condition) -> anyhow::Result<Self> {
        let mut child = program
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start the simulator ({})", program.describe()))?;
        let pid = child.id();
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let (mut api, mut control) = (None, None);
        while control.is_none() {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .context("the simulator did not start")??
                .context("the simulator exited before listening")?;
            match line.split_once(' ') {
                Some(("api", a)) => api = Some(a.parse()?),
                Some(("control", a)) => control = Some(a.parse()?),
                _ => {}
            }
        }
        let sim = Self {
            child,
            pid,
            api: api.context("no api line")?,
            control: control.context("no control line")?,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
        };
        let body = serde_json::json!({
            "delay_ms": condition.delay_ms,
            "service_ms": condition.service_ms,
        });
        let url = sim.url("/routers/0/faults");
        let resp = sim.http.put(&url).json(&body).send().await?;
        let status = resp.status();
        anyhow::ensure!(
            status.is_success(),
            "setting the condition {body}: {status} {}",
            resp.text().await.unwrap_or_default()
        );
        Ok(sim)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.control)
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.http.get(self.url(path)).send().await?;
        let status = resp.status();
        anyhow::ensure!(
            status.is_success(),
            "GET {path}: {status} {}",
            resp.text().await.unwrap_or_default()
        );
        Ok(resp.json().await?)
    }

    /// The router's command statistics.
    pub async fn stats(&self) -> anyhow::Result<RouterStats> {
        self.get("/routers/0/stats").await
    }

    /// Checks that the router holds exactly `secrets` (name, password, profile, service),
    /// read through the control endpoint; the error says what is wrong.
    pub async fn verify(&self, secrets: &[SecretSpec]) -> anyhow::Result<()> {
        let rows: Vec<HashMap<String, String>> =
            self.get("/routers/0/menu?path=/ppp/secret").await?;
        let mut wrong = Vec::new();
        if rows.len() != secrets.len() {
            wrong.push(format!(
                "{} secrets on the router, {} expected",
                rows.len(),
                secrets.len()
            ));
        }
        let by_name: HashMap<&str, &HashMap<String, String>> = rows
            .iter()
            .filter_map(|r| r.get("name").map(|n| (n.as_str(), r)))
            .collect();
        if by_name.len() != rows.len() {
            wrong.push(format!(
                "{} rows but {} distinct names",
                rows.len(),
                by_name.len()
            ));
        }
        let mut bad = 0;
        for s in secrets {
            let problem = match by_name.get(s.name.as_str()) {
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
        &self,
        state: &tikfleet_shared::domain::DesiredState,
    ) -> anyhow::Result<()> {
        let rows: Vec<HashMap<String, String>> =
            self.get("/routers/0/menu?path=/ppp/secret").await?;
        let by_name: HashMap<&str, &HashMap<String, String>> = rows
            .iter()
            .filter_map(|r| r.get("name").map(|n| (n.as_str(), r)))
            .collect();
        anyhow::ensure!(
            rows.len() == state.ppp_secrets.len() && by_name.len() == rows.len(),
            "{} secrets on the router, {} desired",
            rows.len(),
            state.ppp_secrets.len()
        );
        for s in &state.ppp_secrets {
            let row = by_name
                .get(s.name.as_str())
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

    /// Ends the simulator: the bench's role exits when its stdin closes, `tikfleet-sim` on
    /// SIGTERM.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.child.stdin.take());
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            use nix::sys::signal::{Signal, kill};
            let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => self.child.kill().await?,
        }
        Ok(())
    }
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
