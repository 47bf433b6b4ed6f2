//! A controller outage while the agent keeps working, end to end on ONE manual clock: the
//! real controller (SQLite or a fresh PostgreSQL database), a real agent (`tikfleet-agent
//! run`, probes every 30 s, an outbox that keeps at most [`CAP`] telemetry records) and a
//! simulated router.
//!
//! Jobs for three new subscribers reach the agent while the router refuses connections, so
//! they wait to retry; the controller stops; the router recovers and the jobs, the
//! reconciler and [`ROUNDS`] probe rounds run without it. When the controller is back,
//! every audit record the agent made (its `router_commands_total` metric) is in the
//! controller's audit log, the outage's telemetry stored is at most the cap, and what was
//! dropped is counted alike by the agent's and the controller's metrics.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tikfleet_controller::api::validate::parse_time;
use tikfleet_controller::clock::{Clock as _, SharedClock};
use tikfleet_e2e::fleet::{
    Agent, AgentSettings, Controller, HubPath, RunningAgent, SETTLE, Sim, add_router, connected,
    eventually, metric, plan, subscriber, within,
};
use tikfleet_sim::faults::FaultsPatch;

/// The agent's `[outbox] max_telemetry`.
const CAP: u64 = 5;
/// Probe rounds while the controller is down after its telemetry reached the cap (each
/// makes a host sample and a router one).
const ROUNDS: u64 = 16;

/// The agent's outbox and audit counters, from its metrics endpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Counters {
    /// Audit records made (router commands run) since the agent started.
    audit: f64,
    last_seq: f64,
    acked: f64,
    /// Records waiting for the controller's acknowledgement.
    waiting: f64,
    dropped: f64,
}

async fn counters(running: &RunningAgent) -> Counters {
    let text = running.metrics().await;
    let get = |name: &str| metric(&text, name).unwrap_or_else(|| panic!("{name} in\n{text}"));
    Counters {
        audit: get("tikfleet_agent_router_commands_total"),
        last_seq: get("tikfleet_agent_outbox_last_seq"),
        acked: get("tikfleet_agent_outbox_acked_seq"),
        waiting: get("tikfleet_agent_outbox_records"),
        dropped: get("tikfleet_agent_telemetry_dropped"),
    }
}

