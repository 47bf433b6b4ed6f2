//! The durable outbox: records for the controller, in order, until it acknowledges them.
//!
//! Every [`OutboxRecord`] (audit, job updates, telemetry, drift, apply reports) gets the next
//! sequence number (from 1, never reused, also across restarts and after everything was
//! trimmed) and is committed (group commit, see [`store`](crate::store)) before
//! [`Outbox::push`] returns. The uplink reads from its position with [`Outbox::read_after`]
//! and trims with [`Outbox::ack`] once the controller has stored the records. An audit
//! record's own `seq` field is set to the sequence number that carries it.
//!
//! Caps: above [`OutboxConfig::max_telemetry`] telemetry records, or above
//! [`OutboxConfig::max_bytes`], the oldest *telemetry* records are dropped (and counted);
//! audit records, job updates, drift and apply reports are never dropped, so the outbox may
//! exceed `max_bytes` with them alone. [`OutboxStats::near_cap`] turns on at
//! [`OutboxConfig::near_cap_percent`] of `max_bytes`, for an alert.
//!
//! A dropped telemetry record leaves a hole in the sequence; the uplink must tell the
//! controller (see the report that came with this module: shared's session treats a hole as
//! a protocol gap today).
//!
//! On disk (`outbox` tree): `r` + seq (u64 big-endian) → one kind byte (`1` telemetry,
//! `0` anything else, so trimming needs no decoding) + MessagePack of the record;
//! `mnext_seq`, `macked`, `mdropped` → u64 big-endian counters, written in the same atomic
//! batch as the records they describe.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use tikfleet_shared::ErrorCode;
use tikfleet_shared::record::OutboxRecord;
use tokio::sync::Notify;

use crate::store::{Store, StoreError, TreeName};

/// An error of the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The controller acknowledged a sequence number the agent never assigned.
    #[error("ack {upto} is beyond the last outbox record {last}")]
    AckBeyondEnd {
        /// The ack.
        upto: u64,
        /// The last assigned sequence number.
        last: u64,
    },
    /// The store failed or the disk is full.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OutboxError {
    /// The shared error code for this error.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::AckBeyondEnd { .. } => ErrorCode::ProtocolError,
            Self::Store(e) => e.code(),
        }
    }
}

/// Outbox limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Above this many bytes, telemetry is dropped oldest first.
    pub max_bytes: u64,
    /// `near_cap` turns on at this percentage of `max_bytes`.
    pub near_cap_percent: u8,
    /// At most this many telemetry records are kept; older ones are dropped.
    pub max_telemetry: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_bytes: 512 * 1024 * 1024,
            near_cap_percent: 80,
            max_telemetry: 100_000,
        }
    }
}

/// Outbox figures for `status` and the hello.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// The last sequence number assigned (0 if none yet).
    pub last_seq: u64,
    /// The controller's last ack.
    pub acked: u64,
    /// Records waiting.
    pub records: u64,
    /// Bytes they take (keys and values).
    pub bytes: u64,
    /// Telemetry records among them.
    pub telemetry: u64,
    /// Telemetry records dropped because of the caps, ever.
    pub dropped_telemetry: u64,
    /// Records skipped because they could not be decoded.
    pub corrupt: u64,
    /// Whether the outbox uses at least `near_cap_percent` of `max_bytes`.
    pub near_cap: bool,
}

const TREE: &str = "outbox";
const NEXT_SEQ: &[u8] = b"mnext_seq";
const ACKED: &[u8] = b"macked";
const DROPPED: &[u8] = b"mdropped";
const KIND_OTHER: u8 = 0;
const KIND_TELEMETRY: u8 = 1;

