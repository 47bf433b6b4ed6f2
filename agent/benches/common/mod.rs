//! What the agent's benchmarks share: the job they all run (create one PPP secret).

use tikfleet_shared::domain::{PppSecret, PppService};
use tikfleet_shared::job::{Job, JobOp, Priority};
use tikfleet_shared::{JobId, RouterId, Secret, TenantId, UnixMillis};

/// A normal-priority job that creates secret `sub-{i}` (password `pw-{i}`) on `router`.
pub fn secret_job(tenant: TenantId, router: RouterId, i: usize) -> Job {
    let id = JobId::new();
    Job {
        id,
        tenant_id: tenant,
        router_id: router,
        idempotency_key: id.to_string(),
        priority: Priority::Normal,
        op: JobOp::UpsertPppSecret {
            secret: PppSecret {
                subscriber_id: None,
                name: format!("sub-{i}"),
                password: Secret::new(format!("pw-{i}")),
                service: PppService::Pppoe,
                profile: "default".into(),
                disabled: false,
                remote_address: None,
                comment: None,
            },
            profile: None,
        },
        created_at: UnixMillis::from_system_time(std::time::SystemTime::now()),
        max_attempts: 0,
        generation: None,
    }
}
