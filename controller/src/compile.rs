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
//!
//! Lifecycles: each subscriber with an expiry gets a [`SubscriberLifecycle`] from the
//! lifecycle settings of its plan (the tenant's, with the plan's overrides): the end of
//! grace, the grace profile, and the suspended profile when suspension moves accounts to
//! one. The agent applies the phase by itself at the right moment
//! ([`tikfleet_shared::lifecycle::effective`]); the grace and suspended profiles are in the
//! state whenever an account may need them, so they are on the router before the moment
//! comes. A subscriber suspended by staff (`hold`) is compiled suspended outright.

use std::collections::BTreeMap;

use tikfleet_shared::domain::{
    AccountKind, AccountRef, DesiredState, DriftSettings, HotspotProfile, HotspotUser, PppProfile,
    PppSecret, PppService, Profile, SubscriberLifecycle,
};
use tikfleet_shared::lifecycle::effective;
use tikfleet_shared::{RouterId, Secret, SubscriberId, TenantId, UnixMillis};

use crate::db::plans::Plan;
use crate::db::subscribers::{Service, Subscriber};
use crate::lifecycle::{LifecycleSettings, SuspensionMode};

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
        disabled: false,
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
        disabled: false,
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
    /// The tenant's lifecycle settings (plans may override them).
    pub lifecycle: &'a LifecycleSettings,
}

/// Compiles one router's desired state. Subscribers whose plan is missing from `plans` are
/// left out (the storage layer never lets that happen: a plan in use cannot be deleted).
#[must_use]
pub fn desired_state(rows: &RouterRows<'_>, compiled_at: UnixMillis) -> DesiredState {
    let mut profiles: BTreeMap<(u8, String), Profile> = BTreeMap::new();
    let mut ppp_secrets = Vec::new();
    let mut hotspot_users = Vec::new();
    let mut lifecycles = Vec::new();
    let mut subs: Vec<&(Subscriber, Secret)> = rows.subscribers.iter().collect();
    subs.sort_by(|a, b| a.0.username.cmp(&b.0.username).then(a.0.id.cmp(&b.0.id)));
    let mut settings_of: BTreeMap<uuid::Uuid, LifecycleSettings> = BTreeMap::new();
    for (sub, password) in subs {
        let Some(plan) = rows.plans.get(&sub.plan_id) else {
            continue;
        };
        let settings = settings_of
            .entry(plan.id)
            .or_insert_with(|| rows.lifecycle.with(&plan.lifecycle));
        let kind = sub.service.account_kind();
        let mut need = |p: Profile| {
            profiles
                .entry((kind_order(kind), p.name().to_owned()))
                .or_insert(p);
        };
        need(profile(plan, kind));
        let mut account_profile = plan.profile.clone();
        let mut disabled = false;
        if sub.hold {
            // Suspended by staff: suspended outright, whatever the expiry says.
            match settings.suspended_router_profile(kind) {
                Some(p) => {
                    account_profile = p.name().to_owned();
                    need(p);
                }
                None => disabled = true,
            }
        } else if let Some(expires_at) = sub.expires_at {
            if let Some(p) = settings.grace_router_profile(kind) {
                need(p);
            }
            if let Some(p) = settings.suspended_router_profile(kind) {
                need(p);
            }
            lifecycles.push(lifecycle(sub, settings, expires_at));
        }
        match kind {
            AccountKind::Ppp => {
                let mut s = ppp_secret(sub, password, plan);
                s.profile = account_profile;
                s.disabled = disabled;
                ppp_secrets.push(s);
            }
            AccountKind::Hotspot => {
                let mut u = hotspot_user(sub, password, plan);
                u.profile = account_profile;
                u.disabled = disabled;
                hotspot_users.push(u);
            }
        }
    }
    DesiredState {
        generation: rows.generation,
        tenant_id: rows.tenant_id,
        router_id: rows.router_id,
        compiled_at,
        profiles: profiles.into_values().collect(),
        ppp_secrets,
        hotspot_users,
        address_list_entries: Vec::new(),
        lifecycles,
        drift: rows.drift,
    }
}

/// The lifecycle the agent enforces for `sub` (which expires at `expires_at`).
#[must_use]
pub fn lifecycle(
    sub: &Subscriber,
    settings: &LifecycleSettings,
    expires_at: UnixMillis,
) -> SubscriberLifecycle {
    SubscriberLifecycle {
        subscriber_id: sub.id,
        account: account(sub),
        expires_at: Some(expires_at),
        grace_until: settings.grace_until(expires_at),
        grace_profile: settings.grace_profile.clone(),
        suspended_profile: settings.suspended_profile_name().map(ToOwned::to_owned),
        suspended_address_list: match settings.suspension_mode {
            SuspensionMode::Profile => settings.suspended_address_list.clone(),
            SuspensionMode::Disable => None,
        },
    }
}

/// One subscriber's account as its router should have it at `now` (its lifecycle phase or
/// manual suspension applied), with the profile the account names: what a job carries so
/// that a job and the next desired state agree.
#[must_use]
pub fn account_now(
    sub: &Subscriber,
    password: &Secret,
    plan: &Plan,
    tenant: &LifecycleSettings,
    now: UnixMillis,
) -> (Account, Profile) {
    let plans = BTreeMap::from([(plan.id, plan.clone())]);
    let subscribers = [(sub.clone(), password.clone())];
    let state = desired_state(
        &RouterRows {
            router_id: sub.router_id,
            tenant_id: sub.tenant_id,
            generation: 0,
            plans: &plans,
            subscribers: &subscribers,
            drift: DriftSettings::default(),
            lifecycle: tenant,
        },
        now,
    );
    let mut state = effective(&state, now);
    let account = match (state.ppp_secrets.pop(), state.hotspot_users.pop()) {
        (Some(s), _) => Account::Ppp(s),
        (None, Some(u)) => Account::Hotspot(u),
        // desired_state compiles the one subscriber whose plan it was given; this is its
        // account as the plan has it.
        (None, None) => match sub.service.account_kind() {
            AccountKind::Ppp => Account::Ppp(ppp_secret(sub, password, plan)),
            AccountKind::Hotspot => Account::Hotspot(hotspot_user(sub, password, plan)),
        },
    };
    let name = match &account {
        Account::Ppp(s) => s.profile.clone(),
        Account::Hotspot(u) => u.profile.clone(),
    };
    let kind = sub.service.account_kind();
    let profile = state
        .profiles
        .into_iter()
        .find(|p| p.name() == name && p.kind() == kind)
        .unwrap_or_else(|| profile(plan, kind));
    (account, profile)
}

/// A subscriber's router account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Account {
    /// A PPP secret.
    Ppp(PppSecret),
    /// A hotspot user.
    Hotspot(HotspotUser),
}

fn kind_order(kind: AccountKind) -> u8 {
    match kind {
        AccountKind::Ppp => 0,
        AccountKind::Hotspot => 1,
    }
}
