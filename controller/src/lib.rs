//! tikfleet-controller: the cloud side — HTTP API, tenant scoping, storage, agent hub,
//! desired-state compiler, lifecycle scheduler, alerts and reports.
//!
//! It depends on `tikfleet-shared` only (never on the agent).

pub use tikfleet_clock as clock;
pub mod alerts;
pub mod api;
pub mod app;
pub mod auth;
pub mod compile;
pub mod crypto;
pub mod db;
pub mod hub;
pub mod lifecycle;
pub mod metrics;
pub mod notify;
pub mod periodic;
pub mod server;

/// The highest agent⇄controller protocol version this controller speaks.
pub const PROTOCOL_VERSION: u16 = tikfleet_shared::protocol::PROTOCOL_VERSION;
