//! Tenants: one ISP each, the unit of isolation. Only admins create them; other tokens see
//! only their own. A tenant's drift settings (what its agents do about routers that drifted
//! from their desired state, and how often they look) travel in every one of its routers'
//! desired states, so changing them recompiles each router.

use std::collections::BTreeSet;

use tikfleet_shared::domain::{DriftPolicy, DriftSettings};
use tikfleet_shared::record::AuditParams;
use tikfleet_shared::{AgentId, TenantId, UnixMillis};

use super::sql::Sql;
use super::{
    Db, DbError, Page, PageRequest, RowExt as _, Scope, Staff, audit_staff, to_i64, unique_as,
};

/// A tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// Its id.
    pub id: TenantId,
    /// Its name (unique).
    pub name: String,
    /// When it was created.
    pub created_at: UnixMillis,
    /// Its drift settings.
    pub drift: TenantDrift,
}

/// A tenant's drift settings as staff set them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantDrift {
    /// What agents do about managed items that drifted.
    pub policy: DriftPolicy,
    /// Seconds between checks of each router; 0 checks only when staff ask.
    pub interval_secs: u64,
}

impl TenantDrift {
    /// The shortest interval other than 0: a minute.
    pub const MIN_INTERVAL_SECS: u64 = 60;
    /// The longest interval: 30 days.
    pub const MAX_INTERVAL_SECS: u64 = 30 * 86_400;

    /// What the agents are told in the desired state.
    #[must_use]
    pub fn settings(self) -> DriftSettings {
        DriftSettings {
            interval_ms: self.interval_secs.saturating_mul(1000),
            policy: self.policy,
        }
    }
}

impl Default for TenantDrift {
    fn default() -> Self {
        let d = DriftSettings::default();
        Self {
            policy: d.policy,
            interval_secs: d.interval_ms / 1000,
        }
    }
}

pub(crate) const TENANT_COLUMNS: &str = "id, name, created_at, drift_policy, drift_interval_secs";

/// The drift settings of a row with `drift_policy` and `drift_interval_secs`.
pub(crate) fn tenant_drift(row: &sqlx::any::AnyRow) -> Result<TenantDrift, DbError> {
    Ok(TenantDrift {
        policy: row.parse("drift_policy")?,
        interval_secs: row.uint("drift_interval_secs")?,
    })
}

fn tenant(row: &sqlx::any::AnyRow) -> Result<Tenant, DbError> {
    Ok(Tenant {
        id: row.parse("id")?,
        name: row.text("name")?,
        created_at: row.millis("created_at")?,
        drift: tenant_drift(row)?,
    })
}

impl Db {
    /// Creates a tenant (admins only).
    ///
    /// # Errors
    /// Not an admin, the name is taken, or the database failed.
    pub async fn create_tenant(&self, staff: &Staff, name: &str) -> Result<Tenant, DbError> {
        if staff.scope != Scope::Admin {
            return Err(DbError::Forbidden(
                "only an admin token can create tenants".into(),
            ));
        }
        let t = Tenant {
            id: TenantId::new(),
            name: name.to_owned(),
            created_at: self.now(),
            drift: TenantDrift::default(),
        };
        let mut tx = self.begin().await?;
        let mut q = Sql::new("INSERT INTO tenants (");
        q.push(TENANT_COLUMNS)
            .push(") VALUES (")
            .bind(t.id.to_string())
            .push(", ")
            .bind(t.name.clone())
            .push(", ")
            .bind(t.created_at.as_millis())
            .push(", ")
            .bind(t.drift.policy.as_str().to_owned())
            .push(", ")
            .bind(to_i64(t.drift.interval_secs))
            .push(")");
        q.execute(&mut *tx)
            .await
            .map_err(unique_as(format!("a tenant named {name:?} already exists")))?;
        let mut params = AuditParams::new();
        params.insert("name", name);
        audit_staff(
            &mut tx,
            t.created_at,
            Some(t.id),
            None,
            &staff.actor,
            "tenant.create",
            &params,
        )
        .await?;
        tx.commit().await?;
        Ok(t)
    }

    /// Tenants visible in `scope`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn list_tenants(
        &self,
        scope: &Scope,
        page: &PageRequest,
    ) -> Result<Page<Tenant>, DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(TENANT_COLUMNS).push(" FROM tenants WHERE 1 = 1");
        scope.filter(&mut q, "id");
        page.apply(&mut q, "id");
        let rows = q.fetch_all(self.pool()).await?;
        let items = rows.iter().map(tenant).collect::<Result<Vec<_>, _>>()?;
        Ok(page.finish(items, |t| t.id.to_string()))
    }

    /// One tenant, if visible in `scope`.
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn get_tenant(&self, scope: &Scope, id: TenantId) -> Result<Tenant, DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(TENANT_COLUMNS)
            .push(" FROM tenants WHERE id = ")
            .bind(id.to_string());
        scope.filter(&mut q, "id");
        let row = q
            .fetch_optional(self.pool())
            .await?
            .ok_or(DbError::NotFound("tenant"))?;
        tenant(&row)
    }

    /// Changes a tenant's drift settings. Every live router of the tenant gets a new
    /// desired-state generation (the settings travel in it), so each agent receives them;
    /// setting what is already set changes nothing.
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn set_tenant_drift(
        &self,
        staff: &Staff,
        id: TenantId,
        drift: TenantDrift,
    ) -> Result<Tenant, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let mut q = Sql::new("SELECT ");
        q.push(TENANT_COLUMNS)
            .push(" FROM tenants WHERE id = ")
            .bind(id.to_string());
        staff.scope.filter(&mut q, "id");
        let before = tenant(
            &q.fetch_optional(&mut *tx)
                .await?
                .ok_or(DbError::NotFound("tenant"))?,
        )?;
        if before.drift == drift {
            return Ok(before);
        }
        let mut q = Sql::new("UPDATE tenants SET drift_policy = ");
        q.bind(drift.policy.as_str().to_owned())
            .push(", drift_interval_secs = ")
            .bind(to_i64(drift.interval_secs))
            .push(" WHERE id = ")
            .bind(id.to_string());
        q.execute(&mut *tx).await?;
        // Set-based, like a plan change: one statement for every router of the tenant.
        let mut q = Sql::new("UPDATE routers SET generation = generation + 1, updated_at = ");
        q.bind(now.as_millis())
            .push(" WHERE deleted_at IS NULL AND tenant_id = ")
            .bind(id.to_string());
        let routers = q.execute(&mut *tx).await?.rows_affected();
        let mut q = Sql::new(
            "SELECT DISTINCT agent_id FROM routers WHERE deleted_at IS NULL AND tenant_id = ",
        );
        q.bind(id.to_string());
        let agents = q
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.parse("agent_id"))
            .collect::<Result<BTreeSet<AgentId>, _>>()?;
        let mut params = AuditParams::new();
        params
            .insert("policy", drift.policy.as_str())
            .insert("interval_secs", drift.interval_secs.to_string())
            .insert("routers", routers.to_string());
        audit_staff(
            &mut tx,
            now,
            Some(id),
            None,
            &staff.actor,
            "tenant.drift_settings",
            &params,
        )
        .await?;
        tx.commit().await?;
        self.notify(agents);
        Ok(Tenant { drift, ..before })
    }
}
