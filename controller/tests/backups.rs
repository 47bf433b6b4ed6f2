//! Router backups on the controller: chunks assembled across batches (a link dropped between
//! them) and checked, a re-sent file ignored, a damaged one discarded, an unchanged export
//! stored once, downloads (exports redacted, binaries for operators only), the redacted diff,
//! tenant scoping, the backup job, retention (with each tenant's numbers), the tenant's
//! backup settings API, and the schedule on the manual clock. Runs on SQLite, or on
//! PostgreSQL when `TIKFLEET_TEST_DATABASE_URL` is set.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{START, Site, Tenant, TestApp, commit, error_code, site, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tikfleet_controller::db::Db;
use tikfleet_shared::job::{JobStatus, JobUpdate};
use tikfleet_shared::record::{BackupChunk, BackupKind, OutboxRecord};
use tikfleet_shared::{JobId, RouterId, UnixMillis};

const DAY: i64 = 86_400_000;
const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

/// `data` as chunks of `size` bytes (small, to exercise assembly).
fn chunks(
    job: JobId,
    router: RouterId,
    kind: BackupKind,
    at: i64,
    data: &[u8],
    size: usize,
) -> Vec<OutboxRecord> {
    BackupChunk::split(
        job,
        router,
        kind,
        UnixMillis(at),
        "7.15.3 (stable)",
        data,
        size,
    )
    .into_iter()
    .map(OutboxRecord::BackupChunk)
    .collect()
}

fn export(date: &str, profile: &str) -> Vec<u8> {
    format!(
        "# {date} by RouterOS 7.15.3\n# software id = 5E1D-7A11\n/ppp secret\n\
         add name=alice password=hunter2 profile={profile} service=pppoe\n\
         /interface wireless security-profiles\n\
         set [ find default=yes ] wpa2-pre-shared-key=\"very secret\" mode=dynamic-keys\n"
    )
    .into_bytes()
}

async fn list(app: &TestApp, token: &str, router: RouterId) -> Vec<Value> {
    let (st, v) = app
        .get(token, &format!("/api/v1/routers/{router}/backups"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

async fn bytes(app: &TestApp, token: &str, path: &str) -> (StatusCode, String, Vec<u8>) {
    let resp = app
        .http
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, resp.bytes().await.unwrap().to_vec())
}

fn find<'a>(items: &'a [Value], job: JobId, kind: &str) -> &'a Value {
    items
        .iter()
        .find(|b| b["job_id"] == job.to_string() && b["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} backup of job {job}: {items:?}"))
}

