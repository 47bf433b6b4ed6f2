//! Router health: the probe samples agents send, their 5-minute rollups, retention, and
//! the version and firmware state shown on each router.
//!
//! The hub's record transaction ([`hub`](super::hub)) collects the telemetry of one commit
//! into a [`Batch`] and stores it set-based at the end: one multi-row insert of samples per
//! 500 and one `UPDATE … FROM (VALUES …)` of router status per 500 routers, however many
//! samples the batch holds (a version report, daily per router, is one update each). The
//! agent's own host sample is not a router's: the batch's newest is kept on the agent's row
//! ([`agents`](super::agents)).
//! [`Db::health_maintenance`] (run by [`HealthTask`] on the controller's clock) rolls each
//! complete 5-minute bucket up once, behind a watermark, then deletes raw samples older than
//! the raw retention (48 h, whole buckets) and rollups older than theirs (90 days). A sample
//! that arrives after its bucket was rolled up (an agent offline for longer) has its bucket
//! noted (`health_late`) and rolled up again by the next run.
//! [`Db::router_health`] answers the API from raw samples for fine steps within the raw
//! window and from rollups otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tikfleet_shared::record::{HostSample, Telemetry, TelemetrySample, VersionSample};
use tikfleet_shared::{AgentId, RouterId, TenantId, UnixMillis};

use super::routers::{ROUTER_COLUMNS, Router, router};
use super::sql::Sql;
use super::{Db, DbError, Page, PageRequest, RowExt as _, Scope, to_i64};
use crate::clock::SharedClock;

/// Length of a rollup bucket, in milliseconds (5 minutes).
pub const BUCKET_MS: i64 = 300_000;

/// The oldest RouterOS the agent drives (its driver refuses older ones).
pub const MIN_SUPPORTED_VERSION: &str = "6.43";

/// Rows per multi-row statement (13 values each: far below both databases' bind limits).
const CHUNK: usize = 500;

/// Whether RouterOS version `a` is older than `b` (`7.15.3` < `7.16`; `6.49.10 (long-term)`
/// reads as `6.49.10`). `None` when either does not parse.
#[must_use]
pub fn version_older(a: &str, b: &str) -> Option<bool> {
    fn parts(v: &str) -> Option<Vec<u64>> {
        let v = v.split_whitespace().next()?;
        // 7.16beta2 / 7.16rc1 compare by their numeric part.
        let numeric: String = v
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let out = numeric
            .split('.')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().ok())
            .collect::<Option<Vec<u64>>>()?;
        (!out.is_empty()).then_some(out)
    }
    let (mut a, mut b) = (parts(a)?, parts(b)?);
    let n = a.len().max(b.len());
    a.resize(n, 0);
    b.resize(n, 0);
    Some(a < b)
}

/// Whether a version is older than [`MIN_SUPPORTED_VERSION`].
#[must_use]
pub fn unsupported(version: &str) -> bool {
    version_older(version, MIN_SUPPORTED_VERSION) == Some(true)
}

struct SampleRow {
    router: RouterId,
    at: i64,
    values: [i64; 10],
}

/// The latest status of a router in a batch.
struct Status {
    at: i64,
    online: bool,
    uptime: Option<i64>,
    version: Option<String>,
}

/// The telemetry of one committed batch of outbox records, stored together.
#[derive(Default)]
pub(crate) struct Batch {
    samples: Vec<SampleRow>,
    status: BTreeMap<RouterId, Status>,
    versions: BTreeMap<RouterId, (i64, VersionSample)>,
    /// The agent whose records these are (host samples naming another agent are ignored).
    agent: Option<AgentId>,
    /// The batch's newest host sample of that agent.
    host: Option<(i64, HostSample)>,
}

impl Batch {
    /// An empty batch of `agent`'s records.
    pub(crate) fn for_agent(agent: AgentId) -> Self {
        Self {
            agent: Some(agent),
            ..Self::default()
        }
    }

