//! The JavaScript boundary: IndexedDB errors become strings here (a
//! [`JsFailure`]), and keys and bytes become JS values.

use crate::error::StorageError;
use js_sys::{Array, ArrayBuffer, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};

/// Backend name in [`StorageError::Backend`].
pub(crate) const BACKEND: &str = "indexeddb";

/// A JS exception, copied out of the JS heap so that it can travel as a
/// `Send + Sync` error source.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{name}: {message}")]
pub(crate) struct JsFailure {
    /// The exception's name (`QuotaExceededError`, `VersionError`, …).
    pub(crate) name: String,
    /// Its message.
    pub(crate) message: String,
}

impl JsFailure {
    /// The failure behind an `idb` error; the DOM exception's name where
    /// there is one.
    pub(crate) fn from_idb(error: &idb::Error) -> Self {
        let name = match error {
            idb::Error::DomException(exception) => exception.name(),
            _ => "Error".to_owned(),
        };
        Self {
            name,
            message: error.to_string(),
        }
    }

    /// The failure behind a thrown JS value.
    pub(crate) fn from_js(value: &JsValue) -> Self {
        match value.dyn_ref::<js_sys::Error>() {
            Some(error) => Self {
                name: error.name().into(),
                message: error.message().into(),
            },
            None => Self {
                name: "Error".to_owned(),
                message: value.as_string().unwrap_or_else(|| format!("{value:?}")),
            },
        }
    }

    /// This failure as the storage error of `during`
    /// ([`StorageError::Full`] for a `QuotaExceededError`).
    pub(crate) fn into_error(self, during: &'static str) -> StorageError {
        if self.name == "QuotaExceededError" {
            return StorageError::Full {
                backend: BACKEND,
                source: Box::new(self),
            };
        }
        StorageError::Backend {
            backend: BACKEND,
            during,
            source: Box::new(self),
        }
    }
}

/// Maps an `idb` error to the storage error of `during`.
pub(crate) fn idb_error(during: &'static str) -> impl Fn(idb::Error) -> StorageError {
    move |error| JsFailure::from_idb(&error).into_error(during)
}

/// Maps a thrown JS value to the storage error of `during`.
pub(crate) fn js_error(during: &'static str) -> impl Fn(JsValue) -> StorageError {
    move |value| JsFailure::from_js(&value).into_error(during)
}

/// The error of a transaction that aborted without a failed request.
pub(crate) fn aborted(during: &'static str) -> StorageError {
    JsFailure {
        name: "AbortError".to_owned(),
        message: "the transaction was aborted".to_owned(),
    }
    .into_error(during)
}

/// A binary IndexedDB key (or value) holding `bytes` (binary keys compare
/// byte-wise).
pub(crate) fn bytes(bytes: &[u8]) -> JsValue {
    Uint8Array::from(bytes).into()
}

/// The bytes of a binary key or value (`ArrayBuffer` or `Uint8Array`).
pub(crate) fn to_bytes(value: &JsValue) -> Option<Vec<u8>> {
    if let Some(array) = value.dyn_ref::<Uint8Array>() {
        Some(array.to_vec())
    } else {
        value
            .dyn_ref::<ArrayBuffer>()
            .map(|buffer| Uint8Array::new(buffer).to_vec())
    }
}

