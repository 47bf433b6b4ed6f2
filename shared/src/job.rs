//! Jobs: one-off router operations with an id and an idempotency key.
//!
//! Desired state ([`domain`](crate::domain)) says what a router should look like; a [`Job`]
//! asks the agent to *do* something once: reboot, back up, restore, disconnect a session,
//! rotate credentials, or change one item ahead of the next desired-state push. Each
//! [`JobOp`] is still "make it so" by name or key, so executing it twice has the effect of
//! executing it once. The agent reports progress with [`JobUpdate`]s through its outbox
//! ([`record`](crate::record)).

use serde::{Deserialize, Serialize};

use crate::domain::{
    AccountKind, AccountRef, AddressListEntry, HotspotProfile, HotspotUser, ItemRef, PppProfile,
    PppSecret, Profile,
};
use crate::error::ErrorInfo;
use crate::ids::{JobId, RouterId, TenantId};
use crate::time::UnixMillis;

/// Queue priority. `Ord` sorts the most urgent first: `Critical < Normal < Bulk`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Suspend, restore, create: goes first when the queue is long.
    Critical,
    /// Ordinary changes.
    #[default]
    Normal,
    /// Probes, backups, mass updates.
    Bulk,
}

/// A job pushed from the controller to the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// The tenant owning the router.
    pub tenant_id: TenantId,
    /// The router to run it on.
    pub router_id: RouterId,
    /// Caller-chosen key: two jobs with the same key are the same request.
    pub idempotency_key: String,
    /// Queue priority.
    pub priority: Priority,
    /// What to do.
    pub op: JobOp,
    /// When the controller created it.
    pub created_at: UnixMillis,
    /// Attempts before the job is dead-lettered.
    pub max_attempts: u32,
    /// The router's desired-state generation made by the same change as this job, if the
    /// job comes from one. The reconciler leaves the job's items alone in passes over older
    /// states (jobs and states can reach the agent in either order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

/// The operation a job performs.
///
/// Every variant is a struct variant (even when empty), so a variant can later gain an
/// optional field without changing its wire shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOp {
    /// Create or update a PPP secret by name.
    UpsertPppSecret {
        /// The secret as it should be.
        secret: PppSecret,
        /// Its profile, made so first when given: the secret cannot name a profile the
        /// router does not have, and a profile job queued beside it may not have run yet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<Box<PppProfile>>,
    },
    /// Remove a managed PPP secret by name.
    DeletePppSecret {
        /// Login name.
        name: String,
    },
    /// Create or update a hotspot user by name.
    UpsertHotspotUser {
        /// The user as it should be.
        user: HotspotUser,
        /// Its user profile, made so first when given (see `UpsertPppSecret`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<Box<HotspotProfile>>,
    },
    /// Remove a managed hotspot user by name.
    DeleteHotspotUser {
        /// Login name.
        name: String,
    },
    /// Move an account to another profile.
    SetProfile {
        /// The account.
        account: AccountRef,
        /// The new profile's name.
        profile: String,
    },
    /// Enable an account.
    Enable {
        /// The account.
        account: AccountRef,
    },
    /// Disable an account.
    Disable {
        /// The account.
        account: AccountRef,
    },
    /// Disconnect the account's active sessions so changes apply.
    DisconnectSession {
        /// The account.
        account: AccountRef,
    },
    /// Create or update a profile by name.
    UpsertProfile {
        /// The profile as it should be.
        profile: Profile,
    },
    /// Remove a managed profile by name.
    DeleteProfile {
        /// PPP or hotspot profile.
        kind: AccountKind,
        /// Profile name.
        name: String,
    },
    /// Add an address-list entry (no-op if present).
    AddAddressListEntry {
        /// The entry.
        entry: AddressListEntry,
    },
    /// Remove a managed address-list entry (no-op if absent).
    RemoveAddressListEntry {
        /// List name.
        list: String,
        /// Address.
        address: String,
    },
    /// Reboot the router.
    Reboot {},
    /// Take a backup now.
    BackupNow {
        /// Backup file name; the agent picks one when `None`.
        name: Option<String>,
    },
    /// Restore a binary backup: upload it to the router's `/file` as `name`, load it with
    /// the router's backup password, wait for the router to come back, report its version
    /// and remove the uploaded file.
    ///
    /// The file either travels inside the job (`data`, what controllers before chunked
    /// restores sent) or, with `size` set and `data` empty, is fetched from the controller in
    /// parts ([`BackupFetch`](crate::protocol::BackupFetch)) by `backup_id`; either way the
    /// agent checks `sha256` before anything reaches the router.
    Restore {
        /// Backup file name on the router.
        name: String,
        /// The controller's backup id (for the job's detail).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backup_id: Option<String>,
        /// The backup file (as the router saved it: encrypted). Left out of the frame when
        /// empty, so a restore by file name encodes as before these fields existed.
        #[serde(default, with = "serde_bytes", skip_serializing_if = "Vec::is_empty")]
        data: Vec<u8>,
        /// SHA-256 of the file.
        #[serde(default, with = "serde_bytes", skip_serializing_if = "Vec::is_empty")]
        sha256: Vec<u8>,
        /// The file's size when it is fetched in parts (then `data` is empty); `None` when
        /// the job carries the file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    /// Rotate the credentials the agent uses to log in to the router.
    RotateCredentials {},
    /// Compare the router with the desired state now and report drift (under the tenant's
    /// policy: `enforce` corrects managed items, `report` only flags them).
    DriftCheck {},
    /// Put these items to their desired state now, whatever the drift policy. With `adopt`,
    /// an item of the same name that an administrator made is taken over (it gets the
    /// managed marker) instead of being a conflict.
    Enforce {
        /// The items.
        items: Vec<ItemRef>,
        /// Take over unmarked items of these names.
        #[serde(default)]
        adopt: bool,
    },
    /// Restrict `/ip/service` `api`, `api-ssl` and `ssh` to the address the router sees the
    /// agent connect from plus these networks; verified with a fresh login, rolled back if
    /// that fails.
    Lockdown {
        /// The tenant's admin networks (`10.0.0.0/24`, `192.0.2.7`).
        #[serde(default)]
        admin_networks: Vec<String>,
    },
}

