//! [`EmbeddedStore`]: the server store over a `topgun-storage` store that
//! this node owns alone (a redb file, or a `MemoryStore` in tests).

use super::{ChangeFeed, ServerStore};
use std::sync::Arc;
use topgun_storage::{KeyStamp, Paged, StorageError, Store, StoreRecord};

/// A [`ServerStore`] on a `topgun-storage` [`Store`]: merges with
/// [`Store::apply_remote`] (one durable transaction), records stored clean.
/// One node owns it, so it has no change feed.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    store: Arc<dyn Store>,
    /// The redb file this store opened, closed by [`ServerStore::close`].
    #[cfg(feature = "redb")]
    owned: Option<Arc<topgun_storage::RedbStore>>,
}

impl EmbeddedStore {
    /// The server store on `store`, which the caller closes.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            #[cfg(feature = "redb")]
            owned: None,
        }
    }

    /// The server store on the redb file at `path` (created if missing),
    /// closed by [`ServerStore::close`]. Blocks on file I/O.
    ///
    /// # Errors
    /// The store's, e.g. [`StorageError::Locked`] when another process has
    /// the file open.
    #[cfg(feature = "redb")]
    pub fn open_redb(path: &std::path::Path) -> Result<Self, StorageError> {
        // The server keeps its own Merkle trees (with the keys a leaf
        // request needs), not the store's leaf sums.
        let store = Arc::new(
            topgun_storage::RedbStore::builder()
                .merkle_sums(false)
                .open(path)?,
        );
        Ok(Self {
            store: store.clone(),
            owned: Some(store),
        })
    }
}

#[async_trait::async_trait]
impl Paged for EmbeddedStore {
    async fn page(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.store.scan(map_name, after, limit).await
    }

    async fn stamp_page(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        self.store.scan_stamps(map_name, after, limit).await
    }

    async fn page_in_store_order(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.store.scan_in_store_order(map_name, after, limit).await
    }

    async fn stamp_page_in_store_order(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        self.store
            .scan_stamps_in_store_order(map_name, after, limit)
            .await
    }
}

#[async_trait::async_trait]
impl ServerStore for EmbeddedStore {
    async fn merge(&self, records: Vec<StoreRecord>) -> Result<Vec<bool>, StorageError> {
        let keys: Vec<(String, String, topgun_core::Timestamp)> = records
            .iter()
            .map(|r| (r.map_name.clone(), r.key.clone(), r.timestamp.clone()))
            .collect();
        let applied = self.store.apply_remote(records).await?;
        // `applied` lists, in input order, the records that replaced
        // something; each equals its input record, so one forward pass
        // pairs them up.
        let mut applied = applied.into_iter().peekable();
        let mut flags: Vec<bool> = keys
            .iter()
            .map(|(map, key, timestamp)| {
                let hit = applied.peek().is_some_and(|a| {
                    a.current.map_name == *map
                        && a.current.key == *key
                        && a.current.timestamp == *timestamp
                });
                if hit {
                    applied.next();
                }
                hit
            })
            .collect();
        // Of several applied records for one key, only the last (newest)
        // is still stored.
        let mut seen = std::collections::HashSet::new();
        for (flag, (map, key, _)) in flags.iter_mut().zip(&keys).rev() {
            if *flag && !seen.insert((map, key)) {
                *flag = false;
            }
        }
        Ok(flags)
    }

    async fn get_many(
        &self,
        map_name: &str,
        keys: &[String],
    ) -> Result<Vec<Option<StoreRecord>>, StorageError> {
        self.store.get_many(map_name, keys).await
    }

    async fn map_names(&self) -> Result<Vec<String>, StorageError> {
        self.store.map_names().await
    }

    fn feed(&self) -> Option<&dyn ChangeFeed> {
        None
    }

    async fn close(&self) -> Result<(), StorageError> {
        #[cfg(feature = "redb")]
        if let Some(store) = &self.owned {
            store.close().await?;
        }
        Ok(())
    }
}
