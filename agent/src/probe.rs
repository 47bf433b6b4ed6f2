//! Probes: the routers' health and versions, and the agent's own host, as telemetry.
//!
//! Every [`ProbeConfig::interval`] (30 s by default, on the injected clock) a round reads,
//! for each registered router, `/system/resource`, the interface counters (`/interface/print`,
//! static interfaces only: a PPPoE server's thousands of dynamic `<pppoe-…>` interfaces would
//! swell every sample) and the number of active PPP and hotspot sessions — four pipelined
//! prints — and appends a [`TelemetrySample::Router`], or a
//! [`TelemetrySample::RouterUnreachable`] when the router cannot be reached. On the first
//! successful connection and then every [`ProbeConfig::versions_every`] (daily) it also reads
//! the RouterOS version and channel, runs `check-for-updates` (a failure there — no internet
//! on the router — is recorded as "unknown", not as an error) and reads the RouterBOARD
//! firmware, as a [`TelemetrySample::Versions`]. Then a [`TelemetrySample::Host`] sample of
//! the agent's box (sysinfo: CPU, memory, the data folder's disk; the outbox and queue).
//!
//! # Beside the jobs
//!
//! Probes are the lowest-priority router work. Before touching a router a probe asks the
//! executor ([`Background::try_background`]) for its command budget: it gets it only if no job
//! is at that router (all its slots free) and the router's and tenant's token buckets have
//! the tokens now. A probe never waits for either, so it never holds up a job; a router busy
//! with jobs is simply probed next round (counted in [`RoundReport::skipped`]). Probes use a
//! connection of their own (one per router, kept between rounds), so they never queue behind
//! a job's commands on a pooled connection, nor a job behind theirs.
//!
//! # A router that stays unreachable
//!
//! A router whose probe fails (it cannot be reached, or the login or the sample fails) is
//! probed on a slowing schedule: after `n` failures in a row the next probe waits
//! `interval × 2^(n-1)`, at most [`ProbeConfig::unreachable_backoff_cap`] (5 minutes by
//! default) — 30 s, 1 min, 2 min, 4 min, 5 min, 5 min … — and the first success brings it
//! back to every round. Each failed probe still records a
//! [`TelemetrySample::RouterUnreachable`] (the controller's `router_unreachable` alert is the
//! escalation) and logs the consecutive failures and when the next probe is due;
//! [`Prober::backoff`] reads the same. Rounds that find a router not yet due leave it alone
//! (counted in [`RoundReport::backed_off`]).
//!
//! With a [`SelfHeal`] policy ([`Prober::with_self_heal`]), every probe outcome is also
//! reported to it, and a router whose API has been out long enough may be rebooted over SSH
//! ([`crate::heal`]); after such a reboot the router is probed again at the normal interval.
//!
//! Probe commands are reads and are not audited: their result is the telemetry itself, which
//! the outbox drops oldest-first under its cap ([`crate::outbox`]), whereas audit records are
//! never dropped — auditing a read every 30 s per router would grow the outbox without bound
//! during a controller outage.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use tikfleet_shared::record::{
    HostSample, InterfaceCounters, OutboxRecord, RouterSample, Telemetry, TelemetrySample,
    VersionSample,
};
use tikfleet_shared::{AgentId, ErrorCode, RouterId, UnixMillis};

use crate::clock::SharedClock;
use crate::executor::{Background, CONNECT_COMMANDS, Routers};
use crate::heal::{Heal, SelfHeal};
use crate::outbox::Outbox;
use crate::registry::Registry;
use crate::routeros::{Cmd, DriverConfig, DriverError, NoopObserver, RouterOsClient, Row};

/// Commands of one health probe (four pipelined prints).
pub const PROBE_COMMANDS: u32 = 4;
/// Commands of one version check (check-for-updates, its print, the routerboard print).
pub const VERSION_COMMANDS: u32 = 3;

