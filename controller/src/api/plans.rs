//! `/api/v1/plans`: router profiles with their rate limits.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tikfleet_shared::TenantId;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Auth};
use super::{ListQuery, validate};
use crate::app::AppState;
use crate::db::plans::{NewPlan, Plan, PlanPatch};

/// A plan.
#[derive(Serialize, ToSchema)]
pub struct PlanDto {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    /// Its tenant.
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
    /// Its name.
    pub name: String,
    /// The router profile's name.
    pub profile: String,
    /// RouterOS rate limit, e.g. `10M/10M`.
    pub rate_limit: String,
}

impl From<Plan> for PlanDto {
    fn from(p: Plan) -> Self {
        Self {
            id: p.id,
            tenant_id: p.tenant_id,
            name: p.name,
            profile: p.profile,
            rate_limit: p.rate_limit,
        }
    }
}

/// A page of plans.
#[derive(Serialize, ToSchema)]
pub struct PlanList {
    /// The plans.
    pub items: Vec<PlanDto>,
    /// The next page's cursor, or null.
    pub next_cursor: Option<String>,
}

/// A plan to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlan {
    /// For admin tokens: the tenant.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub tenant_id: Option<TenantId>,
    /// Its name, unique in the tenant.
    pub name: String,
    /// The router profile's name (default: the plan's name).
    pub profile: Option<String>,
    /// RouterOS rate limit, e.g. `10M/10M`.
    pub rate_limit: String,
}

/// Changes to a plan.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePlan {
    /// New name.
    pub name: Option<String>,
    /// New rate limit; reaches every router where the plan is used.
    pub rate_limit: Option<String>,
}

/// Adds a plan.
#[utoipa::path(post, path = "/api/v1/plans", tag = "plans", request_body = CreatePlan,
    responses((status = 201, body = PlanDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreatePlan>,
) -> Result<(StatusCode, Json<PlanDto>), ApiError> {
    let p = auth.writer()?;
    let name = validate::name("name", &body.name, 64)?;
    let profile = match body.profile {
        Some(profile) => validate::routeros_name("profile", &profile)?,
        None => {
            validate::routeros_name("profile (the plan's name, when no profile is given)", &name)?
        }
    };
    let new = NewPlan {
        tenant_id: body.tenant_id,
        name,
        profile,
        rate_limit: validate::rate_limit(&body.rate_limit)?,
    };
    Ok((
        StatusCode::CREATED,
        Json(st.db.create_plan(&p.staff(), new).await?.into()),
    ))
}

/// Lists plans.
#[utoipa::path(get, path = "/api/v1/plans", tag = "plans", params(ListQuery),
    responses((status = 200, body = PlanList), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<PlanList>, ApiError> {
    let page = st.db.list_plans(&p.scope(), &q.page()?).await?;
    Ok(Json(PlanList {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Shows a plan.
#[utoipa::path(get, path = "/api/v1/plans/{id}", tag = "plans", params(("id" = String, Path)),
    responses((status = 200, body = PlanDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn show(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> Result<Json<PlanDto>, ApiError> {
    Ok(Json(st.db.get_plan(&p.scope(), id).await?.into()))
}

/// Renames a plan or changes its rate limit.
#[utoipa::path(patch, path = "/api/v1/plans/{id}", tag = "plans", params(("id" = String, Path)),
    request_body = UpdatePlan,
    responses((status = 200, body = PlanDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn update(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<uuid::Uuid>,
    ApiJson(body): ApiJson<UpdatePlan>,
) -> Result<Json<PlanDto>, ApiError> {
    let p = auth.writer()?;
    let patch = PlanPatch {
        name: body
            .name
            .map(|n| validate::name("name", &n, 64))
            .transpose()?,
        rate_limit: body
            .rate_limit
            .map(|r| validate::rate_limit(&r))
            .transpose()?,
    };
    Ok(Json(st.db.update_plan(&p.staff(), id, patch).await?.into()))
}

/// Deletes a plan no subscriber uses.
#[utoipa::path(delete, path = "/api/v1/plans/{id}", tag = "plans", params(("id" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> Result<StatusCode, ApiError> {
    let p = auth.writer()?;
    st.db.delete_plan(&p.staff(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}
