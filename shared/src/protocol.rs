//! The agent⇄controller protocol: envelope, messages, versions, and [`ProtocolError`].
//!
//! One binary WebSocket frame carries one MessagePack [`Envelope`] (see [`codec`](crate::codec)):
//! the protocol version, the sender's durable sequence number (durable messages only), the
//! cumulative ack of the peer's durable stream, and the [`Message`].
//!
//! # Conversation
//!
//! ```text
//! controller → agent   challenge { nonce }
//! agent → controller   hello { agent id, proof over the nonce, versions, generations, outbox }
//! controller → agent   welcome { negotiated version, settings }    (or close / revoked)
//! then, both ways:     durable messages (seq), ack, ping / pong, close
//! ```
//!
//! Restores fetch their backup file in parts ([`BackupFetch`] → [`BackupPart`], not durable):
//! see [`BackupFetch`].
//!
//! Durable messages ([`Message::is_durable`]): the controller's `router_config`,
//! `desired_state`, `job` and `job_cancel`, and the agent's `record`s. Each carries a `seq` from the sender's
//! [`DurableStream`](crate::session::DurableStream); the receiver stores it before it acks.
//!
//! # Versions
//!
//! A controller speaks [`PROTOCOL_VERSION`] and the previous one, so a fleet can be upgraded
//! one agent at a time ([`negotiate`]). Handshake frames (`challenge`, `hello`, `welcome`,
//! `close`, `revoked`) are sent with the sender's lowest supported version, and their shapes
//! only ever gain optional fields, so peers one version apart always finish the handshake.
//!
//! # Compatibility rules for this file
//!
//! Enums are externally tagged with snake_case names (`{"job": {...}}`); payloads are structs
//! encoded as maps with field names. Within a version, changes may only add fields that are
//! `Option` (a missing field decodes as `None`) or carry `#[serde(default)]`; unknown fields
//! are ignored. Renaming or removing a field or variant needs a new protocol version. Internally
//! tagged and flattened enums are avoided on purpose: serde buffers them in a way that breaks
//! the binary (16-byte) id form.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::domain::DesiredState;
use crate::error::{ErrorCode, ErrorInfo};
use crate::ids::{AgentId, JobId, RouterId, TenantId};
use crate::job::{Job, JobCancel};
use crate::record::OutboxRecord;
use crate::time::UnixMillis;

/// The protocol version this build speaks natively.
pub const PROTOCOL_VERSION: u16 = 1;

/// The oldest version this build still speaks: the previous one (never below 1).
pub const MIN_SUPPORTED_VERSION: u16 = if PROTOCOL_VERSION > 1 {
    PROTOCOL_VERSION - 1
} else {
    1
};

/// Versions [`decode`](crate::codec::decode) and [`encode`](crate::codec::encode) accept.
pub const SUPPORTED_VERSIONS: RangeInclusive<u16> = MIN_SUPPORTED_VERSION..=PROTOCOL_VERSION;

/// Errors at the protocol boundary: codec, negotiation and session rules.
///
/// Any of these on a live connection means: send [`Close`] with [`ProtocolError::close_code`]
/// and drop the connection; never panic.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A frame is bigger than the limit (checked on encode and decode).
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The frame's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The envelope could not be encoded (a bug on our side).
    #[error("cannot encode envelope: {reason}")]
    Encode {
        /// The encoder's message.
        reason: String,
    },
    /// The bytes are not a valid envelope.
    #[error("malformed frame: {reason}")]
    Malformed {
        /// The decoder's message.
        reason: String,
    },
    /// A valid envelope was followed by more bytes.
    #[error("malformed frame: {extra} trailing bytes after the envelope")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
    /// The envelope's version is one this build does not speak.
    #[error(
        "unsupported protocol version {version} (supported {MIN_SUPPORTED_VERSION}..={PROTOCOL_VERSION})"
    )]
    UnsupportedVersion {
        /// The version received.
        version: u16,
    },
    /// The agent's version range and ours do not overlap (or the range is empty).
    #[error(
        "no common protocol version: agent speaks {agent_min}..={agent_max}, controller speaks {ours_min}..={ours_max}"
    )]
    NoCommonVersion {
        /// The agent's lowest version.
        agent_min: u16,
        /// The agent's highest version.
        agent_max: u16,
        /// Our lowest version.
        ours_min: u16,
        /// Our highest version.
        ours_max: u16,
    },
    /// A durable message came without a sequence number.
    #[error("durable message {message} has no seq")]
    MissingSeq {
        /// The message's name.
        message: &'static str,
    },
    /// A non-durable message came with a sequence number, or a seq was 0.
    #[error("message {message} has an invalid seq {seq}")]
    InvalidSeq {
        /// The message's name.
        message: &'static str,
        /// The seq received.
        seq: u64,
    },
    /// The peer acknowledged a sequence number we never sent.
    #[error("ack {ack} is beyond the last sent seq {last_sent}")]
    AckBeyondSent {
        /// The ack received.
        ack: u64,
        /// Our last assigned seq.
        last_sent: u64,
    },
    /// A durable message was committed out of order.
    #[error("seq {got} committed out of order, expected {expected}")]
    OutOfOrder {
        /// The next seq in order.
        expected: u64,
        /// The seq given.
        got: u64,
    },
    /// An envelope on an established session carries another version.
    #[error("envelope version {got} differs from the session's version {expected}")]
    VersionMismatch {
        /// The negotiated version.
        expected: u16,
        /// The version received.
        got: u16,
    },
    /// A session was resumed from inconsistent positions.
    #[error("cannot resume session: {reason}")]
    InvalidResume {
        /// What is inconsistent.
        reason: &'static str,
    },
}

