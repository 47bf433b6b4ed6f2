//! The command line: `run` (the agent itself, with its uplink to the controller once
//! enrolled), `enroll` and `rotate-key`, and what a site technician uses:
//! `router add|list|remove|test`, `queue list|show|retry|purge-dead` and `status`.
//!
//! The technician's commands open the store directly, so they work with the agent stopped
//! (sled allows one process per data folder; with the agent running they say so and stop). Passwords come
//! from standard input or a prompt without echo, never from an argument, and are never printed.
//! Every failure is one line `error: …` with a hint where one helps, and a nonzero exit.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tikfleet_shared::job::JobStatus;
use tikfleet_shared::{ErrorCode, JobId, RouterId, Secret, TenantId};

use crate::clock::{SharedClock, SystemClock};
use crate::config::AgentConfig;
use crate::identity::IdentityStore;
use crate::queue::{JobRecord, Queue};
use crate::registry::{Registry, RouterInfo};
use crate::router::{RouterEndpoint, TlsMode};
use crate::routeros::{NoopObserver, RouterOsClient};
use crate::store::{Store, StoreConfig};
use crate::vault::{KeySources, Vault, load_key};

/// tikfleet-agent: the site agent beside a tenant's MikroTik routers.
#[derive(Debug, Parser)]
#[command(name = "tikfleet-agent", version, about)]
pub struct Cli {
    /// Configuration file (TOML); without one, defaults apply (data in ./data/agent).
    #[arg(long, global = true, env = "TIKFLEET_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data folder; overrides the configuration's `data_dir`.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the routers this agent serves.
    #[command(subcommand)]
    Router(RouterCommand),
    /// Inspect and repair the job queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Routers reachable, queue and outbox depth, last errors.
    Status,
    /// Run the agent: execute queued jobs on the routers until SIGINT or SIGTERM, connected
    /// to the controller once enrolled.
    Run {
        /// Stop by itself once no job is queued, running or waiting to retry (a one-shot
        /// maintenance run; dead letters waiting for self-healing do not hold it).
        #[arg(long)]
        exit_when_idle: bool,
    },
    /// Enroll this agent with a controller, using a one-time token from staff.
    Enroll(EnrollArgs),
    /// Replace the agent's identity key (the controller registers the new one first).
    RotateKey,
}

/// `enroll`.
#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The controller's base URL, e.g. `https://controller.example:8443`.
    #[arg(long)]
    pub controller: String,
    /// The one-time enrollment token (or set TIKFLEET_ENROLL_TOKEN, which keeps it out of
    /// the process list).
    #[arg(long, env = "TIKFLEET_ENROLL_TOKEN", hide_env_values = true)]
    pub token: String,
    /// A name for this agent at the controller (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// CA certificate(s) (PEM) to trust for the controller, if its certificate is not from a
    /// CA this machine already trusts.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

/// `router …`.
#[derive(Debug, Subcommand)]
pub enum RouterCommand {
    /// Add a router; the password is read from standard input or a prompt.
    Add(AddRouter),
    /// List the routers (never their passwords).
    List,
    /// Remove a router by name.
    Remove {
        /// The router's name.
        name: String,
    },
    /// Connect to a router: login, RouterOS version, identity, available updates.
    Test {
        /// The router's name.
        name: String,
    },
}

/// How the API connection is secured, on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TlsArg {
    /// Plain API (8728): the password crosses the network in clear text.
    Plain,
    /// API-SSL, verifying the router's certificate against `--ca-file`.
    Verify,
    /// API-SSL, accepting exactly the certificate with the `--pin` fingerprint.
    Pin,
}

/// `router add`.
#[derive(Debug, Args)]
pub struct AddRouter {
    /// A unique name for people (`core-1`).
    #[arg(long)]
    pub name: String,
    /// Host name or IP address.
    #[arg(long)]
    pub host: String,
    /// API user.
    #[arg(long)]
    pub user: String,
    /// API port (default 8729 with TLS, 8728 plain).
    #[arg(long)]
    pub api_port: Option<u16>,
    /// SSH port.
    #[arg(long, default_value_t = 22)]
    pub ssh_port: u16,
    /// How the API connection is secured.
    #[arg(long, value_enum, default_value_t = TlsArg::Pin)]
    pub tls: TlsArg,
    /// With `--tls verify`: the CA certificate(s), PEM.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// With `--tls verify`: the name the certificate must carry (default: the host).
    #[arg(long)]
    pub server_name: Option<String>,
    /// With `--tls pin`: SHA-256 of the router's certificate (hex, colons allowed).
    #[arg(long)]
    pub pin: Option<String>,
    /// Tenant (default: the configuration's `tenant_id`).
    #[arg(long)]
    pub tenant: Option<TenantId>,
    /// The controller's id for this router (default: a new one).
    #[arg(long)]
    pub id: Option<RouterId>,
}

