//! The JSON an agent and the controller exchange over HTTPS to enroll and to rotate the agent's
//! identity key (outside the WebSocket, which needs an identity first).
//!
//! - `POST /api/v1/agents/enroll` with an [`EnrollRequest`] (no bearer token: the one-time
//!   enrollment token in the body is the authority) answers an [`EnrollResponse`].
//! - `POST /api/v1/agents/{agent_id}/keys` with a [`RotateKeyRequest`], signed by the current
//!   key over [`rotate_signing_payload`], answers a [`RotateKeyResponse`]; the old key stops
//!   working at once.
//!
//! Keys travel as standard base64 (with padding): identity keys are Ed25519 public keys (32
//! bytes), seal keys X25519 public keys (32 bytes, see [`seal`](crate::seal)).

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, TenantId};

/// The agent asks to join its tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time enrollment token staff created for the tenant.
    pub token: String,
    /// A name for the agent (defaults to the host name on the agent's side).
    pub name: String,
    /// Ed25519 identity public key, base64.
    pub public_key: String,
    /// X25519 seal public key, base64: router passwords are sealed to it.
    pub seal_key: String,
    /// The agent's software version.
    pub agent_version: String,
}

/// The controller accepted the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The agent's id from now on.
    pub agent_id: AgentId,
    /// The tenant it serves.
    pub tenant_id: TenantId,
    /// The id of the registered identity key (named in each hello's proof).
    pub key_id: String,
    /// Where to open the WebSocket, e.g. `wss://controller.example:7443/agent`.
    pub hub_url: String,
    /// The hub's certificate (PEM) when it is self-signed, so the agent can pin it; `None`
    /// when the hub has a certificate from a CA the agent already trusts.
    pub hub_ca_pem: Option<String>,
}

/// The agent replaces its identity key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// The current key's id.
    pub key_id: String,
    /// The new Ed25519 public key, base64.
    pub new_public_key: String,
    /// When the agent signed (Unix milliseconds); the controller refuses a skew over 5 minutes.
    pub signed_at: u64,
    /// Ed25519 signature by the current key over [`rotate_signing_payload`], base64.
    pub signature: String,
}

/// The new key is registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateKeyResponse {
    /// The new key's id.
    pub key_id: String,
}

/// The bytes the current key signs to rotate: a domain-separation tag, the agent id, the new
/// public key (raw bytes) and the signing time (big-endian milliseconds).
#[must_use]
pub fn rotate_signing_payload(agent_id: AgentId, new_public_key: &[u8], signed_at: u64) -> Vec<u8> {
    const TAG: &[u8] = b"tikfleet-rotate-key-v1\0";
    let mut out = Vec::with_capacity(TAG.len() + 16 + new_public_key.len() + 8);
    out.extend_from_slice(TAG);
    out.extend_from_slice(agent_id.as_bytes());
    out.extend_from_slice(new_public_key);
    out.extend_from_slice(&signed_at.to_be_bytes());
    out
}

/// The id of an identity key: `ed25519:` and the key's first 8 bytes in hex (keys are random,
/// so this is unique per agent; the id only names which registered key signed).
#[must_use]
pub fn key_id(public_key: &[u8]) -> String {
    let mut out = String::from("ed25519:");
    for b in public_key.iter().take(8) {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
    }
    out
}