impl ProtocolError {
    /// The stable error code for this error.
    #[must_use]
    pub const fn code(&self) -> ErrorCode {
        match self {
            Self::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::UnsupportedVersion { .. } | Self::NoCommonVersion { .. } => {
                ErrorCode::UnsupportedVersion
            }
            Self::Encode { .. } | Self::InvalidResume { .. } => ErrorCode::Internal,
            Self::Malformed { .. }
            | Self::TrailingBytes { .. }
            | Self::MissingSeq { .. }
            | Self::InvalidSeq { .. }
            | Self::AckBeyondSent { .. }
            | Self::OutOfOrder { .. }
            | Self::VersionMismatch { .. } => ErrorCode::ProtocolError,
        }
    }

    /// The code to close the connection with.
    #[must_use]
    pub const fn close_code(&self) -> CloseCode {
        match self.code() {
            ErrorCode::FrameTooLarge => CloseCode::FrameTooLarge,
            ErrorCode::UnsupportedVersion => CloseCode::UnsupportedVersion,
            ErrorCode::Internal => CloseCode::Internal,
            _ => CloseCode::ProtocolError,
        }
    }
}

/// Picks the version to speak: the highest version in both `ours` and `agent_min..=agent_max`.
pub fn negotiate_between(
    ours: RangeInclusive<u16>,
    agent_min: u16,
    agent_max: u16,
) -> Result<u16, ProtocolError> {
    let best = agent_max.min(*ours.end());
    if agent_min <= agent_max && best >= agent_min.max(*ours.start()) {
        Ok(best)
    } else {
        Err(ProtocolError::NoCommonVersion {
            agent_min,
            agent_max,
            ours_min: *ours.start(),
            ours_max: *ours.end(),
        })
    }
}

/// The controller's negotiation: the highest version in [`SUPPORTED_VERSIONS`] the agent speaks.
pub fn negotiate(agent_min: u16, agent_max: u16) -> Result<u16, ProtocolError> {
    negotiate_between(SUPPORTED_VERSIONS, agent_min, agent_max)
}

/// One frame: version, durable seq, cumulative ack, message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version of this frame.
    pub version: u16,
    /// The sender's durable sequence number; `Some` exactly for durable messages (from 1).
    pub seq: Option<u64>,
    /// Cumulative ack: the highest contiguous seq of the peer's durable stream the sender
    /// has stored (0 = none).
    pub ack: u64,
    /// The message.
    pub msg: Message,
}

impl Envelope {
    /// Checks that `seq` is present exactly for durable messages, and not 0.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        let message = self.msg.name();
        match (self.msg.is_durable(), self.seq) {
            (true, None) => Err(ProtocolError::MissingSeq { message }),
            (true, Some(0)) | (false, Some(_)) => Err(ProtocolError::InvalidSeq {
                message,
                seq: self.seq.unwrap_or(0),
            }),
            _ => Ok(()),
        }
    }
}

