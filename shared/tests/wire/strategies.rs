//! Proptest strategies for every wire type, composed bottom-up to [`envelope`].

use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use tikfleet_shared::domain::*;
use tikfleet_shared::ids::*;
use tikfleet_shared::job::*;
use tikfleet_shared::protocol::*;
use tikfleet_shared::record::*;
use tikfleet_shared::{ErrorCode, ErrorInfo, Secret, UnixMillis};

/// Any text, including non-ASCII.
fn text() -> impl Strategy<Value = String> {
    ".{0,12}"
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    of(text())
}

fn time() -> impl Strategy<Value = UnixMillis> {
    any::<i64>().prop_map(UnixMillis)
}

fn secret() -> impl Strategy<Value = Secret> {
    text().prop_map(Secret::new)
}

macro_rules! id_strategy {
    ($fn:ident, $ty:ty) => {
        pub fn $fn() -> impl Strategy<Value = $ty> {
            any::<[u8; 16]>().prop_map(<$ty>::from_bytes)
        }
    };
}
id_strategy!(tenant_id, TenantId);
id_strategy!(agent_id, AgentId);
id_strategy!(router_id, RouterId);
id_strategy!(subscriber_id, SubscriberId);
id_strategy!(job_id, JobId);
id_strategy!(drift_id, DriftId);

pub fn error_code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(ErrorCode::ALL.to_vec())
}

pub fn error_info() -> impl Strategy<Value = ErrorInfo> {
    (error_code(), text(), any::<bool>()).prop_map(|(code, message, retryable)| ErrorInfo {
        code,
        message,
        retryable,
    })
}

fn ppp_profile() -> impl Strategy<Value = PppProfile> {
    (
        text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        of(any::<bool>()),
        opt_text(),
    )
        .prop_map(
            |(
                name,
                rate_limit,
                address_list,
                local_address,
                remote_address,
                dns_server,
                only_one,
                comment,
            )| PppProfile {
                name,
                rate_limit,
                address_list,
                local_address,
                remote_address,
                dns_server,
                only_one,
                comment,
            },
        )
}

fn hotspot_profile() -> impl Strategy<Value = HotspotProfile> {
    (
        text(),
        opt_text(),
        opt_text(),
        of(any::<u32>()),
        of(any::<u64>()),
        of(any::<u64>()),
        opt_text(),
    )
        .prop_map(
            |(
                name,
                rate_limit,
                address_list,
                shared_users,
                session_timeout_secs,
                idle_timeout_secs,
                comment,
            )| HotspotProfile {
                name,
                rate_limit,
                address_list,
                shared_users,
                session_timeout_secs,
                idle_timeout_secs,
                comment,
            },
        )
}

pub fn profile() -> impl Strategy<Value = Profile> {
    prop_oneof![
        ppp_profile().prop_map(Profile::Ppp),
        hotspot_profile().prop_map(Profile::Hotspot),
    ]
}

fn ppp_service() -> impl Strategy<Value = PppService> {
    proptest::sample::select(vec![
        PppService::Any,
        PppService::Pppoe,
        PppService::Pptp,
        PppService::L2tp,
        PppService::Ovpn,
        PppService::Sstp,
        PppService::Async,
    ])
}

pub fn ppp_secret() -> impl Strategy<Value = PppSecret> {
    (
        of(subscriber_id()),
        text(),
        secret(),
        ppp_service(),
        text(),
        any::<bool>(),
        opt_text(),
        opt_text(),
    )
        .prop_map(
            |(
                subscriber_id,
                name,
                password,
                service,
                profile,
                disabled,
                remote_address,
                comment,
            )| {
                PppSecret {
                    subscriber_id,
                    name,
                    password,
                    service,
                    profile,
                    disabled,
                    remote_address,
                    comment,
                }
            },
        )
}

