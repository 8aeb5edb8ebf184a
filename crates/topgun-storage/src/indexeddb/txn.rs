//! [`WriteTxn`]: one read-write transaction over all three object stores,
//! with what the store keeps in step with its records (Merkle leaf sums,
//! counters, pruned entries).
//!
//! Requests are issued without waiting where nothing depends on their
//! answer (IndexedDB runs a transaction's requests in order), and only
//! IndexedDB requests are awaited while the transaction is open: anything
//! else would let it commit early.

use super::codec::{self, Counters};
use super::js::idb_error;
use super::range::{RangeRead, RANGE_READ_MIN};
use super::schema::{META, OPS, RECORDS};
use crate::error::StorageError;
use crate::model::{approx_op_size, merkle_contribution, OpId, OpType, PruneSums, StoreRecord};
use idb::request::futures::AddStoreRequestFuture;
use idb::{Database, ObjectStore, Transaction, TransactionMode};
use std::collections::{HashMap, HashSet};
use std::future::IntoFuture;
use topgun_core::merkle::LEAVES;
use topgun_core::{MerkleSums, Timestamp};
use wasm_bindgen::JsValue;

/// An op logged in this transaction: which of the transaction's
/// `operation_log` entries holds it, and its number there. The entries'
/// keys arrive when they are added, at commit ([`Committing::done`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingId {
    entry: usize,
    index: u16,
}

impl PendingId {
    /// The op's id, given the keys of the transaction's entries.
    pub(crate) fn resolve(self, entries: &[u64]) -> Result<OpId, StorageError> {
        entries
            .get(self.entry)
            .map(|entry| codec::op_id(*entry, self.index))
            .ok_or_else(|| codec::corrupt("operation_log", "logged ops were not added"))
    }
}

/// An `operation_log` entry is closed once its ops take this many bytes
/// (and the next op starts another): Chromium keeps a value over 64 KiB
/// in a blob of its own, and acknowledging part of an entry rewrites it.
const ENTRY_BYTES: usize = 48 * 1024;

/// One `operation_log` entry being filled: its `ops` bytes and count.
#[derive(Default)]
struct Entry {
    ops: Vec<u8>,
    count: usize,
}

impl Entry {
    fn has_room(&self) -> bool {
        self.ops.len() < ENTRY_BYTES && self.count < codec::MAX_OPS_PER_ENTRY
    }
}

type GetFuture = idb::request::futures::GetStoreRequestFuture;
type GetAllFuture = idb::request::futures::GetAllStoreRequestFuture;
type GetAllKeysFuture = idb::request::futures::GetAllKeysStoreRequestFuture;

/// Reads issued by [`WriteTxn::request_slots`], not yet answered.
#[derive(Default)]
struct Pending {
    records: Vec<((String, String), GetFuture)>,
    chunks: Vec<((String, usize), GetFuture)>,
    ranges: Vec<RangeRead>,
    /// Every sum chunk of a map: its keys and values, in one order.
    all_chunks: Vec<(String, GetAllKeysFuture, GetAllFuture)>,
}

/// A read-write transaction and the state it changes.
pub(crate) struct WriteTxn {
    tx: Transaction,
    pub(crate) records: ObjectStore,
    pub(crate) ops: ObjectStore,
    pub(crate) meta: ObjectStore,
    /// Every record read or written in this transaction, as it now is
    /// (`None`: no record).
    overlay: HashMap<(String, String), Option<StoreRecord>>,
    /// The chunks of leaf sums read, by map and chunk number.
    sums: HashMap<(String, usize), Vec<u32>>,
    /// The chunks changed, written back at commit.
    touched: HashSet<(String, usize)>,
    pub(crate) counters: Counters,
    counters_at_start: Counters,
    /// The `operation_log` entries of the ops logged, added at commit.
    entries: Vec<Entry>,
}

