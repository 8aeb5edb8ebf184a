//! What processes sharing a data directory say to each other over its
//! socket: a follower's [`Call`]s (one per [`Store`] method) and the
//! leader's [`Frame`]s (replies, changes, connection states), each
//! MessagePack behind a 4-byte big-endian length; and [`execute`], the
//! one place a call meets a store.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use topgun_core::Timestamp;
use topgun_storage::{
    AppliedChange, ClearOutcome, KeyStamp, LocalWrite, OpId, OpLogEntry, PruneSums, StorageError,
    Store, StoreRecord, StoreStats,
};
use topgun_sync::{ConnectionState, SyncEvent};

pub(crate) use crate::hub::ChangeFrame;

/// The largest frame either side accepts. A reply that would be larger (a
/// scan page of very large values) is answered with an error instead.
pub(crate) const MAX_FRAME: usize = 256 << 20;

/// The version of this protocol, in the leader's hello: processes built
/// from different versions of this crate do not share a directory.
pub(crate) const PROTOCOL_VERSION: u32 = 3;

/// Bytes read from the socket at a time (frames arrive in bursts).
pub(crate) const READ_BUFFER: usize = 64 << 10;

/// What a follower asks of the leader.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Run a store call; the reply carries `id`. `retried`: the call may
    /// have run already (its first try's connection broke).
    Store { id: u64, call: Call, retried: bool },
    /// Sync this map with the server too (no reply).
    OpenMap(String),
    /// Sync with this server, if the leader does not sync yet (no reply).
    StartSync(SyncRequest),
}

/// A follower's server settings, for a leader that has none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SyncRequest {
    pub(crate) url: String,
    pub(crate) token: Option<String>,
    pub(crate) maps: Vec<String>,
}

/// One [`Store`] method and its arguments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Call {
    WriteLocal(LocalWrite),
    Get(String, String),
    GetMany(String, Vec<String>),
    Scan(String, Option<String>, usize),
    ScanStamps(String, Option<String>, usize),
    ScanInStoreOrder(String, Option<String>, usize),
    ScanStampsInStoreOrder(String, Option<String>, usize),
    DirtyRecords(String, Option<String>, usize),
    PendingOps(Option<OpId>, usize),
    MarkSynced(Vec<OpId>),
    Acknowledge(Vec<OpId>),
    DropSyncedOps,
    ApplyRemote(Vec<StoreRecord>, bool),
    ClearMap(String, Timestamp),
    PruneClean(String, Vec<String>, PruneSums),
    IsPruned(String, String),
    MapNames,
    MetaGet(String),
    MetaPut(String, #[serde(with = "serde_bytes")] Vec<u8>),
    Stats,
    MerkleLeaves(String),
}

/// What a [`Call`] returns.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Unit,
    Id(OpId),
    Count(u64),
    Record(Option<StoreRecord>),
    MaybeRecords(Vec<Option<StoreRecord>>),
    Records(Vec<StoreRecord>),
    Stamps(Vec<KeyStamp>),
    Ops(Vec<OpLogEntry>),
    Applied(Vec<AppliedChange>),
    Cleared(ClearOutcome),
    Names(Vec<String>),
    Meta(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    Stats(StoreStats),
    Leaves(Vec<u32>),
    Flag(bool),
}

/// Why a call failed at the leader.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum CallError {
    /// [`StorageError::Stale`]: restamp and retry.
    Stale(Timestamp),
    /// Anything else, as the leader's message.
    Failed(String),
}

impl CallError {
    pub(crate) fn from_storage(error: &StorageError) -> Self {
        match error {
            StorageError::Stale { current } => Self::Stale(current.clone()),
            other => Self::Failed(other.to_string()),
        }
    }

    pub(crate) fn into_storage(self) -> StorageError {
        match self {
            Self::Stale(current) => StorageError::Stale { current },
            Self::Failed(message) => StorageError::Backend {
                backend: "leader process",
                during: "running a forwarded call",
                source: message.into(),
            },
        }
    }
}

