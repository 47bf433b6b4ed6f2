//! Lifecycle transitions against the simulator, on the agent's manual clock: subscribers move
//! to grace and suspension by the agent alone (PPPoE and hotspot, RouterOS 6 and 7), and each
//! transition is reported to the controller exactly once — across passes and restarts — with
//! the failed ones reported once with their error and again when they are made.

mod reconcile_common;
mod routeros_common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use reconcile_common::*;
use routeros_common::*;
use tikfleet_agent::clock::Clock;
use tikfleet_agent::reconcile::Connect;
use tikfleet_agent::routeros::{DriverError, RouterOsClient};
use tikfleet_shared::domain::{
    AccountKind, AccountRef, DesiredState, DriftSettings, HotspotProfile, HotspotUser,
    LifecyclePhase, PppProfile, PppSecret, PppService, Profile, SubscriberLifecycle,
};
use tikfleet_shared::record::{DriftTrigger, LifecycleReport, LifecycleTransition, OutboxRecord};
use tikfleet_shared::{ErrorCode, RouterId, Secret, SubscriberId, TenantId, UnixMillis};
use tikfleet_sim::faults::FaultsPatch;
use tikfleet_sim::router::lock;
use tikfleet_sim::sessions::Service;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// `T0` plus `ms`.
fn at(ms: i64) -> UnixMillis {
    UnixMillis(T0.0 + ms)
}

fn ppp_profile(name: &str, rate: &str, list: Option<&str>) -> Profile {
    Profile::Ppp(PppProfile {
        name: name.into(),
        rate_limit: Some(rate.into()),
        address_list: list.map(Into::into),
        local_address: None,
        remote_address: None,
        dns_server: None,
        only_one: None,
        comment: Some(format!("plan {name}")),
    })
}

fn hotspot_profile(name: &str, rate: &str, list: Option<&str>) -> Profile {
    Profile::Hotspot(HotspotProfile {
        name: name.into(),
        rate_limit: Some(rate.into()),
        address_list: list.map(Into::into),
        shared_users: Some(1),
        session_timeout_secs: None,
        idle_timeout_secs: None,
        comment: None,
    })
}

fn password(name: &str) -> String {
    format!("pw-{name}")
}

fn ppp(name: &str, profile: &str, remote: Option<&str>) -> PppSecret {
    PppSecret {
        subscriber_id: None,
        name: name.into(),
        password: Secret::new(password(name)),
        service: PppService::Pppoe,
        profile: profile.into(),
        disabled: false,
        remote_address: remote.map(Into::into),
        comment: Some(format!("subscriber {name}")),
    }
}

fn hotspot(name: &str, profile: &str) -> HotspotUser {
    HotspotUser {
        subscriber_id: None,
        name: name.into(),
        password: Secret::new(password(name)),
        profile: profile.into(),
        server: None,
        mac_address: None,
        disabled: false,
        comment: None,
    }
}

/// What a lifecycle does at each phase.
#[derive(Clone, Copy)]
struct Terms<'a> {
    grace_profile: &'a str,
    suspended_profile: Option<&'a str>,
    list: Option<&'a str>,
}

fn lifecycle(
    id: SubscriberId,
    kind: AccountKind,
    name: &str,
    expires: UnixMillis,
    grace: UnixMillis,
    terms: Terms<'_>,
) -> SubscriberLifecycle {
    SubscriberLifecycle {
        subscriber_id: id,
        account: AccountRef {
            kind,
            name: name.into(),
        },
        expires_at: Some(expires),
        grace_until: Some(grace),
        grace_profile: Some(terms.grace_profile.into()),
        suspended_profile: terms.suspended_profile.map(Into::into),
        suspended_address_list: terms.list.map(Into::into),
    }
}

fn empty_state(router: RouterId, generation: u64) -> DesiredState {
    DesiredState {
        generation,
        tenant_id: TenantId::from_bytes([7; 16]),
        router_id: router,
        compiled_at: T0,
        profiles: vec![],
        ppp_secrets: vec![],
        hotspot_users: vec![],
        address_list_entries: vec![],
        lifecycles: vec![],
        drift: DriftSettings::default(),
    }
}

