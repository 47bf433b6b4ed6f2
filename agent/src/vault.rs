//! The vault: router passwords encrypted at rest.
//!
//! A [`Vault`] seals a password with XChaCha20-Poly1305 under the agent's 32-byte
//! [`VaultKey`], with a fresh random 24-byte nonce per seal and the router's id as associated
//! data, so a ciphertext copied onto another router's record does not open. The
//! [`registry`](crate::registry) stores only [`Sealed`] bytes and unseals when a driver needs a
//! [`RouterEndpoint`](crate::router::RouterEndpoint).
//!
//! The key comes from, in order of precedence ([`load_key`]):
//! 1. the environment variable `TIKFLEET_VAULT_KEY` (base64 or hex of 32 bytes);
//! 2. a systemd credential, `$CREDENTIALS_DIRECTORY/vault-key` (raw 32 bytes, or base64/hex);
//! 3. the key file `vault.key` in the data folder, created with mode 0600 on first run. A key
//!    file that group or others can read is refused.
//!
//! Key bytes and plaintexts live in [`Zeroizing`] buffers and are wiped when dropped. Nothing
//! here prints a key or a password: [`VaultKey`] and [`Sealed`] have redacting `Debug`, and
//! error messages name paths and sources, never contents.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore as _;
use tikfleet_shared::{ErrorCode, RouterId, Secret};
use zeroize::{Zeroize, Zeroizing};

/// The environment variable that supplies the vault key.
pub const KEY_ENV: &str = "TIKFLEET_VAULT_KEY";
/// The systemd credential name, under `$CREDENTIALS_DIRECTORY`.
pub const CREDENTIAL_NAME: &str = "vault-key";
/// The key file's name in the data folder.
pub const KEY_FILE: &str = "vault.key";

/// Format byte of sealed values; bumps if the layout ever changes.
const SEALED_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Domain separation for the associated data.
const AAD_PREFIX: &[u8] = b"tikfleet/vault/v1/router/";

/// An error of the vault.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The key text is neither base64 nor hex of exactly 32 bytes.
    #[error(
        "the vault key from {origin} is invalid: expected 32 bytes as base64 or hex (e.g. `openssl rand -base64 32`)"
    )]
    InvalidKey {
        /// Where it came from.
        origin: String,
    },
    /// The key file can be read by group or others.
    #[error(
        "the vault key file {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}` and make sure only the agent's user owns it"
    )]
    InsecureKeyFile {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Reading or creating the key file failed.
    #[error("cannot {action} the vault key file {path}: {reason}")]
    KeyFile {
        /// `read` or `create`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// A sealed value did not open: wrong key, another router's value, or damaged bytes.
    #[error(
        "cannot unseal the password of router {router}: wrong vault key, a value sealed for another router, or damaged data"
    )]
    Unseal {
        /// The router whose password was being opened.
        router: RouterId,
    },
    /// Sealing failed (should not happen).
    #[error("cannot seal the password of router {router}")]
    Seal {
        /// The router.
        router: RouterId,
    },
}

impl VaultError {
    /// The shared error code for this error.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidKey { .. } | Self::InsecureKeyFile { .. } => ErrorCode::InvalidRequest,
            Self::KeyFile { .. } | Self::Unseal { .. } | Self::Seal { .. } => ErrorCode::Internal,
        }
    }
}

/// The vault's 32-byte key, wiped from memory when dropped.
#[derive(Clone)]
pub struct VaultKey(Zeroizing<[u8; 32]>);

impl VaultKey {
    /// Wraps raw key bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A fresh random key from the operating system's generator.
    #[must_use]
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(key.as_mut());
        Self(key)
    }

    /// Parses base64 (standard or URL-safe, padded or not) or hex of exactly 32 bytes.
    /// `source` names where the text came from, for the error.
    pub fn parse(text: &str, source: &str) -> Result<Self, VaultError> {
        let text = text.trim();
        let invalid = || VaultError::InvalidKey {
            origin: source.to_owned(),
        };
        if text.len() == 64
            && let Some(key) = decode_hex(text)
        {
            return Ok(key);
        }
        let engines = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for engine in engines {
            if let Ok(bytes) = engine.decode(text) {
                let bytes = Zeroizing::new(bytes);
                if let Ok(array) = <[u8; 32]>::try_from(bytes.as_slice()) {
                    return Ok(Self::from_bytes(array));
                }
            }
        }
        Err(invalid())
    }

    /// The key as standard base64 text (for writing the key file).
    #[must_use]
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.0.as_ref()))
    }
}

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VaultKey(<redacted>)")
    }
}

