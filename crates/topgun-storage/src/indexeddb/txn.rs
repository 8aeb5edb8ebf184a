//! [`WriteTxn`]: one read-write transaction over all three object stores,
//! with what the store keeps in step with its records (pruned entries, and
//! the change to the Merkle leaf sums and counters as one
//! [`Delta`](super::delta::Delta)).
//!
//! Requests are issued without waiting where nothing depends on their
//! answer (IndexedDB runs a transaction's requests in order), and only
//! IndexedDB requests are awaited while the transaction is open: anything
//! else would let it commit early.

use super::codec::{self, Stored};
use super::completion::{Completion, Outcome};
use super::delta::{self, Delta};
use super::js::{self, idb_error, js_error};
use super::range::{RangeRead, RANGE_READ_MIN};
use super::schema::{META, OPS, RECORDS};
use crate::error::StorageError;
use crate::model::{approx_op_size, merkle_contribution, OpId, OpType, PruneSums, StoreRecord};
use idb::{ObjectStore, Transaction};
use std::collections::{HashMap, HashSet};
use std::future::IntoFuture;
use topgun_core::Timestamp;
use wasm_bindgen::{JsCast, JsValue};

/// What a write transaction is opened on: the database and the names of
/// its three object stores (records, ops, meta), as JS values made once.
#[derive(Debug)]
pub(crate) struct WriteScope {
    database: JsValue,
    names: JsValue,
}

impl WriteScope {
    /// The scope of `database`; `handle` is the same connection as a JS
    /// value.
    pub(crate) fn new(handle: JsValue) -> Self {
        let names = [RECORDS, OPS, META].map(JsValue::from_str);
        Self {
            database: handle,
            names: js::array(&names),
        }
    }
}

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

/// The `operation_log` entries a transaction adds at commit: their `ops`
/// bytes one after another.
#[derive(Default)]
struct Entries {
    bytes: Vec<u8>,
    /// Where each entry's bytes start.
    starts: Vec<usize>,
    /// Ops in the last entry.
    count: usize,
}

impl Entries {
    /// Whether the last entry takes another op.
    fn has_room(&self) -> bool {
        self.starts.last().is_some_and(|start| {
            self.bytes.len() - start < ENTRY_BYTES && self.count < codec::MAX_OPS_PER_ENTRY
        })
    }

    /// Where each entry's bytes start and end.
    fn bounds(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let ends = self
            .starts
            .iter()
            .skip(1)
            .copied()
            .chain([self.bytes.len()]);
        self.starts.iter().copied().zip(ends)
    }

    /// Each entry's `ops` bytes.
    fn each(&self) -> impl Iterator<Item = &[u8]> {
        self.bounds().map(|(start, end)| &self.bytes[start..end])
    }

    /// Where each entry's bytes end, as [`js::commit_write`] takes them.
    fn ends(&self) -> Result<Vec<u32>, StorageError> {
        self.bounds()
            .map(|(_, end)| {
                u32::try_from(end).map_err(|_| codec::corrupt("operation_log", "too many op bytes"))
            })
            .collect()
    }
}

type GetFuture = idb::request::futures::GetStoreRequestFuture;

/// Reads issued by [`WriteTxn::request_slots`], not yet answered.
#[derive(Default)]
struct Pending {
    records: Vec<((String, String), GetFuture)>,
    ranges: Vec<RangeRead>,
}

type Slot = (String, String);

