//! The `backup_now` job against the in-process simulator, on a manual clock: the text export
//! (secrets hidden) and the binary backup (encrypted with the router's backup password from
//! the vault) arrive in the outbox as chunks ahead of the job's final update, with the right
//! size and SHA-256, and the `.backup` file is gone from the router's `/file`; the backup
//! password is generated once per router and survives a reopen of the store. A restore job
//! uploads that binary, loads it, waits (on the manual clock) for the rebooted router and
//! reports its version; the change made in between is undone, and the uploaded file is gone.
//!
//! Restores of backups the job does not carry (any size) fetch the file in parts through a
//! [`BackupFetcher`] served here as the uplink would: a backup over 3 MiB arrives in parts of
//! at most `MAX_BACKUP_PART`, through a dropped request and a failed attempt, and the next
//! attempt resumes from the bytes staged on disk; a file that does not match its SHA-256 is
//! refused before anything reaches the router.

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
use tikfleet_agent::uplink::fetch::BackupFetcher;
use tikfleet_agent::vault::{Vault, VaultKey};
use tikfleet_shared::job::{Job, JobOp, JobStatus, Priority};
use tikfleet_shared::protocol::{BackupPart, MAX_BACKUP_PART};
use tikfleet_shared::record::{BACKUP_CHUNK_SIZE, BackupChunk, BackupKind, OutboxRecord};
use tikfleet_shared::{ErrorCode, ErrorInfo, JobId, RouterId};
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
                size: None,
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
        assert!(detail.contains("the uploaded file was removed"), "{detail}");
        let files = lock(&sim.router(0).device).files();
        assert!(
            files.iter().all(|(f, _)| !f.ends_with(".backup")),
            "left on the router: {files:?}"
        );
        sim.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// An executor with backups that restore through a [`BackupFetcher`], against one simulated
/// router whose backup password is the vault's.
struct Rig {
    sim: tikfleet_sim::Running,
    ep: RouterEndpoint,
    clock: ManualClock,
    queue: Arc<Queue<MemJobStore>>,
    outbox: Arc<Outbox>,
    exec: Executor<MemJobStore>,
    fetcher: BackupFetcher,
    staging: std::path::PathBuf,
    password: String,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn new() -> Self {
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
        let store = Store::open(&StoreConfig::new(dir.path().join("store"))).unwrap();
        let outbox = Arc::new(Outbox::open(&store, OutboxConfig::default()).unwrap());
        let passwords = BackupPasswords::open(&store, Vault::new(&VaultKey::generate())).unwrap();
        let fetcher = BackupFetcher::new();
        let staging = dir.path().join("restore");
        let backups = Arc::new(
            Backups::new(
                passwords.clone(),
                Arc::new(MemoryHostKeys::default()),
                SshConfig::default(),
            )
            .with_restores(fetcher.clone(), staging.clone()),
        );
        let password = passwords.get_or_create(ep.id).unwrap().expose().to_owned();
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
        Self {
            sim,
            ep,
            clock,
            queue,
            outbox,
            exec,
            fetcher,
            staging,
            password,
            _dir: dir,
        }
    }

    /// A restore job naming backup `b-big` of `size` bytes with checksum `sha256`.
    fn job(&self, size: u64, sha256: Vec<u8>) -> Job {
        let id = JobId::new();
        Job {
            id,
            tenant_id: self.ep.tenant,
            router_id: self.ep.id,
            idempotency_key: id.to_string(),
            priority: Priority::Critical,
            op: JobOp::Restore {
                name: "tikfleet-restore-big".into(),
                backup_id: Some("b-big".into()),
                data: Vec::new(),
                sha256,
                size: Some(size),
            },
            created_at: T0,
            max_attempts: 3,
            generation: None,
        }
    }

    /// Runs the queue until idle, moving the manual clock on while jobs run (the restore
    /// polls the rebooting router once a second; retries wait their backoff).
    async fn run(&self) {
        let run = tokio::spawn({
            let exec = self.exec.clone();
            async move { exec.run_until_idle(std::future::pending()).await }
        });
        while !run.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.clock.advance(Duration::from_secs(1));
        }
        run.await.unwrap();
    }

    fn backup_files(&self) -> Vec<(String, u64)> {
        lock(&self.sim.router(0).device)
            .files()
            .into_iter()
            .filter(|(f, _)| f.ends_with(".backup"))
            .collect()
    }
}

fn part(job: JobId, offset: u64, data: &[u8]) -> BackupPart {
    let start = (offset as usize).min(data.len());
    let end = (start + MAX_BACKUP_PART).min(data.len());
    BackupPart {
        job_id: job,
        backup_id: "b-big".into(),
        offset,
        total: data.len() as u64,
        data: data[start..end].to_vec(),
        error: None,
    }
}

