//! The executor against the in-process simulator, on a manual clock: a batch across two
//! routers, retries with backoff, dead letters and self-healing, permanent and
//! authentication failures, priorities, rate limits, and the audit records in the outbox
//! (one per router command, redacted, before the job's update).

mod routeros_common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use routeros_common::{T0, endpoint};
use tikfleet_agent::clock::{Clock, ManualClock, SharedClock};
use tikfleet_agent::executor::{Executor, ExecutorConfig, RetryPolicy, Routers};
use tikfleet_agent::outbox::{Outbox, OutboxConfig};
use tikfleet_agent::queue::{JobRecord, MemJobStore, Queue};
use tikfleet_agent::ratelimit::Rate;
use tikfleet_agent::router::{RouterEndpoint, TlsMode};
use tikfleet_agent::routeros::DriverConfig;
use tikfleet_agent::store::{Store, StoreConfig};
use tikfleet_shared::domain::{PppSecret, PppService};
use tikfleet_shared::job::{Job, JobOp, JobStatus, JobUpdate, Priority, Progress};
use tikfleet_shared::record::{AuditRecord, AuditStatus, OutboxRecord};
use tikfleet_shared::secret::REDACTED;
use tikfleet_shared::{ErrorClass, ErrorCode, JobId, RouterId, Secret, TenantId};
use tikfleet_sim::faults::{Faults, FaultsPatch};
use tikfleet_sim::router::lock;
use tikfleet_sim::{Config, Running};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(60);

async fn within<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out");
}

/// Polls `f` (real time, a few ms apart) until it returns `Some`; the test's timeout bounds it.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < LIMIT, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Rig {
    sim: Running,
    clock: ManualClock,
    queue: Arc<Queue<MemJobStore>>,
    outbox: Arc<Outbox>,
    routers: Vec<RouterEndpoint>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

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

impl Rig {
    /// A simulator with `n` routers of one tenant, an executor (not started) over them.
    async fn new(n: usize, password: &str) -> Self {
        let sim = tikfleet_sim::start(Config {
            routers: n,
            redial: Duration::from_secs(60),
            ..Config::local()
        })
        .await
        .expect("simulator starts");
        let tenant = TenantId::new();
        let routers = sim
            .routers
            .iter()
            .map(|r| RouterEndpoint {
                tenant,
                ..endpoint(r.api.expect("api"), TlsMode::Plain, password)
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let outbox = Arc::new(Outbox::open(&store, OutboxConfig::default()).unwrap());
        Self {
            sim,
            clock: ManualClock::new(T0),
            queue: Arc::new(Queue::in_memory()),
            outbox,
            routers,
            stop: None,
            task: None,
            _dir: dir,
        }
    }

    fn start(&mut self, config: ExecutorConfig) {
        let table: HashMap<RouterId, RouterEndpoint> =
            self.routers.iter().map(|r| (r.id, r.clone())).collect();
        let clock: SharedClock = Arc::new(self.clock.clone());
        let exec = Executor::new(
            Arc::clone(&self.queue),
            Arc::clone(&self.outbox),
            Arc::new(table) as Arc<dyn Routers>,
            clock,
            config,
        );
        let (tx, rx) = oneshot::channel::<()>();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(async move {
            exec.run(async {
                let _ = rx.await;
            })
            .await;
        }));
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("executor ends cleanly");
        }
        self.sim.shutdown().await;
    }

    fn job(&self, router: usize, priority: Priority, op: JobOp) -> Job {
        let ep = &self.routers[router];
        let id = JobId::new();
        Job {
            id,
            tenant_id: ep.tenant,
            router_id: ep.id,
            idempotency_key: id.to_string(),
            priority,
            op,
            created_at: T0,
            max_attempts: 0,
            generation: None,
        }
    }

    async fn enqueue(&self, job: Job) -> JobId {
        let id = job.id;
        self.queue.enqueue(job, self.clock.now()).await.unwrap();
        id
    }

    fn get(&self, id: JobId) -> JobRecord {
        self.queue.get(id).unwrap().expect("job exists")
    }

    async fn wait_status(&self, id: JobId, status: JobStatus) -> JobRecord {
        eventually(&format!("job {id} {status:?}"), || {
            Some(self.get(id)).filter(|r| r.status == status)
        })
        .await
    }

