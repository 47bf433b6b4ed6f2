//! Agents: enrollment with a one-time token, identity keys and their rotation, revocation,
//! and each agent's latest host sample.
//!
//! Enrollment and rotation are not staff actions: the enrollment token (or a signature by the
//! agent's current key) is the authority. Their audit rows name the agent as actor.
//!
//! The host sample (the site box's CPU, memory and disk, the outbox's depth and cap, queued
//! jobs) arrives as telemetry in the hub's record transaction; the health batch
//! ([`super::health`]) hands the batch's latest one to [`store_host_sample`], which keeps it
//! on the agent's row unless a newer one is there. The agent view and the
//! `outbox_near_cap` alert rule ([`super::alerts`]) read it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ED25519, UnparsedPublicKey};
use tikfleet_shared::enroll::{key_id, rotate_signing_payload};
use tikfleet_shared::record::{AuditParams, HostSample};
use tikfleet_shared::{AgentId, TenantId, UnixMillis};

use super::sql::Sql;
use super::{
    Db, DbError, Page, PageRequest, Refusal, RowExt as _, Scope, Staff, audit_staff, to_i64,
};
use crate::crypto::token_hash;

/// How far a rotation's signing time may be from the controller's clock.
pub const MAX_SIGNATURE_SKEW_MS: i64 = 5 * 60 * 1000;

/// An enrolled agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    /// Its id.
    pub id: AgentId,
    /// The one tenant it serves.
    pub tenant_id: TenantId,
    /// Its name.
    pub name: String,
    /// Its software version (from enrollment, then from each hello).
    pub agent_version: String,
    /// Whether it is connected to the hub now.
    pub connected: bool,
    /// Its last hello or disconnect.
    pub last_seen: Option<UnixMillis>,
    /// When it enrolled.
    pub created_at: UnixMillis,
    /// When it was revoked, if it was.
    pub revoked_at: Option<UnixMillis>,
    /// X25519 seal key router passwords are sealed to.
    pub seal_key: Vec<u8>,
    /// Its host as its latest host sample reported it (`None` until the first arrives).
    pub host: Option<AgentHost>,
}

/// An agent's site box and queues, from its latest host sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentHost {
    /// When the agent took the sample.
    pub sampled_at: UnixMillis,
    /// CPU load in percent (0–100).
    pub cpu_load_percent: u8,
    /// Free memory in bytes.
    pub free_memory_bytes: u64,
    /// Total memory in bytes.
    pub total_memory_bytes: u64,
    /// Uptime in seconds.
    pub uptime_secs: u64,
    /// Free disk in the agent's data folder, in bytes.
    pub free_disk_bytes: u64,
    /// Total disk in the agent's data folder, in bytes.
    pub total_disk_bytes: u64,
    /// Records waiting in the outbox.
    pub outbox_records: u64,
    /// Bytes the outbox uses.
    pub outbox_bytes: u64,
    /// The outbox's byte cap (`None`: the agent does not report it).
    pub outbox_max_bytes: Option<u64>,
    /// Telemetry records the outbox has dropped under its caps, ever (`None`: not reported).
    pub telemetry_dropped: Option<u64>,
    /// Jobs waiting in the agent's queue.
    pub queued_jobs: u64,
}

/// What an enrolling agent presents (already decoded at the edge).
#[derive(Clone, Debug)]
pub struct Enrollment {
    /// The one-time token.
    pub token: String,
    /// The agent's name.
    pub name: String,
    /// Ed25519 identity public key.
    pub public_key: [u8; 32],
    /// X25519 seal public key.
    pub seal_key: [u8; 32],
    /// Its software version.
    pub agent_version: String,
}

/// A key rotation request (already decoded at the edge).
#[derive(Clone, Debug)]
pub struct Rotation {
    /// The current key's id.
    pub key_id: String,
    /// The new Ed25519 public key.
    pub new_public_key: [u8; 32],
    /// When the agent signed, Unix milliseconds.
    pub signed_at: u64,
    /// The signature by the current key.
    pub signature: Vec<u8>,
}

pub(crate) const AGENT_COLUMNS: &str = "id, tenant_id, name, agent_version, connected, last_seen, created_at, revoked_at, seal_key, \
     host_at, host_cpu, host_mem_free, host_mem_total, host_uptime, host_disk_free, \
     host_disk_total, host_outbox_records, host_outbox_bytes, host_outbox_max, \
     host_telemetry_dropped, host_queued_jobs";

