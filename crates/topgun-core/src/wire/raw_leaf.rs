//! [`Codec::encode_leaf`]: a `SYNC_RESP_LEAF` frame from records whose
//! values are already MessagePack (as a store keeps them), copied into the
//! frame as they are instead of decoded and encoded again.

use super::codec::{Codec, EncodeError};
use super::prescan;
use crate::Timestamp;
use rmp::encode as mp;

/// One record of a leaf answer, its value as MessagePack bytes, checked
/// by [`Codec::leaf_record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLeafRecord<'a> {
    key: &'a str,
    /// One well-formed MessagePack value; `None` for a tombstone.
    value: Option<&'a [u8]>,
    timestamp: &'a Timestamp,
    /// Time to live in milliseconds after `timestamp.millis`.
    ttl_ms: Option<u64>,
}

/// Containers around a record's value in the frame: the frame, `payload`,
/// `records`, the leaf record, the record.
const VALUE_DEPTH: usize = 5;

impl Codec {
    /// The `SYNC_RESP_LEAF` frame of `records` (made by this codec's
    /// [`leaf_record`](Self::leaf_record)), byte for byte what
    /// [`Codec::encode`] writes for [`Message::SyncRespLeaf`] with the same
    /// records decoded, under the same limits.
    ///
    /// # Errors
    /// [`EncodeError::TooLarge`] when the frame exceeds the length cap.
    ///
    /// [`Message::SyncRespLeaf`]: super::Message::SyncRespLeaf
    pub fn encode_leaf(
        &self,
        map_name: &str,
        path: &str,
        records: &[RawLeafRecord<'_>],
    ) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(
            64 + records
                .iter()
                .map(|r| 48 + r.key.len() + r.value.map_or(1, <[u8]>::len))
                .sum::<usize>(),
        );
        write_leaf(&mut out, map_name, path, records);
        if out.len() > self.max_frame_len() {
            return Err(EncodeError::TooLarge {
                len: out.len(),
                max: self.max_frame_len(),
            });
        }
        Ok(out)
    }

    /// A record for [`Codec::encode_leaf`], its value checked once here:
    /// one well-formed MessagePack value within this codec's nesting cap.
    ///
    /// # Errors
    /// [`EncodeError::BadValue`] or [`EncodeError::TooDeep`].
    pub fn leaf_record<'a>(
        &self,
        key: &'a str,
        value: Option<&'a [u8]>,
        timestamp: &'a Timestamp,
        ttl_ms: Option<u64>,
    ) -> Result<RawLeafRecord<'a>, EncodeError> {
        if let Some(value) = value {
            if !prescan::one_value(value, VALUE_DEPTH, usize::MAX) {
                return Err(EncodeError::BadValue {
                    key: key.to_owned(),
                });
            }
            if !prescan::one_value(value, VALUE_DEPTH, self.max_depth()) {
                return Err(EncodeError::TooDeep {
                    max_depth: self.max_depth(),
                });
            }
        }
        Ok(RawLeafRecord {
            key,
            value,
            timestamp,
            ttl_ms,
        })
    }
}

