//! [`KeepAlive`]: what a client and its maps hold on to.

use topgun_sync::SyncHandle;

/// What keeps sync (and a shared directory's role) running while a client
/// or one of its maps is in use.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeepAlive {
    pub(crate) sync: Option<SyncHandle>,
    #[cfg(all(feature = "redb", unix))]
    pub(crate) dir: Option<std::sync::Arc<crate::shared_dir::SharedDir>>,
    #[cfg(all(feature = "indexeddb", target_family = "wasm"))]
    pub(crate) tabs: Option<std::rc::Rc<crate::tabs::Tabs>>,
}

impl KeepAlive {
    /// Keeps `sync` (the driver's handle, if this process syncs) alive.
    pub(crate) fn new(sync: Option<SyncHandle>) -> Self {
        Self {
            sync,
            #[cfg(all(feature = "redb", unix))]
            dir: None,
            #[cfg(all(feature = "indexeddb", target_family = "wasm"))]
            tabs: None,
        }
    }

    /// The sync driver's handle, if this process syncs.
    pub(crate) fn sync(&self) -> Option<SyncHandle> {
        #[cfg(all(feature = "redb", unix))]
        if let Some(dir) = &self.dir {
            return dir.sync();
        }
        #[cfg(all(feature = "indexeddb", target_family = "wasm"))]
        if let Some(tabs) = &self.tabs {
            return tabs.sync();
        }
        self.sync.clone()
    }
}
