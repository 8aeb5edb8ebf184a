//! Writes: durable apply, acks echoing the client's ids, LWW by the
//! client's HLC, tombstones, drift rejection.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use topgun_core::wire::{Message, OpId};
use topgun_core::Timestamp;
use topgun_storage::Store;

#[tokio::test]
async fn batch_is_applied_and_acked_with_the_clients_id_verbatim() {
    let (server, store) = TestServer::memory().await;
    let mut c = server.connect().await;
    let last = c
        .write(vec![
            put("batch-2", "todos", "a", "one", ts(1, "c1")),
            put("batch-3", "todos", "b", "two", ts(2, "c1")),
        ])
        .await;
    assert_eq!(last, OpId::Text("batch-3".into()));
    // A numeric id stays a number, a digit string stays a string.
    assert_eq!(
        c.write(vec![put(7u64, "todos", "c", 3, ts(3, "c1"))]).await,
        OpId::Number(7)
    );
    assert_eq!(
        c.write(vec![put("8", "todos", "d", 4, ts(4, "c1"))]).await,
        OpId::Text("8".into())
    );
    let a = store.get("todos", "a").await.unwrap().unwrap();
    assert_eq!(a.timestamp, ts(1, "c1"), "the client's timestamp is kept");
    assert_eq!(
        rmpv::decode::read_value(&mut a.value.unwrap().as_slice()).unwrap(),
        rmpv::Value::from("one")
    );
    assert!(!a.dirty);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn resent_batch_is_a_no_op_but_acked() {
    let (server, store) = TestServer::memory().await;
    let mut c = server.connect().await;
    let mut watcher = server.connect().await;
    watcher.subscribe("q", "m").await;
    let ops = vec![put("1", "m", "k", "v", ts(5, "c1"))];
    assert_eq!(c.write(ops.clone()).await, OpId::from("1"));
    watcher
        .recv_until(|m| matches!(m, Message::ServerEvent(_)))
        .await;
    // The TS client re-sends every pending op in each batch.
    let mut ops2 = ops.clone();
    ops2.push(put("2", "m", "k2", "w", ts(6, "c1")));
    assert_eq!(c.write(ops2).await, OpId::from("2"));
    assert_eq!(c.write(ops).await, OpId::from("1"));
    assert_eq!(store.stats().await.unwrap().records, 2);
    // Only the new op made an event.
    match watcher
        .recv_until(|m| matches!(m, Message::ServerEvent(_) | Message::ServerBatchEvent(_)))
        .await
    {
        Message::ServerEvent(e) => assert_eq!(e.key, "k2"),
        other => panic!("{other:?}"),
    }
    watcher.expect_no_event(200).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn last_writer_wins_by_the_clients_hlc_not_by_arrival() {
    let (server, store) = TestServer::memory().await;
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    a.write(vec![put("1", "m", "k", "newer", ts(100, "a"))])
        .await;
    b.write(vec![put("1", "m", "k", "older", ts(50, "b"))])
        .await;
    let rec = store.get("m", "k").await.unwrap().unwrap();
    assert_eq!(rec.timestamp, ts(100, "a"));
    // Equal millis and counter: the node id decides, byte-wise.
    let base = ts(200, "a");
    b.write(vec![put(
        "2",
        "m",
        "k",
        "b wins",
        Timestamp::new(base.millis, 0, "b"),
    )])
    .await;
    a.write(vec![put(
        "2",
        "m",
        "k",
        "a loses",
        Timestamp::new(base.millis, 0, "a"),
    )])
    .await;
    assert_eq!(
        store
            .get("m", "k")
            .await
            .unwrap()
            .unwrap()
            .timestamp
            .node_id,
        "b"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn ops_beyond_the_drift_bound_are_rejected_and_the_rest_applies() {
    let (server, store) = TestServer::memory().await;
    let mut c = server.connect().await;
    let future = Timestamp::new(now_millis() + 10 * 60_000, 0, "c1");
    c.send(&batch(vec![
        put("1", "m", "ok1", 1, ts(1, "c1")),
        put("2", "m", "late", 2, future),
        put("3", "m", "ok3", 3, ts(3, "c1")),
    ]))
    .await;
    match c.recv().await {
        Message::OpRejected(r) => {
            assert_eq!(r.op_id, OpId::from("2"));
            assert_eq!(r.code, Some(400));
            assert!(r.reason.contains("ahead"), "{}", r.reason);
        }
        other => panic!("{other:?}"),
    }
    match c.recv().await {
        Message::OpAck(ack) => assert_eq!(ack.last_id, OpId::from("3")),
        other => panic!("{other:?}"),
    }
    assert!(store.get("m", "late").await.unwrap().is_none());
    assert!(store.get("m", "ok1").await.unwrap().is_some());
    assert!(store.get("m", "ok3").await.unwrap().is_some());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn pipelined_batches_are_acked_in_order() {
    let (server, _store) = TestServer::memory().await;
    let mut c = server.connect().await;
    // As the TS client does: batch n carries ops 1..=n.
    let ops: Vec<_> = (1..=20u64)
        .map(|i| put(i.to_string(), "m", &format!("k{i}"), i, ts(i, "c")))
        .collect();
    for n in 1..=ops.len() {
        c.send(&batch(ops[..n].to_vec())).await;
    }
    for n in 1..=ops.len() {
        match c.recv().await {
            Message::OpAck(ack) => assert_eq!(ack.last_id, OpId::from(n.to_string())),
            other => panic!("{other:?}"),
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_ops_are_rejected_one_by_one() {
    let (server, _store) = TestServer::memory().await;
    let mut c = server.connect().await;
    let mut no_record = put("1", "m", "k", 1, ts(1, "c"));
    no_record.record = None;
    let mut bad_remove = remove("2", "m", "k", ts(2, "c"));
    bad_remove.record = Some(topgun_core::wire::WireRecord::new(1.into(), ts(2, "c")));
    let mut or_add = put("3", "m", "k", 1, ts(3, "c"));
    or_add.op_type = Some("OR_ADD".into());
    let empty_key = put("4", "m", "", 1, ts(4, "c"));
    c.send(&batch(vec![no_record, bad_remove, or_add, empty_key]))
        .await;
    for id in ["1", "2", "3", "4"] {
        match c.recv().await {
            Message::OpRejected(r) => {
                assert_eq!(r.op_id, OpId::from(id));
                assert_eq!(r.code, Some(400));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(c.recv().await, Message::OpAck(a) if a.last_id == OpId::from("4")));
    server.stop().await.unwrap();
}
