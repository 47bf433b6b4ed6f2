//! Routers: where they are, how to reach them, which agent serves them, and their
//! desired-state generations (desired, stored and applied by the agent).
//!
//! A router's password is sealed to its agent's seal key at once; only the ciphertext is
//! stored, which the controller cannot open. A deleted router stays as a tombstone so its
//! agent learns to forget it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tikfleet_shared::record::AuditParams;
use tikfleet_shared::{AgentId, RouterId, Secret, TenantId, UnixMillis};

use super::sql::Sql;
use super::{Db, DbError, Page, PageRequest, RowExt as _, Scope, Staff, audit_staff, unique_as};
use crate::hub::RouterTlsSetting;

/// A router as stored (the sealed password is not part of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Router {
    /// Its id.
    pub id: RouterId,
    /// Its tenant (its agent's).
    pub tenant_id: TenantId,
    /// The agent that serves it.
    pub agent_id: AgentId,
    /// Its name, unique in the tenant.
    pub name: String,
    /// Host name or address.
    pub address: String,
    /// API port.
    pub api_port: u16,
    /// SSH port.
    pub ssh_port: u16,
    /// TLS settings of the API.
    pub tls: RouterTlsSetting,
    /// Login name.
    pub username: String,
    /// RouterOS version, once an agent reported it.
    pub ros_version: Option<String>,
    /// `unknown`, `online` or `unreachable`, from the agent's probes.
    pub status: String,
    /// Bumped on every change of the row.
    pub revision: u64,
    /// The desired-state generation.
    pub generation: u64,
    /// The generation the agent has stored.
    pub stored_generation: u64,
    /// The generation the agent has applied.
    pub applied_generation: u64,
    /// Why the last apply did not reach the generation, if it did not (JSON `ErrorInfo`).
    pub apply_error: Option<String>,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it was deleted (a tombstone), if it was.
    pub deleted_at: Option<UnixMillis>,
    /// What the probes and version checks last said (db/health.rs).
    pub health: RouterHealth,
}

/// A router's last probe and version check, as the agent reported them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouterHealth {
    /// When a probe last reached it.
    pub last_seen: Option<UnixMillis>,
    /// Its uptime at that probe, in seconds.
    pub uptime_secs: Option<u64>,
    /// Update channel.
    pub ros_channel: Option<String>,
    /// The newest RouterOS the update check found.
    pub ros_latest: Option<String>,
    /// Whether a newer RouterOS exists (`None`: never checked, or the check failed).
    pub update_available: Option<bool>,
    /// Why the last update check could not tell.
    pub update_error: Option<String>,
    /// RouterBOARD firmware installed.
    pub firmware_current: Option<String>,
    /// RouterBOARD firmware the installed RouterOS brings.
    pub firmware_upgrade: Option<String>,
    /// Whether the firmware is older than the one RouterOS brings.
    pub firmware_outdated: Option<bool>,
    /// Board name.
    pub board: Option<String>,
    /// When versions were last checked.
    pub versions_at: Option<UnixMillis>,
    /// Whether the RouterOS version is older than the supported minimum (6.43).
    pub unsupported: bool,
}

/// A router to add.
#[derive(Clone, Debug)]
pub struct NewRouter {
    /// For admins: the tenant (must be the agent's); others leave it `None`.
    pub tenant_id: Option<TenantId>,
    /// The agent that serves it.
    pub agent_id: AgentId,
    /// Its name.
    pub name: String,
    /// Host name or address.
    pub address: String,
    /// API port.
    pub api_port: u16,
    /// SSH port.
    pub ssh_port: u16,
    /// TLS settings.
    pub tls: RouterTlsSetting,
    /// Login name.
    pub username: String,
    /// Login password: sealed to the agent at once, never stored in plain.
    pub password: Secret,
}

/// Changes to a router; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct RouterPatch {
    /// New name.
    pub name: Option<String>,
    /// New address.
    pub address: Option<String>,
    /// New API port.
    pub api_port: Option<u16>,
    /// New SSH port.
    pub ssh_port: Option<u16>,
    /// New TLS settings.
    pub tls: Option<RouterTlsSetting>,
    /// New login name.
    pub username: Option<String>,
    /// New password (sealed to the agent).
    pub password: Option<Secret>,
}