/// The lifecycle reports in the outbox, in order.
async fn reports(agent: &Agent) -> Vec<LifecycleReport> {
    agent
        .records()
        .await
        .into_iter()
        .filter_map(|r| match r {
            OutboxRecord::Lifecycle(l) => Some(l),
            _ => None,
        })
        .collect()
}

/// The transitions of the reports that say they were made (`failed` false) or not.
fn transitions(reports: &[LifecycleReport], failed: bool) -> Vec<LifecycleTransition> {
    reports
        .iter()
        .filter(|r| r.error.is_some() == failed)
        .flat_map(|r| r.transitions.iter().cloned())
        .collect()
}

fn sim_service(kind: AccountKind) -> Service {
    match kind {
        AccountKind::Ppp => Service::Pppoe,
        AccountKind::Hotspot => Service::Hotspot,
    }
}

/// The account's client dials in (as the subscriber's equipment would).
fn dial(sim: &tikfleet_sim::Running, kind: AccountKind, name: &str) -> Result<u32, String> {
    lock(&sim.router(0).device).start_client(
        sim_service(kind),
        name,
        &password(name),
        None,
        Instant::now(),
    )
}

/// Who has a session on the router, PPP or hotspot.
fn online(sim: &tikfleet_sim::Running) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = menu(sim, "/ppp/active")
        .into_iter()
        .map(|r| r["name"].clone())
        .collect();
    names.extend(
        menu(sim, "/ip/hotspot/active")
            .into_iter()
            .map(|r| r["user"].clone()),
    );
    names
}

fn menu_of(kind: AccountKind) -> &'static str {
    match kind {
        AccountKind::Ppp => "/ppp/secret",
        AccountKind::Hotspot => "/ip/hotspot/user",
    }
}

/// An account's field on the router.
fn field(sim: &tikfleet_sim::Running, kind: AccountKind, name: &str, key: &str) -> String {
    row(sim, menu_of(kind), "name", name)
        .and_then(|r| r.get(key).cloned())
        .unwrap_or_default()
}

fn is_true(v: &str) -> bool {
    v == "true" || v == "yes"
}

/// How many times the router ran `path`.
fn count(sim: &tikfleet_sim::Running, path: &str) -> u64 {
    lock(&sim.router(0).stats)
        .view(None, Instant::now())
        .by_path
        .get(path)
        .copied()
        .unwrap_or(0)
}

/// Polls the async `check` until it holds, for up to 20 s.
async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One subscriber of the whole-flow test.
struct Sub {
    id: SubscriberId,
    kind: AccountKind,
    name: &'static str,
    plan: &'static str,
    grace: &'static str,
    /// The suspended profile; `None`: disabled at suspension.
    suspended: Option<&'static str>,
    /// Expiry: `T0` plus this.
    offset: i64,
}

impl Sub {
    fn lifecycle(&self, expires: UnixMillis) -> SubscriberLifecycle {
        lifecycle(
            self.id,
            self.kind,
            self.name,
            expires,
            UnixMillis(expires.0 + HOUR),
            Terms {
                grace_profile: self.grace,
                suspended_profile: self.suspended,
                list: (self.kind == AccountKind::Ppp && self.suspended.is_some())
                    .then_some("unpaid"),
            },
        )
    }
}

