//! Tests of query parsing, validation and every operator.

use super::*;
use serde_json::{json, Value};

fn compile(query: Value) -> CompiledQuery {
    serde_json::from_value::<Query>(query.clone())
        .expect("query parses")
        .compile()
        .unwrap_or_else(|e| panic!("{query} should compile: {e}"))
}

fn pred(op: &str, attribute: &str, value: Value) -> CompiledQuery {
    compile(json!({"predicate": {"op": op, "attribute": attribute, "value": value}}))
}

fn compile_err(query: Value) -> QueryError {
    match serde_json::from_value::<Query>(query.clone())
        .expect("query parses")
        .compile()
    {
        Ok(_) => panic!("{query} should not compile"),
        Err(e) => e,
    }
}

fn doc() -> Value {
    json!({
        "name": "Alice",
        "age": 30,
        "score": 7.5,
        "active": true,
        "nickname": null,
        "address": {"city": "Oslo", "zip": "0150"},
        "tags": ["admin", "dev", 3],
    })
}

fn hits(q: &CompiledQuery) -> bool {
    q.matches("user-1", &doc())
}

#[test]
fn fixture_query_sub_parses_and_round_trips() {
    let fixture: Value = serde_json::from_str(include_str!(
        "../../topgun-core/tests/fixtures/QUERY_SUB.json"
    ))
    .expect("fixture is JSON");
    let raw = fixture["payload"]["query"].clone();
    let query: Query = serde_json::from_value(raw.clone()).expect("fixture query parses");
    assert_eq!(query.limit, Some(50));
    assert_eq!(query.sort_keys()[0].direction, SortDirection::Desc);
    assert_eq!(serde_json::to_value(&query).expect("serializes"), raw);
    let compiled = query.compile().expect("fixture query compiles");
    assert!(compiled.matches("u", &json!({"age": 19})));
    assert!(!compiled.matches("u", &json!({"age": 18})));
}

#[test]
fn builder_produces_the_wire_shape() {
    let query = Query::new()
        .where_eq("status", "active")
        .filter(Predicate::gt("age", 18))
        .filter(Predicate::is_not_null("email"))
        .sort_by("age", SortDirection::Desc)
        .limit(50);
    let wire = serde_json::to_value(&query).expect("serializes");
    assert_eq!(
        wire,
        json!({
            "where": {"status": "active"},
            "predicate": {"op": "and", "children": [
                {"op": "gt", "attribute": "age", "value": 18},
                {"op": "isNotNull", "attribute": "email"},
            ]},
            "sort": [{"field": "age", "direction": "desc"}],
            "limit": 50,
        })
    );
    let back: Query = serde_json::from_value(wire).expect("parses back");
    assert_eq!(back, query);
    let rmp = rmp_serde::to_vec_named(&query).expect("msgpack");
    assert_eq!(
        rmp_serde::from_slice::<Query>(&rmp).expect("msgpack back"),
        query
    );
}

#[test]
fn limit_accepts_whole_floats_only() {
    let limit = |v: Value| serde_json::from_value::<Query>(json!({"limit": v})).map(|q| q.limit);
    assert_eq!(limit(json!(5)).expect("int"), Some(5));
    assert_eq!(limit(json!(5.0)).expect("whole float"), Some(5));
    assert_eq!(limit(json!(null)).expect("null"), None);
    assert!(limit(json!(2.5)).is_err());
    assert!(limit(json!(-1)).is_err());
    assert!(limit(json!("5")).is_err());
    let rmp = rmp_serde::to_vec_named(&json!({"limit": 7.0})).expect("msgpack");
    assert_eq!(
        rmp_serde::from_slice::<Query>(&rmp).expect("decodes").limit,
        Some(7)
    );
}

#[test]
fn eq_and_neq() {
    assert!(hits(&pred("eq", "name", json!("Alice"))));
    assert!(!hits(&pred("eq", "name", json!("alice"))));
    assert!(hits(&pred("eq", "age", json!(30.0))), "int equals float");
    assert!(hits(&pred(
        "eq",
        "address",
        json!({"zip": "0150", "city": "Oslo"})
    )));
    assert!(hits(&pred("eq", "tags", json!(["admin", "dev", 3.0]))));
    assert!(hits(&pred("neq", "age", json!(31))));
    assert!(!hits(&pred("neq", "age", json!(30))));
    assert!(hits(&pred("neq", "missing", json!(1))), "missing is not 1");
    assert!(hits(&pred("eq", "nickname", json!(null))));
    assert!(
        hits(&pred("eq", "missing", json!(null))),
        "missing equals null"
    );
    assert!(
        !hits(&pred("eq", "age", json!("30"))),
        "no string/number coercion"
    );
}

