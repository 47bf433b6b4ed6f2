//! `/api/v1/drift` and `/api/v1/routers/{id}/drift-check`: where routers differ from their
//! desired state, as their agents report it, and what staff decide about each difference:
//! accept the router's value into the database, or enforce the desired one.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tikfleet_shared::domain::ItemKind;
use tikfleet_shared::{DriftId, JobId, RouterId, TenantId};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiPath, ApiQuery, Auth, OptionalJson};
use super::jobs::JobDto;
use super::validate;
use crate::app::AppState;
use crate::db::PageRequest;
use crate::db::drift::{DriftFilter, DriftItem, DriftStatus, StatusFilter};

/// One difference between a router and its desired state.
#[derive(Serialize, ToSchema)]
pub struct DriftItemDto {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// Its tenant.
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
    /// The router.
    #[schema(value_type = String, format = Uuid)]
    pub router_id: RouterId,
    /// `ppp_profile`, `hotspot_profile`, `ppp_secret`, `hotspot_user` or
    /// `address_list_entry`.
    pub kind: String,
    /// The item's key on the router: a name, or `list/address` for an address-list entry.
    pub key: String,
    /// The RouterOS field that differs (`profile`, `disabled`, `rate-limit`, ...), or null
    /// for the whole item (missing on the router, or there but not desired).
    pub field: Option<String>,
    /// The router's value, or null when the item (or field) is missing on the router.
    /// Passwords read `<redacted>`.
    pub router_value: Option<String>,
    /// The desired value, or null when the item is not desired. Passwords read
    /// `<redacted>`.
    pub desired_value: Option<String>,
    /// Whether tikfleet manages the router's item; `false`: an administrator made it.
    pub managed: bool,
    /// What the agent last did: `corrected`, `reported`, `conflict` or `failed`.
    pub action: String,
    /// `open`, `enforcing`, `corrected`, `accepted`, `gone` or `resolved`.
    pub status: String,
    /// The last drift check that reported it.
    #[schema(value_type = String, format = Uuid)]
    pub check_id: DriftId,
    /// The desired-state generation that check compared against.
    pub generation: u64,
    /// When it was first reported (RFC 3339).
    pub first_seen_at: String,
    /// When it was last reported (RFC 3339).
    pub last_seen_at: String,
    /// When it was resolved (RFC 3339), or null while open or enforcing.
    pub resolved_at: Option<String>,
    /// Who resolved it: a token's name or `agent:<name>`; null while open or enforcing.
    pub resolved_by: Option<String>,
    /// The last enforce job queued for it, or null.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub job_id: Option<JobId>,
}

impl From<DriftItem> for DriftItemDto {
    fn from(d: DriftItem) -> Self {
        Self {
            id: d.id,
            tenant_id: d.tenant_id,
            router_id: d.router_id,
            kind: d.kind.as_str().to_owned(),
            key: d.key,
            field: d.field,
            router_value: d.router_value,
            desired_value: d.desired_value,
            managed: d.managed,
            action: d.action.as_str().to_owned(),
            status: d.status.as_str().to_owned(),
            check_id: d.check_id,
            generation: d.generation,
            first_seen_at: validate::format_time(d.first_seen_at),
            last_seen_at: validate::format_time(d.last_seen_at),
            resolved_at: d.resolved_at.map(validate::format_time),
            resolved_by: d.resolved_by,
            job_id: d.job_id,
        }
    }
}

/// A page of drift items.
#[derive(Serialize, ToSchema)]
pub struct DriftList {
    /// The items, oldest first.
    pub items: Vec<DriftItemDto>,
    /// The next page's cursor, or null.
    pub next_cursor: Option<String>,
}

