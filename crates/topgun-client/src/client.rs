//! [`TopGunClient`] and the untyped write/read path every [`IMap`] uses.

use crate::builder::TopGunClientBuilder;
use crate::error::{check_name, ClientError};
use crate::events::{Origin, RawEvent, EVENT_BUFFER};
use crate::keylock::KeyLocks;
use crate::map::IMap;
use crate::working_set::{CachedRecord, WorkingSet, WorkingSetLimits, WorkingSetStats};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::{broadcast, watch};
use topgun_core::{Hlc, Timestamp};
use topgun_storage::{LocalWrite, OpId, OpType, Store, StoreRecord, StoreStats};
use topgun_sync::ConnectionState;

/// Told about every local change, so a sync manager can push it and keep
/// its Merkle trees current. The client calls it after the change is
/// durable; it must return quickly and never block.
pub trait SyncSignal: Send + Sync + std::fmt::Debug {
    /// `key` of `map` was written (or removed, or cleared) locally at
    /// `timestamp`.
    fn local_change(&self, map: &str, key: &str, timestamp: &Timestamp);
    /// The application opened `map`: sync it too.
    fn map_opened(&self, map: &str);
    /// The client is closing: stop syncing.
    fn stop(&self) {}
}

/// Client-wide events (not tied to one key).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The store went over its byte budget and synced records were pruned.
    QuotaPruned {
        /// Records removed from the store.
        records: u64,
        /// Store bytes before pruning.
        bytes_before: u64,
        /// Store bytes after pruning.
        bytes_after: u64,
    },
    /// The store is over budget and nothing could be pruned; writes fail
    /// until data is synced or deleted.
    QuotaExhausted {
        /// Store bytes in use.
        used: u64,
        /// The budget.
        budget: u64,
    },
}

/// Sync traffic counters (see [`TopGunClient::traffic`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrafficSnapshot {
    /// Frames sent to servers.
    pub frames_sent: u64,
    /// Frames received from servers.
    pub frames_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
}

/// Per-map shared state: the name, its event channel, its live queries.
#[derive(Debug)]
pub(crate) struct MapShared {
    pub(crate) name: Arc<str>,
    pub(crate) events: broadcast::Sender<RawEvent>,
    pub(crate) live: crate::live::LiveQueries,
}

