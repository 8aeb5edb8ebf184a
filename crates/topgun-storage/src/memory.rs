//! [`MemoryStore`]: the [`Store`] in plain `BTreeMap`s.
//!
//! Nothing is persisted. Used by tests, by short-lived clients, and as the
//! reference the conformance suite holds other backends to. It uses no
//! threads and no clock, so it runs unchanged on wasm.

use crate::error::StorageError;
use crate::model::{
    merkle_contribution, AppliedChange, ClearOutcome, LocalWrite, OpId, OpLogEntry, OpType,
    PruneSums, StoreRecord, StoreStats,
};
use crate::store::Store;
use crate::validate;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};
use topgun_core::merkle::LEAVES;
use topgun_core::{MerkleSums, Timestamp};

/// A [`Store`] held in memory: `BTreeMap`s behind one `std` mutex.
///
/// Every call takes the lock once and never awaits while holding it, so
/// each method is atomic. Stats are computed on demand.
///
/// ```
/// use topgun_storage::{MemoryStore, Store};
/// let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(MemoryStore::new());
/// # drop(store);
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    records: BTreeMap<(String, String), StoreRecord>,
    pending: BTreeMap<OpId, OpLogEntry>,
    synced: BTreeMap<OpId, OpLogEntry>,
    meta: BTreeMap<String, Vec<u8>>,
    /// Per map, the Merkle leaf sums (see [`Store::merkle_leaves`]).
    merkle: BTreeMap<String, Vec<u32>>,
    /// The Merkle contribution of each pruned record, until its key is
    /// written again (which replaces it) or the map's sums are rebuilt.
    pruned: BTreeMap<(String, String), u32>,
    last_op_id: OpId,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every method validates before it mutates and cannot panic half
        // way, so the state behind a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The records of `map_name` after `after`, in key order.
fn map_range<'a>(
    records: &'a BTreeMap<(String, String), StoreRecord>,
    map_name: &'a str,
    after: Option<&str>,
) -> impl Iterator<Item = &'a StoreRecord> + 'a {
    let start = match after {
        Some(key) => Bound::Excluded((map_name.to_owned(), key.to_owned())),
        None => Bound::Included((map_name.to_owned(), String::new())),
    };
    records
        .range((start, Bound::Unbounded))
        .take_while(move |((map, _), _)| map == map_name)
        .map(|(_, record)| record)
}

impl Inner {
    /// Moves `key`'s contribution to its map's leaf sums from its previous
    /// record's (or, with none, its pruned record's) to `new`'s.
    fn account(
        &mut self,
        map_name: &str,
        key: &str,
        old: Option<&Timestamp>,
        new: Option<&Timestamp>,
    ) {
        let (leaf, mut sub) = merkle_contribution(key, old);
        if old.is_none() {
            sub = self
                .pruned
                .remove(&(map_name.to_owned(), key.to_owned()))
                .unwrap_or(0);
        }
        let (_, add) = merkle_contribution(key, new);
        let sums = self
            .merkle
            .entry(map_name.to_owned())
            .or_insert_with(|| vec![0; LEAVES]);
        MerkleSums::shift(sums, leaf, sub, add);
    }

    fn append_op(
        &mut self,
        map_name: &str,
        op_type: OpType,
        key: &str,
        value: Option<Vec<u8>>,
        timestamp: Timestamp,
        ttl_ms: Option<u64>,
    ) -> OpId {
        self.last_op_id += 1;
        let id = self.last_op_id;
        let entry = OpLogEntry {
            id,
            map_name: map_name.to_owned(),
            op_type,
            key: key.to_owned(),
            value,
            timestamp,
            ttl_ms,
            synced: false,
        };
        self.pending.insert(id, entry);
        id
    }

    fn write_local(&mut self, write: LocalWrite) -> OpId {
        let record = StoreRecord {
            map_name: write.map_name.clone(),
            key: write.key.clone(),
            value: write.value.clone(),
            timestamp: write.timestamp.clone(),
            ttl_ms: write.ttl_ms,
            dirty: true,
        };
        let previous = self
            .records
            .insert((write.map_name.clone(), write.key.clone()), record);
        self.account(
            &write.map_name,
            &write.key,
            previous.as_ref().map(|p| &p.timestamp),
            Some(&write.timestamp),
        );
        self.append_op(
            &write.map_name,
            write.op_type,
            &write.key,
            write.value,
            write.timestamp,
            write.ttl_ms,
        )
    }

