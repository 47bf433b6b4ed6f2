//! `/api/v1/routers`: routers, their settings and their desired-versus-applied state.
//! Passwords are sealed to the router's agent at once and never returned.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tikfleet_shared::{AgentId, RouterId, Secret, TenantId};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Auth};
use super::{ListQuery, validate};
use crate::app::AppState;
use crate::db::routers::{NewRouter, Router, RouterPatch, SyncState};
use crate::hub::RouterTlsSetting;

/// TLS settings of a router's API.
#[derive(Serialize, Deserialize, ToSchema, Clone)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum TlsDto {
    /// Plain API (port 8728 by default).
    Plain,
    /// API-SSL verified against `ca_pem` (or the agent's system roots when absent).
    Verify {
        /// CA certificate(s), PEM.
        #[serde(default)]
        ca_pem: Option<String>,
        /// Name to verify instead of the address.
        #[serde(default)]
        server_name: Option<String>,
    },
    /// API-SSL with the certificate's pinned SHA-256 (self-signed routers).
    Pin {
        /// SHA-256 of the router's certificate, hex.
        sha256: String,
    },
}

impl TlsDto {
    fn parse(self) -> Result<RouterTlsSetting, ApiError> {
        Ok(match self {
            Self::Plain => RouterTlsSetting::Plain,
            Self::Verify {
                ca_pem,
                server_name,
            } => {
                if let Some(pem) = &ca_pem
                    && (!pem.contains("-----BEGIN CERTIFICATE-----") || pem.len() > 64 * 1024)
                {
                    return Err(ApiError::invalid(
                        "tls.ca_pem must be PEM certificates (BEGIN CERTIFICATE)",
                    ));
                }
                let server_name = server_name.map(|n| validate::address(&n)).transpose()?;
                RouterTlsSetting::Verify {
                    ca_pem,
                    server_name,
                }
            }
            Self::Pin { sha256 } => RouterTlsSetting::Pin {
                sha256: validate::sha256_pin(&sha256)?,
            },
        })
    }

    fn of(tls: RouterTlsSetting) -> Self {
        match tls {
            RouterTlsSetting::Plain => Self::Plain,
            RouterTlsSetting::Verify {
                ca_pem,
                server_name,
            } => Self::Verify {
                ca_pem,
                server_name,
            },
            RouterTlsSetting::Pin { sha256 } => Self::Pin { sha256 },
        }
    }
}

/// A router.
#[derive(Serialize, ToSchema)]
pub struct RouterDto {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: RouterId,
    /// Its name.
    pub name: String,
    /// Host name or address.
    pub address: String,
    /// API port.
    pub api_port: u16,
    /// SSH port.
    pub ssh_port: u16,
    /// TLS settings.
    pub tls: TlsDto,
    /// The agent that serves it.
    #[schema(value_type = String, format = Uuid)]
    pub agent_id: AgentId,
    /// Its tenant.
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
    /// Login name.
    pub username: String,
    /// RouterOS version, once the agent reported it.
    pub ros_version: Option<String>,
    /// `unknown`, `online` or `unreachable`.
    pub status: String,
    /// When a probe last reached it (RFC 3339), or null.
    pub last_seen: Option<String>,
    /// Its uptime at that probe, in seconds.
    pub uptime_secs: Option<u64>,
    /// Its update channel (`stable`, `long-term`, …).
    pub ros_channel: Option<String>,
    /// The newest RouterOS its update check found.
    pub ros_latest: Option<String>,
    /// Whether a newer RouterOS exists; null when never checked or the check failed
    /// (`update_error` says why).
    pub update_available: Option<bool>,
    /// Why the last update check could not tell (a router without internet access, …).
    pub update_error: Option<String>,
    /// RouterBOARD firmware installed (null on CHR / x86).
    pub firmware_current: Option<String>,
    /// RouterBOARD firmware the installed RouterOS brings.
    pub firmware_upgrade: Option<String>,
    /// Whether the firmware is older than `firmware_upgrade`.
    pub firmware_outdated: Option<bool>,
    /// Board name.
    pub board: Option<String>,
    /// A warning when its RouterOS is older than the supported minimum (6.43), else null.
    pub version_warning: Option<String>,
}

