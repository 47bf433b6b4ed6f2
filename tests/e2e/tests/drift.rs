//! Drift end to end on loopback: the real controller (API and hub, SQLite or a fresh
//! PostgreSQL database), a real agent running `tikfleet-agent run` in-process, and a
//! simulated router that an administrator changes by hand through its RouterOS API.
//!
//! - policy `report`: a profile moved, an account disabled, an account removed, a plan
//!   profile's rate limit changed and an account made by hand that a new subscriber then
//!   claims (a conflict) are all found by a drift check, reported item by item (no password
//!   anywhere) and left on the router; staff then accept three of them into the database and
//!   enforce two (one adopted), with audit rows, and a last check finds nothing;
//! - policy `enforce`: a hand change is put back by the next check (a requested one, and the
//!   reconcile pass of an unrelated staff change), and the item is `corrected`;
//! - another tenant's token sees none of it and can start nothing on the router; a viewer
//!   reads but cannot act;
//! - the plainest flow: a hand change right after staff's last change is applied is reported,
//!   not undone. The other scenarios first check the clean router (nothing to find), which
//!   also makes the agent forget the jobs it ran; this one does not.
//!
//! The agent's clock is the system's (`tikfleet-agent run` takes no injected clock), so the
//! scheduled check (`interval_secs`, at least 60 s) is not waited for here: checks are asked
//! for with `POST /routers/{id}/drift-check`.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tikfleet_agent::routeros::{Cmd, RouterOsClient};
use tikfleet_e2e::fleet::{
    Agent, Api, Controller, HubPath, RunningAgent, SETTLE, Sim, add_router, admin_client,
    drift_items, eventually, plan, subscriber, synced, within,
};

/// The agent's name; its audit rows and resolutions read `agent:site-1`.
const AGENT_ACTOR: &str = "agent:site-1";

/// One tenant's site: a controller, an agent serving one simulated router, staff's API.
struct Site {
    sim: Sim,
    ctl: Controller,
    tenant: String,
    ops: Api,
    router: String,
    running: RunningAgent,
    /// Kept for its data folder.
    _agent: Agent,
}

impl Site {
    /// A tenant `acme` with the given drift settings (set before anything else, so every
    /// desired state carries them), an agent `site-1` connected, and router `core-1`.
    async fn start(policy: &str, interval_secs: u64) -> Self {
        let sim = Sim::start(1).await;
        let ctl = Controller::start(HubPath::Direct).await;
        let (tenant, ops) = ctl.tenant("acme").await;
        let settings = json!({"policy": policy, "interval_secs": interval_secs});
        let (status, v) = ops
            .put(&format!("/api/v1/tenants/{tenant}/drift"), settings.clone())
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v, settings);
        let (status, v) = ops.get(&format!("/api/v1/tenants/{tenant}/drift")).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v, settings);

        let (agent, running) = Agent::running(&ops, &tenant).await;
        let router = add_router(&ops, &sim, 0, &agent.id, "core-1").await;
        Self {
            sim,
            ctl,
            tenant,
            ops,
            router,
            running,
            _agent: agent,
        }
    }

    async fn stop(self) {
        let out = self.running.stop().await.expect("the agent stops cleanly");
        assert!(out.contains("tikfleet-agent stopped:"), "{out}");
    }

    /// The router's PPP secrets by name.
    fn secrets(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.sim.menu(0, "/ppp/secret")
    }

    /// The router's PPP profiles by name.
    fn profiles(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.sim.menu(0, "/ppp/profile")
    }
}

/// Waits until every job the controller has finished; every one succeeded but those in
/// `failed` (ids), which failed. Returns them.
async fn jobs_settle(api: &Api, failed: &[&str]) -> Vec<Value> {
    let jobs = eventually("every job to finish", SETTLE, || async {
        let jobs = api.all("/api/v1/jobs").await;
        jobs.iter()
            .all(|j| matches!(j["status"].as_str(), Some("succeeded" | "failed")))
            .then_some(jobs)
    })
    .await;
    for job in &jobs {
        let id = job["id"].as_str().unwrap_or_default();
        let expected = if failed.contains(&id) {
            "failed"
        } else {
            "succeeded"
        };
        assert_eq!(job["status"], expected, "{job:#}");
    }
    jobs
}

