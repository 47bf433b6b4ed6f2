//! tikfleet-controller: the cloud side — HTTP API, tenant scoping, storage, agent hub,
//! desired-state compiler, lifecycle scheduler, alerts and reports.
//!
//! It depends on `tikfleet-shared` only (never on the agent).

pub use tikfleet_clock as clock;
pub mod hub;

/// The highest agent⇄controller protocol version this controller speaks.
pub const PROTOCOL_VERSION: u16 = tikfleet_shared::protocol::PROTOCOL_VERSION;