/// `queue …`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List jobs, newest first.
    List {
        /// Only jobs with this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
    },
    /// One job in full: operation, attempts, progress, last error.
    Show {
        /// The job's id.
        id: JobId,
    },
    /// Queue a failed job again now.
    Retry {
        /// The job's id.
        id: JobId,
    },
    /// Delete every dead-lettered job.
    PurgeDead,
}

/// A job status on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    /// Waiting to run.
    Queued,
    /// Running now.
    Running,
    /// Waiting to retry after a transient error.
    Retrying,
    /// Done.
    Succeeded,
    /// Dead-lettered.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl From<StatusArg> for JobStatus {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Queued => Self::Queued,
            StatusArg::Running => Self::Running,
            StatusArg::Retrying => Self::Retrying,
            StatusArg::Succeeded => Self::Succeeded,
            StatusArg::Failed => Self::Failed,
            StatusArg::Cancelled => Self::Cancelled,
        }
    }
}

/// A failure to show a person: what went wrong, and what to do about it.
#[derive(Debug)]
pub struct CliError {
    /// Stable code.
    pub code: ErrorCode,
    /// One line.
    pub message: String,
    /// What to try.
    pub hint: Option<String>,
}

impl CliError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error: {} [{}]", self.message, self.code.as_str())?;
        if let Some(h) = &self.hint {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

macro_rules! from_coded {
    ($($t:ty),*) => {$(
        impl From<$t> for CliError {
            fn from(e: $t) -> Self {
                Self::new(e.code(), e.to_string())
            }
        }
    )*};
}
from_coded!(
    crate::registry::RegistryError,
    crate::queue::QueueError,
    crate::vault::VaultError,
    crate::outbox::OutboxError,
    crate::identity::IdentityError
);

impl From<crate::uplink::enroll::EnrollError> for CliError {
    fn from(e: crate::uplink::enroll::EnrollError) -> Self {
        let err = Self::new(e.code(), e.to_string());
        match e.hint() {
            Some(hint) => err.hint(hint),
            None => err,
        }
    }
}

impl From<crate::store::StoreError> for CliError {
    fn from(e: crate::store::StoreError) -> Self {
        let code = e.code();
        let text = e.to_string();
        let err = Self::new(code, text.clone());
        if matches!(e, crate::store::StoreError::Open { .. }) && text.contains("lock") {
            err.hint("another tikfleet-agent uses this data folder; stop it (systemctl stop tikfleet-agent) and try again")
        } else {
            err
        }
    }
}

/// Everything a local command needs, opened from the configuration.
struct Local {
    config: AgentConfig,
    store: Store,
    registry: Registry,
    identities: IdentityStore,
    backup_passwords: crate::backup::BackupPasswords,
    clock: SharedClock,
}

impl Local {
    fn open(cli: &Cli) -> Result<Self, CliError> {
        let mut config = match &cli.config {
            Some(path) => AgentConfig::load(path).map_err(|e| {
                CliError::new(ErrorCode::InvalidRequest, e.to_string())
                    .hint("see the example in `tikfleet-agent --help` and docs/agent.md")
            })?,
            None => AgentConfig::default(),
        };
        if let Some(dir) = &cli.data_dir {
            config.data_dir.clone_from(dir);
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            CliError::new(
                ErrorCode::Internal,
                format!(
                    "cannot create the data folder {}: {e}",
                    config.data_dir.display()
                ),
            )
        })?;
        let mut store_config = StoreConfig::new(config.data_dir.join("store"));
        if let Some(max) = config.store.max_bytes {
            store_config = store_config.with_max_bytes(max);
        }
        let store = Store::open(&store_config)?;
        let (key, _) = load_key(&KeySources::from_env(&config.data_dir))?;
        let registry = Registry::open(&store, Vault::new(&key))?;
        let identities = IdentityStore::open(&store, Vault::new(&key))?;
        let backup_passwords = crate::backup::BackupPasswords::open(&store, Vault::new(&key))?;
        Ok(Self {
            config,
            store,
            registry,
            identities,
            backup_passwords,
            clock: Arc::new(SystemClock),
        })
    }

    /// The tenant of routers added on site: the configuration's, else the enrollment's.
    fn tenant(&self) -> Result<Option<TenantId>, CliError> {
        Ok(match self.config.tenant_id {
            Some(t) => Some(t),
            None => self.identities.enrollment()?.map(|e| e.tenant_id),
        })
    }

    fn router(&self, name: &str) -> Result<RouterInfo, CliError> {
        self.registry.find_by_name(name)?.ok_or_else(|| {
            CliError::new(ErrorCode::NotFound, format!("no router named {name:?}"))
                .hint("`tikfleet-agent router list` shows the routers this agent serves")
        })
    }

    fn queue(&self) -> Result<Queue, CliError> {
        Ok(Queue::open(&self.store, self.clock.now())?)
    }
}

