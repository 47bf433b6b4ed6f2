//! The reconciler: makes each router match its stored desired state, and reports drift.
//!
//! A **pass** over one router ([`Reconciler::pass`]):
//!
//! 1. reads the managed menus — profiles, PPP secrets, hotspot users, address-list entries —
//!    with `.proplist`, all five prints pipelined on one connection;
//! 2. diffs them against the desired state ([`plan`]): the minimal add / set / remove per
//!    item, conflicts with items made by hand, and drift (differences staff did not make);
//! 3. applies the steps in three phases (profiles; accounts and address-list entries; profile
//!    removes), each pipelined with tags and at most [`ReconcileConfig::window`] commands in
//!    flight on the router;
//! 4. disconnects the active sessions (`/ppp/active`, `/ip/hotspot/active`) of accounts
//!    whose profile, password or enabled state changed, or that were removed, so the change
//!    takes effect;
//! 5. reports: a [`DriftReport`] (in parts), the lifecycle transitions it made
//!    ([`LifecycleReport`], see below), an [`ApplyReport`], and — for passes of at least
//!    [`ReconcileConfig::progress_min_steps`] steps — [`ReconcileProgress`] records (items
//!    done of total) on the way, all through the outbox behind the pass's audit records.
//!    When nothing failed it records the state as applied.
//!
//! **Lifecycle transitions** are reported exactly once each, as far as a crash allows. The
//! store keeps per router a *phase map*: each subscriber's non-active phase (grace or
//! suspended) and the expiry it follows from, as last reported applied
//! ([`DesiredStore::phases`]). A full pass that succeeds reports every subscriber of the
//! state whose phase at the pass's moment is not active and differs from its entry (missing,
//! another phase, another expiry), in [`LifecycleReport`]s of at most
//! [`LifecycleReport::MAX_TRANSITIONS`], durable in the outbox *before* the new map is
//! stored: a crash in between sends them again (at least once; the controller takes them
//! idempotently by subscriber, phase and expiry), never loses them. Subscribers back to
//! active (renewed) or gone leave the map, so their next expiry is reported again. A full
//! pass that fails (or cannot reach the router) while transitions are due reports them once
//! with the error; the same due set is not reported again on every retry (remembered in
//! memory, so a restart may repeat it once), and the map is left as it was.
//!
//! A pass is "make it so" from what it reads, so an interrupted one (connection drop, agent
//! killed) is simply run again: what was done is found done. The one thing a re-read cannot
//! tell is whether an unmarked item was added by us — on RouterOS before 7.15 `/ppp add`
//! takes no comment, so the marker follows in a second command — hence such adds are written
//! to a journal (committed) before they are sent, and a journaled item counts as ours.
//!
//! **When passes run** ([`Reconciler::run`]): when a newer desired state is stored (the
//! uplink wakes it), again after a failure (backoff from [`ReconcileConfig::retry_base`]
//! doubling to [`ReconcileConfig::retry_cap`]), and on the tenant's drift schedule
//! (`DesiredState::drift.interval_ms`, hourly by default; every pass is a full check). Staff
//! ask for one through `drift_check` and `enforce` jobs, which the executor hands to
//! [`Reconciler::job`]. One pass per router at a time.
//!
//! **Rate limits.** A pass is bounded by its window (commands in flight per router), not by
//! the job token buckets: converging 10,000 accounts is one unit of work, and a bucket sized
//! for jobs would stretch it to minutes. The window keeps a slow router from being flooded.
//!
//! [`DriftReport`]: tikfleet_shared::record::DriftReport
//! [`ApplyReport`]: tikfleet_shared::record::ApplyReport
//! [`ReconcileProgress`]: tikfleet_shared::record::ReconcileProgress
//! [`LifecycleReport`]: tikfleet_shared::record::LifecycleReport
//! [`LifecycleReport::MAX_TRANSITIONS`]: tikfleet_shared::record::LifecycleReport::MAX_TRANSITIONS

pub mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tikfleet_shared::domain::{
    AccountKind, AccountRef, ItemKind, ItemRef, LifecyclePhase, SubscriberLifecycle,
};
use tikfleet_shared::job::{JobOp, Progress};
use tikfleet_shared::record::{
    ApplyReport, DriftAction, DriftReport, DriftTrigger, LifecycleReport, LifecycleTransition,
    OutboxRecord, ReconcileProgress,
};
use tikfleet_shared::{DriftId, ErrorCode, JobId, RouterId, UnixMillis};

use crate::audit::AuditLog;
use crate::clock::SharedClock;
use crate::desired::{AppliedPhase, DesiredStore, PhaseMap};
use crate::routeros::{Cmd, DriverError, RouterOsClient, Row};
use crate::store::StoreError;

pub use plan::Scope;

/// Reconciler settings.
#[derive(Clone, Debug)]
pub struct ReconcileConfig {
    /// Commands in flight per router during a pass.
    pub window: usize,
    /// Time between progress reports of a long pass.
    pub progress_every: Duration,
    /// Passes with fewer steps report no progress records (they end too soon to matter).
    pub progress_min_steps: usize,
    /// Delay before retrying a failed pass; doubles per failure.
    pub retry_base: Duration,
    /// Longest delay between retries.
    pub retry_cap: Duration,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            window: 128,
            progress_every: Duration::from_millis(500),
            progress_min_steps: 100,
            retry_base: Duration::from_secs(5),
            retry_cap: Duration::from_secs(600),
        }
    }
}

/// Why a pass runs and what it may touch.
#[derive(Clone, Debug)]
pub struct Request {
    /// Why.
    pub trigger: DriftTrigger,
    /// The job that asked, if any.
    pub job_id: Option<JobId>,
    /// What it may touch; `None`: everything, under the state's drift policy.
    pub scope: Option<Scope>,
}

