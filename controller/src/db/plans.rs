//! Plans: a router profile and its rate limit. Changing a plan's rate limit changes the
//! desired state of every router where subscribers use it.

use std::collections::BTreeSet;

use tikfleet_shared::job::{JobOp, Priority};
use tikfleet_shared::record::AuditParams;
use tikfleet_shared::{AgentId, RouterId, TenantId, UnixMillis};
use uuid::Uuid;

use super::sql::Sql;
use super::subscribers::Service;
use super::{Db, DbError, Page, PageRequest, RowExt as _, Scope, Staff, audit_staff, unique_as};
use crate::compile;
use crate::lifecycle::LifecycleOverride;

/// A plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Its id.
    pub id: Uuid,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Its name, unique in the tenant.
    pub name: String,
    /// The router profile's name, unique in the tenant.
    pub profile: String,
    /// RouterOS rate limit, e.g. `10M/10M`.
    pub rate_limit: String,
    /// Its overrides of the tenant's lifecycle settings (empty: the tenant's hold).
    pub lifecycle: LifecycleOverride,
    /// When it was created.
    pub created_at: UnixMillis,
}

/// A plan to add.
#[derive(Clone, Debug)]
pub struct NewPlan {
    /// For admins: the tenant; others leave it `None`.
    pub tenant_id: Option<TenantId>,
    /// Its name.
    pub name: String,
    /// The router profile's name.
    pub profile: String,
    /// RouterOS rate limit.
    pub rate_limit: String,
}

/// Changes to a plan.
#[derive(Clone, Debug, Default)]
pub struct PlanPatch {
    /// New name.
    pub name: Option<String>,
    /// New rate limit.
    pub rate_limit: Option<String>,
}

pub(crate) const PLAN_COLUMNS: &str =
    "id, tenant_id, name, profile, rate_limit, created_at, lifecycle";

pub(crate) fn plan(row: &sqlx::any::AnyRow) -> Result<Plan, DbError> {
    Ok(Plan {
        id: row.parse("id")?,
        tenant_id: row.parse("tenant_id")?,
        name: row.text("name")?,
        profile: row.text("profile")?,
        rate_limit: row.text("rate_limit")?,
        lifecycle: match row.opt_text("lifecycle")? {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| DbError::Corrupt(format!("plan lifecycle settings: {e}")))?,
            None => LifecycleOverride::default(),
        },
        created_at: row.millis("created_at")?,
    })
}

/// Loads a plan in `scope` inside a transaction.
pub(crate) async fn load(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    scope: &Scope,
    id: Uuid,
) -> Result<Plan, DbError> {
    let mut q = Sql::new("SELECT ");
    q.push(PLAN_COLUMNS)
        .push(" FROM plans WHERE id = ")
        .bind(id.to_string());
    scope.filter(&mut q, "tenant_id");
    let row = q
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(DbError::NotFound("plan"))?;
    plan(&row)
}

impl Db {
    /// Adds a plan.
    ///
    /// # Errors
    /// The tenant is not visible, the name or profile is taken, or the database failed.
    pub async fn create_plan(&self, staff: &Staff, new: NewPlan) -> Result<Plan, DbError> {
        let tenant = staff.scope.tenant_for_create(new.tenant_id)?;
        let now = self.now();
        let p = Plan {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            name: new.name,
            profile: new.profile,
            rate_limit: new.rate_limit,
            lifecycle: LifecycleOverride::default(),
            created_at: now,
        };
        let mut tx = self.begin().await?;
        self.tenant_visible(&mut tx, &staff.scope, tenant).await?;
        // The lifecycle's own profiles are tikfleet's: a plan may not take their names.
        let lifecycle = super::lifecycle::tenant_settings(&mut tx, tenant).await?;
        let reserved = [
            lifecycle.grace_profile.as_deref(),
            Some(lifecycle.suspended_profile.as_str()),
        ];
        if reserved.contains(&Some(p.profile.as_str())) {
            return Err(DbError::Invalid(format!(
                "profile {:?} is the tenant's grace or suspended profile: choose another name",
                p.profile
            )));
        }
        let mut q = Sql::new(
            "INSERT INTO plans (id, tenant_id, name, profile, rate_limit, created_at, updated_at) VALUES (",
        );
        q.bind(p.id.to_string())
            .push(", ")
            .bind(tenant.to_string())
            .push(", ")
            .bind(p.name.clone())
            .push(", ")
            .bind(p.profile.clone())
            .push(", ")
            .bind(p.rate_limit.clone())
            .push(", ")
            .bind(now.as_millis())
            .push(", ")
            .bind(now.as_millis())
            .push(")");
        q.execute(&mut *tx).await.map_err(unique_as(format!(
            "a plan named {:?} or with profile {:?} already exists",
            p.name, p.profile
        )))?;
        let mut params = AuditParams::new();
        params
            .insert("plan_id", p.id.to_string())
            .insert("name", p.name.clone())
            .insert("profile", p.profile.clone())
            .insert("rate_limit", p.rate_limit.clone());
        audit_staff(
            &mut tx,
            now,
            Some(tenant),
            None,
            &staff.actor,
            "plan.create",
            &params,
        )
        .await?;
        tx.commit().await?;
        Ok(p)
    }

