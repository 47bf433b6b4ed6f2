//! tikfleet-shared: the vocabulary the agent and the controller share.
//!
//! Domain types, the agent⇄controller protocol, its codec and session rules, and the stable
//! error codes. This crate does no I/O and depends on no async runtime: the agent's and the
//! controller's socket tasks move bytes, everything they agree on lives here, so tests can
//! drive both ends of a conversation without sockets.
//!
//! # Layout
//!
//! - [`ids`]: typed UUIDv7 ids (tenant, agent, router, subscriber, job, drift).
//! - [`time`]: [`UnixMillis`], the one wire representation of a point in time.
//! - [`seal`]: sealed boxes that carry router passwords from the controller to one agent.
//! - [`secret`]: [`Secret`], a string that never shows up in `Debug` or logs.
//! - [`error`]: [`ErrorCode`] (stable snake_case codes) and the [`ErrorInfo`] wire struct.
//! - [`domain`]: desired router state: profiles, PPP secrets, hotspot users,
//!   address-list entries, subscriber lifecycle times.
//! - [`enroll`]: the JSON of enrollment and identity-key rotation.
//! - [`job`]: one-off router operations, their priority and status updates.
//! - [`lifecycle`]: the state a router should have at a moment, given expiries and grace.
//! - [`record`]: what the agent's durable outbox carries: audit, telemetry, drift, job
//!   updates, apply reports.
//! - [`protocol`]: the envelope, every message, version negotiation and [`ProtocolError`].
//! - [`codec`]: MessagePack `encode` / `decode` with a frame size limit.
//! - [`session`]: sequence numbers, acks, duplicate and gap detection, the resend buffer.
//!
//! # Wire compatibility
//!
//! Every type deriving `Serialize` here is a compatibility promise with deployed agents.
//! `shared/tests/golden/frames-v1.txt` pins one encoded frame per message shape; see
//! `shared/tests/wire/golden.rs` for the rules and for how to re-bless it.

pub mod codec;
pub mod domain;
pub mod enroll;
pub mod error;
pub mod ids;
pub mod job;
pub mod lifecycle;
pub mod protocol;
pub mod record;
pub mod seal;
pub mod secret;
pub mod session;
pub mod time;

pub use error::{ErrorClass, ErrorCode, ErrorInfo};
pub use ids::{AgentId, DriftId, JobId, ParseIdError, RouterId, SubscriberId, TenantId};
pub use protocol::{Envelope, Message, PROTOCOL_VERSION, ProtocolError};
pub use secret::Secret;
pub use time::UnixMillis;
