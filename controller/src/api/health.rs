//! Router health and versions: `GET /api/v1/routers/{id}/health` (a time series from the
//! agents' probes, [`crate::db::health`]) and `GET /api/v1/routers/outdated` (routers with a
//! RouterOS update, outdated firmware or an unsupported version). Viewers may read both.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tikfleet_shared::{RouterId, UnixMillis};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiPath, ApiQuery, Auth};
use super::routers::{RouterDto, RouterList};
use super::{ListQuery, validate};
use crate::app::AppState;
use crate::db::health::{HealthPoint, HealthSeries};

/// The range and step of a health query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HealthQuery {
    /// Start (RFC 3339, inclusive); default: one hour before `to`.
    pub from: Option<String>,
    /// End (RFC 3339, exclusive); default: now.
    pub to: Option<String>,
    /// Step in seconds (default 60). Under 300 and within the raw retention (48 hours by
    /// default) the points come from raw samples; otherwise from 5-minute rollups (the step is rounded up to a
    /// multiple of 300).
    pub step: Option<u64>,
}

/// One point: the samples in `[at, at + step)`.
#[derive(Serialize, ToSchema)]
pub struct HealthPointDto {
    /// Start of the step (RFC 3339).
    pub at: String,
    /// Samples in the step.
    pub samples: u64,
    /// Average CPU load, percent.
    pub cpu_avg: f64,
    /// Highest CPU load, percent.
    pub cpu_max: u8,
    /// Lowest free memory, bytes.
    pub mem_free_min: u64,
    /// Average free memory, bytes.
    pub mem_free_avg: u64,
    /// Total memory, bytes.
    pub mem_total: u64,
    /// Uptime at the step's last sample, seconds.
    pub uptime_secs: u64,
    /// Lowest free disk, bytes.
    pub disk_free_min: u64,
    /// Total disk, bytes.
    pub disk_total: u64,
    /// Most active PPP sessions.
    pub ppp_max: u32,
    /// Average active PPP sessions.
    pub ppp_avg: f64,
    /// Most active hotspot sessions.
    pub hotspot_max: u32,
    /// Average active hotspot sessions.
    pub hotspot_avg: f64,
    /// Bytes received by all interfaces (cumulative since boot, highest in the step).
    pub rx_bytes: u64,
    /// Bytes sent by all interfaces (cumulative since boot, highest in the step).
    pub tx_bytes: u64,
}

impl From<HealthPoint> for HealthPointDto {
    fn from(p: HealthPoint) -> Self {
        Self {
            at: validate::format_time(p.at),
            samples: p.samples,
            cpu_avg: p.cpu_avg,
            cpu_max: p.cpu_max,
            mem_free_min: p.mem_free_min,
            mem_free_avg: p.mem_free_avg,
            mem_total: p.mem_total,
            uptime_secs: p.uptime_secs,
            disk_free_min: p.disk_free_min,
            disk_total: p.disk_total,
            ppp_max: p.ppp_max,
            ppp_avg: p.ppp_avg,
            hotspot_max: p.hotspot_max,
            hotspot_avg: p.hotspot_avg,
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
        }
    }
}

/// A router's health series.
#[derive(Serialize, ToSchema)]
pub struct HealthDto {
    /// The router.
    #[schema(value_type = String, format = Uuid)]
    pub router_id: RouterId,
    /// Start (RFC 3339).
    pub from: String,
    /// End (RFC 3339).
    pub to: String,
    /// The step used, in seconds.
    pub step: u64,
    /// `raw` or `rollup`.
    pub source: String,
    /// The points, oldest first; steps without samples are left out.
    pub points: Vec<HealthPointDto>,
}

impl From<HealthSeries> for HealthDto {
    fn from(s: HealthSeries) -> Self {
        Self {
            router_id: s.router_id,
            from: validate::format_time(s.from),
            to: validate::format_time(s.to),
            step: s.step_secs,
            source: s.source.as_str().to_owned(),
            points: s.points.into_iter().map(Into::into).collect(),
        }
    }
}

/// A router's health (CPU, memory, disk, uptime, sessions, traffic) over time.
#[utoipa::path(get, path = "/api/v1/routers/{id}/health", tag = "health",
    params(("id" = String, Path), HealthQuery),
    responses((status = 200, body = HealthDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn show(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<RouterId>,
    ApiQuery(q): ApiQuery<HealthQuery>,
) -> Result<Json<HealthDto>, ApiError> {
    let to = match &q.to {
        Some(t) => validate::parse_time("to", t)?,
        None => st.clock.now(),
    };
    let from = match &q.from {
        Some(f) => validate::parse_time("from", f)?,
        None => UnixMillis(to.as_millis() - 3_600_000),
    };
    if to.as_millis() <= from.as_millis() {
        return Err(ApiError::invalid("to must be after from"));
    }
    let step = q.step.unwrap_or(60);
    let series = st
        .db
        .router_health(&p.scope(), id, from, to, step, st.health_raw)
        .await?;
    Ok(Json(series.into()))
}

/// Routers with a RouterOS update available, outdated RouterBOARD firmware, or a RouterOS
/// older than the supported minimum (6.43).
#[utoipa::path(get, path = "/api/v1/routers/outdated", tag = "health", params(ListQuery),
    responses((status = 200, body = RouterList), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn outdated(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<RouterList>, ApiError> {
    let page = st.db.outdated_routers(&p.scope(), &q.page()?).await?;
    Ok(Json(RouterList {
        items: page.items.into_iter().map(RouterDto::from).collect(),
        next_cursor: page.next_cursor,
    }))
}
