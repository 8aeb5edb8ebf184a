//! [`DirStore`]: the store of a client on a shared data directory. In the
//! leader it is the redb file; in a follower, the leader's store reached
//! over the directory's socket. When leadership moves it switches, and
//! retries the calls that were in flight.

use super::link::Link;
use super::protocol::{execute, Call, Reply};
use crate::local::stamped_verdict;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use topgun_core::Timestamp;
use topgun_storage::{
    AppliedChange, ClearOutcome, KeyStamp, LocalWrite, OpId, OpLogEntry, PruneSums, StorageError,
    Store, StoreRecord, StoreStats,
};

/// How long a call waits for a new leader before it fails.
const ELECTION_WAIT: Duration = Duration::from_secs(30);

/// Where a [`DirStore`]'s calls go now.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// This process holds the file.
    Owner(Arc<dyn Store>),
    /// Another process holds it; calls go over this connection.
    Follower(Arc<Link>),
    /// Between leaders: calls wait.
    Electing,
    /// The client closed: calls fail.
    Closed,
}

/// A [`Store`] that follows the data directory's leadership.
#[derive(Debug)]
pub(crate) struct DirStore {
    backend: watch::Sender<Backend>,
}

impl DirStore {
    pub(crate) fn new() -> Self {
        Self {
            backend: watch::Sender::new(Backend::Electing),
        }
    }

    /// Switches to `backend`; after [`Backend::Closed`], nothing.
    pub(crate) fn set(&self, backend: Backend) {
        self.backend.send_if_modified(|current| {
            if matches!(current, Backend::Closed) {
                return false;
            }
            *current = backend;
            true
        });
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend.borrow().clone()
    }

    /// Runs `call` where the data is. A call whose connection to the leader
    /// broke waits for the next leader (at most [`ELECTION_WAIT`]) and runs
    /// again there: every call is safe to repeat — reads trivially, a write
    /// because it carries its stamp ([`stamped_verdict`]).
    async fn call(&self, call: Call) -> Result<Reply, StorageError> {
        let mut backends = self.backend.subscribe();
        // Whether the call may have run already, or the leadership moved
        // while it waited (a forwarded write then meets the file here).
        let mut moved = false;
        loop {
            let backend = backends.borrow_and_update().clone();
            match backend {
                Backend::Closed => return Err(StorageError::Closed),
                Backend::Electing => moved = true,
                Backend::Owner(store) => {
                    if let (true, Call::WriteLocal(write)) = (moved, &call) {
                        let current = store.get(&write.map_name, &write.key).await?;
                        let current = current.as_ref().map(|r| &r.timestamp);
                        if let Some(id) =
                            stamped_verdict(store.as_ref(), current, write, true).await?
                        {
                            return Ok(Reply::Id(id));
                        }
                    }
                    return execute(store.as_ref(), call).await;
                }
                Backend::Follower(link) => match link.call(&call, moved).await {
                    Some(result) => return result.map_err(|e| e.into_storage()),
                    None => moved = true,
                },
            }
            match tokio::time::timeout(ELECTION_WAIT, backends.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(StorageError::Closed),
                Err(_) => {
                    return Err(StorageError::Backend {
                        backend: "data directory",
                        during: "waiting for a process to hold it",
                        source: "no process took the data directory over in time".into(),
                    })
                }
            }
        }
    }
}

fn unexpected(reply: &Reply) -> StorageError {
    StorageError::Backend {
        backend: "leader process",
        during: "reading a forwarded call's reply",
        source: format!("unexpected reply {reply:?}").into(),
    }
}

