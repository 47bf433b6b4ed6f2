//! Typed ids: one newtype per kind of thing, each a UUIDv7.
//!
//! UUIDv7 starts with a millisecond timestamp, so ids made by [`TenantId::new`] and friends
//! sort by creation time (handy for database keys and sled trees).
//!
//! Wire form: in binary formats (MessagePack, the protocol and the agent's sled store) an id
//! is the 16 raw bytes of the UUID (a MessagePack `bin 8` of length 16, 18 bytes in all). In
//! human-readable formats (JSON for the HTTP API) it is the hyphenated lowercase string, the
//! same text as [`Display`](std::fmt::Display). Parsing accepts any UUID text the `uuid` crate
//! accepts and any UUID version: ids from elsewhere (imports, tests) are still valid ids.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Parsing an id from text failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    /// The text is not a UUID.
    #[error("invalid {kind} id {input:?}: expected a uuid")]
    Invalid {
        /// Which id was being parsed, e.g. `router`.
        kind: &'static str,
        /// The rejected text.
        input: String,
    },
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Uuid);

        impl $name {
            /// Makes a fresh, time-ordered UUIDv7 id.
            #[must_use]
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID (any version).
            #[must_use]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// Builds an id from its 16 wire bytes.
            #[must_use]
            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }

            /// The underlying UUID.
            #[must_use]
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// The 16 wire bytes.
            #[must_use]
            pub const fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| ParseIdError::Invalid {
                    kind: $kind,
                    input: s.to_owned(),
                })
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serialize_uuid(&self.0, serializer)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserialize_uuid(deserializer).map(Self)
            }
        }
    };
}

id_type!(
    /// A tenant: one ISP, the unit of isolation.
    TenantId,
    "tenant"
);
id_type!(
    /// An agent: one on-site process, belonging to exactly one tenant.
    AgentId,
    "agent"
);
id_type!(
    /// A MikroTik router, owned by one agent.
    RouterId,
    "router"
);
id_type!(
    /// A subscriber (an ISP's customer).
    SubscriberId,
    "subscriber"
);
id_type!(
    /// A job: one one-off router operation.
    JobId,
    "job"
);
id_type!(
    /// One drift finding reported by the agent's reconciler.
    DriftId,
    "drift"
);

fn serialize_uuid<S: Serializer>(uuid: &Uuid, serializer: S) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        serializer.collect_str(&uuid.hyphenated())
    } else {
        serializer.serialize_bytes(uuid.as_bytes())
    }
}

fn deserialize_uuid<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Uuid, D::Error> {
    if deserializer.is_human_readable() {
        deserializer.deserialize_str(UuidVisitor)
    } else {
        deserializer.deserialize_bytes(UuidVisitor)
    }
}

struct UuidVisitor;

impl Visitor<'_> for UuidVisitor {
    type Value = Uuid;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a uuid as 16 bytes or as text")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Uuid, E> {
        Uuid::from_slice(v).map_err(|_| E::invalid_length(v.len(), &"16 bytes"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Uuid, E> {
        Uuid::parse_str(v).map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_v7_and_sort_by_creation() {
        let a = JobId::new();
        let b = JobId::new();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a < b, "{a} should sort before {b}");
    }

    #[test]
    fn display_and_from_str_round_trip() {
        let id = RouterId::new();
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.parse::<RouterId>(), Ok(id));
    }

    #[test]
    fn from_str_rejects_garbage_with_the_kind() {
        let err = "not-a-uuid".parse::<TenantId>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid tenant id \"not-a-uuid\": expected a uuid"
        );
    }

    #[test]
    fn msgpack_form_is_16_raw_bytes() {
        let id = AgentId::from_bytes([7; 16]);
        let bytes = rmp_serde::to_vec(&id).unwrap();
        // bin 8 marker, length 16, then the bytes.
        assert_eq!(bytes.len(), 18);
        assert_eq!(&bytes[..2], &[0xc4, 16]);
        assert_eq!(rmp_serde::from_slice::<AgentId>(&bytes).unwrap(), id);
    }

    #[test]
    fn msgpack_rejects_wrong_length() {
        let bytes = rmp_serde::to_vec(&serde_bytes::Bytes::new(&[1, 2, 3])).unwrap();
        assert!(rmp_serde::from_slice::<AgentId>(&bytes).is_err());
    }

    #[test]
    fn debug_names_the_kind() {
        let id = SubscriberId::from_bytes([0; 16]);
        assert_eq!(
            format!("{id:?}"),
            "SubscriberId(00000000-0000-0000-0000-000000000000)"
        );
    }
}
