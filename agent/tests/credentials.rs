//! Credential rotation and API lockdown against the simulator: a rotation interrupted at every
//! step (and by a lost connection at every command) always leaves a working credential in the
//! registry, and the next run leaves no stale tikfleet user; no password reaches an audit
//! record; lockdown keeps the agent's access and rolls back when a fresh login fails.

mod routeros_common;

use std::collections::BTreeMap;
use std::sync::Arc;

use routeros_common::*;
use tikfleet_agent::clock::{ManualClock, SharedClock};
use tikfleet_agent::credentials::{self, Context, GROUP, Step, USER_PREFIX};
use tikfleet_agent::registry::Registry;
use tikfleet_agent::router::TlsMode;
use tikfleet_agent::routeros::{MemoryObserver, RouterOsClient};
use tikfleet_agent::store::{Store, StoreConfig};
use tikfleet_agent::vault::{Vault, VaultKey};
use tikfleet_shared::ErrorCode;
use tikfleet_sim::Running;
use tikfleet_sim::faults::FaultsPatch;
use tikfleet_sim::router::lock;

/// A user an administrator made with tikfleet's prefix but without its marker.
const HAND_MADE: &str = "tikfleet-ops";

struct Setup {
    sim: Running,
    registry: Registry,
    router: tikfleet_shared::RouterId,
    observer: MemoryObserver,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let sim = sim("7.16.2").await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreConfig::new(dir.path().join("store"))).unwrap();
    let registry = Registry::open(&store, Vault::new(&VaultKey::generate())).unwrap();
    let ep = endpoint(sim.routers[0].api.unwrap(), TlsMode::Plain, "admin");
    let router = ep.id;
    registry.add(ep).await.unwrap();
    Setup {
        sim,
        registry,
        router,
        observer: MemoryObserver::new(),
        _dir: dir,
    }
}

impl Setup {
    fn ctx(&self) -> Context {
        let clock: SharedClock = Arc::new(ManualClock::new(T0));
        Context {
            driver: quick(),
            clock,
            observer: Arc::new(self.observer.clone()),
        }
    }

    /// A fresh client with the registry's credential (this is the "works" check).
    async fn client(&self) -> Result<RouterOsClient, tikfleet_agent::routeros::DriverError> {
        let ep = self.registry.get(self.router).unwrap();
        RouterOsClient::connect(
            ep,
            quick(),
            Arc::new(ManualClock::new(T0)),
            Arc::new(self.observer.clone()),
        )
        .await
    }

    fn users(&self) -> Vec<String> {
        menu(&self.sim, "/user")
            .into_iter()
            .filter_map(|r| r.get("name").cloned())
            .collect()
    }

    /// The registry's credential logs in, and the router has no tikfleet user but the
    /// current one.
    async fn assert_clean(&self) {
        self.client()
            .await
            .expect("the registry's credential works");
        let current = self.registry.info(self.router).unwrap().username;
        let stale: Vec<String> = self
            .users()
            .into_iter()
            .filter(|u| u.starts_with(USER_PREFIX) && *u != current && u != HAND_MADE)
            .collect();
        assert!(stale.is_empty(), "stale tikfleet users: {stale:?}");
        assert!(
            self.registry
                .pending_rotation(self.router)
                .unwrap()
                .is_none()
        );
        assert!(self.users().contains(&"admin".to_string()), "admin is kept");
    }
}

