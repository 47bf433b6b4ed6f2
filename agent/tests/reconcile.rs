//! The reconciler against the simulator: convergence at scale checked item by item, drift
//! under both policies, conflicts and adoption, session disconnects, and a pass interrupted
//! mid-way that the next pass finishes — all compared with the simulator's own state.

mod reconcile_common;
mod routeros_common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use reconcile_common::*;
use routeros_common::*;
use tikfleet_agent::reconcile::{PassReport, ReconcileConfig, Request, Scope};
use tikfleet_agent::routeros::{Cmd, RouterOsClient};
use tikfleet_shared::domain::{
    AddressListEntry, DesiredState, DriftPolicy, DriftSettings, HotspotProfile, HotspotUser,
    ItemKind, ItemRef, PppProfile, PppSecret, PppService, Profile,
};
use tikfleet_shared::record::{DriftAction, DriftFinding, DriftTrigger, OutboxRecord};
use tikfleet_shared::secret::REDACTED;
use tikfleet_shared::{RouterId, Secret, TenantId};
use tikfleet_sim::faults::FaultsPatch;
use tikfleet_sim::router::lock;
use tikfleet_sim::sessions::Service;

impl Agent {
    async fn enforce(&self, client: &RouterOsClient, items: &[ItemRef], adopt: bool) -> PassReport {
        let request = Request {
            trigger: DriftTrigger::Enforce,
            job_id: None,
            scope: Some(Scope::Only {
                items: items.iter().cloned().collect(),
                adopt,
            }),
        };
        self.rec
            .pass(client, self.router, request, &|_| {})
            .await
            .expect("the pass reads the router")
    }

    /// The findings of the last drift report (all its parts).
    async fn last_findings(&self) -> Vec<DriftFinding> {
        let mut parts: Vec<(u32, Vec<DriftFinding>)> = Vec::new();
        let mut current = None;
        for r in self.records().await {
            if let OutboxRecord::Drift(d) = r {
                if current != Some(d.id) {
                    current = Some(d.id);
                    parts.clear();
                }
                parts.push((d.part, d.findings));
            }
        }
        parts.sort_by_key(|(p, _)| *p);
        parts.into_iter().flat_map(|(_, f)| f).collect()
    }
}

fn secret(i: usize, profile: &str) -> PppSecret {
    PppSecret {
        subscriber_id: None,
        name: format!("sub{i:05}"),
        password: Secret::new(format!("pw-{i}")),
        service: PppService::Pppoe,
        profile: profile.into(),
        disabled: false,
        remote_address: None,
        comment: Some(format!("subscriber {i}")),
    }
}

fn ppp_profile(name: &str, rate: &str) -> Profile {
    Profile::Ppp(PppProfile {
        name: name.into(),
        rate_limit: Some(rate.into()),
        address_list: None,
        local_address: None,
        remote_address: None,
        dns_server: None,
        only_one: None,
        comment: Some(format!("plan {name}")),
    })
}

fn state(router: RouterId, generation: u64, secrets: Vec<PppSecret>) -> DesiredState {
    DesiredState {
        generation,
        tenant_id: TenantId::from_bytes([7; 16]),
        router_id: router,
        compiled_at: T0,
        profiles: vec![
            ppp_profile("plan-a", "10M/10M"),
            ppp_profile("plan-b", "50M/50M"),
            Profile::Hotspot(HotspotProfile {
                name: "day-pass".into(),
                rate_limit: Some("5M/5M".into()),
                address_list: None,
                shared_users: Some(1),
                session_timeout_secs: None,
                idle_timeout_secs: None,
                comment: None,
            }),
        ],
        ppp_secrets: secrets,
        hotspot_users: (0..10)
            .map(|i| HotspotUser {
                subscriber_id: None,
                name: format!("guest{i}"),
                password: Secret::new(format!("g-{i}")),
                profile: "day-pass".into(),
                server: None,
                mac_address: None,
                disabled: false,
                comment: None,
            })
            .collect(),
        address_list_entries: (1..=5)
            .map(|i| AddressListEntry {
                list: "blocked".into(),
                address: format!("100.64.0.{i}"),
                comment: None,
            })
            .collect(),
        lifecycles: vec![],
        drift: DriftSettings::default(),
    }
}

fn is_true(v: Option<&String>) -> bool {
    v.is_some_and(|v| v == "true" || v == "yes")
}

