//! The subscriber lifecycle on the controller: tenant settings and plan overrides through the
//! API and into every router's desired state; transitions reported by agents (exactly once,
//! status, audit with the reason, history, stale reports after a renewal); renewals by date
//! and by period; manual suspension and resumption; failed transitions; a thousand
//! transitions in one report. Runs on SQLite, or on PostgreSQL when
//! `TIKFLEET_TEST_DATABASE_URL` is set.

mod common;

use std::time::Duration;

use common::{START, Tenant, TestApp, commit, error_code, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tikfleet_controller::db::Db;
use tikfleet_controller::hub::HubStore as _;
use tikfleet_shared::domain::{AccountKind, AccountRef, DesiredState, LifecyclePhase, Profile};
use tikfleet_shared::record::{LifecycleReport, LifecycleTransition, OutboxRecord};
use tikfleet_shared::{AgentId, ErrorCode, ErrorInfo, RouterId, UnixMillis};

const DAY: i64 = 86_400_000;

fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
        .to_owned()
}

struct Site {
    tenant: Tenant,
    agent: AgentId,
    router: RouterId,
    plan: String,
}

async fn site(app: &TestApp, name: &str) -> Site {
    let tenant = app.tenant(name).await;
    let agent = app.agent(&tenant, &format!("{name}-site")).await;
    let router = app
        .router(&tenant.operator, &agent.id, &format!("{name}-core"))
        .await;
    let plan = app
        .plan(&tenant.operator, &format!("{name}-basic"), "10M/10M")
        .await;
    Site {
        tenant,
        agent: agent.id.parse().unwrap(),
        router: s(&router, "id").parse().unwrap(),
        plan: s(&plan, "id"),
    }
}

