//! Op-log entries as wire ops: what the driver answers to
//! [`Output::LoadPending`](crate::Output::LoadPending) with.
//!
//! - A PUT or REMOVE entry becomes one [`ClientOp`] whose `id` is the
//!   op-log id as a string (as TopGun's own client sends it).
//! - A CLEAR entry becomes one REMOVE per key the clear tombstoned that
//!   still carries the clear's timestamp (the protocol has no CLEAR),
//!   in parts small enough for a frame and a server's per-frame budget;
//!   all parts but the last are `partial`.
//! - A value that does not decode is an error ([`OpMappingError`]), never
//!   a `nil`: a `nil` would overwrite the key on every replica.

use crate::engine::PendingOp;
use topgun_core::wire::{ClientOp, OpId, OpType as WireOpType, WireRecord};
use topgun_core::Timestamp;
use topgun_storage::{OpLogEntry, OpType, StoreRecord};

/// Largest part of a CLEAR's expansion, in bytes (by [`op_size_bound`]):
/// about 2,000 REMOVEs of short keys, well under a frame and under a
/// server's per-frame op budget.
pub const CLEAR_PART_BYTES: usize = 256 * 1024;

/// Bytes of one encoded [`ClientOp`] besides its variable parts: field
/// names, MessagePack headers, the integers, the op type. Measured at 131
/// for the largest headers and integers; rounded up.
const OP_OVERHEAD: usize = 160;

/// An upper bound of the encoded size of a wire op with these parts (the
/// op id is at most 20 digits). [`PendingOp::size`] uses it for batching.
pub fn op_size_bound(map: &str, key: &str, node_id: &str, value_len: usize) -> usize {
    OP_OVERHEAD + 20 + map.len() + key.len() + node_id.len() + value_len
}

/// Why an op-log entry cannot be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpMappingError {
    /// The stored value of a PUT is not valid MessagePack.
    #[error("op {op_id} ({map}/{key}) holds a value that does not decode: {source}")]
    UndecodableValue {
        /// The op-log id.
        op_id: u64,
        /// The map written.
        map: String,
        /// The key written.
        key: String,
        /// The decoder's error.
        #[source]
        source: rmpv::decode::Error,
    },
    /// A PUT entry without a value.
    #[error("op {op_id} ({map}/{key}) is a PUT without a value")]
    MissingValue {
        /// The op-log id.
        op_id: u64,
        /// The map written.
        map: String,
        /// The key written.
        key: String,
    },
}

impl OpMappingError {
    /// The op-log id of the entry that cannot be sent.
    pub fn op_id(&self) -> u64 {
        match self {
            Self::UndecodableValue { op_id, .. } | Self::MissingValue { op_id, .. } => *op_id,
        }
    }
}

/// A wire op for op-log id `id`.
fn client_op(id: u64, map: &str, key: &str, op_type: WireOpType, record: WireRecord) -> ClientOp {
    ClientOp {
        id: Some(OpId::Text(id.to_string())),
        map_name: map.to_owned(),
        key: key.to_owned(),
        op_type: Some(op_type),
        record: Some(record),
        write_concern: None,
        timeout: None,
    }
}

/// Decodes stored value bytes: exactly one MessagePack value. A reserved
/// marker (`0xc1`), which the decoder would read as `nil`, and trailing
/// bytes are errors.
fn decode_value(bytes: &[u8]) -> Result<rmpv::Value, rmpv::decode::Error> {
    let invalid = |what: &str| {
        rmpv::decode::Error::InvalidMarkerRead(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            what.to_owned(),
        ))
    };
    let mut rest = bytes;
    let value = rmpv::decode::read_value(&mut rest)?;
    if value.is_nil() && bytes.first() != Some(&0xc0) {
        return Err(invalid("a reserved MessagePack marker"));
    }
    if !rest.is_empty() {
        return Err(invalid("bytes after the value"));
    }
    Ok(value)
}

/// The wire form of a PUT or REMOVE entry.
///
/// # Errors
/// [`OpMappingError`] for a value that does not decode or a PUT without
/// one. A CLEAR entry needs the store: use [`ClearExpansion`].
pub fn pending_op(entry: &OpLogEntry) -> Result<PendingOp, OpMappingError> {
    let size = op_size_bound(
        &entry.map_name,
        &entry.key,
        &entry.timestamp.node_id,
        entry.value.as_ref().map_or(0, Vec::len),
    );
    let (op_type, record) = match (entry.op_type, entry.value.as_deref()) {
        (OpType::Put, Some(bytes)) => {
            let value = decode_value(bytes).map_err(|source| OpMappingError::UndecodableValue {
                op_id: entry.id,
                map: entry.map_name.clone(),
                key: entry.key.clone(),
                source,
            })?;
            (
                WireOpType::Put,
                WireRecord {
                    value: Some(value),
                    timestamp: entry.timestamp.clone(),
                    ttl_ms: entry.ttl_ms,
                },
            )
        }
        (OpType::Put, None) => {
            return Err(OpMappingError::MissingValue {
                op_id: entry.id,
                map: entry.map_name.clone(),
                key: entry.key.clone(),
            })
        }
        (OpType::Remove | OpType::Clear, _) => (
            WireOpType::Remove,
            WireRecord::tombstone(entry.timestamp.clone()),
        ),
    };
    Ok(PendingOp {
        id: entry.id,
        ops: vec![client_op(
            entry.id,
            &entry.map_name,
            &entry.key,
            op_type,
            record,
        )],
        size,
        partial: false,
    })
}

