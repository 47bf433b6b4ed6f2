//! Self-healing of a router whose API has stopped answering: an optional, off-by-default
//! reboot over SSH.
//!
//! The prober ([`crate::probe`]) tells [`SelfHeal`] what each probe of a router found: the
//! API answered ([`SelfHeal::answered`]), a job was at the router so it was not probed
//! ([`SelfHeal::busy`]), or the API failed ([`SelfHeal::api_failed`]). Only an *outage* counts
//! — the connection refused, timed out or reset ([`is_api_outage`]); any other failure, an
//! authentication failure above all, means the API service is alive and clears the count, as
//! does a job at the router (a restore that reboots it on purpose holds the router until it
//! is back, so its downtime is never counted).
//!
//! When the policy is on (`[self_heal] ssh_reboot = true`) and the API has been out for
//! [`SelfHealConfig::api_down`] without a break, the router is rebooted over SSH — if an SSH
//! login works (checked first with `/system identity print`), and if the [`RebootLedger`]
//! allows it: at most one reboot per [`SelfHealConfig::min_interval`] and
//! [`SelfHealConfig::max_per_day`] in any 24 hours. The reboot is written to the ledger (in
//! the store, durable) *before* `/system reboot` is sent, so neither a crash nor a restart of
//! the agent repeats it within the interval; it is audited like every router command (action
//! [`AUDIT_ACTION`], with the reason), and the outage count starts again, so a further
//! reboot needs another full [`SelfHealConfig::api_down`].
//!
//! A router that stays unreachable is also escalated, independently of this policy: its
//! `router_unreachable` telemetry makes the controller's alert fire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tikfleet_shared::record::{AuditParams, AuditRecord, AuditStatus, OutboxRecord};
use tikfleet_shared::{ErrorCode, RouterId, UnixMillis};

use crate::audit::AuditLog;
use crate::clock::SharedClock;
use crate::router::RouterEndpoint;
use crate::routeros::DriverError;
use crate::ssh::{HostKeyStore, SshConfig, SshDriver};
use crate::store::{Store, StoreError, TreeName};

/// The audit action of a self-healing reboot.
pub const AUDIT_ACTION: &str = "router.self_heal_reboot";

/// The console command that reboots the router.
pub const REBOOT_COMMAND: &str = "/system reboot";

/// The console command that checks an SSH login before a reboot is spent on it.
pub const LOGIN_CHECK: &str = "/system identity print";

/// Key prefix of the reboot ledger in the store's `meta` tree.
const KEY_PREFIX: &[u8] = b"self-heal/reboots/";

const DAY: Duration = Duration::from_secs(86_400);

/// The self-healing policy (`[self_heal]` in agent.toml).
#[derive(Clone, Debug)]
pub struct SelfHealConfig {
    /// Reboot a router over SSH when its API is out (off by default).
    pub ssh_reboot: bool,
    /// How long the API must have been out, without a break, before a reboot.
    pub api_down: Duration,
    /// At most one reboot of a router per this long.
    pub min_interval: Duration,
    /// At most this many reboots of a router in any 24 hours.
    pub max_per_day: u32,
    /// Timeouts of the SSH sessions.
    pub ssh: SshConfig,
}

impl Default for SelfHealConfig {
    fn default() -> Self {
        Self {
            ssh_reboot: false,
            api_down: Duration::from_secs(600),
            min_interval: Duration::from_secs(21_600),
            max_per_day: 2,
            ssh: SshConfig::default(),
        }
    }
}

/// Whether a failure of the API means the service is out (refused, timed out, reset), as
/// opposed to answering with an error (authentication, permissions, a trap).
#[must_use]
pub fn is_api_outage(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::ConnectionRefused | ErrorCode::Timeout | ErrorCode::ConnectionReset
    )
}

/// Why the ledger refuses a reboot now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The last reboot was less than the minimum interval ago; allowed again at `until`.
    Interval {
        /// When the interval ends.
        until: UnixMillis,
    },
    /// The router was rebooted `max_per_day` times in the last 24 hours.
    PerDay {
        /// When the oldest of those leaves the 24-hour window.
        until: UnixMillis,
    },
}

/// Whether a reboot at `now` is allowed after the earlier ones in `reboots` (oldest first).
///
/// # Errors
///
/// The limit that refuses it.
pub fn allowed(
    reboots: &[UnixMillis],
    now: UnixMillis,
    min_interval: Duration,
    max_per_day: u32,
) -> Result<(), Limit> {
    if let Some(last) = reboots.iter().max() {
        let until = last.saturating_add(min_interval);
        if now < until {
            return Err(Limit::Interval { until });
        }
    }
    let mut today: Vec<UnixMillis> = reboots
        .iter()
        .copied()
        .filter(|t| t.saturating_add(DAY) > now)
        .collect();
    today.sort();
    let max = usize::try_from(max_per_day).unwrap_or(usize::MAX);
    if today.len() >= max {
        // The reboot that must leave the window before another is allowed.
        let until = today
            .get(today.len() - max)
            .map_or(now, |t| t.saturating_add(DAY));
        return Err(Limit::PerDay { until });
    }
    Ok(())
}

