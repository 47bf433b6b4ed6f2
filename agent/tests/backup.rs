//! The `backup_now` job against the in-process simulator, on a manual clock: the text export
//! (secrets hidden) and the binary backup (encrypted with the router's backup password from
//! the vault) arrive in the outbox as chunks ahead of the job's final update, with the right
//! size and SHA-256, and the `.backup` file is gone from the router's `/file`; the backup
//! password is generated once per router and survives a reopen of the store. A restore job
//! uploads that binary, loads it, waits (on the manual clock) for the rebooted router and
//! reports its version; the change made in between is undone.

mod routeros_common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use routeros_common::{T0, endpoint};
use tikfleet_agent::backup::{BackupPasswords, Backups, chunks};
use tikfleet_agent::clock::{ManualClock, SharedClock};
use tikfleet_agent::executor::{Executor, ExecutorConfig, RetryPolicy, Routers};
use tikfleet_agent::outbox::{Outbox, OutboxConfig};
use tikfleet_agent::queue::{MemJobStore, Queue};
use tikfleet_agent::ratelimit::Rate;
use tikfleet_agent::router::{RouterEndpoint, TlsMode};
use tikfleet_agent::routeros::DriverConfig;
use tikfleet_agent::ssh::{MemoryHostKeys, SshConfig};
use tikfleet_agent::store::{Store, StoreConfig};
use tikfleet_agent::vault::{Vault, VaultKey};
use tikfleet_shared::job::{Job, JobOp, JobStatus, Priority};
use tikfleet_shared::record::{BACKUP_CHUNK_SIZE, BackupChunk, BackupKind, OutboxRecord};
use tikfleet_shared::{JobId, RouterId};
use tikfleet_sim::Config;
use tikfleet_sim::router::lock;

const LIMIT: Duration = Duration::from_secs(60);

fn config() -> ExecutorConfig {
    ExecutorConfig {
        driver: DriverConfig {
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(10),
            pool_size: 1,
        },
        per_router: 1,
        router_rate: Rate::per_second(1000, 1000),
        tenant_rate: Rate::per_second(1000, 1000),
        retry: RetryPolicy::default(),
        seed: 7,
    }
}

fn assemble(records: &[OutboxRecord], job: JobId, kind: BackupKind) -> (Vec<u8>, BackupChunk) {
    let parts: Vec<&BackupChunk> = records
        .iter()
        .filter_map(|r| match r {
            OutboxRecord::BackupChunk(c) if c.job_id == job && c.kind == kind => Some(c),
            _ => None,
        })
        .collect();
    assert!(!parts.is_empty(), "no {kind:?} chunks");
    let mut data = Vec::new();
    for p in &parts {
        assert_eq!(p.offset, data.len() as u64, "chunks in order");
        assert!(p.data.len() <= BACKUP_CHUNK_SIZE);
        data.extend_from_slice(&p.data);
    }
    let last = parts.last().copied().cloned().expect("a last chunk");
    assert!(last.last, "the final chunk is marked last");
    assert_eq!(data.len() as u64, last.total_size);
    let digest = ring::digest::digest(&ring::digest::SHA256, &data);
    assert_eq!(digest.as_ref(), last.sha256.as_slice(), "sha256");
    (data, last)
}