#[derive(Debug)]
pub(crate) struct ClientInner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) hlc: Hlc,
    pub(crate) working_set: Mutex<WorkingSet>,
    locks: KeyLocks,
    state: watch::Sender<ConnectionState>,
    state_changes: broadcast::Sender<ConnectionState>,
    maps: Mutex<HashMap<String, Arc<MapShared>>>,
    sync: Mutex<Option<Arc<dyn SyncSignal>>>,
    pub(crate) quota_bytes: Option<u64>,
    pub(crate) client_events: broadcast::Sender<ClientEvent>,
    pub(crate) sync_events: broadcast::Sender<topgun_sync::SyncEvent>,
    /// Last estimate of server clock minus local clock, from `PONG`.
    pub(crate) skew_ms: std::sync::atomic::AtomicI64,
    #[cfg(not(target_family = "wasm"))]
    pub(crate) traffic: Arc<topgun_sync::transport::TrafficStats>,
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent before anything
    // that can panic, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ClientInner {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        hlc: Hlc,
        limits: WorkingSetLimits,
        quota_bytes: Option<u64>,
    ) -> Self {
        Self {
            store,
            hlc,
            working_set: Mutex::new(WorkingSet::new(limits)),
            locks: KeyLocks::default(),
            state: watch::Sender::new(ConnectionState::Initial),
            state_changes: broadcast::Sender::new(256),
            maps: Mutex::new(HashMap::new()),
            sync: Mutex::new(None),
            quota_bytes,
            client_events: broadcast::Sender::new(64),
            sync_events: broadcast::Sender::new(256),
            skew_ms: std::sync::atomic::AtomicI64::new(0),
            #[cfg(not(target_family = "wasm"))]
            traffic: Arc::default(),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn set_connection_state(&self, state: ConnectionState) {
        let previous = self.state.send_replace(state);
        if previous != state {
            // Nobody listening is fine.
            let _ = self.state_changes.send(state);
        }
    }

    pub(crate) fn now_millis(&self) -> u64 {
        self.hlc.clock().now_millis()
    }

    pub(crate) fn check_open(&self) -> Result<(), ClientError> {
        if self.closed.load(Ordering::Acquire) {
            Err(ClientError::Closed)
        } else {
            Ok(())
        }
    }

    pub(crate) fn map(&self, name: &str) -> Arc<MapShared> {
        let mut maps = lock(&self.maps);
        maps.entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(MapShared {
                    name: Arc::from(name),
                    events: broadcast::Sender::new(EVENT_BUFFER),
                    live: crate::live::LiveQueries::default(),
                })
            })
            .clone()
    }

    pub(crate) fn ws(&self) -> MutexGuard<'_, WorkingSet> {
        lock(&self.working_set)
    }

    /// The current record of a key: working set first, then the store
    /// (re-caching what the store returns).
    pub(crate) async fn current(
        &self,
        map: &MapShared,
        key: &str,
    ) -> Result<Option<CachedRecord>, ClientError> {
        if let Some(hit) = self.ws().get(&map.name, key) {
            return Ok(Some(hit.clone()));
        }
        self.load(map, key).await
    }

    /// Reads a record from the store (a working-set miss) and caches it.
    pub(crate) async fn load(
        &self,
        map: &MapShared,
        key: &str,
    ) -> Result<Option<CachedRecord>, ClientError> {
        let Some(record) = self.store.get(&map.name, key).await? else {
            return Ok(None);
        };
        let cached = CachedRecord::from_store(&record);
        self.ws().insert_if_newer(&map.name, key, cached.clone());
        Ok(Some(cached))
    }

    /// The one local write path: lock the key, stamp, store record + op in
    /// one transaction, cache, publish, signal sync.
    pub(crate) async fn write(
        &self,
        map: &MapShared,
        key: &str,
        value: Option<Vec<u8>>,
        ttl_ms: Option<u64>,
    ) -> Result<OpId, ClientError> {
        self.check_open()?;
        check_name("key", key)?;
        let _guard = self.locks.lock(&map.name, key).await;
        let previous = self.current(map, key).await?;
        let timestamp = self.stamp_after(previous.as_ref().map(|p| &p.timestamp));
        crate::quota::ensure_room(self).await?;
        let op_type = if value.is_some() {
            OpType::Put
        } else {
            OpType::Remove
        };
        let value: Option<Arc<[u8]>> = value.map(Arc::from);
        let op_id = self
            .store
            .write_local(LocalWrite {
                map_name: map.name.to_string(),
                key: key.to_owned(),
                op_type,
                value: value.as_deref().map(<[u8]>::to_vec),
                timestamp: timestamp.clone(),
                ttl_ms,
            })
            .await?;
        let now = self.now_millis();
        let cached = CachedRecord {
            value: value.clone(),
            timestamp: timestamp.clone(),
            ttl_ms,
        };
        let new_live = cached.live_value(now).cloned();
        self.ws().insert(&map.name, key, cached);
        let old = previous.and_then(|p| p.live_value(now).cloned());
        self.signal_sync(&map.name, key, &timestamp);
        self.publish(map, key, old, new_live, Origin::Local, timestamp);
        Ok(op_id)
    }

    /// A fresh timestamp, strictly after `after` (the stored record's) so a
    /// local write always supersedes what this replica holds, even if the
    /// wall clock went back across a restart.
    pub(crate) fn stamp_after(&self, after: Option<&Timestamp>) -> Timestamp {
        let ts = self.hlc.now();
        match after {
            Some(prev) if *prev >= ts => {
                // Beyond the drift bound the clock refuses to jump; the write
                // then keeps its own (older) stamp and loses to `prev` on sync.
                if self.hlc.update(prev).is_ok() {
                    self.hlc.now()
                } else {
                    ts
                }
            }
            _ => ts,
        }
    }

    pub(crate) fn publish(
        &self,
        map: &MapShared,
        key: &str,
        old: Option<Arc<[u8]>>,
        new: Option<Arc<[u8]>>,
        origin: Origin,
        timestamp: Timestamp,
    ) {
        map.live.on_change(key, new.as_deref());
        if map.events.receiver_count() > 0 {
            // No subscriber is not an error.
            let _ = map.events.send(RawEvent {
                key: Arc::from(key),
                old,
                new,
                origin,
                timestamp,
            });
        }
    }

    pub(crate) fn signal_sync(&self, map: &str, key: &str, timestamp: &Timestamp) {
        let sync = lock(&self.sync).clone();
        if let Some(s) = sync {
            s.local_change(map, key, timestamp);
        }
    }

    pub(crate) fn sync_signal(&self) -> Option<Arc<dyn SyncSignal>> {
        lock(&self.sync).clone()
    }

    pub(crate) async fn lock_key(&self, map: &str, key: &str) -> crate::keylock::KeyGuard {
        self.locks.lock(map, key).await
    }
}

/// A local-first client: reads and writes answer from local storage at
/// once; every write is stamped, stored with its op in one transaction and
/// (once sync is attached) pushed to the server.
///
/// Cheap to clone; clones share one store, working set and clock.
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
    pub(crate) inner: Arc<ClientInner>,
}

