//! `/api/v1/routers/{id}/rotate-credentials`, `/api/v1/routers/{id}/lockdown` and
//! `/api/v1/tenants/{id}/security`: credential rotation and API lockdown jobs, and the
//! tenant's rotation schedule and admin networks (`db/credentials.rs`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use tikfleet_shared::{RouterId, TenantId};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, Auth, OptionalJson};
use super::jobs::JobDto;
use super::validate;
use crate::app::AppState;
use crate::db::credentials::SecuritySettings;

/// A rotation to queue; the body may be left out.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// Makes the request safe to repeat: the same key answers the same job.
    pub idempotency_key: Option<String>,
}

/// A lockdown to queue; the body may be left out.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct LockdownRequest {
    /// Networks allowed besides the agent; left out: the tenant's `admin_networks`.
    pub admin_networks: Option<Vec<String>>,
    /// Makes the request safe to repeat: the same key answers the same job.
    pub idempotency_key: Option<String>,
}

fn key(k: Option<String>) -> Result<Option<String>, ApiError> {
    k.map(|k| validate::name("idempotency_key", &k, 128))
        .transpose()
}

/// Queues a credential rotation of a router; follow it with `GET /jobs/{id}`.
#[utoipa::path(post, path = "/api/v1/routers/{id}/rotate-credentials", tag = "routers", params(("id" = String, Path)),
    request_body(content = Option<RotateRequest>),
    responses((status = 202, body = JobDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn rotate(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<RouterId>,
    OptionalJson(body): OptionalJson<RotateRequest>,
) -> Result<(StatusCode, Json<JobDto>), ApiError> {
    let p = auth.writer()?;
    let k = key(body.unwrap_or_default().idempotency_key)?;
    let job = st.db.request_rotation(&p.staff(), id, k).await?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

/// Queues an API lockdown of a router; follow it with `GET /jobs/{id}`.
#[utoipa::path(post, path = "/api/v1/routers/{id}/lockdown", tag = "routers", params(("id" = String, Path)),
    request_body(content = Option<LockdownRequest>),
    responses((status = 202, body = JobDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn lockdown(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<RouterId>,
    OptionalJson(body): OptionalJson<LockdownRequest>,
) -> Result<(StatusCode, Json<JobDto>), ApiError> {
    let p = auth.writer()?;
    let body = body.unwrap_or_default();
    let k = key(body.idempotency_key)?;
    let job = st
        .db
        .request_lockdown(&p.staff(), id, body.admin_networks, k)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

/// Shows a tenant's rotation schedule and admin networks.
#[utoipa::path(get, path = "/api/v1/tenants/{id}/security", tag = "tenants", params(("id" = String, Path)),
    responses((status = 200, body = SecuritySettings), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn show_settings(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<Json<SecuritySettings>, ApiError> {
    Ok(Json(st.db.security_settings(&p.scope(), id).await?))
}

/// Replaces a tenant's rotation schedule and admin networks.
#[utoipa::path(put, path = "/api/v1/tenants/{id}/security", tag = "tenants", params(("id" = String, Path)),
    request_body = SecuritySettings,
    responses((status = 200, body = SecuritySettings), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn set_settings(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<SecuritySettings>,
) -> Result<Json<SecuritySettings>, ApiError> {
    let p = auth.writer()?;
    Ok(Json(
        st.db.set_security_settings(&p.staff(), id, &body).await?,
    ))
}
