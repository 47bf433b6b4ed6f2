//! One agent connection: TLS, the WebSocket upgrade, challenge → hello → welcome, then the
//! session until either side closes.
//!
//! # Tasks
//!
//! The connection task reads frames and decides; a writer task owns the socket's sending half
//! and drains a bounded queue of encoded frames (`HubConfig::send_queue`), batching them into
//! one flush. The connection task only queues a frame when the queue has room, so a slow agent
//! never makes the controller buffer without bound, and reading goes on while the writer waits
//! on the socket.
//!
//! # Session
//!
//! - **Push.** On welcome and on each [`AgentSignals`] change (subscribed to before the first
//!   read), the store is read again and what is new for this connection ([`Outgoing`]) goes
//!   out as durable messages with this connection's seqs (from 1): routers, then desired
//!   states, then jobs, then cancels of jobs staff cancelled (`job_cancel`). At most
//!   `HubConfig::window` of them are unacknowledged at a time; when the agent's cumulative
//!   ack covers a job's or a cancel's seq, the store marks it delivered (and a desired
//!   state's generation as stored, which the API's sync view shows).
//! - **Order.** The store holds back a job while an earlier unfinished job of its router
//!   changes the same item (see `HubStore::undelivered_jobs`); committing a job's final
//!   update makes the session read the store again, so the next one goes out.
//! - **Records.** The agent's records carry its outbox seqs. Consecutive ones are batched
//!   (up to `HubConfig::record_batch`, or until no frame is waiting), committed with
//!   [`HubStore::commit_records`], and only then acked; while a batch is full nothing more is
//!   read (backpressure down to TCP). A seq at or below the committed one is a duplicate
//!   (acked, no effect); a skipped seq closes the connection (`protocol_error`).
//! - **Backup parts.** A `backup_fetch` (a restore job's agent asking for its file) is
//!   answered with one `backup_part` of at most `HubConfig::backup_part_size` bytes read from
//!   the store, only for a binary backup of one of this agent's routers (`not_found`
//!   otherwise). Answers are not durable; at most a few wait to be sent (the agent asks for
//!   one part at a time), older ones are dropped and asked for again.
//! - **Heartbeats.** Each side pings when it has sent nothing for the heartbeat interval; a
//!   peer silent for `missed_heartbeats` intervals is closed. Time comes from the hub's clock.
//! - **Endings.** Revocation sends `revoked` at once; a newer connection of the agent sends
//!   `close{superseded}`; shutdown sends `close{going_away}`; a malformed frame, a gap or an
//!   oversized frame sends `close` with the [`ProtocolError`]'s code. Nothing from the
//!   network can panic this task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tikfleet_shared::codec::{self, MAX_FRAME_SIZE};
use tikfleet_shared::protocol::{
    BackupFetch, BackupPart, Challenge, Close, CloseCode, Envelope, Hello, MAX_BACKUP_PART,
    MIN_SUPPORTED_VERSION, Message, NONCE_LEN, Ping, Pong, ProtocolError, Revoked, Welcome,
    negotiate,
};
use tikfleet_shared::record::OutboxRecord;
use tikfleet_shared::session::DurableStream;
use tikfleet_shared::{AgentId, ErrorCode, ErrorInfo, JobId, RouterId, TenantId, UnixMillis};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use super::HubConfig;
use super::auth::verify_hello;
use super::batch::Batches;
use super::connections::Connections;
use super::outgoing::Outgoing;
use super::signals::{AgentSignals, Signal};
use super::store::{Delivered, HubStore, PushRead, PushRequest};
use crate::clock::SharedClock;

type Ws = WebSocketStream<tokio_rustls::server::TlsStream<TcpStream>>;

/// What every connection of a hub shares.
pub(crate) struct Shared<H> {
    pub store: H,
    pub signals: AgentSignals,
    pub clock: SharedClock,
    pub config: HubConfig,
    pub connections: Connections,
    pub acceptor: TlsAcceptor,
    /// Batches the sessions' store calls; started by the first `Hub::serve`.
    pub batches: std::sync::OnceLock<Batches>,
}

/// The WebSocket limits: the codec's frame limit, small buffers for idle connections.
pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(2 * MAX_FRAME_SIZE)
        .max_message_size(Some(MAX_FRAME_SIZE))
        .max_frame_size(Some(MAX_FRAME_SIZE))
}

/// How a connection ends.
#[derive(Debug)]
enum End {
    /// Send `close` with this code and reason.
    Close(CloseCode, String),
    /// Send `revoked`.
    Revoked(String),
    /// The peer is gone, closed, or cannot be written to: send nothing.
    Gone(String),
}

impl End {
    fn protocol(e: &ProtocolError) -> Self {
        Self::Close(e.close_code(), e.to_string())
    }
}

/// What woke the session loop.
enum Event {
    Nothing,
    End(End),
    Sent,
    Received,
    Envelope(Box<Envelope>),
    Commit,
    Timer,
}