    /// Takes one telemetry record; samples of routers not in `own` (another agent's, or
    /// unknown) are ignored.
    pub(crate) fn push(&mut self, t: &Telemetry, own: &BTreeSet<RouterId>) {
        let at = t.at.as_millis();
        let (router, status) = match &t.sample {
            TelemetrySample::Router(s) => {
                let (rx, tx) = s.interfaces.iter().fold((0u64, 0u64), |(rx, tx), i| {
                    (rx.saturating_add(i.rx_bytes), tx.saturating_add(i.tx_bytes))
                });
                if own.contains(&s.router_id) {
                    self.samples.push(SampleRow {
                        router: s.router_id,
                        at,
                        values: [
                            i64::from(s.cpu_load_percent.min(100)),
                            to_i64(s.free_memory_bytes),
                            to_i64(s.total_memory_bytes),
                            to_i64(s.uptime_secs),
                            to_i64(s.free_disk_bytes),
                            to_i64(s.total_disk_bytes),
                            i64::from(s.active_ppp_sessions),
                            i64::from(s.active_hotspot_sessions),
                            to_i64(rx),
                            to_i64(tx),
                        ],
                    });
                }
                (
                    s.router_id,
                    Status {
                        at,
                        online: true,
                        uptime: Some(to_i64(s.uptime_secs)),
                        version: s.routeros_version.clone(),
                    },
                )
            }
            TelemetrySample::RouterUnreachable { router_id, .. } => (
                *router_id,
                Status {
                    at,
                    online: false,
                    uptime: None,
                    version: None,
                },
            ),
            TelemetrySample::Versions(v) => {
                if own.contains(&v.router_id) {
                    let newer = self
                        .versions
                        .get(&v.router_id)
                        .is_none_or(|(seen, _)| *seen <= at);
                    if newer {
                        self.versions.insert(v.router_id, (at, v.clone()));
                    }
                }
                return;
            }
            TelemetrySample::Host(h) => {
                // Only the newest of the batch is stored (db/agents.rs `store_host_sample`).
                let newer = self.host.as_ref().is_none_or(|(seen, _)| *seen <= at);
                if self.agent == Some(h.agent_id) && newer {
                    self.host = Some((at, h.clone()));
                }
                return;
            }
        };
        if !own.contains(&router) {
            return;
        }
        let newer = self.status.get(&router).is_none_or(|s| s.at <= at);
        if newer {
            self.status.insert(router, status);
        }
    }

