//! Alerts in storage: evaluating each tenant's rules ([`crate::alerts::AlertRules`]) against
//! health samples, router and agent status (with each agent's latest host sample), jobs and
//! the audit log; the alerts it opens and
//! resolves; their notices; acknowledgement; and the rules' settings.
//!
//! [`Db::evaluate_alerts`] runs one transaction per tenant at the controller's clock: it reads
//! which conditions hold now (a condition is a rule and a subject — the router, agent or job
//! it is about), opens an alert for each that has none firing (the partial unique index
//! `alerts_firing` allows one per tenant, rule and subject), resolves each firing alert whose
//! condition no longer holds (a rule turned off resolves its alerts), and sends reminders of
//! alerts still firing and not acknowledged. Notices go through
//! [`queue_alert`](super::notify::queue_alert) in the same transaction, keyed
//! `alert:{id}:firing`, `alert:{id}:resolved` and `alert:{id}:reminder:{n}`, so each is
//! queued once whatever happens around it; the sender is woken after the commit.

use std::collections::{BTreeMap, HashMap};

use tikfleet_shared::record::AuditParams;
use tikfleet_shared::{AgentId, ErrorInfo, RouterId, TenantId, UnixMillis};
use uuid::Uuid;

use super::notify::queue_alert;
use super::sql::Sql;
use super::{Db, DbError, Page, PageRequest, RowExt as _, Scope, Staff, audit_staff};
use crate::alerts::{AlertRules, Rule, Severity};
use crate::notify::template::rfc3339;

/// The actor audit rows of the evaluator name.
const ACTOR: &str = "controller";

/// How far back `memory_low` looks for a router's latest sample and `reboot_detected` for
/// samples to compare: a router with no sample in the last hour has neither.
const LATEST_SAMPLES_MS: i64 = 3_600_000;

/// Whether an alert is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    /// The condition holds.
    Firing,
    /// The condition stopped holding.
    Resolved,
}

impl AlertState {
    /// `firing` or `resolved`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

impl std::str::FromStr for AlertState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "firing" => Ok(Self::Firing),
            "resolved" => Ok(Self::Resolved),
            _ => Err(()),
        }
    }
}

/// One alert (an incident of one rule about one subject).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// Its id (UUIDv7).
    pub id: Uuid,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The router it is about, if any.
    pub router_id: Option<RouterId>,
    /// The agent it is about, if any.
    pub agent_id: Option<AgentId>,
    /// The rule that fired.
    pub rule: Rule,
    /// What it is about: a router, agent or job id.
    pub subject_key: String,
    /// How urgent it is.
    pub severity: Severity,
    /// Firing or resolved.
    pub state: AlertState,
    /// One line saying what happened.
    pub summary: String,
    /// When it fired.
    pub started_at: UnixMillis,
    /// When it resolved.
    pub resolved_at: Option<UnixMillis>,
    /// When its last notice (firing or reminder) was queued.
    pub last_notified_at: UnixMillis,
    /// Reminders sent.
    pub reminders: u32,
    /// When staff acknowledged it.
    pub acknowledged_at: Option<UnixMillis>,
    /// Who acknowledged it (the token's name).
    pub acknowledged_by: Option<String>,
}

const COLUMNS: &str = "id, tenant_id, router_id, agent_id, rule, subject_key, severity, state, \
     summary, started_at, resolved_at, last_notified_at, reminders, acknowledged_at, acknowledged_by";

fn alert(row: &sqlx::any::AnyRow) -> Result<Alert, DbError> {
    Ok(Alert {
        id: row.parse("id")?,
        tenant_id: row.parse("tenant_id")?,
        router_id: row.opt_parse("router_id")?,
        agent_id: row.opt_parse("agent_id")?,
        rule: row.parse("rule")?,
        subject_key: row.text("subject_key")?,
        severity: row.parse("severity")?,
        state: row.parse("state")?,
        summary: row.text("summary")?,
        started_at: row.millis("started_at")?,
        resolved_at: row.opt_millis("resolved_at")?,
        last_notified_at: row.millis("last_notified_at")?,
        reminders: u32::try_from(row.uint("reminders")?).unwrap_or(u32::MAX),
        acknowledged_at: row.opt_millis("acknowledged_at")?,
        acknowledged_by: row.opt_text("acknowledged_by")?,
    })
}

