//! `/api/v1/tenants`: tenants, their staff tokens and their enrollment tokens.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tikfleet_shared::TenantId;
use tikfleet_shared::domain::DriftPolicy;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Auth, OptionalJson};
use super::{ListQuery, validate};
use crate::app::AppState;
use crate::auth::Role;
use crate::db::tenants::{Tenant, TenantDrift};
use crate::db::tokens::StaffToken;

/// A tenant.
#[derive(Serialize, ToSchema)]
pub struct TenantDto {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: TenantId,
    /// Its name.
    pub name: String,
    /// Its drift settings.
    pub drift: DriftSettingsDto,
}

impl From<Tenant> for TenantDto {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id,
            name: t.name,
            drift: t.drift.into(),
        }
    }
}

/// A tenant's drift settings: what its agents do about routers that drifted from their
/// desired state, and how often they check.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftSettingsDto {
    /// `enforce` (put managed items back and report them) or `report` (only report them,
    /// for staff to accept or enforce).
    pub policy: String,
    /// Seconds between checks of each router: 0 (only when asked, `POST
    /// /routers/{id}/drift-check`) or 60 to 2592000 (30 days).
    pub interval_secs: u64,
}

impl From<TenantDrift> for DriftSettingsDto {
    fn from(d: TenantDrift) -> Self {
        Self {
            policy: d.policy.as_str().to_owned(),
            interval_secs: d.interval_secs,
        }
    }
}

impl DriftSettingsDto {
    fn parse(self) -> Result<TenantDrift, ApiError> {
        let policy: DriftPolicy = self
            .policy
            .parse()
            .map_err(|_| ApiError::invalid("policy must be \"enforce\" or \"report\""))?;
        let ok = self.interval_secs == 0
            || (TenantDrift::MIN_INTERVAL_SECS..=TenantDrift::MAX_INTERVAL_SECS)
                .contains(&self.interval_secs);
        if !ok {
            return Err(ApiError::invalid(format!(
                "interval_secs must be 0 (check only when asked) or {} to {} (30 days)",
                TenantDrift::MIN_INTERVAL_SECS,
                TenantDrift::MAX_INTERVAL_SECS
            )));
        }
        Ok(TenantDrift {
            policy,
            interval_secs: self.interval_secs,
        })
    }
}

/// A page of tenants.
#[derive(Serialize, ToSchema)]
pub struct TenantList {
    /// The tenants.
    pub items: Vec<TenantDto>,
    /// The next page's cursor, or null.
    pub next_cursor: Option<String>,
}

/// A tenant to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Its name (unique).
    pub name: String,
}

/// A staff token to create for a tenant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// `operator` (read and write) or `viewer` (read only).
    pub role: String,
    /// A name for the token, recorded as the actor in the audit log.
    pub name: String,
}

/// A new token: the secret is shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    /// The token's id.
    pub id: String,
    /// The bearer token. Store it now: it is never shown again.
    pub token: String,
    /// Its role.
    pub role: String,
}

/// A staff token (never its secret).
#[derive(Serialize, ToSchema)]
pub struct TokenDto {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// Whether it was revoked.
    pub revoked: bool,
}

impl From<StaffToken> for TokenDto {
    fn from(t: StaffToken) -> Self {
        Self {
            id: t.id,
            name: t.name,
            role: t.role.as_str().to_owned(),
            created_at: validate::format_time(t.created_at),
            revoked: t.revoked_at.is_some(),
        }
    }
}

/// A page of tokens.
#[derive(Serialize, ToSchema)]
pub struct TokenList {
    /// The tokens.
    pub items: Vec<TokenDto>,
    /// The next page's cursor, or null.
    pub next_cursor: Option<String>,
}

/// An enrollment token to create.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// How long it stays valid, in seconds (default 86400, at most 30 days).
    pub ttl_secs: Option<u64>,
}

/// A new enrollment token: the secret is shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedEnrollmentToken {
    /// The token's id.
    pub id: String,
    /// The one-time token for `tikfleet-agent enroll --token`.
    pub token: String,
    /// The tenant an agent joins with it.
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
}

/// Path of a token.
#[derive(Deserialize, IntoParams)]
pub struct TokenPath {
    /// The tenant.
    pub id: String,
    /// The token.
    pub token_id: String,
}

