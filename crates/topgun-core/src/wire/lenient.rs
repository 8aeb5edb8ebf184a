//! Lenient deserialisers for the wire's integer fields that `crate::flex`
//! does not cover: optional `u32`s and maps of Merkle hashes.
//!
//! Like `crate::flex`, they accept a whole float where an integer is
//! expected (JavaScript peers send float64) and reject fractions, negatives
//! and out-of-range values instead of truncating them.

use serde::de::{self, Deserialize, Deserializer};
use std::collections::BTreeMap;

/// A `u32` that also accepts a whole float; used as a map value.
struct LenientU32(u32);

impl<'de> Deserialize<'de> for LenientU32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::flex::u32(d).map(LenientU32)
    }
}

/// Deserialises an optional `u32` (absent or nil → `None`).
pub(crate) fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match crate::flex::opt_u64(d)? {
        None => Ok(None),
        Some(v) => u32::try_from(v)
            .map(Some)
            .map_err(|_| de::Error::invalid_value(de::Unexpected::Unsigned(v), &"a u32")),
    }
}

/// Deserialises a map of hex digit (or path) → `u32` hash.
pub(crate) fn hash_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, u32>, D::Error> {
    let raw = BTreeMap::<String, LenientU32>::deserialize(d)?;
    Ok(raw.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// Deserialises an optional map of hashes (absent or nil → `None`).
pub(crate) fn opt_hash_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, u32>>, D::Error> {
    let raw = Option::<BTreeMap<String, LenientU32>>::deserialize(d)?;
    Ok(raw.map(|m| m.into_iter().map(|(k, v)| (k, v.0)).collect()))
}
