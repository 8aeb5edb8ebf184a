//! Writes and their acknowledgement: `CLIENT_OP`, `OP_BATCH`, `OP_ACK`,
//! `OP_REJECTED`. All carry their fields in `payload`.

use super::{OpId, OpType, WireRecord, WriteConcern};
use serde::{Deserialize, Serialize};

/// One write, as a client sends it (alone in `CLIENT_OP` or in an
/// `OP_BATCH`).
///
/// A PUT carries `record` with a value; a REMOVE carries
/// `opType: "REMOVE"` and a tombstone `record` (`value: null`). Fields
/// TopGun's TS client adds (`timestamp`, `synced`, `orRecord`, `orTag`) are
/// ignored on decode and not written back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientOp {
    /// The client's op id, echoed in `OP_ACK.lastId` and `opId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<OpId>,
    /// The map written to.
    pub map_name: String,
    /// The key written.
    pub key: String,
    /// What kind of write; a PUT when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_type: Option<OpType>,
    /// The record written (a tombstone for a REMOVE). A nil `record`
    /// decodes as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<WireRecord>,
    /// When the client wants this op acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_concern: Option<WriteConcern>,
    /// How long the client waits for the write concern, in ms.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::flex::opt_u64"
    )]
    pub timeout: Option<u64>,
}

/// `OP_BATCH` payload (client → server): many writes, acknowledged by one
/// `OP_ACK` whose `lastId` is the id of the last op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpBatch {
    /// The writes, in the order the client made them.
    pub ops: Vec<ClientOp>,
    /// Write concern for the whole batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_concern: Option<WriteConcern>,
    /// How long the client waits for the write concern, in ms.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::flex::opt_u64"
    )]
    pub timeout: Option<u64>,
}

/// `OP_ACK` payload (server → client): the ops up to `last_id` are applied.
///
/// TopGun's client reads `lastId` as a cumulative high-water mark (see
/// [`OpId::as_number`]); a non-numeric `lastId` acknowledges every pending
/// op. TopGun's server also sends generic acks whose `lastId` is none of
/// the client's ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpAck {
    /// The id of the last op acknowledged.
    pub last_id: OpId,
    /// The level reached for the whole batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub achieved_level: Option<WriteConcern>,
    /// Per-op outcomes; each `opId` in them counts as synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<OpResult>>,
}

/// The outcome of one op in an [`OpAck`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpResult {
    /// The op's id.
    pub op_id: OpId,
    /// Whether it was applied.
    pub success: bool,
    /// The level it reached.
    pub achieved_level: WriteConcern,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `OP_REJECTED` payload (server → client): one op refused (access rule,
/// bad timestamp, unknown op type, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpRejected {
    /// The refused op's id.
    pub op_id: OpId,
    /// Why it was refused.
    pub reason: String,
    /// HTTP-like status, e.g. 400 or 403.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::lenient::opt_u32"
    )]
    pub code: Option<u32>,
}
