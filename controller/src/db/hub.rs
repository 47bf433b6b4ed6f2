//! The agent hub's storage ([`HubStore`]) on the SQL database.
//!
//! Every query here is scoped by the agent it is called for: routers by `agent_id` (and so
//! the agent's tenant), jobs by their router's agent. [`HubStore::commit_records`] applies
//! an agent's outbox records in one transaction together with the new committed seq, and
//! skips seqs at or below it, so a resent record takes effect once.
//!
//! The hub's reads for pushing ([`HubStore::push_reads`]) take many agents at once: each query
//! names up to [`AGENTS_PER_QUERY`] agents (`agent_id IN (...)`) and the rows are handed to
//! the agent they belong to. The single-agent reads are the same queries with one agent, so
//! there is one SQL text for each.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tikfleet_shared::domain::{DesiredState, DriftSettings};
use tikfleet_shared::job::Job;
use tikfleet_shared::protocol::RouterGenerations;
use tikfleet_shared::record::{AuditRecord, AuditStatus, OutboxRecord, is_sensitive_key};
use tikfleet_shared::secret::REDACTED;
use tikfleet_shared::{AgentId, JobId, RouterId, TenantId, UnixMillis};

use super::jobs::{JOB_COLUMNS, status_name, wire_job};
use super::routers::parse_tls;
use super::sql::{Sql, push_in};
use super::subscribers::{SUBSCRIBER_COLUMNS, subscriber_with_password};
use super::{Db, DbError, RowExt as _, to_i64};
use crate::compile;
use crate::hub::{
    AgentIdentity, AgentKey, Delivered, HubStore, PushRead, PushRequest, RouterForAgent,
};

/// The agent's tenant and name, or `None` if it was never enrolled.
async fn agent_row<'c, E>(e: E, agent: AgentId) -> Result<Option<(TenantId, String, i64)>, DbError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let mut q = Sql::new("SELECT tenant_id, name, records_committed FROM agents WHERE id = ");
    q.bind(agent.to_string());
    match q.fetch_optional(e).await? {
        None => Ok(None),
        Some(row) => Ok(Some((
            row.parse("tenant_id")?,
            row.text("name")?,
            row.int("records_committed")?,
        ))),
    }
}

/// Agents (or routers) named in one query of the hub's reads.
const AGENTS_PER_QUERY: usize = 500;

/// A router as the hub reads it: whose it is, what the agent is told, its generation.
struct HubRouter {
    agent: AgentId,
    router: RouterForAgent,
    generation: u64,
}

impl Db {
    /// Every router (tombstones included) of `agents` in their own tenant, by router id.
    async fn hub_routers(
        conn: &mut sqlx::AnyConnection,
        agents: &[AgentId],
    ) -> Result<Vec<HubRouter>, DbError> {
        let mut out = Vec::new();
        for chunk in agents.chunks(AGENTS_PER_QUERY) {
            let mut q = Sql::new(
                "SELECT r.id, r.tenant_id, r.agent_id, r.name, r.address, r.api_port, r.ssh_port, \
                 r.tls, r.username, r.sealed_password, r.revision, r.generation, r.deleted_at \
                 FROM routers r JOIN agents a ON a.id = r.agent_id \
                 WHERE r.tenant_id = a.tenant_id AND r.agent_id IN ",
            );
            push_in(&mut q, chunk.iter().map(ToString::to_string));
            q.push(" ORDER BY r.id");
            for row in q.fetch_all(&mut *conn).await? {
                let port = |c: &str| -> Result<u16, DbError> {
                    u16::try_from(row.int(c)?).map_err(|_| DbError::Corrupt(c.into()))
                };
                out.push(HubRouter {
                    agent: row.parse("agent_id")?,
                    generation: row.uint("generation")?,
                    router: RouterForAgent {
                        router_id: row.parse("id")?,
                        tenant_id: row.parse("tenant_id")?,
                        name: row.text("name")?,
                        address: row.text("address")?,
                        api_port: port("api_port")?,
                        ssh_port: port("ssh_port")?,
                        tls: parse_tls(&row.text("tls")?)?,
                        username: row.text("username")?,
                        sealed_password: STANDARD
                            .decode(row.text("sealed_password")?)
                            .map_err(|_| DbError::Corrupt("sealed_password".into()))?,
                        revision: row.uint("revision")?,
                        removed: row.opt_int("deleted_at")?.is_some(),
                    },
                });
            }
        }
        Ok(out)
    }

