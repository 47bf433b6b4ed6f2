//! `/api/v1/audit`: the audit log, filtered and paginated, as JSON or CSV (the same columns
//! with a header row).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tikfleet_shared::{RouterId, TenantId};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody, ErrorDetail};
use super::extract::{ApiQuery, Auth};
use super::jobs::error_detail;
use super::validate;
use crate::app::AppState;
use crate::db::PageRequest;
use crate::db::audit::{AuditEntry, AuditFilter};

/// The CSV header row.
pub const CSV_HEADER: &str = "id,at,tenant_id,router_id,actor,action,params,status,error";

/// One audit record.
#[derive(Serialize, ToSchema)]
pub struct AuditDto {
    /// Its id.
    pub id: String,
    /// When (RFC 3339).
    pub at: String,
    /// The tenant, or null for rows about no tenant.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub tenant_id: Option<TenantId>,
    /// The router, or null.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub router_id: Option<RouterId>,
    /// Who: a staff token's name, `agent:<name>` or `system`.
    pub actor: String,
    /// What, e.g. `subscriber.create` or `/ppp/secret/set`.
    pub action: String,
    /// Parameters; secrets are `<redacted>`.
    pub params: BTreeMap<String, String>,
    /// `succeeded` or `failed`.
    pub status: String,
    /// The error when failed, or null.
    pub error: Option<ErrorDetail>,
}

impl From<AuditEntry> for AuditDto {
    fn from(e: AuditEntry) -> Self {
        Self {
            id: e.id,
            at: validate::format_time(e.at),
            tenant_id: e.tenant_id,
            router_id: e.router_id,
            actor: e.actor,
            action: e.action,
            params: e.params,
            status: e.status,
            error: e.error.map(error_detail),
        }
    }
}

/// A page of audit records.
#[derive(Serialize, ToSchema)]
pub struct AuditList {
    /// The records, oldest first.
    pub items: Vec<AuditDto>,
    /// The next page's cursor, or null.
    pub next_cursor: Option<String>,
}

/// Filters of the audit log.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Page size (1 to 500, default 50). With `format=csv` and no limit, every match.
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this router's records.
    #[param(value_type = Option<String>, format = Uuid)]
    pub router_id: Option<RouterId>,
    /// Only this action.
    pub action: Option<String>,
    /// Only `succeeded` or `failed`.
    pub status: Option<String>,
    /// At or after this time (RFC 3339).
    pub from: Option<String>,
    /// Before this time (RFC 3339).
    pub to: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// The audit log.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditList, description = "JSON, or text/csv with format=csv"),
        (status = "4XX", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(st): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::invalid("format must be json or csv")),
    };
    if let Some(s) = &q.status
        && s != "succeeded"
        && s != "failed"
    {
        return Err(ApiError::invalid("status must be succeeded or failed"));
    }
    if q.action
        .as_ref()
        .is_some_and(|a| a.is_empty() || a.len() > 128)
    {
        return Err(ApiError::invalid("action must be 1 to 128 characters"));
    }
    let filter = AuditFilter {
        router_id: q.router_id,
        action: q.action.clone(),
        status: q.status.clone(),
        from: q
            .from
            .as_deref()
            .map(|t| validate::parse_time("from", t))
            .transpose()?,
        to: q
            .to
            .as_deref()
            .map(|t| validate::parse_time("to", t))
            .transpose()?,
    };
    let scope = p.scope();
    if !csv {
        let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
        let page = st.db.list_audit(&scope, &filter, &page).await?;
        return Ok(Json(AuditList {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        })
        .into_response());
    }
    let mut out = String::from(CSV_HEADER);
    out.push_str("\r\n");
    let mut cursor = q.cursor.clone();
    let next = loop {
        let page = PageRequest::parse(
            Some(q.limit.unwrap_or(crate::db::page::MAX_LIMIT)),
            cursor.as_deref(),
        )?;
        let page = st.db.list_audit(&scope, &filter, &page).await?;
        for e in page.items {
            csv_row(&mut out, AuditDto::from(e));
        }
        if q.limit.is_some() || page.next_cursor.is_none() {
            break page.next_cursor;
        }
        cursor = page.next_cursor;
    };
    let mut response = out.into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"audit.csv\""),
    );
    if let Some(next) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        headers.insert(HeaderName::from_static("x-next-cursor"), next);
    }
    Ok(response)
}

fn csv_row(out: &mut String, e: AuditDto) {
    let params = serde_json::to_string(&e.params).unwrap_or_default();
    let error = e
        .error
        .map(|x| {
            serde_json::json!({"code": x.code, "message": x.message, "retryable": x.retryable})
                .to_string()
        })
        .unwrap_or_default();
    let fields = [
        e.id,
        e.at,
        e.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
        e.router_id.map(|r| r.to_string()).unwrap_or_default(),
        e.actor,
        e.action,
        params,
        e.status,
        error,
    ];
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f);
    }
    out.push_str("\r\n");
}

/// RFC 4180: quote a field that holds a comma, quote or line break; double inner quotes. A
/// field starting with `=`, `+`, `-` or `@` gets a leading `'` so spreadsheets do not run it
/// as a formula.
fn csv_field(out: &mut String, field: &str) {
    let guarded;
    let field = if field.starts_with(['=', '+', '-', '@']) {
        guarded = format!("'{field}");
        guarded.as_str()
    } else {
        field
    };
    if field.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        let mut s = String::new();
        csv_field(&mut s, "plain");
        s.push('|');
        csv_field(&mut s, "a,b");
        s.push('|');
        csv_field(&mut s, "say \"hi\"");
        s.push('|');
        csv_field(&mut s, "=1+1");
        assert_eq!(s, "plain|\"a,b\"|\"say \"\"hi\"\"\"|'=1+1");
    }
}
