//! Staff tokens and enrollment tokens: random secrets shown once, stored as SHA-256 only.
//!
//! A staff token is an admin (no tenant) or an operator or viewer of one tenant. An enrollment
//! token lets one agent join one tenant, once, before it expires.

use std::time::Duration;

use tikfleet_shared::record::AuditParams;
use tikfleet_shared::{TenantId, UnixMillis};

use super::sql::Sql;
use super::{Db, DbError, Page, PageRequest, RowExt as _, Scope, Staff, audit_staff};
use crate::auth::{Principal, Role};
use crate::crypto::{new_token, token_hash};

/// Prefix of staff tokens.
pub const STAFF_TOKEN_PREFIX: &str = "tfs_";
/// Prefix of enrollment tokens.
pub const ENROLLMENT_TOKEN_PREFIX: &str = "tfe_";

/// A staff token as stored (without its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaffToken {
    /// Its id.
    pub id: String,
    /// Its tenant; `None` for admins.
    pub tenant_id: Option<TenantId>,
    /// Its role.
    pub role: Role,
    /// Its name (the actor in audit rows).
    pub name: String,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it was revoked, if it was.
    pub revoked_at: Option<UnixMillis>,
}

/// An enrollment token as stored (without its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// Its id.
    pub id: String,
    /// The tenant an agent joins with it.
    pub tenant_id: TenantId,
    /// When it stops working.
    pub expires_at: UnixMillis,
}

fn staff_token(row: &sqlx::any::AnyRow) -> Result<StaffToken, DbError> {
    let role = row.text("role")?;
    Ok(StaffToken {
        id: row.text("id")?,
        tenant_id: row.opt_parse("tenant_id")?,
        role: Role::parse(&role).ok_or_else(|| DbError::Corrupt(format!("role {role:?}")))?,
        name: row.text("name")?,
        created_at: row.millis("created_at")?,
        revoked_at: row.opt_millis("revoked_at")?,
    })
}

impl Db {
    async fn insert_staff_token(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        tenant: Option<TenantId>,
        role: Role,
        name: &str,
    ) -> Result<(StaffToken, String), DbError> {
        let secret = new_token(STAFF_TOKEN_PREFIX)?;
        let token = StaffToken {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: tenant,
            role,
            name: name.to_owned(),
            created_at: self.now(),
            revoked_at: None,
        };
        let mut q = Sql::new(
            "INSERT INTO staff_tokens (id, tenant_id, role, name, token_hash, created_at) VALUES (",
        );
        q.bind(token.id.clone())
            .push(", ")
            .bind(tenant.map(|t| t.to_string()))
            .push(", ")
            .bind(role.as_str().to_owned())
            .push(", ")
            .bind(name.to_owned())
            .push(", ")
            .bind(token_hash(&secret))
            .push(", ")
            .bind(token.created_at.as_millis())
            .push(")");
        q.execute(&mut **tx).await?;
        Ok((token, secret))
    }

    /// Creates an operator or viewer token for `tenant`; returns it and its secret (shown once).
    ///
    /// # Errors
    /// The tenant is not visible, the role is `admin`, the caller is not allowed, or the
    /// database failed.
    pub async fn create_staff_token(
        &self,
        staff: &Staff,
        tenant: TenantId,
        role: Role,
        name: &str,
    ) -> Result<(StaffToken, String), DbError> {
        if role == Role::Admin {
            return Err(DbError::Invalid(
                "a tenant's token is an operator or a viewer; admin tokens belong to no tenant"
                    .into(),
            ));
        }
        let mut tx = self.begin().await?;
        self.tenant_visible(&mut tx, &staff.scope, tenant).await?;
        let (token, secret) = self
            .insert_staff_token(&mut tx, Some(tenant), role, name)
            .await?;
        let mut params = AuditParams::new();
        params
            .insert("name", name)
            .insert("role", role.as_str())
            .insert("id", token.id.clone());
        audit_staff(
            &mut tx,
            token.created_at,
            Some(tenant),
            None,
            &staff.actor,
            "staff_token.create",
            &params,
        )
        .await?;
        tx.commit().await?;
        Ok((token, secret))
    }

