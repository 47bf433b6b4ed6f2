//! The router registry: the routers this agent serves.
//!
//! Each router is stored in the store's `routers` tree with its password sealed by the
//! [`vault`](crate::vault) (the router's id is the associated data). [`Registry::get`] unseals
//! it into the [`RouterEndpoint`] the drivers take; [`Registry::list`] and
//! [`Registry::info`] never touch the password. Names are unique per agent.
//!
//! On disk (`routers` tree): `r` + 16 id bytes → MessagePack [`StoredRouter`] (named fields,
//! format version 1); `n` + name bytes → 16 id bytes (the name index). Both keys of a router
//! change in one sled transaction, and every change is committed before it returns.

use serde::{Deserialize, Serialize};
use tikfleet_shared::{ErrorCode, RouterId, Secret, TenantId};

use crate::router::{RouterEndpoint, TlsMode};
use crate::store::{Store, StoreError, TreeName};
use crate::vault::{Sealed, Vault, VaultError};

/// An error of the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Another router already has this name.
    #[error("a router named {name:?} already exists")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// No router with this id.
    #[error("router {id} not found")]
    NotFound {
        /// The id.
        id: RouterId,
    },
    /// The request is invalid (empty name or host, zero port).
    #[error("invalid router: {reason}")]
    Invalid {
        /// What is wrong.
        reason: &'static str,
    },
    /// Sealing or unsealing the password failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegistryError {
    /// The shared error code for this error.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::DuplicateName { .. } => ErrorCode::DuplicateName,
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::Invalid { .. } => ErrorCode::InvalidRequest,
            Self::Vault(e) => e.code(),
            Self::Store(e) => e.code(),
        }
    }
}

/// A router as listed: everything but the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterInfo {
    /// Its id.
    pub id: RouterId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its name.
    pub name: String,
    /// Host name or IP address.
    pub host: String,
    /// API or API-SSL port.
    pub api_port: u16,
    /// SSH port.
    pub ssh_port: u16,
    /// How the API connection is secured.
    pub tls: TlsMode,
    /// The API/SSH user.
    pub username: String,
}

/// The on-disk form of a router (a storage format, versioned by `v`).
#[derive(Serialize, Deserialize)]
struct StoredRouter {
    v: u8,
    id: RouterId,
    tenant: TenantId,
    name: String,
    host: String,
    api_port: u16,
    ssh_port: u16,
    tls: StoredTls,
    username: String,
    #[serde(with = "serde_bytes_vec")]
    sealed_password: Vec<u8>,
    /// Set by a credential rotation: the user the login was given as (by a technician or the
    /// controller). A controller update naming that user again keeps the rotated login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotated_from: Option<String>,
}

/// A rotation in progress (`p` + 16 id bytes): the new user and its password sealed, written
/// before the user is created on the router.
#[derive(Serialize, Deserialize)]
struct StoredPending {
    v: u8,
    username: String,
    #[serde(with = "serde_bytes_vec")]
    sealed_password: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredTls {
    Plain,
    Verify { ca_pem: String, server_name: String },
    Pin { sha256: String },
}

/// Stores a `Vec<u8>` as a MessagePack `bin` rather than an array of integers.
mod serde_bytes_vec {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(Bytes)
    }
}

impl From<&TlsMode> for StoredTls {
    fn from(tls: &TlsMode) -> Self {
        match tls {
            TlsMode::Plain => Self::Plain,
            TlsMode::Verify {
                ca_pem,
                server_name,
            } => Self::Verify {
                ca_pem: ca_pem.clone(),
                server_name: server_name.clone(),
            },
            TlsMode::Pin { sha256 } => Self::Pin {
                sha256: sha256.clone(),
            },
        }
    }
}

impl From<StoredTls> for TlsMode {
    fn from(tls: StoredTls) -> Self {
        match tls {
            StoredTls::Plain => Self::Plain,
            StoredTls::Verify {
                ca_pem,
                server_name,
            } => Self::Verify {
                ca_pem,
                server_name,
            },
            StoredTls::Pin { sha256 } => Self::Pin { sha256 },
        }
    }
}

impl StoredRouter {
    fn info(self) -> (RouterInfo, Sealed) {
        (
            RouterInfo {
                id: self.id,
                tenant: self.tenant,
                name: self.name,
                host: self.host,
                api_port: self.api_port,
                ssh_port: self.ssh_port,
                tls: self.tls.into(),
                username: self.username,
            },
            Sealed::from_bytes(self.sealed_password),
        )
    }
}

