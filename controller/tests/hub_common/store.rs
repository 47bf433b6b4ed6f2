//! An in-memory [`HubStore`] for hub and uplink tests (until the SQL store is wired in).
//!
//! It keeps what the trait talks about (identities, routers, desired states, jobs, committed
//! records, connection events) and a change counter that tests wait on instead of polling:
//! [`MemHub::wait`] returns as soon as a condition over the state holds. `fail_commits`
//! makes `commit_records` fail, as a database outage would.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tikfleet_controller::hub::{AgentIdentity, HubStore, RouterForAgent};
use tikfleet_shared::domain::DesiredState;
use tikfleet_shared::job::Job;
use tikfleet_shared::protocol::RouterGenerations;
use tikfleet_shared::record::OutboxRecord;
use tikfleet_shared::{AgentId, JobId, UnixMillis};
use tokio::sync::watch;

/// A connection event the hub reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Connected {
        agent: AgentId,
        version: String,
        routers: Vec<RouterGenerations>,
    },
    Disconnected {
        agent: AgentId,
    },
}

#[derive(Debug, Default)]
pub struct State {
    pub agents: HashMap<AgentId, AgentIdentity>,
    pub routers: HashMap<AgentId, Vec<RouterForAgent>>,
    /// Newest desired state per router, and the agent that serves it.
    pub desired: Vec<(AgentId, DesiredState)>,
    /// Jobs and whether the agent acknowledged them.
    pub jobs: Vec<(AgentId, Job, bool)>,
    /// Every record committed, in order, per agent.
    pub records: HashMap<AgentId, Vec<(u64, OutboxRecord)>>,
    pub committed: HashMap<AgentId, u64>,
    pub events: Vec<Event>,
    /// How often `jobs_delivered` named each job.
    pub deliveries: HashMap<JobId, u32>,
    /// Stored generation per agent and router, as the agent's acks said.
    pub stored: HashMap<(AgentId, tikfleet_shared::RouterId), u64>,
    /// Jobs staff cancelled, and whether the agent acknowledged the cancel.
    pub cancels: Vec<(AgentId, JobId, bool)>,
    pub fail_commits: bool,
    /// Binary backups each agent may fetch, by backup id.
    pub backups: HashMap<(AgentId, String), Vec<u8>>,
}

impl State {
    pub fn connected(&self, agent: AgentId) -> bool {
        let mut up = false;
        for e in &self.events {
            match e {
                Event::Connected { agent: a, .. } if *a == agent => up = true,
                Event::Disconnected { agent: a } if *a == agent => up = false,
                _ => {}
            }
        }
        up
    }

    pub fn connects(&self, agent: AgentId) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::Connected { agent: a, .. } if *a == agent))
            .count()
    }

    pub fn committed(&self, agent: AgentId) -> u64 {
        self.committed.get(&agent).copied().unwrap_or(0)
    }

    pub fn records(&self, agent: AgentId) -> &[(u64, OutboxRecord)] {
        self.records.get(&agent).map_or(&[], Vec::as_slice)
    }

    pub fn delivered(&self, job: JobId) -> bool {
        self.jobs.iter().any(|(_, j, d)| j.id == job && *d)
    }

    pub fn cancel_delivered(&self, job: JobId) -> bool {
        self.cancels.iter().any(|(_, j, d)| *j == job && *d)
    }
}

#[derive(Clone, Debug)]
pub struct MemHub {
    state: Arc<Mutex<State>>,
    changes: watch::Sender<u64>,
}

impl Default for MemHub {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            changes: watch::channel(0).0,
        }
    }
}

