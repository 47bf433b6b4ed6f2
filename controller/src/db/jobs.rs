//! Jobs: one-off router operations queued for an agent, and what the agent reported about
//! them. The operation is stored encrypted (it can carry a subscriber's password).

use tikfleet_shared::job::{Job, JobOp, JobStatus, Priority, Progress};
use tikfleet_shared::record::AuditParams;
use tikfleet_shared::{ErrorInfo, JobId, RouterId, TenantId, UnixMillis};

use super::sql::Sql;
use super::{Db, DbError, Page, PageRequest, RowExt as _, Scope, Staff, audit_staff, unique_as};
use crate::crypto::AtRestKey;

/// Attempts before the agent dead-letters a job.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// A job as staff see it (without its operation, which may hold a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRecord {
    /// Its id.
    pub id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The router it runs on.
    pub router_id: RouterId,
    /// The operation's name (`upsert_ppp_secret`, ...).
    pub kind: String,
    /// Where it is.
    pub status: JobStatus,
    /// Attempts so far.
    pub attempts: u32,
    /// Progress.
    pub progress: Progress,
    /// The last error.
    pub error: Option<ErrorInfo>,
    /// Short result text from the agent.
    pub detail: Option<String>,
    /// Queue priority.
    pub priority: Priority,
    /// Its idempotency key.
    pub idempotency_key: String,
    /// When the agent acknowledged it, if it did.
    pub delivered_at: Option<UnixMillis>,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it last changed.
    pub updated_at: UnixMillis,
}

/// Filters of the job list.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    /// Only this router's jobs.
    pub router_id: Option<RouterId>,
    /// Only jobs with this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
}

/// A status's stored name.
#[must_use]
pub fn status_name(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Queued => "queued",
        JobStatus::Running => "running",
        JobStatus::Retrying => "retrying",
        JobStatus::Succeeded => "succeeded",
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "cancelled",
    }
}

/// Parses a status name.
#[must_use]
pub fn parse_status(s: &str) -> Option<JobStatus> {
    [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Retrying,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ]
    .into_iter()
    .find(|x| status_name(*x) == s)
}

/// A priority's stored name.
#[must_use]
pub fn priority_name(p: Priority) -> &'static str {
    match p {
        Priority::Critical => "critical",
        Priority::Normal => "normal",
        Priority::Bulk => "bulk",
    }
}

fn parse_priority(s: &str) -> Option<Priority> {
    [Priority::Critical, Priority::Normal, Priority::Bulk]
        .into_iter()
        .find(|x| priority_name(*x) == s)
}

pub(crate) const JOB_COLUMNS: &str = "id, tenant_id, router_id, kind, op, idempotency_key, priority, \
     max_attempts, status, attempts, progress_done, progress_total, error, detail, delivered_at, \
     created_at, updated_at, generation";

pub(crate) fn op_context(id: JobId) -> String {
    format!("job.op:{id}")
}

pub(crate) fn job_record(row: &sqlx::any::AnyRow) -> Result<JobRecord, DbError> {
    let status = row.text("status")?;
    let priority = row.text("priority")?;
    Ok(JobRecord {
        id: row.parse("id")?,
        tenant_id: row.parse("tenant_id")?,
        router_id: row.parse("router_id")?,
        kind: row.text("kind")?,
        status: parse_status(&status)
            .ok_or_else(|| DbError::Corrupt(format!("job status {status:?}")))?,
        attempts: u32::try_from(row.int("attempts")?).unwrap_or(u32::MAX),
        progress: Progress {
            done: row.uint("progress_done")?,
            total: row.uint("progress_total")?,
        },
        error: row
            .opt_text("error")?
            .map(|e| serde_json::from_str(&e).map_err(|_| DbError::Corrupt("job error".into())))
            .transpose()?,
        detail: row.opt_text("detail")?,
        priority: parse_priority(&priority)
            .ok_or_else(|| DbError::Corrupt(format!("job priority {priority:?}")))?,
        idempotency_key: row.text("idempotency_key")?,
        delivered_at: row.opt_millis("delivered_at")?,
        created_at: row.millis("created_at")?,
        updated_at: row.millis("updated_at")?,
    })
}

