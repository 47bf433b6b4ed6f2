//! Credential rotation and API lockdown at the controller: the endpoints queue jobs (operators
//! yes, viewers no, another tenant's router not found), lockdown takes the tenant's admin
//! networks, the rotation schedule runs on the manual clock, and a failed rotation raises one
//! alert. Runs on SQLite, or on PostgreSQL when `TIKFLEET_TEST_DATABASE_URL` is set.

mod common;

use std::time::Duration;

use common::{commit, error_code, site, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tikfleet_controller::db::Db;
use tikfleet_controller::hub::HubStore as _;
use tikfleet_shared::job::{JobOp, JobStatus, JobUpdate};
use tikfleet_shared::record::OutboxRecord;
use tikfleet_shared::{AgentId, ErrorCode, ErrorInfo, JobId, UnixMillis};

const DAY: Duration = Duration::from_secs(86_400);

async fn op_of(db: &Db, agent: AgentId, job: &Value) -> JobOp {
    let id: JobId = job["id"].as_str().unwrap().parse().unwrap();
    db.undelivered_jobs(agent)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.id == id)
        .expect("the job is queued for the agent")
        .op
}

async fn rotations_queued(db: &Db, agent: AgentId) -> usize {
    db.undelivered_jobs(agent)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.op == JobOp::RotateCredentials {})
        .count()
}