fn decode_hex(text: &str) -> Option<VaultKey> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = Zeroizing::new([0u8; 32]);
    for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        *out.get_mut(i)? = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(VaultKey(out))
}

/// Where the key was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The environment variable [`KEY_ENV`].
    Env,
    /// A systemd credential file.
    Credential(PathBuf),
    /// An existing key file.
    KeyFile(PathBuf),
    /// A key file created just now (first run).
    CreatedKeyFile(PathBuf),
}

/// The places [`load_key`] looks, injectable so tests need not touch the process environment.
#[derive(Clone, Debug)]
pub struct KeySources {
    /// The value of `TIKFLEET_VAULT_KEY`, if set.
    pub env: Option<OsString>,
    /// `$CREDENTIALS_DIRECTORY`, if set.
    pub credentials_dir: Option<PathBuf>,
    /// The agent's data folder (for `vault.key`).
    pub data_dir: PathBuf,
}

impl KeySources {
    /// The sources of this process: its environment and `data_dir`.
    #[must_use]
    pub fn from_env(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            env: std::env::var_os(KEY_ENV),
            credentials_dir: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
            data_dir: data_dir.into(),
        }
    }
}

/// Finds the vault key: environment, then systemd credential, then the key file (created
/// with mode 0600 if missing).
pub fn load_key(sources: &KeySources) -> Result<(VaultKey, KeySource), VaultError> {
    if let Some(value) = &sources.env {
        let text = Zeroizing::new(value.to_string_lossy().into_owned());
        return Ok((VaultKey::parse(&text, KEY_ENV)?, KeySource::Env));
    }
    if let Some(dir) = &sources.credentials_dir {
        let path = dir.join(CREDENTIAL_NAME);
        if path.exists() {
            let bytes = Zeroizing::new(fs::read(&path).map_err(|e| VaultError::KeyFile {
                action: "read",
                path: path.clone(),
                reason: e.to_string(),
            })?);
            // Exactly 32 bytes are the raw key: base64 or hex text of 32 bytes is 43 or more
            // characters long, so the two forms cannot be confused.
            let key = match <[u8; 32]>::try_from(bytes.as_slice()) {
                Ok(raw) => VaultKey::from_bytes(raw),
                Err(_) => {
                    let text = Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
                    VaultKey::parse(&text, &path.display().to_string())?
                }
            };
            return Ok((key, KeySource::Credential(path)));
        }
    }
    let path = sources.data_dir.join(KEY_FILE);
    if path.exists() {
        return Ok((read_key_file(&path)?, KeySource::KeyFile(path)));
    }
    let key = create_key_file(&path)?;
    Ok((key, KeySource::CreatedKeyFile(path)))
}

/// Reads a key file, refusing one that group or others may read.
pub fn read_key_file(path: &Path) -> Result<VaultKey, VaultError> {
    let read_err = |e: std::io::Error| VaultError::KeyFile {
        action: "read",
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mode = fs::metadata(path).map_err(read_err)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(VaultError::InsecureKeyFile {
            path: path.to_owned(),
            mode,
        });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(read_err)?);
    VaultKey::parse(&text, &path.display().to_string())
}

/// Creates a new key file with mode 0600 (fails if it exists) holding a fresh key.
pub fn create_key_file(path: &Path) -> Result<VaultKey, VaultError> {
    let create_err = |e: std::io::Error| VaultError::KeyFile {
        action: "create",
        path: path.to_owned(),
        reason: e.to_string(),
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(create_err)?;
    }
    let key = VaultKey::generate();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(create_err)?;
    // The umask cannot widen 0600, but an odd filesystem might: check what we got.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(create_err)?;
    let mut text = key.to_base64();
    text.push('\n');
    file.write_all(text.as_bytes()).map_err(create_err)?;
    file.sync_all().map_err(create_err)?;
    tracing::info!(path = %path.display(), "created a new vault key file");
    Ok(key)
}

