//! The records a store keeps.

use serde::{Deserialize, Serialize};
use topgun_core::Timestamp;

/// Identifier of an operation-log entry: starting at 1 and increasing in
/// the order ops are logged (not necessarily by one), never reused by a
/// store.
pub type OpId = u64;

/// The kind of a local write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OpType {
    /// A value was written.
    Put,
    /// The key was removed (a tombstone was written).
    Remove,
    /// The whole map was cleared.
    Clear,
}

/// A record's key and timestamp: what a Merkle tree is built from, read
/// without the value ([`Store::scan_stamps`](crate::Store::scan_stamps)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStamp {
    /// The record's key.
    pub key: String,
    /// Its timestamp (a tombstone's too).
    pub timestamp: Timestamp,
}

/// The current state of one `(map, key)` (`key_value_store`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreRecord {
    /// The map the record belongs to.
    pub map_name: String,
    /// The record's key within the map.
    pub key: String,
    /// The encoded value; `None` is a tombstone (`isDeleted`).
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// Timestamp of the write that produced this state.
    pub timestamp: Timestamp,
    /// Time to live in ms after `timestamp.millis`, if any.
    pub ttl_ms: Option<u64>,
    /// `true` while a local write to this record awaits a server ack.
    pub dirty: bool,
}

impl StoreRecord {
    /// Whether this record is a tombstone.
    pub fn is_deleted(&self) -> bool {
        self.value.is_none()
    }

    /// Whether readers see this record at wall time `now_millis`: not a
    /// tombstone and not expired by its TTL.
    pub fn is_live(&self, now_millis: u64) -> bool {
        self.value.is_some() && !topgun_core::lww::expired(&self.timestamp, self.ttl_ms, now_millis)
    }

    /// Approximate bytes this record occupies, for quota accounting.
    pub fn approx_size(&self) -> u64 {
        approx_record_size(
            &self.map_name,
            &self.key,
            self.value.as_deref(),
            &self.timestamp,
        )
    }
}

/// [`StoreRecord::approx_size`] from the parts, so backends can account
/// for a record without building a `StoreRecord`.
pub(crate) fn approx_record_size(
    map_name: &str,
    key: &str,
    value: Option<&[u8]>,
    timestamp: &Timestamp,
) -> u64 {
    approx_record_size_by_node(map_name, key, value, &timestamp.node_id)
}

/// [`approx_record_size`] given only the timestamp's node id, the one part
/// of it the size depends on.
pub(crate) fn approx_record_size_by_node(
    map_name: &str,
    key: &str,
    value: Option<&[u8]>,
    node_id: &str,
) -> u64 {
    (map_name.len() + key.len() + value.map_or(0, <[u8]>::len) + node_id.len() + 32) as u64
}

/// `key`'s Merkle leaf and its contribution to that leaf's sum at
/// `timestamp` (0 for none), for stores that keep leaf sums.
pub(crate) fn merkle_contribution(key: &str, timestamp: Option<&Timestamp>) -> (usize, u32) {
    match timestamp {
        Some(t) => topgun_core::MerkleSums::contribution(key, t.millis, t.counter, &t.node_id),
        None => (topgun_core::MerkleTree::leaf_of(key), 0),
    }
}

/// [`OpLogEntry::approx_size`] from the parts.
pub(crate) fn approx_op_size(
    map_name: &str,
    key: &str,
    value: Option<&[u8]>,
    timestamp: &Timestamp,
) -> u64 {
    (map_name.len() + key.len() + value.map_or(0, <[u8]>::len) + timestamp.node_id.len() + 40)
        as u64
}

/// A local write, as handed to [`Store::write_local`](crate::Store::write_local).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalWrite {
    /// Target map.
    pub map_name: String,
    /// Target key.
    pub key: String,
    /// [`OpType::Put`] or [`OpType::Remove`] (clear has its own call).
    pub op_type: OpType,
    /// Encoded value for a put; `None` for a remove.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// The write's HLC timestamp.
    pub timestamp: Timestamp,
    /// Time to live, for a put.
    pub ttl_ms: Option<u64>,
}

/// One entry of the operation log (`operation_log`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpLogEntry {
    /// Its id (see [`OpId`]).
    pub id: OpId,
    /// The map written.
    pub map_name: String,
    /// What kind of write.
    pub op_type: OpType,
    /// The key written (empty for [`OpType::Clear`]).
    pub key: String,
    /// Encoded value for a put.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// The write's timestamp.
    pub timestamp: Timestamp,
    /// Time to live, for a put.
    pub ttl_ms: Option<u64>,
    /// Whether a server acknowledged it.
    pub synced: bool,
}

impl OpLogEntry {
    /// Approximate bytes this entry occupies, for quota accounting.
    pub fn approx_size(&self) -> u64 {
        approx_op_size(
            &self.map_name,
            &self.key,
            self.value.as_deref(),
            &self.timestamp,
        )
    }
}

/// A record that changed in [`Store::apply_remote`](crate::Store::apply_remote).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedChange {
    /// The record before (`None` if the key was unknown).
    pub previous: Option<StoreRecord>,
    /// The record now stored.
    pub current: StoreRecord,
}

/// The result of [`Store::clear_map`](crate::Store::clear_map).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearOutcome {
    /// Id of the CLEAR op appended to the log.
    pub op_id: OpId,
    /// Keys that were live and are now tombstones, in key order.
    pub removed_keys: Vec<String>,
}

/// Counts and sizes, for quota decisions and status output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StoreStats {
    /// Records stored (tombstones included).
    pub records: u64,
    /// Records with `dirty` set.
    pub dirty_records: u64,
    /// Ops in the log not yet synced.
    pub pending_ops: u64,
    /// Approximate bytes of records and ops (synced ops included until
    /// dropped): the sum of [`StoreRecord::approx_size`] and
    /// [`OpLogEntry::approx_size`].
    pub bytes: u64,
}

/// What [`Store::prune_clean`](crate::Store::prune_clean) does to the
/// map's Merkle leaf sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PruneSums {
    /// Keep the pruned records' contributions, so a pull does not bring
    /// them back unasked (a quota sheds them; a read fetches one back).
    Keep,
    /// Subtract them, so the next pull brings the records back (a map
    /// reset at the server's request).
    Drop,
}
