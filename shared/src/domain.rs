//! Desired router state: what the controller wants a router to look like.
//!
//! A [`DesiredState`] is a full, versioned description of the items tikfleet manages on one
//! router: profiles, PPP secrets, hotspot users, firewall address-list entries, and the
//! lifecycle times of each subscriber. The controller compiles it; the agent stores it before
//! acknowledging and reconciles the router towards it. Because it carries expiry and grace
//! times, the agent can move subscribers to the grace profile and then suspend them on time
//! while the controller is unreachable ([`SubscriberLifecycle::phase_at`]).
//!
//! Items are identified by name (the RouterOS key), so applying them is "make it so" and
//! idempotent. Text fields like `rate_limit` keep RouterOS syntax (`"10M/20M"`); the agent
//! passes them to the router as is. [`job`](crate::job) reuses these item types for one-off
//! operations.

use serde::{Deserialize, Serialize};

use crate::ids::{RouterId, SubscriberId, TenantId};
use crate::secret::Secret;
use crate::time::UnixMillis;

/// The full desired state of one router at one generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Monotonic per router; a higher generation replaces a lower one.
    pub generation: u64,
    /// The tenant owning the router.
    pub tenant_id: TenantId,
    /// The router this state is for.
    pub router_id: RouterId,
    /// When the controller compiled it.
    pub compiled_at: UnixMillis,
    /// Managed PPP and hotspot user profiles.
    pub profiles: Vec<Profile>,
    /// Managed PPP secrets (`/ppp/secret`).
    pub ppp_secrets: Vec<PppSecret>,
    /// Managed hotspot users (`/ip/hotspot/user`).
    pub hotspot_users: Vec<HotspotUser>,
    /// Managed firewall address-list entries (`/ip/firewall/address-list`).
    pub address_list_entries: Vec<AddressListEntry>,
    /// Lifecycle times of subscribers on this router.
    pub lifecycles: Vec<SubscriberLifecycle>,
    /// The tenant's drift settings: how often the agent checks this router and what it does
    /// about managed items that drifted. Travels with the state so it holds offline.
    #[serde(default)]
    pub drift: DriftSettings,
}

/// When and how the agent checks a router for drift.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftSettings {
    /// Time between drift checks per router, in milliseconds (0 = only on request).
    pub interval_ms: u64,
    /// What to do about managed items that drifted.
    pub policy: DriftPolicy,
}

impl DriftSettings {
    /// Hourly checks.
    pub const DEFAULT_INTERVAL_MS: u64 = 3_600_000;
}

impl Default for DriftSettings {
    fn default() -> Self {
        Self {
            interval_ms: Self::DEFAULT_INTERVAL_MS,
            policy: DriftPolicy::Enforce,
        }
    }
}

/// What the agent does about managed items that drifted (a router value that differs from
/// the desired state while staff did not change that item). Items made by hand are never
/// touched, under either policy.
///
/// Under `report` the agent changes on the router only what staff changed in the database
/// since the last state it applied; other differences are reported and left for staff to
/// accept or enforce. Under `enforce` every difference is corrected and reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftPolicy {
    /// Flag only.
    Report,
    /// Put managed items back to their desired state, and report.
    #[default]
    Enforce,
}

impl DriftPolicy {
    /// `report` or `enforce`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::Enforce => "enforce",
        }
    }
}

impl std::str::FromStr for DriftPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "report" => Ok(Self::Report),
            "enforce" => Ok(Self::Enforce),
            other => Err(format!(
                "unknown drift policy {other:?}: use \"report\" or \"enforce\""
            )),
        }
    }
}

/// Kind of managed router item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// `/ppp/profile`.
    PppProfile,
    /// `/ip/hotspot/user/profile`.
    HotspotProfile,
    /// `/ppp/secret`.
    PppSecret,
    /// `/ip/hotspot/user`.
    HotspotUser,
    /// `/ip/firewall/address-list`.
    AddressListEntry,
}

impl ItemKind {
    /// Every kind, in the order the reconciler makes them.
    pub const ALL: [Self; 5] = [
        Self::PppProfile,
        Self::HotspotProfile,
        Self::PppSecret,
        Self::HotspotUser,
        Self::AddressListEntry,
    ];

    /// The snake_case name, as serialized.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PppProfile => "ppp_profile",
            Self::HotspotProfile => "hotspot_profile",
            Self::PppSecret => "ppp_secret",
            Self::HotspotUser => "hotspot_user",
            Self::AddressListEntry => "address_list_entry",
        }
    }

    /// The RouterOS menu.
    #[must_use]
    pub const fn path(self) -> &'static str {
        match self {
            Self::PppProfile => "/ppp/profile",
            Self::HotspotProfile => "/ip/hotspot/user/profile",
            Self::PppSecret => "/ppp/secret",
            Self::HotspotUser => "/ip/hotspot/user",
            Self::AddressListEntry => "/ip/firewall/address-list",
        }
    }
}

impl std::str::FromStr for ItemKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown item kind {s:?}"))
    }
}

