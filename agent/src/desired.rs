//! Desired state per router, as the controller sent it: stored before it is acknowledged,
//! the highest generation kept.
//!
//! The uplink [`put`](DesiredStore::put)s each `desired_state` it receives and commits
//! (group commit) before acking; an older or equal generation than the one stored changes
//! nothing, so a redelivery is harmless, and a stored one wakes the reconciler
//! ([`changed`](DesiredStore::changed)). The [reconciler](crate::reconcile) reads
//! [`get`](DesiredStore::get), and when a pass over a generation finished it records the
//! state it applied ([`set_applied`](DesiredStore::set_applied)): the next pass compares
//! with it to tell what staff changed from what drifted on the router.
//! [`generations`](DesiredStore::generations) is what the hello reports, so the controller
//! sends only newer states after a reconnect.
//!
//! On disk (`desired` tree): `d` + 16 router id bytes → MessagePack `DesiredState` (the wire
//! encoding, named fields); `g` + id → stored generation (u64 big-endian); `a` + id → applied
//! generation; `p` + id → the applied state; `j` + id → the pass journal (items added
//! without their marker, MessagePack); `l` + id → the phase map (the lifecycle phase each
//! subscriber last had applied on the router, when not active: MessagePack array of
//! `[subscriber id, phase, expires_at]`). A state and its `g` key change in one sled
//! transaction.

use std::collections::{HashMap, HashSet};

use sled::transaction::ConflictableTransactionError;
use tikfleet_shared::domain::{DesiredState, ItemRef, LifecyclePhase};
use tikfleet_shared::protocol::RouterGenerations;
use tikfleet_shared::{RouterId, SubscriberId, UnixMillis};

use crate::store::{Store, StoreError, TreeName};

const TREE: &str = "desired";

fn key(prefix: u8, router: RouterId) -> [u8; 17] {
    let mut key = [prefix; 17];
    key[1..].copy_from_slice(router.as_bytes());
    key
}

fn router_of(key: &[u8]) -> Option<RouterId> {
    <[u8; 16]>::try_from(key.get(1..)?)
        .ok()
        .map(RouterId::from_bytes)
}

fn number(bytes: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes)
}

/// A subscriber's lifecycle phase as a pass applied it on a router: the phase, and the
/// expiry it follows from (a renewal makes a new one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppliedPhase {
    /// Grace or suspended (active subscribers are not in a phase map).
    pub phase: LifecyclePhase,
    /// The expiry the phase follows from.
    pub expires_at: UnixMillis,
}

/// Per subscriber, the non-active lifecycle phase last applied on a router.
pub type PhaseMap = HashMap<SubscriberId, AppliedPhase>;

/// The desired-state store.
#[derive(Debug)]
pub struct DesiredStore {
    store: Store,
    tree: sled::Tree,
    changed: tokio::sync::Notify,
    /// Counts stored states since the agent started ([`epoch`](DesiredStore::epoch)).
    epoch: std::sync::atomic::AtomicU64,
    /// The epoch at which each router's current state was stored.
    stored_at: std::sync::Mutex<std::collections::HashMap<RouterId, u64>>,
}

impl DesiredStore {
    /// Opens it in `store`.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            tree: store.tree(TreeName::Desired)?,
            store: store.clone(),
            changed: tokio::sync::Notify::new(),
            epoch: std::sync::atomic::AtomicU64::new(1),
            stored_at: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Stores `state` if its generation is higher than the stored one; returns whether it
    /// did. Not committed: call [`Store::commit`] (or [`DesiredStore::store`]) before acking.
    pub fn put(&self, state: &DesiredState) -> Result<bool, StoreError> {
        let value = Self::encode(state, "desired state")?;
        let gkey = key(b'g', state.router_id);
        let dkey = key(b'd', state.router_id);
        let generation = state.generation;
        let result = self.tree.transaction(|tx| {
            let stored = tx.get(gkey)?.as_deref().and_then(number).unwrap_or(0);
            if generation <= stored {
                return Ok(false);
            }
            tx.insert(&gkey, &generation.to_be_bytes())?;
            tx.insert(&dkey, value.as_slice())?;
            Ok::<_, ConflictableTransactionError<()>>(true)
        });
        match result {
            Ok(stored) => {
                if stored {
                    let epoch = self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    self.stored_at
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(state.router_id, epoch);
                    self.changed.notify_waiters();
                    self.changed.notify_one();
                }
                Ok(stored)
            }
            Err(sled::transaction::TransactionError::Storage(e)) => Err(self.store.map_sled(e)),
            Err(sled::transaction::TransactionError::Abort(())) => Ok(false),
        }
    }

