//! The fleet end to end on loopback: the real controller (API and hub, SQLite or a fresh
//! PostgreSQL database), agents running the real `tikfleet-agent` commands in-process
//! (enrolled through the API, each with its own data folder), simulated routers, and staff
//! changes made over HTTP.
//!
//! - each API change reaches the router (router, plan create/update, PPPoE and hotspot
//!   subscribers: create, password, plan with the session disconnected, suspend, resume,
//!   delete), with jobs, audit and sync as the API shows them;
//! - the controller restarted mid-flow; the agent offline while staff make 1,000 changes;
//!   60 seconds of connection flaps through a fault-injecting proxy: afterwards nothing lost,
//!   nothing applied twice, every audit record present once;
//! - a revoked agent and a reused enrollment token;
//! - a cancel of a job the agent holds (retrying on a faulty router) reaches it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tikfleet_e2e::fleet::{
    Agent, AgentSettings, Api, Controller, HubPath, SETTLE, Sim, add_router, connected,
    drift_items, eventually, plan, subscriber, synced, within,
};

/// Counts of audit rows per action, for rows matching `keep`.
fn count_actions(audit: &[Value], keep: impl Fn(&Value) -> bool) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for row in audit.iter().filter(|r| keep(r)) {
        *counts
            .entry(row["action"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    counts
}

/// A router command an agent reported (its actor is `agent:<name>`, its action the command
/// word); the agent's enrollment is a staff-side row.
fn is_agent_row(row: &Value) -> bool {
    row["actor"]
        .as_str()
        .is_some_and(|a| a.starts_with("agent:"))
        && row["action"].as_str().is_some_and(|a| a.starts_with('/'))
}

/// Every router command the agent reported, once each: the controller's agent audit rows
/// per command word equal the commands the router saw (logins included), their outbox seqs
/// are distinct and within what the controller committed, and the agent's outbox is
/// acknowledged up to its last seq, which the controller committed. Returns the commands.
async fn audit_matches_router(
    ctl: &Controller,
    sim: &Sim,
    agent: &Agent,
    audit: &[Value],
) -> BTreeMap<String, u64> {
    let reported = count_actions(audit, is_agent_row);
    let seen = sim.commands(0);
    assert_eq!(
        reported, seen,
        "the audit log has each router command once, as the router saw it"
    );
    let (seqs, committed) = ctl.agent_audit_seqs(&agent.id).await;
    assert_eq!(
        seqs.len() as u64,
        reported.values().sum::<u64>(),
        "one row per audit record"
    );
    let distinct: BTreeSet<i64> = seqs.iter().copied().collect();
    assert_eq!(distinct.len(), seqs.len(), "no outbox seq taken twice");
    assert!(seqs.iter().all(|s| *s >= 1 && *s <= committed));
    let (last_seq, acked) = agent.outbox();
    assert_eq!(
        (last_seq, acked),
        (committed as u64, committed as u64),
        "the agent's whole outbox was committed and acknowledged"
    );
    seen
}

fn staff_actions(audit: &[Value]) -> BTreeMap<String, u64> {
    count_actions(audit, |r| !is_agent_row(r))
}

/// Every job succeeded once: one attempt, progress complete, no error.
fn each_job_ran_once(jobs: &[Value]) {
    for job in jobs {
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
        assert_eq!(job["progress"]["done"], job["progress"]["total"], "{job}");
        assert!(job["error"].is_null(), "{job}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_api_change_reaches_the_router() {
    within(Duration::from_secs(100), async {
        let sim = Sim::start(1).await;
        let ctl = Controller::start(HubPath::Direct).await;
        let (tenant, ops) = ctl.tenant("acme").await;
        let (agent, running) = Agent::running(&ops, &tenant).await;

        // A router added through the API (its password sealed to the agent) is reachable
        // by the agent: the first jobs on it succeed.
        let router = add_router(&ops, &sim, 0, &agent.id, "core-1").await;
        let gold = plan(&ops, "gold", "10M/10M").await;
        let silver = plan(&ops, "silver", "5M/5M").await;
        let alice = subscriber(&ops, &router, &gold, "alice", "alice-pw-1", "pppoe").await;
        let bob = subscriber(&ops, &router, &silver, "bob", "bob-pw-1", "hotspot").await;
        ops.all_jobs_succeed(SETTLE).await;
        let profiles = sim.menu(0, "/ppp/profile");
        assert_eq!(profiles["gold"]["rate-limit"], "10M/10M", "{profiles:?}");
        assert_eq!(profiles["gold"]["comment"], "tikfleet: plan gold");
        let secrets = sim.menu(0, "/ppp/secret");
        assert_eq!(secrets["alice"]["profile"], "gold");
        assert_eq!(
            secrets["alice"]["comment"],
            format!("tikfleet: subscriber {alice}")
        );
        assert_eq!(secrets["alice"]["disabled"], "false");
        let hs_profiles = sim.menu(0, "/ip/hotspot/user/profile");
        assert_eq!(
            hs_profiles["silver"]["rate-limit"], "5M/5M",
            "{hs_profiles:?}"
        );
        let users = sim.menu(0, "/ip/hotspot/user");
        assert_eq!(users["bob"]["profile"], "silver");
        assert_eq!(
            users["bob"]["comment"],
            format!("tikfleet: subscriber {bob}")
        );
        // The accounts work with their passwords.
        sim.dial(0, "pppoe", "alice", "alice-pw-1");
        sim.dial(0, "hotspot", "bob", "bob-pw-1");

        // A plan's new rate limit reaches its profile.
        let (status, v) = ops
            .patch(
                &format!("/api/v1/plans/{gold}"),
                json!({"rate_limit": "20M/20M"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        ops.all_jobs_succeed(SETTLE).await;
        assert_eq!(sim.menu(0, "/ppp/profile")["gold"]["rate-limit"], "20M/20M");

        // A new password.
        let (status, v) = ops
            .patch(
                &format!("/api/v1/subscribers/{alice}"),
                json!({"password": "alice-pw-2"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        ops.all_jobs_succeed(SETTLE).await;
        assert_eq!(
            sim.menu(0, "/ppp/secret")["alice"]["password"],
            "alice-pw-2"
        );
        assert!(
            !sim.menu(0, "/ppp/active").contains_key("alice"),
            "a new password disconnects the session, so the old one stops working"
        );
        // The CPE dials again with the new password.
        sim.hang_up(0, "pppoe", "alice");
        sim.dial(0, "pppoe", "alice", "alice-pw-2");

        // A new plan: the profile changes and the live session is disconnected.
        assert!(sim.menu(0, "/ppp/active").contains_key("alice"));
        let (status, v) = ops
            .patch(
                &format!("/api/v1/subscribers/{alice}"),
                json!({"plan_id": silver}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        ops.all_jobs_succeed(SETTLE).await;
        assert_eq!(sim.menu(0, "/ppp/secret")["alice"]["profile"], "silver");
        assert_eq!(sim.menu(0, "/ppp/profile")["silver"]["rate-limit"], "5M/5M");
        assert!(
            !sim.menu(0, "/ppp/active").contains_key("alice"),
            "the session was disconnected so the plan applies"
        );

        // Suspend: disabled, and the session disconnected; resume: enabled.
        sim.dial(0, "pppoe", "alice", "alice-pw-2");
        for (who, service) in [(&alice, "pppoe"), (&bob, "hotspot")] {
            let (status, v) = ops
                .post_empty(&format!("/api/v1/subscribers/{who}/suspend"))
                .await;
            assert_eq!(status, StatusCode::OK, "{v}");
            assert_eq!(v["status"], "suspended", "{service}");
        }
        ops.all_jobs_succeed(SETTLE).await;
        assert_eq!(sim.menu(0, "/ppp/secret")["alice"]["disabled"], "true");
        assert_eq!(sim.menu(0, "/ip/hotspot/user")["bob"]["disabled"], "true");
        assert!(!sim.menu(0, "/ppp/active").contains_key("alice"));
        assert!(
            sim.menu(0, "/ip/hotspot/active")
                .values()
                .all(|r| r.get("user").is_none_or(|u| u != "bob")),
            "bob's hotspot session ended"
        );
        for who in [&alice, &bob] {
            let (status, v) = ops
                .post_empty(&format!("/api/v1/subscribers/{who}/resume"))
                .await;
            assert_eq!(status, StatusCode::OK, "{v}");
        }
        ops.all_jobs_succeed(SETTLE).await;
        assert_eq!(sim.menu(0, "/ppp/secret")["alice"]["disabled"], "false");
        assert_eq!(sim.menu(0, "/ip/hotspot/user")["bob"]["disabled"], "false");

        // Delete.
        for who in [&alice, &bob] {
            let (status, v) = ops.delete(&format!("/api/v1/subscribers/{who}")).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
        }
        let jobs = ops.all_jobs_succeed(SETTLE).await;
        assert!(!sim.menu(0, "/ppp/secret").contains_key("alice"));
        assert!(!sim.menu(0, "/ip/hotspot/user").contains_key("bob"));

        // Every job ran once and shows it.
        each_job_ran_once(&jobs);
        let kinds: BTreeSet<&str> = jobs.iter().filter_map(|j| j["kind"].as_str()).collect();
        for kind in [
            "upsert_profile",
            "upsert_ppp_secret",
            "upsert_hotspot_user",
            "disconnect_session",
            "disable",
            "enable",
            "delete_ppp_secret",
            "delete_hotspot_user",
        ] {
            assert!(kinds.contains(kind), "{kind} in {kinds:?}");
        }
        let sync = synced(&ops, &router).await;
        assert_eq!(sync["agent_connected"], true, "{sync}");

        // The audit log: each staff change once, each router command once.
        let stopped = running.stop().await.expect("the agent stops cleanly");
        assert!(stopped.contains("tikfleet-agent stopped:"), "{stopped}");
        let audit = ops.audit().await;
        let staff = staff_actions(&audit);
        for (action, n) in [
            ("router.create", 1),
            ("plan.create", 2),
            ("plan.update", 1),
            ("subscriber.create", 2),
            ("subscriber.update", 2),
            ("subscriber.suspend", 2),
            ("subscriber.resume", 2),
            ("subscriber.delete", 2),
        ] {
            assert_eq!(staff.get(action), Some(&n), "{action}: {staff:?}");
        }
        let commands = audit_matches_router(&ctl, &sim, &agent, &audit).await;
        for word in [
            "/ppp/secret/add",
            "/ppp/secret/remove",
            "/ppp/profile/add",
            "/ppp/active/remove",
            "/ip/hotspot/user/add",
            "/ip/hotspot/user/remove",
        ] {
            assert!(commands.contains_key(word), "{word} in {commands:?}");
        }
        let text = serde_json::to_string(&audit).unwrap();
        for secret in ["alice-pw-1", "alice-pw-2", "bob-pw-1"] {
            assert!(!text.contains(secret), "no password in the audit log");
        }
        // The technician sees the same on site (`status` probes the router: after the audit
        // comparison).
        let status = agent.command(&["status"]).await.expect("status");
        let generation = &sync["applied_generation"];
        assert!(
            status.contains(&format!(
                "core-1           desired state: generation {generation} stored, {generation} applied (in sync)"
            )),
            "{status}"
        );
    })
    .await;
}

/// The router's managed PPP secrets: name → (profile, disabled).
fn secrets(sim: &Sim) -> BTreeMap<String, (String, String)> {
    sim.menu(0, "/ppp/secret")
        .into_iter()
        .filter(|(_, r)| r.get("comment").is_some_and(|c| c.starts_with("tikfleet:")))
        .map(|(name, r)| (name, (r["profile"].clone(), r["disabled"].clone())))
        .collect()
}

/// What the router should have: every subscriber the API lists, with its plan's profile and
/// disabled when suspended.
async fn expected_secrets(api: &Api) -> BTreeMap<String, (String, String)> {
    let plans: BTreeMap<String, String> = api
        .all("/api/v1/plans")
        .await
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                p["profile"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    api.all("/api/v1/subscribers")
        .await
        .iter()
        .map(|s| {
            (
                s["username"].as_str().unwrap().to_owned(),
                (
                    plans[s["plan_id"].as_str().unwrap()].clone(),
                    (s["status"] == "suspended").to_string(),
                ),
            )
        })
        .collect()
}

/// One add per secret in the audit log: no job applied twice.
fn one_add_per_secret(audit: &[Value]) {
    let mut adds: BTreeMap<&str, u32> = BTreeMap::new();
    for row in audit.iter().filter(|r| r["action"] == "/ppp/secret/add") {
        *adds
            .entry(row["params"]["name"].as_str().unwrap_or("?"))
            .or_default() += 1;
    }
    let twice: Vec<_> = adds.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "secrets added more than once: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_restarted_mid_flow_loses_nothing() {
    within(Duration::from_secs(110), async {
        let sim = Sim::start(1).await;
        let mut ctl = Controller::start(HubPath::Direct).await;
        let (tenant, mut ops) = ctl.tenant("acme").await;
        let (agent, running) = Agent::running(&ops, &tenant).await;
        let router = add_router(&ops, &sim, 0, &agent.id, "core-1").await;
        let gold = plan(&ops, "gold", "10M/10M").await;

        // A burst of changes, and the controller stops while they are delivered, run and
        // reported.
        let mut subs = Vec::new();
        for n in 0..60 {
            subs.push(subscriber(&ops, &router, &gold, &format!("u{n}"), "pw-1", "pppoe").await);
        }
        ctl.stop().await;
        ctl.restart().await;
        ops.base = ctl.admin.base.clone();
        for sub in &subs[..20] {
            let (status, v) = ops
                .post_empty(&format!("/api/v1/subscribers/{sub}/suspend"))
                .await;
            assert_eq!(status, StatusCode::OK, "{v}");
        }
        // And once more while the agent is busy with those.
        ctl.restart().await;
        ops.base = ctl.admin.base.clone();
        for n in 60..90 {
            subscriber(&ops, &router, &gold, &format!("u{n}"), "pw-1", "pppoe").await;
        }
        let jobs = ops.all_jobs_succeed(SETTLE).await;
        each_job_ran_once(&jobs);
        let account_jobs = jobs
            .iter()
            .filter(|j| j["kind"] != "upsert_profile")
            .count();
        assert_eq!(account_jobs, 90 + 2 * 20, "creates, suspends");
        assert_eq!(secrets(&sim), expected_secrets(&ops).await);
        synced(&ops, &router).await;

        running.stop().await.expect("the agent stops cleanly");
        let audit = ops.audit().await;
        let staff = staff_actions(&audit);
        assert_eq!(staff.get("subscriber.create"), Some(&90), "{staff:?}");
        assert_eq!(staff.get("subscriber.suspend"), Some(&20), "{staff:?}");
        one_add_per_secret(&audit);
        audit_matches_router(&ctl, &sim, &agent, &audit).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_offline_during_1000_changes_converges_once_back() {
    within(Duration::from_secs(115), async {
        let sim = Sim::start(1).await;
        let ctl = Controller::start(HubPath::Direct).await;
        let (tenant, ops) = ctl.tenant("acme").await;
        let (agent, running) = Agent::running(&ops, &tenant).await;
        let router = add_router(&ops, &sim, 0, &agent.id, "core-1").await;
        let gold = plan(&ops, "gold", "10M/10M").await;
        let silver = plan(&ops, "silver", "5M/5M").await;
        let mut base = Vec::new();
        for n in 0..100 {
            base.push(subscriber(&ops, &router, &gold, &format!("b{n}"), "pw-1", "pppoe").await);
        }
        ops.all_jobs_succeed(SETTLE).await;
        running.stop().await.expect("the agent stops cleanly");

        // 1,000 changes while the agent is away: 600 new subscribers, 200 of them with a new
        // password, 100 of them deleted again, 50 old ones suspended and 50 moved to another
        // plan.
        let started = Instant::now();
        let mut new = Vec::new();
        for n in 0..600 {
            let plan = if n % 2 == 0 { &gold } else { &silver };
            new.push(subscriber(&ops, &router, plan, &format!("c{n}"), "pw-1", "pppoe").await);
        }
        for sub in &new[..200] {
            let (status, v) = ops
                .patch(&format!("/api/v1/subscribers/{sub}"), json!({"password": "pw-2"}))
                .await;
            assert_eq!(status, StatusCode::OK, "{v}");
        }
        for sub in &new[500..] {
            let (status, v) = ops.delete(&format!("/api/v1/subscribers/{sub}")).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
        }
        for sub in &base[..50] {
            let (status, v) = ops.post_empty(&format!("/api/v1/subscribers/{sub}/suspend")).await;
            assert_eq!(status, StatusCode::OK, "{v}");
        }
        for sub in &base[50..] {
            let (status, v) = ops
                .patch(&format!("/api/v1/subscribers/{sub}"), json!({"plan_id": silver}))
                .await;
            assert_eq!(status, StatusCode::OK, "{v}");
        }
        let made = started.elapsed();

        let back = Instant::now();
        let running = agent.start();
        let jobs = ops.all_jobs_succeed(Duration::from_secs(90)).await;
        let converged = back.elapsed();
        eprintln!(
            "1,000 changes made in {:.1} s; {} jobs ran and were reported {:.1} s after the agent came back",
            made.as_secs_f64(),
            jobs.len(),
            converged.as_secs_f64()
        );
        each_job_ran_once(&jobs);
        let expected = expected_secrets(&ops).await;
        assert_eq!(expected.len(), 100 + 500);
        assert_eq!(secrets(&sim), expected, "the router has exactly the expected secrets");
        // The new passwords are in force.
        sim.dial(0, "pppoe", "c0", "pw-2");
        sim.dial(0, "pppoe", "c399", "pw-1");
        synced(&ops, &router).await;

        running.stop().await.expect("the agent stops cleanly");
        let audit = ops.audit().await;
        let staff = staff_actions(&audit);
        assert_eq!(staff.get("subscriber.create"), Some(&700), "{staff:?}");
        assert_eq!(staff.get("subscriber.update"), Some(&250), "{staff:?}");
        assert_eq!(staff.get("subscriber.delete"), Some(&100), "{staff:?}");
        assert_eq!(staff.get("subscriber.suspend"), Some(&50), "{staff:?}");
        one_add_per_secret(&audit);
        let commands = audit_matches_router(&ctl, &sim, &agent, &audit).await;
        // 700 secrets were created and 100 of them deleted while the agent was away. Jobs that
        // a newer applied state already covers are skipped, so a secret created and deleted
        // meanwhile may never reach the router at all: what is exact is the net result.
        let count = |path: &str| commands.get(path).copied().unwrap_or(0);
        let (adds, removes) = (count("/ppp/secret/add"), count("/ppp/secret/remove"));
        assert!(
            adds - removes == 600 && removes <= 100,
            "{adds} adds, {removes} removes: {commands:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_seconds_of_flaps_lose_nothing_and_apply_nothing_twice() {
    within(Duration::from_secs(100), async {
        let sim = Sim::start(1).await;
        let ctl = Controller::start(HubPath::Proxied).await;
        let (tenant, ops) = ctl.tenant("acme").await;
        let mut agent = Agent::new(&AgentSettings {
            reconnect_max_ms: 1_000,
            ..AgentSettings::default()
        });
        agent.enroll(&ops, &tenant, "site-1").await;
        let running = agent.start();
        connected(&ops, &agent.id).await;
        let router = add_router(&ops, &sim, 0, &agent.id, "core-1").await;
        let gold = plan(&ops, "gold", "10M/10M").await;
        let proxy = ctl.proxy.as_ref().expect("proxied");

        // Staff keep changing things while the link flaps for 60 s (up 0.5–4 s, down
        // 0.1–2 s): each round creates a subscriber, and suspends, resumes or re-passwords an
        // earlier one.
        let changes = async {
            let mut subs: Vec<String> = Vec::new();
            let mut n = 0usize;
            let until = Instant::now() + Duration::from_secs(58);
            while Instant::now() < until {
                subs.push(
                    subscriber(&ops, &router, &gold, &format!("f{n}"), "pw-1", "pppoe").await,
                );
                if n >= 3 {
                    let sub = &subs[n / 2];
                    let (status, v) = match n % 3 {
                        0 => {
                            ops.post_empty(&format!("/api/v1/subscribers/{sub}/suspend"))
                                .await
                        }
                        1 => {
                            ops.post_empty(&format!("/api/v1/subscribers/{sub}/resume"))
                                .await
                        }
                        _ => {
                            ops.patch(
                                &format!("/api/v1/subscribers/{sub}"),
                                json!({"password": format!("pw-{n}")}),
                            )
                            .await
                        }
                    };
                    assert_eq!(status, StatusCode::OK, "{v}");
                }
                n += 1;
                // The pace of staff at work, not a wait for anything.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            n
        };
        let flaps = proxy.flap(
            Duration::from_secs(60),
            (Duration::from_millis(500), Duration::from_secs(4)),
            (Duration::from_millis(100), Duration::from_secs(2)),
            7,
        );
        let (created, cuts) = tokio::join!(changes, flaps);
        eprintln!(
            "{cuts} cuts, {} connections, {} refused; {created} subscribers created with changes",
            proxy.accepted(),
            proxy.refused()
        );
        assert!(cuts >= 10, "the link flapped");

        let jobs = ops.all_jobs_succeed(Duration::from_secs(30)).await;
        each_job_ran_once(&jobs);
        assert_eq!(secrets(&sim), expected_secrets(&ops).await);
        synced(&ops, &router).await;
        // Jobs and desired states raced all along; the reconciler never took a job's newer
        // change for drift (it would have undone it).
        let drift = drift_items(&ops, &router, Some("all")).await;
        assert!(drift.is_empty(), "{drift:#?}");
        running.stop().await.expect("the agent stops cleanly");
        let audit = ops.audit().await;
        let staff = staff_actions(&audit);
        assert_eq!(
            staff.get("subscriber.create"),
            Some(&(created as u64)),
            "{staff:?}"
        );
        one_add_per_secret(&audit);
        audit_matches_router(&ctl, &sim, &agent, &audit).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_stops_at_once_and_a_used_token_is_refused() {
    within(Duration::from_secs(60), async {
        let ctl = Controller::start(HubPath::Direct).await;
        let (tenant, ops) = ctl.tenant("acme").await;
        let mut agent = Agent::new(&AgentSettings::default());
        let token = agent.enroll(&ops, &tenant, "site-1").await;
        let running = agent.start();
        connected(&ops, &agent.id).await;

        let (status, v) = ops
            .post_empty(&format!("/api/v1/agents/{}/revoke", agent.id))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["revoked"], true);
        // The live connection is closed by the controller, and the agent's uplink stops at
        // once (`run` says so while it keeps running).
        eventually("the revoked agent to be disconnected", SETTLE, || async {
            let (_, v) = ops.get(&format!("/api/v1/agents/{}", agent.id)).await;
            (v["connected"] == false && ctl.server().connections().connected().is_empty())
                .then_some(())
        })
        .await;
        eventually("run to report the revocation", SETTLE, || async {
            running
                .output
                .text()
                .contains("the controller revoked this agent")
                .then_some(())
        })
        .await;
        let out = running.stop().await.expect("the agent stops cleanly");
        assert!(
            out.lines()
                .any(|l| l.starts_with("the controller revoked this agent")),
            "the uplink ended with the revocation: {out}"
        );
        let status = agent.command(&["status"]).await.expect("status");
        assert!(status.contains("controller: REVOKED"), "{status}");
        // Started again, it does not connect.
        let again = agent.start();
        let out = again.stop().await.expect("the agent stops cleanly");
        assert!(out.contains("REVOKED by the controller"), "{out}");
        assert!(ctl.server().connections().connected().is_empty());

        // The enrollment token was used: a second agent cannot enroll with it.
        let other = Agent::new(&AgentSettings::default());
        let err = other
            .command(&["enroll", "--controller", &ops.base, "--token", &token])
            .await
            .expect_err("a used token is refused");
        assert!(err.starts_with("error: "), "{err}");
        assert!(err.contains("works only once"), "{err}");
        assert!(!err.contains(&token), "the token is not echoed: {err}");
        let status = other.command(&["status"]).await.expect("status");
        assert!(status.contains("controller: not enrolled"), "{status}");
        let agents = ops.all("/api/v1/agents").await;
        assert_eq!(agents.len(), 1, "{agents:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_held_by_the_agent_never_runs() {
    within(Duration::from_secs(90), async {
        let sim = Sim::start(1).await;
        let ctl = Controller::start(HubPath::Direct).await;
        let (tenant, ops) = ctl.tenant("acme").await;
        let mut agent = Agent::new(&AgentSettings {
            max_attempts: 100,
            ..AgentSettings::default()
        });
        agent.enroll(&ops, &tenant, "site-1").await;
        let running = agent.start();
        connected(&ops, &agent.id).await;
        let router = add_router(&ops, &sim, 0, &agent.id, "core-1").await;
        let gold = plan(&ops, "gold", "10M/10M").await;
        let alice = subscriber(&ops, &router, &gold, "alice", "pw-1", "pppoe").await;
        ops.all_jobs_succeed(SETTLE).await;

        // The router fails: the open connection drops at its next command and new ones are
        // refused, so the suspend's first job keeps retrying on the agent.
        sim.faults(0, json!({"refuse": true, "drop_after": 1}));
        let (status, v) = ops
            .post_empty(&format!("/api/v1/subscribers/{alice}/suspend"))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let jobs = ops.all("/api/v1/jobs?kind=disable").await;
        let disable = jobs[0]["id"].as_str().unwrap().to_owned();
        let job = eventually("the disable job to be retrying", SETTLE, || async {
            let job = ops.job(&disable).await;
            (job["status"] == "retrying").then_some(job)
        })
        .await;
        assert_eq!(job["delivered"], true, "{job}");
        assert_eq!(job["error"]["retryable"], true, "{job}");

        let (status, v) = ops
            .post_empty(&format!("/api/v1/jobs/{disable}/cancel"))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["status"], "cancelled");
        eventually("the cancel to reach the agent", SETTLE, || async {
            ctl.scalar(&format!(
                "SELECT cancel_delivered_at FROM jobs WHERE id = '{disable}'"
            ))
            .await
        })
        .await;

        // The router recovers: the suspend's other job (held behind the cancelled one) runs;
        // the cancelled one does not, and stays cancelled.
        sim.faults(0, json!({"refuse": false, "drop_after": 0}));
        let disconnect = ops.all("/api/v1/jobs?kind=disconnect_session").await[0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        eventually("the disconnect to succeed", SETTLE, || async {
            (ops.job(&disconnect).await["status"] == "succeeded").then_some(())
        })
        .await;
        let out = running.stop().await.expect("the agent stops cleanly");
        assert!(out.contains("tikfleet-agent stopped:"), "{out}");
        assert_eq!(ops.job(&disable).await["status"], "cancelled");
        assert_eq!(
            sim.menu(0, "/ppp/secret")["alice"]["disabled"],
            "false",
            "the cancelled disable never ran"
        );
        let shown = agent
            .command(&["queue", "show", &disable])
            .await
            .expect("queue show");
        assert!(shown.contains("status:     cancelled"), "{shown}");
        // A later update from the agent does not overwrite it either: the agent restarted
        // and reported everything it had.
        let running = agent.start();
        connected(&ops, &agent.id).await;
        running.stop().await.expect("the agent stops cleanly");
        assert_eq!(ops.job(&disable).await["status"], "cancelled");
        let audit = ops.audit().await;
        assert_eq!(staff_actions(&audit).get("job.cancel"), Some(&1));
    })
    .await;
}
