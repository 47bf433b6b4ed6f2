//! Fixed-value envelopes for the golden file: one per message, job operation, outbox record,
//! telemetry sample, tombstone reason, profile kind and router TLS mode. Values are fixed (no
//! clock, no randomness) so the encoded bytes are reproducible. Changing a value here changes
//! the golden file.

use tikfleet_shared::domain::*;
use tikfleet_shared::ids::*;
use tikfleet_shared::job::*;
use tikfleet_shared::protocol::*;
use tikfleet_shared::record::*;
use tikfleet_shared::{ErrorCode, ErrorInfo, Secret, UnixMillis};

const T0: UnixMillis = UnixMillis(1_767_225_600_000); // 2026-01-01T00:00:00Z

fn tenant() -> TenantId {
    "019b7a2c-0000-7000-8000-00000000aa01".parse().unwrap()
}
fn agent() -> AgentId {
    "019b7a2c-0000-7000-8000-00000000bb02".parse().unwrap()
}
fn router() -> RouterId {
    "019b7a2c-0000-7000-8000-00000000cc03".parse().unwrap()
}
fn subscriber() -> SubscriberId {
    "019b7a2c-0000-7000-8000-00000000dd04".parse().unwrap()
}
fn job_id() -> JobId {
    "019b7a2c-0000-7000-8000-00000000ee05".parse().unwrap()
}
fn drift_id() -> DriftId {
    "019b7a2c-0000-7000-8000-00000000ff06".parse().unwrap()
}

fn ppp_profile() -> Profile {
    Profile::Ppp(PppProfile {
        name: "plan-20m".into(),
        rate_limit: Some("10M/20M".into()),
        address_list: Some("subscribers".into()),
        local_address: Some("10.0.0.1".into()),
        remote_address: Some("pool-pppoe".into()),
        dns_server: Some("1.1.1.1,9.9.9.9".into()),
        only_one: Some(true),
        comment: Some("tikfleet: plan 20M".into()),
    })
}

fn hotspot_profile() -> Profile {
    Profile::Hotspot(HotspotProfile {
        name: "day-pass".into(),
        rate_limit: Some("5M/5M".into()),
        address_list: None,
        shared_users: Some(1),
        session_timeout_secs: Some(86_400),
        idle_timeout_secs: Some(600),
        comment: None,
    })
}

fn ppp_secret() -> PppSecret {
    PppSecret {
        subscriber_id: Some(subscriber()),
        name: "alice".into(),
        password: Secret::new("correct horse"),
        service: PppService::Pppoe,
        profile: "plan-20m".into(),
        disabled: false,
        remote_address: Some("100.64.0.10".into()),
        comment: Some("tikfleet: Alice Ng".into()),
    }
}

fn hotspot_user() -> HotspotUser {
    HotspotUser {
        subscriber_id: None,
        name: "voucher-7421".into(),
        password: Secret::new("7421"),
        profile: "day-pass".into(),
        server: Some("hs-lobby".into()),
        mac_address: Some("AA:BB:CC:00:11:22".into()),
        disabled: true,
        comment: None,
    }
}

fn entry() -> AddressListEntry {
    AddressListEntry {
        list: "suspended".into(),
        address: "100.64.0.10".into(),
        comment: Some("tikfleet: alice".into()),
    }
}

fn alice() -> AccountRef {
    AccountRef {
        kind: AccountKind::Ppp,
        name: "alice".into(),
    }
}

fn error() -> ErrorInfo {
    ErrorInfo::with_message(ErrorCode::Timeout, "router did not answer within 10s")
}

fn job(op: JobOp) -> Job {
    Job {
        id: job_id(),
        tenant_id: tenant(),
        router_id: router(),
        idempotency_key: "req-42".into(),
        priority: Priority::Critical,
        op,
        created_at: T0,
        max_attempts: 5,
        generation: None,
    }
}

