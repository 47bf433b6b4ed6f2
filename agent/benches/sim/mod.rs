//! A simulated router in its own process, as the agent's router benchmarks run it
//! (`router_jobs`, `reconcile`): the bench's own executable started again in the simulator's
//! role (or the `tikfleet-sim` binary named by `TIKFLEET_SIM_BIN`), one router with its API
//! and control endpoint on free loopback ports, faults set and figures read through the
//! control endpoint.

// Each benchmark uses a part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// The router's login user.
pub const USER: &str = "admin";
/// Its password.
pub const PASSWORD: &str = "bench-pw";
/// The environment variable that makes the bench executable a simulator (see [`sim_role`]).
pub const SIM_ROLE: &str = "TIKFLEET_BENCH_SIM_ROLE";

/// Whether this process was started in the simulator's role.
pub fn is_sim_role() -> bool {
    std::env::var_os(SIM_ROLE).is_some()
}

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
    /// `TIKFLEET_SIM_BIN` if set, else this executable.
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

    /// For the bench's header.
    pub fn describe(&self) -> String {
        match self {
            Self::SelfRole(_) => "this bench's executable in the simulator role".to_owned(),
            Self::Binary(b) => b.display().to_string(),
        }
    }

    /// The command, pinned to `cpu` (`taskset`) if given.
    fn command(&self, cpu: Option<usize>) -> Command {
        match self {
            Self::SelfRole(exe) => {
                let mut cmd = pinned(exe, cpu);
                cmd.env(SIM_ROLE, "1");
                cmd
            }
            Self::Binary(bin) => {
                let mut cmd = pinned(bin, cpu);
                cmd.args(["--api", "127.0.0.1:0", "--control", "127.0.0.1:0"])
                    .args(["--user", USER, "--password", PASSWORD]);
                cmd
            }
        }
    }
}

/// `program`, under `taskset -c CPU` when `cpu` is given.
pub fn pinned(program: &Path, cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(cpu.to_string()).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// What the router's stats say (`GET /routers/0/stats`).
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

/// A running simulator process with one router.
pub struct Sim {
    child: Child,
    /// The process id.
    pub pid: u32,
    /// The router's API (plain).
    pub api: SocketAddr,
    control: SocketAddr,
}

impl Sim {
    /// Starts a fresh simulator (an empty router), pinned to `cpu` if given, and applies
    /// `faults` (the body of `PUT /routers/0/faults`).
    pub async fn start(
        program: &SimProgram,
        cpu: Option<usize>,
        faults: serde_json::Value,
    ) -> anyhow::Result<Self> {
        let mut child = program
            .command(cpu)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start the simulator ({})", program.describe()))?;
        let pid = child.id().context("the simulator's pid")?;
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
        };
        let (status, body) = sim
            .http("PUT", "/routers/0/faults", &faults.to_string())
            .await?;
        anyhow::ensure!(
            status == 200,
            "setting the faults {faults}: {status} {body}"
        );
        Ok(sim)
    }

    /// One HTTP/1.1 request to the control endpoint: (status, body).
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> anyhow::Result<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(self.control).await?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.control,
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let text = String::from_utf8(response)?;
        let (head, body) = text.split_once("\r\n\r\n").context("an HTTP response")?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("an HTTP status")?;
        Ok((status, body.to_owned()))
    }

    /// `GET path`, decoded from JSON.
    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let (status, body) = self.http("GET", path, "").await?;
        anyhow::ensure!(status == 200, "GET {path}: {status} {body}");
        Ok(serde_json::from_str(&body)?)
    }

    /// The router's command statistics.
    pub async fn stats(&self) -> anyhow::Result<RouterStats> {
        self.get("/routers/0/stats").await
    }

    /// The router's `/ppp/secret` rows by name, and how many rows there were (duplicate
    /// names show as fewer entries than rows).
    pub async fn secrets(
        &self,
    ) -> anyhow::Result<(HashMap<String, HashMap<String, String>>, usize)> {
        let rows: Vec<HashMap<String, String>> =
            self.get("/routers/0/menu?path=/ppp/secret").await?;
        let n = rows.len();
        let by_name = rows
            .into_iter()
            .filter_map(|r| r.get("name").cloned().map(|n| (n, r)))
            .collect();
        Ok((by_name, n))
    }

    /// Ends the simulator: the bench's role exits when its stdin closes, `tikfleet-sim` on
    /// SIGTERM.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.child.stdin.take());
        if let Ok(pid) = i32::try_from(self.pid) {
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
