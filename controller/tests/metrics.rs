//! The controller's Prometheus endpoint: admin tokens only, the OpenMetrics text, numbers
//! read from the database (agents, routers, subscribers by lifecycle status, jobs and their
//! latency histogram, notifications). Runs on SQLite, or on PostgreSQL when
//! `TIKFLEET_TEST_DATABASE_URL` is set (where `SUM` is NUMERIC: the casts are checked).

mod common;

use common::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn metrics_are_for_admins_and_count_the_fleet() {
    let app = spawn_app().await;
    let t = app.tenant("acme").await;
    let a = app.agent(&t, "site-1").await;
    let r = app.router(&t.operator, &a.id, "core-1").await;
    let plan = app.plan(&t.operator, "basic", "10M/10M").await;
    for name in ["alice", "bob"] {
        app.subscriber(&t.operator, &s(&r, "id"), &s(&plan, "id"), name, "pppoe")
            .await;
    }

    let (st, text) = app
        .raw(Method::GET, "/metrics", Some(&app.admin), None, Vec::new())
        .await;
    assert_eq!(st, StatusCode::OK, "{text}");
    for line in [
        "# TYPE tikfleet_agents gauge",
        "tikfleet_agents 1",
        "tikfleet_agents_connected 0",
        "tikfleet_routers{status=\"unknown\"} 1",
        "tikfleet_subscribers{status=\"active\"} 2",
        "tikfleet_jobs{status=\"queued\"} 2",
        "# TYPE tikfleet_job_latency_seconds histogram",
        "tikfleet_job_latency_seconds_count 0",
        "tikfleet_job_latency_seconds_bucket{le=\"+Inf\"} 0",
        "tikfleet_drift_open 0",
        "tikfleet_alerts_unsent 0",
        "tikfleet_alerts_firing{severity=\"critical\"} 0",
        "# EOF",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }

    for token in [&t.operator, &t.viewer] {
        let (st, _) = app
            .raw(Method::GET, "/metrics", Some(token), None, Vec::new())
            .await;
        assert_eq!(
            st,
            StatusCode::FORBIDDEN,
            "tenant tokens do not see fleet metrics"
        );
    }
    let (st, _) = app
        .raw(Method::GET, "/metrics", None, None, Vec::new())
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}
