//! A misbehaving server: garbage frames, unknown message types, a
//! connection cut in the middle of a frame. The client reports each,
//! reconnects, never panics and loses nothing.

// Test helpers unwrap: a panic with the error is the failure report.
#![allow(clippy::unwrap_used)]

use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as Ws;
use topgun_client::{SyncConfig, SyncEvent, TopGunClient};
use topgun_core::wire::{self, Message, Pong};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_unknown_types_and_cut_frames_are_survived() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    // The server waits until the test listens to sync events, so that no
    // report is sent before anyone can hear it.
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    // The last connection stays open until the test has checked everything.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        // 1: a garbage binary frame.
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        go_rx.await.unwrap();
        ws.send(Ws::Binary(vec![0xc1, 0xff, 0x00, 0x13].into()))
            .await
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
        seen_tx.send("garbage").unwrap();
        // 2: an unknown message type, then a PONG: the connection goes on.
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let unknown =
            rmp_serde::to_vec_named(&serde_json::json!({"type": "FROM_THE_FUTURE", "x": 1}))
                .unwrap();
        ws.send(Ws::Binary(unknown.into())).await.unwrap();
        let pong = wire::encode(&Message::Pong(Pong {
            timestamp: 1,
            server_time: 2,
        }))
        .unwrap();
        ws.send(Ws::Binary(pong.into())).await.unwrap();
        // The client keeps talking on this connection (its OP_BATCH arrives).
        let mut got_batch = false;
        while let Ok(Some(Ok(frame))) =
            tokio::time::timeout(Duration::from_secs(3), ws.next()).await
        {
            if let Ws::Binary(b) = frame {
                if matches!(wire::decode(&b), Ok(Message::OpBatch(_))) {
                    got_batch = true;
                    break;
                }
            }
        }
        assert!(
            got_batch,
            "the client kept using the connection after an unknown type"
        );
        seen_tx.send("unknown").unwrap();
        // 3: cut the TCP stream in the middle of a frame header + payload.
        let mut tcp = ws.into_inner();
        let _ = tcp.write_all(&[0x82, 0x7e, 0x01]).await; // binary frame, 16-bit length, truncated
        drop(tcp);
        seen_tx.send("cut").unwrap();
        // 4: the client comes back once more.
        let (tcp, _) = listener.accept().await.unwrap();
        let _ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        seen_tx.send("reconnected").unwrap();
        let _ = done_rx.await;
    });

    let config = SyncConfig {
        backoff_initial_ms: 20,
        backoff_max_ms: 100,
        auth_grace_ms: 20,
        ..SyncConfig::default()
    };
    let client = TopGunClient::builder()
        .server_url(&url)
        .sync_config(config)
        .sync_maps(["m"])
        .build()
        .await
        .unwrap();
    let mut events = client.sync_events();
    go_tx.send(()).unwrap();
    let m = client.get_json_map("m").unwrap();
    for i in 0..5 {
        m.put(&format!("k{i}"), serde_json::json!(i)).await.unwrap();
    }
    for step in ["garbage", "unknown", "cut", "reconnected"] {
        let got = tokio::time::timeout(WAIT, seen_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, step);
    }
    let mut reports = Vec::new();
    while let Ok(e) = events.try_recv() {
        reports.push(e);
    }
    assert!(
        reports
            .iter()
            .any(|e| matches!(e, SyncEvent::ProtocolError(m) if m.contains("undecodable"))),
        "garbage reported: {reports:?}"
    );
    assert!(
        reports
            .iter()
            .any(|e| matches!(e, SyncEvent::ProtocolError(m) if m.contains("FROM_THE_FUTURE"))),
        "unknown type reported: {reports:?}"
    );
    assert!(
        reports
            .iter()
            .filter(|e| matches!(e, SyncEvent::Disconnected(_)))
            .count()
            >= 2,
        "{reports:?}"
    );
    // Nothing was acknowledged, so nothing is lost: every op is still pending.
    assert_eq!(client.pending_ops().await.unwrap(), 5);
    assert_eq!(m.get("k3").await.unwrap(), Some(serde_json::json!(3)));
    done_tx.send(()).unwrap();
    server.await.unwrap();
}