/// Runs a command, writing what a person reads to `out`. `shutdown` ends `run`.
pub async fn run_local(
    cli: &Cli,
    out: &mut dyn Write,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), CliError> {
    run_local_with_clock(cli, out, shutdown, Arc::new(SystemClock)).await
}

/// [`run_local`] on `clock` instead of the system's: tests move time by hand (lifecycle
/// deadlines, retries, reconnect backoff) and never wait for it.
pub async fn run_local_with_clock(
    cli: &Cli,
    out: &mut dyn Write,
    shutdown: impl std::future::Future<Output = ()>,
    clock: SharedClock,
) -> Result<(), CliError> {
    let mut local = Local::open(cli)?;
    local.clock = clock;
    let result = match &cli.command {
        Command::Run { exit_when_idle } => {
            return run_agent(local, *exit_when_idle, out, shutdown).await;
        }
        Command::Router(cmd) => router_command(&local, cmd, out).await,
        Command::Queue(cmd) => queue_command(&local, cmd, out).await,
        Command::Status => status(&local, out).await,
        Command::Enroll(args) => enroll(&local, args, out).await,
        Command::RotateKey => rotate_key(&local, out).await,
    };
    // Whatever happened, what was written is made durable before the process ends.
    local.store.commit().await?;
    result
}

