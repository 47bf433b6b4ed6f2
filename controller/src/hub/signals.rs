//! How the rest of the controller tells a connected agent's session that something changed:
//! the API commits a change, then calls [`AgentSignals::changed`] for the agent that serves the
//! router; the session re-reads what to push. A revocation reaches a live session the same way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tikfleet_shared::AgentId;
use tokio::sync::watch;

/// What a session watches: a change counter and whether the agent was revoked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Signal {
    /// Bumped on every change for the agent.
    pub changes: u64,
    /// The agent was revoked: close at once.
    pub revoked: bool,
}

/// One watch channel per agent, created on first use. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct AgentSignals {
    agents: Arc<Mutex<HashMap<AgentId, watch::Sender<Signal>>>>,
}

impl AgentSignals {
    fn with<R>(&self, agent: AgentId, f: impl FnOnce(&watch::Sender<Signal>) -> R) -> R {
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        let tx = agents
            .entry(agent)
            .or_insert_with(|| watch::channel(Signal::default()).0);
        f(tx)
    }

    /// Something to push for `agent` was committed.
    pub fn changed(&self, agent: AgentId) {
        self.with(agent, |tx| tx.send_modify(|s| s.changes += 1));
    }

    /// `agent` was revoked.
    pub fn revoked(&self, agent: AgentId) {
        self.with(agent, |tx| tx.send_modify(|s| s.revoked = true));
    }

    /// Watch `agent`'s signal (a session calls this before its first read of the store, so no
    /// change is missed between the read and the watch).
    #[must_use]
    pub fn subscribe(&self, agent: AgentId) -> watch::Receiver<Signal> {
        self.with(agent, watch::Sender::subscribe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_wakes_the_watcher() {
        let signals = AgentSignals::default();
        let agent = AgentId::new();
        let mut rx = signals.subscribe(agent);
        signals.changed(agent);
        tokio::time::timeout(std::time::Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rx.borrow_and_update().changes, 1);
        signals.revoked(agent);
        assert!(rx.borrow().revoked);
    }
}