/// One job by id, inside a transaction (no scope: the caller has checked it).
pub(crate) async fn load_job(
    conn: &mut sqlx::AnyConnection,
    id: JobId,
) -> Result<JobRecord, DbError> {
    let mut q = Sql::new("SELECT ");
    q.push(JOB_COLUMNS)
        .push(" FROM jobs WHERE id = ")
        .bind(id.to_string());
    job_record(&q.fetch_one(conn).await?)
}

/// The wire job of a row, with its operation decrypted.
pub(crate) fn wire_job(key: &AtRestKey, row: &sqlx::any::AnyRow) -> Result<Job, DbError> {
    let r = job_record(row)?;
    let plain = key.decrypt(&op_context(r.id), &row.text("op")?)?;
    let op: JobOp =
        serde_json::from_slice(&plain).map_err(|_| DbError::Corrupt("job op".into()))?;
    Ok(Job {
        id: r.id,
        tenant_id: r.tenant_id,
        router_id: r.router_id,
        idempotency_key: r.idempotency_key,
        priority: r.priority,
        op,
        created_at: r.created_at,
        max_attempts: u32::try_from(row.int("max_attempts")?).unwrap_or(DEFAULT_MAX_ATTEMPTS),
        generation: row
            .opt_int("generation")?
            .and_then(|g| u64::try_from(g).ok()),
    })
}

/// The router item a job changes and the item it needs first, as the hub orders delivery
/// by them (see `undelivered_jobs`): `(order_key, after_key)`. Jobs on one account, one
/// profile or one address-list entry reach the agent one at a time, in the order staff made
/// them; an account's upsert waits for its profile's pending upsert.
#[must_use]
pub fn order_keys(op: &JobOp) -> (Option<String>, Option<String>) {
    use tikfleet_shared::domain::AccountKind;
    let kind = |k: AccountKind| match k {
        AccountKind::Ppp => "ppp",
        AccountKind::Hotspot => "hotspot",
    };
    let account = |k: AccountKind, name: &str| Some(format!("account:{}:{name}", kind(k)));
    let profile = |k: AccountKind, name: &str| Some(format!("profile:{}:{name}", kind(k)));
    match op {
        JobOp::UpsertPppSecret { secret, .. } => (
            account(AccountKind::Ppp, &secret.name),
            profile(AccountKind::Ppp, &secret.profile),
        ),
        JobOp::UpsertHotspotUser { user, .. } => (
            account(AccountKind::Hotspot, &user.name),
            profile(AccountKind::Hotspot, &user.profile),
        ),
        JobOp::DeletePppSecret { name } => (account(AccountKind::Ppp, name), None),
        JobOp::DeleteHotspotUser { name } => (account(AccountKind::Hotspot, name), None),
        JobOp::SetProfile {
            account: a,
            profile: p,
        } => (account(a.kind, &a.name), profile(a.kind, p)),
        JobOp::Enable { account: a }
        | JobOp::Disable { account: a }
        | JobOp::DisconnectSession { account: a } => (account(a.kind, &a.name), None),
        JobOp::UpsertProfile { profile: p } => (profile(p.kind(), p.name()), None),
        JobOp::DeleteProfile { kind: k, name } => (profile(*k, name), None),
        JobOp::AddAddressListEntry { entry } => (
            Some(format!("address-list:{}:{}", entry.list, entry.address)),
            None,
        ),
        JobOp::RemoveAddressListEntry { list, address } => {
            (Some(format!("address-list:{list}:{address}")), None)
        }
        JobOp::Reboot {}
        | JobOp::BackupNow { .. }
        | JobOp::Restore { .. }
        | JobOp::RotateCredentials {}
        | JobOp::Lockdown { .. }
        | JobOp::DriftCheck {}
        | JobOp::Enforce { .. } => (None, None),
    }
}

/// A job to queue.
pub(crate) struct NewJob<'a> {
    pub(crate) tenant: TenantId,
    pub(crate) router: RouterId,
    pub(crate) idempotency_key: String,
    pub(crate) priority: Priority,
    pub(crate) op: &'a JobOp,
    pub(crate) now: UnixMillis,
    /// The router's desired generation the same change made, if any.
    pub(crate) generation: Option<u64>,
}

