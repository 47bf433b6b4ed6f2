//! Alerts end to end on loopback, on ONE manual clock the test moves: a simulated router
//! whose CPU load the test sets, a real agent (`tikfleet-agent run`, probes every 30 s on
//! that clock), the real controller (hub, health storage, the alert task every 15 s, the
//! notification sender) and real local peers for the notices: an SMTP server (aiosmtpd) and
//! an HTTP receiver as the alert webhook.
//!
//! The router's CPU stays at 95 %: after five minutes of samples `cpu_high` fires, one
//! email and one webhook call however many evaluations pass; the CPU drops and the alert
//! resolves, again one notice each. The agent stops: `agent_offline` fires after a minute,
//! once, and resolves when it is back.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tikfleet_controller::clock::SharedClock;
use tikfleet_e2e::fleet::{
    Agent, AgentSettings, Api, Controller, HubPath, SETTLE, Sim, add_router, eventually, within,
};
use tikfleet_peers::{Receiver, SmtpServer};
use tikfleet_sim::faults::FaultsPatch;

fn cpu(sim: &Sim, load: u8) {
    tikfleet_sim::router::lock(&sim.running.router(0).faults).apply(FaultsPatch {
        cpu_load: Some(load),
        ..FaultsPatch::default()
    });
}

/// The webhook calls for alerts of `rule` that say `what` (`firing`, `resolved`).
fn hooks(gateway: &Receiver, rule: &str, what: &str) -> Vec<Value> {
    gateway
        .requests("/hook")
        .iter()
        .map(tikfleet_peers::Recorded::json)
        .filter(|b| {
            b["key"].as_str().is_some_and(|k| k.ends_with(what))
                && b["body"].as_str().is_some_and(|t| t.contains(rule))
        })
        .collect()
}

async fn alerts(api: &Api, state: &str) -> Vec<Value> {
    api.all(&format!("/api/v1/alerts?state={state}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_and_agent_alerts_fire_and_resolve_with_one_notice_each() {
    within(Duration::from_secs(240), async {
        let sim = Sim::start(1).await;
        cpu(&sim, 95);
        let ctl = Controller::start(HubPath::Direct).await;
        let clock = ctl.clock().clone();
        let (tenant, ops) = ctl.tenant("acme").await;
        let smtp = SmtpServer::start().await;
        let gateway = Receiver::start().await;
        let (st, v) = ops
            .put(
                &format!("/api/v1/tenants/{tenant}/notifications"),
                json!({
                    "smtp": {"host": "127.0.0.1", "port": smtp.port, "tls": "none",
                             "from": "tikfleet <noc@acme.example>"},
                    "templates": {},
                    "alerts": {"emails": ["noc@acme.example"], "webhook_url": gateway.url("/hook")},
                }),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let mut agent = Agent::new(&AgentSettings::default());
        // Probes on (the fleet's default configuration has them off), every 30 s of the
        // shared clock.
        let config = agent.data_dir().with_file_name("agent.toml");
        let text = std::fs::read_to_string(&config).expect("the agent's configuration");
        std::fs::write(
            &config,
            text.replace(
                "[probes]\nenabled = false\n",
                "[probes]\ninterval_secs = 30\n",
            ),
        )
        .expect("probes on");
        agent.enroll(&ops, &tenant, "site-1").await;
        let shared: SharedClock = Arc::new(clock.clone());
        let running = agent.start_with_clock(Arc::clone(&shared));
        tikfleet_e2e::fleet::connected(&ops, &agent.id).await;
        let router = add_router(&ops, &sim, 0, &agent.id, "core-1").await;

        // Five minutes and more of 95 % CPU, in steps the probes and the alert task see.
        let firing = eventually("cpu_high to fire", SETTLE, || async {
            clock.advance(Duration::from_secs(5));
            alerts(&ops, "firing")
                .await
                .into_iter()
                .find(|a| a["rule"] == "cpu_high")
        })
        .await;
        assert_eq!(firing["severity"], "warning", "{firing}");
        eventually("the firing notice by webhook and email", SETTLE, || async {
            let mails = smtp.to("noc@acme.example");
            (hooks(&gateway, "cpu_high", "firing").len() == 1
                && mails.iter().any(|m| m.header("subject").contains("CPU")))
            .then_some(())
        })
        .await;
        // Two more minutes of high CPU (four more probe samples stored, eight evaluations):
        // no second notice.
        let samples = || async {
            let (_, v) = ops.get(&format!("/api/v1/routers/{router}/health?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&step=30")).await;
            v["points"].as_array().map_or(0, Vec::len)
        };
        let before = samples().await;
        eventually("four more samples while the CPU stays high", SETTLE, || async {
            clock.advance(Duration::from_secs(5));
            (samples().await >= before + 4).then_some(())
        })
        .await;
        let mails_before = smtp.to("noc@acme.example").len();

        // The CPU drops: resolved, one notice.
        cpu(&sim, 10);
        eventually("cpu_high to resolve", SETTLE, || async {
            clock.advance(Duration::from_secs(5));
            let firing = alerts(&ops, "firing").await;
            (!firing.iter().any(|a| a["rule"] == "cpu_high")).then_some(())
        })
        .await;
        eventually("the resolved notice", SETTLE, || async {
            (hooks(&gateway, "cpu_high", "resolved").len() == 1
                && smtp.to("noc@acme.example").len() == mails_before + 1)
                .then_some(())
        })
        .await;
        assert_eq!(
            hooks(&gateway, "cpu_high", "firing").len(),
            1,
            "one firing notice for the incident"
        );

        // The agent goes away: agent_offline after a minute, once.
        running.stop().await.expect("the agent stops cleanly");
        eventually("agent_offline to fire", SETTLE, || async {
            clock.advance(Duration::from_secs(5));
            alerts(&ops, "firing")
                .await
                .into_iter()
                .find(|a| a["rule"] == "agent_offline")
        })
        .await;
        eventually("its notice", SETTLE, || async {
            (hooks(&gateway, "agent_offline", "firing").len() == 1).then_some(())
        })
        .await;
        let running = agent.start_with_clock(Arc::clone(&shared));
        eventually("agent_offline to resolve", SETTLE, || async {
            clock.advance(Duration::from_millis(500));
            let firing = alerts(&ops, "firing").await;
            (!firing.iter().any(|a| a["rule"] == "agent_offline")).then_some(())
        })
        .await;
        assert_eq!(hooks(&gateway, "agent_offline", "firing").len(), 1);
        let resolved = alerts(&ops, "resolved").await;
        assert!(
            resolved.iter().any(|a| a["rule"] == "cpu_high")
                && resolved.iter().any(|a| a["rule"] == "agent_offline"),
            "{resolved:?}"
        );
        running.stop().await.expect("the agent stops cleanly");
    })
    .await;
}
