//! A scripted agent for hub tests: a real TLS + WebSocket client that sends exactly what a
//! test says (valid hellos, bad signatures, garbage, gaps) and reads what the hub answers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tikfleet_controller::hub::{AgentIdentity, AgentKey};
use tikfleet_shared::codec;
use tikfleet_shared::protocol::{
    Close, CloseCode, Envelope, Hello, IdentityProof, Message, OutboxPosition, PROTOCOL_VERSION,
    RouterGenerations, Welcome, hello_signing_payload,
};
use tikfleet_shared::record::OutboxRecord;
use tikfleet_shared::{AgentId, TenantId};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

pub const READ_LIMIT: Duration = Duration::from_secs(20);

/// An agent's identity: its id, tenant and Ed25519 key.
pub struct TestAgent {
    pub id: AgentId,
    pub tenant: TenantId,
    pub key: Ed25519KeyPair,
    pub key_id: String,
}

impl TestAgent {
    pub fn new(tenant: TenantId) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Self {
            id: AgentId::new(),
            tenant,
            key_id: tikfleet_shared::enroll::key_id(key.public_key().as_ref()),
            key,
        }
    }

    /// What enrollment would have recorded.
    pub fn identity(&self) -> AgentIdentity {
        AgentIdentity {
            agent_id: self.id,
            tenant_id: self.tenant,
            name: "site".into(),
            keys: vec![AgentKey {
                key_id: self.key_id.clone(),
                public_key: self.key.public_key().as_ref().to_vec(),
            }],
            revoked: false,
        }
    }

    /// A hello answering `nonce`, with default positions.
    pub fn hello(&self, nonce: &[u8; 32]) -> Hello {
        Hello {
            agent_id: self.id,
            proof: IdentityProof {
                key_id: self.key_id.clone(),
                signature: self
                    .key
                    .sign(&hello_signing_payload(nonce, self.id))
                    .as_ref()
                    .to_vec(),
            },
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            agent_version: "test".into(),
            routers: Vec::<RouterGenerations>::new(),
            outbox: OutboxPosition {
                acked: 0,
                next_seq: 1,
                pending_bytes: 0,
            },
        }
    }
}

type Ws = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// One connection to the hub.
pub struct Link {
    ws: Ws,
    /// The hub's durable seq the agent has stored (acked on every frame).
    pub received: u64,
}

/// What the hub sent, or that it closed the socket.
#[derive(Debug)]
pub enum Got {
    Envelope(Box<Envelope>),
    Closed,
}

impl Link {
    /// TLS (trusting `ca_pem` for `localhost`) and the WebSocket upgrade.
    pub async fn connect(addr: SocketAddr, ca_pem: &str) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("tls handshake with the hub");
        let url = format!("wss://localhost:{}/agent", addr.port());
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            url,
            tls,
            Some(
                tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .max_message_size(None)
                    .max_frame_size(None),
            ),
        )
        .await
        .expect("websocket upgrade");
        Self { ws, received: 0 }
    }

    pub async fn send_raw(&mut self, msg: WsMessage) {
        // The hub may have closed already; a failed send shows in the next read.
        let _ = self.ws.send(msg).await;
    }

    /// Sends an envelope as is (no checks: tests send what the codec would refuse).
    pub async fn send(&mut self, envelope: &Envelope) {
        let bytes = rmp_serde::to_vec_named(envelope).unwrap();
        self.send_raw(WsMessage::Binary(bytes.into())).await;
    }

    /// Sends `msg` (with `seq` if durable) carrying the current ack.
    pub async fn send_msg(&mut self, seq: Option<u64>, msg: Message) {
        let envelope = Envelope {
            version: PROTOCOL_VERSION,
            seq,
            ack: self.received,
            msg,
        };
        self.send(&envelope).await;
    }

    pub async fn send_record(&mut self, seq: u64, record: OutboxRecord) {
        self.send_msg(Some(seq), Message::Record(record)).await;
    }

    /// The next envelope, or `Closed`.
    pub async fn next(&mut self) -> Got {
        loop {
            let item = tokio::time::timeout(READ_LIMIT, self.ws.next())
                .await
                .expect("the hub answered in time");
            match item {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    return Got::Envelope(Box::new(
                        codec::decode(&bytes).expect("the hub sends valid frames"),
                    ));
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return Got::Closed,
                Some(Ok(_)) => {}
            }
        }
    }

    pub async fn envelope(&mut self) -> Envelope {
        match self.next().await {
            Got::Envelope(e) => *e,
            Got::Closed => panic!("the hub closed the connection"),
        }
    }

    /// Reads until the hub closes; returns the `close` it sent (if any) and any `revoked`.
    /// The connection is dropped at the end, as an agent does.
    pub async fn until_closed(mut self) -> Vec<Message> {
        let mut last = Vec::new();
        while let Got::Envelope(e) = self.next().await {
            if matches!(e.msg, Message::Close(_) | Message::Revoked(_)) {
                last.push(e.msg);
            }
        }
        last
    }

    /// Reads the challenge and answers it with `hello` built by `make`.
    pub async fn hello_with(&mut self, make: impl FnOnce(&[u8; 32]) -> (u16, Hello)) {
        let challenge = self.envelope().await;
        let Message::Challenge(c) = challenge.msg else {
            panic!("expected a challenge, got {:?}", challenge.msg);
        };
        assert_eq!(challenge.seq, None);
        let (version, hello) = make(&c.nonce);
        self.send(&Envelope {
            version,
            seq: None,
            ack: 0,
            msg: Message::Hello(hello),
        })
        .await;
    }

    /// Challenge → hello → welcome; panics on anything else.
    pub async fn handshake(&mut self, agent: &TestAgent) -> (Welcome, u64) {
        self.handshake_with(agent, |_| {}).await
    }

    pub async fn handshake_with(
        &mut self,
        agent: &TestAgent,
        edit: impl FnOnce(&mut Hello),
    ) -> (Welcome, u64) {
        self.hello_with(|nonce| {
            let mut hello = agent.hello(nonce);
            edit(&mut hello);
            (hello.min_version.min(PROTOCOL_VERSION), hello)
        })
        .await;
        let env = self.envelope().await;
        match env.msg {
            Message::Welcome(w) => (w, env.ack),
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Reads durable messages (skipping pings, answering nothing) until `n` arrived; records
    /// them as received (the next frame sent acks them).
    pub async fn durable(&mut self, n: usize) -> Vec<(u64, Message)> {
        let mut out = Vec::new();
        while out.len() < n {
            let env = self.envelope().await;
            if let Some(seq) = env.seq {
                assert_eq!(seq, self.received + 1, "hub seqs are contiguous");
                self.received = seq;
                out.push((seq, env.msg));
            } else if let Message::Close(Close { code, reason }) = env.msg {
                panic!("hub closed: {code:?} {reason}");
            }
        }
        out
    }

    /// Sends a standalone ack of everything received.
    pub async fn ack(&mut self) {
        self.send_msg(None, Message::Ack(tikfleet_shared::protocol::Ack {}))
            .await;
    }
}

/// The close code of the last `close` in `msgs`.
pub fn close_code(msgs: &[Message]) -> Option<CloseCode> {
    msgs.iter().rev().find_map(|m| match m {
        Message::Close(c) => Some(c.code),
        _ => None,
    })
}
