//! The agent's identity at the controller: who it is, where its hub is, and the two key pairs
//! that prove it.
//!
//! Enrollment (`tikfleet-agent enroll`, see [`uplink::enroll`](crate::uplink::enroll)) makes
//! an Ed25519 *identity key* (it signs each hello's challenge and key rotations) and an X25519
//! *seal key* (router passwords entered at the controller are sealed to it, see
//! [`tikfleet_shared::seal`]). The controller keeps only the public halves. The private halves
//! are stored in the `meta` tree sealed by the [`vault`](crate::vault) (XChaCha20-Poly1305
//! under the vault key, each with its own associated data), next to the agent id, tenant,
//! hub URL and the hub's certificate from the enrollment response.
//!
//! Key rotation keeps a *pending* identity key while the controller is asked to register it:
//! if the controller accepted but the agent stopped before promoting it, the uplink tries the
//! pending key once the current one is refused, and promotes it on the first welcome.
//!
//! The uplink also records here what `status` shows when the agent is not running: whether
//! the controller revoked the agent (the uplink then stops reconnecting) and when it last
//! connected.
//!
//! On disk (`meta` tree): `identity` → MessagePack `StoredIdentity` (format version 1);
//! `uplink` → MessagePack `StoredUplink`.

use std::fmt;

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use tikfleet_shared::enroll::key_id;
use tikfleet_shared::seal;
use tikfleet_shared::{AgentId, ErrorCode, RouterId, Secret, TenantId, UnixMillis};
use zeroize::Zeroizing;

use crate::store::{Store, StoreError, TreeName};
use crate::vault::{Sealed, Vault, VaultError};

/// Associated data slots for the vault: fixed 16-byte tags in place of a router id, so an
/// identity secret can never be opened as a router password or the other way round.
const SIGNING_SLOT: RouterId = RouterId::from_bytes(*b"tikfleet:ident:1");
const PENDING_SLOT: RouterId = RouterId::from_bytes(*b"tikfleet:ident:p");
const SEAL_SLOT: RouterId = RouterId::from_bytes(*b"tikfleet:seal:v1");

const IDENTITY_KEY: &[u8] = b"identity";
const UPLINK_KEY: &[u8] = b"uplink";

/// An error of the identity store.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A stored key did not open or is not a key.
    #[error("the agent's {what} cannot be read: {reason}")]
    BadKey {
        /// Which key.
        what: &'static str,
        /// What is wrong (never key material).
        reason: String,
    },
    /// Generating keys failed (the system's random source).
    #[error("cannot generate the agent's keys: {0}")]
    Generate(String),
    /// A value sealed to this agent did not open.
    #[error(transparent)]
    Seal(#[from] seal::SealError),
    /// The vault failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IdentityError {
    /// The shared error code for this error.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadKey { .. } | Self::Generate(_) | Self::Seal(_) => ErrorCode::Internal,
            Self::Vault(e) => e.code(),
            Self::Store(e) => e.code(),
        }
    }
}

/// A fresh pair of keys for enrollment.
pub struct NewKeys {
    /// Ed25519 private key, PKCS#8.
    signing_pkcs8: Zeroizing<Vec<u8>>,
    /// Ed25519 public key.
    pub public_key: Vec<u8>,
    /// X25519 secret seal key.
    seal_secret: Zeroizing<[u8; seal::KEY_LEN]>,
    /// X25519 public seal key.
    pub seal_public: [u8; seal::KEY_LEN],
}

impl fmt::Debug for NewKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKeys")
            .field("key_id", &key_id(&self.public_key))
            .finish_non_exhaustive()
    }
}

/// A fresh Ed25519 key pair: (PKCS#8, public key).
fn generate_signing() -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), IdentityError> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| IdentityError::Generate("no random source".into()))?;
    let pkcs8 = Zeroizing::new(pkcs8.as_ref().to_vec());
    let pair = signing_pair(&pkcs8)?;
    Ok((pkcs8, pair.public_key().as_ref().to_vec()))
}

