//! Prometheus metrics of the agent, served at `/metrics` on a loopback port
//! (`[metrics] listen`, default `127.0.0.1:9464`).
//!
//! Counted as records pass through the audit pipe ([`AgentMetrics::observe`]): router
//! commands and their errors by code, jobs finished by status and how long they ran (from
//! their first `running` update to their last). Read when scraped: the queue by status, the
//! outbox (records, bytes, sequence numbers, telemetry dropped under its cap), routers
//! served. Exposition by the `prometheus-client` crate (the OpenMetrics text format).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tikfleet_shared::job::JobStatus;
use tikfleet_shared::record::{AuditStatus, OutboxRecord};
use tikfleet_shared::{JobId, UnixMillis};

/// A label of one value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Label {
    /// The value (a status, an error code).
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: String,
}

/// What the agent reads when scraped.
pub trait Gauges: Send + Sync {
    /// Jobs by status (`queued`, `running`, `retrying`, `succeeded`, `failed`, `cancelled`).
    fn jobs(&self) -> Vec<(&'static str, u64)>;
    /// The outbox: `(records, bytes, last seq, acked seq, telemetry dropped)`.
    fn outbox(&self) -> (u64, u64, u64, u64, u64);
    /// Routers served.
    fn routers(&self) -> u64;
    /// Routers whose last probe failed (probed on the slowing schedule, see
    /// [`crate::probe`]).
    fn routers_unreachable(&self) -> u64 {
        0
    }
}

/// The agent's metrics.
pub struct AgentMetrics {
    registry: Registry,
    commands: Counter,
    command_errors: Family<Label, Counter>,
    jobs_finished: Family<Status, Counter>,
    job_seconds: Histogram,
    jobs: Family<Status, Gauge>,
    outbox_records: Gauge,
    outbox_bytes: Gauge,
    outbox_last_seq: Gauge,
    outbox_acked_seq: Gauge,
    telemetry_dropped: Gauge,
    routers: Gauge,
    routers_unreachable: Gauge,
    /// When each running job first ran.
    started: Mutex<HashMap<JobId, UnixMillis>>,
    gauges: Box<dyn Gauges>,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentMetrics").finish_non_exhaustive()
    }
}

impl AgentMetrics {
    /// Metrics reading `gauges` when scraped.
    #[must_use]
    pub fn new(gauges: Box<dyn Gauges>) -> Self {
        let mut registry = Registry::with_prefix("tikfleet_agent");
        let commands = Counter::default();
        registry.register(
            "router_commands",
            "Router commands run (API and SSH)",
            commands.clone(),
        );
        let command_errors = Family::<Label, Counter>::default();
        registry.register(
            "router_command_errors",
            "Router commands that failed, by error code",
            command_errors.clone(),
        );
        let jobs_finished = Family::<Status, Counter>::default();
        registry.register(
            "jobs_finished",
            "Jobs finished, by final status",
            jobs_finished.clone(),
        );
        // 50 ms to ~27 min.
        let job_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        registry.register(
            "job_run_seconds",
            "Time from a job's first attempt to its final status, retries included",
            job_seconds.clone(),
        );
        let jobs = Family::<Status, Gauge>::default();
        registry.register("jobs", "Jobs in the queue, by status", jobs.clone());
        let outbox_records = Gauge::default();
        registry.register(
            "outbox_records",
            "Records in the outbox not yet acknowledged by the controller",
            outbox_records.clone(),
        );
        let outbox_bytes = Gauge::default();
        registry.register(
            "outbox_bytes",
            "Bytes of records in the outbox",
            outbox_bytes.clone(),
        );
        let outbox_last_seq = Gauge::default();
        registry.register(
            "outbox_last_seq",
            "Last sequence number given to a record",
            outbox_last_seq.clone(),
        );
        let outbox_acked_seq = Gauge::default();
        registry.register(
            "outbox_acked_seq",
            "Highest sequence number the controller acknowledged",
            outbox_acked_seq.clone(),
        );
        let telemetry_dropped = Gauge::default();
        registry.register(
            "telemetry_dropped",
            "Telemetry records dropped to keep the outbox within its cap (since the store was made)",
            telemetry_dropped.clone(),
        );
        let routers = Gauge::default();
        registry.register("routers", "Routers this agent serves", routers.clone());
        let routers_unreachable = Gauge::default();
        registry.register(
            "routers_unreachable",
            "Routers whose last probe failed (probed less often until one succeeds)",
            routers_unreachable.clone(),
        );
        Self {
            registry,
            commands,
            command_errors,
            jobs_finished,
            job_seconds,
            jobs,
            outbox_records,
            outbox_bytes,
            outbox_last_seq,
            outbox_acked_seq,
            telemetry_dropped,
            routers,
            routers_unreachable,
            started: Mutex::new(HashMap::new()),
            gauges,
        }
    }