/// A subscriber of `site` expiring `in_ms` after START.
async fn subscriber(app: &TestApp, site: &Site, name: &str, service: &str, in_ms: i64) -> Value {
    let expires = tikfleet_controller::api::validate::format_time(UnixMillis(START + in_ms));
    let (st, v) = app
        .post(
            &site.tenant.operator,
            "/api/v1/subscribers",
            json!({
                "username": name, "password": "sub-secret-pw", "plan_id": site.plan,
                "router_id": site.router.to_string(), "service": service, "expires_at": expires,
                "email": format!("{name}@example.net"), "phone": "+254700000001",
            }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v
}

fn transition(sub: &Value, phase: LifecyclePhase, expires: i64, due: i64) -> LifecycleTransition {
    LifecycleTransition {
        subscriber_id: s(sub, "id").parse().unwrap(),
        account: AccountRef {
            kind: if sub["service"] == "hotspot" {
                AccountKind::Hotspot
            } else {
                AccountKind::Ppp
            },
            name: s(sub, "username"),
        },
        phase,
        expires_at: UnixMillis(expires),
        due_at: UnixMillis(due),
    }
}

fn report(router: RouterId, at: i64, transitions: Vec<LifecycleTransition>) -> OutboxRecord {
    OutboxRecord::Lifecycle(LifecycleReport {
        router_id: router,
        generation: 1,
        at: UnixMillis(at),
        transitions,
        error: None,
    })
}

async fn state_of(db: &Db, agent: AgentId, router: RouterId) -> DesiredState {
    db.desired_states(agent, &[])
        .await
        .unwrap()
        .into_iter()
        .find(|st| st.router_id == router)
        .expect("the router's desired state")
}

async fn audit(app: &TestApp, token: &str, action: &str) -> Vec<Value> {
    let (st, v) = app
        .get(token, &format!("/api/v1/audit?action={action}&limit=500"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

/// Every page of `path` (a list with `items` and `next_cursor`).
async fn all_pages(app: &TestApp, token: &str, path: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let (st, v) = app.get(token, &url).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        items.extend(v["items"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
    }
}

async fn lifecycle_of(app: &TestApp, token: &str, sub: &Value) -> Value {
    let (st, v) = app
        .get(
            token,
            &format!("/api/v1/subscribers/{}/lifecycle", s(sub, "id")),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

async fn job_kinds(app: &TestApp, token: &str, router: RouterId) -> Vec<String> {
    let (_, v) = app
        .get(token, &format!("/api/v1/jobs?router_id={router}&limit=500"))
        .await;
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| s(j, "kind"))
        .collect()
}

fn profile<'a>(state: &'a DesiredState, name: &str) -> &'a Profile {
    state
        .profiles
        .iter()
        .find(|p| p.name() == name)
        .unwrap_or_else(|| panic!("no profile {name} in {:?}", state.profiles))
}

#[tokio::test]
async fn settings_and_plan_overrides_reach_the_desired_state() {
    let app = spawn_app().await;
    let a = site(&app, "acme").await;
    let b = site(&app, "beta").await;
    let alice = subscriber(&app, &a, "alice", "pppoe", 10 * DAY).await;
    let path = format!("/api/v1/tenants/{}/lifecycle", a.tenant.id);

    // The defaults: notices 2 and 1 days ahead, 3 days of grace on tikfleet-grace at 1M,
    // then the account disabled.
    let (st, v) = app.get(&a.tenant.viewer, &path).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["notice_days"], json!([2, 1]));
    assert_eq!(v["grace_period_secs"], 259_200);
    assert_eq!(v["suspension_mode"], "disable");
    let state = state_of(&app.t.db, a.agent, a.router).await;
    assert_eq!(state.lifecycles.len(), 1);
    let l = &state.lifecycles[0];
    assert_eq!(l.expires_at, Some(UnixMillis(START + 10 * DAY)));
    assert_eq!(l.grace_until, Some(UnixMillis(START + 13 * DAY)));
    assert_eq!(l.grace_profile.as_deref(), Some("tikfleet-grace"));
    assert_eq!(l.suspended_profile, None, "disable mode");
    match profile(&state, "tikfleet-grace") {
        Profile::Ppp(p) => assert_eq!(p.rate_limit.as_deref(), Some("1M/1M")),
        other => panic!("{other:?}"),
    }

    // Refusals: viewers, bad values, a profile a plan already has, another tenant.
    let (st, _) = app
        .put(&a.tenant.viewer, &path, json!({"grace_period_secs": 60}))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    for bad in [
        json!({"notice_days": [0]}),
        json!({"notice_days": [1, 2, 3, 4, 5, 6]}),
        json!({"grace_period_secs": 100 * 86_400}),
        json!({"grace_rate_limit": "fast"}),
        json!({"suspension_mode": "delete"}),
        json!({"grace_profile": "acme-basic"}),
        json!({"grace_profile": "same", "suspended_profile": "same", "suspension_mode": "profile"}),
        json!({"grace": 5}),
    ] {
        let (st, v) = app.put(&a.tenant.operator, &path, bad.clone()).await;
        assert!(
            st == StatusCode::BAD_REQUEST || st == StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {st} {v}"
        );
        assert!(!error_code(&v).is_empty());
    }
    let (st, _) = app
        .put(&b.tenant.operator, &path, json!({"grace_period_secs": 60}))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "another tenant's settings");
    let (st, v) = app
        .post(
            &a.tenant.operator,
            "/api/v1/plans",
            json!({"name": "slow", "profile": "tikfleet-grace", "rate_limit": "1M/1M"}),
        )
        .await;
    assert_eq!(
        st,
        StatusCode::BAD_REQUEST,
        "a plan on the grace profile: {v}"
    );

    // Set: fields left out take their defaults; notice days are sorted, deduplicated.
    let generation = state.generation;
    let b_generation = state_of(&app.t.db, b.agent, b.router).await.generation;
    let (st, v) = app
        .put(
            &a.tenant.operator,
            &path,
            json!({"notice_days": [1, 3, 3], "grace_period_secs": 3600,
                   "suspension_mode": "profile", "suspended_rate_limit": "128k/128k",
                   "suspended_address_list": "unpaid"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["notice_days"], json!([3, 1]));
    assert_eq!(v["grace_profile"], "tikfleet-grace");
    let state = state_of(&app.t.db, a.agent, a.router).await;
    assert_eq!(state.generation, generation + 1, "a new generation");
    let l = &state.lifecycles[0];
    assert_eq!(
        l.grace_until,
        Some(UnixMillis(START + 10 * DAY + 3_600_000))
    );
    assert_eq!(l.suspended_profile.as_deref(), Some("tikfleet-suspended"));
    assert_eq!(l.suspended_address_list.as_deref(), Some("unpaid"));
    match profile(&state, "tikfleet-suspended") {
        Profile::Ppp(p) => {
            assert_eq!(p.rate_limit.as_deref(), Some("128k/128k"));
            assert_eq!(p.address_list.as_deref(), Some("unpaid"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        state_of(&app.t.db, b.agent, b.router).await.generation,
        b_generation,
        "another tenant's routers keep their generation"
    );
    let rows = audit(&app, &a.tenant.viewer, "tenant.lifecycle_settings").await;
    assert_eq!(rows.len(), 1);

    // A plan's override: no grace profile (the plan's own during grace), straight to
    // disable after a day.
    let plan_path = format!("/api/v1/plans/{}/lifecycle", a.plan);
    let (st, v) = app
        .put(
            &a.tenant.operator,
            &plan_path,
            json!({"grace_profile": "", "grace_period_secs": 86400, "suspension_mode": "disable"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["overrides"]["grace_profile"], "");
    assert_eq!(v["effective"]["grace_profile"], Value::Null);
    assert_eq!(v["effective"]["notice_days"], json!([3, 1]), "the tenant's");
    let state = state_of(&app.t.db, a.agent, a.router).await;
    let l = &state.lifecycles[0];
    assert_eq!(l.grace_profile, None);
    assert_eq!(l.grace_until, Some(UnixMillis(START + 11 * DAY)));
    assert_eq!(l.suspended_profile, None);
    assert!(
        state.profiles.iter().all(|p| p.name() == "acme-basic"),
        "only the plan's profile is needed now: {:?}",
        state.profiles
    );
    let v = lifecycle_of(&app, &a.tenant.viewer, &alice).await;
    assert_eq!(v["phase_now"], "active");
    assert_eq!(v["grace_until"], "2026-01-12T00:00:00Z");
    // Back to the tenant's.
    let (st, v) = app.put(&a.tenant.operator, &plan_path, json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["effective"]["grace_profile"], "tikfleet-grace");
}

#[tokio::test]
async fn transitions_reported_by_the_agent_are_taken_once_and_renewal_restores() {
    let app = spawn_app().await;
    let a = site(&app, "acme").await;
    let alice = subscriber(&app, &a, "alice", "pppoe", DAY).await;
    let hana = subscriber(&app, &a, "hana", "hotspot", DAY).await;
    let expires = START + DAY;
    let grace_end = expires + 3 * DAY;

    // The controller was away: the agent applied grace at expiry and reports it later.
    app.t.clock.advance(Duration::from_millis(2 * DAY as u64));
    let grace = report(
        a.router,
        expires + 5,
        vec![
            transition(&alice, LifecyclePhase::Grace, expires, expires),
            transition(&hana, LifecyclePhase::Grace, expires, expires),
        ],
    );
    commit(&app.t.db, a.agent, vec![grace.clone()]).await;
    // The same report again under new seqs (an agent that crashed before noting it sent it).
    commit(&app.t.db, a.agent, vec![grace]).await;
    for sub in [&alice, &hana] {
        let v = lifecycle_of(&app, &a.tenant.viewer, sub).await;
        assert_eq!(v["subscriber"]["status"], "grace", "{v}");
        assert_eq!(v["subscriber"]["status_reason"], "expiry");
        assert_eq!(
            v["subscriber"]["status_at"], "2026-01-02T00:00:00.005Z",
            "when the router changed, not when the controller heard"
        );
        let events = v["events"].as_array().unwrap();
        assert_eq!(events.len(), 2, "created and grace: {events:?}");
        assert_eq!(events[0]["phase"], "grace");
        assert_eq!(events[0]["reason"], "expiry");
        assert_eq!(events[0]["actor"], "agent:acme-site");
    }
    let rows = audit(&app, &a.tenant.viewer, "subscriber.grace").await;
    assert_eq!(rows.len(), 2, "one audit row per transition: {rows:?}");
    assert_eq!(rows[0]["params"]["reason"], "expiry");

    // Suspension at the end of grace, reported once.
    app.t.clock.advance(Duration::from_millis(2 * DAY as u64));
    commit(
        &app.t.db,
        a.agent,
        vec![report(
            a.router,
            grace_end + 3,
            vec![transition(
                &alice,
                LifecyclePhase::Suspended,
                expires,
                grace_end,
            )],
        )],
    )
    .await;
    let v = lifecycle_of(&app, &a.tenant.viewer, &alice).await;
    assert_eq!(v["subscriber"]["status"], "suspended");
    assert_eq!(v["phase_now"], "suspended");
    assert_eq!(
        audit(&app, &a.tenant.viewer, "subscriber.suspend")
            .await
            .len(),
        1
    );

    // Renewal by period while suspended: from now (the old expiry has passed).
    let jobs_before = job_kinds(&app, &a.tenant.viewer, a.router).await.len();
    let (st, v) = app
        .post(
            &a.tenant.operator,
            &format!("/api/v1/subscribers/{}/renew", s(&alice, "id")),
            json!({"period_secs": 30 * 86_400}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "active");
    assert_eq!(v["status_reason"], "renewal");
    let now = START + 4 * DAY;
    assert_eq!(
        v["expires_at"],
        tikfleet_controller::api::validate::format_time(UnixMillis(now + 30 * DAY))
    );
    let kinds = job_kinds(&app, &a.tenant.viewer, a.router).await;
    assert_eq!(
        kinds.len(),
        jobs_before + 2,
        "the plan's terms and a reconnection at once: {kinds:?}"
    );
    let state = state_of(&app.t.db, a.agent, a.router).await;
    let secret = state
        .ppp_secrets
        .iter()
        .find(|s| s.name == "alice")
        .unwrap();
    assert_eq!(secret.profile, "acme-basic");
    assert!(!secret.disabled);
    let l = state
        .lifecycles
        .iter()
        .find(|l| l.account.name == "alice")
        .unwrap();
    assert_eq!(l.expires_at, Some(UnixMillis(now + 30 * DAY)));
    assert_eq!(
        audit(&app, &a.tenant.viewer, "subscriber.renew")
            .await
            .len(),
        1
    );

    // Hana is renewed at the end of her grace; the router, which the renewal had not
    // reached yet, suspends her 7 ms later and reports it after: that event is history
    // (`current: false`), and she stays active.
    let (st, v) = app
        .post(
            &a.tenant.operator,
            &format!("/api/v1/subscribers/{}/renew", s(&hana, "id")),
            json!({"expires_at": "2026-03-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "active");
    commit(
        &app.t.db,
        a.agent,
        vec![report(
            a.router,
            grace_end + 7,
            vec![transition(
                &hana,
                LifecyclePhase::Suspended,
                expires,
                grace_end,
            )],
        )],
    )
    .await;
    let v = lifecycle_of(&app, &a.tenant.viewer, &hana).await;
    assert_eq!(v["subscriber"]["status"], "active", "{v}");
    assert_eq!(v["subscriber"]["status_reason"], "renewal", "{v}");
    assert_eq!(v["events"][0]["phase"], "suspended", "{v}");
    assert_eq!(v["events"][0]["current"], false, "{v}");
    assert_eq!(v["events"][1]["reason"], "renewal", "{v}");
    let rows = audit(&app, &a.tenant.viewer, "subscriber.suspend").await;
    assert_eq!(rows.len(), 2, "alice's, and hana's as history");
    let hana_row = rows
        .iter()
        .find(|r| r["params"]["username"] == "hana")
        .expect("hana's suspension");
    assert_eq!(hana_row["params"]["current"], "false");

    // Renewal refusals.
    for bad in [
        json!({}),
        json!({"period_secs": 0}),
        json!({"expires_at": "2025-01-01T00:00:00Z"}),
        json!({"expires_at": "2026-03-01T00:00:00Z", "period_secs": 60}),
    ] {
        let (st, v) = app
            .post(
                &a.tenant.operator,
                &format!("/api/v1/subscribers/{}/renew", s(&hana, "id")),
                bad.clone(),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    let (st, _) = app
        .post(
            &a.tenant.viewer,
            &format!("/api/v1/subscribers/{}/renew", s(&hana, "id")),
            json!({"period_secs": 60}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn manual_suspension_holds_until_resumed() {
    let app = spawn_app().await;
    let a = site(&app, "acme").await;
    let alice = subscriber(&app, &a, "alice", "pppoe", DAY).await;
    let path = format!("/api/v1/subscribers/{}", s(&alice, "id"));

    let (st, v) = app
        .post_empty(&a.tenant.operator, &format!("{path}/suspend"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "suspended");
    assert_eq!(v["hold"], true);
    assert_eq!(v["status_reason"], "manual");
    let state = state_of(&app.t.db, a.agent, a.router).await;
    assert!(state.ppp_secrets[0].disabled, "disable mode");
    assert!(state.lifecycles.is_empty(), "held: no lifecycle to follow");

    // In profile mode the hold moves the account to the suspended profile instead.
    let (st, v) = app
        .put(
            &a.tenant.operator,
            &format!("/api/v1/tenants/{}/lifecycle", a.tenant.id),
            json!({"suspension_mode": "profile"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let state = state_of(&app.t.db, a.agent, a.router).await;
    assert!(!state.ppp_secrets[0].disabled);
    assert_eq!(state.ppp_secrets[0].profile, "tikfleet-suspended");

    // A renewal does not lift a hold.
    let (st, v) = app
        .post(
            &a.tenant.operator,
            &format!("{path}/renew"),
            json!({"period_secs": 86_400}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "suspended");
    assert_eq!(v["hold"], true);

    // Resumed after the (renewed) expiry passed: the subscriber is where its times say.
    app.t
        .clock
        .advance(Duration::from_millis(2 * DAY as u64 + 1));
    let (st, v) = app
        .post_empty(&a.tenant.operator, &format!("{path}/resume"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["hold"], false);
    assert_eq!(v["status"], "grace", "{v}");
    assert_eq!(v["status_reason"], "resume");
    let state = state_of(&app.t.db, a.agent, a.router).await;
    assert_eq!(state.lifecycles.len(), 1);
    let kinds = job_kinds(&app, &a.tenant.viewer, a.router).await;
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["upsert_ppp_secret", "disconnect_session"],
        "{kinds:?}"
    );
    let rows = audit(&app, &a.tenant.viewer, "subscriber.suspend").await;
    assert_eq!(rows[0]["params"]["reason"], "manual");
    let v = lifecycle_of(&app, &a.tenant.viewer, &alice).await;
    let reasons: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["resume", "renewal", "manual", "created"]);
}

#[tokio::test]
async fn a_failed_transition_is_audited_and_alerted_once() {
    let app = spawn_app().await;
    let a = site(&app, "acme").await;
    let alice = subscriber(&app, &a, "alice", "pppoe", DAY).await;
    let expires = START + DAY;
    let failed = OutboxRecord::Lifecycle(LifecycleReport {
        router_id: a.router,
        generation: 1,
        at: UnixMillis(expires + 10),
        transitions: vec![transition(&alice, LifecyclePhase::Grace, expires, expires)],
        error: Some(ErrorInfo::with_message(
            ErrorCode::ConnectionRefused,
            "connection refused",
        )),
    });
    commit(&app.t.db, a.agent, vec![failed.clone(), failed]).await;
    let rows = audit(&app, &a.tenant.viewer, "lifecycle.transition_failed").await;
    assert!(!rows.is_empty());
    assert_eq!(rows[0]["status"], "failed");
    let v = lifecycle_of(&app, &a.tenant.viewer, &alice).await;
    assert_eq!(v["subscriber"]["status"], "active", "nothing happened yet");
}

#[tokio::test]
async fn a_thousand_transitions_in_one_minute_are_taken_each_once() {
    let app = spawn_app().await;
    let a = site(&app, "acme").await;
    let expires = START + DAY;
    let mut subs = Vec::new();
    for i in 0..1_000 {
        // Expiring over one minute.
        subs.push(
            subscriber(
                &app,
                &a,
                &format!("sub{i:04}"),
                if i % 2 == 0 { "pppoe" } else { "hotspot" },
                DAY + (i as i64 % 60) * 1_000,
            )
            .await,
        );
    }
    app.t
        .clock
        .advance(Duration::from_millis(DAY as u64 + 60_000));
    let transitions: Vec<LifecycleTransition> = subs
        .iter()
        .enumerate()
        .map(|(i, sub)| {
            let e = expires + (i as i64 % 60) * 1_000;
            transition(sub, LifecyclePhase::Grace, e, e)
        })
        .collect();
    let records: Vec<OutboxRecord> = transitions
        .chunks(LifecycleReport::MAX_TRANSITIONS / 2)
        .map(|c| report(a.router, expires + 59_000, c.to_vec()))
        .collect();
    commit(&app.t.db, a.agent, records.clone()).await;
    commit(&app.t.db, a.agent, records).await;
    let rows = all_pages(
        &app,
        &a.tenant.viewer,
        "/api/v1/audit?action=subscriber.grace&limit=500",
    )
    .await;
    assert_eq!(rows.len(), 1_000, "one audit row per subscriber");
    let subscribers = all_pages(
        &app,
        &a.tenant.viewer,
        &format!("/api/v1/subscribers?router_id={}&limit=500", a.router),
    )
    .await;
    assert_eq!(
        subscribers
            .iter()
            .filter(|s| s["status"] == "grace")
            .count(),
        1_000
    );
    // Exactly one grace event each.
    for sub in subs.iter().step_by(97) {
        let v = lifecycle_of(&app, &a.tenant.viewer, sub).await;
        let graces = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["phase"] == "grace")
            .count();
        assert_eq!(graces, 1, "{v}");
    }
}
