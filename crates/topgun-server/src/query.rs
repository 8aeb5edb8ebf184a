//! Live queries on the server: a `QUERY_SUB` compiled and run by the
//! shared engine (`topgun-query`, the same code the client runs), kept up
//! to date by the same [`LiveQuery`] state, and turned into `QUERY_RESP` /
//! `QUERY_UPDATE` frames.
//!
//! What a query answers is TopGun's: `where` and `predicate` (every
//! operator), `sort` in both directions, `limit` (capped by
//! [`crate::Limits::max_query_results`]), `cursor` (`nextCursor` /
//! `hasMore` / `cursorStatus`), `fields` projection (of `QUERY_RESP`
//! results and of `QUERY_UPDATE` values), and `groupBy` with
//! `aggregations` (one row per group, keyed by its `__key`). A query the
//! engine cannot compile is answered with `ERROR 400`; a cursor that does
//! not belong to the query is ignored (`cursorStatus: "invalid"`) and the
//! results start from the first page. A `QUERY_RESP` carries at most
//! [`crate::Limits::max_query_results`] rows (then `hasMore: true` and no
//! `nextCursor`, as TopGun clamps it); the live query itself keeps the
//! query's own limit, so updates are not clamped.

use rmpv::Value;
use std::collections::HashMap;
use topgun_core::wire::{ChangeType, CursorStatus, QueryResp, QueryResult, QuerySub, QueryUpdate};
use topgun_query::{
    expires_at, CompiledQuery, LiveQuery, LiveUpdate, QueryChange, QueryError, QueryResult as Rows,
};
use topgun_storage::Paged;

/// Rows a live query keeps after its `limit` so that most removals refill
/// the window without a rescan.
pub(crate) const OVERFLOW: usize = 32;

/// A `QUERY_SUB` the engine accepted, ready to run.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The client's query id.
    pub(crate) query_id: String,
    /// The map queried.
    pub(crate) map_name: String,
    /// The compiled query.
    pub(crate) compiled: CompiledQuery,
    /// Most rows in the `QUERY_RESP`.
    cap: usize,
    /// What became of the cursor the query was sent with.
    pub(crate) cursor_status: CursorStatus,
    /// Fields to project, if the client asked for some.
    pub(crate) fields: Option<Vec<String>>,
}

impl Prepared {
    /// Compiles `sub`; its `QUERY_RESP` will carry at most `cap` rows.
    ///
    /// # Errors
    /// The engine's [`QueryError`] for a query it cannot run (an unknown
    /// operator, an operand of the wrong type, a bad regex, an invalid
    /// `groupBy`); a bad cursor is not an error (see the module docs).
    pub(crate) fn new(sub: &QuerySub, cap: usize) -> Result<Self, QueryError> {
        let query = &sub.query;
        let (compiled, cursor_status) = match CompiledQuery::new(query) {
            Ok(compiled) if query.cursor.is_some() => (compiled, CursorStatus::Valid),
            Ok(compiled) => (compiled, CursorStatus::NoCursor),
            Err(QueryError::InvalidCursor { .. }) => {
                (CompiledQuery::without_cursor(query)?, CursorStatus::Invalid)
            }
            Err(error) => return Err(error),
        };
        Ok(Self {
            query_id: sub.query_id.clone(),
            map_name: sub.map_name.clone(),
            compiled,
            cap,
            cursor_status,
            fields: sub.fields.clone(),
        })
    }

    /// Runs the query over `store` at `now_millis`; returns its
    /// `QUERY_RESP` and the live state that follows it from here on.
    ///
    /// # Errors
    /// [`QueryError::Storage`] if the store fails while scanning.
    pub(crate) async fn run<S: Paged + ?Sized>(
        self,
        store: &S,
        now_millis: u64,
    ) -> Result<(QueryResp, Subscription), QueryError> {
        let rows = scan(store, &self.map_name, &self.compiled, now_millis).await?;
        let clamped = rows.results.len() > self.cap;
        let resp = QueryResp {
            query_id: self.query_id.clone(),
            results: rows
                .results
                .iter()
                .take(self.cap)
                .map(|(key, value)| QueryResult {
                    key: key.clone(),
                    value: project(self.fields.as_deref(), to_wire(value)),
                })
                .collect(),
            next_cursor: rows.next_cursor.clone().filter(|_| !clamped),
            has_more: Some(rows.has_more || clamped),
            cursor_status: Some(self.cursor_status),
        };
        let sub = Subscription {
            query_id: self.query_id,
            live: LiveQuery::new(self.compiled, rows),
            fields: self.fields,
        };
        Ok((resp, sub))
    }
}

/// Runs `query` over `map` keeping the rows a live query needs.
///
/// # Errors
/// [`QueryError::Storage`] if the store fails.
pub(crate) async fn scan<S: Paged + ?Sized>(
    store: &S,
    map: &str,
    query: &CompiledQuery,
    now_millis: u64,
) -> Result<Rows, QueryError> {
    topgun_query::run_query_with_overflow(store, map, query, now_millis, OVERFLOW).await
}

