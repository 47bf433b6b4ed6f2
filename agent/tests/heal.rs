//! Self-healing against the in-process simulator, on a manual clock: an unreachable router
//! is probed on a slowing schedule and at every round again once it answers; a hung API
//! (the simulator's `api_hung` fault) is rebooted over SSH only when the policy is on, only
//! after the API has been out long enough, once per interval — across a restart of the
//! agent too — audited; an authentication failure never leads to a reboot.

mod routeros_common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use routeros_common::{LIMIT, T0, endpoint, faults, within};
use tikfleet_agent::clock::{ManualClock, SharedClock};
use tikfleet_agent::executor::{Background, Executor, ExecutorConfig, RetryPolicy, Routers};
use tikfleet_agent::heal::{AUDIT_ACTION, RebootLedger, SelfHeal, SelfHealConfig};
use tikfleet_agent::hostkeys::SledHostKeys;
use tikfleet_agent::outbox::{Outbox, OutboxConfig};
use tikfleet_agent::probe::{Backoff, ProbeConfig, ProbeTargets, Prober, backoff_delay};
use tikfleet_agent::queue::{MemJobStore, Queue};
use tikfleet_agent::ratelimit::Rate;
use tikfleet_agent::router::{RouterEndpoint, TlsMode};
use tikfleet_agent::routeros::DriverConfig;
use tikfleet_agent::ssh::SshConfig;
use tikfleet_agent::store::{Store, StoreConfig};
use tikfleet_shared::record::{AuditRecord, AuditStatus, OutboxRecord, TelemetrySample};
use tikfleet_shared::{ErrorCode, RouterId, UnixMillis};
use tikfleet_sim::faults::FaultsPatch;
use tikfleet_sim::router::lock;
use tikfleet_sim::{Config, Running};

const INTERVAL: Duration = Duration::from_secs(30);

/// Short real-time driver timeouts: a hung API costs a probe this long.
fn driver() -> DriverConfig {
    DriverConfig {
        connect_timeout: Duration::from_millis(500),
        command_timeout: Duration::from_secs(2),
        pool_size: 1,
    }
}

struct Rig {
    sim: Running,
    clock: ManualClock,
    store: Store,
    outbox: Arc<Outbox>,
    executor: Executor<MemJobStore>,
    routers: HashMap<RouterId, RouterEndpoint>,
    router: RouterId,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// A simulator with one router (reboots take 100 ms), its endpoint with `password`, and
    /// an executor (not running: the probes' gate and the audit pipe).
    async fn new(password: &str) -> Self {
        let sim = tikfleet_sim::start(Config {
            redial: Duration::from_secs(60),
            reboot_down: Duration::from_millis(100),
            ..Config::local()
        })
        .await
        .expect("simulator starts");
        let ep = RouterEndpoint {
            ssh_port: sim.routers[0].ssh.expect("ssh").port(),
            ..endpoint(sim.routers[0].api.expect("api"), TlsMode::Plain, password)
        };
        let router = ep.id;
        let routers: HashMap<_, _> = [(router, ep)].into();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let outbox = Arc::new(Outbox::open(&store, OutboxConfig::default()).unwrap());
        let clock = ManualClock::new(T0);
        let executor = Executor::new(
            Arc::new(Queue::in_memory()),
            Arc::clone(&outbox),
            Arc::new(routers.clone()) as Arc<dyn Routers>,
            Arc::new(clock.clone()) as SharedClock,
            ExecutorConfig {
                driver: driver(),
                per_router: 1,
                router_rate: Rate::per_second(1000, 1000),
                tenant_rate: Rate::per_second(1000, 1000),
                retry: RetryPolicy::default(),
                seed: 7,
            },
        );
        Self {
            sim,
            clock,
            store,
            outbox,
            executor,
            routers,
            router,
            _dir: dir,
        }
    }