pub fn hotspot_user() -> impl Strategy<Value = HotspotUser> {
    (
        of(subscriber_id()),
        text(),
        secret(),
        text(),
        opt_text(),
        opt_text(),
        any::<bool>(),
        opt_text(),
    )
        .prop_map(
            |(subscriber_id, name, password, profile, server, mac_address, disabled, comment)| {
                HotspotUser {
                    subscriber_id,
                    name,
                    password,
                    profile,
                    server,
                    mac_address,
                    disabled,
                    comment,
                }
            },
        )
}

pub fn address_list_entry() -> impl Strategy<Value = AddressListEntry> {
    (text(), text(), opt_text()).prop_map(|(list, address, comment)| AddressListEntry {
        list,
        address,
        comment,
    })
}

fn account_kind() -> impl Strategy<Value = AccountKind> {
    prop_oneof![Just(AccountKind::Ppp), Just(AccountKind::Hotspot)]
}

fn account() -> impl Strategy<Value = AccountRef> {
    (account_kind(), text()).prop_map(|(kind, name)| AccountRef { kind, name })
}

fn lifecycle() -> impl Strategy<Value = SubscriberLifecycle> {
    (
        subscriber_id(),
        account(),
        of(time()),
        of(time()),
        opt_text(),
        opt_text(),
        opt_text(),
    )
        .prop_map(
            |(
                subscriber_id,
                account,
                expires_at,
                grace_until,
                grace_profile,
                suspended_profile,
                suspended_address_list,
            )| SubscriberLifecycle {
                subscriber_id,
                account,
                expires_at,
                grace_until,
                grace_profile,
                suspended_profile,
                suspended_address_list,
            },
        )
}

pub fn desired_state() -> impl Strategy<Value = DesiredState> {
    (
        any::<u64>(),
        tenant_id(),
        router_id(),
        time(),
        vec(profile(), 0..3),
        vec(ppp_secret(), 0..3),
        vec(hotspot_user(), 0..3),
        vec(address_list_entry(), 0..3),
        vec(lifecycle(), 0..3),
        drift_settings(),
    )
        .prop_map(
            |(
                generation,
                tenant_id,
                router_id,
                compiled_at,
                profiles,
                ppp_secrets,
                hotspot_users,
                address_list_entries,
                lifecycles,
                drift,
            )| DesiredState {
                generation,
                tenant_id,
                router_id,
                compiled_at,
                profiles,
                ppp_secrets,
                hotspot_users,
                address_list_entries,
                lifecycles,
                drift,
            },
        )
}

fn drift_settings() -> impl Strategy<Value = DriftSettings> {
    (
        any::<u64>(),
        prop_oneof![Just(DriftPolicy::Report), Just(DriftPolicy::Enforce)],
    )
        .prop_map(|(interval_ms, policy)| DriftSettings {
            interval_ms,
            policy,
        })
}

fn item_ref() -> impl Strategy<Value = ItemRef> {
    (item_kind(), text()).prop_map(|(kind, key)| ItemRef { kind, key })
}

pub fn job_op() -> impl Strategy<Value = JobOp> {
    prop_oneof![
        (
            ppp_secret(),
            proptest::option::of(ppp_profile().prop_map(Box::new))
        )
            .prop_map(|(secret, profile)| JobOp::UpsertPppSecret { secret, profile }),
        text().prop_map(|name| JobOp::DeletePppSecret { name }),
        (
            hotspot_user(),
            proptest::option::of(hotspot_profile().prop_map(Box::new))
        )
            .prop_map(|(user, profile)| JobOp::UpsertHotspotUser { user, profile }),
        text().prop_map(|name| JobOp::DeleteHotspotUser { name }),
        (account(), text()).prop_map(|(account, profile)| JobOp::SetProfile { account, profile }),
        account().prop_map(|account| JobOp::Enable { account }),
        account().prop_map(|account| JobOp::Disable { account }),
        account().prop_map(|account| JobOp::DisconnectSession { account }),
        profile().prop_map(|profile| JobOp::UpsertProfile { profile }),
        (account_kind(), text()).prop_map(|(kind, name)| JobOp::DeleteProfile { kind, name }),
        address_list_entry().prop_map(|entry| JobOp::AddAddressListEntry { entry }),
        (text(), text())
            .prop_map(|(list, address)| JobOp::RemoveAddressListEntry { list, address }),
        Just(JobOp::Reboot {}),
        opt_text().prop_map(|name| JobOp::BackupNow { name }),
        (
            text(),
            opt_text(),
            vec(any::<u8>(), 0..40),
            vec(any::<u8>(), 0..32),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(name, backup_id, data, sha256, size)| JobOp::Restore {
                name,
                backup_id,
                data,
                sha256,
                size,
            }),
        Just(JobOp::RotateCredentials {}),
        Just(JobOp::DriftCheck {}),
        (vec(item_ref(), 0..3), any::<bool>())
            .prop_map(|(items, adopt)| JobOp::Enforce { items, adopt }),
        vec(text(), 0..3).prop_map(|admin_networks| JobOp::Lockdown { admin_networks }),
    ]
}

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::Critical),
        Just(Priority::Normal),
        Just(Priority::Bulk)
    ]
}