#[tokio::test]
async fn backup_job_sends_export_and_binary_and_cleans_up() {
    tokio::time::timeout(LIMIT, async {
        let sim = tikfleet_sim::start(Config {
            redial: Duration::from_secs(60),
            ..Config::local()
        })
        .await
        .expect("simulator starts");
        let ssh = sim.routers[0].ssh.expect("ssh");
        let ep = RouterEndpoint {
            ssh_port: ssh.port(),
            ..endpoint(sim.routers[0].api.expect("api"), TlsMode::Plain, "admin")
        };
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let outbox = Arc::new(Outbox::open(&store, OutboxConfig::default()).unwrap());
        let key = VaultKey::generate();
        let passwords = BackupPasswords::open(&store, Vault::new(&key)).unwrap();
        let backups = Arc::new(Backups::new(
            passwords.clone(),
            Arc::new(MemoryHostKeys::default()),
            SshConfig {
                connect_timeout: Duration::from_secs(10),
                command_timeout: Duration::from_secs(10),
                ..SshConfig::default()
            },
        ));
        let clock = ManualClock::new(T0);
        let queue: Arc<Queue<MemJobStore>> = Arc::new(Queue::in_memory());
        let table: HashMap<RouterId, RouterEndpoint> = [(ep.id, ep.clone())].into();
        let exec = Executor::new(
            Arc::clone(&queue),
            Arc::clone(&outbox),
            Arc::new(table) as Arc<dyn Routers>,
            Arc::new(clock.clone()) as SharedClock,
            config(),
        );
        exec.set_backups(Arc::clone(&backups));
        let id = JobId::new();
        let job = Job {
            id,
            tenant_id: ep.tenant,
            router_id: ep.id,
            idempotency_key: id.to_string(),
            priority: Priority::Normal,
            op: JobOp::BackupNow { name: None },
            created_at: T0,
            max_attempts: 0,
            generation: None,
        };
        queue.enqueue(job, T0).await.unwrap();
        exec.run_until_idle(std::future::pending()).await;

        let rec = queue.get(id).unwrap().expect("job");
        assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
        let records: Vec<OutboxRecord> = outbox
            .read_after(0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .collect();

        let (export, meta) = assemble(&records, id, BackupKind::Export);
        let text = String::from_utf8(export).expect("utf-8 export");
        assert!(text.starts_with("# ") && text.contains("by RouterOS"), "{text}");
        assert!(!meta.ros_version.is_empty());
        assert_eq!(meta.router_id, ep.id);

        let (binary, _) = assemble(&records, id, BackupKind::Binary);
        let password = passwords.get_or_create(ep.id).unwrap();
        tikfleet_sim::backup::open(&binary, password.expose())
            .expect("the binary opens with the vault's backup password");
        assert!(
            tikfleet_sim::backup::open(&binary, "admin").is_err(),
            "not encrypted with the login password"
        );

        // The file is gone from the router.
        let files: Vec<String> = lock(&sim.router(0).device)
            .file_data
            .keys()
            .cloned()
            .collect();
        assert!(
            files.iter().all(|f| !f.ends_with(".backup")),
            "left on the router: {files:?}"
        );

        // Chunks come before the job's final update, and progress was reported.
        let last_chunk = records
            .iter()
            .rposition(|r| matches!(r, OutboxRecord::BackupChunk(_)))
            .unwrap();
        let final_update = records
            .iter()
            .rposition(|r| {
                matches!(r, OutboxRecord::JobUpdate(u) if u.job_id == id && u.status == JobStatus::Succeeded)
            })
            .expect("final update");
        assert!(last_chunk < final_update);
        assert!(records.iter().any(|r| matches!(
            r,
            OutboxRecord::JobUpdate(u) if u.status == JobStatus::Running
                && u.progress.is_some_and(|p| p.done == 2 && p.total == 5)
        )));
        // The router's login password never travels in a record; the backup password
        // neither.
        for r in &records {
            let debug = format!("{r:?}");
            assert!(!debug.contains(password.expose()), "backup password leaked");
        }
        sim.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[test]
fn backup_password_is_generated_once_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let key = VaultKey::generate();
    let router = RouterId::new();
    let first = {
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let p = BackupPasswords::open(&store, Vault::new(&key)).unwrap();
        let a = p.get_or_create(router).unwrap();
        let b = p.get_or_create(router).unwrap();
        assert_eq!(a.expose(), b.expose());
        assert!(a.expose().len() >= 32);
        assert_ne!(
            a.expose(),
            p.get_or_create(RouterId::new()).unwrap().expose(),
            "one password per router"
        );
        a.expose().to_owned()
    };
    let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
    let p = BackupPasswords::open(&store, Vault::new(&key)).unwrap();
    assert_eq!(p.get_or_create(router).unwrap().expose(), first);
    // Another vault key cannot open it.
    let other = BackupPasswords::open(&store, Vault::new(&VaultKey::generate())).unwrap();
    assert!(other.get_or_create(router).is_err());
}

#[test]
fn chunking_splits_large_files() {
    let data = vec![7u8; BACKUP_CHUNK_SIZE * 2 + 10];
    let job = JobId::new();
    let router = RouterId::new();
    let records = chunks(job, router, BackupKind::Binary, T0, "7.15", &data);
    assert_eq!(records.len(), 3);
    let (out, _) = assemble(&records, job, BackupKind::Binary);
    assert_eq!(out, data);
    let empty = chunks(job, router, BackupKind::Export, T0, "7.15", &[]);
    assert_eq!(empty.len(), 1);
}

#[tokio::test]
async fn restore_job_loads_the_backup_and_waits_for_the_reboot() {
    tokio::time::timeout(LIMIT, async {
        let sim = tikfleet_sim::start(Config {
            redial: Duration::from_secs(60),
            reboot_down: Duration::from_millis(300),
            ..Config::local()
        })
        .await
        .expect("simulator starts");
        let ssh = sim.routers[0].ssh.expect("ssh");
        let ep = RouterEndpoint {
            ssh_port: ssh.port(),
            ..endpoint(sim.routers[0].api.expect("api"), TlsMode::Plain, "admin")
        };
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let outbox = Arc::new(Outbox::open(&store, OutboxConfig::default()).unwrap());
        let passwords = BackupPasswords::open(&store, Vault::new(&VaultKey::generate())).unwrap();
        let backups = Arc::new(Backups::new(
            passwords.clone(),
            Arc::new(MemoryHostKeys::default()),
            SshConfig::default(),
        ));
        // The backup the controller holds: saved on the router under the backup password.
        let original = lock(&sim.router(0).device).identity.clone();
        let password = passwords.get_or_create(ep.id).unwrap();
        let data =
            tikfleet_sim::backup::save(&lock(&sim.router(0).device), Some(password.expose()));
        lock(&sim.router(0).device).identity = "changed-by-hand".into();

        let clock = ManualClock::new(T0);
        let queue: Arc<Queue<MemJobStore>> = Arc::new(Queue::in_memory());
        let table: HashMap<RouterId, RouterEndpoint> = [(ep.id, ep.clone())].into();
        let exec = Executor::new(
            Arc::clone(&queue),
            Arc::clone(&outbox),
            Arc::new(table) as Arc<dyn Routers>,
            Arc::new(clock.clone()) as SharedClock,
            config(),
        );
        exec.set_backups(backups);
        let id = JobId::new();
        let sha256 = ring::digest::digest(&ring::digest::SHA256, &data)
            .as_ref()
            .to_vec();
        let job = Job {
            id,
            tenant_id: ep.tenant,
            router_id: ep.id,
            idempotency_key: id.to_string(),
            priority: Priority::Critical,
            op: JobOp::Restore {
                name: "tikfleet-restore".into(),
                backup_id: Some("b-1".into()),
                data,
                sha256,
            },
            created_at: T0,
            max_attempts: 1,
            generation: None,
        };
        queue.enqueue(job, T0).await.unwrap();
        let run = tokio::spawn({
            let exec = exec.clone();
            async move { exec.run_until_idle(std::future::pending()).await }
        });
        // The restore polls the rebooting router once a (manual) second: move the clock on
        // while the job runs.
        while !run.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            clock.advance(Duration::from_secs(1));
        }
        run.await.unwrap();
        let rec = queue.get(id).unwrap().expect("job");
        assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
        let detail = rec.detail.clone().unwrap_or_default();
        assert!(
            detail.contains("restored backup b-1") && detail.contains("RouterOS 7."),
            "{detail}"
        );
        assert_eq!(lock(&sim.router(0).device).identity, original);
        sim.shutdown().await;
    })
    .await
    .expect("test timed out");
}
