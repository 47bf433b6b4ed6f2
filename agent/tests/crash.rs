//! Crash test (issue 4): a 5,000-job run in which the real `tikfleet-agent` process is killed
//! with SIGKILL at 10 random moments and restarted, then run until its queue is drained
//! (`run --exit-when-idle`).
//!
//! The simulator runs in this process on loopback and starts with 2,600 tikfleet-managed PPP
//! secrets. The jobs: 2,500 creates of new secrets, 1,000 profile changes, 800 disables (500
//! names get both: the two touch different fields, so they commute) and 700 deletes of
//! existing secrets. Every name and field is touched by at most one job, so the expected
//! final state does not depend on the order the executor (8 jobs at once) runs them in. Each
//! life of the agent ends when the router has seen a seeded-random number of further
//! commands (50 to 900 each, never more than the run needs in total); then it is killed.
//!
//! # What "completed exactly once in effect" means here
//!
//! Every job is `succeeded` in the queue (none queued, running, failed); the router's
//! `/ppp/secret` table equals the expected state exactly; each job's mutating command (add,
//! set, remove) is audited as succeeded at most once across all its attempts; a job whose
//! successful attempt found nothing to do (`unchanged`, `absent`) had an earlier attempt,
//! which did it; and the router received each kind of mutating command once per job, plus at
//! most once per interrupted attempt (one received just before the kill and never run).
//!
//! # What "no audit record missing or duplicated" can honestly mean
//!
//! A kill can land after the router ran a command and before the command's audit record was
//! committed: that record is gone. (An "intent" record committed before each command would
//! cost a commit per command and still could not say whether the router ran it.) What the
//! agent does guarantee, and this test checks, follows from two orderings in the executor:
//! an attempt sends no command before its `running` update is durable, and its audit records
//! are ahead of its final update in the one FIFO to the outbox. So a missing audit record
//! implies a missing final update: the attempt was interrupted, the job stayed `running` on
//! disk and ran again.
//!
//! 1. *No duplicates, nothing invented*: the outbox is contiguous (no tombstones), every audit
//!    record carries its own seq and a job, and a job's records parse into attempts (a
//!    `running` update, its audit records, at most one final update with the same attempt
//!    number; attempt numbers strictly increase), no attempt audits one of its operation's
//!    commands twice, and in each life of the agent, per command word, there are never more
//!    audit records than commands the router received.
//! 2. *Nothing missing from finished work*: every job's successful attempt carries the audit
//!    records of exactly the commands its outcome implies (`created`: print and add, …), all
//!    succeeded, before its `succeeded` update; the queue's record matches that update
//!    (attempts, detail). So no job is marked succeeded without its audit trail and its
//!    update durable, and no JobUpdate is lost.
//! 3. *Losses only where a kill interrupted an attempt*: in each life, the commands the router
//!    received without an audit record belong to attempts that the kill interrupted (a
//!    `running` update with no final update, run again in a later life): their number is at
//!    most the sum of those attempts' command budgets plus the connection commands of one
//!    pool (login and version read per connection), and zero when no attempt was
//!    interrupted. At most `router_concurrency` attempts are interrupted per kill. The last,
//!    uninterrupted life audits every command it sent exactly once, per command word.
//!    (Records are assigned to lives by their timestamps: lives do not overlap, and the
//!    router's counters are read once it has closed the killed agent's connections.)
//!
//! A job can report `succeeded` twice: a kill between its durable update and the queue's
//! commit runs it again (at least once, as the executor documents; the second report carries
//! a higher attempt number). Such jobs are counted and bounded by kills × concurrency.

