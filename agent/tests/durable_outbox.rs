//! Group commit of the store, and the durable outbox: sequence numbers across reopen,
//! reading from a position, acks, the telemetry caps, and tombstones that keep the seqs
//! contiguous for the controller's `DurableStream`.

use std::path::Path;
use std::time::Duration;

use tikfleet_agent::outbox::{Outbox, OutboxConfig, OutboxError, TOMBSTONE_BYTES};
use tikfleet_agent::queue::Queue;
use tikfleet_agent::store::{Store, StoreConfig};
use tikfleet_shared::job::{Job, JobOp, JobStatus, JobUpdate, Priority};
use tikfleet_shared::record::{
    AuditParams, AuditRecord, AuditStatus, DropReason, OutboxRecord, Telemetry, TelemetrySample,
};
use tikfleet_shared::session::{DurableStream, Incoming};
use tikfleet_shared::{ErrorCode, ErrorInfo, JobId, RouterId, TenantId, UnixMillis};

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn concurrent_commits_share_flushes() {
    const N: u64 = 32;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(TIMEOUT, async {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
            let queue = std::sync::Arc::new(Queue::open(&store, UnixMillis::new(0)).unwrap());
            let before = store.flush_count();
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..N {
                let queue = std::sync::Arc::clone(&queue);
                tasks.spawn(async move {
                    let job = Job {
                        id: JobId::new(),
                        tenant_id: TenantId::new(),
                        router_id: RouterId::new(),
                        idempotency_key: format!("k{i}"),
                        priority: Priority::Normal,
                        op: JobOp::Reboot {},
                        created_at: UnixMillis::new(0),
                        max_attempts: 1,
                        generation: None,
                    };
                    queue.enqueue(job, UnixMillis::new(0)).await.unwrap();
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
            let flushes = store.flush_count() - before;
            assert!(flushes >= 1);
            assert!(flushes < N, "{N} commits took {flushes} flushes");
            assert_eq!(queue.counts().queued, N);
        })
        .await
        .expect("test timed out");
    });
}

fn audit(action: &str) -> OutboxRecord {
    OutboxRecord::Audit(AuditRecord {
        seq: 0,
        at: UnixMillis::new(1),
        tenant_id: TenantId::from_bytes([1; 16]),
        router_id: Some(RouterId::from_bytes([2; 16])),
        job_id: None,
        generation: Some(3),
        action: action.to_owned(),
        params: AuditParams::new(),
        status: AuditStatus::Succeeded,
        error: None,
        duration_ms: 4,
    })
}

fn telemetry(at: i64) -> OutboxRecord {
    OutboxRecord::Telemetry(Telemetry {
        at: UnixMillis::new(at),
        sample: TelemetrySample::RouterUnreachable {
            router_id: RouterId::from_bytes([2; 16]),
            error: ErrorInfo::new(ErrorCode::Timeout),
        },
    })
}

fn job_update(at: i64) -> OutboxRecord {
    OutboxRecord::JobUpdate(JobUpdate {
        job_id: JobId::from_bytes([3; 16]),
        router_id: RouterId::from_bytes([2; 16]),
        status: JobStatus::Succeeded,
        attempts: 1,
        progress: None,
        error: None,
        detail: None,
        at: UnixMillis::new(at),
    })
}

fn open(path: &Path, config: OutboxConfig) -> (Store, Outbox) {
    let store = Store::open(&StoreConfig::new(path)).unwrap();
    let outbox = Outbox::open(&store, config).unwrap();
    (store, outbox)
}

#[tokio::test]
async fn seq_is_monotonic_across_reopen_and_never_reused() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_s, outbox) = open(dir.path(), OutboxConfig::default());
            for expected in 1..=3 {
                assert_eq!(
                    outbox.push(audit("/ppp/secret/add")).await.unwrap(),
                    expected
                );
            }
        }
        {
            let (_s, outbox) = open(dir.path(), OutboxConfig::default());
            assert_eq!(outbox.stats().last_seq, 3);
            assert_eq!(outbox.push(job_update(1)).await.unwrap(), 4);
            // Everything acknowledged: the tree holds no record any more.
            assert_eq!(outbox.ack(4).unwrap(), 4);
            assert_eq!(outbox.stats().records, 0);
        }
        let (_s, outbox) = open(dir.path(), OutboxConfig::default());
        let stats = outbox.stats();
        assert_eq!((stats.last_seq, stats.acked, stats.records), (4, 4, 0));
        assert_eq!(outbox.push(audit("/ppp/secret/set")).await.unwrap(), 5);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn read_after_returns_in_order_from_a_position_and_ack_trims() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let (_s, outbox) = open(dir.path(), OutboxConfig::default());
        for i in 0..10 {
            outbox.push(audit(&format!("/cmd/{i}"))).await.unwrap();
        }
        let page = outbox.read_after(3, 4).unwrap();
        let seqs: Vec<u64> = page.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [4, 5, 6, 7]);
        // An audit record carries its own sequence number.
        match &page[0].1 {
            OutboxRecord::Audit(a) => assert_eq!((a.seq, a.action.as_str()), (4, "/cmd/3")),
            other => panic!("unexpected {other:?}"),
        }
        assert!(outbox.read_after(10, 5).unwrap().is_empty());

        assert_eq!(outbox.ack(6).unwrap(), 6);
        assert_eq!(outbox.ack(6).unwrap(), 0, "acks are idempotent");
        assert_eq!(outbox.ack(2).unwrap(), 0, "an older ack changes nothing");
        let rest: Vec<u64> = outbox
            .read_after(0, 100)
            .unwrap()
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(rest, [7, 8, 9, 10]);
        assert_eq!(outbox.stats().records, 4);
        assert!(matches!(
            outbox.ack(11),
            Err(OutboxError::AckBeyondEnd { upto: 11, last: 10 })
        ));
    })
    .await
    .expect("test timed out");
}

