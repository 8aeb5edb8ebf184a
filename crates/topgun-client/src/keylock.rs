//! Per-key write locks: two writes to one key are serialised (so the later
//! HLC timestamp is also the later store write); writes to different keys
//! never wait for each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::OwnedMutexGuard;

type Slot = Arc<tokio::sync::Mutex<()>>;

#[derive(Debug, Default)]
pub(crate) struct KeyLocks {
    slots: Arc<Mutex<HashMap<(String, String), Slot>>>,
}

/// Held while a write to one key is in progress. Dropping it releases the
/// key and frees the slot when nobody else waits for it.
#[derive(Debug)]
pub(crate) struct KeyGuard {
    guard: Option<OwnedMutexGuard<()>>,
    slots: Arc<Mutex<HashMap<(String, String), Slot>>>,
    id: (String, String),
}

impl KeyLocks {
    pub(crate) async fn lock(&self, map: &str, key: &str) -> KeyGuard {
        let id = (map.to_owned(), key.to_owned());
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            slots.entry(id.clone()).or_default().clone()
        };
        let guard = slot.lock_owned().await;
        KeyGuard {
            guard: Some(guard),
            slots: self.slots.clone(),
            id,
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
        self.guard = None;
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the map holds the slot now: nobody holds or awaits it.
        if slots
            .get(&self.id)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            slots.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn same_key_waits_other_keys_do_not() {
        let locks = Arc::new(KeyLocks::default());
        let a = locks.lock("m", "k").await;
        // A different key is free at once.
        let b = tokio::time::timeout(Duration::from_millis(100), locks.lock("m", "other")).await;
        assert!(b.is_ok());
        // The same key waits until `a` is dropped.
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move { l2.lock("m", "k").await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        drop(c);
        drop(b);
        assert_eq!(locks.slots(), 0, "slots are freed");
    }
}