    /// Writes the batch inside the record transaction.
    pub(crate) async fn store(
        self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        tenant: TenantId,
        backend: super::Backend,
    ) -> Result<(), DbError> {
        if let (Some(agent), Some((at, host))) = (self.agent, &self.host) {
            super::agents::store_host_sample(tx, tenant, agent, *at, host).await?;
        }
        let tenant = tenant.to_string();
        if !self.samples.is_empty() {
            note_late(tx, &self.samples, backend).await?;
        }
        for chunk in self.samples.chunks(CHUNK) {
            let mut q = Sql::new(
                "INSERT INTO health_samples (router_id, tenant_id, at, cpu, mem_free, mem_total, \
                 uptime, disk_free, disk_total, ppp, hotspot, rx_bytes, tx_bytes) VALUES ",
            );
            for (i, s) in chunk.iter().enumerate() {
                q.push(if i == 0 { "(" } else { ", (" });
                q.bind(s.router.to_string())
                    .push(", ")
                    .bind(tenant.clone())
                    .push(", ")
                    .bind(s.at);
                for v in s.values {
                    q.push(", ").bind(v);
                }
                q.push(")");
            }
            q.execute(&mut **tx).await?;
        }
        let status: Vec<_> = self.status.into_iter().collect();
        for chunk in status.chunks(CHUNK) {
            // v: (id, status, at, uptime, version, unsupported); a NULL keeps the column.
            let mut q = Sql::new(
                "UPDATE routers SET status = v.column2, \
                 last_seen = CASE WHEN v.column2 <> 'online' THEN routers.last_seen \
                 WHEN routers.last_seen IS NULL OR routers.last_seen < v.column3 THEN v.column3 \
                 ELSE routers.last_seen END, \
                 uptime_secs = COALESCE(v.column4, routers.uptime_secs), \
                 ros_version = COALESCE(v.column5, routers.ros_version), \
                 ros_unsupported = COALESCE(v.column6, routers.ros_unsupported) FROM (VALUES ",
            );
            for (i, (id, s)) in chunk.iter().enumerate() {
                q.push(if i == 0 { "(" } else { ", (" });
                q.push("CAST(")
                    .bind(id.to_string())
                    .push(" AS TEXT), CAST(")
                    .bind(if s.online { "online" } else { "unreachable" }.to_owned())
                    .push(" AS TEXT), CAST(")
                    .bind(s.at)
                    .push(" AS BIGINT), CAST(")
                    .bind(s.uptime)
                    .push(" AS BIGINT), CAST(")
                    .bind(s.version.clone())
                    .push(" AS TEXT), CAST(")
                    .bind(s.version.as_deref().map(|v| i64::from(unsupported(v))))
                    .push(" AS BIGINT))");
            }
            q.push(") AS v WHERE routers.id = v.column1");
            q.execute(&mut **tx).await?;
        }
        for (router, (at, v)) in self.versions {
            let installed = v.ros_version.clone().or_else(|| v.installed.clone());
            let firmware_outdated = match (&v.firmware_current, &v.firmware_upgrade) {
                (Some(c), Some(u)) => version_older(c, u).map(i64::from),
                _ => None,
            };
            let mut q = Sql::new("UPDATE routers SET ros_channel = ");
            q.bind(v.channel.clone())
                .push(", ros_latest = ")
                .bind(v.latest.clone())
                .push(", update_available = ")
                .bind(v.update_available.map(i64::from))
                .push(", update_error = ")
                .bind(v.update_error.clone())
                .push(", firmware_current = ")
                .bind(v.firmware_current.clone())
                .push(", firmware_upgrade = ")
                .bind(v.firmware_upgrade.clone())
                .push(", firmware_outdated = ")
                .bind(firmware_outdated)
                .push(", board = ")
                .bind(v.board.clone())
                .push(", versions_at = ")
                .bind(at);
            if let Some(version) = installed {
                q.push(", ros_unsupported = ")
                    .bind(i64::from(unsupported(&version)))
                    .push(", ros_version = ")
                    .bind(version);
            }
            q.push(" WHERE id = ")
                .bind(router.to_string())
                .push(" AND (versions_at IS NULL OR versions_at <= ")
                .bind(at)
                .push(")");
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }
}

/// Notes the buckets of `samples` that were already rolled up, for the next maintenance
/// run to roll up again. On PostgreSQL the watermark is read `FOR SHARE`: a maintenance run
/// moving it waits for this transaction (and so sees its samples), or this one waits for it
/// (and sees the new watermark). SQLite runs one writer at a time.
async fn note_late(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    samples: &[SampleRow],
    backend: super::Backend,
) -> Result<(), DbError> {
    let mut q = Sql::new("SELECT value FROM health_state WHERE name = 'rollup_watermark'");
    if backend == super::Backend::Postgres {
        q.push(" FOR SHARE");
    }
    let Some(watermark) = q
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| r.int("value"))
        .transpose()?
    else {
        return Ok(());
    };
    let late: BTreeSet<(RouterId, i64)> = samples
        .iter()
        .map(|s| (s.router, s.at.div_euclid(BUCKET_MS) * BUCKET_MS))
        .filter(|(_, bucket)| *bucket < watermark)
        .collect();
    let late: Vec<_> = late.into_iter().collect();
    for chunk in late.chunks(CHUNK) {
        let mut q = Sql::new("INSERT INTO health_late (router_id, bucket) VALUES ");
        for (i, (router, bucket)) in chunk.iter().enumerate() {
            q.push(if i == 0 { "(" } else { ", (" });
            q.bind(router.to_string())
                .push(", ")
                .bind(*bucket)
                .push(")");
        }
        q.push(" ON CONFLICT (router_id, bucket) DO NOTHING");
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The rollup of one router's raw samples in `[from, to)`, grouped by bucket (the
/// `SELECT` part of an `INSERT INTO health_rollups`).
const ROLLUP_SELECT: &str = "INSERT INTO health_rollups (router_id, tenant_id, bucket, samples, \
     cpu_sum, cpu_max, mem_free_min, mem_free_sum, mem_total, uptime_max, disk_free_min, \
     disk_total, ppp_max, ppp_sum, hotspot_max, hotspot_sum, rx_bytes_max, tx_bytes_max) \
     SELECT router_id, MIN(tenant_id), (at / 300000) * 300000, COUNT(*), SUM(cpu), MAX(cpu), \
     MIN(mem_free), SUM(mem_free), MAX(mem_total), MAX(uptime), MIN(disk_free), \
     MAX(disk_total), MAX(ppp), SUM(ppp), MAX(hotspot), SUM(hotspot), MAX(rx_bytes), \
     MAX(tx_bytes) FROM health_samples WHERE ";

/// `ON CONFLICT` clause replacing a bucket's rollup with the one computed.
const ROLLUP_REPLACE: &str = " ON CONFLICT (router_id, bucket) DO UPDATE SET \
     samples = excluded.samples, cpu_sum = excluded.cpu_sum, cpu_max = excluded.cpu_max, \
     mem_free_min = excluded.mem_free_min, mem_free_sum = excluded.mem_free_sum, \
     mem_total = excluded.mem_total, uptime_max = excluded.uptime_max, \
     disk_free_min = excluded.disk_free_min, disk_total = excluded.disk_total, \
     ppp_max = excluded.ppp_max, ppp_sum = excluded.ppp_sum, hotspot_max = excluded.hotspot_max, \
     hotspot_sum = excluded.hotspot_sum, rx_bytes_max = excluded.rx_bytes_max, \
     tx_bytes_max = excluded.tx_bytes_max";

/// `ON CONFLICT` clause adding the computed rollup to the bucket's (late samples whose
/// bucket's other raw samples are gone).
const ROLLUP_ADD: &str = " ON CONFLICT (router_id, bucket) DO UPDATE SET \
     samples = health_rollups.samples + excluded.samples, \
     cpu_sum = health_rollups.cpu_sum + excluded.cpu_sum, \
     cpu_max = CASE WHEN excluded.cpu_max > health_rollups.cpu_max THEN excluded.cpu_max \
     ELSE health_rollups.cpu_max END, \
     mem_free_min = CASE WHEN excluded.mem_free_min < health_rollups.mem_free_min \
     THEN excluded.mem_free_min ELSE health_rollups.mem_free_min END, \
     mem_free_sum = health_rollups.mem_free_sum + excluded.mem_free_sum, \
     mem_total = CASE WHEN excluded.mem_total > health_rollups.mem_total THEN excluded.mem_total \
     ELSE health_rollups.mem_total END, \
     uptime_max = CASE WHEN excluded.uptime_max > health_rollups.uptime_max \
     THEN excluded.uptime_max ELSE health_rollups.uptime_max END, \
     disk_free_min = CASE WHEN excluded.disk_free_min < health_rollups.disk_free_min \
     THEN excluded.disk_free_min ELSE health_rollups.disk_free_min END, \
     disk_total = CASE WHEN excluded.disk_total > health_rollups.disk_total \
     THEN excluded.disk_total ELSE health_rollups.disk_total END, \
     ppp_max = CASE WHEN excluded.ppp_max > health_rollups.ppp_max THEN excluded.ppp_max \
     ELSE health_rollups.ppp_max END, \
     ppp_sum = health_rollups.ppp_sum + excluded.ppp_sum, \
     hotspot_max = CASE WHEN excluded.hotspot_max > health_rollups.hotspot_max \
     THEN excluded.hotspot_max ELSE health_rollups.hotspot_max END, \
     hotspot_sum = health_rollups.hotspot_sum + excluded.hotspot_sum, \
     rx_bytes_max = CASE WHEN excluded.rx_bytes_max > health_rollups.rx_bytes_max \
     THEN excluded.rx_bytes_max ELSE health_rollups.rx_bytes_max END, \
     tx_bytes_max = CASE WHEN excluded.tx_bytes_max > health_rollups.tx_bytes_max \
     THEN excluded.tx_bytes_max ELSE health_rollups.tx_bytes_max END";

/// At most this many late buckets are rolled up again per maintenance run.
const LATE_PER_RUN: i64 = 10_000;

/// Where a health series came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthSource {
    /// Raw samples.
    Raw,
    /// 5-minute rollups.
    Rollup,
}

impl HealthSource {
    /// `raw` or `rollup`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Rollup => "rollup",
        }
    }
}

