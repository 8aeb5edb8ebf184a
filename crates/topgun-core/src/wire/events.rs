//! Changes pushed by the server: `SERVER_EVENT` and `SERVER_BATCH_EVENT`
//! (fields in `payload`).

use super::{OpType, WireRecord};
use serde::{Deserialize, Serialize};

/// `SERVER_EVENT` payload (server → client): a change made by another
/// client.
///
/// TopGun's server sends REMOVE events without a record (a delete at the
/// server's time); this project's server sends the tombstone record.
/// TopGun's client applies an event only when it carries `record`. The
/// OR-map fields `orRecord`/`orTag` are ignored on decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerEvent {
    /// The map changed.
    pub map_name: String,
    /// What kind of change.
    pub event_type: OpType,
    /// The key changed.
    pub key: String,
    /// The key's new record (a tombstone for a REMOVE), when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<WireRecord>,
}

/// `SERVER_BATCH_EVENT` payload (server → client): several events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerBatchEvent {
    /// The events, in the order they happened.
    pub events: Vec<ServerEvent>,
}
