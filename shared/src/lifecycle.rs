//! Lifecycle phases: the state a router should have *now*.
//!
//! A desired state carries each subscriber's expiry and end of grace
//! ([`SubscriberLifecycle`]), so the agent moves accounts to the grace profile at expiry and
//! suspends them at the end of grace by itself, on time, while the controller is unreachable.
//! [`effective`] turns a stored state into the one to apply at a moment; passes apply and
//! record that one, so a phase change is applied like a staff change (never taken for drift),
//! and [`next_transition`] tells the run loop when to run the next pass.
//!
//! What each phase does to the account:
//!
//! - *active*: nothing (the plan's profile, as staff set it);
//! - *grace*: the grace profile (a slow plan), if the lifecycle names one;
//! - *suspended*: the suspended profile if the lifecycle names one (its `address-list`
//!   option puts the sessions on the "please renew" list), otherwise the account is disabled;
//!   a PPP account with a fixed remote address also gets an entry on the suspended address
//!   list, if one is named.
//!
//! Every change of profile or of the disabled flag disconnects the account's sessions (the
//! pass does), so the new terms apply at once.

use std::collections::HashMap;

use crate::UnixMillis;
use crate::domain::{
    AccountKind, AddressListEntry, DesiredState, LifecyclePhase, SubscriberLifecycle,
};

/// `state` as it should be on the router at `now`.
#[must_use]
pub fn effective(state: &DesiredState, now: UnixMillis) -> DesiredState {
    let mut out = state.clone();
    if state.lifecycles.is_empty() {
        return out;
    }
    let mut accounts = Accounts::new(&out);
    for l in &state.lifecycles {
        match l.phase_at(now) {
            LifecyclePhase::Active => {}
            LifecyclePhase::Grace => {
                if let Some(profile) = &l.grace_profile {
                    accounts.set_profile(&mut out, l, profile);
                }
            }
            LifecyclePhase::Suspended => accounts.suspend(&mut out, l),
        }
    }
    out
}

/// The next moment after `now` at which some account of `state` changes phase.
#[must_use]
pub fn next_transition(state: &DesiredState, now: UnixMillis) -> Option<UnixMillis> {
    state
        .lifecycles
        .iter()
        .filter_map(|l| l.next_transition(now))
        .min()
}

/// Where each account sits in a state's lists, so applying thousands of lifecycles is
/// linear.
struct Accounts {
    ppp: HashMap<String, Vec<usize>>,
    hotspot: HashMap<String, Vec<usize>>,
    entries: std::collections::HashSet<(String, String)>,
}