fn faults(sim: &Sim, patch: FaultsPatch) {
    tikfleet_sim::router::lock(&sim.running.router(0).faults).apply(patch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_survives_a_controller_outage_and_telemetry_stays_within_the_cap() {
    within(Duration::from_secs(240), async {
        let sim = Sim::start(1).await;
        let mut ctl = Controller::start(HubPath::Direct).await;
        let clock = ctl.clock().clone();
        let (tenant, mut ops) = ctl.tenant("acme").await;
        let mut agent = Agent::new(&AgentSettings {
            probe_interval_secs: Some(30),
            max_telemetry: Some(CAP),
            max_attempts: 20,
            ..AgentSettings::default()
        });
        agent.enroll(&ops, &tenant, "site-1").await;
        let running = agent.start_with_clock(Arc::new(clock.clone()) as SharedClock);
        connected(&ops, &agent.id).await;
        let router = add_router(&ops, &sim, 0, &agent.id, "core-1").await;
        let basic = plan(&ops, "basic", "10M/10M").await;
        eventually("a first health sample", SETTLE, || async {
            clock.advance(Duration::from_secs(5));
            let (_, r) = ops.get(&format!("/api/v1/routers/{router}")).await;
            (r["status"] == "online").then_some(())
        })
        .await;

        // The router refuses connections; three subscribers' jobs reach the agent and wait
        // to retry (the clock stands still).
        faults(
            &sim,
            FaultsPatch {
                refuse: Some(true),
                drop_after: Some(1),
                ..FaultsPatch::default()
            },
        );
        let names = ["alice", "bob", "carol"];
        for name in names {
            subscriber(&ops, &router, &basic, name, &format!("{name}-pw"), "pppoe").await;
        }
        let stopped_at = eventually(
            "the jobs and the desired state stored by the agent, its outbox acknowledged",
            SETTLE,
            || async {
                let jobs = ops.all("/api/v1/jobs").await;
                let (_, sync) = ops.get(&format!("/api/v1/routers/{router}/sync")).await;
                let c = counters(&running).await;
                (!jobs.is_empty()
                    && jobs.iter().all(|j| j["delivered"] == true)
                    && jobs.iter().all(|j| j["status"] != "succeeded")
                    && sync["stored_generation"] == sync["desired_generation"]
                    && c.acked == c.last_seq)
                    .then_some(c)
            },
        )
        .await;
        let jobs = ops.all("/api/v1/jobs").await.len();

        // The controller goes down.
        ctl.stop().await;
        let outage_from = clock.now();

        // The router recovers: the jobs' retries and the reconciler run without it.
        faults(
            &sim,
            FaultsPatch {
                refuse: Some(false),
                drop_after: Some(0),
                ..FaultsPatch::default()
            },
        );
        eventually("the subscribers on the router", SETTLE, || async {
            clock.advance(Duration::from_secs(1));
            let secrets = sim.menu(0, "/ppp/secret");
            let text = running.metrics().await;
            let done = metric(&text, "tikfleet_agent_jobs{status=\"succeeded\"}").unwrap_or(0.0);
            #[allow(clippy::cast_precision_loss)]
            let all_done = done >= jobs as f64;
            (names.iter().all(|n| secrets.contains_key(*n)) && all_done).then_some(())
        })
        .await;

        // Probe rounds until the outbox holds more telemetry than the cap (each round's
        // records are waited for before the clock moves again, so rounds do not merge) …
        eventually("telemetry beyond the cap", SETTLE, || async {
            let before = counters(&running).await;
            if before.dropped > stopped_at.dropped {
                return Some(());
            }
            clock.advance(Duration::from_secs(30));
            eventually("a probe round", SETTLE, || async {
                let c = counters(&running).await;
                (c.waiting + c.dropped > before.waiting + before.dropped).then_some(())
            })
            .await;
            None
        })
        .await;
        // … then ROUNDS more, each of which drops at least one record (its host sample or an
        // older one).
        for round in 0..ROUNDS {
            let before = counters(&running).await;
            clock.advance(Duration::from_secs(30));
            eventually(&format!("probe round {round}"), SETTLE, || async {
                (counters(&running).await.dropped > before.dropped).then_some(())
            })
            .await;
        }
        let during = counters(&running).await;
        assert!(
            during.audit > stopped_at.audit,
            "audit records made during the outage: {stopped_at:?} → {during:?}"
        );
        assert_eq!(
            during.acked, stopped_at.acked,
            "nothing acknowledged while down"
        );
        let dropped = during.dropped - stopped_at.dropped;
        #[allow(clippy::cast_precision_loss)]
        let at_least = ROUNDS as f64;
        assert!(
            dropped > at_least,
            "{ROUNDS} rounds of telemetry beyond a cap of {CAP}: {dropped} dropped"
        );

        // The controller is back: everything arrives (the reconnect backoff runs on the same
        // clock: move it along while waiting).
        ctl.restart().await;
        let outage_to = clock.now();
        ops.base.clone_from(&ctl.admin.base);
        eventually("the agent to reconnect", SETTLE, || async {
            clock.advance(Duration::from_millis(500));
            let (st, v) = ops.get(&format!("/api/v1/agents/{}", agent.id)).await;
            (st == StatusCode::OK && v["connected"] == true).then_some(())
        })
        .await;
        let after = eventually("the outbox acknowledged", SETTLE, || async {
            let c = counters(&running).await;
            (c.acked == c.last_seq).then_some(c)
        })
        .await;
        let done = ops.all_jobs_succeed(SETTLE).await;
        assert_eq!(done.len(), jobs);

        // Every audit record the agent made is in the controller's log, once.
        let (seqs, committed) = ctl.agent_audit_seqs(&agent.id).await;
        #[allow(clippy::cast_precision_loss)]
        let stored = seqs.len() as f64;
        assert_eq!(
            stored, after.audit,
            "agent-made audit records at the controller"
        );
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "each seq once");
        #[allow(clippy::cast_precision_loss)]
        let committed_f = committed as f64;
        assert_eq!(committed_f, after.last_seq, "every record committed");
        let audit = ops.audit().await;
        let by_agent: Vec<&Value> = audit
            .iter()
            // The agent's records (its enrollment, also under its name, is the controller's).
            .filter(|r| r["actor"] == "agent:site-1" && !r["router_id"].is_null())
            .collect();
        #[allow(clippy::cast_precision_loss)]
        let listed = by_agent.len() as f64;
        let actions: Vec<&str> = by_agent
            .iter()
            .map(|r| r["action"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            listed, after.audit,
            "the audit API lists them all: {actions:?}"
        );
        for name in names {
            let adds: Vec<&&Value> = by_agent
                .iter()
                .filter(|r| {
                    r["action"] == "/ppp/secret/add"
                        && r["status"] == "succeeded"
                        && r["params"]["name"] == name
                })
                .collect();
            assert_eq!(
                adds.len(),
                1,
                "{name}'s add, made during the outage: {adds:?}"
            );
            let at = parse_time("at", adds[0]["at"].as_str().expect("a time")).expect("RFC 3339");
            assert!(
                at >= outage_from && at < outage_to,
                "{name}'s add at {at:?}"
            );
        }

        // The outage's telemetry: at most the cap stored, the rest counted as dropped.
        let window = format!(
            "SELECT COUNT(*) FROM health_samples WHERE router_id = '{router}' \
             AND at >= {} AND at < {}",
            outage_from.as_millis(),
            outage_to.as_millis()
        );
        let samples = ctl.scalar(&window).await.unwrap_or(0);
        assert!(
            (1..=i64::try_from(CAP).unwrap()).contains(&samples),
            "{samples} router samples stored from the outage (cap {CAP})"
        );
        let (st, v) = ctl.admin.get("/metrics").await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let text = v.as_str().expect("the controller's metrics text");
        let at_controller = metric(text, "tikfleet_telemetry_dropped").expect("the drop count");
        assert_eq!(
            at_controller, after.dropped,
            "the controller counted every tombstone"
        );
        assert!(at_controller >= at_least);

        let out = running.stop().await.expect("the agent stops cleanly");
        assert!(out.contains("tikfleet-agent stopped:"), "{out}");
        ctl.stop().await;
    })
    .await;
}
