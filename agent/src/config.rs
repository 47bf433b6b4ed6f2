//! The agent's configuration file (TOML) and its defaults.
//!
//! Everything has a default, so `tikfleet-agent` runs without a file (data in `./data/agent`).
//! Unknown keys are refused: a typo in a limit must not silently leave the default in force.
//!
//! ```toml
//! data_dir = "/var/lib/tikfleet-agent"
//! tenant_id = "0190f5d2-…"          # set by enrollment; routers added on site belong to it
//!
//! [store]
//! max_bytes = 1073741824             # refuse new jobs (storage_full) above this
//!
//! [outbox]
//! max_bytes = 536870912              # telemetry is dropped oldest-first above this
//! max_telemetry = 100000
//!
//! [limits]
//! router_commands_per_second = 50
//! router_burst = 100
//! tenant_commands_per_second = 200
//! tenant_burst = 400
//! router_concurrency = 4
//!
//! [driver]
//! connect_timeout_ms = 10000
//! command_timeout_ms = 30000
//!
//! [retry]
//! max_attempts = 3
//!
//! [probes]
//! interval_secs = 30                 # router health and host samples (telemetry)
//! versions_every_secs = 86400        # RouterOS version, update check and firmware
//! enabled = true
//! unreachable_backoff_cap_secs = 300 # a failing router is probed at 30 s, 1, 2, 4, 5, 5 … min
//!
//! [self_heal]
//! ssh_reboot = false                 # reboot a router over SSH when its API stays out
//! api_down_secs = 600                # … for this long (refused / timed out; never auth)
//! min_interval_secs = 21600          # at most one such reboot per router per 6 h
//! max_per_day = 2                    # and at most this many per router in 24 h
//!
//! [uplink]
//! enabled = true                     # connect to the controller once enrolled
//! reconnect_min_ms = 1000            # first reconnect step; doubles (with jitter) …
//! reconnect_max_ms = 60000           # … up to this
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tikfleet_shared::TenantId;

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("the configuration file {path} is not valid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Where the store, the vault key and logs live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The tenant this agent belongs to (set by enrollment).
    #[serde(default)]
    pub tenant_id: Option<TenantId>,
    /// The durable store.
    #[serde(default)]
    pub store: StoreSection,
    /// The outbox of records for the controller.
    #[serde(default)]
    pub outbox: OutboxSection,
    /// Protection for routers.
    #[serde(default)]
    pub limits: LimitsSection,
    /// The RouterOS driver.
    #[serde(default)]
    pub driver: DriverSection,
    /// Job retries.
    #[serde(default)]
    pub retry: RetrySection,
    /// The link to the controller.
    #[serde(default)]
    pub uplink: UplinkSection,
    /// Health probes of the routers and the host.
    #[serde(default)]
    pub probes: ProbesSection,
    /// Self-healing of routers whose API stops answering.
    #[serde(default)]
    pub self_heal: SelfHealSection,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsSection,
}

/// `[metrics]`: Prometheus metrics at `http://<listen>/metrics`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Serve them at all.
    pub enabled: bool,
    /// Where; keep it on loopback (the endpoint has no authentication). Port 0 picks one.
    pub listen: std::net::SocketAddr,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// `[probes]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbesSection {
    /// Probe the routers and the host at all.
    pub enabled: bool,
    /// Seconds between probe rounds.
    pub interval_secs: u64,
    /// Seconds between version checks of a router (and on each new connection).
    pub versions_every_secs: u64,
    /// Longest wait, in seconds, between probes of a router that keeps failing (the wait
    /// doubles from `interval_secs` up to this).
    pub unreachable_backoff_cap_secs: u64,
}

impl Default for ProbesSection {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 30,
            versions_every_secs: 86_400,
            unreachable_backoff_cap_secs: 300,
        }
    }
}