/// The simulator's router equals `want` exactly: every desired item with every field, and
/// no other item carrying tikfleet's marker (`others` unmarked rows are allowed per menu).
fn assert_exact(sim: &tikfleet_sim::Running, want: &DesiredState) {
    let marked = |r: &BTreeMap<String, String>| {
        r.get("comment")
            .is_some_and(|c| c.starts_with(tikfleet_agent::ops::MARKER))
    };
    // PPP secrets.
    let rows = menu(sim, "/ppp/secret");
    let on_router: BTreeMap<&str, &BTreeMap<String, String>> = rows
        .iter()
        .filter(|r| marked(r))
        .map(|r| (r["name"].as_str(), r))
        .collect();
    assert_eq!(
        on_router.len(),
        want.ppp_secrets.len(),
        "marked PPP secrets on the router"
    );
    for s in &want.ppp_secrets {
        let r = on_router
            .get(s.name.as_str())
            .unwrap_or_else(|| panic!("secret {} missing", s.name));
        assert_eq!(r["password"], s.password.expose(), "{} password", s.name);
        assert_eq!(r["profile"], s.profile, "{} profile", s.name);
        assert_eq!(r["service"], s.service.as_str(), "{} service", s.name);
        assert_eq!(
            is_true(r.get("disabled")),
            s.disabled,
            "{} disabled",
            s.name
        );
        let comment = format!(
            "{} {}",
            tikfleet_agent::ops::MARKER,
            s.comment.as_deref().unwrap_or("")
        );
        assert_eq!(r["comment"].trim(), comment.trim(), "{} comment", s.name);
    }
    // PPP profiles.
    for p in &want.profiles {
        match p {
            Profile::Ppp(p) => {
                let r = row(sim, "/ppp/profile", "name", &p.name)
                    .unwrap_or_else(|| panic!("profile {} missing", p.name));
                assert!(marked(&r), "profile {} marked", p.name);
                assert_eq!(
                    r.get("rate-limit"),
                    p.rate_limit.as_ref(),
                    "profile {}",
                    p.name
                );
            }
            Profile::Hotspot(p) => {
                let r = row(sim, "/ip/hotspot/user/profile", "name", &p.name)
                    .unwrap_or_else(|| panic!("hotspot profile {} missing", p.name));
                assert_eq!(r.get("rate-limit"), p.rate_limit.as_ref());
            }
        }
    }
    let ppp_profiles = menu(sim, "/ppp/profile");
    let want_profiles: BTreeSet<&str> = want
        .profiles
        .iter()
        .filter(|p| matches!(p, Profile::Ppp(_)))
        .map(Profile::name)
        .collect();
    let marked_profiles: BTreeSet<&str> = ppp_profiles
        .iter()
        .filter(|r| marked(r))
        .map(|r| r["name"].as_str())
        .collect();
    assert_eq!(marked_profiles, want_profiles, "marked PPP profiles");
    // Hotspot users.
    let users = menu(sim, "/ip/hotspot/user");
    let marked_users: BTreeMap<&str, &BTreeMap<String, String>> = users
        .iter()
        .filter(|r| marked(r))
        .map(|r| (r["name"].as_str(), r))
        .collect();
    assert_eq!(
        marked_users.len(),
        want.hotspot_users.len(),
        "hotspot users"
    );
    for u in &want.hotspot_users {
        let r = marked_users[u.name.as_str()];
        assert_eq!(r["password"], u.password.expose());
        assert_eq!(r["profile"], u.profile);
        assert_eq!(is_true(r.get("disabled")), u.disabled);
    }
    // Address lists.
    let entries: BTreeSet<(String, String)> = menu(sim, "/ip/firewall/address-list")
        .into_iter()
        .filter(|r| marked(r))
        .map(|r| (r["list"].clone(), r["address"].clone()))
        .collect();
    let want_entries: BTreeSet<(String, String)> = want
        .address_list_entries
        .iter()
        .map(|e| (e.list.clone(), e.address.clone()))
        .collect();
    assert_eq!(entries, want_entries, "address-list entries");
}

