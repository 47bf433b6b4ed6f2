//! The storage layer under the API: tenant scoping applied by every storage method (not by
//! handlers), audit rows in the change's own transaction, secrets at rest, and the hub's
//! storage ([`HubStore`]): exactly-once outbox commits, desired states newer than what the
//! agent stores, job delivery. Runs on SQLite, or on PostgreSQL when
//! `TIKFLEET_TEST_DATABASE_URL` is set.

mod common;

use std::time::Duration;

use common::{TestDb, new_identity, test_db};
use ring::signature::KeyPair as _;
use sqlx::Row as _;
use tikfleet_controller::db::agents::Enrollment;
use tikfleet_controller::db::plans::{NewPlan, Plan, PlanPatch};
use tikfleet_controller::db::routers::{NewRouter, Router, RouterPatch};
use tikfleet_controller::db::subscribers::{NewSubscriber, Service, Subscriber, SubscriberPatch};
use tikfleet_controller::db::tenants::Tenant;
use tikfleet_controller::db::{Backend, DbError, PageRequest, Scope, Staff};
use tikfleet_controller::hub::{HubStore as _, RouterTlsSetting};
use tikfleet_shared::domain::Profile;
use tikfleet_shared::error::{ErrorCode, ErrorInfo};
use tikfleet_shared::job::{JobOp, JobStatus, JobUpdate, Progress};
use tikfleet_shared::protocol::RouterGenerations;
use tikfleet_shared::record::{
    ApplyReport, AuditParams, AuditRecord, AuditStatus, DropReason, OutboxRecord, RouterSample,
    Telemetry, TelemetrySample,
};
use tikfleet_shared::{AgentId, Secret, UnixMillis};

struct Fx {
    tenant: Tenant,
    staff: Staff,
    agent: AgentId,
    router: Router,
    plan: Plan,
    sub: Subscriber,
}

fn admin() -> Staff {
    Staff {
        scope: Scope::Admin,
        actor: "root".into(),
    }
}

/// A tenant with an agent, a router, a plan and a PPPoE subscriber, made through storage.
async fn fixture(t: &TestDb, name: &str) -> Fx {
    let tenant = t.db.create_tenant(&admin(), name).await.unwrap();
    let staff = Staff {
        scope: Scope::Tenant(tenant.id),
        actor: format!("{name}-ops"),
    };
    let (_, token) =
        t.db.create_enrollment_token(&staff, tenant.id, Duration::from_secs(600))
            .await
            .unwrap();
    let identity = new_identity();
    let (_, seal) = tikfleet_shared::seal::generate();
    let (agent, _, _) =
        t.db.enroll_agent(&Enrollment {
            token,
            name: format!("{name}-agent"),
            public_key: identity.public_key().as_ref().try_into().unwrap(),
            seal_key: seal,
            agent_version: "0.1.0".into(),
        })
        .await
        .unwrap();
    let router =
        t.db.create_router(
            &staff,
            NewRouter {
                tenant_id: None,
                agent_id: agent,
                name: format!("{name}-core"),
                address: "127.0.0.1".into(),
                api_port: 8728,
                ssh_port: 22,
                tls: RouterTlsSetting::Plain,
                username: "admin".into(),
                password: Secret::new("router-pw-plain"),
            },
        )
        .await
        .unwrap();
    let plan =
        t.db.create_plan(
            &staff,
            NewPlan {
                tenant_id: None,
                name: format!("{name}-plan"),
                profile: format!("{name}-profile"),
                rate_limit: "10M/10M".into(),
            },
        )
        .await
        .unwrap();
    let sub =
        t.db.create_subscriber(
            &staff,
            NewSubscriber {
                username: format!("{name}-alice"),
                password: Secret::new("sub-pw-plain"),
                plan_id: plan.id,
                router_id: router.id,
                service: Service::Pppoe,
                expires_at: Some(UnixMillis(common::START + 86_400_000)),
                contact: Default::default(),
            },
        )
        .await
        .unwrap();
    Fx {
        tenant,
        staff,
        agent,
        router,
        plan,
        sub,
    }
}

