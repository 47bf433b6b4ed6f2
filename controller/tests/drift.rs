//! Drift detection on the controller: drift reports ingested with the rest of an agent's
//! outbox records (open, corrected, gone and resolved items; one audit row per finding, never
//! a password), reconcile progress and conflicts in the router's sync state, the drift API
//! (filters, accept through the usual subscriber and plan changes, enforce and drift-check
//! jobs), tenant drift settings that reach every router's desired state, tenant isolation,
//! and a 10,000-finding check. Runs on SQLite, or on PostgreSQL when
//! `TIKFLEET_TEST_DATABASE_URL` is set.

mod common;

use common::{START, Tenant, TestApp, commit, error_code, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tikfleet_controller::hub::HubStore as _;
use tikfleet_shared::domain::{DriftPolicy, DriftSettings, ItemKind, ItemRef};
use tikfleet_shared::job::{JobOp, JobStatus, JobUpdate, Progress};
use tikfleet_shared::record::{
    ApplyReport, DriftAction, DriftFinding, DriftReport, DriftTrigger, OutboxRecord,
    ReconcileProgress,
};
use tikfleet_shared::{AgentId, DriftId, ErrorCode, ErrorInfo, JobId, RouterId, UnixMillis};

use DriftAction::{Conflict, Corrected, Failed, Reported};
use ItemKind::{AddressListEntry, HotspotProfile, HotspotUser, PppProfile, PppSecret};

fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
        .to_owned()
}

/// A tenant with an agent, a router, a plan `<name>-basic` (10M/10M) and a PPPoE
/// subscriber `<name>-alice` on it.
struct Site {
    tenant: Tenant,
    agent: AgentId,
    router: RouterId,
    plan: Value,
    alice: Value,
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
    let alice = app
        .subscriber(
            &tenant.operator,
            &s(&router, "id"),
            &s(&plan, "id"),
            &format!("{name}-alice"),
            "pppoe",
        )
        .await;
    Site {
        tenant,
        agent: agent.id.parse().unwrap(),
        router: s(&router, "id").parse().unwrap(),
        plan,
        alice,
    }
}

fn finding(
    kind: ItemKind,
    key: &str,
    field: Option<&str>,
    router_value: Option<&str>,
    desired_value: Option<&str>,
    managed: bool,
    action: DriftAction,
) -> DriftFinding {
    DriftFinding {
        item: ItemRef {
            kind,
            key: key.to_owned(),
        },
        field: field.map(str::to_owned),
        router_value: router_value.map(str::to_owned),
        desired_value: desired_value.map(str::to_owned),
        managed,
        action,
    }
}

/// A managed field that differs and was only reported.
fn reported(kind: ItemKind, key: &str, field: &str, router: &str, desired: &str) -> DriftFinding {
    finding(
        kind,
        key,
        Some(field),
        Some(router),
        Some(desired),
        true,
        Reported,
    )
}

/// One drift check of a router.
struct Check {
    id: DriftId,
    router: RouterId,
    trigger: DriftTrigger,
    job: Option<JobId>,
    at: UnixMillis,
}

impl Check {
    fn new(router: RouterId, trigger: DriftTrigger, job: Option<JobId>, offset: i64) -> Self {
        Self {
            id: DriftId::new(),
            router,
            trigger,
            job,
            at: UnixMillis(START + offset),
        }
    }

    /// The check's report in parts of `per_part` findings (one empty part when none).
    fn parts(&self, findings: Vec<DriftFinding>, per_part: usize) -> Vec<OutboxRecord> {
        let chunks: Vec<Vec<DriftFinding>> = if findings.is_empty() {
            vec![Vec::new()]
        } else {
            findings.chunks(per_part).map(<[_]>::to_vec).collect()
        };
        let n = chunks.len();
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, findings)| {
                OutboxRecord::Drift(DriftReport {
                    id: self.id,
                    router_id: self.router,
                    generation: 2,
                    detected_at: self.at,
                    trigger: self.trigger,
                    job_id: self.job,
                    part: u32::try_from(i).unwrap(),
                    last: i + 1 == n,
                    items_checked: if i + 1 == n { 100 } else { 0 },
                    findings,
                })
            })
            .collect()
    }
}

async fn drift(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let (st, v) = app.get(token, &format!("/api/v1/drift?{query}")).await;
    assert_eq!(st, StatusCode::OK, "{query}: {v}");
    v["items"].as_array().unwrap().clone()
}

/// The item of `key` and `field` in `items`.
fn item<'a>(items: &'a [Value], key: &str, field: Option<&str>) -> &'a Value {
    items
        .iter()
        .find(|i| i["key"] == key && i["field"].as_str() == field)
        .unwrap_or_else(|| panic!("no item {key} {field:?} in {items:?}"))
}