impl From<Router> for RouterDto {
    fn from(r: Router) -> Self {
        Self {
            id: r.id,
            name: r.name,
            address: r.address,
            api_port: r.api_port,
            ssh_port: r.ssh_port,
            tls: TlsDto::of(r.tls),
            agent_id: r.agent_id,
            tenant_id: r.tenant_id,
            username: r.username,
            version_warning: r.health.unsupported.then(|| {
                format!(
                    "RouterOS {} is older than {}, the oldest tikfleet supports: upgrade it",
                    r.ros_version.as_deref().unwrap_or("?"),
                    crate::db::health::MIN_SUPPORTED_VERSION
                )
            }),
            ros_version: r.ros_version,
            status: r.status,
            last_seen: r.health.last_seen.map(validate::format_time),
            uptime_secs: r.health.uptime_secs,
            ros_channel: r.health.ros_channel,
            ros_latest: r.health.ros_latest,
            update_available: r.health.update_available,
            update_error: r.health.update_error,
            firmware_current: r.health.firmware_current,
            firmware_upgrade: r.health.firmware_upgrade,
            firmware_outdated: r.health.firmware_outdated,
            board: r.health.board,
        }
    }
}

/// A page of routers.
#[derive(Serialize, ToSchema)]
pub struct RouterList {
    /// The routers.
    pub items: Vec<RouterDto>,
    /// The next page's cursor, or null.
    pub next_cursor: Option<String>,
}

/// A router to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRouter {
    /// For admin tokens: the tenant (it must be the agent's).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub tenant_id: Option<TenantId>,
    /// The agent that serves it.
    #[schema(value_type = String, format = Uuid)]
    pub agent_id: AgentId,
    /// Its name, unique in the tenant.
    pub name: String,
    /// Host name or address.
    pub address: String,
    /// API port (default 8728 for plain, 8729 with TLS).
    pub api_port: Option<u16>,
    /// SSH port (default 22).
    pub ssh_port: Option<u16>,
    /// TLS settings (default `{"mode":"plain"}`).
    pub tls: Option<TlsDto>,
    /// Login name.
    pub username: String,
    /// Login password: sealed to the agent at once, never stored in plain or returned.
    pub password: String,
}

/// Changes to a router; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRouter {
    /// New name.
    pub name: Option<String>,
    /// New address.
    pub address: Option<String>,
    /// New API port.
    pub api_port: Option<u16>,
    /// New SSH port.
    pub ssh_port: Option<u16>,
    /// New TLS settings.
    pub tls: Option<TlsDto>,
    /// New login name.
    pub username: Option<String>,
    /// New password (sealed to the agent).
    pub password: Option<String>,
}

/// Desired versus agent-reported generations.
#[derive(Serialize, ToSchema)]
pub struct SyncDto {
    /// The router.
    #[schema(value_type = String, format = Uuid)]
    pub router_id: RouterId,
    /// The desired-state generation.
    pub desired_generation: u64,
    /// The generation the agent has stored.
    pub stored_generation: u64,
    /// The generation the agent has applied to the router.
    pub applied_generation: u64,
    /// Whether the router runs the desired generation.
    pub in_sync: bool,
    /// Whether the router's agent is connected now.
    pub agent_connected: bool,
    /// The agent's last report on a reconcile pass, or null before the first: `done` of
    /// `total` items of `generation`; `done` equals `total` once the pass finished.
    pub progress: Option<ReconcileProgressDto>,
    /// Desired items the last pass left alone because an administrator made an item of
    /// the same name (see `GET /drift?status=open`: they are `conflict` items).
    pub conflicts: u32,
    /// When the agent last compared the router with its desired state in full (RFC 3339),
    /// or null.
    pub last_drift_check_at: Option<String>,
    /// Drift items of the router waiting for staff (status `open`).
    pub open_drift_items: u64,
}

/// A reconcile pass's progress.
#[derive(Serialize, ToSchema)]
pub struct ReconcileProgressDto {
    /// The generation being applied.
    pub generation: u64,
    /// Items handled.
    pub done: u64,
    /// Items in the pass.
    pub total: u64,
    /// When the agent reported it (RFC 3339).
    pub at: String,
}