#[test]
fn range_ops_with_mixed_numbers() {
    assert!(hits(&pred("gt", "age", json!(29.5))));
    assert!(!hits(&pred("gt", "age", json!(30))));
    assert!(hits(&pred("gte", "age", json!(30.0))));
    assert!(hits(&pred("lt", "score", json!(8))));
    assert!(!hits(&pred("lt", "score", json!(7))));
    assert!(hits(&pred("lte", "score", json!(7.5))));
    assert!(hits(&pred("gt", "name", json!("Al"))), "strings byte-wise");
    assert!(
        !hits(&pred("gt", "name", json!("a"))),
        "uppercase sorts before lowercase"
    );
    assert!(hits(&pred("gt", "active", json!(false))));
}

#[test]
fn range_ops_never_match_mismatched_types_or_missing() {
    assert!(!hits(&pred("gt", "name", json!(1))));
    assert!(!hits(&pred("lt", "name", json!(1))));
    assert!(!hits(&pred("gte", "age", json!("0"))));
    assert!(!hits(&pred("lt", "missing", json!(100))));
    assert!(!hits(&pred("gt", "nickname", json!(0))));
    assert!(!hits(&pred("lt", "tags", json!(100))));
}

#[test]
fn between_is_inclusive() {
    assert!(hits(&pred("between", "age", json!([30, 40]))));
    assert!(hits(&pred("between", "age", json!([20, 30.0]))));
    assert!(!hits(&pred("between", "age", json!([31, 40]))));
    assert!(
        !hits(&pred("between", "age", json!([40, 20]))),
        "empty range"
    );
    assert!(hits(&pred("between", "name", json!(["A", "B"]))));
    assert!(!hits(&pred("between", "name", json!([0, 100]))));
    assert!(!hits(&pred("between", "missing", json!([0, 100]))));
}

#[test]
fn like_wildcards() {
    let like = |pattern: &str, value: &str| {
        pred("like", "s", json!(pattern)).matches("k", &json!({"s": value}))
    };
    assert!(like("a%", "Alice"), "case-insensitive prefix");
    assert!(like("%ice", "Alice"));
    assert!(like("%li%", "Alice"));
    assert!(like("A_ice", "Alice"));
    assert!(!like("A_ce", "Alice"), "_ is exactly one character");
    assert!(like("%", ""));
    assert!(!like("Alic", "Alice"), "anchored");
    assert!(like("a.b", "a.b"), "regex metacharacters are literal");
    assert!(!like("a.b", "axb"));
    assert!(like("(x)[y]*", "(x)[y]*"));
    assert!(like("_", "é"), "_ is one character, not one byte");
    assert!(like("line%end", "line\nend"));
    assert!(
        !pred("like", "age", json!("3%")).matches("k", &doc()),
        "numbers are not strings"
    );
}

#[test]
fn regex_matches_anywhere_unless_anchored() {
    assert!(hits(&pred("regex", "name", json!("lic"))));
    assert!(!hits(&pred("regex", "name", json!("^lic"))));
    assert!(hits(&pred("regex", "name", json!("(?i)^alice$"))));
    assert!(hits(&pred("regex", "address.zip", json!(r"^\d{4}$"))));
    assert!(!hits(&pred("regex", "age", json!("30"))), "only strings");
}

#[test]
fn in_and_nin() {
    assert!(hits(&pred("in", "age", json!([1, 30.0, "x"]))));
    assert!(!hits(&pred("in", "age", json!([]))));
    assert!(hits(&pred("in", "missing", json!([null]))));
    assert!(hits(&compile(json!({"where": {"age": {"$nin": [1, 2]}}}))));
    assert!(!hits(&compile(json!({"where": {"age": {"$nin": [30]}}}))));
    assert!(hits(&compile(
        json!({"where": {"missing": {"$nin": [30]}}})
    )));
}