#![cfg(unix)]

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tikfleet_agent::clock::{Clock, SystemClock};
use tikfleet_agent::executor::{CONNECT_COMMANDS, command_budget};
use tikfleet_agent::outbox::{Outbox, OutboxConfig};
use tikfleet_agent::queue::Queue;
use tikfleet_agent::registry::Registry;
use tikfleet_agent::router::RouterEndpoint;
use tikfleet_agent::router::TlsMode;
use tikfleet_agent::store::{Store, StoreConfig};
use tikfleet_agent::vault::{Vault, VaultKey};
use tikfleet_shared::domain::{AccountKind, AccountRef, PppSecret, PppService};
use tikfleet_shared::job::{Job, JobOp, JobStatus, JobUpdate, Priority, Progress};
use tikfleet_shared::record::{AuditRecord, AuditStatus, OutboxRecord};
use tikfleet_shared::{JobId, RouterId, Secret, TenantId, UnixMillis};
use tikfleet_sim::router::{Router, lock};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// The whole test.
const LIMIT: Duration = Duration::from_secs(100);
/// Any one wait (agent start, a kill point, the final drain).
const WAIT: Duration = Duration::from_secs(60);
const SEED: u64 = 0x7123_4fee;
const KILLS: usize = 10;
/// Jobs running at once against the router (`router_concurrency`, also the pool size).
const PER_ROUTER: usize = 8;
/// Secrets on the router before the run (`old-N`), managed by tikfleet.
const OLD: usize = 2_600;
const CREATES: usize = 2_500;
/// `old-0..1000` get a profile change, `old-500..1300` are disabled, `old-1300..2000` deleted.
const SET_PROFILE: std::ops::Range<usize> = 0..1_000;
const DISABLE: std::ops::Range<usize> = 500..1_300;
const DELETE: std::ops::Range<usize> = 1_300..2_000;
const JOBS: usize = CREATES
    + (SET_PROFILE.end - SET_PROFILE.start)
    + (DISABLE.end - DISABLE.start)
    + (DELETE.end - DELETE.start);
/// Each life ends after the router has seen this many more commands (seeded uniform). The
/// run needs at least one print per job plus one mutation per job (10,000 commands), so even
/// ten maximal lives (9,000) end before the queue is drained.
const GAP: std::ops::RangeInclusive<u64> = 50..=900;
const CONNECT_ACTIONS: [&str; 2] = ["/login", "/system/resource/print"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Create,
    SetProfile,
    Disable,
    Delete,
}

/// The fields of a secret that the test predicts.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Account {
    profile: String,
    disabled: bool,
    password: String,
    service: String,
    comment: String,
}

struct Plan {
    jobs: Vec<Job>,
    kinds: HashMap<JobId, Kind>,
    expected: BTreeMap<String, Account>,
}

fn truthy(v: &str) -> bool {
    matches!(v, "true" | "yes")
}

/// The router's PPP secrets by name.
fn secrets(router: &Router) -> BTreeMap<String, Account> {
    let mut dev = lock(&router.device);
    let now = Instant::now();
    dev.tick(now);
    let rows = dev.menu_rows("/ppp/secret", now).expect("/ppp/secret");
    rows.into_iter()
        .map(|row| {
            let row: HashMap<String, String> = row.into_iter().collect();
            let get = |k: &str| row.get(k).cloned().unwrap_or_default();
            (
                get("name"),
                Account {
                    profile: get("profile"),
                    disabled: truthy(&get("disabled")),
                    password: get("password"),
                    service: get("service"),
                    comment: get("comment"),
                },
            )
        })
        .collect()
}

/// Puts the `old-N` secrets on the router (as an earlier run of tikfleet would have).
fn seed_router(router: &Router) {
    let now = Instant::now();
    let mut dev = lock(&router.device);
    for i in 0..OLD {
        let attrs = [
            ("name", format!("old-{i}")),
            ("password", format!("pw-old-{i}")),
            ("profile", "default".to_owned()),
            ("comment", tikfleet_agent::ops::MARKER.to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v));
        dev.add_row("/ppp/secret", &attrs, now)
            .expect("seed a secret");
    }
}

