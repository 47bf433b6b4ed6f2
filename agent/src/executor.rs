//! The executor: runs jobs from the durable [`Queue`] against routers and records results.
//!
//! [`Executor::run`] is one loop over a closed [`Event`] set (a job may be ready, a due time
//! came, a job finished, shutdown) through one `select!`. Each pass takes ready jobs in
//! priority order (critical, normal, bulk; the queue orders them) but only for routers with
//! a free slot under the per-router [`ConcurrencyLimits`]: a job for a busy router stays in
//! the queue, in its place, so a critical job enqueued later still overtakes bulk jobs of
//! that router, and jobs for other routers are not held up. Each taken job runs on its own
//! task: it waits for tokens in the router's and the tenant's buckets ([`RateLimiter`], on
//! the injected clock), gets the router's client (one per router, created lazily from
//! [`Routers`], dropped on connection and login errors so the next attempt reconnects),
//! runs [`ops::execute`], and records the result.
//!
//! # Retries, dead letters and self-healing
//!
//! By the class of the [`ErrorCode`] ([`RetryPolicy`] holds the numbers):
//!
//! - *transient* (refused, timeout, reset, `!fatal`, …): retried after a backoff with full
//!   jitter, `uniform(0, min(cap, base × 2^(attempt-1)))` from a seeded RNG, until the job's
//!   `max_attempts` (the policy's default when the job says 0). Then it is dead-lettered with
//!   a `next_heal_at` on a slower schedule (`heal_base × 2^n`, capped at `heal_cap`; `n`
//!   counts this job's dead letters since the agent started) and the queue makes it ready
//!   again then, with fresh attempts;
//! - *permanent* (`!trap` with a bad value, conflict, unknown command, …): dead-lettered at
//!   once with the router's message, and no self-healing: the same request would fail the
//!   same way, so it waits for staff to change something and re-queue it;
//! - *authentication*: the same, plus a warning with the router id (an alert for the
//!   controller: the JobUpdate carries `authentication_failed`); never retried by itself,
//!   because repeated wrong logins can lock the account.
//!
//! # Outbox records
//!
//! Each attempt produces a `running` [`JobUpdate`] (progress 0/1), audit records for each
//! router command (through [`audit`](crate::audit)), then one `succeeded` (progress 1/1,
//! detail), `retrying` or `failed` update with the error. Every one goes through the
//! [`AuditLog`] FIFO, so a job's final update follows its audit records and is durable, with
//! them, before the queue records the job's new status. If the agent dies between the
//! update and the queue change, the job runs again after the restart and reports again
//! (at least once; operations are idempotent). If an update cannot be made durable (the
//! audit writer stopped), the queue is not changed (and after a failed `running` update no
//! command is sent): the job stays `running` and runs again after a restart.
//! `agent/tests/crash.rs` kills the agent binary mid-run and checks these guarantees.
//!
//! # Beside the reconciler
//!
//! Jobs of one router run beside each other but never during a reconcile pass of that
//! router (the reconciler's per-router read/write lock). A job that comes from a staff
//! change carries the desired generation that change made: if a pass already applied that
//! generation or a newer one (and did not leave the job's items alone, as it does with a
//! conflict), the job is skipped and reported `succeeded` with a "superseded" detail — jobs
//! and states can arrive in either order, and running an older job after a newer state could
//! only put older values back for a moment. Otherwise the reconciler is told which items the
//! job changed, so a pass over an older state leaves them alone. `drift_check` and
//! `enforce` jobs are passes themselves ([`Reconciler::job`]).
//!
//! # Rate limits
//!
//! RouterOS commands are counted by budget: before a job runs it takes
//! [`command_budget`] tokens, the most commands its operation can send, and a new
//! connection takes [`CONNECT_COMMANDS`] (login and version read). So the commands a router
//! sees never exceed its bucket's burst plus rate × time, as long as budgets do not exceed
//! the burst (a larger budget is clamped to the burst). Extra pooled connections opened for
//! concurrent jobs on one router are not charged (set `pool_size` to the concurrency).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tikfleet_shared::job::{JobOp, JobStatus, JobUpdate, Progress};
use tikfleet_shared::record::OutboxRecord;
use tikfleet_shared::{ErrorClass, ErrorCode, ErrorInfo, JobId, RouterId, TenantId, UnixMillis};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::{JoinError, JoinSet};

