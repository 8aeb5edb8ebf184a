//! Topic pub/sub, the protocol's optional part: `TOPIC_SUB`,
//! `TOPIC_UNSUB`, `TOPIC_PUB` (fields in `payload`).

use serde::{Deserialize, Serialize};

/// `TOPIC_SUB` payload (client → server): subscribe to a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicSub {
    /// The topic, e.g. `"chat/room-1"`.
    pub topic: String,
}

/// `TOPIC_UNSUB` payload (client → server): unsubscribe from a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicUnsub {
    /// The topic.
    pub topic: String,
}

/// `TOPIC_PUB` payload (client → server): publish to a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicPub {
    /// The topic.
    pub topic: String,
    /// What is published: any value (nil when absent).
    #[serde(default = "super::nil")]
    pub data: rmpv::Value,
}
