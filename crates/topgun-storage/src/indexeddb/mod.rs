//! [`IndexedDbStore`]: the [`Store`] in the browser's IndexedDB (feature
//! `indexeddb`, wasm32 only), with the `idb` crate.
//!
//! The object stores and indexes are TopGun's browser client's
//! ([`schema`]); the layout of each stored object, which is this crate's
//! own, is in [`codec`], and the counters and Merkle sums are kept as a
//! base plus deltas ([`delta`]). Writes go through one queue that
//! groups them into few read-write transactions ([`writer`]); each write
//! is all-or-nothing, and a local write stores its record and appends its
//! op in one transaction. Reads use read-only transactions of their own;
//! `get`s issued together share one ([`reader`]); a page of stored objects
//! crosses into wasm as one packed buffer ([`page`]).
//!
//! Transactions use the browser's default durability: a committed write
//! survives a crash or close of the tab and of the browser; like every
//! IndexedDB page, it may be lost if the operating system itself crashes
//! right after the commit.

mod codec;
mod completion;
mod delta;
mod js;
mod ops;
mod page;
mod range;
mod read;
mod reader;
mod schema;
mod txn;
mod writer;

use crate::error::StorageError;
use crate::model::{
    AppliedChange, ClearOutcome, LocalWrite, OpId, OpLogEntry, PruneSums, StoreRecord, StoreStats,
};
use crate::store::Store;
use crate::validate;
use ops::{WriteOp, WriteOutcome};
use std::rc::Rc;
use topgun_core::Timestamp;
use writer::Writer;

pub use schema::INDEXEDDB_SCHEMA_VERSION;

/// The database name TopGun's browser client uses.
pub const DEFAULT_DATABASE_NAME: &str = "hz_client_db";

/// A [`Store`] in one IndexedDB database of the page's origin.
///
/// Several stores (in several tabs) may open the same database; each
/// transaction sees a consistent state. Not `Send`: IndexedDB handles
/// belong to the thread (tab or worker) that opened them.
#[derive(Debug, Clone)]
pub struct IndexedDbStore {
    writer: Rc<Writer>,
    reader: Rc<reader::Reader>,
}

impl IndexedDbStore {
    /// Opens (creating or upgrading) database [`DEFAULT_DATABASE_NAME`].
    ///
    /// # Errors
    /// As [`IndexedDbStore::open_named`].
    pub async fn open() -> Result<Self, StorageError> {
        Self::open_named(DEFAULT_DATABASE_NAME).await
    }

    /// Opens (creating or upgrading) database `name`.
    ///
    /// # Errors
    /// [`StorageError::SchemaTooNew`] if the database was written by a
    /// newer version of this library (it is left untouched);
    /// [`StorageError::Backend`] if IndexedDB is missing or refuses (a
    /// private window that disallows it, say).
    pub async fn open_named(name: &str) -> Result<Self, StorageError> {
        let (database, handle) = schema::open(name).await?;
        let writer = Writer::new(database, handle);
        Ok(Self {
            reader: reader::Reader::new(writer.clone()),
            writer,
        })
    }

    /// The database's name.
    pub fn name(&self) -> String {
        self.writer.database().name()
    }

    /// Closes the connection once its running transactions finish; later
    /// calls fail.
    pub fn close(&self) {
        self.writer.database().close();
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StorageError> {
        self.writer.submit(op).await
    }
}

/// The outcome a write op answers with; any other is a bug in this module.
macro_rules! expect_outcome {
    ($outcome:expr, $variant:ident) => {
        match $outcome {
            WriteOutcome::$variant(value) => Ok(value),
            other => unreachable!("a write answered {other:?}"),
        }
    };
}

/// The answer of a checked local write (`Store::write_local_checked`).
fn checked_answer(outcome: WriteOutcome) -> Result<(OpId, Option<StoreRecord>), StorageError> {
    match outcome {
        WriteOutcome::Checked(op_id, previous) => Ok((op_id, previous)),
        WriteOutcome::Stale(current) => Err(StorageError::Stale { current }),
        other => unreachable!("a write answered {other:?}"),
    }
}

#[async_trait::async_trait(?Send)]
impl Store for IndexedDbStore {
    async fn write_local(&self, write: LocalWrite) -> Result<OpId, StorageError> {
        validate::local_write(&write)?;
        expect_outcome!(self.write(WriteOp::Local(write)).await?, OpId)
    }

    /// Reads the stored record in the write's own transaction.
    async fn write_local_checked(
        &self,
        write: LocalWrite,
    ) -> Result<(OpId, Option<StoreRecord>), StorageError> {
        validate::local_write(&write)?;
        checked_answer(self.write(WriteOp::LocalChecked(write)).await?)
    }

