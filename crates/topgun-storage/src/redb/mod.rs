//! [`RedbStore`]: the durable [`Store`] on a [redb](https://docs.rs/redb)
//! file (feature `redb`, native targets only).
//!
//! - **Reads** (`get`, `scan`, `pending_ops`, `stats`, …) run inline in the
//!   calling task on a redb read transaction: a consistent snapshot that
//!   never waits for writers.
//! - **Writes** go to one writer thread that applies everything queued in
//!   one transaction and commits once (group commit, see `writer.rs`); each
//!   call resolves after the commit that holds it is durable.
//! - The layout and encoding are in `tables.rs`; the schema version and
//!   migrations in `schema.rs`.
//!
//! ```no_run
//! # async fn example() -> Result<(), topgun_storage::StorageError> {
//! use topgun_storage::{RedbStore, Store};
//! let store = RedbStore::open("client.redb")?;
//! let maps = store.map_names().await?;
//! # drop(maps);
//! store.close().await?;
//! # Ok(())
//! # }
//! ```

mod key_order;
mod merkle;
mod schema;
mod tables;
mod writer;

use self::key_order::{slot_order, KeyOrder};
use self::tables::{
    backend, decode_op, decode_record, decode_record_stamp, slot, Counters, Slot, META,
    PENDING_OPS, PRUNED, RECORDS, STORE_INFO,
};
use self::writer::{Job, Merged, Request};
use crate::error::StorageError;
use crate::model::{
    AppliedChange, ClearOutcome, KeyStamp, LocalWrite, OpId, OpLogEntry, OpType, PruneSums,
    StoreRecord, StoreStats,
};
use crate::store::Store;
use crate::validate;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};
use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use tokio::sync::oneshot;
use topgun_core::Timestamp;

/// The newest schema version of the redb file this build reads and writes.
/// A file with a newer one fails to open with
/// [`StorageError::SchemaTooNew`].
pub const SUPPORTED_SCHEMA_VERSION: u32 = schema::SCHEMA_VERSION;

/// When a commit counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Each commit is on disk (fsynced) before the writes in it resolve. A
    /// crash loses nothing that was acknowledged. The default.
    #[default]
    Immediate,
    /// Commits are not fsynced: they become durable with the next
    /// `Immediate` commit or a clean close. A crash (of the process or the
    /// machine) may lose acknowledged writes, never consistency: the file
    /// reopens at an earlier commit. Much faster; for caches and tests.
    Eventual,
}

impl Durability {
    fn to_redb(self) -> redb::Durability {
        match self {
            Self::Immediate => redb::Durability::Immediate,
            Self::Eventual => redb::Durability::None,
        }
    }
}

/// Options for opening a [`RedbStore`].
///
/// ```no_run
/// use topgun_storage::{Durability, RedbStore};
/// let store = RedbStore::builder()
///     .durability(Durability::Eventual)
///     .open("cache.redb")?;
/// # Ok::<(), topgun_storage::StorageError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RedbStoreBuilder {
    durability: Durability,
    cache_size: Option<usize>,
    merkle_sums: bool,
}

impl Default for RedbStoreBuilder {
    fn default() -> Self {
        Self {
            durability: Durability::default(),
            cache_size: None,
            merkle_sums: true,
        }
    }
}

