//! Restores on the controller: the restore job names the backup by id, size and SHA-256
//! (the file does not travel in the job, so any size works), and the hub's store serves the
//! stored file by byte range (any offset, parts of any size) to the agent of the backup's
//! router only: another agent of the same tenant, an agent of another tenant, a text export
//! and an unknown id all get nothing. Runs on SQLite, or on PostgreSQL when
//! `TIKFLEET_TEST_DATABASE_URL` is set.

mod common;

use std::time::Duration;

use common::{TestApp, commit, spawn_app};
use reqwest::StatusCode;
use serde_json::Value;
use tikfleet_controller::hub::HubStore as _;
use tikfleet_shared::job::JobOp;
use tikfleet_shared::record::{BackupChunk, BackupKind, OutboxRecord};
use tikfleet_shared::{AgentId, JobId, RouterId, UnixMillis};

const LIMIT: Duration = Duration::from_secs(60);

/// `data` as one file of `kind`, in parts of 64 KiB.
fn upload(job: JobId, router: RouterId, kind: BackupKind, data: &[u8]) -> Vec<OutboxRecord> {
    BackupChunk::split(
        job,
        router,
        kind,
        UnixMillis(1_767_225_600_000),
        "7.15.3 (stable)",
        data,
        64 * 1024,
    )
    .into_iter()
    .map(OutboxRecord::BackupChunk)
    .collect()
}

async fn backups(app: &TestApp, token: &str, router: RouterId) -> Vec<Value> {
    let (st, v) = app
        .get(token, &format!("/api/v1/routers/{router}/backups"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn restore_jobs_name_the_backup_and_only_its_agent_reads_it_by_range() {
    tokio::time::timeout(LIMIT, async {
        let app = spawn_app().await;
        let db = &app.t.db;
        let tenant = app.tenant("acme").await;
        let agent = app.agent(&tenant, "acme-site").await;
        let neighbour = app.agent(&tenant, "acme-other-site").await;
        let router: RouterId = app.router(&tenant.operator, &agent.id, "acme-core").await["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let other = app.tenant("globex").await;
        let stranger = app.agent(&other, "globex-site").await;
        let (agent, neighbour, stranger): (AgentId, AgentId, AgentId) = (
            agent.id.parse().unwrap(),
            neighbour.id.parse().unwrap(),
            stranger.id.parse().unwrap(),
        );

        // A binary backup over 3 MiB (what one job frame could never carry) and an export.
        let data: Vec<u8> = (0..3 * 1024 * 1024 + 12_345u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let job = JobId::new();
        let mut records = upload(job, router, BackupKind::Export, b"/system identity\n");
        records.extend(upload(job, router, BackupKind::Binary, &data));
        commit(db, agent, records).await;
        let list = backups(&app, &tenant.operator, router).await;
        let id_of = |kind: &str| {
            list.iter()
                .find(|b| b["kind"] == kind)
                .and_then(|b| b["id"].as_str())
                .unwrap_or_else(|| panic!("a {kind} backup in {list:?}"))
                .to_owned()
        };
        let (binary, export) = (id_of("binary"), id_of("export"));

        // The restore job names the backup; the file stays at the controller.
        let (st, v) = app
            .post_empty(
                &tenant.operator,
                &format!("/api/v1/backups/{binary}/restore"),
            )
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        let jobs = db.undelivered_jobs(agent).await.unwrap();
        let restore = jobs
            .iter()
            .find(|j| j.op.name() == "restore")
            .expect("the restore job");
        let JobOp::Restore {
            backup_id,
            data: carried,
            sha256,
            size,
            ..
        } = &restore.op
        else {
            unreachable!()
        };
        assert_eq!(backup_id.as_deref(), Some(binary.as_str()));
        assert!(carried.is_empty(), "the job does not carry the file");
        assert_eq!(*size, Some(data.len() as u64));
        assert_eq!(
            sha256.as_slice(),
            ring::digest::digest(&ring::digest::SHA256, &data).as_ref()
        );

        // Ranges at any offset, aligned or not, up to the end.
        let total = data.len() as u64;
        for (offset, max) in [
            (0u64, 255 * 1024),
            (1, 1000),
            (2, 7),
            (262_143, 256 * 1024),
            (total - 1, 4096),
            (total - 10, 3),
        ] {
            let part = db
                .backup_part(agent, &binary, offset, max)
                .await
                .unwrap()
                .expect("the router's agent reads its backup");
            assert_eq!(part.total, total);
            let end = (offset as usize + max).min(data.len());
            assert_eq!(
                part.data,
                &data[offset as usize..end],
                "offset {offset} max {max}"
            );
        }
        // The whole file, part after part.
        let mut joined = Vec::new();
        while (joined.len() as u64) < total {
            let part = db
                .backup_part(agent, &binary, joined.len() as u64, 255 * 1024)
                .await
                .unwrap()
                .unwrap();
            assert!(!part.data.is_empty() && part.data.len() <= 255 * 1024);
            joined.extend(part.data);
        }
        assert_eq!(joined, data);
        let end = db
            .backup_part(agent, &binary, total, 10)
            .await
            .unwrap()
            .unwrap();
        assert!(end.data.is_empty());

        // Nobody else's agent, no export, no made-up id.
        for other in [neighbour, stranger] {
            assert_eq!(
                db.backup_part(other, &binary, 0, 1024).await.unwrap(),
                None,
                "agent {other} read a backup of another agent's router"
            );
        }
        assert_eq!(db.backup_part(agent, &export, 0, 1024).await.unwrap(), None);
        assert_eq!(
            db.backup_part(agent, "not-an-id", 0, 1024).await.unwrap(),
            None
        );
        assert_eq!(
            db.backup_part(agent, &uuid::Uuid::now_v7().to_string(), 0, 1024)
                .await
                .unwrap(),
            None
        );
    })
    .await
    .expect("test timed out");
}