impl MemHub {
    /// Reads or changes the state (a change wakes waiters).
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
        self.changes.send_modify(|n| *n += 1);
        r
    }

    /// Waits until `cond` holds (woken by every change), at most 20 s.
    pub async fn wait(&self, what: &str, mut cond: impl FnMut(&State) -> bool) {
        let mut rx = self.changes.subscribe();
        let wait = async {
            loop {
                rx.borrow_and_update();
                if cond(&self.state.lock().unwrap_or_else(PoisonError::into_inner)) {
                    return;
                }
                rx.changed().await.expect("store alive");
            }
        };
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .unwrap_or_else(|_| panic!("gave up waiting for {what}"));
    }

    pub fn add_agent(&self, identity: AgentIdentity) {
        self.with(|s| s.agents.insert(identity.agent_id, identity));
    }

    pub fn set_router(&self, agent: AgentId, router: RouterForAgent) {
        self.with(|s| {
            let list = s.routers.entry(agent).or_default();
            list.retain(|r| r.router_id != router.router_id);
            list.push(router);
        });
    }

    pub fn set_desired(&self, agent: AgentId, state: DesiredState) {
        self.with(|s| {
            s.desired.retain(|(_, d)| d.router_id != state.router_id);
            s.desired.push((agent, state));
        });
    }

    pub fn add_job(&self, agent: AgentId, job: Job) {
        self.with(|s| s.jobs.push((agent, job, false)));
    }

    /// Staff cancel `job`: it is not delivered any more, and its cancel is pushed.
    pub fn cancel_job(&self, agent: AgentId, job: JobId) {
        self.with(|s| {
            s.jobs.retain(|(_, j, delivered)| j.id != job || *delivered);
            s.cancels.push((agent, job, false));
        });
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HubStore for MemHub {
    fn backup_part(
        &self,
        agent: AgentId,
        backup_id: &str,
        offset: u64,
        max: usize,
    ) -> impl Future<Output = anyhow::Result<Option<tikfleet_controller::hub::BackupSlice>>> + Send
    {
        let found = lock(&self.state)
            .backups
            .get(&(agent, backup_id.to_owned()))
            .map(|data| {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let end = start.saturating_add(max).min(data.len());
                tikfleet_controller::hub::BackupSlice {
                    total: data.len() as u64,
                    data: data[start..end].to_vec(),
                }
            });
        async move { Ok(found) }
    }

    fn agent_identity(
        &self,
        agent: AgentId,
    ) -> impl Future<Output = anyhow::Result<Option<AgentIdentity>>> + Send {
        let found = lock(&self.state).agents.get(&agent).cloned();
        async move { Ok(found) }
    }

    fn agent_connected(
        &self,
        agent: AgentId,
        _at: UnixMillis,
        agent_version: &str,
        routers: &[RouterGenerations],
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.with(|s| {
            s.events.push(Event::Connected {
                agent,
                version: agent_version.to_owned(),
                routers: routers.to_vec(),
            })
        });
        async { Ok(()) }
    }

    fn agent_disconnected(
        &self,
        agent: AgentId,
        _at: UnixMillis,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.with(|s| s.events.push(Event::Disconnected { agent }));
        async { Ok(()) }
    }

    fn routers_for_agent(
        &self,
        agent: AgentId,
    ) -> impl Future<Output = anyhow::Result<Vec<RouterForAgent>>> + Send {
        let routers = lock(&self.state)
            .routers
            .get(&agent)
            .cloned()
            .unwrap_or_default();
        async move { Ok(routers) }
    }

    fn desired_states(
        &self,
        agent: AgentId,
        known: &[RouterGenerations],
    ) -> impl Future<Output = anyhow::Result<Vec<DesiredState>>> + Send {
        let states = lock(&self.state)
            .desired
            .iter()
            .filter(|(a, d)| {
                *a == agent
                    && d.generation
                        > known
                            .iter()
                            .find(|k| k.router_id == d.router_id)
                            .map_or(0, |k| k.stored)
            })
            .map(|(_, d)| d.clone())
            .collect();
        async move { Ok(states) }
    }

    fn undelivered_jobs(
        &self,
        agent: AgentId,
    ) -> impl Future<Output = anyhow::Result<Vec<Job>>> + Send {
        let jobs = lock(&self.state)
            .jobs
            .iter()
            .filter(|(a, _, delivered)| *a == agent && !delivered)
            .map(|(_, j, _)| j.clone())
            .collect();
        async move { Ok(jobs) }
    }

    fn jobs_delivered(
        &self,
        agent: AgentId,
        jobs: &[JobId],
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.with(|s| {
            for (a, job, delivered) in &mut s.jobs {
                if *a == agent && jobs.contains(&job.id) {
                    *delivered = true;
                }
            }
            for id in jobs {
                *s.deliveries.entry(*id).or_default() += 1;
            }
        });
        async { Ok(()) }
    }

    fn states_stored(
        &self,
        agent: AgentId,
        states: &[(tikfleet_shared::RouterId, u64)],
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.with(|s| {
            for (router, generation) in states {
                let stored = s.stored.entry((agent, *router)).or_default();
                *stored = (*stored).max(*generation);
            }
        });
        async { Ok(()) }
    }

    fn undelivered_cancels(
        &self,
        agent: AgentId,
    ) -> impl Future<Output = anyhow::Result<Vec<JobId>>> + Send {
        let cancels = lock(&self.state)
            .cancels
            .iter()
            .filter(|(a, _, delivered)| *a == agent && !delivered)
            .map(|(_, j, _)| *j)
            .collect();
        async move { Ok(cancels) }
    }

    fn cancels_delivered(
        &self,
        agent: AgentId,
        jobs: &[JobId],
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.with(|s| {
            for (a, job, delivered) in &mut s.cancels {
                if *a == agent && jobs.contains(job) {
                    *delivered = true;
                }
            }
        });
        async { Ok(()) }
    }

    fn records_committed(
        &self,
        agent: AgentId,
    ) -> impl Future<Output = anyhow::Result<u64>> + Send {
        let committed = lock(&self.state).committed(agent);
        async move { Ok(committed) }
    }

    fn commit_records(
        &self,
        agent: AgentId,
        records: &[(u64, OutboxRecord)],
    ) -> impl Future<Output = anyhow::Result<u64>> + Send {
        let result = self.with(|s| {
            if s.fail_commits {
                anyhow::bail!("database unavailable");
            }
            let mut committed = s.committed(agent);
            for (seq, record) in records {
                if *seq <= committed {
                    continue;
                }
                anyhow::ensure!(*seq == committed + 1, "gap: {seq} after {committed}");
                s.records
                    .entry(agent)
                    .or_default()
                    .push((*seq, record.clone()));
                committed = *seq;
            }
            s.committed.insert(agent, committed);
            Ok(committed)
        });
        async move { result }
    }
}
