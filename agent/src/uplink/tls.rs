//! The agent's TLS client configuration for the controller (enrollment, key rotation and the
//! hub's WebSocket): which certificates it trusts.
//!
//! - A self-signed hub: exactly the certificate the enrollment response carried.
//! - `--ca-file` at enrollment (kept with the identity): those CA certificates.
//! - Otherwise the operating system's CA certificates (a controller with a public certificate).
//!
//! rustls with the ring provider; the same configuration serves reqwest (enrollment) and
//! tokio-tungstenite (the hub).

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why a TLS configuration could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsConfigError {
    /// A PEM holds no usable certificate.
    #[error("the {what} holds no usable certificate: {reason}")]
    BadPem {
        /// Which PEM (`hub certificate`, `CA file`).
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The operating system's certificates could not be loaded.
    #[error("cannot load the system's CA certificates: {0}")]
    SystemRoots(String),
}

fn add_pem(
    roots: &mut rustls::RootCertStore,
    pem: &str,
    what: &'static str,
) -> Result<(), TlsConfigError> {
    let bad = |reason: String| TlsConfigError::BadPem { what, reason };
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(bad("no certificate in it".into()));
    }
    Ok(())
}

/// A client configuration trusting `hub_ca_pem` and `ca_pem` when given, else the system's
/// CA certificates.
pub fn client_config(
    hub_ca_pem: Option<&str>,
    ca_pem: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = hub_ca_pem {
        add_pem(&mut roots, pem, "hub certificate")?;
    }
    if let Some(pem) = ca_pem {
        add_pem(&mut roots, pem, "CA file")?;
    }
    if roots.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty()
            && let Some(e) = found.errors.first()
        {
            return Err(TlsConfigError::SystemRoots(e.to_string()));
        }
        let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsConfigError::SystemRoots(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pems_are_refused_and_good_ones_accepted() {
        let key = rcgen::KeyPair::generate().unwrap();
        let hub = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert!(client_config(Some(&hub.pem()), None).is_ok());
        assert!(matches!(
            client_config(Some("not a pem"), None),
            Err(TlsConfigError::BadPem {
                what: "hub certificate",
                ..
            })
        ));
        assert!(matches!(
            client_config(None, Some("")),
            Err(TlsConfigError::BadPem {
                what: "CA file",
                ..
            })
        ));
    }
}
