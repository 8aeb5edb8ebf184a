//! The [`Store`] trait: what every storage backend offers.

use crate::cursor::ScanCursor;
use crate::error::StorageError;
use crate::model::{
    AppliedChange, ClearOutcome, KeyStamp, LocalWrite, OpId, OpLogEntry, PruneSums, StoreRecord,
    StoreStats,
};
use crate::paged::Paged;
use topgun_core::Timestamp;

/// A storage backend: records, operation log and meta, with the atomic
/// writes local-first sync needs.
///
/// Futures are `Send` on native targets and `?Send` on wasm (IndexedDB
/// handles are not `Send`). All methods take `&self`; implementations are
/// internally synchronised and safe to share behind an `Arc`.
///
/// Map names and keys are arbitrary non-empty UTF-8 strings (`:`, `/`,
/// `\0`, any Unicode); backends must not reserve separators in them, and
/// map `"a"` never sees the keys of map `"ab"`. Writing methods reject an
/// empty map name or key with [`StorageError::InvalidInput`]; reading
/// methods treat them as matching nothing.
///
/// Every writing method is all-or-nothing: on an error, nothing it was
/// asked to do was stored. Every write is durable (as far as the backend
/// promises) when its future resolves, except
/// [`Store::apply_remote_relaxed`]. The conformance suite
/// (`topgun_storage::conformance`, feature `testing`) pins these rules
/// down for every backend.
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
pub trait Store: std::fmt::Debug + crate::SendSync {
    /// Applies one local write atomically: stores the record (value or
    /// tombstone, `dirty = true`) **and** appends its op (`synced = false`)
    /// in one transaction, and returns the new op id. Returns only once the
    /// write is as durable as the backend promises.
    ///
    /// The record is replaced unconditionally (the caller's HLC makes local
    /// writes newer than anything stored). Op ids strictly increase and are
    /// never reused, even after [`Store::drop_synced_ops`]; a rejected
    /// write consumes no id.
    ///
    /// # Errors
    /// [`StorageError::InvalidInput`] for an empty map name or key, a `Put`
    /// without a value, a `Remove` with one, or a `Clear` op type (use
    /// [`Store::clear_map`]); backend errors otherwise. In every error case
    /// nothing was written.
    async fn write_local(&self, write: LocalWrite) -> Result<OpId, StorageError>;

    /// [`Store::write_local`] for a caller that has not read the key: the
    /// write is applied only if the key has no record or one with an older
    /// timestamp, and the answer carries the record it replaced (the caller
    /// publishes its old value). Backends that can read it in the write's
    /// own transaction override this; the default reads with
    /// [`Store::get`] first, which is atomic only for callers that
    /// serialise their writes per key (the client does).
    ///
    /// # Errors
    /// [`StorageError::Stale`] with the stored timestamp when the stored
    /// record is as new as the write or newer (nothing is written; stamp
    /// again after it); otherwise as [`Store::write_local`].
    async fn write_local_checked(
        &self,
        write: LocalWrite,
    ) -> Result<(OpId, Option<StoreRecord>), StorageError> {
        crate::validate::local_write(&write)?;
        let previous = self.get(&write.map_name, &write.key).await?;
        if let Some(stored) = previous.as_ref().filter(|p| p.timestamp >= write.timestamp) {
            return Err(StorageError::Stale {
                current: stored.timestamp.clone(),
            });
        }
        let op_id = self.write_local(write).await?;
        Ok((op_id, previous))
    }

    /// [`Store::write_local_checked`] for several writes, answered in
    /// their order, each as that call would answer it on its own (a stale
    /// or invalid write is refused alone; the others are written).
    /// Backends that can store the writes together override this
    /// (IndexedDB: one transaction, its records read in one go, its ops
    /// logged in the writes' order); the default runs them concurrently,
    /// which groups them where the backend groups concurrent commits, and
    /// logs their ops in whatever order they commit (the writes are meant
    /// to be of distinct keys, as the client's are).
    async fn write_local_checked_many(
        &self,
        writes: Vec<LocalWrite>,
    ) -> Vec<Result<(OpId, Option<StoreRecord>), StorageError>> {
        let writes = writes
            .into_iter()
            .map(|write| self.write_local_checked(write));
        futures_util::future::join_all(writes).await
    }

    /// The record of `(map, key)`, tombstones included; `None` if the key
    /// was never stored (or was pruned).
    async fn get(&self, map_name: &str, key: &str) -> Result<Option<StoreRecord>, StorageError>;

