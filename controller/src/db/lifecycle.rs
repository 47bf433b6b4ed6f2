//! The subscriber lifecycle in storage: settings per tenant and plan, renewals, the
//! transitions agents report, and each subscriber's history of them.
//!
//! Expiry transitions happen on the router, by the agent, on time, whether or not the
//! controller is reachable (the desired state carries the times). The agent reports each one
//! it applied ([`LifecycleReport`]); [`ingest_report`] records it exactly once per
//! (subscriber, phase, expiry), moves the subscriber's status when the report is about its
//! current expiry, writes the audit row (`subscriber.grace`, `subscriber.suspend`, reason
//! `expiry`, at the moment the router changed), and queues the subscriber's notice. A failed
//! transition raises an admin alert. Staff transitions (manual suspend, resume, renewal)
//! are recorded where they are made.

use std::collections::BTreeSet;

use tikfleet_shared::domain::LifecyclePhase;
use tikfleet_shared::record::{AuditParams, LifecycleReport};
use tikfleet_shared::{AgentId, SubscriberId, TenantId, UnixMillis};
use uuid::Uuid;

use super::plans::Plan;
use super::sql::Sql;
use super::subscribers::{Change, Subscriber, SubscriberStatus};
use super::{Db, DbError, RowExt as _, Scope, Staff, audit_staff};
use crate::compile;
use crate::lifecycle::{LifecycleOverride, LifecycleSettings};

/// The lifecycle settings of `tenant` (the defaults until staff set them).
pub(crate) async fn tenant_settings(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
) -> Result<LifecycleSettings, DbError> {
    let mut q = Sql::new("SELECT lifecycle FROM tenants WHERE id = ");
    q.bind(tenant.to_string());
    let row = q
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(DbError::NotFound("tenant"))?;
    parse_settings(row.opt_text("lifecycle")?.as_deref())
}

/// Settings stored as JSON (`None`: the defaults).
pub(crate) fn parse_settings(json: Option<&str>) -> Result<LifecycleSettings, DbError> {
    json.map_or_else(
        || Ok(LifecycleSettings::default()),
        |j| {
            serde_json::from_str(j)
                .map_err(|e| DbError::Corrupt(format!("tenant lifecycle settings: {e}")))
        },
    )
}

/// The status `sub` has at `now` by its expiry alone (a hold aside).
#[must_use]
pub(crate) fn status_now(
    sub: &Subscriber,
    plan: &Plan,
    tenant: &LifecycleSettings,
    now: UnixMillis,
) -> SubscriberStatus {
    match sub.expires_at {
        None => SubscriberStatus::Active,
        Some(expires) => SubscriberStatus::of_phase(
            compile::lifecycle(sub, &tenant.with(&plan.lifecycle), expires).phase_at(now),
        ),
    }
}

/// A row of `lifecycle_events`.
struct Event<'a> {
    tenant: TenantId,
    subscriber: SubscriberId,
    router: Option<tikfleet_shared::RouterId>,
    phase: &'a str,
    reason: &'a str,
    expires_at: Option<UnixMillis>,
    due_at: Option<UnixMillis>,
    at: UnixMillis,
    actor: &'a str,
    current: bool,
}