/// One point of a health series: the samples in `[at, at + step)` aggregated.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthPoint {
    /// Start of the step.
    pub at: UnixMillis,
    /// Samples aggregated.
    pub samples: u64,
    /// Average CPU load, percent.
    pub cpu_avg: f64,
    /// Highest CPU load, percent.
    pub cpu_max: u8,
    /// Lowest free memory, bytes.
    pub mem_free_min: u64,
    /// Average free memory, bytes.
    pub mem_free_avg: u64,
    /// Total memory, bytes.
    pub mem_total: u64,
    /// Highest uptime seen, seconds.
    pub uptime_secs: u64,
    /// Lowest free disk, bytes.
    pub disk_free_min: u64,
    /// Total disk, bytes.
    pub disk_total: u64,
    /// Most active PPP sessions.
    pub ppp_max: u32,
    /// Average active PPP sessions.
    pub ppp_avg: f64,
    /// Most active hotspot sessions.
    pub hotspot_max: u32,
    /// Average active hotspot sessions.
    pub hotspot_avg: f64,
    /// Highest cumulative received bytes (all interfaces).
    pub rx_bytes: u64,
    /// Highest cumulative sent bytes (all interfaces).
    pub tx_bytes: u64,
}

/// A router's health over a time range.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthSeries {
    /// The router.
    pub router_id: RouterId,
    /// Start (inclusive).
    pub from: UnixMillis,
    /// End (exclusive).
    pub to: UnixMillis,
    /// Step, in seconds (rounded up to a multiple of 300 for rollups).
    pub step_secs: u64,
    /// Raw samples or rollups.
    pub source: HealthSource,
    /// The points, oldest first; steps without samples are left out.
    pub points: Vec<HealthPoint>,
}

