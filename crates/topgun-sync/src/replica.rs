//! The local-data seam: what the [`SyncDriver`](crate::SyncDriver) needs
//! of the client's local data.
//!
//! Reads and the op log's sync bookkeeping go straight to the
//! [`Store`]; everything that must also keep the client's RAM copy and
//! subscribers right (merging server records, pruning a map) goes through
//! the replica.

use topgun_core::wire::WireRecord;
use topgun_core::{HlcError, Timestamp};
use topgun_storage::{SendSync, Store};

/// An error of the local side, reported to the application as
/// [`SyncEvent::LocalError`](crate::SyncEvent::LocalError).
pub type ReplicaError = Box<dyn std::error::Error + Send + Sync>;

/// The outcome of [`Replica::apply_remote`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Records refused (a timestamp beyond the clock's drift bound, an
    /// empty key), with the reason.
    pub refused: Vec<(String, String)>,
}

/// The client's local data, as the sync driver sees it.
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
pub trait Replica: SendSync + std::fmt::Debug + 'static {
    /// The store under the replica.
    fn store(&self) -> &dyn Store;

    /// This client's node id.
    fn node_id(&self) -> &str;

    /// Wall-clock time in ms (the clock stamping local writes).
    fn wall_ms(&self) -> u64;

    /// Merges server records into `map` by LWW: a record replaces the
    /// local one only if its timestamp is strictly greater; merged records
    /// are clean. Keeps the RAM copy and subscribers right.
    async fn apply_remote(
        &self,
        map: &str,
        records: Vec<(String, WireRecord)>,
    ) -> Result<Applied, ReplicaError>;

    /// Drops these keys of `map` from the store and from RAM where they
    /// are clean (synced), and from the map's Merkle leaf sums (so the next
    /// pull brings them back: a reset); dirty ones stay.
    async fn drop_clean(&self, map: &str, keys: &[String]) -> Result<(), ReplicaError>;

    /// Folds a server timestamp into the client's clock.
    ///
    /// # Errors
    /// The timestamp is beyond the clock's drift bound.
    fn observe_timestamp(&self, timestamp: &Timestamp) -> Result<(), HlcError>;
}