impl std::fmt::Debug for WriteTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTxn")
            .field("records", &self.overlay.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl WriteTxn {
    /// Starts a read-write transaction and reads the counters.
    pub(crate) async fn begin<'k>(
        database: &Database,
        slots: impl IntoIterator<Item = (&'k str, &'k str)>,
    ) -> Result<Self, StorageError> {
        const DURING: &str = "starting a write";
        let tx = database
            .transaction(&[RECORDS, OPS, META], TransactionMode::ReadWrite)
            .map_err(idb_error(DURING))?;
        let store = |name| tx.object_store(name).map_err(idb_error(DURING));
        let (records, ops, meta) = (store(RECORDS)?, store(OPS)?, store(META)?);
        let counters = meta
            .get(codec::counters_key())
            .map_err(idb_error(DURING))?
            .into_future();
        let mut txn = Self {
            tx,
            records,
            ops,
            meta,
            overlay: HashMap::new(),
            sums: HashMap::new(),
            touched: HashSet::new(),
            counters: Counters::default(),
            counters_at_start: Counters::default(),
            entries: Vec::new(),
        };
        // The counters, the records and their Merkle sum chunks are read
        // by requests issued together: one wait, not one per request.
        let pending = txn.request_slots(slots)?;
        let counters = counters.await.map_err(idb_error(DURING))?;
        txn.counters = Counters::from_js(counters)?;
        txn.counters_at_start = txn.counters;
        txn.receive(pending).await?;
        Ok(txn)
    }

    pub(crate) async fn load<'k>(
        &mut self,
        map_name: &str,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<(), StorageError> {
        let pending = self.request_slots(keys.into_iter().map(|key| (map_name, key)))?;
        self.receive(pending).await
    }

    /// Issues a read of every record in `slots` not read yet, and of the
    /// Merkle sum chunk each one falls in.
    fn request_slots<'k>(
        &mut self,
        slots: impl IntoIterator<Item = (&'k str, &'k str)>,
    ) -> Result<Pending, StorageError> {
        const DURING: &str = "reading records to write";
        let mut by_map: HashMap<&str, Vec<&str>> = HashMap::new();
        for (map_name, key) in slots {
            let slot = (map_name.to_owned(), key.to_owned());
            if !self.overlay.contains_key(&slot) {
                self.overlay.insert(slot, None);
                by_map.entry(map_name).or_default().push(key);
            }
        }
        let mut pending = Pending::default();
        for (map_name, keys) in by_map {
            if keys.len() >= RANGE_READ_MIN {
                let keys = keys.iter().map(|k| (*k).to_owned()).collect();
                pending
                    .ranges
                    .push(RangeRead::issue(&self.records, map_name, keys)?);
                let range = codec::sums_range(map_name)?;
                let chunk_keys = self
                    .meta
                    .get_all_keys(Some(range.clone().into()), None)
                    .map_err(idb_error(DURING))?;
                let chunks = self
                    .meta
                    .get_all(Some(range.into()), None)
                    .map_err(idb_error(DURING))?;
                pending.all_chunks.push((
                    map_name.to_owned(),
                    chunk_keys.into_future(),
                    chunks.into_future(),
                ));
                continue;
            }
            for key in keys {
                let request = self
                    .records
                    .get(codec::record_key(map_name, key))
                    .map_err(idb_error(DURING))?;
                pending
                    .records
                    .push(((map_name.to_owned(), key.to_owned()), request.into_future()));
                self.request_chunk(map_name, key, &mut pending)?;
            }
        }
        Ok(pending)
    }

    /// Issues a read of the sum chunk `key` falls in, unless it is read.
    fn request_chunk(
        &self,
        map_name: &str,
        key: &str,
        pending: &mut Pending,
    ) -> Result<(), StorageError> {
        let (leaf, _) = merkle_contribution(key, None);
        let chunk = (map_name.to_owned(), leaf / codec::SUMS_CHUNK);
        let all_read = pending.all_chunks.iter().any(|(map, ..)| map == map_name);
        if all_read
            || self.sums.contains_key(&chunk)
            || pending.chunks.iter().any(|(c, _)| *c == chunk)
        {
            return Ok(());
        }
        let request = self
            .meta
            .get(codec::sums_key(map_name, chunk.1))
            .map_err(idb_error("reading the Merkle sums"))?;
        pending.chunks.push((chunk, request.into_future()));
        Ok(())
    }

    /// Waits for the reads `request_slots` issued.
    async fn receive(&mut self, mut pending: Pending) -> Result<(), StorageError> {
        const DURING: &str = "reading records to write";
        for (slot, request) in std::mem::take(&mut pending.records) {
            let found = request.await.map_err(idb_error(DURING))?;
            let record = found.as_ref().map(codec::record_from_js).transpose()?;
            self.overlay.insert(slot, record);
        }
        for (chunk, request) in std::mem::take(&mut pending.chunks) {
            let found = request.await.map_err(idb_error(DURING))?;
            self.sums
                .insert(chunk, codec::sums_from_js(found.as_ref())?);
        }
        for (map_name, keys, values) in std::mem::take(&mut pending.all_chunks) {
            let keys = keys.await.map_err(idb_error(DURING))?;
            let values = values.await.map_err(idb_error(DURING))?;
            for chunk in 0..LEAVES / codec::SUMS_CHUNK {
                self.sums
                    .entry((map_name.clone(), chunk))
                    .or_insert_with(|| vec![0; codec::SUMS_CHUNK]);
            }
            for (key, value) in keys.iter().zip(&values) {
                let chunk = codec::sums_chunk_of(key)?;
                self.sums
                    .insert((map_name.clone(), chunk), codec::sums_from_js(Some(value))?);
            }
        }
        // Keys a truncated range read did not reach are read one by one.
        let mut rest = Pending::default();
        for range in std::mem::take(&mut pending.ranges) {
            let found = range.finish().await?;
            for (key, record) in found.records {
                self.overlay.insert((found.map_name.clone(), key), record);
            }
            for key in found.unread {
                let request = self
                    .records
                    .get(codec::record_key(&found.map_name, &key))
                    .map_err(idb_error(DURING))?;
                rest.records
                    .push(((found.map_name.clone(), key), request.into_future()));
            }
        }
        if !rest.records.is_empty() {
            Box::pin(self.receive(rest)).await?;
        }
        Ok(())
    }

    pub(crate) fn adopt(&mut self, record: StoreRecord) {
        self.overlay
            .entry((record.map_name.clone(), record.key.clone()))
            .or_insert(Some(record));
    }

    /// The record of `(map_name, key)`; [`WriteTxn::load`] it first.
    pub(crate) fn current(&self, map_name: &str, key: &str) -> Option<&StoreRecord> {
        self.overlay
            .get(&(map_name.to_owned(), key.to_owned()))
            .and_then(Option::as_ref)
    }

    /// Stores `record`, replacing the loaded one, and keeps the sums and
    /// counters in step.
    pub(crate) async fn store(&mut self, record: StoreRecord) -> Result<(), StorageError> {
        self.records
            .put(&codec::record_to_js(&record)?, None)
            .map_err(idb_error("writing a record"))?;
        let (map_name, key) = (record.map_name.clone(), record.key.clone());
        let new_stamp = record.timestamp.clone();
        let (new_size, new_dirty) = (record.approx_size(), record.dirty);
        let previous = self
            .overlay
            .insert((map_name.clone(), key.clone()), Some(record))
            .flatten();
        let c = &mut self.counters;
        match &previous {
            Some(old) => {
                c.bytes -= old.approx_size();
                c.dirty_records -= u64::from(old.dirty);
            }
            None => c.records += 1,
        }
        c.bytes += new_size;
        c.dirty_records += u64::from(new_dirty);
        let old_stamp = previous.map(|p| p.timestamp);
        self.account(&map_name, &key, old_stamp.as_ref(), Some(&new_stamp))
            .await
    }

    /// Deletes the loaded record of `(map_name, key)`; with
    /// [`PruneSums::Keep`] its contribution stays in the sums and is
    /// remembered as pruned.
    pub(crate) async fn delete(
        &mut self,
        map_name: &str,
        key: &str,
        sums: PruneSums,
    ) -> Result<(), StorageError> {
        let slot = (map_name.to_owned(), key.to_owned());
        let Some(old) = self.overlay.insert(slot, None).flatten() else {
            return Ok(());
        };
        self.records
            .delete(codec::record_key(map_name, key))
            .map_err(idb_error("deleting a record"))?;
        let c = &mut self.counters;
        c.records -= 1;
        c.dirty_records -= u64::from(old.dirty);
        c.bytes -= old.approx_size();
        match sums {
            PruneSums::Keep => {
                let (_, kept) = merkle_contribution(key, Some(&old.timestamp));
                self.meta
                    .put(
                        &JsValue::from_f64(f64::from(kept)),
                        Some(&codec::pruned_key(map_name, key)),
                    )
                    .map_err(idb_error("remembering a pruned record"))?;
                self.counters.pruned += 1;
            }
            PruneSums::Drop => {
                self.account(map_name, key, Some(&old.timestamp), None)
                    .await?
            }
        }
        Ok(())
    }

    /// Moves `key`'s contribution to its map's leaf sums from `old` (with
    /// none, its pruned entry's) to `new`.
    async fn account(
        &mut self,
        map_name: &str,
        key: &str,
        old: Option<&Timestamp>,
        new: Option<&Timestamp>,
    ) -> Result<(), StorageError> {
        const DURING: &str = "updating the Merkle sums";
        let (leaf, mut sub) = merkle_contribution(key, old);
        if old.is_none() && self.counters.pruned > 0 {
            let pruned = codec::pruned_key(map_name, key);
            let found = self
                .meta
                .get(pruned.clone())
                .map_err(idb_error(DURING))?
                .await
                .map_err(idb_error(DURING))?;
            if let Some(kept) = found {
                sub = codec::contribution_from_js(&kept)?;
                self.meta.delete(pruned).map_err(idb_error(DURING))?;
                self.counters.pruned -= 1;
            }
        }
        let (_, add) = merkle_contribution(key, new);
        let chunk = self.sums(map_name, leaf / codec::SUMS_CHUNK).await?;
        MerkleSums::shift(chunk, leaf % codec::SUMS_CHUNK, sub, add);
        self.touched
            .insert((map_name.to_owned(), leaf / codec::SUMS_CHUNK));
        Ok(())
    }

    /// Chunk `chunk` of `map_name`'s leaf sums, read once per transaction.
    async fn sums(&mut self, map_name: &str, chunk: usize) -> Result<&mut Vec<u32>, StorageError> {
        const DURING: &str = "reading the Merkle sums";
        let slot = (map_name.to_owned(), chunk);
        if !self.sums.contains_key(&slot) {
            let stored = self
                .meta
                .get(codec::sums_key(map_name, chunk))
                .map_err(idb_error(DURING))?
                .await
                .map_err(idb_error(DURING))?;
            self.sums
                .insert(slot.clone(), codec::sums_from_js(stored.as_ref())?);
        }
        Ok(self
            .sums
            .entry(slot)
            .or_insert_with(|| vec![0; codec::SUMS_CHUNK]))
    }

    /// Logs an op (unsynced): it goes into an `operation_log` entry this
    /// transaction adds when it commits (one, unless its ops outgrow
    /// [`ENTRY_BYTES`]).
    pub(crate) fn add_op(
        &mut self,
        map_name: &str,
        op_type: OpType,
        key: &str,
        value: Option<&[u8]>,
        timestamp: &Timestamp,
        ttl_ms: Option<u64>,
    ) -> Result<PendingId, StorageError> {
        if !self.entries.last().is_some_and(Entry::has_room) {
            self.entries.push(Entry::default());
        }
        let entry_number = self.entries.len() - 1;
        let entry = &mut self.entries[entry_number];
        let index = u16::try_from(entry.count)
            .map_err(|_| codec::corrupt("operation_log", "too many ops in one entry"))?;
        codec::append_op(
            &mut entry.ops,
            index,
            map_name,
            op_type,
            key,
            value,
            timestamp,
            ttl_ms,
        )?;
        entry.count += 1;
        self.counters.pending_ops += 1;
        self.counters.bytes += approx_op_size(map_name, key, value, timestamp);
        Ok(PendingId {
            entry: entry_number,
            index,
        })
    }

    /// The map, type and key of every op this transaction logged so far
    /// (they reach the op log's store only when it commits), read back
    /// from its entries.
    pub(crate) fn logged(&self) -> Result<Vec<(String, OpType, String)>, StorageError> {
        let mut logged = Vec::new();
        for entry in &self.entries {
            logged.extend(codec::op_targets(&entry.ops)?);
        }
        Ok(logged)
    }

    /// Adds the logged ops' entries, writes back the sums and counters and
    /// commits. If a request cannot be issued, the transaction is aborted
    /// (left alone, it would commit what was issued).
    pub(crate) fn commit(self) -> Result<Committing, StorageError> {
        let entries = match self.write_back() {
            Ok(entries) => entries,
            Err(error) => {
                self.abort();
                return Err(error);
            }
        };
        let tx = self.tx.commit().map_err(idb_error(COMMITTING))?;
        Ok(Committing {
            entries,
            tx: tx.into_future(),
        })
    }

    /// Issues the requests [`commit`](Self::commit) makes before committing.
    fn write_back(&self) -> Result<Vec<AddStoreRequestFuture>, StorageError> {
        let mut entries = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            let request = self
                .ops
                .add(&codec::new_entry_to_js(&entry.ops)?, None)
                .map_err(idb_error("appending to the operation log"))?;
            entries.push(request.into_future());
        }
        for slot in &self.touched {
            let (map_name, chunk) = slot;
            let Some(sums) = self.sums.get(slot) else {
                continue;
            };
            self.meta
                .put(
                    &codec::sums_to_js(sums),
                    Some(&codec::sums_key(map_name, *chunk)),
                )
                .map_err(idb_error(COMMITTING))?;
        }
        if self.counters != self.counters_at_start {
            self.meta
                .put(&self.counters.to_js()?, Some(&codec::counters_key()))
                .map_err(idb_error(COMMITTING))?;
        }
        Ok(entries)
    }

    /// Aborts the transaction: nothing it did is stored.
    pub(crate) fn abort(self) {
        // Aborting a transaction that already failed throws; either way
        // nothing of it is stored.
        let _ = self.tx.abort();
    }
}

const COMMITTING: &str = "committing";

/// A transaction told to commit.
///
/// `idb` listens for a request's answer from `into_future` on, so the
/// entries' requests are turned into their futures when they are issued:
/// an answer that came before would be missed.
pub(crate) struct Committing {
    entries: Vec<AddStoreRequestFuture>,
    tx: idb::TransactionFuture,
}

impl Committing {
    /// Waits for the commit; answers the keys of the `operation_log`
    /// entries added, in the order the ops were logged.
    pub(crate) async fn done(self) -> Result<Vec<u64>, StorageError> {
        let mut entries = Vec::with_capacity(self.entries.len());
        for request in self.entries {
            let key = request
                .await
                .map_err(idb_error("appending to the operation log"))?;
            entries.push(codec::entry_id(&key)?);
        }
        let result = self.tx.await.map_err(idb_error(COMMITTING))?;
        if result.is_aborted() {
            return Err(super::js::JsFailure {
                name: "AbortError".to_owned(),
                message: "the transaction was aborted".to_owned(),
            }
            .into_error(COMMITTING));
        }
        Ok(entries)
    }
}
