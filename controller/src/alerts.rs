//! Alert rules: what each rule watches, its per-tenant settings ([`AlertRules`], stored as
//! JSON on the tenant and served by `GET/PUT /api/v1/tenants/{id}/alert-rules`), and the
//! background task that evaluates them. The evaluation itself — reading the conditions,
//! opening and resolving alerts, queuing their notices — is storage work and lives in
//! [`crate::db::alerts`]; notices go out through the notification sender
//! ([`crate::notify`]).
//!
//! Rules (defaults): `cpu_high` (CPU ≥ 90 % in every sample for 5 minutes), `memory_low`
//! (free memory under 10 % in the latest sample), `router_unreachable` (2 minutes),
//! `reboot_detected` (uptime went back), `agent_offline` (60 seconds), `job_dead_lettered`
//! (a job failed for good), `auth_failure` (a router refused the agent's login within 5
//! minutes), `outbox_near_cap` (the agent's latest host sample shows its outbox at 80 % of
//! its cap or more), `agent_disk_low` (it shows under 10 % free on the disk of the agent's
//! data folder).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::db::Db;

/// How often the alert task evaluates the rules.
pub const EVAL_INTERVAL: Duration = Duration::from_secs(15);

/// How urgent an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Customers are (or will shortly be) affected.
    Critical,
    /// Needs a look.
    Warning,
    /// For the record.
    Info,
}

impl Severity {
    /// `critical`, `warning` or `info`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "critical" => Ok(Self::Critical),
            "warning" => Ok(Self::Warning),
            "info" => Ok(Self::Info),
            _ => Err(()),
        }
    }
}

/// The rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// A router's CPU stayed high.
    CpuHigh,
    /// A router's free memory is low.
    MemoryLow,
    /// A router does not answer its agent.
    RouterUnreachable,
    /// A router rebooted.
    RebootDetected,
    /// An agent is not connected.
    AgentOffline,
    /// A job failed for good.
    JobDeadLettered,
    /// A router refused the agent's credentials.
    AuthFailure,
    /// An agent's outbox is close to its cap (telemetry is about to be dropped).
    OutboxNearCap,
    /// The disk of an agent's data folder is nearly full.
    AgentDiskLow,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Self; 9] = [
        Self::CpuHigh,
        Self::MemoryLow,
        Self::RouterUnreachable,
        Self::RebootDetected,
        Self::AgentOffline,
        Self::JobDeadLettered,
        Self::AuthFailure,
        Self::OutboxNearCap,
        Self::AgentDiskLow,
    ];

    /// The rule's name in the API and the database.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CpuHigh => "cpu_high",
            Self::MemoryLow => "memory_low",
            Self::RouterUnreachable => "router_unreachable",
            Self::RebootDetected => "reboot_detected",
            Self::AgentOffline => "agent_offline",
            Self::JobDeadLettered => "job_dead_lettered",
            Self::AuthFailure => "auth_failure",
            Self::OutboxNearCap => "outbox_near_cap",
            Self::AgentDiskLow => "agent_disk_low",
        }
    }
}

impl std::str::FromStr for Rule {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|r| r.as_str() == s).ok_or(())
    }
}

/// `cpu_high`: CPU load at or above `threshold_percent` in every sample for `for_secs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CpuHighRule {
    /// Whether the rule runs.
    pub enabled: bool,
    /// Alert severity.
    pub severity: Severity,
    /// CPU load, percent (1 to 100; default 90).
    pub threshold_percent: u8,
    /// How long every sample must be high, seconds (default 300); at least two samples.
    pub for_secs: u64,
}

impl Default for CpuHighRule {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: Severity::Warning,
            threshold_percent: 90,
            for_secs: 300,
        }
    }
}

/// `memory_low`: free memory under `free_percent` of the total in the latest sample.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryLowRule {
    /// Whether the rule runs.
    pub enabled: bool,
    /// Alert severity.
    pub severity: Severity,
    /// Free memory, percent of the total (1 to 99; default 10).
    pub free_percent: u8,
}

impl Default for MemoryLowRule {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: Severity::Warning,
            free_percent: 10,
        }
    }
}

/// `router_unreachable`: the agent reports the router unreachable and it has not answered
/// for `for_secs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RouterUnreachableRule {
    /// Whether the rule runs.
    pub enabled: bool,
    /// Alert severity.
    pub severity: Severity,
    /// Seconds since the router last answered (default 120).
    pub for_secs: u64,
}

impl Default for RouterUnreachableRule {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: Severity::Critical,
            for_secs: 120,
        }
    }
}

/// `agent_offline`: an agent (not revoked) disconnected `for_secs` ago and has not come back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AgentOfflineRule {
    /// Whether the rule runs.
    pub enabled: bool,
    /// Alert severity.
    pub severity: Severity,
    /// Seconds since the agent was last connected (default 60).
    pub for_secs: u64,
}

