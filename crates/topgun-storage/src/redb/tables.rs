//! The redb tables of a [`RedbStore`](super::RedbStore), the encoding of
//! their values, and the counters kept beside them.
//!
//! | table          | key              | value                          |
//! |----------------|------------------|--------------------------------|
//! | `records`      | `(map, key)`     | [`RecordValue`] (MessagePack)  |
//! | `pending_ops`  | op id            | [`OpValue`] of an unsynced op  |
//! | `synced_ops`   | op id            | [`OpValue`] of a synced op     |
//! | `meta`         | user key         | user bytes                     |
//! | `store_info`   | name             | `u64`: schema version, counters |
//!
//! There is no index of dirty records: the `dirty` flag lives in the
//! record, and the dirty records of a map are found through its pending
//! ops (see [`RedbStore::dirty_records`](super::RedbStore)). Keeping an
//! index cost a scattered B-tree page write per local write (see
//! `docs/decisions.md`, "RedbStore: no dirty index").
//!
//! Keys are redb tuples of `&str`, compared element by element, so no
//! separator is reserved and map `"a"` never sees the keys of map `"ab"`.
//! The store's own bookkeeping lives in `store_info`, apart from `meta`, so
//! no user meta key can clobber it.

use crate::error::StorageError;
use crate::model::{
    approx_op_size, approx_record_size, approx_record_size_by_node, OpId, OpLogEntry, OpType,
    StoreRecord,
};
use redb::{ReadableTable, TableDefinition};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use topgun_core::merkle::DEPTH;
use topgun_core::Timestamp;
use topgun_core::{MerkleSums, MerkleTree};

/// Current record of every `(map, key)`, keyed by its [`Slot`]: the
/// record's bucket sits between map and key (see [`bucket`]).
pub(super) const RECORDS: TableDefinition<'_, Slot<'_>, &[u8]> =
    TableDefinition::new("records_by_bucket");

/// The key of a record in [`RECORDS`]: `(map, bucket, key)`.
pub(super) type Slot<'a> = (&'a str, u8, &'a str);

/// Buckets of a map in [`RECORDS`].
pub(super) const BUCKETS: u8 = 1 << 4;

/// The bucket of `key`: the first hex digit of its Merkle path. A pull
/// brings a map's records leaf by leaf in path order, so the records of
/// one merge land in one or two buckets' key ranges instead of all over
/// the table, and each commit rewrites far fewer B-tree pages than it
/// would with `(map, key)` slots (`docs/decisions.md`, "redb: records by
/// bucket"). Scans in key order merge a map's buckets
/// ([`KeyOrder`](super::key_order::KeyOrder)).
pub(super) fn bucket(key: &str) -> u8 {
    // The top four bits of a 12-bit leaf index: below 16.
    (MerkleTree::leaf_of(key) >> (4 * (DEPTH - 1))) as u8
}

/// The [`Slot`] of `(map, key)`.
pub(super) fn slot<'a>(map_name: &'a str, key: &'a str) -> Slot<'a> {
    (map_name, bucket(key), key)
}
/// Unsynced ops by id.
pub(super) const PENDING_OPS: TableDefinition<'_, OpId, &[u8]> =
    TableDefinition::new("pending_ops");
/// Synced ops by id, until `drop_synced_ops`.
pub(super) const SYNCED_OPS: TableDefinition<'_, OpId, &[u8]> = TableDefinition::new("synced_ops");
/// User meta values.
pub(super) const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
/// Schema version and counters.
pub(super) const STORE_INFO: TableDefinition<'_, &str, u64> = TableDefinition::new("store_info");

/// `store_info` key of the schema version.
pub(super) const SCHEMA_VERSION_KEY: &str = "__schema_version";

/// Name of this backend in errors.
const BACKEND: &str = "redb";

/// A redb error as a [`StorageError::Backend`].
pub(super) fn backend<E: Into<redb::Error>>(
    during: &'static str,
) -> impl FnOnce(E) -> StorageError {
    move |error| StorageError::Backend {
        backend: BACKEND,
        during,
        source: Box::new(error.into()),
    }
}