    fn records(&self) -> Vec<(u64, OutboxRecord)> {
        self.outbox.read_after(0, usize::MAX).unwrap()
    }

    fn audits(&self) -> Vec<AuditRecord> {
        self.records()
            .into_iter()
            .filter_map(|(_, r)| match r {
                OutboxRecord::Audit(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    fn updates(&self, id: JobId) -> Vec<JobUpdate> {
        self.records()
            .into_iter()
            .filter_map(|(_, r)| match r {
                OutboxRecord::JobUpdate(u) if u.job_id == id => Some(u),
                _ => None,
            })
            .collect()
    }

    fn faults(&self, router: usize, patch: FaultsPatch) {
        lock(&self.sim.router(router).faults).apply(patch);
    }

    fn clear_faults(&self, router: usize) {
        *lock(&self.sim.router(router).faults) = Faults::default();
    }

    fn commands_seen(&self, router: usize) -> u64 {
        lock(&self.sim.router(router).stats)
            .view(None, Instant::now())
            .total
    }

    fn menu(&self, router: usize, path: &str) -> Vec<BTreeMap<String, String>> {
        let mut dev = lock(&self.sim.router(router).device);
        let now = Instant::now();
        dev.tick(now);
        dev.menu_rows(path, now)
            .expect("menu exists")
            .into_iter()
            .map(|r| r.into_iter().collect())
            .collect()
    }

    fn secret_names(&self, router: usize) -> Vec<String> {
        let mut names: Vec<String> = self
            .menu(router, "/ppp/secret")
            .into_iter()
            .filter_map(|r| r.get("name").cloned())
            .collect();
        names.sort();
        names
    }

    /// Every outbox record is in order: each job's final update comes after all of its
    /// audit records, and no record carries a password.
    fn check_outbox(&self, passwords: &[&str]) {
        let records = self.records();
        let mut last_audit: HashMap<JobId, u64> = HashMap::new();
        let mut last_final: HashMap<JobId, u64> = HashMap::new();
        for (seq, r) in &records {
            match r {
                OutboxRecord::Audit(a) => {
                    assert_eq!(a.seq, *seq);
                    if let Some(j) = a.job_id {
                        last_audit.insert(j, *seq);
                        assert!(
                            !last_final.contains_key(&j),
                            "audit record {seq} of job {j} after its final update"
                        );
                    }
                    if let Some(p) = a.params.get("password") {
                        assert_eq!(p, REDACTED);
                    }
                }
                OutboxRecord::JobUpdate(u) if u.status.is_terminal() => {
                    last_final.insert(u.job_id, *seq);
                }
                _ => {}
            }
            let text = format!("{r:?}");
            for pw in passwords {
                assert!(!text.contains(pw), "record {seq} leaks a password: {text}");
            }
        }
        for (job, fin) in &last_final {
            if let Some(a) = last_audit.get(job) {
                assert!(a < fin, "job {job}: audit {a} after final update {fin}");
            }
        }
    }
}

fn secret(name: &str, profile: &str) -> JobOp {
    JobOp::UpsertPppSecret {
        secret: PppSecret {
            subscriber_id: None,
            name: name.into(),
            password: Secret::new(format!("pw-of-{name}")),
            service: PppService::Pppoe,
            profile: profile.into(),
            disabled: false,
            remote_address: None,
            comment: None,
        },
        profile: None,
    }
}

fn delete(name: &str) -> JobOp {
    JobOp::DeletePppSecret { name: name.into() }
}

#[tokio::test]
async fn a_batch_across_two_routers_succeeds_and_is_audited() {
    within(async {
        let mut rig = Rig::new(2, "admin").await;
        rig.start(config());
        let mut ids = Vec::new();
        for router in 0..2 {
            for name in ["alice", "bob", "carol"] {
                ids.push(
                    rig.enqueue(rig.job(router, Priority::Normal, secret(name, "default")))
                        .await,
                );
            }
            // One per router at a time, same priority: these run after the creates.
            ids.push(
                rig.enqueue(rig.job(
                    router,
                    Priority::Normal,
                    secret("bob", "default-encryption"),
                ))
                .await,
            );
            ids.push(
                rig.enqueue(rig.job(router, Priority::Normal, delete("carol")))
                    .await,
            );
        }
        for id in &ids {
            let r = rig.wait_status(*id, JobStatus::Succeeded).await;
            assert_eq!(r.attempts, 1);
            assert_eq!(r.progress, Some(Progress { done: 1, total: 1 }));
            let updates = rig.updates(*id);
            let last = updates.last().expect("updates");
            assert_eq!(last.status, JobStatus::Succeeded);
            assert_eq!(last.progress, Some(Progress { done: 1, total: 1 }));
            assert!(last.detail.is_some());
            assert_eq!(updates[0].status, JobStatus::Running);
            assert_eq!(updates[0].progress, Some(Progress { done: 0, total: 1 }));
        }
        for router in 0..2 {
            assert_eq!(rig.secret_names(router), ["alice", "bob"]);
            let bob = rig
                .menu(router, "/ppp/secret")
                .into_iter()
                .find(|r| r.get("name").map(String::as_str) == Some("bob"))
                .unwrap();
            assert_eq!(bob["profile"], "default-encryption");
        }
        let detail = rig.get(ids[3]).detail.unwrap();
        assert!(
            detail.contains("updated") && detail.contains("profile"),
            "{detail}"
        );
        assert_eq!(rig.get(ids[4]).detail.as_deref(), Some("deleted"));

        // Exactly one audit record per command the routers saw (logins included).
        let audits = rig.audits();
        for router in 0..2 {
            let id = rig.routers[router].id;
            let n = audits.iter().filter(|a| a.router_id == Some(id)).count() as u64;
            assert_eq!(n, rig.commands_seen(router), "router {router}");
        }
        assert!(audits.iter().any(|a| a.action == "/login"));
        assert!(
            audits
                .iter()
                .filter(|a| a.action == "/ppp/secret/add")
                .all(|a| a.params.get("password") == Some(REDACTED) && a.job_id.is_some())
        );
        rig.check_outbox(&["pw-of-alice", "pw-of-bob", "pw-of-carol"]);
        rig.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_transient_fault_retries_with_backoff_then_succeeds() {
    within(async {
        let mut rig = Rig::new(1, "admin").await;
        rig.faults(
            0,
            FaultsPatch {
                refuse: Some(true),
                ..Default::default()
            },
        );
        rig.start(config());
        let mut job = rig.job(0, Priority::Normal, secret("dave", "default"));
        job.max_attempts = 10;
        let id = rig.enqueue(job).await;
        let r = rig.wait_status(id, JobStatus::Retrying).await;
        let e = r.last_error.clone().unwrap();
        assert_eq!(e.code.class(), ErrorClass::Transient, "{e}");
        let policy = RetryPolicy::default();
        let wait = r.due_at.as_millis() - r.updated_at.as_millis();
        assert!(
            wait >= 0 && wait as u128 <= policy.backoff_ceiling(r.attempts).as_millis(),
            "{wait}"
        );
        let updates = rig.updates(id);
        assert!(
            updates
                .iter()
                .any(|u| u.status == JobStatus::Retrying && u.error.is_some())
        );
        // The fault goes away; the retry runs once the clock reaches its due time.
        rig.clear_faults(0);
        rig.clock.set(rig.get(id).due_at.max(r.due_at));
        let done = rig.wait_status(id, JobStatus::Succeeded).await;
        assert!(done.attempts >= 2);
        assert_eq!(rig.secret_names(0), ["dave"]);
        rig.check_outbox(&["pw-of-dave"]);
        rig.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_persistent_fault_dead_letters_then_self_heals() {
    within(async {
        let mut rig = Rig::new(1, "admin").await;
        rig.faults(
            0,
            FaultsPatch {
                refuse: Some(true),
                ..Default::default()
            },
        );
        rig.start(config());
        let id = rig
            .enqueue(rig.job(0, Priority::Critical, secret("erin", "default")))
            .await;
        let policy = RetryPolicy::default();
        // Attempts 1 and 2 back off within their ceilings (1 s, 2 s); attempt 3 dead-letters.
        let mut seen = Vec::new();
        let failed = loop {
            let r = eventually("the next failure", || {
                let r = rig.get(id);
                let new = r.status == JobStatus::Failed
                    || (r.status == JobStatus::Retrying && !seen.contains(&r.attempts));
                new.then_some(r)
            })
            .await;
            if r.status == JobStatus::Failed {
                break r;
            }
            let wait = r.due_at.as_millis() - r.updated_at.as_millis();
            assert!(wait as u128 <= policy.backoff_ceiling(r.attempts).as_millis());
            seen.push(r.attempts);
            rig.clock.set(r.due_at);
        };
        assert_eq!(seen, [1, 2]);
        assert_eq!(failed.attempts, 3);
        let heal_at = failed.next_heal_at.expect("transient failures self-heal");
        assert_eq!(
            heal_at.as_millis() - failed.updated_at.as_millis(),
            policy.heal_delay(0).as_millis() as i64
        );
        let last = rig.updates(id).pop().unwrap();
        assert_eq!(last.status, JobStatus::Failed);
        assert_eq!(last.error.unwrap().code.class(), ErrorClass::Transient);
        // Not before its time, even with the fault gone: the queue's next moment for it is
        // the heal time, so the executor has nothing to take until the clock reaches it.
        rig.clear_faults(0);
        rig.clock.advance(Duration::from_secs(60));
        assert!(rig.clock.now() < heal_at);
        assert_eq!(rig.queue.next_due(), Some(heal_at));
        assert_eq!(rig.queue.take_ready(rig.clock.now()).unwrap(), None);
        assert_eq!(rig.get(id).status, JobStatus::Failed);
        rig.clock.set(heal_at);
        let healed = rig.wait_status(id, JobStatus::Succeeded).await;
        assert_eq!(healed.attempts, 1, "healing starts with fresh attempts");
        assert_eq!(rig.secret_names(0), ["erin"]);
        rig.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_trap_fails_at_once_with_the_routers_message() {
    within(async {
        let mut rig = Rig::new(1, "admin").await;
        let text = "failure: pool exhausted for this profile";
        rig.faults(
            0,
            FaultsPatch {
                traps: Some([("/ppp/secret/add".to_owned(), text.to_owned())].into()),
                ..Default::default()
            },
        );
        rig.start(config());
        let id = rig
            .enqueue(rig.job(0, Priority::Normal, secret("frank", "default")))
            .await;
        let r = rig.wait_status(id, JobStatus::Failed).await;
        assert_eq!(r.attempts, 1);
        assert_eq!(r.next_heal_at, None, "permanent failures do not self-heal");
        let e = r.last_error.unwrap();
        assert_eq!(e.code.class(), ErrorClass::Permanent, "{e}");
        assert!(e.message.contains("pool exhausted"), "{e}");
        let last = rig.updates(id).pop().unwrap();
        assert_eq!(last.status, JobStatus::Failed);
        assert!(last.error.unwrap().message.contains("pool exhausted"));
        let failed_add = rig
            .audits()
            .into_iter()
            .find(|a| a.action == "/ppp/secret/add")
            .unwrap();
        assert_eq!(failed_add.status, AuditStatus::Failed);
        assert_eq!(failed_add.job_id, Some(id));
        rig.check_outbox(&["pw-of-frank"]);
        rig.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_wrong_password_fails_with_authentication_failed_and_no_retry() {
    within(async {
        let mut rig = Rig::new(1, "hunter2-wrong").await;
        rig.start(config());
        let id = rig
            .enqueue(rig.job(0, Priority::Normal, secret("gina", "default")))
            .await;
        let r = rig.wait_status(id, JobStatus::Failed).await;
        assert_eq!(r.attempts, 1);
        assert_eq!(r.next_heal_at, None);
        assert_eq!(r.last_error.unwrap().code, ErrorCode::AuthenticationFailed);
        let updates = rig.updates(id);
        assert!(updates.iter().all(|u| u.status != JobStatus::Retrying));
        let last = updates.last().unwrap();
        assert_eq!(
            last.error.as_ref().unwrap().code,
            ErrorCode::AuthenticationFailed
        );
        let login = rig
            .audits()
            .into_iter()
            .find(|a| a.action == "/login")
            .unwrap();
        assert_eq!(login.status, AuditStatus::Failed);
        assert_eq!(login.params.get("password"), Some(REDACTED));
        assert_eq!(login.job_id, Some(id));
        rig.check_outbox(&["hunter2-wrong", "pw-of-gina"]);
        rig.stop().await;
    })
    .await;
}

/// The order in which jobs first sent a command, from the audit records.
fn run_order(audits: &[AuditRecord]) -> Vec<JobId> {
    let mut order = Vec::new();
    for a in audits {
        if let Some(j) = a.job_id
            && !order.contains(&j)
        {
            order.push(j);
        }
    }
    order
}

#[tokio::test]
async fn a_critical_job_overtakes_queued_bulk_jobs() {
    within(async {
        let mut rig = Rig::new(1, "admin").await;
        // Each command takes a while, so the bulk jobs are still queued when the critical
        // one arrives.
        rig.faults(
            0,
            FaultsPatch {
                delay_ms: Some(150),
                ..Default::default()
            },
        );
        rig.start(config());
        let mut bulk = Vec::new();
        for i in 0..5 {
            bulk.push(
                rig.enqueue(rig.job(0, Priority::Bulk, delete(&format!("bulk-{i}"))))
                    .await,
            );
        }
        rig.wait_status(bulk[0], JobStatus::Running).await;
        let critical = rig
            .enqueue(rig.job(0, Priority::Critical, secret("vip", "default")))
            .await;
        for id in bulk.iter().chain([&critical]) {
            rig.wait_status(*id, JobStatus::Succeeded).await;
        }
        let order = run_order(&rig.audits());
        assert_eq!(order[0], bulk[0]);
        assert_eq!(order[1], critical, "the critical job runs next");
        assert_eq!(&order[2..], &bulk[1..]);
        rig.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_busy_router_does_not_hold_up_another() {
    within(async {
        let mut rig = Rig::new(2, "admin").await;
        // Router 0 answers slowly; router 1's jobs must not wait behind router 0's.
        rig.faults(
            0,
            FaultsPatch {
                delay_ms: Some(800),
                ..Default::default()
            },
        );
        rig.start(config());
        let slow = rig
            .enqueue(rig.job(0, Priority::Critical, delete("slow")))
            .await;
        let _queued = rig
            .enqueue(rig.job(0, Priority::Critical, delete("slow-2")))
            .await;
        let fast: Vec<JobId> = {
            let mut v = Vec::new();
            for i in 0..3 {
                v.push(
                    rig.enqueue(rig.job(1, Priority::Bulk, delete(&format!("f{i}"))))
                        .await,
                );
            }
            v
        };
        for id in &fast {
            rig.wait_status(*id, JobStatus::Succeeded).await;
        }
        assert_ne!(rig.get(slow).status, JobStatus::Succeeded);
        rig.stop().await;
    })
    .await;
}

#[tokio::test]
async fn router_commands_stay_within_the_token_bucket() {
    within(async {
        let mut rig = Rig::new(1, "admin").await;
        let (rate, burst) = (5u64, 6u64);
        rig.start(ExecutorConfig {
            router_rate: Rate::per_second(rate as u32, burst as u32),
            ..config()
        });
        let mut ids = Vec::new();
        for i in 0..12 {
            ids.push(
                rig.enqueue(rig.job(0, Priority::Normal, delete(&format!("nobody-{i}"))))
                    .await,
            );
        }
        let start = rig.clock.now();
        let all_done = |rig: &Rig| {
            ids.iter()
                .all(|id| rig.get(*id).status == JobStatus::Succeeded)
        };
        let mut steps = 0;
        while !all_done(&rig) {
            // Let the executor use what it may at this moment, then check the bound.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let elapsed = rig.clock.now().as_millis() - start.as_millis();
            let allowed = burst + rate * elapsed as u64 / 1000;
            let seen = rig.commands_seen(0);
            assert!(
                seen <= allowed,
                "{seen} commands after {elapsed} ms (allowed {allowed})"
            );
            rig.clock.advance(Duration::from_millis(100));
            steps += 1;
            assert!(steps < 1_000, "jobs did not finish");
        }
        // Twelve prints and a login with its version read, and it took simulated time.
        assert_eq!(rig.commands_seen(0), 14);
        assert!(rig.clock.now().as_millis() - start.as_millis() >= 2_000);
        rig.stop().await;
    })
    .await;
}

#[test]
fn backoff_has_full_jitter_under_a_doubling_ceiling() {
    use rand::SeedableRng;
    let p = RetryPolicy::default();
    assert_eq!(p.backoff_ceiling(1), Duration::from_secs(1));
    assert_eq!(p.backoff_ceiling(2), Duration::from_secs(2));
    assert_eq!(p.backoff_ceiling(7), Duration::from_secs(60));
    assert_eq!(p.backoff_ceiling(100), Duration::from_secs(60));
    assert_eq!(p.heal_delay(0), Duration::from_secs(600));
    assert_eq!(p.heal_delay(1), Duration::from_secs(1200));
    assert_eq!(p.heal_delay(40), Duration::from_secs(6 * 3600));
    let draw = |seed| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (1..=10).map(|a| p.backoff(a, &mut rng)).collect::<Vec<_>>()
    };
    let a = draw(1);
    assert_eq!(a, draw(1), "the same seed gives the same delays");
    assert_ne!(a, draw(2));
    for (i, d) in a.iter().enumerate() {
        assert!(*d <= p.backoff_ceiling(i as u32 + 1));
    }
}

/// Routers whose endpoints a test changes, as the uplink's `router_config` does.
struct Moving {
    table: std::sync::Mutex<HashMap<RouterId, RouterEndpoint>>,
    changes: std::sync::atomic::AtomicU64,
}

impl Routers for Moving {
    fn endpoint(
        &self,
        id: RouterId,
    ) -> Result<RouterEndpoint, tikfleet_agent::routeros::DriverError> {
        self.table.lock().unwrap().get(&id).cloned().ok_or_else(|| {
            tikfleet_agent::routeros::DriverError::new(ErrorCode::NotFound, "no such router")
        })
    }

    fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_router_that_moved_is_reached_at_its_new_address() {
    within(async {
        let mut rig = Rig::new(2, "admin").await;
        let mut moved = rig.routers[0].clone();
        let routers = Arc::new(Moving {
            table: std::sync::Mutex::new(HashMap::from([(moved.id, moved.clone())])),
            changes: std::sync::atomic::AtomicU64::new(0),
        });
        let exec = Executor::new(
            Arc::clone(&rig.queue),
            Arc::clone(&rig.outbox),
            Arc::clone(&routers) as Arc<dyn Routers>,
            Arc::new(rig.clock.clone()) as SharedClock,
            config(),
        );
        let (tx, rx) = oneshot::channel::<()>();
        rig.stop = Some(tx);
        rig.task = Some(tokio::spawn(async move {
            exec.run(async {
                let _ = rx.await;
            })
            .await;
        }));

        let id = rig
            .enqueue(rig.job(0, Priority::Normal, secret("hana", "default")))
            .await;
        rig.wait_status(id, JobStatus::Succeeded).await;
        assert_eq!(rig.secret_names(0), ["hana"]);

        // The router's address changes (the simulator's second router stands for its new
        // place): the next job goes there, over a new connection.
        moved.host.clone_from(&rig.routers[1].host);
        moved.api_port = rig.routers[1].api_port;
        routers.table.lock().unwrap().insert(moved.id, moved);
        routers
            .changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = rig
            .enqueue(rig.job(0, Priority::Normal, secret("ines", "default")))
            .await;
        rig.wait_status(id, JobStatus::Succeeded).await;
        assert_eq!(rig.secret_names(1), ["ines"]);
        assert_eq!(rig.secret_names(0), ["hana"]);

        // A change elsewhere that leaves this router as it is keeps its connection.
        let connections = |rig: &Rig| {
            lock(&rig.sim.router(1).stats)
                .view(None, Instant::now())
                .connections
        };
        let before = connections(&rig);
        routers
            .changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = rig
            .enqueue(rig.job(0, Priority::Normal, secret("jo", "default")))
            .await;
        rig.wait_status(id, JobStatus::Succeeded).await;
        assert_eq!(connections(&rig), before);
        rig.stop().await;
    })
    .await;
}
