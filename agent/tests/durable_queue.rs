//! The durable job queue: the sled store against the in-memory model (with reopen),
//! idempotency, priorities, recovery, dead letters, the size cap, and the ready signal.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tikfleet_agent::clock::{Clock, ManualClock};
use tikfleet_agent::queue::{JobRecord, JobStore, MemJobStore, Queue, QueueError, Transition};
use tikfleet_agent::store::{Store, StoreConfig};
use tikfleet_shared::job::{Job, JobOp, JobStatus, Priority, Progress};
use tikfleet_shared::{ErrorCode, ErrorInfo, JobId, RouterId, TenantId, UnixMillis};

const TIMEOUT: Duration = Duration::from_secs(60);
const T0: UnixMillis = UnixMillis::new(1_700_000_000_000);

fn job(key: &str, priority: Priority) -> Job {
    Job {
        id: JobId::new(),
        tenant_id: TenantId::from_bytes([1; 16]),
        router_id: RouterId::from_bytes([2; 16]),
        idempotency_key: key.to_owned(),
        priority,
        op: JobOp::BackupNow {
            name: Some(format!("backup-{key}")),
        },
        created_at: T0,
        max_attempts: 3,
        generation: None,
    }
}

fn open(path: &Path, now: UnixMillis) -> (Store, Queue) {
    let store = Store::open(&StoreConfig::new(path)).unwrap();
    let queue = Queue::open(&store, now).unwrap();
    (store, queue)
}

fn at(ms: i64) -> UnixMillis {
    UnixMillis::new(T0.as_millis() + ms)
}

// ---------------------------------------------------------------------------------------
// Model against sled
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Enqueue(usize),
    Take,
    Progress(usize),
    Succeed(usize),
    Retry(usize, i64),
    DeadLetter(usize, Option<i64>),
    Cancel(usize),
    Requeue(usize),
    PurgeDead,
    PurgeFinished,
    Advance(i64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..8usize).prop_map(Op::Enqueue),
        4 => Just(Op::Take),
        1 => (0..8usize).prop_map(Op::Progress),
        2 => (0..8usize).prop_map(Op::Succeed),
        2 => (0..8usize, 0..3_000i64).prop_map(|(i, d)| Op::Retry(i, d)),
        2 => (0..8usize, proptest::option::of(0..5_000i64)).prop_map(|(i, h)| Op::DeadLetter(i, h)),
        1 => (0..8usize).prop_map(Op::Cancel),
        1 => (0..8usize).prop_map(Op::Requeue),
        1 => Just(Op::PurgeDead),
        1 => Just(Op::PurgeFinished),
        2 => (0..4_000i64).prop_map(Op::Advance),
        1 => Just(Op::Reopen),
    ]
}

/// What one operation answered, comparable across implementations.
type Answer = Result<Option<JobRecord>, String>;

fn answer<T>(r: Result<T, QueueError>, f: impl FnOnce(T) -> Option<JobRecord>) -> Answer {
    r.map(f).map_err(|e| e.to_string())
}

fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        // Eight jobs; keys repeat (job 4 has job 0's key, …) so dedupe gets exercised.
        let pool: Vec<Job> = (0..8)
            .map(|i| {
                let p = [Priority::Critical, Priority::Normal, Priority::Bulk][i % 3];
                job(&format!("key-{}", i % 4), p)
            })
            .collect();
        let mut now = T0;
        let mut model = MemJobStore::new();
        let (mut store, mut sled) = open(&path, now);
        let err = |code| ErrorInfo::new(code);

        for (step, op) in ops.into_iter().enumerate() {
            let (expected, got): (Answer, Answer) = match op.clone() {
                Op::Enqueue(i) => (
                    answer(model.enqueue(pool[i].clone(), now), |e| Some(e.record)),
                    answer(sled.enqueue(pool[i].clone(), now).await, |e| Some(e.record)),
                ),
                Op::Take => (
                    answer(model.take_ready(now), |r| r),
                    answer(sled.take_ready(now), |r| r),
                ),
                Op::Progress(i) => {
                    let p = Progress { done: 1, total: 2 };
                    (
                        answer(
                            model.transition(pool[i].id, Transition::Progress(p), now),
                            Some,
                        ),
                        answer(sled.set_progress(pool[i].id, p, now), Some),
                    )
                }
                Op::Succeed(i) => (
                    answer(
                        model.transition(pool[i].id, Transition::Succeed { detail: None }, now),
                        Some,
                    ),
                    answer(sled.succeed(pool[i].id, None, now).await, Some),
                ),
                Op::Retry(i, d) => {
                    let t = Transition::Retry {
                        not_before: UnixMillis::new(now.as_millis() + d),
                        error: err(ErrorCode::Timeout),
                    };
                    (
                        answer(model.transition(pool[i].id, t, now), Some),
                        answer(
                            sled.retry(
                                pool[i].id,
                                UnixMillis::new(now.as_millis() + d),
                                err(ErrorCode::Timeout),
                                now,
                            )
                            .await,
                            Some,
                        ),
                    )
                }
                Op::DeadLetter(i, heal) => {
                    let heal = heal.map(|h| UnixMillis::new(now.as_millis() + h));
                    let t = Transition::DeadLetter {
                        error: err(ErrorCode::InvalidValue),
                        next_heal_at: heal,
                    };
                    (
                        answer(model.transition(pool[i].id, t, now), Some),
                        answer(
                            sled.dead_letter(pool[i].id, err(ErrorCode::InvalidValue), heal, now)
                                .await,
                            Some,
                        ),
                    )
                }
                Op::Cancel(i) => (
                    answer(model.transition(pool[i].id, Transition::Cancel, now), Some),
                    answer(sled.cancel(pool[i].id, now).await, Some),
                ),
                Op::Requeue(i) => (
                    answer(model.transition(pool[i].id, Transition::Requeue, now), Some),
                    answer(sled.requeue(pool[i].id, now).await, Some),
                ),
                Op::PurgeDead => (
                    answer(
                        model.purge(&[JobStatus::Failed], UnixMillis::new(i64::MAX)),
                        |_| None,
                    ),
                    answer(sled.purge_dead().await, |_| None),
                ),
                Op::PurgeFinished => (
                    answer(
                        model.purge(&[JobStatus::Succeeded, JobStatus::Cancelled], now),
                        |_| None,
                    ),
                    answer(sled.purge_finished(now).await, |_| None),
                ),
                Op::Advance(ms) => {
                    now = UnixMillis::new(now.as_millis() + ms);
                    (Ok(None), Ok(None))
                }
                Op::Reopen => {
                    drop(sled);
                    drop(store);
                    (store, sled) = open(&path, now);
                    model.reopen(now);
                    (Ok(None), Ok(None))
                }
            };
            prop_assert_eq!(&expected, &got, "answer of step {} {:?}", step, op);
            prop_assert_eq!(
                model.list(None).unwrap(),
                sled.list(None).unwrap(),
                "jobs after step {} {:?}",
                step,
                op
            );
            prop_assert_eq!(model.next_due(), sled.next_due(), "next due, step {}", step);
            prop_assert_eq!(model.counts(), sled.counts(), "counts, step {}", step);
            for status in [JobStatus::Queued, JobStatus::Failed] {
                prop_assert_eq!(
                    model.list(Some(status)).unwrap(),
                    sled.list(Some(status)).unwrap()
                );
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sled_queue_behaves_like_the_model_across_reopens(ops in proptest::collection::vec(op(), 1..60)) {
        run_case(ops)?;
    }
}

// ---------------------------------------------------------------------------------------
// Examples
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn idempotency_key_dedupes_also_after_reopen() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let first = job("suspend-alice", Priority::Critical);
        let original_id = {
            let (_store, queue) = open(dir.path(), T0);
            let a = queue.enqueue(first.clone(), T0).await.unwrap();
            assert!(a.created);
            let again = Job {
                id: JobId::new(),
                ..first.clone()
            };
            let b = queue.enqueue(again, at(5)).await.unwrap();
            assert!(!b.created);
            assert_eq!(b.record.job.id, a.record.job.id);
            a.record.job.id
        };
        let (_store, queue) = open(dir.path(), at(10));
        let c = queue
            .enqueue(job("suspend-alice", Priority::Critical), at(10))
            .await
            .unwrap();
        assert!(!c.created);
        assert_eq!(c.record.job.id, original_id);
        assert_eq!(queue.list(None).unwrap().len(), 1);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn critical_before_normal_before_bulk_then_due_time_then_fifo() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let (_store, queue) = open(dir.path(), T0);
        let bulk = job("bulk", Priority::Bulk);
        let n1 = job("n1", Priority::Normal);
        let n2 = job("n2", Priority::Normal);
        let crit = job("crit", Priority::Critical);
        let n0 = job("n0", Priority::Normal);
        for j in [&bulk, &n1, &n2, &crit] {
            queue.enqueue(j.clone(), T0).await.unwrap();
        }
        // n0 is enqueued later but retried with an earlier due time than n1/n2 are at.
        queue.enqueue(n0.clone(), at(1)).await.unwrap();
        let order: Vec<JobId> = std::iter::from_fn(|| queue.take_ready(at(2)).unwrap())
            .map(|r| r.job.id)
            .collect();
        assert_eq!(order, [crit.id, n1.id, n2.id, n0.id, bulk.id]);

        // Retrying jobs wait for their due time; among equals the earlier due goes first.
        queue
            .retry(n2.id, at(500), ErrorInfo::new(ErrorCode::Timeout), at(3))
            .await
            .unwrap();
        queue
            .retry(n1.id, at(400), ErrorInfo::new(ErrorCode::Timeout), at(3))
            .await
            .unwrap();
        assert_eq!(queue.take_ready(at(399)).unwrap(), None);
        assert_eq!(queue.next_due(), Some(at(400)));
        let r = queue.take_ready(at(600)).unwrap().unwrap();
        assert_eq!((r.job.id, r.attempts), (n1.id, 2));
        assert_eq!(r.status, JobStatus::Running);
        assert_eq!(queue.take_ready(at(600)).unwrap().unwrap().job.id, n2.id);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn running_jobs_are_queued_again_on_reopen() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let j = job("reboot", Priority::Normal);
        {
            let (_store, queue) = open(dir.path(), T0);
            queue.enqueue(j.clone(), T0).await.unwrap();
            let running = queue.take_ready(T0).unwrap().unwrap();
            assert_eq!(running.status, JobStatus::Running);
            // "Crash": dropped without any further commit.
        }
        let (_store, queue) = open(dir.path(), at(50));
        let r = queue.get(j.id).unwrap().unwrap();
        assert_eq!(r.status, JobStatus::Queued);
        assert_eq!(r.attempts, 1);
        assert_eq!(queue.counts().queued, 1);
        assert_eq!(queue.take_ready(at(50)).unwrap().unwrap().attempts, 2);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn dead_letter_heal_requeue_and_purge() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let (_store, queue) = open(dir.path(), T0);
        let healing = job("healing", Priority::Normal);
        let stuck = job("stuck", Priority::Normal);
        for j in [&healing, &stuck] {
            queue.enqueue(j.clone(), T0).await.unwrap();
            queue.take_ready(T0).unwrap().unwrap();
        }
        let error = ErrorInfo::new(ErrorCode::ConnectionRefused);
        queue
            .dead_letter(healing.id, error.clone(), Some(at(60_000)), T0)
            .await
            .unwrap();
        let dead = queue
            .dead_letter(stuck.id, error.clone(), None, T0)
            .await
            .unwrap();
        assert_eq!(dead.status, JobStatus::Failed);
        assert_eq!(dead.last_error, Some(error.clone()));
        assert_eq!(queue.list(Some(JobStatus::Failed)).unwrap().len(), 2);
        assert_eq!(queue.next_due(), Some(at(60_000)));

        // Self-healing: at its time the job runs again with fresh attempts.
        assert_eq!(queue.take_ready(at(59_999)).unwrap(), None);
        let healed = queue.take_ready(at(60_000)).unwrap().unwrap();
        assert_eq!((healed.job.id, healed.attempts), (healing.id, 1));
        assert_eq!(healed.last_error, Some(error));

        // Staff re-queue the other one; a re-queue of a queued job is refused.
        let requeued = queue.requeue(stuck.id, at(70_000)).await.unwrap();
        assert_eq!((requeued.status, requeued.attempts), (JobStatus::Queued, 0));
        let err = queue.requeue(stuck.id, at(70_000)).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Conflict);
        queue.take_ready(at(70_000)).unwrap().unwrap();
        queue
            .dead_letter(
                stuck.id,
                ErrorInfo::new(ErrorCode::InvalidValue),
                None,
                at(70_001),
            )
            .await
            .unwrap();
        assert_eq!(queue.purge_dead().await.unwrap(), 1);
        assert_eq!(queue.get(stuck.id).unwrap(), None);
        assert_eq!(
            queue.get(healing.id).unwrap().unwrap().status,
            JobStatus::Running
        );
        assert_eq!(
            queue
                .succeed(stuck.id, None, at(70_002))
                .await
                .unwrap_err()
                .code(),
            ErrorCode::NotFound
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn over_the_cap_new_jobs_are_refused_and_accepted_ones_survive() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let mut accepted = Vec::new();
        {
            // sled writes its first 512 KiB segment on the second open; measure after it.
            drop(Store::open(&StoreConfig::new(dir.path())).unwrap());
            let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
            let cap = store.size_on_disk().unwrap() + 256 * 1024;
            drop(store);
            let store = Store::open(&StoreConfig::new(dir.path()).with_max_bytes(cap)).unwrap();
            let queue = Queue::open(&store, T0).unwrap();
            let mut refused = None;
            for i in 0..5_000 {
                let mut j = job(&format!("job-{i}"), Priority::Bulk);
                j.op = JobOp::BackupNow {
                    name: Some(format!("{i}-{}", "x".repeat(4096))),
                };
                match queue.enqueue(j.clone(), T0).await {
                    Ok(e) => accepted.push(e.record.job.id),
                    Err(e) => {
                        refused = Some(e);
                        break;
                    }
                }
            }
            let err = refused.expect("the cap was never reached");
            assert_eq!(err.code(), ErrorCode::StorageFull);
            assert!(err.to_string().starts_with("storage full"), "{err}");
            assert!(!accepted.is_empty());
            // Accepted work still moves while new work is refused.
            let first = queue.take_ready(T0).unwrap().unwrap();
            queue.succeed(first.job.id, None, T0).await.unwrap();
            assert_eq!(
                queue
                    .enqueue(job("more", Priority::Critical), T0)
                    .await
                    .unwrap_err()
                    .code(),
                ErrorCode::StorageFull
            );
        }
        let (_store, queue) = open(dir.path(), at(1));
        let stored = queue.list(None).unwrap();
        assert_eq!(stored.len(), accepted.len());
        for (record, id) in stored.iter().zip(&accepted) {
            assert_eq!(record.job.id, *id);
        }
        assert_eq!(queue.counts().succeeded, 1);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn wait_ready_wakes_on_enqueue_and_on_due_time_without_polling() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let (_store, queue) = open(dir.path(), T0);
        let queue = Arc::new(queue);
        let clock = ManualClock::new(T0);

        // Nothing queued: the waiter sleeps until an enqueue signals it.
        let waiter = {
            let (queue, clock) = (Arc::clone(&queue), clock.clone());
            tokio::spawn(async move { queue.wait_ready(&clock).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        queue
            .enqueue(job("a", Priority::Normal), clock.now())
            .await
            .unwrap();
        waiter.await.unwrap();

        // A job due later: the waiter sleeps on the clock until then.
        let a = queue.take_ready(clock.now()).unwrap().unwrap();
        queue
            .retry(
                a.job.id,
                at(1_000),
                ErrorInfo::new(ErrorCode::Timeout),
                clock.now(),
            )
            .await
            .unwrap();
        let waiter = {
            let (queue, clock) = (Arc::clone(&queue), clock.clone());
            tokio::spawn(async move { queue.wait_ready(&clock).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        clock.advance(Duration::from_millis(1_000));
        waiter.await.unwrap();
        assert!(queue.take_ready(clock.now()).unwrap().is_some());
    })
    .await
    .expect("test timed out");
}

#[test]
fn the_model_is_usable_as_a_queue_for_executor_tests() {
    let queue = Queue::in_memory();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        queue.enqueue(job("x", Priority::Normal), T0).await.unwrap();
    });
    assert_eq!(
        queue.take_ready(T0).unwrap().unwrap().status,
        JobStatus::Running
    );
}

#[tokio::test]
async fn take_ready_for_skips_busy_routers_and_next_due_after_looks_past_now() {
    // The executor's view: jobs for a busy router keep their place; the model agrees.
    let dir = tempfile::tempdir().unwrap();
    let (_store, sled) = open(dir.path(), T0);
    let model = Queue::in_memory();
    let (busy, free) = (RouterId::from_bytes([2; 16]), RouterId::from_bytes([3; 16]));
    let crit_busy = job("cb", Priority::Critical);
    let bulk_free = Job {
        router_id: free,
        ..job("bf", Priority::Bulk)
    };
    let late = Job {
        router_id: free,
        ..job("late", Priority::Normal)
    };
    for (j, when) in [(&crit_busy, T0), (&bulk_free, T0), (&late, at(300))] {
        sled.enqueue(j.clone(), when).await.unwrap();
        model.enqueue(j.clone(), when).await.unwrap();
    }
    // `late` is due at 300 (its enqueue time).
    let check = |take: Option<JobRecord>, next: Option<UnixMillis>| {
        assert_eq!(take.map(|r| r.job.id), Some(bulk_free.id));
        assert_eq!(next, Some(at(300)));
    };
    check(
        sled.take_ready_for(at(10), |r| r != busy).unwrap(),
        sled.next_due_after(at(10)),
    );
    check(
        model.take_ready_for(at(10), |r| r != busy).unwrap(),
        model.next_due_after(at(10)),
    );
    // Nothing else for the free router yet; the busy router's job is still first in line.
    assert_eq!(sled.take_ready_for(at(10), |r| r != busy).unwrap(), None);
    assert_eq!(model.take_ready_for(at(10), |r| r != busy).unwrap(), None);
    assert_eq!(sled.next_due_after(at(300)), None);
    assert_eq!(model.next_due_after(at(300)), None);
    assert_eq!(
        sled.take_ready(at(10)).unwrap().unwrap().job.id,
        crit_busy.id
    );
    assert_eq!(
        model.take_ready(at(10)).unwrap().unwrap().job.id,
        crit_busy.id
    );
}
