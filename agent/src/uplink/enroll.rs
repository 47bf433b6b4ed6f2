//! Enrollment and identity-key rotation: the two HTTPS calls an agent makes outside the
//! WebSocket (the JSON is [`tikfleet_shared::enroll`]).
//!
//! [`enroll`] makes the agent's key pairs ([`NewKeys`]), sends the public halves with the
//! one-time token, and stores the answer and the keys ([`IdentityStore::save`]) only once the
//! controller accepted. [`rotate_key`] signs a new identity key with the current one; the new
//! key is kept as *pending* while the controller is asked and becomes the identity key only
//! once the controller registered it (see [`identity`](crate::identity) for what happens if
//! the agent stops in between).
//!
//! The HTTP client is reqwest over the uplink's rustls configuration ([`super::tls`]), so
//! enrollment trusts exactly what the WebSocket will. Errors are one line each with a hint;
//! the token never appears in one.

use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use tikfleet_shared::enroll::{
    EnrollRequest, EnrollResponse, RotateKeyRequest, RotateKeyResponse, rotate_signing_payload,
};
use tikfleet_shared::{AgentId, ErrorCode, ErrorInfo, Secret, UnixMillis};

use super::tls::{TlsConfigError, client_config};
use crate::identity::{Enrollment, IdentityError, IdentityStore, NewKeys, NewSigningKey};

/// Why enrollment or rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The agent already has an identity.
    #[error("this agent is already enrolled as {agent_id} with {controller}")]
    AlreadyEnrolled {
        /// Its id.
        agent_id: AgentId,
        /// Its controller.
        controller: String,
    },
    /// The agent has no identity yet.
    #[error("this agent is not enrolled")]
    NotEnrolled,
    /// The controller URL is not an http(s) URL.
    #[error("the controller URL {url:?} is not valid: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The controller could not be reached (refused, no route, DNS, timeout).
    #[error("cannot reach the controller at {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// The client's reason.
        reason: String,
    },
    /// The controller's certificate is not trusted.
    #[error("the controller's certificate at {url} is not trusted: {reason}")]
    Untrusted {
        /// The URL.
        url: String,
        /// The TLS reason.
        reason: String,
    },
    /// The controller refused the request.
    #[error("the controller refused: {message} [{}] (HTTP {status})", code.as_str())]
    Refused {
        /// HTTP status.
        status: u16,
        /// The error code it gave.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The controller answered something that is not the expected JSON.
    #[error("the controller's answer could not be read: {0}")]
    BadResponse(String),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// The identity could not be stored or read.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl EnrollError {
    /// The shared error code for this error.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::AlreadyEnrolled { .. } => ErrorCode::Conflict,
            Self::NotEnrolled => ErrorCode::NotFound,
            Self::BadUrl { .. } | Self::Tls(_) => ErrorCode::InvalidRequest,
            Self::Unreachable { .. } => ErrorCode::Unavailable,
            Self::Untrusted { .. } => ErrorCode::AuthenticationFailed,
            Self::Refused { code, .. } => *code,
            Self::BadResponse(_) => ErrorCode::ProtocolError,
            Self::Identity(e) => e.code(),
        }
    }

    /// What a person can do about it.
    #[must_use]
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            Self::AlreadyEnrolled { .. } => {
                "an agent enrolls once; to enroll again, stop it and start from a fresh data folder"
            }
            Self::NotEnrolled => {
                "enroll first: tikfleet-agent enroll --controller URL --token TOKEN"
            }
            Self::BadUrl { .. } => {
                "give the controller's base URL, e.g. https://controller.example:8443"
            }
            Self::Unreachable { .. } => {
                "check the URL and port, DNS, and that this machine may connect out to the controller"
            }
            Self::Untrusted { .. } => {
                "pass --ca-file with the CA certificate (PEM) that signed the controller's certificate"
            }
            Self::Refused {
                status,
                code,
                message,
            } => {
                let message = message.to_ascii_lowercase();
                if message.contains("expired") {
                    "the enrollment token has expired; ask staff for a new one"
                } else if *code == ErrorCode::Conflict || *status == 409 || message.contains("used")
                {
                    "an enrollment token works only once; ask staff for a new one"
                } else if matches!(
                    code,
                    ErrorCode::AuthenticationFailed
                        | ErrorCode::PermissionDenied
                        | ErrorCode::NotFound
                ) {
                    "the token is not valid (mistyped, used or expired); ask staff for a new one"
                } else {
                    return None;
                }
            }
            _ => return None,
        })
    }
}

/// What `enroll` needs.
#[derive(Debug)]
pub struct EnrollOptions {
    /// The controller's base URL (`https://controller.example:8443`).
    pub controller_url: String,
    /// The one-time enrollment token.
    pub token: Secret,
    /// A name for the agent.
    pub name: String,
    /// Extra CA certificates to trust (PEM), kept for later connections.
    pub ca_pem: Option<String>,
}

/// The machine's host name, for the default agent name.
#[must_use]
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "tikfleet-agent".to_owned())
}

