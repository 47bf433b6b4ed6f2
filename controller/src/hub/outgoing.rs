//! What a connection still has to push to its agent, without I/O.
//!
//! The session re-reads the store on every change signal; [`Outgoing`] turns what it read into
//! the messages that are new *for this connection*: a router whose revision it has not pushed
//! yet, a desired state newer than what the agent said it stores (or than what was pushed
//! since), a job not pushed on this connection, a cancel not pushed on this connection.
//! Everything else was sent already and is
//! skipped, so a re-read costs no duplicate frames. Items of another tenant are dropped with
//! an error in the log (the store scopes by agent; this is a second fence).

use std::collections::{HashMap, HashSet, VecDeque};

use tikfleet_shared::domain::DesiredState;
use tikfleet_shared::job::{Job, JobCancel};
use tikfleet_shared::protocol::{Message, RouterConfig, RouterGenerations, RouterTls};
use tikfleet_shared::{AgentId, JobId, RouterId, TenantId};

use super::store::{RouterForAgent, RouterTlsSetting};

/// The wire form of a router the agent serves.
#[must_use]
pub fn router_config(router: RouterForAgent) -> RouterConfig {
    RouterConfig {
        router_id: router.router_id,
        tenant_id: router.tenant_id,
        name: router.name,
        host: router.address,
        api_port: router.api_port,
        ssh_port: router.ssh_port,
        tls: match router.tls {
            RouterTlsSetting::Plain => RouterTls::Plain {},
            RouterTlsSetting::Verify {
                ca_pem,
                server_name,
            } => RouterTls::Verify {
                ca_pem,
                server_name,
            },
            RouterTlsSetting::Pin { sha256 } => RouterTls::Pin { sha256 },
        },
        username: router.username,
        sealed_password: router.sealed_password,
        revision: router.revision,
        removed: router.removed,
    }
}

/// Per-connection push state. See the module documentation.
#[derive(Debug)]
pub struct Outgoing {
    agent: AgentId,
    tenant: TenantId,
    /// Highest router revision pushed on this connection.
    revisions: HashMap<RouterId, u64>,
    /// Highest generation the agent stores or was pushed on this connection.
    generations: HashMap<RouterId, u64>,
    /// Jobs pushed on this connection and not yet marked delivered.
    jobs: HashSet<JobId>,
    /// Cancels pushed on this connection and not yet marked delivered.
    cancels: HashSet<JobId>,
    /// Messages waiting for room in the send window, in order.
    backlog: VecDeque<Message>,
}

impl Outgoing {
    /// Starts from what the agent's hello says it stores.
    #[must_use]
    pub fn new(agent: AgentId, tenant: TenantId, stored: &[RouterGenerations]) -> Self {
        Self {
            agent,
            tenant,
            revisions: HashMap::new(),
            generations: stored.iter().map(|g| (g.router_id, g.stored)).collect(),
            jobs: HashSet::new(),
            cancels: HashSet::new(),
            backlog: VecDeque::new(),
        }
    }

    /// The generations to ask the store for newer desired states than.
    #[must_use]
    pub fn known(&self) -> Vec<RouterGenerations> {
        self.generations
            .iter()
            .map(|(router_id, stored)| RouterGenerations {
                router_id: *router_id,
                stored: *stored,
                applied: 0,
            })
            .collect()
    }

    fn foreign(&self, what: &str, tenant: TenantId) -> bool {
        if tenant == self.tenant {
            return false;
        }
        tracing::error!(
            agent = %self.agent,
            tenant = %tenant,
            what,
            "the store returned another tenant's item for this agent; not sent"
        );
        true
    }

    /// Queues the routers with a revision not pushed yet. Returns how many.
    pub fn add_routers(&mut self, routers: Vec<RouterForAgent>) -> usize {
        let mut n = 0;
        for router in routers {
            if self.foreign("router", router.tenant_id) {
                continue;
            }
            let pushed = self.revisions.get(&router.router_id);
            if pushed.is_none_or(|pushed| router.revision > *pushed) {
                self.revisions.insert(router.router_id, router.revision);
                self.backlog
                    .push_back(Message::RouterConfig(router_config(router)));
                n += 1;
            }
        }
        n
    }

    /// Queues the desired states newer than what the agent has. Returns how many.
    pub fn add_states(&mut self, states: Vec<DesiredState>) -> usize {
        let mut n = 0;
        for state in states {
            if self.foreign("desired state", state.tenant_id) {
                continue;
            }
            let known = self.generations.entry(state.router_id).or_insert(0);
            if state.generation > *known {
                *known = state.generation;
                self.backlog.push_back(Message::DesiredState(state));
                n += 1;
            }
        }
        n
    }

    /// Queues the jobs not pushed on this connection. Returns how many.
    pub fn add_jobs(&mut self, jobs: Vec<Job>) -> usize {
        let mut n = 0;
        for job in jobs {
            if self.foreign("job", job.tenant_id) {
                continue;
            }
            if self.jobs.insert(job.id) {
                self.backlog.push_back(Message::Job(job));
                n += 1;
            }
        }
        n
    }

    /// Queues a `job_cancel` for each cancelled job not pushed on this connection (the store
    /// scopes them to the agent). Returns how many.
    pub fn add_cancels(&mut self, jobs: Vec<JobId>) -> usize {
        let mut n = 0;
        for job_id in jobs {
            if self.cancels.insert(job_id) {
                self.backlog.push_back(Message::JobCancel(JobCancel {
                    job_id,
                    reason: Some("cancelled by staff".into()),
                }));
                n += 1;
            }
        }
        n
    }

