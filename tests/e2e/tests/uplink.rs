//! The uplink against the real hub over loopback (TLS, WebSocket), with an in-memory hub
//! store: what the controller pushes is stored before it is acked (routers with sealed
//! passwords, desired states, jobs once), records are committed once across hub restarts,
//! reconnects back off on the agent's clock, revocation stops the uplink, enrollment and key
//! rotation over HTTP, a job pushed from the hub runs on a simulated router with its
//! records coming back, and a cancel pushed after a job reaches the agent's queue.
//!
//! (These lived in the agent crate; they run here so the agent does not dev-depend on the
//! controller.)

#[path = "../../../controller/tests/hub_common/store.rs"]
mod hub_store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hub_store::MemHub;
use tikfleet_agent::clock::{Clock, ManualClock, SharedClock};
use tikfleet_agent::desired::DesiredStore;
use tikfleet_agent::executor::{Executor, ExecutorConfig, RetryPolicy, Routers};
use tikfleet_agent::identity::{Enrollment, IdentityStore, NewKeys};
use tikfleet_agent::outbox::{Outbox, OutboxConfig};
use tikfleet_agent::queue::Queue;
use tikfleet_agent::ratelimit::Rate;
use tikfleet_agent::registry::Registry;
use tikfleet_agent::routeros::DriverConfig;
use tikfleet_agent::store::{Store, StoreConfig};
use tikfleet_agent::uplink::{LinkState, Parts, Uplink, UplinkConfig, UplinkEnd, UplinkStatus};
use tikfleet_agent::vault::{Vault, VaultKey};
use tikfleet_controller::hub::{
    AgentIdentity, AgentKey, AgentSignals, Hub, HubConfig, HubTls, RouterForAgent,
    RouterTlsSetting, RunningHub,
};
use tikfleet_shared::domain::{DesiredState, PppSecret, PppService};
use tikfleet_shared::job::{Job, JobOp, JobStatus, Priority};
use tikfleet_shared::record::{ApplyReport, AuditStatus, OutboxRecord};
use tikfleet_shared::{AgentId, JobId, RouterId, Secret, TenantId, UnixMillis};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(60);
const T0: UnixMillis = UnixMillis(1_767_225_600_000);
const PASSWORD: &str = "s3cret-router-pw";

async fn within<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out");
}

/// A hub on loopback over an in-memory store.
struct TestHub {
    store: MemHub,
    signals: AgentSignals,
    tls: HubTls,
    running: Option<RunningHub>,
    addr: SocketAddr,
}

impl TestHub {
    async fn start() -> Self {
        let tls = HubTls::self_signed(&["localhost".into()]).unwrap();
        let mut hub = Self {
            store: MemHub::default(),
            signals: AgentSignals::default(),
            tls,
            running: None,
            addr: ([127, 0, 0, 1], 0).into(),
        };
        hub.restart().await;
        hub
    }

    /// (Re)starts on the same port.
    async fn restart(&mut self) {
        let hub = Hub::new(
            &self.tls,
            self.store.clone(),
            self.signals.clone(),
            Arc::new(ManualClock::new(T0)),
            HubConfig::default(),
        );
        let running = hub.bind(self.addr).await.unwrap();
        self.addr = running.local_addr();
        self.running = Some(running);
    }

    async fn stop(&mut self) {
        if let Some(hub) = self.running.take() {
            hub.shutdown().await;
        }
    }

    fn url(&self) -> String {
        format!("wss://localhost:{}/agent", self.addr.port())
    }
}

/// An enrolled agent's data folder and parts.
struct TestAgent {
    id: AgentId,
    tenant: TenantId,
    seal_public: [u8; 32],
    parts: Parts,
    clock: ManualClock,
    dir: tempfile::TempDir,
}

fn open_parts(dir: &std::path::Path, key: &VaultKey, clock: &ManualClock) -> Parts {
    let store = Store::open(&StoreConfig::new(dir.join("store"))).unwrap();
    let clock: SharedClock = Arc::new(clock.clone());
    Parts {
        identities: Arc::new(IdentityStore::open(&store, Vault::new(key)).unwrap()),
        registry: Arc::new(Registry::open(&store, Vault::new(key)).unwrap()),
        queue: Arc::new(Queue::open(&store, clock.now()).unwrap()),
        outbox: Arc::new(Outbox::open(&store, OutboxConfig::default()).unwrap()),
        desired: Arc::new(DesiredStore::open(&store).unwrap()),
        store,
        clock,
    }
}