use crate::audit::{self, AuditLog};
use crate::backup::{Backups, RestoreFile};
use crate::clock::SharedClock;
use crate::credentials;
use crate::ops;
use crate::outbox::Outbox;
use crate::queue::{JobRecord, JobStore, Queue, SledJobStore};
use crate::ratelimit::{ConcurrencyLimits, Rate, RateLimiter};
use crate::reconcile::{Connect, Reconciler};
use crate::registry::Registry;
use crate::router::RouterEndpoint;
use crate::routeros::{DriverConfig, DriverError, RouterOsClient};

/// Where the executor finds a router's endpoint and credentials.
pub trait Routers: Send + Sync + 'static {
    /// The router, with its password, for a driver.
    ///
    /// # Errors
    ///
    /// A classified error (`not_found` for an unknown router is permanent).
    fn endpoint(&self, id: RouterId) -> Result<RouterEndpoint, DriverError>;

    /// A counter that moves whenever any router's endpoint may have changed (address, port,
    /// TLS, login): a cached connection is checked against the endpoint again when it moved.
    /// A fixed set of routers keeps the default, 0.
    fn changes(&self) -> u64 {
        0
    }
}

impl Routers for Registry {
    fn changes(&self) -> u64 {
        Registry::changes(self)
    }

    fn endpoint(&self, id: RouterId) -> Result<RouterEndpoint, DriverError> {
        self.get(id)
            .map_err(|e| DriverError::new(e.code(), e.to_string()))
    }
}

/// A fixed set of routers (tests, tools).
impl Routers for HashMap<RouterId, RouterEndpoint> {
    fn endpoint(&self, id: RouterId) -> Result<RouterEndpoint, DriverError> {
        self.get(&id).cloned().ok_or_else(|| {
            DriverError::new(
                ErrorCode::NotFound,
                format!("router {id} is not registered"),
            )
        })
    }
}

/// Backoff and self-healing schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Backoff ceiling of the first retry.
    pub base: Duration,
    /// Largest backoff ceiling.
    pub cap: Duration,
    /// Attempts for jobs that do not say (`max_attempts: 0`).
    pub max_attempts: u32,
    /// Delay before the first self-healing run of a dead-lettered job.
    pub heal_base: Duration,
    /// Largest self-healing delay.
    pub heal_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            max_attempts: 3,
            heal_base: Duration::from_secs(10 * 60),
            heal_cap: Duration::from_secs(6 * 60 * 60),
        }
    }
}

fn doubled(base: Duration, times: u32, cap: Duration) -> Duration {
    let factor = 2u32.checked_pow(times).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

impl RetryPolicy {
    /// The largest backoff after failed attempt `attempt` (1-based):
    /// `min(cap, base × 2^(attempt-1))`.
    #[must_use]
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        doubled(self.base, attempt.saturating_sub(1), self.cap)
    }

    /// The backoff after failed attempt `attempt`, with full jitter: uniform in
    /// `0..=backoff_ceiling(attempt)`, whole milliseconds.
    pub fn backoff(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = u64::try_from(self.backoff_ceiling(attempt).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.random_range(0..=ceiling))
    }

    /// The delay before self-healing after the job's `heals`-th dead letter (0-based).
    #[must_use]
    pub fn heal_delay(&self, heals: u32) -> Duration {
        doubled(self.heal_base, heals, self.heal_cap)
    }

    fn attempts_for(&self, job_max: u32) -> u32 {
        if job_max == 0 {
            self.max_attempts.max(1)
        } else {
            job_max
        }
    }
}

/// Executor settings.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// Driver timeouts and pool size.
    pub driver: DriverConfig,
    /// Jobs running at once against one router.
    pub per_router: usize,
    /// Each router's command bucket.
    pub router_rate: Rate,
    /// Each tenant's command bucket (all its routers together).
    pub tenant_rate: Rate,
    /// Backoff and self-healing.
    pub retry: RetryPolicy,
    /// Seed of the jitter RNG (fixed in tests, random in production).
    pub seed: u64,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            driver: DriverConfig::default(),
            per_router: 2,
            router_rate: Rate::per_second(20, 40),
            tenant_rate: Rate::per_second(100, 200),
            retry: RetryPolicy::default(),
            seed: rand::random(),
        }
    }
}

/// What low-priority work beside the jobs (the [`probe`](crate::probe)s) asks the executor.
pub trait Background: Send + Sync + 'static {
    /// Takes `n` command tokens from the router's and the tenant's buckets, but only if no
    /// job runs on (or waits for a slot or tokens of) `router` and the tokens are there now.
    /// It never waits, so such work never holds up a job: `false` means skip this round.
    fn try_background(&self, router: RouterId, tenant: TenantId, n: u32) -> bool;

    /// Jobs waiting in the queue (queued or waiting to retry).
    fn queued_jobs(&self) -> u64;
}

