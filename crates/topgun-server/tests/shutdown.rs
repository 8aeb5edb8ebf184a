//! Graceful shutdown: a batch in flight when the signal comes is applied
//! and acknowledged before the close frame.

#![allow(clippy::unwrap_used)]

mod common;

use async_trait::async_trait;
use common::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use topgun_core::wire::{Message, OpId};
use topgun_core::Timestamp;
use topgun_server::{ServerConfig, StoreConfig};
use topgun_storage::{
    AppliedChange, ClearOutcome, LocalWrite, MemoryStore, OpLogEntry, StorageError, Store,
    StoreRecord, StoreStats,
};

/// A `MemoryStore` whose `apply_remote` reports that it started and then
/// takes 300 ms.
#[derive(Debug)]
struct SlowStore {
    inner: MemoryStore,
    started: mpsc::UnboundedSender<()>,
}

#[async_trait]
impl Store for SlowStore {
    async fn write_local(&self, write: LocalWrite) -> Result<u64, StorageError> {
        self.inner.write_local(write).await
    }
    async fn get(&self, map_name: &str, key: &str) -> Result<Option<StoreRecord>, StorageError> {
        self.inner.get(map_name, key).await
    }
    async fn scan(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.inner.scan(map_name, after, limit).await
    }
    async fn dirty_records(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.inner.dirty_records(map_name, after, limit).await
    }
    async fn pending_ops(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<OpLogEntry>, StorageError> {
        self.inner.pending_ops(after, limit).await
    }
    async fn mark_synced(&self, ids: &[u64]) -> Result<u64, StorageError> {
        self.inner.mark_synced(ids).await
    }
    async fn drop_synced_ops(&self) -> Result<u64, StorageError> {
        self.inner.drop_synced_ops().await
    }
    async fn apply_remote(
        &self,
        records: Vec<StoreRecord>,
    ) -> Result<Vec<AppliedChange>, StorageError> {
        let _ = self.started.send(());
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.inner.apply_remote(records).await
    }
    async fn clear_map(
        &self,
        map_name: &str,
        timestamp: Timestamp,
    ) -> Result<ClearOutcome, StorageError> {
        self.inner.clear_map(map_name, timestamp).await
    }
    async fn prune_clean(
        &self,
        map_name: &str,
        keys: &[String],
    ) -> Result<Vec<String>, StorageError> {
        self.inner.prune_clean(map_name, keys).await
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

#[tokio::test]
async fn graceful_shutdown_acks_an_in_flight_batch_then_closes() {
    let (started, mut applying) = mpsc::unbounded_channel();
    let store = Arc::new(SlowStore {
        inner: MemoryStore::new(),
        started,
    });
    let mut server = TestServer::start(ServerConfig::new(StoreConfig::Store(
        store.clone() as Arc<dyn Store>
    )))
    .await;
    let mut c = server.connect().await;
    c.send(&batch(vec![put("in-flight", "m", "k", 1, ts(1, "c"))]))
        .await;
    applying.recv().await.unwrap();
    server.signal_stop();
    match c.recv().await {
        Message::OpAck(ack) => assert_eq!(ack.last_id, OpId::from("in-flight")),
        other => panic!("{other:?}"),
    }
    match c.next().await {
        Received::Closed(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1001);
            assert_eq!(frame.reason.as_str(), "server shutting down");
        }
        other => panic!("{other:?}"),
    }
    let addr = server.addr;
    server.stop().await.unwrap();
    assert!(store.get("m", "k").await.unwrap().is_some());
    // The listener is closed.
    assert!(tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .is_err());
}