/// Creates a tenant (admin only).
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", request_body = CreateTenant,
    responses((status = 201, body = TenantDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<(StatusCode, Json<TenantDto>), ApiError> {
    let p = auth.writer()?;
    let name = validate::name("name", &body.name, 128)?;
    let t = st.db.create_tenant(&p.staff(), &name).await?;
    Ok((StatusCode::CREATED, Json(t.into())))
}

/// Lists tenants: all for admins, their own for others.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", params(ListQuery),
    responses((status = 200, body = TenantList), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<TenantList>, ApiError> {
    let page = st.db.list_tenants(&p.scope(), &q.page()?).await?;
    Ok(Json(TenantList {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Shows a tenant.
#[utoipa::path(get, path = "/api/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path)),
    responses((status = 200, body = TenantDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn show(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<Json<TenantDto>, ApiError> {
    Ok(Json(st.db.get_tenant(&p.scope(), id).await?.into()))
}

/// Creates an operator or viewer token for a tenant; the secret is in this answer only.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/tokens", tag = "tenants", params(("id" = String, Path)),
    request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn create_token(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let p = auth.writer()?;
    let role = match Role::parse(&body.role) {
        Some(r @ (Role::Operator | Role::Viewer)) => r,
        _ => return Err(ApiError::invalid("role must be operator or viewer")),
    };
    let name = validate::name("name", &body.name, 128)?;
    let (token, secret) = st
        .db
        .create_staff_token(&p.staff(), id, role, &name)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            id: token.id,
            token: secret,
            role: role.as_str().to_owned(),
        }),
    ))
}

/// Lists a tenant's tokens (never their secrets).
#[utoipa::path(get, path = "/api/v1/tenants/{id}/tokens", tag = "tenants", params(("id" = String, Path), ListQuery),
    responses((status = 200, body = TokenList), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_tokens(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<TenantId>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<TokenList>, ApiError> {
    let page = st.db.list_staff_tokens(&p.scope(), id, &q.page()?).await?;
    Ok(Json(TokenList {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Revokes a tenant's token; it stops working at once.
#[utoipa::path(delete, path = "/api/v1/tenants/{id}/tokens/{token_id}", tag = "tenants", params(TokenPath),
    responses((status = 200, body = TokenDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn revoke_token(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(path): ApiPath<TokenPath>,
) -> Result<Json<TokenDto>, ApiError> {
    let p = auth.writer()?;
    let tenant: TenantId = path
        .id
        .parse()
        .map_err(|_| ApiError::invalid("the tenant id is not a valid id"))?;
    if uuid::Uuid::parse_str(&path.token_id).is_err() {
        return Err(ApiError::invalid("the token id is not a valid id"));
    }
    Ok(Json(
        st.db
            .revoke_staff_token(&p.staff(), tenant, &path.token_id)
            .await?
            .into(),
    ))
}

/// Creates a one-time enrollment token for a tenant; the secret is in this answer only.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/enrollment-tokens", tag = "tenants", params(("id" = String, Path)),
    request_body(content = Option<CreateEnrollmentToken>),
    responses((status = 201, body = CreatedEnrollmentToken), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn create_enrollment_token(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<TenantId>,
    OptionalJson(body): OptionalJson<CreateEnrollmentToken>,
) -> Result<(StatusCode, Json<CreatedEnrollmentToken>), ApiError> {
    let p = auth.writer()?;
    let body = body.unwrap_or_default();
    let ttl = body.ttl_secs.unwrap_or(86_400);
    if ttl == 0 || ttl > 30 * 86_400 {
        return Err(ApiError::invalid("ttl_secs must be 1 to 2592000 (30 days)"));
    }
    let (token, secret) = st
        .db
        .create_enrollment_token(&p.staff(), id, Duration::from_secs(ttl))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedEnrollmentToken {
            id: token.id,
            token: secret,
            tenant_id: token.tenant_id,
            expires_at: validate::format_time(token.expires_at),
        }),
    ))
}

/// Shows a tenant's drift settings.
#[utoipa::path(get, path = "/api/v1/tenants/{id}/drift", tag = "tenants", params(("id" = String, Path)),
    responses((status = 200, body = DriftSettingsDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn show_drift(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<Json<DriftSettingsDto>, ApiError> {
    Ok(Json(st.db.get_tenant(&p.scope(), id).await?.drift.into()))
}

/// Changes a tenant's drift settings; every router of the tenant gets a new desired-state
/// generation that carries them to its agent.
#[utoipa::path(put, path = "/api/v1/tenants/{id}/drift", tag = "tenants", params(("id" = String, Path)),
    request_body = DriftSettingsDto,
    responses((status = 200, body = DriftSettingsDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn set_drift(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<DriftSettingsDto>,
) -> Result<Json<DriftSettingsDto>, ApiError> {
    let p = auth.writer()?;
    let drift = body.parse()?;
    let t = st.db.set_tenant_drift(&p.staff(), id, drift).await?;
    Ok(Json(t.drift.into()))
}
