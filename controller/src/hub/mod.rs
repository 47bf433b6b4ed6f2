//! The agent hub: the WebSocket-over-TLS endpoint agents dial out to.

pub mod signals;
pub mod store;

pub use signals::{AgentSignals, Signal};
pub use store::{AgentIdentity, AgentKey, HubStore, RouterForAgent, RouterTlsSetting};
