//! The storage budget: when the store grows past it, synced clean records
//! are pruned, least recently used first (they can be fetched from the
//! server again). Dirty records and pending ops are never touched.

use crate::client::{ClientEvent, ClientInner};
use crate::error::ClientError;
use std::collections::BTreeMap;

/// Records examined per store page while looking for prunable ones.
const PAGE: usize = 512;

/// Makes room for a write when a budget is set and the store is over it.
/// Prunes down to 90% of the budget so that pruning does not run on every
/// write at the edge.
///
/// Order: first clean records that are not in the working set (nothing
/// used them recently), then the working set's clean records, least
/// recently used first.
pub(crate) async fn ensure_room(inner: &ClientInner) -> Result<(), ClientError> {
    let Some(budget) = inner.quota_bytes else {
        return Ok(());
    };
    let before = inner.store.stats().await?.bytes;
    if before < budget {
        return Ok(());
    }
    let target = budget - budget / 10;
    let mut pruned = 0u64;
    let mut used = before;

    // Phase 1: records not in the working set.
    'maps: for map in inner.store.map_names().await? {
        let mut after: Option<String> = None;
        loop {
            let page = inner.store.scan(&map, after.as_deref(), PAGE).await?;
            let full = page.len() == PAGE;
            after = page.last().map(|r| r.key.clone());
            let candidates: Vec<String> = {
                let ws = inner.ws();
                page.into_iter()
                    .filter(|r| !r.dirty && !ws.contains(&map, &r.key))
                    .map(|r| r.key)
                    .collect()
            };
            if !candidates.is_empty() {
                pruned += inner.store.prune_clean(&map, &candidates).await?.len() as u64;
                used = inner.store.stats().await?.bytes;
                if used <= target {
                    break 'maps;
                }
            }
            if !full {
                break;
            }
        }
    }

    // Phase 2: the working set, least recently used first.
    while used > target {
        let lru = inner.ws().lru_keys(PAGE);
        if lru.is_empty() {
            break;
        }
        let mut by_map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (map, key) in &lru {
            by_map.entry(map.clone()).or_default().push(key.clone());
        }
        let mut removed_any = false;
        for (map, keys) in by_map {
            let removed = inner.store.prune_clean(&map, &keys).await?;
            pruned += removed.len() as u64;
            removed_any |= !removed.is_empty();
            let mut ws = inner.ws();
            // Dropping the RAM copy of kept (dirty) keys too lets the walk
            // move on to older entries; they are re-read on demand.
            for key in &keys {
                ws.invalidate(&map, key);
            }
        }
        used = inner.store.stats().await?.bytes;
        if !removed_any && inner.ws().stats().entries == 0 {
            break;
        }
    }

    if pruned > 0 {
        let _ = inner.client_events.send(ClientEvent::QuotaPruned {
            records: pruned,
            bytes_before: before,
            bytes_after: used,
        });
    }
    if used >= budget {
        let _ = inner
            .client_events
            .send(ClientEvent::QuotaExhausted { used, budget });
        return Err(ClientError::QuotaExceeded { used, budget });
    }
    Ok(())
}
