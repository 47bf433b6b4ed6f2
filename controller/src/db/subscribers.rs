//! Subscribers: an ISP's customers, each an account (PPP secret or hotspot user) on one
//! router. Their passwords are encrypted at rest.
//!
//! Every change bumps the desired-state generation of each router it touches and queues the
//! jobs that make it so at once (the desired state converges the router either way): an
//! upsert (preceded by the plan's profile when the router has no account on that plan yet)
//! for a create or update, a delete for a delete, disable and disconnect for a suspend,
//! enable for a resume.

use std::collections::BTreeSet;

use tikfleet_shared::domain::{AccountKind, Profile};
use tikfleet_shared::job::{JobOp, Priority};
use tikfleet_shared::record::AuditParams;
use tikfleet_shared::{AgentId, RouterId, Secret, SubscriberId, TenantId, UnixMillis};
use uuid::Uuid;

use super::plans::Plan;
use super::sql::Sql;
use super::{Db, DbError, Page, PageRequest, RowExt as _, Scope, Staff, audit_staff, unique_as};
use crate::compile;
use crate::lifecycle::LifecycleSettings;

/// How a subscriber connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// PPPoE: a PPP secret.
    Pppoe,
    /// Hotspot: a hotspot user.
    Hotspot,
}

impl Service {
    /// The API and database name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pppoe => "pppoe",
            Self::Hotspot => "hotspot",
        }
    }
}

impl std::str::FromStr for Service {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "pppoe" => Ok(Self::Pppoe),
            "hotspot" => Ok(Self::Hotspot),
            _ => Err(()),
        }
    }
}

/// Where a subscriber stands: the phase last confirmed on its router (the agent reports
/// expiry transitions, even those it made offline) or set by staff.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubscriberStatus {
    /// Service on the plan's terms.
    Active,
    /// Expired, in grace: the grace profile.
    Grace,
    /// Suspended, by expiry at the end of grace or by staff (`hold`).
    Suspended,
}

impl SubscriberStatus {
    /// The API and database name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Grace => "grace",
            Self::Suspended => "suspended",
        }
    }

    /// The status of a lifecycle phase.
    #[must_use]
    pub const fn of_phase(phase: tikfleet_shared::domain::LifecyclePhase) -> Self {
        match phase {
            tikfleet_shared::domain::LifecyclePhase::Active => Self::Active,
            tikfleet_shared::domain::LifecyclePhase::Grace => Self::Grace,
            tikfleet_shared::domain::LifecyclePhase::Suspended => Self::Suspended,
        }
    }
}

impl std::str::FromStr for SubscriberStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "active" => Ok(Self::Active),
            "grace" => Ok(Self::Grace),
            "suspended" => Ok(Self::Suspended),
            _ => Err(()),
        }
    }
}

/// A subscriber (its password is not part of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscriber {
    /// Its id.
    pub id: SubscriberId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The router that serves it.
    pub router_id: RouterId,
    /// Its plan.
    pub plan_id: Uuid,
    /// Login name on the router.
    pub username: String,
    /// PPPoE or hotspot.
    pub service: Service,
    /// When service expires, if it does.
    pub expires_at: Option<UnixMillis>,
    /// Active, in grace, or suspended.
    pub status: SubscriberStatus,
    /// Suspended by staff until they resume it (whatever the expiry says).
    pub hold: bool,
    /// Why the status last changed: `created`, `expiry`, `manual`, `renewal`, `resume`.
    pub status_reason: Option<String>,
    /// When the status last changed.
    pub status_at: Option<UnixMillis>,
    /// Contact details for notices.
    pub contact: Contact,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it last changed.
    pub updated_at: UnixMillis,
}

/// A subscriber's contact details (each optional).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contact {
    /// Full name, for the greeting in notices.
    pub name: Option<String>,
    /// Email address for notices.
    pub email: Option<String>,
    /// Phone number (E.164) for SMS notices.
    pub phone: Option<String>,
}

/// A subscriber to add.
#[derive(Clone, Debug)]
pub struct NewSubscriber {
    /// Login name.
    pub username: String,
    /// Login password.
    pub password: Secret,
    /// Plan.
    pub plan_id: Uuid,
    /// Router.
    pub router_id: RouterId,
    /// PPPoE or hotspot.
    pub service: Service,
    /// Expiry, if any.
    pub expires_at: Option<UnixMillis>,
    /// Contact details.
    pub contact: Contact,
}

