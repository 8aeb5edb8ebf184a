//! The query engine of TopGun for Rust, shared by the client (its queries
//! and live queries over the local store) and the server (`QUERY_SUB` and
//! `QUERY_UPDATE`): filter, sort, page and group a map's records straight
//! from a store, and keep live query results up to date write by write.
//!
//! It is pure and wasm-ready: it depends on `topgun-core` (the [`Query`]
//! type, which is the wire type of `QUERY_SUB`) and `topgun-storage` (the
//! [`Paged`](topgun_storage::Paged) scan of any store), never on a runtime, a clock,
//! threads, I/O, or the client or server crates. Callers pass the time in.
//!
//! - [`Query`] is what users write and what travels in `QUERY_SUB`
//!   (`{where?, predicate?, sort?, limit?, cursor?, groupBy?,
//!   aggregations?}`, camelCase); [`QueryExt::compile`] validates it into a
//!   [`CompiledQuery`].
//! - [`run_query`] scans a map of a store ([`Paged`](topgun_storage::Paged)) in pages
//!   and returns a [`QueryResult`]; memory stays O(limit) for limited
//!   queries. [`run_query_on_rows`] runs the same engine over records
//!   in memory, and [`query_rows`] too, its rows borrowing their values.
//! - [`LiveQuery`] is pure state that turns each write, and each TTL
//!   expiry, into [`QueryChange`]s (ENTER / UPDATE / LEAVE).
//! - `groupBy` queries answer one row per group with `__key`, `__count`
//!   and the requested `__<func>_<field>` aggregates, as TopGun's server
//!   does (see [`Query::group_by`]).
//!
//! # Semantics
//! - **Attributes** are dotted paths into the value (`address.city`; a
//!   numeric segment indexes an array: `tags.0`). The attribute `_key` is
//!   the record key (a value field named `_key` cannot be addressed).
//!   A path that does not resolve is *missing*.
//! - **Values** are compared as JSON: a MessagePack value without a JSON
//!   form (binary, non-string map keys) makes a record undecodable and an
//!   operand an error.
//! - **Equality** (`eq`, `neq`, `in`, `$nin`, `contains`): JSON equality,
//!   numbers by value (`1 == 1.0`). A missing attribute equals `null`, so
//!   `neq`/`$ne`/`$nin` match records without the attribute.
//! - **Range ops** (`gt`, `gte`, `lt`, `lte`, `between`): numbers
//!   numerically (integers and floats mixed, compared exactly), strings
//!   byte-wise (UTF-8 order, case-sensitive), booleans `false < true`.
//!   Values of different types, nulls, arrays and objects never match.
//!   `between [lo, hi]` is inclusive at both ends. `startsWith` /
//!   `endsWith` compare strings case-sensitively.
//! - **Sort** uses a total order across types: null/missing, then booleans,
//!   numbers, strings, arrays (lexicographic), objects (by sorted entries).
//!   Ascending puts null/missing first; descending reverses the value order
//!   (nulls last). The record key, ascending, breaks every tie, so results
//!   are deterministic. Without `sort`, results are in key order.
//! - **Cursors** are opaque strings naming the last row of a page (its sort
//!   values and key, bound to the query's sort); a query with that cursor
//!   returns the rows strictly after it. Pages concatenate to the full
//!   result as long as the data does not change in between.
//! - **Absent records:** tombstones and records whose TTL has passed
//!   (`timestamp.millis + ttl_ms < now`) are not seen by queries. Values
//!   that do not decode are skipped and counted
//!   ([`QueryResult::undecodable`]).
//!
//! ```
//! use serde_json::json;
//! use topgun_query::{Query, QueryExt};
//!
//! let query: Query = serde_json::from_value(json!({
//!     "where": {"age": {"$gt": 18}},
//!     "predicate": {"op": "like", "attribute": "name", "value": "a%"},
//!     "sort": [{"field": "createdAt", "direction": "desc"}],
//!     "limit": 50
//! }))
//! .expect("TopGun query shape");
//! let compiled = query.compile().expect("valid");
//! assert!(compiled.matches("u1", &json!({"age": 30, "name": "Alice"})));
//! assert!(!compiled.matches("u2", &json!({"age": 30, "name": "Bob"})));
//! ```

#![warn(missing_docs)]

mod compile;
mod error;
mod exec;
mod group;
mod live;
mod order;
mod value;

#[cfg(test)]
mod tests_exec;
#[cfg(test)]
mod tests_live;
#[cfg(test)]
mod tests_ops;

pub use compile::{CompiledQuery, QueryExt};
pub use error::QueryError;
pub use exec::{
    count_on_rows, expires_at, query_rows, run_query, run_query_on_rows, run_query_with_overflow,
    MemoryRow, QueryResult, QueryRows,
};
pub use live::{diff_results, LiveQuery, LiveUpdate, QueryChange};
pub use topgun_core::wire::{
    AggFunc, Aggregation, ChangeType, Predicate, PredicateOp, Query, Sort, SortDirection, SortKey,
};
