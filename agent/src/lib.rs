//! tikfleet-agent: the site agent that sits beside a tenant's routers.
//!
//! # Layout
//!
//! - [`clock`]: injectable time.
//! - [`router`]: a router's endpoint and credentials, as the drivers take them.
//! - [`routeros`]: the RouterOS API driver: pooled, pipelined, classified, observed.
//! - [`ops`]: idempotent router operations ("make it so" by name) for the router-level jobs.
//!
//! The vault, durable store, queue, outbox, drivers, executor and command line are being
//! built (issue 4). The crate depends on no tikfleet crate but `tikfleet-shared`.

pub mod clock;
pub mod ops;
pub mod router;
pub mod routeros;

/// The highest agent⇄controller protocol version this agent speaks.
pub const PROTOCOL_VERSION: u16 = tikfleet_shared::protocol::PROTOCOL_VERSION;