/// Changes to a subscriber; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct SubscriberPatch {
    /// New login name.
    pub username: Option<String>,
    /// New password.
    pub password: Option<Secret>,
    /// New plan.
    pub plan_id: Option<Uuid>,
    /// Move to another router.
    pub router_id: Option<RouterId>,
    /// New service.
    pub service: Option<Service>,
    /// New expiry (`Some(None)` removes it).
    pub expires_at: Option<Option<UnixMillis>>,
    /// New name (`Some(None)` removes it).
    pub name: Option<Option<String>>,
    /// New email (`Some(None)` removes it).
    pub email: Option<Option<String>>,
    /// New phone (`Some(None)` removes it).
    pub phone: Option<Option<String>>,
}

pub(crate) const SUBSCRIBER_COLUMNS: &str = "id, tenant_id, router_id, plan_id, username, password, service, expires_at, status, created_at, updated_at, hold, status_reason, status_at, name, email, phone";

pub(crate) fn subscriber(row: &sqlx::any::AnyRow) -> Result<Subscriber, DbError> {
    Ok(Subscriber {
        id: row.parse("id")?,
        tenant_id: row.parse("tenant_id")?,
        router_id: row.parse("router_id")?,
        plan_id: row.parse("plan_id")?,
        username: row.text("username")?,
        service: row.parse("service")?,
        expires_at: row.opt_millis("expires_at")?,
        status: row.parse("status")?,
        hold: row.int("hold")? != 0,
        status_reason: row.opt_text("status_reason")?,
        status_at: row.opt_millis("status_at")?,
        contact: Contact {
            name: row.opt_text("name")?,
            email: row.opt_text("email")?,
            phone: row.opt_text("phone")?,
        },
        created_at: row.millis("created_at")?,
        updated_at: row.millis("updated_at")?,
    })
}

pub(crate) fn password_context(id: SubscriberId) -> String {
    format!("subscriber.password:{id}")
}

/// The subscriber and its decrypted password.
pub(crate) fn subscriber_with_password(
    key: &crate::crypto::AtRestKey,
    row: &sqlx::any::AnyRow,
) -> Result<(Subscriber, Secret), DbError> {
    let s = subscriber(row)?;
    let plain = key.decrypt(&password_context(s.id), &row.text("password")?)?;
    let text =
        String::from_utf8(plain.to_vec()).map_err(|_| DbError::Corrupt("password".into()))?;
    Ok((s, Secret::new(text)))
}

/// Job building for one change inside a transaction.
pub(super) struct Change<'a> {
    pub(super) db: &'a Db,
    pub(super) tenant: TenantId,
    pub(super) now: UnixMillis,
    pub(super) agents: BTreeSet<AgentId>,
}

