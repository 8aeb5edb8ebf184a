//! [`TopGunClientBuilder`]: how a client is configured and opened.

use crate::client::TopGunClient;
use crate::error::ClientError;
use crate::local::LocalData;
use crate::working_set::WorkingSetLimits;
use std::sync::Arc;
use topgun_core::{Clock, Hlc, SystemClock};
use topgun_storage::{MemoryStore, Store};
use topgun_sync::{ConnectionState, Runtime, SyncHandle, SyncStatus};

/// Default size of redb's page cache under a client
/// ([`TopGunClientBuilder::redb_cache_bytes`]).
#[cfg(all(feature = "redb", not(target_family = "wasm")))]
pub const DEFAULT_REDB_CACHE_BYTES: usize = 24 << 20;

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
    #[cfg(all(feature = "redb", not(target_family = "wasm")))]
    shared_dir: Option<std::path::PathBuf>,
    limits: WorkingSetLimits,
    quota: crate::quota::QuotaSettings,
    warm_up: usize,
    clock: Arc<dyn Clock>,
    server_url: Option<String>,
    token: Option<String>,
    token_provider: Option<Arc<dyn topgun_sync::TokenProvider>>,
    sync_config: topgun_sync::SyncConfig,
    sync_maps: Vec<String>,
    runtime: Option<Arc<dyn Runtime>>,
    #[cfg(all(feature = "indexeddb", target_family = "wasm"))]
    tabs: Option<String>,
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
            #[cfg(all(feature = "redb", not(target_family = "wasm")))]
            shared_dir: None,
            limits: WorkingSetLimits::default(),
            quota: crate::quota::QuotaSettings::default(),
            warm_up: 0,
            clock: Arc::new(SystemClock),
            server_url: None,
            token: None,
            token_provider: None,
            sync_config: topgun_sync::SyncConfig::default(),
            sync_maps: Vec::new(),
            runtime: None,
            #[cfg(all(feature = "indexeddb", target_family = "wasm"))]
            tabs: None,
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
    /// (redb's default is 1 GiB). Default: [`DEFAULT_REDB_CACHE_BYTES`]
    /// (24 MiB), so that the client's memory stays bounded by the working
    /// set plus this.
    #[cfg(all(feature = "redb", not(target_family = "wasm")))]
    #[must_use]
    pub fn redb_cache_bytes(mut self, bytes: usize) -> Self {
        self.redb_cache_bytes = bytes;
        self
    }

    /// Keeps data in the directory `dir` (created if missing), in the redb
    /// file `dir/topgun.redb`, shared with other processes that open the
    /// same directory: the first becomes the leader (holds the file, syncs
    /// when a server is configured, listens on `dir/topgun.sock`), later
    /// ones follow it: their calls go to the leader and every change
    /// streams back, with the same API and guarantees (a `put` returns
    /// after the leader's durable commit). When the leader goes, a
    /// follower takes over. See [`TopGunClient::role`].
    ///
    /// A follower stamps its writes with a node id of its own (a new UUID
    /// each time; an id given with [`node_id`](Self::node_id) is the
    /// leader's). Only the leader syncs: with its own server settings, or,
    /// if it has none, with those of the first follower that has some; a
    /// follower's [`sync_maps`](Self::sync_maps) are synced by whichever
    /// process leads. The quota and warm-up apply in the process
    /// that opens the directory first.
    ///
    /// A follower's subscriptions miss the changes made while it has no
    /// leader (during a takeover) or when it falls more than 8,192 changes
    /// behind (it then reconnects); its reads stay right, as it forgets its
    /// cached copies then, and its live queries read their results again
    /// and report the difference.
    ///
    /// Sharing needs Unix domain sockets; on other platforms the directory
    /// is opened by one process at a time (a second fails with
    /// [`StorageError::Locked`](topgun_storage::StorageError::Locked)).
    #[cfg(all(feature = "redb", not(target_family = "wasm")))]
    #[must_use]
    pub fn shared_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.shared_dir = Some(dir.into());
        self
    }

    /// Bounds the in-RAM working set. Default: 20,000 entries, 64 MiB.
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
        self.quota.budget = Some(budget);
        self
    }

    /// The share of the budget, in percent (1 to 100), at which
    /// [`ClientEvent::QuotaWarning`](crate::ClientEvent::QuotaWarning) is
    /// sent. Default: 80.
    #[must_use]
    pub fn quota_warning_percent(mut self, percent: u8) -> Self {
        self.quota.warn_percent = percent.clamp(1, 100);
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

    /// Asks `provider` for the `AUTH` token before each connection (an
    /// expiring token is fetched afresh on reconnect); replaces
    /// [`token`](Self::token).
    #[must_use]
    pub fn token_provider(mut self, provider: Arc<dyn topgun_sync::TokenProvider>) -> Self {
        self.token_provider = Some(provider);
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

    /// Opens IndexedDB database `database` shared with the page's other
    /// tabs (feature `indexeddb`, wasm32): every tab reads and writes it,
    /// one tab at a time (the leader, chosen with the Web Locks API) holds
    /// the server connection, and each tab sees the others' changes. A
    /// store given with [`store`](Self::store) is used instead of opening
    /// `database`; the database name still names the group.
    #[cfg(all(feature = "indexeddb", target_family = "wasm"))]
    #[must_use]
    pub fn browser_tabs(mut self, database: impl Into<String>) -> Self {
        self.tabs = Some(database.into());
        self
    }

    /// Opens the store, settles the node id, warms up the working set and
    /// returns the client in state `OFFLINE`.
    ///
    /// # Errors
    /// Storage errors opening or reading the store (e.g. a file written by
    /// a newer version); [`ClientError::Clock`] for a node id that is empty
    /// or contains `:`.
    pub async fn build(#[allow(unused_mut)] mut self) -> Result<TopGunClient, ClientError> {
        #[cfg(all(feature = "indexeddb", target_family = "wasm"))]
        if let Some(database) = self.tabs.clone() {
            return self.build_tabs(&database).await;
        }
        #[cfg(all(feature = "redb", unix))]
        if let Some(dir) = self.shared_dir.clone() {
            return self.build_shared(&dir).await;
        }
        #[cfg(all(feature = "redb", not(unix), not(target_family = "wasm")))]
        if let Some(dir) = self.shared_dir.take() {
            std::fs::create_dir_all(&dir).map_err(|source| {
                topgun_storage::StorageError::Backend {
                    backend: "redb",
                    during: "creating the data directory",
                    source: Box::new(source),
                }
            })?;
            self.redb_path = Some(dir.join(crate::DATA_FILE));
        }
        let store = self.open_store()?;
        let node_id = self.settle_node_id(store.as_ref()).await?;
        let runtime = self.runtime.clone().or_else(default_runtime);
        let local = self
            .local_data(store, node_id, runtime.clone(), true)
            .await?;
        let status = Arc::new(SyncStatus::new());
        status.set_state(ConnectionState::Offline);
        let sync = match self.sync_settings(runtime)? {
            Some(setup) => {
                let maps = local.store().map_names().await?;
                Some(setup.start(&local, status.clone(), maps))
            }
            None => None,
        };
        Ok(TopGunClient::new(local, status, sync))
    }

    /// [`build`](Self::build) on a [`shared_dir`](Self::shared_dir).
    #[cfg(all(feature = "redb", unix))]
    async fn build_shared(self, dir: &std::path::Path) -> Result<TopGunClient, ClientError> {
        use crate::shared_dir::SharedDir;
        use crate::Role;
        let runtime = self.runtime.clone().or_else(default_runtime);
        let status = Arc::new(SyncStatus::new());
        status.set_state(ConnectionState::Offline);
        let opener = DirOpener {
            cache_bytes: self.redb_cache_bytes,
            sync: self.sync_settings(runtime.clone())?,
            runtime: runtime.clone(),
            config: self.sync_config.clone(),
            status: status.clone(),
        };
        let shared = SharedDir::elect(dir, Arc::new(opener), status.clone()).await?;
        let store = shared.store();
        let leader = shared.role() == Role::Leader;
        let node_id = if leader {
            self.settle_node_id(store.as_ref()).await?
        } else {
            uuid::Uuid::new_v4().to_string()
        };
        let local = self.local_data(store, node_id, runtime, leader).await?;
        shared.attach(&local).await?;
        for map in &self.sync_maps {
            shared.open_map(map);
        }
        if let (false, Some(url)) = (leader, &self.server_url) {
            // The leader may not sync: it then syncs with this server.
            shared.request_sync(crate::shared_dir::SyncRequest {
                url: url.clone(),
                token: self.token.clone(),
                maps: self.sync_maps.clone(),
            });
        }
        Ok(TopGunClient::new(local, status, None).with_dir(shared))
    }

    /// [`build`](Self::build) for a tab of [`browser_tabs`](Self::browser_tabs).
    #[cfg(all(feature = "indexeddb", target_family = "wasm"))]
    async fn build_tabs(self, database: &str) -> Result<TopGunClient, ClientError> {
        use crate::tabs::{Fence, FencedStore, StartSync, Tabs};
        let (inner, opened): (Arc<dyn Store>, _) = match &self.store {
            Some(store) => (store.clone(), None),
            None => {
                let opened = topgun_storage::IndexedDbStore::open_named(database).await?;
                (Arc::new(opened.clone()), Some(opened))
            }
        };
        // Before anything is read (the warm-up): see `Tabs::join`.
        let joined_at = self.clock.now_millis();
        let fence = std::rc::Rc::new(Fence::new(&uuid::Uuid::new_v4().to_string()));
        let store: Arc<dyn Store> = Arc::new(FencedStore::new(inner, fence.clone()));
        let runtime = self.runtime.clone().or_else(default_runtime);
        // A node id per tab: two tabs never issue the same timestamp.
        let node_id = match &self.node_id {
            Some(id) => id.clone(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let local = self
            .local_data(store, node_id, runtime.clone(), true)
            .await?;
        let status = Arc::new(SyncStatus::new());
        status.set_state(ConnectionState::Offline);
        let setup = self.sync_settings(runtime)?.map(std::rc::Rc::new);
        let sync_status = status.clone();
        let start_sync: StartSync = Box::new(move |local| {
            let (setup, status) = (setup.clone(), sync_status.clone());
            Box::pin(async move {
                let setup = setup?;
                let maps = local.store().map_names().await.unwrap_or_default();
                Some(setup.start(&local, status, maps))
            })
        });
        let tabs = Tabs::join(
            database, &local, &status, fence, start_sync, opened, joined_at,
        )?;
        Ok(TopGunClient::new(local, status, None).with_tabs(tabs))
    }

    /// The configured node id (stored), else the stored one, else a new
    /// UUID (stored).
    async fn settle_node_id(&self, store: &dyn Store) -> Result<String, ClientError> {
        Ok(match &self.node_id {
            Some(id) => {
                topgun_core::Hlc::with_clock(id.clone(), self.clock.clone())?;
                store.meta_put(NODE_ID_KEY, id.clone().into_bytes()).await?;
                id.clone()
            }
            None => match store.meta_get(NODE_ID_KEY).await? {
                Some(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).into_owned(),
                _ => {
                    let id = uuid::Uuid::new_v4().to_string();
                    store.meta_put(NODE_ID_KEY, id.clone().into_bytes()).await?;
                    id
                }
            },
        })
    }

    /// The local data on `store`; the quota and warm-up only where `owner`
    /// (this process holds the store).
    async fn local_data(
        &self,
        store: Arc<dyn Store>,
        node_id: String,
        runtime: Option<Arc<dyn Runtime>>,
        owner: bool,
    ) -> Result<Arc<LocalData>, ClientError> {
        let hlc = Hlc::with_clock(node_id, self.clock.clone())?;
        let local = Arc::new(LocalData::new(
            store,
            hlc,
            self.limits,
            crate::quota::QuotaSettings {
                budget: self.quota.budget.filter(|_| owner),
                ..self.quota
            },
            runtime,
        ));
        if owner {
            local.warm_up(self.warm_up).await?;
        }
        Ok(local)
    }

    /// How sync starts, with a server URL.
    ///
    /// # Errors
    /// [`ClientError::NoRuntime`] with a server but no runtime.
    fn sync_settings(
        &self,
        runtime: Option<Arc<dyn Runtime>>,
    ) -> Result<Option<SyncSetup>, ClientError> {
        let Some(url) = self.server_url.clone() else {
            return Ok(None);
        };
        Ok(Some(SyncSetup {
            runtime: runtime.ok_or(ClientError::NoRuntime)?,
            settings: topgun_sync::DriverSettings {
                url,
                token: self.token.clone(),
                token_provider: self.token_provider.clone(),
                config: self.sync_config.clone(),
                maps: self.sync_maps.clone(),
            },
        }))
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

/// What starting sync needs.
#[derive(Debug)]
struct SyncSetup {
    runtime: Arc<dyn Runtime>,
    settings: topgun_sync::DriverSettings,
}

impl SyncSetup {
    /// Starts syncing `local`: `maps` (the store's) and the configured
    /// ones.
    fn start(
        &self,
        local: &Arc<LocalData>,
        status: Arc<SyncStatus>,
        maps: Vec<String>,
    ) -> SyncHandle {
        let mut settings = self.settings.clone();
        let mut all = maps;
        all.append(&mut settings.maps);
        settings.maps = all;
        let replica: Arc<dyn topgun_sync::Replica> = local.clone();
        let handle =
            topgun_sync::SyncDriver::spawn(self.runtime.clone(), replica, status, settings);
        local.attach_sync(handle.notifier());
        handle
    }
}

/// Opens a shared directory's file with the builder's options and starts
/// sync in the process that leads.
#[cfg(all(feature = "redb", unix))]
#[derive(Debug)]
struct DirOpener {
    cache_bytes: usize,
    sync: Option<SyncSetup>,
    /// For a sync a follower asks for when this process has no server.
    runtime: Option<Arc<dyn Runtime>>,
    config: topgun_sync::SyncConfig,
    status: Arc<SyncStatus>,
}

#[cfg(all(feature = "redb", unix))]
impl crate::shared_dir::Opener for DirOpener {
    fn open(
        &self,
        path: &std::path::Path,
    ) -> Result<topgun_storage::RedbStore, topgun_storage::StorageError> {
        topgun_storage::RedbStore::builder()
            .cache_size(self.cache_bytes)
            .open(path)
    }

    fn start_sync(
        &self,
        local: &Arc<LocalData>,
        maps: Vec<String>,
        requested: Option<&crate::shared_dir::SyncRequest>,
    ) -> Option<SyncHandle> {
        if let Some(own) = &self.sync {
            return Some(own.start(local, self.status.clone(), maps));
        }
        let requested = requested?;
        let setup = SyncSetup {
            runtime: self.runtime.clone()?,
            settings: topgun_sync::DriverSettings {
                url: requested.url.clone(),
                token: requested.token.clone(),
                token_provider: None,
                config: self.config.clone(),
                maps: requested.maps.clone(),
            },
        };
        Some(setup.start(local, self.status.clone(), maps))
    }
}

/// The tokio runtime the caller runs on, natively; the browser's with
/// feature `indexeddb` on wasm; else none.
fn default_runtime() -> Option<Arc<dyn Runtime>> {
    #[cfg(not(target_family = "wasm"))]
    {
        topgun_sync::TokioRuntime::current()
            .ok()
            .map(|runtime| Arc::new(runtime) as Arc<dyn Runtime>)
    }
    #[cfg(all(feature = "indexeddb", target_family = "wasm"))]
    {
        Some(Arc::new(topgun_sync::BrowserRuntime))
    }
    #[cfg(all(not(feature = "indexeddb"), target_family = "wasm"))]
    {
        None
    }
}
