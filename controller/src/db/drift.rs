//! Drift: where a router differs from its desired state, as the agents' drift reports say,
//! and what staff decide about it.
//!
//! A drift report ([`DriftReport`]) is one check of one router, in parts; `hub` hands each
//! part to [`ingest_report`] inside the transaction that commits the agent's outbox records.
//! Every finding updates the one unresolved item of its router, item and field (or makes
//! it), and writes an audit row. The check's last part closes it: an unresolved item it did
//! not report again is `gone` (for an enforce job's check, the job's items it did not report
//! are `resolved`).
//!
//! Staff act on open items through the same storage functions as the subscriber and plan
//! endpoints, in one transaction with the item's new status: [`Db::accept_drift`] takes the
//! router's value into the database (a plan, a suspension, a deletion, a rate limit),
//! [`Db::enforce_drift`] queues an `enforce` job that puts the item back.
//! [`Db::request_drift_check`] queues a `drift_check` job.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tikfleet_shared::domain::{ItemKind, ItemRef};
use tikfleet_shared::job::{JobOp, Priority};
use tikfleet_shared::record::{
    AuditParams, DriftAction, DriftFinding, DriftReport, DriftTrigger, is_sensitive_key,
};
use tikfleet_shared::secret::REDACTED;
use tikfleet_shared::{AgentId, DriftId, JobId, RouterId, SubscriberId, TenantId, UnixMillis};
use uuid::Uuid;

use super::jobs::{JobRecord, NewJob, insert_job, job_by_key, queue_audited};
use super::plans::{PLAN_COLUMNS, Plan, PlanPatch};
use super::sql::{Sql, push_in};
use super::subscribers::{Service, SubscriberPatch, SubscriberStatus};
use super::{Db, DbError, Page, PageRequest, RowExt as _, Scope, Staff, audit_staff, to_i64};

/// What became of a drift item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DriftStatus {
    /// Reported and not dealt with: staff accept or enforce it.
    Open,
    /// An enforce job is on its way to put it back.
    Enforcing,
    /// The agent put it back (policy `enforce`, or an enforce job).
    Corrected,
    /// Staff took the router's value into the database.
    Accepted,
    /// A later check of the router no longer found it.
    Gone,
    /// The enforce job's check no longer found it.
    Resolved,
}

impl DriftStatus {
    /// Every status.
    pub const ALL: [Self; 6] = [
        Self::Open,
        Self::Enforcing,
        Self::Corrected,
        Self::Accepted,
        Self::Gone,
        Self::Resolved,
    ];

    /// The API and database name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Enforcing => "enforcing",
            Self::Corrected => "corrected",
            Self::Accepted => "accepted",
            Self::Gone => "gone",
            Self::Resolved => "resolved",
        }
    }
}

impl std::str::FromStr for DriftStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|x| x.as_str() == s).ok_or(())
    }
}

/// One difference between a router and its desired state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriftItem {
    /// Its id.
    pub id: Uuid,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The router.
    pub router_id: RouterId,
    /// Kind of router item.
    pub kind: ItemKind,
    /// The item's key (a name, or `list/address`).
    pub key: String,
    /// The RouterOS field that differs, or `None` for the whole item.
    pub field: Option<String>,
    /// The router's value (`None`: the item or field is missing on the router).
    pub router_value: Option<String>,
    /// The desired value (`None`: the item is not desired).
    pub desired_value: Option<String>,
    /// Whether tikfleet manages the router's item.
    pub managed: bool,
    /// What the agent last did about it.
    pub action: DriftAction,
    /// What became of it.
    pub status: DriftStatus,
    /// The last check that reported it.
    pub check_id: DriftId,
    /// The desired-state generation that check compared against.
    pub generation: u64,
    /// When it was first reported.
    pub first_seen_at: UnixMillis,
    /// When it was last reported.
    pub last_seen_at: UnixMillis,
    /// When it was resolved (any status but open and enforcing).
    pub resolved_at: Option<UnixMillis>,
    /// Who resolved it: a staff token's name or `agent:<name>`.
    pub resolved_by: Option<String>,
    /// The last enforce job queued for it.
    pub job_id: Option<JobId>,
}