/// One incoming WebSocket message, classified.
enum Read {
    Envelope(Box<Envelope>),
    Skip,
    End(End),
}

fn classify(item: Option<Result<WsMessage, WsError>>) -> Read {
    match item {
        None => Read::End(End::Gone("the connection was closed".into())),
        Some(Ok(WsMessage::Binary(bytes))) => match codec::decode(&bytes) {
            Ok(envelope) => Read::Envelope(Box::new(envelope)),
            Err(e) => Read::End(End::protocol(&e)),
        },
        Some(Ok(WsMessage::Text(_))) => Read::End(End::Close(
            CloseCode::ProtocolError,
            "text frames are not part of the protocol; send binary MessagePack frames".into(),
        )),
        Some(Ok(WsMessage::Close(_))) => {
            Read::End(End::Gone("the agent closed the WebSocket".into()))
        }
        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => Read::Skip,
        Some(Err(WsError::Capacity(e))) => Read::End(End::Close(
            CloseCode::FrameTooLarge,
            format!("{e} (the limit is {MAX_FRAME_SIZE} bytes)"),
        )),
        Some(Err(e)) => Read::End(End::Gone(format!("websocket error: {e}"))),
    }
}

/// Writes queued frames to the socket, flushing once per burst; sends the WebSocket close
/// frame when the queue's sender is dropped. Returns the sink unless writing failed.
async fn write_frames(
    mut sink: SplitSink<Ws, WsMessage>,
    mut rx: mpsc::Receiver<Vec<u8>>,
) -> Option<SplitSink<Ws, WsMessage>> {
    while let Some(frame) = rx.recv().await {
        sink.feed(WsMessage::Binary(frame.into())).await.ok()?;
        while let Ok(more) = rx.try_recv() {
            sink.feed(WsMessage::Binary(more.into())).await.ok()?;
        }
        sink.flush().await.ok()?;
    }
    sink.close().await.ok()?;
    Some(sink)
}

/// Most bytes read and thrown away while closing.
const LINGER_BYTES: usize = 2 * MAX_FRAME_SIZE;