impl<S: JobStore + 'static> Background for Executor<S> {
    fn try_background(&self, router: RouterId, tenant: TenantId, n: u32) -> bool {
        let sh = &self.shared;
        // A job holds one of the router's slots from the moment it is taken until it ends
        // (including its wait for tokens), so all slots free means no job is at the router.
        sh.limits.available(router) >= sh.config.per_router.max(1)
            && sh
                .rate
                .try_acquire_n(router, tenant, n, sh.clock.now())
                .is_ok()
    }

    fn queued_jobs(&self) -> u64 {
        let c = self.shared.queue.counts();
        c.queued + c.retrying
    }
}

/// How long a restore waits for the rebooted router to answer.
pub const RESTORE_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// How often a restore tries to log in to the rebooting router.
pub const RESTORE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Commands a new connection sends: `/login` and the version read.
pub const CONNECT_COMMANDS: u32 = 2;

/// The most RouterOS commands [`ops::execute`] sends for `op` (its rate-limit cost).
#[must_use]
pub const fn command_budget(op: &JobOp) -> u32 {
    match op {
        // print, add (+ print, comment before 7.15) or up to three pipelined updates, then
        // print and remove of active sessions; the profile it carries: print, add or updates.
        JobOp::UpsertPppSecret { profile, .. } => 6 + if profile.is_some() { 4 } else { 0 },
        JobOp::UpsertHotspotUser { profile, .. } => 6 + if profile.is_some() { 4 } else { 0 },
        // print, set, then print and remove of active sessions.
        JobOp::SetProfile { .. } | JobOp::Enable { .. } | JobOp::Disable { .. } => 4,
        // print, add or up to three updates.
        JobOp::UpsertProfile { .. } => 4,
        JobOp::AddAddressListEntry { .. } => 3,
        JobOp::DeletePppSecret { .. }
        | JobOp::DeleteHotspotUser { .. }
        | JobOp::DeleteProfile { .. }
        | JobOp::RemoveAddressListEntry { .. }
        | JobOp::DisconnectSession { .. } => 2,
        // `/system/backup/save` (the export, download and removal go over SSH).
        JobOp::BackupNow { .. } => 1,
        // `/system/backup/load`, then the new connection's commands.
        JobOp::Restore { .. } => 1 + CONNECT_COMMANDS,
        // Stale users (print, removals), group (print, add or set), add, the new login's
        // connect and version read, the old user's print and removal.
        JobOp::RotateCredentials {} => 10,
        // /user/active, /ip/service print, three sets, the fresh login, three rollbacks.
        JobOp::Lockdown { .. } => 10,
        // Refused by ops::execute before any command (handled by other components).
        JobOp::Reboot {} | JobOp::DriftCheck {} | JobOp::Enforce { .. } => 1,
    }
}

/// What wakes the run loop.
#[derive(Debug)]
enum Event {
    /// A job was enqueued or rescheduled.
    Ready,
    /// The clock reached the next due or heal time.
    Due,
    /// A job's task ended.
    Finished(Result<(), JoinError>),
    /// Stop taking jobs.
    Shutdown,
}

/// A router's connection, with the registry's change counter when it was last checked.
type ClientSlot = Arc<tokio::sync::Mutex<Option<(RouterOsClient, u64)>>>;

struct Shared<S: JobStore> {
    queue: Arc<Queue<S>>,
    audit: Arc<AuditLog>,
    routers: Arc<dyn Routers>,
    clock: SharedClock,
    config: ExecutorConfig,
    limits: ConcurrencyLimits,
    rate: RateLimiter,
    clients: Mutex<HashMap<RouterId, ClientSlot>>,
    rng: Mutex<StdRng>,
    heals: Mutex<HashMap<JobId, u32>>,
    reconciler: std::sync::OnceLock<Arc<Reconciler>>,
    backups: std::sync::OnceLock<Arc<Backups>>,
    credentials: std::sync::OnceLock<Arc<Registry>>,
}

/// The job executor. See the module documentation. Clones share one executor.
pub struct Executor<S: JobStore + 'static = SledJobStore> {
    shared: Arc<Shared<S>>,
}

impl<S: JobStore + 'static> Clone for Executor<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The reconciler uses the executor's cached clients (one per router, shared with jobs).
impl<S: JobStore + 'static> Connect for Executor<S> {
    fn client(
        &self,
        router: RouterId,
    ) -> futures_util::future::BoxFuture<'_, Result<RouterOsClient, DriverError>> {
        Box::pin(self.shared.client(router))
    }

    fn forget(&self, router: RouterId) {
        self.shared.forget_client(router);
    }
}

