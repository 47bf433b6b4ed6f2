//! What the hub needs from storage. The SQL store (`crate::db`) implements it; the hub never
//! sees SQL, and storage never sees a socket.
//!
//! Every method is scoped by the agent it is called for: an agent only ever reads its own
//! tenant's routers, desired states and jobs.

use std::future::Future;

use tikfleet_shared::domain::DesiredState;
use tikfleet_shared::job::Job;
use tikfleet_shared::protocol::RouterGenerations;
use tikfleet_shared::record::OutboxRecord;
use tikfleet_shared::{AgentId, RouterId, TenantId, UnixMillis};

/// Who an agent is, as enrollment recorded it.
#[derive(Clone, Debug)]
pub struct AgentIdentity {
    /// The agent.
    pub agent_id: AgentId,
    /// The one tenant it serves.
    pub tenant_id: TenantId,
    /// Its name, for logs.
    pub name: String,
    /// Its registered Ed25519 public keys (more than one only while a rotation completes).
    pub keys: Vec<AgentKey>,
    /// Revoked agents are refused, also on a live connection.
    pub revoked: bool,
}

/// One registered identity key.
#[derive(Clone, Debug)]
pub struct AgentKey {
    /// The id the agent names in its hello proof.
    pub key_id: String,
    /// Ed25519 public key, 32 bytes.
    pub public_key: Vec<u8>,
}

/// TLS settings of a router's API, as staff entered them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouterTlsSetting {
    /// Plain API (8728).
    Plain,
    /// API-SSL verified against a CA (PEM) or the system roots when `None`.
    Verify {
        /// CA certificate(s), PEM.
        ca_pem: Option<String>,
        /// Name to verify instead of the address.
        server_name: Option<String>,
    },
    /// API-SSL with a pinned SHA-256 certificate fingerprint (self-signed routers).
    Pin {
        /// Hex SHA-256 of the router's certificate.
        sha256: String,
    },
}

/// A router an agent serves, with the login sealed to that agent's seal key.
#[derive(Clone, Debug)]
pub struct RouterForAgent {
    /// The router.
    pub router_id: RouterId,
    /// Its tenant (the agent's).
    pub tenant_id: TenantId,
    /// Its name.
    pub name: String,
    /// Host name or IP address.
    pub address: String,
    /// API port (plain or TLS per `tls`).
    pub api_port: u16,
    /// SSH port.
    pub ssh_port: u16,
    /// TLS settings.
    pub tls: RouterTlsSetting,
    /// Login name.
    pub username: String,
    /// The password, sealed to the agent's seal key (`tikfleet_shared::seal`); the controller
    /// cannot open it.
    pub sealed_password: Vec<u8>,
    /// Bumped on every change of the row; the agent keeps the highest it has seen.
    pub revision: u64,
    /// The router was deleted: the agent forgets it.
    pub removed: bool,
}

/// One session's question to the store: what is there to push to `agent`, given the
/// generations it already has (see [`HubStore::push_reads`]).
#[derive(Clone, Debug)]
pub struct PushRequest {
    /// The agent.
    pub agent: AgentId,
    /// What the connection knows the agent stores, as for [`HubStore::desired_states`].
    pub known: Vec<RouterGenerations>,
}

/// What a session reads to find what is new to push: the answers of
/// [`HubStore::routers_for_agent`], [`HubStore::desired_states`],
/// [`HubStore::undelivered_jobs`] and [`HubStore::undelivered_cancels`] for one agent.
#[derive(Clone, Debug, Default)]
pub struct PushRead {
    /// Every router of the agent, removed ones as tombstones.
    pub routers: Vec<RouterForAgent>,
    /// Desired states newer than the request's `known`.
    pub states: Vec<DesiredState>,
    /// Jobs not acknowledged yet, oldest first.
    pub jobs: Vec<Job>,
    /// Cancelled jobs whose cancel is not acknowledged yet, oldest first.
    pub cancels: Vec<tikfleet_shared::JobId>,
}

/// What an agent acknowledged in one ack, to record (see [`HubStore::record_deliveries`]).
#[derive(Clone, Debug)]
pub struct Delivered {
    /// The agent.
    pub agent: AgentId,
    /// Jobs it stored, as for [`HubStore::jobs_delivered`].
    pub jobs: Vec<tikfleet_shared::JobId>,
    /// Desired states it stored, as for [`HubStore::states_stored`].
    pub states: Vec<(tikfleet_shared::RouterId, u64)>,
    /// Job cancels it stored, as for [`HubStore::cancels_delivered`].
    pub cancels: Vec<tikfleet_shared::JobId>,
}

/// A part of a stored backup, as [`HubStore::backup_part`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSlice {
    /// The file's size in bytes.
    pub total: u64,
    /// The bytes from the requested offset (empty at or past the end).
    pub data: Vec<u8>,
}

