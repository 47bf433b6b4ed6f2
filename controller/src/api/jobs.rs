//! `/api/v1/jobs`: one-off router operations, their progress, attempts and errors;
//! re-queue and cancel.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tikfleet_shared::{ErrorInfo, JobId, RouterId};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody, ErrorDetail};
use super::extract::{ApiPath, ApiQuery, Auth};
use super::validate;
use crate::app::AppState;
use crate::db::PageRequest;
use crate::db::jobs::{JobFilter, JobRecord, parse_status, priority_name, status_name};

/// A job's progress.
#[derive(Serialize, ToSchema)]
pub struct ProgressDto {
    /// Steps done.
    pub done: u64,
    /// Steps in all.
    pub total: u64,
}

/// A job.
#[derive(Serialize, ToSchema)]
pub struct JobDto {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: JobId,
    /// The operation, e.g. `upsert_ppp_secret`.
    pub kind: String,
    /// `queued`, `running`, `retrying`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Progress.
    pub progress: ProgressDto,
    /// The last error, or null.
    pub error: Option<ErrorDetail>,
    /// The router it runs on.
    #[schema(value_type = String, format = Uuid)]
    pub router_id: RouterId,
    /// `critical`, `normal` or `bulk`.
    pub priority: String,
    /// Its idempotency key.
    pub idempotency_key: String,
    /// Short result text from the agent, or null.
    pub detail: Option<String>,
    /// Whether the agent has stored it.
    pub delivered: bool,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

pub(crate) fn error_detail(e: ErrorInfo) -> ErrorDetail {
    ErrorDetail {
        code: e.code.as_str().to_owned(),
        message: e.message,
        retryable: e.retryable,
    }
}

impl From<JobRecord> for JobDto {
    fn from(j: JobRecord) -> Self {
        Self {
            id: j.id,
            kind: j.kind,
            status: status_name(j.status).to_owned(),
            attempts: j.attempts,
            progress: ProgressDto {
                done: j.progress.done,
                total: j.progress.total,
            },
            error: j.error.map(error_detail),
            router_id: j.router_id,
            priority: priority_name(j.priority).to_owned(),
            idempotency_key: j.idempotency_key,
            detail: j.detail,
            delivered: j.delivered_at.is_some(),
            created_at: validate::format_time(j.created_at),
            updated_at: validate::format_time(j.updated_at),
        }
    }
}

/// A page of jobs.
#[derive(Serialize, ToSchema)]
pub struct JobList {
    /// The jobs.
    pub items: Vec<JobDto>,
    /// The next page's cursor, or null.
    pub next_cursor: Option<String>,
}

/// Filters of the job list.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    /// Page size (1 to 500, default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this router's jobs.
    #[param(value_type = Option<String>, format = Uuid)]
    pub router_id: Option<RouterId>,
    /// Only jobs with this status.
    pub status: Option<String>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
}

/// Lists jobs.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobQuery),
    responses((status = 200, body = JobList), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<JobQuery>,
) -> Result<Json<JobList>, ApiError> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let status = q
        .status
        .map(|s| {
            parse_status(&s).ok_or_else(|| {
                ApiError::invalid(
                    "status must be queued, running, retrying, succeeded, failed or cancelled",
                )
            })
        })
        .transpose()?;
    if let Some(kind) = &q.kind
        && !tikfleet_shared::job::JobOp::NAMES.contains(&kind.as_str())
    {
        return Err(ApiError::invalid(
            "kind must be a job operation name such as upsert_ppp_secret",
        ));
    }
    let filter = JobFilter {
        router_id: q.router_id,
        status,
        kind: q.kind,
    };
    let page = st.db.list_jobs(&p.scope(), &filter, &page).await?;
    Ok(Json(JobList {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Shows a job with its progress and attempts.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = JobDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn show(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<JobId>,
) -> Result<Json<JobDto>, ApiError> {
    Ok(Json(st.db.get_job(&p.scope(), id).await?.into()))
}

/// Re-queues a failed or cancelled job.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/requeue", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = JobDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn requeue(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<JobId>,
) -> Result<Json<JobDto>, ApiError> {
    let p = auth.writer()?;
    Ok(Json(st.db.requeue_job(&p.staff(), id).await?.into()))
}

/// Cancels a job that has not finished.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = JobDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn cancel(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<JobId>,
) -> Result<Json<JobDto>, ApiError> {
    let p = auth.writer()?;
    Ok(Json(st.db.cancel_job(&p.staff(), id).await?.into()))
}