/// A read-write transaction and the state it changes.
pub(crate) struct WriteTxn {
    tx: Transaction,
    pub(crate) records: ObjectStore,
    pub(crate) ops: ObjectStore,
    pub(crate) meta: ObjectStore,
    /// The transaction and its stores as JS values, for the calls made
    /// without `idb` ([`codec::write_record`], [`js::commit_write`]).
    tx_js: JsValue,
    records_js: JsValue,
    ops_js: JsValue,
    meta_js: JsValue,
    /// The last map name written and its stored form ([`js::name`]).
    stored_map: Option<(String, JsValue)>,
    /// Every record read or written in this transaction, as it now is
    /// (`None`: no record).
    overlay: HashMap<Slot, Option<StoreRecord>>,
    /// The kept Merkle contribution of each key read or written whose
    /// record is pruned (see [`Stored::Pruned`]).
    pruned: HashMap<Slot, u32>,
    /// Keys taken to have nothing stored without reading them
    /// ([`WriteTxn::begin_unread`]): their record is added, not put, so
    /// that the transaction fails if one (or a pruned one) is stored.
    unread: HashSet<Slot>,
    /// What this transaction changed in the counters and leaf sums.
    pub(crate) delta: Delta,
    /// The `operation_log` entries of the ops logged, added at commit.
    entries: Entries,
    /// The folded mark (see [`super::delta`]), once read.
    folded: Option<u64>,
}

impl std::fmt::Debug for WriteTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTxn")
            .field("records", &self.overlay.len())
            .field("delta", &self.delta)
            .finish_non_exhaustive()
    }
}