/// Closes the TLS stream after the last frame, then reads and discards what the peer still
/// sends until it closes too (bounded in time and bytes). Dropping a socket with unread data
/// makes the kernel reset the connection, and a reset can destroy the `close` frame before
/// the agent reads it (say, after an oversized frame the hub stopped reading).
async fn linger(ws: Ws, grace: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = ws.into_inner();
    let drain = async {
        let _ = tls.shutdown().await;
        let mut buf = [0u8; 8192];
        let mut total = 0;
        while total < LINGER_BYTES {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(grace, drain).await;
}

/// Serves one accepted TCP connection to its end.
pub(crate) async fn serve<H: HubStore>(
    shared: Arc<Shared<H>>,
    tcp: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let timeout = shared.config.handshake_timeout;
    let upgrade = async {
        let tls = shared
            .acceptor
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        tokio_tungstenite::accept_async_with_config(tls, Some(ws_config()))
            .await
            .map_err(|e| e.to_string())
    };
    let ws = tokio::select! {
        res = tokio::time::timeout(timeout, upgrade) => match res {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "tls or websocket handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "tls or websocket handshake timed out");
                return;
            }
        },
        _ = shutdown.wait_for(|stop| *stop) => return,
    };
    let (sink, stream) = ws.split();
    let (tx, rx) = mpsc::channel(shared.config.send_queue.max(1));
    let writer = tokio::spawn(write_frames(sink, rx));
    let now = shared.clock.now();
    let mut conn = Conn {
        shared: Arc::clone(&shared),
        tx,
        stream,
        peer,
        shutdown,
        last_recv: now,
        last_sent: now,
    };
    conn.run().await;
    let Conn { tx, stream, .. } = conn;
    drop(tx);
    // The writer sends what is queued (the close frame last), then the socket is closed.
    let grace = shared.config.shutdown_grace;
    if let Ok(Ok(Some(sink))) = tokio::time::timeout(grace, writer).await
        && let Ok(ws) = stream.reunite(sink)
    {
        linger(ws, grace).await;
    }
}

/// A connection after the WebSocket upgrade.
struct Conn<H> {
    shared: Arc<Shared<H>>,
    tx: mpsc::Sender<Vec<u8>>,
    stream: SplitStream<Ws>,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
    last_recv: UnixMillis,
    last_sent: UnixMillis,
}

/// The outcome of a successful hello.
struct Accepted {
    hello: Hello,
    tenant: TenantId,
    version: u16,
    committed: u64,
    signal: watch::Receiver<Signal>,
}

/// A handshake frame: the sender's lowest version, no seq.
fn handshake_envelope(ack: u64, msg: Message) -> Envelope {
    Envelope {
        version: MIN_SUPPORTED_VERSION,
        seq: None,
        ack,
        msg,
    }
}

impl<H: HubStore> Conn<H> {
    /// Queues one encoded frame (waiting for room in the send queue).
    async fn send(&mut self, envelope: &Envelope) -> Result<(), End> {
        let bytes = codec::encode(envelope).map_err(|e| End::protocol(&e))?;
        self.tx
            .send(bytes)
            .await
            .map_err(|_| End::Gone("the writer stopped".into()))?;
        self.last_sent = self.shared.clock.now();
        Ok(())
    }

    /// Sends the ending frame, if any, and logs.
    async fn finish(&mut self, agent: Option<AgentId>, end: End) {
        let agent = agent.map(|a| a.to_string()).unwrap_or_default();
        let msg = match end {
            End::Close(code, reason) => {
                tracing::info!(peer = %self.peer, %agent, ?code, %reason, "closing agent connection");
                Message::Close(Close { code, reason })
            }
            End::Revoked(reason) => {
                tracing::info!(peer = %self.peer, %agent, "refusing a revoked agent");
                Message::Revoked(Revoked { reason })
            }
            End::Gone(reason) => {
                tracing::debug!(peer = %self.peer, %agent, %reason, "agent connection ended");
                return;
            }
        };
        if let Ok(bytes) = codec::encode(&handshake_envelope(0, msg)) {
            // Wait a little for room, not forever: the peer may be why the queue is full.
            let _ =
                tokio::time::timeout(self.shared.config.shutdown_grace, self.tx.send(bytes)).await;
        }
    }

    async fn run(&mut self) {
        let accepted = match self.handshake().await {
            Ok(accepted) => accepted,
            Err((agent, end)) => return self.finish(agent, end).await,
        };
        let agent = accepted.hello.agent_id;
        let shared = Arc::clone(&self.shared);
        let conn_id = shared.connections.next_id();
        let claim = shared.connections.claim(agent, conn_id).await;
        let welcome = handshake_envelope(
            accepted.committed,
            Message::Welcome(Welcome {
                version: accepted.version,
                tenant_id: accepted.tenant,
                agent_id: agent,
                settings: shared.config.settings.clone(),
            }),
        );
        let end = match self.send(&welcome).await {
            Ok(()) => {
                let now = shared.clock.now();
                if let Err(e) = shared
                    .store
                    .agent_connected(
                        agent,
                        now,
                        &accepted.hello.agent_version,
                        &accepted.hello.routers,
                    )
                    .await
                {
                    tracing::warn!(%agent, error = %e, "cannot record that the agent connected");
                }
                drop(claim.guard);
                tracing::info!(
                    peer = %self.peer,
                    %agent,
                    version = accepted.version,
                    agent_version = %accepted.hello.agent_version,
                    "agent connected"
                );
                let mut session = Session::new(&accepted);
                self.session(&mut session, accepted.signal, claim.superseded)
                    .await
            }
            Err(end) => {
                drop(claim.guard);
                end
            }
        };
        self.finish(Some(agent), end).await;
        if let Some(guard) = shared.connections.release(agent, conn_id).await {
            if let Err(e) = shared
                .store
                .agent_disconnected(agent, shared.clock.now())
                .await
            {
                tracing::warn!(%agent, error = %e, "cannot record that the agent disconnected");
            }
            drop(guard);
        }
        shared.connections.tidy(agent);
    }

    /// Challenge, hello, checks. On failure: the agent (if it said who it is) and how to end.
    async fn handshake(&mut self) -> Result<Accepted, (Option<AgentId>, End)> {
        let shared = Arc::clone(&self.shared);
        let mut nonce = [0u8; NONCE_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce).map_err(
            |_| {
                (
                    None,
                    End::Close(CloseCode::Internal, "no random source".into()),
                )
            },
        )?;
        let challenge = handshake_envelope(
            0,
            Message::Challenge(Challenge {
                nonce,
                server_time: shared.clock.now(),
            }),
        );
        self.send(&challenge).await.map_err(|e| (None, e))?;

        let hello_timeout = shared.config.hello_timeout;
        let deadline = shared.clock.now().saturating_add(hello_timeout);
        let envelope = loop {
            let read = tokio::select! {
                item = self.stream.next() => classify(item),
                () = shared.clock.sleep_until(deadline) => Read::End(End::Close(
                    CloseCode::ProtocolError,
                    format!("no hello within {} s", hello_timeout.as_secs()),
                )),
                _ = self.shutdown.wait_for(|stop| *stop) => Read::End(End::Close(
                    CloseCode::GoingAway,
                    "the controller is shutting down; reconnect later".into(),
                )),
            };
            match read {
                Read::Envelope(envelope) => break *envelope,
                Read::Skip => {}
                Read::End(end) => return Err((None, end)),
            }
        };
        self.last_recv = shared.clock.now();
        let hello = match envelope.msg {
            Message::Hello(hello) => hello,
            other => {
                return Err((
                    None,
                    End::Close(
                        CloseCode::ProtocolError,
                        format!("expected hello, got {}", other.name()),
                    ),
                ));
            }
        };
        let agent = hello.agent_id;
        let fail = |end| (Some(agent), end);
        // Before the first read of the store, so no change or revocation is missed.
        let signal = shared.signals.subscribe(agent);
        let identity = match shared.store.agent_identity(agent).await {
            Ok(Some(identity)) => identity,
            Ok(None) => {
                return Err(fail(End::Close(
                    CloseCode::AuthenticationFailed,
                    format!("unknown agent {agent}: enroll it with a token from the controller"),
                )));
            }
            Err(e) => {
                tracing::error!(%agent, error = %e, "cannot read the agent's identity");
                return Err(fail(End::Close(
                    CloseCode::Internal,
                    "the controller cannot check identities right now; reconnect later".into(),
                )));
            }
        };
        if let Err(e) = verify_hello(&identity, &hello, &nonce) {
            tracing::warn!(peer = %self.peer, %agent, error = %e, "agent hello refused");
            return Err(fail(End::Close(
                CloseCode::AuthenticationFailed,
                e.to_string(),
            )));
        }
        if identity.revoked || signal.borrow().revoked {
            return Err(fail(End::Revoked(
                "this agent was revoked by staff; enroll it again with a new token".into(),
            )));
        }
        let version =
            negotiate(hello.min_version, hello.max_version).map_err(|e| fail(End::protocol(&e)))?;
        let committed = match shared.store.records_committed(agent).await {
            Ok(committed) => committed,
            Err(e) => {
                tracing::error!(%agent, error = %e, "cannot read the agent's committed seq");
                return Err(fail(End::Close(
                    CloseCode::Internal,
                    "the controller cannot read its records right now; reconnect later".into(),
                )));
            }
        };
        check_outbox(&hello, committed).map_err(|reason| {
            tracing::error!(%agent, %reason, "agent and controller disagree on the outbox");
            fail(End::Close(CloseCode::ProtocolError, reason))
        })?;
        Ok(Accepted {
            tenant: identity.tenant_id,
            hello,
            version,
            committed,
            signal,
        })
    }

    async fn session(
        &mut self,
        s: &mut Session,
        mut signal: watch::Receiver<Signal>,
        mut superseded: oneshot::Receiver<()>,
    ) -> End {
        let shared = Arc::clone(&self.shared);
        let interval = shared.config.heartbeat_interval();
        let silence = interval.saturating_mul(shared.config.missed_heartbeats.max(1));
        let mut signals_open = true;
        loop {
            if s.dirty
                && s.outgoing.is_empty()
                && let Err(end) = self.refill(s).await
            {
                return end;
            }
            let wants_send = s.wants_send(shared.config.window);
            let batch_room = s.pending.len() < shared.config.record_batch.max(1);
            let timer = self
                .last_sent
                .saturating_add(interval)
                .min(self.last_recv.saturating_add(silence));
            let event = tokio::select! {
                biased;
                _ = &mut superseded => Event::End(End::Close(
                    CloseCode::Superseded,
                    "a newer connection of this agent took over".into(),
                )),
                _ = self.shutdown.wait_for(|stop| *stop) => Event::End(End::Close(
                    CloseCode::GoingAway,
                    "the controller is shutting down; reconnect later".into(),
                )),
                changed = signal.changed(), if signals_open => {
                    if changed.is_err() {
                        signals_open = false;
                        Event::Nothing
                    } else if signal.borrow_and_update().revoked {
                        Event::End(End::Revoked("this agent was revoked by staff".into()))
                    } else {
                        s.dirty = true;
                        Event::Nothing
                    }
                }
                permit = self.tx.reserve(), if wants_send => match permit {
                    Err(_) => Event::End(End::Gone("the writer stopped".into())),
                    Ok(permit) => match s.next_envelope(shared.config.window) {
                        Ok(Some(bytes)) => {
                            permit.send(bytes);
                            Event::Sent
                        }
                        Ok(None) => Event::Nothing,
                        Err(end) => Event::End(end),
                    },
                },
                item = self.stream.next(), if batch_room => match classify(item) {
                    Read::Envelope(envelope) => Event::Envelope(envelope),
                    Read::Skip => Event::Received,
                    Read::End(end) => Event::End(end),
                },
                () = std::future::ready(()), if !s.pending.is_empty() => Event::Commit,
                () = shared.clock.sleep_until(timer) => Event::Timer,
            };
            match event {
                Event::Nothing => {}
                Event::End(end) => return end,
                Event::Sent => self.last_sent = shared.clock.now(),
                Event::Received => self.last_recv = shared.clock.now(),
                Event::Envelope(envelope) => {
                    self.last_recv = shared.clock.now();
                    if let Err(end) = self.on_envelope(s, *envelope).await {
                        return end;
                    }
                }
                Event::Commit => {
                    if let Err(end) = self.commit(s).await {
                        return end;
                    }
                }
                Event::Timer => {
                    let now = shared.clock.now();
                    if now >= self.last_recv.saturating_add(silence) {
                        return End::Close(
                            CloseCode::ProtocolError,
                            format!("nothing received for {} s (heartbeat)", silence.as_secs()),
                        );
                    }
                    if now >= self.last_sent.saturating_add(interval) {
                        s.ping();
                        // Counts as sent, so an agent that stopped reading is not pinged
                        // in a loop while the queue is full.
                        self.last_sent = now;
                    }
                }
            }
        }
    }

    /// Reads the store again and queues what is new for this connection.
    async fn refill(&mut self, s: &mut Session) -> Result<(), End> {
        // One read for routers, desired states, jobs and cancels, batched with the other
        // sessions reading at the same time (see `batch`).
        let request = PushRequest {
            agent: s.agent,
            known: s.outgoing.known(),
        };
        let read = match self.shared.batches.get() {
            Some(batches) => batches.reads.call(request).await,
            None => self
                .shared
                .store
                .push_reads(std::slice::from_ref(&request))
                .await
                .and_then(|mut reads| {
                    reads
                        .pop()
                        .ok_or_else(|| anyhow::anyhow!("the store answered no read"))
                }),
        };
        let PushRead {
            routers,
            states,
            jobs,
            cancels,
        } = read.map_err(|e| {
            tracing::error!(agent = %s.agent, error = %e, "cannot read what to push to the agent");
            End::Close(
                CloseCode::Internal,
                "the controller cannot read its store right now; reconnect later".into(),
            )
        })?;
        let (r, d, j, c) = (
            s.outgoing.add_routers(routers),
            s.outgoing.add_states(states),
            s.outgoing.add_jobs(jobs),
            s.outgoing.add_cancels(cancels),
        );
        if r + d + j + c > 0 {
            tracing::debug!(agent = %s.agent, routers = r, desired = d, jobs = j, cancels = c, "pushing");
        }
        s.dirty = false;
        Ok(())
    }

    async fn on_envelope(&mut self, s: &mut Session, envelope: Envelope) -> Result<(), End> {
        if let Message::Close(close) = &envelope.msg {
            return Err(End::Gone(format!(
                "the agent closed: {:?} {}",
                close.code, close.reason
            )));
        }
        if envelope.version != s.version {
            return Err(End::protocol(&ProtocolError::VersionMismatch {
                expected: s.version,
                got: envelope.version,
            }));
        }
        let (acked, cancels, states) = s.acked_deliveries(envelope.ack);
        s.stream
            .on_ack(envelope.ack)
            .map_err(|e| End::protocol(&e))?;
        if !acked.is_empty() || !states.is_empty() || !cancels.is_empty() {
            // One batched transaction with other sessions' acks (see `batch`).
            let delivered = Delivered {
                agent: s.agent,
                jobs: acked,
                states,
                cancels,
            };
            let recorded = match self.shared.batches.get() {
                Some(batches) => batches.writes.call(delivered.clone()).await,
                None => {
                    self.shared
                        .store
                        .record_deliveries(std::slice::from_ref(&delivered))
                        .await
                }
            };
            match recorded {
                Ok(()) => {
                    s.outgoing.delivered(&delivered.jobs);
                    s.outgoing.cancels_delivered(&delivered.cancels);
                }
                // Not marked: the jobs and cancels go out again on the next connection (the
                // agent takes each once, by id), and the next hello reports the stored
                // generations again.
                Err(e) => {
                    tracing::warn!(agent = %s.agent, error = %e, "cannot record what the agent acknowledged");
                }
            }
        }
        match envelope.msg {
            Message::Record(record) => {
                let seq = envelope.seq.unwrap_or(0);
                s.on_record(seq, record)
            }
            Message::Ack(_) | Message::Pong(_) => Ok(()),
            Message::Ping(Ping { nonce }) => {
                s.pong(nonce);
                Ok(())
            }
            Message::BackupFetch(fetch) => {
                let part = self.backup_part(s.agent, fetch).await;
                s.push_reply(Message::BackupPart(part));
                Ok(())
            }
            other => Err(End::Close(
                CloseCode::ProtocolError,
                format!("an agent may not send {}", other.name()),
            )),
        }
    }

    /// The answer to a `backup_fetch`: a part of the backup, or why not.
    async fn backup_part(&self, agent: AgentId, fetch: BackupFetch) -> BackupPart {
        let max = self
            .shared
            .config
            .backup_part_size
            .clamp(1, MAX_BACKUP_PART);
        let BackupFetch {
            job_id,
            backup_id,
            offset,
        } = fetch;
        let read = self
            .shared
            .store
            .backup_part(agent, &backup_id, offset, max)
            .await;
        let (total, data, error) = match read {
            Ok(Some(slice)) if offset > slice.total => (
                0,
                Vec::new(),
                Some(ErrorInfo::with_message(
                    ErrorCode::InvalidRequest,
                    format!(
                        "offset {offset} is past the end of the backup ({} bytes)",
                        slice.total
                    ),
                )),
            ),
            Ok(Some(mut slice)) => {
                slice.data.truncate(max);
                (slice.total, slice.data, None)
            }
            Ok(None) => {
                tracing::warn!(%agent, job = %job_id, %backup_id, "refused a backup fetch: not a binary backup of this agent's routers");
                (
                    0,
                    Vec::new(),
                    Some(ErrorInfo::with_message(
                        ErrorCode::NotFound,
                        format!("no binary backup {backup_id} of this agent's routers"),
                    )),
                )
            }
            Err(e) => {
                tracing::error!(%agent, job = %job_id, %backup_id, error = %e, "cannot read a backup part");
                (
                    0,
                    Vec::new(),
                    Some(ErrorInfo::with_message(
                        ErrorCode::Unavailable,
                        "the controller cannot read the backup right now",
                    )),
                )
            }
        };
        BackupPart {
            job_id,
            backup_id,
            offset,
            total,
            data,
            error,
        }
    }

    /// Commits the pending records, then acks them.
    async fn commit(&mut self, s: &mut Session) -> Result<(), End> {
        let last = s.pending.last().map_or(0, |(seq, _)| *seq);
        // A finished job can release the jobs the store holds back behind it (same router
        // item): read the store again once this commit is in.
        let finished = s
            .pending
            .iter()
            .any(|(_, r)| matches!(r, OutboxRecord::JobUpdate(u) if u.status.is_terminal()));
        let committed = self
            .shared
            .store
            .commit_records(s.agent, &s.pending)
            .await
            .map_err(|e| {
                tracing::error!(agent = %s.agent, error = %e, "cannot commit the agent's records");
                End::Close(
                    CloseCode::Internal,
                    "the controller cannot store records right now; they will be sent again".into(),
                )
            })?;
        s.pending.clear();
        if finished {
            s.dirty = true;
        }
        while s.stream.ack() < committed.min(last) {
            let next = s.stream.ack() + 1;
            s.stream.commit(next).map_err(|e| End::protocol(&e))?;
        }
        if committed < last {
            tracing::error!(agent = %s.agent, committed, last, "the store committed fewer records than given");
            return Err(End::Close(
                CloseCode::Internal,
                "the controller stored only part of the records; they will be sent again".into(),
            ));
        }
        Ok(())
    }
}

/// Checks that the agent's outbox and the controller's committed seq can continue: the agent
/// must not hand out seqs the controller already took (its store went back in time), and the
/// controller must have what the agent saw acknowledged (the controller's store went back).
fn check_outbox(hello: &Hello, committed: u64) -> Result<(), String> {
    let outbox = &hello.outbox;
    if outbox.next_seq <= committed {
        return Err(format!(
            "the agent's outbox restarts at seq {} but the controller has committed up to {committed} \
             (was the agent's data folder restored from a backup?); re-enroll the agent",
            outbox.next_seq
        ));
    }
    if outbox.acked > committed {
        return Err(format!(
            "the agent saw records up to seq {} acknowledged but the controller has only {committed} \
             (was the controller's database restored from a backup?)",
            outbox.acked
        ));
    }
    Ok(())
}

/// What a durable message carried that the store records as delivered once it is acked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    Job(JobId),
    Cancel(JobId),
    State(RouterId, u64),
}