impl Default for AgentOfflineRule {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: Severity::Critical,
            for_secs: 60,
        }
    }
}

/// `auth_failure`: the router refused the agent's login within the last `window_secs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthFailureRule {
    /// Whether the rule runs.
    pub enabled: bool,
    /// Alert severity.
    pub severity: Severity,
    /// The window, seconds (default 300); the alert resolves after a window without one.
    pub window_secs: u64,
}

impl Default for AuthFailureRule {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: Severity::Critical,
            window_secs: 300,
        }
    }
}

/// `outbox_near_cap`: the agent's latest host sample shows its outbox using at least
/// `percent` of its byte cap. Agents that do not report their cap are not checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxNearCapRule {
    /// Whether the rule runs.
    pub enabled: bool,
    /// Alert severity.
    pub severity: Severity,
    /// Outbox bytes, percent of the cap (1 to 100; default 80).
    pub percent: u8,
}

impl Default for OutboxNearCapRule {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: Severity::Warning,
            percent: 80,
        }
    }
}

/// `agent_disk_low`: the agent's latest host sample shows the disk of its data folder with
/// less than `free_percent` free.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AgentDiskLowRule {
    /// Whether the rule runs.
    pub enabled: bool,
    /// Alert severity.
    pub severity: Severity,
    /// Free disk, percent of the total (1 to 99; default 10).
    pub free_percent: u8,
}

impl Default for AgentDiskLowRule {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: Severity::Warning,
            free_percent: 10,
        }
    }
}

/// A rule with no setting besides being on and its severity (`reboot_detected`,
/// `job_dead_lettered`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SimpleRule {
    /// Whether the rule runs.
    pub enabled: bool,
    /// Alert severity.
    pub severity: Severity,
}

impl Default for SimpleRule {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: Severity::Warning,
        }
    }
}

/// A tenant's alert rules. Fields left out of a PUT take their defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AlertRules {
    /// Seconds between reminders of an alert that is still firing and not acknowledged
    /// (default 14400, 4 hours); 0: no reminders.
    pub remind_after_secs: u64,
    /// CPU load high.
    pub cpu_high: CpuHighRule,
    /// Free memory low.
    pub memory_low: MemoryLowRule,
    /// Router unreachable.
    pub router_unreachable: RouterUnreachableRule,
    /// Router rebooted (its uptime went back between two samples); resolves with the next
    /// sample that shows none.
    pub reboot_detected: SimpleRule,
    /// Agent offline.
    pub agent_offline: AgentOfflineRule,
    /// A job failed for good (one alert per job); resolves when it is re-queued.
    pub job_dead_lettered: SimpleRule,
    /// Router refused the agent's login.
    pub auth_failure: AuthFailureRule,
    /// An agent's outbox near its cap; resolves with a host sample below it.
    pub outbox_near_cap: OutboxNearCapRule,
    /// An agent's disk nearly full; resolves with a host sample showing enough free.
    pub agent_disk_low: AgentDiskLowRule,
}

impl Default for AlertRules {
    fn default() -> Self {
        Self {
            remind_after_secs: 4 * 3600,
            cpu_high: CpuHighRule::default(),
            memory_low: MemoryLowRule::default(),
            router_unreachable: RouterUnreachableRule::default(),
            reboot_detected: SimpleRule::default(),
            agent_offline: AgentOfflineRule::default(),
            job_dead_lettered: SimpleRule::default(),
            auth_failure: AuthFailureRule::default(),
            outbox_near_cap: OutboxNearCapRule::default(),
            agent_disk_low: AgentDiskLowRule::default(),
        }
    }
}

/// The longest duration or window a rule takes: 7 days.
pub const MAX_RULE_SECS: u64 = 7 * 86_400;