impl<S: JobStore + 'static> std::fmt::Debug for Executor<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S: JobStore + 'static> Executor<S> {
    /// An executor over `queue`, writing to `outbox` (starts the audit writer, so call it
    /// inside a Tokio runtime).
    #[must_use]
    pub fn new(
        queue: Arc<Queue<S>>,
        outbox: Arc<Outbox>,
        routers: Arc<dyn Routers>,
        clock: SharedClock,
        config: ExecutorConfig,
    ) -> Self {
        let shared = Shared {
            queue,
            audit: Arc::new(AuditLog::start(outbox)),
            routers,
            clock,
            limits: ConcurrencyLimits::new(config.per_router),
            rate: RateLimiter::new(config.router_rate, config.tenant_rate),
            clients: Mutex::new(HashMap::new()),
            rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
            heals: Mutex::new(HashMap::new()),
            reconciler: std::sync::OnceLock::new(),
            backups: std::sync::OnceLock::new(),
            credentials: std::sync::OnceLock::new(),
            config,
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Hands `drift_check` and `enforce` jobs to `reconciler` (without one they fail as
    /// invalid requests). Set once; later calls change nothing.
    pub fn set_reconciler(&self, reconciler: Arc<Reconciler>) {
        let _ = self.shared.reconciler.set(reconciler);
    }

    /// Runs `backup_now` jobs with `backups` (without it they fail as invalid requests).
    /// Set once; later calls change nothing.
    pub fn set_backups(&self, backups: Arc<Backups>) {
        let _ = self.shared.backups.set(backups);
    }

    /// Runs `rotate_credentials` jobs against `registry`, which holds the routers' logins
    /// (without it they fail as invalid requests). Set once; later calls change nothing.
    pub fn set_credentials(&self, registry: Arc<Registry>) {
        let _ = self.shared.credentials.set(registry);
    }

    /// The audit writer, for other components that send router commands (their records
    /// then share the executor's order).
    #[must_use]
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.shared.audit
    }

    /// Runs jobs until `shutdown` completes, then waits for the running ones to finish and
    /// for their records to be durable.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        self.run_loop(shutdown, false).await;
    }

    /// Like [`Executor::run`], but also stops by itself once the queue is drained: no job
    /// running, queued or waiting to retry (dead letters waiting for self-healing do not
    /// count). For one-shot runs (`tikfleet-agent run --exit-when-idle`).
    pub async fn run_until_idle(&self, shutdown: impl Future<Output = ()>) {
        self.run_loop(shutdown, true).await;
    }

    /// Runs [`Shared::dispatch_loop`] as a task of its own, so that it runs on the runtime's
    /// workers, beside the jobs it starts and that wake it, and not on the caller's thread (a
    /// `block_on` thread: waking it from a worker for every finished job costs a futex call
    /// and a thread switch each). Dropping this future stops the loop and its jobs, as if it
    /// ran here.
    async fn run_loop(&self, shutdown: impl Future<Output = ()>, until_idle: bool) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let shared = Arc::clone(&self.shared);
        let mut handle = AbortOnDrop(tokio::spawn(async move {
            shared.dispatch_loop(stopped, until_idle).await;
        }));
        tokio::pin!(shutdown);
        let ended = tokio::select! {
            () = &mut shutdown => None,
            res = &mut handle.0 => Some(res),
        };
        let res = match ended {
            Some(res) => res,
            None => {
                let _ = stop.send(true);
                (&mut handle.0).await
            }
        };
        log_join(res);
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<S: JobStore + 'static> Shared<S> {
    async fn dispatch_loop(
        self: Arc<Self>,
        mut stopped: tokio::sync::watch::Receiver<bool>,
        until_idle: bool,
    ) {
        let sh = &self;
        let mut tasks: JoinSet<()> = JoinSet::new();
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        tokio::pin!(shutdown);
        loop {
            // Armed before looking at the queue, so an enqueue during the pass is not missed.
            let notified = sh.queue.ready_signal().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = sh.clock.now();
            let blocked = self.dispatch(&mut tasks, now);
            if until_idle && tasks.is_empty() {
                // Nothing runs, and dispatch took every job that was ready: idle unless a
                // job waits for a later due time.
                let counts = sh.queue.counts();
                if counts.queued == 0 && counts.retrying == 0 {
                    break;
                }
            }
            // When due jobs wait for busy routers, a finished job wakes us; otherwise the
            // next due time does.
            let wake = if blocked {
                sh.queue.next_due_after(now)
            } else {
                sh.queue.next_due()
            };
            let due = async {
                match wake {
                    Some(at) => sh.clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                biased;
                () = &mut shutdown => Event::Shutdown,
                Some(res) = tasks.join_next(), if !tasks.is_empty() => Event::Finished(res),
                () = &mut notified => Event::Ready,
                () = due => Event::Due,
            };
            match event {
                Event::Ready | Event::Due => {}
                Event::Finished(res) => log_join(res),
                Event::Shutdown => break,
            }
        }
        while let Some(res) = tasks.join_next().await {
            log_join(res);
        }
        lock(&sh.clients).clear();
        if let Err(e) = sh.audit.flush().await {
            tracing::error!(error = %e, "flushing the audit log at shutdown");
        }
    }

    /// Starts every ready job whose router has a free slot; returns whether due jobs are
    /// left waiting for busy routers.
    fn dispatch(self: &Arc<Self>, tasks: &mut JoinSet<()>, now: UnixMillis) -> bool {
        let sh = self;
        loop {
            let taken = sh
                .queue
                .take_ready_for(now, |router| sh.limits.available(router) > 0);
            match taken {
                Ok(Some(record)) => {
                    let permit = sh.limits.try_acquire(record.job.router_id);
                    let shared = Arc::clone(sh);
                    tasks.spawn(async move { shared.run_job(record, permit).await });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "cannot take a job from the queue");
                    return true;
                }
            }
        }
        sh.queue.next_due().is_some_and(|due| due <= now)
    }
}

fn log_join(res: Result<(), JoinError>) {
    if let Err(e) = res {
        // The job stays `running` until the next start queues it again.
        tracing::error!(error = %e, "a job task failed");
    }
}

fn log_queue<T>(job: JobId, what: &str, res: Result<T, crate::queue::QueueError>) {
    if let Err(e) = res {
        tracing::error!(job = %job, error = %e, "cannot record that the job {what}");
    }
}

impl<S: JobStore + 'static> Shared<S> {
    async fn run_job(self: Arc<Self>, record: JobRecord, permit: Option<OwnedSemaphorePermit>) {
        let job = &record.job;
        let _permit = match permit {
            Some(p) => p,
            None => self.limits.acquire(job.router_id).await,
        };
        let start = Progress { done: 0, total: 1 };
        log_queue(
            job.id,
            "started",
            self.queue.set_progress(job.id, start, self.clock.now()),
        );
        if !self
            .update(&record, JobStatus::Running, Some(start), None, None)
            .await
        {
            // No command runs unless the audit pipe works: nothing would record it.
            return;
        }
        let result = audit::with_job(job.id, self.attempt(&record)).await;
        self.finish(&record, result).await;
    }

