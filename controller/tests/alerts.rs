//! Alert rules at the controller: telemetry, audit records and job updates committed through
//! the hub's storage (`commit_records`), agent sessions through `HubStore`, the rules
//! evaluated with `Db::evaluate_alerts` on the manual clock, and the alerts and their
//! notices checked through the API and `Db::alert_notices`: each fires once per incident
//! (one notice however many evaluations), reminds after `remind_after_secs` until
//! acknowledged, and resolves with one notice. Runs on SQLite, or on PostgreSQL when
//! `TIKFLEET_TEST_DATABASE_URL` is set.

mod common;

use std::future::Future;
use std::time::Duration;

use common::{START, Tenant, TestApp, error_code, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tikfleet_controller::db::Scope;
use tikfleet_controller::db::alerts::EvalReport;
use tikfleet_controller::hub::HubStore as _;
use tikfleet_shared::error::{ErrorCode, ErrorInfo};
use tikfleet_shared::job::{JobStatus, JobUpdate};
use tikfleet_shared::record::{
    AuditParams, AuditRecord, AuditStatus, HostSample, OutboxRecord, RouterSample, Telemetry,
    TelemetrySample,
};
use tikfleet_shared::{AgentId, RouterId, UnixMillis};

const LIMIT: Duration = Duration::from_secs(120);

async fn within<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out");
}

const MIN: i64 = 60_000;

fn sample(router: RouterId, at: i64, cpu: u8, free: u64, uptime: u64) -> OutboxRecord {
    OutboxRecord::Telemetry(Telemetry {
        at: UnixMillis(at),
        sample: TelemetrySample::Router(RouterSample {
            router_id: router,
            cpu_load_percent: cpu,
            free_memory_bytes: free,
            total_memory_bytes: 1_000_000,
            uptime_secs: uptime,
            free_disk_bytes: 500,
            total_disk_bytes: 1_000,
            interfaces: Vec::new(),
            active_ppp_sessions: 0,
            active_hotspot_sessions: 0,
            routeros_version: Some("7.15.3".into()),
        }),
    })
}

/// A host sample of `agent` at `at` (ms after START) with its outbox at `bytes` of `max`.
fn host(agent: AgentId, at: i64, bytes: u64, max: Option<u64>) -> OutboxRecord {
    OutboxRecord::Telemetry(Telemetry {
        at: UnixMillis(START + at),
        sample: TelemetrySample::Host(HostSample {
            agent_id: agent,
            cpu_load_percent: 5,
            free_memory_bytes: 1 << 30,
            total_memory_bytes: 2 << 30,
            uptime_secs: 3_600,
            free_disk_bytes: 10 << 30,
            total_disk_bytes: 20 << 30,
            outbox_records: bytes / 100,
            outbox_bytes: bytes,
            queued_jobs: 0,
            outbox_max_bytes: max,
            telemetry_dropped: max.map(|_| 0),
        }),
    })
}

struct Env {
    app: TestApp,
    tenant: Tenant,
    agent: AgentId,
    router: RouterId,
    seq: u64,
}

