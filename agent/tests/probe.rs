//! Probes against the in-process simulator, on a manual clock: health samples with the
//! simulator's CPU and memory controls, an unreachable router, version checks (a failing
//! `check-for-updates`, lagging firmware, the daily schedule), the host sample, and probes
//! yielding to a job that is at the router.

mod routeros_common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use routeros_common::{LIMIT, T0, endpoint, faults, within};
use tikfleet_agent::clock::{ManualClock, SharedClock};
use tikfleet_agent::executor::{Background, Executor, ExecutorConfig, RetryPolicy, Routers};
use tikfleet_agent::outbox::{Outbox, OutboxConfig};
use tikfleet_agent::probe::{ProbeConfig, ProbeTargets, Prober, RoundReport};
use tikfleet_agent::queue::{MemJobStore, Queue};
use tikfleet_agent::ratelimit::Rate;
use tikfleet_agent::router::{RouterEndpoint, TlsMode};
use tikfleet_agent::routeros::DriverConfig;
use tikfleet_agent::store::{Store, StoreConfig};
use tikfleet_shared::job::{Job, JobOp, JobStatus, Priority};
use tikfleet_shared::record::{
    HostSample, OutboxRecord, RouterSample, TelemetrySample, VersionSample,
};
use tikfleet_shared::{AgentId, ErrorCode, JobId, RouterId};
use tikfleet_sim::faults::FaultsPatch;
use tikfleet_sim::router::lock;
use tikfleet_sim::{Config, Running};

struct Rig {
    sim: Running,
    clock: ManualClock,
    outbox: Arc<Outbox>,
    queue: Arc<Queue<MemJobStore>>,
    executor: Executor<MemJobStore>,
    routers: HashMap<RouterId, RouterEndpoint>,
    ids: Vec<RouterId>,
    prober: Prober,
    _dir: tempfile::TempDir,
}

fn driver() -> DriverConfig {
    DriverConfig {
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(10),
        pool_size: 1,
    }
}

impl Rig {
    /// A simulator of `version` with one router, plus `extra` endpoints that nothing
    /// listens on; an executor (not running unless a test starts it) and a prober.
    async fn new(version: &str, extra_dead: usize) -> Self {
        let sim = tikfleet_sim::start(Config {
            version: version.into(),
            redial: Duration::from_secs(60),
            ..Config::local()
        })
        .await
        .expect("simulator starts");
        let mut ids = Vec::new();
        let mut routers = HashMap::new();
        let live = endpoint(sim.routers[0].api.expect("api"), TlsMode::Plain, "admin");
        let tenant = live.tenant;
        ids.push(live.id);
        routers.insert(live.id, live);
        for _ in 0..extra_dead {
            // A port that was free a moment ago: connecting is refused.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let dead = RouterEndpoint {
                tenant,
                ..endpoint(port, TlsMode::Plain, "admin")
            };
            ids.push(dead.id);
            routers.insert(dead.id, dead);
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let outbox = Arc::new(Outbox::open(&store, OutboxConfig::default()).unwrap());
        let clock = ManualClock::new(T0);
        let shared: SharedClock = Arc::new(clock.clone());
        let queue = Arc::new(Queue::in_memory());
        let executor = Executor::new(
            Arc::clone(&queue),
            Arc::clone(&outbox),
            Arc::new(routers.clone()) as Arc<dyn Routers>,
            Arc::clone(&shared),
            ExecutorConfig {
                driver: driver(),
                per_router: 1,
                router_rate: Rate::per_second(1000, 1000),
                tenant_rate: Rate::per_second(1000, 1000),
                retry: RetryPolicy::default(),
                seed: 7,
            },
        );
        let prober = Prober::new(
            Arc::new(routers.clone()) as Arc<dyn ProbeTargets>,
            Arc::new(executor.clone()) as Arc<dyn Background>,
            Arc::clone(&outbox),
            shared,
            ProbeConfig {
                driver: driver(),
                data_dir: dir.path().to_path_buf(),
                agent_id: Some(AgentId::new()),
                ..ProbeConfig::default()
            },
        );
        Self {
            sim,
            clock,
            outbox,
            queue,
            executor,
            routers,
            ids,
            prober,
            _dir: dir,
        }
    }

