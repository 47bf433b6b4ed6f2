//! `/api/v1/agents`: the agents staff see, their revocation, and the two calls agents make
//! themselves: enrollment (authorised by a one-time token) and key rotation (authorised by a
//! signature of the current key). Their JSON is `tikfleet_shared::enroll`'s.

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
use crate::db::agents::{Agent, Enrollment, Rotation};

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