    /// Runs one attempt; the result is the job's detail and its final progress.
    async fn attempt(&self, record: &JobRecord) -> Result<(String, Progress), DriverError> {
        let job = &record.job;
        let (router, tenant, op) = (job.router_id, job.tenant_id, &job.op);
        let client = self.client(router).await?;
        if client.endpoint().tenant != tenant {
            return Err(DriverError::new(
                ErrorCode::InvalidRequest,
                format!("router {router} does not belong to the job's tenant"),
            ));
        }
        self.rate
            .acquire_n(router, tenant, command_budget(op), &*self.clock)
            .await;
        let res = match op {
            JobOp::BackupNow { name } => self.backup(record, &client, name.as_deref()).await,
            JobOp::Restore {
                name,
                backup_id,
                data,
                sha256,
                size,
            } => {
                let res = self
                    .restore(
                        record,
                        &client,
                        name,
                        backup_id.as_deref(),
                        data,
                        sha256,
                        *size,
                    )
                    .await
                    .map(|(version, steps)| {
                        let id = backup_id.as_deref().unwrap_or(name);
                        (
                            format!("restored backup {id}; the router is back, {version}"),
                            Progress {
                                done: steps,
                                total: steps,
                            },
                        )
                    });
                if res.is_err() {
                    self.forget_client(router);
                }
                res
            }
            JobOp::RotateCredentials {} | JobOp::Lockdown { .. } => {
                self.credentials_job(&client, op).await
            }
            JobOp::DriftCheck {} | JobOp::Enforce { .. } => {
                let Some(reconciler) = self.reconciler.get() else {
                    return Err(DriverError::new(
                        ErrorCode::InvalidRequest,
                        "this agent runs no reconciler, so it cannot check or enforce drift",
                    ));
                };
                // Progress goes behind the pass's audit records, without waiting for a
                // commit; the queue keeps it for `queue list`.
                let progress = |p: Progress| {
                    let now = self.clock.now();
                    log_queue(
                        job.id,
                        "progressed",
                        self.queue.set_progress(job.id, p, now),
                    );
                    let update = JobUpdate {
                        job_id: job.id,
                        router_id: router,
                        status: JobStatus::Running,
                        attempts: record.attempts,
                        progress: Some(p),
                        error: None,
                        detail: None,
                        at: now,
                    };
                    if let Err(e) = self.audit.send(OutboxRecord::JobUpdate(update)) {
                        tracing::debug!(error = %e, "job progress not recorded");
                    }
                };
                reconciler
                    .job(&client, router, job.id, op, &progress)
                    .await
                    .map(|r| {
                        let steps = (r.steps as u64).max(1);
                        (
                            r.detail(),
                            Progress {
                                done: steps,
                                total: steps,
                            },
                        )
                    })
            }
            _ => {
                // Beside other jobs, never in the middle of a reconcile pass; the pass that
                // follows leaves what this job changed to the next desired state.
                let reconciler = self.reconciler.get();
                let _guard = match reconciler {
                    Some(r) => Some(r.job_lock(router).await),
                    None => None,
                };
                if let Some(applied) =
                    reconciler.and_then(|r| r.supersedes(router, job.generation, op))
                {
                    let detail = format!(
                        "superseded: generation {applied} of the desired state, which includes \
                         this change, is applied already"
                    );
                    return Ok((detail, Progress { done: 1, total: 1 }));
                }
                let res = ops::execute(&client, op).await;
                if let Some(r) = reconciler {
                    r.note_job(router, op, job.generation);
                }
                res.map(|o| (o.detail(), Progress { done: 1, total: 1 }))
            }
        };
        if let Err(e) = &res
            && e.drops_client()
        {
            self.forget_client(router);
        }
        res
    }