fn all_job_ops() -> Vec<JobOp> {
    vec![
        JobOp::UpsertPppSecret {
            secret: ppp_secret(),
            profile: None,
        },
        JobOp::DeletePppSecret {
            name: "alice".into(),
        },
        JobOp::UpsertHotspotUser {
            user: hotspot_user(),
            profile: None,
        },
        JobOp::DeleteHotspotUser {
            name: "voucher-7421".into(),
        },
        JobOp::SetProfile {
            account: alice(),
            profile: "grace".into(),
        },
        JobOp::Enable { account: alice() },
        JobOp::Disable {
            account: AccountRef {
                kind: AccountKind::Hotspot,
                name: "voucher-7421".into(),
            },
        },
        JobOp::DisconnectSession { account: alice() },
        JobOp::UpsertProfile {
            profile: ppp_profile(),
        },
        JobOp::DeleteProfile {
            kind: AccountKind::Hotspot,
            name: "day-pass".into(),
        },
        JobOp::AddAddressListEntry { entry: entry() },
        JobOp::RemoveAddressListEntry {
            list: "suspended".into(),
            address: "100.64.0.10".into(),
        },
        JobOp::Reboot {},
        JobOp::BackupNow {
            name: Some("nightly".into()),
        },
        JobOp::Restore {
            name: "nightly.backup".into(),
            backup_id: None,
            data: Vec::new(),
            sha256: Vec::new(),
            size: None,
        },
        JobOp::RotateCredentials {},
        JobOp::DriftCheck {},
        JobOp::Enforce {
            items: vec![ItemRef {
                kind: ItemKind::PppSecret,
                key: "alice".into(),
            }],
            adopt: true,
        },
        JobOp::Lockdown {
            admin_networks: vec!["10.0.0.0/24".into(), "192.0.2.7".into()],
        },
    ]
}