    /// Plans visible in `scope`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn list_plans(
        &self,
        scope: &Scope,
        page: &PageRequest,
    ) -> Result<Page<Plan>, DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(PLAN_COLUMNS).push(" FROM plans WHERE 1 = 1");
        scope.filter(&mut q, "tenant_id");
        page.apply(&mut q, "id");
        let rows = q.fetch_all(self.pool()).await?;
        let items = rows.iter().map(plan).collect::<Result<Vec<_>, _>>()?;
        Ok(page.finish(items, |p| p.id.to_string()))
    }

    /// One plan, if visible in `scope`.
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn get_plan(&self, scope: &Scope, id: Uuid) -> Result<Plan, DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(PLAN_COLUMNS)
            .push(" FROM plans WHERE id = ")
            .bind(id.to_string());
        scope.filter(&mut q, "tenant_id");
        let row = q
            .fetch_optional(self.pool())
            .await?
            .ok_or(DbError::NotFound("plan"))?;
        plan(&row)
    }

    /// Renames a plan or changes its rate limit; a new rate limit reaches every router where
    /// the plan is used (a new generation and a profile job each).
    ///
    /// # Errors
    /// Not found (or not visible), the name is taken, or the database failed.
    pub async fn update_plan(
        &self,
        staff: &Staff,
        id: Uuid,
        patch: PlanPatch,
    ) -> Result<Plan, DbError> {
        let mut tx = self.begin().await?;
        let (after, agents) = self.update_plan_in(&mut tx, staff, id, patch).await?;
        tx.commit().await?;
        self.notify(agents);
        Ok(after)
    }

    /// [`update_plan`](Self::update_plan) inside `tx`; returns the agents to wake once it
    /// commits.
    pub(crate) async fn update_plan_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        staff: &Staff,
        id: Uuid,
        patch: PlanPatch,
    ) -> Result<(Plan, BTreeSet<AgentId>), DbError> {
        let now = self.now();
        let before = load(tx, &staff.scope, id).await?;
        let mut q = Sql::new("UPDATE plans SET updated_at = ");
        q.bind(now.as_millis());
        let mut params = AuditParams::new();
        params.insert("plan_id", id.to_string());
        if let Some(name) = &patch.name {
            q.push(", name = ").bind(name.clone());
            params.insert("name", name.clone());
        }
        if let Some(rate) = &patch.rate_limit {
            q.push(", rate_limit = ").bind(rate.clone());
            params.insert("rate_limit", rate.clone());
        }
        q.push(" WHERE id = ").bind(id.to_string());
        q.execute(&mut **tx)
            .await
            .map_err(unique_as("a plan with this name already exists"))?;
        let after = load(tx, &staff.scope, id).await?;
        let mut agents = BTreeSet::<AgentId>::new();
        if after.rate_limit != before.rate_limit {
            // Set-based, so a plan used on 10,000 routers is a few statements, not 30,000:
            // one generation bump per router, then a profile job per router and service.
            let mut q = Sql::new("UPDATE routers SET generation = generation + 1, updated_at = ");
            q.bind(now.as_millis())
                .push(
                    " WHERE deleted_at IS NULL AND id IN \
                     (SELECT router_id FROM subscribers WHERE plan_id = ",
                )
                .bind(id.to_string())
                .push(")");
            q.execute(&mut **tx).await?;
            let mut q = Sql::new(
                "SELECT DISTINCT s.router_id, s.service, r.agent_id, r.generation FROM subscribers s \
                 JOIN routers r ON r.id = s.router_id WHERE r.deleted_at IS NULL AND s.plan_id = ",
            );
            q.bind(id.to_string());
            let rows = q.fetch_all(&mut **tx).await?;
            let mut targets = Vec::with_capacity(rows.len());
            for row in rows {
                let router: RouterId = row.parse("router_id")?;
                let service: Service = row.parse("service")?;
                let generation = row.uint("generation")?;
                agents.insert(row.parse("agent_id")?);
                targets.push((router, service, generation));
            }
            let ops: Vec<JobOp> = targets
                .iter()
                .map(|(_, service, _)| JobOp::UpsertProfile {
                    profile: compile::profile(&after, service.account_kind()),
                })
                .collect();
            let mut jobs = Vec::with_capacity(targets.len());
            for ((router, service, generation), op) in targets.iter().zip(&ops) {
                jobs.push(super::jobs::NewJob {
                    tenant: after.tenant_id,
                    router: *router,
                    idempotency_key: format!(
                        "plan:{id}:{}:{router}:{generation}",
                        service.as_str()
                    ),
                    priority: Priority::Normal,
                    op,
                    now,
                    generation: Some(*generation),
                });
            }
            super::jobs::insert_jobs(tx, self.key(), jobs).await?;
        }
        audit_staff(
            tx,
            now,
            Some(after.tenant_id),
            None,
            &staff.actor,
            "plan.update",
            &params,
        )
        .await?;
        Ok((after, agents))
    }

    /// Deletes a plan no subscriber uses.
    ///
    /// # Errors
    /// Not found (or not visible), in use, or the database failed.
    pub async fn delete_plan(&self, staff: &Staff, id: Uuid) -> Result<(), DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let p = load(&mut tx, &staff.scope, id).await?;
        let mut q = Sql::new("SELECT COUNT(*) AS n FROM subscribers WHERE plan_id = ");
        q.bind(id.to_string());
        let n = q.fetch_one(&mut *tx).await?.int("n")?;
        if n > 0 {
            return Err(DbError::Conflict(format!(
                "{n} subscriber(s) use this plan; move them to another plan first"
            )));
        }
        let mut q = Sql::new("DELETE FROM plans WHERE id = ");
        q.bind(id.to_string());
        q.execute(&mut *tx).await?;
        let mut params = AuditParams::new();
        params
            .insert("plan_id", id.to_string())
            .insert("name", p.name.clone());
        audit_staff(
            &mut tx,
            now,
            Some(p.tenant_id),
            None,
            &staff.actor,
            "plan.delete",
            &params,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