/// `run`: the executor over this data folder's queue, registry and outbox, and the uplink to
/// the controller when the agent is enrolled (and not revoked).
async fn run_agent(
    local: Local,
    exit_when_idle: bool,
    out: &mut dyn Write,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), CliError> {
    use crate::executor::{Executor, ExecutorConfig, RetryPolicy};
    use crate::ratelimit::Rate;
    use crate::uplink::{Parts, Uplink, UplinkEnd};

    let queue = Arc::new(local.queue()?);
    let outbox = Arc::new(crate::outbox::Outbox::open(
        &local.store,
        outbox_config(&local.config),
    )?);
    let limits = &local.config.limits;
    let per_router = limits.router_concurrency.max(1);
    let mut driver = local.config.driver.driver_config();
    // A few pipelined connections carry many concurrent jobs (commands are tagged); each
    // connection's login and version read (2 commands) happen once per connection.
    driver.pool_size = per_router.min(4);
    let config = ExecutorConfig {
        driver,
        per_router,
        router_rate: Rate::per_second(limits.router_commands_per_second, limits.router_burst),
        tenant_rate: Rate::per_second(limits.tenant_commands_per_second, limits.tenant_burst),
        retry: RetryPolicy {
            max_attempts: local.config.retry.max_attempts,
            ..RetryPolicy::default()
        },
        seed: rand::random(),
    };
    let routers = local.registry.list()?.len();
    let counts = queue.counts();
    let registry = Arc::new(local.registry);
    let executor = Executor::new(
        Arc::clone(&queue),
        Arc::clone(&outbox),
        Arc::clone(&registry) as Arc<dyn crate::executor::Routers>,
        local.clock.clone(),
        config,
    );

    let desired = Arc::new(crate::desired::DesiredStore::open(&local.store)?);
    let reconciler = Arc::new(crate::reconcile::Reconciler::new(
        Arc::clone(&desired),
        Arc::clone(executor.audit()),
        local.clock.clone(),
        crate::reconcile::ReconcileConfig::default(),
    ));
    executor.set_reconciler(Arc::clone(&reconciler));
    executor.set_credentials(Arc::clone(&registry));
    // Restores fetch their backup from the controller through the uplink, staged on disk.
    let fetcher = crate::uplink::fetch::BackupFetcher::new();
    executor.set_backups(Arc::new(
        crate::backup::Backups::new(
            local.backup_passwords.clone(),
            Arc::new(crate::hostkeys::SledHostKeys::open(&local.store)?),
            crate::ssh::SshConfig::default(),
        )
        .with_restores(fetcher.clone(), local.config.data_dir.join("restore")),
    ));

    let metrics_outbox = Arc::clone(&outbox);
    let metrics_registry = Arc::clone(&registry);
    let enrollment = local.identities.enrollment()?;
    let revoked = local.identities.uplink()?.revoked;
    // Health probes: low priority beside the executor's jobs (crate::probe); not in a
    // one-shot maintenance run.
    let probes = &local.config.probes;
    let prober = (probes.enabled && !exit_when_idle).then(|| {
        crate::probe::Prober::new(
            Arc::clone(&registry) as Arc<dyn crate::probe::ProbeTargets>,
            Arc::new(executor.clone()),
            Arc::clone(&outbox),
            local.clock.clone(),
            crate::probe::ProbeConfig {
                interval: std::time::Duration::from_secs(probes.interval_secs.max(1)),
                versions_every: std::time::Duration::from_secs(probes.versions_every_secs.max(60)),
                driver: crate::routeros::DriverConfig {
                    pool_size: 1,
                    ..local.config.driver.driver_config()
                },
                data_dir: local.config.data_dir.clone(),
                agent_id: enrollment.as_ref().map(|e| e.agent_id),
                unreachable_backoff_cap: std::time::Duration::from_secs(
                    probes.unreachable_backoff_cap_secs,
                ),
                ..crate::probe::ProbeConfig::default()
            },
        )
    });
    // Self-healing (crate::heal): the probes report each router's API outages to it; it
    // reboots over SSH only when `[self_heal] ssh_reboot` is on.
    let prober = match prober {
        Some(prober) if local.config.self_heal.ssh_reboot => {
            let heal = crate::heal::SelfHeal::new(
                local.config.self_heal.heal_config(),
                crate::heal::RebootLedger::open(&local.store)?,
                Arc::new(crate::hostkeys::SledHostKeys::open(&local.store)?),
                Arc::clone(executor.audit()),
                local.clock.clone(),
            );
            Some(prober.with_self_heal(Arc::new(heal)))
        }
        other => other,
    }
    .map(Arc::new);
    let (uplink, controller) = match (&enrollment, &revoked) {
        (None, _) => (None, "not enrolled with a controller".to_owned()),
        (Some(_), Some(reason)) => (
            None,
            format!("REVOKED by the controller ({reason}); not connecting"),
        ),
        (Some(e), None) if !local.config.uplink.enabled => (
            None,
            format!("uplink to {} disabled in the configuration", e.hub_url),
        ),
        (Some(e), None) => {
            let parts = Parts {
                store: local.store.clone(),
                identities: Arc::new(local.identities),
                registry,
                queue: Arc::clone(&queue),
                outbox,
                desired,
                clock: local.clock.clone(),
            };
            let uplink = Uplink::new(parts, local.config.uplink.uplink_config())
                .map_err(|e| {
                    CliError::new(
                        ErrorCode::InvalidRequest,
                        format!("cannot start the uplink: {e}"),
                    )
                })?
                .with_fetcher(fetcher);
            (
                Some(uplink),
                format!("controller {} as agent {}", e.hub_url, e.agent_id),
            )
        }
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // Prometheus metrics on loopback (crate::metrics); a port in use is a warning, not a
    // reason not to run.
    let metrics_cfg = &local.config.metrics;
    let metrics_line = if metrics_cfg.enabled && !exit_when_idle {
        let metrics = Arc::new(crate::metrics::AgentMetrics::new(Box::new(RunGauges {
            queue: Arc::clone(&queue),
            outbox: Arc::clone(&metrics_outbox),
            routers: Arc::clone(&metrics_registry),
            // Weak: the prober reaches the audit log, which holds these gauges.
            probes: prober.as_ref().map(Arc::downgrade),
        })));
        executor.audit().set_metrics(Arc::clone(&metrics));
        match crate::metrics::serve(metrics, metrics_cfg.listen, wait_stop(stopped.clone())).await {
            Ok((addr, _task)) => format!(", metrics http://{addr}/metrics"),
            Err(e) => {
                tracing::warn!(listen = %metrics_cfg.listen, error = %e, "metrics endpoint not started");
                format!(", metrics not served ({}: {e})", metrics_cfg.listen)
            }
        }
    } else {
        String::new()
    };
    writeln!(
        out,
        "tikfleet-agent running: data {}, {controller}, {routers} router(s), {} job(s) waiting{metrics_line}",
        local.config.data_dir.display(),
        counts.queued + counts.retrying + counts.running,
    )
    .map_err(write_err)?;
    out.flush().map_err(write_err)?;

    let run_reconciler = async {
        if !exit_when_idle {
            let connect: Arc<dyn crate::reconcile::Connect> = Arc::new(executor.clone());
            reconciler.run(connect, stopped.clone()).await;
        }
    };
    let run_probes = async {
        if let Some(prober) = &prober {
            prober.run(stopped.clone()).await;
        }
    };
    let run_executor = async {
        if exit_when_idle {
            executor.run_until_idle(wait_stop(stopped.clone())).await;
        } else {
            executor.run(wait_stop(stopped.clone())).await;
        }
        // An idle one-shot run ends the uplink too.
        let _ = stop.send(true);
    };
    // The uplink's end is reported the moment it happens (a revocation while jobs keep
    // running is news for whoever watches the log), and the final line repeats it.
    let live = std::cell::RefCell::new(&mut *out);
    let run_uplink = async {
        let end = match uplink {
            Some(mut uplink) => Some(uplink.run(stopped.clone()).await),
            None => None,
        };
        if let Some(UplinkEnd::Revoked(reason)) = &end {
            let mut out = live.borrow_mut();
            let _ = writeln!(
                out,
                "the controller revoked this agent: {reason}; no longer connecting (jobs already queued keep running)"
            );
            let _ = out.flush();
        }
        end
    };
    let signal = async {
        let mut rx = stopped.clone();
        tokio::select! {
            () = shutdown => {
                let _ = stop.send(true);
            }
            _ = rx.wait_for(|s| *s) => {}
        }
    };
    let ((), uplink_end, (), (), ()) =
        tokio::join!(run_executor, run_uplink, signal, run_reconciler, run_probes);
    local.store.commit().await?;
    let counts = queue.counts();
    writeln!(
        out,
        "tikfleet-agent stopped: {} job(s) waiting, {} failed, {} succeeded",
        counts.queued + counts.retrying + counts.running,
        counts.failed,
        counts.succeeded,
    )
    .map_err(write_err)?;
    if let Some(UplinkEnd::Revoked(reason)) = uplink_end {
        writeln!(out, "the controller revoked this agent: {reason}").map_err(write_err)?;
    }
    out.flush().map_err(write_err)?;
    Ok(())
}

/// What the metrics read when scraped, in a running agent.
struct RunGauges {
    queue: Arc<Queue>,
    outbox: Arc<crate::outbox::Outbox>,
    routers: Arc<Registry>,
    probes: Option<std::sync::Weak<crate::probe::Prober>>,
}

impl crate::metrics::Gauges for RunGauges {
    fn jobs(&self) -> Vec<(&'static str, u64)> {
        let c = self.queue.counts();
        vec![
            ("queued", c.queued),
            ("running", c.running),
            ("retrying", c.retrying),
            ("succeeded", c.succeeded),
            ("failed", c.failed),
            ("cancelled", c.cancelled),
        ]
    }

    fn outbox(&self) -> (u64, u64, u64, u64, u64) {
        let s = self.outbox.stats();
        (s.records, s.bytes, s.last_seq, s.acked, s.dropped_telemetry)
    }

    fn routers(&self) -> u64 {
        self.routers.list().map_or(0, |l| l.len() as u64)
    }

    fn routers_unreachable(&self) -> u64 {
        self.probes
            .as_ref()
            .and_then(std::sync::Weak::upgrade)
            .map_or(0, |p| p.unreachable_count())
    }
}

/// `enroll`: keys, the controller's answer, stored.
async fn enroll(local: &Local, args: &EnrollArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let ca_pem = args
        .ca_file
        .as_ref()
        .map(|path| {
            std::fs::read_to_string(path).map_err(|e| {
                CliError::new(
                    ErrorCode::InvalidRequest,
                    format!("cannot read the CA file {}: {e}", path.display()),
                )
            })
        })
        .transpose()?;
    if args.token.trim().is_empty() {
        return Err(
            CliError::new(ErrorCode::InvalidRequest, "the enrollment token is empty")
                .hint("staff create one with POST /api/v1/tenants/{id}/enrollment-tokens"),
        );
    }
    let options = crate::uplink::enroll::EnrollOptions {
        controller_url: args.controller.clone(),
        token: Secret::new(args.token.trim()),
        name: args
            .name
            .clone()
            .unwrap_or_else(crate::uplink::enroll::host_name),
        ca_pem,
    };
    let e = crate::uplink::enroll::enroll(&local.identities, options).await?;
    writeln!(
        out,
        "enrolled: agent {} of tenant {}, hub {}{}",
        e.agent_id,
        e.tenant_id,
        e.hub_url,
        if e.hub_ca_pem.is_some() {
            " (its self-signed certificate is pinned)"
        } else {
            ""
        }
    )
    .map_err(write_err)?;
    Ok(())
}

/// `rotate-key`.
async fn rotate_key(local: &Local, out: &mut dyn Write) -> Result<(), CliError> {
    if let Some(reason) = local.identities.uplink()?.revoked {
        return Err(CliError::new(
            ErrorCode::PermissionDenied,
            format!("the controller revoked this agent ({reason})"),
        )
        .hint("a revoked agent cannot rotate its key; enroll again from a fresh data folder"));
    }
    let key_id = crate::uplink::enroll::rotate_key(&local.identities, local.clock.now()).await?;
    writeln!(
        out,
        "rotated the identity key: the controller now knows it as {key_id}"
    )
    .map_err(write_err)?;
    Ok(())
}

fn write_err(e: std::io::Error) -> CliError {
    CliError::new(ErrorCode::Internal, format!("cannot write output: {e}"))
}

async fn router_command(
    local: &Local,
    cmd: &RouterCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match cmd {
        RouterCommand::Add(add) => {
            let router = new_router(local, add)?;
            let info = local.registry.add(router).await?;
            writeln!(out, "added router {} ({})", info.name, info.id).map_err(write_err)?;
        }
        RouterCommand::List => {
            let routers = local.registry.list()?;
            if routers.is_empty() {
                writeln!(out, "no routers; add one with `tikfleet-agent router add`")
                    .map_err(write_err)?;
            } else {
                let rows = routers.iter().map(|r| {
                    vec![
                        r.name.clone(),
                        format!("{}:{}", r.host, r.api_port),
                        tls_label(&r.tls).to_owned(),
                        r.username.clone(),
                        r.id.to_string(),
                    ]
                });
                table(out, &["NAME", "API", "TLS", "USER", "ID"], rows)?;
            }
        }
        RouterCommand::Remove { name } => {
            let info = local.router(name)?;
            local.registry.remove(info.id).await?;
            writeln!(out, "removed router {name}").map_err(write_err)?;
        }
        RouterCommand::Test { name } => {
            let info = local.router(name)?;
            let report = probe(local, &info).await?;
            for line in report {
                writeln!(out, "{line}").map_err(write_err)?;
            }
            writeln!(out, "{}", probe_ssh(local, &info).await?).map_err(write_err)?;
        }
    }
    Ok(())
}

fn new_router(local: &Local, add: &AddRouter) -> Result<RouterEndpoint, CliError> {
    let tenant = add.tenant.or(local.tenant()?).ok_or_else(|| {
        CliError::new(
            ErrorCode::InvalidRequest,
            "this agent has no tenant yet, so the router cannot be assigned to one",
        )
        .hint("enroll the agent first, or pass --tenant ID, or set tenant_id in the configuration")
    })?;
    let tls = match add.tls {
        TlsArg::Plain => TlsMode::Plain,
        TlsArg::Pin => TlsMode::Pin {
            sha256: add
                .pin
                .as_deref()
                .map(|pin| {
                    crate::routeros::tls::normalize_pin(pin)
                        .map_err(|e| CliError::new(e.code(), e.message().to_owned()))
                })
                .transpose()?
                .ok_or_else(|| {
                CliError::new(ErrorCode::InvalidRequest, "--tls pin needs --pin SHA256").hint(
                    "read the fingerprint on the router: /certificate print detail (fingerprint), \
                     or use --tls verify --ca-file, or --tls plain on a network only the agent reaches",
                )
            })?,
        },
        TlsArg::Verify => {
            let path = add.ca_file.as_ref().ok_or_else(|| {
                CliError::new(ErrorCode::InvalidRequest, "--tls verify needs --ca-file PEM")
            })?;
            let ca_pem = std::fs::read_to_string(path).map_err(|e| {
                CliError::new(
                    ErrorCode::InvalidRequest,
                    format!("cannot read the CA file {}: {e}", path.display()),
                )
            })?;
            TlsMode::Verify {
                ca_pem,
                server_name: add.server_name.clone().unwrap_or_else(|| add.host.clone()),
            }
        }
    };
    let api_port = add.api_port.unwrap_or(match add.tls {
        TlsArg::Plain => 8728,
        TlsArg::Verify | TlsArg::Pin => 8729,
    });
    let password = read_password(&add.name)?;
    Ok(RouterEndpoint {
        id: add.id.unwrap_or_else(RouterId::new),
        tenant,
        name: add.name.clone(),
        host: add.host.clone(),
        api_port,
        ssh_port: add.ssh_port,
        tls,
        username: add.user.clone(),
        password,
    })
}

/// The router's password: prompted for without echo on a terminal, else one line of stdin.
fn read_password(router: &str) -> Result<Secret, CliError> {
    let stdin = std::io::stdin();
    let text = if stdin.is_terminal() {
        rpassword::prompt_password(format!("password for {router}: ")).map_err(|e| {
            CliError::new(
                ErrorCode::InvalidRequest,
                format!("cannot read the password: {e}"),
            )
        })?
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).map_err(|e| {
            CliError::new(
                ErrorCode::InvalidRequest,
                format!("cannot read the password: {e}"),
            )
        })?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if text.is_empty() {
        return Err(
            CliError::new(ErrorCode::InvalidRequest, "the password is empty").hint(
                "type it at the prompt, or pipe it: `printf %s \"$PW\" | tikfleet-agent router add …`",
            ),
        );
    }
    Ok(Secret::new(text))
}

fn tls_label(tls: &TlsMode) -> &'static str {
    match tls {
        TlsMode::Plain => "plain",
        TlsMode::Verify { .. } => "verify",
        TlsMode::Pin { .. } => "pin",
    }
}