    /// Counts what `record` says (called for every record the audit pipe writes).
    pub fn observe(&self, record: &OutboxRecord) {
        match record {
            OutboxRecord::Audit(a) => {
                self.commands.inc();
                if a.status == AuditStatus::Failed {
                    let code = a
                        .error
                        .as_ref()
                        .map_or("unknown", |e| e.code.as_str())
                        .to_owned();
                    self.command_errors.get_or_create(&Label { code }).inc();
                }
            }
            OutboxRecord::JobUpdate(u) => {
                let mut started = self.started.lock().unwrap_or_else(PoisonError::into_inner);
                let terminal = matches!(
                    u.status,
                    JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
                );
                if terminal {
                    self.jobs_finished
                        .get_or_create(&Status {
                            status: status_name(u.status).to_owned(),
                        })
                        .inc();
                    if let Some(first) = started.remove(&u.job_id) {
                        let ms = u.at.as_millis().saturating_sub(first.as_millis()).max(0);
                        #[allow(clippy::cast_precision_loss)]
                        self.job_seconds.observe(ms as f64 / 1000.0);
                    }
                } else {
                    started.entry(u.job_id).or_insert(u.at);
                }
            }
            _ => {}
        }
    }

    /// The OpenMetrics text of every metric, read now.
    #[must_use]
    pub fn render(&self) -> String {
        for (status, n) in self.gauges.jobs() {
            self.jobs
                .get_or_create(&Status {
                    status: status.to_owned(),
                })
                .set(to_i64(n));
        }
        let (records, bytes, last, acked, dropped) = self.gauges.outbox();
        self.outbox_records.set(to_i64(records));
        self.outbox_bytes.set(to_i64(bytes));
        self.outbox_last_seq.set(to_i64(last));
        self.outbox_acked_seq.set(to_i64(acked));
        self.telemetry_dropped.set(to_i64(dropped));
        self.routers.set(to_i64(self.gauges.routers()));
        self.routers_unreachable
            .set(to_i64(self.gauges.routers_unreachable()));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn status_name(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Queued => "queued",
        JobStatus::Running => "running",
        JobStatus::Retrying => "retrying",
        JobStatus::Succeeded => "succeeded",
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "cancelled",
    }
}

/// Serves `/metrics` on `listen` until `shutdown` completes; returns the bound address once
/// listening (port 0 picks one).
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    metrics: Arc<AgentMetrics>,
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok((addr, task))
}

#[cfg(test)]
mod tests {
    use tikfleet_shared::job::JobUpdate;
    use tikfleet_shared::record::{AuditParams, AuditRecord};
    use tikfleet_shared::{ErrorCode, ErrorInfo, RouterId, TenantId};

    use super::*;

    struct Fixed;
    impl Gauges for Fixed {
        fn jobs(&self) -> Vec<(&'static str, u64)> {
            vec![("queued", 3), ("running", 1)]
        }
        fn outbox(&self) -> (u64, u64, u64, u64, u64) {
            (5, 500, 42, 37, 2)
        }
        fn routers(&self) -> u64 {
            2
        }
        fn routers_unreachable(&self) -> u64 {
            1
        }
    }

    fn audit(error: Option<ErrorCode>) -> OutboxRecord {
        OutboxRecord::Audit(AuditRecord {
            seq: 0,
            at: UnixMillis(0),
            tenant_id: TenantId::new(),
            router_id: None,
            job_id: None,
            generation: None,
            action: "/ppp/secret/add".into(),
            params: AuditParams::new(),
            status: if error.is_some() {
                AuditStatus::Failed
            } else {
                AuditStatus::Succeeded
            },
            error: error.map(ErrorInfo::new),
            duration_ms: 1,
        })
    }

    fn update(job: JobId, status: JobStatus, at: i64) -> OutboxRecord {
        OutboxRecord::JobUpdate(JobUpdate {
            job_id: job,
            router_id: RouterId::new(),
            status,
            attempts: 1,
            progress: None,
            error: None,
            detail: None,
            at: UnixMillis(at),
        })
    }

    #[test]
    fn counts_commands_errors_and_job_times() {
        let m = AgentMetrics::new(Box::new(Fixed));
        m.observe(&audit(None));
        m.observe(&audit(Some(ErrorCode::ConnectionRefused)));
        m.observe(&audit(Some(ErrorCode::ConnectionRefused)));
        let job = JobId::new();
        m.observe(&update(job, JobStatus::Running, 1_000));
        m.observe(&update(job, JobStatus::Retrying, 2_000));
        m.observe(&update(job, JobStatus::Succeeded, 4_000));
        let text = m.render();
        for line in [
            "tikfleet_agent_router_commands_total 3",
            "tikfleet_agent_router_command_errors_total{code=\"connection_refused\"} 2",
            "tikfleet_agent_jobs_finished_total{status=\"succeeded\"} 1",
            "tikfleet_agent_job_run_seconds_count 1",
            "tikfleet_agent_job_run_seconds_sum 3.0",
            "tikfleet_agent_jobs{status=\"queued\"} 3",
            "tikfleet_agent_outbox_records 5",
            "tikfleet_agent_outbox_acked_seq 37",
            "tikfleet_agent_telemetry_dropped 2",
            "tikfleet_agent_routers 2",
            "tikfleet_agent_routers_unreachable 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