/// Retention of health data, and how often the health task runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthRetention {
    /// Raw samples are kept this long.
    pub raw: Duration,
    /// Rollups are kept this long.
    pub rollups: Duration,
    /// The task runs this often.
    pub interval: Duration,
}

impl Default for HealthRetention {
    fn default() -> Self {
        Self {
            raw: Duration::from_secs(48 * 3600),
            rollups: Duration::from_secs(90 * 86_400),
            interval: Duration::from_secs(300),
        }
    }
}

/// What one maintenance run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Rollup rows written.
    pub rolled_up: u64,
    /// Raw samples deleted.
    pub raw_deleted: u64,
    /// Rollups deleted.
    pub rollups_deleted: u64,
    /// Rollups written again for samples that arrived after their bucket was rolled up.
    pub late_rolled_up: u64,
}

/// Aggregates rows of (at, samples, cpu_sum, cpu_max, mem_free_min, mem_free_sum, mem_total,
/// uptime_max, disk_free_min, disk_total, ppp_max, ppp_sum, hotspot_max, hotspot_sum, rx, tx)
/// into steps.
#[derive(Default)]
struct Acc {
    samples: u64,
    cpu_sum: u64,
    cpu_max: u64,
    mem_free_min: Option<u64>,
    mem_free_sum: u128,
    mem_total: u64,
    uptime: u64,
    disk_free_min: Option<u64>,
    disk_total: u64,
    ppp_max: u64,
    ppp_sum: u64,
    hotspot_max: u64,
    hotspot_sum: u64,
    rx: u64,
    tx: u64,
}

impl Acc {
    fn add(&mut self, r: &[u64; 15]) {
        self.samples += r[0];
        self.cpu_sum += r[1];
        self.cpu_max = self.cpu_max.max(r[2]);
        self.mem_free_min = Some(self.mem_free_min.map_or(r[3], |m| m.min(r[3])));
        self.mem_free_sum += u128::from(r[4]);
        self.mem_total = self.mem_total.max(r[5]);
        self.uptime = self.uptime.max(r[6]);
        self.disk_free_min = Some(self.disk_free_min.map_or(r[7], |m| m.min(r[7])));
        self.disk_total = self.disk_total.max(r[8]);
        self.ppp_max = self.ppp_max.max(r[9]);
        self.ppp_sum += r[10];
        self.hotspot_max = self.hotspot_max.max(r[11]);
        self.hotspot_sum += r[12];
        self.rx = self.rx.max(r[13]);
        self.tx = self.tx.max(r[14]);
    }