/// One redb error, shared by every caller of a failed batch.
#[derive(Debug, Clone)]
pub(super) struct SharedError(pub(super) Arc<redb::Error>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl SharedError {
    /// This error as a [`StorageError::Backend`].
    pub(super) fn to_storage_error(&self, during: &'static str) -> StorageError {
        StorageError::Backend {
            backend: BACKEND,
            during,
            source: Box::new(self.clone()),
        }
    }
}

/// The stored form of a record, for encoding; map and key are the table
/// key. Encodes exactly as [`RecordValue`] decodes.
#[derive(Debug, Serialize)]
pub(super) struct RecordRef<'a> {
    #[serde(with = "serde_bytes")]
    pub(super) value: Option<&'a [u8]>,
    pub(super) timestamp: &'a Timestamp,
    pub(super) ttl_ms: Option<u64>,
    pub(super) dirty: bool,
}

/// The stored form of a record, decoded.
#[derive(Debug, Deserialize)]
pub(super) struct RecordValue {
    #[serde(with = "serde_bytes")]
    pub(super) value: Option<Vec<u8>>,
    pub(super) timestamp: Timestamp,
    pub(super) ttl_ms: Option<u64>,
    pub(super) dirty: bool,
}

impl RecordValue {
    /// The full record at `(map_name, key)`.
    pub(super) fn into_record(self, map_name: &str, key: impl Into<String>) -> StoreRecord {
        StoreRecord {
            map_name: map_name.to_owned(),
            key: key.into(),
            value: self.value,
            timestamp: self.timestamp,
            ttl_ms: self.ttl_ms,
            dirty: self.dirty,
        }
    }

    /// [`StoreRecord::approx_size`] of this record at `(map_name, key)`.
    pub(super) fn approx_size(&self, map_name: &str, key: &str) -> u64 {
        approx_record_size(map_name, key, self.value.as_deref(), &self.timestamp)
    }

    /// This record, for re-encoding.
    pub(super) fn as_ref(&self) -> RecordRef<'_> {
        RecordRef {
            value: self.value.as_deref(),
            timestamp: &self.timestamp,
            ttl_ms: self.ttl_ms,
            dirty: self.dirty,
        }
    }
}

/// The part of a stored record that replacing it needs (its size and
/// `dirty` flag), decoded in place: no copy of the value or node id.
/// Fields mirror [`RecordValue`] (and `Timestamp`), so it decodes the same
/// bytes.
#[derive(Debug, Deserialize)]
pub(super) struct RecordHead<'a> {
    #[serde(with = "serde_bytes", borrow)]
    value: Option<&'a [u8]>,
    #[serde(borrow)]
    timestamp: TimestampHead<'a>,
    #[serde(rename = "ttl_ms")]
    _ttl_ms: IgnoredAny,
    pub(super) dirty: bool,
}

/// A stored record's timestamp, decoded without copying the value.
/// Fields mirror [`RecordValue`], so it decodes the same bytes.
#[derive(Debug, Deserialize)]
pub(super) struct RecordStamp {
    #[serde(rename = "value")]
    _value: IgnoredAny,
    pub(super) timestamp: Timestamp,
    #[serde(rename = "ttl_ms")]
    _ttl_ms: IgnoredAny,
    #[serde(rename = "dirty")]
    _dirty: IgnoredAny,
}

/// Decodes a stored record's timestamp only.
pub(super) fn decode_record_stamp(bytes: &[u8]) -> Result<RecordStamp, StorageError> {
    decode("records", bytes)
}

/// A stored `Timestamp`, its node id borrowed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TimestampHead<'a> {
    millis: u64,
    counter: u32,
    node_id: &'a str,
}