impl RedbStoreBuilder {
    /// When a commit counts as done; [`Durability::Immediate`] by default.
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Upper bound of redb's page cache in bytes (redb's default: 1 GiB).
    #[must_use]
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_size = Some(bytes);
        self
    }

    /// Whether to keep Merkle leaf sums ([`Store::merkle_leaves`]); on by
    /// default. A store whose user keeps its own trees (the server) turns
    /// them off; then `merkle_leaves` fails with
    /// [`StorageError::InvalidInput`]. Its writes still mark sums saved by
    /// another opening stale.
    #[must_use]
    pub fn merkle_sums(mut self, keep: bool) -> Self {
        self.merkle_sums = keep;
        self
    }

    /// Opens the store at `path`, creating the file if it does not exist,
    /// migrating an older schema, and starting the writer thread. Blocks on
    /// file I/O (including redb's recovery after a crash).
    ///
    /// # Errors
    /// - [`StorageError::SchemaTooNew`] if a newer TopGun wrote the file;
    ///   nothing was written to it.
    /// - [`StorageError::Backend`] if the file cannot be opened or created,
    ///   is not a redb file, is corrupt or truncated.
    /// - [`StorageError::Locked`] if the file is already open (in this
    ///   process or another).
    /// - [`StorageError::Corrupt`] if its tables hold undecodable values.
    ///
    /// A store that was not closed (its process was killed) recomputes its
    /// Merkle leaf sums here, reading every record once.
    pub fn open(&self, path: impl AsRef<Path>) -> Result<RedbStore, StorageError> {
        let path = path.as_ref();
        schema::refuse_newer(path)?;
        let mut builder = redb::Builder::new();
        if let Some(bytes) = self.cache_size {
            builder.set_cache_size(bytes);
        }
        let mut db = builder.create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StorageError::Locked {
                path: path.to_owned(),
            },
            other => backend("opening the database file")(other),
        })?;
        let counters = schema::open(&mut db)?;
        let sums = if self.merkle_sums {
            Some(merkle::Sums::load(&db, &counters)?)
        } else {
            None
        };
        let db = Arc::new(db);
        let (requests, writer) = writer::spawn(
            db.clone(),
            self.durability.to_redb(),
            counters,
            sums.clone(),
        )
        .map_err(|error| StorageError::Backend {
            backend: "redb",
            during: "starting the writer thread",
            source: Box::new(error),
        })?;
        Ok(RedbStore {
            db: RwLock::new(Some(db)),
            requests,
            writer: Mutex::new(Some(writer)),
            path: path.to_owned(),
            sums,
        })
    }
}

/// A durable [`Store`] on one redb file.
///
/// Share it behind an `Arc`; every method takes `&self`. Writes resolve
/// once committed with the configured [`Durability`] — a write whose
/// future is dropped early may still be committed. After
/// [`RedbStore::close`] every call fails with [`StorageError::Closed`].
/// Dropping the store also stops the writer and closes the file (blocking
/// until the current batch is committed).
pub struct RedbStore {
    /// `None` once closed. Reads hold the read lock only while they run
    /// (never across an await).
    db: RwLock<Option<Arc<Database>>>,
    requests: Sender<Request>,
    /// The Merkle leaf sums, as of the last commit; `None` when not kept.
    sums: Option<Arc<merkle::Sums>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const READING: &str = "reading";

const NO_SUMS: StorageError =
    StorageError::InvalidInput("this store was opened without Merkle leaf sums");

impl RedbStore {
    /// Opens (or creates) the store at `path` with the default options
    /// ([`Durability::Immediate`]). See [`RedbStoreBuilder::open`].
    ///
    /// # Errors
    /// As [`RedbStoreBuilder::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        Self::builder().open(path)
    }

