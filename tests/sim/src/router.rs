//! One simulated router as the listeners and the control endpoint share it.
//!
//! [`Router`] wraps the [`Device`] (state and command engine), its [`Faults`] and [`Stats`],
//! the per-router service lock (the service-time fault serialises commands through it) and a
//! reboot signal every open connection watches.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::device::Device;
use crate::faults::{Faults, Stats};

/// Locks a std mutex, ignoring poisoning (state stays usable after a panicking holder).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a router listens.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RouterAddrs {
    /// API.
    pub api: Option<SocketAddr>,
    /// API-SSL.
    pub api_ssl: Option<SocketAddr>,
    /// SSH.
    pub ssh: Option<SocketAddr>,
}

/// A simulated router.
#[derive(Debug)]
pub struct Router {
    /// Index (0-based).
    pub index: usize,
    /// State and command engine.
    pub device: Mutex<Device>,
    /// Fault settings.
    pub faults: Mutex<Faults>,
    /// Command counters.
    pub stats: Mutex<Stats>,
    /// Held for the service time of each command; holds when the router is next free.
    /// Each command is done `service_ms` after the previous one (or after it arrived, if
    /// the router was idle): deadlines add up exactly, so the timer's millisecond ticks do
    /// not make a busy router slower than `service_ms` per command.
    pub service: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    /// Bumped on every reboot; connections close when it changes.
    pub reboots: watch::Sender<u64>,
    /// Default downtime of a reboot.
    pub reboot_down: Duration,
    /// Bound addresses.
    pub addrs: OnceLock<RouterAddrs>,
}

impl Router {
    /// A router around a device.
    pub fn new(index: usize, device: Device, reboot_down: Duration) -> Self {
        Self {
            index,
            device: Mutex::new(device),
            faults: Mutex::new(Faults::default()),
            stats: Mutex::new(Stats::default()),
            service: tokio::sync::Mutex::new(None),
            reboots: watch::channel(0).0,
            reboot_down,
            addrs: OnceLock::new(),
        }
    }

    /// Reboots: sessions drop, connections close, the router is down for `down` (or the fault
    /// setting, or the default); configuration is kept. A hung API ([`Faults::api_hung`]) is
    /// cured.
    pub fn reboot(&self, down: Option<Duration>) {
        let down = {
            let mut f = lock(&self.faults);
            f.api_hung = false;
            down.or_else(|| f.reboot_down_ms.map(Duration::from_millis))
                .unwrap_or(self.reboot_down)
        };
        lock(&self.device).reboot(Instant::now(), down);
        self.reboots.send_modify(|n| *n += 1);
        tracing::info!(
            router = self.index,
            down_ms = down.as_millis() as u64,
            "rebooting"
        );
    }

    /// Whether the API service hangs ([`Faults::api_hung`]): commands get no answer.
    pub fn api_hung(&self) -> bool {
        lock(&self.faults).api_hung
    }

    /// Whether the router is up.
    pub fn is_up(&self) -> bool {
        lock(&self.device).is_up(Instant::now())
    }

    /// Whether a new connection to `service` (`api`, `api-ssl`) is accepted.
    pub fn accepts(&self, service: &str) -> bool {
        if lock(&self.faults).refuse {
            return false;
        }
        let dev = lock(&self.device);
        if !dev.is_up(Instant::now()) {
            return false;
        }
        // A disabled /ip/service refuses connections.
        let disabled = dev.tables.get(crate::menus::SERVICE).and_then(|t| {
            let row = t.get(t.find_key(service)?)?;
            row.get(t.spec.field_index("disabled")?)
                .map(|v| v == "true")
        });
        disabled != Some(true)
    }
}

/// A shared router handle.
pub type RouterRef = Arc<Router>;
