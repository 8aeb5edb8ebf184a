//! Tests of live queries: incremental changes against re-running the query.

use super::exec::Collector;
use super::tests_exec::{arb_query, arb_rows, arb_value, encode, record, reference, runtime};
use super::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use topgun_storage::{MemoryStore, Store};

fn compile(query: Value) -> CompiledQuery {
    serde_json::from_value::<Query>(query)
        .expect("parses")
        .compile()
        .expect("compiles")
}

fn fresh(rows: &BTreeMap<String, Value>, query: &CompiledQuery, overflow: usize) -> QueryResult {
    let mut collector = Collector::new(query, overflow);
    for (key, value) in rows {
        collector.push(key, value.clone());
    }
    collector.finish()
}

fn change(key: &str, value: Option<Value>, change_type: ChangeType) -> QueryChange {
    QueryChange {
        key: key.to_owned(),
        value,
        change_type,
    }
}

#[test]
fn unsorted_unlimited_follows_the_predicate() {
    let query = compile(json!({"where": {"active": true}}));
    let rows = BTreeMap::from([("a".to_owned(), json!({"active": true}))]);
    let mut live = LiveQuery::new(query.clone(), fresh(&rows, &query, 0));

    let up = live.apply("b", Some(&json!({"active": true, "v": 1})));
    assert_eq!(
        up.changes,
        [change(
            "b",
            Some(json!({"active": true, "v": 1})),
            ChangeType::Enter
        )]
    );
    let up = live.apply("b", Some(&json!({"active": true, "v": 2})));
    assert_eq!(
        up.changes,
        [change(
            "b",
            Some(json!({"active": true, "v": 2})),
            ChangeType::Update
        )]
    );
    assert!(
        live.apply("b", Some(&json!({"active": true, "v": 2})))
            .changes
            .is_empty(),
        "same value"
    );
    assert!(live
        .apply("c", Some(&json!({"active": false})))
        .changes
        .is_empty());
    assert_eq!(
        live.apply("b", Some(&json!({"active": false}))).changes,
        [change("b", None, ChangeType::Leave)]
    );
    assert_eq!(
        live.apply("a", None).changes,
        [change("a", None, ChangeType::Leave)]
    );
    assert!(live.apply("zz", None).changes.is_empty());
    assert!(live.is_empty() && !live.has_more() && !live.needs_refill());
}

#[test]
fn sorted_limited_window_displaces_and_refills_from_the_buffer() {
    let query = compile(json!({"sort": [{"field": "n", "direction": "desc"}], "limit": 2}));
    let rows: BTreeMap<String, Value> = (1..=5)
        .map(|i| (format!("k{i}"), json!({"n": i})))
        .collect();
    // Window k5, k4; buffer k3 (overflow 1); k2, k1 beyond the frontier.
    let mut live = LiveQuery::new(query.clone(), fresh(&rows, &query, 1));
    assert_eq!(
        live.results().map(|(k, _)| k).collect::<Vec<_>>(),
        ["k5", "k4"]
    );

    // A new best row enters; the displaced last row leaves.
    let up = live.apply("k9", Some(&json!({"n": 9})));
    assert_eq!(
        up.changes,
        [
            change("k4", None, ChangeType::Leave),
            change("k9", Some(json!({"n": 9})), ChangeType::Enter)
        ]
    );
    // A row below the window changes nothing visible.
    assert!(live.apply("k0", Some(&json!({"n": 0}))).changes.is_empty());
    // A window row drops out; the first buffered row takes its place.
    let up = live.apply("k9", Some(&json!({"n": -1})));
    assert_eq!(
        up.changes,
        [
            change("k9", None, ChangeType::Leave),
            change("k4", Some(json!({"n": 4})), ChangeType::Enter)
        ]
    );
    assert!(!up.needs_refill);
    // A window row moves within the window: an update.
    let up = live.apply("k4", Some(&json!({"n": 6})));
    assert_eq!(
        up.changes,
        [change("k4", Some(json!({"n": 6})), ChangeType::Update)]
    );
    // k3 was dropped from the buffer when k9 pushed k4 into it (overflow 1),
    // so nothing is known below the window: removing a window row cannot be
    // repaired locally and the caller must refill.
    let up = live.apply("k5", None);
    assert_eq!(up.changes, [change("k5", None, ChangeType::Leave)]);
    assert!(up.needs_refill && live.needs_refill());

    let mut now = rows.clone();
    now.insert("k0".into(), json!({"n": 0}));
    now.insert("k9".into(), json!({"n": -1}));
    now.insert("k4".into(), json!({"n": 6}));
    now.remove("k5");
    assert_eq!(live.to_results(), [("k4".to_owned(), json!({"n": 6}))]);
    let changes = live.reset(fresh(&now, &query, 1));
    assert_eq!(
        changes,
        [change("k3", Some(json!({"n": 3})), ChangeType::Enter)]
    );
    assert_eq!(live.to_results(), reference(&now, &query));
    assert!(!live.needs_refill() && live.has_more());
}