/// Which statuses a list shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatusFilter {
    /// Open and enforcing: what staff still have to look at.
    #[default]
    Unresolved,
    /// Every status.
    All,
    /// One status.
    Only(DriftStatus),
}

/// Filters of the drift list.
#[derive(Clone, Debug, Default)]
pub struct DriftFilter {
    /// Only this router's items.
    pub router_id: Option<RouterId>,
    /// Only this tenant's items (within the caller's scope).
    pub tenant_id: Option<TenantId>,
    /// Which statuses.
    pub status: StatusFilter,
    /// Only items of this kind.
    pub kind: Option<ItemKind>,
}

const DRIFT_COLUMNS: &str = "id, tenant_id, router_id, kind, item_key, field, router_value, \
     desired_value, managed, action, status, check_id, generation, first_seen_at, last_seen_at, \
     resolved_at, resolved_by, job_id";

/// Statuses that are not resolved: at most one such item per router, item and field.
const UNRESOLVED: &str = "('open', 'enforcing')";

fn drift_item(row: &sqlx::any::AnyRow) -> Result<DriftItem, DbError> {
    let field = row.text("field")?;
    Ok(DriftItem {
        id: row.parse("id")?,
        tenant_id: row.parse("tenant_id")?,
        router_id: row.parse("router_id")?,
        kind: row.parse("kind")?,
        key: row.text("item_key")?,
        field: (!field.is_empty()).then_some(field),
        router_value: row.opt_text("router_value")?,
        desired_value: row.opt_text("desired_value")?,
        managed: row.int("managed")? != 0,
        action: row.parse("action")?,
        status: row.parse("status")?,
        check_id: row.parse("check_id")?,
        generation: row.uint("generation")?,
        first_seen_at: row.millis("first_seen_at")?,
        last_seen_at: row.millis("last_seen_at")?,
        resolved_at: row.opt_millis("resolved_at")?,
        resolved_by: row.opt_text("resolved_by")?,
        job_id: row.opt_parse("job_id")?,
    })
}

/// Longest value kept from a finding, in characters (a value on a router is short; this
/// only bounds what a misbehaving agent can make the database hold).
const MAX_VALUE_CHARS: usize = 1024;

/// `v` as stored: at most [`MAX_VALUE_CHARS`] characters, without NUL (which PostgreSQL's
/// text cannot hold), so no value an agent sends can make its records fail to commit.
fn bounded(v: &str) -> String {
    v.chars()
        .filter(|c| *c != '\0')
        .take(MAX_VALUE_CHARS)
        .collect()
}

/// A finding's values as stored: a secret field reads `<redacted>` on both sides whatever
/// the agent sent, and long values are cut.
fn stored_values(f: &DriftFinding) -> (Option<String>, Option<String>) {
    let secret = f.field.as_deref().is_some_and(is_sensitive_key);
    let value = |v: &Option<String>| {
        v.as_deref().map(|v| {
            if secret {
                REDACTED.to_owned()
            } else {
                bounded(v)
            }
        })
    };
    (value(&f.router_value), value(&f.desired_value))
}

/// Rows per multi-row statement of the ingest (18 values each for items, 11 for audit rows;
/// far below both databases' bind limits).
const INGEST_CHUNK: usize = 250;

/// Keys per `item_key IN (...)` lookup.
const LOOKUP_CHUNK: usize = 500;

/// An unresolved item already stored: its id, when it was first seen, its enforce job.
struct Stored {
    id: String,
    first_seen_at: i64,
    job_id: Option<String>,
}

