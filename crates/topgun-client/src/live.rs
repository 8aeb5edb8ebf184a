//! The live queries registered on one map, told about every change.

use std::sync::{Mutex, PoisonError};

/// A registered listener: gets `(key, new encoded value or None)`.
pub(crate) type Listener = Box<dyn Fn(&str, Option<&[u8]>) + Send + Sync>;

/// Live queries of one map.
#[derive(Default)]
pub(crate) struct LiveQueries {
    listeners: Mutex<Vec<(u64, Listener)>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for LiveQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveQueries").finish_non_exhaustive()
    }
}

impl LiveQueries {
    /// Tells every live query of the map that `key` now holds `new`.
    pub(crate) fn on_change(&self, key: &str, new: Option<&[u8]>) {
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (_, l) in listeners.iter() {
            l(key, new);
        }
    }

    /// Whether no live query is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Registers a listener; returns its id for [`LiveQueries::remove`].
    pub(crate) fn add(&self, listener: Listener) -> u64 {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, listener));
        id
    }

    /// Unregisters a listener.
    pub(crate) fn remove(&self, id: u64) {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(i, _)| *i != id);
    }
}