impl Change<'_> {
    pub(super) async fn touch(
        &mut self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        router: RouterId,
    ) -> Result<u64, DbError> {
        let mut q = Sql::new("SELECT agent_id FROM routers WHERE id = ");
        q.bind(router.to_string());
        self.agents
            .insert(q.fetch_one(&mut **tx).await?.parse("agent_id")?);
        super::routers::bump_generation(tx, router, self.now).await
    }

    pub(super) async fn job(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        router: RouterId,
        key: String,
        priority: Priority,
        op: JobOp,
        generation: u64,
    ) -> Result<(), DbError> {
        let job = super::jobs::NewJob {
            tenant: self.tenant,
            router,
            idempotency_key: key,
            priority,
            op: &op,
            now: self.now,
            generation: Some(generation),
        };
        super::jobs::insert_job(tx, self.db.key(), job).await?;
        Ok(())
    }

    /// Queues the account's upsert as it should be now (the plan's profile, or the grace or
    /// suspended terms its lifecycle or a manual suspension gives it), carrying the profile
    /// it names: the agent makes the profile so first, so the account never names a profile
    /// the router does not have yet (a separate profile job could still be waiting in the
    /// agent's queue beside it).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn upsert(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        sub: &Subscriber,
        password: &Secret,
        plan: &Plan,
        settings: &LifecycleSettings,
        generation: u64,
        priority: Priority,
    ) -> Result<(), DbError> {
        let op = match compile::account_now(sub, password, plan, settings, self.now) {
            (compile::Account::Ppp(secret), Profile::Ppp(profile)) => JobOp::UpsertPppSecret {
                secret,
                profile: Some(Box::new(profile)),
            },
            (compile::Account::Hotspot(user), Profile::Hotspot(profile)) => {
                JobOp::UpsertHotspotUser {
                    user,
                    profile: Some(Box::new(profile)),
                }
            }
            (compile::Account::Ppp(secret), Profile::Hotspot(_)) => JobOp::UpsertPppSecret {
                secret,
                profile: None,
            },
            (compile::Account::Hotspot(user), Profile::Ppp(_)) => JobOp::UpsertHotspotUser {
                user,
                profile: None,
            },
        };
        self.job(
            tx,
            sub.router_id,
            job_key(sub.id, &op, sub.router_id, generation),
            priority,
            op,
            generation,
        )
        .await
    }

    /// Queues the disconnection of the account's sessions, so new terms apply at once.
    pub(super) async fn disconnect(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        sub: &Subscriber,
        generation: u64,
        priority: Priority,
    ) -> Result<(), DbError> {
        let op = JobOp::DisconnectSession {
            account: compile::account(sub),
        };
        let key = job_key(sub.id, &op, sub.router_id, generation);
        self.job(tx, sub.router_id, key, priority, op, generation)
            .await
    }

    async fn remove(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        sub: &Subscriber,
        generation: u64,
    ) -> Result<(), DbError> {
        let op = match sub.service.account_kind() {
            AccountKind::Ppp => JobOp::DeletePppSecret {
                name: sub.username.clone(),
            },
            AccountKind::Hotspot => JobOp::DeleteHotspotUser {
                name: sub.username.clone(),
            },
        };
        self.job(
            tx,
            sub.router_id,
            job_key(sub.id, &op, sub.router_id, generation),
            Priority::Normal,
            op,
            generation,
        )
        .await
    }
}

fn job_key(sub: SubscriberId, op: &JobOp, router: RouterId, generation: u64) -> String {
    format!("subscriber:{sub}:{}:{router}:{generation}", op.name())
}

fn check_same_tenant(router_tenant: TenantId, plan: &Plan) -> Result<(), DbError> {
    if router_tenant == plan.tenant_id {
        Ok(())
    } else {
        Err(DbError::Invalid(
            "the plan and the router belong to different tenants".into(),
        ))
    }
}