/// The state of one welcomed session, without I/O.
struct Session {
    agent: AgentId,
    version: u16,
    /// Outgoing: this connection's seqs (the job or cancel each one carries, if any).
    /// Incoming: the agent's outbox seqs, starting at what the store has committed.
    stream: DurableStream<Option<Delivery>>,
    outgoing: Outgoing,
    /// Whether the store must be read again.
    dirty: bool,
    /// Records received, not yet committed (contiguous after `stream.ack()`).
    pending: Vec<(u64, OutboxRecord)>,
    /// Non-durable messages to send (pongs, pings), oldest first; small and bounded.
    control: std::collections::VecDeque<Message>,
    /// Answers to the agent's requests (`backup_part`), oldest first; small and bounded.
    replies: std::collections::VecDeque<Message>,
    /// The ack last sent.
    ack_sent: u64,
    /// Send an ack even if it did not move (a duplicate arrived).
    force_ack: bool,
    ping_nonce: u64,
}

/// Control messages kept at most; older pongs are dropped (the newest answers the peer).
const MAX_CONTROL: usize = 8;

/// Answers waiting to be sent at most; the agent asks for one backup part at a time, so more
/// means it stopped reading, and the oldest is dropped (it asks again).
const MAX_REPLIES: usize = 4;

impl Session {
    fn new(accepted: &Accepted) -> Self {
        let agent = accepted.hello.agent_id;
        Self {
            agent,
            version: accepted.version,
            // Seqs from 1 on this connection; incoming continues after what is committed.
            stream: DurableStream::resume(1, accepted.committed, std::iter::empty())
                .unwrap_or_default(),
            outgoing: Outgoing::new(agent, accepted.tenant, &accepted.hello.routers),
            dirty: true,
            pending: Vec::new(),
            control: std::collections::VecDeque::new(),
            replies: std::collections::VecDeque::new(),
            ack_sent: accepted.committed,
            force_ack: false,
            ping_nonce: 0,
        }
    }