impl TestAgent {
    /// Enrolled directly in the stores (the HTTP path has its own test).
    async fn enrolled(hub: &TestHub) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let parts = open_parts(dir.path(), &VaultKey::generate(), &clock);
        let keys = NewKeys::generate().unwrap();
        let id = AgentId::new();
        let tenant = TenantId::new();
        let key_id = tikfleet_shared::enroll::key_id(&keys.public_key);
        parts
            .identities
            .save(
                &Enrollment {
                    agent_id: id,
                    tenant_id: tenant,
                    key_id: key_id.clone(),
                    hub_url: hub.url(),
                    hub_ca_pem: hub.tls.ca_pem().map(str::to_owned),
                    controller_url: "http://127.0.0.1:9".into(),
                    ca_pem: None,
                },
                &keys,
            )
            .await
            .unwrap();
        hub.store.add_agent(AgentIdentity {
            agent_id: id,
            tenant_id: tenant,
            name: "site".into(),
            keys: vec![AgentKey {
                key_id,
                public_key: keys.public_key.clone(),
            }],
            revoked: false,
        });
        Self {
            id,
            tenant,
            seal_public: keys.seal_public,
            parts,
            clock,
            dir,
        }
    }

    fn router(&self, host: &str, port: u16, password: &str, revision: u64) -> RouterForAgent {
        RouterForAgent {
            router_id: RouterId::new(),
            tenant_id: self.tenant,
            name: "core-1".into(),
            address: host.into(),
            api_port: port,
            ssh_port: 22,
            tls: RouterTlsSetting::Plain,
            username: "admin".into(),
            sealed_password: tikfleet_shared::seal::seal(&self.seal_public, password.as_bytes())
                .unwrap(),
            revision,
            removed: false,
        }
    }

    fn job(&self, router: RouterId, op: JobOp) -> Job {
        let id = JobId::new();
        Job {
            id,
            tenant_id: self.tenant,
            router_id: router,
            idempotency_key: id.to_string(),
            priority: Priority::Normal,
            op,
            created_at: T0,
            max_attempts: 0,
            generation: None,
        }
    }
}

fn desired(agent: &TestAgent, router: RouterId, generation: u64) -> DesiredState {
    DesiredState {
        generation,
        tenant_id: agent.tenant,
        router_id: router,
        compiled_at: T0,
        profiles: vec![],
        ppp_secrets: vec![],
        hotspot_users: vec![],
        address_list_entries: vec![],
        lifecycles: vec![],
        drift: Default::default(),
    }
}

/// A running uplink.
struct Running {
    status: watch::Receiver<UplinkStatus>,
    stop: watch::Sender<bool>,
    task: JoinHandle<UplinkEnd>,
}

fn config() -> UplinkConfig {
    UplinkConfig {
        reconnect_min: Duration::from_secs(1),
        reconnect_max: Duration::from_secs(4),
        seed: 7,
        ..UplinkConfig::default()
    }
}

fn start(agent: &TestAgent) -> Running {
    let mut uplink = Uplink::new(agent.parts.clone(), config()).unwrap();
    let status = uplink.status();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(async move { uplink.run(stopped).await });
    Running { status, stop, task }
}

impl Running {
    async fn wait(&mut self, what: &str, cond: impl FnMut(&UplinkStatus) -> bool) -> UplinkStatus {
        tokio::time::timeout(Duration::from_secs(20), self.status.wait_for(cond))
            .await
            .unwrap_or_else(|_| panic!("gave up waiting for {what}"))
            .expect("uplink alive")
            .clone()
    }

    async fn connected(&mut self, connects: u64) {
        self.wait("connected", |s| {
            matches!(s.state, LinkState::Connected { .. }) && s.connects >= connects
        })
        .await;
    }