    /// Creates an admin token; returns it and its secret (shown once). For bootstrapping and
    /// the command line, not the API.
    ///
    /// # Errors
    /// The database failed.
    pub async fn create_admin_token(&self, name: &str) -> Result<(StaffToken, String), DbError> {
        let mut tx = self.begin().await?;
        let (token, secret) = self
            .insert_staff_token(&mut tx, None, Role::Admin, name)
            .await?;
        let mut params = AuditParams::new();
        params
            .insert("name", name)
            .insert("role", "admin")
            .insert("id", token.id.clone());
        audit_staff(
            &mut tx,
            token.created_at,
            None,
            None,
            "system",
            "staff_token.create",
            &params,
        )
        .await?;
        tx.commit().await?;
        Ok((token, secret))
    }

    /// Creates the first admin token when no usable admin token exists, and returns its
    /// secret; `None` when there already is one.
    ///
    /// # Errors
    /// The database failed.
    pub async fn bootstrap_admin(&self) -> Result<Option<String>, DbError> {
        let mut tx = self.begin().await?;
        let row = Sql::new(
            "SELECT COUNT(*) AS n FROM staff_tokens WHERE role = 'admin' AND revoked_at IS NULL",
        )
        .fetch_one(&mut *tx)
        .await?;
        if row.int("n")? > 0 {
            return Ok(None);
        }
        let (token, secret) = self
            .insert_staff_token(&mut tx, None, Role::Admin, "bootstrap-admin")
            .await?;
        let mut params = AuditParams::new();
        params
            .insert("name", "bootstrap-admin")
            .insert("role", "admin")
            .insert("id", token.id.clone());
        audit_staff(
            &mut tx,
            token.created_at,
            None,
            None,
            "system",
            "staff_token.create",
            &params,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(secret))
    }

