//! Tests of running queries over a store: visibility, decoding, order,
//! limits, paging, and top-k against a full sort.

use super::exec::Collector;
use super::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use topgun_core::Timestamp;
use topgun_storage::{MemoryStore, Store, StoreRecord};

const MAP: &str = "users";
const NOW: u64 = 10_000;

pub(super) fn record(key: &str, value: Option<Vec<u8>>, ttl_ms: Option<u64>) -> StoreRecord {
    StoreRecord {
        map_name: MAP.to_owned(),
        key: key.to_owned(),
        value,
        timestamp: Timestamp::new(1_000, 0, "node"),
        ttl_ms,
        dirty: false,
    }
}

pub(super) fn encode(value: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("encodes")
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

async fn store_with(rows: &BTreeMap<String, Value>) -> MemoryStore {
    let store = MemoryStore::new();
    let records = rows
        .iter()
        .map(|(k, v)| record(k, Some(encode(v)), None))
        .collect();
    store.apply_remote(records).await.expect("stored");
    store
}

fn compile(query: Value) -> CompiledQuery {
    serde_json::from_value::<Query>(query)
        .expect("parses")
        .compile()
        .expect("compiles")
}

fn keys(result: &QueryResult) -> Vec<&str> {
    result.results.iter().map(|(k, _)| k.as_str()).collect()
}

/// The model: filter everything, sort everything, drop rows up to the
/// cursor, truncate.
pub(super) fn reference(
    rows: &BTreeMap<String, Value>,
    query: &CompiledQuery,
) -> Vec<(String, Value)> {
    let mut all: Vec<_> = rows
        .iter()
        .filter(|(k, v)| query.matches(k, v))
        .map(|(k, v)| (query.row_key(k, v), k.clone(), v.clone()))
        .filter(|(row, _, _)| query.after_cursor(row))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.into_iter()
        .take(query.limit().unwrap_or(usize::MAX))
        .map(|(_, k, v)| (k, v))
        .collect()
}

#[tokio::test]
async fn tombstones_expired_and_undecodable_records_are_skipped() {
    let store = MemoryStore::new();
    let records = vec![
        record("a", Some(encode(&json!({"n": 1}))), None),
        record("b", None, None),
        record("c", Some(encode(&json!({"n": 3}))), Some(8_999)), // expired at 9_999
        record("d", Some(encode(&json!({"n": 4}))), Some(9_000)), // expires after NOW
        record("e", Some(vec![0xc4, 0x02, 1, 2]), None),          // binary: not JSON-like
        record("f", Some(vec![0xc1]), None),                      // never-used marker byte
        record("g", Some(encode(&json!("plain string"))), None),
    ];
    store.apply_remote(records).await.expect("stored");
    let result = run_query(&store, MAP, &compile(json!({})), NOW)
        .await
        .expect("runs");
    assert_eq!(keys(&result), ["a", "d", "g"]);
    assert_eq!(result.undecodable, 2);
    assert!(!result.has_more);
    assert_eq!(result.next_cursor, None);
}

#[tokio::test]
async fn sorted_limited_query_returns_best_rows_in_order() {
    let rows: BTreeMap<String, Value> = (0..2_000)
        .map(|i| {
            (
                format!("k{i:05}"),
                json!({"n": (i * 7919) % 1000, "even": i % 2 == 0}),
            )
        })
        .collect();
    let store = store_with(&rows).await;
    let query = compile(json!({
        "where": {"even": true},
        "sort": [{"field": "n", "direction": "desc"}],
        "limit": 5
    }));
    let result = run_query(&store, MAP, &query, NOW).await.expect("runs");
    assert_eq!(result.results, reference(&rows, &query));
    assert_eq!(result.results.len(), 5);
    assert!(result.has_more && result.next_cursor.is_some());
    let values: Vec<&Value> = result.results.iter().map(|(_, v)| &v["n"]).collect();
    assert!(values.windows(2).all(|w| w[0].as_u64() >= w[1].as_u64()));
}

async fn all_pages(store: &MemoryStore, query: Value, page: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q: Query = serde_json::from_value(query.clone()).expect("parses");
        q.limit = Some(page as u64);
        q.cursor = cursor.take();
        let result = run_query(store, MAP, &q.compile().expect("compiles"), NOW)
            .await
            .expect("runs");
        assert!(result.results.len() <= page);
        out.extend(result.results);
        pages += 1;
        assert!(pages < 10_000, "paging does not terminate");
        if !result.has_more {
            assert_eq!(result.next_cursor, None);
            return out;
        }
        cursor = Some(result.next_cursor.expect("a cursor with has_more"));
    }
}

