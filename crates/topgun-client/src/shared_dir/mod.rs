//! Several processes on one data directory: the first to open the redb
//! file is the **leader** (it holds the file and the server connection) and listens on a Unix socket in the
//! directory, `topgun.sock`; a process that finds the file locked is a
//! **follower**: its store calls go to the leader over that socket and the
//! leader streams every change back, so its reads, writes, queries,
//! subscriptions and live queries behave as the leader's (a follower also
//! caches what it reads, kept right by that stream). The file lock is the
//! arbiter: two processes starting at once never both lead.
//!
//! When the leader exits or dies its followers' connections end; each then
//! tries the file again, and the one that gets it becomes the leader
//! (listens, starts sync); the others connect to it. Calls in flight are
//! retried there: a write carries its stamp, so a write the old leader
//! committed before dying is recognised and not applied twice
//! (see `stamped_verdict` in the write path).

mod dir_store;
mod link;
mod outbox;
mod protocol;
mod serve;

use crate::local::LocalData;
use crate::role::Role;
use crate::DATA_FILE;
use dir_store::{Backend, DirStore};
use link::{Connected, Link};
pub(crate) use protocol::SyncRequest;
use serve::{LeaderParts, LeaderServer};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::watch;
use topgun_storage::{RedbStore, StorageError, Store};
use topgun_sync::{SyncEvent, SyncHandle, SyncStatus};

use crate::error::ClientError;

/// Name of the leader's socket inside a shared data directory.
pub const SOCKET_FILE: &str = "topgun.sock";
/// How long opening waits for a process that holds the file but does not
/// answer on its socket: a leader still opening (recovering) the file, or
/// a process that does not share it, such as `topgun serve` on its own
/// data directory (then opening fails with [`StorageError::Locked`]).
const OPEN_WAIT: Duration = Duration::from_secs(5);
/// How long a follower waits for the leader's hello on a new connection.
const HELLO_WAIT: Duration = Duration::from_secs(1);
/// Pause between two tries at the file and the socket.
const RETRY: Duration = Duration::from_millis(10);

/// How a client on a shared directory opens its file and starts sync when
/// it becomes the leader.
pub(crate) trait Opener: std::fmt::Debug + Send + Sync {
    /// Opens the file (`Err(StorageError::Locked)` when another process
    /// holds it).
    fn open(&self, path: &Path) -> Result<RedbStore, StorageError>;
    /// Starts syncing `local` with this process's server settings, else
    /// with `requested` (a follower's); `None` with neither.
    fn start_sync(
        &self,
        local: &Arc<LocalData>,
        maps: Vec<String>,
        requested: Option<&SyncRequest>,
    ) -> Option<SyncHandle>;
}

/// What an election found.
#[derive(Debug)]
enum Elected {
    Leader(RedbStore),
    Follower(Connected),
}

/// A client's membership of a shared data directory.
#[derive(Debug)]
pub(crate) struct SharedDir {
    file: PathBuf,
    socket: PathBuf,
    store: Arc<DirStore>,
    status: Arc<SyncStatus>,
    opener: Arc<dyn Opener>,
    role: watch::Sender<Role>,
    state: Mutex<DirState>,
}

#[derive(Debug, Default)]
struct DirState {
    local: Weak<LocalData>,
    /// The leader's connection, from election until [`SharedDir::attach`].
    elected: Option<Connected>,
    server: Option<LeaderServer>,
    sync: Arc<Mutex<Option<SyncHandle>>>,
    /// Maps opened for sync, for the next leader to sync as well.
    maps: BTreeSet<String>,
    /// This process's server settings, for a leader that has none (sent
    /// to each leader this process follows).
    request: Option<SyncRequest>,
    watchdog: Option<tokio::task::JoinHandle<()>>,
    closed: bool,
}