/// A second subscriber on the fixture's router and plan (a second job for its agent).
async fn second_subscriber(db: &tikfleet_controller::db::Db, fx: &Fx) {
    db.create_subscriber(
        &fx.staff,
        NewSubscriber {
            username: format!("{}-bob", fx.router.name),
            password: Secret::new("sub-pw-plain"),
            plan_id: fx.plan.id,
            router_id: fx.router.id,
            service: Service::Pppoe,
            expires_at: None,
            contact: Default::default(),
        },
    )
    .await
    .unwrap();
}

fn not_found<T: std::fmt::Debug>(r: Result<T, DbError>, what: &str) {
    match r {
        Err(DbError::NotFound(_)) => {}
        other => panic!("{what}: expected not found, got {other:?}"),
    }
}

#[tokio::test]
async fn storage_scopes_every_read_and_write_by_tenant() {
    let t = test_db().await;
    let a = fixture(&t, "a").await;
    let b = fixture(&t, "b").await;
    let db = &t.db;
    let bs = &b.staff;
    let page = PageRequest::default();
    let jobs = db
        .list_jobs(&Scope::Tenant(a.tenant.id), &Default::default(), &page)
        .await
        .unwrap();
    let job = jobs.items[0].id;

    not_found(db.get_tenant(&bs.scope, a.tenant.id).await, "get_tenant");
    not_found(
        db.list_staff_tokens(&bs.scope, a.tenant.id, &page).await,
        "list_staff_tokens",
    );
    not_found(
        db.create_staff_token(
            bs,
            a.tenant.id,
            tikfleet_controller::auth::Role::Operator,
            "x",
        )
        .await,
        "create_staff_token",
    );
    not_found(
        db.create_enrollment_token(bs, a.tenant.id, Duration::from_secs(60))
            .await,
        "create_enrollment_token",
    );
    not_found(db.get_agent(&bs.scope, a.agent).await, "get_agent");
    not_found(db.revoke_agent(bs, a.agent).await, "revoke_agent");
    not_found(db.get_router(&bs.scope, a.router.id).await, "get_router");
    not_found(
        db.update_router(bs, a.router.id, RouterPatch::default())
            .await,
        "update_router",
    );
    not_found(db.delete_router(bs, a.router.id).await, "delete_router");
    not_found(db.router_sync(&bs.scope, a.router.id).await, "router_sync");
    not_found(db.get_plan(&bs.scope, a.plan.id).await, "get_plan");
    not_found(
        db.update_plan(bs, a.plan.id, PlanPatch::default()).await,
        "update_plan",
    );
    not_found(db.delete_plan(bs, a.plan.id).await, "delete_plan");
    not_found(
        db.get_subscriber(&bs.scope, a.sub.id).await,
        "get_subscriber",
    );
    not_found(
        db.update_subscriber(bs, a.sub.id, SubscriberPatch::default())
            .await,
        "update_subscriber",
    );
    not_found(
        db.suspend_subscriber(bs, a.sub.id).await,
        "suspend_subscriber",
    );
    not_found(
        db.resume_subscriber(bs, a.sub.id).await,
        "resume_subscriber",
    );
    not_found(
        db.delete_subscriber(bs, a.sub.id).await,
        "delete_subscriber",
    );
    not_found(db.get_job(&bs.scope, job).await, "get_job");
    not_found(db.cancel_job(bs, job).await, "cancel_job");
    not_found(db.requeue_job(bs, job).await, "requeue_job");
    // References to A's objects from B's changes.
    let mut new_router = NewRouter {
        tenant_id: None,
        agent_id: a.agent,
        name: "x".into(),
        address: "10.0.0.1".into(),
        api_port: 8728,
        ssh_port: 22,
        tls: RouterTlsSetting::Plain,
        username: "u".into(),
        password: Secret::new("p"),
    };
    not_found(
        db.create_router(bs, new_router.clone()).await,
        "create_router with A's agent",
    );
    let new_sub = |plan, router| NewSubscriber {
        username: "x".into(),
        password: Secret::new("p"),
        plan_id: plan,
        router_id: router,
        service: Service::Pppoe,
        expires_at: None,
        contact: Default::default(),
    };
    not_found(
        db.create_subscriber(bs, new_sub(a.plan.id, b.router.id))
            .await,
        "create_subscriber with A's plan",
    );
    not_found(
        db.create_subscriber(bs, new_sub(b.plan.id, a.router.id))
            .await,
        "create_subscriber with A's router",
    );
    let moved = SubscriberPatch {
        router_id: Some(a.router.id),
        ..Default::default()
    };
    not_found(
        db.update_subscriber(bs, b.sub.id, moved).await,
        "moving B's subscriber to A's router",
    );
    let plan_for_a = NewPlan {
        tenant_id: Some(a.tenant.id),
        name: "x".into(),
        profile: "x".into(),
        rate_limit: "1M".into(),
    };
    not_found(
        db.create_plan(bs, plan_for_a.clone()).await,
        "create_plan for A",
    );
    // An admin mixing tenants is refused too.
    assert!(matches!(
        db.create_subscriber(&admin(), new_sub(b.plan.id, a.router.id))
            .await,
        Err(DbError::Invalid(_))
    ));
    new_router.tenant_id = Some(b.tenant.id);
    assert!(matches!(
        db.create_router(&admin(), new_router).await,
        Err(DbError::Invalid(_))
    ));

    // Lists: each tenant sees its own, admins all, a scope without a tenant nothing.
    let routers = db.list_routers(&bs.scope, &page).await.unwrap();
    assert_eq!(
        routers.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        [b.router.id]
    );
    assert_eq!(
        db.list_routers(&Scope::Admin, &page)
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    assert!(
        db.list_routers(&Scope::Nothing, &page)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        db.list_tenants(&Scope::Nothing, &page)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let audit = db
        .list_audit(
            &bs.scope,
            &Default::default(),
            &PageRequest::parse(Some(500), None).unwrap(),
        )
        .await
        .unwrap();
    assert!(!audit.items.is_empty());
    assert!(audit.items.iter().all(|e| e.tenant_id == Some(b.tenant.id)));
    for (scope, n) in [(&bs.scope, 1), (&Scope::Admin, 2), (&Scope::Nothing, 0)] {
        assert_eq!(db.list_agents(scope, &page).await.unwrap().items.len(), n);
        assert_eq!(db.list_plans(scope, &page).await.unwrap().items.len(), n);
        assert_eq!(
            db.list_subscribers(scope, None, &page)
                .await
                .unwrap()
                .items
                .len(),
            n
        );
    }
    assert!(
        db.list_jobs(&bs.scope, &Default::default(), &page)
            .await
            .unwrap()
            .items
            .iter()
            .all(|j| j.tenant_id == b.tenant.id)
    );
    // Non-admins create no tenants.
    assert!(matches!(
        db.create_tenant(bs, "c").await,
        Err(DbError::Forbidden(_))
    ));
    // A is untouched.
    assert_eq!(
        db.get_router(&a.staff.scope, a.router.id)
            .await
            .unwrap()
            .revision,
        1
    );
    assert_eq!(
        db.get_agent(&a.staff.scope, a.agent)
            .await
            .unwrap()
            .revoked_at,
        None
    );
}

async fn raw_pool(t: &TestDb) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&t.url)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_change_and_its_audit_row_are_one_transaction() {
    let t = test_db().await;
    let a = fixture(&t, "a").await;
    let pool = raw_pool(&t).await;
    // Make the audit insert of one action fail inside the database.
    let ddl: &[&str] = match t.db.backend() {
        Backend::Sqlite => &[
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit WHEN NEW.action = 'subscriber.create' \
             BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
        ],
        Backend::Postgres => &[
            "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN \
             IF NEW.action = 'subscriber.create' THEN RAISE EXCEPTION 'audit refused'; END IF; \
             RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
        ],
    };
    for stmt in ddl {
        sqlx::query(stmt).execute(&pool).await.unwrap();
    }
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
                .get::<i64, _>(0)
        }
    };
    let (subs, jobs, audit) = (
        count("SELECT COUNT(*) FROM subscribers").await,
        count("SELECT COUNT(*) FROM jobs").await,
        count("SELECT COUNT(*) FROM audit").await,
    );
    let generation =
        t.db.get_router(&Scope::Admin, a.router.id)
            .await
            .unwrap()
            .generation;
    let new = NewSubscriber {
        username: "bob".into(),
        password: Secret::new("pw"),
        plan_id: a.plan.id,
        router_id: a.router.id,
        service: Service::Hotspot,
        expires_at: None,
        contact: Default::default(),
    };
    let err =
        t.db.create_subscriber(&a.staff, new.clone())
            .await
            .unwrap_err();
    assert!(matches!(err, DbError::Sql(_)), "{err:?}");
    assert_eq!(
        count("SELECT COUNT(*) FROM subscribers").await,
        subs,
        "no subscriber without its audit row"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM jobs").await,
        jobs,
        "no job without its audit row"
    );
    assert_eq!(count("SELECT COUNT(*) FROM audit").await, audit);
    assert_eq!(
        t.db.get_router(&Scope::Admin, a.router.id)
            .await
            .unwrap()
            .generation,
        generation
    );

    sqlx::query("DROP TRIGGER refuse_audit ON audit")
        .execute(&pool)
        .await
        .ok();
    sqlx::query("DROP TRIGGER IF EXISTS refuse_audit")
        .execute(&pool)
        .await
        .ok();
    let sub = t.db.create_subscriber(&a.staff, new).await.unwrap();
    assert_eq!(count("SELECT COUNT(*) FROM subscribers").await, subs + 1);
    assert_eq!(count("SELECT COUNT(*) FROM audit").await, audit + 1);
    let row = sqlx::query(
        "SELECT actor, params FROM audit WHERE action = 'subscriber.create' AND params LIKE $1",
    )
    .bind(format!("%{}%", sub.id))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>(0), "a-ops");
    assert!(row.get::<String, _>(1).contains("<redacted>"));
}

