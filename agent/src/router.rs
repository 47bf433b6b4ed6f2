//! A router the agent serves: where it is, how to reach it, and with which credentials.
//!
//! The drivers (`routeros`, `ssh`) take a [`RouterEndpoint`]; the vault stores its password
//! encrypted and hands it out only to build one.

use tikfleet_shared::{RouterId, Secret, TenantId};

/// How the RouterOS API connection is secured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain API (8728): the password crosses the network in clear text. Only for a site
    /// network the agent alone can reach.
    Plain,
    /// API-SSL (8729), verifying the router's certificate against these roots (PEM). The
    /// system's web PKI roots are not used: routers carry certificates of the operator's CA.
    Verify {
        /// PEM certificates to trust.
        ca_pem: String,
        /// The name to check the certificate against (an IP address or DNS name).
        server_name: String,
    },
    /// API-SSL, accepting exactly the certificate with this SHA-256 fingerprint (lowercase hex
    /// of the DER): for the self-signed certificates routers usually have.
    Pin {
        /// Lowercase hex SHA-256 of the certificate's DER.
        sha256: String,
    },
}

/// Everything needed to talk to one router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterEndpoint {
    /// The router's id.
    pub id: RouterId,
    /// Its tenant.
    pub tenant: TenantId,
    /// A name for people (`core-1`).
    pub name: String,
    /// Host name or IP address.
    pub host: String,
    /// API or API-SSL port.
    pub api_port: u16,
    /// SSH port.
    pub ssh_port: u16,
    /// How the API connection is secured.
    pub tls: TlsMode,
    /// The API/SSH user.
    pub username: String,
    /// Its password (from the vault).
    pub password: Secret,
}