    /// [`put`](Self::put), then commit. Durable when it returns.
    pub async fn store(&self, state: &DesiredState) -> Result<bool, StoreError> {
        let stored = self.put(state)?;
        self.store.commit().await?;
        Ok(stored)
    }

    /// Notified whenever a newer state was stored.
    #[must_use]
    pub fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    /// A counter that moves each time a state is stored (in memory, from 1 at start). The
    /// reconciler compares it with the moments jobs ran: a job that ran after a router's
    /// state was stored carries newer intent than that state.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The [`epoch`](Self::epoch) at which `router`'s current state was stored (0: before
    /// this start).
    #[must_use]
    pub fn stored_epoch(&self, router: RouterId) -> u64 {
        self.stored_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&router)
            .copied()
            .unwrap_or(0)
    }

    /// Commits everything written so far (group commit).
    pub async fn commit(&self) -> Result<(), StoreError> {
        self.store.commit().await
    }

    fn read<T: serde::de::DeserializeOwned>(
        &self,
        key: [u8; 17],
        what: &str,
        router: RouterId,
    ) -> Result<Option<T>, StoreError> {
        let Some(bytes) = self.tree.get(key).map_err(|e| self.store.map_sled(e))? else {
            return Ok(None);
        };
        rmp_serde::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                tree: TREE,
                reason: format!("{what} of {router}: {e}"),
            })
    }

    fn encode<T: serde::Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, StoreError> {
        rmp_serde::to_vec_named(value).map_err(|e| StoreError::Encode {
            what,
            reason: e.to_string(),
        })
    }

    /// The stored desired state of `router`, if any.
    pub fn get(&self, router: RouterId) -> Result<Option<DesiredState>, StoreError> {
        self.read(key(b'd', router), "desired state", router)
    }

    /// The state the last finished pass applied to `router`, if any.
    pub fn applied_state(&self, router: RouterId) -> Result<Option<DesiredState>, StoreError> {
        self.read(key(b'p', router), "applied state", router)
    }

    /// Records that a pass finished applying `state` (its generation never goes down). Not
    /// committed.
    pub fn set_applied(&self, state: &DesiredState) -> Result<(), StoreError> {
        let router = state.router_id;
        if state.generation < self.applied_generation(router)? {
            return Ok(());
        }
        let value = Self::encode(state, "applied state")?;
        self.tree
            .insert(key(b'p', router), value)
            .map_err(|e| self.store.map_sled(e))?;
        self.tree
            .insert(key(b'a', router), &state.generation.to_be_bytes())
            .map_err(|e| self.store.map_sled(e))?;
        Ok(())
    }

    /// The generation the last finished pass applied to `router` (0: none).
    pub fn applied_generation(&self, router: RouterId) -> Result<u64, StoreError> {
        Ok(self
            .tree
            .get(key(b'a', router))
            .map_err(|e| self.store.map_sled(e))?
            .as_deref()
            .and_then(number)
            .unwrap_or(0))
    }

    /// Items a pass added without their marker and has not marked yet.
    pub fn journal(&self, router: RouterId) -> Result<HashSet<ItemRef>, StoreError> {
        Ok(self
            .read::<Vec<ItemRef>>(key(b'j', router), "pass journal", router)?
            .unwrap_or_default()
            .into_iter()
            .collect())
    }

    /// Replaces the pass journal of `router` (empty: removes it). Not committed.
    pub fn set_journal(&self, router: RouterId, items: &[ItemRef]) -> Result<(), StoreError> {
        let k = key(b'j', router);
        let res = if items.is_empty() {
            self.tree.remove(k).map(|_| ())
        } else {
            self.tree
                .insert(k, Self::encode(&items, "pass journal")?)
                .map(|_| ())
        };
        res.map_err(|e| self.store.map_sled(e))
    }

    /// The phase map of `router`: each subscriber's non-active lifecycle phase as the last
    /// pass that reported it applied it (the reconciler reports a transition when a
    /// subscriber's phase differs from it).
    pub fn phases(&self, router: RouterId) -> Result<PhaseMap, StoreError> {
        Ok(self
            .read::<Vec<(SubscriberId, LifecyclePhase, UnixMillis)>>(
                key(b'l', router),
                "phase map",
                router,
            )?
            .unwrap_or_default()
            .into_iter()
            .map(|(id, phase, expires_at)| (id, AppliedPhase { phase, expires_at }))
            .collect())
    }

    /// Replaces the phase map of `router` (empty: removes it). Not committed.
    pub fn set_phases(&self, router: RouterId, phases: &PhaseMap) -> Result<(), StoreError> {
        let k = key(b'l', router);
        let res = if phases.is_empty() {
            self.tree.remove(k).map(|_| ())
        } else {
            let entries: Vec<(SubscriberId, LifecyclePhase, UnixMillis)> = phases
                .iter()
                .map(|(id, p)| (*id, p.phase, p.expires_at))
                .collect();
            self.tree
                .insert(k, Self::encode(&entries, "phase map")?)
                .map(|_| ())
        };
        res.map_err(|e| self.store.map_sled(e))
    }

    /// Forgets everything about `router` (it was removed). Not committed.
    pub fn remove(&self, router: RouterId) -> Result<(), StoreError> {
        for prefix in [b'd', b'g', b'a', b'p', b'j', b'l'] {
            self.tree
                .remove(key(prefix, router))
                .map_err(|e| self.store.map_sled(e))?;
        }
        Ok(())
    }

    /// Stored and applied generation per router, for the hello.
    pub fn generations(&self) -> Result<Vec<RouterGenerations>, StoreError> {
        let mut out: Vec<RouterGenerations> = Vec::new();
        for item in self.tree.scan_prefix(b"g") {
            let (k, v) = item.map_err(|e| self.store.map_sled(e))?;
            let (Some(router_id), Some(stored)) = (router_of(&k), number(&v)) else {
                tracing::warn!("skipping a corrupt desired-state generation");
                continue;
            };
            let applied = self
                .tree
                .get(key(b'a', router_id))
                .map_err(|e| self.store.map_sled(e))?
                .as_deref()
                .and_then(number)
                .unwrap_or(0);
            out.push(RouterGenerations {
                router_id,
                stored,
                applied,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use tikfleet_shared::{TenantId, UnixMillis};

    use super::*;
    use crate::store::StoreConfig;

    fn state(router: RouterId, generation: u64) -> DesiredState {
        DesiredState {
            generation,
            tenant_id: TenantId::from_bytes([1; 16]),
            router_id: router,
            compiled_at: UnixMillis::EPOCH,
            profiles: vec![],
            ppp_secrets: vec![],
            hotspot_users: vec![],
            address_list_entries: vec![],
            lifecycles: vec![],
            drift: Default::default(),
        }
    }

    #[tokio::test]
    async fn keeps_the_highest_generation_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let r1 = RouterId::new();
        let r2 = RouterId::new();
        {
            let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
            let desired = DesiredStore::open(&store).unwrap();
            assert!(desired.store(&state(r1, 5)).await.unwrap());
            assert!(!desired.store(&state(r1, 5)).await.unwrap(), "same");
            assert!(!desired.store(&state(r1, 3)).await.unwrap(), "older");
            assert!(desired.store(&state(r2, 1)).await.unwrap());
            desired.set_applied(&state(r1, 4)).unwrap();
            desired.set_applied(&state(r1, 2)).unwrap();
            store.commit().await.unwrap();
        }
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let desired = DesiredStore::open(&store).unwrap();
        assert_eq!(desired.get(r1).unwrap().unwrap().generation, 5);
        assert_eq!(desired.applied_state(r1).unwrap().unwrap().generation, 4);
        let mut gens = desired.generations().unwrap();
        gens.sort_by_key(|g| g.stored);
        assert_eq!(
            gens,
            vec![
                RouterGenerations {
                    router_id: r2,
                    stored: 1,
                    applied: 0
                },
                RouterGenerations {
                    router_id: r1,
                    stored: 5,
                    applied: 4
                },
            ]
        );
        assert!(desired.get(RouterId::new()).unwrap().is_none());
    }

    #[tokio::test]
    async fn the_phase_map_survives_a_reopen_and_goes_with_its_router() {
        let dir = tempfile::tempdir().unwrap();
        let (r1, r2) = (RouterId::new(), RouterId::new());
        let map: PhaseMap = (0..3u8)
            .map(|i| {
                let phase = if i == 0 {
                    LifecyclePhase::Suspended
                } else {
                    LifecyclePhase::Grace
                };
                (
                    SubscriberId::from_bytes([i; 16]),
                    AppliedPhase {
                        phase,
                        expires_at: UnixMillis(1_000 + i64::from(i)),
                    },
                )
            })
            .collect();
        {
            let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
            let desired = DesiredStore::open(&store).unwrap();
            assert!(desired.phases(r1).unwrap().is_empty());
            desired.set_phases(r1, &map).unwrap();
            desired.set_phases(r2, &map).unwrap();
            store.commit().await.unwrap();
        }
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let desired = DesiredStore::open(&store).unwrap();
        assert_eq!(desired.phases(r1).unwrap(), map);
        desired.set_phases(r1, &PhaseMap::new()).unwrap();
        assert!(desired.phases(r1).unwrap().is_empty(), "empty removes it");
        desired.remove(r2).unwrap();
        assert!(
            desired.phases(r2).unwrap().is_empty(),
            "removed with the router"
        );
    }
}
