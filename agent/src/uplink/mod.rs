//! The uplink: the agent's side of the link to the controller.
//!
//! # Layout
//!
//! - [`enroll`]: enrollment and identity-key rotation over HTTPS.
//! - [`tls`]: which certificates the agent trusts for the controller.
//! - [`backoff`]: reconnect delays (exponential, capped, jittered, reset after a healthy
//!   connection).
//! - [`fetch`]: backup parts a restore job asks the controller for, carried by the session.
//! - `conn`: one WebSocket connection: challenge → signed hello → welcome, then the session
//!   (see its docs for what is stored before what is acknowledged).
//!
//! [`Uplink::run`] connects, serves a connection until it ends, waits a backoff, and connects
//! again, until shutdown or until the controller says the agent was revoked: then the uplink
//! records it (shown by `status`) and stops for good, while jobs already queued keep running.
//! Its [`status`](Uplink::status) is a watch channel, so tests and the `run` command follow
//! it without polling. Time (heartbeats, handshake deadlines, backoff) comes from the
//! injectable clock; only the TCP/TLS/WebSocket connect timeout is wall time.

pub mod backoff;
mod conn;
pub mod enroll;
pub mod fetch;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use tikfleet_shared::UnixMillis;
use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::desired::DesiredStore;
use crate::identity::{Identity, IdentityError, IdentityStore};
use crate::outbox::Outbox;
use crate::queue::Queue;
use crate::registry::Registry;
use crate::store::Store;
use backoff::Backoff;
use tls::TlsConfigError;

/// Uplink settings.
#[derive(Clone, Debug)]
pub struct UplinkConfig {
    /// First reconnect step.
    pub reconnect_min: Duration,
    /// Largest reconnect step.
    pub reconnect_max: Duration,
    /// A connection that lasted this long after its welcome resets the backoff.
    pub healthy_after: Duration,
    /// Longest TCP connect, TLS handshake and WebSocket upgrade (wall time).
    pub connect_timeout: Duration,
    /// Longest wait for the challenge and for the welcome (on the clock).
    pub hello_timeout: Duration,
    /// Most records sent and not yet acknowledged.
    pub window: usize,
    /// Most incoming durable messages stored per commit.
    pub batch: usize,
    /// A controller silent for this many heartbeat intervals is dropped.
    pub missed_heartbeats: u32,
    /// Seed of the backoff jitter.
    pub seed: u64,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        Self {
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            healthy_after: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
            window: 256,
            batch: 256,
            missed_heartbeats: 3,
            seed: rand::random(),
        }
    }
}

/// What the uplink works with: the same store, queue, outbox and registry the executor uses.
#[derive(Clone, Debug)]
pub struct Parts {
    /// The durable store (for group commits).
    pub store: Store,
    /// The identity and the uplink record.
    pub identities: Arc<IdentityStore>,
    /// Routers, with sealed passwords.
    pub registry: Arc<Registry>,
    /// The job queue.
    pub queue: Arc<Queue>,
    /// Records for the controller.
    pub outbox: Arc<Outbox>,
    /// Desired state per router.
    pub desired: Arc<DesiredStore>,
    /// Time.
    pub clock: SharedClock,
}

/// Where the link stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Connecting or in the handshake.
    Connecting,
    /// Welcomed; the session runs.
    Connected {
        /// The negotiated protocol version.
        version: u16,
    },
    /// Waiting to reconnect.
    Waiting {
        /// The next attempt.
        until: UnixMillis,
    },
    /// The controller revoked this agent; the uplink stopped for good.
    Revoked {
        /// The controller's reason.
        reason: String,
    },
    /// Shut down.
    Stopped,
}

/// The uplink's status, published on every change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UplinkStatus {
    /// Where the link stands.
    pub state: LinkState,
    /// Connection attempts so far.
    pub attempts: u64,
    /// Welcomes so far.
    pub connects: u64,
    /// Why the last connection ended or failed.
    pub last_error: Option<String>,
}

/// Why the uplink cannot start.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The agent is not enrolled.
    #[error("this agent is not enrolled with a controller")]
    NotEnrolled,
    /// The TLS configuration is unusable.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// The identity could not be read.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// Completes once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// How [`Uplink::run`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UplinkEnd {
    /// Shutdown was asked for.
    Stopped,
    /// The controller revoked the agent.
    Revoked(String),
}

