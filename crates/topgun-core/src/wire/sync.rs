//! Merkle delta pull: `SYNC_INIT` (flat), `MERKLE_REQ_BUCKET` and the
//! server's `SYNC_RESP_*` / `SYNC_RESET_REQUIRED` answers (in `payload`).
//!
//! Hashes are the `u32` values of [`crate::merkle`]; JavaScript peers may
//! send them as whole floats, which are accepted.

use super::WireRecord;
use crate::hlc::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `SYNC_INIT` (client → server, flat): start a Merkle pull for one map.
/// The server answers with `SYNC_RESP_ROOT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncInit {
    /// The map to sync.
    pub map_name: String,
    /// The client's root hash, if it sends it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::lenient::opt_u32"
    )]
    pub root_hash: Option<u32>,
    /// The client's top-level bucket hashes (hex digit → hash).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::lenient::opt_hash_map"
    )]
    pub bucket_hashes: Option<BTreeMap<String, u32>>,
    /// Millis of the client's last completed sync; 0 on a fresh client.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::flex::opt_u64"
    )]
    pub last_sync_timestamp: Option<u64>,
}

/// `MERKLE_REQ_BUCKET` payload (client → server): ask for the children of
/// the node at `path` (or, at leaf depth, its records). A server answers
/// every request, with an empty response for a path it does not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MerkleReqBucket {
    /// The map being synced.
    pub map_name: String,
    /// The node's path: hex digits from the root, `""` for the root.
    pub path: String,
}

/// `SYNC_RESP_ROOT` payload (server → client): the server's root hash for
/// the map, and its clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRespRoot {
    /// The map being synced.
    pub map_name: String,
    /// The server's root hash.
    #[serde(deserialize_with = "crate::flex::u32")]
    pub root_hash: u32,
    /// The server's HLC when it answered.
    pub timestamp: Timestamp,
}

/// `SYNC_RESP_BUCKETS` payload (server → client): the children of an
/// inner node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRespBuckets {
    /// The map being synced.
    pub map_name: String,
    /// The inner node's path.
    pub path: String,
    /// Child hex digit → child hash; only non-empty children are listed.
    #[serde(deserialize_with = "super::lenient::hash_map")]
    pub buckets: BTreeMap<String, u32>,
}

/// `SYNC_RESP_LEAF` payload (server → client): the records of a leaf
/// bucket, merged by the client with the LWW rule. Tombstones travel as
/// records with `value: null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRespLeaf {
    /// The map being synced.
    pub map_name: String,
    /// The leaf's path.
    pub path: String,
    /// The leaf's records.
    pub records: Vec<LeafRecord>,
}

/// One key and its record in a [`SyncRespLeaf`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeafRecord {
    /// The key.
    pub key: String,
    /// Its current record, possibly a tombstone.
    pub record: WireRecord,
}

/// `SYNC_RESET_REQUIRED` payload (server → client): drop the local copy of
/// the map and pull it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncResetRequired {
    /// The map to reset.
    pub map_name: String,
    /// Why.
    pub reason: String,
}
