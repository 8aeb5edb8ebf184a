//! A page of `key_value_store` objects (a `getAll`'s answer) read into
//! wasm memory with one call: a small JS function ([`js::pack_records`])
//! packs every object's key, flag and body into one buffer, which is
//! copied once and parsed here. Read field by field, a page cost a few
//! calls across the boundary per object.

use super::codec::{self, Stored};
use super::js;
use crate::error::StorageError;
use wasm_bindgen::JsValue;

const WHAT: &str = "key_value_store";

/// The records and pruned entries of `objects`, all of map `map_name`,
/// in their order.
pub(crate) fn stored_page(
    map_name: &str,
    objects: Vec<JsValue>,
) -> Result<Vec<Stored>, StorageError> {
    let count = objects.len();
    let packed = js::pack_records(objects).to_vec();
    let mut out = Vec::with_capacity(count);
    let mut rest = packed.as_slice();
    while let Some((&tag, tail)) = rest.split_first() {
        match tag {
            2 => return Err(codec::corrupt(WHAT, "a name is not a string")),
            3 => return Err(codec::corrupt(WHAT, "no body bytes")),
            _ => {}
        }
        let (key, tail) = take_sized(tail)?;
        let key = std::str::from_utf8(key)
            .map_err(|_| codec::corrupt(WHAT, "a name is not UTF-8"))?
            .to_owned();
        if tag == 1 {
            let (kept, tail) = take(tail, 8)?;
            let kept = f64::from_le_bytes(kept.try_into().unwrap_or_default());
            out.push(Stored::Pruned {
                key,
                kept: codec::contribution_from_js(&JsValue::from_f64(kept))?,
            });
            rest = tail;
            continue;
        }
        let (dirty, tail) = take(tail, 1)?;
        let (body, tail) = take_sized(tail)?;
        out.push(Stored::Record(codec::record_of_body(
            map_name.to_owned(),
            key,
            body,
            dirty == [1],
        )?));
        rest = tail;
    }
    if out.len() != count {
        return Err(codec::corrupt(WHAT, "a packed page lost objects"));
    }
    Ok(out)
}

/// The first `n` bytes of `bytes`, and the rest.
fn take(bytes: &[u8], n: usize) -> Result<(&[u8], &[u8]), StorageError> {
    if bytes.len() < n {
        return Err(codec::corrupt(WHAT, "a packed page is cut short"));
    }
    Ok(bytes.split_at(n))
}

/// A part preceded by its length (u32, little-endian), and the rest.
fn take_sized(bytes: &[u8]) -> Result<(&[u8], &[u8]), StorageError> {
    let (len, rest) = take(bytes, 4)?;
    let len = u32::from_le_bytes(len.try_into().unwrap_or_default());
    take(rest, len as usize)
}
