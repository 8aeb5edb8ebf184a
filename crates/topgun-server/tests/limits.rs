//! Limits and bad input: each has a clear answer and the connection stays
//! usable.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use topgun_core::wire::{Message, Ping};
use topgun_server::{ServerConfig, StoreConfig};
use topgun_storage::{MemoryStore, Store};

async fn server_with(limits: impl FnOnce(&mut topgun_server::Limits)) -> TestServer {
    let store = Arc::new(MemoryStore::new());
    let mut config = ServerConfig::new(StoreConfig::Store(store as Arc<dyn Store>));
    limits(&mut config.limits);
    TestServer::start(config).await
}

#[tokio::test]
async fn oversized_frame_gets_413_and_the_connection_still_works() {
    let server = server_with(|l| l.max_frame_len = 4096).await;
    let mut c = server.connect().await;
    let big = "x".repeat(10_000);
    c.send(&batch(vec![put("1", "m", "k", big.as_str(), ts(1, "c"))]))
        .await;
    assert_eq!(error_code(&c.recv().await), Some(413));
    assert_eq!(
        c.write(vec![put("2", "m", "k", "small", ts(2, "c"))]).await,
        "2".into()
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn garbage_text_and_unknown_types_get_errors_and_the_connection_stays() {
    let (server, _store) = TestServer::memory().await;
    let mut c = server.connect().await;
    c.send_raw(vec![0xc1, 0xff, 0x00]).await;
    assert_eq!(error_code(&c.recv().await), Some(400));
    c.send_raw(rmp_serde_like_map_without_type()).await;
    assert_eq!(error_code(&c.recv().await), Some(400));
    // A known type with ill-typed fields.
    c.send_raw(encode_value(rmpv::Value::Map(vec![
        ("type".into(), "OP_BATCH".into()),
        (
            "payload".into(),
            rmpv::Value::Map(vec![("ops".into(), 5.into())]),
        ),
    ])))
    .await;
    assert_eq!(error_code(&c.recv().await), Some(400));
    c.send_text("{\"type\":\"PING\"}").await;
    assert_eq!(error_code(&c.recv().await), Some(400));
    c.send_raw(encode_value(rmpv::Value::Map(vec![
        ("type".into(), "LOCK_REQUEST".into()),
        ("payload".into(), rmpv::Value::Map(vec![])),
    ])))
    .await;
    match c.recv().await {
        Message::Error(e) => {
            assert_eq!(e.code, 501);
            assert!(e.message.contains("LOCK_REQUEST"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.write(vec![put("1", "m", "k", 1, ts(1, "c"))]).await,
        "1".into()
    );
    server.stop().await.unwrap();
}

fn encode_value(value: rmpv::Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &value).unwrap();
    bytes
}

fn rmp_serde_like_map_without_type() -> Vec<u8> {
    encode_value(rmpv::Value::Map(vec![("hello".into(), 1.into())]))
}

#[tokio::test]
async fn ping_gets_pong_with_server_time() {
    let (server, _store) = TestServer::memory().await;
    let mut c = server.connect().await;
    c.send(&Message::Ping(Ping { timestamp: 123 })).await;
    match c.recv().await {
        Message::Pong(p) => {
            assert_eq!(p.timestamp, 123);
            assert!(p.server_time.abs_diff(now_millis()) < 5_000);
        }
        other => panic!("{other:?}"),
    }
    server.stop().await.unwrap();
}

/// Over its rate, a connection is slowed down, not refused: every batch
/// is acknowledged, none answered with an error, at no more than the rate.
#[tokio::test]
async fn a_connection_over_its_rate_is_paced_not_refused() {
    let server = server_with(|l| {
        l.ops_per_second = 2_000;
        l.ops_burst = 100;
    })
    .await;
    let mut c = server.connect().await;
    let started = std::time::Instant::now();
    // 500 ops sent at once: the first batch from the burst; after each of
    // the next ones the reader pauses 50 ms (100 ops at 2,000/s), so the
    // fifth is read 150 ms in.
    for b in 0..5u64 {
        let ops = (0..100u64)
            .map(|i| {
                let n = b * 100 + i;
                put(n.to_string(), "m", &format!("k{n}"), n, ts(n, "c"))
            })
            .collect();
        c.send(&batch(ops)).await;
    }
    for b in 0..5u64 {
        match c.recv().await {
            Message::OpAck(ack) => assert_eq!(ack.last_id, (b * 100 + 99).to_string().into()),
            other => panic!("batch {b}: {other:?}"),
        }
    }
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(145),
        "not paced: {:?}",
        started.elapsed()
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let server = server_with(|l| l.idle_timeout = Duration::from_millis(300)).await;
    let mut c = server.connect().await;
    match c.next().await {
        Received::Closed(Some(frame)) => assert_eq!(frame.reason.as_str(), "idle timeout"),
        other => panic!("{other:?}"),
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn health_answers_200_with_json() {
    let (server, _store) = TestServer::memory().await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("application/json"), "{response}");
    assert!(response.contains("\"status\":\"ok\""), "{response}");
    server.stop().await.unwrap();
}

/// A leaf whose records do not fit one frame is answered in several
/// `SYNC_RESP_LEAF` frames for its path, each within the cap, together
/// holding every record once.
#[tokio::test]
async fn a_leaf_larger_than_a_frame_is_split_over_several() {
    use topgun_core::wire::MerkleReqBucket;
    use topgun_core::MerkleTree;
    let server = server_with(|l| l.max_frame_len = 4096).await;
    let mut c = server.connect().await;
    let path = MerkleTree::path_of("k0");
    let keys: Vec<String> = (0..)
        .map(|i| format!("k{i}"))
        .filter(|k| MerkleTree::path_of(k) == path)
        .take(30)
        .collect();
    let value = "v".repeat(300);
    for (i, key) in keys.iter().enumerate() {
        let id = i.to_string();
        let ack = c
            .write(vec![put(
                id.as_str(),
                "m",
                key,
                value.as_str(),
                ts(i as u64 + 1, "c"),
            )])
            .await;
        assert_eq!(ack, id.as_str().into());
    }
    c.send(&Message::MerkleReqBucket(MerkleReqBucket {
        map_name: "m".into(),
        path: path.clone(),
    }))
    .await;
    let mut seen = Vec::new();
    let mut frames = 0;
    while seen.len() < keys.len() {
        let msg = c.recv().await;
        // The server's frames encode as the message does, byte for byte.
        let len = topgun_core::wire::encode(&msg).unwrap().len();
        let Message::SyncRespLeaf(leaf) = msg else {
            panic!("{msg:?}");
        };
        assert_eq!(leaf.path, path);
        assert!(len <= 4096, "a frame of {len} bytes");
        frames += 1;
        seen.extend(leaf.records.into_iter().map(|r| {
            assert_eq!(r.record.value, Some(value.as_str().into()));
            r.key
        }));
    }
    assert!(frames > 1, "split over {frames} frames");
    seen.sort();
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(seen, expected);
    server.stop().await.unwrap();
}
