//! The durable job queue.
//!
//! Jobs ([`Job`] from shared) arrive from the controller and move through
//!
//! ```text
//! queued ──take──▶ running ──succeed──▶ succeeded
//!   ▲                │ ├──retry──▶ retrying ──(due)──take──▶ running …
//!   │                │ └──dead_letter──▶ failed ──(next_heal_at)──▶ queued (self-healing)
//!   └──requeue── failed / cancelled ◀──cancel── queued / running / retrying / failed
//! ```
//!
//! [`Queue`] is what the executor and the uplink use. It keeps the state machine behind the
//! small [`JobStore`] trait with two implementations: [`SledJobStore`] (durable, with
//! in-memory indexes rebuilt on open) and [`MemJobStore`] (a plain list scanned linearly,
//! the model). `agent/tests/durable_queue.rs` runs random operation sequences, including
//! close-and-reopen, against both and requires identical answers. The transition rules
//! themselves ([`JobRecord::apply`]) are shared; what differs is storage, indexing,
//! selection order and recovery.
//!
//! Guarantees:
//! - [`Queue::enqueue`] returns `Ok` only after the job is committed (group commit), so an
//!   acknowledged job survives kill -9. It also commits when it returns an existing job
//!   (same idempotency key or id): that job may have been written a moment ago by a
//!   concurrent enqueue that has not committed yet.
//! - Jobs that were running when the agent stopped are queued again on open (operations
//!   are idempotent, so running one twice is safe). Their attempt count is kept.
//! - Ready order: critical, then normal, then bulk; among equals the earliest due time, then
//!   first in, first out (a per-queue sequence number given at enqueue).
//! - New jobs are refused with `storage_full` when the store is over its cap or the disk is
//!   full; everything already accepted keeps moving.
//!
//! On disk (`jobs` tree): `j` + 16 id bytes → MessagePack `StoredJob`; `k` + idempotency
//! key bytes → 16 id bytes; `m` + `next_seq` → u64 big-endian. An enqueue writes all three
//! in one atomic sled batch. [`SledJobStore`] keeps the records of running jobs in memory
//! too, so a running job's transitions cost one write each and its progress none.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tikfleet_shared::job::{Job, JobStatus, Priority, Progress};
use tikfleet_shared::{ErrorCode, ErrorInfo, JobId, RouterId, UnixMillis};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::store::{Store, StoreError, TreeName};

/// An error of the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// No job with this id.
    #[error("job {id} not found")]
    NotFound {
        /// The job.
        id: JobId,
    },
    /// The job's status does not allow the requested change.
    #[error("cannot {action} job {id}: it is {status:?}")]
    InvalidState {
        /// The job.
        id: JobId,
        /// Its status now.
        status: JobStatus,
        /// What was asked, e.g. `succeed`.
        action: &'static str,
    },
    /// The store failed or is full.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl QueueError {
    /// The shared error code for this error.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::InvalidState { .. } => ErrorCode::Conflict,
            Self::Store(e) => e.code(),
        }
    }
}

/// A job with its queue state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRecord {
    /// The job as the controller sent it.
    pub job: Job,
    /// Where it is.
    pub status: JobStatus,
    /// Attempts so far (a take counts one); reset by requeue and self-healing.
    pub attempts: u32,
    /// Progress of the current attempt, if reported.
    pub progress: Option<Progress>,
    /// The last error, kept across requeues for history.
    pub last_error: Option<ErrorInfo>,
    /// Result text of a succeeded job.
    pub detail: Option<String>,
    /// When it was enqueued.
    pub enqueued_at: UnixMillis,
    /// When its status last changed.
    pub updated_at: UnixMillis,
    /// Queued / retrying: not before this moment.
    pub due_at: UnixMillis,
    /// Failed (dead-lettered): when self-healing queues it again; `None` = never.
    pub next_heal_at: Option<UnixMillis>,
    /// Enqueue order (first in, first out among equals); never reused.
    pub seq: u64,
}

/// A change to a job, as [`JobRecord::apply`] takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The executor starts it.
    Take,
    /// Progress of the running attempt.
    Progress(Progress),
    /// It succeeded.
    Succeed {
        /// Result text for people.
        detail: Option<String>,
    },
    /// It failed transiently; run again not before `not_before`.
    Retry {
        /// Earliest next attempt.
        not_before: UnixMillis,
        /// Why it failed.
        error: ErrorInfo,
    },
    /// Out of attempts or failed permanently.
    DeadLetter {
        /// Why.
        error: ErrorInfo,
        /// When to try again by itself; `None` = only when staff re-queue it.
        next_heal_at: Option<UnixMillis>,
    },
    /// The controller cancelled it.
    Cancel,
    /// Staff re-queued it.
    Requeue,
    /// Its self-healing time came.
    Heal,
    /// The agent restarted while it was running.
    Recover,
}

