//! How records, ops and internal meta entries are laid out in IndexedDB.
//!
//! - `key_value_store` holds `{mapName, key, dirty, body}` per record:
//!   `mapName` and `key` as strings (with the characters from U+E000 up
//!   shifted so that IndexedDB orders them as `str` does, see
//!   [`js::name`]), `dirty` as `0` / `1` (booleans are not valid keys, so
//!   an index over them would be empty), and `body`, the value,
//!   timestamp and TTL as MessagePack bytes: one `Uint8Array` is the
//!   cheapest way to hand a value to wasm memory. (IndexedDB rebuilds a
//!   string far faster than a binary key: schema version 3 stored the
//!   names as UTF-8 bytes, and reading its records took a fifth longer.)
//!   A record pruned with its Merkle contribution kept leaves `{mapName,
//!   key, pruned}` at its key ([`Stored::Pruned`]).
//! - `operation_log` holds the ops of a write transaction in one entry
//!   (or a few, when they are many bytes): `{id, synced, ops}`, `ops` the
//!   ops as consecutive MessagePack values (each with its number in the
//!   entry, map, key, type, value, timestamp, TTL and its own `synced`),
//!   `synced` `1` once every op left in the entry is; a transaction's
//!   first entry also carries its counters delta (`delta`, with
//!   `carries: 1`, see `delta`). Op `n` of the entry
//!   with key `e` has [`OpId`] `((e - 1) << 16) + n + 1`, so ids start at
//!   1 and increase in the order ops were logged. (Schema version 1 kept
//!   one op per entry, `{id, mapName, key, opType, synced, body}`; such an
//!   entry reads as op 0 of its entry.) A write builds its new record and
//!   entry objects in JS ([`js::put_record`], [`js::commit_write`]): one
//!   call each, where building them from Rust took one per field.
//! - `meta_store` keys the application's meta values by their string key;
//!   the store's own entries (Merkle leaf sums, counters, their deltas
//!   and the folded mark, see `delta`) use array keys, which can never
//!   equal a string.

use super::js::{self, array, byte_name_part, bytes, field, set, to_bytes};
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
) -> Result<Vec<u8>, StorageError> {
    let body = BodyRef {
        value: value.map(serde_bytes::Bytes::new),
        timestamp,
        ttl_ms,
    };
    rmp_serde::to_vec(&body).map_err(|source| StorageError::Encode {
        what: "a record",
        source,
    })
}

fn decode_body(object: &JsValue, what: &'static str) -> Result<Body, StorageError> {
    body_from_js(&field(object, "body")?, what)
}

/// A body from the `body` field's value.
fn body_from_js(body: &JsValue, what: &'static str) -> Result<Body, StorageError> {
    body_of(&body_bytes(body, what)?, what)
}

/// The bytes of the `body` field's value.
fn body_bytes(body: &JsValue, what: &'static str) -> Result<Vec<u8>, StorageError> {
    to_bytes(body).ok_or_else(|| corrupt(what, "no body bytes"))
}