/// Which alerts a list shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertFilter {
    /// Only alerts in this state (`None`: both).
    pub state: Option<AlertState>,
    /// Only alerts about this router.
    pub router: Option<RouterId>,
    /// Only alerts of this severity.
    pub severity: Option<Severity>,
}

/// What one evaluation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvalReport {
    /// Tenants evaluated.
    pub tenants: u64,
    /// Alerts opened.
    pub fired: u64,
    /// Alerts resolved.
    pub resolved: u64,
    /// Reminders queued.
    pub reminders: u64,
    /// Tenants whose evaluation failed (logged; retried at the next evaluation).
    pub failed_tenants: u64,
}

/// A condition that holds now.
struct Condition {
    router: Option<RouterId>,
    agent: Option<AgentId>,
    summary: String,
    detail: String,
}

type Conditions = BTreeMap<(Rule, String), Condition>;

/// Parses a tenant's stored rules (`NULL`: the defaults).
pub(crate) fn parse_rules(json: Option<&str>) -> Result<AlertRules, DbError> {
    json.map_or_else(
        || Ok(AlertRules::default()),
        |j| {
            serde_json::from_str(j)
                .map_err(|e| DbError::Corrupt(format!("tenant alert rules: {e}")))
        },
    )
}

fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn minutes(ms: i64) -> String {
    let secs = ms / 1000;
    if secs % 60 == 0 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

async fn rules_of(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
) -> Result<AlertRules, DbError> {
    let mut q = Sql::new("SELECT alert_rules FROM tenants WHERE id = ");
    q.bind(tenant.to_string());
    let row = q
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(DbError::NotFound("tenant"))?;
    parse_rules(row.opt_text("alert_rules")?.as_deref())
}

/// The tenant's live routers, by id, with their names.
async fn router_names(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
) -> Result<HashMap<RouterId, String>, DbError> {
    let mut q = Sql::new("SELECT id, name FROM routers WHERE deleted_at IS NULL AND tenant_id = ");
    q.bind(tenant.to_string());
    q.fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| Ok((r.parse("id")?, r.text("name")?)))
        .collect()
}

/// The tenant's routers for which `reboot_detected` holds at `now`, each with the uptimes
/// (seconds) before and after the reboot when the pair came in this evaluation, moving each
/// router's mark (`reboot_marks`) to its latest sample.
///
/// Every sample of the last hour newer than the router's mark is compared with the one
/// before it (the first with the mark), in order, so several samples that arrive between two
/// evaluations — an agent back from an outage, an evaluation that ran late — cannot hide a
/// reboot among them. The condition holds when a pair among them shows the uptime going back,
/// or, with no new sample, while the mark is the first sample after a reboot: an alert
/// resolves at the first evaluation after a later sample arrived. A sample older than the
/// mark (late) is not compared.
async fn reboots(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    now: i64,
) -> Result<Vec<(RouterId, Option<(i64, i64)>)>, DbError> {
    let t = tenant.to_string();
    let mut marks: HashMap<RouterId, (i64, i64, bool)> = HashMap::new();
    let mut q =
        Sql::new("SELECT router_id, at, uptime, rebooted FROM reboot_marks WHERE tenant_id = ");
    q.bind(t.clone());
    for row in q.fetch_all(&mut **tx).await? {
        marks.insert(
            row.parse("router_id")?,
            (
                row.int("at")?,
                row.int("uptime")?,
                row.int("rebooted")? != 0,
            ),
        );
    }
    let mut q = Sql::new(
        "SELECT s.router_id, s.at, s.uptime FROM health_samples s LEFT JOIN reboot_marks m \
         ON m.router_id = s.router_id WHERE s.tenant_id = ",
    );
    q.bind(t.clone())
        .push(" AND s.at >= ")
        .bind(now.saturating_sub(LATEST_SAMPLES_MS))
        .push(" AND (m.at IS NULL OR s.at > m.at) ORDER BY s.router_id, s.at");
    let mut new: BTreeMap<RouterId, Vec<(i64, i64)>> = BTreeMap::new();
    for row in q.fetch_all(&mut **tx).await? {
        new.entry(row.parse("router_id")?)
            .or_default()
            .push((row.int("at")?, row.int("uptime")?));
    }
    let mut out = Vec::new();
    for (router, &(_, _, rebooted)) in &marks {
        if rebooted && !new.contains_key(router) {
            out.push((*router, None));
        }
    }
    for (router, samples) in new {
        let mark = marks.get(&router).copied();
        let mut prev = mark.map(|(_, uptime, _)| uptime);
        let mut latest_rebooted = false;
        let mut went_back = None;
        for &(_, uptime) in &samples {
            latest_rebooted = prev.is_some_and(|p| uptime < p);
            if latest_rebooted {
                went_back = prev.map(|p| (p, uptime));
            }
            prev = Some(uptime);
        }
        if went_back.is_some() {
            out.push((router, went_back));
        }
        let Some(&(at, uptime)) = samples.last() else {
            continue;
        };
        let mut q = Sql::new(
            "INSERT INTO reboot_marks (router_id, tenant_id, at, uptime, rebooted) VALUES (",
        );
        q.bind(router.to_string())
            .push(", ")
            .bind(t.clone())
            .push(", ")
            .bind(at)
            .push(", ")
            .bind(uptime)
            .push(", ")
            .bind(i64::from(latest_rebooted))
            .push(
                ") ON CONFLICT (router_id) DO UPDATE SET at = excluded.at, \
                 uptime = excluded.uptime, rebooted = excluded.rebooted",
            );
        q.execute(&mut **tx).await?;
    }
    Ok(out)
}