#[tokio::test]
async fn cursor_pages_concatenate_to_the_full_result() {
    let rows: BTreeMap<String, Value> = (0..1_300)
        .map(|i| {
            let n = match i % 5 {
                0 => json!(null),
                1 => json!(i % 13),
                2 => json!((i % 13) as f64 + 0.5),
                3 => json!(format!("s{}", i % 7)),
                _ => json!(i % 2 == 0),
            };
            (format!("key-{i:04}"), json!({"n": n, "m": i % 3}))
        })
        .collect();
    let store = store_with(&rows).await;
    for query in [
        json!({}),
        json!({"where": {"m": {"$ne": 1}}}),
        json!({"sort": [{"field": "n", "direction": "asc"}]}),
        json!({"sort": [{"field": "m", "direction": "desc"}, {"field": "n", "direction": "desc"}]}),
        json!({"sort": [{"field": "_key", "direction": "desc"}]}),
    ] {
        let full = run_query(&store, MAP, &compile(query.clone()), NOW)
            .await
            .expect("runs");
        for page in [9, 100, 600] {
            let pages = all_pages(&store, query.clone(), page).await;
            assert_eq!(pages, full.results, "{query} in pages of {page}");
        }
    }
}

#[tokio::test]
async fn key_order_cursor_continues_from_the_cursor_key() {
    let rows: BTreeMap<String, Value> = (0..20).map(|i| (format!("k{i:02}"), json!(i))).collect();
    let store = store_with(&rows).await;
    let first = run_query(&store, MAP, &compile(json!({"limit": 3})), NOW)
        .await
        .expect("runs");
    assert_eq!(keys(&first), ["k00", "k01", "k02"]);
    let cursor = first.next_cursor.expect("more");
    let next = compile(json!({"limit": 3, "cursor": cursor.clone()}));
    let second = run_query(&store, MAP, &next, NOW).await.expect("runs");
    assert_eq!(keys(&second), ["k03", "k04", "k05"]);
    // A key-order cursor is refused by a sorted query.
    let sorted = json!({"sort": [{"field": "x", "direction": "asc"}], "cursor": cursor});
    let err = serde_json::from_value::<Query>(sorted)
        .expect("parses")
        .compile();
    assert!(matches!(err, Err(QueryError::InvalidCursor { .. })));
}

#[test]
fn limit_zero_and_overflow() {
    let rows: BTreeMap<String, Value> = (0..10)
        .map(|i| (format!("k{i}"), json!({"n": i})))
        .collect();
    let query = compile(json!({"sort": [{"field": "n", "direction": "desc"}], "limit": 0}));
    let mut c = Collector::new(&query, 0);
    rows.iter().for_each(|(k, v)| c.push(k, v.clone()));
    let r = c.finish();
    assert!(r.results.is_empty() && r.has_more && r.next_cursor.is_none());

    let query = compile(json!({"sort": [{"field": "n", "direction": "desc"}], "limit": 3}));
    let mut c = Collector::new(&query, 4);
    rows.iter().for_each(|(k, v)| c.push(k, v.clone()));
    let r = c.finish();
    assert_eq!(
        r.results
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        ["k9", "k8", "k7"]
    );
    assert_eq!(
        r.overflow
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        ["k6", "k5", "k4", "k3"]
    );
    assert!(r.has_more && !r.exhaustive);
}

