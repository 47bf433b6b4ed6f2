//! The subscriber lifecycle: `GET/PUT /api/v1/tenants/{id}/lifecycle`,
//! `GET/PUT /api/v1/plans/{id}/lifecycle`, `POST /api/v1/subscribers/{id}/renew` and
//! `GET /api/v1/subscribers/{id}/lifecycle`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tikfleet_shared::{SubscriberId, TenantId};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, Auth};
use super::subscribers::SubscriberDto;
use super::validate;
use crate::app::AppState;
use crate::db::lifecycle::{LifecycleView, Renewal};
use crate::lifecycle::{LifecycleOverride, LifecycleSettings};

/// Most notice days, and the furthest one.
const MAX_NOTICES: usize = 5;
const MAX_NOTICE_DAYS: u32 = 60;
/// The longest grace: 90 days.
const MAX_GRACE_SECS: u64 = 90 * 86_400;
/// The longest renewal period: 10 years.
const MAX_PERIOD_SECS: u64 = 3_650 * 86_400;

fn notice_days(mut days: Vec<u32>) -> Result<Vec<u32>, ApiError> {
    if days.len() > MAX_NOTICES || days.iter().any(|d| !(1..=MAX_NOTICE_DAYS).contains(d)) {
        return Err(ApiError::invalid(format!(
            "notice_days must hold at most {MAX_NOTICES} days, each 1 to {MAX_NOTICE_DAYS}"
        )));
    }
    days.sort_unstable_by(|a, b| b.cmp(a));
    days.dedup();
    Ok(days)
}

fn grace_secs(secs: u64) -> Result<u64, ApiError> {
    if secs > MAX_GRACE_SECS {
        return Err(ApiError::invalid(format!(
            "grace_period_secs must be 0 to {MAX_GRACE_SECS} (90 days)"
        )));
    }
    Ok(secs)
}

fn settings(s: LifecycleSettings) -> Result<LifecycleSettings, ApiError> {
    Ok(LifecycleSettings {
        notice_days: notice_days(s.notice_days)?,
        grace_period_secs: grace_secs(s.grace_period_secs)?,
        grace_profile: s
            .grace_profile
            .map(|p| validate::routeros_name("grace_profile", &p))
            .transpose()?,
        grace_rate_limit: validate::rate_limit(&s.grace_rate_limit)?,
        suspension_mode: s.suspension_mode,
        suspended_profile: validate::routeros_name("suspended_profile", &s.suspended_profile)?,
        suspended_rate_limit: validate::rate_limit(&s.suspended_rate_limit)?,
        suspended_address_list: s
            .suspended_address_list
            .map(|l| validate::routeros_name("suspended_address_list", &l))
            .transpose()?,
    })
}

/// `""` turns an optional name off; anything else must be a RouterOS name.
fn optional_name(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    v.map(|n| {
        if n.is_empty() {
            Ok(n)
        } else {
            validate::routeros_name(field, &n)
        }
    })
    .transpose()
}

fn overrides(o: LifecycleOverride) -> Result<LifecycleOverride, ApiError> {
    Ok(LifecycleOverride {
        notice_days: o.notice_days.map(notice_days).transpose()?,
        grace_period_secs: o.grace_period_secs.map(grace_secs).transpose()?,
        grace_profile: optional_name("grace_profile", o.grace_profile)?,
        grace_rate_limit: o
            .grace_rate_limit
            .map(|r| validate::rate_limit(&r))
            .transpose()?,
        suspension_mode: o.suspension_mode,
        suspended_profile: o
            .suspended_profile
            .map(|p| validate::routeros_name("suspended_profile", &p))
            .transpose()?,
        suspended_rate_limit: o
            .suspended_rate_limit
            .map(|r| validate::rate_limit(&r))
            .transpose()?,
        suspended_address_list: optional_name("suspended_address_list", o.suspended_address_list)?,
    })
}