impl AlertRules {
    /// Checks the settings' ranges.
    ///
    /// # Errors
    /// A value out of range; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let secs = |field: &str, v: u64, min: u64| {
            if (min..=MAX_RULE_SECS).contains(&v) {
                Ok(())
            } else {
                Err(format!("{field} must be {min} to {MAX_RULE_SECS} seconds"))
            }
        };
        if self.remind_after_secs != 0 {
            secs("remind_after_secs", self.remind_after_secs, 60)?;
        }
        if !(1..=100).contains(&self.cpu_high.threshold_percent) {
            return Err("cpu_high.threshold_percent must be 1 to 100".into());
        }
        secs("cpu_high.for_secs", self.cpu_high.for_secs, 1)?;
        if !(1..=99).contains(&self.memory_low.free_percent) {
            return Err("memory_low.free_percent must be 1 to 99".into());
        }
        secs(
            "router_unreachable.for_secs",
            self.router_unreachable.for_secs,
            0,
        )?;
        secs("agent_offline.for_secs", self.agent_offline.for_secs, 0)?;
        secs("auth_failure.window_secs", self.auth_failure.window_secs, 1)?;
        if !(1..=100).contains(&self.outbox_near_cap.percent) {
            return Err("outbox_near_cap.percent must be 1 to 100".into());
        }
        if !(1..=99).contains(&self.agent_disk_low.free_percent) {
            return Err("agent_disk_low.free_percent must be 1 to 99".into());
        }
        Ok(())
    }

    /// The severity alerts of `rule` get.
    #[must_use]
    pub fn severity(&self, rule: Rule) -> Severity {
        match rule {
            Rule::CpuHigh => self.cpu_high.severity,
            Rule::MemoryLow => self.memory_low.severity,
            Rule::RouterUnreachable => self.router_unreachable.severity,
            Rule::RebootDetected => self.reboot_detected.severity,
            Rule::AgentOffline => self.agent_offline.severity,
            Rule::JobDeadLettered => self.job_dead_lettered.severity,
            Rule::AuthFailure => self.auth_failure.severity,
            Rule::OutboxNearCap => self.outbox_near_cap.severity,
            Rule::AgentDiskLow => self.agent_disk_low.severity,
        }
    }

    /// Whether `rule` runs.
    #[must_use]
    pub fn enabled(&self, rule: Rule) -> bool {
        match rule {
            Rule::CpuHigh => self.cpu_high.enabled,
            Rule::MemoryLow => self.memory_low.enabled,
            Rule::RouterUnreachable => self.router_unreachable.enabled,
            Rule::RebootDetected => self.reboot_detected.enabled,
            Rule::AgentOffline => self.agent_offline.enabled,
            Rule::JobDeadLettered => self.job_dead_lettered.enabled,
            Rule::AuthFailure => self.auth_failure.enabled,
            Rule::OutboxNearCap => self.outbox_near_cap.enabled,
            Rule::AgentDiskLow => self.agent_disk_low.enabled,
        }
    }
}

/// The alert task: runs [`Db::evaluate_alerts`] every [`EVAL_INTERVAL`] on the controller's
/// clock until shut down.
#[derive(Debug)]
pub struct AlertTask(crate::periodic::Periodic);

impl AlertTask {
    /// Starts the task (an evaluation at once, then one per interval).
    #[must_use]
    pub fn start(db: Db, clock: SharedClock, interval: Duration) -> Self {
        Self(crate::periodic::Periodic::start(
            clock,
            interval,
            move || {
                let db = db.clone();
                async move {
                    match db.evaluate_alerts().await {
                        Ok(r) if r.fired + r.resolved + r.reminders > 0 || r.failed_tenants > 0 => {
                            tracing::info!(
                                fired = r.fired,
                                resolved = r.resolved,
                                reminders = r.reminders,
                                failed_tenants = r.failed_tenants,
                                "alert rules evaluated"
                            );
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "evaluating alert rules failed; retrying at the next interval");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_a_put_leaves_out() {
        let r: AlertRules =
            serde_json::from_str(r#"{"cpu_high": {"threshold_percent": 80}}"#).unwrap();
        assert_eq!(r.cpu_high.threshold_percent, 80);
        assert_eq!(r.cpu_high.for_secs, 300);
        assert!(r.cpu_high.enabled);
        assert_eq!(r.remind_after_secs, 14_400);
        assert_eq!(r.agent_offline.for_secs, 60);
        assert_eq!(r.router_unreachable.for_secs, 120);
        assert_eq!(r.outbox_near_cap.percent, 80);
        assert!(r.outbox_near_cap.enabled);
        assert_eq!(r.outbox_near_cap.severity, Severity::Warning);
        assert_eq!(r.agent_disk_low.free_percent, 10);
        assert!(r.validate().is_ok());
        assert!(serde_json::from_str::<AlertRules>(r#"{"nope": 1}"#).is_err());
    }

    #[test]
    fn ranges_are_checked() {
        let mut r = AlertRules::default();
        r.memory_low.free_percent = 0;
        assert!(
            r.validate()
                .unwrap_err()
                .contains("memory_low.free_percent")
        );
        let r = AlertRules {
            remind_after_secs: 5,
            ..AlertRules::default()
        };
        assert!(r.validate().is_err());
        for (percent, ok) in [(0, false), (1, true), (100, true), (101, false)] {
            let mut r = AlertRules::default();
            r.outbox_near_cap.percent = percent;
            assert_eq!(r.validate().is_ok(), ok, "{percent}");
        }
        for (percent, ok) in [(0, false), (1, true), (99, true), (100, false)] {
            let mut r = AlertRules::default();
            r.agent_disk_low.free_percent = percent;
            assert_eq!(r.validate().is_ok(), ok, "{percent}");
        }
        let r = AlertRules {
            remind_after_secs: 0,
            ..AlertRules::default()
        };
        assert!(r.validate().is_ok());
    }

    #[test]
    fn names_round_trip() {
        for rule in Rule::ALL {
            assert_eq!(rule.as_str().parse::<Rule>(), Ok(rule));
        }
        assert_eq!("info".parse::<Severity>(), Ok(Severity::Info));
    }
}