impl TopGunClient {
    /// Starts configuring a client.
    pub fn builder() -> TopGunClientBuilder {
        TopGunClientBuilder::default()
    }

    pub(crate) fn from_inner(inner: Arc<ClientInner>) -> Self {
        Self { inner }
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
        if let Some(sync) = self.inner.sync_signal() {
            sync.map_opened(name);
        }
        Ok(IMap::new(self.inner.clone(), self.inner.map(name)))
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
        self.inner.hlc.node_id()
    }

    /// The hybrid logical clock stamping this client's writes.
    pub fn hlc(&self) -> &Hlc {
        &self.inner.hlc
    }

    /// The store under this client.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The current connectivity state.
    pub fn state(&self) -> ConnectionState {
        *self.inner.state.borrow()
    }

    /// A receiver that observes every state change
    /// (`INITIAL → OFFLINE → CONNECTING → SYNCING → ONLINE`).
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.subscribe()
    }

    /// Every state transition from now on, in order (a watch channel only
    /// keeps the latest; this keeps all, up to 256 unread).
    pub fn state_changes(&self) -> broadcast::Receiver<ConnectionState> {
        self.inner.state_changes.subscribe()
    }

    /// Sets the state.
    pub(crate) fn set_state(&self, state: ConnectionState) {
        self.inner.set_connection_state(state);
    }

    /// Client-wide events (quota pruning, …).
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.inner.client_events.subscribe()
    }

    /// Attaches the sync manager to be told about local writes.
    pub fn set_sync_signal(&self, signal: Arc<dyn SyncSignal>) {
        *lock(&self.inner.sync) = Some(signal);
    }

    /// Sync events: auth failures, rejected ops, server errors, completed
    /// pulls, clock skew, disconnections.
    pub fn sync_events(&self) -> broadcast::Receiver<topgun_sync::SyncEvent> {
        self.inner.sync_events.subscribe()
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
                Err(_) => return Ok(false),
                Ok(Err(_)) => return Ok(false),
                Ok(Ok(())) => {}
            }
        }
    }

    /// Frames and bytes this client's sync exchanged with servers so far.
    #[cfg(not(target_family = "wasm"))]
    pub fn traffic(&self) -> TrafficSnapshot {
        use std::sync::atomic::Ordering::Relaxed;
        let t = &self.inner.traffic;
        TrafficSnapshot {
            frames_sent: t.frames_sent.load(Relaxed),
            frames_received: t.frames_received.load(Relaxed),
            bytes_sent: t.bytes_sent.load(Relaxed),
            bytes_received: t.bytes_received.load(Relaxed),
        }
    }

    /// The last estimate of the server's clock minus this machine's, in ms
    /// (from `PONG.serverTime` and the round trip); 0 before the first
    /// `PONG`. Remote timestamps further ahead than the clock's drift bound
    /// are refused, so a large skew explains refused records.
    pub fn clock_skew_ms(&self) -> i64 {
        self.inner.skew_ms.load(Ordering::Relaxed)
    }

    /// Number of local ops not yet acknowledged by a server.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn pending_ops(&self) -> Result<u64, ClientError> {
        Ok(self.inner.store.stats().await?.pending_ops)
    }

    /// Counts and sizes of the store.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn store_stats(&self) -> Result<StoreStats, ClientError> {
        Ok(self.inner.store.stats().await?)
    }

    /// Hits, misses, evictions and size of the working set.
    pub fn working_set_stats(&self) -> WorkingSetStats {
        self.inner.ws().stats()
    }

    /// Names of the maps with at least one record in the store.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn map_names(&self) -> Result<Vec<String>, ClientError> {
        Ok(self.inner.store.map_names().await?)
    }

    pub(crate) async fn warm_up(&self, limit: usize) -> Result<(), ClientError> {
        let mut left = limit;
        if left == 0 {
            return Ok(());
        }
        for map in self.inner.store.map_names().await? {
            let shared = self.inner.map(&map);
            let records: Vec<StoreRecord> = self.inner.store.scan(&map, None, left).await?;
            left -= records.len();
            let mut ws = self.inner.ws();
            for r in &records {
                ws.insert(&shared.name, &r.key, CachedRecord::from_store(r));
            }
            if left == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Closes the client: later calls on it and on its maps fail with
    /// [`ClientError::Closed`], and the store is released once the last
    /// clone is dropped. Every acknowledged write is already durable.
    pub fn close(&self) {
        if let Some(sync) = self.inner.sync_signal() {
            sync.stop();
        }
        self.inner.closed.store(true, Ordering::Release);
        lock(&self.inner.maps).clear();
        self.inner.ws().invalidate_all();
    }
}
