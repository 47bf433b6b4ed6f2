//! The command observer: every command the driver sends, success or failure, is reported to
//! a [`CommandObserver`] so it can be audited.
//!
//! The durable outbox will implement the trait (turning [`CommandEvent`]s into
//! `AuditRecord`s); [`MemoryObserver`] keeps events in memory for tests. Parameters are
//! [`AuditParams`], which redact `password` and anything secret-looking, so an observer never
//! sees a secret.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tikfleet_shared::record::{AuditParams, AuditStatus};
use tikfleet_shared::{ErrorInfo, RouterId, TenantId, UnixMillis};

/// One command the driver sent, as the audit log keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandEvent {
    /// The router.
    pub router_id: RouterId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The command word, e.g. `/ppp/secret/set` (`/login` for logins).
    pub action: String,
    /// Attributes (`name`), API attributes (`.id`, `.proplist`) and queries (`?name`),
    /// secrets redacted.
    pub params: AuditParams,
    /// Outcome.
    pub status: AuditStatus,
    /// The error, when it failed.
    pub error: Option<ErrorInfo>,
    /// When it started (the injectable clock).
    pub started_at: UnixMillis,
    /// How long it took.
    pub duration: Duration,
}

/// Receives every command the driver sends. Called on the driver's task: keep it quick.
pub trait CommandObserver: Send + Sync {
    /// One command finished (or failed).
    fn observe(&self, ev: &CommandEvent);

    /// The same, for an observer that keeps the event: the driver calls this one, so an
    /// observer that overrides it takes the event's strings without copying them.
    fn observe_owned(&self, ev: CommandEvent) {
        self.observe(&ev);
    }
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl CommandObserver for NoopObserver {
    fn observe(&self, _ev: &CommandEvent) {}
}

/// Keeps every event in memory (tests).
#[derive(Debug, Default, Clone)]
pub struct MemoryObserver {
    events: Arc<Mutex<Vec<CommandEvent>>>,
}

impl MemoryObserver {
    /// An empty recorder.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything observed so far.
    #[must_use]
    pub fn events(&self) -> Vec<CommandEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets everything observed so far.
    pub fn clear(&self) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl CommandObserver for MemoryObserver {
    fn observe(&self, ev: &CommandEvent) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ev.clone());
    }
}
