//! The client's local behaviour, on the in-memory store and on a real redb
//! file.
// Test helpers unwrap: a panic with the error is the failure report.
#![allow(clippy::unwrap_used)]

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use topgun_client::{
    ClientError, ClientEvent, ConnectionState, Origin, SyncState, TopGunClient, WorkingSetLimits,
};
use topgun_core::hlc::ManualClock;
use topgun_storage::{MemoryStore, Store};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    name: String,
    age: u32,
}

fn user(name: &str, age: u32) -> User {
    User {
        name: name.into(),
        age,
    }
}

async fn memory_client() -> TopGunClient {
    TopGunClient::builder()
        .node_id("test-node")
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn put_get_remove_round_trip_and_record_ops() {
    let client = memory_client().await;
    assert_eq!(client.state(), ConnectionState::Offline);
    let users = client.get_map::<User>("users").unwrap();
    assert_eq!(users.get("alice").await.unwrap(), None);
    let op1 = users.put("alice", user("Alice", 30)).await.unwrap();
    let op2 = users.put("bob", user("Bob", 25)).await.unwrap();
    assert!(op2 > op1);
    assert_eq!(users.get("alice").await.unwrap(), Some(user("Alice", 30)));
    assert_eq!(client.pending_ops().await.unwrap(), 2);
    assert_eq!(
        users.sync_state("alice").await.unwrap(),
        Some(SyncState::Pending)
    );
    assert_eq!(users.sync_state("nobody").await.unwrap(), None);

    users.remove("alice").await.unwrap();
    assert_eq!(users.get("alice").await.unwrap(), None);
    assert_eq!(client.pending_ops().await.unwrap(), 3);
    let record = client.store().get("users", "alice").await.unwrap().unwrap();
    assert!(
        record.is_deleted() && record.dirty,
        "a remove is a dirty tombstone"
    );

    let all = users.entries().collect().await.unwrap();
    assert_eq!(all, vec![("bob".to_owned(), user("Bob", 25))]);
    assert_eq!(users.keys().await.unwrap(), vec!["bob".to_owned()]);
}

#[tokio::test]
async fn every_op_is_in_the_log_with_increasing_timestamps() {
    let client = memory_client().await;
    let m = client.get_json_map("m").unwrap();
    m.put("k", serde_json::json!(1)).await.unwrap();
    m.put("k", serde_json::json!(2)).await.unwrap();
    m.remove("k").await.unwrap();
    let ops = client.store().pending_ops(None, 10).await.unwrap();
    assert_eq!(ops.len(), 3);
    assert!(ops
        .windows(2)
        .all(|w| w[0].timestamp < w[1].timestamp && w[0].id < w[1].id));
    assert_eq!(ops[2].op_type, topgun_storage::OpType::Remove);
    assert!(ops.iter().all(|o| o.timestamp.node_id == "test-node"));
}

#[tokio::test]
async fn clear_tombstones_every_live_key_at_one_timestamp() {
    let client = memory_client().await;
    let m = client.get_map::<u32>("m").unwrap();
    for i in 0..10 {
        m.put(&format!("k{i}"), i).await.unwrap();
    }
    let mut events = m.subscribe();
    m.clear().await.unwrap();
    assert!(m.entries().collect().await.unwrap().is_empty());
    for i in 0..10 {
        assert_eq!(m.get(&format!("k{i}")).await.unwrap(), None);
    }
    let mut stamps = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let e = events.recv().await.unwrap();
        assert_eq!(e.new_value, None);
        stamps.insert(e.timestamp);
    }
    assert_eq!(stamps.len(), 1, "one timestamp for the whole clear");
    // The map is usable afterwards.
    m.put("k1", 99).await.unwrap();
    assert_eq!(m.get("k1").await.unwrap(), Some(99));
}