#[tokio::test]
async fn endpoints_queue_jobs_for_operators_of_the_tenant() {
    let app = spawn_app().await;
    let a = site(&app, "acme").await;
    let b = site(&app, "globex").await;
    let db = &app.t.db;
    let rotate = format!("/api/v1/routers/{}/rotate-credentials", a.router);
    let lockdown = format!("/api/v1/routers/{}/lockdown", a.router);

    let (st, job) = app.post_empty(&a.tenant.operator, &rotate).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["kind"], "rotate_credentials");
    assert_eq!(op_of(db, a.agent, &job).await, JobOp::RotateCredentials {});
    // The same idempotency key answers the same job.
    let body = json!({"idempotency_key": "rotate-1"});
    let (_, first) = app.post(&a.tenant.operator, &rotate, body.clone()).await;
    let (_, again) = app.post(&a.tenant.operator, &rotate, body).await;
    assert_eq!(first["id"], again["id"]);

    // Viewers may not; another tenant's router is not found.
    let (st, v) = app.post_empty(&a.tenant.viewer, &rotate).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, v) = app.post_empty(&b.tenant.operator, &rotate).await;
    assert_eq!((st, error_code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (st, _) = app.post_empty(&b.tenant.operator, &lockdown).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = app.post_empty(&a.tenant.viewer, &lockdown).await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // Lockdown: networks from the body, else the tenant's settings.
    let (st, job) = app
        .post(
            &a.tenant.operator,
            &lockdown,
            json!({"admin_networks": ["10.0.0.0/24"]}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{job}");
    assert_eq!(
        op_of(db, a.agent, &job).await,
        JobOp::Lockdown {
            admin_networks: vec!["10.0.0.0/24".into()]
        }
    );
    let security = format!("/api/v1/tenants/{}/security", a.tenant.id);
    let (st, v) = app.get(&a.tenant.viewer, &security).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v, json!({"rotation_days": 90, "admin_networks": []}));
    let settings = json!({"rotation_days": 30, "admin_networks": ["192.0.2.0/24", "2001:db8::1"]});
    let (st, _) = app.put(&a.tenant.viewer, &security, settings.clone()).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, v) = app
        .put(&a.tenant.operator, &security, settings.clone())
        .await;
    assert_eq!((st, &v), (StatusCode::OK, &settings));
    let (st, _) = app.get(&b.tenant.operator, &security).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, job) = app.post_empty(&a.tenant.operator, &lockdown).await;
    assert_eq!(
        op_of(db, a.agent, &job).await,
        JobOp::Lockdown {
            admin_networks: vec!["192.0.2.0/24".into(), "2001:db8::1".into()]
        }
    );
    // Bad networks are refused, in the body and in the settings.
    let (st, v) = app
        .post(
            &a.tenant.operator,
            &lockdown,
            json!({"admin_networks": ["10.0.0.0/33"]}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, _) = app
        .put(
            &a.tenant.operator,
            &security,
            json!({"rotation_days": 30, "admin_networks": ["everywhere"]}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn rotations_are_scheduled_on_the_clock() {
    let app = spawn_app().await;
    let a = site(&app, "acme").await;
    let db = &app.t.db;
    assert_eq!(db.queue_due_rotations().await.unwrap(), 0);
    app.t.clock.advance(DAY * 89);
    assert_eq!(db.queue_due_rotations().await.unwrap(), 0);
    app.t.clock.advance(DAY);
    assert_eq!(db.queue_due_rotations().await.unwrap(), 1);
    assert_eq!(rotations_queued(db, a.agent).await, 1);
    // Once queued, nothing more until the next period.
    assert_eq!(db.queue_due_rotations().await.unwrap(), 0);
    app.t.clock.advance(DAY * 89);
    assert_eq!(db.queue_due_rotations().await.unwrap(), 0);
    app.t.clock.advance(DAY);
    assert_eq!(db.queue_due_rotations().await.unwrap(), 1);
    assert_eq!(rotations_queued(db, a.agent).await, 2);
    // A rotation staff asked for restarts the period; rotation_days 0 stops the schedule.
    app.t.clock.advance(DAY * 10);
    let (st, _) = app
        .post_empty(
            &a.tenant.operator,
            &format!("/api/v1/routers/{}/rotate-credentials", a.router),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    app.t.clock.advance(DAY * 85);
    assert_eq!(db.queue_due_rotations().await.unwrap(), 0);
    let (st, _) = app
        .put(
            &a.tenant.operator,
            &format!("/api/v1/tenants/{}/security", a.tenant.id),
            json!({"rotation_days": 0, "admin_networks": []}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    app.t.clock.advance(DAY * 365);
    assert_eq!(db.queue_due_rotations().await.unwrap(), 0);
}

#[tokio::test]
async fn a_failed_rotation_raises_one_alert() {
    let app = spawn_app().await;
    let a = site(&app, "acme").await;
    let db = &app.t.db;
    let (st, v) = app
        .put(
            &a.tenant.operator,
            &format!("/api/v1/tenants/{}/notifications", a.tenant.id),
            json!({"alerts": {"emails": [], "webhook_url": "http://127.0.0.1:9/alerts"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, job) = app
        .post_empty(
            &a.tenant.operator,
            &format!("/api/v1/routers/{}/rotate-credentials", a.router),
        )
        .await;
    let job_id: JobId = job["id"].as_str().unwrap().parse().unwrap();
    let update = |status| {
        OutboxRecord::JobUpdate(JobUpdate {
            job_id,
            router_id: a.router,
            status,
            attempts: 1,
            progress: None,
            error: (status == JobStatus::Failed).then(|| ErrorInfo {
                code: ErrorCode::AuthenticationFailed,
                message: "invalid user name or password".into(),
                retryable: false,
            }),
            detail: None,
            at: UnixMillis(common::START),
        })
    };
    let url = app.t.url.clone();
    let alerts = || {
        let url = url.clone();
        async move {
            sqlx::any::install_default_drivers();
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
                .await
                .unwrap();
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM notifications WHERE kind = 'alert' \
                 AND dedupe_key LIKE 'alert:rotate_credentials:failed:%'",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap()
        }
    };
    commit(db, a.agent, vec![update(JobStatus::Running)]).await;
    assert_eq!(alerts().await, 0);
    commit(db, a.agent, vec![update(JobStatus::Failed)]).await;
    assert_eq!(alerts().await, 1);
    // Reported again (a resend after a crash, a re-queued job failing again): one alert.
    commit(db, a.agent, vec![update(JobStatus::Failed)]).await;
    assert_eq!(alerts().await, 1);
}
