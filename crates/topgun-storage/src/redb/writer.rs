//! The single writer of a [`RedbStore`](super::RedbStore): a dedicated
//! thread that applies queued writes in group commits.
//!
//! redb admits one write transaction at a time and a durable commit costs
//! an fsync, so every write request goes through one channel to this
//! thread. Each round it blocks for one request, drains everything else
//! queued (up to [`MAX_BATCH`]), applies them all in **one** write
//! transaction, commits once, and only then answers each caller. Under
//! load the fsync is shared by every write that queued while the previous
//! one ran.
//!
//! A batch made only of relaxed requests (`apply_remote_relaxed`) commits
//! without an fsync ([`redb::Durability::None`]); redb makes such commits
//! durable with the next durable one, and a crash reverts to the last
//! durable commit, so the file stays consistent.
//!
//! Requests are validated by the caller before they are queued. If one
//! still fails while being applied (corrupt stored data), the transaction
//! is aborted and the batch re-applied without it, so one bad request
//! never fails the others. If the transaction cannot start or the commit
//! fails, every caller in the batch gets that error and nothing of the
//! batch is stored.
//!
//! # Invariant: every dirty record has a pending op
//!
//! A record with `dirty` set has, in `pending_ops`, the op of the write
//! that last set it: a `Put`/`Remove` of its `(map, key)` with the
//! record's timestamp, or a `Clear` of its map with that timestamp.
//! [`RedbStore::dirty_records`](super::RedbStore) relies on it, as there
//! is no index of dirty records. Each request keeps it:
//! - `write_local` stores the record dirty and appends its op, together;
//! - `clear_map` stores dirty tombstones at its timestamp and appends one
//!   `Clear` of the map (tombstones it leaves alone keep their own state);
//! - `mark_synced` moves an op out of `pending_ops` and cleans every
//!   record that op made dirty (the record of its key, or for a `Clear`
//!   every dirty record of the map, if it still carries the op's
//!   timestamp); a record it leaves dirty carries the timestamp of a
//!   later write, whose op is still pending (had it been synced, it would
//!   have cleaned the record);
//! - `apply_remote` only stores records clean;
//! - `prune_clean` only deletes clean records; `drop_synced` and
//!   `meta_put` touch neither records nor pending ops.
//!
//! The converse does not hold: a pending op's record may be clean (a
//! newer remote record replaced it, or another op of the key with the
//! same timestamp was synced).

use super::key_order::KeyOrder;
use super::merkle::Sums;
use super::tables::{
    backend, decode_op, decode_record, decode_record_head, encode_into, slot, Counters, OpRef,
    RecordRef, RecordValue, SharedError, Slot, META, PENDING_OPS, PRUNED, RECORDS, STORE_INFO,
    SYNCED_OPS,
};
use crate::error::StorageError;
use crate::model::{
    approx_record_size, ClearOutcome, LocalWrite, OpId, OpType, PruneSums, StoreRecord,
};
use redb::{Database, ReadableTable, ReadableTableMetadata, Table, WriteTransaction};
use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::oneshot;
use topgun_core::{MerkleSums, Timestamp};

/// Most requests applied in one transaction; bounds a batch's latency.
const MAX_BATCH: usize = 4096;

/// What a job answers: its arguments, handed back (so what they own is
/// freed, or moved on, by the caller rather than by the writer thread),
/// and its result.
pub(super) type Answer<A, T> = (A, Result<T, StorageError>);

/// One queued request, its arguments and where its answer goes.
#[derive(Debug)]
pub(super) struct Job<A, T> {
    args: A,
    reply: oneshot::Sender<Answer<A, T>>,
    /// `Some(Err)`: failed, skipped by later attempts of the batch.
    result: Option<Result<T, StorageError>>,
}

impl<A, T> Job<A, T> {
    /// A job and the receiver of its answer.
    pub(super) fn new(args: A) -> (Self, oneshot::Receiver<Answer<A, T>>) {
        let (reply, answer) = oneshot::channel();
        let job = Self {
            args,
            reply,
            result: None,
        };
        (job, answer)
    }