    fn unacked(&self) -> usize {
        self.stream.unacked().len()
    }

    fn wants_send(&self, window: usize) -> bool {
        !self.control.is_empty()
            || !self.replies.is_empty()
            || (!self.outgoing.is_empty() && self.unacked() < window)
            || self.force_ack
            || self.stream.ack() > self.ack_sent
    }

    fn push_control(&mut self, msg: Message) {
        if self.control.len() >= MAX_CONTROL {
            self.control.pop_front();
        }
        self.control.push_back(msg);
    }

    fn push_reply(&mut self, msg: Message) {
        if self.replies.len() >= MAX_REPLIES {
            tracing::warn!(agent = %self.agent, "the agent does not read its answers; dropping the oldest");
            self.replies.pop_front();
        }
        self.replies.push_back(msg);
    }

    fn ping(&mut self) {
        self.ping_nonce += 1;
        self.push_control(Message::Ping(Ping {
            nonce: self.ping_nonce,
        }));
    }

    fn pong(&mut self, nonce: u64) {
        self.push_control(Message::Pong(Pong { nonce }));
    }

    /// Jobs, cancels and desired states whose seqs `ack` covers and that are still unacked.
    #[allow(clippy::type_complexity)]
    fn acked_deliveries(&self, ack: u64) -> (Vec<JobId>, Vec<JobId>, Vec<(RouterId, u64)>) {
        let (mut jobs, mut cancels, mut states) = (Vec::new(), Vec::new(), Vec::new());
        for (_, delivery) in self.stream.unacked().take_while(|(seq, _)| *seq <= ack) {
            match delivery {
                Some(Delivery::Job(id)) => jobs.push(*id),
                Some(Delivery::Cancel(id)) => cancels.push(*id),
                Some(Delivery::State(router, generation)) => states.push((*router, *generation)),
                None => {}
            }
        }
        (jobs, cancels, states)
    }