/// A body from its bytes.
fn body_of(bytes: &[u8], what: &'static str) -> Result<Body, StorageError> {
    rmp_serde::from_slice(bytes).map_err(|e| StorageError::Corrupt {
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
    JsValue::from_f64(flag_number(value))
}

/// A flag as stored: `0` / `1`.
fn flag_number(value: bool) -> f64 {
    if value {
        1.0
    } else {
        0.0
    }
}

fn read_flag(object: &JsValue, name: &'static str) -> Result<bool, StorageError> {
    Ok(field(object, name)?.as_f64() == Some(1.0))
}

/// A map name or key stored in field `name` of `object` (see
/// [`js::name`]).
fn stored_name(
    object: &JsValue,
    name: &'static str,
    what: &'static str,
) -> Result<String, StorageError> {
    js::read_name(&field(object, name)?).ok_or_else(|| corrupt(what, "a name is not a string"))
}

/// The primary key of `(map, key)` in `key_value_store`.
pub(crate) fn record_key(map_name: &str, key: &str) -> JsValue {
    array(&[js::name(map_name), js::name(key)])
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
        None => (array(&[js::name(map_name)]), false),
    };
    idb::KeyRange::bound(&lower, &next_map(map_name), Some(lower_open), Some(true))
        .map_err(js::idb_error("building a key range"))
}

/// The smallest `[map]` key after every record of `map_name`.
pub(crate) fn next_map(map_name: &str) -> JsValue {
    array(&[js::name(&format!("{map_name}\0"))])
}

/// The key of `[map_name, dirty]` in the `mapName_dirty` index.
pub(crate) fn dirty_key(map_name: &str) -> JsValue {
    array(&[js::name(map_name), flag(true)])
}

/// Every `[map_name, dirty]` key of the `mapName_dirty` index: all of
/// the map's records (pruned records' entries have no `dirty`).
pub(crate) fn flags_range(map_name: &str) -> Result<idb::KeyRange, StorageError> {
    let [clean, dirty] = [false, true].map(|dirty| array(&[js::name(map_name), flag(dirty)]));
    idb::KeyRange::bound(&clean, &dirty, Some(false), Some(false))
        .map_err(js::idb_error("building a key range"))
}

/// Writes `record` as stored in `key_value_store` to `store` (that
/// store of a read-write transaction, as a `JsValue`): a `put`, or with
/// `add` an `add`, which fails if the key is stored. `map_name` is the
/// record's map name as [`js::name`] stores it.
pub(crate) fn write_record(
    store: &JsValue,
    add: bool,
    map_name: &JsValue,
    record: &StoreRecord,
) -> Result<(), StorageError> {
    let body = encode_body(record.value.as_deref(), &record.timestamp, record.ttl_ms)?;
    js::put_record(
        store,
        add,
        map_name,
        &record.key,
        flag_number(record.dirty),
        &body,
    )
    .map_err(js::js_error("writing a record"))
}

/// What `key_value_store` holds at a key.
#[derive(Debug, Clone)]
pub(crate) enum Stored {
    Record(StoreRecord),
    /// A record pruned with its Merkle contribution kept: stored as
    /// `{mapName, key, pruned}` (`pruned` the contribution), with neither
    /// `dirty` (so the `mapName_dirty` index leaves it out) nor `body`.
    Pruned {
        key: String,
        kept: u32,
    },
}

impl Stored {
    pub(crate) fn key(&self) -> &str {
        match self {
            Stored::Record(record) => &record.key,
            Stored::Pruned { key, .. } => key,
        }
    }

    pub(crate) fn into_record(self) -> Option<StoreRecord> {
        match self {
            Stored::Record(record) => Some(record),
            Stored::Pruned { .. } => None,
        }
    }
}

/// What `key_value_store` holds, back from it: one object, read field by
/// field (a page of them is read with [`super::page`]).
pub(crate) fn stored_from_js(object: &JsValue) -> Result<Stored, StorageError> {
    const WHAT: &str = "key_value_store";
    let map_name = stored_name(object, "mapName", WHAT)?;
    let body = field(object, "body")?;
    if body.is_undefined() {
        return Ok(Stored::Pruned {
            key: stored_name(object, "key", WHAT)?,
            kept: contribution_from_js(&field(object, "pruned")?)?,
        });
    }
    let raw = body_bytes(&body, WHAT)?;
    let key = stored_name(object, "key", WHAT)?;
    record_of_body(map_name, key, &raw, read_flag(object, "dirty")?).map(Stored::Record)
}

/// A record from its names, body bytes and `dirty` flag.
pub(crate) fn record_of_body(
    map_name: String,
    key: String,
    body: &[u8],
    dirty: bool,
) -> Result<StoreRecord, StorageError> {
    let body = body_of(body, "key_value_store")?;
    Ok(StoreRecord {
        map_name,
        key,
        value: body.value.map(serde_bytes::ByteBuf::into_vec),
        timestamp: body.timestamp,
        ttl_ms: body.ttl_ms,
        dirty,
    })
}

/// A record from the `mapName_dirty` index (never a pruned one).
pub(crate) fn record_from_js(object: &JsValue) -> Result<StoreRecord, StorageError> {
    stored_from_js(object)?
        .into_record()
        .ok_or_else(|| corrupt("key_value_store", "a pruned record in the dirty index"))
}

/// What is left in `key_value_store` of a record pruned with its Merkle
/// contribution `kept` (see [`Stored::Pruned`]).
pub(crate) fn pruned_to_js(map_name: &str, key: &str, kept: u32) -> Result<JsValue, StorageError> {
    let object: JsValue = js_sys::Object::new().into();
    rename(&object, map_name, key)?;
    set(&object, "pruned", &JsValue::from_f64(f64::from(kept)))?;
    Ok(object)
}

/// Sets the names of a stored record object (a record or a pruned
/// entry) to `map_name` and `key`.
pub(crate) fn rename(object: &JsValue, map_name: &str, key: &str) -> Result<(), StorageError> {
    set(object, "mapName", &js::name(map_name))?;
    set(object, "key", &js::name(key))
}

/// Bits of an [`OpId`] that number an op inside its `operation_log`
/// entry; the bits above them number the entry.
const OP_INDEX_BITS: u32 = 16;

/// Ops one `operation_log` entry holds at most.
pub(crate) const MAX_OPS_PER_ENTRY: usize = 1 << OP_INDEX_BITS;

/// Entry keys stay below this, so that every op id is exact in a `u64`
/// (and an entry key in a JS number).
const MAX_ENTRY: u64 = 1 << (64 - OP_INDEX_BITS);

/// The id of op `index` of entry `entry` (keys start at 1): the first op
/// of the first entry is op 1, as in every store.
pub(crate) fn op_id(entry: u64, index: u16) -> OpId {
    debug_assert!(entry >= 1, "entry keys start at 1");
    ((entry - 1) << OP_INDEX_BITS) + u64::from(index) + 1
}

/// The entry holding op `id` (0 for id 0, which no op has).
pub(crate) fn entry_of(id: OpId) -> u64 {
    match id {
        0 => 0,
        id => ((id - 1) >> OP_INDEX_BITS) + 1,
    }
}

/// The number of op `id` inside its entry.
fn index_of(id: OpId) -> u16 {
    (id.saturating_sub(1) & (MAX_OPS_PER_ENTRY as u64 - 1)) as u16
}

/// The JS key of entry `entry` of `operation_log`.
pub(crate) fn entry_key(entry: u64) -> JsValue {
    JsValue::from_f64(entry as f64)
}

/// An entry's key (assigned by IndexedDB) back as a number.
pub(crate) fn entry_id(key: &JsValue) -> Result<u64, StorageError> {
    key.as_f64()
        .filter(|id| *id >= 1.0 && id.fract() == 0.0 && *id < MAX_ENTRY as f64)
        .map(|id| id as u64)
        .ok_or_else(|| corrupt("operation_log", "an entry key is not a positive integer"))
}

/// One op in an entry's `ops` bytes.
#[derive(Serialize)]
struct PackedOpRef<'a> {
    index: u16,
    map_name: &'a str,
    op_type: OpType,
    key: &'a str,
    value: Option<&'a serde_bytes::Bytes>,
    timestamp: &'a Timestamp,
    ttl_ms: Option<u64>,
    synced: bool,
}

