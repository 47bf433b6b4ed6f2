//! The durable outbox: records for the controller, in order, until it acknowledges them.
//!
//! Every [`OutboxRecord`] (audit, job updates, telemetry, drift, apply reports) gets the next
//! sequence number (from 1, never reused, also across restarts and after everything was
//! trimmed) and is committed (group commit, see [`store`](crate::store)) before
//! [`Outbox::push`] returns ([`Outbox::append`] then [`Outbox::commit`] do the same for many
//! records with one commit). The uplink reads from its position with [`Outbox::read_after`]
//! and trims with [`Outbox::ack`] once the controller has stored the records. An audit
//! record's own `seq` field is set to the sequence number that carries it.
//!
//! Caps: above [`OutboxConfig::max_telemetry`] telemetry records, or above
//! [`OutboxConfig::max_bytes`], the oldest *telemetry* records are dropped (and counted);
//! audit records, job updates, drift and apply reports are never dropped, so the outbox may
//! exceed `max_bytes` with them alone. [`OutboxStats::near_cap`] turns on at
//! [`OutboxConfig::near_cap_percent`] of `max_bytes`, for an alert.
//!
//! No holes: the controller's [`DurableStream`](tikfleet_shared::session::DurableStream)
//! treats a skipped seq as a protocol gap. A dropped telemetry record is therefore replaced
//! in place (same seq) by a tombstone, delivered as [`OutboxRecord::Dropped`] with
//! [`DropReason::Telemetry`]; a tombstone takes [`TOMBSTONE_BYTES`] toward `max_bytes` and
//! does not count as telemetry. [`Outbox::read_after`] likewise delivers a record that does
//! not decode as a [`DropReason::Corrupt`] tombstone, and a seq with nothing stored (left by
//! an agent from before tombstones) as a [`DropReason::Missing`] one, so the seqs it returns
//! above the ack are always contiguous.
//!
//! On disk (`outbox` tree): `r` + seq (u64 big-endian) → one kind byte (`1` telemetry, `2`
//! tombstone, `0` anything else, so trimming needs no decoding) + the body: MessagePack of the
//! record, or for a tombstone one reason byte (`0` telemetry, `1` corrupt, `2` missing);
//! `mnext_seq`, `macked`, `mdropped` → u64 big-endian counters, written in the same atomic
//! batch as the records they describe (drops, acks). A record without drops is written with
//! one plain insert, which is cheaper than a batch, and `mnext_seq` once per commit, before
//! the flush; open takes the largest of `mnext_seq`, the last stored seq + 1 and `macked` + 1,
//! so either one suffices.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Mutex, PoisonError};

use tikfleet_shared::ErrorCode;
use tikfleet_shared::record::{DropReason, OutboxRecord};
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
    /// Records waiting, tombstones included.
    pub records: u64,
    /// Bytes they take (keys and values).
    pub bytes: u64,
    /// Telemetry records among them (tombstones are not telemetry).
    pub telemetry: u64,
    /// Telemetry records dropped (replaced by tombstones) because of the caps, ever.
    pub dropped_telemetry: u64,
    /// Stored records that could not be decoded and were read back as tombstones, since the
    /// outbox was opened (each counted once).
    pub corrupt: u64,
    /// Whether the outbox uses at least `near_cap_percent` of `max_bytes`.
    pub near_cap: bool,
    /// The byte cap, [`OutboxConfig::max_bytes`] (sent in the host sample for the
    /// controller's `outbox_near_cap` alert).
    pub max_bytes: u64,
}

const TREE: &str = "outbox";
const NEXT_SEQ: &[u8] = b"mnext_seq";
const ACKED: &[u8] = b"macked";
const DROPPED: &[u8] = b"mdropped";
const KIND_OTHER: u8 = 0;
const KIND_TELEMETRY: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;

/// What a tombstone takes toward [`OutboxConfig::max_bytes`]: its key and two bytes.
pub const TOMBSTONE_BYTES: u64 = 11;

const fn reason_byte(reason: DropReason) -> u8 {
    match reason {
        DropReason::Telemetry => 0,
        DropReason::Corrupt => 1,
        DropReason::Missing => 2,
    }
}

fn reason_of(byte: u8) -> Option<DropReason> {
    DropReason::ALL
        .into_iter()
        .find(|reason| reason_byte(*reason) == byte)
}

fn tombstone(reason: DropReason) -> [u8; 2] {
    [KIND_TOMBSTONE, reason_byte(reason)]
}

/// Encodes a record for the tree: its kind byte and body.
fn encode_value(record: &OutboxRecord) -> Result<Vec<u8>, StoreError> {
    let kind = match record {
        OutboxRecord::Dropped { reason } => return Ok(tombstone(*reason).to_vec()),
        OutboxRecord::Telemetry(_) => KIND_TELEMETRY,
        _ => KIND_OTHER,
    };
    let mut value = vec![kind];
    rmp_serde::encode::write_named(&mut value, record).map_err(|e| StoreError::Encode {
        what: "outbox record",
        reason: e.to_string(),
    })?;
    Ok(value)
}

