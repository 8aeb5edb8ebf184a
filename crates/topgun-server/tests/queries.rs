//! Queries over a real socket: predicates, sort, limit and cursor paging,
//! projection, groupBy with aggregations, live ENTER / UPDATE / LEAVE, and
//! the LEAVE of a row whose TTL runs out without a write.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;
use topgun_core::wire::{
    AggFunc, Aggregation, ChangeType, CursorStatus, Message, Predicate, Query, QueryResp, QuerySub,
    QueryUpdate, SortDirection, WireRecord,
};
use topgun_core::Timestamp;

fn doc(value: serde_json::Value) -> rmpv::Value {
    rmpv::ext::to_value(value).unwrap()
}

fn json_of(value: &rmpv::Value) -> serde_json::Value {
    rmpv::ext::from_value(value.clone()).unwrap()
}

impl Client {
    async fn query(&mut self, id: &str, query: Query, fields: Option<&[&str]>) -> QueryResp {
        self.send(&Message::QuerySub(QuerySub {
            query_id: id.into(),
            map_name: "users".into(),
            query,
            fields: fields.map(|f| f.iter().map(|s| (*s).to_owned()).collect()),
        }))
        .await;
        match self
            .recv_until(|m| matches!(m, Message::QueryResp(r) if r.query_id == id))
            .await
        {
            Message::QueryResp(resp) => resp,
            _ => unreachable!(),
        }
    }

    async fn update(&mut self, id: &str) -> QueryUpdate {
        match self
            .recv_until(|m| matches!(m, Message::QueryUpdate(u) if u.query_id == id))
            .await
        {
            Message::QueryUpdate(u) => u,
            _ => unreachable!(),
        }
    }
}

fn keys(resp: &QueryResp) -> Vec<&str> {
    resp.results.iter().map(|r| r.key.as_str()).collect()
}

/// Five users written by one connection.
async fn seeded() -> (TestServer, Client) {
    let (server, _store) = TestServer::memory().await;
    let mut writer = server.connect().await;
    let users = [
        (
            "u1",
            json!({"name": "Alice", "age": 31, "city": "Oslo", "tags": ["a", "b"]}),
        ),
        (
            "u2",
            json!({"name": "Bob", "age": 25, "city": "Rome", "tags": ["b"]}),
        ),
        (
            "u3",
            json!({"name": "Carol", "age": 42, "city": "Oslo", "tags": []}),
        ),
        ("u4", json!({"name": "Dave", "age": 25.0, "city": "Lima"})),
        (
            "u5",
            json!({"name": "Eve", "age": 19, "city": null, "tags": ["a"]}),
        ),
    ];
    let ops = users
        .iter()
        .enumerate()
        .map(|(i, (key, value))| {
            put(
                i.to_string(),
                "users",
                key,
                doc(value.clone()),
                ts(i as u64, "w"),
            )
        })
        .collect();
    writer.write(ops).await;
    (server, writer)
}

