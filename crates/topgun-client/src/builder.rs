//! [`TopGunClientBuilder`]: how a client is configured and opened.

use crate::client::TopGunClient;
use crate::error::ClientError;
use crate::local::LocalData;
use crate::working_set::WorkingSetLimits;
use std::sync::Arc;
use topgun_core::{Clock, Hlc, SystemClock};
use topgun_storage::{MemoryStore, Store};
use topgun_sync::{ConnectionState, Runtime, SyncStatus};

/// Default size of redb's page cache under a client.
#[cfg(all(feature = "redb", not(target_family = "wasm")))]
const DEFAULT_REDB_CACHE_BYTES: usize = 16 << 20;

/// Meta key under which the client keeps its node id.
pub(crate) const NODE_ID_KEY: &str = "client.node_id";

impl TopGunClient {
    /// Starts configuring a client.
    pub fn builder() -> TopGunClientBuilder {
        TopGunClientBuilder::default()
    }
}

/// Configures a [`TopGunClient`]. Obtain one with [`TopGunClient::builder`].
#[derive(Debug)]
pub struct TopGunClientBuilder {
    node_id: Option<String>,
    store: Option<Arc<dyn Store>>,
    #[cfg(all(feature = "redb", not(target_family = "wasm")))]
    redb_path: Option<std::path::PathBuf>,
    #[cfg(all(feature = "redb", not(target_family = "wasm")))]
    redb_cache_bytes: usize,
    limits: WorkingSetLimits,
    quota_bytes: Option<u64>,
    warm_up: usize,
    clock: Arc<dyn Clock>,
    server_url: Option<String>,
    token: Option<String>,
    sync_config: topgun_sync::SyncConfig,
    sync_maps: Vec<String>,
    runtime: Option<Arc<dyn Runtime>>,
}

impl Default for TopGunClientBuilder {
    fn default() -> Self {
        Self {
            node_id: None,
            store: None,
            #[cfg(all(feature = "redb", not(target_family = "wasm")))]
            redb_path: None,
            #[cfg(all(feature = "redb", not(target_family = "wasm")))]
            redb_cache_bytes: DEFAULT_REDB_CACHE_BYTES,
            limits: WorkingSetLimits::default(),
            quota_bytes: None,
            warm_up: 0,
            clock: Arc::new(SystemClock),
            server_url: None,
            token: None,
            sync_config: topgun_sync::SyncConfig::default(),
            sync_maps: Vec::new(),
            runtime: None,
        }
    }
}

impl TopGunClientBuilder {
    /// Sets the node id (it stamps every write). By default the client uses
    /// the id stored in the store's meta, or creates a random UUID and
    /// stores it, so the id survives restarts. An explicit id is stored too.
    #[must_use]
    pub fn node_id(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = Some(node_id.into());
        self
    }

    /// Uses the given store (e.g. a [`MemoryStore`] shared with a test, or
    /// a `RedbStore` opened with custom options). Default: a new
    /// [`MemoryStore`].
    #[must_use]
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Keeps data in a durable redb file at `path` (created if missing).
    #[cfg(all(feature = "redb", not(target_family = "wasm")))]
    #[must_use]
    pub fn redb_path(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.redb_path = Some(path.into());
        self
    }

    /// Bounds redb's own page cache for [`redb_path`](Self::redb_path)
    /// (redb's default is 1 GiB). Default: 16 MiB, so that the client's
    /// memory stays bounded by the working set plus this.
    #[cfg(all(feature = "redb", not(target_family = "wasm")))]
    #[must_use]
    pub fn redb_cache_bytes(mut self, bytes: usize) -> Self {
        self.redb_cache_bytes = bytes;
        self
    }