pub fn job() -> impl Strategy<Value = Job> {
    (
        job_id(),
        tenant_id(),
        router_id(),
        text(),
        priority(),
        job_op(),
        time(),
        any::<u32>(),
        of(any::<u64>()),
    )
        .prop_map(
            |(
                id,
                tenant_id,
                router_id,
                idempotency_key,
                priority,
                op,
                created_at,
                max_attempts,
                generation,
            )| {
                Job {
                    id,
                    tenant_id,
                    router_id,
                    idempotency_key,
                    priority,
                    op,
                    created_at,
                    max_attempts,
                    generation,
                }
            },
        )
}

fn job_status() -> impl Strategy<Value = JobStatus> {
    proptest::sample::select(vec![
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Retrying,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ])
}

pub fn job_update() -> impl Strategy<Value = JobUpdate> {
    (
        job_id(),
        router_id(),
        job_status(),
        any::<u32>(),
        of((any::<u64>(), any::<u64>()).prop_map(|(done, total)| Progress { done, total })),
        of(error_info()),
        opt_text(),
        time(),
    )
        .prop_map(
            |(job_id, router_id, status, attempts, progress, error, detail, at)| JobUpdate {
                job_id,
                router_id,
                status,
                attempts,
                progress,
                error,
                detail,
                at,
            },
        )
}

fn audit_params() -> impl Strategy<Value = AuditParams> {
    vec((text(), text()), 0..4).prop_map(|pairs| {
        let mut params = AuditParams::new();
        for (k, v) in pairs {
            params.insert(k, v);
        }
        params
    })
}

fn audit() -> impl Strategy<Value = AuditRecord> {
    (
        (
            any::<u64>(),
            time(),
            tenant_id(),
            of(router_id()),
            of(job_id()),
        ),
        (
            of(any::<u64>()),
            text(),
            audit_params(),
            prop_oneof![Just(AuditStatus::Succeeded), Just(AuditStatus::Failed)],
            of(error_info()),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (seq, at, tenant_id, router_id, job_id),
                (generation, action, params, status, error, duration_ms),
            )| AuditRecord {
                seq,
                at,
                tenant_id,
                router_id,
                job_id,
                generation,
                action,
                params,
                status,
                error,
                duration_ms,
            },
        )
}

fn interface() -> impl Strategy<Value = InterfaceCounters> {
    (text(), any::<bool>(), any::<[u64; 6]>()).prop_map(|(name, running, c)| InterfaceCounters {
        name,
        running,
        rx_bytes: c[0],
        tx_bytes: c[1],
        rx_packets: c[2],
        tx_packets: c[3],
        rx_errors: c[4],
        tx_errors: c[5],
    })
}