#[tokio::test]
async fn predicates_and_where_filter_and_sort_desc_orders() {
    let (server, _writer) = seeded().await;
    let mut c = server.connect().await;
    // (age between 20 and 40 or name like "c%") and not city == "Rome",
    // sorted by age, oldest first.
    let query = Query::new()
        .filter(Predicate::and(vec![
            Predicate::or(vec![
                Predicate::between("age", 20, 40),
                Predicate::like("name", "c%"),
            ]),
            Predicate::not(Predicate::eq("city", "Rome")),
        ]))
        .sort_by("age", SortDirection::Desc);
    let resp = c.query("q1", query, None).await;
    // u4's age 25.0 equals 25 (numbers by value); key breaks the age tie.
    assert_eq!(keys(&resp), ["u3", "u1", "u4"]);
    assert_eq!(resp.cursor_status, Some(CursorStatus::NoCursor));

    let more_ops = Query::new()
        .filter(Predicate::contains_all("tags", [rmpv::Value::from("a")]))
        .filter(Predicate::is_not_null("city"))
        .sort_by("name", SortDirection::Asc);
    assert_eq!(keys(&c.query("q2", more_ops, None).await), ["u1"]);

    let where_ops = Query {
        where_: Some(doc(
            json!({"age": {"$in": [25, 19]}, "name": {"$regex": "^[BE]"}}),
        )),
        ..Query::new()
    };
    assert_eq!(keys(&c.query("q3", where_ops, None).await), ["u2", "u5"]);

    let starts = Query::new()
        .filter(Predicate::or(vec![
            Predicate::starts_with("name", "Ca"),
            Predicate::ends_with("name", "ve"),
        ]))
        .filter(Predicate::gte("age", 19));
    assert_eq!(keys(&c.query("q4", starts, None).await), ["u3", "u4", "u5"]);

    // A query the engine cannot compile is an ERROR 400, not a 501.
    c.send(&Message::QuerySub(QuerySub {
        query_id: "bad".into(),
        map_name: "users".into(),
        query: Query::new().filter(Predicate::regex("name", "(unclosed")),
        fields: None,
    }))
    .await;
    let err = c.recv_until(|m| error_code(m).is_some()).await;
    assert_eq!(error_code(&err), Some(400));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn limit_and_cursor_page_through_the_whole_result() {
    let (server, _writer) = seeded().await;
    let mut c = server.connect().await;
    let base = Query::new().sort_by("age", SortDirection::Asc).limit(2);
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0.. {
        let mut query = base.clone();
        query.cursor = cursor.take();
        let sent_cursor = query.cursor.is_some();
        let resp = c.query(&format!("p{page}"), query, None).await;
        assert_eq!(
            resp.cursor_status,
            Some(if sent_cursor {
                CursorStatus::Valid
            } else {
                CursorStatus::NoCursor
            })
        );
        pages.push(
            keys(&resp)
                .iter()
                .map(|k| (*k).to_owned())
                .collect::<Vec<_>>(),
        );
        if resp.has_more != Some(true) {
            assert_eq!(resp.next_cursor, None);
            break;
        }
        cursor = Some(resp.next_cursor.expect("a cursor while more rows follow"));
    }
    assert_eq!(pages, [vec!["u5", "u2"], vec!["u4", "u1"], vec!["u3"]]);

    // A cursor of another sort is invalid: the query starts again.
    let mut wrong = Query::new().sort_by("name", SortDirection::Desc).limit(2);
    wrong.cursor = Some(c.query("x", base.clone(), None).await.next_cursor.unwrap());
    let resp = c.query("wrong", wrong, None).await;
    assert_eq!(resp.cursor_status, Some(CursorStatus::Invalid));
    assert_eq!(keys(&resp), ["u5", "u4"]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn fields_project_results_and_updates() {
    let (server, mut writer) = seeded().await;
    let mut c = server.connect().await;
    let query = Query::new().filter(Predicate::eq("city", "Oslo"));
    let resp = c.query("p", query, Some(&["name"])).await;
    let values: Vec<_> = resp.results.iter().map(|r| json_of(&r.value)).collect();
    assert_eq!(values, [json!({"name": "Alice"}), json!({"name": "Carol"})]);

    writer
        .write(vec![put(
            "9",
            "users",
            "u2",
            doc(json!({"name": "Bob", "city": "Oslo", "age": 26})),
            ts(9, "w"),
        )])
        .await;
    let u = c.update("p").await;
    assert_eq!((u.key.as_str(), u.change_type), ("u2", ChangeType::Enter));
    assert_eq!(json_of(&u.value), json!({"name": "Bob"}));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn group_by_answers_one_row_per_group_and_updates_it_live() {
    let (server, mut writer) = seeded().await;
    let mut c = server.connect().await;
    let query = Query::new()
        .group_by(["city"])
        .aggregate(Aggregation {
            func: AggFunc::Count,
            field: None,
        })
        .aggregate(Aggregation::new(AggFunc::Sum, "age"))
        .aggregate(Aggregation::new(AggFunc::Avg, "age"))
        .aggregate(Aggregation::new(AggFunc::Max, "age"));
    let resp = c.query("g", query, None).await;
    let rows: Vec<_> = resp
        .results
        .iter()
        .map(|r| (r.key.as_str(), json_of(&r.value)))
        .collect();
    assert_eq!(
        rows,
        [
            (
                "N",
                json!({"__key": "N", "__count": 1, "__sum_age": 19, "__avg_age": 19.0, "__max_age": 19, "city": null})
            ),
            (
                "S4:Lima",
                json!({"__key": "S4:Lima", "__count": 1, "__sum_age": 25, "__avg_age": 25.0, "__max_age": 25.0, "city": "Lima"})
            ),
            (
                "S4:Oslo",
                json!({"__key": "S4:Oslo", "__count": 2, "__sum_age": 73, "__avg_age": 36.5, "__max_age": 42, "city": "Oslo"})
            ),
            (
                "S4:Rome",
                json!({"__key": "S4:Rome", "__count": 1, "__sum_age": 25, "__avg_age": 25.0, "__max_age": 25, "city": "Rome"})
            ),
        ]
    );

    // Bob moves from Rome to Oslo: Rome's row leaves, Oslo's updates.
    writer
        .write(vec![put(
            "9",
            "users",
            "u2",
            doc(json!({"name": "Bob", "age": 50, "city": "Oslo"})),
            ts(9, "w"),
        )])
        .await;
    let first = c.update("g").await;
    assert_eq!(
        (first.key.as_str(), first.change_type),
        ("S4:Rome", ChangeType::Leave)
    );
    let second = c.update("g").await;
    assert_eq!(
        (second.key.as_str(), second.change_type),
        ("S4:Oslo", ChangeType::Update)
    );
    assert_eq!(
        json_of(&second.value),
        json!({"__key": "S4:Oslo", "__count": 3, "__sum_age": 123, "__avg_age": 41.0, "__max_age": 50, "city": "Oslo"})
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn live_updates_enter_update_leave_and_refill_a_limited_window() {
    let (server, mut writer) = seeded().await;
    let mut c = server.connect().await;
    // The two oldest users.
    let query = Query::new().sort_by("age", SortDirection::Desc).limit(2);
    assert_eq!(keys(&c.query("top", query, None).await), ["u3", "u1"]);

    // A new oldest user enters and pushes u1 out.
    writer
        .write(vec![put(
            "10",
            "users",
            "u6",
            doc(json!({"name": "Fay", "age": 60})),
            ts(10, "w"),
        )])
        .await;
    let leave = c.update("top").await;
    assert_eq!(
        (leave.key.as_str(), leave.change_type),
        ("u1", ChangeType::Leave)
    );
    assert_eq!(leave.value, rmpv::Value::Nil);
    let enter = c.update("top").await;
    assert_eq!(
        (enter.key.as_str(), enter.change_type),
        ("u6", ChangeType::Enter)
    );

    // A change inside the window is an UPDATE.
    writer
        .write(vec![put(
            "11",
            "users",
            "u3",
            doc(json!({"name": "Carol", "age": 43})),
            ts(11, "w"),
        )])
        .await;
    let update = c.update("top").await;
    assert_eq!(
        (update.key.as_str(), update.change_type),
        ("u3", ChangeType::Update)
    );
    assert_eq!(json_of(&update.value), json!({"name": "Carol", "age": 43}));

    // A removal leaves, and the next row (u1) enters in its place.
    writer
        .write(vec![remove("12", "users", "u6", ts(12, "w"))])
        .await;
    let leave = c.update("top").await;
    assert_eq!(
        (leave.key.as_str(), leave.change_type),
        ("u6", ChangeType::Leave)
    );
    let enter = c.update("top").await;
    assert_eq!(
        (enter.key.as_str(), enter.change_type),
        ("u1", ChangeType::Enter)
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_ttl_that_runs_out_without_a_write_is_a_leave() {
    let (server, _store) = TestServer::memory().await;
    let mut writer = server.connect().await;
    let now = now_millis();
    let mut short = WireRecord::new(doc(json!({"n": 1})), Timestamp::new(now, 0, "w"));
    short.ttl_ms = Some(1_000);
    let mut op = put("1", "users", "short", rmpv::Value::Nil, ts(1, "w"));
    op.record = Some(short);
    writer
        .write(vec![
            op,
            put("2", "users", "long", doc(json!({"n": 2})), ts(2, "w")),
        ])
        .await;
    let mut c = server.connect().await;
    let resp = c.query("ttl", Query::new(), None).await;
    assert_eq!(keys(&resp), ["long", "short"]);
    // No write follows: the server's timer alone produces the LEAVE.
    let leave = c.update("ttl").await;
    assert_eq!(
        (leave.key.as_str(), leave.change_type),
        ("short", ChangeType::Leave)
    );
    assert!(now_millis() > now + 1_000, "not before the TTL ran out");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn query_resp_is_clamped_but_live_updates_are_not() {
    let store = std::sync::Arc::new(topgun_storage::MemoryStore::new());
    let mut config = topgun_server::ServerConfig::new(topgun_server::StoreConfig::Store(
        store as std::sync::Arc<dyn topgun_storage::Store>,
    ));
    config.limits.max_query_results = 2;
    let server = TestServer::start(config).await;
    let mut writer = server.connect().await;
    let ops = (0..4u64)
        .map(|i| {
            put(
                i.to_string(),
                "users",
                &format!("k{i}"),
                doc(json!({"i": i})),
                ts(i, "w"),
            )
        })
        .collect();
    writer.write(ops).await;
    let mut c = server.connect().await;
    let resp = c.query("all", Query::new(), None).await;
    assert_eq!(keys(&resp), ["k0", "k1"]);
    assert_eq!(resp.has_more, Some(true));
    assert_eq!(resp.next_cursor, None);
    // A change to a row beyond the clamp still reaches the client.
    writer
        .write(vec![put(
            "9",
            "users",
            "k3",
            doc(json!({"i": 33})),
            ts(9, "w"),
        )])
        .await;
    let u = c.update("all").await;
    assert_eq!((u.key.as_str(), u.change_type), ("k3", ChangeType::Update));
    server.stop().await.unwrap();
}