impl SharedDir {
    /// Creates `dir` if missing and elects: leader if the file can be
    /// opened, else follower of the process listening on the socket. The
    /// store works at once for a leader, after [`attach`](Self::attach)
    /// for a follower.
    ///
    /// # Errors
    /// The directory cannot be created; the file cannot be opened for
    /// another reason than a lock; no leader answered within
    /// [`OPEN_WAIT`] ([`StorageError::Locked`]); the leader speaks another
    /// version of the protocol.
    pub(crate) async fn elect(
        dir: &Path,
        opener: Arc<dyn Opener>,
        status: Arc<SyncStatus>,
    ) -> Result<Arc<SharedDir>, ClientError> {
        std::fs::create_dir_all(dir).map_err(|source| StorageError::Backend {
            backend: "redb",
            during: "creating the data directory",
            source: Box::new(source),
        })?;
        let shared = Arc::new(SharedDir {
            file: dir.join(DATA_FILE),
            socket: dir.join(SOCKET_FILE),
            store: Arc::new(DirStore::new()),
            status,
            opener,
            role: watch::Sender::new(Role::Follower),
            state: Mutex::default(),
        });
        let deadline = tokio::time::Instant::now() + OPEN_WAIT;
        loop {
            match shared.try_elect().await? {
                Some(Elected::Leader(store)) => {
                    shared.store.set(Backend::Owner(Arc::new(store)));
                    shared.role.send_replace(Role::Leader);
                    return Ok(shared);
                }
                Some(Elected::Follower(connected)) => {
                    shared.state().elected = Some(connected);
                    return Ok(shared);
                }
                None if tokio::time::Instant::now() >= deadline => {
                    return Err(StorageError::Locked {
                        path: shared.file.clone(),
                    }
                    .into());
                }
                None => tokio::time::sleep(RETRY).await,
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, DirState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One try: the file (opened off the async threads: after a crash redb
    /// repairs it first), else the socket; `None` if neither answered.
    async fn try_elect(&self) -> Result<Option<Elected>, StorageError> {
        let opener = self.opener.clone();
        let file = self.file.clone();
        let opened = tokio::task::spawn_blocking(move || opener.open(&file))
            .await
            .map_err(|e| StorageError::Backend {
                backend: "redb",
                during: "opening the database file",
                source: Box::new(e),
            })?;
        match opened {
            Ok(store) => return Ok(Some(Elected::Leader(store))),
            Err(StorageError::Locked { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(Connected::connect(&self.socket, HELLO_WAIT)
            .await?
            .map(Elected::Follower))
    }

    /// The store the client works on.
    pub(crate) fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// This process's role now.
    pub(crate) fn role(&self) -> Role {
        *self.role.borrow()
    }

    /// Observes this process's role.
    pub(crate) fn watch_role(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// The sync driver's handle, while this process leads and syncs.
    pub(crate) fn sync(&self) -> Option<SyncHandle> {
        let sync = self.state().sync.clone();
        let handle = sync.lock().unwrap_or_else(PoisonError::into_inner).clone();
        handle
    }

    /// Starts the elected role with the client's `local` data: a leader
    /// syncs and listens; a follower connects and, when its leader goes,
    /// elects again.
    ///
    /// # Errors
    /// Storage errors listing the maps to sync.
    pub(crate) async fn attach(
        self: &Arc<Self>,
        local: &Arc<LocalData>,
    ) -> Result<(), ClientError> {
        let elected = {
            let mut state = self.state();
            state.local = Arc::downgrade(local);
            state.elected.take()
        };
        match elected {
            None => self.lead(local).await,
            Some(connected) => {
                self.follow(connected, local);
                let weak = Arc::downgrade(self);
                self.state().watchdog = Some(tokio::spawn(watchdog(weak)));
                Ok(())
            }
        }
    }

    /// Starts sync, then listens on the socket (the store is the file). A
    /// socket that cannot be bound (a path too long for one, a file system
    /// without sockets) leaves this process working alone, reported as a
    /// sync event; others then cannot open the directory.
    async fn lead(self: &Arc<Self>, local: &Arc<LocalData>) -> Result<(), ClientError> {
        let mut maps = local.store().map_names().await?;
        let sync = {
            let state = self.state();
            maps.extend(state.maps.iter().cloned());
            state.sync.clone()
        };
        let handle = self.opener.start_sync(local, maps, None);
        if handle.is_none() {
            self.status.set_state(topgun_sync::ConnectionState::Offline);
        }
        *sync.lock().unwrap_or_else(PoisonError::into_inner) = handle;
        let weak = Arc::downgrade(self);
        let parts = LeaderParts {
            local: local.clone(),
            status: self.status.clone(),
            sync,
            start_sync: Arc::new(move |request| {
                if let Some(dir) = weak.upgrade() {
                    dir.sync_requested(&request);
                }
            }),
        };
        match LeaderServer::start(&self.socket, parts) {
            Ok(server) => self.state().server = Some(server),
            Err(e) => self.report(&ClientError::from(StorageError::Backend {
                backend: "data directory socket",
                during: "listening for other processes",
                source: Box::new(e),
            })),
        }
        self.role.send_replace(Role::Leader);
        Ok(())
    }

    fn follow(&self, connected: Connected, local: &Arc<LocalData>) {
        let link = Link::start(connected, local, self.status.clone());
        {
            let state = self.state();
            if let Some(request) = &state.request {
                link.request_sync(request);
            }
            for map in &state.maps {
                link.open_map(map);
            }
        }
        local.set_forwarding(true);
        self.store.set(Backend::Follower(link));
        self.role.send_replace(Role::Follower);
    }

    /// Has the leader sync with this server if it does not sync (a
    /// follower's server settings; a leader uses its own).
    pub(crate) fn request_sync(&self, request: SyncRequest) {
        self.state().request = Some(request.clone());
        if let Backend::Follower(link) = self.store.backend() {
            link.request_sync(&request);
        }
    }

    /// A follower asked for sync: started with its settings unless this
    /// process syncs already (then only its maps are added).
    fn sync_requested(&self, request: &SyncRequest) {
        if let Some(sync) = self.sync() {
            for map in &request.maps {
                sync.open_map(map);
            }
            return;
        }
        let (local, sync, mut maps) = {
            let state = self.state();
            (
                state.local.upgrade(),
                state.sync.clone(),
                state.maps.iter().cloned().collect::<Vec<_>>(),
            )
        };
        let Some(local) = local else {
            return;
        };
        maps.extend(request.maps.iter().cloned());
        let mut slot = sync.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = self.opener.start_sync(&local, maps, Some(request));
        }
    }

    /// Syncs map `name` (through the leader when following).
    pub(crate) fn open_map(&self, name: &str) {
        self.state().maps.insert(name.to_owned());
        match self.store.backend() {
            Backend::Follower(link) => link.open_map(name),
            _ => {
                if let Some(sync) = self.sync() {
                    sync.open_map(name);
                }
            }
        }
    }

    /// Tells the client's sync events about a failed election step.
    fn report(&self, error: &ClientError) {
        self.status.emit(SyncEvent::LocalError(format!(
            "data directory {}: {error}",
            self.file.display()
        )));
    }

    /// Stops following or leading: sync stops, the socket goes and the
    /// file is released (once calls in flight on it have finished).
    pub(crate) async fn close(&self) {
        let (server, watchdog) = {
            let mut state = self.state();
            state.closed = true;
            (state.server.take(), state.watchdog.take())
        };
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        if let Some(sync) = self.sync() {
            sync.close().await;
        }
        drop(server);
        self.store.set(Backend::Closed);
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        if let Some(watchdog) = self.state().watchdog.take() {
            watchdog.abort();
        }
    }
}

/// A follower's task: when the connection to the leader ends, elect again
/// (lead if the file is free now, else follow whoever leads), and keep
/// watching while following.
async fn watchdog(shared: Weak<SharedDir>) {
    loop {
        let Some(link) = shared.upgrade().and_then(|s| match s.store.backend() {
            Backend::Follower(link) => Some(link),
            _ => None,
        }) else {
            return;
        };
        link.ended().await;
        drop(link);
        loop {
            let Some(dir) = shared.upgrade() else {
                return;
            };
            let Some(local) = dir.state().local.upgrade() else {
                return;
            };
            if dir.state().closed {
                return;
            }
            dir.store.set(Backend::Electing);
            // Changes made while no leader streamed them went unseen, and
            // those it had not streamed yet are lost.
            local.changes_missed();
            let elected = dir.try_elect().await;
            // A close that came meanwhile wins: the file is let go.
            if dir.state().closed {
                return;
            }
            match elected {
                Ok(Some(Elected::Leader(store))) => {
                    local.set_forwarding(false);
                    dir.store.set(Backend::Owner(Arc::new(store)));
                    if let Err(e) = dir.lead(&local).await {
                        dir.report(&e);
                    }
                    return;
                }
                Ok(Some(Elected::Follower(connected))) => {
                    dir.follow(connected, &local);
                    break;
                }
                Ok(None) => {}
                Err(e) => dir.report(&ClientError::from(e)),
            }
            drop((dir, local));
            tokio::time::sleep(RETRY).await;
        }
    }
}