/// Turns a CLEAR entry into REMOVEs, fed the map's dirty records page by
/// page ([`push`](Self::push)), then [`finish`](Self::finish)ed.
#[derive(Debug)]
pub struct ClearExpansion {
    id: u64,
    map: String,
    timestamp: Timestamp,
    part_bytes: usize,
    parts: Vec<PendingOp>,
    part: PendingOp,
}

impl ClearExpansion {
    /// Starts expanding `entry` (a CLEAR) in parts of at most
    /// [`CLEAR_PART_BYTES`].
    pub fn new(entry: &OpLogEntry) -> Self {
        Self::with_part_bytes(entry, CLEAR_PART_BYTES)
    }

    /// As [`new`](Self::new), with another part size.
    pub fn with_part_bytes(entry: &OpLogEntry, part_bytes: usize) -> Self {
        Self {
            id: entry.id,
            map: entry.map_name.clone(),
            timestamp: entry.timestamp.clone(),
            part_bytes,
            parts: Vec::new(),
            part: Self::empty_part(entry.id),
        }
    }

    fn empty_part(id: u64) -> PendingOp {
        PendingOp {
            id,
            ops: Vec::new(),
            size: 0,
            partial: true,
        }
    }

    /// Considers one dirty record of the map: a tombstone carrying the
    /// clear's timestamp is one of the keys the clear removed (a later
    /// local write to the key has its own op).
    pub fn push(&mut self, record: &StoreRecord) {
        if record.value.is_some() || record.timestamp != self.timestamp {
            return;
        }
        let size = op_size_bound(&self.map, &record.key, &self.timestamp.node_id, 0);
        if !self.part.ops.is_empty() && self.part.size + size > self.part_bytes {
            let full = std::mem::replace(&mut self.part, Self::empty_part(self.id));
            self.parts.push(full);
        }
        self.part.size += size;
        self.part.ops.push(client_op(
            self.id,
            &self.map,
            &record.key,
            WireOpType::Remove,
            WireRecord::tombstone(record.timestamp.clone()),
        ));
    }

