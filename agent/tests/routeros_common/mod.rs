//! Helpers for the RouterOS driver and ops tests: an in-process simulator, endpoints, clients,
//! and direct access to the simulator's state and faults (the same handles its control
//! endpoint uses).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tikfleet_agent::clock::{ManualClock, SharedClock};
use tikfleet_agent::router::{RouterEndpoint, TlsMode};
use tikfleet_agent::routeros::{DriverConfig, DriverError, MemoryObserver, RouterOsClient};
use tikfleet_shared::{RouterId, Secret, TenantId, UnixMillis};
use tikfleet_sim::faults::FaultsPatch;
use tikfleet_sim::router::lock;
use tikfleet_sim::{Config, Running};

/// Every test body runs within this.
pub const LIMIT: Duration = Duration::from_secs(30);

/// The start time of the manual clock.
pub const T0: UnixMillis = UnixMillis(1_700_000_000_000);

pub async fn within<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out");
}

/// A simulator of `version`; simulated clients redial only after a minute.
pub async fn sim(version: &str) -> Running {
    tikfleet_sim::start(Config {
        version: version.into(),
        redial: Duration::from_secs(60),
        ..Config::local()
    })
    .await
    .expect("simulator starts")
}

pub fn endpoint(addr: SocketAddr, tls: TlsMode, password: &str) -> RouterEndpoint {
    RouterEndpoint {
        id: RouterId::new(),
        tenant: TenantId::new(),
        name: "core-1".into(),
        host: addr.ip().to_string(),
        api_port: addr.port(),
        ssh_port: 22,
        tls,
        username: "admin".into(),
        password: Secret::new(password),
    }
}

pub fn quick() -> DriverConfig {
    DriverConfig {
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(10),
        pool_size: 2,
    }
}

pub async fn connect_with(
    ep: RouterEndpoint,
    config: DriverConfig,
) -> (Result<RouterOsClient, DriverError>, MemoryObserver) {
    let observer = MemoryObserver::new();
    let clock: SharedClock = Arc::new(ManualClock::new(T0));
    let client = RouterOsClient::connect(ep, config, clock, Arc::new(observer.clone())).await;
    (client, observer)
}

/// A plain-API client of router 0.
pub async fn client(sim: &Running) -> (RouterOsClient, MemoryObserver) {
    let addr = sim.routers[0].api.expect("api");
    let (c, o) = connect_with(endpoint(addr, TlsMode::Plain, "admin"), quick()).await;
    (c.expect("connects"), o)
}

/// The rows of a menu of router 0, as the control endpoint shows them.
pub fn menu(sim: &Running, path: &str) -> Vec<BTreeMap<String, String>> {
    let mut dev = lock(&sim.router(0).device);
    let now = Instant::now();
    dev.tick(now);
    dev.menu_rows(path, now)
        .expect("menu exists")
        .into_iter()
        .map(|r| r.into_iter().collect())
        .collect()
}

/// The row of `path` whose `key` is `value`.
pub fn row(sim: &Running, path: &str, key: &str, value: &str) -> Option<BTreeMap<String, String>> {
    menu(sim, path)
        .into_iter()
        .find(|r| r.get(key).map(String::as_str) == Some(value))
}

pub fn faults(sim: &Running, patch: FaultsPatch) {
    lock(&sim.router(0).faults).apply(patch);
}

pub fn clear_faults(sim: &Running) {
    *lock(&sim.router(0).faults) = tikfleet_sim::faults::Faults::default();
}
