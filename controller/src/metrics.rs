//! Prometheus metrics of the controller at `GET /metrics` (admin bearer token), in the
//! OpenMetrics text format by the `prometheus-client` crate.
//!
//! Everything is read from the database when scraped ([`crate::db::metrics`]): connected
//! agents, routers, subscribers and jobs by status, the latency of finished jobs (from the
//! staff change that made them to the agent's final report) as a histogram, telemetry the
//! agents dropped, open drift, notifications by status and admin alerts not delivered yet. So
//! any replica answers the same, and a restart loses nothing. Per-agent numbers (queue and
//! outbox depth, router command errors by code) are on each agent's own endpoint.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, text::encode};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::db::metrics::{LATENCY_BUCKETS_MS, Snapshot};

#[derive(Debug)]
struct Collect(Snapshot);

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let metric = ConstGauge::new(v);
    let e = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(e)
}

fn by_status(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(String, i64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (status, n) in rows {
        let labels = [("status", status.as_str())];
        let e = family.encode_family(&labels)?;
        ConstGauge::new(*n).encode(e)?;
    }
    Ok(())
}

impl Collector for Collect {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        gauge(
            &mut encoder,
            "agents",
            "Agents enrolled and not revoked",
            s.agents,
        )?;
        gauge(
            &mut encoder,
            "agents_connected",
            "Agents connected to a controller now",
            s.agents_connected,
        )?;
        gauge(
            &mut encoder,
            "agent_records_committed",
            "Outbox records the agents delivered",
            s.records_committed,
        )?;
        gauge(
            &mut encoder,
            "telemetry_dropped",
            "Telemetry records agents dropped to keep their outboxes within their caps",
            s.telemetry_dropped,
        )?;
        by_status(&mut encoder, "routers", "Routers by status", &s.routers)?;
        by_status(
            &mut encoder,
            "subscribers",
            "Subscribers by lifecycle status",
            &s.subscribers,
        )?;
        by_status(&mut encoder, "jobs", "Jobs by status", &s.jobs)?;
        let (count, sum, cumulative) = &s.job_latency;
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_MS
            .iter()
            .zip(cumulative)
            .map(|(ms, n)| {
                #[allow(clippy::cast_precision_loss)]
                let le = *ms as f64 / 1000.0;
                (le, *n)
            })
            .chain(std::iter::once((f64::INFINITY, *count)))
            .collect();
        let mut e = encoder.encode_descriptor(
            "job_latency_seconds",
            "Finished jobs: time from the change that made them to their final status",
            None,
            MetricType::Histogram,
        )?;
        e.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            *sum, *count, &buckets, None,
        )?;
        gauge(
            &mut encoder,
            "drift_open",
            "Drift items open or being enforced",
            s.drift_open,
        )?;
        by_status(
            &mut encoder,
            "notifications",
            "Notices and alerts by status",
            &s.notifications,
        )?;
        gauge(
            &mut encoder,
            "alerts_unsent",
            "Admin alerts not delivered yet",
            s.alerts_unsent,
        )?;
        let mut family = encoder.encode_descriptor(
            "alerts_firing",
            "Alerts firing now, by severity",
            None,
            MetricType::Gauge,
        )?;
        for severity in ["critical", "warning", "info"] {
            let n = s
                .alerts_firing
                .iter()
                .find(|(k, _)| k == severity)
                .map_or(0, |(_, n)| *n);
            let labels = [("severity", severity)];
            ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The OpenMetrics text of `snapshot`.
#[must_use]
pub fn render(snapshot: Snapshot) -> String {
    let mut registry = Registry::with_prefix("tikfleet");
    registry.register_collector(Box::new(Collect(snapshot)));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}
