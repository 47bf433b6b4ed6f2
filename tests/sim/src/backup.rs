//! `/system/backup` files: a serialized snapshot of the configuration, optionally encrypted.
//!
//! The format is the simulator's own (a real `.backup` is an opaque binary): a magic line,
//! then either the JSON snapshot in the clear (`dont-encrypt=yes`) or a random salt and nonce
//! and the snapshot sealed with ChaCha20-Poly1305 under a PBKDF2-HMAC-SHA256 key derived from
//! the password, so loading with a wrong password fails as on a real router.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::device::Device;
use crate::model::Row;

const PLAIN: &[u8] = b"TIKFLEET-SIM-BACKUP 1 plain\n";
const SEALED: &[u8] = b"TIKFLEET-SIM-BACKUP 1 sealed\n";

/// Why a backup cannot be loaded. The messages are what the router traps with ([U]: the real
/// wording is unconfirmed).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Not a backup file.
    #[error("failure: not a backup file")]
    Format,
    /// The password does not open it.
    #[error("failure: wrong password")]
    Password,
}

/// The serialized configuration (a file format, hence serde).
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    identity: String,
    tables: BTreeMap<String, TableSnap>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TableSnap {
    next_id: u32,
    rows: Vec<RowSnap>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RowSnap {
    id: u32,
    builtin: bool,
    fields: Vec<(String, String)>,
}

fn key(password: &str, salt: &[u8]) -> LessSafeKey {
    let mut k = [0u8; 32];
    let iterations = NonZeroU32::new(10_000).unwrap_or(NonZeroU32::MIN);
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.as_bytes(),
        &mut k,
    );
    // A 32-byte key is always valid for ChaCha20-Poly1305.
    LessSafeKey::new(
        UnboundKey::new(&aead::CHACHA20_POLY1305, &k).unwrap_or_else(|_| unreachable!()),
    )
}

/// Serializes the device's configuration (sessions, files and counters are not part of it).
pub fn save(dev: &Device, password: Option<&str>) -> Vec<u8> {
    let mut tables = BTreeMap::new();
    for (path, t) in &dev.tables {
        if *path == crate::menus::FILE {
            continue;
        }
        let rows = t
            .rows()
            .filter(|r| r.expires.is_none())
            .map(|r| RowSnap {
                id: r.id,
                builtin: r.builtin,
                fields: t
                    .spec
                    .fields
                    .iter()
                    .enumerate()
                    .filter_map(|(i, f)| r.get(i).map(|v| (f.name.to_string(), v.to_string())))
                    .collect(),
            })
            .collect();
        tables.insert(
            path.to_string(),
            TableSnap {
                next_id: t.next_id(),
                rows,
            },
        );
    }
    let snap = Snapshot {
        identity: dev.identity.clone(),
        tables,
    };
    let json = serde_json::to_vec(&snap).unwrap_or_default();
    match password {
        None => [PLAIN, &json].concat(),
        Some(pw) => {
            let rng = SystemRandom::new();
            let mut salt = [0u8; 16];
            let mut nonce = [0u8; 12];
            let _ = rng.fill(&mut salt);
            let _ = rng.fill(&mut nonce);
            let mut data = json;
            let _ = key(pw, &salt).seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut data,
            );
            [SEALED, &salt, &nonce, &data].concat()
        }
    }
}

/// Opens a backup file with a password (ignored for unencrypted backups).
pub fn open(data: &[u8], password: &str) -> Result<Snapshot, BackupError> {
    let json = if let Some(rest) = data.strip_prefix(PLAIN) {
        rest.to_vec()
    } else if let Some(rest) = data.strip_prefix(SEALED) {
        if rest.len() < 28 {
            return Err(BackupError::Format);
        }
        let (salt, rest) = rest.split_at(16);
        let (nonce, sealed) = rest.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| BackupError::Format)?;
        let mut buf = sealed.to_vec();
        let plain = key(password, salt)
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| BackupError::Password)?;
        plain.to_vec()
    } else {
        return Err(BackupError::Format);
    };
    serde_json::from_slice(&json).map_err(|_| BackupError::Format)
}

/// Replaces the device's configuration with a snapshot (the caller then reboots). A snapshot
/// that is not a consistent configuration (two rows with one id or one name) is refused as
/// [`BackupError::Format`] and nothing changes: every table is rebuilt before any is replaced.
pub fn restore(dev: &mut Device, snap: Snapshot) -> Result<(), BackupError> {
    let mut tables = Vec::new();
    for (path, ts) in snap.tables {
        // Files are not part of a backup (`save` skips them).
        let Some((&key, t)) = dev
            .tables
            .get_key_value(path.as_str())
            .filter(|(k, _)| **k != crate::menus::FILE)
        else {
            continue;
        };
        let spec = t.spec.clone();
        let rows = ts
            .rows
            .into_iter()
            .map(|r| {
                let mut vals = vec![None; spec.fields.len()];
                for (k, v) in r.fields {
                    if let Some(i) = spec.field_index(&k) {
                        vals[i] = Some(v);
                    }
                }
                Row {
                    id: r.id,
                    vals,
                    builtin: r.builtin,
                    expires: None,
                }
            })
            .collect();
        tables.push((
            key,
            t.restored(rows, ts.next_id).ok_or(BackupError::Format)?,
        ));
    }
    dev.identity = snap.identity;
    dev.tables.extend(tables);
    Ok(())
}