/// PPPoE and hotspot subscribers through grace, suspension (by profile and by disabling),
/// renewal and a new expiry, on the router of `version`.
async fn whole_flow(version: &str) {
    let sim = sim(version).await;
    let (client, _) = client(&sim).await;
    let agent = Agent::new();
    let subs = [
        Sub {
            id: SubscriberId::new(),
            kind: AccountKind::Ppp,
            name: "p-prof",
            plan: "plan-a",
            grace: "grace-ppp",
            suspended: Some("renew-ppp"),
            offset: HOUR,
        },
        Sub {
            id: SubscriberId::new(),
            kind: AccountKind::Ppp,
            name: "p-dis",
            plan: "plan-a",
            grace: "grace-ppp",
            suspended: None,
            offset: HOUR + MINUTE,
        },
        Sub {
            id: SubscriberId::new(),
            kind: AccountKind::Hotspot,
            name: "h-prof",
            plan: "hs-plan",
            grace: "hs-grace",
            suspended: Some("hs-renew"),
            offset: HOUR + 2 * MINUTE,
        },
        Sub {
            id: SubscriberId::new(),
            kind: AccountKind::Hotspot,
            name: "h-dis",
            plan: "hs-plan",
            grace: "hs-grace",
            suspended: None,
            offset: HOUR + 3 * MINUTE,
        },
    ];
    let fixed = "100.64.9.1";
    let mut one = empty_state(agent.router, 1);
    one.profiles = vec![
        ppp_profile("plan-a", "10M/10M", None),
        ppp_profile("grace-ppp", "1M/1M", None),
        // The "please renew" profile: its sessions join the list the captive page serves.
        ppp_profile("renew-ppp", "64k/64k", Some("unpaid")),
        hotspot_profile("hs-plan", "10M/10M", None),
        hotspot_profile("hs-grace", "1M/1M", None),
        hotspot_profile("hs-renew", "64k/64k", Some("unpaid")),
    ];
    one.ppp_secrets = vec![
        ppp("p-prof", "plan-a", Some(fixed)),
        ppp("p-dis", "plan-a", None),
        ppp("p-never", "plan-a", None),
    ];
    one.hotspot_users = vec![hotspot("h-prof", "hs-plan"), hotspot("h-dis", "hs-plan")];
    one.lifecycles = subs.iter().map(|s| s.lifecycle(at(s.offset))).collect();
    agent.want(&one).await;

    let pass = |what: &'static str| {
        let agent = &agent;
        let client = &client;
        async move {
            let r = agent.pass(client, DriftTrigger::Reconcile).await;
            assert!(r.error.is_none(), "{what}: {:?}", r.error);
            assert!(r.applied, "{what}");
            assert_eq!(r.findings, 0, "{what}: a phase change is no drift");
            r
        }
    };
    let everyone = |sim: &tikfleet_sim::Running| {
        for s in &subs {
            dial(sim, s.kind, s.name).unwrap_or_else(|e| panic!("{} dials: {e}", s.name));
        }
    };
    let only_never = BTreeSet::from(["p-never".to_owned()]);

    // Active: the plans, nothing to report.
    pass("active").await;
    assert!(reports(&agent).await.is_empty(), "nobody changed phase");
    for s in &subs {
        assert_eq!(field(&sim, s.kind, s.name, "profile"), s.plan, "{}", s.name);
    }
    assert_eq!(
        row(&sim, "/ppp/profile", "name", "renew-ppp").unwrap()["address-list"],
        "unpaid"
    );
    assert_eq!(
        row(&sim, "/ip/hotspot/user/profile", "name", "hs-renew").unwrap()["address-list"],
        "unpaid"
    );
    everyone(&sim);
    dial(&sim, AccountKind::Ppp, "p-never").expect("dials");
    assert_eq!(online(&sim).len(), 5);

    // Expiry: everyone with a lifecycle is in grace; their sessions drop.
    agent.clock.set(at(HOUR + 10 * MINUTE));
    pass("grace").await;
    for s in &subs {
        assert_eq!(
            field(&sim, s.kind, s.name, "profile"),
            s.grace,
            "{}",
            s.name
        );
        assert!(!is_true(&field(&sim, s.kind, s.name, "disabled")));
    }
    assert_eq!(
        field(&sim, AccountKind::Ppp, "p-never", "profile"),
        "plan-a"
    );
    assert_eq!(online(&sim), only_never, "the grace terms apply at once");
    // The lifecycle report comes before the pass's apply report.
    let records = agent.records().await;
    let last = records.len() - 1;
    assert!(
        matches!(&records[last], OutboxRecord::Applied(a) if a.error.is_none()),
        "{:?}",
        records[last]
    );
    assert!(matches!(&records[last - 1], OutboxRecord::Lifecycle(_)));
    // Nothing new on the next pass.
    let r = pass("again").await;
    assert_eq!(r.steps, 0, "{}", r.detail());

    // End of grace: suspended by profile (with the address-list entry of a fixed address),
    // or disabled.
    everyone(&sim);
    agent.clock.set(at(3 * HOUR + 5 * MINUTE));
    pass("suspension").await;
    for s in &subs {
        let (profile, disabled) = match s.suspended {
            Some(p) => (p, false),
            None => (s.plan, true),
        };
        assert_eq!(
            field(&sim, s.kind, s.name, "profile"),
            profile,
            "{}",
            s.name
        );
        assert_eq!(
            is_true(&field(&sim, s.kind, s.name, "disabled")),
            disabled,
            "{}",
            s.name
        );
    }
    let entry = row(&sim, "/ip/firewall/address-list", "address", fixed).expect("entry");
    assert_eq!(entry["list"], "unpaid");
    assert_eq!(online(&sim), only_never, "the suspension applies at once");
    for s in &subs {
        let dialled = dial(&sim, s.kind, s.name);
        match s.suspended {
            Some(_) => assert!(dialled.is_ok(), "{}: {dialled:?}", s.name),
            None => assert_eq!(dialled, Err("user is disabled".into()), "{}", s.name),
        }
    }
    assert_eq!(online(&sim).len(), 3);

    // A renewal: the plan back, enabled, sessions dropped, the entry gone.
    let mut two = one.clone();
    two.generation = 2;
    two.lifecycles = subs
        .iter()
        .map(|s| s.lifecycle(at(30 * DAY + s.offset)))
        .collect();
    agent.want(&two).await;
    pass("renewal").await;
    for s in &subs {
        assert_eq!(field(&sim, s.kind, s.name, "profile"), s.plan, "{}", s.name);
        assert!(!is_true(&field(&sim, s.kind, s.name, "disabled")));
    }
    assert!(row(&sim, "/ip/firewall/address-list", "address", fixed).is_none());
    assert_eq!(online(&sim), only_never, "the plan applies at once");
    assert!(
        agent.desired.phases(agent.router).unwrap().is_empty(),
        "renewed subscribers leave the phase map"
    );

    // The next expiry is reported again.
    agent.clock.set(at(30 * DAY + HOUR + 10 * MINUTE));
    pass("grace again").await;
    for s in &subs {
        assert_eq!(
            field(&sim, s.kind, s.name, "profile"),
            s.grace,
            "{}",
            s.name
        );
    }

    // Exactly one transition per subscriber and phase, with its times.
    let reports = reports(&agent).await;
    assert!(transitions(&reports, true).is_empty(), "nothing failed");
    assert!(reports.iter().all(|r| r.router_id == agent.router));
    let mut seen: HashMap<SubscriberId, Vec<(LifecyclePhase, UnixMillis, UnixMillis)>> =
        HashMap::new();
    for t in transitions(&reports, false) {
        let s = subs
            .iter()
            .find(|s| s.id == t.subscriber_id)
            .expect("a subscriber with a lifecycle");
        assert_eq!((t.account.kind, t.account.name.as_str()), (s.kind, s.name));
        seen.entry(t.subscriber_id)
            .or_default()
            .push((t.phase, t.expires_at, t.due_at));
    }
    assert_eq!(seen.len(), subs.len());
    for s in &subs {
        let (e1, e2) = (at(s.offset), at(30 * DAY + s.offset));
        assert_eq!(
            seen[&s.id],
            vec![
                (LifecyclePhase::Grace, e1, e1),
                (LifecyclePhase::Suspended, e1, UnixMillis(e1.0 + HOUR)),
                (LifecyclePhase::Grace, e2, e2),
            ],
            "{}",
            s.name
        );
    }
    let generations: Vec<u64> = reports.iter().map(|r| r.generation).collect();
    assert_eq!(generations, vec![1, 1, 2]);
}

