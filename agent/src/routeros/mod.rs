//! The RouterOS API driver, over mikrotik-rs: plain API and API-SSL, a small pool of
//! pipelined connections per router, timeouts, reconnection, version detection, error
//! classification and a command observer for the audit log.
//!
//! # Layout
//!
//! - [`client`]: [`RouterOsClient`], the pool, [`RouterOsClient::run`] and
//!   [`RouterOsClient::run_many`] (pipelined), the update check.
//! - [`command`]: [`Cmd`], a command that knows its secrets, and [`Row`].
//! - [`error`]: [`DriverError`] and the one classification table.
//! - [`version`]: [`RosVersion`], the 6.43+ policy and per-version [`Capabilities`].
//! - [`tls`]: rustls configurations for `Verify` and `Pin` ([`tls::PinVerifier`]).
//! - [`observer`]: [`CommandObserver`], [`CommandEvent`], [`MemoryObserver`].
//!
//! The operations that use this driver ("make it so" by name) are in [`crate::ops`].
//!
//! mikrotik-rs quirks handled here: `!done` loses `=ret=` (callers key by name and read ids
//! back with a print), a `!trap` ends the command (only the first trap is seen), `!empty`
//! ends it too (7.18+), and a dead connection shows up as a closed reply channel.

pub mod client;
pub mod command;
pub mod error;
pub mod observer;
pub mod tls;
pub mod version;

pub use client::{DriverConfig, RouterOsClient, UpdateCheck};
pub use command::{Cmd, Row};
pub use error::DriverError;
pub use observer::{CommandEvent, CommandObserver, MemoryObserver, NoopObserver};
pub use version::{Capabilities, RosVersion};