    /// Classifies an incoming record against what is committed and pending.
    fn on_record(&mut self, seq: u64, record: OutboxRecord) -> Result<(), End> {
        let expected = self
            .pending
            .last()
            .map_or(self.stream.ack(), |(seq, _)| *seq)
            + 1;
        if seq == expected {
            self.pending.push((seq, record));
            Ok(())
        } else if seq < expected {
            // Already committed (or pending): no effect, but ack again.
            self.force_ack = true;
            Ok(())
        } else {
            Err(End::protocol(&ProtocolError::OutOfOrder {
                expected,
                got: seq,
            }))
        }
    }

    /// The next frame to send: control first, then durable messages within the window, else
    /// a standalone ack. `Ok(None)` if nothing (a message that could not be encoded is
    /// skipped and logged).
    fn next_envelope(&mut self, window: usize) -> Result<Option<Vec<u8>>, End> {
        let ack = self.stream.ack();
        let envelope = if let Some(msg) = self
            .control
            .pop_front()
            .or_else(|| self.replies.pop_front())
        {
            Envelope {
                version: self.version,
                seq: None,
                ack,
                msg,
            }
        } else if self.unacked() < window
            && let Some(msg) = self.outgoing.pop()
        {
            let envelope = Envelope {
                version: self.version,
                seq: Some(self.stream.next_seq()),
                ack,
                msg,
            };
            let bytes = match codec::encode(&envelope) {
                Ok(bytes) => bytes,
                Err(e) => {
                    // Only an oversized desired state can get here; it cannot be delivered
                    // until it is smaller. Its seq is not used, so the stream stays contiguous.
                    tracing::error!(
                        agent = %self.agent,
                        message = envelope.msg.name(),
                        error = %e,
                        "cannot send a message to the agent"
                    );
                    return Ok(None);
                }
            };
            let delivery = match &envelope.msg {
                Message::Job(job) => Some(Delivery::Job(job.id)),
                Message::JobCancel(cancel) => Some(Delivery::Cancel(cancel.job_id)),
                Message::DesiredState(state) => {
                    Some(Delivery::State(state.router_id, state.generation))
                }
                _ => None,
            };
            self.stream.push(delivery);
            self.ack_sent = ack;
            self.force_ack = false;
            return Ok(Some(bytes));
        } else if self.force_ack || ack > self.ack_sent {
            Envelope {
                version: self.version,
                seq: None,
                ack,
                msg: Message::Ack(tikfleet_shared::protocol::Ack {}),
            }
        } else {
            return Ok(None);
        };
        let bytes = codec::encode(&envelope).map_err(|e| End::protocol(&e))?;
        self.ack_sent = ack;
        self.force_ack = false;
        Ok(Some(bytes))
    }
}