/// 1,000 mixed changes: 300 new secrets, 300 removed, 200 on another plan, 100 new
/// passwords, 100 disabled.
fn mixed_changes(mut secrets: Vec<PppSecret>, n: usize) -> Vec<PppSecret> {
    secrets.drain(0..300);
    for (i, s) in secrets.iter_mut().enumerate().take(400) {
        match i {
            0..200 => s.profile = "plan-b".into(),
            200..300 => s.password = Secret::new(format!("new-{i}")),
            _ => s.disabled = true,
        }
    }
    secrets.extend((n..n + 300).map(|i| secret(i, "plan-a")));
    secrets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_converge_then_a_thousand_changes_then_no_drift() {
    tokio::time::timeout(std::time::Duration::from_secs(240), async {
        const N: usize = 10_000;
        let sim = sim("7.16.2").await;
        let (client, _) = client(&sim).await;
        let agent = Agent::new();

        let secrets: Vec<PppSecret> = (0..N).map(|i| secret(i, "plan-a")).collect();
        let one = state(agent.router, 1, secrets.clone());
        agent.want(&one).await;
        let r = agent.pass(&client, DriftTrigger::Reconcile).await;
        assert!(r.error.is_none(), "{:?}", r.error);
        assert!(r.applied);
        // 3 profiles, 10,000 secrets, 10 hotspot users, 5 entries: one add each.
        assert_eq!(r.steps, 3 + N + 10 + 5, "{}", r.detail());
        assert_eq!(r.findings, 0, "a first pass applies, it finds no drift");
        assert_exact(&sim, &one);
        let records = agent.records().await;
        let progress: Vec<_> = records
            .iter()
            .filter_map(|r| match r {
                OutboxRecord::Progress(p) => Some(p),
                _ => None,
            })
            .collect();
        assert!(progress.len() >= 2, "a long pass reports progress");
        assert_eq!(
            progress.last().unwrap().done,
            progress.last().unwrap().total
        );
        assert!(records.iter().any(|r| matches!(r,
            OutboxRecord::Applied(a) if a.generation == 1 && a.error.is_none())));

        let changed = mixed_changes(secrets, N);
        let two = state(agent.router, 2, changed);
        agent.want(&two).await;
        let r = agent.pass(&client, DriftTrigger::Reconcile).await;
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!(r.steps, 1_000, "{}", r.detail());
        assert_eq!(r.findings, 0, "staff changes are not drift");
        assert_exact(&sim, &two);

        let r = agent.pass(&client, DriftTrigger::Schedule).await;
        assert_eq!(
            (r.steps, r.findings, r.commands),
            (0, 0, 0),
            "{}",
            r.detail()
        );
        assert_eq!(r.items_checked as usize, 3 + N + 10 + 5);
        assert_exact(&sim, &two);
    })
    .await
    .expect("test timed out");
}

async fn run_cmd(client: &RouterOsClient, cmd: Cmd) {
    client.run(cmd).await.expect("router command");
}

fn id_of(sim: &tikfleet_sim::Running, path: &str, name: &str) -> String {
    row(sim, path, "name", name).expect("row")[".id"].clone()
}

#[tokio::test]
async fn drift_is_reported_under_report_and_corrected_under_enforce() {
    within(async {
        let sim = sim("7.16.2").await;
        let (client, _) = client(&sim).await;
        let agent = Agent::new();
        let secrets: Vec<PppSecret> = (0..5).map(|i| secret(i, "plan-a")).collect();
        let mut one = state(agent.router, 1, secrets);
        one.drift.policy = DriftPolicy::Report;
        agent.want(&one).await;
        assert!(agent.pass(&client, DriftTrigger::Reconcile).await.applied);

        // Someone changes the router by hand.
        let id = id_of(&sim, "/ppp/secret", "sub00001");
        run_cmd(
            &client,
            Cmd::new("/ppp/secret/set")
                .attr(".id", id)
                .attr("profile", "plan-b"),
        )
        .await;
        let id = id_of(&sim, "/ppp/secret", "sub00002");
        run_cmd(
            &client,
            Cmd::new("/ppp/secret/set")
                .attr(".id", id)
                .attr("password", "stolen"),
        )
        .await;
        let id = id_of(&sim, "/ppp/secret", "sub00003");
        run_cmd(&client, Cmd::new("/ppp/secret/remove").attr(".id", id)).await;
        let id = id_of(&sim, "/ppp/profile", "plan-a");
        run_cmd(
            &client,
            Cmd::new("/ppp/profile/set")
                .attr(".id", id)
                .attr("rate-limit", "99M/99M"),
        )
        .await;
        run_cmd(
            &client,
            Cmd::new("/ppp/secret/add")
                .attr("name", "intruder")
                .attr("password", "x")
                .attr("comment", "tikfleet: copied by hand"),
        )
        .await;

        // Policy report: everything is found, nothing is touched.
        let r = agent.pass(&client, DriftTrigger::Schedule).await;
        assert_eq!(r.steps, 0, "{}", r.detail());
        let findings = agent.last_findings().await;
        let find = |key: &str, field: Option<&str>| {
            findings
                .iter()
                .find(|f| f.item.key == key && f.field.as_deref() == field)
                .unwrap_or_else(|| panic!("no finding for {key} {field:?}: {findings:#?}"))
                .clone()
        };
        let f = find("sub00001", Some("profile"));
        assert_eq!(f.router_value.as_deref(), Some("plan-b"));
        assert_eq!(f.desired_value.as_deref(), Some("plan-a"));
        assert!(f.managed);
        assert_eq!(f.action, DriftAction::Reported);
        let f = find("sub00002", Some("password"));
        assert_eq!(f.router_value.as_deref(), Some(REDACTED));
        assert_eq!(f.desired_value.as_deref(), Some(REDACTED));
        let f = find("sub00003", None);
        assert_eq!(
            (f.router_value, f.desired_value.as_deref()),
            (None, Some("present"))
        );
        let f = find("intruder", None);
        assert_eq!(f.desired_value, None);
        let f = find("plan-a", Some("rate-limit"));
        assert_eq!(f.item.kind, ItemKind::PppProfile);
        assert_eq!(f.router_value.as_deref(), Some("99M/99M"));
        assert_eq!(findings.len(), 5, "{findings:#?}");
        let json = serde_json::to_string(&findings).unwrap();
        assert!(!json.contains("stolen") && !json.contains("pw-2"), "{json}");
        assert!(row(&sim, "/ppp/secret", "name", "sub00003").is_none());
        assert_eq!(
            row(&sim, "/ppp/secret", "name", "sub00001").unwrap()["profile"],
            "plan-b"
        );

        // Staff enforce one item: only it changes.
        let item = ItemRef {
            kind: ItemKind::PppSecret,
            key: "sub00001".into(),
        };
        let r = agent.enforce(&client, &[item], false).await;
        assert_eq!(r.steps, 1, "{}", r.detail());
        assert_eq!(
            row(&sim, "/ppp/secret", "name", "sub00001").unwrap()["profile"],
            "plan-a"
        );
        assert!(row(&sim, "/ppp/secret", "name", "sub00003").is_none());
        let findings = agent.last_findings().await;
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].action, DriftAction::Corrected);

        // A staff change under `report` is applied, the drift beside it is not.
        let mut two = one.clone();
        two.generation = 2;
        two.ppp_secrets[4].profile = "plan-b".into();
        agent.want(&two).await;
        let r = agent.pass(&client, DriftTrigger::Reconcile).await;
        assert_eq!(r.steps, 1, "{}", r.detail());
        assert_eq!(r.findings, 4, "{}", r.detail());
        assert_eq!(
            row(&sim, "/ppp/secret", "name", "sub00004").unwrap()["profile"],
            "plan-b"
        );

        // The tenant switches to `enforce`: the rest is corrected and reported so.
        let mut three = two.clone();
        three.generation = 3;
        three.drift.policy = DriftPolicy::Enforce;
        agent.want(&three).await;
        let r = agent.pass(&client, DriftTrigger::Reconcile).await;
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!(r.steps, 4, "{}", r.detail());
        let findings = agent.last_findings().await;
        assert_eq!(findings.len(), 4);
        assert!(findings.iter().all(|f| f.action == DriftAction::Corrected));
        assert_exact(&sim, &three);
        let r = agent.pass(&client, DriftTrigger::Schedule).await;
        assert_eq!((r.steps, r.findings), (0, 0), "{}", r.detail());
    })
    .await;
}