/// Every message of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// Controller → agent, first frame: prove who you are.
    Challenge(Challenge),
    /// Agent → controller: identity, versions and positions.
    Hello(Hello),
    /// Controller → agent: accepted; the version and settings to use.
    Welcome(Welcome),
    /// Controller → agent, durable: a router's desired state.
    DesiredState(DesiredState),
    /// Controller → agent, durable: a job.
    Job(Job),
    /// Controller → agent, durable: cancel a job.
    JobCancel(JobCancel),
    /// Controller → agent, durable: how to reach one of the agent's routers (or that it was
    /// removed), with its password sealed to the agent's seal key.
    RouterConfig(RouterConfig),
    /// Agent → controller, durable: an outbox record.
    Record(OutboxRecord),
    /// Either way: nothing but the envelope's ack.
    Ack(Ack),
    /// Either way: heartbeat request.
    Ping(Ping),
    /// Either way: heartbeat answer with the ping's nonce.
    Pong(Pong),
    /// Either way: the sender closes the connection, and why.
    Close(Close),
    /// Controller → agent: the agent's identity was revoked; do not reconnect.
    Revoked(Revoked),
    /// Agent → controller: send a part of a stored backup (for a `restore` job).
    BackupFetch(BackupFetch),
    /// Controller → agent: the answer to a [`BackupFetch`]: a part, or why not.
    BackupPart(BackupPart),
}

impl Message {
    /// Every message name, in declaration order.
    pub const NAMES: [&'static str; 15] = [
        "challenge",
        "hello",
        "welcome",
        "desired_state",
        "job",
        "job_cancel",
        "router_config",
        "record",
        "ack",
        "ping",
        "pong",
        "close",
        "revoked",
        "backup_fetch",
        "backup_part",
    ];

    /// The message's snake_case name, identical to its serialized tag.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Challenge(_) => "challenge",
            Self::Hello(_) => "hello",
            Self::Welcome(_) => "welcome",
            Self::DesiredState(_) => "desired_state",
            Self::Job(_) => "job",
            Self::JobCancel(_) => "job_cancel",
            Self::RouterConfig(_) => "router_config",
            Self::Record(_) => "record",
            Self::Ack(_) => "ack",
            Self::Ping(_) => "ping",
            Self::Pong(_) => "pong",
            Self::Close(_) => "close",
            Self::Revoked(_) => "revoked",
            Self::BackupFetch(_) => "backup_fetch",
            Self::BackupPart(_) => "backup_part",
        }
    }

    /// Whether the message belongs to the sender's durable stream (carries a seq, is acked).
    #[must_use]
    pub const fn is_durable(&self) -> bool {
        matches!(
            self,
            Self::DesiredState(_)
                | Self::Job(_)
                | Self::JobCancel(_)
                | Self::RouterConfig(_)
                | Self::Record(_)
        )
    }

    /// Which side may send it.
    #[must_use]
    pub const fn sender(&self) -> Sender {
        match self {
            Self::Challenge(_)
            | Self::Welcome(_)
            | Self::DesiredState(_)
            | Self::Job(_)
            | Self::JobCancel(_)
            | Self::RouterConfig(_)
            | Self::Revoked(_)
            | Self::BackupPart(_) => Sender::Controller,
            Self::Hello(_) | Self::Record(_) | Self::BackupFetch(_) => Sender::Agent,
            Self::Ack(_) | Self::Ping(_) | Self::Pong(_) | Self::Close(_) => Sender::Either,
        }
    }
}

/// Which side sends a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sender {
    /// Only the agent.
    Agent,
    /// Only the controller.
    Controller,
    /// Both.
    Either,
}

/// Length of a challenge nonce.
pub const NONCE_LEN: usize = 32;

/// The controller's challenge: a fresh random nonce the agent must sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Random bytes, fresh per connection.
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; NONCE_LEN],
    /// The controller's clock, so the agent can warn about skew.
    pub server_time: UnixMillis,
}

/// The bytes an agent signs to answer a challenge: a domain-separation tag, the nonce and
/// the agent id. The signature scheme (the agent's key pair) is the agent's and controller's
/// business; this pins only what is signed.
#[must_use]
pub fn hello_signing_payload(nonce: &[u8; NONCE_LEN], agent_id: AgentId) -> Vec<u8> {
    const TAG: &[u8] = b"tikfleet-hello-v1\0";
    let mut out = Vec::with_capacity(TAG.len() + NONCE_LEN + 16);
    out.extend_from_slice(TAG);
    out.extend_from_slice(nonce);
    out.extend_from_slice(agent_id.as_bytes());
    out
}

/// Proof that the agent holds its private key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityProof {
    /// Which of the agent's registered public keys signed.
    pub key_id: String,
    /// Signature over [`hello_signing_payload`].
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// The agent's opening message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Who the agent is.
    pub agent_id: AgentId,
    /// Proof of identity over the controller's challenge.
    pub proof: IdentityProof,
    /// Lowest protocol version the agent speaks.
    pub min_version: u16,
    /// Highest protocol version the agent speaks.
    pub max_version: u16,
    /// The agent's software version, e.g. `0.1.0`.
    pub agent_version: String,
    /// Per router: the generations stored and applied.
    pub routers: Vec<RouterGenerations>,
    /// Where the agent's outbox stands.
    pub outbox: OutboxPosition,
}