/// Queues a router job inside a transaction with the audit row that says who asked for it:
/// `action` by `actor`, with `params` and the job's id (`job_id`). Staff requests,
/// schedules and drift enforcement all queue their router jobs this way; the caller commits
/// and wakes the agent.
pub(crate) async fn queue_audited(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    key: &AtRestKey,
    job: NewJob<'_>,
    actor: &str,
    action: &str,
    mut params: AuditParams,
) -> Result<JobId, DbError> {
    let (tenant, router, now) = (job.tenant, job.router, job.now);
    let id = insert_job(tx, key, job).await?;
    params.insert("job_id", id.to_string());
    audit_staff(tx, now, Some(tenant), Some(router), actor, action, &params).await?;
    Ok(id)
}

impl Db {
    /// Commits `tx`, which queued `job` for a router of `agent`, wakes the agent, and returns
    /// the job as it now is.
    ///
    /// # Errors
    /// The database failed (nothing is queued).
    pub(crate) async fn commit_queued(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Any>,
        job: JobId,
        agent: tikfleet_shared::AgentId,
    ) -> Result<JobRecord, DbError> {
        let record = load_job(&mut tx, job).await?;
        tx.commit().await?;
        self.notify([agent]);
        Ok(record)
    }
}

/// The audit actor of jobs a schedule queues (backups, credential rotations).
pub(crate) const SCHEDULER: &str = "scheduler";

/// A router a schedule found due for a job, and when its period began (Unix ms).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Due {
    pub(crate) router: RouterId,
    pub(crate) tenant: TenantId,
    pub(crate) agent: tikfleet_shared::AgentId,
    pub(crate) since: i64,
}

impl Due {
    /// From a row with `id`, `tenant_id` and `agent_id` of the router.
    pub(crate) fn of(row: &sqlx::any::AnyRow, since: i64) -> Result<Self, DbError> {
        Ok(Self {
            router: row.parse("id")?,
            tenant: row.parse("tenant_id")?,
            agent: row.parse("agent_id")?,
            since,
        })
    }
}

impl Db {
    /// Queues a job a schedule found due (bulk priority, audited as the [`SCHEDULER`] with
    /// `reason=schedule`) and wakes its agent — unless a job already holds its key
    /// (`<kind>:schedule:<router>:<since>`, the schedule's period: a restart or a second
    /// controller queues nothing twice)
    /// or, with `one_at_a_time`, a job of the same kind is still queued, running or retrying
    /// for the router. Returns whether it queued one.
    ///
    /// # Errors
    /// The database failed.
    pub(crate) async fn queue_scheduled(
        &self,
        due: &Due,
        op: &JobOp,
        action: &str,
        one_at_a_time: bool,
    ) -> Result<bool, DbError> {
        let Due {
            router,
            tenant,
            agent,
            since,
        } = *due;
        let key = format!("{}:schedule:{router}:{since}", op.name());
        let now = self.now();
        let mut tx = self.begin().await?;
        let mut q = Sql::new("SELECT id FROM jobs WHERE (tenant_id = ");
        q.bind(tenant.to_string())
            .push(" AND idempotency_key = ")
            .bind(key.clone())
            .push(")");
        if one_at_a_time {
            q.push(" OR (router_id = ")
                .bind(router.to_string())
                .push(" AND kind = ")
                .bind(op.name().to_owned())
                .push(" AND status IN ('queued', 'running', 'retrying'))");
        }
        q.push(" LIMIT 1");
        if q.fetch_optional(&mut *tx).await?.is_some() {
            return Ok(false);
        }
        let mut params = AuditParams::new();
        params.insert("reason", "schedule".to_owned());
        let job = NewJob {
            tenant,
            router,
            idempotency_key: key,
            priority: Priority::Bulk,
            op,
            now,
            generation: None,
        };
        match queue_audited(&mut tx, self.key(), job, SCHEDULER, action, params).await {
            Ok(_) => {}
            // Another controller queued it first.
            Err(DbError::Conflict(_)) => return Ok(false),
            Err(e) => return Err(e),
        }
        tx.commit().await?;
        self.notify([agent]);
        Ok(true)
    }
}