/// The routers to probe.
pub trait ProbeTargets: Routers {
    /// Every router this agent serves.
    fn router_ids(&self) -> Vec<RouterId>;
}

impl ProbeTargets for Registry {
    fn router_ids(&self) -> Vec<RouterId> {
        match self.list() {
            Ok(list) => list.into_iter().map(|r| r.id).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list routers to probe");
                Vec::new()
            }
        }
    }
}

impl ProbeTargets for HashMap<RouterId, crate::router::RouterEndpoint> {
    fn router_ids(&self) -> Vec<RouterId> {
        let mut ids: Vec<_> = self.keys().copied().collect();
        ids.sort();
        ids
    }
}

/// Probe settings (`[probes]` in agent.toml).
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// Time between rounds.
    pub interval: Duration,
    /// Time between version checks of one router.
    pub versions_every: Duration,
    /// Routers probed at once.
    pub concurrency: usize,
    /// Driver timeouts of the probes' own connections.
    pub driver: DriverConfig,
    /// Where the agent keeps its data: the host sample reports this folder's disk.
    pub data_dir: PathBuf,
    /// The agent, once enrolled: without it no host sample is made.
    pub agent_id: Option<AgentId>,
    /// The longest wait between probes of a router that keeps failing (the wait doubles
    /// from [`ProbeConfig::interval`] up to this).
    pub unreachable_backoff_cap: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            versions_every: Duration::from_secs(86_400),
            concurrency: 16,
            driver: DriverConfig {
                pool_size: 1,
                ..DriverConfig::default()
            },
            data_dir: PathBuf::from("."),
            agent_id: None,
            unreachable_backoff_cap: Duration::from_secs(300),
        }
    }
}

/// What one round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Router samples recorded.
    pub sampled: u64,
    /// Routers found unreachable.
    pub unreachable: u64,
    /// Version checks recorded.
    pub versions: u64,
    /// Routers skipped because jobs were at them or their buckets were short.
    pub skipped: u64,
    /// Routers not probed because they keep failing and their next probe is not due yet.
    pub backed_off: u64,
    /// Routers the self-healing policy rebooted over SSH (or tried to).
    pub rebooted: u64,
    /// Whether a host sample was recorded.
    pub host: bool,
}

/// The slowing schedule of a router whose probes fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Probes failed in a row.
    pub failures: u32,
    /// When the next probe is due.
    pub next_at: UnixMillis,
}

/// The wait before the next probe after `failures` failed probes in a row: `interval`
/// doubled `failures - 1` times, at most `cap` (and never less than `interval`).
#[must_use]
pub fn backoff_delay(interval: Duration, cap: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    interval
        .saturating_mul(1u32 << doublings)
        .min(cap.max(interval))
}

struct HostProbe {
    system: Option<sysinfo::System>,
}

/// The prober. See the module documentation.
pub struct Prober {
    targets: Arc<dyn ProbeTargets>,
    gate: Arc<dyn Background>,
    outbox: Arc<Outbox>,
    clock: SharedClock,
    config: ProbeConfig,
    clients: Mutex<HashMap<RouterId, RouterOsClient>>,
    versions_due: Mutex<HashMap<RouterId, UnixMillis>>,
    backoff: Mutex<HashMap<RouterId, Backoff>>,
    heal: Option<Arc<SelfHeal>>,
    host: Mutex<HostProbe>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

enum Outcome {
    Sampled { versions: bool },
    Unreachable { rebooted: bool },
    Skipped,
    BackedOff,
}

impl Prober {
    /// A prober of `targets`, asking `gate` (the executor) before each router and writing
    /// to `outbox`.
    #[must_use]
    pub fn new(
        targets: Arc<dyn ProbeTargets>,
        gate: Arc<dyn Background>,
        outbox: Arc<Outbox>,
        clock: SharedClock,
        config: ProbeConfig,
    ) -> Self {
        Self {
            targets,
            gate,
            outbox,
            clock,
            config,
            clients: Mutex::new(HashMap::new()),
            versions_due: Mutex::new(HashMap::new()),
            backoff: Mutex::new(HashMap::new()),
            heal: None,
            host: Mutex::new(HostProbe {
                system: sysinfo::System::new().ok(),
            }),
        }
    }

