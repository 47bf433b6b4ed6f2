//! The subscriber lifecycle end to end on loopback: the real controller (API and hub, SQLite
//! or a fresh PostgreSQL database), a real agent running `tikfleet-agent run` in-process,
//! and a simulated router (RouterOS 7 and 6), all on ONE manual clock the test moves, so
//! expiry and the end of grace come without waiting.
//!
//! A PPPoE and a hotspot subscriber expire while the controller is down: the agent moves
//! them to the grace profile at expiry and to the suspended profile at the end of grace, by
//! itself, and drops their sessions each time. When the controller is back, it learns both
//! transitions from the agent's outbox: each subscriber's status, its history and the audit
//! log (reason `expiry`, actor the agent, each transition exactly once) agree with the
//! router. Then a renewal made while the site is offline is applied as soon as the agent
//! is back, and a renewal while connected restores the plan at once.
//!
//! Notices go to real local peers: an SMTP server (aiosmtpd) and an HTTP receiver standing
//! in for the SMS gateway and the admin webhook. Each subscriber gets one expiry notice (the
//! 1-day one: both notice moments had passed when it was created), one grace and one
//! suspension notice — after the controller is back — and a renewal notice, by email and
//! SMS. A router that refuses the agent when a subscriber's expiry comes raises one admin
//! alert (email and webhook), however often the agent retries; when the router is back, the
//! transition happens and its notice goes out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tikfleet_controller::clock::SharedClock;
use tikfleet_e2e::fleet::{
    Agent, AgentSettings, Api, Controller, HubPath, SETTLE, Sim, add_router, eventually, plan,
    synced, within,
};
use tikfleet_peers::{Receiver, SmtpServer};
use tikfleet_shared::UnixMillis;

const MINUTE: u64 = 60_000;

/// A subscriber expiring at `expires` (RFC 3339), reachable at `<name>@example.net` and
/// by SMS; returns its id.
async fn subscriber(
    api: &Api,
    router: &str,
    plan: &str,
    name: &str,
    service: &str,
    expires: &str,
) -> String {
    api.ok(
        StatusCode::CREATED,
        "/api/v1/subscribers",
        json!({
            "username": name, "password": format!("{name}-pw"), "plan_id": plan,
            "router_id": router, "service": service, "expires_at": expires,
            "name": name.to_uppercase(), "email": format!("{name}@example.net"),
            "phone": phone(name),
        }),
    )
    .await["id"]
        .as_str()
        .expect("subscriber id")
        .to_owned()
}

fn phone(name: &str) -> String {
    format!("+2547000000{:02}", name.len())
}

/// Emails to `to` whose subject contains `what`.
fn mails(smtp: &SmtpServer, to: &str, what: &str) -> usize {
    smtp.to(to)
        .iter()
        .filter(|m| m.header("subject").contains(what))
        .count()
}

/// SMS to `phone` whose text contains `what`.
fn texts(gateway: &Receiver, phone: &str, what: &str) -> usize {
    gateway
        .requests("/sms")
        .iter()
        .map(tikfleet_peers::Recorded::json)
        .filter(|b| b["to"] == phone && b["text"].as_str().unwrap_or("").contains(what))
        .count()
}

/// The admin webhook calls about failed lifecycle transitions (other alerts — an agent
/// offline, a router unreachable — reach the same webhook).
fn transition_alerts(gateway: &Receiver) -> Vec<Value> {
    gateway
        .requests("/hook")
        .iter()
        .map(tikfleet_peers::Recorded::json)
        .filter(|b| {
            b["key"]
                .as_str()
                .is_some_and(|k| k.starts_with("transition_failed:"))
        })
        .collect()
}

/// Waits until `to` has exactly `n` emails about `what` and the same number of texts.
async fn notified(smtp: &SmtpServer, gateway: &Receiver, name: &str, what: &str, n: usize) {
    let to = format!("{name}@example.net");
    eventually(
        &format!("{n} \"{what}\" notice(s) to {name}"),
        SETTLE,
        || async {
            let (m, t) = (mails(smtp, &to, what), texts(gateway, &phone(name), what));
            assert!(
                m <= n && t <= n,
                "{name}: {m} mails, {t} texts about {what:?}: never more than {n}"
            );
            (m == n && t == n).then_some(())
        },
    )
    .await;
}

fn menu_path(service: &str) -> &'static str {
    if service == "pppoe" {
        "/ppp/secret"
    } else {
        "/ip/hotspot/user"
    }
}

fn active_path(service: &str) -> &'static str {
    if service == "pppoe" {
        "/ppp/active"
    } else {
        "/ip/hotspot/active"
    }
}

