//! API-SSL: a self-signed certificate made at startup and the rustls acceptor (ring provider).
//!
//! The certificate names `127.0.0.1` and `localhost` (CN and SANs). Its DER, PEM and SHA-256
//! fingerprint are exposed so clients can pin it.

use std::sync::Arc;

use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("generating the certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("configuring tls: {0}")]
    Config(#[from] rustls::Error),
}

/// The certificate clients can pin.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// DER bytes.
    pub der: Vec<u8>,
    /// PEM text.
    pub pem: String,
    /// SHA-256 of the DER, lowercase hex.
    pub sha256: String,
}

/// Generates the certificate and builds the acceptor.
pub fn setup() -> Result<(TlsAcceptor, CertInfo), TlsError> {
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let der = cert.der().to_vec();
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    let sha256 = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let info = CertInfo {
        der: der.clone(),
        pem: cert.pem(),
        sha256,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(der)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    Ok((TlsAcceptor::from(Arc::new(config)), info))
}