impl WriteTxn {
    /// Starts a read-write transaction and reads the records of `slots`
    /// (issued together: one wait, unless a range read comes back
    /// truncated).
    pub(crate) async fn begin<'k>(
        scope: &WriteScope,
        slots: impl IntoIterator<Item = (&'k str, &'k str)>,
    ) -> Result<Self, StorageError> {
        let mut txn = Self::start(scope)?;
        let pending = txn.request_slots(slots)?;
        txn.receive(pending).await?;
        Ok(txn)
    }

    /// Starts a read-write transaction that takes `slots` to have nothing
    /// stored (no record, no pruned one), without reading them: the
    /// transaction fails (and stores nothing) at commit if one has.
    pub(crate) fn begin_unread<'k>(
        scope: &WriteScope,
        slots: impl IntoIterator<Item = (&'k str, &'k str)>,
    ) -> Result<Self, StorageError> {
        let mut txn = Self::start(scope)?;
        for (map_name, key) in slots {
            let slot = (map_name.to_owned(), key.to_owned());
            txn.overlay.insert(slot.clone(), None);
            txn.unread.insert(slot);
        }
        Ok(txn)
    }

    fn start(scope: &WriteScope) -> Result<Self, StorageError> {
        const DURING: &str = "starting a write";
        // One call for the transaction and its stores. They are what
        // `beginWrite` returns, so their types need no check.
        let parts = js::begin_write(&scope.database, &scope.names).map_err(js_error(DURING))?;
        let (tx_js, records_js, ops_js, meta_js) =
            (parts.get(0), parts.get(1), parts.get(2), parts.get(3));
        let tx = Transaction::from(tx_js.clone().unchecked_into::<web_sys::IdbTransaction>());
        let store = |js: &JsValue| {
            ObjectStore::from(js.clone().unchecked_into::<web_sys::IdbObjectStore>())
        };
        let (records, ops, meta) = (store(&records_js), store(&ops_js), store(&meta_js));
        Ok(Self {
            tx,
            tx_js,
            records_js,
            ops_js,
            meta_js,
            stored_map: None,
            records,
            ops,
            meta,
            overlay: HashMap::new(),
            pruned: HashMap::new(),
            unread: HashSet::new(),
            delta: Delta::default(),
            entries: Entries::default(),
            folded: None,
        })
    }

    pub(crate) async fn load<'k>(
        &mut self,
        map_name: &str,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<(), StorageError> {
        let pending = self.request_slots(keys.into_iter().map(|key| (map_name, key)))?;
        self.receive(pending).await
    }

    /// Issues a read of every record in `slots` not read yet.
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
            }
        }
        Ok(pending)
    }

    /// Waits for the reads `request_slots` issued.
    async fn receive(&mut self, mut pending: Pending) -> Result<(), StorageError> {
        const DURING: &str = "reading records to write";
        for (slot, request) in std::mem::take(&mut pending.records) {
            let found = request.await.map_err(idb_error(DURING))?;
            let stored = found.as_ref().map(codec::stored_from_js).transpose()?;
            self.found(slot, stored);
        }
        // Keys a truncated range read did not reach are read again.
        let mut rest = Vec::new();
        for range in std::mem::take(&mut pending.ranges) {
            let found = range.finish().await?;
            for (key, stored) in found.records {
                self.found((found.map_name.clone(), key), stored);
            }
            for key in found.unread {
                self.overlay.remove(&(found.map_name.clone(), key.clone()));
                rest.push((found.map_name.clone(), key));
            }
        }
        if !rest.is_empty() {
            let slots = rest.iter().map(|(map, key)| (map.as_str(), key.as_str()));
            let pending = self.request_slots(slots)?;
            Box::pin(self.receive(pending)).await?;
        }
        Ok(())
    }

    /// Takes in what a read found at `slot`.
    fn found(&mut self, slot: Slot, stored: Option<Stored>) {
        match stored {
            Some(Stored::Record(record)) => {
                self.overlay.insert(slot, Some(record));
            }
            Some(Stored::Pruned { kept, .. }) => {
                self.pruned.insert(slot.clone(), kept);
                self.overlay.insert(slot, None);
            }
            None => {
                self.overlay.insert(slot, None);
            }
        }
    }

    /// The folded mark (see [`super::delta`]): read once, as no fold
    /// runs while this transaction does.
    pub(crate) async fn folded(&mut self) -> Result<u64, StorageError> {
        if let Some(folded) = self.folded {
            return Ok(folded);
        }
        let folded = delta::folded_mark(&self.meta, "reading the folded mark").await?;
        self.folded = Some(folded);
        Ok(folded)
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

    /// Stores `record`, replacing the loaded one, and records the change to
    /// the sums and counters in the transaction's delta.
    pub(crate) fn store(&mut self, record: StoreRecord) -> Result<(), StorageError> {
        let slot = (record.map_name.clone(), record.key.clone());
        // An add fails if the key has a record (or a pruned one) after all.
        let add = self.unread.remove(&slot);
        if (self.stored_map.as_ref()).is_some_and(|(name, _)| *name != record.map_name) {
            self.stored_map = None;
        }
        let (_, map_name) = self
            .stored_map
            .get_or_insert_with(|| (record.map_name.clone(), js::name(&record.map_name)));
        codec::write_record(&self.records_js, add, map_name, &record)?;
        let new_stamp = record.timestamp.clone();
        let (new_size, new_dirty) = (record.approx_size(), record.dirty);
        let previous = self.overlay.insert(slot.clone(), Some(record)).flatten();
        let d = &mut self.delta;
        match &previous {
            Some(old) => {
                d.bytes -= signed(old.approx_size());
                d.dirty_records -= i64::from(old.dirty);
            }
            None => d.records += 1,
        }
        d.bytes += signed(new_size);
        d.dirty_records += i64::from(new_dirty);
        let old_stamp = previous.map(|p| p.timestamp);
        self.account(&slot, old_stamp.as_ref(), Some(&new_stamp));
        Ok(())
    }

    /// Deletes the loaded record of `(map_name, key)`; with
    /// [`PruneSums::Keep`] its contribution stays in the sums and is
    /// remembered as pruned.
    pub(crate) fn delete(
        &mut self,
        map_name: &str,
        key: &str,
        sums: PruneSums,
    ) -> Result<(), StorageError> {
        let slot = (map_name.to_owned(), key.to_owned());
        let Some(old) = self.overlay.insert(slot.clone(), None).flatten() else {
            return Ok(());
        };
        let d = &mut self.delta;
        d.records -= 1;
        d.dirty_records -= i64::from(old.dirty);
        d.bytes -= signed(old.approx_size());
        match sums {
            PruneSums::Keep => {
                let (_, kept) = merkle_contribution(key, Some(&old.timestamp));
                self.records
                    .put(&codec::pruned_to_js(map_name, key, kept)?, None)
                    .map_err(idb_error("pruning a record"))?;
                self.pruned.insert(slot, kept);
                self.delta.pruned += 1;
            }
            PruneSums::Drop => {
                self.records
                    .delete(codec::record_key(map_name, key))
                    .map_err(idb_error("deleting a record"))?;
                self.account(&slot, Some(&old.timestamp), None);
            }
        }
        Ok(())
    }

    /// Moves a key's contribution to its map's leaf sums from `old` (with
    /// none, its pruned record's, whose entry the caller replaced) to
    /// `new`.
    fn account(&mut self, slot: &Slot, old: Option<&Timestamp>, new: Option<&Timestamp>) {
        let (map_name, key) = (slot.0.as_str(), slot.1.as_str());
        let (leaf, mut sub) = merkle_contribution(key, old);
        if old.is_none() {
            if let Some(kept) = self.pruned.remove(slot) {
                sub = kept;
                self.delta.pruned -= 1;
            }
        }
        let (_, add) = merkle_contribution(key, new);
        self.delta.shift(map_name, leaf, sub, add);
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
        let entries = &mut self.entries;
        if !entries.has_room() {
            entries.starts.push(entries.bytes.len());
            entries.count = 0;
        }
        let entry_number = entries.starts.len() - 1;
        let index = u16::try_from(entries.count)
            .map_err(|_| codec::corrupt("operation_log", "too many ops in one entry"))?;
        codec::append_op(
            &mut entries.bytes,
            index,
            map_name,
            op_type,
            key,
            value,
            timestamp,
            ttl_ms,
        )?;
        entries.count += 1;
        self.delta.pending_ops += 1;
        self.delta.bytes += signed(approx_op_size(map_name, key, value, timestamp));
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
        for ops in self.entries.each() {
            logged.extend(codec::op_targets(ops)?);
        }
        Ok(logged)
    }

    /// Adds the logged ops' entries and the transaction's [`Delta`] and
    /// commits; `completion` (the connection's) answers when it completed.
    /// The delta rides in the first entry; a transaction that
    /// logged no op adds it to `meta_store` at `delta_key` (see
    /// [`super::delta`]). If a request cannot be issued, the transaction
    /// is aborted (left alone, it would commit what was issued).
    pub(crate) fn commit(
        self,
        completion: &Completion,
        delta_key: &JsValue,
    ) -> Result<Committing, StorageError> {
        let prepared = self.entries.ends().and_then(|ends| {
            let delta = if self.delta.is_empty() {
                Vec::new()
            } else {
                self.delta.encode()?
            };
            Ok((ends, delta))
        });
        let (ends, delta) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                self.abort();
                return Err(error);
            }
        };
        let (number, answer) = completion.next();
        // Aborts the transaction itself if a request cannot be issued.
        js::commit_write(
            &self.tx_js,
            &self.ops_js,
            &self.meta_js,
            &self.entries.bytes,
            &ends,
            &delta,
            delta_key,
            completion.callback(),
            number,
        )
        .map_err(js_error(COMMITTING))?;
        Ok(Committing { answer })
    }

    /// Aborts the transaction: nothing it did is stored.
    pub(crate) fn abort(self) {
        // Aborting a transaction that already failed throws; either way
        // nothing of it is stored.
        let _ = self.tx.abort();
    }
}

const COMMITTING: &str = "committing";

/// A size or count as a signed delta.
pub(crate) fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A transaction told to commit.
pub(crate) struct Committing {
    /// The keys of the entries added, once the transaction completed.
    answer: Outcome,
}

/// Why a commit did not answer.
pub(crate) enum CommitFailure {
    /// The transaction aborted or failed: nothing of it is stored.
    NotStored(StorageError),
    /// It committed, but the keys of its entries could not be read.
    Stored(StorageError),
}

impl Committing {
    /// Waits for the commit; answers the keys of the `operation_log`
    /// entries added, in the order the ops were logged.
    pub(crate) async fn done(self) -> Result<Vec<u64>, CommitFailure> {
        let keys = self
            .answer
            .await
            .map_err(|error| CommitFailure::NotStored(js_error(COMMITTING)(error)))?;
        let keys = keys
            .dyn_into::<js_sys::Array>()
            .map_err(|_| CommitFailure::Stored(codec::corrupt("operation_log", "no entry keys")))?;
        keys.iter()
            .map(|key| codec::entry_id(&key))
            .collect::<Result<_, _>>()
            .map_err(CommitFailure::Stored)
    }
}