/// `[self_heal]`: an optional reboot over SSH of a router whose API has stopped answering
/// (see [`crate::heal`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfHealSection {
    /// Reboot a router over SSH when its API has been out for `api_down_secs` (off by
    /// default).
    pub ssh_reboot: bool,
    /// Seconds the API must have been out (refused, timed out; never an authentication
    /// failure) before a reboot.
    pub api_down_secs: u64,
    /// At most one self-healing reboot of a router per this many seconds.
    pub min_interval_secs: u64,
    /// At most this many self-healing reboots of a router in any 24 hours.
    pub max_per_day: u32,
}

impl Default for SelfHealSection {
    fn default() -> Self {
        let d = crate::heal::SelfHealConfig::default();
        Self {
            ssh_reboot: d.ssh_reboot,
            api_down_secs: d.api_down.as_secs(),
            min_interval_secs: d.min_interval.as_secs(),
            max_per_day: d.max_per_day,
        }
    }
}

impl SelfHealSection {
    /// As the policy takes it (an API-down time under a minute is taken as a minute).
    #[must_use]
    pub fn heal_config(&self) -> crate::heal::SelfHealConfig {
        crate::heal::SelfHealConfig {
            ssh_reboot: self.ssh_reboot,
            api_down: Duration::from_secs(self.api_down_secs.max(60)),
            min_interval: Duration::from_secs(self.min_interval_secs),
            max_per_day: self.max_per_day,
            ..crate::heal::SelfHealConfig::default()
        }
    }
}

/// `[uplink]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkSection {
    /// Connect to the controller when the agent is enrolled.
    pub enabled: bool,
    /// First reconnect delay step, in milliseconds.
    pub reconnect_min_ms: u64,
    /// Largest reconnect delay step, in milliseconds.
    pub reconnect_max_ms: u64,
}

impl Default for UplinkSection {
    fn default() -> Self {
        Self {
            enabled: true,
            reconnect_min_ms: 1_000,
            reconnect_max_ms: 60_000,
        }
    }
}

impl UplinkSection {
    /// As the uplink takes it.
    #[must_use]
    pub fn uplink_config(&self) -> crate::uplink::UplinkConfig {
        crate::uplink::UplinkConfig {
            reconnect_min: Duration::from_millis(self.reconnect_min_ms),
            reconnect_max: Duration::from_millis(self.reconnect_max_ms.max(self.reconnect_min_ms)),
            ..crate::uplink::UplinkConfig::default()
        }
    }
}

/// `[store]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// Size cap on disk; new jobs are refused with `storage_full` above it.
    pub max_bytes: Option<u64>,
}

/// `[outbox]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxSection {
    /// Above this many bytes, telemetry is dropped oldest first.
    pub max_bytes: u64,
    /// At most this many telemetry records are kept.
    pub max_telemetry: u64,
}

impl Default for OutboxSection {
    fn default() -> Self {
        let d = crate::outbox::OutboxConfig::default();
        Self {
            max_bytes: d.max_bytes,
            max_telemetry: d.max_telemetry,
        }
    }
}

/// `[limits]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Sustained commands per second to one router.
    pub router_commands_per_second: u32,
    /// Commands one router may take at once after a quiet spell.
    pub router_burst: u32,
    /// Sustained commands per second to all of the tenant's routers.
    pub tenant_commands_per_second: u32,
    /// The tenant's burst.
    pub tenant_burst: u32,
    /// Jobs running at once against one router.
    pub router_concurrency: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            router_commands_per_second: 50,
            router_burst: 100,
            tenant_commands_per_second: 200,
            tenant_burst: 400,
            router_concurrency: 4,
        }
    }
}

/// `[driver]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriverSection {
    /// How long connecting and logging in may take.
    pub connect_timeout_ms: u64,
    /// How long one command may take.
    pub command_timeout_ms: u64,
}

impl Default for DriverSection {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 10_000,
            command_timeout_ms: 30_000,
        }
    }
}

