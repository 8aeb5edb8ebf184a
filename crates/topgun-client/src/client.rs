//! [`TopGunClient`]: the facade. It composes the local data (store, clock,
//! working set, write path), the sync status and, when a server is
//! configured, the handle of the sync driver.

use crate::error::{check_name, ClientError};
use crate::keep::KeepAlive;
use crate::local::LocalData;
use crate::map::IMap;
use crate::quota::ClientEvent;
use crate::working_set::WorkingSetStats;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use topgun_core::Hlc;
use topgun_storage::{OpLogEntry, StorageError, Store, StoreRecord, StoreStats};
use topgun_sync::{ConnectionState, SyncEvent, SyncHandle, SyncStatus, TrafficSnapshot};

/// A local-first client: reads and writes answer from local storage at
/// once; every write is stamped, stored with its op in one transaction and
/// (once sync is attached) pushed to the server.
///
/// Cheap to clone; clones share one store, working set and clock. When the
/// last clone (and the last [`IMap`] from it) is dropped, sync stops.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use topgun_client::TopGunClient;
/// let client = TopGunClient::builder().node_id("laptop").build().await?;
/// let users = client.get_map::<String>("users")?;
/// users.put("alice", "Alice".to_owned()).await?;
/// assert_eq!(users.get("alice").await?, Some("Alice".to_owned()));
/// assert_eq!(client.pending_ops().await?, 1);
/// # Ok::<(), topgun_client::ClientError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct TopGunClient {
    local: Arc<LocalData>,
    status: Arc<SyncStatus>,
    keep: KeepAlive,
}

impl TopGunClient {
    pub(crate) fn new(
        local: Arc<LocalData>,
        status: Arc<SyncStatus>,
        sync: Option<SyncHandle>,
    ) -> Self {
        Self {
            local,
            status,
            keep: KeepAlive::new(sync),
        }
    }

    /// The client of a shared data directory.
    #[cfg(all(feature = "redb", unix))]
    pub(crate) fn with_dir(mut self, dir: Arc<crate::shared_dir::SharedDir>) -> Self {
        self.keep.dir = Some(dir);
        self
    }

    /// The client of a browser tab that shares its database with others.
    #[cfg(all(feature = "indexeddb", target_family = "wasm"))]
    pub(crate) fn with_tabs(mut self, tabs: std::rc::Rc<crate::tabs::Tabs>) -> Self {
        self.keep.tabs = Some(tabs);
        self
    }

    /// Whether this process holds its data ([`Role::Leader`](crate::Role::Leader):
    /// always, except for a follower on a
    /// [`shared_dir`](crate::TopGunClientBuilder::shared_dir)).
    pub fn role(&self) -> crate::Role {
        self.watch_role().borrow().to_owned()
    }

    /// A receiver that observes this process's role: it changes when a
    /// follower takes over from a leader that went.
    pub fn watch_role(&self) -> watch::Receiver<crate::Role> {
        #[cfg(all(feature = "redb", unix))]
        if let Some(dir) = &self.keep.dir {
            return dir.watch_role();
        }
        #[cfg(all(feature = "indexeddb", target_family = "wasm"))]
        if let Some(tabs) = &self.keep.tabs {
            return tabs.watch_role();
        }
        watch::Sender::new(crate::Role::Leader).subscribe()
    }

    /// A typed view of the map `name`. Values are stored as MessagePack.
    ///
    /// # Errors
    /// [`ClientError::InvalidName`] for an empty or overlong name.
    pub fn get_map<V: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<IMap<V>, ClientError> {
        check_name("map name", name)?;
        #[cfg(all(feature = "redb", unix))]
        if let Some(dir) = &self.keep.dir {
            dir.open_map(name);
        }
        if let Some(sync) = &self.keep.sync {
            sync.open_map(name);
        }
        #[cfg(all(feature = "indexeddb", target_family = "wasm"))]
        if let Some(sync) = self.keep.tabs.as_ref().and_then(|tabs| tabs.sync()) {
            sync.open_map(name);
        }
        Ok(IMap::new(
            self.local.clone(),
            self.local.map(name),
            self.keep.clone(),
        ))
    }

    /// An untyped view of the map `name`, with JSON values.
    ///
    /// # Errors
    /// [`ClientError::InvalidName`] for an empty or overlong name.
    pub fn get_json_map(&self, name: &str) -> Result<IMap<serde_json::Value>, ClientError> {
        self.get_map(name)
    }

    /// This client's node id (stamped into every write).
    pub fn node_id(&self) -> &str {
        self.local.hlc().node_id()
    }

    /// The hybrid logical clock stamping this client's writes.
    pub fn hlc(&self) -> &Hlc {
        self.local.hlc()
    }

    /// A read-only view of the store under this client (writes go through
    /// maps, so that the working set, events and sync stay right).
    pub fn store(&self) -> StoreReader {
        StoreReader(self.local.store().clone())
    }