    async fn stop(self) -> UplinkEnd {
        let _ = self.stop.send(true);
        self.task.await.expect("uplink task ends")
    }
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[tokio::test]
async fn pushed_routers_desired_states_and_jobs_are_stored_before_the_ack() {
    within(async {
        let mut hub = TestHub::start().await;
        let agent = TestAgent::enrolled(&hub).await;
        let router = agent.router("10.0.0.1", 8728, PASSWORD, 1);
        let rid = router.router_id;
        hub.store.set_router(agent.id, router.clone());
        hub.store.set_desired(agent.id, desired(&agent, rid, 3));
        let job = agent.job(rid, JobOp::Reboot {});
        hub.store.add_job(agent.id, job.clone());

        let mut up = start(&agent);
        up.connected(1).await;
        hub.store
            .wait("job delivered", |s| s.delivered(job.id))
            .await;
        // Acked means stored: each is there.
        let endpoint = agent.parts.registry.get(rid).expect("router registered");
        assert_eq!(endpoint.password.expose(), PASSWORD);
        assert_eq!(
            (endpoint.host.as_str(), endpoint.api_port),
            ("10.0.0.1", 8728)
        );
        assert_eq!(agent.parts.registry.remote_revision(rid).unwrap(), 1);
        assert_eq!(agent.parts.desired.get(rid).unwrap().unwrap().generation, 3);
        let queued = agent.parts.queue.get(job.id).unwrap().expect("job queued");
        assert_eq!(queued.status, JobStatus::Queued);

        // Changes on the live connection: a new revision, a newer generation; an older
        // revision after that changes nothing.
        let mut moved = router.clone();
        moved.address = "10.0.0.2".into();
        moved.revision = 2;
        hub.store.set_router(agent.id, moved);
        hub.store.set_desired(agent.id, desired(&agent, rid, 4));
        let job2 = agent.job(rid, JobOp::Reboot {});
        hub.store.add_job(agent.id, job2.clone());
        hub.signals.changed(agent.id);
        hub.store
            .wait("job 2 delivered", |s| s.delivered(job2.id))
            .await;
        assert_eq!(agent.parts.registry.info(rid).unwrap().host, "10.0.0.2");
        assert_eq!(agent.parts.desired.get(rid).unwrap().unwrap().generation, 4);

        // The hub's next hello carries the stored generation.
        let _ = up.stop().await;
        let mut up = start(&agent);
        up.connected(1).await;
        hub.store
            .wait("second hello", |s| {
                s.events
                    .iter()
                    .filter(|e| matches!(e, hub_store::Event::Connected { .. }))
                    .count()
                    == 2
            })
            .await;
        let reported = hub.store.with(|s| match s.events.last() {
            Some(hub_store::Event::Connected { routers, .. }) => routers.clone(),
            other => panic!("{other:?}"),
        });
        assert_eq!(reported.len(), 1);
        assert_eq!((reported[0].router_id, reported[0].stored), (rid, 4));

        // The password is nowhere in the clear: not in the agent's data folder, not in what
        // the hub's store holds.
        let _ = up.stop().await;
        hub.stop().await;
        agent.parts.store.commit().await.unwrap();
        assert!(files_containing(agent.dir.path(), PASSWORD.as_bytes()).is_empty());
        let hub_state = hub.store.with(|s| format!("{s:?}"));
        assert!(!hub_state.contains(PASSWORD));
        assert!(!hub_state.contains(&format!("{:?}", PASSWORD.as_bytes())));
    })
    .await;
}

#[tokio::test]
async fn a_redelivered_job_is_enqueued_once() {
    within(async {
        let mut hub = TestHub::start().await;
        let agent = TestAgent::enrolled(&hub).await;
        let rid = RouterId::new();
        let job = agent.job(rid, JobOp::Reboot {});
        hub.store.add_job(agent.id, job.clone());
        let mut up = start(&agent);
        up.connected(1).await;
        hub.store.wait("delivered", |s| s.delivered(job.id)).await;

        // The controller lost the delivery mark and pushes it again; and a second job with the
        // same idempotency key (a retried API call) arrives too.
        let mut same_key = agent.job(rid, JobOp::Reboot {});
        same_key.idempotency_key = job.idempotency_key.clone();
        hub.store.with(|s| {
            for (_, _, delivered) in &mut s.jobs {
                *delivered = false;
            }
        });
        hub.store.add_job(agent.id, same_key.clone());
        hub.signals.changed(agent.id);
        hub.store
            .wait("both delivered", |s| {
                s.deliveries.get(&job.id) == Some(&2) && s.delivered(same_key.id)
            })
            .await;
        let jobs = agent.parts.queue.list(None).unwrap();
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        assert_eq!(jobs[0].job.id, job.id);
        let _ = up.stop().await;
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_cancel_pushed_after_its_job_cancels_it_in_the_queue() {
    within(async {
        let mut hub = TestHub::start().await;
        let agent = TestAgent::enrolled(&hub).await;
        let rid = RouterId::new();
        let job = agent.job(rid, JobOp::Reboot {});
        hub.store.add_job(agent.id, job.clone());
        let mut up = start(&agent);
        up.connected(1).await;
        hub.store.wait("delivered", |s| s.delivered(job.id)).await;
        assert_eq!(
            agent.parts.queue.get(job.id).unwrap().unwrap().status,
            JobStatus::Queued
        );

        // Staff cancel it after the agent stored it: the hub pushes the cancel on the live
        // connection, and it is marked delivered once the agent stored it.
        hub.store.cancel_job(agent.id, job.id);
        hub.signals.changed(agent.id);
        hub.store
            .wait("cancel delivered", |s| s.cancel_delivered(job.id))
            .await;
        assert_eq!(
            agent.parts.queue.get(job.id).unwrap().unwrap().status,
            JobStatus::Cancelled
        );
        // A cancel of a job the agent never got is acknowledged and changes nothing.
        let never = JobId::new();
        hub.store.cancel_job(agent.id, never);
        hub.signals.changed(agent.id);
        hub.store
            .wait("second cancel delivered", |s| s.cancel_delivered(never))
            .await;
        assert!(agent.parts.queue.get(never).unwrap().is_none());
        let _ = up.stop().await;
        hub.stop().await;
    })
    .await;
}

fn applied(generation: u64) -> OutboxRecord {
    OutboxRecord::Applied(ApplyReport {
        router_id: RouterId::from_bytes([3; 16]),
        generation,
        at: T0,
        changes: 1,
        conflicts: 0,
        error: None,
    })
}

#[tokio::test]
async fn records_are_committed_once_across_hub_restarts_and_reconnects_back_off() {
    within(async {
        let mut hub = TestHub::start().await;
        let agent = TestAgent::enrolled(&hub).await;
        let outbox = Arc::clone(&agent.parts.outbox);
        for n in 1..=20 {
            outbox.push(applied(n)).await.unwrap();
        }
        let mut up = start(&agent);
        up.connected(1).await;
        hub.store
            .wait("20 committed", |s| s.committed(agent.id) == 20)
            .await;

        // The hub goes away while records keep coming.
        hub.stop().await;
        let waiting = up
            .wait("waiting to reconnect", |s| {
                matches!(s.state, LinkState::Waiting { .. })
            })
            .await;
        for n in 21..=60 {
            outbox.push(applied(n)).await.unwrap();
        }
        hub.restart().await;
        // Backoff is on the agent's clock: nothing happens until it moves.
        let LinkState::Waiting { until } = waiting.state else {
            unreachable!()
        };
        assert!(until > agent.clock.now(), "a real delay");
        assert!(until <= agent.clock.now().saturating_add(Duration::from_secs(1)));
        agent.clock.set(until);
        up.connected(2).await;
        hub.store
            .wait("60 committed", |s| s.committed(agent.id) == 60)
            .await;

        // Drop the connection mid-stream: the hub restarts while records are in flight.
        for n in 61..=200 {
            outbox.append(applied(n)).unwrap();
        }
        outbox.commit().await.unwrap();
        hub.stop().await;
        hub.restart().await;
        loop {
            let st = up
                .wait("connected or waiting", |s| {
                    s.connects >= 3 || matches!(s.state, LinkState::Waiting { .. })
                })
                .await;
            if st.connects >= 3 {
                break;
            }
            if let LinkState::Waiting { until } = st.state {
                agent.clock.set(until);
                up.wait("a new attempt", |s| s.state != LinkState::Waiting { until })
                    .await;
            }
        }
        hub.store
            .wait("200 committed", |s| s.committed(agent.id) == 200)
            .await;
        let records = hub.store.with(|s| s.records(agent.id).to_vec());
        assert_eq!(records.len(), 200, "each record once");
        for (i, (seq, record)) in records.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1);
            assert_eq!(record, &applied(*seq));
        }
        // And the agent trimmed what was acked.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while outbox.stats().acked < 200 {
            assert!(std::time::Instant::now() < deadline, "outbox not trimmed");
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(outbox.stats().records, 0);
        let _ = up.stop().await;
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn revocation_stops_the_uplink_for_good_and_status_shows_it() {
    within(async {
        let mut hub = TestHub::start().await;
        let agent = TestAgent::enrolled(&hub).await;
        let mut up = start(&agent);
        up.connected(1).await;
        hub.signals.revoked(agent.id);
        let end = tokio::time::timeout(Duration::from_secs(20), up.task)
            .await
            .expect("the uplink stops")
            .unwrap();
        assert!(matches!(end, UplinkEnd::Revoked(_)), "{end:?}");
        assert!(matches!(
            up.status.borrow().state,
            LinkState::Revoked { .. }
        ));
        let record = agent.parts.identities.uplink().unwrap();
        assert!(record.revoked.is_some());
        assert!(record.last_connected.is_some());
        hub.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_job_pushed_from_the_hub_runs_on_a_simulated_router_and_its_records_come_back() {
    within(async {
        let sim = tikfleet_sim::start(tikfleet_sim::Config {
            redial: Duration::from_secs(60),
            ..tikfleet_sim::Config::local()
        })
        .await
        .expect("simulator starts");
        let api = sim.routers[0].api.expect("api");
        let mut hub = TestHub::start().await;
        let agent = TestAgent::enrolled(&hub).await;
        // The simulator's login is admin/admin; the password travels sealed.
        let router = agent.router(&api.ip().to_string(), api.port(), "admin", 1);
        let rid = router.router_id;
        hub.store.set_router(agent.id, router);
        let job = agent.job(
            rid,
            JobOp::UpsertPppSecret {
                secret: PppSecret {
                    subscriber_id: None,
                    name: "alice".into(),
                    password: Secret::new("subscriber-pw"),
                    service: PppService::Pppoe,
                    profile: "default".into(),
                    disabled: false,
                    remote_address: None,
                    comment: Some("tikfleet: alice".into()),
                },
                profile: None,
            },
        );
        hub.store.add_job(agent.id, job.clone());

        let executor = Executor::new(
            Arc::clone(&agent.parts.queue),
            Arc::clone(&agent.parts.outbox),
            Arc::clone(&agent.parts.registry) as Arc<dyn Routers>,
            agent.parts.clock.clone(),
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
            },
        );
        let (stop_exec, exec_stopped) = watch::channel(false);
        let exec = tokio::spawn(async move {
            let mut rx = exec_stopped;
            executor
                .run(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
        });
        let mut up = start(&agent);
        up.connected(1).await;

        hub.store
            .wait("the job's final update is committed", |s| {
                s.records(agent.id).iter().any(|(_, r)| {
                    matches!(r, OutboxRecord::JobUpdate(u) if u.job_id == job.id && u.status == JobStatus::Succeeded)
                })
            })
            .await;
        let records = hub.store.with(|s| s.records(agent.id).to_vec());
        let audits: Vec<_> = records
            .iter()
            .filter_map(|(_, r)| match r {
                OutboxRecord::Audit(a) if a.job_id == Some(job.id) => Some(a),
                _ => None,
            })
            .collect();
        assert!(!audits.is_empty(), "audit records of the job came back");
        assert!(audits.iter().all(|a| a.status == AuditStatus::Succeeded));
        let text = format!("{records:?}");
        assert!(!text.contains("subscriber-pw"), "no password in the records");
        // The router has the secret.
        let names: Vec<String> = {
            let mut dev = tikfleet_sim::router::lock(&sim.router(0).device);
            let now = std::time::Instant::now();
            dev.tick(now);
            dev.menu_rows("/ppp/secret", now)
                .expect("menu")
                .into_iter()
                .filter_map(|row| row.into_iter().find(|(k, _)| k == "name").map(|(_, v)| v))
                .collect()
        };
        assert!(names.contains(&"alice".to_owned()), "{names:?}");

        let _ = up.stop().await;
        let _ = stop_exec.send(true);
        exec.await.unwrap();
        hub.stop().await;
        sim.shutdown().await;
    })
    .await;
}

/// A stand-in for the controller's enrollment endpoints (the API lands separately), backed by
/// the hub's store: one-time tokens, Ed25519-signed key rotation.
#[derive(Clone)]
struct FakeApi {
    hub: MemHub,
    tenant: TenantId,
    hub_url: String,
    hub_ca_pem: String,
    tokens: Arc<Mutex<HashMap<String, bool>>>,
    seal_keys: Arc<Mutex<HashMap<AgentId, Vec<u8>>>>,
}

fn api_error(status: u16, code: &str, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::from_u16(status).unwrap(),
        axum::Json(
            serde_json::json!({"error": {"code": code, "message": message, "retryable": false}}),
        ),
    )
        .into_response()
}

async fn fake_enroll(
    axum::extract::State(api): axum::extract::State<FakeApi>,
    axum::Json(req): axum::Json<tikfleet_shared::enroll::EnrollRequest>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    match api.tokens.lock().unwrap().get_mut(&req.token) {
        None => return api_error(401, "authentication_failed", "unknown enrollment token"),
        Some(used) if *used => return api_error(409, "conflict", "enrollment token already used"),
        Some(used) => *used = true,
    }
    let public_key = b64.decode(&req.public_key).unwrap();
    let agent_id = AgentId::new();
    let key_id = tikfleet_shared::enroll::key_id(&public_key);
    api.seal_keys
        .lock()
        .unwrap()
        .insert(agent_id, b64.decode(&req.seal_key).unwrap());
    api.hub.add_agent(AgentIdentity {
        agent_id,
        tenant_id: api.tenant,
        name: req.name,
        keys: vec![AgentKey {
            key_id: key_id.clone(),
            public_key,
        }],
        revoked: false,
    });
    axum::Json(tikfleet_shared::enroll::EnrollResponse {
        agent_id,
        tenant_id: api.tenant,
        key_id,
        hub_url: api.hub_url.clone(),
        hub_ca_pem: Some(api.hub_ca_pem.clone()),
    })
    .into_response()
}

async fn fake_rotate(
    axum::extract::State(api): axum::extract::State<FakeApi>,
    axum::extract::Path(agent): axum::extract::Path<AgentId>,
    axum::Json(req): axum::Json<tikfleet_shared::enroll::RotateKeyRequest>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some(identity) = api.hub.with(|s| s.agents.get(&agent).cloned()) else {
        return api_error(404, "not_found", "no such agent");
    };
    let Some(current) = identity.keys.iter().find(|k| k.key_id == req.key_id) else {
        return api_error(401, "authentication_failed", "unknown key");
    };
    let new_key = b64.decode(&req.new_public_key).unwrap();
    let payload = tikfleet_shared::enroll::rotate_signing_payload(agent, &new_key, req.signed_at);
    let signature = b64.decode(&req.signature).unwrap();
    if ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &current.public_key)
        .verify(&payload, &signature)
        .is_err()
    {
        return api_error(401, "authentication_failed", "bad signature");
    }
    let key_id = tikfleet_shared::enroll::key_id(&new_key);
    api.hub.with(|s| {
        s.agents.get_mut(&agent).unwrap().keys = vec![AgentKey {
            key_id: key_id.clone(),
            public_key: new_key,
        }];
    });
    axum::Json(tikfleet_shared::enroll::RotateKeyResponse { key_id }).into_response()
}

async fn fake_api(hub: &TestHub, tenant: TenantId, tokens: &[&str]) -> (FakeApi, SocketAddr) {
    let api = FakeApi {
        hub: hub.store.clone(),
        tenant,
        hub_url: hub.url(),
        hub_ca_pem: hub.tls.ca_pem().unwrap().to_owned(),
        tokens: Arc::new(Mutex::new(
            tokens.iter().map(|t| ((*t).to_owned(), false)).collect(),
        )),
        seal_keys: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/api/v1/agents/enroll", axum::routing::post(fake_enroll))
        .route("/api/v1/agents/{id}/keys", axum::routing::post(fake_rotate))
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (api, addr)
}

#[tokio::test]
async fn enroll_then_rotate_the_key_and_connect_with_it() {
    use tikfleet_agent::uplink::enroll::{EnrollError, EnrollOptions, enroll, rotate_key};
    within(async {
        let mut hub = TestHub::start().await;
        let tenant = TenantId::new();
        let (api, addr) = fake_api(&hub, tenant, &["tok-1"]).await;
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let key = VaultKey::generate();
        let parts = open_parts(dir.path(), &key, &clock);
        let options = |token: &str| EnrollOptions {
            controller_url: format!("http://{addr}"),
            token: Secret::new(token),
            name: "site-7".into(),
            ca_pem: None,
        };
        let e = enroll(&parts.identities, options("tok-1")).await.unwrap();
        assert_eq!(e.tenant_id, tenant);
        assert_eq!(e.hub_url, hub.url());
        let identity = parts.identities.load().unwrap().unwrap();
        assert_eq!(
            api.seal_keys.lock().unwrap()[&e.agent_id],
            identity.seal_public().to_vec(),
            "the controller got the seal key"
        );

        // Enrolling again, or with a used token from a fresh folder, is refused with a hint.
        let again = enroll(&parts.identities, options("tok-1"))
            .await
            .unwrap_err();
        assert!(matches!(again, EnrollError::AlreadyEnrolled { .. }));
        let other = tempfile::tempdir().unwrap();
        let other_parts = open_parts(other.path(), &key, &clock);
        let reused = enroll(&other_parts.identities, options("tok-1"))
            .await
            .unwrap_err();
        assert!(reused.hint().unwrap().contains("only once"), "{reused}");
        assert!(
            !reused.to_string().contains("tok-1"),
            "the token is not echoed"
        );
        let unreachable = enroll(
            &other_parts.identities,
            EnrollOptions {
                controller_url: "http://127.0.0.1:9".into(),
                ..options("tok-2")
            },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(unreachable, EnrollError::Unreachable { .. }),
            "{unreachable}"
        );
        assert!(other_parts.identities.enrollment().unwrap().is_none());

        // The enrolled agent connects; then rotates its key and connects with the new one.
        let mut up = start_parts(&parts);
        up.connected(1).await;
        let _ = up.stop().await;
        let old_key = identity.public_key().to_vec();
        let new_id = rotate_key(&parts.identities, clock.now()).await.unwrap();
        let rotated = parts.identities.load().unwrap().unwrap();
        assert_eq!(rotated.enrollment.key_id, new_id);
        assert_ne!(rotated.public_key(), old_key.as_slice());
        let registered = hub.store.with(|s| s.agents[&e.agent_id].keys.clone());
        assert_eq!(registered.len(), 1);
        assert_eq!(registered[0].public_key, rotated.public_key());
        let mut up = start_parts(&parts);
        up.connected(1).await;
        let _ = up.stop().await;
        hub.stop().await;
    })
    .await;
}

fn start_parts(parts: &Parts) -> Running {
    let mut uplink = Uplink::new(parts.clone(), config()).unwrap();
    let status = uplink.status();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(async move { uplink.run(stopped).await });
    Running { status, stop, task }
}

fn cli(dir: &std::path::Path, args: &[&str]) -> tikfleet_agent::cli::Cli {
    use clap::Parser as _;
    let dir = dir.display().to_string();
    tikfleet_agent::cli::Cli::try_parse_from(
        ["tikfleet-agent", "--data-dir", dir.as_str()]
            .into_iter()
            .chain(args.iter().copied()),
    )
    .expect("a valid command line")
}

/// Runs an agent command in-process with `--data-dir dir`, as the binary does; returns
/// (exit code, stdout, stderr).
async fn agent_cli(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let cli = cli(dir, args);
    let mut out = tikfleet_e2e::fleet::Output::default();
    let result = tokio::time::timeout(
        LIMIT,
        tikfleet_agent::cli::run_local(&cli, &mut out, std::future::pending()),
    )
    .await
    .expect("the command finished in time");
    match result {
        Ok(()) => (0, out.text(), String::new()),
        Err(e) => (1, out.text(), format!("{e}\n")),
    }
}

#[tokio::test]
async fn the_command_line_enrolls_runs_connected_and_reports_a_revocation() {
    within(async {
        let mut hub = TestHub::start().await;
        let tenant = TenantId::new();
        let (_api, addr) = fake_api(&hub, tenant, &["tok-cli"]).await;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("http://{addr}");

        let (code, _, stderr) = agent_cli(
            dir.path(),
            &["enroll", "--controller", &url, "--token", "nope"],
        )
        .await;
        assert_eq!(code, 1);
        assert!(
            stderr.starts_with("error: the controller refused"),
            "{stderr}"
        );
        assert!(stderr.contains("hint: the token is not valid"), "{stderr}");
        assert!(
            !stderr.contains("nope"),
            "the token is not echoed: {stderr}"
        );

        let (code, stdout, stderr) = agent_cli(
            dir.path(),
            &[
                "enroll",
                "--controller",
                &url,
                "--token",
                "tok-cli",
                "--name",
                "site-9",
            ],
        )
        .await;
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.starts_with("enrolled: agent "), "{stdout}");
        assert!(stdout.contains(&tenant.to_string()), "{stdout}");
        let agent: AgentId = stdout
            .split_whitespace()
            .nth(2)
            .and_then(|id| id.parse().ok())
            .expect("agent id in the output");

        let (code, _, stderr) = agent_cli(
            dir.path(),
            &["enroll", "--controller", &url, "--token", "tok-cli"],
        )
        .await;
        assert_eq!(code, 1);
        assert!(stderr.contains("already enrolled"), "{stderr}");

        let (code, stdout, _) = agent_cli(dir.path(), &["status"]).await;
        assert_eq!(code, 0);
        assert!(
            stdout.contains(&format!("controller: {} as agent {agent}", hub.url())),
            "{stdout}"
        );

        // `run` connects; a revocation stops the uplink and `run` reports it at the end.
        let output = tikfleet_e2e::fleet::Output::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let run = cli(dir.path(), &["run"]);
        let mut out = output.clone();
        // On its own thread and runtime, as its own process would be.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let result = runtime.block_on(tikfleet_agent::cli::run_local(&run, &mut out, async {
                let _ = stopped.await;
            }));
            let _ = done_tx.send(result.map_err(|e| e.to_string()));
        });
        hub.store
            .wait("the agent connected", |s| s.connected(agent))
            .await;
        let first = output.text();
        assert!(first.starts_with("tikfleet-agent running:"), "{first}");
        assert!(first.contains(&format!("as agent {agent}")), "{first}");
        hub.signals.revoked(agent);
        hub.store
            .wait("the agent is gone", |s| !s.connected(agent))
            .await;
        // `run` says so at once, while it keeps running its jobs.
        tikfleet_e2e::fleet::eventually("run to report the revocation", LIMIT, || async {
            output
                .text()
                .contains("the controller revoked this agent")
                .then_some(())
        })
        .await;
        let _ = stop.send(());
        tokio::time::timeout(LIMIT, done)
            .await
            .expect("run stops in time")
            .unwrap()
            .expect("run ends cleanly");
        let rest: Vec<String> = output.text().lines().map(str::to_owned).collect();
        assert!(
            rest.iter()
                .any(|l| l.starts_with("tikfleet-agent stopped:")),
            "{rest:?}"
        );
        assert!(
            rest.iter()
                .any(|l| l.starts_with("the controller revoked this agent")),
            "{rest:?}"
        );
        let (_, stdout, _) = agent_cli(dir.path(), &["status"]).await;
        assert!(stdout.contains("controller: REVOKED"), "{stdout}");
        hub.stop().await;
    })
    .await;
}