#[tokio::test]
async fn an_administrators_item_is_a_conflict_until_adopted() {
    within(async {
        let sim = sim("7.16.2").await;
        let (client, _) = client(&sim).await;
        let agent = Agent::new();
        // Made by hand before tikfleet came: one with a desired name, one without.
        for name in ["sub00000", "boss"] {
            run_cmd(
                &client,
                Cmd::new("/ppp/secret/add")
                    .attr("name", name)
                    .attr("password", "by-hand")
                    .attr("comment", "the owner's"),
            )
            .await;
        }
        let one = state(
            agent.router,
            1,
            (0..3).map(|i| secret(i, "plan-a")).collect(),
        );
        agent.want(&one).await;
        let r = agent.pass(&client, DriftTrigger::Reconcile).await;
        assert!(r.error.is_none(), "{:?}", r.error);
        assert!(r.applied, "a conflict does not hold up the rest");
        assert_eq!(r.conflicts, 1);
        let findings = agent.last_findings().await;
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert!(!findings[0].managed);
        assert_eq!(findings[0].action, DriftAction::Conflict);
        let by_hand = row(&sim, "/ppp/secret", "name", "sub00000").unwrap();
        assert_eq!(
            (by_hand["password"].as_str(), by_hand["comment"].as_str()),
            ("by-hand", "the owner's")
        );
        assert!(row(&sim, "/ppp/secret", "name", "boss").is_some());

        // Staff adopt it.
        let item = ItemRef {
            kind: ItemKind::PppSecret,
            key: "sub00000".into(),
        };
        let r = agent.enforce(&client, &[item], true).await;
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_exact(&sim, &one);
        let r = agent.pass(&client, DriftTrigger::Schedule).await;
        assert_eq!((r.conflicts, r.findings), (0, 0), "{}", r.detail());
        // The other one is never touched.
        assert_eq!(
            row(&sim, "/ppp/secret", "name", "boss").unwrap()["comment"],
            "the owner's"
        );
    })
    .await;
}

