//! Checking an agent's hello: the named key is one of its registered Ed25519 keys and the
//! signature over [`hello_signing_payload`] verifies with it.
//!
//! Pure functions over what the store returned, so every refusal is tested without a socket.
//! Revocation and version negotiation are the connection's business ([`conn`](super::conn)).

use tikfleet_shared::protocol::{Hello, NONCE_LEN, hello_signing_payload};

use super::store::AgentIdentity;

/// Why a hello's proof was refused. The texts go to the agent in a `close` and to the log;
/// they carry no key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The hello names a key the agent does not have (rotated away, or never registered).
    #[error("key {key_id} is not registered for this agent")]
    UnknownKey {
        /// The key id from the hello.
        key_id: String,
    },
    /// The signature does not verify with the named key.
    #[error("the signature over the challenge does not verify with key {key_id}")]
    BadSignature {
        /// The key id from the hello.
        key_id: String,
    },
}

/// Checks `hello`'s proof against `identity` for the challenge `nonce`.
pub fn verify_hello(
    identity: &AgentIdentity,
    hello: &Hello,
    nonce: &[u8; NONCE_LEN],
) -> Result<(), AuthError> {
    let key_id = &hello.proof.key_id;
    let key = identity
        .keys
        .iter()
        .find(|k| &k.key_id == key_id)
        .ok_or_else(|| AuthError::UnknownKey {
            key_id: key_id.clone(),
        })?;
    let payload = hello_signing_payload(nonce, hello.agent_id);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key.public_key)
        .verify(&payload, &hello.proof.signature)
        .map_err(|_| AuthError::BadSignature {
            key_id: key_id.clone(),
        })
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use tikfleet_shared::protocol::{IdentityProof, OutboxPosition};
    use tikfleet_shared::{AgentId, TenantId};

    use super::*;
    use crate::hub::store::AgentKey;

    fn key_pair() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn hello(agent: AgentId, key_id: &str, signature: Vec<u8>) -> Hello {
        Hello {
            agent_id: agent,
            proof: IdentityProof {
                key_id: key_id.into(),
                signature,
            },
            min_version: 1,
            max_version: 1,
            agent_version: "0.1.0".into(),
            routers: vec![],
            outbox: OutboxPosition {
                acked: 0,
                next_seq: 1,
                pending_bytes: 0,
            },
        }
    }

    #[test]
    fn proofs() {
        let agent = AgentId::new();
        let pair = key_pair();
        let identity = AgentIdentity {
            agent_id: agent,
            tenant_id: TenantId::new(),
            name: "site-1".into(),
            keys: vec![AgentKey {
                key_id: "k1".into(),
                public_key: pair.public_key().as_ref().to_vec(),
            }],
            revoked: false,
        };
        let nonce = [7u8; NONCE_LEN];
        let sign = |pair: &Ed25519KeyPair, nonce: &[u8; NONCE_LEN], agent| {
            pair.sign(&hello_signing_payload(nonce, agent))
                .as_ref()
                .to_vec()
        };

        let good = hello(agent, "k1", sign(&pair, &nonce, agent));
        assert_eq!(verify_hello(&identity, &good, &nonce), Ok(()));

        // Another nonce (a replayed hello), another agent id, another key, garbage.
        let replay = hello(agent, "k1", sign(&pair, &[8; NONCE_LEN], agent));
        let other_agent = hello(agent, "k1", sign(&pair, &nonce, AgentId::new()));
        let other_key = hello(agent, "k1", sign(&key_pair(), &nonce, agent));
        let garbage = hello(agent, "k1", vec![1, 2, 3]);
        for bad in [replay, other_agent, other_key, garbage] {
            assert_eq!(
                verify_hello(&identity, &bad, &nonce),
                Err(AuthError::BadSignature {
                    key_id: "k1".into()
                })
            );
        }
        let unknown = hello(agent, "k2", sign(&pair, &nonce, agent));
        assert_eq!(
            verify_hello(&identity, &unknown, &nonce),
            Err(AuthError::UnknownKey {
                key_id: "k2".into()
            })
        );
    }
}