impl Transition {
    const fn action(&self) -> &'static str {
        match self {
            Self::Take => "take",
            Self::Progress(_) => "report progress on",
            Self::Succeed { .. } => "succeed",
            Self::Retry { .. } => "retry",
            Self::DeadLetter { .. } => "dead-letter",
            Self::Cancel => "cancel",
            Self::Requeue => "requeue",
            Self::Heal => "heal",
            Self::Recover => "recover",
        }
    }
}

impl JobRecord {
    /// A freshly enqueued job.
    #[must_use]
    pub fn new(job: Job, now: UnixMillis, seq: u64) -> Self {
        Self {
            job,
            status: JobStatus::Queued,
            attempts: 0,
            progress: None,
            last_error: None,
            detail: None,
            enqueued_at: now,
            updated_at: now,
            due_at: now,
            next_heal_at: None,
            seq,
        }
    }

    /// Applies a transition, or says why it is not allowed. Both stores use this one
    /// function, so they cannot disagree on the rules.
    pub fn apply(&mut self, t: Transition, now: UnixMillis) -> Result<(), QueueError> {
        use JobStatus::{Cancelled, Failed, Queued, Retrying, Running, Succeeded};
        let allowed = match (&t, self.status) {
            (Transition::Take, Queued | Retrying) => true,
            (Transition::Progress(_) | Transition::Succeed { .. }, Running) => true,
            (Transition::Retry { .. }, Running) => true,
            (Transition::DeadLetter { .. }, Queued | Running | Retrying) => true,
            (Transition::Cancel, Queued | Running | Retrying | Failed) => true,
            (Transition::Requeue, Failed | Cancelled) => true,
            (Transition::Heal, Failed) => self.next_heal_at.is_some(),
            (Transition::Recover, Running) => true,
            (_, Queued | Running | Retrying | Succeeded | Failed | Cancelled) => false,
        };
        if !allowed {
            return Err(QueueError::InvalidState {
                id: self.job.id,
                status: self.status,
                action: t.action(),
            });
        }
        if !matches!(t, Transition::Progress(_)) {
            self.updated_at = now;
        }
        match t {
            Transition::Take => {
                self.status = Running;
                self.attempts = self.attempts.saturating_add(1);
                self.progress = None;
            }
            Transition::Progress(p) => self.progress = Some(p),
            Transition::Succeed { detail } => {
                self.status = Succeeded;
                self.detail = detail;
            }
            Transition::Retry { not_before, error } => {
                self.status = Retrying;
                self.due_at = not_before;
                self.last_error = Some(error);
            }
            Transition::DeadLetter {
                error,
                next_heal_at,
            } => {
                self.status = Failed;
                self.last_error = Some(error);
                self.next_heal_at = next_heal_at;
            }
            Transition::Cancel => {
                self.status = Cancelled;
                self.next_heal_at = None;
            }
            Transition::Requeue => {
                self.status = Queued;
                self.attempts = 0;
                self.due_at = now;
                self.next_heal_at = None;
            }
            Transition::Heal => {
                self.status = Queued;
                self.attempts = 0;
                self.due_at = self.next_heal_at.unwrap_or(now);
                self.next_heal_at = None;
            }
            Transition::Recover => {
                self.status = Queued;
                self.progress = None;
            }
        }
        Ok(())
    }

    /// Whether the job waits for its turn (queued or retrying).
    #[must_use]
    pub fn is_waiting(&self) -> bool {
        matches!(self.status, JobStatus::Queued | JobStatus::Retrying)
    }
}

/// The result of an enqueue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enqueued {
    /// The stored job: the new one, or the existing one with the same key or id.
    pub record: JobRecord,
    /// `false` when an existing job was returned (idempotent repeat).
    pub created: bool,
}

/// Jobs per status, for `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Queued.
    pub queued: u64,
    /// Running.
    pub running: u64,
    /// Waiting to retry.
    pub retrying: u64,
    /// Succeeded (until purged).
    pub succeeded: u64,
    /// Dead-lettered.
    pub failed: u64,
    /// Cancelled (until purged).
    pub cancelled: u64,
}