    /// A `rotate_credentials` or `lockdown` job ([`credentials`]), never during a pass.
    async fn credentials_job(
        &self,
        client: &RouterOsClient,
        op: &JobOp,
    ) -> Result<(String, Progress), DriverError> {
        let router = client.endpoint().id;
        let _guard = match self.reconciler.get() {
            Some(r) => Some(r.job_lock(router).await),
            None => None,
        };
        let ctx = credentials::Context {
            driver: self.config.driver.clone(),
            clock: self.clock.clone(),
            observer: Arc::new(self.audit.observer()),
        };
        let detail = match op {
            JobOp::Lockdown { admin_networks } => {
                credentials::lockdown(client, admin_networks, &ctx).await?
            }
            _ => {
                let Some(registry) = self.credentials.get() else {
                    return Err(DriverError::new(
                        ErrorCode::InvalidRequest,
                        "this agent is not set up to rotate router credentials",
                    ));
                };
                let detail = credentials::rotate(client, registry, &ctx).await?;
                // The cached client still logs in as the old user: reconnect.
                self.forget_client(router);
                detail
            }
        };
        Ok((detail, Progress { done: 1, total: 1 }))
    }

    /// A `backup_now` job: takes the backup (progress after each of its four steps), then
    /// puts its chunks into the outbox ahead of the job's final update.
    async fn backup(
        &self,
        record: &JobRecord,
        client: &RouterOsClient,
        name: Option<&str>,
    ) -> Result<(String, Progress), DriverError> {
        let job = &record.job;
        let Some(backups) = self.backups.get() else {
            return Err(DriverError::new(
                ErrorCode::InvalidRequest,
                "this agent is not set up to take backups",
            ));
        };
        const STEPS: u64 = 5;
        let progress = |done: u64| self.progress(record, done, STEPS);
        let file = crate::backup::file_name(name, job.id);
        let taken = backups.take(client, &file, &progress).await?;
        let at = self.clock.now();
        for chunk in taken.chunks(job.id, job.router_id, at) {
            self.audit.send(chunk).map_err(|e| {
                DriverError::new(ErrorCode::Internal, format!("cannot queue the backup: {e}"))
            })?;
        }
        self.audit.flush().await.map_err(|e| {
            DriverError::new(ErrorCode::Internal, format!("cannot store the backup: {e}"))
        })?;
        Ok((
            taken.detail(),
            Progress {
                done: STEPS,
                total: STEPS,
            },
        ))
    }

