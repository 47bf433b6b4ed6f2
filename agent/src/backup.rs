//! Router backups: the `backup_now` job, and the per-router backup passwords it uses.
//!
//! A backup is two files: the text configuration (`/export` over SSH, secrets hidden as the
//! router prints them: never `show-sensitive`) and the binary `/system/backup/save`, which the
//! router encrypts with a per-router backup password. [`BackupPasswords`] generates that
//! password once per router and keeps it sealed by the vault (in the store's `meta` tree), so
//! the same password opens every backup of the router, and only this agent knows it. The
//! binary is read over SFTP and then removed from the router's `/file`.
//!
//! Both files leave the agent as [`BackupChunk`] records in the outbox (parts of at most
//! [`BACKUP_CHUNK_SIZE`], each with the file's size and SHA-256), ahead of the job's final
//! update: the outbox delivers them exactly once and resumes after a dropped link, and, like
//! audit records, never drops them (they count toward its byte cap, so a large backup during
//! an outage makes the outbox drop older telemetry first).

use std::sync::Arc;

use rand::Rng;
use rand::distr::Alphanumeric;
use tikfleet_shared::record::{BACKUP_CHUNK_SIZE, BackupChunk, BackupKind, OutboxRecord};
use tikfleet_shared::{ErrorCode, JobId, RouterId, Secret, UnixMillis};

use crate::routeros::{Cmd, DriverError, RouterOsClient};
use crate::ssh::{HostKeyStore, RosMajor, SshConfig, SshDriver, SshError};
use crate::store::{Store, StoreError, TreeName};
use crate::vault::{Sealed, Vault};

/// Length of a generated backup password (alphanumeric).
const PASSWORD_LEN: usize = 32;

/// Key prefix of the sealed backup passwords in the `meta` tree.
const KEY_PREFIX: &[u8] = b"backup-password/";

/// Per-router backup passwords, generated once and sealed by the vault.
#[derive(Clone)]
pub struct BackupPasswords {
    tree: sled::Tree,
    vault: Vault,
}

impl std::fmt::Debug for BackupPasswords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupPasswords(<sealed>)")
    }
}

fn key(router: RouterId) -> Vec<u8> {
    let mut k = KEY_PREFIX.to_vec();
    k.extend_from_slice(router.as_bytes());
    k
}

fn internal(what: &str, e: impl std::fmt::Display) -> DriverError {
    DriverError::new(ErrorCode::Internal, format!("{what}: {e}"))
}

impl BackupPasswords {
    /// The passwords in `store`, sealed with `vault`.
    ///
    /// # Errors
    ///
    /// When the tree cannot be opened.
    pub fn open(store: &Store, vault: Vault) -> Result<Self, StoreError> {
        Ok(Self {
            tree: store.tree(TreeName::Meta)?,
            vault,
        })
    }

    /// The router's backup password, generated and sealed on first use. Concurrent first
    /// uses agree on one password (compare-and-swap).
    ///
    /// # Errors
    ///
    /// `internal` when the store fails or the stored value does not unseal.
    pub fn get_or_create(&self, router: RouterId) -> Result<Secret, DriverError> {
        let k = key(router);
        loop {
            if let Some(v) = self
                .tree
                .get(&k)
                .map_err(|e| internal("reading the backup password", e))?
            {
                return self
                    .vault
                    .unseal(router, &Sealed::from_bytes(v.to_vec()))
                    .map_err(|e| internal("unsealing the backup password", e));
            }
            let password: String = rand::rng()
                .sample_iter(&Alphanumeric)
                .take(PASSWORD_LEN)
                .map(char::from)
                .collect();
            let sealed = self
                .vault
                .seal(router, &Secret::new(password))
                .map_err(|e| internal("sealing the backup password", e))?;
            let swapped = self
                .tree
                .compare_and_swap(&k, None::<&[u8]>, Some(sealed.as_bytes()))
                .map_err(|e| internal("storing the backup password", e))?;
            if swapped.is_ok() {
                self.tree
                    .flush()
                    .map_err(|e| internal("storing the backup password", e))?;
            }
            // Either way the next round reads the one stored.
        }
    }
}

/// What the backup job needs besides the router's API connection.
#[derive(Clone)]
pub struct Backups {
    passwords: BackupPasswords,
    host_keys: Arc<dyn HostKeyStore>,
    ssh: SshConfig,
}

impl std::fmt::Debug for Backups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backups")
            .field("ssh", &self.ssh)
            .finish_non_exhaustive()
    }
}

/// A backup taken from a router, before it is cut into chunks.
#[derive(Debug, Clone)]
pub struct TakenBackup {
    /// The `/export` text.
    pub export: Vec<u8>,
    /// The encrypted `.backup` file.
    pub binary: Vec<u8>,
    /// The router's RouterOS version.
    pub ros_version: String,
    /// The file name the router used (removed again).
    pub file: String,
}

impl TakenBackup {
    /// The job's detail line.
    #[must_use]
    pub fn detail(&self) -> String {
        format!(
            "backup taken: export {} bytes, binary {} bytes, RouterOS {}",
            self.export.len(),
            self.binary.len(),
            self.ros_version
        )
    }