impl QueueCounts {
    fn add(&mut self, status: JobStatus, n: i64) {
        let slot = match status {
            JobStatus::Queued => &mut self.queued,
            JobStatus::Running => &mut self.running,
            JobStatus::Retrying => &mut self.retrying,
            JobStatus::Succeeded => &mut self.succeeded,
            JobStatus::Failed => &mut self.failed,
            JobStatus::Cancelled => &mut self.cancelled,
        };
        *slot = slot.saturating_add_signed(n);
    }

    fn of<'a>(records: impl Iterator<Item = &'a JobRecord>) -> Self {
        let mut counts = Self::default();
        for r in records {
            counts.add(r.status, 1);
        }
        counts
    }
}

/// What the queue needs from storage. Methods do not commit; [`Queue`] does.
pub trait JobStore: Send {
    /// Stores a new job, or returns the existing one with the same idempotency key or id.
    fn enqueue(&mut self, job: Job, now: UnixMillis) -> Result<Enqueued, QueueError>;
    /// Starts the most urgent ready job (after queueing heal-due dead letters again).
    fn take_ready(&mut self, now: UnixMillis) -> Result<Option<JobRecord>, QueueError> {
        self.take_ready_for(now, &mut |_| true)
    }
    /// Like [`JobStore::take_ready`], among the jobs whose router `eligible` accepts (the
    /// executor skips routers that are at their concurrency limit).
    fn take_ready_for(
        &mut self,
        now: UnixMillis,
        eligible: &mut dyn FnMut(RouterId) -> bool,
    ) -> Result<Option<JobRecord>, QueueError>;
    /// Applies a transition to one job.
    fn transition(
        &mut self,
        id: JobId,
        t: Transition,
        now: UnixMillis,
    ) -> Result<JobRecord, QueueError>;
    /// Removes every job with one of `statuses` last changed before `before`; returns how many.
    fn purge(&mut self, statuses: &[JobStatus], before: UnixMillis) -> Result<u64, QueueError>;
    /// One job.
    fn get(&self, id: JobId) -> Result<Option<JobRecord>, QueueError>;
    /// Jobs in enqueue order, optionally only those with `status`.
    fn list(&self, status: Option<JobStatus>) -> Result<Vec<JobRecord>, QueueError>;
    /// The earliest moment a job becomes ready (due time or heal time), if any waits.
    fn next_due(&self) -> Option<UnixMillis>;
    /// The earliest due or heal time strictly after `after`, if any (the executor sleeps
    /// until then while the jobs already due wait for busy routers).
    fn next_due_after(&self, after: UnixMillis) -> Option<UnixMillis>;
    /// Jobs per status.
    fn counts(&self) -> QueueCounts;
    /// The store to commit, if this storage is durable.
    fn durable(&self) -> Option<&Store>;
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

/// The in-memory model: a list, scanned linearly. Also handy for executor tests.
#[derive(Debug, Default, Clone)]
pub struct MemJobStore {
    jobs: Vec<JobRecord>,
    next_seq: u64,
}

impl MemJobStore {
    /// An empty queue.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// What a restart does: running jobs are queued again.
    pub fn reopen(&mut self, now: UnixMillis) {
        for r in &mut self.jobs {
            if r.status == JobStatus::Running {
                let _ = r.apply(Transition::Recover, now);
            }
        }
    }
}

impl JobStore for MemJobStore {
    fn enqueue(&mut self, job: Job, now: UnixMillis) -> Result<Enqueued, QueueError> {
        if let Some(r) = self
            .jobs
            .iter()
            .find(|r| r.job.idempotency_key == job.idempotency_key || r.job.id == job.id)
        {
            return Ok(Enqueued {
                record: r.clone(),
                created: false,
            });
        }
        self.next_seq += 1;
        let record = JobRecord::new(job, now, self.next_seq);
        self.jobs.push(record.clone());
        Ok(Enqueued {
            record,
            created: true,
        })
    }

    fn take_ready_for(
        &mut self,
        now: UnixMillis,
        eligible: &mut dyn FnMut(RouterId) -> bool,
    ) -> Result<Option<JobRecord>, QueueError> {
        for r in &mut self.jobs {
            if r.status == JobStatus::Failed && r.next_heal_at.is_some_and(|h| h <= now) {
                r.apply(Transition::Heal, now)?;
            }
        }
        let best = self
            .jobs
            .iter_mut()
            .filter(|r| r.is_waiting() && r.due_at <= now && eligible(r.job.router_id))
            .min_by_key(|r| (r.job.priority, r.due_at, r.seq));
        match best {
            Some(r) => {
                r.apply(Transition::Take, now)?;
                Ok(Some(r.clone()))
            }
            None => Ok(None),
        }
    }

