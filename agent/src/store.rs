//! The agent's durable store: one sled database in the data folder, one tree per concern.
//!
//! [`Store`] owns the database and hands its trees to the modules that give them meaning:
//! [`queue`](crate::queue) (jobs), [`outbox`](crate::outbox) (records for the controller),
//! [`registry`](crate::registry) (routers and their sealed passwords), and later the desired
//! state and SSH host keys. Nothing outside those modules sees a sled type: [`Store::tree`] is
//! crate-private and the modules expose domain types only.
//!
//! # Durability: group commit
//!
//! A write in sled is in memory until the log is flushed. A writer whose caller is about to be
//! told "stored" (an acknowledged job, an outbox record) awaits [`Store::commit`], which
//! returns once a flush that *started after the caller's write* has finished. Concurrent
//! committers share flushes: each takes a ticket (a counter bumped under a lock); a single
//! flusher task takes the highest ticket issued so far as its target, flushes, publishes "done
//! up to target" on a `watch` channel, and loops while newer tickets wait. Everyone whose
//! ticket is at most the target wrote before that flush began, so their writes are on disk
//! when it ends: a burst of N enqueues costs one or two fsyncs, and "acknowledged ⇒ durable"
//! still holds. The flusher is a spawned task, so a committer that is cancelled mid-wait
//! cannot strand the others.
//!
//! # Room
//!
//! [`Store::check_room`] refuses *new* work (jobs) when the database is over its configured
//! size cap or the disk has reported ENOSPC, with [`StoreError::code`] =
//! [`ErrorCode::StorageFull`]. Work already accepted keeps moving: status changes and outbox
//! records are still written (until the disk itself refuses).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tikfleet_shared::ErrorCode;
use tokio::sync::watch;

/// The trees of the store, one per concern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TreeName {
    /// Desired state per router (reconciler).
    Desired,
    /// Jobs and their idempotency keys ([`queue`](crate::queue)).
    Jobs,
    /// Outbox records and the outbox's counters ([`outbox`](crate::outbox)).
    Outbox,
    /// Routers with sealed passwords ([`registry`](crate::registry)).
    Routers,
    /// Small agent-wide values (identity, positions).
    Meta,
    /// Known SSH host keys of routers.
    HostKeys,
}

impl TreeName {
    /// Every tree.
    pub const ALL: [TreeName; 6] = [
        Self::Desired,
        Self::Jobs,
        Self::Outbox,
        Self::Routers,
        Self::Meta,
        Self::HostKeys,
    ];

    /// The sled tree name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Desired => "desired",
            Self::Jobs => "jobs",
            Self::Outbox => "outbox",
            Self::Routers => "routers",
            Self::Meta => "meta",
            Self::HostKeys => "hostkeys",
        }
    }
}

/// An error of the durable store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store is larger than its configured cap; new work is refused.
    #[error(
        "storage full: the store uses {size} bytes, over its cap of {cap} bytes; free disk space, wait for the outbox to drain, or raise the store size cap"
    )]
    OverCap {
        /// Bytes on disk now.
        size: u64,
        /// The configured cap.
        cap: u64,
    },
    /// The disk holding the store has no space left (ENOSPC).
    #[error("storage full: no space left on the device holding {path}")]
    DiskFull {
        /// The store's folder.
        path: PathBuf,
    },
    /// The store could not be opened (in use by another agent, permissions, bad path).
    #[error("cannot open the store at {path}: {reason}")]
    Open {
        /// The store's folder.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Reading or writing the database failed.
    #[error("store i/o error: {reason}")]
    Io {
        /// What went wrong.
        reason: String,
    },
    /// A record on disk could not be decoded; it is skipped and reported, never trusted.
    #[error("corrupt record in the {tree} tree: {reason}")]
    Corrupt {
        /// The tree.
        tree: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A value could not be encoded for storage (a bug).
    #[error("cannot encode a {what} for storage: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's complaint.
        reason: String,
    },
}

impl StoreError {
    /// The shared error code for this error.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::OverCap { .. } | Self::DiskFull { .. } => ErrorCode::StorageFull,
            Self::Open { .. } => ErrorCode::Unavailable,
            Self::Io { .. } | Self::Corrupt { .. } | Self::Encode { .. } => ErrorCode::Internal,
        }
    }

    /// Whether this is one of the "storage full" errors.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.code() == ErrorCode::StorageFull
    }
}

/// Whether an I/O error means the disk is full.
fn is_enospc(e: &io::Error) -> bool {
    const ENOSPC: i32 = 28;
    e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(ENOSPC)
}