    fn samples(&self) -> Vec<TelemetrySample> {
        self.outbox
            .read_after(0, usize::MAX)
            .unwrap()
            .into_iter()
            .filter_map(|(_, r)| match r {
                OutboxRecord::Telemetry(t) => Some(t.sample),
                _ => None,
            })
            .collect()
    }

    fn router_samples(&self) -> Vec<RouterSample> {
        self.samples()
            .into_iter()
            .filter_map(|s| match s {
                TelemetrySample::Router(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn versions(&self) -> Vec<VersionSample> {
        self.samples()
            .into_iter()
            .filter_map(|s| match s {
                TelemetrySample::Versions(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    fn hosts(&self) -> Vec<HostSample> {
        self.samples()
            .into_iter()
            .filter_map(|s| match s {
                TelemetrySample::Host(h) => Some(h),
                _ => None,
            })
            .collect()
    }
}

#[tokio::test]
async fn a_round_samples_the_router_with_the_simulators_cpu_and_memory() {
    within(async {
        let rig = Rig::new("7.16.2", 0).await;
        faults(
            &rig.sim,
            FaultsPatch {
                cpu_load: Some(77),
                memory_load: Some(25),
                ..FaultsPatch::default()
            },
        );
        let report = rig.prober.round().await;
        assert_eq!(
            report,
            RoundReport {
                sampled: 1,
                versions: 1,
                host: true,
                ..RoundReport::default()
            }
        );
        let samples = rig.router_samples();
        assert_eq!(samples.len(), 1);
        let s = &samples[0];
        assert_eq!(s.router_id, rig.ids[0]);
        assert_eq!(s.cpu_load_percent, 77);
        assert!(s.total_memory_bytes > 0);
        assert_eq!(s.free_memory_bytes, s.total_memory_bytes * 75 / 100);
        assert!(s.total_disk_bytes >= s.free_disk_bytes && s.total_disk_bytes > 0);
        assert_eq!(s.routeros_version.as_deref(), Some("7.16.2"));
        assert!(
            s.interfaces.iter().any(|i| i.name == "ether1"),
            "{:?}",
            s.interfaces
        );
        assert!(s.interfaces.iter().all(|i| !i.name.starts_with('<')));

        // The controls move; the next round (no version check: not due) sees it.
        faults(
            &rig.sim,
            FaultsPatch {
                cpu_load: Some(95),
                memory_load: Some(95),
                ..FaultsPatch::default()
            },
        );
        let report = rig.prober.round().await;
        assert_eq!((report.sampled, report.versions), (1, 0));
        let s = rig.router_samples().pop().unwrap();
        assert_eq!(s.cpu_load_percent, 95);
        assert_eq!(s.free_memory_bytes, s.total_memory_bytes * 5 / 100);

        // The host sample: the data folder's disk, the outbox, the queue.
        let host = rig.hosts().pop().expect("host sample");
        assert!(host.total_disk_bytes > 0 && host.total_memory_bytes > 0);
        assert!(host.outbox_records > 0);
        assert_eq!(host.queued_jobs, 0);
        assert_eq!(
            host.outbox_max_bytes,
            Some(OutboxConfig::default().max_bytes)
        );
        assert_eq!(host.telemetry_dropped, Some(0));
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_router_is_reported_and_the_others_still_sampled() {
    within(async {
        let rig = Rig::new("7.16.2", 1).await;
        let report = rig.prober.round().await;
        assert_eq!((report.sampled, report.unreachable), (1, 1));
        let dead = rig.ids[1];
        let unreachable: Vec<_> = rig
            .samples()
            .into_iter()
            .filter_map(|s| match s {
                TelemetrySample::RouterUnreachable { router_id, error } => Some((router_id, error)),
                _ => None,
            })
            .collect();
        assert_eq!(unreachable.len(), 1);
        assert_eq!(unreachable[0].0, dead);
        assert_eq!(unreachable[0].1.code, ErrorCode::ConnectionRefused);
        assert!(rig.router_samples().iter().all(|s| s.router_id != dead));
    })
    .await;
}

#[tokio::test]
async fn versions_on_connect_then_daily_and_a_failed_update_check_is_unknown() {
    within(async {
        let rig = Rig::new("7.15.3", 0).await;
        {
            let mut dev = lock(&rig.sim.router(0).device);
            dev.update.latest = "7.16.2".into();
            dev.update.firmware = Some("7.14".into());
        }
        rig.prober.round().await;
        let v = rig.versions().pop().expect("a version sample on connect");
        assert_eq!(v.router_id, rig.ids[0]);
        assert_eq!(v.ros_version.as_deref(), Some("7.15.3"));
        assert_eq!(v.installed.as_deref(), Some("7.15.3"));
        assert_eq!(v.channel.as_deref(), Some("stable"));
        assert_eq!(v.latest.as_deref(), Some("7.16.2"));
        assert_eq!(v.update_available, Some(true));
        assert_eq!(v.update_error, None);
        assert_eq!(v.firmware_current.as_deref(), Some("7.14"));
        assert_eq!(v.firmware_upgrade.as_deref(), Some("7.15.3"));
        assert!(v.board.is_some());

        // Not due again within the day.
        rig.prober.round().await;
        assert_eq!(rig.versions().len(), 1);

        // A day later the check runs again; the router cannot reach the update server now.
        faults(
            &rig.sim,
            FaultsPatch {
                traps: Some(
                    [(
                        "/system/package/update/check-for-updates".to_owned(),
                        "ERROR: could not resolve dns name".to_owned(),
                    )]
                    .into(),
                ),
                ..FaultsPatch::default()
            },
        );
        rig.clock.advance(Duration::from_secs(86_400));
        let report = rig.prober.round().await;
        assert_eq!((report.sampled, report.versions), (1, 1), "{report:?}");
        let v = rig.versions().pop().unwrap();
        assert_eq!(v.update_available, None, "{v:?}");
        assert!(v.update_error.is_some(), "{v:?}");
        assert_eq!(v.latest, None);
        assert_eq!(v.installed.as_deref(), Some("7.15.3"));
        assert_eq!(v.firmware_current.as_deref(), Some("7.14"));
    })
    .await;
}

/// Polls (real time) until `f` holds; the test's timeout bounds it.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < LIMIT, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn probes_skip_a_router_while_a_job_is_at_it() {
    within(async {
        let rig = Rig::new("7.16.2", 0).await;
        let router = rig.ids[0];
        let ep = &rig.routers[&router];
        // The critical job's commands take a while (real time), so it holds the router.
        faults(
            &rig.sim,
            FaultsPatch {
                delay_ms: Some(300),
                ..FaultsPatch::default()
            },
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let exec = rig.executor.clone();
        let task = tokio::spawn(async move {
            exec.run(async {
                let _ = stopped.await;
            })
            .await;
        });
        let id = JobId::new();
        rig.queue
            .enqueue(
                Job {
                    id,
                    tenant_id: ep.tenant,
                    router_id: router,
                    idempotency_key: id.to_string(),
                    priority: Priority::Critical,
                    op: JobOp::Disable {
                        account: tikfleet_shared::domain::AccountRef {
                            kind: tikfleet_shared::domain::AccountKind::Ppp,
                            name: "nobody".into(),
                        },
                    },
                    created_at: T0,
                    max_attempts: 1,
                    generation: None,
                },
                T0,
            )
            .await
            .unwrap();
        eventually("the job runs", || {
            rig.queue.get(id).unwrap().unwrap().status == JobStatus::Running
        })
        .await;
        let commands_before = lock(&rig.sim.router(0).stats)
            .view(None, Instant::now())
            .total;
        let report = rig.prober.round().await;
        assert_eq!((report.skipped, report.sampled), (1, 0), "{report:?}");
        assert!(rig.router_samples().is_empty());
        // Nothing of the probe reached the router while the job was at it.
        let after = lock(&rig.sim.router(0).stats).view(None, Instant::now());
        assert!(
            !after.by_path.contains_key("/system/resource/print"),
            "{after:?} (before: {commands_before})"
        );

        eventually("the job ends", || {
            rig.queue.get(id).unwrap().unwrap().status != JobStatus::Running
        })
        .await;
        faults(
            &rig.sim,
            FaultsPatch {
                delay_ms: Some(0),
                ..FaultsPatch::default()
            },
        );
        let report = rig.prober.round().await;
        assert_eq!((report.skipped, report.sampled), (0, 1), "{report:?}");
        let _ = stop.send(());
        task.await.unwrap();
    })
    .await;
}