    fn failed(&self) -> bool {
        matches!(self.result, Some(Err(_)))
    }

    /// Applies the job; `false` if it failed (and the transaction must be
    /// rolled back).
    fn run(&mut self, apply: impl FnOnce(&A) -> Result<T, StorageError>) -> bool {
        if self.failed() {
            return true;
        }
        let result = apply(&self.args);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    /// Forgets a result computed in a transaction that was rolled back.
    fn reset(&mut self) {
        if !self.failed() {
            self.result = None;
        }
    }

    /// Fails a job that had not failed on its own.
    fn fail_with(&mut self, error: &SharedError, during: &'static str) {
        if !self.failed() {
            self.result = Some(Err(error.to_storage_error(during)));
        }
    }

    fn respond(self) {
        // Every job of a finished batch has a result; a dropped reply
        // would read as `Closed`. A caller that stopped waiting is fine.
        if let Some(result) = self.result {
            let _ = self.reply.send((self.args, result));
        }
    }
}

/// A request to the writer thread.
#[derive(Debug)]
pub(super) enum Request {
    /// [`Store::write_local`](crate::Store::write_local).
    WriteLocal(Job<LocalWrite, OpId>),
    /// [`Store::mark_synced`](crate::Store::mark_synced).
    MarkSynced(Job<Vec<OpId>, u64>),
    /// [`Store::drop_synced_ops`](crate::Store::drop_synced_ops).
    DropSynced(Job<(), u64>),
    /// [`Store::acknowledge`](crate::Store::acknowledge) (relaxed).
    Acknowledge(Job<Vec<OpId>, u64>),
    /// [`Store::apply_remote`](crate::Store::apply_remote).
    ApplyRemote(Job<Vec<StoreRecord>, Vec<Merged>>),
    /// [`Store::apply_remote_relaxed`](crate::Store::apply_remote_relaxed).
    ApplyRemoteRelaxed(Job<Vec<StoreRecord>, Vec<Merged>>),
    /// [`Store::clear_map`](crate::Store::clear_map).
    ClearMap(Job<(String, Timestamp), ClearOutcome>),
    /// [`Store::prune_clean`](crate::Store::prune_clean).
    PruneClean(Job<(String, Vec<String>, PruneSums), Vec<String>>),
    /// [`Store::meta_put`](crate::Store::meta_put).
    MetaPut(Job<(String, Vec<u8>), ()>),
    /// Stop after this batch; close the database if `db` is its last
    /// handle. Requests queued behind it are dropped (callers see
    /// [`StorageError::Closed`]).
    Close {
        /// The store's handle, handed over so the writer closes the file.
        db: Option<Arc<Database>>,
        /// Result of closing the database.
        reply: oneshot::Sender<Result<(), StorageError>>,
    },
}

impl Request {
    fn apply(&mut self, tables: &mut Tables<'_>) -> bool {
        match self {
            Self::WriteLocal(job) => job.run(|write| tables.write_local(write)),
            Self::MarkSynced(job) => job.run(|ids| tables.mark_synced(ids)),
            Self::DropSynced(job) => job.run(|()| tables.drop_synced()),
            Self::Acknowledge(job) => job.run(|ids| tables.acknowledge(ids)),
            Self::ApplyRemote(job) | Self::ApplyRemoteRelaxed(job) => {
                job.run(|records| tables.apply_remote(records))
            }
            Self::ClearMap(job) => job.run(|(map, ts)| tables.clear_map(map, ts)),
            Self::PruneClean(job) => {
                job.run(|(map, keys, sums)| tables.prune_clean(map, keys, *sums))
            }
            Self::MetaPut(job) => job.run(|(key, value)| tables.meta_put(key, value)),
            Self::Close { .. } => true,
        }
    }

    fn each_job(&mut self, f: impl FnOnce(&mut dyn JobState)) {
        match self {
            Self::WriteLocal(job) => f(job),
            Self::MarkSynced(job) => f(job),
            Self::DropSynced(job) => f(job),
            Self::Acknowledge(job) => f(job),
            Self::ApplyRemote(job) | Self::ApplyRemoteRelaxed(job) => f(job),
            Self::ClearMap(job) => f(job),
            Self::PruneClean(job) => f(job),
            Self::MetaPut(job) => f(job),
            Self::Close { .. } => {}
        }
    }