#[tokio::test]
async fn sessions_of_changed_and_removed_accounts_are_disconnected() {
    within(async {
        let sim = sim("7.16.2").await;
        let (client, _) = client(&sim).await;
        let agent = Agent::new();
        let one = state(
            agent.router,
            1,
            (0..3).map(|i| secret(i, "plan-a")).collect(),
        );
        agent.want(&one).await;
        agent.pass(&client, DriftTrigger::Reconcile).await;
        dial_in(&sim, 0..3);
        assert_eq!(online(&sim).len(), 3);
        let mut two = one.clone();
        two.generation = 2;
        two.ppp_secrets[0].profile = "plan-b".into();
        two.ppp_secrets.remove(2);
        agent.want(&two).await;
        let r = agent.pass(&client, DriftTrigger::Reconcile).await;
        assert_eq!(r.sessions, 2, "{}", r.detail());
        assert_eq!(online(&sim), BTreeSet::from(["sub00001".to_owned()]));
        assert_exact(&sim, &two);
    })
    .await;
}

#[tokio::test]
async fn a_pass_cut_off_before_its_markers_is_finished_after_a_restart() {
    within(async {
        // RouterOS 6 takes no comment on /ppp add: the marker is a second command.
        let sim = sim("6.49.10").await;
        let (client, _) = client(&sim).await;
        let agent = Agent::new();
        let one = state(
            agent.router,
            1,
            (0..20).map(|i| secret(i, "plan-a")).collect(),
        );
        agent.want(&one).await;
        // The connection dies after the version read, 5 prints and 38 adds (2 profiles
        // marked with their own verb later, so: every add goes through, then the marking
        // print is cut off).
        faults(
            &sim,
            FaultsPatch {
                drop_after: Some(1 + 5 + 3 + 20 + 10 + 5),
                ..FaultsPatch::default()
            },
        );
        let r = agent.pass(&client, DriftTrigger::Reconcile).await;
        assert!(r.error.is_some(), "the pass was cut off: {}", r.detail());
        assert!(!r.applied);
        let unmarked = menu(&sim, "/ppp/secret")
            .into_iter()
            .filter(|r| !r.get("comment").is_some_and(|c| c.starts_with("tikfleet:")))
            .count();
        assert!(unmarked > 0, "the adds landed without their marker");
        clear_faults(&sim);

        let agent = agent.restart().await;
        let r = agent.pass(&client, DriftTrigger::Reconcile).await;
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!(r.conflicts, 0, "journaled items are ours: {}", r.detail());
        assert!(r.applied);
        assert_exact(&sim, &one);
        let r = agent.pass(&client, DriftTrigger::Schedule).await;
        assert_eq!((r.steps, r.findings), (0, 0), "{}", r.detail());
    })
    .await;
}

