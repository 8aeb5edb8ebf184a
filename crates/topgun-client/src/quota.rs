//! The storage budget: when the store grows past it, synced clean records
//! are pruned, least recently used first (they can be fetched from the
//! server again). Dirty records and pending ops are never touched.

use crate::error::ClientError;
use crate::working_set::WorkingSet;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::sync::broadcast;
use topgun_storage::{PruneSums, ScanCursor, Store};

/// Records examined per store page while looking for prunable ones.
const PAGE: usize = 512;

/// Events buffered for a slow reader of [`Quota::events`].
const EVENT_BUFFER: usize = 64;

/// Client-wide events (not tied to one key).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The store reached the warning share of its byte budget (80% unless
    /// set with `TopGunClientBuilder::quota_warning_percent`; sent once
    /// per crossing): time to sync or delete before pruning starts.
    QuotaWarning {
        /// Store bytes in use.
        used: u64,
        /// The budget.
        budget: u64,
    },
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

/// What the quota enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuotaSettings {
    /// The store's byte budget; `None`: none.
    pub(crate) budget: Option<u64>,
    /// The share of the budget, in percent, at which the warning goes.
    pub(crate) warn_percent: u8,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self {
            budget: None,
            warn_percent: 80,
        }
    }
}

/// The storage budget and its events.
#[derive(Debug)]
pub(crate) struct Quota {
    budget: Option<u64>,
    warn_percent: u8,
    events: broadcast::Sender<ClientEvent>,
    warned: AtomicBool,
}

fn lock(ws: &Mutex<WorkingSet>) -> MutexGuard<'_, WorkingSet> {
    ws.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Quota {
    pub(crate) fn new(settings: QuotaSettings) -> Self {
        Self {
            budget: settings.budget,
            warn_percent: settings.warn_percent.clamp(1, 100),
            events: broadcast::Sender::new(EVENT_BUFFER),
            warned: AtomicBool::new(false),
        }
    }

    /// Quota events from now on.
    pub(crate) fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.events.subscribe()
    }

    fn emit(&self, event: ClientEvent) {
        // Nobody listening is fine.
        let _ = self.events.send(event);
    }

    /// Makes room for a local write: prunes when the store is over budget.
    ///
    /// # Errors
    /// [`ClientError::QuotaExceeded`] when nothing is left to prune;
    /// storage errors.
    pub(crate) async fn ensure_room(
        &self,
        store: &dyn Store,
        ws: &Mutex<WorkingSet>,
    ) -> Result<(), ClientError> {
        let Some(budget) = self.budget else {
            return Ok(());
        };
        let used = prune(self, store, ws, budget).await?;
        if used >= budget {
            return Err(ClientError::QuotaExceeded { used, budget });
        }
        Ok(())
    }

    /// The store refused a write as full ([`StorageError::Full`]: the
    /// browser's quota is used up, whatever the budget says): prunes as if
    /// the budget were what the store holds now, down to 90% of it.
    /// Returns the bytes in use afterwards.
    ///
    /// [`StorageError::Full`]: topgun_storage::StorageError::Full
    pub(crate) async fn make_room_when_full(
        &self,
        store: &dyn Store,
        ws: &Mutex<WorkingSet>,
    ) -> Result<u64, ClientError> {
        let before = store.stats().await?.bytes;
        prune(self, store, ws, before.max(1)).await
    }

    /// After records from the server were merged: prunes when the store is
    /// over budget (the merge itself is never refused; the server holds
    /// those records).
    pub(crate) async fn after_merge(
        &self,
        store: &dyn Store,
        ws: &Mutex<WorkingSet>,
    ) -> Result<(), ClientError> {
        if let Some(budget) = self.budget {
            prune(self, store, ws, budget).await?;
        }
        Ok(())
    }
}

/// Prunes when the store is at or over `budget`, down to 90% of it so that
/// pruning does not run on every write at the edge; returns the bytes in
/// use afterwards. Sends the warning, pruned and exhausted events.
///
/// Order: first clean records that are not in the working set (nothing
/// used them recently), then the working set's clean records, least
/// recently used first.
async fn prune(
    quota: &Quota,
    store: &dyn Store,
    ws: &Mutex<WorkingSet>,
    budget: u64,
) -> Result<u64, ClientError> {
    let before = store.stats().await?.bytes;
    let warn_at = budget / 100 * u64::from(quota.warn_percent)
        + budget % 100 * u64::from(quota.warn_percent) / 100;
    if before < warn_at {
        quota.warned.store(false, Ordering::Relaxed);
    } else if !quota.warned.swap(true, Ordering::Relaxed) {
        quota.emit(ClientEvent::QuotaWarning {
            used: before,
            budget,
        });
    }
    if before < budget {
        return Ok(before);
    }
    let target = budget - budget / 10;
    let mut pruned = 0u64;
    let mut used = before;

    // Phase 1: records not in the working set.
    'maps: for map in store.map_names().await? {
        let mut pages = ScanCursor::new(map.as_str(), PAGE);
        while let Some(page) = pages.next_page(store).await? {
            let candidates: Vec<String> = {
                let ws = lock(ws);
                page.into_iter()
                    .filter(|r| !r.dirty && !ws.contains(&map, &r.key))
                    .map(|r| r.key)
                    .collect()
            };
            if !candidates.is_empty() {
                pruned += store
                    .prune_clean(&map, &candidates, PruneSums::Keep)
                    .await?
                    .len() as u64;
                used = store.stats().await?.bytes;
                if used <= target {
                    break 'maps;
                }
            }
        }
    }

    // Phase 2: the working set, least recently used first.
    while used > target {
        let lru = lock(ws).lru_keys(PAGE);
        if lru.is_empty() {
            break;
        }
        let mut by_map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (map, key) in &lru {
            by_map.entry(map.clone()).or_default().push(key.clone());
        }
        let mut removed_any = false;
        for (map, keys) in by_map {
            let removed = store.prune_clean(&map, &keys, PruneSums::Keep).await?;
            pruned += removed.len() as u64;
            removed_any |= !removed.is_empty();
            let mut ws = lock(ws);
            // Dropping the RAM copy of kept (dirty) keys too lets the walk
            // move on to older entries; they are re-read on demand.
            for key in &keys {
                ws.invalidate(&map, key);
            }
        }
        used = store.stats().await?.bytes;
        if !removed_any && lock(ws).stats().entries == 0 {
            break;
        }
    }

    if pruned > 0 {
        quota.emit(ClientEvent::QuotaPruned {
            records: pruned,
            bytes_before: before,
            bytes_after: used,
        });
    }
    if used >= budget {
        quota.emit(ClientEvent::QuotaExhausted { used, budget });
    }
    Ok(used)
}