    /// Whether the request may resolve before its commit is durable.
    fn relaxed(&self) -> bool {
        matches!(self, Self::ApplyRemoteRelaxed(_) | Self::Acknowledge(_))
    }

    fn respond(self) {
        match self {
            Self::WriteLocal(job) => job.respond(),
            Self::MarkSynced(job) => job.respond(),
            Self::DropSynced(job) => job.respond(),
            Self::Acknowledge(job) => job.respond(),
            Self::ApplyRemote(job) | Self::ApplyRemoteRelaxed(job) => job.respond(),
            Self::ClearMap(job) => job.respond(),
            Self::PruneClean(job) => job.respond(),
            Self::MetaPut(job) => job.respond(),
            Self::Close { .. } => {}
        }
    }
}

/// The type-independent part of a [`Job`].
trait JobState {
    fn reset(&mut self);
    fn fail_with(&mut self, error: &SharedError, during: &'static str);
}

impl<A, T> JobState for Job<A, T> {
    fn reset(&mut self) {
        Job::reset(self);
    }
    fn fail_with(&mut self, error: &SharedError, during: &'static str) {
        Job::fail_with(self, error, during);
    }
}

/// Starts the writer thread.
pub(super) fn spawn(
    db: Arc<Database>,
    durability: redb::Durability,
    counters: Counters,
    sums: Option<Arc<Sums>>,
) -> std::io::Result<(Sender<Request>, JoinHandle<()>)> {
    let (sender, receiver) = std::sync::mpsc::channel();
    let writer = Writer {
        db,
        durability,
        counters,
        sums,
        scratch: Scratch::default(),
    };
    let handle = std::thread::Builder::new()
        .name("topgun-redb-writer".into())
        .spawn(move || writer.run(receiver))?;
    Ok((sender, handle))
}

/// Encoding buffers reused across writes.
#[derive(Debug, Default)]
struct Scratch {
    record: Vec<u8>,
    op: Vec<u8>,
}

struct Writer {
    db: Arc<Database>,
    durability: redb::Durability,
    /// Counters as of the last commit.
    counters: Counters,
    /// Merkle leaf sums as of the last commit; `None` when not kept.
    sums: Option<Arc<Sums>>,
    scratch: Scratch,
}

/// How one attempt at a batch ended.
enum Attempt {
    Committed,
    /// A request failed and was marked; the transaction was rolled back.
    Retry,
    /// The transaction could not start or commit.
    Failed(SharedError, &'static str),
}

impl Writer {
    fn run(mut self, requests: Receiver<Request>) {
        let mut batch = Vec::with_capacity(64);
        let mut close = None;
        while close.is_none() {
            let Ok(first) = requests.recv() else {
                break; // every sender is gone
            };
            let mut next = Some(first);
            while let Some(request) = next {
                match request {
                    Request::Close { db, reply } => {
                        close = Some((db, reply));
                        break;
                    }
                    request => batch.push(request),
                }
                next = if batch.len() < MAX_BATCH {
                    requests.try_recv().ok()
                } else {
                    None
                };
            }
            if !batch.is_empty() {
                self.process(&mut batch);
            }
        }
        // Requests still queued are dropped with the receiver.
        drop(requests);
        if let Err(error) = self.save_merkle() {
            tracing::warn!(%error, "saving Merkle leaf sums failed; the next open recomputes them");
        }
        let Self { db, .. } = self;
        drop(db);
        if let Some((store_db, reply)) = close {
            let result = match store_db.map(Arc::try_unwrap) {
                Some(Ok(db)) => db.close().map_err(backend("closing the database")),
                // Another handle keeps the file open; it closes when that
                // handle is dropped.
                Some(Err(_)) | None => Ok(()),
            };
            let _ = reply.send(result);
        }
    }