/// When each router was rebooted by self-healing, kept in the store (`meta` tree), so the
/// limits hold across restarts of the agent. Only the reboots of the last 24 hours, and the
/// latest one, are kept.
#[derive(Clone)]
pub struct RebootLedger {
    store: Store,
    tree: sled::Tree,
}

impl std::fmt::Debug for RebootLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RebootLedger")
    }
}

fn ledger_key(router: RouterId) -> Vec<u8> {
    let mut k = KEY_PREFIX.to_vec();
    k.extend_from_slice(router.as_bytes());
    k
}

impl RebootLedger {
    /// The ledger in `store`.
    ///
    /// # Errors
    ///
    /// When the tree cannot be opened.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            store: store.clone(),
            tree: store.tree(TreeName::Meta)?,
        })
    }

    /// The router's recorded reboots, oldest first (bytes that do not decode are ignored).
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    pub fn reboots(&self, router: RouterId) -> Result<Vec<UnixMillis>, StoreError> {
        let value = self
            .tree
            .get(ledger_key(router))
            .map_err(|e| self.store.map_sled(e))?;
        Ok(value.map_or_else(Vec::new, |v| {
            v.chunks_exact(8)
                .filter_map(|c| <[u8; 8]>::try_from(c).ok())
                .map(|b| UnixMillis::new(i64::from_be_bytes(b)))
                .collect()
        }))
    }

    /// Records a reboot at `at` and waits until it is on disk.
    ///
    /// # Errors
    ///
    /// When the store cannot be read or written.
    pub async fn record(&self, router: RouterId, at: UnixMillis) -> Result<(), StoreError> {
        let mut list = self.reboots(router)?;
        list.push(at);
        list.sort();
        let latest = list.last().copied().unwrap_or(at);
        list.retain(|t| *t == latest || t.saturating_add(DAY) > at);
        let bytes: Vec<u8> = list
            .iter()
            .flat_map(|t| t.as_millis().to_be_bytes())
            .collect();
        self.tree
            .insert(ledger_key(router), bytes)
            .map_err(|e| self.store.map_sled(e))?;
        self.store.commit().await
    }
}

/// What [`SelfHeal::api_failed`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heal {
    /// Nothing: the policy is off, or the failure is not an outage.
    Nothing,
    /// The API is out, not yet for long enough.
    Waiting {
        /// How long it has been out so far.
        down: Duration,
    },
    /// Out long enough, but the ledger refuses another reboot yet.
    Limited(Limit),
    /// Out long enough, but an SSH login does not work either (nothing was sent).
    SshUnavailable {
        /// Why SSH failed.
        code: ErrorCode,
    },
    /// The ledger could not be read or written; no reboot was sent.
    LedgerFailed,
    /// `/system reboot` was sent over SSH (recorded and audited).
    Rebooted,
    /// `/system reboot` was attempted and failed (recorded, so not repeated within the
    /// interval, and audited with the error).
    RebootFailed {
        /// Why.
        code: ErrorCode,
    },
}

/// The self-healing policy over the routers' API outages. See the module documentation.
pub struct SelfHeal {
    config: SelfHealConfig,
    ledger: RebootLedger,
    host_keys: Arc<dyn HostKeyStore>,
    audit: Arc<AuditLog>,
    clock: SharedClock,
    /// When each router's current API outage began.
    down_since: Mutex<HashMap<RouterId, UnixMillis>>,
}