#[tokio::test]
async fn the_whole_lifecycle_is_applied_and_reported_once_on_routeros_6() {
    within(whole_flow("6.49.10")).await;
}

#[tokio::test]
async fn the_whole_lifecycle_is_applied_and_reported_once_on_routeros_7() {
    within(whole_flow("7.16.2")).await;
}

/// Three PPP subscribers expiring at `T0 + 1 h`, suspended (disabled) an hour later.
fn three(router: RouterId) -> DesiredState {
    let mut s = empty_state(router, 1);
    s.profiles = vec![
        ppp_profile("plan-a", "10M/10M", None),
        ppp_profile("plan-b", "1M/1M", None),
    ];
    s.ppp_secrets = (0..3)
        .map(|i| ppp(&format!("sub{i}"), "plan-a", None))
        .collect();
    s.lifecycles = (0..3u8)
        .map(|i| {
            lifecycle(
                SubscriberId::from_bytes([i + 1; 16]),
                AccountKind::Ppp,
                &format!("sub{i}"),
                at(HOUR),
                at(2 * HOUR),
                Terms {
                    grace_profile: "plan-b",
                    suspended_profile: None,
                    list: None,
                },
            )
        })
        .collect();
    s
}

fn phases_of(ts: &[LifecycleTransition]) -> Vec<LifecyclePhase> {
    ts.iter().map(|t| t.phase).collect()
}