#[test]
fn null_handling() {
    assert!(hits(&pred("isNull", "nickname", Value::Null)));
    assert!(hits(&pred("isNull", "missing", Value::Null)));
    assert!(hits(&pred("isNull", "address.country", Value::Null)));
    assert!(!hits(&pred("isNull", "name", Value::Null)));
    assert!(hits(&pred("isNotNull", "name", Value::Null)));
    assert!(!hits(&pred("isNotNull", "nickname", Value::Null)));
    assert!(!hits(&pred("isNotNull", "missing", Value::Null)));
    assert!(hits(&compile(
        json!({"where": {"nickname": {"$exists": true}}})
    )));
    assert!(hits(&compile(
        json!({"where": {"missing": {"$exists": false}}})
    )));
    assert!(!hits(&compile(
        json!({"where": {"nickname": {"$exists": false}}})
    )));
    assert!(hits(&compile(json!({"where": {"nickname": null}}))));
}

#[test]
fn contains_family() {
    assert!(hits(&pred("contains", "name", json!("lic"))));
    assert!(!hits(&pred("contains", "name", json!("LIC"))));
    assert!(hits(&pred("contains", "tags", json!("dev"))));
    assert!(hits(&pred("contains", "tags", json!(3.0))));
    assert!(
        !hits(&pred("contains", "tags", json!("de"))),
        "arrays match whole elements"
    );
    assert!(!hits(&pred("contains", "age", json!(3))));
    assert!(hits(&pred("containsAll", "tags", json!(["dev", "admin"]))));
    assert!(!hits(&pred("containsAll", "tags", json!(["dev", "ops"]))));
    assert!(hits(&pred("containsAll", "tags", json!([]))));
    assert!(
        !hits(&pred("containsAll", "age", json!([]))),
        "needs a string or array"
    );
    assert!(hits(&pred("containsAll", "name", json!(["Al", "ce"]))));
    assert!(hits(&pred("containsAny", "tags", json!(["ops", "dev"]))));
    assert!(!hits(&pred("containsAny", "tags", json!(["ops"]))));
    assert!(!hits(&pred("containsAny", "tags", json!([]))));
    assert!(!hits(&pred("containsAny", "missing", json!(["x"]))));
}

#[test]
fn logical_ops() {
    let q = compile(json!({"predicate": {"op": "or", "children": [
        {"op": "eq", "attribute": "name", "value": "Bob"},
        {"op": "and", "children": [
            {"op": "gte", "attribute": "age", "value": 18},
            {"op": "not", "children": [{"op": "eq", "attribute": "active", "value": false}]},
        ]},
    ]}}));
    assert!(hits(&q));
    assert!(!q.matches("k", &json!({"name": "Carol", "age": 10})));
    assert!(q.matches("k", &json!({"name": "Bob"})));
}

#[test]
fn dotted_paths_and_the_key_attribute() {
    assert!(hits(&pred("eq", "address.city", json!("Oslo"))));
    assert!(hits(&pred("eq", "tags.1", json!("dev"))));
    assert!(!hits(&pred("eq", "address.city.name", json!("Oslo"))));
    assert!(hits(&pred("eq", "_key", json!("user-1"))));
    assert!(hits(&pred("like", "_key", json!("user-%"))));
    assert!(hits(&compile(
        json!({"where": {"_key": {"$gte": "user-0", "$lt": "user-2"}}})
    )));
    assert!(hits(&compile(json!({"where": {"address.city": "Oslo"}}))));
    // A value field literally called `_key` is not what `_key` means.
    assert!(!pred("eq", "_key", json!("x")).matches("k", &json!({"_key": "x"})));
}

#[test]
fn where_operators_and_literals() {
    assert!(hits(&compile(
        json!({"where": {"age": {"$gt": 18, "$lte": 30}}})
    )));
    assert!(!hits(&compile(
        json!({"where": {"age": {"$gt": 18, "$lt": 30}}})
    )));
    assert!(hits(&compile(
        json!({"where": {"age": {"$eq": 30}, "name": {"$ne": "Bob"}}})
    )));
    assert!(hits(&compile(json!({"where": {"age": {"$in": [30]}}}))));
    assert!(hits(&compile(json!({"where": {"name": {"$like": "al%"}}}))));
    assert!(hits(&compile(
        json!({"where": {"name": {"$regex": "^Al"}}})
    )));
    assert!(hits(&compile(
        json!({"where": {"address": {"city": "Oslo", "zip": "0150"}}})
    )));
    assert!(
        !hits(&compile(json!({"where": {"address": {"city": "Oslo"}}}))),
        "literal object equality"
    );
    // where and predicate combine with AND.
    let both = json!({"where": {"age": 30}, "predicate": {"op": "eq", "attribute": "name", "value": "Bob"}});
    assert!(!hits(&compile(both)));
    assert!(hits(&compile(json!({}))), "empty query matches everything");
}