impl Accounts {
    fn new(state: &DesiredState) -> Self {
        let mut ppp: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in state.ppp_secrets.iter().enumerate() {
            ppp.entry(s.name.clone()).or_default().push(i);
        }
        let mut hotspot: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, u) in state.hotspot_users.iter().enumerate() {
            hotspot.entry(u.name.clone()).or_default().push(i);
        }
        let entries = state
            .address_list_entries
            .iter()
            .map(|e| (e.list.clone(), e.address.clone()))
            .collect();
        Self {
            ppp,
            hotspot,
            entries,
        }
    }

    fn of(&self, l: &SubscriberLifecycle) -> &[usize] {
        let map = match l.account.kind {
            AccountKind::Ppp => &self.ppp,
            AccountKind::Hotspot => &self.hotspot,
        };
        map.get(&l.account.name).map_or(&[], Vec::as_slice)
    }

    fn set_profile(&self, state: &mut DesiredState, l: &SubscriberLifecycle, profile: &str) {
        for &i in self.of(l) {
            match l.account.kind {
                AccountKind::Ppp => profile.clone_into(&mut state.ppp_secrets[i].profile),
                AccountKind::Hotspot => profile.clone_into(&mut state.hotspot_users[i].profile),
            }
        }
    }

    fn suspend(&mut self, state: &mut DesiredState, l: &SubscriberLifecycle) {
        match &l.suspended_profile {
            Some(profile) => self.set_profile(state, l, profile),
            None => {
                for &i in self.of(l) {
                    match l.account.kind {
                        AccountKind::Ppp => state.ppp_secrets[i].disabled = true,
                        AccountKind::Hotspot => state.hotspot_users[i].disabled = true,
                    }
                }
            }
        }
        let Some(list) = &l.suspended_address_list else {
            return;
        };
        if l.account.kind != AccountKind::Ppp {
            return;
        }
        let addresses: Vec<String> = self
            .of(l)
            .iter()
            .filter_map(|&i| state.ppp_secrets[i].remote_address.clone())
            .collect();
        for address in addresses {
            if self.entries.insert((list.clone(), address.clone())) {
                state.address_list_entries.push(AddressListEntry {
                    list: list.clone(),
                    address,
                    comment: Some(format!("suspended {}", l.account.name)),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::{AccountRef, PppSecret, PppService};
    use crate::{RouterId, Secret, SubscriberId, TenantId};

    use super::*;

    fn state() -> DesiredState {
        let secret = |name: &str, address: Option<&str>| PppSecret {
            subscriber_id: None,
            name: name.into(),
            password: Secret::new("pw"),
            service: PppService::Pppoe,
            profile: "gold".into(),
            disabled: false,
            remote_address: address.map(Into::into),
            comment: None,
        };
        let lifecycle = |name: &str, suspended_profile: Option<&str>| SubscriberLifecycle {
            subscriber_id: SubscriberId::from_bytes([1; 16]),
            account: AccountRef {
                kind: AccountKind::Ppp,
                name: name.into(),
            },
            expires_at: Some(UnixMillis(100)),
            grace_until: Some(UnixMillis(200)),
            grace_profile: Some("grace".into()),
            suspended_profile: suspended_profile.map(Into::into),
            suspended_address_list: Some("unpaid".into()),
        };
        DesiredState {
            generation: 1,
            tenant_id: TenantId::from_bytes([1; 16]),
            router_id: RouterId::from_bytes([2; 16]),
            compiled_at: UnixMillis::EPOCH,
            profiles: vec![],
            ppp_secrets: vec![
                secret("a", Some("100.64.0.1")),
                secret("b", None),
                secret("c", None),
            ],
            hotspot_users: vec![],
            address_list_entries: vec![],
            lifecycles: vec![lifecycle("a", None), lifecycle("b", Some("suspended"))],
            drift: Default::default(),
        }
    }

    #[test]
    fn phases_change_profiles_and_disable() {
        let s = state();
        let at = |t| effective(&s, UnixMillis(t));
        let profile = |st: &DesiredState, n: usize| st.ppp_secrets[n].profile.clone();
        let active = at(99);
        assert_eq!(active, s, "before expiry nothing changes");
        let grace = at(100);
        assert_eq!(
            (profile(&grace, 0), profile(&grace, 1)),
            ("grace".into(), "grace".into())
        );
        assert_eq!(profile(&grace, 2), "gold", "no lifecycle, no change");
        let suspended = at(200);
        assert!(
            suspended.ppp_secrets[0].disabled,
            "no suspended profile: disabled"
        );
        assert_eq!(profile(&suspended, 0), "gold");
        assert_eq!(profile(&suspended, 1), "suspended");
        assert!(!suspended.ppp_secrets[1].disabled);
        assert_eq!(
            suspended.address_list_entries,
            vec![AddressListEntry {
                list: "unpaid".into(),
                address: "100.64.0.1".into(),
                comment: Some("suspended a".into()),
            }],
            "only an account with a fixed address gets an entry"
        );
    }

    #[test]
    fn next_transitions() {
        let s = state();
        assert_eq!(next_transition(&s, UnixMillis(0)), Some(UnixMillis(100)));
        assert_eq!(next_transition(&s, UnixMillis(100)), Some(UnixMillis(200)));
        assert_eq!(next_transition(&s, UnixMillis(200)), None);
    }
}
