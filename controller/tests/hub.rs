//! The agent hub over loopback, with real TLS and WebSockets, driven by a scripted agent:
//! what an enrolled agent receives, who is refused, revocation, version negotiation, bad
//! frames, records committed once across resends and reconnects, jobs marked delivered on
//! ack, heartbeats on a manual clock, superseding connections, backpressure and shutdown.

mod hub_common;

use std::sync::Arc;
use std::time::Duration;

use hub_common::client::{Got, Link, TestAgent, close_code};
use hub_common::store::MemHub;
use tikfleet_controller::clock::ManualClock;
use tikfleet_controller::hub::{
    AgentSignals, Hub, HubConfig, HubTls, RouterForAgent, RouterTlsSetting, RunningHub,
};
use tikfleet_shared::codec::MAX_FRAME_SIZE;
use tikfleet_shared::domain::DesiredState;
use tikfleet_shared::job::{Job, JobOp, Priority};
use tikfleet_shared::protocol::{
    CloseCode, Envelope, MIN_SUPPORTED_VERSION, Message, PROTOCOL_VERSION, Ping, RouterGenerations,
    RouterTls,
};
use tikfleet_shared::record::{DropReason, OutboxRecord};
use tikfleet_shared::{JobId, RouterId, TenantId, UnixMillis};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const LIMIT: Duration = Duration::from_secs(60);
const T0: UnixMillis = UnixMillis(1_767_225_600_000);

async fn within<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out");
}

struct Rig {
    store: MemHub,
    signals: AgentSignals,
    clock: ManualClock,
    tls: HubTls,
    hub: Option<RunningHub>,
    config: HubConfig,
}

impl Rig {
    async fn new() -> Self {
        Self::with_config(HubConfig::default()).await
    }

    async fn with_config(config: HubConfig) -> Self {
        let mut rig = Self {
            store: MemHub::default(),
            signals: AgentSignals::default(),
            clock: ManualClock::new(T0),
            tls: HubTls::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap(),
            hub: None,
            config,
        };
        rig.start().await;
        rig
    }

    async fn start(&mut self) {
        let hub = Hub::new(
            &self.tls,
            self.store.clone(),
            self.signals.clone(),
            Arc::new(self.clock.clone()),
            self.config.clone(),
        );
        self.hub = Some(hub.bind(([127, 0, 0, 1], 0).into()).await.unwrap());
    }

    fn hub(&self) -> &RunningHub {
        self.hub.as_ref().expect("hub running")
    }

    async fn link(&self) -> Link {
        Link::connect(self.hub().local_addr(), self.tls.ca_pem().unwrap()).await
    }

    fn agent(&self) -> TestAgent {
        let agent = TestAgent::new(TenantId::new());
        self.store.add_agent(agent.identity());
        agent
    }

    async fn shutdown(mut self) {
        if let Some(hub) = self.hub.take() {
            hub.shutdown().await;
        }
    }
}

fn router(agent: &TestAgent, revision: u64) -> RouterForAgent {
    RouterForAgent {
        router_id: RouterId::new(),
        tenant_id: agent.tenant,
        name: format!("core-{revision}"),
        address: "10.0.0.1".into(),
        api_port: 8729,
        ssh_port: 22,
        tls: RouterTlsSetting::Pin {
            sha256: "ab".repeat(32),
        },
        username: "tikfleet".into(),
        sealed_password: vec![0xa5; 48],
        revision,
        removed: false,
    }
}

fn desired(agent: &TestAgent, router: RouterId, generation: u64) -> DesiredState {
    DesiredState {
        generation,
        tenant_id: agent.tenant,
        router_id: router,
        compiled_at: T0,
        profiles: vec![],
        ppp_secrets: vec![],
        hotspot_users: vec![],
        address_list_entries: vec![],
        lifecycles: vec![],
        drift: Default::default(),
    }
}