#[tokio::test]
async fn ttl_expires_values() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let client = TopGunClient::builder()
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    let m = client.get_map::<String>("cache").unwrap();
    m.put_with_ttl("session", "token".into(), 500)
        .await
        .unwrap();
    assert_eq!(m.get("session").await.unwrap().as_deref(), Some("token"));
    clock.advance(500);
    assert!(
        m.get("session").await.unwrap().is_some(),
        "millis + ttl == now is still live"
    );
    clock.advance(1);
    assert_eq!(m.get("session").await.unwrap(), None);
    assert!(m.keys().await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_input_is_a_clear_error_and_writes_nothing() {
    struct Unserializable;
    impl Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("this value refuses to serialise"))
        }
    }
    impl<'de> Deserialize<'de> for Unserializable {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Ok(Unserializable)
        }
    }
    let client = memory_client().await;
    assert!(matches!(
        client.get_json_map(""),
        Err(ClientError::InvalidName { .. })
    ));
    let long = "x".repeat(2000);
    assert!(matches!(
        client.get_json_map(&long),
        Err(ClientError::InvalidName { .. })
    ));
    let m = client.get_json_map("m").unwrap();
    let err = m.put("", serde_json::json!(1)).await.unwrap_err();
    assert!(err.to_string().contains("must not be empty"), "{err}");
    let bad = client.get_map::<Unserializable>("m").unwrap();
    let err = bad.put("k", Unserializable).await.unwrap_err();
    assert!(matches!(err, ClientError::Encode { .. }), "{err}");
    assert!(err.to_string().contains("refuses"), "{err}");
    let huge = "x".repeat(topgun_client::MAX_VALUE_LEN + 1);
    let err = m.put("big", serde_json::json!(huge)).await.unwrap_err();
    assert!(matches!(err, ClientError::ValueTooLarge { .. }), "{err}");
    assert_eq!(
        client.pending_ops().await.unwrap(),
        0,
        "nothing half-written"
    );
    assert_eq!(client.store_stats().await.unwrap().records, 0);

    // A map read with the wrong type says so.
    m.put("k", serde_json::json!("text")).await.unwrap();
    let numbers = client.get_map::<u64>("m").unwrap();
    assert!(matches!(
        numbers.get("k").await,
        Err(ClientError::Decode { .. })
    ));
}

#[tokio::test]
async fn subscribers_see_local_changes_with_old_and_new_values() {
    let client = memory_client().await;
    let m = client.get_map::<u32>("m").unwrap();
    let mut sub = m.subscribe();
    m.put("a", 1).await.unwrap();
    m.put("a", 2).await.unwrap();
    m.remove("a").await.unwrap();
    let e1 = sub.recv().await.unwrap();
    assert_eq!(
        (e1.key.as_str(), e1.old_value, e1.new_value, e1.origin),
        ("a", None, Some(1), Origin::Local)
    );
    let e2 = sub.recv().await.unwrap();
    assert_eq!((e2.old_value, e2.new_value), (Some(1), Some(2)));
    let e3 = sub.recv().await.unwrap();
    assert_eq!((e3.old_value, e3.new_value), (Some(2), None));
    assert!(e1.timestamp < e2.timestamp && e2.timestamp < e3.timestamp);
}

#[tokio::test]
async fn a_slow_subscriber_never_blocks_writers() {
    let client = memory_client().await;
    let m = client.get_map::<u32>("m").unwrap();
    let mut slow = m.subscribe();
    let n = topgun_client::events::EVENT_BUFFER as u32 + 100;
    let writes = async {
        for i in 0..n {
            m.put("k", i).await.unwrap();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), writes)
        .await
        .expect("writers were not blocked");
    match slow.recv().await {
        Err(topgun_client::events::RecvError::Lagged(missed)) => assert_eq!(missed, 100),
        other => panic!("expected a lag report, got {other:?}"),
    }
    // Then it continues with the oldest event still buffered.
    assert_eq!(slow.recv().await.unwrap().new_value, Some(100));
}