#[tokio::test]
async fn secrets_are_encrypted_or_hashed_at_rest() {
    let t = test_db().await;
    let a = fixture(&t, "a").await;
    let (_, staff_token) = t.db.create_admin_token("ops").await.unwrap();
    let pool = raw_pool(&t).await;
    let dump = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query(sql)
                .fetch_all(&pool)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>(0))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let subs = dump("SELECT password FROM subscribers").await;
    assert!(!subs.is_empty() && !subs.contains("sub-pw-plain"));
    let ops = dump("SELECT op FROM jobs").await;
    assert!(!ops.is_empty() && !ops.contains("sub-pw-plain") && !ops.contains("a-alice"));
    let routers = dump("SELECT sealed_password FROM routers").await;
    assert!(!routers.contains("router-pw-plain"));
    let tokens = dump("SELECT token_hash FROM staff_tokens").await;
    assert!(
        !tokens.contains(&staff_token)
            && tokens.contains(&tikfleet_controller::crypto::token_hash(&staff_token))
    );
    let audit = dump("SELECT params FROM audit").await;
    assert!(!audit.contains("sub-pw-plain") && !audit.contains("router-pw-plain"));
    // The agent still gets the password, through the hub only.
    let states = t.db.desired_states(a.agent, &[]).await.unwrap();
    assert_eq!(states[0].ppp_secrets[0].password.expose(), "sub-pw-plain");
    let jobs = t.db.undelivered_jobs(a.agent).await.unwrap();
    match &jobs[0].op {
        JobOp::UpsertPppSecret { secret, .. } => {
            assert_eq!(secret.password.expose(), "sub-pw-plain")
        }
        other => panic!("{other:?}"),
    }
}