/// Reads which of the enabled rules' conditions hold at `now`.
async fn conditions(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
    rules: &AlertRules,
    now: UnixMillis,
) -> Result<Conditions, DbError> {
    let now = now.as_millis();
    let t = tenant.to_string();
    let names = router_names(tx, tenant).await?;
    let mut out = Conditions::new();
    let mut router_condition = |rule: Rule, router: RouterId, summary: String, detail: String| {
        if names.contains_key(&router) {
            out.insert(
                (rule, router.to_string()),
                Condition {
                    router: Some(router),
                    agent: None,
                    summary,
                    detail,
                },
            );
        }
    };
    let name = |r: &RouterId| names.get(r).cloned().unwrap_or_default();

    if rules.cpu_high.enabled {
        // The run of samples at or above the threshold since the last one below it (within
        // twice the duration), per router.
        let for_ms = secs_ms(rules.cpu_high.for_secs);
        let from = now.saturating_sub(for_ms.saturating_mul(2));
        let threshold = i64::from(rules.cpu_high.threshold_percent);
        let mut q = Sql::new(
            "SELECT s.router_id, COUNT(*) AS n, MIN(s.at) AS first_at, MAX(s.at) AS last_at, \
             MIN(s.cpu) AS cpu_min, MAX(s.cpu) AS cpu_max FROM health_samples s WHERE s.tenant_id = ",
        );
        q.bind(t.clone())
            .push(" AND s.at >= ")
            .bind(from)
            .push(
                " AND s.at > COALESCE((SELECT MAX(l.at) FROM health_samples l \
                 WHERE l.router_id = s.router_id AND l.tenant_id = s.tenant_id AND l.at >= ",
            )
            .bind(from)
            .push(" AND l.cpu < ")
            .bind(threshold)
            .push("), ")
            .bind(from - 1)
            .push(") GROUP BY s.router_id");
        for row in q.fetch_all(&mut **tx).await? {
            let router: RouterId = row.parse("router_id")?;
            let (n, first, last) = (row.int("n")?, row.int("first_at")?, row.int("last_at")?);
            if n >= 2 && last - first >= for_ms && last >= now - for_ms {
                let (lo, hi) = (row.int("cpu_min")?, row.int("cpu_max")?);
                router_condition(
                    Rule::CpuHigh,
                    router,
                    format!("router {} CPU at {lo}–{hi} %", name(&router)),
                    format!(
                        "Router {} has had a CPU load of at least {threshold} % in every sample \
                         for {} ({lo} to {hi} %).",
                        name(&router),
                        minutes(last - first)
                    ),
                );
            }
        }
    }

    if rules.memory_low.enabled {
        // Each router's latest sample.
        let mut q = Sql::new(
            "SELECT router_id, mem_free, mem_total FROM (SELECT s.router_id, s.mem_free, \
             s.mem_total, ROW_NUMBER() OVER (PARTITION BY s.router_id ORDER BY s.at DESC) AS rn \
             FROM health_samples s WHERE s.tenant_id = ",
        );
        q.bind(t.clone())
            .push(" AND s.at >= ")
            .bind(now.saturating_sub(LATEST_SAMPLES_MS))
            .push(") x WHERE rn = 1");
        for row in q.fetch_all(&mut **tx).await? {
            let router: RouterId = row.parse("router_id")?;
            let (free, total) = (row.int("mem_free")?, row.int("mem_total")?);
            let percent = i128::from(rules.memory_low.free_percent);
            if total > 0 && i128::from(free) * 100 < percent * i128::from(total) {
                let pct = i128::from(free) * 100 / i128::from(total);
                router_condition(
                    Rule::MemoryLow,
                    router,
                    format!("router {} memory low ({pct} % free)", name(&router)),
                    format!(
                        "Router {} has {free} of {total} bytes of memory free ({pct} %, under \
                         {percent} %).",
                        name(&router)
                    ),
                );
            }
        }
    }

    if rules.reboot_detected.enabled {
        for (router, went_back) in reboots(tx, tenant, now).await? {
            let detail = match went_back {
                Some((before, after)) => format!(
                    "Router {}'s uptime went back from {before} s to {after} s: it rebooted.",
                    name(&router)
                ),
                None => format!(
                    "Router {}'s latest sample shows a lower uptime than the one before it: it \
                     rebooted.",
                    name(&router)
                ),
            };
            router_condition(
                Rule::RebootDetected,
                router,
                format!("router {} rebooted", name(&router)),
                detail,
            );
        }
    }

    if rules.router_unreachable.enabled {
        let for_ms = secs_ms(rules.router_unreachable.for_secs);
        let mut q = Sql::new(
            "SELECT id, last_seen FROM routers WHERE deleted_at IS NULL AND status = 'unreachable' \
             AND (last_seen IS NULL OR last_seen <= ",
        );
        q.bind(now.saturating_sub(for_ms))
            .push(") AND tenant_id = ")
            .bind(t.clone());
        for row in q.fetch_all(&mut **tx).await? {
            let router: RouterId = row.parse("id")?;
            let since = row
                .opt_millis("last_seen")?
                .map_or_else(|| "never".to_owned(), rfc3339);
            router_condition(
                Rule::RouterUnreachable,
                router,
                format!("router {} unreachable", name(&router)),
                format!(
                    "Router {} does not answer its agent (last answered: {since}).",
                    name(&router)
                ),
            );
        }
    }

    if rules.auth_failure.enabled {
        let window = secs_ms(rules.auth_failure.window_secs);
        let mut q = Sql::new(
            "SELECT router_id, COUNT(*) AS n FROM audit WHERE error IS NOT NULL \
             AND router_id IS NOT NULL AND tenant_id = ",
        );
        q.bind(t.clone())
            .push(" AND at > ")
            .bind(now.saturating_sub(window))
            .push(" AND error LIKE ")
            .bind("%\"code\":\"authentication_failed\"%".to_owned())
            .push(" GROUP BY router_id");
        for row in q.fetch_all(&mut **tx).await? {
            let router: RouterId = row.parse("router_id")?;
            let n = row.int("n")?;
            router_condition(
                Rule::AuthFailure,
                router,
                format!("router {} refused the agent's login", name(&router)),
                format!(
                    "Router {} refused the agent's credentials {n} time(s) in the last {}. \
                     Check the router's user, or rotate its credentials.",
                    name(&router),
                    minutes(window)
                ),
            );
        }
    }

    if rules.job_dead_lettered.enabled {
        let mut q = Sql::new(
            "SELECT j.id, j.router_id, j.kind, j.error FROM jobs j JOIN routers r ON r.id = j.router_id \
             WHERE j.status = 'failed' AND r.deleted_at IS NULL AND j.tenant_id = ",
        );
        q.bind(t.clone());
        for row in q.fetch_all(&mut **tx).await? {
            let job = row.text("id")?;
            let router: RouterId = row.parse("router_id")?;
            let kind = row.text("kind")?;
            let why = row
                .opt_text("error")?
                .and_then(|e| serde_json::from_str::<ErrorInfo>(&e).ok())
                .map_or_else(String::new, |e| {
                    format!(": {} ({})", e.message, e.code.as_str())
                });
            if names.contains_key(&router) {
                out.insert(
                    (Rule::JobDeadLettered, job.clone()),
                    Condition {
                        router: Some(router),
                        agent: None,
                        summary: format!("job {kind} failed on router {}", name(&router)),
                        detail: format!(
                            "Job {job} ({kind}) on router {} failed for good{why}. Re-queue it \
                             with POST /api/v1/jobs/{job}/requeue once the cause is fixed.",
                            name(&router)
                        ),
                    },
                );
            }
        }
    }

    if rules.agent_offline.enabled {
        let for_ms = secs_ms(rules.agent_offline.for_secs);
        let mut q = Sql::new(
            "SELECT id, name, last_seen FROM agents WHERE revoked_at IS NULL AND connected = 0 \
             AND last_seen IS NOT NULL AND last_seen <= ",
        );
        q.bind(now.saturating_sub(for_ms))
            .push(" AND tenant_id = ")
            .bind(t.clone());
        for row in q.fetch_all(&mut **tx).await? {
            let agent: AgentId = row.parse("id")?;
            let agent_name = row.text("name")?;
            let since = rfc3339(row.millis("last_seen")?);
            out.insert(
                (Rule::AgentOffline, agent.to_string()),
                Condition {
                    router: None,
                    agent: Some(agent),
                    summary: format!("agent {agent_name} offline"),
                    detail: format!(
                        "Agent {agent_name} has not been connected since {since}; its routers \
                         get no changes until it is back."
                    ),
                },
            );
        }
    }

    if rules.outbox_near_cap.enabled || rules.agent_disk_low.enabled {
        // Each agent's latest host sample, however old: an agent that went offline keeps the
        // state of its last report (agent_offline covers the outage) instead of resolving
        // and firing again when the same old figures are read after it reconnects.
        let mut q = Sql::new(
            "SELECT id, name, host_outbox_records, host_outbox_bytes, host_outbox_max, \
             host_telemetry_dropped, host_disk_free, host_disk_total FROM agents \
             WHERE revoked_at IS NULL AND host_at IS NOT NULL AND tenant_id = ",
        );
        q.bind(t);
        for row in q.fetch_all(&mut **tx).await? {
            let agent: AgentId = row.parse("id")?;
            let agent_name = row.text("name")?;
            let mut agent_condition = |rule: Rule, summary: String, detail: String| {
                out.insert(
                    (rule, agent.to_string()),
                    Condition {
                        router: None,
                        agent: Some(agent),
                        summary,
                        detail,
                    },
                );
            };
            let percent = i128::from(rules.outbox_near_cap.percent);
            let bytes = i128::from(row.int("host_outbox_bytes")?);
            // No cap reported (an older agent): not checked.
            let max = i128::from(row.opt_int("host_outbox_max")?.unwrap_or(0));
            if rules.outbox_near_cap.enabled && max > 0 && bytes * 100 >= percent * max {
                let records = row.int("host_outbox_records")?;
                let pct = bytes * 100 / max;
                let dropped = row
                    .opt_int("host_telemetry_dropped")?
                    .map_or_else(String::new, |n| {
                        format!(" It has dropped {n} telemetry record(s) so far.")
                    });
                agent_condition(
                    Rule::OutboxNearCap,
                    format!("agent {agent_name} outbox at {pct} % of its cap"),
                    format!(
                        "Agent {agent_name}'s outbox holds {records} record(s) in {bytes} of its \
                         {max} bytes ({pct} %, alert at {percent} %): records are reaching the \
                         controller slower than they are made, or not at all. At the cap the \
                         oldest telemetry is dropped (audit records and job results never \
                         are).{dropped}"
                    ),
                );
            }
            let percent = i128::from(rules.agent_disk_low.free_percent);
            let free = i128::from(row.int("host_disk_free")?);
            let total = i128::from(row.int("host_disk_total")?);
            if rules.agent_disk_low.enabled && total > 0 && free * 100 < percent * total {
                let pct = free * 100 / total;
                agent_condition(
                    Rule::AgentDiskLow,
                    format!("agent {agent_name} disk low ({pct} % free)"),
                    format!(
                        "Agent {agent_name}'s data folder is on a filesystem with {free} of \
                         {total} bytes free ({pct} %, under {percent} %). The agent keeps its \
                         queue, outbox and router state there; free some space or grow the disk."
                    ),
                );
            }
        }
    }
    Ok(out)
}