/// Desired-state generations the agent holds for one router.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterGenerations {
    /// The router.
    pub router_id: RouterId,
    /// Highest generation stored (0 = none).
    pub stored: u64,
    /// Highest generation fully applied (0 = none).
    pub applied: u64,
}

/// Position of the agent's outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxPosition {
    /// Highest seq the controller has acked, as far as the agent knows.
    pub acked: u64,
    /// The seq the next record will get.
    pub next_seq: u64,
    /// Bytes waiting in the outbox.
    pub pending_bytes: u64,
}

/// The controller accepts the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The version both sides speak from now on.
    pub version: u16,
    /// The agent's tenant.
    pub tenant_id: TenantId,
    /// The agent, echoed.
    pub agent_id: AgentId,
    /// Settings the agent must use.
    pub settings: AgentSettings,
}

/// Settings the controller gives an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSettings {
    /// How often to ping when idle, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// How often to probe routers, in milliseconds.
    pub telemetry_interval_ms: u64,
    /// Outbox size cap in bytes; the agent alerts as it nears it.
    pub outbox_cap_bytes: u64,
    /// The tenant's token bucket for router commands.
    pub rate_limit: RateLimit,
    /// Commands in flight per router.
    pub router_concurrency: u32,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 15_000,
            telemetry_interval_ms: 60_000,
            outbox_cap_bytes: 1 << 30,
            rate_limit: RateLimit {
                per_second: 50,
                burst: 100,
            },
            router_concurrency: 4,
        }
    }
}

/// A token bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_second: u32,
    /// Bucket size.
    pub burst: u32,
}

/// How to reach one router of the agent, as staff entered it at the controller.
///
/// The controller pushes every router of the agent on each connection and again whenever one
/// changes; the agent keeps the highest `revision` per router and ignores older ones, so a
/// redelivery changes nothing. The password travels only as `sealed_password`: an anonymous
/// sealed box ([`seal`](crate::seal)) to the agent's X25519 seal key, which the controller
/// cannot open. Routers added on site (not through the controller) are not affected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterConfig {
    /// The router.
    pub router_id: RouterId,
    /// Its tenant (the agent's).
    pub tenant_id: TenantId,
    /// Its name, unique per agent.
    pub name: String,
    /// Host name or IP address of its API.
    pub host: String,
    /// API port (plain or TLS per `tls`).
    pub api_port: u16,
    /// SSH port.
    pub ssh_port: u16,
    /// How the API connection is secured.
    pub tls: RouterTls,
    /// Login name.
    pub username: String,
    /// The login password, sealed to the agent's seal key.
    #[serde(with = "serde_bytes")]
    pub sealed_password: Vec<u8>,
    /// Bumped on every change; the agent keeps the highest it has seen.
    pub revision: u64,
    /// The router was deleted at the controller: the agent forgets it.
    pub removed: bool,
}

/// TLS settings of a router's API connection.
///
/// Every variant is a struct variant (even when empty), so a variant can later gain an
/// optional field without changing its wire shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouterTls {
    /// Plain API (8728).
    Plain {},
    /// API-SSL, verifying the certificate against `ca_pem`.
    Verify {
        /// CA certificate(s), PEM.
        ca_pem: Option<String>,
        /// Name the certificate must carry (default: the host).
        server_name: Option<String>,
    },
    /// API-SSL, accepting exactly the certificate with this SHA-256 fingerprint.
    Pin {
        /// Hex SHA-256 of the certificate's DER.
        sha256: String,
    },
}

/// A standalone ack; the ack itself is the envelope's `ack`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {}

/// Heartbeat request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed in the pong.
    pub nonce: u64,
}

/// Heartbeat answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The ping's nonce.
    pub nonce: u64,
}

/// Why a connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseCode {
    /// Orderly close.
    Normal,
    /// The sender is shutting down or restarting; reconnect later.
    GoingAway,
    /// The peer broke the protocol.
    ProtocolError,
    /// No common protocol version.
    UnsupportedVersion,
    /// A frame was too large.
    FrameTooLarge,
    /// The agent's identity proof was rejected.
    AuthenticationFailed,
    /// A newer connection of the same agent replaced this one.
    Superseded,
    /// A bug or unexpected condition on the sender's side.
    Internal,
    /// A code this build does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

/// The sender closes the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Close {
    /// Why, for machines.
    pub code: CloseCode,
    /// Why, for people.
    pub reason: String,
}

/// The agent's identity was revoked by staff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// Why, for people.
    pub reason: String,
}