fn all_records() -> Vec<(String, OutboxRecord)> {
    let mut params = AuditParams::new();
    params
        .insert("name", "alice")
        .insert("password", "correct horse")
        .insert("profile", "plan-20m");
    let telemetry = |sample| OutboxRecord::Telemetry(Telemetry { at: T0, sample });
    vec![
        (
            "record/audit".into(),
            OutboxRecord::Audit(AuditRecord {
                seq: 9,
                at: T0,
                tenant_id: tenant(),
                router_id: Some(router()),
                job_id: Some(job_id()),
                generation: Some(12),
                action: "/ppp/secret/set".into(),
                params,
                status: AuditStatus::Failed,
                error: Some(error()),
                duration_ms: 10_004,
            }),
        ),
        (
            "record/telemetry/router".into(),
            telemetry(TelemetrySample::Router(RouterSample {
                router_id: router(),
                cpu_load_percent: 37,
                free_memory_bytes: 700_000_000,
                total_memory_bytes: 1_073_741_824,
                uptime_secs: 1_209_600,
                free_disk_bytes: 90_000_000,
                total_disk_bytes: 134_217_728,
                interfaces: vec![InterfaceCounters {
                    name: "ether1".into(),
                    running: true,
                    rx_bytes: u64::MAX,
                    tx_bytes: 1 << 40,
                    rx_packets: 123_456_789,
                    tx_packets: 98_765_432,
                    rx_errors: 0,
                    tx_errors: 3,
                }],
                active_ppp_sessions: 812,
                active_hotspot_sessions: 44,
                routeros_version: Some("7.15.3".into()),
            })),
        ),
        (
            "record/telemetry/router_unreachable".into(),
            telemetry(TelemetrySample::RouterUnreachable {
                router_id: router(),
                error: ErrorInfo::new(ErrorCode::ConnectionRefused),
            }),
        ),
        (
            "record/telemetry/host".into(),
            telemetry(TelemetrySample::Host(HostSample {
                agent_id: agent(),
                cpu_load_percent: 3,
                free_memory_bytes: 1 << 30,
                total_memory_bytes: 1 << 32,
                uptime_secs: 86_400,
                free_disk_bytes: 50 << 30,
                total_disk_bytes: 64 << 30,
                outbox_records: 1_500,
                outbox_bytes: 2_000_000,
                queued_jobs: 7,
                outbox_max_bytes: None,
                telemetry_dropped: None,
            })),
        ),
        (
            "record/drift".into(),
            OutboxRecord::Drift(DriftReport {
                id: drift_id(),
                router_id: router(),
                generation: 12,
                detected_at: T0,
                trigger: DriftTrigger::Schedule,
                job_id: None,
                part: 0,
                last: true,
                items_checked: 3,
                findings: vec![DriftFinding {
                    item: ItemRef {
                        kind: ItemKind::PppSecret,
                        key: "alice".into(),
                    },
                    field: Some("profile".into()),
                    router_value: Some("plan-100m".into()),
                    desired_value: Some("plan-20m".into()),
                    managed: true,
                    action: DriftAction::Reported,
                }],
            }),
        ),
        (
            "record/job_update".into(),
            OutboxRecord::JobUpdate(JobUpdate {
                job_id: job_id(),
                router_id: router(),
                status: JobStatus::Retrying,
                attempts: 2,
                progress: Some(Progress { done: 3, total: 10 }),
                error: Some(error()),
                detail: None,
                at: T0,
            }),
        ),
        (
            "record/applied".into(),
            OutboxRecord::Applied(ApplyReport {
                router_id: router(),
                generation: 12,
                at: T0,
                changes: 4,
                conflicts: 0,
                error: None,
            }),
        ),
        // Appended after the v1 records so their frames (and seqs) stay as blessed.
        (
            "record/dropped/telemetry".into(),
            OutboxRecord::dropped(DropReason::Telemetry),
        ),
        (
            "record/dropped/corrupt".into(),
            OutboxRecord::dropped(DropReason::Corrupt),
        ),
        (
            "record/dropped/missing".into(),
            OutboxRecord::dropped(DropReason::Missing),
        ),
        (
            "record/progress".into(),
            OutboxRecord::Progress(ReconcileProgress {
                router_id: router(),
                generation: 12,
                done: 2_500,
                total: 10_000,
                at: T0,
            }),
        ),
        (
            "record/lifecycle".into(),
            OutboxRecord::Lifecycle(LifecycleReport {
                router_id: router(),
                generation: 12,
                at: T0,
                transitions: vec![LifecycleTransition {
                    subscriber_id: subscriber(),
                    account: alice(),
                    phase: LifecyclePhase::Grace,
                    expires_at: T0,
                    due_at: T0,
                }],
                error: Some(error()),
            }),
        ),
        (
            "record/telemetry/versions".into(),
            telemetry(TelemetrySample::Versions(VersionSample {
                router_id: router(),
                ros_version: Some("7.15.3".into()),
                channel: Some("stable".into()),
                installed: Some("7.15.3".into()),
                latest: Some("7.16.2".into()),
                update_available: Some(true),
                update_error: None,
                firmware_current: Some("7.14".into()),
                firmware_upgrade: Some("7.15.3".into()),
                board: Some("RB5009UG+S+".into()),
            })),
        ),
        (
            "record/backup_chunk".into(),
            OutboxRecord::BackupChunk(BackupChunk {
                job_id: job_id(),
                router_id: router(),
                kind: BackupKind::Export,
                taken_at: T0,
                ros_version: "7.15.3 (stable)".into(),
                offset: 0,
                total_size: 28,
                sha256: vec![0xab; 32],
                data: b"/system identity\nset name=r1\n".to_vec(),
                last: true,
            }),
        ),
        (
            "record/telemetry/host_with_cap".into(),
            telemetry(TelemetrySample::Host(HostSample {
                agent_id: agent(),
                cpu_load_percent: 4,
                free_memory_bytes: 1 << 30,
                total_memory_bytes: 1 << 32,
                uptime_secs: 90_000,
                free_disk_bytes: 49 << 30,
                total_disk_bytes: 64 << 30,
                outbox_records: 410_000,
                outbox_bytes: 450 << 20,
                queued_jobs: 2,
                outbox_max_bytes: Some(512 << 20),
                telemetry_dropped: Some(1_234),
            })),
        ),
    ]
}

