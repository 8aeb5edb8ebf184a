//! How records, ops and internal meta entries are laid out in IndexedDB.
//!
//! - `key_value_store` holds `{mapName, key, dirty, body}` per record:
//!   `mapName` and `key` as binary keys (UTF-8 bytes, so that IndexedDB
//!   orders them byte-wise, as `str` does), `dirty` as `0` / `1`
//!   (booleans are not valid keys, so an index over them would be empty),
//!   and `body`, the value, timestamp and TTL as MessagePack bytes: one
//!   `Uint8Array` is the cheapest thing to clone out of IndexedDB and into
//!   wasm memory.
//! - `operation_log` holds `{id, mapName, key, opType, synced, body}`
//!   with `synced` as `0` / `1`.
//! - `meta_store` keys the application's meta values by their string key;
//!   the store's own entries (Merkle leaf sums, pruned records, counters)
//!   use array keys, which can never equal a string.

use super::js::{self, array, bytes, field, set, to_bytes};
use crate::error::StorageError;
use crate::model::{OpId, OpLogEntry, OpType, StoreRecord};
use serde::{Deserialize, Serialize};
use topgun_core::merkle::LEAVES;
use topgun_core::Timestamp;
use wasm_bindgen::JsValue;

/// A record's or op's stored body.
#[derive(Serialize)]
struct BodyRef<'a> {
    value: Option<&'a serde_bytes::Bytes>,
    timestamp: &'a Timestamp,
    ttl_ms: Option<u64>,
}

#[derive(Deserialize)]
struct Body {
    value: Option<serde_bytes::ByteBuf>,
    timestamp: Timestamp,
    ttl_ms: Option<u64>,
}

fn encode_body(
    value: Option<&[u8]>,
    timestamp: &Timestamp,
    ttl_ms: Option<u64>,
) -> Result<JsValue, StorageError> {
    let body = BodyRef {
        value: value.map(serde_bytes::Bytes::new),
        timestamp,
        ttl_ms,
    };
    let encoded = rmp_serde::to_vec(&body).map_err(|source| StorageError::Encode {
        what: "a record",
        source,
    })?;
    Ok(bytes(&encoded))
}

fn decode_body(object: &JsValue, what: &'static str) -> Result<Body, StorageError> {
    let raw = to_bytes(&field(object, "body")?).ok_or_else(|| corrupt(what, "no body bytes"))?;
    rmp_serde::from_slice(&raw).map_err(|e| StorageError::Corrupt {
        what,
        source: Box::new(e),
    })
}

/// A [`StorageError::Corrupt`] with a message.
pub(crate) fn corrupt(what: &'static str, message: &str) -> StorageError {
    StorageError::Corrupt {
        what,
        source: message.into(),
    }
}

fn flag(value: bool) -> JsValue {
    JsValue::from_f64(if value { 1.0 } else { 0.0 })
}

fn read_flag(object: &JsValue, name: &'static str) -> Result<bool, StorageError> {
    Ok(field(object, name)?.as_f64() == Some(1.0))
}

fn utf8(raw: Vec<u8>, what: &'static str) -> Result<String, StorageError> {
    String::from_utf8(raw).map_err(|e| StorageError::Corrupt {
        what,
        source: Box::new(e),
    })
}

fn binary_string(
    object: &JsValue,
    name: &'static str,
    what: &'static str,
) -> Result<String, StorageError> {
    let raw =
        to_bytes(&field(object, name)?).ok_or_else(|| corrupt(what, "a name is not binary"))?;
    utf8(raw, what)
}

/// The primary key of `(map, key)` in `key_value_store`.
pub(crate) fn record_key(map_name: &str, key: &str) -> JsValue {
    array(&[bytes(map_name.as_bytes()), bytes(key.as_bytes())])
}

/// The key range of `map_name`'s records after `after` (all of them
/// with `None`).
pub(crate) fn map_range(
    map_name: &str,
    after: Option<&str>,
) -> Result<idb::KeyRange, StorageError> {
    // `[map]` sorts before every `[map, key]`; `[map ++ "\0"]` after them
    // and before every record of any later map.
    let (lower, lower_open) = match after {
        Some(key) => (record_key(map_name, key), true),
        None => (array(&[bytes(map_name.as_bytes())]), false),
    };
    idb::KeyRange::bound(&lower, &next_map(map_name), Some(lower_open), Some(true))
        .map_err(js::idb_error("building a key range"))
}

