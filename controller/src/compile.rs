//! The desired-state compiler: from a router's rows (its subscribers and the plans they use)
//! to the [`DesiredState`] its agent converges the router to.
//!
//! It is a pure function of its inputs, so the same rows always compile to the same state.
//! The items it makes are the ones the subscriber jobs carry too ([`ppp_secret`],
//! [`hotspot_user`], [`profile`]), so a job and the next desired state never disagree.
//! Every item carries the agent's managed marker (`tikfleet:`) in its comment, except hotspot
//! user profiles, which have no comment on RouterOS and are managed by name. The tenant's
//! drift settings ride along, so the agent checks and enforces as the tenant chose even
//! while the controller is unreachable.

use std::collections::{BTreeMap, BTreeSet};

use tikfleet_shared::domain::{
    AccountKind, AccountRef, DesiredState, DriftSettings, HotspotProfile, HotspotUser, PppProfile,
    PppSecret, PppService, Profile, SubscriberLifecycle,
};
use tikfleet_shared::{RouterId, Secret, SubscriberId, TenantId, UnixMillis};

use crate::db::plans::Plan;
use crate::db::subscribers::{Service, Subscriber, SubscriberStatus};

/// The comment prefix the agent recognises as "managed by tikfleet" (agent `ops::MARKER`).
pub const MARKER: &str = "tikfleet:";

impl Service {
    /// The kind of router account the service uses.
    #[must_use]
    pub fn account_kind(self) -> AccountKind {
        match self {
            Self::Pppoe => AccountKind::Ppp,
            Self::Hotspot => AccountKind::Hotspot,
        }
    }
}

/// The router account of a subscriber.
#[must_use]
pub fn account(sub: &Subscriber) -> AccountRef {
    AccountRef {
        kind: sub.service.account_kind(),
        name: sub.username.clone(),
    }
}

fn subscriber_comment(id: SubscriberId) -> String {
    format!("{MARKER} subscriber {id}")
}

/// The router profile of `plan` for accounts of `kind`.
#[must_use]
pub fn profile(plan: &Plan, kind: AccountKind) -> Profile {
    match kind {
        AccountKind::Ppp => Profile::Ppp(PppProfile {
            name: plan.profile.clone(),
            rate_limit: Some(plan.rate_limit.clone()),
            address_list: None,
            local_address: None,
            remote_address: None,
            dns_server: None,
            only_one: None,
            comment: Some(format!("{MARKER} plan {}", plan.name)),
        }),
        AccountKind::Hotspot => Profile::Hotspot(HotspotProfile {
            name: plan.profile.clone(),
            rate_limit: Some(plan.rate_limit.clone()),
            address_list: None,
            shared_users: None,
            session_timeout_secs: None,
            idle_timeout_secs: None,
            comment: None,
        }),
    }
}

/// The PPP secret of a PPPoE subscriber.
#[must_use]
pub fn ppp_secret(sub: &Subscriber, password: &Secret, plan: &Plan) -> PppSecret {
    PppSecret {
        subscriber_id: Some(sub.id),
        name: sub.username.clone(),
        password: password.clone(),
        service: PppService::Pppoe,
        profile: plan.profile.clone(),
        disabled: sub.status == SubscriberStatus::Suspended,
        remote_address: None,
        comment: Some(subscriber_comment(sub.id)),
    }
}

/// The hotspot user of a hotspot subscriber.
#[must_use]
pub fn hotspot_user(sub: &Subscriber, password: &Secret, plan: &Plan) -> HotspotUser {
    HotspotUser {
        subscriber_id: Some(sub.id),
        name: sub.username.clone(),
        password: password.clone(),
        profile: plan.profile.clone(),
        server: None,
        mac_address: None,
        disabled: sub.status == SubscriberStatus::Suspended,
        comment: Some(subscriber_comment(sub.id)),
    }
}

/// What one router should look like.
pub struct RouterRows<'a> {
    /// The router.
    pub router_id: RouterId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Its desired generation.
    pub generation: u64,
    /// Plans by id (at least those the subscribers use).
    pub plans: &'a BTreeMap<uuid::Uuid, Plan>,
    /// The router's subscribers with their passwords.
    pub subscribers: &'a [(Subscriber, Secret)],
    /// The tenant's drift settings.
    pub drift: DriftSettings,
}

/// Compiles one router's desired state. Subscribers whose plan is missing from `plans` are
/// left out (the storage layer never lets that happen: a plan in use cannot be deleted).
#[must_use]
pub fn desired_state(rows: &RouterRows<'_>, compiled_at: UnixMillis) -> DesiredState {
    let mut profiles_used = BTreeSet::new();
    let mut ppp_secrets = Vec::new();
    let mut hotspot_users = Vec::new();
    let mut lifecycles = Vec::new();
    let mut subs: Vec<&(Subscriber, Secret)> = rows.subscribers.iter().collect();
    subs.sort_by(|a, b| a.0.username.cmp(&b.0.username).then(a.0.id.cmp(&b.0.id)));
    for (sub, password) in subs {
        let Some(plan) = rows.plans.get(&sub.plan_id) else {
            continue;
        };
        let kind = sub.service.account_kind();
        profiles_used.insert((kind_order(kind), plan.profile.clone(), sub.plan_id));
        match kind {
            AccountKind::Ppp => ppp_secrets.push(ppp_secret(sub, password, plan)),
            AccountKind::Hotspot => hotspot_users.push(hotspot_user(sub, password, plan)),
        }
        if sub.expires_at.is_some() {
            lifecycles.push(SubscriberLifecycle {
                subscriber_id: sub.id,
                account: account(sub),
                expires_at: sub.expires_at,
                grace_until: None,
                grace_profile: None,
                suspended_profile: None,
                suspended_address_list: None,
            });
        }
    }
    let profiles = profiles_used
        .into_iter()
        .filter_map(|(k, _, plan_id)| {
            let kind = if k == 0 {
                AccountKind::Ppp
            } else {
                AccountKind::Hotspot
            };
            rows.plans.get(&plan_id).map(|plan| profile(plan, kind))
        })
        .collect();
    DesiredState {
        generation: rows.generation,
        tenant_id: rows.tenant_id,
        router_id: rows.router_id,
        compiled_at,
        profiles,
        ppp_secrets,
        hotspot_users,
        address_list_entries: Vec::new(),
        lifecycles,
        drift: rows.drift,
    }
}

fn kind_order(kind: AccountKind) -> u8 {
    match kind {
        AccountKind::Ppp => 0,
        AccountKind::Hotspot => 1,
    }
}
