//! Which agents are connected, one connection per agent.
//!
//! A connection that completes its hello [`claim`](Connections::claim)s its agent's slot; an
//! older connection of the same agent is told to close (`superseded`). Claiming and releasing
//! take a per-agent async lock that the connection holds while it tells the store
//! (`agent_connected` / `agent_disconnected`), so those calls for one agent never overtake
//! each other: the store never ends up saying "disconnected" while a newer connection is up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tikfleet_shared::AgentId;
use tokio::sync::{OwnedMutexGuard, oneshot, watch};

#[derive(Debug, Default)]
struct Slot {
    /// The current connection's id and how to tell it that it was superseded.
    current: Option<(u64, oneshot::Sender<()>)>,
    /// Serializes claim/release of this agent with the store calls that follow them.
    lock: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Default)]
struct Inner {
    slots: Mutex<HashMap<AgentId, Slot>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// The live connections of a hub. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Connections {
    inner: Arc<Inner>,
    changes: watch::Sender<u64>,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            changes: watch::channel(0).0,
        }
    }
}

/// A claimed slot: the agent's bookkeeping lock is held until this is dropped.
#[derive(Debug)]
pub(crate) struct Claim {
    /// Completes when a newer connection of the agent takes over.
    pub superseded: oneshot::Receiver<()>,
    /// Held while the store is told about the connection.
    pub guard: OwnedMutexGuard<()>,
}

impl Connections {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, Slot>> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh connection id.
    pub(crate) fn next_id(&self) -> u64 {
        self.inner
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    async fn lock_agent(&self, agent: AgentId) -> OwnedMutexGuard<()> {
        let lock = Arc::clone(&self.slots().entry(agent).or_default().lock);
        lock.lock_owned().await
    }

    /// Makes `conn` the agent's connection, superseding the previous one.
    pub(crate) async fn claim(&self, agent: AgentId, conn: u64) -> Claim {
        let guard = self.lock_agent(agent).await;
        let (tx, superseded) = oneshot::channel();
        let previous = self
            .slots()
            .entry(agent)
            .or_default()
            .current
            .replace((conn, tx));
        if let Some((_, old)) = previous {
            let _ = old.send(());
        }
        self.changes.send_modify(|n| *n += 1);
        Claim { superseded, guard }
    }

    /// Gives up the agent's slot if `conn` still holds it. Returns the held bookkeeping lock
    /// when it did (the caller then tells the store), `None` when a newer connection took over.
    pub(crate) async fn release(&self, agent: AgentId, conn: u64) -> Option<OwnedMutexGuard<()>> {
        let guard = self.lock_agent(agent).await;
        let mut slots = self.slots();
        let slot = slots.get_mut(&agent)?;
        if slot.current.as_ref().is_some_and(|(id, _)| *id == conn) {
            slot.current = None;
            drop(slots);
            self.changes.send_modify(|n| *n += 1);
            Some(guard)
        } else {
            None
        }
    }

    /// Forgets the slot of an agent with no connection, once nobody waits on its lock.
    pub(crate) fn tidy(&self, agent: AgentId) {
        let mut slots = self.slots();
        if let Some(slot) = slots.get(&agent)
            && slot.current.is_none()
            && Arc::strong_count(&slot.lock) == 1
        {
            slots.remove(&agent);
        }
    }

    /// Whether `agent` has a live (welcomed) connection.
    #[must_use]
    pub fn is_connected(&self, agent: AgentId) -> bool {
        self.slots()
            .get(&agent)
            .is_some_and(|slot| slot.current.is_some())
    }

    /// The agents with a live connection.
    #[must_use]
    pub fn connected(&self) -> Vec<AgentId> {
        self.slots()
            .iter()
            .filter(|(_, slot)| slot.current.is_some())
            .map(|(agent, _)| *agent)
            .collect()
    }

    /// A counter bumped whenever an agent connects or disconnects (to wait on, not poll).
    #[must_use]
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_newer_connection_supersedes_and_the_older_release_is_a_no_op() {
        let conns = Connections::default();
        let agent = AgentId::new();
        let first = conns.claim(agent, 1).await;
        drop(first.guard);
        assert!(conns.is_connected(agent));
        let second = conns.claim(agent, 2).await;
        drop(second.guard);
        first.superseded.await.expect("told it was superseded");
        assert!(conns.release(agent, 1).await.is_none(), "not current");
        assert!(conns.is_connected(agent));
        assert!(conns.release(agent, 2).await.is_some());
        assert!(!conns.is_connected(agent));
        conns.tidy(agent);
        assert!(conns.connected().is_empty());
        assert!(conns.slots().is_empty());
    }
}