/// Shows a tenant's lifecycle settings.
#[utoipa::path(get, path = "/api/v1/tenants/{id}/lifecycle", tag = "lifecycle", params(("id" = String, Path)),
    responses((status = 200, body = LifecycleSettings), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn show_tenant(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<Json<LifecycleSettings>, ApiError> {
    Ok(Json(st.db.tenant_lifecycle(&p.scope(), id).await?))
}

/// Sets a tenant's lifecycle settings (fields left out take their defaults). Each router of
/// the tenant gets a new desired-state generation carrying them to its agent.
#[utoipa::path(put, path = "/api/v1/tenants/{id}/lifecycle", tag = "lifecycle", params(("id" = String, Path)),
    request_body = LifecycleSettings,
    responses((status = 200, body = LifecycleSettings), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn set_tenant(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<LifecycleSettings>,
) -> Result<Json<LifecycleSettings>, ApiError> {
    let p = auth.writer()?;
    let s = settings(body)?;
    Ok(Json(st.db.set_tenant_lifecycle(&p.staff(), id, s).await?))
}

/// A plan's lifecycle overrides and the settings they give.
#[derive(Serialize, ToSchema)]
pub struct PlanLifecycle {
    /// What the plan overrides (absent fields: the tenant's).
    pub overrides: LifecycleOverride,
    /// The tenant's settings with the overrides applied: what the plan's subscribers get.
    pub effective: LifecycleSettings,
}

/// Shows a plan's lifecycle overrides.
#[utoipa::path(get, path = "/api/v1/plans/{id}/lifecycle", tag = "lifecycle", params(("id" = String, Path)),
    responses((status = 200, body = PlanLifecycle), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn show_plan(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> Result<Json<PlanLifecycle>, ApiError> {
    let (overrides, effective) = st.db.plan_lifecycle(&p.scope(), id).await?;
    Ok(Json(PlanLifecycle {
        overrides,
        effective,
    }))
}

/// Sets a plan's lifecycle overrides (`{}`: the tenant's settings hold; `""` for
/// `grace_profile` or `suspended_address_list` turns them off for the plan).
#[utoipa::path(put, path = "/api/v1/plans/{id}/lifecycle", tag = "lifecycle", params(("id" = String, Path)),
    request_body = LifecycleOverride,
    responses((status = 200, body = PlanLifecycle), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn set_plan(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<uuid::Uuid>,
    ApiJson(body): ApiJson<LifecycleOverride>,
) -> Result<Json<PlanLifecycle>, ApiError> {
    let p = auth.writer()?;
    let o = overrides(body)?;
    let (overrides, effective) = st.db.set_plan_lifecycle(&p.staff(), id, o).await?;
    Ok(Json(PlanLifecycle {
        overrides,
        effective,
    }))
}

/// A renewal: a new expiry, or a period added to the current expiry (or to now, if it has
/// passed). Exactly one of the two.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    /// The new expiry (RFC 3339), in the future.
    pub expires_at: Option<String>,
    /// Seconds of service to add (e.g. 2592000 for 30 days).
    pub period_secs: Option<u64>,
}

/// Renews a subscriber: a subscriber in grace or suspended by expiry gets its plan's profile
/// back at once and its sessions are reconnected (a manual suspension stays until resumed).
#[utoipa::path(post, path = "/api/v1/subscribers/{id}/renew", tag = "lifecycle", params(("id" = String, Path)),
    request_body = RenewBody,
    responses((status = 200, body = SubscriberDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn renew(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<SubscriberId>,
    ApiJson(body): ApiJson<RenewBody>,
) -> Result<Json<SubscriberDto>, ApiError> {
    let p = auth.writer()?;
    let renewal = match (body.expires_at, body.period_secs) {
        (Some(t), None) => Renewal::Until(validate::parse_time("expires_at", &t)?),
        (None, Some(secs)) if (1..=MAX_PERIOD_SECS).contains(&secs) => Renewal::Period(secs),
        (None, Some(_)) => {
            return Err(ApiError::invalid(format!(
                "period_secs must be 1 to {MAX_PERIOD_SECS} (10 years)"
            )));
        }
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of expires_at (RFC 3339) and period_secs",
            ));
        }
    };
    Ok(Json(
        st.db
            .renew_subscriber(&p.staff(), id, renewal)
            .await?
            .into(),
    ))
}

/// One transition in a subscriber's history.
#[derive(Serialize, ToSchema)]
pub struct EventDto {
    /// The phase it went to: `active`, `grace`, `suspended`.
    pub phase: String,
    /// Why: `expiry` (applied by the agent at the moment), `manual`, `resume`, `renewal`.
    pub reason: String,
    /// The expiry it followed from (or the new one, for a renewal).
    pub expires_at: Option<String>,
    /// When it was due by the subscriber's times (expiry transitions).
    pub due_at: Option<String>,
    /// When it happened (on the router, for expiry transitions).
    pub at: String,
    /// Who: a staff token's name, or `agent:<name>`.
    pub actor: String,
    /// False for an expiry transition a renewal had already overtaken (history only).
    pub current: bool,
}

/// Where a subscriber stands in its lifecycle.
#[derive(Serialize, ToSchema)]
pub struct LifecycleDto {
    /// The subscriber.
    pub subscriber: SubscriberDto,
    /// The settings that apply (tenant's with the plan's overrides).
    pub settings: LifecycleSettings,
    /// When its grace ends, if it expires and has grace.
    pub grace_until: Option<String>,
    /// The phase its times give it now; `status` follows once the router confirms it.
    pub phase_now: String,
    /// Its transitions, newest first.
    pub events: Vec<EventDto>,
}

impl From<LifecycleView> for LifecycleDto {
    fn from(v: LifecycleView) -> Self {
        Self {
            phase_now: v.phase_now.as_str().to_owned(),
            subscriber: v.subscriber.into(),
            settings: v.settings,
            grace_until: v.grace_until.map(validate::format_time),
            events: v
                .events
                .into_iter()
                .map(|e| EventDto {
                    phase: e.phase,
                    reason: e.reason,
                    expires_at: e.expires_at.map(validate::format_time),
                    due_at: e.due_at.map(validate::format_time),
                    at: validate::format_time(e.at),
                    actor: e.actor,
                    current: e.current,
                })
                .collect(),
        }
    }
}

/// Shows where a subscriber stands in its lifecycle, with its transitions.
#[utoipa::path(get, path = "/api/v1/subscribers/{id}/lifecycle", tag = "lifecycle", params(("id" = String, Path)),
    responses((status = 200, body = LifecycleDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn show_subscriber(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<SubscriberId>,
) -> Result<Json<LifecycleDto>, ApiError> {
    Ok(Json(
        st.db.subscriber_lifecycle(&p.scope(), id).await?.into(),
    ))
}
