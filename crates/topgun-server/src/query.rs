//! Live queries: which entries a `QUERY_SUB` selects.
//!
//! This first version is not a query engine. It supports:
//! - an empty query: every live entry of the map;
//! - `where` with **equality** on top-level fields of map values
//!   (`{"status": "done"}` or `{"status": {"$eq": "done"}}`), all of which
//!   must hold; numbers compare by value (`1 == 1.0`).
//!
//! A `predicate` or any other `where` operator is refused with
//! `ERROR 501` (and the query is not subscribed) rather than answered
//! with wrong results. `sort` is not applied (results come in key order),
//! `fields` projection is not applied, and `cursor` is ignored; `limit` is
//! honoured up to [`crate::Limits::max_query_results`].

use crate::records;
use rmpv::Value;
use topgun_core::wire::{Query, QueryResult};
use topgun_storage::{StorageError, Store};

/// Records read per page when answering a query.
const SCAN_PAGE: usize = 256;

/// The conditions of a supported query.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    equals: Vec<(String, Value)>,
}

impl Filter {
    /// The filter of `query`, or what in it is not supported.
    pub(crate) fn from_query(query: &Query) -> Result<Self, &'static str> {
        if query.predicate.is_some() {
            return Err("query predicates are not supported by this server");
        }
        let mut equals = Vec::new();
        match &query.where_ {
            None | Some(Value::Nil) => {}
            Some(Value::Map(entries)) => {
                for (field, condition) in entries {
                    let field = field
                        .as_str()
                        .ok_or("`where` field names must be strings")?;
                    let expected = match condition {
                        Value::Map(ops) => match ops.as_slice() {
                            [(op, v)] if op.as_str() == Some("$eq") => v.clone(),
                            _ => return Err("only equality conditions are supported in `where`"),
                        },
                        v => v.clone(),
                    };
                    equals.push((field.to_owned(), expected));
                }
            }
            Some(_) => return Err("`where` must be a map of field conditions"),
        }
        Ok(Self { equals })
    }

    /// Whether a live value matches every condition.
    pub(crate) fn matches(&self, value: &Value) -> bool {
        if self.equals.is_empty() {
            return true;
        }
        let Value::Map(entries) = value else {
            return false;
        };
        self.equals.iter().all(|(field, expected)| {
            entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(field))
                .is_some_and(|(_, v)| same_value(v, expected))
        })
    }
}

/// Equality as JavaScript sees it for numbers: an integer equals a float
/// of the same value.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (
            Value::Integer(_) | Value::F32(_) | Value::F64(_),
            Value::Integer(_) | Value::F32(_) | Value::F64(_),
        ) => match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
            (Some(x), Some(y), _, _) => x == y,
            (_, _, Some(x), Some(y)) => x == y,
            _ => a.as_f64() == b.as_f64(),
        },
        _ => a == b,
    }
}

/// The first `limit` live, unexpired entries of `map` that match, in key
/// order, and whether more matched.
pub(crate) async fn initial_results(
    store: &dyn Store,
    map: &str,
    filter: &Filter,
    limit: usize,
    now_millis: u64,
) -> Result<(Vec<QueryResult>, bool), StorageError> {
    let mut results = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.scan(map, after.as_deref(), SCAN_PAGE).await?;
        for record in &page {
            let Some(bytes) = record.value.as_ref().filter(|_| record.is_live(now_millis)) else {
                continue;
            };
            let value = match records::decode_value(bytes) {
                Ok(value) => value,
                Err(error) => {
                    tracing::warn!(map, key = %record.key, %error, "skipping an undecodable stored value");
                    continue;
                }
            };
            if filter.matches(&value) {
                if results.len() == limit {
                    return Ok((results, true));
                }
                results.push(QueryResult {
                    key: record.key.clone(),
                    value,
                });
            }
        }
        match page.last() {
            Some(last) if page.len() == SCAN_PAGE => after = Some(last.key.clone()),
            _ => return Ok((results, false)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(where_: Option<Value>) -> Query {
        Query {
            where_,
            ..Query::default()
        }
    }

    #[test]
    fn equality_filters() {
        let doc = Value::Map(vec![
            ("status".into(), "done".into()),
            ("n".into(), 3.into()),
        ]);
        assert!(Filter::from_query(&query(None)).unwrap().matches(&doc));
        assert!(Filter::from_query(&query(None))
            .unwrap()
            .matches(&Value::from(1)));
        let f = Filter::from_query(&query(Some(Value::Map(vec![
            ("status".into(), "done".into()),
            (
                "n".into(),
                Value::Map(vec![("$eq".into(), Value::F64(3.0))]),
            ),
        ]))))
        .unwrap();
        assert!(f.matches(&doc));
        assert!(!f.matches(&Value::Map(vec![("status".into(), "open".into())])));
        assert!(!f.matches(&Value::from("done")));
        assert!(Filter::from_query(&query(Some(Value::Map(vec![(
            "n".into(),
            Value::Map(vec![("$gt".into(), 1.into())])
        )]))))
        .is_err());
    }
}