    fn transition(
        &mut self,
        id: JobId,
        t: Transition,
        now: UnixMillis,
    ) -> Result<JobRecord, QueueError> {
        let r = self
            .jobs
            .iter_mut()
            .find(|r| r.job.id == id)
            .ok_or(QueueError::NotFound { id })?;
        r.apply(t, now)?;
        Ok(r.clone())
    }

    fn purge(&mut self, statuses: &[JobStatus], before: UnixMillis) -> Result<u64, QueueError> {
        let len = self.jobs.len();
        self.jobs
            .retain(|r| !(statuses.contains(&r.status) && r.updated_at < before));
        Ok((len - self.jobs.len()) as u64)
    }

    fn get(&self, id: JobId) -> Result<Option<JobRecord>, QueueError> {
        Ok(self.jobs.iter().find(|r| r.job.id == id).cloned())
    }

    fn list(&self, status: Option<JobStatus>) -> Result<Vec<JobRecord>, QueueError> {
        Ok(self
            .jobs
            .iter()
            .filter(|r| status.is_none_or(|s| r.status == s))
            .cloned()
            .collect())
    }

    fn next_due(&self) -> Option<UnixMillis> {
        self.jobs
            .iter()
            .filter_map(|r| match r.status {
                JobStatus::Queued | JobStatus::Retrying => Some(r.due_at),
                JobStatus::Failed => r.next_heal_at,
                _ => None,
            })
            .min()
    }

    fn next_due_after(&self, after: UnixMillis) -> Option<UnixMillis> {
        self.jobs
            .iter()
            .filter_map(|r| match r.status {
                JobStatus::Queued | JobStatus::Retrying => Some(r.due_at),
                JobStatus::Failed => r.next_heal_at,
                _ => None,
            })
            .filter(|&at| at > after)
            .min()
    }

    fn counts(&self) -> QueueCounts {
        QueueCounts::of(self.jobs.iter())
    }

    fn durable(&self) -> Option<&Store> {
        None
    }
}

// ---------------------------------------------------------------------------------------
// The sled store
// ---------------------------------------------------------------------------------------

const TREE: &str = "jobs";
const NEXT_SEQ_KEY: &[u8] = b"mnext_seq";

/// The on-disk form of a job record (a storage format, versioned by `v`).
#[derive(Serialize, Deserialize)]
struct StoredJob {
    v: u8,
    job: Job,
    status: JobStatus,
    attempts: u32,
    progress: Option<Progress>,
    last_error: Option<ErrorInfo>,
    detail: Option<String>,
    enqueued_at: UnixMillis,
    updated_at: UnixMillis,
    due_at: UnixMillis,
    next_heal_at: Option<UnixMillis>,
    seq: u64,
}

fn encode_job(r: &JobRecord) -> Result<Vec<u8>, StoreError> {
    let stored = StoredJob {
        v: 1,
        job: r.job.clone(),
        status: r.status,
        attempts: r.attempts,
        progress: r.progress,
        last_error: r.last_error.clone(),
        detail: r.detail.clone(),
        enqueued_at: r.enqueued_at,
        updated_at: r.updated_at,
        due_at: r.due_at,
        next_heal_at: r.next_heal_at,
        seq: r.seq,
    };
    rmp_serde::to_vec_named(&stored).map_err(|e| StoreError::Encode {
        what: "job",
        reason: e.to_string(),
    })
}

fn decode_job(bytes: &[u8]) -> Result<JobRecord, StoreError> {
    let s: StoredJob = rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree: TREE,
        reason: format!("job record: {e}"),
    })?;
    Ok(JobRecord {
        job: s.job,
        status: s.status,
        attempts: s.attempts,
        progress: s.progress,
        last_error: s.last_error,
        detail: s.detail,
        enqueued_at: s.enqueued_at,
        updated_at: s.updated_at,
        due_at: s.due_at,
        next_heal_at: s.next_heal_at,
        seq: s.seq,
    })
}

fn job_key(id: JobId) -> [u8; 17] {
    let mut key = [b'j'; 17];
    key[1..].copy_from_slice(id.as_bytes());
    key
}

fn idem_key(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(b'k');
    out.extend_from_slice(key.as_bytes());
    out
}

/// What the in-memory indexes know about one job.
#[derive(Clone, Copy, Debug)]
struct Entry {
    status: JobStatus,
    priority: Priority,
    router: RouterId,
    due_at: UnixMillis,
    next_heal_at: Option<UnixMillis>,
    seq: u64,
}