/// The account's row on the router.
fn account(sim: &Sim, service: &str, name: &str) -> BTreeMap<String, String> {
    sim.menu(0, menu_path(service))
        .remove(name)
        .unwrap_or_else(|| panic!("{name} is on the router"))
}

fn online(sim: &Sim, service: &str, name: &str) -> bool {
    let key = if service == "pppoe" { "name" } else { "user" };
    sim.menu(0, active_path(service))
        .values()
        .any(|row| row.get(key).map(String::as_str) == Some(name))
}

/// Waits until the router has the account on `profile`.
async fn on_profile(sim: &Sim, service: &str, name: &str, profile: &str) {
    eventually(&format!("{name} on profile {profile}"), SETTLE, || async {
        (account(sim, service, name)
            .get("profile")
            .map(String::as_str)
            == Some(profile))
        .then_some(())
    })
    .await;
}

async fn lifecycle(api: &Api, id: &str) -> Value {
    let (st, v) = api
        .get(&format!("/api/v1/subscribers/{id}/lifecycle"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

async fn scenario(version: &str) {
    let sim = Sim::start_version(1, version).await;
    let mut ctl = Controller::start(HubPath::Direct).await;
    let clock = ctl.clock().clone();
    let (tenant, mut ops) = ctl.tenant("acme").await;
    let (st, v) = ops
        .put(
            &format!("/api/v1/tenants/{tenant}/lifecycle"),
            json!({"grace_period_secs": 3600, "grace_rate_limit": "2M/2M",
                   "suspension_mode": "profile", "suspended_address_list": "unpaid"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let smtp = SmtpServer::start().await;
    let gateway = Receiver::start().await;
    let (st, v) = ops
        .put(
            &format!("/api/v1/tenants/{tenant}/notifications"),
            json!({
                "smtp": {"host": "127.0.0.1", "port": smtp.port, "tls": "none",
                         "from": "Acme ISP <billing@acme.example>"},
                "sms": {"url": gateway.url("/sms"), "method": "POST",
                        "headers": {"Authorization": "Bearer sms-key"},
                        "body_template": "{\"to\": {{ phone|tojson }}, \"text\": {{ message|tojson }}}",
                        "content_type": "application/json"},
                "templates": {},
                "alerts": {"emails": ["noc@acme.example"], "webhook_url": gateway.url("/hook")},
            }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");

    let mut agent = Agent::new(&AgentSettings::default());
    agent.enroll(&ops, &tenant, "site-1").await;
    let shared: SharedClock = Arc::new(clock.clone());
    let running = agent.start_with_clock(Arc::clone(&shared));
    tikfleet_e2e::fleet::connected(&ops, &agent.id).await;
    let router = add_router(&ops, &sim, 0, &agent.id, "core-1").await;
    let basic = plan(&ops, "basic", "10M/10M").await;
    // The controller's clock starts at 2026-01-01T00:00:00Z.
    let soon = "2026-01-01T00:10:00Z";
    let alice = subscriber(&ops, &router, &basic, "alice", "pppoe", soon).await;
    let hana = subscriber(&ops, &router, &basic, "hana", "hotspot", soon).await;
    let bob = subscriber(
        &ops,
        &router,
        &basic,
        "bob",
        "pppoe",
        "2026-02-01T00:00:00Z",
    )
    .await;
    synced(&ops, &router).await;
    let subs = [(&alice, "alice", "pppoe"), (&hana, "hana", "hotspot")];
    for (_, name, service) in subs {
        on_profile(&sim, service, name, "basic").await;
        sim.dial(0, service, name, &format!("{name}-pw"));
        assert!(online(&sim, service, name));
    }
    // Both notice moments (2 and 1 days ahead) have passed: only the 1-day notice goes out.
    for (_, name, _) in subs {
        notified(&smtp, &gateway, name, "expires on 2026-01-01", 1).await;
    }
    let profiles = sim.menu(0, "/ppp/profile");
    assert_eq!(profiles["tikfleet-grace"]["rate-limit"], "2M/2M");
    assert_eq!(profiles["tikfleet-suspended"]["address-list"], "unpaid");

    // The controller goes down; expiry comes.
    ctl.stop().await;
    clock.advance(Duration::from_millis(10 * MINUTE + 1_000));
    for (_, name, service) in subs {
        on_profile(&sim, service, name, "tikfleet-grace").await;
        eventually(&format!("{name}'s session dropped"), SETTLE, || async {
            (!online(&sim, service, name)).then_some(())
        })
        .await;
        sim.dial(0, service, name, &format!("{name}-pw"));
    }
    assert_eq!(account(&sim, "pppoe", "bob")["profile"], "basic");

    // Then the end of grace, still without the controller.
    clock.advance(Duration::from_millis(60 * MINUTE));
    for (_, name, service) in subs {
        on_profile(&sim, service, name, "tikfleet-suspended").await;
        assert_eq!(account(&sim, service, name)["disabled"], "false");
        eventually(
            &format!("{name}'s session dropped again"),
            SETTLE,
            || async { (!online(&sim, service, name)).then_some(()) },
        )
        .await;
    }

    // The controller comes back and learns what happened from the outbox (the agent's
    // reconnect backoff runs on the same clock: move it along while waiting).
    ctl.restart().await;
    ops.base.clone_from(&ctl.admin.base);
    eventually("the agent to reconnect", SETTLE, || async {
        clock.advance(Duration::from_millis(500));
        let (st, v) = ops.get(&format!("/api/v1/agents/{}", agent.id)).await;
        (st == StatusCode::OK && v["connected"] == true).then_some(())
    })
    .await;
    for (id, name, _) in subs {
        let v = eventually(
            &format!("{name} suspended at the controller"),
            SETTLE,
            || async {
                let v = lifecycle(&ops, id).await;
                (v["subscriber"]["status"] == "suspended").then_some(v)
            },
        )
        .await;
        assert_eq!(v["subscriber"]["status_reason"], "expiry", "{v}");
        assert_eq!(v["phase_now"], "suspended");
        let events: Vec<(&str, &str, &str)> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["phase"].as_str().unwrap(),
                    e["reason"].as_str().unwrap(),
                    e["actor"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            events[..2],
            [
                ("suspended", "expiry", "agent:site-1"),
                ("grace", "expiry", "agent:site-1"),
            ],
            "{v}"
        );
        assert_eq!(v["events"][1]["due_at"], "2026-01-01T00:10:00Z");
        assert_eq!(v["events"][0]["due_at"], "2026-01-01T01:10:00Z");
    }
    let audit = ops.audit().await;
    let count = |action: &str, name: &str| {
        audit
            .iter()
            .filter(|r| r["action"] == action && r["params"]["username"] == name)
            .count()
    };
    for (_, name, _) in subs {
        assert_eq!(count("subscriber.grace", name), 1, "{name}: once");
        assert_eq!(count("subscriber.suspend", name), 1, "{name}: once");
    }
    let bob_v = lifecycle(&ops, &bob).await;
    assert_eq!(bob_v["subscriber"]["status"], "active");
    for (_, name, _) in subs {
        notified(&smtp, &gateway, name, "has expired", 1).await;
        notified(&smtp, &gateway, name, "is suspended", 1).await;
        notified(&smtp, &gateway, name, "expires on", 1).await;
    }

    // A renewal while the site is offline is applied as soon as the agent is back.
    let out = running.stop().await.expect("the agent stops cleanly");
    assert!(out.contains("tikfleet-agent stopped:"), "{out}");
    let v = ops
        .ok(
            StatusCode::OK,
            &format!("/api/v1/subscribers/{alice}/renew"),
            json!({"period_secs": 30 * 86_400}),
        )
        .await;
    assert_eq!(v["status"], "active");
    assert_eq!(
        account(&sim, "pppoe", "alice")["profile"],
        "tikfleet-suspended"
    );
    let running = agent.start_with_clock(Arc::clone(&shared));
    eventually("the agent to reconnect", SETTLE, || async {
        clock.advance(Duration::from_millis(500));
        let (st, v) = ops.get(&format!("/api/v1/agents/{}", agent.id)).await;
        (st == StatusCode::OK && v["connected"] == true).then_some(())
    })
    .await;
    on_profile(&sim, "pppoe", "alice", "basic").await;

    // A renewal while connected restores the plan at once; sessions are reconnected.
    sim.dial(0, "hotspot", "hana", "hana-pw");
    ops.ok(
        StatusCode::OK,
        &format!("/api/v1/subscribers/{hana}/renew"),
        json!({"expires_at": "2026-03-01T00:00:00Z"}),
    )
    .await;
    on_profile(&sim, "hotspot", "hana", "basic").await;
    synced(&ops, &router).await;
    // The controller, its audit log and the router agree.
    for (id, name, service) in subs {
        let v = lifecycle(&ops, id).await;
        assert_eq!(v["subscriber"]["status"], "active", "{v}");
        assert_eq!(account(&sim, service, name)["profile"], "basic");
        assert_eq!(account(&sim, service, name)["disabled"], "false");
    }
    let audit = ops.audit().await;
    assert_eq!(
        audit
            .iter()
            .filter(|r| r["action"] == "subscriber.renew")
            .count(),
        2
    );
    for (_, name, _) in subs {
        notified(&smtp, &gateway, name, "is renewed", 1).await;
    }

    // Bob's expiry comes while the router refuses the agent: one admin alert, by email and
    // webhook, however often the agent retries; no grace notice yet.
    sim.faults(0, json!({"refuse": true, "drop_after": 1}));
    // 2026-02-01T00:00:30Z, 30 s after bob's expiry (grace lasts an hour).
    clock.set(UnixMillis(1_769_904_000_000 + 30_000));
    // The jump ends the agent's link (no heartbeat for a month); its reconnect backoff runs
    // on the clock, so move it along while waiting.
    let hook = eventually("the admin webhook", SETTLE, || async {
        clock.advance(Duration::from_millis(200));
        transition_alerts(&gateway).into_iter().next()
    })
    .await;
    assert!(
        hook["subject"]
            .as_str()
            .unwrap_or("")
            .contains("failed on router core-1"),
        "{hook}"
    );
    assert_eq!(hook["router"], router.as_str());
    eventually("the alert email", SETTLE, || async {
        clock.advance(Duration::from_millis(200));
        (mails(&smtp, "noc@acme.example", "failed on router core-1") == 1).then_some(())
    })
    .await;
    // The agent retries (5 s, 10 s, … on its clock) and fails the same way: nothing more.
    let tried = sim.connections(0);
    eventually("three more refused attempts", SETTLE, || async {
        clock.advance(Duration::from_millis(2_000));
        (sim.connections(0) >= tried + 3).then_some(())
    })
    .await;
    assert_eq!(account(&sim, "pppoe", "bob")["profile"], "basic");
    sim.faults(0, json!({"refuse": false, "drop_after": 0}));
    eventually("bob in grace once the router is back", SETTLE, || async {
        clock.advance(Duration::from_millis(5_000));
        (account(&sim, "pppoe", "bob")
            .get("profile")
            .map(String::as_str)
            == Some("tikfleet-grace"))
        .then_some(())
    })
    .await;
    notified(&smtp, &gateway, "bob", "has expired", 1).await;
    assert_eq!(
        transition_alerts(&gateway).len(),
        1,
        "one alert for the incident"
    );
    assert_eq!(mails(&smtp, "noc@acme.example", "lifecycle transition"), 1);
    let audit = ops.audit().await;
    assert!(
        audit
            .iter()
            .any(|r| r["action"] == "lifecycle.transition_failed"),
        "the failure is audited"
    );
    // No secret in any request the gateway saw but its own header.
    for r in gateway.requests("/sms") {
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some("Bearer sms-key")
        );
    }

    // The agent's Prometheus endpoint counted the work and the refused connections' errors.
    let url = running.metrics_url().expect("the agent serves metrics");
    let text = reqwest::get(&url)
        .await
        .expect("the metrics endpoint answers")
        .text()
        .await
        .expect("a body");
    for metric in [
        "tikfleet_agent_router_commands_total ",
        "tikfleet_agent_jobs{status=\"succeeded\"} ",
        "tikfleet_agent_outbox_acked_seq ",
        "tikfleet_agent_job_run_seconds_count ",
    ] {
        assert!(text.contains(metric), "{metric} in\n{text}");
    }
    let (st, v) = ctl.admin.get("/metrics").await;
    assert_eq!(st, StatusCode::OK);
    let text = v.as_str().expect("the controller's metrics text");
    for metric in [
        "tikfleet_agents_connected 1",
        "tikfleet_subscribers{status=\"active\"} ",
        "tikfleet_job_latency_seconds_count ",
        "tikfleet_notifications{status=\"sent\"} ",
    ] {
        assert!(text.contains(metric), "{metric} in\n{text}");
    }
    let (st, _) = ops.get("/metrics").await;
    assert_eq!(
        st,
        StatusCode::FORBIDDEN,
        "an operator token does not read fleet metrics"
    );

    let out = running.stop().await.expect("the agent stops cleanly");
    assert!(out.contains("tikfleet-agent stopped:"), "{out}");
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_and_grace_pass_on_time_while_the_controller_is_down_v7() {
    within(Duration::from_secs(240), scenario("7.16.2")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_and_grace_pass_on_time_while_the_controller_is_down_v6() {
    within(Duration::from_secs(240), scenario("6.49.10")).await;
}
