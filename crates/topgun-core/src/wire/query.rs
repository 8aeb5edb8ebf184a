//! Live queries: `QUERY_SUB`, `QUERY_UNSUB`, `QUERY_RESP`, `QUERY_UPDATE`
//! (fields in `payload`). A `QUERY_SUB` is also how a client subscribes to
//! a map's realtime `SERVER_EVENT`s.

use super::{AggFunc, ChangeType, CursorStatus, PredicateOp, SortDirection};
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

/// The selection of a [`QuerySub`], in TopGun's shape:
/// `{where?, predicate?, sort?, limit?, cursor?, groupBy?, aggregations?}`.
/// Every part is optional; an empty query selects the whole map in key
/// order.
///
/// This is the one query type of the workspace: clients build it, it
/// travels in `QUERY_SUB`, and `topgun-query` compiles and runs it on both
/// sides. `where` and `predicate` both filter (a record must satisfy both);
/// attribute paths are dotted (`address.city`; a numeric segment indexes an
/// array) and `_key` means the record key.
///
/// ```
/// use topgun_core::wire::{Predicate, Query, SortDirection};
///
/// let query = Query::new()
///     .where_eq("status", "active")
///     .filter(Predicate::gt("age", 18))
///     .sort_by("age", SortDirection::Desc)
///     .limit(50);
/// assert_eq!(query.limit, Some(50));
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    /// Field → expected value (equality), or field → operator object such
    /// as `{"$gt": 18}`; kept as sent (a map is expected; the query engine
    /// rejects anything else). Operators: `$eq $ne $gt $gte $lt $lte $in
    /// $nin $like $regex $exists`.
    #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
    pub where_: Option<rmpv::Value>,
    /// A predicate tree (see [`Predicate`]); boxed to keep [`Message`]
    /// small.
    ///
    /// [`Message`]: super::Message
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<Box<Predicate>>,
    /// Sort order, most significant key first.
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
    /// Group the matching records by these fields; the result then has one
    /// row per group (see [`Aggregation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<Vec<String>>,
    /// Aggregates computed per group of a `groupBy` query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregations: Option<Vec<Aggregation>>,
}

/// A node of a predicate tree: `{op, attribute?, value?, children?}`.
///
/// Leaf ops compare `attribute` with `value`; `and`/`or` combine
/// `children`, `not` negates its single child. A `value` of nil and an
/// absent `value` are the same thing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Predicate {
    /// The operator.
    pub op: PredicateOp,
    /// The attribute a leaf op reads (dotted path or `_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// The operand of a leaf op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<rmpv::Value>,
    /// The operands of `and`, `or`, `not`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<Predicate>>,
}

/// One aggregate of a `groupBy` query: `{func, field?}`. `count` needs no
/// field (every group row carries `__count` anyway); the others name the
/// numeric field they read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregation {
    /// The function.
    pub func: AggFunc,
    /// The field aggregated (dotted path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Aggregation {
    /// `func(field)`.
    pub fn new(func: AggFunc, field: &str) -> Self {
        Self {
            func,
            field: Some(field.to_owned()),
        }
    }
}

impl Predicate {
    fn leaf(op: PredicateOp, attribute: &str, value: Option<rmpv::Value>) -> Self {
        Self {
            op,
            attribute: Some(attribute.to_owned()),
            value,
            children: None,
        }
    }

    fn node(op: PredicateOp, children: Vec<Predicate>) -> Self {
        Self {
            op,
            attribute: None,
            value: None,
            children: Some(children),
        }
    }

