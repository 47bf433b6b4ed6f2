//! What the agent's durable outbox carries to the controller.
//!
//! Every router command produces an [`AuditRecord`], probes produce [`Telemetry`], the
//! reconciler produces [`DriftReport`]s and [`ApplyReport`]s, and the executor produces
//! [`JobUpdate`]s. The agent gives each [`OutboxRecord`] a monotonic sequence number (the
//! envelope's `seq`, see [`session`](crate::session)) and keeps it until the controller has
//! stored it and acknowledged it, so each record takes effect exactly once.
//!
//! The stream of seqs has no holes: the receiver treats a skipped seq as a protocol gap.
//! When the agent cannot deliver the record under a seq (telemetry dropped to keep the
//! outbox within its caps, a stored record that no longer decodes), it sends an
//! [`OutboxRecord::Dropped`] tombstone under that seq instead, which the controller counts.
//! Tombstones cannot be merged: each one holds its own seq.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{AccountRef, ItemRef, LifecyclePhase};
use crate::error::ErrorInfo;
use crate::ids::{AgentId, DriftId, JobId, RouterId, SubscriberId, TenantId};
use crate::job::JobUpdate;
use crate::secret::{REDACTED, Secret};
use crate::time::UnixMillis;

/// One record in the agent's outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxRecord {
    /// A router command was run.
    Audit(AuditRecord),
    /// A probe sample.
    Telemetry(Telemetry),
    /// The router differs from the desired state.
    Drift(DriftReport),
    /// A job changed status.
    JobUpdate(JobUpdate),
    /// The reconciler finished applying a generation.
    Applied(ApplyReport),
    /// A long reconcile's progress.
    Progress(ReconcileProgress),
    /// Subscribers a pass moved to another lifecycle phase on the router (or failed to).
    Lifecycle(LifecycleReport),
    /// A part of a backup a `backup_now` job took, uploaded in order; never dropped.
    BackupChunk(BackupChunk),
    /// A tombstone: the record under this seq was not delivered, for `reason`. It keeps the
    /// seqs contiguous; the controller stores and counts it and acks it like any record.
    /// Audit records, job updates, drift and apply reports are never dropped, so a
    /// tombstone stands for telemetry or for a record that could not be read back.
    Dropped {
        /// Why the record is missing.
        reason: DropReason,
    },
}

impl OutboxRecord {
    /// Every record kind, in declaration order.
    pub const NAMES: [&'static str; 9] = [
        "audit",
        "telemetry",
        "drift",
        "job_update",
        "applied",
        "progress",
        "lifecycle",
        "backup_chunk",
        "dropped",
    ];

    /// The record kind's snake_case name, identical to its serialized tag.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Audit(_) => "audit",
            Self::Telemetry(_) => "telemetry",
            Self::Drift(_) => "drift",
            Self::JobUpdate(_) => "job_update",
            Self::Applied(_) => "applied",
            Self::Progress(_) => "progress",
            Self::Lifecycle(_) => "lifecycle",
            Self::BackupChunk(_) => "backup_chunk",
            Self::Dropped { .. } => "dropped",
        }
    }

    /// A tombstone for `reason`.
    #[must_use]
    pub const fn dropped(reason: DropReason) -> Self {
        Self::Dropped { reason }
    }
}

/// Which file of a backup a [`BackupChunk`] carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// The text configuration (`/export`, secrets hidden as the router prints them).
    Export,
    /// The binary `/system/backup/save` file, encrypted by the router with the agent's
    /// per-router backup password.
    Binary,
}

impl BackupKind {
    /// The snake_case name, identical to its serialized tag.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Export => "export",
            Self::Binary => "binary",
        }
    }
}

/// The largest `data` of one [`BackupChunk`] (256 KiB): far below the frame limit.
pub const BACKUP_CHUNK_SIZE: usize = 256 * 1024;