impl RecordHead<'_> {
    /// [`RecordValue::approx_size`], from the head.
    pub(super) fn approx_size(&self, map_name: &str, key: &str) -> u64 {
        approx_record_size_by_node(map_name, key, self.value, self.timestamp.node_id)
    }

    /// The record's contribution to its Merkle leaf: (leaf, amount).
    pub(super) fn contribution(&self, key: &str) -> (usize, u32) {
        let t = &self.timestamp;
        MerkleSums::contribution(key, t.millis, t.counter, t.node_id)
    }
}

/// Per map and key, the Merkle contribution of a pruned record, until the
/// key is written again or the map's sums are rebuilt.
pub(super) const PRUNED: TableDefinition<'_, (&str, &str), u32> =
    TableDefinition::new("pruned_contributions");

/// Per map, its Merkle leaf sums (`Store::merkle_leaves`) as saved when the
/// store last closed: one row of `LEAVES` little-endian `u32`s (16 KiB).
/// Valid only while the `merkle_saved` counter is 1.
pub(super) const MERKLE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("merkle_leaves");

/// Leaf sums from their stored row (zeros for none).
pub(super) fn decode_leaves(bytes: Option<&[u8]>) -> Vec<u32> {
    let mut leaves = vec![0u32; topgun_core::merkle::LEAVES];
    if let Some(bytes) = bytes {
        for (slot, chunk) in leaves.iter_mut().zip(bytes.chunks_exact(4)) {
            *slot = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
    }
    leaves
}

/// The stored row of leaf sums.
pub(super) fn encode_leaves(leaves: &[u32]) -> Vec<u8> {
    leaves.iter().flat_map(|l| l.to_le_bytes()).collect()
}

/// The stored form of an op, for encoding; id and synced state come from
/// the table. Encodes exactly as [`OpValue`] decodes.
#[derive(Debug, Serialize)]
pub(super) struct OpRef<'a> {
    pub(super) map_name: &'a str,
    pub(super) op_type: OpType,
    pub(super) key: &'a str,
    #[serde(with = "serde_bytes")]
    pub(super) value: Option<&'a [u8]>,
    pub(super) timestamp: &'a Timestamp,
    pub(super) ttl_ms: Option<u64>,
}

impl OpRef<'_> {
    /// [`OpLogEntry::approx_size`] of this op.
    pub(super) fn approx_size(&self) -> u64 {
        approx_op_size(self.map_name, self.key, self.value, self.timestamp)
    }
}

/// The stored form of an op, decoded.
#[derive(Debug, Deserialize)]
pub(super) struct OpValue {
    pub(super) map_name: String,
    pub(super) op_type: OpType,
    pub(super) key: String,
    #[serde(with = "serde_bytes")]
    pub(super) value: Option<Vec<u8>>,
    pub(super) timestamp: Timestamp,
    pub(super) ttl_ms: Option<u64>,
}

impl OpValue {
    /// The log entry with this id.
    pub(super) fn into_entry(self, id: OpId, synced: bool) -> OpLogEntry {
        OpLogEntry {
            id,
            map_name: self.map_name,
            op_type: self.op_type,
            key: self.key,
            value: self.value,
            timestamp: self.timestamp,
            ttl_ms: self.ttl_ms,
            synced,
        }
    }

    /// [`OpLogEntry::approx_size`] of this op.
    pub(super) fn approx_size(&self) -> u64 {
        approx_op_size(
            &self.map_name,
            &self.key,
            self.value.as_deref(),
            &self.timestamp,
        )
    }
}

/// Encodes `value` into `buf` (cleared first).
pub(super) fn encode_into<T: Serialize>(
    buf: &mut Vec<u8>,
    what: &'static str,
    value: &T,
) -> Result<(), StorageError> {
    buf.clear();
    rmp_serde::encode::write(buf, value).map_err(|source| StorageError::Encode { what, source })
}

/// Decodes a stored value.
pub(super) fn decode<'a, T: Deserialize<'a>>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<T, StorageError> {
    rmp_serde::from_slice(bytes).map_err(|source| StorageError::Corrupt {
        what,
        source: Box::new(source),
    })
}