/// A sealed password: format byte, 24-byte nonce, ciphertext with its 16-byte tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed(Vec<u8>);

impl Sealed {
    /// Wraps stored bytes (checked when unsealed).
    #[must_use]
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes to store.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({} bytes)", self.0.len())
    }
}

/// Seals and unseals router passwords under one key.
#[derive(Clone)]
pub struct Vault {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Vault(<key redacted>)")
    }
}

fn aad(router: RouterId) -> Vec<u8> {
    let mut aad = AAD_PREFIX.to_vec();
    aad.extend_from_slice(router.as_bytes());
    aad
}

impl Vault {
    /// A vault using `key`.
    #[must_use]
    pub fn new(key: &VaultKey) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(key.0.as_ref().into()),
        }
    }

    /// Encrypts `password` for `router` with a fresh random nonce.
    pub fn seal(&self, router: RouterId, password: &Secret) -> Result<Sealed, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = aad(router);
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: password.expose().as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Seal { router })?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(Sealed(out))
    }

    /// Decrypts a password sealed for `router`.
    pub fn unseal(&self, router: RouterId, sealed: &Sealed) -> Result<Secret, VaultError> {
        let err = || VaultError::Unseal { router };
        let bytes = sealed.as_bytes();
        if bytes.len() < 1 + NONCE_LEN + TAG_LEN || bytes[0] != SEALED_V1 {
            return Err(err());
        }
        let (nonce, ciphertext) = bytes[1..].split_at(NONCE_LEN);
        let aad = aad(router);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| err())?;
        // `from_utf8` reuses the buffer, so the plaintext is not copied; on failure the
        // buffer comes back and is wiped.
        match String::from_utf8(plain) {
            Ok(text) => Ok(Secret::new(text)),
            Err(e) => {
                e.into_bytes().zeroize();
                Err(err())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_hex_and_base64_and_rejects_the_rest() {
        let key = [0xabu8; 32];
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
        for text in [
            hex.as_str(),
            &hex.to_uppercase(),
            &b64,
            &url,
            &format!(" {b64}\n"),
        ] {
            let parsed = VaultKey::parse(text, "test").unwrap();
            assert_eq!(*parsed.0, key, "{text}");
        }
        for bad in [
            "",
            "zz",
            &hex[..62],
            &base64::engine::general_purpose::STANDARD.encode([1u8; 31]),
        ] {
            let err = VaultKey::parse(bad, "test").unwrap_err();
            assert!(matches!(err, VaultError::InvalidKey { .. }), "{bad}");
        }
    }

    #[test]
    fn debug_output_never_shows_key_or_ciphertext() {
        let key = VaultKey::from_bytes([0x41; 32]);
        assert_eq!(format!("{key:?}"), "VaultKey(<redacted>)");
        let vault = Vault::new(&key);
        assert_eq!(format!("{vault:?}"), "Vault(<key redacted>)");
        let sealed = vault.seal(RouterId::new(), &Secret::new("pw")).unwrap();
        assert_eq!(format!("{sealed:?}"), "Sealed(43 bytes)");
    }

    #[test]
    fn damaged_or_short_values_do_not_open() {
        let vault = Vault::new(&VaultKey::generate());
        let router = RouterId::new();
        let sealed = vault.seal(router, &Secret::new("pw")).unwrap();
        for len in [0, 1, 20, sealed.as_bytes().len() - 1] {
            let cut = Sealed::from_bytes(sealed.as_bytes()[..len].to_vec());
            assert!(vault.unseal(router, &cut).is_err());
        }
        let mut flipped = sealed.as_bytes().to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(vault.unseal(router, &Sealed::from_bytes(flipped)).is_err());
    }
}
