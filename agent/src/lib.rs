//! tikfleet-agent: the site agent that sits beside a tenant's routers.
//!
//! Its parts (vault, RouterOS and SSH drivers, durable queue, executor, reconciler, probes and
//! the uplink to the controller) arrive with the agent issue; for now the crate only fixes its
//! place in the workspace and its one dependency on our code: `tikfleet-shared`.

/// The highest agent⇄controller protocol version this agent speaks.
pub const PROTOCOL_VERSION: u16 = tikfleet_shared::protocol::PROTOCOL_VERSION;