macro_rules! expect {
    ($reply:expr, $variant:ident) => {
        match $reply {
            Reply::$variant(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    };
}

#[async_trait::async_trait]
impl Store for DirStore {
    async fn write_local(&self, write: LocalWrite) -> Result<OpId, StorageError> {
        expect!(self.call(Call::WriteLocal(write)).await?, Id)
    }

    async fn get(&self, map_name: &str, key: &str) -> Result<Option<StoreRecord>, StorageError> {
        expect!(
            self.call(Call::Get(map_name.into(), key.into())).await?,
            Record
        )
    }

    async fn get_many(
        &self,
        map_name: &str,
        keys: &[String],
    ) -> Result<Vec<Option<StoreRecord>>, StorageError> {
        expect!(
            self.call(Call::GetMany(map_name.into(), keys.to_vec()))
                .await?,
            MaybeRecords
        )
    }

    async fn scan(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        let call = Call::Scan(map_name.into(), after.map(Into::into), limit);
        expect!(self.call(call).await?, Records)
    }

    async fn scan_stamps(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        let call = Call::ScanStamps(map_name.into(), after.map(Into::into), limit);
        expect!(self.call(call).await?, Stamps)
    }

    async fn scan_in_store_order(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        let call = Call::ScanInStoreOrder(map_name.into(), after.map(Into::into), limit);
        expect!(self.call(call).await?, Records)
    }

    async fn scan_stamps_in_store_order(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KeyStamp>, StorageError> {
        let call = Call::ScanStampsInStoreOrder(map_name.into(), after.map(Into::into), limit);
        expect!(self.call(call).await?, Stamps)
    }

    async fn dirty_records(
        &self,
        map_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        let call = Call::DirtyRecords(map_name.into(), after.map(Into::into), limit);
        expect!(self.call(call).await?, Records)
    }

    async fn pending_ops(
        &self,
        after: Option<OpId>,
        limit: usize,
    ) -> Result<Vec<OpLogEntry>, StorageError> {
        expect!(self.call(Call::PendingOps(after, limit)).await?, Ops)
    }

    async fn mark_synced(&self, ids: &[OpId]) -> Result<u64, StorageError> {
        expect!(self.call(Call::MarkSynced(ids.to_vec())).await?, Count)
    }

    async fn acknowledge(&self, ids: &[OpId]) -> Result<u64, StorageError> {
        expect!(self.call(Call::Acknowledge(ids.to_vec())).await?, Count)
    }

    async fn drop_synced_ops(&self) -> Result<u64, StorageError> {
        expect!(self.call(Call::DropSyncedOps).await?, Count)
    }

    async fn apply_remote(
        &self,
        records: Vec<StoreRecord>,
    ) -> Result<Vec<AppliedChange>, StorageError> {
        expect!(self.call(Call::ApplyRemote(records, false)).await?, Applied)
    }

    async fn apply_remote_relaxed(
        &self,
        records: Vec<StoreRecord>,
    ) -> Result<Vec<AppliedChange>, StorageError> {
        expect!(self.call(Call::ApplyRemote(records, true)).await?, Applied)
    }

    async fn clear_map(
        &self,
        map_name: &str,
        timestamp: Timestamp,
    ) -> Result<ClearOutcome, StorageError> {
        expect!(
            self.call(Call::ClearMap(map_name.into(), timestamp))
                .await?,
            Cleared
        )
    }

    async fn prune_clean(
        &self,
        map_name: &str,
        keys: &[String],
        sums: PruneSums,
    ) -> Result<Vec<String>, StorageError> {
        let call = Call::PruneClean(map_name.into(), keys.to_vec(), sums);
        expect!(self.call(call).await?, Names)
    }

    async fn is_pruned(&self, map_name: &str, key: &str) -> Result<bool, StorageError> {
        expect!(
            self.call(Call::IsPruned(map_name.into(), key.into()))
                .await?,
            Flag
        )
    }

    async fn map_names(&self) -> Result<Vec<String>, StorageError> {
        expect!(self.call(Call::MapNames).await?, Names)
    }

    async fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        expect!(self.call(Call::MetaGet(key.into())).await?, Meta)
    }

    async fn meta_put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        match self.call(Call::MetaPut(key.into(), value)).await? {
            Reply::Unit => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn stats(&self) -> Result<StoreStats, StorageError> {
        expect!(self.call(Call::Stats).await?, Stats)
    }

    async fn merkle_leaves(&self, map_name: &str) -> Result<Vec<u32>, StorageError> {
        expect!(
            self.call(Call::MerkleLeaves(map_name.into())).await?,
            Leaves
        )
    }
}
