//! `/api/v1/agents`: the agents staff see, their revocation, and the two calls agents make
//! themselves: enrollment (authorised by a one-time token) and key rotation (authorised by a
//! signature of the current key). Their JSON is `tikfleet_shared::enroll`'s. The agent view
//! carries the agent's latest host sample (`host`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use tikfleet_shared::enroll::{EnrollRequest, EnrollResponse, RotateKeyRequest, RotateKeyResponse};
use tikfleet_shared::{AgentId, TenantId};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Auth};
use super::{ListQuery, validate};
use crate::app::AppState;
use crate::db::agents::{Agent, AgentHost, Enrollment, Rotation};

/// An agent.
#[derive(Serialize, ToSchema)]
pub struct AgentDto {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: AgentId,
    /// Its tenant.
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
    /// Its name.
    pub name: String,
    /// Its software version.
    pub agent_version: String,
    /// Whether it is connected to the hub now.
    pub connected: bool,
    /// Its last hello or disconnect (RFC 3339).
    pub last_seen: Option<String>,
    /// Whether it was revoked.
    pub revoked: bool,
    /// When it enrolled (RFC 3339).
    pub created_at: String,
    /// Its site box and queues from its latest host sample; null until the first arrives.
    pub host: Option<AgentHostDto>,
}

/// An agent's site box and queues, as its latest host sample (every 30 s while it is
/// connected) reported them.
#[derive(Serialize, ToSchema)]
pub struct AgentHostDto {
    /// When the agent took the sample (RFC 3339).
    pub sampled_at: String,
    /// CPU load in percent (0–100).
    pub cpu_load_percent: u8,
    /// Free memory, bytes.
    pub free_memory_bytes: u64,
    /// Total memory, bytes.
    pub total_memory_bytes: u64,
    /// Uptime, seconds.
    pub uptime_secs: u64,
    /// Free disk in the agent's data folder, bytes.
    pub free_disk_bytes: u64,
    /// Total disk in the agent's data folder, bytes.
    pub total_disk_bytes: u64,
    /// Records waiting in the outbox for the controller.
    pub outbox_records: u64,
    /// Bytes the outbox uses.
    pub outbox_bytes: u64,
    /// The outbox's byte cap, above which the oldest telemetry is dropped; null from
    /// agents that do not report it.
    pub outbox_max_bytes: Option<u64>,
    /// `outbox_bytes` as a percentage of `outbox_max_bytes` (rounded down); null without a
    /// cap.
    pub outbox_percent: Option<u64>,
    /// Telemetry records the outbox has dropped under its caps, ever; null from agents that
    /// do not report it.
    pub telemetry_dropped: Option<u64>,
    /// Jobs waiting in the agent's queue.
    pub queued_jobs: u64,
}

impl From<AgentHost> for AgentHostDto {
    fn from(h: AgentHost) -> Self {
        Self {
            sampled_at: validate::format_time(h.sampled_at),
            cpu_load_percent: h.cpu_load_percent,
            free_memory_bytes: h.free_memory_bytes,
            total_memory_bytes: h.total_memory_bytes,
            uptime_secs: h.uptime_secs,
            free_disk_bytes: h.free_disk_bytes,
            total_disk_bytes: h.total_disk_bytes,
            outbox_records: h.outbox_records,
            outbox_bytes: h.outbox_bytes,
            outbox_max_bytes: h.outbox_max_bytes,
            outbox_percent: h.outbox_max_bytes.filter(|m| *m > 0).map(|max| {
                u64::try_from(u128::from(h.outbox_bytes) * 100 / u128::from(max))
                    .unwrap_or(u64::MAX)
            }),
            telemetry_dropped: h.telemetry_dropped,
            queued_jobs: h.queued_jobs,
        }
    }
}

impl From<Agent> for AgentDto {
    fn from(a: Agent) -> Self {
        Self {
            id: a.id,
            tenant_id: a.tenant_id,
            name: a.name,
            agent_version: a.agent_version,
            connected: a.connected && a.revoked_at.is_none(),
            last_seen: a.last_seen.map(validate::format_time),
            revoked: a.revoked_at.is_some(),
            created_at: validate::format_time(a.created_at),
            host: a.host.map(Into::into),
        }
    }
}

/// A page of agents.
#[derive(Serialize, ToSchema)]
pub struct AgentList {
    /// The agents.
    pub items: Vec<AgentDto>,
    /// The next page's cursor, or null.
    pub next_cursor: Option<String>,
}

/// `tikfleet_shared::enroll::EnrollRequest`, for the OpenAPI document.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EnrollRequestDoc {
    /// The one-time enrollment token.
    token: String,
    /// A name for the agent.
    name: String,
    /// Ed25519 identity public key, base64.
    public_key: String,
    /// X25519 seal public key, base64.
    seal_key: String,
    /// The agent's software version.
    agent_version: String,
}