#[tokio::test]
async fn concurrent_writes_to_one_key_keep_timestamp_order() {
    let client = memory_client().await;
    let m = client.get_map::<u32>("m").unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let m = m.clone();
            tokio::spawn(async move { m.put("hot", i).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // Whatever the interleaving, the stored record is the newest op's.
    let ops = client.store().pending_ops(None, 100).await.unwrap();
    let newest = ops
        .iter()
        .max_by(|a, b| a.timestamp.cmp(&b.timestamp))
        .unwrap();
    let record = client.store().get("m", "hot").await.unwrap().unwrap();
    assert_eq!(record.timestamp, newest.timestamp);
    assert_eq!(record.value, newest.value);
}

#[tokio::test]
async fn working_set_stays_bounded_and_misses_refetch() {
    let client = TopGunClient::builder()
        .working_set(WorkingSetLimits {
            max_entries: 1_000,
            max_bytes: usize::MAX,
        })
        .build()
        .await
        .unwrap();
    let m = client.get_map::<u64>("big").unwrap();
    let mut max_seen = 0;
    for i in 0..100_000u64 {
        m.put(&format!("key-{i:06}"), i * 7).await.unwrap();
        if i % 1000 == 0 {
            max_seen = max_seen.max(client.working_set_stats().entries);
        }
    }
    for i in 0..100_000u64 {
        assert_eq!(m.get(&format!("key-{i:06}")).await.unwrap(), Some(i * 7));
        if i % 1000 == 0 {
            max_seen = max_seen.max(client.working_set_stats().entries);
        }
    }
    let stats = client.working_set_stats();
    assert!(max_seen <= 1_000, "cache grew to {max_seen}");
    assert!(stats.entries <= 1_000);
    assert!(stats.evictions >= 99_000, "{stats:?}");
    assert!(
        stats.misses >= 99_000,
        "reads of evicted keys went to the store: {stats:?}"
    );
    // A hot key is served from RAM.
    let hits = stats.hits;
    m.get("key-099999").await.unwrap();
    assert_eq!(client.working_set_stats().hits, hits + 1);
}

#[tokio::test]
async fn get_many_answers_as_get_does_for_cached_evicted_and_absent_keys() {
    let client = TopGunClient::builder()
        .working_set(WorkingSetLimits {
            max_entries: 10,
            max_bytes: usize::MAX,
        })
        .build()
        .await
        .unwrap();
    let m = client.get_map::<u64>("m").unwrap();
    for i in 0..50u64 {
        m.put(&format!("k{i:02}"), i).await.unwrap();
    }
    m.remove("k07").await.unwrap();
    let keys: Vec<String> = ["k49", "k00", "absent", "k07", "k25", "k49"]
        .map(String::from)
        .to_vec();
    let misses = client.working_set_stats().misses;
    let many = m.get_many(&keys).await.unwrap();
    assert_eq!(many, [Some(49), Some(0), None, None, Some(25), Some(49)]);
    let mut one_by_one = Vec::new();
    for key in &keys {
        one_by_one.push(m.get(key).await.unwrap());
    }
    assert_eq!(many, one_by_one);
    assert!(
        client.working_set_stats().misses > misses,
        "k00 was read from the store"
    );
    assert!(matches!(
        m.get_many(&[String::new()]).await,
        Err(ClientError::InvalidName { .. })
    ));
}

#[tokio::test]
async fn node_id_is_random_and_persisted_in_the_store() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = TopGunClient::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let id = a.node_id().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    drop(a);
    let b = TopGunClient::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    assert_eq!(b.node_id(), id);
    let other = TopGunClient::builder().build().await.unwrap();
    assert_ne!(other.node_id(), id);
    assert!(matches!(
        TopGunClient::builder().node_id("a:b").build().await,
        Err(ClientError::Clock(_))
    ));
}

#[tokio::test]
async fn warm_up_loads_records_into_ram() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = TopGunClient::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let m = a.get_map::<u32>("m").unwrap();
    for i in 0..50 {
        m.put(&format!("k{i:02}"), i).await.unwrap();
    }
    let b = TopGunClient::builder()
        .store(store)
        .warm_up(20)
        .build()
        .await
        .unwrap();
    assert_eq!(b.working_set_stats().entries, 20);
    let mb = b.get_map::<u32>("m").unwrap();
    mb.get("k00").await.unwrap();
    assert_eq!(b.working_set_stats().hits, 1);
}