impl Entry {
    fn of(r: &JobRecord) -> Self {
        Self {
            status: r.status,
            priority: r.job.priority,
            router: r.job.router_id,
            due_at: r.due_at,
            next_heal_at: r.next_heal_at,
            seq: r.seq,
        }
    }
}

const fn prio_slot(p: Priority) -> usize {
    match p {
        Priority::Critical => 0,
        Priority::Normal => 1,
        Priority::Bulk => 2,
    }
}

/// One router's waiting jobs per priority slot, ordered by (due, seq).
type ReadySets = [BTreeSet<(UnixMillis, u64, JobId)>; 3];

/// The durable job store: records in sled, indexes in memory (rebuilt on open).
#[derive(Debug)]
pub struct SledJobStore {
    store: Store,
    tree: sled::Tree,
    next_seq: u64,
    entries: HashMap<JobId, Entry>,
    /// Waiting jobs per router and priority, ordered by (due, seq). Per router, so that
    /// taking a job costs O(routers), not O(waiting jobs), while busy routers' jobs wait.
    ready: HashMap<RouterId, ReadySets>,
    /// Dead-lettered jobs with a heal time, ordered by (heal time, seq).
    healing: BTreeSet<(UnixMillis, u64, JobId)>,
    /// The records of the running jobs (at most the executor's concurrency), so that their
    /// transitions neither read nor decode them again, and their progress (advisory, and
    /// cleared by the recovery of a running job on open anyway) is kept here only.
    running: HashMap<JobId, JobRecord>,
    counts: QueueCounts,
    corrupt: u64,
}

impl SledJobStore {
    /// Opens the jobs tree; running jobs become queued, corrupt records are skipped.
    pub fn open(store: &Store, now: UnixMillis) -> Result<Self, QueueError> {
        let tree = store.tree(TreeName::Jobs)?;
        let mut this = Self {
            store: store.clone(),
            tree,
            next_seq: 0,
            entries: HashMap::new(),
            ready: HashMap::new(),
            healing: BTreeSet::new(),
            running: HashMap::new(),
            counts: QueueCounts::default(),
            corrupt: 0,
        };
        if let Some(bytes) = this.tree.get(NEXT_SEQ_KEY).map_err(|e| store.map_sled(e))? {
            match <[u8; 8]>::try_from(bytes.as_ref()) {
                Ok(b) => this.next_seq = u64::from_be_bytes(b),
                Err(_) => tracing::warn!("the job sequence counter is corrupt; rebuilding it"),
            }
        }
        let mut recovered = 0;
        for item in this.tree.scan_prefix(b"j") {
            let (key, value) = item.map_err(|e| store.map_sled(e))?;
            let mut record = match decode_job(&value) {
                Ok(r) if key.as_ref() == job_key(r.job.id) => r,
                Ok(_) => {
                    this.corrupt += 1;
                    tracing::error!(key = ?key.as_ref(), "skipping a job stored under the wrong key");
                    continue;
                }
                Err(e) => {
                    this.corrupt += 1;
                    tracing::error!(key = ?key.as_ref(), error = %e, "skipping a corrupt job record");
                    continue;
                }
            };
            if record.status == JobStatus::Running {
                record.apply(Transition::Recover, now)?;
                this.tree
                    .insert(key, encode_job(&record)?)
                    .map_err(|e| store.map_sled(e))?;
                recovered += 1;
            }
            this.next_seq = this.next_seq.max(record.seq);
            this.index(&record);
        }
        if recovered > 0 {
            tracing::info!(jobs = recovered, "jobs that were running are queued again");
        }
        Ok(this)
    }

    /// Records skipped on open because they could not be decoded.
    #[must_use]
    pub fn corrupt_records(&self) -> u64 {
        self.corrupt
    }

    fn index(&mut self, r: &JobRecord) {
        let e = Entry::of(r);
        self.insert_entry(r.job.id, e);
    }

    fn insert_entry(&mut self, id: JobId, e: Entry) {
        match e.status {
            JobStatus::Queued | JobStatus::Retrying => {
                self.ready.entry(e.router).or_default()[prio_slot(e.priority)]
                    .insert((e.due_at, e.seq, id));
            }
            JobStatus::Failed => {
                if let Some(h) = e.next_heal_at {
                    self.healing.insert((h, e.seq, id));
                }
            }
            _ => {}
        }
        self.counts.add(e.status, 1);
        self.entries.insert(id, e);
    }