    /// The same prober, reporting each probe's outcome to the self-healing policy `heal`.
    #[must_use]
    pub fn with_self_heal(mut self, heal: Arc<SelfHeal>) -> Self {
        self.heal = Some(heal);
        self
    }

    /// The slowing schedule of `router`, while its probes keep failing.
    #[must_use]
    pub fn backoff(&self, router: RouterId) -> Option<Backoff> {
        lock(&self.backoff).get(&router).copied()
    }

    /// Routers whose last probe failed, with their schedules.
    #[must_use]
    pub fn unreachable(&self) -> Vec<(RouterId, Backoff)> {
        let mut list: Vec<_> = lock(&self.backoff).iter().map(|(k, v)| (*k, *v)).collect();
        list.sort_by_key(|(id, _)| *id);
        list
    }

    /// How many routers' last probe failed.
    #[must_use]
    pub fn unreachable_count(&self) -> u64 {
        lock(&self.backoff)
            .values()
            .filter(|b| b.failures > 0)
            .count() as u64
    }

    /// Runs a round every interval until `stopped` turns true.
    pub async fn run(&self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *stopped.borrow() {
                break;
            }
            let started = self.clock.now();
            let report = self.round().await;
            tracing::debug!(
                sampled = report.sampled,
                unreachable = report.unreachable,
                versions = report.versions,
                skipped = report.skipped,
                backed_off = report.backed_off,
                rebooted = report.rebooted,
                "probe round"
            );
            let next = started.saturating_add(self.config.interval);
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => break,
                () = self.clock.sleep_until(next) => {}
            }
        }
        lock(&self.clients).clear();
    }

    /// One round over every router, then the host sample; the samples are committed to the
    /// outbox (one flush) before it returns.
    pub async fn round(&self) -> RoundReport {
        let ids = self.targets.router_ids();
        let now = self.clock.now();
        {
            // Routers no longer served lose their schedules.
            let mut backoff = lock(&self.backoff);
            backoff.retain(|id, _| ids.contains(id));
        }
        let outcomes: Vec<Outcome> = futures_util::stream::iter(ids)
            .map(|id| self.probe_router(id, now))
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        let mut report = RoundReport::default();
        for o in outcomes {
            match o {
                Outcome::Sampled { versions } => {
                    report.sampled += 1;
                    report.versions += u64::from(versions);
                }
                Outcome::Unreachable { rebooted } => {
                    report.unreachable += 1;
                    report.rebooted += u64::from(rebooted);
                }
                Outcome::Skipped => report.skipped += 1,
                Outcome::BackedOff => report.backed_off += 1,
            }
        }
        if let Some(agent_id) = self.config.agent_id {
            let sample = self.host_sample(agent_id);
            report.host = self.append(TelemetrySample::Host(sample));
        }
        if let Err(e) = self.outbox.commit().await {
            tracing::warn!(error = %e, "cannot commit probe samples");
        }
        report
    }

    fn append(&self, sample: TelemetrySample) -> bool {
        let record = OutboxRecord::Telemetry(Telemetry {
            at: self.clock.now(),
            sample,
        });
        match self.outbox.append(record) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot record a probe sample");
                false
            }
        }
    }

    /// Probes one router in the round that started at `round_at` (unless its slowing
    /// schedule says it is not due yet).
    async fn probe_router(&self, id: RouterId, round_at: UnixMillis) -> Outcome {
        if lock(&self.backoff)
            .get(&id)
            .is_some_and(|b| b.next_at > round_at)
        {
            return Outcome::BackedOff;
        }
        let endpoint = match self.targets.endpoint(id) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(router = %id, error = %e, "router not probed");
                return Outcome::Skipped;
            }
        };
        let cached = lock(&self.clients).get(&id).cloned();
        let cached = cached.filter(|c| *c.endpoint() == endpoint);
        let now = self.clock.now();
        let versions_due = cached.is_none()
            || lock(&self.versions_due)
                .get(&id)
                .is_none_or(|due| *due <= now);
        let budget = PROBE_COMMANDS
            + if cached.is_none() {
                CONNECT_COMMANDS
            } else {
                0
            }
            + if versions_due { VERSION_COMMANDS } else { 0 };
        if !self.gate.try_background(id, endpoint.tenant, budget) {
            if let Some(heal) = &self.heal {
                heal.busy(id);
            }
            return Outcome::Skipped;
        }
        let client = match cached {
            Some(c) => c,
            None => {
                match RouterOsClient::connect(
                    endpoint.clone(),
                    self.config.driver.clone(),
                    Arc::clone(&self.clock),
                    Arc::new(NoopObserver),
                )
                .await
                {
                    Ok(c) => {
                        lock(&self.clients).insert(id, c.clone());
                        c
                    }
                    Err(e) => {
                        return self.failed(&endpoint, &e, round_at).await;
                    }
                }
            }
        };
        let sample = match read_sample(&client, id).await {
            Ok(s) => s,
            Err(e) => {
                if e.drops_client() {
                    lock(&self.clients).remove(&id);
                }
                return self.failed(&endpoint, &e, round_at).await;
            }
        };
        self.append(TelemetrySample::Router(sample));
        if lock(&self.backoff).remove(&id).is_some() {
            tracing::info!(router = %id, "probe: router reachable again");
        }
        if let Some(heal) = &self.heal {
            heal.answered(id);
        }
        let versions = if versions_due {
            let v = read_versions(&client, id).await;
            self.append(TelemetrySample::Versions(v));
            let next = self.clock.now().saturating_add(self.config.versions_every);
            lock(&self.versions_due).insert(id, next);
            true
        } else {
            false
        };
        Outcome::Sampled { versions }
    }

    /// A failed probe: the sample, the slowing schedule, the self-healing policy.
    async fn failed(
        &self,
        endpoint: &crate::router::RouterEndpoint,
        e: &DriverError,
        round_at: UnixMillis,
    ) -> Outcome {
        let id = endpoint.id;
        self.append(TelemetrySample::RouterUnreachable {
            router_id: id,
            error: e.to_info(),
        });
        let failures = lock(&self.backoff)
            .get(&id)
            .map_or(1, |b| b.failures.saturating_add(1));
        let delay = backoff_delay(
            self.config.interval,
            self.config.unreachable_backoff_cap,
            failures,
        );
        let mut backoff = Backoff {
            failures,
            next_at: round_at.saturating_add(delay),
        };
        tracing::warn!(
            router = %id,
            failures,
            next_probe_in_secs = delay.as_secs(),
            error = %e,
            "probe: router unreachable"
        );
        let heal = match &self.heal {
            Some(heal) => heal.api_failed(endpoint, e).await,
            None => Heal::Nothing,
        };
        let rebooted = matches!(heal, Heal::Rebooted | Heal::RebootFailed { .. });
        if rebooted {
            // Rebooted: watch it come back at the normal pace.
            lock(&self.clients).remove(&id);
            backoff = Backoff {
                failures: 0,
                next_at: round_at.saturating_add(self.config.interval),
            };
        }
        lock(&self.backoff).insert(id, backoff);
        Outcome::Unreachable { rebooted }
    }

    fn host_sample(&self, agent_id: AgentId) -> HostSample {
        let mut host = lock(&self.host);
        let (cpu, free, total) = match host.system.as_mut() {
            Some(sys) => {
                sys.refresh_cpu_usage();
                sys.refresh_memory();
                (
                    sys.global_cpu_usage(),
                    sys.available_memory(),
                    sys.total_memory(),
                )
            }
            None => (0.0, 0, 0),
        };
        drop(host);
        let (disk_free, disk_total) = data_disk(&self.config.data_dir);
        let outbox = self.outbox.stats();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let cpu = cpu.clamp(0.0, 100.0).round() as u8;
        HostSample {
            agent_id,
            cpu_load_percent: cpu,
            free_memory_bytes: free,
            total_memory_bytes: total,
            uptime_secs: sysinfo::System::uptime().unwrap_or(0),
            free_disk_bytes: disk_free,
            total_disk_bytes: disk_total,
            outbox_records: outbox.records,
            outbox_bytes: outbox.bytes,
            queued_jobs: self.gate.queued_jobs(),
            outbox_max_bytes: Some(outbox.max_bytes),
            telemetry_dropped: Some(outbox.dropped_telemetry),
        }
    }
}