/// Storage operations of the hub. Implemented by the SQL store; cheap to clone.
pub trait HubStore: Clone + Send + Sync + 'static {
    /// The agent's identity, or `None` if no such agent was ever enrolled.
    fn agent_identity(
        &self,
        agent: AgentId,
    ) -> impl Future<Output = anyhow::Result<Option<AgentIdentity>>> + Send;

    /// The agent completed its hello: remember when, its software version and the
    /// generations it reports per router (the API shows desired versus applied).
    fn agent_connected(
        &self,
        agent: AgentId,
        at: UnixMillis,
        agent_version: &str,
        routers: &[RouterGenerations],
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// The agent's connection ended.
    fn agent_disconnected(
        &self,
        agent: AgentId,
        at: UnixMillis,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Every router the agent serves, removed ones included (as tombstones with their revision).
    fn routers_for_agent(
        &self,
        agent: AgentId,
    ) -> impl Future<Output = anyhow::Result<Vec<RouterForAgent>>> + Send;

    /// For each router of the agent, its newest desired state if its generation is higher than
    /// what `known` says the agent stores (a router missing from `known` counts as 0).
    fn desired_states(
        &self,
        agent: AgentId,
        known: &[RouterGenerations],
    ) -> impl Future<Output = anyhow::Result<Vec<DesiredState>>> + Send;

    /// Jobs for the agent's routers that the agent has not acknowledged yet, oldest first,
    /// without those that must wait for an earlier job of their router to finish first (the
    /// SQL store orders jobs on the same router item; the hub reads again when a job's final
    /// update is committed).
    fn undelivered_jobs(
        &self,
        agent: AgentId,
    ) -> impl Future<Output = anyhow::Result<Vec<Job>>> + Send;

    /// The agent acknowledged (stored durably) these jobs.
    fn jobs_delivered(
        &self,
        agent: AgentId,
        jobs: &[tikfleet_shared::JobId],
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// The agent acknowledged (stored durably) these desired states: `(router, generation)`.
    /// The stored generation the API shows never goes down.
    fn states_stored(
        &self,
        agent: AgentId,
        states: &[(RouterId, u64)],
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Jobs of the agent's routers that staff cancelled and whose cancel the agent has not
    /// acknowledged yet, oldest first. The agent may have the job already (it was delivered,
    /// or was on the wire when it was cancelled), so the hub pushes a `job_cancel` for each;
    /// an agent that never got the job ignores it.
    fn undelivered_cancels(
        &self,
        agent: AgentId,
    ) -> impl Future<Output = anyhow::Result<Vec<tikfleet_shared::JobId>>> + Send;

    /// The agent acknowledged (stored durably) the cancels of these jobs.
    fn cancels_delivered(
        &self,
        agent: AgentId,
        jobs: &[tikfleet_shared::JobId],
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// The highest outbox seq of this agent committed so far (0 = none).
    fn records_committed(&self, agent: AgentId)
    -> impl Future<Output = anyhow::Result<u64>> + Send;

    /// Commit the agent's outbox records in one transaction: each record's effect (audit row,
    /// job status, applied generation, ...) and the new committed seq. Records whose seq is at
    /// or below the committed seq are ignored (already taken), so a resend takes effect once.
    /// `records` are in seq order and contiguous from committed + 1. Returns the new committed
    /// seq, which the hub then acks.
    fn commit_records(
        &self,
        agent: AgentId,
        records: &[(u64, OutboxRecord)],
    ) -> impl Future<Output = anyhow::Result<u64>> + Send;

    /// Up to `max` bytes from `offset` of binary backup `backup_id`, if it is a backup of one
    /// of `agent`'s routers (`None` otherwise: no such backup, another agent's or tenant's,
    /// or not a binary backup). A store that keeps no backups answers `None`.
    fn backup_part(
        &self,
        agent: AgentId,
        backup_id: &str,
        offset: u64,
        max: usize,
    ) -> impl Future<Output = anyhow::Result<Option<BackupSlice>>> + Send {
        let _ = (agent, backup_id, offset, max);
        async { Ok(None) }
    }

    /// What to push to several agents at once: for each request, in order, exactly what
    /// [`routers_for_agent`](Self::routers_for_agent), [`desired_states`](Self::desired_states),
    /// [`undelivered_jobs`](Self::undelivered_jobs) and
    /// [`undelivered_cancels`](Self::undelivered_cancels) answer for its agent. The hub
    /// gathers the sessions that need a read into one call, so one change that reaches
    /// thousands of connected agents costs a few queries per batch instead of several per
    /// agent; a store may answer with fewer queries (the SQL store does), and this default
    /// simply asks the four questions per agent.
    fn push_reads(
        &self,
        requests: &[PushRequest],
    ) -> impl Future<Output = anyhow::Result<Vec<PushRead>>> + Send {
        async move {
            let mut out = Vec::with_capacity(requests.len());
            for request in requests {
                out.push(PushRead {
                    routers: self.routers_for_agent(request.agent).await?,
                    states: self.desired_states(request.agent, &request.known).await?,
                    jobs: self.undelivered_jobs(request.agent).await?,
                    cancels: self.undelivered_cancels(request.agent).await?,
                });
            }
            Ok(out)
        }
    }

    /// Records several agents' acknowledgements at once: for each, exactly what
    /// [`jobs_delivered`](Self::jobs_delivered), [`states_stored`](Self::states_stored) and
    /// [`cancels_delivered`](Self::cancels_delivered) record (empty lists are skipped). The hub
    /// gathers the acks of many sessions into one call; the SQL store makes it one
    /// transaction. On an error nothing needs to have been recorded: what was not recorded
    /// goes out again on the agent's next connection.
    fn record_deliveries(
        &self,
        batch: &[Delivered],
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        async move {
            for d in batch {
                if !d.jobs.is_empty() {
                    self.jobs_delivered(d.agent, &d.jobs).await?;
                }
                if !d.states.is_empty() {
                    self.states_stored(d.agent, &d.states).await?;
                }
                if !d.cancels.is_empty() {
                    self.cancels_delivered(d.agent, &d.cancels).await?;
                }
            }
            Ok(())
        }
    }
}