/// The most bytes one [`BackupPart`] carries: parts stay far below the frame limit, so a
/// restore of any size never needs a large frame (or much memory) on either side.
pub const MAX_BACKUP_PART: usize = 256 * 1024;

/// Agent → controller: send the bytes of stored backup `backup_id` from `offset` on.
///
/// A `restore` job names its backup by id, size and SHA-256 instead of carrying the file.
/// The agent asks for one part at a time, appends each to a file staged in its data folder,
/// and asks for the next from the size it has staged, so a dropped link or a restart resumes
/// where it stopped. The controller answers with one [`BackupPart`] of at most
/// [`MAX_BACKUP_PART`] bytes, and only for a binary backup of one of this agent's routers.
/// Neither message is durable: an answer lost with the link is simply asked for again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFetch {
    /// The `restore` job asking (for the controller's logs).
    pub job_id: JobId,
    /// The controller's backup id, as the job names it.
    pub backup_id: String,
    /// The first byte wanted.
    pub offset: u64,
}

/// Controller → agent: the answer to a [`BackupFetch`].
///
/// On success `error` is `None` and `data` holds the bytes from `offset` (at most
/// [`MAX_BACKUP_PART`]; empty at or past the end); `total` is the file's size. On failure
/// `error` says why (`not_found`: no such backup of this agent's routers; `invalid_request`:
/// an offset past the end) and `data` is empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupPart {
    /// The job, echoed.
    pub job_id: JobId,
    /// The backup, echoed.
    pub backup_id: String,
    /// The offset, echoed.
    pub offset: u64,
    /// The file's size in bytes (0 with an error).
    pub total: u64,
    /// The bytes from `offset`.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Why there are no bytes.
    #[serde(default)]
    pub error: Option<ErrorInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_table() {
        let check = |ours: RangeInclusive<u16>, min, max, expected: Option<u16>| {
            let got = negotiate_between(ours.clone(), min, max).ok();
            assert_eq!(got, expected, "ours={ours:?} agent={min}..={max}");
        };
        // controller at v3 speaks 2 and 3
        check(2..=3, 1, 1, None);
        check(2..=3, 1, 2, Some(2));
        check(2..=3, 2, 3, Some(3));
        check(2..=3, 3, 5, Some(3));
        check(2..=3, 4, 5, None);
        check(2..=3, 3, 2, None); // empty agent range
        check(1..=1, 1, 1, Some(1));
    }

    #[test]
    fn negotiate_uses_this_builds_versions() {
        assert_eq!(negotiate(1, PROTOCOL_VERSION), Ok(PROTOCOL_VERSION));
        assert_eq!(
            negotiate(MIN_SUPPORTED_VERSION, u16::MAX),
            Ok(PROTOCOL_VERSION)
        );
        let err = negotiate(PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 2).unwrap_err();
        assert_eq!(err.code(), ErrorCode::UnsupportedVersion);
        assert_eq!(err.close_code(), CloseCode::UnsupportedVersion);
    }

    #[test]
    fn envelope_seq_rules() {
        let ping = Message::Ping(Ping { nonce: 1 });
        let cancel = Message::JobCancel(JobCancel {
            job_id: crate::ids::JobId::from_bytes([1; 16]),
            reason: None,
        });
        let env = |seq, msg: &Message| Envelope {
            version: PROTOCOL_VERSION,
            seq,
            ack: 0,
            msg: msg.clone(),
        };
        assert_eq!(env(None, &ping).validate(), Ok(()));
        assert_eq!(env(Some(1), &cancel).validate(), Ok(()));
        assert!(matches!(
            env(Some(3), &ping).validate(),
            Err(ProtocolError::InvalidSeq {
                message: "ping",
                seq: 3
            })
        ));
        assert!(matches!(
            env(None, &cancel).validate(),
            Err(ProtocolError::MissingSeq {
                message: "job_cancel"
            })
        ));
        assert!(matches!(
            env(Some(0), &cancel).validate(),
            Err(ProtocolError::InvalidSeq { seq: 0, .. })
        ));
    }

    #[test]
    fn signing_payload_binds_nonce_and_agent() {
        let a = hello_signing_payload(&[1; NONCE_LEN], AgentId::from_bytes([2; 16]));
        let b = hello_signing_payload(&[1; NONCE_LEN], AgentId::from_bytes([3; 16]));
        let c = hello_signing_payload(&[4; NONCE_LEN], AgentId::from_bytes([2; 16]));
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert!(a.starts_with(b"tikfleet-hello-v1\0"));
        assert_eq!(a.len(), 18 + NONCE_LEN + 16);
    }
}