#[tokio::test]
async fn backups_assemble_dedupe_download_and_diff() {
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let app = spawn_app().await;
        let db = &app.t.db;
        let a = site(&app, "acme").await;
        let other = site(&app, "other").await;

        // Job 1: an export in 7-byte chunks delivered over two batches (the link dropped in
        // between), and a binary.
        let job1 = JobId::new();
        let first = export("2026-01-01 00:00:00", "p1");
        let mut parts = chunks(job1, a.router, BackupKind::Export, START, &first, 7);
        let rest = parts.split_off(parts.len() / 2);
        commit(db, a.agent, parts).await;
        assert!(list(&app, &a.tenant.viewer, a.router).await.is_empty());
        let binary: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut batch = rest;
        batch.extend(chunks(
            job1,
            a.router,
            BackupKind::Binary,
            START,
            &binary,
            300,
        ));
        commit(db, a.agent, batch).await;
        // The job ran again after a crash: its files arrive again and change nothing.
        commit(
            db,
            a.agent,
            chunks(job1, a.router, BackupKind::Export, START, &first, 1000),
        )
        .await;

        // Job 2: the same configuration, another date line: unchanged.
        let job2 = JobId::new();
        let second = export("2026-01-02 00:00:00", "p1");
        commit(
            db,
            a.agent,
            chunks(job2, a.router, BackupKind::Export, START + DAY, &second, 50),
        )
        .await;
        // Job 3: a changed profile. Job 4: damaged in transit (wrong checksum): discarded.
        let job3 = JobId::new();
        let third = export("2026-01-03 00:00:00", "p2");
        commit(
            db,
            a.agent,
            chunks(
                job3,
                a.router,
                BackupKind::Export,
                START + 2 * DAY,
                &third,
                50,
            ),
        )
        .await;
        let job4 = JobId::new();
        let mut bad = chunks(
            job4,
            a.router,
            BackupKind::Export,
            START + 3 * DAY,
            &third,
            50,
        );
        if let Some(OutboxRecord::BackupChunk(c)) = bad.first_mut() {
            c.data[0] ^= 1;
        }
        commit(db, a.agent, bad).await;

        let items = list(&app, &a.tenant.viewer, a.router).await;
        assert_eq!(items.len(), 4, "{items:?}");
        let e1 = find(&items, job1, "export");
        assert_eq!(e1["size"], first.len());
        assert_eq!(e1["unchanged"], false);
        assert_eq!(e1["ros_version"], "7.15.3 (stable)");
        assert_eq!(find(&items, job2, "export")["unchanged"], true);
        assert_eq!(find(&items, job3, "export")["unchanged"], false);
        let b1 = find(&items, job1, "binary");
        assert_eq!(b1["size"], 1000);
        // Newest first.
        assert_eq!(items[0]["job_id"], job3.to_string());

        // Download: the export redacted, for viewers too; the binary for operators only.
        let e1_id = e1["id"].as_str().unwrap();
        let (st, ct, body) =
            bytes(&app, &a.tenant.viewer, &format!("/api/v1/backups/{e1_id}")).await;
        assert_eq!(st, StatusCode::OK);
        assert!(ct.starts_with("text/plain"), "{ct}");
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("password=<redacted> profile=p1"), "{text}");
        assert!(
            text.contains("wpa2-pre-shared-key=<redacted> mode"),
            "{text}"
        );
        assert!(
            !text.contains("hunter2") && !text.contains("very secret"),
            "{text}"
        );
        // The unchanged export downloads as the stored copy.
        let e2_id = find(&items, job2, "export")["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (st, _, body) = bytes(
            &app,
            &a.tenant.operator,
            &format!("/api/v1/backups/{e2_id}"),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        assert!(String::from_utf8(body).unwrap().contains("profile=p1"));

        let b1_id = b1["id"].as_str().unwrap();
        let (st, _, _) = bytes(&app, &a.tenant.viewer, &format!("/api/v1/backups/{b1_id}")).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        let (st, ct, body) = bytes(
            &app,
            &a.tenant.operator,
            &format!("/api/v1/backups/{b1_id}"),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(ct, "application/octet-stream");
        assert_eq!(body, binary);

        // Diff: the change shows, the secrets do not.
        let e3_id = find(&items, job3, "export")["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (st, _, body) = bytes(
            &app,
            &a.tenant.viewer,
            &format!("/api/v1/backups/{e3_id}/diff?against={e1_id}"),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        let diff = String::from_utf8(body).unwrap();
        assert!(
            diff.contains("-add name=alice password=<redacted> profile=p1 service=pppoe"),
            "{diff}"
        );
        assert!(
            diff.contains("+add name=alice password=<redacted> profile=p2 service=pppoe"),
            "{diff}"
        );
        assert!(
            !diff.contains("hunter2") && !diff.contains("very secret"),
            "{diff}"
        );
        let (st, v) = app
            .get(
                &a.tenant.viewer,
                &format!("/api/v1/backups/{b1_id}/diff?against={e1_id}"),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");

        // Another tenant sees none of it.
        let (st, v) = app
            .get(
                &other.tenant.operator,
                &format!("/api/v1/routers/{}/backups", a.router),
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
        assert_eq!(error_code(&v), "not_found");
        let (st, _, _) = bytes(
            &app,
            &other.tenant.operator,
            &format!("/api/v1/backups/{e1_id}"),
        )
        .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        // A record naming another agent's router is not attached.
        commit(
            db,
            other.agent,
            chunks(
                JobId::new(),
                a.router,
                BackupKind::Export,
                START,
                &first,
                100,
            ),
        )
        .await;
        assert_eq!(list(&app, &a.tenant.viewer, a.router).await.len(), 4);

        // Taking a backup: a job, for operators only; downloads are audited.
        let path = format!("/api/v1/routers/{}/backups", a.router);
        let (st, _) = app.post_empty(&a.tenant.viewer, &path).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        let (st, job) = app.post_empty(&a.tenant.operator, &path).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{job}");
        assert_eq!(job["kind"], "backup_now", "{job}");
        // Restoring: operators, binaries only, own tenant only.
        let restore = format!("/api/v1/backups/{b1_id}/restore");
        let (st, _) = app.post_empty(&a.tenant.viewer, &restore).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        let (st, _) = app.post_empty(&other.tenant.operator, &restore).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, v) = app
            .post_empty(
                &a.tenant.operator,
                &format!("/api/v1/backups/{e1_id}/restore"),
            )
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        let (st, job) = app.post_empty(&a.tenant.operator, &restore).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{job}");
        assert_eq!(job["kind"], "restore", "{job}");
        assert_eq!(job["router_id"], a.router.to_string(), "{job}");
        assert!(
            !job.to_string().contains("\"data\""),
            "the backup is not in the job's DTO"
        );

        let (st, audit) = app.get(&a.tenant.operator, "/api/v1/audit?limit=200").await;
        assert_eq!(st, StatusCode::OK, "{audit}");
        let actions: Vec<&str> = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["action"].as_str())
            .collect();
        for a in [
            "router.backup",
            "backup.download",
            "backup.diff",
            "backup.restore",
        ] {
            assert!(actions.contains(&a), "{a} not audited: {actions:?}");
        }
        assert!(!audit.to_string().contains("hunter2"));
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn retention_keeps_daily_and_monthly() {
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let app = spawn_app().await;
        let db = &app.t.db;
        let a = site(&app, "acme").await;
        // One changed export a day for 45 days (newest last).
        for d in 0..45 {
            let data = export(&format!("day {d}"), &format!("p{d}"));
            commit(
                db,
                a.agent,
                chunks(
                    JobId::new(),
                    a.router,
                    BackupKind::Export,
                    START + d * DAY,
                    &data,
                    4096,
                ),
            )
            .await;
        }
        // And one in each of three older months (uploaded late: order does not matter).
        for (i, d) in [-40i64, -70, -100].into_iter().enumerate() {
            let data = export(&format!("old {i}"), &format!("old{i}"));
            commit(
                db,
                a.agent,
                chunks(
                    JobId::new(),
                    a.router,
                    BackupKind::Export,
                    START + d * DAY,
                    &data,
                    4096,
                ),
            )
            .await;
        }
        assert_eq!(list(&app, &a.tenant.viewer, a.router).await.len(), 48);
        let deleted = db.apply_backup_retention().await.unwrap();
        let left = list(&app, &a.tenant.viewer, a.router).await;
        assert_eq!(left.len() as u64, 48 - deleted);
        // Kept: the 30 newest days (January 16 to February 14: their months' newest
        // backups are among them) and the newest of November, October and September.
        assert_eq!(deleted, 15);
        let mut newest: Vec<i64> = (15..45).map(|d| START + d * DAY).collect();
        newest.extend([-40i64, -70, -100].map(|d| START + d * DAY));
        let kept: Vec<String> = left
            .iter()
            .map(|b| b["taken_at"].as_str().unwrap().to_owned())
            .collect();
        for t in newest {
            let t = tikfleet_controller::api::validate::format_time(UnixMillis(t));
            assert!(kept.contains(&t), "{t} deleted");
        }
        // Every kept backup still downloads; running again deletes nothing.
        for b in &left {
            let id = b["id"].as_str().unwrap();
            let (st, _, _) = bytes(&app, &a.tenant.viewer, &format!("/api/v1/backups/{id}")).await;
            assert_eq!(st, StatusCode::OK);
        }
        assert_eq!(db.apply_backup_retention().await.unwrap(), 0);
    })
    .await
    .expect("test timed out");
}

/// Stores `n` changed daily exports of `router`, the newest at `START + (n - 1) days`.
async fn daily_exports(db: &Db, site: &Site, n: i64) {
    for d in 0..n {
        let data = export(&format!("day {d}"), &format!("p{d}"));
        commit(
            db,
            site.agent,
            chunks(
                JobId::new(),
                site.router,
                BackupKind::Export,
                START + d * DAY,
                &data,
                4096,
            ),
        )
        .await;
    }
}

#[tokio::test]
async fn retention_uses_the_tenants_numbers() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let app = spawn_app().await;
        let db = &app.t.db;
        let a = site(&app, "acme").await;
        let b = site(&app, "globex").await;
        let c = site(&app, "initech").await;
        // 2026-01-01 to 2026-02-14: 31 days of January, 14 of February.
        for s in [&a, &b, &c] {
            daily_exports(db, s, 45).await;
        }
        let put = |tenant: &Tenant, body: Value| {
            let path = format!("/api/v1/tenants/{}/backups", tenant.id);
            let token = tenant.operator.clone();
            let app = &app;
            async move {
                let (st, v) = app.put(&token, &path, body).await;
                assert_eq!(st, StatusCode::OK, "{v}");
            }
        };
        // acme: 3 days, no months; globex: 5 days and 2 months; initech: the defaults.
        put(&a.tenant, json!({"keep_daily": 3, "keep_monthly": 0})).await;
        put(&b.tenant, json!({"keep_daily": 5, "keep_monthly": 2})).await;
        let deleted = db.apply_backup_retention().await.unwrap();
        let taken = |items: Vec<Value>| -> Vec<String> {
            items
                .iter()
                .map(|b| b["taken_at"].as_str().unwrap().to_owned())
                .collect()
        };
        let day =
            |d: i64| tikfleet_controller::api::validate::format_time(UnixMillis(START + d * DAY));
        assert_eq!(
            taken(list(&app, &a.tenant.viewer, a.router).await),
            [day(44), day(43), day(42)]
        );
        // The 5 newest days (February's newest among them) and January's newest.
        assert_eq!(
            taken(list(&app, &b.tenant.viewer, b.router).await),
            [day(44), day(43), day(42), day(41), day(40), day(30)]
        );
        // Defaults: the 30 newest days (January 16 on, January's newest among them).
        assert_eq!(list(&app, &c.tenant.viewer, c.router).await.len(), 30);
        assert_eq!(deleted, 42 + 39 + 15);
        assert_eq!(db.apply_backup_retention().await.unwrap(), 0);
        // Widening the numbers later keeps what is left; narrowing deletes more.
        put(&a.tenant, json!({"keep_daily": 1, "keep_monthly": 0})).await;
        assert_eq!(db.apply_backup_retention().await.unwrap(), 2);
        assert_eq!(
            taken(list(&app, &a.tenant.viewer, a.router).await),
            [day(44)]
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn backup_settings_round_trip_validate_and_stay_in_their_tenant() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let app = spawn_app().await;
        let a = site(&app, "acme").await;
        let b = site(&app, "globex").await;
        let path = format!("/api/v1/tenants/{}/backups", a.tenant.id);

        let defaults = json!({
            "schedule": {"enabled": true, "interval_secs": 86400, "at": null, "window_secs": null},
            "keep_daily": 30,
            "keep_monthly": 12,
        });
        for token in [&a.tenant.viewer, &a.tenant.operator, &app.admin] {
            let (st, v) = app.get(token, &path).await;
            assert_eq!((st, &v), (StatusCode::OK, &defaults));
        }

        let settings = json!({
            "schedule": {"enabled": true, "interval_secs": 172800, "at": "03:30", "window_secs": 7200},
            "keep_daily": 14,
            "keep_monthly": 0,
        });
        let (st, v) = app.put(&a.tenant.viewer, &path, settings.clone()).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
        let (st, v) = app.put(&a.tenant.operator, &path, settings.clone()).await;
        assert_eq!((st, &v), (StatusCode::OK, &settings));
        let (st, v) = app.get(&a.tenant.viewer, &path).await;
        assert_eq!((st, &v), (StatusCode::OK, &settings));
        // Fields left out take their defaults; admins may set them too.
        let (st, v) = app
            .put(&app.admin, &path, json!({"schedule": {"enabled": false}}))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["schedule"]["enabled"], false);
        assert_eq!(v["schedule"]["interval_secs"], 86400);
        assert_eq!((&v["keep_daily"], &v["keep_monthly"]), (&json!(30), &json!(12)));

        // Each bad value is refused with a message naming its field; nothing changes.
        for (bad, field) in [
            (json!({"keep_daily": 0}), "keep_daily"),
            (json!({"keep_daily": 5000}), "keep_daily"),
            (json!({"keep_monthly": 1201}), "keep_monthly"),
            (json!({"schedule": {"interval_secs": 60}}), "schedule.interval_secs"),
            (json!({"schedule": {"interval_secs": 31 * 86400}}), "schedule.interval_secs"),
            (json!({"schedule": {"interval_secs": 7200, "at": "03:00"}}), "schedule.interval_secs"),
            (json!({"schedule": {"at": "24:00"}}), "schedule.at"),
            (json!({"schedule": {"at": "3:00"}}), "schedule.at"),
            (json!({"schedule": {"at": "03:00", "window_secs": 10}}), "schedule.window_secs"),
            (json!({"schedule": {"window_secs": 3600}}), "schedule.window_secs"),
        ] {
            let (st, v) = app.put(&a.tenant.operator, &path, bad.clone()).await;
            assert_eq!(
                (st, error_code(&v)),
                (StatusCode::BAD_REQUEST, "invalid_request"),
                "{bad}: {v}"
            );
            let message = v["error"]["message"].as_str().unwrap();
            assert!(message.contains(field), "{bad}: {message}");
        }
        for bad in [
            json!({"keep_daily": -1}),
            json!({"schedule": {"enabled": "yes"}}),
            json!({"keep_weekly": 4}),
        ] {
            let (st, v) = app.put(&a.tenant.operator, &path, bad.clone()).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
        }
        let (_, v) = app.get(&a.tenant.viewer, &path).await;
        assert_eq!(v["schedule"]["enabled"], false);

        // Another tenant's settings are not found, to read or to write.
        let (st, v) = app.get(&b.tenant.operator, &path).await;
        assert_eq!((st, error_code(&v)), (StatusCode::NOT_FOUND, "not_found"));
        let (st, _) = app.put(&b.tenant.operator, &path, settings.clone()).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (_, v) = app
            .get(&b.tenant.viewer, &format!("/api/v1/tenants/{}/backups", b.tenant.id))
            .await;
        assert_eq!(v, defaults, "globex keeps its own settings");

        // Audited; in the OpenAPI document.
        let (_, audit) = app.get(&a.tenant.operator, "/api/v1/audit?limit=200").await;
        let changes = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "tenant.backup_settings")
            .count();
        assert_eq!(changes, 2, "{audit}");
        let (st, doc) = app.get(&app.admin, "/api/v1/openapi.json").await;
        assert_eq!(st, StatusCode::OK);
        let ops = &doc["paths"]["/api/v1/tenants/{id}/backups"];
        assert!(ops["get"].is_object() && ops["put"].is_object(), "{ops}");
    })
    .await
    .expect("test timed out");
}

