//! `/api/v1/routers/{id}/backups` and `/api/v1/backups/{id}`: router backups the agents
//! upload (see `db/backups.rs`), listed, taken on demand as a job, downloaded and compared;
//! and `/api/v1/tenants/{id}/backups`: the tenant's schedule and retention settings.
//!
//! Who may do what: every role lists backups, reads text exports (always redacted) and the
//! tenant's backup settings; operators and admins take backups, download binary ones
//! (encrypted by the router, but still a full copy of the configuration) and change the
//! settings. Every download and diff is audited, without content.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tikfleet_shared::record::BackupKind;
use tikfleet_shared::{JobId, RouterId, TenantId};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Auth};
use super::jobs::JobDto;
use super::validate;
use crate::app::AppState;
use crate::db::backups::{Backup, BackupSettings, export_diff, redact_export};

/// One stored backup file.
#[derive(Serialize, ToSchema)]
pub struct BackupDto {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// Its tenant.
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
    /// The router.
    #[schema(value_type = String, format = Uuid)]
    pub router_id: RouterId,
    /// The `backup_now` job that took it.
    #[schema(value_type = String, format = Uuid)]
    pub job_id: JobId,
    /// `export` (the `/export` text) or `binary` (`/system/backup/save`, encrypted).
    pub kind: String,
    /// When the agent took it (RFC 3339).
    pub taken_at: String,
    /// The router's RouterOS version then.
    pub ros_version: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// A text export whose configuration equals the previous export's (stored once).
    pub unchanged: bool,
}

impl From<Backup> for BackupDto {
    fn from(b: Backup) -> Self {
        Self {
            id: b.id,
            tenant_id: b.tenant_id,
            router_id: b.router_id,
            job_id: b.job_id,
            kind: b.kind.as_str().to_owned(),
            taken_at: validate::format_time(b.taken_at),
            ros_version: b.ros_version,
            size: b.size,
            sha256: b.sha256,
            unchanged: b.unchanged,
        }
    }
}

/// A router's backups, newest first.
#[derive(Serialize, ToSchema)]
pub struct BackupList {
    /// The backups.
    pub items: Vec<BackupDto>,
}

/// Paging of a backup list.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BackupQuery {
    /// At most this many (1 to 500, default 100).
    pub limit: Option<u32>,
}

/// What to compare a backup with.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The older text export.
    pub against: String,
}

/// Lists a router's backups.
#[utoipa::path(get, path = "/api/v1/routers/{id}/backups", tag = "backups",
    params(("id" = String, Path), BackupQuery),
    responses((status = 200, body = BackupList), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<RouterId>,
    ApiQuery(q): ApiQuery<BackupQuery>,
) -> Result<Json<BackupList>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 500"));
    }
    let items = st.db.list_backups(&p.scope(), id, limit).await?;
    Ok(Json(BackupList {
        items: items.into_iter().map(Into::into).collect(),
    }))
}

/// Takes a backup of a router now (text export and binary); follow the job with
/// `GET /jobs/{id}`.
#[utoipa::path(post, path = "/api/v1/routers/{id}/backups", tag = "backups", params(("id" = String, Path)),
    responses((status = 202, body = JobDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<RouterId>,
) -> Result<(StatusCode, Json<JobDto>), ApiError> {
    let p = auth.writer()?;
    let job = st.db.request_backup(&p.staff(), id).await?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

/// Downloads a backup: a text export as `text/plain` with secret values redacted, a binary
/// backup (operators and admins only) as `application/octet-stream`.
#[utoipa::path(get, path = "/api/v1/backups/{id}", tag = "backups", params(("id" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn download(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let (backup, data) = st.db.get_backup(&p.scope(), id).await?;
    if backup.kind == BackupKind::Binary && !p.can_write() {
        return Err(ApiError::forbidden(
            "downloading a binary backup needs an operator or admin token",
        ));
    }
    st.db
        .audit_backup_read(&p.staff(), &backup, "backup.download", None)
        .await?;
    let name = format!(
        "{}-{}.{}",
        backup.router_id,
        backup.id,
        match backup.kind {
            BackupKind::Export => "rsc",
            BackupKind::Binary => "backup",
        }
    );
    let disposition = format!("attachment; filename=\"{name}\"");
    Ok(match backup.kind {
        BackupKind::Export => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            redact_export(&String::from_utf8_lossy(&data)),
        )
            .into_response(),
        BackupKind::Binary => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            data,
        )
            .into_response(),
    })
}

/// A unified diff (`text/plain`) from the text export `against` to this one, secret values
/// redacted.
#[utoipa::path(get, path = "/api/v1/backups/{id}/diff", tag = "backups",
    params(("id" = String, Path), DiffQuery),
    responses((status = 200, content_type = "text/plain", body = String), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn diff(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> Result<Response, ApiError> {
    let against: Uuid = q
        .against
        .parse()
        .map_err(|_| ApiError::invalid("against must be a backup id"))?;
    let scope = p.scope();
    let (new, new_data) = st.db.get_backup(&scope, id).await?;
    let (old, old_data) = st.db.get_backup(&scope, against).await?;
    if new.kind != BackupKind::Export || old.kind != BackupKind::Export {
        return Err(ApiError::invalid("only text exports can be compared"));
    }
    st.db
        .audit_backup_read(&p.staff(), &new, "backup.diff", Some(against))
        .await?;
    let text = export_diff(
        &String::from_utf8_lossy(&old_data),
        &String::from_utf8_lossy(&new_data),
        &old.id.to_string(),
        &new.id.to_string(),
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// Restores a binary backup on its router: a job whose agent fetches the file in parts over
/// its link, checks its SHA-256, uploads and loads it, waits for the router to reboot,
/// reports its version and removes the uploaded file (operators and admins).
#[utoipa::path(post, path = "/api/v1/backups/{id}/restore", tag = "backups", params(("id" = String, Path)),
    responses((status = 202, body = JobDto), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn restore(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, Json<JobDto>), ApiError> {
    let p = auth.writer()?;
    let job = st.db.request_restore(&p.staff(), id).await?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

/// Shows a tenant's backup schedule and retention.
#[utoipa::path(get, path = "/api/v1/tenants/{id}/backups", tag = "backups", params(("id" = String, Path)),
    responses((status = 200, body = BackupSettings), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn show_settings(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<TenantId>,
) -> Result<Json<BackupSettings>, ApiError> {
    Ok(Json(st.db.backup_settings(&p.scope(), id).await?))
}

/// Replaces a tenant's backup schedule and retention (fields left out take their defaults;
/// operators and admins).
#[utoipa::path(put, path = "/api/v1/tenants/{id}/backups", tag = "backups", params(("id" = String, Path)),
    request_body = BackupSettings,
    responses((status = 200, body = BackupSettings), (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn set_settings(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<BackupSettings>,
) -> Result<Json<BackupSettings>, ApiError> {
    let p = auth.writer()?;
    Ok(Json(
        st.db.set_backup_settings(&p.staff(), id, &body).await?,
    ))
}