    /// `attribute == value`.
    pub fn eq(attribute: &str, value: impl Into<rmpv::Value>) -> Self {
        Self::leaf(PredicateOp::Eq, attribute, Some(value.into()))
    }
    /// `attribute != value`.
    pub fn neq(attribute: &str, value: impl Into<rmpv::Value>) -> Self {
        Self::leaf(PredicateOp::Neq, attribute, Some(value.into()))
    }
    /// `attribute > value`.
    pub fn gt(attribute: &str, value: impl Into<rmpv::Value>) -> Self {
        Self::leaf(PredicateOp::Gt, attribute, Some(value.into()))
    }
    /// `attribute >= value`.
    pub fn gte(attribute: &str, value: impl Into<rmpv::Value>) -> Self {
        Self::leaf(PredicateOp::Gte, attribute, Some(value.into()))
    }
    /// `attribute < value`.
    pub fn lt(attribute: &str, value: impl Into<rmpv::Value>) -> Self {
        Self::leaf(PredicateOp::Lt, attribute, Some(value.into()))
    }
    /// `attribute <= value`.
    pub fn lte(attribute: &str, value: impl Into<rmpv::Value>) -> Self {
        Self::leaf(PredicateOp::Lte, attribute, Some(value.into()))
    }
    /// SQL `LIKE` (`%`, `_`), case-insensitive.
    pub fn like(attribute: &str, pattern: &str) -> Self {
        Self::leaf(PredicateOp::Like, attribute, Some(pattern.into()))
    }
    /// Regular expression match anywhere in the string.
    pub fn regex(attribute: &str, pattern: &str) -> Self {
        Self::leaf(PredicateOp::Regex, attribute, Some(pattern.into()))
    }
    /// A string attribute starts with `prefix`.
    pub fn starts_with(attribute: &str, prefix: &str) -> Self {
        Self::leaf(PredicateOp::StartsWith, attribute, Some(prefix.into()))
    }
    /// A string attribute ends with `suffix`.
    pub fn ends_with(attribute: &str, suffix: &str) -> Self {
        Self::leaf(PredicateOp::EndsWith, attribute, Some(suffix.into()))
    }
    /// `attribute` equals one of `values`.
    pub fn is_in(attribute: &str, values: impl IntoIterator<Item = rmpv::Value>) -> Self {
        let values = rmpv::Value::Array(values.into_iter().collect());
        Self::leaf(PredicateOp::In, attribute, Some(values))
    }
    /// `lo <= attribute <= hi`.
    pub fn between(
        attribute: &str,
        lo: impl Into<rmpv::Value>,
        hi: impl Into<rmpv::Value>,
    ) -> Self {
        let bounds = rmpv::Value::Array(vec![lo.into(), hi.into()]);
        Self::leaf(PredicateOp::Between, attribute, Some(bounds))
    }
    /// `attribute` is missing or null.
    pub fn is_null(attribute: &str) -> Self {
        Self::leaf(PredicateOp::IsNull, attribute, None)
    }
    /// `attribute` is present and not null.
    pub fn is_not_null(attribute: &str) -> Self {
        Self::leaf(PredicateOp::IsNotNull, attribute, None)
    }
    /// String contains substring, or array contains element.
    pub fn contains(attribute: &str, value: impl Into<rmpv::Value>) -> Self {
        Self::leaf(PredicateOp::Contains, attribute, Some(value.into()))
    }
    /// Contains every one of `values`.
    pub fn contains_all(attribute: &str, values: impl IntoIterator<Item = rmpv::Value>) -> Self {
        let values = rmpv::Value::Array(values.into_iter().collect());
        Self::leaf(PredicateOp::ContainsAll, attribute, Some(values))
    }
    /// Contains at least one of `values`.
    pub fn contains_any(attribute: &str, values: impl IntoIterator<Item = rmpv::Value>) -> Self {
        let values = rmpv::Value::Array(values.into_iter().collect());
        Self::leaf(PredicateOp::ContainsAny, attribute, Some(values))
    }
    /// All of `children`.
    pub fn and(children: Vec<Predicate>) -> Self {
        Self::node(PredicateOp::And, children)
    }
    /// Any of `children`.
    pub fn or(children: Vec<Predicate>) -> Self {
        Self::node(PredicateOp::Or, children)
    }
    /// Not `child`.
    #[allow(clippy::should_implement_trait)] // a constructor, not negation of `self`
    pub fn not(child: Predicate) -> Self {
        Self::node(PredicateOp::Not, vec![child])
    }

    /// The depth of the tree (a leaf is 1).
    pub fn depth(&self) -> usize {
        1 + self
            .children
            .iter()
            .flatten()
            .map(Predicate::depth)
            .max()
            .unwrap_or(0)
    }
}