    fn unindex(&mut self, id: JobId) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        if let Some(sets) = self.ready.get_mut(&e.router) {
            sets[prio_slot(e.priority)].remove(&(e.due_at, e.seq, id));
            if sets.iter().all(BTreeSet::is_empty) {
                self.ready.remove(&e.router);
            }
        }
        if let Some(h) = e.next_heal_at {
            self.healing.remove(&(h, e.seq, id));
        }
        self.counts.add(e.status, -1);
        Some(e)
    }

    fn load(&self, id: JobId) -> Result<JobRecord, QueueError> {
        if let Some(r) = self.running.get(&id) {
            return Ok(r.clone());
        }
        let bytes = self
            .tree
            .get(job_key(id))
            .map_err(|e| self.store.map_sled(e))?
            .ok_or(QueueError::NotFound { id })?;
        Ok(decode_job(&bytes)?)
    }

    /// Writes a changed record and re-indexes it.
    fn save(&mut self, r: &JobRecord) -> Result<(), QueueError> {
        let value = encode_job(r)?;
        self.tree
            .insert(job_key(r.job.id), value)
            .map_err(|e| self.store.map_sled(e))?;
        self.unindex(r.job.id);
        self.index(r);
        Ok(())
    }

    /// Keeps the record of a running job in memory (and forgets it once it stops running).
    fn cache(&mut self, r: &JobRecord) {
        if r.status == JobStatus::Running {
            self.running.insert(r.job.id, r.clone());
        } else {
            self.running.remove(&r.job.id);
        }
    }

    fn existing(&self, job: &Job) -> Result<Option<JobRecord>, QueueError> {
        if let Some(id) = self
            .tree
            .get(idem_key(&job.idempotency_key))
            .map_err(|e| self.store.map_sled(e))?
        {
            let id = <[u8; 16]>::try_from(id.as_ref()).map_err(|_| StoreError::Corrupt {
                tree: TREE,
                reason: "idempotency entry is not a job id".to_owned(),
            })?;
            return self.load(JobId::from_bytes(id)).map(Some);
        }
        if self.entries.contains_key(&job.id) {
            return self.load(job.id).map(Some);
        }
        Ok(None)
    }
}

impl JobStore for SledJobStore {
    fn enqueue(&mut self, job: Job, now: UnixMillis) -> Result<Enqueued, QueueError> {
        if let Some(record) = self.existing(&job)? {
            return Ok(Enqueued {
                record,
                created: false,
            });
        }
        self.store.check_room()?;
        let seq = self.next_seq + 1;
        let record = JobRecord::new(job, now, seq);
        let mut batch = sled::Batch::default();
        batch.insert(&job_key(record.job.id), encode_job(&record)?);
        batch.insert(
            idem_key(&record.job.idempotency_key),
            record.job.id.as_bytes(),
        );
        batch.insert(NEXT_SEQ_KEY, &seq.to_be_bytes());
        self.tree
            .apply_batch(batch)
            .map_err(|e| self.store.map_sled(e))?;
        self.next_seq = seq;
        self.index(&record);
        Ok(Enqueued {
            record,
            created: true,
        })
    }

    fn take_ready_for(
        &mut self,
        now: UnixMillis,
        eligible: &mut dyn FnMut(RouterId) -> bool,
    ) -> Result<Option<JobRecord>, QueueError> {
        while let Some(&(heal_at, _, id)) = self.healing.first() {
            if heal_at > now {
                break;
            }
            self.transition(id, Transition::Heal, now)?;
        }
        // The most urgent due job of each router is the first due head of its priority
        // slots; the pick is the most urgent of those among eligible routers (the same job
        // as one scan of all waiting jobs in (priority, due, seq) order would find).
        let mut pick: Option<(usize, UnixMillis, u64, JobId)> = None;
        for (router, sets) in &self.ready {
            let head = sets.iter().enumerate().find_map(|(slot, set)| {
                set.first()
                    .filter(|&&(due, _, _)| due <= now)
                    .map(|&(due, seq, id)| (slot, due, seq, id))
            });
            if let Some(head) = head
                && pick.is_none_or(|p| head < p)
                && eligible(*router)
            {
                pick = Some(head);
            }
        }
        match pick {
            Some((_, _, _, id)) => self.transition(id, Transition::Take, now).map(Some),
            None => Ok(None),
        }
    }

    fn transition(
        &mut self,
        id: JobId,
        t: Transition,
        now: UnixMillis,
    ) -> Result<JobRecord, QueueError> {
        if !self.entries.contains_key(&id) {
            return Err(QueueError::NotFound { id });
        }
        // Progress of a running job stays in memory: it is advisory, and a job that was
        // running when the agent stopped is recovered with no progress, whatever is on disk.
        if let (Transition::Progress(_), Some(r)) = (&t, self.running.get_mut(&id)) {
            r.apply(t, now)?;
            return Ok(r.clone());
        }
        let mut record = self.load(id)?;
        record.apply(t, now)?;
        self.save(&record)?;
        self.cache(&record);
        Ok(record)
    }