fn plan(
    rng: &mut StdRng,
    tenant: TenantId,
    router: RouterId,
    initial: &BTreeMap<String, Account>,
) -> Plan {
    let mut expected = initial.clone();
    let mut ops: Vec<(Kind, JobOp)> = Vec::with_capacity(JOBS);
    for i in 0..CREATES {
        let name = format!("new-{i}");
        let profile = if rng.random_bool(0.5) {
            "default"
        } else {
            "default-encryption"
        };
        let disabled = rng.random_bool(0.2);
        let password = format!("pw-new-{i}");
        expected.insert(
            name.clone(),
            Account {
                profile: profile.to_owned(),
                disabled,
                password: password.clone(),
                service: PppService::Pppoe.as_str().to_owned(),
                comment: tikfleet_agent::ops::MARKER.to_owned(),
            },
        );
        let secret = PppSecret {
            subscriber_id: None,
            name,
            password: Secret::new(password),
            service: PppService::Pppoe,
            profile: profile.to_owned(),
            disabled,
            remote_address: None,
            comment: None,
        };
        ops.push((
            Kind::Create,
            JobOp::UpsertPppSecret {
                secret,
                profile: None,
            },
        ));
    }
    let account = |i: usize| AccountRef {
        kind: AccountKind::Ppp,
        name: format!("old-{i}"),
    };
    for i in SET_PROFILE {
        let a = account(i);
        expected.get_mut(&a.name).expect("seeded").profile = "default-encryption".to_owned();
        let op = JobOp::SetProfile {
            account: a,
            profile: "default-encryption".to_owned(),
        };
        ops.push((Kind::SetProfile, op));
    }
    for i in DISABLE {
        let a = account(i);
        expected.get_mut(&a.name).expect("seeded").disabled = true;
        ops.push((Kind::Disable, JobOp::Disable { account: a }));
    }
    for i in DELETE {
        let name = format!("old-{i}");
        expected.remove(&name);
        ops.push((Kind::Delete, JobOp::DeletePppSecret { name }));
    }
    ops.shuffle(rng);
    let now = SystemClock.now();
    let mut kinds = HashMap::new();
    let jobs = ops
        .into_iter()
        .enumerate()
        .map(|(n, (kind, op))| {
            let id = JobId::new();
            kinds.insert(id, kind);
            let priority =
                [Priority::Critical, Priority::Normal, Priority::Bulk][rng.random_range(0..3)];
            Job {
                id,
                tenant_id: tenant,
                router_id: router,
                idempotency_key: format!("crash-{n}"),
                priority,
                op,
                created_at: now,
                max_attempts: 0,
                generation: None,
            }
        })
        .collect();
    Plan {
        jobs,
        kinds,
        expected,
    }
}

/// A fresh data folder: the router registered (password sealed with `key`), every job
/// enqueued and committed. Runs on its own runtime, dropped at the end, so that nothing
/// (no group-commit task) keeps the store open for the agent.
fn prepare(store_dir: PathBuf, key: VaultKey, router: RouterEndpoint, jobs: Vec<Job>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store = Store::open(&StoreConfig::new(store_dir)).expect("store");
        let registry = Registry::open(&store, Vault::new(&key)).expect("registry");
        registry.add(router).await.expect("router registered");
        let queue = Arc::new(Queue::open(&store, SystemClock.now()).expect("queue"));
        let mut tasks = tokio::task::JoinSet::new();
        for job in jobs {
            let queue = Arc::clone(&queue);
            tasks.spawn(async move {
                let enqueued = queue
                    .enqueue(job, SystemClock.now())
                    .await
                    .expect("enqueue");
                assert!(enqueued.created);
            });
        }
        while let Some(res) = tasks.join_next().await {
            res.expect("enqueue task");
        }
        store.commit().await.expect("commit");
    });
    drop(rt);
}

/// A running agent process.
struct Agent {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl Agent {
    async fn start(dir: &Path, config: &Path, key: &str) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tikfleet-agent"))
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(dir)
            .args(["run", "--exit-when-idle"])
            .env("TIKFLEET_VAULT_KEY", key)
            .env("RUST_LOG", "warn")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("TIKFLEET_AGENT_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the agent binary runs");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                *sink.lock().expect("stderr") = String::from_utf8_lossy(&buf).into_owned();
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(WAIT, stdout.next_line()).await;
        let agent = Self {
            child,
            stdout,
            stderr,
        };
        let line = match first {
            Ok(Ok(Some(line))) => line,
            other => panic!("the agent did not start ({other:?}): {}", agent.stderr()),
        };
        assert!(
            line.starts_with("tikfleet-agent running:"),
            "{line}\n{}",
            agent.stderr()
        );
        agent
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }
}

/// The router's command counters by word.
fn seen(router: &Router) -> BTreeMap<String, u64> {
    lock(&router.stats).view(None, Instant::now()).by_path
}

