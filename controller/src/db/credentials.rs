//! Credential rotation and API lockdown at the controller: the per-tenant settings
//! (`security_settings`), the jobs staff queue (`rotate_credentials`, `lockdown`), the
//! rotation schedule ([`RotationTask`], on the controller's clock) and the alert raised when
//! such a job fails (called from the hub's job-update ingest).
//!
//! The agent does the work (`agent/src/credentials.rs`); the controller never sees a router
//! password, old or new.

use serde::{Deserialize, Serialize};
use tikfleet_shared::job::{JobOp, JobStatus, JobUpdate, Priority};
use tikfleet_shared::record::AuditParams;
use tikfleet_shared::{RouterId, TenantId, UnixMillis};
use uuid::Uuid;

use super::jobs::{Due, JobRecord, NewJob, job_by_key, queue_audited};
use super::sql::Sql;
use super::{Db, DbError, RowExt as _, Scope, Staff, audit_staff};
use crate::clock::SharedClock;

/// Days between scheduled rotations when a tenant has not said.
pub const DEFAULT_ROTATION_DAYS: u32 = 90;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// A tenant's rotation and lockdown settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    /// Days between scheduled credential rotations of each router (0: no schedule).
    pub rotation_days: u32,
    /// Networks a lockdown allows besides the agent (`10.0.0.0/24`, `192.0.2.7`).
    pub admin_networks: Vec<String>,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self {
            rotation_days: DEFAULT_ROTATION_DAYS,
            admin_networks: Vec::new(),
        }
    }
}

/// Checks an admin network: an IPv4 or IPv6 address, optionally with a prefix length.
///
/// # Errors
/// `Invalid` naming the bad value.
pub fn validate_network(text: &str) -> Result<(), DbError> {
    let bad = || {
        DbError::Invalid(format!(
            "admin network {text:?} is not an address or address/prefix (10.0.0.0/24)"
        ))
    };
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
        None => (text, None),
    };
    let ip: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len.is_some_and(|l| l > max) {
        return Err(bad());
    }
    Ok(())
}

async fn load_settings(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
) -> Result<SecuritySettings, DbError> {
    let mut q =
        Sql::new("SELECT rotation_days, admin_networks FROM security_settings WHERE tenant_id = ");
    q.bind(tenant.to_string());
    let Some(row) = q.fetch_optional(&mut **tx).await? else {
        return Ok(SecuritySettings::default());
    };
    let admin_networks = serde_json::from_str(&row.text("admin_networks")?)
        .map_err(|e| DbError::Corrupt(format!("admin_networks: {e}")))?;
    Ok(SecuritySettings {
        rotation_days: u32::try_from(row.int("rotation_days")?).unwrap_or(DEFAULT_ROTATION_DAYS),
        admin_networks,
    })
}

async fn check_tenant(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    scope: &Scope,
    tenant: TenantId,
) -> Result<(), DbError> {
    if !scope.allows(tenant) {
        return Err(DbError::NotFound("tenant"));
    }
    let mut q = Sql::new("SELECT id FROM tenants WHERE id = ");
    q.bind(tenant.to_string());
    q.fetch_optional(&mut **tx)
        .await?
        .map(drop)
        .ok_or(DbError::NotFound("tenant"))
}

