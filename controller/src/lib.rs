//! tikfleet-controller: the cloud side — HTTP API, tenant scoping, storage, agent hub,
//! desired-state compiler, lifecycle scheduler, alerts and reports.
//!
//! Its parts arrive with the controller issue; for now the crate only fixes its place in the
//! workspace and its one dependency on our code: `tikfleet-shared` (never the agent).

/// The highest agent⇄controller protocol version this controller speaks.
pub const PROTOCOL_VERSION: u16 = tikfleet_shared::protocol::PROTOCOL_VERSION;