fn audit_record(a: &Fx, seq: u64, action: &str) -> OutboxRecord {
    let mut params = AuditParams::new();
    params.insert("name", "a-alice").insert("password", "leaky");
    OutboxRecord::Audit(AuditRecord {
        seq,
        at: UnixMillis(common::START + 5),
        tenant_id: a.tenant.id,
        router_id: Some(a.router.id),
        job_id: None,
        generation: Some(2),
        action: action.into(),
        params,
        status: AuditStatus::Failed,
        error: Some(ErrorInfo::new(ErrorCode::Timeout)),
        duration_ms: 7,
    })
}

#[tokio::test]
async fn commit_records_takes_each_seq_once() {
    let t = test_db().await;
    let a = fixture(&t, "a").await;
    let b = fixture(&t, "b").await;
    let db = &t.db;
    // A second job for agent a: a second subscriber's upsert.
    second_subscriber(db, &a).await;
    let jobs = db.undelivered_jobs(a.agent).await.unwrap();
    assert!(jobs.len() >= 2, "{jobs:?}");
    let b_jobs = db.undelivered_jobs(b.agent).await.unwrap();
    let update = |job: &tikfleet_shared::job::Job, status, progress| {
        OutboxRecord::JobUpdate(JobUpdate {
            job_id: job.id,
            router_id: job.router_id,
            status,
            attempts: 2,
            progress,
            error: None,
            detail: Some("done".into()),
            at: UnixMillis(common::START + 9),
        })
    };
    let batch = vec![
        (1, audit_record(&a, 1, "/ppp/secret/add")),
        (2, update(&jobs[0], JobStatus::Succeeded, None)),
        (
            3,
            OutboxRecord::Applied(ApplyReport {
                router_id: a.router.id,
                generation: 2,
                at: UnixMillis(common::START + 10),
                changes: 3,
                conflicts: 0,
                error: None,
            }),
        ),
        (
            4,
            OutboxRecord::Telemetry(Telemetry {
                at: UnixMillis(common::START + 11),
                sample: TelemetrySample::Router(RouterSample {
                    router_id: a.router.id,
                    cpu_load_percent: 3,
                    free_memory_bytes: 1,
                    total_memory_bytes: 2,
                    uptime_secs: 3,
                    free_disk_bytes: 4,
                    total_disk_bytes: 5,
                    interfaces: vec![],
                    active_ppp_sessions: 1,
                    active_hotspot_sessions: 0,
                    routeros_version: Some("7.15.3".into()),
                }),
            }),
        ),
        (5, OutboxRecord::dropped(DropReason::Telemetry)),
        // A record about another agent's job has no effect on it.
        (6, update(&b_jobs[0], JobStatus::Failed, None)),
    ];
    assert_eq!(db.records_committed(a.agent).await.unwrap(), 0);
    assert_eq!(db.commit_records(a.agent, &batch).await.unwrap(), 6);
    // The same records again (a resend after a lost ack): no second effect.
    assert_eq!(db.commit_records(a.agent, &batch).await.unwrap(), 6);
    assert_eq!(db.records_committed(a.agent).await.unwrap(), 6);
    let all = PageRequest::parse(Some(500), None).unwrap();
    let filter = tikfleet_controller::db::audit::AuditFilter {
        action: Some("/ppp/secret/add".into()),
        ..Default::default()
    };
    let rows = db
        .list_audit(&Scope::Admin, &filter, &all)
        .await
        .unwrap()
        .items;
    assert_eq!(rows.len(), 1, "taken once");
    assert_eq!(rows[0].actor, "agent:a-agent");
    assert_eq!(rows[0].params["password"], "<redacted>");
    assert_eq!(rows[0].status, "failed");
    assert_eq!(rows[0].error.as_ref().unwrap().code, ErrorCode::Timeout);
    assert_eq!(rows[0].router_id, Some(a.router.id));
    let job = db.get_job(&Scope::Admin, jobs[0].id).await.unwrap();
    assert_eq!(
        (job.status, job.attempts, job.progress),
        (JobStatus::Succeeded, 2, Progress { done: 1, total: 1 })
    );
    assert_eq!(job.detail.as_deref(), Some("done"));
    let b_job = db.get_job(&Scope::Admin, b_jobs[0].id).await.unwrap();
    assert_eq!(
        b_job.status,
        JobStatus::Queued,
        "another agent's job is not this agent's to update"
    );
    let sync = db.router_sync(&Scope::Admin, a.router.id).await.unwrap();
    assert_eq!((sync.generation, sync.applied_generation), (3, 2));
    let router = db.get_router(&Scope::Admin, a.router.id).await.unwrap();
    assert_eq!(
        (router.status.as_str(), router.ros_version.as_deref()),
        ("online", Some("7.15.3"))
    );

    // Overlapping resend plus new records: only the new ones take effect.
    let more = vec![
        (5, OutboxRecord::dropped(DropReason::Telemetry)),
        (6, update(&b_jobs[0], JobStatus::Failed, None)),
        (7, audit_record(&a, 7, "/ppp/secret/set")),
        (
            8,
            update(
                &jobs[1],
                JobStatus::Running,
                Some(Progress { done: 1, total: 4 }),
            ),
        ),
    ];
    assert_eq!(db.commit_records(a.agent, &more).await.unwrap(), 8);
    let job = db.get_job(&Scope::Admin, jobs[1].id).await.unwrap();
    assert_eq!(
        (job.status, job.progress),
        (JobStatus::Running, Progress { done: 1, total: 4 })
    );
    let filter = tikfleet_controller::db::audit::AuditFilter {
        status: Some("failed".into()),
        ..Default::default()
    };
    assert_eq!(
        db.list_audit(&a.staff.scope, &filter, &all)
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    // A gap is a protocol error and changes nothing.
    assert!(
        db.commit_records(a.agent, &[(10, OutboxRecord::dropped(DropReason::Missing))])
            .await
            .is_err()
    );
    assert_eq!(db.records_committed(a.agent).await.unwrap(), 8);
    // An apply that failed keeps the applied generation.
    let failed = OutboxRecord::Applied(ApplyReport {
        router_id: a.router.id,
        generation: 3,
        at: UnixMillis(common::START + 12),
        changes: 0,
        conflicts: 0,
        error: Some(ErrorInfo::new(ErrorCode::ConnectionRefused)),
    });
    assert_eq!(db.commit_records(a.agent, &[(9, failed)]).await.unwrap(), 9);
    assert_eq!(
        db.router_sync(&Scope::Admin, a.router.id)
            .await
            .unwrap()
            .applied_generation,
        2
    );
    assert_eq!(db.records_committed(b.agent).await.unwrap(), 0);
}

#[tokio::test]
async fn desired_states_are_compiled_and_sent_only_when_newer() {
    let t = test_db().await;
    let a = fixture(&t, "a").await;
    let b = fixture(&t, "b").await;
    let db = &t.db;
    // A hotspot subscriber on the same plan, and a suspended one.
    let hs = db
        .create_subscriber(
            &a.staff,
            NewSubscriber {
                username: "hs-user".into(),
                password: Secret::new("hs-pw"),
                plan_id: a.plan.id,
                router_id: a.router.id,
                service: Service::Hotspot,
                expires_at: None,
                contact: Default::default(),
            },
        )
        .await
        .unwrap();
    db.suspend_subscriber(&a.staff, a.sub.id).await.unwrap();
    let generation = db
        .get_router(&Scope::Admin, a.router.id)
        .await
        .unwrap()
        .generation;
    assert_eq!(generation, 4, "created at 1, then three changes");

    let states = db.desired_states(a.agent, &[]).await.unwrap();
    assert_eq!(states.len(), 1, "only the agent's own router");
    let s = &states[0];
    assert_eq!(
        (s.generation, s.router_id, s.tenant_id),
        (4, a.router.id, a.tenant.id)
    );
    assert_eq!(s.compiled_at, UnixMillis(common::START));
    assert_eq!(
        s.profiles.len(),
        2,
        "a PPP and a hotspot profile: {:?}",
        s.profiles
    );
    match &s.profiles[0] {
        Profile::Ppp(p) => {
            assert_eq!(
                (p.name.as_str(), p.rate_limit.as_deref()),
                ("a-profile", Some("10M/10M"))
            );
            assert!(p.comment.as_deref().unwrap().starts_with("tikfleet:"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&s.profiles[1], Profile::Hotspot(p) if p.name == "a-profile"));
    assert_eq!(s.ppp_secrets.len(), 1);
    let secret = &s.ppp_secrets[0];
    assert_eq!(
        (
            secret.name.as_str(),
            secret.profile.as_str(),
            secret.disabled
        ),
        ("a-alice", "a-profile", true)
    );
    assert_eq!(secret.subscriber_id, Some(a.sub.id));
    assert!(secret.comment.as_deref().unwrap().starts_with("tikfleet:"));
    assert_eq!(s.hotspot_users.len(), 1);
    assert_eq!(
        (
            s.hotspot_users[0].name.as_str(),
            s.hotspot_users[0].password.expose(),
            s.hotspot_users[0].disabled
        ),
        ("hs-user", "hs-pw", false)
    );
    assert_eq!(s.hotspot_users[0].subscriber_id, Some(hs.id));
    assert!(
        s.lifecycles.is_empty(),
        "a-alice is suspended by staff (held): suspended outright, no lifecycle to follow"
    );

    let known = |stored| {
        [RouterGenerations {
            router_id: a.router.id,
            stored,
            applied: 0,
        }]
    };
    assert!(
        db.desired_states(a.agent, &known(4))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        db.desired_states(a.agent, &known(9))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        db.desired_states(a.agent, &known(3)).await.unwrap().len(),
        1
    );
    // Another agent's generations in `known` change nothing, and B sees only B.
    let b_states = db.desired_states(b.agent, &known(0)).await.unwrap();
    assert_eq!(
        b_states.iter().map(|s| s.router_id).collect::<Vec<_>>(),
        [b.router.id]
    );
    // A plan change is a new generation with the new rate.
    db.update_plan(
        &a.staff,
        a.plan.id,
        PlanPatch {
            name: None,
            rate_limit: Some("20M/20M".into()),
        },
    )
    .await
    .unwrap();
    let states = db.desired_states(a.agent, &known(4)).await.unwrap();
    assert_eq!(states.len(), 1);
    assert!(states[0].generation > 4);
    assert!(
        matches!(&states[0].profiles[0], Profile::Ppp(p) if p.rate_limit.as_deref() == Some("20M/20M"))
    );
}

#[tokio::test]
async fn jobs_are_delivered_once_to_their_own_agent() {
    let t = test_db().await;
    let a = fixture(&t, "a").await;
    let b = fixture(&t, "b").await;
    let db = &t.db;
    second_subscriber(db, &a).await;
    let jobs = db.undelivered_jobs(a.agent).await.unwrap();
    assert_eq!(
        jobs.iter().map(|j| j.op.name()).collect::<Vec<_>>(),
        ["upsert_ppp_secret", "upsert_ppp_secret"]
    );
    assert!(jobs[0].created_at <= jobs[1].created_at, "oldest first");
    assert!(
        jobs.iter().all(|j| j.router_id == a.router.id
            && j.tenant_id == a.tenant.id
            && j.max_attempts > 0)
    );
    assert_ne!(jobs[0].idempotency_key, jobs[1].idempotency_key);
    // B cannot acknowledge A's jobs.
    db.jobs_delivered(b.agent, &[jobs[0].id]).await.unwrap();
    assert_eq!(db.undelivered_jobs(a.agent).await.unwrap().len(), 2);
    db.jobs_delivered(a.agent, &[jobs[0].id]).await.unwrap();
    let left = db.undelivered_jobs(a.agent).await.unwrap();
    assert_eq!(left.iter().map(|j| j.id).collect::<Vec<_>>(), [jobs[1].id]);
    db.jobs_delivered(a.agent, &[jobs[1].id, jobs[1].id])
        .await
        .unwrap();
    assert!(db.undelivered_jobs(a.agent).await.unwrap().is_empty());
    assert!(
        db.get_job(&Scope::Admin, jobs[0].id)
            .await
            .unwrap()
            .delivered_at
            .is_some()
    );
    assert_eq!(db.undelivered_jobs(b.agent).await.unwrap().len(), 1);
    // A re-queued job goes out again.
    db.commit_records(
        a.agent,
        &[(
            1,
            OutboxRecord::JobUpdate(JobUpdate {
                job_id: jobs[1].id,
                router_id: a.router.id,
                status: JobStatus::Failed,
                attempts: 5,
                progress: None,
                error: Some(ErrorInfo::new(ErrorCode::Timeout)),
                detail: None,
                at: UnixMillis(common::START),
            }),
        )],
    )
    .await
    .unwrap();
    let failed = db.get_job(&Scope::Admin, jobs[1].id).await.unwrap();
    assert_eq!(
        failed.error.as_ref().map(|e| e.code),
        Some(ErrorCode::Timeout)
    );
    db.requeue_job(&a.staff, jobs[1].id).await.unwrap();
    assert_eq!(
        db.undelivered_jobs(a.agent)
            .await
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>(),
        [jobs[1].id]
    );
}

#[tokio::test]
async fn hub_bookkeeping_of_agents_and_routers() {
    let t = test_db().await;
    let a = fixture(&t, "a").await;
    let db = &t.db;
    let ident = db.agent_identity(a.agent).await.unwrap().unwrap();
    assert_eq!(
        (ident.tenant_id, ident.name.as_str(), ident.revoked),
        (a.tenant.id, "a-agent", false)
    );
    assert!(db.agent_identity(AgentId::new()).await.unwrap().is_none());

    t.clock.advance(Duration::from_secs(60));
    let at = UnixMillis(common::START + 60_000);
    let reported = [
        RouterGenerations {
            router_id: a.router.id,
            stored: 2,
            applied: 1,
        },
        // A router of no concern to this agent is ignored.
        RouterGenerations {
            router_id: tikfleet_shared::RouterId::new(),
            stored: 9,
            applied: 9,
        },
    ];
    db.agent_connected(a.agent, at, "0.2.0", &reported)
        .await
        .unwrap();
    let agent = db.get_agent(&Scope::Admin, a.agent).await.unwrap();
    assert_eq!(
        (
            agent.connected,
            agent.last_seen,
            agent.agent_version.as_str()
        ),
        (true, Some(at), "0.2.0")
    );
    let sync = db.router_sync(&a.staff.scope, a.router.id).await.unwrap();
    assert_eq!(
        (
            sync.generation,
            sync.stored_generation,
            sync.applied_generation,
            sync.agent_connected
        ),
        (2, 2, 1, true)
    );
    db.agent_disconnected(a.agent, UnixMillis(common::START + 70_000))
        .await
        .unwrap();
    assert!(
        !db.get_agent(&Scope::Admin, a.agent)
            .await
            .unwrap()
            .connected
    );

    // Routers with their revisions, deleted ones as tombstones.
    let second = db
        .create_router(
            &a.staff,
            NewRouter {
                tenant_id: None,
                agent_id: a.agent,
                name: "spare".into(),
                address: "192.0.2.7".into(),
                api_port: 8729,
                ssh_port: 2222,
                tls: RouterTlsSetting::Pin {
                    sha256: "ab".repeat(32),
                },
                username: "svc".into(),
                password: Secret::new("x"),
            },
        )
        .await
        .unwrap();
    db.delete_router(&a.staff, second.id).await.unwrap();
    let routers = db.routers_for_agent(a.agent).await.unwrap();
    assert_eq!(routers.len(), 2);
    let spare = routers.iter().find(|r| r.router_id == second.id).unwrap();
    assert!(spare.removed);
    assert_eq!(spare.revision, 2);
    assert_eq!(
        spare.tls,
        RouterTlsSetting::Pin {
            sha256: "ab".repeat(32)
        }
    );
    assert_eq!((spare.api_port, spare.ssh_port), (8729, 2222));
    assert!(
        !routers
            .iter()
            .find(|r| r.router_id == a.router.id)
            .unwrap()
            .removed
    );
    assert!(
        db.desired_states(a.agent, &[])
            .await
            .unwrap()
            .iter()
            .all(|s| s.router_id != second.id)
    );

    db.revoke_agent(&a.staff, a.agent).await.unwrap();
    assert!(db.agent_identity(a.agent).await.unwrap().unwrap().revoked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_all_commit_with_distinct_generations() {
    let t = test_db().await;
    let a = fixture(&t, "a").await;
    let start =
        t.db.get_router(&Scope::Admin, a.router.id)
            .await
            .unwrap()
            .generation;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let db = t.db.clone();
        let staff = a.staff.clone();
        let (plan, router) = (a.plan.id, a.router.id);
        tasks.push(tokio::spawn(async move {
            db.create_subscriber(
                &staff,
                NewSubscriber {
                    username: format!("user{i}"),
                    password: Secret::new("pw"),
                    plan_id: plan,
                    router_id: router,
                    service: Service::Pppoe,
                    expires_at: None,
                    contact: Default::default(),
                },
            )
            .await
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    let end =
        t.db.get_router(&Scope::Admin, a.router.id)
            .await
            .unwrap()
            .generation;
    assert_eq!(end, start + 16, "each change bumped the generation once");
    let jobs = t.db.undelivered_jobs(a.agent).await.unwrap();
    let keys: std::collections::BTreeSet<_> =
        jobs.iter().map(|j| j.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), jobs.len());
    assert_eq!(
        jobs.iter()
            .filter(|j| j.op.name() == "upsert_ppp_secret")
            .count(),
        17
    );
}
