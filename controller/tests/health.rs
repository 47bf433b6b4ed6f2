//! Router health at the controller: probe samples committed through the hub's storage
//! (`commit_records`), the health series over the API from raw samples and from rollups,
//! retention and downsampling on the manual clock, tenant scoping, versions on the router
//! and the outdated list. Runs on SQLite, or on PostgreSQL when
//! `TIKFLEET_TEST_DATABASE_URL` is set.

mod common;

use std::future::Future;
use std::time::Duration;

use common::{START, TestApp, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use serde_json::Value;
use tikfleet_controller::db::health::{HealthRetention, MaintenanceReport};
use tikfleet_controller::hub::HubStore as _;
use tikfleet_shared::error::{ErrorCode, ErrorInfo};
use tikfleet_shared::record::{
    InterfaceCounters, OutboxRecord, RouterSample, Telemetry, TelemetrySample, VersionSample,
};
use tikfleet_shared::{AgentId, RouterId, UnixMillis};

const LIMIT: Duration = Duration::from_secs(60);

async fn within<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out");
}

fn rfc3339(ms: i64) -> String {
    tikfleet_controller::api::validate::format_time(UnixMillis(ms))
}

fn sample(router: RouterId, at: i64, cpu: u8, free: u64) -> OutboxRecord {
    OutboxRecord::Telemetry(Telemetry {
        at: UnixMillis(at),
        sample: TelemetrySample::Router(RouterSample {
            router_id: router,
            cpu_load_percent: cpu,
            free_memory_bytes: free,
            total_memory_bytes: 1_000_000,
            uptime_secs: u64::try_from((at - START) / 1000).unwrap() + 100,
            free_disk_bytes: 500,
            total_disk_bytes: 1_000,
            interfaces: vec![
                InterfaceCounters {
                    name: "ether1".into(),
                    running: true,
                    rx_bytes: 10,
                    tx_bytes: 20,
                    rx_packets: 1,
                    tx_packets: 1,
                    rx_errors: 0,
                    tx_errors: 0,
                },
                InterfaceCounters {
                    name: "ether2".into(),
                    running: true,
                    rx_bytes: 1,
                    tx_bytes: 2,
                    rx_packets: 1,
                    tx_packets: 1,
                    rx_errors: 0,
                    tx_errors: 0,
                },
            ],
            active_ppp_sessions: 7,
            active_hotspot_sessions: 2,
            routeros_version: Some("7.15.3".into()),
        }),
    })
}

struct Site {
    agent: AgentId,
    router: RouterId,
    viewer: String,
    seq: u64,
}

impl Site {
    async fn new(app: &TestApp, name: &str) -> Self {
        let tenant = app.tenant(name).await;
        let agent = app.agent(&tenant, &format!("{name}-agent")).await;
        let router = app
            .router(&tenant.operator, &agent.id, &format!("{name}-core"))
            .await;
        Self {
            agent: agent.id.parse().unwrap(),
            router: router["id"].as_str().unwrap().parse().unwrap(),
            viewer: tenant.viewer,
            seq: 0,
        }
    }

    async fn commit(&mut self, app: &TestApp, records: Vec<OutboxRecord>) {
        let batch: Vec<(u64, OutboxRecord)> = records
            .into_iter()
            .map(|r| {
                self.seq += 1;
                (self.seq, r)
            })
            .collect();
        let acked = app.t.db.commit_records(self.agent, &batch).await.unwrap();
        assert_eq!(acked, self.seq);
    }

    async fn health(&self, app: &TestApp, token: &str, query: &str) -> (StatusCode, Value) {
        app.get(
            token,
            &format!("/api/v1/routers/{}/health?{query}", self.router),
        )
        .await
    }
}