    /// The outbox records carrying both files, export first.
    #[must_use]
    pub fn chunks(&self, job: JobId, router: RouterId, at: UnixMillis) -> Vec<OutboxRecord> {
        let mut out = chunks(
            job,
            router,
            BackupKind::Export,
            at,
            &self.ros_version,
            &self.export,
        );
        out.extend(chunks(
            job,
            router,
            BackupKind::Binary,
            at,
            &self.ros_version,
            &self.binary,
        ));
        out
    }
}

/// `data` cut into [`BackupChunk`] records of at most [`BACKUP_CHUNK_SIZE`] bytes (one empty
/// chunk for an empty file).
#[must_use]
pub fn chunks(
    job: JobId,
    router: RouterId,
    kind: BackupKind,
    at: UnixMillis,
    ros_version: &str,
    data: &[u8],
) -> Vec<OutboxRecord> {
    let sha256 = ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec();
    let total = data.len() as u64;
    let parts: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(BACKUP_CHUNK_SIZE).collect()
    };
    let n = parts.len();
    let mut offset = 0u64;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let chunk = BackupChunk {
                job_id: job,
                router_id: router,
                kind,
                taken_at: at,
                ros_version: ros_version.to_owned(),
                offset,
                total_size: total,
                sha256: sha256.clone(),
                data: part.to_vec(),
                last: i + 1 == n,
            };
            offset += part.len() as u64;
            OutboxRecord::BackupChunk(chunk)
        })
        .collect()
}

fn from_ssh(e: SshError) -> DriverError {
    DriverError::new(e.code(), e.message().to_owned())
}

impl Backups {
    /// Backups with passwords from `passwords`, SSH host keys pinned in `host_keys`.
    #[must_use]
    pub fn new(
        passwords: BackupPasswords,
        host_keys: Arc<dyn HostKeyStore>,
        ssh: SshConfig,
    ) -> Self {
        Self {
            passwords,
            host_keys,
            ssh,
        }
    }

    /// The router's backup password (generated on first use).
    ///
    /// # Errors
    ///
    /// As [`BackupPasswords::get_or_create`].
    pub fn password(&self, router: RouterId) -> Result<Secret, DriverError> {
        self.passwords.get_or_create(router)
    }

    /// Takes a backup of the router `client` talks to: `/export` over SSH, then
    /// `/system/backup/save` under the router's backup password, the file downloaded over
    /// SFTP and removed. `name` is the file name on the router (without `.backup`).
    /// `step` is called after each of the four steps.
    ///
    /// # Errors
    ///
    /// The failing step's classified error (a retry starts over; the file name is the
    /// job's, so a leftover file is replaced).
    pub async fn take(
        &self,
        client: &RouterOsClient,
        name: &str,
        step: &(dyn Fn(u64) + Sync),
    ) -> Result<TakenBackup, DriverError> {
        let endpoint = client.endpoint().clone();
        let router = endpoint.id;
        let version = client.version();
        let ssh = SshDriver::new(endpoint, self.ssh.clone(), Arc::clone(&self.host_keys));
        let export = ssh
            .export(RosMajor::from_major(version.major), false)
            .await
            .map_err(from_ssh)?;
        step(1);
        let password = self.password(router)?;
        client
            .run(
                Cmd::new("/system/backup/save")
                    .attr("name", name)
                    .secret("password", &password),
            )
            .await?;
        step(2);
        let file = format!("{name}.backup");
        let binary = ssh.download(&file).await.map_err(from_ssh)?;
        step(3);
        ssh.remove(&file).await.map_err(from_ssh)?;
        step(4);
        Ok(TakenBackup {
            export: export.into_bytes(),
            binary,
            ros_version: version.to_string(),
            file,
        })
    }
}

impl Backups {
    /// Restores `data` (a binary backup of this router) on the router `client` talks to:
    /// checks its SHA-256, uploads it over SFTP as `name`, and loads it with
    /// `/system/backup/load` under the router's backup password. The router reboots after
    /// the load; waiting for it is the caller's (it owns the connections).
    ///
    /// # Errors
    ///
    /// `invalid_request` when the data does not match its checksum; the failing step's
    /// classified error otherwise (a wrong password: the router's `failure`).
    pub async fn restore(
        &self,
        client: &RouterOsClient,
        name: &str,
        data: Vec<u8>,
        sha256: &[u8],
        step: &(dyn Fn(u64) + Sync),
    ) -> Result<(), DriverError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, &data);
        if digest.as_ref() != sha256 {
            return Err(DriverError::new(
                ErrorCode::InvalidRequest,
                "the backup does not match its checksum",
            ));
        }
        let endpoint = client.endpoint().clone();
        let router = endpoint.id;
        let ssh = SshDriver::new(endpoint, self.ssh.clone(), Arc::clone(&self.host_keys));
        let file = if name.ends_with(".backup") {
            name.to_owned()
        } else {
            format!("{name}.backup")
        };
        ssh.upload(&file, data).await.map_err(from_ssh)?;
        step(1);
        let password = self.password(router)?;
        client
            .run(
                Cmd::new("/system/backup/load")
                    .attr("name", file.as_str())
                    .secret("password", &password),
            )
            .await?;
        step(2);
        Ok(())
    }
}

/// The file name (without `.backup`) a job saves under: the requested one if it is a plain
/// name, else `tikfleet-<job id>`.
#[must_use]
pub fn file_name(requested: Option<&str>, job: JobId) -> String {
    match requested {
        Some(n)
            if !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
        {
            n.trim_end_matches(".backup").to_owned()
        }
        _ => format!("tikfleet-{job}"),
    }
}