const TREE: &str = "routers";

fn record_key(id: RouterId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(b'r');
    key.extend_from_slice(id.as_bytes());
    key
}

fn name_key(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(b'n');
    key.extend_from_slice(name.as_bytes());
    key
}

fn encode(router: &StoredRouter) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(router).map_err(|e| StoreError::Encode {
        what: "router",
        reason: e.to_string(),
    })
}

fn decode(bytes: &[u8]) -> Result<StoredRouter, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree: TREE,
        reason: format!("router record: {e}"),
    })
}

/// Errors inside a sled transaction.
enum TxAbort {
    Duplicate,
    NotFound,
}

/// The routers this agent serves.
#[derive(Debug)]
pub struct Registry {
    store: Store,
    tree: sled::Tree,
    vault: Vault,
    /// Bumped by every change this registry makes (see [`Registry::changes`]).
    changes: std::sync::atomic::AtomicU64,
}

impl Registry {
    /// Opens the registry in `store`, sealing with `vault`.
    pub fn open(store: &Store, vault: Vault) -> Result<Self, RegistryError> {
        Ok(Self {
            tree: store.tree(TreeName::Routers)?,
            store: store.clone(),
            vault,
            changes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A counter of the changes made through this registry (routers added, removed,
    /// re-addressed, new passwords): the executor re-reads a router's endpoint when it moved,
    /// and reconnects if the router's address or login changed.
    pub fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Acquire)
    }

    fn changed(&self) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Adds a router; its name must be unique. Durable when it returns.
    pub async fn add(&self, router: RouterEndpoint) -> Result<RouterInfo, RegistryError> {
        if router.name.trim().is_empty() {
            return Err(RegistryError::Invalid {
                reason: "the name is empty",
            });
        }
        if router.host.trim().is_empty() {
            return Err(RegistryError::Invalid {
                reason: "the host is empty",
            });
        }
        if router.api_port == 0 || router.ssh_port == 0 {
            return Err(RegistryError::Invalid {
                reason: "a port is zero",
            });
        }
        self.store.check_room()?;
        let sealed = self.vault.seal(router.id, &router.password)?;
        let stored = StoredRouter {
            v: 1,
            id: router.id,
            tenant: router.tenant,
            name: router.name.clone(),
            host: router.host,
            api_port: router.api_port,
            ssh_port: router.ssh_port,
            tls: (&router.tls).into(),
            username: router.username,
            sealed_password: sealed.as_bytes().to_vec(),
            rotated_from: None,
        };
        let value = encode(&stored)?;
        let rkey = record_key(router.id);
        let nkey = name_key(&router.name);
        let result = self.tree.transaction(|tx| {
            if tx.get(&nkey)?.is_some() || tx.get(&rkey)?.is_some() {
                return sled::transaction::abort(TxAbort::Duplicate);
            }
            tx.insert(nkey.as_slice(), router.id.as_bytes().as_slice())?;
            tx.insert(rkey.as_slice(), value.as_slice())?;
            Ok(())
        });
        self.finish(result, router.id, &router.name)?;
        self.store.commit().await?;
        Ok(stored.info().0)
    }

    fn finish(
        &self,
        result: sled::transaction::TransactionResult<(), TxAbort>,
        id: RouterId,
        name: &str,
    ) -> Result<(), RegistryError> {
        match result {
            Ok(()) => {
                self.changed();
                Ok(())
            }
            Err(sled::transaction::TransactionError::Abort(TxAbort::Duplicate)) => {
                Err(RegistryError::DuplicateName {
                    name: name.to_owned(),
                })
            }
            Err(sled::transaction::TransactionError::Abort(TxAbort::NotFound)) => {
                Err(RegistryError::NotFound { id })
            }
            Err(sled::transaction::TransactionError::Storage(e)) => {
                Err(self.store.map_sled(e).into())
            }
        }
    }

    fn load(&self, id: RouterId) -> Result<StoredRouter, RegistryError> {
        let bytes = self
            .tree
            .get(record_key(id))
            .map_err(|e| self.store.map_sled(e))?
            .ok_or(RegistryError::NotFound { id })?;
        Ok(decode(&bytes)?)
    }

    /// Every router, by id; corrupt records are logged and skipped.
    pub fn list(&self) -> Result<Vec<RouterInfo>, RegistryError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(b"r") {
            let (key, value) = item.map_err(|e| self.store.map_sled(e))?;
            match decode(&value) {
                Ok(stored) => out.push(stored.info().0),
                Err(e) => {
                    tracing::warn!(key = ?key.as_ref(), error = %e, "skipping a corrupt router record")
                }
            }
        }
        Ok(out)
    }

    /// A router without its password.
    pub fn info(&self, id: RouterId) -> Result<RouterInfo, RegistryError> {
        Ok(self.load(id)?.info().0)
    }

    /// The router with this name, if any.
    pub fn find_by_name(&self, name: &str) -> Result<Option<RouterInfo>, RegistryError> {
        let Some(id) = self
            .tree
            .get(name_key(name))
            .map_err(|e| self.store.map_sled(e))?
        else {
            return Ok(None);
        };
        let id = <[u8; 16]>::try_from(id.as_ref()).map_err(|_| StoreError::Corrupt {
            tree: TREE,
            reason: "name index entry is not a router id".to_owned(),
        })?;
        self.info(RouterId::from_bytes(id)).map(Some)
    }

    /// The router with its password unsealed, for a driver.
    pub fn get(&self, id: RouterId) -> Result<RouterEndpoint, RegistryError> {
        let (info, sealed) = self.load(id)?.info();
        let password = self.vault.unseal(id, &sealed)?;
        Ok(RouterEndpoint {
            id: info.id,
            tenant: info.tenant,
            name: info.name,
            host: info.host,
            api_port: info.api_port,
            ssh_port: info.ssh_port,
            tls: info.tls,
            username: info.username,
            password,
        })
    }

    /// Removes a router. Durable when it returns.
    pub async fn remove(&self, id: RouterId) -> Result<(), RegistryError> {
        let rkey = record_key(id);
        let result = self.tree.transaction(|tx| {
            let Some(bytes) = tx.get(&rkey)? else {
                return sled::transaction::abort(TxAbort::NotFound);
            };
            tx.remove(rkey.as_slice())?;
            if let Ok(stored) = decode(&bytes) {
                tx.remove(name_key(&stored.name))?;
            }
            Ok(())
        });
        self.finish(result, id, "")?;
        self.store.commit().await?;
        Ok(())
    }

    /// Replaces a router's password. Durable when it returns.
    pub async fn set_password(&self, id: RouterId, password: &Secret) -> Result<(), RegistryError> {
        let mut stored = self.load(id)?;
        stored.sealed_password = self.vault.seal(id, password)?.as_bytes().to_vec();
        let value = encode(&stored)?;
        self.tree
            .insert(record_key(id), value)
            .map_err(|e| self.store.map_sled(e))?;
        self.changed();
        self.store.commit().await?;
        Ok(())
    }

    /// Re-seals every password under `new` (vault key rotation) in one atomic batch, then
    /// switches this registry to `new`. Durable when it returns; the caller then replaces the
    /// key in its source (environment, credential or key file).
    pub async fn rotate_key(&mut self, new: Vault) -> Result<usize, RegistryError> {
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for item in self.tree.scan_prefix(b"r") {
            let (key, value) = item.map_err(|e| self.store.map_sled(e))?;
            let mut stored = decode(&value)?;
            let password = self
                .vault
                .unseal(stored.id, &Sealed::from_bytes(stored.sealed_password))?;
            stored.sealed_password = new.seal(stored.id, &password)?.as_bytes().to_vec();
            batch.insert(key, encode(&stored)?);
            count += 1;
        }
        self.tree
            .apply_batch(batch)
            .map_err(|e| self.store.map_sled(e))?;
        self.store.commit().await?;
        self.vault = new;
        Ok(count)
    }
}

fn pending_key(id: RouterId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(b'p');
    key.extend_from_slice(id.as_bytes());
    key
}

/// Credential rotation ([`credentials`](crate::credentials)): the in-progress record and the
/// switch, each durable when it returns.
impl Registry {
    /// The rotation in progress for `id`: the new user and its password, if one was begun
    /// and not finished or cleared.
    pub fn pending_rotation(
        &self,
        id: RouterId,
    ) -> Result<Option<(String, Secret)>, RegistryError> {
        let Some(bytes) = self
            .tree
            .get(pending_key(id))
            .map_err(|e| self.store.map_sled(e))?
        else {
            return Ok(None);
        };
        let pending: StoredPending =
            rmp_serde::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                tree: TREE,
                reason: format!("pending rotation: {e}"),
            })?;
        let password = self
            .vault
            .unseal(id, &Sealed::from_bytes(pending.sealed_password))?;
        Ok(Some((pending.username, password)))
    }

    /// Records that `username` with `password` is about to be created on the router.
    pub async fn begin_rotation(
        &self,
        id: RouterId,
        username: &str,
        password: &Secret,
    ) -> Result<(), RegistryError> {
        self.load(id)?;
        self.store.check_room()?;
        let pending = StoredPending {
            v: 1,
            username: username.to_owned(),
            sealed_password: self.vault.seal(id, password)?.as_bytes().to_vec(),
        };
        let value = rmp_serde::to_vec_named(&pending).map_err(|e| StoreError::Encode {
            what: "pending rotation",
            reason: e.to_string(),
        })?;
        self.tree
            .insert(pending_key(id), value)
            .map_err(|e| self.store.map_sled(e))?;
        self.store.commit().await?;
        Ok(())
    }

    /// Switches the router's login to `username`/`password` and drops the pending record, in
    /// one transaction. Returns the user the login was switched from.
    pub async fn finish_rotation(
        &self,
        id: RouterId,
        username: &str,
        password: &Secret,
    ) -> Result<String, RegistryError> {
        let mut stored = self.load(id)?;
        let previous = std::mem::replace(&mut stored.username, username.to_owned());
        stored.sealed_password = self.vault.seal(id, password)?.as_bytes().to_vec();
        if stored.rotated_from.is_none() {
            stored.rotated_from = Some(previous.clone());
        }
        let value = encode(&stored)?;
        let (rkey, pkey) = (record_key(id), pending_key(id));
        let result = self.tree.transaction(|tx| {
            if tx.get(&rkey)?.is_none() {
                return sled::transaction::abort(TxAbort::NotFound);
            }
            tx.insert(rkey.as_slice(), value.as_slice())?;
            tx.remove(pkey.as_slice())?;
            Ok(())
        });
        self.finish(result, id, "")?;
        self.store.commit().await?;
        Ok(previous)
    }

    /// Forgets the pending rotation (its user was removed from the router, or never made).
    pub async fn clear_rotation(&self, id: RouterId) -> Result<(), RegistryError> {
        self.tree
            .remove(pending_key(id))
            .map_err(|e| self.store.map_sled(e))?;
        self.store.commit().await?;
        Ok(())
    }
}