    /// The store recorded these jobs as delivered; it will not return them again.
    pub fn delivered(&mut self, jobs: &[JobId]) {
        for job in jobs {
            self.jobs.remove(job);
        }
    }

    /// The store recorded these cancels as delivered; it will not return them again.
    pub fn cancels_delivered(&mut self, jobs: &[JobId]) {
        for job in jobs {
            self.cancels.remove(job);
        }
    }

    /// Whether nothing waits to be sent.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.backlog.is_empty()
    }

    /// The next message to send.
    pub fn pop(&mut self) -> Option<Message> {
        self.backlog.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use tikfleet_shared::UnixMillis;
    use tikfleet_shared::job::{JobOp, Priority};

    use super::*;

    fn router(tenant: TenantId, id: RouterId, revision: u64) -> RouterForAgent {
        RouterForAgent {
            router_id: id,
            tenant_id: tenant,
            name: "core-1".into(),
            address: "10.0.0.1".into(),
            api_port: 8728,
            ssh_port: 22,
            tls: RouterTlsSetting::Plain,
            username: "admin".into(),
            sealed_password: vec![1, 2, 3],
            revision,
            removed: false,
        }
    }

    fn state(tenant: TenantId, router: RouterId, generation: u64) -> DesiredState {
        DesiredState {
            generation,
            tenant_id: tenant,
            router_id: router,
            compiled_at: UnixMillis::EPOCH,
            profiles: vec![],
            ppp_secrets: vec![],
            hotspot_users: vec![],
            address_list_entries: vec![],
            lifecycles: vec![],
            drift: Default::default(),
        }
    }

    fn job(tenant: TenantId, router: RouterId) -> Job {
        let id = JobId::new();
        Job {
            id,
            tenant_id: tenant,
            router_id: router,
            idempotency_key: id.to_string(),
            priority: Priority::Normal,
            op: JobOp::Reboot {},
            created_at: UnixMillis::EPOCH,
            max_attempts: 0,
            generation: None,
        }
    }

    fn names(out: &mut Outgoing) -> Vec<&'static str> {
        std::iter::from_fn(|| out.pop()).map(|m| m.name()).collect()
    }

    #[test]
    fn only_what_is_new_for_this_connection() {
        let tenant = TenantId::new();
        let r1 = RouterId::new();
        let r2 = RouterId::new();
        let mut out = Outgoing::new(
            AgentId::new(),
            tenant,
            &[RouterGenerations {
                router_id: r1,
                stored: 5,
                applied: 4,
            }],
        );
        assert_eq!(
            out.add_routers(vec![router(tenant, r1, 1), router(tenant, r2, 0)]),
            2
        );
        assert_eq!(out.add_routers(vec![router(tenant, r1, 1)]), 0, "same rev");
        assert_eq!(out.add_routers(vec![router(tenant, r1, 2)]), 1, "newer rev");
        assert_eq!(
            out.add_states(vec![state(tenant, r1, 5), state(tenant, r2, 1)]),
            1,
            "the agent stores r1's generation 5 already"
        );
        assert_eq!(out.add_states(vec![state(tenant, r1, 6)]), 1);
        assert_eq!(out.add_states(vec![state(tenant, r1, 6)]), 0);
        let j = job(tenant, r1);
        assert_eq!(out.add_jobs(vec![j.clone()]), 1);
        assert_eq!(
            out.add_jobs(vec![j.clone()]),
            0,
            "pushed, not yet delivered"
        );
        out.delivered(&[j.id]);
        assert_eq!(out.add_cancels(vec![j.id]), 1);
        assert_eq!(out.add_cancels(vec![j.id]), 0, "pushed, not yet delivered");
        out.cancels_delivered(&[j.id]);
        let mut known = out.known();
        known.sort_by_key(|g| g.router_id);
        let mut expected = vec![(r1, 6), (r2, 1)];
        expected.sort();
        assert_eq!(
            known
                .iter()
                .map(|g| (g.router_id, g.stored))
                .collect::<Vec<_>>(),
            expected
        );
        assert_eq!(
            names(&mut out),
            [
                "router_config",
                "router_config",
                "router_config",
                "desired_state",
                "desired_state",
                "job",
                "job_cancel"
            ]
        );
        assert!(out.is_empty());
    }

    #[test]
    fn another_tenants_items_are_not_sent() {
        let tenant = TenantId::new();
        let other = TenantId::new();
        let r = RouterId::new();
        let mut out = Outgoing::new(AgentId::new(), tenant, &[]);
        assert_eq!(out.add_routers(vec![router(other, r, 1)]), 0);
        assert_eq!(out.add_states(vec![state(other, r, 1)]), 0);
        assert_eq!(out.add_jobs(vec![job(other, r)]), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn router_fields_map_to_the_wire() {
        let tenant = TenantId::new();
        let mut r = router(tenant, RouterId::new(), 3);
        r.tls = RouterTlsSetting::Pin {
            sha256: "ab".into(),
        };
        r.removed = true;
        let wire = router_config(r.clone());
        assert_eq!(wire.host, r.address);
        assert_eq!(
            wire.tls,
            RouterTls::Pin {
                sha256: "ab".into()
            }
        );
        assert_eq!(wire.sealed_password, r.sealed_password);
        assert_eq!((wire.revision, wire.removed), (3, true));
    }
}
