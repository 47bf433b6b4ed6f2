use tikfleet_shared::domain::{AddressListEntry, HotspotProfile, PppSecret, PppService};
use tikfleet_shared::{RouterId, Secret, TenantId, UnixMillis};

use super::*;
use crate::routeros::RosVersion;

fn caps(version: &str) -> Capabilities {
    Capabilities::for_version(&RosVersion::parse(version).unwrap())
}

fn secret(name: &str, profile: &str) -> PppSecret {
    PppSecret {
        subscriber_id: None,
        name: name.into(),
        password: Secret::new(format!("{name}-pw")),
        service: PppService::Pppoe,
        profile: profile.into(),
        disabled: false,
        remote_address: None,
        comment: None,
    }
}

fn hotspot_profile(name: &str) -> Profile {
    Profile::Hotspot(HotspotProfile {
        name: name.into(),
        rate_limit: None,
        address_list: None,
        shared_users: None,
        session_timeout_secs: None,
        idle_timeout_secs: None,
        comment: None,
    })
}

fn state(generation: u64, secrets: Vec<PppSecret>) -> DesiredState {
    DesiredState {
        generation,
        tenant_id: TenantId::from_bytes([1; 16]),
        router_id: RouterId::from_bytes([2; 16]),
        compiled_at: UnixMillis::EPOCH,
        profiles: vec![],
        ppp_secrets: secrets,
        hotspot_users: vec![],
        address_list_entries: vec![],
        lifecycles: vec![],
        drift: Default::default(),
    }
}

fn secret_row(id: &str, name: &str, profile: &str, comment: &str) -> Row {
    [
        (".id", id),
        ("name", name),
        ("password", &format!("{name}-pw")),
        ("service", "pppoe"),
        ("profile", profile),
        ("disabled", "false"),
        ("comment", comment),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn rows(kind: ItemKind, list: Vec<Row>) -> HashMap<ItemKind, Vec<Row>> {
    HashMap::from([(kind, list)])
}

fn plan(
    desired: &DesiredState,
    prev: Option<&DesiredState>,
    rows: &HashMap<ItemKind, Vec<Row>>,
    scope: Scope,
    version: &str,
) -> Plan {
    diff(&Inputs {
        desired,
        prev,
        rows,
        journal: &HashSet::new(),
        skip: &HashSet::new(),
        touched: &HashSet::new(),
        caps: &caps(version),
        scope: &scope,
    })
}

fn paths(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .flat_map(|s| s.cmds.iter().map(|c| c.path().to_owned()))
        .collect()
}

#[test]
fn a_staff_change_is_applied_without_a_finding_and_drift_is_reported() {
    let prev = state(1, vec![secret("a", "p1"), secret("b", "p1")]);
    let mut next = prev.clone();
    next.generation = 2;
    next.ppp_secrets[0].profile = "p2".into();
    // On the router, a has the old profile (staff changed it) and b moved by hand.
    let router = rows(
        ItemKind::PppSecret,
        vec![
            secret_row("*1", "a", "p1", "tikfleet:"),
            secret_row("*2", "b", "p9", "tikfleet:"),
        ],
    );
    let report = plan(
        &next,
        Some(&prev),
        &router,
        Scope::All(DriftPolicy::Report),
        "7.16",
    );
    assert_eq!(paths(&report.accounts), ["/ppp/secret/set"]);
    assert_eq!(report.accounts[0].item.key, "a");
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].item.key, "b");
    assert_eq!(report.findings[0].action, DriftAction::Reported);

    let enforce = plan(
        &next,
        Some(&prev),
        &router,
        Scope::All(DriftPolicy::Enforce),
        "7.16",
    );
    assert_eq!(enforce.accounts.len(), 2);
    assert_eq!(enforce.findings[0].action, DriftAction::Corrected);
    // The profile change makes the session reconnect.
    assert!(enforce.accounts.iter().all(|s| s.reconnect.is_some()));
}