/// Filters of the drift list.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DriftQuery {
    /// Page size (1 to 500, default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this router's items.
    #[param(value_type = Option<String>, format = Uuid)]
    pub router_id: Option<RouterId>,
    /// Only this tenant's items (for admin tokens; other tokens see their own tenant's).
    #[param(value_type = Option<String>, format = Uuid)]
    pub tenant_id: Option<TenantId>,
    /// `open`, `enforcing`, `corrected`, `accepted`, `gone`, `resolved`, or `all`; by
    /// default open and enforcing items.
    pub status: Option<String>,
    /// Only items of this kind (`ppp_secret`, ...).
    pub kind: Option<String>,
}

/// A drift check to queue; the body may be left out.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct DriftCheckRequest {
    /// Makes the request safe to repeat: the same key answers the same job.
    pub idempotency_key: Option<String>,
}

fn status_filter(s: Option<&str>) -> Result<StatusFilter, ApiError> {
    match s {
        None => Ok(StatusFilter::Unresolved),
        Some("all") => Ok(StatusFilter::All),
        Some(s) => s
            .parse::<DriftStatus>()
            .map(StatusFilter::Only)
            .map_err(|()| {
                ApiError::invalid(
                    "status must be open, enforcing, corrected, accepted, gone, resolved or all",
                )
            }),
    }
}

/// Queues a drift check of a router; follow it with `GET /jobs/{id}`.
#[utoipa::path(post, path = "/api/v1/routers/{id}/drift-check", tag = "drift", params(("id" = String, Path)),
    request_body(content = Option<DriftCheckRequest>),
    responses((status = 202, body = JobDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn check(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<RouterId>,
    OptionalJson(body): OptionalJson<DriftCheckRequest>,
) -> Result<(StatusCode, Json<JobDto>), ApiError> {
    let p = auth.writer()?;
    let key = body
        .unwrap_or_default()
        .idempotency_key
        .map(|k| validate::name("idempotency_key", &k, 128))
        .transpose()?;
    let job = st.db.request_drift_check(&p.staff(), id, key).await?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

/// Lists drift items: by default the open and enforcing ones.
#[utoipa::path(get, path = "/api/v1/drift", tag = "drift", params(DriftQuery),
    responses((status = 200, body = DriftList), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<DriftQuery>,
) -> Result<Json<DriftList>, ApiError> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let kind = q
        .kind
        .map(|k| {
            k.parse::<ItemKind>().map_err(|_| {
                ApiError::invalid(
                    "kind must be ppp_profile, hotspot_profile, ppp_secret, hotspot_user or address_list_entry",
                )
            })
        })
        .transpose()?;
    let filter = DriftFilter {
        router_id: q.router_id,
        tenant_id: q.tenant_id,
        status: status_filter(q.status.as_deref())?,
        kind,
    };
    let page = st.db.list_drift(&p.scope(), &filter, &page).await?;
    Ok(Json(DriftList {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Shows a drift item.
#[utoipa::path(get, path = "/api/v1/drift/{id}", tag = "drift", params(("id" = String, Path)),
    responses((status = 200, body = DriftItemDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn show(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<DriftItemDto>, ApiError> {
    Ok(Json(st.db.get_drift(&p.scope(), id).await?.into()))
}

/// Takes the router's value of an open item into the database (a subscriber's plan,
/// suspension or deletion; a plan's rate limit). Values tikfleet does not keep are refused
/// with `422 unprocessable` and what to do instead.
#[utoipa::path(post, path = "/api/v1/drift/{id}/accept", tag = "drift", params(("id" = String, Path)),
    responses((status = 200, body = DriftItemDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn accept(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<DriftItemDto>, ApiError> {
    let p = auth.writer()?;
    Ok(Json(st.db.accept_drift(&p.staff(), id).await?.into()))
}

/// Queues an `enforce` job that puts an open (or enforcing) item back to its desired state;
/// an item an administrator made by hand is adopted.
#[utoipa::path(post, path = "/api/v1/drift/{id}/enforce", tag = "drift", params(("id" = String, Path)),
    responses((status = 202, body = JobDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn enforce(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, Json<JobDto>), ApiError> {
    let p = auth.writer()?;
    let job = st.db.enforce_drift(&p.staff(), id).await?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}