    /// Tokens of `tenant`, if visible in `scope`.
    ///
    /// # Errors
    /// The tenant is not visible, or the database failed.
    pub async fn list_staff_tokens(
        &self,
        scope: &Scope,
        tenant: TenantId,
        page: &PageRequest,
    ) -> Result<Page<StaffToken>, DbError> {
        self.get_tenant(scope, tenant).await?;
        let mut q = Sql::new(
            "SELECT id, tenant_id, role, name, created_at, revoked_at FROM staff_tokens WHERE tenant_id = ",
        );
        q.bind(tenant.to_string());
        scope.filter(&mut q, "tenant_id");
        page.apply(&mut q, "id");
        let rows = q.fetch_all(self.pool()).await?;
        let items = rows
            .iter()
            .map(staff_token)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page.finish(items, |t| t.id.clone()))
    }

    /// Revokes a token of `tenant`; it stops working at once.
    ///
    /// # Errors
    /// The tenant or token is not visible, or the database failed.
    pub async fn revoke_staff_token(
        &self,
        staff: &Staff,
        tenant: TenantId,
        token_id: &str,
    ) -> Result<StaffToken, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        self.tenant_visible(&mut tx, &staff.scope, tenant).await?;
        let mut q = Sql::new("UPDATE staff_tokens SET revoked_at = ");
        q.bind(now.as_millis())
            .push(" WHERE revoked_at IS NULL AND id = ")
            .bind(token_id.to_owned())
            .push(" AND tenant_id = ")
            .bind(tenant.to_string());
        q.execute(&mut *tx).await?;
        let mut q = Sql::new(
            "SELECT id, tenant_id, role, name, created_at, revoked_at FROM staff_tokens WHERE id = ",
        );
        q.bind(token_id.to_owned())
            .push(" AND tenant_id = ")
            .bind(tenant.to_string());
        let row = q
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(DbError::NotFound("token"))?;
        let token = staff_token(&row)?;
        let mut params = AuditParams::new();
        params.insert("id", token_id);
        audit_staff(
            &mut tx,
            now,
            Some(tenant),
            None,
            &staff.actor,
            "staff_token.revoke",
            &params,
        )
        .await?;
        tx.commit().await?;
        Ok(token)
    }

    /// The principal of a bearer token, or `None` if it is unknown or revoked.
    ///
    /// # Errors
    /// The database failed.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, DbError> {
        let mut q = Sql::new(
            "SELECT id, tenant_id, role, name, created_at, revoked_at FROM staff_tokens WHERE token_hash = ",
        );
        q.bind(token_hash(token)).push(" AND revoked_at IS NULL");
        let Some(row) = q.fetch_optional(self.pool()).await? else {
            return Ok(None);
        };
        let t = staff_token(&row)?;
        Ok(Some(Principal {
            token_id: t.id,
            name: t.name,
            role: t.role,
            tenant: t.tenant_id,
        }))
    }

    /// Creates a one-time enrollment token for `tenant`, valid for `ttl`; returns it and its
    /// secret (shown once).
    ///
    /// # Errors
    /// The tenant is not visible, or the database failed.
    pub async fn create_enrollment_token(
        &self,
        staff: &Staff,
        tenant: TenantId,
        ttl: Duration,
    ) -> Result<(EnrollmentToken, String), DbError> {
        let now = self.now();
        let secret = new_token(ENROLLMENT_TOKEN_PREFIX)?;
        let token = EnrollmentToken {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: tenant,
            expires_at: now.saturating_add(ttl),
        };
        let mut tx = self.begin().await?;
        self.tenant_visible(&mut tx, &staff.scope, tenant).await?;
        let mut q = Sql::new(
            "INSERT INTO enrollment_tokens (id, tenant_id, token_hash, created_by, created_at, expires_at) VALUES (",
        );
        q.bind(token.id.clone())
            .push(", ")
            .bind(tenant.to_string())
            .push(", ")
            .bind(token_hash(&secret))
            .push(", ")
            .bind(staff.actor.clone())
            .push(", ")
            .bind(now.as_millis())
            .push(", ")
            .bind(token.expires_at.as_millis())
            .push(")");
        q.execute(&mut *tx).await?;
        let mut params = AuditParams::new();
        params
            .insert("id", token.id.clone())
            .insert("expires_at", token.expires_at.as_millis().to_string());
        audit_staff(
            &mut tx,
            now,
            Some(tenant),
            None,
            &staff.actor,
            "enrollment_token.create",
            &params,
        )
        .await?;
        tx.commit().await?;
        Ok((token, secret))
    }

    /// Checks, inside `tx`, that `tenant` exists and is visible in `scope`.
    pub(crate) async fn tenant_visible(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        scope: &Scope,
        tenant: TenantId,
    ) -> Result<(), DbError> {
        let mut q = Sql::new("SELECT id FROM tenants WHERE id = ");
        q.bind(tenant.to_string());
        scope.filter(&mut q, "id");
        q.fetch_optional(&mut **tx)
            .await?
            .ok_or(DbError::NotFound("tenant"))?;
        Ok(())
    }

    /// Replaces the tenant's settings stored as JSON in `column` of `tenants` with `value`,
    /// audited as `action` with the JSON under `param` (alert rules, backup settings).
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub(crate) async fn set_tenant_json<T: serde::Serialize>(
        &self,
        staff: &Staff,
        tenant: TenantId,
        column: &'static str,
        action: &'static str,
        param: &'static str,
        value: &T,
    ) -> Result<(), DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        self.tenant_visible(&mut tx, &staff.scope, tenant).await?;
        let json = serde_json::to_string(value).map_err(|e| DbError::Corrupt(e.to_string()))?;
        let mut q = Sql::new("UPDATE tenants SET ");
        q.push(column)
            .push(" = ")
            .bind(json.clone())
            .push(" WHERE id = ")
            .bind(tenant.to_string());
        q.execute(&mut *tx).await?;
        let mut params = AuditParams::new();
        params.insert(param, json);
        audit_staff(
            &mut tx,
            now,
            Some(tenant),
            None,
            &staff.actor,
            action,
            &params,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
