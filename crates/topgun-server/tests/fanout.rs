//! Realtime: events reach other subscribers (not the writer), queries
//! answer with live entries, slow consumers are cut off.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;
use topgun_core::wire::{ChangeType, Message, OpType, Query, QuerySub, QueryUnsub};
use topgun_server::{ServerConfig, StoreConfig};
use topgun_storage::{MemoryStore, Store};

#[tokio::test]
async fn events_reach_other_subscribers_but_not_the_writer() {
    let (server, _store) = TestServer::memory().await;
    let mut writer = server.connect().await;
    let mut sub = server.connect().await;
    let mut other_map = server.connect().await;
    writer.subscribe("w", "m").await;
    sub.subscribe("s", "m").await;
    other_map.subscribe("o", "elsewhere").await;

    writer
        .write(vec![put("1", "m", "k", "v", ts(1, "w"))])
        .await;
    match sub
        .recv_until(|m| matches!(m, Message::ServerEvent(_)))
        .await
    {
        Message::ServerEvent(e) => {
            assert_eq!(
                (e.map_name.as_str(), e.key.as_str(), &e.event_type),
                ("m", "k", &OpType::Put)
            );
            let record = e.record.expect("events carry the record");
            assert_eq!(record.value, Some("v".into()));
            assert_eq!(record.timestamp, ts(1, "w"));
        }
        _ => unreachable!(),
    }
    writer.write(vec![remove("2", "m", "k", ts(2, "w"))]).await;
    match sub
        .recv_until(|m| matches!(m, Message::ServerEvent(_)))
        .await
    {
        Message::ServerEvent(e) => {
            assert_eq!(e.event_type, OpType::Remove);
            let record = e.record.expect("REMOVE events carry the tombstone");
            assert!(record.is_tombstone());
            assert_eq!(record.timestamp, ts(2, "w"));
        }
        _ => unreachable!(),
    }
    writer.expect_no_event(200).await;
    other_map.expect_no_event(50).await;

    // After QUERY_UNSUB, no more events.
    sub.send(&Message::QueryUnsub(QueryUnsub {
        query_id: "s".into(),
    }))
    .await;
    sub.roundtrip().await;
    writer.write(vec![put("3", "m", "k2", 1, ts(3, "w"))]).await;
    sub.expect_no_event(200).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn queued_events_are_coalesced_into_batch_events() {
    let (server, _store) = TestServer::memory().await;
    let mut writer = server.connect().await;
    let mut sub = server.connect().await;
    sub.subscribe("s", "m").await;
    let ops = (0..50u64)
        .map(|i| put(i.to_string(), "m", &format!("k{i}"), i, ts(i, "w")))
        .collect();
    writer.write(ops).await;
    let mut keys = Vec::new();
    let mut batches = 0;
    while keys.len() < 50 {
        match sub.recv().await {
            Message::ServerEvent(e) => keys.push(e.key),
            Message::ServerBatchEvent(b) => {
                batches += 1;
                keys.extend(b.events.into_iter().map(|e| e.key));
            }
            _ => {}
        }
    }
    let expected: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    assert_eq!(keys, expected, "events in commit order");
    assert!(batches >= 1, "50 events queued at once are coalesced");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn query_sub_answers_with_live_entries_and_updates() {
    let (server, _store) = TestServer::memory().await;
    let mut writer = server.connect().await;
    let doc = |status: &str| rmpv::Value::Map(vec![("status".into(), status.into())]);
    writer
        .write(vec![
            put("1", "todos", "a", doc("done"), ts(1, "w")),
            put("2", "todos", "b", doc("open"), ts(2, "w")),
            put("3", "todos", "c", doc("done"), ts(3, "w")),
            remove("4", "todos", "c", ts(4, "w")),
        ])
        .await;
    let mut sub = server.connect().await;
    let all = sub.subscribe("all", "todos").await;
    let keys: Vec<_> = all.results.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["a", "b"], "tombstones are not live entries");
    assert_eq!(all.has_more, Some(false));

    sub.send(&Message::QuerySub(QuerySub {
        query_id: "done".into(),
        map_name: "todos".into(),
        query: Query {
            where_: Some(rmpv::Value::Map(vec![("status".into(), "done".into())])),
            ..Query::default()
        },
        fields: None,
    }))
    .await;
    match sub.recv_until(|m| matches!(m, Message::QueryResp(_))).await {
        Message::QueryResp(r) => {
            assert_eq!(r.query_id, "done");
            assert_eq!(r.results.len(), 1);
            assert_eq!(r.results[0].key, "a");
        }
        _ => unreachable!(),
    }
    // "b" enters the "done" query.
    writer
        .write(vec![put("5", "todos", "b", doc("done"), ts(5, "w"))])
        .await;
    match sub
        .recv_until(|m| matches!(m, Message::QueryUpdate(u) if u.query_id == "done"))
        .await
    {
        Message::QueryUpdate(u) => {
            assert_eq!(u.key, "b");
            assert_eq!(u.change_type, ChangeType::Enter);
        }
        _ => unreachable!(),
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_without_stalling_others() {
    let store = Arc::new(MemoryStore::new());
    let mut config = ServerConfig::new(StoreConfig::Store(store as Arc<dyn Store>));
    config.limits.outbox_capacity = 16;
    let server = TestServer::start(config).await;
    let mut slow = server.connect().await;
    slow.subscribe("s", "m").await;
    let mut healthy = server.connect().await;
    healthy.subscribe("h", "m").await;
    let mut writer = server.connect().await;

    // ~40 MB of events: more than the socket buffers of a client that
    // never reads, so its queue fills up.
    let big = "x".repeat(200 * 1024);
    let started = std::time::Instant::now();
    for i in 0..200u64 {
        writer
            .write(vec![put(
                i.to_string(),
                "m",
                &format!("k{i}"),
                big.as_str(),
                ts(i, "w"),
            )])
            .await;
        // The healthy subscriber keeps up.
        healthy
            .recv_until(|m| matches!(m, Message::ServerEvent(e) if e.key == format!("k{i}")))
            .await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "writes were not stalled"
    );

    // The slow client finds its stream ended (after whatever was buffered).
    let mut closed = false;
    for _ in 0..10_000 {
        match slow.next_within(Duration::from_secs(5)).await {
            Some(Received::Closed(frame)) => {
                if let Some(frame) = frame {
                    assert!(frame.reason.contains("slow consumer"), "{frame:?}");
                }
                closed = true;
                break;
            }
            Some(Received::Msg(_)) => {}
            None => break,
        }
    }
    assert!(closed, "the slow consumer was disconnected");
    // The server still serves everyone else.
    writer.roundtrip().await;
    healthy.roundtrip().await;
    server.stop().await.unwrap();
}