/// One part of a backup file, in order: `offset` is where `data` starts. Every part repeats
/// the file's total size and SHA-256 and what the backup describes, so the controller can
/// check the assembled file whatever part it sees first; the part with `last` closes it.
/// Exactly-once delivery and resumption after a dropped link come from the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupChunk {
    /// The `backup_now` job that took the backup.
    pub job_id: JobId,
    /// The router.
    pub router_id: RouterId,
    /// Which file.
    pub kind: BackupKind,
    /// When the backup was taken (agent's clock).
    pub taken_at: UnixMillis,
    /// The router's RouterOS version then.
    pub ros_version: String,
    /// Byte offset of `data` in the file.
    pub offset: u64,
    /// Size of the whole file in bytes.
    pub total_size: u64,
    /// SHA-256 of the whole file.
    #[serde(with = "serde_bytes")]
    pub sha256: Vec<u8>,
    /// At most [`BACKUP_CHUNK_SIZE`] bytes of the file.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Whether this is the file's last part.
    pub last: bool,
}

impl BackupChunk {
    /// One backup file `data` as its chunks, in order: parts of at most `size` bytes (one
    /// empty chunk for an empty file), each with the file's size and SHA-256, the last one
    /// marked `last`.
    #[must_use]
    pub fn split(
        job_id: JobId,
        router_id: RouterId,
        kind: BackupKind,
        taken_at: UnixMillis,
        ros_version: &str,
        data: &[u8],
        size: usize,
    ) -> Vec<Self> {
        let sha256 = ring::digest::digest(&ring::digest::SHA256, data)
            .as_ref()
            .to_vec();
        let parts: Vec<&[u8]> = if data.is_empty() {
            vec![&[]]
        } else {
            data.chunks(size.max(1)).collect()
        };
        let n = parts.len();
        let mut offset = 0u64;
        parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let chunk = Self {
                    job_id,
                    router_id,
                    kind,
                    taken_at,
                    ros_version: ros_version.to_owned(),
                    offset,
                    total_size: data.len() as u64,
                    sha256: sha256.clone(),
                    data: part.to_vec(),
                    last: i + 1 == n,
                };
                offset += part.len() as u64;
                chunk
            })
            .collect()
    }
}

/// Why an [`OutboxRecord::Dropped`] tombstone stands in for a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// A telemetry record, dropped (oldest first) to keep the outbox within its caps.
    Telemetry,
    /// The stored record could not be decoded.
    Corrupt,
    /// Nothing was stored under the seq (an agent from before tombstones dropped it).
    Missing,
}

impl DropReason {
    /// Every reason, in declaration order.
    pub const ALL: [Self; 3] = [Self::Telemetry, Self::Corrupt, Self::Missing];

    /// The reason's snake_case name, identical to its serialized form.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Telemetry => "telemetry",
            Self::Corrupt => "corrupt",
            Self::Missing => "missing",
        }
    }
}

/// Parameters of an audited command, with secrets redacted.
///
/// Keys are RouterOS attribute names (`name`, `profile`, `password`, …). [`insert`] replaces
/// the value of any key that looks secret ([`is_sensitive_key`]) with `<redacted>`, and
/// [`insert_secret`] always does; build params only through these so a password never
/// reaches the audit log. Serialized as a map of strings.
///
/// [`insert`]: AuditParams::insert
/// [`insert_secret`]: AuditParams::insert_secret
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AuditParams(BTreeMap<String, String>);

/// Whether an attribute name looks like it holds a secret.
#[must_use]
pub fn is_sensitive_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "passphrase",
        "secret",
        "token",
        "private",
        "psk",
    ]
    .iter()
    .any(|s| key.contains(s))
}

impl AuditParams {
    /// No params.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a param; the value is redacted if the key looks secret.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        let key = key.into();
        let value = if is_sensitive_key(&key) {
            REDACTED.to_owned()
        } else {
            value.into()
        };
        self.0.insert(key, value);
        self
    }

    /// Records that a secret param was set, without its value.
    pub fn insert_secret(&mut self, key: impl Into<String>, _value: &Secret) -> &mut Self {
        self.0.insert(key.into(), REDACTED.to_owned());
        self
    }

    /// A param's (possibly redacted) value.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// All params, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of params.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no params.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Outcome of an audited command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditStatus {
    /// The router accepted the command.
    Succeeded,
    /// The command failed; see the record's `error`.
    Failed,
}