    /// The parts, the last one not `partial`. Empty when the clear has
    /// nothing left to send (then it can be marked synced at once).
    pub fn finish(mut self) -> Vec<PendingOp> {
        if !self.part.ops.is_empty() {
            self.part.partial = false;
            self.parts.push(self.part);
        }
        self.parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use topgun_core::wire::{Codec, Message, OpBatch};

    fn ts(millis: u64, node: &str) -> Timestamp {
        Timestamp {
            millis,
            counter: 0,
            node_id: node.into(),
        }
    }

    fn entry(id: u64, op_type: OpType, key: &str, value: Option<Vec<u8>>) -> OpLogEntry {
        OpLogEntry {
            id,
            map_name: "m".into(),
            op_type,
            key: key.into(),
            value,
            timestamp: ts(10, "n1"),
            ttl_ms: None,
            synced: false,
        }
    }

    fn tombstone(key: &str, t: Timestamp) -> StoreRecord {
        StoreRecord {
            map_name: "m".into(),
            key: key.into(),
            value: None,
            timestamp: t,
            ttl_ms: None,
            dirty: true,
        }
    }

    fn encoded_len(op: &ClientOp) -> usize {
        let msg = Message::OpBatch(OpBatch {
            ops: vec![op.clone()],
            write_concern: None,
            timeout: None,
        });
        let single = Codec::default().encode(&msg).unwrap().len();
        let empty = Message::OpBatch(OpBatch {
            ops: Vec::new(),
            write_concern: None,
            timeout: None,
        });
        single - Codec::default().encode(&empty).unwrap().len()
    }

    #[test]
    fn put_carries_the_decoded_value_and_a_string_id() {
        let value = rmp_serde_like(&rmpv::Value::from("hello"));
        let op = pending_op(&entry(7, OpType::Put, "k", Some(value))).unwrap();
        assert_eq!(op.id, 7);
        assert!(!op.partial);
        let wire = &op.ops[0];
        assert_eq!(wire.id, Some(OpId::Text("7".into())));
        assert_eq!(wire.op_type, Some(WireOpType::Put));
        let record = wire.record.as_ref().unwrap();
        assert_eq!(record.value, Some(rmpv::Value::from("hello")));
    }

    #[test]
    fn remove_is_a_tombstone() {
        let op = pending_op(&entry(3, OpType::Remove, "k", None)).unwrap();
        let wire = &op.ops[0];
        assert_eq!(wire.op_type, Some(WireOpType::Remove));
        assert_eq!(wire.record.as_ref().unwrap().value, None);
    }

    #[test]
    fn an_undecodable_value_is_an_error_not_nil() {
        // 0xc1 is never valid MessagePack; 0x92 0x01 is a truncated array;
        // 0x01 0x02 has a byte after the value.
        for bad in [vec![0xc1], vec![0x92, 0x01], vec![0x01, 0x02]] {
            let err = pending_op(&entry(9, OpType::Put, "k", Some(bad))).unwrap_err();
            assert!(matches!(
                err,
                OpMappingError::UndecodableValue { op_id: 9, .. }
            ));
            assert_eq!(err.op_id(), 9);
        }
        let nil = pending_op(&entry(9, OpType::Put, "k", Some(vec![0xc0]))).unwrap();
        let record = nil.ops[0].record.as_ref().unwrap();
        assert_eq!(record.value, Some(rmpv::Value::Nil));
        let err = pending_op(&entry(4, OpType::Put, "k", None)).unwrap_err();
        assert!(matches!(err, OpMappingError::MissingValue { op_id: 4, .. }));
    }

    #[test]
    fn clear_sends_only_its_own_tombstones() {
        let clear = entry(5, OpType::Clear, "", None);
        let mut expansion = ClearExpansion::new(&clear);
        expansion.push(&tombstone("a", ts(10, "n1")));
        // Written again after the clear: not the clear's to send.
        expansion.push(&StoreRecord {
            value: Some(vec![1]),
            ..tombstone("b", ts(11, "n1"))
        });
        // Removed later by its own REMOVE op.
        expansion.push(&tombstone("c", ts(12, "n1")));
        let parts = expansion.finish();
        assert_eq!(parts.len(), 1);
        assert!(!parts[0].partial);
        let keys: Vec<&str> = parts[0].ops.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["a"]);
        assert!(parts[0]
            .ops
            .iter()
            .all(|o| o.id == Some(OpId::Text("5".into()))));
    }

    #[test]
    fn an_empty_clear_has_no_parts() {
        let clear = entry(5, OpType::Clear, "", None);
        assert!(ClearExpansion::new(&clear).finish().is_empty());
    }

    #[test]
    fn clear_parts_respect_their_size_and_only_the_last_is_final() {
        let clear = entry(5, OpType::Clear, "", None);
        let mut expansion = ClearExpansion::with_part_bytes(&clear, 2_000);
        for i in 0..100 {
            expansion.push(&tombstone(&format!("key-{i:03}"), ts(10, "n1")));
        }
        let parts = expansion.finish();
        assert!(parts.len() > 1);
        let (last, rest) = parts.split_last().unwrap();
        assert!(!last.partial);
        assert!(rest.iter().all(|p| p.partial));
        assert!(parts.iter().all(|p| p.size <= 2_000));
        let sent: usize = parts.iter().map(|p| p.ops.len()).sum();
        assert_eq!(sent, 100);
        for part in &parts {
            let actual: usize = part.ops.iter().map(encoded_len).sum();
            assert!(actual <= part.size, "{actual} > {}", part.size);
        }
    }

    fn rmp_serde_like(v: &rmpv::Value) -> Vec<u8> {
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, v).unwrap();
        buf
    }

    proptest! {
        #[test]
        fn the_size_bound_holds(
            id in any::<u64>(),
            map in "[a-z]{1,40}",
            key in "\\PC{1,60}",
            node in "[a-z0-9-]{1,36}",
            millis in any::<u64>(),
            counter in any::<u32>(),
            ttl in proptest::option::of(any::<u64>()),
            value in proptest::collection::vec(any::<u8>(), 0..300),
            remove in any::<bool>(),
        ) {
            let value = rmp_serde_like(&rmpv::Value::Binary(value));
            let e = OpLogEntry {
                id,
                map_name: map,
                op_type: if remove { OpType::Remove } else { OpType::Put },
                key,
                value: (!remove).then_some(value),
                timestamp: Timestamp { millis, counter, node_id: node },
                ttl_ms: ttl,
                synced: false,
            };
            let op = pending_op(&e).unwrap();
            let actual = encoded_len(&op.ops[0]);
            prop_assert!(actual <= op.size, "{} > {}", actual, op.size);
            prop_assert!(op.size <= actual + OP_OVERHEAD + 20);
        }
    }
}
