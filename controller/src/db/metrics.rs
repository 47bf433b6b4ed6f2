//! What the controller's `/metrics` reports, read from the database when scraped: the same
//! numbers whichever replica answers, and nothing lost over a restart.

use super::sql::Sql;
use super::{Db, DbError, RowExt as _};

/// Upper bounds of the job latency buckets, in milliseconds (100 ms to 1 h).
pub const LATENCY_BUCKETS_MS: [i64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000,
];

/// The fleet as the database has it now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Agents not revoked.
    pub agents: i64,
    /// Of them, connected to some controller now.
    pub agents_connected: i64,
    /// Outbox records agents delivered, in total.
    pub records_committed: i64,
    /// Telemetry records agents dropped to keep their outboxes within their caps.
    pub telemetry_dropped: i64,
    /// Routers (not deleted) by status.
    pub routers: Vec<(String, i64)>,
    /// Subscribers by status.
    pub subscribers: Vec<(String, i64)>,
    /// Jobs by status.
    pub jobs: Vec<(String, i64)>,
    /// Finished jobs' latency (created to finished): `(count, sum in seconds, cumulative
    /// counts per bucket of [`LATENCY_BUCKETS_MS`])`.
    pub job_latency: (u64, f64, Vec<u64>),
    /// Drift items open or being enforced.
    pub drift_open: i64,
    /// Notifications (notices and alerts) by status.
    pub notifications: Vec<(String, i64)>,
    /// Admin alerts not delivered yet (pending or being sent).
    pub alerts_unsent: i64,
    /// Alerts firing now, by severity.
    pub alerts_firing: Vec<(String, i64)>,
}

async fn by_status(db: &Db, sql: &str) -> Result<Vec<(String, i64)>, DbError> {
    let rows = Sql::new(sql).fetch_all(db.pool()).await?;
    rows.iter()
        .map(|r| Ok((r.text("status")?, r.int("n")?)))
        .collect()
}

impl Db {
    /// The numbers `/metrics` reports.
    ///
    /// # Errors
    /// The database failed.
    pub async fn metrics_snapshot(&self) -> Result<Snapshot, DbError> {
        let row = Sql::new(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(connected), 0) AS BIGINT) AS connected, \
             CAST(COALESCE(SUM(records_committed), 0) AS BIGINT) AS records, \
             CAST(COALESCE(SUM(dropped_records), 0) AS BIGINT) AS dropped \
             FROM agents WHERE revoked_at IS NULL",
        )
        .fetch_one(self.pool())
        .await?;
        // SUM is NUMERIC on PostgreSQL: cast back so both databases answer BIGINT.
        let mut latency = Sql::new(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(updated_at - created_at), 0) AS BIGINT) AS total",
        );
        for (i, ms) in LATENCY_BUCKETS_MS.iter().enumerate() {
            latency.push(&format!(
                ", CAST(COALESCE(SUM(CASE WHEN updated_at - created_at <= {ms} THEN 1 ELSE 0 END), 0) AS BIGINT) AS b{i}"
            ));
        }
        latency.push(" FROM jobs WHERE status IN ('succeeded', 'failed')");
        let l = latency.fetch_one(self.pool()).await?;
        let count = u64::try_from(l.int("n")?).unwrap_or(0);
        #[allow(clippy::cast_precision_loss)]
        let sum = l.int("total")? as f64 / 1000.0;
        let buckets = (0..LATENCY_BUCKETS_MS.len())
            .map(|i| Ok(u64::try_from(l.int(&format!("b{i}"))?).unwrap_or(0)))
            .collect::<Result<Vec<_>, DbError>>()?;
        let drift =
            Sql::new("SELECT COUNT(*) AS n FROM drift_items WHERE status IN ('open', 'enforcing')")
                .fetch_one(self.pool())
                .await?;
        let alerts = Sql::new(
            "SELECT COUNT(*) AS n FROM notifications WHERE kind = 'alert' \
             AND status IN ('pending', 'sending')",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(Snapshot {
            agents: row.int("n")?,
            agents_connected: row.int("connected")?,
            records_committed: row.int("records")?,
            telemetry_dropped: row.int("dropped")?,
            routers: by_status(
                self,
                "SELECT status, COUNT(*) AS n FROM routers WHERE deleted_at IS NULL GROUP BY status",
            )
            .await?,
            subscribers: by_status(
                self,
                "SELECT status, COUNT(*) AS n FROM subscribers GROUP BY status",
            )
            .await?,
            jobs: by_status(self, "SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").await?,
            job_latency: (count, sum, buckets),
            drift_open: drift.int("n")?,
            notifications: by_status(
                self,
                "SELECT status, COUNT(*) AS n FROM notifications GROUP BY status",
            )
            .await?,
            alerts_unsent: alerts.int("n")?,
            alerts_firing: by_status(
                self,
                "SELECT severity AS status, COUNT(*) AS n FROM alerts WHERE state = 'firing' \
                 GROUP BY severity",
            )
            .await?,
        })
    }
}