impl Request {
    /// A pass of the given trigger over everything.
    #[must_use]
    pub const fn of(trigger: DriftTrigger) -> Self {
        Self {
            trigger,
            job_id: None,
            scope: None,
        }
    }
}

/// What a pass did.
#[derive(Clone, Debug, Default)]
pub struct PassReport {
    /// The generation compared against (0: no desired state yet).
    pub generation: u64,
    /// Desired items compared.
    pub items_checked: u64,
    /// Items changed (or attempted).
    pub steps: usize,
    /// Commands sent to change the router (reads excluded).
    pub commands: usize,
    /// Steps that failed.
    pub failed: usize,
    /// Drift findings (conflicts included).
    pub findings: usize,
    /// Desired items held by an administrator's item.
    pub conflicts: u32,
    /// Sessions disconnected so changes apply.
    pub sessions: usize,
    /// Whether the state is now recorded as applied.
    pub applied: bool,
    /// The first failure, if any step failed.
    pub error: Option<DriverError>,
    /// The next moment a subscriber of the stored state changes lifecycle phase.
    pub next_transition: Option<UnixMillis>,
}

impl PassReport {
    /// A short text for a job result.
    #[must_use]
    pub fn detail(&self) -> String {
        let mut s = format!(
            "generation {}: {} items checked, {} changed, {} drift findings",
            self.generation, self.items_checked, self.steps, self.findings
        );
        if self.conflicts > 0 {
            s.push_str(&format!(", {} conflicts", self.conflicts));
        }
        if self.sessions > 0 {
            s.push_str(&format!(", {} sessions disconnected", self.sessions));
        }
        if self.failed > 0 {
            s.push_str(&format!(", {} failed", self.failed));
        }
        s
    }
}

/// Where the reconciler gets a router's client (the executor's cached one).
pub trait Connect: Send + Sync + 'static {
    /// The router's client, connecting if needed.
    fn client(&self, router: RouterId) -> BoxFuture<'_, Result<RouterOsClient, DriverError>>;
    /// Drops the cached client after a connection failure.
    fn forget(&self, router: RouterId);
}

fn store_err(e: &StoreError) -> DriverError {
    DriverError::new(ErrorCode::Internal, format!("the agent's store: {e}"))
}

/// The reconciler. See the module documentation.
pub struct Reconciler {
    desired: Arc<DesiredStore>,
    audit: Arc<AuditLog>,
    clock: SharedClock,
    config: ReconcileConfig,
    locks: Mutex<HashMap<RouterId, Arc<tokio::sync::RwLock<()>>>>,
    /// Items jobs changed, per router.
    jobs: Mutex<HashMap<RouterId, HashMap<ItemRef, Note>>>,
    /// Per router, the items the last applied pass left as they were (conflicts, items left
    /// to a newer job, drift only reported). Known only for passes since this start.
    left_alone: Mutex<HashMap<RouterId, HashSet<ItemRef>>>,
    /// Per router, the fingerprint of the due lifecycle transitions last reported as failed,
    /// so a retry that fails the same way does not report them again.
    lifecycle_failed: Mutex<HashMap<RouterId, u64>>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Counts steps and sends progress while a pass runs.
struct Tracker<'a> {
    rec: &'a Reconciler,
    router: RouterId,
    generation: u64,
    done: u64,
    total: u64,
    last: Option<UnixMillis>,
    records: bool,
    job: &'a (dyn Fn(Progress) + Send + Sync),
}

impl Tracker<'_> {
    fn step(&mut self, force: bool) {
        let now = self.rec.clock.now();
        let due = self.last.is_none_or(|last| {
            now.0.saturating_sub(last.0)
                >= i64::try_from(self.rec.config.progress_every.as_millis()).unwrap_or(i64::MAX)
        });
        if !(force || due) {
            return;
        }
        self.last = Some(now);
        (self.job)(Progress {
            done: self.done,
            total: self.total.max(1),
        });
        if self.records {
            let record = OutboxRecord::Progress(ReconcileProgress {
                router_id: self.router,
                generation: self.generation,
                done: self.done,
                total: self.total,
                at: now,
            });
            if let Err(e) = self.rec.audit.send(record) {
                tracing::debug!(error = %e, "progress not recorded");
            }
        }
    }
}

/// The outcome of running one phase.
#[derive(Default)]
struct Applied {
    failed_findings: HashSet<usize>,
    failed_steps: usize,
    commands: usize,
    first_error: Option<DriverError>,
    /// The connection broke: later phases are not attempted.
    broken: bool,
    reconnect: Vec<AccountRef>,
    mark: Vec<(ItemRef, String)>,
}

impl Applied {
    fn fail(&mut self, e: DriverError) {
        if e.drops_client() {
            self.broken = true;
        }
        self.first_error.get_or_insert(e);
    }
}

impl Reconciler {
    /// A reconciler over `desired`, writing its records through `audit` (the executor's, so
    /// the pass's command audit records and its reports share one order).
    #[must_use]
    pub fn new(
        desired: Arc<DesiredStore>,
        audit: Arc<AuditLog>,
        clock: SharedClock,
        config: ReconcileConfig,
    ) -> Self {
        Self {
            desired,
            audit,
            clock,
            config,
            locks: Mutex::new(HashMap::new()),
            jobs: Mutex::new(HashMap::new()),
            left_alone: Mutex::new(HashMap::new()),
            lifecycle_failed: Mutex::new(HashMap::new()),
        }
    }