/// Names one managed item on a router: its kind and key (the name, or `list/address` for an
/// address-list entry).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ItemRef {
    /// Kind of item.
    pub kind: ItemKind,
    /// Its key.
    pub key: String,
}

impl AddressListEntry {
    /// The entry's key in drift reports: `list/address`.
    #[must_use]
    pub fn key(&self) -> String {
        format!("{}/{}", self.list, self.address)
    }
}

/// A managed profile: PPP profile or hotspot user profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// `/ppp/profile`.
    Ppp(PppProfile),
    /// `/ip/hotspot/user/profile`.
    Hotspot(HotspotProfile),
}

impl Profile {
    /// The profile's name (its key on the router).
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Ppp(p) => &p.name,
            Self::Hotspot(p) => &p.name,
        }
    }

    /// Which kind of account uses this profile.
    #[must_use]
    pub fn kind(&self) -> AccountKind {
        match self {
            Self::Ppp(_) => AccountKind::Ppp,
            Self::Hotspot(_) => AccountKind::Hotspot,
        }
    }
}

/// A PPP profile (`/ppp/profile`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PppProfile {
    /// Profile name, the key on the router.
    pub name: String,
    /// RouterOS rate limit, e.g. `"10M/20M"`.
    pub rate_limit: Option<String>,
    /// Address list that sessions with this profile are added to.
    pub address_list: Option<String>,
    /// Local (router-side) address or pool.
    pub local_address: Option<String>,
    /// Remote (subscriber-side) address or pool.
    pub remote_address: Option<String>,
    /// DNS servers handed to the subscriber, comma-separated.
    pub dns_server: Option<String>,
    /// Allow only one session per user.
    pub only_one: Option<bool>,
    /// Comment on the router (tikfleet adds its managed marker).
    pub comment: Option<String>,
}

/// A hotspot user profile (`/ip/hotspot/user/profile`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotspotProfile {
    /// Profile name, the key on the router.
    pub name: String,
    /// RouterOS rate limit, e.g. `"5M/5M"`.
    pub rate_limit: Option<String>,
    /// Address list that sessions with this profile are added to.
    pub address_list: Option<String>,
    /// How many sessions may share one user.
    pub shared_users: Option<u32>,
    /// Session timeout in seconds.
    pub session_timeout_secs: Option<u64>,
    /// Idle timeout in seconds.
    pub idle_timeout_secs: Option<u64>,
    /// Comment on the router.
    pub comment: Option<String>,
}

/// The PPP service a secret may use (`service=` on `/ppp/secret`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PppService {
    /// Any service.
    Any,
    /// PPPoE.
    Pppoe,
    /// PPTP.
    Pptp,
    /// L2TP.
    L2tp,
    /// OpenVPN.
    Ovpn,
    /// SSTP.
    Sstp,
    /// Async (serial).
    Async,
}

impl PppService {
    /// The RouterOS value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::Pppoe => "pppoe",
            Self::Pptp => "pptp",
            Self::L2tp => "l2tp",
            Self::Ovpn => "ovpn",
            Self::Sstp => "sstp",
            Self::Async => "async",
        }
    }
}

/// A PPP secret (`/ppp/secret`): one PPP subscriber account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PppSecret {
    /// The subscriber owning the account, if tikfleet knows one.
    pub subscriber_id: Option<SubscriberId>,
    /// Login name, the key on the router.
    pub name: String,
    /// Login password.
    pub password: Secret,
    /// Allowed service.
    pub service: PppService,
    /// Profile name.
    pub profile: String,
    /// Whether the account is disabled.
    pub disabled: bool,
    /// Fixed remote address, if any.
    pub remote_address: Option<String>,
    /// Comment on the router.
    pub comment: Option<String>,
}

/// A hotspot user (`/ip/hotspot/user`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotspotUser {
    /// The subscriber owning the account, if tikfleet knows one.
    pub subscriber_id: Option<SubscriberId>,
    /// Login name, the key on the router.
    pub name: String,
    /// Login password.
    pub password: Secret,
    /// Profile name.
    pub profile: String,
    /// Hotspot server, or all servers when `None`.
    pub server: Option<String>,
    /// Bound MAC address, if any.
    pub mac_address: Option<String>,
    /// Whether the user is disabled.
    pub disabled: bool,
    /// Comment on the router.
    pub comment: Option<String>,
}

/// A firewall address-list entry (`/ip/firewall/address-list`); key: `(list, address)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AddressListEntry {
    /// List name.
    pub list: String,
    /// Address, range or prefix.
    pub address: String,
    /// Comment on the router.
    pub comment: Option<String>,
}

/// Kind of subscriber account on a router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// A PPP secret.
    Ppp,
    /// A hotspot user.
    Hotspot,
}

/// Names one subscriber account on a router.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccountRef {
    /// PPP or hotspot.
    pub kind: AccountKind,
    /// Login name.
    pub name: String,
}