/// One sample every 30 s from `from` for `count` samples, CPU cycling 10, 20, …, 90.
fn series(router: RouterId, from: i64, count: i64) -> Vec<OutboxRecord> {
    (0..count)
        .map(|i| {
            let cpu = u8::try_from(10 + (i % 9) * 10).unwrap();
            sample(
                router,
                from + i * 30_000,
                cpu,
                400_000 + u64::try_from(i).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn samples_are_stored_and_served_raw_with_the_router_status() {
    within(async {
        let app = spawn_app().await;
        let mut a = Site::new(&app, "acme").await;
        // Ten minutes of samples, then the clock is at their end.
        a.commit(&app, series(a.router, START, 20)).await;
        app.t.clock.set(UnixMillis(START + 600_000));
        let q = format!(
            "from={}&to={}&step=60",
            rfc3339(START),
            rfc3339(START + 600_000)
        );
        let (s, v) = a.health(&app, &a.viewer, &q).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["source"], "raw");
        assert_eq!(v["step"], 60);
        let points = v["points"].as_array().unwrap();
        assert_eq!(points.len(), 10, "{v}");
        // The first minute: cpu 10 and 20.
        assert_eq!(points[0]["samples"], 2);
        assert_eq!(points[0]["cpu_avg"], 15.0);
        assert_eq!(points[0]["cpu_max"], 20);
        assert_eq!(points[0]["mem_free_min"], 400_000);
        assert_eq!(points[0]["ppp_max"], 7);
        assert_eq!(points[0]["rx_bytes"], 11);
        assert_eq!(points[0]["tx_bytes"], 22);
        assert_eq!(points[0]["at"], rfc3339(START));

        // The router shows what the last sample said.
        let (s, r) = app
            .get(&a.viewer, &format!("/api/v1/routers/{}", a.router))
            .await;
        assert_eq!(s, StatusCode::OK, "{r}");
        assert_eq!(r["status"], "online");
        assert_eq!(r["ros_version"], "7.15.3");
        assert_eq!(r["last_seen"], rfc3339(START + 19 * 30_000));
        assert_eq!(r["uptime_secs"], 19 * 30 + 100);
        assert_eq!(r["version_warning"], Value::Null);

        // Unreachable: the status changes, last_seen stays.
        a.commit(
            &app,
            vec![OutboxRecord::Telemetry(Telemetry {
                at: UnixMillis(START + 700_000),
                sample: TelemetrySample::RouterUnreachable {
                    router_id: a.router,
                    error: ErrorInfo::new(ErrorCode::ConnectionRefused),
                },
            })],
        )
        .await;
        let (_, r) = app
            .get(&a.viewer, &format!("/api/v1/routers/{}", a.router))
            .await;
        assert_eq!(r["status"], "unreachable");
        assert_eq!(r["last_seen"], rfc3339(START + 19 * 30_000));

        // Bad queries.
        for q in [
            "step=0".to_owned(),
            "from=yesterday".to_owned(),
            format!("from={}&to={}", rfc3339(START + 1000), rfc3339(START)),
            "color=red".to_owned(),
        ] {
            let (s, v) = a.health(&app, &a.viewer, &q).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {v}");
            assert_eq!(v["error"]["code"], "invalid_request");
        }
    })
    .await;
}

#[tokio::test]
async fn retention_rolls_up_before_it_deletes_and_old_ranges_come_from_rollups() {
    within(async {
        let app = spawn_app().await;
        let mut a = Site::new(&app, "acme").await;
        // One hour of samples: 120, in twelve 5-minute buckets of ten.
        a.commit(&app, series(a.router, START, 120)).await;
        let retention = HealthRetention::default();
        app.t.clock.set(UnixMillis(START + 3_600_000));
        let r = app.t.db.health_maintenance(&retention).await.unwrap();
        assert_eq!(
            r,
            MaintenanceReport {
                rolled_up: 12,
                ..MaintenanceReport::default()
            }
        );
        // Idempotent: the buckets are rolled up once.
        let r = app.t.db.health_maintenance(&retention).await.unwrap();
        assert_eq!(r, MaintenanceReport::default());

        // Within the raw window a 5-minute step reads rollups; a 1-minute step reads raw.
        let range = format!("from={}&to={}", rfc3339(START), rfc3339(START + 3_600_000));
        let (_, v) = a
            .health(&app, &a.viewer, &format!("{range}&step=300"))
            .await;
        assert_eq!(v["source"], "rollup");
        let points = v["points"].as_array().unwrap();
        assert_eq!(points.len(), 12);
        assert!(points.iter().all(|p| p["samples"] == 10), "{v}");
        assert_eq!(points[0]["cpu_max"], 90);
        assert_eq!(points[0]["cpu_avg"], 46.0); // (10+…+90 + 10) / 10
        assert_eq!(points[0]["mem_free_min"], 400_000);
        let (_, raw) = a.health(&app, &a.viewer, &format!("{range}&step=60")).await;
        assert_eq!(raw["source"], "raw");
        assert_eq!(raw["points"].as_array().unwrap().len(), 60);

        // 49 hours later the raw samples are gone, the rollups serve even a 1-minute step
        // (rounded up to 5 minutes), and an hourly step aggregates twelve of them.
        app.t
            .clock
            .set(UnixMillis(START + 3_600_000 + 49 * 3_600_000));
        let r = app.t.db.health_maintenance(&retention).await.unwrap();
        assert_eq!(r.raw_deleted, 120);
        assert_eq!(r.rollups_deleted, 0);
        let (_, v) = a.health(&app, &a.viewer, &format!("{range}&step=60")).await;
        assert_eq!(v["source"], "rollup");
        assert_eq!(v["step"], 300);
        assert_eq!(v["points"].as_array().unwrap().len(), 12);
        let (_, v) = a
            .health(&app, &a.viewer, &format!("{range}&step=3600"))
            .await;
        let points = v["points"].as_array().unwrap();
        assert_eq!(points.len(), 1);
        assert_eq!(points[0]["samples"], 120);
        assert_eq!(points[0]["cpu_max"], 90);

        // After 90 days the rollups go too.
        app.t
            .clock
            .set(UnixMillis(START + 3_600_000 + 91 * 86_400_000));
        let r = app.t.db.health_maintenance(&retention).await.unwrap();
        assert_eq!(r.rollups_deleted, 12);
        let (_, v) = a
            .health(&app, &a.viewer, &format!("{range}&step=300"))
            .await;
        assert!(v["points"].as_array().unwrap().is_empty());
    })
    .await;
}

fn versions(router: RouterId, at: i64, ros: &str, update: Option<bool>, fw: &str) -> OutboxRecord {
    OutboxRecord::Telemetry(Telemetry {
        at: UnixMillis(at),
        sample: TelemetrySample::Versions(VersionSample {
            router_id: router,
            ros_version: Some(ros.into()),
            channel: Some("stable".into()),
            installed: Some(ros.into()),
            latest: update.map(|_| "7.16.2".into()),
            update_available: update,
            update_error: update
                .is_none()
                .then(|| "ERROR: could not resolve dns name".into()),
            firmware_current: Some(fw.into()),
            firmware_upgrade: Some(ros.into()),
            board: Some("RB5009UG+S+".into()),
        }),
    })
}

#[tokio::test]
async fn versions_show_on_the_router_and_outdated_routers_are_listed_per_tenant() {
    within(async {
        let app = spawn_app().await;
        let mut a = Site::new(&app, "acme").await;
        let mut b = Site::new(&app, "bolt").await;
        a.commit(
            &app,
            vec![versions(a.router, START, "7.15.3", Some(true), "7.14")],
        )
        .await;
        b.commit(
            &app,
            vec![versions(b.router, START, "7.16.2", Some(false), "7.16.2")],
        )
        .await;

        let (s, r) = app
            .get(&a.viewer, &format!("/api/v1/routers/{}", a.router))
            .await;
        assert_eq!(s, StatusCode::OK, "{r}");
        assert_eq!(r["ros_version"], "7.15.3");
        assert_eq!(r["ros_channel"], "stable");
        assert_eq!(r["ros_latest"], "7.16.2");
        assert_eq!(r["update_available"], true);
        assert_eq!(r["firmware_current"], "7.14");
        assert_eq!(r["firmware_upgrade"], "7.15.3");
        assert_eq!(r["firmware_outdated"], true);
        assert_eq!(r["board"], "RB5009UG+S+");

        let ids = |v: &Value| -> Vec<String> {
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned())
                .collect()
        };
        let (s, v) = app.get(&a.viewer, "/api/v1/routers/outdated").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(ids(&v), vec![a.router.to_string()]);
        let (_, v) = app.get(&b.viewer, "/api/v1/routers/outdated").await;
        assert!(ids(&v).is_empty(), "{v}");
        let (_, v) = app.get(&app.admin, "/api/v1/routers/outdated").await;
        assert_eq!(ids(&v), vec![a.router.to_string()]);

        // A failed update check is unknown, not outdated; an old RouterOS is flagged.
        b.commit(
            &app,
            vec![versions(b.router, START + 1000, "6.40.1", None, "6.40.1")],
        )
        .await;
        let (_, r) = app
            .get(&b.viewer, &format!("/api/v1/routers/{}", b.router))
            .await;
        assert_eq!(r["update_available"], Value::Null);
        assert!(r["update_error"].as_str().unwrap().contains("dns"));
        assert_eq!(r["firmware_outdated"], false);
        assert!(
            r["version_warning"].as_str().unwrap().contains("6.43"),
            "{r}"
        );
        let (_, v) = app.get(&b.viewer, "/api/v1/routers/outdated").await;
        assert_eq!(ids(&v), vec![b.router.to_string()]);

        // An older report does not overwrite a newer one.
        b.commit(
            &app,
            vec![versions(b.router, START, "7.16.2", Some(false), "7.16.2")],
        )
        .await;
        let (_, r) = app
            .get(&b.viewer, &format!("/api/v1/routers/{}", b.router))
            .await;
        assert_eq!(r["ros_version"], "6.40.1");
    })
    .await;
}

#[tokio::test]
async fn another_tenants_router_health_is_not_found_and_samples_of_foreign_routers_are_ignored() {
    within(async {
        let app = spawn_app().await;
        let mut a = Site::new(&app, "acme").await;
        let mut b = Site::new(&app, "bolt").await;
        a.commit(&app, series(a.router, START, 4)).await;
        // Agent B names A's router: not its own, so nothing is stored for it.
        b.commit(&app, vec![sample(a.router, START + 10_000, 99, 1)])
            .await;
        app.t.clock.set(UnixMillis(START + 600_000));
        let q = format!("from={}&step=30", rfc3339(START));
        let (s, v) = a.health(&app, &b.viewer, &q).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        assert_eq!(v["error"]["code"], "not_found");
        let (s, v) = a.health(&app, &a.viewer, &q).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let points = v["points"].as_array().unwrap();
        assert_eq!(points.len(), 4);
        assert!(points.iter().all(|p| p["cpu_max"] != 99), "{v}");
        let (s, _) = a.health(&app, &app.admin, &q).await;
        assert_eq!(s, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn samples_arriving_after_their_bucket_was_rolled_up_are_rolled_up_too() {
    within(async {
        let app = spawn_app().await;
        let mut a = Site::new(&app, "acme").await;
        let retention = HealthRetention::default();
        a.commit(&app, series(a.router, START, 120)).await;
        app.t.clock.set(UnixMillis(START + 3_600_000));
        let r = app.t.db.health_maintenance(&retention).await.unwrap();
        assert_eq!(r.rolled_up, 12);
        let range = format!(
            "from={}&to={}&step=300",
            rfc3339(START),
            rfc3339(START + 300_000)
        );
        let first = |v: &Value| v["points"][0].clone();

        // Two samples of the first bucket arrive an hour late (an agent was offline): the
        // next run rolls the bucket up again from all twelve of its raw samples.
        a.commit(
            &app,
            vec![
                sample(a.router, START + 5_000, 100, 1_000),
                sample(a.router, START + 6_000, 95, 2_000),
            ],
        )
        .await;
        let r = app.t.db.health_maintenance(&retention).await.unwrap();
        assert_eq!(r.late_rolled_up, 1, "{r:?}");
        assert_eq!(r.rolled_up, 0);
        let (_, v) = a.health(&app, &a.viewer, &range).await;
        assert_eq!(v["source"], "rollup");
        let p = first(&v);
        assert_eq!(p["samples"], 12, "{v}");
        assert_eq!(p["cpu_max"], 100);
        assert_eq!(p["mem_free_min"], 1_000);
        // Done with: the next run has nothing late.
        let r = app.t.db.health_maintenance(&retention).await.unwrap();
        assert_eq!(r.late_rolled_up, 0);

        // Two days on the first hour's raw samples are gone; one more sample of the first
        // bucket arrives: it is added to the rollup (not counted twice), then deleted.
        app.t.clock.set(UnixMillis(START + 50 * 3_600_000));
        let r = app.t.db.health_maintenance(&retention).await.unwrap();
        assert_eq!(r.raw_deleted, 122);
        a.commit(&app, vec![sample(a.router, START + 7_000, 99, 500)])
            .await;
        let r = app.t.db.health_maintenance(&retention).await.unwrap();
        assert_eq!(r.late_rolled_up, 1);
        assert_eq!(r.raw_deleted, 1);
        let (_, v) = a.health(&app, &a.viewer, &range).await;
        let p = first(&v);
        assert_eq!(p["samples"], 13, "{v}");
        assert_eq!(p["cpu_max"], 100);
        assert_eq!(p["mem_free_min"], 500);
        let r = app.t.db.health_maintenance(&retention).await.unwrap();
        assert_eq!(r, MaintenanceReport::default());
    })
    .await;
}

#[tokio::test]
async fn the_api_reads_raw_samples_within_the_configured_raw_window() {
    within(async {
        // Raw samples kept 72 hours instead of 48.
        let app = spawn_app_with(|s| s.with_health_raw(Duration::from_secs(72 * 3600))).await;
        let mut a = Site::new(&app, "acme").await;
        a.commit(&app, series(a.router, START, 120)).await;
        app.t.clock.set(UnixMillis(START + 60 * 3_600_000));
        let range = format!(
            "from={}&to={}&step=60",
            rfc3339(START),
            rfc3339(START + 3_600_000)
        );
        let (status, v) = a.health(&app, &a.viewer, &range).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["source"], "raw", "{v}");
        assert_eq!(v["points"].as_array().unwrap().len(), 60);

        // With the default 48 hours the same question is answered from rollups.
        let app = spawn_app().await;
        let mut b = Site::new(&app, "acme").await;
        b.commit(&app, series(b.router, START, 120)).await;
        app.t.clock.set(UnixMillis(START + 60 * 3_600_000));
        let (_, v) = b.health(&app, &b.viewer, &range).await;
        assert_eq!(v["source"], "rollup", "{v}");
    })
    .await;
}