/// How to open the store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The folder holding the sled files (created if missing).
    pub path: PathBuf,
    /// Refuse new jobs when the files take more than this many bytes. `None`: no cap.
    pub max_bytes: Option<u64>,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
}

impl StoreConfig {
    /// A config for `path` with no size cap and a 64 MiB cache.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_bytes: None,
            cache_bytes: 64 * 1024 * 1024,
        }
    }

    /// Sets the size cap.
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = Some(max_bytes);
        self
    }
}

/// Size figures for `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreStats {
    /// Bytes the database takes on disk.
    pub size_on_disk: u64,
    /// The configured cap, if any.
    pub max_bytes: Option<u64>,
    /// Whether the disk reported ENOSPC since the last successful flush.
    pub disk_full: bool,
    /// Flushes done by group commit since open.
    pub flushes: u64,
}

/// The outcome of one flush, as the flusher publishes it.
#[derive(Clone, Debug)]
struct Flushed {
    /// Every ticket up to this one is covered.
    upto: u64,
    /// `None` if the flush succeeded, else its error as text plus whether it was ENOSPC.
    failed: Option<(String, bool)>,
}

#[derive(Debug, Default)]
struct CommitState {
    /// The last ticket handed out.
    issued: u64,
    /// Whether a flusher task is running.
    flushing: bool,
}

#[derive(Debug)]
struct Inner {
    db: sled::Db,
    path: PathBuf,
    max_bytes: Option<u64>,
    commit: Arc<Commit>,
}

/// Group-commit bookkeeping, shared with the flusher task. It holds no database handle, so
/// once a flush is published nothing but the `Store` clones keeps the database open (a
/// reopen in the same process finds the lock free).
#[derive(Debug)]
struct Commit {
    path: PathBuf,
    state: Mutex<CommitState>,
    done: watch::Sender<Flushed>,
    flushes: AtomicU64,
    disk_full: AtomicBool,
}

/// The agent's durable store. Cheap to clone; all clones share one database.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (or creates) the store in `config.path`.
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: config.path.clone(),
            reason,
        };
        std::fs::create_dir_all(&config.path).map_err(|e| open_err(e.to_string()))?;
        let db = open_db(config).map_err(|e| open_err(e.to_string()))?;
        for tree in TreeName::ALL {
            db.open_tree(tree.as_str())
                .map_err(|e| open_err(e.to_string()))?;
        }
        let (done, _) = watch::channel(Flushed {
            upto: 0,
            failed: None,
        });
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path: config.path.clone(),
                max_bytes: config.max_bytes,
                commit: Arc::new(Commit {
                    path: config.path.clone(),
                    state: Mutex::new(CommitState::default()),
                    done,
                    flushes: AtomicU64::new(0),
                    disk_full: AtomicBool::new(false),
                }),
            }),
        })
    }

    /// The folder the store lives in.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// One tree of the store (crate-private: the rest of the agent never sees sled).
    pub(crate) fn tree(&self, name: TreeName) -> Result<sled::Tree, StoreError> {
        self.inner
            .db
            .open_tree(name.as_str())
            .map_err(|e| self.map_sled(e))
    }

    /// Maps a sled error, noting a full disk so [`Store::check_room`] refuses new work.
    pub(crate) fn map_sled(&self, e: sled::Error) -> StoreError {
        match e {
            sled::Error::Io(io) if is_enospc(&io) => {
                self.inner.commit.disk_full.store(true, Ordering::SeqCst);
                StoreError::DiskFull {
                    path: self.inner.path.clone(),
                }
            }
            sled::Error::Corruption { .. } => StoreError::Corrupt {
                tree: "(log)",
                reason: e.to_string(),
            },
            other => StoreError::Io {
                reason: other.to_string(),
            },
        }
    }

    /// Waits until everything written before this call is on disk (group commit).
    pub async fn commit(&self) -> Result<(), StoreError> {
        let mut rx = self.inner.commit.done.subscribe();
        let ticket = {
            let mut state = self
                .inner
                .commit
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            state.issued += 1;
            if !state.flushing {
                state.flushing = true;
                tokio::spawn(flusher(
                    Arc::clone(&self.inner.commit),
                    Arc::downgrade(&self.inner),
                ));
            }
            state.issued
        };
        let flushed = rx
            .wait_for(|f| f.upto >= ticket)
            .await
            .map_err(|_| StoreError::Io {
                reason: "the store was closed while committing".to_owned(),
            })?
            .clone();
        match flushed.failed {
            None => Ok(()),
            Some((_, true)) => Err(StoreError::DiskFull {
                path: self.inner.path.clone(),
            }),
            Some((reason, false)) => Err(StoreError::Io { reason }),
        }
    }

    /// Refuses new work when the store is over its cap or the disk is full.
    pub fn check_room(&self) -> Result<(), StoreError> {
        if self.inner.commit.disk_full.load(Ordering::SeqCst) {
            return Err(StoreError::DiskFull {
                path: self.inner.path.clone(),
            });
        }
        if let Some(cap) = self.inner.max_bytes {
            let size = self.size_on_disk()?;
            if size > cap {
                return Err(StoreError::OverCap { size, cap });
            }
        }
        Ok(())
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.db.size_on_disk().map_err(|e| self.map_sled(e))
    }

    /// Figures for `status`.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        Ok(StoreStats {
            size_on_disk: self.size_on_disk()?,
            max_bytes: self.inner.max_bytes,
            disk_full: self.inner.commit.disk_full.load(Ordering::SeqCst),
            flushes: self.flush_count(),
        })
    }

    /// Flushes done by group commit since open (for tests and benchmarks).
    #[must_use]
    pub fn flush_count(&self) -> u64 {
        self.inner.commit.flushes.load(Ordering::SeqCst)
    }
}