#[tokio::test]
async fn rotation_makes_a_dedicated_user_and_keeps_the_admin_account() {
    within(async {
        let s = setup().await;
        let client = s.client().await.unwrap();
        client
            .run(
                tikfleet_agent::routeros::Cmd::new("/user/add")
                    .attr("name", HAND_MADE)
                    .attr("group", "full")
                    .attr("password", "x"),
            )
            .await
            .unwrap();
        let detail = credentials::rotate(&client, &s.registry, &s.ctx())
            .await
            .unwrap();
        let info = s.registry.info(s.router).unwrap();
        assert!(info.username.starts_with(USER_PREFIX), "{info:?}");
        assert!(detail.contains("kept admin"), "{detail}");
        let user = row(&s.sim, "/user", "name", &info.username).unwrap();
        assert_eq!(user.get("group").map(String::as_str), Some(GROUP));
        let group = row(&s.sim, "/user/group", "name", GROUP).unwrap();
        assert_eq!(
            group.get("policy").map(String::as_str),
            Some(credentials::POLICIES)
        );
        s.assert_clean().await;

        // A second rotation removes the first rotated user.
        let first = info.username;
        let client = s.client().await.unwrap();
        let detail = credentials::rotate(&client, &s.registry, &s.ctx())
            .await
            .unwrap();
        assert!(detail.contains(&format!("removed {first}")), "{detail}");
        assert!(!s.users().contains(&first));
        assert!(
            s.users().contains(&HAND_MADE.to_string()),
            "unmarked users stay"
        );
        s.assert_clean().await;
    })
    .await;
}