impl PackedOpRef<'_> {
    /// Appends this op's MessagePack to an entry's `ops` bytes.
    fn append_to(&self, ops: &mut Vec<u8>) -> Result<(), StorageError> {
        rmp_serde::encode::write(ops, self).map_err(|source| StorageError::Encode {
            what: "an op",
            source,
        })
    }
}

#[derive(Deserialize)]
struct PackedOp {
    index: u16,
    map_name: String,
    op_type: OpType,
    key: String,
    value: Option<serde_bytes::ByteBuf>,
    timestamp: Timestamp,
    ttl_ms: Option<u64>,
    synced: bool,
}

/// Appends op `index` (unsynced) to an entry's `ops` bytes.
pub(crate) fn append_op(
    ops: &mut Vec<u8>,
    index: u16,
    map_name: &str,
    op_type: OpType,
    key: &str,
    value: Option<&[u8]>,
    timestamp: &Timestamp,
    ttl_ms: Option<u64>,
) -> Result<(), StorageError> {
    let op = PackedOpRef {
        index,
        map_name,
        op_type,
        key,
        value: value.map(serde_bytes::Bytes::new),
        timestamp,
        ttl_ms,
        synced: false,
    };
    op.append_to(ops)
}

/// The `ops` bytes of `ops`, all of one entry.
fn pack(ops: &[OpLogEntry]) -> Result<Vec<u8>, StorageError> {
    let mut bytes = Vec::new();
    for op in ops {
        let packed = PackedOpRef {
            index: index_of(op.id),
            map_name: &op.map_name,
            op_type: op.op_type,
            key: &op.key,
            value: op.value.as_deref().map(serde_bytes::Bytes::new),
            timestamp: &op.timestamp,
            ttl_ms: op.ttl_ms,
            synced: op.synced,
        };
        packed.append_to(&mut bytes)?;
    }
    Ok(bytes)
}