fn router_sample() -> impl Strategy<Value = RouterSample> {
    (
        router_id(),
        any::<u8>(),
        any::<[u64; 5]>(),
        vec(interface(), 0..3),
        any::<u32>(),
        any::<u32>(),
        opt_text(),
    )
        .prop_map(
            |(router_id, cpu, m, interfaces, ppp, hotspot, routeros_version)| RouterSample {
                router_id,
                cpu_load_percent: cpu,
                free_memory_bytes: m[0],
                total_memory_bytes: m[1],
                uptime_secs: m[2],
                free_disk_bytes: m[3],
                total_disk_bytes: m[4],
                interfaces,
                active_ppp_sessions: ppp,
                active_hotspot_sessions: hotspot,
                routeros_version,
            },
        )
}

fn host_sample() -> impl Strategy<Value = HostSample> {
    (
        agent_id(),
        any::<u8>(),
        any::<[u64; 9]>(),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(agent_id, cpu, m, max, dropped)| HostSample {
            agent_id,
            cpu_load_percent: cpu,
            free_memory_bytes: m[0],
            total_memory_bytes: m[1],
            uptime_secs: m[2],
            free_disk_bytes: m[3],
            total_disk_bytes: m[4],
            outbox_records: m[5],
            outbox_bytes: m[6],
            queued_jobs: m[7] ^ m[8],
            outbox_max_bytes: max,
            telemetry_dropped: dropped,
        })
}

fn version_sample() -> impl Strategy<Value = VersionSample> {
    (
        router_id(),
        [opt_text(), opt_text(), opt_text(), opt_text()],
        proptest::option::of(any::<bool>()),
        [opt_text(), opt_text(), opt_text(), opt_text()],
    )
        .prop_map(|(router_id, a, update_available, b)| {
            let [ros_version, channel, installed, latest] = a;
            let [update_error, firmware_current, firmware_upgrade, board] = b;
            VersionSample {
                router_id,
                ros_version,
                channel,
                installed,
                latest,
                update_available,
                update_error,
                firmware_current,
                firmware_upgrade,
                board,
            }
        })
}

fn telemetry() -> impl Strategy<Value = Telemetry> {
    let sample = prop_oneof![
        router_sample().prop_map(TelemetrySample::Router),
        (router_id(), error_info())
            .prop_map(|(router_id, error)| TelemetrySample::RouterUnreachable { router_id, error }),
        host_sample().prop_map(TelemetrySample::Host),
        version_sample().prop_map(TelemetrySample::Versions),
    ];
    (time(), sample).prop_map(|(at, sample)| Telemetry { at, sample })
}

fn item_kind() -> impl Strategy<Value = ItemKind> {
    proptest::sample::select(vec![
        ItemKind::PppSecret,
        ItemKind::HotspotUser,
        ItemKind::PppProfile,
        ItemKind::HotspotProfile,
        ItemKind::AddressListEntry,
    ])
}

fn drift_finding() -> impl Strategy<Value = DriftFinding> {
    (
        item_ref(),
        (opt_text(), opt_text(), opt_text(), any::<bool>()),
        proptest::sample::select(vec![
            DriftAction::Corrected,
            DriftAction::Reported,
            DriftAction::Conflict,
            DriftAction::Failed,
        ]),
    )
        .prop_map(
            |(item, (field, router_value, desired_value, managed), action)| DriftFinding {
                item,
                field,
                router_value,
                desired_value,
                managed,
                action,
            },
        )
}

fn drift() -> impl Strategy<Value = DriftReport> {
    (
        (drift_id(), router_id(), any::<u64>(), time()),
        (
            proptest::sample::select(vec![
                DriftTrigger::Reconcile,
                DriftTrigger::Schedule,
                DriftTrigger::Request,
                DriftTrigger::Enforce,
            ]),
            of(job_id()),
            any::<u32>(),
            any::<bool>(),
            any::<u64>(),
        ),
        vec(drift_finding(), 0..3),
    )
        .prop_map(
            |(
                (id, router_id, generation, detected_at),
                (trigger, job_id, part, last, items_checked),
                findings,
            )| DriftReport {
                id,
                router_id,
                generation,
                detected_at,
                trigger,
                job_id,
                part,
                last,
                items_checked,
                findings,
            },
        )
}