/// The host columns of an agent row (see [`AGENT_COLUMNS`]); `None` before the first sample.
fn host(row: &sqlx::any::AnyRow) -> Result<Option<AgentHost>, DbError> {
    let Some(at) = row.opt_millis("host_at")? else {
        return Ok(None);
    };
    // Written together with `host_at`: NULL here is a corrupt row, reported as such.
    let num = |column: &str| {
        row.opt_int(column)?
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| DbError::Corrupt(format!("agents.{column}")))
    };
    let opt = |column: &str| -> Result<Option<u64>, DbError> {
        Ok(row.opt_int(column)?.and_then(|v| u64::try_from(v).ok()))
    };
    Ok(Some(AgentHost {
        sampled_at: at,
        cpu_load_percent: u8::try_from(num("host_cpu")?.min(100)).unwrap_or(100),
        free_memory_bytes: num("host_mem_free")?,
        total_memory_bytes: num("host_mem_total")?,
        uptime_secs: num("host_uptime")?,
        free_disk_bytes: num("host_disk_free")?,
        total_disk_bytes: num("host_disk_total")?,
        outbox_records: num("host_outbox_records")?,
        outbox_bytes: num("host_outbox_bytes")?,
        outbox_max_bytes: opt("host_outbox_max")?,
        telemetry_dropped: opt("host_telemetry_dropped")?,
        queued_jobs: num("host_queued_jobs")?,
    }))
}

/// Keeps `sample`, taken at `at`, as `agent`'s latest host sample, unless the row already
/// holds a newer one. Called from the hub's record transaction for the newest host sample
/// of a committed batch; `agent` is the session's agent (the sample's own `agent_id` is not
/// trusted), and the update is scoped to `tenant`.
pub(crate) async fn store_host_sample(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    agent: AgentId,
    at: i64,
    sample: &HostSample,
) -> Result<(), DbError> {
    let mut q = Sql::new("UPDATE agents SET host_at = ");
    q.bind(at)
        .push(", host_cpu = ")
        .bind(i64::from(sample.cpu_load_percent.min(100)))
        .push(", host_mem_free = ")
        .bind(to_i64(sample.free_memory_bytes))
        .push(", host_mem_total = ")
        .bind(to_i64(sample.total_memory_bytes))
        .push(", host_uptime = ")
        .bind(to_i64(sample.uptime_secs))
        .push(", host_disk_free = ")
        .bind(to_i64(sample.free_disk_bytes))
        .push(", host_disk_total = ")
        .bind(to_i64(sample.total_disk_bytes))
        .push(", host_outbox_records = ")
        .bind(to_i64(sample.outbox_records))
        .push(", host_outbox_bytes = ")
        .bind(to_i64(sample.outbox_bytes))
        .push(", host_outbox_max = ")
        .bind(sample.outbox_max_bytes.map(to_i64))
        .push(", host_telemetry_dropped = ")
        .bind(sample.telemetry_dropped.map(to_i64))
        .push(", host_queued_jobs = ")
        .bind(to_i64(sample.queued_jobs))
        .push(" WHERE id = ")
        .bind(agent.to_string())
        .push(" AND tenant_id = ")
        .bind(tenant.to_string())
        .push(" AND (host_at IS NULL OR host_at <= ")
        .bind(at)
        .push(")");
    q.execute(&mut **tx).await?;
    Ok(())
}

pub(crate) fn agent(row: &sqlx::any::AnyRow) -> Result<Agent, DbError> {
    Ok(Agent {
        id: row.parse("id")?,
        tenant_id: row.parse("tenant_id")?,
        name: row.text("name")?,
        agent_version: row.text("agent_version")?,
        connected: row.int("connected")? != 0,
        last_seen: row.opt_millis("last_seen")?,
        created_at: row.millis("created_at")?,
        revoked_at: row.opt_millis("revoked_at")?,
        seal_key: STANDARD
            .decode(row.text("seal_key")?)
            .map_err(|_| DbError::Corrupt("seal_key".into()))?,
        host: host(row)?,
    })
}

