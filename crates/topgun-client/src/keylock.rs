//! Write locks: two writes to one key are serialised (so the later HLC
//! timestamp is also the later store write); writes to different keys
//! never wait for each other; a whole-map write (`clear`) excludes every
//! write to that map while it runs.
//!
//! Each map has a gate (a read-write lock): key writers hold it shared,
//! a map writer holds it exclusively. A writer of several keys takes the
//! gate once and the keys in sorted order, so writers never deadlock.
//!
//! A key's slot is found by a 64-bit hash of `(map, key)`, so locking a
//! key copies no string (a merge locks thousands). Two keys whose hashes
//! collide share a slot: their writes are serialised too, which is safe.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

type Slot = Arc<tokio::sync::Mutex<()>>;
type Slots = Arc<Mutex<HashMap<u64, Slot>>>;

/// The slot id of `key` of `map`.
fn slot_id(map: &str, key: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (map, key).hash(&mut hasher);
    hasher.finish()
}

#[derive(Debug, Default)]
pub(crate) struct KeyLocks {
    slots: Slots,
    gates: Mutex<HashMap<String, Arc<RwLock<()>>>>,
}

/// Held while a write to some keys of one map is in progress. Dropping it
/// releases the keys and frees their slots when nobody else waits.
#[derive(Debug)]
pub(crate) struct KeyGuard {
    keys: Vec<(OwnedMutexGuard<()>, u64)>,
    slots: Slots,
    _gate: OwnedRwLockReadGuard<()>,
}

/// Held while a whole-map write is in progress: no key of the map is
/// being written.
#[derive(Debug)]
pub(crate) struct MapGuard {
    _gate: OwnedRwLockWriteGuard<()>,
}

impl KeyLocks {
    fn gate(&self, map: &str) -> Arc<RwLock<()>> {
        let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        gates.entry(map.to_owned()).or_default().clone()
    }

    /// Locks one key of `map`.
    pub(crate) async fn lock(&self, map: &str, key: &str) -> KeyGuard {
        self.lock_keys(map, &[key]).await
    }

    /// Locks several keys of `map` (duplicates allowed) as one writer.
    pub(crate) async fn lock_keys(&self, map: &str, keys: &[&str]) -> KeyGuard {
        let gate = self.gate(map).read_owned().await;
        let mut sorted: Vec<u64> = keys.iter().map(|key| slot_id(map, key)).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let wanted: Vec<(Slot, u64)> = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            sorted
                .into_iter()
                .map(|id| (slots.entry(id).or_default().clone(), id))
                .collect()
        };
        let mut held = Vec::with_capacity(wanted.len());
        for (slot, id) in wanted {
            held.push((slot.lock_owned().await, id));
        }
        KeyGuard {
            keys: held,
            slots: self.slots.clone(),
            _gate: gate,
        }
    }

    /// Locks the whole of `map`: waits for its key writers to finish and
    /// keeps new ones out until the guard is dropped.
    pub(crate) async fn lock_map(&self, map: &str) -> MapGuard {
        MapGuard {
            _gate: self.gate(map).write_owned().await,
        }
    }

    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let held = std::mem::take(&mut self.keys);
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        for (guard, id) in held {
            drop(guard);
            // Only the map holds the slot now: nobody holds or awaits it.
            if slots.get(&id).is_some_and(|s| Arc::strong_count(s) == 1) {
                slots.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn same_key_waits_other_keys_do_not() {
        let locks = KeyLocks::default();
        let a = locks.lock("m", "k").await;
        // A different key is free at once.
        let b = locks.lock("m", "other").now_or_never().expect("free");
        // The same key waits until `a` is dropped.
        let mut waiter = Box::pin(locks.lock("m", "k"));
        assert!((&mut waiter).now_or_never().is_none());
        drop(a);
        let c = waiter.now_or_never().expect("released");
        drop(c);
        drop(b);
        assert_eq!(locks.slots(), 0, "slots are freed");
    }

    #[tokio::test]
    async fn a_map_lock_excludes_key_writers_of_that_map_only() {
        let locks = KeyLocks::default();
        let key = locks.lock("m", "k").await;
        let mut map = Box::pin(locks.lock_map("m"));
        assert!(
            (&mut map).now_or_never().is_none(),
            "waits for the key writer"
        );
        drop(key);
        let map = map.now_or_never().expect("key writer gone");
        assert!(locks.lock("m", "k2").now_or_never().is_none());
        assert!(locks.lock("other", "k").now_or_never().is_some());
        drop(map);
        assert!(locks.lock("m", "k2").now_or_never().is_some());
    }

    #[tokio::test]
    async fn several_keys_lock_in_order_without_deadlock() {
        let locks = KeyLocks::default();
        let ab = locks.lock_keys("m", &["b", "a", "b"]).await;
        assert!(locks.lock("m", "a").now_or_never().is_none());
        assert!(locks.lock("m", "b").now_or_never().is_none());
        drop(ab);
        assert!(locks.lock_keys("m", &["a", "b"]).now_or_never().is_some());
        assert_eq!(locks.slots(), 0);
    }
}
