//! The hub's TLS: a certificate and key from PEM files in production, or a self-signed
//! certificate made at startup for the demo and tests.
//!
//! A self-signed hub hands its certificate (PEM) to agents in the enrollment response
//! (`EnrollResponse::hub_ca_pem`), and agents trust exactly that certificate from then on; its
//! SHA-256 is shown to people who want to compare fingerprints. A hub with a certificate from a
//! CA the agents already trust gives them nothing ([`HubTls::ca_pem`] is `None`).
//!
//! rustls with the ring provider, TLS 1.2 and 1.3, no client certificates: agents prove who
//! they are inside the WebSocket (a signed challenge, see [`conn`](super::conn)).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// Why the hub's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot use the {what} file {path}: {reason}")]
    File {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: String,
        /// What is wrong (never the key's contents).
        reason: String,
    },
    /// The self-signed certificate could not be generated.
    #[error("cannot generate the hub's self-signed certificate: {0}")]
    Generate(String),
    /// rustls refused the certificate and key.
    #[error("the hub's certificate and key do not work together: {0}")]
    Config(String),
}

/// The self-signed certificate agents pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfSigned {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// SHA-256 of its DER, lowercase hex.
    pub sha256: String,
}

/// The hub's server TLS configuration.
#[derive(Clone)]
pub struct HubTls {
    config: Arc<rustls::ServerConfig>,
    self_signed: Option<SelfSigned>,
}

impl std::fmt::Debug for HubTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubTls")
            .field("self_signed", &self.self_signed.as_ref().map(|s| &s.sha256))
            .finish_non_exhaustive()
    }
}

/// Lowercase hex SHA-256 of `der`.
#[must_use]
pub fn sha256_hex(der: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsSetupError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

impl HubTls {
    /// A certificate chain and private key from PEM files (production).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsSetupError> {
        let file_err = |what, path: &Path, reason: String| TlsSetupError::File {
            what,
            path: path.display().to_string(),
            reason,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| file_err("certificate", cert, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_err("certificate", cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(file_err(
                "certificate",
                cert,
                "it holds no certificate".to_owned(),
            ));
        }
        // The key's own error text never includes key material.
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| file_err("private key", key, e.to_string()))?;
        Ok(Self {
            config: server_config(chain, key_der)?,
            self_signed: None,
        })
    }

    /// A fresh self-signed certificate for `names` (DNS names or IP addresses), e.g.
    /// `["localhost", "127.0.0.1"]`. Its PEM goes to agents at enrollment.
    pub fn self_signed(names: &[String]) -> Result<Self, TlsSetupError> {
        let generate = |e: rcgen::Error| TlsSetupError::Generate(e.to_string());
        let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(generate)?;
        let common_name = names
            .first()
            .cloned()
            .unwrap_or_else(|| "tikfleet-hub".to_owned());
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let key = rcgen::KeyPair::generate().map_err(generate)?;
        let cert = params.self_signed(&key).map_err(generate)?;
        let der = cert.der().to_vec();
        let self_signed = SelfSigned {
            cert_pem: cert.pem(),
            sha256: sha256_hex(&der),
        };
        let config = server_config(
            vec![CertificateDer::from(der)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
        Ok(Self {
            config,
            self_signed: Some(self_signed),
        })
    }

    /// The certificate agents must trust when it is self-signed (for the enrollment
    /// response); `None` for a certificate from a CA.
    #[must_use]
    pub fn ca_pem(&self) -> Option<&str> {
        self.self_signed.as_ref().map(|s| s.cert_pem.as_str())
    }

    /// SHA-256 of the self-signed certificate, lowercase hex.
    #[must_use]
    pub fn sha256(&self) -> Option<&str> {
        self.self_signed.as_ref().map(|s| s.sha256.as_str())
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_exposes_pem_and_fingerprint() {
        let tls = HubTls::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let pem = tls.ca_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(tls.sha256().unwrap(), sha256_hex(&der));
        assert_eq!(tls.sha256().unwrap().len(), 64);
    }

    #[test]
    fn pem_files_are_read_and_bad_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["hub.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_path = dir.path().join("hub.pem");
        let key_path = dir.path().join("hub.key");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let tls = HubTls::from_pem_files(&cert_path, &key_path).unwrap();
        assert!(tls.ca_pem().is_none());

        std::fs::write(&key_path, "not a key").unwrap();
        let err = HubTls::from_pem_files(&cert_path, &key_path).unwrap_err();
        assert!(err.to_string().contains("private key"), "{err}");
        let err = HubTls::from_pem_files(&dir.path().join("missing.pem"), &key_path).unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
    }
}
