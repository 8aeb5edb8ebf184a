//! The commit pipeline: merges run at once only on disjoint keys, so a
//! write that waits behind a slow merge of the same key can never land
//! after it and leave the Merkle tree or the subscribers on the older
//! record.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use topgun_core::wire::{Message, SyncInit};
use topgun_core::MerkleTree;
use topgun_server::{ServerConfig, StoreConfig};
use topgun_storage::hooked::{HookedStore, Phase, StoreCall};
use topgun_storage::{MemoryStore, Store};

#[tokio::test]
async fn a_write_behind_a_slow_merge_of_its_key_waits_for_it() {
    // The first merge waits for the gate; every merge reports its start.
    let gate = Arc::new(Notify::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let (started, mut merges) = mpsc::unbounded_channel();
    let hook_gate = gate.clone();
    let store = Arc::new(HookedStore::new(
        MemoryStore::new(),
        Arc::new(move |call, phase| {
            let (gate, calls, started) = (hook_gate.clone(), calls.clone(), started.clone());
            Box::pin(async move {
                if call == StoreCall::ApplyRemote && phase == Phase::Before {
                    let _ = started.send(());
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        gate.notified().await;
                    }
                }
            })
        }),
    ));
    let server = TestServer::start(ServerConfig::new(StoreConfig::Store(
        store.clone() as Arc<dyn Store>
    )))
    .await;
    let mut watcher = server.connect().await;
    watcher.subscribe("q", "m").await;
    let (mut newer, mut older) = (server.connect().await, server.connect().await);

    newer
        .send(&batch(vec![put("n", "m", "k", "newer", ts(2, "a"))]))
        .await;
    merges.recv().await.unwrap();
    older
        .send(&batch(vec![put("o", "m", "k", "older", ts(1, "b"))]))
        .await;
    older.roundtrip().await;
    // The older write's merge must not start while the newer one's runs.
    let overtaking = tokio::time::timeout(Duration::from_millis(300), merges.recv()).await;
    assert!(overtaking.is_err(), "a merge of the same key started");
    gate.notify_one();
    assert!(matches!(newer.recv().await, Message::OpAck(_)));
    assert!(matches!(
        older.recv_until(|m| matches!(m, Message::OpAck(_))).await,
        Message::OpAck(_)
    ));

    // The tree holds the newer record, as the store does.
    let mut want = MerkleTree::new();
    want.update("k", &ts(2, "a"));
    older
        .send(&Message::SyncInit(SyncInit {
            map_name: "m".into(),
            root_hash: None,
            bucket_hashes: None,
            last_sync_timestamp: None,
        }))
        .await;
    match older
        .recv_until(|m| matches!(m, Message::SyncRespRoot(_)))
        .await
    {
        Message::SyncRespRoot(root) => assert_eq!(root.root_hash, want.root_hash()),
        _ => unreachable!(),
    }
    // The subscriber heard of the newer write only.
    let event = watcher
        .recv_until(|m| matches!(m, Message::ServerEvent(_) | Message::ServerBatchEvent(_)))
        .await;
    assert!(format!("{event:?}").contains("newer"), "{event:?}");
    watcher.expect_no_event(200).await;
    server.stop().await.unwrap();
}