/// Connects to one router and describes what it found.
async fn probe(local: &Local, info: &RouterInfo) -> Result<Vec<String>, CliError> {
    let endpoint = local.registry.get(info.id)?;
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!(
        "connecting to {} ({}:{})",
        info.name, info.host, info.api_port
    ));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let result = async {
        let client = RouterOsClient::connect(
            endpoint,
            local.config.driver.driver_config(),
            local.clock.clone(),
            Arc::new(NoopObserver),
        )
        .await?;
        let identity = client
            .run(crate::routeros::Cmd::new("/system/identity/print"))
            .await?
            .first()
            .and_then(|row| row.get("name").cloned())
            .unwrap_or_default();
        spinner.set_message(format!("{}: checking for updates", info.name));
        let update = client.check_for_updates().await;
        Ok::<_, crate::routeros::DriverError>((client.version(), identity, update))
    }
    .await;
    spinner.finish_and_clear();
    let (version, identity, update) = result.map_err(|e| {
        let hint = match e.code() {
            ErrorCode::AuthenticationFailed => {
                "check the user and password (re-add the router), and the certificate settings"
            }
            ErrorCode::ConnectionRefused => {
                "check the address and port, and that /ip service api or api-ssl is enabled for the agent's address"
            }
            ErrorCode::Timeout => "the router did not answer in time; check the network path",
            _ => "",
        };
        let err = CliError::new(e.code(), e.message().to_owned());
        if hint.is_empty() { err } else { err.hint(hint) }
    })?;
    let mut lines = vec![
        format!("{}: reachable", info.name),
        format!("  identity:  {identity}"),
        format!("  routeros:  {version}"),
    ];
    lines.push(match (&update.error, update.available, &update.latest) {
        (Some(e), _, _) => format!("  updates:   could not check ({e})"),
        (None, true, Some(latest)) => format!("  updates:   {latest} is available"),
        (None, _, _) => "  updates:   up to date".to_owned(),
    });
    Ok(lines)
}