    /// Held by a job while it changes `router`: jobs run beside each other, a pass runs
    /// alone, so a pass never reads a router halfway through a job.
    pub async fn job_lock(&self, router: RouterId) -> tokio::sync::OwnedRwLockReadGuard<()> {
        self.lock_for(router).read_owned().await
    }

    /// The applied generation that makes a job of `generation` with `op` redundant, if one
    /// does: a pass already applied a state at least as new as the job's change, so running
    /// the job could only put older values back (jobs and states can arrive in either
    /// order). Operations that are not item changes (disconnecting a session, …) are never
    /// redundant. Call it while holding [`job_lock`](Self::job_lock).
    #[must_use]
    pub fn supersedes(&self, router: RouterId, generation: Option<u64>, op: &JobOp) -> Option<u64> {
        let generation = generation?;
        let items = job_items(op);
        if items.is_empty() {
            return None;
        }
        let applied = self.desired.applied_generation(router).ok()?;
        if applied < generation {
            return None;
        }
        // Only if that pass really put these items in place (not a conflict it left alone);
        // after a restart nobody knows, so the job runs.
        let left_alone = self
            .left_alone
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let left = left_alone.get(&router)?;
        items.iter().all(|i| !left.contains(i)).then_some(applied)
    }

    /// Records that a job changed the items of `op` on `router` (call it while holding
    /// [`job_lock`](Self::job_lock)). Jobs and desired states can reach the agent in either
    /// order, so passes over a state older than the job's `generation` leave those items
    /// alone: the job carries newer intent. A job without a generation (made on site) is
    /// newer than the state stored before it ran, for the next pass only.
    pub fn note_job(&self, router: RouterId, op: &JobOp, generation: Option<u64>) {
        let items = job_items(op);
        if items.is_empty() {
            return;
        }
        // A state at least as new as the job's was applied already: the job repeated what
        // the router has (or what a newer state replaced); it says nothing a pass needs.
        let applied = self.desired.applied_generation(router).unwrap_or(0);
        if generation.is_some_and(|g| g <= applied) {
            return;
        }
        let note = Note {
            generation,
            epoch: self.desired.epoch(),
        };
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let notes = jobs.entry(router).or_default();
        for item in items {
            let keep = notes
                .get(&item)
                .is_some_and(|old| old.generation.unwrap_or(0) > note.generation.unwrap_or(0));
            if !keep {
                notes.insert(item, note);
            }
        }
    }

    /// For a pass over `generation`, stored at epoch `stored`: the items to leave alone (a
    /// job with newer intent changed them) and the items jobs changed for this state or an
    /// older one (their differences are staff changes on their way, not drift).
    fn job_notes(
        &self,
        router: RouterId,
        generation: u64,
        stored: u64,
    ) -> (HashSet<ItemRef>, HashSet<ItemRef>) {
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(notes) = jobs.get(&router) else {
            return (HashSet::new(), HashSet::new());
        };
        let (skip, touched): (Vec<_>, Vec<_>) =
            notes.iter().partition(|(_, n)| match n.generation {
                Some(g) => g > generation,
                None => n.epoch >= stored,
            });
        (
            skip.into_iter().map(|(i, _)| i.clone()).collect(),
            touched.into_iter().map(|(i, _)| i.clone()).collect(),
        )
    }

    /// After a full pass over `generation` succeeded: the notes it covered are done with.
    fn forget_notes(&self, router: RouterId, generation: u64) {
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(notes) = jobs.get_mut(&router) {
            // A job made on site (no generation) is left alone by one pass only.
            notes.retain(|_, n| n.generation.is_some_and(|g| g > generation));
        }
    }

    fn lock_for(&self, router: RouterId) -> Arc<tokio::sync::RwLock<()>> {
        Arc::clone(
            self.locks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(router)
                .or_default(),
        )
    }