#[tokio::test]
async fn a_restart_reports_nothing_twice_and_a_crash_before_the_phase_map_resends() {
    within(async {
        let sim = sim("7.16.2").await;
        let (client, _) = client(&sim).await;
        let agent = Agent::new();
        agent.want(&three(agent.router)).await;
        agent.pass(&client, DriftTrigger::Reconcile).await;
        agent.clock.set(at(HOUR));
        let r = agent.pass(&client, DriftTrigger::Reconcile).await;
        assert!(r.applied, "{:?}", r.error);
        assert_eq!(
            phases_of(&transitions(&reports(&agent).await, false)),
            vec![LifecyclePhase::Grace; 3]
        );

        // A restart: the phase map is on disk, nothing is reported again.
        let agent = agent.restart().await;
        let r = agent.pass(&client, DriftTrigger::Reconcile).await;
        assert!(r.applied, "{:?}", r.error);
        assert_eq!(
            reports(&agent).await.len(),
            1,
            "no duplicate after a restart"
        );

        // The at-least-once edge: the reports are durable before the phase map is stored,
        // so an agent killed between the two (here: the map as it was before the pass)
        // reports the same transitions again after its restart. The controller takes them
        // idempotently.
        let before = agent.desired.phases(agent.router).unwrap();
        agent.clock.set(at(2 * HOUR));
        agent.pass(&client, DriftTrigger::Reconcile).await;
        assert_eq!(reports(&agent).await.len(), 2);
        agent.desired.set_phases(agent.router, &before).unwrap();
        agent.desired.commit().await.unwrap();
        let agent = agent.restart().await;
        agent.pass(&client, DriftTrigger::Reconcile).await;
        agent.pass(&client, DriftTrigger::Schedule).await;
        let reports = reports(&agent).await;
        assert_eq!(reports.len(), 3, "sent again once, then known");
        assert_eq!(reports[1].transitions, reports[2].transitions);
        assert_eq!(
            phases_of(&reports[2].transitions),
            vec![LifecyclePhase::Suspended; 3]
        );
        for i in 0..3 {
            assert!(is_true(&field(
                &sim,
                AccountKind::Ppp,
                &format!("sub{i}"),
                "disabled"
            )));
        }
    })
    .await;
}