    /// Saves the Merkle leaf sums (and `merkle_saved` = 1) if changes since
    /// they were last saved left them stale.
    fn save_merkle(&mut self) -> Result<(), redb::Error> {
        let Some(sums) = &self.sums else {
            return Ok(());
        };
        if self.counters.merkle_saved == 1 {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        sums.save(&txn)?;
        let counters = Counters {
            merkle_saved: 1,
            ..self.counters
        };
        {
            let mut info = txn.open_table(STORE_INFO)?;
            counters.store(Some(&self.counters), &mut info)?;
        }
        txn.commit()?;
        self.counters = counters;
        Ok(())
    }

    /// Applies, commits and answers one batch.
    fn process(&mut self, batch: &mut Vec<Request>) {
        loop {
            match self.attempt(batch) {
                Attempt::Committed => break,
                Attempt::Retry => batch
                    .iter_mut()
                    .for_each(|request| request.each_job(|job| job.reset())),
                Attempt::Failed(error, during) => {
                    tracing::error!(%error, during, "redb store batch failed");
                    batch.iter_mut().for_each(|request| {
                        request.each_job(|job| job.fail_with(&error, during));
                    });
                    break;
                }
            }
        }
        batch.drain(..).for_each(Request::respond);
    }

    fn attempt(&mut self, batch: &mut [Request]) -> Attempt {
        let mut txn = match self.db.begin_write() {
            Ok(txn) => txn,
            Err(error) => return failed(error, "starting a write transaction"),
        };
        // Only a batch of nothing but relaxed requests skips the fsync; any
        // other request makes the commit durable, and with it every relaxed
        // commit before it.
        let durability = if batch.iter().all(Request::relaxed) {
            redb::Durability::None
        } else {
            self.durability
        };
        if let Err(error) = txn.set_durability(durability) {
            return failed(error, "setting the commit durability");
        }
        let (counters, changed_sums) = {
            let mut tables =
                match Tables::open(&txn, self.counters, &mut self.scratch, self.sums.as_deref()) {
                    Ok(tables) => tables,
                    Err(error) => return failed(error, "opening tables"),
                };
            if !batch.iter_mut().all(|request| request.apply(&mut tables)) {
                drop(tables);
                if let Err(error) = txn.abort() {
                    tracing::warn!(%error, "aborting a redb write transaction failed");
                }
                return Attempt::Retry;
            }
            let counters = tables.counters;
            if let Err(error) = counters.store(Some(&self.counters), &mut tables.info) {
                drop(tables);
                let _ = txn.abort();
                return failed(error, "writing counters");
            }
            (counters, std::mem::take(&mut tables.leaves))
        };
        match txn.commit() {
            Ok(()) => {
                self.counters = counters;
                if let Some(sums) = &self.sums {
                    sums.commit(changed_sums);
                }
                Attempt::Committed
            }
            Err(error) => failed(error, "committing a write transaction"),
        }
    }
}

fn failed(error: impl Into<redb::Error>, during: &'static str) -> Attempt {
    Attempt::Failed(SharedError(Arc::new(error.into())), during)
}

type Records<'t> = Table<'t, Slot<'static>, &'static [u8]>;
type Ops<'t> = Table<'t, OpId, &'static [u8]>;

/// The tables of one write transaction, and the counters as this
/// transaction has changed them.
struct Tables<'t> {
    records: Records<'t>,
    pending: Ops<'t>,
    synced: Ops<'t>,
    meta: Table<'t, &'static str, &'static [u8]>,
    info: Table<'t, &'static str, u64>,
    pruned: Table<'t, (&'static str, &'static str), u32>,
    /// The leaf sums as of the last commit; `None` when not kept.
    sums: Option<&'t Sums>,
    /// Per map, the leaf sums as this transaction changed them, published
    /// when it commits.
    leaves: HashMap<String, Vec<u32>>,
    counters: Counters,
    scratch: &'t mut Scratch,
}

/// A record of a merge that replaced the stored one (or was new).
#[derive(Debug)]
pub(super) struct Merged {
    /// Its place in the merge's input.
    pub(super) index: usize,
    /// The record it replaced, if any.
    pub(super) previous: Option<StoreRecord>,
}

/// What [`Tables::account`] needs of a replaced record.
struct Replaced {
    size: u64,
    dirty: bool,
    contribution: u32,
}

/// Keys in a row of a merge found absent after which the next ones are
/// inserted without a lookup first ([`Tables::merge_record_at`]).
const ABSENT_RUN: usize = 32;

const WRITING: &str = "writing";

impl<'t> Tables<'t> {
    fn open(
        txn: &'t WriteTransaction,
        counters: Counters,
        scratch: &'t mut Scratch,
        sums: Option<&'t Sums>,
    ) -> Result<Self, redb::TableError> {
        Ok(Self {
            records: txn.open_table(RECORDS)?,
            pending: txn.open_table(PENDING_OPS)?,
            synced: txn.open_table(SYNCED_OPS)?,
            meta: txn.open_table(META)?,
            info: txn.open_table(STORE_INFO)?,
            pruned: txn.open_table(PRUNED)?,
            sums,
            leaves: HashMap::new(),
            counters,
            scratch,
        })
    }