/// The uplink. See the module documentation.
pub struct Uplink {
    parts: Parts,
    identity: Identity,
    tls: Arc<rustls::ClientConfig>,
    config: UplinkConfig,
    status: watch::Sender<UplinkStatus>,
    fetcher: fetch::BackupFetcher,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("agent", &self.identity.agent_id())
            .field("hub", &self.identity.enrollment.hub_url)
            .finish_non_exhaustive()
    }
}

impl Uplink {
    /// An uplink for the enrolled identity in `parts.identities`.
    pub fn new(parts: Parts, config: UplinkConfig) -> Result<Self, UplinkError> {
        let identity = parts.identities.load()?.ok_or(UplinkError::NotEnrolled)?;
        let tls = tls::client_config(
            identity.enrollment.hub_ca_pem.as_deref(),
            identity.enrollment.ca_pem.as_deref(),
        )?;
        let (status, _) = watch::channel(UplinkStatus {
            state: LinkState::Connecting,
            attempts: 0,
            connects: 0,
            last_error: None,
        });
        Ok(Self {
            parts,
            identity,
            tls,
            config,
            status,
            fetcher: fetch::BackupFetcher::new(),
        })
    }

    /// Carries the backup-part requests of `fetcher` (the one restores use, see
    /// [`Backups::with_restores`](crate::backup::Backups::with_restores)) to the controller.
    #[must_use]
    pub fn with_fetcher(mut self, fetcher: fetch::BackupFetcher) -> Self {
        self.fetcher = fetcher;
        self
    }

    /// Follows the uplink's status.
    #[must_use]
    pub fn status(&self) -> watch::Receiver<UplinkStatus> {
        self.status.subscribe()
    }

    fn set_state(&self, state: LinkState) {
        self.status.send_modify(|s| s.state = state);
    }

    /// Connects and reconnects until `shutdown` turns true or the agent is revoked.
    pub async fn run(&mut self, mut shutdown: watch::Receiver<bool>) -> UplinkEnd {
        let mut backoff = Backoff::new(
            self.config.reconnect_min,
            self.config.reconnect_max,
            self.config.seed,
        );
        let mut use_pending = false;
        loop {
            if *shutdown.borrow() {
                break;
            }
            self.set_state(LinkState::Connecting);
            self.status.send_modify(|s| s.attempts += 1);
            let end = conn::connect_once(self, use_pending, &mut shutdown).await;
            let error = match end {
                conn::ConnEnd::Shutdown => break,
                conn::ConnEnd::Revoked(reason) => {
                    tracing::error!(%reason, "the controller revoked this agent; the uplink stops");
                    if let Err(e) = self
                        .parts
                        .identities
                        .update_uplink(|u| u.revoked = Some(reason.clone()))
                        .await
                    {
                        tracing::error!(error = %e, "cannot record the revocation");
                    }
                    self.status.send_modify(|s| {
                        s.state = LinkState::Revoked {
                            reason: reason.clone(),
                        };
                        s.last_error = Some(format!("revoked: {reason}"));
                    });
                    return UplinkEnd::Revoked(reason);
                }
                conn::ConnEnd::Closed { reason, healthy } => {
                    if healthy {
                        backoff.reset();
                    }
                    if use_pending {
                        // The pending key was accepted and promoted: use it from now on.
                        use_pending = false;
                        match self.parts.identities.load() {
                            Ok(Some(identity)) => self.identity = identity,
                            Ok(None) => return UplinkEnd::Stopped,
                            Err(e) => tracing::error!(error = %e, "cannot reload the identity"),
                        }
                    }
                    reason
                }
                conn::ConnEnd::Refused { reason, auth } => {
                    // A rotated key the controller may have registered is tried once the
                    // current key is refused (and the other way round).
                    if auth && self.identity.sign_pending(b"").is_some() {
                        use_pending = !use_pending;
                    }
                    reason
                }
                conn::ConnEnd::Failed(reason) => reason,
            };
            tracing::warn!(reason = %error, "uplink connection ended");
            let delay = backoff.next_delay();
            let until = self.parts.clock.now().saturating_add(delay);
            self.status.send_modify(|s| {
                s.state = LinkState::Waiting { until };
                s.last_error = Some(error);
            });
            tokio::select! {
                () = self.parts.clock.sleep_until(until) => {}
                () = stopped(&mut shutdown) => break,
            }
        }
        self.set_state(LinkState::Stopped);
        UplinkEnd::Stopped
    }
}