    #[allow(clippy::cast_precision_loss)]
    fn point(&self, at: i64) -> HealthPoint {
        let n = self.samples.max(1);
        let avg = |sum: u64| ((sum as f64 / n as f64) * 10.0).round() / 10.0;
        HealthPoint {
            at: UnixMillis(at),
            samples: self.samples,
            cpu_avg: avg(self.cpu_sum),
            cpu_max: u8::try_from(self.cpu_max.min(100)).unwrap_or(100),
            mem_free_min: self.mem_free_min.unwrap_or(0),
            mem_free_avg: u64::try_from(self.mem_free_sum / u128::from(n)).unwrap_or(u64::MAX),
            mem_total: self.mem_total,
            uptime_secs: self.uptime,
            disk_free_min: self.disk_free_min.unwrap_or(0),
            disk_total: self.disk_total,
            ppp_max: u32::try_from(self.ppp_max).unwrap_or(u32::MAX),
            ppp_avg: avg(self.ppp_sum),
            hotspot_max: u32::try_from(self.hotspot_max).unwrap_or(u32::MAX),
            hotspot_avg: avg(self.hotspot_sum),
            rx_bytes: self.rx,
            tx_bytes: self.tx,
        }
    }
}

fn uint(row: &sqlx::any::AnyRow, column: &str) -> Result<u64, DbError> {
    Ok(u64::try_from(row.int(column)?).unwrap_or(0))
}

impl Db {
    /// A router's health between `from` (inclusive) and `to` (exclusive) in steps of
    /// `step_secs`: raw samples when the step is under 5 minutes and the range lies within
    /// the raw retention (`raw_window` before now), 5-minute rollups otherwise.
    ///
    /// # Errors
    /// The router is not visible in `scope`, the range or step is invalid, or the database
    /// failed.
    pub async fn router_health(
        &self,
        scope: &Scope,
        id: RouterId,
        from: UnixMillis,
        to: UnixMillis,
        step_secs: u64,
        raw_window: Duration,
    ) -> Result<HealthSeries, DbError> {
        let r = self.get_router(scope, id).await?;
        if to.as_millis() <= from.as_millis() {
            return Err(DbError::Invalid("`to` must be after `from`".into()));
        }
        if step_secs == 0 || step_secs > 366 * 86_400 {
            return Err(DbError::Invalid(
                "step must be between 1 second and 366 days".into(),
            ));
        }
        let raw_from = UnixMillis(
            self.now()
                .as_millis()
                .saturating_sub(i64::try_from(raw_window.as_millis()).unwrap_or(i64::MAX)),
        );
        let source = if step_secs * 1000 < BUCKET_MS.unsigned_abs() && from >= raw_from {
            HealthSource::Raw
        } else {
            HealthSource::Rollup
        };
        let step_secs = match source {
            HealthSource::Raw => step_secs,
            HealthSource::Rollup => step_secs.div_ceil(300).max(1) * 300,
        };
        let points_max = (to.as_millis() - from.as_millis()) / (to_i64(step_secs) * 1000);
        if points_max > 20_000 {
            return Err(DbError::Invalid(format!(
                "that range in steps of {step_secs} s gives {points_max} points; at most 20000: \
                 take a larger step"
            )));
        }
        let mut q = match source {
            HealthSource::Raw => Sql::new(
                "SELECT at, 1 AS samples, cpu AS cpu_sum, cpu AS cpu_max, mem_free AS mem_free_min, \
                 mem_free AS mem_free_sum, mem_total, uptime AS uptime_max, disk_free AS disk_free_min, \
                 disk_total, ppp AS ppp_max, ppp AS ppp_sum, hotspot AS hotspot_max, \
                 hotspot AS hotspot_sum, rx_bytes AS rx_bytes_max, tx_bytes AS tx_bytes_max \
                 FROM health_samples WHERE router_id = ",
            ),
            HealthSource::Rollup => Sql::new(
                "SELECT bucket AS at, samples, cpu_sum, cpu_max, mem_free_min, mem_free_sum, \
                 mem_total, uptime_max, disk_free_min, disk_total, ppp_max, ppp_sum, hotspot_max, \
                 hotspot_sum, rx_bytes_max, tx_bytes_max FROM health_rollups WHERE router_id = ",
            ),
        };
        let column = match source {
            HealthSource::Raw => "at",
            HealthSource::Rollup => "bucket",
        };
        q.bind(id.to_string())
            .push(" AND tenant_id = ")
            .bind(r.tenant_id.to_string())
            .push(" AND ")
            .push(column)
            .push(" >= ")
            .bind(from.as_millis())
            .push(" AND ")
            .push(column)
            .push(" < ")
            .bind(to.as_millis())
            .push(" ORDER BY ")
            .push(column);
        let rows = q.fetch_all(self.pool()).await?;
        let step_ms = to_i64(step_secs) * 1000;
        let mut steps: BTreeMap<i64, Acc> = BTreeMap::new();
        for row in &rows {
            let at = row.int("at")?;
            let mut v = [0u64; 15];
            for (slot, column) in v.iter_mut().zip([
                "samples",
                "cpu_sum",
                "cpu_max",
                "mem_free_min",
                "mem_free_sum",
                "mem_total",
                "uptime_max",
                "disk_free_min",
                "disk_total",
                "ppp_max",
                "ppp_sum",
                "hotspot_max",
                "hotspot_sum",
                "rx_bytes_max",
                "tx_bytes_max",
            ]) {
                *slot = uint(row, column)?;
            }
            let start = from.as_millis() + (at - from.as_millis()) / step_ms * step_ms;
            steps.entry(start).or_default().add(&v);
        }
        Ok(HealthSeries {
            router_id: id,
            from,
            to,
            step_secs,
            source,
            points: steps.iter().map(|(at, acc)| acc.point(*at)).collect(),
        })
    }