    /// The current connectivity state.
    pub fn state(&self) -> ConnectionState {
        self.status.state()
    }

    /// A receiver that observes every state change
    /// (`INITIAL → OFFLINE → CONNECTING → SYNCING → ONLINE`).
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.status.watch_state()
    }

    /// Every state transition from now on, in order (a watch channel only
    /// keeps the latest; this keeps all, up to 256 unread).
    pub fn state_changes(&self) -> broadcast::Receiver<ConnectionState> {
        self.status.state_changes()
    }

    /// Client-wide events (quota warnings and pruning, …).
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.local.events()
    }

    /// Sync events: auth failures, rejected ops, server errors, completed
    /// pulls, clock skew, disconnections, local errors during sync.
    pub fn sync_events(&self) -> broadcast::Receiver<SyncEvent> {
        self.status.events()
    }

    /// Tells sync whether the device has a network (call it from the
    /// platform's connectivity hooks): `false` disconnects and stops
    /// retrying; `true` reconnects at once instead of after the backoff.
    /// Without a server, does nothing.
    pub fn set_network_online(&self, online: bool) {
        if let Some(sync) = self.keep.sync() {
            sync.set_network(online);
        }
    }

    /// Waits until the client is `ONLINE` with no pending op, or `timeout`
    /// passes. Returns whether it got there.
    ///
    /// # Errors
    /// Storage errors reading the op log.
    #[cfg(not(target_family = "wasm"))]
    pub async fn wait_until_synced(
        &self,
        timeout: std::time::Duration,
    ) -> Result<bool, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut states = self.watch_state();
        loop {
            if *states.borrow_and_update() == ConnectionState::Online
                && self.pending_ops().await? == 0
            {
                return Ok(true);
            }
            let wait = tokio::time::timeout_at(deadline, states.changed());
            match wait.await {
                Err(_) | Ok(Err(_)) => return Ok(false),
                Ok(Ok(())) => {}
            }
        }
    }

    /// Frames and bytes this client's sync exchanged with servers so far.
    pub fn traffic(&self) -> TrafficSnapshot {
        self.status.traffic()
    }

    /// The last estimate of the server's clock minus this machine's, in ms
    /// (from `PONG.serverTime` and the round trip); 0 before the first
    /// `PONG`. Remote timestamps further ahead than the clock's drift bound
    /// are refused, so a large skew explains refused records.
    pub fn clock_skew_ms(&self) -> i64 {
        self.status.skew_ms()
    }

    /// Number of local ops not yet acknowledged by a server.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn pending_ops(&self) -> Result<u64, ClientError> {
        Ok(self.local.store().stats().await?.pending_ops)
    }

    /// Counts and sizes of the store.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn store_stats(&self) -> Result<StoreStats, ClientError> {
        Ok(self.local.store().stats().await?)
    }

    /// Hits, misses, evictions and size of the working set.
    pub fn working_set_stats(&self) -> WorkingSetStats {
        self.local.working_set_stats()
    }

    /// Names of the maps with at least one record in the store.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn map_names(&self) -> Result<Vec<String>, ClientError> {
        Ok(self.local.store().map_names().await?)
    }

    /// Closes the client: stops sync (returning once its connection is
    /// closed), then later calls on the client and its maps fail with
    /// [`ClientError::Closed`]; the store is released once the last clone
    /// is dropped. Every acknowledged write is already durable.
    pub async fn close(&self) {
        if let Some(sync) = &self.keep.sync {
            sync.close().await;
        }
        #[cfg(all(feature = "redb", unix))]
        if let Some(dir) = &self.keep.dir {
            dir.close().await;
        }
        #[cfg(all(feature = "indexeddb", target_family = "wasm"))]
        if let Some(tabs) = &self.keep.tabs {
            tabs.close().await;
        }
        self.local.close();
    }
}

/// A read-only view of a client's store, from [`TopGunClient::store`].
#[derive(Debug, Clone)]
pub struct StoreReader(Arc<dyn Store>);

impl StoreReader {
    /// The record of `key` in `map` (tombstones included).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn get(&self, map: &str, key: &str) -> Result<Option<StoreRecord>, StorageError> {
        self.0.get(map, key).await
    }

    /// Up to `limit` records of `map` after key `after`, in key order
    /// (tombstones included).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn scan(
        &self,
        map: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoreRecord>, StorageError> {
        self.0.scan(map, after, limit).await
    }

    /// Up to `limit` unsynced ops with id greater than `after`, in id order.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn pending_ops(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<OpLogEntry>, StorageError> {
        self.0.pending_ops(after, limit).await
    }

    /// Counts and sizes.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn stats(&self) -> Result<StoreStats, StorageError> {
        self.0.stats().await
    }

    /// Names of the maps with at least one record.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn map_names(&self) -> Result<Vec<String>, StorageError> {
        self.0.map_names().await
    }
}
