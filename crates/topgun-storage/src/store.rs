//! The [`Store`] trait: what every storage backend offers.

use crate::error::StorageError;
use crate::model::{
    AppliedChange, ClearOutcome, LocalWrite, OpId, OpLogEntry, StoreRecord, StoreStats,
};
use topgun_core::Timestamp;

/// A storage backend: records, operation log and meta, with the atomic
/// writes local-first sync needs.
///
/// Futures are `Send` on native targets and `?Send` on wasm (IndexedDB
/// handles are not `Send`). All methods take `&self`; implementations are
/// internally synchronised and safe to share behind an `Arc`.
///
/// Map names and keys are arbitrary non-empty UTF-8 strings; backends must
/// not reserve separators in them.
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
pub trait Store: std::fmt::Debug + crate::SendSync {
    /// Applies one local write atomically: stores the record (value or
    /// tombstone, `dirty = true`) **and** appends its op (`synced = false`)
    /// in one transaction, and returns the new op id. Returns only once the
    /// write is as durable as the backend promises.
    ///
    /// The record is replaced unconditionally (the caller's HLC makes local
    /// writes newer than anything stored).
    ///
    /// # Errors
    /// [`StorageError::InvalidInput`] for an empty map name or key, or a
    /// `Clear` op type (use [`Store::clear_map`]); backend errors otherwise,
    /// in which case nothing was written.
    async fn write_local(&self, write: LocalWrite) -> Result<OpId, StorageError>;

    /// The record of `(map, key)`, tombstones included; `None` if the key
    /// was never stored (or was pruned).
    async fn get(&self, map_name: &str, key: &str) -> Result<Option<StoreRecord>, StorageError>;

    /// Up to `limit` records of a map (tombstones included) in key order,
    /// starting after key `after` (exclusive; `None` starts at the first
    /// key). Page through a map by passing the last key of each page.
    async fn scan(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError>;

    /// Up to `limit` dirty records of a map in key order, after key `after`.
    async fn dirty_records(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError>;

    /// Up to `limit` unsynced ops in id order with id greater than `after`
    /// (`None`: from the first).
    async fn pending_ops(
        &self,
        after: Option<OpId>,
        limit: usize,
    ) -> Result<Vec<OpLogEntry>, StorageError>;

    /// Marks the given ops synced, in one transaction. For each, the record
    /// it wrote loses its `dirty` flag if the record still carries that op's
    /// timestamp (a newer local write keeps it dirty). Unknown or already
    /// synced ids are ignored. Returns how many ops changed state.
    async fn mark_synced(&self, ids: &[OpId]) -> Result<u64, StorageError>;

    /// Deletes every synced op from the log. Returns how many were dropped.
    async fn drop_synced_ops(&self) -> Result<u64, StorageError>;

    /// Merges records from a server by the LWW rule, in one transaction:
    /// each record replaces the stored one only if its timestamp is
    /// strictly greater (or the key is unknown). Applied records are stored
    /// clean (`dirty = false`, whatever the input says). Returns the changes
    /// in input order, one per record that replaced something.
    async fn apply_remote(
        &self,
        records: Vec<StoreRecord>,
    ) -> Result<Vec<AppliedChange>, StorageError>;

    /// Clears a map locally in one transaction: every live record becomes a
    /// dirty tombstone at `timestamp`, and one `Clear` op is appended.
    async fn clear_map(
        &self,
        map_name: &str,
        timestamp: Timestamp,
    ) -> Result<ClearOutcome, StorageError>;

    /// Removes the given records of a map if they are clean (not dirty) and
    /// no pending op refers to them; others are left alone. Returns the
    /// keys removed. Used to shed synced data under a storage quota, and to
    /// drop a map's synced copy on a server's reset request.
    async fn prune_clean(
        &self,
        map_name: &str,
        keys: &[String],
    ) -> Result<Vec<String>, StorageError>;

    /// Names of the maps that have at least one record, in order.
    async fn map_names(&self) -> Result<Vec<String>, StorageError>;

    /// A meta value.
    async fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;

    /// Sets a meta value (durably).
    async fn meta_put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError>;

    /// Counts and approximate sizes of the whole store.
    async fn stats(&self) -> Result<StoreStats, StorageError>;
}