    fn mark_synced(&mut self, ids: &[OpId]) -> u64 {
        let mut changed = 0;
        for id in ids {
            let Some(mut op) = self.pending.remove(id) else {
                continue;
            };
            changed += 1;
            let clean_if_same = |record: &mut StoreRecord| {
                if record.timestamp == op.timestamp {
                    record.dirty = false;
                }
            };
            if op.op_type == OpType::Clear {
                let start = (op.map_name.clone(), String::new());
                self.records
                    .range_mut(start..)
                    .take_while(|((map, _), _)| *map == op.map_name)
                    .for_each(|(_, record)| clean_if_same(record));
            } else if let Some(record) =
                self.records.get_mut(&(op.map_name.clone(), op.key.clone()))
            {
                clean_if_same(record);
            }
            op.synced = true;
            self.synced.insert(*id, op);
        }
        changed
    }

    fn apply_remote(&mut self, records: Vec<StoreRecord>) -> Vec<AppliedChange> {
        let mut changes = Vec::new();
        for mut record in records {
            let slot = (record.map_name.clone(), record.key.clone());
            let previous = self.records.get(&slot);
            if previous.is_some_and(|old| record.timestamp <= old.timestamp) {
                continue;
            }
            record.dirty = false;
            let previous = self.records.insert(slot, record.clone());
            self.account(
                &record.map_name,
                &record.key,
                previous.as_ref().map(|p| &p.timestamp),
                Some(&record.timestamp),
            );
            changes.push(AppliedChange {
                previous,
                current: record,
            });
        }
        changes
    }

    fn clear_map(&mut self, map_name: &str, timestamp: Timestamp) -> ClearOutcome {
        let start = (map_name.to_owned(), String::new());
        let mut removed_keys = Vec::new();
        let sums = self
            .merkle
            .entry(map_name.to_owned())
            .or_insert_with(|| vec![0; LEAVES]);
        for ((_, key), record) in self
            .records
            .range_mut(start..)
            .take_while(|((map, _), _)| map == map_name)
        {
            // Only records older than the clear (a newer write wins).
            if record.value.is_some() && record.timestamp < timestamp {
                let (leaf, sub) = merkle_contribution(key, Some(&record.timestamp));
                let (_, add) = merkle_contribution(key, Some(&timestamp));
                MerkleSums::shift(sums, leaf, sub, add);
                record.value = None;
                record.ttl_ms = None;
                record.timestamp = timestamp.clone();
                record.dirty = true;
                removed_keys.push(key.clone());
            }
        }
        let op_id = self.append_op(map_name, OpType::Clear, "", None, timestamp, None);
        ClearOutcome {
            op_id,
            removed_keys,
        }
    }

    fn prune_clean(&mut self, map_name: &str, keys: &[String], sums: PruneSums) -> Vec<String> {
        let map_cleared = self
            .pending
            .values()
            .any(|op| op.op_type == OpType::Clear && op.map_name == map_name);
        if map_cleared {
            return Vec::new();
        }
        let pending_keys: BTreeSet<String> = self
            .pending
            .values()
            .filter(|op| op.map_name == map_name)
            .map(|op| op.key.clone())
            .collect();
        let mut removed = Vec::new();
        for key in keys {
            if pending_keys.contains(key) {
                continue;
            }
            let slot = (map_name.to_owned(), key.clone());
            if self.records.get(&slot).is_some_and(|record| !record.dirty) {
                if let Some(record) = self.records.remove(&slot) {
                    match sums {
                        PruneSums::Keep => {
                            let (_, c) = merkle_contribution(key, Some(&record.timestamp));
                            self.pruned.insert(slot, c);
                        }
                        PruneSums::Drop => {
                            self.account(map_name, key, Some(&record.timestamp), None);
                        }
                    }
                }
                removed.push(key.clone());
            }
        }
        removed
    }