/// One router command, as the audit log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Monotonic per agent (the outbox sequence number that carries the record).
    pub seq: u64,
    /// When the command started.
    pub at: UnixMillis,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The router, if the command went to one.
    pub router_id: Option<RouterId>,
    /// The job that caused it, if any (otherwise the reconciler).
    pub job_id: Option<JobId>,
    /// The desired-state generation being applied, if any.
    pub generation: Option<u64>,
    /// The command, e.g. `/ppp/secret/set`.
    pub action: String,
    /// Its parameters, secrets redacted.
    pub params: AuditParams,
    /// Outcome.
    pub status: AuditStatus,
    /// The error, when `status` is `failed`.
    pub error: Option<ErrorInfo>,
    /// How long the command took, in milliseconds.
    pub duration_ms: u64,
}

/// A telemetry sample with its time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Telemetry {
    /// When it was taken.
    pub at: UnixMillis,
    /// What was measured.
    pub sample: TelemetrySample,
}

/// What a probe measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TelemetrySample {
    /// A router answered the probe.
    Router(RouterSample),
    /// A router did not answer the probe.
    RouterUnreachable {
        /// The router.
        router_id: RouterId,
        /// Why.
        error: ErrorInfo,
    },
    /// The agent's own host.
    Host(HostSample),
    /// A router's RouterOS version, available update and firmware (on connect and daily).
    Versions(VersionSample),
}

/// Router resources (`/system/resource`), interfaces and sessions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterSample {
    /// The router.
    pub router_id: RouterId,
    /// CPU load in percent (0–100).
    pub cpu_load_percent: u8,
    /// Free memory in bytes.
    pub free_memory_bytes: u64,
    /// Total memory in bytes.
    pub total_memory_bytes: u64,
    /// Uptime in seconds.
    pub uptime_secs: u64,
    /// Free disk (HDD / flash) in bytes.
    pub free_disk_bytes: u64,
    /// Total disk in bytes.
    pub total_disk_bytes: u64,
    /// Per-interface counters.
    pub interfaces: Vec<InterfaceCounters>,
    /// Active PPP sessions.
    pub active_ppp_sessions: u32,
    /// Active hotspot sessions.
    pub active_hotspot_sessions: u32,
    /// RouterOS version, e.g. `7.15.3`.
    pub routeros_version: Option<String>,
}

/// Counters of one router interface (cumulative since boot).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceCounters {
    /// Interface name.
    pub name: String,
    /// Whether the link is up.
    pub running: bool,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
}

/// The agent's host and its queues. Fields added since the first agents are `Option`s,
/// left out of the frame when `None`, so frames of older agents still decode (to `None`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSample {
    /// The agent.
    pub agent_id: AgentId,
    /// CPU load in percent (0–100).
    pub cpu_load_percent: u8,
    /// Free memory in bytes.
    pub free_memory_bytes: u64,
    /// Total memory in bytes.
    pub total_memory_bytes: u64,
    /// Uptime in seconds.
    pub uptime_secs: u64,
    /// Free disk in the data folder, in bytes.
    pub free_disk_bytes: u64,
    /// Total disk in the data folder, in bytes.
    pub total_disk_bytes: u64,
    /// Records waiting in the outbox.
    pub outbox_records: u64,
    /// Bytes used by the outbox.
    pub outbox_bytes: u64,
    /// Jobs waiting in the queue.
    pub queued_jobs: u64,
    /// The outbox's byte cap (`[outbox] max_bytes`): above it the oldest telemetry is
    /// dropped. `None` from agents that predate the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_max_bytes: Option<u64>,
    /// Telemetry records the outbox has dropped under its caps, ever. `None` from agents
    /// that predate the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry_dropped: Option<u64>,
}