/// The job a tenant already queued under idempotency key `key`: `Some` when it is the same
/// request (router and kind), `None` when the key is new.
///
/// # Errors
/// The key belongs to another job (`Conflict`), or the database failed.
pub(crate) async fn job_by_key(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    key: &str,
    router: RouterId,
    kind: &str,
) -> Result<Option<JobRecord>, DbError> {
    let mut q = Sql::new("SELECT id FROM jobs WHERE tenant_id = ");
    q.bind(tenant.to_string())
        .push(" AND idempotency_key = ")
        .bind(key.to_owned());
    let Some(row) = q.fetch_optional(&mut **tx).await? else {
        return Ok(None);
    };
    let job = load_job(tx, row.parse("id")?).await?;
    if job.router_id == router && job.kind == kind {
        return Ok(Some(job));
    }
    Err(DbError::Conflict(format!(
        "the idempotency key {key:?} belongs to another job; use a new key"
    )))
}

/// Queues a job inside a transaction; its operation is encrypted at rest.
pub(crate) async fn insert_job(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    key: &AtRestKey,
    job: NewJob<'_>,
) -> Result<JobId, DbError> {
    let ids = insert_jobs(tx, key, std::iter::once(job)).await?;
    ids.into_iter()
        .next()
        .ok_or_else(|| DbError::Corrupt("no job was inserted".into()))
}

/// Rows per multi-row `INSERT` (14 values each, far below both databases' bind limits).
const INSERT_CHUNK: usize = 200;

/// Queues jobs inside a transaction, many rows per statement (a plan change queues one per
/// router); each operation is encrypted at rest. Returns their ids in order.
pub(crate) async fn insert_jobs<'a>(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    key: &AtRestKey,
    jobs: impl IntoIterator<Item = NewJob<'a>>,
) -> Result<Vec<JobId>, DbError> {
    let mut ids = Vec::new();
    let mut jobs = jobs.into_iter().peekable();
    while jobs.peek().is_some() {
        let mut q = Sql::new(
            "INSERT INTO jobs (id, tenant_id, router_id, kind, op, idempotency_key, priority, max_attempts, \
             order_key, after_key, status, created_at, updated_at, generation) VALUES ",
        );
        let mut keys = Vec::new();
        for job in jobs.by_ref().take(INSERT_CHUNK) {
            let NewJob {
                tenant,
                router,
                idempotency_key,
                priority,
                op,
                now,
                generation,
            } = job;
            let id = JobId::new();
            let json = zeroize::Zeroizing::new(
                serde_json::to_vec(op).map_err(|e| DbError::Corrupt(e.to_string()))?,
            );
            let sealed = key.encrypt(&op_context(id), &json)?;
            let (order_key, after_key) = order_keys(op);
            q.push(if keys.is_empty() { "(" } else { ", (" });
            q.bind(id.to_string())
                .push(", ")
                .bind(tenant.to_string())
                .push(", ")
                .bind(router.to_string())
                .push(", ")
                .bind(op.name().to_owned())
                .push(", ")
                .bind(sealed)
                .push(", ")
                .bind(idempotency_key.clone())
                .push(", ")
                .bind(priority_name(priority).to_owned())
                .push(", ")
                .bind(i64::from(DEFAULT_MAX_ATTEMPTS))
                .push(", ")
                .bind(order_key)
                .push(", ")
                .bind(after_key)
                .push(", 'queued', ")
                .bind(now.as_millis())
                .push(", ")
                .bind(now.as_millis())
                .push(", ")
                .bind(generation.map(super::to_i64))
                .push(")");
            keys.push(idempotency_key);
            ids.push(id);
        }
        let conflict = match keys.as_slice() {
            [one] => format!("a job with idempotency key {one:?} already exists"),
            _ => "a job with one of these idempotency keys already exists".to_owned(),
        };
        q.execute(&mut **tx).await.map_err(unique_as(conflict))?;
    }
    Ok(ids)
}