impl Db {
    /// Adds a subscriber; queues its account (and its plan's profile if needed) for the
    /// router.
    ///
    /// # Errors
    /// The router or plan is not visible, the username is taken on the router, or the
    /// database failed.
    pub async fn create_subscriber(
        &self,
        staff: &Staff,
        new: NewSubscriber,
    ) -> Result<Subscriber, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let router = super::routers::load(&mut tx, &staff.scope, new.router_id).await?;
        let plan = super::plans::load(&mut tx, &staff.scope, new.plan_id).await?;
        check_same_tenant(router.tenant_id, &plan)?;
        let sub = Subscriber {
            id: SubscriberId::new(),
            tenant_id: router.tenant_id,
            router_id: router.id,
            plan_id: plan.id,
            username: new.username.clone(),
            service: new.service,
            expires_at: new.expires_at,
            status: SubscriberStatus::Active,
            hold: false,
            status_reason: Some("created".into()),
            status_at: Some(now),
            contact: new.contact.clone(),
            created_at: now,
            updated_at: now,
        };
        let settings = super::lifecycle::tenant_settings(&mut tx, router.tenant_id).await?;
        let sub = Subscriber {
            status: super::lifecycle::status_now(&sub, &plan, &settings, now),
            ..sub
        };
        let sealed = self
            .key()
            .encrypt(&password_context(sub.id), new.password.expose().as_bytes())?;
        let mut q = Sql::new("INSERT INTO subscribers (");
        q.push(SUBSCRIBER_COLUMNS).push(") VALUES (");
        q.bind(sub.id.to_string())
            .push(", ")
            .bind(sub.tenant_id.to_string())
            .push(", ")
            .bind(sub.router_id.to_string())
            .push(", ")
            .bind(sub.plan_id.to_string())
            .push(", ")
            .bind(sub.username.clone())
            .push(", ")
            .bind(sealed)
            .push(", ")
            .bind(sub.service.as_str().to_owned())
            .push(", ")
            .bind(sub.expires_at.map(UnixMillis::as_millis))
            .push(", ")
            .bind(sub.status.as_str().to_owned())
            .push(", ")
            .bind(now.as_millis())
            .push(", ")
            .bind(now.as_millis())
            .push(", 0, 'created', ")
            .bind(now.as_millis())
            .push(", ")
            .bind(sub.contact.name.clone())
            .push(", ")
            .bind(sub.contact.email.clone())
            .push(", ")
            .bind(sub.contact.phone.clone())
            .push(")");
        q.execute(&mut *tx).await.map_err(unique_as(format!(
            "the router already has a {} account named {:?}",
            sub.service.as_str(),
            sub.username
        )))?;
        let mut change = Change {
            db: self,
            tenant: sub.tenant_id,
            now,
            agents: BTreeSet::new(),
        };
        let generation = change.touch(&mut tx, sub.router_id).await?;
        let settings = super::lifecycle::tenant_settings(&mut tx, sub.tenant_id).await?;
        change
            .upsert(
                &mut tx,
                &sub,
                &new.password,
                &plan,
                &settings,
                generation,
                Priority::Critical,
            )
            .await?;
        let mut params = params_of(&sub);
        params.insert_secret("password", &new.password);
        audit_staff(
            &mut tx,
            now,
            Some(sub.tenant_id),
            Some(sub.router_id),
            &staff.actor,
            "subscriber.create",
            &params,
        )
        .await?;
        super::lifecycle::record_staff_transition(&mut tx, &sub, "created", &staff.actor, now)
            .await?;
        tx.commit().await?;
        self.notify(change.agents);
        // An expiry within the notice days gets its notice now, not at the next scan.
        if sub.expires_at.is_some() {
            self.wake_notifier();
        }
        Ok(sub)
    }

    /// Subscribers visible in `scope`, optionally of one router.
    ///
    /// # Errors
    /// The database failed.
    pub async fn list_subscribers(
        &self,
        scope: &Scope,
        router: Option<RouterId>,
        page: &PageRequest,
    ) -> Result<Page<Subscriber>, DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(SUBSCRIBER_COLUMNS)
            .push(" FROM subscribers WHERE 1 = 1");
        scope.filter(&mut q, "tenant_id");
        if let Some(r) = router {
            q.push(" AND router_id = ").bind(r.to_string());
        }
        page.apply(&mut q, "id");
        let rows = q.fetch_all(self.pool()).await?;
        let items = rows.iter().map(subscriber).collect::<Result<Vec<_>, _>>()?;
        Ok(page.finish(items, |s| s.id.to_string()))
    }

    /// One subscriber, if visible in `scope`.
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn get_subscriber(
        &self,
        scope: &Scope,
        id: SubscriberId,
    ) -> Result<Subscriber, DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(SUBSCRIBER_COLUMNS)
            .push(" FROM subscribers WHERE id = ")
            .bind(id.to_string());
        scope.filter(&mut q, "tenant_id");
        let row = q
            .fetch_optional(self.pool())
            .await?
            .ok_or(DbError::NotFound("subscriber"))?;
        subscriber(&row)
    }

    /// A subscriber visible in `scope` and its password, inside `tx`.
    pub(super) async fn load_subscriber(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        scope: &Scope,
        id: SubscriberId,
    ) -> Result<(Subscriber, Secret), DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(SUBSCRIBER_COLUMNS)
            .push(" FROM subscribers WHERE id = ")
            .bind(id.to_string());
        scope.filter(&mut q, "tenant_id");
        let row = q
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(DbError::NotFound("subscriber"))?;
        subscriber_with_password(self.key(), &row)
    }

    /// Changes a subscriber. A new name, password, plan, service or router reaches the router
    /// as jobs (the old account is removed when its key changes); every change bumps the
    /// generation of each router involved.
    ///
    /// # Errors
    /// Not found (or not visible), a referenced router or plan is not visible, the new name
    /// is taken, or the database failed.
    pub async fn update_subscriber(
        &self,
        staff: &Staff,
        id: SubscriberId,
        patch: SubscriberPatch,
    ) -> Result<Subscriber, DbError> {
        let mut tx = self.begin().await?;
        let (after, agents) = self.update_subscriber_in(&mut tx, staff, id, patch).await?;
        tx.commit().await?;
        self.notify(agents);
        self.wake_notifier();
        Ok(after)
    }

    /// [`update_subscriber`](Self::update_subscriber) inside `tx`; returns the agents to
    /// wake once it commits.
    pub(crate) async fn update_subscriber_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        staff: &Staff,
        id: SubscriberId,
        patch: SubscriberPatch,
    ) -> Result<(Subscriber, BTreeSet<AgentId>), DbError> {
        let now = self.now();
        let (before, old_password) = self.load_subscriber(tx, &staff.scope, id).await?;
        let router_id = patch.router_id.unwrap_or(before.router_id);
        let router = super::routers::load(tx, &staff.scope, router_id).await?;
        if router.tenant_id != before.tenant_id {
            return Err(DbError::NotFound("router"));
        }
        let plan =
            super::plans::load(tx, &staff.scope, patch.plan_id.unwrap_or(before.plan_id)).await?;
        check_same_tenant(router.tenant_id, &plan)?;
        let password = patch.password.clone().unwrap_or(old_password);
        let settings = super::lifecycle::tenant_settings(tx, before.tenant_id).await?;
        let mut after = Subscriber {
            router_id,
            plan_id: plan.id,
            username: patch
                .username
                .clone()
                .unwrap_or_else(|| before.username.clone()),
            service: patch.service.unwrap_or(before.service),
            expires_at: patch.expires_at.unwrap_or(before.expires_at),
            contact: Contact {
                name: patch
                    .name
                    .clone()
                    .unwrap_or_else(|| before.contact.name.clone()),
                email: patch
                    .email
                    .clone()
                    .unwrap_or_else(|| before.contact.email.clone()),
                phone: patch
                    .phone
                    .clone()
                    .unwrap_or_else(|| before.contact.phone.clone()),
            },
            updated_at: now,
            ..before.clone()
        };
        // A new expiry (or plan terms) can move the subscriber to another phase: a later
        // expiry in grace or suspension is a renewal.
        let status = if after.hold {
            SubscriberStatus::Suspended
        } else {
            super::lifecycle::status_now(&after, &plan, &settings, now)
        };
        if status != before.status {
            after.status = status;
            after.status_reason = Some(
                if status == SubscriberStatus::Active {
                    "renewal"
                } else {
                    "expiry"
                }
                .into(),
            );
            after.status_at = Some(now);
        }
        let mut q = Sql::new("UPDATE subscribers SET router_id = ");
        q.bind(after.router_id.to_string())
            .push(", plan_id = ")
            .bind(after.plan_id.to_string())
            .push(", username = ")
            .bind(after.username.clone())
            .push(", service = ")
            .bind(after.service.as_str().to_owned())
            .push(", expires_at = ")
            .bind(after.expires_at.map(UnixMillis::as_millis))
            .push(", name = ")
            .bind(after.contact.name.clone())
            .push(", email = ")
            .bind(after.contact.email.clone())
            .push(", phone = ")
            .bind(after.contact.phone.clone())
            .push(", status = ")
            .bind(after.status.as_str().to_owned())
            .push(", status_reason = ")
            .bind(after.status_reason.clone())
            .push(", status_at = ")
            .bind(after.status_at.map(UnixMillis::as_millis))
            .push(", updated_at = ")
            .bind(now.as_millis());
        if let Some(pw) = &patch.password {
            q.push(", password = ").bind(
                self.key()
                    .encrypt(&password_context(id), pw.expose().as_bytes())?,
            );
        }
        q.push(" WHERE id = ").bind(id.to_string());
        q.execute(&mut **tx).await.map_err(unique_as(format!(
            "the router already has a {} account named {:?}",
            after.service.as_str(),
            after.username
        )))?;

        let mut change = Change {
            db: self,
            tenant: after.tenant_id,
            now,
            agents: BTreeSet::new(),
        };
        let key_changed = before.router_id != after.router_id
            || before.service != after.service
            || before.username != after.username;
        if key_changed {
            let old_generation = change.touch(tx, before.router_id).await?;
            change.remove(tx, &before, old_generation).await?;
        }
        let generation = if key_changed && before.router_id == after.router_id {
            super::routers::load(tx, &staff.scope, after.router_id)
                .await?
                .generation
        } else {
            change.touch(tx, after.router_id).await?
        };
        let status_changed = before.status != after.status;
        let account_changed = key_changed
            || patch.password.is_some()
            || before.plan_id != after.plan_id
            || status_changed;
        if account_changed {
            change
                .upsert(
                    tx,
                    &after,
                    &password,
                    &plan,
                    &settings,
                    generation,
                    Priority::Normal,
                )
                .await?;
        }
        if (before.plan_id != after.plan_id || status_changed) && !key_changed {
            change
                .disconnect(tx, &after, generation, Priority::Normal)
                .await?;
        }
        if status_changed {
            super::lifecycle::record_staff_transition(
                tx,
                &after,
                after.status_reason.as_deref().unwrap_or("expiry"),
                &staff.actor,
                now,
            )
            .await?;
        }
        let mut params = params_of(&after);
        if let Some(pw) = &patch.password {
            params.insert_secret("password", pw);
        }
        audit_staff(
            tx,
            now,
            Some(after.tenant_id),
            Some(after.router_id),
            &staff.actor,
            "subscriber.update",
            &params,
        )
        .await?;
        Ok((after, change.agents))
    }

    /// Deletes a subscriber and removes its account from the router.
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn delete_subscriber(&self, staff: &Staff, id: SubscriberId) -> Result<(), DbError> {
        let mut tx = self.begin().await?;
        let agents = self.delete_subscriber_in(&mut tx, staff, id).await?;
        tx.commit().await?;
        self.notify(agents);
        Ok(())
    }

    /// [`delete_subscriber`](Self::delete_subscriber) inside `tx`; returns the agents to wake
    /// once it commits.
    pub(crate) async fn delete_subscriber_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        staff: &Staff,
        id: SubscriberId,
    ) -> Result<BTreeSet<AgentId>, DbError> {
        let now = self.now();
        let (sub, _) = self.load_subscriber(tx, &staff.scope, id).await?;
        let mut q = Sql::new("DELETE FROM subscribers WHERE id = ");
        q.bind(id.to_string());
        q.execute(&mut **tx).await?;
        let mut change = Change {
            db: self,
            tenant: sub.tenant_id,
            now,
            agents: BTreeSet::new(),
        };
        let generation = change.touch(tx, sub.router_id).await?;
        change.remove(tx, &sub, generation).await?;
        let params = params_of(&sub);
        audit_staff(
            tx,
            now,
            Some(sub.tenant_id),
            Some(sub.router_id),
            &staff.actor,
            "subscriber.delete",
            &params,
        )
        .await?;
        Ok(change.agents)
    }

    /// Suspends a subscriber: disables its account and disconnects its sessions. Suspending a
    /// suspended subscriber changes nothing.
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn suspend_subscriber(
        &self,
        staff: &Staff,
        id: SubscriberId,
    ) -> Result<Subscriber, DbError> {
        self.set_status(staff, id, SubscriberStatus::Suspended)
            .await
    }

    /// Resumes a suspended subscriber: enables its account. Resuming an active subscriber
    /// changes nothing.
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn resume_subscriber(
        &self,
        staff: &Staff,
        id: SubscriberId,
    ) -> Result<Subscriber, DbError> {
        self.set_status(staff, id, SubscriberStatus::Active).await
    }

    async fn set_status(
        &self,
        staff: &Staff,
        id: SubscriberId,
        status: SubscriberStatus,
    ) -> Result<Subscriber, DbError> {
        let mut tx = self.begin().await?;
        let (after, agents) = self.set_status_in(&mut tx, staff, id, status).await?;
        tx.commit().await?;
        self.notify(agents);
        Ok(after)
    }

    /// Suspends (puts on hold) or resumes a subscriber inside `tx`; returns the agents to
    /// wake once it commits (none when it already was so).
    ///
    /// A manual suspension holds until staff resume: the account is suspended the tenant's
    /// way (disabled, or moved to the suspended profile) whatever its expiry says. Resuming
    /// lifts the hold; the subscriber is then in whatever phase its expiry gives it (active,
    /// or grace or suspended if it expired meanwhile; a renewal restores it).
    pub(crate) async fn set_status_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        staff: &Staff,
        id: SubscriberId,
        status: SubscriberStatus,
    ) -> Result<(Subscriber, BTreeSet<AgentId>), DbError> {
        let now = self.now();
        let (before, password) = self.load_subscriber(tx, &staff.scope, id).await?;
        let hold = status == SubscriberStatus::Suspended;
        if before.hold == hold {
            return Ok((before, BTreeSet::new()));
        }
        let plan = super::plans::load(tx, &staff.scope, before.plan_id).await?;
        let settings = super::lifecycle::tenant_settings(tx, before.tenant_id).await?;
        let mut after = Subscriber {
            hold,
            status_reason: Some(if hold { "manual" } else { "resume" }.into()),
            status_at: Some(now),
            updated_at: now,
            ..before
        };
        after.status = if hold {
            SubscriberStatus::Suspended
        } else {
            super::lifecycle::status_now(&after, &plan, &settings, now)
        };
        let mut q = Sql::new("UPDATE subscribers SET status = ");
        q.bind(after.status.as_str().to_owned())
            .push(", hold = ")
            .bind(i64::from(hold))
            .push(", status_reason = ")
            .bind(after.status_reason.clone())
            .push(", status_at = ")
            .bind(now.as_millis())
            .push(", updated_at = ")
            .bind(now.as_millis())
            .push(" WHERE id = ")
            .bind(id.to_string());
        q.execute(&mut **tx).await?;
        let mut change = Change {
            db: self,
            tenant: after.tenant_id,
            now,
            agents: BTreeSet::new(),
        };
        let generation = change.touch(tx, after.router_id).await?;
        // In disable mode a hold is the account disabled on its plan's profile: disable (and
        // drop its sessions) to hold, enable to resume when nothing else changed. Otherwise
        // the account as it should be now, and a disconnect so it applies.
        let account = compile::account(&after);
        let disable_mode = settings.with(&plan.lifecycle).suspension_mode
            == crate::lifecycle::SuspensionMode::Disable;
        let ops = match (hold, disable_mode, after.status) {
            (true, true, _) => Some(vec![
                JobOp::Disable {
                    account: account.clone(),
                },
                JobOp::DisconnectSession { account },
            ]),
            (false, true, SubscriberStatus::Active) => Some(vec![JobOp::Enable { account }]),
            _ => None,
        };
        if let Some(ops) = ops {
            for op in ops {
                let key = job_key(id, &op, after.router_id, generation);
                change
                    .job(tx, after.router_id, key, Priority::Critical, op, generation)
                    .await?;
            }
        } else {
            change
                .upsert(
                    tx,
                    &after,
                    &password,
                    &plan,
                    &settings,
                    generation,
                    Priority::Critical,
                )
                .await?;
            change
                .disconnect(tx, &after, generation, Priority::Critical)
                .await?;
        }
        let action = if hold {
            "subscriber.suspend"
        } else {
            "subscriber.resume"
        };
        let mut params = params_of(&after);
        params
            .insert("reason", if hold { "manual" } else { "resume" })
            .insert("status", after.status.as_str());
        audit_staff(
            tx,
            now,
            Some(after.tenant_id),
            Some(after.router_id),
            &staff.actor,
            action,
            &params,
        )
        .await?;
        super::lifecycle::record_staff_transition(
            tx,
            &after,
            if hold { "manual" } else { "resume" },
            &staff.actor,
            now,
        )
        .await?;
        Ok((after, change.agents))
    }
}

fn params_of(sub: &Subscriber) -> AuditParams {
    let mut p = AuditParams::new();
    p.insert("subscriber_id", sub.id.to_string())
        .insert("username", sub.username.clone())
        .insert("plan_id", sub.plan_id.to_string())
        .insert("router_id", sub.router_id.to_string())
        .insert("service", sub.service.as_str())
        .insert(
            "expires_at",
            sub.expires_at
                .map(|t| t.as_millis().to_string())
                .unwrap_or_default(),
        );
    p
}