/// Applies one part of a drift report of `agent` (named `agent_name`, of `tenant`) inside
/// the transaction committing it. The caller checked that the router is one of the agent's
/// live routers.
pub(crate) async fn ingest_report(
    conn: &mut sqlx::AnyConnection,
    tenant: TenantId,
    agent: AgentId,
    agent_name: &str,
    report: &DriftReport,
) -> Result<(), DbError> {
    let router = report.router_id.to_string();
    let check = report.id.to_string();
    let at = report.detected_at.as_millis();
    let actor = format!("agent:{agent_name}");

    // The router's row first, as every writer of drift items does (accepting one changes a
    // subscriber or plan, which bumps the router's generation, then the item): one lock order,
    // so PostgreSQL never finds two of them waiting on each other.
    let mut q =
        Sql::new("UPDATE routers SET last_drift_check_at = last_drift_check_at WHERE id = ");
    q.bind(router.clone());
    q.execute(&mut *conn).await?;

    // One finding per item and field, keyed as stored (should an agent repeat one, the
    // last counts).
    let mut findings: BTreeMap<(ItemKind, String, String), &DriftFinding> = BTreeMap::new();
    for f in &report.findings {
        let field = f.field.as_deref().map(bounded).unwrap_or_default();
        findings.insert((f.item.kind, bounded(&f.item.key), field), f);
    }

    // The unresolved items these findings update, found through the unique index.
    let mut keys_by_kind: BTreeMap<ItemKind, BTreeSet<&str>> = BTreeMap::new();
    for (kind, key, _) in findings.keys() {
        keys_by_kind.entry(*kind).or_default().insert(key.as_str());
    }
    let mut stored: HashMap<(ItemKind, String, String), Stored> = HashMap::new();
    for (kind, keys) in &keys_by_kind {
        let keys: Vec<&str> = keys.iter().copied().collect();
        for chunk in keys.chunks(LOOKUP_CHUNK) {
            let mut q = Sql::new(
                "SELECT id, item_key, field, first_seen_at, job_id FROM drift_items WHERE router_id = ",
            );
            q.bind(router.clone())
                .push(" AND kind = ")
                .bind(kind.as_str().to_owned())
                .push(" AND status IN ")
                .push(UNRESOLVED)
                .push(" AND item_key IN ");
            push_in(&mut q, chunk.iter().map(|k| (*k).to_owned()));
            for row in q.fetch_all(&mut *conn).await? {
                stored.insert(
                    (*kind, row.text("item_key")?, row.text("field")?),
                    Stored {
                        id: row.text("id")?,
                        first_seen_at: row.int("first_seen_at")?,
                        job_id: row.opt_text("job_id")?,
                    },
                );
            }
        }
    }

    // Upsert the items: an existing one keeps its id, first sighting and enforce job.
    let rows: Vec<_> = findings.iter().collect();
    for chunk in rows.chunks(INGEST_CHUNK) {
        let mut q = Sql::new("INSERT INTO drift_items (");
        q.push(DRIFT_COLUMNS).push(") VALUES ");
        for (i, ((kind, key, field), f)) in chunk.iter().enumerate() {
            let known = stored.get(&(*kind, key.clone(), field.clone()));
            let (router_value, desired_value) = stored_values(f);
            let corrected = f.action == DriftAction::Corrected;
            let status = if corrected {
                DriftStatus::Corrected
            } else {
                DriftStatus::Open
            };
            q.push(if i == 0 { "(" } else { ", (" });
            q.bind(known.map_or_else(|| Uuid::now_v7().to_string(), |s| s.id.clone()))
                .push(", ")
                .bind(tenant.to_string())
                .push(", ")
                .bind(router.clone())
                .push(", ")
                .bind(kind.as_str().to_owned())
                .push(", ")
                .bind(key.clone())
                .push(", ")
                .bind(field.clone())
                .push(", ")
                .bind(router_value)
                .push(", ")
                .bind(desired_value)
                .push(", ")
                .bind(i64::from(f.managed))
                .push(", ")
                .bind(f.action.as_str().to_owned())
                .push(", ")
                .bind(status.as_str().to_owned())
                .push(", ")
                .bind(check.clone())
                .push(", ")
                .bind(to_i64(report.generation))
                .push(", ")
                .bind(known.map_or(at, |s| s.first_seen_at))
                .push(", ")
                .bind(at)
                .push(", ")
                .bind(corrected.then_some(at))
                .push(", ")
                .bind(corrected.then(|| actor.clone()))
                .push(", ")
                .bind(known.and_then(|s| s.job_id.clone()))
                .push(")");
        }
        q.push(
            " ON CONFLICT (id) DO UPDATE SET router_value = excluded.router_value, \
             desired_value = excluded.desired_value, managed = excluded.managed, \
             action = excluded.action, status = excluded.status, check_id = excluded.check_id, \
             generation = excluded.generation, last_seen_at = excluded.last_seen_at, \
             resolved_at = excluded.resolved_at, resolved_by = excluded.resolved_by",
        );
        q.execute(&mut *conn).await?;
    }

    // One audit row per finding (values as stored: never a password).
    for chunk in rows.chunks(INGEST_CHUNK) {
        let mut q = Sql::new(
            "INSERT INTO audit (id, tenant_id, router_id, at, actor, action, params, status, \
             agent_id, job_id, generation) VALUES ",
        );
        for (i, (_, f)) in chunk.iter().enumerate() {
            let (router_value, desired_value) = stored_values(f);
            let mut params = AuditParams::new();
            params
                .insert("check_id", check.clone())
                .insert("kind", f.item.kind.as_str())
                .insert("key", bounded(&f.item.key))
                .insert("managed", f.managed.to_string())
                .insert("action", f.action.as_str());
            if let Some(field) = &f.field {
                params.insert("field", bounded(field));
            }
            if let Some(v) = router_value {
                params.insert("router_value", v);
            }
            if let Some(v) = desired_value {
                params.insert("desired_value", v);
            }
            let params =
                serde_json::to_string(&params).map_err(|e| DbError::Corrupt(e.to_string()))?;
            let (action, status) = match f.action {
                DriftAction::Corrected => ("drift.corrected", "succeeded"),
                DriftAction::Failed => ("drift.detected", "failed"),
                DriftAction::Reported | DriftAction::Conflict => ("drift.detected", "succeeded"),
            };
            q.push(if i == 0 { "(" } else { ", (" });
            q.bind(Uuid::now_v7().to_string())
                .push(", ")
                .bind(tenant.to_string())
                .push(", ")
                .bind(router.clone())
                .push(", ")
                .bind(at)
                .push(", ")
                .bind(actor.clone())
                .push(", ")
                .bind(action.to_owned())
                .push(", ")
                .bind(params)
                .push(", ")
                .bind(status.to_owned())
                .push(", ")
                .bind(agent.to_string())
                .push(", ")
                .bind(report.job_id.map(|j| j.to_string()))
                .push(", ")
                .bind(to_i64(report.generation))
                .push(")");
        }
        q.execute(&mut *conn).await?;
    }

    if !report.last {
        return Ok(());
    }
    // The check is complete: what it did not report again is no longer there.
    match (report.trigger, report.job_id) {
        (DriftTrigger::Reconcile | DriftTrigger::Schedule | DriftTrigger::Request, _) => {
            let mut q = Sql::new("UPDATE drift_items SET status = 'gone', resolved_at = ");
            q.bind(at)
                .push(", resolved_by = ")
                .bind(actor.clone())
                .push(" WHERE router_id = ")
                .bind(router.clone())
                .push(" AND status IN ")
                .push(UNRESOLVED)
                .push(" AND check_id <> ")
                .bind(check.clone());
            q.execute(&mut *conn).await?;
            let mut q = Sql::new("UPDATE routers SET last_drift_check_at = ");
            q.bind(at)
                .push(" WHERE id = ")
                .bind(router.clone())
                .push(" AND (last_drift_check_at IS NULL OR last_drift_check_at < ")
                .bind(at)
                .push(")");
            q.execute(&mut *conn).await?;
        }
        (DriftTrigger::Enforce, Some(job)) => {
            // An enforce job checks only its items: those it did not report are put back.
            // (An item a check in between reported again is open, still with this job.)
            let mut q = Sql::new("UPDATE drift_items SET status = 'resolved', resolved_at = ");
            q.bind(at)
                .push(", resolved_by = ")
                .bind(actor)
                .push(" WHERE router_id = ")
                .bind(router)
                .push(" AND job_id = ")
                .bind(job.to_string())
                .push(" AND status IN ")
                .push(UNRESOLVED)
                .push(" AND check_id <> ")
                .bind(check);
            q.execute(&mut *conn).await?;
        }
        (DriftTrigger::Enforce, None) => {}
    }
    Ok(())
}