impl HubConfig {
    /// The heartbeat interval (at least one second).
    pub(crate) fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.settings.heartbeat_interval_ms.max(1_000))
    }
}

#[cfg(test)]
mod tests {
    use tikfleet_shared::protocol::{IdentityProof, OutboxPosition};
    use tikfleet_shared::record::DropReason;

    use super::*;

    fn hello(acked: u64, next_seq: u64) -> Hello {
        Hello {
            agent_id: AgentId::new(),
            proof: IdentityProof {
                key_id: "k".into(),
                signature: vec![],
            },
            min_version: 1,
            max_version: 1,
            agent_version: "0.1.0".into(),
            routers: vec![],
            outbox: OutboxPosition {
                acked,
                next_seq,
                pending_bytes: 0,
            },
        }
    }

    #[test]
    fn outbox_positions() {
        assert!(check_outbox(&hello(0, 1), 0).is_ok());
        assert!(check_outbox(&hello(3, 10), 7).is_ok(), "agent missed acks");
        assert!(check_outbox(&hello(7, 8), 7).is_ok());
        assert!(check_outbox(&hello(0, 5), 7).is_err(), "agent went back");
        assert!(
            check_outbox(&hello(9, 12), 7).is_err(),
            "controller went back"
        );
    }

    const TENANT: TenantId = TenantId::from_bytes([4; 16]);