impl std::fmt::Debug for SelfHeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfHeal")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SelfHeal {
    /// The policy `config`, recording reboots in `ledger`, pinning SSH host keys in
    /// `host_keys` and auditing through `audit` (the executor's pipe).
    #[must_use]
    pub fn new(
        config: SelfHealConfig,
        ledger: RebootLedger,
        host_keys: Arc<dyn HostKeyStore>,
        audit: Arc<AuditLog>,
        clock: SharedClock,
    ) -> Self {
        Self {
            config,
            ledger,
            host_keys,
            audit,
            clock,
            down_since: Mutex::new(HashMap::new()),
        }
    }

    /// The policy.
    #[must_use]
    pub fn config(&self) -> &SelfHealConfig {
        &self.config
    }

    fn down(&self) -> std::sync::MutexGuard<'_, HashMap<RouterId, UnixMillis>> {
        self.down_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The router's API answered (a sample, or an error that only a live API gives): its
    /// outage, if any, is over.
    pub fn answered(&self, router: RouterId) {
        self.down().remove(&router);
    }

    /// A job is at the router (it was not probed): whatever it does — a restore or a reboot
    /// job rebooting it on purpose — its downtime is not counted; the count starts again.
    pub fn busy(&self, router: RouterId) {
        self.down().remove(&router);
    }

    /// When the router's current API outage began, if it is in one.
    #[must_use]
    pub fn down_since(&self, router: RouterId) -> Option<UnixMillis> {
        self.down().get(&router).copied()
    }

    /// A probe of `endpoint` failed with `error`: counts the outage and, when the policy
    /// says so, reboots the router over SSH.
    pub async fn api_failed(&self, endpoint: &RouterEndpoint, error: &DriverError) -> Heal {
        if !self.config.ssh_reboot {
            return Heal::Nothing;
        }
        let router = endpoint.id;
        if !is_api_outage(error.code()) {
            self.answered(router);
            return Heal::Nothing;
        }
        let now = self.clock.now();
        let since = *self.down().entry(router).or_insert(now);
        let down = now.duration_since(since);
        if down < self.config.api_down {
            return Heal::Waiting { down };
        }
        let reboots = match self.ledger.reboots(router) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(router = %router, error = %e, "self-heal: cannot read the reboot ledger");
                return Heal::LedgerFailed;
            }
        };
        if let Err(limit) = allowed(
            &reboots,
            now,
            self.config.min_interval,
            self.config.max_per_day,
        ) {
            tracing::debug!(router = %router, ?limit, "self-heal: a reboot is due but not allowed yet");
            return Heal::Limited(limit);
        }
        let ssh = SshDriver::new(
            endpoint.clone(),
            self.config.ssh.clone(),
            Arc::clone(&self.host_keys),
        );
        if let Err(e) = ssh.run(LOGIN_CHECK).await {
            tracing::warn!(
                router = %router,
                down_secs = down.as_secs(),
                error = %e,
                "self-heal: the API is out and SSH does not work either; not rebooting"
            );
            return Heal::SshUnavailable { code: e.code() };
        }
        // Recorded before it is sent: a crash from here on never repeats it early.
        if let Err(e) = self.ledger.record(router, now).await {
            tracing::error!(router = %router, error = %e, "self-heal: cannot record the reboot; not rebooting");
            return Heal::LedgerFailed;
        }
        let reason = format!(
            "the API has not answered for {} s ({}: {}); SSH login works",
            down.as_secs(),
            error.code().as_str(),
            error.message()
        );
        tracing::warn!(router = %router, %reason, "self-heal: rebooting the router over ssh");
        let started = Instant::now();
        let result = ssh.run(REBOOT_COMMAND).await;
        // The router may drop the session as it goes down: that is the reboot happening.
        let failure = match &result {
            Ok(_) => None,
            Err(e) if e.code() == ErrorCode::ConnectionReset => None,
            Err(e) => Some(e.to_info()),
        };
        self.down().remove(&router);
        let mut params = AuditParams::new();
        params
            .insert("via", "ssh")
            .insert("command", REBOOT_COMMAND)
            .insert("reason", reason)
            .insert("api_error", error.code().as_str())
            .insert("api_down_secs", down.as_secs().to_string());
        let record = AuditRecord {
            seq: 0,
            at: now,
            tenant_id: endpoint.tenant,
            router_id: Some(router),
            job_id: None,
            generation: None,
            action: AUDIT_ACTION.to_owned(),
            params,
            status: if failure.is_some() {
                AuditStatus::Failed
            } else {
                AuditStatus::Succeeded
            },
            error: failure.clone(),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        if let Err(e) = self.audit.push(OutboxRecord::Audit(record)).await {
            tracing::error!(router = %router, error = %e, "self-heal: cannot audit the reboot");
        }
        match failure {
            None => Heal::Rebooted,
            Some(info) => {
                tracing::warn!(router = %router, code = info.code.as_str(), "self-heal: the reboot over ssh failed");
                Heal::RebootFailed { code: info.code }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3_600);

    fn at(hours: i64) -> UnixMillis {
        UnixMillis::new(1_700_000_000_000 + hours * 3_600_000)
    }

    #[test]
    fn the_ledger_limits_reboots() {
        let six = 6 * H;
        // None yet: allowed.
        assert_eq!(allowed(&[], at(0), six, 2), Ok(()));
        // Within the interval: refused until it ends.
        assert_eq!(
            allowed(&[at(0)], at(5), six, 2),
            Err(Limit::Interval { until: at(6) })
        );
        assert_eq!(allowed(&[at(0)], at(6), six, 2), Ok(()));
        // Two in the last day with a max of two: refused until the older one is a day old.
        assert_eq!(
            allowed(&[at(0), at(7)], at(14), six, 2),
            Err(Limit::PerDay { until: at(24) })
        );
        assert_eq!(allowed(&[at(0), at(7)], at(24), six, 2), Ok(()));
        // A max of zero refuses every reboot.
        assert!(matches!(
            allowed(&[], at(0), six, 0),
            Err(Limit::PerDay { .. })
        ));
    }

    #[test]
    fn only_outages_count() {
        for code in [
            ErrorCode::ConnectionRefused,
            ErrorCode::Timeout,
            ErrorCode::ConnectionReset,
        ] {
            assert!(is_api_outage(code), "{code:?}");
        }
        for code in [
            ErrorCode::AuthenticationFailed,
            ErrorCode::PermissionDenied,
            ErrorCode::RouterFatal,
            ErrorCode::Internal,
        ] {
            assert!(!is_api_outage(code), "{code:?}");
        }
    }
}