    /// A `restore` job: gets the file (carried by the job, or fetched from the controller in
    /// parts into a staged file, see [`Backups::fetch`]), uploads and loads it, waits for the
    /// rebooted router to answer a fresh login (on the executor's clock, up to
    /// [`RESTORE_WAIT`]), removes the uploaded file from the router and returns its RouterOS
    /// version with how the removal went, and the job's step count.
    ///
    /// Progress counts the file's bytes as they are staged, then three steps: uploaded,
    /// loaded, back (`total` = size + 3).
    #[allow(clippy::too_many_arguments)]
    async fn restore(
        &self,
        record: &JobRecord,
        client: &RouterOsClient,
        name: &str,
        backup_id: Option<&str>,
        data: &[u8],
        sha256: &[u8],
        size: Option<u64>,
    ) -> Result<(String, u64), DriverError> {
        let job = &record.job;
        let Some(backups) = self.backups.get() else {
            return Err(DriverError::new(
                ErrorCode::InvalidRequest,
                "this agent is not set up to restore backups",
            ));
        };
        let size = match size {
            Some(size) if data.is_empty() => size,
            _ => data.len() as u64,
        };
        let steps = size + 3;
        let progress = |done: u64| self.progress(record, done, steps);
        let file = if data.is_empty() && size > 0 {
            let Some(id) = backup_id else {
                return Err(DriverError::new(
                    ErrorCode::InvalidRequest,
                    "the restore job names no backup to fetch",
                ));
            };
            RestoreFile::Staged(
                backups
                    .fetch(job.id, id, size, sha256, &self.clock, &progress)
                    .await?,
            )
        } else {
            progress(size);
            RestoreFile::Inline(data.to_vec())
        };
        // The download leaves passes alone; the router's part never runs in the middle of one.
        let _guard = match self.reconciler.get() {
            Some(r) => Some(r.job_lock(job.router_id).await),
            None => None,
        };
        let step = |n: u64| progress(size + n);
        let loaded = backups.restore(client, name, file, sha256, &step).await;
        if let Err(e) = loaded {
            if !e.retryable() {
                backups.discard(job.id).await;
            }
            return Err(e);
        }
        // The router reboots: the old connections are dead.
        self.forget_client(job.router_id);
        let deadline = self.clock.now().saturating_add(RESTORE_WAIT);
        let back = loop {
            self.clock
                .sleep_until(self.clock.now().saturating_add(RESTORE_POLL))
                .await;
            match self.client(job.router_id).await {
                Ok(c) => break c,
                Err(e) if self.clock.now() >= deadline => {
                    return Err(DriverError::new(
                        e.code(),
                        format!(
                            "the router did not come back after the restore: {}",
                            e.message()
                        ),
                    ));
                }
                Err(e) => {
                    tracing::debug!(router = %job.router_id, error = %e, "waiting for the router after a restore");
                    self.forget_client(job.router_id);
                }
            }
        };
        step(3);
        // The router is back and a fresh login works: leave nothing behind. A failure here
        // does not fail the job (running it again would load the backup again).
        let removed = match backups.remove_upload(&back, name).await {
            Ok(()) => "the uploaded file was removed".to_owned(),
            Err(e) => {
                tracing::warn!(router = %job.router_id, error = %e, "cannot remove the uploaded backup after a restore");
                format!("the uploaded file could not be removed: {}", e.message())
            }
        };
        backups.discard(job.id).await;
        Ok((format!("RouterOS {}; {removed}", back.version()), steps))
    }

    /// Reports a running job's progress (`done` of `total`), without waiting for a commit.
    fn progress(&self, record: &JobRecord, done: u64, total: u64) {
        let job = &record.job;
        let now = self.clock.now();
        let p = Progress { done, total };
        log_queue(
            job.id,
            "progressed",
            self.queue.set_progress(job.id, p, now),
        );
        let update = JobUpdate {
            job_id: job.id,
            router_id: job.router_id,
            status: JobStatus::Running,
            attempts: record.attempts,
            progress: Some(p),
            error: None,
            detail: None,
            at: now,
        };
        if let Err(e) = self.audit.send(OutboxRecord::JobUpdate(update)) {
            tracing::debug!(error = %e, "job progress not recorded");
        }
    }

    /// The router's client, connecting if there is none.
    async fn client(&self, router: RouterId) -> Result<RouterOsClient, DriverError> {
        let slot = Arc::clone(lock(&self.clients).entry(router).or_default());
        let mut slot = slot.lock().await;
        let changes = self.routers.changes();
        if let Some((c, seen)) = &*slot
            && *seen == changes
        {
            return Ok(c.clone());
        }
        // No connection yet, or some router changed: this one's address or login may have (a
        // `router_config` from the controller, a technician's `router add`); reconnect only
        // if it did.
        let endpoint = self.routers.endpoint(router)?;
        if let Some((c, seen)) = &mut *slot {
            if *c.endpoint() == endpoint {
                *seen = changes;
                return Ok(c.clone());
            }
            tracing::info!(%router, "the router's address or login changed: reconnecting");
            *slot = None;
        }
        self.rate
            .acquire_n(router, endpoint.tenant, CONNECT_COMMANDS, &*self.clock)
            .await;
        let client = RouterOsClient::connect(
            endpoint,
            self.config.driver.clone(),
            Arc::clone(&self.clock),
            Arc::new(self.audit.observer()),
        )
        .await?;
        *slot = Some((client.clone(), changes));
        Ok(client)
    }