    fn map_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut start = Bound::Unbounded;
        // Jump from map to map: `(m + "\0", "")` is the smallest slot after
        // every key of map `m`.
        while let Some(((map, _), _)) = self.records.range((start, Bound::Unbounded)).next() {
            names.push(map.clone());
            start = Bound::Included((format!("{map}\0"), String::new()));
        }
        names
    }

    fn stats(&self) -> StoreStats {
        let ops = self.pending.values().chain(self.synced.values());
        StoreStats {
            records: self.records.len() as u64,
            dirty_records: self.records.values().filter(|r| r.dirty).count() as u64,
            pending_ops: self.pending.len() as u64,
            bytes: self
                .records
                .values()
                .map(StoreRecord::approx_size)
                .chain(ops.map(OpLogEntry::approx_size))
                .sum(),
        }
    }
}

#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
impl Store for MemoryStore {
    async fn write_local(&self, write: LocalWrite) -> Result<OpId, StorageError> {
        validate::local_write(&write)?;
        Ok(self.lock().write_local(write))
    }

    async fn get(&self, map_name: &str, key: &str) -> Result<Option<StoreRecord>, StorageError> {
        let slot = (map_name.to_owned(), key.to_owned());
        Ok(self.lock().records.get(&slot).cloned())
    }

    async fn scan(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        let inner = self.lock();
        Ok(map_range(&inner.records, map_name, after)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn dirty_records(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        let inner = self.lock();
        Ok(map_range(&inner.records, map_name, after)
            .filter(|record| record.dirty)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn pending_ops(
        &self,
        after: Option<OpId>,
        limit: usize,
    ) -> Result<Vec<OpLogEntry>, StorageError> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let inner = self.lock();
        Ok(inner
            .pending
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(_, op)| op.clone())
            .collect())
    }

    async fn mark_synced(&self, ids: &[OpId]) -> Result<u64, StorageError> {
        Ok(self.lock().mark_synced(ids))
    }

    async fn drop_synced_ops(&self) -> Result<u64, StorageError> {
        let dropped = std::mem::take(&mut self.lock().synced);
        Ok(dropped.len() as u64)
    }

    async fn acknowledge(&self, ids: &[OpId]) -> Result<u64, StorageError> {
        let mut inner = self.lock();
        let changed = inner.mark_synced(ids);
        for id in ids {
            inner.synced.remove(id);
        }
        Ok(changed)
    }

    async fn apply_remote(
        &self,
        records: Vec<StoreRecord>,
    ) -> Result<Vec<AppliedChange>, StorageError> {
        validate::remote_records(&records)?;
        Ok(self.lock().apply_remote(records))
    }

    /// As [`Store::apply_remote`]: nothing here is durable to relax.
    async fn apply_remote_relaxed(
        &self,
        records: Vec<StoreRecord>,
    ) -> Result<Vec<AppliedChange>, StorageError> {
        self.apply_remote(records).await
    }

    async fn clear_map(
        &self,
        map_name: &str,
        timestamp: Timestamp,
    ) -> Result<ClearOutcome, StorageError> {
        validate::map(map_name)?;
        Ok(self.lock().clear_map(map_name, timestamp))
    }

    async fn prune_clean(
        &self,
        map_name: &str,
        keys: &[String],
        sums: PruneSums,
    ) -> Result<Vec<String>, StorageError> {
        validate::map(map_name)?;
        Ok(self.lock().prune_clean(map_name, keys, sums))
    }

    async fn map_names(&self) -> Result<Vec<String>, StorageError> {
        Ok(self.lock().map_names())
    }

    async fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().meta.get(key).cloned())
    }

    async fn meta_put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        self.lock().meta.insert(key.to_owned(), value);
        Ok(())
    }

    async fn merkle_leaves(&self, map_name: &str) -> Result<Vec<u32>, StorageError> {
        Ok(self
            .lock()
            .merkle
            .get(map_name)
            .cloned()
            .unwrap_or_else(|| vec![0; LEAVES]))
    }

    async fn is_pruned(&self, map_name: &str, key: &str) -> Result<bool, StorageError> {
        Ok(self
            .lock()
            .pruned
            .contains_key(&(map_name.to_owned(), key.to_owned())))
    }

    async fn stats(&self) -> Result<StoreStats, StorageError> {
        Ok(self.lock().stats())
    }
}