    /// A prober of the rig's router (no host sample), with `heal` if given. A new prober
    /// and policy start with empty memories, as after a restart of the agent.
    fn prober(&self, heal: Option<SelfHealConfig>) -> Prober {
        let shared: SharedClock = Arc::new(self.clock.clone());
        let prober = Prober::new(
            Arc::new(self.routers.clone()) as Arc<dyn ProbeTargets>,
            Arc::new(self.executor.clone()) as Arc<dyn Background>,
            Arc::clone(&self.outbox),
            Arc::clone(&shared),
            ProbeConfig {
                interval: INTERVAL,
                driver: driver(),
                data_dir: self._dir.path().to_path_buf(),
                agent_id: None,
                ..ProbeConfig::default()
            },
        );
        match heal {
            None => prober,
            Some(config) => prober.with_self_heal(Arc::new(SelfHeal::new(
                config,
                RebootLedger::open(&self.store).unwrap(),
                Arc::new(SledHostKeys::open(&self.store).unwrap()),
                Arc::clone(self.executor.audit()),
                shared,
            ))),
        }
    }

    fn now(&self) -> Duration {
        let now: UnixMillis = tikfleet_agent::clock::Clock::now(&self.clock);
        now.duration_since(T0)
    }

    /// Commands of one word the router saw (API and SSH alike).
    fn commands(&self, word: &str) -> u64 {
        lock(&self.sim.router(0).stats)
            .view(None, Instant::now())
            .by_path
            .get(word)
            .copied()
            .unwrap_or(0)
    }

    fn connections(&self) -> u64 {
        lock(&self.sim.router(0).stats).connections
    }

    fn hang(&self, hung: bool) {
        faults(
            &self.sim,
            FaultsPatch {
                api_hung: Some(hung),
                ..FaultsPatch::default()
            },
        );
    }

    fn hung(&self) -> bool {
        lock(&self.sim.router(0).faults).api_hung
    }

    fn heal_audits(&self) -> Vec<AuditRecord> {
        self.outbox
            .read_after(0, usize::MAX)
            .unwrap()
            .into_iter()
            .filter_map(|(_, r)| match r {
                OutboxRecord::Audit(a) if a.action == AUDIT_ACTION => Some(a),
                _ => None,
            })
            .collect()
    }