fn desired_state() -> DesiredState {
    DesiredState {
        generation: 12,
        tenant_id: tenant(),
        router_id: router(),
        compiled_at: T0,
        profiles: vec![ppp_profile(), hotspot_profile()],
        ppp_secrets: vec![ppp_secret()],
        hotspot_users: vec![hotspot_user()],
        address_list_entries: vec![entry()],
        lifecycles: vec![SubscriberLifecycle {
            subscriber_id: subscriber(),
            account: alice(),
            expires_at: Some(UnixMillis(T0.0 + 30 * 86_400_000)),
            grace_until: Some(UnixMillis(T0.0 + 33 * 86_400_000)),
            grace_profile: Some("grace".into()),
            suspended_profile: Some("suspended".into()),
            suspended_address_list: Some("suspended".into()),
        }],
        drift: DriftSettings::default(),
    }
}

fn control(ack: u64, msg: Message) -> Envelope {
    Envelope {
        version: PROTOCOL_VERSION,
        seq: None,
        ack,
        msg,
    }
}

fn durable(seq: u64, ack: u64, msg: Message) -> Envelope {
    Envelope {
        version: PROTOCOL_VERSION,
        seq: Some(seq),
        ack,
        msg,
    }
}

/// Every fixture, named `message/<name>`, `job/<op>` or `record/<kind>[/<sample>]`.
pub fn all() -> Vec<(String, Envelope)> {
    let mut out: Vec<(String, Envelope)> = vec![
        (
            "message/challenge".into(),
            control(
                0,
                Message::Challenge(Challenge {
                    nonce: core::array::from_fn(|i| i as u8),
                    server_time: T0,
                }),
            ),
        ),
        (
            "message/hello".into(),
            control(
                41,
                Message::Hello(Hello {
                    agent_id: agent(),
                    proof: IdentityProof {
                        key_id: "ed25519:4f2a".into(),
                        signature: (0..64).collect(),
                    },
                    min_version: 1,
                    max_version: 1,
                    agent_version: "0.1.0".into(),
                    routers: vec![RouterGenerations {
                        router_id: router(),
                        stored: 12,
                        applied: 11,
                    }],
                    outbox: OutboxPosition {
                        acked: 1_000,
                        next_seq: 1_042,
                        pending_bytes: 65_536,
                    },
                }),
            ),
        ),
        (
            "message/welcome".into(),
            control(
                1_000,
                Message::Welcome(Welcome {
                    version: 1,
                    tenant_id: tenant(),
                    agent_id: agent(),
                    settings: AgentSettings::default(),
                }),
            ),
        ),
        (
            "message/desired_state".into(),
            durable(42, 1_041, Message::DesiredState(desired_state())),
        ),
        (
            "message/desired_state/report_policy".into(),
            durable(
                42,
                1_041,
                Message::DesiredState(DesiredState {
                    drift: DriftSettings {
                        interval_ms: 1_800_000,
                        policy: DriftPolicy::Report,
                    },
                    ..desired_state()
                }),
            ),
        ),
        (
            "job/upsert_profile/hotspot".into(),
            durable(
                43,
                1_041,
                Message::Job(job(JobOp::UpsertProfile {
                    profile: hotspot_profile(),
                })),
            ),
        ),
        (
            "message/job_cancel".into(),
            durable(
                44,
                1_041,
                Message::JobCancel(JobCancel {
                    job_id: job_id(),
                    reason: Some("staff cancelled".into()),
                }),
            ),
        ),
        (
            "message/router_config".into(),
            durable(
                45,
                1_041,
                Message::RouterConfig(RouterConfig {
                    router_id: router(),
                    tenant_id: tenant(),
                    name: "core-1".into(),
                    host: "10.0.0.1".into(),
                    api_port: 8729,
                    ssh_port: 22,
                    tls: RouterTls::Pin {
                        sha256: "36d7cc4298cc36d7cc4298cc36d7cc4298cc36d7cc4298cc36d7cc4298cc36d7"
                            .into(),
                    },
                    username: "tikfleet".into(),
                    sealed_password: (0..64).map(|i| 0xa0 ^ i).collect(),
                    revision: 3,
                    removed: false,
                }),
            ),
        ),
        (
            "router_config/plain_removed".into(),
            durable(
                46,
                1_041,
                Message::RouterConfig(RouterConfig {
                    router_id: router(),
                    tenant_id: tenant(),
                    name: "core-1".into(),
                    host: "10.0.0.1".into(),
                    api_port: 8728,
                    ssh_port: 22,
                    tls: RouterTls::Plain {},
                    username: "tikfleet".into(),
                    sealed_password: Vec::new(),
                    revision: 4,
                    removed: true,
                }),
            ),
        ),
        (
            "router_config/verify".into(),
            durable(
                47,
                1_041,
                Message::RouterConfig(RouterConfig {
                    router_id: router(),
                    tenant_id: tenant(),
                    name: "core-1".into(),
                    host: "10.0.0.1".into(),
                    api_port: 8729,
                    ssh_port: 2222,
                    tls: RouterTls::Verify {
                        ca_pem: Some(
                            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
                        ),
                        server_name: Some("core-1.example".into()),
                    },
                    username: "tikfleet".into(),
                    sealed_password: vec![1, 2, 3],
                    revision: 5,
                    removed: false,
                }),
            ),
        ),
        ("message/ack".into(), control(1_041, Message::Ack(Ack {}))),
        (
            "message/ping".into(),
            control(7, Message::Ping(Ping { nonce: u64::MAX })),
        ),
        (
            "message/pong".into(),
            control(7, Message::Pong(Pong { nonce: u64::MAX })),
        ),
        (
            "message/close".into(),
            control(
                7,
                Message::Close(Close {
                    code: CloseCode::Superseded,
                    reason: "a newer connection of this agent took over".into(),
                }),
            ),
        ),
        (
            "message/revoked".into(),
            control(
                7,
                Message::Revoked(Revoked {
                    reason: "agent revoked by staff".into(),
                }),
            ),
        ),
    ];
    for (i, op) in all_job_ops().into_iter().enumerate() {
        let name = format!("job/{}", op.name());
        out.push((name, durable(100 + i as u64, 7, Message::Job(job(op)))));
    }
    out.push((
        "job/with_generation".into(),
        durable(
            200,
            7,
            Message::Job(Job {
                generation: Some(13),
                ..job(JobOp::DriftCheck {})
            }),
        ),
    ));
    for (i, (name, record)) in all_records().into_iter().enumerate() {
        out.push((name, durable(1_042 + i as u64, 44, Message::Record(record))));
    }
    out.push((
        "job/restore_with_data".into(),
        durable(
            201,
            7,
            Message::Job(job(JobOp::Restore {
                name: "tikfleet-restore.backup".into(),
                backup_id: Some("019b7a2c-0000-7000-8000-0000000000b1".into()),
                data: b"TIKFLEET-SIM-BACKUP 1 sealed\n...".to_vec(),
                sha256: vec![0x5a; 32],
                size: None,
            })),
        ),
    ));
    // Chunked restores (appended after the frames above so their seqs stay as blessed).
    out.push((
        "job/restore_chunked".into(),
        durable(
            202,
            7,
            Message::Job(job(JobOp::Restore {
                name: "tikfleet-restore.backup".into(),
                backup_id: Some("019b7a2c-0000-7000-8000-0000000000b1".into()),
                data: Vec::new(),
                sha256: vec![0x5a; 32],
                size: Some(5_000_000),
            })),
        ),
    ));
    out.push((
        "message/backup_fetch".into(),
        control(
            44,
            Message::BackupFetch(BackupFetch {
                job_id: job_id(),
                backup_id: "019b7a2c-0000-7000-8000-0000000000b1".into(),
                offset: 262_144,
            }),
        ),
    ));
    out.push((
        "message/backup_part".into(),
        control(
            202,
            Message::BackupPart(BackupPart {
                job_id: job_id(),
                backup_id: "019b7a2c-0000-7000-8000-0000000000b1".into(),
                offset: 262_144,
                total: 5_000_000,
                data: b"TIKFLEET-SIM-BACKUP 1 sealed\n".to_vec(),
                error: None,
            }),
        ),
    ));
    out.push((
        "message/backup_part/error".into(),
        control(
            202,
            Message::BackupPart(BackupPart {
                job_id: job_id(),
                backup_id: "019b7a2c-0000-7000-8000-0000000000b1".into(),
                offset: 0,
                total: 0,
                data: Vec::new(),
                error: Some(ErrorInfo::with_message(
                    ErrorCode::NotFound,
                    "no such backup of this agent's routers",
                )),
            }),
        ),
    ));
    out
}
