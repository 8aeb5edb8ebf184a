//! The [`Message`] enum: every frame of the protocol, tagged by `type`.
//!
//! One table (the `messages!` invocation below) lists each message type,
//! its body type and whether its fields are flat (beside `type`) or nested
//! in `payload`. From it come the enum, its serialisation, the type names
//! and the decoder's dispatch, so they cannot drift apart.

use super::{
    Auth, AuthAck, AuthFail, AuthRequired, ClientOp, DeviceAck, DeviceHello, MerkleReqBucket,
    OpAck, OpBatch, OpRejected, Ping, Pong, QueryResp, QuerySub, QueryUnsub, QueryUpdate,
    ServerBatchEvent, ServerError, ServerEvent, SyncInit, SyncResetRequired, SyncRespBuckets,
    SyncRespLeaf, SyncRespRoot, TopicPub, TopicSub, TopicUnsub,
};
use rmpv::Value;
use serde::{Deserialize, Serialize, Serializer};

/// Writes a body as `{payload: body}`; the enum's tag then makes the frame
/// `{type, payload}`.
fn payload<T: Serialize, S: Serializer>(body: &T, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Payload<'a, T> {
        payload: &'a T,
    }
    Payload { payload: body }.serialize(s)
}

/// Reads the `payload` of a nested message; other fields are ignored.
#[derive(Deserialize)]
struct PayloadOf<T> {
    payload: T,
}

/// The outcome of looking a frame's `type` up in the table.
pub(super) enum Dispatch {
    /// A known type, decoded (or not) into its variant.
    Known(Result<Box<Message>, rmpv::ext::Error>),
    /// A type this version does not know; the frame is handed back.
    Unknown(Value),
}