    fn purge(&mut self, statuses: &[JobStatus], before: UnixMillis) -> Result<u64, QueueError> {
        let victims: Vec<JobId> = self
            .entries
            .iter()
            .filter(|(_, e)| statuses.contains(&e.status))
            .map(|(id, _)| *id)
            .collect();
        let mut batch = sled::Batch::default();
        let mut removed = Vec::new();
        for id in victims {
            let record = self.load(id)?;
            if record.updated_at < before {
                batch.remove(&job_key(id));
                batch.remove(idem_key(&record.job.idempotency_key));
                removed.push(id);
            }
        }
        self.tree
            .apply_batch(batch)
            .map_err(|e| self.store.map_sled(e))?;
        for id in &removed {
            self.unindex(*id);
            self.running.remove(id);
        }
        Ok(removed.len() as u64)
    }

    fn get(&self, id: JobId) -> Result<Option<JobRecord>, QueueError> {
        match self.load(id) {
            Ok(r) => Ok(Some(r)),
            Err(QueueError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, status: Option<JobStatus>) -> Result<Vec<JobRecord>, QueueError> {
        let mut ids: Vec<(u64, JobId)> = self
            .entries
            .iter()
            .filter(|(_, e)| status.is_none_or(|s| e.status == s))
            .map(|(id, e)| (e.seq, *id))
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| self.load(id)).collect()
    }

    fn next_due(&self) -> Option<UnixMillis> {
        self.ready
            .values()
            .flatten()
            .filter_map(|s| s.first().map(|&(due, _, _)| due))
            .chain(self.healing.first().map(|&(h, _, _)| h))
            .min()
    }

    fn next_due_after(&self, after: UnixMillis) -> Option<UnixMillis> {
        let from = (
            UnixMillis::new(after.as_millis().saturating_add(1)),
            0,
            JobId::from_bytes([0; 16]),
        );
        self.ready
            .values()
            .flatten()
            .chain(std::iter::once(&self.healing))
            .filter_map(|s| s.range(from..).next().map(|&(at, _, _)| at))
            .min()
    }

    fn counts(&self) -> QueueCounts {
        self.counts
    }

    fn durable(&self) -> Option<&Store> {
        Some(&self.store)
    }
}

// ---------------------------------------------------------------------------------------
// The queue
// ---------------------------------------------------------------------------------------

/// The job queue: a [`JobStore`] behind a lock, group commit, and a ready signal.
#[derive(Debug)]
pub struct Queue<S: JobStore = SledJobStore> {
    storage: Mutex<S>,
    store: Option<Store>,
    ready: Notify,
}

impl Queue<SledJobStore> {
    /// Opens the durable queue in `store` (running jobs are queued again).
    pub fn open(store: &Store, now: UnixMillis) -> Result<Self, QueueError> {
        Ok(Self::with_storage(SledJobStore::open(store, now)?))
    }
}

impl Queue<MemJobStore> {
    /// A queue that keeps nothing on disk (for tests of the executor).
    #[must_use]
    pub fn in_memory() -> Self {
        Self::with_storage(MemJobStore::new())
    }
}

impl<S: JobStore> Queue<S> {
    /// A queue over `storage`.
    pub fn with_storage(storage: S) -> Self {
        let store = storage.durable().cloned();
        Self {
            storage: Mutex::new(storage),
            store,
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, S> {
        self.storage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn commit(&self) -> Result<(), QueueError> {
        if let Some(store) = &self.store {
            store.commit().await?;
        }
        Ok(())
    }

    /// Stores a job durably, or returns the existing one with the same idempotency key.
    /// `Ok` means the job is on disk.
    pub async fn enqueue(&self, job: Job, now: UnixMillis) -> Result<Enqueued, QueueError> {
        let enqueued = self.lock().enqueue(job, now)?;
        self.commit().await?;
        if enqueued.created {
            self.ready.notify_waiters();
        }
        Ok(enqueued)
    }

    /// Starts the most urgent ready job, if any (its status becomes running).
    pub fn take_ready(&self, now: UnixMillis) -> Result<Option<JobRecord>, QueueError> {
        self.lock().take_ready(now)
    }

    /// Starts the most urgent ready job whose router `eligible` accepts, if any. Jobs for
    /// other routers keep their place.
    pub fn take_ready_for(
        &self,
        now: UnixMillis,
        mut eligible: impl FnMut(RouterId) -> bool,
    ) -> Result<Option<JobRecord>, QueueError> {
        self.lock().take_ready_for(now, &mut eligible)
    }

    /// Records progress of a running job (not committed: progress is advisory; the durable
    /// store keeps it in memory only, since a job running at a restart is recovered without
    /// progress anyway).
    pub fn set_progress(
        &self,
        id: JobId,
        progress: Progress,
        now: UnixMillis,
    ) -> Result<JobRecord, QueueError> {
        self.lock()
            .transition(id, Transition::Progress(progress), now)
    }

    async fn change(
        &self,
        id: JobId,
        t: Transition,
        now: UnixMillis,
        wakes: bool,
    ) -> Result<JobRecord, QueueError> {
        let record = self.lock().transition(id, t, now)?;
        self.commit().await?;
        if wakes {
            self.ready.notify_waiters();
        }
        Ok(record)
    }

    /// Marks a running job succeeded.
    pub async fn succeed(
        &self,
        id: JobId,
        detail: Option<String>,
        now: UnixMillis,
    ) -> Result<JobRecord, QueueError> {
        self.change(id, Transition::Succeed { detail }, now, false)
            .await
    }

    /// Schedules another attempt of a running job, not before `not_before`.
    pub async fn retry(
        &self,
        id: JobId,
        not_before: UnixMillis,
        error: ErrorInfo,
        now: UnixMillis,
    ) -> Result<JobRecord, QueueError> {
        self.change(id, Transition::Retry { not_before, error }, now, true)
            .await
    }

    /// Dead-letters a job; with `next_heal_at` it is queued again then (self-healing).
    pub async fn dead_letter(
        &self,
        id: JobId,
        error: ErrorInfo,
        next_heal_at: Option<UnixMillis>,
        now: UnixMillis,
    ) -> Result<JobRecord, QueueError> {
        let t = Transition::DeadLetter {
            error,
            next_heal_at,
        };
        self.change(id, t, now, next_heal_at.is_some()).await
    }

    /// Cancels a job that has not finished (or a dead letter).
    pub async fn cancel(&self, id: JobId, now: UnixMillis) -> Result<JobRecord, QueueError> {
        self.change(id, Transition::Cancel, now, false).await
    }

    /// Queues a failed or cancelled job again with fresh attempts (staff or technician).
    pub async fn requeue(&self, id: JobId, now: UnixMillis) -> Result<JobRecord, QueueError> {
        self.change(id, Transition::Requeue, now, true).await
    }

    /// Removes every dead-lettered job; returns how many.
    pub async fn purge_dead(&self) -> Result<u64, QueueError> {
        let n = self
            .lock()
            .purge(&[JobStatus::Failed], UnixMillis::new(i64::MAX))?;
        self.commit().await?;
        Ok(n)
    }

    /// Removes succeeded and cancelled jobs last changed before `before`; returns how many.
    /// Their idempotency keys are forgotten with them.
    pub async fn purge_finished(&self, before: UnixMillis) -> Result<u64, QueueError> {
        let n = self
            .lock()
            .purge(&[JobStatus::Succeeded, JobStatus::Cancelled], before)?;
        self.commit().await?;
        Ok(n)
    }

    /// One job.
    pub fn get(&self, id: JobId) -> Result<Option<JobRecord>, QueueError> {
        self.lock().get(id)
    }

    /// Jobs in enqueue order, optionally only those with `status`.
    pub fn list(&self, status: Option<JobStatus>) -> Result<Vec<JobRecord>, QueueError> {
        self.lock().list(status)
    }

    /// When the next job becomes ready, if any waits.
    pub fn next_due(&self) -> Option<UnixMillis> {
        self.lock().next_due()
    }

    /// The earliest due or heal time strictly after `after`, if any.
    pub fn next_due_after(&self, after: UnixMillis) -> Option<UnixMillis> {
        self.lock().next_due_after(after)
    }

    /// Jobs per status.
    pub fn counts(&self) -> QueueCounts {
        self.lock().counts()
    }

    /// Signalled whenever a job may have become ready earlier than [`Queue::next_due`] said.
    pub fn ready_signal(&self) -> &Notify {
        &self.ready
    }

    /// Waits, without polling, until a job is ready by `clock`: sleeps on the clock until
    /// the next due time and wakes early when a job is enqueued or rescheduled.
    pub async fn wait_ready(&self, clock: &dyn Clock) {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.next_due() {
                Some(due) if due <= clock.now() => return,
                Some(due) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = clock.sleep_until(due) => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}