/// Logs in over SSH (pinning the host key on first use) and describes the result; an SSH
/// failure is reported, not fatal: the API is what the agent needs most.
async fn probe_ssh(local: &Local, info: &RouterInfo) -> Result<String, CliError> {
    let pins = Arc::new(crate::hostkeys::SledHostKeys::open(&local.store)?);
    let driver = crate::ssh::SshDriver::new(
        local.registry.get(info.id)?,
        crate::ssh::SshConfig::default(),
        pins.clone(),
    );
    Ok(match driver.run("/system identity print").await {
        Ok(_) => {
            let pin = crate::ssh::HostKeyStore::get(pins.as_ref(), info.id)
                .ok()
                .flatten()
                .unwrap_or_default();
            format!(
                "  ssh:       ok (port {}), host key {pin} pinned",
                info.ssh_port
            )
        }
        Err(e) => format!(
            "  ssh:       {} [{}]",
            e.message().lines().next().unwrap_or_default(),
            e.code().as_str()
        ),
    })
}

async fn queue_command(
    local: &Local,
    cmd: &QueueCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let queue = local.queue()?;
    let now = local.clock.now();
    match cmd {
        QueueCommand::List { status } => {
            let mut jobs = queue.list(status.map(JobStatus::from))?;
            jobs.sort_by_key(|j| std::cmp::Reverse(j.seq));
            if jobs.is_empty() {
                writeln!(out, "no jobs").map_err(write_err)?;
            } else {
                let rows = jobs.iter().map(|j| {
                    vec![
                        j.job.id.to_string(),
                        status_label(j.status).to_owned(),
                        j.job.op.name().to_owned(),
                        j.attempts.to_string(),
                        j.last_error
                            .as_ref()
                            .map_or_else(String::new, |e| e.code.as_str().to_owned()),
                    ]
                });
                table(
                    out,
                    &["ID", "STATUS", "OPERATION", "ATTEMPTS", "LAST ERROR"],
                    rows,
                )?;
            }
        }
        QueueCommand::Show { id } => {
            let job = queue.get(*id)?.ok_or_else(|| {
                CliError::new(ErrorCode::NotFound, format!("no job {id}"))
                    .hint("`tikfleet-agent queue list` shows the jobs")
            })?;
            show_job(out, &job)?;
        }
        QueueCommand::Retry { id } => {
            let job = queue.requeue(*id, now).await?;
            writeln!(out, "job {} is queued again", job.job.id).map_err(write_err)?;
        }
        QueueCommand::PurgeDead => {
            let n = queue.purge_dead().await?;
            writeln!(out, "purged {n} dead-lettered job(s)").map_err(write_err)?;
        }
    }
    Ok(())
}