impl JobOp {
    /// Every operation name, in declaration order.
    pub const NAMES: [&'static str; 19] = [
        "upsert_ppp_secret",
        "delete_ppp_secret",
        "upsert_hotspot_user",
        "delete_hotspot_user",
        "set_profile",
        "enable",
        "disable",
        "disconnect_session",
        "upsert_profile",
        "delete_profile",
        "add_address_list_entry",
        "remove_address_list_entry",
        "reboot",
        "backup_now",
        "restore",
        "rotate_credentials",
        "drift_check",
        "enforce",
        "lockdown",
    ];

    /// The operation's snake_case name, identical to its serialized tag.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::UpsertPppSecret { .. } => "upsert_ppp_secret",
            Self::DeletePppSecret { .. } => "delete_ppp_secret",
            Self::UpsertHotspotUser { .. } => "upsert_hotspot_user",
            Self::DeleteHotspotUser { .. } => "delete_hotspot_user",
            Self::SetProfile { .. } => "set_profile",
            Self::Enable { .. } => "enable",
            Self::Disable { .. } => "disable",
            Self::DisconnectSession { .. } => "disconnect_session",
            Self::UpsertProfile { .. } => "upsert_profile",
            Self::DeleteProfile { .. } => "delete_profile",
            Self::AddAddressListEntry { .. } => "add_address_list_entry",
            Self::RemoveAddressListEntry { .. } => "remove_address_list_entry",
            Self::Reboot {} => "reboot",
            Self::BackupNow { .. } => "backup_now",
            Self::Restore { .. } => "restore",
            Self::RotateCredentials {} => "rotate_credentials",
            Self::DriftCheck {} => "drift_check",
            Self::Enforce { .. } => "enforce",
            Self::Lockdown { .. } => "lockdown",
        }
    }
}

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Stored, waiting for its turn.
    Queued,
    /// Executing now.
    Running,
    /// Failed transiently; will run again after a backoff.
    Retrying,
    /// Done.
    Succeeded,
    /// Failed permanently or out of attempts (dead-lettered).
    Failed,
    /// Cancelled by the controller before it finished.
    Cancelled,
}

impl JobStatus {
    /// Whether no further updates follow (unless staff re-queue the job).
    #[must_use]
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Progress of a job with countable steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Steps done.
    pub done: u64,
    /// Steps in all.
    pub total: u64,
}

/// A status report about one job, sent through the agent's outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUpdate {
    /// The job.
    pub job_id: JobId,
    /// The router it runs on.
    pub router_id: RouterId,
    /// The new status.
    pub status: JobStatus,
    /// Attempts so far, including the current one.
    pub attempts: u32,
    /// Progress, for jobs with steps.
    pub progress: Option<Progress>,
    /// The last error, for `retrying` and `failed`.
    pub error: Option<ErrorInfo>,
    /// Short result text for people (e.g. the backup file name); never a secret.
    pub detail: Option<String>,
    /// When the status changed.
    pub at: UnixMillis,
}

/// The controller asks the agent to cancel a job that has not finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCancel {
    /// The job.
    pub job_id: JobId,
    /// Why, for the audit log.
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_orders_critical_first() {
        let mut p = vec![Priority::Bulk, Priority::Critical, Priority::Normal];
        p.sort();
        assert_eq!(p, [Priority::Critical, Priority::Normal, Priority::Bulk]);
    }

    #[test]
    fn names_match_serde_tags() {
        let ops = [
            JobOp::Reboot {},
            JobOp::DriftCheck {},
            JobOp::Restore {
                name: "b".into(),
                backup_id: None,
                data: vec![1, 2],
                sha256: Vec::new(),
                size: None,
            },
            JobOp::DeletePppSecret { name: "a".into() },
        ];
        for op in ops {
            let json = serde_json::to_value(&op).unwrap();
            let tag = json.as_object().unwrap().keys().next().unwrap().clone();
            assert_eq!(tag, op.name());
            assert!(JobOp::NAMES.contains(&op.name()));
        }
    }

    #[test]
    fn terminal_statuses() {
        assert!(JobStatus::Succeeded.is_terminal());
        assert!(JobStatus::Failed.is_terminal());
        assert!(JobStatus::Cancelled.is_terminal());
        assert!(!JobStatus::Retrying.is_terminal());
        assert!(!JobStatus::Queued.is_terminal());
    }
}