fn signing_pair(pkcs8: &[u8]) -> Result<Ed25519KeyPair, IdentityError> {
    Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| IdentityError::BadKey {
        what: "identity key",
        reason: e.to_string(),
    })
}

impl NewKeys {
    /// Makes an identity key pair and a seal key pair.
    pub fn generate() -> Result<Self, IdentityError> {
        let (signing_pkcs8, public_key) = generate_signing()?;
        let (seal_secret, seal_public) = seal::generate();
        Ok(Self {
            signing_pkcs8,
            public_key,
            seal_secret,
            seal_public,
        })
    }

    /// The identity public key, standard base64 (as enrollment sends it).
    #[must_use]
    pub fn public_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.public_key)
    }

    /// The seal public key, standard base64.
    #[must_use]
    pub fn seal_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.seal_public)
    }
}

/// A fresh identity key for rotation.
pub struct NewSigningKey {
    pkcs8: Zeroizing<Vec<u8>>,
    /// The new Ed25519 public key.
    pub public_key: Vec<u8>,
}

impl fmt::Debug for NewSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NewSigningKey({})", key_id(&self.public_key))
    }
}

impl NewSigningKey {
    /// Makes one.
    pub fn generate() -> Result<Self, IdentityError> {
        let (pkcs8, public_key) = generate_signing()?;
        Ok(Self { pkcs8, public_key })
    }
}

/// What the controller answered at enrollment, as the agent keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrollment {
    /// The agent's id.
    pub agent_id: AgentId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The id of its identity key.
    pub key_id: String,
    /// Where the hub is (`wss://…`).
    pub hub_url: String,
    /// The hub's certificate to trust (self-signed hubs), PEM.
    pub hub_ca_pem: Option<String>,
    /// The controller's base URL (for key rotation).
    pub controller_url: String,
    /// Extra CA certificates given at enrollment (`--ca-file`), PEM.
    pub ca_pem: Option<String>,
}

/// The agent's identity with its keys opened, for the uplink.
pub struct Identity {
    /// What enrollment recorded.
    pub enrollment: Enrollment,
    signing: Ed25519KeyPair,
    /// A rotated key the controller may already have (see the module docs).
    pending: Option<Ed25519KeyPair>,
    seal_secret: Zeroizing<[u8; seal::KEY_LEN]>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("enrollment", &self.enrollment)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The agent's id.
    #[must_use]
    pub fn agent_id(&self) -> AgentId {
        self.enrollment.agent_id
    }

    /// The agent's tenant.
    #[must_use]
    pub fn tenant_id(&self) -> TenantId {
        self.enrollment.tenant_id
    }

    /// The current identity public key.
    #[must_use]
    pub fn public_key(&self) -> &[u8] {
        self.signing.public_key().as_ref()
    }

    /// Signs with the current identity key: `(key_id, signature)`.
    #[must_use]
    pub fn sign(&self, payload: &[u8]) -> (String, Vec<u8>) {
        (
            self.enrollment.key_id.clone(),
            self.signing.sign(payload).as_ref().to_vec(),
        )
    }

    /// Signs with the pending rotated key, if there is one: `(key_id, signature)`.
    #[must_use]
    pub fn sign_pending(&self, payload: &[u8]) -> Option<(String, Vec<u8>)> {
        self.pending.as_ref().map(|pair| {
            (
                key_id(pair.public_key().as_ref()),
                pair.sign(payload).as_ref().to_vec(),
            )
        })
    }

    /// Opens a router password sealed to this agent's seal key.
    pub fn open_password(&self, sealed: &[u8]) -> Result<Secret, IdentityError> {
        let plain = seal::open(&self.seal_secret[..], sealed)?;
        let text = std::str::from_utf8(&plain).map_err(|_| IdentityError::BadKey {
            what: "sealed router password",
            reason: "it is not UTF-8 text".into(),
        })?;
        Ok(Secret::new(text))
    }

    /// The public seal key.
    #[must_use]
    pub fn seal_public(&self) -> [u8; seal::KEY_LEN] {
        seal::public_of(&self.seal_secret)
    }
}