/// What [`Registry::apply_remote`] did with a router the controller described.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteChange {
    /// A new router.
    Added,
    /// An existing router was replaced (address, login, TLS, name…).
    Updated,
    /// The router was forgotten (or was not there).
    Removed,
    /// The revision is not newer than the one applied: nothing changed (a redelivery).
    Stale,
}

/// Errors inside the remote-apply transaction.
enum RemoteAbort {
    /// The name belongs to a router added on site.
    NameTaken,
}

fn revision_key(id: RouterId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(b'v');
    key.extend_from_slice(id.as_bytes());
    key
}

/// Routers the controller manages: the highest revision applied per router is kept under
/// `v` + 16 id bytes (u64 big-endian), also after a removal, so an older message cannot bring
/// a removed router back. Routers added on site have no revision and are never touched by
/// the controller unless it sends a router with the same id.
impl Registry {
    /// The revision of the controller's description last applied to `id` (0 = none).
    pub fn remote_revision(&self, id: RouterId) -> Result<u64, RegistryError> {
        Ok(self
            .tree
            .get(revision_key(id))
            .map_err(|e| self.store.map_sled(e))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Adds, replaces or removes `router` as the controller describes it at `revision`
    /// (its password is sealed by the vault here). Older or equal revisions change nothing.
    /// If the name is taken by a router added on site, the controller's router is stored as
    /// `name~<first 8 hex digits of its id>` (logged), so both keep working.
    ///
    /// Not committed: the caller commits the store before acknowledging (group commit).
    pub fn apply_remote(
        &self,
        router: RouterEndpoint,
        revision: u64,
        removed: bool,
    ) -> Result<RemoteChange, RegistryError> {
        let id = router.id;
        let vkey = revision_key(id);
        let rkey = record_key(id);
        let rev_bytes = revision.to_be_bytes();
        if removed {
            let result = self.tree.transaction(|tx| {
                let current = tx
                    .get(&vkey)?
                    .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                    .map_or(0, u64::from_be_bytes);
                if revision <= current && current > 0 {
                    return Ok(RemoteChange::Stale);
                }
                if let Some(bytes) = tx.get(&rkey)? {
                    tx.remove(rkey.as_slice())?;
                    if let Ok(stored) = decode(&bytes) {
                        tx.remove(name_key(&stored.name))?;
                    }
                }
                tx.insert(vkey.as_slice(), rev_bytes.as_slice())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<RemoteAbort>>(
                    RemoteChange::Removed,
                )
            });
            return self.finish_remote(result, id, &router.name);
        }
        if router.name.trim().is_empty() || router.host.trim().is_empty() {
            return Err(RegistryError::Invalid {
                reason: "the controller sent a router without a name or host",
            });
        }
        // A rotated login survives the controller describing the router again with the user
        // it was rotated from (its password there is the one rotation retired).
        let rotated = self
            .load(id)
            .ok()
            .filter(|old| old.rotated_from.as_deref() == Some(router.username.as_str()));
        let (username, sealed, rotated_from) = match rotated {
            Some(old) => (old.username, old.sealed_password, old.rotated_from),
            None => (
                router.username.clone(),
                self.vault.seal(id, &router.password)?.as_bytes().to_vec(),
                None,
            ),
        };
        let short: String = id.to_string().chars().take(8).collect();
        let alternate = format!("{}~{short}", router.name);
        let stored_for = |name: &str| StoredRouter {
            v: 1,
            id,
            tenant: router.tenant,
            name: name.to_owned(),
            host: router.host.clone(),
            api_port: router.api_port,
            ssh_port: router.ssh_port,
            tls: (&router.tls).into(),
            username: username.clone(),
            sealed_password: sealed.clone(),
            rotated_from: rotated_from.clone(),
        };
        let value = encode(&stored_for(&router.name))?;
        let alternate_value = encode(&stored_for(&alternate))?;
        let result = self.tree.transaction(|tx| {
            let current = tx
                .get(&vkey)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map_or(0, u64::from_be_bytes);
            if revision <= current && current > 0 {
                return Ok(RemoteChange::Stale);
            }
            let previous = tx.get(&rkey)?;
            if let Some(old) = previous.as_ref().and_then(|b| decode(b).ok()) {
                tx.remove(name_key(&old.name))?;
            }
            let owner = |name: &str| -> Result<
                Option<sled::IVec>,
                sled::transaction::UnabortableTransactionError,
            > { tx.get(name_key(name)) };
            let taken =
                |found: Option<sled::IVec>| found.is_some_and(|o| o.as_ref() != id.as_bytes());
            let (name, value) = if !taken(owner(&router.name)?) {
                (router.name.as_str(), &value)
            } else if !taken(owner(&alternate)?) {
                (alternate.as_str(), &alternate_value)
            } else {
                return sled::transaction::abort(RemoteAbort::NameTaken);
            };
            tx.insert(name_key(name), id.as_bytes().as_slice())?;
            tx.insert(rkey.as_slice(), value.as_slice())?;
            tx.insert(vkey.as_slice(), rev_bytes.as_slice())?;
            Ok(if previous.is_some() {
                RemoteChange::Updated
            } else {
                RemoteChange::Added
            })
        });
        let change = self.finish_remote(result, id, &router.name)?;
        if change != RemoteChange::Stale
            && self.find_by_name(&router.name)?.map(|r| r.id) != Some(id)
        {
            tracing::warn!(
                router = %id,
                name = %router.name,
                stored_as = %alternate,
                "a router added on site has this name; the controller's router is stored under another name"
            );
        }
        Ok(change)
    }

    fn finish_remote(
        &self,
        result: sled::transaction::TransactionResult<RemoteChange, RemoteAbort>,
        id: RouterId,
        name: &str,
    ) -> Result<RemoteChange, RegistryError> {
        match result {
            Ok(change) => {
                self.changed();
                tracing::debug!(router = %id, ?change, "router from the controller applied");
                Ok(change)
            }
            Err(sled::transaction::TransactionError::Abort(RemoteAbort::NameTaken)) => {
                Err(RegistryError::DuplicateName {
                    name: name.to_owned(),
                })
            }
            Err(sled::transaction::TransactionError::Storage(e)) => {
                Err(self.store.map_sled(e).into())
            }
        }
    }
}