#[tokio::test]
async fn a_slow_router_gets_a_bounded_window_of_commands_in_flight() {
    within(async {
        let sim = sim("7.16.2").await;
        let (client, _) = client(&sim).await;
        let agent = Agent::new();
        // 20 ms on every reply, as across a poor site link.
        faults(
            &sim,
            FaultsPatch {
                delay_ms: Some(20),
                ..FaultsPatch::default()
            },
        );
        let one = state(
            agent.router,
            1,
            (0..600).map(|i| secret(i, "plan-a")).collect(),
        );
        agent.want(&one).await;
        let r = agent.pass(&client, DriftTrigger::Reconcile).await;
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_exact(&sim, &one);
        let max = lock(&sim.router(0).stats).max_in_flight;
        let window = ReconcileConfig::default().window as u64;
        assert!(
            max > window / 2 && max <= window,
            "commands in flight: at most {max} (window {window})"
        );
    })
    .await;
}

/// The PPPoE sessions `sub{i}` (password `pw-{i}`) dial in for each `i`.
fn dial_in(sim: &tikfleet_sim::Running, subscribers: std::ops::Range<usize>) {
    for i in subscribers {
        lock(&sim.router(0).device)
            .start_client(
                Service::Pppoe,
                &format!("sub{i:05}"),
                &format!("pw-{i}"),
                None,
                Instant::now(),
            )
            .expect("dials");
    }
}

/// Who has a PPP session on the router.
fn online(sim: &tikfleet_sim::Running) -> BTreeSet<String> {
    menu(sim, "/ppp/active")
        .into_iter()
        .map(|r| r["name"].clone())
        .collect()
}

#[tokio::test]
async fn the_run_loop_applies_new_states_retries_and_checks_on_schedule() {
    within(async {
        let sim = sim("7.16.2").await;
        let (client, _) = client(&sim).await;
        let agent = Agent::new();
        let run = agent.run_loop(&client);
        let applied = |agent: &Agent| {
            agent
                .desired
                .generations()
                .unwrap()
                .first()
                .map_or(0, |g| g.applied)
        };
        let secrets = |n: usize| (0..n).map(|i| secret(i, "plan-a")).collect::<Vec<_>>();

        // A stored state is applied without being asked.
        let mut one = state(agent.router, 1, secrets(5));
        one.drift = DriftSettings {
            interval_ms: 60_000,
            policy: DriftPolicy::Enforce,
        };
        agent.want(&one).await;
        until("generation 1 applied", || applied(&agent) == 1).await;
        assert_exact(&sim, &one);

        // A pass that fails is retried after its backoff.
        let mut two = one.clone();
        two.generation = 2;
        two.ppp_secrets = secrets(6);
        faults(
            &sim,
            FaultsPatch {
                traps: Some(BTreeMap::from([(
                    "/ppp/secret/add".to_owned(),
                    "failure: out of memory".to_owned(),
                )])),
                ..FaultsPatch::default()
            },
        );
        let adds = |sim: &tikfleet_sim::Running| {
            lock(&sim.router(0).stats)
                .view(None, Instant::now())
                .by_path
                .get("/ppp/secret/add")
                .copied()
                .unwrap_or(0)
        };
        let before = adds(&sim);
        agent.want(&two).await;
        until("a failed pass over generation 2", || adds(&sim) > before).await;
        assert_eq!(applied(&agent), 1);
        clear_faults(&sim);
        // The retry waits for its backoff on the agent's clock: time passes, it runs.
        until("generation 2 applied", || {
            agent.clock.advance(std::time::Duration::from_millis(500));
            applied(&agent) == 2
        })
        .await;
        assert_exact(&sim, &two);

        // The drift schedule: a hand change is put back once the interval has passed.
        let id = id_of(&sim, "/ppp/secret", "sub00001");
        run_cmd(
            &client,
            Cmd::new("/ppp/secret/set")
                .attr(".id", id)
                .attr("profile", "plan-b"),
        )
        .await;
        // The next check comes an interval after the last pass ended, as the run loop saw
        // it end: time passes in steps until it has come and put the profile back.
        until("the scheduled check to correct it", || {
            agent.clock.advance(std::time::Duration::from_secs(1));
            row(&sim, "/ppp/secret", "name", "sub00001").unwrap()["profile"] == "plan-a"
        })
        .await;
        // Its report is written after the correction reaches the router: wait for it. Later
        // checks find nothing, so exactly one finding was ever made, the correction.
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        let findings = loop {
            let findings: Vec<DriftFinding> = agent
                .records()
                .await
                .into_iter()
                .filter_map(|r| match r {
                    OutboxRecord::Drift(d) => Some(d.findings),
                    _ => None,
                })
                .flatten()
                .collect();
            if !findings.is_empty() || Instant::now() > deadline {
                break findings;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].action, DriftAction::Corrected);
        assert_eq!(findings[0].item.key, "sub00001");

        run.stop().await;
    })
    .await;
}