/// A router's software: RouterOS version and update channel, what `check-for-updates`
/// found, and the RouterBOARD firmware. Fields the router did not answer are `None`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionSample {
    /// The router.
    pub router_id: RouterId,
    /// RouterOS version as `/system/resource` reports it, e.g. `7.15.3`.
    pub ros_version: Option<String>,
    /// Update channel (`stable`, `long-term`, …).
    pub channel: Option<String>,
    /// `installed-version` of `/system/package/update`.
    pub installed: Option<String>,
    /// `latest-version` the update check found; `None` when the check could not tell.
    pub latest: Option<String>,
    /// Whether a newer RouterOS exists; `None` when the check failed (no internet, …).
    pub update_available: Option<bool>,
    /// Why the update check could not tell, if it could not (not an error of the probe).
    pub update_error: Option<String>,
    /// `current-firmware` of `/system/routerboard` (`None` on CHR / x86: no RouterBOARD).
    pub firmware_current: Option<String>,
    /// `upgrade-firmware` of `/system/routerboard`.
    pub firmware_upgrade: Option<String>,
    /// Board name, e.g. `RB5009UG+S+`.
    pub board: Option<String>,
}

/// What made the agent compare a router with its desired state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftTrigger {
    /// A pass over a new desired-state generation (or a resumed one).
    Reconcile,
    /// The tenant's drift-check schedule.
    Schedule,
    /// Staff asked (a `drift_check` job).
    Request,
    /// Staff asked to enforce chosen items (an `enforce` job).
    Enforce,
}

/// What the agent did about one difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftAction {
    /// Put back to the desired value (policy `enforce`, or staff asked).
    Corrected,
    /// Left as it is and reported (policy `report`).
    Reported,
    /// The name belongs to an item tikfleet does not manage: left alone until staff adopt it.
    Conflict,
    /// Correcting it failed; `error` on the report says why.
    Failed,
}

impl DriftAction {
    /// Every action.
    pub const ALL: [Self; 4] = [
        Self::Corrected,
        Self::Reported,
        Self::Conflict,
        Self::Failed,
    ];

    /// The snake_case name, as serialized.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Corrected => "corrected",
            Self::Reported => "reported",
            Self::Conflict => "conflict",
            Self::Failed => "failed",
        }
    }
}

impl std::str::FromStr for DriftAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown drift action {s:?}"))
    }
}

/// One difference between a router and its desired state.
///
/// `field: None` means the whole item: missing on the router (`router_value: None`) or
/// present but not desired (`desired_value: None`). Values of secret fields are never put
/// in a finding: both sides read `<redacted>` when they differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftFinding {
    /// The item.
    pub item: ItemRef,
    /// The differing field (RouterOS name), or `None` for the whole item.
    pub field: Option<String>,
    /// The value on the router.
    pub router_value: Option<String>,
    /// The desired value.
    pub desired_value: Option<String>,
    /// Whether tikfleet manages the router's item; `false` means an administrator made it
    /// by hand and tikfleet will not touch it.
    pub managed: bool,
    /// What the agent did.
    pub action: DriftAction,
}

/// What one comparison of a router with its desired state found, in parts of at most
/// [`DriftReport::MAX_FINDINGS`] findings. The last part (`last: true`) closes the check:
/// a finding of an earlier check that this check did not report again is gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftReport {
    /// The check; every part of one check carries the same id.
    pub id: DriftId,
    /// The router.
    pub router_id: RouterId,
    /// The desired-state generation compared against.
    pub generation: u64,
    /// When the router was read.
    pub detected_at: UnixMillis,
    /// Why the check ran.
    pub trigger: DriftTrigger,
    /// The job that asked for it, if any.
    pub job_id: Option<JobId>,
    /// Part number, from 0.
    pub part: u32,
    /// Whether this is the check's last part.
    pub last: bool,
    /// Items compared in the whole check (on the last part; 0 on others).
    pub items_checked: u64,
    /// The findings of this part.
    pub findings: Vec<DriftFinding>,
}

impl DriftReport {
    /// Findings per part, so a part stays far below the frame limit.
    pub const MAX_FINDINGS: usize = 1_000;
}

/// A long reconcile's progress: items done of total, for the controller to show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileProgress {
    /// The router.
    pub router_id: RouterId,
    /// The generation being applied.
    pub generation: u64,
    /// Items handled so far.
    pub done: u64,
    /// Items to handle in this pass.
    pub total: u64,
    /// When.
    pub at: UnixMillis,
}

