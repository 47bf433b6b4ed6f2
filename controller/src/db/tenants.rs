//! Tenants: one ISP each, the unit of isolation. Only admins create them; other tokens see
//! only their own.

use tikfleet_shared::record::AuditParams;
use tikfleet_shared::{TenantId, UnixMillis};

use super::sql::Sql;
use super::{Db, DbError, Page, PageRequest, RowExt as _, Scope, Staff, audit_staff, unique_as};

/// A tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// Its id.
    pub id: TenantId,
    /// Its name (unique).
    pub name: String,
    /// When it was created.
    pub created_at: UnixMillis,
}

fn tenant(row: &sqlx::any::AnyRow) -> Result<Tenant, DbError> {
    Ok(Tenant {
        id: row.parse("id")?,
        name: row.text("name")?,
        created_at: row.millis("created_at")?,
    })
}

impl Db {
    /// Creates a tenant (admins only).
    ///
    /// # Errors
    /// Not an admin, the name is taken, or the database failed.
    pub async fn create_tenant(&self, staff: &Staff, name: &str) -> Result<Tenant, DbError> {
        if staff.scope != Scope::Admin {
            return Err(DbError::Forbidden(
                "only an admin token can create tenants".into(),
            ));
        }
        let t = Tenant {
            id: TenantId::new(),
            name: name.to_owned(),
            created_at: self.now(),
        };
        let mut tx = self.begin().await?;
        let mut q = Sql::new("INSERT INTO tenants (id, name, created_at) VALUES (");
        q.bind(t.id.to_string())
            .push(", ")
            .bind(t.name.clone())
            .push(", ")
            .bind(t.created_at.as_millis())
            .push(")");
        q.execute(&mut *tx)
            .await
            .map_err(unique_as(format!("a tenant named {name:?} already exists")))?;
        let mut params = AuditParams::new();
        params.insert("name", name);
        audit_staff(
            &mut tx,
            t.created_at,
            Some(t.id),
            None,
            &staff.actor,
            "tenant.create",
            &params,
        )
        .await?;
        tx.commit().await?;
        Ok(t)
    }

    /// Tenants visible in `scope`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn list_tenants(
        &self,
        scope: &Scope,
        page: &PageRequest,
    ) -> Result<Page<Tenant>, DbError> {
        let mut q = Sql::new("SELECT id, name, created_at FROM tenants WHERE 1 = 1");
        scope.filter(&mut q, "id");
        page.apply(&mut q, "id");
        let rows = q.fetch_all(self.pool()).await?;
        let items = rows.iter().map(tenant).collect::<Result<Vec<_>, _>>()?;
        Ok(page.finish(items, |t| t.id.to_string()))
    }

    /// One tenant, if visible in `scope`.
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn get_tenant(&self, scope: &Scope, id: TenantId) -> Result<Tenant, DbError> {
        let mut q = Sql::new("SELECT id, name, created_at FROM tenants WHERE id = ");
        q.bind(id.to_string());
        scope.filter(&mut q, "id");
        let row = q
            .fetch_optional(self.pool())
            .await?
            .ok_or(DbError::NotFound("tenant"))?;
        tenant(&row)
    }
}