    /// Compiles the desired state of each `(router, tenant, generation)`, in order, from the
    /// router's subscribers of its tenant and their plans.
    async fn compile_routers(
        &self,
        conn: &mut sqlx::AnyConnection,
        targets: &[(RouterId, TenantId, u64)],
    ) -> Result<Vec<DesiredState>, DbError> {
        let mut subscribers: HashMap<RouterId, Vec<_>> = HashMap::new();
        let mut plans: HashMap<TenantId, BTreeMap<uuid::Uuid, super::plans::Plan>> = HashMap::new();
        let tenants: HashMap<RouterId, TenantId> = targets.iter().map(|t| (t.0, t.1)).collect();
        for chunk in targets.chunks(AGENTS_PER_QUERY) {
            let routers = || chunk.iter().map(|t| t.0.to_string());
            let mut q = Sql::new("SELECT ");
            q.push(SUBSCRIBER_COLUMNS)
                .push(" FROM subscribers WHERE router_id IN ");
            push_in(&mut q, routers());
            for row in q.fetch_all(&mut *conn).await? {
                let (sub, password) = subscriber_with_password(self.key(), &row)?;
                if tenants.get(&sub.router_id) == Some(&sub.tenant_id) {
                    subscribers
                        .entry(sub.router_id)
                        .or_default()
                        .push((sub, password));
                }
            }
            let mut q = Sql::new("SELECT ");
            q.push(super::plans::PLAN_COLUMNS).push(
                " FROM plans WHERE id IN (SELECT plan_id FROM subscribers WHERE router_id IN ",
            );
            push_in(&mut q, routers());
            q.push(")");
            for row in q.fetch_all(&mut *conn).await? {
                let plan = super::plans::plan(&row)?;
                plans
                    .entry(plan.tenant_id)
                    .or_default()
                    .insert(plan.id, plan);
            }
        }
        // The tenants' drift settings, which every state carries.
        let mut drift: HashMap<TenantId, DriftSettings> = HashMap::new();
        let mut lifecycle: HashMap<TenantId, crate::lifecycle::LifecycleSettings> = HashMap::new();
        let tenant_ids: BTreeSet<TenantId> = targets.iter().map(|t| t.1).collect();
        let tenant_ids: Vec<TenantId> = tenant_ids.into_iter().collect();
        for chunk in tenant_ids.chunks(AGENTS_PER_QUERY) {
            let mut q = Sql::new(
                "SELECT id, drift_policy, drift_interval_secs, lifecycle FROM tenants WHERE id IN ",
            );
            push_in(&mut q, chunk.iter().map(ToString::to_string));
            for row in q.fetch_all(&mut *conn).await? {
                let id = row.parse("id")?;
                drift.insert(id, super::tenants::tenant_drift(&row)?.settings());
                lifecycle.insert(
                    id,
                    super::lifecycle::parse_settings(row.opt_text("lifecycle")?.as_deref())?,
                );
            }
        }
        let (no_plans, no_subscribers) = (BTreeMap::new(), Vec::new());
        let default_lifecycle = crate::lifecycle::LifecycleSettings::default();
        let now = self.now();
        Ok(targets
            .iter()
            .map(|&(router, tenant, generation)| {
                compile::desired_state(
                    &compile::RouterRows {
                        router_id: router,
                        tenant_id: tenant,
                        generation,
                        plans: plans.get(&tenant).unwrap_or(&no_plans),
                        subscribers: subscribers.get(&router).unwrap_or(&no_subscribers),
                        drift: drift.get(&tenant).copied().unwrap_or_default(),
                        lifecycle: lifecycle.get(&tenant).unwrap_or(&default_lifecycle),
                    },
                    now,
                )
            })
            .collect())
    }

