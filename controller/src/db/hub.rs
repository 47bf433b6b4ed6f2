//! The agent hub's storage ([`HubStore`]) on the SQL database.
//!
//! Every query here is scoped by the agent it is called for: routers by `agent_id` (and so
//! the agent's tenant), jobs by their router's agent. [`HubStore::commit_records`] applies
//! an agent's outbox records in one transaction together with the new committed seq, and
//! skips seqs at or below it, so a resent record takes effect once.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tikfleet_shared::domain::DesiredState;
use tikfleet_shared::job::Job;
use tikfleet_shared::protocol::RouterGenerations;
use tikfleet_shared::record::{
    AuditRecord, AuditStatus, OutboxRecord, TelemetrySample, is_sensitive_key,
};
use tikfleet_shared::secret::REDACTED;
use tikfleet_shared::{AgentId, JobId, RouterId, TenantId, UnixMillis};

use super::jobs::{JOB_COLUMNS, status_name, wire_job};
use super::routers::parse_tls;
use super::sql::Sql;
use super::subscribers::{SUBSCRIBER_COLUMNS, subscriber_with_password};
use super::{Db, DbError, RowExt as _, to_i64};
use crate::compile;
use crate::hub::{AgentIdentity, AgentKey, HubStore, RouterForAgent};

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

