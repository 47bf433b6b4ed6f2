//! Sealed boxes: how a router password entered at the controller reaches one agent, and only
//! that agent.
//!
//! At enrollment the agent makes an X25519 key pair and gives the controller the public half
//! (its *seal key*). The controller [`seal`]s a password to it and stores only the result; only
//! the agent's secret half [`open`]s it. An anonymous sealed box (X25519 + XSalsa20-Poly1305,
//! libsodium's `crypto_box_seal` construction, through the `crypto_box` crate) needs no key on
//! the sending side, so the controller holds nothing that could open what it stored.

use crypto_box::aead::OsRng;
use zeroize::Zeroizing;

/// Length of a seal key (an X25519 public key) and of its secret half.
pub const KEY_LEN: usize = 32;

/// Why sealing or opening failed. Carries no secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// A key is not 32 bytes.
    #[error("a seal key is {KEY_LEN} bytes, this one is {0}")]
    KeyLength(usize),
    /// The box was not sealed to this key, or was changed.
    #[error(
        "the sealed value cannot be opened with this agent's key (sealed to another agent, or damaged)"
    )]
    Open,
    /// Sealing failed (the system's random source).
    #[error("cannot seal: {0}")]
    Seal(String),
}

/// A fresh key pair: `(secret, public)`. The secret half is zeroized when dropped.
#[must_use]
pub fn generate() -> (Zeroizing<[u8; KEY_LEN]>, [u8; KEY_LEN]) {
    let secret = crypto_box::SecretKey::generate(&mut OsRng);
    let public = *secret.public_key().as_bytes();
    (Zeroizing::new(secret.to_bytes()), public)
}

/// The public half of a secret seal key.
#[must_use]
pub fn public_of(secret: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    *crypto_box::SecretKey::from_bytes(*secret)
        .public_key()
        .as_bytes()
}

fn key(bytes: &[u8]) -> Result<[u8; KEY_LEN], SealError> {
    bytes
        .try_into()
        .map_err(|_| SealError::KeyLength(bytes.len()))
}

/// Seal `plaintext` to the holder of `public_key`'s secret half.
///
/// # Errors
/// The key is not 32 bytes, or the random source failed.
pub fn seal(public_key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let public = crypto_box::PublicKey::from_bytes(key(public_key)?);
    public
        .seal(&mut OsRng, plaintext)
        .map_err(|e| SealError::Seal(e.to_string()))
}

/// Open a value sealed to `secret_key`'s public half. The plaintext is zeroized when dropped.
///
/// # Errors
/// The key is not 32 bytes, or the box was sealed to another key or changed.
pub fn open(secret_key: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let secret = crypto_box::SecretKey::from_bytes(key(secret_key)?);
    secret
        .unseal(sealed)
        .map(Zeroizing::new)
        .map_err(|_| SealError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owner_opens() {
        let (secret, public) = generate();
        assert_eq!(public_of(&secret), public);
        let sealed = seal(&public, b"router-pw").unwrap();
        assert!(!sealed.windows(9).any(|w| w == b"router-pw"));
        assert_eq!(open(&secret[..], &sealed).unwrap().as_slice(), b"router-pw");

        let (other, _) = generate();
        assert_eq!(open(&other[..], &sealed), Err(SealError::Open));
        let mut changed = sealed.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert_eq!(open(&secret[..], &changed), Err(SealError::Open));
        assert_eq!(seal(&public[..5], b"x"), Err(SealError::KeyLength(5)));
    }

    #[test]
    fn two_seals_differ() {
        let (_, public) = generate();
        assert_ne!(seal(&public, b"pw").unwrap(), seal(&public, b"pw").unwrap());
    }
}