/// Hands the run loop one client, or refuses while `down`, counting the attempts.
struct Switch {
    client: RouterOsClient,
    down: AtomicBool,
    attempts: AtomicUsize,
}

impl Connect for Switch {
    fn client(&self, _: RouterId) -> BoxFuture<'_, Result<RouterOsClient, DriverError>> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let res = if self.down.load(Ordering::SeqCst) {
            Err(DriverError::new(
                ErrorCode::ConnectionRefused,
                "connection refused (the test's router is down)",
            ))
        } else {
            Ok(self.client.clone())
        };
        Box::pin(async move { res })
    }

    fn forget(&self, _: RouterId) {}
}

#[tokio::test]
async fn a_failing_router_reports_due_transitions_once_then_applies_and_reports_them() {
    within(async {
        let sim = sim("7.16.2").await;
        let (client, _) = client(&sim).await;
        let agent = Agent::new();
        let switch = Arc::new(Switch {
            client,
            down: AtomicBool::new(false),
            attempts: AtomicUsize::new(0),
        });
        let run = agent.run_loop_with(switch.clone());
        agent.want(&three(agent.router)).await;
        until("generation 1 applied", || {
            agent.desired.generations().unwrap()[0].applied == 1
        })
        .await;
        let failed_passes = |records: &[OutboxRecord]| {
            records
                .iter()
                .filter(|r| matches!(r, OutboxRecord::Applied(a) if a.error.is_some()))
                .count()
        };
        let profiles = |sim: &tikfleet_sim::Running| -> Vec<String> {
            (0..3)
                .map(|i| field(sim, AccountKind::Ppp, &format!("sub{i}"), "profile"))
                .collect()
        };

        // The router refuses the changes when grace is due; the run loop retries.
        faults(
            &sim,
            FaultsPatch {
                traps: Some(BTreeMap::from([(
                    "/ppp/secret/set".to_owned(),
                    "failure: out of memory".to_owned(),
                )])),
                ..FaultsPatch::default()
            },
        );
        agent.clock.set(at(HOUR));
        for n in 1..=4 {
            wait_for("a failed pass", || async {
                agent.clock.advance(Duration::from_millis(500));
                failed_passes(&agent.records().await) >= n
            })
            .await;
        }
        assert_eq!(profiles(&sim), vec!["plan-a"; 3]);
        let reports = reports(&agent).await;
        assert_eq!(
            reports.len(),
            1,
            "one failure report for four failed passes"
        );
        let error = reports[0].error.as_ref().expect("failed");
        assert!(error.message.contains("out of memory"), "{error:?}");
        assert_eq!(
            phases_of(&reports[0].transitions),
            vec![LifecyclePhase::Grace; 3]
        );
        assert!(reports[0].transitions.iter().all(|t| t.due_at == at(HOUR)));

        // The router recovers: the retry applies and reports them.
        clear_faults(&sim);
        wait_for("grace applied and reported", || async {
            agent.clock.advance(Duration::from_millis(500));
            transitions(&crate::reports(&agent).await, false).len() == 3
        })
        .await;
        assert_eq!(profiles(&sim), vec!["plan-b"; 3]);

        // The router is unreachable when suspension is due.
        switch.down.store(true, Ordering::SeqCst);
        agent.clock.set(at(2 * HOUR));
        for n in 1..=4 {
            let before = switch.attempts.load(Ordering::SeqCst);
            until("a connection attempt", || {
                agent.clock.advance(Duration::from_millis(500));
                switch.attempts.load(Ordering::SeqCst) > before
            })
            .await;
            if n == 1 {
                wait_for("the failure report", || async {
                    crate::reports(&agent).await.len() == 3
                })
                .await;
            }
        }
        switch.down.store(false, Ordering::SeqCst);
        wait_for("suspension applied and reported", || async {
            agent.clock.advance(Duration::from_millis(500));
            transitions(&crate::reports(&agent).await, false).len() == 6
        })
        .await;
        for i in 0..3 {
            assert!(is_true(&field(
                &sim,
                AccountKind::Ppp,
                &format!("sub{i}"),
                "disabled"
            )));
        }
        run.stop().await;

        let reports = crate::reports(&agent).await;
        let shape: Vec<(bool, Vec<LifecyclePhase>)> = reports
            .iter()
            .map(|r| (r.error.is_some(), phases_of(&r.transitions)))
            .collect();
        use LifecyclePhase::{Grace, Suspended};
        assert_eq!(
            shape,
            vec![
                (true, vec![Grace; 3]),
                (false, vec![Grace; 3]),
                (true, vec![Suspended; 3]),
                (false, vec![Suspended; 3]),
            ]
        );
        assert_eq!(
            reports[2].error.as_ref().map(|e| e.code),
            Some(ErrorCode::ConnectionRefused)
        );
        assert!(
            reports[3]
                .transitions
                .iter()
                .all(|t| t.due_at == at(2 * HOUR) && t.expires_at == at(HOUR))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_expiring_in_one_minute_are_all_in_grace_by_its_end() {
    const N: usize = 1_000;
    tokio::time::timeout(Duration::from_secs(100), async {
        let sim = sim("7.16.2").await;
        let (client, _) = client(&sim).await;
        let agent = Agent::new();
        let minute = at(HOUR);
        let expires = |i: usize| UnixMillis(minute.0 + (i as i64) * MINUTE / N as i64);
        let mut one = empty_state(agent.router, 1);
        one.profiles = vec![
            ppp_profile("plan-a", "10M/10M", None),
            ppp_profile("plan-b", "1M/1M", None),
        ];
        one.ppp_secrets = (0..N)
            .map(|i| ppp(&format!("sub{i:04}"), "plan-a", None))
            .collect();
        one.lifecycles = (0..N)
            .map(|i| {
                lifecycle(
                    SubscriberId::new(),
                    AccountKind::Ppp,
                    &format!("sub{i:04}"),
                    expires(i),
                    UnixMillis(expires(i).0 + DAY),
                    Terms {
                        grace_profile: "plan-b",
                        suspended_profile: None,
                        list: None,
                    },
                )
            })
            .collect();
        let run = agent.run_loop(&client);
        agent.want(&one).await;
        until("generation 1 applied", || {
            agent.desired.generations().unwrap()[0].applied == 1
        })
        .await;
        let sets = count(&sim, "/ppp/secret/set");

        // Through the minute a second at a time; each second's expiries are in grace and
        // reported before the clock moves on.
        let end = UnixMillis(minute.0 + MINUTE);
        for s in 0..=60 {
            let now = UnixMillis(minute.0 + s * 1_000);
            agent.clock.set(now);
            let due = (0..N).filter(|&i| expires(i) <= now).count();
            wait_for("this second's expiries reported", || async {
                transitions(&reports(&agent).await, false).len() >= due
            })
            .await;
        }
        run.stop().await;

        let rows = menu(&sim, "/ppp/secret");
        let in_grace = rows.iter().filter(|r| r["profile"] == "plan-b").count();
        assert_eq!(in_grace, N, "all in grace by the end of the minute");
        let reports = reports(&agent).await;
        assert!(reports.iter().all(|r| r.error.is_none()));
        assert!(
            reports.iter().all(|r| r.at <= end),
            "every transition within the minute"
        );
        let mut per: HashMap<SubscriberId, usize> = HashMap::new();
        for r in &reports {
            for t in &r.transitions {
                assert_eq!(t.phase, LifecyclePhase::Grace);
                assert!(t.due_at <= r.at, "applied after it was due");
                *per.entry(t.subscriber_id).or_default() += 1;
            }
        }
        assert_eq!(per.len(), N);
        assert!(per.values().all(|&n| n == 1), "one grace transition each");
        // One profile change per account: 1,000 sets in all, and every account moved.
        assert_eq!(count(&sim, "/ppp/secret/set") - sets, N as u64);
        assert!(agent.clock.now() <= end);
    })
    .await
    .expect("test timed out");
}
