//! The server's storage interface, [`ServerStore`], and its
//! implementations: [`EmbeddedStore`] over any `topgun-storage` store (a
//! redb file by default), [`LanedStore`] over several stores (commit
//! lanes: a data directory's redb files, see `data_dir_lanes` with
//! feature `redb`) and, with feature `postgres`, `PostgresStore`, which
//! several server nodes share.
//!
//! A server store keeps records by map and key with the LWW rule, lists
//! them page by page (the query engine and the Merkle rebuild read them
//! so), and, when other nodes write to it too, offers a [`ChangeFeed`] of
//! their writes. It knows nothing of a client's operation log, dirty flags
//! or acknowledgements.

#[cfg(feature = "redb")]
mod data_dir;
mod embedded;
mod laned;
#[cfg(feature = "postgres")]
mod postgres;

#[cfg(feature = "redb")]
pub(crate) use data_dir::open as open_data_dir;
#[cfg(feature = "redb")]
pub use data_dir::{data_dir_lanes, lane_file, LANES_FILE};
pub use embedded::EmbeddedStore;
pub use laned::LanedStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresOptions, PostgresStore};

use topgun_core::Timestamp;
use topgun_storage::{KeyStamp, Paged, StorageError, StoreRecord};

/// The name of the redb file of lane 0 (the only one of a single lane)
/// inside a data directory (`StoreConfig::DataDir`).
pub const DATA_FILE_NAME: &str = "topgun.redb";

/// Why `store` would refuse `record` as a whole merge's input: an empty map
/// name or key, or what [`ServerStore::refuses`] says. The check a store
/// runs before it touches anything, so that a bad record fails the merge
/// and stores nothing.
pub(crate) fn invalid(store: &dyn ServerStore, record: &StoreRecord) -> Option<StorageError> {
    let reason = if record.map_name.is_empty() || record.key.is_empty() {
        Some("empty map name or key")
    } else {
        store.refuses(
            &record.map_name,
            &record.key,
            &record.timestamp,
            record.ttl_ms,
        )
    };
    reason.map(StorageError::InvalidInput)
}

/// What the server keeps its records in.
///
/// Records are [`StoreRecord`]s (their `dirty` flag is ignored and read
/// back as `false`); values are opaque MessagePack bytes. Reading pages
/// ([`Paged`]) follows the rules of `topgun_storage::Store::scan`: key
/// order (byte-wise), tombstones included, a short page is the last.
#[async_trait::async_trait]
pub trait ServerStore: Paged + Send + Sync {
    /// Applies `records` durably, each only if its timestamp is strictly
    /// greater than the stored record's (or the key is new); returns, in
    /// input order, whether each one is now the stored record. Of several
    /// records for one key in a call, at most the newest is reported.
    /// All or nothing: on an error nothing was applied — except in a store
    /// of several lanes, whose lanes commit apart (see
    /// [`merge_lanes`](Self::merge_lanes)).
    async fn merge(&self, records: Vec<StoreRecord>) -> Result<Vec<bool>, StorageError>;

    /// [`merge`](Self::merge), telling apart what each lane committed: for
    /// each record, in input order, `Some(applied)` when its lane committed
    /// (`applied` as `merge` reports it) and `None` when its lane failed,
    /// and the error of a failed lane. The default, for a store of one
    /// lane, is all `Some` or all `None`.
    async fn merge_lanes(&self, records: Vec<StoreRecord>) -> LaneMerge {
        let count = records.len();
        match self.merge(records).await {
            Ok(applied) => LaneMerge {
                applied: applied.into_iter().map(Some).collect(),
                error: None,
            },
            Err(error) => LaneMerge {
                applied: vec![None; count],
                error: Some(error),
            },
        }
    }

    /// The records of `keys` of a map, in the order of `keys` (`None` for
    /// an unknown key), tombstones included.
    async fn get_many(
        &self,
        map_name: &str,
        keys: &[String],
    ) -> Result<Vec<Option<StoreRecord>>, StorageError>;

    /// Whether the store can keep a write of `map_name`/`key` stamped
    /// `timestamp` with `ttl_ms`; the reason when it cannot. The server
    /// rejects such an op on its own (`OP_REJECTED`) instead of failing
    /// the merge of every batch grouped with it. Stores that take anything
    /// keep the default.
    fn refuses(
        &self,
        map_name: &str,
        key: &str,
        timestamp: &Timestamp,
        ttl_ms: Option<u64>,
    ) -> Option<&'static str> {
        let _ = (map_name, key, timestamp, ttl_ms);
        None
    }

    /// How many merges the store commits at once, independently (its
    /// lanes): the server keeps this many times more merges in flight.
    fn lanes(&self) -> usize {
        1
    }

    /// Every map that has at least one record (tombstones count).
    async fn map_names(&self) -> Result<Vec<String>, StorageError>;

    /// The feed of other nodes' writes, for a store that several server
    /// nodes share; `None` for a store this node owns alone.
    fn feed(&self) -> Option<&dyn ChangeFeed>;

    /// Flushes and releases the store; later calls fail.
    async fn close(&self) -> Result<(), StorageError>;
}

/// The outcome of [`ServerStore::merge_lanes`].
#[derive(Debug)]
pub struct LaneMerge {
    /// Per record, in input order: whether it is now the stored record, or
    /// `None` if its lane failed and nothing of that lane was applied.
    pub applied: Vec<Option<bool>>,
    /// The error of a lane that failed.
    pub error: Option<StorageError>,
}

/// The writes other nodes made to a shared store, in commit order, by a
/// sequence number that only grows.
#[async_trait::async_trait]
pub trait ChangeFeed: Send + Sync {
    /// The position after the last change committed so far: reading from
    /// it returns only later changes.
    async fn position(&self) -> Result<u64, StorageError>;

    /// The changes of up to `limit` commits after position `after`, in
    /// commit order: other nodes' as the records stored when read (so a
    /// record may be newer than the change itself; a key changed several
    /// times is listed once), and those of this node's own commits whose
    /// success it did not see (the connection dropped during `COMMIT`) as
    /// the timestamps it wrote; its confirmed commits are skipped.
    async fn read(&self, after: u64, limit: usize) -> Result<FeedRead, StorageError>;

    /// Resolves when a change may have been committed (a doorbell rang)
    /// or after the store's poll interval, whichever comes first.
    async fn wait(&self);
}

/// The answer of [`ChangeFeed::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedRead {
    /// Changes after the position asked for, and the position to read from
    /// next (equal to the one asked for when nothing was committed since).
    Changes {
        /// Other nodes' changed records, in commit order.
        records: Vec<StoreRecord>,
        /// This node's own unconfirmed changes: map, key and the timestamp
        /// written.
        own: Vec<(String, KeyStamp)>,
        /// Where to read next.
        next: u64,
    },
    /// Changes after the position asked for were already deleted by the
    /// feed's retention: the reader must rebuild its view from the records
    /// and go on from `position`.
    Behind {
        /// The feed's position when this was answered.
        position: u64,
    },
}