/// A router's `backup_now` jobs, newest first.
async fn backup_jobs(app: &TestApp, router: RouterId) -> Vec<Value> {
    let (st, v) = app
        .get(
            &app.admin,
            &format!("/api/v1/jobs?router_id={router}&kind=backup_now&limit=500"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

/// The agent reports each of the router's unfinished backup jobs done.
async fn finish_backups(app: &TestApp, site: &Site) {
    let now = tikfleet_controller::clock::Clock::now(&app.t.clock);
    let updates: Vec<OutboxRecord> = backup_jobs(app, site.router)
        .await
        .iter()
        .filter(|j| j["status"] == "queued")
        .map(|j| {
            OutboxRecord::JobUpdate(JobUpdate {
                job_id: j["id"].as_str().unwrap().parse().unwrap(),
                router_id: site.router,
                status: JobStatus::Succeeded,
                attempts: 1,
                progress: None,
                error: None,
                detail: None,
                at: UnixMillis(now.as_millis()),
            })
        })
        .collect();
    assert!(!updates.is_empty(), "no backup job to finish");
    commit(&app.t.db, site.agent, updates).await;
}

#[tokio::test]
async fn the_schedule_queues_one_backup_per_router_per_interval() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let app = spawn_app().await;
        let db = &app.t.db;
        let a = site(&app, "acme").await;
        let second: RouterId = app
            .router(&a.tenant.operator, &a.agent.to_string(), "acme-edge")
            .await["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let a2 = Site {
            tenant: Tenant {
                id: a.tenant.id.clone(),
                operator: a.tenant.operator.clone(),
                viewer: a.tenant.viewer.clone(),
            },
            agent: a.agent,
            router: second,
        };
        let off = site(&app, "globex").await;
        let (st, v) = app
            .put(
                &off.tenant.operator,
                &format!("/api/v1/tenants/{}/backups", off.tenant.id),
                json!({"schedule": {"enabled": false}}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");

        // A router never backed up gets a backup at once (the disabled tenant's none).
        assert_eq!(db.queue_due_backups().await.unwrap(), 2);
        assert_eq!(db.queue_due_backups().await.unwrap(), 0);
        assert!(backup_jobs(&app, off.router).await.is_empty());
        finish_backups(&app, &a).await;
        finish_backups(&app, &a2).await;

        // Then daily by default, counted from the last one.
        app.t.clock.advance(HOUR * 24 - MINUTE);
        assert_eq!(db.queue_due_backups().await.unwrap(), 0);
        app.t.clock.advance(MINUTE);
        assert_eq!(db.queue_due_backups().await.unwrap(), 2);
        let jobs = backup_jobs(&app, a.router).await;
        assert_eq!(jobs.len(), 2, "{jobs:?}");
        assert_eq!(jobs[0]["priority"], "bulk");
        assert_eq!(backup_jobs(&app, second).await.len(), 2);

        // None while one is unfinished, however long it takes; the disabled tenant none.
        assert_eq!(db.queue_due_backups().await.unwrap(), 0);
        app.t.clock.advance(HOUR * 24 * 3);
        assert_eq!(db.queue_due_backups().await.unwrap(), 0);
        assert!(backup_jobs(&app, off.router).await.is_empty());

        // The first router's job finishes (late): the next is due a day after the last was
        // queued, so at once; the second router's is still unfinished.
        finish_backups(&app, &a).await;
        assert_eq!(db.queue_due_backups().await.unwrap(), 1);
        assert_eq!(backup_jobs(&app, a.router).await.len(), 3);
        assert_eq!(backup_jobs(&app, second).await.len(), 2);

        // Another controller over the same database (or this one restarted) queues nothing
        // more; both evaluating at once queue one job between them.
        let other = Db::open(&app.t.url, app.t.key.clone(), Arc::new(app.t.clock.clone()))
            .await
            .unwrap();
        assert_eq!(other.queue_due_backups().await.unwrap(), 0);
        finish_backups(&app, &a).await;
        finish_backups(&app, &a2).await;
        app.t.clock.advance(HOUR * 24);
        let (x, y) = tokio::join!(db.queue_due_backups(), other.queue_due_backups());
        assert_eq!(x.unwrap() + y.unwrap(), 2);
        assert_eq!(backup_jobs(&app, a.router).await.len(), 4);
        assert_eq!(backup_jobs(&app, second).await.len(), 3);
        assert_eq!(other.queue_due_backups().await.unwrap(), 0);
        other.close().await;

        // A backup staff take restarts the period; a deleted router gets no more.
        finish_backups(&app, &a).await;
        app.t.clock.advance(HOUR * 12);
        let (st, v) = app
            .post_empty(
                &a.tenant.operator,
                &format!("/api/v1/routers/{}/backups", a.router),
            )
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        finish_backups(&app, &a).await;
        let (st, v) = app
            .delete(&a.tenant.operator, &format!("/api/v1/routers/{second}"))
            .await;
        assert!(st.is_success(), "{st} {v}");
        app.t.clock.advance(HOUR * 23);
        assert_eq!(db.queue_due_backups().await.unwrap(), 0);
        app.t.clock.advance(HOUR);
        assert_eq!(db.queue_due_backups().await.unwrap(), 1);
        assert_eq!(backup_jobs(&app, a.router).await.len(), 6);
        assert_eq!(backup_jobs(&app, second).await.len(), 3);

        // Every scheduled job is audited as the scheduler's.
        let (_, audit) = app.get(&a.tenant.operator, "/api/v1/audit?limit=200").await;
        let scheduled = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "router.backup" && r["actor"] == "scheduler")
            .count();
        assert_eq!(scheduled, 8, "{audit}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn the_schedule_keeps_its_time_of_day_and_window() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let app = spawn_app().await;
        let db = &app.t.db;
        // Created at midnight; backups daily from 03:00 UTC, started within an hour.
        let a = site(&app, "acme").await;
        let (st, v) = app
            .put(
                &a.tenant.operator,
                &format!("/api/v1/tenants/{}/backups", a.tenant.id),
                json!({"schedule": {"at": "03:00", "window_secs": 3600}}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        // The first backup is taken at once, whatever the time of day.
        assert_eq!(db.queue_due_backups().await.unwrap(), 1);
        finish_backups(&app, &a).await;
        app.t.clock.advance(HOUR * 3 - MINUTE);
        assert_eq!(db.queue_due_backups().await.unwrap(), 0);
        app.t.clock.advance(MINUTE * 2);
        assert_eq!(db.queue_due_backups().await.unwrap(), 1);
        finish_backups(&app, &a).await;
        app.t.clock.advance(HOUR * 12);
        assert_eq!(db.queue_due_backups().await.unwrap(), 0);
        // Day 2, 03:00: due again (the late minute of day 1 does not push it back).
        app.t.clock.set(UnixMillis(START + DAY + 3 * 3_600_000));
        assert_eq!(db.queue_due_backups().await.unwrap(), 1);
        finish_backups(&app, &a).await;
        // Day 3: the controller was down through the window; the backup waits for day 4.
        app.t.clock.set(UnixMillis(START + 2 * DAY + 4 * 3_600_000));
        assert_eq!(db.queue_due_backups().await.unwrap(), 0);
        app.t
            .clock
            .set(UnixMillis(START + 3 * DAY + 3 * 3_600_000 + 59 * 60_000));
        assert_eq!(db.queue_due_backups().await.unwrap(), 1);
        assert_eq!(backup_jobs(&app, a.router).await.len(), 4);
    })
    .await
    .expect("test timed out");
}