impl From<SyncState> for SyncDto {
    fn from(s: SyncState) -> Self {
        Self {
            router_id: s.router_id,
            desired_generation: s.generation,
            stored_generation: s.stored_generation,
            applied_generation: s.applied_generation,
            in_sync: s.applied_generation >= s.generation,
            agent_connected: s.agent_connected,
            progress: s.progress.map(|p| ReconcileProgressDto {
                generation: p.generation,
                done: p.done,
                total: p.total,
                at: validate::format_time(p.at),
            }),
            conflicts: s.conflicts,
            last_drift_check_at: s.last_drift_check_at.map(validate::format_time),
            open_drift_items: s.open_drift_items,
        }
    }
}

/// Adds a router.
#[utoipa::path(post, path = "/api/v1/routers", tag = "routers", request_body = CreateRouter,
    responses((status = 201, body = RouterDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateRouter>,
) -> Result<(StatusCode, Json<RouterDto>), ApiError> {
    let p = auth.writer()?;
    validate::password("password", &body.password)?;
    let tls = body.tls.unwrap_or(TlsDto::Plain).parse()?;
    let default_port = if tls == RouterTlsSetting::Plain {
        8728
    } else {
        8729
    };
    let new = NewRouter {
        tenant_id: body.tenant_id,
        agent_id: body.agent_id,
        name: validate::name("name", &body.name, 128)?,
        address: validate::address(&body.address)?,
        api_port: validate::port("api_port", body.api_port.unwrap_or(default_port))?,
        ssh_port: validate::port("ssh_port", body.ssh_port.unwrap_or(22))?,
        tls,
        username: validate::name("username", &body.username, 64)?,
        password: Secret::new(body.password),
    };
    let r = st.db.create_router(&p.staff(), new).await?;
    Ok((StatusCode::CREATED, Json(r.into())))
}

/// Lists routers.
#[utoipa::path(get, path = "/api/v1/routers", tag = "routers", params(ListQuery),
    responses((status = 200, body = RouterList), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<RouterList>, ApiError> {
    let page = st.db.list_routers(&p.scope(), &q.page()?).await?;
    Ok(Json(RouterList {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Shows a router.
#[utoipa::path(get, path = "/api/v1/routers/{id}", tag = "routers", params(("id" = String, Path)),
    responses((status = 200, body = RouterDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn show(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<RouterId>,
) -> Result<Json<RouterDto>, ApiError> {
    Ok(Json(st.db.get_router(&p.scope(), id).await?.into()))
}

/// Changes a router's settings.
#[utoipa::path(patch, path = "/api/v1/routers/{id}", tag = "routers", params(("id" = String, Path)),
    request_body = UpdateRouter,
    responses((status = 200, body = RouterDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn update(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<RouterId>,
    ApiJson(body): ApiJson<UpdateRouter>,
) -> Result<Json<RouterDto>, ApiError> {
    let p = auth.writer()?;
    if let Some(pw) = &body.password {
        validate::password("password", pw)?;
    }
    let patch = RouterPatch {
        name: body
            .name
            .map(|n| validate::name("name", &n, 128))
            .transpose()?,
        address: body.address.map(|a| validate::address(&a)).transpose()?,
        api_port: body
            .api_port
            .map(|v| validate::port("api_port", v))
            .transpose()?,
        ssh_port: body
            .ssh_port
            .map(|v| validate::port("ssh_port", v))
            .transpose()?,
        tls: body.tls.map(TlsDto::parse).transpose()?,
        username: body
            .username
            .map(|u| validate::name("username", &u, 64))
            .transpose()?,
        password: body.password.map(Secret::new),
    };
    Ok(Json(
        st.db.update_router(&p.staff(), id, patch).await?.into(),
    ))
}

/// Deletes a router (it must serve no subscribers).
#[utoipa::path(delete, path = "/api/v1/routers/{id}", tag = "routers", params(("id" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<RouterId>,
) -> Result<StatusCode, ApiError> {
    let p = auth.writer()?;
    st.db.delete_router(&p.staff(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Desired versus stored and applied generation.
#[utoipa::path(get, path = "/api/v1/routers/{id}/sync", tag = "routers", params(("id" = String, Path)),
    responses((status = 200, body = SyncDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn sync(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<RouterId>,
) -> Result<Json<SyncDto>, ApiError> {
    Ok(Json(st.db.router_sync(&p.scope(), id).await?.into()))
}