async fn sync(app: &TestApp, token: &str, router: RouterId) -> Value {
    let (st, v) = app
        .get(token, &format!("/api/v1/routers/{router}/sync"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

async fn audit(app: &TestApp, token: &str, action: &str) -> Vec<Value> {
    let (st, v) = app
        .get(token, &format!("/api/v1/audit?action={action}&limit=500"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
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

#[tokio::test]
async fn ingest_opens_corrects_and_closes_items() {
    let app = spawn_app().await;
    let a = site(&app, "a").await;
    let db = &app.t.db;
    let viewer = &a.tenant.viewer;
    let alice = s(&a.alice, "username");

    // A check in three parts. One agent forgot to redact a password: it is redacted here.
    let first = Check::new(a.router, DriftTrigger::Schedule, None, 1);
    let findings = vec![
        reported(PppSecret, &alice, "profile", "gold", "a-basic"),
        finding(
            PppSecret,
            &alice,
            Some("disabled"),
            Some("true"),
            Some("false"),
            true,
            Corrected,
        ),
        reported(
            PppSecret,
            &alice,
            "password",
            "hunter2-router",
            "sub-secret-pw",
        ),
        finding(
            HotspotUser,
            "walkin",
            None,
            Some("present"),
            None,
            false,
            Conflict,
        ),
        finding(
            AddressListEntry,
            "blocked/10.0.0.9",
            None,
            None,
            Some("present"),
            true,
            Failed,
        ),
    ];
    commit(db, a.agent, first.parts(findings, 2)).await;

    let open = drift(&app, viewer, "").await;
    assert_eq!(open.len(), 4, "{open:?}");
    assert!(open.iter().all(|i| i["status"] == "open"), "{open:?}");
    let profile = item(&open, &alice, Some("profile")).clone();
    assert_eq!(
        (
            &profile["router_value"],
            &profile["desired_value"],
            &profile["managed"],
            &profile["action"],
            &profile["kind"],
        ),
        (
            &json!("gold"),
            &json!("a-basic"),
            &json!(true),
            &json!("reported"),
            &json!("ppp_secret")
        )
    );
    assert_eq!(profile["check_id"], first.id.to_string());
    assert_eq!(profile["router_id"], a.router.to_string());
    assert_eq!(profile["tenant_id"], a.tenant.id);
    assert!(profile["resolved_at"].is_null() && profile["job_id"].is_null());
    let password = item(&open, &alice, Some("password"));
    assert_eq!(password["router_value"], "<redacted>");
    assert_eq!(password["desired_value"], "<redacted>");
    let walkin = item(&open, "walkin", None);
    assert_eq!(
        (&walkin["managed"], &walkin["action"]),
        (&json!(false), &json!("conflict"))
    );
    assert!(walkin["desired_value"].is_null());
    let blocked = item(&open, "blocked/10.0.0.9", None);
    assert_eq!(blocked["action"], "failed");
    assert!(blocked["router_value"].is_null());

    // The corrected one is resolved at once, and still listed on request.
    let corrected = drift(&app, viewer, "status=corrected").await;
    assert_eq!(corrected.len(), 1);
    let disabled = &corrected[0];
    assert_eq!(disabled["field"], "disabled");
    assert_eq!(disabled["resolved_by"], "agent:a-site");
    assert!(disabled["resolved_at"].is_string());
    let all = drift(&app, viewer, "status=all").await;
    assert_eq!(all.len(), 5);

    // One audit row per finding, as the agent, never with a password.
    let detected = audit(&app, viewer, "drift.detected").await;
    let fixed = audit(&app, viewer, "drift.corrected").await;
    assert_eq!((detected.len(), fixed.len()), (4, 1));
    for row in detected.iter().chain(&fixed) {
        assert_eq!(row["actor"], "agent:a-site");
        assert_eq!(row["router_id"], a.router.to_string());
        assert_eq!(row["params"]["check_id"], first.id.to_string());
    }
    assert_eq!(fixed[0]["params"]["field"], "disabled");
    assert_eq!(fixed[0]["params"]["router_value"], "true");
    assert_eq!(fixed[0]["params"]["managed"], "true");
    assert_eq!(fixed[0]["params"]["action"], "corrected");
    let failed: Vec<_> = detected
        .iter()
        .filter(|r| r["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["params"]["key"], "blocked/10.0.0.9");
    for text in [
        serde_json::to_string(&all).unwrap(),
        serde_json::to_string(&detected).unwrap(),
        app.raw(
            reqwest::Method::GET,
            "/api/v1/audit?format=csv",
            Some(&app.admin),
            None,
            Vec::new(),
        )
        .await
        .1,
    ] {
        assert!(
            !text.contains("hunter2") && !text.contains("sub-secret-pw"),
            "{text}"
        );
    }
    let st = sync(&app, viewer, a.router).await;
    assert_eq!(st["open_drift_items"], 4);
    assert_eq!(st["last_drift_check_at"], "2026-01-01T00:00:00.001Z");

    // A later full check reports only the profile (with a new value) and the password:
    // the same items are updated, the others are gone.
    let second = Check::new(a.router, DriftTrigger::Reconcile, None, 2);
    commit(
        db,
        a.agent,
        second.parts(
            vec![
                reported(PppSecret, &alice, "profile", "silver", "a-basic"),
                reported(PppSecret, &alice, "password", "<redacted>", "<redacted>"),
            ],
            1000,
        ),
    )
    .await;
    let open = drift(&app, viewer, "").await;
    assert_eq!(open.len(), 2, "{open:?}");
    let again = item(&open, &alice, Some("profile"));
    assert_eq!(again["id"], profile["id"], "updated in place");
    assert_eq!(again["router_value"], "silver");
    assert_eq!(again["first_seen_at"], profile["first_seen_at"]);
    assert_eq!(again["last_seen_at"], "2026-01-01T00:00:00.002Z");
    assert_eq!(again["check_id"], second.id.to_string());
    let gone = drift(&app, viewer, "status=gone").await;
    assert_eq!(gone.len(), 2);
    for g in &gone {
        assert_eq!(g["resolved_at"], "2026-01-01T00:00:00.002Z");
        assert_eq!(g["resolved_by"], "agent:a-site");
    }
    assert_eq!(drift(&app, viewer, "status=corrected").await.len(), 1);
    assert_eq!(sync(&app, viewer, a.router).await["open_drift_items"], 2);

    // The disabled field drifts again under `report`: a new open item beside the old
    // corrected one.
    let third = Check::new(a.router, DriftTrigger::Request, None, 3);
    commit(
        db,
        a.agent,
        third.parts(
            vec![
                reported(PppSecret, &alice, "profile", "silver", "a-basic"),
                reported(PppSecret, &alice, "password", "<redacted>", "<redacted>"),
                reported(PppSecret, &alice, "disabled", "true", "false"),
            ],
            1000,
        ),
    )
    .await;
    let open = drift(&app, viewer, "").await;
    assert_eq!(open.len(), 3);
    assert_ne!(item(&open, &alice, Some("disabled"))["id"], disabled["id"]);

    // Enforcing the profile sends one job for the account: every unresolved item of
    // alice's secret is enforcing with it. Its check reports the password corrected and
    // nothing else: the other two are resolved.
    let (st, job) = app
        .post_empty(
            &a.tenant.operator,
            &format!("/api/v1/drift/{}/enforce", s(&profile, "id")),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{job}");
    assert_eq!(
        (&job["kind"], &job["status"]),
        (&json!("enforce"), &json!("queued"))
    );
    let job_id: JobId = s(&job, "id").parse().unwrap();
    let enforcing = drift(&app, viewer, "status=enforcing").await;
    assert_eq!(enforcing.len(), 3);
    assert!(enforcing.iter().all(|i| i["job_id"] == job["id"]));
    let (_, one) = app
        .get(viewer, &format!("/api/v1/drift/{}", s(&profile, "id")))
        .await;
    assert_eq!(one["status"], "enforcing");
    let enforce = Check::new(a.router, DriftTrigger::Enforce, Some(job_id), 4);
    commit(
        db,
        a.agent,
        enforce.parts(
            vec![finding(
                PppSecret,
                &alice,
                Some("password"),
                Some("<redacted>"),
                Some("<redacted>"),
                true,
                Corrected,
            )],
            1000,
        ),
    )
    .await;
    assert!(drift(&app, viewer, "").await.is_empty());
    let resolved = drift(&app, viewer, "status=resolved").await;
    assert_eq!(resolved.len(), 2);
    assert!(resolved.iter().all(|i| i["resolved_by"] == "agent:a-site"));
    let all = drift(&app, viewer, "status=all").await;
    assert_eq!(item(&all, &alice, Some("password"))["status"], "corrected");
    // An enforce check is not a full check.
    assert_eq!(
        sync(&app, viewer, a.router).await["last_drift_check_at"],
        "2026-01-01T00:00:00.003Z"
    );

    // An enforcing item its job could not correct is open again, still naming the job.
    let fourth = Check::new(a.router, DriftTrigger::Schedule, None, 5);
    commit(
        db,
        a.agent,
        fourth.parts(
            vec![reported(PppSecret, &alice, "profile", "silver", "a-basic")],
            1000,
        ),
    )
    .await;
    let open = drift(&app, viewer, "").await;
    assert_eq!(open.len(), 1);
    let (st, job) = app
        .post_empty(
            &a.tenant.operator,
            &format!("/api/v1/drift/{}/enforce", s(&open[0], "id")),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{job}");
    let job_id: JobId = s(&job, "id").parse().unwrap();
    let enforce = Check::new(a.router, DriftTrigger::Enforce, Some(job_id), 6);
    commit(
        db,
        a.agent,
        enforce.parts(
            vec![finding(
                PppSecret,
                &alice,
                Some("profile"),
                Some("silver"),
                Some("a-basic"),
                true,
                Failed,
            )],
            1000,
        ),
    )
    .await;
    let open = drift(&app, viewer, "").await;
    assert_eq!(open.len(), 1);
    assert_eq!(
        (&open[0]["status"], &open[0]["action"], &open[0]["job_id"]),
        (&json!("open"), &json!("failed"), &job["id"])
    );
}

#[tokio::test]
async fn reconcile_progress_and_conflicts_show_in_sync() {
    let app = spawn_app().await;
    let a = site(&app, "a").await;
    let db = &app.t.db;
    let viewer = &a.tenant.viewer;
    let st = sync(&app, viewer, a.router).await;
    assert!(st["progress"].is_null());
    assert_eq!(st["conflicts"], 0);
    assert!(st["last_drift_check_at"].is_null());
    assert_eq!(st["open_drift_items"], 0);

    let progress = |generation, done, total, at| {
        OutboxRecord::Progress(ReconcileProgress {
            router_id: a.router,
            generation,
            done,
            total,
            at: UnixMillis(START + at),
        })
    };
    let applied = |generation, conflicts, error| {
        OutboxRecord::Applied(ApplyReport {
            router_id: a.router,
            generation,
            at: UnixMillis(START + 123),
            changes: 5,
            conflicts,
            error,
        })
    };
    commit(db, a.agent, vec![progress(5, 3, 10, 1)]).await;
    let expect = |g, d, t, at: &str| json!({"generation": g, "done": d, "total": t, "at": at});
    assert_eq!(
        sync(&app, viewer, a.router).await["progress"],
        expect(5, 3, 10, "2026-01-01T00:00:00.001Z")
    );
    // Progress about an older generation is stale.
    commit(db, a.agent, vec![progress(4, 9, 9, 2)]).await;
    assert_eq!(
        sync(&app, viewer, a.router).await["progress"],
        expect(5, 3, 10, "2026-01-01T00:00:00.001Z")
    );
    // The pass finishes: done = total, and its conflicts are kept.
    commit(db, a.agent, vec![applied(5, 2, None)]).await;
    let st = sync(&app, viewer, a.router).await;
    assert_eq!(
        st["progress"],
        expect(5, 10, 10, "2026-01-01T00:00:00.123Z")
    );
    assert_eq!(
        (&st["conflicts"], &st["applied_generation"]),
        (&json!(2), &json!(5))
    );
    // A failed pass keeps the progress where it stopped.
    commit(
        db,
        a.agent,
        vec![
            progress(6, 4, 8, 3),
            applied(6, 1, Some(ErrorInfo::new(ErrorCode::Timeout))),
        ],
    )
    .await;
    let st = sync(&app, viewer, a.router).await;
    assert_eq!(st["progress"], expect(6, 4, 8, "2026-01-01T00:00:00.003Z"));
    assert_eq!(
        (&st["conflicts"], &st["applied_generation"]),
        (&json!(1), &json!(5))
    );
    // A pass that sent no progress reads 0 of 0, done.
    commit(db, a.agent, vec![applied(7, 0, None)]).await;
    let st = sync(&app, viewer, a.router).await;
    assert_eq!(st["progress"], expect(7, 0, 0, "2026-01-01T00:00:00.123Z"));
    assert_eq!(st["conflicts"], 0);
}

#[tokio::test]
async fn drift_list_filters_and_pages() {
    let app = spawn_app().await;
    let a = site(&app, "a").await;
    let db = &app.t.db;
    let viewer = &a.tenant.viewer;
    let second = app
        .router(&a.tenant.operator, &a.agent.to_string(), "a-edge")
        .await;
    let second: RouterId = s(&second, "id").parse().unwrap();
    let check = Check::new(a.router, DriftTrigger::Schedule, None, 1);
    commit(
        db,
        a.agent,
        check.parts(
            vec![
                reported(PppSecret, "u1", "profile", "x", "y"),
                reported(PppSecret, "u2", "profile", "x", "y"),
                reported(HotspotUser, "h1", "profile", "x", "y"),
                reported(PppProfile, "a-basic", "rate-limit", "1M/1M", "10M/10M"),
                finding(
                    PppSecret,
                    "u3",
                    Some("disabled"),
                    Some("true"),
                    Some("false"),
                    true,
                    Corrected,
                ),
            ],
            1000,
        ),
    )
    .await;
    let other = Check::new(second, DriftTrigger::Schedule, None, 2);
    commit(
        db,
        a.agent,
        other.parts(vec![reported(PppSecret, "e1", "profile", "x", "y")], 1000),
    )
    .await;

    assert_eq!(drift(&app, viewer, "").await.len(), 5);
    assert_eq!(
        drift(&app, viewer, &format!("router_id={second}"))
            .await
            .len(),
        1
    );
    assert_eq!(
        drift(&app, viewer, &format!("router_id={}", a.router))
            .await
            .len(),
        4
    );
    assert_eq!(drift(&app, viewer, "kind=ppp_secret").await.len(), 3);
    assert_eq!(drift(&app, viewer, "kind=hotspot_user").await.len(), 1);
    assert_eq!(
        drift(&app, viewer, "kind=ppp_profile&status=all")
            .await
            .len(),
        1
    );
    assert_eq!(drift(&app, viewer, "status=corrected").await.len(), 1);
    assert_eq!(drift(&app, viewer, "status=open").await.len(), 5);
    assert_eq!(drift(&app, viewer, "status=all").await.len(), 6);
    assert!(drift(&app, viewer, "status=accepted").await.is_empty());
    assert_eq!(
        drift(&app, viewer, &format!("tenant_id={}", a.tenant.id))
            .await
            .len(),
        5
    );
    assert_eq!(
        drift(
            &app,
            &app.admin,
            &format!("tenant_id={}&status=all", a.tenant.id)
        )
        .await
        .len(),
        6
    );

    // Pages of two, in creation order, with the same cursor as every list.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/api/v1/drift?status=all&limit=2&cursor={c}"),
            None => "/api/v1/drift?status=all&limit=2".into(),
        };
        let (st, page) = app.get(viewer, &q).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|i| s(i, "id")));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);

    for bad in [
        "status=closed",
        "kind=queue",
        "router_id=nope",
        "limit=0",
        "cursor=zz",
        "colour=red",
    ] {
        let (st, v) = app.get(viewer, &format!("/api/v1/drift?{bad}")).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{bad}"
        );
    }
    let (st, v) = app.get(viewer, "/api/v1/drift/not-an-id").await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let (st, v) = app
        .get(viewer, &format!("/api/v1/drift/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::NOT_FOUND, "not_found"));
}

#[tokio::test]
async fn accept_takes_the_router_value_through_the_usual_changes() {
    let app = spawn_app().await;
    let a = site(&app, "a").await;
    let db = &app.t.db;
    let op = &a.tenant.operator;
    let router = a.router.to_string();
    let gold = app.plan(op, "a-gold", "20M/20M").await;
    let basic = s(&a.plan, "id");
    let bob = app
        .subscriber(op, &router, &basic, "a-bob", "hotspot")
        .await;
    let carol = app
        .subscriber(op, &router, &basic, "a-carol", "pppoe")
        .await;
    let (st, _) = app
        .post_empty(
            op,
            &format!("/api/v1/subscribers/{}/suspend", s(&carol, "id")),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let dave = app.subscriber(op, &router, &basic, "a-dave", "pppoe").await;

    let check = Check::new(a.router, DriftTrigger::Schedule, None, 1);
    commit(
        db,
        a.agent,
        check.parts(
            vec![
                reported(PppSecret, "a-alice", "profile", "a-gold", "a-basic"),
                reported(HotspotUser, "a-bob", "disabled", "true", "false"),
                reported(PppSecret, "a-carol", "disabled", "no", "yes"),
                finding(
                    PppSecret,
                    "a-dave",
                    None,
                    None,
                    Some("present"),
                    true,
                    Reported,
                ),
                reported(PppProfile, "a-basic", "rate-limit", "5M/5M", "10M/10M"),
                // Refused, each for its own reason.
                reported(HotspotUser, "a-bob", "profile", "platinum", "a-basic"),
                reported(PppSecret, "a-alice", "password", "<redacted>", "<redacted>"),
                reported(
                    PppSecret,
                    "a-alice",
                    "comment",
                    "by hand",
                    "tikfleet: subscriber",
                ),
                reported(PppSecret, "a-alice", "service", "any", "pppoe"),
                finding(
                    PppSecret,
                    "ghost",
                    None,
                    Some("present"),
                    None,
                    true,
                    Reported,
                ),
                finding(
                    HotspotUser,
                    "walkin",
                    None,
                    Some("present"),
                    Some("present"),
                    false,
                    Conflict,
                ),
                finding(
                    AddressListEntry,
                    "blocked/10.0.0.9",
                    None,
                    None,
                    Some("present"),
                    true,
                    Reported,
                ),
                reported(PppProfile, "a-basic", "only-one", "yes", "no"),
                finding(
                    HotspotProfile,
                    "a-basic",
                    Some("rate-limit"),
                    None,
                    Some("10M/10M"),
                    true,
                    Reported,
                ),
            ],
            1000,
        ),
    )
    .await;
    let open = drift(&app, op, "limit=500").await;
    assert_eq!(open.len(), 14);
    let id = |key: &str, field: Option<&str>, kind: &str| {
        s(
            open.iter()
                .find(|i| i["key"] == key && i["field"].as_str() == field && i["kind"] == kind)
                .unwrap_or_else(|| panic!("no {kind} {key} {field:?}")),
            "id",
        )
    };
    let accept = |item: String| {
        let app = &app;
        async move {
            app.post_empty(op, &format!("/api/v1/drift/{item}/accept"))
                .await
        }
    };

    // Refusals: 422 with why and what to do; the item stays open.
    for (key, field, kind, why) in [
        ("a-bob", Some("profile"), "hotspot_user", "no plan"),
        ("a-alice", Some("password"), "ppp_secret", "password"),
        ("a-alice", Some("comment"), "ppp_secret", "comment"),
        ("a-alice", Some("service"), "ppp_secret", "service"),
        ("ghost", None, "ppp_secret", "only on the router"),
        ("walkin", None, "hotspot_user", "by hand"),
        (
            "blocked/10.0.0.9",
            None,
            "address_list_entry",
            "address-list",
        ),
        ("a-basic", Some("only-one"), "ppp_profile", "only-one"),
        (
            "a-basic",
            Some("rate-limit"),
            "hotspot_profile",
            "no rate limit",
        ),
    ] {
        let item = id(key, field, kind);
        let (st, v) = accept(item.clone()).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            "{why}: {v}"
        );
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("enforce"), "{why}: {message}");
        let (_, v) = app.get(op, &format!("/api/v1/drift/{item}")).await;
        assert_eq!(v["status"], "open", "{why}");
    }

    // Profile → the plan with that profile becomes the subscriber's plan, through the
    // subscriber change: a new generation, the account's jobs, its audit row.
    let before = sync(&app, op, a.router).await["desired_generation"]
        .as_u64()
        .unwrap();
    let jobs_before = job_kinds(&app, op, a.router).await.len();
    let item = id("a-alice", Some("profile"), "ppp_secret");
    let (st, v) = accept(item.clone()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "accepted");
    assert_eq!(v["resolved_by"], "a-operator");
    assert!(v["resolved_at"].is_string());
    let (_, sub) = app
        .get(op, &format!("/api/v1/subscribers/{}", s(&a.alice, "id")))
        .await;
    assert_eq!(sub["plan_id"], gold["id"]);
    let after = sync(&app, op, a.router).await["desired_generation"]
        .as_u64()
        .unwrap();
    assert_eq!(after, before + 1);
    let kinds = job_kinds(&app, op, a.router).await;
    assert_eq!(
        kinds[jobs_before..],
        [
            "upsert_ppp_secret".to_owned(),
            "disconnect_session".to_owned()
        ]
    );
    let updates = audit(&app, op, "subscriber.update").await;
    assert_eq!(updates.last().unwrap()["params"]["plan_id"], gold["id"]);
    let accepted = audit(&app, op, "drift.accepted").await;
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["actor"], "a-operator");
    assert_eq!(accepted[0]["params"]["drift_id"], item.as_str());
    // Once accepted it can be neither accepted nor enforced.
    let (st, v) = accept(item.clone()).await;
    assert_eq!((st, error_code(&v)), (StatusCode::CONFLICT, "conflict"));
    let (st, v) = app
        .post_empty(op, &format!("/api/v1/drift/{item}/enforce"))
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::CONFLICT, "conflict"));

    // disabled=true → suspended; disabled=no → active.
    let (st, v) = accept(id("a-bob", Some("disabled"), "hotspot_user")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, sub) = app
        .get(op, &format!("/api/v1/subscribers/{}", s(&bob, "id")))
        .await;
    assert_eq!(sub["status"], "suspended");
    let (st, v) = accept(id("a-carol", Some("disabled"), "ppp_secret")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, sub) = app
        .get(op, &format!("/api/v1/subscribers/{}", s(&carol, "id")))
        .await;
    assert_eq!(sub["status"], "active");
    assert_eq!(audit(&app, op, "subscriber.suspend").await.len(), 2);
    assert_eq!(audit(&app, op, "subscriber.resume").await.len(), 1);

    // The account missing on the router → the subscriber is deleted.
    let (st, v) = accept(id("a-dave", None, "ppp_secret")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, _) = app
        .get(op, &format!("/api/v1/subscribers/{}", s(&dave, "id")))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(audit(&app, op, "subscriber.delete").await.len(), 1);

    // The profile's rate limit → the plan's.
    let (st, v) = accept(id("a-basic", Some("rate-limit"), "ppp_profile")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, plan) = app.get(op, &format!("/api/v1/plans/{basic}")).await;
    assert_eq!(plan["rate_limit"], "5M/5M");
    assert!(
        job_kinds(&app, op, a.router)
            .await
            .contains(&"upsert_profile".to_owned())
    );

    assert_eq!(drift(&app, op, "status=accepted").await.len(), 5);
    assert_eq!(drift(&app, op, "").await.len(), 9);
    assert_eq!(audit(&app, op, "drift.accepted").await.len(), 5);
}

#[tokio::test]
async fn enforce_and_drift_check_queue_jobs() {
    let app = spawn_app().await;
    let a = site(&app, "a").await;
    let db = &app.t.db;
    let op = &a.tenant.operator;
    let check = Check::new(a.router, DriftTrigger::Schedule, None, 1);
    commit(
        db,
        a.agent,
        check.parts(
            vec![
                finding(
                    HotspotUser,
                    "walkin",
                    None,
                    Some("present"),
                    Some("present"),
                    false,
                    Conflict,
                ),
                reported(PppSecret, "a-alice", "profile", "x", "a-basic"),
            ],
            1000,
        ),
    )
    .await;
    let open = drift(&app, op, "").await;
    let walkin = s(item(&open, "walkin", None), "id");
    let alice = s(item(&open, "a-alice", Some("profile")), "id");
    let op_of = |job: JobId| async move {
        db.undelivered_jobs(a.agent)
            .await
            .unwrap()
            .into_iter()
            .find(|j| j.id == job)
            .expect("the job is queued for the agent")
            .op
    };

    // A conflict is adopted; a managed item is not.
    let (st, job) = app
        .post_empty(op, &format!("/api/v1/drift/{walkin}/enforce"))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["kind"], "enforce");
    assert_eq!(job["router_id"], a.router.to_string());
    let first: JobId = s(&job, "id").parse().unwrap();
    assert_eq!(
        op_of(first).await,
        JobOp::Enforce {
            items: vec![ItemRef {
                kind: HotspotUser,
                key: "walkin".into()
            }],
            adopt: true
        }
    );
    let (_, v) = app.get(op, &format!("/api/v1/drift/{walkin}")).await;
    assert_eq!(
        (&v["status"], &v["job_id"]),
        (&json!("enforcing"), &job["id"])
    );
    let (st, job) = app
        .post_empty(op, &format!("/api/v1/drift/{alice}/enforce"))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{job}");
    assert_eq!(
        op_of(s(&job, "id").parse().unwrap()).await,
        JobOp::Enforce {
            items: vec![ItemRef {
                kind: PppSecret,
                key: "a-alice".into()
            }],
            adopt: false
        }
    );
    // Enforcing again is a new job.
    let (st, again) = app
        .post_empty(op, &format!("/api/v1/drift/{walkin}/enforce"))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{again}");
    assert_ne!(again["id"], json!(first.to_string()));
    let (_, v) = app.get(op, &format!("/api/v1/drift/{walkin}")).await;
    assert_eq!(v["job_id"], again["id"]);
    let enforced = audit(&app, op, "drift.enforce").await;
    assert_eq!(enforced.len(), 3);
    assert_eq!(enforced[0]["params"]["adopt"], "true");
    assert_eq!(enforced[0]["params"]["job_id"], first.to_string());
    // A resolved item cannot be enforced.
    let full = Check::new(a.router, DriftTrigger::Schedule, None, 2);
    commit(db, a.agent, full.parts(Vec::new(), 1000)).await;
    let (_, v) = app.get(op, &format!("/api/v1/drift/{walkin}")).await;
    assert_eq!(v["status"], "gone");
    let (st, v) = app
        .post_empty(op, &format!("/api/v1/drift/{walkin}/enforce"))
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::CONFLICT, "conflict"));

    // A drift check is a job; its progress shows on the job.
    let path = format!("/api/v1/routers/{}/drift-check", a.router);
    let (st, job) = app.post_empty(op, &path).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{job}");
    assert_eq!(
        (&job["kind"], &job["status"]),
        (&json!("drift_check"), &json!("queued"))
    );
    let check_job: JobId = s(&job, "id").parse().unwrap();
    assert_eq!(op_of(check_job).await, JobOp::DriftCheck {});
    commit(
        db,
        a.agent,
        vec![OutboxRecord::JobUpdate(JobUpdate {
            job_id: check_job,
            router_id: a.router,
            status: JobStatus::Running,
            attempts: 1,
            progress: Some(Progress {
                done: 40,
                total: 100,
            }),
            error: None,
            detail: None,
            at: UnixMillis(START + 3),
        })],
    )
    .await;
    let (_, v) = app.get(op, &format!("/api/v1/jobs/{check_job}")).await;
    assert_eq!(v["status"], "running");
    assert_eq!(v["progress"], json!({"done": 40, "total": 100}));
    assert_eq!(audit(&app, op, "router.drift_check").await.len(), 1);

    // With an idempotency key, asking again is the same job; the key on another router is
    // a conflict.
    let (st, first) = app
        .post(op, &path, json!({"idempotency_key": "nightly-1"}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["idempotency_key"], "nightly-1");
    let (st, second) = app
        .post(op, &path, json!({"idempotency_key": "nightly-1"}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(second["id"], first["id"]);
    let edge = app.router(op, &a.agent.to_string(), "a-edge").await;
    let (st, v) = app
        .post(
            op,
            &format!("/api/v1/routers/{}/drift-check", s(&edge, "id")),
            json!({"idempotency_key": "nightly-1"}),
        )
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::CONFLICT, "conflict"));
    for body in [json!({"bogus": 1}), json!({"idempotency_key": ""})] {
        let (st, v) = app.post(op, &path, body).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_request")
        );
    }
    let (st, v) = app.post_empty(&app.admin, &path).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let (st, v) = app.post_empty(&a.tenant.viewer, &path).await;
    assert_eq!((st, error_code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
}

#[tokio::test]
async fn tenant_drift_settings_reach_every_router() {
    let app = spawn_app().await;
    let a = site(&app, "a").await;
    let b = site(&app, "b").await;
    let db = &app.t.db;
    let edge = app
        .router(&a.tenant.operator, &a.agent.to_string(), "a-edge")
        .await;
    let edge: RouterId = s(&edge, "id").parse().unwrap();
    let path = format!("/api/v1/tenants/{}/drift", a.tenant.id);
    let generations = |routers: Vec<RouterId>| {
        let app = &app;
        async move {
            let mut out = Vec::new();
            for r in routers {
                out.push(
                    sync(app, &app.admin, r).await["desired_generation"]
                        .as_u64()
                        .unwrap(),
                );
            }
            out
        }
    };

    let (st, v) = app.get(&a.tenant.viewer, &path).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v, json!({"policy": "enforce", "interval_secs": 3600}));
    for state in db.desired_states(a.agent, &[]).await.unwrap() {
        assert_eq!(state.drift, DriftSettings::default());
        assert_eq!(state.drift.interval_ms, 3_600_000);
    }
    let before = generations(vec![a.router, edge, b.router]).await;

    let (st, v) = app
        .put(
            &a.tenant.operator,
            &path,
            json!({"policy": "report", "interval_secs": 0}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"policy": "report", "interval_secs": 0}));
    let after = generations(vec![a.router, edge, b.router]).await;
    assert_eq!(after, [before[0] + 1, before[1] + 1, before[2]]);
    let states = db.desired_states(a.agent, &[]).await.unwrap();
    assert_eq!(states.len(), 2);
    for state in &states {
        assert_eq!(
            state.drift,
            DriftSettings {
                interval_ms: 0,
                policy: DriftPolicy::Report
            }
        );
        let expected = if state.router_id == a.router {
            after[0]
        } else {
            after[1]
        };
        assert_eq!(state.generation, expected);
    }
    for state in db.desired_states(b.agent, &[]).await.unwrap() {
        assert_eq!(state.drift, DriftSettings::default(), "B is untouched");
    }
    let (_, t) = app
        .get(
            &a.tenant.viewer,
            &format!("/api/v1/tenants/{}", a.tenant.id),
        )
        .await;
    assert_eq!(t["drift"], json!({"policy": "report", "interval_secs": 0}));
    let rows = audit(&app, &a.tenant.viewer, "tenant.drift_settings").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["params"]["policy"], "report");
    assert_eq!(rows[0]["params"]["routers"], "2");

    // The same settings again change nothing.
    let (st, _) = app
        .put(
            &a.tenant.operator,
            &path,
            json!({"policy": "report", "interval_secs": 0}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(generations(vec![a.router, edge]).await, after[..2]);

    // Admins may change them too; the bounds are 60 s and 30 days.
    let (st, v) = app
        .put(
            &app.admin,
            &path,
            json!({"policy": "enforce", "interval_secs": 2_592_000}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let state = &db.desired_states(a.agent, &[]).await.unwrap()[0];
    assert_eq!(state.drift.interval_ms, 2_592_000_000);
    for bad in [
        json!({"policy": "enforce", "interval_secs": 59}),
        json!({"policy": "enforce", "interval_secs": 2_592_001}),
        json!({"policy": "ignore", "interval_secs": 3600}),
        json!({"policy": "enforce"}),
        json!({"policy": "enforce", "interval_secs": -1}),
        json!({"policy": "enforce", "interval_secs": 3600, "extra": true}),
    ] {
        let (st, v) = app.put(&a.tenant.operator, &path, bad.clone()).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{bad}"
        );
    }
    let (st, v) = app
        .put(
            &a.tenant.operator,
            &path,
            json!({"policy": "enforce", "interval_secs": 60}),
        )
        .await;
    assert_eq!((st, &v["interval_secs"]), (StatusCode::OK, &json!(60)));

    // Viewers read; another tenant sees nothing.
    let body = json!({"policy": "report", "interval_secs": 600});
    let (st, v) = app.put(&a.tenant.viewer, &path, body.clone()).await;
    assert_eq!((st, error_code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    for token in [&b.tenant.operator, &b.tenant.viewer] {
        let (st, v) = app.get(token, &path).await;
        assert_eq!((st, error_code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    }
    let (st, v) = app.put(&b.tenant.operator, &path, body).await;
    assert_eq!((st, error_code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (_, v) = app.get(&a.tenant.viewer, &path).await;
    assert_eq!(v["interval_secs"], 60);
}

#[tokio::test]
async fn drift_items_are_scoped_to_their_tenant() {
    let app = spawn_app().await;
    let a = site(&app, "a").await;
    let b = site(&app, "b").await;
    let db = &app.t.db;
    let check = Check::new(a.router, DriftTrigger::Schedule, None, 1);
    commit(
        db,
        a.agent,
        check.parts(
            vec![reported(
                PppSecret,
                "a-alice",
                "profile",
                "secret-plan-a",
                "a-basic",
            )],
            1000,
        ),
    )
    .await;
    let b_check = Check::new(b.router, DriftTrigger::Schedule, None, 1);
    commit(
        db,
        b.agent,
        b_check.parts(
            vec![reported(PppSecret, "b-alice", "profile", "x", "b-basic")],
            1000,
        ),
    )
    .await;
    let a_item = s(&drift(&app, &a.tenant.viewer, "").await[0], "id");
    let foreign = [a_item.clone(), "secret-plan-a".into(), a.router.to_string()];

    // B's tokens: A's item is not found, A's router neither; lists show only B's.
    let targeted = [
        (reqwest::Method::GET, format!("/api/v1/drift/{a_item}")),
        (
            reqwest::Method::POST,
            format!("/api/v1/drift/{a_item}/accept"),
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/drift/{a_item}/enforce"),
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/routers/{}/drift-check", a.router),
        ),
    ];
    for (method, path) in &targeted {
        for token in [&b.tenant.operator, &b.tenant.viewer] {
            let (st, text) = app
                .raw(method.clone(), path, Some(token), None, Vec::new())
                .await;
            let v: Value = serde_json::from_str(&text).unwrap();
            let expected = if token == &b.tenant.viewer && *method != reqwest::Method::GET {
                (StatusCode::FORBIDDEN, "forbidden")
            } else {
                (StatusCode::NOT_FOUND, "not_found")
            };
            assert_eq!((st, error_code(&v)), expected, "{method} {path}");
            for f in &foreign {
                assert!(!text.contains(f.as_str()), "{path} leaked {f}");
            }
        }
    }
    for query in [
        String::new(),
        "status=all".into(),
        format!("tenant_id={}", a.tenant.id),
        format!("router_id={}", a.router),
    ] {
        let items = drift(&app, &b.tenant.viewer, &query).await;
        let text = serde_json::to_string(&items).unwrap();
        for f in &foreign {
            assert!(!text.contains(f.as_str()), "{query} leaked {f}");
        }
        assert!(items.iter().all(|i| i["tenant_id"] == b.tenant.id));
    }
    assert_eq!(drift(&app, &b.tenant.viewer, "").await.len(), 1);
    // Admins see both, or one tenant's.
    assert_eq!(drift(&app, &app.admin, "").await.len(), 2);
    assert_eq!(
        drift(&app, &app.admin, &format!("tenant_id={}", a.tenant.id))
            .await
            .len(),
        1
    );

    // A's viewer reads but changes nothing.
    let (st, _) = app
        .get(&a.tenant.viewer, &format!("/api/v1/drift/{a_item}"))
        .await;
    assert_eq!(st, StatusCode::OK);
    for (method, path) in targeted.iter().filter(|(m, _)| *m != reqwest::Method::GET) {
        let (st, text) = app
            .raw(
                method.clone(),
                path,
                Some(&a.tenant.viewer),
                None,
                Vec::new(),
            )
            .await;
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{path}"
        );
    }
    let (_, v) = app
        .get(&a.tenant.viewer, &format!("/api/v1/drift/{a_item}"))
        .await;
    assert_eq!(v["status"], "open");

    // An agent's report about another agent's router changes nothing.
    let sneaky = Check::new(a.router, DriftTrigger::Schedule, None, 9);
    commit(
        db,
        b.agent,
        sneaky.parts(
            vec![reported(PppSecret, "planted", "profile", "x", "y")],
            1000,
        ),
    )
    .await;
    let a_items = drift(&app, &a.tenant.viewer, "status=all").await;
    assert_eq!(a_items.len(), 1);
    assert_eq!(a_items[0]["status"], "open");
    assert_eq!(drift(&app, &b.tenant.viewer, "status=all").await.len(), 1);
}

#[tokio::test]
async fn ten_thousand_findings_land_in_parts() {
    let app = spawn_app().await;
    let a = site(&app, "a").await;
    let db = &app.t.db;
    let viewer = &a.tenant.viewer;
    let findings = || -> Vec<DriftFinding> {
        (0..10_000)
            .map(|i| {
                reported(
                    PppSecret,
                    &format!("user{i:05}"),
                    "profile",
                    "gold",
                    "basic",
                )
            })
            .collect()
    };
    let pool = {
        sqlx::any::install_default_drivers();
        sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&app.t.url)
            .await
            .unwrap()
    };
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            use sqlx::Row as _;
            sqlx::query(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
                .try_get::<i64, _>(0)
                .unwrap()
        }
    };

    // Ten parts of 1,000, committed as the hub would: several records per batch.
    let first = Check::new(a.router, DriftTrigger::Schedule, None, 1);
    let parts = first.parts(findings(), 1_000);
    assert_eq!(parts.len(), 10);
    let mut parts = parts.into_iter();
    for _ in 0..5 {
        commit(db, a.agent, parts.by_ref().take(2).collect()).await;
    }
    assert_eq!(
        sync(&app, viewer, a.router).await["open_drift_items"],
        10_000
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM audit WHERE action = 'drift.detected'").await,
        10_000
    );
    let page = drift(&app, viewer, "limit=3").await;
    assert_eq!(page[0]["key"], "user00000");

    // The same findings again update the same items.
    let second = Check::new(a.router, DriftTrigger::Reconcile, None, 2);
    commit(db, a.agent, second.parts(findings(), 1_000)).await;
    assert_eq!(
        sync(&app, viewer, a.router).await["open_drift_items"],
        10_000
    );
    assert_eq!(count("SELECT COUNT(*) FROM drift_items").await, 10_000);
    assert_eq!(drift(&app, viewer, "limit=3").await[0]["id"], page[0]["id"]);
    assert_eq!(
        count("SELECT COUNT(*) FROM audit WHERE action = 'drift.detected'").await,
        20_000
    );

    // A clean check: every one is gone.
    let third = Check::new(a.router, DriftTrigger::Schedule, None, 3);
    commit(db, a.agent, third.parts(Vec::new(), 1_000)).await;
    assert_eq!(sync(&app, viewer, a.router).await["open_drift_items"], 0);
    assert_eq!(
        count("SELECT COUNT(*) FROM drift_items WHERE status = 'gone'").await,
        10_000
    );
}

#[tokio::test]
async fn openapi_lists_the_drift_endpoints() {
    let app = spawn_app().await;
    let resp = app
        .http
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    let doc: Value = resp.json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (p, method) in [
        ("/api/v1/tenants/{id}/drift", "get"),
        ("/api/v1/tenants/{id}/drift", "put"),
        ("/api/v1/routers/{id}/drift-check", "post"),
        ("/api/v1/drift", "get"),
        ("/api/v1/drift/{id}", "get"),
        ("/api/v1/drift/{id}/accept", "post"),
        ("/api/v1/drift/{id}/enforce", "post"),
    ] {
        assert!(paths[p][method].is_object(), "{method} {p} missing");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for s in [
        "DriftItemDto",
        "DriftSettingsDto",
        "ReconcileProgressDto",
        "SyncDto",
    ] {
        assert!(schemas.contains_key(s), "schema {s} missing");
    }
    let sync = &schemas["SyncDto"]["properties"];
    for f in [
        "progress",
        "conflicts",
        "last_drift_check_at",
        "open_drift_items",
    ] {
        assert!(sync[f].is_object(), "SyncDto.{f} missing");
    }
}
