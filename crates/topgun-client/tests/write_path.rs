//! The one local write path under concurrency: key locks and `clear`
//! through the same path, on a multi-thread runtime over a store that
//! yields inside every call, so writers interleave.

// Test helpers unwrap: a panic with the error is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use tokio::sync::mpsc;
use topgun_client::{Origin, TopGunClient};
use topgun_storage::hooked::{HookedStore, Phase, StoreCall};
use topgun_storage::{MemoryStore, Store};

type YieldingStore = HookedStore<MemoryStore>;

/// A `MemoryStore` whose writes and reads yield first, so concurrent
/// callers interleave.
fn yielding_store() -> Arc<YieldingStore> {
    Arc::new(HookedStore::new(
        MemoryStore::new(),
        Arc::new(|call, phase| {
            Box::pin(async move {
                let yields = matches!(
                    call,
                    StoreCall::WriteLocal
                        | StoreCall::Get
                        | StoreCall::Scan
                        | StoreCall::ScanStamps
                        | StoreCall::ClearMap
                );
                if yields && phase == Phase::Before {
                    tokio::task::yield_now().await;
                }
            })
        }),
    ))
}

async fn client_on(store: Arc<YieldingStore>) -> TopGunClient {
    TopGunClient::builder()
        .node_id("node")
        .store(store)
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_to_one_key_keep_timestamp_order() {
    let store = yielding_store();
    let client = client_on(store.clone()).await;
    let m = client.get_map::<u32>("m").unwrap();
    for round in 0..20 {
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let m = m.clone();
                tokio::spawn(async move { m.put("hot", round * 100 + i).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // Whatever the interleaving, the stored record is the newest op's.
        let ops = store.inner().pending_ops(None, 10_000).await.unwrap();
        let newest = ops
            .iter()
            .max_by(|a, b| a.timestamp.cmp(&b.timestamp))
            .unwrap();
        let record = store.inner().get("m", "hot").await.unwrap().unwrap();
        assert_eq!(record.timestamp, newest.timestamp, "round {round}");
        assert_eq!(record.value, newest.value, "round {round}");
    }
}

#[tokio::test]
async fn clear_publishes_old_values_and_waits_for_writes_in_progress() {
    let store = yielding_store();
    let client = client_on(store.clone()).await;
    let m = client.get_map::<String>("m").unwrap();
    m.put("a", "A".into()).await.unwrap();
    m.put("b", "B".into()).await.unwrap();
    let mut events = m.subscribe();
    m.clear().await.unwrap();
    let mut removed = Vec::new();
    for _ in 0..2 {
        let e = events.recv().await.unwrap();
        assert_eq!(e.new_value, None);
        assert_eq!(e.origin, Origin::Local);
        removed.push((e.key, e.old_value));
    }
    removed.sort();
    assert_eq!(
        removed,
        [
            ("a".into(), Some("A".into())),
            ("b".into(), Some("B".into()))
        ],
        "each removal carries the value it removed"
    );
    // A put racing a clear lands wholly before or after it: never a
    // record the clear removed without a removal event, never a value
    // cached over a tombstone.
    let (tx, mut rx) = mpsc::unbounded_channel();
    for round in 0..20 {
        let key = format!("k{round}");
        let (m1, m2) = (m.clone(), m.clone());
        let k = key.clone();
        let tx = tx.clone();
        let put = tokio::spawn(async move {
            m1.put(&k, "v".into()).await.unwrap();
            tx.send(()).unwrap();
        });
        let clear = tokio::spawn(async move { m2.clear().await.unwrap() });
        put.await.unwrap();
        clear.await.unwrap();
        rx.recv().await.unwrap();
        let stored = store.inner().get("m", &key).await.unwrap().unwrap();
        let cached = m.get(&key).await.unwrap();
        assert_eq!(
            stored.value.is_some(),
            cached.is_some(),
            "round {round}: cache and store agree"
        );
    }
}