/// Queues a drift check of `router` and waits for it to succeed, watching its progress;
/// returns the finished job.
async fn drift_check(api: &Api, router: &str) -> Value {
    let (status, job) = api
        .post_empty(&format!("/api/v1/routers/{router}/drift-check"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["kind"], "drift_check", "{job}");
    assert_eq!(job["router_id"], router, "{job}");
    let id = job["id"].as_str().expect("job id").to_owned();
    let job = eventually("the drift check to finish", SETTLE, || async {
        let job = api.job(&id).await;
        let p = &job["progress"];
        assert!(
            p["done"].as_u64() <= p["total"].as_u64() && p["total"].as_u64() >= Some(1),
            "progress never runs past its total: {job}"
        );
        matches!(job["status"].as_str(), Some("succeeded" | "failed")).then_some(job)
    })
    .await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert!(job["error"].is_null(), "{job}");
    assert_eq!(
        job["progress"]["done"], job["progress"]["total"],
        "a finished check's progress reached its total: {job}"
    );
    job
}

/// A check of a router nobody changed by hand since staff's last changes were applied: it
/// changes and finds nothing. (It also makes the agent forget the jobs it ran before: see
/// `a_hand_change_after_the_last_staff_change_is_reported_not_undone`.)
async fn clean_check(api: &Api, router: &str) {
    let check = drift_check(api, router).await;
    let detail = check["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("0 changed") && detail.contains("0 drift findings"),
        "{check:#}"
    );
    let all = drift_items(api, router, Some("all")).await;
    assert!(all.is_empty(), "{all:#?}");
}

/// The one item of `items` for this router item and field.
fn item<'a>(items: &'a [Value], kind: &str, key: &str, field: Option<&str>) -> &'a Value {
    let found: Vec<&Value> = items
        .iter()
        .filter(|i| i["kind"] == kind && i["key"] == key && i["field"].as_str() == field)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind} {key} {field:?} item in {items:#?}"
    );
    found[0]
}

/// The `.id` of the row of `menu` named `name`.
async fn row_id(client: &RouterOsClient, menu: &str, name: &str) -> String {
    let rows = client
        .run(
            Cmd::new(format!("{menu}/print"))
                .proplist(&[".id", "name"])
                .query_eq("name", name),
        )
        .await
        .expect("print");
    rows.iter()
        .find(|r| r.get("name").map(String::as_str) == Some(name))
        .and_then(|r| r.get(".id").cloned())
        .unwrap_or_else(|| panic!("{menu} has {name}: {rows:?}"))
}

/// An administrator's `set` on the router.
async fn set_by_hand(client: &RouterOsClient, menu: &str, name: &str, attrs: &[(&str, &str)]) {
    let id = row_id(client, menu, name).await;
    let mut cmd = Cmd::new(format!("{menu}/set")).attr(".id", id);
    for (k, v) in attrs {
        cmd = cmd.attr(*k, *v);
    }
    client.run(cmd).await.expect("set by hand");
}

/// An administrator's `remove` on the router.
async fn remove_by_hand(client: &RouterOsClient, menu: &str, name: &str) {
    let id = row_id(client, menu, name).await;
    client
        .run(Cmd::new(format!("{menu}/remove")).attr(".id", id))
        .await
        .expect("remove by hand");
}

/// An administrator's `add` on the router.
async fn add_by_hand(client: &RouterOsClient, menu: &str, attrs: &[(&str, &str)]) {
    let mut cmd = Cmd::new(format!("{menu}/add"));
    for (k, v) in attrs {
        cmd = cmd.attr(*k, *v);
    }
    client.run(cmd).await.expect("add by hand");
}