#[tokio::test]
async fn close_makes_later_calls_fail_clearly() {
    let client = memory_client().await;
    let m = client.get_map::<u32>("m").unwrap();
    m.put("a", 1).await.unwrap();
    client.close().await;
    assert!(matches!(m.put("a", 2).await, Err(ClientError::Closed)));
    assert!(matches!(m.get("a").await, Err(ClientError::Closed)));
}

#[tokio::test]
async fn quota_prunes_synced_records_and_never_dirty_ones() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let client = TopGunClient::builder()
        .store(store.clone())
        .quota_bytes(60_000)
        .build()
        .await
        .unwrap();
    let mut quota_events = client.events();
    let m = client.get_map::<String>("m").unwrap();
    let value = "v".repeat(400);
    // A write costs ~1 KB (the record and its op both hold the value):
    // 40 writes stay under budget.
    for i in 0..40 {
        m.put(&format!("old-{i:03}"), value.clone()).await.unwrap();
    }
    // Pretend a server acknowledged them.
    let ids: Vec<u64> = store
        .pending_ops(None, 1000)
        .await
        .unwrap()
        .iter()
        .map(|o| o.id)
        .collect();
    store.mark_synced(&ids).await.unwrap();
    store.drop_synced_ops().await.unwrap();
    // New, unsynced writes push the store over budget: old clean records go.
    for i in 0..50 {
        m.put(&format!("new-{i:03}"), value.clone()).await.unwrap();
    }
    let stats = client.store_stats().await.unwrap();
    assert!(stats.bytes < 60_000, "{stats:?}");
    // First the early warning (at 80% of the budget), then the pruning.
    match quota_events.try_recv() {
        Ok(ClientEvent::QuotaWarning { used, budget }) => {
            assert_eq!(budget, 60_000);
            assert!(used >= 48_000, "{used}");
        }
        other => panic!("expected a quota warning, got {other:?}"),
    }
    match quota_events.try_recv() {
        Ok(ClientEvent::QuotaPruned { records, .. }) => assert!(records > 0),
        other => panic!("expected a quota event, got {other:?}"),
    }
    for i in 0..50 {
        assert_eq!(
            m.get(&format!("new-{i:03}")).await.unwrap().as_deref(),
            Some(value.as_str()),
            "dirty kept"
        );
    }
    // Only unsynced data left: keep writing until the quota refuses.
    let mut refused = None;
    for i in 0..200 {
        match m.put(&format!("more-{i:03}"), value.clone()).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (i, err) = refused.expect("the quota must refuse eventually");
    assert!(matches!(err, ClientError::QuotaExceeded { .. }), "{err}");
    assert_eq!(
        m.get(&format!("more-{i:03}")).await.unwrap(),
        None,
        "the refused write left nothing"
    );
    assert_eq!(
        store.pending_ops(None, 10_000).await.unwrap().len(),
        50 + i,
        "no pending op lost"
    );
}

/// A memory store whose local writes fail as full (a browser's
/// `QuotaExceededError`) while `full` is set; a prune (which frees room)
/// clears it when `prune_frees` is.
fn full_store(
    full: Arc<std::sync::atomic::AtomicBool>,
    prune_frees: bool,
) -> Arc<topgun_storage::hooked::HookedStore<MemoryStore>> {
    use std::sync::atomic::Ordering;
    use topgun_storage::hooked::{HookFuture, HookedStore, Phase, StoreCall};
    let emptied = full.clone();
    let hook = Arc::new(move |call, phase| {
        if prune_frees && call == StoreCall::PruneClean && phase == Phase::After {
            emptied.store(false, Ordering::SeqCst);
        }
        Box::pin(async {}) as HookFuture
    });
    let gate = Arc::new(move |_: &topgun_storage::LocalWrite| {
        full.load(Ordering::SeqCst)
            .then(|| topgun_storage::StorageError::Full {
                backend: "test",
                source: "QuotaExceededError".into(),
            })
    });
    Arc::new(HookedStore::new(MemoryStore::new(), hook).with_write_gate(gate))
}