/// Lifecycle transitions a reconcile pass made on a router, or could not make.
///
/// A pass applies the state as it should be at its moment ([`crate::lifecycle`]); the
/// subscribers whose phase on the router changed with it are listed here, so the controller
/// learns what the agent did while it was unreachable. The agent sends each transition once
/// it is applied (again after a crash before it noted it, so the controller takes them
/// idempotently: a transition is keyed by subscriber, phase and expiry). With `error`, the
/// pass failed and none of `transitions` is on the router yet: they are due and will be
/// retried. Reports hold at most [`LifecycleReport::MAX_TRANSITIONS`] transitions; a pass
/// with more sends several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleReport {
    /// The router.
    pub router_id: RouterId,
    /// The generation of the state the pass applied.
    pub generation: u64,
    /// When the pass finished.
    pub at: UnixMillis,
    /// The subscribers that changed phase (or were due to).
    pub transitions: Vec<LifecycleTransition>,
    /// Why the transitions are not applied yet; `None` when they are.
    pub error: Option<ErrorInfo>,
}

impl LifecycleReport {
    /// Most transitions in one report.
    pub const MAX_TRANSITIONS: usize = 1_000;
}

/// One subscriber's move to another lifecycle phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleTransition {
    /// The subscriber.
    pub subscriber_id: SubscriberId,
    /// Its account on the router.
    pub account: AccountRef,
    /// The phase it is in now.
    pub phase: LifecyclePhase,
    /// The expiry the phase follows from (a renewal makes a new one).
    pub expires_at: UnixMillis,
    /// When the phase began by the subscriber's times (the pass may have run later).
    pub due_at: UnixMillis,
}

/// The reconciler finished a pass over one generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// The router.
    pub router_id: RouterId,
    /// The generation applied.
    pub generation: u64,
    /// When the pass finished.
    pub at: UnixMillis,
    /// Commands sent to the router.
    pub changes: u32,
    /// Desired items left alone because an administrator's item has their name.
    #[serde(default)]
    pub conflicts: u32,
    /// `None` if the router now matches the generation; otherwise why it does not.
    pub error: Option<ErrorInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_params_redact_secrets() {
        let mut p = AuditParams::new();
        p.insert("name", "alice")
            .insert("password", "hunter2")
            .insert("Pre-Shared-PSK", "x")
            .insert_secret("token-value", &Secret::new("t0ken"));
        assert_eq!(p.get("name"), Some("alice"));
        assert_eq!(p.get("password"), Some(REDACTED));
        assert_eq!(p.get("Pre-Shared-PSK"), Some(REDACTED));
        assert_eq!(p.get("token-value"), Some(REDACTED));
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            !json.contains("hunter2") && !json.contains("t0ken"),
            "{json}"
        );
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn tombstones_are_tiny_and_named_like_their_tags() {
        for reason in DropReason::ALL {
            let record = OutboxRecord::dropped(reason);
            let json = serde_json::to_value(&record).unwrap();
            assert_eq!(json["dropped"]["reason"], reason.name(), "{json}");
            let bytes = rmp_serde::to_vec_named(&record).unwrap();
            assert!(bytes.len() <= 32, "{reason:?}: {} bytes", bytes.len());
            assert_eq!(
                rmp_serde::from_slice::<OutboxRecord>(&bytes).unwrap(),
                record
            );
        }
    }

    #[test]
    fn drift_action_names_are_their_serde_tags() {
        for a in DriftAction::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
            assert_eq!(a.as_str().parse::<DriftAction>(), Ok(a));
        }
    }

    #[test]
    fn sensitive_keys() {
        for key in [
            "password",
            "secret",
            "wpa2-pre-shared-key-psk",
            "private-key",
        ] {
            assert!(is_sensitive_key(key), "{key}");
        }
        for key in ["name", "profile", "comment", "address"] {
            assert!(!is_sensitive_key(key), "{key}");
        }
    }
}
