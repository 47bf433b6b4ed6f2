//! Alerts: `GET /api/v1/alerts` (filter by state, router, severity), `GET /api/v1/alerts/{id}`,
//! `POST /api/v1/alerts/{id}/acknowledge` (operators and admins), and a tenant's rules,
//! `GET/PUT /api/v1/tenants/{id}/alert-rules`. Rules are evaluated by the controller
//! ([`crate::db::alerts`]); see docs/alerts.md.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tikfleet_shared::{AgentId, RouterId, TenantId};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Auth};
use super::validate;
use crate::alerts::{AlertRules, Severity};
use crate::app::AppState;
use crate::db::PageRequest;
use crate::db::alerts::{Alert, AlertFilter, AlertState};

/// An alert: one incident of a rule about one router, agent or job.
#[derive(Serialize, ToSchema)]
pub struct AlertDto {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// Its tenant.
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
    /// The router it is about, or null.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub router_id: Option<RouterId>,
    /// The agent it is about, or null.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub agent_id: Option<AgentId>,
    /// `cpu_high`, `memory_low`, `router_unreachable`, `reboot_detected`, `agent_offline`,
    /// `job_dead_lettered` or `auth_failure`.
    pub rule: String,
    /// What it is about: the router's, agent's or job's id.
    pub subject: String,
    /// How urgent it is.
    pub severity: Severity,
    /// `firing` or `resolved`.
    pub state: String,
    /// One line saying what happened.
    pub summary: String,
    /// When it fired (RFC 3339).
    pub started_at: String,
    /// When it resolved, or null.
    pub resolved_at: Option<String>,
    /// When its last notice (firing or reminder) was queued.
    pub last_notified_at: String,
    /// Reminders sent.
    pub reminders: u32,
    /// When staff acknowledged it, or null.
    pub acknowledged_at: Option<String>,
    /// Who acknowledged it (the token's name), or null.
    pub acknowledged_by: Option<String>,
}

impl From<Alert> for AlertDto {
    fn from(a: Alert) -> Self {
        Self {
            id: a.id,
            tenant_id: a.tenant_id,
            router_id: a.router_id,
            agent_id: a.agent_id,
            rule: a.rule.as_str().to_owned(),
            subject: a.subject_key,
            severity: a.severity,
            state: a.state.as_str().to_owned(),
            summary: a.summary,
            started_at: validate::format_time(a.started_at),
            resolved_at: a.resolved_at.map(validate::format_time),
            last_notified_at: validate::format_time(a.last_notified_at),
            reminders: a.reminders,
            acknowledged_at: a.acknowledged_at.map(validate::format_time),
            acknowledged_by: a.acknowledged_by,
        }
    }
}

/// A page of alerts.
#[derive(Serialize, ToSchema)]
pub struct AlertList {
    /// The alerts, oldest first.
    pub items: Vec<AlertDto>,
    /// The next page's cursor, or null.
    pub next_cursor: Option<String>,
}

/// Filters of the alert list.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// `firing`, `resolved` or `all` (default).
    pub state: Option<String>,
    /// Only alerts about this router.
    #[param(value_type = Option<String>, format = Uuid)]
    pub router_id: Option<RouterId>,
    /// Only alerts of this severity: `critical`, `warning` or `info`.
    pub severity: Option<String>,
    /// Page size (1 to 500, default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Lists alerts.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", params(AlertQuery),
    responses((status = 200, body = AlertList), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<AlertQuery>,
) -> Result<Json<AlertList>, ApiError> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let state = match q.state.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(
            s.parse::<AlertState>()
                .map_err(|()| ApiError::invalid("state must be firing, resolved or all"))?,
        ),
    };
    let severity = q
        .severity
        .map(|s| {
            s.parse::<Severity>()
                .map_err(|()| ApiError::invalid("severity must be critical, warning or info"))
        })
        .transpose()?;
    let filter = AlertFilter {
        state,
        router: q.router_id,
        severity,
    };
    let page = st.db.list_alerts(&p.scope(), &filter, &page).await?;
    Ok(Json(AlertList {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Shows an alert.
#[utoipa::path(get, path = "/api/v1/alerts/{id}", tag = "alerts", params(("id" = String, Path)),
    responses((status = 200, body = AlertDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn show(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<AlertDto>, ApiError> {
    Ok(Json(st.db.get_alert(&p.scope(), id).await?.into()))
}

/// Acknowledges a firing alert: no more reminders; it still resolves (with its notice) when
/// its condition ends. Operators and admins only.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/acknowledge", tag = "alerts", params(("id" = String, Path)),
    responses((status = 200, body = AlertDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn acknowledge(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<AlertDto>, ApiError> {
    let p = auth.writer()?;
    Ok(Json(st.db.acknowledge_alert(&p.staff(), id).await?.into()))
}

/// Shows a tenant's alert rules.
#[utoipa::path(get, path = "/api/v1/tenants/{id}/alert-rules", tag = "alerts", params(("id" = String, Path)),
    responses((status = 200, body = AlertRules), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn show_rules(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<Json<AlertRules>, ApiError> {
    Ok(Json(st.db.alert_rules(&p.scope(), id).await?))
}

/// Replaces a tenant's alert rules (fields left out take their defaults).
#[utoipa::path(put, path = "/api/v1/tenants/{id}/alert-rules", tag = "alerts", params(("id" = String, Path)),
    request_body = AlertRules,
    responses((status = 200, body = AlertRules), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn set_rules(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<AlertRules>,
) -> Result<Json<AlertRules>, ApiError> {
    let p = auth.writer()?;
    Ok(Json(st.db.set_alert_rules(&p.staff(), id, &body).await?))
}