    /// Moves leaf `leaf` of `map_name` by `-sub + add`.
    fn shift_leaf(&mut self, map_name: &str, leaf: usize, sub: u32, add: u32) {
        if sub == add {
            return; // a flag changed, not the timestamp
        }
        // Stale now, whether or not this store keeps sums: a store that
        // keeps them must not trust sums saved before this change.
        self.counters.merkle_saved = 0;
        let Some(sums) = self.sums else {
            return;
        };
        if !self.leaves.contains_key(map_name) {
            self.leaves.insert(map_name.to_owned(), sums.of(map_name));
        }
        if let Some(leaves) = self.leaves.get_mut(map_name) {
            MerkleSums::shift(leaves, leaf, sub, add);
        }
    }

    /// Stores a record and updates the counters by the one it replaced.
    fn put_record(
        &mut self,
        map_name: &str,
        key: &str,
        record: &RecordRef<'_>,
    ) -> Result<(), StorageError> {
        self.put_record_at(slot(map_name, key), record)
    }

    /// [`put_record`](Self::put_record) at a slot already computed.
    fn put_record_at(&mut self, at: Slot<'_>, record: &RecordRef<'_>) -> Result<(), StorageError> {
        let (map_name, _, key) = at;
        encode_into(&mut self.scratch.record, "record", record)?;
        // The replaced record's size, flag and Merkle contribution, read in
        // place.
        let old = {
            let replaced = self
                .records
                .insert(at, self.scratch.record.as_slice())
                .map_err(backend(WRITING))?;
            match &replaced {
                Some(bytes) => {
                    let head = decode_record_head(bytes.value())?;
                    Some(Replaced {
                        size: head.approx_size(map_name, key),
                        dirty: head.dirty,
                        contribution: head.contribution(key).1,
                    })
                }
                None => None,
            }
        };
        self.account(at, record, old)
    }

    /// Merges `record` (clean) at `at` by LWW, inserting first: one
    /// descent when the new record wins; if the record it replaced is as
    /// new or newer, that one is put back (a second). `None` if the
    /// stored record stays, else the record replaced, if any.
    ///
    /// For merges that mostly bring keys the store lacks (a first pull);
    /// where most keys are present, looking the old record up first
    /// spares the write of a record that stays.
    fn merge_record_at(
        &mut self,
        at: Slot<'_>,
        record: &RecordRef<'_>,
    ) -> Result<Option<Option<RecordValue>>, StorageError> {
        let (map_name, _, key) = at;
        encode_into(&mut self.scratch.record, "record", record)?;
        let (previous, restore) = {
            let replaced = self
                .records
                .insert(at, self.scratch.record.as_slice())
                .map_err(backend(WRITING))?;
            match &replaced {
                None => (None, None),
                Some(bytes) => {
                    let old = decode_record(bytes.value())?;
                    if *record.timestamp <= old.timestamp {
                        (None, Some(bytes.value().to_vec()))
                    } else {
                        (Some(old), None)
                    }
                }
            }
        };
        if let Some(bytes) = restore {
            self.records
                .insert(at, bytes.as_slice())
                .map_err(backend(WRITING))?;
            return Ok(None);
        }
        let old = previous.as_ref().map(|old| {
            let t = &old.timestamp;
            Replaced {
                size: old.approx_size(map_name, key),
                dirty: old.dirty,
                contribution: MerkleSums::contribution(key, t.millis, t.counter, &t.node_id).1,
            }
        });
        self.account(at, record, old)?;
        Ok(Some(previous))
    }

