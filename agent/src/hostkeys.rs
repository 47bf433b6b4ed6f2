//! Pinned SSH host keys, kept in the store's `hostkeys` tree: the durable [`HostKeyStore`]
//! the SSH driver uses, so a router's key pinned on first use stays pinned across restarts.

use tikfleet_shared::RouterId;

use crate::ssh::{HostKeyStore, HostKeyStoreError};
use crate::store::{Store, StoreError, TreeName};

/// Host key pins in the agent's store.
#[derive(Debug, Clone)]
pub struct SledHostKeys {
    tree: sled::Tree,
}

impl SledHostKeys {
    /// The pins of this store.
    ///
    /// # Errors
    ///
    /// When the tree cannot be opened.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            tree: store.tree(TreeName::HostKeys)?,
        })
    }
}

impl HostKeyStore for SledHostKeys {
    fn get(&self, router: RouterId) -> Result<Option<String>, HostKeyStoreError> {
        let value = self
            .tree
            .get(router.as_bytes())
            .map_err(|e| HostKeyStoreError(format!("cannot read the pinned host key: {e}")))?;
        value
            .map(|v| {
                String::from_utf8(v.to_vec()).map_err(|_| {
                    HostKeyStoreError(format!("the pinned host key of router {router} is corrupt"))
                })
            })
            .transpose()
    }

    /// Pins and flushes before returning: the driver calls this from a blocking task, and a
    /// pin that could vanish in a crash would let a different key be pinned next time.
    fn put(&self, router: RouterId, fingerprint: &str) -> Result<(), HostKeyStoreError> {
        self.tree
            .insert(router.as_bytes(), fingerprint.as_bytes())
            .and_then(|_| self.tree.flush())
            .map(|_| ())
            .map_err(|e| HostKeyStoreError(format!("cannot store the pinned host key: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    #[test]
    fn pins_survive_reopening_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = StoreConfig::new(dir.path().join("store"));
        let (a, b) = (RouterId::new(), RouterId::new());
        {
            let store = Store::open(&config).expect("open");
            let pins = SledHostKeys::open(&store).expect("tree");
            assert_eq!(pins.get(a).expect("get"), None);
            pins.put(a, "SHA256:first").expect("put");
            pins.put(a, "SHA256:second").expect("re-pin");
            pins.put(b, "SHA256:other").expect("put");
        }
        let store = Store::open(&config).expect("reopen");
        let pins = SledHostKeys::open(&store).expect("tree");
        assert_eq!(pins.get(a).expect("get").as_deref(), Some("SHA256:second"));
        assert_eq!(pins.get(b).expect("get").as_deref(), Some("SHA256:other"));
    }
}
