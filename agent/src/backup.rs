//! Router backups: the `backup_now` job, and the per-router backup passwords it uses.
//!
//! A backup is two files: the text configuration (`/export` over SSH, secrets hidden as the
//! router prints them: never `show-sensitive`) and the binary `/system/backup/save`, which the
//! router encrypts with a per-router backup password. [`BackupPasswords`] generates that
//! password once per router and keeps it sealed by the vault (in the store's `meta` tree), so
//! the same password opens every backup of the router, and only this agent knows it. The
//! binary is read over SFTP and then removed from the router's `/file`.
//!
//! A `restore` job's file comes inside the job (small files from older controllers) or, named
//! by backup id, size and SHA-256, is fetched from the controller part by part
//! ([`Backups::fetch`], through the uplink's [`BackupFetcher`]) into a file staged in the
//! agent's data folder: each part is appended as it arrives, so a dropped link or a restart
//! asks only for the rest (from the staged size). The whole file's SHA-256 is checked before
//! anything reaches the router; then it is uploaded over SFTP, loaded, and, once the router
//! is back and a fresh login works, removed from the router's `/file` again (also when the
//! load fails while the router stays up), and the staged file is deleted.
//!
//! Both files leave the agent as [`BackupChunk`] records in the outbox (parts of at most
//! [`BACKUP_CHUNK_SIZE`], each with the file's size and SHA-256), ahead of the job's final
//! update: the outbox delivers them exactly once and resumes after a dropped link, and, like
//! audit records, never drops them (they count toward its byte cap, so a large backup during
//! an outage makes the outbox drop older telemetry first).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::distr::Alphanumeric;
use tikfleet_shared::protocol::{BackupFetch, MAX_BACKUP_PART};
use tikfleet_shared::record::{BACKUP_CHUNK_SIZE, BackupChunk, BackupKind, OutboxRecord};
use tikfleet_shared::{ErrorCode, JobId, RouterId, Secret, UnixMillis};

use crate::clock::SharedClock;
use crate::routeros::{Cmd, DriverError, RouterOsClient};
use crate::ssh::{HostKeyStore, RosMajor, SshConfig, SshDriver, SshError};
use crate::store::{Store, StoreError, TreeName};
use crate::uplink::fetch::BackupFetcher;
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

/// How long a restore waits for one backup part from the controller (on the clock) before
/// it asks again.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// How many times in a row a restore asks for a part without getting one before the attempt
/// fails (retryable: the next attempt resumes from the staged bytes).
pub const FETCH_TRIES: u32 = 5;