fn total(router: &Router) -> u64 {
    lock(&router.stats).view(None, Instant::now()).total
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Polls `done` (a millisecond apart) until it holds; gives up after [`WAIT`].
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until the router has no connection open and no command in progress, so that its
/// counters hold everything the agent sent.
async fn settle(router: &Router) {
    until("the router to close the agent's connections", || {
        let st = lock(&router.stats);
        st.open == 0 && st.in_flight == 0
    })
    .await;
}

/// One run of the agent process, from just before its start to just after its end.
#[derive(Debug)]
struct Life {
    start: i64,
    end: i64,
    /// Commands the router received, by word.
    seen: BTreeMap<String, u64>,
    killed: bool,
}

fn life_of(lives: &[Life], at: UnixMillis) -> usize {
    let at = at.as_millis();
    lives
        .iter()
        .position(|l| l.start <= at && at <= l.end)
        .unwrap_or_else(|| panic!("a record at {at} outside every life of the agent"))
}

/// One attempt of a job as the outbox tells it.
#[derive(Debug)]
struct Attempt {
    number: u32,
    started: UnixMillis,
    audits: Vec<AuditRecord>,
    fin: Option<JobUpdate>,
}

impl Attempt {
    /// The operation's own commands (not the connection's login and version read).
    fn op_commands(&self) -> impl Iterator<Item = &AuditRecord> {
        self.audits
            .iter()
            .filter(|a| !CONNECT_ACTIONS.contains(&a.action.as_str()))
    }
}

/// Splits the outbox into each job's attempts, checking that it is contiguous and that
/// every job's records are well formed.
fn attempts(records: &[(u64, OutboxRecord)], router: RouterId) -> HashMap<JobId, Vec<Attempt>> {
    let mut jobs: HashMap<JobId, Vec<Attempt>> = HashMap::new();
    for (i, (seq, record)) in records.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "the outbox is contiguous from 1");
        match record {
            OutboxRecord::JobUpdate(u) if u.status == JobStatus::Running => {
                assert_eq!(u.progress, Some(Progress { done: 0, total: 1 }));
                let list = jobs.entry(u.job_id).or_default();
                if let Some(prev) = list.last() {
                    assert!(
                        u.attempts > prev.number,
                        "job {}: attempt {} started after attempt {}",
                        u.job_id,
                        u.attempts,
                        prev.number
                    );
                }
                list.push(Attempt {
                    number: u.attempts,
                    started: u.at,
                    audits: Vec::new(),
                    fin: None,
                });
            }
            OutboxRecord::JobUpdate(u) => {
                assert_eq!(u.status, JobStatus::Succeeded, "seq {seq}: {u:?}");
                let current = jobs
                    .get_mut(&u.job_id)
                    .and_then(|l| l.last_mut())
                    .unwrap_or_else(|| panic!("seq {seq}: a final update before any attempt"));
                assert!(current.fin.is_none(), "seq {seq}: a second final update");
                assert_eq!(u.attempts, current.number, "seq {seq}");
                current.fin = Some(u.clone());
            }
            OutboxRecord::Audit(a) => {
                assert_eq!(a.seq, *seq, "an audit record carries its own seq");
                assert_eq!(a.router_id, Some(router));
                let job = a
                    .job_id
                    .unwrap_or_else(|| panic!("seq {seq}: audit without a job"));
                let current = jobs
                    .get_mut(&job)
                    .and_then(|l| l.last_mut())
                    .unwrap_or_else(|| panic!("seq {seq}: audit record before its attempt"));
                assert!(
                    current.fin.is_none(),
                    "seq {seq}: audit record after its attempt's final update"
                );
                current.audits.push(a.clone());
            }
            other => panic!("seq {seq}: unexpected record {other:?}"),
        }
    }
    jobs
}

/// The operation's commands an attempt with this outcome sent, in order.
fn expected_commands(kind: Kind, detail: &str) -> &'static [&'static str] {
    const PRINT: &str = "/ppp/secret/print";
    match (kind, detail) {
        (Kind::Create, "created") => &[PRINT, "/ppp/secret/add"],
        (Kind::SetProfile, "updated profile") | (Kind::Disable, "updated disabled") => {
            &[PRINT, "/ppp/secret/set", "/ppp/active/print"]
        }
        (Kind::Delete, "deleted") => &[PRINT, "/ppp/secret/remove"],
        (Kind::Create | Kind::SetProfile | Kind::Disable, "unchanged")
        | (Kind::Delete, "absent") => &[PRINT],
        other => panic!("unexpected outcome {other:?}"),
    }
}

