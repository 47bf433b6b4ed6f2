//! The audit writer: every router command becomes an [`AuditRecord`] in the durable outbox,
//! and every record the executor writes goes through one ordered, lossless pipe.
//!
//! The driver reports commands to a [`CommandObserver`] synchronously, on the task that runs
//! the command; the outbox is async (it waits for the group commit). [`AuditLog`] bridges
//! the two: [`AuditObserver::observe`] turns the event into a record and puts it on an
//! unbounded in-memory FIFO (it never blocks and never drops), and one writer task drains
//! the FIFO into the [`Outbox`] in order. It appends every record waiting in the FIFO (up to
//! 512) and then commits once ([`Outbox::append`], [`Outbox::commit`]), so concurrent
//! jobs share one flush per batch instead of paying one per record.
//!
//! # Ordering and durability guarantee
//!
//! The executor writes its own records ([`JobUpdate`](tikfleet_shared::job::JobUpdate)s)
//! through the *same* FIFO with [`AuditLog::push`], which returns only once that record is
//! committed. Because the writer appends in FIFO order and the driver calls the observer
//! before `run` returns, when the executor pushes a job's final update every audit record of
//! that job's commands is already ahead of it in the FIFO. So:
//!
//! - a job's JobUpdate never precedes its audit records in the outbox (sequence order);
//! - when `push` returns (and only then does the executor record the job in the queue), the
//!   job's audit records are durable.
//!
//! Memory stays bounded by what is in flight: each job waits for its final push, so the
//! FIFO holds at most the records of the commands running now. If the outbox cannot write
//! (disk full, I/O error), the writer keeps the record and retries with a growing pause
//! (100 ms … 5 s, real time: this is I/O back-pressure, not scheduling), logging each
//! failure; jobs then wait for their final push instead of completing, so nothing is lost
//! while the process lives. A crash loses only records of attempts that had not finished:
//! those jobs were not recorded as done, run again after the restart (operations are
//! idempotent), and the new attempt is audited.
//!
//! The job a command belongs to is threaded through with a task-local ([`with_job`]): the
//! executor runs each job inside it, and the observer reads it on the same task. Commands
//! outside any job (the reconciler, probes) have `job_id: None`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tikfleet_shared::JobId;
use tikfleet_shared::record::{AuditRecord, OutboxRecord};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::outbox::{Outbox, OutboxError};
use crate::routeros::{CommandEvent, CommandObserver};
use crate::store::StoreError;

tokio::task_local! {
    static JOB: JobId;
}

/// Runs `f` with `job` as the job that its router commands belong to.
pub async fn with_job<F: Future>(job: JobId, f: F) -> F::Output {
    JOB.scope(job, f).await
}

/// The job the current task works for, if any.
#[must_use]
pub fn current_job() -> Option<JobId> {
    JOB.try_with(|j| *j).ok()
}

/// An error of the audit writer.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The writer has stopped (the agent is shutting down).
    #[error("the audit writer has stopped")]
    Closed,
    /// The record cannot be stored at all (it could not be encoded: a bug).
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

type Reply = oneshot::Sender<Result<u64, AuditError>>;

/// A record to write (`None`: a flush marker), and who waits for it.
struct Item {
    record: Option<OutboxRecord>,
    reply: Option<Reply>,
}

/// The writer task and the FIFO in front of it. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct AuditLog {
    tx: mpsc::UnboundedSender<Item>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<std::sync::OnceLock<Arc<crate::metrics::AgentMetrics>>>,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.record.as_ref().map_or("flush", OutboxRecord::name))
    }
}

/// Records taken from the FIFO per commit, at most.
const BATCH: usize = 512;

impl AuditLog {
    /// Starts the writer task on the current runtime.
    #[must_use]
    pub fn start(outbox: Arc<Outbox>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let metrics = Arc::new(std::sync::OnceLock::new());
        let task = tokio::spawn(writer(outbox, rx, Arc::clone(&metrics)));
        Self {
            tx,
            task: std::sync::Mutex::new(Some(task)),
            metrics,
        }
    }

    /// Counts every record written from now on in `metrics`. Set once; later calls change
    /// nothing.
    pub fn set_metrics(&self, metrics: Arc<crate::metrics::AgentMetrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// An observer for the driver: one per client is fine, they share the FIFO.
    #[must_use]
    pub fn observer(&self) -> AuditObserver {
        AuditObserver {
            tx: self.tx.clone(),
        }
    }

    /// Queues `record` behind everything observed so far and returns its outbox sequence
    /// number once it (and so everything before it) is committed.
    pub async fn push(&self, record: OutboxRecord) -> Result<u64, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Item {
                record: Some(record),
                reply: Some(reply),
            })
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Queues `record` behind everything observed so far without waiting for it to be
    /// committed (progress reports: the next commit carries it).
    pub fn send(&self, record: OutboxRecord) -> Result<(), AuditError> {
        self.tx
            .send(Item {
                record: Some(record),
                reply: None,
            })
            .map_err(|_| AuditError::Closed)
    }