fn arb_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5_i64..5).prop_map(Value::from),
        (-10_i64..10).prop_map(|i| Value::from(i as f64 / 2.0)),
        "[a-c]{0,2}".prop_map(Value::from),
    ]
}

/// A record value: an object with some of `a`, `b`, `n.c`.
pub(super) fn arb_value() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(arb_scalar()),
        0_i64..4,
        proptest::option::of(arb_scalar()),
    )
        .prop_map(|(a, b, c)| {
            let mut obj = serde_json::Map::new();
            if let Some(a) = a {
                obj.insert("a".into(), a);
            }
            obj.insert("b".into(), json!(b));
            if let Some(c) = c {
                obj.insert("n".into(), json!({"c": c}));
            }
            Value::Object(obj)
        })
}

fn arb_predicate() -> impl Strategy<Value = Value> {
    let field = prop_oneof![Just("a"), Just("b"), Just("n.c"), Just("_key")];
    let leaf = (field, 0_usize..6, arb_scalar()).prop_map(|(field, op, v)| {
        let op = ["eq", "neq", "gt", "lte", "isNull", "like"][op];
        let v = if op == "gt" || op == "lte" {
            if v.is_null() {
                json!(0)
            } else {
                v
            }
        } else if op == "like" {
            json!(format!("%{}%", v.as_str().unwrap_or("")))
        } else {
            v
        };
        json!({"op": op, "attribute": field, "value": v})
    });
    leaf.prop_recursive(2, 6, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..3)
                .prop_map(|c| json!({"op": "and", "children": c})),
            prop::collection::vec(inner.clone(), 1..3)
                .prop_map(|c| json!({"op": "or", "children": c})),
            inner.prop_map(|c| json!({"op": "not", "children": [c]})),
        ]
    })
}

/// A random query: maybe a predicate, 0–2 sort keys, maybe a limit.
pub(super) fn arb_query() -> impl Strategy<Value = Value> {
    let sort_key = (
        prop_oneof![Just("a"), Just("b"), Just("n.c"), Just("_key")],
        any::<bool>(),
    )
        .prop_map(|(f, desc)| json!({"field": f, "direction": if desc { "desc" } else { "asc" }}));
    (
        proptest::option::of(arb_predicate()),
        prop::collection::vec(sort_key, 0..3),
        proptest::option::of(0_usize..8),
    )
        .prop_map(|(predicate, sort, limit)| {
            let mut q = json!({"sort": sort});
            if let Some(p) = predicate {
                q["predicate"] = p;
            }
            if let Some(l) = limit {
                q["limit"] = json!(l);
            }
            q
        })
}