impl Query {
    /// A query matching every record of the map, in key order.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `field == value` to `where` (replacing a `where` that is not a
    /// map).
    pub fn where_eq(mut self, field: &str, value: impl Into<rmpv::Value>) -> Self {
        let entry = (rmpv::Value::from(field), value.into());
        match &mut self.where_ {
            Some(rmpv::Value::Map(entries)) => {
                entries.retain(|(k, _)| k.as_str() != Some(field));
                entries.push(entry);
            }
            other => *other = Some(rmpv::Value::Map(vec![entry])),
        }
        self
    }

    /// ANDs `predicate` with the query's predicate (if any).
    pub fn filter(mut self, predicate: Predicate) -> Self {
        self.predicate = Some(Box::new(match self.predicate.take().map(|p| *p) {
            None => predicate,
            Some(Predicate {
                op: PredicateOp::And,
                attribute: None,
                value: None,
                children,
            }) => {
                let mut children = children.unwrap_or_default();
                children.push(predicate);
                Predicate::and(children)
            }
            Some(existing) => Predicate::and(vec![existing, predicate]),
        }));
        self
    }

    /// Appends a sort key (less significant than those already present).
    pub fn sort_by(mut self, field: &str, direction: SortDirection) -> Self {
        let key = SortKey {
            field: field.to_owned(),
            direction,
        };
        match &mut self.sort {
            Some(Sort::List(keys) | Sort::Map(keys)) => keys.push(key),
            None => self.sort = Some(Sort::List(vec![key])),
        }
        self
    }

    /// The sort keys, most significant first (none without `sort`).
    pub fn sort_keys(&self) -> &[SortKey] {
        self.sort.as_ref().map_or(&[], Sort::keys)
    }

    /// Returns at most `limit` results.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Continues after `cursor` (a `nextCursor` from a previous page).
    pub fn after(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// Groups the result by `fields`, one row per group.
    pub fn group_by<S: Into<String>>(mut self, fields: impl IntoIterator<Item = S>) -> Self {
        self.group_by = Some(fields.into_iter().map(Into::into).collect());
        self
    }

    /// Adds an aggregate to a `groupBy` query.
    pub fn aggregate(mut self, aggregation: Aggregation) -> Self {
        self.aggregations
            .get_or_insert_with(Vec::new)
            .push(aggregation);
        self
    }
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
    fn group_by_and_aggregations_have_topguns_shape() {
        let wire = Value::Map(vec![
            ("groupBy".into(), Value::Array(vec!["category".into()])),
            (
                "aggregations".into(),
                Value::Array(vec![
                    Value::Map(vec![("func".into(), "count".into())]),
                    Value::Map(vec![
                        ("func".into(), "sum".into()),
                        ("field".into(), "price".into()),
                    ]),
                ]),
            ),
        ]);
        let query: Query = rmpv::ext::from_value(wire.clone()).unwrap();
        assert_eq!(
            query,
            Query::new()
                .group_by(["category"])
                .aggregate(Aggregation {
                    func: AggFunc::Count,
                    field: None
                })
                .aggregate(Aggregation::new(AggFunc::Sum, "price"))
        );
        let named: Value =
            rmp_serde::from_slice(&rmp_serde::to_vec_named(&query).unwrap()).unwrap();
        assert_eq!(named, wire);
    }

    #[test]
    fn predicates_decode_unknown_ops_and_build_nested_trees() {
        let wire = Value::Map(vec![
            ("op".into(), "and".into()),
            (
                "children".into(),
                Value::Array(vec![
                    Value::Map(vec![
                        ("op".into(), "startsWith".into()),
                        ("attribute".into(), "name".into()),
                        ("value".into(), "A".into()),
                    ]),
                    Value::Map(vec![("op".into(), "near".into())]),
                ]),
            ),
        ]);
        let p: Predicate = rmpv::ext::from_value(wire).unwrap();
        let children = p.children.as_deref().unwrap();
        assert_eq!(children[0], Predicate::starts_with("name", "A"));
        assert_eq!(children[1].op, PredicateOp::Other("near".into()));
        assert_eq!(p.depth(), 2);
        let q = Query::new()
            .filter(Predicate::eq("a", 1))
            .filter(Predicate::eq("b", 2))
            .filter(Predicate::eq("c", 3));
        let top = q.predicate.unwrap();
        assert_eq!(top.op, PredicateOp::And);
        assert_eq!(top.children.map(|c| c.len()), Some(3), "filters AND flat");
    }

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