    /// Updates the counters, the Merkle sums and the pruned stubs for
    /// `record`, just stored at `at` in place of `old`.
    fn account(
        &mut self,
        at: Slot<'_>,
        record: &RecordRef<'_>,
        old: Option<Replaced>,
    ) -> Result<(), StorageError> {
        let (map_name, _, key) = at;
        let sub = match &old {
            Some(o) => o.contribution,
            // A pruned record's contribution, replaced now. Looked up
            // first: a remove would rewrite the table's pages even when
            // the key is absent, as it nearly always is.
            None if self.counters.pruned == 0 => 0,
            None => {
                let stub = self
                    .pruned
                    .get((map_name, key))
                    .map_err(backend(WRITING))?
                    .map(|c| c.value());
                if stub.is_some() {
                    self.pruned
                        .remove((map_name, key))
                        .map_err(backend(WRITING))?;
                    self.counters.pruned -= 1;
                }
                stub.unwrap_or(0)
            }
        };
        let t = record.timestamp;
        let (leaf, add) = MerkleSums::contribution(key, t.millis, t.counter, &t.node_id);
        self.shift_leaf(map_name, leaf, sub, add);
        let c = &mut self.counters;
        c.bytes += approx_record_size(map_name, key, record.value, record.timestamp);
        let was_dirty = match old {
            Some(old) => {
                c.bytes = c.bytes.saturating_sub(old.size);
                old.dirty
            }
            None => {
                c.records += 1;
                false
            }
        };
        match (was_dirty, record.dirty) {
            (false, true) => c.dirty += 1,
            (true, false) => c.dirty = c.dirty.saturating_sub(1),
            _ => {}
        }
        Ok(())
    }

    fn append_op(&mut self, op: &OpRef<'_>) -> Result<OpId, StorageError> {
        let id = self.counters.next_op_id;
        encode_into(&mut self.scratch.op, "op", op)?;
        self.pending
            .insert(id, self.scratch.op.as_slice())
            .map_err(backend(WRITING))?;
        let c = &mut self.counters;
        c.next_op_id += 1;
        c.pending += 1;
        c.bytes += op.approx_size();
        Ok(id)
    }

    fn write_local(&mut self, write: &LocalWrite) -> Result<OpId, StorageError> {
        let record = RecordRef {
            value: write.value.as_deref(),
            timestamp: &write.timestamp,
            ttl_ms: write.ttl_ms,
            dirty: true,
        };
        self.put_record(&write.map_name, &write.key, &record)?;
        self.append_op(&OpRef {
            map_name: &write.map_name,
            op_type: write.op_type,
            key: &write.key,
            value: write.value.as_deref(),
            timestamp: &write.timestamp,
            ttl_ms: write.ttl_ms,
        })
    }

    /// Clears the dirty flag of `(map, key)` if the record carries
    /// `timestamp`.
    fn clean_if_at(
        &mut self,
        map_name: &str,
        key: &str,
        timestamp: &Timestamp,
    ) -> Result<(), StorageError> {
        let Some(record) = self
            .records
            .get(slot(map_name, key))
            .map_err(backend(WRITING))?
            .map(|bytes| decode_record(bytes.value()))
            .transpose()?
        else {
            return Ok(());
        };
        if record.dirty && record.timestamp == *timestamp {
            let clean = RecordRef {
                dirty: false,
                ..record.as_ref()
            };
            self.put_record(map_name, key, &clean)?;
        }
        Ok(())
    }