/// `tikfleet_shared::enroll::EnrollResponse`, for the OpenAPI document.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EnrollResponseDoc {
    /// The agent's id.
    agent_id: String,
    /// Its tenant.
    tenant_id: String,
    /// The registered key's id.
    key_id: String,
    /// Where to open the WebSocket.
    hub_url: String,
    /// The hub's certificate (PEM) when self-signed.
    hub_ca_pem: Option<String>,
}

/// `tikfleet_shared::enroll::RotateKeyRequest`, for the OpenAPI document.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RotateKeyRequestDoc {
    /// The current key's id.
    key_id: String,
    /// The new Ed25519 public key, base64.
    new_public_key: String,
    /// When the agent signed (Unix milliseconds).
    signed_at: u64,
    /// Ed25519 signature by the current key, base64.
    signature: String,
}

/// `tikfleet_shared::enroll::RotateKeyResponse`, for the OpenAPI document.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RotateKeyResponseDoc {
    /// The new key's id.
    key_id: String,
}

fn key32(field: &str, text: &str) -> Result<[u8; 32], ApiError> {
    STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| ApiError::invalid(format!("{field} must be base64 of 32 bytes")))
}

/// Lists agents.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", params(ListQuery),
    responses((status = 200, body = AgentList), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<AgentList>, ApiError> {
    let page = st.db.list_agents(&p.scope(), &q.page()?).await?;
    Ok(Json(AgentList {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Shows an agent.
#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = AgentDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn show(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<AgentId>,
) -> Result<Json<AgentDto>, ApiError> {
    Ok(Json(st.db.get_agent(&p.scope(), id).await?.into()))
}

/// Revokes an agent: refused from now on, its live connection closed.
#[utoipa::path(post, path = "/api/v1/agents/{id}/revoke", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = AgentDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn revoke(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<AgentId>,
) -> Result<Json<AgentDto>, ApiError> {
    let p = auth.writer()?;
    Ok(Json(st.db.revoke_agent(&p.staff(), id).await?.into()))
}

/// Enrolls an agent with a one-time enrollment token (no bearer token).
#[utoipa::path(post, path = "/api/v1/agents/enroll", tag = "agents", request_body = EnrollRequestDoc,
    responses((status = 201, body = EnrollResponseDoc), (status = "4XX", body = ErrorBody)))]
pub async fn enroll(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiError> {
    if body.token.is_empty() || body.token.len() > 256 {
        return Err(ApiError::invalid(
            "token must be the enrollment token staff created",
        ));
    }
    let e = Enrollment {
        name: validate::name("name", &body.name, 128)?,
        agent_version: validate::name("agent_version", &body.agent_version, 64)?,
        public_key: key32("public_key", &body.public_key)?,
        seal_key: key32("seal_key", &body.seal_key)?,
        token: body.token,
    };
    let (agent_id, tenant_id, key_id) = st.db.enroll_agent(&e).await?;
    tracing::info!(agent = %agent_id, tenant = %tenant_id, "agent enrolled");
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse {
            agent_id,
            tenant_id,
            key_id,
            hub_url: st.hub.url.clone(),
            hub_ca_pem: st.hub.ca_pem.clone(),
        }),
    ))
}

/// Replaces an agent's identity key, signed by its current key; the old key stops working
/// at once (no bearer token).
#[utoipa::path(post, path = "/api/v1/agents/{id}/keys", tag = "agents", params(("id" = String, Path)),
    request_body = RotateKeyRequestDoc,
    responses((status = 200, body = RotateKeyResponseDoc), (status = "4XX", body = ErrorBody)))]
pub async fn rotate_key(
    State(st): State<AppState>,
    ApiPath(id): ApiPath<AgentId>,
    ApiJson(body): ApiJson<RotateKeyRequest>,
) -> Result<Json<RotateKeyResponse>, ApiError> {
    if body.key_id.is_empty() || body.key_id.len() > 64 {
        return Err(ApiError::invalid("key_id must be the current key's id"));
    }
    let signature = STANDARD
        .decode(body.signature.trim())
        .ok()
        .filter(|s| s.len() == 64)
        .ok_or_else(|| {
            ApiError::invalid("signature must be base64 of a 64-byte Ed25519 signature")
        })?;
    let r = Rotation {
        key_id: body.key_id,
        new_public_key: key32("new_public_key", &body.new_public_key)?,
        signed_at: body.signed_at,
        signature,
    };
    let key_id = st.db.rotate_agent_key(id, &r).await?;
    tracing::info!(agent = %id, key_id = %key_id, "agent key rotated");
    Ok(Json(RotateKeyResponse { key_id }))
}