/// The firing alerts of `tenant`.
async fn firing(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: TenantId,
) -> Result<Vec<Alert>, DbError> {
    let mut q = Sql::new("SELECT ");
    q.push(COLUMNS)
        .push(" FROM alerts WHERE state = 'firing' AND tenant_id = ")
        .bind(tenant.to_string());
    q.fetch_all(&mut **tx).await?.iter().map(alert).collect()
}

fn alert_params(id: Uuid, rule: Rule, subject: &str, severity: Severity) -> AuditParams {
    let mut p = AuditParams::new();
    p.insert("alert_id", id.to_string())
        .insert("rule", rule.as_str())
        .insert("subject", subject.to_owned())
        .insert("severity", severity.as_str());
    p
}

fn footer(id: Uuid, rule: Rule, severity: Severity, since: UnixMillis) -> String {
    format!(
        "\n\nAlert {id} (rule {}, severity {}), firing since {}.\nAcknowledge it with \
         POST /api/v1/alerts/{id}/acknowledge to stop reminders.",
        rule.as_str(),
        severity.as_str(),
        rfc3339(since)
    )
}

/// What one tenant's evaluation did: (fired, resolved, reminders, notifications queued).
type TenantReport = (u64, u64, u64, usize);

impl Db {
    /// Evaluates every tenant's alert rules at the controller's clock, one transaction per
    /// tenant (see the module's documentation). A tenant whose evaluation fails is logged,
    /// counted in [`EvalReport::failed_tenants`] and tried again next time.
    ///
    /// # Errors
    /// The tenants cannot be listed.
    pub async fn evaluate_alerts(&self) -> Result<EvalReport, DbError> {
        let tenants: Vec<TenantId> = Sql::new("SELECT id FROM tenants ORDER BY id")
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| r.parse("id"))
            .collect::<Result<_, _>>()?;
        let mut report = EvalReport::default();
        let mut queued = 0;
        for tenant in tenants {
            report.tenants += 1;
            match self.evaluate_tenant(tenant).await {
                Ok((fired, resolved, reminders, n)) => {
                    report.fired += fired;
                    report.resolved += resolved;
                    report.reminders += reminders;
                    queued += n;
                }
                Err(e) => {
                    report.failed_tenants += 1;
                    tracing::warn!(tenant = %tenant, error = %e, "evaluating a tenant's alert rules failed");
                }
            }
        }
        if queued > 0 {
            self.wake_notifier();
        }
        Ok(report)
    }

    async fn evaluate_tenant(&self, tenant: TenantId) -> Result<TenantReport, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let rules = rules_of(&mut tx, tenant).await?;
        let mut holding = conditions(&mut tx, tenant, &rules, now).await?;
        let (mut fired, mut resolved, mut reminders, mut queued) = (0, 0, 0, 0);
        let remind_ms = secs_ms(rules.remind_after_secs);
        for a in firing(&mut tx, tenant).await? {
            if holding.remove(&(a.rule, a.subject_key.clone())).is_some() {
                // Still firing: a reminder when due, unless acknowledged.
                if a.acknowledged_at.is_some()
                    || rules.remind_after_secs == 0
                    || now.as_millis() - a.last_notified_at.as_millis() < remind_ms
                {
                    continue;
                }
                let n = a.reminders.saturating_add(1);
                let mut q = Sql::new("UPDATE alerts SET reminders = ");
                q.bind(i64::from(n))
                    .push(", last_notified_at = ")
                    .bind(now.as_millis())
                    .push(" WHERE state = 'firing' AND id = ")
                    .bind(a.id.to_string());
                q.execute(&mut *tx).await?;
                queued += queue_alert(
                    &mut tx,
                    self,
                    tenant,
                    a.router_id,
                    &format!("alert:{}:reminder:{n}", a.id),
                    &format!("Still firing: {}", a.summary),
                    &format!(
                        "Still firing (reminder {n}): {}.{}",
                        a.summary,
                        footer(a.id, a.rule, a.severity, a.started_at)
                    ),
                    now,
                )
                .await?;
                reminders += 1;
                continue;
            }
            let mut q = Sql::new("UPDATE alerts SET state = 'resolved', resolved_at = ");
            q.bind(now.as_millis())
                .push(" WHERE state = 'firing' AND id = ")
                .bind(a.id.to_string());
            if q.execute(&mut *tx).await?.rows_affected() == 0 {
                continue;
            }
            queued += queue_alert(
                &mut tx,
                self,
                tenant,
                a.router_id,
                &format!("alert:{}:resolved", a.id),
                &format!("Resolved: {}", a.summary),
                &format!(
                    "Resolved at {}: {}.{}",
                    rfc3339(now),
                    a.summary,
                    footer(a.id, a.rule, a.severity, a.started_at)
                ),
                now,
            )
            .await?;
            audit_staff(
                &mut tx,
                now,
                Some(tenant),
                a.router_id,
                ACTOR,
                "alert.resolved",
                &alert_params(a.id, a.rule, &a.subject_key, a.severity),
            )
            .await?;
            resolved += 1;
        }
        for ((rule, subject), c) in holding {
            let id = Uuid::now_v7();
            let severity = rules.severity(rule);
            let mut q = Sql::new(
                "INSERT INTO alerts (id, tenant_id, router_id, agent_id, rule, subject_key, \
                 severity, state, summary, started_at, last_notified_at, reminders) VALUES (",
            );
            q.bind(id.to_string())
                .push(", ")
                .bind(tenant.to_string())
                .push(", ")
                .bind(c.router.map(|r| r.to_string()))
                .push(", ")
                .bind(c.agent.map(|a| a.to_string()))
                .push(", ")
                .bind(rule.as_str().to_owned())
                .push(", ")
                .bind(subject.clone())
                .push(", ")
                .bind(severity.as_str().to_owned())
                .push(", 'firing', ")
                .bind(c.summary.clone())
                .push(", ")
                .bind(now.as_millis())
                .push(", ")
                .bind(now.as_millis())
                .push(", 0)");
            q.execute(&mut *tx).await?;
            queued += queue_alert(
                &mut tx,
                self,
                tenant,
                c.router,
                &format!("alert:{id}:firing"),
                &format!("{}: {}", severity.as_str().to_ascii_uppercase(), c.summary),
                &format!("{}{}", c.detail, footer(id, rule, severity, now)),
                now,
            )
            .await?;
            audit_staff(
                &mut tx,
                now,
                Some(tenant),
                c.router,
                ACTOR,
                "alert.fired",
                &alert_params(id, rule, &subject, severity),
            )
            .await?;
            fired += 1;
        }
        tx.commit().await?;
        Ok((fired, resolved, reminders, queued))
    }

    /// Alerts visible in `scope` that pass `filter`, in id (start) order.
    ///
    /// # Errors
    /// The database failed.
    pub async fn list_alerts(
        &self,
        scope: &Scope,
        filter: &AlertFilter,
        page: &PageRequest,
    ) -> Result<Page<Alert>, DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(COLUMNS).push(" FROM alerts WHERE 1 = 1");
        scope.filter(&mut q, "tenant_id");
        if let Some(state) = filter.state {
            q.push(" AND state = ").bind(state.as_str().to_owned());
        }
        if let Some(router) = filter.router {
            q.push(" AND router_id = ").bind(router.to_string());
        }
        if let Some(severity) = filter.severity {
            q.push(" AND severity = ")
                .bind(severity.as_str().to_owned());
        }
        page.apply(&mut q, "id");
        let rows = q.fetch_all(self.pool()).await?;
        let items = rows.iter().map(alert).collect::<Result<Vec<_>, _>>()?;
        Ok(page.finish(items, |a| a.id.to_string()))
    }

    /// One alert, if visible in `scope`.
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn get_alert(&self, scope: &Scope, id: Uuid) -> Result<Alert, DbError> {
        let mut q = Sql::new("SELECT ");
        q.push(COLUMNS)
            .push(" FROM alerts WHERE id = ")
            .bind(id.to_string());
        scope.filter(&mut q, "tenant_id");
        let row = q
            .fetch_optional(self.pool())
            .await?
            .ok_or(DbError::NotFound("alert"))?;
        alert(&row)
    }

    /// Acknowledges a firing alert: no more reminders (it still resolves, with its notice,
    /// when its condition ends). Acknowledging it again changes nothing.
    ///
    /// # Errors
    /// Not found (or not visible), the alert is resolved (conflict), or the database failed.
    pub async fn acknowledge_alert(&self, staff: &Staff, id: Uuid) -> Result<Alert, DbError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let mut q = Sql::new("SELECT ");
        q.push(COLUMNS)
            .push(" FROM alerts WHERE id = ")
            .bind(id.to_string());
        staff.scope.filter(&mut q, "tenant_id");
        let a = alert(
            &q.fetch_optional(&mut *tx)
                .await?
                .ok_or(DbError::NotFound("alert"))?,
        )?;
        if a.acknowledged_at.is_some() {
            return Ok(a);
        }
        if a.state == AlertState::Resolved {
            return Err(DbError::Conflict(
                "the alert is resolved; only a firing alert can be acknowledged".into(),
            ));
        }
        let mut q = Sql::new("UPDATE alerts SET acknowledged_at = ");
        q.bind(now.as_millis())
            .push(", acknowledged_by = ")
            .bind(staff.actor.clone())
            .push(" WHERE id = ")
            .bind(id.to_string());
        q.execute(&mut *tx).await?;
        audit_staff(
            &mut tx,
            now,
            Some(a.tenant_id),
            a.router_id,
            &staff.actor,
            "alert.acknowledged",
            &alert_params(a.id, a.rule, &a.subject_key, a.severity),
        )
        .await?;
        tx.commit().await?;
        Ok(Alert {
            acknowledged_at: Some(now),
            acknowledged_by: Some(staff.actor.clone()),
            ..a
        })
    }

    /// The notices queued for an alert, oldest first: `(key, channel, status)`, where the key
    /// is `alert:{id}:firing`, `…:resolved` or `…:reminder:{n}` followed by the channel
    /// (`:webhook`, `:email:{address}`).
    ///
    /// # Errors
    /// Not found (or not visible), or the database failed.
    pub async fn alert_notices(
        &self,
        scope: &Scope,
        id: Uuid,
    ) -> Result<Vec<(String, String, String)>, DbError> {
        let a = self.get_alert(scope, id).await?;
        let prefix = format!("alert:alert:{id}:");
        let mut q = Sql::new(
            "SELECT dedupe_key, channel, status FROM notifications WHERE kind = 'alert' \
             AND tenant_id = ",
        );
        q.bind(a.tenant_id.to_string())
            .push(" AND dedupe_key LIKE ")
            .bind(format!("{prefix}%"))
            .push(" ORDER BY created_at, id");
        q.fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| {
                let key = r.text("dedupe_key")?;
                Ok((
                    key.strip_prefix("alert:").unwrap_or(&key).to_owned(),
                    r.text("channel")?,
                    r.text("status")?,
                ))
            })
            .collect()
    }

    /// A tenant's alert rules (the defaults until staff set them).
    ///
    /// # Errors
    /// Not found (or not visible), the stored rules do not decode, or the database failed.
    pub async fn alert_rules(
        &self,
        scope: &Scope,
        tenant: TenantId,
    ) -> Result<AlertRules, DbError> {
        let mut tx = self.begin().await?;
        self.tenant_visible(&mut tx, scope, tenant).await?;
        let rules = rules_of(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(rules)
    }

    /// Replaces a tenant's alert rules; the next evaluation applies them (a rule turned off
    /// resolves its firing alerts).
    ///
    /// # Errors
    /// Not found (or not visible), a value out of range, or the database failed.
    pub async fn set_alert_rules(
        &self,
        staff: &Staff,
        tenant: TenantId,
        rules: &AlertRules,
    ) -> Result<AlertRules, DbError> {
        rules.validate().map_err(DbError::Invalid)?;
        self.set_tenant_json(
            staff,
            tenant,
            "alert_rules",
            "tenant.alert_rules",
            "rules",
            rules,
        )
        .await?;
        Ok(rules.clone())
    }
}