async fn insert_event(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    e: &Event<'_>,
) -> Result<(), DbError> {
    let mut q = Sql::new(
        "INSERT INTO lifecycle_events (id, tenant_id, subscriber_id, router_id, phase, reason, \
         expires_at, due_at, at, actor, current) VALUES (",
    );
    q.bind(Uuid::now_v7().to_string())
        .push(", ")
        .bind(e.tenant.to_string())
        .push(", ")
        .bind(e.subscriber.to_string())
        .push(", ")
        .bind(e.router.map(|r| r.to_string()))
        .push(", ")
        .bind(e.phase.to_owned())
        .push(", ")
        .bind(e.reason.to_owned())
        .push(", ")
        .bind(e.expires_at.map(UnixMillis::as_millis))
        .push(", ")
        .bind(e.due_at.map(UnixMillis::as_millis))
        .push(", ")
        .bind(e.at.as_millis())
        .push(", ")
        .bind(e.actor.to_owned())
        .push(", ")
        .bind(i64::from(e.current))
        .push(")");
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Records a transition staff made (`manual`, `resume`, `renewal`) in the subscriber's
/// history.
pub(crate) async fn record_staff_transition(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    sub: &Subscriber,
    reason: &str,
    actor: &str,
    now: UnixMillis,
) -> Result<(), DbError> {
    insert_event(
        tx,
        &Event {
            tenant: sub.tenant_id,
            subscriber: sub.id,
            router: Some(sub.router_id),
            phase: sub.status.as_str(),
            reason,
            expires_at: sub.expires_at,
            due_at: None,
            at: now,
            actor,
            current: true,
        },
    )
    .await
}

/// Takes in an agent's lifecycle report inside the hub's transaction (see the module
/// documentation). Reports for subscribers of another tenant or router are ignored.
pub(crate) async fn ingest_report(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    db: &Db,
    tenant: TenantId,
    agent_name: &str,
    report: &LifecycleReport,
) -> Result<(), DbError> {
    let actor = format!("agent:{agent_name}");
    if let Some(error) = &report.error {
        return failed_transitions(tx, db, tenant, &actor, report, error).await;
    }
    let now = db.now();
    let mut tenant_settings_cache: Option<LifecycleSettings> = None;
    let mut plans: std::collections::HashMap<Uuid, (Plan, LifecycleSettings)> =
        std::collections::HashMap::new();
    for chunk in report.transitions.chunks(200) {
        let mut q = Sql::new("SELECT ");
        q.push(super::subscribers::SUBSCRIBER_COLUMNS)
            .push(" FROM subscribers WHERE tenant_id = ")
            .bind(tenant.to_string())
            .push(" AND router_id = ")
            .bind(report.router_id.to_string())
            .push(" AND id IN ");
        super::sql::push_in(&mut q, chunk.iter().map(|t| t.subscriber_id.to_string()));
        let mut subs = std::collections::HashMap::new();
        for row in q.fetch_all(&mut **tx).await? {
            let s = super::subscribers::subscriber(&row)?;
            subs.insert(s.id, s);
        }
        let mut q = Sql::new(
            "SELECT subscriber_id, phase, expires_at FROM lifecycle_events WHERE reason = 'expiry' \
             AND subscriber_id IN ",
        );
        super::sql::push_in(&mut q, chunk.iter().map(|t| t.subscriber_id.to_string()));
        let mut seen = BTreeSet::new();
        for row in q.fetch_all(&mut **tx).await? {
            seen.insert((
                row.parse::<SubscriberId>("subscriber_id")?,
                row.text("phase")?,
                row.opt_int("expires_at")?,
            ));
        }
        for t in chunk {
            let Some(sub) = subs.get(&t.subscriber_id) else {
                continue;
            };
            if t.phase == LifecyclePhase::Active
                || !seen.insert((
                    t.subscriber_id,
                    t.phase.as_str().to_owned(),
                    Some(t.expires_at.as_millis()),
                ))
            {
                continue;
            }
            // About the subscriber's current expiry, and not overtaken by staff: the
            // subscriber is in that phase now. Otherwise (renewed or put on hold since) it
            // is history only.
            let current = sub.expires_at == Some(t.expires_at) && !sub.hold;
            insert_event(
                tx,
                &Event {
                    tenant,
                    subscriber: sub.id,
                    router: Some(report.router_id),
                    phase: t.phase.as_str(),
                    reason: "expiry",
                    expires_at: Some(t.expires_at),
                    due_at: Some(t.due_at),
                    at: report.at,
                    actor: &actor,
                    current,
                },
            )
            .await?;
            let status = SubscriberStatus::of_phase(t.phase);
            if current && sub.status != status {
                let mut q = Sql::new("UPDATE subscribers SET status = ");
                q.bind(status.as_str().to_owned())
                    .push(", status_reason = 'expiry', status_at = ")
                    .bind(report.at.as_millis())
                    .push(" WHERE id = ")
                    .bind(sub.id.to_string())
                    .push(" AND hold = 0");
                q.execute(&mut **tx).await?;
            }
            let action = match t.phase {
                LifecyclePhase::Grace => "subscriber.grace",
                _ => "subscriber.suspend",
            };
            let mut params = AuditParams::new();
            params
                .insert("subscriber_id", sub.id.to_string())
                .insert("username", sub.username.clone())
                .insert("service", sub.service.as_str())
                .insert("reason", "expiry")
                .insert("phase", t.phase.as_str())
                .insert("expires_at", t.expires_at.as_millis().to_string())
                .insert("due_at", t.due_at.as_millis().to_string())
                .insert("current", current.to_string());
            audit_staff(
                tx,
                report.at,
                Some(tenant),
                Some(report.router_id),
                &actor,
                action,
                &params,
            )
            .await?;
            if current {
                // Plans and settings once per report, not once per transition.
                let tenant_settings = match &tenant_settings_cache {
                    Some(s) => s,
                    None => tenant_settings_cache.insert(tenant_settings(tx, tenant).await?),
                };
                let (plan, settings) = match plans.get(&sub.plan_id) {
                    Some(p) => p,
                    None => {
                        let plan =
                            super::plans::load(tx, &Scope::Tenant(tenant), sub.plan_id).await?;
                        let settings = tenant_settings.with(&plan.lifecycle);
                        plans.entry(sub.plan_id).or_insert((plan, settings))
                    }
                };
                let kind = match t.phase {
                    LifecyclePhase::Grace => super::notify::NoticeKind::Grace,
                    _ => super::notify::NoticeKind::Suspended,
                };
                let sub = Subscriber {
                    status,
                    ..sub.clone()
                };
                super::notify::queue_notice(
                    tx,
                    db,
                    &sub,
                    &plan.name,
                    kind,
                    settings.grace_until(t.expires_at),
                    now,
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// A pass could not make due transitions: an audit row and one admin alert per incident
/// (the agent reports an incident once; the alert's key makes a repeat a no-op).
async fn failed_transitions(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    db: &Db,
    tenant: TenantId,
    actor: &str,
    report: &LifecycleReport,
    error: &tikfleet_shared::ErrorInfo,
) -> Result<(), DbError> {
    let Some(first) = report.transitions.iter().map(|t| t.due_at).min() else {
        return Ok(());
    };
    let mut q = Sql::new("SELECT name FROM routers WHERE id = ");
    q.bind(report.router_id.to_string());
    let router_name = q
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| r.text("name"))
        .transpose()?
        .unwrap_or_else(|| report.router_id.to_string());
    let names: Vec<&str> = report
        .transitions
        .iter()
        .take(20)
        .map(|t| t.account.name.as_str())
        .collect();
    let more = report.transitions.len().saturating_sub(names.len());
    let mut params = AuditParams::new();
    params
        .insert("transitions", report.transitions.len().to_string())
        .insert("first_due_at", first.as_millis().to_string())
        .insert("error_code", error.code.as_str())
        .insert("error", error.message.clone());
    let mut q = Sql::new(
        "INSERT INTO audit (id, tenant_id, router_id, at, actor, action, params, status, error) \
         VALUES (",
    );
    q.bind(Uuid::now_v7().to_string())
        .push(", ")
        .bind(tenant.to_string())
        .push(", ")
        .bind(report.router_id.to_string())
        .push(", ")
        .bind(report.at.as_millis())
        .push(", ")
        .bind(actor.to_owned())
        .push(", 'lifecycle.transition_failed', ")
        .bind(serde_json::to_string(&params).map_err(|e| DbError::Corrupt(e.to_string()))?)
        .push(", 'failed', ")
        .bind(serde_json::to_string(error).map_err(|e| DbError::Corrupt(e.to_string()))?)
        .push(")");
    q.execute(&mut **tx).await?;
    let subject = format!(
        "{} lifecycle transition(s) failed on router {router_name}",
        report.transitions.len()
    );
    let body = format!(
        "The agent could not apply {n} due lifecycle transition(s) on router {router_name} \
         ({router}); it keeps retrying.\n\nError: {code}: {message}\nFirst due: {first}\n\
         Accounts: {names}{more}\n",
        n = report.transitions.len(),
        router = report.router_id,
        code = error.code.as_str(),
        message = error.message,
        first = crate::api::validate::format_time(first),
        names = names.join(", "),
        more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        },
    );
    let key = format!(
        "transition_failed:{}:{}:{}",
        report.router_id,
        first.as_millis(),
        report.transitions.len()
    );
    super::notify::queue_alert(
        tx,
        db,
        tenant,
        Some(report.router_id),
        &key,
        &subject,
        &body,
        db.now(),
    )
    .await?;
    Ok(())
}

/// How a renewal sets the new expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Until this moment.
    Until(UnixMillis),
    /// For this many seconds more, from the current expiry, or from now if that has passed
    /// (or there is none).
    Period(u64),
}

/// One entry of a subscriber's lifecycle history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleEvent {
    /// The phase the subscriber went to.
    pub phase: String,
    /// Why: `expiry`, `manual`, `resume`, `renewal`.
    pub reason: String,
    /// The expiry it followed from (or the new one, for a renewal).
    pub expires_at: Option<UnixMillis>,
    /// When the phase was due by the subscriber's times (expiry transitions).
    pub due_at: Option<UnixMillis>,
    /// When it happened (on the router, for expiry transitions).
    pub at: UnixMillis,
    /// Who: the staff token's name, or `agent:<name>`.
    pub actor: String,
    /// Whether it was the subscriber's phase at the time it was recorded (an expiry
    /// transition a renewal had already overtaken is history only).
    pub current: bool,
}

/// Where a subscriber stands in its lifecycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleView {
    /// The subscriber.
    pub subscriber: Subscriber,
    /// The settings that apply to it (its tenant's with its plan's overrides).
    pub settings: LifecycleSettings,
    /// The end of its grace, if it expires and has grace.
    pub grace_until: Option<UnixMillis>,
    /// The phase its times give it now (the status follows once the router confirms).
    pub phase_now: SubscriberStatus,
    /// Its transitions, newest first (at most 200).
    pub events: Vec<LifecycleEvent>,
}

impl Db {
    /// A tenant's lifecycle settings.
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn tenant_lifecycle(
        &self,
        scope: &Scope,
        tenant: TenantId,
    ) -> Result<LifecycleSettings, DbError> {
        let mut tx = self.begin().await?;
        self.tenant_visible(&mut tx, scope, tenant).await?;
        let s = tenant_settings(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(s)
    }

    /// Sets a tenant's lifecycle settings. They travel in the desired state of each of its
    /// routers (the agents enforce them offline), so each router's generation is bumped.
    ///
    /// # Errors
    /// Not found (or not visible), a grace or suspended profile name a plan's profile has
    /// (422), or the database failed.
    pub async fn set_tenant_lifecycle(
        &self,
        staff: &Staff,
        tenant: TenantId,
        settings: LifecycleSettings,
    ) -> Result<LifecycleSettings, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        self.tenant_visible(&mut tx, &staff.scope, tenant).await?;
        let before = tenant_settings(&mut tx, tenant).await?;
        if before == settings {
            return Ok(before);
        }
        check_profile_names(&mut tx, tenant, &settings).await?;
        let json = serde_json::to_string(&settings).map_err(|e| DbError::Corrupt(e.to_string()))?;
        let mut q = Sql::new("UPDATE tenants SET lifecycle = ");
        q.bind(json).push(" WHERE id = ").bind(tenant.to_string());
        q.execute(&mut *tx).await?;
        let mut q = Sql::new("UPDATE routers SET generation = generation + 1, updated_at = ");
        q.bind(now.as_millis())
            .push(" WHERE deleted_at IS NULL AND tenant_id = ")
            .bind(tenant.to_string());
        let routers = q.execute(&mut *tx).await?.rows_affected();
        let mut q = Sql::new(
            "SELECT DISTINCT agent_id FROM routers WHERE deleted_at IS NULL AND tenant_id = ",
        );
        q.bind(tenant.to_string());
        let agents = agents_of(q.fetch_all(&mut *tx).await?)?;
        let mut params = settings_params(&settings);
        params.insert("routers", routers.to_string());
        audit_staff(
            &mut tx,
            now,
            Some(tenant),
            None,
            &staff.actor,
            "tenant.lifecycle_settings",
            &params,
        )
        .await?;
        tx.commit().await?;
        self.notify(agents);
        Ok(settings)
    }

    /// A plan's overrides and the settings they give (the tenant's with them applied).
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn plan_lifecycle(
        &self,
        scope: &Scope,
        plan: Uuid,
    ) -> Result<(LifecycleOverride, LifecycleSettings), DbError> {
        let mut tx = self.begin().await?;
        let p = super::plans::load(&mut tx, scope, plan).await?;
        let tenant = tenant_settings(&mut tx, p.tenant_id).await?;
        tx.commit().await?;
        let effective = tenant.with(&p.lifecycle);
        Ok((p.lifecycle, effective))
    }

    /// Sets a plan's overrides (empty: the tenant's settings hold). Bumps the generation of
    /// each router with a subscriber on the plan.
    ///
    /// # Errors
    /// Not found (or not visible), a profile name a plan's profile has (422), or the
    /// database failed.
    pub async fn set_plan_lifecycle(
        &self,
        staff: &Staff,
        plan: Uuid,
        o: LifecycleOverride,
    ) -> Result<(LifecycleOverride, LifecycleSettings), DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let p = super::plans::load(&mut tx, &staff.scope, plan).await?;
        let tenant = tenant_settings(&mut tx, p.tenant_id).await?;
        let effective = tenant.with(&o);
        if p.lifecycle == o {
            return Ok((o, effective));
        }
        check_profile_names(&mut tx, p.tenant_id, &effective).await?;
        let json = if o.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&o).map_err(|e| DbError::Corrupt(e.to_string()))?)
        };
        let mut q = Sql::new("UPDATE plans SET lifecycle = ");
        q.bind(json)
            .push(", updated_at = ")
            .bind(now.as_millis())
            .push(" WHERE id = ")
            .bind(plan.to_string());
        q.execute(&mut *tx).await?;
        let mut q = Sql::new("UPDATE routers SET generation = generation + 1, updated_at = ");
        q.bind(now.as_millis())
            .push(
                " WHERE deleted_at IS NULL AND id IN \
                 (SELECT router_id FROM subscribers WHERE plan_id = ",
            )
            .bind(plan.to_string())
            .push(")");
        let routers = q.execute(&mut *tx).await?.rows_affected();
        let mut q = Sql::new(
            "SELECT DISTINCT r.agent_id FROM routers r JOIN subscribers s ON s.router_id = r.id \
             WHERE r.deleted_at IS NULL AND s.plan_id = ",
        );
        q.bind(plan.to_string());
        let agents = agents_of(q.fetch_all(&mut *tx).await?)?;
        let mut params = AuditParams::new();
        params
            .insert("plan_id", plan.to_string())
            .insert(
                "overrides",
                serde_json::to_string(&o).map_err(|e| DbError::Corrupt(e.to_string()))?,
            )
            .insert("routers", routers.to_string());
        audit_staff(
            &mut tx,
            now,
            Some(p.tenant_id),
            None,
            &staff.actor,
            "plan.lifecycle_settings",
            &params,
        )
        .await?;
        tx.commit().await?;
        self.notify(agents);
        Ok((o, effective))
    }

    /// Renews a subscriber (a payment): sets the new expiry and, if it was in grace or
    /// suspended by expiry, restores the plan's profile at once (an upsert and a
    /// disconnection, critical priority) and queues a `renewed` notice. A manual suspension
    /// stays until staff resume. The router also gets the new expiry in its desired state,
    /// so a renewal made while the site is offline applies as soon as it reconnects.
    ///
    /// # Errors
    /// Not found (or not visible), a new expiry not in the future (422), or the database
    /// failed.
    pub async fn renew_subscriber(
        &self,
        staff: &Staff,
        id: SubscriberId,
        renewal: Renewal,
    ) -> Result<Subscriber, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let (before, password) = self.load_subscriber(&mut tx, &staff.scope, id).await?;
        let expires_at =
            match renewal {
                Renewal::Until(t) => t,
                Renewal::Period(secs) => {
                    let from = before.expires_at.filter(|e| *e > now).unwrap_or(now);
                    UnixMillis(from.as_millis().saturating_add(
                        i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX),
                    ))
                }
            };
        if expires_at <= now {
            return Err(DbError::Invalid(
                "the new expiry must be in the future".into(),
            ));
        }
        let plan = super::plans::load(&mut tx, &staff.scope, before.plan_id).await?;
        let settings = tenant_settings(&mut tx, before.tenant_id).await?;
        let mut after = Subscriber {
            expires_at: Some(expires_at),
            updated_at: now,
            ..before.clone()
        };
        if !after.hold {
            after.status = status_now(&after, &plan, &settings, now);
        }
        let restored = after.status != before.status;
        if restored {
            after.status_reason = Some("renewal".into());
            after.status_at = Some(now);
        }
        let mut q = Sql::new("UPDATE subscribers SET expires_at = ");
        q.bind(expires_at.as_millis())
            .push(", status = ")
            .bind(after.status.as_str().to_owned())
            .push(", status_reason = ")
            .bind(after.status_reason.clone())
            .push(", status_at = ")
            .bind(after.status_at.map(UnixMillis::as_millis))
            .push(", updated_at = ")
            .bind(now.as_millis())
            .push(" WHERE id = ")
            .bind(id.to_string());
        q.execute(&mut *tx).await?;
        let mut change = Change {
            db: self,
            tenant: after.tenant_id,
            now,
            agents: BTreeSet::new(),
        };
        let generation = change.touch(&mut tx, after.router_id).await?;
        if restored {
            change
                .upsert(
                    &mut tx,
                    &after,
                    &password,
                    &plan,
                    &settings,
                    generation,
                    tikfleet_shared::job::Priority::Critical,
                )
                .await?;
            change
                .disconnect(
                    &mut tx,
                    &after,
                    generation,
                    tikfleet_shared::job::Priority::Critical,
                )
                .await?;
        }
        let mut params = AuditParams::new();
        params
            .insert("subscriber_id", id.to_string())
            .insert("username", after.username.clone())
            .insert("reason", "renewal")
            .insert(
                "previous_expires_at",
                before
                    .expires_at
                    .map(|t| t.as_millis().to_string())
                    .unwrap_or_default(),
            )
            .insert("expires_at", expires_at.as_millis().to_string())
            .insert("previous_status", before.status.as_str())
            .insert("status", after.status.as_str());
        audit_staff(
            &mut tx,
            now,
            Some(after.tenant_id),
            Some(after.router_id),
            &staff.actor,
            "subscriber.renew",
            &params,
        )
        .await?;
        record_staff_transition(&mut tx, &after, "renewal", &staff.actor, now).await?;
        super::notify::queue_notice(
            &mut tx,
            self,
            &after,
            &plan.name,
            super::notify::NoticeKind::Renewed,
            None,
            now,
        )
        .await?;
        tx.commit().await?;
        self.notify(change.agents);
        self.wake_notifier();
        Ok(after)
    }

    /// Where a subscriber stands in its lifecycle, with its history.
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn subscriber_lifecycle(
        &self,
        scope: &Scope,
        id: SubscriberId,
    ) -> Result<LifecycleView, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let (sub, _) = self.load_subscriber(&mut tx, scope, id).await?;
        let plan = super::plans::load(&mut tx, scope, sub.plan_id).await?;
        let tenant = tenant_settings(&mut tx, sub.tenant_id).await?;
        let settings = tenant.with(&plan.lifecycle);
        let mut q = Sql::new(
            "SELECT phase, reason, expires_at, due_at, at, actor, current FROM lifecycle_events \
             WHERE subscriber_id = ",
        );
        q.bind(id.to_string())
            .push(" ORDER BY at DESC, id DESC LIMIT 200");
        let events = q
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| {
                Ok(LifecycleEvent {
                    phase: r.text("phase")?,
                    reason: r.text("reason")?,
                    expires_at: r.opt_millis("expires_at")?,
                    due_at: r.opt_millis("due_at")?,
                    at: r.millis("at")?,
                    actor: r.text("actor")?,
                    current: r.int("current")? != 0,
                })
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        tx.commit().await?;
        let phase_now = if sub.hold {
            SubscriberStatus::Suspended
        } else {
            status_now(&sub, &plan, &tenant, now)
        };
        Ok(LifecycleView {
            grace_until: sub.expires_at.and_then(|e| settings.grace_until(e)),
            subscriber: sub,
            settings,
            phase_now,
            events,
        })
    }
}