#[test]
fn diff_results_orders_leaves_updates_enters() {
    let old = vec![
        ("a".into(), json!(1)),
        ("b".into(), json!(2)),
        ("c".into(), json!(3)),
    ];
    let new = vec![
        ("d".into(), json!(4)),
        ("b".into(), json!(20)),
        ("c".into(), json!(3)),
    ];
    assert_eq!(
        diff_results(&old, &new),
        [
            change("a", None, ChangeType::Leave),
            change("b", Some(json!(20)), ChangeType::Update),
            change("d", Some(json!(4)), ChangeType::Enter),
        ]
    );
}

#[test]
fn query_change_has_the_query_update_shape() {
    let c = change(
        "user-3",
        Some(json!({"name": "Charlie"})),
        ChangeType::Enter,
    );
    assert_eq!(
        serde_json::to_value(&c).expect("serializes"),
        json!({"key": "user-3", "value": {"name": "Charlie"}, "changeType": "ENTER"})
    );
}

#[tokio::test]
async fn live_query_starts_from_a_store_run() {
    let store = MemoryStore::new();
    let records = (0..10)
        .map(|i| record(&format!("k{i}"), Some(encode(&json!({"n": i}))), None))
        .collect();
    store.apply_remote(records).await.expect("stored");
    let query = compile(json!({"sort": [{"field": "n", "direction": "asc"}], "limit": 3}));
    let initial = run_query_with_overflow(&store, "users", &query, 0, 2)
        .await
        .expect("runs");
    assert_eq!(initial.overflow.len(), 2);
    let mut live = LiveQuery::new(query, initial);
    assert!(live.has_more());
    let up = live.apply("k0", None);
    assert_eq!(up.changes.len(), 2);
    assert!(!up.needs_refill);
}

/// A write: key index and new value (`None` = remove).
fn arb_writes() -> impl Strategy<Value = Vec<(u32, Option<Value>)>> {
    prop::collection::vec((0_u32..40, proptest::option::of(arb_value())), 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn live_query_equals_rerun_after_any_writes(
        mut rows in arb_rows(),
        query in arb_query(),
        overflow in 0_usize..4,
        writes in arb_writes(),
    ) {
        let query = compile(query);
        let mut live = LiveQuery::new(query.clone(), fresh(&rows, &query, overflow));
        // What a subscriber sees, built only from the emitted changes.
        let mut mirror: BTreeMap<String, Value> = live.to_results().into_iter().collect();
        let apply_changes = |mirror: &mut BTreeMap<String, Value>, changes: Vec<QueryChange>| {
            for c in changes {
                match c.change_type {
                    ChangeType::Enter => prop_assert!(mirror.insert(c.key, c.value.expect("value")).is_none()),
                    ChangeType::Update => prop_assert!(mirror.insert(c.key, c.value.expect("value")).is_some()),
                    ChangeType::Leave => prop_assert!(mirror.remove(&c.key).is_some()),
                    ChangeType::Other(other) => prop_assert!(false, "unexpected change type {other}"),
                }
            }
            Ok(())
        };
        for (i, value) in writes {
            let key = format!("k{i:02}");
            match &value {
                Some(v) => rows.insert(key.clone(), v.clone()),
                None => rows.remove(&key),
            };
            let update = live.apply(&key, value.as_ref());
            apply_changes(&mut mirror, update.changes)?;
            prop_assert!(live.len() <= query.limit().unwrap_or(usize::MAX));
            if update.needs_refill {
                let changes = live.reset(fresh(&rows, &query, overflow));
                apply_changes(&mut mirror, changes)?;
            }
            let expected = reference(&rows, &query);
            prop_assert_eq!(live.to_results(), expected.clone());
            let expected: BTreeMap<String, Value> = expected.into_iter().collect();
            prop_assert_eq!(&mirror, &expected);
            let rerun = fresh(&rows, &query, 0);
            prop_assert!(!rerun.has_more || live.has_more());
        }
    }
}

#[test]
fn runtime_helper_is_usable() {
    // Keeps the shared helper exercised from this module too.
    let n = runtime().block_on(async { 1 + 1 });
    assert_eq!(n, 2);
}

#[tokio::test]
async fn ttl_expiry_without_a_write_is_a_leave_and_refills_the_window() {
    // Three rows, limit 2, sorted by n; "a" expires at 1_101 (written at
    // 1_000 with a TTL of 100 ms), the others never.
    let store = MemoryStore::new();
    let mut expiring = record("a", Some(encode(&json!({"n": 1}))), Some(100));
    expiring.timestamp = topgun_core::Timestamp::new(1_000, 0, "node");
    store
        .apply_remote(vec![
            expiring,
            record("b", Some(encode(&json!({"n": 2}))), None),
            record("c", Some(encode(&json!({"n": 3}))), None),
        ])
        .await
        .expect("stored");
    let query = compile(json!({"sort": [{"field": "n", "direction": "asc"}], "limit": 2}));
    let initial = run_query_with_overflow(&store, "users", &query, 1_050, 4)
        .await
        .expect("runs");
    let mut live = LiveQuery::new(query, initial);
    assert_eq!(live.next_expiry(), Some(1_101));
    assert!(live.expire(1_100).changes.is_empty(), "not expired yet");
    let update = live.expire(1_101);
    assert_eq!(
        update.changes,
        vec![
            change("a", None, ChangeType::Leave),
            change("c", Some(json!({"n": 3})), ChangeType::Enter),
        ]
    );
    assert_eq!(live.next_expiry(), None);
    let keys: Vec<String> = live.to_results().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["b", "c"]);
}