/// Free and total bytes of the filesystem that holds `dir` (the longest mount point that
/// contains it); zeros when unknown.
fn data_disk(dir: &Path) -> (u64, u64) {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let Ok(disks) = sysinfo::Disks::new_with_refreshed_list() else {
        return (0, 0);
    };
    disks
        .iter()
        .filter(|d| dir.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map_or((0, 0), |d| (d.available_space(), d.total_space()))
}

fn num(row: &Row, key: &str) -> u64 {
    row.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// RouterOS durations as `/system/resource` prints them: `1w2d3h4m5s` (v6, v7), also
/// `3d04:05:06` and `04:05:06` (older prints); unknown parts count 0.
#[must_use]
pub fn parse_uptime(text: &str) -> u64 {
    let text = text.trim();
    if text.contains(':') {
        let (days, clock) = match text.find('d') {
            Some(i) => (text[..i].parse::<u64>().unwrap_or(0), &text[i + 1..]),
            None => (0, text),
        };
        let secs = clock
            .split(':')
            .fold(0u64, |acc, p| acc * 60 + p.parse::<u64>().unwrap_or(0));
        return days * 86_400 + secs;
    }
    let mut total = 0u64;
    let mut n = 0u64;
    for c in text.chars() {
        if let Some(d) = c.to_digit(10) {
            n = n * 10 + u64::from(d);
            continue;
        }
        let unit = match c {
            'w' => 604_800,
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => 0,
        };
        total += n * unit;
        n = 0;
    }
    total
}

/// `7.16.2 (stable)` → `7.16.2`.
fn bare_version(v: &str) -> Option<String> {
    v.split_whitespace().next().map(str::to_owned)
}

/// Reads one health sample (four pipelined prints).
///
/// # Errors
/// The resource print failed (the others count 0 when they fail with a trap).
pub async fn read_sample(
    client: &RouterOsClient,
    id: RouterId,
) -> Result<RouterSample, DriverError> {
    let mut results = client
        .run_many(vec![
            Cmd::new("/system/resource/print"),
            Cmd::new("/interface/print").proplist(&[
                "name",
                "running",
                "dynamic",
                "rx-byte",
                "tx-byte",
                "rx-packet",
                "tx-packet",
                "rx-error",
                "tx-error",
            ]),
            Cmd::new("/ppp/active/print").proplist(&[".id"]),
            Cmd::new("/ip/hotspot/active/print").proplist(&[".id"]),
        ])
        .await
        .into_iter();
    let mut next = || {
        results.next().unwrap_or_else(|| {
            Err(DriverError::new(
                ErrorCode::Internal,
                "the driver answered fewer commands than were sent",
            ))
        })
    };
    let resource = next()?.into_iter().next().unwrap_or_default();
    let interfaces = next();
    let ppp = next();
    let hotspot = next();
    let count = |r: Result<Vec<Row>, DriverError>| -> Result<u32, DriverError> {
        match r {
            Ok(rows) => Ok(u32::try_from(rows.len()).unwrap_or(u32::MAX)),
            Err(e) if e.drops_client() => Err(e),
            Err(_) => Ok(0),
        }
    };
    let interfaces = match interfaces {
        Ok(rows) => rows
            .iter()
            .filter(|r| r.get("dynamic").map(String::as_str) != Some("true"))
            .map(|r| InterfaceCounters {
                name: r.get("name").cloned().unwrap_or_default(),
                running: r.get("running").map(String::as_str) == Some("true"),
                rx_bytes: num(r, "rx-byte"),
                tx_bytes: num(r, "tx-byte"),
                rx_packets: num(r, "rx-packet"),
                tx_packets: num(r, "tx-packet"),
                rx_errors: num(r, "rx-error"),
                tx_errors: num(r, "tx-error"),
            })
            .collect(),
        Err(e) if e.drops_client() => return Err(e),
        Err(_) => Vec::new(),
    };
    Ok(RouterSample {
        router_id: id,
        cpu_load_percent: u8::try_from(num(&resource, "cpu-load").min(100)).unwrap_or(100),
        free_memory_bytes: num(&resource, "free-memory"),
        total_memory_bytes: num(&resource, "total-memory"),
        uptime_secs: resource.get("uptime").map_or(0, |u| parse_uptime(u)),
        free_disk_bytes: num(&resource, "free-hdd-space"),
        total_disk_bytes: num(&resource, "total-hdd-space"),
        interfaces,
        active_ppp_sessions: count(ppp)?,
        active_hotspot_sessions: count(hotspot)?,
        routeros_version: resource.get("version").and_then(|v| bare_version(v)),
    })
}

/// Reads the router's versions: the update check (never an error: a failure says so in
/// `update_error`, `update_available` stays unknown), the RouterBOARD firmware (absent on
/// CHR / x86) and the board name.
pub async fn read_versions(client: &RouterOsClient, id: RouterId) -> VersionSample {
    let check = client.check_for_updates().await;
    let (channel, installed) = match client
        .run(Cmd::new("/system/package/update/print").proplist(&["channel", "installed-version"]))
        .await
    {
        Ok(rows) => {
            let row = rows.into_iter().next().unwrap_or_default();
            (
                row.get("channel").cloned(),
                row.get("installed-version").cloned(),
            )
        }
        Err(_) => (None, None),
    };
    let board = client
        .run(Cmd::new("/system/routerboard/print"))
        .await
        .ok()
        .and_then(|rows| rows.into_iter().next());
    let resource = client
        .run(Cmd::new("/system/resource/print").proplist(&["version", "board-name"]))
        .await
        .ok()
        .and_then(|rows| rows.into_iter().next())
        .unwrap_or_default();
    let field = |row: &Option<Row>, key: &str| {
        row.as_ref()
            .and_then(|r| r.get(key))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let failed = check.error.is_some();
    VersionSample {
        router_id: id,
        ros_version: resource
            .get("version")
            .and_then(|v| bare_version(v))
            .or_else(|| installed.clone()),
        channel,
        installed: installed.or(check.installed),
        latest: if failed { None } else { check.latest },
        update_available: (!failed).then_some(check.available),
        update_error: check.error,
        firmware_current: field(&board, "current-firmware"),
        firmware_upgrade: field(&board, "upgrade-firmware"),
        board: resource
            .get("board-name")
            .cloned()
            .or_else(|| field(&board, "model")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes() {
        for (text, secs) in [
            ("1w2d3h4m5s", 604_800 + 2 * 86_400 + 3 * 3_600 + 4 * 60 + 5),
            ("5s", 5),
            ("2h", 7_200),
            ("3d04:05:06", 3 * 86_400 + 4 * 3_600 + 5 * 60 + 6),
            ("04:05:06", 4 * 3_600 + 5 * 60 + 6),
            ("", 0),
        ] {
            assert_eq!(parse_uptime(text), secs, "{text}");
        }
    }

    #[test]
    fn versions_lose_their_channel() {
        assert_eq!(bare_version("7.16.2 (stable)").as_deref(), Some("7.16.2"));
        assert_eq!(bare_version("6.49.10").as_deref(), Some("6.49.10"));
    }
}
