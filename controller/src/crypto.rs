//! Secrets at rest and bearer tokens.
//!
//! [`AtRestKey`] encrypts what the controller must be able to read back but must not keep in
//! plain text (subscriber passwords, job operations that carry them) with XChaCha20-Poly1305.
//! Each value is bound to where it lives by associated data (`"subscriber.password:<id>"`),
//! so a ciphertext copied into another row does not open. The key comes from
//! `TIKFLEET_CONTROLLER_KEY` (base64, 32 bytes) or from a `0600` key file in the data folder,
//! created on first run.
//!
//! Tokens (staff and enrollment) are 256-bit random values shown once; the database keeps
//! only their SHA-256 ([`token_hash`]), which is enough because they are not guessable.
//! Router passwords never pass through here: they are sealed to the agent
//! (`tikfleet_shared::seal`) and the controller cannot open them.

use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// The environment variable that may hold the at-rest key (base64 of 32 bytes).
pub const KEY_ENV: &str = "TIKFLEET_CONTROLLER_KEY";
/// The key file's name in the data folder.
pub const KEY_FILE: &str = "controller.key";

const NONCE_LEN: usize = 24;

/// Why a key could not be loaded or a value not opened. Carries no secret.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key is not base64 of 32 bytes.
    #[error("the controller key is not base64 of 32 bytes ({0})")]
    BadKey(&'static str),
    /// Reading or creating the key file failed.
    #[error("controller key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A stored ciphertext does not open with this key (wrong key, or changed).
    #[error("a stored secret cannot be decrypted (wrong controller key, or the value was changed)")]
    Open,
    /// The system's random source failed.
    #[error("the system random source failed")]
    Random,
}

/// The controller's symmetric key for secrets at rest.
#[derive(Clone)]
pub struct AtRestKey {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for AtRestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AtRestKey(<redacted>)")
    }
}

impl AtRestKey {
    /// A key from its 32 bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            key: Zeroizing::new(bytes),
        }
    }

    /// A fresh random key.
    ///
    /// # Errors
    /// The system random source failed.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = [0u8; 32];
        random_bytes(&mut bytes)?;
        Ok(Self::from_bytes(bytes))
    }

    /// A key from base64 text (standard alphabet, padding optional).
    ///
    /// # Errors
    /// Not base64, or not 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let text = text.trim();
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
                .map_err(|_| CryptoError::BadKey("not base64"))?,
        );
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::BadKey("wrong length"))?;
        Ok(Self::from_bytes(bytes))
    }

    /// The key from `TIKFLEET_CONTROLLER_KEY` if set, otherwise from `data_dir/controller.key`,
    /// which is created (mode 0600) with a fresh key when missing.
    ///
    /// # Errors
    /// The variable or file holds no valid key, or the file cannot be read or created.
    pub fn load(data_dir: &Path) -> Result<Self, CryptoError> {
        let from_env = std::env::var(KEY_ENV).ok().map(Zeroizing::new);
        Self::load_with(from_env.as_deref().map(String::as_str), data_dir)
    }

    /// Like [`load`](Self::load), with the variable's value passed in.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn load_with(from_env: Option<&str>, data_dir: &Path) -> Result<Self, CryptoError> {
        if let Some(text) = from_env {
            return Self::from_base64(text);
        }
        let path = data_dir.join(KEY_FILE);
        let io = |source| CryptoError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_base64(&Zeroizing::new(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt as _;
                    options.mode(0o600);
                }
                let mut file = options.open(&path).map_err(io)?;
                let text = Zeroizing::new(STANDARD.encode(key.key.as_slice()));
                file.write_all(text.as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok(key)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Encrypts `plaintext` bound to `context`; the result is base64 of nonce and ciphertext.
    ///
    /// # Errors
    /// The random source failed.
    pub fn encrypt(&self, context: &str, plaintext: &[u8]) -> Result<String, CryptoError> {
        let cipher = XChaCha20Poly1305::new(self.key.as_slice().into());
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Random)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(STANDARD.encode(out))
    }

    /// Opens what [`encrypt`](Self::encrypt) made for the same `context`.
    ///
    /// # Errors
    /// Not base64, too short, another key or context, or changed.
    pub fn decrypt(&self, context: &str, stored: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let bytes = STANDARD.decode(stored).map_err(|_| CryptoError::Open)?;
        if bytes.len() < NONCE_LEN {
            return Err(CryptoError::Open);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new(self.key.as_slice().into());
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: context.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Open)
    }
}

/// Fills `out` from the system's CSPRNG.
///
/// # Errors
/// The random source failed.
pub fn random_bytes(out: &mut [u8]) -> Result<(), CryptoError> {
    SystemRandom::new()
        .fill(out)
        .map_err(|_| CryptoError::Random)
}

/// A new bearer token: `prefix` and 32 random bytes, base64url. Shown once, stored hashed.
///
/// # Errors
/// The random source failed.
pub fn new_token(prefix: &str) -> Result<String, CryptoError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    random_bytes(bytes.as_mut_slice())?;
    Ok(format!(
        "{prefix}{}",
        URL_SAFE_NO_PAD.encode(bytes.as_slice())
    ))
}

/// What the database keeps of a token: its SHA-256, lowercase hex.
#[must_use]
pub fn token_hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_bound_to_key_and_context() {
        let key = AtRestKey::generate().unwrap();
        let stored = key.encrypt("subscriber.password:1", b"hunter2").unwrap();
        assert!(!stored.contains("hunter2"));
        assert_eq!(
            key.decrypt("subscriber.password:1", &stored)
                .unwrap()
                .as_slice(),
            b"hunter2"
        );
        assert!(key.decrypt("subscriber.password:2", &stored).is_err());
        let other = AtRestKey::generate().unwrap();
        assert!(other.decrypt("subscriber.password:1", &stored).is_err());
        assert!(key.decrypt("x", "not base64!").is_err());
        assert!(key.decrypt("x", "AAAA").is_err());
    }

    #[test]
    fn key_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let a = AtRestKey::load_with(None, dir.path()).unwrap();
        let b = AtRestKey::load_with(None, dir.path()).unwrap();
        let stored = a.encrypt("c", b"v").unwrap();
        assert_eq!(b.decrypt("c", &stored).unwrap().as_slice(), b"v");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn the_variable_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = STANDARD.encode([7u8; 32]);
        let a = AtRestKey::load_with(Some(&text), dir.path()).unwrap();
        assert!(!dir.path().join(KEY_FILE).exists());
        let stored = a.encrypt("c", b"v").unwrap();
        let b = AtRestKey::from_bytes([7u8; 32]);
        assert_eq!(b.decrypt("c", &stored).unwrap().as_slice(), b"v");
        assert!(AtRestKey::load_with(Some("nope"), dir.path()).is_err());
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(AtRestKey::from_base64("short").is_err());
        assert!(AtRestKey::from_base64(&STANDARD.encode([1u8; 31])).is_err());
        assert!(AtRestKey::from_base64(&STANDARD.encode([1u8; 32])).is_ok());
    }

    #[test]
    fn tokens_are_random_and_hash_to_hex() {
        let a = new_token("tfs_").unwrap();
        let b = new_token("tfs_").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("tfs_") && a.len() == 4 + 43);
        let h = token_hash(&a);
        assert_eq!(h.len(), 64);
        assert_eq!(h, token_hash(&a));
        assert_ne!(h, token_hash(&b));
    }
}