    /// One job of the write queue: the writes share a transaction, their
    /// records read in one go.
    async fn write_local_checked_many(
        &self,
        writes: Vec<LocalWrite>,
    ) -> Vec<Result<(OpId, Option<StoreRecord>), StorageError>> {
        // An invalid write is answered alone; the valid ones go together.
        let mut answers: Vec<Option<Result<_, StorageError>>> = Vec::with_capacity(writes.len());
        let mut valid = Vec::with_capacity(writes.len());
        for write in writes {
            match validate::local_write(&write) {
                Ok(()) => {
                    answers.push(None);
                    valid.push(write);
                }
                Err(error) => answers.push(Some(Err(error))),
            }
        }
        let outcomes: Vec<Result<_, StorageError>> = if valid.is_empty() {
            Vec::new()
        } else {
            let count = valid.len();
            match self.write(WriteOp::LocalCheckedMany(valid)).await {
                Ok(WriteOutcome::Many(outcomes)) => {
                    outcomes.into_iter().map(checked_answer).collect()
                }
                Ok(other) => unreachable!("a write answered {other:?}"),
                Err(error) => (0..count).map(|_| Err(writer::replicate(&error))).collect(),
            }
        };
        let mut outcomes = outcomes.into_iter();
        answers
            .into_iter()
            .map(|answer| answer.unwrap_or_else(|| outcomes.next().expect("one outcome per write")))
            .collect()
    }

    async fn get(&self, map_name: &str, key: &str) -> Result<Option<StoreRecord>, StorageError> {
        self.reader.get(map_name, key).await
    }

    async fn get_many(
        &self,
        map_name: &str,
        keys: &[String],
    ) -> Result<Vec<Option<StoreRecord>>, StorageError> {
        // Issued together, the reads share one transaction (see `reader`).
        let reads = keys.iter().map(|key| self.reader.get(map_name, key));
        futures_util::future::try_join_all(reads).await
    }

    async fn scan(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        read::scan(self.writer.database(), map_name, after, limit).await
    }

    async fn count_records(&self, map_name: &str) -> Result<u64, StorageError> {
        read::count_records(self.writer.database(), map_name).await
    }

    async fn dirty_records(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        read::dirty_records(self.writer.database(), map_name, after, limit).await
    }

    async fn pending_ops(
        &self,
        after: Option<OpId>,
        limit: usize,
    ) -> Result<Vec<OpLogEntry>, StorageError> {
        read::pending_ops(self.writer.database(), after, limit).await
    }

    async fn mark_synced(&self, ids: &[OpId]) -> Result<u64, StorageError> {
        expect_outcome!(self.write(WriteOp::MarkSynced(ids.to_vec())).await?, Count)
    }

    async fn acknowledge(&self, ids: &[OpId]) -> Result<u64, StorageError> {
        expect_outcome!(self.write(WriteOp::Acknowledge(ids.to_vec())).await?, Count)
    }

    async fn drop_synced_ops(&self) -> Result<u64, StorageError> {
        expect_outcome!(self.write(WriteOp::DropSynced).await?, Count)
    }

    async fn apply_remote(
        &self,
        records: Vec<StoreRecord>,
    ) -> Result<Vec<AppliedChange>, StorageError> {
        validate::remote_records(&records)?;
        expect_outcome!(self.write(WriteOp::Remote(records)).await?, Changes)
    }

    async fn clear_map(
        &self,
        map_name: &str,
        timestamp: Timestamp,
    ) -> Result<ClearOutcome, StorageError> {
        validate::map(map_name)?;
        expect_outcome!(
            self.write(WriteOp::Clear(map_name.to_owned(), timestamp))
                .await?,
            Cleared
        )
    }

    async fn prune_clean(
        &self,
        map_name: &str,
        keys: &[String],
        sums: PruneSums,
    ) -> Result<Vec<String>, StorageError> {
        validate::map(map_name)?;
        let keys = keys.iter().filter(|k| !k.is_empty()).cloned().collect();
        expect_outcome!(
            self.write(WriteOp::Prune(map_name.to_owned(), keys, sums))
                .await?,
            Keys
        )
    }

    async fn is_pruned(&self, map_name: &str, key: &str) -> Result<bool, StorageError> {
        read::is_pruned(self.writer.database(), map_name, key).await
    }

    async fn map_names(&self) -> Result<Vec<String>, StorageError> {
        read::map_names(self.writer.database()).await
    }

    async fn merkle_leaves(&self, map_name: &str) -> Result<Vec<u32>, StorageError> {
        delta::merkle_leaves(self.writer.database(), map_name).await
    }

    async fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        read::meta_get(self.writer.database(), key).await
    }

    async fn meta_put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        match self.write(WriteOp::MetaPut(key.to_owned(), value)).await? {
            WriteOutcome::Done => Ok(()),
            other => unreachable!("a write answered {other:?}"),
        }
    }

    async fn stats(&self) -> Result<StoreStats, StorageError> {
        read::stats(self.writer.database()).await
    }
}