    /// Runs a `drift_check` or `enforce` job's pass; `progress` sees items done of total.
    ///
    /// # Errors
    ///
    /// The pass's failure: reading the router, or the first step that failed.
    pub async fn job(
        &self,
        client: &RouterOsClient,
        router: RouterId,
        job: JobId,
        op: &JobOp,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<PassReport, DriverError> {
        let request = match op {
            JobOp::DriftCheck {} => Request {
                trigger: DriftTrigger::Request,
                job_id: Some(job),
                scope: None,
            },
            JobOp::Enforce { items, adopt } => Request {
                trigger: DriftTrigger::Enforce,
                job_id: Some(job),
                scope: Some(Scope::Only {
                    items: items.iter().cloned().collect(),
                    adopt: *adopt,
                }),
            },
            other => {
                return Err(DriverError::new(
                    ErrorCode::InvalidRequest,
                    format!("{} is not a reconciler job", other.name()),
                ));
            }
        };
        let report = self.pass(client, router, request, progress).await?;
        match report.error.clone() {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// One pass over `router`. See the module documentation.
    ///
    /// # Errors
    ///
    /// Reading the router or the agent's store failed; nothing was changed. Failures of
    /// single steps are in the report instead ([`PassReport::error`]).
    pub async fn pass(
        &self,
        client: &RouterOsClient,
        router: RouterId,
        request: Request,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<PassReport, DriverError> {
        let lock = self.lock_for(router);
        let _guard = lock.write().await;
        let stored_epoch = self.desired.stored_epoch(router);
        let Some(stored) = self.desired.get(router).map_err(|e| store_err(&e))? else {
            progress(Progress { done: 1, total: 1 });
            return Ok(PassReport::default());
        };
        // What the router should have now: subscribers past their expiry or grace moved on
        // (the pass applies and records this one, so a phase change is no drift).
        let now = self.clock.now();
        let state = tikfleet_shared::lifecycle::effective(&stored, now);
        let next_transition = tikfleet_shared::lifecycle::next_transition(&stored, now);
        drop(stored);
        let prev = self
            .desired
            .applied_state(router)
            .map_err(|e| store_err(&e))?
            .filter(|p| p.generation <= state.generation);
        let journal = self.desired.journal(router).map_err(|e| store_err(&e))?;
        let scope = request
            .scope
            .clone()
            .unwrap_or(Scope::All(state.drift.policy));
        let (skip, touched) = match scope {
            Scope::All(_) => self.job_notes(router, state.generation, stored_epoch),
            // Staff asked for these items by name: do it.
            Scope::Only { .. } => (HashSet::new(), HashSet::new()),
        };
        let full = matches!(scope, Scope::All(_));
        let detected_at = self.clock.now();

        let rows = match read(client).await {
            Ok(rows) => rows,
            Err(e) => {
                if full {
                    let records = self.failed_transitions(
                        router,
                        state.generation,
                        &state.lifecycles,
                        now,
                        &e,
                    );
                    if let Err(e) = self.send_records(records).await {
                        tracing::warn!(%router, error = %e, "lifecycle report not recorded");
                    }
                }
                return Err(e);
            }
        };
        let caps = client.caps();
        let plan = plan::diff(&plan::Inputs {
            desired: &state,
            prev: prev.as_ref(),
            rows: &rows,
            journal: &journal,
            skip: &skip,
            touched: &touched,
            caps: &caps,
            scope: &scope,
        });
        drop(rows);

        let unmarked = plan.unmarked_adds();
        if !unmarked.is_empty() {
            let mut all: Vec<ItemRef> = journal.iter().cloned().collect();
            all.extend(unmarked.iter().cloned());
            self.desired
                .set_journal(router, &all)
                .map_err(|e| store_err(&e))?;
            self.desired.commit().await.map_err(|e| store_err(&e))?;
        }

        let mut tracker = Tracker {
            rec: self,
            router,
            generation: state.generation,
            done: 0,
            total: plan.steps() as u64,
            last: None,
            records: plan.steps() >= self.config.progress_min_steps,
            job: progress,
        };
        tracker.step(true);
        let mut applied = Applied::default();
        for phase in [&plan.profiles, &plan.accounts, &plan.profile_removes] {
            if applied.broken {
                // Not sent: they count as failed.
                applied.failed_steps += phase.len();
                for step in phase {
                    applied.failed_findings.extend(&step.findings);
                }
                continue;
            }
            self.run_steps(client, phase, &mut applied, &mut tracker)
                .await;
        }
        if !applied.mark.is_empty() && !applied.broken {
            self.mark(client, &mut applied).await;
        }
        let sessions = if applied.broken {
            0
        } else {
            let accounts = std::mem::take(&mut applied.reconnect);
            self.disconnect(client, &accounts, &mut applied).await
        };
        tracker.done = tracker.total;
        tracker.step(true);

        let mut findings = plan.findings;
        for i in &applied.failed_findings {
            if let Some(f) = findings.get_mut(*i) {
                f.action = DriftAction::Failed;
            }
        }
        let mut report = PassReport {
            generation: state.generation,
            items_checked: plan.items_checked,
            steps: tracker.total as usize,
            commands: applied.commands,
            failed: applied.failed_steps,
            findings: findings.len(),
            conflicts: plan.conflicts,
            sessions,
            applied: false,
            error: applied.first_error.clone(),
            next_transition,
        };
        if let Some(e) = &report.error {
            tracing::warn!(%router, generation = state.generation, failed = report.failed, error = %e, "reconcile pass incomplete");
        }
        if full && report.error.is_none() {
            self.desired
                .set_applied(&state)
                .map_err(|e| store_err(&e))?;
            report.applied = true;
            self.forget_notes(router, state.generation);
            let mut left: HashSet<ItemRef> = skip.iter().cloned().collect();
            left.extend(
                findings
                    .iter()
                    .filter(|f| f.action != DriftAction::Corrected)
                    .map(|f| f.item.clone()),
            );
            self.left_alone
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(router, left);
        }
        // The journal is done with once every step succeeded (every journaled item is marked
        // now); after a failure it stays, so the next pass still knows those items are ours.
        if report.error.is_none() && !(journal.is_empty() && unmarked.is_empty()) {
            self.desired
                .set_journal(router, &[])
                .map_err(|e| store_err(&e))?;
        }
        self.desired.commit().await.map_err(|e| store_err(&e))?;

        // The lifecycle transitions this pass made (or, failed, could not make).
        let finished = self.clock.now();
        let mut phases = None;
        let lifecycle_records = match (full, &report.error) {
            (false, _) => Vec::new(),
            (true, None) => {
                let known = self.desired.phases(router).map_err(|e| store_err(&e))?;
                let due = lifecycle_due(&state.lifecycles, &known, now);
                self.lifecycle_failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&router);
                if due.phases != known {
                    phases = Some(due.phases);
                }
                lifecycle_reports(router, state.generation, finished, due.transitions, None)
            }
            (true, Some(e)) => {
                self.failed_transitions(router, state.generation, &state.lifecycles, now, e)
            }
        };

        // The drift report, in parts; the lifecycle reports; then the apply report.
        let id = DriftId::new();
        let parts: Vec<_> = if findings.is_empty() {
            vec![Vec::new()]
        } else {
            findings
                .chunks(DriftReport::MAX_FINDINGS)
                .map(<[_]>::to_vec)
                .collect()
        };
        let n = parts.len();
        let mut records: Vec<OutboxRecord> = parts
            .into_iter()
            .enumerate()
            .map(|(part, findings)| {
                let last = part + 1 == n;
                OutboxRecord::Drift(DriftReport {
                    id,
                    router_id: router,
                    generation: state.generation,
                    detected_at,
                    trigger: request.trigger,
                    job_id: request.job_id,
                    part: u32::try_from(part).unwrap_or(u32::MAX),
                    last,
                    items_checked: if last { plan.items_checked } else { 0 },
                    findings,
                })
            })
            .collect();
        records.extend(lifecycle_records);
        if full {
            records.push(OutboxRecord::Applied(ApplyReport {
                router_id: router,
                generation: state.generation,
                at: finished,
                changes: u32::try_from(applied.commands).unwrap_or(u32::MAX),
                conflicts: plan.conflicts,
                error: report.error.as_ref().map(DriverError::to_info),
            }));
        }
        self.send_records(records).await?;
        // Only once the reports are durable: a crash before this line reports again.
        if let Some(phases) = phases {
            self.desired
                .set_phases(router, &phases)
                .map_err(|e| store_err(&e))?;
            self.desired.commit().await.map_err(|e| store_err(&e))?;
        }
        tracing::debug!(%router, generation = state.generation, detail = %report.detail(), "reconcile pass");
        Ok(report)
    }

    /// Queues `records` in the outbox and waits until they are committed.
    async fn send_records(&self, mut records: Vec<OutboxRecord>) -> Result<(), DriverError> {
        let last = records.pop();
        for r in records {
            self.audit
                .send(r)
                .map_err(|e| DriverError::new(ErrorCode::Internal, e.to_string()))?;
        }
        if let Some(r) = last {
            self.audit
                .push(r)
                .await
                .map_err(|e| DriverError::new(ErrorCode::Internal, e.to_string()))?;
        }
        Ok(())
    }

    /// The reports of the lifecycle transitions due at `now` that a full pass over
    /// `router` failed to make with `error`; nothing if none is due, or if the same due set
    /// was reported failed already (a retry that fails again). Leaves the phase map alone.
    fn failed_transitions(
        &self,
        router: RouterId,
        generation: u64,
        lifecycles: &[SubscriberLifecycle],
        now: UnixMillis,
        error: &DriverError,
    ) -> Vec<OutboxRecord> {
        let known = if lifecycles.is_empty() {
            PhaseMap::new()
        } else {
            match self.desired.phases(router) {
                Ok(known) => known,
                Err(e) => {
                    tracing::warn!(%router, error = %e, "cannot read the lifecycle phase map");
                    return Vec::new();
                }
            }
        };
        let due = lifecycle_due(lifecycles, &known, now);
        let mut failed = self
            .lifecycle_failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if due.transitions.is_empty() {
            failed.remove(&router);
            return Vec::new();
        }
        let print = fingerprint(&due.transitions);
        if failed.insert(router, print) == Some(print) {
            return Vec::new();
        }
        drop(failed);
        lifecycle_reports(
            router,
            generation,
            self.clock.now(),
            due.transitions,
            Some(error),
        )
    }

    /// The run loop could not reach `router` for a pass: reports the lifecycle transitions
    /// that are due (once per due set, like a failed pass).
    async fn unreachable(&self, router: RouterId, error: &DriverError) {
        let state = match self.desired.get(router) {
            Ok(Some(state)) if !state.lifecycles.is_empty() => state,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(%router, error = %e, "cannot read the desired state");
                return;
            }
        };
        let now = self.clock.now();
        let records =
            self.failed_transitions(router, state.generation, &state.lifecycles, now, error);
        if let Err(e) = self.send_records(records).await {
            tracing::warn!(%router, error = %e, "lifecycle report not recorded");
        }
    }

    /// Runs one phase's steps pipelined.
    async fn run_steps(
        &self,
        client: &RouterOsClient,
        steps: &[plan::Step],
        applied: &mut Applied,
        tracker: &mut Tracker<'_>,
    ) {
        if steps.is_empty() {
            return;
        }
        let mut cmds = Vec::new();
        let mut owner = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            for cmd in &step.cmds {
                cmds.push(cmd.clone());
                owner.push(i);
            }
        }
        let mut left: Vec<usize> = steps.iter().map(|s| s.cmds.len()).collect();
        let mut failed = vec![false; steps.len()];
        applied.commands += cmds.len();
        client
            .run_window(&cmds, self.config.window, |i, res| {
                let s = owner[i];
                if let Err(e) = res {
                    // Removed by someone else meanwhile: the goal holds.
                    let gone =
                        e.code() == ErrorCode::NoSuchItem && cmds[i].path().ends_with("/remove");
                    if !gone {
                        failed[s] = true;
                        applied.fail(e);
                    }
                }
                left[s] -= 1;
                if left[s] == 0 {
                    let step = &steps[s];
                    if failed[s] {
                        applied.failed_steps += 1;
                        applied.failed_findings.extend(&step.findings);
                    } else {
                        if let Some(a) = &step.reconnect {
                            applied.reconnect.push(a.clone());
                        }
                        if let Some(c) = &step.mark_later {
                            applied.mark.push((step.item.clone(), c.clone()));
                        }
                    }
                    tracker.done += 1;
                    tracker.step(false);
                }
            })
            .await;
    }

    /// Writes the marker on items added without it (RouterOS before 7.15), with the
    /// `comment` verb by `.id`.
    async fn mark(&self, client: &RouterOsClient, applied: &mut Applied) {
        let kinds: HashSet<ItemKind> = applied.mark.iter().map(|(i, _)| i.kind).collect();
        let mut ids: HashMap<(ItemKind, String), String> = HashMap::new();
        for kind in kinds {
            let cmd = Cmd::new(format!("{}/print", kind.path())).proplist(&[".id", "name"]);
            match client.run(cmd).await {
                Ok(rows) => {
                    for row in rows {
                        if let (Some(id), Some(name)) = (row.get(".id"), row.get("name")) {
                            ids.insert((kind, name.clone()), id.clone());
                        }
                    }
                }
                Err(e) => {
                    applied.fail(e);
                    return;
                }
            }
        }
        let marks = std::mem::take(&mut applied.mark);
        let cmds: Vec<Cmd> = marks
            .iter()
            .filter_map(|(item, comment)| {
                let id = ids.get(&(item.kind, item.key.clone()))?;
                Some(
                    Cmd::new(format!("{}/comment", item.kind.path()))
                        .attr(".id", id.clone())
                        .attr("comment", comment.clone()),
                )
            })
            .collect();
        applied.commands += cmds.len();
        let mut unmarked = Vec::new();
        client
            .run_window(&cmds, self.config.window, |i, res| {
                if let Err(e) = res {
                    unmarked.push(i);
                    applied.fail(e);
                }
            })
            .await;
        // Those not marked stay journaled.
        applied.mark = unmarked.into_iter().map(|i| marks[i].clone()).collect();
    }

    /// Removes the active sessions of `accounts`; returns how many.
    async fn disconnect(
        &self,
        client: &RouterOsClient,
        accounts: &[AccountRef],
        applied: &mut Applied,
    ) -> usize {
        let mut total = 0;
        for (kind, path, key) in [
            (AccountKind::Ppp, "/ppp/active", "name"),
            (AccountKind::Hotspot, "/ip/hotspot/active", "user"),
        ] {
            let names: HashSet<&str> = accounts
                .iter()
                .filter(|a| a.kind == kind)
                .map(|a| a.name.as_str())
                .collect();
            if names.is_empty() {
                continue;
            }
            let rows = match client
                .run(Cmd::new(format!("{path}/print")).proplist(&[".id", key]))
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    applied.fail(e);
                    continue;
                }
            };
            let cmds: Vec<Cmd> = rows
                .iter()
                .filter(|r| r.get(key).is_some_and(|n| names.contains(n.as_str())))
                .filter_map(|r| r.get(".id"))
                .map(|id| Cmd::new(format!("{path}/remove")).attr(".id", id.clone()))
                .collect();
            applied.commands += cmds.len();
            client
                .run_window(&cmds, self.config.window, |_, res| match res {
                    Ok(_) => total += 1,
                    // The session ended by itself meanwhile.
                    Err(e) if e.code() == ErrorCode::NoSuchItem => {}
                    Err(e) => applied.fail(e),
                })
                .await;
        }
        total
    }

    /// Runs passes when they are due, until `stop` turns true. See the module documentation.
    pub async fn run(
        self: Arc<Self>,
        connect: Arc<dyn Connect>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut sched: HashMap<RouterId, Sched> = HashMap::new();
        let mut tasks: tokio::task::JoinSet<(RouterId, Result<PassReport, DriverError>)> =
            tokio::task::JoinSet::new();
        let mut running: HashSet<RouterId> = HashSet::new();
        loop {
            if *stop.borrow() {
                break;
            }
            let notified = self.desired.changed().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.clock.now();
            let generations = match self.desired.generations() {
                Ok(g) => g,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read desired-state generations");
                    Vec::new()
                }
            };
            let mut wake: Option<UnixMillis> = None;
            for g in generations {
                let s = sched.entry(g.router_id).or_default();
                if s.generation != g.stored {
                    s.generation = g.stored;
                    let state = self.desired.get(g.router_id).ok().flatten();
                    s.transition = state
                        .as_ref()
                        .and_then(|d| tikfleet_shared::lifecycle::next_transition(d, now));
                    let interval = state.map_or(0, |d| d.drift.interval_ms);
                    // A new interval counts from now (a shorter one need not wait out the
                    // longer one it replaces).
                    if interval != s.interval_ms || s.next_check.is_none() {
                        s.interval_ms = interval;
                        s.next_check = (interval > 0).then(|| now.saturating_add(ms(interval)));
                    }
                }
                if running.contains(&g.router_id) {
                    continue;
                }
                // A subscriber's expiry or end of grace came: apply it like a new state.
                let behind = g.stored > g.applied || s.transition.is_some_and(|t| t <= now);
                let check_due = s.interval_ms > 0 && s.next_check.is_some_and(|t| t <= now);
                let retry_ok = s.retry_at.is_none_or(|t| t <= now);
                if (behind || check_due) && retry_ok {
                    let trigger = if behind {
                        DriftTrigger::Reconcile
                    } else {
                        DriftTrigger::Schedule
                    };
                    running.insert(g.router_id);
                    let rec = Arc::clone(&self);
                    let connect = Arc::clone(&connect);
                    let router = g.router_id;
                    tasks.spawn(async move {
                        let res = async {
                            let client = match connect.client(router).await {
                                Ok(client) => client,
                                Err(e) => {
                                    rec.unreachable(router, &e).await;
                                    return Err(e);
                                }
                            };
                            rec.pass(&client, router, Request::of(trigger), &|_| {})
                                .await
                        }
                        .await;
                        if let Err(e) | Ok(PassReport { error: Some(e), .. }) = &res
                            && e.drops_client()
                        {
                            connect.forget(router);
                        }
                        (router, res)
                    });
                    continue;
                }
                let next = match (behind, s.retry_at) {
                    (true, Some(t)) => Some(t),
                    _ => [
                        s.next_check.filter(|_| s.interval_ms > 0),
                        s.retry_at,
                        s.transition,
                    ]
                    .into_iter()
                    .flatten()
                    .min(),
                };
                if let Some(t) = next {
                    wake = Some(wake.map_or(t, |w| w.min(t)));
                }
            }
            let clock = Arc::clone(&self.clock);
            let sleep = async move {
                match wake {
                    Some(t) => clock.sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => {}
                () = &mut notified => {}
                () = sleep => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    let Ok((router, res)) = done else { continue };
                    running.remove(&router);
                    let now = self.clock.now();
                    let s = sched.entry(router).or_default();
                    let failed = match &res {
                        Ok(r) => r.error.is_some(),
                        Err(e) => {
                            tracing::warn!(%router, error = %e, "reconcile pass failed");
                            true
                        }
                    };
                    // The transitions a pass applied are done with; after a failure the due
                    // one stays due, for the retry.
                    if let Ok(PassReport { error: None, next_transition, .. }) = &res {
                        s.transition = *next_transition;
                    }
                    if failed {
                        s.failures += 1;
                        let delay = backoff(&self.config, s.failures);
                        s.retry_at = Some(now.saturating_add(delay));
                    } else {
                        s.failures = 0;
                        s.retry_at = None;
                    }
                    if s.interval_ms > 0 {
                        s.next_check = Some(now.saturating_add(ms(s.interval_ms)));
                    }
                }
            }
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn backoff(config: &ReconcileConfig, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    config
        .retry_base
        .checked_mul(factor)
        .unwrap_or(config.retry_cap)
        .min(config.retry_cap)
}

/// The lifecycle phases of a state at a moment, against a router's phase map.
struct Due {
    /// Subscribers whose phase is not active and differs from their entry in the map.
    transitions: Vec<LifecycleTransition>,
    /// The new map: every subscriber's phase, if not active.
    phases: PhaseMap,
}

/// The phases of `lifecycles` at `now` against `known` (one linear pass).
fn lifecycle_due(lifecycles: &[SubscriberLifecycle], known: &PhaseMap, now: UnixMillis) -> Due {
    let mut due = Due {
        transitions: Vec::new(),
        phases: PhaseMap::with_capacity(known.len()),
    };
    for l in lifecycles {
        let phase = l.phase_at(now);
        let Some(expires_at) = l.expires_at.filter(|_| phase != LifecyclePhase::Active) else {
            continue;
        };
        let entry = AppliedPhase { phase, expires_at };
        // One transition per subscriber, should a state list it twice.
        if due.phases.insert(l.subscriber_id, entry).is_some() {
            continue;
        }
        if known.get(&l.subscriber_id) != Some(&entry) {
            due.transitions.push(LifecycleTransition {
                subscriber_id: l.subscriber_id,
                account: l.account.clone(),
                phase,
                expires_at,
                due_at: l.phase_began(now).unwrap_or(expires_at),
            });
        }
    }
    due
}

/// `transitions` as reports of at most [`LifecycleReport::MAX_TRANSITIONS`].
fn lifecycle_reports(
    router: RouterId,
    generation: u64,
    at: UnixMillis,
    transitions: Vec<LifecycleTransition>,
    error: Option<&DriverError>,
) -> Vec<OutboxRecord> {
    let error = error.map(DriverError::to_info);
    let mut out = Vec::new();
    let mut rest = transitions;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(LifecycleReport::MAX_TRANSITIONS));
        out.push(OutboxRecord::Lifecycle(LifecycleReport {
            router_id: router,
            generation,
            at,
            transitions: rest,
            error: error.clone(),
        }));
        rest = tail;
    }
    out
}