fn agents_of(rows: Vec<sqlx::any::AnyRow>) -> Result<BTreeSet<AgentId>, DbError> {
    rows.iter().map(|r| r.parse("agent_id")).collect()
}

fn settings_params(s: &LifecycleSettings) -> AuditParams {
    let mut p = AuditParams::new();
    p.insert(
        "notice_days",
        s.notice_days
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    )
    .insert("grace_period_secs", s.grace_period_secs.to_string())
    .insert("grace_profile", s.grace_profile.clone().unwrap_or_default())
    .insert("grace_rate_limit", s.grace_rate_limit.clone())
    .insert("suspension_mode", s.suspension_mode.as_str())
    .insert("suspended_profile", s.suspended_profile.clone())
    .insert("suspended_rate_limit", s.suspended_rate_limit.clone())
    .insert(
        "suspended_address_list",
        s.suspended_address_list.clone().unwrap_or_default(),
    );
    p
}

/// The grace and suspended profiles must not be a plan's profile: the agent would fight
/// over its rate limit.
async fn check_profile_names(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    s: &LifecycleSettings,
) -> Result<(), DbError> {
    let mut names: Vec<&str> = Vec::new();
    if let Some(g) = &s.grace_profile {
        names.push(g);
    }
    if let Some(p) = s.suspended_profile_name() {
        names.push(p);
    }
    if let [a, b] = names[..]
        && a == b
    {
        return Err(DbError::Invalid(format!(
            "the grace profile and the suspended profile must differ (both {a:?})"
        )));
    }
    for name in names {
        let mut q = Sql::new("SELECT name FROM plans WHERE tenant_id = ");
        q.bind(tenant.to_string())
            .push(" AND profile = ")
            .bind(name.to_owned());
        if let Some(row) = q.fetch_optional(&mut **tx).await? {
            return Err(DbError::Invalid(format!(
                "profile {name:?} is the profile of plan {:?}: choose another name for the \
                 grace or suspended profile",
                row.text("name")?
            )));
        }
    }
    Ok(())
}
