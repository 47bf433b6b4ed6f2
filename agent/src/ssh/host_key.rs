//! SSH host keys pinned on first use: the [`HostKeyStore`] trait, an in-memory store for
//! tests, the OpenSSH-style fingerprint, and the pin decision as a plain function.
//!
//! The driver in [`super`] computes the fingerprint of the key the router presents, asks
//! [`check_pin`] what to do *before* it sends the password, and records the key with
//! [`HostKeyStore::put`] after the first successful login. The durable core backs the trait
//! with sled; nothing here does I/O.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use tikfleet_shared::RouterId;

/// Where the pinned host key fingerprints live, one per router.
///
/// Both methods are fallible: a store that cannot be read must not look like "nothing
/// pinned", or a read error would silently re-pin whatever key is presented.
pub trait HostKeyStore: Send + Sync {
    /// The pinned fingerprint of the router's SSH host key (`SHA256:…`), if any.
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    fn get(&self, router: RouterId) -> Result<Option<String>, HostKeyStoreError>;

    /// Pins `fingerprint` for the router, replacing any earlier pin. The driver calls it on
    /// first use; an operator's re-pin (after verifying a changed key) calls it too.
    ///
    /// # Errors
    ///
    /// When the store cannot be written.
    fn put(&self, router: RouterId, fingerprint: &str) -> Result<(), HostKeyStoreError>;
}

/// A host key store failed to read or write.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("host key store: {0}")]
pub struct HostKeyStoreError(pub String);

/// A [`HostKeyStore`] in memory (tests; agents that accept re-pinning at every start).
#[derive(Debug, Default)]
pub struct MemoryHostKeys {
    pins: Mutex<HashMap<RouterId, String>>,
}

impl MemoryHostKeys {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn pins(&self) -> std::sync::MutexGuard<'_, HashMap<RouterId, String>> {
        // A panic while holding the lock cannot leave the map half-written.
        self.pins.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl HostKeyStore for MemoryHostKeys {
    fn get(&self, router: RouterId) -> Result<Option<String>, HostKeyStoreError> {
        Ok(self.pins().get(&router).cloned())
    }

    fn put(&self, router: RouterId, fingerprint: &str) -> Result<(), HostKeyStoreError> {
        self.pins().insert(router, fingerprint.to_owned());
        Ok(())
    }
}

/// The fingerprint of a host key as OpenSSH prints it: `SHA256:` and the unpadded base64 of
/// the SHA-256 of the public key blob (the wire encoding the server sends in the key exchange).
#[must_use]
pub fn fingerprint(public_key_blob: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public_key_blob);
    format!("SHA256:{}", STANDARD_NO_PAD.encode(digest.as_ref()))
}

/// What to do with the key a router presents, given what is pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinCheck {
    /// Nothing pinned yet: go on, and pin the key after a successful login.
    FirstUse,
    /// The presented key is the pinned one.
    Matches,
    /// The router presents a different key: refuse before sending the password.
    Changed {
        /// The fingerprint pinned earlier.
        pinned: String,
    },
}

/// Compares a presented fingerprint with the pinned one (if any).
#[must_use]
pub fn check_pin(pinned: Option<&str>, presented: &str) -> PinCheck {
    match pinned {
        None => PinCheck::FirstUse,
        Some(pinned) if pinned == presented => PinCheck::Matches,
        Some(pinned) => PinCheck::Changed {
            pinned: pinned.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_openssh_sha256() {
        // `ssh-keygen -lf` of an empty blob would print this: SHA-256 of nothing, unpadded.
        assert_eq!(
            fingerprint(b""),
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }

    #[test]
    fn pin_decisions() {
        assert_eq!(check_pin(None, "SHA256:a"), PinCheck::FirstUse);
        assert_eq!(check_pin(Some("SHA256:a"), "SHA256:a"), PinCheck::Matches);
        assert_eq!(
            check_pin(Some("SHA256:a"), "SHA256:b"),
            PinCheck::Changed {
                pinned: "SHA256:a".into()
            }
        );
    }

    #[test]
    fn memory_store_pins_per_router() {
        let store = MemoryHostKeys::new();
        let (a, b) = (RouterId::new(), RouterId::new());
        assert_eq!(store.get(a), Ok(None));
        store.put(a, "SHA256:x").unwrap();
        assert_eq!(store.get(a), Ok(Some("SHA256:x".into())));
        assert_eq!(store.get(b), Ok(None));
        store.put(a, "SHA256:y").unwrap();
        assert_eq!(store.get(a), Ok(Some("SHA256:y".into())));
    }
}
