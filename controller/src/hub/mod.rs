//! The agent hub: the WebSocket-over-TLS endpoint agents dial out to.
//!
//! Agents open one connection each (`wss://…/agent`); the hub proves who they are (a signed
//! challenge checked against the keys enrollment registered), pushes them their routers,
//! desired states and jobs, and commits the records they send back before acknowledging
//! them. The protocol's messages, codec and sequence rules live in `tikfleet-shared`; this
//! module only moves bytes and talks to storage through [`HubStore`].
//!
//! # Layout
//!
//! - [`store`]: what the hub needs from storage (implemented by the SQL store).
//! - [`signals`]: how the rest of the controller tells a live session that something changed.
//! - [`tls`]: the server certificate: PEM files, or self-signed for the demo.
//! - `conn`: one connection: upgrade, handshake, session loop (see its docs for the rules).
//! - `auth`: checking a hello's signature. `outgoing`: what is new to push on a connection.
//! - `batch`: gathers the store calls of many sessions into batched ones.
//! - [`connections`]: which agents are connected; a newer connection supersedes an older one.
//!
//! # Running
//!
//! [`Hub::bind`] listens and returns a [`RunningHub`] with the bound address and a graceful
//! [`RunningHub::shutdown`]; [`Hub::serve`] runs on a listener until a shutdown future
//! completes (what `main` uses with its signal handling). On shutdown the hub stops
//! accepting, closes every session with `going_away`, and waits for them (up to
//! [`HubConfig::shutdown_grace`]).

mod auth;
mod batch;
mod conn;
pub mod connections;
mod outgoing;
pub mod signals;
pub mod store;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use auth::{AuthError, verify_hello};
pub use connections::Connections;
pub use outgoing::router_config;
pub use signals::{AgentSignals, Signal};
pub use store::{
    AgentIdentity, AgentKey, BackupSlice, Delivered, HubStore, PushRead, PushRequest,
    RouterForAgent, RouterTlsSetting,
};
use tikfleet_shared::protocol::AgentSettings;
pub use tls::{HubTls, SelfSigned, TlsSetupError};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::SharedClock;

/// The hub's settings.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// What every agent is told in its welcome; `heartbeat_interval_ms` is also the hub's own.
    pub settings: AgentSettings,
    /// Longest TLS handshake plus WebSocket upgrade (wall time).
    pub handshake_timeout: Duration,
    /// Longest wait for the hello after the challenge (on the hub's clock).
    pub hello_timeout: Duration,
    /// A peer silent for this many heartbeat intervals is closed.
    pub missed_heartbeats: u32,
    /// Most durable messages unacknowledged by one agent at a time.
    pub window: usize,
    /// Most records committed in one store transaction.
    pub record_batch: usize,
    /// Frames queued for one connection's writer.
    pub send_queue: usize,
    /// Most sessions whose store reads (or acknowledged deliveries) go in one batched store
    /// call.
    pub read_batch: usize,
    /// How long shutdown waits for sessions to close.
    pub shutdown_grace: Duration,
    /// Most bytes of a backup sent in one `backup_part` (at most
    /// [`MAX_BACKUP_PART`](tikfleet_shared::protocol::MAX_BACKUP_PART)).
    pub backup_part_size: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            settings: AgentSettings::default(),
            handshake_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
            missed_heartbeats: 3,
            window: 256,
            record_batch: 256,
            send_queue: 32,
            read_batch: 500,
            shutdown_grace: Duration::from_secs(5),
            // A multiple of 3 below 256 KiB: a part is then whole base64 groups of the blob.
            backup_part_size: 255 * 1024,
        }
    }
}

/// The hub over a store. Cheap to clone.
pub struct Hub<H: HubStore> {
    shared: Arc<conn::Shared<H>>,
}

impl<H: HubStore> Clone for Hub<H> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<H: HubStore> std::fmt::Debug for Hub<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<H: HubStore> Hub<H> {
    /// A hub serving with `tls`, reading and writing through `store`, woken by `signals`.
    #[must_use]
    pub fn new(
        tls: &HubTls,
        store: H,
        signals: AgentSignals,
        clock: SharedClock,
        config: HubConfig,
    ) -> Self {
        Self {
            shared: Arc::new(conn::Shared {
                store,
                signals,
                clock,
                config,
                connections: Connections::default(),
                batches: std::sync::OnceLock::new(),
                acceptor: tls.acceptor(),
            }),
        }
    }

    /// The live connections.
    #[must_use]
    pub fn connections(&self) -> &Connections {
        &self.shared.connections
    }

    /// Serves agents on `listener` until `shutdown` completes, then closes every session
    /// (`going_away`) and waits for them.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        self.shared.batches.get_or_init(|| {
            batch::Batches::spawn(&self.shared.store, self.shared.config.read_batch)
        });
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        tasks.spawn(conn::serve(
                            Arc::clone(&self.shared),
                            tcp,
                            peer,
                            stopped.clone(),
                        ));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait a moment before the next
                        // accept instead of spinning.
                        tracing::warn!(error = %e, "cannot accept an agent connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(res) = tasks.join_next(), if !tasks.is_empty() => log_join(res),
            }
        }
        drop(listener);
        let _ = stop.send(true);
        let drained = tokio::time::timeout(self.shared.config.shutdown_grace, async {
            while let Some(res) = tasks.join_next().await {
                log_join(res);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "agent sessions did not close in time; dropping them"
            );
            tasks.shutdown().await;
        }
    }

    /// Listens on `addr` and serves in a background task.
    pub async fn bind(self, addr: SocketAddr) -> std::io::Result<RunningHub> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let connections = self.shared.connections.clone();
        let task = tokio::spawn(async move {
            self.serve(listener, async {
                let _ = stopped.await;
            })
            .await;
        });
        Ok(RunningHub {
            local_addr,
            connections,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

fn log_join(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res
        && e.is_panic()
    {
        tracing::error!(error = %e, "an agent session panicked");
    }
}

/// A hub serving in the background (from [`Hub::bind`]).
#[derive(Debug)]
pub struct RunningHub {
    local_addr: SocketAddr,
    connections: Connections,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningHub {
    /// The address it listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The live connections.
    #[must_use]
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Stops accepting, closes every session with `going_away`, and waits for them.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