    /// Clears the dirty flag of every record of `map_name` that carries
    /// `timestamp`: what syncing a `Clear` op does. Scans the map's
    /// records (there is no dirty index), as `clear_map` does.
    fn clean_map_at(&mut self, map_name: &str, timestamp: &Timestamp) -> Result<(), StorageError> {
        let cleaned =
            self.records_of_map_where(map_name, |r| r.dirty && r.timestamp == *timestamp)?;
        for (key, record) in &cleaned {
            let clean = RecordRef {
                dirty: false,
                ..record.as_ref()
            };
            self.put_record(map_name, key, &clean)?;
        }
        Ok(())
    }

    /// The records of `map_name`, in key order, that satisfy `keep`.
    fn records_of_map_where(
        &self,
        map_name: &str,
        keep: impl Fn(&RecordValue) -> bool,
    ) -> Result<Vec<(String, RecordValue)>, StorageError> {
        let mut found = Vec::new();
        for row in KeyOrder::new(&self.records, map_name, None, WRITING)? {
            let (key, bytes) = row?;
            let record = decode_record(bytes.value())?;
            if keep(&record) {
                found.push((key, record));
            }
        }
        Ok(found)
    }

    fn mark_synced(&mut self, ids: &[OpId]) -> Result<u64, StorageError> {
        self.settle(ids, true)
    }

    /// `mark_synced` that deletes the ops instead of keeping them synced.
    fn acknowledge(&mut self, ids: &[OpId]) -> Result<u64, StorageError> {
        self.settle(ids, false)
    }

    /// Takes ops out of the pending table (into the synced table if
    /// `keep`) and cleans the records they wrote.
    fn settle(&mut self, ids: &[OpId], keep: bool) -> Result<u64, StorageError> {
        let mut changed = 0;
        for &id in ids {
            let Some(removed) = self.pending.remove(id).map_err(backend(WRITING))? else {
                continue; // unknown, already synced, or repeated
            };
            let bytes = removed.value().to_vec();
            drop(removed);
            let op = decode_op(&bytes)?;
            let size = op.approx_size();
            if keep {
                self.synced
                    .insert(id, bytes.as_slice())
                    .map_err(backend(WRITING))?;
            }
            let c = &mut self.counters;
            c.pending = c.pending.saturating_sub(1);
            if keep {
                c.synced_bytes += size;
            } else {
                c.bytes = c.bytes.saturating_sub(size);
            }
            changed += 1;
            if op.op_type == OpType::Clear {
                self.clean_map_at(&op.map_name, &op.timestamp)?;
            } else {
                self.clean_if_at(&op.map_name, &op.key, &op.timestamp)?;
            }
        }
        Ok(changed)
    }

    fn drop_synced(&mut self) -> Result<u64, StorageError> {
        let dropped = self.synced.len().map_err(backend(WRITING))?;
        self.synced.retain(|_, _| false).map_err(backend(WRITING))?;
        let c = &mut self.counters;
        c.bytes = c.bytes.saturating_sub(c.synced_bytes);
        c.synced_bytes = 0;
        Ok(dropped)
    }