impl Db {
    /// A tenant's security settings (defaults when never set).
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn security_settings(
        &self,
        scope: &Scope,
        tenant: TenantId,
    ) -> Result<SecuritySettings, DbError> {
        let mut tx = self.begin().await?;
        check_tenant(&mut tx, scope, tenant).await?;
        let s = load_settings(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(s)
    }

    /// Replaces a tenant's security settings (audited).
    ///
    /// # Errors
    /// Not found (or not visible), an invalid network, or the database failed.
    pub async fn set_security_settings(
        &self,
        staff: &Staff,
        tenant: TenantId,
        settings: &SecuritySettings,
    ) -> Result<SecuritySettings, DbError> {
        for n in &settings.admin_networks {
            validate_network(n)?;
        }
        if settings.admin_networks.len() > 64 {
            return Err(DbError::Invalid("at most 64 admin networks".into()));
        }
        if settings.rotation_days > 3650 {
            return Err(DbError::Invalid(
                "rotation_days must be 0 (off) to 3650".into(),
            ));
        }
        let now = self.now();
        let mut tx = self.begin().await?;
        check_tenant(&mut tx, &staff.scope, tenant).await?;
        let networks = serde_json::to_string(&settings.admin_networks)
            .map_err(|e| DbError::Corrupt(e.to_string()))?;
        let mut q = Sql::new("DELETE FROM security_settings WHERE tenant_id = ");
        q.bind(tenant.to_string());
        q.execute(&mut *tx).await?;
        let mut q = Sql::new(
            "INSERT INTO security_settings (tenant_id, rotation_days, admin_networks, updated_at) VALUES (",
        );
        q.bind(tenant.to_string())
            .push(", ")
            .bind(i64::from(settings.rotation_days))
            .push(", ")
            .bind(networks.clone())
            .push(", ")
            .bind(now.as_millis())
            .push(")");
        q.execute(&mut *tx).await?;
        let mut params = AuditParams::new();
        params.insert("rotation_days", settings.rotation_days.to_string());
        params.insert("admin_networks", networks);
        audit_staff(
            &mut tx,
            now,
            Some(tenant),
            None,
            &staff.actor,
            "tenant.security_settings",
            &params,
        )
        .await?;
        tx.commit().await?;
        Ok(settings.clone())
    }

    /// Queues a credential rotation of a router.
    ///
    /// # Errors
    /// Not found (or not visible), an idempotency key of another job, or the database failed.
    pub async fn request_rotation(
        &self,
        staff: &Staff,
        router_id: RouterId,
        idempotency_key: Option<String>,
    ) -> Result<JobRecord, DbError> {
        self.request_security_job(staff, router_id, None, idempotency_key)
            .await
    }

    /// Queues a lockdown of a router, with `admin_networks` or else the tenant's.
    ///
    /// # Errors
    /// Not found (or not visible), an invalid network, an idempotency key of another job, or
    /// the database failed.
    pub async fn request_lockdown(
        &self,
        staff: &Staff,
        router_id: RouterId,
        admin_networks: Option<Vec<String>>,
        idempotency_key: Option<String>,
    ) -> Result<JobRecord, DbError> {
        if let Some(nets) = &admin_networks {
            for n in nets {
                validate_network(n)?;
            }
        }
        self.request_security_job(staff, router_id, Some(admin_networks), idempotency_key)
            .await
    }

    /// `lockdown`: `Some(networks given or None for the tenant's)`; rotation: `None`.
    async fn request_security_job(
        &self,
        staff: &Staff,
        router_id: RouterId,
        lockdown: Option<Option<Vec<String>>>,
        idempotency_key: Option<String>,
    ) -> Result<JobRecord, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let router = super::routers::load(&mut tx, &staff.scope, router_id).await?;
        let op = match lockdown {
            None => JobOp::RotateCredentials {},
            Some(Some(admin_networks)) => JobOp::Lockdown { admin_networks },
            Some(None) => JobOp::Lockdown {
                admin_networks: load_settings(&mut tx, router.tenant_id)
                    .await?
                    .admin_networks,
            },
        };
        if let Some(key) = &idempotency_key
            && let Some(job) =
                job_by_key(&mut tx, router.tenant_id, key, router_id, op.name()).await?
        {
            return Ok(job);
        }
        let key = idempotency_key
            .unwrap_or_else(|| format!("{}:{router_id}:{}", op.name(), Uuid::now_v7()));
        let mut params = AuditParams::new();
        if let JobOp::Lockdown { admin_networks } = &op {
            params.insert("admin_networks", admin_networks.join(","));
        }
        let job = queue_audited(
            &mut tx,
            self.key(),
            NewJob {
                tenant: router.tenant_id,
                router: router_id,
                idempotency_key: key,
                priority: Priority::Normal,
                op: &op,
                now,
                generation: None,
            },
            &staff.actor,
            &format!("router.{}", op.name()),
            params,
        )
        .await?;
        self.commit_queued(tx, job, router.agent_id).await
    }