/// Decodes a stored record.
pub(super) fn decode_record(bytes: &[u8]) -> Result<RecordValue, StorageError> {
    decode("records", bytes)
}

/// Decodes what replacing a stored record needs of it.
pub(super) fn decode_record_head(bytes: &[u8]) -> Result<RecordHead<'_>, StorageError> {
    decode("records", bytes)
}

/// Decodes a stored op.
pub(super) fn decode_op(bytes: &[u8]) -> Result<OpValue, StorageError> {
    decode("op log", bytes)
}

/// Counters kept in `store_info`, updated in the same transaction as the
/// data they count, so `stats()` is a few point reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Counters {
    /// Id the next op gets; never decreases.
    pub(super) next_op_id: OpId,
    /// Rows of `records`.
    pub(super) records: u64,
    /// Rows of `records` with `dirty` set.
    pub(super) dirty: u64,
    /// Rows of `pending_ops`.
    pub(super) pending: u64,
    /// Approximate bytes of records and of ops in both op tables.
    pub(super) bytes: u64,
    /// The part of `bytes` in `synced_ops`.
    pub(super) synced_bytes: u64,
    /// 1 while `merkle_leaves` holds the leaf sums of the records as they
    /// are; the first change after saving them sets 0 (in its own
    /// transaction), so a crash leaves 0 and the next open recomputes.
    pub(super) merkle_saved: u64,
    /// Rows of `pruned_contributions`.
    pub(super) pruned: u64,
}

impl Counters {
    const KEYS: [&'static str; 8] = [
        "next_op_id",
        "records",
        "dirty_records",
        "pending_ops",
        "bytes",
        "synced_bytes",
        "merkle_saved",
        "pruned_stubs",
    ];

    fn as_array(&self) -> [u64; 8] {
        [
            self.next_op_id,
            self.records,
            self.dirty,
            self.pending,
            self.bytes,
            self.synced_bytes,
            self.merkle_saved,
            self.pruned,
        ]
    }

    /// Reads the counters; absent ones are 0 (`next_op_id`: 1).
    pub(super) fn load(info: &impl ReadableTable<&'static str, u64>) -> Result<Self, StorageError> {
        let mut values = [0_u64; 8];
        for (slot, key) in values.iter_mut().zip(Self::KEYS) {
            if let Some(value) = info.get(key).map_err(backend("reading counters"))? {
                *slot = value.value();
            }
        }
        let [next_op_id, records, dirty, pending, bytes, synced_bytes, merkle_saved, pruned] =
            values;
        Ok(Self {
            next_op_id: next_op_id.max(1),
            records,
            dirty,
            pending,
            bytes,
            synced_bytes,
            merkle_saved,
            pruned,
        })
    }

    /// Writes the counters that differ from `old` (all of them without
    /// `old`).
    pub(super) fn store(
        &self,
        old: Option<&Self>,
        info: &mut redb::Table<'_, &'static str, u64>,
    ) -> Result<(), redb::StorageError> {
        let old = old.map(Self::as_array);
        for (i, (key, new)) in Self::KEYS.iter().zip(self.as_array()).enumerate() {
            if old.is_none_or(|old| old[i] != new) {
                info.insert(*key, new)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A [`RecordHead`] reads the same bytes as a [`RecordValue`].
    #[test]
    fn record_head_decodes_stored_records() {
        let timestamp = Timestamp::new(1_700_000_000_000, 7, "node-1");
        let mut buf = Vec::new();
        for (value, ttl_ms, dirty) in [(Some(&b"value"[..]), Some(5), true), (None, None, false)] {
            let record = RecordRef {
                value,
                timestamp: &timestamp,
                ttl_ms,
                dirty,
            };
            encode_into(&mut buf, "record", &record).unwrap();
            let full = decode_record(&buf).unwrap();
            let head = decode_record_head(&buf).unwrap();
            assert_eq!(head.dirty, full.dirty);
            assert_eq!(head.approx_size("m", "k"), full.approx_size("m", "k"));
        }
    }
}