    /// Waits until everything queued so far is committed.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Item {
                record: None,
                reply: Some(reply),
            })
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?.map(|_| ())
    }

    /// Stops taking records and waits until every queued one is committed. Observers that
    /// are still alive (in clients) keep the FIFO open; drop them first.
    pub async fn close(self) {
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(self.tx);
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "the audit writer failed");
        }
    }
}

/// The [`CommandObserver`] that audits: each command becomes an [`AuditRecord`] queued for
/// the outbox. Parameters arrive already redacted ([`AuditParams`]).
///
/// [`AuditParams`]: tikfleet_shared::record::AuditParams
#[derive(Debug, Clone)]
pub struct AuditObserver {
    tx: mpsc::UnboundedSender<Item>,
}

impl AuditObserver {
    /// The record for one event (its `seq` is set by the outbox).
    #[must_use]
    pub fn record(ev: &CommandEvent, job_id: Option<JobId>) -> AuditRecord {
        AuditRecord {
            seq: 0,
            at: ev.started_at,
            tenant_id: ev.tenant_id,
            router_id: Some(ev.router_id),
            job_id,
            generation: None,
            action: ev.action.clone(),
            params: ev.params.clone(),
            status: ev.status,
            error: ev.error.clone(),
            duration_ms: u64::try_from(ev.duration.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl AuditObserver {
    fn send(&self, record: AuditRecord) {
        let item = Item {
            record: Some(OutboxRecord::Audit(record)),
            reply: None,
        };
        if let Err(mpsc::error::SendError(Item {
            record: Some(OutboxRecord::Audit(lost)),
            ..
        })) = self.tx.send(item)
        {
            // Only after AuditLog::close, which waits for every client to be dropped first.
            tracing::error!(router = ?lost.router_id, action = %lost.action, "audit writer stopped; an audit record was lost");
        }
    }
}

impl CommandObserver for AuditObserver {
    fn observe(&self, ev: &CommandEvent) {
        self.send(Self::record(ev, current_job()));
    }

    /// The driver's path: the event's strings and parameters move into the record.
    fn observe_owned(&self, ev: CommandEvent) {
        let duration_ms = u64::try_from(ev.duration.as_millis()).unwrap_or(u64::MAX);
        self.send(AuditRecord {
            seq: 0,
            at: ev.started_at,
            tenant_id: ev.tenant_id,
            router_id: Some(ev.router_id),
            job_id: current_job(),
            generation: None,
            action: ev.action,
            params: ev.params,
            status: ev.status,
            error: ev.error,
            duration_ms,
        });
    }
}

async fn writer(
    outbox: Arc<Outbox>,
    mut rx: mpsc::UnboundedReceiver<Item>,
    metrics: Arc<std::sync::OnceLock<Arc<crate::metrics::AgentMetrics>>>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut replies = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut appended = false;
        for item in batch.drain(..) {
            let res = match item.record {
                Some(record) => {
                    if let Some(m) = metrics.get() {
                        m.observe(&record);
                    }
                    let res = append(&outbox, record).await;
                    appended |= res.is_ok();
                    res
                }
                None => Ok(0),
            };
            if let Some(reply) = item.reply {
                replies.push((reply, res));
            }
        }
        // Nobody hears "stored" before the batch is on disk.
        if appended {
            commit(&outbox).await;
        }
        for (reply, res) in replies.drain(..) {
            let _ = reply.send(res);
        }
    }
}

/// Appends one record (not yet committed), retrying until the outbox takes it; gives up only
/// on records that cannot be encoded.
async fn append(outbox: &Outbox, mut record: OutboxRecord) -> Result<u64, AuditError> {
    let mut pause = Duration::from_millis(100);
    loop {
        match outbox.append_mut(&mut record) {
            Ok(seq) => return Ok(seq),
            Err(OutboxError::Store(e @ StoreError::Encode { .. })) => {
                tracing::error!(error = %e, kind = record.name(), "dropping an outbox record that cannot be encoded");
                return Err(OutboxError::Store(e).into());
            }
            Err(e) => {
                tracing::error!(error = %e, kind = record.name(), "cannot append to the outbox; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Commits everything appended so far, retrying until the disk takes it.
async fn commit(outbox: &Outbox) {
    let mut pause = Duration::from_millis(100);
    while let Err(e) = outbox.commit().await {
        tracing::error!(error = %e, "cannot commit the outbox; retrying");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