/// The on-disk identity (a storage format, versioned by `v`).
#[derive(Serialize, Deserialize)]
struct StoredIdentity {
    v: u8,
    agent_id: AgentId,
    tenant_id: TenantId,
    key_id: String,
    hub_url: String,
    hub_ca_pem: Option<String>,
    controller_url: String,
    ca_pem: Option<String>,
    #[serde(with = "serde_bytes")]
    signing_key: Vec<u8>,
    #[serde(with = "serde_bytes", default)]
    pending_key: Option<Vec<u8>>,
    #[serde(with = "serde_bytes")]
    seal_key: Vec<u8>,
}

/// What the uplink recorded for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkRecord {
    /// The controller revoked this agent, and why.
    pub revoked: Option<String>,
    /// When the agent last completed a hello.
    pub last_connected: Option<UnixMillis>,
}

fn b64(bytes: &[u8]) -> Secret {
    Secret::new(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn unb64(secret: &Secret, what: &'static str) -> Result<Zeroizing<Vec<u8>>, IdentityError> {
    base64::engine::general_purpose::STANDARD
        .decode(secret.expose())
        .map(Zeroizing::new)
        .map_err(|_| IdentityError::BadKey {
            what,
            reason: "it is not base64".into(),
        })
}

/// The identity in the store, sealed by the vault.
#[derive(Debug)]
pub struct IdentityStore {
    store: Store,
    tree: sled::Tree,
    vault: Vault,
}

impl IdentityStore {
    /// Opens it in `store`, sealing with `vault`.
    pub fn open(store: &Store, vault: Vault) -> Result<Self, IdentityError> {
        Ok(Self {
            tree: store.tree(TreeName::Meta)?,
            store: store.clone(),
            vault,
        })
    }

    fn read(&self) -> Result<Option<StoredIdentity>, IdentityError> {
        let Some(bytes) = self
            .tree
            .get(IDENTITY_KEY)
            .map_err(|e| self.store.map_sled(e))?
        else {
            return Ok(None);
        };
        rmp_serde::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                tree: "meta",
                reason: format!("identity: {e}"),
            })
            .map_err(Into::into)
    }

    fn write(&self, stored: &StoredIdentity) -> Result<(), IdentityError> {
        let bytes = rmp_serde::to_vec_named(stored).map_err(|e| StoreError::Encode {
            what: "identity",
            reason: e.to_string(),
        })?;
        self.tree
            .insert(IDENTITY_KEY, bytes)
            .map_err(|e| self.store.map_sled(e))?;
        Ok(())
    }

    /// What enrollment recorded, without opening any key (for `status`).
    pub fn enrollment(&self) -> Result<Option<Enrollment>, IdentityError> {
        Ok(self.read()?.map(|s| Enrollment {
            agent_id: s.agent_id,
            tenant_id: s.tenant_id,
            key_id: s.key_id,
            hub_url: s.hub_url,
            hub_ca_pem: s.hub_ca_pem,
            controller_url: s.controller_url,
            ca_pem: s.ca_pem,
        }))
    }

    /// The identity with its keys opened, if the agent is enrolled.
    pub fn load(&self) -> Result<Option<Identity>, IdentityError> {
        let Some(stored) = self.read()? else {
            return Ok(None);
        };
        let open = |slot, bytes: &[u8], what| -> Result<Zeroizing<Vec<u8>>, IdentityError> {
            let secret = self
                .vault
                .unseal(slot, &Sealed::from_bytes(bytes.to_vec()))?;
            unb64(&secret, what)
        };
        let signing = signing_pair(&open(SIGNING_SLOT, &stored.signing_key, "identity key")?)?;
        let pending = match &stored.pending_key {
            Some(bytes) => Some(signing_pair(&open(
                PENDING_SLOT,
                bytes,
                "pending identity key",
            )?)?),
            None => None,
        };
        let seal_bytes = open(SEAL_SLOT, &stored.seal_key, "seal key")?;
        let seal_secret: [u8; seal::KEY_LEN] =
            seal_bytes
                .as_slice()
                .try_into()
                .map_err(|_| IdentityError::BadKey {
                    what: "seal key",
                    reason: "it is not 32 bytes".into(),
                })?;
        Ok(Some(Identity {
            enrollment: Enrollment {
                agent_id: stored.agent_id,
                tenant_id: stored.tenant_id,
                key_id: stored.key_id,
                hub_url: stored.hub_url,
                hub_ca_pem: stored.hub_ca_pem,
                controller_url: stored.controller_url,
                ca_pem: stored.ca_pem,
            },
            signing,
            pending,
            seal_secret: Zeroizing::new(seal_secret),
        }))
    }

    /// Records a completed enrollment with its keys. Durable when it returns.
    pub async fn save(&self, enrollment: &Enrollment, keys: &NewKeys) -> Result<(), IdentityError> {
        let stored = StoredIdentity {
            v: 1,
            agent_id: enrollment.agent_id,
            tenant_id: enrollment.tenant_id,
            key_id: enrollment.key_id.clone(),
            hub_url: enrollment.hub_url.clone(),
            hub_ca_pem: enrollment.hub_ca_pem.clone(),
            controller_url: enrollment.controller_url.clone(),
            ca_pem: enrollment.ca_pem.clone(),
            signing_key: self
                .vault
                .seal(SIGNING_SLOT, &b64(&keys.signing_pkcs8))?
                .as_bytes()
                .to_vec(),
            pending_key: None,
            seal_key: self
                .vault
                .seal(SEAL_SLOT, &b64(&keys.seal_secret[..]))?
                .as_bytes()
                .to_vec(),
        };
        self.write(&stored)?;
        self.tree
            .insert(UPLINK_KEY, encode_uplink(&UplinkRecord::default())?)
            .map_err(|e| self.store.map_sled(e))?;
        self.store.commit().await?;
        Ok(())
    }

    /// Keeps `key` as the pending identity key (before asking the controller to register it).
    pub async fn set_pending(&self, key: &NewSigningKey) -> Result<(), IdentityError> {
        let mut stored = self.read()?.ok_or_else(not_enrolled)?;
        stored.pending_key = Some(
            self.vault
                .seal(PENDING_SLOT, &b64(&key.pkcs8))?
                .as_bytes()
                .to_vec(),
        );
        self.write(&stored)?;
        self.store.commit().await?;
        Ok(())
    }

    /// Makes the pending key the identity key (the controller registered it as `key_id`).
    /// Durable when it returns. `false` if there was no pending key.
    pub async fn promote_pending(&self, new_key_id: &str) -> Result<bool, IdentityError> {
        let mut stored = self.read()?.ok_or_else(not_enrolled)?;
        let Some(pending) = stored.pending_key.take() else {
            return Ok(false);
        };
        let secret = self
            .vault
            .unseal(PENDING_SLOT, &Sealed::from_bytes(pending))?;
        stored.signing_key = self.vault.seal(SIGNING_SLOT, &secret)?.as_bytes().to_vec();
        stored.key_id = new_key_id.to_owned();
        self.write(&stored)?;
        self.store.commit().await?;
        Ok(true)
    }

    /// Drops a pending key the controller refused.
    pub async fn clear_pending(&self) -> Result<(), IdentityError> {
        let mut stored = self.read()?.ok_or_else(not_enrolled)?;
        if stored.pending_key.take().is_some() {
            self.write(&stored)?;
            self.store.commit().await?;
        }
        Ok(())
    }

    /// What the uplink recorded.
    pub fn uplink(&self) -> Result<UplinkRecord, IdentityError> {
        match self
            .tree
            .get(UPLINK_KEY)
            .map_err(|e| self.store.map_sled(e))?
        {
            None => Ok(UplinkRecord::default()),
            Some(bytes) => Ok(
                rmp_serde::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                    tree: "meta",
                    reason: format!("uplink record: {e}"),
                })?,
            ),
        }
    }

    /// Changes the uplink record. Durable when it returns.
    pub async fn update_uplink(
        &self,
        change: impl FnOnce(&mut UplinkRecord),
    ) -> Result<(), IdentityError> {
        let mut record = self.uplink()?;
        change(&mut record);
        self.tree
            .insert(UPLINK_KEY, encode_uplink(&record)?)
            .map_err(|e| self.store.map_sled(e))?;
        self.store.commit().await?;
        Ok(())
    }
}

