//! [`HookedStore`]: a [`Store`] that runs a test's hook around every call
//! it forwards, to make interleavings happen on purpose (a scan held open
//! while a write lands, a slow commit, a yield in every call).

use crate::error::StorageError;
use crate::model::{
    AppliedChange, ClearOutcome, KeyStamp, LocalWrite, OpId, OpLogEntry, PruneSums, StoreRecord,
    StoreStats,
};
use crate::store::Store;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use topgun_core::Timestamp;

/// Which [`Store`] method a [`HookedStore`] is forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(missing_docs)] // Each variant is the method of the same name.
pub enum StoreCall {
    WriteLocal,
    Get,
    GetMany,
    Scan,
    ScanStamps,
    DirtyRecords,
    PendingOps,
    MarkSynced,
    Acknowledge,
    DropSyncedOps,
    ApplyRemote,
    ApplyRemoteRelaxed,
    ClearMap,
    PruneClean,
    MapNames,
    MetaGet,
    MetaPut,
    Stats,
    MerkleLeaves,
    IsPruned,
}

/// Whether the hook runs before the inner store's call or after it
/// returned (before its result reaches the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The inner store has not been called yet.
    Before,
    /// The inner store answered; the caller has not seen the answer yet.
    After,
}

/// The future a hook returns (`Send` on native targets).
#[cfg(not(target_family = "wasm"))]
pub type HookFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
/// The future a hook returns (`Send` on native targets).
#[cfg(target_family = "wasm")]
pub type HookFuture = Pin<Box<dyn Future<Output = ()>>>;

/// A hook: awaited before and after every forwarded call.
#[cfg(not(target_family = "wasm"))]
pub type Hook = Arc<dyn Fn(StoreCall, Phase) -> HookFuture + Send + Sync>;
/// A hook: awaited before and after every forwarded call.
#[cfg(target_family = "wasm")]
pub type Hook = Arc<dyn Fn(StoreCall, Phase) -> HookFuture>;

/// Decides whether a local write is refused, and with which error,
/// before it reaches the inner store (a full disk, say).
#[cfg(not(target_family = "wasm"))]
pub type WriteGate = Arc<dyn Fn(&LocalWrite) -> Option<StorageError> + Send + Sync>;
/// Decides whether a local write is refused, and with which error,
/// before it reaches the inner store (a full disk, say).
#[cfg(target_family = "wasm")]
pub type WriteGate = Arc<dyn Fn(&LocalWrite) -> Option<StorageError>>;

/// Forwards every [`Store`] method (the provided ones too) to `inner`,
/// awaiting the hook before and after each.
pub struct HookedStore<S> {
    inner: S,
    hook: Hook,
    gate: Option<WriteGate>,
}

impl<S> HookedStore<S> {
    /// Wraps `inner`; `hook` decides what happens around each call.
    pub fn new(inner: S, hook: Hook) -> Self {
        Self {
            inner,
            hook,
            gate: None,
        }
    }