/// What the backup job needs besides the router's API connection.
#[derive(Clone)]
pub struct Backups {
    passwords: BackupPasswords,
    host_keys: Arc<dyn HostKeyStore>,
    ssh: SshConfig,
    restores: Option<(BackupFetcher, PathBuf)>,
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
    BackupChunk::split(job, router, kind, at, ros_version, data, BACKUP_CHUNK_SIZE)
        .into_iter()
        .map(OutboxRecord::BackupChunk)
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
            restores: None,
        }
    }

    /// Restores fetch files the job does not carry through `fetcher` (served by the uplink),
    /// staging them in the folder `staging` (created when needed).
    #[must_use]
    pub fn with_restores(mut self, fetcher: BackupFetcher, staging: PathBuf) -> Self {
        self.restores = Some((fetcher, staging));
        self
    }

    /// Where a restore job's file is staged, if restores can fetch files.
    #[must_use]
    pub fn staged_path(&self, job: JobId) -> Option<PathBuf> {
        self.restores
            .as_ref()
            .map(|(_, dir)| dir.join(format!("{job}.backup.part")))
    }

    /// Deletes a restore job's staged file, if any.
    pub async fn discard(&self, job: JobId) {
        if let Some(path) = self.staged_path(job)
            && let Err(e) = tokio::fs::remove_file(&path).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete a staged backup");
        }
    }

    /// Fetches backup `backup_id` (`size` bytes) from the controller for restore job `job`
    /// into its staged file, resuming from what is staged already, and checks its SHA-256.
    /// `progress` gets the bytes staged after each part. Returns the staged file.
    ///
    /// # Errors
    ///
    /// `invalid_request` when restores are not set up, the controller refuses the backup,
    /// its parts do not fit `size`, or the file does not match `sha256` (the staged file is
    /// then deleted: nothing reaches the router); `unavailable` (retryable) when no part
    /// came after [`FETCH_TRIES`] requests; `internal` when the staged file cannot be
    /// written.
    pub async fn fetch(
        &self,
        job: JobId,
        backup_id: &str,
        size: u64,
        sha256: &[u8],
        clock: &SharedClock,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<PathBuf, DriverError> {
        use tokio::io::AsyncWriteExt as _;
        let (Some((fetcher, dir)), Some(path)) = (&self.restores, self.staged_path(job)) else {
            return Err(DriverError::new(
                ErrorCode::InvalidRequest,
                "this agent cannot fetch backups from the controller (no uplink)",
            ));
        };
        let io = |what: &str, e: std::io::Error| {
            DriverError::new(
                ErrorCode::Internal,
                format!("{what} {}: {e}", path.display()),
            )
        };
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| io("cannot create the folder of", e))?;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|e| io("cannot open", e))?;
        let mut staged = file
            .metadata()
            .await
            .map_err(|e| io("cannot read", e))?
            .len();
        if staged > size {
            // Not this backup's bytes: start over.
            file.set_len(0)
                .await
                .map_err(|e| io("cannot truncate", e))?;
            staged = 0;
        }
        if staged > 0 {
            tracing::info!(%job, staged, size, "resuming a restore's download");
        }
        progress(staged);
        let refused = |msg: String| DriverError::new(ErrorCode::InvalidRequest, msg);
        let mut misses = 0;
        while staged < size {
            let request = BackupFetch {
                job_id: job,
                backup_id: backup_id.to_owned(),
                offset: staged,
            };
            let deadline = clock.now().saturating_add(FETCH_TIMEOUT);
            let answer = tokio::select! {
                answer = fetcher.fetch(request) => answer.map_err(|e| e.to_string()),
                () = clock.sleep_until(deadline) => Err(format!(
                    "no backup part within {} s", FETCH_TIMEOUT.as_secs()
                )),
            };
            let part = match answer {
                Ok(part) => part,
                Err(reason) => {
                    misses += 1;
                    tracing::debug!(%job, staged, %reason, "asking for the backup part again");
                    if misses >= FETCH_TRIES {
                        return Err(DriverError::new(
                            ErrorCode::Unavailable,
                            format!(
                                "the controller sent no backup part ({reason}); {staged} of \
                                 {size} bytes are staged and the next attempt resumes there"
                            ),
                        ));
                    }
                    continue;
                }
            };
            if let Some(error) = part.error {
                if error.retryable && misses + 1 < FETCH_TRIES {
                    misses += 1;
                    continue;
                }
                return Err(DriverError::new(
                    if error.retryable {
                        ErrorCode::Unavailable
                    } else {
                        ErrorCode::InvalidRequest
                    },
                    format!(
                        "the controller did not send backup {backup_id}: {}",
                        error.message
                    ),
                ));
            }
            if part.offset != staged {
                // A late answer to an earlier question: ask again (a controller that keeps
                // answering another offset uses the tries up).
                misses += 1;
                if misses >= FETCH_TRIES {
                    return Err(refused(format!(
                        "the controller keeps sending backup {backup_id} at offset {} when \
                         {staged} is asked for",
                        part.offset
                    )));
                }
                continue;
            }
            if part.total != size {
                self.discard(job).await;
                return Err(refused(format!(
                    "backup {backup_id} is {} bytes at the controller, the job says {size}",
                    part.total
                )));
            }
            let len = part.data.len() as u64;
            if len == 0 || part.data.len() > MAX_BACKUP_PART || staged + len > size {
                return Err(refused(format!(
                    "the controller sent a part of {len} bytes at offset {staged} of {size}"
                )));
            }
            file.write_all(&part.data)
                .await
                .map_err(|e| io("cannot write", e))?;
            // On disk before it counts: a crash after this resumes after these bytes.
            file.sync_data().await.map_err(|e| io("cannot write", e))?;
            staged += len;
            misses = 0;
            progress(staged);
        }
        drop(file);
        if file_sha256(&path).await.map_err(|e| io("cannot read", e))? != sha256 {
            self.discard(job).await;
            return Err(refused(format!(
                "backup {backup_id} does not match its checksum; nothing was uploaded"
            )));
        }
        Ok(path)
    }

    /// Removes an uploaded restore file (named as [`Backups::restore`] names it) from the
    /// router's `/file`; a file already gone is fine.
    ///
    /// # Errors
    ///
    /// The SFTP removal's classified error.
    pub async fn remove_upload(
        &self,
        client: &RouterOsClient,
        name: &str,
    ) -> Result<(), DriverError> {
        let ssh = SshDriver::new(
            client.endpoint().clone(),
            self.ssh.clone(),
            Arc::clone(&self.host_keys),
        );
        match ssh.remove(&restore_file(name)).await {
            Ok(()) => Ok(()),
            Err(e) if e.code() == ErrorCode::NoSuchItem => Ok(()),
            Err(e) => Err(from_ssh(e)),
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

/// The file a restore uploads.
#[derive(Clone, Debug)]
pub enum RestoreFile {
    /// Carried by the job.
    Inline(Vec<u8>),
    /// Fetched into this staged file ([`Backups::fetch`]); streamed to the router.
    Staged(PathBuf),
}

impl Backups {
    /// Restores `file` (a binary backup of this router) on the router `client` talks to:
    /// checks its SHA-256, uploads it over SFTP as `name`, and loads it with
    /// `/system/backup/load` under the router's backup password. The router reboots after
    /// the load; waiting for it is the caller's (it owns the connections). A file the load
    /// refused (or a partial upload) is removed from the router again.
    ///
    /// # Errors
    ///
    /// `invalid_request` when the file does not match its checksum (nothing is uploaded);
    /// the failing step's classified error otherwise (a wrong password: the router's
    /// `failure`).
    pub async fn restore(
        &self,
        client: &RouterOsClient,
        name: &str,
        file: RestoreFile,
        sha256: &[u8],
        step: &(dyn Fn(u64) + Sync),
    ) -> Result<(), DriverError> {
        let digest = match &file {
            RestoreFile::Inline(data) => ring::digest::digest(&ring::digest::SHA256, data)
                .as_ref()
                .to_vec(),
            RestoreFile::Staged(path) => file_sha256(path).await.map_err(|e| {
                DriverError::new(
                    ErrorCode::Internal,
                    format!("cannot read the staged backup {}: {e}", path.display()),
                )
            })?,
        };
        if digest != sha256 {
            return Err(DriverError::new(
                ErrorCode::InvalidRequest,
                "the backup does not match its checksum; nothing was uploaded",
            ));
        }
        let endpoint = client.endpoint().clone();
        let router = endpoint.id;
        let ssh = SshDriver::new(endpoint, self.ssh.clone(), Arc::clone(&self.host_keys));
        let remote = restore_file(name);
        let uploaded = match file {
            RestoreFile::Inline(data) => ssh.upload(&remote, data).await,
            RestoreFile::Staged(path) => ssh.upload_file(&remote, path).await,
        };
        let file = remote;
        if let Err(e) = uploaded {
            // A part of the file may have been written.
            let _ = ssh.remove(&file).await;
            return Err(from_ssh(e));
        }
        step(1);
        let password = self.password(router)?;
        let loaded = client
            .run(
                Cmd::new("/system/backup/load")
                    .attr("name", file.as_str())
                    .secret("password", &password),
            )
            .await;
        if let Err(e) = loaded {
            // Not loaded, so the router did not reboot: leave nothing behind.
            if let Err(r) = ssh.remove(&file).await {
                tracing::warn!(router = %router, file, error = %r, "cannot remove the uploaded backup after a failed load");
            }
            return Err(e);
        }
        step(2);
        Ok(())
    }
}

/// The router file name a restore uploads `name` as.
fn restore_file(name: &str) -> String {
    if name.ends_with(".backup") {
        name.to_owned()
    } else {
        format!("{name}.backup")
    }
}

/// The SHA-256 of a file, read in blocks.
async fn file_sha256(path: &Path) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let mut file = tokio::fs::File::open(path).await?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx.finish().as_ref().to_vec())
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