    /// Routers in `scope` with a RouterOS update available, outdated RouterBOARD firmware,
    /// or a RouterOS older than the supported minimum.
    ///
    /// # Errors
    /// The database failed.
    pub async fn outdated_routers(
        &self,
        scope: &Scope,
        page: &PageRequest,
    ) -> Result<Page<Router>, DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(ROUTER_COLUMNS).push(
            " FROM routers WHERE deleted_at IS NULL AND (update_available = 1 \
             OR firmware_outdated = 1 OR ros_unsupported = 1)",
        );
        scope.filter(&mut q, "tenant_id");
        page.apply(&mut q, "id");
        let rows = q.fetch_all(self.pool()).await?;
        let items = rows.iter().map(router).collect::<Result<Vec<_>, _>>()?;
        Ok(page.finish(items, |r| r.id.to_string()))
    }

    /// Rolls complete 5-minute buckets of raw samples up (once each), then deletes raw
    /// samples and rollups past their retention. Idempotent; safe to run at any time.
    ///
    /// # Errors
    /// The database failed (nothing of the failed step is kept).
    pub async fn health_maintenance(
        &self,
        retention: &HealthRetention,
    ) -> Result<MaintenanceReport, DbError> {
        let now = self.now().as_millis();
        let mut report = MaintenanceReport::default();
        let mut tx = self.begin().await?;
        let state = |name: &'static str, lock: bool| {
            let mut q = Sql::new("SELECT value FROM health_state WHERE name = ");
            q.bind(name.to_owned());
            if lock && self.backend() == super::Backend::Postgres {
                q.push(" FOR UPDATE");
            }
            q
        };
        // Locked first: an ingest noting late samples waits for this run, or this run for
        // it (see `note_late`).
        let watermark = state("rollup_watermark", true)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.int("value"))
            .transpose()?;
        let watermark = match watermark {
            Some(w) => Some(w),
            None => Sql::new("SELECT MIN(at) AS at FROM health_samples")
                .fetch_one(&mut *tx)
                .await?
                .opt_int("at")?
                .map(|at| at.div_euclid(BUCKET_MS) * BUCKET_MS),
        };
        let target = now.div_euclid(BUCKET_MS) * BUCKET_MS;
        if let Some(wm) = watermark.filter(|wm| *wm < target) {
            let mut q = Sql::new(ROLLUP_SELECT);
            q.push("at >= ")
                .bind(wm)
                .push(" AND at < ")
                .bind(target)
                .push(
                    " GROUP BY router_id, (at / 300000) * 300000 \
                     ON CONFLICT (router_id, bucket) DO NOTHING",
                );
            report.rolled_up = q.execute(&mut *tx).await?.rows_affected();
        }
        let set_state = |name: &'static str, value: i64| {
            let mut q = Sql::new("INSERT INTO health_state (name, value) VALUES (");
            q.bind(name.to_owned())
                .push(", ")
                .bind(value)
                .push(") ON CONFLICT (name) DO UPDATE SET value = excluded.value");
            q
        };
        if watermark.is_none_or(|wm| wm < target) {
            set_state("rollup_watermark", target)
                .execute(&mut *tx)
                .await?;
        }
        // Buckets that got samples after they were rolled up: again from all their raw
        // samples while none was deleted (the bucket is not below the last raw cut), else
        // the raw samples left (all late) are added to the rollup before they go below.
        let prev_cut = state("raw_cut", false)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.int("value"))
            .transpose()?
            .unwrap_or(i64::MIN);
        let mut q = Sql::new("SELECT router_id, bucket FROM health_late ORDER BY bucket LIMIT ");
        q.bind(LATE_PER_RUN);
        let late = q.fetch_all(&mut *tx).await?;
        for row in &late {
            let router = row.text("router_id")?;
            let bucket = row.int("bucket")?;
            let mut q = Sql::new(ROLLUP_SELECT);
            q.push("router_id = ")
                .bind(router.clone())
                .push(" AND at >= ")
                .bind(bucket)
                .push(" AND at < ")
                .bind(bucket + BUCKET_MS)
                .push(" GROUP BY router_id, (at / 300000) * 300000")
                .push(if bucket >= prev_cut {
                    ROLLUP_REPLACE
                } else {
                    ROLLUP_ADD
                });
            report.late_rolled_up += q.execute(&mut *tx).await?.rows_affected();
            let mut q = Sql::new("DELETE FROM health_late WHERE router_id = ");
            q.bind(router).push(" AND bucket = ").bind(bucket);
            q.execute(&mut *tx).await?;
        }
        // Raw samples go only once their bucket is rolled up (the watermark is `target`),
        // whole buckets at a time (so a bucket at or above the last cut has all its samples).
        let raw_cut = (now - to_i64(u64::try_from(retention.raw.as_millis()).unwrap_or(u64::MAX)))
            .div_euclid(BUCKET_MS)
            .saturating_mul(BUCKET_MS)
            .min(target);
        let mut q = Sql::new("DELETE FROM health_samples WHERE at < ");
        q.bind(raw_cut);
        report.raw_deleted = q.execute(&mut *tx).await?.rows_affected();
        if raw_cut > prev_cut {
            set_state("raw_cut", raw_cut).execute(&mut *tx).await?;
        }
        let rollup_cut =
            now - to_i64(u64::try_from(retention.rollups.as_millis()).unwrap_or(u64::MAX));
        let mut q = Sql::new("DELETE FROM health_rollups WHERE bucket < ");
        q.bind(rollup_cut);
        report.rollups_deleted = q.execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(report)
    }
}

/// The health retention task: runs [`Db::health_maintenance`] every
/// [`HealthRetention::interval`] on the controller's clock until shut down.
#[derive(Debug)]
pub struct HealthTask(crate::periodic::Periodic);

impl HealthTask {
    /// Starts the task (a run at once, then one per interval).
    #[must_use]
    pub fn start(db: Db, clock: SharedClock, retention: HealthRetention) -> Self {
        let interval = retention.interval;
        Self(crate::periodic::Periodic::start(
            clock,
            interval,
            move || {
                let db = db.clone();
                async move {
                    match db.health_maintenance(&retention).await {
                        Ok(r) if r != MaintenanceReport::default() => {
                            tracing::debug!(
                                rolled_up = r.rolled_up,
                                raw_deleted = r.raw_deleted,
                                rollups_deleted = r.rollups_deleted,
                                "health retention ran"
                            );
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "health retention failed; retrying at the next interval")
                        }
                    }
                }
            },
        ))
    }

    /// Stops the task and waits for it.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
    }
}
