//! Router backups on the controller: chunks assembled across batches (a link dropped between
//! them) and checked, a re-sent file ignored, a damaged one discarded, an unchanged export
//! stored once, downloads (exports redacted, binaries for operators only), the redacted diff,
//! tenant scoping, the backup job, and retention. Runs on SQLite, or on PostgreSQL when
//! `TIKFLEET_TEST_DATABASE_URL` is set.

mod common;

use common::{START, Tenant, TestApp, error_code, spawn_app};
use reqwest::StatusCode;
use serde_json::Value;
use tikfleet_controller::db::Db;
use tikfleet_controller::hub::HubStore as _;
use tikfleet_shared::record::{BackupChunk, BackupKind, OutboxRecord};
use tikfleet_shared::{AgentId, JobId, RouterId, UnixMillis};

const DAY: i64 = 86_400_000;

struct Site {
    tenant: Tenant,
    agent: AgentId,
    router: RouterId,
}

async fn site(app: &TestApp, name: &str) -> Site {
    let tenant = app.tenant(name).await;
    let agent = app.agent(&tenant, &format!("{name}-site")).await;
    let router = app
        .router(&tenant.operator, &agent.id, &format!("{name}-core"))
        .await;
    Site {
        tenant,
        agent: agent.id.parse().unwrap(),
        router: router["id"].as_str().unwrap().parse().unwrap(),
    }
}

/// Commits `records` as the agent's next outbox seqs, the way the hub does.
async fn commit(db: &Db, agent: AgentId, records: Vec<OutboxRecord>) {
    let from = db.records_committed(agent).await.unwrap();
    let batch: Vec<(u64, OutboxRecord)> = (from + 1..).zip(records).collect();
    let last = from + batch.len() as u64;
    assert_eq!(db.commit_records(agent, &batch).await.unwrap(), last);
}

/// `data` as chunks of `size` bytes (small, to exercise assembly).
fn chunks(
    job: JobId,
    router: RouterId,
    kind: BackupKind,
    at: i64,
    data: &[u8],
    size: usize,
) -> Vec<OutboxRecord> {
    let sha = ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec();
    let parts: Vec<&[u8]> = data.chunks(size).collect();
    let n = parts.len();
    let mut offset = 0;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let c = BackupChunk {
                job_id: job,
                router_id: router,
                kind,
                taken_at: UnixMillis(at),
                ros_version: "7.15.3 (stable)".into(),
                offset,
                total_size: data.len() as u64,
                sha256: sha.clone(),
                data: p.to_vec(),
                last: i + 1 == n,
            };
            offset += p.len() as u64;
            OutboxRecord::BackupChunk(c)
        })
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