fn encode_uplink(record: &UplinkRecord) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(record).map_err(|e| StoreError::Encode {
        what: "uplink record",
        reason: e.to_string(),
    })
}

fn not_enrolled() -> IdentityError {
    IdentityError::BadKey {
        what: "identity",
        reason: "the agent is not enrolled".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;
    use crate::vault::VaultKey;

    fn enrollment() -> Enrollment {
        Enrollment {
            agent_id: AgentId::new(),
            tenant_id: TenantId::new(),
            key_id: "k".into(),
            hub_url: "wss://hub.example/agent".into(),
            hub_ca_pem: Some("PEM".into()),
            controller_url: "https://hub.example".into(),
            ca_pem: None,
        }
    }

    #[tokio::test]
    async fn keys_survive_a_reopen_sealed_and_open_what_was_sealed_to_them() {
        let dir = tempfile::tempdir().unwrap();
        let key = VaultKey::generate();
        let keys = NewKeys::generate().unwrap();
        let e = enrollment();
        {
            let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
            let ids = IdentityStore::open(&store, Vault::new(&key)).unwrap();
            assert!(ids.load().unwrap().is_none());
            ids.save(&e, &keys).await.unwrap();
        }
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let ids = IdentityStore::open(&store, Vault::new(&key)).unwrap();
        let identity = ids.load().unwrap().expect("enrolled");
        assert_eq!(identity.enrollment, e);
        assert_eq!(identity.public_key(), keys.public_key.as_slice());
        assert_eq!(identity.seal_public(), keys.seal_public);

        let sealed = seal::seal(&keys.seal_public, b"router-pw").unwrap();
        assert_eq!(
            identity.open_password(&sealed).unwrap().expose(),
            "router-pw"
        );
        let (_, other_public) = seal::generate();
        let foreign = seal::seal(&other_public, b"x").unwrap();
        assert!(identity.open_password(&foreign).is_err());

        // Signatures verify with the public key.
        let (kid, sig) = identity.sign(b"payload");
        assert_eq!(kid, "k");
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &keys.public_key)
            .verify(b"payload", &sig)
            .unwrap();

        // The private halves are not on disk in the clear.
        drop((ids, identity, store));
        let mut found = false;
        for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
            if let Ok(bytes) = std::fs::read(entry.path()) {
                found |= bytes.windows(32).any(|w| w == &keys.seal_secret[..]);
                found |= bytes.windows(16).any(|w| w == &keys.signing_pkcs8[16..32]);
            }
        }
        assert!(!found, "a private key is stored in the clear");

        // A wrong vault key does not open them.
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let ids = IdentityStore::open(&store, Vault::new(&VaultKey::generate())).unwrap();
        assert!(ids.load().is_err());
    }

    #[tokio::test]
    async fn rotation_promotes_the_pending_key_and_the_uplink_record_persists() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let ids = IdentityStore::open(&store, Vault::new(&VaultKey::generate())).unwrap();
        ids.save(&enrollment(), &NewKeys::generate().unwrap())
            .await
            .unwrap();
        let new = NewSigningKey::generate().unwrap();
        ids.set_pending(&new).await.unwrap();
        let identity = ids.load().unwrap().unwrap();
        let (kid, _) = identity.sign_pending(b"x").expect("pending key");
        assert_eq!(kid, key_id(&new.public_key));
        assert!(ids.promote_pending("new-id").await.unwrap());
        let identity = ids.load().unwrap().unwrap();
        assert_eq!(identity.public_key(), new.public_key.as_slice());
        assert_eq!(identity.enrollment.key_id, "new-id");
        assert!(identity.sign_pending(b"x").is_none());
        assert!(!ids.promote_pending("again").await.unwrap());

        ids.update_uplink(|u| u.revoked = Some("staff".into()))
            .await
            .unwrap();
        assert_eq!(ids.uplink().unwrap().revoked.as_deref(), Some("staff"));
    }
}
