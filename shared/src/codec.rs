//! The frame codec: [`Envelope`] ⇄ MessagePack bytes.
//!
//! Encoding uses `rmp_serde::to_vec_named`: structs become maps keyed by field name, so a
//! later version can add optional fields and older peers skip what they do not know. Enums
//! are maps `{variant: payload}`, ids are 16-byte `bin`, times are integers. The same encoding
//! is used by the agent to store desired state, jobs and outbox records in sled.
//!
//! Both directions enforce [`MAX_FRAME_SIZE`]. Decoding never panics on any input: it checks
//! the size, reads only the `version` field first (so a frame from an unsupported version is
//! reported as [`ProtocolError::UnsupportedVersion`] even if its body is a shape we cannot
//! read), decodes the whole envelope with a nesting limit, rejects trailing bytes, and checks
//! the seq rules ([`Envelope::validate`]). Length prefixes in hostile input cannot make it
//! allocate more than the frame itself.

use std::io::Cursor;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::protocol::{Envelope, ProtocolError, SUPPORTED_VERSIONS};

/// Largest frame either side sends or accepts: 4 MiB.
pub const MAX_FRAME_SIZE: usize = 4 * 1024 * 1024;

/// Deepest nesting the decoder follows; real envelopes nest less than 10 levels.
const MAX_DEPTH: usize = 64;

/// Encodes an envelope into one frame.
pub fn encode(envelope: &Envelope) -> Result<Vec<u8>, ProtocolError> {
    check_version(envelope.version)?;
    envelope.validate()?;
    let bytes = rmp_serde::to_vec_named(envelope).map_err(|e| ProtocolError::Encode {
        reason: e.to_string(),
    })?;
    check_size(bytes.len())?;
    Ok(bytes)
}

/// Decodes one frame into an envelope.
pub fn decode(bytes: &[u8]) -> Result<Envelope, ProtocolError> {
    check_size(bytes.len())?;

    /// Just the version, whatever the rest looks like.
    #[derive(Deserialize)]
    struct Header {
        version: u16,
    }
    let header: Header = read_exact(bytes)?;
    check_version(header.version)?;

    // Only one version exists; when v2 lands, dispatch on `header.version` here.
    let envelope: Envelope = read_exact(bytes)?;
    envelope.validate()?;
    Ok(envelope)
}

fn read_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    let mut de = rmp_serde::Deserializer::new(Cursor::new(bytes));
    de.set_max_depth(MAX_DEPTH);
    let value = T::deserialize(&mut de).map_err(|e| ProtocolError::Malformed {
        reason: e.to_string(),
    })?;
    let consumed = usize::try_from(de.position()).unwrap_or(usize::MAX);
    match bytes.len().checked_sub(consumed) {
        Some(0) => Ok(value),
        Some(extra) => Err(ProtocolError::TrailingBytes { extra }),
        None => Err(ProtocolError::Malformed {
            reason: "decoder read past the end".to_owned(),
        }),
    }
}

fn check_size(size: usize) -> Result<(), ProtocolError> {
    if size > MAX_FRAME_SIZE {
        Err(ProtocolError::FrameTooLarge {
            size,
            max: MAX_FRAME_SIZE,
        })
    } else {
        Ok(())
    }
}

fn check_version(version: u16) -> Result<(), ProtocolError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(ProtocolError::UnsupportedVersion { version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Message, PROTOCOL_VERSION, Ping, Revoked};

    fn ping() -> Envelope {
        Envelope {
            version: PROTOCOL_VERSION,
            seq: None,
            ack: 7,
            msg: Message::Ping(Ping { nonce: 42 }),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&ping()).unwrap();
        assert_eq!(decode(&bytes), Ok(ping()));
    }

    #[test]
    fn uses_field_names() {
        let bytes = encode(&ping()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for name in ["version", "seq", "ack", "msg", "ping", "nonce"] {
            assert!(text.contains(name), "{name} missing from {bytes:x?}");
        }
    }

    #[test]
    fn empty_input_is_malformed() {
        assert!(matches!(decode(&[]), Err(ProtocolError::Malformed { .. })));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&ping()).unwrap();
        bytes.push(0xc0);
        assert_eq!(
            decode(&bytes),
            Err(ProtocolError::TrailingBytes { extra: 1 })
        );
    }

    #[test]
    fn unknown_version_is_typed_even_with_an_unreadable_body() {
        let mut env = ping();
        env.version = PROTOCOL_VERSION + 1;
        assert_eq!(
            encode(&env),
            Err(ProtocolError::UnsupportedVersion {
                version: PROTOCOL_VERSION + 1
            })
        );
        #[derive(serde::Serialize)]
        struct Future {
            version: u16,
            msg: &'static str,
        }
        let bytes = rmp_serde::to_vec_named(&Future {
            version: 9,
            msg: "teleport",
        })
        .unwrap();
        assert_eq!(
            decode(&bytes),
            Err(ProtocolError::UnsupportedVersion { version: 9 })
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        #[derive(serde::Serialize)]
        struct Newer {
            version: u16,
            seq: Option<u64>,
            ack: u64,
            msg: Message,
            priority_hint: &'static str,
        }
        let bytes = rmp_serde::to_vec_named(&Newer {
            version: PROTOCOL_VERSION,
            seq: None,
            ack: 7,
            msg: Message::Ping(Ping { nonce: 42 }),
            priority_hint: "high",
        })
        .unwrap();
        assert_eq!(decode(&bytes), Ok(ping()));
    }

    #[test]
    fn frame_limit_on_both_sides() {
        let big = Envelope {
            version: PROTOCOL_VERSION,
            seq: None,
            ack: 0,
            msg: Message::Revoked(Revoked {
                reason: "x".repeat(MAX_FRAME_SIZE),
            }),
        };
        assert!(matches!(
            encode(&big),
            Err(ProtocolError::FrameTooLarge {
                max: MAX_FRAME_SIZE,
                ..
            })
        ));
        let bytes = rmp_serde::to_vec_named(&big).unwrap();
        assert_eq!(
            decode(&bytes),
            Err(ProtocolError::FrameTooLarge {
                size: bytes.len(),
                max: MAX_FRAME_SIZE
            })
        );
    }

    #[test]
    fn huge_length_prefix_does_not_allocate_or_panic() {
        // {"version": 1, "msg": bin32 of length 0xffffffff} with no body
        let mut bytes = vec![0x82, 0xa7];
        bytes.extend_from_slice(b"version");
        bytes.push(0x01);
        bytes.push(0xa3);
        bytes.extend_from_slice(b"msg");
        bytes.extend_from_slice(&[0xc6, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decode(&bytes),
            Err(ProtocolError::Malformed { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowed() {
        // {"version": 1, "x": [[[[...]]]]} nested far beyond the limit
        let mut bytes = vec![0x82, 0xa7];
        bytes.extend_from_slice(b"version");
        bytes.push(0x01);
        bytes.extend_from_slice(&[0xa1, b'x']);
        bytes.extend(std::iter::repeat_n(0x91, 100_000));
        bytes.push(0xc0);
        assert!(matches!(
            decode(&bytes),
            Err(ProtocolError::Malformed { .. })
        ));
    }
}