fn record_key(seq: u64) -> [u8; 9] {
    let mut key = [b'r'; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn seq_of(key: &[u8]) -> Option<u64> {
    match key {
        [b'r', rest @ ..] => <[u8; 8]>::try_from(rest).ok().map(u64::from_be_bytes),
        _ => None,
    }
}

#[derive(Debug)]
struct State {
    next_seq: u64,
    acked: u64,
    records: u64,
    bytes: u64,
    /// (seq, bytes) of each telemetry record, oldest first.
    telemetry: VecDeque<(u64, u64)>,
    dropped: u64,
    corrupt: u64,
}

/// The durable outbox.
#[derive(Debug)]
pub struct Outbox {
    store: Store,
    tree: sled::Tree,
    config: OutboxConfig,
    state: Mutex<State>,
    pushed: Notify,
}

impl Outbox {
    /// Opens the outbox in `store`.
    pub fn open(store: &Store, config: OutboxConfig) -> Result<Self, OutboxError> {
        let tree = store.tree(TreeName::Outbox)?;
        let counter = |key: &[u8]| -> Result<u64, OutboxError> {
            match tree.get(key).map_err(|e| store.map_sled(e))? {
                None => Ok(0),
                Some(v) => Ok(<[u8; 8]>::try_from(v.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        tree: TREE,
                        reason: format!("counter {}", String::from_utf8_lossy(key)),
                    })?),
            }
        };
        let mut state = State {
            next_seq: counter(NEXT_SEQ)?.max(1),
            acked: counter(ACKED)?,
            records: 0,
            bytes: 0,
            telemetry: VecDeque::new(),
            dropped: counter(DROPPED)?,
            corrupt: 0,
        };
        for item in tree.scan_prefix(b"r") {
            let (key, value) = item.map_err(|e| store.map_sled(e))?;
            let Some(seq) = seq_of(&key) else {
                state.corrupt += 1;
                continue;
            };
            let size = (key.len() + value.len()) as u64;
            state.records += 1;
            state.bytes += size;
            if value.first() == Some(&KIND_TELEMETRY) {
                state.telemetry.push_back((seq, size));
            }
            // Never hand out a sequence number that is on disk, whatever the counter says.
            state.next_seq = state.next_seq.max(seq + 1);
        }
        state.next_seq = state.next_seq.max(state.acked + 1);
        Ok(Self {
            store: store.clone(),
            tree,
            config,
            state: Mutex::new(state),
            pushed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a record and returns its sequence number once it is on disk.
    pub async fn push(&self, mut record: OutboxRecord) -> Result<u64, OutboxError> {
        let seq = {
            let mut state = self.lock();
            let seq = state.next_seq;
            if let OutboxRecord::Audit(audit) = &mut record {
                audit.seq = seq;
            }
            let kind = if matches!(record, OutboxRecord::Telemetry(_)) {
                KIND_TELEMETRY
            } else {
                KIND_OTHER
            };
            let mut value = vec![kind];
            rmp_serde::encode::write_named(&mut value, &record).map_err(|e| {
                StoreError::Encode {
                    what: "outbox record",
                    reason: e.to_string(),
                }
            })?;
            let key = record_key(seq);
            let size = (key.len() + value.len()) as u64;

            // Plan the drops first; state changes only after the batch is applied.
            let mut telemetry = state.telemetry.len() as u64;
            let mut bytes = state.bytes + size;
            if kind == KIND_TELEMETRY {
                telemetry += 1;
            }
            let mut drops = Vec::new();
            let mut candidates = state
                .telemetry
                .iter()
                .copied()
                .chain((kind == KIND_TELEMETRY).then_some((seq, size)));
            while telemetry > self.config.max_telemetry
                || (bytes > self.config.max_bytes && telemetry > 0)
            {
                let Some((old_seq, old_size)) = candidates.next() else {
                    break;
                };
                drops.push(old_seq);
                telemetry -= 1;
                bytes -= old_size;
            }
            let drops_self = drops.last() == Some(&seq);

            let mut batch = sled::Batch::default();
            if !drops_self {
                batch.insert(&key, value);
            }
            for old in &drops {
                if *old != seq {
                    batch.remove(&record_key(*old));
                }
            }
            batch.insert(NEXT_SEQ, &(seq + 1).to_be_bytes());
            if !drops.is_empty() {
                batch.insert(DROPPED, &(state.dropped + drops.len() as u64).to_be_bytes());
            }
            self.tree
                .apply_batch(batch)
                .map_err(|e| self.store.map_sled(e))?;

            state.next_seq = seq + 1;
            if !drops_self {
                state.records += 1;
                state.bytes += size;
                if kind == KIND_TELEMETRY {
                    state.telemetry.push_back((seq, size));
                }
            }
            for old in &drops {
                if *old == seq {
                    continue;
                }
                if let Some((_, old_size)) = state.telemetry.pop_front() {
                    state.records -= 1;
                    state.bytes -= old_size;
                }
            }
            if !drops.is_empty() {
                state.dropped += drops.len() as u64;
                tracing::warn!(
                    dropped = drops.len(),
                    total_dropped = state.dropped,
                    "outbox over its cap: dropped the oldest telemetry"
                );
            }
            seq
        };
        self.store.commit().await?;
        self.pushed.notify_waiters();
        Ok(seq)
    }

    /// Up to `limit` records with sequence numbers above `after`, in order. Records that
    /// cannot be decoded are logged, counted and skipped.
    pub fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OutboxRecord)>, OutboxError> {
        let mut out = Vec::new();
        let start = record_key(after.saturating_add(1));
        for item in self.tree.range(start..) {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(|e| self.store.map_sled(e))?;
            let Some(seq) = seq_of(&key) else { break };
            match value
                .split_first()
                .map(|(_, body)| rmp_serde::from_slice::<OutboxRecord>(body))
            {
                Some(Ok(record)) => out.push((seq, record)),
                Some(Err(e)) => {
                    self.lock().corrupt += 1;
                    tracing::error!(seq, error = %e, "skipping a corrupt outbox record");
                }
                None => {
                    self.lock().corrupt += 1;
                    tracing::error!(seq, "skipping an empty outbox record");
                }
            }
        }
        Ok(out)
    }

    /// Trims every record up to and including `upto` (the controller stored them).
    /// Returns how many were removed. Not committed: if it is lost in a crash, the records
    /// are sent again and the controller ignores the duplicates.
    pub fn ack(&self, upto: u64) -> Result<u64, OutboxError> {
        let mut state = self.lock();
        let last = state.next_seq - 1;
        if upto > last {
            return Err(OutboxError::AckBeyondEnd { upto, last });
        }
        if upto <= state.acked {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        let mut removed = 0u64;
        let mut bytes = 0u64;
        for item in self.tree.range(record_key(0)..=record_key(upto)) {
            let (key, value) = item.map_err(|e| self.store.map_sled(e))?;
            bytes += (key.len() + value.len()) as u64;
            batch.remove(key);
            removed += 1;
        }
        batch.insert(ACKED, &upto.to_be_bytes());
        self.tree
            .apply_batch(batch)
            .map_err(|e| self.store.map_sled(e))?;
        state.acked = upto;
        state.records -= removed;
        state.bytes -= bytes;
        while state.telemetry.front().is_some_and(|&(seq, _)| seq <= upto) {
            state.telemetry.pop_front();
        }
        Ok(removed)
    }

    /// Figures for `status` and the hello.
    pub fn stats(&self) -> OutboxStats {
        let state = self.lock();
        let near = self.config.max_bytes / 100 * u64::from(self.config.near_cap_percent);
        OutboxStats {
            last_seq: state.next_seq - 1,
            acked: state.acked,
            records: state.records,
            bytes: state.bytes,
            telemetry: state.telemetry.len() as u64,
            dropped_telemetry: state.dropped,
            corrupt: state.corrupt,
            near_cap: state.bytes >= near,
        }
    }

    /// Signalled after every push, for the uplink to send without polling.
    pub fn pushed_signal(&self) -> &Notify {
        &self.pushed
    }
}