/// Writes the frame: `{type, payload: {mapName, path, records: [{key,
/// record: {value, timestamp: {millis, counter, nodeId}, ttlMs?}}]}}`, the
/// field order and integer widths of the derived encoding.
fn write_leaf(out: &mut Vec<u8>, map_name: &str, path: &str, records: &[RawLeafRecord<'_>]) {
    // Writing to a Vec cannot fail, and every length here fits in u32
    // (the frame is capped far below 4 GiB before it is sent).
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let _ = mp::write_map_len(out, 2);
    str(out, "type");
    str(out, "SYNC_RESP_LEAF");
    str(out, "payload");
    let _ = mp::write_map_len(out, 3);
    str(out, "mapName");
    str(out, map_name);
    str(out, "path");
    str(out, path);
    str(out, "records");
    let _ = mp::write_array_len(out, len(records.len()));
    for record in records {
        let _ = mp::write_map_len(out, 2);
        str(out, "key");
        str(out, record.key);
        str(out, "record");
        let _ = mp::write_map_len(out, if record.ttl_ms.is_some() { 3 } else { 2 });
        str(out, "value");
        match record.value {
            Some(value) => out.extend_from_slice(value),
            None => {
                let _ = mp::write_nil(out);
            }
        }
        str(out, "timestamp");
        let _ = mp::write_map_len(out, 3);
        str(out, "millis");
        let _ = mp::write_uint(out, record.timestamp.millis);
        str(out, "counter");
        let _ = mp::write_uint(out, u64::from(record.timestamp.counter));
        str(out, "nodeId");
        str(out, &record.timestamp.node_id);
        if let Some(ttl) = record.ttl_ms {
            str(out, "ttlMs");
            let _ = mp::write_uint(out, ttl);
        }
    }
}

fn str(out: &mut Vec<u8>, s: &str) {
    let _ = mp::write_str(out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{LeafRecord, Message, SyncRespLeaf, WireRecord};
    use rmpv::Value;

    fn bytes(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).unwrap();
        out
    }

    fn sample() -> Vec<(String, WireRecord)> {
        let nested = Value::Map(vec![
            ("title".into(), "ünïcode ✓".into()),
            ("n".into(), Value::from(-7)),
            ("big".into(), Value::from(u64::MAX)),
            ("f".into(), Value::F64(1.5)),
            (
                "list".into(),
                Value::Array(vec![Value::Nil, true.into(), "x".into()]),
            ),
            ("bin".into(), Value::Binary(vec![0, 1, 2])),
        ]);
        vec![
            (
                "a".into(),
                WireRecord::new(nested, Timestamp::new(1_700_000_000_000, 0, "node-1")),
            ),
            (
                "b".into(),
                WireRecord::tombstone(Timestamp::new(255, 65_536, "n")),
            ),
            (
                "ключ".into(),
                WireRecord::new(
                    Value::from("s".repeat(300)),
                    Timestamp::new(1, u32::MAX, "x"),
                )
                .with_ttl(60_000),
            ),
            (
                "d".into(),
                WireRecord::tombstone(Timestamp::new(0, 0, "")).with_ttl(5),
            ),
        ]
    }

    #[test]
    fn a_raw_leaf_encodes_as_the_decoded_message_does() {
        let codec = Codec::new();
        for count in [0, 1, 4] {
            let records: Vec<_> = sample().into_iter().take(count).collect();
            let values: Vec<Option<Vec<u8>>> = records
                .iter()
                .map(|(_, r)| r.value.as_ref().map(bytes))
                .collect();
            let raw: Vec<RawLeafRecord<'_>> = records
                .iter()
                .zip(&values)
                .map(|((key, record), value)| {
                    codec
                        .leaf_record(key, value.as_deref(), &record.timestamp, record.ttl_ms)
                        .unwrap()
                })
                .collect();
            let msg = Message::SyncRespLeaf(SyncRespLeaf {
                map_name: "todos".into(),
                path: "a3f".into(),
                records: records
                    .iter()
                    .map(|(key, record)| LeafRecord {
                        key: key.clone(),
                        record: record.clone(),
                    })
                    .collect(),
            });
            let expected = codec.encode(&msg).unwrap();
            let got = codec.encode_leaf("todos", "a3f", &raw).unwrap();
            assert_eq!(got, expected, "{count} records");
            assert_eq!(codec.decode(&got).unwrap(), msg);
        }
    }

    #[test]
    fn bad_deep_and_oversized_values_are_errors() {
        let ts = Timestamp::new(1, 0, "n");
        let encode = |codec: &Codec, value: &[u8]| {
            let record = codec.leaf_record("k", Some(value), &ts, None)?;
            codec.encode_leaf("m", "000", &[record])
        };
        let codec = Codec::new();
        // Truncated, two values, and a reserved marker.
        for bad in [&[0x92, 0x01][..], &[0x01, 0x02], &[0xc1]] {
            assert!(
                matches!(encode(&codec, bad), Err(EncodeError::BadValue { .. })),
                "{bad:?}"
            );
        }
        let mut deep = Value::Nil;
        for _ in 0..200 {
            deep = Value::Array(vec![deep]);
        }
        assert!(matches!(
            encode(&codec, &bytes(&deep)),
            Err(EncodeError::TooDeep { .. })
        ));
        let small = Codec::new().with_max_frame_len(64);
        assert!(matches!(
            encode(&small, &bytes(&Value::from("x".repeat(100)))),
            Err(EncodeError::TooLarge { .. })
        ));
    }
}