    /// Queues a `rotate_credentials` job for every router whose last rotation (or, never
    /// rotated, its creation) is its tenant's `rotation_days` ago or more. The idempotency
    /// key names the router and the moment the period started, so a repeat (or a second
    /// controller replica) queues nothing twice. Returns how many were queued.
    ///
    /// # Errors
    /// The database failed.
    pub async fn queue_due_rotations(&self) -> Result<usize, DbError> {
        let now = self.now();
        let q = Sql::new(
            "SELECT r.id, r.tenant_id, r.agent_id, r.created_at, s.rotation_days, \
             (SELECT MAX(j.created_at) FROM jobs j WHERE j.router_id = r.id \
              AND j.kind = 'rotate_credentials') AS last_rotation \
             FROM routers r LEFT JOIN security_settings s ON s.tenant_id = r.tenant_id \
             WHERE r.deleted_at IS NULL",
        );
        let rows = q.fetch_all(self.pool()).await?;
        let mut due = Vec::new();
        for row in rows {
            let days = row
                .opt_int("rotation_days")?
                .unwrap_or(i64::from(DEFAULT_ROTATION_DAYS));
            if days <= 0 {
                continue;
            }
            let since = match row.opt_int("last_rotation")? {
                Some(t) => t,
                None => row.int("created_at")?,
            };
            if now.as_millis() >= since.saturating_add(days.saturating_mul(DAY_MS)) {
                due.push(Due::of(&row, since)?);
            }
        }
        let mut queued = 0;
        let op = JobOp::RotateCredentials {};
        for due in &due {
            if self
                .queue_scheduled(due, &op, "router.rotate_credentials", false)
                .await?
            {
                queued += 1;
            }
        }
        Ok(queued)
    }
}

/// Called by the hub for each job update it stores: a failed `rotate_credentials` or
/// `lockdown` job raises one admin alert (keyed by the job, so a redelivered update does not
/// send it twice).
pub(crate) async fn on_job_update(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    db: &Db,
    tenant: TenantId,
    update: &JobUpdate,
    now: UnixMillis,
) -> Result<(), DbError> {
    if update.status != JobStatus::Failed {
        return Ok(());
    }
    let mut q = Sql::new("SELECT kind FROM jobs WHERE id = ");
    q.bind(update.job_id.to_string())
        .push(" AND tenant_id = ")
        .bind(tenant.to_string());
    let Some(row) = q.fetch_optional(&mut **tx).await? else {
        return Ok(());
    };
    let kind = row.text("kind")?;
    let what = match kind.as_str() {
        "rotate_credentials" => "Credential rotation",
        "lockdown" => "API lockdown",
        _ => return Ok(()),
    };
    let error = update.error.as_ref().map_or_else(
        || "unknown error".to_owned(),
        |e| format!("{} [{}]", e.message, e.code),
    );
    let subject = format!("{what} failed on router {}", update.router_id);
    let body = format!(
        "{what} job {} failed after {} attempt(s): {error}. The agent still uses a working \
         credential; the next run cleans up. Re-queue the job once the cause is fixed.",
        update.job_id, update.attempts
    );
    super::notify::queue_alert(
        tx,
        db,
        tenant,
        Some(update.router_id),
        &format!("{kind}:failed:{}", update.job_id),
        &subject,
        &body,
        now,
    )
    .await?;
    Ok(())
}

/// The rotation schedule: [`Db::queue_due_rotations`] at once and then every `interval` on
/// the controller's clock, until shut down.
#[derive(Debug)]
pub struct RotationTask(crate::periodic::Periodic);

impl RotationTask {
    /// Starts the task.
    #[must_use]
    pub fn start(db: Db, clock: SharedClock, interval: std::time::Duration) -> Self {
        Self(crate::periodic::Periodic::start(
            clock,
            interval,
            move || {
                let db = db.clone();
                async move {
                    match db.queue_due_rotations().await {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(queued = n, "scheduled credential rotations queued")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "scheduling credential rotations failed; retrying at the next interval")
                        }
                    }
                }
            },
        ))
    }

    /// Stops the task and waits for it.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
    }
}