macro_rules! messages {
    (
        flat { $( $(#[$fmeta:meta])* $fvar:ident($fty:ty) = $fname:literal, )+ }
        nested { $( $(#[$nmeta:meta])* $nvar:ident($nty:ty) = $nname:literal, )+ }
    ) => {
        /// One protocol frame: a MessagePack map tagged by its `type` field.
        ///
        /// Flat messages carry their fields beside `type`; the others nest
        /// them in a `payload` map. Decode frames with [`super::decode`] (or
        /// a [`super::Codec`]) and write them with [`super::encode`]; the
        /// `Serialize`/`Deserialize` impls give the same shape for other
        /// serde formats.
        ///
        /// A frame whose `type` this version does not know decodes to
        /// [`Message::Unknown`] instead of failing, and encodes back to the
        /// same value. Unknown fields of known messages are ignored.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(tag = "type")]
        #[non_exhaustive]
        pub enum Message {
            $(
                $(#[$fmeta])*
                #[doc = concat!("\n\n`", $fname, "`, flat.")]
                #[serde(rename = $fname)]
                $fvar($fty),
            )+
            $(
                $(#[$nmeta])*
                #[doc = concat!("\n\n`", $nname, "`, fields in `payload`.")]
                #[serde(rename = $nname, serialize_with = "payload")]
                $nvar($nty),
            )+
            /// A message of a type this version does not know, kept whole.
            #[serde(untagged)]
            Unknown(UnknownMessage),
        }

        impl Message {
            /// The wire `type` of this message, e.g. `"OP_BATCH"`.
            pub fn type_name(&self) -> &str {
                match self {
                    $( Message::$fvar(_) => $fname, )+
                    $( Message::$nvar(_) => $nname, )+
                    Message::Unknown(unknown) => unknown.type_name(),
                }
            }

            /// Whether `type_name` is a message type this version decodes
            /// into its own variant (anything else becomes
            /// [`Message::Unknown`]).
            pub fn is_known_type(type_name: &str) -> bool {
                matches!(type_name, $( $fname )|+ | $( $nname )|+)
            }

            /// Decodes the raw frame `bytes`, whose `type` is `type_name`,
            /// straight into its variant, without building a value tree
            /// first. `None` for a type this version does not know.
            pub(super) fn dispatch_bytes(
                type_name: &str,
                bytes: &[u8],
            ) -> Option<Result<Message, rmp_serde::decode::Error>> {
                Some(match type_name {
                    $( $fname => rmp_serde::from_slice::<$fty>(bytes).map(Message::$fvar), )+
                    $(
                        $nname => rmp_serde::from_slice::<PayloadOf<$nty>>(bytes)
                            .map(|p| Message::$nvar(p.payload)),
                    )+
                    _ => return None,
                })
            }

            /// Decodes the frame `value`, whose `type` is `type_name`, into
            /// its variant.
            pub(super) fn dispatch(type_name: &str, value: Value) -> Dispatch {
                Dispatch::Known(match type_name {
                    $( $fname => rmpv::ext::from_value::<$fty>(value).map(Message::$fvar), )+
                    $(
                        $nname => rmpv::ext::from_value::<PayloadOf<$nty>>(value)
                            .map(|p| Message::$nvar(p.payload)),
                    )+
                    _ => return Dispatch::Unknown(value),
                }.map(Box::new))
            }
        }
    };
}

messages! {
    flat {
        /// Client credentials.
        Auth(Auth) = "AUTH",
        /// The server requires auth.
        AuthRequired(AuthRequired) = "AUTH_REQUIRED",
        /// Auth accepted.
        AuthAck(AuthAck) = "AUTH_ACK",
        /// Auth refused.
        AuthFail(AuthFail) = "AUTH_FAIL",
        /// A token-less client introduces its device.
        DeviceHello(DeviceHello) = "DEVICE_HELLO",
        /// The server's answer to `DEVICE_HELLO`.
        DeviceAck(DeviceAck) = "DEVICE_ACK",
        /// Start a Merkle pull for one map.
        SyncInit(SyncInit) = "SYNC_INIT",
        /// Keep-alive.
        Ping(Ping) = "PING",
        /// Keep-alive reply.
        Pong(Pong) = "PONG",
    }
    nested {
        /// One write.
        ClientOp(ClientOp) = "CLIENT_OP",
        /// Many writes.
        OpBatch(OpBatch) = "OP_BATCH",
        /// Writes acknowledged.
        OpAck(OpAck) = "OP_ACK",
        /// One write refused.
        OpRejected(OpRejected) = "OP_REJECTED",
        /// A server error.
        Error(ServerError) = "ERROR",
        /// Ask for a Merkle node's children or records.
        MerkleReqBucket(MerkleReqBucket) = "MERKLE_REQ_BUCKET",
        /// The server's Merkle root.
        SyncRespRoot(SyncRespRoot) = "SYNC_RESP_ROOT",
        /// The children of a Merkle node.
        SyncRespBuckets(SyncRespBuckets) = "SYNC_RESP_BUCKETS",
        /// The records of a Merkle leaf.
        SyncRespLeaf(SyncRespLeaf) = "SYNC_RESP_LEAF",
        /// Drop the map and pull it again.
        SyncResetRequired(SyncResetRequired) = "SYNC_RESET_REQUIRED",
        /// A change by another client.
        ServerEvent(ServerEvent) = "SERVER_EVENT",
        /// Several changes.
        ServerBatchEvent(ServerBatchEvent) = "SERVER_BATCH_EVENT",
        /// Start a live query.
        QuerySub(QuerySub) = "QUERY_SUB",
        /// Stop a live query.
        QueryUnsub(QueryUnsub) = "QUERY_UNSUB",
        /// A live query's result set.
        QueryResp(QueryResp) = "QUERY_RESP",
        /// A change to a live query's result set.
        QueryUpdate(QueryUpdate) = "QUERY_UPDATE",
        /// Subscribe to a topic.
        TopicSub(TopicSub) = "TOPIC_SUB",
        /// Unsubscribe from a topic.
        TopicUnsub(TopicUnsub) = "TOPIC_UNSUB",
        /// Publish to a topic.
        TopicPub(TopicPub) = "TOPIC_PUB",
    }
}

impl Message {
    /// The free-form values inside this message, each with the number of
    /// maps and arrays that enclose it in the encoded frame. The encoder
    /// uses it to bound a frame's nesting before writing it.
    pub(super) fn values(&self) -> Vec<(&Value, usize)> {
        fn record(r: &Option<super::WireRecord>, above: usize) -> Option<(&Value, usize)> {
            r.as_ref()
                .and_then(|r| r.value.as_ref())
                .map(|v| (v, above))
        }
        // frame map = 1, payload map = 2, then whatever the body adds.
        match self {
            Message::ClientOp(op) => record(&op.record, 3).into_iter().collect(),
            Message::OpBatch(b) => b
                .ops
                .iter()
                .filter_map(|op| record(&op.record, 5))
                .collect(),
            Message::ServerEvent(e) => record(&e.record, 3).into_iter().collect(),
            Message::ServerBatchEvent(b) => b
                .events
                .iter()
                .filter_map(|e| record(&e.record, 5))
                .collect(),
            Message::SyncRespLeaf(l) => l
                .records
                .iter()
                .filter_map(|r| r.record.value.as_ref().map(|v| (v, 5)))
                .collect(),
            Message::QuerySub(q) => {
                // frame, payload, query, then for a predicate node: the
                // node map, plus a `children` array and a node map per level.
                fn leaves<'a>(
                    p: &'a super::Predicate,
                    above: usize,
                    out: &mut Vec<(&'a Value, usize)>,
                ) {
                    out.extend(p.value.as_ref().map(|v| (v, above + 1)));
                    for child in p.children.iter().flatten() {
                        leaves(child, above + 2, out);
                    }
                }
                let mut out: Vec<(&Value, usize)> = q.query.where_.iter().map(|v| (v, 3)).collect();
                if let Some(p) = &q.query.predicate {
                    leaves(p, 3, &mut out);
                }
                out
            }
            Message::QueryResp(r) => r.results.iter().map(|r| (&r.value, 4)).collect(),
            Message::QueryUpdate(u) => vec![(&u.value, 2)],
            Message::TopicPub(p) => vec![(&p.data, 2)],
            Message::Error(e) => e.details.iter().map(|v| (v, 2)).collect(),
            Message::Unknown(u) => vec![(&u.raw, 0)],
            _ => Vec::new(),
        }
    }
}

/// A message whose `type` this version does not know: its type name and
/// the whole frame as received. Encoding it writes the frame back
/// unchanged. Only the decoder builds one, so the frame is always a map
/// whose `type` entry is [`UnknownMessage::type_name`].
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownMessage {
    type_name: String,
    raw: Value,
}

impl UnknownMessage {
    /// Wraps a decoded frame; `raw` is a map whose `type` is `type_name`.
    pub(super) fn new(type_name: String, raw: Value) -> Self {
        Self { type_name, raw }
    }

    /// The frame's `type`, e.g. `"LOCK_REQUEST"`.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The whole frame, `type` included.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// The whole frame, by value.
    pub fn into_raw(self) -> Value {
        self.raw
    }
}

impl Serialize for UnknownMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}
