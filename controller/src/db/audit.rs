//! The audit log: staff actions (written by each change, in its transaction) and the router
//! commands agents report (written by `hub`, once per outbox record).

use std::collections::BTreeMap;

use tikfleet_shared::{ErrorInfo, RouterId, TenantId, UnixMillis};

use super::sql::Sql;
use super::{Db, DbError, Page, PageRequest, RowExt as _, Scope};

/// One audit row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its id.
    pub id: String,
    /// When it happened.
    pub at: UnixMillis,
    /// The tenant, if any (admin-only rows have none).
    pub tenant_id: Option<TenantId>,
    /// The router, if any.
    pub router_id: Option<RouterId>,
    /// Who: a staff token's name, `agent:<name>`, or `system`.
    pub actor: String,
    /// What, e.g. `subscriber.create` or `/ppp/secret/set`.
    pub action: String,
    /// Parameters, secrets redacted.
    pub params: BTreeMap<String, String>,
    /// `succeeded` or `failed`.
    pub status: String,
    /// The error, when failed.
    pub error: Option<ErrorInfo>,
}

/// Filters of the audit list.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only this router's rows.
    pub router_id: Option<RouterId>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// At or after.
    pub from: Option<UnixMillis>,
    /// Before.
    pub to: Option<UnixMillis>,
}

fn entry(row: &sqlx::any::AnyRow) -> Result<AuditEntry, DbError> {
    Ok(AuditEntry {
        id: row.text("id")?,
        at: row.millis("at")?,
        tenant_id: row.opt_parse("tenant_id")?,
        router_id: row.opt_parse("router_id")?,
        actor: row.text("actor")?,
        action: row.text("action")?,
        params: serde_json::from_str(&row.text("params")?)
            .map_err(|_| DbError::Corrupt("audit params".into()))?,
        status: row.text("status")?,
        error: row
            .opt_text("error")?
            .map(|e| serde_json::from_str(&e).map_err(|_| DbError::Corrupt("audit error".into())))
            .transpose()?,
    })
}

impl Db {
    /// Audit rows visible in `scope`, filtered, oldest first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn list_audit(
        &self,
        scope: &Scope,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>, DbError> {
        let mut q = Sql::new(
            "SELECT id, at, tenant_id, router_id, actor, action, params, status, error FROM audit WHERE 1 = 1",
        );
        scope.filter(&mut q, "tenant_id");
        if let Some(r) = filter.router_id {
            q.push(" AND router_id = ").bind(r.to_string());
        }
        if let Some(a) = &filter.action {
            q.push(" AND action = ").bind(a.clone());
        }
        if let Some(s) = &filter.status {
            q.push(" AND status = ").bind(s.clone());
        }
        if let Some(from) = filter.from {
            q.push(" AND at >= ").bind(from.as_millis());
        }
        if let Some(to) = filter.to {
            q.push(" AND at < ").bind(to.as_millis());
        }
        page.apply(&mut q, "id");
        let rows = q.fetch_all(self.pool()).await?;
        let items = rows.iter().map(entry).collect::<Result<Vec<_>, _>>()?;
        Ok(page.finish(items, |e| e.id.clone()))
    }
}