pub(super) fn arb_rows() -> impl Strategy<Value = BTreeMap<String, Value>> {
    prop::collection::btree_map(
        (0_u32..40).prop_map(|i| format!("k{i:02}")),
        arb_value(),
        0..30,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn top_k_equals_full_sort_then_truncate(rows in arb_rows(), query in arb_query()) {
        let compiled = compile(query.clone());
        let result = runtime().block_on(async {
            let store = store_with(&rows).await;
            run_query(&store, MAP, &compiled, NOW).await.expect("runs")
        });
        let expected = reference(&rows, &compiled);
        prop_assert_eq!(&result.results, &expected, "{}", query);
        let mut unlimited = compiled.query().clone();
        unlimited.limit = None;
        let total = reference(&rows, &unlimited.compile().expect("compiles")).len();
        prop_assert_eq!(result.has_more, total > expected.len());
    }

    #[test]
    fn cursor_pages_concatenate_without_duplicates(
        rows in arb_rows(),
        query in arb_query(),
        page in 1_usize..5,
    ) {
        let mut query = query;
        if let Some(q) = query.as_object_mut() {
            q.remove("limit");
        }
        let (full, pages) = runtime().block_on(async {
            let store = store_with(&rows).await;
            let full = run_query(&store, MAP, &compile(query.clone()), NOW).await.expect("runs");
            (full.results, all_pages(&store, query.clone(), page).await)
        });
        prop_assert_eq!(pages, full, "{}", query);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Rows in memory answer every query (limits and cursors included)
    /// as the store does.
    #[test]
    fn rows_in_memory_answer_as_the_store(
        rows in arb_rows(),
        query in arb_query(),
        cursor_after in 0_usize..3,
    ) {
        let first = compile(query.clone());
        let store_result = runtime().block_on(async {
            let store = store_with(&rows).await;
            run_query(&store, MAP, &first, NOW).await.expect("runs")
        });
        let memory = |compiled: &CompiledQuery| {
            run_query_on_rows(
                rows.iter().map(|(key, value)| MemoryRow { key, value: Some(value), expires: None }),
                compiled,
                NOW,
            )
        };
        let result = memory(&first);
        prop_assert_eq!(&result.results, &store_result.results, "{}", query);
        let counted = count_on_rows(
            rows.iter().map(|(key, value)| MemoryRow { key, value: Some(value), expires: None }),
            &first,
            NOW,
        );
        prop_assert_eq!(counted, store_result.results.len() as u64);
        prop_assert_eq!(result.has_more, store_result.has_more);
        prop_assert_eq!(&result.next_cursor, &store_result.next_cursor);
        // The same page with the values borrowed from the rows.
        let borrowed = query_rows(
            rows.iter().map(|(key, value)| MemoryRow { key, value: Some(value), expires: None }),
            &first,
            NOW,
        );
        prop_assert!(borrowed.results.iter().all(|(_, v)| matches!(v, Cow::Borrowed(_))));
        prop_assert_eq!(borrowed.clone(), store_result.clone().into_rows());
        // The next page, from the cursor, as well.
        if let (Some(cursor), true) = (&store_result.next_cursor, cursor_after > 0) {
            let mut next = query.clone();
            next["cursor"] = Value::from(cursor.clone());
            let next = compile(next);
            let from_store = runtime().block_on(async {
                let store = store_with(&rows).await;
                run_query(&store, MAP, &next, NOW).await.expect("runs")
            });
            prop_assert_eq!(memory(&next).results, from_store.results);
        }
    }
}

#[test]
fn rows_in_memory_skip_expired_and_undecodable_rows() {
    let query = compile(json!({}));
    let value = json!({"a": 1});
    let rows = [
        MemoryRow {
            key: "a",
            value: Some(&value),
            expires: Some(NOW),
        },
        MemoryRow {
            key: "b",
            value: None,
            expires: None,
        },
        MemoryRow {
            key: "c",
            value: Some(&value),
            expires: Some(NOW + 1),
        },
    ];
    let result = run_query_on_rows(rows, &query, NOW);
    assert_eq!(keys(&result), ["c"]);
    assert_eq!(result.undecodable, 1);
}

#[test]
fn group_rows_are_made_and_member_rows_borrowed() {
    let values = [json!({"c": "x", "n": 1}), json!({"c": "x", "n": 2})];
    let rows = || {
        ["a", "b"]
            .into_iter()
            .zip(&values)
            .map(|(key, value)| MemoryRow {
                key,
                value: Some(value),
                expires: None,
            })
    };
    let grouped = query_rows(rows(), &compile(json!({"groupBy": ["c"]})), NOW);
    assert_eq!(grouped.results.len(), 1);
    assert!(matches!(grouped.results[0].1, Cow::Owned(_)));
    let plain = query_rows(rows(), &compile(json!({})), NOW);
    assert_eq!(plain.results.len(), 2);
    assert!(matches!(plain.results[1].1, Cow::Borrowed(v) if std::ptr::eq(v, &values[1])));
}