    fn session(committed: u64) -> Session {
        let (_, rx) = watch::channel(Signal::default());
        Session::new(&Accepted {
            hello: hello(committed, committed + 1),
            tenant: TENANT,
            version: 1,
            committed,
            signal: rx,
        })
    }

    #[test]
    fn records_next_duplicate_gap() {
        let mut s = session(5);
        let rec = || OutboxRecord::dropped(DropReason::Telemetry);
        assert!(s.on_record(6, rec()).is_ok());
        assert!(s.on_record(7, rec()).is_ok());
        assert_eq!(s.pending.len(), 2);
        assert!(s.on_record(7, rec()).is_ok(), "pending duplicate");
        assert!(s.on_record(3, rec()).is_ok(), "committed duplicate");
        assert_eq!(s.pending.len(), 2);
        assert!(s.force_ack);
        assert!(matches!(
            s.on_record(9, rec()),
            Err(End::Close(CloseCode::ProtocolError, _))
        ));
    }

    #[test]
    fn window_bounds_durable_sends_and_acks_map_to_jobs() {
        let mut s = session(0);
        let job = |n: u8| tikfleet_shared::job::Job {
            id: JobId::from_bytes([n; 16]),
            tenant_id: TENANT,
            router_id: tikfleet_shared::RouterId::from_bytes([9; 16]),
            idempotency_key: n.to_string(),
            priority: tikfleet_shared::job::Priority::Normal,
            op: tikfleet_shared::job::JobOp::Reboot {},
            created_at: UnixMillis::EPOCH,
            max_attempts: 0,
            generation: None,
        };
        let jobs = vec![job(1), job(2), job(3)];
        s.outgoing.add_jobs(jobs);
        assert!(s.wants_send(2));
        let decode = |b: Vec<u8>| codec::decode(&b).unwrap();
        let first = decode(s.next_envelope(2).unwrap().unwrap());
        let second = decode(s.next_envelope(2).unwrap().unwrap());
        assert_eq!((first.seq, second.seq), (Some(1), Some(2)));
        assert!(!s.wants_send(2), "window of 2 is full");
        assert_eq!(s.next_envelope(2).unwrap(), None);
        assert_eq!(s.acked_deliveries(1).0, vec![JobId::from_bytes([1; 16])]);
        s.stream.on_ack(1).unwrap();
        assert!(s.wants_send(2));
        let third = decode(s.next_envelope(2).unwrap().unwrap());
        assert_eq!(third.seq, Some(3));
        s.outgoing.add_cancels(vec![JobId::from_bytes([2; 16])]);
        s.stream.on_ack(2).unwrap();
        let cancel = decode(s.next_envelope(2).unwrap().unwrap());
        assert_eq!(cancel.seq, Some(4));
        assert_eq!(
            s.acked_deliveries(4),
            (
                vec![JobId::from_bytes([3; 16])],
                vec![JobId::from_bytes([2; 16])],
                vec![]
            )
        );
    }
}