fn status_label(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Queued => "queued",
        JobStatus::Running => "running",
        JobStatus::Retrying => "retrying",
        JobStatus::Succeeded => "succeeded",
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "cancelled",
    }
}

fn show_job(out: &mut dyn Write, j: &JobRecord) -> Result<(), CliError> {
    let mut lines = vec![
        format!("job:        {}", j.job.id),
        format!("operation:  {}", j.job.op.name()),
        format!("priority:   {:?}", j.job.priority),
        format!("status:     {}", status_label(j.status)),
        format!("attempts:   {}", j.attempts),
    ];
    if let Some(p) = &j.progress {
        lines.push(format!("progress:   {}/{}", p.done, p.total));
    }
    if let Some(e) = &j.last_error {
        lines.push(format!(
            "last error: {} ({}{})",
            e.message,
            e.code.as_str(),
            if e.retryable { ", retryable" } else { "" }
        ));
    }
    if let Some(d) = &j.detail {
        lines.push(format!("result:     {d}"));
    }
    for line in lines {
        writeln!(out, "{line}").map_err(write_err)?;
    }
    Ok(())
}

async fn status(local: &Local, out: &mut dyn Write) -> Result<(), CliError> {
    let routers = local.registry.list()?;
    let bar = indicatif::ProgressBar::new(routers.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("probing routers {bar:20} {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut lines = Vec::new();
    for r in &routers {
        let probe = tokio::time::timeout(
            Duration::from_millis(local.config.driver.connect_timeout_ms.saturating_mul(2)),
            probe(local, r),
        )
        .await;
        lines.push(match probe {
            Ok(Ok(report)) => format!(
                "  {:<16} reachable, {}",
                r.name,
                report
                    .get(2)
                    .map_or("", |l| l.trim_start())
                    .trim_start_matches("routeros:")
                    .trim()
            ),
            Ok(Err(e)) => format!("  {:<16} {} [{}]", r.name, e.message, e.code.as_str()),
            Err(_) => format!("  {:<16} no answer in time [timeout]", r.name),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let queue = local.queue()?;
    let counts = queue.counts();
    let outbox = crate::outbox::Outbox::open(&local.store, outbox_config(&local.config))?;
    let ob = outbox.stats();
    let store = local.store.stats()?;
    let mut text = vec![controller_line(local)?];
    text.push(format!("routers: {}", routers.len()));
    text.extend(lines);
    // What the controller asked for and what the reconciler has applied, per router.
    let desired = crate::desired::DesiredStore::open(&local.store)?;
    let names: std::collections::HashMap<_, _> =
        routers.iter().map(|r| (r.id, r.name.as_str())).collect();
    for g in desired.generations()? {
        let name = names
            .get(&g.router_id)
            .copied()
            .unwrap_or("(removed router)");
        text.push(format!(
            "  {name:<16} desired state: generation {} stored, {} applied{}",
            g.stored,
            g.applied,
            if g.applied >= g.stored {
                " (in sync)"
            } else {
                " (a pass is due)"
            }
        ));
    }
    text.push(format!(
        "queue: {} queued, {} running, {} retrying, {} failed, {} succeeded",
        counts.queued, counts.running, counts.retrying, counts.failed, counts.succeeded
    ));
    text.push(format!(
        "outbox: {} records waiting ({} bytes){}, {} telemetry dropped",
        ob.records,
        ob.bytes,
        if ob.near_cap { ", NEAR ITS CAP" } else { "" },
        ob.dropped_telemetry
    ));
    text.push(format!(
        "store: {} bytes on disk{}",
        store.size_on_disk,
        store
            .max_bytes
            .map_or_else(String::new, |m| format!(" of {m} allowed"))
    ));
    let mut failed: Vec<_> = queue
        .list(Some(JobStatus::Failed))?
        .into_iter()
        .chain(queue.list(Some(JobStatus::Retrying))?)
        .collect();
    failed.sort_by_key(|j| std::cmp::Reverse(j.updated_at));
    if !failed.is_empty() {
        text.push("last errors:".to_owned());
        for j in failed.iter().take(5) {
            if let Some(e) = &j.last_error {
                text.push(format!(
                    "  {} {} ({}): {}",
                    j.job.id,
                    j.job.op.name(),
                    e.code.as_str(),
                    e.message
                ));
            }
        }
    }
    for line in text {
        writeln!(out, "{line}").map_err(write_err)?;
    }
    Ok(())
}

/// The controller line of `status`: enrolled or not, revoked, last connection.
fn controller_line(local: &Local) -> Result<String, CliError> {
    let Some(e) = local.identities.enrollment()? else {
        return Ok(
            "controller: not enrolled (tikfleet-agent enroll --controller URL --token TOKEN)"
                .to_owned(),
        );
    };
    let record = local.identities.uplink()?;
    if let Some(reason) = record.revoked {
        return Ok(format!(
            "controller: REVOKED ({reason}); agent {} no longer connects to {} — enroll again from a fresh data folder",
            e.agent_id, e.hub_url
        ));
    }
    let last = match record.last_connected {
        Some(at) => format!(
            "last connected {} s ago",
            local.clock.now().duration_since(at).as_secs()
        ),
        None => "never connected yet".to_owned(),
    };
    Ok(format!(
        "controller: {} as agent {} (tenant {}, key {}), {last}",
        e.hub_url, e.agent_id, e.tenant_id, e.key_id
    ))
}

fn outbox_config(config: &AgentConfig) -> crate::outbox::OutboxConfig {
    crate::outbox::OutboxConfig {
        max_bytes: config.outbox.max_bytes,
        max_telemetry: config.outbox.max_telemetry,
        ..crate::outbox::OutboxConfig::default()
    }
}

fn table(
    out: &mut dyn Write,
    header: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) -> Result<(), CliError> {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    writeln!(out, "{}", line(&header)).map_err(write_err)?;
    for row in &rows {
        writeln!(out, "{}", line(row)).map_err(write_err)?;
    }
    Ok(())
}