    /// Options for opening a store.
    pub fn builder() -> RedbStoreBuilder {
        RedbStoreBuilder::default()
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the writer after the writes already queued are committed,
    /// waits for it, and closes the file (if no other handle holds it).
    /// Afterwards every call fails with [`StorageError::Closed`]. Closing
    /// twice is a no-op.
    ///
    /// # Errors
    /// [`StorageError::Backend`] if redb fails to close the file cleanly
    /// (the next open recovers it).
    pub async fn close(&self) -> Result<(), StorageError> {
        let Some(db) = self.take_db() else {
            return Ok(());
        };
        let (reply, closed) = oneshot::channel();
        let sent = self.requests.send(Request::Close {
            db: Some(db),
            reply,
        });
        let result = match sent {
            Ok(()) => closed.await.unwrap_or(Ok(())),
            // The writer is gone already; dropping `db` closes the file.
            Err(_) => Ok(()),
        };
        if let Some(writer) = self.take_writer() {
            // The writer has answered and is returning: this does not block
            // for long.
            if writer.join().is_err() {
                tracing::error!("the redb writer thread panicked");
            }
        }
        result
    }

    fn take_db(&self) -> Option<Arc<Database>> {
        self.db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn take_writer(&self) -> Option<JoinHandle<()>> {
        self.writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Runs `read` on a fresh read transaction.
    /// Up to `limit` records of `map_name` in `order` after `after`.
    fn records_in(
        &self,
        order: RowOrder,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.read(|txn| {
            let records = txn.open_table(RECORDS).map_err(backend(READING))?;
            map_rows(
                &records,
                map_name,
                after,
                limit,
                order,
                |map, key, bytes| Ok(Some(decode_record(bytes)?.into_record(map, key))),
            )
        })
    }

    /// [`records_in`](Self::records_in) without the values.
    fn stamps_in(
        &self,
        order: RowOrder,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        self.read(|txn| {
            let records = txn.open_table(RECORDS).map_err(backend(READING))?;
            map_rows(&records, map_name, after, limit, order, |_, key, bytes| {
                Ok(Some(KeyStamp {
                    key,
                    timestamp: decode_record_stamp(bytes)?.timestamp,
                }))
            })
        })
    }

    fn read<T>(
        &self,
        read: impl FnOnce(&ReadTransaction) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let db = db.as_ref().ok_or(StorageError::Closed)?;
        let txn = db
            .begin_read()
            .map_err(backend("starting a read transaction"))?;
        read(&txn)
    }

    /// Queues a write and waits for its commit.
    async fn write<A, T>(
        &self,
        args: A,
        request: fn(Job<A, T>) -> Request,
    ) -> Result<T, StorageError> {
        self.write_returning(args, request).await.1
    }

    /// As [`write`](Self::write), with the arguments handed back.
    async fn write_returning<A, T>(
        &self,
        args: A,
        request: fn(Job<A, T>) -> Request,
    ) -> (Option<A>, Result<T, StorageError>) {
        let (job, answer) = Job::new(args);
        if self.requests.send(request(job)).is_err() {
            return (None, Err(StorageError::Closed));
        }
        match answer.await {
            Ok((args, result)) => (Some(args), result),
            Err(_) => (None, Err(StorageError::Closed)),
        }
    }

    /// `apply_remote` in either durability: validates, then queues.
    async fn merge_remote(
        &self,
        records: Vec<StoreRecord>,
        request: fn(Job<Vec<StoreRecord>, Vec<Merged>>) -> Request,
    ) -> Result<Vec<AppliedChange>, StorageError> {
        validate::remote_records(&records)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let (records, merged) = self.write_returning(records, request).await;
        let merged = merged?;
        // The merged records move into the changes (the writer reported
        // them in input order, each once).
        let mut merged = merged.into_iter().peekable();
        let mut changes = Vec::with_capacity(merged.len());
        for (i, mut record) in records.unwrap_or_default().into_iter().enumerate() {
            let Some(m) = merged.next_if(|m| m.index == i) else {
                continue;
            };
            record.dirty = false;
            changes.push(AppliedChange {
                previous: m.previous,
                current: record,
            });
        }
        Ok(changes)
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        let db = self.take_db();
        let (reply, _) = oneshot::channel();
        let _ = self.requests.send(Request::Close { db, reply });
        if let Some(writer) = self.take_writer() {
            if writer.join().is_err() {
                tracing::error!("the redb writer thread panicked");
            }
        }
    }
}

/// The order [`map_rows`] reads a map in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowOrder {
    /// Key order ([`KeyOrder`]).
    Key,
    /// Slot order ([`slot_order`]): bucket by bucket.
    Slot,
}

/// Rows of `map_name` in the records table, in `order` after `after`;
/// `f` maps each row (map, key, stored record) and may skip it.
fn map_rows<T>(
    table: &impl ReadableTable<Slot<'static>, &'static [u8]>,
    map_name: &str,
    after: Option<&str>,
    limit: usize,
    order: RowOrder,
    mut f: impl FnMut(&str, String, &[u8]) -> Result<Option<T>, StorageError>,
) -> Result<Vec<T>, StorageError> {
    let mut out = Vec::new();
    if limit == 0 || map_name.is_empty() {
        return Ok(out);
    }
    let rows: Box<dyn Iterator<Item = _>> = match order {
        RowOrder::Key => Box::new(KeyOrder::new(table, map_name, after, READING)?),
        RowOrder::Slot => Box::new(slot_order(table, map_name, after, READING)?),
    };
    for row in rows {
        let (key, value) = row?;
        if let Some(item) = f(map_name, key, value.value())? {
            out.push(item);
            if out.len() == limit {
                break;
            }
        }
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Store for RedbStore {
    async fn write_local(&self, write: LocalWrite) -> Result<OpId, StorageError> {
        validate::local_write(&write)?;
        self.write(write, Request::WriteLocal).await
    }

    async fn get(&self, map_name: &str, key: &str) -> Result<Option<StoreRecord>, StorageError> {
        self.read(|txn| {
            let records = txn.open_table(RECORDS).map_err(backend(READING))?;
            let Some(bytes) = records.get(slot(map_name, key)).map_err(backend(READING))? else {
                return Ok(None);
            };
            Ok(Some(
                decode_record(bytes.value())?.into_record(map_name, key),
            ))
        })
    }

    async fn scan(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.records_in(RowOrder::Key, map_name, after, limit)
    }

    /// Bucket by bucket (each in key order): one range read, where
    /// [`Store::scan`] merges the map's buckets.
    async fn scan_in_store_order(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.records_in(RowOrder::Slot, map_name, after, limit)
    }

    async fn scan_stamps_in_store_order(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        self.stamps_in(RowOrder::Slot, map_name, after, limit)
    }

    async fn get_many(
        &self,
        map_name: &str,
        keys: &[String],
    ) -> Result<Vec<Option<StoreRecord>>, StorageError> {
        self.read(|txn| {
            let records = txn.open_table(RECORDS).map_err(backend(READING))?;
            keys.iter()
                .map(|key| {
                    let Some(bytes) = records.get(slot(map_name, key)).map_err(backend(READING))?
                    else {
                        return Ok(None);
                    };
                    Ok(Some(
                        decode_record(bytes.value())?.into_record(map_name, key),
                    ))
                })
                .collect()
        })
    }

    async fn scan_stamps(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        self.stamps_in(RowOrder::Key, map_name, after, limit)
    }

    /// Up to `limit` dirty records of a map in key order after `after`, as
    /// [`Store::dirty_records`] specifies.
    ///
    /// There is no index of dirty records (keeping one cost a scattered
    /// B-tree page write per local write); they are found through the
    /// pending ops, by the invariant the writer keeps (see `writer.rs`):
    /// every dirty record has a pending op of its `(map, key)`, or a pending
    /// `Clear` of its map. This call reads and decodes **every pending op**
    /// (O(pending ops), whatever `limit` is), collects the distinct keys of
    /// this map's ops greater than `after`, and reads those records in key
    /// order, keeping the dirty ones. While a `Clear` of the map is pending
    /// it scans the map's records in key order instead (O(records of the
    /// map)). Sync uses it for CLEAR expansion and status, never on the
    /// write path; a caller paging through many dirty records pays the
    /// pending-op pass once per page.
    async fn dirty_records(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        if limit == 0 || map_name.is_empty() {
            return Ok(Vec::new());
        }
        self.read(|txn| {
            let pending = txn.open_table(PENDING_OPS).map_err(backend(READING))?;
            let records = txn.open_table(RECORDS).map_err(backend(READING))?;
            let mut keys = BTreeSet::new();
            for row in pending.iter().map_err(backend(READING))? {
                let (_, bytes) = row.map_err(backend(READING))?;
                let op = decode_op(bytes.value())?;
                if op.map_name != map_name {
                    continue;
                }
                if op.op_type == OpType::Clear {
                    // One op stands for many dirty tombstones.
                    return map_rows(
                        &records,
                        map_name,
                        after,
                        limit,
                        RowOrder::Key,
                        |map, key, bytes| {
                            let record = decode_record(bytes)?;
                            Ok(record.dirty.then(|| record.into_record(map, key)))
                        },
                    );
                }
                if after.is_none_or(|after| op.key.as_str() > after) {
                    keys.insert(op.key);
                }
            }
            let mut out = Vec::new();
            for key in keys {
                let Some(bytes) = records
                    .get(slot(map_name, key.as_str()))
                    .map_err(backend(READING))?
                else {
                    continue; // cannot happen: pending ops keep their record
                };
                let record = decode_record(bytes.value())?;
                if record.dirty {
                    out.push(record.into_record(map_name, key));
                    if out.len() == limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    async fn pending_ops(
        &self,
        after: Option<OpId>,
        limit: usize,
    ) -> Result<Vec<OpLogEntry>, StorageError> {
        self.read(|txn| {
            let pending = txn.open_table(PENDING_OPS).map_err(backend(READING))?;
            let start = after.map_or(Bound::Unbounded, Bound::Excluded);
            pending
                .range::<OpId>((start, Bound::Unbounded))
                .map_err(backend(READING))?
                .take(limit)
                .map(|row| {
                    let (id, bytes) = row.map_err(backend(READING))?;
                    Ok(decode_op(bytes.value())?.into_entry(id.value(), false))
                })
                .collect()
        })
    }

    async fn mark_synced(&self, ids: &[OpId]) -> Result<u64, StorageError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.write(ids.to_vec(), Request::MarkSynced).await
    }

    async fn acknowledge(&self, ids: &[OpId]) -> Result<u64, StorageError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.write(ids.to_vec(), Request::Acknowledge).await
    }

    async fn drop_synced_ops(&self) -> Result<u64, StorageError> {
        self.write((), Request::DropSynced).await
    }

    async fn apply_remote(
        &self,
        records: Vec<StoreRecord>,
    ) -> Result<Vec<AppliedChange>, StorageError> {
        self.merge_remote(records, Request::ApplyRemote).await
    }

    /// As [`Store::apply_remote`], committed without an fsync when no
    /// durable write shares the commit ([`redb::Durability::None`]): redb
    /// persists it with the next durable commit, and a crash before that
    /// reopens the file at the last durable commit.
    async fn apply_remote_relaxed(
        &self,
        records: Vec<StoreRecord>,
    ) -> Result<Vec<AppliedChange>, StorageError> {
        self.merge_remote(records, Request::ApplyRemoteRelaxed)
            .await
    }

    async fn clear_map(
        &self,
        map_name: &str,
        timestamp: Timestamp,
    ) -> Result<ClearOutcome, StorageError> {
        validate::map(map_name)?;
        self.write((map_name.to_owned(), timestamp), Request::ClearMap)
            .await
    }

    async fn prune_clean(
        &self,
        map_name: &str,
        keys: &[String],
        sums: PruneSums,
    ) -> Result<Vec<String>, StorageError> {
        validate::map(map_name)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.write(
            (map_name.to_owned(), keys.to_vec(), sums),
            Request::PruneClean,
        )
        .await
    }

    async fn map_names(&self) -> Result<Vec<String>, StorageError> {
        self.read(|txn| {
            let records = txn.open_table(RECORDS).map_err(backend(READING))?;
            let mut names = Vec::new();
            let mut next: Option<String> = None;
            loop {
                // Jump from map to map: `(m + "\0", "")` is the smallest
                // slot after every key of map `m`.
                let start = match &next {
                    Some(map) => Bound::Included((map.as_str(), 0, "")),
                    None => Bound::Unbounded,
                };
                let mut rows = records
                    .range::<Slot<'_>>((start, Bound::Unbounded))
                    .map_err(backend(READING))?;
                let Some(row) = rows.next() else {
                    return Ok(names);
                };
                let (slot, _) = row.map_err(backend(READING))?;
                let map = slot.value().0;
                names.push(map.to_owned());
                next = Some(format!("{map}\0"));
            }
        })
    }

    async fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.read(|txn| {
            let meta = txn.open_table(META).map_err(backend(READING))?;
            let value = meta.get(key).map_err(backend(READING))?;
            Ok(value.map(|v| v.value().to_vec()))
        })
    }

    async fn meta_put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        self.write((key.to_owned(), value), Request::MetaPut).await
    }

    async fn merkle_leaves(&self, map_name: &str) -> Result<Vec<u32>, StorageError> {
        match &self.sums {
            Some(sums)
                if self
                    .db
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_some() =>
            {
                Ok(sums.of(map_name))
            }
            Some(_) => Err(StorageError::Closed),
            None => Err(NO_SUMS),
        }
    }

    async fn is_pruned(&self, map_name: &str, key: &str) -> Result<bool, StorageError> {
        self.read(|txn| {
            let pruned = txn.open_table(PRUNED).map_err(backend(READING))?;
            Ok(pruned
                .get((map_name, key))
                .map_err(backend(READING))?
                .is_some())
        })
    }

    async fn stats(&self) -> Result<StoreStats, StorageError> {
        self.read(|txn| {
            let info = txn.open_table(STORE_INFO).map_err(backend(READING))?;
            let c = Counters::load(&info)?;
            Ok(StoreStats {
                records: c.records,
                dirty_records: c.dirty,
                pending_ops: c.pending,
                bytes: c.bytes,
            })
        })
    }
}