    fn apply_remote(&mut self, records: &[StoreRecord]) -> Result<Vec<Merged>, StorageError> {
        // In slot order: the records of one bucket go in as one sorted run,
        // which fills B-tree pages (inserts spread over several buckets'
        // ranges would split pages half full). Sorted with the input index,
        // so a key's duplicates keep their order; changes are listed in
        // input order.
        let mut order: Vec<(Slot<'_>, usize)> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (slot(&r.map_name, &r.key), i))
            .collect();
        order.sort_unstable();
        let mut changes = Vec::new();
        // Looked up first while keys are found; once `ABSENT_RUN` in a row
        // were not, inserted first until one is.
        let mut absent_run = 0;
        for (at, i) in order {
            let record = &records[i];
            let (map_name, key) = (record.map_name.as_str(), record.key.as_str());
            let new = RecordRef {
                value: record.value.as_deref(),
                timestamp: &record.timestamp,
                ttl_ms: record.ttl_ms,
                dirty: false,
            };
            let previous = if absent_run >= ABSENT_RUN {
                let Some(previous) = self.merge_record_at(at, &new)? else {
                    absent_run = 0;
                    continue;
                };
                if previous.is_some() {
                    absent_run = 0;
                }
                previous
            } else {
                let previous = self
                    .records
                    .get(at)
                    .map_err(backend(WRITING))?
                    .map(|bytes| decode_record(bytes.value()))
                    .transpose()?;
                match &previous {
                    Some(old) if record.timestamp <= old.timestamp => {
                        absent_run = 0;
                        continue;
                    }
                    Some(_) => absent_run = 0,
                    None => absent_run += 1,
                }
                self.put_record_at(at, &new)?;
                previous
            };
            changes.push(Merged {
                index: i,
                previous: previous.map(|old| old.into_record(map_name, key)),
            });
        }
        changes.sort_unstable_by_key(|m| m.index);
        Ok(changes)
    }

    fn clear_map(
        &mut self,
        map_name: &str,
        timestamp: &Timestamp,
    ) -> Result<ClearOutcome, StorageError> {
        // Only records older than the clear: a write or merge that
        // committed in between with a newer timestamp wins, as LWW says.
        let removed_keys: Vec<String> = self
            .records_of_map_where(map_name, |r| r.value.is_some() && r.timestamp < *timestamp)?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let tombstone = RecordRef {
            value: None,
            timestamp,
            ttl_ms: None,
            dirty: true,
        };
        for key in &removed_keys {
            self.put_record(map_name, key, &tombstone)?;
        }
        let op_id = self.append_op(&OpRef {
            map_name,
            op_type: OpType::Clear,
            key: "",
            value: None,
            timestamp,
            ttl_ms: None,
        })?;
        Ok(ClearOutcome {
            op_id,
            removed_keys,
        })
    }

    fn prune_clean(
        &mut self,
        map_name: &str,
        keys: &[String],
        sums: PruneSums,
    ) -> Result<Vec<String>, StorageError> {
        let mut candidates = Vec::new();
        for key in keys {
            if let Some(bytes) = self
                .records
                .get(slot(map_name, key))
                .map_err(backend(WRITING))?
            {
                if !decode_record(bytes.value())?.dirty {
                    candidates.push(key);
                }
            }
        }
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        // Pending ops are few (they are what is not yet synced); one pass
        // finds those that refer to this map.
        let mut blocked = BTreeSet::new();
        for row in self.pending.iter().map_err(backend(WRITING))? {
            let (_, bytes) = row.map_err(backend(WRITING))?;
            let op = decode_op(bytes.value())?;
            if op.map_name == map_name {
                if op.op_type == OpType::Clear {
                    return Ok(Vec::new());
                }
                blocked.insert(op.key);
            }
        }
        let mut removed = Vec::new();
        for key in candidates {
            if blocked.contains(key) {
                continue;
            }
            // `None` when the key was listed twice and is already gone.
            let gone = match self
                .records
                .remove(slot(map_name, key))
                .map_err(backend(WRITING))?
            {
                Some(bytes) => {
                    let head = decode_record_head(bytes.value())?;
                    Some((head.approx_size(map_name, key), head.contribution(key)))
                }
                None => None,
            };
            if let Some((size, (leaf, contribution))) = gone {
                match sums {
                    PruneSums::Keep => {
                        let replaced = self
                            .pruned
                            .insert((map_name, key.as_str()), contribution)
                            .map_err(backend(WRITING))?;
                        if replaced.is_none() {
                            self.counters.pruned += 1;
                        }
                    }
                    PruneSums::Drop => self.shift_leaf(map_name, leaf, contribution, 0),
                }
                let c = &mut self.counters;
                c.records = c.records.saturating_sub(1);
                c.bytes = c.bytes.saturating_sub(size);
                removed.push(key.clone());
            }
        }
        Ok(removed)
    }

    fn meta_put(&mut self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.meta.insert(key, value).map_err(backend(WRITING))?;
        Ok(())
    }
}