    /// Refuses the local writes `gate` returns an error for (after the
    /// hook's `Before`), without calling the inner store.
    #[must_use]
    pub fn with_write_gate(mut self, gate: WriteGate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The wrapped store, to check its contents without running the hook.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn around<T>(&self, call: StoreCall, f: impl Future<Output = T>) -> T {
        (self.hook)(call, Phase::Before).await;
        let out = f.await;
        (self.hook)(call, Phase::After).await;
        out
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for HookedStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookedStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
impl<S: Store> Store for HookedStore<S> {
    async fn write_local(&self, write: LocalWrite) -> Result<OpId, StorageError> {
        let refused = self.gate.as_ref().and_then(|gate| gate(&write));
        let call = async {
            match refused {
                Some(error) => Err(error),
                None => self.inner.write_local(write).await,
            }
        };
        self.around(StoreCall::WriteLocal, call).await
    }
    async fn write_local_checked(
        &self,
        write: LocalWrite,
    ) -> Result<(OpId, Option<StoreRecord>), StorageError> {
        let refused = self.gate.as_ref().and_then(|gate| gate(&write));
        let call = async {
            match refused {
                Some(error) => Err(error),
                None => self.inner.write_local_checked(write).await,
            }
        };
        self.around(StoreCall::WriteLocal, call).await
    }
    async fn get(&self, map_name: &str, key: &str) -> Result<Option<StoreRecord>, StorageError> {
        self.around(StoreCall::Get, self.inner.get(map_name, key))
            .await
    }
    async fn get_many(
        &self,
        map_name: &str,
        keys: &[String],
    ) -> Result<Vec<Option<StoreRecord>>, StorageError> {
        self.around(StoreCall::GetMany, self.inner.get_many(map_name, keys))
            .await
    }
    async fn scan(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.around(StoreCall::Scan, self.inner.scan(map_name, after, limit))
            .await
    }
    async fn scan_stamps(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        let call = self.inner.scan_stamps(map_name, after, limit);
        self.around(StoreCall::ScanStamps, call).await
    }
    /// Hooked as [`StoreCall::Scan`].
    async fn scan_in_store_order(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        let call = self.inner.scan_in_store_order(map_name, after, limit);
        self.around(StoreCall::Scan, call).await
    }
    /// Hooked as [`StoreCall::ScanStamps`].
    async fn scan_stamps_in_store_order(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        let call = self
            .inner
            .scan_stamps_in_store_order(map_name, after, limit);
        self.around(StoreCall::ScanStamps, call).await
    }
    async fn dirty_records(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        let call = self.inner.dirty_records(map_name, after, limit);
        self.around(StoreCall::DirtyRecords, call).await
    }
    async fn pending_ops(
        &self,
        after: Option<OpId>,
        limit: usize,
    ) -> Result<Vec<OpLogEntry>, StorageError> {
        self.around(StoreCall::PendingOps, self.inner.pending_ops(after, limit))
            .await
    }
    async fn mark_synced(&self, ids: &[OpId]) -> Result<u64, StorageError> {
        self.around(StoreCall::MarkSynced, self.inner.mark_synced(ids))
            .await
    }
    async fn acknowledge(&self, ids: &[OpId]) -> Result<u64, StorageError> {
        self.around(StoreCall::Acknowledge, self.inner.acknowledge(ids))
            .await
    }
    async fn drop_synced_ops(&self) -> Result<u64, StorageError> {
        self.around(StoreCall::DropSyncedOps, self.inner.drop_synced_ops())
            .await
    }
    async fn apply_remote(
        &self,
        records: Vec<StoreRecord>,
    ) -> Result<Vec<AppliedChange>, StorageError> {
        self.around(StoreCall::ApplyRemote, self.inner.apply_remote(records))
            .await
    }
    async fn apply_remote_relaxed(
        &self,
        records: Vec<StoreRecord>,
    ) -> Result<Vec<AppliedChange>, StorageError> {
        let call = self.inner.apply_remote_relaxed(records);
        self.around(StoreCall::ApplyRemoteRelaxed, call).await
    }
    async fn clear_map(
        &self,
        map_name: &str,
        timestamp: Timestamp,
    ) -> Result<ClearOutcome, StorageError> {
        let call = self.inner.clear_map(map_name, timestamp);
        self.around(StoreCall::ClearMap, call).await
    }
    async fn prune_clean(
        &self,
        map_name: &str,
        keys: &[String],
        sums: PruneSums,
    ) -> Result<Vec<String>, StorageError> {
        let call = self.inner.prune_clean(map_name, keys, sums);
        self.around(StoreCall::PruneClean, call).await
    }
    async fn is_pruned(&self, map_name: &str, key: &str) -> Result<bool, StorageError> {
        self.around(StoreCall::IsPruned, self.inner.is_pruned(map_name, key))
            .await
    }
    async fn map_names(&self) -> Result<Vec<String>, StorageError> {
        self.around(StoreCall::MapNames, self.inner.map_names())
            .await
    }
    async fn merkle_leaves(&self, map_name: &str) -> Result<Vec<u32>, StorageError> {
        self.around(StoreCall::MerkleLeaves, self.inner.merkle_leaves(map_name))
            .await
    }
    async fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.around(StoreCall::MetaGet, self.inner.meta_get(key))
            .await
    }
    async fn meta_put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        self.around(StoreCall::MetaPut, self.inner.meta_put(key, value))
            .await
    }
    async fn stats(&self) -> Result<StoreStats, StorageError> {
        self.around(StoreCall::Stats, self.inner.stats()).await
    }
}