fn job(agent: &TestAgent, router: RouterId) -> Job {
    let id = JobId::new();
    Job {
        id,
        tenant_id: agent.tenant,
        router_id: router,
        idempotency_key: id.to_string(),
        priority: Priority::Normal,
        op: JobOp::DeletePppSecret { name: "x".into() },
        created_at: T0,
        max_attempts: 0,
        generation: None,
    }
}

fn telemetry_tombstone() -> OutboxRecord {
    OutboxRecord::dropped(DropReason::Telemetry)
}

#[tokio::test]
async fn an_enrolled_agent_receives_its_routers_desired_states_and_jobs() {
    within(async {
        let rig = Rig::new().await;
        let agent = rig.agent();
        let other = rig.agent();
        let r1 = router(&agent, 1);
        let r2 = router(&agent, 4);
        rig.store.set_router(agent.id, r1.clone());
        rig.store.set_router(agent.id, r2.clone());
        rig.store.set_router(other.id, router(&other, 1));
        rig.store
            .set_desired(agent.id, desired(&agent, r1.router_id, 7));
        rig.store
            .set_desired(agent.id, desired(&agent, r2.router_id, 3));
        let j1 = job(&agent, r1.router_id);
        rig.store.add_job(agent.id, j1.clone());

        let mut link = rig.link().await;
        let (welcome, ack) = link
            .handshake_with(&agent, |hello| {
                // The agent already stores r2's generation 3.
                hello.routers = vec![RouterGenerations {
                    router_id: r2.router_id,
                    stored: 3,
                    applied: 2,
                }];
            })
            .await;
        assert_eq!(welcome.agent_id, agent.id);
        assert_eq!(welcome.tenant_id, agent.tenant);
        assert_eq!(welcome.version, PROTOCOL_VERSION);
        assert_eq!(ack, 0);

        let got = link.durable(4).await;
        let names: Vec<_> = got.iter().map(|(_, m)| m.name()).collect();
        assert_eq!(
            names,
            ["router_config", "router_config", "desired_state", "job"]
        );
        for (_, msg) in &got {
            match msg {
                Message::RouterConfig(c) => {
                    assert_eq!(c.tenant_id, agent.tenant);
                    assert_eq!(c.sealed_password, vec![0xa5; 48]);
                    assert!(matches!(c.tls, RouterTls::Pin { .. }));
                }
                Message::DesiredState(d) => {
                    assert_eq!((d.router_id, d.generation), (r1.router_id, 7));
                }
                Message::Job(j) => assert_eq!(j.id, j1.id),
                _ => unreachable!(),
            }
        }
        rig.store
            .wait("connected with the hello's generations", |s| {
                s.events.iter().any(|e| {
                    matches!(e, hub_common::store::Event::Connected { agent: a, routers, version }
                        if *a == agent.id && routers.len() == 1 && version == "test")
                })
            })
            .await;
        assert!(!rig.store.with(|s| s.delivered(j1.id)), "not acked yet");
        link.ack().await;
        rig.store
            .wait("job delivered", |s| s.delivered(j1.id))
            .await;

        // A change is pushed on the live connection with the next seq.
        rig.store
            .set_desired(agent.id, desired(&agent, r1.router_id, 8));
        let j2 = job(&agent, r2.router_id);
        rig.store.add_job(agent.id, j2.clone());
        rig.signals.changed(agent.id);
        let got = link.durable(2).await;
        assert_eq!(got[0].0, 5);
        assert!(matches!(&got[0].1, Message::DesiredState(d) if d.generation == 8));
        assert!(matches!(&got[1].1, Message::Job(j) if j.id == j2.id));
        link.ack().await;
        rig.store
            .wait("job 2 delivered", |s| s.delivered(j2.id))
            .await;
        assert_eq!(rig.store.with(|s| s.deliveries[&j1.id]), 1);
        assert!(rig.hub().connections().is_connected(agent.id));
        drop(link);
        rig.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn unknown_agents_bad_proofs_and_revoked_agents_are_refused() {
    within(async {
        let rig = Rig::new().await;
        let agent = rig.agent();
        let stranger = TestAgent::new(TenantId::new());
        let revoked = rig.agent();
        rig.store
            .with(|s| s.agents.get_mut(&revoked.id).unwrap().revoked = true);

        type Edit = Box<dyn FnOnce(&TestAgent, &[u8; 32]) -> tikfleet_shared::protocol::Hello>;
        let cases: Vec<(&str, &TestAgent, Edit, CloseCode)> = vec![
            (
                "unknown agent",
                &stranger,
                Box::new(|a, n| a.hello(n)),
                CloseCode::AuthenticationFailed,
            ),
            (
                "signature over another nonce",
                &agent,
                Box::new(|a, _| a.hello(&[0; 32])),
                CloseCode::AuthenticationFailed,
            ),
            (
                "signed by another key",
                &agent,
                Box::new(|a, n| {
                    let mut h = TestAgent::new(a.tenant).hello(n);
                    h.agent_id = a.id;
                    h.proof.key_id = a.key_id.clone();
                    h
                }),
                CloseCode::AuthenticationFailed,
            ),
            (
                "unknown key id",
                &agent,
                Box::new(|a, n| {
                    let mut h = a.hello(n);
                    h.proof.key_id = "ed25519:0000".into();
                    h
                }),
                CloseCode::AuthenticationFailed,
            ),
        ];
        for (what, who, make, code) in cases {
            let mut link = rig.link().await;
            link.hello_with(|n| (PROTOCOL_VERSION, make(who, n))).await;
            let msgs = link.until_closed().await;
            assert_eq!(close_code(&msgs), Some(code), "{what}: {msgs:?}");
        }

        let mut link = rig.link().await;
        link.hello_with(|n| (PROTOCOL_VERSION, revoked.hello(n)))
            .await;
        let msgs = link.until_closed().await;
        assert!(
            matches!(msgs.as_slice(), [Message::Revoked(_)]),
            "revoked agent: {msgs:?}"
        );
        assert!(rig.store.with(|s| s.events.is_empty()), "nobody connected");

        // The hub still serves a good agent.
        let mut link = rig.link().await;
        link.handshake(&agent).await;
        drop(link);
        rig.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn revocation_closes_a_live_connection_at_once() {
    within(async {
        let rig = Rig::new().await;
        let agent = rig.agent();
        let mut link = rig.link().await;
        link.handshake(&agent).await;
        rig.store.wait("connected", |s| s.connected(agent.id)).await;
        rig.signals.revoked(agent.id);
        let msgs = link.until_closed().await;
        assert!(matches!(msgs.as_slice(), [Message::Revoked(_)]), "{msgs:?}");
        rig.store
            .wait("disconnected", |s| !s.connected(agent.id))
            .await;
        // And it cannot come back while revoked.
        let mut link = rig.link().await;
        link.hello_with(|n| (PROTOCOL_VERSION, agent.hello(n)))
            .await;
        assert!(matches!(
            link.until_closed().await.as_slice(),
            [Message::Revoked(_)]
        ));
        rig.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn versions_are_negotiated_and_unsupported_ones_refused() {
    within(async {
        let rig = Rig::new().await;
        let agent = rig.agent();
        // (agent min, agent max) → negotiated version
        for (min, max, expected) in [
            (PROTOCOL_VERSION, PROTOCOL_VERSION, PROTOCOL_VERSION),
            (
                MIN_SUPPORTED_VERSION,
                MIN_SUPPORTED_VERSION,
                MIN_SUPPORTED_VERSION,
            ),
            (
                MIN_SUPPORTED_VERSION,
                PROTOCOL_VERSION + 1,
                PROTOCOL_VERSION,
            ),
        ] {
            let mut link = rig.link().await;
            let (welcome, _) = link
                .handshake_with(&agent, |h| {
                    h.min_version = min;
                    h.max_version = max;
                })
                .await;
            assert_eq!(welcome.version, expected, "agent {min}..={max}");
        }
        // A newer agent only: its hello is refused with unsupported_version.
        for (envelope_version, min, max) in [
            (PROTOCOL_VERSION, PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 2),
            (PROTOCOL_VERSION, PROTOCOL_VERSION, PROTOCOL_VERSION - 1),
            (
                PROTOCOL_VERSION + 1,
                PROTOCOL_VERSION + 1,
                PROTOCOL_VERSION + 1,
            ),
        ] {
            let mut link = rig.link().await;
            link.hello_with(|n| {
                let mut h = agent.hello(n);
                h.min_version = min;
                h.max_version = max;
                (envelope_version, h)
            })
            .await;
            let msgs = link.until_closed().await;
            assert_eq!(
                close_code(&msgs),
                Some(CloseCode::UnsupportedVersion),
                "envelope v{envelope_version}, agent {min}..={max}: {msgs:?}"
            );
        }
        rig.shutdown().await;
    })
    .await;
}

/// Encodes an envelope the codec would refuse to (an unsupported version).
fn raw_envelope(version: u16, msg: Message) -> Vec<u8> {
    rmp_serde::to_vec_named(&Envelope {
        version,
        seq: None,
        ack: 0,
        msg,
    })
    .unwrap()
}

#[tokio::test]
async fn malformed_and_oversized_frames_close_with_a_reason() {
    within(async {
        let rig = Rig::new().await;
        let agent = rig.agent();
        let mut trailing = tikfleet_shared::codec::encode(&Envelope {
            version: PROTOCOL_VERSION,
            seq: None,
            ack: 0,
            msg: Message::Ping(Ping { nonce: 1 }),
        })
        .unwrap();
        trailing.push(0xc0);
        let cases: Vec<(&str, WsMessage, CloseCode)> = vec![
            (
                "garbage",
                WsMessage::Binary(vec![0xff, 0x00, 0x13, 0x37].into()),
                CloseCode::ProtocolError,
            ),
            (
                "text frame",
                WsMessage::Text("{\"hello\":1}".into()),
                CloseCode::ProtocolError,
            ),
            (
                "trailing bytes",
                WsMessage::Binary(trailing.into()),
                CloseCode::ProtocolError,
            ),
            (
                "oversized frame",
                WsMessage::Binary(vec![0x90; MAX_FRAME_SIZE + 1].into()),
                CloseCode::FrameTooLarge,
            ),
            (
                "unsupported envelope version",
                WsMessage::Binary(raw_envelope(99, Message::Ping(Ping { nonce: 1 })).into()),
                CloseCode::UnsupportedVersion,
            ),
            (
                "a job from an agent",
                WsMessage::Binary(
                    tikfleet_shared::codec::encode(&Envelope {
                        version: PROTOCOL_VERSION,
                        seq: Some(1),
                        ack: 0,
                        msg: Message::Job(job(&agent, RouterId::new())),
                    })
                    .unwrap()
                    .into(),
                ),
                CloseCode::ProtocolError,
            ),
        ];
        for (what, frame, code) in cases {
            // Before the hello…
            let mut link = rig.link().await;
            let _challenge = link.envelope().await;
            link.send_raw(frame.clone()).await;
            let msgs = link.until_closed().await;
            assert_eq!(
                close_code(&msgs),
                Some(code),
                "{what} before hello: {msgs:?}"
            );
            // …and in a session.
            let mut link = rig.link().await;
            link.handshake(&agent).await;
            link.send_raw(frame).await;
            let msgs = link.until_closed().await;
            assert_eq!(
                close_code(&msgs),
                Some(code),
                "{what} in a session: {msgs:?}"
            );
        }
        // A gap in the record stream (record 1 may be committed before the gap is seen).
        let mut link = rig.link().await;
        link.handshake(&agent).await;
        link.send_record(1, telemetry_tombstone()).await;
        link.send_record(3, telemetry_tombstone()).await;
        let msgs = link.until_closed().await;
        assert_eq!(
            close_code(&msgs),
            Some(CloseCode::ProtocolError),
            "{msgs:?}"
        );
        // An ack of a seq the hub never sent.
        let mut link = rig.link().await;
        link.handshake_with(&agent, |h| h.outbox.next_seq = 100)
            .await;
        link.received = 5;
        link.ack().await;
        let msgs = link.until_closed().await;
        assert_eq!(
            close_code(&msgs),
            Some(CloseCode::ProtocolError),
            "{msgs:?}"
        );

        // Nothing panicked: the hub still serves.
        let mut link = rig.link().await;
        link.handshake_with(&agent, |h| h.outbox.next_seq = 100)
            .await;
        drop(link);
        rig.shutdown().await;
    })
    .await;
}

/// Reads until the hub's ack reaches `seq` (records are acked after they are committed).
async fn wait_ack(link: &mut Link, seq: u64) {
    loop {
        let env = link.envelope().await;
        if env.ack >= seq {
            return;
        }
    }
}

#[tokio::test]
async fn records_are_committed_once_despite_resends_and_reconnects() {
    within(async {
        let rig = Rig::new().await;
        let agent = rig.agent();
        let record = |seq: u64| {
            OutboxRecord::Applied(tikfleet_shared::record::ApplyReport {
                router_id: RouterId::from_bytes([1; 16]),
                generation: seq,
                at: T0,
                changes: 0,
                conflicts: 0,
                error: None,
            })
        };

        let mut link = rig.link().await;
        link.handshake(&agent).await;
        for seq in 1..=5 {
            link.send_record(seq, record(seq)).await;
        }
        wait_ack(&mut link, 5).await;
        // 6..=8 go out, and the connection drops before the agent sees their ack.
        for seq in 6..=8 {
            link.send_record(seq, record(seq)).await;
        }
        drop(link);

        // The agent comes back believing only 5 is acked, and resends from 6.
        let mut link = rig.link().await;
        let (_, welcome_ack) = link
            .handshake_with(&agent, |h| {
                h.outbox.acked = 5;
                h.outbox.next_seq = 11;
            })
            .await;
        assert!(
            (5..=8).contains(&welcome_ack),
            "welcome acks what is committed"
        );
        for seq in 6..=10 {
            link.send_record(seq, record(seq)).await;
        }
        // Duplicates are acked again without effect.
        link.send_record(2, record(2)).await;
        wait_ack(&mut link, 10).await;

        let records = rig.store.with(|s| s.records(agent.id).to_vec());
        let seqs: Vec<u64> = records.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
        for (seq, r) in &records {
            assert_eq!(r, &record(*seq));
        }
        assert_eq!(rig.store.with(|s| s.committed(agent.id)), 10);

        // An outbox that went back in time is refused with a reason.
        drop(link);
        let mut link = rig.link().await;
        link.hello_with(|n| {
            let mut h = agent.hello(n);
            h.outbox.next_seq = 3;
            (PROTOCOL_VERSION, h)
        })
        .await;
        assert_eq!(
            close_code(&link.until_closed().await),
            Some(CloseCode::ProtocolError)
        );
        rig.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_failing_store_closes_without_acking_and_records_come_again() {
    within(async {
        let rig = Rig::new().await;
        let agent = rig.agent();
        rig.store.with(|s| s.fail_commits = true);
        let mut link = rig.link().await;
        link.handshake(&agent).await;
        link.send_record(1, telemetry_tombstone()).await;
        let mut acks = Vec::new();
        let mut close = None;
        while let Got::Envelope(e) = link.next().await {
            acks.push(e.ack);
            if let Message::Close(c) = e.msg {
                close = Some(c.code);
            }
        }
        assert_eq!(close, Some(CloseCode::Internal));
        assert!(acks.iter().all(|a| *a == 0), "nothing acked: {acks:?}");
        drop(link);
        rig.store.with(|s| s.fail_commits = false);
        let mut link = rig.link().await;
        link.handshake_with(&agent, |h| h.outbox.next_seq = 2).await;
        link.send_record(1, telemetry_tombstone()).await;
        wait_ack(&mut link, 1).await;
        assert_eq!(rig.store.with(|s| s.records(agent.id).len()), 1);
        drop(link);
        rig.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn jobs_are_pushed_until_acked_and_then_never_again() {
    within(async {
        let rig = Rig::new().await;
        let agent = rig.agent();
        let r = RouterId::new();
        let j = job(&agent, r);
        rig.store.add_job(agent.id, j.clone());

        // Pushed, not acked, connection dropped: pushed again on the next connection.
        for _ in 0..2 {
            let mut link = rig.link().await;
            link.handshake(&agent).await;
            let got = link.durable(1).await;
            assert!(matches!(&got[0].1, Message::Job(x) if x.id == j.id));
            assert_eq!(got[0].0, 1, "seqs restart on each connection");
        }
        assert!(!rig.store.with(|s| s.delivered(j.id)));
        let mut link = rig.link().await;
        link.handshake(&agent).await;
        link.durable(1).await;
        link.ack().await;
        rig.store.wait("delivered", |s| s.delivered(j.id)).await;
        drop(link);

        // Next connection: nothing to push; a ping is answered with a pong and nothing else.
        let mut link = rig.link().await;
        link.handshake(&agent).await;
        link.send_msg(None, Message::Ping(Ping { nonce: 42 })).await;
        let env = link.envelope().await;
        assert!(
            matches!(env.msg, Message::Pong(p) if p.nonce == 42),
            "{:?}",
            env.msg
        );
        drop(link);
        rig.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_send_window_bounds_unacknowledged_messages() {
    within(async {
        let rig = Rig::with_config(HubConfig {
            window: 4,
            ..HubConfig::default()
        })
        .await;
        let agent = rig.agent();
        let r = RouterId::new();
        for _ in 0..10 {
            rig.store.add_job(agent.id, job(&agent, r));
        }
        let mut link = rig.link().await;
        link.handshake(&agent).await;
        link.durable(4).await;
        // With the window full the hub sends nothing durable: the pong comes next.
        link.send_msg(None, Message::Ping(Ping { nonce: 1 })).await;
        loop {
            let env = link.envelope().await;
            assert_eq!(env.seq, None, "no durable message beyond the window");
            if matches!(env.msg, Message::Pong(_)) {
                break;
            }
        }
        link.ack().await;
        let got = link.durable(4).await;
        assert_eq!(got.first().map(|g| g.0), Some(5));
        link.ack().await;
        link.durable(2).await;
        link.ack().await;
        rig.store
            .wait("all delivered", |s| s.jobs.iter().all(|(_, _, d)| *d))
            .await;
        drop(link);
        rig.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn heartbeats_on_the_hub_clock() {
    within(async {
        let rig = Rig::new().await;
        let agent = rig.agent();
        let interval = Duration::from_millis(rig.config.settings.heartbeat_interval_ms);

        // No hello in time.
        let mut link = rig.link().await;
        let _challenge = link.envelope().await;
        rig.clock.advance(rig.config.hello_timeout);
        assert_eq!(
            close_code(&link.until_closed().await),
            Some(CloseCode::ProtocolError)
        );

        // A quiet hub pings; a silent agent is closed.
        let mut link = rig.link().await;
        link.handshake(&agent).await;
        rig.clock.advance(interval);
        let env = link.envelope().await;
        assert!(matches!(env.msg, Message::Ping(_)), "{:?}", env.msg);
        rig.clock.advance(interval * 2);
        let msgs = link.until_closed().await;
        assert_eq!(
            close_code(&msgs),
            Some(CloseCode::ProtocolError),
            "{msgs:?}"
        );
        rig.store
            .wait("disconnected", |s| !s.connected(agent.id))
            .await;
        rig.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_newer_connection_supersedes_the_older_one() {
    within(async {
        let rig = Rig::new().await;
        let agent = rig.agent();
        let mut first = rig.link().await;
        first.handshake(&agent).await;
        let mut second = rig.link().await;
        second.handshake(&agent).await;
        assert_eq!(
            close_code(&first.until_closed().await),
            Some(CloseCode::Superseded)
        );
        rig.store
            .wait("two connects", |s| s.connects(agent.id) == 2)
            .await;
        assert!(rig.store.with(|s| s.connected(agent.id)), "still connected");
        // The second one works.
        second
            .send_msg(None, Message::Ping(Ping { nonce: 9 }))
            .await;
        assert!(matches!(second.envelope().await.msg, Message::Pong(_)));
        drop(second);
        rig.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_says_going_away_and_a_restarted_hub_serves_again() {
    within(async {
        let mut rig = Rig::new().await;
        let agent = rig.agent();
        let mut link = rig.link().await;
        link.handshake(&agent).await;
        let hub = rig.hub.take().unwrap();
        let (msgs, ()) = tokio::join!(link.until_closed(), hub.shutdown());
        assert_eq!(close_code(&msgs), Some(CloseCode::GoingAway));
        rig.store
            .wait("disconnected", |s| !s.connected(agent.id))
            .await;
        rig.start().await;
        let mut link = rig.link().await;
        link.handshake(&agent).await;
        drop(link);
        rig.shutdown().await;
    })
    .await;
}

/// Sends a `backup_fetch` and reads until its `backup_part` (skipping anything else).
async fn fetch_part(
    link: &mut Link,
    job: JobId,
    backup: &str,
    offset: u64,
) -> tikfleet_shared::protocol::BackupPart {
    link.send_msg(
        None,
        Message::BackupFetch(tikfleet_shared::protocol::BackupFetch {
            job_id: job,
            backup_id: backup.into(),
            offset,
        }),
    )
    .await;
    loop {
        match link.envelope().await.msg {
            Message::BackupPart(part) => return part,
            Message::Close(c) => panic!("hub closed: {c:?}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn backup_parts_go_only_to_the_agent_whose_backup_it_is() {
    within(async {
        // Small parts, so a modest file takes several.
        let rig = Rig::with_config(HubConfig {
            backup_part_size: 100_000,
            ..HubConfig::default()
        })
        .await;
        let owner = rig.agent();
        let other = rig.agent();
        let data: Vec<u8> = (0..450_000u32).map(|i| (i % 251) as u8).collect();
        rig.store.with(|s| {
            s.backups.insert((owner.id, "b-1".into()), data.clone());
        });
        let job = JobId::new();

        let mut link = rig.link().await;
        link.handshake(&owner).await;
        let mut joined = Vec::new();
        loop {
            let part = fetch_part(&mut link, job, "b-1", joined.len() as u64).await;
            assert_eq!(part.error, None);
            assert_eq!((part.job_id, part.offset), (job, joined.len() as u64));
            assert_eq!(part.total, data.len() as u64);
            assert!(part.data.len() <= 100_000);
            if part.data.is_empty() {
                break;
            }
            joined.extend(part.data);
        }
        assert_eq!(joined, data);
        let past = fetch_part(&mut link, job, "b-1", data.len() as u64 + 1).await;
        assert_eq!(
            past.error.map(|e| e.code),
            Some(tikfleet_shared::ErrorCode::InvalidRequest)
        );

        // Another agent asking for the same backup is refused, and stays connected.
        let mut theirs = rig.link().await;
        theirs.handshake(&other).await;
        let refused = fetch_part(&mut theirs, job, "b-1", 0).await;
        let error = refused.error.clone().expect("refused");
        assert_eq!(error.code, tikfleet_shared::ErrorCode::NotFound);
        assert!(refused.data.is_empty() && refused.total == 0);
        theirs
            .send_msg(None, Message::Ping(Ping { nonce: 9 }))
            .await;
        loop {
            match theirs.envelope().await.msg {
                Message::Pong(p) => {
                    assert_eq!(p.nonce, 9);
                    break;
                }
                Message::Close(c) => panic!("hub closed: {c:?}"),
                _ => {}
            }
        }

        // The hub never sends an agent's message: a `backup_part` from an agent is refused.
        theirs.send_msg(None, Message::BackupPart(refused)).await;
        let closed = theirs.until_closed().await;
        assert_eq!(close_code(&closed), Some(CloseCode::ProtocolError));
        rig.shutdown().await;
    })
    .await;
}