impl Db {
    async fn compile_router(
        &self,
        conn: &mut sqlx::AnyConnection,
        router: RouterId,
        tenant: TenantId,
        generation: u64,
    ) -> Result<DesiredState, DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(SUBSCRIBER_COLUMNS)
            .push(" FROM subscribers WHERE router_id = ")
            .bind(router.to_string())
            .push(" AND tenant_id = ")
            .bind(tenant.to_string());
        let rows = q.fetch_all(&mut *conn).await?;
        let subscribers = rows
            .iter()
            .map(|r| subscriber_with_password(self.key(), r))
            .collect::<Result<Vec<_>, _>>()?;
        let mut q = Sql::new("SELECT ");
        q.push(super::plans::PLAN_COLUMNS)
            .push(" FROM plans WHERE tenant_id = ")
            .bind(tenant.to_string())
            .push(" AND id IN (SELECT plan_id FROM subscribers WHERE router_id = ")
            .bind(router.to_string())
            .push(")");
        let plans = q
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| super::plans::plan(r).map(|p| (p.id, p)))
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        Ok(compile::desired_state(
            &compile::RouterRows {
                router_id: router,
                tenant_id: tenant,
                generation,
                plans: &plans,
                subscribers: &subscribers,
            },
            self.now(),
        ))
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
        let mut q = Sql::new("SELECT id FROM routers WHERE agent_id = ");
        q.bind(agent.to_string());
        let own: std::collections::BTreeSet<RouterId> = q
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.parse("id"))
            .collect::<Result<_, _>>()?;
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
                    q.push(" WHERE id = ")
                        .bind(u.job_id.to_string())
                        .push(" AND tenant_id = ")
                        .bind(tenant.to_string())
                        .push(" AND router_id IN (SELECT id FROM routers WHERE agent_id = ")
                        .bind(agent.to_string())
                        .push(")");
                    q.execute(&mut *tx).await?;
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
                    q.bind(error);
                    if a.error.is_none() {
                        q.push(", applied_generation = CASE WHEN applied_generation < ")
                            .bind(generation)
                            .push(" THEN ")
                            .bind(generation)
                            .push(" ELSE applied_generation END");
                    }
                    q.push(" WHERE id = ")
                        .bind(a.router_id.to_string())
                        .push(" AND agent_id = ")
                        .bind(agent.to_string());
                    q.execute(&mut *tx).await?;
                }
                OutboxRecord::Telemetry(t) => {
                    telemetry += 1;
                    let (router, status, version) = match &t.sample {
                        TelemetrySample::Router(s) => {
                            (Some(s.router_id), "online", s.routeros_version.clone())
                        }
                        TelemetrySample::RouterUnreachable { router_id, .. } => {
                            (Some(*router_id), "unreachable", None)
                        }
                        TelemetrySample::Host(_) => (None, "", None),
                    };
                    if let Some(router) = router.filter(|r| own.contains(r)) {
                        let mut q = Sql::new("UPDATE routers SET status = ");
                        q.bind(status.to_owned());
                        if let Some(v) = version {
                            q.push(", ros_version = ").bind(v);
                        }
                        q.push(" WHERE id = ").bind(router.to_string());
                        q.execute(&mut *tx).await?;
                    }
                }
                OutboxRecord::Drift(_) => drift += 1,
                OutboxRecord::Dropped { .. } => dropped += 1,
            }
        }
        if next == committed {
            return Ok(Some(committed));
        }
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
        let mut q = Sql::new(
            "SELECT r.id, r.tenant_id, r.name, r.address, r.api_port, r.ssh_port, r.tls, r.username, \
             r.sealed_password, r.revision, r.deleted_at FROM routers r JOIN agents a ON a.id = r.agent_id \
             WHERE r.tenant_id = a.tenant_id AND r.agent_id = ",
        );
        q.bind(agent.to_string()).push(" ORDER BY r.id");
        let rows = q.fetch_all(self.pool()).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let port = |c: &str| -> Result<u16, DbError> {
                u16::try_from(row.int(c)?).map_err(|_| DbError::Corrupt(c.into()))
            };
            out.push(RouterForAgent {
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
            });
        }
        Ok(out)
    }

    async fn desired_states(
        &self,
        agent: AgentId,
        known: &[RouterGenerations],
    ) -> anyhow::Result<Vec<DesiredState>> {
        let known: BTreeMap<RouterId, u64> =
            known.iter().map(|r| (r.router_id, r.stored)).collect();
        let mut conn = self.pool().acquire().await?;
        let mut q = Sql::new(
            "SELECT r.id, r.tenant_id, r.generation FROM routers r JOIN agents a ON a.id = r.agent_id \
             WHERE r.deleted_at IS NULL AND r.tenant_id = a.tenant_id AND r.agent_id = ",
        );
        q.bind(agent.to_string()).push(" ORDER BY r.id");
        let rows = q.fetch_all(&mut *conn).await?;
        let mut out = Vec::new();
        for row in rows {
            let router: RouterId = row.parse("id")?;
            let generation = row.uint("generation")?;
            if generation <= known.get(&router).copied().unwrap_or(0) {
                continue;
            }
            let tenant: TenantId = row.parse("tenant_id")?;
            out.push(
                self.compile_router(&mut conn, router, tenant, generation)
                    .await?,
            );
        }
        Ok(out)
    }

    async fn undelivered_jobs(&self, agent: AgentId) -> anyhow::Result<Vec<Job>> {
        let mut q = Sql::new("SELECT ");
        q.push(JOB_COLUMNS)
            .push(
                " FROM jobs WHERE delivered_at IS NULL AND status = 'queued' AND router_id IN \
                 (SELECT r.id FROM routers r JOIN agents a ON a.id = r.agent_id \
                 WHERE r.deleted_at IS NULL AND r.tenant_id = a.tenant_id AND r.agent_id = ",
            )
            .bind(agent.to_string())
            .push(") ORDER BY created_at, id");
        let rows = q.fetch_all(self.pool()).await?;
        Ok(rows
            .iter()
            .map(|r| wire_job(self.key(), r))
            .collect::<Result<Vec<_>, _>>()?)
    }

    async fn jobs_delivered(&self, agent: AgentId, jobs: &[JobId]) -> anyhow::Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let now = self.now();
        let mut tx = self.begin().await?;
        for chunk in jobs.chunks(200) {
            let mut q = Sql::new("UPDATE jobs SET delivered_at = ");
            q.bind(now.as_millis())
                .push(" WHERE delivered_at IS NULL AND id IN (");
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                q.bind(id.to_string());
            }
            q.push(") AND router_id IN (SELECT id FROM routers WHERE agent_id = ")
                .bind(agent.to_string())
                .push(")");
            q.execute(&mut *tx).await?;
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
            if let Some(seq) = self.commit_records_once(agent, records).await? {
                return Ok(seq);
            }
        }
        anyhow::bail!(
            "could not commit the outbox records of agent {agent}: concurrent commits kept winning"
        )
    }
}