/// The lifecycle times of one subscriber account, so the agent can act offline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberLifecycle {
    /// The subscriber.
    pub subscriber_id: SubscriberId,
    /// The account on this router the times apply to.
    pub account: AccountRef,
    /// When service expires; `None` never expires.
    pub expires_at: Option<UnixMillis>,
    /// End of the grace period after expiry; `None` means no grace period.
    pub grace_until: Option<UnixMillis>,
    /// Profile to use during grace (e.g. a slow plan).
    pub grace_profile: Option<String>,
    /// Profile to use when suspended.
    pub suspended_profile: Option<String>,
    /// Address list to add the account's address to when suspended (e.g. a captive page).
    pub suspended_address_list: Option<String>,
}

/// Where a subscriber is in its lifecycle at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecyclePhase {
    /// Paid up: the account's own profile.
    Active,
    /// Expired but within grace: the grace profile.
    Grace,
    /// Past expiry and grace: the suspended profile / address list.
    Suspended,
}

impl LifecyclePhase {
    /// `active`, `grace` or `suspended`, as serialized.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Grace => "grace",
            Self::Suspended => "suspended",
        }
    }
}

impl SubscriberLifecycle {
    /// When the phase that holds at `now` began, if it is not [`LifecyclePhase::Active`].
    #[must_use]
    pub fn phase_began(&self, now: UnixMillis) -> Option<UnixMillis> {
        match self.phase_at(now) {
            LifecyclePhase::Active => None,
            LifecyclePhase::Grace => self.expires_at,
            LifecyclePhase::Suspended => match (self.expires_at, self.grace_until) {
                (Some(e), Some(g)) if g > e => Some(g),
                (e, _) => e,
            },
        }
    }

    /// The phase at `now`. Expiry and grace end are exclusive of the active side: at exactly
    /// `expires_at` the subscriber is in grace (or suspended if there is no grace).
    #[must_use]
    pub fn phase_at(&self, now: UnixMillis) -> LifecyclePhase {
        match (self.expires_at, self.grace_until) {
            (None, _) => LifecyclePhase::Active,
            (Some(expires), _) if now < expires => LifecyclePhase::Active,
            (Some(_), Some(grace)) if now < grace => LifecyclePhase::Grace,
            (Some(_), _) => LifecyclePhase::Suspended,
        }
    }

    /// The next instant after `now` at which [`phase_at`](Self::phase_at) changes, if any.
    /// The agent's scheduler sleeps until then (on injected time).
    #[must_use]
    pub fn next_transition(&self, now: UnixMillis) -> Option<UnixMillis> {
        // A grace end at or before expiry is no transition (there is no grace then).
        let grace = self
            .grace_until
            .filter(|g| self.expires_at.is_some_and(|e| *g > e));
        [self.expires_at, grace]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifecycle(expires: Option<i64>, grace: Option<i64>) -> SubscriberLifecycle {
        SubscriberLifecycle {
            subscriber_id: SubscriberId::from_bytes([1; 16]),
            account: AccountRef {
                kind: AccountKind::Ppp,
                name: "alice".into(),
            },
            expires_at: expires.map(UnixMillis),
            grace_until: grace.map(UnixMillis),
            grace_profile: Some("grace".into()),
            suspended_profile: Some("suspended".into()),
            suspended_address_list: None,
        }
    }

    #[test]
    fn phases() {
        use LifecyclePhase::*;
        let check = |expires, grace, now, expected| {
            assert_eq!(
                lifecycle(expires, grace).phase_at(UnixMillis(now)),
                expected,
                "expires={expires:?} grace={grace:?} now={now}"
            );
        };
        check(None, None, 0, Active);
        check(None, Some(5), 10, Active);
        check(Some(100), Some(200), 99, Active);
        check(Some(100), Some(200), 100, Grace);
        check(Some(100), Some(200), 199, Grace);
        check(Some(100), Some(200), 200, Suspended);
        check(Some(100), None, 100, Suspended);
        // grace ending before expiry means no grace at all
        check(Some(100), Some(50), 100, Suspended);
    }

    #[test]
    fn next_transition() {
        let l = lifecycle(Some(100), Some(200));
        assert_eq!(l.next_transition(UnixMillis(0)), Some(UnixMillis(100)));
        assert_eq!(l.next_transition(UnixMillis(100)), Some(UnixMillis(200)));
        assert_eq!(l.next_transition(UnixMillis(200)), None);
        assert_eq!(lifecycle(None, None).next_transition(UnixMillis(0)), None);
        assert_eq!(
            lifecycle(None, Some(5)).next_transition(UnixMillis(0)),
            None
        );
        assert_eq!(
            lifecycle(Some(100), Some(50)).next_transition(UnixMillis(0)),
            Some(UnixMillis(100))
        );
    }

    #[test]
    fn profile_accessors() {
        let p = Profile::Hotspot(HotspotProfile {
            name: "day-pass".into(),
            rate_limit: None,
            address_list: None,
            shared_users: Some(1),
            session_timeout_secs: None,
            idle_timeout_secs: None,
            comment: None,
        });
        assert_eq!(p.name(), "day-pass");
        assert_eq!(p.kind(), AccountKind::Hotspot);
    }
}
