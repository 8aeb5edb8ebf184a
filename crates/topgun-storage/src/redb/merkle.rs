//! The Merkle leaf sums of a `RedbStore` (see `Store::merkle_leaves`):
//! kept in memory by the writer, changed with each transaction's records
//! and published when it commits; saved to `merkle_leaves` when the store
//! closes. A store that was not closed (a crash, a kill) has
//! `merkle_saved` 0 and recomputes them from its records when it opens.
//! Saving them in every transaction instead cost a quarter of the write
//! throughput (16 KiB more to write per commit).

use super::tables::{
    backend, decode_leaves, decode_record_head, encode_leaves, Counters, MERKLE, PRUNED, RECORDS,
};
use crate::error::StorageError;
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use topgun_core::merkle::LEAVES;
use topgun_core::{MerkleSums, MerkleTree};

/// Per map, its leaf sums as of the last commit.
#[derive(Debug, Default)]
pub(super) struct Sums(Mutex<HashMap<String, Vec<u32>>>);

impl Sums {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<u32>>> {
        // Every critical section is a copy or a replace: nothing is left
        // half done by a panic.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The leaf sums of `map` (zeros for a map without records).
    pub(super) fn of(&self, map: &str) -> Vec<u32> {
        self.lock()
            .get(map)
            .cloned()
            .unwrap_or_else(|| vec![0; LEAVES])
    }

    /// Reads them as saved, or recomputes them from the records (and
    /// the pruned records' contributions) when they were not saved.
    pub(super) fn load(db: &Database, counters: &Counters) -> Result<Arc<Self>, StorageError> {
        const DURING: &str = "loading Merkle leaf sums";
        let txn = db.begin_read().map_err(backend(DURING))?;
        let mut sums: HashMap<String, Vec<u32>> = HashMap::new();
        if counters.merkle_saved == 1 {
            let table = txn.open_table(MERKLE).map_err(backend(DURING))?;
            for row in table.iter().map_err(backend(DURING))? {
                let (map, leaves) = row.map_err(backend(DURING))?;
                sums.insert(map.value().to_owned(), decode_leaves(Some(leaves.value())));
            }
            return Ok(Arc::new(Self(Mutex::new(sums))));
        }
        let records = txn.open_table(RECORDS).map_err(backend(DURING))?;
        for row in records.iter().map_err(backend(DURING))? {
            let (slot, value) = row.map_err(backend(DURING))?;
            let (map, _, key) = slot.value();
            let (leaf, c) = decode_record_head(value.value())?.contribution(key);
            add(&mut sums, map, leaf, c);
        }
        let pruned = txn.open_table(PRUNED).map_err(backend(DURING))?;
        for row in pruned.iter().map_err(backend(DURING))? {
            let (slot, c) = row.map_err(backend(DURING))?;
            let (map, key) = slot.value();
            add(&mut sums, map, MerkleTree::leaf_of(key), c.value());
        }
        Ok(Arc::new(Self(Mutex::new(sums))))
    }

    /// Publishes what a committed transaction changed.
    pub(super) fn commit(&self, changed: HashMap<String, Vec<u32>>) {
        if !changed.is_empty() {
            self.lock().extend(changed);
        }
    }

    /// Writes every map's sums in `txn`; the caller sets `merkle_saved`.
    pub(super) fn save(&self, txn: &WriteTransaction) -> Result<(), redb::Error> {
        let mut table = txn.open_table(MERKLE)?;
        // Rows of maps no longer held (recomputed away after a kill) must
        // not outlive the sums they belonged to.
        table.retain(|_, _| false)?;
        for (map, leaves) in self.lock().iter() {
            table.insert(map.as_str(), encode_leaves(leaves).as_slice())?;
        }
        Ok(())
    }
}

fn add(sums: &mut HashMap<String, Vec<u32>>, map: &str, leaf: usize, c: u32) {
    if !sums.contains_key(map) {
        sums.insert(map.to_owned(), vec![0; LEAVES]);
    }
    if let Some(leaves) = sums.get_mut(map) {
        MerkleSums::shift(leaves, leaf, 0, c);
    }
}
