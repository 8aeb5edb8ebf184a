//! The one local write path under concurrency: key locks and `clear`
//! through the same path, on a multi-thread runtime over a store that
//! yields inside every call, so writers interleave.

// Test helpers unwrap: a panic with the error is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use tokio::sync::mpsc;
use topgun_client::{Origin, TopGunClient};
use topgun_core::Timestamp;
use topgun_storage::{
    AppliedChange, ClearOutcome, LocalWrite, MemoryStore, OpId, OpLogEntry, StorageError, Store,
    StoreRecord, StoreStats,
};

/// A `MemoryStore` whose writes and reads yield first, so concurrent
/// callers interleave.
#[derive(Debug, Default)]
struct YieldingStore {
    inner: MemoryStore,
}

#[async_trait::async_trait]
impl Store for YieldingStore {
    async fn write_local(&self, write: LocalWrite) -> Result<OpId, StorageError> {
        tokio::task::yield_now().await;
        self.inner.write_local(write).await
    }
    async fn get(&self, map: &str, key: &str) -> Result<Option<StoreRecord>, StorageError> {
        tokio::task::yield_now().await;
        self.inner.get(map, key).await
    }
    async fn scan(
        &self,
        map: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        tokio::task::yield_now().await;
        self.inner.scan(map, after, limit).await
    }
    async fn dirty_records(
        &self,
        map: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.inner.dirty_records(map, after, limit).await
    }
    async fn pending_ops(
        &self,
        after: Option<OpId>,
        limit: usize,
    ) -> Result<Vec<OpLogEntry>, StorageError> {
        self.inner.pending_ops(after, limit).await
    }
    async fn mark_synced(&self, ids: &[OpId]) -> Result<u64, StorageError> {
        self.inner.mark_synced(ids).await
    }
    async fn drop_synced_ops(&self) -> Result<u64, StorageError> {
        self.inner.drop_synced_ops().await
    }
    async fn apply_remote(
        &self,
        records: Vec<StoreRecord>,
    ) -> Result<Vec<AppliedChange>, StorageError> {
        self.inner.apply_remote(records).await
    }
    async fn clear_map(&self, map: &str, ts: Timestamp) -> Result<ClearOutcome, StorageError> {
        tokio::task::yield_now().await;
        self.inner.clear_map(map, ts).await
    }
    async fn prune_clean(&self, map: &str, keys: &[String]) -> Result<Vec<String>, StorageError> {
        self.inner.prune_clean(map, keys).await
    }
    async fn map_names(&self) -> Result<Vec<String>, StorageError> {
        self.inner.map_names().await
    }
    async fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.meta_get(key).await
    }
    async fn meta_put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        self.inner.meta_put(key, value).await
    }
    async fn stats(&self) -> Result<StoreStats, StorageError> {
        self.inner.stats().await
    }
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
    let store = Arc::new(YieldingStore::default());
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
        let ops = store.inner.pending_ops(None, 10_000).await.unwrap();
        let newest = ops
            .iter()
            .max_by(|a, b| a.timestamp.cmp(&b.timestamp))
            .unwrap();
        let record = store.inner.get("m", "hot").await.unwrap().unwrap();
        assert_eq!(record.timestamp, newest.timestamp, "round {round}");
        assert_eq!(record.value, newest.value, "round {round}");
    }
}

#[tokio::test]
async fn clear_publishes_old_values_and_waits_for_writes_in_progress() {
    let store = Arc::new(YieldingStore::default());
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
        let stored = store.inner.get("m", &key).await.unwrap().unwrap();
        let cached = m.get(&key).await.unwrap();
        assert_eq!(
            stored.value.is_some(),
            cached.is_some(),
            "round {round}: cache and store agree"
        );
    }
}
