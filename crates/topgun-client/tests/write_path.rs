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

#[tokio::test]
async fn put_many_answers_each_entry_and_a_repeated_key_ends_with_its_last_value() {
    let store = yielding_store();
    let client = client_on(store.clone()).await;
    let m = client.get_map::<u32>("m").unwrap();
    m.put("b", 1).await.unwrap();
    let mut events = m.subscribe();
    let answers = m
        .put_many([
            ("a".to_owned(), 1),
            ("b".to_owned(), 2),
            (String::new(), 3),
            ("a".to_owned(), 4),
            ("c".to_owned(), 5),
        ])
        .await;
    let ok: Vec<bool> = answers.iter().map(Result::is_ok).collect();
    assert_eq!(ok, [true, true, false, true, true], "{answers:?}");
    assert!(matches!(
        answers[2],
        Err(topgun_client::ClientError::InvalidName { .. })
    ));
    for (key, value) in [("a", 4), ("b", 2), ("c", 5)] {
        assert_eq!(m.get(key).await.unwrap(), Some(value), "{key}");
        let stored = store.inner().get("m", key).await.unwrap().unwrap();
        assert_eq!(stored.value, Some(rmp_serde::to_vec(&value).unwrap()));
    }
    assert_eq!(client.pending_ops().await.unwrap(), 5, "one op per write");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = events.recv().await.unwrap();
        seen.push((e.key, e.old_value, e.new_value));
    }
    assert_eq!(
        seen,
        [
            ("a".into(), None, Some(1)),
            ("b".into(), Some(1), Some(2)),
            ("c".into(), None, Some(5)),
            ("a".into(), Some(1), Some(4)),
        ],
        "each write published with the value it replaced"
    );
}

#[tokio::test]
async fn put_many_stamps_again_after_a_newer_stored_record() {
    // A record stamped ahead of this client's clock, stored before the
    // client started (so not in its working set).
    let store = yielding_store();
    let ahead = topgun_core::Timestamp::new(now_millis() + 5_000, 0, "other");
    store
        .inner()
        .apply_remote(vec![topgun_storage::StoreRecord {
            map_name: "m".into(),
            key: "k".into(),
            value: Some(rmp_serde::to_vec(&1u32).unwrap()),
            timestamp: ahead.clone(),
            ttl_ms: None,
            dirty: false,
        }])
        .await
        .unwrap();
    let client = client_on(store.clone()).await;
    let m = client.get_map::<u32>("m").unwrap();
    let answers = m
        .put_many([("k".to_owned(), 2), ("new".to_owned(), 3)])
        .await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    let stored = store.inner().get("m", "k").await.unwrap().unwrap();
    assert!(stored.timestamp > ahead, "stamped after the stored record");
    assert_eq!(m.get("k").await.unwrap(), Some(2));
    assert_eq!(m.get("new").await.unwrap(), Some(3));
}

fn now_millis() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    u64::try_from(since.unwrap().as_millis()).unwrap()
}
