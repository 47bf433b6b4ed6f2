//! tikfleet-agent: the site agent that sits beside a tenant's routers.
//!
//! # Layout
//!
//! - [`cli`]: the technician's command line (`router`, `queue`, `status`).
//! - [`clock`]: injectable time.
//! - [`config`]: the configuration file (TOML) and its defaults.
//! - [`router`]: a router's endpoint and credentials, as the drivers take them.
//! - [`store`]: the durable sled store (one tree per concern), group commit, size cap.
//! - [`vault`]: router passwords sealed at rest (XChaCha20-Poly1305), the vault key.
//! - [`registry`]: the routers this agent serves, with sealed passwords.
//! - [`queue`]: the durable job queue (priorities, retries, dead letters) over a storage
//!   trait with a sled implementation and an in-memory model.
//! - [`outbox`]: the durable, sequence-numbered outbox of records for the controller.
//! - [`ratelimit`]: token buckets per router and tenant, per-router concurrency limits.
//! - [`routeros`]: the RouterOS API driver: pooled, pipelined, classified, observed.
//! - [`ops`]: idempotent router operations ("make it so" by name) for the router-level jobs.
//! - [`audit`]: the command observer that writes audit records to the outbox, and the one
//!   ordered, lossless pipe the executor's records share with them.
//! - [`executor`]: runs queued jobs on routers: priorities, concurrency and rate limits,
//!   retries with backoff, dead letters and self-healing, job updates.
//! - [`backup`]: the `backup_now` job (text export and encrypted binary backup, sent to the
//!   controller in outbox chunks) and the per-router backup passwords sealed by the vault.
//! - [`heal`]: self-healing of routers whose API stops answering: an optional,
//!   off-by-default reboot over SSH, limited and recorded in the store.
//! - [`hostkeys`]: SSH host keys pinned on first use, kept in the store.
//! - [`ssh`]: the SSH driver (libssh2 in blocking tasks): `/export`, console commands, SFTP
//!   file transfer, host keys pinned on first use.
//! - [`identity`]: who the agent is at the controller, its identity and seal keys (sealed by
//!   the vault), and what the uplink recorded (revoked, last connected).
//! - [`desired`]: desired state per router as the controller sent it, highest generation kept.
//! - [`uplink`]: enrollment and key rotation over HTTPS, and the WebSocket link to the
//!   controller's hub: receives routers, desired states and jobs, sends the outbox.
//!
//! The vault, durable store, queue, outbox, drivers, executor and command line are being
//! built (issue 4). The crate depends on no tikfleet crate but `tikfleet-shared`.

pub mod audit;
pub mod backup;
pub mod cli;
pub use tikfleet_clock as clock;
pub mod config;
pub mod credentials;
pub mod desired;
pub mod executor;
pub mod heal;
pub mod hostkeys;
pub mod identity;
pub mod metrics;
pub mod ops;
pub mod outbox;
pub mod probe;
pub mod queue;
pub mod ratelimit;
pub mod reconcile;
pub mod registry;
pub mod router;
pub mod routeros;
pub mod ssh;
pub mod store;
pub mod uplink;
pub mod vault;

/// The highest agent⇄controller protocol version this agent speaks.
pub const PROTOCOL_VERSION: u16 = tikfleet_shared::protocol::PROTOCOL_VERSION;
