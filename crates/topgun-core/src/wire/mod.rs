//! Wire protocol messages and their MessagePack codec.
//!
//! Every frame is one MessagePack map tagged by a string `type`
//! ([`Message`]); some messages carry their fields beside `type`, others
//! in a `payload` map, exactly as TopGun's peers send them. Fields are
//! camelCase, absent optional fields are omitted, free-form values (record
//! values, query results, topic data) are [`rmpv::Value`]s, and integers
//! sent as whole floats by JavaScript peers are accepted.
//!
//! [`decode`] never panics: oversized, truncated, too deeply nested or
//! ill-typed frames are [`DecodeError`]s, and a frame of a type this
//! version does not know becomes [`Message::Unknown`], which [`encode`]
//! writes back unchanged.
//!
//! ```
//! use topgun_core::wire::{self, ClientOp, Message, OpBatch, OpType, WireRecord};
//! use topgun_core::Timestamp;
//!
//! let op = ClientOp {
//!     id: Some("1".into()),
//!     map_name: "todos".into(),
//!     key: "t1".into(),
//!     op_type: Some(OpType::Remove),
//!     record: Some(WireRecord::tombstone(Timestamp::new(1_700_000_000_000, 0, "n1"))),
//!     write_concern: None,
//!     timeout: None,
//! };
//! let msg = Message::OpBatch(OpBatch { ops: vec![op], write_concern: None, timeout: None });
//! let frame = wire::encode(&msg)?;
//! assert_eq!(wire::decode(&frame)?, msg);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bounded;
mod codec;
mod events;
mod kinds;
mod lenient;
mod message;
mod op_id;
mod ops;
mod prescan;
mod pubsub;
mod query;
mod raw_leaf;
mod session;
mod sync;

pub use codec::{
    decode, decode_with_limit, encode, Codec, DecodeError, EncodeError, DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_FRAME_LEN,
};
pub use events::{ServerBatchEvent, ServerEvent};
pub use kinds::{
    AggFunc, ChangeType, CursorStatus, OpType, PredicateOp, SortDirection, WriteConcern,
};
pub use message::{Message, UnknownMessage};
pub use op_id::OpId;
pub use ops::{ClientOp, OpAck, OpBatch, OpRejected, OpResult};
pub use pubsub::{TopicPub, TopicSub, TopicUnsub};
pub use query::{
    Aggregation, Predicate, Query, QueryResp, QueryResult, QuerySub, QueryUnsub, QueryUpdate, Sort,
    SortKey,
};
pub use raw_leaf::RawLeafRecord;
pub use session::{
    Auth, AuthAck, AuthFail, AuthRequired, DeviceAck, DeviceHello, Ping, Pong, ServerError,
};
pub use sync::{
    LeafRecord, MerkleReqBucket, SyncInit, SyncResetRequired, SyncRespBuckets, SyncRespLeaf,
    SyncRespRoot,
};

/// A record as it travels on the wire: any MessagePack value, or a
/// tombstone (`value: nil`).
pub type WireRecord = crate::lww::LwwRecord<rmpv::Value>;

/// Default for a free-form value that is absent from a frame.
fn nil() -> rmpv::Value {
    rmpv::Value::Nil
}
