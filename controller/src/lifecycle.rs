//! Lifecycle settings: when subscribers hear that their service expires, what grace looks
//! like, and how suspension is done. Pure types; storage is in [`crate::db::lifecycle`].
//!
//! A tenant has one [`LifecycleSettings`] (the defaults until staff set them); a plan may
//! override any field with a [`LifecycleOverride`]. The compiler turns the settings that hold
//! for a subscriber's plan ([`LifecycleSettings::with`]) into the lifecycle the agent
//! enforces on its own: the grace profile from expiry until `expires_at + grace_period`, then
//! suspension (the account disabled, or moved to the suspended profile whose address list
//! the router redirects to a "please renew" page).

use serde::{Deserialize, Serialize};
use tikfleet_shared::UnixMillis;
use tikfleet_shared::domain::{AccountKind, HotspotProfile, PppProfile, Profile};

use crate::compile::MARKER;

/// How a subscriber is suspended at the end of grace (and when staff suspend by hand).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SuspensionMode {
    /// Disable the PPP secret or hotspot user: no login at all.
    #[default]
    Disable,
    /// Move the account to the suspended profile: it still logs in, at the suspended rate,
    /// and its address joins the suspended address list (for the redirect to a renew page).
    Profile,
}

impl SuspensionMode {
    /// `disable` or `profile`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Profile => "profile",
        }
    }
}

/// A tenant's lifecycle settings (or the result of a plan's override on them). Fields left
/// out of a PUT take their defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleSettings {
    /// Days before expiry on which a notice is sent (default 2 and 1).
    pub notice_days: Vec<u32>,
    /// Seconds of grace after expiry before suspension; 0 suspends at expiry.
    pub grace_period_secs: u64,
    /// Router profile used during grace; `null` keeps the plan's profile during grace.
    pub grace_profile: Option<String>,
    /// Rate limit of the grace profile (RouterOS syntax, e.g. `1M/1M`).
    pub grace_rate_limit: String,
    /// How suspension is done.
    pub suspension_mode: SuspensionMode,
    /// Router profile of suspended accounts (mode `profile`).
    pub suspended_profile: String,
    /// Rate limit of the suspended profile.
    pub suspended_rate_limit: String,
    /// Address list the suspended profile puts its sessions' addresses on; the router's
    /// redirect rule sends them to a "please renew" page. `null`: none.
    pub suspended_address_list: Option<String>,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        Self {
            notice_days: vec![2, 1],
            grace_period_secs: 3 * 86_400,
            grace_profile: Some("tikfleet-grace".into()),
            grace_rate_limit: "1M/1M".into(),
            suspension_mode: SuspensionMode::Disable,
            suspended_profile: "tikfleet-suspended".into(),
            suspended_rate_limit: "64k/64k".into(),
            suspended_address_list: Some("tikfleet-suspended".into()),
        }
    }
}

/// A plan's overrides of its tenant's settings: each field present replaces the tenant's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LifecycleOverride {
    /// Days before expiry on which a notice is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_days: Option<Vec<u32>>,
    /// Seconds of grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_secs: Option<u64>,
    /// Grace profile (`""` for none: the plan's own profile during grace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_profile: Option<String>,
    /// Rate limit of the grace profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_rate_limit: Option<String>,
    /// How suspension is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspension_mode: Option<SuspensionMode>,
    /// Suspended profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_profile: Option<String>,
    /// Rate limit of the suspended profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_rate_limit: Option<String>,
    /// Suspended address list (`""` for none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_address_list: Option<String>,
}

impl LifecycleOverride {
    /// Whether it overrides nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl LifecycleSettings {
    /// These settings with a plan's overrides applied.
    #[must_use]
    pub fn with(&self, o: &LifecycleOverride) -> Self {
        let nonempty = |s: &String| (!s.is_empty()).then(|| s.clone());
        Self {
            notice_days: o
                .notice_days
                .clone()
                .unwrap_or_else(|| self.notice_days.clone()),
            grace_period_secs: o.grace_period_secs.unwrap_or(self.grace_period_secs),
            grace_profile: o
                .grace_profile
                .as_ref()
                .map_or_else(|| self.grace_profile.clone(), nonempty),
            grace_rate_limit: o
                .grace_rate_limit
                .clone()
                .unwrap_or_else(|| self.grace_rate_limit.clone()),
            suspension_mode: o.suspension_mode.unwrap_or(self.suspension_mode),
            suspended_profile: o
                .suspended_profile
                .clone()
                .unwrap_or_else(|| self.suspended_profile.clone()),
            suspended_rate_limit: o
                .suspended_rate_limit
                .clone()
                .unwrap_or_else(|| self.suspended_rate_limit.clone()),
            suspended_address_list: o
                .suspended_address_list
                .as_ref()
                .map_or_else(|| self.suspended_address_list.clone(), nonempty),
        }
    }

