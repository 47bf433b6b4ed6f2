//! One connection of the uplink: connect, challenge → signed hello → welcome, then the
//! session until either side closes.
//!
//! # What is stored before what is acknowledged
//!
//! The controller's durable messages (this connection's seqs, from 1) are collected into a
//! batch while frames keep arriving (up to `UplinkConfig::batch`), then applied in order:
//!
//! - `router_config`: the sealed password is opened with the agent's seal key and the router
//!   is added, replaced or removed in the [`Registry`](crate::registry::Registry) (password
//!   sealed again by the vault), highest revision kept;
//! - `desired_state`: stored in [`DesiredStore`](crate::desired::DesiredStore), highest
//!   generation kept;
//! - `job`: enqueued in the durable queue (idempotent by id and idempotency key; consecutive
//!   jobs are enqueued together so one group commit covers them);
//! - `job_cancel`: the job is cancelled if it has not finished.
//!
//! One store commit then covers the batch, and only then does the ack move. A message that can
//! never apply (another tenant's, a password sealed to another key) is logged and acked, so
//! the stream does not stall; a storage failure closes the connection unacknowledged and the
//! controller pushes again on the next one.
//!
//! A restore's backup-part requests ([`BackupFetcher`](super::fetch::BackupFetcher)) are taken
//! while the session runs and sent as `backup_fetch`; each stays with the session until its
//! `backup_part` arrives, and is dropped (its asker told the link dropped) when the
//! connection ends. An answer nobody asked for on this connection is ignored.
//!
//! The agent's records go out from the outbox's last ack, only committed ones, at most
//! `UplinkConfig::window` unacknowledged; the controller's acks trim the outbox. Reading stops
//! while a batch is full (backpressure to TCP); a writer task owns the socket's sending half.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tikfleet_shared::codec::{self, MAX_FRAME_SIZE};
use tikfleet_shared::job::{Job, JobCancel};
use tikfleet_shared::protocol::{
    Ack, BackupFetch, BackupPart, Close, CloseCode, Envelope, Hello, IdentityProof,
    MIN_SUPPORTED_VERSION, Message, OutboxPosition, PROTOCOL_VERSION, Ping, Pong, ProtocolError,
    RouterConfig, RouterTls, SUPPORTED_VERSIONS, hello_signing_payload,
};
use tikfleet_shared::record::{DropReason, OutboxRecord};
use tikfleet_shared::session::DurableStream;
use tikfleet_shared::{ErrorCode, UnixMillis};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::fetch::PendingFetch;
use super::{LinkState, Uplink, stopped};
use crate::queue::QueueError;
use crate::router::{RouterEndpoint, TlsMode};

type Ws = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// How one connection ended.
#[derive(Debug)]
pub(super) enum ConnEnd {
    /// Shutdown was asked for (a `close{going_away}` was sent).
    Shutdown,
    /// The controller revoked the agent.
    Revoked(String),
    /// The controller refused the hello (`auth`: the identity proof was refused).
    Refused { reason: String, auth: bool },
    /// A welcomed session ended; `healthy` if it lasted long enough to reset the backoff.
    Closed { reason: String, healthy: bool },
    /// Connecting or the handshake failed.
    Failed(String),
}

/// The WebSocket limits: the codec's frame limit, small buffers.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(2 * MAX_FRAME_SIZE)
        .max_message_size(Some(MAX_FRAME_SIZE))
        .max_frame_size(Some(MAX_FRAME_SIZE))
}