/// The smallest `[map]` key after every record of `map_name`.
pub(crate) fn next_map(map_name: &str) -> JsValue {
    let mut next = map_name.as_bytes().to_vec();
    next.push(0);
    array(&[bytes(&next)])
}

/// The key of `[map_name, dirty]` in the `mapName_dirty` index.
pub(crate) fn dirty_key(map_name: &str) -> JsValue {
    array(&[bytes(map_name.as_bytes()), flag(true)])
}

/// A record as stored in `key_value_store`.
pub(crate) fn record_to_js(record: &StoreRecord) -> Result<JsValue, StorageError> {
    let object: JsValue = js_sys::Object::new().into();
    set(&object, "mapName", &bytes(record.map_name.as_bytes()))?;
    set(&object, "key", &bytes(record.key.as_bytes()))?;
    set(&object, "dirty", &flag(record.dirty))?;
    set(
        &object,
        "body",
        &encode_body(record.value.as_deref(), &record.timestamp, record.ttl_ms)?,
    )?;
    Ok(object)
}

/// A stored record back from `key_value_store`.
pub(crate) fn record_from_js(object: &JsValue) -> Result<StoreRecord, StorageError> {
    let map_name = binary_string(object, "mapName", "key_value_store")?;
    record_of_map(map_name, object)
}

/// A stored record of a map already known (read from that map's range),
/// without decoding its `mapName` again.
pub(crate) fn record_of_map(
    map_name: String,
    object: &JsValue,
) -> Result<StoreRecord, StorageError> {
    const WHAT: &str = "key_value_store";
    let body = decode_body(object, WHAT)?;
    Ok(StoreRecord {
        map_name,
        key: binary_string(object, "key", WHAT)?,
        value: body.value.map(serde_bytes::ByteBuf::into_vec),
        timestamp: body.timestamp,
        ttl_ms: body.ttl_ms,
        dirty: read_flag(object, "dirty")?,
    })
}

fn op_type_name(op_type: OpType) -> &'static str {
    match op_type {
        OpType::Put => "PUT",
        OpType::Remove => "REMOVE",
        OpType::Clear => "CLEAR",
    }
}

/// An op as added to `operation_log` (IndexedDB assigns `id`).
pub(crate) fn op_to_js(
    map_name: &str,
    op_type: OpType,
    key: &str,
    value: Option<&[u8]>,
    timestamp: &Timestamp,
    ttl_ms: Option<u64>,
) -> Result<JsValue, StorageError> {
    let object: JsValue = js_sys::Object::new().into();
    set(&object, "mapName", &JsValue::from_str(map_name))?;
    set(&object, "key", &JsValue::from_str(key))?;
    set(&object, "opType", &JsValue::from_str(op_type_name(op_type)))?;
    set(&object, "synced", &flag(false))?;
    set(&object, "body", &encode_body(value, timestamp, ttl_ms)?)?;
    Ok(object)
}

/// An op back from `operation_log`.
pub(crate) fn op_from_js(object: &JsValue) -> Result<OpLogEntry, StorageError> {
    const WHAT: &str = "operation_log";
    let body = decode_body(object, WHAT)?;
    let text = |name: &'static str| {
        field(object, name)?
            .as_string()
            .ok_or_else(|| corrupt(WHAT, "a name is not a string"))
    };
    let op_type = match text("opType")?.as_str() {
        "PUT" => OpType::Put,
        "REMOVE" => OpType::Remove,
        "CLEAR" => OpType::Clear,
        _ => return Err(corrupt(WHAT, "unknown opType")),
    };
    Ok(OpLogEntry {
        id: op_id(&field(object, "id")?)?,
        map_name: text("mapName")?,
        op_type,
        key: text("key")?,
        value: body.value.map(serde_bytes::ByteBuf::into_vec),
        timestamp: body.timestamp,
        ttl_ms: body.ttl_ms,
        synced: read_flag(object, "synced")?,
    })
}

/// An op's stored object with `synced` set.
pub(crate) fn mark_op_synced(object: &JsValue) -> Result<(), StorageError> {
    set(object, "synced", &flag(true))
}

/// An op id from its JS key.
pub(crate) fn op_id(key: &JsValue) -> Result<OpId, StorageError> {
    key.as_f64()
        .filter(|id| *id >= 1.0 && id.fract() == 0.0)
        .map(|id| id as OpId)
        .ok_or_else(|| corrupt("operation_log", "an op id is not a positive integer"))
}

/// The JS key of an op id.
pub(crate) fn op_key(id: OpId) -> JsValue {
    JsValue::from_f64(id as f64)
}