#[tokio::test]
async fn subscribers_go_to_grace_then_suspension_on_time_by_the_agent_alone() {
    use tikfleet_shared::domain::{AccountKind, AccountRef, SubscriberLifecycle};
    use tikfleet_shared::{SubscriberId, UnixMillis};

    within(async {
        let sim = sim("7.16.2").await;
        let (client, _) = client(&sim).await;
        let agent = Agent::new();
        let run = agent.run_loop(&client);
        let hour = 3_600_000;
        let lifecycle = |i: usize, suspended_profile: Option<&str>| SubscriberLifecycle {
            subscriber_id: SubscriberId::new(),
            account: AccountRef {
                kind: AccountKind::Ppp,
                name: format!("sub{i:05}"),
            },
            expires_at: Some(UnixMillis(T0.0 + hour)),
            grace_until: Some(UnixMillis(T0.0 + 2 * hour)),
            grace_profile: Some("plan-b".into()),
            suspended_profile: suspended_profile.map(Into::into),
            suspended_address_list: None,
        };
        // sub00000 is disabled at the end of grace, sub00001 moved to a "please renew"
        // profile; sub00002 never expires.
        let mut one = state(
            agent.router,
            1,
            (0..3).map(|i| secret(i, "plan-a")).collect(),
        );
        one.profiles.push(ppp_profile("renew", "64k/64k"));
        one.lifecycles = vec![lifecycle(0, None), lifecycle(1, Some("renew"))];
        agent.want(&one).await;
        let field = |name: &str, key: &str| {
            row(&sim, "/ppp/secret", "name", name)
                .and_then(|r| r.get(key).cloned())
                .unwrap_or_default()
        };
        until("generation 1 applied", || {
            field("sub00002", "profile") == "plan-a"
                && agent.desired.generations().unwrap()[0].applied == 1
        })
        .await;
        dial_in(&sim, 0..3);
        assert_eq!(online(&sim).len(), 3);

        // Expiry: both move to the grace profile at once, and their sessions drop so the
        // slower plan applies when they dial again. Nobody told the agent: the controller
        // is not even there.
        agent
            .clock
            .advance(std::time::Duration::from_millis(hour as u64));
        until("grace", || {
            field("sub00000", "profile") == "plan-b" && field("sub00001", "profile") == "plan-b"
        })
        .await;
        until("the sessions to drop", || {
            online(&sim) == BTreeSet::from(["sub00002".to_owned()])
        })
        .await;
        assert_eq!(field("sub00002", "profile"), "plan-a");

        // End of grace: one disabled, one on the renew profile.
        agent
            .clock
            .advance(std::time::Duration::from_millis(hour as u64));
        until("suspension", || {
            field("sub00000", "disabled") == "true" && field("sub00001", "profile") == "renew"
        })
        .await;
        assert_eq!(field("sub00000", "profile"), "plan-a");
        assert_eq!(field("sub00001", "disabled"), "false");
        // A phase change is applied, never reported as drift.
        let drift: usize = agent
            .records()
            .await
            .iter()
            .map(|r| match r {
                OutboxRecord::Drift(d) => d.findings.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(drift, 0);

        // A renewal (a new state with a later expiry) puts the plan back at once.
        let mut two = one.clone();
        two.generation = 2;
        for l in &mut two.lifecycles {
            l.expires_at = Some(UnixMillis(T0.0 + 30 * 24 * hour));
            l.grace_until = Some(UnixMillis(T0.0 + 31 * 24 * hour));
        }
        agent.want(&two).await;
        until("the renewal", || {
            field("sub00000", "disabled") == "false"
                && field("sub00000", "profile") == "plan-a"
                && field("sub00001", "profile") == "plan-a"
        })
        .await;

        run.stop().await;
    })
    .await;
}