/// TCP, TLS and the WebSocket upgrade to `url` (`wss://host:port/path`).
async fn open(url: &str, tls: Arc<rustls::ClientConfig>) -> Result<Ws, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad hub url {url:?}: {e}"))?;
    if parsed.scheme() != "wss" {
        return Err(format!("the hub url {url:?} must start with wss://"));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("the hub url {url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.clone()).map_err(|e| format!("bad host {host}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls handshake with {host}:{port} failed: {e}"))?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
        .await
        .map_err(|e| format!("websocket upgrade at {url} failed: {e}"))?;
    Ok(ws)
}

/// Writes queued frames, flushing once per burst; closes the WebSocket at the end.
async fn write_frames(mut sink: SplitSink<Ws, WsMessage>, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = rx.recv().await {
        if sink.feed(WsMessage::Binary(frame.into())).await.is_err() {
            return;
        }
        while let Ok(more) = rx.try_recv() {
            if sink.feed(WsMessage::Binary(more.into())).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

/// One incoming WebSocket message, classified.
enum Read {
    Envelope(Box<Envelope>),
    Skip,
    /// Send `close` with this code and reason, then end.
    Close(CloseCode, String),
    /// The connection is gone.
    Gone(String),
}

fn classify(item: Option<Result<WsMessage, WsError>>) -> Read {
    match item {
        None => Read::Gone("the controller closed the connection".into()),
        Some(Ok(WsMessage::Binary(bytes))) => match codec::decode(&bytes) {
            Ok(envelope) => Read::Envelope(Box::new(envelope)),
            Err(e) => Read::Close(e.close_code(), e.to_string()),
        },
        Some(Ok(WsMessage::Text(_))) => Read::Close(
            CloseCode::ProtocolError,
            "text frames are not part of the protocol".into(),
        ),
        Some(Ok(WsMessage::Close(_))) => Read::Gone("the controller closed the WebSocket".into()),
        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => Read::Skip,
        Some(Err(WsError::Capacity(e))) => Read::Close(CloseCode::FrameTooLarge, e.to_string()),
        Some(Err(e)) => Read::Gone(format!("websocket error: {e}")),
    }
}

/// Control messages kept at most (older pongs are dropped).
const MAX_CONTROL: usize = 8;

/// The longest a stopping agent waits for the acks of records it sent (real time: a stop
/// must not wait on an injected clock).
const DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// One live connection.
struct Link<'a> {
    up: &'a Uplink,
    tx: mpsc::Sender<Vec<u8>>,
    stream: SplitStream<Ws>,
    last_recv: UnixMillis,
    last_sent: UnixMillis,
}

/// Session state without I/O.
struct Session {
    version: u16,
    /// Outgoing: the outbox's seqs. Incoming: this connection's controller seqs.
    stream: DurableStream<()>,
    /// Incoming durable messages not yet stored.
    batch: Vec<(u64, Message)>,
    /// Committed outbox records fetched and not yet sent.
    ready: VecDeque<(u64, OutboxRecord)>,
    /// The highest outbox seq fetched into `ready` (or sent).
    fetched: u64,
    control: VecDeque<Message>,
    /// Backup-part requests to send, oldest first.
    fetches: VecDeque<BackupFetch>,
    /// Backup-part requests sent and not answered yet (dropped with the session).
    asked: Vec<PendingFetch>,
    ack_sent: u64,
    force_ack: bool,
    ping_nonce: u64,
}

impl Session {
    /// Takes a restore's requests for backup parts: each is sent, then kept until answered.
    fn take_fetches(&mut self, pending: Vec<PendingFetch>) {
        // Requests whose askers timed out and asked again are not kept for ever.
        self.asked.retain(|p| !p.abandoned());
        for p in pending {
            self.fetches.push_back(p.request().clone());
            self.asked.push(p);
        }
    }

    /// Hands a `backup_part` to the request it answers (by job, backup and offset).
    fn on_part(&mut self, part: BackupPart) {
        let found = self.asked.iter().position(|p| {
            let r = p.request();
            r.job_id == part.job_id && r.backup_id == part.backup_id && r.offset == part.offset
        });
        match found {
            Some(i) => self.asked.swap_remove(i).answer(part),
            None => {
                tracing::debug!(job = %part.job_id, offset = part.offset, "ignoring a backup part nobody asked for");
            }
        }
    }

    fn push_control(&mut self, msg: Message) {
        if self.control.len() >= MAX_CONTROL {
            self.control.pop_front();
        }
        self.control.push_back(msg);
    }

    fn unacked(&self) -> usize {
        self.stream.unacked().len()
    }

    fn wants_send(&self, window: usize) -> bool {
        !self.control.is_empty()
            || !self.fetches.is_empty()
            || (!self.ready.is_empty() && self.unacked() < window)
            || self.force_ack
            || self.stream.ack() > self.ack_sent
    }

    /// The next frame: control, then records within the window, else a standalone ack.
    fn next_frame(&mut self, window: usize) -> Result<Option<Vec<u8>>, (CloseCode, String)> {
        let ack = self.stream.ack();
        let (seq, msg) = if let Some(msg) = self.control.pop_front() {
            (None, msg)
        } else if let Some(fetch) = self.fetches.pop_front() {
            (None, Message::BackupFetch(fetch))
        } else if self.unacked() < window
            && let Some((seq, record)) = self.ready.pop_front()
        {
            if seq != self.stream.next_seq() {
                return Err((
                    CloseCode::Internal,
                    format!(
                        "outbox seq {seq} where {} was expected",
                        self.stream.next_seq()
                    ),
                ));
            }
            (Some(seq), Message::Record(record))
        } else if self.force_ack || ack > self.ack_sent {
            (None, Message::Ack(Ack {}))
        } else {
            return Ok(None);
        };
        let mut envelope = Envelope {
            version: self.version,
            seq,
            ack,
            msg,
        };
        let bytes = match codec::encode(&envelope) {
            Ok(bytes) => bytes,
            Err(e) if seq.is_some() => {
                // A record too large to send keeps its seq as a tombstone (no gap).
                tracing::error!(seq, error = %e, "an outbox record cannot be sent; a tombstone goes instead");
                envelope.msg = Message::Record(OutboxRecord::dropped(DropReason::Corrupt));
                codec::encode(&envelope).map_err(|e| (CloseCode::Internal, e.to_string()))?
            }
            Err(e) => return Err((CloseCode::Internal, e.to_string())),
        };
        if seq.is_some() {
            self.stream.push(());
        }
        self.ack_sent = ack;
        self.force_ack = false;
        Ok(Some(bytes))
    }
}

/// What woke the session loop.
enum Event {
    Nothing,
    Shutdown,
    Sent,
    Pushed,
    Received,
    Envelope(Box<Envelope>),
    Apply,
    Timer,
    Close(CloseCode, String),
    Gone(String),
}

/// Connects once and serves the connection to its end.
pub(super) async fn connect_once(
    up: &Uplink,
    use_pending: bool,
    shutdown: &mut watch::Receiver<bool>,
) -> ConnEnd {
    let url = up.identity.enrollment.hub_url.clone();
    let opened = tokio::select! {
        res = tokio::time::timeout(up.config.connect_timeout, open(&url, Arc::clone(&up.tls))) => res,
        () = stopped(shutdown) => return ConnEnd::Shutdown,
    };
    let ws = match opened {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return ConnEnd::Failed(e),
        Err(_) => {
            return ConnEnd::Failed(format!(
                "no connection to {url} within {} s",
                up.config.connect_timeout.as_secs()
            ));
        }
    };
    let (sink, stream) = ws.split();
    let (tx, rx) = mpsc::channel(32);
    let writer = tokio::spawn(write_frames(sink, rx));
    let now = up.parts.clock.now();
    let mut link = Link {
        up,
        tx,
        stream,
        last_recv: now,
        last_sent: now,
    };
    let end = link.run(use_pending, shutdown).await;
    drop(link);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    end
}

impl Link<'_> {
    async fn send(&mut self, envelope: &Envelope) -> Result<(), String> {
        let bytes = codec::encode(envelope).map_err(|e| e.to_string())?;
        self.tx
            .send(bytes)
            .await
            .map_err(|_| "the connection's writer stopped".to_owned())?;
        self.last_sent = self.up.parts.clock.now();
        Ok(())
    }

    /// Sends `close` (best effort, without waiting on a full queue for long).
    async fn close(&mut self, code: CloseCode, reason: &str) {
        let envelope = Envelope {
            version: MIN_SUPPORTED_VERSION,
            seq: None,
            ack: 0,
            msg: Message::Close(Close {
                code,
                reason: reason.to_owned(),
            }),
        };
        if let Ok(bytes) = codec::encode(&envelope) {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.tx.send(bytes)).await;
        }
    }

    /// Reads the next envelope before `deadline` (handshake).
    async fn handshake_read(
        &mut self,
        deadline: UnixMillis,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Envelope, ConnEnd> {
        let clock = Arc::clone(&self.up.parts.clock);
        loop {
            let read = tokio::select! {
                item = self.stream.next() => classify(item),
                () = clock.sleep_until(deadline) => Read::Close(
                    CloseCode::ProtocolError,
                    "the controller did not answer the handshake in time".into(),
                ),
                () = stopped(shutdown) => {
                    self.close(CloseCode::GoingAway, "the agent is stopping").await;
                    return Err(ConnEnd::Shutdown);
                }
            };
            match read {
                Read::Envelope(envelope) => {
                    self.last_recv = clock.now();
                    return Ok(*envelope);
                }
                Read::Skip => {}
                Read::Close(code, reason) => {
                    self.close(code, &reason).await;
                    return Err(ConnEnd::Failed(reason));
                }
                Read::Gone(reason) => return Err(ConnEnd::Failed(reason)),
            }
        }
    }

    /// Challenge → hello → welcome. Returns the session and the welcome's heartbeat.
    async fn handshake(
        &mut self,
        use_pending: bool,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(Session, Duration), ConnEnd> {
        let parts = &self.up.parts;
        let identity = &self.up.identity;
        let hello_timeout = self.up.config.hello_timeout;
        let deadline = parts.clock.now().saturating_add(hello_timeout);
        let challenge = self.handshake_read(deadline, shutdown).await?;
        let nonce = match challenge.msg {
            Message::Challenge(c) => c.nonce,
            Message::Close(c) => {
                return Err(ConnEnd::Failed(format!(
                    "the controller closed: {}",
                    c.reason
                )));
            }
            other => {
                let reason = format!("expected a challenge, got {}", other.name());
                self.close(CloseCode::ProtocolError, &reason).await;
                return Err(ConnEnd::Failed(reason));
            }
        };
        let payload = hello_signing_payload(&nonce, identity.agent_id());
        let (key_id, signature) = if use_pending {
            identity
                .sign_pending(&payload)
                .unwrap_or_else(|| identity.sign(&payload))
        } else {
            identity.sign(&payload)
        };
        let routers = parts
            .desired
            .generations()
            .map_err(|e| ConnEnd::Failed(format!("cannot read desired generations: {e}")))?;
        let stats = parts.outbox.stats();
        let hello = Hello {
            agent_id: identity.agent_id(),
            proof: IdentityProof {
                key_id: key_id.clone(),
                signature,
            },
            min_version: MIN_SUPPORTED_VERSION,
            max_version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            routers,
            outbox: OutboxPosition {
                acked: stats.acked,
                next_seq: stats.last_seq + 1,
                pending_bytes: stats.bytes,
            },
        };
        self.send(&Envelope {
            version: MIN_SUPPORTED_VERSION,
            seq: None,
            ack: 0,
            msg: Message::Hello(hello),
        })
        .await
        .map_err(ConnEnd::Failed)?;

        let deadline = parts.clock.now().saturating_add(hello_timeout);
        let answer = self.handshake_read(deadline, shutdown).await?;
        let welcome = match answer.msg {
            Message::Welcome(w) => w,
            Message::Revoked(r) => return Err(ConnEnd::Revoked(r.reason)),
            Message::Close(c) => {
                return Err(ConnEnd::Refused {
                    auth: c.code == CloseCode::AuthenticationFailed,
                    reason: format!(
                        "the controller refused the hello: {:?} {}",
                        c.code, c.reason
                    ),
                });
            }
            other => {
                let reason = format!("expected a welcome, got {}", other.name());
                self.close(CloseCode::ProtocolError, &reason).await;
                return Err(ConnEnd::Failed(reason));
            }
        };
        if welcome.agent_id != identity.agent_id()
            || welcome.tenant_id != identity.tenant_id()
            || !SUPPORTED_VERSIONS.contains(&welcome.version)
        {
            let reason = "the welcome names another agent, tenant or an unsupported version";
            self.close(CloseCode::ProtocolError, reason).await;
            return Err(ConnEnd::Failed(reason.into()));
        }
        if use_pending && key_id != identity.enrollment.key_id {
            // The controller knows the rotated key: it is the identity key from now on.
            match parts.identities.promote_pending(&key_id).await {
                Ok(_) => tracing::info!(%key_id, "the rotated identity key is now in use"),
                Err(e) => tracing::error!(error = %e, "cannot promote the rotated identity key"),
            }
        }
        // The controller has everything up to its ack: trim, and send from there.
        if answer.ack > parts.outbox.stats().acked
            && let Err(e) = parts.outbox.ack(answer.ack)
        {
            let reason = format!("the welcome's ack does not fit the outbox: {e}");
            self.close(CloseCode::ProtocolError, &reason).await;
            return Err(ConnEnd::Failed(reason));
        }
        let acked = parts.outbox.stats().acked;
        let stream = DurableStream::resume(acked + 1, 0, std::iter::empty())
            .map_err(|e| ConnEnd::Failed(e.to_string()))?;
        let heartbeat = Duration::from_millis(welcome.settings.heartbeat_interval_ms.max(1_000));
        Ok((
            Session {
                version: welcome.version,
                stream,
                batch: Vec::new(),
                ready: VecDeque::new(),
                fetched: acked,
                control: VecDeque::new(),
                fetches: VecDeque::new(),
                asked: Vec::new(),
                ack_sent: 0,
                force_ack: false,
                ping_nonce: 0,
            },
            heartbeat,
        ))
    }

    async fn run(&mut self, use_pending: bool, shutdown: &mut watch::Receiver<bool>) -> ConnEnd {
        let (mut s, interval) = match self.handshake(use_pending, shutdown).await {
            Ok(ok) => ok,
            Err(end) => return end,
        };
        let up = self.up;
        let clock = Arc::clone(&up.parts.clock);
        let welcomed_at = clock.now();
        up.status.send_modify(|st| {
            st.state = LinkState::Connected { version: s.version };
            st.connects += 1;
        });
        if let Err(e) = up
            .parts
            .identities
            .update_uplink(|u| u.last_connected = Some(welcomed_at))
            .await
        {
            tracing::warn!(error = %e, "cannot record the connection time");
        }
        tracing::info!(agent = %up.identity.agent_id(), version = s.version, "connected to the controller");
        let healthy = |now: UnixMillis| now >= welcomed_at.saturating_add(up.config.healthy_after);
        let silence = interval.saturating_mul(up.config.missed_heartbeats.max(1));
        let window = up.config.window.max(1);
        let outbox = Arc::clone(&up.parts.outbox);
        let fetcher = up.fetcher.clone();
        loop {
            let pushed = outbox.pushed_signal().notified();
            tokio::pin!(pushed);
            pushed.as_mut().enable();
            let asked = fetcher.notified();
            tokio::pin!(asked);
            asked.as_mut().enable();
            s.take_fetches(fetcher.take());
            if s.ready.is_empty() && s.unacked() < window {
                match outbox.read_after(s.fetched, window - s.unacked()) {
                    Ok(records) => {
                        if let Some((last, _)) = records.last() {
                            s.fetched = *last;
                        }
                        s.ready.extend(records);
                    }
                    Err(e) => {
                        self.close(CloseCode::Internal, "the agent cannot read its outbox")
                            .await;
                        return ConnEnd::Failed(format!("cannot read the outbox: {e}"));
                    }
                }
            }
            let wants_send = s.wants_send(window);
            let batch_room = s.batch.len() < up.config.batch.max(1);
            let timer = self
                .last_sent
                .saturating_add(interval)
                .min(self.last_recv.saturating_add(silence));
            let event = tokio::select! {
                biased;
                () = stopped(shutdown) => Event::Shutdown,
                permit = self.tx.reserve(), if wants_send => match permit {
                    Err(_) => Event::Gone("the connection's writer stopped".into()),
                    Ok(permit) => match s.next_frame(window) {
                        Ok(Some(bytes)) => {
                            permit.send(bytes);
                            Event::Sent
                        }
                        Ok(None) => Event::Nothing,
                        Err((code, reason)) => Event::Close(code, reason),
                    },
                },
                item = self.stream.next(), if batch_room => match classify(item) {
                    Read::Envelope(envelope) => Event::Envelope(envelope),
                    Read::Skip => Event::Received,
                    Read::Close(code, reason) => Event::Close(code, reason),
                    Read::Gone(reason) => Event::Gone(reason),
                },
                () = std::future::ready(()), if !s.batch.is_empty() => Event::Apply,
                () = &mut pushed => Event::Pushed,
                () = &mut asked => Event::Pushed,
                () = clock.sleep_until(timer) => Event::Timer,
            };
            let now = clock.now();
            match event {
                Event::Nothing | Event::Pushed => {}
                Event::Shutdown => {
                    self.drain_acks(&mut s).await;
                    self.close(CloseCode::GoingAway, "the agent is stopping")
                        .await;
                    return ConnEnd::Shutdown;
                }
                Event::Sent => self.last_sent = now,
                Event::Received => self.last_recv = now,
                Event::Envelope(envelope) => {
                    self.last_recv = now;
                    match self.on_envelope(&mut s, *envelope) {
                        Ok(()) => {}
                        Err(Ended::Close(code, reason)) => {
                            self.close(code, &reason).await;
                            return ConnEnd::Closed {
                                reason,
                                healthy: healthy(now),
                            };
                        }
                        Err(Ended::Revoked(reason)) => return ConnEnd::Revoked(reason),
                        Err(Ended::Gone(reason)) => {
                            return ConnEnd::Closed {
                                reason,
                                healthy: healthy(now),
                            };
                        }
                    }
                }
                Event::Apply => {
                    if let Err(reason) = self.apply(&mut s).await {
                        self.close(CloseCode::Internal, &reason).await;
                        return ConnEnd::Closed {
                            reason,
                            healthy: healthy(now),
                        };
                    }
                }
                Event::Timer => {
                    if now >= self.last_recv.saturating_add(silence) {
                        let reason =
                            format!("nothing from the controller for {} s", silence.as_secs());
                        self.close(CloseCode::ProtocolError, &reason).await;
                        return ConnEnd::Closed {
                            reason,
                            healthy: healthy(now),
                        };
                    }
                    if now >= self.last_sent.saturating_add(interval) {
                        s.ping_nonce += 1;
                        let nonce = s.ping_nonce;
                        s.push_control(Message::Ping(Ping { nonce }));
                        self.last_sent = now;
                    }
                }
                Event::Close(code, reason) => {
                    self.close(code, &reason).await;
                    return ConnEnd::Closed {
                        reason,
                        healthy: healthy(now),
                    };
                }
                Event::Gone(reason) => {
                    return ConnEnd::Closed {
                        reason,
                        healthy: healthy(now),
                    };
                }
            }
        }
    }

    /// The envelope's cumulative ack of the outbox: trims what the controller committed.
    fn take_ack(&self, s: &mut Session, envelope: &Envelope) -> Result<(), ProtocolError> {
        s.stream.on_ack(envelope.ack)?;
        let outbox = &self.up.parts.outbox;
        if envelope.ack > outbox.stats().acked
            && let Err(e) = outbox.ack(envelope.ack)
        {
            tracing::error!(error = %e, "cannot trim the outbox");
        }
        Ok(())
    }

    /// Before closing for a stop: records the controller received but had not acknowledged
    /// yet are usually acknowledged within a round trip, so wait up to [`DRAIN`] for those
    /// acks and a clean stop leaves nothing to send again. Only acks are taken: anything else
    /// the controller sends meanwhile is not stored, so not acknowledged, and comes again on
    /// the next connection.
    async fn drain_acks(&mut self, s: &mut Session) {
        let drain = async {
            while s.stream.unacked().len() > 0 {
                match classify(self.stream.next().await) {
                    Read::Envelope(envelope) => {
                        if envelope.version != s.version
                            || matches!(envelope.msg, Message::Close(_) | Message::Revoked(_))
                            || self.take_ack(s, &envelope).is_err()
                        {
                            break;
                        }
                    }
                    Read::Skip => {}
                    Read::Close(..) | Read::Gone(_) => break,
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN, drain).await;
    }

    fn on_envelope(&mut self, s: &mut Session, envelope: Envelope) -> Result<(), Ended> {
        match &envelope.msg {
            Message::Close(c) => {
                return Err(Ended::Gone(format!(
                    "the controller closed: {:?} {}",
                    c.code, c.reason
                )));
            }
            Message::Revoked(r) => return Err(Ended::Revoked(r.reason.clone())),
            _ => {}
        }
        let protocol = |e: ProtocolError| Ended::Close(e.close_code(), e.to_string());
        if envelope.version != s.version {
            return Err(protocol(ProtocolError::VersionMismatch {
                expected: s.version,
                got: envelope.version,
            }));
        }
        self.take_ack(s, &envelope).map_err(protocol)?;
        match envelope.msg {
            msg @ (Message::RouterConfig(_)
            | Message::DesiredState(_)
            | Message::Job(_)
            | Message::JobCancel(_)) => {
                let seq = envelope.seq.unwrap_or(0);
                let expected = s.batch.last().map_or(s.stream.ack(), |(seq, _)| *seq) + 1;
                if seq == expected {
                    s.batch.push((seq, msg));
                } else if seq < expected {
                    s.force_ack = true;
                } else {
                    return Err(protocol(ProtocolError::OutOfOrder { expected, got: seq }));
                }
                Ok(())
            }
            Message::Ack(_) | Message::Pong(_) => Ok(()),
            Message::Ping(Ping { nonce }) => {
                s.push_control(Message::Pong(Pong { nonce }));
                Ok(())
            }
            Message::BackupPart(part) => {
                s.on_part(part);
                Ok(())
            }
            other => Err(Ended::Close(
                CloseCode::ProtocolError,
                format!("a controller may not send {}", other.name()),
            )),
        }
    }

    /// Stores the batch in order, commits once, then lets the ack move. On a storage error
    /// nothing more is acked and the reason is returned.
    async fn apply(&mut self, s: &mut Session) -> Result<(), String> {
        let parts = &self.up.parts;
        let mut stored_upto = s.stream.ack();
        let mut jobs: Vec<(u64, Job)> = Vec::new();
        let mut failure = None;
        for (seq, msg) in std::mem::take(&mut s.batch) {
            if failure.is_some() {
                break;
            }
            if let Message::Job(job) = msg {
                jobs.push((seq, job));
                continue;
            }
            match self.enqueue_all(&mut jobs).await {
                Ok(Some(upto)) => stored_upto = upto,
                Ok(None) => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            let applied = match msg {
                Message::RouterConfig(config) => self.apply_router(config),
                Message::DesiredState(state) => {
                    if state.tenant_id == self.up.identity.tenant_id() {
                        parts
                            .desired
                            .put(&state)
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    } else {
                        tracing::error!(router = %state.router_id, "ignoring another tenant's desired state");
                        Ok(())
                    }
                }
                Message::JobCancel(cancel) => self.cancel(cancel).await,
                _ => Ok(()),
            };
            match applied {
                Ok(()) => stored_upto = seq,
                Err(e) => failure = Some(e),
            }
        }
        if failure.is_none() {
            match self.enqueue_all(&mut jobs).await {
                Ok(Some(upto)) => stored_upto = upto,
                Ok(None) => {}
                Err(e) => failure = Some(e),
            }
        }
        if let Err(e) = parts.store.commit().await {
            return Err(format!("cannot store what the controller sent: {e}"));
        }
        while s.stream.ack() < stored_upto {
            let next = s.stream.ack() + 1;
            s.stream.commit(next).map_err(|e| e.to_string())?;
        }
        match failure {
            None => Ok(()),
            Some(e) => Err(format!("cannot store what the controller sent: {e}")),
        }
    }

    /// Enqueues the collected jobs together (one group commit); returns the last seq stored.
    async fn enqueue_all(&self, jobs: &mut Vec<(u64, Job)>) -> Result<Option<u64>, String> {
        if jobs.is_empty() {
            return Ok(None);
        }
        let parts = &self.up.parts;
        let tenant = self.up.identity.tenant_id();
        let now = parts.clock.now();
        let taken = std::mem::take(jobs);
        let last = taken.last().map(|(seq, _)| *seq);
        let results = futures_util::future::join_all(taken.into_iter().map(|(_, job)| {
            let queue = Arc::clone(&parts.queue);
            async move {
                if job.tenant_id != tenant {
                    tracing::error!(job = %job.id, "ignoring another tenant's job");
                    return Ok(());
                }
                queue.enqueue(job, now).await.map(|_| ())
            }
        }))
        .await;
        for result in results {
            // A refused job (storage full) is not acked; the controller pushes it again.
            result.map_err(|e: QueueError| e.to_string())?;
        }
        Ok(last)
    }

    async fn cancel(&self, cancel: JobCancel) -> Result<(), String> {
        let now = self.up.parts.clock.now();
        match self.up.parts.queue.cancel(cancel.job_id, now).await {
            Ok(_) => {
                tracing::info!(job = %cancel.job_id, "job cancelled by the controller");
                Ok(())
            }
            Err(QueueError::NotFound { .. } | QueueError::InvalidState { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Opens the password and updates the registry (not committed; the batch commits).
    fn apply_router(&self, config: RouterConfig) -> Result<(), String> {
        let identity = &self.up.identity;
        let id = config.router_id;
        if config.tenant_id != identity.tenant_id() {
            tracing::error!(router = %id, "ignoring another tenant's router");
            return Ok(());
        }
        let password = if config.removed {
            tikfleet_shared::Secret::new("")
        } else {
            match identity.open_password(&config.sealed_password) {
                Ok(password) => password,
                Err(e) => {
                    // Acked anyway: the same bytes will never open. Staff must enter the
                    // password again (sealed to this agent's key).
                    tracing::error!(router = %id, error = %e, "cannot open the router's password");
                    return Ok(());
                }
            }
        };
        let tls = match config.tls {
            RouterTls::Plain {} => TlsMode::Plain,
            RouterTls::Verify {
                ca_pem,
                server_name,
            } => TlsMode::Verify {
                ca_pem: ca_pem.unwrap_or_default(),
                server_name: server_name.unwrap_or_else(|| config.host.clone()),
            },
            RouterTls::Pin { sha256 } => match crate::routeros::tls::normalize_pin(&sha256) {
                Ok(pin) => TlsMode::Pin { sha256: pin },
                Err(_) if config.removed => TlsMode::Pin { sha256 },
                Err(e) => {
                    tracing::error!(router = %id, error = %e, "the router's certificate pin is not valid");
                    return Ok(());
                }
            },
        };
        let endpoint = RouterEndpoint {
            id,
            tenant: config.tenant_id,
            name: config.name,
            host: config.host,
            api_port: config.api_port,
            ssh_port: config.ssh_port,
            tls,
            username: config.username,
            password,
        };
        match self
            .up
            .parts
            .registry
            .apply_remote(endpoint, config.revision, config.removed)
        {
            Ok(change) => {
                tracing::info!(router = %id, revision = config.revision, ?change, "router from the controller");
                Ok(())
            }
            Err(e)
                if e.code() == ErrorCode::DuplicateName
                    || e.code() == ErrorCode::InvalidRequest =>
            {
                tracing::error!(router = %id, error = %e, "cannot add the controller's router");
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// How a session ends from an incoming frame.
enum Ended {
    Close(CloseCode, String),
    Revoked(String),
    Gone(String),
}
