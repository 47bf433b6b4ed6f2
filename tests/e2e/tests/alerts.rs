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
//!
//! The router alerts, each in its own fleet: the simulator's memory load goes to 95 %
//! (`memory_low`), it refuses connections (`router_unreachable`, not before the rule's
//! `for_secs` since the router last answered) and it reboots (`reboot_detected`, its uptime
//! goes back). Each fires with one notice by email and one by webhook, stays at one through
//! minutes of evaluations, resolves when the simulator is back to normal with one notice
//! each way, and stays resolved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tikfleet_controller::api::validate::parse_time;
use tikfleet_controller::clock::{Clock as _, ManualClock, SharedClock};
use tikfleet_e2e::fleet::{
    Agent, AgentSettings, Api, Controller, HubPath, RunningAgent, SETTLE, Sim, add_router,
    connected, eventually, within,
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

// ---------------------------------------------------------------------------------------
// Router alerts from the simulator: memory_low, router_unreachable, reboot_detected.

const NOC: &str = "noc@acme.example";

/// One site for a router alert scenario: a simulated router, the controller, an agent
/// probing every 30 s of the controller's manual clock, and the tenant's alert notices going
/// to a local SMTP server and a webhook receiver.
struct Site {
    sim: Sim,
    ctl: Controller,
    ops: Api,
    smtp: SmtpServer,
    gateway: Receiver,
    running: Option<RunningAgent>,
    router: String,
}

impl Site {
    async fn start() -> Self {
        let sim = Sim::start(1).await;
        let ctl = Controller::start(HubPath::Direct).await;
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
                    "alerts": {"emails": [NOC], "webhook_url": gateway.url("/hook")},
                }),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        // The unreachable rule a little shorter than its default, to see it is honoured.
        let (st, v) = ops
            .put(
                &format!("/api/v1/tenants/{tenant}/alert-rules"),
                json!({"router_unreachable": {
                    "enabled": true, "severity": "critical", "for_secs": UNREACHABLE_FOR_SECS,
                }}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(
            v["router_unreachable"]["for_secs"], UNREACHABLE_FOR_SECS,
            "{v}"
        );
        let mut agent = Agent::new(&AgentSettings {
            probe_interval_secs: Some(30),
            ..AgentSettings::default()
        });
        agent.enroll(&ops, &tenant, "site-1").await;
        let shared: SharedClock = Arc::new(ctl.clock().clone());
        let running = agent.start_with_clock(shared);
        connected(&ops, &agent.id).await;
        let router = add_router(&ops, &sim, 0, &agent.id, "core-1").await;
        Self {
            sim,
            ctl,
            ops,
            smtp,
            gateway,
            running: Some(running),
            router,
        }
    }

    fn clock(&self) -> &ManualClock {
        self.ctl.clock()
    }

    fn faults(&self, patch: FaultsPatch) {
        tikfleet_sim::router::lock(&self.sim.running.router(0).faults).apply(patch);
    }

    /// The router as the API shows it.
    async fn router(&self) -> Value {
        let (st, v) = self
            .ops
            .get(&format!("/api/v1/routers/{}", self.router))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v
    }

    /// Health samples stored for the router (the clock starts at T0 and stays within a day).
    async fn samples(&self) -> Vec<Value> {
        let (st, v) = self
            .ops
            .get(&format!(
                "/api/v1/routers/{}/health?from=2026-01-01T00:00:00Z\
                 &to=2026-01-02T00:00:00Z&step=30",
                self.router
            ))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        v["points"].as_array().cloned().unwrap_or_default()
    }

    /// Moves the clock in 5-second steps until `rule` fires; returns the alert.
    async fn until_firing(&self, rule: &str) -> Value {
        eventually(&format!("{rule} to fire"), SETTLE, || async {
            self.clock().advance(Duration::from_secs(5));
            alerts(&self.ops, "firing")
                .await
                .into_iter()
                .find(|a| a["rule"] == rule)
        })
        .await
    }

    /// Moves the clock in 5-second steps until `rule` has no firing alert.
    async fn until_resolved(&self, rule: &str) {
        eventually(&format!("{rule} to resolve"), SETTLE, || async {
            self.clock().advance(Duration::from_secs(5));
            let firing = alerts(&self.ops, "firing").await;
            (!firing.iter().any(|a| a["rule"] == rule)).then_some(())
        })
        .await;
    }

    /// Moves the clock `total` forward in 5-second steps, with a round trip to the
    /// controller between steps so its evaluations (every 15 s) keep up; whether `rule` has
    /// a firing alert must stay `firing` throughout.
    async fn pass(&self, total: Duration, rule: &str, firing: bool) {
        let end = self.clock().now().saturating_add(total);
        while self.clock().now() < end {
            self.clock().advance(Duration::from_secs(5));
            let now = alerts(&self.ops, "firing").await;
            assert_eq!(
                now.iter().any(|a| a["rule"] == rule),
                firing,
                "{rule} firing should stay {firing}: {now:?}"
            );
        }
    }

    /// Moves the clock in 5-second steps until `n` more health samples are stored (probe
    /// rounds every 30 s: about `n` × 30 s and twice as many evaluations); whether `rule`
    /// has a firing alert must stay `firing` throughout.
    async fn samples_pass(&self, n: usize, rule: &str, firing: bool) {
        let before = self.samples().await.len();
        eventually(&format!("{n} more samples"), SETTLE, || async {
            self.clock().advance(Duration::from_secs(5));
            let now = alerts(&self.ops, "firing").await;
            assert_eq!(
                now.iter().any(|a| a["rule"] == rule),
                firing,
                "{rule} firing should stay {firing}: {now:?}"
            );
            (self.samples().await.len() >= before + n).then_some(())
        })
        .await;
    }

    /// The notices of `rule`'s alerts so far: `[firing, resolved]` by webhook and by email.
    fn notices(&self, rule: &str) -> ([usize; 2], [usize; 2]) {
        let hooks_of = |what| hooks(&self.gateway, rule, what).len();
        let mails = self.smtp.to(NOC);
        let mails_of = |resolved: bool| {
            mails
                .iter()
                .filter(|m| {
                    m.body.contains(&format!("rule {rule},"))
                        && m.header("subject").contains("Resolved:") == resolved
                })
                .count()
        };
        (
            [hooks_of("firing"), hooks_of("resolved")],
            [mails_of(false), mails_of(true)],
        )
    }

    /// Waits until `rule`'s notices are `[firing, resolved]` on both channels.
    async fn notices_are(&self, rule: &str, expected: [usize; 2]) {
        eventually(
            &format!("{rule}'s notices to be {expected:?} by webhook and email"),
            SETTLE,
            || async {
                let (hooks, mails) = self.notices(rule);
                (hooks == expected && mails == expected).then_some(())
            },
        )
        .await;
    }

    /// No reminder went out, every notice of `rule` is one of the incident's two, and the
    /// resolved alert is listed.
    async fn finish(mut self, rule: &str) {
        assert_eq!(self.notices(rule), ([1, 1], [1, 1]), "one notice each way");
        assert!(
            !self
                .smtp
                .to(NOC)
                .iter()
                .any(|m| m.header("subject").contains("Still firing")),
            "no reminder"
        );
        let resolved = alerts(&self.ops, "resolved").await;
        assert_eq!(
            resolved.iter().filter(|a| a["rule"] == rule).count(),
            1,
            "{resolved:?}"
        );
        if let Some(running) = self.running.take() {
            running.stop().await.expect("the agent stops cleanly");
        }
        self.ctl.stop().await;
    }
}

/// `router_unreachable`'s `for_secs` in these tests.
const UNREACHABLE_FOR_SECS: u64 = 90;

fn millis(at: &Value) -> i64 {
    parse_time("at", at.as_str().expect("a time"))
        .expect("an RFC 3339 time")
        .as_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_low_fires_and_resolves_with_one_notice_each() {
    within(Duration::from_secs(240), async {
        let site = Site::start().await;
        // A sample with plenty of memory free (the simulator's default load is 20 %): quiet.
        eventually("a first sample", SETTLE, || async {
            site.clock().advance(Duration::from_secs(5));
            (!site.samples().await.is_empty()).then_some(())
        })
        .await;
        site.samples_pass(2, "memory_low", false).await;

        // 95 % in use: 5 % free, under the 10 % threshold.
        site.faults(FaultsPatch {
            memory_load: Some(95),
            ..FaultsPatch::default()
        });
        let alert = site.until_firing("memory_low").await;
        assert_eq!(alert["severity"], "warning", "{alert}");
        assert_eq!(alert["router_id"], site.router.as_str(), "{alert}");
        assert!(
            alert["summary"].as_str().unwrap().contains("memory low"),
            "{alert}"
        );
        site.notices_are("memory_low", [1, 0]).await;
        // Four more samples of low memory (eight evaluations or so): no second notice.
        site.samples_pass(4, "memory_low", true).await;
        assert_eq!(site.notices("memory_low"), ([1, 0], [1, 0]));

        // Memory back to normal: resolved, one notice each way, and it stays so.
        site.faults(FaultsPatch {
            memory_load: Some(20),
            ..FaultsPatch::default()
        });
        site.until_resolved("memory_low").await;
        site.notices_are("memory_low", [1, 1]).await;
        site.samples_pass(4, "memory_low", false).await;
        site.finish("memory_low").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_unreachable_fires_after_for_secs_and_resolves_with_one_notice_each() {
    within(Duration::from_secs(240), async {
        let site = Site::start().await;
        let seen = eventually("the router to be online", SETTLE, || async {
            site.clock().advance(Duration::from_secs(5));
            let r = site.router().await;
            (r["status"] == "online").then_some(r)
        })
        .await;
        assert!(!seen["last_seen"].is_null(), "{seen}");

        // The router stops answering: new connections are refused and the open ones close
        // at their next command.
        site.faults(FaultsPatch {
            refuse: Some(true),
            drop_after: Some(1),
            ..FaultsPatch::default()
        });
        let down = eventually(
            "the agent to report the router unreachable",
            SETTLE,
            || async {
                site.clock().advance(Duration::from_secs(5));
                let r = site.router().await;
                (r["status"] == "unreachable").then_some(r)
            },
        )
        .await;
        let last_seen = millis(&down["last_seen"]);
        // Not before `for_secs` since it last answered; soon after (evaluations every 15 s).
        let alert = eventually("router_unreachable to fire", SETTLE, || async {
            let firing = alerts(&site.ops, "firing").await;
            let found = firing
                .into_iter()
                .find(|a| a["rule"] == "router_unreachable");
            if found.is_none() {
                site.clock().advance(Duration::from_secs(5));
            }
            found
        })
        .await;
        let started = millis(&alert["started_at"]);
        let for_ms = i64::try_from(UNREACHABLE_FOR_SECS * 1000).unwrap();
        assert!(
            started - last_seen >= for_ms,
            "fired {} ms after the router last answered, before for_secs: {alert}",
            started - last_seen
        );
        assert!(
            started - last_seen <= for_ms + 60_000,
            "fired {} ms after the router last answered: {alert}",
            started - last_seen
        );
        assert_eq!(alert["severity"], "critical", "{alert}");
        assert_eq!(alert["router_id"], site.router.as_str(), "{alert}");
        site.notices_are("router_unreachable", [1, 0]).await;
        site.pass(Duration::from_secs(120), "router_unreachable", true)
            .await;
        assert_eq!(site.notices("router_unreachable"), ([1, 0], [1, 0]));
        let subject = site
            .smtp
            .to(NOC)
            .iter()
            .map(|m| m.header("subject").to_owned())
            .find(|s| s.contains("unreachable"))
            .expect("the firing email");
        assert!(
            subject.contains("CRITICAL: router core-1 unreachable"),
            "{subject}"
        );

        // It answers again: resolved at the next evaluation after a probe gets through.
        site.faults(FaultsPatch {
            refuse: Some(false),
            drop_after: Some(0),
            ..FaultsPatch::default()
        });
        site.until_resolved("router_unreachable").await;
        assert_eq!(site.router().await["status"], "online");
        site.notices_are("router_unreachable", [1, 1]).await;
        site.pass(Duration::from_secs(120), "router_unreachable", false)
            .await;
        site.finish("router_unreachable").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_detected_fires_and_resolves_with_one_notice_each() {
    within(Duration::from_secs(240), async {
        let site = Site::start().await;
        // The router has been up for an hour (the simulator's uptime runs on real time).
        {
            let router = site.sim.running.router(0);
            let mut dev = tikfleet_sim::router::lock(&router.device);
            dev.boot = Instant::now()
                .checked_sub(Duration::from_secs(3600))
                .expect("an instant an hour ago");
        }
        eventually("a sample of the long uptime", SETTLE, || async {
            site.clock().advance(Duration::from_secs(5));
            let up = site.router().await["uptime_secs"].as_u64();
            up.is_some_and(|up| up >= 3600).then_some(())
        })
        .await;
        // Two more samples of it, and no reboot seen.
        site.samples_pass(2, "reboot_detected", false).await;

        // It reboots (and is back at once): the next sample's uptime is lower.
        site.sim.running.router(0).reboot(Some(Duration::ZERO));
        let alert = site.until_firing("reboot_detected").await;
        assert_eq!(alert["severity"], "warning", "{alert}");
        assert_eq!(alert["router_id"], site.router.as_str(), "{alert}");
        assert!(site.router().await["uptime_secs"].as_u64().unwrap() < 3600);
        site.notices_are("reboot_detected", [1, 0]).await;

        // The sample after it shows no reboot: resolved, and many evaluations later still
        // one notice each way.
        site.until_resolved("reboot_detected").await;
        site.notices_are("reboot_detected", [1, 1]).await;
        site.samples_pass(4, "reboot_detected", false).await;
        site.finish("reboot_detected").await;
    })
    .await;
}