/// What the leader sends a follower.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Frame {
    /// First frame: the protocol version, the leader's clock, and its
    /// connection state.
    Hello(u32, Timestamp, ConnectionState),
    Reply(u64, Result<Reply, CallError>),
    Change(ChangeFrame),
    State(ConnectionState),
    /// One of the leader's sync events (auth failures, rejected ops, …).
    Event(SyncEvent),
}

/// Appends `message` to `buf` as one frame.
pub(crate) fn encode_into<T: Serialize>(buf: &mut Vec<u8>, message: &T) -> std::io::Result<()> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    rmp_serde::encode::write(buf, message).map_err(std::io::Error::other)?;
    let len = u32::try_from(buf.len() - start - 4)
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME)
        .ok_or_else(|| {
            buf.truncate(start);
            std::io::Error::other("frame larger than the socket's limit")
        })?;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Reads one frame; `None` at a clean end of the stream.
pub(crate) async fn read_frame<T: for<'de> Deserialize<'de>>(
    reader: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<T>> {
    let mut len = [0; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes is over the limit of {MAX_FRAME}"
        )));
    }
    buf.resize(len, 0);
    reader.read_exact(buf).await?;
    rmp_serde::from_slice(buf)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Runs `call` on `store`.
///
/// # Errors
/// The store's.
pub(crate) async fn execute(store: &dyn Store, call: Call) -> Result<Reply, StorageError> {
    Ok(match call {
        Call::WriteLocal(w) => Reply::Id(store.write_local(w).await?),
        Call::Get(m, k) => Reply::Record(store.get(&m, &k).await?),
        Call::GetMany(m, keys) => Reply::MaybeRecords(store.get_many(&m, &keys).await?),
        Call::Scan(m, after, limit) => {
            Reply::Records(store.scan(&m, after.as_deref(), limit).await?)
        }
        Call::ScanStamps(m, after, limit) => {
            Reply::Stamps(store.scan_stamps(&m, after.as_deref(), limit).await?)
        }
        Call::ScanInStoreOrder(m, after, limit) => Reply::Records(
            store
                .scan_in_store_order(&m, after.as_deref(), limit)
                .await?,
        ),
        Call::ScanStampsInStoreOrder(m, after, limit) => Reply::Stamps(
            store
                .scan_stamps_in_store_order(&m, after.as_deref(), limit)
                .await?,
        ),
        Call::DirtyRecords(m, after, limit) => {
            Reply::Records(store.dirty_records(&m, after.as_deref(), limit).await?)
        }
        Call::PendingOps(after, limit) => Reply::Ops(store.pending_ops(after, limit).await?),
        Call::MarkSynced(ids) => Reply::Count(store.mark_synced(&ids).await?),
        Call::Acknowledge(ids) => Reply::Count(store.acknowledge(&ids).await?),
        Call::DropSyncedOps => Reply::Count(store.drop_synced_ops().await?),
        Call::ApplyRemote(records, relaxed) => Reply::Applied(if relaxed {
            store.apply_remote_relaxed(records).await?
        } else {
            store.apply_remote(records).await?
        }),
        Call::ClearMap(m, ts) => Reply::Cleared(store.clear_map(&m, ts).await?),
        Call::PruneClean(m, keys, sums) => Reply::Names(store.prune_clean(&m, &keys, sums).await?),
        Call::IsPruned(m, k) => Reply::Flag(store.is_pruned(&m, &k).await?),
        Call::MapNames => Reply::Names(store.map_names().await?),
        Call::MetaGet(k) => Reply::Meta(store.meta_get(&k).await?),
        Call::MetaPut(k, v) => {
            store.meta_put(&k, v).await?;
            Reply::Unit
        }
        Call::Stats => Reply::Stats(store.stats().await?),
        Call::MerkleLeaves(m) => Reply::Leaves(store.merkle_leaves(&m).await?),
    })
}