#[tokio::test]
async fn rotation_interrupted_after_every_step_then_rerun() {
    within(async {
        let s = setup().await;
        // Twice over the steps: first from the admin's account, then from rotated users.
        for round in 0..2 {
            for step in Step::ALL.into_iter().filter(|s| *s != Step::Done) {
                let client = s.client().await.unwrap();
                let err = credentials::rotate_until(&client, &s.registry, &s.ctx(), step)
                    .await
                    .unwrap_err();
                assert!(err.message().contains("interrupted"), "{err}");
                // Whatever was left behind, the registry's credential works.
                s.client()
                    .await
                    .unwrap_or_else(|e| panic!("round {round}, after {step:?}: {e}"));
                // The next run cleans up and rotates.
                let client = s.client().await.unwrap();
                credentials::rotate(&client, &s.registry, &s.ctx())
                    .await
                    .unwrap_or_else(|e| panic!("round {round}, rerun after {step:?}: {e}"));
                s.assert_clean().await;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn rotation_cut_by_a_lost_connection_at_every_command_then_rerun() {
    within(async {
        let s = setup().await;
        let mut failures = 0;
        for n in 1..=10 {
            // Commands after the login on each connection, the version read included.
            faults(
                &s.sim,
                FaultsPatch {
                    drop_after: Some(n),
                    ..Default::default()
                },
            );
            let res = match s.client().await {
                Ok(client) => credentials::rotate(&client, &s.registry, &s.ctx()).await,
                Err(e) => Err(e),
            };
            if res.is_err() {
                failures += 1;
            }
            clear_faults(&s.sim);
            s.client()
                .await
                .unwrap_or_else(|e| panic!("drop after {n}: the credential broke: {e}"));
            let client = s.client().await.unwrap();
            credentials::rotate(&client, &s.registry, &s.ctx())
                .await
                .unwrap_or_else(|e| panic!("rerun after a drop at {n}: {e}"));
            s.assert_clean().await;
        }
        assert!(failures > 0, "the drops interrupted rotations ({failures})");
    })
    .await;
}

#[tokio::test]
async fn no_password_reaches_the_audit_records() {
    within(async {
        let s = setup().await;
        let mut passwords = vec!["admin".to_string()];
        for _ in 0..2 {
            let client = s.client().await.unwrap();
            credentials::rotate(&client, &s.registry, &s.ctx())
                .await
                .unwrap();
            passwords.push(
                s.registry
                    .get(s.router)
                    .unwrap()
                    .password
                    .expose()
                    .to_string(),
            );
        }
        let events = s.observer.events();
        assert!(events.iter().any(|e| e.action == "/user/add"));
        for ev in &events {
            let params = format!("{:?}", ev.params);
            for pw in &passwords {
                // "admin" is also a user name; only the password parameter matters for it.
                if pw == "admin" {
                    assert_ne!(
                        ev.params.get("password"),
                        Some("admin"),
                        "{} audited the password",
                        ev.action
                    );
                } else {
                    assert!(
                        !params.contains(pw.as_str()),
                        "{} audited a password",
                        ev.action
                    );
                }
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_controller_update_with_the_original_user_keeps_the_rotated_login() {
    within(async {
        let s = setup().await;
        let client = s.client().await.unwrap();
        credentials::rotate(&client, &s.registry, &s.ctx())
            .await
            .unwrap();
        let rotated = s.registry.info(s.router).unwrap().username;
        let mut ep = endpoint(s.sim.routers[0].api.unwrap(), TlsMode::Plain, "admin");
        ep.id = s.router;
        ep.tenant = s.registry.info(s.router).unwrap().tenant;
        ep.name = "core-renamed".into();
        s.registry.apply_remote(ep.clone(), 1, false).unwrap();
        let info = s.registry.info(s.router).unwrap();
        assert_eq!(info.name, "core-renamed");
        assert_eq!(info.username, rotated);
        s.client().await.unwrap();
        // Another user named by the controller is taken as given.
        ep.username = "ops".into();
        s.registry.apply_remote(ep, 2, false).unwrap();
        assert_eq!(s.registry.info(s.router).unwrap().username, "ops");
    })
    .await;
}

fn services(sim: &Running) -> BTreeMap<String, String> {
    menu(sim, "/ip/service")
        .into_iter()
        .filter_map(|r| Some((r.get("name")?.clone(), r.get("address")?.clone())))
        .collect()
}

#[tokio::test]
async fn lockdown_restricts_the_services_and_keeps_the_agent_in() {
    within(async {
        let s = setup().await;
        let client = s.client().await.unwrap();
        let detail = credentials::lockdown(&client, &["10.9.0.0/16".into()], &s.ctx())
            .await
            .unwrap();
        let expected = "127.0.0.1/32,10.9.0.0/16";
        let svc = services(&s.sim);
        for name in credentials::SERVICES {
            assert_eq!(svc.get(name).map(String::as_str), Some(expected), "{name}");
        }
        assert_eq!(svc.get("winbox").map(String::as_str), Some(""));
        assert!(detail.contains("plain API is still enabled"), "{detail}");
        s.client().await.expect("the agent still logs in");

        // The simulator enforces the restriction: without the agent's address, no login.
        {
            let mut dev = lock(&s.sim.router(0).device);
            let t = dev.tables.get_mut("/ip/service").unwrap();
            let id = t.find_key("api").unwrap();
            let i = t.spec.field_index("address").unwrap();
            t.update(id, &[(i, Some("10.9.0.0/16".to_string()))])
                .unwrap();
        }
        assert!(s.client().await.is_err());
    })
    .await;
}

#[tokio::test]
async fn lockdown_rolls_back_when_a_fresh_login_fails() {
    within(async {
        let s = setup().await;
        let client = s.client().await.unwrap();
        // New connections fail their version read; the open one keeps working.
        faults(
            &s.sim,
            FaultsPatch {
                traps: Some(BTreeMap::from([(
                    "/system/resource/print".to_string(),
                    "failure: injected".to_string(),
                )])),
                ..Default::default()
            },
        );
        let err = credentials::lockdown(&client, &["10.9.0.0/16".into()], &s.ctx())
            .await
            .unwrap_err();
        assert!(err.message().contains("rolled back"), "{err}");
        let svc = services(&s.sim);
        for name in credentials::SERVICES {
            assert_eq!(svc.get(name).map(String::as_str), Some(""), "{name}");
        }
        clear_faults(&s.sim);
        s.client().await.expect("the agent still logs in");
    })
    .await;
}

#[tokio::test]
async fn lockdown_refuses_a_bad_admin_network_and_changes_nothing() {
    within(async {
        let s = setup().await;
        let client = s.client().await.unwrap();
        let err = credentials::lockdown(&client, &["10.0.0.0/40".into()], &s.ctx())
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
        assert!(services(&s.sim).values().all(String::is_empty));
    })
    .await;
}

/// Through the executor: rotation and lockdown jobs succeed one after the other (the cached
/// client reconnects as the new user), and the outbox's audit records carry no password.
#[tokio::test]
async fn rotation_and_lockdown_jobs_through_the_executor() {
    use tikfleet_agent::executor::{Executor, ExecutorConfig, RetryPolicy, Routers};
    use tikfleet_agent::outbox::{Outbox, OutboxConfig};
    use tikfleet_agent::queue::Queue;
    use tikfleet_agent::ratelimit::Rate;
    use tikfleet_shared::JobId;
    use tikfleet_shared::job::{Job, JobOp, JobStatus, Priority};
    use tikfleet_shared::record::OutboxRecord;

    within(async {
        let sim = sim("7.16.2").await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path().join("store"))).unwrap();
        let registry = Arc::new(Registry::open(&store, Vault::new(&VaultKey::generate())).unwrap());
        let ep = endpoint(sim.routers[0].api.unwrap(), TlsMode::Plain, "admin");
        let (router, tenant) = (ep.id, ep.tenant);
        registry.add(ep).await.unwrap();
        let outbox = Arc::new(Outbox::open(&store, OutboxConfig::default()).unwrap());
        let queue = Arc::new(Queue::in_memory());
        let clock = ManualClock::new(T0);
        let exec = Executor::new(
            Arc::clone(&queue),
            Arc::clone(&outbox),
            Arc::clone(&registry) as Arc<dyn Routers>,
            Arc::new(clock.clone()),
            ExecutorConfig {
                driver: quick(),
                per_router: 1,
                router_rate: Rate::per_second(1000, 1000),
                tenant_rate: Rate::per_second(1000, 1000),
                retry: RetryPolicy::default(),
                seed: 7,
            },
        );
        exec.set_credentials(Arc::clone(&registry));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = exec.clone();
        let task = tokio::spawn(async move {
            runner
                .run(async {
                    let _ = stopped.await;
                })
                .await;
        });
        let run = |op: JobOp| {
            let queue = Arc::clone(&queue);
            let clock = clock.clone();
            async move {
                let id = JobId::new();
                let job = Job {
                    id,
                    tenant_id: tenant,
                    router_id: router,
                    idempotency_key: id.to_string(),
                    priority: Priority::Normal,
                    op,
                    created_at: T0,
                    max_attempts: 1,
                    generation: None,
                };
                queue
                    .enqueue(job, tikfleet_agent::clock::Clock::now(&clock))
                    .await
                    .unwrap();
                loop {
                    let rec = queue.get(id).unwrap().unwrap();
                    if rec.status.is_terminal() {
                        return rec;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        };
        let mut passwords = Vec::new();
        let rec = run(JobOp::RotateCredentials {}).await;
        assert_eq!(rec.status, JobStatus::Succeeded, "{rec:?}");
        let first = registry.info(router).unwrap().username;
        passwords.push(registry.get(router).unwrap().password.expose().to_owned());
        let rec = run(JobOp::Lockdown {
            admin_networks: vec!["10.9.0.0/16".into()],
        })
        .await;
        assert_eq!(rec.status, JobStatus::Succeeded, "{rec:?}");
        let rec = run(JobOp::RotateCredentials {}).await;
        assert_eq!(rec.status, JobStatus::Succeeded, "{rec:?}");
        passwords.push(registry.get(router).unwrap().password.expose().to_owned());
        let users: Vec<String> = menu(&sim, "/user")
            .into_iter()
            .filter_map(|r| r.get("name").cloned())
            .collect();
        assert!(!users.contains(&first), "{users:?}");

        let _ = stop.send(());
        task.await.unwrap();
        let records = outbox.read_after(0, usize::MAX).unwrap();
        let mut details = Vec::new();
        for (_, r) in &records {
            let text = format!("{r:?}");
            for pw in &passwords {
                assert!(!text.contains(pw.as_str()), "a password in {text}");
            }
            if let OutboxRecord::JobUpdate(u) = r
                && let Some(d) = &u.detail
            {
                details.push(d.clone());
            }
        }
        assert!(
            details.iter().any(|d| d.starts_with("locked down")),
            "{details:?}"
        );
        assert!(
            details
                .iter()
                .any(|d| d.contains(&format!("removed {first}"))),
            "{details:?}"
        );
        sim.shutdown().await;
    })
    .await;
}