const fn mutation(kind: Kind) -> &'static str {
    match kind {
        Kind::Create => "/ppp/secret/add",
        Kind::SetProfile | Kind::Disable => "/ppp/secret/set",
        Kind::Delete => "/ppp/secret/remove",
    }
}

/// What the checks counted, for the summary.
#[derive(Debug, Default)]
struct Tally {
    audit_records: u64,
    interrupted: usize,
    unaudited: u64,
    reported_twice: usize,
}

/// Checks the queue and the outbox against the plan and the router's counters.
fn check(
    plan: &Plan,
    queue: &Queue,
    records: &[(u64, OutboxRecord)],
    lives: &[Life],
    router: RouterId,
) -> Tally {
    let mut tally = Tally::default();
    let counts = queue.counts();
    assert_eq!(counts.succeeded, JOBS as u64, "{counts:?}");
    assert_eq!(
        counts.queued + counts.running + counts.retrying + counts.failed + counts.cancelled,
        0,
        "{counts:?}"
    );

    let mut by_job = attempts(records, router);
    // Interrupted attempts (a `running` update and nothing final) per life, with budgets.
    let mut open: Vec<Vec<u64>> = lives.iter().map(|_| Vec::new()).collect();
    let mut extra_mutations: HashMap<&str, usize> = HashMap::new();
    for job in &plan.jobs {
        let id = job.id;
        let kind = plan.kinds[&id];
        let attempts = by_job
            .remove(&id)
            .unwrap_or_else(|| panic!("job {id} left no record in the outbox"));
        let (last, earlier) = attempts.split_last().expect("at least one attempt");
        let fin = last
            .fin
            .as_ref()
            .unwrap_or_else(|| panic!("job {id}: its last attempt did not finish"));
        assert_eq!(fin.progress, Some(Progress { done: 1, total: 1 }));
        let detail = fin
            .detail
            .as_deref()
            .expect("a succeeded update has a detail");
        let ops: Vec<&str> = last.op_commands().map(|a| a.action.as_str()).collect();
        let expected = expected_commands(kind, detail);
        assert_eq!(
            ops, expected,
            "job {id} ({kind:?}, {detail}): the audit records of its successful attempt"
        );
        assert!(
            last.op_commands()
                .all(|a| a.status == AuditStatus::Succeeded),
            "job {id}"
        );

        let record = queue
            .get(id)
            .expect("read")
            .expect("the job is in the queue");
        assert_eq!(record.status, JobStatus::Succeeded);
        assert_eq!(
            record.attempts, last.number,
            "job {id}: the queue's attempt is the reported one"
        );
        assert_eq!(record.detail.as_deref(), Some(detail), "job {id}");

        for a in &attempts {
            let mut actions: Vec<&str> = a.op_commands().map(|c| c.action.as_str()).collect();
            let n = actions.len();
            actions.sort_unstable();
            actions.dedup();
            assert_eq!(
                actions.len(),
                n,
                "job {id} attempt {}: a command audited twice: {:?}",
                a.number,
                a.audits
            );
        }
        let done = |a: &Attempt| {
            a.audits
                .iter()
                .filter(|c| c.action == mutation(kind) && c.status == AuditStatus::Succeeded)
                .count()
        };
        let mutations: usize = attempts.iter().map(done).sum();
        assert!(
            mutations <= 1,
            "job {id}: its change was made {mutations} times"
        );
        if expected.len() == 1 {
            assert!(
                !earlier.is_empty(),
                "job {id}: found nothing to do, yet no earlier attempt did it"
            );
        } else {
            assert_eq!(
                earlier.iter().map(done).sum::<usize>(),
                0,
                "job {id}: changed twice"
            );
        }
        if earlier.iter().any(|a| a.fin.is_some()) {
            tally.reported_twice += 1;
        }
        for a in earlier.iter().filter(|a| a.fin.is_none()) {
            open[life_of(lives, a.started)].push(u64::from(command_budget(&job.op)));
            *extra_mutations.entry(mutation(kind)).or_default() += 1;
        }
    }
    assert!(
        by_job.is_empty(),
        "records of jobs never enqueued: {:?}",
        by_job.keys()
    );

    // Per life: audit records by command word against what the router received.
    let mut audited: Vec<BTreeMap<String, u64>> = lives.iter().map(|_| BTreeMap::new()).collect();
    for (_, r) in records {
        if let OutboxRecord::Audit(a) = r {
            *audited[life_of(lives, a.at)]
                .entry(a.action.clone())
                .or_default() += 1;
            tally.audit_records += 1;
        }
    }
    for (k, life) in lives.iter().enumerate() {
        for (action, n) in &audited[k] {
            let got = life.seen.get(action).copied().unwrap_or(0);
            assert!(
                *n <= got,
                "life {k}: {n} audit records of {action}, the router received {got}"
            );
        }
        let seen: u64 = life.seen.values().sum();
        let missing = seen - audited[k].values().sum::<u64>();
        let interrupted = &open[k];
        assert!(
            interrupted.len() <= PER_ROUTER,
            "life {k}: {} attempts interrupted",
            interrupted.len()
        );
        let bound = if interrupted.is_empty() {
            0
        } else {
            interrupted.iter().sum::<u64>() + u64::from(CONNECT_COMMANDS) * PER_ROUTER as u64
        };
        assert!(
            missing <= bound,
            "life {k}: {missing} commands without an audit record; {} interrupted attempts allow {bound}",
            interrupted.len()
        );
        if !life.killed {
            assert!(interrupted.is_empty());
            assert_eq!(
                audited[k], life.seen,
                "the last life audits every command once"
            );
        }
        tally.interrupted += interrupted.len();
        tally.unaudited += missing;
    }
    assert!(tally.interrupted > 0, "no kill landed during an attempt");
    assert!(
        tally.reported_twice <= KILLS * PER_ROUTER,
        "{} jobs reported success twice",
        tally.reported_twice
    );

    // The router received each mutation once per job, plus at most once per interrupted
    // attempt (a command received just before the kill, never run).
    let mut received: HashMap<&str, u64> = HashMap::new();
    for life in lives {
        for (action, n) in &life.seen {
            *received.entry(action.as_str()).or_default() += n;
        }
    }
    let wanted = [
        ("/ppp/secret/add", CREATES),
        ("/ppp/secret/set", SET_PROFILE.len() + DISABLE.len()),
        ("/ppp/secret/remove", DELETE.len()),
    ];
    for (action, jobs) in wanted {
        let got = received.get(action).copied().unwrap_or(0);
        let slack = extra_mutations.get(action).copied().unwrap_or(0) as u64;
        assert!(
            (jobs as u64..=jobs as u64 + slack).contains(&got),
            "{action}: the router received {got} for {jobs} jobs ({slack} interrupted attempts)"
        );
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_ten_times_every_job_completes_once_in_effect_and_is_audited() {
    tokio::time::timeout(LIMIT, crash_run())
        .await
        .expect("the crash test finished in time");
}

async fn crash_run() {
    let began = Instant::now();
    let sim = tikfleet_sim::start(tikfleet_sim::Config {
        api_ssl: None,
        ssh: None,
        control: None,
        ..tikfleet_sim::Config::local()
    })
    .await
    .expect("simulator");
    let router = Arc::clone(sim.router(0));
    seed_router(&router);
    lock(&router.stats).reset();
    let initial = secrets(&router);
    assert_eq!(initial.len(), OLD);

    let mut rng = StdRng::seed_from_u64(SEED);
    let tenant = TenantId::new();
    let router_id = RouterId::new();
    let plan = plan(&mut rng, tenant, router_id, &initial);
    assert_eq!(plan.jobs.len(), JOBS);

    let dir = tempfile::tempdir().expect("tempdir");
    let key = VaultKey::generate();
    let key_text = key.to_base64().to_string();
    let api = sim.routers[0].api.expect("api");
    let new_router = RouterEndpoint {
        id: router_id,
        tenant,
        name: "crash-1".into(),
        host: api.ip().to_string(),
        api_port: api.port(),
        ssh_port: 22,
        tls: TlsMode::Plain,
        username: "admin".into(),
        password: Secret::new("admin"),
    };
    let store_dir = dir.path().join("store");
    let jobs = plan.jobs.clone();
    tokio::task::spawn_blocking(move || prepare(store_dir, key, new_router, jobs))
        .await
        .expect("the data folder is prepared");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nrouter_commands_per_second = 1000000\nrouter_burst = 1000000\n\
             tenant_commands_per_second = 1000000\ntenant_burst = 1000000\n\
             router_concurrency = {PER_ROUTER}\n"
        ),
    )
    .expect("write the configuration");
    let prepared = began.elapsed();

    let mut lives = Vec::new();
    for _ in 0..KILLS {
        let before = seen(&router);
        let start = SystemClock.now().as_millis();
        let mut agent = Agent::start(dir.path(), &config, &key_text).await;
        let target = before.values().sum::<u64>() + rng.random_range(GAP);
        let mut exited = None;
        until("the kill point", || {
            if let Ok(Some(status)) = agent.child.try_wait() {
                exited = Some(status);
            }
            exited.is_some() || total(&router) >= target
        })
        .await;
        assert!(
            exited.is_none(),
            "the agent ended before it was killed: {exited:?}\n{}",
            agent.stderr()
        );
        agent.child.start_kill().expect("SIGKILL");
        let status = tokio::time::timeout(WAIT, agent.child.wait())
            .await
            .expect("the agent dies")
            .expect("its status");
        assert_eq!(status.signal(), Some(9), "{status:?}");
        settle(&router).await;
        lives.push(Life {
            start,
            end: SystemClock.now().as_millis(),
            seen: delta(&seen(&router), &before),
            killed: true,
        });
    }

    let before = seen(&router);
    let start = SystemClock.now().as_millis();
    let mut agent = Agent::start(dir.path(), &config, &key_text).await;
    let mut lines = Vec::new();
    let drained = tokio::time::timeout(WAIT, async {
        while let Some(line) = agent.stdout.next_line().await.expect("stdout") {
            lines.push(line);
        }
        agent.child.wait().await.expect("its status")
    })
    .await;
    let Ok(status) = drained else {
        panic!("the queue was not drained in time: {}", agent.stderr());
    };
    assert!(status.success(), "{status:?}: {}", agent.stderr());
    assert_eq!(
        lines.last().map(String::as_str),
        Some(
            format!("tikfleet-agent stopped: 0 job(s) waiting, 0 failed, {JOBS} succeeded")
                .as_str()
        ),
        "{}",
        agent.stderr()
    );
    settle(&router).await;
    lives.push(Life {
        start,
        end: SystemClock.now().as_millis(),
        seen: delta(&seen(&router), &before),
        killed: false,
    });

    let now = secrets(&router);
    let wrong: Vec<_> = plan
        .expected
        .keys()
        .chain(now.keys())
        .filter(|name| plan.expected.get(*name) != now.get(*name))
        .take(5)
        .map(|name| (name, plan.expected.get(name), now.get(name)))
        .collect();
    assert!(
        wrong.is_empty(),
        "the router differs from the expected state: {wrong:#?}"
    );
    assert_eq!(now.len(), plan.expected.len());

    let store =
        Store::open(&StoreConfig::new(dir.path().join("store"))).expect("the store reopens");
    let queue = Queue::open(&store, SystemClock.now()).expect("queue");
    let outbox = Outbox::open(&store, OutboxConfig::default()).expect("outbox");
    let records = outbox.read_after(0, usize::MAX).expect("outbox records");
    let tally = check(&plan, &queue, &records, &lives, router_id);
    let commands: u64 = lives.iter().flat_map(|l| l.seen.values()).sum();
    println!(
        "crash test: {JOBS} jobs, {KILLS} kills, {commands} router commands, {} audit records \
         ({} commands unaudited, all in {} interrupted attempts), {} jobs reported succeeded \
         twice, {} outbox records; prepared in {:.1} s, total {:.1} s",
        tally.audit_records,
        tally.unaudited,
        tally.interrupted,
        tally.reported_twice,
        records.len(),
        prepared.as_secs_f64(),
        began.elapsed().as_secs_f64(),
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn an_empty_queue_ends_a_one_shot_run_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tikfleet-agent"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["run", "--exit-when-idle"])
            .env(
                "TIKFLEET_VAULT_KEY",
                VaultKey::generate().to_base64().as_str(),
            )
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("TIKFLEET_AGENT_CONFIG")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the run ended by itself")
    .expect("the agent binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("tikfleet-agent running:") && lines[0].ends_with("0 job(s) waiting")
    );
    assert_eq!(
        lines[1],
        "tikfleet-agent stopped: 0 job(s) waiting, 0 failed, 0 succeeded"
    );
}