/// The meta key of an application meta value.
pub(crate) fn app_meta_key(key: &str) -> JsValue {
    JsValue::from_str(key)
}

/// Leaves per stored chunk of a map's Merkle leaf sums: a write reads
/// and rewrites only the chunk of its key's leaf (256 bytes), not all
/// [`LEAVES`] sums (16 KiB).
pub(crate) const SUMS_CHUNK: usize = 64;

/// The meta key of chunk `chunk` of `map_name`'s Merkle leaf sums.
pub(crate) fn sums_key(map_name: &str, chunk: usize) -> JsValue {
    array(&[
        JsValue::from_str("merkle"),
        bytes(map_name.as_bytes()),
        JsValue::from_f64(chunk as f64),
    ])
}

/// The key range of every chunk of `map_name`'s sums.
pub(crate) fn sums_range(map_name: &str) -> Result<idb::KeyRange, StorageError> {
    let prefix = |at: f64| {
        array(&[
            JsValue::from_str("merkle"),
            bytes(map_name.as_bytes()),
            JsValue::from_f64(at),
        ])
    };
    idb::KeyRange::bound(
        &prefix(0.0),
        &prefix((LEAVES / SUMS_CHUNK) as f64),
        Some(false),
        Some(true),
    )
    .map_err(js::idb_error("building a key range"))
}

/// The chunk number of a sums key.
pub(crate) fn sums_chunk_of(key: &JsValue) -> Result<usize, StorageError> {
    js_sys::Reflect::get_u32(key, 2)
        .ok()
        .and_then(|n| n.as_f64())
        .filter(|n| *n >= 0.0 && (*n as usize) < LEAVES / SUMS_CHUNK)
        .map(|n| n as usize)
        .ok_or_else(|| corrupt("merkle sums", "a chunk key is out of range"))
}

/// The meta key of a record pruned with its sums kept.
pub(crate) fn pruned_key(map_name: &str, key: &str) -> JsValue {
    array(&[
        JsValue::from_str("pruned"),
        bytes(map_name.as_bytes()),
        bytes(key.as_bytes()),
    ])
}

/// The meta key of the store's [`Counters`].
pub(crate) fn counters_key() -> JsValue {
    array(&[JsValue::from_str("counters")])
}

/// A chunk of leaf sums as stored: [`SUMS_CHUNK`] little-endian `u32`s.
pub(crate) fn sums_to_js(sums: &[u32]) -> JsValue {
    let raw: Vec<u8> = sums.iter().flat_map(|s| s.to_le_bytes()).collect();
    bytes(&raw)
}

/// A chunk of leaf sums back; all zero for one never written.
pub(crate) fn sums_from_js(value: Option<&JsValue>) -> Result<Vec<u32>, StorageError> {
    let Some(value) = value else {
        return Ok(vec![0; SUMS_CHUNK]);
    };
    let raw = to_bytes(value).ok_or_else(|| corrupt("merkle sums", "not binary"))?;
    if raw.len() != SUMS_CHUNK * 4 {
        return Err(corrupt("merkle sums", "wrong length"));
    }
    Ok(raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Counts kept up to date by every write transaction, so that
/// [`Store::stats`](crate::Store::stats) reads one entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counters {
    pub(crate) records: u64,
    pub(crate) dirty_records: u64,
    pub(crate) pending_ops: u64,
    pub(crate) bytes: u64,
    /// Records pruned with their sums kept: while 0, a new key needs no
    /// look-up of a pruned entry.
    pub(crate) pruned: u64,
}

impl Counters {
    pub(crate) fn to_js(self) -> Result<JsValue, StorageError> {
        let encoded = rmp_serde::to_vec(&self).map_err(|source| StorageError::Encode {
            what: "the store's counters",
            source,
        })?;
        Ok(bytes(&encoded))
    }

    pub(crate) fn from_js(value: Option<JsValue>) -> Result<Self, StorageError> {
        let Some(value) = value else {
            return Ok(Self::default());
        };
        let raw = to_bytes(&value).ok_or_else(|| corrupt("counters", "not binary"))?;
        rmp_serde::from_slice(&raw).map_err(|e| StorageError::Corrupt {
            what: "counters",
            source: Box::new(e),
        })
    }
}

/// A pruned record's kept Merkle contribution.
pub(crate) fn contribution_from_js(value: &JsValue) -> Result<u32, StorageError> {
    value
        .as_f64()
        .filter(|c| *c >= 0.0 && *c <= f64::from(u32::MAX))
        .map(|c| c as u32)
        .ok_or_else(|| corrupt("pruned records", "not a contribution"))
}