/// Identifies a set of due transitions (in memory only).
fn fingerprint(transitions: &[LifecycleTransition]) -> u64 {
    use std::hash::BuildHasher;
    let hasher =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
    transitions.iter().fold(transitions.len() as u64, |acc, t| {
        acc.wrapping_add(hasher.hash_one((t.subscriber_id, t.phase, t.expires_at)))
    })
}

/// A job's change to an item: the generation its change made, and when it ran.
#[derive(Clone, Copy, Debug)]
struct Note {
    generation: Option<u64>,
    epoch: u64,
}

/// Per-router schedule of the run loop.
#[derive(Default)]
struct Sched {
    generation: u64,
    /// The next lifecycle transition of the stored state.
    transition: Option<UnixMillis>,
    interval_ms: u64,
    next_check: Option<UnixMillis>,
    retry_at: Option<UnixMillis>,
    failures: u32,
}

/// The items a job operation changes.
fn job_items(op: &JobOp) -> Vec<ItemRef> {
    let item = |kind, key: &str| ItemRef {
        kind,
        key: key.to_owned(),
    };
    let account = |a: &AccountRef| match a.kind {
        AccountKind::Ppp => item(ItemKind::PppSecret, &a.name),
        AccountKind::Hotspot => item(ItemKind::HotspotUser, &a.name),
    };
    let profile = |kind: AccountKind, name: &str| match kind {
        AccountKind::Ppp => item(ItemKind::PppProfile, name),
        AccountKind::Hotspot => item(ItemKind::HotspotProfile, name),
    };
    match op {
        JobOp::UpsertPppSecret { secret, profile: p } => {
            let mut v = vec![item(ItemKind::PppSecret, &secret.name)];
            v.extend(p.as_ref().map(|p| item(ItemKind::PppProfile, &p.name)));
            v
        }
        JobOp::UpsertHotspotUser { user, profile: p } => {
            let mut v = vec![item(ItemKind::HotspotUser, &user.name)];
            v.extend(p.as_ref().map(|p| item(ItemKind::HotspotProfile, &p.name)));
            v
        }
        JobOp::DeletePppSecret { name } => vec![item(ItemKind::PppSecret, name)],
        JobOp::DeleteHotspotUser { name } => vec![item(ItemKind::HotspotUser, name)],
        JobOp::SetProfile { account: a, .. }
        | JobOp::Enable { account: a }
        | JobOp::Disable { account: a } => vec![account(a)],
        JobOp::UpsertProfile { profile: p } => vec![profile(p.kind(), p.name())],
        JobOp::DeleteProfile { kind, name } => vec![profile(*kind, name)],
        JobOp::AddAddressListEntry { entry } => vec![item(
            ItemKind::AddressListEntry,
            &plan::address_key(&entry.list, &entry.address),
        )],
        JobOp::RemoveAddressListEntry { list, address } => vec![item(
            ItemKind::AddressListEntry,
            &plan::address_key(list, address),
        )],
        JobOp::DisconnectSession { .. }
        | JobOp::Reboot {}
        | JobOp::BackupNow { .. }
        | JobOp::Restore { .. }
        | JobOp::RotateCredentials {}
        | JobOp::Lockdown { .. }
        | JobOp::DriftCheck {}
        | JobOp::Enforce { .. } => Vec::new(),
    }
}