impl Env {
    /// A tenant with an agent, a router, and an alert webhook (nothing sends: the rows are
    /// what the tests check).
    async fn new(name: &str) -> Self {
        let app = spawn_app().await;
        let tenant = app.tenant(name).await;
        let agent = app.agent(&tenant, &format!("{name}-agent")).await;
        let router = app
            .router(&tenant.operator, &agent.id, &format!("{name}-core"))
            .await;
        let (s, v) = app
            .put(
                &tenant.operator,
                &format!("/api/v1/tenants/{}/notifications", tenant.id),
                json!({"alerts": {"webhook_url": "http://127.0.0.1:9/alerts"}}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        Self {
            app,
            tenant,
            agent: agent.id.parse().unwrap(),
            router: router["id"].as_str().unwrap().parse().unwrap(),
            seq: 0,
        }
    }

    async fn commit(&mut self, records: Vec<OutboxRecord>) {
        let batch: Vec<(u64, OutboxRecord)> = records
            .into_iter()
            .map(|r| {
                self.seq += 1;
                (self.seq, r)
            })
            .collect();
        let acked = self
            .app
            .t
            .db
            .commit_records(self.agent, &batch)
            .await
            .unwrap();
        assert_eq!(acked, self.seq);
    }

    /// Samples every 30 s in `[from, to]` (ms after START), uptime following the clock.
    async fn feed(&mut self, from: i64, to: i64, cpu: u8, free: u64) {
        let records = (0..)
            .map(|i| from + i * 30_000)
            .take_while(|at| *at <= to)
            .map(|at| {
                sample(
                    self.router,
                    START + at,
                    cpu,
                    free,
                    1_000 + u64::try_from(at / 1000).unwrap(),
                )
            })
            .collect();
        self.commit(records).await;
    }

    fn at(&self, ms: i64) {
        self.app.t.clock.set(UnixMillis(START + ms));
    }

    async fn eval(&self) -> EvalReport {
        let r = self.app.t.db.evaluate_alerts().await.unwrap();
        assert_eq!(r.failed_tenants, 0, "{r:?}");
        r
    }

    async fn alerts(&self, token: &str, query: &str) -> Vec<Value> {
        let (s, v) = self
            .app
            .get(token, &format!("/api/v1/alerts?{query}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["items"].as_array().unwrap().clone()
    }

    /// The one firing alert of `rule`.
    async fn firing(&self, rule: &str) -> Value {
        let items: Vec<Value> = self
            .alerts(&self.tenant.viewer, "state=firing")
            .await
            .into_iter()
            .filter(|a| a["rule"] == rule)
            .collect();
        assert_eq!(items.len(), 1, "{items:?}");
        items[0].clone()
    }

    async fn firing_count(&self) -> usize {
        self.alerts(&self.tenant.viewer, "state=firing").await.len()
    }

    /// The notices of an alert: key suffixes after `alert:{id}:` (`firing:webhook`, ...).
    async fn notices(&self, alert: &Value) -> Vec<String> {
        let id = alert["id"].as_str().unwrap();
        self.app
            .t
            .db
            .alert_notices(&Scope::Admin, id.parse().unwrap())
            .await
            .unwrap()
            .into_iter()
            .map(|(key, channel, _)| {
                assert_eq!(channel, "webhook");
                key.strip_prefix(&format!("alert:{id}:"))
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    async fn set_rules(&self, rules: Value) {
        let (s, v) = self
            .app
            .put(
                &self.tenant.operator,
                &format!("/api/v1/tenants/{}/alert-rules", self.tenant.id),
                rules,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
}

#[tokio::test]
async fn cpu_high_fires_once_reminds_until_acknowledged_and_resolves() {
    within(async {
        let mut e = Env::new("acme").await;
        e.set_rules(json!({"remind_after_secs": 600})).await;
        // 4.5 minutes of high CPU: not yet.
        e.feed(0, 270_000, 95, 500_000).await;
        e.at(270_000);
        assert_eq!(e.eval().await.fired, 0);
        assert_eq!(e.firing_count().await, 0);
        // Five minutes: fires.
        e.feed(300_000, 300_000, 96, 500_000).await;
        e.at(300_000);
        let r = e.eval().await;
        assert_eq!((r.fired, r.resolved), (1, 0), "{r:?}");
        let alert = e.firing("cpu_high").await;
        assert_eq!(alert["subject"], e.router.to_string());
        assert_eq!(alert["router_id"], e.router.to_string());
        assert_eq!(alert["severity"], "warning");
        assert!(alert["summary"].as_str().unwrap().contains("acme-core"));
        // Many evaluations of the same incident: still one alert, one notice.
        for step in 1..=20 {
            let now = 300_000 + step * 15_000;
            if step % 2 == 0 {
                e.feed(now, now, 97, 500_000).await;
            }
            e.at(now);
            let r = e.eval().await;
            assert_eq!((r.fired, r.resolved, r.reminders), (0, 0, 0), "{r:?}");
        }
        assert_eq!(e.firing_count().await, 1);
        assert_eq!(e.notices(&alert).await, ["firing:webhook"]);
        // Ten minutes after it fired: a reminder, once.
        e.feed(630_000, 900_000, 97, 500_000).await;
        e.at(900_000);
        assert_eq!(e.eval().await.reminders, 1);
        assert_eq!(e.eval().await.reminders, 0);
        assert_eq!(
            e.notices(&alert).await,
            ["firing:webhook", "reminder:1:webhook"]
        );
        // A viewer may not acknowledge; an operator may.
        let id = alert["id"].as_str().unwrap();
        let path = format!("/api/v1/alerts/{id}/acknowledge");
        let (s, v) = e.app.post_empty(&e.tenant.viewer, &path).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        let (s, v) = e.app.post_empty(&e.tenant.operator, &path).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["acknowledged_by"], "acme-operator");
        assert_eq!(v["state"], "firing");
        // Acknowledged: no more reminders, however long it fires.
        e.feed(930_000, 2_400_000, 98, 500_000).await;
        for now in [1_500_000, 2_400_000] {
            e.at(now);
            assert_eq!(e.eval().await.reminders, 0);
        }
        // CPU back to normal: resolved, with one notice.
        e.feed(2_430_000, 2_430_000, 20, 500_000).await;
        e.at(2_430_000);
        let r = e.eval().await;
        assert_eq!((r.fired, r.resolved), (0, 1), "{r:?}");
        assert_eq!(e.eval().await.resolved, 0);
        let (s, v) = e
            .app
            .get(&e.tenant.viewer, &format!("/api/v1/alerts/{id}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["state"], "resolved");
        assert_eq!(v["reminders"], 1);
        assert!(v["resolved_at"].is_string());
        assert_eq!(
            e.notices(&alert).await,
            ["firing:webhook", "reminder:1:webhook", "resolved:webhook"]
        );
        // A resolved alert cannot be acknowledged (this one already was: unchanged).
        let (s, _) = e.app.post_empty(&e.tenant.operator, &path).await;
        assert_eq!(s, StatusCode::OK);
        // The audit log has the alert's life.
        for action in ["alert.fired", "alert.acknowledged", "alert.resolved"] {
            let (s, v) = e
                .app
                .get(&e.tenant.viewer, &format!("/api/v1/audit?action={action}"))
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            assert_eq!(v["items"].as_array().unwrap().len(), 1, "{action}: {v}");
        }
        // A new incident is a new alert with its own notice.
        e.feed(2_460_000, 2_760_000, 99, 500_000).await;
        e.at(2_760_000);
        assert_eq!(e.eval().await.fired, 1);
        let again = e.firing("cpu_high").await;
        assert_ne!(again["id"], alert["id"]);
        assert_eq!(e.notices(&again).await, ["firing:webhook"]);
        assert_eq!(e.alerts(&e.tenant.viewer, "state=all").await.len(), 2);
        assert_eq!(e.alerts(&e.tenant.viewer, "state=resolved").await.len(), 1);
        assert_eq!(
            e.alerts(&e.tenant.viewer, "severity=critical").await.len(),
            0
        );
        let by_router = e
            .alerts(&e.tenant.viewer, &format!("router_id={}", e.router))
            .await;
        assert_eq!(by_router.len(), 2);
        let (s, v) = e.app.get(&e.tenant.viewer, "/api/v1/alerts?limit=1").await;
        assert_eq!(s, StatusCode::OK);
        let cursor = v["next_cursor"].as_str().unwrap().to_owned();
        let (s, v) = e
            .app
            .get(
                &e.tenant.viewer,
                &format!("/api/v1/alerts?limit=1&cursor={cursor}"),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["items"][0]["id"], again["id"]);
        let (s, v) = e
            .app
            .get(&e.tenant.viewer, "/api/v1/alerts?state=open")
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    })
    .await;
}

#[tokio::test]
async fn memory_low_and_reboot_follow_the_latest_samples() {
    within(async {
        let mut e = Env::new("acme").await;
        e.commit(vec![
            sample(e.router, START, 10, 500_000, 1_000),
            sample(e.router, START + 30_000, 10, 50_000, 1_030),
        ])
        .await;
        e.at(30_000);
        let r = e.eval().await;
        assert_eq!(r.fired, 1, "{r:?}");
        let mem = e.firing("memory_low").await;
        assert!(
            mem["summary"].as_str().unwrap().contains("5 % free"),
            "{mem}"
        );
        // A reboot: uptime went back.
        e.commit(vec![sample(e.router, START + 60_000, 10, 600_000, 5)])
            .await;
        e.at(60_000);
        let r = e.eval().await;
        assert_eq!((r.fired, r.resolved), (1, 1), "{r:?}");
        let reboot = e.firing("reboot_detected").await;
        assert_eq!(
            e.notices(&mem).await,
            ["firing:webhook", "resolved:webhook"]
        );
        assert_eq!(e.eval().await.fired, 0);
        // The next sample shows no reboot: resolved.
        e.commit(vec![sample(e.router, START + 90_000, 10, 600_000, 35)])
            .await;
        e.at(90_000);
        let r = e.eval().await;
        assert_eq!((r.fired, r.resolved), (0, 1), "{r:?}");
        assert_eq!(
            e.notices(&reboot).await,
            ["firing:webhook", "resolved:webhook"]
        );
        assert_eq!(e.firing_count().await, 0);
    })
    .await;
}

#[tokio::test]
async fn a_reboot_among_samples_that_arrive_together_is_not_missed() {
    within(async {
        let mut e = Env::new("acme").await;
        e.commit(vec![sample(e.router, START, 10, 500_000, 1_000)])
            .await;
        e.at(0);
        assert_eq!(e.eval().await.fired, 0);
        // The agent was offline (or the evaluation late): three samples at once, the router
        // rebooted between the first and the second; the latest two alone show no reboot.
        e.commit(vec![
            sample(e.router, START + 30_000, 10, 500_000, 1_030),
            sample(e.router, START + 60_000, 10, 500_000, 5),
            sample(e.router, START + 90_000, 10, 500_000, 35),
        ])
        .await;
        e.at(90_000);
        let r = e.eval().await;
        assert_eq!((r.fired, r.resolved), (1, 0), "{r:?}");
        let reboot = e.firing("reboot_detected").await;
        // The next evaluation has nothing new and the latest sample shows no reboot: resolved,
        // one notice each way; evaluating again changes nothing.
        e.at(105_000);
        let r = e.eval().await;
        assert_eq!((r.fired, r.resolved), (0, 1), "{r:?}");
        assert_eq!(
            e.notices(&reboot).await,
            ["firing:webhook", "resolved:webhook"]
        );
        let r = e.eval().await;
        assert_eq!((r.fired, r.resolved), (0, 0), "{r:?}");
        // A late sample (older than the last one looked at) with a higher uptime is not
        // compared: no reboot is made up from it.
        e.commit(vec![sample(e.router, START + 45_000, 10, 500_000, 1_045)])
            .await;
        e.commit(vec![sample(e.router, START + 120_000, 10, 500_000, 65)])
            .await;
        e.at(120_000);
        let r = e.eval().await;
        assert_eq!((r.fired, r.resolved), (0, 0), "{r:?}");
        // The first sample after a reboot keeps the alert firing until a later one arrives.
        e.commit(vec![sample(e.router, START + 150_000, 10, 500_000, 3)])
            .await;
        e.at(150_000);
        assert_eq!(e.eval().await.fired, 1);
        e.at(165_000);
        let r = e.eval().await;
        assert_eq!(
            (r.fired, r.resolved),
            (0, 0),
            "still the latest sample: {r:?}"
        );
        e.commit(vec![sample(e.router, START + 180_000, 10, 500_000, 33)])
            .await;
        e.at(180_000);
        assert_eq!(e.eval().await.resolved, 1);
        assert_eq!(e.firing_count().await, 0);
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_router_alerts_after_two_minutes() {
    within(async {
        let mut e = Env::new("acme").await;
        // (Two commits: within one batch only the router's latest status is stored.)
        e.commit(vec![sample(e.router, START, 10, 500_000, 1_000)])
            .await;
        e.commit(vec![OutboxRecord::Telemetry(Telemetry {
            at: UnixMillis(START + 30_000),
            sample: TelemetrySample::RouterUnreachable {
                router_id: e.router,
                error: ErrorInfo::new(ErrorCode::ConnectionRefused),
            },
        })])
        .await;
        e.at(90_000);
        assert_eq!(e.eval().await.fired, 0);
        e.at(121_000);
        assert_eq!(e.eval().await.fired, 1);
        let alert = e.firing("router_unreachable").await;
        assert_eq!(alert["severity"], "critical");
        e.at(200_000);
        assert_eq!(e.eval().await.fired, 0);
        // It answers again.
        e.commit(vec![sample(e.router, START + 210_000, 10, 500_000, 1_210)])
            .await;
        e.at(210_000);
        assert_eq!(e.eval().await.resolved, 1);
        assert_eq!(
            e.notices(&alert).await,
            ["firing:webhook", "resolved:webhook"]
        );
    })
    .await;
}

#[tokio::test]
async fn an_offline_agent_alerts_after_sixty_seconds() {
    within(async {
        let e = Env::new("acme").await;
        let db = &e.app.t.db;
        db.agent_connected(e.agent, UnixMillis(START), "0.1.0", &[])
            .await
            .unwrap();
        e.at(300_000);
        assert_eq!(e.eval().await.fired, 0);
        db.agent_disconnected(e.agent, UnixMillis(START + 300_000))
            .await
            .unwrap();
        e.at(359_000);
        assert_eq!(e.eval().await.fired, 0);
        e.at(361_000);
        assert_eq!(e.eval().await.fired, 1);
        let alert = e.firing("agent_offline").await;
        assert_eq!(alert["agent_id"], e.agent.to_string());
        assert_eq!(alert["subject"], e.agent.to_string());
        assert!(alert["router_id"].is_null());
        db.agent_connected(e.agent, UnixMillis(START + 400_000), "0.1.0", &[])
            .await
            .unwrap();
        e.at(400_000);
        assert_eq!(e.eval().await.resolved, 1);
        assert_eq!(
            e.notices(&alert).await,
            ["firing:webhook", "resolved:webhook"]
        );
    })
    .await;
}

#[tokio::test]
async fn a_dead_lettered_job_alerts_until_requeued() {
    within(async {
        let mut e = Env::new("acme").await;
        let (s, job) = e
            .app
            .post_empty(
                &e.tenant.operator,
                &format!("/api/v1/routers/{}/drift-check", e.router),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{job}");
        let job_id = job["id"].as_str().unwrap().to_owned();
        e.commit(vec![OutboxRecord::JobUpdate(JobUpdate {
            job_id: job_id.parse().unwrap(),
            router_id: e.router,
            status: JobStatus::Failed,
            attempts: 5,
            progress: None,
            error: Some(ErrorInfo::new(ErrorCode::ConnectionRefused)),
            detail: None,
            at: UnixMillis(START + 1_000),
        })])
        .await;
        e.at(2_000);
        assert_eq!(e.eval().await.fired, 1);
        assert_eq!(e.eval().await.fired, 0);
        let alert = e.firing("job_dead_lettered").await;
        assert_eq!(alert["subject"], job_id);
        assert_eq!(alert["router_id"], e.router.to_string());
        let (s, v) = e
            .app
            .post_empty(
                &e.tenant.operator,
                &format!("/api/v1/jobs/{job_id}/requeue"),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        e.at(3_000);
        assert_eq!(e.eval().await.resolved, 1);
        assert_eq!(
            e.notices(&alert).await,
            ["firing:webhook", "resolved:webhook"]
        );
    })
    .await;
}

#[tokio::test]
async fn an_authentication_failure_alerts_for_five_minutes() {
    within(async {
        let mut e = Env::new("acme").await;
        let tenant = e.tenant.id.parse().unwrap();
        let record = |seq: u64, at: i64, error: Option<ErrorInfo>| {
            OutboxRecord::Audit(AuditRecord {
                seq,
                at: UnixMillis(START + at),
                tenant_id: tenant,
                router_id: Some(e.router),
                job_id: None,
                generation: None,
                action: "/login".into(),
                params: AuditParams::new(),
                status: if error.is_some() {
                    AuditStatus::Failed
                } else {
                    AuditStatus::Succeeded
                },
                error,
                duration_ms: 3,
            })
        };
        // Another failure is not an authentication failure.
        let other = record(
            1,
            10_000,
            Some(ErrorInfo::new(ErrorCode::ConnectionRefused)),
        );
        let auth = record(
            2,
            20_000,
            Some(ErrorInfo::new(ErrorCode::AuthenticationFailed)),
        );
        e.commit(vec![other]).await;
        e.at(15_000);
        assert_eq!(e.eval().await.fired, 0);
        e.commit(vec![auth]).await;
        e.at(25_000);
        assert_eq!(e.eval().await.fired, 1);
        let alert = e.firing("auth_failure").await;
        assert_eq!(alert["severity"], "critical");
        e.at(20_000 + 5 * MIN - 1_000);
        assert_eq!(e.eval().await.resolved, 0);
        e.at(20_000 + 5 * MIN + 1_000);
        assert_eq!(e.eval().await.resolved, 1);
        assert_eq!(
            e.notices(&alert).await,
            ["firing:webhook", "resolved:webhook"]
        );
    })
    .await;
}

#[tokio::test]
async fn rules_and_alerts_are_the_tenants_own() {
    within(async {
        let mut e = Env::new("acme").await;
        let other = e.app.tenant("globex").await;
        // Rules: defaults, settable by operators only, checked.
        let path = format!("/api/v1/tenants/{}/alert-rules", e.tenant.id);
        let (s, v) = e.app.get(&e.tenant.viewer, &path).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["remind_after_secs"], 14_400);
        assert_eq!(v["cpu_high"]["threshold_percent"], 90);
        assert_eq!(v["agent_offline"]["for_secs"], 60);
        let (s, v) = e.app.put(&e.tenant.viewer, &path, json!({})).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        let (s, v) = e.app.get(&other.operator, &path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        let (s, v) = e
            .app
            .put(
                &e.tenant.operator,
                &path,
                json!({"memory_low": {"free_percent": 0}}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("free_percent")
        );
        let (s, v) = e
            .app
            .put(&e.tenant.operator, &path, json!({"bogus": 1}))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        error_code(&v);
        // Memory low rule made stricter fires; turned off resolves.
        e.set_rules(json!({"memory_low": {"free_percent": 60, "severity": "critical"}}))
            .await;
        e.commit(vec![sample(e.router, START, 10, 500_000, 1_000)])
            .await;
        assert_eq!(e.eval().await.fired, 1);
        let alert = e.firing("memory_low").await;
        assert_eq!(alert["severity"], "critical");
        let id = alert["id"].as_str().unwrap();
        // Another tenant's staff see nothing of it.
        let (s, v) = e.app.get(&other.operator, "/api/v1/alerts").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["items"], json!([]));
        let (s, v) = e
            .app
            .get(&other.viewer, &format!("/api/v1/alerts/{id}"))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        let (s, v) = e
            .app
            .post_empty(&other.operator, &format!("/api/v1/alerts/{id}/acknowledge"))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        // Admins see every tenant's.
        let (s, v) = e.app.get(&e.app.admin, "/api/v1/alerts").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["items"].as_array().unwrap().len(), 1);
        e.set_rules(json!({"memory_low": {"enabled": false}})).await;
        assert_eq!(e.eval().await.resolved, 1);
        assert_eq!(e.firing_count().await, 0);
        // Acknowledging a resolved alert is a conflict.
        let (s, v) = e
            .app
            .post_empty(
                &e.tenant.operator,
                &format!("/api/v1/alerts/{id}/acknowledge"),
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
    })
    .await;
}

#[tokio::test]
async fn the_alert_task_evaluates_on_the_clock() {
    within(async {
        let mut e = Env::new("acme").await;
        let task = tikfleet_controller::alerts::AlertTask::start(
            e.app.t.db.clone(),
            std::sync::Arc::new(e.app.t.clock.clone()),
            tikfleet_controller::alerts::EVAL_INTERVAL,
        );
        e.commit(vec![sample(e.router, START, 10, 10_000, 1_000)])
            .await;
        // The task's next run is 15 s on: move the clock until it has fired (polling).
        let mut fired = false;
        for _ in 0..200 {
            e.app.t.clock.advance(Duration::from_secs(15));
            if e.firing_count().await == 1 {
                fired = true;
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(fired, "the task never evaluated");
        task.shutdown().await;
        assert_eq!(e.firing("memory_low").await["rule"], "memory_low");
    })
    .await;
}

#[tokio::test]
async fn outbox_near_cap_fires_once_holds_while_offline_and_resolves() {
    within(async {
        let mut e = Env::new("acme").await;
        let db = e.app.t.db.clone();
        db.agent_connected(e.agent, UnixMillis(START), "0.1.0", &[])
            .await
            .unwrap();
        // 79.9 % of the cap: not yet; an agent that does not report its cap: never.
        e.commit(vec![host(e.agent, 0, 799_999, Some(1_000_000))])
            .await;
        e.at(1_000);
        assert_eq!(e.eval().await.fired, 0);
        e.commit(vec![host(e.agent, 30_000, 999_999, None)]).await;
        e.at(31_000);
        assert_eq!(e.eval().await.fired, 0);
        // 80 %: fires, about the agent.
        e.commit(vec![host(e.agent, 60_000, 800_000, Some(1_000_000))])
            .await;
        e.at(61_000);
        let r = e.eval().await;
        assert_eq!((r.fired, r.resolved), (1, 0), "{r:?}");
        let alert = e.firing("outbox_near_cap").await;
        assert_eq!(alert["agent_id"], e.agent.to_string());
        assert_eq!(alert["subject"], e.agent.to_string());
        assert!(alert["router_id"].is_null());
        assert_eq!(alert["severity"], "warning");
        let summary = alert["summary"].as_str().unwrap();
        assert!(
            summary.contains("acme-agent") && summary.contains("80 %"),
            "{summary}"
        );
        // More samples near the cap, many evaluations: one alert, one notice. An older
        // sample arriving late (below the cap) does not count over the newer one.
        for step in 1..=10 {
            let now = 61_000 + step * 15_000;
            if step % 2 == 0 {
                e.commit(vec![host(e.agent, now - 500, 900_000, Some(1_000_000))])
                    .await;
            }
            e.at(now);
            let r = e.eval().await;
            assert_eq!((r.fired, r.resolved), (0, 0), "{r:?}");
        }
        e.commit(vec![host(e.agent, 5_000, 0, Some(1_000_000))])
            .await;
        assert_eq!(e.eval().await.resolved, 0);
        // The agent goes offline: agent_offline fires, the outbox alert keeps its state
        // (no resolve now, no second firing when the agent is back with the same figures).
        let off = 300_000;
        db.agent_disconnected(e.agent, UnixMillis(START + off))
            .await
            .unwrap();
        for now in [off + 61_000, off + 3_600_000, off + 86_400_000] {
            e.at(now);
            let r = e.eval().await;
            assert_eq!(r.resolved, 0, "{r:?}");
        }
        assert_eq!(e.firing("agent_offline").await["rule"], "agent_offline");
        let back = off + 86_400_000 + 1_000;
        db.agent_connected(e.agent, UnixMillis(START + back), "0.1.0", &[])
            .await
            .unwrap();
        e.at(back);
        let r = e.eval().await;
        assert_eq!((r.fired, r.resolved), (0, 1), "{r:?}");
        assert_eq!(e.firing("outbox_near_cap").await["id"], alert["id"]);
        // The backlog drains: below the cap, resolved with one notice.
        e.commit(vec![host(e.agent, back + 30_000, 790_000, Some(1_000_000))])
            .await;
        e.at(back + 31_000);
        let r = e.eval().await;
        assert_eq!((r.fired, r.resolved), (0, 1), "{r:?}");
        assert_eq!(e.eval().await.resolved, 0);
        assert_eq!(e.firing_count().await, 0);
        // (The day offline was one incident still firing: one reminder, after 4 hours.)
        assert_eq!(
            e.notices(&alert).await,
            ["firing:webhook", "reminder:1:webhook", "resolved:webhook"]
        );
        // A revoked agent is not watched.
        e.commit(vec![host(e.agent, back + 60_000, 990_000, Some(1_000_000))])
            .await;
        e.at(back + 61_000);
        assert_eq!(e.eval().await.fired, 1);
        let (s, v) = e
            .app
            .post_empty(
                &e.tenant.operator,
                &format!("/api/v1/agents/{}/revoke", e.agent),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        e.at(back + 62_000);
        assert_eq!(e.eval().await.resolved, 1);
    })
    .await;
}

#[tokio::test]
async fn outbox_near_cap_rule_is_the_tenants_own() {
    within(async {
        let mut e = Env::new("acme").await;
        let other = e.app.tenant("globex").await;
        let other_agent: AgentId = e
            .app
            .agent(&other, "globex-agent")
            .await
            .id
            .parse()
            .unwrap();
        // Defaults, validation.
        let path = format!("/api/v1/tenants/{}/alert-rules", e.tenant.id);
        let (s, v) = e.app.get(&e.tenant.viewer, &path).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            v["outbox_near_cap"],
            json!({"enabled": true, "severity": "warning", "percent": 80})
        );
        for bad in [json!(0), json!(101)] {
            let (s, v) = e
                .app
                .put(
                    &e.tenant.operator,
                    &path,
                    json!({"outbox_near_cap": {"percent": bad}}),
                )
                .await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("outbox_near_cap.percent"),
                "{v}"
            );
        }
        let (s, v) = e
            .app
            .put(
                &e.tenant.operator,
                &path,
                json!({"outbox_near_cap": {"percent": 80, "window": 1}}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        // A stricter percentage: 85 % is not near a 90 % threshold.
        e.set_rules(json!({"outbox_near_cap": {"percent": 90, "severity": "critical"}}))
            .await;
        let (_, v) = e.app.get(&e.tenant.viewer, &path).await;
        assert_eq!(v["outbox_near_cap"]["percent"], 90);
        // acme's session also claims a sample of globex's agent: ignored.
        e.commit(vec![
            host(e.agent, 0, 850_000, Some(1_000_000)),
            host(other_agent, 0, 990_000, Some(1_000_000)),
        ])
        .await;
        e.at(1_000);
        assert_eq!(e.eval().await.fired, 0);
        e.commit(vec![host(e.agent, 30_000, 950_000, Some(1_000_000))])
            .await;
        e.at(31_000);
        assert_eq!(e.eval().await.fired, 1);
        let alert = e.firing("outbox_near_cap").await;
        assert_eq!(alert["severity"], "critical");
        // globex has no alert and sees none of acme's.
        let (s, v) = e.app.get(&other.operator, "/api/v1/alerts").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["items"], json!([]));
        let (s, v) = e
            .app
            .get(
                &other.viewer,
                &format!("/api/v1/alerts/{}", alert["id"].as_str().unwrap()),
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        // globex's own agent near its cap alerts globex only.
        let acked = e
            .app
            .t
            .db
            .commit_records(
                other_agent,
                &[(1, host(other_agent, 40_000, 990_000, Some(1_000_000)))],
            )
            .await
            .unwrap();
        assert_eq!(acked, 1);
        e.at(41_000);
        assert_eq!(e.eval().await.fired, 1);
        let (_, v) = e.app.get(&other.viewer, "/api/v1/alerts").await;
        assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v["items"][0]["agent_id"], other_agent.to_string());
        assert_eq!(v["items"][0]["severity"], "warning");
        assert_eq!(e.firing_count().await, 1);
        // Turned off: acme's resolves, globex's stays.
        e.set_rules(json!({"outbox_near_cap": {"enabled": false}}))
            .await;
        assert_eq!(e.eval().await.resolved, 1);
        assert_eq!(e.firing_count().await, 0);
        let (_, v) = e
            .app
            .get(&other.viewer, "/api/v1/alerts?state=firing")
            .await;
        assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    })
    .await;
}

#[tokio::test]
async fn agent_disk_low_follows_the_latest_host_sample() {
    within(async {
        let mut e = Env::new("acme").await;
        let agent = e.agent;
        let disk = move |at: i64, free: u64, total: u64| {
            let mut r = host(agent, at, 0, Some(1_000_000));
            if let OutboxRecord::Telemetry(Telemetry {
                sample: TelemetrySample::Host(h),
                ..
            }) = &mut r
            {
                (h.free_disk_bytes, h.total_disk_bytes) = (free, total);
            }
            r
        };
        let (s, v) = e
            .app
            .get(
                &e.tenant.viewer,
                &format!("/api/v1/tenants/{}/alert-rules", e.tenant.id),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            v["agent_disk_low"],
            json!({"enabled": true, "severity": "warning", "free_percent": 10})
        );
        // 10 % free is not under 10 %; an unknown disk (total 0) is not checked.
        e.commit(vec![disk(0, 100, 1_000)]).await;
        e.at(1_000);
        assert_eq!(e.eval().await.fired, 0);
        e.commit(vec![disk(30_000, 0, 0)]).await;
        e.at(31_000);
        assert_eq!(e.eval().await.fired, 0);
        e.commit(vec![disk(60_000, 99, 1_000)]).await;
        e.at(61_000);
        assert_eq!(e.eval().await.fired, 1);
        assert_eq!(e.eval().await.fired, 0);
        let alert = e.firing("agent_disk_low").await;
        assert_eq!(alert["agent_id"], e.agent.to_string());
        assert!(
            alert["summary"].as_str().unwrap().contains("9 % free"),
            "{alert}"
        );
        e.commit(vec![disk(90_000, 500, 1_000)]).await;
        e.at(91_000);
        assert_eq!(e.eval().await.resolved, 1);
        assert_eq!(
            e.notices(&alert).await,
            ["firing:webhook", "resolved:webhook"]
        );
        let (s, v) = e
            .app
            .put(
                &e.tenant.operator,
                &format!("/api/v1/tenants/{}/alert-rules", e.tenant.id),
                json!({"agent_disk_low": {"free_percent": 100}}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    })
    .await;
}