    /// The records of `keys` of a map, in the order of `keys` (`None` for
    /// a key without a record), read at one point in time where the
    /// backend allows. Backends override it to read in one transaction.
    async fn get_many(
        &self,
        map_name: &str,
        keys: &[String],
    ) -> Result<Vec<Option<StoreRecord>>, StorageError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(map_name, key).await?);
        }
        Ok(out)
    }

    /// Up to `limit` records of a map (tombstones included) in key order
    /// (byte-wise, as `str` orders), starting after key `after` (exclusive;
    /// `None` starts at the first key; `after` need not exist). Page through
    /// a map by passing the last key of each page (or with a
    /// [`ScanCursor`](crate::ScanCursor)). A page shorter than `limit` is
    /// the last: no record of the map follows it. `limit == 0` returns an
    /// empty page.
    async fn scan(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError>;

    /// [`Store::scan`] in the store's own order, for readers that need
    /// every record of a map but not key order (a sorted query, a count).
    /// The order is fixed for a store and pages resume after the last key
    /// of the previous page, with [`Store::scan`]'s other paging rules.
    /// Key order unless a backend has a cheaper one: `RedbStore` keeps a
    /// map's records in buckets and reads them bucket by bucket.
    async fn scan_in_store_order(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.scan(map_name, after, limit).await
    }

    /// [`Store::scan_stamps`] in the store's own order, the order of
    /// [`Store::scan_in_store_order`].
    async fn scan_stamps_in_store_order(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        self.scan_stamps(map_name, after, limit).await
    }

    /// [`Store::scan`] without the values: each record's key and timestamp
    /// (tombstones included), with the same paging rules. Backends that
    /// can skip decoding values override it.
    async fn scan_stamps(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        Ok(self
            .scan(map_name, after, limit)
            .await?
            .into_iter()
            .map(|r| KeyStamp {
                key: r.key,
                timestamp: r.timestamp,
            })
            .collect())
    }

    /// Up to `limit` dirty records of a map in key order, after key `after`
    /// (same paging rules as [`Store::scan`]).
    async fn dirty_records(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError>;

    /// Up to `limit` unsynced ops in id order with id greater than `after`
    /// (`None`: from the first). Synced ops are never returned, even before
    /// [`Store::drop_synced_ops`] deletes them.
    async fn pending_ops(
        &self,
        after: Option<OpId>,
        limit: usize,
    ) -> Result<Vec<OpLogEntry>, StorageError>;

    /// Marks the given ops synced, in one transaction. For each, the record
    /// it wrote loses its `dirty` flag if the record still carries that op's
    /// timestamp (a newer local write keeps it dirty; a newer remote record
    /// is already clean). For a `Clear` op, that is every dirty record of
    /// the map with the clear's timestamp. Unknown, already synced or
    /// repeated ids are ignored. Returns how many ops changed state.
    async fn mark_synced(&self, ids: &[OpId]) -> Result<u64, StorageError>;

    /// Ops a server acknowledged, in one transaction: marks them synced as
    /// [`Store::mark_synced`] does (records carrying an op's timestamp lose
    /// `dirty`) and deletes them from the log at once. Returns how many ops
    /// changed state; unknown ids are ignored.
    ///
    /// The commit may be relaxed (not fsynced): a crash can undo it, which
    /// only makes those ops pending again — they are resent, and a server
    /// treats a resent op as a no-op — and their records dirty again, in the
    /// same transaction, so the two always agree. The default calls
    /// `mark_synced` then `drop_synced_ops`.
    async fn acknowledge(&self, ids: &[OpId]) -> Result<u64, StorageError> {
        let changed = self.mark_synced(ids).await?;
        self.drop_synced_ops().await?;
        Ok(changed)
    }

    /// Deletes every synced op from the log; pending ops stay. Returns how
    /// many were dropped. Dropped ids are never reused.
    async fn drop_synced_ops(&self) -> Result<u64, StorageError>;

    /// Merges records from a server by the LWW rule, in one transaction:
    /// each record replaces the stored one only if its timestamp is
    /// strictly greater (or the key is unknown); an equal timestamp keeps
    /// the stored record. Applied records are stored clean (`dirty =
    /// false`, whatever the input says); replacing a dirty local record
    /// leaves its pending op in the log. Records are applied in input
    /// order, so a later duplicate of a key competes with an earlier one.
    /// Returns the changes in input order, one per record that replaced
    /// something.
    ///
    /// # Errors
    /// [`StorageError::InvalidInput`] if any record has an empty map name
    /// or key; then none is applied.
    async fn apply_remote(
        &self,
        records: Vec<StoreRecord>,
    ) -> Result<Vec<AppliedChange>, StorageError>;

    /// [`Store::apply_remote`] for records that can be fetched again from
    /// their server (a client's Merkle pull or a server's change event):
    /// the same merge, result and errors, but the transaction may resolve
    /// before it is durable. A crash may lose such a transaction and every
    /// relaxed one after it — the store then reopens at an earlier
    /// consistent state, and a client re-pulls what its rebuilt Merkle
    /// tree lacks — but never a write that resolved as durable: a durable
    /// transaction also makes every earlier relaxed one durable. Never use
    /// it for records the caller acknowledges to anyone (a server's commit
    /// path uses [`Store::apply_remote`]).
    ///
    /// The default applies the records durably, with
    /// [`Store::apply_remote`].
    ///
    /// # Errors
    /// As [`Store::apply_remote`].
    async fn apply_remote_relaxed(
        &self,
        records: Vec<StoreRecord>,
    ) -> Result<Vec<AppliedChange>, StorageError> {
        self.apply_remote(records).await
    }

    /// Clears a map locally in one transaction: every live record older
    /// than `timestamp` becomes a dirty tombstone at `timestamp` (without
    /// TTL; a record with a newer timestamp — a write that raced the clear
    /// — stays, as LWW says), and one `Clear` op
    /// (key `""`) is appended — even if the map holds nothing. Existing
    /// tombstones are left as they are. Other maps are untouched.
    ///
    /// # Errors
    /// [`StorageError::InvalidInput`] for an empty map name.
    async fn clear_map(
        &self,
        map_name: &str,
        timestamp: Timestamp,
    ) -> Result<ClearOutcome, StorageError>;

    /// Removes the given records of a map if they are clean (not dirty) and
    /// no pending op refers to them — neither a `Put`/`Remove` of that key
    /// nor a `Clear` of the map; others (and unknown keys) are left alone.
    /// Returns the keys removed, in input order. Used to shed synced data
    /// under a storage quota ([`PruneSums::Keep`]: the records stay in the
    /// map's Merkle leaf sums, and [`is_pruned`](Self::is_pruned) knows
    /// them until their key is written again), and to drop a map's synced
    /// copy on a server's reset request ([`PruneSums::Drop`]: they leave
    /// the sums, in the same transaction).
    ///
    /// # Errors
    /// [`StorageError::InvalidInput`] for an empty map name.
    async fn prune_clean(
        &self,
        map_name: &str,
        keys: &[String],
        sums: PruneSums,
    ) -> Result<Vec<String>, StorageError>;

    /// Whether `key` of `map_name` is a record pruned with
    /// [`PruneSums::Keep`] and not written since: the server has it, and a
    /// read may fetch it back.
    async fn is_pruned(&self, map_name: &str, key: &str) -> Result<bool, StorageError>;

    /// Names of the maps that have at least one record (a tombstone counts),
    /// in order.
    async fn map_names(&self) -> Result<Vec<String>, StorageError>;

    /// How many records `map_name` holds, tombstones included (what a
    /// full [`Store::scan`] of it returns). Backends that count without
    /// reading the records override it; `IndexedDbStore` counts its
    /// `mapName_dirty` index.
    async fn count_records(&self, map_name: &str) -> Result<u64, StorageError> {
        let mut pages = ScanCursor::new(map_name, COUNT_PAGE);
        let mut count = 0;
        while let Some(page) = pages.next_stamps(self).await? {
            count += page.len() as u64;
        }
        Ok(count)
    }

    /// The Merkle leaf sums of `map_name`: [`LEAVES`] numbers, each the
    /// sum of its keys' contributions ([`MerkleSums::contribution`]) over
    /// every record of the map, tombstones included, and the records
    /// pruned with [`PruneSums::Keep`] (so that a pull does not bring them
    /// back). A record change and its contribution are one atomic step, so
    /// the sums agree with the records, across crashes too (a store may
    /// recompute them after one); a client starts its sync from them
    /// without reading the map.
    ///
    /// [`LEAVES`]: topgun_core::merkle::LEAVES
    /// [`MerkleSums::contribution`]: topgun_core::MerkleSums::contribution
    async fn merkle_leaves(&self, map_name: &str) -> Result<Vec<u32>, StorageError>;

    /// A meta value; `None` if never set.
    async fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Sets a meta value (durably), replacing any previous one. Meta keys
    /// are a namespace of their own: any string, the empty one included.
    async fn meta_put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError>;

    /// Counts and approximate sizes of the whole store. Durable backends
    /// keep these as counters updated in each write transaction rather than
    /// scanning the data on each call.
    async fn stats(&self) -> Result<StoreStats, StorageError>;
}

/// Stamps per page of the default [`Store::count_records`].
const COUNT_PAGE: usize = 1024;

#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
impl<S: Store + ?Sized> Paged for S {
    async fn page(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.scan(map_name, after, limit).await
    }

    async fn stamp_page(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        self.scan_stamps(map_name, after, limit).await
    }

    async fn page_in_store_order(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.scan_in_store_order(map_name, after, limit).await
    }

    async fn stamp_page_in_store_order(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        self.scan_stamps_in_store_order(map_name, after, limit)
            .await
    }
}
