//! Backups end to end on loopback: the real controller, a real agent running
//! `tikfleet-agent run` in-process, and a simulated router with SSH. Staff take a backup
//! (a job with progress), list it and download both files (the export with secret values
//! redacted, the binary encrypted by the router and removed from its `/file`); an
//! administrator changes the router by hand; a second backup's diff against the first shows
//! the change and no secret; a third, unchanged export is recorded as such; restoring the
//! first binary reboots the router, which comes back with the change undone and no uploaded
//! file left in its `/file`.
//!
//! A backup larger than one protocol frame (a router with 30,000 secrets) is restored the
//! same way: the job names it, the agent fetches it from the controller in parts over its
//! link, checks it, and the router comes back with it loaded and nothing left in `/file`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tikfleet_agent::routeros::Cmd;
use tikfleet_e2e::fleet::{Agent, Api, Controller, HubPath, SETTLE, Sim, admin_client, within};

async fn add_router(api: &Api, sim: &Sim, agent: &str) -> String {
    let r = &sim.running.routers[0];
    let addr = r.api.expect("api");
    let ssh = r.ssh.expect("ssh");
    let v = api
        .ok(
            StatusCode::CREATED,
            "/api/v1/routers",
            serde_json::json!({
                "agent_id": agent, "name": "core-1", "address": addr.ip().to_string(),
                "api_port": addr.port(), "ssh_port": ssh.port(), "tls": {"mode": "plain"},
                "username": "admin", "password": "admin",
            }),
        )
        .await;
    v["id"].as_str().expect("router id").to_owned()
}

/// Takes a backup and waits for its job to succeed; returns the job id.
async fn backup(api: &Api, router: &str) -> String {
    let (st, job) = api
        .post_empty(&format!("/api/v1/routers/{router}/backups"))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["kind"], "backup_now", "{job}");
    let id = job["id"].as_str().expect("job id").to_owned();
    let job = api.job_finished(&id, SETTLE).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(job["progress"]["done"], job["progress"]["total"], "{job}");
    id
}

