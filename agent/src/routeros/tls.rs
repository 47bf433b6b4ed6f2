//! API-SSL client configurations (rustls, ring provider) for [`TlsMode`].
//!
//! `Verify` checks the router's certificate chain and name against the operator's CA (no web
//! PKI roots). `Pin` accepts exactly one certificate, by the SHA-256 of its DER, for the
//! self-signed certificates routers usually carry: [`PinVerifier`] skips chain and name
//! checks but still verifies the handshake signatures, so a peer must hold the pinned
//! certificate's private key.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tikfleet_shared::ErrorCode;

use super::DriverError;
use crate::router::TlsMode;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(message: String) -> DriverError {
    DriverError::new(ErrorCode::InvalidRequest, message)
}

/// Lowercase hex of the SHA-256 of `der`.
#[must_use]
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Normalises a pinned fingerprint: lowercase, without `:` or spaces; 64 hex digits.
///
/// # Errors
///
/// `invalid_request` when it is not a SHA-256 fingerprint.
pub fn normalize_pin(pin: &str) -> Result<String, DriverError> {
    let hex: String = pin
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(invalid(format!(
            "the pinned certificate fingerprint {pin:?} is not a SHA-256 (64 hex digits)"
        )));
    }
    Ok(hex)
}

/// The rustls configuration and server name for a TLS mode; `None` for plain API.
///
/// # Errors
///
/// `invalid_request` for an unreadable CA PEM, an empty CA, a bad server name or pin.
pub fn client_config(
    mode: &TlsMode,
    host: &str,
) -> Result<Option<(Arc<ClientConfig>, ServerName<'static>)>, DriverError> {
    let builder = |p: Arc<CryptoProvider>| {
        ClientConfig::builder_with_provider(p)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("tls: {e}")))
    };
    match mode {
        TlsMode::Plain => Ok(None),
        TlsMode::Verify {
            ca_pem,
            server_name,
        } => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
                let cert = cert.map_err(|e| invalid(format!("tls: unreadable CA PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| invalid(format!("tls: unusable CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(invalid("tls: the CA PEM holds no certificate".into()));
            }
            let name = ServerName::try_from(server_name.clone())
                .map_err(|e| invalid(format!("tls: {server_name:?} is not a server name: {e}")))?;
            let config = builder(provider())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Some((Arc::new(config), name)))
        }
        TlsMode::Pin { sha256 } => {
            let pin = normalize_pin(sha256)?;
            let p = provider();
            let config = builder(p.clone())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinVerifier { pin, provider: p }))
                .with_no_client_auth();
            // The name is not checked with a pin; SNI gets the host when it is a DNS name.
            let name = ServerName::try_from(host.to_owned())
                .unwrap_or_else(|_| ServerName::try_from("mikrotik").expect("valid dns name"));
            Ok(Some((Arc::new(config), name)))
        }
    }
}

/// The pinned certificate was not the one presented.
#[derive(Debug, thiserror::Error)]
#[error("certificate sha256 {actual} does not match the pinned {expected}")]
struct PinMismatch {
    expected: String,
    actual: String,
}

/// Accepts exactly the certificate with the pinned SHA-256; verifies handshake signatures.
#[derive(Debug)]
pub struct PinVerifier {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual = fingerprint(end_entity.as_ref());
        // A fingerprint is public: no need for a constant-time comparison.
        if actual == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch {
                    expected: self.pin.clone(),
                    actual,
                }))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_normalized_and_checked() {
        let hex = "AB".repeat(32);
        assert_eq!(normalize_pin(&hex).unwrap(), "ab".repeat(32));
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(normalize_pin(&colons).unwrap(), "ab".repeat(32));
        for bad in ["", "abc", &"zz".repeat(32), &"ab".repeat(33)] {
            assert_eq!(
                normalize_pin(bad).unwrap_err().code(),
                ErrorCode::InvalidRequest
            );
        }
    }

    #[test]
    fn bad_verify_inputs_are_refused() {
        let mode = TlsMode::Verify {
            ca_pem: "not a pem".into(),
            server_name: "localhost".into(),
        };
        assert_eq!(
            client_config(&mode, "h").unwrap_err().code(),
            ErrorCode::InvalidRequest
        );
        assert!(client_config(&TlsMode::Plain, "h").unwrap().is_none());
    }
}