/// A store that is full until synced records are pruned: the client
/// prunes and retries the write once; with nothing left to prune the
/// write fails and changes nothing.
#[tokio::test]
async fn a_full_store_prunes_synced_records_and_retries_the_write() {
    use std::sync::atomic::{AtomicBool, Ordering};

    let full = Arc::new(AtomicBool::new(false));
    let store = full_store(full.clone(), true);
    let client = TopGunClient::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let mut quota_events = client.events();
    let m = client.get_map::<String>("m").unwrap();
    for i in 0..20 {
        m.put(&format!("old-{i:02}"), "synced".to_owned())
            .await
            .unwrap();
    }
    let pending = store.inner().pending_ops(None, 100).await.unwrap();
    let ids: Vec<u64> = pending.iter().map(|o| o.id).collect();
    store.inner().acknowledge(&ids).await.unwrap();

    full.store(true, Ordering::SeqCst);
    m.put("new", "fits after pruning".to_owned()).await.unwrap();
    assert_eq!(
        m.get("new").await.unwrap().as_deref(),
        Some("fits after pruning")
    );
    // As with a budget: the warning, then the pruning.
    assert!(matches!(
        quota_events.try_recv(),
        Ok(ClientEvent::QuotaWarning { .. })
    ));
    match quota_events.try_recv() {
        Ok(ClientEvent::QuotaPruned { records, .. }) => assert!(records > 0),
        other => panic!("expected the pruning to be reported, got {other:?}"),
    }
    assert!(
        store.inner().stats().await.unwrap().records < 21,
        "synced records went"
    );

    // Nothing synced is left, and the store stays full.
    let full = Arc::new(AtomicBool::new(false));
    let store = full_store(full.clone(), false);
    let client = TopGunClient::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let m = client.get_map::<String>("m").unwrap();
    m.put("k", "kept".to_owned()).await.unwrap();
    full.store(true, Ordering::SeqCst);
    let refused = m.put("k", "refused".to_owned()).await;
    assert!(
        matches!(refused, Err(ClientError::QuotaExceeded { .. })),
        "{refused:?}"
    );
    assert_eq!(
        m.get("k").await.unwrap().as_deref(),
        Some("kept"),
        "nothing written"
    );
    assert_eq!(
        store.inner().pending_ops(None, 10).await.unwrap().len(),
        1,
        "no op lost or added"
    );
}

#[cfg(feature = "redb")]
#[tokio::test]
async fn data_and_node_id_survive_a_restart_on_redb() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.redb");
    let id;
    {
        let client = TopGunClient::builder()
            .redb_path(&path)
            .build()
            .await
            .unwrap();
        id = client.node_id().to_owned();
        let m = client.get_map::<User>("users").unwrap();
        m.put("alice", user("Alice", 30)).await.unwrap();
        m.put("bob", user("Bob", 40)).await.unwrap();
        m.remove("bob").await.unwrap();
        client.close().await;
    }
    let client = TopGunClient::builder()
        .redb_path(&path)
        .build()
        .await
        .unwrap();
    assert_eq!(client.node_id(), id);
    let m = client.get_map::<User>("users").unwrap();
    assert_eq!(m.get("alice").await.unwrap(), Some(user("Alice", 30)));
    assert_eq!(m.get("bob").await.unwrap(), None);
    assert_eq!(client.pending_ops().await.unwrap(), 3);
}