/// Why an item cannot be accepted, and what to do instead.
fn refuse(message: impl Into<String>) -> DbError {
    DbError::Unprocessable(message.into())
}

/// What accepting an item does to the database.
enum Acceptance {
    /// Move the subscriber to the plan.
    Plan(SubscriberId, Uuid),
    /// Suspend or resume the subscriber.
    Status(SubscriberId, SubscriberStatus),
    /// Delete the subscriber.
    Delete(SubscriberId),
    /// Change the plan's rate limit.
    RateLimit(Uuid, String),
}

fn service_of(kind: ItemKind) -> Option<Service> {
    match kind {
        ItemKind::PppSecret => Some(Service::Pppoe),
        ItemKind::HotspotUser => Some(Service::Hotspot),
        _ => None,
    }
}

impl Db {
    /// Drift items visible in `scope`, filtered, oldest first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn list_drift(
        &self,
        scope: &Scope,
        filter: &DriftFilter,
        page: &PageRequest,
    ) -> Result<Page<DriftItem>, DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(DRIFT_COLUMNS).push(" FROM drift_items WHERE 1 = 1");
        scope.filter(&mut q, "tenant_id");
        if let Some(t) = filter.tenant_id {
            q.push(" AND tenant_id = ").bind(t.to_string());
        }
        if let Some(r) = filter.router_id {
            q.push(" AND router_id = ").bind(r.to_string());
        }
        match filter.status {
            StatusFilter::Unresolved => {
                q.push(" AND status IN ").push(UNRESOLVED);
            }
            StatusFilter::All => {}
            StatusFilter::Only(s) => {
                q.push(" AND status = ").bind(s.as_str().to_owned());
            }
        }
        if let Some(k) = filter.kind {
            q.push(" AND kind = ").bind(k.as_str().to_owned());
        }
        page.apply(&mut q, "id");
        let rows = q.fetch_all(self.pool()).await?;
        let items = rows.iter().map(drift_item).collect::<Result<Vec<_>, _>>()?;
        Ok(page.finish(items, |d| d.id.to_string()))
    }

    /// One drift item, if visible in `scope`.
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn get_drift(&self, scope: &Scope, id: Uuid) -> Result<DriftItem, DbError> {
        load_item(&mut *self.pool().acquire().await?, scope, id).await
    }

    /// Queues a `drift_check` job for a router: the agent compares it with its desired
    /// state now and reports. With an idempotency key, asking again answers the same job.
    ///
    /// # Errors
    /// The router is not visible, the key names another job, or the database failed.
    pub async fn request_drift_check(
        &self,
        staff: &Staff,
        router_id: RouterId,
        idempotency_key: Option<String>,
    ) -> Result<JobRecord, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let router = super::routers::load(&mut tx, &staff.scope, router_id).await?;
        let op = JobOp::DriftCheck {};
        if let Some(key) = &idempotency_key
            && let Some(job) =
                job_by_key(&mut tx, router.tenant_id, key, router_id, op.name()).await?
        {
            return Ok(job);
        }
        let key = idempotency_key
            .unwrap_or_else(|| format!("drift-check:{router_id}:{}", Uuid::now_v7()));
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
            "router.drift_check",
            AuditParams::new(),
        )
        .await?;
        self.commit_queued(tx, job, router.agent_id).await
    }

    /// Takes the router's value of an open item into the database, through the subscriber
    /// and plan changes the API makes (their audit rows, generation bumps and jobs with
    /// them), and marks the item `accepted`, all in one transaction.
    ///
    /// # Errors
    /// Not found (or not visible); the item is not open (`Conflict`); tikfleet cannot take
    /// this value (`Unprocessable`, with what to do instead); or the database failed.
    pub async fn accept_drift(&self, staff: &Staff, id: Uuid) -> Result<DriftItem, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let item = load_item(&mut tx, &staff.scope, id).await?;
        if item.status != DriftStatus::Open {
            return Err(DbError::Conflict(format!(
                "this drift item is {}; only an open item can be accepted",
                item.status.as_str()
            )));
        }
        let acceptance = self.acceptance(&mut tx, &item).await?;
        let agents = match acceptance {
            Acceptance::Plan(sub, plan) => {
                let patch = SubscriberPatch {
                    plan_id: Some(plan),
                    ..SubscriberPatch::default()
                };
                self.update_subscriber_in(&mut tx, staff, sub, patch)
                    .await?
                    .1
            }
            Acceptance::Status(sub, status) => {
                self.set_status_in(&mut tx, staff, sub, status).await?.1
            }
            Acceptance::Delete(sub) => self.delete_subscriber_in(&mut tx, staff, sub).await?,
            Acceptance::RateLimit(plan, rate) => {
                let patch = PlanPatch {
                    rate_limit: Some(rate),
                    ..PlanPatch::default()
                };
                self.update_plan_in(&mut tx, staff, plan, patch).await?.1
            }
        };
        let mut q = Sql::new("UPDATE drift_items SET status = 'accepted', resolved_at = ");
        q.bind(now.as_millis())
            .push(", resolved_by = ")
            .bind(staff.actor.clone())
            .push(" WHERE status = 'open' AND id = ")
            .bind(id.to_string());
        if q.execute(&mut *tx).await?.rows_affected() != 1 {
            return Err(DbError::Conflict(
                "the drift item changed meanwhile; read it again".into(),
            ));
        }
        audit_staff(
            &mut tx,
            now,
            Some(item.tenant_id),
            Some(item.router_id),
            &staff.actor,
            "drift.accepted",
            &item_params(&item),
        )
        .await?;
        let after = load_item(&mut tx, &staff.scope, id).await?;
        tx.commit().await?;
        self.notify(agents);
        Ok(after)
    }

    /// What accepting `item` would do, or why it cannot be accepted.
    async fn acceptance(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        item: &DriftItem,
    ) -> Result<Acceptance, DbError> {
        let key = &item.key;
        if item.action == DriftAction::Conflict || !item.managed {
            return Err(refuse(format!(
                "the router's {} {key:?} was made by hand, not by tikfleet, so there is nothing \
                 to take: enforce it to take the item over, or rename or remove it on the router",
                item.kind.as_str()
            )));
        }
        if item.field.is_none() && item.desired_value.is_none() && item.router_value.is_some() {
            return Err(refuse(format!(
                "the {} {key:?} exists only on the router and tikfleet does not import items: \
                 enforce it to remove it, or create it through the API",
                item.kind.as_str()
            )));
        }
        match item.kind {
            ItemKind::PppSecret | ItemKind::HotspotUser => {
                self.subscriber_acceptance(tx, item).await
            }
            ItemKind::PppProfile | ItemKind::HotspotProfile => {
                let (Some("rate-limit"), Some(rate)) =
                    (item.field.as_deref(), item.router_value.as_deref())
                else {
                    return Err(refuse(match (item.field.as_deref(), &item.router_value) {
                        (None, _) => format!(
                            "the profile {key:?} is missing on the router, and a plan's profile \
                             cannot be taken away: enforce it to make the profile again"
                        ),
                        (Some("rate-limit"), None) => format!(
                            "the router's profile {key:?} has no rate limit, and a plan needs \
                             one: enforce it, or change the plan's rate limit through the API"
                        ),
                        (Some(field), _) => format!(
                            "tikfleet keeps only the rate limit of a plan's profile, not its \
                             {field:?}: enforce it, or change the plan through the API"
                        ),
                    }));
                };
                let rate = rate.trim();
                if rate.is_empty() || rate.len() > 128 || rate.chars().any(char::is_control) {
                    return Err(refuse(format!(
                        "the router's rate limit {rate:?} is not one a plan can take: enforce it, \
                         or change the plan's rate limit through the API"
                    )));
                }
                let plan = plan_by_profile(tx, item.tenant_id, key)
                    .await?
                    .ok_or_else(|| {
                        refuse(format!(
                            "no plan of this tenant has the profile {key:?} any more: run a \
                             drift check to refresh this item"
                        ))
                    })?;
                Ok(Acceptance::RateLimit(plan.id, rate.to_owned()))
            }
            ItemKind::AddressListEntry => Err(refuse(
                "address-list entries are not changed through the API, so the router's entry \
                 cannot be taken: enforce it to put the entry back",
            )),
        }
    }

    async fn subscriber_acceptance(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        item: &DriftItem,
    ) -> Result<Acceptance, DbError> {
        let key = &item.key;
        let service = service_of(item.kind)
            .ok_or_else(|| DbError::Corrupt("drift item kind of a subscriber".into()))?;
        let mut q = Sql::new("SELECT id FROM subscribers WHERE tenant_id = ");
        q.bind(item.tenant_id.to_string())
            .push(" AND router_id = ")
            .bind(item.router_id.to_string())
            .push(" AND service = ")
            .bind(service.as_str().to_owned())
            .push(" AND username = ")
            .bind(key.clone());
        let sub: SubscriberId = q
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| {
                refuse(format!(
                    "no subscriber has the {} account {key:?} on this router any more: run a \
                     drift check to refresh this item",
                    service.as_str()
                ))
            })?
            .parse("id")?;
        match (item.field.as_deref(), item.router_value.as_deref()) {
            (None, None) => Ok(Acceptance::Delete(sub)),
            (None, Some(_)) => Err(refuse(
                "the account differs as a whole; enforce it, or change the subscriber through \
                 the API",
            )),
            (Some("profile"), Some(profile)) => {
                let plan = plan_by_profile(tx, item.tenant_id, profile)
                    .await?
                    .ok_or_else(|| {
                        refuse(format!(
                            "no plan of this tenant has the router profile {profile:?}: create a \
                             plan with profile {profile:?} and accept again, or enforce the \
                             subscriber's plan"
                        ))
                    })?;
                Ok(Acceptance::Plan(sub, plan.id))
            }
            (Some("disabled"), Some(v)) => match v {
                "true" | "yes" => Ok(Acceptance::Status(sub, SubscriberStatus::Suspended)),
                "false" | "no" => Ok(Acceptance::Status(sub, SubscriberStatus::Active)),
                other => Err(refuse(format!(
                    "the router's disabled value {other:?} is neither yes nor no: enforce it, \
                     or suspend or resume the subscriber through the API"
                ))),
            },
            (Some(field), _) if is_sensitive_key(field) => Err(refuse(
                "a router's password is never reported, so it cannot be taken: enforce it to \
                 put the subscriber's password back, or set a new password through the API",
            )),
            (Some(field), _) => Err(refuse(format!(
                "tikfleet keeps no {field:?} of a subscriber's account, so the router's value \
                 cannot be taken: enforce it, or change the subscriber through the API"
            ))),
        }
    }

    /// Queues an `enforce` job that puts an open (or enforcing) item back to its desired
    /// state; an item an administrator made is adopted. The item, and the router's other
    /// unresolved items of the same router item, become `enforcing` with the job.
    ///
    /// # Errors
    /// Not found (or not visible); the item is resolved (`Conflict`); or the database failed.
    pub async fn enforce_drift(&self, staff: &Staff, id: Uuid) -> Result<JobRecord, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let item = load_item(&mut tx, &staff.scope, id).await?;
        if !matches!(item.status, DriftStatus::Open | DriftStatus::Enforcing) {
            return Err(DbError::Conflict(format!(
                "this drift item is {}; only an open or enforcing item can be enforced",
                item.status.as_str()
            )));
        }
        let router = super::routers::load(&mut tx, &staff.scope, item.router_id).await?;
        let adopt = !item.managed || item.action == DriftAction::Conflict;
        let op = JobOp::Enforce {
            items: vec![ItemRef {
                kind: item.kind,
                key: item.key.clone(),
            }],
            adopt,
        };
        let job = insert_job(
            &mut tx,
            self.key(),
            NewJob {
                tenant: item.tenant_id,
                router: item.router_id,
                idempotency_key: format!("drift:{id}:enforce:{}", Uuid::now_v7()),
                priority: Priority::Normal,
                op: &op,
                now,
                generation: None,
            },
        )
        .await?;
        let mut q = Sql::new("UPDATE drift_items SET status = 'enforcing', job_id = ");
        q.bind(job.to_string())
            .push(" WHERE router_id = ")
            .bind(item.router_id.to_string())
            .push(" AND kind = ")
            .bind(item.kind.as_str().to_owned())
            .push(" AND item_key = ")
            .bind(item.key.clone())
            .push(" AND status IN ")
            .push(UNRESOLVED);
        q.execute(&mut *tx).await?;
        let mut params = item_params(&item);
        params
            .insert("job_id", job.to_string())
            .insert("adopt", adopt.to_string());
        audit_staff(
            &mut tx,
            now,
            Some(item.tenant_id),
            Some(item.router_id),
            &staff.actor,
            "drift.enforce",
            &params,
        )
        .await?;
        self.commit_queued(tx, job, router.agent_id).await
    }
}