/// Desired versus agent-reported generations of a router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncState {
    /// The router.
    pub router_id: RouterId,
    /// The desired generation.
    pub generation: u64,
    /// What the agent has stored.
    pub stored_generation: u64,
    /// What the agent has applied.
    pub applied_generation: u64,
    /// Whether the router's agent is connected now.
    pub agent_connected: bool,
    /// The last reconcile progress the agent reported, if any.
    pub progress: Option<ReconcileProgress>,
    /// Desired items the last pass left alone because an administrator's item has their name.
    pub conflicts: u32,
    /// When the router was last compared with its desired state in full.
    pub last_drift_check_at: Option<UnixMillis>,
    /// Drift items of the router that are open.
    pub open_drift_items: u64,
}

/// A reconcile pass's progress over one generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReconcileProgress {
    /// The generation being applied.
    pub generation: u64,
    /// Items handled.
    pub done: u64,
    /// Items in the pass.
    pub total: u64,
    /// When the agent reported it.
    pub at: UnixMillis,
}

pub(crate) const ROUTER_COLUMNS: &str = "id, tenant_id, agent_id, name, address, api_port, ssh_port, tls, username, \
     ros_version, status, revision, generation, stored_generation, applied_generation, apply_error, \
     created_at, deleted_at, last_seen, uptime_secs, ros_channel, ros_latest, update_available, \
     update_error, firmware_current, firmware_upgrade, firmware_outdated, board, versions_at, \
     ros_unsupported";

/// The TLS setting's stored JSON.
pub(crate) fn tls_json(tls: &RouterTlsSetting) -> String {
    let v = match tls {
        RouterTlsSetting::Plain => serde_json::json!({"mode": "plain"}),
        RouterTlsSetting::Verify {
            ca_pem,
            server_name,
        } => {
            serde_json::json!({"mode": "verify", "ca_pem": ca_pem, "server_name": server_name})
        }
        RouterTlsSetting::Pin { sha256 } => serde_json::json!({"mode": "pin", "sha256": sha256}),
    };
    v.to_string()
}

/// Reads the stored TLS JSON back.
pub(crate) fn parse_tls(text: &str) -> Result<RouterTlsSetting, DbError> {
    let bad = || DbError::Corrupt("tls".into());
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| bad())?;
    let opt = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    match v.get("mode").and_then(|m| m.as_str()) {
        Some("plain") => Ok(RouterTlsSetting::Plain),
        Some("verify") => Ok(RouterTlsSetting::Verify {
            ca_pem: opt("ca_pem"),
            server_name: opt("server_name"),
        }),
        Some("pin") => Ok(RouterTlsSetting::Pin {
            sha256: opt("sha256").ok_or_else(bad)?,
        }),
        _ => Err(bad()),
    }
}

fn port(row: &sqlx::any::AnyRow, column: &str) -> Result<u16, DbError> {
    u16::try_from(row.int(column)?).map_err(|_| DbError::Corrupt(column.into()))
}

pub(crate) fn router(row: &sqlx::any::AnyRow) -> Result<Router, DbError> {
    Ok(Router {
        id: row.parse("id")?,
        tenant_id: row.parse("tenant_id")?,
        agent_id: row.parse("agent_id")?,
        name: row.text("name")?,
        address: row.text("address")?,
        api_port: port(row, "api_port")?,
        ssh_port: port(row, "ssh_port")?,
        tls: parse_tls(&row.text("tls")?)?,
        username: row.text("username")?,
        ros_version: row.opt_text("ros_version")?,
        status: row.text("status")?,
        revision: row.uint("revision")?,
        generation: row.uint("generation")?,
        stored_generation: row.uint("stored_generation")?,
        applied_generation: row.uint("applied_generation")?,
        apply_error: row.opt_text("apply_error")?,
        created_at: row.millis("created_at")?,
        deleted_at: row.opt_millis("deleted_at")?,
        health: RouterHealth {
            last_seen: row.opt_millis("last_seen")?,
            uptime_secs: row
                .opt_int("uptime_secs")?
                .map(|v| u64::try_from(v).unwrap_or(0)),
            ros_channel: row.opt_text("ros_channel")?,
            ros_latest: row.opt_text("ros_latest")?,
            update_available: row.opt_int("update_available")?.map(|v| v != 0),
            update_error: row.opt_text("update_error")?,
            firmware_current: row.opt_text("firmware_current")?,
            firmware_upgrade: row.opt_text("firmware_upgrade")?,
            firmware_outdated: row.opt_int("firmware_outdated")?.map(|v| v != 0),
            board: row.opt_text("board")?,
            versions_at: row.opt_millis("versions_at")?,
            unsupported: row.opt_int("ros_unsupported")? == Some(1),
        },
    })
}