#[test]
fn validation_errors_say_what_and_where() {
    let cases = [
        (json!({"predicate": {"op": "near", "attribute": "a"}}), "unknown operator `near` at predicate"),
        (
            json!({"predicate": {"op": "and", "children": [{"op": "bogus"}]}}),
            "unknown operator `bogus` at predicate.children[0]",
        ),
        (json!({"where": {"age": {"$gt": 1, "$near": 2}}}), "unknown operator `$near` at where.age.$near"),
        (json!({"predicate": {"op": "and"}}), "`and` at predicate needs at least one child"),
        (json!({"predicate": {"op": "or", "children": []}}), "`or` at predicate needs at least one child"),
        (
            json!({"predicate": {"op": "not", "children": [{"op": "isNull", "attribute": "a"}, {"op": "isNull", "attribute": "b"}]}}),
            "`not` at predicate needs exactly one child",
        ),
        (json!({"predicate": {"op": "eq", "value": 1}}), "`eq` at predicate needs a non-empty `attribute`"),
        (json!({"predicate": {"op": "gt", "attribute": "a", "value": {"x": 1}}}), "`gt` at predicate expects a number, string or boolean, found object"),
        (json!({"predicate": {"op": "lt", "attribute": "a"}}), "`lt` at predicate expects a number, string or boolean, found null"),
        (json!({"predicate": {"op": "in", "attribute": "a", "value": 3}}), "`in` at predicate expects an array, found number"),
        (json!({"predicate": {"op": "between", "attribute": "a", "value": [1]}}), "`between` at predicate expects a two-element array [lo, hi], found array"),
        (json!({"predicate": {"op": "between", "attribute": "a", "value": [1, [2]]}}), "`between` at predicate expects a number, string or boolean, found array"),
        (json!({"predicate": {"op": "containsAll", "attribute": "a", "value": "x"}}), "`containsAll` at predicate expects an array, found string"),
        (json!({"predicate": {"op": "like", "attribute": "a", "value": 5}}), "`like` at predicate expects a string pattern, found number"),
        (json!({"where": {"a": {"$exists": 1}}}), "`$exists` at where.a.$exists expects a boolean, found number"),
        (json!({"where": {"a": {"$gt": 1, "b": 2}}}), "`where` at where.a expects either only `$` operators or a literal object without them, found an object mixing both"),
        (json!({"sort": [{"field": "", "direction": "asc"}]}), "sort field 0 is empty"),
        (json!({"cursor": "not-a-cursor"}), "invalid cursor: not a cursor of this library"),
    ];
    for (query, message) in cases {
        assert_eq!(compile_err(query.clone()).to_string(), message, "{query}");
    }
    let err =
        compile_err(json!({"predicate": {"op": "regex", "attribute": "a", "value": "(unclosed"}}));
    assert!(
        matches!(&err, QueryError::InvalidRegex { at, .. } if at == "predicate"),
        "{err}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn unknown_ops_survive_parsing_and_serialize_back() {
    let q: Query = serde_json::from_value(json!({"predicate": {"op": "near"}})).expect("parses");
    assert_eq!(q.predicate.as_ref().map(|p| p.op.as_str()), Some("near"));
    assert_eq!(
        serde_json::to_value(&q).expect("serializes"),
        json!({"predicate": {"op": "near"}})
    );
    for op in ["eq", "isNull", "containsAny", "between", "not"] {
        assert_eq!(PredicateOp::from(op.to_owned()).as_str(), op);
    }
}

#[test]
fn starts_with_and_ends_with_are_case_sensitive_string_affixes() {
    let hit = |op: &str, value: Value| {
        hits(&compile(
            json!({"predicate": {"op": op, "attribute": "name", "value": value}}),
        ))
    };
    assert!(hit("startsWith", json!("Ali")));
    assert!(!hit("startsWith", json!("ali")));
    assert!(hit("endsWith", json!("ice")));
    assert!(!hit("endsWith", json!("Ali")));
    assert!(matches!(
        compile_err(json!({"predicate": {"op": "startsWith", "attribute": "name", "value": 1}})),
        QueryError::InvalidValue { .. }
    ));
}