/// Short names of records, for comparing whole pages.
fn kinds(records: &[(u64, OutboxRecord)]) -> Vec<(u64, &'static str)> {
    records
        .iter()
        .map(|(seq, record)| {
            let kind = match record {
                OutboxRecord::Dropped { reason } => reason.name(),
                other => other.name(),
            };
            (*seq, kind)
        })
        .collect()
}

/// Feeds records to a controller-side stream as the uplink would send them; panics on
/// anything but `Next`.
fn receive(stream: &mut DurableStream<()>, records: &[(u64, OutboxRecord)]) {
    for (seq, record) in records {
        match stream.classify(*seq) {
            Incoming::Next { seq } => stream.commit(seq).unwrap(),
            other => panic!("seq {seq} ({record:?}) classified as {other:?}"),
        }
    }
}

#[tokio::test]
async fn telemetry_cap_drops_oldest_telemetry_only_and_counts() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig {
            max_telemetry: 3,
            ..OutboxConfig::default()
        };
        {
            let (_s, outbox) = open(dir.path(), config);
            outbox.push(telemetry(1)).await.unwrap(); // 1
            outbox.push(audit("/a")).await.unwrap(); // 2
            outbox.push(telemetry(3)).await.unwrap(); // 3
            outbox.push(telemetry(4)).await.unwrap(); // 4
            outbox.push(job_update(5)).await.unwrap(); // 5
            outbox.push(telemetry(6)).await.unwrap(); // 6: drops 1
            outbox.push(telemetry(7)).await.unwrap(); // 7: drops 3
        }
        let (_s, outbox) = open(dir.path(), config);
        let records = outbox.read_after(0, 100).unwrap();
        assert_eq!(
            kinds(&records),
            [
                (1, "telemetry"), // tombstone
                (2, "audit"),
                (3, "telemetry"), // tombstone
                (4, "telemetry"),
                (5, "job_update"),
                (6, "telemetry"),
                (7, "telemetry"),
            ]
        );
        for seq in [1, 3] {
            assert_eq!(
                records[seq - 1].1,
                OutboxRecord::dropped(DropReason::Telemetry)
            );
        }
        assert_eq!(records[3].1, telemetry(4));
        let stats = outbox.stats();
        assert_eq!((stats.telemetry, stats.dropped_telemetry), (3, 2));
        assert_eq!(stats.records, 7, "tombstones stay until acked");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn byte_cap_drops_telemetry_but_never_audit_and_raises_near_cap() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig {
            max_bytes: 1_000,
            near_cap_percent: 50,
            max_telemetry: 1_000,
        };
        let (_s, outbox) = open(dir.path(), config);
        for i in 0..20 {
            outbox.push(telemetry(i)).await.unwrap();
        }
        let stats = outbox.stats();
        assert!(stats.bytes <= 1_000, "{stats:?}");
        assert!(stats.dropped_telemetry > 0);
        assert!(stats.near_cap);
        for i in 0..20 {
            outbox.push(audit(&format!("/audit/{i}"))).await.unwrap();
        }
        let records = outbox.read_after(0, 1_000).unwrap();
        let audits = records
            .iter()
            .filter(|(_, r)| matches!(r, OutboxRecord::Audit(_)))
            .count();
        assert_eq!(audits, 20, "audit records are never dropped");
        let seqs: Vec<u64> = records.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>(), "no holes");
        assert!(
            records[..20]
                .iter()
                .all(|(_, r)| *r == OutboxRecord::dropped(DropReason::Telemetry))
        );
        let stats = outbox.stats();
        assert_eq!(stats.telemetry, 0, "all telemetry made room for audit");
        assert!(stats.bytes > 1_000, "audit alone may exceed the cap");
        assert_eq!(stats.dropped_telemetry, 20);
        assert_eq!(stats.records, 40);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn drops_leave_tombstones_so_the_controller_sees_no_gap() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        // Only the count cap applies here; see the byte cap tests for that one.
        let config = OutboxConfig {
            max_telemetry: 4,
            ..OutboxConfig::default()
        };
        let mut expected = Vec::new();
        {
            let (_s, outbox) = open(dir.path(), config);
            for i in 0..60 {
                let seq = match i % 5 {
                    0 => outbox.push(audit(&format!("/cmd/{i}"))).await.unwrap(),
                    3 => outbox.push(job_update(i)).await.unwrap(),
                    _ => outbox.push(telemetry(i)).await.unwrap(),
                };
                assert_eq!(seq, i as u64 + 1);
                let kind = match i % 5 {
                    0 => "audit",
                    3 => "job_update",
                    _ => "telemetry",
                };
                expected.push((seq, kind));
                let stats = outbox.stats();
                assert!(
                    stats.telemetry <= 4,
                    "tombstones are not telemetry: {stats:?}"
                );
            }
        }
        // After a restart too: the tombstones are on disk.
        let (_s, outbox) = open(dir.path(), config);
        let stats = outbox.stats();
        assert_eq!(stats.records, 60);
        assert_eq!(stats.telemetry, 4);
        assert_eq!(stats.dropped_telemetry, 36 - 4);
        let records = outbox.read_after(0, 1_000).unwrap();
        assert_eq!(kinds(&records), expected, "contiguous seqs 1..=60");
        let tombstones: Vec<u64> = records
            .iter()
            .filter(|(_, r)| *r == OutboxRecord::dropped(DropReason::Telemetry))
            .map(|(seq, _)| *seq)
            .collect();
        let telemetry_seqs: Vec<u64> = expected
            .iter()
            .filter(|(_, kind)| *kind == "telemetry")
            .map(|(seq, _)| *seq)
            .collect();
        assert_eq!(
            tombstones,
            telemetry_seqs[..telemetry_seqs.len() - 4],
            "the oldest telemetry became tombstones, the newest four are kept"
        );
        let kept: Vec<u64> = records
            .iter()
            .filter(|(_, r)| matches!(r, OutboxRecord::Telemetry(_)))
            .map(|(seq, _)| *seq)
            .collect();
        assert_eq!(kept, [55, 57, 58, 60]);

        // The controller's stream, fed page by page as the uplink would (resuming from its
        // ack, the agent trimming on each ack), sees every seq as the next one.
        let mut stream = DurableStream::<()>::new();
        loop {
            let page = outbox.read_after(stream.ack(), 7).unwrap();
            if page.is_empty() {
                break;
            }
            receive(&mut stream, &page);
            outbox.ack(stream.ack()).unwrap();
        }
        assert_eq!(stream.ack(), 60);
        assert_eq!(outbox.stats().records, 0);
        assert_eq!(outbox.stats().bytes, 0);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_telemetry_record_over_the_byte_cap_becomes_its_own_tombstone() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig {
            max_bytes: 30,
            near_cap_percent: 80,
            max_telemetry: 10,
        };
        let (_s, outbox) = open(dir.path(), config);
        assert_eq!(outbox.push(telemetry(1)).await.unwrap(), 1);
        assert_eq!(outbox.push(telemetry(2)).await.unwrap(), 2);
        let stats = outbox.stats();
        assert_eq!(
            (
                stats.records,
                stats.telemetry,
                stats.bytes,
                stats.dropped_telemetry
            ),
            (2, 0, 2 * TOMBSTONE_BYTES, 2)
        );
        let mut stream = DurableStream::<()>::new();
        let records = outbox.read_after(0, 10).unwrap();
        assert_eq!(kinds(&records), [(1, "telemetry"), (2, "telemetry")]);
        assert!(
            records
                .iter()
                .all(|(_, r)| *r == OutboxRecord::dropped(DropReason::Telemetry))
        );
        receive(&mut stream, &records);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn corrupt_and_missing_records_are_delivered_as_tombstones() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_s, outbox) = open(dir.path(), OutboxConfig::default());
            for i in 0..6 {
                outbox.push(audit(&format!("/cmd/{i}"))).await.unwrap();
            }
        }
        {
            // Damage the tree behind the outbox's back: seq 2 no longer decodes, seq 4 is
            // gone (as an agent from before tombstones left it), seq 6 is gone too.
            let db = sled::open(dir.path()).unwrap();
            let tree = db.open_tree("outbox").unwrap();
            let key = |seq: u64| {
                let mut key = vec![b'r'];
                key.extend_from_slice(&seq.to_be_bytes());
                key
            };
            tree.insert(key(2), &[0u8, 0xc1, 0xff][..]).unwrap();
            tree.remove(key(4)).unwrap();
            tree.remove(key(6)).unwrap();
            db.flush().unwrap();
        }
        let (_s, outbox) = open(dir.path(), OutboxConfig::default());
        assert_eq!(outbox.stats().last_seq, 6);
        let records = outbox.read_after(0, 100).unwrap();
        assert_eq!(
            kinds(&records),
            [
                (1, "audit"),
                (2, "corrupt"),
                (3, "audit"),
                (4, "missing"),
                (5, "audit"),
                (6, "missing"),
            ]
        );
        // Counted once, however often it is read.
        assert_eq!(outbox.read_after(1, 100).unwrap().len(), 5);
        assert_eq!(outbox.stats().corrupt, 1);
        // Paging through the holes stays contiguous.
        assert_eq!(kinds(&outbox.read_after(3, 1).unwrap()), [(4, "missing")]);
        let mut stream = DurableStream::<()>::new();
        receive(&mut stream, &records);
        assert_eq!(
            outbox.ack(stream.ack()).unwrap(),
            4,
            "four records were stored"
        );
        assert!(outbox.read_after(0, 100).unwrap().is_empty());
        assert_eq!(outbox.push(audit("/next")).await.unwrap(), 7);
    })
    .await
    .expect("test timed out");
}