/// Decodes a stored value; `None` if it is corrupt.
fn decode_value(value: &[u8]) -> Option<OutboxRecord> {
    match value.split_first()? {
        (&KIND_TOMBSTONE, [reason]) => reason_of(*reason).map(OutboxRecord::dropped),
        (&KIND_TOMBSTONE, _) => None,
        (_, body) => rmp_serde::from_slice(body).ok(),
    }
}

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
    /// The value of `mnext_seq` last written (written at commit, not per record).
    counter_written: u64,
    /// Every seq up to this one is committed to disk; only those are read back, so a seq the
    /// controller has seen can never be reused for another record after a crash.
    durable_upto: u64,
    acked: u64,
    records: u64,
    bytes: u64,
    /// (seq, bytes) of each telemetry record, oldest first.
    telemetry: VecDeque<(u64, u64)>,
    dropped: u64,
    /// Seqs of the undecodable records counted in `corrupt` (trimmed on ack).
    corrupt_seqs: BTreeSet<u64>,
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
        let written = counter(NEXT_SEQ)?;
        let mut state = State {
            next_seq: written.max(1),
            counter_written: written,
            durable_upto: 0,
            acked: counter(ACKED)?,
            records: 0,
            bytes: 0,
            telemetry: VecDeque::new(),
            dropped: counter(DROPPED)?,
            corrupt_seqs: BTreeSet::new(),
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
        // What a fresh open finds on disk is, by definition, durable.
        state.durable_upto = state.next_seq - 1;
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
    ///
    /// If the caps drop telemetry, the oldest telemetry records (possibly `record` itself)
    /// are replaced by tombstones under their seqs, in the same atomic batch.
    pub async fn push(&self, record: OutboxRecord) -> Result<u64, OutboxError> {
        let seq = self.append(record)?;
        self.commit_upto(seq).await?;
        Ok(seq)
    }

    /// Writes a record and returns its sequence number *without* waiting for it to be on
    /// disk: it is not durable, and not readable with [`Outbox::read_after`], until a later
    /// [`Outbox::commit`] returns. For writers of many records (the audit writer), so that a
    /// batch costs one commit instead of one per record. Drops for the caps as in
    /// [`Outbox::push`].
    pub fn append(&self, mut record: OutboxRecord) -> Result<u64, OutboxError> {
        self.append_mut(&mut record)
    }

    /// Like [`Outbox::append`], for a writer that keeps the record (to retry it when the
    /// store fails) without copying it; an audit record's `seq` is set in place.
    pub fn append_mut(&self, record: &mut OutboxRecord) -> Result<u64, OutboxError> {
        let mut state = self.lock();
        let seq = state.next_seq;
        if let OutboxRecord::Audit(audit) = record {
            audit.seq = seq;
        }
        let value = encode_value(record)?;
        let is_telemetry = value.first() == Some(&KIND_TELEMETRY);
        let key = record_key(seq);
        let size = (key.len() + value.len()) as u64;

        // Plan the drops first; state changes only after the batch is applied. A dropped
        // record's bytes become a tombstone's; the loop ends as telemetry runs out.
        let mut telemetry = state.telemetry.len() as u64;
        let mut bytes = state.bytes + size;
        if is_telemetry {
            telemetry += 1;
        }
        let mut drops = Vec::new();
        let mut candidates = state
            .telemetry
            .iter()
            .copied()
            .chain(is_telemetry.then_some((seq, size)));
        while telemetry > self.config.max_telemetry
            || (bytes > self.config.max_bytes && telemetry > 0)
        {
            let Some((old_seq, old_size)) = candidates.next() else {
                break;
            };
            drops.push(old_seq);
            telemetry -= 1;
            bytes -= old_size.saturating_sub(TOMBSTONE_BYTES);
        }
        let drops_self = drops.last() == Some(&seq);

        if drops.is_empty() {
            // The common case: one plain insert, not a batch. A sled batch writes out its log
            // buffer before and after (two synchronous disk writes per record, which bounded
            // the executor's jobs per second). The counter is written once per commit
            // (`commit_upto`), not per record: open never reuses a seq without it (it takes
            // the largest of the counter, the last stored seq + 1 and the ack + 1).
            self.tree
                .insert(key, value)
                .map_err(|e| self.store.map_sled(e))?;
        } else {
            let mut batch = sled::Batch::default();
            let dropped_value = tombstone(DropReason::Telemetry);
            for old in &drops {
                batch.insert(&record_key(*old), &dropped_value);
            }
            if !drops_self {
                batch.insert(&key, value);
            }
            batch.insert(NEXT_SEQ, &(seq + 1).to_be_bytes());
            batch.insert(DROPPED, &(state.dropped + drops.len() as u64).to_be_bytes());
            self.tree
                .apply_batch(batch)
                .map_err(|e| self.store.map_sled(e))?;
            state.counter_written = seq + 1;
        }

        state.next_seq = seq + 1;
        state.records += 1;
        if drops_self {
            state.bytes += TOMBSTONE_BYTES;
        } else {
            state.bytes += size;
            if is_telemetry {
                state.telemetry.push_back((seq, size));
            }
        }
        for old in &drops {
            if *old == seq {
                continue;
            }
            // Drops are taken oldest first, so each is the front of the queue.
            if let Some((_, old_size)) = state.telemetry.pop_front() {
                state.bytes -= old_size.saturating_sub(TOMBSTONE_BYTES);
            }
        }
        if !drops.is_empty() {
            state.dropped += drops.len() as u64;
            tracing::warn!(
                dropped = drops.len(),
                total_dropped = state.dropped,
                "outbox over its cap: replaced the oldest telemetry by tombstones"
            );
        }
        Ok(seq)
    }

    /// Waits until every record appended so far is on disk (group commit); they are then
    /// readable with [`Outbox::read_after`].
    pub async fn commit(&self) -> Result<(), OutboxError> {
        let upto = self.lock().next_seq - 1;
        self.commit_upto(upto).await
    }

    /// Commits, then marks every seq up to `seq` (all written before this call) durable.
    async fn commit_upto(&self, seq: u64) -> Result<(), OutboxError> {
        {
            // The counter goes with the records it covers, once per commit.
            let mut state = self.lock();
            if state.counter_written < state.next_seq {
                self.tree
                    .insert(NEXT_SEQ, &state.next_seq.to_be_bytes())
                    .map_err(|e| self.store.map_sled(e))?;
                state.counter_written = state.next_seq;
            }
        }
        self.store.commit().await?;
        {
            // The flush that made `seq` durable started after every smaller seq was written
            // (seqs are assigned and written under the lock), so all of them are durable too.
            let mut state = self.lock();
            state.durable_upto = state.durable_upto.max(seq);
        }
        self.pushed.notify_waiters();
        Ok(())
    }

    /// Up to `limit` committed records with sequence numbers above `after` (and above the last
    /// ack), in order and contiguous: a record that cannot be decoded comes as a
    /// [`DropReason::Corrupt`] tombstone (logged and counted once), a seq with nothing stored
    /// as a [`DropReason::Missing`] one.
    pub fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OutboxRecord)>, OutboxError> {
        // Under the lock, every seq up to `last` is on the tree and none is being trimmed.
        // Only committed records are read: a pushed record is not sent until it is durable.
        let mut state = self.lock();
        let last = state.durable_upto;
        let mut expected = after.max(state.acked).saturating_add(1);
        let mut out = Vec::new();
        if expected > last || limit == 0 {
            return Ok(out);
        }
        let mut missing = 0u64;
        for item in self.tree.range(record_key(expected)..=record_key(last)) {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(|e| self.store.map_sled(e))?;
            // A malformed key carries no seq; it cannot stand for one (counted on open).
            let Some(seq) = seq_of(&key) else { continue };
            while expected < seq && out.len() < limit {
                out.push((expected, OutboxRecord::dropped(DropReason::Missing)));
                missing += 1;
                expected += 1;
            }
            if out.len() >= limit {
                break;
            }
            let record = decode_value(&value).unwrap_or_else(|| {
                if state.corrupt_seqs.insert(seq) {
                    state.corrupt += 1;
                    tracing::error!(seq, "a corrupt outbox record goes out as a tombstone");
                }
                OutboxRecord::dropped(DropReason::Corrupt)
            });
            out.push((seq, record));
            expected = seq + 1;
        }
        while expected <= last && out.len() < limit {
            out.push((expected, OutboxRecord::dropped(DropReason::Missing)));
            missing += 1;
            expected += 1;
        }
        if missing > 0 {
            tracing::warn!(
                missing,
                "outbox seqs with nothing stored go out as tombstones"
            );
        }
        Ok(out)
    }

    /// Trims every record up to and including `upto` (the controller stored them).
    /// Returns how many were removed. Not committed: if it is lost in a crash, the records
    /// are sent again and the controller ignores the duplicates.
    pub fn ack(&self, upto: u64) -> Result<u64, OutboxError> {
        let mut state = self.lock();
        // Nothing beyond the committed records was ever sent, so nothing beyond can be acked.
        let last = state.durable_upto;
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
        state.corrupt_seqs = state.corrupt_seqs.split_off(&(upto + 1));
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
            max_bytes: self.config.max_bytes,
        }
    }

    /// Signalled after every push, for the uplink to send without polling.
    pub fn pushed_signal(&self) -> &Notify {
        &self.pushed
    }
}