    /// Bounds the in-RAM working set. Default: 10,000 entries, 64 MiB.
    #[must_use]
    pub fn working_set(mut self, limits: WorkingSetLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets a budget for the store's size in bytes. Over it, the client
    /// prunes synced, clean records (least recently used first); when
    /// nothing can be pruned, writes fail with
    /// [`ClientError::QuotaExceeded`]. Default: no budget.
    #[must_use]
    pub fn quota_bytes(mut self, budget: u64) -> Self {
        self.quota_bytes = Some(budget);
        self
    }

    /// Loads up to `records` records into the working set at start (in map
    /// and key order), so first reads hit RAM. Default: 0.
    #[must_use]
    pub fn warm_up(mut self, records: usize) -> Self {
        self.warm_up = records;
        self
    }

    /// Reads wall-clock time from `clock` (tests, simulations). Default:
    /// the system clock.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Syncs with the TopGun server at `url` (e.g. `ws://127.0.0.1:8080/ws`).
    /// The client connects in the background and keeps reconnecting; watch
    /// [`TopGunClient::watch_state`]. Requires a runtime: natively the
    /// tokio runtime `build` runs on, or one given with
    /// [`runtime`](Self::runtime).
    #[must_use]
    pub fn server_url(mut self, url: impl Into<String>) -> Self {
        self.server_url = Some(url.into());
        self
    }

    /// The token sent in `AUTH` (a JWT for TopGun servers).
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Tunes sync: batch sizes, backoff, keep-alive (see [`topgun_sync::SyncConfig`]).
    #[must_use]
    pub fn sync_config(mut self, config: topgun_sync::SyncConfig) -> Self {
        self.sync_config = config;
        self
    }

    /// Maps to sync from the start, besides those already in the store and
    /// those the application opens with `get_map`.
    #[must_use]
    pub fn sync_maps<I: IntoIterator<Item = S>, S: Into<String>>(mut self, maps: I) -> Self {
        self.sync_maps.extend(maps.into_iter().map(Into::into));
        self
    }

    /// Runs sync and timers on `runtime`. Default on native targets: the
    /// tokio runtime `build` is called on, if any. Without a runtime the
    /// client works offline, and live queries notice TTL expiries at the
    /// next change instead of on time.
    #[must_use]
    pub fn runtime(mut self, runtime: Arc<dyn Runtime>) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Opens the store, settles the node id, warms up the working set and
    /// returns the client in state `OFFLINE`.
    ///
    /// # Errors
    /// Storage errors opening or reading the store (e.g. a file written by
    /// a newer version); [`ClientError::Clock`] for a node id that is empty
    /// or contains `:`.
    pub async fn build(self) -> Result<TopGunClient, ClientError> {
        let store = self.open_store()?;
        let node_id = match self.node_id {
            Some(id) => {
                topgun_core::Hlc::with_clock(id.clone(), self.clock.clone())?;
                store.meta_put(NODE_ID_KEY, id.clone().into_bytes()).await?;
                id
            }
            None => match store.meta_get(NODE_ID_KEY).await? {
                Some(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).into_owned(),
                _ => {
                    let id = uuid::Uuid::new_v4().to_string();
                    store.meta_put(NODE_ID_KEY, id.clone().into_bytes()).await?;
                    id
                }
            },
        };
        let hlc = Hlc::with_clock(node_id, self.clock)?;
        let runtime = self.runtime.or_else(default_runtime);
        let local = Arc::new(LocalData::new(
            store,
            hlc,
            self.limits,
            self.quota_bytes,
            runtime.clone(),
        ));
        local.warm_up(self.warm_up).await?;
        let status = Arc::new(SyncStatus::new());
        status.set_state(ConnectionState::Offline);
        if let Some(url) = self.server_url {
            let runtime = runtime.ok_or(ClientError::NoRuntime)?;
            let mut maps = local.store().map_names().await?;
            maps.extend(self.sync_maps);
            let settings = topgun_sync::DriverSettings {
                url,
                token: self.token,
                config: self.sync_config,
                maps,
            };
            let replica: Arc<dyn topgun_sync::Replica> = local.clone();
            let handle = topgun_sync::SyncDriver::spawn(runtime, replica, status.clone(), settings);
            local.attach_sync(handle.notifier());
            return Ok(TopGunClient::new(local, status, Some(handle)));
        }
        Ok(TopGunClient::new(local, status, None))
    }

    fn open_store(&self) -> Result<Arc<dyn Store>, ClientError> {
        if let Some(store) = &self.store {
            return Ok(store.clone());
        }
        #[cfg(all(feature = "redb", not(target_family = "wasm")))]
        if let Some(path) = &self.redb_path {
            let store = topgun_storage::RedbStore::builder()
                .cache_size(self.redb_cache_bytes)
                .open(path)?;
            return Ok(Arc::new(store));
        }
        Ok(Arc::new(MemoryStore::new()))
    }
}

/// The tokio runtime the caller runs on, natively; none on wasm.
fn default_runtime() -> Option<Arc<dyn Runtime>> {
    #[cfg(not(target_family = "wasm"))]
    if let Ok(runtime) = topgun_sync::TokioRuntime::current() {
        return Some(Arc::new(runtime));
    }
    None
}