fn seal_to(seal_key: &[u8], password: &Secret) -> Result<String, DbError> {
    let sealed = tikfleet_shared::seal::seal(seal_key, password.expose().as_bytes())
        .map_err(|e| DbError::Invalid(format!("cannot seal the password to the agent: {e}")))?;
    Ok(STANDARD.encode(sealed))
}

impl Db {
    /// Adds a router served by `new.agent_id` (in the caller's scope); its password is
    /// sealed to that agent.
    ///
    /// # Errors
    /// The agent is not visible or is revoked, the name is taken, or the database failed.
    pub async fn create_router(&self, staff: &Staff, new: NewRouter) -> Result<Router, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let mut q = Sql::new("SELECT ");
        q.push(super::agents::AGENT_COLUMNS)
            .push(" FROM agents WHERE id = ")
            .bind(new.agent_id.to_string());
        staff.scope.filter(&mut q, "tenant_id");
        let row = q
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(DbError::NotFound("agent"))?;
        let agent = super::agents::agent(&row)?;
        if agent.revoked_at.is_some() {
            return Err(DbError::Conflict(
                "the agent is revoked; pick another agent".into(),
            ));
        }
        if new.tenant_id.is_some_and(|t| t != agent.tenant_id) {
            return Err(DbError::Invalid(
                "tenant_id differs from the agent's tenant; a router belongs to its agent's tenant"
                    .into(),
            ));
        }
        let sealed = seal_to(&agent.seal_key, &new.password)?;
        let id = RouterId::new();
        let mut q = Sql::new(
            "INSERT INTO routers (id, tenant_id, agent_id, name, address, api_port, ssh_port, tls, \
             username, sealed_password, status, revision, generation, created_at, updated_at) VALUES (",
        );
        q.bind(id.to_string())
            .push(", ")
            .bind(agent.tenant_id.to_string())
            .push(", ")
            .bind(agent.id.to_string())
            .push(", ")
            .bind(new.name.clone())
            .push(", ")
            .bind(new.address.clone())
            .push(", ")
            .bind(i64::from(new.api_port))
            .push(", ")
            .bind(i64::from(new.ssh_port))
            .push(", ")
            .bind(tls_json(&new.tls))
            .push(", ")
            .bind(new.username.clone())
            .push(", ")
            .bind(sealed)
            .push(", 'unknown', 1, 1, ")
            .bind(now.as_millis())
            .push(", ")
            .bind(now.as_millis())
            .push(")");
        q.execute(&mut *tx).await.map_err(unique_as(format!(
            "a router named {:?} already exists",
            new.name
        )))?;
        let mut params = AuditParams::new();
        params
            .insert("name", new.name.clone())
            .insert("address", new.address.clone())
            .insert("api_port", new.api_port.to_string())
            .insert("ssh_port", new.ssh_port.to_string())
            .insert("agent_id", agent.id.to_string())
            .insert("username", new.username.clone())
            .insert_secret("password", &new.password);
        audit_staff(
            &mut tx,
            now,
            Some(agent.tenant_id),
            Some(id),
            &staff.actor,
            "router.create",
            &params,
        )
        .await?;
        let r = load(&mut tx, &staff.scope, id).await?;
        tx.commit().await?;
        self.notify([agent.id]);
        Ok(r)
    }

    /// Routers visible in `scope` (not deleted ones).
    ///
    /// # Errors
    /// The database failed.
    pub async fn list_routers(
        &self,
        scope: &Scope,
        page: &PageRequest,
    ) -> Result<Page<Router>, DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(ROUTER_COLUMNS)
            .push(" FROM routers WHERE deleted_at IS NULL");
        scope.filter(&mut q, "tenant_id");
        page.apply(&mut q, "id");
        let rows = q.fetch_all(self.pool()).await?;
        let items = rows.iter().map(router).collect::<Result<Vec<_>, _>>()?;
        Ok(page.finish(items, |r| r.id.to_string()))
    }

    /// One router, if visible in `scope` and not deleted.
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn get_router(&self, scope: &Scope, id: RouterId) -> Result<Router, DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(ROUTER_COLUMNS)
            .push(" FROM routers WHERE deleted_at IS NULL AND id = ")
            .bind(id.to_string());
        scope.filter(&mut q, "tenant_id");
        let row = q
            .fetch_optional(self.pool())
            .await?
            .ok_or(DbError::NotFound("router"))?;
        router(&row)
    }

    /// Changes a router's settings; a new password is sealed to its agent.
    ///
    /// # Errors
    /// Not found (or not visible), the new name is taken, or the database failed.
    pub async fn update_router(
        &self,
        staff: &Staff,
        id: RouterId,
        patch: RouterPatch,
    ) -> Result<Router, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let before = load(&mut tx, &staff.scope, id).await?;
        let mut params = AuditParams::new();
        let mut q = Sql::new("UPDATE routers SET revision = revision + 1, updated_at = ");
        q.bind(now.as_millis());
        if let Some(name) = &patch.name {
            q.push(", name = ").bind(name.clone());
            params.insert("name", name.clone());
        }
        if let Some(address) = &patch.address {
            q.push(", address = ").bind(address.clone());
            params.insert("address", address.clone());
        }
        if let Some(p) = patch.api_port {
            q.push(", api_port = ").bind(i64::from(p));
            params.insert("api_port", p.to_string());
        }
        if let Some(p) = patch.ssh_port {
            q.push(", ssh_port = ").bind(i64::from(p));
            params.insert("ssh_port", p.to_string());
        }
        if let Some(tls) = &patch.tls {
            q.push(", tls = ").bind(tls_json(tls));
            params.insert("tls", tls_json(tls));
        }
        if let Some(u) = &patch.username {
            q.push(", username = ").bind(u.clone());
            params.insert("username", u.clone());
        }
        if let Some(pw) = &patch.password {
            let mut k = Sql::new("SELECT seal_key FROM agents WHERE id = ");
            k.bind(before.agent_id.to_string());
            let row = k.fetch_one(&mut *tx).await?;
            let seal_key = STANDARD
                .decode(row.text("seal_key")?)
                .map_err(|_| DbError::Corrupt("seal_key".into()))?;
            q.push(", sealed_password = ").bind(seal_to(&seal_key, pw)?);
            params.insert_secret("password", pw);
        }
        q.push(" WHERE id = ").bind(id.to_string());
        let name = patch.name.clone().unwrap_or_default();
        q.execute(&mut *tx)
            .await
            .map_err(unique_as(format!("a router named {name:?} already exists")))?;
        audit_staff(
            &mut tx,
            now,
            Some(before.tenant_id),
            Some(id),
            &staff.actor,
            "router.update",
            &params,
        )
        .await?;
        let r = load(&mut tx, &staff.scope, id).await?;
        tx.commit().await?;
        self.notify([r.agent_id]);
        Ok(r)
    }

    /// Deletes a router (a tombstone its agent learns from) and cancels its jobs that were
    /// not delivered yet. A router that still serves subscribers cannot be deleted.
    ///
    /// # Errors
    /// Not found (or not visible), subscribers remain, or the database failed.
    pub async fn delete_router(&self, staff: &Staff, id: RouterId) -> Result<(), DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let r = load(&mut tx, &staff.scope, id).await?;
        let mut q = Sql::new("SELECT COUNT(*) AS n FROM subscribers WHERE router_id = ");
        q.bind(id.to_string());
        let n = q.fetch_one(&mut *tx).await?.int("n")?;
        if n > 0 {
            return Err(DbError::Conflict(format!(
                "the router still serves {n} subscriber(s); delete or move them first"
            )));
        }
        let mut q = Sql::new("UPDATE routers SET revision = revision + 1, deleted_at = ");
        q.bind(now.as_millis())
            .push(", updated_at = ")
            .bind(now.as_millis())
            .push(" WHERE id = ")
            .bind(id.to_string());
        q.execute(&mut *tx).await?;
        let mut q = Sql::new("UPDATE jobs SET status = 'cancelled', updated_at = ");
        q.bind(now.as_millis())
            .push(" WHERE delivered_at IS NULL AND status = 'queued' AND router_id = ")
            .bind(id.to_string());
        q.execute(&mut *tx).await?;
        let mut params = AuditParams::new();
        params.insert("name", r.name.clone());
        audit_staff(
            &mut tx,
            now,
            Some(r.tenant_id),
            Some(id),
            &staff.actor,
            "router.delete",
            &params,
        )
        .await?;
        tx.commit().await?;
        self.notify([r.agent_id]);
        Ok(())
    }

    /// Desired versus agent-reported generations of a router.
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn router_sync(&self, scope: &Scope, id: RouterId) -> Result<SyncState, DbError> {
        let mut q = Sql::new(
            "SELECT r.id, r.generation, r.stored_generation, r.applied_generation, a.connected, \
             r.progress_generation, r.progress_done, r.progress_total, r.progress_at, r.conflicts, \
             r.last_drift_check_at, (SELECT COUNT(*) FROM drift_items d \
             WHERE d.router_id = r.id AND d.status = 'open') AS open_drift_items \
             FROM routers r JOIN agents a ON a.id = r.agent_id WHERE r.deleted_at IS NULL AND r.id = ",
        );
        q.bind(id.to_string());
        scope.filter(&mut q, "r.tenant_id");
        let row = q
            .fetch_optional(self.pool())
            .await?
            .ok_or(DbError::NotFound("router"))?;
        Ok(SyncState {
            router_id: row.parse("id")?,
            generation: row.uint("generation")?,
            stored_generation: row.uint("stored_generation")?,
            applied_generation: row.uint("applied_generation")?,
            agent_connected: row.int("connected")? != 0,
            progress: match (
                row.opt_int("progress_generation")?,
                row.opt_int("progress_done")?,
                row.opt_int("progress_total")?,
                row.opt_int("progress_at")?,
            ) {
                (Some(generation), Some(done), Some(total), Some(at)) => {
                    let uint = |v: i64| u64::try_from(v).unwrap_or(0);
                    Some(ReconcileProgress {
                        generation: uint(generation),
                        done: uint(done),
                        total: uint(total),
                        at: UnixMillis(at),
                    })
                }
                _ => None,
            },
            conflicts: u32::try_from(row.int("conflicts")?).unwrap_or(u32::MAX),
            last_drift_check_at: row.opt_millis("last_drift_check_at")?,
            open_drift_items: row.uint("open_drift_items")?,
        })
    }
}

/// Loads a live router in `scope` inside a transaction.
pub(crate) async fn load(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    scope: &Scope,
    id: RouterId,
) -> Result<Router, DbError> {
    let mut q = Sql::new("SELECT ");
    q.push(ROUTER_COLUMNS)
        .push(" FROM routers WHERE deleted_at IS NULL AND id = ")
        .bind(id.to_string());
    scope.filter(&mut q, "tenant_id");
    let row = q
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(DbError::NotFound("router"))?;
    router(&row)
}

/// Bumps a router's desired-state generation inside a transaction; returns the new one.
pub(crate) async fn bump_generation(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: RouterId,
    now: UnixMillis,
) -> Result<u64, DbError> {
    let mut q = Sql::new("UPDATE routers SET generation = generation + 1, updated_at = ");
    q.bind(now.as_millis())
        .push(" WHERE id = ")
        .bind(id.to_string());
    q.execute(&mut **tx).await?;
    let mut q = Sql::new("SELECT generation FROM routers WHERE id = ");
    q.bind(id.to_string());
    q.fetch_one(&mut **tx).await?.uint("generation")
}