#[test]
fn only_marked_items_are_removed_and_unmarked_ones_conflict() {
    let desired = state(1, vec![secret("a", "p1")]);
    let router = rows(
        ItemKind::PppSecret,
        vec![
            secret_row("*1", "a", "p1", "the owner's"),
            secret_row("*2", "old", "p1", "tikfleet: gone"),
            secret_row("*3", "boss", "p1", ""),
        ],
    );
    let p = plan(
        &desired,
        None,
        &router,
        Scope::All(DriftPolicy::Enforce),
        "7.16",
    );
    assert_eq!(p.conflicts, 1);
    assert_eq!(p.findings[0].action, DriftAction::Conflict);
    assert!(!p.findings[0].managed);
    assert_eq!(paths(&p.accounts), ["/ppp/secret/remove"]);
    assert_eq!(p.accounts[0].cmds[0].get(".id"), Some("*2"));

    // Adopting it sets the marker and the fields.
    let only = Scope::Only {
        items: BTreeSet::from([ItemRef {
            kind: ItemKind::PppSecret,
            key: "a".into(),
        }]),
        adopt: true,
    };
    let p = plan(&desired, None, &router, only, "7.16");
    assert_eq!(paths(&p.accounts), ["/ppp/secret/set"]);
    assert!(
        p.accounts[0].cmds[0]
            .get("comment")
            .unwrap()
            .starts_with("tikfleet:")
    );
}

#[test]
fn old_routers_get_the_marker_by_its_own_verb() {
    let desired = state(1, vec![secret("a", "p1")]);
    let p = plan(
        &desired,
        None,
        &HashMap::new(),
        Scope::All(DriftPolicy::Enforce),
        "6.49.10",
    );
    assert_eq!(paths(&p.accounts), ["/ppp/secret/add"]);
    assert_eq!(p.accounts[0].cmds[0].get("comment"), None);
    assert_eq!(p.accounts[0].mark_later.as_deref(), Some("tikfleet:"));
    assert_eq!(p.unmarked_adds().len(), 1);
    let p = plan(
        &desired,
        None,
        &HashMap::new(),
        Scope::All(DriftPolicy::Enforce),
        "7.16",
    );
    assert_eq!(p.accounts[0].cmds[0].get("comment"), Some("tikfleet:"));
    assert!(p.unmarked_adds().is_empty());
}

#[test]
fn hotspot_profiles_are_removed_only_when_a_previous_state_had_them() {
    let mut prev = state(1, vec![]);
    prev.profiles = vec![hotspot_profile("day"), hotspot_profile("week")];
    let mut next = prev.clone();
    next.generation = 2;
    next.profiles = vec![hotspot_profile("day")];
    let profile_row = |id: &str, name: &str| -> Row {
        [(".id", id), ("name", name)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    let router = rows(
        ItemKind::HotspotProfile,
        vec![
            profile_row("*0", "default"),
            profile_row("*1", "day"),
            profile_row("*2", "week"),
            profile_row("*3", "admins"),
        ],
    );
    let p = plan(
        &next,
        Some(&prev),
        &router,
        Scope::All(DriftPolicy::Enforce),
        "7.16",
    );
    assert_eq!(
        paths(&p.profile_removes),
        ["/ip/hotspot/user/profile/remove"]
    );
    assert_eq!(p.profile_removes[0].item.key, "week");
    assert!(p.profiles.is_empty(), "day has no fields to change");
}

#[test]
fn dynamic_address_list_entries_are_not_ours_and_addresses_compare_normalised() {
    let mut desired = state(1, vec![]);
    desired.address_list_entries = vec![AddressListEntry {
        list: "blocked".into(),
        address: "10.0.0.1".into(),
        comment: None,
    }];
    let entry = |id: &str, address: &str, comment: &str, dynamic: &str| -> Row {
        [
            (".id", id),
            ("list", "blocked"),
            ("address", address),
            ("comment", comment),
            ("dynamic", dynamic),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    };
    let router = rows(
        ItemKind::AddressListEntry,
        vec![
            entry("*1", "10.0.0.1/32", "tikfleet:", "false"),
            entry("*2", "10.0.0.2", "tikfleet:", "true"),
        ],
    );
    let p = plan(
        &desired,
        None,
        &router,
        Scope::All(DriftPolicy::Enforce),
        "7.16",
    );
    assert_eq!(p.steps(), 0, "{p:?}");
    assert!(p.findings.is_empty());
}