    /// The end of grace for an expiry at `expires_at`, or `None` without grace.
    #[must_use]
    pub fn grace_until(&self, expires_at: UnixMillis) -> Option<UnixMillis> {
        (self.grace_period_secs > 0).then(|| {
            UnixMillis(expires_at.as_millis().saturating_add(
                i64::try_from(self.grace_period_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            ))
        })
    }

    /// The suspended profile's name, when suspension moves accounts to it.
    #[must_use]
    pub fn suspended_profile_name(&self) -> Option<&str> {
        (self.suspension_mode == SuspensionMode::Profile).then_some(self.suspended_profile.as_str())
    }

    /// The grace profile for accounts of `kind`, if grace uses one.
    #[must_use]
    pub fn grace_router_profile(&self, kind: AccountKind) -> Option<Profile> {
        let name = self.grace_profile.as_ref()?;
        Some(router_profile(
            kind,
            name,
            &self.grace_rate_limit,
            None,
            "grace",
        ))
    }

    /// The suspended profile for accounts of `kind`, if suspension uses one.
    #[must_use]
    pub fn suspended_router_profile(&self, kind: AccountKind) -> Option<Profile> {
        let name = self.suspended_profile_name()?;
        Some(router_profile(
            kind,
            name,
            &self.suspended_rate_limit,
            self.suspended_address_list.clone(),
            "suspended",
        ))
    }
}

fn router_profile(
    kind: AccountKind,
    name: &str,
    rate_limit: &str,
    address_list: Option<String>,
    role: &str,
) -> Profile {
    match kind {
        AccountKind::Ppp => Profile::Ppp(PppProfile {
            name: name.to_owned(),
            rate_limit: Some(rate_limit.to_owned()),
            address_list,
            local_address: None,
            remote_address: None,
            dns_server: None,
            only_one: None,
            comment: Some(format!("{MARKER} {role} profile")),
        }),
        AccountKind::Hotspot => Profile::Hotspot(HotspotProfile {
            name: name.to_owned(),
            rate_limit: Some(rate_limit.to_owned()),
            address_list,
            shared_users: None,
            session_timeout_secs: None,
            idle_timeout_secs: None,
            comment: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_overrides_replace_only_what_they_name() {
        let tenant = LifecycleSettings::default();
        assert_eq!(tenant.with(&LifecycleOverride::default()), tenant);
        let o = LifecycleOverride {
            grace_period_secs: Some(60),
            grace_profile: Some(String::new()),
            suspension_mode: Some(SuspensionMode::Profile),
            ..LifecycleOverride::default()
        };
        let s = tenant.with(&o);
        assert_eq!(s.grace_period_secs, 60);
        assert_eq!(s.grace_profile, None, "\"\" turns the grace profile off");
        assert_eq!(s.suspension_mode, SuspensionMode::Profile);
        assert_eq!(s.notice_days, vec![2, 1]);
        assert_eq!(s.suspended_profile_name(), Some("tikfleet-suspended"));
        assert_eq!(s.grace_until(UnixMillis(1_000)), Some(UnixMillis(61_000)));
        let none = tenant.with(&LifecycleOverride {
            grace_period_secs: Some(0),
            ..LifecycleOverride::default()
        });
        assert_eq!(none.grace_until(UnixMillis(1_000)), None);
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<LifecycleOverride>(r#"{"grace_period": 5}"#).is_err());
        let o: LifecycleOverride = serde_json::from_str(r#"{"grace_period_secs": 5}"#).unwrap();
        assert_eq!(o.grace_period_secs, Some(5));
    }
}