/// The controller's answer when the backup is gone (retention removed it).
fn gone(id: JobId, offset: u64) -> BackupPart {
    BackupPart {
        job_id: id,
        backup_id: "b-big".into(),
        offset,
        total: 0,
        data: Vec::new(),
        error: Some(ErrorInfo::with_message(
            ErrorCode::NotFound,
            "no binary backup b-big of this agent's routers",
        )),
    }
}

#[tokio::test]
async fn large_restore_is_fetched_in_parts_resumes_from_the_staged_bytes_and_cleans_up() {
    tokio::time::timeout(LIMIT, async {
        let rig = Rig::new().await;
        // A backup over 3 MiB (more than one frame could carry): many secrets.
        let (data, original) = {
            let mut dev = lock(&rig.sim.router(0).device);
            dev.seed_secrets(30_000, std::time::Instant::now());
            let data = tikfleet_sim::backup::save(&dev, Some(&rig.password));
            (data, dev.identity.clone())
        };
        assert!(
            data.len() > 3 * 1024 * 1024,
            "backup of {} bytes",
            data.len()
        );
        lock(&rig.sim.router(0).device).identity = "changed-by-hand".into();
        let sha256 = ring::digest::digest(&ring::digest::SHA256, &data)
            .as_ref()
            .to_vec();
        let job = rig.job(data.len() as u64, sha256);
        let id = job.id;
        rig.queue.enqueue(job, T0).await.unwrap();

        // The controller's side: parts of at most MAX_BACKUP_PART. The request for the third
        // part is dropped once (its link went down); at 1 MiB the controller fails until the
        // attempt gives up (retryable), so the job's next attempt must resume from there.
        let resume_at = (4 * MAX_BACKUP_PART) as u64;
        let served = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
        let server = tokio::spawn({
            let fetcher = rig.fetcher.clone();
            let served = Arc::clone(&served);
            let data = data.clone();
            async move {
                let mut dropped = false;
                let mut failures = 0;
                loop {
                    let pending = fetcher.next().await;
                    let offset = pending.request().offset;
                    assert_eq!(pending.request().job_id, id);
                    assert_eq!(pending.request().backup_id, "b-big");
                    served.lock().unwrap().push(offset);
                    if offset == (2 * MAX_BACKUP_PART) as u64 && !dropped {
                        dropped = true;
                        drop(pending);
                    } else if offset == resume_at && failures < tikfleet_agent::backup::FETCH_TRIES
                    {
                        failures += 1;
                        pending.answer(BackupPart {
                            error: Some(ErrorInfo::with_message(
                                ErrorCode::Unavailable,
                                "the controller cannot read the backup right now",
                            )),
                            total: 0,
                            data: Vec::new(),
                            ..part(id, offset, &data)
                        });
                    } else {
                        pending.answer(part(id, offset, &data));
                    }
                }
            }
        });
        rig.run().await;
        server.abort();

        let rec = rig.queue.get(id).unwrap().expect("job");
        assert_eq!(rec.status, JobStatus::Succeeded, "{:?}", rec.last_error);
        assert_eq!(
            rec.attempts, 2,
            "the first attempt failed at 1 MiB, the second finished"
        );
        let offsets = served.lock().unwrap().clone();
        let parts = data.len().div_ceil(MAX_BACKUP_PART);
        // Every part asked for once, plus the dropped request and the failed ones again:
        // never from the start again.
        assert_eq!(
            offsets.iter().filter(|o| **o == 0).count(),
            1,
            "{offsets:?}"
        );
        assert_eq!(
            offsets.len(),
            parts + 1 + tikfleet_agent::backup::FETCH_TRIES as usize,
            "{offsets:?}"
        );
        assert!(
            offsets.windows(2).all(|w| w[1] >= w[0]),
            "resumed, not restarted: {offsets:?}"
        );
        let detail = rec.detail.clone().unwrap_or_default();
        assert!(detail.contains("restored backup b-big"), "{detail}");
        assert!(detail.contains("the uploaded file was removed"), "{detail}");
        let identity = lock(&rig.sim.router(0).device).identity.clone();
        assert_eq!(identity, original, "the backup was loaded");
        assert!(
            rig.backup_files().is_empty(),
            "left on the router: {:?}",
            rig.backup_files()
        );
        let staged: Vec<_> = std::fs::read_dir(&rig.staging).unwrap().collect();
        assert!(staged.is_empty(), "staged file deleted: {staged:?}");

        // Progress while downloading: bytes staged of size + 3, rising.
        let total = data.len() as u64 + 3;
        let progress: Vec<u64> = rig
            .outbox
            .read_after(0, usize::MAX)
            .unwrap()
            .into_iter()
            .filter_map(|(_, r)| match r {
                OutboxRecord::JobUpdate(u) if u.job_id == id && u.status == JobStatus::Running => {
                    u.progress.filter(|p| p.total == total).map(|p| p.done)
                }
                _ => None,
            })
            .collect();
        assert!(
            progress.contains(&(MAX_BACKUP_PART as u64)) && progress.contains(&resume_at),
            "{progress:?}"
        );
        assert!(progress.contains(&total), "{progress:?}");
        rig.sim.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_restore_that_does_not_match_its_checksum_uploads_nothing() {
    tokio::time::timeout(LIMIT, async {
        let rig = Rig::new().await;
        let data =
            tikfleet_sim::backup::save(&lock(&rig.sim.router(0).device), Some(&rig.password));
        lock(&rig.sim.router(0).device).identity = "changed-by-hand".into();
        // The checksum of other bytes.
        let sha256 = ring::digest::digest(&ring::digest::SHA256, b"other bytes")
            .as_ref()
            .to_vec();
        let job = rig.job(data.len() as u64, sha256);
        let id = job.id;
        rig.queue.enqueue(job, T0).await.unwrap();
        let server = tokio::spawn({
            let fetcher = rig.fetcher.clone();
            let data = data.clone();
            async move {
                loop {
                    let pending = fetcher.next().await;
                    let offset = pending.request().offset;
                    pending.answer(part(id, offset, &data));
                }
            }
        });
        rig.run().await;
        server.abort();
        let rec = rig.queue.get(id).unwrap().expect("job");
        assert_eq!(rec.status, JobStatus::Failed);
        let error = rec.last_error.clone().expect("an error");
        assert_eq!(error.code, ErrorCode::InvalidRequest, "{error:?}");
        assert!(error.message.contains("checksum"), "{error:?}");
        assert_eq!(rec.attempts, 1, "not retried");
        assert!(
            rig.backup_files().is_empty(),
            "uploaded: {:?}",
            rig.backup_files()
        );
        assert_eq!(lock(&rig.sim.router(0).device).identity, "changed-by-hand");
        let staged: Vec<_> = std::fs::read_dir(&rig.staging).unwrap().collect();
        assert!(staged.is_empty(), "staged file deleted: {staged:?}");
        rig.sim.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_backup_the_controller_refuses_fails_the_restore_without_touching_the_router() {
    tokio::time::timeout(LIMIT, async {
        let rig = Rig::new().await;
        let job = rig.job(1_000, vec![0; 32]);
        let id = job.id;
        rig.queue.enqueue(job, T0).await.unwrap();
        let server = tokio::spawn({
            let fetcher = rig.fetcher.clone();
            async move {
                loop {
                    let pending = fetcher.next().await;
                    let offset = pending.request().offset;
                    pending.answer(gone(id, offset));
                }
            }
        });
        rig.run().await;
        server.abort();
        let rec = rig.queue.get(id).unwrap().expect("job");
        assert_eq!(rec.status, JobStatus::Failed);
        let error = rec.last_error.clone().expect("an error");
        assert_eq!(error.code, ErrorCode::InvalidRequest, "{error:?}");
        assert!(
            error.message.contains("no binary backup b-big"),
            "{error:?}"
        );
        assert!(rig.backup_files().is_empty());
        rig.sim.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_restore_that_fails_for_good_leaves_no_staged_file() {
    tokio::time::timeout(LIMIT, async {
        let rig = Rig::new().await;
        let data = vec![7u8; MAX_BACKUP_PART * 2];
        let job = rig.job(data.len() as u64, vec![0; 32]);
        let id = job.id;
        rig.queue.enqueue(job, T0).await.unwrap();
        // The first part arrives; then the backup is gone (retention removed it meanwhile).
        let server = tokio::spawn({
            let fetcher = rig.fetcher.clone();
            async move {
                loop {
                    let pending = fetcher.next().await;
                    let offset = pending.request().offset;
                    if offset == 0 {
                        pending.answer(part(id, 0, &data));
                        continue;
                    }
                    pending.answer(gone(id, offset));
                }
            }
        });
        rig.run().await;
        server.abort();
        let rec = rig.queue.get(id).unwrap().expect("job");
        assert_eq!(rec.status, JobStatus::Failed);
        assert!(rec.next_heal_at.is_none(), "a refusal does not self-heal");
        let staged: Vec<_> = std::fs::read_dir(&rig.staging)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        assert!(staged.is_empty(), "staged file deleted: {staged:?}");
        assert!(rig.backup_files().is_empty());
        rig.sim.shutdown().await;
    })
    .await
    .expect("test timed out");
}