/// One live query of one connection.
#[derive(Debug)]
pub(crate) struct Subscription {
    query_id: String,
    live: LiveQuery,
    fields: Option<Vec<String>>,
}

impl Subscription {
    /// The query, to run it again for a refill.
    pub(crate) fn query(&self) -> &CompiledQuery {
        self.live.query()
    }

    /// Applies a committed write: the key's new value (`None` for a
    /// tombstone) and its TTL. Returns the `QUERY_UPDATE`s to send and
    /// whether the query must be run again ([`Subscription::refill`]).
    pub(crate) fn apply(&mut self, key: &str, write: &Write) -> (Vec<QueryUpdate>, bool) {
        let update = self
            .live
            .apply_expiring(key, write.value.as_ref(), write.expires_at);
        self.updates(update)
    }

    /// When the earliest row held expires by TTL.
    pub(crate) fn next_expiry(&self) -> Option<u64> {
        self.live.next_expiry()
    }

    /// Drops the rows expired at `now_millis`: LEAVEs (and what enters in
    /// their place).
    pub(crate) fn expire(&mut self, now_millis: u64) -> (Vec<QueryUpdate>, bool) {
        let update = self.live.expire(now_millis);
        self.updates(update)
    }

    /// Replaces the state with a fresh run and returns the differences.
    pub(crate) fn refill(&mut self, fresh: Rows) -> Vec<QueryUpdate> {
        let changes = self.live.reset(fresh);
        changes.into_iter().map(|c| self.update(c)).collect()
    }

    fn updates(&self, update: LiveUpdate) -> (Vec<QueryUpdate>, bool) {
        let needs_refill = update.needs_refill;
        let updates = update.changes.into_iter().map(|c| self.update(c)).collect();
        (updates, needs_refill)
    }

    fn update(&self, change: QueryChange) -> QueryUpdate {
        let value = match (&change.change_type, change.value) {
            (ChangeType::Leave, _) | (_, None) => Value::Nil,
            (_, Some(value)) => project(self.fields.as_deref(), to_wire(&value)),
        };
        QueryUpdate {
            query_id: self.query_id.clone(),
            key: change.key,
            value,
            change_type: change.change_type,
        }
    }
}

/// A committed write as the query engine sees it.
#[derive(Debug, Clone)]
pub(crate) struct Write {
    /// The new value as JSON; `None` for a tombstone or a value without a
    /// JSON form (queries do not see those).
    pub(crate) value: Option<serde_json::Value>,
    /// When it expires by TTL.
    pub(crate) expires_at: Option<u64>,
}

impl Write {
    /// The engine's view of `record`.
    pub(crate) fn of(record: &topgun_core::wire::WireRecord) -> Self {
        Self {
            value: record
                .value
                .as_ref()
                .and_then(|v| rmpv::ext::from_value(v.clone()).ok()),
            expires_at: expires_at(&record.timestamp, record.ttl_ms),
        }
    }
}

/// A JSON result value as MessagePack.
fn to_wire(value: &serde_json::Value) -> Value {
    rmpv::ext::to_value(value).unwrap_or(Value::Nil)
}

/// TopGun's projection: a map keeps only the listed top-level fields; any
/// other value is sent whole.
pub(crate) fn project(fields: Option<&[String]>, value: Value) -> Value {
    match (fields, value) {
        (Some(fields), Value::Map(entries)) => Value::Map(
            entries
                .into_iter()
                .filter(|(k, _)| k.as_str().is_some_and(|k| fields.iter().any(|f| f == k)))
                .collect(),
        ),
        (_, value) => value,
    }
}

/// Live queries of one connection on one map, by query id.
pub(crate) type Subscriptions = HashMap<String, Subscription>;

#[cfg(test)]
mod tests {
    use super::*;
    use topgun_core::wire::{Predicate, Query};

    fn sub(query: Query) -> QuerySub {
        QuerySub {
            query_id: "q".into(),
            map_name: "m".into(),
            query,
            fields: None,
        }
    }

    #[test]
    fn cursors_are_classified_and_bad_queries_refused() {
        let p = Prepared::new(&sub(Query::new()), 10).unwrap();
        assert_eq!(p.compiled.limit(), None);
        assert_eq!(p.cursor_status, CursorStatus::NoCursor);
        let p = Prepared::new(&sub(Query::new().after("garbage")), 10).unwrap();
        assert_eq!(p.cursor_status, CursorStatus::Invalid);
        let bad = Query::new().filter(Predicate::regex("name", "(unclosed"));
        assert!(Prepared::new(&sub(bad), 10).is_err());
    }

    #[test]
    fn projection_keeps_listed_fields_of_maps_only() {
        let doc = Value::Map(vec![("a".into(), 1.into()), ("b".into(), 2.into())]);
        let fields = ["a".to_owned()];
        assert_eq!(
            project(Some(&fields), doc.clone()),
            Value::Map(vec![("a".into(), 1.into())])
        );
        assert_eq!(project(None, doc.clone()), doc);
        assert_eq!(project(Some(&fields), Value::from(3)), Value::from(3));
    }
}
