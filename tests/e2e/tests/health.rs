//! Health end to end on loopback: a simulated router whose CPU the test sets, a real agent
//! (`tikfleet-agent run`, probes every second) and the real controller (SQLite or a fresh
//! PostgreSQL database). The samples arrive through the outbox and the hub and are served by
//! `GET /routers/{id}/health`; the router shows its status and versions; another tenant
//! sees none of it.
//!
//! The agent's clock is the system's (`run` takes no injected clock), so the samples carry
//! real times and the query asks for the minutes around now.

use reqwest::StatusCode;
use tikfleet_controller::api::validate::format_time;
use tikfleet_e2e::fleet::{
    Agent, AgentSettings, Controller, HubPath, SETTLE, Sim, add_router, connected, eventually,
    within,
};
use tikfleet_shared::UnixMillis;
use tikfleet_sim::faults::FaultsPatch;

#[tokio::test]
async fn probe_samples_reach_the_health_api() {
    within(SETTLE * 2, async {
        let sim = Sim::start(1).await;
        tikfleet_sim::router::lock(&sim.running.router(0).faults).apply(FaultsPatch {
            cpu_load: Some(66),
            ..FaultsPatch::default()
        });
        let ctl = Controller::start(HubPath::Direct).await;
        let (tenant, ops) = ctl.tenant("acme").await;
        let (_, other) = ctl.tenant("bolt").await;
        let mut agent = Agent::new(&AgentSettings::default());
        // Probe every second (the configuration sits beside the data folder).
        let config = agent.data_dir().with_file_name("agent.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains("[probes]\nenabled = false\n"), "{text}");
        let text = text.replace(
            "[probes]\nenabled = false\n",
            "[probes]\ninterval_secs = 1\n",
        );
        std::fs::write(&config, text).unwrap();
        agent.enroll(&ops, &tenant, "site-1").await;
        let running = agent.start();
        connected(&ops, &agent.id).await;
        let router = add_router(&ops, &sim, 0, &agent.id, "core-1").await;

        let now = UnixMillis::from_system_time(std::time::SystemTime::now()).as_millis();
        let path = format!(
            "/api/v1/routers/{router}/health?from={}&to={}&step=60",
            format_time(UnixMillis(now - 600_000)),
            format_time(UnixMillis(now + 600_000)),
        );
        let series = eventually("a health sample", SETTLE, || async {
            let (status, v) = ops.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            (!v["points"].as_array().unwrap().is_empty()).then_some(v)
        })
        .await;
        assert_eq!(series["source"], "raw");
        let point = &series["points"][0];
        assert_eq!(point["cpu_max"], 66, "{series}");
        assert!(point["mem_total"].as_u64().unwrap() > 0);

        // The router: online, its version and the check made on connect.
        let r = eventually("the version check", SETTLE, || async {
            let (_, r) = ops.get(&format!("/api/v1/routers/{router}")).await;
            (!r["update_available"].is_null()).then_some(r)
        })
        .await;
        assert_eq!(r["status"], "online");
        assert_eq!(r["ros_version"], "7.16.2");
        assert_eq!(r["update_available"], false);
        assert_eq!(r["firmware_outdated"], false);
        assert!(!r["last_seen"].is_null());

        // Another tenant sees nothing.
        let (status, _) = other.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, v) = other.get("/api/v1/routers/outdated").await;
        assert!(v["items"].as_array().unwrap().is_empty());

        let out = running.stop().await.expect("the agent stops cleanly");
        assert!(out.contains("tikfleet-agent stopped:"), "{out}");
    })
    .await;
}