fn base_url(url: &str) -> Result<String, EnrollError> {
    let bad = |reason: &str| EnrollError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(bad(
            "it must start with https:// (or http:// on a test network)",
        ));
    }
    if parsed.host_str().is_none() {
        return Err(bad("it has no host"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn http_client(
    ca_pem: Option<&str>,
    hub_ca_pem: Option<&str>,
) -> Result<reqwest::Client, EnrollError> {
    let tls = client_config(hub_ca_pem, ca_pem)?;
    reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("tikfleet-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| EnrollError::BadResponse(e.to_string()))
}

/// The error's text with its causes, for one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[derive(Deserialize)]
struct ApiError {
    error: ErrorInfo,
}

/// POSTs `body` as JSON and reads a `T`, mapping every failure to an [`EnrollError`].
async fn post<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    body: &impl serde::Serialize,
) -> Result<T, EnrollError> {
    let response = client.post(url).json(body).send().await.map_err(|e| {
        let reason = chain(&e);
        if reason.contains("certificate") || reason.contains("UnknownIssuer") {
            EnrollError::Untrusted {
                url: url.to_owned(),
                reason,
            }
        } else {
            EnrollError::Unreachable {
                url: url.to_owned(),
                reason,
            }
        }
    })?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| EnrollError::BadResponse(chain(&e)))?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| EnrollError::BadResponse(e.to_string()));
    }
    let (code, message) = match serde_json::from_slice::<ApiError>(&bytes) {
        Ok(body) => (body.error.code, body.error.message),
        Err(_) => (
            match status.as_u16() {
                401 => ErrorCode::AuthenticationFailed,
                403 => ErrorCode::PermissionDenied,
                404 => ErrorCode::NotFound,
                409 => ErrorCode::Conflict,
                _ if status.is_server_error() => ErrorCode::Unavailable,
                _ => ErrorCode::InvalidRequest,
            },
            status
                .canonical_reason()
                .unwrap_or("unexpected status")
                .to_owned(),
        ),
    };
    Err(EnrollError::Refused {
        status: status.as_u16(),
        code,
        message,
    })
}

/// Enrolls the agent (see the module docs). Durable when it returns.
pub async fn enroll(
    ids: &IdentityStore,
    options: EnrollOptions,
) -> Result<Enrollment, EnrollError> {
    if let Some(existing) = ids.enrollment()? {
        return Err(EnrollError::AlreadyEnrolled {
            agent_id: existing.agent_id,
            controller: existing.controller_url,
        });
    }
    let base = base_url(&options.controller_url)?;
    let client = http_client(options.ca_pem.as_deref(), None)?;
    let keys = NewKeys::generate()?;
    let request = EnrollRequest {
        token: options.token.expose().to_owned(),
        name: options.name.clone(),
        public_key: keys.public_key_base64(),
        seal_key: keys.seal_key_base64(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let url = format!("{base}/api/v1/agents/enroll");
    let response: EnrollResponse = post(&client, &url, &request).await?;
    let enrollment = Enrollment {
        agent_id: response.agent_id,
        tenant_id: response.tenant_id,
        key_id: response.key_id,
        hub_url: response.hub_url,
        hub_ca_pem: response.hub_ca_pem,
        controller_url: base,
        ca_pem: options.ca_pem,
    };
    // The hub's certificate must be usable before anything is stored.
    client_config(
        enrollment.hub_ca_pem.as_deref(),
        enrollment.ca_pem.as_deref(),
    )?;
    ids.save(&enrollment, &keys).await?;
    Ok(enrollment)
}

/// Replaces the identity key (see the module docs). Returns the new key's id.
pub async fn rotate_key(ids: &IdentityStore, now: UnixMillis) -> Result<String, EnrollError> {
    let identity = ids.load()?.ok_or(EnrollError::NotEnrolled)?;
    let e = &identity.enrollment;
    let client = http_client(e.ca_pem.as_deref(), e.hub_ca_pem.as_deref())?;
    let new = NewSigningKey::generate()?;
    let signed_at = u64::try_from(now.as_millis()).unwrap_or(0);
    let (key_id, signature) = identity.sign(&rotate_signing_payload(
        e.agent_id,
        &new.public_key,
        signed_at,
    ));
    let b64 = &base64::engine::general_purpose::STANDARD;
    let request = RotateKeyRequest {
        key_id,
        new_public_key: b64.encode(&new.public_key),
        signed_at,
        signature: b64.encode(signature),
    };
    ids.set_pending(&new).await?;
    let url = format!("{}/api/v1/agents/{}/keys", e.controller_url, e.agent_id);
    match post::<RotateKeyResponse>(&client, &url, &request).await {
        Ok(response) => {
            ids.promote_pending(&response.key_id).await?;
            Ok(response.key_id)
        }
        Err(err @ EnrollError::Refused { .. }) => {
            // The controller said no: the old key stays in force, the new one is dropped.
            ids.clear_pending().await?;
            Err(err)
        }
        // Unreachable, or no answer: the controller may have registered the key. The pending
        // key stays; the uplink tries it if the current key is refused.
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_hints() {
        assert_eq!(
            base_url("https://c.example:8443/").unwrap(),
            "https://c.example:8443"
        );
        assert!(matches!(
            base_url("ftp://c.example"),
            Err(EnrollError::BadUrl { .. })
        ));
        assert!(matches!(
            base_url("c.example"),
            Err(EnrollError::BadUrl { .. })
        ));
        let refused = |status, code, message: &str| EnrollError::Refused {
            status,
            code,
            message: message.into(),
        };
        assert!(
            refused(409, ErrorCode::Conflict, "token already used")
                .hint()
                .unwrap()
                .contains("only once")
        );
        assert!(
            refused(401, ErrorCode::AuthenticationFailed, "token expired")
                .hint()
                .unwrap()
                .contains("expired")
        );
        assert!(
            refused(401, ErrorCode::AuthenticationFailed, "bad token")
                .hint()
                .unwrap()
                .contains("not valid")
        );
        assert!(refused(500, ErrorCode::Internal, "boom").hint().is_none());
        let text = refused(409, ErrorCode::Conflict, "token already used").to_string();
        assert_eq!(
            text,
            "the controller refused: token already used [conflict] (HTTP 409)"
        );
    }
}
