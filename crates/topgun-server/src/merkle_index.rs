//! One Merkle tree per map, in memory, kept equal to the store.

use crate::store::ServerStore;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::sync::mpsc;
use topgun_core::{MerkleTree, Timestamp};
use topgun_storage::{KeyStamp, ScanCursor, StorageError};

/// Records read per page when building the trees at startup.
const LOAD_PAGE: usize = 1024;
/// Pages read ahead of the tree build.
const READ_AHEAD: usize = 8;

/// Sends the stamps of `map`, page by page, until the map ends, the
/// store fails (the error is sent) or the receiver is gone.
async fn read_stamps(
    store: Arc<dyn ServerStore>,
    map: String,
    pages: mpsc::Sender<Result<Vec<KeyStamp>, StorageError>>,
) {
    // The trees do not care about order: the store's own is the cheapest.
    let mut cursor = ScanCursor::new(map, LOAD_PAGE).any_order();
    loop {
        let page = match cursor.next_stamps(&*store).await {
            Ok(Some(page)) => Ok(page),
            Ok(None) => return,
            Err(error) => Err(error),
        };
        let failed = page.is_err();
        if pages.send(page).await.is_err() || failed {
            return;
        }
    }
}

/// The Merkle trees of all maps. Only the commit task changes them (in
/// commit order), right after each durable write; readers take a short
/// lock. A map without records has no tree and answers like an empty one.
///
/// Memory: a map costs about 200 KiB of fixed arrays plus, per key, the
/// key (to answer leaf requests) and 12 bytes of tree.
#[derive(Debug, Default)]
pub(crate) struct MerkleIndex {
    maps: Mutex<HashMap<String, MapIndex>>,
}

/// One map's tree and the keys of each of its leaves (the tree keeps only
/// key hashes).
#[derive(Debug)]
struct MapIndex {
    tree: MerkleTree,
    leaves: Vec<Vec<String>>,
}

impl MapIndex {
    fn new() -> Self {
        Self {
            tree: MerkleTree::new(),
            leaves: vec![Vec::new(); 1 << (4 * topgun_core::merkle::DEPTH)],
        }
    }

    fn update(&mut self, key: &str, timestamp: &Timestamp) {
        if self.tree.update(key, timestamp) {
            self.leaves[MerkleTree::leaf_of(key)].push(key.to_owned());
        }
    }
}

impl MerkleIndex {
    /// Builds the trees of every map in the store (tombstones included),
    /// reading it page by page: a task reads the next pages while this one
    /// adds the last to the tree.
    pub(crate) async fn load(store: Arc<dyn ServerStore>) -> Result<Self, StorageError> {
        let mut maps = HashMap::new();
        for map in store.map_names().await? {
            let mut tree = MerkleTree::builder();
            let mut leaves = vec![Vec::new(); 1 << (4 * topgun_core::merkle::DEPTH)];
            let (pages, mut read) = mpsc::channel(READ_AHEAD);
            let reader = tokio::spawn(read_stamps(store.clone(), map.clone(), pages));
            while let Some(page) = read.recv().await {
                // A scan lists each key once.
                for stamp in page? {
                    tree.add(&stamp.key, &stamp.timestamp);
                    leaves[MerkleTree::leaf_of(&stamp.key)].push(stamp.key);
                }
            }
            // The reader stops after the last page or an error, sent above.
            let _ = reader.await;
            let index = MapIndex {
                tree: tree.finish(),
                leaves,
            };
            let tree = &index.tree;
            tracing::debug!(map = %map, keys = tree.len(), root = tree.root_hash(), "merkle tree built");
            maps.insert(map, index);
        }
        Ok(Self {
            maps: Mutex::new(maps),
        })
    }

    /// Replaces every tree with those of `other` (a fresh
    /// [`load`](Self::load)).
    pub(crate) fn replace(&self, other: MerkleIndex) {
        let fresh = other
            .maps
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        *self.lock() = fresh;
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, MapIndex>> {
        // Every update is one `MerkleTree::update`, which cannot panic
        // half-way; a poisoned lock still holds consistent trees.
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `map`/`key` now holds a record stamped `timestamp`.
    pub(crate) fn update(&self, map: &str, key: &str, timestamp: &Timestamp) {
        let mut maps = self.lock();
        match maps.get_mut(map) {
            Some(index) => index.update(key, timestamp),
            None => {
                let mut index = MapIndex::new();
                index.update(key, timestamp);
                maps.insert(map.to_owned(), index);
            }
        }
    }

    /// Whether `map`/`key` is in the tree at exactly `timestamp`.
    pub(crate) fn holds(&self, map: &str, key: &str, timestamp: &Timestamp) -> bool {
        self.lock()
            .get(map)
            .is_some_and(|index| index.tree.holds(key, timestamp))
    }

    /// The map's root hash (0 for an unknown map).
    pub(crate) fn root_hash(&self, map: &str) -> u32 {
        self.lock()
            .get(map)
            .map_or(0, |index| index.tree.root_hash())
    }

    /// The non-empty children of the inner node at `path`, hex digit →
    /// hash; empty for an unknown map, path or node.
    pub(crate) fn buckets(&self, map: &str, path: &str) -> BTreeMap<String, u32> {
        self.lock().get(map).map_or_else(BTreeMap::new, |index| {
            index
                .tree
                .buckets(path)
                .into_iter()
                .map(|(digit, hash)| (digit.to_string(), hash))
                .collect()
        })
    }

    /// The keys of the leaf at `path`; empty for an unknown map or path.
    pub(crate) fn leaf_keys(&self, map: &str, path: &str) -> Vec<String> {
        let Some(leaf) = MerkleTree::leaf_at(path) else {
            return Vec::new();
        };
        self.lock()
            .get(map)
            .map(|index| index.leaves[leaf].clone())
            .unwrap_or_default()
    }

    /// Number of maps that have a tree.
    pub(crate) fn map_count(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_lists_each_key_once_whatever_its_updates() {
        let index = MerkleIndex::default();
        for millis in 1..=3 {
            index.update("m", "k", &Timestamp::new(millis, 0, "n"));
        }
        index.update("m", "other", &Timestamp::new(1, 0, "n"));
        let path = MerkleTree::path_of("k");
        let keys = index.leaf_keys("m", &path);
        assert_eq!(keys.iter().filter(|k| *k == "k").count(), 1, "{keys:?}");
        assert!(index.leaf_keys("m", "0").is_empty(), "not a leaf path");
        assert!(index.leaf_keys("none", &path).is_empty());
    }
}