#[wasm_bindgen::prelude::wasm_bindgen(inline_js = r#"
// Names (map names and keys) are stored as strings that IndexedDB orders
// as Rust orders `str` (by code point), where it orders strings by UTF-16
// code unit: units from 0xE000 move down by 0x800 and surrogates up by
// 0x2000, so that every character above 0xFFFF (a surrogate pair) sorts
// after every one below it. Most names hold no unit from 0xD800 up and
// are stored as they are.
const SHIFTED = /[\uD800-\uFFFF]/;
function shift(text, split, up, down) {
  if (!SHIFTED.test(text)) return text;
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    out += String.fromCharCode(unit < 0xd800 ? unit : unit < split ? unit + up : unit - down);
  }
  return out;
}
export function storedName(name) {
  return shift(name, 0xe000, 0x2000, 0x800);
}
export function readName(stored) {
  return typeof stored === "string" ? shift(stored, 0xf800, 0x800, 0x2000) : undefined;
}
// A page of key_value_store objects (a getAll's answer) packed into one
// buffer, so that wasm reads it with one copy instead of a call per field:
// per object a tag (0 record, 1 pruned entry; 2 a name that is not a
// string, 3 a record without body bytes: the packing stops there), the
// key (u32 length, UTF-8), then for a record its dirty flag (one byte)
// and body (u32 length, bytes), for a pruned entry its `pruned` field as
// a float64 (NaN if not a number). Numbers are little-endian.
const ENCODER = new TextEncoder();
export function packRecords(objects) {
  let size = 0;
  for (const o of objects) {
    size += 14 + (typeof o.key === "string" ? o.key.length * 3 : 0) + (o.body?.byteLength ?? 0);
  }
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let at = 0;
  for (const o of objects) {
    const key = readName(o.key);
    if (key === undefined) {
      out[at] = 2;
      return out.subarray(0, at + 1);
    }
    const body = o.body;
    const bytes = body instanceof Uint8Array ? body : body instanceof ArrayBuffer ? new Uint8Array(body) : undefined;
    if (body !== undefined && bytes === undefined) {
      out[at] = 3;
      return out.subarray(0, at + 1);
    }
    out[at] = bytes === undefined ? 1 : 0;
    const start = at + 5;
    let end = start;
    for (let i = 0; i < key.length; i++) {
      const unit = key.charCodeAt(i);
      if (unit >= 0x80) {
        end = start + ENCODER.encodeInto(key, out.subarray(start)).written;
        break;
      }
      out[end++] = unit;
    }
    view.setUint32(at + 1, end - start, true);
    at = end;
    if (bytes === undefined) {
      view.setFloat64(at, typeof o.pruned === "number" ? o.pruned : NaN, true);
      at += 8;
    } else {
      out[at] = o.dirty === 1 ? 1 : 0;
      view.setUint32(at + 1, bytes.length, true);
      out.set(bytes, at + 5);
      at += 5 + bytes.length;
    }
  }
  return out.subarray(0, at);
}
// A read-write transaction over the object stores named in `scope` (an
// array), and those stores: [tx, ...stores].
export function beginWrite(db, scope) {
  const tx = db.transaction(scope, "readwrite");
  return [tx, ...scope.map((name) => tx.objectStore(name))];
}
// Ends a write transaction: adds its operation_log entries to `ops`, one
// per cut of `bytes` (cut at each of `ends`), `{synced: 0, ops}`, the
// first with `delta` as its `delta` and `carries: 1`; with no entry,
// `delta` (if not empty: an empty one changed nothing) goes to `meta` at
// `deltaKey`.
// Then commits. If a request cannot be issued, aborts and throws. Once
// the transaction completed, calls `done(number, true, keys)` with the
// entries' keys; if it failed, `done(number, false, error)` with the
// error that failed it. `done` is called once.
export function commitWrite(tx, ops, meta, bytes, ends, delta, deltaKey, done, number) {
  const requests = [];
  try {
    let start = 0;
    for (const end of ends) {
      // The layout codec.rs reads (`delta` is codec::ENTRY_DELTA,
      // `carries` codec::ENTRY_CARRIES, in the `carriers` index).
      const entry = { synced: 0, ops: bytes.slice(start, end) };
      if (delta.length > 0 && requests.length === 0) {
        entry.delta = delta.slice();
        entry.carries = 1;
      }
      requests.push(ops.add(entry));
      start = end;
    }
    if (delta.length > 0 && ends.length === 0) meta.add(delta.slice(), deltaKey);
    tx.commit();
  } catch (error) {
    try {
      tx.abort();
    } catch {
      // It had failed already: nothing of it is stored either way.
    }
    throw error;
  }
  let settled = false;
  const settle = (completed, value) => {
    if (settled) return;
    settled = true;
    done(number, completed, value);
  };
  tx.oncomplete = () => settle(true, requests.map((request) => request.result));
  // A failed request's error reaches the transaction before it aborts
  // (requests pending when it aborted for another cause, a full disk at
  // commit say, fail with AbortError once `tx.error` names the cause).
  tx.onerror = (event) => settle(false, tx.error ?? event.target.error);
  tx.onabort = () => settle(false, tx.error ?? new DOMException("the transaction was aborted", "AbortError"));
}
export function putRecord(store, add, mapName, key, dirty, body) {
  const object = { mapName, key: storedName(key), dirty, body: body.slice() };
  if (add) store.add(object);
  else store.put(object);
}
"#)]
extern "C" {
    /// `name` (a map name or key) as stored: a string IndexedDB orders
    /// as Rust orders `str` (see the JS above).
    #[wasm_bindgen(js_name = storedName)]
    pub(crate) fn name(name: &str) -> JsValue;

    /// A stored name back (`None` if `stored` is not a string).
    #[wasm_bindgen(js_name = readName)]
    pub(crate) fn read_name(stored: &JsValue) -> Option<String>;

    /// `objects` (`key_value_store` objects) packed as the JS above
    /// says; read by [`super::page`].
    #[wasm_bindgen(js_name = packRecords)]
    pub(crate) fn pack_records(objects: Vec<JsValue>) -> Uint8Array;

    /// Starts a read-write transaction over the stores named in `scope`
    /// (a JS array of names): `[transaction, ...stores]`, in one call.
    #[wasm_bindgen(js_name = beginWrite, catch)]
    pub(crate) fn begin_write(db: &JsValue, scope: &JsValue) -> Result<Array, JsValue>;

    /// Adds a write transaction's `operation_log` entries (`bytes` cut at
    /// `ends`, the first carrying `delta`) or, logging none, its `delta`
    /// (if not empty) in `meta` at `delta_key`, and commits, in one call;
    /// the outcome (the entries' keys, or the error) goes to `done` with
    /// `number` (see the JS above and [`super::completion`]).
    #[wasm_bindgen(js_name = commitWrite, catch)]
    pub(crate) fn commit_write(
        tx: &JsValue,
        ops: &JsValue,
        meta: &JsValue,
        bytes: &[u8],
        ends: &[u32],
        delta: &[u8],
        delta_key: &JsValue,
        done: &js_sys::Function,
        number: f64,
    ) -> Result<(), JsValue>;

    /// Puts (or, with `add`, adds) a record object in `store`
    /// (`key_value_store` in a read-write transaction; see `codec`):
    /// `{mapName, key, dirty, body}`, `map_name` already as [`name`]
    /// stores it, the key stored so, and the body copied out of wasm
    /// memory (`slice`). One call across the boundary, returning nothing:
    /// building the object from Rust took eight calls, and handing the
    /// object and then the request back and forth two more.
    #[wasm_bindgen(js_name = putRecord, catch)]
    pub(crate) fn put_record(
        store: &JsValue,
        add: bool,
        map_name: &JsValue,
        key: &str,
        dirty: f64,
        body: &[u8],
    ) -> Result<(), JsValue>;
}