/// The router's backups of job `job`, once both files arrived: (export, binary).
async fn files(api: &Api, router: &str, job: &str) -> (Value, Value) {
    tikfleet_e2e::fleet::eventually("the backup to arrive", SETTLE, || async {
        let (st, v) = api.get(&format!("/api/v1/routers/{router}/backups")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let items = v["items"].as_array().cloned().unwrap_or_default();
        let of = |kind: &str| {
            items
                .iter()
                .find(|b| b["job_id"] == job && b["kind"] == kind)
                .cloned()
        };
        Some((of("export")?, of("binary")?))
    })
    .await
}

/// The `.backup` files in the simulated router's `/file`.
fn backup_files(sim: &Sim) -> Vec<(String, u64)> {
    tikfleet_sim::router::lock(&sim.running.router(0).device)
        .files()
        .into_iter()
        .filter(|(f, _)| f.ends_with(".backup"))
        .collect()
}

async fn download(api: &Api, id: &str) -> (StatusCode, Vec<u8>) {
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/backups/{id}", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("the API answers");
    (resp.status(), resp.bytes().await.expect("a body").to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_list_download_change_diff() {
    within(Duration::from_secs(120), async {
        let sim = Sim {
            running: tikfleet_sim::start(tikfleet_sim::Config {
                routers: 1,
                redial: Duration::from_secs(60),
                api_ssl: None,
                ..tikfleet_sim::Config::local()
            })
            .await
            .expect("the simulator starts"),
        };
        let ctl = Controller::start(HubPath::Direct).await;
        let (tenant, ops) = ctl.tenant("acme").await;
        let (agent, running) = Agent::running(&ops, &tenant).await;
        let router = add_router(&ops, &sim, &agent.id).await;

        // A hand-made account with a password: in the export, never in the API.
        let admin = admin_client(&sim, 0).await;
        admin
            .run(
                Cmd::new("/ppp/secret/add")
                    .attr("name", "handmade")
                    .attr("password", "hunter2-secret")
                    .attr("profile", "default"),
            )
            .await
            .expect("added by hand");

        // The tenant's schedule is turned on: the router, never backed up, gets its first
        // backup unasked at the schedule's next run (a minute of the controller's clock).
        let (st, v) = ops
            .put(
                &format!("/api/v1/tenants/{tenant}/backups"),
                serde_json::json!({"schedule": {"enabled": true}}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        ctl.clock().advance(Duration::from_secs(60));
        let first =
            tikfleet_e2e::fleet::eventually("the first scheduled backup", SETTLE, || async {
                ops.all(&format!("/api/v1/jobs?kind=backup_now&router_id={router}"))
                    .await
                    .into_iter()
                    .find(|j| j["idempotency_key"] == format!("backup_now:schedule:{router}:0"))
            })
            .await;
        let job1 = first["id"].as_str().expect("job id").to_owned();
        let done = ops.job_finished(&job1, SETTLE).await;
        assert_eq!(done["status"], "succeeded", "{done:#}");
        assert_eq!(done["priority"], "bulk", "{done:#}");
        let (export1, binary1) = files(&ops, &router, &job1).await;
        assert_eq!(export1["unchanged"], false);
        assert!(binary1["size"].as_u64() > Some(0), "{binary1}");
        let (st, text) = download(&ops, export1["id"].as_str().unwrap()).await;
        assert_eq!(st, StatusCode::OK);
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("name=handmade"), "{text}");
        assert!(!text.contains("hunter2-secret"), "{text}");
        let (st, bin) = download(&ops, binary1["id"].as_str().unwrap()).await;
        assert_eq!(st, StatusCode::OK);
        assert!(
            bin.starts_with(b"TIKFLEET-SIM-BACKUP 1 sealed"),
            "encrypted by the router"
        );
        assert_eq!(bin.len() as u64, binary1["size"].as_u64().unwrap());
        // Removed from the router's /file.
        let leftover: Vec<String> = tikfleet_sim::router::lock(&sim.running.router(0).device)
            .file_data
            .keys()
            .filter(|f| f.ends_with(".backup"))
            .cloned()
            .collect();
        assert!(leftover.is_empty(), "{leftover:?}");

        // A change by hand, a second backup, the diff.
        admin
            .run(Cmd::new("/system/identity/set").attr("name", "renamed-by-hand"))
            .await
            .expect("renamed by hand");
        let job2 = backup(&ops, &router).await;
        let (export2, _) = files(&ops, &router, &job2).await;
        assert_eq!(export2["unchanged"], false);
        let (st, diff) = ops
            .get(&format!(
                "/api/v1/backups/{}/diff?against={}",
                export2["id"].as_str().unwrap(),
                export1["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(st, StatusCode::OK, "{diff}");
        let diff = diff.as_str().expect("a text diff").to_owned();
        assert!(diff.contains("+set name=renamed-by-hand"), "{diff}");
        assert!(!diff.contains("hunter2-secret"), "{diff}");

        // Nothing changed since: the export is recorded unchanged.
        let job3 = backup(&ops, &router).await;
        let (export3, _) = files(&ops, &router, &job3).await;
        assert_eq!(export3["unchanged"], true, "{export3}");

        // Restore the first binary: the router reboots, comes back, the rename is undone.
        let (st, v) = ops
            .post_empty(&format!(
                "/api/v1/backups/{}/restore",
                export1["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(
            st,
            StatusCode::UNPROCESSABLE_ENTITY,
            "an export cannot be restored: {v}"
        );
        let (st, job) = ops
            .post_empty(&format!(
                "/api/v1/backups/{}/restore",
                binary1["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{job}");
        assert_eq!(job["kind"], "restore", "{job}");
        let job = ops.job_finished(job["id"].as_str().unwrap(), SETTLE).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        let detail = job["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("RouterOS 7.16.2"), "{job}");
        let identity = tikfleet_sim::router::lock(&sim.running.router(0).device)
            .identity
            .clone();
        assert_ne!(identity, "renamed-by-hand", "the restore undid the change");
        assert!(detail.contains("the uploaded file was removed"), "{job}");
        let leftover = backup_files(&sim);
        assert!(leftover.is_empty(), "left on the router: {leftover:?}");
        let job4 = backup(&ops, &router).await;
        let (export4, _) = files(&ops, &router, &job4).await;
        let (_, text4) = download(&ops, export4["id"].as_str().unwrap()).await;
        let text4 = String::from_utf8(text4).unwrap();
        assert!(!text4.contains("renamed-by-hand"), "{text4}");
        assert!(text4.contains("name=handmade"), "{text4}");

        let out = running.stop().await.expect("the agent stops cleanly");
        assert!(out.contains("tikfleet-agent stopped:"), "{out}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_larger_than_a_frame_is_restored_in_parts() {
    within(Duration::from_secs(180), async {
        let sim = Sim {
            running: tikfleet_sim::start(tikfleet_sim::Config {
                routers: 1,
                redial: Duration::from_secs(60),
                api_ssl: None,
                ..tikfleet_sim::Config::local()
            })
            .await
            .expect("the simulator starts"),
        };
        // Enough configuration for a backup over the protocol's 4 MiB frame limit.
        tikfleet_sim::router::lock(&sim.running.router(0).device)
            .seed_secrets(30_000, std::time::Instant::now());
        let ctl = Controller::start(HubPath::Direct).await;
        let (tenant, ops) = ctl.tenant("acme").await;
        let (agent, running) = Agent::running(&ops, &tenant).await;
        let router = add_router(&ops, &sim, &agent.id).await;

        let job = backup(&ops, &router).await;
        let (_, binary) = files(&ops, &router, &job).await;
        let size = binary["size"].as_u64().expect("a size");
        assert!(
            size > tikfleet_shared::codec::MAX_FRAME_SIZE as u64,
            "backup of {size} bytes"
        );
        let original = tikfleet_sim::router::lock(&sim.running.router(0).device)
            .identity
            .clone();
        tikfleet_sim::router::lock(&sim.running.router(0).device).identity =
            "renamed-by-hand".into();

        let (st, job) = ops
            .post_empty(&format!(
                "/api/v1/backups/{}/restore",
                binary["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{job}");
        let job = ops.job_finished(job["id"].as_str().unwrap(), SETTLE).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        // Progress counted the file's bytes, then upload, load and the router's return.
        assert_eq!(job["progress"]["total"].as_u64(), Some(size + 3), "{job}");
        assert_eq!(job["progress"]["done"], job["progress"]["total"], "{job}");
        let detail = job["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("the uploaded file was removed"), "{job}");
        let identity = tikfleet_sim::router::lock(&sim.running.router(0).device)
            .identity
            .clone();
        assert_eq!(identity, original, "the backup was loaded");
        let leftover = backup_files(&sim);
        assert!(leftover.is_empty(), "left on the router: {leftover:?}");

        let out = running.stop().await.expect("the agent stops cleanly");
        assert!(out.contains("tikfleet-agent stopped:"), "{out}");
    })
    .await;
}