/// A scripted server that answers the pull with one record, then demands a
/// reset: the client drops its synced copy (keeping its unsynced write) and
/// pulls again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_reset_required_drops_synced_records_and_pulls_again() {
    use topgun_core::wire::{
        LeafRecord, MerkleReqBucket, SyncResetRequired, SyncRespLeaf, SyncRespRoot, WireRecord,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let (inits_tx, mut inits_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    // The server demands the reset once the client has merged the record.
    let (merged_tx, merged_rx) = tokio::sync::oneshot::channel::<()>();
    let mut merged_rx = Some(merged_rx);
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let send = |m: Message| Ws::Binary(wire::encode(&m).unwrap().into());
        let ts = topgun_core::Timestamp::new(1_000, 0, "server-node");
        let mut inits = 0;
        while let Ok(Some(Ok(Ws::Binary(b)))) =
            tokio::time::timeout(Duration::from_secs(5), ws.next()).await
        {
            match wire::decode(&b).unwrap() {
                Message::SyncInit(_) => {
                    inits += 1;
                    inits_tx.send(inits).unwrap();
                    // A root that differs from anything the client has.
                    ws.send(send(Message::SyncRespRoot(SyncRespRoot {
                        map_name: "m".into(),
                        root_hash: 7,
                        timestamp: ts.clone(),
                    })))
                    .await
                    .unwrap();
                }
                Message::MerkleReqBucket(MerkleReqBucket { path, .. }) if inits == 1 => {
                    // Answer the root request directly with a leaf holding one record.
                    let record = WireRecord::new(rmpv::Value::from("from-server"), ts.clone());
                    let leaf = SyncRespLeaf {
                        map_name: "m".into(),
                        path,
                        records: vec![LeafRecord {
                            key: "s".into(),
                            record,
                        }],
                    };
                    ws.send(send(Message::SyncRespLeaf(leaf))).await.unwrap();
                    if let Some(merged) = merged_rx.take() {
                        merged.await.unwrap();
                    }
                    let reset = SyncResetRequired {
                        map_name: "m".into(),
                        reason: "restored from backup".into(),
                    };
                    ws.send(send(Message::SyncResetRequired(reset)))
                        .await
                        .unwrap();
                }
                Message::MerkleReqBucket(MerkleReqBucket { path, .. }) => {
                    // Second pull: the server now has nothing.
                    let leaf = SyncRespLeaf {
                        map_name: "m".into(),
                        path,
                        records: vec![],
                    };
                    ws.send(send(Message::SyncRespLeaf(leaf))).await.unwrap();
                }
                _ => {}
            }
        }
    });
    let config = SyncConfig {
        backoff_initial_ms: 20,
        backoff_max_ms: 100,
        auth_grace_ms: 20,
        ..SyncConfig::default()
    };
    let client = TopGunClient::builder()
        .server_url(&url)
        .sync_config(config)
        .sync_maps(["m"])
        .build()
        .await
        .unwrap();
    let m = client.get_json_map("m").unwrap();
    let mut events = m.subscribe();
    m.put("local", serde_json::json!("unsynced")).await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, inits_rx.recv()).await.unwrap(),
        Some(1)
    );
    // The pulled record arrives…
    loop {
        let e = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("the pulled record never arrived")
            .unwrap();
        if e.key == "s" {
            assert_eq!(e.origin, topgun_client::Origin::Remote);
            break;
        }
    }
    assert_eq!(
        m.get("s").await.unwrap(),
        Some(serde_json::json!("from-server"))
    );
    merged_tx.send(()).unwrap();
    // …then the reset: a second SYNC_INIT after the synced copy is dropped.
    assert_eq!(
        tokio::time::timeout(WAIT, inits_rx.recv()).await.unwrap(),
        Some(2)
    );
    assert_eq!(
        m.get("s").await.unwrap(),
        None,
        "the synced record was dropped"
    );
    assert_eq!(
        m.get("local").await.unwrap(),
        Some(serde_json::json!("unsynced")),
        "the dirty record was kept"
    );
    assert_eq!(client.pending_ops().await.unwrap(), 1, "its op too");
    client.close().await;
    server.abort();
}