impl DriverSection {
    /// As the RouterOS driver takes it.
    #[must_use]
    pub fn driver_config(&self) -> crate::routeros::DriverConfig {
        crate::routeros::DriverConfig {
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            command_timeout: Duration::from_millis(self.command_timeout_ms),
            ..crate::routeros::DriverConfig::default()
        }
    }
}

/// `[retry]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySection {
    /// Attempts before a job is dead-lettered.
    pub max_attempts: u32,
}

impl Default for RetrySection {
    fn default() -> Self {
        Self { max_attempts: 3 }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data/agent")
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            tenant_id: None,
            store: StoreSection::default(),
            outbox: OutboxSection::default(),
            limits: LimitsSection::default(),
            driver: DriverSection::default(),
            retry: RetrySection::default(),
            uplink: UplinkSection::default(),
            probes: ProbesSection::default(),
            self_heal: SelfHealSection::default(),
            metrics: MetricsSection::default(),
        }
    }
}

impl AgentConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| ConfigError::Invalid {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses configuration text; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_all_defaults() {
        let c = AgentConfig::parse("").expect("valid");
        assert_eq!(c.data_dir, PathBuf::from("data/agent"));
        assert_eq!(c.limits.router_concurrency, 4);
        assert_eq!(c.retry.max_attempts, 3);
        assert!(c.tenant_id.is_none());
        assert!(c.uplink.enabled);
        let u = AgentConfig::parse("[uplink]\nenabled = false\nreconnect_max_ms = 5000\n")
            .expect("valid")
            .uplink;
        assert!(!u.enabled);
        assert_eq!(u.uplink_config().reconnect_max, Duration::from_secs(5));
    }

    #[test]
    fn values_are_read() {
        let c = AgentConfig::parse(
            "data_dir = \"/srv/agent\"\ntenant_id = \"0190f5d2-7a4b-7cc1-8d1e-1234567890ab\"\n\
             [limits]\nrouter_burst = 7\n[store]\nmax_bytes = 1000\n",
        )
        .expect("valid");
        assert_eq!(c.data_dir, PathBuf::from("/srv/agent"));
        assert_eq!(c.limits.router_burst, 7);
        assert_eq!(c.limits.router_commands_per_second, 50);
        assert_eq!(c.store.max_bytes, Some(1000));
        assert!(c.tenant_id.is_some());
        assert_eq!(c.probes.interval_secs, 30);
        let p = AgentConfig::parse("[probes]\ninterval_secs = 10\n")
            .expect("valid")
            .probes;
        assert_eq!((p.interval_secs, p.versions_every_secs), (10, 86_400));
        assert_eq!(p.unreachable_backoff_cap_secs, 300);
    }

    #[test]
    fn self_healing_is_off_unless_asked_for() {
        let h = AgentConfig::parse("").expect("valid").self_heal;
        assert!(!h.ssh_reboot);
        assert_eq!(
            (h.api_down_secs, h.min_interval_secs, h.max_per_day),
            (600, 21_600, 2)
        );
        assert!(!h.heal_config().ssh_reboot);
        let h = AgentConfig::parse(
            "[self_heal]\nssh_reboot = true\napi_down_secs = 5\nmin_interval_secs = 3600\n",
        )
        .expect("valid")
        .self_heal;
        let c = h.heal_config();
        assert!(c.ssh_reboot);
        assert_eq!(c.api_down, Duration::from_secs(60), "at least a minute");
        assert_eq!(c.min_interval, Duration::from_secs(3_600));
        let err = AgentConfig::parse("[self_heal]\nssh_rebot = true\n").expect_err("typo");
        assert!(err.contains("ssh_rebot"), "{err}");
    }

    #[test]
    fn a_typo_is_refused_with_where_it_is() {
        let err = AgentConfig::parse("[limits]\nrouter_brust = 7\n").expect_err("typo");
        assert!(err.contains("router_brust"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let err = AgentConfig::parse("tenant_id = \"nope\"").expect_err("bad id");
        assert!(err.contains("tenant_id"), "{err}");
    }
}