fn progress() -> impl Strategy<Value = ReconcileProgress> {
    (router_id(), any::<[u64; 3]>(), time()).prop_map(|(router_id, n, at)| ReconcileProgress {
        router_id,
        generation: n[0],
        done: n[1],
        total: n[2],
        at,
    })
}

fn apply_report() -> impl Strategy<Value = ApplyReport> {
    (
        router_id(),
        any::<u64>(),
        time(),
        any::<[u32; 2]>(),
        of(error_info()),
    )
        .prop_map(|(router_id, generation, at, n, error)| ApplyReport {
            router_id,
            generation,
            at,
            changes: n[0],
            conflicts: n[1],
            error,
        })
}

fn lifecycle_report() -> impl Strategy<Value = LifecycleReport> {
    let phase = prop_oneof![
        Just(LifecyclePhase::Active),
        Just(LifecyclePhase::Grace),
        Just(LifecyclePhase::Suspended)
    ];
    let transition = (subscriber_id(), account(), phase, time(), time()).prop_map(
        |(subscriber_id, account, phase, expires_at, due_at)| LifecycleTransition {
            subscriber_id,
            account,
            phase,
            expires_at,
            due_at,
        },
    );
    (
        router_id(),
        any::<u64>(),
        time(),
        vec(transition, 0..3),
        of(error_info()),
    )
        .prop_map(
            |(router_id, generation, at, transitions, error)| LifecycleReport {
                router_id,
                generation,
                at,
                transitions,
                error,
            },
        )
}

pub fn outbox_record() -> impl Strategy<Value = OutboxRecord> {
    prop_oneof![
        audit().prop_map(OutboxRecord::Audit),
        telemetry().prop_map(OutboxRecord::Telemetry),
        drift().prop_map(OutboxRecord::Drift),
        job_update().prop_map(OutboxRecord::JobUpdate),
        apply_report().prop_map(OutboxRecord::Applied),
        progress().prop_map(OutboxRecord::Progress),
        lifecycle_report().prop_map(OutboxRecord::Lifecycle),
        drop_reason().prop_map(OutboxRecord::dropped),
        backup_chunk().prop_map(OutboxRecord::BackupChunk),
    ]
}

fn backup_chunk() -> impl Strategy<Value = BackupChunk> {
    (
        (job_id(), router_id(), any::<bool>(), time(), text()),
        (
            any::<u64>(),
            any::<u64>(),
            vec(any::<u8>(), 0..40),
            vec(any::<u8>(), 0..64),
        ),
        any::<bool>(),
    )
        .prop_map(
            |(
                (job_id, router_id, binary, taken_at, ros_version),
                (offset, total_size, sha256, data),
                last,
            )| {
                BackupChunk {
                    job_id,
                    router_id,
                    kind: if binary {
                        BackupKind::Binary
                    } else {
                        BackupKind::Export
                    },
                    taken_at,
                    ros_version,
                    offset,
                    total_size,
                    sha256,
                    data,
                    last,
                }
            },
        )
}

fn drop_reason() -> impl Strategy<Value = DropReason> {
    proptest::sample::select(DropReason::ALL.to_vec())
}

fn hello() -> impl Strategy<Value = Hello> {
    let routers = vec(
        (router_id(), any::<u64>(), any::<u64>()).prop_map(|(router_id, stored, applied)| {
            RouterGenerations {
                router_id,
                stored,
                applied,
            }
        }),
        0..3,
    );
    let outbox = any::<[u64; 3]>().prop_map(|p| OutboxPosition {
        acked: p[0],
        next_seq: p[1],
        pending_bytes: p[2],
    });
    (
        agent_id(),
        (text(), vec(any::<u8>(), 0..80)),
        any::<u16>(),
        any::<u16>(),
        text(),
        routers,
        outbox,
    )
        .prop_map(
            |(
                agent_id,
                (key_id, signature),
                min_version,
                max_version,
                agent_version,
                routers,
                outbox,
            )| {
                Hello {
                    agent_id,
                    proof: IdentityProof { key_id, signature },
                    min_version,
                    max_version,
                    agent_version,
                    routers,
                    outbox,
                }
            },
        )
}

