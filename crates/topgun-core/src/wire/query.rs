//! Live queries: `QUERY_SUB`, `QUERY_UNSUB`, `QUERY_RESP`, `QUERY_UPDATE`
//! (fields in `payload`). A `QUERY_SUB` is also how a client subscribes to
//! a map's realtime `SERVER_EVENT`s.

use super::{ChangeType, CursorStatus, SortDirection};
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `QUERY_SUB` payload (client → server): start a live query. The server
/// answers with `QUERY_RESP`, then `QUERY_UPDATE`s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuerySub {
    /// The client's id for this query.
    pub query_id: String,
    /// The map queried.
    pub map_name: String,
    /// What to select.
    pub query: Query,
    /// Fields to project, when the client wants only some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
}

/// The selection of a [`QuerySub`]. Every part is optional; an empty query
/// selects the whole map.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    /// Field conditions, e.g. `{"age": {"$gt": 18}}`; kept as sent.
    #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
    pub where_: Option<rmpv::Value>,
    /// A predicate tree (`{op, attribute?, value?, children?}`); kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<rmpv::Value>,
    /// Sort order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<Sort>,
    /// Maximum number of results.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::flex::opt_u64"
    )]
    pub limit: Option<u64>,
    /// Opaque pagination cursor from an earlier `QUERY_RESP.nextCursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A query's sort order, in either of the two shapes peers send; the
/// shape is kept so that it is written back as it came.
///
/// The protocol reference (and TopGun's Rust core) uses a list of
/// `{field, direction}`; TopGun's TypeScript schema uses a map
/// `{field: direction}`. Both decode; [`Sort::keys`] reads either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sort {
    /// `[{field, direction}, …]`.
    List(Vec<SortKey>),
    /// `{field: direction, …}`, keys in wire order.
    Map(Vec<SortKey>),
}

impl Sort {
    /// The sort keys, most significant first.
    pub fn keys(&self) -> &[SortKey] {
        match self {
            Sort::List(keys) | Sort::Map(keys) => keys,
        }
    }
}

/// One field of a [`Sort`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SortKey {
    /// The field sorted on.
    pub field: String,
    /// Ascending or descending.
    pub direction: SortDirection,
}

impl Serialize for Sort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Sort::List(keys) => keys.serialize(s),
            Sort::Map(keys) => {
                let mut map = s.serialize_map(Some(keys.len()))?;
                for key in keys {
                    map.serialize_entry(&key.field, &key.direction)?;
                }
                map.end()
            }
        }
    }
}

struct SortVisitor;

impl<'de> Visitor<'de> for SortVisitor {
    type Value = Sort;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of {field, direction} or a map of field to direction")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Sort, A::Error> {
        let mut keys = Vec::new();
        while let Some(key) = seq.next_element::<SortKey>()? {
            keys.push(key);
        }
        Ok(Sort::List(keys))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Sort, A::Error> {
        let mut keys = Vec::new();
        while let Some((field, direction)) = map.next_entry::<String, SortDirection>()? {
            keys.push(SortKey { field, direction });
        }
        Ok(Sort::Map(keys))
    }
}

impl<'de> Deserialize<'de> for Sort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SortVisitor)
    }
}

/// `QUERY_UNSUB` payload (client → server): stop a live query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryUnsub {
    /// The query to stop.
    pub query_id: String,
}

/// `QUERY_RESP` payload (server → client): the current result set of a
/// live query; it replaces whatever the client held for that query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryResp {
    /// The query answered.
    pub query_id: String,
    /// The matching entries.
    pub results: Vec<QueryResult>,
    /// Cursor for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Whether more results follow `next_cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_more: Option<bool>,
    /// What became of the cursor the query was sent with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_status: Option<CursorStatus>,
}

/// One entry of a [`QueryResp`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryResult {
    /// The key.
    pub key: String,
    /// Its value (nil when absent).
    #[serde(default = "super::nil")]
    pub value: rmpv::Value,
}

/// `QUERY_UPDATE` payload (server → client): one change to a live query's
/// result set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryUpdate {
    /// The query changed.
    pub query_id: String,
    /// The key that entered, changed or left.
    pub key: String,
    /// Its value (nil when absent, e.g. on `LEAVE`).
    #[serde(default = "super::nil")]
    pub value: rmpv::Value,
    /// How the result set changed.
    pub change_type: ChangeType,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    #[test]
    fn sort_decodes_both_shapes_and_keeps_them() {
        let list = Value::Array(vec![Value::Map(vec![
            ("field".into(), "createdAt".into()),
            ("direction".into(), "desc".into()),
        ])]);
        let map = Value::Map(vec![
            ("b".into(), "asc".into()),
            ("a".into(), "desc".into()),
        ]);
        let l: Sort = rmpv::ext::from_value(list.clone()).unwrap();
        let m: Sort = rmpv::ext::from_value(map.clone()).unwrap();
        assert!(matches!(l, Sort::List(_)));
        assert_eq!(l.keys()[0].direction, SortDirection::Desc);
        // Map order is the wire order, not alphabetical.
        assert_eq!(m.keys()[0].field, "b");
        // rmpv's own serialiser writes structs as arrays; the codec's is named.
        let named = |s: &Sort| -> Value {
            rmp_serde::from_slice(&rmp_serde::to_vec_named(s).unwrap()).unwrap()
        };
        assert_eq!(named(&l), list);
        assert_eq!(named(&m), map);
        assert!(rmpv::ext::from_value::<Sort>(Value::from("asc")).is_err());
    }
}