impl Db {
    /// Jobs visible in `scope`, filtered.
    ///
    /// # Errors
    /// The database failed.
    pub async fn list_jobs(
        &self,
        scope: &Scope,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> Result<Page<JobRecord>, DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(JOB_COLUMNS).push(" FROM jobs WHERE 1 = 1");
        scope.filter(&mut q, "tenant_id");
        if let Some(r) = filter.router_id {
            q.push(" AND router_id = ").bind(r.to_string());
        }
        if let Some(s) = filter.status {
            q.push(" AND status = ").bind(status_name(s).to_owned());
        }
        if let Some(k) = &filter.kind {
            q.push(" AND kind = ").bind(k.clone());
        }
        page.apply(&mut q, "id");
        let rows = q.fetch_all(self.pool()).await?;
        let items = rows.iter().map(job_record).collect::<Result<Vec<_>, _>>()?;
        Ok(page.finish(items, |j| j.id.to_string()))
    }

    /// One job, if visible in `scope`.
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn get_job(&self, scope: &Scope, id: JobId) -> Result<JobRecord, DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(JOB_COLUMNS)
            .push(" FROM jobs WHERE id = ")
            .bind(id.to_string());
        scope.filter(&mut q, "tenant_id");
        let row = q
            .fetch_optional(self.pool())
            .await?
            .ok_or(DbError::NotFound("job"))?;
        job_record(&row)
    }

    /// Puts a failed or cancelled job back in the queue: attempts start again from zero and
    /// it is delivered to the agent again.
    ///
    /// # Errors
    /// Not found (or not visible), not failed or cancelled, or the database failed.
    pub async fn requeue_job(&self, staff: &Staff, id: JobId) -> Result<JobRecord, DbError> {
        self.change_job(staff, id, "job.requeue", |status| {
            if matches!(status, JobStatus::Failed | JobStatus::Cancelled) {
                Ok("UPDATE jobs SET status = 'queued', attempts = 0, progress_done = 0, error = NULL, \
                    detail = NULL, delivered_at = NULL, cancel_delivered_at = NULL, updated_at = ")
            } else {
                Err(DbError::Conflict(format!(
                    "only a failed or cancelled job can be re-queued; this one is {}",
                    status_name(status)
                )))
            }
        })
        .await
    }

    /// Cancels a job that has not finished.
    ///
    /// # Errors
    /// Not found (or not visible), already finished, or the database failed.
    pub async fn cancel_job(&self, staff: &Staff, id: JobId) -> Result<JobRecord, DbError> {
        self.change_job(staff, id, "job.cancel", |status| {
            if status.is_terminal() {
                Err(DbError::Conflict(format!(
                    "the job already finished ({}); nothing to cancel",
                    status_name(status)
                )))
            } else {
                Ok("UPDATE jobs SET status = 'cancelled', updated_at = ")
            }
        })
        .await
    }

    async fn change_job(
        &self,
        staff: &Staff,
        id: JobId,
        action: &str,
        update: impl FnOnce(JobStatus) -> Result<&'static str, DbError>,
    ) -> Result<JobRecord, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let mut q = Sql::new("SELECT ");
        q.push(JOB_COLUMNS)
            .push(" FROM jobs WHERE id = ")
            .bind(id.to_string());
        staff.scope.filter(&mut q, "tenant_id");
        let row = q
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(DbError::NotFound("job"))?;
        let job = job_record(&row)?;
        let mut q = Sql::new(update(job.status)?);
        q.bind(now.as_millis())
            .push(" WHERE id = ")
            .bind(id.to_string());
        q.execute(&mut *tx).await?;
        let mut params = AuditParams::new();
        params
            .insert("job_id", id.to_string())
            .insert("kind", job.kind.clone());
        audit_staff(
            &mut tx,
            now,
            Some(job.tenant_id),
            Some(job.router_id),
            &staff.actor,
            action,
            &params,
        )
        .await?;
        let mut q = Sql::new("SELECT ");
        q.push(JOB_COLUMNS)
            .push(" FROM jobs WHERE id = ")
            .bind(id.to_string());
        let after = job_record(&q.fetch_one(&mut *tx).await?)?;
        let mut q = Sql::new("SELECT agent_id FROM routers WHERE id = ");
        q.bind(job.router_id.to_string());
        let agent = q.fetch_one(&mut *tx).await?.parse("agent_id")?;
        tx.commit().await?;
        self.notify([agent]);
        Ok(after)
    }
}