/// The field of an `operation_log` entry that holds the delta of the
/// transaction that added it (see [`super::delta`]), folded once the
/// entry's id is at or below the folded mark ([`folded_key`]).
pub(crate) const ENTRY_DELTA: &str = "delta";

/// A field (value 1) of every `operation_log` entry added with a delta:
/// index `carriers` is over it and the entry's id, so that the carriers
/// past the folded mark are one key range.
pub(crate) const ENTRY_CARRIES: &str = "carries";

/// The meta key of the folded mark: the highest `operation_log` entry
/// id whose delta is in the base.
pub(crate) fn folded_key() -> JsValue {
    array(&[JsValue::from_str("folded")])
}

/// The folded mark back; 0 (no entry) if none is stored.
pub(crate) fn folded_from_js(value: Option<JsValue>) -> Result<u64, StorageError> {
    match value {
        None => Ok(0),
        Some(value) => entry_id(&value).map_err(|_| corrupt("the folded mark", "not an entry id")),
    }
}

/// The `carriers` index range of the entries past folded mark `folded`.
pub(crate) fn carriers_after(folded: u64) -> Result<idb::KeyRange, StorageError> {
    let carries = JsValue::from_f64(1.0);
    idb::KeyRange::bound(
        &array(&[carries.clone(), JsValue::from_f64(folded as f64)]),
        &array(&[carries, js_sys::Array::new().into()]),
        Some(true),
        Some(true),
    )
    .map_err(js::idb_error("building a key range"))
}

/// The delta an `operation_log` entry carries, if any.
pub(crate) fn entry_delta(object: &JsValue) -> Result<Option<JsValue>, StorageError> {
    let delta = field(object, ENTRY_DELTA)?;
    Ok((!delta.is_undefined()).then_some(delta))
}

/// Entry `entry` rewritten with `ops` (not empty): `synced` once all are.
pub(crate) fn entry_to_js(entry: u64, ops: &[OpLogEntry]) -> Result<JsValue, StorageError> {
    let object: JsValue = js_sys::Object::new().into();
    set(&object, "id", &entry_key(entry))?;
    set(&object, "synced", &flag(ops.iter().all(|op| op.synced)))?;
    set(&object, "ops", &bytes(&pack(ops)?))?;
    Ok(object)
}

/// The ops of an `operation_log` entry, in the order they were written.
pub(crate) fn entry_from_js(object: &JsValue) -> Result<(u64, Vec<OpLogEntry>), StorageError> {
    const WHAT: &str = "operation_log";
    let entry = entry_id(&field(object, "id")?)?;
    let ops = field(object, "ops")?;
    if ops.is_undefined() {
        return Ok((entry, vec![single_op_from_js(entry, object)?]));
    }
    let raw = to_bytes(&ops).ok_or_else(|| corrupt(WHAT, "ops are not binary"))?;
    let ops = unpack(&raw)?
        .into_iter()
        .map(|op| OpLogEntry {
            id: op_id(entry, op.index),
            map_name: op.map_name,
            op_type: op.op_type,
            key: op.key,
            value: op.value.map(serde_bytes::ByteBuf::into_vec),
            timestamp: op.timestamp,
            ttl_ms: op.ttl_ms,
            synced: op.synced,
        })
        .collect();
    Ok((entry, ops))
}

/// The map, type and key of each op in an entry's `ops` bytes, in order.
pub(crate) fn op_targets(ops: &[u8]) -> Result<Vec<(String, OpType, String)>, StorageError> {
    Ok(unpack(ops)?
        .into_iter()
        .map(|op| (op.map_name, op.op_type, op.key))
        .collect())
}

/// The ops of an entry's `ops` bytes.
fn unpack(mut ops: &[u8]) -> Result<Vec<PackedOp>, StorageError> {
    let mut out = Vec::new();
    while !ops.is_empty() {
        let op = rmp_serde::decode::from_read(&mut ops).map_err(|e| StorageError::Corrupt {
            what: "operation_log",
            source: Box::new(e),
        })?;
        out.push(op);
    }
    Ok(out)
}