    fn unreachable_codes(&self) -> Vec<ErrorCode> {
        self.outbox
            .read_after(0, usize::MAX)
            .unwrap()
            .into_iter()
            .filter_map(|(_, r)| match r {
                OutboxRecord::Telemetry(t) => match t.sample {
                    TelemetrySample::RouterUnreachable { error, .. } => Some(error.code),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// Polls (real time) until the simulated router is up again.
    async fn wait_up(&self) {
        let start = Instant::now();
        while !self.sim.router(0).is_up() {
            assert!(start.elapsed() < LIMIT, "the router did not come back");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn heal_on(api_down: Duration) -> SelfHealConfig {
    SelfHealConfig {
        ssh_reboot: true,
        api_down,
        ssh: SshConfig {
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            ..SshConfig::default()
        },
        ..SelfHealConfig::default()
    }
}

#[test]
fn the_wait_doubles_up_to_the_cap() {
    let cap = Duration::from_secs(300);
    let waits: Vec<u64> = (1..=8)
        .map(|n| backoff_delay(INTERVAL, cap, n).as_secs())
        .collect();
    assert_eq!(waits, [30, 60, 120, 240, 300, 300, 300, 300]);
    assert_eq!(backoff_delay(INTERVAL, cap, u32::MAX), cap);
    // A cap below the interval never makes probes more frequent than the interval.
    assert_eq!(backoff_delay(INTERVAL, Duration::from_secs(5), 3), INTERVAL);
}

#[tokio::test]
async fn an_unreachable_router_is_probed_with_growing_gaps_then_every_round_again() {
    within(async {
        let rig = Rig::new("admin").await;
        let prober = rig.prober(None);
        faults(
            &rig.sim,
            FaultsPatch {
                refuse: Some(true),
                ..FaultsPatch::default()
            },
        );
        // Rounds every 30 s for 25 minutes; note when the router saw a connection attempt.
        let mut attempts = Vec::new();
        let mut backed_off = 0;
        while rig.now() <= Duration::from_secs(1_500) {
            let before = rig.connections();
            let report = prober.round().await;
            backed_off += report.backed_off;
            if rig.connections() > before {
                attempts.push(rig.now().as_secs());
                assert_eq!(report.unreachable, 1, "{report:?}");
            } else {
                assert_eq!((report.backed_off, report.unreachable), (1, 0));
            }
            rig.clock.advance(INTERVAL);
        }
        // Gaps of 30 s, 1, 2, 4 min, then 5 min (the cap).
        assert_eq!(attempts, [0, 30, 90, 210, 450, 750, 1_050, 1_350]);
        assert_eq!(backed_off, 51 - 8);
        assert_eq!(
            prober.backoff(rig.router),
            Some(Backoff {
                failures: 8,
                next_at: T0.saturating_add(Duration::from_secs(1_650)),
            })
        );
        assert_eq!(prober.unreachable_count(), 1, "the metric's gauge");
        assert_eq!(rig.unreachable_codes().len(), 8);
        assert!(
            rig.unreachable_codes()
                .iter()
                .all(|c| *c == ErrorCode::ConnectionRefused)
        );

        // The router answers again: the next scheduled probe finds it, and from then on it
        // is probed every round (on the probes' kept connection: count the samples).
        faults(
            &rig.sim,
            FaultsPatch {
                refuse: Some(false),
                ..FaultsPatch::default()
            },
        );
        let samples = |rig: &Rig| rig.commands("/system/resource/print");
        while rig.now() < Duration::from_secs(1_650) {
            let report = prober.round().await;
            assert_eq!(report.backed_off, 1, "not due before 1650 s");
            rig.clock.advance(INTERVAL);
        }
        let report = prober.round().await;
        assert_eq!(report.sampled, 1, "{report:?}");
        assert_eq!(prober.backoff(rig.router), None);
        for _ in 0..3 {
            rig.clock.advance(INTERVAL);
            let before = samples(&rig);
            let report = prober.round().await;
            assert_eq!((report.sampled, report.backed_off), (1, 0), "{report:?}");
            assert!(samples(&rig) > before);
        }
        assert!(prober.unreachable().is_empty());
        assert_eq!(prober.unreachable_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn with_the_policy_off_a_hung_api_is_never_rebooted() {
    within(async {
        let rig = Rig::new("admin").await;
        // The default policy: off.
        let config = SelfHealConfig::default();
        assert!(!config.ssh_reboot);
        let prober = rig.prober(Some(config));
        rig.hang(true);
        while rig.now() <= Duration::from_secs(1_500) {
            let report = prober.round().await;
            assert_eq!(report.rebooted, 0);
            rig.clock.advance(INTERVAL);
        }
        // Eight probes timed out; nothing was sent over SSH; the API is still hung.
        let codes = rig.unreachable_codes();
        assert_eq!(codes.len(), 8, "{codes:?}");
        assert!(codes.iter().all(|c| *c == ErrorCode::Timeout), "{codes:?}");
        assert_eq!(rig.commands("/system/reboot"), 0);
        assert_eq!(rig.commands("/system/identity/print"), 0);
        assert!(rig.hung());
        assert!(rig.heal_audits().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_hung_api_is_rebooted_over_ssh_once_per_interval_even_across_a_restart() {
    within(async {
        let rig = Rig::new("admin").await;
        let api_down = Duration::from_secs(120);
        let prober = rig.prober(Some(heal_on(api_down)));
        rig.hang(true);

        // Probes at 0, 30 and 90 s: out, not yet for 120 s. At 210 s: rebooted.
        let rebooted_at = loop {
            let report = prober.round().await;
            if report.rebooted > 0 {
                assert_eq!(report.rebooted, 1);
                break rig.now();
            }
            assert_eq!(rig.commands("/system/reboot"), 0);
            assert!(rig.now() < Duration::from_secs(300), "no reboot");
            rig.clock.advance(INTERVAL);
        };
        assert_eq!(rebooted_at, Duration::from_secs(210));
        assert_eq!(rig.commands("/system/reboot"), 1);
        assert_eq!(
            rig.commands("/system/identity/print"),
            1,
            "the SSH login was checked first"
        );

        // Audited, with the reason.
        let audits = rig.heal_audits();
        assert_eq!(audits.len(), 1, "{audits:?}");
        let a = &audits[0];
        assert_eq!(a.router_id, Some(rig.router));
        assert_eq!(a.status, AuditStatus::Succeeded);
        assert_eq!(a.at, T0.saturating_add(rebooted_at));
        assert_eq!(a.params.get("via"), Some("ssh"));
        assert_eq!(a.params.get("command"), Some("/system reboot"));
        assert_eq!(a.params.get("api_error"), Some("timeout"));
        assert_eq!(a.params.get("api_down_secs"), Some("210"));
        assert!(
            a.params
                .get("reason")
                .is_some_and(|r| r.contains("210 s") && r.contains("SSH login works")),
            "{a:?}"
        );

        // The reboot cured the API: the next probe, at the normal interval, samples it.
        rig.wait_up().await;
        assert!(!rig.hung());
        rig.clock.advance(INTERVAL);
        let report = prober.round().await;
        assert_eq!(report.sampled, 1, "{report:?}");
        assert_eq!(prober.backoff(rig.router), None);
        drop(prober);

        // The agent restarts (fresh memory, same store) and the API hangs again: it stays
        // out far beyond api_down, but the reboot 6 h ago is too recent.
        let prober = rig.prober(Some(heal_on(api_down)));
        rig.hang(true);
        let hung_at = rig.now();
        while rig.now() <= hung_at + Duration::from_secs(1_000) {
            let report = prober.round().await;
            assert_eq!(report.rebooted, 0);
            rig.clock.advance(INTERVAL);
        }
        assert_eq!(rig.commands("/system/reboot"), 1, "no second reboot");
        assert!(rig.hung());
        assert_eq!(rig.heal_audits().len(), 1);

        // Six hours after the first reboot, the next probe reboots it again.
        let six_hours = T0.saturating_add(rebooted_at + Duration::from_secs(21_600));
        let now: UnixMillis = tikfleet_agent::clock::Clock::now(&rig.clock);
        rig.clock.advance(six_hours.duration_since(now));
        let report = prober.round().await;
        assert_eq!(report.rebooted, 1, "{report:?}");
        assert_eq!(rig.commands("/system/reboot"), 2);
        assert_eq!(rig.heal_audits().len(), 2);
        rig.wait_up().await;
        assert!(!rig.hung());
    })
    .await;
}

#[tokio::test]
async fn an_authentication_failure_never_leads_to_a_reboot() {
    within(async {
        let rig = Rig::new("not-the-password").await;
        let heal = heal_on(Duration::from_secs(120));
        let prober = rig.prober(Some(heal));
        while rig.now() <= Duration::from_secs(1_500) {
            let report = prober.round().await;
            assert_eq!(report.rebooted, 0);
            rig.clock.advance(INTERVAL);
        }
        let codes = rig.unreachable_codes();
        assert_eq!(codes.len(), 8, "probed on the slowing schedule: {codes:?}");
        assert!(
            codes.iter().all(|c| *c == ErrorCode::AuthenticationFailed),
            "{codes:?}"
        );
        assert_eq!(rig.commands("/system/reboot"), 0);
        assert_eq!(rig.commands("/system/identity/print"), 0, "no SSH at all");
        assert!(rig.heal_audits().is_empty());
    })
    .await;
}

#[tokio::test]
async fn the_reboot_ledger_survives_a_restart() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let router = RouterId::new();
        let other = RouterId::new();
        let day = Duration::from_secs(86_400);
        {
            let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
            let ledger = RebootLedger::open(&store).unwrap();
            assert!(ledger.reboots(router).unwrap().is_empty());
            ledger.record(router, T0).await.unwrap();
            ledger
                .record(router, T0.saturating_add(Duration::from_secs(7 * 3_600)))
                .await
                .unwrap();
        }
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let ledger = RebootLedger::open(&store).unwrap();
        assert_eq!(
            ledger.reboots(router).unwrap(),
            [T0, T0.saturating_add(Duration::from_secs(7 * 3_600))]
        );
        assert!(ledger.reboots(other).unwrap().is_empty());
        // Reboots older than a day are forgotten, the latest is always kept.
        let later = T0.saturating_add(day * 3);
        ledger.record(router, later).await.unwrap();
        assert_eq!(ledger.reboots(router).unwrap(), [later]);
    })
    .await;
}
