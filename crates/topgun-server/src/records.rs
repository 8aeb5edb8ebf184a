//! Conversions between wire records (values as MessagePack values) and
//! store records (values as opaque MessagePack bytes).

use topgun_core::wire::{WireRecord, DEFAULT_MAX_DEPTH};
use topgun_storage::StoreRecord;

/// A stored value that is not MessagePack (a corrupt or foreign store).
#[derive(Debug, thiserror::Error)]
#[error("stored value of {map}/{key} is not valid MessagePack: {source}")]
pub(crate) struct BadStoredValue {
    map: String,
    key: String,
    #[source]
    source: rmpv::decode::Error,
}

/// The store record of a client's write: the value encoded as MessagePack,
/// the client's timestamp and TTL kept as they are, stored clean.
pub(crate) fn to_store(map_name: &str, key: &str, record: &WireRecord) -> StoreRecord {
    StoreRecord {
        map_name: map_name.to_owned(),
        key: key.to_owned(),
        value: record.value.as_ref().map(encode_value),
        timestamp: record.timestamp.clone(),
        ttl_ms: record.ttl_ms,
        dirty: false,
    }
}

/// The wire form of a stored record (a tombstone stays a tombstone).
pub(crate) fn to_wire(record: &StoreRecord) -> Result<WireRecord, BadStoredValue> {
    let value = match &record.value {
        Some(bytes) => Some(decode_value(bytes).map_err(|source| BadStoredValue {
            map: record.map_name.clone(),
            key: record.key.clone(),
            source,
        })?),
        None => None,
    };
    Ok(WireRecord {
        value,
        timestamp: record.timestamp.clone(),
        ttl_ms: record.ttl_ms,
    })
}

/// MessagePack bytes of a value.
pub(crate) fn encode_value(value: &rmpv::Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    // Writing to a Vec cannot fail, and decoded values have bounded depth.
    if let Err(error) = rmpv::encode::write_value(&mut bytes, value) {
        tracing::error!(%error, "encoding a value into memory failed");
    }
    bytes
}

/// The value of MessagePack bytes, with the wire codec's nesting bound.
pub(crate) fn decode_value(mut bytes: &[u8]) -> Result<rmpv::Value, rmpv::decode::Error> {
    rmpv::decode::read_value_with_max_depth(&mut bytes, DEFAULT_MAX_DEPTH * 2 + 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use topgun_core::Timestamp;

    #[test]
    fn round_trip_keeps_values_tombstones_and_ttl() {
        let ts = Timestamp::new(5, 1, "n");
        let value = rmpv::Value::Map(vec![("a".into(), 1.into())]);
        for record in [
            WireRecord::new(value, ts.clone()).with_ttl(9),
            WireRecord::tombstone(ts),
        ] {
            let stored = to_store("m", "k", &record);
            assert_eq!(to_wire(&stored).unwrap(), record);
        }
    }
}
