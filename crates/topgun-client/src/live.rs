//! The live queries registered on one map, told about every change.

use std::sync::{Mutex, PoisonError};

/// A registered listener: gets the key, its new encoded value (`None` when
/// removed or expired) and when that value expires by TTL.
pub(crate) type Listener = Box<dyn Fn(&str, Option<&[u8]>, Option<u64>) + Send + Sync>;

/// Asks a live query to read its result again (changes were missed).
pub(crate) type Resync = Box<dyn Fn() + Send + Sync>;

/// Live queries of one map.
#[derive(Default)]
pub(crate) struct LiveQueries {
    listeners: Mutex<Vec<(u64, Listener, Resync)>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for LiveQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveQueries").finish_non_exhaustive()
    }
}

impl LiveQueries {
    /// Tells every live query of the map that `key` now holds `new`,
    /// expiring at `expires_at` (see [`topgun_query::expires_at`]).
    pub(crate) fn on_change(&self, key: &str, new: Option<&[u8]>, expires_at: Option<u64>) {
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (_, l, _) in listeners.iter() {
            l(key, new, expires_at);
        }
    }

    /// Tells every live query of the map that changes may have been missed
    /// (each reads its result again and reports the difference).
    pub(crate) fn resync(&self) {
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (_, _, resync) in listeners.iter() {
            resync();
        }
    }

    /// Whether no live query is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Registers a listener and its resync; returns its id for
    /// [`LiveQueries::remove`].
    pub(crate) fn add(&self, listener: Listener, resync: Resync) -> u64 {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, listener, resync));
        id
    }

    /// Unregisters a listener.
    pub(crate) fn remove(&self, id: u64) {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(i, _, _)| *i != id);
    }
}