#[test]
fn a_write_with_a_ttl_schedules_its_leave_and_a_rewrite_cancels_it() {
    let query = compile(json!({}));
    let mut live = LiveQuery::new(query.clone(), fresh(&BTreeMap::new(), &query, 0));
    let up = live.apply_expiring("k", Some(&json!(1)), Some(500));
    assert_eq!(
        up.changes,
        vec![change("k", Some(json!(1)), ChangeType::Enter)]
    );
    assert_eq!(live.next_expiry(), Some(500));
    live.apply("k", Some(&json!(2)));
    assert_eq!(
        live.next_expiry(),
        None,
        "a write without a TTL replaces it"
    );
    assert!(live.expire(10_000).changes.is_empty());
    live.apply_expiring("k", Some(&json!(3)), Some(700));
    assert_eq!(
        live.expire(700).changes,
        vec![change("k", None, ChangeType::Leave)]
    );
}

#[test]
fn group_by_live_updates_report_group_rows() {
    let query = compile(json!({
        "where": {"kind": "order"},
        "groupBy": ["category"],
        "aggregations": [{"func": "count"}, {"func": "sum", "field": "price"}]
    }));
    let rows = BTreeMap::from([
        (
            "o1".to_owned(),
            json!({"kind": "order", "category": "a", "price": 10}),
        ),
        (
            "o2".to_owned(),
            json!({"kind": "order", "category": "a", "price": 25}),
        ),
        (
            "x".to_owned(),
            json!({"kind": "other", "category": "a", "price": 99}),
        ),
    ]);
    let initial = fresh(&rows, &query, 0);
    assert_eq!(
        initial.results,
        vec![(
            "S1:a".to_owned(),
            json!({"__key": "S1:a", "__count": 2, "__sum_price": 35, "category": "a"})
        )]
    );
    let mut live = LiveQuery::new(query, initial);
    // A new group enters.
    let up = live.apply(
        "o3",
        Some(&json!({"kind": "order", "category": "b", "price": 50})),
    );
    let b = json!({"__key": "S1:b", "__count": 1, "__sum_price": 50, "category": "b"});
    assert_eq!(up.changes, vec![change("S1:b", Some(b), ChangeType::Enter)]);
    // A member leaves group a: its row updates.
    let up = live.apply("o1", None);
    let a = json!({"__key": "S1:a", "__count": 1, "__sum_price": 25, "category": "a"});
    assert_eq!(
        up.changes,
        vec![change("S1:a", Some(a), ChangeType::Update)]
    );
    // A non-matching write changes nothing; the last member leaving is a LEAVE.
    assert!(live
        .apply("x", Some(&json!({"kind": "other"})))
        .changes
        .is_empty());
    let up = live.apply("o3", Some(&json!({"kind": "other"})));
    assert_eq!(up.changes, vec![change("S1:b", None, ChangeType::Leave)]);
}

#[test]
fn group_rows_are_sorted_limited_and_paged_like_rows() {
    let query = compile(json!({
        "groupBy": ["c"],
        "sort": [{"field": "__count", "direction": "desc"}],
        "limit": 1
    }));
    let rows = BTreeMap::from([
        ("k1".to_owned(), json!({"c": "a"})),
        ("k2".to_owned(), json!({"c": "b"})),
        ("k3".to_owned(), json!({"c": "b"})),
    ]);
    let first = fresh(&rows, &query, 0);
    assert_eq!(first.results.len(), 1);
    assert_eq!(first.results[0].0, "S1:b");
    assert!(first.has_more);
    let cursor = first.next_cursor.clone().expect("a next page");
    let next = compile(json!({
        "groupBy": ["c"],
        "sort": [{"field": "__count", "direction": "desc"}],
        "limit": 1,
        "cursor": cursor
    }));
    let second = fresh(&rows, &next, 0);
    assert_eq!(second.results[0].0, "S1:a");
    assert!(!second.has_more);

    // Live: "a" ties "b" on count and wins on key; the one-row window
    // swaps groups, then "a" only updates.
    let mut live = LiveQuery::new(query, first);
    let kinds = |up: LiveUpdate| -> Vec<(String, ChangeType)> {
        up.changes
            .into_iter()
            .map(|c| (c.key, c.change_type))
            .collect()
    };
    let up = live.apply("k4", Some(&json!({"c": "a"})));
    assert_eq!(
        kinds(up),
        [
            ("S1:b".to_owned(), ChangeType::Leave),
            ("S1:a".to_owned(), ChangeType::Enter)
        ]
    );
    let up = live.apply("k5", Some(&json!({"c": "a"})));
    assert_eq!(kinds(up), [("S1:a".to_owned(), ChangeType::Update)]);
}