    /// The desired states of `routers` newer than `known` says the agent stores.
    async fn newer_states<'r>(
        &self,
        conn: &mut sqlx::AnyConnection,
        routers: impl IntoIterator<Item = &'r HubRouter>,
        known: &[RouterGenerations],
    ) -> Result<Vec<DesiredState>, DbError> {
        let known: HashMap<RouterId, u64> = known.iter().map(|r| (r.router_id, r.stored)).collect();
        let targets: Vec<_> = routers
            .into_iter()
            .filter(|r| {
                !r.router.removed
                    && r.generation > known.get(&r.router.router_id).copied().unwrap_or(0)
            })
            .map(|r| (r.router.router_id, r.router.tenant_id, r.generation))
            .collect();
        self.compile_routers(conn, &targets).await
    }

    /// Jobs of `agents`' routers not acknowledged yet and free to go (see
    /// [`HubStore::undelivered_jobs`]), oldest first.
    async fn hub_jobs(
        &self,
        conn: &mut sqlx::AnyConnection,
        agents: &[AgentId],
    ) -> Result<Vec<Job>, DbError> {
        let mut out = Vec::new();
        for chunk in agents.chunks(AGENTS_PER_QUERY) {
            // A job waits while an earlier unfinished job of its router changes the same item
            // (order_key), or the item it needs (after_key): the agent runs a router's jobs by
            // priority and several at once, so only what is delivered in order runs in order.
            // When the earlier job's final update is committed, the hub reads again.
            let mut q = Sql::new("SELECT ");
            q.push(JOB_COLUMNS).push(
                " FROM jobs j WHERE j.delivered_at IS NULL AND j.status = 'queued' AND j.router_id IN \
                 (SELECT r.id FROM routers r JOIN agents a ON a.id = r.agent_id \
                 WHERE r.deleted_at IS NULL AND r.tenant_id = a.tenant_id AND r.agent_id IN ",
            );
            push_in(&mut q, chunk.iter().map(ToString::to_string));
            q.push(
                ") AND (j.order_key IS NULL OR NOT EXISTS (SELECT 1 FROM jobs p \
                 WHERE p.router_id = j.router_id \
                 AND (p.order_key = j.order_key OR p.order_key = j.after_key) \
                 AND p.status IN ('queued', 'running', 'retrying') \
                 AND (p.created_at < j.created_at OR (p.created_at = j.created_at AND p.id < j.id)))) \
                 ORDER BY j.created_at, j.id",
            );
            for row in q.fetch_all(&mut *conn).await? {
                out.push(wire_job(self.key(), &row)?);
            }
        }
        Ok(out)
    }

    /// Cancelled jobs of `agents`' routers whose cancel is not acknowledged yet, oldest first,
    /// with their router.
    async fn hub_cancels(
        conn: &mut sqlx::AnyConnection,
        agents: &[AgentId],
    ) -> Result<Vec<(RouterId, JobId)>, DbError> {
        let mut out = Vec::new();
        for chunk in agents.chunks(AGENTS_PER_QUERY) {
            let mut q = Sql::new(
                "SELECT id, router_id FROM jobs WHERE status = 'cancelled' AND cancel_delivered_at IS NULL \
                 AND router_id IN (SELECT r.id FROM routers r JOIN agents a ON a.id = r.agent_id \
                 WHERE r.tenant_id = a.tenant_id AND r.agent_id IN ",
            );
            push_in(&mut q, chunk.iter().map(ToString::to_string));
            q.push(") ORDER BY updated_at, id");
            for row in q.fetch_all(&mut *conn).await? {
                out.push((row.parse("router_id")?, row.parse("id")?));
            }
        }
        Ok(out)
    }

    /// Sets `column` to `now` on those of `jobs` that belong to `agent`'s routers, are not
    /// marked yet and meet `condition` (SQL, may be empty): jobs delivered
    /// ([`HubStore::jobs_delivered`]), or cancels delivered ([`HubStore::cancels_delivered`])
    /// — only while still cancelled, so a job re-queued meanwhile and cancelled again has its
    /// cancel sent again.
    async fn mark_jobs(
        conn: &mut sqlx::AnyConnection,
        agent: AgentId,
        jobs: &[JobId],
        column: &'static str,
        condition: &'static str,
        now: UnixMillis,
    ) -> Result<(), DbError> {
        for chunk in jobs.chunks(200) {
            let mut q = Sql::new(&format!("UPDATE jobs SET {column} = "));
            q.bind(now.as_millis())
                .push(&format!(" WHERE {column} IS NULL{condition} AND id IN "));
            push_in(&mut q, chunk.iter().map(ToString::to_string));
            q.push(" AND router_id IN (SELECT id FROM routers WHERE agent_id = ")
                .bind(agent.to_string())
                .push(")");
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Records the desired-state generations `agent` stored (see [`HubStore::states_stored`]).
    async fn mark_states_stored(
        conn: &mut sqlx::AnyConnection,
        agent: AgentId,
        states: &[(RouterId, u64)],
    ) -> Result<(), DbError> {
        for (router, generation) in states {
            let generation = to_i64(*generation);
            let mut q = Sql::new("UPDATE routers SET stored_generation = ");
            q.bind(generation)
                .push(" WHERE id = ")
                .bind(router.to_string())
                .push(" AND agent_id = ")
                .bind(agent.to_string())
                .push(" AND stored_generation < ")
                .bind(generation);
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }

    fn agent_audit_row(
        tenant: TenantId,
        agent: AgentId,
        name: &str,
        seq: u64,
        router: Option<RouterId>,
        rec: &AuditRecord,
    ) -> Result<Sql, DbError> {
        // Params arrive redacted; redact again so a sensitive key from any agent stays out.
        let params: BTreeMap<&str, &str> = rec
            .params
            .iter()
            .map(|(k, v)| (k, if is_sensitive_key(k) { REDACTED } else { v }))
            .collect();
        let params = serde_json::to_string(&params).map_err(|e| DbError::Corrupt(e.to_string()))?;
        let error = rec
            .error
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| DbError::Corrupt(e.to_string()))?;
        let status = match rec.status {
            AuditStatus::Succeeded => "succeeded",
            AuditStatus::Failed => "failed",
        };
        let mut q = Sql::new(
            "INSERT INTO audit (id, tenant_id, router_id, at, actor, action, params, status, error, \
             agent_id, seq, job_id, generation, duration_ms) VALUES (",
        );
        q.bind(uuid::Uuid::now_v7().to_string())
            .push(", ")
            .bind(tenant.to_string())
            .push(", ")
            .bind(router.map(|r| r.to_string()))
            .push(", ")
            .bind(rec.at.as_millis())
            .push(", ")
            .bind(format!("agent:{name}"))
            .push(", ")
            .bind(rec.action.clone())
            .push(", ")
            .bind(params)
            .push(", ")
            .bind(status.to_owned())
            .push(", ")
            .bind(error)
            .push(", ")
            .bind(agent.to_string())
            .push(", ")
            .bind(to_i64(seq))
            .push(", ")
            .bind(rec.job_id.map(|j| j.to_string()))
            .push(", ")
            .bind(rec.generation.map(to_i64))
            .push(", ")
            .bind(to_i64(rec.duration_ms))
            .push(")");
        Ok(q)
    }

    async fn commit_records_once(
        &self,
        agent: AgentId,
        records: &[(u64, OutboxRecord)],
    ) -> Result<Option<u64>, DbError> {
        let mut tx = self.begin().await?;
        let (tenant, name, committed) = agent_row(&mut *tx, agent)
            .await?
            .ok_or(DbError::NotFound("agent"))?;
        let committed = u64::try_from(committed).unwrap_or(0);
        let mut next = committed;
        let (mut telemetry, mut drift, mut dropped) = (0i64, 0i64, 0i64);
        // The agent's own routers: records naming another router are not attached to it.
        // Drift of a deleted router is not kept (nobody can act on it any more).
        let mut q = Sql::new("SELECT id, deleted_at FROM routers WHERE agent_id = ");
        q.bind(agent.to_string());
        let mut own = BTreeSet::new();
        let mut live = BTreeSet::new();
        for row in q.fetch_all(&mut *tx).await? {
            let id: RouterId = row.parse("id")?;
            own.insert(id);
            if row.opt_int("deleted_at")?.is_none() {
                live.insert(id);
            }
        }
        let mut health = super::health::Batch::for_agent(agent);
        for (seq, record) in records {
            if *seq <= next {
                continue;
            }
            if *seq != next + 1 {
                return Err(DbError::Invalid(format!(
                    "outbox seq {seq} does not follow {next}: records must be contiguous"
                )));
            }
            next = *seq;
            match record {
                OutboxRecord::Audit(rec) => {
                    let router = rec.router_id.filter(|r| own.contains(r));
                    Self::agent_audit_row(tenant, agent, &name, *seq, router, rec)?
                        .execute(&mut *tx)
                        .await?;
                }
                OutboxRecord::JobUpdate(u) => {
                    let error = u
                        .error
                        .as_ref()
                        .map(serde_json::to_string)
                        .transpose()
                        .map_err(|e| DbError::Corrupt(e.to_string()))?;
                    let mut q = Sql::new("UPDATE jobs SET status = ");
                    q.bind(status_name(u.status).to_owned())
                        .push(", attempts = ")
                        .bind(i64::from(u.attempts))
                        .push(", error = ")
                        .bind(error)
                        .push(", detail = ")
                        .bind(u.detail.clone())
                        .push(", updated_at = ")
                        .bind(u.at.as_millis());
                    match u.progress {
                        Some(p) => {
                            q.push(", progress_done = ")
                                .bind(to_i64(p.done))
                                .push(", progress_total = ")
                                .bind(to_i64(p.total));
                        }
                        None if u.status == tikfleet_shared::job::JobStatus::Succeeded => {
                            q.push(", progress_done = progress_total");
                        }
                        None => {}
                    }
                    q.push(" WHERE id = ").bind(u.job_id.to_string());
                    if u.status != tikfleet_shared::job::JobStatus::Succeeded {
                        // Staff cancelled it: an update the agent wrote before the cancel
                        // reached it (running, retrying, or failing the attempt it was in)
                        // does not bring it back. Only a success lands: the job did run
                        // before the cancel arrived, and the router has its effect.
                        q.push(" AND status <> 'cancelled'");
                    }
                    q.push(" AND tenant_id = ")
                        .bind(tenant.to_string())
                        .push(" AND router_id IN (SELECT id FROM routers WHERE agent_id = ")
                        .bind(agent.to_string())
                        .push(")");
                    q.execute(&mut *tx).await?;
                    // A failed rotation or lockdown alerts the tenant's admins.
                    super::credentials::on_job_update(&mut tx, self, tenant, u, self.now()).await?;
                }
                OutboxRecord::Applied(a) => {
                    let error = a
                        .error
                        .as_ref()
                        .map(serde_json::to_string)
                        .transpose()
                        .map_err(|e| DbError::Corrupt(e.to_string()))?;
                    let generation = to_i64(a.generation);
                    let mut q = Sql::new("UPDATE routers SET apply_error = ");
                    q.bind(error)
                        .push(", conflicts = ")
                        .bind(i64::from(a.conflicts));
                    if a.error.is_none() {
                        q.push(", applied_generation = CASE WHEN applied_generation < ")
                            .bind(generation)
                            .push(" THEN ")
                            .bind(generation)
                            .push(" ELSE applied_generation END");
                        // The pass is done: its progress reads done = total (0 of 0 when
                        // the agent sent no progress for this generation). A failed pass
                        // keeps the progress where it stopped.
                        let newer = |q: &mut Sql| {
                            q.push(" WHEN progress_generation IS NULL OR progress_generation < ")
                                .bind(generation);
                        };
                        q.push(", progress_done = CASE WHEN progress_generation = ")
                            .bind(generation)
                            .push(" THEN progress_total");
                        newer(&mut q);
                        q.push(" THEN 0 ELSE progress_done END, progress_total = CASE");
                        newer(&mut q);
                        q.push(" THEN 0 ELSE progress_total END, progress_at = CASE");
                        newer(&mut q);
                        q.push(" OR progress_generation = ")
                            .bind(generation)
                            .push(" THEN ")
                            .bind(a.at.as_millis())
                            .push(" ELSE progress_at END, progress_generation = CASE");
                        newer(&mut q);
                        q.push(" THEN ")
                            .bind(generation)
                            .push(" ELSE progress_generation END");
                    }
                    q.push(" WHERE id = ")
                        .bind(a.router_id.to_string())
                        .push(" AND agent_id = ")
                        .bind(agent.to_string());
                    q.execute(&mut *tx).await?;
                }
                OutboxRecord::Telemetry(t) => {
                    telemetry += 1;
                    // Stored set-based after the loop (db/health.rs): one insert of samples
                    // and one update per router, however many samples the batch holds.
                    health.push(t, &own);
                }
                OutboxRecord::Drift(report) => {
                    drift += 1;
                    if live.contains(&report.router_id) {
                        super::drift::ingest_report(&mut tx, tenant, agent, &name, report).await?;
                    }
                }
                OutboxRecord::Progress(p) => {
                    // A report about an older generation than the one shown is stale.
                    let generation = to_i64(p.generation);
                    let mut q = Sql::new("UPDATE routers SET progress_generation = ");
                    q.bind(generation)
                        .push(", progress_done = ")
                        .bind(to_i64(p.done))
                        .push(", progress_total = ")
                        .bind(to_i64(p.total))
                        .push(", progress_at = ")
                        .bind(p.at.as_millis())
                        .push(" WHERE id = ")
                        .bind(p.router_id.to_string())
                        .push(" AND agent_id = ")
                        .bind(agent.to_string())
                        .push(" AND (progress_generation IS NULL OR progress_generation <= ")
                        .bind(generation)
                        .push(")");
                    q.execute(&mut *tx).await?;
                }
                OutboxRecord::Lifecycle(report) => {
                    if live.contains(&report.router_id) {
                        super::lifecycle::ingest_report(&mut tx, self, tenant, &name, report)
                            .await?;
                    }
                }
                OutboxRecord::BackupChunk(chunk) => {
                    if own.contains(&chunk.router_id) {
                        super::backups::ingest_chunk(&mut tx, tenant, self.now(), chunk).await?;
                    }
                }
                OutboxRecord::Dropped { .. } => dropped += 1,
            }
        }
        if next == committed {
            return Ok(Some(committed));
        }
        health.store(&mut tx, tenant, self.backend()).await?;
        let mut q = Sql::new("UPDATE agents SET records_committed = ");
        q.bind(to_i64(next))
            .push(", telemetry_records = telemetry_records + ")
            .bind(telemetry)
            .push(", drift_records = drift_records + ")
            .bind(drift)
            .push(", dropped_records = dropped_records + ")
            .bind(dropped)
            .push(" WHERE id = ")
            .bind(agent.to_string())
            .push(" AND records_committed = ")
            .bind(to_i64(committed));
        if q.execute(&mut *tx).await?.rows_affected() != 1 {
            // Another commit for this agent won the race: start again from its seq.
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(next))
    }
}

impl HubStore for Db {
    async fn backup_part(
        &self,
        agent: AgentId,
        backup_id: &str,
        offset: u64,
        max: usize,
    ) -> anyhow::Result<Option<crate::hub::BackupSlice>> {
        let range = self
            .backup_range_for_agent(agent, backup_id, offset, max)
            .await?;
        Ok(range.map(|r| crate::hub::BackupSlice {
            total: r.total,
            data: r.data,
        }))
    }

    async fn agent_identity(&self, agent: AgentId) -> anyhow::Result<Option<AgentIdentity>> {
        let mut q = Sql::new("SELECT tenant_id, name, revoked_at FROM agents WHERE id = ");
        q.bind(agent.to_string());
        let Some(row) = q.fetch_optional(self.pool()).await? else {
            return Ok(None);
        };
        let mut q = Sql::new(
            "SELECT key_id, public_key FROM agent_keys WHERE retired_at IS NULL AND agent_id = ",
        );
        q.bind(agent.to_string()).push(" ORDER BY created_at");
        let keys = q
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|k| {
                Ok(AgentKey {
                    key_id: k.text("key_id")?,
                    public_key: STANDARD
                        .decode(k.text("public_key")?)
                        .map_err(|_| DbError::Corrupt("public_key".into()))?,
                })
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        Ok(Some(AgentIdentity {
            agent_id: agent,
            tenant_id: row.parse("tenant_id")?,
            name: row.text("name")?,
            keys,
            revoked: row.opt_int("revoked_at")?.is_some(),
        }))
    }

    async fn agent_connected(
        &self,
        agent: AgentId,
        at: UnixMillis,
        agent_version: &str,
        routers: &[RouterGenerations],
    ) -> anyhow::Result<()> {
        let mut tx = self.begin().await?;
        let mut q = Sql::new("UPDATE agents SET connected = 1, last_seen = ");
        q.bind(at.as_millis())
            .push(", agent_version = ")
            .bind(agent_version.to_owned())
            .push(" WHERE id = ")
            .bind(agent.to_string());
        q.execute(&mut *tx).await?;
        for r in routers {
            let mut q = Sql::new("UPDATE routers SET stored_generation = ");
            q.bind(to_i64(r.stored))
                .push(", applied_generation = ")
                .bind(to_i64(r.applied))
                .push(" WHERE id = ")
                .bind(r.router_id.to_string())
                .push(" AND agent_id = ")
                .bind(agent.to_string());
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn agent_disconnected(&self, agent: AgentId, at: UnixMillis) -> anyhow::Result<()> {
        let mut q = Sql::new("UPDATE agents SET connected = 0, last_seen = ");
        q.bind(at.as_millis())
            .push(" WHERE id = ")
            .bind(agent.to_string());
        q.execute(self.pool()).await?;
        Ok(())
    }

    async fn routers_for_agent(&self, agent: AgentId) -> anyhow::Result<Vec<RouterForAgent>> {
        let mut conn = self.pool().acquire().await?;
        let routers = Self::hub_routers(&mut conn, &[agent]).await?;
        Ok(routers.into_iter().map(|r| r.router).collect())
    }

    async fn desired_states(
        &self,
        agent: AgentId,
        known: &[RouterGenerations],
    ) -> anyhow::Result<Vec<DesiredState>> {
        let mut conn = self.pool().acquire().await?;
        let routers = Self::hub_routers(&mut conn, &[agent]).await?;
        Ok(self.newer_states(&mut conn, &routers, known).await?)
    }

    async fn undelivered_jobs(&self, agent: AgentId) -> anyhow::Result<Vec<Job>> {
        let mut conn = self.pool().acquire().await?;
        Ok(self.hub_jobs(&mut conn, &[agent]).await?)
    }

    async fn undelivered_cancels(&self, agent: AgentId) -> anyhow::Result<Vec<JobId>> {
        let mut conn = self.pool().acquire().await?;
        let cancels = Self::hub_cancels(&mut conn, &[agent]).await?;
        Ok(cancels.into_iter().map(|(_, job)| job).collect())
    }

    async fn push_reads(&self, requests: &[PushRequest]) -> anyhow::Result<Vec<PushRead>> {
        let mut conn = self.pool().acquire().await?;
        let mut agents: Vec<AgentId> = requests.iter().map(|r| r.agent).collect();
        agents.sort_unstable();
        agents.dedup();
        let routers = Self::hub_routers(&mut conn, &agents).await?;
        let mut by_agent: HashMap<AgentId, Vec<&HubRouter>> = HashMap::new();
        for r in &routers {
            by_agent.entry(r.agent).or_default().push(r);
        }
        let owner: HashMap<RouterId, AgentId> = routers
            .iter()
            .map(|r| (r.router.router_id, r.agent))
            .collect();
        let mut jobs: HashMap<AgentId, Vec<Job>> = HashMap::new();
        for job in self.hub_jobs(&mut conn, &agents).await? {
            if let Some(agent) = owner.get(&job.router_id) {
                jobs.entry(*agent).or_default().push(job);
            }
        }
        let mut cancels: HashMap<AgentId, Vec<JobId>> = HashMap::new();
        for (router, job) in Self::hub_cancels(&mut conn, &agents).await? {
            if let Some(agent) = owner.get(&router) {
                cancels.entry(*agent).or_default().push(job);
            }
        }
        // Desired states: one compile pass over every router some request needs.
        let none = Vec::new();
        let mut wanted: Vec<Vec<RouterId>> = Vec::with_capacity(requests.len());
        let mut targets = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for request in requests {
            let known: HashMap<RouterId, u64> = request
                .known
                .iter()
                .map(|g| (g.router_id, g.stored))
                .collect();
            let mine = by_agent.get(&request.agent).unwrap_or(&none);
            let newer: Vec<RouterId> = mine
                .iter()
                .filter(|r| {
                    !r.router.removed
                        && r.generation > known.get(&r.router.router_id).copied().unwrap_or(0)
                })
                .map(|r| {
                    if seen.insert(r.router.router_id) {
                        targets.push((r.router.router_id, r.router.tenant_id, r.generation));
                    }
                    r.router.router_id
                })
                .collect();
            wanted.push(newer);
        }
        let compiled: HashMap<RouterId, DesiredState> = self
            .compile_routers(&mut conn, &targets)
            .await?
            .into_iter()
            .map(|state| (state.router_id, state))
            .collect();
        Ok(requests
            .iter()
            .zip(wanted)
            .map(|(request, newer)| PushRead {
                routers: by_agent
                    .get(&request.agent)
                    .unwrap_or(&none)
                    .iter()
                    .map(|r| r.router.clone())
                    .collect(),
                states: newer
                    .iter()
                    .filter_map(|router| compiled.get(router).cloned())
                    .collect(),
                jobs: jobs.get(&request.agent).cloned().unwrap_or_default(),
                cancels: cancels.get(&request.agent).cloned().unwrap_or_default(),
            })
            .collect())
    }

    async fn jobs_delivered(&self, agent: AgentId, jobs: &[JobId]) -> anyhow::Result<()> {
        self.record_deliveries(&[Delivered {
            agent,
            jobs: jobs.to_vec(),
            states: Vec::new(),
            cancels: Vec::new(),
        }])
        .await
    }

    async fn states_stored(
        &self,
        agent: AgentId,
        states: &[(RouterId, u64)],
    ) -> anyhow::Result<()> {
        self.record_deliveries(&[Delivered {
            agent,
            jobs: Vec::new(),
            states: states.to_vec(),
            cancels: Vec::new(),
        }])
        .await
    }

    async fn cancels_delivered(&self, agent: AgentId, jobs: &[JobId]) -> anyhow::Result<()> {
        self.record_deliveries(&[Delivered {
            agent,
            jobs: Vec::new(),
            states: Vec::new(),
            cancels: jobs.to_vec(),
        }])
        .await
    }

    async fn record_deliveries(&self, batch: &[Delivered]) -> anyhow::Result<()> {
        if batch
            .iter()
            .all(|d| d.jobs.is_empty() && d.states.is_empty() && d.cancels.is_empty())
        {
            return Ok(());
        }
        // One transaction for every agent in the batch: on SQLite one write lock taken once
        // instead of once per ack.
        let now = self.now();
        let mut tx = self.begin().await?;
        for d in batch {
            if !d.jobs.is_empty() {
                Self::mark_jobs(&mut tx, d.agent, &d.jobs, "delivered_at", "", now).await?;
            }
            if !d.states.is_empty() {
                Self::mark_states_stored(&mut tx, d.agent, &d.states).await?;
            }
            if !d.cancels.is_empty() {
                Self::mark_jobs(
                    &mut tx,
                    d.agent,
                    &d.cancels,
                    "cancel_delivered_at",
                    " AND status = 'cancelled'",
                    now,
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn records_committed(&self, agent: AgentId) -> anyhow::Result<u64> {
        let row = agent_row(self.pool(), agent).await?;
        Ok(row.map_or(0, |(_, _, c)| u64::try_from(c).unwrap_or(0)))
    }

    async fn commit_records(
        &self,
        agent: AgentId,
        records: &[(u64, OutboxRecord)],
    ) -> anyhow::Result<u64> {
        for _ in 0..8 {
            match self.commit_records_once(agent, records).await {
                Ok(Some(seq)) => {
                    // Lifecycle reports queue notices and alerts: send them now.
                    if records
                        .iter()
                        .any(|(_, r)| matches!(r, OutboxRecord::Lifecycle(_)))
                    {
                        self.wake_notifier();
                    }
                    return Ok(seq);
                }
                Ok(None) => {}
                // On PostgreSQL a concurrent commit of the same records can also lose on a
                // unique index (an audit seq, an unresolved drift item) before it reaches
                // the seq check: start again from the winner's seq.
                Err(DbError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!(
            "could not commit the outbox records of agent {agent}: concurrent commits kept winning"
        )
    }
}
