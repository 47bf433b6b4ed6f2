//! Who is calling: staff roles and the authenticated principal.
//!
//! A bearer token resolves (through [`Db::authenticate`](crate::db::Db::authenticate)) to a
//! [`Principal`]: its role and, for operators and viewers, its one tenant. The principal
//! turns into the [`Scope`] every storage call takes, so tenant isolation is applied by the
//! storage layer, and into the actor name that audit rows carry.

use tikfleet_shared::TenantId;

use crate::db::{Scope, Staff};

/// A staff token's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything, across tenants.
    Admin,
    /// Read and write within one tenant.
    Operator,
    /// Read only, within one tenant.
    Viewer,
}

impl Role {
    /// The role's name in the API and the database.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Viewer => "viewer",
        }
    }

    /// Parses a role name.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Self::Admin),
            "operator" => Some(Self::Operator),
            "viewer" => Some(Self::Viewer),
            _ => None,
        }
    }
}

/// An authenticated staff token.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The token's id.
    pub token_id: String,
    /// The token's name: the actor in audit rows.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its tenant; `None` for admins.
    pub tenant: Option<TenantId>,
}

impl Principal {
    /// The storage scope of this principal's reads.
    #[must_use]
    pub fn scope(&self) -> Scope {
        match (self.role, self.tenant) {
            (Role::Admin, _) => Scope::Admin,
            (_, Some(tenant)) => Scope::Tenant(tenant),
            // A non-admin token always has a tenant (the database enforces it at creation);
            // should one not, it sees nothing.
            (_, None) => Scope::Nothing,
        }
    }

    /// Whether the principal may change things.
    #[must_use]
    pub fn can_write(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Operator)
    }

    /// The scope and actor name for a change.
    #[must_use]
    pub fn staff(&self) -> Staff {
        Staff {
            scope: self.scope(),
            actor: self.name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip() {
        for role in [Role::Admin, Role::Operator, Role::Viewer] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn scopes() {
        let tenant = TenantId::new();
        let p = |role, tenant| Principal {
            token_id: "t".into(),
            name: "n".into(),
            role,
            tenant,
        };
        assert_eq!(p(Role::Admin, None).scope(), Scope::Admin);
        assert_eq!(p(Role::Viewer, Some(tenant)).scope(), Scope::Tenant(tenant));
        assert_eq!(p(Role::Operator, None).scope(), Scope::Nothing);
        assert!(p(Role::Operator, Some(tenant)).can_write());
        assert!(!p(Role::Viewer, Some(tenant)).can_write());
    }
}