/// How long `open` waits for another holder of the data folder's lock to let go.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens sled, waiting a little while the folder's lock is held: sled's own background
/// threads of a store just closed (or an agent process that is exiting) release it moments
/// later. A lock still held after [`LOCK_WAIT`] is reported: another process uses the folder.
fn open_db(config: &StoreConfig) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_bytes)
            .open()
        {
            // sled reports the held lock as an `Other` error carrying the OS's WouldBlock.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Resets `flushing` if the flusher task is dropped (runtime shutdown) so that the next
/// committer starts a new one.
struct FlushingGuard<'a> {
    commit: &'a Commit,
    armed: bool,
}

impl Drop for FlushingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.commit
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .flushing = false;
        }
    }
}

/// The group-commit flusher: flush up to the newest ticket, publish, repeat while needed.
///
/// It reaches the database only through a weak handle, upgraded just long enough to take a
/// clone for one blocking flush; the clone is dropped inside the blocking task, before the
/// result is published, so a committer that returns and drops its `Store` really closes it.
async fn flusher(commit: Arc<Commit>, store: Weak<Inner>) {
    let mut guard = FlushingGuard {
        commit: &commit,
        armed: true,
    };
    loop {
        let target = {
            let mut state = commit.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.issued <= commit.done.borrow().upto {
                state.flushing = false;
                guard.armed = false;
                return;
            }
            state.issued
        };
        let db = store.upgrade().map(|inner| inner.db.clone());
        let result = match db {
            Some(db) => tokio::task::spawn_blocking(move || db.flush().map(|_| ())).await,
            // Every Store is gone, so nobody waits; what was written stays as sled left it.
            None => Ok(Err(sled::Error::Io(io::Error::other(
                "the store was closed",
            )))),
        };
        commit.flushes.fetch_add(1, Ordering::SeqCst);
        let failed = match result {
            Ok(Ok(())) => {
                commit.disk_full.store(false, Ordering::SeqCst);
                None
            }
            Ok(Err(sled::Error::Io(e))) if is_enospc(&e) => {
                commit.disk_full.store(true, Ordering::SeqCst);
                tracing::error!(path = %commit.path.display(), "store flush failed: disk full");
                Some((e.to_string(), true))
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "store flush failed");
                Some((e.to_string(), false))
            }
            Err(e) => Some((format!("flush task failed: {e}"), false)),
        };
        commit.done.send_modify(|f| {
            if target > f.upto {
                *f = Flushed {
                    upto: target,
                    failed,
                };
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_is_storage_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let err = store.map_sled(sled::Error::Io(io::Error::from_raw_os_error(28)));
        assert_eq!(err.code(), ErrorCode::StorageFull);
        assert!(err.to_string().starts_with("storage full"), "{err}");
        assert!(store.check_room().unwrap_err().is_full());
        let other = store.map_sled(sled::Error::Io(io::Error::other("boom")));
        assert_eq!(other.code(), ErrorCode::Internal);
    }

    #[test]
    fn a_folder_held_by_another_store_is_refused_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path());
        let held = Store::open(&config).unwrap();
        let err = Store::open(&config).unwrap_err();
        assert!(err.to_string().contains("could not acquire lock"), "{err}");
        drop(held);
        // Released once the holder is gone (the open waits out sled's background threads).
        Store::open(&config).expect("reopens once the first store is dropped");
    }

    #[test]
    fn every_tree_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let names: Vec<_> = store
            .inner
            .db
            .tree_names()
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .collect();
        for tree in TreeName::ALL {
            assert!(names.iter().any(|n| n == tree.as_str()), "{tree:?}");
        }
    }
}