/// The name stored as part `n` of an array key.
pub(crate) fn name_part(key: &JsValue, n: u32) -> Option<String> {
    Reflect::get_u32(key, n)
        .ok()
        .and_then(|part| read_name(&part))
}

/// The name stored as binary part `n` of an array key (UTF-8 bytes, as
/// schema versions before 4 stored names).
pub(crate) fn byte_name_part(key: &JsValue, n: u32) -> Option<String> {
    Reflect::get_u32(key, n)
        .ok()
        .and_then(|part| to_bytes(&part))
        .and_then(|raw| String::from_utf8(raw).ok())
}

/// An array key of the given parts.
pub(crate) fn array(parts: &[JsValue]) -> JsValue {
    parts.iter().collect::<Array>().into()
}

thread_local! {
    /// Property names as JS strings, made once: creating a JS string per
    /// property access costs more than the access.
    static NAMES: std::cell::RefCell<Vec<(&'static str, JsValue)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `name` as a JS string, from the cache.
fn name_of(name: &'static str) -> JsValue {
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some((_, value)) = names.iter().find(|(n, _)| *n == name) {
            return value.clone();
        }
        let value = JsValue::from_str(name);
        names.push((name, value.clone()));
        value
    })
}

/// Property `name` of `object`.
pub(crate) fn field(object: &JsValue, name: &'static str) -> Result<JsValue, StorageError> {
    Reflect::get(object, &name_of(name)).map_err(js_error("reading a stored object"))
}

/// Sets property `name` of `object`.
pub(crate) fn set(
    object: &JsValue,
    name: &'static str,
    value: &JsValue,
) -> Result<(), StorageError> {
    Reflect::set(object, &name_of(name), value)
        .map(drop)
        .map_err(js_error("building an object to store"))
}