/// The one op of an entry of schema version 1 (`{id, mapName, key,
/// opType, synced, body}`), as op 0 of that entry.
fn single_op_from_js(entry: u64, object: &JsValue) -> Result<OpLogEntry, StorageError> {
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
        id: op_id(entry, 0),
        map_name: text("mapName")?,
        op_type,
        key: text("key")?,
        value: body.value.map(serde_bytes::ByteBuf::into_vec),
        timestamp: body.timestamp,
        ttl_ms: body.ttl_ms,
        synced: read_flag(object, "synced")?,
    })
}

/// The meta key of an application meta value.
pub(crate) fn app_meta_key(key: &str) -> JsValue {
    JsValue::from_str(key)
}

/// The meta key of `map_name`'s Merkle leaf sums (their base, see
/// [`super::delta`]): all [`LEAVES`] of them in one value (16 KiB), read
/// and rewritten only by a fold.
pub(crate) fn sums_key(map_name: &str) -> JsValue {
    array(&[JsValue::from_str("sums"), bytes(map_name.as_bytes())])
}

/// Leaves per chunk of the sums schema versions 1 to 5 stored, each
/// chunk at `["merkle", map, chunk]`.
pub(crate) const OLD_SUMS_CHUNK: usize = 64;

/// The key range of every chunk of sums schema versions 1 to 5 stored.
pub(crate) fn old_sums_range() -> Result<idb::KeyRange, StorageError> {
    idb::KeyRange::bound(
        &array(&[JsValue::from_str("merkle")]),
        &array(&[JsValue::from_str("merkle"), js_sys::Array::new().into()]),
        Some(true),
        Some(true),
    )
    .map_err(js::idb_error("building a key range"))
}

/// The map name and chunk number of a key of [`old_sums_range`].
pub(crate) fn old_sums_chunk_of(key: &JsValue) -> Result<(String, usize), StorageError> {
    let chunk = js_sys::Reflect::get_u32(key, 2)
        .ok()
        .and_then(|n| n.as_f64())
        .filter(|n| *n >= 0.0 && (*n as usize) < LEAVES / OLD_SUMS_CHUNK && n.fract() == 0.0)
        .map(|n| n as usize);
    match (byte_name_part(key, 1), chunk) {
        (Some(map_name), Some(chunk)) => Ok((map_name, chunk)),
        _ => Err(corrupt(
            "merkle sums",
            "a chunk key is not [\"merkle\", map, chunk]",
        )),
    }
}

/// The key range of the pruned records' entries schema versions 1 and 2
/// kept in `meta_store` (`["pruned", map, key]`, the contribution).
pub(crate) fn old_pruned_range() -> Result<idb::KeyRange, StorageError> {
    idb::KeyRange::bound(
        &array(&[JsValue::from_str("pruned")]),
        &array(&[JsValue::from_str("pruned"), js_sys::Array::new().into()]),
        Some(true),
        Some(true),
    )
    .map_err(js::idb_error("building a key range"))
}

/// The meta key of the store's [`Counters`] (their base, see
/// [`super::delta`]).
pub(crate) fn counters_key() -> JsValue {
    array(&[JsValue::from_str("counters")])
}

/// Leaf sums as stored: little-endian `u32`s.
pub(crate) fn sums_to_js(sums: &[u32]) -> JsValue {
    let raw: Vec<u8> = sums.iter().flat_map(|s| s.to_le_bytes()).collect();
    bytes(&raw)
}

/// `len` leaf sums back; all zero for sums never written.
pub(crate) fn sums_from_js(value: Option<&JsValue>, len: usize) -> Result<Vec<u32>, StorageError> {
    let Some(value) = value else {
        return Ok(vec![0; len]);
    };
    let raw = to_bytes(value).ok_or_else(|| corrupt("merkle sums", "not binary"))?;
    if raw.len() != len * 4 {
        return Err(corrupt("merkle sums", "wrong length"));
    }
    Ok(raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Counts kept up to date by every write transaction (as deltas, see
/// [`super::delta`]) for [`Store::stats`](crate::Store::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counters {
    pub(crate) records: u64,
    pub(crate) dirty_records: u64,
    pub(crate) pending_ops: u64,
    pub(crate) bytes: u64,
    /// Records pruned with their sums kept (kept in step like the others;
    /// `StoreStats` does not report it).
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