/// Audit rows per action.
fn actions(audit: &[Value]) -> BTreeMap<String, Vec<&Value>> {
    let mut out: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for row in audit {
        out.entry(row["action"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(row);
    }
    out
}

/// Yes or no as RouterOS writes it either way.
fn is_yes(v: &Value) -> bool {
    matches!(v.as_str(), Some("yes" | "true"))
}

fn is_no(v: &Value) -> bool {
    matches!(v.as_str(), Some("no" | "false"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_found_reported_and_resolved_through_the_api() {
    within(Duration::from_secs(150), async {
        let site = Site::start("report", 0).await;
        let (ops, router) = (&site.ops, site.router.as_str());
        let gold = plan(ops, "gold", "10M/10M").await;
        let silver = plan(ops, "silver", "5M/5M").await;
        let alice = subscriber(ops, router, &gold, "alice", "alice-pw-1", "pppoe").await;
        let bob = subscriber(ops, router, &gold, "bob", "bob-pw-1", "pppoe").await;
        let carol = subscriber(ops, router, &gold, "carol", "carol-pw-1", "pppoe").await;
        let dave = subscriber(ops, router, &silver, "dave", "dave-pw-1", "pppoe").await;
        jobs_settle(ops, &[]).await;
        synced(ops, router).await;
        // Converging to what staff asked for is no drift.
        clean_check(ops, router).await;

        // An administrator changes the router by hand: alice moves to silver's profile, bob
        // is disabled, carol removed, gold's rate limit raised, and an account erin made
        // without the marker.
        let by_hand = admin_client(&site.sim, 0).await;
        set_by_hand(&by_hand, "/ppp/secret", "alice", &[("profile", "silver")]).await;
        set_by_hand(&by_hand, "/ppp/secret", "bob", &[("disabled", "yes")]).await;
        remove_by_hand(&by_hand, "/ppp/secret", "carol").await;
        set_by_hand(
            &by_hand,
            "/ppp/profile",
            "gold",
            &[("rate-limit", "15M/15M")],
        )
        .await;
        add_by_hand(
            &by_hand,
            "/ppp/secret",
            &[
                ("name", "erin"),
                ("password", "erin-hand-pw"),
                ("service", "pppoe"),
                ("profile", "default"),
                ("comment", "made on site"),
            ],
        )
        .await;
        // Then staff create a subscriber erin: the agent does not touch the administrator's
        // account, so its upsert fails with a conflict.
        let erin = subscriber(ops, router, &silver, "erin", "erin-pw-1", "pppoe").await;
        let upserts = ops.all("/api/v1/jobs?kind=upsert_ppp_secret").await;
        let erin_upsert = upserts
            .iter()
            .filter(|j| j["status"] != "succeeded")
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>();
        assert_eq!(erin_upsert.len(), 1, "{upserts:#?}");
        let erin_upsert = erin_upsert[0].clone();
        let job = ops.job_finished(&erin_upsert, SETTLE).await;
        assert_eq!(job["status"], "failed", "{job:#}");
        assert_eq!(job["error"]["code"], "conflict", "{job:#}");
        assert_eq!(job["error"]["retryable"], false, "{job:#}");
        jobs_settle(ops, &[&erin_upsert]).await;
        synced(ops, router).await;

        // Staff ask for a check.
        let check = drift_check(ops, router).await;
        let detail = check["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("0 changed") && detail.contains("5 drift findings"),
            "{check:#}"
        );
        let open = drift_items(ops, router, None).await;
        assert_eq!(open.len(), 5, "{open:#?}");
        for i in &open {
            assert_eq!(i["status"], "open", "{i:#}");
            assert_eq!(i["router_id"], router, "{i:#}");
            assert_eq!(i["tenant_id"], site.tenant.as_str(), "{i:#}");
            assert!(
                i["resolved_at"].is_null() && i["resolved_by"].is_null(),
                "{i:#}"
            );
            assert!(i["job_id"].is_null(), "{i:#}");
            assert_eq!(
                i["check_id"], open[0]["check_id"],
                "one check reported all: {i:#}"
            );
        }
        let moved = item(&open, "ppp_secret", "alice", Some("profile"));
        assert_eq!(moved["router_value"], "silver", "{moved:#}");
        assert_eq!(moved["desired_value"], "gold", "{moved:#}");
        assert_eq!(moved["managed"], true, "{moved:#}");
        assert_eq!(moved["action"], "reported", "{moved:#}");
        let disabled = item(&open, "ppp_secret", "bob", Some("disabled"));
        assert!(is_yes(&disabled["router_value"]), "{disabled:#}");
        assert!(is_no(&disabled["desired_value"]), "{disabled:#}");
        assert_eq!(disabled["managed"], true, "{disabled:#}");
        assert_eq!(disabled["action"], "reported", "{disabled:#}");
        let removed = item(&open, "ppp_secret", "carol", None);
        assert!(removed["router_value"].is_null(), "{removed:#}");
        assert!(!removed["desired_value"].is_null(), "{removed:#}");
        assert_eq!(removed["managed"], true, "{removed:#}");
        assert_eq!(removed["action"], "reported", "{removed:#}");
        let rate = item(&open, "ppp_profile", "gold", Some("rate-limit"));
        assert_eq!(rate["router_value"], "15M/15M", "{rate:#}");
        assert_eq!(rate["desired_value"], "10M/10M", "{rate:#}");
        assert_eq!(rate["managed"], true, "{rate:#}");
        assert_eq!(rate["action"], "reported", "{rate:#}");
        let conflict = item(&open, "ppp_secret", "erin", None);
        assert_eq!(conflict["managed"], false, "{conflict:#}");
        assert_eq!(conflict["action"], "conflict", "{conflict:#}");
        assert!(!conflict["router_value"].is_null(), "{conflict:#}");
        // One item reads the same alone.
        let id = moved["id"].as_str().unwrap();
        let (status, one) = ops.get(&format!("/api/v1/drift/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{one}");
        assert_eq!(&one, moved);
        // Filters: by kind and status.
        let profiles = ops
            .all(&format!(
                "/api/v1/drift?router_id={router}&kind=ppp_profile"
            ))
            .await;
        assert_eq!(profiles.len(), 1, "{profiles:#?}");
        assert_eq!(
            ops.all(&format!("/api/v1/drift?router_id={router}&status=open"))
                .await
                .len(),
            5
        );

        // Policy report: the router is as the administrator left it.
        let secrets = site.secrets();
        assert_eq!(secrets["alice"]["profile"], "silver");
        assert_eq!(secrets["bob"]["disabled"], "true");
        assert!(!secrets.contains_key("carol"), "{secrets:?}");
        assert_eq!(secrets["erin"]["comment"], "made on site");
        assert_eq!(secrets["erin"]["password"], "erin-hand-pw");
        assert_eq!(secrets["dave"]["profile"], "silver");
        assert_eq!(site.profiles()["gold"]["rate-limit"], "15M/15M");

        let sync = synced(ops, router).await;
        assert_eq!(sync["open_drift_items"], 5, "{sync:#}");
        assert_eq!(sync["conflicts"], 1, "{sync:#}");
        assert!(sync["last_drift_check_at"].is_string(), "{sync:#}");
        assert_eq!(
            sync["progress"]["generation"], sync["desired_generation"],
            "{sync:#}"
        );
        assert_eq!(
            sync["progress"]["done"], sync["progress"]["total"],
            "{sync:#}"
        );

        // The made-by-hand account cannot be accepted (there is nothing to take).
        let conflict_id = conflict["id"].as_str().unwrap().to_owned();
        let (status, v) = ops
            .post_empty(&format!("/api/v1/drift/{conflict_id}/accept"))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

        // Accept the profile move: alice's plan is now silver.
        let moved_id = moved["id"].as_str().unwrap().to_owned();
        let (status, v) = ops
            .post_empty(&format!("/api/v1/drift/{moved_id}/accept"))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["status"], "accepted", "{v:#}");
        assert_eq!(v["resolved_by"], "acme-ops", "{v:#}");
        assert!(v["resolved_at"].is_string(), "{v:#}");
        let (_, sub) = ops.get(&format!("/api/v1/subscribers/{alice}")).await;
        assert_eq!(sub["plan_id"], silver.as_str(), "{sub:#}");
        // Only an open item can be accepted.
        let (status, v) = ops
            .post_empty(&format!("/api/v1/drift/{moved_id}/accept"))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{v}");

        // Accept the disable: bob is suspended.
        let disabled_id = disabled["id"].as_str().unwrap().to_owned();
        let (status, v) = ops
            .post_empty(&format!("/api/v1/drift/{disabled_id}/accept"))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["status"], "accepted", "{v:#}");
        let (_, sub) = ops.get(&format!("/api/v1/subscribers/{bob}")).await;
        assert_eq!(sub["status"], "suspended", "{sub:#}");

        // Accept the rate limit: gold's plan takes it.
        let rate_id = rate["id"].as_str().unwrap().to_owned();
        let (status, v) = ops
            .post_empty(&format!("/api/v1/drift/{rate_id}/accept"))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["status"], "accepted", "{v:#}");
        let (_, p) = ops.get(&format!("/api/v1/plans/{gold}")).await;
        assert_eq!(p["rate_limit"], "15M/15M", "{p:#}");

        // What was accepted is now desired: the router needs no change for it.
        jobs_settle(ops, &[&erin_upsert]).await;
        synced(ops, router).await;
        let secrets = site.secrets();
        assert_eq!(secrets["alice"]["profile"], "silver");
        assert_eq!(secrets["bob"]["disabled"], "true");
        assert_eq!(site.profiles()["gold"]["rate-limit"], "15M/15M");
        let open = drift_items(ops, router, None).await;
        assert_eq!(open.len(), 2, "carol's and erin's are left: {open:#?}");

        // Enforce the removed account: it is made again, with the marker.
        let removed_id = removed["id"].as_str().unwrap().to_owned();
        let (status, job) = ops
            .post_empty(&format!("/api/v1/drift/{removed_id}/enforce"))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        assert_eq!(job["kind"], "enforce", "{job}");
        let enforce_carol = job["id"].as_str().unwrap().to_owned();
        let (_, v) = ops.get(&format!("/api/v1/drift/{removed_id}")).await;
        assert!(
            v["status"] == "enforcing" || v["status"] == "corrected",
            "{v:#}"
        );
        assert_eq!(v["job_id"], enforce_carol.as_str(), "{v:#}");
        let job = ops.job_finished(&enforce_carol, SETTLE).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        assert_eq!(job["progress"]["done"], job["progress"]["total"], "{job}");
        let v = eventually("carol's item to be corrected", SETTLE, || async {
            let (_, v) = ops.get(&format!("/api/v1/drift/{removed_id}")).await;
            (v["status"] == "corrected").then_some(v)
        })
        .await;
        assert_eq!(v["resolved_by"], AGENT_ACTOR, "{v:#}");
        let secrets = site.secrets();
        assert_eq!(
            secrets["carol"]["comment"],
            format!("tikfleet: subscriber {carol}")
        );
        assert_eq!(secrets["carol"]["profile"], "gold");
        site.sim.dial(0, "pppoe", "carol", "carol-pw-1");

        // Enforce the conflict: erin's account is adopted and becomes staff's erin.
        let (status, job) = ops
            .post_empty(&format!("/api/v1/drift/{conflict_id}/enforce"))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        assert_eq!(job["kind"], "enforce", "{job}");
        let enforce_erin = job["id"].as_str().unwrap().to_owned();
        let job = ops.job_finished(&enforce_erin, SETTLE).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        let v = eventually("erin's conflict to be resolved", SETTLE, || async {
            let (_, v) = ops.get(&format!("/api/v1/drift/{conflict_id}")).await;
            (v["status"] != "open" && v["status"] != "enforcing").then_some(v)
        })
        .await;
        assert_eq!(v["status"], "resolved", "{v:#}");
        assert_eq!(v["resolved_by"], AGENT_ACTOR, "{v:#}");
        let secrets = site.secrets();
        let comment = &secrets["erin"]["comment"];
        assert!(comment.starts_with("tikfleet:"), "{comment}");
        assert_eq!(comment, &format!("tikfleet: subscriber {erin}"));
        assert_eq!(secrets["erin"]["profile"], "silver");
        assert_eq!(secrets["erin"]["password"], "erin-pw-1");
        site.sim.dial(0, "pppoe", "erin", "erin-pw-1");
        let all = drift_items(ops, router, Some("all")).await;
        for i in all
            .iter()
            .filter(|i| i["key"] == "erin" && !i["field"].is_null())
        {
            assert_eq!(i["status"], "corrected", "what adoption changed: {i:#}");
            assert_eq!(i["action"], "corrected", "{i:#}");
        }
        let password = item(&all, "ppp_secret", "erin", Some("password"));
        assert_eq!(password["router_value"], "<redacted>", "{password:#}");
        assert_eq!(password["desired_value"], "<redacted>", "{password:#}");

        // The audit log: findings, acceptances, enforcements.
        let audit = ops.audit().await;
        let by_action = actions(&audit);
        let detected = &by_action["drift.detected"];
        for row in detected {
            assert_eq!(row["actor"], AGENT_ACTOR, "{row:#}");
            assert_eq!(row["router_id"], router, "{row:#}");
        }
        for (kind, key) in [
            ("ppp_secret", "alice"),
            ("ppp_secret", "bob"),
            ("ppp_secret", "carol"),
            ("ppp_profile", "gold"),
            ("ppp_secret", "erin"),
        ] {
            assert!(
                detected
                    .iter()
                    .any(|r| r["params"]["kind"] == kind && r["params"]["key"] == key),
                "drift.detected for {kind} {key}: {detected:#?}"
            );
        }
        let accepted = &by_action["drift.accepted"];
        assert_eq!(accepted.len(), 3, "{accepted:#?}");
        for id in [&moved_id, &disabled_id, &rate_id] {
            assert!(
                accepted
                    .iter()
                    .any(|r| r["params"]["drift_id"] == id.as_str() && r["actor"] == "acme-ops"),
                "drift.accepted for {id}: {accepted:#?}"
            );
        }
        let enforced = &by_action["drift.enforce"];
        assert_eq!(enforced.len(), 2, "{enforced:#?}");
        for (id, job, adopt) in [
            (&removed_id, &enforce_carol, "false"),
            (&conflict_id, &enforce_erin, "true"),
        ] {
            assert!(
                enforced
                    .iter()
                    .any(|r| r["params"]["drift_id"] == id.as_str()
                        && r["params"]["job_id"] == job.as_str()
                        && r["params"]["adopt"] == adopt),
                "drift.enforce for {id}: {enforced:#?}"
            );
        }
        let corrected = &by_action["drift.corrected"];
        assert!(
            corrected
                .iter()
                .any(|r| r["params"]["key"] == "carol" && r["actor"] == AGENT_ACTOR),
            "{corrected:#?}"
        );
        assert_eq!(by_action["router.drift_check"].len(), 2);
        assert_eq!(by_action["tenant.drift_settings"].len(), 1);
        // Staff's changes through acceptance are recorded as such too.
        assert!(by_action.contains_key("subscriber.update"));
        assert!(by_action.contains_key("subscriber.suspend"));
        assert!(by_action.contains_key("plan.update"));

        // A last check: nothing open, in sync.
        let check = drift_check(ops, router).await;
        assert!(
            check["detail"]
                .as_str()
                .is_some_and(|d| d.contains("0 drift findings")),
            "{check:#}"
        );
        let open = drift_items(ops, router, None).await;
        assert!(open.is_empty(), "{open:#?}");
        let sync = synced(ops, router).await;
        assert_eq!(sync["open_drift_items"], 0, "{sync:#}");
        assert_eq!(sync["conflicts"], 0, "{sync:#}");
        jobs_settle(ops, &[&erin_upsert]).await;
        let (_, sub) = ops.get(&format!("/api/v1/subscribers/{dave}")).await;
        assert_eq!(sub["status"], "active", "{sub:#}");

        // No password anywhere: not in drift items, not in the audit log.
        let all = drift_items(ops, router, Some("all")).await;
        let text = format!(
            "{}{}",
            serde_json::to_string(&all).unwrap(),
            serde_json::to_string(&ops.audit().await).unwrap()
        );
        for secret in [
            "alice-pw-1",
            "bob-pw-1",
            "carol-pw-1",
            "dave-pw-1",
            "erin-pw-1",
            "erin-hand-pw",
        ] {
            assert!(!text.contains(secret), "{secret} leaked");
        }
        site.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_policy_corrects_drift_when_checked() {
    within(Duration::from_secs(120), async {
        let site = Site::start("enforce", 60).await;
        let (ops, router) = (&site.ops, site.router.as_str());
        let gold = plan(ops, "gold", "10M/10M").await;
        let silver = plan(ops, "silver", "5M/5M").await;
        subscriber(ops, router, &gold, "alice", "alice-pw-1", "pppoe").await;
        subscriber(ops, router, &gold, "bob", "bob-pw-1", "pppoe").await;
        subscriber(ops, router, &silver, "dave", "dave-pw-1", "pppoe").await;
        jobs_settle(ops, &[]).await;
        synced(ops, router).await;
        clean_check(ops, router).await;

        // By hand: alice to silver's profile. Staff's check puts it back.
        let by_hand = admin_client(&site.sim, 0).await;
        set_by_hand(&by_hand, "/ppp/secret", "alice", &[("profile", "silver")]).await;
        assert_eq!(site.secrets()["alice"]["profile"], "silver");
        let check = drift_check(ops, router).await;
        let detail = check["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("1 changed") && detail.contains("1 drift findings"),
            "{check:#}"
        );
        assert_eq!(site.secrets()["alice"]["profile"], "gold");
        let open = drift_items(ops, router, None).await;
        assert!(open.is_empty(), "nothing left for staff: {open:#?}");
        let all = drift_items(ops, router, Some("all")).await;
        assert_eq!(all.len(), 1, "{all:#?}");
        let fixed = item(&all, "ppp_secret", "alice", Some("profile"));
        assert_eq!(fixed["status"], "corrected", "{fixed:#}");
        assert_eq!(fixed["action"], "corrected", "{fixed:#}");
        assert_eq!(fixed["router_value"], "silver", "{fixed:#}");
        assert_eq!(fixed["desired_value"], "gold", "{fixed:#}");
        assert_eq!(fixed["managed"], true, "{fixed:#}");
        assert_eq!(fixed["resolved_by"], AGENT_ACTOR, "{fixed:#}");
        assert!(fixed["resolved_at"].is_string(), "{fixed:#}");
        let (status, v) = ops
            .post_empty(&format!(
                "/api/v1/drift/{}/accept",
                fixed["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "a corrected item is settled: {v}"
        );

        // By hand: bob disabled. The reconcile pass of an unrelated staff change (a new
        // subscriber) is a full check too, and puts bob back.
        set_by_hand(&by_hand, "/ppp/secret", "bob", &[("disabled", "yes")]).await;
        subscriber(ops, router, &gold, "carol", "carol-pw-1", "pppoe").await;
        jobs_settle(ops, &[]).await;
        synced(ops, router).await;
        let fixed = eventually("bob's disable to be corrected", SETTLE, || async {
            let all = drift_items(ops, router, Some("all")).await;
            all.iter()
                .find(|i| i["key"] == "bob" && i["field"] == "disabled")
                .cloned()
        })
        .await;
        assert_eq!(fixed["status"], "corrected", "{fixed:#}");
        assert!(is_yes(&fixed["router_value"]), "{fixed:#}");
        assert_eq!(site.secrets()["bob"]["disabled"], "false");
        assert!(site.secrets().contains_key("carol"));

        let sync = synced(ops, router).await;
        assert_eq!(sync["open_drift_items"], 0, "{sync:#}");
        let audit = ops.audit().await;
        let by_action = actions(&audit);
        let corrected = &by_action["drift.corrected"];
        for key in ["alice", "bob"] {
            assert!(
                corrected
                    .iter()
                    .any(|r| r["params"]["key"] == key && r["actor"] == AGENT_ACTOR),
                "{corrected:#?}"
            );
        }
        assert!(!by_action.contains_key("drift.detected"), "{by_action:#?}");
        site.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_sees_no_drift_and_starts_no_check() {
    within(Duration::from_secs(90), async {
        let site = Site::start("report", 0).await;
        let (ops, router) = (&site.ops, site.router.as_str());
        let gold = plan(ops, "gold", "10M/10M").await;
        subscriber(ops, router, &gold, "alice", "alice-pw-1", "pppoe").await;
        jobs_settle(ops, &[]).await;
        synced(ops, router).await;
        clean_check(ops, router).await;
        let by_hand = admin_client(&site.sim, 0).await;
        set_by_hand(&by_hand, "/ppp/secret", "alice", &[("disabled", "yes")]).await;
        drift_check(ops, router).await;
        let open = drift_items(ops, router, None).await;
        assert_eq!(open.len(), 1, "{open:#?}");
        let id = open[0]["id"].as_str().unwrap().to_owned();

        // Another tenant's operator.
        let (other_tenant, other) = site.ctl.tenant("globex").await;
        let (status, v) = other.get(&format!("/api/v1/drift/{id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
        for action in ["accept", "enforce"] {
            let (status, v) = other
                .post_empty(&format!("/api/v1/drift/{id}/{action}"))
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{action}: {v}");
        }
        let (status, v) = other
            .post_empty(&format!("/api/v1/routers/{router}/drift-check"))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
        let (status, v) = other.get(&format!("/api/v1/routers/{router}/sync")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
        assert!(drift_items(&other, router, Some("all")).await.is_empty());
        assert!(other.all("/api/v1/drift?status=all").await.is_empty());
        let (status, v) = other
            .get(&format!(
                "/api/v1/drift?tenant_id={}&status=all",
                site.tenant
            ))
            .await;
        assert!(
            status == StatusCode::OK && v["items"].as_array().is_some_and(Vec::is_empty)
                || status == StatusCode::NOT_FOUND
                || status == StatusCode::FORBIDDEN,
            "{status} {v}"
        );
        let (status, v) = other
            .put(
                &format!("/api/v1/tenants/{}/drift", site.tenant),
                json!({"policy": "enforce", "interval_secs": 60}),
            )
            .await;
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN,
            "{status} {v}"
        );
        let (status, v) = other
            .get(&format!("/api/v1/tenants/{other_tenant}/drift"))
            .await;
        assert_eq!(status, StatusCode::OK, "its own tenant's settings: {v}");
        assert!(other.all("/api/v1/jobs").await.is_empty());

        // A viewer of the tenant reads but does not act.
        let viewer = ops
            .ok(
                StatusCode::CREATED,
                &format!("/api/v1/tenants/{}/tokens", site.tenant),
                json!({"role": "viewer", "name": "acme-viewer"}),
            )
            .await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let viewer = ops.with_token(&viewer);
        let (status, v) = viewer.get(&format!("/api/v1/drift/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        for path in [
            format!("/api/v1/drift/{id}/accept"),
            format!("/api/v1/drift/{id}/enforce"),
            format!("/api/v1/routers/{router}/drift-check"),
        ] {
            let (status, v) = viewer.post_empty(&path).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {v}");
        }

        // Nothing changed: the item is open, with no job; one check only; the router as
        // the administrator left it.
        let (_, v) = ops.get(&format!("/api/v1/drift/{id}")).await;
        assert_eq!(v["status"], "open", "{v:#}");
        assert!(v["job_id"].is_null(), "{v:#}");
        assert_eq!(ops.all("/api/v1/jobs?kind=drift_check").await.len(), 2);
        assert!(ops.all("/api/v1/jobs?kind=enforce").await.is_empty());
        assert_eq!(site.secrets()["alice"]["disabled"], "true");
        site.stop().await;
    })
    .await;
}

/// The plainest flow: staff create a subscriber and everything is applied; then an
/// administrator disables the account by hand, and staff ask for a check. Under policy
/// `report` the check must report the difference and leave the router alone.
///
/// (Fails at the time of writing: the agent's upsert job ran after the reconcile pass that
/// had already made the account, and the agent still counts the account as changed by that
/// job, so the first check takes the administrator's change for a staff change on its
/// way: it undoes it and reports nothing. The other tests check a clean router first, which
/// makes the agent forget the job.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_change_after_the_last_staff_change_is_reported_not_undone() {
    within(Duration::from_secs(90), async {
        let site = Site::start("report", 0).await;
        let (ops, router) = (&site.ops, site.router.as_str());
        let gold = plan(ops, "gold", "10M/10M").await;
        subscriber(ops, router, &gold, "alice", "alice-pw-1", "pppoe").await;
        jobs_settle(ops, &[]).await;
        synced(ops, router).await;

        let by_hand = admin_client(&site.sim, 0).await;
        set_by_hand(&by_hand, "/ppp/secret", "alice", &[("disabled", "yes")]).await;
        let check = drift_check(ops, router).await;
        let jobs = ops.all("/api/v1/jobs").await;
        assert_eq!(
            site.secrets()["alice"]["disabled"],
            "true",
            "policy report: the router is left as the administrator made it; {check:#}; jobs {jobs:#?}"
        );
        let open = drift_items(ops, router, None).await;
        assert_eq!(open.len(), 1, "the check reports the difference: {check:#}; {open:#?}");
        let found = item(&open, "ppp_secret", "alice", Some("disabled"));
        assert_eq!(found["action"], "reported", "{found:#}");
        assert_eq!(found["status"], "open", "{found:#}");
        site.stop().await;
    })
    .await;
}