impl Db {
    /// Enrolls an agent with a one-time token: records its identity and seal keys and uses
    /// the token up. Returns the agent, its tenant and its key id.
    ///
    /// # Errors
    /// The token is unknown, used or expired ([`DbError::Refused`]), or the database failed.
    pub async fn enroll_agent(
        &self,
        e: &Enrollment,
    ) -> Result<(AgentId, TenantId, String), DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let mut q = Sql::new(
            "SELECT id, tenant_id, expires_at, used_at FROM enrollment_tokens WHERE token_hash = ",
        );
        q.bind(token_hash(&e.token));
        let row = q
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(DbError::Refused(Refusal::TokenUnknown))?;
        if row.opt_int("used_at")?.is_some() {
            return Err(DbError::Refused(Refusal::TokenUsed));
        }
        if row.millis("expires_at")? <= now {
            return Err(DbError::Refused(Refusal::TokenExpired));
        }
        let token_id = row.text("id")?;
        let tenant: TenantId = row.parse("tenant_id")?;
        let agent = AgentId::new();
        let mut q = Sql::new("UPDATE enrollment_tokens SET used_at = ");
        q.bind(now.as_millis())
            .push(", used_by = ")
            .bind(agent.to_string())
            .push(" WHERE id = ")
            .bind(token_id.clone())
            .push(" AND used_at IS NULL");
        if q.execute(&mut *tx).await?.rows_affected() != 1 {
            // Another enrollment took it between our read and this write.
            return Err(DbError::Refused(Refusal::TokenUsed));
        }
        let mut q = Sql::new(
            "INSERT INTO agents (id, tenant_id, name, seal_key, agent_version, created_at) VALUES (",
        );
        q.bind(agent.to_string())
            .push(", ")
            .bind(tenant.to_string())
            .push(", ")
            .bind(e.name.clone())
            .push(", ")
            .bind(STANDARD.encode(e.seal_key))
            .push(", ")
            .bind(e.agent_version.clone())
            .push(", ")
            .bind(now.as_millis())
            .push(")");
        q.execute(&mut *tx).await?;
        let kid = key_id(&e.public_key);
        insert_key(&mut tx, agent, &kid, &e.public_key, now).await?;
        let mut params = AuditParams::new();
        params
            .insert("agent_id", agent.to_string())
            .insert("name", e.name.clone())
            .insert("key_id", kid.clone())
            .insert("enrollment_token_id", token_id)
            .insert("agent_version", e.agent_version.clone());
        audit_staff(
            &mut tx,
            now,
            Some(tenant),
            None,
            &format!("agent:{}", e.name),
            "agent.enroll",
            &params,
        )
        .await?;
        tx.commit().await?;
        Ok((agent, tenant, kid))
    }

    /// Replaces the agent's identity key after checking the current key's signature; the old
    /// key stops working at once. Returns the new key's id.
    ///
    /// # Errors
    /// Unknown agent, revoked agent, unknown key, stale or invalid signature, a new key equal
    /// to a registered one, or the database failed.
    pub async fn rotate_agent_key(&self, agent: AgentId, r: &Rotation) -> Result<String, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let mut q = Sql::new("SELECT ");
        q.push(AGENT_COLUMNS)
            .push(" FROM agents WHERE id = ")
            .bind(agent.to_string());
        let row = q
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(DbError::NotFound("agent"))?;
        let a = self::agent(&row)?;
        if a.revoked_at.is_some() {
            return Err(DbError::Refused(Refusal::AgentRevoked));
        }
        let mut q =
            Sql::new("SELECT public_key FROM agent_keys WHERE retired_at IS NULL AND agent_id = ");
        q.bind(agent.to_string())
            .push(" AND key_id = ")
            .bind(r.key_id.clone());
        let row = q
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(DbError::Refused(Refusal::KeyUnknown))?;
        let current = STANDARD
            .decode(row.text("public_key")?)
            .map_err(|_| DbError::Corrupt("public_key".into()))?;
        let signed_at = i64::try_from(r.signed_at).unwrap_or(i64::MAX);
        if (signed_at.saturating_sub(now.as_millis())).abs() > MAX_SIGNATURE_SKEW_MS {
            return Err(DbError::Refused(Refusal::SignatureStale));
        }
        let payload = rotate_signing_payload(agent, &r.new_public_key, r.signed_at);
        UnparsedPublicKey::new(&ED25519, &current)
            .verify(&payload, &r.signature)
            .map_err(|_| DbError::Refused(Refusal::SignatureInvalid))?;
        let new_kid = key_id(&r.new_public_key);
        let mut q = Sql::new("SELECT COUNT(*) AS n FROM agent_keys WHERE agent_id = ");
        q.bind(agent.to_string())
            .push(" AND key_id = ")
            .bind(new_kid.clone());
        if q.fetch_one(&mut *tx).await?.int("n")? > 0 {
            return Err(DbError::Conflict(
                "the new key is already registered for this agent; make a fresh key pair".into(),
            ));
        }
        let mut q = Sql::new("UPDATE agent_keys SET retired_at = ");
        q.bind(now.as_millis())
            .push(" WHERE retired_at IS NULL AND agent_id = ")
            .bind(agent.to_string());
        q.execute(&mut *tx).await?;
        insert_key(&mut tx, agent, &new_kid, &r.new_public_key, now).await?;
        let mut params = AuditParams::new();
        params
            .insert("agent_id", agent.to_string())
            .insert("old_key_id", r.key_id.clone())
            .insert("key_id", new_kid.clone());
        audit_staff(
            &mut tx,
            now,
            Some(a.tenant_id),
            None,
            &format!("agent:{}", a.name),
            "agent.key_rotate",
            &params,
        )
        .await?;
        tx.commit().await?;
        Ok(new_kid)
    }

    /// Agents visible in `scope`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn list_agents(
        &self,
        scope: &Scope,
        page: &PageRequest,
    ) -> Result<Page<Agent>, DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(AGENT_COLUMNS).push(" FROM agents WHERE 1 = 1");
        scope.filter(&mut q, "tenant_id");
        page.apply(&mut q, "id");
        let rows = q.fetch_all(self.pool()).await?;
        let items = rows.iter().map(agent).collect::<Result<Vec<_>, _>>()?;
        Ok(page.finish(items, |a| a.id.to_string()))
    }

    /// One agent, if visible in `scope`.
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn get_agent(&self, scope: &Scope, id: AgentId) -> Result<Agent, DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(AGENT_COLUMNS)
            .push(" FROM agents WHERE id = ")
            .bind(id.to_string());
        scope.filter(&mut q, "tenant_id");
        let row = q
            .fetch_optional(self.pool())
            .await?
            .ok_or(DbError::NotFound("agent"))?;
        agent(&row)
    }

    /// Revokes an agent: it is refused from now on, and a live session is closed (through
    /// [`AgentSignals::revoked`](crate::hub::AgentSignals::revoked)).
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn revoke_agent(&self, staff: &Staff, id: AgentId) -> Result<Agent, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let mut q = Sql::new("SELECT ");
        q.push(AGENT_COLUMNS)
            .push(" FROM agents WHERE id = ")
            .bind(id.to_string());
        staff.scope.filter(&mut q, "tenant_id");
        let row = q
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(DbError::NotFound("agent"))?;
        let mut a = agent(&row)?;
        if a.revoked_at.is_none() {
            let mut q = Sql::new("UPDATE agents SET revoked_at = ");
            q.bind(now.as_millis())
                .push(" WHERE id = ")
                .bind(id.to_string());
            q.execute(&mut *tx).await?;
            a.revoked_at = Some(now);
            let mut params = AuditParams::new();
            params
                .insert("agent_id", id.to_string())
                .insert("name", a.name.clone());
            audit_staff(
                &mut tx,
                now,
                Some(a.tenant_id),
                None,
                &staff.actor,
                "agent.revoke",
                &params,
            )
            .await?;
        }
        tx.commit().await?;
        self.signals().revoked(id);
        Ok(a)
    }
}

async fn insert_key(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    agent: AgentId,
    kid: &str,
    public_key: &[u8],
    now: UnixMillis,
) -> Result<(), DbError> {
    let mut q =
        Sql::new("INSERT INTO agent_keys (agent_id, key_id, public_key, created_at) VALUES (");
    q.bind(agent.to_string())
        .push(", ")
        .bind(kid.to_owned())
        .push(", ")
        .bind(STANDARD.encode(public_key))
        .push(", ")
        .bind(now.as_millis())
        .push(")");
    q.execute(&mut **tx).await?;
    Ok(())
}