/// Audit params naming an item (its values as stored: never a password).
fn item_params(item: &DriftItem) -> AuditParams {
    let mut p = AuditParams::new();
    p.insert("drift_id", item.id.to_string())
        .insert("kind", item.kind.as_str())
        .insert("key", item.key.clone());
    if let Some(f) = &item.field {
        p.insert("field", f.clone());
    }
    if let Some(v) = &item.router_value {
        p.insert("router_value", v.clone());
    }
    if let Some(v) = &item.desired_value {
        p.insert("desired_value", v.clone());
    }
    p
}

async fn load_item(
    conn: &mut sqlx::AnyConnection,
    scope: &Scope,
    id: Uuid,
) -> Result<DriftItem, DbError> {
    let mut q = Sql::new("SELECT ");
    q.push(DRIFT_COLUMNS)
        .push(" FROM drift_items WHERE id = ")
        .bind(id.to_string());
    scope.filter(&mut q, "tenant_id");
    let row = q
        .fetch_optional(conn)
        .await?
        .ok_or(DbError::NotFound("drift item"))?;
    drift_item(&row)
}

async fn plan_by_profile(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    profile: &str,
) -> Result<Option<Plan>, DbError> {
    let mut q = Sql::new("SELECT ");
    q.push(PLAN_COLUMNS)
        .push(" FROM plans WHERE tenant_id = ")
        .bind(tenant.to_string())
        .push(" AND profile = ")
        .bind(profile.to_owned());
    q.fetch_optional(&mut **tx)
        .await?
        .map(|row| super::plans::plan(&row))
        .transpose()
}