    fn forget_client(&self, router: RouterId) {
        lock(&self.clients).remove(&router);
    }

    async fn finish(&self, record: &JobRecord, result: Result<(String, Progress), DriverError>) {
        let job = &record.job;
        let id = job.id;
        let now = self.clock.now();
        let e = match result {
            Ok((detail, done)) => {
                log_queue(id, "progressed", self.queue.set_progress(id, done, now));
                if !self
                    .update(
                        record,
                        JobStatus::Succeeded,
                        Some(done),
                        None,
                        Some(detail.clone()),
                    )
                    .await
                {
                    return;
                }
                lock(&self.heals).remove(&id);
                log_queue(
                    id,
                    "succeeded",
                    self.queue.succeed(id, Some(detail), now).await,
                );
                return;
            }
            Err(e) => e,
        };
        if e.code() == ErrorCode::AuthenticationFailed {
            // No retry: repeated wrong logins can lock the account. Never log the password.
            self.forget_client(job.router_id);
        }
        let info = e.to_info();
        let policy = &self.config.retry;
        match e.code().class() {
            ErrorClass::Transient if record.attempts < policy.attempts_for(job.max_attempts) => {
                let delay = policy.backoff(record.attempts, &mut *lock(&self.rng));
                let at = now.saturating_add(delay);
                tracing::info!(job = %id, router = %job.router_id, attempt = record.attempts, error = %e, retry_in_ms = delay.as_millis(), "job failed; retrying");
                if self
                    .update(record, JobStatus::Retrying, None, Some(info.clone()), None)
                    .await
                {
                    log_queue(id, "retries", self.queue.retry(id, at, info, now).await);
                }
            }
            ErrorClass::Transient => {
                let heals = {
                    let mut heals = lock(&self.heals);
                    let n = heals.entry(id).or_insert(0);
                    *n += 1;
                    *n - 1
                };
                let heal_at = now.saturating_add(policy.heal_delay(heals));
                tracing::warn!(job = %id, router = %job.router_id, attempts = record.attempts, error = %e, heal_at = %heal_at, "job dead-lettered after its attempts; it will be tried again later");
                self.dead_letter(record, info, Some(heal_at), now).await;
            }
            ErrorClass::Authentication => {
                tracing::warn!(job = %id, router = %job.router_id, error = %e, "authentication failed on the router; fix its credentials and re-queue the job");
                self.dead_letter(record, info, None, now).await;
            }
            ErrorClass::Permanent => {
                tracing::warn!(job = %id, router = %job.router_id, error = %e, "job failed permanently");
                self.dead_letter(record, info, None, now).await;
            }
        }
    }

    async fn dead_letter(
        &self,
        record: &JobRecord,
        info: ErrorInfo,
        heal_at: Option<UnixMillis>,
        now: UnixMillis,
    ) {
        let id = record.job.id;
        if !self
            .update(record, JobStatus::Failed, None, Some(info.clone()), None)
            .await
        {
            return;
        }
        log_queue(
            id,
            "failed",
            self.queue.dead_letter(id, info, heal_at, now).await,
        );
        // A restore that will not run again has no use for the backup it staged (one that
        // self-heals later resumes from it).
        if heal_at.is_none()
            && matches!(record.job.op, JobOp::Restore { .. })
            && let Some(backups) = self.backups.get()
        {
            backups.discard(id).await;
        }
    }

    /// Pushes a JobUpdate behind the job's audit records and waits until it is durable.
    /// Returns whether it is: if not (the audit writer stopped, or the update cannot be
    /// encoded), the caller leaves the job's status in the queue alone, so the job stays
    /// `running` and runs again after a restart instead of being recorded as done without
    /// its audit records and update.
    async fn update(
        &self,
        record: &JobRecord,
        status: JobStatus,
        progress: Option<Progress>,
        error: Option<ErrorInfo>,
        detail: Option<String>,
    ) -> bool {
        let update = JobUpdate {
            job_id: record.job.id,
            router_id: record.job.router_id,
            status,
            attempts: record.attempts,
            progress,
            error,
            detail,
            at: self.clock.now(),
        };
        match self.audit.push(OutboxRecord::JobUpdate(update)).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(job = %record.job.id, error = %e, "cannot write a job update; the job stays running until the agent restarts");
                false
            }
        }
    }
}