fn welcome() -> impl Strategy<Value = Welcome> {
    let settings = (any::<[u64; 3]>(), any::<[u32; 3]>()).prop_map(|(u, c)| AgentSettings {
        heartbeat_interval_ms: u[0],
        telemetry_interval_ms: u[1],
        outbox_cap_bytes: u[2],
        rate_limit: RateLimit {
            per_second: c[0],
            burst: c[1],
        },
        router_concurrency: c[2],
    });
    (any::<u16>(), tenant_id(), agent_id(), settings).prop_map(
        |(version, tenant_id, agent_id, settings)| Welcome {
            version,
            tenant_id,
            agent_id,
            settings,
        },
    )
}

fn close_code() -> impl Strategy<Value = CloseCode> {
    proptest::sample::select(vec![
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::UnsupportedVersion,
        CloseCode::FrameTooLarge,
        CloseCode::AuthenticationFailed,
        CloseCode::Superseded,
        CloseCode::Internal,
    ])
}

fn router_tls() -> impl Strategy<Value = RouterTls> {
    prop_oneof![
        Just(RouterTls::Plain {}),
        (opt_text(), opt_text()).prop_map(|(ca_pem, server_name)| RouterTls::Verify {
            ca_pem,
            server_name
        }),
        text().prop_map(|sha256| RouterTls::Pin { sha256 }),
    ]
}

pub fn router_config() -> impl Strategy<Value = RouterConfig> {
    (
        (router_id(), tenant_id(), text(), text()),
        (any::<u16>(), any::<u16>(), router_tls(), text()),
        (vec(any::<u8>(), 0..96), any::<u64>(), any::<bool>()),
    )
        .prop_map(
            |(
                (router_id, tenant_id, name, host),
                (api_port, ssh_port, tls, username),
                (sealed_password, revision, removed),
            )| RouterConfig {
                router_id,
                tenant_id,
                name,
                host,
                api_port,
                ssh_port,
                tls,
                username,
                sealed_password,
                revision,
                removed,
            },
        )
}

pub fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<[u8; NONCE_LEN]>(), time())
            .prop_map(|(nonce, server_time)| Message::Challenge(Challenge { nonce, server_time })),
        hello().prop_map(Message::Hello),
        welcome().prop_map(Message::Welcome),
        desired_state().prop_map(Message::DesiredState),
        job().prop_map(Message::Job),
        (job_id(), opt_text())
            .prop_map(|(job_id, reason)| Message::JobCancel(JobCancel { job_id, reason })),
        router_config().prop_map(Message::RouterConfig),
        outbox_record().prop_map(Message::Record),
        Just(Message::Ack(Ack {})),
        any::<u64>().prop_map(|nonce| Message::Ping(Ping { nonce })),
        any::<u64>().prop_map(|nonce| Message::Pong(Pong { nonce })),
        (close_code(), text()).prop_map(|(code, reason)| Message::Close(Close { code, reason })),
        text().prop_map(|reason| Message::Revoked(Revoked { reason })),
        (job_id(), text(), any::<u64>()).prop_map(|(job_id, backup_id, offset)| {
            Message::BackupFetch(BackupFetch {
                job_id,
                backup_id,
                offset,
            })
        }),
        (
            job_id(),
            text(),
            any::<u64>(),
            any::<u64>(),
            vec(any::<u8>(), 0..64),
            proptest::option::of(error_info())
        )
            .prop_map(|(job_id, backup_id, offset, total, data, error)| {
                Message::BackupPart(BackupPart {
                    job_id,
                    backup_id,
                    offset,
                    total,
                    data,
                    error,
                })
            }),
    ]
}

/// A valid envelope: supported version, seq exactly on durable messages.
pub fn envelope() -> impl Strategy<Value = Envelope> {
    (message(), 1..=u64::MAX, any::<u64>()).prop_map(|(msg, seq, ack)| Envelope {
        version: PROTOCOL_VERSION,
        seq: msg.is_durable().then_some(seq),
        ack,
        msg,
    })
}
