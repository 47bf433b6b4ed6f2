//! [`Secret`]: a password or key that must not leak through logs.
//!
//! `Debug` and `Display` print `<redacted>`; the only way to read the value is
//! [`Secret::expose`], which makes every read easy to find in review. Its memory is zeroized
//! when it is dropped.
//!
//! On the wire a secret serializes as its plain string. That is deliberate: the protocol runs
//! inside TLS and the agent needs the PPP / hotspot password to configure the router. It also
//! means a `Secret` must never be put into an HTTP response or an audit record as is: the
//! controller maps wire types to its own API DTOs, and audit params go through
//! [`AuditParams`](crate::record::AuditParams), which redacts them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What redacted values print as.
pub const REDACTED: &str = "<redacted>";

/// A string that prints as `<redacted>`. Serializes as the plain string (see module docs).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Reads the secret. Call only where the value is really needed (router commands).
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// The value is wiped from memory when the secret is dropped (clones wipe their own copy).
impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_do_not_show_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(secret.to_string(), "<redacted>");
        assert!(!format!("{secret:#?}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn serializes_as_the_plain_string() {
        let secret = Secret::new("pw");
        let bytes = rmp_serde::to_vec(&secret).unwrap();
        assert_eq!(bytes, rmp_serde::to_vec("pw").unwrap());
        assert_eq!(rmp_serde::from_slice::<Secret>(&bytes).unwrap(), secret);
    }
}