/// Reads the managed menus, pipelined. A menu the router does not have (no hotspot package)
/// reads as empty; its desired items then fail to add, with the router's message.
async fn read(client: &RouterOsClient) -> Result<HashMap<ItemKind, Vec<Row>>, DriverError> {
    let cmds: Vec<Cmd> = ItemKind::ALL.into_iter().map(plan::print_command).collect();
    let mut rows = HashMap::new();
    for (kind, res) in ItemKind::ALL.into_iter().zip(client.run_many(cmds).await) {
        match res {
            Ok(r) => {
                rows.insert(kind, r);
            }
            Err(e) if e.code() == ErrorCode::UnknownCommand => {
                rows.insert(kind, Vec::new());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use tikfleet_shared::SubscriberId;

    use super::*;

    fn lifecycle(i: u16, expires: i64) -> SubscriberLifecycle {
        let mut id = [0; 16];
        id[..2].copy_from_slice(&i.to_be_bytes());
        SubscriberLifecycle {
            subscriber_id: SubscriberId::from_bytes(id),
            account: AccountRef {
                kind: AccountKind::Ppp,
                name: format!("sub{i}"),
            },
            expires_at: Some(UnixMillis(expires)),
            grace_until: Some(UnixMillis(expires + 100)),
            grace_profile: None,
            suspended_profile: None,
            suspended_address_list: None,
        }
    }

    #[test]
    fn a_transition_is_a_non_active_phase_the_map_does_not_have() {
        let ls = vec![lifecycle(0, 10), lifecycle(1, 50), lifecycle(2, 1_000)];
        let first = lifecycle_due(&ls, &PhaseMap::new(), UnixMillis(60));
        let phases = |d: &Due| -> Vec<(String, LifecyclePhase, i64)> {
            d.transitions
                .iter()
                .map(|t| (t.account.name.clone(), t.phase, t.due_at.0))
                .collect()
        };
        assert_eq!(
            phases(&first),
            vec![
                ("sub0".into(), LifecyclePhase::Grace, 10),
                ("sub1".into(), LifecyclePhase::Grace, 50)
            ]
        );
        assert_eq!(
            first.phases.len(),
            2,
            "active subscribers are not in the map"
        );
        let again = lifecycle_due(&ls, &first.phases, UnixMillis(60));
        assert!(again.transitions.is_empty());
        assert_eq!(again.phases, first.phases);
        let later = lifecycle_due(&ls, &first.phases, UnixMillis(110));
        assert_eq!(
            phases(&later),
            vec![("sub0".into(), LifecyclePhase::Suspended, 110)]
        );
        // A renewal leaves the map; its next expiry is a transition again.
        let mut renewed = ls.clone();
        renewed[1] = lifecycle(1, 500);
        let back = lifecycle_due(&renewed, &later.phases, UnixMillis(120));
        assert!(back.transitions.is_empty());
        assert_eq!(back.phases.len(), 1);
        let expired = lifecycle_due(&renewed, &back.phases, UnixMillis(500));
        assert_eq!(
            phases(&expired),
            vec![("sub1".into(), LifecyclePhase::Grace, 500)]
        );
        // A state that lists a subscriber twice reports it once.
        let twice = vec![lifecycle(0, 10), lifecycle(0, 10)];
        assert_eq!(
            lifecycle_due(&twice, &PhaseMap::new(), UnixMillis(20))
                .transitions
                .len(),
            1
        );
    }

    #[test]
    fn reports_hold_at_most_max_transitions_and_the_fingerprint_tells_sets_apart() {
        let ls: Vec<_> = (0..2_500).map(|i| lifecycle(i, 10)).collect();
        let due = lifecycle_due(&ls, &PhaseMap::new(), UnixMillis(20));
        let print = fingerprint(&due.transitions);
        assert_ne!(print, fingerprint(&due.transitions[1..]));
        let reports = lifecycle_reports(RouterId::new(), 1, UnixMillis(30), due.transitions, None);
        let sizes: Vec<usize> = reports
            .iter()
            .map(|r| match r {
                OutboxRecord::Lifecycle(l) => l.transitions.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, vec![1_000, 1_000, 500]);
        assert!(lifecycle_reports(RouterId::new(), 1, UnixMillis(30), vec![], None).is_empty());
    }
}
