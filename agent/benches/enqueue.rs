//! Benchmark: durable enqueue throughput of the job queue, group commit against one flush per
//! job, in the same run on the same disk. Prints the figures; nothing is asserted.
//!
//! - *group commit*: [`TASKS`] concurrent enqueuers (as the uplink's many in-flight job
//!   messages are) each enqueue jobs one after another; every `Queue::enqueue` returns only once
//!   its job is on disk, and concurrent enqueues share flushes (`store.rs`, "group commit").
//! - *one flush per job*: a single enqueuer, so each enqueue waits for a flush of its own.
//!
//! Each run gets a fresh store in a temporary folder (on the same file system as `TMPDIR`).
//!
//! Run: `cargo bench -p tikfleet-agent --bench enqueue`

use std::sync::Arc;
use std::time::{Duration, Instant};

use tikfleet_agent::queue::Queue;
use tikfleet_agent::store::{Store, StoreConfig};
use tikfleet_shared::domain::{PppSecret, PppService};
use tikfleet_shared::job::{Job, JobOp, Priority};
use tikfleet_shared::{JobId, RouterId, Secret, TenantId, UnixMillis};

/// Concurrent enqueuers in the group-commit run.
const TASKS: usize = 64;
/// Jobs in the group-commit run.
const GROUP_JOBS: usize = 10_240;
/// Jobs in the one-flush-per-job run (each costs a full flush, so fewer).
const SEQUENTIAL_JOBS: usize = 1_000;

const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

fn job(tenant: TenantId, router: RouterId, i: usize) -> Job {
    let id = JobId::new();
    Job {
        id,
        tenant_id: tenant,
        router_id: router,
        idempotency_key: format!("bench-{i}"),
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
                comment: Some(format!("subscriber {i}")),
            },
            profile: None,
        },
        created_at: NOW,
        max_attempts: 0,
        generation: None,
    }
}

/// Jobs per second, flushes, and the elapsed time of one run.
struct Run {
    jobs: usize,
    elapsed: Duration,
    flushes: u64,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.jobs as f64 / self.elapsed.as_secs_f64()
    }

    fn flushes_per_job(&self) -> f64 {
        self.flushes as f64 / self.jobs as f64
    }
}

/// Enqueues `jobs` jobs with `tasks` concurrent enqueuers into a fresh store.
async fn run(tasks: usize, jobs: usize) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&StoreConfig::new(dir.path().join("store")))?;
    let queue = Arc::new(Queue::open(&store, NOW)?);
    let (tenant, router) = (TenantId::new(), RouterId::new());
    let per_task = jobs / tasks;
    let flushes_before = store.flush_count();
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let queue = Arc::clone(&queue);
        set.spawn(async move {
            for k in 0..per_task {
                let enqueued = queue
                    .enqueue(job(tenant, router, t * per_task + k), NOW)
                    .await?;
                anyhow::ensure!(enqueued.created, "job {} was a duplicate", t * per_task + k);
            }
            anyhow::Ok(())
        });
    }
    while let Some(res) = set.join_next().await {
        res??;
    }
    let elapsed = started.elapsed();
    let flushes = store.flush_count() - flushes_before;
    let queued = queue.counts().queued;
    anyhow::ensure!(
        queued == (per_task * tasks) as u64,
        "{queued} jobs queued, expected {}",
        per_task * tasks
    );
    Ok(Run {
        jobs: per_task * tasks,
        elapsed,
        flushes,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    println!(
        "durable enqueue of create-PPP-secret jobs into a fresh store under {}",
        std::env::temp_dir().display()
    );
    // Warm up the file system and allocator; not reported.
    run(8, 256).await?;

    let seq = run(1, SEQUENTIAL_JOBS).await?;
    println!(
        "one flush per job (1 enqueuer):        {:>8.0} jobs/s  ({} jobs in {:.2} s, {:.2} flushes/job)",
        seq.per_second(),
        seq.jobs,
        seq.elapsed.as_secs_f64(),
        seq.flushes_per_job(),
    );
    let group = run(TASKS, GROUP_JOBS).await?;
    println!(
        "group commit ({TASKS} concurrent enqueuers): {:>8.0} jobs/s  ({} jobs in {:.2} s, {:.3} flushes/job)",
        group.per_second(),
        group.jobs,
        group.elapsed.as_secs_f64(),
        group.flushes_per_job(),
    );
    println!(
        "group commit / one flush per job: {:.1}x",
        group.per_second() / seq.per_second()
    );
    Ok(())
}
