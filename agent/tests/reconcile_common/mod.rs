//! Helpers for the reconciler tests: the agent's side (store, outbox, desired states, a
//! reconciler on a manual clock) that can be restarted on its data folder, and the run loop
//! on its own task. Uses `routeros_common` (declared by the test crate).

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tikfleet_agent::audit::AuditLog;
use tikfleet_agent::clock::{ManualClock, SharedClock};
use tikfleet_agent::desired::DesiredStore;
use tikfleet_agent::outbox::{Outbox, OutboxConfig};
use tikfleet_agent::reconcile::{Connect, PassReport, ReconcileConfig, Reconciler, Request};
use tikfleet_agent::routeros::{DriverError, RouterOsClient};
use tikfleet_agent::store::{Store, StoreConfig};
use tikfleet_shared::domain::DesiredState;
use tikfleet_shared::record::{DriftTrigger, OutboxRecord};
use tikfleet_shared::{RouterId, UnixMillis};

use super::routeros_common::T0;

/// The agent's side: a store, an outbox with its audit writer, the desired states and a
/// reconciler.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub router: RouterId,
    pub store: Store,
    pub outbox: Arc<Outbox>,
    pub audit: Arc<AuditLog>,
    pub desired: Arc<DesiredStore>,
    pub clock: Arc<ManualClock>,
    pub rec: Arc<Reconciler>,
}

impl Agent {
    /// Opens the agent's side on `dir`, its clock at `at`.
    pub fn open(dir: tempfile::TempDir, router: RouterId, at: UnixMillis) -> Self {
        let store = Store::open(&StoreConfig::new(dir.path())).expect("store");
        let outbox = Arc::new(Outbox::open(&store, OutboxConfig::default()).expect("outbox"));
        let audit = Arc::new(AuditLog::start(Arc::clone(&outbox)));
        let desired = Arc::new(DesiredStore::open(&store).expect("desired"));
        let clock = Arc::new(ManualClock::new(at));
        let shared: SharedClock = clock.clone();
        let rec = Arc::new(Reconciler::new(
            Arc::clone(&desired),
            Arc::clone(&audit),
            shared,
            ReconcileConfig::default(),
        ));
        Self {
            dir,
            router,
            store,
            outbox,
            audit,
            desired,
            clock,
            rec,
        }
    }

    pub fn new() -> Self {
        Self::open(tempfile::tempdir().expect("tempdir"), RouterId::new(), T0)
    }

    /// Stops everything and opens the same data folder again, as after a restart (the
    /// clock goes on from where it was).
    pub async fn restart(self) -> Self {
        use tikfleet_agent::clock::Clock;
        let at = self.clock.now();
        let Self {
            dir,
            router,
            store,
            outbox,
            audit,
            desired,
            rec,
            ..
        } = self;
        drop(rec);
        Arc::try_unwrap(audit)
            .expect("only the agent holds the audit log")
            .close()
            .await;
        drop((outbox, desired, store));
        Self::open(dir, router, at)
    }

    pub async fn want(&self, state: &DesiredState) {
        assert!(self.desired.store(state).await.expect("stored"));
    }

    pub async fn pass(&self, client: &RouterOsClient, trigger: DriftTrigger) -> PassReport {
        self.rec
            .pass(client, self.router, Request::of(trigger), &|_| {})
            .await
            .expect("the pass reads the router")
    }

    /// Every record in the outbox (committed), audit records left out.
    pub async fn records(&self) -> Vec<OutboxRecord> {
        self.audit.flush().await.expect("flushed");
        self.outbox
            .read_after(0, usize::MAX)
            .expect("outbox")
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| !matches!(r, OutboxRecord::Audit(_)))
            .collect()
    }

    /// Starts the run loop, reaching the router through `client`.
    pub fn run_loop(&self, client: &RouterOsClient) -> RunLoop {
        self.run_loop_with(Arc::new(Fixed(client.clone())))
    }

    /// Starts the run loop, reaching the router through `connect`.
    pub fn run_loop_with(&self, connect: Arc<dyn Connect>) -> RunLoop {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(Arc::clone(&self.rec).run(connect, stopped));
        RunLoop { stop, task }
    }
}

/// The reconciler's run loop on its own task.
pub struct RunLoop {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunLoop {
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
    }
}

/// Hands the reconciler's run loop one fixed client.
pub struct Fixed(pub RouterOsClient);

impl Connect for Fixed {
    fn client(&self, _: RouterId) -> BoxFuture<'_, Result<RouterOsClient, DriverError>> {
        let c = self.0.clone();
        Box::pin(async move { Ok(c) })
    }

    fn forget(&self, _: RouterId) {}
}

/// Polls `check` until it holds (the run loop works on its own task), for up to 20 s.
pub async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
